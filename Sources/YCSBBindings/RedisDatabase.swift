import YCSB

/// The YCSB binding for Redis, storing records the way YCSB's own Redis binding does: a hash per
/// record (`field0` … `field9`), and a sorted set `_indices` scored by the key's Java
/// `String.hashCode()` for scans (so a "scan" walks hash order, exactly as YCSB's binding does).
public final class RedisDatabase: YCSBDatabase {
    public static let indexKey = "_indices"
    let connection: RESPConnection
    /// What to do with each pipelined reply, in the order the commands were queued; those
    /// before `head` are done (dropped in bulk, see ``poll()``).
    private var pending: [(Result<RESPValue, any Error>) -> Void] = []
    private var head = 0

    /// Handlers kept, answered or not: what the pipeline holds on to.
    var heldHandlers: Int { pending.count }

    public init(connection: RESPConnection) { self.connection = connection }

    /// Java's `String.hashCode()` (UTF-16 code units, 31 × h + c, 32-bit wrap).
    public static func javaHashCode(_ s: String) -> Int32 {
        var h: Int32 = 0
        for unit in s.utf16 { h = 31 &* h &+ Int32(unit) }
        return h
    }

    public func read(key: String, field: Int?) throws -> Bool {
        Self.found(try connection.command(readCommand(key, field)), field: field)
    }

    /// HMGET of the one field, or HGETALL of the record.
    private func readCommand(_ key: String, _ field: Int?) -> [[UInt8]] {
        field.map { [Array("HMGET".utf8), Array(key.utf8), Array("field\($0)".utf8)] }
            ?? [Array("HGETALL".utf8), Array(key.utf8)]
    }

    /// Whether a `readCommand` reply found the field (or any field of the record).
    private static func found(_ reply: RESPValue, field: Int?) -> Bool {
        guard case .array(let items?) = reply else { return false }
        if field != nil { return items.first.map { $0 != .bulk(nil) } ?? false }
        return !items.isEmpty
    }

    private static func zadd(_ key: String) -> [[UInt8]] {
        ["ZADD", indexKey, String(javaHashCode(key)), key].map { Array($0.utf8) }
    }

    /// The next `count` keys of the scan index from `start`'s score on.
    private static func zrange(from start: String, count: Int) -> [[UInt8]] {
        ["ZRANGEBYSCORE", indexKey, String(javaHashCode(start)), "+inf", "LIMIT", "0", String(count)].map { Array($0.utf8) }
    }

    public func update(key: String, fields: [Int: [UInt8]]) throws {
        try connection.command(hset(key, fields))
    }

    public func insert(key: String, fields: [Int: [UInt8]]) throws {
        try connection.command(hset(key, fields))
        try connection.command(Self.zadd(key))
    }

    public func scan(start: String, count: Int) throws -> Int {
        guard case .array(let keys) = try connection.command(Self.zrange(from: start, count: count)) else { return 0 }
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

/// Several operations in flight on one connection by pipelining (as asynchronous Redis clients
/// do): commands are queued, written together on `poll`, and their replies, which Redis sends in
/// command order, are handed to the waiting operations one by one.
extension RedisDatabase: YCSBAsyncDatabase {
    public func start(_ operation: Operation, completion: @escaping (Result<Bool, any Error>) -> Void) {
        switch operation {
        case .read(let key, let field):
            send(readCommand(key, field)) { reply in completion(reply.map { Self.found($0, field: field) }) }
        case .update(let key, let fields):
            send(hset(key, fields)) { completion($0.map { _ in true }) }
        case .insert(let key, let fields):
            // As YCSB's binding: the record enters the scan index only once it is written, or a
            // failed write would leave an index entry that later scans trip over.
            send(hset(key, fields)) { [self] written in
                guard case .success = written else { return completion(written.map { _ in true }) }
                send(Self.zadd(key)) { completion($0.map { _ in true }) }
            }
        case .scan(let start, let count):
            send(Self.zrange(from: start, count: count)) { [self] reply in
                guard case .success(.array(let keys)) = reply, let keys, !keys.isEmpty else {
                    return completion(reply.map { _ in true })
                }
                let names = keys.compactMap { if case .bulk(let k?) = $0 { k } else { nil } }
                guard names.count == keys.count else {
                    return completion(.failure(RESPError.protocolError("ZRANGEBYSCORE returned a non-string")))
                }
                var remaining = names.count
                var failure: (any Error)?
                for name in names {
                    send([Array("HGETALL".utf8), name]) { r in
                        if case .failure(let e) = r { failure = e }
                        remaining -= 1
                        if remaining == 0 { completion(failure.map { .failure($0) } ?? .success(true)) }
                    }
                }
            }
        case .readModifyWrite(let key, let field, let fields):
            start(.read(key: key, field: field)) { [self] read in
                guard case .success(let found) = read else { return completion(read) }
                send(hset(key, fields)) { completion($0.map { _ in found }) }
            }
        }
    }

    public func poll() {
        do {
            try connection.flush()
            guard head < pending.count else { return }
            let reply = try connection.readReply()
            let handler = pending[head]
            head += 1
            // A pipelined run tops the window up after every reply, so the array seldom empties:
            // answered handlers (and what they capture) are dropped once they are half of it.
            if head == pending.count {
                pending.removeAll(keepingCapacity: true)
                head = 0
            } else if head >= 256 && head * 2 >= pending.count {
                pending.removeFirst(head)
                head = 0
            }
            if case .error(let message) = reply { handler(.failure(RESPError.server(message))) } else { handler(.success(reply)) }
        } catch {
            // The connection is broken: every operation waiting on it fails.
            let waiting = pending[head...]
            pending.removeAll()
            head = 0
            for handler in waiting { handler(.failure(error)) }
        }
    }

    private func send(_ args: [[UInt8]], then handler: @escaping (Result<RESPValue, any Error>) -> Void) {
        connection.queue(args)
        pending.append(handler)
    }
}
