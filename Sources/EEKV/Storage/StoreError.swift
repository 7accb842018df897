import Glibc

/// Errors of the storage layer.
public enum StoreError: Error, Equatable, Sendable {
    /// An LMDB call failed; `code` is LMDB's (or errno), `call` names it.
    case lmdb(call: String, code: Int32, message: String)
    case cannotCreateDirectory(String, errno: Int32)
    /// The key is empty or longer than ``Store/maxKeySize``.
    case badKey(length: Int)
    /// The store is shutting down and takes no more writes.
    case closed
    /// The map reached the store's size limit (`maxMapSize`): the write was not applied. Deletes
    /// still go through and free room.
    case full(limit: Int)
    /// The file system has no room to extend the store's file: the write was not applied.
    case diskFull(path: String)
    /// Growing the map failed after LMDB had released the old one, and the old one could not be
    /// mapped again: the store takes no more reads or writes (restart the node).
    case unusable(String)
    /// Another store (another node) has the directory open.
    case inUse(path: String)
}

extension StoreError: CustomStringConvertible {
    public var description: String {
        switch self {
        case .lmdb(let call, let code, let message): "\(call) failed: \(message) (\(code))"
        case .cannotCreateDirectory(let path, let e): "cannot create \(path): \(String(cString: strerror(e)))"
        case .badKey(let length): "keys must be 1-\(Store.maxKeySize) bytes, this one is \(length)"
        case .closed: "the store is shutting down"
        case .full(let limit): "the store is full: its map reached the limit of \(limit >> 20) MiB"
        case .diskFull(let path): "no space left on the file system of \(path)"
        case .unusable(let why): "the store is unusable until the node restarts: \(why)"
        case .inUse(let path): "\(path) is in use by another eekv node (each node needs a data directory of its own)"
        }
    }
}

/// How hard a commit tries to reach the disk.
public enum Durability: String, Sendable, CaseIterable {
    /// Every group commit is fsynced before it is acknowledged (LMDB's default).
    case fsync
    /// Commits go to the page cache only: an OS crash may lose the last ones (benchmarks).
    case nosync
}
