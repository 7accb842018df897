import EERPC
import Synchronization

/// Per dispatch thread state the handlers reach through the Rpc's context pointer.
final class DispatchState {
    let reader: StoreReader
    let store: Store
    let stats: KVServerStats
    /// The hash slots this node serves (its `slots` in the cluster config).
    let slots: ClosedRange<Int>
    /// Whether it serves every slot (a node alone in its cluster): scans then skip no key.
    let servesEverySlot: Bool
    init(reader: StoreReader, store: Store, stats: KVServerStats, slots: ClosedRange<Int>) {
        self.reader = reader
        self.store = store
        self.stats = stats
        self.slots = slots
        servesEverySlot = slots == 0...(HashSlot.count - 1)
    }

    /// Whether `key`'s slot is this node's. A client whose cluster config differs from the
    /// node's would otherwise write where correctly routed reads never look.
    func serves(_ key: UnsafeRawBufferPointer) -> Bool { slots.contains(HashSlot.of(key)) }

    /// Whether a scan lists `key`: not if an earlier cluster layout left it here for a slot
    /// another node serves (its owner answers for it; a get or delete is routed there).
    @inline(__always)
    func scanShows(_ key: UnsafeRawBufferPointer) -> Bool { servesEverySlot || serves(key) }
}

/// Counters of a node (all threads), safe to read from anywhere.
public final class KVServerStats: Sendable {
    /// Well-formed requests of each kind this node took on, whatever their outcome (a write's
    /// commit or failure is counted by the store's writer, a refusal below).
    public let gets = Atomic<Int>(0)
    public let puts = Atomic<Int>(0)
    public let deletes = Atomic<Int>(0)
    public let merges = Atomic<Int>(0)
    public let scans = Atomic<Int>(0)
    public let multiGets = Atomic<Int>(0)
    /// Requests answered with `badRequest`.
    public let badRequests = Atomic<Int>(0)
    /// Requests answered with `storeError` by the handlers: a read that failed, a write while
    /// the node shuts down. (Writes whose commit failed: the store writer's `failedWrites`.)
    public let storeErrors = Atomic<Int>(0)
    /// Requests for a key whose slot another node serves (answered with `wrongNode`).
    public let wrongNode = Atomic<Int>(0)
    /// Replies refused for want of a buffer (answered with `busy`).
    public let busy = Atomic<Int>(0)
    /// Scan replies that stopped at ``KVProtocol/maxScanSkips`` keys of other nodes' slots.
    public let scanSkipBounds = Atomic<Int>(0)
    public init() {}
}

/// The request handlers of an eekv node.
enum KVHandlers {
    static func register(on nexus: Nexus, writer: GroupCommitWriter) throws {
        try nexus.register(type: KVProtocol.readType, mode: .foreground) { handleRead($0) }
        // Writes run in "deferred" mode: the runtime copies the request into a buffer that lives
        // until the reply, and the reply may come from any thread once the write's transaction
        // has committed: the writer thread's, or (nosync) this one's, which commits its burst's
        // writes in one transaction after the burst. The handler only queues the write, so it
        // runs on the dispatch thread (a background thread's hop cost YCSB-B 14 % of its read
        // rate on one core).
        try nexus.register(type: KVProtocol.writeType, mode: .deferred) { handle in
            handleWrite(handle, writer: writer)
        }
    }

    static func state(_ handle: RequestHandle) -> DispatchState {
        Unmanaged<DispatchState>.fromOpaque(handle.context!).takeUnretainedValue()
    }

    // MARK: Reads (dispatch thread)

    static func handleRead(_ handle: RequestHandle) {
        let state = state(handle)
        var r = ByteReader(handle.request)
        guard let rawOp = r.u8(), let op = KVOperation(rawValue: rawOp) else {
            return reject(handle, .badRequest, "unknown operation", state.stats)
        }
        do throws(StoreError) {
            switch op {
            case .get: try get(handle, &r, state)
            case .scan: try scan(handle, &r, state)
            case .multiGet: try multiGet(handle, &r, state)
            case .put, .delete, .merge: reject(handle, .badRequest, "writes use request type \(KVProtocol.writeType)", state.stats)
            }
        } catch {
            state.stats.storeErrors.add(1, ordering: .relaxed)
            reject(handle, .storeError, "\(error)", nil)
        }
    }

