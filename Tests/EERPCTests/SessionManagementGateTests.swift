import CCryptoShims
import CSystemShims
@testable import EERPC
import Glibc
import Synchronization
import Testing

/// Before a session-management peer has authenticated, anyone can connect: the listener reads
/// only so many connections at once and gives each a bounded time, so neither a flood nor a
/// peer trickling bytes can hold it.
@Suite("Session-management admission", .serialized)
struct SessionManagementGateTests {
    /// Whether the peer closes `fd` within `ms` (a read then returns 0 or fails).
    func closedByPeer(_ fd: Int32, withinMs ms: Int32) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&p, 1, ms) == 1 else { return false }
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, Int32(MSG_DONTWAIT)) <= 0
    }

    @Test("past the limit connections are closed unread, a trickling one at its deadline, and then a client connects")
    func boundedAndTimed() throws {
        let credentials = try TestCredentials()
        let nexus = try Nexus(
            tls: credentials.config("node-0"), maxPendingSessionManagement: 4, maxPendingSessionManagementPerSource: 4)
        try registerTestHandlers(nexus)
        defer { nexus.shutdown() }
        let server = try Rpc(nexus: nexus, id: 1, transport: try UDPTransport(), config: .encrypted())
        var ip: UInt32 = 0
        #expect(ee_resolve_ipv4("127.0.0.1", &ip) == 0)
        let start = ee_now_ns()
        let silent = (0..<3).map { _ in ee_tcp_connect(ip, nexus.port, 1_000) }
        let trickler = ee_tcp_connect(ip, nexus.port, 1_000)
        defer { for fd in silent + [trickler] where fd >= 0 { close(fd) } }
        #expect((silent + [trickler]).allSatisfy { $0 >= 0 })
        // The four take the listener's places; a fifth is closed at once.
        usleep(200_000)
        let extra = ee_tcp_connect(ip, nexus.port, 1_000)
        defer { if extra >= 0 { close(extra) } }
        #expect(closedByPeer(extra, withinMs: 1_000), "a connection past the limit is closed unread")
        #expect(nexus.sessionManagementOverflows == 1)
        // A TLS record header announcing 512 bytes, then a byte every 200 ms: each read gets
        // something well inside its 2 s timeout, so only the deadline from accept ends it.
        let header: [UInt8] = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01]
        var closedAt: UInt64?
        for (i, byte) in (header + [UInt8](repeating: 0, count: 100)).enumerated() {
            var b = byte
            if send(trickler, &b, 1, Int32(MSG_NOSIGNAL)) < 0 || closedByPeer(trickler, withinMs: i < header.count ? 0 : 200) {
                closedAt = ee_now_ns()
                break
            }
        }
        let seconds = closedAt.map { Double($0 - start) / 1e9 }
        // Its deadline is 2 s after accept; the bytes would have kept it 20 s (slack for a busy machine).
        #expect(seconds.map { $0 > 1.5 && $0 < 8 } == true, "trickler closed after \(String(describing: seconds)) s")
        #expect(nexus.sessionManagementTimeouts >= 1)
        for fd in silent { #expect(closedByPeer(fd, withinMs: 2_000), "a silent connection is closed by its deadline") }
        // Cut off for want of time, they count as timeouts only: not as refused or malformed.
        #expect(nexus.handshakeRefusals == 0, "\(nexus.lastHandshakeRefusal ?? "")")
        #expect(nexus.sessionManagementMalformed == 0)
        // The places are free again: a client with a certificate connects.
        #expect(try clientConnects(credentials, to: nexus, server: server))
    }
}

