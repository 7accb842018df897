import EEKV
import YCSB

/// The YCSB binding for eekv: one client (one connection per node) per YCSB thread. A record is
/// one value, a ``FieldRecord`` with YCSB's field numbers, so scans return whole records in key
/// order; an update is a merge, which sets its fields in the stored record on the node in one
/// round trip (as Redis's binding does with one `HSET`).
public final class EEKVDatabase: YCSBDatabase {
    public let client: KVClient
    private let onClose: ((KVClient) -> Void)?

    /// - Parameter onClose: called as the binding is released, on the thread that used it, while
    ///   the client is still open (to read its counters).
    public init(client: KVClient, onClose: ((KVClient) -> Void)? = nil) {
        self.client = client
        self.onClose = onClose
    }

    deinit { onClose?(client) }

    public func read(key: String, field: Int?) throws -> Bool {
        guard let value = try client.get(Array(key.utf8)) else { return false }
        return try Self.found(value, key: key, field: field)
    }

    public func update(key: String, fields: [Int: [UInt8]]) throws {
        try client.merge(Array(key.utf8), fields: fields)
    }

    /// Whether a stored value holds the field read (any record when `field` is nil).
    static func found(_ value: [UInt8], key: String, field: Int?) throws -> Bool {
        if FieldRecord.check(value, hasField: field) { return true }
        guard FieldRecord.check(value, hasField: nil) else {
            throw KVClientError.protocolError("\(key) is not a YCSB record")
        }
        return false
    }

    public func insert(key: String, fields: [Int: [UInt8]]) throws {
        try client.put(Array(key.utf8), FieldRecord.encode(fields))
    }

    public func scan(start: String, count: Int) throws -> Int {
        try client.scan(from: Array(start.utf8), limit: count).count
    }
}

/// Several operations in flight on one client; a read-modify-write is a read, then a merge.
extension EEKVDatabase: YCSBAsyncDatabase {
    public func start(_ operation: Operation, completion: @escaping (Result<Bool, any Error>) -> Void) {
        do {
            switch operation {
            case .read(let key, let field):
                try client.get(Array(key.utf8)) { result in
                    completion(
                        result.mapError { $0 as any Error }.flatMap { value in
                            guard let value else { return .success(false) }
                            return Result { try Self.found(value, key: key, field: field) }
                        })
                }
            case .update(let key, let fields):
                try client.merge(Array(key.utf8), fields: fields) {
                    completion($0.map { true }.mapError { $0 })
                }
            case .readModifyWrite(let key, let field, let fields):
                // YCSB times the read and the update as one operation.
                start(.read(key: key, field: field)) { [self] read in
                    guard case .success(let found) = read else { return completion(read) }
                    start(.update(key: key, fields: fields)) { completion($0.map { _ in found }) }
                }
            case .insert(let key, let fields):
                try client.put(Array(key.utf8), FieldRecord.encode(fields)) {
                    completion($0.map { true }.mapError { $0 })
                }
            case .scan(let start, let count):
                try client.scan(from: Array(start.utf8), limit: count) {
                    completion($0.map { _ in true }.mapError { $0 })
                }
            }
        } catch {
            completion(.failure(error))
        }
    }

    public func poll() { client.poll() }
}
