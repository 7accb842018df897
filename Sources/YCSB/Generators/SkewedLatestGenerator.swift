/// YCSB's `SkewedLatestGenerator` (`requestdistribution=latest`): Zipfian over how far back from
/// the newest acknowledged insert, so the newest records are the hottest.
public struct SkewedLatestGenerator: Sendable {
    var zipfian: ZipfianGenerator

    public init(initialCount: Int64) {
        zipfian = ZipfianGenerator(min: 0, max: Swift.max(initialCount - 1, 0))
    }

    /// A key number in `0...latest`.
    public mutating func next(_ random: inout RandomSource, latest: Int64) -> Int64 {
        let back = zipfian.next(&random, count: latest + 1)
        return latest - back
    }
}
