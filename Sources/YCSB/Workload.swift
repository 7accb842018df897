/// A YCSB core workload: YCSB's `CoreWorkload` properties with its defaults, the six standard
/// workloads, and YCSB's property-file format (Java's `.properties`; see ``PropertiesText``).
public struct Workload: Sendable, Equatable {
    public enum Distribution: String, Sendable {
        case uniform
        case zipfian
        case latest
    }

    public var name = "custom"
    public var recordCount: Int64 = 1_000
    public var operationCount: Int64 = 1_000
    public var fieldCount = 10
    public var fieldLength = 100
    public var readAllFields = true
    public var writeAllFields = false
    public var readProportion = 0.95
    public var updateProportion = 0.05
    public var insertProportion = 0.0
    public var scanProportion = 0.0
    public var readModifyWriteProportion = 0.0
    public var requestDistribution = Distribution.uniform
    public var minScanLength: Int64 = 1
    public var maxScanLength: Int64 = 1_000
    public var scanLengthDistribution = Distribution.uniform
    /// YCSB's default: insert keys hashed with FNV, so "latest" keys are scattered.
    public var hashedInsertOrder = true
    public var zeroPadding = 1
    /// YCSB's `threadcount`: client threads, unless the command line says otherwise.
    public var threadCount: Int?
    /// YCSB's `target`: operations per second over all threads (an open loop); nil (YCSB's 0)
    /// runs as fast as the database answers.
    public var targetRate: Double?
    /// YCSB's `maxexecutiontime`: the run phase's time limit in seconds; nil (YCSB's 0) for none.
    public var maxExecutionSeconds: Double?
    /// YCSB's `insertstart` and `insertcount`, kept to be checked once every property is in:
    /// a partitioned load (several clients each inserting a part of the records) is not
    /// supported, so only the values that mean "every record" pass ``partitionedLoadError``.
    public var insertStart: Int64 = 0
    public var insertCount: Int64?
    /// Properties this generator does not use (Java YCSB ignores unknown ones too; the command
    /// line warns about them), in the order met.
    public var ignoredProperties: [String] = []

    public init() {}

    /// The run phase's operation budget: YCSB's `operationcount`, where 0 means no limit (the run
    /// then ends at its time limit).
    public var operationLimit: Int64 { operationCount == 0 ? .max : operationCount }

    /// Why the workload asks for a partitioned load, which is not supported; nil if it does not.
    public var partitionedLoadError: String? {
        guard insertStart != 0 || (insertCount.map { $0 != recordCount } ?? false) else { return nil }
        return "insertstart \(insertStart) and insertcount \(insertCount.map(String.init) ?? "(recordcount)") "
            + "ask for a partitioned load (several clients each inserting a part of the records), which is not "
            + "supported: one load inserts every record (insertstart 0, insertcount the recordcount)"
    }

    /// The largest key number a zipfian request distribution draws (it draws from 0 through this).
    /// As CoreWorkload's `ScrambledZipfianGenerator(insertstart, insertstart + insertcount +
    /// expectednewkeys)`, whose bounds are inclusive: room for the records the run may insert
    /// (twice the expected inserts), so inserts do not move the hot set, and the same hot keys as
    /// Java YCSB's. Draws at or past the last acknowledged insert are drawn again, so an operation
    /// count far above what runs (a cap for a timed run) costs that many draws per operation.
    public var zipfianKeyRange: Int64 {
        let expected = 2 * Double(operationCount) * insertProportion
        // Saturates rather than traps for absurd counts; such a range only makes draws retry.
        guard expected < Double(Int64.max / 2), recordCount < Int64.max / 2 else { return Int64.max / 2 }
        return recordCount + Int64(expected)
    }

    /// The workload files shipped with YCSB (`workloads/workload{a..f}`).
    public static func standard(_ letter: String) -> Workload? {
        var w = Workload()
        w.name = letter.lowercased()
        w.readAllFields = true
        w.requestDistribution = .zipfian
        switch letter.lowercased() {
        case "a": (w.readProportion, w.updateProportion) = (0.5, 0.5)
        case "b": (w.readProportion, w.updateProportion) = (0.95, 0.05)
        case "c": (w.readProportion, w.updateProportion) = (1.0, 0)
        case "d":
            (w.readProportion, w.updateProportion, w.insertProportion) = (0.95, 0, 0.05)
            w.requestDistribution = .latest
        case "e":
            (w.readProportion, w.updateProportion, w.insertProportion, w.scanProportion) = (0, 0, 0.05, 0.95)
            w.maxScanLength = 100
            w.scanLengthDistribution = .uniform
        case "f":
            (w.readProportion, w.updateProportion, w.readModifyWriteProportion) = (0.5, 0, 0.5)
        default: return nil
        }
        return w
    }

    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// Applies YCSB properties (as in a workload file or `-p key=value`) to `base`.
    public static func parse(_ text: String, base: Workload = Workload()) throws(ParseError) -> Workload {
        var w = base
        for p in PropertiesText.entries(text) { try w.set(p.key, p.value, line: p.line) }
        return w
    }

