import CCryptoShims
import CSystemShims
import EERPC
import Glibc
import Testing

/// Runs two Rpcs' event loops on this thread until `condition` holds or the timeout passes.
func drive<A: Transport & ~Copyable, B: Transport & ~Copyable>(
    _ a: Rpc<A>, _ b: Rpc<B>, timeoutNs: UInt64 = 10_000_000_000, until condition: () -> Bool
) {
    let start = DispatchTime.nowNs
    while !condition() && DispatchTime.nowNs - start < timeoutNs {
        a.runOnce()
        b.runOnce()
    }
}

/// An encrypted pair: one Nexus with node-0's credentials, both Rpcs in it.
func securePair(_ credentials: TestCredentials, config: RpcConfig = .encrypted()) throws -> Pair<TapTransport<UDPTransport>> {
    try Pair(
        server: TapTransport(try UDPTransport()), client: TapTransport(try UDPTransport()), config: config,
        tls: credentials.config("node-0"))
}

@Suite("Encrypted datapath")
struct SecurityTests {
    @Test(
        "encrypted RPCs round-trip with every backend pairing and key size",
        arguments: AEADBackendKind.available.flatMap { b in AEADAlgorithm.allCases.map { (b, $0) } })
    func roundTrip(backend: AEADBackendKind, algorithm: AEADAlgorithm) throws {
        let credentials = try TestCredentials()
        let pair = try securePair(credentials, config: .encrypted(backend, algorithm: algorithm))
        let s = try pair.connect()
        let results = try runEchoLoad(pair, sessions: [s], total: 300, window: 8, sizes: [0, 8, 1_440, 5_000, 100_000])
        #expect(results.ok == 300)
        #expect(pair.server.stats.drops(.authenticationFailed) == 0)
        #expect(pair.client.stats.drops(.authenticationFailed) == 0)
    }

    @Test("ipsec-mb at one end and OpenSSL at the other interoperate on the wire")
    func mixedBackends() throws {
        let credentials = try TestCredentials()
        let nexus = try Nexus(tls: credentials.config("node-0"))
        try registerTestHandlers(nexus)
        defer { nexus.shutdown() }
        let server = try Rpc(nexus: nexus, id: 1, transport: try UDPTransport(), config: .encrypted(.openSSL))
        let client = try Rpc(nexus: nexus, id: 2, transport: try UDPTransport(), config: .encrypted(.ipsecMB))
        let s = try client.endpoint.createSession(host: "127.0.0.1", port: nexus.port, remoteRpcID: 1)
        var done = false
        let e = client.endpoint
        var request = e.allocate(size: 3_000)!
        fill(&request, size: 3_000, seed: 3)
        let response = e.allocate(size: 3_000)!
        var result: Completion? = nil
        let start = DispatchTime.nowNs
        while !done && DispatchTime.nowNs - start < 10_000_000_000 {
            client.runOnce()
            server.runOnce()
            if e.sessionState(s) == .connected && result == nil && !done {
                done = true
                try e.enqueueRequest(session: s, type: TestRequest.echo, request: request, response: response) { result = $0 }
            }
        }
        while result == nil && DispatchTime.nowNs - start < 10_000_000_000 {
            client.runOnce()
            server.runOnce()
        }
        #expect(result?.status == .ok)
        #expect(result.map { sameBytes($0.response, request) } == true)
    }

    @Test("packets on the wire are header ‖ ciphertext ‖ tag, and no plaintext shows")
    func wireFormat() throws {
        let credentials = try TestCredentials()
        let pair = try securePair(credentials)
        let s = try pair.connect()
        let e = pair.client.endpoint
        let marker = Array("EERPC-PLAINTEXT-MARKER-0123456789".utf8)
        var request = e.allocate(size: 3_000)!
        for i in 0..<3_000 { request.data.storeBytes(of: marker[i % marker.count], toByteOffset: i, as: UInt8.self) }
        request.resize(to: 3_000)
        let response = e.allocate(size: 3_000)!
        var status: RpcStatus? = nil
        try e.enqueueRequest(session: s, type: TestRequest.echo, request: request, response: response) { status = $0.status }
        #expect(pair.pump { status != nil })
        #expect(status == .ok)
        let all = pair.client.transport.captured + pair.server.transport.captured
        #expect(all.count >= 6)  // 3 request packets, 2 credit returns, 3 response packets, 2 RFRs
        let needle = Array(marker.prefix(16))
        for packet in all {
            let h = try #require(header(of: packet, sealed: true))
            // Data packets carry their slice of the 3,000 bytes (1,440 per packet) plus the tag;
            // control packets carry the tag alone.
            let index = h.type == .request ? Int(h.packetNumber) : h.type == .response ? Int(h.packetNumber) - 2 : -1
            let slice = index >= 0 ? min(1_440, 3_000 - index * 1_440) : 0
            #expect(packet.count == Wire.headerSize + slice + Wire.tagSize, "\(h)")
            #expect(!packet.indices.dropLast(needle.count).contains { Array(packet[$0..<$0 + needle.count]) == needle })
        }
    }

