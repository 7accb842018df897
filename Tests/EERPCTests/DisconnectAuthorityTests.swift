@testable import EERPC
import Testing

/// A disconnect names its session by token. The token travels only inside TLS, but a cluster
/// member who learned another's could otherwise end that session: the server also asks for the
/// certificate that made it.
@Suite("Who may disconnect a session", .serialized)
struct DisconnectAuthorityTests {
    @Test("a disconnect with a session's token from another certificate is refused, and the owner's is not")
    func sameCertificateOnly() throws {
        let credentials = try TestCredentials()
        let pair = try securePair(credentials)
        let s = try pair.connect()
        let endpoint = pair.client.endpoint
        // What the owner would send, sent by a peer holding client-0's certificate instead.
        let stolen = SessionManagementMessage(
            kind: .disconnectRequest, transport: endpoint.transportKind, token: endpoint.sessions[s].token,
            clientRpcID: endpoint.id, serverRpcID: pair.server.id, clientSession: UInt16(s),
            serverSession: endpoint.sessions[s].remoteNumber, mtu: UInt32(endpoint.mtu), route: endpoint.localRoute)
        let intruderNexus = try Nexus(tls: credentials.config("client-0"))
        defer { intruderNexus.shutdown() }
        let intruder = try Rpc(nexus: intruderNexus, id: 9, transport: try UDPTransport(), config: .encrypted())
        for serverSession in [stolen.serverSession, SessionManagementMessage.unknownSession] {
            var request = stolen
            request.serverSession = serverSession  // also by token alone, as a client that gave up sends it
            let refusedBefore = pair.server.stats.disconnectsRefused
            intruderNexus.sendSessionManagement(
                request, to: 0x7F00_0001, port: pair.nexus.port, peerName: "node-0", from: intruder.endpoint,
                session: nil)
            #expect(pair.pump(timeoutNs: 5_000_000_000) { pair.server.stats.disconnectsRefused == refusedBefore + 1 })
        }
        #expect(pair.server.endpoint.sessionCount(role: .server) == 1)
        let results = try runEchoLoad(pair, sessions: [s], total: 20, window: 4, sizes: [64, 3_000])
        #expect(results.ok == 20, "the session goes on")
        try endpoint.destroySession(s)
        #expect(pair.pump { endpoint.sessionState(s) == .free })
        #expect(pair.pump { pair.server.endpoint.sessionCount(role: .server) == 0 }, "its owner ends it")
        #expect(pair.server.stats.disconnectsRefused == 2)
        // The owner's best-effort disconnect, which names the session by token alone (sent when
        // a client gives a session up before or without an answer), still ends it.
        let again = try pair.connect()
        endpoint.sendBestEffortDisconnect(session: again)
        #expect(pair.pump { pair.server.endpoint.sessionCount(role: .server) == 0 })
        #expect(pair.server.stats.disconnectsRefused == 2)
    }
}
