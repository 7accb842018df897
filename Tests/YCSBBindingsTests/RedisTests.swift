import CSystemShims
import EEKV
import EERPC
import Foundation
import Testing
import YCSB
@testable import YCSBBindings

/// A real redis-server on a free loopback port (plain or TLS), stopped on deinit.
final class RedisServer: @unchecked Sendable {
    let port: UInt16
    let process = Process()
    let directory: String

    init(tls certificates: String? = nil, extraArguments: [String] = []) throws {
        directory = NSTemporaryDirectory() + "eekv-redis-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let fd = ee_tcp_listen(0x7F00_0001, 0)
        port = UInt16(ee_socket_port(fd))
        close(fd)
        var args = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory, "--protected-mode", "no"]
        if let certificates {
            args += [
                "--port", "0", "--tls-port", "\(port)", "--tls-cert-file", certificates + "/node-0.pem",
                "--tls-key-file", certificates + "/node-0.key", "--tls-ca-cert-file", certificates + "/ca.pem",
            ]
        } else {
            args += ["--port", "\(port)"]
        }
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = args + extraArguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    /// A connection once the server accepts one, without a first command (for a server that
    /// wants AUTH).
    func connectUnchecked() throws -> RESPConnection {
        let deadline = Date().addingTimeInterval(10)
        while true {
            do {
                return try RESPConnection(host: "127.0.0.1", port: port, tls: nil)
            } catch {
                if Date() > deadline { throw error }
                usleep(50_000)
            }
        }
    }

    /// A connection, once the server accepts one (over TLS, to the server with node-0's certificate).
    func connect(tls: TLSConfig? = nil) throws -> RESPConnection {
        let deadline = Date().addingTimeInterval(10)
        while true {
            do {
                let c = try RESPConnection(host: "127.0.0.1", port: port, tls: tls, serverName: "node-0")
                _ = try c.command("PING")
                return c
            } catch {
                if Date() > deadline { throw error }
                usleep(50_000)
            }
        }
    }

