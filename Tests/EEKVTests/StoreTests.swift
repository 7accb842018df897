import EEKV
import EERPC
import Glibc
import Synchronization
import Testing

/// A fresh directory under /tmp, removed (with its files) on deinit.
final class TempDirectory {
    let path: String
    init() {
        var template = Array("/tmp/eekv-test-XXXXXX".utf8CString)
        path = String(cString: mkdtemp(&template)!)
    }
    deinit { removeTree(path) }
}

func removeTree(_ path: String) {
    if let dir = opendir(path) {
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) {
                String(cString: $0.baseAddress!.assumingMemoryBound(to: CChar.self))
            }
            if name == "." || name == ".." { continue }
            let child = path + "/" + name
            if entry.pointee.d_type == UInt8(DT_DIR) { removeTree(child) } else { unlink(child) }
        }
        closedir(dir)
    }
    rmdir(path)
}

/// Writes through the group-commit writer and waits for the acknowledgement.
final class SyncWriter {
    let store: Store
    let counter = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1)
    let result = UnsafeMutablePointer<WriteResult>.allocate(capacity: 1)
    init(_ store: Store) {
        self.store = store
        counter.initialize(to: Atomic(0))
    }
    deinit {
        counter.deinitialize(count: 1)
        counter.deallocate()
        result.deallocate()
    }

    @discardableResult
    func write(_ kind: WriteOp.Kind, _ key: [UInt8], _ value: [UInt8] = []) -> WriteResult {
        let before = counter.pointee.load(ordering: .acquiring)
        key.withUnsafeBytes { k in
            value.withUnsafeBytes { v in
                #expect(store.writer.submit(WriteOp(kind: kind, key: k, value: v, ack: .counter(counter, result: result))))
                while counter.pointee.load(ordering: .acquiring) == before { usleep(50) }
            }
        }
        return result.pointee
    }
}

extension SyncWriter {
    /// Submits `writes` as one batch (the store must be `nosync`: `commitPending` commits the
    /// queue on this thread) and waits for every acknowledgement; returns each write's result.
    func writeBatch(_ writes: [(kind: WriteOp.Kind, key: [UInt8], value: [UInt8])]) -> [WriteResult] {
        // Copies the writes own until they are acknowledged: keys and values, and the results.
        let copies = writes.map { w in
            (key: UnsafeMutableRawBufferPointer.allocate(byteCount: max(w.key.count, 1), alignment: 1),
             value: UnsafeMutableRawBufferPointer.allocate(byteCount: max(w.value.count, 1), alignment: 1))
        }
        let results = UnsafeMutablePointer<WriteResult>.allocate(capacity: writes.count)
        let done = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1)
        done.initialize(to: Atomic(0))
        defer {
            for c in copies {
                c.key.deallocate()
                c.value.deallocate()
            }
            results.deallocate()
            done.deallocate()
        }
        for (i, w) in writes.enumerated() {
            w.key.withUnsafeBytes { copies[i].key.copyMemory(from: $0) }
            w.value.withUnsafeBytes { copies[i].value.copyMemory(from: $0) }
            let op = WriteOp(
                kind: w.kind, key: UnsafeRawBufferPointer(rebasing: copies[i].key[..<w.key.count]),
                value: UnsafeRawBufferPointer(rebasing: copies[i].value[..<w.value.count]),
                ack: .counter(done, result: results + i))
            #expect(store.writer.submit(op, commitLater: true))
        }
        store.writer.commitPending()
        while done.pointee.load(ordering: .acquiring) < writes.count { usleep(100) }
        return Array(UnsafeBufferPointer(start: results, count: writes.count))
    }
}

