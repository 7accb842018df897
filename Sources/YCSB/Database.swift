/// What the YCSB runner needs from a store (YCSB's `DB` interface). One instance per client
/// thread; calls are synchronous.
public protocol YCSBDatabase {
    /// False if the record does not exist.
    func read(key: String, field: Int?) throws -> Bool
    func update(key: String, fields: [Int: [UInt8]]) throws
    func insert(key: String, fields: [Int: [UInt8]]) throws
    /// Reads up to `count` records in key order from `start`; returns how many it got.
    func scan(start: String, count: Int) throws -> Int
}

/// A binding that keeps several operations in flight from one thread (the runner's
/// `outstanding` above 1). `start` sends an operation and returns; `poll` makes progress and runs
/// completions on the calling thread (a failure to send may complete at once, inside `start`).
public protocol YCSBAsyncDatabase: YCSBDatabase {
    /// Starts `operation`. `completion` gets whether the record was found (reads and
    /// read-modify-writes; true otherwise) or the error.
    func start(_ operation: Operation, completion: @escaping (Result<Bool, any Error>) -> Void)
    /// Sends what is queued and completes what has answered; may wait briefly for a reply.
    func poll()
}

extension YCSBDatabase {
    /// Runs one operation synchronously; true unless a read found no record.
    public func perform(_ operation: Operation) throws -> Bool {
        switch operation {
        case .read(let key, let field): return try read(key: key, field: field)
        case .update(let key, let fields): try update(key: key, fields: fields)
        case .insert(let key, let fields): try insert(key: key, fields: fields)
        case .scan(let start, let count): _ = try scan(start: start, count: count)
        case .readModifyWrite(let key, let fields):
            let found = try read(key: key, field: nil)
            try update(key: key, fields: fields)
            return found
        }
        return true
    }
}

/// How the eekv binding stores a record: one value holding every field, as
/// `count u16 | (field u16 | length u32 | bytes) × count`. An update of one field is therefore a
/// read-modify-write of the record in the client (as YCSB's BoltDB binding does); records stay
/// one key so scans return whole records in key order.
public enum RecordCodec {
    public static func encode(_ fields: [Int: [UInt8]]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(2 + fields.values.reduce(0) { $0 + 6 + $1.count })
        append16(&out, UInt16(fields.count))
        for (index, value) in fields.sorted(by: { $0.key < $1.key }) {
            append16(&out, UInt16(index))
            let n = UInt32(value.count)
            out += [UInt8(n & 0xFF), UInt8((n >> 8) & 0xFF), UInt8((n >> 16) & 0xFF), UInt8(n >> 24)]
            out += value
        }
        return out
    }

    /// Nil if the bytes are not a record.
    public static func decode(_ bytes: [UInt8]) -> [Int: [UInt8]]? {
        var i = 0
        func u16() -> Int? {
            guard i + 2 <= bytes.count else { return nil }
            defer { i += 2 }
            return Int(bytes[i]) | Int(bytes[i + 1]) << 8
        }
        guard let count = u16() else { return nil }
        var fields: [Int: [UInt8]] = [:]
        for _ in 0..<count {
            guard let index = u16(), i + 4 <= bytes.count else { return nil }
            let n = Int(bytes[i]) | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2]) << 16 | Int(bytes[i + 3]) << 24
            i += 4
            guard i + n <= bytes.count else { return nil }
            fields[index] = Array(bytes[i..<i + n])
            i += n
        }
        return i == bytes.count ? fields : nil
    }

    /// Whether `bytes` is a well-formed record, and (if `field` is given) holds that field; walks
    /// the layout without building the record (a read only needs this answer).
    public static func check(_ bytes: [UInt8], hasField field: Int?) -> Bool {
        bytes.withUnsafeBytes { b in
            guard b.count >= 2 else { return false }
            let count = Int(b[0]) | Int(b[1]) << 8
            var i = 2
            var found = field == nil
            for _ in 0..<count {
                guard i + 6 <= b.count else { return false }
                let index = Int(b[i]) | Int(b[i + 1]) << 8
                let n = Int(b[i + 2]) | Int(b[i + 3]) << 8 | Int(b[i + 4]) << 16 | Int(b[i + 5]) << 24
                i += 6 + n
                guard i <= b.count else { return false }
                if index == field { found = true }
            }
            return i == b.count && found
        }
    }

    private static func append16(_ out: inout [UInt8], _ v: UInt16) {
        out += [UInt8(v & 0xFF), UInt8(v >> 8)]
    }
}
