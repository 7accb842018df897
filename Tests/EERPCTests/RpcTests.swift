import CSystemShims
import EERPC
import Glibc
import Synchronization
import Testing

struct InFlight {
    var request: MsgBuffer
    var response: MsgBuffer
}

/// Issues `total` echo RPCs of the given sizes over `sessions`, keeping up to `window` in
/// flight per session (beyond 8 they wait in the session backlog), and checks every response.
func runEchoLoad<T: Transport & ~Copyable>(
    _ pair: Pair<T>, sessions: [Int], total: Int, window: Int, sizes: [Int], type: UInt8 = TestRequest.echo,
    timeoutNs: UInt64 = 60_000_000_000
) throws -> Completions {
    let e = pair.client.endpoint
    let results = Completions()
    var inFlight: [UInt64: InFlight] = [:]
    var issued = 0
    func issue(session: Int) throws {
        let id = UInt64(issued)
        let size = max(8, sizes[issued % sizes.count])
        var request = e.allocate(size: size)!
        fill(&request, size: size, seed: id)
        request.data.storeBytes(of: id, as: UInt64.self)
        let response = e.allocate(size: size)!
        inFlight[id] = InFlight(request: request, response: response)
        issued += 1
        try e.enqueueRequest(session: session, type: type, request: request, response: response, tag: id) { c in
            let entry = inFlight.removeValue(forKey: c.tag)!
            if c.status == .ok && sameBytes(c.response, entry.request) { results.ok += 1 } else { results.mismatched += 1 }
            results.done += 1
            c.rpc.free(entry.request)
            c.rpc.free(entry.response)
        }
    }
    // Fill every session's window, then top up as RPCs complete.
    for s in sessions { for _ in 0..<window where issued < total { try issue(session: s) } }
    var next = 0
    let ok = pair.pump(timeoutNs: timeoutNs) {
        while issued < total && issued - results.done < window * sessions.count {
            try? issue(session: sessions[next % sessions.count])
            next += 1
        }
        return results.done == total
    }
    #expect(ok, "only \(results.done) of \(total) RPCs completed")
    return results
}

@Suite("RPC over UDP loopback")
struct RpcTests {
    @Test("a single-packet RPC round-trips", arguments: [0, 1, 32, Wire.dataPerPacket(mtu: Wire.defaultMTU)])
    func singlePacket(size: Int) throws {
        let pair = try Pair()
        let s = try pair.connect()
        let e = pair.client.endpoint
        var request = e.allocate(size: size)!
        fill(&request, size: size, seed: 42)
        let response = e.allocate(size: size)!
        var result: MsgBuffer? = nil
        try e.enqueueRequest(session: s, type: TestRequest.echo, request: request, response: response) { c in
            #expect(c.status == .ok)
            result = c.response
        }
        #expect(pair.pump { result != nil })
        #expect(sameBytes(result!, request))
        #expect(pair.server.stats.requestsHandled == 1)
        #expect(pair.client.stats.retransmissions == 0)
        e.free(request)
        e.free(response)
    }

    @Test(
        "multi-packet requests and responses round-trip, up to 8 MiB",
        arguments: [1441, 2 * 1440, 100_000, 1 << 20, Wire.maxMessageSize])
    func multiPacket(size: Int) throws {
        let pair = try Pair()
        let s = try pair.connect()
        let results = try runEchoLoad(pair, sessions: [s], total: 2, window: 2, sizes: [size])
        #expect(results.ok == 2)
        #expect(pair.server.stats.requestsHandled == 2)
    }

    @Test("multi-packet messages over a 64 KiB loopback MTU")
    func jumboMTU() throws {
        let pair = try Pair(mtu: Wire.maxMTU)
        let s = try pair.connect()
        let results = try runEchoLoad(pair, sessions: [s], total: 8, window: 4, sizes: [70_000, 10, 3 << 20])
        #expect(results.ok == 8)
    }

    @Test("a response larger than a single packet, to a one-packet request")
    func largeResponseSmallRequest() throws {
        let pair = try Pair()
        let s = try pair.connect()
        let e = pair.client.endpoint
        let request = e.allocate(size: 4)!
        request.data.storeBytes(of: UInt32(50_000), as: UInt32.self)
        let response = e.allocate(size: 50_000)!
        var done: Completion? = nil
        try e.enqueueRequest(session: s, type: TestRequest.sized, request: request, response: response) { done = $0 }
        #expect(pair.pump { done != nil })
        #expect(done?.status == .ok)
        #expect(done?.response.size == 50_000)
        let bytes = done!.response.bytes
        #expect((0..<50_000).allSatisfy { bytes[$0] == UInt8(truncatingIfNeeded: $0 &* 7) })
    }

