/// YCSB's `SkewedLatestGenerator` (`requestdistribution=latest`): Zipfian over how far back from
/// the newest acknowledged insert, so the newest records are the hottest.
public struct SkewedLatestGenerator: Sendable {
    var zipfian: ZipfianGenerator

    /// For a key space of `initialCount` records: as YCSB's, made for as many items as the newest
    /// key number (`initialCount - 1`).
    public init(initialCount: Int64) {
        zipfian = ZipfianGenerator(min: 0, max: Swift.max(initialCount - 2, 0))
    }

    /// A key number in `0...latest`, as YCSB's: `latest` minus a draw over `latest` items, so the
    /// newest is the hottest. The draw is below `latest` except where the Zipfian's formula
    /// rounds up to it (η = 0 for a first item count of 2), so key 0 comes up only then, or when
    /// it is the only key.
    public mutating func next(_ random: inout RandomSource, latest: Int64) -> Int64 {
        guard latest > 0 else { return 0 }
        return latest - zipfian.next(&random, count: latest)
    }
}
