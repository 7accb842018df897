/// The four packet types of the client-driven protocol (research/erpc.md §2).
public enum PacketType: UInt8, Sendable, BitwiseCopyable {
    /// Request data, client → server.
    case request = 0
    /// Request-for-response: asks for response packet `pkt_num`, client → server, no payload.
    case requestForResponse = 1
    /// Explicit credit return for a non-last request packet, server → client, no payload. For
    /// the last packet, with ``Wire/handlerRunningMark`` as its size, it says the handler is still
    /// running (the client keeps waiting instead of counting the silence against the session).
    case creditReturn = 2
    /// Response data, server → client.
    case response = 3
}
