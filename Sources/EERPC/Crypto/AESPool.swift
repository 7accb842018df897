import CSystemShims
import Glibc
import Synchronization

/// One AEAD operation handed to the pool. Trivial, so it crosses threads through a lock-free ring.
///
/// Memory: `source`, `destination`, `tag`, `nonce` and `aad` point into buffers owned by the
/// submitting endpoint, which keeps them (and the key) alive until `done` is set.
struct AESJob: BitwiseCopyable {
    var seal: Bool
    var key: KeyHandle
    var nonce: UnsafeRawPointer
    var aad: UnsafeRawPointer
    var aadCount: Int
    var source: UnsafeRawPointer
    var destination: UnsafeMutableRawPointer
    var count: Int
    var tag: UnsafeMutableRawPointer
    /// The job's state word: its ``ticket`` plus ``AESJob/queued``, then ``claimed`` by whoever
    /// runs it (a worker, or the submitting dispatch thread helping when no worker gets to it),
    /// then ``succeeded`` or ``failed`` (stored with release ordering).
    var done: UnsafePointer<Atomic<UInt32>>
    /// The generation of `done` this job belongs to (see ``arm(_:)``), in the upper 30 bits.
    var ticket: UInt32

    static let queued: UInt32 = 0
    static let claimed: UInt32 = 1
    static let succeeded: UInt32 = 2
    static let failed: UInt32 = 3

    /// The state part of a state word.
    @inline(__always) static func state(_ word: UInt32) -> UInt32 { word & 3 }

    /// Readies a reused state word for its next job and returns that job's ticket. The word's
    /// generation goes up by one each time, so a stale copy of an earlier job, still queued at a
    /// worker after the dispatch thread ran it itself, can never claim the next job's word (it
    /// would seal or open the next packet's bytes under its own nonce and pointers).
    @inline(__always)
    static func arm(_ word: UnsafeMutablePointer<Atomic<UInt32>>) -> UInt32 {
        let ticket = ((word.pointee.load(ordering: .relaxed) >> 2) &+ 1) << 2
        word.pointee.store(ticket | queued, ordering: .relaxed)
        return ticket
    }

    /// Runs the job on the calling thread if nobody has claimed it yet, with the job's own key
    /// (a dispatch thread: an OpenSSL key's contexts belong to it). Returns whether it ran.
    @inline(__always)
    func runIfUnclaimed() -> Bool {
        guard claim() else { return false }
        publish(perform(with: key))
        return true
    }

    /// Takes the job for the calling thread; false if somebody else has (or it is stale).
    @inline(__always)
    func claim() -> Bool {
        done.pointee.compareExchange(
            expected: ticket | AESJob.queued, desired: ticket | AESJob.claimed, ordering: .acquiring
        ).exchanged
    }

    /// Runs a claimed job with `key` (the job's key, or a worker's own OpenSSL context for it);
    /// false if an open found the tag wrong.
    @inline(__always)
    func perform(with key: KeyHandle) -> Bool {
        if seal {
            key.seal(nonce: nonce, aad: aad, aadCount: aadCount, source: source, destination: destination, count: count, tag: tag)
            return true
        }
        return key.open(
            nonce: nonce, aad: aad, aadCount: aadCount, source: source, destination: destination, count: count, tag: tag)
    }

    /// Hands a performed job's result (and its output bytes) to the submitter.
    @inline(__always)
    func publish(_ ok: Bool) {
        done.pointee.store(ticket | (ok ? AESJob.succeeded : AESJob.failed), ordering: .releasing)
    }
}

/// The Nexus's shared background AES pool: N worker threads, each fed by a lock-free ring that
/// every dispatch thread may post to. A worker spins briefly when its ring is empty, then
/// sleeps on a semaphore; posting costs a ring push, plus a semaphore post only when the worker
/// sleeps.
public final class AESPool: @unchecked Sendable {
    public let workerCount: Int
    private let workers: [AESWorker]
    private let next = Atomic<Int>(0)

    init(workers: Int) {
        workerCount = workers
        self.workers = (0..<workers).map { AESWorker(index: $0) }
    }

    /// Stops the workers once they have run every job posted before the call. Jobs posted later
    /// are accepted but never run by a worker (their submitter can still run them itself); the
    /// Nexus shuts its pool down only after its endpoints are gone. Idempotent.
    func shutdown() { for w in workers { w.stop() } }

