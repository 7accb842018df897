@testable import EERPC
import Testing

/// Sends one `patterned` request for `size` bytes and returns whether the response came back
/// whole and correct.
private func fetchPatterned<T: Transport & ~Copyable>(_ pair: Pair<T>, session s: Int, id: UInt64, size: Int) throws
    -> Bool
{
    let e = pair.client.endpoint
    var request = e.allocate(size: 12)!
    request.data.storeBytes(of: id, as: UInt64.self)
    request.data.storeBytes(of: UInt32(size), toByteOffset: 8, as: UInt32.self)
    request.resize(to: 12)
    let response = e.allocate(size: size)!
    var intact: Bool? = nil
    try e.enqueueRequest(session: s, type: TestRequest.patterned, request: request, response: response, tag: id) { c in
        let r = c.response
        intact = c.status == .ok && r.size == size
            && (0..<size).allSatisfy { r.data.load(fromByteOffset: $0, as: UInt8.self) == patternByte(id: id, $0) }
    }
    pair.pump(timeoutNs: 10_000_000_000) { intact != nil }
    e.free(request)
    e.free(response)
    return intact == true
}

/// The requests-for-response a client sent: (first packet number, packets asked for, attempt).
private func rfrRuns(_ capture: [[UInt8]], sealed: Bool = false) -> [(first: Int, count: Int, attempt: Int)] {
    capture.compactMap { header(of: $0, sealed: sealed) }.filter { $0.type == .requestForResponse }
        .map { (Int($0.packetNumber), $0.runCount, $0.runAttempt) }
}

@Suite("Requests-for-response ask for runs of packets")
struct RequestForResponseTests {
    private let dataPerPacket = Wire.dataPerPacket(mtu: Wire.defaultMTU)

    /// With the session's credits free, a 46-packet response costs the client one RFR, where a
    /// packet-by-packet protocol sends 45.
    @Test("a response within the credit window is asked for with one RFR")
    func oneRunPerWindow() throws {
        let pair = try Pair(server: TapTransport(try UDPTransport()), client: TapTransport(try UDPTransport()))
        let s = try pair.connect()
        let size = 65_536
        let packets = Wire.packetCount(size: size, dataPerPacket: dataPerPacket)
        #expect(try fetchPatterned(pair, session: s, id: 1, size: size))
        let runs = rfrRuns(pair.client.transport.captured)
        #expect(runs.count == 1)
        #expect(runs.first?.first == 1 && runs.first?.count == packets - 1 && runs.first?.attempt == 0)
        #expect(pair.server.stats.drops.isEmpty && pair.client.stats.drops.isEmpty)
    }

    /// `RpcConfig.sessionCredits` bounds what a client session has in flight: every packet it
    /// sends takes a credit (an RFR one per packet asked for), so no send carries more than that.
    @Test("a client with fewer credits keeps no more packets in flight, and large messages still complete", arguments: [1, 5])
    func fewerCredits(credits: Int) throws {
        func run(credits: Int?) throws -> (calls: [Int], runs: [(first: Int, count: Int, attempt: Int)]) {
            var client = RpcConfig.plaintext
            if let credits { client.sessionCredits = credits }
            let pair = try Pair(
                server: TapTransport(try UDPTransport()), client: TapTransport(try UDPTransport()), clientConfig: client)
            let s = try pair.connect()
            #expect(try fetchPatterned(pair, session: s, id: 3, size: 100_000))
            let echoes = try runEchoLoad(pair, sessions: [s], total: 8, window: 4, sizes: [30_000, 64])
            #expect(echoes.ok == 8)
            #expect(pair.client.stats.retransmissions == 0)
            return (pair.client.transport.transmitCalls, rfrRuns(pair.client.transport.captured))
        }
        let limited = try run(credits: credits)
        #expect(limited.calls.allSatisfy { $0 <= credits }, "packets per send: \(limited.calls.max() ?? 0)")
        #expect(limited.runs.allSatisfy { $0.count <= credits })
        // With the default 64 the same RPCs go out in larger sends.
        let unlimited = try run(credits: nil)
        #expect((unlimited.calls.max() ?? 0) > 5)
    }

