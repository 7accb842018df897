import Synchronization

/// The key numbers a run has inserted, shared by every thread (YCSB's
/// `AcknowledgedCounterGenerator`): inserts take the next number, and requests only choose numbers
/// below the highest one whose insert, and every insert before it, has been acknowledged, so a
/// read never asks for a record that is not there yet.
public final class KeySpace: Sendable {
    private let nextInsert: Atomic<Int64>
    private let state: Mutex<(limit: Int64, done: Set<Int64>)>

    public init(initialRecords: Int64) {
        nextInsert = Atomic(initialRecords)
        state = Mutex((initialRecords, []))
    }

    /// Highest key number (exclusive) requests may choose.
    public var acknowledgedLimit: Int64 { state.withLock { $0.limit } }

    /// A fresh key number for an insert.
    public func reserveInsert() -> Int64 { nextInsert.wrappingAdd(1, ordering: .relaxed).oldValue }

    /// Marks an insert done, and advances the limit over every contiguous completed insert.
    public func acknowledge(_ keyNumber: Int64) {
        state.withLock { s in
            s.done.insert(keyNumber)
            while s.done.remove(s.limit) != nil { s.limit += 1 }
        }
    }
}
