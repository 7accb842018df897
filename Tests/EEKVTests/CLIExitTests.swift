import EEKV
import Foundation
import Testing

/// Runs the `eekv` binary (debug build) to completion; returns how it ended.
private func runEEKV(_ arguments: [String]) throws -> (reason: Process.TerminationReason, status: Int32) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: FileManager.default.currentDirectoryPath + "/.build/debug/eekv")
    process.arguments = arguments
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    return (process.terminationReason, process.terminationStatus)
}

@Suite("The eekv command's exits", .serialized)
struct CLIExitTests {
    /// A client whose certificate the node refuses exits with its documented code. It used to die
    /// of SIGSEGV about one run in four: exit() ran OpenSSL's atexit cleanup, which freed
    /// OpenSSL's global locks while the session-management thread that had just reported the
    /// refused handshake was still tearing down its own OpenSSL state.
    @Test("a refused certificate exits with code 3, never a signal")
    func refusedCertificateExitsCleanly() throws {
        let dir = TempDirectory()
        let tcp = freePorts(1)[0]
        let udp = freePorts(1)[0]
        let config = """
            [cluster]
            crypto = "adaptive"
            durability = "nosync"
            [tls]
            dir = "certs"
            client = "client-0"
            [[node]]
            id = 0
            host = "127.0.0.1"
            port = \(tcp)
            udp_port = \(udp)
            threads = 1
            """
        // The node's cluster and a foreign one: same layout, different CAs.
        for cluster in ["node", "foreign"] {
            try FileManager.default.createDirectory(atPath: "\(dir.path)/\(cluster)", withIntermediateDirectories: true)
            try config.write(toFile: "\(dir.path)/\(cluster)/cluster.toml", atomically: true, encoding: .utf8)
            let made = try runEEKV(["certs", "init", "--dir", "\(dir.path)/\(cluster)/certs", "--nodes", "1", "--clients", "1"])
            #expect(made.reason == .exit && made.status == 0)
        }
        let server = try ServerProcess(config: "\(dir.path)/node/cluster.toml", data: dir.path + "/data")
        defer { server.terminate() }
        // Serving once its own client's get of a missing key says "not found" (exit 1).
        var serving = false
        for _ in 0..<100 where !serving {
            let probe = try runEEKV(["get", "probe", "--config", "\(dir.path)/node/cluster.toml"])
            serving = probe.reason == .exit && probe.status == 1
            if !serving { usleep(100_000) }
        }
        try #require(serving, "the node did not start")
        var signals = 0
        for _ in 0..<20 {
            let run = try runEEKV(["get", "k", "--config", "\(dir.path)/foreign/cluster.toml"])
            if run.reason == .uncaughtSignal { signals += 1 }
            #expect(run.reason != .exit || run.status == 3, "exit status \(run.status)")
        }
        #expect(signals == 0, "\(signals) of 20 runs ended by a signal")
    }
}
