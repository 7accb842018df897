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
    /// The node's store had no room for the write (it reached its size limit, or its disk is
    /// full); nothing was written. Deleting keys makes room.
    case storeFull
    /// No session to the node (not running, wrong config, refused certificate...).
    case unreachable(node: Int, String)
    /// The node did not answer in time, or the session failed. The outcome is unknown: a write
    /// may have been applied, or may still be (the request stays in flight until its session
    /// gives up). A later operation on the same key from this client waits until then.
    case timedOut(node: Int)
    /// A merge found a value that is not a ``FieldRecord`` under its key; nothing was written.
    case notARecord
    /// The reply did not parse.
    case protocolError(String)
    /// The node had no buffer left for the reply; nothing was changed, and the call may be
    /// made again (this client does not retry it itself).
    case busy(String)
    /// The node does not serve the key's slot: this client's cluster config differs from the
    /// node's. Nothing was read or written.
    case wrongNode(String)

    public var description: String {
        switch self {
        case .badRequest(let m): "bad request: \(m)"
        case .tooLarge(let m): "too large: \(m)"
        case .storeError(let m): "server store error: \(m)"
        case .storeFull: "the node's store is full (deletes still work)"
        case .unreachable(let node, let why): "cannot reach node \(node): \(why)"
        case .timedOut(let node): "node \(node) did not answer in time"
        case .notARecord: "the stored value is not a field record"
        case .protocolError(let m): "protocol error: \(m)"
        case .busy(let m): "node busy: \(m)"
        case .wrongNode(let m): "wrong node: \(m)"
        }
    }
}

/// A cluster-aware eekv client. It routes each key to the node that owns its slot (and to one of
/// that node's dispatch threads), fans scans out to every node and merges them in key order, and
/// groups multi-gets by node. Each operation comes in two forms: a synchronous call that runs the
/// client's event loop until its replies are in, and a start-and-complete form that keeps several
/// operations in flight (completions run inside `poll()`). Use it from one thread.
public final class KVClient {
    public let config: ClusterConfig
    private let nexus: Nexus
    private let rpc: Rpc<UDPTransport>
    private var sessions: [Int: Int] = [:]
    private let timeoutNs: UInt64

    /// How long the client polls without a reply before it sleeps in the kernel until a packet
    /// comes (at most 1 ms at a time). Polling answers fastest on a core of its own; on a core
    /// shared with a node (a local cluster), a client that never sleeps keeps the node from
    /// running until the scheduler's tick.
    public var idleSpinNs: UInt64
    /// When the current run of empty polls began (0: the last poll made progress).
    private var idleSince: UInt64 = 0

    /// - Parameter idleSpinMicroseconds: see ``idleSpinNs``.
    public init(config: ClusterConfig, tls: TLSConfig?, timeoutSeconds: Double = 10, idleSpinMicroseconds: Int = 50)
        throws
    {
        self.config = config
        timeoutNs = UInt64(timeoutSeconds * 1e9)
        idleSpinNs = UInt64(max(0, idleSpinMicroseconds)) * 1_000
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
        // A node that is alive but slow (a write waiting on the disk) must not fail the session
        // before the client's own timeout: keep retransmitting for that long.
        rpcConfig.maxRetransmissionsWithoutProgress = max(
            1, Int(timeoutNs / rpcConfig.retransmitTimeoutNs))
        // Nor wait on a handler the node says is running for longer than that: past the client's
        // timeout the session fails, and with it what is still in flight.
        rpcConfig.maxHandlerWaitNs = timeoutNs
        rpc = try Rpc(
            nexus: nexus, id: 0, transport: try UDPTransport(address: local == 0 ? 0x7F00_0001 : local, mtu: config.mtu),
            config: rpcConfig)
    }

    /// Sessions of this client's endpoint not yet free (tests, diagnostics).
    public var sessionsInUse: Int { rpc.endpoint.sessionsInUse }

    deinit {
        for (_, s) in sessions { try? rpc.disconnect(s, timeoutNs: 1_000_000_000) }
        nexus.shutdown()
    }

    /// The client endpoint's counters (retransmissions, packets, drops by reason). Read it from
    /// the thread that uses the client, or after that thread is done.
    public var stats: RpcStats { rpc.stats }
    /// The client socket's counters (packets, sends the kernel refused).
    public var transportStats: TransportStats { rpc.transport.stats }

    // MARK: Operations

