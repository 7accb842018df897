@testable import EEKV
import Glibc
import Synchronization
import Testing

/// A store with no room left: at its configured limit, or on a full file system. Writes that need
/// room fail with `.full`; nothing acknowledged is lost; reads, deletes and (after deletes) new
/// writes go on.
@Suite("A full store")
struct StoreFullTests {
    static let value = [UInt8](repeating: 0x5A, count: 3_000)
    static func key(_ i: Int) -> [UInt8] { Array("full-\(i)".utf8) }

    /// Puts records until the store refuses one; returns the ids of those committed.
    static func fill(_ writer: SyncWriter, limit: Int = 20_000, value: [UInt8] = value) -> [Int] {
        var committed: [Int] = []
        for i in 0..<limit {
            let r = writer.write(.put, key(i), value)
            if r == .full { return committed }
            #expect(r == .committed, "put \(i)")
            if r != .committed { return committed }
            committed.append(i)
        }
        Issue.record("the store never filled up")
        return committed
    }

    /// What every full store must still do: serve every acknowledged write, take deletes, and
    /// take new writes into the room the deletes made.
    static func checkStillServing(_ store: Store, _ writer: SyncWriter, committed: [Int], value: [UInt8] = value) throws {
        let reader = try store.makeReader()
        for i in committed { #expect(try reader.get(key(i)) == value, "read \(i)") }
        for i in committed.prefix(200) { #expect(writer.write(.delete, key(i)) == .committed, "delete \(i)") }
        #expect(writer.write(.put, key(1_000_000), value) == .committed)
        #expect(try reader.get(key(1_000_000)) == value)
        for i in committed.dropFirst(200) { #expect(try reader.get(key(i)) == value, "read \(i) after deletes") }
    }

    @Test("at max_store the map stops growing and writes that need room fail with .full", arguments: Durability.allCases)
    func limit(durability: Durability) throws {
        let dir = TempDirectory()
        let store = try Store(directory: dir.path, durability: durability, mapSize: 1 << 20, maxMapSize: 3 << 20)
        defer { store.close() }
        let writer = SyncWriter(store)
        let committed = Self.fill(writer)
        // 3 MiB holds several hundred 3,000-byte records (one overflow page each); the top
        // 256 KiB are kept for deletes.
        #expect(committed.count > 300)
        #expect(store.environment.deleteReserve == 256 << 10)
        #expect(store.mapSize == (3 << 20) - (256 << 10))
        #expect(store.writer.rejectedFull.load(ordering: .relaxed) == 1)
        try Self.checkStillServing(store, writer, committed: committed)
    }

    /// A growth that fails for a reason other than the limit or the disk (here: no address space
    /// for the larger map) leaves the old map in place: the store is as good as full until a
    /// growth succeeds, and is never unusable.
    @Test("a map growth that fails leaves a full but serving store, which grows once it can")
    func failedGrowth() throws {
        let dir = TempDirectory()
        let store = try Store(directory: dir.path, durability: .nosync, mapSize: 1 << 20, maxMapSize: 64 << 20)
        defer { store.close() }
        store.environment.failGrowthsForTesting.store(true, ordering: .relaxed)
        let writer = SyncWriter(store)
        let committed = Self.fill(writer)
        #expect(committed.count > 100)
        #expect(store.mapSize == 1 << 20)
        #expect(store.writer.failedGrowths.load(ordering: .relaxed) >= 1)
        #expect(store.writer.failedWrites.load(ordering: .relaxed) == 0, "no room is .full, not a store error")
        #expect(store.environment.isUsable)
        try Self.checkStillServing(store, writer, committed: committed)
        // Once the map can grow again, writes past the old size commit.
        store.environment.failGrowthsForTesting.store(false, ordering: .relaxed)
        for i in 2_000_000..<2_000_800 { #expect(writer.write(.put, Self.key(i), Self.value) == .committed, "put \(i)") }
        #expect(store.mapSize > 1 << 20)
    }

    @Test("in a full batch the deletes commit and only the writes that do not fit fail")
    func mixedBatch() throws {
        let dir = TempDirectory()
        let store = try Store(directory: dir.path, durability: .nosync, mapSize: 1 << 20, maxMapSize: 2 << 20)
        defer { store.close() }
        let committed = Self.fill(SyncWriter(store))
        #expect(committed.count > 100)
        // 50 deletes and 50 new puts, submitted together so that they share batches.
        let n = 100
        let counter = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1)
        counter.initialize(to: Atomic(0))
        let results = UnsafeMutablePointer<WriteResult>.allocate(capacity: n)
        results.initialize(repeating: .failed, count: n)
        defer {
            counter.deallocate()
            results.deallocate()
        }
        let keys = (0..<n).map { $0 % 2 == 0 ? Self.key(committed[$0 / 2]) : Self.key(500_000 + $0) }
        // Each new value takes two records' room and each delete frees one, so the batch cannot
        // fit whole: it must take the one-by-one path, where only some puts find room.
        let doubled = Self.value + Self.value
        keys.withUnsafeBufferPointer { ks in
            doubled.withUnsafeBytes { v in
                for i in 0..<n {
                    ks[i].withUnsafeBytes { k in
                        // `keys` and `value` outlive every acknowledgement (waited for below).
                        let stableKey = UnsafeRawBufferPointer(start: k.baseAddress, count: k.count)
                        let op = WriteOp(
                            kind: i % 2 == 0 ? .delete : .put, key: stableKey, value: i % 2 == 0 ? .init(start: nil, count: 0) : v,
                            ack: .counter(counter, result: results + i))
                        #expect(store.writer.submit(op))
                    }
                }
                while counter.pointee.load(ordering: .acquiring) < n { usleep(100) }
            }
        }
        let reader = try store.makeReader()
        for i in 0..<n {
            if i % 2 == 0 {
                #expect(results[i] == .committed, "delete \(i)")
                #expect(try reader.get(keys[i]) == nil)
            } else {
                #expect(results[i] == .committed || results[i] == .full, "put \(i): \(results[i])")
                #expect(try reader.get(keys[i]) == (results[i] == .committed ? doubled : nil))
            }
        }
        // The full path ran: some puts were refused, and some took the room the deletes made.
        let puts = stride(from: 1, to: n, by: 2).map { results[$0] }
        #expect(puts.contains(.full) && puts.contains(.committed), "\(puts)")
    }

    @Test(
        "on a full file system writes fail with .full instead of killing the process",
        .enabled(if: getuid() == 0, "mounts a small tmpfs"), arguments: Durability.allCases)
    func fileSystemFull(durability: Durability) throws {
        try Self.onFullFileSystem(durability: durability, value: Self.value, atLeast: 1_000)
    }

    /// A value of several pages that the file system cannot take whole: LMDB's write of the
    /// commit comes up short, which it reports as EIO, not ENOSPC.
    @Test(
        "on a full file system writes of values spanning several pages fail with .full too",
        .enabled(if: getuid() == 0, "mounts a small tmpfs"), arguments: Durability.allCases)
    func fileSystemFullLargeValues(durability: Durability) throws {
        let value = (0..<50_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try Self.onFullFileSystem(durability: durability, value: value, atLeast: 60)
    }

    /// Fills a store on an 8 MiB tmpfs with `value`s until writes fail with `.full` (after at
    /// least `atLeast` commits), then checks it still serves.
    static func onFullFileSystem(durability: Durability, value: [UInt8], atLeast: Int) throws {
        let dir = TempDirectory()
        let mountPoint = dir.path + "/small"
        #expect(mkdir(mountPoint, 0o755) == 0)
        try #require(mount("tmpfs", mountPoint, "tmpfs", 0, "size=8m") == 0, "mount: \(String(cString: strerror(errno)))")
        defer { umount2(mountPoint, Int32(MNT_DETACH)) }
        let store = try Store(directory: mountPoint + "/store", durability: durability, mapSize: 1 << 20)
        defer { store.close() }
        let writer = SyncWriter(store)
        let committed = fill(writer, value: value)
        // Most of the 8 MiB holds records before the file system runs out.
        #expect(committed.count > atLeast)
        #expect(store.writer.rejectedFull.load(ordering: .relaxed) >= 1)
        #expect(store.writer.failedWrites.load(ordering: .relaxed) == 0, "no room is .full, not a store error")
        try checkStillServing(store, writer, committed: committed, value: value)
    }

    /// A nosync store allocates its whole map at open (writes through the map must never find a
    /// hole the file system cannot fill); with the default 64 MiB map on an 8 MiB file system it
    /// used to refuse to start at all.
    @Test(
        "a nosync store starts on a file system with less room than its initial map, then fills it",
        .enabled(if: getuid() == 0, "mounts a small tmpfs"))
    func nosyncStartsOnSmallFileSystem() throws {
        let dir = TempDirectory()
        let mountPoint = dir.path + "/small"
        #expect(mkdir(mountPoint, 0o755) == 0)
        try #require(mount("tmpfs", mountPoint, "tmpfs", 0, "size=8m") == 0, "mount: \(String(cString: strerror(errno)))")
        defer { umount2(mountPoint, Int32(MNT_DETACH)) }
        let store = try Store(directory: mountPoint + "/store", durability: .nosync)
        defer { store.close() }
        #expect(store.mapSize < 8 << 20)
        let writer = SyncWriter(store)
        let committed = Self.fill(writer)
        #expect(committed.count > 1_000)
        try Self.checkStillServing(store, writer, committed: committed)
    }

    /// A delete needs pages too: in a map full of small records, deletes spread over the keys
    /// found none for their leaf-to-root copies (5 of 366 failed), until the top of the map was
    /// kept for them.
    @Test("a store full of small records takes deletes anywhere, then puts into the room they left", arguments: Durability.allCases)
    func smallRecordsDeleteAnywhere(durability: Durability) throws {
        let value = [UInt8](repeating: 0x5A, count: 100)
        let dir = TempDirectory()
        do {
            let store = try Store(directory: dir.path, durability: durability, mapSize: 1 << 20, maxMapSize: 3 << 20)
            defer { store.close() }
            let writer = SyncWriter(store)
            let committed = Self.fill(writer, limit: 200_000, value: value)
            #expect(committed.count > 10_000)
            let deleted = stride(from: 0, to: committed.count, by: 37).map { committed[$0] }
            for i in deleted { #expect(writer.write(.delete, Self.key(i)) == .committed, "delete \(i)") }
            #expect(store.writer.reserveDeletes.load(ordering: .relaxed) >= 1, "some took the reserve")
            #expect(!store.environment.reserveOpen, "and it was closed again")
            // Each delete left room in its leaf: records of the same size fit there again.
            let restored = deleted.prefix(deleted.count / 2)
            for i in restored { #expect(writer.write(.put, Self.key(i), value) == .committed, "put \(i) again") }
            let reader = try store.makeReader()
            let gone = Set(deleted.dropFirst(restored.count))
            for i in committed where !gone.contains(i) { #expect(try reader.get(Self.key(i)) == value) }
            for i in gone { #expect(try reader.get(Self.key(i)) == nil) }
        }
        // The deletes may have taken pages of the reserve: reopened, the store keeps its cap.
        let reopened = try Store(directory: dir.path, durability: durability, mapSize: 1 << 20, maxMapSize: 3 << 20)
        defer { reopened.close() }
        #expect(reopened.maxMapSize == 3 << 20)
    }

    /// A full store replayed a batch one write per transaction, so a batch of deletes sent to
    /// make room cost a commit (with fsync, a disk sync) per delete.
    @Test("at the cap, a batch's writes that fit commit in a few transactions, not one each")
    func fullBatchInFewTransactions() throws {
        let dir = TempDirectory()
        let store = try Store(directory: dir.path, durability: .nosync, mapSize: 1 << 20, maxMapSize: 3 << 20)
        defer { store.close() }
        let committed = Self.fill(SyncWriter(store))
        try #require(committed.count > 300)
        // One batch: a put that cannot fit, then 199 deletes.
        let keys = [Self.key(5_000_000)] + committed.prefix(199).map { Self.key($0) }
        let before = store.writer.transactions.load(ordering: .relaxed)
        let fullBefore = store.writer.rejectedFull.load(ordering: .relaxed)
        let results = SyncWriter(store).writeBatch(
            keys.enumerated().map { i, key in i == 0 ? (.put, key, Self.value) : (.delete, key, []) })
        #expect(results[0] == .full && results.dropFirst().allSatisfy { $0 == .committed })
        let transactions = store.writer.transactions.load(ordering: .relaxed) - before
        #expect(transactions >= 1 && transactions <= 20, "\(transactions) transactions for 199 deletes")
        #expect(store.writer.rejectedFull.load(ordering: .relaxed) == fullBefore + 1, "only the put")
        let reader = try store.makeReader()
        #expect(try reader.get(keys[0]) == nil)
        for i in committed.prefix(199) { #expect(try reader.get(Self.key(i)) == nil, "deleted \(i)") }
        for i in committed.dropFirst(199) { #expect(try reader.get(Self.key(i)) == Self.value) }
    }

    /// Some file systems (NFS, older ZFS) have no fallocate; a nosync store used to refuse to
    /// open on them. Simulated: every fallocate reports EOPNOTSUPP, and glibc's fallback, which
    /// writes into each block, reserves the blocks instead.
    @Test("a nosync store opens, grows and fills on a file system without fallocate")
    func withoutFallocate() throws {
        LMDBEnvironment.fallocateUnsupportedForTesting.store(true, ordering: .relaxed)
        defer { LMDBEnvironment.fallocateUnsupportedForTesting.store(false, ordering: .relaxed) }
        let dir = TempDirectory()
        let store = try Store(directory: dir.path, durability: .nosync, mapSize: 1 << 20, maxMapSize: 8 << 20)
        defer { store.close() }
        let writer = SyncWriter(store)
        let committed = Self.fill(writer)
        #expect(committed.count > 1_000)
        #expect(store.writer.mapGrowths.load(ordering: .relaxed) >= 1, "it grew past its first megabyte")
        try Self.checkStillServing(store, writer, committed: committed)
    }

    @Test("a store over a lower limit keeps its data when reopened and refuses to grow")
    func reopenAboveLimit() throws {
        let dir = TempDirectory()
        var committed: [Int] = []
        do {
            let store = try Store(directory: dir.path, durability: .fsync, mapSize: 1 << 20, maxMapSize: 4 << 20)
            committed = Self.fill(SyncWriter(store))
            store.close()
        }
        let store = try Store(directory: dir.path, durability: .fsync, mapSize: 1 << 20, maxMapSize: 1 << 20)
        defer { store.close() }
        #expect(store.maxMapSize == store.mapSize + store.environment.deleteReserve, "no growth but for deletes")
        #expect(store.mapSize >= 3 << 20)
        let reader = try store.makeReader()
        for i in committed { #expect(try reader.get(Self.key(i)) == Self.value) }
        let size = store.mapSize
        _ = Self.fill(SyncWriter(store))
        #expect(store.mapSize == size)
        #expect(store.writer.rejectedFull.load(ordering: .relaxed) == 1)
    }
}
