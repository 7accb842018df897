import CSystemShims
import EERPC

/// eekv's requests and replies, carried as eeRPC messages. All integers little-endian.
///
/// Requests (eeRPC request type ``KVProtocol/readType`` for get, scan and mget, which run on the
/// dispatch thread; ``KVProtocol/writeType`` for put, delete and merge, which go to the writer):
/// ```
/// get     op=1 | klen u16 | key
/// put     op=2 | klen u16 | key | value (the rest of the message)
/// delete  op=3 | klen u16 | key
/// scan    op=4 | slen u16 | start | flags u8 | elen u16 | end | limit u32
/// mget    op=5 | count u16 | (klen u16 | key) × count
/// merge   op=6 | klen u16 | key | patch (the rest: a ``FieldRecord`` of at least one field)
/// ```
/// A merge sets the patch's fields in the stored record (creating it if the key does not exist),
/// atomically, on the node: one round trip where a get and a put would take two and could lose a
/// concurrent writer's fields.
/// A scan's flags: ``KVProtocol/scanHasEnd`` (`end` bounds it; else it runs to the last key),
/// ``KVProtocol/scanAfterStart`` (it starts after `start`, not at it) and
/// ``KVProtocol/scanResumable`` (the client reads `more` = 2, below).
/// Replies: `status u8 | body`. Bodies of `ok` replies: get → the value; scan → `count u32 | more u8 |
/// (klen u16 | key | vlen u32 | value) × count`, then, if `more` is 2, `klen u16 | key`: the node
/// walked past ``KVProtocol/maxScanSkips`` keys of slots it does not serve and stopped after `key`,
/// the last key it walked (at or past every key in the reply: it has shown all its keys up to it);
/// `more` 1: the reply was cut after its last record; mget → `count u16 | (found u8 | vlen u32 | value) × count`.
/// An mget reply answers the request's first `count` keys (at least one): those whose values fit
/// one message. The client asks again for the rest.
/// Error replies carry a UTF-8 message as the body.
///
/// Versions: the request types are the protocol's version. A change that a node or client of
/// today could misread takes new request types; eeRPC answers a type without a handler with
/// `.rejected`, which the client reports as a node that speaks another version of the protocol.
public enum KVProtocol {
    public static let readType: UInt8 = 10
    public static let writeType: UInt8 = 11
    /// Largest value: with the longest key it still fits a scan reply alone (6 bytes of reply
    /// header, 6 of record header), so every record a put or merge stores can be scanned. A put
    /// (3 bytes of header) and an mget reply (3 + 5) need less.
    public static let maxValueSize = Wire.maxMessageSize - (1 + 4 + 1) - (2 + 4) - Store.maxKeySize
    /// Largest scan limit and mget key count per request.
    public static let maxScanLimit = 100_000
    public static let maxMultiGet = 4_096
    /// Scan flag: the scan ends before `end`.
    public static let scanHasEnd: UInt8 = 1
    /// Scan flag: the scan starts after `start`. A scan resumes after the last key it has seen
    /// this way: "that key + 0x00" would be one byte too long after a key of the longest length.
    public static let scanAfterStart: UInt8 = 2
    /// Scan flag: the client takes a reply that stops at ``maxScanSkips`` and says where. Without
    /// it a node walks any number of keys it does not serve (an earlier cluster layout left them
    /// here) to fill the reply, on its dispatch thread. Nodes from before it refuse it as a
    /// malformed scan; the client then leaves it out.
    public static let scanResumable: UInt8 = 4
    /// Keys of slots a node does not serve that one scan reply walks past, at most (a few
    /// hundred µs of LMDB cursor steps), when the client allows it (``scanResumable``).
    public static let maxScanSkips = 4_096
}

public enum KVOperation: UInt8, Sendable {
    case get = 1
    case put = 2
    case delete = 3
    case scan = 4
    case multiGet = 5
    case merge = 6
}

/// The status byte of every reply.
public enum KVStatus: UInt8, Sendable, Error {
    case ok = 0
    case notFound = 1
    /// Empty, oversized or malformed request, or unknown operation (the body says which).
    case badRequest = 2
    /// A merge's result would exceed ``KVProtocol/maxValueSize``, or a record does not fit a
    /// reply even alone (stored beyond that limit by an older node; the message names its key).
    case tooLarge = 3
    /// The store failed (I/O error) or is shutting down.
    case storeError = 4
    /// The store had no room for the write (map at its limit, or file system full); nothing was
    /// written. Deletes still succeed.
    case storeFull = 5
    /// A merge found a stored value that is not a ``FieldRecord``; nothing was written.
    case notARecord = 6
    /// The node had no buffer left for the reply (too many large replies at once); nothing was
    /// changed, and the request may be sent again.
    case busy = 7
    /// The key's slot belongs to another node: the client's cluster config differs from the
    /// node's. Nothing was read or written.
    case wrongNode = 8

    init(writeResult: WriteResult) {
        switch writeResult {
        case .committed: self = .ok
        case .notFound: self = .notFound
        case .failed: self = .storeError
        case .full: self = .storeFull
        case .notARecord: self = .notARecord
        case .tooLarge: self = .tooLarge
        }
    }
}

/// Reads a request or reply with bounds checks: every read returns nil past the end, so a
/// truncated or malformed message becomes a typed error instead of a crash.
public struct ByteReader {
    public let bytes: UnsafeRawBufferPointer
    public private(set) var offset = 0

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public var remaining: Int { bytes.count - offset }

    public mutating func u8() -> UInt8? {
        guard remaining >= 1 else { return nil }
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func u16() -> UInt16? {
        guard remaining >= 2 else { return nil }
        defer { offset += 2 }
        return UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    public mutating func u32() -> UInt32? {
        guard remaining >= 4 else { return nil }
        defer { offset += 4 }
        return UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }

    public mutating func take(_ n: Int) -> UnsafeRawBufferPointer? {
        guard n >= 0, remaining >= n else { return nil }
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<offset + n])
    }

    public mutating func rest() -> UnsafeRawBufferPointer { take(remaining)! }
}

/// Writes into a message buffer with bounds checks (false: it does not fit).
public struct ByteWriter {
    public let base: UnsafeMutableRawPointer
    public let capacity: Int
    public private(set) var count = 0

    public init(_ buffer: MsgBuffer) {
        base = buffer.data
        capacity = buffer.capacity
    }

    public init(base: UnsafeMutableRawPointer, capacity: Int) {
        self.base = base
        self.capacity = capacity
    }

    @discardableResult
    public mutating func u8(_ v: UInt8) -> Bool { put(v) }
    @discardableResult
    public mutating func u16(_ v: UInt16) -> Bool { put(v.littleEndian) }
    @discardableResult
    public mutating func u32(_ v: UInt32) -> Bool { put(v.littleEndian) }

    @discardableResult
    public mutating func bytes(_ b: UnsafeRawBufferPointer) -> Bool {
        guard capacity - count >= b.count else { return false }
        if b.count > 0 { ee_copy(base + count, b.baseAddress!, b.count) }
        count += b.count
        return true
    }

    private mutating func put<T: FixedWidthInteger>(_ v: T) -> Bool {
        let n = MemoryLayout<T>.size
        guard capacity - count >= n else { return false }
        (base + count).storeBytes(of: v, as: T.self)
        count += n
        return true
    }
}
