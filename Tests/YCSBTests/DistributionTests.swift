import Glibc
import Testing

@testable import YCSB

/// Chi-square goodness-of-fit tests of the generated streams against the distributions they are
/// meant to follow. The seeds are fixed, so each test is deterministic; the bound is the 0.1 %
/// critical value, so a correct generator fails with that probability for a fresh seed and a
/// wrong one (a proportion off by a few percent, a skew of the wrong shape) fails for certain.
@Suite("YCSB distributions (chi-square)")
struct DistributionTests {
    /// χ² critical values at p = 0.001 by degrees of freedom.
    static let critical: [Int: Double] = [1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 9: 27.88, 20: 45.31, 30: 59.70]

    static func chiSquare(observed: [Int], expected: [Double]) -> Double {
        zip(observed, expected).reduce(0) { $0 + (Double($1.0) - $1.1) * (Double($1.0) - $1.1) / $1.1 }
    }

    @Test("the operation mix of every workload fits its proportions", arguments: ["a", "b", "c", "d", "e", "f"])
    func operationMix(letter: String) throws {
        var w = try #require(Workload.standard(letter))
        w.recordCount = 10_000
        w.operationCount = 200_000
        var chooser = OperationChooser(workload: w, keySpace: KeySpace(initialRecords: w.recordCount), seed: 11)
        var counts = [Int](repeating: 0, count: Operation.Kind.allCases.count)
        let draws = 200_000
        for _ in 0..<draws {
            let (op, inserted) = chooser.next()
            counts[op.kind.index] += 1
            if let n = inserted { chooser.acknowledgeInsert(n) }
        }
        let proportions: [Operation.Kind: Double] = [
            .read: w.readProportion, .update: w.updateProportion, .insert: w.insertProportion, .scan: w.scanProportion,
            .readModifyWrite: w.readModifyWriteProportion,
        ]
        let total = proportions.values.reduce(0, +)
        let kinds = Operation.Kind.allCases.filter { proportions[$0]! > 0 }
        for k in Operation.Kind.allCases where proportions[k]! == 0 { #expect(counts[k.index] == 0, "\(k) drawn") }
        guard kinds.count > 1 else {
            #expect(counts[kinds[0].index] == draws)
            return
        }
        let chi = Self.chiSquare(
            observed: kinds.map { counts[$0.index] },
            expected: kinds.map { Double(draws) * proportions[$0]! / total })
        #expect(chi < Self.critical[kinds.count - 1]!, "χ² = \(chi) over \(kinds.count - 1) degrees of freedom")
    }

    /// The exact distribution of YCSB's Zipfian algorithm (Gray et al.): items 0 and 1 by the
    /// first two branches, the rest by inverting `n · (η·u − η + 1)^α` over the remaining u.
    static func zipfianProbabilities(_ z: ZipfianGenerator, bins: Int) -> [Double] {
        let n = Double(z.items)
        let zetan = ZipfianGenerator.zeta(0, z.items, z.theta, 0)
        let u0 = (1 + pow(0.5, z.theta)) / zetan  // where the formula branch starts
        func u(_ v: Double) -> Double { (pow(v / n, 1 / z.alpha) + z.eta - 1) / z.eta }  // inverse of the formula
        var p = [Double](repeating: 0, count: bins + 1)
        p[0] = 1 / zetan
        p[1] = pow(0.5, z.theta) / zetan
        for k in 0..<bins {
            let lo = max(u(Double(k)), u0)
            let hi = min(max(u(Double(k + 1)), u0), 1)
            p[k] += max(0, hi - lo)
        }
        p[bins] = 1 - p[0..<bins].reduce(0, +)  // the tail: every item from `bins` on
        return p
    }

    @Test("Zipfian (θ 0.99) draws fit the algorithm's distribution, item by item for the hottest 30")
    func zipfianFit() {
        let z = ZipfianGenerator(min: 0, max: 999)
        let bins = 30
        let expected = Self.zipfianProbabilities(z, bins: bins)
        // The constants against values worked out apart from the code (Σ 1/i^0.99 for i ≤ 1000,
        // and η = (1 − (2/n)^0.01) / (1 − ζ(2)/ζ(n)), in double precision), so a wrong ζ or η
        // cannot hide behind the expected distribution built from them.
        #expect(abs(ZipfianGenerator.zeta(0, 1_000, 0.99, 0) - 7.728953217284729) < 1e-9)
        #expect(abs(z.eta - 0.07480608670689805) < 1e-12)
        #expect(abs(z.alpha - 100) < 1e-9)
        var random = RandomSource(seed: 5)
        var counts = [Int](repeating: 0, count: bins + 1)
        let draws = 300_000
        for _ in 0..<draws { counts[min(Int(z.next(&random)), bins)] += 1 }
        let chi = Self.chiSquare(observed: counts, expected: expected.map { $0 * Double(draws) })
        #expect(chi < Self.critical[30]!, "χ² = \(chi) over 30 degrees of freedom")
        // And a uniform stream is far from it: the test can tell skew apart.
        var flat = [Int](repeating: 0, count: bins + 1)
        let uniform = UniformGenerator(0, 999)
        for _ in 0..<draws { flat[min(Int(uniform.next(&random)), bins)] += 1 }
        #expect(Self.chiSquare(observed: flat, expected: expected.map { $0 * Double(draws) }) > 1_000)
    }

    @Test("uniform key choice fits a flat distribution over ten buckets")
    func uniformFit() {
        let g = UniformGenerator(0, 9_999)
        var random = RandomSource(seed: 9)
        var counts = [Int](repeating: 0, count: 10)
        let draws = 200_000
        for _ in 0..<draws { counts[Int(g.next(&random)) / 1_000] += 1 }
        let chi = Self.chiSquare(observed: counts, expected: Array(repeating: Double(draws) / 10, count: 10))
        #expect(chi < Self.critical[9]!, "χ² = \(chi)")
    }

    @Test("scrambled Zipfian keeps Zipf's skew: the hottest key draws 1 / ζ of the requests")
    func scrambledFit() {
        // Scrambling permutes which items are hot, not how hot: the sorted frequencies of the
        // hottest items match the plain Zipfian's over the same item count.
        let items: Int64 = 1_000
        let s = ScrambledZipfianGenerator(min: 0, max: items - 1)
        var random = RandomSource(seed: 13)
        var counts = [Int64: Int]()
        let draws = 300_000
        for _ in 0..<draws { counts[s.next(&random), default: 0] += 1 }
        let sorted = counts.values.sorted(by: >)
        let top = 20
        // YCSB's scrambled generator draws from a Zipfian over 10^10 items and hashes the draw
        // into `items`: the hottest bucket holds the hottest rank (1 / ζ) plus its share of the
        // spread-out tail (under 1 / items of it), and the next hottest ranks land elsewhere.
        let p0 = 1 / ScrambledZipfianGenerator.zetan
        let share = Double(sorted[0]) / Double(draws)
        #expect(share > p0 * 0.97 && share < p0 + 2.0 / Double(items) + 0.003, "hottest share \(share) vs 1/ζ = \(p0)")
        #expect(sorted.prefix(top).reduce(0, +) > draws / 10, "the hottest \(top) keys draw over 10 %")
    }

    @Test("zipfian requests make the same keys hot as Java YCSB: rank r lands on FNV(r) mod (records + 1)")
    func scrambledHotKeysMatchYCSB() throws {
        // CoreWorkload draws from 0 through recordcount + expected inserts, both ends included:
        // 1,001 numbers for workload C over 1,000 records. Java's fnvhash64 of ranks 0, 1 and 2
        // is 6284781860667377211, 8517097267634966620 and 1820151046732198393 (worked out apart
        // from this code), so the three hottest key numbers are 144, 610 and 213 (a range one
        // short would give 211, 620 and 393).
        #expect(fnvhash64(0) == 6_284_781_860_667_377_211 && fnvhash64(1) == 8_517_097_267_634_966_620)
        var w = try #require(Workload.standard("c"))
        w.recordCount = 1_000
        #expect(w.zipfianKeyRange == 1_000)
        var chooser = OperationChooser(workload: w, keySpace: KeySpace(initialRecords: w.recordCount), seed: 21)
        var counts = [Int64: Int]()
        for _ in 0..<100_000 { counts[chooser.chooseKeyNumber(), default: 0] += 1 }
        let hottest = counts.sorted { $0.value > $1.value }.prefix(3).map(\.key)
        #expect(hottest == [144, 610, 213])
        // Number 1,000 is in the range but not inserted: drawn again, never requested.
        #expect(counts[1_000] == nil && counts.keys.allSatisfy { $0 < 1_000 })
    }

    @Test("latest draws as YCSB's: the newest key number hottest, then back from it, never key 0")
    func latestMatchesYCSB() {
        // YCSB: newest − Zipfian over `newest` items, so 1...newest.
        var g = SkewedLatestGenerator(initialCount: 1_000)
        var random = RandomSource(seed: 3)
        var counts = [Int64: Int]()
        for _ in 0..<100_000 { counts[g.next(&random, latest: 999), default: 0] += 1 }
        let hottest = counts.sorted { $0.value > $1.value }.prefix(3).map(\.key)
        #expect(hottest == [999, 998, 997])
        #expect(counts[0] == nil && counts.keys.allSatisfy { (1...999).contains($0) })
        // The newest draws 1 / ζ(999) of the requests.
        let share = Double(counts[999]!) / 100_000
        let p = 1 / ZipfianGenerator.zeta(0, 999, 0.99, 0)
        #expect(abs(share - p) < 0.005, "newest drew \(share), 1/ζ = \(p)")
        #expect(g.next(&random, latest: 0) == 0)
    }
}
