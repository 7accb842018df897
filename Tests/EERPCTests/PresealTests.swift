import EERPC
import Testing

/// `RequestHandle.respond(copying:_:)`: on an encrypted session whose packets the dispatch
/// thread seals itself, the whole response is sealed when the handler answers, straight from its
/// bytes, and kept sealed; key updates seal the kept packets again.
@Suite("Responses sealed at once (respond(copying:))")
struct PresealTests {
    /// Sizes around the packet boundaries (1,440 bytes of data per packet), with prefixes of 0,
    /// 1, 3, 8 and 1,500 bytes (the last straddles the first two packets).
    static let sizes = [8, 9, 1_439, 1_440, 1_441, 1_500, 1_501, 2_880, 2_881, 4_000, 20_000, 65_536]

    @Test("the client gets exactly the bytes, in every crypto mode, sealed at once only where sealed inline",
        arguments: ["none", "inline", "offload", "adaptive"])
    func everyMode(mode: String) throws {
        let credentials = try TestCredentials()
        var config = mode == "none" ? RpcConfig.plaintext : RpcConfig.encrypted()
        config.crypto = CryptoMode(name: mode)!
        let pair = try Pair(config: config, tls: mode == "none" ? nil : credentials.config("node-0"))
        let s = try pair.connect()
        let total = Self.sizes.count * 10
        let results = try runEchoLoad(
            pair, sessions: [s], total: total, window: 8, sizes: Self.sizes, type: TestRequest.copyingEcho)
        #expect(results.ok == total)
        #expect(pair.counter.eachRanOnce(total: total))
        let presealed = pair.server.stats.presealedPackets
        switch mode {
        case "inline": #expect(presealed >= UInt64(total))
        case "none", "offload": #expect(presealed == 0)  // copied, then sent or sealed in the pool
        default: break  // adaptive: inline below its measured threshold, in the pool above
        }
    }

    @Test("a background handler's respond(copying:) copies, and its response is sealed as it leaves")
    func backgroundHandler() throws {
        let credentials = try TestCredentials()
        let pair = try Pair(config: .encrypted(), tls: credentials.config("node-0"))
        let s = try pair.connect()
        let results = try runEchoLoad(
            pair, sessions: [s], total: 60, window: 8, sizes: [8, 1_500, 20_000], type: TestRequest.backgroundSplitEcho)
        #expect(results.ok == 60)
        #expect(pair.server.stats.presealedPackets == 0)
    }

    @Test("key updates and loss: kept responses are sealed again, every RPC runs once, retransmissions are byte-identical")
    func keyUpdatesAndLoss() throws {
        let credentials = try TestCredentials()  // its directory lives as long as the test
        let pair = try lossyTappedPair(credentials, seeds: (41, 42))
        let s = try pair.connect()
        let total = 1_500
        let results = try runEchoLoad(
            pair, sessions: [s], total: total, window: 12, sizes: [8, 700, 4_000, 9_000], type: TestRequest.copyingEcho)
        #expect(results.ok == total)
        #expect(pair.counter.eachRanOnce(total: total))
        #expect(pair.client.endpoint.keyUpdates(session: s) >= 20)
        #expect(pair.server.stats.resealedPackets > 0)
        // Within one key epoch, a (request, packet) number always carries the same bytes, sealed
        // at once, sealed again after a key update, or sent again.
        let (epochs, repeats, _) = checkNonceUniqueness(pair.server.transport.captured)
        #expect(epochs >= 20)
        #expect(repeats > 0)
    }
}
