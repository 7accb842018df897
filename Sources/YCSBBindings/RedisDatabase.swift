import YCSB

/// The YCSB binding for Redis, storing records the way YCSB's own Redis binding does: a hash per
/// record (`field0` … `field9`), and a sorted set `_indices` scored by the key's Java
/// `String.hashCode()` for scans (so a "scan" walks hash order, exactly as YCSB's binding does).
public final class RedisDatabase: YCSBDatabase {
    public static let indexKey = "_indices"
    let connection: RESPConnection

    public init(connection: RESPConnection) { self.connection = connection }

    /// Java's `String.hashCode()` (UTF-16 code units, 31 × h + c, 32-bit wrap).
    public static func javaHashCode(_ s: String) -> Int32 {
        var h: Int32 = 0
        for unit in s.utf16 { h = 31 &* h &+ Int32(unit) }
        return h
    }

    public func read(key: String, field: Int?) throws -> Bool {
        if let field {
            guard case .array(let items)? = try? connection.command("HMGET", key, "field\(field)"),
                let first = items?.first
            else { return false }
            return first != .bulk(nil)
        }
        guard case .array(let items) = try connection.command("HGETALL", key) else { return false }
        return !(items ?? []).isEmpty
    }

    public func update(key: String, fields: [Int: [UInt8]]) throws {
        try connection.command(hset(key, fields))
    }

    public func insert(key: String, fields: [Int: [UInt8]]) throws {
        try connection.command(hset(key, fields))
        try connection.command("ZADD", Self.indexKey, String(Self.javaHashCode(key)), key)
    }

    public func scan(start: String, count: Int) throws -> Int {
        guard
            case .array(let keys) = try connection.command(
                "ZRANGEBYSCORE", Self.indexKey, String(Self.javaHashCode(start)), "+inf", "LIMIT", "0", String(count))
        else { return 0 }
        var found = 0
        for case .bulk(let key?) in keys ?? [] {
            if case .array(let items) = try connection.command([Array("HGETALL".utf8), key]), !(items ?? []).isEmpty {
                found += 1
            }
        }
        return found
    }

    private func hset(_ key: String, _ fields: [Int: [UInt8]]) -> [[UInt8]] {
        var args: [[UInt8]] = [Array("HSET".utf8), Array(key.utf8)]
        for (i, v) in fields.sorted(by: { $0.key < $1.key }) {
            args.append(Array("field\(i)".utf8))
            args.append(v)
        }
        return args
    }
}
