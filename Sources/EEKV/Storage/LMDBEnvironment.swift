import CLMDB
import CSystemShims
import Glibc
import Synchronization

/// An open LMDB environment and its one unnamed database, owned: closed in deinit.
///
/// Opened with `MDB_NOTLS`, so read transactions belong to their `MDB_txn` handle rather than to a
/// thread (each dispatch thread keeps one and renews it per request). The map starts small and
/// the writer doubles it on `MDB_MAP_FULL`, up to `maxMapSize`. Growing needs no transaction
/// active in the process, so readers pass a gate (`beginRead`/`endRead`) the writer can close for
/// the moment it resizes.
///
/// In `nosync` mode LMDB writes straight into a shared file mapping (`MDB_WRITEMAP`). A store in
/// a sparse file would then take its blocks at page-fault time, and on a full file system the
/// fault raises SIGBUS and kills the process. So the map's whole file range is allocated
/// (`fallocate`) before LMDB may touch it: a full disk fails the growth with ``StoreError/diskFull``
/// and the writes that needed it, and the node keeps serving.
final class LMDBEnvironment: @unchecked Sendable {
    let env: OpaquePointer
    let dbi: MDB_dbi
    let path: String
    /// An exclusive lock on `path/eekv.lock`, held while this environment is open: two nodes on
    /// one directory would each serve the other's keys (and LMDB's own lock lets both in).
    private let lockFD: Int32
    let durability: Durability
    /// The largest the map may grow to; writes that need more fail with ``StoreError/full``.
    let maxMapSize: Int
    /// The top of the map, which only deletes may use. A delete needs new pages too (a copy of its
    /// leaf-to-root path, and room for the pages it frees), and in a map filled to the brim with
    /// small records some deletes found none, so a full store could not always be emptied. Puts
    /// and merges therefore stop `deleteReserve` short of `maxMapSize` (``writeLimit``).
    let deleteReserve: Int
    var writeLimit: Int { maxMapSize - deleteReserve }
    private(set) var mapSize: Int
    /// Tests only: growths fail as if the address space could not hold the larger map (the
    /// probe's ENOMEM), a failure no test can otherwise bring about without starving the process.
    let failGrowthsForTesting = Atomic<Bool>(false)
    /// Tests only: every store's fallocate reports EOPNOTSUPP, as on a file system without it.
    static let fallocateUnsupportedForTesting = Atomic<Bool>(false)

    /// Readers inside a read transaction, and the gate: open, closed for a resize, or closed for
    /// good once a failed resize has left LMDB without a map.
    private let activeReaders = Atomic<Int>(0)
    private let gate = Atomic<UInt8>(Gate.open)
    private enum Gate {
        static let open: UInt8 = 0
        static let resizing: UInt8 = 1
        static let unusable: UInt8 = 2
    }

    init(path: String, mapSize: Int, maxMapSize: Int = .max, durability: Durability, maxReaders: Int = 512)
        throws(StoreError)
    {
        try Self.makeDirectory(path)
        let lockFD = try Self.lockDirectory(path)
        var e: OpaquePointer?
        let created = mdb_env_create(&e)
        guard created == 0, let env = e else {
            close(lockFD)
            throw .lmdb(call: "mdb_env_create", code: created, message: String(cString: mdb_strerror(created)))
        }
        // nosync: pages are written straight into the map (no write() per dirty page, 4x the put
        // rate here) and the OS flushes them when it likes. fsync: dirty pages go out with
        // pwrite and one fdatasync, which syncs less than msync over the whole map.
        let reserve = Self.deleteReserve(maxMapSize: maxMapSize)
        var flags = UInt32(MDB_NOTLS)
        var info = MDB_envinfo()
        if durability == .nosync { flags |= UInt32(MDB_NOSYNC) | UInt32(MDB_WRITEMAP) | UInt32(MDB_MAPASYNC) }
        do {
            // LMDB raises this to the data already stored, if that is more.
            try check(mdb_env_set_mapsize(env, min(mapSize, maxMapSize - reserve)), "mdb_env_set_mapsize")
            try check(mdb_env_set_maxreaders(env, UInt32(maxReaders)), "mdb_env_set_maxreaders")
            try check(mdb_env_open(env, path, flags, 0o644), "mdb_env_open")
            mdb_env_info(env, &info)
            // LMDB has sized the file to the map (its holes not yet allocated); nothing has been
            // written through the map yet.
            if durability == .nosync { try Self.allocateInitialMap(env, path: path, info: &info) }
            // Slots left by a process that died holding a read transaction pin old pages forever.
            var dead: Int32 = 0
            try check(mdb_reader_check(env, &dead), "mdb_reader_check")
            var txn: OpaquePointer?
            try check(mdb_txn_begin(env, nil, 0, &txn), "mdb_txn_begin")
            var dbi: MDB_dbi = 0
            let r = mdb_dbi_open(txn, nil, 0, &dbi)
            if r != 0 {
                mdb_txn_abort(txn)
                try check(r, "mdb_dbi_open")
            }
            try check(mdb_txn_commit(txn), "mdb_txn_commit")
            self.dbi = dbi
        } catch {
            mdb_env_close(env)
            close(lockFD)
            throw error
        }
        self.lockFD = lockFD
        self.env = env
        self.path = path
        self.durability = durability
        self.mapSize = info.me_mapsize
        // Existing data may already exceed a lower limit: it stays, the map does not grow for
        // writes, and deletes still have a reserve above it. (Only then: a map that deletes took
        // a little into the reserve must not raise the limit at every restart.)
        self.maxMapSize = info.me_mapsize >= maxMapSize ? info.me_mapsize + reserve : maxMapSize
        deleteReserve = reserve
    }