    private let thresholds = Mutex<[AEADBackendKind: Int]>([:])

    /// The message size from which handing a packet to the pool costs the dispatch thread less
    /// than sealing it inline, measured once per backend on first use (a few milliseconds).
    public func adaptiveThreshold(_ backend: AEADBackendKind) -> Int {
        if let known = thresholds.withLock({ $0[backend] }) { return known }
        let measured = calibrate(backend).threshold
        thresholds.withLock { $0[backend] = measured }
        return measured
    }

    /// Measures, on the calling thread, the inline cost of sealing each size and the dispatch
    /// thread's cost of one hand-off (build the job, push it, later find it done), waiting excluded.
    public func calibrate(_ backend: AEADBackendKind) -> (threshold: Int, inlineNs: [(Int, Double)], handoffNs: Double) {
        let sizes = [64, 128, 256, 512, 1_024, 1_440, 2_048, 4_096, 8_192, 16_384, 65_536]
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 65_536 + 256, alignment: 64)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0x5A, count: 65_536 + 256)
        guard let key = try? KeyHandle.make(backend: backend, key: UnsafeRawBufferPointer(start: buffer, count: 16))
        else { return (Int.max, [], 0) }
        defer { key.destroy() }
        let nonce = buffer, aad = buffer + 16, tag = buffer + 32, data = buffer + 64
        var inline: [(Int, Double)] = []
        for size in sizes {
            var best = Double.infinity
            for _ in 0..<3 {
                let rounds = max(20, 200_000 / size)
                let start = ee_now_ns()
                for _ in 0..<rounds {
                    key.seal(nonce: nonce, aad: aad, aadCount: 16, source: data, destination: data, count: size, tag: tag)
                }
                best = min(best, Double(ee_now_ns() &- start) / Double(rounds))
            }
            inline.append((size, best))
        }
        // Hand-off: batches of 32 empty seals, timing only the submitting and the harvesting.
        let flags = JobStateWords(count: 32)
        defer { flags.deallocate() }
        var handoff = Double.infinity
        for _ in 0..<20 {
            var spent: UInt64 = 0
            var t = ee_now_ns()
            for i in 0..<32 {
                let ticket = AESJob.arm(flags[i])
                let job = AESJob(
                    seal: true, key: key, nonce: nonce, aad: aad, aadCount: 16, source: data, destination: data + 128,
                    count: 0, tag: tag, done: UnsafePointer(flags[i]), ticket: ticket)
                while !submit(job) { spinPause() }
            }
            spent &+= ee_now_ns() &- t
            for i in 0..<32 { while flags.state(i) < AESJob.succeeded { spinPause() } }
            t = ee_now_ns()
            var finished = 0
            for i in 0..<32 where flags.state(i) >= AESJob.succeeded { finished += 1 }
            spent &+= ee_now_ns() &- t
            if finished == 32 { handoff = min(handoff, Double(spent) / 32) }
        }
        let threshold = inline.first { $0.1 > handoff }?.0 ?? Int.max
        return (threshold, inline, handoff)
    }

    /// Posts a job to the next worker (round robin). False if every ring is full.
    @inline(__always)
    func submit(_ job: AESJob) -> Bool {
        if workerCount == 1 { return workers[0].submit(job) }
        // Round robin; a racy increment only skews the spread, so no atomic read-modify-write.
        let start = next.load(ordering: .relaxed)
        next.store(start &+ 1, ordering: .relaxed)
        for i in 0..<workerCount where workers[(start &+ i) % workerCount].submit(job) { return true }
        return false
    }

    /// Posts a prefix of `jobs[0..<count]` (as many as the rings take) and returns its length.
    /// A burst is spread over the workers in equal runs, each run with one ring reservation and
    /// at most one wake-up.
    @inline(__always)
    func submit(_ jobs: UnsafePointer<AESJob>, count: Int) -> Int {
        if workerCount == 1 { return workers[0].submit(jobs, count: count) }
        let run = (count + workerCount - 1) / workerCount
        var posted = 0
        var attempts = 0
        while posted < count && attempts < workerCount {
            let start = next.load(ordering: .relaxed)
            next.store(start &+ 1, ordering: .relaxed)
            let n = workers[start % workerCount].submit(jobs + posted, count: min(run, count - posted))
            posted += n
            attempts = n == 0 ? attempts + 1 : 0
        }
        return posted
    }

    /// Pins worker `i` to a CPU (benchmarks and deployments that dedicate a core to crypto).
    public func pin(worker i: Int, to cpu: Int) { workers[i].pin(to: cpu) }

    /// Waits until every worker has taken every job posted so far off its queue, including stale
    /// copies of jobs a dispatch thread already ran itself: an endpoint calls this before freeing
    /// the completion words and buffers those copies point to.
    func waitUntilDrained() { for w in workers { w.waitUntilDrained() } }
}

