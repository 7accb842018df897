/// Where and how a summary was run, for its JSON.
public struct RunSetting: Sendable {
    public var db: String
    public var crypto: String
    public var nodes: Int
    public var mtu: Int?
    public var outstanding: Int
    public init(db: String, crypto: String, nodes: Int, mtu: Int?, outstanding: Int) {
        self.db = db
        self.crypto = crypto
        self.nodes = nodes
        self.mtu = mtu
        self.outstanding = outstanding
    }
}

extension RunSummary {
    /// `--json`: the summary, an entry per operation type (and per failed type, named
    /// `READ-FAILED` and so on; with the first error's message if there was one), and the per-second
    /// series. Every string is escaped. `transport` is a JSON object to add
    /// under that name.
    public func json(workload: Workload, setting: RunSetting, transport: String? = nil) -> String {
        let ops = perOperation.map { o in
            "{\"operation\":\(jsonQuoted(o.name)),\"count\":\(o.count),\"errors\":\(o.errors),\"not_found\":\(o.notFound),"
                + "\"avg_us\":\(decimalText(o.averageUs, 2)),\"min_us\":\(decimalText(o.minUs, 2)),\"max_us\":\(decimalText(o.maxUs, 2)),"
                + "\"p50_us\":\(decimalText(o.p50Us, 2)),\"p95_us\":\(decimalText(o.p95Us, 2)),\"p99_us\":\(decimalText(o.p99Us, 2)),"
                + "\"p999_us\":\(decimalText(o.p999Us, 2))"
                + (o.firstError.map { ",\"first_error\":\(jsonQuoted($0))" } ?? "") + "}"
        }
        return "{\"phase\":\(jsonQuoted(phase)),\"workload\":\(jsonQuoted(self.workload)),"
            + "\"db\":\(jsonQuoted(setting.db)),\"crypto\":\(jsonQuoted(setting.crypto)),"
            + "\"records\":\(workload.recordCount),\"fieldcount\":\(workload.fieldCount),\"fieldlength\":\(workload.fieldLength),"
            + "\"nodes\":\(setting.nodes),\(setting.mtu.map { "\"mtu\":\($0)," } ?? "")\"threads\":\(threads),"
            + "\"outstanding\":\(setting.outstanding),\"seconds\":\(decimalText(seconds, 3)),"
            + "\"operations\":\(operations),\"throughput\":\(decimalText(throughput, 1)),"
            + "\"per_operation\":[\(ops.joined(separator: ","))],"
            + "\"per_second\":[\(perSecond.map(String.init).joined(separator: ","))]"
            + (transport.map { ",\"transport\":\($0)" } ?? "") + "}\n"
    }
}
