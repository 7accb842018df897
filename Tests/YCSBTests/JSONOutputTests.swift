import Foundation
import Testing
import YCSB

@Suite("YCSB JSON output")
struct JSONOutputTests {
    @Test("strings are escaped: quotes, backslashes and control characters")
    func quoting() {
        #expect(jsonQuoted("plain") == "\"plain\"")
        #expect(jsonQuoted("a\"b\\c") == "\"a\\\"b\\\\c\"")
        #expect(jsonQuoted("line\nnext\ttab\r") == "\"line\\nnext\\ttab\\r\"")
        #expect(jsonQuoted("\u{01}\u{1F}") == "\"\\u0001\\u001F\"")
        #expect(jsonQuoted("é µs") == "\"é µs\"")
    }

    @Test("a workload path and an error message with quotes still make valid JSON that reads back")
    func summaryParses() throws {
        let name = "work/\"odd\" dir\\workload\n"
        let error = "server said \"no\"\tat C:\\path"
        let read = OperationSummary(
            kind: .read, count: 2, errors: 1, firstError: error, notFound: 0, averageUs: 10, minUs: 5, maxUs: 15,
            p50Us: 10, p95Us: 15, p99Us: 15, p999Us: 15, cdf: [])
        let summary = RunSummary(
            phase: "run", workload: name, threads: 1, seconds: 1, perOperation: [read], perSecond: [2])
        let json = summary.json(
            workload: Workload(), setting: RunSetting(db: "redis", crypto: "none", nodes: 1, mtu: 1472, outstanding: 1))
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect(object["workload"] as? String == name)
        let ops = try #require(object["per_operation"] as? [[String: Any]])
        #expect(ops.first?["first_error"] as? String == error)
        #expect(ops.first?["errors"] as? Int == 1)
        #expect(object["throughput"] as? Double == 2)
    }
}