    /// 1/64 of the largest map, between 256 KiB and 16 MiB, in whole pages: enough for a few
    /// hundred deletes' page copies while the pages they free are still held by readers.
    static func deleteReserve(maxMapSize: Int) -> Int {
        // Never more than half the cap: a cap below 512 KiB keeps half of itself for deletes.
        min(max(maxMapSize / 64, 256 << 10), 16 << 20, maxMapSize / 2) & ~4095
    }

    deinit {
        mdb_env_close(env)
        close(lockFD)
    }

    /// Takes the directory's lock, or says it is in use. The lock goes with the file descriptor
    /// (flock), so a node that dies, however it dies, leaves the directory free.
    private static func lockDirectory(_ path: String) throws(StoreError) -> Int32 {
        let fd = open(path + "/eekv.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .lmdb(call: "open(eekv.lock)", code: errno, message: String(cString: strerror(errno))) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let e = errno
            close(fd)
            if e == EWOULDBLOCK { throw .inUse(path: path) }
            throw .lmdb(call: "flock(eekv.lock)", code: e, message: String(cString: strerror(e)))
        }
        return fd
    }

    /// Allocates the blocks of the whole map; where the file system has no room for it all, a
    /// smaller map (halving, down to ``minimumGrowth`` and never below the data already there),
    /// so a node still starts on a nearly full disk and grows as room allows.
    private static func allocateInitialMap(_ env: OpaquePointer, path: String, info: inout MDB_envinfo) throws(StoreError) {
        var stat = MDB_stat()
        try check(mdb_env_stat(env, &stat), "mdb_env_stat")
        let used = (info.me_last_pgno + 1) * Int(stat.ms_psize)
        while true {
            do {
                return try allocateFile(env, path: path, from: 0, to: info.me_mapsize)
            } catch .diskFull {
                let smaller = (info.me_mapsize / 2) & ~4095
                guard smaller >= minimumGrowth, smaller >= used else { throw .diskFull(path: path) }
                try check(mdb_env_set_mapsize(env, smaller), "mdb_env_set_mapsize")
                mdb_env_info(env, &info)
            }
        }
    }

    /// Allocates the data file's blocks for [from, to).
    private static func allocateFile(_ env: OpaquePointer, path: String, from: Int, to: Int) throws(StoreError) {
        var fd: Int32 = -1
        try check(mdb_env_get_fd(env, &fd), "mdb_env_get_fd")
        var e = fallocateUnsupportedForTesting.load(ordering: .relaxed) ? EOPNOTSUPP : ee_fallocate(fd, Int64(from), Int64(to - from))
        // A file system without fallocate: glibc's fallback reserves the blocks by writing to them.
        if e == EOPNOTSUPP { e = ee_posix_fallocate(fd, Int64(from), Int64(to - from)) }
        if e == ENOSPC || e == EDQUOT { throw .diskFull(path: path) }
        if e != 0 { throw .lmdb(call: "fallocate", code: e, message: String(cString: strerror(e))) }
    }

    // MARK: The resize gate

    @inline(__always)
    func beginRead() throws(StoreError) {
        while true {
            activeReaders.add(1, ordering: .sequentiallyConsistent)
            let g = gate.load(ordering: .sequentiallyConsistent)
            if g == Gate.open { return }
            activeReaders.subtract(1, ordering: .sequentiallyConsistent)
            if g == Gate.unusable { throw Self.unusableError }
            while gate.load(ordering: .acquiring) == Gate.resizing { _ = sched_yield() }
        }
    }

    @inline(__always)
    func endRead() { activeReaders.subtract(1, ordering: .releasing) }

    /// False once a failed resize has left LMDB without a map.
    var isUsable: Bool { gate.load(ordering: .acquiring) != Gate.unusable }

    /// Creates `path` and any missing parent (as `mkdir -p`), so a node's default data directory
    /// (`<config dir>/data/node-N`) needs no set-up.
    static func makeDirectory(_ path: String) throws(StoreError) {
        if mkdir(path, 0o755) == 0 || errno == EEXIST { return }
        guard errno == ENOENT, let slash = path.lastIndex(of: "/"), slash != path.startIndex else {
            throw .cannotCreateDirectory(path, errno: errno)
        }
        try makeDirectory(String(path[..<slash]))
        if mkdir(path, 0o755) != 0 && errno != EEXIST { throw .cannotCreateDirectory(path, errno: errno) }
    }