    /// Flip every bit of a sealed request (header, ciphertext and tag) and inject each variant:
    /// every one is dropped and counted, none runs a handler or changes anything.
    @Test("tampering with any bit of a sealed packet is rejected and counted, with no state change")
    func tampering() throws {
        let credentials = try TestCredentials()
        let pair = try securePair(credentials)
        let s = try pair.connect()
        #expect(try echoOnce(pair, session: s, bytes: Array(repeating: 0x61, count: 40))?.0 == .ok)
        let sealed = try #require(pair.client.transport.captured.last { header(of: $0, sealed: true)?.type == .request })
        #expect(sealed.count == Wire.headerSize + 40 + Wire.tagSize)
        let handled = pair.server.stats.requestsHandled
        let dropsBefore = pair.server.stats.totalDrops
        let attacker = RawSender(port: pair.server.transport.base.port)
        var injected: UInt64 = 0
        for bit in 0..<(sealed.count * 8) {
            var variant = sealed
            variant[bit / 8] ^= 1 << (bit % 8)
            attacker.send(variant)
            injected += 1
            if injected % 64 == 0 { pair.pump(timeoutNs: 5_000_000_000) { pair.server.stats.totalDrops - dropsBefore >= injected } }
        }
        #expect(pair.pump(timeoutNs: 5_000_000_000) { pair.server.stats.totalDrops - dropsBefore >= injected })
        #expect(pair.server.stats.totalDrops - dropsBefore == injected)
        // Body and tag bits all fail authentication; header bits fail parsing or authentication.
        #expect(pair.server.stats.drops(.authenticationFailed) >= UInt64((40 + Wire.tagSize) * 8))
        #expect(pair.server.stats.requestsHandled == handled)
        #expect(try echoOnce(pair, session: s, bytes: Array(repeating: 0x62, count: 40))?.0 == .ok)
    }

    /// The nonce carries the message size, request number and packet number; the rest of the
    /// header is protected only as the AEAD's associated data. A response turned into a rejection
    /// (or given another request type) parses, has the same nonce, and would complete the RPC
    /// as `.rejected` if the header were not authenticated: it must fail to open.
    @Test("header fields outside the nonce are authenticated: a response made a rejection fails to open")
    func headerIsAuthenticated() throws {
        let credentials = try TestCredentials()
        let pair = try securePair(credentials)
        let s = try pair.connect()
        // An empty request's response: no payload and size 0, the shape of a rejection.
        let e = pair.client.endpoint
        let request = e.allocate(size: 0)!
        let response = e.allocate(size: 1)!
        var status: RpcStatus?
        try e.enqueueRequest(session: s, type: TestRequest.echo, request: request, response: response) { status = $0.status }
        #expect(pair.pump { status != nil })
        #expect(status == .ok)
        e.free(request)
        e.free(response)
        let sealed = try #require(pair.server.transport.captured.last { header(of: $0, sealed: true)?.type == .response })
        let original = try #require(header(of: sealed, sealed: true))
        #expect(original.messageSize == 0)
        var rejection = original
        rejection.rejected = true
        var retyped = original
        retyped.requestType ^= 0x01
        let client = RawSender(port: pair.client.transport.base.port)
        let before = pair.client.stats.drops(.authenticationFailed)
        for forged in [rejection, retyped] {
            var variant = sealed
            variant.withUnsafeMutableBytes { forged.encode(to: $0.baseAddress!) }
            #expect(header(of: variant, sealed: true) != nil, "the variant must parse, or this tests nothing")
            client.send(variant)
        }
        #expect(pair.pump(timeoutNs: 2_000_000_000) { pair.client.stats.drops(.authenticationFailed) - before == 2 })
        #expect(try echoOnce(pair, session: s, bytes: Array(repeating: 0x62, count: 40))?.0 == .ok)
    }