    private static func key(_ r: inout ByteReader) -> UnsafeRawBufferPointer? {
        guard let n = r.u16(), let k = r.take(Int(n)), Store.validKey(k) else { return nil }
        return k
    }

    private static func get(_ handle: RequestHandle, _ r: inout ByteReader, _ state: DispatchState) throws(StoreError) {
        guard let k = key(&r), r.remaining == 0 else {
            return reject(handle, .badRequest, "get needs one key of 1-511 bytes", state.stats)
        }
        guard state.serves(k) else { return rejectWrongNode(handle, k, state) }
        state.stats.gets.add(1, ordering: .relaxed)
        try state.reader.withSnapshot { s throws(StoreError) in
            guard let value = try s.get(k) else { return reply(handle, .notFound) }
            // Only a value stored beyond `maxValueSize` (by an older node) fits no reply; "busy"
            // would have a caller retry it for ever.
            guard 1 + value.count <= Wire.maxMessageSize else {
                return reject(handle, .tooLarge, "the value under key \(describe(k)) is too large for any reply", nil)
            }
            // Straight from the snapshot: on an encrypted session the seal is the only copy.
            var status = KVStatus.ok.rawValue
            let sent = withUnsafeBytes(of: &status) { handle.respond(copying: $0, value) }
            // The value fits a reply, so only buffers can run out.
            if !sent { rejectBusy(handle, state) }
        }
    }

    private static func scan(_ handle: RequestHandle, _ r: inout ByteReader, _ state: DispatchState) throws(StoreError) {
        guard let startLength = r.u16(), let start = r.take(Int(startLength)), startLength <= Store.maxKeySize,
            let flags = r.u8(),
            flags & ~(KVProtocol.scanHasEnd | KVProtocol.scanAfterStart | KVProtocol.scanResumable) == 0,
            let endLength = r.u16(), let endKey = r.take(Int(endLength)),
            endLength <= Store.maxKeySize, let limit = r.u32(), r.remaining == 0,
            limit >= 1 && limit <= KVProtocol.maxScanLimit
        else {
            return reject(handle, .badRequest, "malformed scan (keys up to 511 bytes, limit 1-100000)", state.stats)
        }
        state.stats.scans.add(1, ordering: .relaxed)
        let end: UnsafeRawBufferPointer? = flags & KVProtocol.scanHasEnd != 0 ? endKey : nil
        let after = flags & KVProtocol.scanAfterStart != 0
        let resumable = flags & KVProtocol.scanResumable != 0
        try state.reader.withSnapshot { s throws(StoreError) in
            // Two passes over one snapshot: size the reply, then fill it.
            let header = 1 + 4 + 1
            var size = header
            var count = 0
            var walked = 0  // keys the fill pass walks: those in the reply and those skipped before them
            var skipped = 0
            var more: UInt8 = 0
            var unfit: UnsafeRawBufferPointer? = nil
            // Keys point into the snapshot's pages: valid until `withSnapshot` returns.
            // The last key walked, shown or skipped: a bound the client may trust up to, so it
            // must not lie below a record of the reply.
            var lastWalked: UnsafeRawBufferPointer? = nil
            var resumeAfter: UnsafeRawBufferPointer? = nil
            // Skipped keys do not count towards the limit, so with any to skip the walk is open.
            let walkLimit = state.servesEverySlot ? Int(limit) + 1 : Int.max
            try s.scan(from: start, after: after, to: end, limit: walkLimit) { k, v in
                if !state.scanShows(k) {
                    if resumable && skipped == KVProtocol.maxScanSkips {
                        // Stop after the last key walked: named in the reply if it fits, else
                        // the reply ends at its last record and the client asks on from there.
                        let last = lastWalked.unsafelyUnwrapped
                        if count == 0 || size + 2 + last.count <= Wire.maxMessageSize {
                            resumeAfter = last
                            size += 2 + last.count
                            more = 2
                        } else {
                            more = 1
                        }
                        state.stats.scanSkipBounds.add(1, ordering: .relaxed)
                        return false
                    }
                    skipped += 1
                    walked += 1
                    lastWalked = k
                    return true
                }
                if count == Int(limit) {
                    more = 1
                    return false
                }
                let entry = 2 + k.count + 4 + v.count
                if size + entry > Wire.maxMessageSize {
                    more = 1
                    if count == 0 { unfit = k }
                    return false
                }
                size += entry
                count += 1
                walked += 1
                lastWalked = k
                return true
            }
            // A record goes alone in a reply if need be; only one stored beyond `maxValueSize`
            // (by an older node) fits none. Skipping it would hide it: the scan fails, naming it.
            if let unfit {
                let why = "the record under key \(describe(unfit)) is too large for any scan reply; get it by key"
                return reject(handle, .tooLarge, why, nil)
            }
            guard var response = size <= handle.preallocatedResponse.capacity
                ? handle.preallocatedResponse : handle.allocateResponse(size: size)
            else { return rejectBusy(handle, state) }
            var w = ByteWriter(response)
            w.u8(KVStatus.ok.rawValue)
            w.u32(UInt32(count))
            w.u8(more)
            do throws(StoreError) {
                try s.scan(from: start, after: after, to: end, limit: walked) { k, v in
                    if !state.scanShows(k) { return true }
                    w.u16(UInt16(k.count))
                    w.bytes(k)
                    w.u32(UInt32(v.count))
                    w.bytes(v)
                    return true
                }
            } catch {
                handle.discardResponse(response)
                throw error
            }
            if let resumeAfter {
                w.u16(UInt16(resumeAfter.count))
                w.bytes(resumeAfter)
            }
            response.resize(to: w.count)
            handle.respond(response)
        }
    }

