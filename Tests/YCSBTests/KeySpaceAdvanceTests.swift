import Testing

@testable import YCSB

/// Inserts whose `failing`th call fails; completes asynchronous operations at once.
final class FailingInsertDatabase: YCSBAsyncDatabase {
    struct InsertFailed: Error {}
    let failing: Int
    private(set) var inserts = 0
    init(failing: Int) { self.failing = failing }
    func read(key: String, field: Int?) throws -> Bool { true }
    func update(key: String, fields: [Int: [UInt8]]) throws {}
    func insert(key: String, fields: [Int: [UInt8]]) throws {
        inserts += 1
        if inserts == failing { throw InsertFailed() }
    }
    func scan(start: String, count: Int) throws -> Int { count }
    func start(_ operation: Operation, completion: @escaping (Result<Bool, any Error>) -> Void) {
        completion(Result { try perform(operation) })
    }
    func poll() {}
}

@Suite("YCSB key space under failures")
struct KeySpaceAdvanceTests {
    @Test("a failed insert is acknowledged, so later inserts still advance the limit", arguments: [1, 4])
    func failedInsertAcknowledged(outstanding: Int) throws {
        var workload = Workload()
        (workload.readProportion, workload.updateProportion, workload.insertProportion) = (0, 0, 1)
        workload.recordCount = 10
        let keySpace = KeySpace(initialRecords: 10)
        var chooser = OperationChooser(workload: workload, keySpace: keySpace, seed: 1)
        var recorder = Recorder(start: Runner.now(), live: nil)
        let db = FailingInsertDatabase(failing: 3)
        var granted = 0
        Runner.runClosedLoop(db, outstanding: outstanding, chooser: &chooser, recorder: &recorder) {
            granted += 1
            return granted <= 20
        }
        #expect(db.inserts == 20)
        #expect(recorder.errors[Operation.Kind.insert.index] == 1)
        #expect(keySpace.acknowledgedLimit == 30)
    }
}
