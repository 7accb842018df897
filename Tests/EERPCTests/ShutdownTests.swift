import EERPC
import Testing

@Suite("Clean shutdown")
struct ShutdownTests {
    /// Ports are the observable part of "closed": binding the same port again succeeds only if
    /// the previous owner closed its socket. (File-descriptor counts are not usable here: other
    /// suites run in parallel in the same process.)
    @Test("Rpcs and the Nexus release their sockets and threads, and can be recreated")
    func recreate() throws {
        var nexusPort: UInt16 = 0
        var serverPort: UInt16 = 0
        var clientPort: UInt16 = 0
        for round in 0..<3 {
            let nexus = try Nexus(port: nexusPort, backgroundThreads: 2)
            try registerTestHandlers(nexus)
            do {
                let server = try Rpc(nexus: nexus, id: 1, transport: try UDPTransport(port: serverPort), config: .plaintext)
                let client = try Rpc(nexus: nexus, id: 2, transport: try UDPTransport(port: clientPort), config: .plaintext)
                serverPort = server.transport.port
                clientPort = client.transport.port
                let s = try client.endpoint.createSession(host: "127.0.0.1", port: nexus.port, remoteRpcID: 1)
                let deadline = DispatchTime.nowNs + 5_000_000_000
                while client.endpoint.sessionState(s) != .connected && DispatchTime.nowNs < deadline {
                    client.runOnce()
                    server.runOnce()
                }
                #expect(client.endpoint.sessionState(s) == .connected, "round \(round)")
                // Leave a background request in flight: the server's teardown must wait for it.
                let e = client.endpoint
                let request = e.allocate(size: 100)!
                let response = e.allocate(size: 100)!
                try e.enqueueRequest(session: s, type: TestRequest.backgroundEcho, request: request, response: response) { _ in }
                for _ in 0..<20 {
                    client.runOnce()
                    server.runOnce()
                }
            }
            nexusPort = nexus.port
            nexus.shutdown()
            nexus.shutdown()  // idempotent
        }
    }
}
