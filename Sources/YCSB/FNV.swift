/// YCSB's `Utils.fnvhash64`: FNV-1a over the 8 little-endian bytes of a 64-bit value, then the
/// absolute value as a Java `long` (so key names match Java YCSB's for the same key number).
public func fnvhash64(_ value: Int64) -> Int64 {
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    var v = UInt64(bitPattern: value)
    for _ in 0..<8 {
        h ^= v & 0xFF
        h = h &* 1_099_511_628_211
        v >>= 8
    }
    let signed = Int64(bitPattern: h)
    // Math.abs(Long.MIN_VALUE) is Long.MIN_VALUE in Java; keep that quirk.
    return signed == Int64.min ? signed : abs(signed)
}

/// YCSB's `CoreWorkload.buildKeyName`: "user" + the key number (hashed with FNV when inserts are
/// hashed, as by default), left-padded with zeros to `zeroPadding` digits.
public func ycsbKey(_ keyNumber: Int64, hashed: Bool = true, zeroPadding: Int = 1) -> String {
    let n = hashed ? fnvhash64(keyNumber) : keyNumber
    let digits = String(n)
    let padding = max(0, zeroPadding - digits.count)
    return "user" + String(repeating: "0", count: padding) + digits
}