    private static func multiGet(_ handle: RequestHandle, _ r: inout ByteReader, _ state: DispatchState)
        throws(StoreError)
    {
        guard let n = r.u16(), n >= 1, Int(n) <= KVProtocol.maxMultiGet else {
            return reject(handle, .badRequest, "mget needs 1-4096 keys", state.stats)
        }
        var keys = r
        for _ in 0..<n {
            guard key(&r) != nil else { return reject(handle, .badRequest, "mget keys must be 1-511 bytes", state.stats) }
        }
        guard r.remaining == 0 else { return reject(handle, .badRequest, "trailing bytes after mget keys", state.stats) }
        var owned = keys
        for _ in 0..<n {
            let k = key(&owned)!
            guard state.serves(k) else { return rejectWrongNode(handle, k, state) }
        }
        state.stats.multiGets.add(1, ordering: .relaxed)
        try state.reader.withSnapshot { s throws(StoreError) in
            // The reply answers the first `count` keys whose values fit one message; the client
            // asks again for the rest.
            var size = 1 + 2
            var count = 0
            var probe = keys
            while count < n {
                let k = key(&probe)!
                let entry = 1 + 4 + (try s.get(k)?.count ?? 0)
                guard size + entry <= Wire.maxMessageSize else {
                    if count > 0 { break }
                    // Any value a put stores fits alone: this one was stored beyond that limit.
                    let why = "the value under key \(describe(k)) is too large for an mget reply; get it by key"
                    return reject(handle, .tooLarge, why, nil)
                }
                size += entry
                count += 1
            }
            guard var response = size <= handle.preallocatedResponse.capacity
                ? handle.preallocatedResponse : handle.allocateResponse(size: size)
            else { return rejectBusy(handle, state) }
            var w = ByteWriter(response)
            w.u8(KVStatus.ok.rawValue)
            w.u16(UInt16(count))
            do throws(StoreError) {
                for _ in 0..<count {
                    if let v = try s.get(key(&keys)!) {
                        w.u8(1)
                        w.u32(UInt32(v.count))
                        w.bytes(v)
                    } else {
                        w.u8(0)
                        w.u32(0)
                    }
                }
            } catch {
                handle.discardResponse(response)
                throw error
            }
            response.resize(to: w.count)
            handle.respond(response)
        }
    }

    // MARK: Writes (dispatch thread → writer thread)

