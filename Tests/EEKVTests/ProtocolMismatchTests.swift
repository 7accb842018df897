import EEKV
import EERPC
import Synchronization
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

    /// A node from before the `scanResumable` flag refuses it as a malformed scan; the client
    /// asks again without it, so scans work while a cluster is being upgraded.
    @Test("a scan reaching a node that predates the resumable flag asks again without it")
    func olderNodeScans() throws {
        let refusals = Atomic<Int>(0)
        let node = try StandInNode { nexus in
            try nexus.register(type: KVProtocol.readType) { handle in
                // The node of before: any flag but scanHasEnd and scanAfterStart is malformed.
                var r = ByteReader(handle.request)
                guard r.u8() == KVOperation.scan.rawValue, let sl = r.u16(), r.take(Int(sl)) != nil, let flags = r.u8()
                else { return }
                var w = ByteWriter(handle.preallocatedResponse)
                if flags & ~(KVProtocol.scanHasEnd | KVProtocol.scanAfterStart) != 0 {
                    refusals.add(1, ordering: .relaxed)
                    w.u8(KVStatus.badRequest.rawValue)
                    _ = Array("malformed scan".utf8).withUnsafeBytes { w.bytes($0) }
                } else {
                    w.u8(KVStatus.ok.rawValue)
                    w.u32(1)
                    w.u8(0)
                    w.u16(1)
                    _ = [UInt8(0x6B)].withUnsafeBytes { w.bytes($0) }
                    w.u32(1)
                    _ = [UInt8(0x76)].withUnsafeBytes { w.bytes($0) }
                }
                var response = handle.preallocatedResponse
                response.resize(to: w.count)
                handle.respond(response)
            }
        }
        defer { node.shutdown() }
        let client = try KVClient(config: try node.config, tls: nil, timeoutSeconds: 5)
        for _ in 0..<2 {
            let rows = try client.scan(from: [], limit: 10)
            #expect(rows.map(\.0) == [[0x6B]] && rows.map(\.1) == [[0x76]])
        }
        #expect(refusals.load(ordering: .relaxed) == 1, "the second scan leaves the flag out at once")
    }
}
