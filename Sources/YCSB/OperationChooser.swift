/// Draws operations the way YCSB's `CoreWorkload.doTransaction` does: the operation from the
/// proportions, the key from the request distribution over the acknowledged key space, scan
/// lengths from the scan-length distribution, and values as random printable bytes. One per
/// thread; the key space is shared.
public struct OperationChooser {
    public let workload: Workload
    let keySpace: KeySpace
    var random: RandomSource
    let operations: DiscreteGenerator<Operation.Kind>
    var zipfian: ScrambledZipfianGenerator?
    var latest: SkewedLatestGenerator?
    let uniformScanLength: UniformGenerator
    let zipfianScanLength: ZipfianGenerator?

    public init(workload: Workload, keySpace: KeySpace, seed: UInt64) {
        self.workload = workload
        self.keySpace = keySpace
        random = RandomSource(seed: seed)
        var ops = DiscreteGenerator<Operation.Kind>()
        ops.add(.read, weight: workload.readProportion)
        ops.add(.update, weight: workload.updateProportion)
        ops.add(.insert, weight: workload.insertProportion)
        ops.add(.scan, weight: workload.scanProportion)
        ops.add(.readModifyWrite, weight: workload.readModifyWriteProportion)
        if ops.isEmpty { ops.add(.read, weight: 1) }
        operations = ops
        switch workload.requestDistribution {
        case .zipfian: zipfian = ScrambledZipfianGenerator(min: 0, max: workload.zipfianKeyRange)
        case .latest: latest = SkewedLatestGenerator(initialCount: workload.recordCount)
        case .uniform: break
        }
        uniformScanLength = UniformGenerator(workload.minScanLength, max(workload.minScanLength, workload.maxScanLength))
        zipfianScanLength =
            workload.scanLengthDistribution == .zipfian
            ? ZipfianGenerator(min: workload.minScanLength, max: max(workload.minScanLength, workload.maxScanLength)) : nil
    }

    /// The next operation of the run phase. Inserts must be acknowledged with
    /// ``acknowledgeInsert(_:)`` once the database has them.
    public mutating func next() -> (Operation, insertedKeyNumber: Int64?) {
        switch operations.next(&random) {
        case .read:
            return (.read(key: key(chooseKeyNumber()), field: workload.readAllFields ? nil : randomField()), nil)
        case .update:
            return (.update(key: key(chooseKeyNumber()), fields: values(all: workload.writeAllFields)), nil)
        case .insert:
            let n = keySpace.reserveInsert()
            return (.insert(key: key(n), fields: values(all: true)), n)
        case .scan:
            let length = Int(zipfianScanLength?.next(&random) ?? uniformScanLength.next(&random))
            return (.scan(start: key(chooseKeyNumber()), count: max(1, length)), nil)
        case .readModifyWrite:
            // As YCSB: the read is of every field only with readallfields, else of one field.
            let key = key(chooseKeyNumber())
            let field = workload.readAllFields ? nil : randomField()
            return (.readModifyWrite(key: key, field: field, fields: values(all: workload.writeAllFields)), nil)
        }
    }

    /// The record for load-phase insert number `n`.
    public mutating func loadRecord(_ n: Int64) -> (key: String, fields: [Int: [UInt8]]) { (key(n), values(all: true)) }

    public func acknowledgeInsert(_ n: Int64) { keySpace.acknowledge(n) }

    public func key(_ n: Int64) -> String {
        ycsbKey(n, hashed: workload.hashedInsertOrder, zeroPadding: workload.zeroPadding)
    }

    mutating func chooseKeyNumber() -> Int64 {
        let limit = keySpace.acknowledgedLimit
        guard limit > 0 else { return 0 }
        while true {
            let n: Int64
            if let z = zipfian {
                n = z.next(&random)
            } else if var l = latest {
                n = l.next(&random, latest: limit - 1)
                latest = l
            } else {
                n = UniformGenerator(0, limit - 1).next(&random)
            }
            // Keys past the last acknowledged insert are drawn again, as YCSB does.
            if n < limit { return n }
        }
    }

    mutating func randomField() -> Int { Int(random.next() % UInt64(workload.fieldCount)) }

    /// Random printable values (YCSB's RandomByteIterator range: ' ' to '~').
    mutating func values(all: Bool) -> [Int: [UInt8]] {
        var fields: [Int: [UInt8]] = [:]
        let indices = all ? Array(0..<workload.fieldCount) : [randomField()]
        for f in indices {
            // Eight characters per random draw: a 64 KiB field must not cost the client more than
            // the request it rides in.
            fields[f] = [UInt8](unsafeUninitializedCapacity: workload.fieldLength) { bytes, count in
                var bits: UInt64 = 0
                for i in 0..<workload.fieldLength {
                    if i & 7 == 0 { bits = random.next() }
                    bytes[i] = UInt8(32 + (bits & 0xFF) % 95)
                    bits >>= 8
                }
                count = workload.fieldLength
            }
        }
        return fields
    }
}
