import ArgumentParser
import CSystemShims
import EEKV
import EERPC

struct BenchKV: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kv",
        abstract: "A short mixed get/put load against a running cluster through the client library.",
        discussion: """
            One client, one request at a time (closed loop), keys drawn uniformly from --keys, values of \
            --value-size bytes. Loads the keys first, then runs the mix and reports the rate and the \
            latency percentiles per operation. The YCSB runner (issue 5) replaces this with workloads A-F.
            """
    )

    @Option(help: "Operations in the mixed phase.") var operations = 5_000
    @Option(help: "Distinct keys (all written first).") var keys = 500
    @Option(help: "Fraction of reads in the mix.") var readRatio = 0.5
    @Option(help: "Value size in bytes.") var valueSize = 100
    @OptionGroup var options: ClientOptions

    func validate() throws {
        guard operations > 0, keys > 0, (0...1).contains(readRatio), valueSize >= 0 else {
            throw ValidationError("operations and keys must be positive, read-ratio in 0...1")
        }
    }

    func run() throws {
        try options.withClient { client, cluster in
            var rng = SplitMix64(seed: 42)
            let value = [UInt8](repeating: UInt8(ascii: "v"), count: valueSize)
            let loadStart = ee_now_ns()
            for i in 0..<keys { try client.put(Array("bench:\(i)".utf8), value) }
            let loadSeconds = Double(ee_now_ns() - loadStart) / 1e9
            var reads = LatencyRecorder()
            var writes = LatencyRecorder()
            let start = ee_now_ns()
            for _ in 0..<operations {
                let key = Array("bench:\(rng.next() % UInt64(keys))".utf8)
                let t = ee_now_ns()
                if Double(rng.next() >> 11) * 0x1p-53 < readRatio {
                    _ = try client.get(key)
                    reads.record(ee_now_ns() - t)
                } else {
                    try client.put(key, value)
                    writes.record(ee_now_ns() - t)
                }
            }
            let seconds = Double(ee_now_ns() - start) / 1e9
            print("eekv bench kv — \(cluster.nodes.count) node(s), crypto \(cluster.crypto.name), durability \(cluster.durability.rawValue)")
            print("loaded \(keys) keys of \(valueSize) B in \(fixed(loadSeconds, 2)) s")
            print("\(operations) operations in \(fixed(seconds, 2)) s: \(fixed(Double(operations) / seconds, 0)) ops/s (one request at a time)")
            print(pad("", 8) + pad("count", 10) + pad("p50 µs", 10) + pad("p99 µs", 10))
            for (name, r) in [("get", reads), ("put", writes)] where r.completed > 0 {
                print(pad(name, 8) + pad("\(r.completed)", 10) + pad(fixed(r.percentileMicros(50), 1), 10)
                    + pad(fixed(r.percentileMicros(99), 1), 10))
            }
            return 0
        }
    }
}
