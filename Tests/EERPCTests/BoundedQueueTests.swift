import CSystemShims
import Glibc
import Synchronization
import Testing

@testable import EERPC

/// Burst pushes (`push(contentsOf:count:)`) and batch pops (`popBatchSingleConsumer`) of the
/// lock-free ring that carries AES jobs and background requests between threads.
@Suite("BoundedQueue bursts", .serialized)
struct BoundedQueueTests {
    @Test("a burst into a queue with k free cells pushes exactly its first k elements")
    func burstPushesPrefix() throws {
        // Capacity 5 rounds up to 8 cells.
        let queue = BoundedQueue<Int>(capacity: 5)
        for v in 0..<3 { #expect(queue.push(v)) }
        let burst = Array(100..<110)
        // 5 free cells: a burst of 10 pushes 100...104.
        // (`#require`: a queue that got this wrong is in no state for the calls that follow.)
        try #require(burst.withUnsafeBufferPointer { queue.push(contentsOf: $0.baseAddress!, count: $0.count) } == 5)
        try #require(queue.pushCount == 8)
        // Full: neither a burst nor a single push takes anything.
        #expect(burst.withUnsafeBufferPointer { queue.push(contentsOf: $0.baseAddress!, count: $0.count) } == 0)
        #expect(burst.withUnsafeBufferPointer { queue.push(contentsOf: $0.baseAddress!, count: 1) } == 0)
        #expect(!queue.push(999))
        #expect(queue.pushCount == 8)

        // Three cells free again (0...2, the head is at cell 3): of a burst of 4, 3 go in.
        #expect(queue.pop() == 0)
        #expect(queue.pop() == 1)
        #expect(queue.pop() == 2)
        let second = [200, 201, 202, 203]
        try #require(second.withUnsafeBufferPointer { queue.push(contentsOf: $0.baseAddress!, count: $0.count) } == 3)
        try #require(queue.pushCount == 11)

        #expect(popAll(queue) == [100, 101, 102, 103, 104, 200, 201, 202])
        #expect(queue.isEmpty)

        // Empty, the tail at cell 3: a burst longer than the ring fills it exactly (cells 3...7,
        // then 0...2 across the ring's end; one lap, no more).
        let long = Array(300..<320)
        #expect(long.withUnsafeBufferPointer { queue.push(contentsOf: $0.baseAddress!, count: $0.count) } == 8)
        #expect(popAll(queue) == Array(300..<308))
        #expect(queue.pushCount == 19)
        #expect(queue.isEmpty)
    }

    @Test("an empty burst pushes nothing and returns at once")
    func emptyBurst() {
        let queue = BoundedQueue<Int>(capacity: 8)
        let value = UnsafeMutablePointer<Int>.allocate(capacity: 1)
        value.initialize(to: 7)
        defer { value.deallocate() }
        let source = QueueTestPointer(value)
        // On a queue with room, on a thread of its own: if the call does not return, filling the
        // queue ends it (a full queue makes it return 0), so the test fails instead of hanging.
        let returned = QueueTestResult()
        let thread = Threads.spawn(name: "bq-empty-burst") {
            returned.value.store(queue.push(contentsOf: UnsafePointer(source.pointer), count: 0), ordering: .releasing)
        }
        let start = ee_now_ns()
        while returned.value.load(ordering: .acquiring) == -1 && ee_now_ns() &- start < 2_000_000_000 { usleep(100) }
        let hung = returned.value.load(ordering: .acquiring) == -1
        let pushedMeanwhile = queue.pushCount
        if hung { for _ in 0...8 { if !queue.push(0) { break } } }
        thread.join()
        #expect(!hung, "push(contentsOf:count: 0) on a queue with room did not return within 2 s")
        #expect(returned.value.load(ordering: .acquiring) == 0)
        #expect(pushedMeanwhile == 0)

        // On a full queue it returns 0 as well.
        _ = popAll(queue)
        for _ in 0...8 { if !queue.push(1) { break } }
        let before = queue.pushCount
        #expect(queue.push(contentsOf: value, count: 0) == 0)
        #expect(queue.pushCount == before)
    }

    @Test("odd-sized bursts and batch pops of varying limits keep order across many laps", arguments: [8, 16])
    func wrapAround(capacity: Int) throws {
        let queue = BoundedQueue<UInt64>(capacity: capacity)
        var rng = SplitMix64(seed: UInt64(capacity))
        let source = UnsafeMutablePointer<UInt64>.allocate(capacity: 64)
        let out = UnsafeMutablePointer<UInt64>.allocate(capacity: 64)
        defer {
            source.deallocate()
            out.deallocate()
        }
        var nextPush: UInt64 = 0
        var nextPop: UInt64 = 0
        var mismatches = 0
        var wrongCounts = 0
        for round in 0..<5_000 {
            // A burst of odd size 1...2*capacity+1 (often more than fits).
            let burst = 2 * rng.below(capacity + 1) + 1
            for i in 0..<burst { source[i] = nextPush &+ UInt64(i) }
            let free = capacity - Int(nextPush - nextPop)
            let pushed: Int
            if round % 7 == 3 {
                // Now and then single pushes, which must interleave with bursts.
                var n = 0
                while n < burst && queue.push(source[n]) { n += 1 }
                pushed = n
            } else {
                pushed = queue.push(contentsOf: source, count: burst)
            }
            if pushed != min(burst, free) { wrongCounts += 1 }
            nextPush &+= UInt64(pushed)
            if queue.pushCount != Int(nextPush) { wrongCounts += 1 }

            let limit = 1 + rng.below(capacity + 3)
            let inQueue = Int(nextPush - nextPop)
            let popped = queue.popBatchSingleConsumer(into: out, limit: limit)
            if popped != min(limit, inQueue) { wrongCounts += 1 }
            for i in 0..<popped {
                if out[i] != nextPop { mismatches += 1 }
                nextPop &+= 1
            }
            if queue.isEmpty != (nextPop == nextPush) { wrongCounts += 1 }
            // A queue that got a count wrong is in no state for more calls (they may spin).
            if wrongCounts > 0 { break }
        }
        // Drain what is left (a broken queue must not keep this loop going).
        for _ in 0...capacity {
            let n = queue.popBatchSingleConsumer(into: out, limit: 3)
            if n == 0 { break }
            for i in 0..<n {
                if out[i] != nextPop { mismatches += 1 }
                nextPop &+= 1
            }
        }
        #expect(mismatches == 0)
        try #require(wrongCounts == 0)
        try #require(nextPop == nextPush)
        #expect(nextPush > UInt64(100 * capacity), "the test should go many times around the ring")
        #expect(queue.pop() == nil)
        #expect(queue.isEmpty)
    }

    @Test("three producers pushing bursts, one batch consumer: every value once, each producer's in order")
    func concurrentProducers() {
        let producers = 3
        let perProducer = 30_000
        let total = producers * perProducer
        let queue = BoundedQueue<UInt64>(capacity: 64)
        let stop = QueueTestFlag()
        let finished = QueueTestCounter()
        let deadline = ee_now_ns() &+ 10_000_000_000

        var threads: [JoinableThread] = []
        for p in 0..<producers {
            threads.append(
                Threads.spawn(name: "bq-producer-\(p)") {
                    var rng = SplitMix64(seed: UInt64(p) &+ 77)
                    let burst = UnsafeMutablePointer<UInt64>.allocate(capacity: 16)
                    defer { burst.deallocate() }
                    var seq = 0
                    var bursts = 0
                    while seq < perProducer && !stop.isSet {
                        let size = min(1 + rng.below(13), perProducer - seq)
                        for i in 0..<size { burst[i] = UInt64(p) << 32 | UInt64(seq + i) }
                        bursts += 1
                        var posted = 0
                        // Retry the unpushed suffix until it all went in.
                        while posted < size && !stop.isSet {
                            let n: Int
                            if bursts % 5 == 0 {
                                n = queue.push(burst[posted]) ? 1 : 0  // single pushes in between
                            } else {
                                n = queue.push(contentsOf: burst + posted, count: size - posted)
                            }
                            posted += n
                            if n == 0 { sched_yield() }  // full: let the consumer run (2 cores)  // full: let the consumer run (2 cores)
                        }
                        seq += posted
                    }
                    finished.value.add(1, ordering: .releasing)
                })
        }

        // This thread is the consumer.
        var expected = [Int](repeating: 0, count: producers)
        var received = 0
        var outOfOrder = 0
        var foreign = 0
        var rng = SplitMix64(seed: 5)
        let out = UnsafeMutablePointer<UInt64>.allocate(capacity: 32)
        defer { out.deallocate() }
        var timedOut = false
        while received < total {
            let n = queue.popBatchSingleConsumer(into: out, limit: 1 + rng.below(32))
            for i in 0..<n {
                let p = Int(out[i] >> 32)
                let seq = Int(out[i] & 0xFFFF_FFFF)
                guard p < producers else {
                    foreign += 1
                    continue
                }
                if seq != expected[p] { outOfOrder += 1 }
                expected[p] = seq + 1
            }
            received += n
            if n == 0 {
                if ee_now_ns() > deadline {
                    timedOut = true
                    break
                }
                sched_yield()
            }
        }
        stop.set()
        #expect(!timedOut, "the consumer got \(received) of \(total) values within 10 s")
        #expect(received == total)
        #expect(foreign == 0)
        #expect(outOfOrder == 0)
        #expect(expected == [Int](repeating: perProducer, count: producers))

        // Producers stuck inside a push (a broken queue can spin there) fail the test and are
        // left behind rather than joined.
        let stopped = ee_now_ns()
        while finished.value.load(ordering: .acquiring) < producers && ee_now_ns() &- stopped < 2_000_000_000 { usleep(100) }
        guard finished.value.load(ordering: .acquiring) == producers else {
            Issue.record("producers still inside push 2 s after the stop request")
            return
        }
        for t in threads { t.join() }
        #expect(queue.pushCount == total)
        // Only a consistent queue is asked once more (a broken one can spin in pop).
        guard received == total && foreign == 0 && outOfOrder == 0 else { return }
        #expect(queue.isEmpty)
        #expect(queue.pop() == nil)
    }
}

/// Pops until the queue is empty, at most `limit` elements (a broken queue must fail the test,
/// not hang it).
func popAll<T>(_ queue: BoundedQueue<T>, limit: Int = 64) -> [T] {
    var out: [T] = []
    while out.count < limit, let v = queue.pop() { out.append(v) }
    return out
}

/// Test streams draw from the runtime's deterministic generator, so a failure reproduces.
extension SplitMix64 {
    /// A value in 0..<n.
    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}

/// A flag other threads poll (a stop request).
final class QueueTestFlag: Sendable {
    private let value = Atomic<Bool>(false)
    var isSet: Bool { value.load(ordering: .acquiring) }
    func set() { value.store(true, ordering: .releasing) }
}

/// A pointer handed to another thread while the test keeps its memory alive.
struct QueueTestPointer<T>: @unchecked Sendable {
    let pointer: UnsafeMutablePointer<T>
    init(_ pointer: UnsafeMutablePointer<T>) { self.pointer = pointer }
}

/// Threads that finished.
final class QueueTestCounter: Sendable {
    let value = Atomic<Int>(0)
}

/// A value another thread leaves for the test (-1 until then).
final class QueueTestResult: Sendable {
    let value = Atomic<Int>(-1)
}