    /// Every path that gives credits back (credit returns, responses, go-back-N after a timeout,
    /// duplicates and reordering) keeps a session's count exact: after a faulty run every
    /// session has all its credits again, whatever it was configured with.
    @Test("after RPCs through 5 % loss, duplication and reordering, every session has all its credits back", arguments: [1, 3, 64])
    func creditsComeBack(credits: Int) throws {
        let plan = FaultPlan(drop: 0.05, duplicate: 0.05, reorder: 0.05)
        var config = RpcConfig.plaintext
        config.retransmitTimeoutNs = 2_000_000
        config.sessionCredits = credits
        let pair = try Pair(
            server: FaultInjectingTransport(try UDPTransport(), plan: plan, seed: 11),
            client: FaultInjectingTransport(try UDPTransport(), plan: plan, seed: 12), config: config)
        let sessions = try (0..<3).map { _ in try pair.connect() }
        let total = 600
        let results = try runEchoLoad(
            pair, sessions: sessions, total: total, window: 10, sizes: [8, 1_400, 5_000, 30_000],
            type: TestRequest.countingEcho)
        #expect(results.ok == total && results.mismatched == 0)
        #expect(pair.counter.counts.values.allSatisfy { $0 == 1 }, "each handler ran once")
        #expect(pair.client.stats.retransmissions > 0, "the faults did cost timeouts")
        for s in sessions { #expect(pair.client.endpoint.sessions[s].credits == credits, "session \(s)") }
    }

    /// A response larger than the window: each RFR asks for what the returned credits allow, the
    /// runs tile the response exactly, and there are far fewer of them than packets.
    @Test("a response larger than the credit window is asked for in contiguous runs", arguments: [200_000, 1_000_000])
    func runsTileTheResponse(size: Int) throws {
        let pair = try Pair(server: TapTransport(try UDPTransport()), client: TapTransport(try UDPTransport()))
        let s = try pair.connect()
        let packets = Wire.packetCount(size: size, dataPerPacket: dataPerPacket)
        #expect(try fetchPatterned(pair, session: s, id: 2, size: size))
        let runs = rfrRuns(pair.client.transport.captured)
        var next = 1
        for run in runs {
            #expect(run.first == next)
            #expect(run.count >= 1 && run.count <= Wire.sessionCredits)
            #expect(run.attempt == 0)  // no loss: one attempt
            next = run.first + run.count
        }
        #expect(next == packets)
        #expect(runs.count <= packets / 8, "\(runs.count) RFRs for \(packets) packets")
        #expect(pair.client.stats.retransmissions == 0)
    }

    /// RFRs forged on a plaintext session against a kept response: a run that is empty, longer
    /// than a credit window or past the response's end is dropped and answered with nothing; a
    /// valid one in a new attempt is answered with exactly its packets (which the client, done
    /// with the request, drops as stale), and only once.
    @Test("a run that is empty, longer than the window, past the end or repeated is dropped")
    func invalidRuns() throws {
        let pair = try Pair(server: TapTransport(try UDPTransport()), client: TapTransport(try UDPTransport()))
        let s = try pair.connect()
        let size = 200_000
        let packets = Wire.packetCount(size: size, dataPerPacket: dataPerPacket)
        #expect(try fetchPatterned(pair, session: s, id: 3, size: size))
        let real = try #require(
            pair.client.transport.captured.compactMap { header(of: $0) }.first { $0.type == .requestForResponse })
        let attacker = RawSender(port: pair.server.transport.base.port)
        func forge(first: Int, count: Int, attempt: Int = 1) {
            let h = PacketHeader.requestForResponse(
                destSession: real.destSession, requestType: real.requestType, requestNumber: real.requestNumber,
                packetNumber: UInt16(first), count: count, attempt: attempt)
            attacker.send(h, payload: 0)
        }
        let sentBefore = pair.server.stats.packetsSent
        let bad: [(Int, Int)] = [
            (1, 0), (1, Wire.sessionCredits + 1), (packets - 3, 4), (0, 2), (packets, 1),
        ]
        for (first, count) in bad { forge(first: first, count: count) }
        pair.pump(timeoutNs: 2_000_000_000) { pair.server.stats.drops(.badPacketNumber) == UInt64(bad.count) }
        #expect(pair.server.stats.drops(.badPacketNumber) == UInt64(bad.count))
        #expect(pair.server.stats.packetsSent == sentBefore)
        // The client asked for every packet in attempt 0: asking again in it is a copy.
        forge(first: packets - 3, count: 3, attempt: 0)
        forge(first: packets - 3, count: 3)
        pair.pump(timeoutNs: 2_000_000_000) { pair.client.stats.drops(.outOfOrder) == 3 }
        #expect(pair.server.stats.packetsSent == sentBefore + 3)
        #expect(pair.client.stats.drops(.outOfOrder) == 3)
        // Answered once in its attempt: the same run again, an earlier one, or an older attempt get nothing.
        forge(first: packets - 3, count: 3)
        forge(first: 1, count: 2)
        forge(first: packets - 1, count: 1, attempt: 0)
        pair.pump(timeoutNs: 2_000_000_000) { pair.server.stats.drops(.repeatedRequestForResponse) == 4 }
        #expect(pair.server.stats.drops(.repeatedRequestForResponse) == 4)
        #expect(pair.server.stats.packetsSent == sentBefore + 3)
        // The session still serves.
        #expect(try fetchPatterned(pair, session: s, id: 4, size: 10_000))
    }

