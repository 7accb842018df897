/// The figures of one `bench rpc` run, as a table for people or JSON for machines.
struct BenchRPCReport {
    var size: Int
    var sessions: Int
    var window: Int
    var mtu: Int
    var seconds: Double
    var ours: Measurement
    var reference: Measurement?
    var failures: Int
    var retransmissions: UInt64

    var rpsRatio: Double? { reference.map { $0.rate > 0 ? ours.rate / $0.rate : 0 } }
    var p50Ratio: Double? { reference.map { $0.p50 > 0 ? ours.p50 / $0.p50 : 0 } }

    var json: String {
        var fields: [(String, String)] = [
            ("size", "\(size)"), ("crypto", "\"none\""), ("transport", "\"udp\""), ("sessions", "\(sessions)"),
            ("window", "\(window)"), ("mtu", "\(mtu)"), ("seconds", fixed(seconds, 3)),
            ("rpcs", "\(ours.recorder.completed)"), ("rps", fixed(ours.rate, 0)), ("p50_us", fixed(ours.p50, 2)),
            ("p99_us", fixed(ours.p99, 2)), ("retransmissions", "\(retransmissions)"), ("failures", "\(failures)"),
        ]
        if let reference, let rpsRatio, let p50Ratio {
            fields.append(
                ("reference",
                 "{\"kind\":\"raw_udp_echo\",\"rps\":\(fixed(reference.rate, 0)),\"p50_us\":\(fixed(reference.p50, 2)),\"p99_us\":\(fixed(reference.p99, 2))}"))
            fields.append(("rps_ratio", fixed(rpsRatio, 3)))
            fields.append(("p50_ratio", fixed(p50Ratio, 3)))
        }
        return "{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
    }

    var table: String {
        var lines = [
            "eeRPC bench rpc — \(size) B echo, \(sessions) session(s) × \(window) in flight, UDP loopback, MTU \(mtu), crypto none",
            "",
            pad("", 22) + pad("RPC/s", 14) + pad("p50 µs", 10) + pad("p99 µs", 10),
            pad("eeRPC", 22) + pad(fixed(ours.rate, 0), 14) + pad(fixed(ours.p50, 2), 10) + pad(fixed(ours.p99, 2), 10),
        ]
        if let reference, let rpsRatio, let p50Ratio {
            lines.append(
                pad("raw UDP echo", 22) + pad(fixed(reference.rate, 0), 14) + pad(fixed(reference.p50, 2), 10)
                    + pad(fixed(reference.p99, 2), 10))
            lines.append(pad("eeRPC / echo", 22) + pad(fixed(rpsRatio, 3), 14) + pad(fixed(p50Ratio, 3), 10))
        }
        lines.append("")
        lines.append(
            "\(ours.recorder.completed) RPCs in \(fixed(seconds, 2)) s measured, \(retransmissions) retransmissions, \(failures) failures")
        return lines.joined(separator: "\n")
    }
}

func fixed(_ x: Double, _ digits: Int) -> String {
    guard x.isFinite else { return "0" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let r = (x * scale).rounded() / scale
    if digits == 0 { return String(Int64(r)) }
    var s = String(r)
    if let dot = s.firstIndex(of: ".") {
        let decimals = s.distance(from: dot, to: s.endIndex) - 1
        if decimals < digits { s += String(repeating: "0", count: digits - decimals) }
    } else {
        s += "." + String(repeating: "0", count: digits)
    }
    return s
}

func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count)
}
