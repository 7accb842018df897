import CSystemShims
import Glibc
import Synchronization
import Testing

@testable import EERPC

/// The background AES pool: jobs posted in bursts, claimed by compare-and-swap on their state
/// words, raced by the submitting thread's `runIfUnclaimed`, and stale copies of re-armed words.
///
/// Every seal job seals its buffer in place, and its output is compared with one inline seal of
/// the same plaintext into a separate buffer: a job run twice would give back the plaintext (and
/// another tag), a job lost would never reach `succeeded`. Waits end after 10 s with a failure.
@Suite("AES pool", .serialized)
struct AESPoolTests {
    /// ipsec-mb when this CPU has it, and OpenSSL (whose keys the workers re-key per thread).
    static let backends: [AEADBackendKind] = IPsecMBBackend.isAvailable ? [.ipsecMB, .openSSL] : [.openSSL]
    static let preferred: AEADBackendKind = IPsecMBBackend.isAvailable ? .ipsecMB : .openSSL
    static let sizes = [0, 1, 15, 16, 100, 1_024, 1_500]
    static let timeoutNs: UInt64 = 10_000_000_000

    @Test("bursts of seal jobs all succeed, each sealed exactly once", arguments: [1, 3], backends)
    func sealBursts(workers: Int, backend: AEADBackendKind) throws {
        let key = try AESTestKey.make(backend, seed: 1)
        defer { key.destroy() }
        let count = 420
        let arena = AESJobArena(count: count)
        defer { arena.deallocate() }
        let pool = AESPool(workers: workers)
        defer { pool.shutdown() }

        for i in 0..<count {
            arena.prepareSeal(i, key: key, size: Self.sizes[i % Self.sizes.count], aadCount: i % 3 == 0 ? 0 : 13 + i % 20, round: 0)
        }
        var rng = SplitMix64(seed: UInt64(workers))
        let posted = arena.post(to: pool, 0..<count, rng: &rng)
        #expect(posted, "the pool did not take every job within 10 s")
        #expect(arena.waitFinished(0..<count), "jobs unfinished after 10 s: \(arena.unfinished(0..<count))")
        #expect(arena.drain(pool))

        var wrong: [Int] = []
        for i in 0..<count where !(arena.succeeded(i) && arena.sealMatches(i)) { wrong.append(i) }
        #expect(wrong.isEmpty, "jobs not succeeded with the inline seal's output: \(wrong.prefix(20))")
        // Finished jobs cannot be claimed again.
        var reclaimed = 0
        for i in 0..<count where arena.jobs[i].runIfUnclaimed() { reclaimed += 1 }
        #expect(reclaimed == 0)
    }

    @Test("the submitting thread races the workers with runIfUnclaimed: every job runs once", arguments: [1, 3], backends)
    func racingHelpers(workers: Int, backend: AEADBackendKind) throws {
        let key = try AESTestKey.make(backend, seed: 2)
        defer { key.destroy() }
        let count = 600
        let arena = AESJobArena(count: count)
        defer { arena.deallocate() }
        let pool = AESPool(workers: workers)
        defer { pool.shutdown() }
        var rng = SplitMix64(seed: 11 &+ UInt64(workers))

        // The same words and buffers each round: re-armed after the pool has drained.
        for round in 0..<3 {
            for i in 0..<count {
                arena.prepareSeal(i, key: key, size: Self.sizes[(i + round) % Self.sizes.count], aadCount: 16, round: round)
            }
            var unpostedNotRun = 0
            var p = 0
            let start = ee_now_ns()
            while p < count && ee_now_ns() &- start < Self.timeoutNs {
                let burst = min(1 + rng.below(40), count - p)
                let n = pool.submit(UnsafePointer(arena.jobs + p), count: burst)
                if n == 0 {
                    // Rings full: the job is nobody else's, so this thread must get it.
                    if !arena.jobs[p].runIfUnclaimed() { unpostedNotRun += 1 }
                    p += 1
                    continue
                }
                // Help right away, as a dispatch thread does: in order, backwards, or every other job.
                switch round {
                // (Whether this thread or a worker wins varies from run to run; both happen.)
                case 0: for i in p..<p + n { _ = arena.jobs[i].runIfUnclaimed() }
                case 1: for i in (p..<p + n).reversed() { _ = arena.jobs[i].runIfUnclaimed() }
                default: for i in stride(from: p, to: p + n, by: 2) { _ = arena.jobs[i].runIfUnclaimed() }
                }
                p += n
            }
            #expect(p == count, "round \(round): posted \(p) of \(count) jobs within 10 s")
            #expect(arena.waitFinished(0..<count), "round \(round): unfinished after 10 s: \(arena.unfinished(0..<count))")
            var wrong: [Int] = []
            for i in 0..<count where !(arena.succeeded(i) && arena.sealMatches(i)) { wrong.append(i) }
            #expect(wrong.isEmpty, "round \(round): jobs not sealed exactly once: \(wrong.prefix(20))")
            var reclaimed = 0
            for i in 0..<count where arena.jobs[i].runIfUnclaimed() { reclaimed += 1 }
            #expect(reclaimed == 0)
            // Stale copies of this round's jobs must be gone before their words and buffers are reused.
            #expect(arena.drain(pool))
            #expect(unpostedNotRun == 0, "round \(round): an unposted job was claimed by somebody else")
        }
    }