    /// The attempt number has 15 bits. A response that would need one more (32,768 timeouts)
    /// fails its session, as one without progress does, rather than reuse a number the server
    /// would take for a replay. Here the slot starts at the last number, and the response's
    /// packets after the first are lost.
    @Test("a request that has used every attempt number fails its session")
    func attemptsExhausted() throws {
        var config = RpcConfig.plaintext
        config.retransmitTimeoutNs = 1_000_000
        let losing = TailLosingTransport<UDPTransport>.Switch()
        losing.on = true
        let pair = try Pair(
            server: TailLosingTransport(try UDPTransport(), losing: losing, type: .response),
            client: TailLosingTransport(try UDPTransport(), losing: .init()), config: config)
        let s = try pair.connect()
        let e = pair.client.endpoint
        var request = e.allocate(size: 12)!
        request.data.storeBytes(of: UInt64(1), as: UInt64.self)
        request.data.storeBytes(of: UInt32(10_000), toByteOffset: 8, as: UInt32.self)
        request.resize(to: 12)
        let response = e.allocate(size: 10_000)!
        var status: RpcStatus? = nil
        try e.enqueueRequest(session: s, type: TestRequest.patterned, request: request, response: response) {
            status = $0.status
        }
        e.slots[s * Wire.sessionRequestWindow].attempt = Wire.maxRFRAttempt
        #expect(pair.pump(timeoutNs: 5_000_000_000) { status != nil })
        #expect(status == .sessionFailed)
        #expect(e.sessionState(s) == .failed)
        #expect(e.stats.retransmissions == 0)
        e.free(request)
        e.free(response)
    }

