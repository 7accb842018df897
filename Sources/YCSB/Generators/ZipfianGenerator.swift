import Glibc

/// YCSB's `ZipfianGenerator`: Gray et al., "Quickly Generating Billion-Record Synthetic
/// Databases" (SIGMOD 1994). Item `min` is the most popular, `min + 1` the next, and so on.
public struct ZipfianGenerator: NumberGenerator, Sendable {
    public static let defaultConstant = 0.99

    public let base: Int64
    public private(set) var items: Int64
    public let theta: Double
    let zeta2theta: Double
    let alpha: Double
    private(set) var zetan: Double
    private(set) var eta: Double

    /// Zipfian over `min...max` with constant `theta`.
    public init(min: Int64, max: Int64, theta: Double = defaultConstant) {
        self.init(min: min, max: max, theta: theta, zetan: Self.zeta(0, max - min + 1, theta, 0))
    }

    /// With a precomputed zeta(n) (ScrambledZipfian uses one for its 10^10 items).
    public init(min: Int64, max: Int64, theta: Double, zetan: Double) {
        base = min
        items = max - min + 1
        self.theta = theta
        zeta2theta = Self.zeta(0, 2, theta, 0)
        alpha = 1.0 / (1.0 - theta)
        self.zetan = zetan
        eta = (1 - pow(2.0 / Double(items), 1 - theta)) / (1 - zeta2theta / zetan)
    }

    /// Σ_{i = st+1 ... n} 1 / i^theta, added to `initial` (incremental, as YCSB does).
    static func zeta(_ st: Int64, _ n: Int64, _ theta: Double, _ initial: Double) -> Double {
        var sum = initial
        var i = st
        while i < n {
            sum += 1 / pow(Double(i + 1), theta)
            i += 1
        }
        return sum
    }

    /// A draw over the current item count.
    public func next(_ random: inout RandomSource) -> Int64 {
        let u = random.nextDouble()
        let uz = u * zetan
        if uz < 1 { return base }
        if uz < 1 + pow(0.5, theta) { return base + 1 }
        return base + Int64(Double(items) * pow(eta * u - eta + 1, alpha))
    }

    /// A draw over the first `count` items (the item count grows with inserts; zeta is extended
    /// incrementally; a smaller count than before is recomputed).
    public mutating func next(_ random: inout RandomSource, count: Int64) -> Int64 {
        if count != items {
            zetan = count > items ? Self.zeta(items, count, theta, zetan) : Self.zeta(0, count, theta, 0)
            items = count
            eta = (1 - pow(2.0 / Double(items), 1 - theta)) / (1 - zeta2theta / zetan)
        }
        return next(&random)
    }
}
