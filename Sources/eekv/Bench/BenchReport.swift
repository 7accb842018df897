import ArgumentParser
// The report reads JSON files once, off any data path, so Foundation's decoder is fine here.
import FoundationEssentials
import YCSB

/// `eekv bench report`: turns the per-run JSON files of `bench/overhead.sh` into the study's
/// summary (median over rounds), a Markdown table, one SVG chart per record shape, and the
/// checks the issue asks for.
struct BenchReport: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Summarise an overhead study (bench/overhead.sh): JSON, Markdown and SVG from DIR/raw/*.json."
    )

    @Option(help: "The study's folder (its raw/ holds one JSON per run).") var dir = "bench/results/overhead"

    /// What `eekv ycsb run --json` writes, as far as the report needs it.
    struct Run: Decodable {
        var workload: String
        var db: String
        var crypto: String
        var records: Int
        var fieldcount: Int
        var fieldlength: Int
        var threads: Int
        var outstanding: Int
        var mtu: Int?
        var throughput: Double
        var per_operation: [Op]
        struct Op: Decodable {
            var operation: String
            var count: Int
            var errors: Int
            var p50_us: Double
            var p99_us: Double
        }
    }

    /// One configuration of the study.
    struct Config: Hashable {
        var db: String
        var crypto: String
        var label: String { db == "eekv" ? "eekv \(crypto)" : db == "redis+tls" ? "Redis+TLS" : "Redis" }
        static let order = [
            Config(db: "eekv", crypto: "none"), Config(db: "eekv", crypto: "inline"),
            Config(db: "eekv", crypto: "offload"), Config(db: "eekv", crypto: "adaptive"),
            Config(db: "redis", crypto: "none"), Config(db: "redis+tls", crypto: "tls"),
        ]
    }

    struct Cell {
        var throughputs: [Double] = []
        /// Throughput by round (the file name's `-rN`), for ratios between neighbours of a round.
        var byRound: [Int: Double] = [:]
        var p99: [String: [Double]] = [:]
        /// Each operation's p99 by round, for ratios within a round.
        var p99ByRound: [String: [Int: Double]] = [:]
        var p50: [String: [Double]] = [:]
        /// Failed operations over all rounds.
        var errors = 0
        var medianThroughput: Double { median(throughputs) }
        func medianP99(_ op: String) -> Double { median(p99[op] ?? []) }
        /// The highest per-operation median p99 (the operation a user waits longest for).
        var worstP99: Double { p99.keys.map(medianP99).max() ?? 0 }
    }

    func run() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: dir + "/raw").filter { $0.hasSuffix(".json") }.sorted()
        guard !files.isEmpty else { throw ValidationError("no runs in \(dir)/raw; run bench/overhead.sh first") }
        var cells: [String: [String: [Config: Cell]]] = [:]  // shape → workload → config
        var shapes: [String] = []
        var recordBytes: [String: Int] = [:]  // shape → bytes per record, for the order of the sections
        var setup = ""
        for file in files {
            let data = try Data(contentsOf: URL(fileURLWithPath: dir + "/raw/" + file))
            let run = try JSONDecoder().decode(Run.self, from: data)
            let shape = "\(run.fieldcount)×\(bytes(run.fieldlength))"
            if !shapes.contains(shape) { shapes.append(shape) }
            recordBytes[shape] = run.fieldcount * run.fieldlength
            if let mtu = run.mtu { setup = "\(run.threads) client thread × \(run.outstanding) requests in flight; eekv MTU \(mtu)" }
            var cell = cells[shape, default: [:]][run.workload, default: [:]][Config(db: run.db, crypto: run.crypto)] ?? Cell()
            cell.throughputs.append(run.throughput)
            let round = file.split(separator: "-").last.flatMap { Int($0.dropFirst().dropLast(5)) }
            if let round { cell.byRound[round] = run.throughput }
            for op in run.per_operation {
                cell.errors += op.errors
                // The latencies of failed operations (`READ-FAILED`, ...) are not the store's: the
                // failures are reported through `errors`. A kind none of whose operations
                // succeeded has no latency at all (its p99 reads 0).
                guard !op.operation.hasSuffix("-FAILED"), op.count > 0 else { continue }
                cell.p99[op.operation, default: []].append(op.p99_us)
                cell.p50[op.operation, default: []].append(op.p50_us)
                if let round { cell.p99ByRound[op.operation, default: [:]][round] = op.p99_us }
            }
            cells[shape, default: [:]][run.workload, default: [:]][Config(db: run.db, crypto: run.crypto)] = cell
        }
        shapes.sort { recordBytes[$0]! < recordBytes[$1]! }

        var md = "# Encryption overhead: YCSB A–F, eekv in every crypto mode, Redis without and with TLS\n\n"
        md += "Generated by `bench/overhead.sh` (\(files.count) runs; \(setup)). Throughput is the median over rounds "
        md += "in thousands of operations per second. The ratios are medians over rounds of the ratio within each round "
        md += "(in a round, one `eekv ycsb compare` runs the configurations of a workload interleaved in time slices, so the "
        md += "machine's drift hits them alike). p99 is the median over rounds of each operation's "
        md += "99th percentile, the worst operation shown; the check against Redis+TLS compares p99s as it does "
        md += "throughput, by the median of their ratio within each round. The absolute figures are context: they "
        md += "come from different rounds of a machine whose speed drifts.\n\n"
        var results: [String] = []
        var checks: [String] = []
        var failed: [String] = []
        for shape in shapes {
            let workloads = cells[shape]!.keys.sorted()
            md += "## Records of \(shape)\n\n"
            md += "| workload | " + Config.order.map(\.label).joined(separator: " | ")
            md += " | adaptive / none | adaptive / Redis+TLS |\n"
            md += "|---|" + String(repeating: "---:|", count: Config.order.count + 2) + "\n"
            var p99Rows = ""
            for w in workloads {
                let row = cells[shape]![w]!
                func tput(_ c: Config) -> Double? { row[c].map(\.medianThroughput) }
                let adaptive = row[Config(db: "eekv", crypto: "adaptive")]
                let none = row[Config(db: "eekv", crypto: "none")]
                let redisTLS = row[Config(db: "redis+tls", crypto: "tls")]
                md += "| \(w.uppercased()) | "
                md += Config.order.map { c in
                    tput(c).map { fixed($0 / 1_000, 1) + (row[c]!.errors > 0 ? " (\(row[c]!.errors) failed)" : "") } ?? "–"
                }.joined(separator: " | ")
                let vsNone = pairedRatio(adaptive, none)
                let vsRedis = pairedRatio(adaptive, redisTLS)
                md += " | \(vsNone.map { fixed($0, 2) + "×" } ?? "–") | \(vsRedis.map { fixed($0, 2) + "×" } ?? "–") |\n"
                p99Rows += "| \(w.uppercased()) | "
                p99Rows += Config.order.map { c in row[c].map { fixed($0.worstP99, 0) } ?? "–" }.joined(separator: " | ") + " |\n"
                for c in Config.order {
                    guard let cell = row[c] else { continue }
                    let ops = cell.p99.keys.sorted().map { op in
                        "{\"operation\":\"\(op)\",\"p50_us\":\(fixed(median(cell.p50[op] ?? []), 1)),\"p99_us\":\(fixed(cell.medianP99(op), 1))}"
                    }
                    results.append(
                        "{\"records\":\"\(shape)\",\"workload\":\"\(w)\",\"db\":\"\(c.db)\",\"crypto\":\"\(c.crypto)\","
                            + "\"throughput\":\(fixed(cell.medianThroughput, 1)),\"errors\":\(cell.errors),"
                            + "\"rounds\":[\(cell.byRound.keys.sorted().map { fixed(cell.byRound[$0]!, 1) }.joined(separator: ","))],"
                            + "\"per_operation\":[\(ops.joined(separator: ","))]}")
                }
                // A configuration whose operations failed may be fast for it: no check passes on it.
                let failures = (adaptive?.errors ?? 0) + (none?.errors ?? 0)
                if let vsNone {
                    let pass = vsNone >= 0.9 && failures == 0
                    checks.append(check("adaptive_vs_plaintext", shape, w, vsNone, ">= 0.9, no failed operation", pass))
                    if !pass {
                        failed.append(
                            "\(shape) \(w.uppercased()): adaptive / none = \(fixed(vsNone, 3))"
                                + (failures > 0 ? ", \(failures) failed operations" : ""))
                    }
                }
                if shape == "10×100 B" && (w == "b" || w == "c"), let vsRedis,
                    let a = row[Config(db: "eekv", crypto: "adaptive")], let r = row[Config(db: "redis+tls", crypto: "tls")]
                {
                    // p99 as throughput: the median over rounds of the ratio within each round.
                    let lowerP99 = !a.p99.isEmpty && a.p99.keys.allSatisfy { op in (pairedP99Ratio(a, r, op) ?? 1) < 1 }
                    let pass = vsRedis >= 3 && lowerP99 && a.errors == 0 && r.errors == 0
                    checks.append(
                        check("adaptive_vs_redis_tls", shape, w, vsRedis, ">= 3, a lower p99 for every operation, no failed operation", pass))
                    if !pass {
                        failed.append(
                            "\(shape) \(w.uppercased()): adaptive / Redis+TLS = \(fixed(vsRedis, 2)), p99 lower: \(lowerP99)"
                                + (a.errors + r.errors > 0 ? ", \(a.errors + r.errors) failed operations" : ""))
                    }
                }
            }
            md += "\np99 (µs, worst operation):\n\n| workload | " + Config.order.map(\.label).joined(separator: " | ") + " |\n"
            md += "|---|" + String(repeating: "---:|", count: Config.order.count) + "\n" + p99Rows + "\n"
            let file = "overhead-" + String(shape.compactMap { $0 == "×" ? "x" : $0 == " " ? nil : $0 }) + ".svg"
            md += "![\(shape)](\(file))\n\n"
            try writeText(svg(shape: shape, workloads: workloads, cells: cells[shape]!), to: dir + "/" + file)
        }
        md += "## Checks\n\n"
        if checks.isEmpty {
            md += "No check ran: they need the none and adaptive modes (and Redis+TLS with 10×100 B records).\n"
        } else {
            md += failed.isEmpty ? "Every check passed.\n" : failed.map { "- not met: \($0)" }.joined(separator: "\n") + "\n"
        }
        try writeText(md, to: dir + "/overhead.md")
        try writeText(
            "{\"runs\":\(files.count),\"results\":[\n\(results.joined(separator: ",\n"))\n],\"checks\":[\n\(checks.joined(separator: ",\n"))\n]}\n",
            to: dir + "/overhead.json")
        print(md)
    }

    func check(_ name: String, _ shape: String, _ workload: String, _ value: Double, _ target: String, _ pass: Bool) -> String {
        "{\"check\":\"\(name)\",\"records\":\"\(shape)\",\"workload\":\"\(workload)\",\"value\":\(fixed(value, 3)),"
            + "\"target\":\"\(target)\",\"pass\":\(pass)}"
    }

    /// Throughput per workload and configuration beside the worst-operation p99.
    func svg(shape: String, workloads: [String], cells: [String: [Config: Cell]]) -> String {
        let groups = workloads.map { $0.uppercased() }
        let throughput = Config.order.map { c in
            (name: c.label, values: workloads.map { (cells[$0]?[c]?.medianThroughput ?? 0) / 1_000 })
        }
        let p99 = Config.order.map { c in (name: c.label, values: workloads.map { cells[$0]?[c]?.worstP99 ?? 0 }) }
        let left = SVGChart.bars(
            title: "Throughput, records of \(shape)", yLabel: "thousand operations / s", groups: groups, series: throughput,
            width: 620, height: 360)
        let right = SVGChart.bars(
            title: "p99 latency (worst operation), records of \(shape)", yLabel: "µs", groups: groups, series: p99,
            width: 620, height: 360)
        return SVGChart.document(width: 1_240, height: 360, panels: [.init(x: 0, y: 0, body: left), .init(x: 620, y: 0, body: right)])
    }

    func bytes(_ n: Int) -> String { n % 1_024 == 0 ? "\(n / 1_024) KiB" : "\(n) B" }

    /// The median over rounds of a / b within each round (the configurations of a round run
    /// interleaved in time slices, so the machine's slow spells cancel); nil without a common round.
    func pairedRatio(_ a: Cell?, _ b: Cell?) -> Double? {
        guard let a, let b else { return nil }
        return medianRatio(a.byRound, b.byRound)
    }

    /// The median over rounds of `a`'s p99 for `op` over `b`'s, within each round.
    func pairedP99Ratio(_ a: Cell, _ b: Cell, _ op: String) -> Double? {
        guard let x = a.p99ByRound[op], let y = b.p99ByRound[op] else { return nil }
        return medianRatio(x, y)
    }

    /// The median of x / y over the rounds both have (y above 0); nil without one.
    func medianRatio(_ x: [Int: Double], _ y: [Int: Double]) -> Double? {
        let ratios = x.keys.sorted().compactMap { r -> Double? in
            guard let p = x[r], let q = y[r], q > 0 else { return nil }
            return p / q
        }
        return ratios.isEmpty ? nil : median(ratios)
    }
}

func median(_ values: [Double]) -> Double {
    guard !values.isEmpty else { return 0 }
    let s = values.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}