    @Test("a response larger than the response buffer completes with an error, not a crash")
    func responseTooLarge() throws {
        let pair = try Pair()
        let s = try pair.connect()
        let e = pair.client.endpoint
        let request = e.allocate(size: 4)!
        request.data.storeBytes(of: UInt32(5_000), as: UInt32.self)
        let response = e.allocate(size: 100)!
        var done: Completion? = nil
        try e.enqueueRequest(session: s, type: TestRequest.sized, request: request, response: response) { done = $0 }
        #expect(pair.pump { done != nil })
        #expect(done?.status == .responseTooLarge(size: 5_000))
        // Its size is in its first packet: a 2 MB response is not fetched just to be dropped.
        request.data.storeBytes(of: UInt32(2_000_000), as: UInt32.self)
        let received = pair.client.stats.packetsReceived
        done = nil
        try e.enqueueRequest(session: s, type: TestRequest.sized, request: request, response: response) { done = $0 }
        #expect(pair.pump { done != nil })
        #expect(done?.status == .responseTooLarge(size: 2_000_000))
        #expect(pair.client.stats.packetsReceived - received < 10, "fetched \(pair.client.stats.packetsReceived - received) packets")
        // The session still works.
        let results = try runEchoLoad(pair, sessions: [s], total: 10, window: 4, sizes: [32])
        #expect(results.ok == 10)
    }

    @Test("many sessions with many concurrent requests each, backlog beyond 8 slots")
    func manySessions() throws {
        let pair = try Pair()
        var sessions: [Int] = []
        for _ in 0..<32 { sessions.append(try pair.connect()) }
        #expect(pair.server.endpoint.sessionCount(role: .server) == 32)
        let results = try runEchoLoad(pair, sessions: sessions, total: 6_000, window: 20, sizes: [16, 700, 3_000, 32])
        #expect(results.ok == 6_000)
        #expect(pair.server.stats.requestsHandled == 6_000)
    }

    @Test("the backlog holds requests beyond the window and drains in order")
    func backlog() throws {
        let pair = try Pair()
        let s = try pair.connect()
        let e = pair.client.endpoint
        var order: [UInt64] = []
        var buffers: [MsgBuffer] = []
        for i in 0..<40 {
            let request = e.allocate(size: 8)!
            request.data.storeBytes(of: UInt64(i), as: UInt64.self)
            let response = e.allocate(size: 8)!
            buffers += [request, response]
            try e.enqueueRequest(session: s, type: TestRequest.echo, request: request, response: response, tag: UInt64(i)) {
                order.append($0.tag)
            }
        }
        #expect(e.inFlightCount(session: s) == 8)
        #expect(e.backlogCount(session: s) == 32)
        #expect(pair.pump { order.count == 40 })
        #expect(order.sorted() == (0..<40).map(UInt64.init))
        #expect(e.backlogCount(session: s) == 0)
        for b in buffers { e.free(b) }
    }

    @Test("background handlers answer from another thread, at most once each")
    func backgroundHandlers() throws {
        let pair = try Pair(backgroundThreads: 2)
        let s = try pair.connect()
        let results = try runEchoLoad(
            pair, sessions: [s], total: 2_000, window: 16, sizes: [8, 2_000, 40_000], type: TestRequest.backgroundEcho)
        #expect(results.ok == 2_000)
        #expect(pair.server.stats.requestsHandled == 2_000)
    }

    @Test("deferred handlers run on the dispatch thread and answer now or later from another thread")
    func deferredHandlers() throws {
        // No background threads: a deferred handler needs none.
        let pair = try Pair()
        let s = try pair.connect()
        let stop = Atomic<Bool>(false)
        let answered = Atomic<Int>(0)
        let responder = Threads.spawn(name: "deferred-responder") {
            while !stop.load(ordering: .acquiring) {
                if let handle = deferredEchoes.pop() {
                    echo(handle)
                    answered.add(1, ordering: .relaxed)
                } else {
                    usleep(50)
                }
            }
        }
        let results = try runEchoLoad(
            pair, sessions: [s], total: 2_000, window: 16, sizes: [8, 2_000, 40_000], type: TestRequest.deferredEcho)
        stop.store(true, ordering: .releasing)
        responder.join()
        #expect(results.ok == 2_000)
        #expect(answered.load(ordering: .relaxed) == 1_000)
        #expect(pair.server.stats.requestsHandled == 2_000)
        #expect(!pair.server.endpoint.hasBackgroundWork)
    }

    @Test("a session disconnects cleanly and its number is reused")
    func disconnect() throws {
        let pair = try Pair()
        let s = try pair.connect()
        _ = try runEchoLoad(pair, sessions: [s], total: 10, window: 2, sizes: [64])
        try pair.client.endpoint.destroySession(s)
        #expect(pair.pump { pair.client.endpoint.sessionState(s) == .free })
        #expect(pair.pump { pair.server.endpoint.sessionCount(role: .server) == 0 })
        let again = try pair.connect()
        let results = try runEchoLoad(pair, sessions: [again], total: 10, window: 2, sizes: [64])
        #expect(results.ok == 10)
    }

