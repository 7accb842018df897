import CSystemShims
import EEKV
import EERPC
import Glibc
import Logging
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
        init() throws {
            var template = Array("/tmp/eekv-ycsb-XXXXXX".utf8CString)
            directory = String(cString: mkdtemp(&template)!)
            let tcp = ee_tcp_listen(0x7F00_0001, 0)
            let udp = ee_tcp_listen(0x7F00_0001, 0)
            let toml = """
                [cluster]
                crypto = "none"
                durability = "nosync"
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

    @Test("records round-trip through the eekv binding's encoding")
    func codec() {
        let fields: [Int: [UInt8]] = [0: [1, 2, 3], 7: [], 9: Array(repeating: 65, count: 100)]
        #expect(RecordCodec.decode(RecordCodec.encode(fields)) == fields)
        #expect(RecordCodec.decode([1, 0, 0]) == nil)
        #expect(RecordCodec.decode(RecordCodec.encode(fields) + [0]) == nil)
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
        #expect(RecordCodec.decode(value)?.count == 10)
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
}
