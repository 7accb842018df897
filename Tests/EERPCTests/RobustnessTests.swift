@testable import EERPC
import Testing

/// Echoes `bytes` once with the counting handler and returns the status and response bytes.
func echoOnce<T: Transport & ~Copyable>(_ pair: Pair<T>, session s: Int, bytes: [UInt8], timeoutNs: UInt64 = 5_000_000_000)
    throws -> (RpcStatus, [UInt8])?
{
    let e = pair.client.endpoint
    var request = e.allocate(size: bytes.count)!
    bytes.withUnsafeBytes { request.assign($0) }
    let response = e.allocate(size: max(bytes.count, 1))!
    var result: (RpcStatus, [UInt8])? = nil
    try e.enqueueRequest(session: s, type: TestRequest.countingEcho, request: request, response: response) { c in
        result = (c.status, Array(UnsafeRawBufferPointer(start: c.response.data, count: c.response.size)))
    }
    pair.pump(timeoutNs: timeoutNs) { result != nil }
    e.free(request)
    e.free(response)
    return result
}

@Suite("Robustness: stale packets, abandoned requests, dead peers")
struct RobustnessTests {
    /// A client that gives up on a silent server within about 30 ms (30 retransmissions 1 ms apart).
    static let quickToGiveUp: RpcConfig = {
        var config = RpcConfig.plaintext
        config.retransmitTimeoutNs = 1_000_000
        config.maxRetransmissionsWithoutProgress = 30
        return config
    }()

    /// A late copy of a request from an earlier session that had the same session number must
    /// not run again, nor be mistaken for the new session's request with the same slot.
    @Test("a request captured from a previous session is not executed by its successor")
    func staleRequestAcrossReconnect() throws {
        let pair = try Pair(server: TapTransport(try UDPTransport()), client: TapTransport(try UDPTransport()))
        let s1 = try pair.connect()
        let a: [UInt8] = [0x41, 0, 0, 0, 0, 0, 0, 0]
        #expect(try echoOnce(pair, session: s1, bytes: a)?.1 == a)
        let capturedA = try #require(pair.client.transport.captured.last { header(of: $0)?.type == .request })
        try pair.client.endpoint.destroySession(s1)
        pair.pump { pair.client.endpoint.sessionState(s1) == .free && pair.server.endpoint.sessionCount(role: .server) == 0 }
        let s2 = try pair.connect()
        #expect(s2 == s1)
        RawSender(port: pair.server.transport.base.port).send(capturedA)
        pair.pump(timeoutNs: 300_000_000) { false }
        let b: [UInt8] = [0x42, 0, 0, 0, 0, 0, 0, 0]
        let r = try echoOnce(pair, session: s2, bytes: b)
        #expect(r?.0 == .ok)
        #expect(r?.1 == b)
        #expect(pair.counter.counts[0x41] == 1)
        #expect(pair.counter.counts[0x42] == 1)
        #expect(pair.server.stats.drops(.outOfOrder) >= 1)
    }

    @Test("a request number far ahead of the slot is dropped and does not wedge it")
    func farFutureRequestNumber() throws {
        var config = RpcConfig.plaintext
        config.retransmitTimeoutNs = 1_000_000
        let pair = try Pair(server: TapTransport(try UDPTransport()), client: TapTransport(try UDPTransport()), config: config)
        let s = try pair.connect()
        #expect(try echoOnce(pair, session: s, bytes: [1, 0, 0, 0, 0, 0, 0, 0])?.0 == .ok)
        let real = try #require(pair.client.transport.captured.last.flatMap { header(of: $0) })
        var forged = real
        forged.requestNumber = real.requestNumber + 8 * 50
        RawSender(port: pair.server.transport.base.port).send(forged, payload: 8)
        pair.pump(timeoutNs: 100_000_000) { false }
        for i in 0..<16 {
            #expect(try echoOnce(pair, session: s, bytes: [UInt8(i + 2), 0, 0, 0, 0, 0, 0, 0])?.0 == .ok)
        }
        #expect(pair.server.stats.requestsHandled == 17)
    }

