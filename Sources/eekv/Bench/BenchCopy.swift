import ArgumentParser
import CSystemShims
import EERPC

struct BenchCopy: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "copy",
        abstract: "Payload copies: glibc's memcpy against ee_copy, by where the destination lies.",
        discussion: """
            Copies one message-sized block again and again, on a pinned thread, with the destination \
            placed 0, 16, 32 and 64 bytes past the source modulo 4 KiB. glibc 2.36 copies 2 KiB and \
            more with `rep movsb`, which on AMD Zen 3 slows down many times when the destination is \
            1–63 bytes past the source; ee_copy copies backward there. Each pair runs back to back.
            """
    )

    @Option(help: "Comma-separated copy sizes in bytes.")
    var size = "1440,4096,65536"

    @Option(help: "Copies per size, distance and routine.")
    var copies = 20_000

    func run() throws {
        let sizes = try parseSizes(size)
        final class Results: @unchecked Sendable {  // written by the pinned thread, read after join
            var rows: [(size: Int, distance: Int, memcpy: Double, eeCopy: Double)] = []
        }
        let results = Results()
        let n = copies
        Threads.spawn(name: "bench-copy") {
            Threads.pinCurrentThread(to: BenchCPUs.server)
            // Two page-aligned blocks owned by this thread for the whole measurement.
            let room = (sizes.max()! + 8_192 + 4_095) & ~4_095
            let source = UnsafeMutableRawPointer.allocate(byteCount: room, alignment: 4_096)
            let destination = UnsafeMutableRawPointer.allocate(byteCount: room, alignment: 4_096)
            defer {
                source.deallocate()
                destination.deallocate()
            }
            source.initializeMemory(as: UInt8.self, repeating: 1, count: room)
            destination.initializeMemory(as: UInt8.self, repeating: 2, count: room)
            func time(_ body: () -> Void) -> Double {
                let start = ee_now_ns()
                for _ in 0..<n { body() }
                return Double(ee_now_ns() - start) / Double(n)
            }
            for s in sizes {
                for distance in [0, 16, 32, 64] {
                    let from = UnsafeRawPointer(source + 4_096), to = destination + 4_096 + distance
                    let libc = time { ee_libc_copy(to, from, s) }
                    let ours = time { ee_copy(to, from, s) }
                    results.rows.append((s, distance, libc, ours))
                }
            }
        }.join()
        print("eeRPC bench copy — ns per copy, destination this many bytes past the source modulo 4 KiB")
        print("")
        print(pad("size B", 10) + pad("distance", 10) + pad("memcpy ns", 12) + pad("ee_copy ns", 12) + "memcpy / ee_copy")
        for r in results.rows {
            print(pad("\(r.size)", 10) + pad("\(r.distance)", 10) + pad(fixed(r.memcpy, 0), 12) + pad(fixed(r.eeCopy, 0), 12)
                + fixed(r.eeCopy > 0 ? r.memcpy / r.eeCopy : 0, 2))
        }
    }
}