extension SessionManagementGateTests {
    /// Loopback answers on all of 127/8, so other source addresses stand in for other hosts.
    @Test("one source address holds at most its share of the places, and other sources still get in")
    func perSourceShare() throws {
        let credentials = try TestCredentials()
        let nexus = try Nexus(
            tls: credentials.config("node-0"), maxPendingSessionManagement: 8, maxPendingSessionManagementPerSource: 2)
        try registerTestHandlers(nexus)
        defer { nexus.shutdown() }
        let server = try Rpc(nexus: nexus, id: 1, transport: try UDPTransport(), config: .encrypted())
        var ip: UInt32 = 0, flooder: UInt32 = 0, other: UInt32 = 0
        #expect(ee_resolve_ipv4("127.0.0.1", &ip) == 0)
        #expect(ee_resolve_ipv4("127.0.0.2", &flooder) == 0)
        #expect(ee_resolve_ipv4("127.0.0.3", &other) == 0)
        let silent = (0..<2).map { _ in ee_tcp_connect_from(flooder, ip, nexus.port, 1_000) }
        defer { for fd in silent where fd >= 0 { close(fd) } }
        #expect(silent.allSatisfy { $0 >= 0 })
        usleep(200_000)
        let third = ee_tcp_connect_from(flooder, ip, nexus.port, 1_000)
        defer { if third >= 0 { close(third) } }
        #expect(third >= 0)
        #expect(closedByPeer(third, withinMs: 1_000), "a third from the same source is closed unread")
        #expect(nexus.sessionManagementSourceOverflows == 1)
        #expect(nexus.sessionManagementOverflows == 1)
        let elsewhere = ee_tcp_connect_from(other, ip, nexus.port, 1_000)
        defer { if elsewhere >= 0 { close(elsewhere) } }
        #expect(elsewhere >= 0)
        #expect(!closedByPeer(elsewhere, withinMs: 300), "another source's connection is read")
        for fd in silent { #expect(!closedByPeer(fd, withinMs: 0), "the first two are still being read") }
        // A client with a certificate, from a third address, connects while the flood holds its share.
        #expect(try clientConnects(credentials, to: nexus, server: server))
        #expect(nexus.sessionManagementOverflows == 1)
        // Once the flood's places are released (their deadline), its source may connect again.
        for fd in silent { #expect(closedByPeer(fd, withinMs: 4_000), "closed by its deadline") }
        // Their readers release the places once their reads return.
        let deadline = ee_now_ns() + 2_000_000_000
        while nexus.sessionManagementReaders > 0 && ee_now_ns() < deadline { usleep(1_000) }
        let later = ee_tcp_connect_from(flooder, ip, nexus.port, 1_000)
        defer { if later >= 0 { close(later) } }
        #expect(later >= 0)
        #expect(!closedByPeer(later, withinMs: 300), "its places came back")
        #expect(nexus.sessionManagementOverflows == 1)
    }

    /// The listener may accept a connection while the Nexus is being torn down, and its reader
    /// then ran on for up to the read timeout after `shutdown()` (and a deinit) had returned.
    @Test("shutdown ends the reads of silent connections and returns only once their readers are gone")
    func shutdownEndsReaders() throws {
        let credentials = try TestCredentials()
        let nexus = try Nexus(tls: credentials.config("node-0"))
        var ip: UInt32 = 0
        #expect(ee_resolve_ipv4("127.0.0.1", &ip) == 0)
        let silent = (0..<3).map { _ in ee_tcp_connect(ip, nexus.port, 1_000) }
        defer { for fd in silent where fd >= 0 { close(fd) } }
        #expect(silent.allSatisfy { $0 >= 0 })
        let deadline = ee_now_ns() + 1_000_000_000
        while nexus.sessionManagementReaders < 3 && ee_now_ns() < deadline { usleep(1_000) }
        #expect(nexus.sessionManagementReaders == 3)
        let start = ee_now_ns()
        nexus.shutdown()
        let ms = Double(ee_now_ns() - start) / 1e6
        #expect(nexus.sessionManagementReaders == 0)
        // Well before the 2 s the reads would otherwise wait.
        #expect(ms < 1_000, "shutdown took \(ms) ms")
        for fd in silent { #expect(closedByPeer(fd, withinMs: 200)) }
    }
}

@Suite("Malformed session-management requests")
struct MalformedSessionManagementTests {
    /// A session-management connection to `nexus` as client-0, authenticated and asking for
    /// nothing yet, for writing raw bytes; nil (recorded) if it could not be made.
    private func clientConnection(_ credentials: TestCredentials, to nexus: Nexus) throws -> SessionManagementConnection? {
        var ip: UInt32 = 0
        #expect(ee_resolve_ipv4("127.0.0.1", &ip) == 0)
        let contexts = try TLSContexts(credentials.config("client-0"))
        guard case .success(let connection) = SessionManagementConnection.connect(
            ip: ip, port: nexus.port, timeoutMs: 2_000, contexts: contexts, peerName: "node-0",
            gate: SessionManagementGate(limit: 1, deadlineMs: 60_000), deadlineMs: 60_000)  // a gate nobody watches
        else {
            Issue.record("no TLS connection")
            return nil
        }
        return connection
    }

    @Test("an authenticated peer's garbage request is counted and closed, and the node keeps serving")
    func garbageIsCounted() throws {
        let credentials = try TestCredentials()
        let nexus = try Nexus(tls: credentials.config("node-0"))
        try registerTestHandlers(nexus)
        defer { nexus.shutdown() }
        let server = try Rpc(nexus: nexus, id: 1, transport: try UDPTransport(), config: .encrypted())
        for garbage in [[UInt8](repeating: 0x5A, count: 64), [UInt8](repeating: 0, count: 64)] {
            guard let connection = try clientConnection(credentials, to: nexus) else { return }
            #expect(garbage.withUnsafeBytes { ee_tls_write_all(connection.tls, $0.baseAddress, $0.count) } == 0)
            // Closed, not left to time out.
            if case .failure(let error) = connection.receiveOrExplain() {
                #expect(error != .timedOut, "\(error)")
            } else {
                Issue.record("an answer to garbage")
            }
            connection.close()
        }
        let deadline = ee_now_ns() + 2_000_000_000
        while nexus.sessionManagementMalformed < 2 && ee_now_ns() < deadline { usleep(1_000) }
        #expect(nexus.sessionManagementMalformed == 2)
        #expect(try clientConnects(credentials, to: nexus, server: server))
    }

    /// Peers of different protocol versions cannot share a session (the data plane changes with
    /// the version). A request of another version is answered in the node's own version with
    /// `versionMismatch`, which the peer reads as foreign and reports with both numbers, and the
    /// node records why it refused.
    @Test("a request of another protocol version is refused with the node's version, and recorded")
    func otherVersionIsRefused() throws {
        let credentials = try TestCredentials()
        let nexus = try Nexus(tls: credentials.config("node-0"))
        try registerTestHandlers(nexus)
        defer { nexus.shutdown() }
        let server = try Rpc(nexus: nexus, id: 1, transport: try UDPTransport(), config: .encrypted())
        guard let connection = try clientConnection(credentials, to: nexus) else { return }
        let request = SessionManagementMessage(
            kind: .connectRequest, transport: .udp, token: 7, clientRpcID: 2, serverRpcID: 1, clientSession: 0,
            mtu: UInt32(Wire.defaultMTU), cryptoKeyLength: 16)
        var bytes = [UInt8](repeating: 0, count: SessionManagementMessage.size)
        bytes.withUnsafeMutableBytes { request.encode(to: $0.baseAddress!) }
        bytes[4] = SessionManagementMessage.version - 1
        #expect(bytes.withUnsafeBytes { SessionManagementMessage.foreignVersion($0.baseAddress!) } == bytes[4])
        #expect(bytes.withUnsafeBytes { ee_tls_write_all(connection.tls, $0.baseAddress, $0.count) } == 0)
        let answer = connection.receiveOrExplain()
        connection.close()
        guard case .success(let reply) = answer else {
            Issue.record("no answer: \(answer)")
            return
        }
        #expect(reply.error == .versionMismatch)
        #expect(nexus.handshakeRefusals == 1)
        #expect(nexus.lastHandshakeRefusal?.contains("version \(bytes[4])") == true)
        #expect(nexus.sessionManagementMalformed == 0)
        // The answer, to a peer of that other version, is foreign: it reports `.versionMismatch`.
        var encoded = [UInt8](repeating: 0, count: SessionManagementMessage.size)
        encoded.withUnsafeMutableBytes { reply.encode(to: $0.baseAddress!) }
        #expect(encoded.withUnsafeBytes { SessionManagementMessage.foreignVersion($0.baseAddress!) } == nil)
        #expect(try clientConnects(credentials, to: nexus, server: server))
    }

    /// Request numbers go out in clear in every packet header; the token authorises a disconnect.
    /// The first request number is therefore a one-way function of the token, not its bits.
    @Test("a session's request numbers do not show its token")
    func requestBaseHidesToken() {
        var random = SystemRandomNumberGenerator()
        var bases = Set<UInt64>()
        for _ in 0..<1_000 {
            let token = random.next() as UInt64
            let base = Session.requestBase(token: token)
            #expect(base & 7 == 0 && base < 1 << 40, "slots 0-7 and 48-bit request numbers")
            #expect(base != token & 0x0000_00FF_FFFF_FFF8, "the token's own bits")
            #expect(Session.requestBase(token: token) == base, "both ends derive the same base")
            bases.insert(base)
        }
        #expect(bases.count == 1_000)
        // HMAC-SHA256(key: the token's 8 bytes, little-endian; "eeRPC request base" ‖ 0x01), its
        // first 8 bytes little-endian, masked: worked out apart from the code. Both ends of a
        // session must agree on it, whatever builds them.
        #expect(Session.requestBase(token: 0x1234_5678_90AB_CDEF) == 0x66_8F08_F270)
    }
}

/// A server that reads the request, then answers one byte every 100 ms: each read returns well
/// within its timeout, so only a deadline for the whole exchange ends it.
@Suite("Session management, client side")
struct SessionManagementClientDeadlineTests {
    @Test("a server answering a byte at a time cannot hold a connect past the exchange's deadline")
    func drippingServer() throws {
        let listener = ee_tcp_listen(0x7F00_0001, 0)
        let port = UInt16(ee_socket_port(listener))
        let stop = Atomic<Bool>(false)
        let server = Threads.spawn(name: "dripper") {
            let fd = accept(listener, nil, nil)
            guard fd >= 0 else { return }
            var request = [UInt8](repeating: 0, count: SessionManagementMessage.size)
            _ = recv(fd, &request, request.count, Int32(MSG_WAITALL))
            var byte: UInt8 = 0x45
            for _ in 0..<SessionManagementMessage.size where !stop.load(ordering: .relaxed) {
                usleep(100_000)
                if send(fd, &byte, 1, Int32(MSG_NOSIGNAL)) != 1 { break }
            }
            close(fd)
        }
        defer {
            stop.store(true, ordering: .relaxed)
            ee_shutdown(listener)
            server.join()
            close(listener)
        }
        let nexus = try Nexus()
        var config = RpcConfig.plaintext
        config.sessionManagementTimeoutMs = 300  // each read; the exchange gets 3 × that
        let rpc = try Rpc(nexus: nexus, id: 2, transport: try UDPTransport(), config: config)
        let start = ee_now_ns()
        #expect(throws: SessionError.self) { _ = try rpc.connect(host: "127.0.0.1", port: port, remoteRpcID: 1) }
        let seconds = Double(ee_now_ns() - start) / 1e9
        // Without the deadline the 64 bytes take 6.4 s to drip in.
        #expect(seconds < 3, "the connect took \(seconds) s")
    }
}
