/// The fixed 64-byte message of the session-management (SM) channel. Little-endian:
/// ```
/// 0-3   "EESM"          4  version (4)     5  kind        6  error code   7  transport kind
/// 8-15  session token   16 client Rpc id   17 server Rpc id
/// 18-19 client session  20-21 server session               22-23 zero
/// 24-27 sender's MTU    28 data-plane key length (0 = plaintext)   29-31 zero
/// 32-63 sender's routing info
/// ```
struct SessionManagementMessage: Equatable, Sendable {
    static let size = 64
    static let magic: UInt32 = 0x4D53_4545  // "EESM" read little-endian
    /// 2: requests-for-response ask for runs, and the nonce covers the size field.
    /// 3: an RFR's size field carries the client's attempt number beside its run length, and
    /// the server answers each RFR once (a peer of version 2 would take a retransmitted RFR for
    /// an oversized run, or send its retransmissions as repeats, and stall on the first loss).
    /// 4: a session's first request number is derived from its token one way, so the request
    /// numbers in every packet header no longer show 37 of the token's bits (a peer of version 3
    /// would start its slots at other numbers, and every request would be dropped).
    static let version: UInt8 = 4
    /// `serverSession` of a disconnect from a client that never learnt the number.
    static let unknownSession: UInt16 = 0xFFFF

    enum Kind: UInt8, Sendable {
        case connectRequest = 1
        case connectResponse = 2
        case disconnectRequest = 3
        case disconnectResponse = 4
    }

    /// Error codes in responses. 0 = success.
    enum ErrorCode: UInt8, Sendable {
        case ok = 0
        case invalidRemoteRpcID = 1
        case transportMismatch = 2
        case mtuMismatch = 3
        case tooManySessions = 4
        case unreachableRoute = 5
        case unknownSession = 6
        case malformed = 7
        case cryptoMismatch = 8
        /// The request was of another version (the reply, in the server's version, says which).
        case versionMismatch = 9
    }

    var kind: Kind
    var error: ErrorCode = .ok
    var transport: TransportKind
    var token: UInt64
    var clientRpcID: UInt8
    var serverRpcID: UInt8
    var clientSession: UInt16
    var serverSession: UInt16 = 0
    var mtu: UInt32
    /// Key length of the data-plane AEAD (16 or 32), 0 for a plaintext data plane.
    var cryptoKeyLength: UInt8 = 0
    var route = RoutingInfo()

    func encode(to p: UnsafeMutableRawPointer) {
        p.initializeMemory(as: UInt8.self, repeating: 0, count: Self.size)
        p.storeBytes(of: Self.magic.littleEndian, as: UInt32.self)
        p.storeBytes(of: Self.version, toByteOffset: 4, as: UInt8.self)
        p.storeBytes(of: kind.rawValue, toByteOffset: 5, as: UInt8.self)
        p.storeBytes(of: error.rawValue, toByteOffset: 6, as: UInt8.self)
        p.storeBytes(of: transport.rawValue, toByteOffset: 7, as: UInt8.self)
        p.storeBytes(of: token.littleEndian, toByteOffset: 8, as: UInt64.self)
        p.storeBytes(of: clientRpcID, toByteOffset: 16, as: UInt8.self)
        p.storeBytes(of: serverRpcID, toByteOffset: 17, as: UInt8.self)
        p.storeBytes(of: clientSession.littleEndian, toByteOffset: 18, as: UInt16.self)
        p.storeBytes(of: serverSession.littleEndian, toByteOffset: 20, as: UInt16.self)
        p.storeBytes(of: mtu.littleEndian, toByteOffset: 24, as: UInt32.self)
        p.storeBytes(of: cryptoKeyLength, toByteOffset: 28, as: UInt8.self)
        for (i, w) in [route.w0, route.w1, route.w2, route.w3].enumerated() {
            p.storeBytes(of: w.littleEndian, toByteOffset: 32 + 8 * i, as: UInt64.self)
        }
    }

    /// The version of an SM message of a version other than this one (nil: not an SM message,
    /// or one of this version). Peers of different versions cannot talk; this lets each say so.
    static func foreignVersion(_ p: UnsafeRawPointer) -> UInt8? {
        guard UInt32(littleEndian: p.loadUnaligned(as: UInt32.self)) == magic else { return nil }
        let v = p.load(fromByteOffset: 4, as: UInt8.self)
        return v == version ? nil : v
    }

    /// Parses a message; nil if it is not a well-formed SM message of this version.
    static func decode(_ p: UnsafeRawPointer) -> SessionManagementMessage? {
        guard UInt32(littleEndian: p.loadUnaligned(as: UInt32.self)) == magic,
            p.load(fromByteOffset: 4, as: UInt8.self) == version,
            let kind = Kind(rawValue: p.load(fromByteOffset: 5, as: UInt8.self)),
            let error = ErrorCode(rawValue: p.load(fromByteOffset: 6, as: UInt8.self)),
            let transport = TransportKind(rawValue: p.load(fromByteOffset: 7, as: UInt8.self))
        else { return nil }
        var route = RoutingInfo()
        route.w0 = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 32, as: UInt64.self))
        route.w1 = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 40, as: UInt64.self))
        route.w2 = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 48, as: UInt64.self))
        route.w3 = UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 56, as: UInt64.self))
        return SessionManagementMessage(
            kind: kind, error: error, transport: transport,
            token: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self)),
            clientRpcID: p.load(fromByteOffset: 16, as: UInt8.self),
            serverRpcID: p.load(fromByteOffset: 17, as: UInt8.self),
            clientSession: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 18, as: UInt16.self)),
            serverSession: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 20, as: UInt16.self)),
            mtu: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 24, as: UInt32.self)),
            cryptoKeyLength: p.load(fromByteOffset: 28, as: UInt8.self),
            route: route)
    }
}