    /// The value, or nil if the key does not exist.
    public func get(_ key: [UInt8]) throws -> [UInt8]? {
        try wait { done in try get(key, completion: done) }
    }

    /// Stores the value; returns once its transaction has committed on the node.
    public func put(_ key: [UInt8], _ value: [UInt8]) throws {
        try wait { done in try put(key, value, completion: done) }
    }

    /// Sets `fields` in the ``FieldRecord`` stored under the key, keeping its other fields (the
    /// record is created if the key does not exist); returns once committed. The node does the
    /// read-modify-write inside its write transaction: one round trip, and concurrent merges of
    /// different fields all survive.
    public func merge(_ key: [UInt8], fields: [Int: [UInt8]]) throws {
        try wait { done in try merge(key, fields: fields, completion: done) }
    }

    /// Deletes the key; false if it did not exist.
    @discardableResult
    public func delete(_ key: [UInt8]) throws -> Bool {
        try wait { done in try delete(key, completion: done) }
    }

    /// Keys from `start` (inclusive) to `end` (exclusive, nil: to the last key), in key order, at
    /// most `limit`: every node is asked in parallel and the answers are merged.
    public func scan(from start: [UInt8], to end: [UInt8]? = nil, limit: Int = 100) throws -> [([UInt8], [UInt8])] {
        try wait { done in try scan(from: start, to: end, limit: limit, completion: done) }
    }

    // MARK: Operations, several in flight
    //
    // These start an operation and return at once; `completion` runs on this thread from inside
    // `poll()` (or a synchronous call) when the replies are in. A request that cannot be sent
    // (bad key, node unreachable) throws here instead. Requests that the node never answers fail
    // with `.timedOut` once the runtime's retransmissions give up on the session.
    //
    // Operations on one key (get, put, merge, delete) take effect, and complete, in the order
    // they were started, as on a pipelined connection: one waits until the earlier ones on its
    // key have completed. Without that a get could overtake a put still being committed, and a
    // put whose packet was lost could land after a later one. One that waits reports a failure
    // to send through its completion (which may then come before the earlier one's). mget and
    // scan are not ordered against operations in flight. A synchronous call's timeout counts
    // from its call, its wait in the lane included.

    /// Starts a get; completes with the value, or nil if the key does not exist.
    public func get(_ key: [UInt8], completion: @escaping (Result<[UInt8]?, KVClientError>) -> Void) throws {
        // The value is decoded from the reply while the runtime still holds it: one copy of it,
        // where keeping the reply first would be two (a 64 KiB value is most of a read's cost).
        try start(key: key, type: KVProtocol.readType) { w in
            w.u8(KVOperation.get.rawValue)
            key.withUnsafeBytes { w.u16(UInt16($0.count)); w.bytes($0) }
        } keep: { reply in
            var reader = ByteReader(reply)
            return Self.capture { () throws -> [UInt8]? in
                switch try Self.status(&reader) {
                case .ok: return Array(copying: reader.rest())
                case .notFound: return nil
                default: throw KVClientError.protocolError("unexpected status")
                }
            }
        } done: { replies in
            completion(replies.flatMap { $0[0] })
        }
    }

    /// Starts a put; completes once its transaction has committed on the node.
    public func put(_ key: [UInt8], _ value: [UInt8], completion: @escaping (Result<Void, KVClientError>) -> Void) throws {
        guard value.count <= KVProtocol.maxValueSize else {
            throw KVClientError.badRequest("value of \(value.count) bytes exceeds \(KVProtocol.maxValueSize)")
        }
        try write(.put, key, body: value, completion: completion)
    }

    /// Starts a merge (see ``merge(_:fields:)``).
    public func merge(
        _ key: [UInt8], fields: [Int: [UInt8]], completion: @escaping (Result<Void, KVClientError>) -> Void
    ) throws {
        guard !fields.isEmpty else { throw KVClientError.badRequest("a merge needs at least one field") }
        // FieldRecord.encode traps on these (its callers check); from the library they are errors.
        if let why = FieldRecord.problem(with: fields) { throw KVClientError.badRequest(why) }
        let patch = FieldRecord.encode(fields)
        guard patch.count <= KVProtocol.maxValueSize else {
            throw KVClientError.badRequest("merge of \(patch.count) bytes exceeds \(KVProtocol.maxValueSize)")
        }
        try write(.merge, key, body: patch, completion: completion)
    }

