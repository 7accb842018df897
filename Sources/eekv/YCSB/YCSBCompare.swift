import ArgumentParser
import EEKV
import YCSB

/// `eekv ycsb compare`: one workload against several databases in interleaved time slices.
struct YCSBCompare: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Run a workload against several databases in turn, in interleaved time slices.",
        discussion: """
            For A/B comparisons on a machine whose speed drifts (a shared VM): separate runs seconds \
            apart can differ by more than the effect measured. Here time is cut into slices of \
            --slice-ms; each cycle gives every target one slice, in a random order, and in its slice a \
            target has the whole generator (every thread, every request in flight), then finishes what \
            is in flight before the next target starts. Each target runs --duration seconds of slices \
            and is reported as its own run (its throughput is over the time it had). Every target sees \
            the same operations and keys. Targets: NAME=CONFIG.toml for an eekv cluster (its crypto \
            mode is the config's), NAME=redis://[[USER]:PASSWORD@]HOST:PORT[/DB] or NAME=rediss://… for Redis (client \
            certificate from --cert/--key/--ca or --config).
            """)

    @OptionGroup var generator: WorkloadOptions
    @Option(name: .customLong("target"), help: ArgumentHelp("A database to run against (repeatable).", valueName: "name=config.toml|redis-url"))
    var targets: [String] = []
    @Option(help: "Seconds of slices for each target (default: the workload's maxexecutiontime, else 10).")
    var duration: Double?
    @Option(help: "Milliseconds per slice.") var sliceMs: Double = 200
    @Option(help: "Seed of the slice order.") var seed: UInt64 = 1
    @Option(help: "Write each target's summary as JSON to this path; {target} in it stands for the target's name.")
    var json: String?
    @Option(help: ArgumentHelp(redisServerNameHelp, valueName: "name")) var redisServerName: String?
    @OptionGroup var client: ClusterOptions

    func validate() throws {
        guard !targets.isEmpty else { throw ValidationError("give at least one --target") }
        guard duration.map(isUsableQuantity) ?? true && sliceMs >= 1 && sliceMs.isFinite else {
            throw ValidationError("--duration and --slice-ms must be positive")
        }
        if let json, targets.count > 1 && !json.contains("{target}") {
            throw ValidationError("--json needs {target} in the path when there are several targets")
        }
    }

    /// Name and database of each --target.
    func parsedTargets() throws -> [(name: String, target: YCSBTarget)] {
        var seen: Set<String> = []
        return try targets.map { spec in
            guard let eq = spec.firstIndex(of: "="), eq != spec.startIndex else {
                throw ValidationError("--target is NAME=CONFIG.toml or NAME=redis[s]://HOST:PORT: \(spec)")
            }
            let name = String(spec[..<eq])
            let where_ = String(spec[spec.index(after: eq)...])
            guard seen.insert(name).inserted else { throw ValidationError("two targets are named \(name)") }
            if where_.hasPrefix("redis://") || where_.hasPrefix("rediss://") {
                return (name, try .redis(url: where_, serverName: redisServerName, client: client))
            }
            let cluster = try loadConfig(where_)
            return (name, .eekv(cluster, tls: client.tls(for: cluster), spinUs: generator.clientSpinUs))
        }
    }

    func run() throws {
        let workload = try generator.load()
        // Targets take turns in a closed loop: an open loop's rate has no meaning here.
        if workload.targetRate != nil { throw ValidationError("compare runs a closed loop; the workload's target is not supported") }
        let duration = duration ?? workload.maxExecutionSeconds ?? 10
        let named = try parsedTargets()
        let connectors = named.map { $0.target.connector }
        let progress = Progress(total: Int(min(workload.operationLimit, Int64(Int.max / named.count))) * named.count, seconds: duration * Double(named.count))
        let summaries: [RunSummary]
        do {
            summaries = try Runner.interleaved(
                workload: workload, targets: named.count, threads: workload.clientThreads, outstanding: generator.outstanding,
                seconds: duration, sliceSeconds: sliceMs / 1_000, seed: seed,
                connect: { target, thread in try connectors[target](thread) }, progress: progress.tick)
        } catch {
            guard let hint = named.lazy.compactMap({ $0.target.hint(for: error) }).first else { throw error }
            fail("eekv ycsb compare: \(hint)", ClientExit.serverOrNetwork)
        }
        progress.finish()
        for (i, (name, target)) in named.enumerated() {
            print("[TARGET], \(name)")
            try target.report(
                summaries[i], workload: workload, outstanding: generator.outstanding,
                json: json.map { $0.replacing("{target}", with: name) }, plot: nil)
        }
        if summaries.contains(where: { $0.perOperation.contains { $0.errors > 0 } }) {
            throw ExitCode(ClientExit.serverOrNetwork)
        }
    }
}
