import CLMDB
import Glibc
import Synchronization

/// An open LMDB environment and its one unnamed database, owned: closed in deinit.
///
/// Opened with `MDB_NOTLS`, so read transactions belong to their `MDB_txn` handle rather than to a
/// thread (each dispatch thread keeps one and renews it per request), and with the map size set
/// large up front (a sparse file) and grown by the writer on `MDB_MAP_FULL`. Growing needs no
/// transaction active in the process, so readers pass a gate (`beginRead`/`endRead`) the writer
/// can close for the moment it resizes.
final class LMDBEnvironment: @unchecked Sendable {
    let env: OpaquePointer
    let dbi: MDB_dbi
    let path: String
    let durability: Durability
    private(set) var mapSize: Int

    /// Readers inside a read transaction, and whether a resize is waiting for them to leave.
    private let activeReaders = Atomic<Int>(0)
    private let resizing = Atomic<Bool>(false)

    init(path: String, mapSize: Int, durability: Durability, maxReaders: Int = 512) throws(StoreError) {
        if mkdir(path, 0o755) != 0 && errno != EEXIST {
            throw .cannotCreateDirectory(path, errno: errno)
        }
        var e: OpaquePointer?
        try check(mdb_env_create(&e), "mdb_env_create")
        guard let env = e else { throw .lmdb(call: "mdb_env_create", code: -1, message: "no environment") }
        // nosync: pages are written straight into the map (no write() per dirty page, 4x the put
        // rate here) and the OS flushes them when it likes. fsync: dirty pages go out with
        // pwrite and one fdatasync, which syncs less than msync over the whole map.
        var flags = UInt32(MDB_NOTLS)
        if durability == .nosync { flags |= UInt32(MDB_NOSYNC) | UInt32(MDB_WRITEMAP) | UInt32(MDB_MAPASYNC) }
        do {
            try check(mdb_env_set_mapsize(env, mapSize), "mdb_env_set_mapsize")
            try check(mdb_env_set_maxreaders(env, UInt32(maxReaders)), "mdb_env_set_maxreaders")
            try check(mdb_env_open(env, path, flags, 0o644), "mdb_env_open")
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
            throw error
        }
        var info = MDB_envinfo()
        mdb_env_info(env, &info)
        self.env = env
        self.path = path
        self.durability = durability
        self.mapSize = info.me_mapsize
    }

    deinit { mdb_env_close(env) }

    // MARK: The resize gate

    @inline(__always)
    func beginRead() {
        while true {
            activeReaders.add(1, ordering: .sequentiallyConsistent)
            if !resizing.load(ordering: .sequentiallyConsistent) { return }
            activeReaders.subtract(1, ordering: .sequentiallyConsistent)
            while resizing.load(ordering: .acquiring) { _ = sched_yield() }
        }
    }

    @inline(__always)
    func endRead() { activeReaders.subtract(1, ordering: .releasing) }

    /// Writer thread only: doubles the map (at least +1 GiB) with every reader held off.
    func grow() throws(StoreError) {
        resizing.store(true, ordering: .sequentiallyConsistent)
        while activeReaders.load(ordering: .sequentiallyConsistent) > 0 { _ = sched_yield() }
        defer { resizing.store(false, ordering: .releasing) }
        let target = max(mapSize * 2, mapSize + (1 << 30))
        try check(mdb_env_set_mapsize(env, target), "mdb_env_set_mapsize")
        mapSize = target
    }
}

/// Throws a ``StoreError`` for a non-zero LMDB return code.
@inline(__always)
func check(_ code: Int32, _ call: String) throws(StoreError) {
    guard code == 0 else { throw .lmdb(call: call, code: code, message: String(cString: mdb_strerror(code))) }
}
