import EEKV
import YCSB

/// The YCSB binding for eekv: one client (one connection per node) per YCSB thread. Records are
/// stored as one value (``RecordCodec``); an update of one field reads the record, changes the
/// field and writes it back.
public final class EEKVDatabase: YCSBDatabase {
    public let client: KVClient

    public init(client: KVClient) { self.client = client }

    public func read(key: String, field: Int?) throws -> Bool {
        guard let value = try client.get(Array(key.utf8)) else { return false }
        guard let record = RecordCodec.decode(value) else { throw KVClientError.protocolError("\(key) is not a YCSB record") }
        return field.map { record[$0] != nil } ?? true
    }

    public func update(key: String, fields: [Int: [UInt8]]) throws {
        let k = Array(key.utf8)
        var record = try client.get(k).flatMap(RecordCodec.decode) ?? [:]
        for (i, v) in fields { record[i] = v }
        try client.put(k, RecordCodec.encode(record))
    }

    public func insert(key: String, fields: [Int: [UInt8]]) throws {
        try client.put(Array(key.utf8), RecordCodec.encode(fields))
    }

    public func scan(start: String, count: Int) throws -> Int {
        try client.scan(from: Array(start.utf8), limit: count).count
    }
}
