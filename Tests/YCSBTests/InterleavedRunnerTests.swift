import Glibc
import Synchronization
import Testing

@testable import YCSB

/// A database that answers at once and logs which target served each operation, and when.
final class LoggingDatabase: YCSBDatabase, @unchecked Sendable {
    struct Entry {
        var target: Int
        var thread: Int
        var at: UInt64
        var key: String
    }
    final class Log: Sendable {
        let entries = Mutex<[Entry]>([])
        var all: [Entry] { entries.withLock { $0 } }
    }
    let target: Int
    let thread: Int
    let log: Log
    init(target: Int, thread: Int, log: Log) {
        self.target = target
        self.thread = thread
        self.log = log
    }
    private func note(_ key: String) {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let entry = Entry(target: target, thread: thread, at: UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec), key: key)
        log.entries.withLock { $0.append(entry) }
    }
    func read(key: String, field: Int?) throws -> Bool {
        note(key)
        return true
    }
    func update(key: String, fields: [Int: [UInt8]]) throws { note(key) }
    func insert(key: String, fields: [Int: [UInt8]]) throws { note(key) }
    func scan(start: String, count: Int) throws -> Int {
        note(start)
        return count
    }
}

/// Completes each started operation at the next poll (several in flight per thread).
final class PollingDatabase: YCSBAsyncDatabase {
    let base: LoggingDatabase
    private var pending: [(Result<Bool, any Error>) -> Void] = []
    init(_ base: LoggingDatabase) { self.base = base }
    func read(key: String, field: Int?) throws -> Bool { try base.read(key: key, field: field) }
    func update(key: String, fields: [Int: [UInt8]]) throws { try base.update(key: key, fields: fields) }
    func insert(key: String, fields: [Int: [UInt8]]) throws { try base.insert(key: key, fields: fields) }
    func scan(start: String, count: Int) throws -> Int { try base.scan(start: start, count: count) }
    func start(_ operation: Operation, completion: @escaping (Result<Bool, any Error>) -> Void) {
        let found = Result { try base.perform(operation) }
        pending.append { done in completion(found) }
    }
    func poll() {
        let now = pending
        pending = []
        for c in now { c(.success(true)) }
    }
}

@Suite("YCSB interleaved runner")
struct InterleavedRunnerTests {
    /// Maximal runs of one target in the time-ordered log.
    static func turns(_ log: [LoggingDatabase.Entry]) -> Int {
        let ordered = log.sorted { $0.at < $1.at }
        var turns = 0
        var last = -1
        for e in ordered where e.target != last {
            turns += 1
            last = e.target
        }
        return turns
    }

    @Test("targets take turns by slices, never overlap, and each gets the time asked for", arguments: [1, 4])
    func turnsBySlices(outstanding: Int) throws {
        var workload = try #require(Workload.standard("a"))
        workload.recordCount = 1_000
        workload.operationCount = 1 << 40
        let log = LoggingDatabase.Log()
        let summaries = try Runner.interleaved(
            workload: workload, targets: 3, threads: 2, outstanding: outstanding, seconds: 0.2, sliceSeconds: 0.02
        ) { target, thread in
            let db = LoggingDatabase(target: target, thread: thread, log: log)
            return outstanding > 1 ? PollingDatabase(db) : db
        }
        #expect(summaries.count == 3)
        for s in summaries {
            #expect(s.operations > 0)
            // 10 slices of 20 ms each (a slice runs its full time, then drains).
            #expect(s.seconds >= 0.2 && s.seconds < 0.4, "\(s.seconds)")
        }
        let entries = log.all
        #expect(entries.count == summaries.reduce(0) { $0 + $1.operations })
        // 3 targets × 10 cycles: had targets overlapped, the log would switch between them at
        // nearly every operation.
        #expect(Self.turns(entries) <= 30, "\(Self.turns(entries)) turns")
    }

    @Test("every target sees the same operations and keys, and at most operationCount of them")
    func sameOperations() throws {
        var workload = try #require(Workload.standard("d"))  // inserts and reads of the latest keys
        workload.recordCount = 500
        workload.operationCount = 400
        let log = LoggingDatabase.Log()
        let summaries = try Runner.interleaved(
            workload: workload, targets: 2, threads: 1, seconds: 0.05, sliceSeconds: 0.01
        ) { target, thread in LoggingDatabase(target: target, thread: thread, log: log) }
        #expect(summaries.map(\.operations) == [400, 400])
        let entries = log.all
        let keys = (0..<2).map { t in entries.filter { $0.target == t }.map(\.key) }
        #expect(keys[0] == keys[1])
        #expect(summaries[0].perOperation.map(\.count) == summaries[1].perOperation.map(\.count))
    }

    @Test("each cycle visits every target once, in an order that changes between cycles")
    func schedule() {
        let schedule = SliceSchedule(targets: 4, seed: 7)
        var firsts: Set<Int> = []
        var orders: Set<[Int]> = []
        for cycle in 0..<64 {
            let order = schedule.order(ofCycle: cycle)
            #expect(order.sorted() == [0, 1, 2, 3])
            #expect((0..<4).map { schedule.target(ofSlice: cycle * 4 + $0) } == order)
            firsts.insert(order[0])
            orders.insert(order)
        }
        #expect(firsts.count == 4)
        #expect(orders.count > 10)
        // The same seed gives every thread the same schedule.
        #expect(SliceSchedule(targets: 4, seed: 7).order(ofCycle: 5) == schedule.order(ofCycle: 5))
    }

    @Test("a failed connect of any target fails the run")
    func failedConnect() throws {
        struct Refused: Error {}
        let workload = try #require(Workload.standard("c"))
        let log = LoggingDatabase.Log()
        #expect(throws: Refused.self) {
            _ = try Runner.interleaved(workload: workload, targets: 2, threads: 2, seconds: 0.05) { target, thread in
                if target == 1 && thread == 1 { throw Refused() }
                return LoggingDatabase(target: target, thread: thread, log: log)
            }
        }
    }
}
