/// Picks one of several values with given weights (YCSB's `DiscreteGenerator`, used for the
/// operation mix).
public struct DiscreteGenerator<Value: Sendable>: Sendable {
    public private(set) var choices: [(weight: Double, value: Value)] = []
    private var total = 0.0

    public init() {}

    public mutating func add(_ value: Value, weight: Double) {
        guard weight > 0 else { return }
        choices.append((weight, value))
        total += weight
    }

    public var isEmpty: Bool { choices.isEmpty }

    public func next(_ random: inout RandomSource) -> Value {
        var u = random.nextDouble() * total
        for c in choices {
            if u < c.weight { return c.value }
            u -= c.weight
        }
        return choices[choices.count - 1].value
    }
}
