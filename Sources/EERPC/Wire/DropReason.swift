/// Why a received packet was dropped. Every drop is counted per reason in ``RpcStats``.
public enum DropReason: Int, Error, CaseIterable, Sendable {
    /// Shorter than a header.
    case truncated = 0
    /// First byte is not ``Wire/magic``.
    case badMagic
    /// Reserved header bits set.
    case reservedBits
    /// Message size above ``Wire/maxMessageSize``.
    case oversizedMessage
    /// Payload length does not fit the packet type, message size and packet number.
    case badPayloadLength
    /// Destination session number not in use, or in use by a session in another state or role.
    case unknownSession
    /// Packet type that the receiving end of this session never accepts.
    case wrongDirection
    /// Packet number outside the message.
    case badPacketNumber
    /// Duplicate, stale or out-of-order packet (normal under loss; recovered by retransmission).
    case outOfOrder
    /// Could not buffer the packet (message too large for the pools).
    case noBuffer
    /// Request type with no registered handler.
    case noHandler
    /// An encrypted session's packet that no key of the session authenticates (tampered, forged,
    /// or from an older session with the same number).
    case authenticationFailed
    /// A request-for-response the server has answered already: a replayed or duplicated copy
    /// (the client's retransmissions carry a new attempt number).
    case repeatedRequestForResponse
    /// The first packet of a multi-packet request, while the requests being assembled already
    /// hold ``RpcConfig/maxAssemblingBytes`` (its client sends it again).
    case assemblyBudget
    /// The first packet of a multi-packet request, while its session's requests being assembled
    /// already hold ``RpcConfig/maxAssemblingBytesPerSession`` (its client sends it again).
    case assemblySessionShare

    public var name: String {
        switch self {
        case .truncated: "truncated"
        case .badMagic: "bad_magic"
        case .reservedBits: "reserved_bits"
        case .oversizedMessage: "oversized_message"
        case .badPayloadLength: "bad_payload_length"
        case .unknownSession: "unknown_session"
        case .wrongDirection: "wrong_direction"
        case .badPacketNumber: "bad_packet_number"
        case .outOfOrder: "out_of_order"
        case .noBuffer: "no_buffer"
        case .noHandler: "no_handler"
        case .authenticationFailed: "authentication_failed"
        case .repeatedRequestForResponse: "repeated_rfr"
        case .assemblyBudget: "assembly_budget"
        case .assemblySessionShare: "assembly_session_share"
        }
    }
}
