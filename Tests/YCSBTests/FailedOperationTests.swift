import Glibc
import Testing
import YCSB

/// Answers reads at once, except every third, which fails after 5 ms.
final class SlowlyFailingReadsDatabase: YCSBDatabase {
    struct ReadFailed: Error {}
    private var reads = 0
    func read(key: String, field: Int?) throws -> Bool {
        reads += 1
        if reads % 3 == 0 {
            usleep(5_000)
            throw ReadFailed()
        }
        return true
    }
    func update(key: String, fields: [Int: [UInt8]]) throws {}
    func insert(key: String, fields: [Int: [UInt8]]) throws {}
    func scan(start: String, count: Int) throws -> Int { count }
}

@Suite("YCSB failed operations")
struct FailedOperationTests {
    func runWithFailures() throws -> RunSummary {
        var workload = try #require(Workload.standard("c"))
        workload.recordCount = 100
        workload.operationCount = 30
        return try Runner.run(workload: workload, threads: 1, seconds: nil) { _ in SlowlyFailingReadsDatabase() }
    }

    @Test("failed operations have their own latencies, and still count in the errors and the throughput")
    func separateHistogram() throws {
        let run = try runWithFailures()
        let read = try #require(run.perOperation.first { $0.name == "READ" })
        let failed = try #require(run.perOperation.first { $0.name == "READ-FAILED" })
        #expect(read.count == 20 && read.errors == 10 && !read.failed)
        #expect(failed.count == 10 && failed.errors == 0 && failed.failed)
        // The 5 ms failures do not slow the completed reads' latencies, and are where they belong.
        #expect(read.maxUs < 5_000, "\(read.maxUs)")
        #expect(failed.minUs >= 5_000, "\(failed.minUs)")
        #expect(run.operations == 30)
        #expect(run.perOperation.reduce(0) { $0 + $1.errors } == 10)
    }

    @Test("the text summary has a READ-FAILED block; the JSON an entry named READ-FAILED")
    func reported() throws {
        let run = try runWithFailures()
        let lines = run.ycsbLines
        #expect(lines.contains("[READ], Operations, 20"))
        #expect(lines.contains("[READ], Return=OK, 20"))
        #expect(lines.contains { $0.hasPrefix("[READ], Return=ERROR, 10 (first: ") })
        #expect(lines.contains("[READ-FAILED], Operations, 10"))
        #expect(lines.contains { $0.hasPrefix("[READ-FAILED], 99thPercentileLatency(us), ") })
        #expect(!lines.contains { $0.hasPrefix("[READ-FAILED], Return=") })
        let json = run.json(
            workload: Workload(), setting: RunSetting(db: "test", crypto: "none", nodes: 1, mtu: nil, outstanding: 1))
        #expect(json.contains("{\"operation\":\"READ\",\"count\":20,\"errors\":10,"))
        #expect(json.contains("{\"operation\":\"READ-FAILED\",\"count\":10,\"errors\":0,"))
        #expect(json.contains("\"operations\":30,"))
    }

    @Test("a kind whose every operation failed keeps its entry with the errors")
    func allFailed() throws {
        final class Refusing: YCSBDatabase {
            struct Refused: Error {}
            func read(key: String, field: Int?) throws -> Bool { throw Refused() }
            func update(key: String, fields: [Int: [UInt8]]) throws { throw Refused() }
            func insert(key: String, fields: [Int: [UInt8]]) throws { throw Refused() }
            func scan(start: String, count: Int) throws -> Int { throw Refused() }
        }
        var workload = try #require(Workload.standard("c"))
        workload.operationCount = 5
        let run = try Runner.run(workload: workload, threads: 1, seconds: nil) { _ in Refusing() }
        #expect(run.perOperation.map(\.name) == ["READ", "READ-FAILED"])
        #expect(run.perOperation.map(\.count) == [0, 5])
        #expect(run.perOperation.first?.errors == 5)
        #expect(run.operations == 5)
    }
}