    /// Replays every packet the client ever sent, after the RPCs completed: nothing runs again.
    /// Then replays them into a new session that got the same session number: all fail to
    /// authenticate (different keys).
    @Test("replayed packets never run a handler again, also across a new session")
    func replay() throws {
        let credentials = try TestCredentials()
        let pair = try securePair(credentials)
        let s = try pair.connect()
        let results = try runEchoLoad(
            pair, sessions: [s], total: 50, window: 8, sizes: [8, 3_000], type: TestRequest.countingEcho)
        #expect(results.ok == 50)
        let capture = pair.client.transport.captured.filter { header(of: $0, sealed: true) != nil }
        #expect(capture.contains { header(of: $0, sealed: true)?.type == .requestForResponse })
        let attacker = RawSender(port: pair.server.transport.base.port)
        let handled = pair.server.stats.requestsHandled
        for packet in capture { attacker.send(packet) }
        pair.pump(timeoutNs: 500_000_000) { false }
        #expect(pair.server.stats.requestsHandled == handled)
        #expect(pair.counter.counts.values.allSatisfy { $0 == 1 })
        // A new session with the same number: the old packets do not even authenticate.
        try pair.client.endpoint.destroySession(s)
        pair.pump { pair.client.endpoint.sessionState(s) == .free && pair.server.endpoint.sessionCount(role: .server) == 0 }
        let s2 = try pair.connect()
        #expect(s2 == s)
        let authBefore = pair.server.stats.drops(.authenticationFailed)
        for packet in capture { attacker.send(packet) }
        pair.pump(timeoutNs: 500_000_000) { pair.server.stats.drops(.authenticationFailed) - authBefore >= UInt64(capture.count) }
        #expect(pair.server.stats.drops(.authenticationFailed) - authBefore == UInt64(capture.count))
        #expect(pair.server.stats.requestsHandled == handled)
        #expect(try echoOnce(pair, session: s2, bytes: [0x77, 0, 0, 0, 0, 0, 0, 0])?.0 == .ok)
    }

    /// An attacker who captured the client's requests-for-response replays them while the
    /// server still keeps the response. Each copy authenticates, and each used to make the
    /// server send its run again: one packet in, up to a credit window out. Now every copy is
    /// dropped and counted, nothing is sent, and the session goes on.
    @Test("replayed requests-for-response are not answered again")
    func replayedRequestForResponse() throws {
        let credentials = try TestCredentials()
        let pair = try securePair(credentials)
        let s = try pair.connect()
        let bytes = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        #expect(try echoOnce(pair, session: s, bytes: bytes)?.1 == bytes)
        let rfrs = pair.client.transport.captured.filter { header(of: $0, sealed: true)?.type == .requestForResponse }
        #expect(rfrs.count >= 3)  // 138 response packets in runs of at most 64
        let sentBefore = pair.server.stats.packetsSent
        let attacker = RawSender(port: pair.server.transport.base.port)
        let rounds = 10
        for _ in 0..<rounds { for packet in rfrs { attacker.send(packet) } }
        let copies = UInt64(rounds * rfrs.count)
        pair.pump(timeoutNs: 2_000_000_000) { pair.server.stats.drops(.repeatedRequestForResponse) >= copies }
        #expect(pair.server.stats.drops(.repeatedRequestForResponse) == copies)
        #expect(pair.server.stats.drops(.authenticationFailed) == 0)
        #expect(pair.server.stats.packetsSent == sentBefore)
        #expect(try echoOnce(pair, session: s, bytes: [1, 2, 3, 4, 5, 6, 7, 8])?.0 == .ok)
    }

    @Test("keys roll over under load and through loss, and no RPC fails or runs twice")
    func keyUpdateUnderLoad() throws {
        let credentials = try TestCredentials()  // its directory lives as long as the test
        let pair = try lossyTappedPair(credentials, seeds: (11, 12))
        let s = try pair.connect()
        let total = 2_000
        let results = try runEchoLoad(
            pair, sessions: [s], total: total, window: 12, sizes: [8, 700, 4_000], type: TestRequest.countingEcho)
        #expect(results.ok == total)
        #expect(pair.counter.eachRanOnce(total: total))
        #expect(pair.client.endpoint.keyUpdates(session: s) >= 20)
        // Nonce uniqueness: within one direction and key epoch, a (size, request, packet) number always
        // carries the same bytes, retransmissions included. Epochs are counted from phase flips in
        // each sender's own order.
        for capture in [pair.client.transport.captured, pair.server.transport.captured] {
            let (epochs, repeats, _) = checkNonceUniqueness(capture)
            #expect(epochs >= 20)
            #expect(repeats > 0)  // there were retransmissions, and they were byte-identical
        }
    }