    /// A put or merge: `op | klen u16 | key | body`, answered with a bare status.
    private func write(
        _ op: KVOperation, _ key: [UInt8], body: [UInt8], completion: @escaping (Result<Void, KVClientError>) -> Void
    ) throws {
        try start(key: key, type: KVProtocol.writeType, size: 3 + key.count + body.count) { w in
            w.u8(op.rawValue)
            key.withUnsafeBytes { w.u16(UInt16($0.count)); w.bytes($0) }
            _ = body.withUnsafeBytes { w.bytes($0) }
        } done: { replies in
            completion(
                replies.flatMap { r in
                    Self.decode(r[0]) { reader in
                        guard try Self.status(&reader) == .ok else { throw KVClientError.protocolError("unexpected status") }
                    }
                })
        }
    }

    /// Starts a delete; completes with false if the key did not exist.
    public func delete(_ key: [UInt8], completion: @escaping (Result<Bool, KVClientError>) -> Void) throws {
        try start(key: key, type: KVProtocol.writeType) { w in
            w.u8(KVOperation.delete.rawValue)
            key.withUnsafeBytes { w.u16(UInt16($0.count)); w.bytes($0) }
        } done: { replies in
            completion(replies.flatMap { r in Self.decode(r[0]) { reader in try Self.status(&reader) == .ok } })
        }
    }

    /// Starts a scan (see ``scan(from:to:limit:)``).
    public func scan(
        from start: [UInt8], to end: [UInt8]? = nil, limit: Int = 100,
        completion: @escaping (Result<[([UInt8], [UInt8])], KVClientError>) -> Void
    ) throws {
        guard limit >= 1 && limit <= KVProtocol.maxScanLimit else {
            throw KVClientError.badRequest("scan limit must be 1-\(KVProtocol.maxScanLimit)")
        }
        guard start.count <= Store.maxKeySize, (end?.count ?? 0) <= Store.maxKeySize else {
            throw KVClientError.badRequest("scan bounds must be at most \(Store.maxKeySize) bytes")
        }
        try scanRound(ScanMerge(nodes: config.nodes.count, from: start, limit: limit), to: end, completion: completion)
    }

    /// A node refused a scan with ``KVProtocol/scanResumable``: scans leave the flag out.
    private var scanResumableRefused = false

    /// One round of a scan (see ``ScanMerge``): asks the nodes the merge is waiting on, merges
    /// what their replies let it trust, and runs the next round until it is done.
    private func scanRound(
        _ scan: ScanMerge, to end: [UInt8]?,
        completion: @escaping (Result<[([UInt8], [UInt8])], KVClientError>) -> Void
    ) throws {
        let resumable = !scanResumableRefused
        let asked = scan.pending
        try startAll(asked.map { (config.nodes[$0], 0) }, type: KVProtocol.readType) { w in
            w.u8(KVOperation.scan.rawValue)
            scan.from.withUnsafeBytes { w.u16(UInt16($0.count)); w.bytes($0) }
            w.u8(
                (resumable ? KVProtocol.scanResumable : 0) | (end == nil ? 0 : KVProtocol.scanHasEnd)
                    | (scan.after ? KVProtocol.scanAfterStart : 0))
            (end ?? []).withUnsafeBytes { w.u16(UInt16($0.count)); w.bytes($0) }
            w.u32(UInt32(scan.wanted))
        } done: { [weak self] replies in
            let decoded = replies.flatMap { replies in
                Self.decode(replies) { readers -> [([([UInt8], [UInt8])], [UInt8]?)] in
                    try readers.map { reader in
                        var reader = reader
                        guard try Self.status(&reader) == .ok, let n = reader.u32(), let more = reader.u8() else {
                            throw KVClientError.protocolError("bad scan reply")
                        }
                        var records: [([UInt8], [UInt8])] = []
                        var last: [UInt8]? = nil
                        for _ in 0..<n {
                            guard let kl = reader.u16(), let k = reader.take(Int(kl)), let vl = reader.u32(),
                                let v = reader.take(Int(vl))
                            else { throw KVClientError.protocolError("truncated scan reply") }
                            records.append((Array(copying: k), Array(copying: v)))
                            last = Array(copying: k)
                        }
                        // Past its bound the node may have keys it has not returned.
                        var bound: [UInt8]? = nil
                        switch more {
                        case 0: break
                        case 1:
                            guard let last else { throw KVClientError.tooLarge("a record is too large for a scan reply") }
                            bound = last
                        case 2:
                            // It stopped after walking past keys of other nodes' slots.
                            guard let kl = reader.u16(), let k = reader.take(Int(kl)) else {
                                throw KVClientError.protocolError("truncated scan reply")
                            }
                            bound = Array(copying: k)
                        default: throw KVClientError.protocolError("bad scan reply")
                        }
                        guard reader.remaining == 0 else { throw KVClientError.protocolError("trailing bytes in a scan reply") }
                        return (records, bound)
                    }
                }
            }
            switch decoded {
            case .failure(.badRequest) where resumable:
                // This client checked the bounds and the limit: a node refusing the scan is one
                // from before `scanResumable` (a cluster being upgraded). Ask without it, from now on.
                guard let self else { return completion(.failure(.protocolError("the client was closed during a scan"))) }
                scanResumableRefused = true
                continueScan(scan, to: end, completion: completion)
            case .failure(let error): completion(.failure(error))
            case .success(let replies):
                var scan = scan
                for (node, (records, bound)) in zip(asked, replies) { scan.absorb(node: node, records: records, bound: bound) }
                scan.merge()
                guard !scan.done else { return completion(.success(scan.result)) }
                guard let self else { return completion(.failure(.protocolError("the client was closed during a scan"))) }
                continueScan(scan, to: end, completion: completion)
            }
        }
    }