    /// A fresh slot's request number is its base, which no client sends: a packet claiming it
    /// (an empty request of type 0) once reached a nil assembly and a missing handler.
    @Test("a request for a slot's never-used base number is dropped, and the server keeps serving")
    func unusedSlotBaseNumber() throws {
        let pair = try Pair(server: TapTransport(try UDPTransport()), client: TapTransport(try UDPTransport()))
        let s = try pair.connect()
        #expect(try echoOnce(pair, session: s, bytes: [1, 0, 0, 0, 0, 0, 0, 0])?.0 == .ok)
        // The first request on slot 0 is base + 8; slots 1-7 still stand at base + 1 ... base + 7.
        let real = try #require(pair.client.transport.captured.last { header(of: $0)?.type == .request }.flatMap { header(of: $0) })
        let before = pair.server.stats.drops(.outOfOrder)
        for slot in 1..<UInt64(8) {
            var forged = real
            forged.requestNumber = real.requestNumber - 8 + slot
            forged.messageSize = 0
            forged.requestType = 0
            forged.packetNumber = 0
            RawSender(port: pair.server.transport.base.port).send(forged, payload: 0)
        }
        pair.pump(timeoutNs: 100_000_000) { false }
        #expect(pair.server.stats.drops(.outOfOrder) - before == 7)
        for i in 0..<8 { #expect(try echoOnce(pair, session: s, bytes: [UInt8(i + 2), 0, 0, 0, 0, 0, 0, 0])?.0 == .ok) }
        #expect(pair.server.stats.requestsHandled == 9)
    }

    /// Each datagram opens an 8 MiB request and abandons the previous one: the abandoned buffers
    /// must go back to the pool, or a few kilobytes of traffic would map gigabytes.
    @Test("abandoned multi-packet requests do not leak their buffers")
    func abandonedAssemblies() throws {
        let pair = try Pair(server: TapTransport(try UDPTransport()), client: TapTransport(try UDPTransport()))
        let s = try pair.connect()
        #expect(try echoOnce(pair, session: s, bytes: [1, 0, 0, 0, 0, 0, 0, 0])?.0 == .ok)
        let real = try #require(pair.client.transport.captured.last.flatMap { header(of: $0) })
        let attacker = RawSender(port: pair.server.transport.base.port)
        let before = pair.server.endpoint.pooledBytes
        let dpp = Wire.dataPerPacket(mtu: Wire.defaultMTU)
        for i in 1...40 {
            var h = real
            h.requestNumber = real.requestNumber + UInt64(8 * i)
            h.messageSize = UInt32(Wire.maxMessageSize)
            attacker.send(h, payload: dpp)
            pair.pump(timeoutNs: 20_000_000) { false }
        }
        let grown = pair.server.endpoint.pooledBytes - before
        #expect(grown <= 2 * (Wire.maxMessageSize + 4 << 20), "pool grew by \(grown >> 20) MiB")
    }

    @Test("a client that gave up on a slow connect leaves no session behind at the server")
    func halfOpenSession() throws {
        var config = RpcConfig.plaintext
        config.sessionManagementTimeoutMs = 200
        let pair = try Pair(config: config)
        let e = pair.client.endpoint
        let s = try e.createSession(host: "127.0.0.1", port: pair.nexus.port, remoteRpcID: 1)
        // The server's loop does not run while the client waits (a long handler, say).
        let start = DispatchTime.nowNs
        while e.sessionState(s) == .connecting && DispatchTime.nowNs - start < 5_000_000_000 { pair.client.runOnce() }
        #expect(e.sessionFailure(s) == .timedOut)
        try e.destroySession(s)
        pair.pump(timeoutNs: 3_000_000_000) { pair.server.endpoint.sessionCount(role: .server) == 0 }
        #expect(pair.server.endpoint.sessionCount(role: .server) == 0)
    }

    @Test("a request type without a handler is refused, not retried forever", arguments: [8, 5_000])
    func unknownRequestType(size: Int) throws {
        let pair = try Pair()
        let s = try pair.connect()
        let e = pair.client.endpoint
        let request = e.allocate(size: size)!
        let response = e.allocate(size: 8)!
        var status: RpcStatus? = nil
        try e.enqueueRequest(session: s, type: 250, request: request, response: response) { status = $0.status }
        #expect(pair.pump { status != nil })
        #expect(status == .rejected)
        #expect(pair.server.stats.drops(.noHandler) >= 1)
        #expect(try echoOnce(pair, session: s, bytes: [9, 0, 0, 0, 0, 0, 0, 0])?.0 == .ok)
    }

    /// A rejection's nonce leaves out the request type (it is in the header, the AAD): a copy of
    /// the rejected request with another type must not get a rejection sealed again under that
    /// nonce with a different header.
    @Test("a copy of a rejected request is answered again only if it matches the request")
    func rejectionCopiesMustMatch() throws {
        let pair = try Pair(server: TapTransport(try UDPTransport()), client: TapTransport(try UDPTransport()))
        let s = try pair.connect()
        let e = pair.client.endpoint
        let request = e.allocate(size: 8)!
        let response = e.allocate(size: 8)!
        var status: RpcStatus? = nil
        try e.enqueueRequest(session: s, type: 250, request: request, response: response) { status = $0.status }
        #expect(pair.pump { status != nil })
        #expect(status == .rejected)
        let sent = try #require(pair.client.transport.captured.last { header(of: $0)?.type == .request })
        func rejections() -> Int { pair.server.transport.captured.filter { header(of: $0)?.rejected == true }.count }
        let before = rejections()
        let server = RawSender(port: pair.server.transport.base.port)
        server.send(sent)  // an exact copy: answered again
        pair.pump(timeoutNs: 100_000_000) { false }
        #expect(rejections() == before + 1)
        var retyped = try #require(header(of: sent))
        retyped.requestType = 251
        server.send(retyped, payload: 8)  // the same request number and size, another type: dropped
        pair.pump(timeoutNs: 100_000_000) { false }
        #expect(rejections() == before + 1)
        e.free(request)
        e.free(response)
    }

    @Test("when the server goes silent, the client session fails and its RPCs complete with an error")
    func deadServer() throws {
        let pair = try Pair(config: Self.quickToGiveUp)
        let s = try pair.connect()
        let e = pair.client.endpoint
        var statuses: [RpcStatus] = []
        var buffers: [MsgBuffer] = []
        for _ in 0..<12 {  // 8 in flight, 4 in the backlog
            let request = e.allocate(size: 64)!
            let response = e.allocate(size: 64)!
            buffers += [request, response]
            try e.enqueueRequest(session: s, type: TestRequest.echo, request: request, response: response) {
                statuses.append($0.status)
            }
        }
        // Only the client runs: the server is "dead".
        let start = DispatchTime.nowNs
        while statuses.count < 12 && DispatchTime.nowNs - start < 5_000_000_000 { pair.client.runOnce() }
        #expect(statuses.count == 12)
        #expect(statuses.allSatisfy { $0 == .sessionFailed })
        #expect(e.sessionState(s) == .failed)
        #expect(e.sessionFailure(s) == .timedOut)
        try e.destroySession(s)
        #expect(e.sessionState(s) == .free)
        for b in buffers { e.free(b) }
    }

    /// A continuation may destroy its failed session; that used to happen before the server was
    /// told, which then found no address to tell and kept the session.
    @Test("a session destroyed by its failing RPCs' continuation is still disconnected at the server")
    func destroyedInContinuation() throws {
        let pair = try Pair(config: Self.quickToGiveUp)
        let s = try pair.connect()
        #expect(pair.server.endpoint.sessionCount(role: .server) == 1)
        let e = pair.client.endpoint
        let request = e.allocate(size: 64)!
        let response = e.allocate(size: 64)!
        var status: RpcStatus?
        var events = 0
        e.sessionEventHandler = { if case .connectFailed = $0 { events += 1 } }
        try e.enqueueRequest(session: s, type: TestRequest.echo, request: request, response: response) { c in
            status = c.status
            try? c.rpc.destroySession(c.session)
        }
        // Only the client runs until its session fails: the server is "dead".
        let start = DispatchTime.nowNs
        while status == nil && DispatchTime.nowNs - start < 5_000_000_000 { pair.client.runOnce() }
        #expect(status == .sessionFailed)
        #expect(e.sessionState(s) == .free)
        #expect(events == 0, "a connectFailed event for a session the application had destroyed")
        // The server comes back and hears of the disconnect.
        pair.pump(timeoutNs: 3_000_000_000) { pair.server.endpoint.sessionCount(role: .server) == 0 }
        #expect(pair.server.endpoint.sessionCount(role: .server) == 0)
        e.free(request)
        e.free(response)
    }

    @Test("a background handler needs background threads")
    func backgroundWithoutThreads() throws {
        let nexus = try Nexus(backgroundThreads: 0)
        defer { nexus.shutdown() }
        #expect(throws: NexusError.noBackgroundThreads) { try nexus.register(type: 1, mode: .background) { _ in } }
    }

    /// Clients that die never disconnect. When the table is full, a new client gets the number of
    /// the server session silent the longest, once it has been silent for the configured time;
    /// never one that is still talking, and never before that time.
    @Test("a full session table takes back the longest-silent server session, only after the idle time")
    func reclaimIdleSessions() throws {
        var config = RpcConfig.plaintext
        config.maxSessions = 2
        config.reclaimIdleSessionsAfterNs = 300_000_000
        config.maxRetransmissionsWithoutProgress = 40  // 200 ms: the silent client learns quickly
        let pair = try Pair(config: config)
        let silent = try pair.connect()
        let talking = try pair.connect()
        // Another client process, as far as the server can tell.
        let other = try Rpc(nexus: pair.nexus, id: 3, transport: try UDPTransport(), config: .plaintext)
        func connectOther() throws -> Int {
            let s = try other.endpoint.createSession(host: "127.0.0.1", port: pair.nexus.port, remoteRpcID: pair.server.id)
            let start = DispatchTime.nowNs
            while other.endpoint.sessionState(s) == .connecting && DispatchTime.nowNs - start < 5_000_000_000 {
                other.runOnce()
                pair.server.runOnce()
                pair.client.runOnce()
            }
            return s
        }
        // Full, and nobody silent for long enough: refused.
        let refused = try connectOther()
        #expect(other.endpoint.sessionState(refused) == .failed)
        try other.endpoint.destroySession(refused)
        #expect(pair.server.stats.sessionsReclaimed == 0)
        // One session keeps talking for 0.5 s while the other stays silent.
        let start = DispatchTime.nowNs
        while DispatchTime.nowNs - start < 500_000_000 {
            #expect(try echoOnce(pair, session: talking, bytes: Array(repeating: 1, count: 16))?.0 == .ok)
        }
        let admitted = try connectOther()
        #expect(other.endpoint.sessionState(admitted) == .connected)
        #expect(pair.server.stats.sessionsReclaimed == 1)
        // The talking session was not the one taken; the silent one's next RPC fails instead of
        // reaching the new owner of its number.
        #expect(try echoOnce(pair, session: talking, bytes: Array(repeating: 2, count: 16))?.0 == .ok)
        let handled = pair.server.stats.requestsHandled
        #expect(try echoOnce(pair, session: silent, bytes: Array(repeating: 3, count: 16))?.0 == .sessionFailed)
        #expect(pair.server.stats.requestsHandled == handled)
    }
}

/// Serialized: its tests share `heldHandles`.
@Suite("Late answers", .serialized)
struct LateAnswerTests {
    /// A foreground handler may keep its handle and answer later on the dispatch thread. If the
    /// client gave up meanwhile (its session failed and it told the server), the session's keys
    /// are gone: sealing the reply at once used to trap on them.
    @Test("an encrypted reply after the session is gone is dropped as stale, not sealed")
    func replyAfterSessionEnds() throws {
        let credentials = try TestCredentials()
        var config = RpcConfig.encrypted()
        config.maxRetransmissionsWithoutProgress = 3
        config.maxHandlerWaitNs = 20_000_000
        let pair = try Pair(config: config, tls: credentials.config("node-0"))
        let s = try pair.connect()
        var request = try #require(pair.client.endpoint.allocate(size: 64))
        fill(&request, size: 64, seed: 1)
        let response = try #require(pair.client.endpoint.allocate(size: 4_096))
        try pair.client.endpoint.enqueueRequest(session: s, type: TestRequest.held, request: request, response: response) {
            _ in
        }
        var handle: RequestHandle? = nil
        #expect(pair.pump(timeoutNs: 5_000_000_000) {
            if handle == nil { handle = heldHandles.pop() }
            return handle != nil && pair.client.endpoint.sessionState(s) == .failed
                && pair.server.endpoint.sessionsInUse == 0
        })
        let body = [UInt8](repeating: 0x42, count: 2_000)
        let sent = body.withUnsafeBytes { try! #require(handle).respond(copying: UnsafeRawBufferPointer(start: nil, count: 0), $0) }
        #expect(sent)
        #expect(pair.server.stats.staleResponses == 1)
    }

