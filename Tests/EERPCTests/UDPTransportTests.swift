import CSystemShims
import Glibc
import Testing

@testable import EERPC

/// The UDP transport's batching: runs of same-size packets to one address go out as UDP GSO
/// sends, arrive as one buffer where the receiver takes UDP GRO, and every datagram still
/// reaches the runtime whole, in order, at the right socket.
@Suite("UDP transport")
struct UDPTransportTests {
    /// A burst mixing destinations and lengths: 9 equal packets then a shorter one to `b`
    /// (one GSO run), 3 to `c`, then back to `b` a length that rises (its own send) and one
    /// that falls (a run of two).
    static let plan: [(toB: Bool, length: Int)] =
        Array(repeating: (true, 1_000), count: 9) + [(true, 300)] + Array(repeating: (false, 700), count: 3)
        + [(true, 100), (true, 200), (true, 0)]

    func burst(gso: Bool, gro: Bool = true) throws -> (
        sender: TransportStats, b: [[UInt8]], c: [[UInt8]], offload: Bool, receivers: [TransportStats]
    ) {
        var a = try UDPTransport(gso: gso)
        var b = try UDPTransport(gro: gro)
        var c = try UDPTransport(gro: gro)
        let routeB = UnsafeMutablePointer<RoutingInfo>.allocate(capacity: 2)
        defer { routeB.deallocate() }
        routeB[0] = a.resolve(b.localRoute)!
        routeB[1] = a.resolve(c.localRoute)!
        // Payload bytes: packet index in every byte, so a datagram cut at the wrong place shows.
        let payload = UnsafeMutableRawPointer.allocate(byteCount: 1_000 * Self.plan.count, alignment: 8)
        defer { payload.deallocate() }
        var items: [TxItem] = []
        for (i, p) in Self.plan.enumerated() {
            let data = payload + i * 1_000
            data.initializeMemory(as: UInt8.self, repeating: UInt8(i), count: 1_000)
            let header = PacketHeader(
                type: .request, destSession: 1, requestType: 1, messageSize: UInt32(p.length), requestNumber: UInt64(i),
                packetNumber: 0)
            items.append(TxItem(header: header, data: data, dataLength: p.length, route: routeB + (p.toB ? 0 : 1)))
        }
        let sent = items.withUnsafeBufferPointer { a.transmit($0.baseAddress!, count: $0.count) }
        #expect(sent == Self.plan.count)
        func drain(_ t: inout UDPTransport, _ expected: Int) -> [[UInt8]] {
            var got: [[UInt8]] = []
            let deadline = ee_now_ns() + 2_000_000_000
            while got.count < expected && ee_now_ns() < deadline {
                let n = t.receive()
                for k in 0..<n { got.append(Array(t.received(k))) }
            }
            return got
        }
        let toB = drain(&b, Self.plan.filter(\.toB).count)
        let toC = drain(&c, Self.plan.filter { !$0.toB }.count)
        return (a.stats, toB, toC, a.segmentationOffload, [b.stats, c.stats])
    }

    func check(_ datagrams: [[UInt8]], indices: [Int]) {
        #expect(datagrams.count == indices.count)
        for (d, i) in zip(datagrams, indices) {
            #expect(d.count == Wire.headerSize + Self.plan[i].length)
            #expect(d.dropFirst(Wire.headerSize).allSatisfy { $0 == UInt8(i) })
        }
    }

    @Test("same-size runs leave as GSO sends and arrive as the same datagrams")
    func segmented() throws {
        let r = try burst(gso: true)
        check(r.b, indices: Self.plan.indices.filter { Self.plan[$0].toB })
        check(r.c, indices: Self.plan.indices.filter { !Self.plan[$0].toB })
        #expect(r.sender.txPackets == UInt64(Self.plan.count))
        // Loopback takes UDP GSO on every Linux this project supports (4.18 on): the run of ten
        // to `b`, the run of three to `c`, and the 200-byte packet with the empty one after it
        // each went as one send.
        #expect(r.offload)
        #expect(r.sender.txSegmentedSends == 3)
        // And each of those runs reached its receiver as one buffer (UDP GRO, Linux 5.0 on).
        #expect(r.receivers.map(\.rxCoalesced) == [2, 1])
        #expect(r.receivers.map(\.rxPackets) == [13, 3])
    }

    @Test("a receiver without GRO gets the same datagrams one by one")
    func segmentedWithoutGRO() throws {
        let r = try burst(gso: true, gro: false)
        check(r.b, indices: Self.plan.indices.filter { Self.plan[$0].toB })
        check(r.c, indices: Self.plan.indices.filter { !Self.plan[$0].toB })
        #expect(r.receivers.map(\.rxCoalesced) == [0, 0])
        #expect(r.receivers.map(\.rxPackets) == [13, 3])
    }

