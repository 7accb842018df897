import EERPC
import Glibc

/// A cluster as its configuration file describes it:
///
/// ```toml
/// [cluster]
/// crypto = "adaptive"          # none | inline | offload | adaptive
/// durability = "fsync"         # fsync | nosync
/// mtu = 1472                   # UDP payload per packet, the same on every node and client
/// max_store_mib = 65536        # optional: each node's store stops taking writes that need more
///
/// [tls]
/// dir = "certs"                # made by `eekv certs init`; relative to this file
/// client = "client-0"          # the CLI's certificate name
///
/// [[node]]
/// id = 0
/// host = "127.0.0.1"
/// port = 31850                 # session management (TCP, TLS)
/// udp_port = 31900             # first data-plane port; thread i uses udp_port + i
/// threads = 1
/// ```
/// Slots are split evenly over the nodes in id order unless a node gives `slots = [first, last]`.
public struct ClusterConfig: Sendable {
    public struct Node: Sendable, Equatable {
        public var id: Int
        public var host: String
        public var port: UInt16
        public var udpPort: UInt16
        public var threads: Int
        public var slots: ClosedRange<Int>
    }

    public var nodes: [Node]
    public var crypto: CryptoMode
    public var durability: Durability
    /// UDP payload per data-plane packet (eeRPC header and tag included). Every node and client
    /// of the cluster must agree: sessions with a different MTU are refused.
    public var mtu: Int
    /// The most each node's store may hold (its LMDB map), in bytes; nil: no limit but the disk.
    public var maxStoreBytes: Int?
    public var tlsDirectory: String?
    public var clientCertificate: String
    /// Where the file was read from (relative paths in it are relative to its folder).
    public var source: String

    public struct Error: Swift.Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public static func load(path: String) throws(Error) -> ClusterConfig {
        guard let file = fopen(path, "r") else {
            throw Error(description: "cannot read the cluster config \(path): \(String(cString: strerror(errno)))")
        }
        defer { fclose(file) }
        var text = ""
        var buffer = [CChar](repeating: 0, count: 4_096)
        while fgets(&buffer, Int32(buffer.count), file) != nil {
            text += String(nulTerminated: buffer)
        }
        // A directory opens, then fails to read: say so rather than parse nothing.
        if ferror(file) != 0 {
            throw Error(description: "cannot read the cluster config \(path): \(String(cString: strerror(errno)))")
        }
        return try parse(text, source: path)
    }

