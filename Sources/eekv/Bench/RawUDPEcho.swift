import Synchronization
import CSystemShims
import EERPC
import Glibc

/// The reference for `bench rpc`: the same message size and window over the same loopback, with
/// no protocol at all. A server thread echoes every datagram back with one `recvmmsg` and one
/// `sendmmsg` per batch; a client thread keeps `window` datagrams in flight and times each round
/// trip. This is the ceiling of kernel UDP on this machine for the RPC benchmark's traffic.
enum RawUDPEcho {
    static let batch = 32

    static func measure(size: Int, window: Int, warmupNs: UInt64, measureNs: UInt64) -> Measurement {
        let control = BenchControl()
        let payload = max(size, 8)  // room for the send timestamp
        let server = Threads.spawn(name: "ref-server") {
            Threads.pinCurrentThread(to: BenchCPUs.server)
            serve(payload: payload, control: control)
        }
        let port = control.waitForServer()
        final class Result: @unchecked Sendable { var measurement = Measurement() }
        let result = Result()
        let client = Threads.spawn(name: "ref-client") {
            Threads.pinCurrentThread(to: BenchCPUs.client)
            result.measurement = drive(
                port: UInt16(port), payload: payload, window: window, warmupNs: warmupNs, measureNs: measureNs)
        }
        client.join()
        control.stop.store(true, ordering: .releasing)
        server.join()
        return result.measurement
    }

    private static func serve(payload: Int, control: BenchControl) {
        let fd = ee_udp_open(0x7F00_0001, 0, 4 << 20)
        precondition(fd >= 0, "reference server: cannot open a UDP socket")
        defer { close(fd) }
        let slot = (payload + 63) & ~63
        let buffers = UnsafeMutableRawPointer.allocate(byteCount: slot * batch, alignment: 64)
        let addresses = UnsafeMutablePointer<sockaddr_in>.allocate(capacity: batch)
        let iovecs = UnsafeMutablePointer<iovec>.allocate(capacity: batch)
        let msgs = UnsafeMutablePointer<ee_mmsghdr>.allocate(capacity: batch)
        defer {
            buffers.deallocate()
            addresses.deallocate()
            iovecs.deallocate()
            msgs.deallocate()
        }
        for i in 0..<batch {
            iovecs[i] = iovec(iov_base: buffers + i * slot, iov_len: slot)
            msgs[i] = ee_mmsghdr()
            msgs[i].msg_hdr.msg_iov = iovecs + i
            msgs[i].msg_hdr.msg_iovlen = 1
            msgs[i].msg_hdr.msg_name = UnsafeMutableRawPointer(addresses + i)
        }
        control.serverPort.store(Int(ee_socket_port(fd)), ordering: .relaxed)
        control.serverReady.store(true, ordering: .releasing)
        while !control.stop.load(ordering: .relaxed) {
            for i in 0..<batch {
                iovecs[i].iov_len = slot
                msgs[i].msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)
            }
            let n = ee_recvmmsg(fd, msgs, UInt32(batch))
            guard n > 0 else { continue }
            for i in 0..<Int(n) { iovecs[i].iov_len = Int(msgs[i].msg_len) }
            var sent: Int32 = 0
            while sent < n {
                let r = ee_sendmmsg(fd, msgs + Int(sent), UInt32(n - sent))
                if r > 0 { sent += r } else { break }
            }
        }
    }

    private static func drive(port: UInt16, payload: Int, window: Int, warmupNs: UInt64, measureNs: UInt64)
        -> Measurement
    {
        let fd = ee_udp_open(0x7F00_0001, 0, 4 << 20)
        precondition(fd >= 0, "reference client: cannot open a UDP socket")
        defer { close(fd) }
        var server = sockaddr_in()
        withUnsafeMutableBytes(of: &server) { ee_make_sockaddr_in($0.baseAddress, 0x7F00_0001, port) }
        let slot = (payload + 63) & ~63
        let rxBuffers = UnsafeMutableRawPointer.allocate(byteCount: slot * batch, alignment: 64)
        let txBuffers = UnsafeMutableRawPointer.allocate(byteCount: slot * max(batch, window), alignment: 64)
        let rxIovecs = UnsafeMutablePointer<iovec>.allocate(capacity: batch)
        let txIovecs = UnsafeMutablePointer<iovec>.allocate(capacity: max(batch, window))
        let rxMsgs = UnsafeMutablePointer<ee_mmsghdr>.allocate(capacity: batch)
        let txMsgs = UnsafeMutablePointer<ee_mmsghdr>.allocate(capacity: max(batch, window))
        defer {
            rxBuffers.deallocate()
            txBuffers.deallocate()
            rxIovecs.deallocate()
            txIovecs.deallocate()
            rxMsgs.deallocate()
            txMsgs.deallocate()
        }
        txBuffers.initializeMemory(as: UInt8.self, repeating: 0x5A, count: slot * max(batch, window))
        for i in 0..<batch {
            rxIovecs[i] = iovec(iov_base: rxBuffers + i * slot, iov_len: slot)
            rxMsgs[i] = ee_mmsghdr()
            rxMsgs[i].msg_hdr.msg_iov = rxIovecs + i
            rxMsgs[i].msg_hdr.msg_iovlen = 1
        }
        withUnsafeMutablePointer(to: &server) { address in
            for i in 0..<max(batch, window) {
                txIovecs[i] = iovec(iov_base: txBuffers + i * slot, iov_len: payload)
                txMsgs[i] = ee_mmsghdr()
                txMsgs[i].msg_hdr.msg_iov = txIovecs + i
                txMsgs[i].msg_hdr.msg_iovlen = 1
                txMsgs[i].msg_hdr.msg_name = UnsafeMutableRawPointer(address)
                txMsgs[i].msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)
            }
        }

        // Sends `count` datagrams stamped with the current time, from TX slots 0..<count.
        func send(_ count: Int) {
            let stamp = nowNs()
            for i in 0..<count { (txBuffers + i * slot).storeBytes(of: stamp, as: UInt64.self) }
            var sent = 0
            while sent < count {
                let r = ee_sendmmsg(fd, txMsgs + sent, UInt32(count - sent))
                if r > 0 { sent += Int(r) }
            }
        }

        var measurement = Measurement()
        let start = nowNs()
        let measureStart = start &+ warmupNs
        let end = measureStart &+ measureNs
        var inFlight = window
        send(window)
        var now = start
        while now < end {
            let n = ee_recvmmsg(fd, rxMsgs, UInt32(batch))
            now = nowNs()
            guard n > 0 else { continue }
            if now >= measureStart {
                for i in 0..<Int(n) {
                    let stamp = (rxBuffers + i * slot).load(as: UInt64.self)
                    measurement.recorder.record(now &- stamp)
                }
            }
            inFlight -= Int(n)
            send(Int(n))
            inFlight += Int(n)
        }
        measurement.seconds = Double(now &- measureStart) / 1e9
        // Drain what is still in flight so the next run starts clean.
        let drainEnd = nowNs() &+ 50_000_000
        while inFlight > 0 && nowNs() < drainEnd {
            let n = ee_recvmmsg(fd, rxMsgs, UInt32(batch))
            if n > 0 { inFlight -= Int(n) }
        }
        return measurement
    }
}