    /// Runs the next round of a scan from a completion: one that cannot be sent ends the scan
    /// with its error.
    private func continueScan(
        _ scan: ScanMerge, to end: [UInt8]?,
        completion: @escaping (Result<[([UInt8], [UInt8])], KVClientError>) -> Void
    ) {
        let sent = Self.capture { try scanRound(scan, to: end, completion: completion) }
        if case .failure(let error) = sent { completion(.failure(error)) }
    }

    /// Runs the client's event loop once: sends what is queued and completes what has arrived.
    /// Returns false if there was nothing to do; after ``idleSpinNs`` of that, it first sleeps
    /// until a packet comes (at most 1 ms).
    @discardableResult
    public func poll() -> Bool {
        // A completion may call a synchronous operation, which polls too: the flag stays set
        // until the outermost poll returns.
        let wasInEventLoop = inEventLoop
        inEventLoop = true
        defer { inEventLoop = wasInEventLoop }
        if rpc.runOnce() {
            idleSince = 0
            return true
        }
        let now = ee_now_ns()
        if idleSince == 0 {
            idleSince = now
        } else if now &- idleSince > idleSpinNs {
            rpc.waitForResponses(timeoutMs: 1)
        }
        return false
    }

    /// True while the event loop runs (completions run inside it).
    private var inEventLoop = false

    /// Values of `keys`, in order (nil where a key does not exist); one request per node, more
    /// when a node's values do not fit one reply (each request reads its own snapshot).
    public func multiGet(_ keys: [[UInt8]]) throws -> [[UInt8]?] {
        for k in keys { try Self.checkKey(k) }
        var byNode: [Int: [Int]] = [:]
        for (i, k) in keys.enumerated() { byNode[k.withUnsafeBytes { config.node(for: $0).id }, default: []].append(i) }
        var results = [[UInt8]?](repeating: nil, count: keys.count)
        for chunk in byNode.sorted(by: { $0.key < $1.key }) {
            let node = config.node(id: chunk.key)!
            var pending = chunk.value[...]
            while !pending.isEmpty {
                let indices = Array(pending.prefix(KVProtocol.maxMultiGet))
                let size = 3 + indices.reduce(0) { $0 + 2 + keys[$1].count }
                let reply = try wait { done in
                    try startAll([(node, 0)], type: KVProtocol.readType, size: size) { w in
                        w.u8(KVOperation.multiGet.rawValue)
                        w.u16(UInt16(indices.count))
                        for i in indices { keys[i].withUnsafeBytes { w.u16(UInt16($0.count)); w.bytes($0) } }
                    } done: { done($0.map { $0[0] }) }
                }
                // The node answers the first keys whose values fit one reply.
                let answered = try reply.withUnsafeBytes { r throws in
                    var reader = ByteReader(r)
                    guard try Self.status(&reader) == .ok, let n = reader.u16(), n >= 1, Int(n) <= indices.count else {
                        throw KVClientError.protocolError("bad mget reply")
                    }
                    for i in indices.prefix(Int(n)) {
                        guard let found = reader.u8(), let vl = reader.u32(), let v = reader.take(Int(vl)) else {
                            throw KVClientError.protocolError("truncated mget reply")
                        }
                        results[i] = found == 1 ? Array(copying: v) : nil
                    }
                    return Int(n)
                }
                pending = pending.dropFirst(answered)
            }
        }
        return results
    }

