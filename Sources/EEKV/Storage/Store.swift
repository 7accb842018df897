import CLMDB
import EERPC
import Glibc

/// The storage of one node: an LMDB environment, a reader per dispatch thread, and the
/// group-commit writer thread all puts and deletes go through.
public final class Store: @unchecked Sendable {
    /// LMDB's compiled-in key limit.
    public static let maxKeySize = 511

    let environment: LMDBEnvironment
    public let writer: GroupCommitWriter
    public var durability: Durability { environment.durability }
    public var path: String { environment.path }
    /// The map's current size and its limit, in bytes.
    public var mapSize: Int { environment.mapSize }
    public var maxMapSize: Int { environment.maxMapSize }

    /// Opens (or creates) the store in `directory`.
    /// - Parameters:
    ///   - mapSize: initial map size (at least the data already there), doubled as the data grows.
    ///   - maxMapSize: the most the map may grow to; writes that need more fail with
    ///     ``StoreError/full`` while reads and deletes go on.
    public init(
        directory: String, durability: Durability = .fsync, mapSize: Int = 64 << 20, maxMapSize: Int = .max
    ) throws(StoreError) {
        environment = try LMDBEnvironment(
            path: directory, mapSize: mapSize, maxMapSize: maxMapSize, durability: durability)
        writer = GroupCommitWriter(environment: environment)
    }

    /// Stops the writer after committing everything already submitted. In `nosync` mode the
    /// map's dirty pages are then written out: a clean stop leaves no acknowledged write in memory
    /// only (a power cut soon after it would lose them). With `fsync` every commit is on disk already.
    /// Returns why that write-out failed (nil if it did not, or was not needed).
    @discardableResult
    public func close() -> StoreError? {
        writer.stop()
        guard environment.durability == .nosync && environment.isUsable else { return nil }
        let r = mdb_env_sync(environment.env, 1)
        return r == 0 ? nil : .lmdb(call: "mdb_env_sync", code: r, message: String(cString: mdb_strerror(r)))
    }

    /// A read handle for one thread (not thread-safe; one per dispatch thread).
    public func makeReader() throws(StoreError) -> StoreReader { try StoreReader(environment: environment) }

    @inline(__always)
    public static func validKey(_ key: UnsafeRawBufferPointer) -> Bool { key.count >= 1 && key.count <= maxKeySize }
}

/// Reads for one thread: a read-only transaction renewed per operation and reset after, so it
/// never pins old pages between requests. Values are handed to the caller's closure while the
/// snapshot is open (LMDB returns pointers into the map: zero copy).
public final class StoreReader {
    private let environment: LMDBEnvironment
    private let txn: OpaquePointer
    private var cursor: OpaquePointer?

    init(environment: LMDBEnvironment) throws(StoreError) {
        self.environment = environment
        var t: OpaquePointer?
        // Inside the gate: the writer may be growing the map while this thread starts.
        try environment.beginRead()
        defer { environment.endRead() }
        try check(mdb_txn_begin(environment.env, nil, UInt32(MDB_RDONLY), &t), "mdb_txn_begin(read)")
        txn = t!
        mdb_txn_reset(txn)
    }

    deinit {
        if let cursor { mdb_cursor_close(cursor) }
        mdb_txn_abort(txn)
    }

    /// Runs `body` with a consistent snapshot open.
    @inline(__always)
    public func withSnapshot<R>(_ body: (borrowing Snapshot) throws(StoreError) -> R) throws(StoreError) -> R {
        try environment.beginRead()
        defer {
            mdb_txn_reset(txn)
            environment.endRead()
        }
        try check(mdb_txn_renew(txn), "mdb_txn_renew")
        // The cursor is bound to the transaction lazily, by the first scan of this snapshot: a
        // get needs none, and renewing it costs as much as the get itself.
        cursorBound = false
        return try body(Snapshot(txn: txn, dbi: environment.dbi, reader: self))
    }

    private var cursorBound = false

    /// The snapshot's cursor (scans only).
    func boundCursor() throws(StoreError) -> OpaquePointer {
        if let cursor {
            if !cursorBound { try check(mdb_cursor_renew(txn, cursor), "mdb_cursor_renew") }
        } else {
            var c: OpaquePointer?
            try check(mdb_cursor_open(txn, environment.dbi, &c), "mdb_cursor_open")
            cursor = c
        }
        cursorBound = true
        return cursor!
    }

    /// One key's value copied out, or nil (a convenience for tools and tests).
    public func get(_ key: [UInt8]) throws(StoreError) -> [UInt8]? {
        var result: Result<[UInt8]?, StoreError> = .success(nil)
        key.withUnsafeBytes { k in
            result = Result { () throws(StoreError) in
                try withSnapshot { s throws(StoreError) in try s.get(k).map { Array($0) } }
            }
        }
        return try result.get()
    }
}

/// A read snapshot, valid only inside `withSnapshot`. The buffers it returns point into the map
/// and die with the snapshot.
public struct Snapshot: ~Copyable {
    let txn: OpaquePointer
    let dbi: MDB_dbi
    // unowned(unsafe): a snapshot exists only inside its reader's `withSnapshot`.
    unowned(unsafe) let reader: StoreReader

    @inline(__always)
    public func get(_ key: UnsafeRawBufferPointer) throws(StoreError) -> UnsafeRawBufferPointer? {
        var k = MDB_val(mv_size: key.count, mv_data: UnsafeMutableRawPointer(mutating: key.baseAddress))
        var v = MDB_val()
        let r = mdb_get(txn, dbi, &k, &v)
        if r == MDB_NOTFOUND { return nil }
        try check(r, "mdb_get")
        return UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size)
    }

    /// Visits keys in order from `start` (inclusive, or exclusive if `after`) up to `end`
    /// (exclusive, if given), at most `limit`; `visit` returns false to stop early.
    public func scan(
        from start: UnsafeRawBufferPointer, after: Bool = false, to end: UnsafeRawBufferPointer?, limit: Int,
        _ visit: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) -> Bool
    ) throws(StoreError) {
        var k = MDB_val(mv_size: start.count, mv_data: UnsafeMutableRawPointer(mutating: start.baseAddress))
        var v = MDB_val()
        let cursor = try reader.boundCursor()
        var op = start.count == 0 ? MDB_FIRST : MDB_SET_RANGE
        // Only the first key found can equal `start`.
        var skipStart = after && start.count > 0
        var seen = 0
        while seen < limit {
            let r = mdb_cursor_get(cursor, &k, &v, op)
            if r == MDB_NOTFOUND { return }
            try check(r, "mdb_cursor_get")
            op = MDB_NEXT
            let key = UnsafeRawBufferPointer(start: k.mv_data, count: k.mv_size)
            if skipStart {
                skipStart = false
                if compareBytes(key, start) == 0 { continue }
            }
            if let end, compareBytes(key, end) >= 0 { return }
            seen += 1
            if !visit(key, UnsafeRawBufferPointer(start: v.mv_data, count: v.mv_size)) { return }
        }
    }
}

/// Lexicographic byte order (LMDB's default key order).
@inline(__always)
public func compareBytes(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Int {
    let n = min(a.count, b.count)
    if n > 0 {
        let c = memcmp(a.baseAddress!, b.baseAddress!, n)
        if c != 0 { return Int(c) }
    }
    return a.count - b.count
}