    /// The smallest growth tried when the file system is nearly full.
    static let minimumGrowth = 1 << 20

    /// Whether the file system holding the store has less than ``minimumGrowth`` free: how a
    /// commit's short write, which LMDB reports as EIO ("short write, filesystem full?"), is told
    /// from a failing disk.
    var fileSystemNearlyFull: Bool {
        var s = statvfs()
        guard statvfs(path, &s) == 0 else { return false }
        return Int(s.f_bavail) * Int(s.f_frsize) < Self.minimumGrowth
    }

    static let unusableError = StoreError.unusable("growing the map failed and the old map could not be restored")

    /// The committer only (the writer thread, or a dispatch thread in `commitPending`): doubles
    /// the map (by at least 64 MiB), up to `maxMapSize`, with every reader held off. Throws
    /// ``StoreError/full`` at the limit and ``StoreError/diskFull`` when the file system cannot
    /// hold the larger map; the store stays usable after either.
    func grow() throws(StoreError) {
        guard isUsable else { throw Self.unusableError }
        let target = min(max(mapSize * 2, mapSize + (64 << 20)), writeLimit)
        guard target > mapSize else { throw .full(limit: maxMapSize) }
        try resize(to: target)
    }

    /// The committer only: lets the map into the delete reserve, for deletes that found no room
    /// below ``writeLimit``. ``closeReserve()`` must follow once they have committed.
    func openReserve() throws(StoreError) {
        guard isUsable else { throw Self.unusableError }
        let target = min(maxMapSize, mapSize + deleteReserve)
        guard target > mapSize else { throw .full(limit: maxMapSize) }
        sizeBeforeReserve = mapSize
        try resize(to: target)
        reserveOpen = true
    }

    /// The committer only: takes the map back to its size before ``openReserve()`` (LMDB keeps
    /// it at least as large as the data), so puts do not use what the deletes left free at its top.
    func closeReserve() throws(StoreError) {
        guard isUsable, reserveOpen else { return }
        if mapSize > sizeBeforeReserve { try resize(to: sizeBeforeReserve, shrinking: true) }
        reserveOpen = false
    }

    private var sizeBeforeReserve = 0
    /// The map is let into the reserve (a failed `closeReserve` is tried again before the next batch).
    private(set) var reserveOpen = false

    /// Remaps at `target` bytes with every reader held off (LMDB needs no transaction active
    /// while it remaps). Growing, the file range is allocated first (nosync).
    private func resize(to requested: Int, shrinking: Bool = false) throws(StoreError) {
        var target = requested
        // LMDB unmaps the old map before it extends the file and maps the new one, and cannot go
        // back; so first do what can fail: allocate the file's new range (a smaller one while the
        // file system has less room, down to 1 MiB) and find the address space.
        if durability == .nosync && !shrinking {
            while true {
                do throws(StoreError) {
                    try Self.allocateFile(env, path: path, from: mapSize, to: target)
                    break
                } catch .diskFull where target - mapSize > Self.minimumGrowth {
                    target = mapSize + max(Self.minimumGrowth, ((target - mapSize) / 2) & ~4095)
                }
            }
        }
        let e = failGrowthsForTesting.load(ordering: .relaxed) ? ENOMEM : ee_probe_address_space(target)
        guard e == 0 else {
            throw .lmdb(call: "mmap(\(target >> 20) MiB)", code: e, message: String(cString: strerror(e)))
        }
        gate.store(Gate.resizing, ordering: .sequentiallyConsistent)
        while activeReaders.load(ordering: .sequentiallyConsistent) > 0 { _ = sched_yield() }
        let r = mdb_env_set_mapsize(env, target)
        if r == 0 {
            // What LMDB made of it: never below the data already stored.
            var info = MDB_envinfo()
            mdb_env_info(env, &info)
            mapSize = info.me_mapsize
            gate.store(Gate.open, ordering: .releasing)
            return
        }
        // Map the old size again; LMDB reports success without mapping if the new map failed.
        var info = MDB_envinfo()
        if mdb_env_set_mapsize(env, mapSize) == 0, mdb_env_info(env, &info) == 0, info.me_mapaddr != nil {
            // A shrink may have truncated the file before the map failed: its tail is a hole
            // again, which writes through the map must never meet.
            if durability == .nosync && shrinking {
                do throws(StoreError) {
                    try Self.allocateFile(env, path: path, from: target, to: mapSize)
                } catch {
                    gate.store(Gate.unusable, ordering: .releasing)
                    throw Self.unusableError
                }
            }
            gate.store(Gate.open, ordering: .releasing)
            throw .lmdb(call: "mdb_env_set_mapsize", code: r, message: String(cString: mdb_strerror(r)))
        }
        gate.store(Gate.unusable, ordering: .releasing)
        throw Self.unusableError
    }
}

/// Throws a ``StoreError`` for a non-zero LMDB return code.
@inline(__always)
func check(_ code: Int32, _ call: String) throws(StoreError) {
    guard code == 0 else { throw .lmdb(call: call, code: code, message: String(cString: mdb_strerror(code))) }
}