    @Test("a burst larger than the rings posts a prefix, and exactly that prefix runs", arguments: [1, 3])
    func oversizedBurstPostsPrefix(workers: Int) throws {
        let key = try AESTestKey.make(Self.preferred, seed: 6)
        defer { key.destroy() }
        // More jobs than the rings hold (4 096 each), in one call.
        let count = 4_096 * workers + 1_000
        let arena = AESJobArena(count: count, maxSize: 64)
        defer { arena.deallocate() }
        let pool = AESPool(workers: workers)
        defer { pool.shutdown() }
        for i in 0..<count { arena.prepareSeal(i, key: key, size: i % 3 == 0 ? 0 : 16 + i % 17, aadCount: 4, round: 0) }

        let posted = pool.submit(UnsafePointer(arena.jobs), count: count)
        // One worker: one reservation in one ring, which cannot hold the burst. (With three the
        // call moves on to rings that have drained meanwhile, so it may post everything.)
        if workers == 1 { #expect(posted < count) }
        #expect(posted > 0)
        #expect(arena.waitFinished(0..<posted), "posted jobs unfinished after 10 s: \(arena.unfinished(0..<posted).prefix(20))")
        #expect(arena.drain(pool))
        // The pool never saw the rest: their words are as armed.
        var taken: [Int] = []
        for i in posted..<count where arena.word(i) != arena.jobs[i].ticket | AESJob.queued { taken.append(i) }
        #expect(taken.isEmpty, "jobs beyond the posted prefix (\(posted)) were run: \(taken.prefix(20))")

        // Posting the rest finishes everything, each job once.
        var rng = SplitMix64(seed: 6)
        #expect(arena.post(to: pool, posted..<count, rng: &rng))
        #expect(arena.waitFinished(0..<count), "jobs unfinished after 10 s: \(arena.unfinished(0..<count).prefix(20))")
        var wrong: [Int] = []
        for i in 0..<count where !(arena.succeeded(i) && arena.sealMatches(i)) { wrong.append(i) }
        #expect(wrong.isEmpty, "jobs not sealed exactly once: \(wrong.prefix(20))")
        #expect(arena.drain(pool))
    }

    @Test("open jobs: intact messages open to their plaintext, tampered ones fail", arguments: [1, 3], backends)
    func openJobs(workers: Int, backend: AEADBackendKind) throws {
        let key = try AESTestKey.make(backend, seed: 3)
        defer { key.destroy() }
        let count = 140
        let arena = AESJobArena(count: count)
        defer { arena.deallocate() }
        let pool = AESPool(workers: workers)
        defer { pool.shutdown() }

        for i in 0..<count {
            let size = Self.sizes[(i / 2) % Self.sizes.count]
            // Odd jobs are tampered with: mostly a tag bit, sometimes a ciphertext bit.
            let tamper: AESJobArena.Tamper = i % 2 == 0 ? .none : (i % 4 == 3 && size > 0 ? .ciphertext : .tag)
            arena.prepareOpen(i, key: key, size: size, aadCount: i % 5 == 0 ? 0 : 20, tamper: tamper)
        }
        var rng = SplitMix64(seed: 3)
        #expect(arena.post(to: pool, 0..<count, rng: &rng), "the pool did not take every job within 10 s")
        #expect(arena.waitFinished(0..<count), "jobs unfinished after 10 s: \(arena.unfinished(0..<count))")
        #expect(arena.drain(pool))

        var wrong: [Int] = []
        for i in 0..<count {
            if i % 2 == 0 {
                if !(arena.succeeded(i) && arena.openMatches(i)) { wrong.append(i) }
            } else if arena.words.state(i) != AESJob.failed || arena.word(i) != arena.jobs[i].ticket | AESJob.failed {
                wrong.append(i)
            }
        }
        #expect(wrong.isEmpty, "jobs with the wrong outcome: \(wrong.prefix(20))")
    }

    @Test("a stale copy of a job cannot claim its word once the word is re-armed", arguments: [1, 3])
    func staleCopyCannotClaim(workers: Int) throws {
        let key = try AESTestKey.make(Self.preferred, seed: 4)
        defer { key.destroy() }
        // Job 0 is A, job 1 is B (both on word 0); jobs 2... are fillers that keep a worker busy,
        // so that A is still in its ring when this thread runs it.
        let fillers = 70 * workers
        let arena = AESJobArena(count: 2 + fillers)
        defer { arena.deallocate() }
        let pool = AESPool(workers: workers)
        defer { pool.shutdown() }
        let w = arena.words[0]
        var rng = SplitMix64(seed: 4)
        var failures = 0

        for round in 0..<150 {
            let withFillers = round % 3 != 0
            if withFillers {
                for i in 2..<2 + fillers { arena.prepareSeal(i, key: key, size: 256, aadCount: 8, round: round) }
                guard arena.post(to: pool, 2..<2 + fillers, rng: &rng) else {
                    Issue.record("round \(round): fillers not posted within 10 s")
                    return
                }
            }
            // A on word 0.
            arena.prepareSeal(0, key: key, size: Self.sizes[round % Self.sizes.count], aadCount: 12, round: round)
            guard arena.post(to: pool, 0..<1, rng: &rng) else {
                Issue.record("round \(round): A not posted within 10 s")
                return
            }
            if round % 3 == 2 { for _ in 0..<(rng.below(200)) { spinPause() } }
            // This thread wins most rounds with fillers (A's copy stays queued: the stale copy).
            _ = arena.jobs[0].runIfUnclaimed()
            // Whoever ran A, it finishes (and the fillers too).
            guard arena.waitFinished(0..<1), !withFillers || arena.waitFinished(2..<2 + fillers) else {
                Issue.record("round \(round): jobs unfinished after 10 s")
                return
            }
            // B re-arms word 0 (the next packet using the slot), and is not posted.
            arena.prepareSeal(1, key: key, size: 100, aadCount: 4, round: round, word: w)
            let ticketB = arena.jobs[1].ticket
            #expect(ticketB != arena.jobs[0].ticket)
            // Every posted copy, A's included, has been taken off the rings after this.
            guard arena.drain(pool) else { return }
            if w.pointee.load(ordering: .acquiring) != ticketB | AESJob.queued { failures += 1 }
            if !arena.jobs[1].runIfUnclaimed() { failures += 1 }
            if w.pointee.load(ordering: .acquiring) != ticketB | AESJob.succeeded { failures += 1 }
            // A sealed once, B sealed once, each under its own nonce.
            if !arena.sealMatches(0) || !arena.sealMatches(1) { failures += 1 }
            if withFillers { for i in 2..<2 + fillers where !(arena.succeeded(i) && arena.sealMatches(i)) { failures += 1 } }
            if failures > 0 {
                Issue.record("round \(round): a stale copy touched the re-armed word, or a job ran twice")
                return
            }
        }
        #expect(failures == 0)
    }

    @Test("shutdown runs what was posted before it; later jobs stay with their submitter")
    func shutdownContract() throws {
        let key = try AESTestKey.make(Self.preferred, seed: 5)
        defer { key.destroy() }
        let before = 300
        let after = 40
        let arena = AESJobArena(count: before + after)
        defer { arena.deallocate() }
        let pool = AESPool(workers: 3)
        var shutDown = false
        defer { if !shutDown { pool.shutdown() } }

        // Posted just before shutdown, nobody helping: the workers empty their rings on the way
        // out, so every job has finished when shutdown() returns (a job left `claimed` would
        // hang its submitter for good: runIfUnclaimed cannot take it back).
        for i in 0..<before { arena.prepareSeal(i, key: key, size: 1_500, aadCount: 16, round: 0) }
        var rng = SplitMix64(seed: 8)
        #expect(arena.post(to: pool, 0..<before, rng: &rng))
        pool.shutdown()
        shutDown = true
        var wrong: [Int] = []
        for i in 0..<before where !(arena.succeeded(i) && arena.sealMatches(i)) { wrong.append(i) }
        #expect(wrong.isEmpty, "jobs posted before shutdown() not finished when it returned: \(wrong.prefix(20))")

        // After shutdown: whether or not submit accepts them, no worker takes jobs any more;
        // waitUntilDrained returns, and the submitter runs them itself.
        for i in before..<before + after { arena.prepareSeal(i, key: key, size: Self.sizes[i % Self.sizes.count], aadCount: 16, round: 0) }
        _ = pool.submit(arena.jobs[before])
        _ = pool.submit(UnsafePointer(arena.jobs + before + 1), count: after - 1)
        #expect(arena.drain(pool), "waitUntilDrained hangs after shutdown")
        usleep(5_000)
        var taken: [Int] = []
        for i in before..<before + after where arena.word(i) != arena.jobs[i].ticket | AESJob.queued { taken.append(i) }
        #expect(taken.isEmpty, "jobs taken by a stopped pool: \(taken)")
        var ran = 0
        for i in before..<before + after where arena.jobs[i].runIfUnclaimed() { ran += 1 }
        #expect(ran == after)
        wrong = []
        for i in before..<before + after where !(arena.succeeded(i) && arena.sealMatches(i)) { wrong.append(i) }
        #expect(wrong.isEmpty)
        // A second shutdown is harmless.
        pool.shutdown()
    }
}

enum AESTestKey {
    /// A 16-byte key derived from `seed`.
    static func make(_ backend: AEADBackendKind, seed: UInt8) throws -> KeyHandle {
        let bytes = (0..<16).map { UInt8(truncatingIfNeeded: Int(seed) &* 29 &+ $0 &* 11 &+ 3) }
        return try bytes.withUnsafeBytes { try KeyHandle.make(backend: backend, key: $0) }
    }
}

/// The buffers, state words and job descriptors of `count` AES jobs. Each job has a slot:
///
///     0 nonce (12) | 16 aad (up to 32) | 48 tag (16) | 64 reference tag (16)
///     128 a | b | c (`maxSize` bytes each)
///
/// A seal job seals `a` in place; the inline reference seal writes `b` and the reference tag.
/// An open job opens `b` (sealed inline from `c`) into `a`.
///
/// Memory: allocated in init, freed by `deallocate()`, which a test calls after the pool has
/// shut down (or drained), when no job copy can point here.
final class AESJobArena {
    enum Tamper { case none, tag, ciphertext }