    /// A packet that will fill the next slice of a multi-packet message is decrypted straight
    /// into that slice. Damaged ones (a flipped bit anywhere, header included) must fail there,
    /// be counted, leave the slices received so far alone, and be recovered by retransmission.
    @Test("corrupted packets of multi-packet messages are dropped, and every message arrives whole")
    func corruptedSlices() throws {
        let credentials = try TestCredentials()
        var config = RpcConfig.encrypted()
        config.retransmitTimeoutNs = 2_000_000
        let plan = FaultPlan(corrupt: 0.02)
        let pair = try Pair(
            server: FaultInjectingTransport(try UDPTransport(), plan: plan, seed: 31),
            client: FaultInjectingTransport(try UDPTransport(), plan: plan, seed: 32), config: config,
            tls: credentials.config("node-0"))
        let s = try pair.connect()
        let results = try runEchoLoad(
            pair, sessions: [s], total: 300, window: 8, sizes: [5_000, 20_000], type: TestRequest.countingEcho)
        #expect(results.ok == 300)
        #expect(pair.counter.eachRanOnce(total: 300))
        for (side, faults, stats) in [
            ("client", pair.client.transport.faults, pair.client.stats),
            ("server", pair.server.transport.faults, pair.server.stats),
        ] {
            #expect(faults.corrupted > 10, "\(side)")
            // A flipped header bit may fail parsing instead; every other one fails to open.
            #expect(stats.totalDrops >= UInt64(faults.corrupted), "\(side): \(stats.drops)")
            #expect(stats.drops(.authenticationFailed) > 0, "\(side)")
        }
    }

    @Test("a plaintext client and an encrypting server refuse each other")
    func cryptoMismatch() throws {
        let credentials = try TestCredentials()
        let nexus = try Nexus(tls: credentials.config("node-0"))
        try registerTestHandlers(nexus)
        defer { nexus.shutdown() }
        let server = try Rpc(nexus: nexus, id: 1, transport: try UDPTransport(), config: .encrypted())
        let client = try Rpc(nexus: nexus, id: 2, transport: try UDPTransport(), config: .plaintext)
        let s = try client.endpoint.createSession(host: "127.0.0.1", port: nexus.port, remoteRpcID: 1)
        drive(client, server, timeoutNs: 5_000_000_000) { client.endpoint.sessionState(s) != .connecting }
        #expect(client.endpoint.sessionFailure(s) == .cryptoMismatch)
        #expect(server.endpoint.sessionCount(role: .server) == 0)
    }

    @Test("an encrypting Rpc needs TLS credentials")
    func encryptionNeedsTLS() throws {
        let nexus = try Nexus()
        defer { nexus.shutdown() }
        #expect(throws: NexusError.encryptionNeedsTLS) {
            _ = try Rpc(nexus: nexus, id: 1, transport: try UDPTransport(), config: .encrypted())
        }
    }
}

@Suite("Handshake refusal")
struct HandshakeRefusalTests {
    /// Tries to connect from a client Nexus with `clientTLS` to a server Nexus with node-0's
    /// credentials; returns the client's session failure and the server's refusal count.
    func attempt(serverCredentials: TestCredentials, clientTLS: TLSConfig?) throws -> (SessionError?, Int, String?) {
        let serverNexus = try Nexus(tls: serverCredentials.config("node-0"))
        try registerTestHandlers(serverNexus)
        defer { serverNexus.shutdown() }
        let clientNexus = try Nexus(tls: clientTLS)
        defer { clientNexus.shutdown() }
        let server = try Rpc(nexus: serverNexus, id: 1, transport: try UDPTransport(), config: .encrypted())
        let client = try Rpc(
            nexus: clientNexus, id: 2, transport: try UDPTransport(), config: clientTLS == nil ? .plaintext : .encrypted())
        let s = try client.endpoint.createSession(host: "127.0.0.1", port: serverNexus.port, remoteRpcID: 1)
        drive(client, server, timeoutNs: 10_000_000_000) { client.endpoint.sessionState(s) != .connecting }
        #expect(client.endpoint.sessionState(s) == .failed)
        #expect(server.endpoint.sessionCount(role: .server) == 0)
        // The server's reader thread records the refusal right after the handshake fails.
        let deadline = DispatchTime.nowNs + 2_000_000_000
        while serverNexus.handshakeRefusals == 0 && DispatchTime.nowNs < deadline { usleep(1_000) }
        return (client.endpoint.sessionFailure(s), serverNexus.handshakeRefusals, serverNexus.lastHandshakeRefusal)
    }

