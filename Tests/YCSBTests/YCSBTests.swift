import Testing
import YCSB

@Suite("YCSB core workload")
struct YCSBTests {
    @Test("key names match Java YCSB's FNV hashing (user6284781860667377211 is key 0)")
    func keyNames() {
        #expect(fnvhash64(0) == 6_284_781_860_667_377_211)
        #expect(fnvhash64(1) == 8_517_097_267_634_966_620)
        #expect(fnvhash64(42) == 55_488_592_825_689_361)
        #expect(fnvhash64(123_456_789) == 2_350_796_791_908_741_607)
        #expect(ycsbKey(0) == "user6284781860667377211")
        #expect(ycsbKey(7, hashed: false, zeroPadding: 5) == "user00007")
    }

    @Test("the six standard workloads have YCSB's proportions and distributions")
    func standardWorkloads() throws {
        let a = try #require(Workload.standard("a"))
        #expect(a.readProportion == 0.5 && a.updateProportion == 0.5 && a.requestDistribution == .zipfian)
        let d = try #require(Workload.standard("D"))
        #expect(d.insertProportion == 0.05 && d.requestDistribution == .latest)
        let e = try #require(Workload.standard("e"))
        #expect(e.scanProportion == 0.95 && e.maxScanLength == 100)
        let f = try #require(Workload.standard("f"))
        #expect(f.readModifyWriteProportion == 0.5)
        #expect(Workload.standard("g") == nil)
        #expect(a.fieldCount == 10 && a.fieldLength == 100 && !a.writeAllFields)
    }

    @Test("workload files in YCSB's property format are read, and mistakes are reported with their line")
    func propertyFiles() throws {
        let text = """
            # Yahoo! Cloud System Benchmark
            recordcount=1000
            operationcount=1000
            workload=site.ycsb.workloads.CoreWorkload
            readallfields=true
            readproportion=0.5
            updateproportion=0.5
            scanproportion=0
            insertproportion=0
            requestdistribution=zipfian
            """
        let w = try Workload.parse(text)
        #expect(w.readProportion == 0.5 && w.requestDistribution == .zipfian && w.recordCount == 1_000)
        #expect(throws: Workload.ParseError.self) { try Workload.parse("readproportion=lots") }
        #expect(throws: Workload.ParseError.self) { try Workload.parse("requestdistribution=pareto") }
        // Keys nobody reads are ignored, as Java YCSB ignores them, and listed for a warning.
        #expect(try Workload.parse("nonsense\nfrobnicate=1\nnonsense=2").ignoredProperties == ["nonsense", "frobnicate"])
    }

    @Test("the operation mix follows the proportions", arguments: ["a", "b", "e", "f"])
    func operationMix(letter: String) throws {
        var w = try #require(Workload.standard(letter))
        w.recordCount = 10_000
        w.operationCount = 100_000
        var chooser = OperationChooser(workload: w, keySpace: KeySpace(initialRecords: w.recordCount), seed: 1)
        var counts: [Operation.Kind: Int] = [:]
        let draws = 100_000
        for _ in 0..<draws {
            let (op, inserted) = chooser.next()
            counts[op.kind, default: 0] += 1
            if let n = inserted { chooser.acknowledgeInsert(n) }
        }
        func share(_ k: Operation.Kind) -> Double { Double(counts[k] ?? 0) / Double(draws) }
        #expect(abs(share(.read) - w.readProportion) < 0.01)
        #expect(abs(share(.update) - w.updateProportion) < 0.01)
        #expect(abs(share(.insert) - w.insertProportion) < 0.01)
        #expect(abs(share(.scan) - w.scanProportion) < 0.01)
        #expect(abs(share(.readModifyWrite) - w.readModifyWriteProportion) < 0.01)
    }

    @Test("Zipfian (theta 0.99): item 0 is the most popular and popularity falls with rank")
    func zipfian() {
        let z = ZipfianGenerator(min: 0, max: 999)
        var random = RandomSource(seed: 7)
        var counts = [Int](repeating: 0, count: 1_000)
        for _ in 0..<200_000 { counts[Int(z.next(&random))] += 1 }
        #expect(counts[0] > counts[1] && counts[1] > counts[2] && counts[2] > counts[10] && counts[10] > counts[500])
        // Zipf with theta 0.99: P(rank 1) / P(rank 0) ≈ 2^-0.99 ≈ 0.5.
        let ratio = Double(counts[1]) / Double(counts[0])
        #expect(ratio > 0.45 && ratio < 0.56, "\(ratio)")
    }

