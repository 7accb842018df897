import EEKV
import EERPC
import Foundation
import Testing

@Suite("The eekv command as an operator runs it", .serialized)
struct CLIExitTests {
    /// A client whose certificate the node refuses exits with its documented code. It used to die
    /// of SIGSEGV about one run in four: exit() ran OpenSSL's atexit cleanup, which freed
    /// OpenSSL's global locks while the session-management thread that had just reported the
    /// refused handshake was still tearing down its own OpenSSL state.
    @Test("a refused certificate exits with code 3, never a signal")
    func refusedCertificateExitsCleanly() throws {
        let dir = TempDirectory()
        let config = oneNodeConfig(crypto: "adaptive", durability: "nosync", tls: true)
        // The node's cluster and a foreign one: same layout, different CAs.
        for cluster in ["node", "foreign"] {
            try FileManager.default.createDirectory(atPath: "\(dir.path)/\(cluster)", withIntermediateDirectories: true)
            try config.write(toFile: "\(dir.path)/\(cluster)/cluster.toml", atomically: true, encoding: .utf8)
            let made = try runEEKV(["certs", "init", "--dir", "\(dir.path)/\(cluster)/certs", "--nodes", "1", "--clients", "1"])
            #expect(made.reason == .exit && made.status == 0)
        }
        let server = try ServerProcess(config: "\(dir.path)/node/cluster.toml", data: dir.path + "/data")
        defer { server.terminate() }
        try #require(try nodeServes(config: "\(dir.path)/node/cluster.toml"), "the node did not start")
        var signals = 0
        for _ in 0..<20 {
            let run = try runEEKV(["get", "k", "--config", "\(dir.path)/foreign/cluster.toml"])
            if run.reason == .uncaughtSignal { signals += 1 }
            #expect(run.reason != .exit || run.status == 3, "exit status \(run.status)")
        }
        #expect(signals == 0, "\(signals) of 20 runs ended by a signal")
    }

    /// `--help` printed `eekv: CommandError(…)` once the command's run got its own error handling.
    @Test("--help prints the usage and exits 0, for the tool and for a subcommand")
    func helpPrintsUsage() throws {
        for arguments in [["--help"], ["get", "--help"], ["bench", "rpc", "--help"], ["help", "ycsb"]] {
            let run = try runEEKVCapturing(arguments)
            #expect(run.status == 0, "\(arguments): \(run)")
            #expect(run.output.contains("USAGE:"), "\(arguments): \(run.output)")
            #expect(!run.output.contains("CommandError"), "\(arguments)")
        }
    }

    /// `certs init` over a live cluster's CA would lock every node and client out.
    @Test("certs init refuses to replace a CA unless forced, and writes keys 0600 even over old files")
    func certsInitKeepsTheCA() throws {
        let dir = TempDirectory()
        let certs = dir.path + "/certs"
        let args = ["certs", "init", "--dir", certs, "--nodes", "1", "--clients", "1"]
        #expect(try runEEKV(args).status == 0)
        let ca = try String(contentsOfFile: certs + "/ca.pem", encoding: .utf8)
        let again = try runEEKVErrors(args)
        #expect(again.status == 2 && again.lines.count == 1, "\(again)")
        #expect(again.lines.first?.contains("already has a cluster CA") == true, "\(again)")
        #expect(try String(contentsOfFile: certs + "/ca.pem", encoding: .utf8) == ca)
        #expect(chmod(certs + "/node-0.key", 0o644) == 0)
        #expect(try runEEKV(args + ["--force"]).status == 0)
        #expect(try String(contentsOfFile: certs + "/ca.pem", encoding: .utf8) != ca)
        var info = stat()
        #expect(stat(certs + "/node-0.key", &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
    }

