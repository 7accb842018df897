import ArgumentParser
import EEKV
import EERPC
import Glibc
import YCSB

/// Exit codes of the client commands.
enum ClientExit {
    static let notFound: Int32 = 1
    static let usage: Int32 = 2
    static let serverOrNetwork: Int32 = 3
}

/// Where the cluster is and which certificate to present.
struct ClusterOptions: ParsableArguments {
    @Option(help: "Cluster configuration (default: $EEKV_CONFIG, else deploy/cluster.example.toml).")
    var config: String?

    @Option(help: "Client certificate (default: the config's [tls] client).")
    var cert: String?

    @Option(help: "Client key (with --cert).")
    var key: String?

    @Option(help: "Cluster CA (default: the config's [tls] dir/ca.pem).")
    var ca: String?

    /// Files named on the command line must be there: a missing one is the user's to fix (exit
    /// 2), not a failed handshake.
    func validate() throws {
        for (flag, path) in [("--cert", cert), ("--key", key), ("--ca", ca)] {
            guard let path else { continue }
            guard access(path, R_OK) == 0 else {
                throw ValidationError("cannot read \(flag) \(path): \(String(cString: strerror(errno)))")
            }
        }
    }

    func configPath() -> String {
        if let config { return config }
        if let env = getenv("EEKV_CONFIG") { return String(cString: env) }
        return "deploy/cluster.example.toml"
    }

    /// The client's TLS files: --cert/--key/--ca over the config's.
    func tls(for cluster: ClusterConfig) -> TLSConfig? {
        var tls = cluster.tls(name: cluster.clientCertificate)
        if let given = certificateTLS(defaultCA: tls?.caFile ?? "ca.pem") {
            tls = given
        } else if let ca, tls != nil {
            tls!.caFile = ca
        }
        return tls
    }

    /// The files --cert names (its key beside it unless --key says otherwise), or nil without --cert.
    func certificateTLS(defaultCA: String) -> TLSConfig? {
        cert.map { cert in
            TLSConfig(
                caFile: ca ?? defaultCA, certificateFile: cert, keyFile: key ?? cert.replacingSuffix(".pem", with: ".key"))
        }
    }
}

/// Options every client command takes.
struct ClientOptions: ParsableArguments {
    @OptionGroup var cluster: ClusterOptions

    @Flag(help: "Print JSON.")
    var json = false

    /// Connects, runs `body`, and turns failures into the documented exit codes.
    func withClient(_ body: (KVClient, ClusterConfig) throws -> Int32) throws {
        let cluster = try loadConfig(self.cluster.configPath())
        let tls = self.cluster.tls(for: cluster)
        do {
            let client = try KVClient(config: cluster, tls: tls)
            let code = try body(client, cluster)
            if code != 0 { throw ExitCode(code) }
        } catch let error as KVClientError {
            switch error {
            case .badRequest(let m):
                fail("eekv: bad request: \(m)", ClientExit.usage)
            case .notARecord:
                fail("eekv: the value under this key is not a field record (eekv merge needs one)", ClientExit.usage)
            case .wrongNode(let m):
                // The client's config routes keys elsewhere than the nodes' own: the user's to fix.
                fail("eekv: wrong node: \(m); give the cluster's own config (--config)", ClientExit.usage)
            case .unreachable(let node, let why):
                fail(
                    "eekv: cannot reach node \(node) (\(why)); is the cluster running (deploy/local-cluster.sh status) "
                        + "and is --config right?", ClientExit.serverOrNetwork)
            case .timedOut(let node):
                fail("eekv: node \(node) did not answer in time; check that it is running", ClientExit.serverOrNetwork)
            default:
                fail("eekv: \(error)", ClientExit.serverOrNetwork)
            }
        } catch let error as NexusError {
            fail("eekv: cannot set up the client: \(error); check the certificate paths", ClientExit.serverOrNetwork)
        }
    }
}

/// Says `message` on stderr and gives `code`, for a command's body to return: the client is then
/// released (its sessions closed) before the process exits, where `fail` would leave them for
/// the servers to reclaim.
func failure(_ message: String, _ code: Int32) -> Int32 {
    EEKV.say(message)
    return code
}

func fail(_ message: String, _ code: Int32) -> Never { exit(failure(message, code)) }

extension String {
    func replacingSuffix(_ suffix: String, with replacement: String) -> String {
        hasSuffix(suffix) ? String(dropLast(suffix.count)) + replacement : self + replacement
    }
}

/// JSON string literal for bytes shown as UTF-8 (invalid sequences replaced).
func jsonString(_ bytes: [UInt8]) -> String { jsonQuoted(String(decoding: bytes, as: UTF8.self)) }

struct Put: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Store VALUE under KEY (acknowledged once durable).")
    @Argument var key: String
    @Argument var value: String
    @OptionGroup var options: ClientOptions

    func run() throws {
        try options.withClient { client, _ in
            try client.put(Array(key.utf8), Array(value.utf8))
            print(options.json ? "{\"ok\":true}" : "OK")
            return 0
        }
    }
}

