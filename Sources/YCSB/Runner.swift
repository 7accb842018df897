import Glibc
import Histogram
import Synchronization

public enum RunnerError: Error, CustomStringConvertible {
    case notAsynchronous
    public var description: String {
        "this database binding runs one operation at a time per thread; use outstanding 1 (more threads instead)"
    }
}

/// Latencies of one thread: an HdrHistogram per operation type (nanoseconds, 3 significant
/// digits, up to 100 s), merged across threads at the end. Failed operations have histograms of
/// their own (YCSB's `READ-FAILED` and so on), so a fast error or a timeout does not pass for
/// the latency of the store.
struct Recorder {
    /// The clock's zero for the per-second series (an interleaved run moves it back by the time
    /// its target has already run, so the series counts that target's own seconds).
    var start: UInt64
    /// Shared live counter for the per-second progress lines.
    let live: UnsafePointer<Atomic<Int>>?
    // Indexed by `Operation.Kind.index` (arrays, not dictionaries: this runs once per operation).
    /// Operations that completed (found or not found).
    var latencies: [Histogram<UInt64>?] = Array(repeating: nil, count: Operation.Kind.allCases.count)
    /// Operations that failed.
    var failedLatencies: [Histogram<UInt64>?] = Array(repeating: nil, count: Operation.Kind.allCases.count)
    var errors = [Int](repeating: 0, count: Operation.Kind.allCases.count)
    var notFound = [Int](repeating: 0, count: Operation.Kind.allCases.count)
    /// The first error of each operation type, to say what went wrong.
    var firstError: [String?] = Array(repeating: nil, count: Operation.Kind.allCases.count)
    /// Operations completed in each second of the run.
    var perSecond: [Int] = []

    /// 100 s: a slower operation is recorded as this, so it still counts.
    static let highestTrackableNs: UInt64 = 100_000_000_000

    static func histogram() -> Histogram<UInt64> {
        Histogram(highestTrackableValue: highestTrackableNs, numberOfSignificantValueDigits: .three)
    }

    /// Counts a failure; ``record(_:began:failed:)`` still records its latency.
    mutating func failed(_ kind: Operation.Kind, _ error: any Error) {
        errors[kind.index] += 1
        if firstError[kind.index] == nil { firstError[kind.index] = "\(error)" }
    }

    /// `began` is when the operation started, or, in an open loop, when it was meant to start (so
    /// queueing behind a slow request counts: no coordinated omission).
    mutating func record(_ kind: Operation.Kind, began: UInt64, failed: Bool = false) {
        let end = Runner.now()
        if failed {
            if failedLatencies[kind.index] == nil { failedLatencies[kind.index] = Self.histogram() }
            failedLatencies[kind.index]!.recordClamped(end &- began)
        } else {
            if latencies[kind.index] == nil { latencies[kind.index] = Self.histogram() }
            latencies[kind.index]!.recordClamped(end &- began)
        }
        let second = Int((end - start) / 1_000_000_000)
        if perSecond.count <= second { perSecond += [Int](repeating: 0, count: second + 1 - perSecond.count) }
        perSecond[second] += 1
        live?.pointee.add(1, ordering: .relaxed)
    }
}

extension Histogram<UInt64> {
    /// Records `ns`, clamped into the trackable range (`record` drops a value above it).
    mutating func recordClamped(_ ns: UInt64) {
        let recorded = record(Swift.min(Swift.max(1, ns), highestTrackableValue))
        assert(recorded, "a clamped value is always trackable")
    }
}

