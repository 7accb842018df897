import EEKV
import EERPC
import Testing

/// A client that reaches something other than an eekv node of its own protocol (an eeRPC server
/// without eekv's request types: another version, or another service) says so, rather than
/// reporting eeRPC's bare status.
@Suite("Protocol mismatch")
struct ProtocolMismatchTests {
    @Test("a node without eekv's request types is named as not speaking this protocol, every time")
    func nodeWithoutHandlers() throws {
        let node = try StandInNode()  // no handlers
        defer { node.shutdown() }
        let config = try node.config
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
