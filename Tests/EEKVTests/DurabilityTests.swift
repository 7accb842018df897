import EEKV
import EERPC
import Foundation
import Testing

/// Polls until a get answers (key absent or present), or gives up.
func waitUntilServing(_ config: ClusterConfig) throws -> KVClient {
    let deadline = Date().addingTimeInterval(30)
    while true {
        do {
            let client = try KVClient(config: config, tls: nil, timeoutSeconds: 1)
            _ = try client.get(Array("probe".utf8))
            return client
        } catch {
            if Date() > deadline { throw error }
            usleep(100_000)
        }
    }
}

@Suite("Durability", .serialized)
struct DurabilityTests {
    /// SIGKILL the node in the middle of a put load, restart it on the same data, and find every
    /// put that was acknowledged: an acknowledgement comes only after the group commit. (A killed
    /// process leaves the page cache to the kernel, so this proves acknowledgement after commit,
    /// not after fsync; that needs the machine to lose power, which a test here cannot do.)
    @Test("every acknowledged put survives a SIGKILL in the middle of the load")
    func killDuringPuts() throws {
        let dir = TempDirectory()
        let path = dir.path + "/cluster.toml"
        try oneNodeConfig(crypto: "none", durability: "fsync").write(toFile: path, atomically: true, encoding: .utf8)
        let config = try ClusterConfig.load(path: path)
        let data = dir.path + "/data"

        let first = try ServerProcess(config: path, data: data)
        defer { first.terminate() }
        var acknowledged: [Int] = []
        do {
            let client = try waitUntilServing(config)
            // Kill the server from another thread while puts are in flight.
            let killer = Thread {
                usleep(400_000)
                first.kill()
            }
            killer.start()
            for i in 0..<1_000_000 {
                do {
                    try client.put(Array("durable-\(i)".utf8), Array("value-\(i)".utf8))
                    acknowledged.append(i)
                } catch {
                    break  // the node is gone
                }
            }
        }
        #expect(acknowledged.count > 10, "the load ran before the kill")
        #expect(acknowledged.count < 1_000_000, "the kill interrupted the load")

        let second = try ServerProcess(config: path, data: data)
        defer { second.terminate() }
        let client = try waitUntilServing(config)
        var missing = 0
        for i in acknowledged where try client.get(Array("durable-\(i)".utf8)) != Array("value-\(i)".utf8) {
            missing += 1
        }
        #expect(missing == 0, "\(missing) of \(acknowledged.count) acknowledged puts were lost")
        // SIGTERM stops the node cleanly (exit status 0).
        second.terminate()
        #expect(second.process.terminationReason == .exit && second.process.terminationStatus == 0)
    }
}
