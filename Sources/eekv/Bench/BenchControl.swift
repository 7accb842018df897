import ArgumentParser
import CSystemShims
import Glibc
import EERPC
import Synchronization

/// Start/stop signalling between the bench's main thread and its pinned worker threads.
final class BenchControl: Sendable {
    let serverReady = Atomic<Bool>(false)
    let stop = Atomic<Bool>(false)
    let serverPort = Atomic<Int>(0)
    /// The measured window's start time << 1 (0 until the client sets it), so the server can
    /// read its own CPU clock over the same window.
    let window = Atomic<Int>(0)
    /// True while the client is inside the measured window.
    let measuring = Atomic<Bool>(false)

    /// Spins (with a short sleep) until the server thread has bound its socket.
    func waitForServer() -> Int {
        while !serverReady.load(ordering: .acquiring) { usleep(100) }
        return serverPort.load(ordering: .acquiring)
    }
}

/// Where the bench pins its threads: client and server on different cores when there are two.
enum BenchCPUs {
    static var client: Int { Threads.allowedCPU(0) }
    static var server: Int { Threads.allowedCPU(Threads.cpuCount > 1 ? 1 : 0) }
}

/// Parses a `--size` list ("64,1024,8192") of message sizes in `minimum`…1 MiB.
func parseSizes(_ text: String, minimum: Int = 1) throws -> [Int] {
    let sizes = text.split(separator: ",").compactMap { Int($0.filter { $0 != " " }) }
    guard !sizes.isEmpty, sizes.allSatisfy({ $0 >= minimum && $0 <= 1 << 20 }) else {
        throw ValidationError("--size takes comma-separated sizes in \(minimum)…1048576")
    }
    return sizes
}

/// Monotonic nanoseconds.
@inline(__always)
func nowNs() -> UInt64 { ee_now_ns() }
