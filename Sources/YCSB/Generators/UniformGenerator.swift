/// Uniform over `lower...upper` (YCSB's `UniformLongGenerator`).
public struct UniformGenerator: NumberGenerator, Sendable {
    public let lower: Int64
    public let upper: Int64
    public init(_ lower: Int64, _ upper: Int64) {
        precondition(lower <= upper)
        self.lower = lower
        self.upper = upper
    }
    public func next(_ random: inout RandomSource) -> Int64 {
        lower + Int64(random.nextDouble() * Double(upper - lower + 1))
    }
}
