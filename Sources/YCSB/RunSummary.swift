/// Latency statistics of one operation type, in microseconds: of its completed operations (found
/// or not), or, in a `failed` entry, of its failed ones (YCSB's `READ-FAILED` and so on).
public struct OperationSummary: Sendable {
    public var kind: Operation.Kind
    /// True for the entry of the kind's failed operations.
    public var failed: Bool
    /// Operations whose latencies these are.
    public var count: Int
    /// Failed operations of the kind (on the kind's own entry; 0 on its failed entry, so a sum of
    /// `errors` over the entries counts each failure once).
    public var errors: Int
    /// What the first failed operation of this type reported.
    public var firstError: String?
    public var notFound: Int
    public var averageUs: Double
    public var minUs: Double
    public var maxUs: Double
    public var p50Us: Double
    public var p95Us: Double
    public var p99Us: Double
    public var p999Us: Double
    /// The latency distribution: (percentile, latency in µs) from p0 to p100, for plotting.
    public var cdf: [CDFPoint]

    public init(
        kind: Operation.Kind, count: Int, errors: Int, firstError: String?, notFound: Int, averageUs: Double,
        minUs: Double, maxUs: Double, p50Us: Double, p95Us: Double, p99Us: Double, p999Us: Double, cdf: [CDFPoint],
        failed: Bool = false
    ) {
        self.kind = kind
        self.failed = failed
        self.count = count
        self.errors = errors
        self.firstError = firstError
        self.notFound = notFound
        self.averageUs = averageUs
        self.minUs = minUs
        self.maxUs = maxUs
        self.p50Us = p50Us
        self.p95Us = p95Us
        self.p99Us = p99Us
        self.p999Us = p999Us
        self.cdf = cdf
    }

    /// YCSB's name of the entry: `READ`, or `READ-FAILED` for the failed operations.
    public var name: String { failed ? kind.rawValue + "-FAILED" : kind.rawValue }
}

public struct CDFPoint: Sendable {
    public var percentile: Double
    public var us: Double
    public init(percentile: Double, us: Double) {
        self.percentile = percentile
        self.us = us
    }
}

/// The result of a load or run phase.
public struct RunSummary: Sendable {
    public var phase: String
    public var workload: String
    public var threads: Int
    public var seconds: Double
    /// Every operation, completed or failed (as YCSB's overall throughput counts them).
    public var operations: Int
    public var throughput: Double { seconds > 0 ? Double(operations) / seconds : 0 }
    public var perOperation: [OperationSummary]
    /// Operations completed in each second of the run.
    public var perSecond: [Int]

    public init(
        phase: String, workload: String, threads: Int, seconds: Double, perOperation: [OperationSummary], perSecond: [Int]
    ) {
        self.phase = phase
        self.workload = workload
        self.threads = threads
        self.seconds = seconds
        operations = perOperation.reduce(0) { $0 + $1.count }
        self.perOperation = perOperation
        self.perSecond = perSecond
    }
}
