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

@Suite("LMDB store and group commit")
struct StoreTests {
    @Test("random puts, deletes, gets and scans agree with an in-memory model, and survive a restart")
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
                    let expected = model.keys.filter { !$0.lexicographicallyPrecedes(start) }.sorted {
                        $0.lexicographicallyPrecedes($1)
                    }.prefix(limit)
                    var seen: [[UInt8]] = []
                    try start.withUnsafeBytes { s in
                        try reader.withSnapshot { snapshot throws(StoreError) in
                            try snapshot.scan(from: s, to: nil, limit: limit) { k, v in
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
}
