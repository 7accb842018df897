import Glibc
import Testing
@testable import YCSB

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

@Suite("YCSB runner measurements")
struct RunnerMeasurementTests {
    @Test("building the choosers (zeta over the records for latest) happens before the clock starts")
    func chooserSetupIsNotMeasured() throws {
        var workload = try #require(Workload.standard("d"))
        workload.recordCount = 30_000_000
        workload.operationCount = 1 << 40
        let before = Runner.now()
        _ = OperationChooser(workload: workload, keySpace: KeySpace(initialRecords: workload.recordCount), seed: 1)
        let setup = Double(Runner.now() - before) / 1e9
        try #require(setup > 0.2, "the setup must take long enough to show (\(setup) s)")
        let run = try Runner.run(workload: workload, threads: 2, seconds: 0.1) { _ in InstantDatabase() }
        #expect(run.operations > 0)
        #expect(run.seconds < 0.1 + setup / 2, "run \(run.seconds) s, setup \(setup) s")
    }

    @Test("a latency above the histogram's 100 s is clamped, not dropped")
    func slowOperationIsCounted() {
        let now = Runner.now()
        var recorder = Recorder(start: now, live: nil)
        recorder.record(.read, began: now &- 200_000_000_000)
        let summary = Runner.summarize(phase: "run", workload: Workload(), threads: 1, seconds: 1, recorders: [recorder])
        #expect(summary.operations == 1)
        #expect((summary.perOperation.first?.maxUs ?? 0) >= 99_000_000)
    }
}