    deinit {
        // SIGKILL: a child started from a libdispatch thread inherits its blocked SIGTERM.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

@Suite(
    "YCSB against Redis", .serialized,
    .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/redis-server"), "needs redis-server (make test installs it)"))
struct RedisTests {
    @Test("Java's String.hashCode, which YCSB's Redis binding scores its scan index with")
    func javaHash() {
        #expect(RedisDatabase.javaHashCode("") == 0)
        #expect(RedisDatabase.javaHashCode("hello") == 99_162_322)
        // Values Java gives (31 × h + c over UTF-16 units, 32-bit wrap), worked out apart from the code.
        #expect(RedisDatabase.javaHashCode("user6284781860667377211") == -594_971_599)
        #expect(RedisDatabase.javaHashCode("user1") == 111_578_566)
    }

    @Test("RESP commands and replies against a real server")
    func resp() throws {
        let redis = try RedisServer()
        let c = try redis.connect()
        #expect(try c.command("SET", "k", "v") == .simple("OK"))
        #expect(try c.command("GET", "k") == .bulk(Array("v".utf8)))
        #expect(try c.command("GET", "missing") == .bulk(nil))
        #expect(try c.command("INCR", "n") == .integer(1))
        #expect(throws: RESPError.self) { try c.command("INCR", "k") }
        #expect(try c.command("PING") == .simple("PONG"))
    }

    @Test("load and run workloads A and E through the Redis binding", arguments: ["a", "e"])
    func ycsb(letter: String) throws {
        let redis = try RedisServer()
        _ = try redis.connect()
        var workload = try #require(Workload.standard(letter))
        workload.recordCount = 300
        workload.operationCount = 600
        let port = redis.port
        let connect: @Sendable (Int) throws -> any YCSBDatabase = { _ in
            RedisDatabase(connection: try RESPConnection(host: "127.0.0.1", port: port, tls: nil))
        }
        let load = try Runner.load(workload: workload, threads: 2, connect: connect)
        #expect(load.operations == 300 && load.perOperation.allSatisfy { $0.errors == 0 })
        let run = try Runner.run(workload: workload, threads: 2, seconds: nil, connect: connect)
        #expect(run.operations == 600)
        #expect(run.perOperation.allSatisfy { $0.errors == 0 && $0.notFound == 0 })
        let c = try redis.connect()
        guard case .array(let fields) = try c.command("HGETALL", ycsbKey(0)) else { Issue.record("no record"); return }
        #expect(fields?.count == 20)  // 10 field names and 10 values
    }

    /// Pipelining: 8 commands in flight per connection, replies matched to operations in order,
    /// including the follow-up commands of scans and read-modify-writes.
    @Test("pipelined runs (8 in flight per connection) of every workload", arguments: ["a", "b", "c", "d", "e", "f"])
    func pipelined(letter: String) throws {
        let redis = try RedisServer()
        _ = try redis.connect()
        var workload = try #require(Workload.standard(letter))
        workload.recordCount = 300
        workload.operationCount = 1_500
        let port = redis.port
        let connect: @Sendable (Int) throws -> any YCSBDatabase = { _ in
            RedisDatabase(connection: try RESPConnection(host: "127.0.0.1", port: port, tls: nil))
        }
        let load = try Runner.load(workload: workload, threads: 1, outstanding: 8, connect: connect)
        #expect(load.operations == 300 && load.perOperation.allSatisfy { $0.errors == 0 })
        let run = try Runner.run(workload: workload, threads: 2, outstanding: 8, seconds: nil, connect: connect)
        #expect(run.operations == 1_500)
        #expect(run.perOperation.allSatisfy { $0.errors == 0 && $0.notFound == 0 }, "\(run.perOperation)")
        let c = try redis.connect()
        #expect(try c.command("ZCARD", RedisDatabase.indexKey) == .integer(Int(300 + (letter == "d" || letter == "e" ? run.perOperation.first { $0.kind == .insert }?.count ?? 0 : 0))))
    }

    @Test("a long pipelined run holds on to a bounded number of handlers, not one per operation")
    func pipelineDropsAnsweredHandlers() throws {
        let redis = try RedisServer()
        let db = RedisDatabase(connection: try redis.connect())
        var done = 0
        var started = 0
        var most = 0
        // Keep 8 in flight for 20,000 operations, topping up after every poll as the runner does.
        while done < 20_000 {
            while started - done < 8 && started < 20_000 {
                db.start(.update(key: "k\(started % 100)", fields: [0: [65]])) { _ in done += 1 }
                started += 1
            }
            db.poll()
            most = max(most, db.heldHandlers)
        }
        #expect(most < 600, "the pipeline held \(most) handlers")
    }

    @Test("a pipelined insert whose write fails is not put in the scan index")
    func failedInsertIsNotIndexed() throws {
        let redis = try RedisServer()
        let c = try redis.connect()
        _ = try c.command("SET", "taken", "a string, so HSET fails with WRONGTYPE")
        let db = RedisDatabase(connection: try redis.connect())
        var outcome: Result<Bool, any Error>?
        db.start(.insert(key: "taken", fields: [0: [65]])) { outcome = $0 }
        while outcome == nil { db.poll() }
        guard case .failure(let error) = outcome else { Issue.record("the insert succeeded"); return }
        #expect("\(error)".contains("WRONGTYPE"))
        #expect(try c.command("ZSCORE", RedisDatabase.indexKey, "taken") == .bulk(nil))
        // A good insert after it is indexed as before.
        outcome = nil
        db.start(.insert(key: "fresh", fields: [0: [65]])) { outcome = $0 }
        while outcome == nil { db.poll() }
        #expect((try? outcome?.get()) == true)
        #expect(try c.command("ZSCORE", RedisDatabase.indexKey, "fresh") != .bulk(nil))
    }

    /// Over TLS this also proves a write to a hung-up peer fails with EPIPE instead of raising
    /// SIGPIPE (which would end the test process).
    @Test("a dead connection fails every pipelined operation instead of hanging", arguments: [false, true])
    func brokenPipeline(tls: Bool) throws {
        var template = Array("/tmp/eekv-redis-certs-XXXXXX".utf8CString)
        let dir = String(cString: mkdtemp(&template)!)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try ClusterCertificates.initialize(directory: dir, nodes: 1, clients: 1)
        let redis = try RedisServer(tls: tls ? dir : nil)
        let config = tls ? TLSConfig(directory: dir, name: "client-0") : nil
        let db = RedisDatabase(connection: try redis.connect(tls: config))
        // Kill the connection from the server side, then pipeline into it.
        _ = try? redis.connect(tls: config).command("CLIENT", "KILL", "TYPE", "normal")
        usleep(50_000)
        var failures = 0
        for round in 0..<3 {
            for i in 0..<5 {
                db.start(.insert(key: "k\(round)-\(i)", fields: [0: Array(repeating: 65, count: 40_000)])) {
                    if case .failure = $0 { failures += 1 }
                }
            }
            for _ in 0..<10 { db.poll() }
        }
        #expect(failures == 15)
    }

    @Test("Redis over TLS with the cluster's certificates")
    func tls() throws {
        var template = Array("/tmp/eekv-redis-certs-XXXXXX".utf8CString)
        let dir = String(cString: mkdtemp(&template)!)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try ClusterCertificates.initialize(directory: dir, nodes: 1, clients: 1)
        let redis = try RedisServer(tls: dir)
        let c = try redis.connect(tls: TLSConfig(directory: dir, name: "client-0"))
        #expect(try c.command("SET", "secure", "yes") == .simple("OK"))
        #expect(try c.command("GET", "secure") == .bulk(Array("yes".utf8)))
        // Plain TCP to the TLS port gets nowhere.
        #expect(throws: (any Error).self) {
            let plain = try RESPConnection(host: "127.0.0.1", port: redis.port, tls: nil, timeoutMs: 1_000)
            _ = try plain.command("PING")
        }
        // The certificate must be the one named: the host by default (an IP address the
        // certificate does not carry), or another certificate of the same CA, is refused.
        let client = TLSConfig(directory: dir, name: "client-0")
        // An empty name would check nothing: refused before the handshake.
        #expect {
            _ = try RESPConnection(host: "127.0.0.1", port: redis.port, tls: client, serverName: "", timeoutMs: 2_000)
        } throws: { "\($0)".contains("name the server's certificate is issued to") }
        for name: String? in [nil, "node-1", "client-0", "127.0.0.2"] {
            do {
                _ = try RESPConnection(host: "127.0.0.1", port: redis.port, tls: client, serverName: name, timeoutMs: 2_000)
                Issue.record("a server certificate for node-0 was accepted as \(name ?? "127.0.0.1")")
            } catch let error as RESPError {
                #expect("\(error)".contains("certificate rejected: it is not \(name ?? "127.0.0.1")'s"), "\(error)")
            }
        }
    }
}

@Suite("Redis URLs")
struct RedisURLTests {
    @Test("host, port, TLS, password, ACL user and database are read as redis-cli reads them")
    func parse() throws {
        let plain = try RedisURL("redis://127.0.0.1:6379")
        #expect(!plain.secure && plain.host == "127.0.0.1" && plain.port == 6379)
        #expect(plain.user == nil && plain.password == nil && plain.database == nil)
        let full = try RedisURL("rediss://alice:s3cr:et@db.example:6380/3")
        #expect(full.secure && full.host == "db.example" && full.port == 6380)
        #expect(full.user == "alice" && full.password == "s3cr:et" && full.database == 3)
        let passwordOnly = try RedisURL("redis://:pw@h:1/")
        #expect(passwordOnly.user == nil && passwordOnly.password == "pw" && passwordOnly.database == nil)
        #expect(try RedisURL("redis://pw@h:1").password == "pw")
        // Percent-escapes in the user and password are decoded, as redis-cli decodes them.
        let escaped = try RedisURL("redis://al%69ce:p%40ss%3Aw%2fd%zz%4@h:1")
        #expect(escaped.user == "alice" && escaped.password == "p@ss:w/d%zz%4")
        // A byte that is not UTF-8 is kept as it is for AUTH.
        #expect(try RedisURL("redis://:a%FFb@h:1").passwordBytes == [0x61, 0xFF, 0x62])
        #expect(full.redacted == "rediss://alice:***@db.example:6380/3")
        #expect(passwordOnly.redacted == "redis://:***@h:1")
    }

