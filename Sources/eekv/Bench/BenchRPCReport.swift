import EERPC
import YCSB

/// The figures of one `bench rpc` run, as a table for people or JSON for machines.
struct BenchRPCReport {
    var size: Int
    var sessions: Int
    var window: Int
    var mtu: Int
    var crypto: CryptoMode
    var seconds: Double
    var ours: Measurement
    var reference: Measurement?
    var failures: Int
    var retransmissions: UInt64
    /// CPU time of the server's dispatch thread per RPC.
    var dispatchNsPerRpc: Double
    /// Wall time per RPC of the server loop's iterations that had work (idle polling excluded).
    var dispatchBusyNsPerRpc: Double
    /// Of that, wall time inside the transport's system calls.
    var dispatchTransportNsPerRpc: Double
    /// The plaintext (`none`) figures of the same run, when measured.
    var plaintext: Measurement?

    var rpsRatio: Double? { reference.map { $0.rate > 0 ? ours.rate / $0.rate : 0 } }
    var p50Ratio: Double? { reference.map { $0.p50 > 0 ? ours.p50 / $0.p50 : 0 } }

    var json: String {
        var fields: [(String, String)] = [
            ("size", "\(size)"), ("crypto", "\"\(crypto.name)\""), ("transport", "\"udp\""), ("sessions", "\(sessions)"),
            ("window", "\(window)"), ("mtu", "\(mtu)"), ("seconds", fixed(seconds, 3)),
            ("rpcs", "\(ours.recorder.completed)"), ("rps", fixed(ours.rate, 0)), ("p50_us", fixed(ours.p50, 2)),
            ("p99_us", fixed(ours.p99, 2)), ("retransmissions", "\(retransmissions)"), ("failures", "\(failures)"),
            ("dispatch_ns_per_rpc", fixed(dispatchNsPerRpc, 1)),
            ("dispatch_busy_ns_per_rpc", fixed(dispatchBusyNsPerRpc, 1)),
            ("dispatch_transport_ns_per_rpc", fixed(dispatchTransportNsPerRpc, 1)),
            ("dispatch_runtime_ns_per_rpc", fixed(dispatchBusyNsPerRpc - dispatchTransportNsPerRpc, 1)),
        ]
        if let plaintext, crypto != .none, plaintext.rate > 0 {
            fields.append(("rps_ratio_vs_none", fixed(ours.rate / plaintext.rate, 3)))
            fields.append(("p50_added_us", fixed(ours.p50 - plaintext.p50, 2)))
        }
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
        let title: String =
            "eeRPC bench rpc — \(size) B echo, \(sessions) session(s) × \(window) in flight, UDP loopback, "
            + "MTU \(mtu), crypto \(crypto.name)"
        let heading: String = pad("", 22) + pad("RPC/s", 14) + pad("p50 µs", 10) + pad("p99 µs", 10)
        let row: String = pad("eeRPC", 22) + pad(fixed(ours.rate, 0), 14) + pad(fixed(ours.p50, 2), 10)
        var lines: [String] = [title, "", heading, row + pad(fixed(ours.p99, 2), 10)]
        if let reference, let rpsRatio, let p50Ratio {
            lines.append(
                pad("raw UDP echo", 22) + pad(fixed(reference.rate, 0), 14) + pad(fixed(reference.p50, 2), 10)
                    + pad(fixed(reference.p99, 2), 10))
            lines.append(pad("eeRPC / echo", 22) + pad(fixed(rpsRatio, 3), 14) + pad(fixed(p50Ratio, 3), 10))
        }
        if let plaintext, crypto != .none, plaintext.rate > 0 {
            lines.append(
                pad("vs crypto none", 22) + pad(fixed(ours.rate / plaintext.rate, 3), 14)
                    + pad("+" + fixed(ours.p50 - plaintext.p50, 2), 10))
        }
        lines.append("")
        lines.append(
            "\(ours.recorder.completed) RPCs in \(fixed(seconds, 2)) s measured, \(retransmissions) retransmissions, "
                + "\(failures) failures; server dispatch thread per RPC: \(fixed(dispatchNsPerRpc, 0)) ns CPU, "
                + "\(fixed(dispatchBusyNsPerRpc, 0)) ns in iterations with work, of which "
                + "\(fixed(dispatchTransportNsPerRpc, 0)) ns in the transport's system calls and "
                + "\(fixed(dispatchBusyNsPerRpc - dispatchTransportNsPerRpc, 0)) ns in the runtime (protocol, crypto, handler)")
        return lines.joined(separator: "\n")
    }
}

/// `x` with `digits` decimals (the YCSB module's formatter, shared by every report).
func fixed(_ x: Double, _ digits: Int) -> String { decimalText(x, digits) }

func pad(_ s: String, _ width: Int) -> String {
    s.count >= width ? s + " " : s + String(repeating: " ", count: width - s.count)
}
