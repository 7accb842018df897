import Synchronization

/// The state words (``AESJob/done``) of a set of AES jobs, each on a cache line of its own.
///
/// Why padded: the submitting thread polls the oldest job's word while a worker claims and
/// finishes the next ones. With the words packed sixteen to a line, every poll pulled the line
/// back from the worker and every claim (a compare-and-swap) waited for it: 72 % of the worker's
/// own time went to that one instruction, and the pool sealed 1 KiB messages at 0.55 × the raw
/// library rate.
///
/// Memory: allocated by `init`, freed by `deallocate()`, which the owner calls once no job
/// (queued, running or a stale copy in a worker's ring) can refer to a word.
struct JobStateWords {
    static let lineSize = 64
    static let stride = lineSize / MemoryLayout<UInt32>.stride
    let base: UnsafeMutablePointer<Atomic<UInt32>>
    let count: Int

    init(count: Int) {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: count * Self.lineSize, alignment: Self.lineSize)
        base = raw.bindMemory(to: Atomic<UInt32>.self, capacity: count * Self.stride)
        for i in 0..<count { (base + i * Self.stride).initialize(to: Atomic(0)) }
        self.count = count
    }

    func deallocate() {
        for i in 0..<count { self[i].deinitialize(count: 1) }
        UnsafeMutableRawPointer(base).deallocate()
    }

    /// Job `i`'s word, to arm for a new job or to hand to it as `done`.
    @inline(__always) subscript(i: Int) -> UnsafeMutablePointer<Atomic<UInt32>> { base + i * Self.stride }

    /// Job `i`'s state (``AESJob/queued`` … ``AESJob/failed``), read with acquire ordering so a
    /// finished job's output is visible.
    @inline(__always) func state(_ i: Int) -> UInt32 { AESJob.state(self[i].pointee.load(ordering: .acquiring)) }
}
