import Glibc
import Testing
import YCSB

/// A database that answers every operation at once.
final class InstantDatabase: YCSBDatabase {
    func read(key: String, field: Int?) throws -> Bool { true }
    func update(key: String, fields: [Int: [UInt8]]) throws {}
    func insert(key: String, fields: [Int: [UInt8]]) throws {}
    func scan(start: String, count: Int) throws -> Int { count }
}

@Suite("YCSB runner")
struct RunnerTests {
    @Test("the clock starts once every thread has connected: a slow connect does not eat a timed run")
    func connectIsNotMeasured() throws {
        var workload = try #require(Workload.standard("c"))
        workload.recordCount = 100
        workload.operationCount = 1 << 40
        let run = try Runner.run(workload: workload, threads: 2, seconds: 0.1) { _ in
            usleep(600_000)
            return InstantDatabase()
        }
        // Measured from the start of the connects, the run would last over 0.6 s with nothing
        // done in its 0.1 s.
        #expect(run.operations > 0)
        #expect(run.seconds >= 0.1 && run.seconds < 0.5)
    }

    @Test("a failed connect fails the run")
    func failedConnect() throws {
        struct Refused: Error {}
        let workload = try #require(Workload.standard("c"))
        #expect(throws: Refused.self) {
            _ = try Runner.run(workload: workload, threads: 2, seconds: 0.1) { t in
                if t == 1 { throw Refused() }
                return InstantDatabase()
            }
        }
    }
}