    @Test("a bad URL is refused with a message that does not show its password")
    func refused() {
        for bad in ["http://h:1", "redis://h", "redis://h:0", "redis://h:99999", "redis://:1", "redis://:topsecret@h", "redis://u:topsecret@h:1/x"] {
            #expect {
                _ = try RedisURL(bad)
            } throws: { error in
                let message = "\(error)"
                return !message.contains("topsecret") && message.contains("Redis URL")
            }
        }
    }

    @Test(
        "a password in the URL authenticates the connection; without it the server refuses commands",
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/redis-server"), "needs redis-server"))
    func authenticates() throws {
        let redis = try RedisServer(extraArguments: ["--requirepass", "pw-123"])
        let url = try RedisURL("redis://:pw-123@127.0.0.1:\(redis.port)/2")
        let connection = try redis.connectUnchecked()
        #expect(throws: RESPError.self) { _ = try connection.command("SET", "k", "v") }
        let authenticated = try redis.connectUnchecked()
        try url.prepare(authenticated)
        #expect(try authenticated.command("SET", "k", "v") == .simple("OK"))
        let info = try authenticated.command("CLIENT", "INFO")
        if case .bulk(let text?) = info {
            #expect(String(decoding: text, as: UTF8.self).contains("db=2"))
        } else {
            Issue.record("CLIENT INFO: \(info)")
        }
        let wrong = try redis.connectUnchecked()
        #expect(throws: RESPError.self) { try RedisURL("redis://:nope@127.0.0.1:\(redis.port)").prepare(wrong) }
    }
}
