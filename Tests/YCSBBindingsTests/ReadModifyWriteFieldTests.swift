import EEKV
import Foundation
import Testing
import YCSB
import YCSBBindings

/// Whether a read-modify-write of `key` reading `field` finds it, synchronously and pipelined,
/// on a record that holds field 3 only (so reading field 5 finds nothing, reading every field
/// finds the record).
func readModifyWriteFinds(_ db: any YCSBAsyncDatabase, key: String, field: Int?) throws -> (sync: Bool, async: Bool) {
    try db.insert(key: key, fields: [3: Array("stored".utf8)])
    let sync = try db.perform(.readModifyWrite(key: key, field: field, fields: [3: Array("synced".utf8)]))
    var result: Result<Bool, any Error>?
    db.start(.readModifyWrite(key: key, field: field, fields: [3: Array("async".utf8)])) { result = $0 }
    let deadline = Date().addingTimeInterval(10)
    while result == nil && Date() < deadline { db.poll() }
    return (sync, try #require(result).get())
}

@Suite("YCSB read-modify-write reads the chosen field")
struct ReadModifyWriteFieldTests {
    @Test(
        "the Redis binding reads one field (HMGET) or the record",
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/redis-server"), "needs redis-server"))
    func redis() throws {
        let redis = try RedisServer()
        let db = RedisDatabase(connection: try redis.connect())
        #expect(try readModifyWriteFinds(db, key: "r1", field: 5) == (false, false))
        #expect(try readModifyWriteFinds(db, key: "r2", field: 3) == (true, true))
        #expect(try readModifyWriteFinds(db, key: "r3", field: nil) == (true, true))
    }

    @Test("the eekv binding checks the one field read, or the record")
    func eekv() throws {
        let node = try EEKVYCSBTests.Node()
        let db = EEKVDatabase(client: try KVClient(config: node.config, tls: nil))
        #expect(try readModifyWriteFinds(db, key: "e1", field: 5) == (false, false))
        #expect(try readModifyWriteFinds(db, key: "e2", field: 3) == (true, true))
        #expect(try readModifyWriteFinds(db, key: "e3", field: nil) == (true, true))
    }
}
