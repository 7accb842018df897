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

    @Test("variable field lengths and data integrity checks are refused as not supported")
    func unsupported() throws {
        #expect(error("fieldlengthdistribution=zipfian")?.contains("not supported") == true)
        #expect(error("fieldlengthdistribution=uniform")?.contains("not supported") == true)
        #expect(try Workload.parse("fieldlengthdistribution=constant").fieldLength == 100)
        #expect(error("dataintegrity=true")?.contains("not supported") == true)
        #expect(error("dataintegrity=false") == nil)
    }

    @Test("insertstart and insertcount pass only when they mean every record (no partitioned loads)")
    func partitionedLoads() throws {
        // YCSB's defaults, as its workload template spells them out.
        #expect(try Workload.parse("recordcount=1000\ninsertstart=0").partitionedLoadError == nil)
        #expect(try Workload.parse("insertcount=1000\nrecordcount=1000").partitionedLoadError == nil)
        #expect(try Workload.parse("recordcount=1000\ninsertstart=500").partitionedLoadError?.contains("partitioned") == true)
        #expect(try Workload.parse("recordcount=1000\ninsertcount=500").partitionedLoadError?.contains("partitioned") == true)
        #expect(error("insertstart=-1") != nil)
    }

    @Test("operationcount 0 means no count limit, as in YCSB")
    func unlimitedOperations() throws {
        #expect(try Workload.parse("operationcount=0").operationLimit == .max)
        #expect(try Workload.parse("operationcount=7").operationLimit == 7)
    }

    @Test("Java properties syntax: ':' or blanks as separators, '!' comments, continued lines, escapes")
    func javaPropertiesSyntax() throws {
        let text = "! a comment\n  # another\nrecordcount: 500\noperationcount 250\nreadproportion=\\\n    0.25\n"
            + "requestdistribution = latest\r\nreadallfields=False\nwriteallfields:TRUE\ninsertorder\\u003Dordered\n"
        let w = try Workload.parse(text)
        #expect(w.recordCount == 500 && w.operationCount == 250 && w.readProportion == 0.25)
        #expect(w.requestDistribution == .latest && !w.readAllFields && w.writeAllFields)
        #expect(w.ignoredProperties == ["insertorder=ordered"])  // an escaped '=' belongs to the key
        let entries = PropertiesText.entries("a\\=b=c\\td\nkey\nlast=1\\")
        #expect(entries.map(\.key) == ["a=b", "key", "last"])
        #expect(entries.map(\.value) == ["c\td", "", "1"])
        #expect(entries.map(\.line) == [1, 2, 3])
        // A continued line's line number is where it starts; comment marks inside it are text.
        let continued = PropertiesText.entries("\nx=1,\\\n # 2\ny=3")
        #expect(continued.map(\.value) == ["1,# 2", "3"] && continued.map(\.line) == [2, 4])
    }

    @Test("a -p option splits at its first '=', as Java YCSB's command line does, with no escapes")
    func commandLineOption() throws {
        #expect(try Workload.parseOption("fieldlength=4096", base: Workload()).fieldLength == 4_096)
        #expect(try Workload.parseOption("a:b=c\\d", base: Workload()).ignoredProperties == ["a:b"])
        #expect(throws: Workload.ParseError.self) { try Workload.parseOption("fieldlength 4096", base: Workload()) }
        do {
            _ = try Workload.parseOption("fieldcount=0", base: Workload())
        } catch {
            #expect(error.description == "fieldcount needs a number of at least 1")  // no line number
        }
    }

    @Test("a workload file in the shape of YCSB's template loads, warning only of what it does not use")
    func templateShapedFile() throws {
        let text = """
            # Workload in the layout of YCSB's workload_template: every CoreWorkload setting spelled
            # out with its default, plus measurement settings this generator has no use for.
            workload=site.ycsb.workloads.CoreWorkload
            recordcount=1000000
            operationcount=3000000
            insertstart=0
            fieldcount=10
            fieldlength=100
            readallfields=true
            writeallfields=false
            fieldlengthdistribution=constant
            readproportion=0.95
            updateproportion=0.05
            insertproportion=0
            readmodifywriteproportion=0
            scanproportion=0
            maxscanlength=1000
            scanlengthdistribution=uniform
            insertorder=hashed
            requestdistribution=zipfian
            hotspotdatafraction=0.2
            hotspotopnfraction=0.8
            table=usertable
            measurementtype=histogram
            histogram.buckets=1000
            timeseries.granularity=1000
            """
        let w = try Workload.parse(text)
        #expect(w.recordCount == 1_000_000 && w.operationCount == 3_000_000 && w.readProportion == 0.95)
        #expect(w.partitionedLoadError == nil && w.maxExecutionSeconds == nil)
        #expect(w.ignoredProperties == ["histogram.buckets", "timeseries.granularity"])
    }
}
