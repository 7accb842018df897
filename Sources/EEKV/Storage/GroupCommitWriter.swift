import CLMDB
import CSystemShims
import EERPC
import Glibc
import Synchronization

/// The outcome of one write.
public enum WriteResult: UInt8, Sendable, BitwiseCopyable {
    case committed = 0
    /// A delete of a key that was not there (the batch still committed).
    case notFound = 1
    /// The batch could not be committed (I/O error, store unusable): nothing of it was written.
    case failed = 2
    /// The store has no room for this write: its map is at `maxMapSize`, or the file system is
    /// full. It was not written; deletes, and writes that fit, still go through.
    case full = 3
    /// A merge found a stored value that is not a ``FieldRecord`` (nothing written).
    case notARecord = 4
    /// A merge's result would exceed the largest value (nothing written).
    case tooLarge = 5
}

/// How a write is acknowledged once its transaction has committed (or failed). Called on the
/// committing thread: the writer's, or (`nosync`) a submitter's, inside its `commitPending`.
public enum WriteAck: BitwiseCopyable, @unchecked Sendable {
    /// Answer an eeRPC request (a background handle, whose `respond` is thread-safe): the result
    /// byte goes in its preallocated response.
    case request(RequestHandle)
    /// Store the result and bump a counter (in-process callers: tests, benchmarks).
    case counter(UnsafeMutablePointer<Atomic<Int>>, result: UnsafeMutablePointer<WriteResult>?)
}

/// One put, delete or merge (`value` is then the patch, a valid ``FieldRecord``). `key` and
/// `value` point into memory the submitter keeps alive until the acknowledgement (for a request:
/// its runtime-owned copy, valid until `respond`).
public struct WriteOp: BitwiseCopyable, @unchecked Sendable {
    public enum Kind: UInt8, BitwiseCopyable, Sendable {
        case put
        case delete
        case merge
    }
    public var kind: Kind
    public var key: UnsafeRawBufferPointer
    public var value: UnsafeRawBufferPointer
    public var ack: WriteAck

    public init(kind: Kind, key: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer, ack: WriteAck) {
        self.kind = kind
        self.key = key
        self.value = value
        self.ack = ack
    }
}

/// LMDB has one writer at a time; this is it. Dispatch threads (and anyone else) submit puts,
/// deletes and merges to a lock-free queue; the writer thread takes everything waiting (up to
/// `maxBatch`), applies it in one transaction, commits (with fsync unless the store is `nosync`),
/// and only then acknowledges each write. One fsync thus covers a whole batch (group commit), and
/// nothing is acknowledged before it is durable.
///
/// Without fsync a commit takes microseconds, less than waking the writer thread and switching to
/// it and back (on a node whose threads share a core, that cost YCSB-B 5 % of its throughput). So
/// in `nosync` mode a dispatch thread submits its burst's writes with `commitLater` and then calls
/// ``commitPending()``, which commits the queue on that thread, in one transaction, if nobody else
/// is committing; the writer thread only takes what arrives while someone else commits. The
/// `committer` flag is the right to commit: whoever holds it owns the batch arrays, the merge
/// buffer and LMDB's write transaction. Taking it never waits: a thread that finds it taken wakes
/// the writer thread instead. A plain `submit` leaves the commit to the writer thread, which
/// batches what many submitters queue.
///
/// `MDB_MAP_FULL` aborts the batch, grows the map and replays it. When the map cannot grow (at its
/// write limit, or the disk is full) the batch is replayed in halves, down to single writes, so
/// that the writes that fit (deletes above all, which make room) commit and only the others fail
/// with `.full`; a delete that still finds no room takes it from the map's delete reserve.
/// Another failure is replayed the same way, so only the writes that fail alone fail.
public final class GroupCommitWriter: @unchecked Sendable {
    public static let maxBatch = 1_024
    /// Longest wait for a batch to fill up to the previous batch's size (fsync only).
    static let fillWaitNs: UInt64 = 200_000