    static func handleWrite(_ handle: RequestHandle, writer: GroupCommitWriter) {
        let state = state(handle)  // a deferred handler runs on the dispatch thread
        let stats = state.stats
        var r = ByteReader(handle.request)
        guard let rawOp = r.u8(), let op = KVOperation(rawValue: rawOp) else {
            return reject(handle, .badRequest, "unknown operation", stats)
        }
        let write: WriteOp
        switch op {
        case .put:
            guard let k = key(&r) else { return reject(handle, .badRequest, "put needs a key of 1-511 bytes", stats) }
            guard state.serves(k) else { return rejectWrongNode(handle, k, state) }
            let value = r.rest()
            guard value.count <= KVProtocol.maxValueSize else { return reject(handle, .badRequest, "value too large", stats) }
            stats.puts.add(1, ordering: .relaxed)
            write = WriteOp(kind: .put, key: k, value: value, ack: .request(handle))
        case .delete:
            guard let k = key(&r), r.remaining == 0 else {
                return reject(handle, .badRequest, "delete needs one key of 1-511 bytes", stats)
            }
            guard state.serves(k) else { return rejectWrongNode(handle, k, state) }
            stats.deletes.add(1, ordering: .relaxed)
            write = WriteOp(kind: .delete, key: k, value: UnsafeRawBufferPointer(start: nil, count: 0), ack: .request(handle))
        case .merge:
            guard let k = key(&r) else { return reject(handle, .badRequest, "merge needs a key of 1-511 bytes", stats) }
            guard state.serves(k) else { return rejectWrongNode(handle, k, state) }
            let patch = r.rest()
            // Checked here, on the dispatch thread, so that the writer only merges valid patches.
            guard patch.count <= KVProtocol.maxValueSize, FieldRecord.isValid(patch),
                patch.loadUnaligned(as: UInt16.self) != 0
            else {
                return reject(handle, .badRequest, "a merge patch must be a field record with at least one field", stats)
            }
            stats.merges.add(1, ordering: .relaxed)
            write = WriteOp(kind: .merge, key: k, value: patch, ack: .request(handle))
        case .get, .scan, .multiGet:
            return reject(handle, .badRequest, "reads use request type \(KVProtocol.readType)", stats)
        }
        // Committed by the dispatch loop's `commitPending` after this burst (nosync), or by the
        // writer thread.
        if !writer.submit(write, commitLater: true) {
            stats.storeErrors.add(1, ordering: .relaxed)
            reject(handle, .storeError, "the node is shutting down", stats)
        }
    }

    // MARK: Replies

    static func reply(_ handle: RequestHandle, _ status: KVStatus) {
        var response = handle.preallocatedResponse
        response.data.storeBytes(of: status.rawValue, as: UInt8.self)
        response.resize(to: 1)
        handle.respond(response)
    }

    static func rejectWrongNode(_ handle: RequestHandle, _ key: UnsafeRawBufferPointer, _ state: DispatchState) {
        state.stats.wrongNode.add(1, ordering: .relaxed)
        reject(
            handle, .wrongNode,
            "slot \(HashSlot.of(key)) is not served here (slots \(state.slots.lowerBound)-\(state.slots.upperBound)); "
                + "the client's cluster config differs from the node's", nil)
    }

    static func rejectBusy(_ handle: RequestHandle, _ state: DispatchState) {
        state.stats.busy.add(1, ordering: .relaxed)
        reject(handle, .busy, "no buffer left for the reply; try again", nil)
    }

    /// A key for an error message: printable ASCII as is, other bytes as \xNN; the first 64 bytes.
    static func describe(_ key: UnsafeRawBufferPointer) -> String {
        var text = ""
        for b in key.prefix(64) {
            if b >= 0x20 && b < 0x7F && b != UInt8(ascii: "\\") {
                text.unicodeScalars.append(Unicode.Scalar(b))
            } else {
                text += (b < 16 ? "\\x0" : "\\x") + String(b, radix: 16)
            }
        }
        return "'\(text)\(key.count > 64 ? "..." : "")' (\(key.count) bytes)"
    }

    /// An error reply: the status and a short message (cut to one packet).
    static func reject(_ handle: RequestHandle, _ status: KVStatus, _ message: String, _ stats: KVServerStats?) {
        if status == .badRequest { stats?.badRequests.add(1, ordering: .relaxed) }
        var response = handle.preallocatedResponse
        var w = ByteWriter(response)
        w.u8(status.rawValue)
        var text = message
        text.withUTF8 { utf8 in
            let n = min(utf8.count, w.capacity - 1)
            w.bytes(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(utf8)[0..<n]))
        }
        response.resize(to: w.count)
        handle.respond(response)
    }
}