    // MARK: Plumbing

    private static func checkKey(_ key: [UInt8]) throws {
        guard key.count >= 1 && key.count <= Store.maxKeySize else {
            throw KVClientError.badRequest("keys must be 1-\(Store.maxKeySize) bytes, this one is \(key.count)")
        }
    }

    /// The reply's status; throws for error statuses (their body is the server's message).
    private static func status(_ reader: inout ByteReader) throws -> KVStatus {
        guard let raw = reader.u8(), let status = KVStatus(rawValue: raw) else {
            throw KVClientError.protocolError("unknown reply status")
        }
        if status == .ok || status == .notFound { return status }
        let message = String(decoding: reader.rest(), as: UTF8.self)
        switch status {
        case .badRequest: throw KVClientError.badRequest(message)
        case .tooLarge: throw KVClientError.tooLarge(message)
        case .storeFull: throw KVClientError.storeFull
        case .notARecord: throw KVClientError.notARecord
        case .busy: throw KVClientError.busy(message)
        case .wrongNode: throw KVClientError.wrongNode(message)
        default: throw KVClientError.storeError(message)
        }
    }

    /// Runs the event loop until an operation started by `begin` completes.
    private func wait<T>(_ begin: (@escaping (Result<T, KVClientError>) -> Void) throws -> Void) throws -> T {
        var result: Result<T, KVClientError>?
        try begin { result = $0 }
        let deadline = ee_now_ns() &+ timeoutNs
        while result == nil {
            poll()
            if ee_now_ns() > deadline, result == nil { throw KVClientError.timedOut(node: lastCall?.firstUnanswered ?? 0) }
        }
        return try result!.get()
    }

    /// Parses a reply (or several) with a reader; errors become a failed result.
    private static func decode<T>(_ reply: [UInt8], _ body: (inout ByteReader) throws -> T) -> Result<T, KVClientError> {
        reply.withUnsafeBytes { r in
            var reader = ByteReader(r)
            return Self.capture { try body(&reader) }
        }
    }

    private static func decode<T>(_ replies: [[UInt8]], _ body: ([ByteReader]) throws -> T) -> Result<T, KVClientError> {
        // The readers point into `replies`, which lives until this returns.
        var readers: [ByteReader] = []
        var result: Result<T, KVClientError>!
        func nest(_ i: Int) {
            if i == replies.count {
                result = Self.capture { try body(readers) }
                return
            }
            replies[i].withUnsafeBytes { r in
                readers.append(ByteReader(r))
                nest(i + 1)
            }
        }
        nest(0)
        return result
    }

    private static func capture<T>(_ body: () throws -> T) -> Result<T, KVClientError> {
        do { return .success(try body()) } catch let error as KVClientError { return .failure(error) } catch {
            return .failure(.protocolError("\(error)"))
        }
    }

    /// Sends a request to the node that holds `key`; `done` gets the reply's bytes.
    private func start(
        key: [UInt8], type: UInt8, size: Int = 600, encode: @escaping (inout ByteWriter) -> Void,
        done: @escaping (Result<[[UInt8]], KVClientError>) -> Void
    ) throws {
        try start(key: key, type: type, size: size, encode: encode, keep: { Array(copying: $0) }, done: done)
    }

