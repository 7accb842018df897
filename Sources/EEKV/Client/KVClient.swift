import CSystemShims
import EERPC

/// Why a client call failed.
public enum KVClientError: Error, CustomStringConvertible, Sendable {
    /// The server refused the request (bad key, bad value, malformed).
    case badRequest(String)
    /// The reply would exceed the maximum message size.
    case tooLarge(String)
    /// The node's store failed or is shutting down.
    case storeError(String)
    /// No session to the node (not running, wrong config, refused certificate...).
    case unreachable(node: Int, String)
    /// The node did not answer in time, or the session failed.
    case timedOut(node: Int)
    /// The reply did not parse.
    case protocolError(String)

    public var description: String {
        switch self {
        case .badRequest(let m): "bad request: \(m)"
        case .tooLarge(let m): "too large: \(m)"
        case .storeError(let m): "server store error: \(m)"
        case .unreachable(let node, let why): "cannot reach node \(node): \(why)"
        case .timedOut(let node): "node \(node) did not answer in time"
        case .protocolError(let m): "protocol error: \(m)"
        }
    }
}

/// A cluster-aware eekv client. It routes each key to the node that owns its slot (and to one of
/// that node's dispatch threads), fans scans out to every node and merges them in key order, and
/// groups multi-gets by node. Synchronous: each call runs the client's event loop until its
/// replies are in. Use it from one thread.
public final class KVClient {
    public let config: ClusterConfig
    private let nexus: Nexus
    private let rpc: Rpc<UDPTransport>
    private var sessions: [Int: Int] = [:]
    private let timeoutNs: UInt64

    public init(config: ClusterConfig, tls: TLSConfig?, timeoutSeconds: Double = 10) throws {
        self.config = config
        timeoutNs = UInt64(timeoutSeconds * 1e9)
        var first: UInt32 = 0
        guard ee_resolve_ipv4(config.nodes[0].host, &first) == 0 else {
            throw KVClientError.unreachable(node: config.nodes[0].id, "cannot resolve \(config.nodes[0].host)")
        }
        // Bind where the cluster can reach us back (loopback for a local cluster).
        let local = ee_local_address_for(first)
        // A client seals its own (few) packets inline: no AES pool, no handlers, no background threads.
        nexus = try Nexus(
            host: "127.0.0.1", backgroundThreads: 0, tls: config.crypto.encrypts ? tls : nil, aesWorkers: 0)
        var rpcConfig = RpcConfig()
        rpcConfig.crypto = config.crypto.encrypts ? .inline : .none
        rpc = try Rpc(
            nexus: nexus, id: 0, transport: try UDPTransport(address: local == 0 ? 0x7F00_0001 : local),
            config: rpcConfig)
    }

    deinit {
        for (_, s) in sessions { try? rpc.disconnect(s, timeoutNs: 1_000_000_000) }
        nexus.shutdown()
    }

    // MARK: Operations

    /// The value, or nil if the key does not exist.
    public func get(_ key: [UInt8]) throws -> [UInt8]? {
        let reply = try call(key: key, type: KVProtocol.readType) { w in
            w.u8(KVOperation.get.rawValue)
            key.withUnsafeBytes { w.u16(UInt16($0.count)); w.bytes($0) }
        }
        return try reply.withUnsafeBytes { r throws in
            var reader = ByteReader(r)
            switch try status(&reader) {
            case .ok: return Array(reader.rest())
            case .notFound: return nil
            default: throw KVClientError.protocolError("unexpected status")
            }
        }
    }

    /// Stores the value; returns once its transaction has committed on the node.
    public func put(_ key: [UInt8], _ value: [UInt8]) throws {
        try checkKey(key)
        guard value.count <= KVProtocol.maxValueSize else {
            throw KVClientError.badRequest("value of \(value.count) bytes exceeds \(KVProtocol.maxValueSize)")
        }
        let reply = try call(key: key, type: KVProtocol.writeType, size: 3 + key.count + value.count) { w in
            w.u8(KVOperation.put.rawValue)
            key.withUnsafeBytes { w.u16(UInt16($0.count)); w.bytes($0) }
            value.withUnsafeBytes { w.bytes($0) }
        }
        try reply.withUnsafeBytes { r throws in
            var reader = ByteReader(r)
            guard try status(&reader) == .ok else { throw KVClientError.protocolError("unexpected status") }
        }
    }