    @Test("scrambled Zipfian stays in range and spreads the hot keys")
    func scrambledZipfian() {
        let z = ScrambledZipfianGenerator(min: 0, max: 9_999)
        var random = RandomSource(seed: 3)
        var counts: [Int64: Int] = [:]
        for _ in 0..<100_000 {
            let n = z.next(&random)
            #expect(n >= 0 && n < 10_000)
            counts[n, default: 0] += 1
        }
        let hottest = counts.sorted { $0.value > $1.value }.prefix(5).map(\.key)
        #expect(hottest.contains { $0 > 100 }, "hot keys are scattered, not the first ones: \(hottest)")
        #expect(counts.values.max()! > 100_000 / 10_000 * 20)  // skewed
    }

    @Test("latest favours the newest records, and never chooses one not yet acknowledged")
    func latestAndAcknowledgement() throws {
        var w = try #require(Workload.standard("d"))
        w.recordCount = 1_000
        w.operationCount = 10_000
        let keys = KeySpace(initialRecords: 1_000)
        var chooser = OperationChooser(workload: w, keySpace: keys, seed: 9)
        var pending: [Int64] = []
        var newest = 0
        var reads = 0
        let chosen = Set((0..<1_000).map { chooser.key(Int64($0)) })
        for _ in 0..<20_000 {
            let (op, inserted) = chooser.next()
            if let n = inserted {
                pending.append(n)
                if pending.count > 3 { chooser.acknowledgeInsert(pending.removeFirst()) }
            }
            if case .read(let key, _) = op {
                reads += 1
                let limit = keys.acknowledgedLimit
                let allowed = (0..<limit).contains { chooser.key($0) == key }
                #expect(allowed, "read of \(key) beyond the acknowledged limit \(limit)")
                if !chosen.contains(key) { newest += 1 }
                if reads > 2_000 { break }
            }
        }
        // Most reads hit records inserted during the run (the newest), not the initial 1,000.
        #expect(Double(newest) / Double(reads) > 0.5, "\(newest) of \(reads)")
    }

    @Test("the key space acknowledges inserts in order, whatever order they complete in")
    func keySpace() {
        let keys = KeySpace(initialRecords: 10)
        let a = keys.reserveInsert()
        let b = keys.reserveInsert()
        let c = keys.reserveInsert()
        #expect((a, b, c) == (10, 11, 12))
        keys.acknowledge(c)
        #expect(keys.acknowledgedLimit == 10)
        keys.acknowledge(a)
        #expect(keys.acknowledgedLimit == 11)
        keys.acknowledge(b)
        #expect(keys.acknowledgedLimit == 13)
    }

    @Test("records have fieldcount fields of fieldlength printable bytes; updates write one field")
    func values() throws {
        let w = try #require(Workload.standard("a"))
        var chooser = OperationChooser(workload: w, keySpace: KeySpace(initialRecords: 100), seed: 2)
        let record = chooser.loadRecord(5)
        #expect(record.key == ycsbKey(5))
        #expect(record.fields.count == 10 && record.fields.values.allSatisfy { $0.count == 100 })
        #expect(record.fields.values.allSatisfy { $0.allSatisfy { $0 >= 32 && $0 < 127 } })
        for _ in 0..<100 {
            if case .update(_, let fields) = chooser.next().0 { #expect(fields.count == 1) }
        }
    }
}

@Suite("YCSB read-modify-write")
struct ReadModifyWriteChoiceTests {
    /// The read field of every read-modify-write among `draws` operations of workload F.
    func readFields(readAllFields: Bool) throws -> [Int?] {
        var w = try #require(Workload.standard("f"))
        w.readAllFields = readAllFields
        var chooser = OperationChooser(workload: w, keySpace: KeySpace(initialRecords: w.recordCount), seed: 4)
        return (0..<400).compactMap { _ -> Int?? in
            guard case .readModifyWrite(_, let field, _) = chooser.next().0 else { return nil }
            return .some(field)
        }
    }

    @Test("it reads every field only with readallfields, else one chosen field (as YCSB)")
    func readField() throws {
        let all = try readFields(readAllFields: true)
        #expect(!all.isEmpty && all.allSatisfy { $0 == nil })
        let one = try readFields(readAllFields: false)
        #expect(!one.isEmpty && one.allSatisfy { $0.map { (0..<10).contains($0) } ?? false })
        #expect(Set(one.compactMap { $0 }).count > 5, "the field is drawn, not fixed")
    }

    @Test("perform hands the read field to the database's read")
    func performPassesField() throws {
        final class FieldLog: YCSBDatabase {
            var readFields: [Int?] = []
            func read(key: String, field: Int?) throws -> Bool {
                readFields.append(field)
                return true
            }
            func update(key: String, fields: [Int: [UInt8]]) throws {}
            func insert(key: String, fields: [Int: [UInt8]]) throws {}
            func scan(start: String, count: Int) throws -> Int { count }
        }
        let db = FieldLog()
        _ = try db.perform(.readModifyWrite(key: "k", field: 7, fields: [1: [65]]))
        _ = try db.perform(.readModifyWrite(key: "k", field: nil, fields: [1: [65]]))
        #expect(db.readFields == [7, nil])
    }
}
