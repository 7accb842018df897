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

    @Option(
        help: ArgumentHelp(
            "Comma-separated crypto modes to measure in one run: none, inline, offload, adaptive, adaptive:BYTES.",
            discussion: "With this option --json prints {\"results\":[...]}, one object per mode."))
    var crypto: String? = nil

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
        let modeNames = (crypto ?? "none").split(separator: ",").map(String.init)
        var modes: [CryptoMode] = []
        for name in modeNames {
            guard let mode = CryptoMode(name: name) else { throw ValidationError("unknown crypto mode '\(name)'") }
            modes.append(mode)
        }
        // Encrypted modes need cluster credentials for the TLS handshake: made fresh for the run.
        let credentials = modes.contains { $0.encrypts } ? try BenchCredentials() : nil
        let warmup: UInt64 = 300_000_000
        let half = UInt64(seconds * 1e9 / 2)
        var results = [ModeResult](repeating: ModeResult(), count: modes.count)
        var reference = Measurement()
        func measure(_ i: Int) throws {
            let r = try RPCBenchRunner.measure(
                size: size, sessions: sessions, window: window, mtu: mtu, warmupNs: warmup, measureNs: half,
                crypto: modes[i], tls: credentials?.tls)
            results[i].measurement.merge(r.measurement)
            results[i].failures += r.failures
            results[i].retransmissions += r.clientStats.retransmissions
            results[i].serverCPUNs += r.serverCPUNs
            results[i].serverBusyNs += r.serverBusyNs
            results[i].serverTransportNs += r.serverTransportNs
        }
        func measureReference() {
            reference.merge(
                RawUDPEcho.measure(size: size, window: sessions * window, warmupNs: warmup, measureNs: half))
        }
        // Every mode (and the echo) runs twice for half the time, in order and then in reverse,
        // so drift on a shared machine affects them all alike.
        for i in modes.indices { try measure(i) }
        if self.reference {
            measureReference()
            measureReference()
        }
        for i in modes.indices.reversed() { try measure(i) }
        let reports = modes.indices.map { i in
            BenchRPCReport(
                size: size, sessions: sessions, window: window, mtu: mtu, crypto: modes[i],
                seconds: results[i].measurement.seconds, ours: results[i].measurement,
                reference: self.reference ? reference : nil, failures: results[i].failures,
                retransmissions: results[i].retransmissions,
                dispatchNsPerRpc: results[i].measurement.recorder.completed > 0
                    ? Double(results[i].serverCPUNs) / Double(results[i].measurement.recorder.completed) : 0,
                dispatchBusyNsPerRpc: results[i].measurement.recorder.completed > 0
                    ? Double(results[i].serverBusyNs) / Double(results[i].measurement.recorder.completed) : 0,
                dispatchTransportNsPerRpc: results[i].measurement.recorder.completed > 0
                    ? Double(results[i].serverTransportNs) / Double(results[i].measurement.recorder.completed) : 0,
                plaintext: modes.firstIndex(of: .none).map { results[$0].measurement })
        }
        if json {
            if crypto == nil {
                print(reports[0].json)
            } else {
                print("{\"results\":[" + reports.map { $0.json }.joined(separator: ",") + "]}")
            }
        } else {
            print(reports.map { $0.table }.joined(separator: "\n\n"))
        }
        if results.contains(where: { $0.failures > 0 }) { throw ExitCode.failure }
    }

    struct ModeResult {
        var measurement = Measurement()
        var failures = 0
        var retransmissions: UInt64 = 0
        var serverCPUNs: UInt64 = 0
        var serverBusyNs: UInt64 = 0
        var serverTransportNs: UInt64 = 0
    }
}
