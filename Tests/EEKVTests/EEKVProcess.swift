import Foundation

/// The `eekv` binary of the debug build, set up to run with `arguments` (not started), its
/// output discarded. Tests run it as an operator would.
func eekvProcess(_ arguments: [String]) throws -> Process {
    let binary = FileManager.default.currentDirectoryPath + "/.build/debug/eekv"
    guard FileManager.default.isExecutableFile(atPath: binary) else {
        throw CocoaError(.fileNoSuchFile, userInfo: [NSLocalizedDescriptionKey: "\(binary) is missing: build it first (make test does)"])
    }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: binary)
    process.arguments = arguments
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    return process
}

/// Runs `eekv` to completion; returns how it ended.
func runEEKV(_ arguments: [String]) throws -> (reason: Process.TerminationReason, status: Int32) {
    let process = try eekvProcess(arguments)
    try process.run()
    process.waitUntilExit()
    return (process.terminationReason, process.terminationStatus)
}

/// Runs `eekv server` as a child process.
final class ServerProcess: @unchecked Sendable {
    let process: Process
    init(config: String, data: String) throws {
        process = try eekvProcess(["server", "--config", config, "--node", "0", "--data", data])
        try process.run()
    }
    func kill() {
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
    func terminate() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }
}

/// Whether the node of `config` serves within 10 s: its client's get of a missing key says
/// "not found" (exit 1).
func nodeServes(config: String) throws -> Bool {
    for _ in 0..<100 {
        if try runEEKV(["get", "probe", "--config", config]) == (.exit, 1) { return true }
        usleep(100_000)
    }
    return false
}

/// A plaintext one-node cluster configured in `dir` (`dir/cluster.toml`), its node running in a
/// process of its own and serving; the caller terminates it.
func startPlaintextNode(in dir: TempDirectory) throws -> (config: String, server: ServerProcess) {
    struct NodeDidNotStart: Error {}
    let config = dir.path + "/cluster.toml"
    try oneNodeConfig(crypto: "none", durability: "nosync").write(toFile: config, atomically: true, encoding: .utf8)
    let server = try ServerProcess(config: config, data: dir.path + "/data")
    guard try nodeServes(config: config) else {
        server.terminate()
        throw NodeDidNotStart()
    }
    return (config, server)
}

/// A cluster configuration of one node on free loopback ports; with `tls`, certificates from
/// `certs/` beside it and client `client-0`.
func oneNodeConfig(crypto: String, durability: String, tls: Bool = false) -> String {
    let tcp = freePorts(1)[0]
    let udp = freePorts(1)[0]
    let tlsSection = tls ? "[tls]\ndir = \"certs\"\nclient = \"client-0\"\n" : ""
    return """
        [cluster]
        crypto = "\(crypto)"
        durability = "\(durability)"
        \(tlsSection)[[node]]
        id = 0
        host = "127.0.0.1"
        port = \(tcp)
        udp_port = \(udp)
        threads = 1
        """
}

/// Runs `eekv` to completion; returns its exit status and what it printed on standard output.
func runEEKVCapturing(_ arguments: [String]) throws -> (status: Int32, output: String) {
    let run = try runEEKVPiped(arguments, standardError: false)
    return (run.status, run.text)
}

/// Runs `eekv` to completion; returns its exit status and the lines it printed on standard error
/// (log lines, which start with a timestamp, left out).
func runEEKVErrors(_ arguments: [String]) throws -> (status: Int32, lines: [String]) {
    let run = try runEEKVPiped(arguments, standardError: true)
    let lines = run.text.split(separator: "\n").map(String.init)
    return (run.status, lines.filter { !($0.first?.isNumber ?? false) })
}

/// Runs `eekv` to completion with standard output, or standard error, read from a pipe.
private func runEEKVPiped(_ arguments: [String], standardError: Bool) throws -> (status: Int32, text: String) {
    let process = try eekvProcess(arguments)
    let pipe = Pipe()
    if standardError { process.standardError = pipe } else { process.standardOutput = pipe }
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}
