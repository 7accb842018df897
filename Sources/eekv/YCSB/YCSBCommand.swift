import ArgumentParser
import EEKV
import EERPC
import Glibc
import Synchronization
import YCSB
import YCSBBindings

struct YCSBCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ycsb",
        abstract: "YCSB core workloads against an eekv cluster (load, then run).",
        discussion: """
            The workloads are YCSB's own (A-F: proportions, scrambled-Zipfian/latest/uniform key choice, \
            10 fields of 100 B, FNV-hashed keys), or a YCSB property file. Closed loop: --threads client \
            threads, each with --outstanding requests in flight; or an open loop at --target-rate. Prints \
            YCSB's summary lines; --json writes the summary and the per-second series, --plot an SVG of the \
            latency CDF per operation and the throughput over time.
            """,
        subcommands: [YCSBLoad.self, YCSBRun.self, YCSBCompare.self]
    )
}

/// What load the generator makes: the workload and its properties, threads and requests in flight.
struct WorkloadOptions: ParsableArguments {
    @Option(help: "a, b, c, d, e, f, or a YCSB workload file.") var workload = "a"
    @Option(help: "Records (recordcount).") var records: Int64?
    @Option(help: "Operations in the run phase (operationcount; 0: no limit, the run ends at its time limit).")
    var operations: Int64?
    @Option(name: .customShort("p"), help: ArgumentHelp("A YCSB property, as in a workload file (repeatable).", valueName: "name=value"))
    var property: [String] = []
    @Option(help: "Client threads (default: the workload's threadcount, else 1).") var threads: Int?
    @Option(help: "Requests each thread keeps in flight (Redis: pipelined on its connection).") var outstanding = 1
    @Option(help: "eekv clients: microseconds a client polls without a reply before it sleeps until one comes. Polling answers fastest on a core of its own (give it 1000 there); on a core shared with nodes, sleeping lets them run.")
    var clientSpinUs = 50
    func load() throws -> Workload {
        var w: Workload
        if let standard = Workload.standard(workload) {
            w = standard
        } else {
            guard let file = fopen(workload, "r") else {
                throw ValidationError("--workload is a-f or a readable workload file; cannot open \(workload)")
            }
            defer { fclose(file) }
            var text = ""
            var buffer = [CChar](repeating: 0, count: 4_096)
            while fgets(&buffer, Int32(buffer.count), file) != nil {
                text += buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            }
            do { w = try Workload.parse(text) } catch { throw ValidationError("\(workload): \(error)") }
            w.name = workload
        }
        for p in property {
            do { w = try Workload.parseOption(p, base: w) } catch { throw ValidationError("-p \(p): \(error)") }
        }
        if let records { w.recordCount = records }
        if let operations { w.operationCount = operations }
        guard w.recordCount >= 0 && w.operationCount >= 0 else {
            throw ValidationError("--records and --operations cannot be negative")
        }
        if let threads { w.threadCount = threads }
        if let why = w.partitionedLoadError { throw ValidationError(why) }
        if !w.ignoredProperties.isEmpty {
            EEKV.say("eekv ycsb: warning: ignoring properties this generator does not use: "
                + w.ignoredProperties.joined(separator: ", "))
        }
        guard (1...256).contains(w.clientThreads) else { throw ValidationError("--threads (threadcount) must be 1-256") }
        guard outstanding >= 1 && outstanding <= 256 else { throw ValidationError("--outstanding must be 1-256") }
        guard clientSpinUs >= 0 && clientSpinUs <= 1_000_000 else { throw ValidationError("--client-spin-us must be 0-1000000") }
        return w
    }
}

extension Workload {
    /// The threads to run: --threads, else the workload's threadcount, else 1.
    var clientThreads: Int { threadCount ?? 1 }
}

/// Whether `seconds` (or a rate) can time a run: positive and finite (a NaN or an infinity would
/// trap when made nanoseconds).
func isUsableQuantity(_ x: Double) -> Bool { x > 0 && x.isFinite }

struct YCSBOptions: ParsableArguments {
    @OptionGroup var generator: WorkloadOptions
    @Option(help: "For --db eekv: the cluster's crypto mode, none for plaintext sessions (default: the config's). The client seals its own packets inline.")
    var crypto: String?
    @Option(help: "Write the summary and per-second series as JSON to this file.") var json: String?
    @Option(help: "Write an SVG with the latency CDF per operation and the throughput of each second.") var plot: String?
    @Option(help: "eekv or redis.") var db = "eekv"
    @Option(help: "For --db redis: redis://[[USER]:PASSWORD@]HOST:PORT[/DB], or rediss://… for TLS (client certificate from --cert/--key/--ca or the config).")
    var redisURL = "redis://127.0.0.1:6379"
    @Option(help: ArgumentHelp(redisServerNameHelp, valueName: "name")) var redisServerName: String?
    @OptionGroup var client: ClusterOptions

