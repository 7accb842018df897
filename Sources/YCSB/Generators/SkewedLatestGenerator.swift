/// YCSB's `SkewedLatestGenerator` (`requestdistribution=latest`): Zipfian over how far back from
/// the newest acknowledged insert, so the newest records are the hottest.
public struct SkewedLatestGenerator: Sendable {
    var zipfian: ZipfianGenerator

    /// For a key space of `initialCount` records: as YCSB's, made for as many items as the newest
    /// key number (`initialCount - 1`).
    public init(initialCount: Int64) {
        zipfian = ZipfianGenerator(min: 0, max: Swift.max(initialCount - 2, 0))
    }

    /// A key number in `1...latest` (0 when that is the only one): as YCSB's, `latest` minus a
    /// draw over `latest` items, so the newest is the hottest and key number 0 is never drawn
    /// once there are others.
    public mutating func next(_ random: inout RandomSource, latest: Int64) -> Int64 {
        guard latest > 0 else { return 0 }
        return latest - zipfian.next(&random, count: latest)
    }
}
