import CSystemShims
import EERPC
import Glibc
import Testing

/// `ee_copy` takes a backward path on AMD CPUs when the destination is 1–63 bytes past the source
/// modulo 4 KiB (where glibc's `rep movsb` is slow there): every placement must still copy
/// exactly the bytes asked for and nothing around them, on either path.
@Suite("Payload copies")
struct CopyTests {
    @Test("ee_copy copies exactly, at every distance modulo 4 KiB and across the size thresholds")
    func copiesExactly() {
        let sizes = [0, 1, 15, 63, 64, 65, 2_047, 2_048, 2_049, 4_096, 4_100, 9_000, 65_543]
        let room = 65_543 + 2 * 4_096 + 256
        let source = UnsafeMutableRawPointer.allocate(byteCount: room, alignment: 4_096)
        let destination = UnsafeMutableRawPointer.allocate(byteCount: room, alignment: 4_096)
        defer {
            source.deallocate()
            destination.deallocate()
        }
        var rng = SplitMix64(seed: 3)
        for i in 0..<room { source.storeBytes(of: UInt8(truncatingIfNeeded: rng.next()), toByteOffset: i, as: UInt8.self) }
        // Distances 0…130 cover the backward path (1…63) and both sides of it; the source offset
        // varies too, so the 64-byte steps start at every alignment.
        for size in sizes {
            for distance in 0...130 {
                let from = source + 64 + distance % 17
                let to = destination + 64 + (distance + distance % 17) % 4_096
                // ee_copy, and the backward loop it takes on AMD CPUs, whatever this CPU is.
                for backward in [false, true] {
                    destination.initializeMemory(as: UInt8.self, repeating: 0xEE, count: room)
                    if backward { ee_copy_backward(to, from, size) } else { ee_copy(to, from, size) }
                    let copied = memcmp(to, from, size) == 0
                    let before = (destination..<to).allSatisfy { $0.load(as: UInt8.self) == 0xEE }
                    let after = (0..<64).allSatisfy { (to + size + $0).load(as: UInt8.self) == 0xEE }
                    #expect(copied && before && after, "size \(size), destination \(distance) bytes ahead, backward \(backward)")
                }
            }
        }
    }
}