    /// The largest run the kernel coalesces, 64 datagrams, is more than one receive burst of
    /// 32: all of them come out of one `receive`, and a peer sending longer datagrams than
    /// the receiver's MTU has each of them counted and handed on too long (the runtime drops them).
    @Test("64 packets in one buffer come out of one receive; segments over the MTU are counted")
    func largestRunAndOversizedSegments() throws {
        var a = try UDPTransport(mtu: 9_000, burst: 64)
        var b = try UDPTransport(mtu: Wire.defaultMTU, burst: 32)
        let offload = b.receiveOffload
        let maxReceive = b.maxReceive
        try #require(offload)
        #expect(maxReceive == 128 * 32)
        let route = UnsafeMutablePointer<RoutingInfo>.allocate(capacity: 1)
        defer { route.deallocate() }
        route.pointee = a.resolve(b.localRoute)!
        let payload = UnsafeMutableRawPointer.allocate(byteCount: 64 * 1_000, alignment: 8)
        defer { payload.deallocate() }
        func send(count: Int, length: Int) {
            var items: [TxItem] = []
            for i in 0..<count {
                (payload + i * length).initializeMemory(as: UInt8.self, repeating: UInt8(i), count: length)
                let header = PacketHeader(
                    type: .request, destSession: 1, requestType: 1, messageSize: UInt32(length),
                    requestNumber: UInt64(i), packetNumber: 0)
                items.append(TxItem(header: header, data: payload + i * length, dataLength: length, route: route))
            }
            #expect(items.withUnsafeBufferPointer { a.transmit($0.baseAddress!, count: count) } == count)
        }
        func receiveOnce() -> [[UInt8]] {
            let deadline = ee_now_ns() + 2_000_000_000
            while ee_now_ns() < deadline {
                let n = b.receive()
                if n > 0 { return (0..<n).map { Array(b.received($0)) } }
            }
            return []
        }
        send(count: 64, length: 1_000)
        let run = receiveOnce()
        #expect(run.count == 64)
        for (i, d) in run.enumerated() {
            #expect(d.count == Wire.headerSize + 1_000 && d.dropFirst(Wire.headerSize).allSatisfy { $0 == UInt8(i) })
        }
        let afterRun = b.stats
        #expect(afterRun.rxCoalesced == 1 && afterRun.rxOversized == 0)
        send(count: 3, length: 3_000)
        let big = receiveOnce()
        #expect(big.map(\.count) == Array(repeating: Wire.headerSize + 3_000, count: 3))
        let afterBig = b.stats
        #expect(afterBig.rxOversized == 3 && afterBig.rxDiscarded == 0)
    }

    /// Since Linux 6.11 (and its stable backports) a GSO send may carry 128 segments, and on
    /// loopback it reaches a GRO socket whole: a receive of two such sends hands on all 256.
    @Test("two GSO sends of 128 segments from another sender come out of one receive whole")
    func largestKernelRuns() throws {
        var b = try UDPTransport(burst: 2)
        let fd = ee_udp_open(0x7F00_0001, 0, 1 << 20)
        try #require(fd >= 0)
        defer { close(fd) }
        var address = [UInt8](repeating: 0, count: 16)
        ee_make_sockaddr_in(&address, 0x7F00_0001, b.port)
        let segment = 100
        var payload = [UInt8](repeating: 0, count: 128 * segment)
        for i in 0..<128 { payload[i * segment] = UInt8(i) }
        let control = UnsafeMutableRawPointer.allocate(byteCount: ee_udp_gso_control_size(), alignment: 8)
        defer { control.deallocate() }
        var sent: Int32 = 0
        address.withUnsafeMutableBytes { name in
            payload.withUnsafeMutableBytes { data in
                var iov = iovec(iov_base: data.baseAddress, iov_len: data.count)
                withUnsafeMutablePointer(to: &iov) { iovPointer in
                    var message = ee_mmsghdr()
                    message.msg_hdr.msg_name = name.baseAddress
                    message.msg_hdr.msg_namelen = 16
                    message.msg_hdr.msg_iov = iovPointer
                    message.msg_hdr.msg_iovlen = 1
                    ee_udp_set_gso(&message, control, UInt16(segment))
                    for _ in 0..<2 { sent += max(0, ee_sendmmsg(fd, &message, 1)) }
                }
            }
        }
        // An older kernel refuses more than 64 segments; then there is nothing to check.
        try #require(sent == 2, "this kernel does not take 128-segment GSO sends")
        var packets: [[UInt8]] = []
        let deadline = ee_now_ns() + 2_000_000_000
        while packets.count < 256 && ee_now_ns() < deadline {
            let n = b.receive()
            for i in 0..<n { packets.append(Array(b.received(i))) }
        }
        #expect(packets.count == 256)
        #expect(packets.allSatisfy { $0.count == segment })
        #expect(packets.enumerated().allSatisfy { $0.element.first == UInt8($0.offset % 128) })
        #expect(b.stats.rxDiscarded == 0)
    }

    @Test("without GSO every packet is its own send, with the same result")
    func unsegmented() throws {
        let r = try burst(gso: false)
        check(r.b, indices: Self.plan.indices.filter { Self.plan[$0].toB })
        check(r.c, indices: Self.plan.indices.filter { !Self.plan[$0].toB })
        #expect(r.sender.txSegmentedSends == 0)
        #expect(r.sender.txPackets == UInt64(Self.plan.count))
    }
}
