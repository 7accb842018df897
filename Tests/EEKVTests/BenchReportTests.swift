import Foundation
import Testing

/// `eekv bench report` over raw run files written here: its checks are the study's verdict, so
/// they must compare within rounds and must not pass on failed operations.
@Suite("The overhead study's report", .serialized)
struct BenchReportTests {
    /// One run's JSON, as `eekv ycsb compare --json` writes it (the fields the report reads).
    static func run(_ target: String, throughput: Double, readP99: Double, errors: Int = 0) -> String {
        let (db, crypto) =
            switch target {
            case "redis-tls": ("redis+tls", "tls")
            case "redis": ("redis", "none")
            default: ("eekv", target)
            }
        return """
            {"phase":"run","workload":"b","db":"\(db)","crypto":"\(crypto)","records":1000,"fieldcount":10,\
            "fieldlength":100,"nodes":1,"mtu":1472,"threads":1,"outstanding":8,"seconds":2.0,"operations":1000,\
            "throughput":\(throughput),"per_operation":[{"operation":"READ","count":900,"errors":\(errors),\
            "not_found":0,"avg_us":10,"min_us":1,"max_us":100,"p50_us":10,"p95_us":20,"p99_us":\(readP99),\
            "p999_us":90}]}
            """
    }

    /// Writes `rounds` (target → (throughput, read p99, errors) per round) and runs the report;
    /// returns its checks (name → pass) and its Markdown.
    func report(_ rounds: [[String: (Double, Double, Int)]]) throws -> (
        checks: [String: Bool], markdown: String
    ) {
        let dir = TempDirectory()
        try FileManager.default.createDirectory(atPath: dir.path + "/raw", withIntermediateDirectories: true)
        for (i, round) in rounds.enumerated() {
            for (target, (tput, p99, errors)) in round {
                try Self.run(target, throughput: tput, readP99: p99, errors: errors)
                    .write(toFile: "\(dir.path)/raw/10x100-b-\(target)-r\(i + 1).json", atomically: true, encoding: .utf8)
            }
        }
        let run = try runEEKVCapturing(["bench", "report", "--dir", dir.path])
        #expect(run.status == 0, "\(run.output)")
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir.path + "/overhead.json")))
        let checks = ((json as? [String: Any])?["checks"] as? [[String: Any]]) ?? []
        var byName: [String: Bool] = [:]
        for c in checks { byName[c["check"] as! String] = c["pass"] as? Bool }
        let markdown = try String(contentsOfFile: dir.path + "/overhead.md", encoding: .utf8)
        return (byName, markdown)
    }

    @Test("both checks pass on a clean study: adaptive within 0.9 of plaintext, 3x Redis+TLS with a lower p99")
    func passes() throws {
        let round: [String: (Double, Double, Int)] = [
            "none": (100_000, 50, 0), "adaptive": (95_000, 55, 0), "redis-tls": (30_000, 200, 0),
        ]
        let (checks, markdown) = try report([round, round])
        #expect(checks == ["adaptive_vs_plaintext": true, "adaptive_vs_redis_tls": true])
        #expect(markdown.contains("Every check passed."))
    }

    @Test("failed operations fail the checks, however fast the run that had them")
    func failuresFail() throws {
        let round: [String: (Double, Double, Int)] = [
            "none": (100_000, 50, 0), "adaptive": (150_000, 40, 12), "redis-tls": (30_000, 200, 0),
        ]
        let (checks, markdown) = try report([round, round])
        #expect(checks == ["adaptive_vs_plaintext": false, "adaptive_vs_redis_tls": false])
        #expect(markdown.contains("24 failed operations"))
    }

    @Test("p99 is compared within each round: the medians of each side taken apart would say lower")
    func p99WithinRounds() throws {
        // Read p99, adaptive vs Redis+TLS: 100 vs 90, 300 vs 400, 310 vs 305. Medians taken apart:
        // 300 < 305. Within rounds: 1.11, 0.75, 1.02, median 1.02: not lower.
        let tputs: [String: Double] = ["none": 100_000, "adaptive": 95_000, "redis-tls": 30_000]
        let p99s: [[String: Double]] = [
            ["none": 50, "adaptive": 100, "redis-tls": 90], ["none": 50, "adaptive": 300, "redis-tls": 400],
            ["none": 50, "adaptive": 310, "redis-tls": 305],
        ]
        let rounds = p99s.map { p in Dictionary(uniqueKeysWithValues: tputs.map { ($0.key, ($0.value, p[$0.key]!, 0)) }) }
        let (checks, _) = try report(rounds)
        #expect(checks["adaptive_vs_redis_tls"] == false)
        #expect(checks["adaptive_vs_plaintext"] == true)
    }
}