    /// Sends a request to the node that holds `key`, once the operations started earlier on the
    /// key have completed; `keep` turns the reply into what `done` gets.
    private func start<Kept>(
        key: [UInt8], type: UInt8, size: Int = 600, encode: @escaping (inout ByteWriter) -> Void,
        keep: @escaping (UnsafeRawBufferPointer) -> Kept, done: @escaping (Result<[Kept], KVClientError>) -> Void
    ) throws {
        try Self.checkKey(key)
        let lane = Self.lane(of: key)
        let slot = HashSlot.of(key)
        let node = config.node(forSlot: slot)
        let thread = slot % node.threads
        // Connect before taking the lane: connecting runs the event loop, and a completion run
        // meanwhile that waits on this key must not find it held by an operation not yet sent.
        if keyLanes[lane] == nil { _ = try session(node: node, thread: thread) }
        // Weak: completions can run while the client is being deinitialised (its disconnects
        // run the event loop), and queued closures live in the client.
        let send = { [weak self] () throws in
            guard let self else { throw KVClientError.protocolError("the client was closed") }
            try startAll([(node, thread)], type: type, size: size, encode: encode, keep: keep) { [weak self] result in
                // The next one goes out first: `done` may wait for an operation on this key.
                self?.startNext(inLane: lane)
                done(result)
            }
        }
        if keyLanes[lane] != nil {
            keyLanes[lane]!.waiting.append {
                guard case .failure(let error) = Self.capture(send) else { return nil }
                return { done(.failure(error)) }
            }
            return
        }
        keyLanes[lane] = KeyLane()
        do { try send() } catch {
            startNext(inLane: lane)
            throw error
        }
    }

    /// The single-key operations waiting in one lane for the one in flight there, in order.
    private struct KeyLane {
        /// Each starts its operation, or returns the completion that reports why it could not.
        var waiting: [() -> (() -> Void)?] = []
        var next = 0
    }

    /// Lanes with an operation in flight, by their key's hash. Two keys that share a lane only
    /// wait for each other. Operations still waiting when the client goes away never complete.
    private var keyLanes: [UInt64: KeyLane] = [:]

