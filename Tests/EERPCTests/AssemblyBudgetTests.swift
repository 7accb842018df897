@testable import EERPC
import Testing

/// A server takes a multi-packet request's whole size at its first packet. Without a bound, a
/// peer that sends only first packets would make it hold 8 slots × 8 MiB per session.
@Suite("Requests being assembled share a bounded budget")
struct AssemblyBudgetTests {
    /// 4,000 bytes: three packets at the default MTU.
    static let size = 4_000

    /// Plaintext, with a retransmission timeout of `rtoMs` and a silence limit of `timeouts` of
    /// them, and (servers) a budget of 10,000 bytes: two of these requests.
    static func config(rtoMs: UInt64 = 5, timeouts: Int = 400) -> RpcConfig {
        var config = RpcConfig.plaintext
        config.retransmitTimeoutNs = rtoMs * 1_000_000
        config.maxRetransmissionsWithoutProgress = timeouts
        config.maxAssemblingBytes = 10_000
        return config
    }

    /// A connected pair whose client, from now until `losing` is turned off, loses every
    /// request packet but the first.
    static func losingPair(server: RpcConfig, client: RpcConfig) throws
        -> (pair: Pair<TailLosingTransport<UDPTransport>>, session: Int, losing: TailLosingTransport<UDPTransport>.Switch)
    {
        let losing = TailLosingTransport<UDPTransport>.Switch()
        let pair = try Pair(
            server: TailLosingTransport(try UDPTransport(), losing: .init()),
            client: TailLosingTransport(try UDPTransport(), losing: losing), config: server,
            clientConfig: client)
        let s = try pair.connect()
        losing.on = true
        return (pair, s, losing)
    }

    /// Starts an echo of `size` bytes (seeded by `seed`); its status lands in `statuses[index]`.
    static func startEcho<T: Transport & ~Copyable>(
        _ pair: Pair<T>, session s: Int, seed: UInt64, into results: Results, index: Int
    ) throws {
        let e = pair.client.endpoint
        var request = try #require(e.allocate(size: size))
        fill(&request, size: size, seed: seed)
        let response = try #require(e.allocate(size: size))
        try e.enqueueRequest(session: s, type: TestRequest.echo, request: request, response: response) { c in
            results.statuses[index] = c.status
            results.echoed[index] = c.status == .ok && sameBytes(c.request, c.response)
            e.free(c.request)
            e.free(c.response)
        }
    }

    /// No session of `endpoint` is charged for a partly received request (the per-session
    /// counters, which the endpoint's total does not show).
    static func noSessionCharged(_ endpoint: RpcEndpoint) -> Bool {
        (0..<endpoint.maxSessions).allSatisfy { endpoint.sessions[$0].assemblingBytes == 0 }
    }

    /// Lets every packet through, then checks that each of `results` echoed, the server ran
    /// `handled` handlers in all, and nothing is left charged to the budget.
    static func finishAll<T: Transport & ~Copyable>(
        _ pair: Pair<T>, _ results: Results, losing: TailLosingTransport<UDPTransport>.Switch, handled: Int,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        losing.on = false
        #expect(pair.pump(timeoutNs: 5_000_000_000) { results.done }, sourceLocation: sourceLocation)
        #expect(results.statuses.allSatisfy { $0 == .ok }, sourceLocation: sourceLocation)
        #expect(results.echoed.allSatisfy { $0 }, sourceLocation: sourceLocation)
        #expect(pair.server.stats.requestsHandled == handled, sourceLocation: sourceLocation)
        #expect(pair.server.endpoint.assemblingBytes == 0, sourceLocation: sourceLocation)
        #expect(Self.noSessionCharged(pair.server.endpoint), sourceLocation: sourceLocation)
    }

    final class Results {
        var statuses: [RpcStatus?]
        var echoed: [Bool]
        init(_ n: Int) {
            statuses = Array(repeating: nil, count: n)
            echoed = Array(repeating: false, count: n)
        }
        var done: Bool { statuses.allSatisfy { $0 != nil } }
    }

    @Test("first packets over the budget are dropped and counted, and get in once there is room")
    func overBudgetWaits() throws {
        let (pair, s, losing) = try Self.losingPair(server: Self.config(), client: Self.config(rtoMs: 2, timeouts: 1_000))
        let results = Results(4)
        for i in 0..<4 { try Self.startEcho(pair, session: s, seed: UInt64(i), into: results, index: i) }
        pair.pump(timeoutNs: 50_000_000) { false }
        #expect(pair.server.stats.drops(.assemblyBudget) >= 2, "the third and fourth first packets, each sent again")
        #expect(pair.server.stats.requestsHandled == 0)
        Self.finishAll(pair, results, losing: losing, handled: 4)
        #expect(pair.server.stats.assembliesAbandoned == 0)
    }

