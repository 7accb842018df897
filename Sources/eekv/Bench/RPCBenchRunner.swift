import CSystemShims
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
        var measuring = true
    }

    struct Result {
        var measurement: Measurement
        var clientStats: RpcStats
        var serverStats: RpcStats
        var failures: Int
        /// CPU time of the server's dispatch thread during the measured window.
        var serverCPUNs: UInt64
        /// Wall time of the server's loop iterations that had work, in the same window.
        var serverBusyNs: UInt64 = 0
        /// Wall time inside the transport's receive and transmit calls, in the same window.
        var serverTransportNs: UInt64 = 0
    }

    static func measure(
        size: Int, sessions: Int, window: Int, mtu: Int, warmupNs: UInt64, measureNs: UInt64,
        crypto: CryptoMode = .none, tls: TLSConfig? = nil
    ) throws -> Result {
        let config = {
            var c = RpcConfig.plaintext
            c.crypto = crypto
            return c
        }()
        let nexus = try Nexus(backgroundThreads: 0, tls: crypto.encrypts ? tls : nil, aesWorkers: 1)
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
            var serverCPUNs: UInt64 = 0
            var serverBusyNs: UInt64 = 0
            var serverTransportNs: UInt64 = 0
        }
        let box = Box()
        let server = Threads.spawn(name: "rpc-server") {
            do {
                let rpc = try Rpc(
                    nexus: nexus, id: 1, transport: try UDPTransport(mtu: mtu), cpu: BenchCPUs.server,
                    config: config)
                rpc.instrumented = true
                control.serverReady.store(true, ordering: .releasing)
                var transportBusy: UInt64 = 0
                var cpuStart: UInt64 = 0
                var cpuEnd: UInt64 = 0
                var busy: UInt64 = 0
                var inWindow = false
                while !control.stop.load(ordering: .relaxed) {
                    // Check the flags once per 256 iterations: an atomic load per loop is cheap,
                    // but the loop is the thing being measured. Iterations that did work are
                    // timed (two vDSO clock reads), so idle polling can be told apart.
                    for _ in 0..<256 {
                        let t = nowNs()
                        let inTransport = rpc.transportNs
                        if rpc.runOnce() && inWindow {
                            busy &+= nowNs() &- t
                            transportBusy &+= rpc.transportNs &- inTransport
                        }
                    }
                    let window = control.window.load(ordering: .acquiring)
                    if window != 0 && cpuStart == 0 && nowNs() >= UInt64(window >> 1) {
                        cpuStart = ee_thread_cpu_ns()
                        inWindow = true
                    }
                    if cpuStart != 0 && cpuEnd == 0 && control.measuring.load(ordering: .acquiring) == false
                        && window != 0
                    {
                        cpuEnd = ee_thread_cpu_ns()
                        inWindow = false
                    }
                }
                if cpuEnd == 0 { cpuEnd = ee_thread_cpu_ns() }
                box.serverCPUNs = cpuStart == 0 ? 0 : cpuEnd &- cpuStart
                box.serverBusyNs = busy
                box.serverTransportNs = transportBusy
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
                    config: config)
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
                control.measuring.store(true, ordering: .releasing)
                control.window.store(Int(state.measureStart << 1), ordering: .releasing)
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
                while state.inFlight > 0 {
                    rpc.runOnce()
                    if state.measuring && nowNs() >= state.end {
                        state.measuring = false
                        control.measuring.store(false, ordering: .releasing)
                    }
                }
                control.measuring.store(false, ordering: .releasing)
                state.measurement.seconds = Double(state.end &- state.measureStart) / 1e9
                for s in sessionNumbers { try rpc.disconnect(s) }
                for b in buffers { rpc.endpoint.free(b) }
                box.result = Result(
                    measurement: state.measurement, clientStats: rpc.stats, serverStats: RpcStats(),
                    failures: state.failures, serverCPUNs: 0)
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
        result.serverCPUNs = box.serverCPUNs
        result.serverBusyNs = box.serverBusyNs
        result.serverTransportNs = box.serverTransportNs
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