    @Test("a session with RPCs outstanding refuses to disconnect")
    func disconnectBusy() throws {
        let pair = try Pair()
        let s = try pair.connect()
        let e = pair.client.endpoint
        let request = e.allocate(size: 8)!
        let response = e.allocate(size: 8)!
        var done = false
        try e.enqueueRequest(session: s, type: TestRequest.echo, request: request, response: response) { _ in done = true }
        #expect(throws: SessionError.protocolError) { try e.destroySession(s) }
        #expect(pair.pump { done })
    }

    @Test("connecting to an Rpc id that does not exist fails with a clear error")
    func invalidRemoteRpc() throws {
        let pair = try Pair()
        let s = try pair.client.endpoint.createSession(host: "127.0.0.1", port: pair.nexus.port, remoteRpcID: 99)
        #expect(pair.pump { pair.client.endpoint.sessionState(s) != .connecting })
        #expect(pair.client.endpoint.sessionState(s) == .failed)
        #expect(pair.client.endpoint.sessionFailure(s) == .invalidRemoteRpcID)
        try pair.client.endpoint.destroySession(s)
        #expect(pair.client.endpoint.sessionState(s) == .free)
    }

    @Test("endpoints with different MTUs refuse to connect")
    func mtuMismatch() throws {
        let pair = try Pair(server: try UDPTransport(mtu: 1472), client: try UDPTransport(mtu: 9000))
        let s = try pair.client.endpoint.createSession(host: "127.0.0.1", port: pair.nexus.port, remoteRpcID: 1)
        #expect(pair.pump { pair.client.endpoint.sessionState(s) != .connecting })
        #expect(pair.client.endpoint.sessionFailure(s) == .mtuMismatch)
    }

    @Test("connecting to a port with no Nexus fails")
    func noListener() throws {
        let pair = try Pair()
        // A port we just had and closed: nothing listens there.
        let fd = ee_tcp_listen(0x7F00_0001, 0)
        let port = UInt16(ee_socket_port(fd))
        close(fd)
        let s = try pair.client.endpoint.createSession(host: "127.0.0.1", port: port, remoteRpcID: 1)
        #expect(pair.pump { pair.client.endpoint.sessionState(s) != .connecting })
        #expect(pair.client.endpoint.sessionFailure(s) == .connectFailed(errno: ECONNREFUSED))
    }

    @Test("requests on a session that is not connected are refused")
    func notConnected() throws {
        let pair = try Pair()
        let e = pair.client.endpoint
        let b = e.allocate(size: 8)!
        #expect(throws: RequestError.invalidSession) {
            try e.enqueueRequest(session: 5, type: TestRequest.echo, request: b, response: b) { _ in }
        }
        let s = try e.createSession(host: "127.0.0.1", port: pair.nexus.port, remoteRpcID: 1)
        #expect(throws: RequestError.sessionNotConnected) {
            try e.enqueueRequest(session: s, type: TestRequest.echo, request: b, response: b) { _ in }
        }
        pair.pump { e.sessionState(s) == .connected }
    }

    @Test("handlers can only be registered before the first Rpc exists")
    func frozenHandlers() throws {
        let pair = try Pair()
        #expect(throws: NexusError.handlersFrozen) { try pair.nexus.register(type: 77) { _ in } }
        #expect(throws: NexusError.duplicateRpcID(1)) {
            _ = try Rpc(nexus: pair.nexus, id: 1, transport: try UDPTransport(), config: .plaintext)
        }
    }
}

@Suite("Connect timeouts")
struct ConnectTimeoutTests {
    /// `Rpc.connect` used to give up on a session still connecting and leave it: when the
    /// server's answer came later the session came up, unused, and kept its number (and the
    /// server's) for good.
    @Test("a connect that timed out frees its session on both ends when the answer comes late")
    func abandonedConnectIsReleased() throws {
        let nexus = try Nexus()
        try registerTestHandlers(nexus)
        defer { nexus.shutdown() }
        let server = try Rpc(nexus: nexus, id: 1, transport: try UDPTransport(), config: .plaintext)
        let client = try Rpc(nexus: nexus, id: 2, transport: try UDPTransport(), config: .plaintext)
        // The server's event loop, which answers session requests, does not run yet.
        #expect(throws: SessionError.timedOut) {
            try client.connect(host: "127.0.0.1", port: nexus.port, remoteRpcID: 1, timeoutNs: 50_000_000)
        }
        #expect(client.endpoint.sessionsInUse == 1)
        let deadline = ee_now_ns() + 5_000_000_000
        var sawServerSession = false
        while ee_now_ns() < deadline {
            server.runOnce()
            client.runOnce()
            sawServerSession = sawServerSession || server.endpoint.sessionsInUse > 0
            if sawServerSession && client.endpoint.sessionsInUse == 0 && server.endpoint.sessionsInUse == 0 { break }
        }
        #expect(sawServerSession, "the server never answered")
        #expect(client.endpoint.sessionsInUse == 0)
        #expect(server.endpoint.sessionsInUse == 0)
    }
}