/// Runs a YCSB phase: `threads` client threads, each with its own database connection from
/// `connect`, in a closed loop (one or more operations in flight per thread) or an open loop.
public enum Runner {
    /// Load phase: inserts records `0..<recordCount`, split over the threads, each thread keeping
    /// `outstanding` inserts in flight.
    public static func load(
        workload: Workload, threads: Int, outstanding: Int = 1,
        connect: @escaping @Sendable (Int) throws -> any YCSBDatabase,
        progress: (@Sendable (Int, Int) -> Void)? = nil
    ) throws -> RunSummary {
        return try execute(
            phase: "load", workload: workload, threads: threads, connect: checked(connect, outstanding: outstanding),
            progress: progress
        ) { thread, chooser, db, recorder, stop in
            var n = Int64(thread)
            func another() -> Bool { n < workload.recordCount && !stop() }
            if outstanding > 1 {
                runPipelined(db as! any YCSBAsyncDatabase, outstanding: outstanding, recorder: &recorder, another: another) {
                    let record = chooser.loadRecord(n)
                    n += Int64(threads)
                    return (.insert(key: record.key, fields: record.fields), nil)
                }
                return
            }
            while another() {
                let record = chooser.loadRecord(n)
                let t = now()
                var failed = false
                do {
                    try db.insert(key: record.key, fields: record.fields)
                } catch {
                    recorder.failed(.insert, error)
                    failed = true
                }
                recorder.record(.insert, began: t, failed: failed)
                n += Int64(threads)
            }
        }
    }

    /// `connect`, failing early if `outstanding` needs an asynchronous binding it does not give.
    static func checked(
        _ connect: @escaping @Sendable (Int) throws -> any YCSBDatabase, outstanding: Int
    ) -> @Sendable (Int) throws -> any YCSBDatabase {
        precondition(outstanding >= 1, "outstanding must be at least 1")
        return { thread in
            let db = try connect(thread)
            if outstanding > 1 && !(db is any YCSBAsyncDatabase) { throw RunnerError.notAsynchronous }
            return db
        }
    }

    /// Run phase: `operationCount` operations (any number if 0, as in YCSB) or until `seconds`
    /// pass, drawn by the workload.
    /// - Parameters:
    ///   - outstanding: operations each thread keeps in flight (closed loop); above 1 the
    ///     binding must be a ``YCSBAsyncDatabase``.
    ///   - targetRate: operations per second over all threads (an open loop: each thread issues
    ///     on a fixed schedule and latency is measured from the scheduled start); nil runs a
    ///     closed loop as fast as the database answers.
    public static func run(
        workload: Workload, threads: Int, outstanding: Int = 1, seconds: Double?, targetRate: Double? = nil,
        connect: @escaping @Sendable (Int) throws -> any YCSBDatabase,
        progress: (@Sendable (Int, Int) -> Void)? = nil
    ) throws -> RunSummary {
        precondition(outstanding == 1 || targetRate == nil, "an open loop keeps one operation in flight per thread")
        precondition(seconds.map { $0 > 0 && $0.isFinite } ?? true, "seconds must be positive and finite")
        precondition(targetRate.map { $0 > 0 && $0.isFinite } ?? true, "targetRate must be positive and finite")
        let total = Atomic<Int>(0)
        let limit = workload.operationLimit
        // Each thread's interval between intended starts, offset so threads interleave.
        let interval = targetRate.map { UInt64(Double(threads) / $0 * 1e9) }
        return try execute(
            phase: "run", workload: workload, threads: threads, connect: checked(connect, outstanding: outstanding),
            progress: progress
        ) {
            thread, chooser, db, recorder, stop in
            let deadline = seconds.map { recorder.start + UInt64($0 * 1e9) }
            /// Takes the budget for one more operation; false when the run is over.
            func another() -> Bool {
                if stop() { return false }
                if let deadline, now() >= deadline { return false }
                return total.wrappingAdd(1, ordering: .relaxed).oldValue < limit
            }
            guard let interval else {
                return runClosedLoop(db, outstanding: outstanding, chooser: &chooser, recorder: &recorder, another: another)
            }
            // The open loop (one operation in flight per thread).
            var intended = recorder.start &+ interval * UInt64(thread) / UInt64(threads)
            while another() {
                intended &+= interval
                // One reading per check: a second one could already be past `intended`.
                var t = now()
                while t < intended {
                    usleep(UInt32(min(1_000, (intended - t) / 1_000)))
                    t = now()
                }
                let next = chooser.next()
                performOne(db, next, chooser: &chooser, recorder: &recorder, began: intended)
            }
        }
    }