    private let environment: LMDBEnvironment
    private let queue = BoundedQueue<WriteOp>(capacity: 65_536)
    private let waiter = IdleWaiter()
    private let running = Atomic<Bool>(true)
    /// Threads inside `submit`; `stop` waits for them, so no write is queued after the writer ends.
    private let submitters = Atomic<Int>(0)
    /// Set by `stop` once no submitter is left: the writer thread ends when the queue is empty.
    private let finishing = Atomic<Bool>(false)
    /// The right to commit (see the type's comment).
    private let committer = Atomic<Bool>(false)
    /// Whether writes queued with `commitLater` are committed by their submitter's
    /// `commitPending` (`nosync` stores: a submitter must never wait for an fsync).
    private let commitsInline: Bool
    private var thread: JoinableThread?
    // The committer's state, allocated once.
    private let batch: UnsafeMutablePointer<WriteOp>
    private let results: UnsafeMutablePointer<WriteResult>
    /// Where a merge builds its record before storing it: the stored value it reads points into
    /// the map, where the put could move it. Allocated by the first merge, used only by the
    /// `committer`, freed in deinit.
    private var mergeScratch: UnsafeMutableRawPointer?
    /// Why the last failed write failed (an LMDB or errno code, -1 for an unusable store), for
    /// the reply that tells the client.
    private var failureCode: Int32 = 0
    /// The map could not grow during the batch being committed (see `growMap`).
    private var mapCannotGrow = false
    /// Batches committed and writes acknowledged (for stats and tests).
    public let commits = Atomic<Int>(0)
    public let writes = Atomic<Int>(0)
    public let mapGrowths = Atomic<Int>(0)
    /// Writes refused because the store had no room for them.
    public let rejectedFull = Atomic<Int>(0)
    /// Write transactions committed: one per batch, more when a batch is replayed in parts
    /// because the store is full.
    public let transactions = Atomic<Int>(0)
    /// Deletes that found no room below the write limit and were applied in the delete reserve.
    public let reserveDeletes = Atomic<Int>(0)
    /// Map growths that failed for a reason other than the limit or a full file system.
    public let failedGrowths = Atomic<Int>(0)
    /// Writes answered with a store error (their transaction failed; nothing of them written).
    public let failedWrites = Atomic<Int>(0)

    init(environment: LMDBEnvironment) {
        self.environment = environment
        commitsInline = environment.durability == .nosync
        batch = .allocate(capacity: Self.maxBatch)
        results = .allocate(capacity: Self.maxBatch)
        thread = Threads.spawn(name: "eekv-writer") { [unowned(unsafe) self] in self.run() }
    }

    deinit {
        stop()
        batch.deallocate()
        results.deallocate()
        mergeScratch?.deallocate()
    }

    /// Queues a write for the writer thread. With `commitLater` in `nosync` mode, the caller
    /// commits it instead by calling ``commitPending()`` once it has queued its burst (a dispatch
    /// thread, after each receive burst). False once the writer has been stopped (the caller
    /// answers with an error).
    @inline(__always)
    public func submit(_ op: WriteOp, commitLater: Bool = false) -> Bool {
        // Sequentially consistent with `stop`: either this sees `running` false, or `stop` sees
        // this submitter and waits for it.
        submitters.add(1, ordering: .sequentiallyConsistent)
        defer { submitters.subtract(1, ordering: .releasing) }
        guard running.load(ordering: .sequentiallyConsistent) else { return false }
        while !queue.push(op) { _ = sched_yield() }
        if !(commitLater && commitsInline) { waiter.notify() }
        return true
    }

    /// Commits what is queued on this thread, if nobody else is committing (`nosync` only; the
    /// acknowledgements run here); else, or if more than a batch is waiting, wakes the writer
    /// thread for the rest. Cheap when the queue is empty.
    @inline(__always)
    public func commitPending() {
        guard commitsInline, !queue.isEmpty else { return }
        submitters.add(1, ordering: .sequentiallyConsistent)
        defer { submitters.subtract(1, ordering: .releasing) }
        // Once stopping, the writer thread drains the queue.
        if running.load(ordering: .sequentiallyConsistent) && commitQueued() { return }
        waiter.notify()
    }

