/// Keys map to 16,384 hash slots as in Redis Cluster: CRC16-XMODEM of the key (or of the part
/// between the first `{` and the next `}`, when that is not empty, so related keys can share a
/// slot), modulo 16,384.
public enum HashSlot {
    public static let count = 16_384

    public static func of(_ key: UnsafeRawBufferPointer) -> Int {
        var bytes = key
        if let open = key.firstIndex(of: UInt8(ascii: "{")),
            let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1
        {
            bytes = UnsafeRawBufferPointer(rebasing: key[(open + 1)..<close])
        }
        return Int(crc16(bytes) & 0x3FFF)
    }

    public static func of(_ key: [UInt8]) -> Int { key.withUnsafeBytes { of($0) } }

    /// CRC16-XMODEM: polynomial 0x1021, initial value 0, no reflection; a byte at a time from
    /// a table (every client request computes one).
    static func crc16(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        var crc: UInt16 = 0
        table.withUnsafeBufferPointer { t in
            for b in bytes { crc = (crc << 8) ^ t[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ b)] }
        }
        return crc
    }

    static let table: [UInt16] = (0..<256).map { i in
        var crc = UInt16(i) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }
}
