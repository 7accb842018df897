import Glibc
import Histogram
import Synchronization

/// Latency statistics of one operation type, in microseconds.
public struct OperationSummary: Sendable {
    public var kind: Operation.Kind
    public var count: Int
    public var errors: Int
    public var notFound: Int
    public var averageUs: Double
    public var minUs: Double
    public var maxUs: Double
    public var p50Us: Double
    public var p95Us: Double
    public var p99Us: Double
    public var p999Us: Double
}

/// The result of a load or run phase.
public struct RunSummary: Sendable {
    public var phase: String
    public var workload: String
    public var threads: Int
    public var seconds: Double
    public var operations: Int
    public var throughput: Double { seconds > 0 ? Double(operations) / seconds : 0 }
    public var perOperation: [OperationSummary]
    /// Operations completed in each second of the run.
    public var perSecond: [Int]
}

/// Latencies of one thread: an HdrHistogram per operation type (nanoseconds, 3 significant
/// digits, up to 100 s), merged across threads at the end.
struct Recorder {
    let start: UInt64
    /// Shared live counter for the per-second progress lines.
    let live: UnsafePointer<Atomic<Int>>?
    var latencies: [Operation.Kind: Histogram<UInt64>] = [:]
    var errors: [Operation.Kind: Int] = [:]
    var notFound: [Operation.Kind: Int] = [:]
    /// Operations completed in each second of the run.
    var perSecond: [Int] = []

    static func histogram() -> Histogram<UInt64> {
        Histogram(highestTrackableValue: 100_000_000_000, numberOfSignificantValueDigits: .three)
    }

    /// `began` is when the operation started, or, in an open loop, when it was meant to start (so
    /// queueing behind a slow request counts: no coordinated omission).
    mutating func record(_ kind: Operation.Kind, began: UInt64) {
        let end = Runner.now()
        if latencies[kind] == nil { latencies[kind] = Self.histogram() }
        _ = latencies[kind]!.record(max(1, end &- began))
        let second = Int((end - start) / 1_000_000_000)
        if perSecond.count <= second { perSecond += [Int](repeating: 0, count: second + 1 - perSecond.count) }
        perSecond[second] += 1
        live?.pointee.add(1, ordering: .relaxed)
    }
}

/// Runs a YCSB phase in a closed loop: `threads` client threads, each with one request
/// outstanding, each with its own database connection from `connect`.
public enum Runner {
    /// Load phase: inserts records `0..<recordCount`, split over the threads.
    public static func load(
        workload: Workload, threads: Int, connect: @escaping @Sendable (Int) throws -> any YCSBDatabase,
        progress: (@Sendable (Int, Int) -> Void)? = nil
    ) throws -> RunSummary {
        return try execute(phase: "load", workload: workload, threads: threads, connect: connect, progress: progress) {
            thread, chooser, db, recorder, stop in
            var n = Int64(thread)
            while n < workload.recordCount && !stop() {
                let record = chooser.loadRecord(n)
                let t = now()
                do {
                    try db.insert(key: record.key, fields: record.fields)
                } catch {
                    recorder.errors[.insert, default: 0] += 1
                }
                recorder.record(.insert, began: t)
                n += Int64(threads)
            }
        }
    }

    /// Run phase: `operationCount` operations (or until `seconds` pass), drawn by the workload.
    /// - Parameter targetRate: operations per second over all threads (an open loop: each thread
    ///   issues on a fixed schedule and latency is measured from the scheduled start); nil runs a
    ///   closed loop as fast as the database answers.
    public static func run(
        workload: Workload, threads: Int, seconds: Double?, targetRate: Double? = nil,
        connect: @escaping @Sendable (Int) throws -> any YCSBDatabase,
        progress: (@Sendable (Int, Int) -> Void)? = nil
    ) throws -> RunSummary {
        let total = Atomic<Int>(0)
        let limit = workload.operationCount
        let deadline = seconds.map { now() + UInt64($0 * 1e9) }
        // Each thread's interval between intended starts, offset so threads interleave.
        let interval = targetRate.map { UInt64(Double(threads) / $0 * 1e9) }
        return try execute(phase: "run", workload: workload, threads: threads, connect: connect, progress: progress) {
            thread, chooser, db, recorder, stop in
            var intended = recorder.start &+ (interval.map { $0 * UInt64(thread) / UInt64(threads) } ?? 0)
            while !stop() {
                if total.wrappingAdd(1, ordering: .relaxed).oldValue >= limit { break }
                if let deadline, now() >= deadline { break }
                if let interval {
                    intended &+= interval
                    while now() < intended { usleep(UInt32(min(1_000, (intended - now()) / 1_000))) }
                }
                let (op, inserted) = chooser.next()
                let t = interval == nil ? now() : intended
                var found = true
                do {
                    switch op {
                    case .read(let key, let field): found = try db.read(key: key, field: field)
                    case .update(let key, let fields): try db.update(key: key, fields: fields)
                    case .insert(let key, let fields): try db.insert(key: key, fields: fields)
                    case .scan(let start, let count): _ = try db.scan(start: start, count: count)
                    case .readModifyWrite(let key, let fields):
                        found = try db.read(key: key, field: nil)
                        try db.update(key: key, fields: fields)
                    }
                    if let n = inserted { chooser.acknowledgeInsert(n) }
                } catch {
                    recorder.errors[op.kind, default: 0] += 1
                }
                if !found { recorder.notFound[op.kind, default: 0] += 1 }
                recorder.record(op.kind, began: t)
            }
        }
    }