    @Test("one session's uploads hold at most its share of the budget, and another session still gets in")
    func sessionShare() throws {
        // Budget 16,000 bytes (four requests), each session's share 8,000 (two).
        var server = Self.config()
        server.maxAssemblingBytes = 16_000
        server.maxAssemblingBytesPerSession = 8_000
        let (pair, first, losing) = try Self.losingPair(server: server, client: Self.config(rtoMs: 2, timeouts: 1_000))
        let second = try pair.connect()
        let results = Results(6)
        for i in 0..<4 { try Self.startEcho(pair, session: first, seed: UInt64(i), into: results, index: i) }
        pair.pump(timeoutNs: 30_000_000) { false }
        #expect(pair.server.endpoint.assemblingBytes == 8_000)
        #expect(pair.server.stats.drops(.assemblySessionShare) >= 2, "the first session's third and fourth")
        for i in 4..<6 { try Self.startEcho(pair, session: second, seed: UInt64(i), into: results, index: i) }
        pair.pump(timeoutNs: 30_000_000) { false }
        #expect(pair.server.endpoint.assemblingBytes == 16_000, "the second session's two are being assembled")
        #expect(pair.server.stats.drops(.assemblyBudget) == 0, "no first packet of the second session was refused")
        Self.finishAll(pair, results, losing: losing, handled: 6)
    }

    @Test("a request larger than a session's share gets in when the session holds nothing else")
    func largerThanShare() throws {
        var server = Self.config()
        server.maxAssemblingBytesPerSession = 1_000
        let (pair, s, losing) = try Self.losingPair(server: server, client: Self.config(rtoMs: 2, timeouts: 1_000))
        let results = Results(2)
        for i in 0..<2 { try Self.startEcho(pair, session: s, seed: UInt64(i), into: results, index: i) }
        pair.pump(timeoutNs: 30_000_000) { false }
        #expect(pair.server.endpoint.assemblingBytes == Self.size, "one at a time")
        #expect(pair.server.stats.drops(.assemblySessionShare) >= 1)
        Self.finishAll(pair, results, losing: losing, handled: 2)
    }

    @Test("requests whose client went silent are freed for new ones, and their late packets are dropped")
    func abandonedAreFreed() throws {
        // The server takes 3 ms of silence for a client that gave up; the client waits 200 ms.
        let (pair, s, losing) = try Self.losingPair(
            server: Self.config(rtoMs: 1, timeouts: 3), client: Self.config(rtoMs: 2, timeouts: 100))
        let results = Results(3)
        for i in 0..<2 { try Self.startEcho(pair, session: s, seed: UInt64(i), into: results, index: i) }
        pair.pump(timeoutNs: 20_000_000) { false }
        try Self.startEcho(pair, session: s, seed: 2, into: results, index: 2)
        pair.pump(timeoutNs: 20_000_000) { false }
        #expect(pair.server.stats.assembliesAbandoned == 2)
        #expect(pair.server.stats.drops(.assemblyBudget) == 0)
        losing.on = false
        #expect(pair.pump(timeoutNs: 5_000_000_000) { results.done })
        #expect(results.statuses[2] == .ok && results.echoed[2], "the request that took their room")
        // The freed ones' remaining packets find no buffer: their client fails the session.
        #expect(results.statuses[0] == .sessionFailed && results.statuses[1] == .sessionFailed)
        #expect(pair.server.stats.drops(.outOfOrder) >= 1)
        let fresh = try pair.connect()
        let results2 = Results(1)
        try Self.startEcho(pair, session: fresh, seed: 9, into: results2, index: 0)
        #expect(pair.pump(timeoutNs: 5_000_000_000) { results2.done })
        #expect(results2.statuses[0] == .ok && results2.echoed[0])
        #expect(pair.server.endpoint.assemblingBytes == 0)
        #expect(Self.noSessionCharged(pair.server.endpoint))
    }

    @Test("a session's partly received requests give their room back when the session ends")
    func releasedWithSession() throws {
        // The client gives up after 20 ms; the server would wait 2 s.
        let (pair, first, losing) = try Self.losingPair(server: Self.config(), client: Self.config(rtoMs: 2, timeouts: 10))
        let results = Results(2)
        // 8,000 of 10,000 bytes held, until the client gives the session up and tells the server.
        for i in 0..<2 { try Self.startEcho(pair, session: first, seed: UInt64(i), into: results, index: i) }
        #expect(pair.pump(timeoutNs: 5_000_000_000) { results.done && pair.server.endpoint.sessionsInUse == 0 })
        #expect(results.statuses.allSatisfy { $0 == .sessionFailed })
        losing.on = false
        let second = try pair.connect()
        let results2 = Results(1)
        try Self.startEcho(pair, session: second, seed: 5, into: results2, index: 0)
        #expect(pair.pump(timeoutNs: 5_000_000_000) { results2.done })
        #expect(results2.statuses[0] == .ok && results2.echoed[0])
        #expect(pair.server.stats.drops(.assemblyBudget) == 0, "the released requests still held their room")
        #expect(pair.server.stats.assembliesAbandoned == 0)
        #expect(pair.server.endpoint.assemblingBytes == 0)
        #expect(Self.noSessionCharged(pair.server.endpoint))
    }
}