    public static func parse(_ text: String, source: String) throws(Error) -> ClusterConfig {
        let doc: TOMLDocument
        do { doc = try TOMLDocument(parsing: text) } catch { throw Error(description: "\(source): \(error)") }
        let cluster = doc.tables["cluster"] ?? [:]
        let tls = doc.tables["tls"]
        // Unknown tables and keys, and values of the wrong type, are errors: a typo must not
        // silently become a default.
        let known: [String: Set<String>] = [
            "cluster": ["crypto", "durability", "mtu", "max_store_mib"], "tls": ["dir", "client"],
            "node": ["id", "host", "port", "udp_port", "threads", "slots"],
        ]
        for (name, table) in doc.tables {
            // [node] (one bracket) would be read as nothing at all: the cluster silently a node short.
            if name == "node" { throw Error(description: "\(source): nodes are an array of tables: write [[node]], not [node]") }
            guard let keys = known[name] else { throw Error(description: "\(source): unknown table [\(name)]") }
            if let bad = table.keys.first(where: { !keys.contains($0) }) {
                throw Error(description: "\(source): unknown key '\(bad)' in [\(name)]")
            }
        }
        for (name, entries) in doc.arrays {
            guard name == "node" else { throw Error(description: "\(source): unknown table [[\(name)]]") }
            for entry in entries {
                if let bad = entry.keys.first(where: { !known["node"]!.contains($0) }) {
                    throw Error(description: "\(source): unknown key '\(bad)' in [[node]]")
                }
            }
        }
        func string(_ table: [String: TOMLDocument.Value], _ key: String) throws(Error) -> String? {
            switch table[key] {
            case nil: return nil
            case .string(let s)?: return s
            default: throw Error(description: "\(source): '\(key)' must be a string")
            }
        }
        func int(_ table: [String: TOMLDocument.Value], _ key: String) throws(Error) -> Int? {
            switch table[key] {
            case nil: return nil
            case .integer(let n)?: return n
            default: throw Error(description: "\(source): '\(key)' must be an integer")
            }
        }
        let cryptoName = try string(cluster, "crypto") ?? "adaptive"
        guard let crypto = CryptoMode(name: cryptoName) else {
            throw Error(description: "\(source): unknown crypto mode '\(cryptoName)'")
        }
        let durabilityName = try string(cluster, "durability") ?? "fsync"
        guard let durability = Durability(rawValue: durabilityName) else {
            throw Error(description: "\(source): durability must be fsync or nosync")
        }
        let mtu = try int(cluster, "mtu") ?? Wire.defaultMTU
        guard (Wire.minMTU...Wire.maxMTU).contains(mtu) else {
            throw Error(description: "\(source): mtu must be \(Wire.minMTU)-\(Wire.maxMTU) (1472 for a 1500-byte Ethernet MTU)")
        }
        var maxStoreBytes: Int? = nil
        if let mib = try int(cluster, "max_store_mib") {
            guard (1...(1 << 30)).contains(mib) else { throw Error(description: "\(source): max_store_mib must be 1-1073741824") }
            maxStoreBytes = mib << 20
        }
        let base = source.contains("/") ? String(source[..<source.lastIndex(of: "/")!]) : "."
        var tlsDirectory: String? = nil
        if let tls, let dir = try string(tls, "dir") { tlsDirectory = dir.hasPrefix("/") ? dir : base + "/" + dir }
        if crypto.encrypts && tlsDirectory == nil {
            throw Error(description: "\(source): crypto '\(cryptoName)' needs a [tls] dir with the cluster's certificates")
        }
        var nodes: [Node] = []
        for entry in doc.arrays["node"] ?? [] {
            guard let id = try int(entry, "id"), let host = try string(entry, "host"), let port = try int(entry, "port"),
                let udp = try int(entry, "udp_port")
            else { throw Error(description: "\(source): every [[node]] needs id, host, port and udp_port") }
            // Node ids name certificates (node-ID) and sessions (id × 64 + thread): small and non-negative.
            guard (0...1_023).contains(id) else { throw Error(description: "\(source): node id \(id) must be 0-1023") }
            let threads = try int(entry, "threads") ?? 1
            guard (1...65_535).contains(port), (1...65_535).contains(udp), (1...64).contains(threads), udp + threads <= 65_536
            else { throw Error(description: "\(source): node \(id) has a bad port or thread count") }
            var slots = 0...0
            if let value = entry["slots"] {
                guard case .array(let range) = value, range.count == 2, case .integer(let a) = range[0],
                    case .integer(let b) = range[1], a <= b, a >= 0, b < HashSlot.count
                else { throw Error(description: "\(source): node \(id): slots must be [first, last] within 0-16383") }
                slots = a...b
            }
            nodes.append(Node(id: id, host: host, port: UInt16(port), udpPort: UInt16(udp), threads: threads, slots: slots))
        }
        guard !nodes.isEmpty else { throw Error(description: "\(source): no [[node]] entries") }
        nodes.sort { $0.id < $1.id }
        guard Set(nodes.map(\.id)).count == nodes.count else { throw Error(description: "\(source): duplicate node ids") }
        // Two nodes on one address would be one process answering for both: a client would send
        // one node's keys to the other.
        for (i, a) in nodes.enumerated() {
            for b in nodes[(i + 1)...] where a.host == b.host {
                if a.port == b.port {
                    throw Error(description: "\(source): nodes \(a.id) and \(b.id) both use \(a.host) port \(a.port)")
                }
                let aUDP = Int(a.udpPort)...(Int(a.udpPort) + a.threads - 1)
                let bUDP = Int(b.udpPort)...(Int(b.udpPort) + b.threads - 1)
                if aUDP.overlaps(bUDP) {
                    throw Error(
                        description: "\(source): nodes \(a.id) and \(b.id) on \(a.host) share UDP ports "
                            + "(each uses udp_port up to udp_port + threads - 1)")
                }
            }
        }
        let explicit = (doc.arrays["node"] ?? []).filter { $0["slots"] != nil }.count
        guard explicit == 0 || explicit == nodes.count else {
            throw Error(description: "\(source): give slots for every node or for none")
        }
        if explicit == 0 {
            for i in nodes.indices {
                nodes[i].slots = (i * HashSlot.count / nodes.count)...((i + 1) * HashSlot.count / nodes.count - 1)
            }
        }
        // Every slot must have exactly one owner.
        var owner = [Int](repeating: -1, count: HashSlot.count)
        for n in nodes {
            for s in n.slots {
                guard owner[s] == -1 else { throw Error(description: "\(source): slot \(s) belongs to two nodes") }
                owner[s] = n.id
            }
        }
        if let free = owner.firstIndex(of: -1) { throw Error(description: "\(source): slot \(free) has no node") }
        return ClusterConfig(
            nodes: nodes, crypto: crypto, durability: durability, mtu: mtu, maxStoreBytes: maxStoreBytes,
            tlsDirectory: tlsDirectory,
            clientCertificate: try tls.flatMap { t throws(Error) in try string(t, "client") } ?? "client-0", source: source)
    }

    /// The node that owns `key`'s slot.
    public func node(for key: UnsafeRawBufferPointer) -> Node { node(forSlot: HashSlot.of(key)) }

    /// The node that owns `slot`.
    public func node(forSlot slot: Int) -> Node { nodes.first { $0.slots.contains(slot) }! }

    public func node(id: Int) -> Node? { nodes.first { $0.id == id } }

    /// TLS files for certificate `name` (node-<id> or a client name), if the cluster has TLS.
    public func tls(name: String) -> TLSConfig? { tlsDirectory.map { TLSConfig(directory: $0, name: name) } }
}
