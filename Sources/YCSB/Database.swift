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

    private static func append16(_ out: inout [UInt8], _ v: UInt16) {
        out += [UInt8(v & 0xFF), UInt8(v >> 8)]
    }
}