    /// Applies one `-p name=value` option as Java YCSB's command line does: split at the first
    /// `=`, with no escapes or other separators (those are a workload file's).
    public static func parseOption(_ option: String, base: Workload) throws(ParseError) -> Workload {
        guard let eq = option.firstIndex(of: "=") else { throw ParseError(description: "expected name=value") }
        var w = base
        try w.set(String(option[..<eq]), String(option[option.index(after: eq)...]), line: nil)
        return w
    }

    mutating func set(_ key: String, _ value: String, line: Int?) throws(ParseError) {
        let at = line.map { "line \($0): " } ?? ""  // a -p option has no line
        // Java keeps a value's trailing blanks (and then fails to read "500 " as a number); every
        // value here is a number or a name, so blanks around it are dropped.
        let value = PropertiesText.withoutBlanks(value)
        func int() throws(ParseError) -> Int64 {
            guard let n = Int64(value), n >= 0 else { throw ParseError(description: "\(at)\(key) needs a number") }
            return n
        }
        func positiveInt() throws(ParseError) -> Int {
            guard let n = Int(value), n >= 1 else {
                throw ParseError(description: "\(at)\(key) needs a number of at least 1")
            }
            return n
        }
        func double() throws(ParseError) -> Double {
            guard let d = Double(value), d >= 0, d.isFinite else {
                throw ParseError(description: "\(at)\(key) needs a number")
            }
            return d
        }
        func bool() throws(ParseError) -> Bool {
            // Java reads booleans without regard to case (`Boolean.parseBoolean`).
            guard let b = Bool(value.lowercased()) else {
                throw ParseError(description: "\(at)\(key) needs true or false")
            }
            return b
        }
        func distribution() throws(ParseError) -> Distribution {
            guard let d = Distribution(rawValue: value) else {
                throw ParseError(description: "\(at)\(key) must be uniform, zipfian or latest (got \(value))")
            }
            return d
        }
        switch key {
        case "recordcount": recordCount = try int()
        case "operationcount": operationCount = try int()
        // At least one field of at least one byte: a field is drawn modulo fieldcount.
        case "fieldcount": fieldCount = try positiveInt()
        case "fieldlength": fieldLength = try positiveInt()
        case "readallfields": readAllFields = try bool()
        case "writeallfields": writeAllFields = try bool()
        case "readproportion": readProportion = try double()
        case "updateproportion": updateProportion = try double()
        case "insertproportion": insertProportion = try double()
        case "scanproportion": scanProportion = try double()
        case "readmodifywriteproportion": readModifyWriteProportion = try double()
        case "requestdistribution": requestDistribution = try distribution()
        case "minscanlength": minScanLength = try int()
        case "maxscanlength": maxScanLength = try int()
        case "scanlengthdistribution":
            // YCSB draws scan lengths uniformly or Zipfian; "latest" has no meaning for a length.
            let d = try distribution()
            guard d != .latest else {
                throw ParseError(description: "\(at)scanlengthdistribution must be uniform or zipfian")
            }
            scanLengthDistribution = d
        case "insertorder":
            guard value == "hashed" || value == "ordered" else {
                throw ParseError(description: "\(at)insertorder must be hashed or ordered")
            }
            hashedInsertOrder = value == "hashed"
        case "zeropadding": zeroPadding = Int(try int())
        case "threadcount": threadCount = try positiveInt()
        // YCSB's 0 means no limit (for target, as fast as the database answers).
        case "target":
            let rate = try double()
            targetRate = rate > 0 ? rate : nil
        case "maxexecutiontime":
            let seconds = try double()
            maxExecutionSeconds = seconds > 0 ? seconds : nil
        case "fieldlengthdistribution":
            guard value == "constant" else {
                throw ParseError(
                    description: "\(at)fieldlengthdistribution \(value) is not supported (only constant)")
            }
        case "dataintegrity":
            guard try !bool() else {
                throw ParseError(description: "\(at)dataintegrity=true is not supported")
            }
        case "insertstart": insertStart = try int()
        case "insertcount": insertCount = try int()
        // Properties that name the Java classes or exporters: accepted, nothing to configure here.
        case "workload", "table", "measurementtype", "exporter", "exportfile", "status.interval",
            "hotspotdatafraction", "hotspotopnfraction":
            break
        default:
            if !ignoredProperties.contains(key) { ignoredProperties.append(key) }
        }
    }
}
