import CSystemShims
import EEKV
import EERPC
import Glibc
import Logging
import Synchronization
import Testing
import YCSB
import YCSBBindings

@Suite("YCSB against an eekv node", .serialized)
struct EEKVYCSBTests {
    /// A one-node plaintext cluster in this process.
    final class Node {
        let directory: String
        let config: ClusterConfig
        let node: KVNode
        init(mtu: Int = Wire.defaultMTU) throws {
            var template = Array("/tmp/eekv-ycsb-XXXXXX".utf8CString)
            directory = String(cString: mkdtemp(&template)!)
            let tcp = ee_tcp_listen(0x7F00_0001, 0)
            let udp = ee_tcp_listen(0x7F00_0001, 0)
            let toml = """
                [cluster]
                crypto = "none"
                durability = "nosync"
                mtu = \(mtu)
                [[node]]
                id = 0
                host = "127.0.0.1"
                port = \(ee_socket_port(tcp))
                udp_port = \(ee_socket_port(udp))
                threads = 1
                """
            close(tcp)
            close(udp)
            config = try ClusterConfig.parse(toml, source: directory + "/c.toml")
            var logger = Logger(label: "test")
            logger.logLevel = .warning
            node = try KVNode(
                config: config, nodeID: 0,
                options: KVNode.Options(
                    dataDirectory: directory + "/data", threads: 1, crypto: .none, aesWorkers: 0, durability: .nosync),
                logger: logger)
            try node.start()
        }
        deinit {
            node.stop()
            _ = system("rm -rf '\(directory)'")
        }
    }

    /// Several operations in flight per thread: every workload's operations (update = one merge,
    /// read-modify-write = a read then a merge, scans over every node, inserts) complete through the
    /// client's asynchronous calls, and the inserts of D and E are acknowledged so later reads find them.
    @Test("pipelined runs (8 in flight per thread) of every workload", arguments: ["a", "b", "c", "d", "e", "f"])
    func pipelined(letter: String) throws {
        let node = try Node()
        var workload = try #require(Workload.standard(letter))
        workload.recordCount = 400
        workload.operationCount = 2_000
        let config = node.config
        let connect: @Sendable (Int) throws -> any YCSBDatabase = { _ in
            EEKVDatabase(client: try KVClient(config: config, tls: nil))
        }
        let load = try Runner.load(workload: workload, threads: 1, outstanding: 8, connect: connect)
        #expect(load.operations == 400 && load.perOperation.allSatisfy { $0.errors == 0 })
        let run = try Runner.run(workload: workload, threads: 2, outstanding: 8, seconds: nil, connect: connect)
        #expect(run.operations == 2_000)
        #expect(run.perOperation.allSatisfy { $0.errors == 0 && $0.notFound == 0 }, "\(run.perOperation)")
        // Updates are merges, one request each: the node served no gets beyond the reads.
        let stats = node.node.stats
        let updates = run.perOperation.filter { $0.kind == .update || $0.kind == .readModifyWrite }
            .reduce(0) { $0 + $1.count }
        let reads = run.perOperation.filter { $0.kind == .read || $0.kind == .readModifyWrite }
            .reduce(0) { $0 + $1.count }
        #expect(stats.merges.load(ordering: .relaxed) == updates)
        #expect(stats.gets.load(ordering: .relaxed) == reads)
        // Every record the load wrote is there, whole.
        let client = try KVClient(config: config, tls: nil)
        for n in stride(from: 0, to: 400, by: 37) {
            let value = try #require(try client.get(Array(ycsbKey(Int64(n)).utf8)))
            #expect(FieldRecord.decode(value)?.count == 10)
        }
    }

    /// Records of several packets each way at a jumbo-frame MTU: the transport sends the packets
    /// of a burst as UDP GSO runs, and every record still arrives whole.
    @Test("large records at the default MTU and at a jumbo MTU, pipelined", arguments: [1_472, 9_000])
    func largeRecords(mtu: Int) throws {
        let node = try Node(mtu: mtu)
        var workload = try #require(Workload.standard("a"))
        workload.recordCount = 60
        workload.operationCount = 400
        workload.fieldCount = 1
        workload.fieldLength = 30_000
        let config = node.config
        let connect: @Sendable (Int) throws -> any YCSBDatabase = { _ in
            EEKVDatabase(client: try KVClient(config: config, tls: nil))
        }
        _ = try Runner.load(workload: workload, threads: 1, outstanding: 8, connect: connect)
        let run = try Runner.run(workload: workload, threads: 1, outstanding: 8, seconds: nil, connect: connect)
        #expect(run.operations == 400)
        #expect(run.perOperation.allSatisfy { $0.errors == 0 && $0.notFound == 0 }, "\(run.perOperation)")
        let client = try KVClient(config: config, tls: nil)
        let value = try #require(try client.get(Array(ycsbKey(3).utf8)))
        #expect(FieldRecord.decode(value)?[0]?.count == 30_000)
    }

