import Synchronization

/// A bounded lock-free multi-producer multi-consumer queue of trivial values (Vyukov's design:
/// one sequence number per cell). Crossing threads on the data path goes through these only:
/// dispatch thread → background thread (requests), background thread → dispatch thread
/// (responses). `push` and `pop` never allocate and never take a lock.
public final class BoundedQueue<Element: BitwiseCopyable>: @unchecked Sendable {
    // Memory: `sequences` and `values` are allocated in init and freed in deinit; cell i's value
    // is written only by the thread that won cell i's sequence, then published with a release store.
    private let capacity: Int
    private let mask: Int
    private let sequences: UnsafeMutablePointer<Atomic<Int>>
    private let values: UnsafeMutablePointer<Element>
    private let enqueuePosition = Atomic<Int>(0)
    private let dequeuePosition = Atomic<Int>(0)

    /// - Parameter capacity: rounded up to a power of two.
    public init(capacity: Int) {
        var c = 2
        while c < capacity { c <<= 1 }
        self.capacity = c
        mask = c - 1
        sequences = .allocate(capacity: c)
        for i in 0..<c { (sequences + i).initialize(to: Atomic(i)) }
        values = .allocate(capacity: c)
    }

    deinit {
        sequences.deinitialize(count: capacity)
        sequences.deallocate()
        values.deallocate()
    }

    /// Pushes so far (each claims a position before it publishes its value, so every one counted
    /// here will be poppable).
    public var pushCount: Int { enqueuePosition.load(ordering: .acquiring) }

    /// False when the queue is full.
    public func push(_ value: Element) -> Bool {
        var pos = enqueuePosition.load(ordering: .relaxed)
        while true {
            let cell = sequences + (pos & mask)
            let seq = cell.pointee.load(ordering: .acquiring)
            let diff = seq - pos
            if diff == 0 {
                let (exchanged, current) = enqueuePosition.weakCompareExchange(
                    expected: pos, desired: pos &+ 1, ordering: .relaxed)
                if exchanged {
                    values[pos & mask] = value
                    cell.pointee.store(pos &+ 1, ordering: .releasing)
                    return true
                }
                pos = current
            } else if diff < 0 {
                return false
            } else {
                pos = enqueuePosition.load(ordering: .relaxed)
            }
        }
    }

    /// Pushes a prefix of `values[0..<count]` (as much as fits) with one reservation; returns its
    /// length. Why: the reservation is a compare-and-swap, which waits for the producer's earlier
    /// stores (the cells it filled last time, whose lines the consumer has since read); one per
    /// batch instead of one per element.
    public func push(contentsOf values: UnsafePointer<Element>, count: Int) -> Int {
        // An empty burst would otherwise look like a lost race for `pos` and retry until full.
        guard count > 0 else { return 0 }
        var pos = enqueuePosition.load(ordering: .relaxed)
        while true {
            // Cells are free for positions pos, pos+1, … while their sequence equals the position;
            // only a producer that wins the reservation from `pos` can fill them.
            var n = 0
            while n < count && sequences[(pos &+ n) & mask].load(ordering: .acquiring) == pos &+ n { n += 1 }
            if n == 0 {
                if sequences[pos & mask].load(ordering: .acquiring) &- pos < 0 { return 0 }  // full
                pos = enqueuePosition.load(ordering: .relaxed)  // another producer took `pos`
                continue
            }
            let (exchanged, current) = enqueuePosition.weakCompareExchange(
                expected: pos, desired: pos &+ n, ordering: .relaxed)
            guard exchanged else {
                pos = current
                continue
            }
            for i in 0..<n { self.values[(pos &+ i) & mask] = values[i] }
            for i in 0..<n { sequences[(pos &+ i) & mask].store(pos &+ i &+ 1, ordering: .releasing) }
            return n
        }
    }

    public func pop() -> Element? {
        var pos = dequeuePosition.load(ordering: .relaxed)
        while true {
            let cell = sequences + (pos & mask)
            let seq = cell.pointee.load(ordering: .acquiring)
            let diff = seq - (pos &+ 1)
            if diff == 0 {
                let (exchanged, current) = dequeuePosition.weakCompareExchange(
                    expected: pos, desired: pos &+ 1, ordering: .relaxed)
                if exchanged {
                    let value = values[pos & mask]
                    cell.pointee.store(pos &+ mask &+ 1, ordering: .releasing)
                    return value
                }
                pos = current
            } else if diff < 0 {
                return nil
            } else {
                pos = dequeuePosition.load(ordering: .relaxed)
            }
        }
    }

    /// `pop` for a queue with exactly one consumer thread (an AES worker's ring), up to `limit`
    /// elements at once, copied to `out` in queue order. The dequeue position is that thread's
    /// alone, so it advances with a plain store instead of a CAS.
    /// Reading the cells back to back lets their cache misses (the producer wrote them on another
    /// core) overlap instead of costing one round trip each; the position moves once.
    @inline(__always)
    public func popBatchSingleConsumer(into out: UnsafeMutablePointer<Element>, limit: Int) -> Int {
        let pos = dequeuePosition.load(ordering: .relaxed)
        var n = 0
        while n < limit {
            let cell = sequences + ((pos &+ n) & mask)
            guard cell.pointee.load(ordering: .acquiring) == pos &+ n &+ 1 else { break }
            out[n] = values[(pos &+ n) & mask]
            n += 1
        }
        for i in 0..<n { sequences[(pos &+ i) & mask].store(pos &+ i &+ mask &+ 1, ordering: .releasing) }
        if n > 0 { dequeuePosition.store(pos &+ n, ordering: .relaxed) }
        return n
    }

    /// Cheap emptiness hint for the consumer's poll loop.
    public var isEmpty: Bool {
        dequeuePosition.load(ordering: .relaxed) == enqueuePosition.load(ordering: .relaxed)
    }
}