    let count: Int
    let maxSize: Int
    let slotSize: Int
    let base: UnsafeMutableRawPointer
    let words: JobStateWords
    let jobs: UnsafeMutablePointer<AESJob>
    private var sizes: [Int]

    init(count: Int, maxSize: Int = 1_536) {
        self.count = count
        self.maxSize = maxSize
        slotSize = (128 + 3 * maxSize + 63) / 64 * 64
        base = .allocate(byteCount: count * slotSize, alignment: 64)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: count * slotSize)
        words = JobStateWords(count: count)
        jobs = .allocate(capacity: count)
        sizes = [Int](repeating: 0, count: count)
    }

    func deallocate() {
        base.deallocate()
        words.deallocate()
        jobs.deallocate()
    }

    func slot(_ i: Int) -> UnsafeMutableRawPointer { base + i * slotSize }
    func nonce(_ i: Int) -> UnsafeMutableRawPointer { slot(i) }
    func aad(_ i: Int) -> UnsafeMutableRawPointer { slot(i) + 16 }
    func tag(_ i: Int) -> UnsafeMutableRawPointer { slot(i) + 48 }
    func referenceTag(_ i: Int) -> UnsafeMutableRawPointer { slot(i) + 64 }
    func a(_ i: Int) -> UnsafeMutableRawPointer { slot(i) + 128 }
    func b(_ i: Int) -> UnsafeMutableRawPointer { slot(i) + 128 + maxSize }
    func c(_ i: Int) -> UnsafeMutableRawPointer { slot(i) + 128 + 2 * maxSize }

