extension RunSummary {
    /// YCSB's summary lines (`[OVERALL], Throughput(ops/sec), …`, then per operation type, each
    /// failed type as its own `[READ-FAILED]` block with the same latency fields).
    public var ycsbLines: [String] {
        var lines = [
            "[OVERALL], Phase, \(phase) (workload \(workload), \(threads) threads)",
            "[OVERALL], RunTime(ms), \(decimalText(seconds * 1_000, 0))",
            "[OVERALL], Throughput(ops/sec), \(decimalText(throughput, 1))",
        ]
        for o in perOperation {
            let name = o.name
            lines += [
                "[\(name)], Operations, \(o.count)",
                "[\(name)], AverageLatency(us), \(decimalText(o.averageUs, 1))",
                "[\(name)], MinLatency(us), \(decimalText(o.minUs, 1))",
                "[\(name)], MaxLatency(us), \(decimalText(o.maxUs, 1))",
                "[\(name)], 50thPercentileLatency(us), \(decimalText(o.p50Us, 1))",
                "[\(name)], 95thPercentileLatency(us), \(decimalText(o.p95Us, 1))",
                "[\(name)], 99thPercentileLatency(us), \(decimalText(o.p99Us, 1))",
                "[\(name)], 99.9thPercentileLatency(us), \(decimalText(o.p999Us, 1))",
            ]
            // The return codes are the kind's own entry's (its count is of completed operations).
            if o.failed { continue }
            lines.append("[\(name)], Return=OK, \(o.count - o.notFound)")
            if o.notFound > 0 { lines.append("[\(name)], Return=NOT_FOUND, \(o.notFound)") }
            if o.errors > 0 { lines.append("[\(name)], Return=ERROR, \(o.errors) (first: \(o.firstError ?? "?"))") }
        }
        return lines
    }
}
