import CSystemShims
import Glibc

/// Errors from opening a transport.
public enum TransportError: Error, Equatable, Sendable {
    case invalidMTU(Int)
    case socket(errno: Int32)
}

extension TransportError: CustomStringConvertible {
    public var description: String {
        switch self {
        case .invalidMTU(let mtu): "MTU \(mtu) is out of range"
        case .socket(let e): "UDP socket: \(String(cString: strerror(e)))"
        }
    }
}

/// The default transport: one non-blocking, busy-polled kernel UDP socket per Rpc, with
/// `recvmmsg`/`sendmmsg` batches. TX is zero-copy on our side: each datagram is gathered from
/// the header inside its ``TxItem`` and the message slice (the kernel copies once).
///
/// Consecutive packets of a burst that go to the same address with the same length (the last
/// may be shorter) leave as one UDP GSO send: the kernel walks its send path once for the group
/// and cuts it into the same datagrams at the end (on loopback, at the receiving socket). A
/// kernel or device that refuses GSO turns it off for the transport.
///
/// The socket also asks for UDP GRO: such a run then reaches the receiver as one buffer, which
/// `receive` cuts into its packets, instead of the kernel cutting it into a socket buffer per
/// datagram (on loopback that cut, with its per-datagram allocations, was the largest cost of
/// receiving a long message). Each receive slot then holds 64 KiB. `EERPC_UDP_GRO=0` turns it off.
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
    private let rxControl: UnsafeMutableRawPointer  // one UDP_GRO cmsg buffer per slot
    private let rxControlSize: Int
    // The packets of the last receive, `rxPacketCapacity` at most: where each starts (inside
    // `rxBuffer`) and how long it is.
    private let rxStarts: UnsafeMutablePointer<UnsafeMutableRawPointer>
    private let rxLengths: UnsafeMutablePointer<Int>
    private let rxPacketCapacity: Int
    private let txMsgs: UnsafeMutablePointer<ee_mmsghdr>
    private let txIovecs: UnsafeMutablePointer<iovec>  // two per packet: header, data
    private let txControl: UnsafeMutableRawPointer  // one UDP_SEGMENT cmsg buffer per message
    private let txControlSize: Int
    private let txPacketsPerMessage: UnsafeMutablePointer<Int>
    /// Off once the kernel has refused a GSO send (no checksum offload, old kernel).
    public private(set) var segmentationOffload: Bool
    /// Whether the kernel may hand over runs of datagrams as one buffer (UDP GRO).
    public let receiveOffload: Bool

    /// Opens and binds the socket.
    /// - Parameters:
    ///   - address: IPv4 address to bind (host order); default 127.0.0.1.
    ///   - port: UDP port; 0 picks a free one.
    ///   - mtu: UDP payload per datagram, eeRPC header included.
    ///   - gso: group same-size packets to one address into UDP GSO sends.
    ///   - gro: take runs of datagrams as one buffer (UDP GRO) where the kernel can.
    public init(
        address: UInt32 = 0x7F00_0001, port: UInt16 = 0, mtu: Int = Wire.defaultMTU,
        burst: Int = UDPTransport.defaultBurst, gso: Bool = true, gro: Bool = true
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

        receiveOffload = gro && !Self.groDisabledByEnvironment && ee_udp_enable_gro(fd) == 0
        // One spare byte per slot: a datagram that fills it is longer than the MTU. A coalesced
        // buffer holds at most 64 KiB; slots are staggered by a few cache lines so that the
        // headers of a burst do not all fall into the same cache sets.
        rxSlotSize = receiveOffload ? 65_536 + 5 * 64 : (mtu + 1 + 63) & ~63
        // Untouched pages of the slots cost no memory: the kernel writes only what arrives.
        rxBuffer = .allocate(byteCount: rxSlotSize * burst, alignment: 64)
        rxMsgs = .allocate(capacity: burst)
        rxIovecs = .allocate(capacity: burst)
        rxControlSize = ee_udp_gro_control_size()
        rxControl = .allocate(byteCount: rxControlSize * burst, alignment: 8)
        // A coalesced buffer holds at most 128 datagrams: a GSO send may carry that many since
        // Linux 6.11 (UDP_MAX_SEGMENTS, backported to 5.15 and later), and on loopback it arrives
        // whole. A receive that would hand on more drops the rest, counted.
        rxPacketCapacity = receiveOffload ? 128 * burst : burst
        rxStarts = .allocate(capacity: rxPacketCapacity)
        rxLengths = .allocate(capacity: rxPacketCapacity)
        txMsgs = .allocate(capacity: burst)
        txIovecs = .allocate(capacity: 2 * burst)
        txControlSize = ee_udp_gso_control_size()
        txControl = .allocate(byteCount: txControlSize * burst, alignment: 8)
        txPacketsPerMessage = .allocate(capacity: burst)
        segmentationOffload = gso
        for i in 0..<burst {
            rxIovecs[i] = iovec(iov_base: rxBuffer + i * rxSlotSize, iov_len: rxSlotSize)
            rxMsgs[i] = ee_mmsghdr()
            rxMsgs[i].msg_hdr.msg_iov = rxIovecs + i
            rxMsgs[i].msg_hdr.msg_iovlen = 1
            txMsgs[i] = ee_mmsghdr()
            txMsgs[i].msg_hdr.msg_namelen = socklen_t(MemoryLayout<sockaddr_in>.size)
            if receiveOffload { ee_udp_prepare_gro_receive(rxMsgs + i, rxControl + i * rxControlSize) }
        }
    }

    deinit {
        close(fd)
        rxBuffer.deallocate()
        rxMsgs.deallocate()
        rxIovecs.deallocate()
        rxControl.deallocate()
        rxStarts.deallocate()
        rxLengths.deallocate()
        txMsgs.deallocate()
        txIovecs.deallocate()
        txControl.deallocate()
        txPacketsPerMessage.deallocate()
    }

    public var maxReceive: Int { rxPacketCapacity }

    /// `EERPC_UDP_GRO=0` turns UDP GRO off in every transport of the process, to compare the two
    /// receive paths without a rebuild.
    static var groDisabledByEnvironment: Bool {
        guard let value = getenv("EERPC_UDP_GRO") else { return false }
        return String(cString: value) == "0"
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
        }
        var messages = buildMessages(items, from: 0, to: n)
        var packet = 0  // first packet of message `m`
        var m = 0
        var fullRetries = 0
        while m < messages {
            let r = ee_sendmmsg(fd, txMsgs + m, UInt32(messages - m))
            if r > 0 {
                for k in m..<m + Int(r) {
                    packet += txPacketsPerMessage[k]
                    if txPacketsPerMessage[k] > 1 { stats.txSegmentedSends &+= 1 }
                }
                m += Int(r)
                continue
            }
            if r == -EINTR { continue }
            if segmentationOffload && txPacketsPerMessage[m] > 1 && (r == -EIO || r == -EINVAL || r == -ENOPROTOOPT) {
                // GSO refused (no checksum offload on the device, or an old kernel): send the
                // rest one datagram per message from now on.
                segmentationOffload = false
                messages = buildMessages(items, from: packet, to: n)
                m = 0
                continue
            }
            // Socket buffer full (or a transient error): retry briefly, then drop the rest; the
            // client-driven protocol retransmits whatever it needs.
            fullRetries += 1
            if fullRetries > 64 {
                stats.txDropped &+= UInt64(n - packet)
                break
            }
        }
        stats.txPackets &+= UInt64(packet)
        return n
    }

    /// Lays packets `from..<to` out as messages from `txMsgs[0]`: a run of packets to one address
    /// with one length (the last may be shorter) becomes one GSO message. Returns the count.
    private mutating func buildMessages(_ items: UnsafePointer<TxItem>, from: Int, to: Int) -> Int {
        var m = 0
        var i = from
        while i < to {
            let first = items + i
            let length = Wire.headerSize + first.pointee.dataLength
            var j = i + 1
            if segmentationOffload {
                // UDP caps one send at 65,507 bytes of payload, and Linux at 64 segments.
                while j < to && j - i < 64 && (j - i + 1) * length <= Wire.maxMTU {
                    let next = items + j
                    guard next.pointee.route.pointee == first.pointee.route.pointee else { break }
                    let nextLength = Wire.headerSize + next.pointee.dataLength
                    if nextLength > length { break }
                    j += 1
                    if nextLength < length { break }  // a shorter datagram can only come last
                }
            }
            let msg = txMsgs + m
            msg.pointee.msg_hdr.msg_iov = txIovecs + 2 * i
            msg.pointee.msg_hdr.msg_iovlen = 2 * (j - i)
            msg.pointee.msg_hdr.msg_name = UnsafeMutableRawPointer(mutating: UnsafeRawPointer(first.pointee.route))
            ee_udp_set_gso(msg, txControl + m * txControlSize, j - i > 1 ? UInt16(length) : 0)
            txPacketsPerMessage[m] = j - i
            m += 1
            i = j
        }
        return m
    }

    public mutating func receive() -> Int {
        let r = ee_recvmmsg(fd, rxMsgs, UInt32(maxBurst))
        guard r > 0 else { return 0 }
        defer {
            // The kernel rewrote the control fields of the messages it filled; only those need
            // their control buffers back for the next call (most calls of a busy poll fill none).
            if receiveOffload {
                for i in 0..<Int(r) { ee_udp_prepare_gro_receive(rxMsgs + i, rxControl + i * rxControlSize) }
            }
        }
        var count = 0
        for i in 0..<Int(r) {
            let base = rxBuffer + i * rxSlotSize
            let length = Int(rxMsgs[i].msg_len)
            let segment = receiveOffload ? Int(ee_udp_received_segment_size(rxMsgs + i)) : 0
            if segment <= 0 || segment >= length {
                guard count < rxPacketCapacity else {
                    stats.rxDiscarded &+= 1
                    continue
                }
                // One datagram. Cut short by the kernel (it did not fit the slot), it is handed
                // on longer than the MTU, so the runtime drops it.
                rxStarts[count] = base
                rxLengths[count] = segment < 0 ? rxSlotSize : length
                if rxLengths[count] > mtu { stats.rxOversized &+= 1 }
                count += 1
                continue
            }
            // Several datagrams of `segment` bytes back to back; the last may be shorter.
            stats.rxCoalesced &+= 1
            var offset = 0
            while offset < length && count < rxPacketCapacity {
                rxStarts[count] = base + offset
                rxLengths[count] = min(segment, length - offset)
                if rxLengths[count] > mtu { stats.rxOversized &+= 1 }
                count += 1
                offset += segment
            }
            if offset < length { stats.rxDiscarded &+= UInt64((length - offset + segment - 1) / segment) }
        }
        stats.rxPackets &+= UInt64(count)
        return count
    }

    public mutating func waitForPackets(timeoutMs: Int32, doorbell: Int32) {
        _ = ee_poll_two(fd, doorbell, timeoutMs)
    }

    public func received(_ index: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: rxStarts[index], count: rxLengths[index])
    }
}