    /// Runs one operation synchronously and records it, latency counted from `began`.
    static func performOne(
        _ db: any YCSBDatabase, _ next: (Operation, insertedKeyNumber: Int64?), chooser: inout OperationChooser,
        recorder: inout Recorder, began: UInt64
    ) {
        let op = next.0
        var found = true
        var failed = false
        // As YCSB's `finally`: a failed insert is acknowledged too, or its number would hold the
        // acknowledged limit back (and the key space's done set would grow) for the rest of the run.
        defer { if let n = next.insertedKeyNumber { chooser.acknowledgeInsert(n) } }
        do {
            found = try db.perform(op)
        } catch {
            recorder.failed(op.kind, error)
            failed = true
        }
        if !found { recorder.notFound[op.kind.index] += 1 }
        recorder.record(op.kind, began: began, failed: failed)
    }

    /// A closed loop with `outstanding` operations in flight on one thread: start operations
    /// (from `next`, while `another` grants them) until the window is full, then poll; each
    /// completion frees its place and runs the operation's `acknowledge`, failed or not (as YCSB's
    /// `finally`).
    static func runPipelined(
        _ db: any YCSBAsyncDatabase, outstanding: Int, recorder: inout Recorder, another: () -> Bool,
        next: () -> (Operation, acknowledge: (() -> Void)?)
    ) {
        // Completions run inside `db.poll()` on this thread; they reach the recorder through
        // this box because an escaping closure cannot capture an `inout` parameter.
        final class Window {
            var recorder: Recorder
            var inFlight = 0
            init(_ recorder: Recorder) { self.recorder = recorder }
        }
        let window = Window(recorder)
        var more = true
        while true {
            while more && window.inFlight < outstanding {
                guard another() else {
                    more = false
                    break
                }
                let (op, acknowledge) = next()
                let kind = op.kind
                let t = now()
                window.inFlight += 1
                db.start(op) { result in
                    var failed = false
                    switch result {
                    case .success(let found):
                        if !found { window.recorder.notFound[kind.index] += 1 }
                    case .failure(let error):
                        window.recorder.failed(kind, error)
                        failed = true
                    }
                    acknowledge?()
                    window.recorder.record(kind, began: t, failed: failed)
                    window.inFlight -= 1
                }
            }
            if window.inFlight == 0 { break }
            db.poll()
        }
        recorder = window.recorder
    }

    private static func execute(
        phase: String, workload: Workload, threads: Int, connect: @escaping @Sendable (Int) throws -> any YCSBDatabase,
        progress: (@Sendable (Int, Int) -> Void)?,
        body: @escaping @Sendable (Int, inout OperationChooser, any YCSBDatabase, inout Recorder, () -> Bool) -> Void
    ) throws -> RunSummary {
        let keySpace = KeySpace(initialRecords: workload.recordCount)
        // The chooser is built with the connection, before the clock starts: a zipfian or latest
        // one sums zeta over the records, which is setup, not a measured operation.
        let connectAndChoose: @Sendable (Int) throws -> (any YCSBDatabase, OperationChooser) = { t in
            (try connect(t), OperationChooser(workload: workload, keySpace: keySpace, seed: chooserSeed(thread: t)))
        }
        let (start, recorders) = try runThreads(threads, progress: progress, connect: connectAndChoose) {
            t, connection, start, live, stopped in
            var recorder = Recorder(start: start, live: live)
            if case (let db, var chooser)? = connection {
                body(t, &chooser, db, &recorder, stopped)
            }
            return recorder
        }
        return summarize(
            phase: phase, workload: workload, threads: threads, seconds: Double(now() - start) / 1e9,
            recorders: recorders)
    }

    /// Thread `thread`'s chooser seed (the same in every phase and every target).
    static func chooserSeed(thread: Int) -> UInt64 { UInt64(thread + 1) &* 0x9E37_79B9 }

