import Glibc
import CSystemShims

/// Transport-specific address of an Rpc endpoint, opaque to the runtime (32 bytes, as carried in
/// session-management messages). Each transport defines what the words mean.
@frozen
public struct RoutingInfo: BitwiseCopyable, Equatable, Sendable {
    public var w0: UInt64 = 0
    public var w1: UInt64 = 0
    public var w2: UInt64 = 0
    public var w3: UInt64 = 0
    public init() {}
    public static let byteCount = 32
}

/// Which transport an endpoint speaks; both ends of a session must agree.
public enum TransportKind: UInt8, Sendable {
    case udp = 1
    case xdp = 2
    case verbs = 3
}

/// One packet to send: its header inline (so retransmissions and control packets need no buffer),
/// plus a slice of message data. Built by the runtime in its TX queue, read by the transport
/// during `transmit`; the data slice belongs to a message buffer that stays allocated at least
/// until `transmit` returns.
@frozen
public struct TxItem: BitwiseCopyable {
    /// The 16 header bytes as two little-endian words (see ``PacketHeader``).
    public var header0: UInt64
    public var header1: UInt64
    public var data: UnsafeRawPointer?
    public var dataLength: Int
    /// The destination, resolved by ``Transport/resolve(_:)``; owned by the runtime's session table.
    public var route: UnsafePointer<RoutingInfo>
    /// The runtime's slot index this packet belongs to (transports ignore it): lets the runtime
    /// withdraw a queued packet whose message buffer it is about to give back.
    public var owner: Int32
    /// The runtime's: `data` holds this packet's ciphertext and tag already (a presealed
    /// response), so the encrypted send path must not seal it. Transports ignore it.
    public var presealed = false

    @inlinable
    public init(
        header: PacketHeader, data: UnsafeRawPointer?, dataLength: Int, route: UnsafePointer<RoutingInfo>,
        owner: Int32 = -1
    ) {
        let (w0, w1) = header.words
        header0 = w0.littleEndian
        header1 = w1.littleEndian
        self.data = data
        self.dataLength = dataLength
        self.route = route
        self.owner = owner
    }
}

/// An unreliable datagram transport. The runtime is generic over it (``Rpc``), so each
/// implementation gets a specialised event loop rather than calls through an existential.
///
/// The runtime calls these only from the Rpc's dispatch thread.
public protocol Transport: ~Copyable {
    /// Which transport this is (checked at session connect).
    static var kind: TransportKind { get }
    /// Largest datagram payload, header included.
    var mtu: Int { get }
    /// Largest number of items one `transmit` call takes.
    var maxBurst: Int { get }
    /// Largest number of packets one `receive` call returns (`maxBurst` unless the transport
    /// takes several packets in one buffer).
    var maxReceive: Int { get }
    /// This endpoint's address, sent to peers at session connect.
    var localRoute: RoutingInfo { get }
    /// Turns a peer's ``localRoute`` into the form `transmit` needs, or nil if unreachable.
    func resolve(_ remote: RoutingInfo) -> RoutingInfo?
    /// Sends up to `count` (≤ `maxBurst`) packets. Returns how many were consumed: sent, or
    /// dropped and counted when the device stayed full. Returns 0 only if `count` is 0.
    mutating func transmit(_ items: UnsafePointer<TxItem>, count: Int) -> Int
    /// Receives a burst of packets and returns how many. They stay readable through
    /// ``received(_:)`` until the next call to `receive`. A transport that takes several
    /// packets in one buffer (UDP GRO) may return more than `maxBurst`.
    mutating func receive() -> Int
    /// Packet `index` of the last burst, writable (the encrypted datapath opens packets in
    /// place). Valid until the next `receive`.
    func received(_ index: Int) -> UnsafeMutableRawBufferPointer
    /// Counters of this transport.
    var stats: TransportStats { get }
    /// Blocks until a packet may be waiting, `doorbell` (an eventfd other threads ring; -1:
    /// none) is rung, or `timeoutMs` passes: lets an idle dispatch thread give its CPU away
    /// instead of spinning.
    mutating func waitForPackets(timeoutMs: Int32, doorbell: Int32)
}

extension Transport where Self: ~Copyable {
    public var maxReceive: Int { maxBurst }

    /// A transport without a blocking wait watches only the doorbell.
    public mutating func waitForPackets(timeoutMs: Int32, doorbell: Int32) {
        if doorbell >= 0 {
            _ = ee_poll_two(doorbell, -1, timeoutMs)
        } else {
            _ = usleepShim(UInt32(timeoutMs) * 1_000)
        }
    }
}

/// Packet counters of a transport.
public struct TransportStats: Sendable, Equatable {
    public var txPackets: UInt64 = 0
    public var rxPackets: UInt64 = 0
    /// Packets dropped at send because the device stayed full (the protocol recovers them).
    public var txDropped: UInt64 = 0
    /// Sends that carried several packets as one UDP GSO datagram.
    public var txSegmentedSends: UInt64 = 0
    /// Datagrams longer than the MTU (delivered truncated to the runtime, which drops them).
    public var rxOversized: UInt64 = 0
    /// Receives that carried several packets as one buffer (UDP GRO).
    public var rxCoalesced: UInt64 = 0
    /// Packets beyond what one receive can hand on (a peer's GSO sends of up to 128 segments
    /// each, coalesced back to back); dropped and counted.
    public var rxDiscarded: UInt64 = 0
    public init() {}
}

@inline(__always)
func usleepShim(_ us: UInt32) -> Int32 { usleep(us) }