    /// The key's lane: its 64-bit FNV-1a hash.
    private static func lane(of key: [UInt8]) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }

    /// The operation in flight in `lane` has completed: the next one waiting there starts, or the
    /// lane is free. Ones that cannot be sent report it after that, so that a completion waiting
    /// for an operation on this key never waits on a lane with nothing in flight.
    private func startNext(inLane lane: UInt64) {
        var failed: [() -> Void] = []
        while var l = keyLanes.removeValue(forKey: lane), l.next < l.waiting.count {
            let start = l.waiting[l.next]
            l.waiting[l.next] = { nil }  // lets go of what it captured
            l.next += 1
            if l.next >= 64 && l.next * 2 >= l.waiting.count {  // a key never idle: drop what has run
                l.waiting.removeFirst(l.next)
                l.next = 0
            }
            keyLanes[lane] = l
            guard let failure = start() else { break }
            failed.append(failure)
        }
        for report in failed { report() }
    }

    /// The most recently started call, as the timeout of a synchronous call sees it: the first
    /// node that has not answered.
    private class PendingCall {
        var firstUnanswered: Int? { nil }
    }

    /// The requests of one operation, one per target, and what `keep` made of each reply so far.
    private final class Call<Kept>: PendingCall {
        let nodes: [Int]
        var replies: [Kept?]
        var failure: KVClientError?
        var outstanding: Int
        /// Set when sending failed part-way: the requests already sent complete into nothing.
        var abandoned = false
        let keep: (UnsafeRawBufferPointer) -> Kept
        /// Taken when it runs, with the replies: `lastCall` outlives the call, and must not keep
        /// the caller's values (or its closure) alive.
        var done: ((Result<[Kept], KVClientError>) -> Void)?

        init(
            nodes: [Int], keep: @escaping (UnsafeRawBufferPointer) -> Kept,
            done: @escaping (Result<[Kept], KVClientError>) -> Void
        ) {
            self.nodes = nodes
            replies = Array(repeating: nil, count: nodes.count)
            outstanding = nodes.count
            self.keep = keep
            self.done = done
        }

        override var firstUnanswered: Int? { replies.indices.first { replies[$0] == nil }.map { nodes[$0] } }

        /// Runs `done` once, handing over the replies.
        func finish() {
            guard let done else { return }
            self.done = nil
            let replies = self.replies
            self.replies = []
            done(failure.map { .failure($0) } ?? .success(replies.map { $0! }))
        }
    }

    /// The most recently started call, for naming the node in a timeout.
    private var lastCall: PendingCall?

    /// Sends one request to each target; `done` gets each reply's bytes.
    private func startAll(
        _ targets: [(ClusterConfig.Node, Int)], type: UInt8, size: Int = 1_100, encode: (inout ByteWriter) -> Void,
        done: @escaping (Result<[[UInt8]], KVClientError>) -> Void
    ) throws {
        try startAll(targets, type: type, size: size, encode: encode, keep: { Array(copying: $0) }, done: done)
    }

    /// Sends one request to each target; `keep` runs on each reply as it arrives (its bytes are
    /// valid only during the call), and `done` once every reply is in (or with the first failure
    /// once every request has finished).
    private func startAll<Kept>(
        _ targets: [(ClusterConfig.Node, Int)], type: UInt8, size: Int = 1_100, encode: (inout ByteWriter) -> Void,
        keep: @escaping (UnsafeRawBufferPointer) -> Kept, done: @escaping (Result<[Kept], KVClientError>) -> Void
    ) throws {
        let e = rpc.endpoint
        let call = Call(nodes: targets.map { $0.0.id }, keep: keep, done: done)
        lastCall = call
        // A new request starts a new spin window: its reply is due soon, whatever came before.
        idleSince = 0
        do {
            for (i, (node, thread)) in targets.enumerated() {
                let s = try session(node: node, thread: thread)
                guard var request = e.allocate(size: size) else { throw KVClientError.badRequest("request too large") }
                guard let response = e.allocate(size: Wire.maxMessageSize) else {
                    e.free(request)
                    throw KVClientError.badRequest("no buffer for the reply")
                }
                var w = ByteWriter(request)
                encode(&w)
                request.resize(to: w.count)
                do {
                    // Ownership: the runtime holds both buffers until the continuation runs; a
                    // request whose node never answers keeps them (they are not reused).
                    try e.enqueueRequest(session: s, type: type, request: request, response: response, tag: UInt64(i)) {
                        c in
                        let i = Int(c.tag)
                        if c.status == .ok && !call.abandoned {
                            call.replies[i] = call.keep(UnsafeRawBufferPointer(c.response.bytes))
                        } else if c.status != .ok && call.failure == nil {
                            call.failure = Self.failure(c.status, node: call.nodes[i], type: type)
                        }
                        c.rpc.free(c.request)
                        c.rpc.free(c.response)
                        call.outstanding -= 1
                        if call.outstanding == 0 && !call.abandoned { call.finish() }
                    }
                } catch {
                    e.free(request)
                    e.free(response)
                    throw KVClientError.protocolError("node \(node.id): \(error)")
                }
            }
        } catch {
            call.abandoned = true
            throw error
        }
    }

    /// What a call that did not complete with `.ok` fails with.
    static func failure(_ status: RpcStatus, node: Int, type: UInt8) -> KVClientError {
        switch status {
        case .ok: .protocolError("node \(node): no failure")  // not called for .ok
        case .sessionFailed: .timedOut(node: node)
        // eeRPC's answer to a request type without a handler: whatever answers on the node's
        // ports does not serve this eekv protocol (another version, or not an eekv node).
        case .rejected:
            .protocolError(
                "node \(node) does not serve eekv request type \(type): it is not an eekv node, or one that speaks "
                    + "another version of the eekv protocol")
        case .responseTooLarge(let size): .protocolError("node \(node) sent a reply of \(size) bytes, beyond any message")
        }
    }

    private func session(node: ClusterConfig.Node, thread: Int) throws -> Int {
        let id = node.id * 64 + thread
        if let s = sessions[id], rpc.endpoint.sessionState(s) == .connected { return s }
        // Connecting runs the event loop; from inside it (a completion starting a follow-up
        // request) that would reuse the receive burst still being processed.
        guard !inEventLoop else {
            throw KVClientError.unreachable(node: node.id, "the session was lost; the next call reconnects")
        }
        if let old = sessions.removeValue(forKey: id) {
            // A session that failed (its node restarted or went quiet) keeps its number until it
            // is destroyed; without this every such failure held one of the endpoint's sessions
            // for good, and after 256 the client could reach no node at all.
            rpc.endpoint.abandonConnect(old)
        }
        // Connecting runs the event loop too: completions that run meanwhile are inside it (a
        // synchronous call from one fails at once instead of waiting on a lane whose operation
        // is this connect's, not yet sent).
        inEventLoop = true
        defer { inEventLoop = false }
        do {
            // Node n presents the certificate `eekv certs` issued as node-n: another node's, valid
            // as it is for the CA, must not answer in its place.
            let s = try rpc.connect(
                host: node.host, port: node.port, remoteRpcID: UInt8(thread), peerName: "node-\(node.id)",
                timeoutNs: timeoutNs)
            sessions[id] = s
            return s
        } catch {
            throw KVClientError.unreachable(node: node.id, "\(error)")
        }
    }
}