    /// Deletes the key; false if it did not exist.
    @discardableResult
    public func delete(_ key: [UInt8]) throws -> Bool {
        let reply = try call(key: key, type: KVProtocol.writeType) { w in
            w.u8(KVOperation.delete.rawValue)
            key.withUnsafeBytes { w.u16(UInt16($0.count)); w.bytes($0) }
        }
        return try reply.withUnsafeBytes { r throws in
            var reader = ByteReader(r)
            return try status(&reader) == .ok
        }
    }

    /// Keys from `start` (inclusive) to `end` (exclusive, nil: to the last key), in key order, at
    /// most `limit`: every node is asked in parallel and the answers are merged.
    public func scan(from start: [UInt8], to end: [UInt8]? = nil, limit: Int = 100) throws -> [([UInt8], [UInt8])] {
        guard limit >= 1 && limit <= KVProtocol.maxScanLimit else {
            throw KVClientError.badRequest("scan limit must be 1-\(KVProtocol.maxScanLimit)")
        }
        guard start.count <= Store.maxKeySize, (end?.count ?? 0) <= Store.maxKeySize else {
            throw KVClientError.badRequest("scan bounds must be at most \(Store.maxKeySize) bytes")
        }
        // Each node returns its own first keys from `from`. A node whose reply was cut short (by
        // the limit or by the message size) says so, and its last key bounds what the merge can
        // trust: keys beyond it may exist on that node. Merge up to the lowest such bound, then
        // continue from just after it until `limit` keys are in or no node has more.
        var result: [([UInt8], [UInt8])] = []
        var from = start
        while result.count < limit {
            let wanted = limit - result.count
            let encode: (inout ByteWriter) -> Void = { w in
                w.u8(KVOperation.scan.rawValue)
                from.withUnsafeBytes { w.u16(UInt16($0.count)); w.bytes($0) }
                w.u8(end == nil ? 0 : 1)
                (end ?? []).withUnsafeBytes { w.u16(UInt16($0.count)); w.bytes($0) }
                w.u32(UInt32(wanted))
            }
            let replies = try callAll(config.nodes.map { ($0, 0) }, type: KVProtocol.readType, encode: encode)
            var merged: [([UInt8], [UInt8])] = []
            var bound: [UInt8]? = nil
            for reply in replies {
                try reply.withUnsafeBytes { r throws in
                    var reader = ByteReader(r)
                    guard try status(&reader) == .ok, let n = reader.u32(), let more = reader.u8() else {
                        throw KVClientError.protocolError("bad scan reply")
                    }
                    var last: [UInt8]? = nil
                    for _ in 0..<n {
                        guard let kl = reader.u16(), let k = reader.take(Int(kl)), let vl = reader.u32(),
                            let v = reader.take(Int(vl))
                        else { throw KVClientError.protocolError("truncated scan reply") }
                        merged.append((Array(k), Array(v)))
                        last = Array(k)
                    }
                    if more == 1 {
                        guard let last else { throw KVClientError.tooLarge("a record is too large for a scan reply") }
                        if bound == nil || last.lexicographicallyPrecedes(bound!) { bound = last }
                    }
                }
            }
            merged.sort { $0.0.lexicographicallyPrecedes($1.0) }
            if let bound { merged.removeAll { bound.lexicographicallyPrecedes($0.0) } }
            result += merged.prefix(wanted)
            guard let bound, result.count < limit else { break }
            from = bound + [0]  // the smallest key after the bound
            guard from.count <= Store.maxKeySize else { break }
        }
        return result
    }

    /// Values of `keys`, in order (nil where a key does not exist); one request per node.
    public func multiGet(_ keys: [[UInt8]]) throws -> [[UInt8]?] {
        for k in keys { try checkKey(k) }
        var byNode: [Int: [Int]] = [:]
        for (i, k) in keys.enumerated() { byNode[k.withUnsafeBytes { config.node(for: $0).id }, default: []].append(i) }
        var results = [[UInt8]?](repeating: nil, count: keys.count)
        for chunk in byNode.sorted(by: { $0.key < $1.key }) {
            let node = config.node(id: chunk.key)!
            for part in stride(from: 0, to: chunk.value.count, by: KVProtocol.maxMultiGet) {
                let indices = Array(chunk.value[part..<min(part + KVProtocol.maxMultiGet, chunk.value.count)])
                let size = 3 + indices.reduce(0) { $0 + 2 + keys[$1].count }
                let reply = try callAll([(node, 0)], type: KVProtocol.readType, size: size) { w in
                    w.u8(KVOperation.multiGet.rawValue)
                    w.u16(UInt16(indices.count))
                    for i in indices { keys[i].withUnsafeBytes { w.u16(UInt16($0.count)); w.bytes($0) } }
                }[0]
                try reply.withUnsafeBytes { r throws in
                    var reader = ByteReader(r)
                    guard try status(&reader) == .ok, let n = reader.u16(), Int(n) == indices.count else {
                        throw KVClientError.protocolError("bad mget reply")
                    }
                    for i in indices {
                        guard let found = reader.u8(), let vl = reader.u32(), let v = reader.take(Int(vl)) else {
                            throw KVClientError.protocolError("truncated mget reply")
                        }
                        results[i] = found == 1 ? Array(v) : nil
                    }
                }
            }
        }
        return results
    }

