import CSystemShims
import Glibc

/// Errors from opening a transport.
public enum TransportError: Error, Equatable, Sendable {
    case invalidMTU(Int)
    case socket(errno: Int32)
}

/// The default transport: one non-blocking, busy-polled kernel UDP socket per Rpc, with
/// `recvmmsg`/`sendmmsg` batches. TX is zero-copy on our side: each datagram is gathered from
/// the header inside its ``TxItem`` and the message slice (the kernel copies once).
///
/// Routing info: `w0` = IPv4 address (host order) | port << 32. Resolved: `w0, w1` hold a
/// `sockaddr_in`, used directly as `msg_name`.
public struct UDPTransport: Transport, ~Copyable {
    public static var kind: TransportKind { .udp }
    public static let defaultBurst = 32

    public let mtu: Int
    public let maxBurst: Int
    public let localRoute: RoutingInfo
    public private(set) var stats = TransportStats()
    /// The bound port (host order).
    public let port: UInt16

    private let fd: Int32
    // All of the following are owned by this transport, allocated once in init, freed in deinit.
    private let rxBuffer: UnsafeMutableRawPointer  // maxBurst slots of `rxSlotSize` bytes
    private let rxSlotSize: Int
    private let rxMsgs: UnsafeMutablePointer<ee_mmsghdr>
    private let rxIovecs: UnsafeMutablePointer<iovec>
    private let rxLengths: UnsafeMutablePointer<Int>
    private let txMsgs: UnsafeMutablePointer<ee_mmsghdr>
    private let txIovecs: UnsafeMutablePointer<iovec>  // two per message: header, data

    /// Opens and binds the socket.
    /// - Parameters:
    ///   - address: IPv4 address to bind (host order); default 127.0.0.1.
    ///   - port: UDP port; 0 picks a free one.
    ///   - mtu: UDP payload per datagram, eeRPC header included.
    public init(
        address: UInt32 = 0x7F00_0001, port: UInt16 = 0, mtu: Int = Wire.defaultMTU,
        burst: Int = UDPTransport.defaultBurst
    ) throws(TransportError) {
        guard mtu >= Wire.minMTU && mtu <= Wire.maxMTU else { throw .invalidMTU(mtu) }
        // Socket buffers hold several full credit windows so bursts are not dropped in the kernel.
        let fd = ee_udp_open(address, port, Int32(max(4 << 20, 64 * mtu)))
        guard fd >= 0 else { throw .socket(errno: -fd) }
        let bound = ee_socket_port(fd)
        guard bound > 0 else {
            close(fd)
            throw .socket(errno: -bound)
        }
        self.fd = fd
        self.mtu = mtu
        self.maxBurst = burst
        self.port = UInt16(bound)
        var route = RoutingInfo()
        route.w0 = UInt64(address) | UInt64(bound) << 32
        localRoute = route

        // One spare byte per slot: a datagram that fills it is longer than the MTU.
        rxSlotSize = (mtu + 1 + 63) & ~63
        rxBuffer = .allocate(byteCount: rxSlotSize * burst, alignment: 64)
        rxMsgs = .allocate(capacity: burst)
        rxIovecs = .allocate(capacity: burst)
        rxLengths = .allocate(capacity: burst)
        txMsgs = .allocate(capacity: burst)
        txIovecs = .allocate(capacity: 2 * burst)
        for i in 0..<burst {
            rxIovecs[i] = iovec(iov_base: rxBuffer + i * rxSlotSize, iov_len: rxSlotSize)
            rxMsgs[i] = ee_mmsghdr()
            rxMsgs[i].msg_hdr.msg_iov = rxIovecs + i
            rxMsgs[i].msg_hdr.msg_iovlen = 1
            txMsgs[i] = ee_mmsghdr()
            txMsgs[i].msg_hdr.msg_iov = txIovecs + 2 * i
            txMsgs[i].msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)
        }
    }

    deinit {
        close(fd)
        rxBuffer.deallocate()
        rxMsgs.deallocate()
        rxIovecs.deallocate()
        rxLengths.deallocate()
        txMsgs.deallocate()
        txIovecs.deallocate()
    }

    public func resolve(_ remote: RoutingInfo) -> RoutingInfo? {
        let ip = UInt32(truncatingIfNeeded: remote.w0)
        let port = UInt16(truncatingIfNeeded: remote.w0 >> 32)
        guard port != 0 else { return nil }
        var resolved = RoutingInfo()
        withUnsafeMutableBytes(of: &resolved) { ee_make_sockaddr_in($0.baseAddress, ip, port) }
        return resolved
    }

    public mutating func transmit(_ items: UnsafePointer<TxItem>, count: Int) -> Int {
        let n = min(count, maxBurst)
        for i in 0..<n {
            // The iovecs point into `items` and into message buffers; both outlive this call.
            let item = items + i
            let iov = txIovecs + 2 * i
            iov[0] = iovec(
                iov_base: UnsafeMutableRawPointer(mutating: UnsafeRawPointer(item)), iov_len: Wire.headerSize)
            iov[1] = iovec(iov_base: UnsafeMutableRawPointer(mutating: item.pointee.data), iov_len: item.pointee.dataLength)
            txMsgs[i].msg_hdr.msg_iovlen = item.pointee.dataLength > 0 ? 2 : 1
            txMsgs[i].msg_hdr.msg_name = UnsafeMutableRawPointer(mutating: UnsafeRawPointer(item.pointee.route))
        }
        var sent = 0
        var fullRetries = 0
        while sent < n {
            let r = ee_sendmmsg(fd, txMsgs + sent, UInt32(n - sent))
            if r > 0 {
                sent += Int(r)
                continue
            }
            if r == -EINTR { continue }
            // Socket buffer full (or a transient error): retry briefly, then drop the rest; the
            // client-driven protocol retransmits whatever it needs.
            fullRetries += 1
            if fullRetries > 64 {
                stats.txDropped &+= UInt64(n - sent)
                break
            }
        }
        stats.txPackets &+= UInt64(sent)
        return n
    }

    public mutating func receive() -> Int {
        let r = ee_recvmmsg(fd, rxMsgs, UInt32(maxBurst))
        guard r > 0 else { return 0 }
        let n = Int(r)
        for i in 0..<n {
            let len = Int(rxMsgs[i].msg_len)
            rxLengths[i] = len
            if len > mtu { stats.rxOversized &+= 1 }
        }
        stats.rxPackets &+= UInt64(n)
        return n
    }

    public mutating func waitForPackets(timeoutMs: Int32) {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        _ = poll(&p, 1, timeoutMs)
    }

    public func received(_ index: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: rxBuffer + index * rxSlotSize, count: rxLengths[index])
    }
}
