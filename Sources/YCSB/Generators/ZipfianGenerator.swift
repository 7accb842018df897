import Glibc

/// YCSB's `ZipfianGenerator`: Gray et al., "Quickly Generating Billion-Record Synthetic
/// Databases" (SIGMOD 1994). Item `min` is the most popular, `min + 1` the next, and so on.
public struct ZipfianGenerator: NumberGenerator, Sendable {
    public static let defaultConstant = 0.99

    public let base: Int64
    /// The item count it was made for (YCSB's `items`); ``next(_:count:)`` draws over others.
    public let items: Int64
    public let theta: Double
    let zeta2theta: Double
    let alpha: Double
    /// ζ over `countForZeta` items (grown as ``next(_:count:)`` asks for more).
    private(set) var zetan: Double
    private(set) var countForZeta: Int64
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
        countForZeta = items
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

    /// A draw over the item count it was made for.
    public func next(_ random: inout RandomSource) -> Int64 { draw(&random, count: items) }

    /// A draw over the first `count` items, as YCSB's `nextLong(itemcount)` (the 'latest'
    /// distribution's item count grows with inserts): ζ is extended incrementally to a larger
    /// count and kept for a smaller one (YCSB's default, `allowitemcountdecrease` false), and η
    /// keeps the first item count, as YCSB's does.
    public mutating func next(_ random: inout RandomSource, count: Int64) -> Int64 {
        if count > countForZeta {
            zetan = Self.zeta(countForZeta, count, theta, zetan)
            countForZeta = count
            eta = (1 - pow(2.0 / Double(items), 1 - theta)) / (1 - zeta2theta / zetan)
        }
        return draw(&random, count: count)
    }

    private func draw(_ random: inout RandomSource, count: Int64) -> Int64 {
        let u = random.nextDouble()
        let uz = u * zetan
        if uz < 1 { return base }
        if uz < 1 + pow(0.5, theta) { return base + 1 }
        return base + Int64(Double(count) * pow(eta * u - eta + 1, alpha))
    }
}