    /// An operator starting a node sees why it cannot start on one line, with the documented
    /// code: 2 for what the command or the config gets wrong, 3 for the machine (a port in use).
    @Test("a node that cannot start says why on one line: exit 2 for the config, 3 for a port in use")
    func serverStartFailures() throws {
        let dir = TempDirectory()
        let config = dir.path + "/cluster.toml"
        try oneNodeConfig(crypto: "none", durability: "nosync").write(toFile: config, atomically: true, encoding: .utf8)
        let missing = try runEEKVErrors(["server", "--config", dir.path + "/nope.toml", "--node", "0"])
        #expect(missing.status == 2 && missing.lines.count == 1, "\(missing)")
        #expect(missing.lines.first?.contains("cannot read the cluster config") == true, "\(missing)")
        let unknown = try runEEKVErrors(["server", "--config", config, "--node", "5"])
        #expect(unknown.status == 2 && unknown.lines.count == 1, "\(unknown)")
        #expect(unknown.lines.first?.contains("node 5 is not in") == true, "\(unknown)")
        // The data directory's parents are made as needed.
        let server = try ServerProcess(config: config, data: dir.path + "/deep/er/node-0")
        defer { server.terminate() }
        try #require(try nodeServes(config: config), "the node did not start")
        let second = try runEEKVErrors(["server", "--config", config, "--node", "0", "--data", dir.path + "/other"])
        #expect(second.status == 3 && second.lines.count == 1, "\(second)")
        #expect(second.lines.first?.contains("Address already in use") == true, "\(second)")
    }

