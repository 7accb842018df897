import CSystemShims
import EERPC
import Glibc
import Testing

@Suite("Loss, duplication, reordering and hostile input")
struct FaultToleranceTests {
    /// 5 % drop, 5 % duplicate and 5 % reorder on every received packet at both ends, so both
    /// directions suffer all three.
    @Test("every RPC completes and every handler runs exactly once despite 5 % faults each way")
    func faultyNetwork() throws {
        let plan = FaultPlan(drop: 0.05, duplicate: 0.05, reorder: 0.05)
        var config = RpcConfig.plaintext
        config.retransmitTimeoutNs = 2_000_000  // loopback round trips are ~10 µs
        let pair = try Pair(
            server: FaultInjectingTransport(try UDPTransport(), plan: plan, seed: 1),
            client: FaultInjectingTransport(try UDPTransport(), plan: plan, seed: 2), config: config)
        var sessions: [Int] = []
        for _ in 0..<4 { sessions.append(try pair.connect()) }
        let total = 3_000
        let results = try runEchoLoad(
            pair, sessions: sessions, total: total, window: 12, sizes: [8, 64, 1_400, 5_000, 30_000],
            type: TestRequest.countingEcho)
        #expect(results.ok == total)
        #expect(results.mismatched == 0)
        // Exactly once: every request id ran its handler one time, no more, no less.
        #expect(pair.counter.counts.count == total)
        #expect(pair.counter.counts.values.allSatisfy { $0 == 1 })
        #expect(pair.server.stats.requestsHandled == UInt64(total))
        // The faults really happened, and the protocol really recovered from them.
        let serverFaults = pair.server.transport.faults
        let clientFaults = pair.client.transport.faults
        for f in [serverFaults, clientFaults] {
            #expect(f.dropped > 100)
            #expect(f.duplicated > 100)
            #expect(f.reordered > 100)
        }
        #expect(pair.client.stats.retransmissions > 0)
        #expect(pair.server.stats.responsesResent > 0)
        #expect(pair.server.stats.drops(.outOfOrder) > 0)
    }

    /// An application that polls its Rpc only now and then (a CLI, a client that computes between
    /// requests, one of several clients driven in turn) must not see its first request after a
    /// pause taken for lost: the loop's clock is older than the request.
    @Test("a request enqueued after a pause longer than the retransmission timeout is not resent")
    func enqueueAfterPause() throws {
        var config = RpcConfig.plaintext
        config.retransmitTimeoutNs = 2_000_000
        let pair = try Pair(config: config)
        let s = try pair.connect()
        for _ in 0..<5 {
            usleep(20_000)  // ten timeouts without polling
            #expect(try echoOnce(pair, session: s, bytes: Array(repeating: 7, count: 3_000))?.0 == .ok)
        }
        #expect(pair.client.stats.retransmissions == 0)
        #expect(pair.server.stats.responsesResent == 0)
    }

    @Test("hostile datagrams are dropped and counted, and the server keeps serving")
    func hostileDatagrams() throws {
        let pair = try Pair()
        let s = try pair.connect()
        let port = pair.server.transport.port
        let attacker = ee_udp_open(0x7F00_0001, 0, 0)
        try #require(attacker >= 0)
        defer { close(attacker) }
        var address = sockaddr_in()
        withUnsafeMutableBytes(of: &address) { ee_make_sockaddr_in($0.baseAddress, 0x7F00_0001, port) }
        func send(_ bytes: [UInt8]) {
            _ = bytes.withUnsafeBytes { b in
                withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(attacker, b.baseAddress, b.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                    }
                }
            }
        }
        func header(_ h: PacketHeader, payload: Int) -> [UInt8] {
            var bytes = [UInt8](repeating: 0xAB, count: Wire.headerSize + payload)
            bytes.withUnsafeMutableBytes { h.encode(to: $0.baseAddress!) }
            return bytes
        }
        var rng = SplitMix64(seed: 99)
        var sent: [DropReason: Int] = [:]
        // Random bytes whose first byte is not the magic.
        for _ in 0..<200 {
            var bytes = (0..<Int(rng.next() % 1400 + 16)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            if bytes[0] == Wire.magic { bytes[0] = 0 }
            send(bytes)
        }
        sent[.badMagic, default: 0] += 200
        // Truncated headers (a zero-length datagram included).
        for n in 0..<Wire.headerSize { send([UInt8](repeating: Wire.magic, count: n)) }
        sent[.truncated] = Wire.headerSize
        // Well-formed headers for session numbers that do not exist.
        for n in [7, 200, 255, 1000, 65535] as [UInt16] {
            send(header(PacketHeader(type: .request, destSession: n, requestType: 1, messageSize: 8, requestNumber: 8, packetNumber: 0), payload: 8))
        }
        sent[.unknownSession] = 5
        // Packets a server never accepts on a live session (responses, credit returns).
        send(header(PacketHeader(type: .response, destSession: 0, requestType: 1, messageSize: 8, requestNumber: 8, packetNumber: 0), payload: 8))
        send(header(PacketHeader(type: .creditReturn, destSession: 0, requestType: 1, messageSize: 0, requestNumber: 8, packetNumber: 0), payload: 0))
        sent[.wrongDirection] = 2
        // A request whose payload length does not match its message size.
        send(header(PacketHeader(type: .request, destSession: 0, requestType: 1, messageSize: 100, requestNumber: 8, packetNumber: 0), payload: 50))
        sent[.badPayloadLength] = 1
        // A request packet beyond the end of its message.
        send(header(PacketHeader(type: .request, destSession: 0, requestType: 1, messageSize: 8, requestNumber: 8, packetNumber: 1), payload: 8))
        sent[.badPacketNumber] = 1
        // A well-formed request whose number is neither the next nor the current one on its slot
        // (stale, or forged by someone who has not seen the session's traffic).
        send(header(PacketHeader(type: .request, destSession: 0, requestType: 1, messageSize: 8, requestNumber: 8, packetNumber: 0), payload: 8))
        sent[.outOfOrder] = 1
        // A datagram longer than the MTU.
        send([UInt8](repeating: Wire.magic, count: Wire.defaultMTU + 100))
        sent[.badPayloadLength, default: 0] += 1

        let expected = UInt64(sent.values.reduce(0, +))
        #expect(pair.pump(timeoutNs: 5_000_000_000) { pair.server.stats.totalDrops >= expected })
        for (reason, count) in sent {
            #expect(pair.server.stats.drops(reason) == UInt64(count), "\(reason.name)")
        }
        #expect(pair.server.stats.requestsHandled == 0)
        // Still serving.
        let results = try runEchoLoad(pair, sessions: [s], total: 100, window: 8, sizes: [32, 3_000])
        #expect(results.ok == 100)
    }

    @Test("a lost session-management answer does not leave a half-open client session")
    func connectTimeout() throws {
        // A listener that accepts but never answers.
        let fd = ee_tcp_listen(0x7F00_0001, 0)
        defer { close(fd) }
        let port = UInt16(ee_socket_port(fd))
        var config = RpcConfig.plaintext
        config.sessionManagementTimeoutMs = 200
        let pair = try Pair(config: config)
        let s = try pair.client.endpoint.createSession(host: "127.0.0.1", port: port, remoteRpcID: 1)
        #expect(pair.pump { pair.client.endpoint.sessionState(s) != .connecting })
        #expect(pair.client.endpoint.sessionFailure(s) == .timedOut)
    }
}