final class AESWorker: @unchecked Sendable {
    private let queue = BoundedQueue<AESJob>(capacity: 4_096)
    private let waiter = IdleWaiter()
    private let running = Atomic<Bool>(true)
    /// Set by the worker thread as its last act: it touches no job or state word after this.
    private let exited = Atomic<Bool>(false)
    private let pinRequest = Atomic<Int>(-1)
    private var thread: JoinableThread?
    /// Jobs taken off the queue and done with (run, or found already claimed); compared with
    /// the queue's push count to wait for a drain.
    private let taken = Atomic<Int>(0)
    /// Jobs taken off the queue at once. A job taken but not yet claimed may still be run by its
    /// submitter (jobs are claimed by their state word, not by queue position). A claimed batch
    /// is published together: at 32 MTU-sized packets, its first result waits about 4 µs for the
    /// rest, while the claim and publish round trips are paid once per 32 jobs (`eekv bench aes`,
    /// AMD EPYC Zen 4: 0.85 × the raw rate at 1 KiB with 16, 0.88-0.90 with 32).
    static let batchLimit = 32

    init(index: Int) {
        // unowned(unsafe): stop() joins the thread before the worker can go away.
        thread = Threads.spawn(name: "eerpc-aes-\(index)") { [unowned(unsafe) self] in self.run() }
    }

    @inline(__always)
    func submit(_ job: AESJob) -> Bool {
        guard queue.push(job) else { return false }
        waiter.notify()
        return true
    }

    @inline(__always)
    func submit(_ jobs: UnsafePointer<AESJob>, count: Int) -> Int {
        let n = queue.push(contentsOf: jobs, count: count)
        if n > 0 { waiter.notify() }
        return n
    }

    func waitUntilDrained() {
        let target = queue.pushCount
        // A worker that has exited has emptied its queue on the way out and takes no more.
        while !exited.load(ordering: .acquiring) && taken.load(ordering: .acquiring) < target { spinPause() }
    }

    func pin(to cpu: Int) { pinRequest.store(cpu, ordering: .releasing) }

    // The thread refers to its worker without a reference (`unowned(unsafe)`): it must be joined
    // before the worker goes away, also when nobody called `stop()`.
    deinit { stop() }

    func stop() {
        running.store(false, ordering: .sequentiallyConsistent)
        waiter.wake()
        thread?.join()
        thread = nil
    }

    /// Takes the next batch off the queue and asks for its state words' lines in exclusive state,
    /// so they travel from the submitting core while the current batch runs.
    @inline(__always)
    private func fetchBatch(into batch: UnsafeMutablePointer<AESJob>) -> Int {
        let n = queue.popBatchSingleConsumer(into: batch, limit: AESWorker.batchLimit)
        for i in 0..<n { ee_prefetch_for_write(batch[i].done) }
        return n
    }

    @inline(__always)
    private func claimBatch(_ batch: UnsafeMutablePointer<AESJob>, count n: Int, into outcomes: UnsafeMutablePointer<Outcome>) {
        for i in 0..<n { outcomes[i] = batch[i].claim() ? .claimed : .notOurs }
    }

