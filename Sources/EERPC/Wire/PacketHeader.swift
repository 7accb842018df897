/// The 16-byte header at the start of every data-plane packet. All fields little-endian.
///
/// ```
/// byte 0       magic (0xEE)
/// byte 1       bits 0-1 packet type, bit 2 rejected (responses only), bit 7 key phase,
///              bits 3-6 reserved (zero)
/// bytes 2-3    destination session number (the receiver's)
/// byte 4       request type (handler id)
/// bytes 5-7    message size in bytes (24 bits; ≤ Wire.maxMessageSize); on a request-for-response,
///              bits 0-7 the number of response packets it asks for, from its packet number on,
///              and bits 8-22 the client's attempt number (its go-back-N retransmissions of
///              this request so far), which makes every RFR the client sends for a request a
///              different packet, so the server can tell a replayed copy from a new question
///              on a credit return, 0, or ``Wire/handlerRunningMark`` on the notice that the
///              handler of the request is still running
/// bytes 8-13   request number (48 bits)
/// bytes 14-15  packet number
/// ```
/// The encrypted datapath authenticates these 16 bytes as AAD; the key-phase bit is its.
@frozen
public struct PacketHeader: Equatable, Sendable, BitwiseCopyable {
    public var type: PacketType
    public var keyPhase: Bool
    /// On a response: the server refused the request (no handler for its type); no payload.
    public var rejected: Bool
    public var destSession: UInt16
    public var requestType: UInt8
    public var messageSize: UInt32
    public var requestNumber: UInt64
    public var packetNumber: UInt16

    public static let maxRequestNumber: UInt64 = (1 << 48) - 1
    /// The key-phase bit in the first header word as stored in a TX descriptor (little-endian),
    /// for setting it on a queued packet without re-encoding the header.
    public static let keyPhaseBitInWord0: UInt64 = UInt64(0x80 << 8).littleEndian

    @inlinable
    public init(
        type: PacketType, keyPhase: Bool = false, rejected: Bool = false, destSession: UInt16, requestType: UInt8,
        messageSize: UInt32, requestNumber: UInt64, packetNumber: UInt16
    ) {
        self.type = type
        self.keyPhase = keyPhase
        self.rejected = rejected
        self.destSession = destSession
        self.requestType = requestType
        self.messageSize = messageSize
        self.requestNumber = requestNumber
        self.packetNumber = packetNumber
    }

    /// A request-for-response for `count` response packets from `packetNumber` on, sent in the
    /// client's `attempt` at this request (0 until its first retransmission timeout).
    @inlinable
    public static func requestForResponse(
        destSession: UInt16, requestType: UInt8, requestNumber: UInt64, packetNumber: UInt16, count: Int, attempt: Int
    ) -> PacketHeader {
        PacketHeader(
            type: .requestForResponse, destSession: destSession, requestType: requestType,
            messageSize: UInt32(truncatingIfNeeded: count | (attempt << Wire.rfrCountBits)), requestNumber: requestNumber,
            packetNumber: packetNumber)
    }

    /// On a request-for-response: the number of response packets it asks for.
    @inlinable
    public var runCount: Int { Int(messageSize) & Wire.rfrCountMask }

    /// On a request-for-response: the client's attempt number at this request.
    @inlinable
    public var runAttempt: Int { Int(messageSize) >> Wire.rfrCountBits }

    /// The size of the message whose bytes this packet carries part of, which decides whether
    /// the AES pool handles it: 0 for the payload-free control packets, whose size field holds
    /// a run (request-for-response) or a mark (credit return).
    @inlinable
    public var carriedMessageSize: Int { type == .request || type == .response ? Int(messageSize) : 0 }

    /// ``carriedMessageSize`` from header word 0 as stored in a TX descriptor (little-endian).
    @inlinable
    public static func carriedMessageSize(word0 stored: UInt64) -> Int {
        let word = UInt64(littleEndian: stored)
        let type = UInt8(truncatingIfNeeded: word >> 8) & 0x03
        let carries = type == PacketType.request.rawValue || type == PacketType.response.rawValue
        return carries ? Int(truncatingIfNeeded: word >> 40) : 0
    }

    /// On a credit return: the server's notice that the request's handler is still running.
    @inlinable
    public var isHandlerRunningNotice: Bool { type == .creditReturn && messageSize == Wire.handlerRunningMark }

    /// The header as two little-endian words, the form stored in TX descriptors.
    @inlinable
    public var words: (UInt64, UInt64) {
        var w0 = UInt64(Wire.magic)
        w0 |= UInt64(type.rawValue | (rejected ? 0x04 : 0) | (keyPhase ? 0x80 : 0)) << 8
        w0 |= UInt64(destSession) << 16
        w0 |= UInt64(requestType) << 32
        w0 |= UInt64(messageSize & 0xFF_FFFF) << 40
        let w1 = (requestNumber & Self.maxRequestNumber) | (UInt64(packetNumber) << 48)
        return (w0, w1)
    }

    /// Writes the 16 header bytes at `p`.
    /// - Precondition: `p` has 16 writable bytes; the caller owns them.
    @inlinable
    public func encode(to p: UnsafeMutableRawPointer) {
        let (w0, w1) = words
        p.storeBytes(of: w0.littleEndian, as: UInt64.self)
        p.storeBytes(of: w1.littleEndian, toByteOffset: 8, as: UInt64.self)
    }

    /// Parses a received packet's header, checking everything that can be checked without
    /// session state: length, magic, reserved bits, size limit and payload presence.
    /// - Parameters:
    ///   - p: the packet, valid for `length` bytes for the duration of the call.
    ///   - trailer: bytes at the end that are not payload (the AEAD tag of an encrypted session).
    @inlinable
    public static func parse(_ p: UnsafeRawPointer, length: Int, trailer: Int = 0) -> Result<PacketHeader, DropReason> {
        guard length >= Wire.headerSize + trailer else { return .failure(.truncated) }
        let w0 = UInt64(littleEndian: p.loadUnaligned(as: UInt64.self))
        let w1 = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        guard UInt8(truncatingIfNeeded: w0) == Wire.magic else { return .failure(.badMagic) }
        let flags = UInt8(truncatingIfNeeded: w0 >> 8)
        guard flags & 0x78 == 0 else { return .failure(.reservedBits) }
        let type = PacketType(rawValue: flags & 0x03).unsafelyUnwrapped  // 2 bits: all four values exist
        let rejected = flags & 0x04 != 0
        guard !rejected || type == .response else { return .failure(.reservedBits) }
        let size = UInt32(truncatingIfNeeded: w0 >> 40) & 0xFF_FFFF
        let runningNotice = size == Wire.handlerRunningMark && type == .creditReturn
        guard size <= Wire.maxMessageSize || runningNotice else { return .failure(.oversizedMessage) }
        let payload = length - Wire.headerSize - trailer
        switch type {
        case .request, .response:
            guard payload > 0 || size == 0 else { return .failure(.badPayloadLength) }
            guard !rejected || (payload == 0 && size == 0) else { return .failure(.badPayloadLength) }
        case .requestForResponse, .creditReturn:
            guard payload == 0 else { return .failure(.badPayloadLength) }
        }
        return .success(
            PacketHeader(
                type: type,
                keyPhase: flags & 0x80 != 0,
                rejected: rejected,
                destSession: UInt16(truncatingIfNeeded: w0 >> 16),
                requestType: UInt8(truncatingIfNeeded: w0 >> 32),
                messageSize: size,
                requestNumber: w1 & maxRequestNumber,
                packetNumber: UInt16(truncatingIfNeeded: w1 >> 48)
            )
        )
    }
}
