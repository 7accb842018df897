import EERPC
import Glibc
import Synchronization
import Testing

/// An idle dispatch thread sleeps in `waitForTraffic` for as long as its timeout; whatever other
/// threads leave for it (a new session, a stop request) rings its doorbell instead of waiting
/// for the timeout. The timeouts here are 20 s, so a missing wake-up fails the test.
@Suite("Waking an idle dispatch thread")
struct IdleWakeTests {
    static let longSleepMs: Int32 = 20_000
    static let boundNs: UInt64 = 10_000_000_000

    @Test("wake() ends a sleep in waitForTraffic")
    func wakeEndsSleep() throws {
        let pair = try Pair()
        let endpoint = Unchecked(pair.server.endpoint)
        let waker = Threads.spawn(name: "waker") {
            usleep(50_000)
            endpoint.value.wake()
        }
        defer { waker.join() }
        let start = DispatchTime.nowNs
        pair.server.waitForTraffic(timeoutMs: Self.longSleepMs)
        #expect(DispatchTime.nowNs - start < Self.boundNs)
    }

    @Test("a session opened to a sleeping server wakes it through the session-management thread")
    func sessionSetupWakesServer() throws {
        let pair = try Pair()
        let port = pair.nexus.port
        let serverID = pair.server.id
        let server = Unchecked(pair.server.endpoint)
        let outcome = Outcome()
        // The client runs on a thread (and Nexus) of its own, so that this thread can sleep.
        let client = Threads.spawn(name: "client") {
            do {
                let nexus = try Nexus(backgroundThreads: 0)
                defer { nexus.shutdown() }
                usleep(100_000)  // let the server fall asleep first
                let rpc = try Rpc(nexus: nexus, id: 9, transport: try UDPTransport(), config: .plaintext)
                let start = DispatchTime.nowNs
                _ = try rpc.connect(host: "127.0.0.1", port: port, remoteRpcID: serverID, timeoutNs: 15_000_000_000)
                outcome.connectNs.store(DispatchTime.nowNs - start, ordering: .relaxed)
                outcome.state.store(1, ordering: .releasing)
            } catch {
                outcome.state.store(2, ordering: .releasing)
            }
            server.value.wake()  // end the test loop's last sleep
        }
        defer { client.join() }
        let start = DispatchTime.nowNs
        while outcome.state.load(ordering: .acquiring) == 0 && DispatchTime.nowNs - start < 30_000_000_000 {
            if !pair.server.runOnce() { pair.server.waitForTraffic(timeoutMs: Self.longSleepMs) }
        }
        #expect(outcome.state.load(ordering: .acquiring) == 1)
        // Without the doorbell the request would wait out the server's 20 s sleep.
        #expect(outcome.connectNs.load(ordering: .relaxed) < Self.boundNs)
    }
}

/// How the client thread's connect ended: 0 pending, 1 connected, 2 failed.
final class Outcome: Sendable {
    let state = Atomic<Int>(0)
    let connectNs = Atomic<UInt64>(0)
}

/// Hands a reference to another thread, which touches only its thread-safe parts while the test
/// keeps it alive.
struct Unchecked<T: AnyObject>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