    /// `eekv merge` and `eekv fields` as an operator uses them, against a node in its own process.
    @Test("merge sets fields, fields prints them, and a plain value is refused with exit 2")
    func mergeAndFields() throws {
        let dir = TempDirectory()
        let (config, server) = try startPlaintextNode(in: dir)
        defer { server.terminate() }
        #expect(try runEEKVCapturing(["merge", "user:1", "2=bob", "0=id-1", "--config", config]).status == 0)
        #expect(try runEEKVCapturing(["merge", "user:1", "2=robert", "5=", "--config", config]).status == 0)
        #expect(try runEEKVCapturing(["fields", "user:1", "--config", config]) == (0, "0\tid-1\n2\trobert\n5\t\n"))
        #expect(
            try runEEKVCapturing(["fields", "user:1", "--json", "--config", config])
                == (0, "{\"0\":\"id-1\",\"2\":\"robert\",\"5\":\"\"}\n"))
        #expect(try runEEKV(["put", "plain", "text", "--config", config]) == (.exit, 0))
        #expect(try runEEKV(["merge", "plain", "1=x", "--config", config]) == (.exit, 2))
        #expect(try runEEKV(["fields", "plain", "--config", config]) == (.exit, 2))
        #expect(try runEEKV(["merge", "user:1", "x=1", "--config", config]) == (.exit, 2))
        #expect(try runEEKV(["fields", "nobody", "--config", config]) == (.exit, 1))
    }

    /// Every error exit says why on standard error; mget's "not found" printed nothing there.
    @Test("mget names the keys it did not find, ycsb refuses a run with no end and warns of unused properties, a misrouting config exits 2")
    func mgetAndYCSBSayWhy() throws {
        let dir = TempDirectory()
        let (config, server) = try startPlaintextNode(in: dir)
        defer { server.terminate() }
        #expect(try runEEKV(["put", "a", "1", "--config", config]) == (.exit, 0))
        #expect(try runEEKVCapturing(["mget", "a", "--config", config]) == (0, "1\n"))
        let missing = try runEEKVErrors(["mget", "a", "nope", "gone", "--config", config])
        #expect(missing.status == 1 && missing.lines.contains("eekv: 2 of 3 keys not found: nope, gone"), "\(missing)")
        // operationcount 0 is YCSB's "no count limit": without a time limit the run would not end.
        let unbounded = try runEEKVErrors(["ycsb", "run", "--workload", "c", "--records", "10", "--operations", "0", "--config", config])
        #expect(unbounded.status == 2 && unbounded.lines.contains { $0.contains("runs until a time limit") }, "\(unbounded)")
        let warned = try runEEKVErrors([
            "ycsb", "load", "--workload", "c", "--records", "10", "-p", "histogram.buckets=1000", "--config", config,
        ])
        #expect(warned.status == 0, "\(warned)")
        #expect(warned.lines.contains("eekv ycsb: warning: ignoring properties this generator does not use: histogram.buckets"), "\(warned)")
        // A config that routes keys elsewhere than the node's own does is the user's to fix: exit 2.
        // The node's config gives half the slots to a second node (never started, elsewhere).
        let text = try String(contentsOfFile: config, encoding: .utf8)
        let halved = dir.path + "/halved.toml"
        try (text + "\nslots = [0, 8191]\n[[node]]\nid = 1\nhost = \"127.0.0.2\"\nport = 9\nudp_port = 9\nslots = [8192, 16383]\n")
            .write(toFile: halved, atomically: true, encoding: .utf8)
        server.terminate()
        let narrowed = try ServerProcess(config: halved, data: dir.path + "/data")
        defer { narrowed.terminate() }
        try #require(try nodeServes(config: halved), "the node did not start on the halved config")
        let key = try #require((0..<100).map { "k\($0)" }.first { HashSlot.of(Array($0.utf8)) >= 8_192 })
        let misrouted = try runEEKVErrors(["put", key, "v", "--config", config])
        #expect(misrouted.status == 2 && misrouted.lines.contains { $0.hasPrefix("eekv: wrong node: slot") }, "\(misrouted)")
    }

    /// 64 KiB records through the real client and node, encrypted: each response's packets arrive
    /// as coalesced buffers (UDP GRO), which the YCSB report counts, and every read succeeds.
    @Test("ycsb reads of 64 KiB records from an encrypted node arrive as coalesced receives")
    func largeReadsArriveCoalesced() throws {
        let dir = TempDirectory()
        let config = dir.path + "/cluster.toml"
        try oneNodeConfig(crypto: "adaptive", durability: "nosync", tls: true).write(
            toFile: config, atomically: true, encoding: .utf8)
        #expect(try runEEKV(["certs", "init", "--dir", dir.path + "/certs", "--nodes", "1", "--clients", "1"]).status == 0)
        let server = try ServerProcess(config: config, data: dir.path + "/data")
        defer { server.terminate() }
        try #require(try nodeServes(config: config), "the node did not start")
        let shape = ["--records", "40", "-p", "fieldcount=1", "-p", "fieldlength=65536", "--config", config]
        #expect(try runEEKVCapturing(["ycsb", "load", "--workload", "c"] + shape).status == 0)
        let run = try runEEKVCapturing(["ycsb", "run", "--workload", "c", "--operations", "200"] + shape)
        #expect(run.status == 0, "\(run.output)")
        #expect(run.output.contains("[READ], Return=OK, 200"), "\(run.output)")
        let coalesced = run.output.split(separator: "\n").first { $0.hasPrefix("[TRANSPORT], CoalescedReceives, ") }
            .flatMap { Int($0.split(separator: " ").last!) }
        // 200 responses of 46 packets: all but the first packet of each come in runs.
        #expect((coalesced ?? 0) >= 200, "\(run.output)")
    }

    /// The operator's override of the AES-GCM backend reaches every eeRPC process; an unknown name
    /// or one this CPU cannot run leaves the default.
    @Test("EERPC_AEAD_BACKEND picks the backend")
    func backendOverride() throws {
        func preferred(_ value: String?) throws -> String {
            let process = try eekvProcess(["bench", "aead", "--size", "16", "--seconds", "0.01", "--json"])
            var environment = ProcessInfo.processInfo.environment
            environment["EERPC_AEAD_BACKEND"] = value
            process.environment = environment
            let pipe = Pipe()
            process.standardOutput = pipe
            try process.run()
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
            return try #require(object?["preferred"] as? String)
        }
        let standard = try preferred(nil)
        #expect(try preferred("openssl") == "openssl")
        #expect(try preferred("ipsec-mb") == "ipsec-mb")
        if AEADBackendKind.available.contains(.ipsecMBShortVAES) {
            #expect(try preferred("ipsec-mb+vaes") == "ipsec-mb+vaes")
        }
        #expect(try preferred("no-such-backend") == standard)
    }
}
