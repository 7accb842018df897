import EEKV
import EERPC
import Glibc
import Synchronization
import Testing

/// A client that reaches something other than an eekv node of its own protocol (an eeRPC server
/// without eekv's request types: another version, or another service) says so, rather than
/// reporting eeRPC's bare status.
@Suite("Protocol mismatch")
struct ProtocolMismatchTests {
    /// An eeRPC server with no handlers on loopback, its dispatch loop on a thread of its own.
    final class BareNode: @unchecked Sendable {
        let nexus: Nexus
        final class Flag: Sendable { let stop = Atomic<Bool>(false) }
        let flag = Flag()
        var thread: JoinableThread?

        init() throws {
            nexus = try Nexus(backgroundThreads: 0, aesWorkers: 0)
            let rpc = Unchecked(try Rpc(nexus: nexus, id: 0, transport: try UDPTransport(), config: .plaintext))
            thread = Threads.spawn(name: "bare-node") { [flag] in
                while !flag.stop.load(ordering: .acquiring) {
                    if !rpc.value.runOnce() { rpc.value.waitForTraffic(timeoutMs: 10) }
                }
            }
        }

        func shutdown() {
            flag.stop.store(true, ordering: .releasing)
            thread?.join()
            nexus.shutdown()
        }
    }

    @Test("a node without eekv's request types is named as not speaking this protocol, every time")
    func nodeWithoutHandlers() throws {
        let node = try BareNode()
        defer { node.shutdown() }
        let config = try ClusterConfig.parse(
            """
            [cluster]
            crypto = "none"
            [[node]]
            id = 0
            host = "127.0.0.1"
            port = \(node.nexus.port)
            udp_port = \(freePorts(1)[0])
            threads = 1
            """, source: "/tmp/bare-node.toml")
        let client = try KVClient(config: config, tls: nil, timeoutSeconds: 5)
        // Twice: the refusal leaves the session up, so the second call fails the same way
        // instead of timing out.
        for _ in 0..<2 {
            do {
                let value = try client.get(Array("key".utf8))
                Issue.record("a node without handlers answered a get: \(String(describing: value))")
            } catch let error as KVClientError {
                guard case .protocolError(let message) = error else {
                    Issue.record("expected a protocol error, got \(error)")
                    continue
                }
                #expect(message.contains("node 0 does not serve eekv request type \(KVProtocol.readType)"), "\(message)")
                #expect(message.contains("another version of the eekv protocol"), "\(message)")
            }
        }
    }
}