    @Test("a certificate from the cluster CA is accepted (client certificate)")
    func validClient() throws {
        let credentials = try TestCredentials()
        let nexus = try Nexus(tls: credentials.config("node-0"))
        try registerTestHandlers(nexus)
        defer { nexus.shutdown() }
        let server = try Rpc(nexus: nexus, id: 1, transport: try UDPTransport(), config: .encrypted())
        #expect(try clientConnects(credentials, to: nexus, server: server))
        #expect(nexus.handshakeRefusals == 0)
    }

    /// Every node's certificate chains to the cluster CA; naming the node it means to reach is
    /// what stops another node (or anyone holding a node's key) from answering in its place.
    @Test("a server whose certificate names another node is refused; the right name connects")
    func wrongServerName() throws {
        let credentials = try TestCredentials(nodes: 2)
        let serverNexus = try Nexus(tls: credentials.config("node-1"))
        try registerTestHandlers(serverNexus)
        defer { serverNexus.shutdown() }
        let clientNexus = try Nexus(tls: credentials.config("client-0"))
        defer { clientNexus.shutdown() }
        let server = try Rpc(nexus: serverNexus, id: 1, transport: try UDPTransport(), config: .encrypted())
        let client = try Rpc(nexus: clientNexus, id: 2, transport: try UDPTransport(), config: .encrypted())
        let wrong = try client.endpoint.createSession(
            host: "127.0.0.1", port: serverNexus.port, remoteRpcID: 1, peerName: "node-0")
        drive(client, server, timeoutNs: 10_000_000_000) { client.endpoint.sessionState(wrong) != .connecting }
        #expect(client.endpoint.sessionState(wrong) == .failed)
        #expect(server.endpoint.sessionCount(role: .server) == 0)
        if case .handshakeFailed(let why) = client.endpoint.sessionFailure(wrong) {
            #expect(why.contains("node-0"), "\(why)")
        } else {
            Issue.record("client saw \(String(describing: client.endpoint.sessionFailure(wrong)))")
        }
        let right = try client.endpoint.createSession(
            host: "127.0.0.1", port: serverNexus.port, remoteRpcID: 1, peerName: "node-1")
        drive(client, server, timeoutNs: 10_000_000_000) { client.endpoint.sessionState(right) != .connecting }
        #expect(client.endpoint.sessionState(right) == .connected)
    }

    @Test("an expired client certificate is refused")
    func expired() throws {
        let credentials = try TestCredentials()
        try ClusterCertificates.issue(directory: credentials.directory, name: "expired", server: false, validFrom: -7_200, validFor: -3_600)
        let (failure, refusals, reason) = try attempt(serverCredentials: credentials, clientTLS: credentials.config("expired"))
        #expect(refusals >= 1)
        #expect(reason?.contains("expired") == true, "\(reason ?? "-")")
        if case .handshakeFailed = failure {} else { Issue.record("client saw \(String(describing: failure))") }
    }

    @Test("a certificate from a foreign CA is refused")
    func foreignCA() throws {
        let credentials = try TestCredentials()
        let foreign = try TestCredentials()
        // The foreign client trusts our CA (so it gets as far as presenting its certificate).
        let tls = TLSConfig(
            caFile: credentials.directory + "/ca.pem", certificateFile: foreign.directory + "/client-0.pem",
            keyFile: foreign.directory + "/client-0.key")
        let (failure, refusals, _) = try attempt(serverCredentials: credentials, clientTLS: tls)
        #expect(refusals >= 1)
        #expect(failure != nil)
    }

    @Test("a client speaking plain TCP gets no session")
    func plaintextClient() throws {
        let credentials = try TestCredentials()
        let (failure, refusals, _) = try attempt(serverCredentials: credentials, clientTLS: nil)
        #expect(refusals >= 1)
        #expect(failure != nil)
    }

    /// What `openssl s_client` without `-cert` does: a TLS 1.3 client with no certificate.
    @Test("a TLS client without a certificate cannot complete a handshake")
    func noCertificate() throws {
        let credentials = try TestCredentials()
        let nexus = try Nexus(tls: credentials.config("node-0"))
        defer { nexus.shutdown() }
        var message = [CChar](repeating: 0, count: 512)
        var request = [UInt8](repeating: 0, count: 64)
        var response = [UInt8](repeating: 0, count: 64)
        let ok = ee_tls_probe(
            0x7F00_0001, nexus.port, credentials.directory + "/ca.pem", nil, nil, &request, &response, 64, &message, 512)
        #expect(ok == 0)
        let deadline = DispatchTime.nowNs + 2_000_000_000
        while nexus.handshakeRefusals == 0 && DispatchTime.nowNs < deadline { usleep(1_000) }
        #expect(nexus.handshakeRefusals >= 1)
        #expect(nexus.lastHandshakeRefusal != nil)
        // The same probe with a cluster certificate completes the handshake (the exchange then
        // fails only because 64 zero bytes are not a session-management message).
        let withCert = ee_tls_probe(
            0x7F00_0001, nexus.port, credentials.directory + "/ca.pem", credentials.directory + "/client-0.pem",
            credentials.directory + "/client-0.key", &request, &response, 64, &message, 512)
        #expect(withCert == 0)
        #expect(String(nulTerminated: message).contains("read after handshake"))
    }
}

