/// Counters of one Rpc endpoint (a snapshot; read on the dispatch thread).
public struct RpcStats: Sendable, Equatable {
    /// RPCs completed at this client (continuations run).
    public var rpcsCompleted: UInt64 = 0
    /// Requests whose handler ran at this server.
    public var requestsHandled: UInt64 = 0
    /// Go-back-N rollbacks after a retransmission timeout.
    public var retransmissions: UInt64 = 0
    /// Duplicate requests answered again from the response cache.
    public var responsesResent: UInt64 = 0
    /// Notices that a request's handler is still running: sent (server) or accepted (client).
    public var handlerRunningNotices: UInt64 = 0
    public var packetsReceived: UInt64 = 0
    public var packetsSent: UInt64 = 0
    /// Responses given for a request that was no longer current (ignored).
    public var staleResponses: UInt64 = 0
    /// Packets sealed and opened by the AES pool (the rest of an encrypted Rpc's are inline).
    public var offloadedSeals: UInt64 = 0
    public var offloadedOpens: UInt64 = 0
    /// Times the dispatch thread let the AES pool's opens finish (waiting if it had any) before
    /// it acted on the first packet of the peer's next key phase: once per phase change, never
    /// for a packet that fails to authenticate or one of the previous phase.
    public var poolDrains: UInt64 = 0
    /// Response packets sealed at once when their handler answered, straight from its bytes
    /// (``RequestHandle/respond(copying:_:)``).
    public var presealedPackets: UInt64 = 0
    /// Kept presealed packets sealed again under a new key after a key update.
    public var resealedPackets: UInt64 = 0
    /// Server sessions taken back from peers silent for `RpcConfig.reclaimIdleSessionsAfterNs`,
    /// to make room for a new session when the table was full.
    public var sessionsReclaimed: UInt64 = 0
    /// Partly received requests freed because their client had been silent past the silence
    /// limit when a new one needed the room (``RpcConfig/maxAssemblingBytes``).
    public var assembliesAbandoned: UInt64 = 0
    /// Disconnect requests with a live session's token from a peer with another certificate than
    /// the one that made the session (refused; the session goes on).
    public var disconnectsRefused: UInt64 = 0
    /// Packets dropped, by reason.
    public var drops: [DropReason: UInt64] = [:]

    public init() {}

    public var totalDrops: UInt64 { drops.values.reduce(0, +) }
    public func drops(_ reason: DropReason) -> UInt64 { drops[reason] ?? 0 }

    /// Adds another endpoint's counters, for totals over several dispatch threads.
    public mutating func add(_ other: RpcStats) {
        rpcsCompleted &+= other.rpcsCompleted
        requestsHandled &+= other.requestsHandled
        retransmissions &+= other.retransmissions
        responsesResent &+= other.responsesResent
        handlerRunningNotices &+= other.handlerRunningNotices
        packetsReceived &+= other.packetsReceived
        packetsSent &+= other.packetsSent
        staleResponses &+= other.staleResponses
        offloadedSeals &+= other.offloadedSeals
        offloadedOpens &+= other.offloadedOpens
        poolDrains &+= other.poolDrains
        presealedPackets &+= other.presealedPackets
        resealedPackets &+= other.resealedPackets
        sessionsReclaimed &+= other.sessionsReclaimed
        assembliesAbandoned &+= other.assembliesAbandoned
        disconnectsRefused &+= other.disconnectsRefused
        drops.merge(other.drops, uniquingKeysWith: &+)
    }
}