@Suite("LMDB store and group commit")
struct StoreTests {
    /// One write LMDB refuses (here a key longer than its 511 bytes, which the node's handlers
    /// never pass on but a program using the store directly might) used to fail its whole batch.
    /// With 401 records of 3,000 bytes the batch also outgrows the 1 MiB map: its parts grow
    /// the map rather than answer "full".
    @Test("a write that fails alone fails alone: the rest of its batch commits", arguments: [41, 401])
    func oneBadWriteInABatch(count: Int) throws {
        let dir = TempDirectory()
        let store = try Store(directory: dir.path, durability: .nosync, mapSize: 1 << 20)
        defer { store.close() }
        let keys = (0..<count).map { $0 == 20 ? [UInt8](repeating: 0x6B, count: 600) : StoreFullTests.key($0) }
        let results = SyncWriter(store).writeBatch(keys.map { (.put, $0, StoreFullTests.value) })
        #expect(results[20] == .failed)
        #expect((0..<keys.count).filter { $0 != 20 }.allSatisfy { results[$0] == .committed })
        #expect(store.writer.failedWrites.load(ordering: .relaxed) == 1)
        #expect(store.writer.rejectedFull.load(ordering: .relaxed) == 0)
        let reader = try store.makeReader()
        for i in 0..<keys.count where i != 20 { #expect(try reader.get(keys[i]) == StoreFullTests.value) }
    }

    @Test("random puts, deletes, gets and scans (from or after a key) agree with an in-memory model, and survive a restart")
    func modelAndRestart() throws {
        let dir = TempDirectory()
        var model: [[UInt8]: [UInt8]] = [:]
        var rng = SplitMix64(seed: 17)
        do {
            let store = try Store(directory: dir.path, durability: .nosync)
            defer { store.close() }
            let writer = SyncWriter(store)
            let reader = try store.makeReader()
            for step in 0..<3_000 {
                let key = Array("k\(rng.next() % 400)".utf8)
                switch rng.next() % 10 {
                case 0..<5:
                    let value = (0..<Int(rng.next() % 300)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                    #expect(writer.write(.put, key, value) == .committed)
                    model[key] = value
                case 5..<7:
                    let expected: WriteResult = model[key] == nil ? .notFound : .committed
                    #expect(writer.write(.delete, key) == expected)
                    model[key] = nil
                case 7..<9:
                    #expect(try reader.get(key) == model[key], "step \(step)")
                default:
                    let start = Array("k\(rng.next() % 400)".utf8)
                    let limit = Int(rng.next() % 20) + 1
                    // Half the scans start after `start` rather than at it.
                    let after = limit % 2 == 0
                    let expected = model.keys.filter {
                        after ? start.lexicographicallyPrecedes($0) : !$0.lexicographicallyPrecedes(start)
                    }.sorted {
                        $0.lexicographicallyPrecedes($1)
                    }.prefix(limit)
                    var seen: [[UInt8]] = []
                    try start.withUnsafeBytes { s in
                        try reader.withSnapshot { snapshot throws(StoreError) in
                            try snapshot.scan(from: s, after: after, to: nil, limit: limit) { k, v in
                                seen.append(Array(k))
                                #expect(Array(v) == model[Array(k)])
                                return true
                            }
                        }
                    }
                    #expect(seen == Array(expected), "scan at step \(step)")
                }
            }
        }
        // Reopen: everything committed is there.
        let store = try Store(directory: dir.path, durability: .fsync)
        defer { store.close() }
        let reader = try store.makeReader()
        for (k, v) in model { #expect(try reader.get(k) == v) }
    }

    @Test("a full map is grown and the batch replayed: no write is lost")
    func mapGrowth() throws {
        let dir = TempDirectory()
        let store = try Store(directory: dir.path, durability: .nosync, mapSize: 1 << 20)
        defer { store.close() }
        let writer = SyncWriter(store)
        let value = [UInt8](repeating: 0xAB, count: 2_000)
        for i in 0..<2_000 { #expect(writer.write(.put, Array("key-\(i)".utf8), value) == .committed) }
        #expect(store.writer.mapGrowths.load(ordering: .relaxed) >= 1)
        let reader = try store.makeReader()
        for i in stride(from: 0, to: 2_000, by: 97) { #expect(try reader.get(Array("key-\(i)".utf8)) == value) }
    }

    @Test("concurrent writers are batched into group commits")
    func groupCommit() throws {
        let dir = TempDirectory()
        let store = try Store(directory: dir.path, durability: .fsync)
        defer { store.close() }
        let counter = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1)
        counter.initialize(to: Atomic(0))
        defer { counter.deallocate() }
        let keys = (0..<5_000).map { Array("g\($0)".utf8) }
        let value: [UInt8] = [1, 2, 3]
        keys.withUnsafeBufferPointer { ks in
            value.withUnsafeBytes { v in
                for k in ks {
                    k.withUnsafeBytes { kb in
                        // The key bytes live in `keys` until the end of this scope.
                        let stable = UnsafeRawBufferPointer(start: kb.baseAddress, count: kb.count)
                        _ = store.writer.submit(WriteOp(kind: .put, key: stable, value: v, ack: .counter(counter, result: nil)))
                    }
                }
                while counter.pointee.load(ordering: .acquiring) < keys.count { usleep(100) }
            }
        }
        let commits = store.writer.commits.load(ordering: .relaxed)
        #expect(commits >= 1 && commits < keys.count / 4, "\(commits) commits for \(keys.count) writes")
        #expect(try store.makeReader().get(keys[4_999]) == value)
    }

    /// Without fsync a dispatch thread queues its burst's writes with `commitLater` and commits
    /// them itself with `commitPending`: one transaction for the burst, acknowledged before
    /// `commitPending` returns, and no thread switch. A plain `submit` goes to the writer thread.
    @Test("nosync: writes queued with commitLater commit in one transaction on the caller's thread")
    func inlineCommit() throws {
        let dir = TempDirectory()
        let store = try Store(directory: dir.path, durability: .nosync)
        defer { store.close() }
        let counter = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1)
        counter.initialize(to: Atomic(0))
        defer { counter.deallocate() }
        // Keys and values live until the end of the test; the committer reads them.
        let keys = (0..<10).map { Array("inline-\($0)".utf8) }
        // The writer thread takes whatever is queued while it is awake (at its start, say): let it
        // commit one write and fall asleep first. Nothing wakes it after that but a plain submit.
        let warmUp = Array("warm-up".utf8)
        warmUp.withUnsafeBytes { k in
            _ = store.writer.submit(WriteOp(kind: .put, key: k, value: k, ack: .counter(counter, result: nil)))
            while counter.pointee.load(ordering: .acquiring) < 1 { usleep(100) }
        }
        usleep(200_000)
        counter.pointee.store(0, ordering: .releasing)
        for round in 1...20 {
            let commitsBefore = store.writer.commits.load(ordering: .relaxed)
            for k in keys {
                k.withUnsafeBytes { kb in
                    let stable = UnsafeRawBufferPointer(start: kb.baseAddress, count: kb.count)
                    #expect(
                        store.writer.submit(
                            WriteOp(kind: .put, key: stable, value: stable, ack: .counter(counter, result: nil)),
                            commitLater: true))
                }
            }
            if round == 1 {
                usleep(20_000)
                #expect(counter.pointee.load(ordering: .acquiring) == 0, "the writer thread was not asked")
            }
            store.writer.commitPending()
            #expect(counter.pointee.load(ordering: .acquiring) == round * keys.count)
            #expect(store.writer.commits.load(ordering: .relaxed) == commitsBefore + 1, "one transaction per burst")
        }
        #expect(try store.makeReader().get(keys[9]) == keys[9])
        // A plain submit is the writer thread's.
        keys[0].withUnsafeBytes { kb in
            _ = store.writer.submit(WriteOp(kind: .delete, key: kb, value: kb, ack: .counter(counter, result: nil)))
            while counter.pointee.load(ordering: .acquiring) < 201 { usleep(100) }
        }
        #expect(try store.makeReader().get(keys[0]) == nil)
    }

    /// `stop` while four threads submit as fast as they can (two committing their own bursts,
    /// two leaving theirs to the writer thread): every submit that returned true is acknowledged
    /// as committed and is on disk after a reopen; the others were refused, none is left hanging.
    @Test("writes racing stop() are refused or committed, never lost", arguments: [Durability.nosync, .fsync])
    func stopRace(durability: Durability) throws {
        let dir = TempDirectory()
        let threads = 4
        let perThread = 100_000
        // Keys live until the end of the test; the writer reads them until it acknowledges.
        let keys = (0..<threads).map { t in (0..<perThread).map { Array("t\(t)-\($0)".utf8) } }
        let acked = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1)
        acked.initialize(to: Atomic(0))
        defer { acked.deallocate() }
        let accepted = Atomic<Int>(0)
        let acceptedPerThread = UnsafeMutableBufferPointer<Int>.allocate(capacity: threads)
        defer { acceptedPerThread.deallocate() }
        do {
            let store = try Store(directory: dir.path, durability: durability)
            let started = Atomic<Int>(0)
            let ackPointer = UnsafeSendable(acked)
            let perThreadPointer = UnsafeSendable(acceptedPerThread)
            let workers = (0..<threads).map { t in
                Threads.spawn(name: "submitter-\(t)") {
                    started.add(1, ordering: .relaxed)
                    var n = 0
                    while n < perThread {
                        let ok = keys[t][n].withUnsafeBytes { k in
                            let stable = UnsafeRawBufferPointer(start: k.baseAddress, count: k.count)
                            return store.writer.submit(
                                WriteOp(kind: .put, key: stable, value: stable, ack: .counter(ackPointer.value, result: nil)),
                                commitLater: t % 2 == 0)
                        }
                        if !ok { break }
                        // Half the submitters commit their own writes in bursts of 8, as
                        // dispatch threads do (nosync); the others leave them to the writer.
                        if t % 2 == 0 && n % 8 == 7 { store.writer.commitPending() }
                        n += 1
                    }
                    perThreadPointer.value[t] = n
                    accepted.add(n, ordering: .relaxed)
                }
            }
            while started.load(ordering: .relaxed) < threads { usleep(100) }
            usleep(2_000)
            store.close()
            for w in workers { w.join() }
            #expect(acked.pointee.load(ordering: .acquiring) == accepted.load(ordering: .relaxed))
            #expect(accepted.load(ordering: .relaxed) < threads * perThread, "stop came after every write")
        }
        let reopened = try Store(directory: dir.path, durability: .nosync)
        defer { reopened.close() }
        let reader = try reopened.makeReader()
        for t in 0..<threads where acceptedPerThread[t] > 0 {
            let last = keys[t][acceptedPerThread[t] - 1]
            #expect(try reader.get(last) == last)
        }
    }
}

/// Hands a pointer to a test thread (the test keeps its memory alive until the thread is joined).
struct UnsafeSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
