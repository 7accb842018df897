/// One operation of a YCSB run, as the runner hands it to a database binding.
public enum Operation: Sendable, Equatable {
    /// Read a record (all fields, or the one named).
    case read(key: String, field: Int?)
    /// Write one field (or all, with writeallfields).
    case update(key: String, fields: [Int: [UInt8]])
    /// Insert a new record with every field.
    case insert(key: String, fields: [Int: [UInt8]])
    /// Read `count` records in key order from `start`.
    case scan(start: String, count: Int)
    /// Read the record (all fields, or the one named, as `read`), then write one field (or all,
    /// with writeallfields); timed as one operation, as YCSB does.
    case readModifyWrite(key: String, field: Int?, fields: [Int: [UInt8]])

    public var kind: Kind {
        switch self {
        case .read: .read
        case .update: .update
        case .insert: .insert
        case .scan: .scan
        case .readModifyWrite: .readModifyWrite
        }
    }

    public enum Kind: String, Sendable, CaseIterable {
        case read = "READ"
        case update = "UPDATE"
        case insert = "INSERT"
        case scan = "SCAN"
        case readModifyWrite = "READ-MODIFY-WRITE"

        /// Position in `allCases`, for per-kind arrays.
        public var index: Int {
            switch self {
            case .read: 0
            case .update: 1
            case .insert: 2
            case .scan: 3
            case .readModifyWrite: 4
            }
        }
    }
}