    private func run() {
        // Memory: two batches (the one running, the one fetched ahead) and their outcomes, alive
        // for this loop only.
        let buffers = UnsafeMutablePointer<AESJob>.allocate(capacity: 2 * AESWorker.batchLimit)
        let outcomeBuffers = UnsafeMutablePointer<Outcome>.allocate(capacity: 2 * AESWorker.batchLimit)
        // OpenSSL contexts are per thread: this worker keys its own from the job's raw key.
        var openSSLKeys = OpenSSLKeyCache()
        defer {
            buffers.deallocate()
            outcomeBuffers.deallocate()
            openSSLKeys.release()
            exited.store(true, ordering: .releasing)
        }
        var current = buffers, ahead = buffers + AESWorker.batchLimit
        var outcomes = outcomeBuffers, aheadOutcomes = outcomeBuffers + AESWorker.batchLimit
        // The jobs in `current`, claimed (those that were still unclaimed).
        var n = 0
        var idleSpins = 0
        while true {
            if n == 0 {
                // `running` is read before the queue: a job pushed before stop() is seen by this
                // fetch or the next, so none is left behind on the way out.
                let stopping = !running.load(ordering: .acquiring)
                n = fetchBatch(into: current)
                if n == 0 && stopping { return }
                claimBatch(current, count: n, into: outcomes)
            }
            if n > 0 {
                // A compare-and-swap waits for its line, and until every earlier store is visible;
                // a result store waits for its line to come back from the submitter polling it.
                // Claiming, running and publishing job by job paid that round trip for every job
                // (72 % of this loop's time at 1 KiB). Instead the next batch is fetched (its lines
                // requested) before this one runs, and claimed after it ran but before its results
                // are published, so the claims find their lines here and no result store in the way.
                let next = fetchBatch(into: ahead)
                for i in 0..<n where outcomes[i] == .claimed {
                    let key = current[i].key
                    let ok = current[i].perform(with: key.backend == .openSSL ? openSSLKeys.key(for: key) : key)
                    outcomes[i] = ok ? .succeeded : .failed
                }
                claimBatch(ahead, count: next, into: aheadOutcomes)
                for i in 0..<n where outcomes[i] != .notOurs { current[i].publish(outcomes[i] == .succeeded) }
                taken.add(n, ordering: .releasing)
                swap(&current, &ahead)
                swap(&outcomes, &aheadOutcomes)
                n = next
                idleSpins = 0
                continue
            }
            let cpu = pinRequest.exchange(-1, ordering: .acquiring)
            if cpu >= 0 { Threads.pinCurrentThread(to: cpu) }
            // Spin a few microseconds before sleeping: back-to-back packets should not pay a futex
            // wake, but a worker sharing a core with a dispatch thread should not take its time.
            idleSpins += 1
            if idleSpins < 300 {
                spinPause()
                continue
            }
            waiter.sleep { !queue.isEmpty || !running.load(ordering: .relaxed) }
            idleSpins = 0
        }
    }

    /// What became of one job of the running batch.
    private enum Outcome: UInt8 {
        /// Its submitter (or a stale copy's successor) had it: not this worker's to run.
        case notOurs
        case claimed
        case succeeded
        case failed
    }
}

@inline(__always)
public func spinPause() {
    #if arch(x86_64)
    _ = ee_cpu_relax()
    #endif
}

/// A worker's own OpenSSL contexts for the keys it has seen: a handful of entries matched by
/// the raw key bytes (a key's state may be reused for another key once its session ends).
struct OpenSSLKeyCache {
    private var entries: [(raw: (UInt64, UInt64, UInt64, UInt64), key: KeyHandle)] = []
    private var nextVictim = 0

    mutating func key(for handle: KeyHandle) -> KeyHandle {
        let raw = handle.rawKey.loadUnaligned(as: (UInt64, UInt64, UInt64, UInt64).self)
        for e in entries where e.raw == raw && e.key.algorithm == handle.algorithm { return e.key }
        let bytes = UnsafeRawBufferPointer(start: handle.rawKey, count: handle.algorithm.keyLength)
        let fresh = try! KeyHandle.make(backend: .openSSL, key: bytes)
        if entries.count < 16 {
            entries.append((raw, fresh))
        } else {
            entries[nextVictim].key.destroy()
            entries[nextVictim] = (raw, fresh)
            nextVictim = (nextVictim + 1) % 16
        }
        return fresh
    }

    mutating func release() {
        for i in entries.indices {
            entries[i].key.destroy()
            wipeBytes(of: &entries[i].raw)  // the array's storage is freed as it is
        }
        entries = []
    }
}