@Suite("Crypto modes and the AES pool")
struct CryptoModeTests {
    static let modes: [CryptoMode] = [.inline, .offload, .adaptive(thresholdBytes: 2_000), .adaptive]

    @Test("inline, offload and adaptive give identical results", arguments: modes)
    func identicalResults(mode: CryptoMode) throws {
        let credentials = try TestCredentials()
        var config = RpcConfig.encrypted()
        config.crypto = mode
        let pair = try Pair(config: config, backgroundThreads: 1, tls: credentials.config("node-0"))
        let s = try pair.connect()
        let sizes = [0, 8, 1_000, 1_440, 3_000, 20_000, 300_000]
        let results = try runEchoLoad(pair, sessions: [s], total: 700, window: 12, sizes: sizes, type: TestRequest.countingEcho)
        #expect(results.ok == 700)
        #expect(pair.counter.counts.values.allSatisfy { $0 == 1 })
        let client = pair.client.stats
        let server = pair.server.stats
        switch mode {
        case .inline:
            #expect(client.offloadedSeals == 0 && server.offloadedOpens == 0)
        case .offload:
            // Everything goes through the pool, control packets included.
            #expect(client.offloadedSeals == client.packetsSent)
            #expect(server.offloadedOpens > 0 && client.offloadedOpens > 0)
        case .adaptive(let threshold):
            if threshold == 2_000 {
                #expect(client.offloadedSeals > 0 && client.offloadedSeals < client.packetsSent)
                #expect(server.offloadedOpens > 0)
            }
        case .none: Issue.record("not an encrypted mode")
        }
        #expect(client.drops(.authenticationFailed) == 0 && server.drops(.authenticationFailed) == 0)
    }

    /// Small requests with large answers, many in flight on one session, with retransmissions
    /// while packets wait in the pool: each response must arrive whole and be the one its request
    /// asked for. (This caught a stale copy of a job the dispatch thread had already run claiming
    /// the reused completion word of a later packet and sealing it with the old packet's bytes.)
    @Test("large responses to small requests, 8 in flight, arrive whole and unmixed", arguments: modes)
    func largeResponses(mode: CryptoMode) throws {
        let credentials = try TestCredentials()
        var config = RpcConfig.encrypted()
        config.crypto = mode
        // Retransmissions while packets wait in the pool, too; the session may go a few seconds
        // without progress when other test suites load both cores.
        config.retransmitTimeoutNs = 100_000
        config.maxRetransmissionsWithoutProgress = 50_000
        let pair = try Pair(config: config, backgroundThreads: 1, tls: credentials.config("node-0"))
        let s = try pair.connect()
        let e = pair.client.endpoint
        let sizes = [40_000, 131_000, 3_000, 96_500, 1_400, 120_000]
        var done = 0
        var bad: [String] = []
        var issued = 0
        func issue() throws {
            let id = UInt64(issued)
            if issued % 5 == 4 {
                // A small write-like request answered from a background thread, in between.
                var request = e.allocate(size: 64)!
                fill(&request, size: 64, seed: id)
                let response = e.allocate(size: 64)!
                issued += 1
                try e.enqueueRequest(session: s, type: TestRequest.backgroundEcho, request: request, response: response, tag: id) { c in
                    if c.status != .ok || !sameBytes(c.response, c.request) {
                        bad.append("#\(c.tag): background echo \(c.status == .ok ? "differs" : "status \(c.status)")")
                    }
                    done += 1
                    c.rpc.free(c.request)
                    c.rpc.free(c.response)
                }
                return
            }
            let size = sizes[issued % sizes.count]
            var request = e.allocate(size: 12)!
            request.data.storeBytes(of: id, as: UInt64.self)
            request.data.storeBytes(of: UInt32(size), toByteOffset: 8, as: UInt32.self)
            request.resize(to: 12)
            let response = e.allocate(size: size)!
            issued += 1
            try e.enqueueRequest(session: s, type: TestRequest.patterned, request: request, response: response, tag: id) { c in
                let r = c.response
                if c.status != .ok || r.size != size {
                    bad.append("#\(c.tag): status \(c.status), \(r.size) of \(size) bytes")
                } else if let i = (0..<size).first(where: { r.data.load(fromByteOffset: $0, as: UInt8.self) != patternByte(id: c.tag, $0) }) {
                    bad.append("#\(c.tag): byte \(i) (packet \(i / 1440)) of \(size) differs")
                }
                done += 1
                c.rpc.free(c.request)
                c.rpc.free(c.response)
            }
        }
        for _ in 0..<8 { try issue() }
        let ok = pair.pump(timeoutNs: 60_000_000_000) {
            while issued < 240 && issued - done < 8 { try? issue() }
            return done == 240
        }
        #expect(ok, "\(done) of 240 completed")
        #expect(bad.isEmpty, "\(bad.prefix(5))")
    }