struct Get: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the value of KEY (exit 1 if it does not exist).")
    @Argument var key: String
    @OptionGroup var options: ClientOptions

    func run() throws {
        try options.withClient { client, _ in
            guard let value = try client.get(Array(key.utf8)) else {
                if options.json { print("{\"key\":\(jsonString(Array(key.utf8))),\"found\":false}") }
                return failure("eekv: key not found: \(key)", ClientExit.notFound)
            }
            if options.json {
                print("{\"key\":\(jsonString(Array(key.utf8))),\"found\":true,\"value\":\(jsonString(value))}")
            } else {
                value.withUnsafeBytes { _ = write(1, $0.baseAddress, $0.count) }
                print("")
            }
            return 0
        }
    }
}

struct Del: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Delete KEY (exit 1 if it did not exist).")
    @Argument var key: String
    @OptionGroup var options: ClientOptions

    func run() throws {
        try options.withClient { client, _ in
            let existed = try client.delete(Array(key.utf8))
            if options.json { print("{\"deleted\":\(existed)}") } else if existed { print("OK") }
            if !existed { return failure("eekv: key not found: \(key)", ClientExit.notFound) }
            return 0
        }
    }
}

struct Scan: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print keys from START (inclusive) to END (exclusive) in key order, as key<TAB>value lines.")
    @Argument var start: String
    @Argument var end: String?
    @Option(help: "At most this many keys.") var limit = 100
    @OptionGroup var options: ClientOptions

    func validate() throws {
        // Every key sorts at or after "": an empty END would list nothing, silently.
        if end == "" { throw ValidationError("END is empty, so nothing is before it; leave END out to scan to the last key") }
        guard (1...KVProtocol.maxScanLimit).contains(limit) else {
            throw ValidationError("--limit is 1-\(KVProtocol.maxScanLimit)")
        }
    }

    func run() throws {
        try options.withClient { client, _ in
            let rows = try client.scan(from: Array(start.utf8), to: end.map { Array($0.utf8) }, limit: limit)
            if options.json {
                let items = rows.map { "{\"key\":\(jsonString($0.0)),\"value\":\(jsonString($0.1))}" }
                print("[" + items.joined(separator: ",") + "]")
            } else {
                for (k, v) in rows { print(String(decoding: k, as: UTF8.self) + "\t" + String(decoding: v, as: UTF8.self)) }
            }
            return 0
        }
    }
}

struct MGet: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mget", abstract: "Print the values of several keys, one line each (empty line if missing).")
    @Argument var keys: [String]
    @OptionGroup var options: ClientOptions

    func validate() throws {
        guard !keys.isEmpty else { throw ValidationError("give at least one key") }
    }

    func run() throws {
        try options.withClient { client, _ in
            let values = try client.multiGet(keys.map { Array($0.utf8) })
            if options.json {
                let items = zip(keys, values).map { k, v in
                    "{\"key\":\(jsonString(Array(k.utf8))),\"found\":\(v != nil)"
                        + (v.map { ",\"value\":\(jsonString($0))" } ?? "") + "}"
                }
                print("[" + items.joined(separator: ",") + "]")
            } else {
                for v in values { print(v.map { String(decoding: $0, as: UTF8.self) } ?? "") }
            }
            let missing = zip(keys, values).filter { $0.1 == nil }.map(\.0)
            guard missing.isEmpty else {
                let named = missing.prefix(5).joined(separator: ", ") + (missing.count > 5 ? ", …" : "")
                return failure("eekv: \(missing.count) of \(keys.count) keys not found: \(named)", ClientExit.notFound)
            }
            return 0
        }
    }
}

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Set fields of the field record under KEY, keeping its other fields (created if missing).",
        discussion: "The node merges in its write transaction: one round trip, and concurrent merges of different fields all survive.")
    @Argument var key: String
    @Argument(help: "FIELD=VALUE pairs; FIELD is a number from 0 to 65535.") var assignments: [String]
    @OptionGroup var options: ClientOptions

    func fields() throws -> [Int: [UInt8]] {
        var fields: [Int: [UInt8]] = [:]
        for a in assignments {
            guard let eq = a.firstIndex(of: "="), let field = Int(a[..<eq]), field >= 0 && field <= 65_535 else {
                throw ValidationError("'\(a)' is not FIELD=VALUE with FIELD a number from 0 to 65535")
            }
            fields[field] = Array(a[a.index(after: eq)...].utf8)
        }
        return fields
    }

    func validate() throws {
        guard !assignments.isEmpty else { throw ValidationError("give at least one FIELD=VALUE") }
        _ = try fields()
    }

    func run() throws {
        let fields = try fields()
        try options.withClient { client, _ in
            try client.merge(Array(key.utf8), fields: fields)
            print(options.json ? "{\"ok\":true}" : "OK")
            return 0
        }
    }
}

struct Fields: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the field record under KEY as field<TAB>value lines (exit 1 if it does not exist).")
    @Argument var key: String
    @OptionGroup var options: ClientOptions

    func run() throws {
        try options.withClient { client, _ in
            guard let value = try client.get(Array(key.utf8)) else {
                return failure("eekv: key not found: \(key)", ClientExit.notFound)
            }
            guard let record = FieldRecord.decode(value) else {
                return failure("eekv: the value under \(key) is not a field record", ClientExit.usage)
            }
            let sorted = record.sorted { $0.key < $1.key }
            if options.json {
                print("{" + sorted.map { "\"\($0.key)\":\(jsonString($0.value))" }.joined(separator: ",") + "}")
            } else {
                for (f, v) in sorted { print("\(f)\t" + String(decoding: v, as: UTF8.self)) }
            }
            return 0
        }
    }
}