    private static func execute(
        phase: String, workload: Workload, threads: Int, connect: @escaping @Sendable (Int) throws -> any YCSBDatabase,
        progress: (@Sendable (Int, Int) -> Void)?,
        body: @escaping @Sendable (Int, inout OperationChooser, any YCSBDatabase, inout Recorder, () -> Bool) -> Void
    ) throws -> RunSummary {
        final class Shared: @unchecked Sendable {
            var recorders: [Recorder?]
            var failure: (any Error)?
            let lock = Mutex<Void>(())
            let live = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1)
            init(_ n: Int) {
                recorders = Array(repeating: nil, count: n)
                live.initialize(to: Atomic(0))
            }
            deinit {
                live.deinitialize(count: 1)
                live.deallocate()
            }
        }
        let shared = Shared(threads)
        let done = Atomic<Int>(0)
        let stopFlag = Atomic<Bool>(false)
        let keySpace = KeySpace(initialRecords: workload.recordCount)
        let start = now()
        var handles: [pthread_t] = []
        for t in 0..<threads {
            let work: @Sendable () -> Void = {
                var recorder = Recorder(start: start, live: UnsafePointer(shared.live))
                do {
                    let db = try connect(t)
                    var chooser = OperationChooser(workload: workload, keySpace: keySpace, seed: UInt64(t + 1) &* 0x9E37_79B9)
                    body(t, &chooser, db, &recorder) { stopFlag.load(ordering: .relaxed) }
                } catch {
                    shared.lock.withLock { _ in shared.failure = error }
                    stopFlag.store(true, ordering: .relaxed)
                }
                shared.lock.withLock { _ in shared.recorders[t] = recorder }
                done.add(1, ordering: .releasing)
            }
            handles.append(spawn(work))
        }
        // Per-second progress from the live counter; the series itself comes from completion times.
        var lastCount = 0
        var second = 0
        var nextTick = start + 1_000_000_000
        while done.load(ordering: .acquiring) < threads {
            usleep(10_000)
            if now() >= nextTick {
                second += 1
                nextTick += 1_000_000_000
                let count = shared.live.pointee.load(ordering: .relaxed)
                progress?(second, count - lastCount)
                lastCount = count
            }
        }
        for h in handles { pthread_join(h, nil) }
        if let failure = shared.failure { throw failure }
        let seconds = Double(now() - start) / 1e9
        let recorders = shared.recorders.compactMap { $0 }
        var series = [Int](repeating: 0, count: max(1, Int(seconds.rounded(.up))))
        for r in recorders {
            for (i, n) in r.perSecond.enumerated() { series[min(series.count - 1, i)] += n }
        }
        var summaries: [OperationSummary] = []
        for kind in Operation.Kind.allCases {
            var merged = Recorder.histogram()
            var errors = 0
            var notFound = 0
            for r in recorders {
                if let h = r.latencies[kind] { merged.add(h) }
                errors += r.errors[kind] ?? 0
                notFound += r.notFound[kind] ?? 0
            }
            guard merged.totalCount > 0 else { continue }
            func us(_ ns: UInt64) -> Double { Double(ns) / 1_000 }
            summaries.append(
                OperationSummary(
                    kind: kind, count: Int(merged.totalCount), errors: errors, notFound: notFound,
                    averageUs: merged.mean / 1_000, minUs: us(merged.min), maxUs: us(merged.max),
                    p50Us: us(merged.valueAtPercentile(50)), p95Us: us(merged.valueAtPercentile(95)),
                    p99Us: us(merged.valueAtPercentile(99)), p999Us: us(merged.valueAtPercentile(99.9))))
        }
        return RunSummary(
            phase: phase, workload: workload.name, threads: threads, seconds: seconds,
            operations: summaries.reduce(0) { $0 + $1.count }, perOperation: summaries, perSecond: series)
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    private static func spawn(_ body: @escaping @Sendable () -> Void) -> pthread_t {
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