    /// The full state word (ticket and state) of job `i`'s word.
    func word(_ i: Int) -> UInt32 { jobs[i].done.pointee.load(ordering: .acquiring) }
    func succeeded(_ i: Int) -> Bool { word(i) == jobs[i].ticket | AESJob.succeeded }

    private func fill(_ i: Int, size: Int, aadCount: Int, round: Int) {
        sizes[i] = size
        let n = nonce(i)
        n.storeBytes(of: UInt32(truncatingIfNeeded: round).littleEndian, as: UInt32.self)
        n.storeBytes(of: UInt64(i).littleEndian, toByteOffset: 4, as: UInt64.self)
        for j in 0..<32 { aad(i).storeBytes(of: UInt8(truncatingIfNeeded: i &* 3 &+ j), toByteOffset: j, as: UInt8.self) }
        for j in 0..<size {
            c(i).storeBytes(of: UInt8(truncatingIfNeeded: i &* 31 &+ j &* 7 &+ round &+ 1), toByteOffset: j, as: UInt8.self)
        }
    }

    /// Job `i` seals `size` bytes in place in `a`, on its own word (or `word`, re-armed).
    func prepareSeal(
        _ i: Int, key: KeyHandle, size: Int, aadCount: Int, round: Int, word: UnsafeMutablePointer<Atomic<UInt32>>? = nil
    ) {
        fill(i, size: size, aadCount: aadCount, round: round)
        a(i).copyMemory(from: c(i), byteCount: size)
        key.seal(
            nonce: nonce(i), aad: aad(i), aadCount: aadCount, source: c(i), destination: b(i), count: size,
            tag: referenceTag(i))
        let w = word ?? words[i]
        let ticket = AESJob.arm(w)
        jobs[i] = AESJob(
            seal: true, key: key, nonce: nonce(i), aad: aad(i), aadCount: aadCount, source: a(i), destination: a(i),
            count: size, tag: tag(i), done: UnsafePointer(w), ticket: ticket)
    }