    /// Calls `progress` each second with the operations completed in it (from the live counter;
    /// the series itself comes from completion times) until `finished`.
    static func reportProgress(
        start: UInt64, live: UnsafeMutablePointer<Atomic<Int>>, progress: (@Sendable (Int, Int) -> Void)?,
        finished: () -> Bool
    ) {
        var lastCount = 0
        var second = 0
        var nextTick = start + 1_000_000_000
        while !finished() {
            usleep(10_000)
            if now() >= nextTick {
                second += 1
                nextTick += 1_000_000_000
                let count = live.pointee.load(ordering: .relaxed)
                progress?(second, count - lastCount)
                lastCount = count
            }
        }
    }

    /// Merges the threads' recorders of one phase (or of one target of an interleaved run).
    static func summarize(
        phase: String, workload: Workload, threads: Int, seconds: Double, recorders: [Recorder]
    ) -> RunSummary {
        var series = [Int](repeating: 0, count: max(1, Int(seconds.rounded(.up))))
        for r in recorders {
            for (i, n) in r.perSecond.enumerated() { series[min(series.count - 1, i)] += n }
        }
        var summaries: [OperationSummary] = []
        for kind in Operation.Kind.allCases {
            var completed = Recorder.histogram()
            var failed = Recorder.histogram()
            var errors = 0
            var notFound = 0
            var firstError: String?
            for r in recorders {
                firstError = firstError ?? r.firstError[kind.index]
                if let h = r.latencies[kind.index] { completed.add(h) }
                if let h = r.failedLatencies[kind.index] { failed.add(h) }
                errors += r.errors[kind.index]
                notFound += r.notFound[kind.index]
            }
            // The kind's own entry carries the error count even when every operation failed.
            if completed.totalCount > 0 || errors > 0 {
                summaries.append(
                    operationSummary(kind, completed, failed: false, errors: errors, firstError: firstError, notFound: notFound))
            }
            if failed.totalCount > 0 {
                summaries.append(operationSummary(kind, failed, failed: true, errors: 0, firstError: nil, notFound: 0))
            }
        }
        return RunSummary(
            phase: phase, workload: workload.name, threads: threads, seconds: seconds, perOperation: summaries,
            perSecond: series)
    }

    /// The latency statistics of `histogram` (zeros if it is empty).
    static func operationSummary(
        _ kind: Operation.Kind, _ histogram: Histogram<UInt64>, failed: Bool, errors: Int, firstError: String?,
        notFound: Int
    ) -> OperationSummary {
        let empty = histogram.totalCount == 0
        func us(_ ns: UInt64) -> Double { empty ? 0 : Double(ns) / 1_000 }
        return OperationSummary(
            kind: kind, count: Int(histogram.totalCount), errors: errors, firstError: firstError, notFound: notFound,
            averageUs: empty ? 0 : histogram.mean / 1_000, minUs: us(histogram.min), maxUs: us(histogram.max),
            p50Us: us(histogram.valueAtPercentile(50)), p95Us: us(histogram.valueAtPercentile(95)),
            p99Us: us(histogram.valueAtPercentile(99)), p999Us: us(histogram.valueAtPercentile(99.9)),
            cdf: empty ? [] : cdfPercentiles.map { CDFPoint(percentile: $0, us: us(histogram.valueAtPercentile($0))) },
            failed: failed)
    }

    /// Even steps to p90, then ever closer to p100 (the tail is where the curves differ).
    static let cdfPercentiles: [Double] =
        stride(from: 0.0, through: 90, by: 2.5).map { $0 } + [92.5, 95, 97, 98, 99, 99.5, 99.7, 99.9, 99.95, 99.99, 100]

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    static func spawn(_ body: @escaping @Sendable () -> Void) -> pthread_t {
        final class Box: @unchecked Sendable {
            let body: @Sendable () -> Void
            init(_ body: @escaping @Sendable () -> Void) { self.body = body }
        }
        var tid = pthread_t()
        let box = Unmanaged.passRetained(Box(body))
        pthread_create(
            &tid, nil,
            { raw in
                let box = Unmanaged<AnyObject>.fromOpaque(raw!).takeRetainedValue() as! Box
                box.body()
                return nil
            }, box.toOpaque())
        return tid
    }
}