    /// Runs a phase against the chosen database and reports it. `isLoad` and `seconds` size the
    /// progress bar.
    func execute(
        isLoad: Bool, seconds: Double? = nil,
        _ phase: (Workload, @escaping @Sendable (Int) throws -> any YCSBDatabase, Progress) throws -> RunSummary
    ) throws {
        let workload = try generator.load()
        let progress = Progress(
            total: isLoad ? Int(workload.recordCount) : Int(workload.operationLimit),
            seconds: isLoad ? nil : seconds ?? workload.maxExecutionSeconds)
        let target: YCSBTarget
        switch db {
        case "eekv":
            var config = try loadConfig(client.configPath())
            if let mode = self.crypto {
                guard let m = CryptoMode(name: mode) else {
                    throw ValidationError("--crypto is none, inline, offload or adaptive")
                }
                config.crypto = m
            }
            target = .eekv(config, tls: client.tls(for: config), spinUs: generator.clientSpinUs)
        case "redis":
            target = try .redis(url: redisURL, serverName: redisServerName, client: client)
        default:
            throw ValidationError("--db is eekv or redis")
        }
        let summary: RunSummary
        do {
            summary = try phase(workload, target.connector, progress)
        } catch {
            guard let hint = target.hint(for: error) else { throw error }
            fail("eekv ycsb: \(hint)", ClientExit.serverOrNetwork)
        }
        progress.finish()
        try target.report(summary, workload: workload, outstanding: generator.outstanding, json: json, plot: plot)
        if summary.perOperation.contains(where: { $0.errors > 0 }) { throw ExitCode(ClientExit.serverOrNetwork) }
    }
}

struct YCSBLoad: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "load", abstract: "Insert the workload's records.")
    @OptionGroup var options: YCSBOptions
    func run() throws {
        try options.execute(isLoad: true) { w, connect, progress in
            try Runner.load(
                workload: w, threads: w.clientThreads, outstanding: options.generator.outstanding, connect: connect,
                progress: progress.tick)
        }
    }
}

struct YCSBRun: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Run the workload's operations.")
    @OptionGroup var options: YCSBOptions
    @Option(help: "Stop after this many seconds even if operations remain (default: the workload's maxexecutiontime).")
    var duration: Double?
    @Option(help: "Open loop: operations per second over all threads, latency measured from each operation's intended start (default: the workload's target).")
    var targetRate: Double?
    func validate() throws {
        if let duration, !isUsableQuantity(duration) { throw ValidationError("--duration must be a positive number of seconds") }
        if let targetRate, !isUsableQuantity(targetRate) { throw ValidationError("--target-rate must be positive") }
    }
    func run() throws {
        try options.execute(isLoad: false, seconds: duration) { w, connect, progress in
            // The command line overrides the workload's target and maxexecutiontime.
            let rate = targetRate ?? w.targetRate
            let seconds = duration ?? w.maxExecutionSeconds
            if w.operationCount == 0 && seconds == nil {
                throw ValidationError(
                    "operationcount 0 runs until a time limit (as in YCSB); give --duration or maxexecutiontime")
            }
            if w.requestDistribution == .zipfian && w.insertProportion > 0 && w.zipfianKeyRange > 4 * max(w.recordCount, 1) {
                let warning =
                    "eekv ycsb: warning: \(w.operationCount) operations with insertproportion \(w.insertProportion) make the "
                    + "zipfian key range \(w.zipfianKeyRange / max(w.recordCount, 1))× the records, and keys past the last "
                    + "insert are drawn again (as in Java YCSB); give --operations near what the run will do"
                EEKV.say(warning)
            }
            if rate != nil && options.generator.outstanding > 1 {
                throw ValidationError(
                    "--target-rate (target) issues one request at a time per thread; use --threads, not --outstanding")
            }
            return try Runner.run(
                workload: w, threads: w.clientThreads, outstanding: options.generator.outstanding,
                seconds: seconds, targetRate: rate, connect: connect, progress: progress.tick)
        }
    }
}

/// Progress on standard error (standard output stays the summary): a bar redrawn in place on a
/// terminal, YCSB's per-second lines otherwise.
final class Progress: @unchecked Sendable {
    let total: Int
    let seconds: Double?
    let terminal = isatty(2) == 1
    /// Touched only by the runner's reporting thread, then by `finish` after the run.
    private var done = 0

