import EEKV
import EERPC
import Glibc
import Synchronization
import Testing

/// A client waiting for a slow reply stops polling after its spin window and sleeps until the
/// reply's packet comes, so that a node sharing its core can run.
@Suite("Client idle sleep", .serialized)
struct ClientIdleTests {
    /// A stand-in node: a deferred handler for eekv's reads that answers "not found" 200 ms
    /// after each request, from a thread of its own; the dispatch loop runs on another.
    final class SlowNode: @unchecked Sendable {
        let node: StandInNode
        let held = BoundedQueue<RequestHandle>(capacity: 64)
        static let delayUs: UInt32 = 200_000

        init() throws {
            node = try StandInNode { [held] nexus in
                try nexus.register(type: KVProtocol.readType, mode: .deferred) { handle in
                    while !held.push(handle) { sched_yield() }
                }
            }
            node.spawn(name: "slow-answers") { [held] in
                guard let handle = held.pop() else {
                    usleep(1_000)
                    return
                }
                usleep(Self.delayUs)
                var response = handle.preallocatedResponse
                response.data.storeBytes(of: KVStatus.notFound.rawValue, as: UInt8.self)
                response.resize(to: 1)
                handle.respond(response)
            }
        }

        func shutdown() { node.shutdown() }
        var config: ClusterConfig { get throws { try node.config } }
    }

    static func threadCPUNs() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    @Test("a get waiting 200 ms for its reply sleeps through most of it")
    func slowReplySleeps() throws {
        let node = try SlowNode()
        defer { node.shutdown() }
        let client = try KVClient(config: try node.config, tls: nil, idleSpinMicroseconds: 50)
        _ = try client.get(Array("warm-up".utf8))  // connects
        let cpuBefore = Self.threadCPUNs()
        var wall: UInt64 = 0
        for i in 0..<3 {
            let start = DispatchTime.nowNs
            #expect(try client.get(Array("key-\(i)".utf8)) == nil)
            wall += DispatchTime.nowNs - start
        }
        let cpu = Self.threadCPUNs() - cpuBefore
        #expect(wall >= 3 * UInt64(SlowNode.delayUs) * 1_000)
        // Polling through the wait would cost about as much CPU as wall time (600 ms).
        #expect(cpu < wall / 5, "the client used \(cpu / 1_000_000) ms of CPU in \(wall / 1_000_000) ms")
    }
}

/// Hands a reference to another thread, which the test keeps alive until that thread is joined.
struct Unchecked<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

enum DispatchTime {
    static var nowNs: UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}
