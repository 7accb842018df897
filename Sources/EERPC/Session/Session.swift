/// Lifecycle of a session end.
public enum SessionState: UInt8, Sendable {
    /// Number not in use.
    case free
    /// Client: connect request sent over the session-management channel, no answer yet.
    case connecting
    /// Both ends know each other's session number and route; data may flow.
    case connected
    /// Client: disconnect request sent, no answer yet.
    case disconnecting
    /// Client: connect was refused or failed; `destroySession` releases the number.
    case failed
}

public enum SessionRole: UInt8, Sendable {
    case client
    case server
}

/// One end of a session. Lives in the endpoint's session table (indexed by session number);
/// its 8 slots live in the slot table at `number * 8`.
struct Session {
    var state: SessionState = .free
    var role: SessionRole = .client
    /// The peer's session number: the `destSession` of every packet we send on this session.
    var remoteNumber: UInt16 = 0
    var remoteRpcID: UInt8 = 0
    /// Random per session; identifies it in session-management messages (dedupe, disconnect).
    var token: UInt64 = 0
    /// Client: packets this session may still send before a reply returns a credit.
    var credits = Wire.sessionCredits
    /// Client: bit i set = slot i free.
    var freeSlots: UInt8 = 0xFF
    /// Client: requests waiting for a free slot.
    var backlog = Backlog()
    /// Client: the remote Nexus's session-management address (for disconnect).
    var remoteSMAddress: UInt32 = 0
    var remoteSMPort: UInt16 = 0
    /// Client: why connect failed (when `state == .failed`).
    var failure: SessionError? = nil
    /// When the peer was last heard from: the connect, or its last packet that authenticated.
    var lastHeard: UInt64 = 0
    /// Client: whoever connected stopped waiting (a connect timeout). The answer, when it comes,
    /// frees the session instead of handing it on.
    var abandoned = false
    /// Server: the certificate of the peer that asked for this session (nil over plain TCP).
    /// Only a peer with the same certificate may disconnect it: the token alone would let any
    /// cluster member who learned it end another's session.
    var peerCertificate: CertificateFingerprint? = nil
    /// Server: bytes this session's partly received requests hold of the Rpc's assembly budget
    /// (the sum of its slots' `assemblyCharge`; see ``RpcConfig/maxAssemblingBytesPerSession``).
    var assemblingBytes = 0

    /// First request number of slot 0: random per session, so packets of an earlier session that
    /// had the same number can never look current to this one. Derived from the token one way
    /// (HKDF-Expand, HMAC-SHA256 keyed by it): request numbers travel in clear in every packet
    /// header, and the token is what authorises a disconnect, so they must not reveal it.
    /// (Version 3 used 37 of the token's bits as the base itself.) Run once per session.
    static func requestBase(token: UInt64) -> UInt64 {
        // The token as a key: HMAC pads a short key with zeros, so its 8 bytes alone key it.
        let key = Secret(w0: token.littleEndian)
        var out: UInt64 = 0
        let ok = withUnsafeMutableBytes(of: &out) { key.expand("eeRPC request base", into: $0.baseAddress!, count: 8) }
        precondition(ok, "HKDF-SHA256 failed (libcrypto without HKDF?)")
        return UInt64(littleEndian: out) & 0x0000_00FF_FFFF_FFF8
    }
}

/// Per-slot state. A slot is one outstanding RPC; client and server use different fields.
struct Slot {
    /// Client: next request number on this slot is `requestNumber + window`. Server: the request
    /// number of the request in (or last through) this slot. Starts at the slot index.
    var requestNumber: UInt64 = 0
    var requestType: UInt8 = 0

    // MARK: Client
    /// Non-nil while an RPC is in flight on this slot.
    var request: MsgBuffer? = nil
    var response: MsgBuffer? = nil
    var continuation: Continuation? = nil
    var tag: UInt64 = 0
    /// Exchanges asked for and answered, in the unified index space: request packets 0..<N,
    /// then response packets N..<N+M-1 asked for by RFRs (one RFR may ask for a run of them).
    var numTx = 0
    var numRx = 0
    var requestPackets = 0
    /// 0 until response packet 0 arrives.
    var responsePackets = 0
    var responseSize = 0
    var lastProgress: UInt64 = 0
    /// In the stall queue: out of credits, or with an RFR to send after this receive burst.
    var stalled = false
    /// Retransmission timeouts since the last accepted packet.
    var retriesWithoutProgress = 0
    /// Go-back-N rollbacks of this request so far: the attempt number its RFRs carry.
    var attempt = 0
    /// When the server first said this request's handler was still running (0: it has not).
    var handlerWaitStart: UInt64 = 0
    /// The flush epoch in which this slot last queued a packet (see `withdrawQueuedPackets`).
    var queuedEpoch: UInt64 = 0
    /// Packets of this slot waiting in the AES pool to be sealed.
    var offloadPending = 0

    // MARK: Server
    /// Request being assembled (multi-packet) or copied for a background handler.
    var assembly: MsgBuffer? = nil
    /// Request packets received in order for `requestNumber`.
    var serverNumRx = 0
    /// When the last packet of the request arrived, a copy included (multi-packet requests; see
    /// `freeAbandonedAssemblies`).
    var serverLastRx: UInt64 = 0
    /// Bytes this slot's partly received request holds of `maxAssemblingBytes` (0: none). Kept
    /// here, not derived from the request's fields, which other paths rewrite.
    var assemblyCharge = 0
    var serverRequestPackets = 0
    var serverRequestSize = 0
    /// Highest response packet index queued for the current response (-1: none yet). An RFR at
    /// or below it is a retransmission.
    var serverHighestQueued = -1
    /// The latest client attempt an RFR of the current request came in, and the last response
    /// packet index asked for in it. Within one attempt the client asks for each packet once,
    /// in order, so an RFR of that attempt starting at or below `rfrLast`, or of an earlier
    /// attempt, is a copy (replayed or duplicated): answering it again would let anyone who
    /// captured one packet make the server send a credit window's worth.
    var rfrAttempt = 0
    var rfrLast = 0
    /// The response, kept until the next request on this slot so duplicates can be answered.
    var serverResponse: MsgBuffer? = nil
    var responseReady = false
    /// `serverResponse` holds its packets already sealed (see `presealResponse`): packet j at
    /// `data + j × (data per packet + tag)`, under the key of phase `presealedPhase`. Its `size`
    /// is still the message's.
    var presealed = false
    var presealedPhase = false
    /// A handler (foreground awaiting a deferred response, or background) owns this request.
    var handlerActive = false
    /// The current request was refused (no handler for its type); duplicates get the refusal again.
    var rejected = false
    /// One-packet response buffer allocated with the session.
    var preallocated: MsgBuffer? = nil
}

/// Why a session could not be set up or used.
public enum SessionError: Error, Equatable, Sendable {
    case connectFailed(errno: Int32)
    case timedOut
    case protocolError
    case invalidRemoteRpcID
    case transportMismatch
    case mtuMismatch
    case tooManySessions
    case unreachableRoute
    case rejected(code: UInt8)
    /// The TLS handshake on the session-management channel failed (no, expired or foreign
    /// certificate, or no TLS at the other end).
    case handshakeFailed(String)
    /// One end encrypts the data plane and the other does not, or they use different key sizes.
    case cryptoMismatch
    /// The peer speaks another version of the session-management protocol (and so of the data
    /// plane): `peer` is its version, ``SessionError/localVersion`` this end's.
    case versionMismatch(peer: UInt8)

    /// This end's session-management protocol version.
    public static var localVersion: UInt8 { SessionManagementMessage.version }
}