    // MARK: Plumbing

    private func checkKey(_ key: [UInt8]) throws {
        guard key.count >= 1 && key.count <= Store.maxKeySize else {
            throw KVClientError.badRequest("keys must be 1-\(Store.maxKeySize) bytes, this one is \(key.count)")
        }
    }

    /// The reply's status; throws for error statuses (their body is the server's message).
    private func status(_ reader: inout ByteReader) throws -> KVStatus {
        guard let raw = reader.u8(), let status = KVStatus(rawValue: raw) else {
            throw KVClientError.protocolError("unknown reply status")
        }
        if status == .ok || status == .notFound { return status }
        let message = String(decoding: reader.rest(), as: UTF8.self)
        switch status {
        case .badRequest: throw KVClientError.badRequest(message)
        case .tooLarge: throw KVClientError.tooLarge(message)
        default: throw KVClientError.storeError(message)
        }
    }

    private func call(key: [UInt8], type: UInt8, size: Int = 600, encode: (inout ByteWriter) -> Void) throws -> [UInt8] {
        try checkKey(key)
        let node = key.withUnsafeBytes { config.node(for: $0) }
        let thread = HashSlot.of(key) % node.threads
        return try callAll([(node, thread)], type: type, size: size, encode: encode)[0]
    }

    /// Sends one request to each target and runs the event loop until every reply is in.
    private func callAll(
        _ targets: [(ClusterConfig.Node, Int)], type: UInt8, size: Int = 1_100, encode: (inout ByteWriter) -> Void
    ) throws -> [[UInt8]] {
        let e = rpc.endpoint
        final class Pending {
            var replies: [[UInt8]?]
            var failed: [RpcStatus?]
            init(_ n: Int) {
                replies = Array(repeating: nil, count: n)
                failed = Array(repeating: nil, count: n)
            }
        }
        let pending = Pending(targets.count)
        var buffers: [(request: MsgBuffer, response: MsgBuffer)] = []
        defer {
            // A request that has not completed (timeout, or a failure while sending the others)
            // still owns its buffers: the runtime may retransmit from them. Those are leaked
            // rather than handed back for reuse.
            for (i, b) in buffers.enumerated() where pending.replies[i] != nil || pending.failed[i] != nil {
                e.free(b.request)
                e.free(b.response)
            }
        }
        for (i, (node, thread)) in targets.enumerated() {
            let s = try session(node: node, thread: thread)
            guard var request = e.allocate(size: size) else { throw KVClientError.badRequest("request too large") }
            guard let response = e.allocate(size: Wire.maxMessageSize) else {
                e.free(request)
                throw KVClientError.badRequest("no buffer for the reply")
            }
            buffers.append((request, response))
            var w = ByteWriter(request)
            encode(&w)
            request.resize(to: w.count)
            try e.enqueueRequest(session: s, type: type, request: request, response: response, tag: UInt64(i)) { c in
                let i = Int(c.tag)
                if c.status == .ok { pending.replies[i] = Array(c.response.bytes) } else { pending.failed[i] = c.status }
            }
        }
        let done = rpc.run(until: { !pending.replies.indices.contains { pending.replies[$0] == nil && pending.failed[$0] == nil } }, timeoutNs: timeoutNs)
        for (i, (node, _)) in targets.enumerated() where pending.replies[i] == nil {
            if !done { throw KVClientError.timedOut(node: node.id) }
            throw KVClientError.protocolError("node \(node.id): \(String(describing: pending.failed[i]!))")
        }
        return pending.replies.map { $0! }
    }

    private func session(node: ClusterConfig.Node, thread: Int) throws -> Int {
        let id = node.id * 64 + thread
        if let s = sessions[id], rpc.endpoint.sessionState(s) == .connected { return s }
        do {
            let s = try rpc.connect(host: node.host, port: node.port, remoteRpcID: UInt8(thread), timeoutNs: timeoutNs)
            sessions[id] = s
            return s
        } catch {
            throw KVClientError.unreachable(node: node.id, "\(error)")
        }
    }
}
