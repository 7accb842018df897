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

extension IdleWakeTests {
    /// A deferred (or background) handler's request may wait long for its answer (a write waiting
    /// for fsync): the dispatch thread sleeps meanwhile instead of polling, and the thread that
    /// answers rings its doorbell.
    @Test("a late answer from another thread wakes a server that sleeps on its deferred request")
    func deferredResponseWakesServer() throws {
        let nexus = try Nexus(backgroundThreads: 0)
        defer { nexus.shutdown() }
        let held = BoundedQueue<RequestHandle>(capacity: 8)
        try nexus.register(type: 7, mode: .deferred) { handle in
            while !held.push(handle) { sched_yield() }
        }
        let server = try Rpc(nexus: nexus, id: 1, transport: try UDPTransport(), config: .plaintext)
        let port = nexus.port
        let endpoint = Unchecked(server.endpoint)
        let requests = 3
        let outcome = Outcome()
        let responder = Threads.spawn(name: "late-responder") {
            var answered = 0
            // Until every request is answered, or the client has given up.
            while answered < requests && outcome.state.load(ordering: .acquiring) == 0 {
                guard let handle = held.pop() else {
                    usleep(1_000)
                    continue
                }
                usleep(200_000)  // long enough for the server to fall asleep
                echo(handle)
                answered += 1
            }
        }
        defer { responder.join() }
        let client = Threads.spawn(name: "client") {
            defer { endpoint.value.wake() }  // end the test loop's last sleep
            do {
                let nexus = try Nexus(backgroundThreads: 0)
                defer { nexus.shutdown() }
                // No retransmission within the test: its packets would wake the server too.
                var config = RpcConfig.plaintext
                config.retransmitTimeoutNs = 30_000_000_000
                let rpc = try Rpc(nexus: nexus, id: 9, transport: try UDPTransport(), config: config)
                let s = try rpc.connect(host: "127.0.0.1", port: port, remoteRpcID: 1, timeoutNs: 15_000_000_000)
                var slowest: UInt64 = 0
                for i in 0..<requests {
                    let e = rpc.endpoint
                    var request = e.allocate(size: 8)!
                    request.data.storeBytes(of: UInt64(i), as: UInt64.self)
                    request.resize(to: 8)
                    let response = e.allocate(size: 64)!
                    var echoed: UInt64? = nil
                    let start = DispatchTime.nowNs
                    try e.enqueueRequest(session: s, type: 7, request: request, response: response) { c in
                        if c.status == .ok { echoed = c.response.data.load(as: UInt64.self) }
                    }
                    rpc.run(until: { echoed != nil }, timeoutNs: 15_000_000_000)
                    slowest = max(slowest, DispatchTime.nowNs - start)
                    e.free(request)
                    e.free(response)
                    guard echoed == UInt64(i) else { throw SessionError.timedOut }
                }
                outcome.connectNs.store(slowest, ordering: .relaxed)
                outcome.state.store(1, ordering: .releasing)
            } catch {
                outcome.state.store(2, ordering: .releasing)
            }
        }
        defer { client.join() }
        var iterations = 0
        let start = DispatchTime.nowNs
        while outcome.state.load(ordering: .acquiring) == 0 && DispatchTime.nowNs - start < 30_000_000_000 {
            iterations += 1
            if !server.runOnce() { server.waitForTraffic(timeoutMs: Self.longSleepMs) }
        }
        #expect(outcome.state.load(ordering: .acquiring) == 1)
        // Each answer comes 200 ms after its request; without the doorbell it would wait out the
        // server's 20 s sleep (and the client gives up after 15 s).
        #expect(outcome.connectNs.load(ordering: .relaxed) < Self.boundNs)
        // A server polling through the 3 × 200 ms waits looped 15,000 times; one that sleeps, a
        // few dozen.
        #expect(iterations < 3_000, "\(iterations) iterations: the server polled instead of sleeping")
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