    /// The client's asynchronous calls directly: many started before any completes, each
    /// completing once with its own answer.
    @Test("asynchronous client calls complete once each, with their own answers")
    func asynchronousClient() throws {
        let node = try Node()
        let client = try KVClient(config: node.config, tls: nil)
        // Completions as they came, errors kept (a call that fails must show, not hang the test).
        final class Results {
            var puts: [Result<Void, KVClientError>] = []
            var gets: [Int: Result<[UInt8]?, KVClientError>] = [:]
            var scanned: Result<[([UInt8], [UInt8])], KVClientError>?
            var deleted: Result<Bool, KVClientError>?
        }
        let results = Results()
        /// Polls until `done` or 10 s pass.
        func poll(until done: () -> Bool) {
            let deadline = ee_now_ns() + 10_000_000_000
            while !done() && ee_now_ns() < deadline { client.poll() }
        }
        for i in 0..<40 {
            try client.put(Array("k\(100 + i)".utf8), Array("v\(i)".utf8)) { results.puts.append($0) }
        }
        poll { results.puts.count == 40 }
        #expect(results.puts.count == 40 && results.puts.allSatisfy { (try? $0.get()) != nil }, "\(results.puts)")
        for i in 0..<40 {
            try client.get(Array("k\(100 + i)".utf8)) { results.gets[i] = $0 }
        }
        try client.get(Array("absent".utf8)) { results.gets[-1] = $0 }
        try client.scan(from: Array("k110".utf8), limit: 5) { results.scanned = $0 }
        try client.delete(Array("k100".utf8)) { results.deleted = $0 }
        poll { results.gets.count == 41 && results.scanned != nil && results.deleted != nil }
        for i in 0..<40 { #expect((try? results.gets[i]?.get()) == .some(Array("v\(i)".utf8)), "get \(i)") }
        #expect(results.gets[-1].map { (try? $0.get()) == .some(nil) } == true, "absent: \(String(describing: results.gets[-1]))")
        #expect((try? results.scanned?.get())?.map(\.0) == (110..<115).map { Array("k\($0)".utf8) })
        #expect((try? results.deleted?.get()) == true)
        // A bad request fails when it is started, not later.
        #expect(throws: KVClientError.self) { try client.get([]) { _ in Issue.record("completed") } }
    }

    @Test("load then run workloads A and E: every operation succeeds and reads find their records",
        arguments: ["a", "e"])
    func loadAndRun(letter: String) throws {
        let node = try Node()
        var workload = try #require(Workload.standard(letter))
        workload.recordCount = 300
        workload.operationCount = 600
        let config = node.config
        let connect: @Sendable (Int) throws -> any YCSBDatabase = { _ in
            EEKVDatabase(client: try KVClient(config: config, tls: nil))
        }
        let load = try Runner.load(workload: workload, threads: 2, connect: connect)
        #expect(load.operations == 300)
        #expect(load.perOperation.allSatisfy { $0.errors == 0 })
        let run = try Runner.run(workload: workload, threads: 2, seconds: nil, connect: connect)
        #expect(run.operations == 600)
        #expect(run.perOperation.allSatisfy { $0.errors == 0 && $0.notFound == 0 })
        #expect(run.perSecond.reduce(0, +) == 600)
        let kinds = Set(run.perOperation.map(\.kind))
        #expect(kinds == (letter == "a" ? [.read, .update] : [.scan, .insert]))
        // The records really are in the store, in YCSB's format.
        let client = try KVClient(config: config, tls: nil)
        let value = try #require(try client.get(Array(ycsbKey(0).utf8)))
        #expect(FieldRecord.decode(value)?.count == 10)
    }

    /// Open loop: operations start on a schedule, so a run of N operations at R per second takes
    /// N / R seconds however fast the node is, and latency counts from the scheduled start.
    @Test("an open-loop run keeps the target rate")
    func openLoop() throws {
        let node = try Node()
        var workload = try #require(Workload.standard("c"))
        workload.recordCount = 100
        workload.operationCount = 400
        let config = node.config
        let connect: @Sendable (Int) throws -> any YCSBDatabase = { _ in
            EEKVDatabase(client: try KVClient(config: config, tls: nil))
        }
        _ = try Runner.load(workload: workload, threads: 1, connect: connect)
        let run = try Runner.run(workload: workload, threads: 2, seconds: nil, targetRate: 400, connect: connect)
        #expect(run.operations == 400)
        #expect(run.seconds > 0.85 && run.seconds < 1.6, "\(run.seconds) s for 400 operations at 400/s")
        #expect(run.perOperation.first?.kind == .read)
    }

    /// Two nodes as two targets of one interleaved run: each node serves only its own slices and
    /// ends up with the same records, and each binding hands over its client's counters.
    @Test("an interleaved run against two nodes, with each client's transport counters")
    func interleavedNodes() throws {
        let nodes = [try Node(), try Node()]
        var workload = try #require(Workload.standard("a"))
        workload.recordCount = 200
        workload.operationCount = 1 << 40
        final class Counters: Sendable {
            let closed = Mutex<[RpcStats]>([])
        }
        let counters = Counters()
        let configs = nodes.map(\.config)
        for config in configs {
            _ = try Runner.load(workload: workload, threads: 1, outstanding: 8) { _ in
                EEKVDatabase(client: try KVClient(config: config, tls: nil))
            }
        }
        let runs = try Runner.interleaved(
            workload: workload, targets: 2, threads: 2, outstanding: 4, seconds: 0.3, sliceSeconds: 0.05
        ) { target, _ in
            EEKVDatabase(client: try KVClient(config: configs[target], tls: nil)) { client in
                let stats = client.stats
                counters.closed.withLock { $0.append(stats) }
            }
        }
        for run in runs {
            #expect(run.operations > 100)
            #expect(run.perOperation.allSatisfy { $0.errors == 0 && $0.notFound == 0 }, "\(run.perOperation)")
        }
        // Four bindings (two threads × two targets), each released once with its counters.
        let closed = counters.closed.withLock { $0 }
        #expect(closed.count == 4)
        #expect(closed.allSatisfy { $0.rpcsCompleted > 0 && $0.packetsSent >= $0.rpcsCompleted })
        #expect(closed.reduce(0) { $0 + $1.rpcsCompleted } >= UInt64(runs.reduce(0) { $0 + $1.operations }))
    }
}