    init(total: Int, seconds: Double?) {
        self.total = max(total, 1)
        self.seconds = seconds
    }

    var tick: @Sendable (Int, Int) -> Void { { [self] second, ops in update(second: second, ops: ops) } }

    private func update(second: Int, ops: Int) {
        done += ops
        guard terminal else {
            return emit("\(second) sec: \(done) operations; \(ops) current ops/sec\n")
        }
        var fraction = Double(done) / Double(total)
        if let seconds { fraction = max(fraction, Double(second) / seconds) }
        fraction = min(fraction, 1)
        let width = 30
        let filled = Int(fraction * Double(width))
        let bar = String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled)
        emit("\r[\(bar)] \(Int(fraction * 100))%  \(second) s  \(done) ops  \(ops) ops/s   ")
    }

    func finish() { if terminal && done > 0 { emit("\n") } }

    private func emit(_ text: String) { _ = text.withCString { write(2, $0, strlen($0)) } }
}

func printSummary(_ s: RunSummary) {
    for line in s.ycsbLines { print(line) }
}

/// The eekv clients' transport counters, summed over the phase's threads: a throughput figure
/// means little if the protocol was busy recovering lost packets.
final class TransportTally: Sendable {
    struct Totals {
        /// The clients' protocol counters, summed.
        var rpc = RpcStats()
        var retransmissions: UInt64 { rpc.retransmissions }
        var packetsSent: UInt64 { rpc.packetsSent }
        var packetsReceived: UInt64 { rpc.packetsReceived }
        var drops: [DropReason: UInt64] { rpc.drops }
        /// Sends the kernel refused (socket buffer full); the protocol resends them.
        var sendsRefused: UInt64 = 0
        /// Receives that took a run of packets as one buffer (UDP GRO).
        var coalescedReceives: UInt64 = 0
        /// Packets past what one receive could hand on (dropped; the protocol resends them).
        var receivesDiscarded: UInt64 = 0
    }
    private let state = Mutex(Totals())

    /// Adds a client's counters (called as each thread's binding is released).
    @Sendable func add(_ client: KVClient) {
        let rpc = client.stats
        let socket = client.transportStats
        state.withLock { t in
            t.rpc.add(rpc)
            t.sendsRefused += socket.txDropped
            t.coalescedReceives += socket.rxCoalesced
            t.receivesDiscarded += socket.rxDiscarded
        }
    }

    var totals: Totals { state.withLock { $0 } }
}

func printTransport(_ t: TransportTally.Totals) {
    print("[TRANSPORT], PacketsSent, \(t.packetsSent)")
    print("[TRANSPORT], PacketsReceived, \(t.packetsReceived)")
    print("[TRANSPORT], Retransmissions, \(t.retransmissions)")
    print("[TRANSPORT], SendsRefused, \(t.sendsRefused)")
    print("[TRANSPORT], CoalescedReceives, \(t.coalescedReceives)")
    if t.receivesDiscarded > 0 { print("[TRANSPORT], ReceivedPacketsDiscarded, \(t.receivesDiscarded)") }
    for (reason, n) in t.drops.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
        print("[TRANSPORT], Dropped(\(reason.name)), \(n)")
    }
}

func writeJSON(
    _ s: RunSummary, workload: Workload, to path: String, db: String, crypto: String, nodes: Int, mtu: Int?,
    outstanding: Int, transport: TransportTally.Totals? = nil
) throws {
    let setting = RunSetting(db: db, crypto: crypto, nodes: nodes, mtu: mtu, outstanding: outstanding)
    try writeText(s.json(workload: workload, setting: setting, transport: transport.map(transportJSON)), to: path)
}

func transportJSON(_ t: TransportTally.Totals) -> String {
    let drops = t.drops.sorted(by: { $0.key.rawValue < $1.key.rawValue }).map { "\(jsonQuoted($0.key.name)):\($0.value)" }
    return "{\"packets_sent\":\(t.packetsSent),\"packets_received\":\(t.packetsReceived),"
        + "\"retransmissions\":\(t.retransmissions),\"sends_refused\":\(t.sendsRefused),"
        + "\"coalesced_receives\":\(t.coalescedReceives),\"received_packets_discarded\":\(t.receivesDiscarded),"
        + "\"drops\":{\(drops.joined(separator: ","))}}"
}

func writeText(_ text: String, to path: String) throws {
    guard let file = fopen(path, "w") else { throw ValidationError("cannot write \(path)") }
    defer { fclose(file) }
    fputs(text, file)
}
