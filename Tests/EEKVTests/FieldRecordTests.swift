import EEKV
import EERPC
import Glibc
import Synchronization
import Testing

@Suite("Field records and merges")
struct FieldRecordTests {
    /// `FieldRecord.merge` run on arrays (a stored value of nil: the key does not exist).
    static func merge(_ stored: [UInt8]?, _ patch: [UInt8], capacity: Int = 1 << 16)
        -> Result<[UInt8], FieldRecord.MergeFailure>
    {
        var out = [UInt8](repeating: 0xEE, count: capacity)
        let result = out.withUnsafeMutableBytes { o in
            patch.withUnsafeBytes { p in
                if let stored {
                    return stored.withUnsafeBytes { s in
                        FieldRecord.merge(stored: s, patch: p, into: o.baseAddress!, capacity: capacity)
                    }
                }
                return FieldRecord.merge(stored: nil, patch: p, into: o.baseAddress!, capacity: capacity)
            }
        }
        return result.map { Array(out[0..<$0]) }
    }

    static func valid(_ bytes: [UInt8]) -> Bool { bytes.withUnsafeBytes { FieldRecord.isValid($0) } }

    @Test("records round-trip, and malformed bytes are not records")
    func codec() {
        let fields: [Int: [UInt8]] = [0: [1, 2, 3], 7: [], 9: Array(repeating: 65, count: 100), 65_535: [9]]
        let record = FieldRecord.encode(fields)
        #expect(FieldRecord.decode(record) == fields)
        #expect(FieldRecord.decode(FieldRecord.encode([:])) == [:])
        #expect(FieldRecord.decode([1, 0, 0]) == nil, "truncated field header")
        #expect(FieldRecord.decode(record + [0]) == nil, "trailing byte")
        #expect(FieldRecord.decode(Array(record.dropLast())) == nil, "truncated value")
        #expect(FieldRecord.decode([]) == nil)
        // Two fields, numbers 2 then 1: not ascending. Then 1 twice.
        #expect(!Self.valid([2, 0, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]))
        #expect(!Self.valid([2, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]))
        #expect(Self.valid([2, 0, 1, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0]))
        // A length that runs past the end (and one that would overflow a 32-bit offset).
        #expect(!Self.valid([1, 0, 1, 0, 5, 0, 0, 0, 1]))
        #expect(!Self.valid([1, 0, 1, 0, 0xFF, 0xFF, 0xFF, 0xFF, 1]))
    }

    @Test("a read checks a record's layout and field without decoding it")
    func check() {
        let record = FieldRecord.encode([0: [1, 2, 3], 7: []])
        #expect(FieldRecord.check(record, hasField: nil))
        #expect(FieldRecord.check(record, hasField: 7))
        #expect(!FieldRecord.check(record, hasField: 3))
        #expect(!FieldRecord.check(Array(record.dropLast()), hasField: nil))
        #expect(!FieldRecord.check(record + [0], hasField: 0))
        #expect(!FieldRecord.check([5], hasField: nil))
    }

    @Test("merges set the patch's fields and keep the others")
    func mergeCases() throws {
        let stored = FieldRecord.encode([1: [1], 3: [3, 3], 5: [5]])
        // Replace one, add before, between and after.
        let patch = FieldRecord.encode([0: [0], 3: [30], 4: [], 9: [9, 9, 9]])
        let merged = try Self.merge(stored, patch).get()
        #expect(FieldRecord.decode(merged) == [0: [0], 1: [1], 3: [30], 4: [], 5: [5], 9: [9, 9, 9]])
        #expect(merged == FieldRecord.encode(FieldRecord.decode(merged)!), "ascending, canonical")
        // No stored value: the patch itself.
        #expect(try Self.merge(nil, patch).get() == patch)
        // An empty stored record.
        #expect(try Self.merge(FieldRecord.encode([:]), patch).get() == patch)
        // A stored value that is not a record.
        guard case .failure(.notARecord) = Self.merge(Array("plain".utf8), patch) else {
            Issue.record("merging into a plain value succeeded")
            return
        }
        // Exactly the capacity fits; one byte less does not.
        let size = merged.count
        #expect(try Self.merge(stored, patch, capacity: size).get() == merged)
        guard case .failure(.tooLarge) = Self.merge(stored, patch, capacity: size - 1) else {
            Issue.record("a merge larger than its buffer succeeded")
            return
        }
    }