    /// A packet with the other key-phase bit is a phase change or a late packet, and what the
    /// AES pool is opening must be handled before the first packet of a new phase. Forged ones (a
    /// captured packet with the bit flipped) used to make the dispatch thread wait out the pool
    /// for each before they failed to open, and so did replayed packets of the previous phase;
    /// now only phase changes do.
    @Test("forged or replayed packets of the other key phase do not make the dispatch thread wait for the pool")
    func forgedOtherPhase() throws {
        let credentials = try TestCredentials()
        var config = RpcConfig.encrypted()
        config.crypto = .offload
        config.keyUpdatePackets = 100
        let pair = try securePair(credentials, config: config)
        let s = try pair.connect()
        #expect(try echoOnce(pair, session: s, bytes: Array(repeating: 0x61, count: 3_000))?.0 == .ok)
        let sealed = try #require(pair.client.transport.captured.last { header(of: $0, sealed: true)?.type == .request })
        var forged = sealed
        forged[1] ^= 0x80  // the key-phase bit
        let drainsBefore = pair.server.stats.poolDrains
        let authBefore = pair.server.stats.drops(.authenticationFailed)
        let attacker = RawSender(port: pair.server.transport.base.port)
        for _ in 0..<100 { attacker.send(forged) }
        pair.pump(timeoutNs: 2_000_000_000) { pair.server.stats.drops(.authenticationFailed) - authBefore >= 100 }
        #expect(pair.server.stats.drops(.authenticationFailed) - authBefore == 100)
        #expect(pair.server.stats.poolDrains == drainsBefore)
        // Authentic phase changes still let the pool go first.
        let results = try runEchoLoad(pair, sessions: [s], total: 300, window: 8, sizes: [16, 5_000])
        #expect(results.ok == 300)
        let updates = pair.client.endpoint.keyUpdates(session: s)
        #expect(updates >= 2)
        #expect(pair.server.stats.poolDrains - drainsBefore >= UInt64(updates))
        // Replays of packets of the previous phase still authenticate (its key stays for late
        // packets), but they were sent before anything in the pool: no wait for them either.
        let sent = pair.client.transport.captured.filter { header(of: $0, sealed: true) != nil }
        let phase = { (packet: [UInt8]) in packet[1] & 0x80 != 0 }
        let current = try #require(sent.last.map(phase))
        let switchAt = try #require(sent.lastIndex { phase($0) != current })
        let previous = sent[...switchAt].reversed().prefix { phase($0) != current }.prefix(50)
        #expect(previous.count >= 10)
        let drainsAfterLoad = pair.server.stats.poolDrains
        let authAfterLoad = pair.server.stats.drops(.authenticationFailed)
        let receivedBefore = pair.server.stats.packetsReceived
        for packet in previous { attacker.send(packet) }
        pair.pump(timeoutNs: 2_000_000_000) { pair.server.stats.packetsReceived - receivedBefore >= UInt64(previous.count) }
        #expect(pair.server.stats.packetsReceived - receivedBefore == UInt64(previous.count))
        #expect(pair.server.stats.drops(.authenticationFailed) == authAfterLoad)
        #expect(pair.server.stats.poolDrains == drainsAfterLoad)
    }

    @Test("the pool works with the OpenSSL backend too (per-worker contexts)")
    func openSSLPool() throws {
        let credentials = try TestCredentials()
        var config = RpcConfig.encrypted(.openSSL)
        config.crypto = .offload
        let pair = try Pair(config: config, tls: credentials.config("node-0"))
        let s = try pair.connect()
        let results = try runEchoLoad(pair, sessions: [s], total: 300, window: 8, sizes: [16, 5_000])
        #expect(results.ok == 300)
        #expect(pair.client.stats.offloadedSeals > 0)
    }

