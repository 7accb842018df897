/// `x` with `digits` decimals ("12.50"), without Foundation's formatter; "0" if not finite.
public func decimalText(_ x: Double, _ digits: Int) -> String {
    guard x.isFinite else { return "0" }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let r = (x * scale).rounded() / scale
    if digits == 0 { return String(Int64(r)) }
    var s = String(r)
    if let dot = s.firstIndex(of: ".") {
        let decimals = s.distance(from: dot, to: s.endIndex) - 1
        if decimals < digits { s += String(repeating: "0", count: digits - decimals) }
    } else {
        s += "." + String(repeating: "0", count: digits)
    }
    return s
}
