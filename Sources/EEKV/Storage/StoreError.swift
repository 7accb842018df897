/// Errors of the storage layer.
public enum StoreError: Error, Equatable, Sendable {
    /// An LMDB call failed; `code` is LMDB's (or errno), `call` names it.
    case lmdb(call: String, code: Int32, message: String)
    case cannotCreateDirectory(String, errno: Int32)
    /// The key is empty or longer than ``Store/maxKeySize``.
    case badKey(length: Int)
    /// The store is shutting down and takes no more writes.
    case closed
}

/// How hard a commit tries to reach the disk.
public enum Durability: String, Sendable, CaseIterable {
    /// Every group commit is fsynced before it is acknowledged (LMDB's default).
    case fsync
    /// Commits go to the page cache only: an OS crash may lose the last ones (benchmarks).
    case nosync
}
