import CSystemShims
import EEKV
import EERPC
import Glibc
import Logging
import Synchronization
import Testing

/// Ports nobody listens on right now (bound and released), for in-process nodes.
func freePorts(_ n: Int) -> [UInt16] {
    var fds: [Int32] = []
    var ports: [UInt16] = []
    for _ in 0..<n {
        let fd = ee_tcp_listen(0x7F00_0001, 0)
        ports.append(UInt16(ee_socket_port(fd)))
        fds.append(fd)
    }
    for fd in fds { close(fd) }
    return ports
}

/// A cluster of in-process nodes on loopback with its own certificates and data, torn down on deinit.
final class TestCluster {
    let directory = TempDirectory()
    let config: ClusterConfig
    private(set) var nodes: [KVNode] = []

    /// `settings`: more lines for the config's [cluster] section.
    init(nodes count: Int = 3, crypto: String = "inline", settings: String = "") throws {
        try ClusterCertificates.initialize(directory: directory.path + "/certs", nodes: count, clients: 1)
        let tcp = freePorts(count)
        let udp = freePorts(count)
        var toml = "[cluster]\ncrypto = \"\(crypto)\"\ndurability = \"nosync\"\n\(settings)[tls]\ndir = \"certs\"\nclient = \"client-0\"\n"
        for i in 0..<count {
            toml += "[[node]]\nid = \(i)\nhost = \"127.0.0.1\"\nport = \(tcp[i])\nudp_port = \(udp[i])\nthreads = 1\n"
        }
        config = try ClusterConfig.parse(toml, source: directory.path + "/cluster.toml")
        for i in 0..<count { nodes.append(try startNode(i)) }
    }

    private func startNode(_ i: Int) throws -> KVNode {
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        var options = KVNode.Options(
            dataDirectory: directory.path + "/node-\(i)", threads: 1, crypto: config.crypto, aesWorkers: 1,
            durability: .nosync)
        options.cpus = [i % Threads.cpuCount]
        if let limit = config.maxStoreBytes { options.maxStoreBytes = limit }
        let node = try KVNode(config: config, nodeID: i, options: options, logger: logger)
        try node.start()
        return node
    }

    /// Stops node `i` and starts it again on the same ports and data. The old node goes first:
    /// LMDB must not have one environment open twice in a process, and a stopped node's store
    /// stays open until the node is released.
    func restart(_ i: Int) throws {
        nodes[i].stop()
        nodes.remove(at: i)
        nodes.insert(try startNode(i), at: i)
    }

    /// Stops node `i` and lets it go, closing its store (so the directory may be opened again).
    func release(_ i: Int) {
        nodes[i].stop()
        nodes.remove(at: i)
    }

    deinit { for n in nodes { n.stop() } }

    func client() throws -> KVClient { try KVClient(config: config, tls: config.tls(name: "client-0")) }
}

