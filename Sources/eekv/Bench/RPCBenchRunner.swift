import EERPC
import Synchronization

/// Runs the eeRPC side of `bench rpc`: a server Rpc and a client Rpc on separate pinned
/// threads of one process, over UDP loopback, with `sessions × window` echo RPCs in flight.
enum RPCBenchRunner {
    static let echoType: UInt8 = 1

    /// Client state the continuation reaches through the Rpc context (it captures nothing).
    final class ClientState {
        var measurement = Measurement()
        var measureStart: UInt64 = 0
        var end: UInt64 = 0
        var inFlight = 0
        var failures = 0
    }

    struct Result {
        var measurement: Measurement
        var clientStats: RpcStats
        var serverStats: RpcStats
        var failures: Int
    }

    static func measure(
        size: Int, sessions: Int, window: Int, mtu: Int, warmupNs: UInt64, measureNs: UInt64
    ) throws -> Result {
        let nexus = try Nexus(backgroundThreads: 0)
        defer { nexus.shutdown() }
        try nexus.register(type: echoType) { handle in
            let n = handle.request.count
            var response =
                n <= handle.preallocatedResponse.capacity
                ? handle.preallocatedResponse : handle.allocateResponse(size: n)!
            response.assign(handle.request)
            handle.respond(response)
        }
        let control = BenchControl()
        final class Box: @unchecked Sendable {
            var result: Result? = nil
            var error: (any Error)? = nil
            var serverStats = RpcStats()
        }
        let box = Box()
        let server = Threads.spawn(name: "rpc-server") {
            do {
                let rpc = try Rpc(
                    nexus: nexus, id: 1, transport: try UDPTransport(mtu: mtu), cpu: BenchCPUs.server,
                    config: .plaintext)
                control.serverReady.store(true, ordering: .releasing)
                while !control.stop.load(ordering: .relaxed) {
                    // Check the stop flag once per 256 iterations: an atomic load per loop is cheap,
                    // but the loop is the thing being measured.
                    for _ in 0..<256 { rpc.runOnce() }
                }
                // Keep serving briefly so the client's disconnect is answered.
                rpc.run(forNanoseconds: 100_000_000)
                box.serverStats = rpc.stats
            } catch {
                box.error = error
                control.serverReady.store(true, ordering: .releasing)
            }
        }
        _ = control.waitForServer()
        let client = Threads.spawn(name: "rpc-client") {
            do {
                let rpc = try Rpc(
                    nexus: nexus, id: 2, transport: try UDPTransport(mtu: mtu), cpu: BenchCPUs.client,
                    config: .plaintext)
                let state = ClientState()
                rpc.endpoint.context = Unmanaged.passUnretained(state).toOpaque()
                var sessionNumbers: [Int] = []
                for _ in 0..<sessions {
                    sessionNumbers.append(try rpc.connect(host: nexus.host, port: nexus.port, remoteRpcID: 1))
                }
                var buffers: [MsgBuffer] = []
                let start = nowNs()
                state.measureStart = start &+ warmupNs
                state.end = state.measureStart &+ measureNs
                for s in sessionNumbers {
                    for i in 0..<window {
                        let request = rpc.endpoint.allocate(size: size)!
                        request.data.initializeMemory(as: UInt8.self, repeating: UInt8(truncatingIfNeeded: i), count: size)
                        let response = rpc.endpoint.allocate(size: size)!
                        buffers += [request, response]
                        state.inFlight += 1
                        try rpc.endpoint.enqueueRequest(
                            session: s, type: echoType, request: request, response: response, tag: nowNs(),
                            continuation: completed)
                    }
                }
                while state.inFlight > 0 { rpc.runOnce() }
                state.measurement.seconds = Double(state.end &- state.measureStart) / 1e9
                for s in sessionNumbers { try rpc.disconnect(s) }
                for b in buffers { rpc.endpoint.free(b) }
                box.result = Result(
                    measurement: state.measurement, clientStats: rpc.stats, serverStats: RpcStats(),
                    failures: state.failures)
            } catch {
                box.error = error
            }
        }
        client.join()
        control.stop.store(true, ordering: .releasing)
        server.join()
        if let error = box.error { throw error }
        var result = box.result!
        result.serverStats = box.serverStats
        return result
    }

    /// Records the round trip and re-issues the request until the run ends.
    static func completed(_ c: Completion) {
        let state = Unmanaged<ClientState>.fromOpaque(c.context!).takeUnretainedValue()
        let now = nowNs()
        if c.status != .ok { state.failures += 1 }
        if now >= state.measureStart && now < state.end { state.measurement.recorder.record(now &- c.tag) }
        guard now < state.end else {
            state.inFlight -= 1
            return
        }
        var response = c.response
        response.resize(to: response.capacity)
        do {
            try c.rpc.enqueueRequest(
                session: c.session, type: echoType, request: c.request, response: response, tag: now,
                continuation: completed)
        } catch {
            state.failures += 1
            state.inFlight -= 1
        }
    }
}
