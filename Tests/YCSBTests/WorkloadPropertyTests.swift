import Testing
import YCSB

@Suite("YCSB workload properties")
struct WorkloadPropertyTests {
    /// The parse error's message, or nil if `text` parses.
    func error(_ text: String) -> String? {
        do {
            _ = try Workload.parse(text)
            return nil
        } catch {
            return error.description
        }
    }

    @Test("tabs and other whitespace around the key, the = and the value are trimmed")
    func whitespace() throws {
        let w = try Workload.parse("recordcount\t=\t500\t\nrequestdistribution =\tzipfian \r\n\treadproportion\t= 0.25")
        #expect(w.recordCount == 500 && w.requestDistribution == .zipfian && w.readProportion == 0.25)
    }

    @Test("fieldcount and fieldlength must be at least 1")
    func fieldShape() throws {
        #expect(error("fieldcount=0")?.contains("fieldcount") == true)
        #expect(error("fieldlength=0")?.contains("fieldlength") == true)
        let w = try Workload.parse("fieldcount=1\nfieldlength=1")
        #expect(w.fieldCount == 1 && w.fieldLength == 1)
    }

    @Test("scan lengths are uniform or zipfian; latest is refused")
    func scanLengthDistribution() throws {
        #expect(error("scanlengthdistribution=latest")?.contains("uniform or zipfian") == true)
        #expect(try Workload.parse("scanlengthdistribution=zipfian").scanLengthDistribution == .zipfian)
    }

    @Test("threadcount, target and maxexecutiontime are kept (0 meaning none for the last two)")
    func runSettings() throws {
        let w = try Workload.parse("threadcount=8\ntarget=2500\nmaxexecutiontime=30")
        #expect(w.threadCount == 8 && w.targetRate == 2_500 && w.maxExecutionSeconds == 30)
        let unlimited = try Workload.parse("target=0\nmaxexecutiontime=0")
        #expect(unlimited.targetRate == nil && unlimited.maxExecutionSeconds == nil)
        #expect(Workload().threadCount == nil)
        #expect(error("threadcount=0") != nil)
        #expect(error("maxexecutiontime=inf") != nil)
        #expect(error("target=nan") != nil)
    }

    @Test("variable field lengths, data integrity checks and partitioned loads are refused as not supported")
    func unsupported() throws {
        #expect(error("fieldlengthdistribution=zipfian")?.contains("not supported") == true)
        #expect(error("fieldlengthdistribution=uniform")?.contains("not supported") == true)
        #expect(try Workload.parse("fieldlengthdistribution=constant").fieldLength == 100)
        #expect(error("dataintegrity=true")?.contains("not supported") == true)
        #expect(error("dataintegrity=false") == nil)
        #expect(error("insertstart=1000")?.contains("partitioned loads") == true)
        #expect(error("insertcount=1000")?.contains("partitioned loads") == true)
    }
}