    @Test("a merge that would hold more than 65535 fields is refused")
    func tooManyFields() throws {
        let stored = FieldRecord.encode(Dictionary(uniqueKeysWithValues: (0..<32_768).map { ($0 * 2, [UInt8]()) }))
        let overlapping = FieldRecord.encode(Dictionary(uniqueKeysWithValues: (0..<25_000).map { ($0 * 2 + 1, [UInt8]()) }))
        #expect(FieldRecord.decode(try Self.merge(stored, overlapping, capacity: 1 << 20).get())?.count == 57_768)
        let tooMany = FieldRecord.encode(Dictionary(uniqueKeysWithValues: (0..<32_768).map { ($0 * 2 + 1, [UInt8]()) }))
        guard case .failure(.tooLarge) = Self.merge(stored, tooMany, capacity: 1 << 20) else {
            Issue.record("a record of 65,536 fields was built")
            return
        }
    }

    @Test("random merges agree with a dictionary model")
    func randomMerges() throws {
        var rng = SplitMix64(seed: 41)
        func randomFields(_ n: Int) -> [Int: [UInt8]] {
            var f: [Int: [UInt8]] = [:]
            for _ in 0..<n {
                f[Int(rng.next() % 40)] = (0..<Int(rng.next() % 12)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            }
            return f
        }
        var model = randomFields(8)
        var stored = FieldRecord.encode(model)
        for _ in 0..<2_000 {
            let patch = randomFields(Int(rng.next() % 6) + 1)
            stored = try Self.merge(stored, FieldRecord.encode(patch)).get()
            model.merge(patch) { _, new in new }
            #expect(FieldRecord.decode(stored) == model)
        }
    }

    // MARK: On the store's writer

    @Test("the writer merges in its transaction: create, overlay, refuse a plain value")
    func writerMerges() throws {
        let dir = TempDirectory()
        let store = try Store(directory: dir.path, durability: .nosync)
        defer { store.close() }
        let writer = SyncWriter(store)
        let reader = try store.makeReader()
        let key = Array("user1".utf8)
        #expect(writer.write(.merge, key, FieldRecord.encode([2: [2]])) == .committed)
        #expect(writer.write(.merge, key, FieldRecord.encode([1: [1], 2: [20]])) == .committed)
        #expect(try reader.get(key).flatMap(FieldRecord.decode) == [1: [1], 2: [20]])
        // A plain value is left as it was.
        let plain = Array("not a record".utf8)
        #expect(writer.write(.put, key, plain) == .committed)
        #expect(writer.write(.merge, key, FieldRecord.encode([1: [1]])) == .notARecord)
        #expect(try reader.get(key) == plain)
        // A merge whose result exceeds the largest value.
        let half = [UInt8](repeating: 7, count: KVProtocol.maxValueSize / 2)
        #expect(writer.write(.put, key, FieldRecord.encode([0: half])) == .committed)
        #expect(writer.write(.merge, key, FieldRecord.encode([1: half])) == .tooLarge)
        #expect(try reader.get(key).flatMap(FieldRecord.decode)?.keys.sorted() == [0])
        #expect(writer.write(.merge, key, FieldRecord.encode([0: [0]])) == .committed)
        #expect(try reader.get(key).flatMap(FieldRecord.decode) == [0: [0]])
    }

    /// What a client-side read-modify-write cannot promise: 8 threads each merge their own field
    /// into the same 20 keys at once, and every key ends with all 8 fields, each the last value
    /// its thread wrote (merges in one batch see the batch's earlier writes).
    @Test("concurrent merges of different fields into one record all survive")
    func concurrentMerges() throws {
        let dir = TempDirectory()
        let store = try Store(directory: dir.path, durability: .nosync)
        defer { store.close() }
        let threads = 8
        let rounds = 300
        let keys = (0..<20).map { Array("hot\($0)".utf8) }
        let failures = Atomic<Int>(0)
        let workers = (0..<threads).map { t in
            Threads.spawn(name: "merger-\(t)") {
                let writer = SyncWriter(store)
                for round in 0..<rounds {
                    let key = keys[round % keys.count]
                    let result = writer.write(.merge, key, FieldRecord.encode([t: Array("\(t):\(round)".utf8)]))
                    if result != .committed { failures.add(1, ordering: .relaxed) }
                }
            }
        }
        for w in workers { w.join() }
        #expect(failures.load(ordering: .relaxed) == 0)
        #expect(store.writer.commits.load(ordering: .relaxed) < threads * rounds, "merges were batched")
        let reader = try store.makeReader()
        for (i, key) in keys.enumerated() {
            let record = try #require(try reader.get(key).flatMap(FieldRecord.decode))
            let last = (0..<rounds).last { $0 % keys.count == i }!
            #expect(record == Dictionary(uniqueKeysWithValues: (0..<threads).map { ($0, Array("\($0):\(last)".utf8)) }))
        }
    }
}