@Suite("eekv cluster over encrypted eeRPC", .serialized)
struct ClusterTests {
    @Test("random operations through the client agree with a model; keys live on their slot's node")
    func modelAcrossNodes() throws {
        let cluster = try TestCluster()
        let client = try cluster.client()
        var model: [[UInt8]: [UInt8]] = [:]
        var rng = SplitMix64(seed: 5)
        for step in 0..<600 {
            let key = Array("user\(rng.next() % 150)".utf8)
            switch rng.next() % 10 {
            case 0..<4:
                let value = Array("v\(step)-".utf8) + (0..<Int(rng.next() % 2_000)).map { _ in UInt8(ascii: "x") }
                try client.put(key, value)
                model[key] = value
            case 4..<5:
                #expect(try client.delete(key) == (model[key] != nil))
                model[key] = nil
            case 5..<8:
                #expect(try client.get(key) == model[key], "step \(step)")
            case 8:
                let keys = (0..<5).map { _ in Array("user\(rng.next() % 150)".utf8) }
                #expect(try client.multiGet(keys) == keys.map { model[$0] })
            default:
                let start = Array("user\(rng.next() % 150)".utf8)
                let limit = Int(rng.next() % 30) + 1
                let expected = model.keys.filter { !$0.lexicographicallyPrecedes(start) }
                    .sorted { $0.lexicographicallyPrecedes($1) }.prefix(limit)
                let rows = try client.scan(from: start, limit: limit)
                #expect(rows.map(\.0) == Array(expected), "scan at step \(step)")
                #expect(rows.allSatisfy { model[$0.0] == $0.1 })
            }
        }
        // Routing: each key is stored on exactly the node that owns its slot.
        var perNode = [Int](repeating: 0, count: cluster.nodes.count)
        for (key, value) in model {
            let owner = key.withUnsafeBytes { cluster.config.node(for: $0).id }
            for node in cluster.nodes {
                let stored = try node.store.makeReader().get(key)
                #expect((stored != nil) == (node.node.id == owner))
                if node.node.id == owner { #expect(stored == value) }
            }
            perNode[owner] += 1
        }
        #expect(perNode.allSatisfy { $0 > 0 }, "keys spread over every node: \(perNode)")
    }

    /// Malformed requests straight over eeRPC (the client library would refuse to send them).
    @Test("every bad request gets a typed error, is counted, and the node keeps serving")
    func badRequests() throws {
        let cluster = try TestCluster(nodes: 1, crypto: "none")
        let raw = try RawKVSession(to: cluster.config.nodes[0])
        func send(_ type: UInt8, _ bytes: [UInt8]) -> (KVStatus?, String) { raw.send(type, bytes) }
        let longKey = [UInt8](repeating: 0x6B, count: 512)
        let bad: [(UInt8, [UInt8], String)] = [
            (KVProtocol.readType, [], "empty request"),
            (KVProtocol.readType, [99], "unknown operation"),
            (KVProtocol.readType, [1, 0, 0], "empty key"),
            (KVProtocol.readType, [1, 0, 2] + longKey, "oversized key"),
            (KVProtocol.readType, [1, 10, 0, 65], "truncated key"),
            (KVProtocol.readType, [1, 1, 0, 65, 66], "trailing bytes"),
            (KVProtocol.readType, [2, 1, 0, 65, 66], "put on the read type"),
            (KVProtocol.readType, [4, 1, 0, 65, 2, 0, 0], "malformed scan"),
            (KVProtocol.readType, [4, 1, 0, 65, 0, 0, 0, 0, 0, 0, 0], "scan limit 0"),
            (KVProtocol.readType, [4, 1, 0, 65, 8, 0, 0, 1, 0, 0, 0], "scan with an unknown flag"),
            (KVProtocol.readType, [5, 0, 0], "mget of no keys"),
            (KVProtocol.readType, [5, 2, 0, 1, 0, 65], "mget truncated"),
            (KVProtocol.writeType, [], "empty write"),
            (KVProtocol.writeType, [7, 1, 0, 65], "unknown write operation"),
            (KVProtocol.writeType, [2, 0, 0, 1], "put with empty key"),
            (KVProtocol.writeType, [2, 0, 2] + longKey + [1], "put with oversized key"),
            (KVProtocol.writeType, [3, 1, 0, 65, 66], "delete with trailing bytes"),
            (KVProtocol.writeType, [1, 1, 0, 65], "get on the write type"),
            (KVProtocol.writeType, [6, 1, 0, 65], "merge with no patch"),
            (KVProtocol.writeType, [6, 1, 0, 65, 0, 0], "merge of no fields"),
            (KVProtocol.writeType, [6, 1, 0, 65, 1, 0, 3, 0, 2, 0, 0, 0, 1], "merge patch truncated"),
            (KVProtocol.writeType, [6, 1, 0, 65, 2, 0, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0], "merge fields descending"),
            (KVProtocol.writeType, [6, 0, 0, 0, 0], "merge with empty key"),
            (KVProtocol.readType, [6, 1, 0, 65, 1, 0, 0, 0, 0, 0, 0, 0], "merge on the read type"),
        ]
        let before = cluster.nodes[0].stats.badRequests.load(ordering: .relaxed)
        for (type, bytes, what) in bad {
            let (status, message) = send(type, bytes)
            #expect(status == .badRequest, "\(what): \(String(describing: status)) \(message)")
            #expect(!message.isEmpty, "\(what) has no message")
        }
        #expect(cluster.nodes[0].stats.badRequests.load(ordering: .relaxed) - before == bad.count)
        // Still serving.
        #expect(send(KVProtocol.writeType, [2, 1, 0, 65, 66, 67]).0 == .ok)
        #expect(send(KVProtocol.readType, [1, 1, 0, 65]).0 == .ok)
    }

    /// A client with another cluster config (or none) sends a key to a node that does not serve
    /// its slot: acknowledging the write would put it where routed reads never look.
    @Test("a key sent to a node that does not serve its slot is refused with wrongNode, and counted")
    func wrongNode() throws {
        let cluster = try TestCluster(nodes: 2, crypto: "none")
        let raw = try RawKVSession(to: cluster.config.nodes[0])
        func owner(_ k: [UInt8]) -> Int { k.withUnsafeBytes { cluster.config.node(for: $0).id } }
        let mine = (0..<1_000).lazy.map { Array("k\($0)".utf8) }.first { owner($0) == 0 }!
        let theirs = (0..<1_000).lazy.map { Array("k\($0)".utf8) }.first { owner($0) == 1 }!
        func framed(_ k: [UInt8]) -> [UInt8] { [UInt8(k.count), 0] + k }
        let misrouted: [(UInt8, [UInt8], String)] = [
            (KVProtocol.writeType, [2] + framed(theirs) + [1, 2, 3], "put"),
            (KVProtocol.writeType, [3] + framed(theirs), "delete"),
            (KVProtocol.writeType, [6] + framed(theirs) + [1, 0, 0, 0, 1, 0, 0, 0, 7], "merge"),
            (KVProtocol.readType, [1] + framed(theirs), "get"),
            (KVProtocol.readType, [5, 2, 0] + framed(mine) + framed(theirs), "mget with one foreign key"),
        ]
        for (type, bytes, what) in misrouted {
            let (status, message) = raw.send(type, bytes)
            #expect(status == .wrongNode, "\(what): \(String(describing: status)) \(message)")
            #expect(message.contains("slot \(theirs.withUnsafeBytes { HashSlot.of($0) })"), "\(what): \(message)")
        }
        #expect(cluster.nodes[0].stats.wrongNode.load(ordering: .relaxed) == misrouted.count)
        // Nothing was written on either node, and the node still serves its own keys.
        let client = try cluster.client()
        #expect(try client.get(theirs) == nil)
        #expect(raw.send(KVProtocol.writeType, [2] + framed(mine) + [9]).0 == .ok)
        #expect(try client.get(mine) == [9])
        // A client whose config gives node 0 every slot gets a typed error from it.
        let n0 = cluster.config.nodes[0]
        let stale = try ClusterConfig.parse(
            "[cluster]\ncrypto = \"none\"\ndurability = \"nosync\"\n[tls]\ndir = \"certs\"\nclient = \"client-0\"\n"
                + "[[node]]\nid = 0\nhost = \"127.0.0.1\"\nport = \(n0.port)\nudp_port = \(n0.udpPort)\nthreads = 1\n",
            source: cluster.directory.path + "/stale.toml")
        let staleClient = try KVClient(config: stale, tls: stale.tls(name: "client-0"))
        #expect {
            try staleClient.put(theirs, [1])
        } throws: { error in
            guard case KVClientError.wrongNode = error else { return false }
            return true
        }
        // A get decodes its reply as it arrives: an error status there is the same typed error.
        #expect {
            _ = try staleClient.get(theirs)
        } throws: { error in
            guard case KVClientError.wrongNode = error else { return false }
            return true
        }
        #expect(try client.get(theirs) == nil)
    }

    @Test("a value too large for a message is refused before it is sent")
    func oversizedValue() throws {
        let cluster = try TestCluster(nodes: 1)
        let client = try cluster.client()
        #expect(throws: KVClientError.self) {
            try client.put(Array("big".utf8), [UInt8](repeating: 1, count: KVProtocol.maxValueSize + 1))
        }
        try client.put(Array("big".utf8), [UInt8](repeating: 1, count: 1 << 20))
        #expect(try client.get(Array("big".utf8))?.count == 1 << 20)
        // The largest value a put takes comes back on this encrypted session too. Its reply's
        // sealed packets, a tag each, would not fit one buffer: it is copied and sealed as it
        // leaves instead of being refused.
        let largest = (0..<KVProtocol.maxValueSize).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try client.put(Array("big".utf8), largest)
        #expect(try client.get(Array("big".utf8)) == largest)
    }

    @Test("merges set fields on the node in one round trip; a plain value is refused with a typed error")
    func merges() throws {
        let cluster = try TestCluster(nodes: 2)
        let client = try cluster.client()
        let key = Array("user7".utf8)
        try client.merge(key, fields: [3: Array("c".utf8)])
        try client.merge(key, fields: [1: Array("a".utf8), 3: Array("C".utf8)])
        #expect(try client.get(key).flatMap(FieldRecord.decode) == [1: Array("a".utf8), 3: Array("C".utf8)])
        let before = cluster.nodes.reduce(0) { $0 + $1.stats.merges.load(ordering: .relaxed) }
        #expect(before == 2)
        try client.put(Array("plain".utf8), Array("text".utf8))
        #expect {
            try client.merge(Array("plain".utf8), fields: [0: [1]])
        } throws: { error in
            guard case KVClientError.notARecord = error else { return false }
            return true
        }
        #expect(try client.get(Array("plain".utf8)) == Array("text".utf8))
        #expect(throws: KVClientError.self) { try client.merge(key, fields: [:]) }
        // Field numbers outside 0-65535 are the caller's error, not a crash.
        #expect(throws: KVClientError.self) { try client.merge(key, fields: [70_000: [1]]) }
        #expect(throws: KVClientError.self) { try client.merge(key, fields: [-1: [1]]) }
        // Still serving, and the record is untouched.
        #expect(try client.get(key).flatMap(FieldRecord.decode)?.count == 2)
    }

    /// As on a pipelined connection. Without the ordering, a get overtakes the put still being
    /// committed (it is served at once, the put waits for the writer), and completes first.
    @Test("operations on one key started together take effect, and complete, in the order started")
    func perKeyOrder() throws {
        let cluster = try TestCluster(nodes: 2, crypto: "none")
        let client = try cluster.client()
        func describe(_ r: Result<[UInt8]?, KVClientError>) -> String {
            switch r {
            case .success(let v): v.map { "\($0)" } ?? "nil"
            case .failure(let e): "\(e)"
            }
        }
        for round in 0..<20 {
            let key = Array("order\(round)".utf8)
            var seen: [String] = []
            try client.put(key, [1]) { seen.append("put \((try? $0.get()) != nil)") }
            try client.get(key) { seen.append("get " + describe($0)) }
            try client.put(key, [2]) { seen.append("put \((try? $0.get()) != nil)") }
            try client.delete(key) { seen.append("delete \((try? $0.get()) ?? false)") }
            try client.get(key) { seen.append("get " + describe($0)) }
            try client.merge(key, fields: [0: [3]]) { seen.append("merge \((try? $0.get()) != nil)") }
            try client.get(key) { seen.append("get " + describe($0)) }
            let deadline = DispatchTime.nowNs + 10_000_000_000
            while seen.count < 7 && DispatchTime.nowNs < deadline { client.poll() }
            let record = "\(FieldRecord.encode([0: [3]]))"
            #expect(seen == ["put true", "get [1]", "put true", "delete true", "get nil", "merge true", "get " + record])
        }
    }

    /// A queued operation that cannot be sent (its node went away) reports it once its turn
    /// comes, and a completion that then calls the same key synchronously gets that call's own
    /// answer at once, instead of waiting out its timeout behind a lane with nothing in flight.
    @Test("an operation queued on a key whose node went away fails, and leaves the key usable at once")
    func queuedOperationFails() throws {
        let cluster = try TestCluster(nodes: 1, crypto: "none")
        let client = try KVClient(config: cluster.config, tls: nil, timeoutSeconds: 0.5)
        let key = Array("gone".utf8)
        try client.put(key, [1])  // the session is up
        cluster.release(0)
        var put: Result<Void, KVClientError>? = nil
        var get: Result<[UInt8]?, KVClientError>? = nil
        var inner: (any Error)? = nil
        var innerTookNs: UInt64 = 0
        try client.put(key, [2]) { put = $0 }
        try client.get(key) { result in
            get = result
            let start = DispatchTime.nowNs
            do { _ = try client.get(key) } catch { inner = error }
            innerTookNs = DispatchTime.nowNs - start
        }
        let deadline = DispatchTime.nowNs + 10_000_000_000
        while get == nil && DispatchTime.nowNs < deadline { client.poll() }
        guard case .failure(.timedOut) = put else { Issue.record("put: \(String(describing: put))"); return }
        guard case .failure = get else { Issue.record("get: \(String(describing: get))"); return }
        #expect(inner != nil)
        if case KVClientError.timedOut = inner ?? KVClientError.storeFull { Issue.record("the inner get waited out its timeout") }
        #expect(innerTookNs < 250_000_000)
    }

    /// Starting an operation may connect to its node, which runs the event loop. A completion
    /// run then that calls the same key synchronously is answered at once (it cannot connect
    /// from inside the loop), not left waiting on a key held by an operation not yet sent.
    @Test("a completion run during a connect that calls the connecting key gets an answer at once")
    func completionDuringConnect() throws {
        let cluster = try TestCluster(nodes: 2, crypto: "none")
        let client = try KVClient(config: cluster.config, tls: nil, timeoutSeconds: 0.5)
        func owner(_ k: [UInt8]) -> Int { k.withUnsafeBytes { cluster.config.node(for: $0).id } }
        let keys = (0..<100).map { Array("c\($0)".utf8) }
        let onZero = keys.first { owner($0) == 0 }!
        let onOne = keys.first { owner($0) == 1 }!
        try client.put(onZero, [1])  // connected to node 0 only
        var innerTookNs: UInt64 = 0
        var inner: (any Error)? = nil
        var ran = false
        try client.get(onZero) { _ in
            ran = true
            let start = DispatchTime.nowNs
            do { _ = try client.get(onOne) } catch { inner = error }
            innerTookNs = DispatchTime.nowNs - start
        }
        var put: Result<Void, KVClientError>? = nil
        try client.put(onOne, [2]) { put = $0 }  // connects to node 1; the get's reply is in meanwhile
        let deadline = DispatchTime.nowNs + 10_000_000_000
        while (!ran || put == nil) && DispatchTime.nowNs < deadline { client.poll() }
        #expect(ran)
        #expect(innerTookNs < 250_000_000, "the inner get waited \(innerTookNs) ns")
        if case KVClientError.timedOut = inner ?? KVClientError.storeFull { Issue.record("the inner get timed out") }
        #expect(throws: Never.self) { try put?.get() }
        #expect(try client.get(onOne) == [2])
    }

    @Test("a node at max_store_mib refuses writes with storeFull and keeps serving reads and deletes")
    func storeFull() throws {
        let cluster = try TestCluster(nodes: 1, crypto: "inline", settings: "max_store_mib = 2\n")
        let client = try cluster.client()
        let value = [UInt8](repeating: 7, count: 64 << 10)
        var stored = 0
        while stored < 100 {
            do {
                try client.put(Array("f\(stored)".utf8), value)
                stored += 1
            } catch KVClientError.storeFull {
                break
            }
        }
        // 2 MiB holds a few dozen 64 KiB values, not 100.
        #expect(stored > 10 && stored < 100)
        for i in 0..<stored { #expect(try client.get(Array("f\(i)".utf8)) == value) }
        #expect(try client.delete(Array("f0".utf8)))
        #expect(try client.delete(Array("f1".utf8)))
        try client.put(Array("after".utf8), value)
        #expect(try client.get(Array("after".utf8)) == value)
        #expect(cluster.nodes[0].store.writer.rejectedFull.load(ordering: .relaxed) == 1)
    }

    /// A client's session to a node that restarted fails; the next call connects a new one. The
    /// failed session used to keep its number for good, so a long-running client could run out.
    @Test("a client reconnecting after node restarts holds one session, not one per restart")
    func reconnectsWithoutLeaking() throws {
        let cluster = try TestCluster(nodes: 1, crypto: "inline")
        let client = try KVClient(config: cluster.config, tls: cluster.config.tls(name: "client-0"), timeoutSeconds: 1)
        try client.put(Array("k".utf8), Array("v0".utf8))
        for round in 1...3 {
            try cluster.restart(0)
            // The old session is dead to the new node: this call fails or reconnects, the next
            // one (if needed) reconnects.
            var value: [UInt8]? = nil
            for _ in 0..<3 where value == nil { value = try? client.get(Array("k".utf8)) }
            #expect(value == Array("v0".utf8), "round \(round)")
        }
        #expect(client.sessionsInUse == 1)
    }

    @Test("a node restarted on the same data keeps every acknowledged write")
    func restartKeepsData() throws {
        let cluster = try TestCluster(nodes: 1, crypto: "none")
        do {
            let client = try cluster.client()
            for i in 0..<200 { try client.put(Array("r\(i)".utf8), Array("value\(i)".utf8)) }
        }
        cluster.release(0)
        let store = try Store(directory: cluster.directory.path + "/node-0", durability: .fsync)
        defer { store.close() }
        let reader = try store.makeReader()
        for i in 0..<200 { #expect(try reader.get(Array("r\(i)".utf8)) == Array("value\(i)".utf8)) }
    }

    @Test("a data directory serves one node at a time: a second store on it is refused until the first closes")
    func dataDirectoryIsLocked() throws {
        let cluster = try TestCluster(nodes: 1, crypto: "none")
        let path = cluster.directory.path + "/node-0"
        #expect(throws: StoreError.inUse(path: path)) { _ = try Store(directory: path, durability: .nosync) }
        cluster.release(0)
        let store = try Store(directory: path, durability: .nosync)
        store.close()
    }

    /// An operator sees what a node dropped and why: a stray datagram and a forged packet for a
    /// live encrypted session are counted by reason in the node's totals once it stops.
    @Test("a stopped node reports its packets and its drops by reason, forgeries included")
    func dropsAreReported() throws {
        let cluster = try TestCluster(nodes: 1, crypto: "inline")
        let client = try cluster.client()
        try client.put(Array("k".utf8), Array("v".utf8))
        #expect(try client.get(Array("k".utf8)) == Array("v".utf8))
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = cluster.config.nodes[0].udpPort.bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        func send(_ bytes: [UInt8]) {
            _ = bytes.withUnsafeBytes { b in
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(fd, b.baseAddress, b.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
        }
        send([UInt8](repeating: 0x41, count: 40))  // not eeRPC at all
        // A well-formed request for the client's session (the node's first, number 0) with a
        // made-up tag: it parses, and no key of the session opens it.
        let header = PacketHeader(
            type: .request, destSession: 0, requestType: KVProtocol.readType, messageSize: 8,
            requestNumber: 12_345, packetNumber: 0)
        var forged = [UInt8](repeating: 0x5C, count: Wire.headerSize + 8 + Wire.tagSize)
        forged.withUnsafeMutableBytes { header.encode(to: $0.baseAddress!) }
        send(forged)
        usleep(200_000)
        #expect(try client.get(Array("k".utf8)) == Array("v".utf8))  // still serving
        cluster.nodes[0].stop()
        let stats = cluster.nodes[0].rpcStats
        #expect(stats.requestsHandled >= 3)
        #expect(stats.drops(.badMagic) == 1)
        #expect(stats.drops(.authenticationFailed) == 1)
        #expect(stats.packetsReceived >= stats.requestsHandled + 2)
    }
}

@Suite("Scans across nodes", .serialized)
struct ScanMergeTests {
    /// Node 0's reply is cut by the message size after two 3 MiB records; a small node-1 key
    /// that sorts after them must still come before node 0's third record.
    @Test("a scan cut short by the message size on one node still returns the true first keys")
    func cutShortReply() throws {
        let cluster = try TestCluster(nodes: 2, crypto: "none")
        let client = try cluster.client()
        let candidates = (0..<400).map { Array("k\(1000 + $0)".utf8) }
        func owner(_ k: [UInt8]) -> Int { k.withUnsafeBytes { cluster.config.node(for: $0).id } }
        let zero = candidates.filter { owner($0) == 0 }
        let a = zero[0], b = zero[1], c = zero[2]
        let x = try #require(candidates.first { owner($0) == 1 && b.lexicographicallyPrecedes($0) && $0.lexicographicallyPrecedes(c) })
        let big = [UInt8](repeating: 0x42, count: 3 << 20)
        for k in [a, b, c] { try client.put(k, big) }
        try client.put(x, [1])
        let rows = try client.scan(from: Array("k".utf8), limit: 3)
        #expect(rows.map(\.0) == [a, b, x])
        #expect(rows[0].1.count == 3 << 20)
    }

    /// Resuming after the last key of a cut-short reply used to ask for "that key + 0x00", which
    /// for a 511-byte key is 512 bytes: the scan ended there without the remaining keys.
    @Test("a scan cut short right after a 511-byte key resumes after it")
    func resumesAfterLongestKey() throws {
        let cluster = try TestCluster(nodes: 1, crypto: "none")
        let client = try cluster.client()
        let keys = (1...4).map { [UInt8](repeating: 0x6D, count: Store.maxKeySize - 1) + [UInt8(0x30 + $0)] }
        // Two 3 MiB records fill a reply: it is cut after the second, a key of the longest length.
        let big = [UInt8](repeating: 0x42, count: 3 << 20)
        for k in keys.prefix(3) { try client.put(k, big) }
        try client.put(keys[3], [1])
        #expect(try client.scan(from: [0x6D], limit: 10).map(\.0) == keys)
        #expect(try client.scan(from: keys[1], limit: 2).map(\.0) == Array(keys[1...2]))
    }

    /// Any record a put accepts (the longest key with the largest value) fits a scan reply alone.
    /// One stored beyond that (by an older node, whose put limit was 9 bytes higher) is an error
    /// that names its key, not a scan that ends early or skips it.
    /// Keys a node holds for slots it no longer serves (an earlier cluster layout left them)
    /// are not its to answer: a get or delete goes to their owner, so a scan must not show them.
    @Test("a scan leaves out keys of slots the node does not serve, at any limit")
    func scanSkipsKeysOfOtherNodes() throws {
        let cluster = try TestCluster(nodes: 2, crypto: "none")
        let client = try cluster.client()
        func owner(_ k: [UInt8]) -> Int { k.withUnsafeBytes { cluster.config.node(for: $0).id } }
        let keys = (0..<60).map { Array(("key" + String(1_000 + $0).dropFirst()).utf8) }  // key000 … key059
        for k in keys { try client.put(k, k) }
        // Node 0 also holds a stale copy of every node-1 key, and node 1 of every node-0 key.
        for k in keys {
            #expect(SyncWriter(cluster.nodes[1 - owner(k)].store).write(.put, k, Array("stale".utf8)) == .committed)
        }
        for limit in [1, 7, 100] {
            let rows = try client.scan(from: [], limit: limit)
            #expect(rows.map(\.0) == Array(keys.prefix(limit)), "limit \(limit)")
            #expect(rows.allSatisfy { $0.0 == $0.1 }, "a stale copy was returned at limit \(limit)")
        }
        // Paging through in sevens (each page from just after the last key) finds each key once.
        var paged: [[UInt8]] = []
        var from: [UInt8] = []
        while case let page = try client.scan(from: from, limit: 7), let last = page.last?.0 {
            paged += page.map(\.0)
            from = last + [0]
        }
        #expect(paged == keys)
    }

    /// A node can hold any number of keys for slots it no longer serves. A scan reply walks past
    /// at most `maxScanSkips` of them and says where it stopped; the client asks on from there.
    @Test("a scan walks past a bounded number of other nodes' keys per reply and still finds every key")
    func scanSkipsAreBounded() throws {
        let cluster = try TestCluster(nodes: 2, crypto: "none")
        let client = try cluster.client()
        func owner(_ k: [UInt8]) -> Int { k.withUnsafeBytes { cluster.config.node(for: $0).id } }
        // 2.5 bounds' worth of node-1 keys that only node 0 holds (stale), before every real key.
        // Of the longest length, so the client asks on after each bound (not from bound ‖ 0x00).
        func longest(_ prefix: String) -> [UInt8] {
            Array(prefix.utf8) + [UInt8](repeating: 0x78, count: Store.maxKeySize - prefix.utf8.count)
        }
        let stale = (0..<100_000).lazy.map { longest("a\($0)-") }.filter { owner($0) == 1 }
            .prefix(KVProtocol.maxScanSkips * 5 / 2)
        let writer = SyncWriter(cluster.nodes[0].store)
        for k in stale { #expect(writer.write(.put, k, [0x53]) == .committed) }
        let keys = (0..<20).map { Array("k\(100 + $0)".utf8) }
        for k in keys { try client.put(k, k) }
        let node1Scans = cluster.nodes[1].stats.scans.load(ordering: .relaxed)
        for limit in [1, 5, 20, 100] {
            let rows = try client.scan(from: [], limit: limit)
            #expect(rows.map(\.0) == Array(keys.prefix(limit)), "limit \(limit)")
            #expect(rows.allSatisfy { $0.0 == $0.1 })
        }
        // Node 1 gave all its keys in each scan's first round and was not asked again while the
        // client walked node 0 on.
        #expect(cluster.nodes[1].stats.scans.load(ordering: .relaxed) == node1Scans + 4)
        // Each scan stopped exactly twice on node 0: after 4,096 and 8,192 of its 10,240.
        #expect(cluster.nodes[0].stats.scanSkipBounds.load(ordering: .relaxed) == 2 * 4)
        #expect(cluster.nodes[1].stats.scanSkipBounds.load(ordering: .relaxed) == 0)
        // An end inside the stale keys: nothing to show, found in three rounds.
        #expect(try client.scan(from: [], to: Array("b".utf8), limit: 10).isEmpty)
        #expect(cluster.nodes[0].stats.scanSkipBounds.load(ordering: .relaxed) == 2 * 5)
        // Stopping among records: a start inside the stale run, the real keys after it.
        let fromInside = try client.scan(from: Array("a5".utf8), limit: 3)
        #expect(fromInside.map(\.0) == Array(keys.prefix(3)))
        // A reply full to the byte (the longest key with the largest value) when the bound is
        // reached has no room to say where it stopped: it ends at its record instead.
        let full = (0..<256).lazy.map { [UInt8](repeating: 0x41, count: Store.maxKeySize - 1) + [UInt8($0)] }
            .first { owner($0) == 0 }!
        try client.put(full, [UInt8](repeating: 0x46, count: KVProtocol.maxValueSize))
        let bounds = cluster.nodes[0].stats.scanSkipBounds.load(ordering: .relaxed)
        let fromFull = try client.scan(from: full, limit: 3)
        #expect(fromFull.map(\.0) == [full] + keys.prefix(2))
        #expect(fromFull.first?.1.count == KVProtocol.maxValueSize)
        // Three stops: the full reply's (cut at its record), then two with the key named.
        #expect(cluster.nodes[0].stats.scanSkipBounds.load(ordering: .relaxed) == bounds + 3)
    }

    /// The client trusts a node's keys up to the key its reply names, and asks on from there:
    /// named below a record of the reply, that record would come again in the next round.
    @Test("a reply stopped at the skip bound names a key at or past every record it holds")
    func skipBoundCoversTheReply() throws {
        let cluster = try TestCluster(nodes: 2, crypto: "none")
        let client = try cluster.client()
        func owner(_ k: [UInt8]) -> Int { k.withUnsafeBytes { cluster.config.node(for: $0).id } }
        // Node-1 keys that only node 0 holds, one more than a reply walks past.
        let stale = (0..<100_000).lazy.map { Array("s\(100_000 + $0)".utf8) }.filter { owner($0) == 1 }
            .prefix(KVProtocol.maxScanSkips + 1)
        let writer = SyncWriter(cluster.nodes[0].store)
        for k in stale { #expect(writer.write(.put, k, [0x53]) == .committed) }
        // A key of node 0's own between the last stale key walked and the one the walk stops at.
        let lastWalkedStale = Array(stale)[KVProtocol.maxScanSkips - 1]
        let own = (0..<256).lazy.map { lastWalkedStale + Array("~\($0)".utf8) }.first { owner($0) == 0 }!
        try client.put(own, Array("mine".utf8))
        var request: [UInt8] = [KVOperation.scan.rawValue, 0, 0, KVProtocol.scanResumable, 0, 0]
        request += withUnsafeBytes(of: UInt32(100).littleEndian) { Array($0) }
        let raw = try RawKVSession(to: cluster.config.nodes[0])
        let reply = try #require(raw.reply(KVProtocol.readType, request, capacity: 1 << 20))
        var keys: [[UInt8]] = []
        var named: [UInt8]? = nil
        reply.withUnsafeBytes { bytes in
            var r = ByteReader(bytes)
            guard r.u8() == KVStatus.ok.rawValue, let n = r.u32(), let more = r.u8() else { return }
            for _ in 0..<n {
                guard let kl = r.u16(), let k = r.take(Int(kl)), let vl = r.u32(), r.take(Int(vl)) != nil else { return }
                keys.append(Array(k))
            }
            guard more == 2, let kl = r.u16(), let k = r.take(Int(kl)), r.remaining == 0 else { return }
            named = Array(k)
        }
        #expect(keys == [own])
        let bound = try #require(named, "the reply stops at the skip bound and names where")
        #expect(!bound.lexicographicallyPrecedes(own), "named \(String(decoding: bound, as: UTF8.self))")
        // The client's scan finds it once, and the stale keys not at all.
        #expect(try client.scan(from: [], limit: 10).map(\.0) == [own])
    }

    @Test("the largest record a put takes comes back in a scan; one too large for any reply is named")
    func recordTooLargeForScan() throws {
        let cluster = try TestCluster(nodes: 1, crypto: "none")
        let client = try cluster.client()
        let key = [UInt8](repeating: 0x6B, count: Store.maxKeySize)
        try client.put(key, [UInt8](repeating: 1, count: KVProtocol.maxValueSize))
        try client.put([0x6C], [2])
        let rows = try client.scan(from: [0x6A], limit: 5)
        #expect(rows.map(\.0) == [key, [0x6C]])
        #expect(rows.first?.1.count == KVProtocol.maxValueSize)

        let tooLarge = [UInt8](repeating: 0x6A, count: Store.maxKeySize)
        let oldLimit = [UInt8](repeating: 3, count: KVProtocol.maxValueSize + 9)
        #expect(SyncWriter(cluster.nodes[0].store).write(.put, tooLarge, oldLimit) == .committed)
        #expect {
            _ = try client.scan(from: [0x6A], limit: 5)
        } throws: { error in
            guard case KVClientError.tooLarge(let message) = error else { return false }
            return message.contains("jjjjjjjj") && message.contains("511 bytes")
        }
        #expect(try client.get(tooLarge)?.count == oldLimit.count)
        // One beyond any reply is refused by name, not answered "busy" (which a caller would retry).
        let huge = [UInt8](repeating: 4, count: Wire.maxMessageSize)
        #expect(SyncWriter(cluster.nodes[0].store).write(.put, [0x68], huge) == .committed)
        #expect {
            _ = try client.get([0x68])
        } throws: { error in
            guard case KVClientError.tooLarge(let message) = error else { return false }
            return message.contains("too large for any reply")
        }
    }
}

@Suite("Multi-gets larger than one reply", .serialized)
struct MultiGetSplitTests {
    @Test("a multi-get whose values exceed one reply returns every value, in order")
    func valuesBeyondOneReply() throws {
        let cluster = try TestCluster(nodes: 2, crypto: "none")
        let client = try cluster.client()
        var keys: [[UInt8]] = []
        var expected: [[UInt8]?] = []
        // 3 MiB values: two fit a reply, not three; every node holds several. Missing and small
        // keys in between.
        for i in 0..<8 {
            let key = Array("mg\(i)".utf8)
            let value = i % 4 == 3 ? nil : [UInt8](repeating: UInt8(i), count: i % 4 == 2 ? 10 : 3 << 20)
            if let value { try client.put(key, value) }
            keys.append(key)
            expected.append(value)
        }
        let values = try client.multiGet(keys + keys.reversed())
        #expect(values.count == 16)
        #expect(values == expected + expected.reversed())
    }

    /// No put stores such a value; one written straight into the store stands for data from
    /// outside the client's limits.
    @Test("a value no mget reply can hold is an error naming its key")
    func valueBeyondAnyReply() throws {
        let cluster = try TestCluster(nodes: 1, crypto: "none")
        let client = try cluster.client()
        let key = Array("huge".utf8)
        let value = [UInt8](repeating: 5, count: Wire.maxMessageSize - 7)
        #expect(SyncWriter(cluster.nodes[0].store).write(.put, key, value) == .committed)
        try client.put(Array("small".utf8), [1])
        #expect(try client.multiGet([Array("small".utf8)]) == [[1]])
        #expect {
            _ = try client.multiGet([Array("small".utf8), key])
        } throws: { error in
            guard case KVClientError.tooLarge(let message) = error else { return false }
            return message.contains("'huge' (4 bytes)")
        }
    }
}

/// A session straight over eeRPC to one node, for requests the client library would not send.
final class RawKVSession {
    let nexus: Nexus
    let rpc: Rpc<UDPTransport>
    let session: Int

    init(to node: ClusterConfig.Node) throws {
        nexus = try Nexus(backgroundThreads: 0, aesWorkers: 0)
        rpc = try Rpc(nexus: nexus, id: 9, transport: try UDPTransport(), config: .plaintext)
        session = try rpc.connect(host: node.host, port: node.port, remoteRpcID: 0)
    }

    deinit {
        try? rpc.disconnect(session)
        nexus.shutdown()
    }

    /// Sends one request of `type` and returns the reply's status and message.
    func send(_ type: UInt8, _ bytes: [UInt8]) -> (KVStatus?, String) {
        guard let reply = reply(type, bytes, capacity: 4_096), let first = reply.first else { return (nil, "") }
        return (KVStatus(rawValue: first), String(decoding: reply.dropFirst(), as: UTF8.self))
    }

    /// Sends one request of `type` and returns the whole reply (nil: none in 5 s).
    func reply(_ type: UInt8, _ bytes: [UInt8], capacity: Int) -> [UInt8]? {
        let e = rpc.endpoint
        var request = e.allocate(size: max(bytes.count, 1))!
        bytes.withUnsafeBytes { request.assign($0) }
        let response = e.allocate(size: capacity)!
        var reply: [UInt8]? = nil
        try! e.enqueueRequest(session: session, type: type, request: request, response: response) { c in
            reply = Array(c.response.bytes)
        }
        rpc.run(until: { reply != nil }, timeoutNs: 5_000_000_000)
        e.free(request)
        e.free(response)
        return reply
    }
}