    /// Under loss, duplication and reordering with key updates, go-back-N re-asks from the first
    /// missing packet for however many the credits then allow, in a new attempt, so one packet
    /// number is asked for with runs of different lengths and attempt numbers. Every RPC still
    /// runs once and arrives intact, and within a key epoch no (size, request, packet) number
    /// seals two different packets.
    @Test("runs under loss and key updates: exactly once, and the nonce covers the run length")
    func runsUnderLoss() throws {
        let credentials = try TestCredentials()  // its directory lives as long as the test
        // Keys long-lived enough (counting the server's packets) for go-back-N to re-ask within one.
        let pair = try lossyTappedPair(credentials, seeds: (61, 62), keyUpdatePackets: 400)
        let s = try pair.connect()
        let total = 600
        let results = try runEchoLoad(
            pair, sessions: [s], total: total, window: 12, sizes: [8, 20_000, 64_000], type: TestRequest.countingEcho)
        #expect(results.ok == total)
        #expect(pair.counter.eachRanOnce(total: total))
        #expect(pair.client.endpoint.keyUpdates(session: s) >= 20)
        #expect(pair.client.stats.retransmissions > 0)
        let (epochs, repeats, sizeOnly) = checkNonceUniqueness(pair.client.transport.captured)
        #expect(epochs >= 20)
        #expect(repeats > 0)
        #expect(sizeOnly > 0)  // without the size, these would reuse nonces
        checkNonceUniqueness(pair.server.transport.captured)
    }

    /// Two requests in one receive burst: the first packet of a long response leaves before the
    /// next request is handled (the client cannot ask for the rest before it has it); short
    /// responses wait for the end of the burst and leave together.
    @Test("the first packet of a long response is sent before the rest of the burst is handled")
    func longResponseStartsEarly() throws {
        for (size, separate) in [(65_536, true), (4_096, false)] {
            let pair = try Pair(server: TapTransport(try UDPTransport()), client: TapTransport(try UDPTransport()))
            let s = try pair.connect()
            let e = pair.client.endpoint
            var done = 0
            for id in UInt64(1)...2 {
                var request = e.allocate(size: 12)!
                request.data.storeBytes(of: id, as: UInt64.self)
                request.data.storeBytes(of: UInt32(size), toByteOffset: 8, as: UInt32.self)
                request.resize(to: 12)
                try e.enqueueRequest(
                    session: s, type: TestRequest.patterned, request: request, response: e.allocate(size: size)!
                ) { c in
                    #expect(c.status == .ok && c.response.size == size)
                    c.rpc.free(c.request)
                    c.rpc.free(c.response)
                    done += 1
                }
            }
            pair.client.runOnce()  // both requests leave in one send
            #expect(pair.client.transport.transmitCalls == [2])
            pair.server.runOnce()  // and arrive in one burst
            let first = try #require(pair.server.transport.transmitCalls.first)
            #expect((first == 1) == separate, "\(size) B: \(pair.server.transport.transmitCalls)")
            #expect(pair.server.transport.transmitCalls.reduce(0, +) == 2)
            pair.pump { done == 2 }
        }
    }

    /// The nonce layout of KeySchedule.swift: IV XOR (0 ‖ size₂₄ ‖ request₄₈ ‖ packet₁₆), so
    /// packets that differ only in their size field get different nonces.
    @Test("the nonce is the IV XOR (size, request number, packet number)")
    func nonceLayout() throws {
        let epoch = try #require(
            KeyEpoch.derive(from: Secret(w0: 1, w1: 2, w2: 3, w3: 4), backend: .openSSL, algorithm: .aes128GCM))
        defer { epoch.destroy() }
        func nonce(_ size: UInt32, _ request: UInt64, _ packet: UInt16) -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: 12)
            bytes.withUnsafeMutableBytes {
                epoch.writeNonce(messageSize: size, requestNumber: request, packetNumber: packet, to: $0.baseAddress!)
            }
            return bytes
        }
        let iv = nonce(0, 0, 0)
        let n = nonce(0x0A_0B0C, 0x1122_3344_5566, 0x7788)
        let xor = zip(iv, n).map { $0 ^ $1 }
        #expect(xor == [0x00, 0x0A, 0x0B, 0x0C, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88])
        #expect(nonce(1, 9, 5) != nonce(2, 9, 5))
    }
}