    /// Job `i` opens `b` (sealed inline from `c`, then perhaps tampered with) into `a`.
    func prepareOpen(_ i: Int, key: KeyHandle, size: Int, aadCount: Int, tamper: Tamper) {
        fill(i, size: size, aadCount: aadCount, round: 0)
        key.seal(nonce: nonce(i), aad: aad(i), aadCount: aadCount, source: c(i), destination: b(i), count: size, tag: tag(i))
        switch tamper {
        case .none: break
        case .tag:
            let bit = (i &* 5) % 128
            let p = tag(i) + bit / 8
            p.storeBytes(of: p.load(as: UInt8.self) ^ UInt8(1 << (bit % 8)), as: UInt8.self)
        case .ciphertext:
            let p = b(i) + (i % size)
            p.storeBytes(of: p.load(as: UInt8.self) ^ 0x10, as: UInt8.self)
        }
        a(i).initializeMemory(as: UInt8.self, repeating: 0xEE, count: maxSize)
        let ticket = AESJob.arm(words[i])
        jobs[i] = AESJob(
            seal: false, key: key, nonce: nonce(i), aad: aad(i), aadCount: aadCount, source: b(i), destination: a(i),
            count: size, tag: tag(i), done: UnsafePointer(words[i]), ticket: ticket)
    }

    /// Whether seal job `i`'s output (`a` and its tag) is the inline seal's.
    func sealMatches(_ i: Int) -> Bool {
        memcmp(a(i), b(i), sizes[i]) == 0 && memcmp(tag(i), referenceTag(i), 16) == 0
    }

    /// Whether open job `i` gave back the plaintext.
    func openMatches(_ i: Int) -> Bool { memcmp(a(i), c(i), sizes[i]) == 0 }

    /// Posts jobs `range` in bursts of random sizes, retrying each unposted suffix; false if the
    /// pool would not take them within 10 s.
    func post(to pool: AESPool, _ range: Range<Int>, rng: inout SplitMix64) -> Bool {
        var p = range.lowerBound
        let start = ee_now_ns()
        while p < range.upperBound {
            let burst = min(1 + rng.below(48), range.upperBound - p)
            var posted = 0
            while posted < burst {
                let n =
                    burst == 1 && rng.below(2) == 0
                    ? (pool.submit(jobs[p + posted]) ? 1 : 0)
                    : pool.submit(UnsafePointer(jobs + p + posted), count: burst - posted)
                posted += n
                if n == 0 {
                    if ee_now_ns() &- start > AESPoolTests.timeoutNs { return false }
                    sched_yield()
                }
            }
            p += burst
        }
        return true
    }

    /// Waits until every job in `range` has finished; false after 10 s.
    func waitFinished(_ range: Range<Int>) -> Bool {
        let start = ee_now_ns()
        for i in range {
            while AESJob.state(word(i)) < AESJob.succeeded {
                if ee_now_ns() &- start > AESPoolTests.timeoutNs { return false }
                sched_yield()
            }
        }
        return true
    }

    func unfinished(_ range: Range<Int>) -> [Int] { range.filter { AESJob.state(word($0)) < AESJob.succeeded } }

    /// `pool.waitUntilDrained()`, bounded: after 10 s it records a failure and stops the pool
    /// (which ends the wait) instead of hanging the test run.
    func drain(_ pool: AESPool) -> Bool {
        let done = QueueTestFlag()
        let thread = Threads.spawn(name: "aes-drain") {
            pool.waitUntilDrained()
            done.set()
        }
        let start = ee_now_ns()
        while !done.isSet && ee_now_ns() &- start < AESPoolTests.timeoutNs { usleep(20) }
        let ok = done.isSet
        if !ok {
            Issue.record("waitUntilDrained did not return within 10 s")
            pool.shutdown()
        }
        thread.join()
        return ok
    }
}
