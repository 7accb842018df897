import ArgumentParser
import EERPC

struct BenchRPC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rpc",
        abstract: "RPC rate and round-trip latency of eeRPC over UDP loopback (client and server pinned, one process).",
        discussion: """
            With --reference, a raw recvmmsg/sendmmsg UDP echo with the same message size and the same \
            number of messages in flight is measured in the same run, and eeRPC's figures are reported \
            as ratios of it. The two alternate (eeRPC, echo, echo, eeRPC), each for half of --seconds, \
            so drift on a shared machine affects both alike.
            """
    )

    @Option(help: "Request and response size in bytes.")
    var size = 32

    @Option(help: "Measured seconds per side (after a warm-up).")
    var seconds = 5.0

    @Option(help: "Client sessions.")
    var sessions = 1

    @Option(help: "Requests in flight per session (beyond 8, requests wait in the session backlog).")
    var window = 8

    @Option(help: "UDP payload per packet, header included (up to 65507 on loopback).")
    var mtu = Wire.defaultMTU

    @Flag(help: "Also measure a raw UDP echo as the reference, and report ratios.")
    var reference = false

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    func validate() throws {
        guard size >= 0 && size <= Wire.maxMessageSize else { throw ValidationError("--size must be 0…\(Wire.maxMessageSize)") }
        guard seconds > 0 && seconds <= 3_600 else { throw ValidationError("--seconds must be in (0, 3600]") }
        guard sessions >= 1 && sessions <= 128 else { throw ValidationError("--sessions must be 1…128") }
        guard window >= 1 && window <= 1_024 else { throw ValidationError("--window must be 1…1024") }
        guard mtu >= Wire.minMTU && mtu <= Wire.maxMTU else { throw ValidationError("--mtu must be \(Wire.minMTU)…\(Wire.maxMTU)") }
    }

    func run() throws {
        let warmup: UInt64 = 300_000_000
        let half = UInt64(seconds * 1e9 / 2)
        var ours = Measurement()
        var reference = Measurement()
        var failures = 0
        var retransmissions: UInt64 = 0
        func measureOurs() throws {
            let r = try RPCBenchRunner.measure(
                size: size, sessions: sessions, window: window, mtu: mtu, warmupNs: warmup, measureNs: half)
            ours.merge(r.measurement)
            failures += r.failures
            retransmissions += r.clientStats.retransmissions
        }
        func measureReference() {
            reference.merge(
                RawUDPEcho.measure(size: size, window: sessions * window, warmupNs: warmup, measureNs: half))
        }
        if self.reference {
            try measureOurs()
            measureReference()
            measureReference()
            try measureOurs()
        } else {
            try measureOurs()
            try measureOurs()
        }
        let report = BenchRPCReport(
            size: size, sessions: sessions, window: window, mtu: mtu, seconds: ours.seconds, ours: ours,
            reference: self.reference ? reference : nil, failures: failures, retransmissions: retransmissions)
        print(json ? report.json : report.table)
        if failures > 0 { throw ExitCode.failure }
    }
}
