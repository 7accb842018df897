/// YCSB's `ScrambledZipfianGenerator`, what `requestdistribution=zipfian` uses: a Zipfian rank
/// over 10^10 items (with YCSB's precomputed zeta for theta 0.99), hashed with FNV and folded
/// onto `min...max`, so the popular keys are spread over the key space.
public struct ScrambledZipfianGenerator: NumberGenerator, Sendable {
    static let itemCount: Int64 = 10_000_000_000
    static let zetan = 26.46902820178302

    public let min: Int64
    public let count: Int64
    let inner: ZipfianGenerator

    public init(min: Int64, max: Int64) {
        self.min = min
        count = max - min + 1
        // As YCSB's: ranks 0...itemCount (one more than itemCount, with its ζ of itemCount).
        inner = ZipfianGenerator(min: 0, max: Self.itemCount, theta: ZipfianGenerator.defaultConstant, zetan: Self.zetan)
    }

    public func next(_ random: inout RandomSource) -> Int64 {
        let rank = inner.next(&random)
        return min + fnvhash64(rank) % count
    }
}