    /// Commits what is queued (one batch) on this thread if nobody else is committing. True if
    /// the queue is empty afterwards; false if the writer thread must take over (someone was
    /// committing, or more than a batch was waiting).
    private func commitQueued() -> Bool {
        guard committer.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            return false
        }
        let n = takeBatch()
        if n > 0 { commit(count: n) }
        committer.store(false, ordering: .releasing)
        return queue.isEmpty
    }

    /// Moves up to `maxBatch` queued writes into `batch` (committer only).
    private func takeBatch() -> Int {
        var n = 0
        while n < Self.maxBatch, let op = queue.pop() {
            batch[n] = op
            n += 1
        }
        return n
    }

    /// Commits everything queued, then ends the writer thread. Idempotent.
    public func stop() {
        guard running.exchange(false, ordering: .sequentiallyConsistent) else { return }
        while submitters.load(ordering: .sequentiallyConsistent) != 0 { _ = sched_yield() }
        finishing.store(true, ordering: .releasing)
        waiter.wake()
        thread?.join()
        thread = nil
    }

    private func run() {
        var lastBatch = 0
        while true {
            if !queue.isEmpty {
                // A submitter is committing: it takes what it can, and what is left is ours.
                guard committer.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
                    _ = sched_yield()
                    continue
                }
                var n = takeBatch()
                // With fsync a commit costs about a millisecond, so when fewer writes are waiting
                // than the last batch held (their writers are still receiving the last
                // acknowledgements), wait a little for them: one fsync for the whole group
                // instead of two half-empty ones.
                if n > 0 && n < lastBatch && environment.durability == .fsync {
                    let deadline = ee_now_ns() &+ Self.fillWaitNs
                    while n < lastBatch && n < Self.maxBatch && ee_now_ns() < deadline {
                        if let op = queue.pop() {
                            batch[n] = op
                            n += 1
                        } else {
                            spinPause()
                        }
                    }
                }
                if n > 0 {
                    lastBatch = n
                    commit(count: n)
                }
                committer.store(false, ordering: .releasing)
                continue
            }
            // `stop` waited for every submitter before setting `finishing`, so once it is seen
            // (acquiring their pushes) an empty queue stays empty. The emptiness seen above may
            // predate a last push: look again.
            if finishing.load(ordering: .acquiring) {
                if queue.isEmpty { return }
                continue
            }
            waiter.sleep { !queue.isEmpty || finishing.load(ordering: .relaxed) }
        }
    }

    private func commit(count n: Int) {
        try? environment.closeReserve()  // one a failed remap left open
        mapCannotGrow = false
        var outcome = environment.isUsable ? apply(0..<n) : -1
        while outcome == MDB_MAP_FULL && growMap() { outcome = apply(0..<n) }
        if outcome == MDB_MAP_FULL { outcome = environment.isUsable ? ENOSPC : -1 }
        // No room (the map cannot grow, or in fsync mode pwrite found the disk full): commit
        // what fits. Another failure of a batch of several (one write LMDB refuses, a batch too
        // large for memory): commit the others, so one write does not fail a thousand.
        if noRoom(outcome) || (n > 1 && Self.failsAlone(outcome) && environment.isUsable) {
            applyFitting(0..<n)
            outcome = 0
        }
        if outcome != 0 {
            failureCode = outcome
            for i in 0..<n { results[i] = .failed }
            failedWrites.add(n, ordering: .relaxed)
        } else {
            commits.add(1, ordering: .relaxed)
        }
        for i in 0..<n { acknowledge(batch[i], results[i]) }
        writes.add(n, ordering: .relaxed)
    }

    /// A batch failed (no room, or a write LMDB refused): commits the writes of `range` that
    /// can be, in as few transactions as it can. A range that fails is split in halves, in
    /// order, down to single writes, which get `.full` when there is no room for them (a delete
    /// first tries the reserve) and `.failed` otherwise. One write per transaction, as before,
    /// cost an fsync per write that fit: a batch of deletes sent to make room took a second.
    private func applyFitting(_ range: Range<Int>) {
        guard environment.isUsable else {
            failureCode = -1
            for i in range { results[i] = .failed }
            failedWrites.add(range.count, ordering: .relaxed)
            return
        }
        var r = apply(range)
        // A batch split for another reason before it met a full map: grow it first.
        while r == MDB_MAP_FULL && growMap() { r = apply(range) }
        if r == 0 { return }
        if range.count > 1 && (r == MDB_MAP_FULL || noRoom(r) || Self.failsAlone(r)) {
            let middle = range.lowerBound + range.count / 2
            applyFitting(range.lowerBound..<middle)
            applyFitting(middle..<range.upperBound)
            return
        }
        if range.count == 1 && r == MDB_MAP_FULL && batch[range.lowerBound].kind == .delete {
            r = applyInReserve(range.lowerBound)
            if r == 0 { return }
        }
        if r == MDB_MAP_FULL || noRoom(r) {
            for i in range { results[i] = .full }
            rejectedFull.add(range.count, ordering: .relaxed)
        } else {
            failureCode = r
            for i in range { results[i] = .failed }
            failedWrites.add(range.count, ordering: .relaxed)
        }
    }

    /// Grows the map for a transaction that met `MDB_MAP_FULL`; false once it cannot for the
    /// rest of this batch (at the write limit, the disk full, or another failure, counted), so
    /// the batch's parts do not each try again. While the old map is in place the store is as
    /// good as full, and the writes that fit (deletes among them) still commit.
    private func growMap() -> Bool {
        guard !mapCannotGrow else { return false }
        do throws(StoreError) {
            try environment.grow()
            mapGrowths.add(1, ordering: .relaxed)
            return true
        } catch .full, .diskFull {
        } catch {
            // Another reason: no address space for the larger map, a file system that cannot
            // allocate.
            failedGrowths.add(1, ordering: .relaxed)
        }
        mapCannotGrow = true
        return false
    }

    /// Codes that one write (or the batch's size) brings about, not the store: a batch that
    /// failed with one of these is worth replaying in parts. A failing disk (EIO at commit) or
    /// a corrupt environment would fail every part alike.
    private static func failsAlone(_ code: Int32) -> Bool {
        code == MDB_BAD_VALSIZE || code == MDB_TXN_FULL || code == MDB_PAGE_FULL || code == ENOMEM || code == EINVAL
    }

    /// A delete that found no room below the write limit, applied with the map let into the
    /// delete reserve (see ``LMDBEnvironment/deleteReserve``), which is closed again after it.
    /// Returns its outcome, or `MDB_MAP_FULL` when the reserve cannot be opened or is used up.
    private func applyInReserve(_ i: Int) -> Int32 {
        do throws(StoreError) {
            try environment.openReserve()
        } catch {
            return environment.isUsable ? MDB_MAP_FULL : -1
        }
        reserveDeletes.add(1, ordering: .relaxed)
        let r = apply(i..<(i + 1))
        // A failed remap leaves the map larger (puts may then use the reserve until the next
        // attempt: `closeReserve` is tried again before each batch) or, if LMDB lost it, the
        // store unusable, as a failed growth does.
        try? environment.closeReserve()
        return r
    }

    /// The file could not take the pages: the file system (or the user's quota) is full. A
    /// commit whose write came up short fails with EIO: that counts too when the file system is
    /// (nearly) full.
    private func noRoom(_ code: Int32) -> Bool {
        code == ENOSPC || code == EDQUOT || (code == EIO && environment.fileSystemNearlyFull)
    }

    /// One transaction for `batch[range]`: 0 on commit, `MDB_MAP_FULL` to grow and replay,
    /// another code on failure (nothing written).
    private func apply(_ range: Range<Int>) -> Int32 {
        var txn: OpaquePointer?
        var r = mdb_txn_begin(environment.env, nil, 0, &txn)
        guard r == 0 else { return r }
        for i in range {
            let op = batch[i]
            var k = MDB_val(mv_size: op.key.count, mv_data: UnsafeMutableRawPointer(mutating: op.key.baseAddress))
            switch op.kind {
            case .put:
                // LMDB reserves the room and we copy the value in: its own memcpy would be glibc's
                // (see `ee_copy`).
                var v = MDB_val(mv_size: op.value.count, mv_data: nil)
                r = mdb_put(txn, environment.dbi, &k, &v, UInt32(MDB_RESERVE))
                if r == 0, let source = op.value.baseAddress, op.value.count > 0 { ee_copy(v.mv_data, source, op.value.count) }
                results[i] = .committed
            case .merge:
                r = merge(txn, &k, patch: op.value, result: &results[i])
            case .delete:
                r = mdb_del(txn, environment.dbi, &k, nil)
                if r == MDB_NOTFOUND {
                    r = 0
                    results[i] = .notFound
                } else {
                    results[i] = .committed
                }
            }
            if r != 0 {
                mdb_txn_abort(txn)
                return r
            }
        }
        r = mdb_txn_commit(txn)
        if r == 0 { transactions.add(1, ordering: .relaxed) }
        return r
    }

    /// A merge inside the batch's transaction: reads the stored record (seeing the batch's earlier
    /// writes), merges the patch into the scratch buffer and stores the result. A stored value
    /// that is not a record, or a result that is too large, fails this write alone (0 returned).
    private func merge(
        _ txn: OpaquePointer?, _ k: inout MDB_val, patch: UnsafeRawBufferPointer, result: inout WriteResult
    ) -> Int32 {
        var old = MDB_val()
        var r = mdb_get(txn, environment.dbi, &k, &old)
        guard r == 0 || r == MDB_NOTFOUND else { return r }
        let stored = r == 0 ? UnsafeRawBufferPointer(start: old.mv_data, count: old.mv_size) : nil
        let capacity = KVProtocol.maxValueSize
        let scratch = mergeScratch ?? UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
        mergeScratch = scratch
        switch FieldRecord.merge(stored: stored, patch: patch, into: scratch, capacity: capacity) {
        case .failure(.notARecord):
            result = .notARecord
            return 0
        case .failure(.tooLarge):
            result = .tooLarge
            return 0
        case .success(let n):
            var v = MDB_val(mv_size: n, mv_data: nil)
            r = mdb_put(txn, environment.dbi, &k, &v, UInt32(MDB_RESERVE))
            if r == 0 { ee_copy(v.mv_data, scratch, n) }
            result = .committed
            return r
        }
    }

    @inline(__always)
    private func acknowledge(_ op: WriteOp, _ result: WriteResult) {
        switch op.ack {
        case .request(let handle):
            var response = handle.preallocatedResponse
            var w = ByteWriter(response)
            w.u8(KVStatus(writeResult: result).rawValue)
            if result == .tooLarge {
                let message: StaticString = "the merged record would exceed the largest value"
                w.bytes(UnsafeRawBufferPointer(start: message.utf8Start, count: message.utf8CodeUnitCount))
            } else if result == .failed {
                // mdb_strerror covers errno values too; its text is static.
                let reason = failureCode == -1 ? "the store is unusable after an earlier failure; restart the node"
                    : "the write's transaction failed: " + String(cString: mdb_strerror(failureCode))
                var text = reason
                _ = text.withUTF8 { w.bytes(UnsafeRawBufferPointer($0)) }
            }
            response.resize(to: w.count)
            handle.respond(response)
        case .counter(let counter, let slot):
            slot?.pointee = result
            counter.pointee.add(1, ordering: .releasing)
        }
    }
}