    @Test("key updates while packets are in the pool, through loss")
    func keyUpdatesWithPool() throws {
        let credentials = try TestCredentials()
        var config = RpcConfig.encrypted()
        config.crypto = .offload
        config.keyUpdatePackets = 50
        config.retransmitTimeoutNs = 2_000_000
        let plan = FaultPlan(drop: 0.03, duplicate: 0.03, reorder: 0.03)
        let pair = try Pair(
            server: FaultInjectingTransport(try UDPTransport(), plan: plan, seed: 21),
            client: FaultInjectingTransport(try UDPTransport(), plan: plan, seed: 22), config: config,
            tls: credentials.config("node-0"))
        let s = try pair.connect()
        let results = try runEchoLoad(
            pair, sessions: [s], total: 1_500, window: 12, sizes: [8, 2_000, 9_000], type: TestRequest.countingEcho)
        #expect(results.ok == 1_500)
        #expect(pair.counter.eachRanOnce(total: 1_500))
        #expect(pair.client.endpoint.keyUpdates(session: s) >= 10)
    }

    /// Reads of large values: a handful of client packets per RPC, dozens from the server. Key
    /// updates start only at the client, so it counts what its packets ask the server to seal.
    @Test("the server's packets count towards key updates: large responses to small requests roll the keys")
    func keyUpdatesCountServerPackets() throws {
        let credentials = try TestCredentials()
        var config = RpcConfig.encrypted()
        config.keyUpdatePackets = 200
        let pair = try Pair(config: config, tls: credentials.config("node-0"))
        let s = try pair.connect()
        let e = pair.client.endpoint
        let size = 50_000  // 35 packets
        for _ in 0..<20 {
            let request = e.allocate(size: 4)!
            request.data.storeBytes(of: UInt32(size), as: UInt32.self)
            let response = e.allocate(size: size)!
            var done: Completion? = nil
            try e.enqueueRequest(session: s, type: TestRequest.sized, request: request, response: response) { done = $0 }
            #expect(pair.pump { done != nil })
            #expect(done?.status == .ok && done?.response.size == size)
            if let bytes = done?.response.bytes {
                #expect((0..<size).allSatisfy { bytes[$0] == UInt8(truncatingIfNeeded: $0 &* 7) })
            }
            e.free(request)
            e.free(response)
        }
        // About 700 server packets against some 40 of the client's: 3 updates or so at 200.
        #expect(pair.client.stats.packetsSent < 200, "\(pair.client.stats.packetsSent) client packets")
        #expect(pair.client.endpoint.keyUpdates(session: s) >= 2)
    }

    @Test("the start-up calibration finds a threshold between two packet sizes")
    func calibration() throws {
        let nexus = try Nexus(aesWorkers: 1)
        defer { nexus.shutdown() }
        let result = nexus.aesPool!.calibrate(.ipsecMB)
        #expect(result.handoffNs > 0)
        #expect(result.inlineNs.count > 5)
        // Sealing cost grows with size.
        #expect(result.inlineNs.last!.1 > result.inlineNs.first!.1)
        #expect(result.threshold == Int.max || result.inlineNs.contains { $0.0 == result.threshold })
    }
}

#if canImport(Foundation)
import Foundation

@Suite("Handshake refusal with real tools")
struct OpenSSLCommandLineTests {
    /// The `openssl s_client` check from the issue, with the real command when it is installed.
    @Test(
        "openssl s_client without a certificate gets no session",
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl")))
    func sClientWithoutCertificate() throws {
        let credentials = try TestCredentials()
        let nexus = try Nexus(tls: credentials.config("node-0"))
        defer { nexus.shutdown() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = [
            "s_client", "-connect", "127.0.0.1:\(nexus.port)", "-CAfile", credentials.directory + "/ca.pem", "-tls1_3",
            "-quiet",
        ]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        try process.run()
        // Whatever it sends after its handshake, the server has already refused it.
        input.fileHandleForWriting.write(Data(repeating: 0x41, count: 64))
        try? input.fileHandleForWriting.close()
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { process.terminate() }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus != 0 || text.contains("alert"), "\(text)")
        #expect(text.contains("certificate required") || text.contains("alert"), "\(text)")
        let wait = Date().addingTimeInterval(2)
        while nexus.handshakeRefusals == 0 && Date() < wait { usleep(1_000) }
        #expect(nexus.handshakeRefusals >= 1)
    }
}
#endif