    /// A handler may run longer than the client's silence limit (here 3 ms): the server answers
    /// each retransmitted request with a notice that it is still running, sealed under a nonce of
    /// its own, and the client keeps waiting.
    /// Answered with an echo, or with an empty response: whose first packet has the notice's
    /// request and packet number and, were the notice's size 0, its nonce too.
    @Test("a handler slower than the silence limit still completes, and its notices reuse no nonce", arguments: [false, true])
    func slowHandlerCompletes(emptyResponse: Bool) throws {
        let credentials = try TestCredentials()
        var config = RpcConfig.encrypted()
        config.retransmitTimeoutNs = 1_000_000
        config.maxRetransmissionsWithoutProgress = 3
        let pair = try Pair(
            server: TapTransport(try UDPTransport()), client: TapTransport(try UDPTransport()), config: config,
            tls: credentials.config("node-0"))
        let s = try pair.connect()
        // Two packets, so the notice answers a request's last packet that is not its first.
        let size = 2 * pair.client.endpoint.dataPerPacket
        var request = try #require(pair.client.endpoint.allocate(size: size))
        fill(&request, size: size, seed: 7)
        let response = try #require(pair.client.endpoint.allocate(size: size))
        var status: RpcStatus? = nil
        var echoed: [UInt8] = []
        try pair.client.endpoint.enqueueRequest(session: s, type: TestRequest.held, request: request, response: response) {
            status = $0.status
            echoed = Array(UnsafeRawBufferPointer(start: $0.response.data, count: $0.response.size))
        }
        // Waiting takes no attempt numbers (the response's RFRs need them): one left is enough.
        pair.client.endpoint.slots[s * Wire.sessionRequestWindow].attempt = Wire.maxRFRAttempt - 1
        var handle: RequestHandle? = nil
        let held = DispatchTime.nowNs
        // 100 silence limits.
        pair.pump(timeoutNs: 300_000_000) {
            if handle == nil { handle = heldHandles.pop() }
            return DispatchTime.nowNs - held > 300_000_000 || pair.client.endpoint.sessionState(s) != .connected
        }
        #expect(pair.client.endpoint.sessionState(s) == .connected)
        #expect(pair.server.stats.handlerRunningNotices >= 10)
        // The last notice may still be on its way.
        let (sent, accepted) = (pair.server.stats.handlerRunningNotices, pair.client.stats.handlerRunningNotices)
        #expect(accepted <= sent && sent <= accepted + 1)
        if emptyResponse {
            var empty = try #require(handle).preallocatedResponse
            empty.resize(to: 0)
            try #require(handle).respond(empty)
        } else {
            echo(try #require(handle))
        }
        #expect(pair.pump(timeoutNs: 5_000_000_000) { status != nil })
        #expect(status == .ok)
        let expected = emptyResponse ? [] : Array(UnsafeRawBufferPointer(start: request.data, count: size))
        #expect(echoed.elementsEqual(expected), "the response differs")
        let capture = pair.server.transport.captured
        #expect(capture.contains { header(of: $0, sealed: true)?.isHandlerRunningNotice == true })
        let check = checkNonceUniqueness(capture)
        #expect(check.repeats >= 10, "every notice repeats the first, byte for byte")
    }

    @Test("a handler past maxHandlerWaitNs fails its client's session as timed out")
    func handlerWaitIsBounded() throws {
        var config = RpcConfig.plaintext
        config.retransmitTimeoutNs = 1_000_000
        config.maxRetransmissionsWithoutProgress = 3
        config.maxHandlerWaitNs = 50_000_000
        let pair = try Pair(config: config)
        let s = try pair.connect()
        var request = try #require(pair.client.endpoint.allocate(size: 64))
        fill(&request, size: 64, seed: 2)
        let response = try #require(pair.client.endpoint.allocate(size: 64))
        var status: RpcStatus? = nil
        let start = DispatchTime.nowNs
        try pair.client.endpoint.enqueueRequest(session: s, type: TestRequest.held, request: request, response: response) {
            status = $0.status
        }
        var handle: RequestHandle? = nil
        #expect(pair.pump(timeoutNs: 5_000_000_000) {
            if handle == nil { handle = heldHandles.pop() }
            return status != nil
        })
        let waited = DispatchTime.nowNs - start
        #expect(status == .sessionFailed)
        #expect(pair.client.endpoint.sessionFailure(s) == .timedOut)
        #expect(waited >= 50_000_000, "failed after \(waited) ns, before the handler wait ran out")
        #expect(pair.client.stats.handlerRunningNotices >= 10)
        // The client told the server; the handler's late answer is then dropped as stale.
        #expect(pair.pump(timeoutNs: 5_000_000_000) { pair.server.endpoint.sessionsInUse == 0 })
        echo(try #require(handle))
        #expect(pair.server.stats.staleResponses == 1)
    }
}
