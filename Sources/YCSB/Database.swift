/// What the YCSB runner needs from a store (YCSB's `DB` interface). One instance per client
/// thread; calls are synchronous.
public protocol YCSBDatabase {
    /// False if the record does not exist.
    func read(key: String, field: Int?) throws -> Bool
    func update(key: String, fields: [Int: [UInt8]]) throws
    func insert(key: String, fields: [Int: [UInt8]]) throws
    /// Reads up to `count` records in key order from `start`; returns how many it got.
    func scan(start: String, count: Int) throws -> Int
}

/// A binding that keeps several operations in flight from one thread (the runner's
/// `outstanding` above 1). `start` sends an operation and returns; `poll` makes progress and runs
/// completions on the calling thread (a failure to send may complete at once, inside `start`).
public protocol YCSBAsyncDatabase: YCSBDatabase {
    /// Starts `operation`. `completion` gets whether the record was found (reads and
    /// read-modify-writes; true otherwise) or the error.
    func start(_ operation: Operation, completion: @escaping (Result<Bool, any Error>) -> Void)
    /// Sends what is queued and completes what has answered; may wait briefly for a reply.
    func poll()
}

extension YCSBDatabase {
    /// Runs one operation synchronously; true unless a read found no record.
    public func perform(_ operation: Operation) throws -> Bool {
        switch operation {
        case .read(let key, let field): return try read(key: key, field: field)
        case .update(let key, let fields): try update(key: key, fields: fields)
        case .insert(let key, let fields): try insert(key: key, fields: fields)
        case .scan(let start, let count): _ = try scan(start: start, count: count)
        case .readModifyWrite(let key, let field, let fields):
            let found = try read(key: key, field: field)
            try update(key: key, fields: fields)
            return found
        }
        return true
    }
}
