import EEKV
import EERPC
import Glibc
import Synchronization

/// An eeRPC server on loopback standing in for an eekv node: the handlers `register` gives it,
/// its dispatch loop on a thread of its own, and a plaintext cluster config that points a client
/// at it. For clients meeting nodes that answer slowly or not as eekv.
final class StandInNode: @unchecked Sendable {
    let nexus: Nexus
    final class Flag: Sendable { let stop = Atomic<Bool>(false) }
    let flag = Flag()
    private var threads: [JoinableThread] = []

    init(register: (Nexus) throws -> Void = { _ in }) throws {
        nexus = try Nexus(backgroundThreads: 0, aesWorkers: 0)
        try register(nexus)
        let rpc = Unchecked(try Rpc(nexus: nexus, id: 0, transport: try UDPTransport(), config: .plaintext))
        spawn(name: "stand-in-node") {
            if !rpc.value.runOnce() { rpc.value.waitForTraffic(timeoutMs: 10) }
        }
    }

    /// Runs `step` over and over on a thread of its own until ``shutdown()``.
    func spawn(name: String, _ step: @escaping @Sendable () -> Void) {
        threads.append(
            Threads.spawn(name: name) { [flag] in
                while !flag.stop.load(ordering: .acquiring) { step() }
            })
    }

    func shutdown() {
        flag.stop.store(true, ordering: .releasing)
        for t in threads { t.join() }
        nexus.shutdown()
    }

    var config: ClusterConfig {
        get throws {
            try ClusterConfig.parse(
                """
                [cluster]
                crypto = "none"
                [[node]]
                id = 0
                host = "127.0.0.1"
                port = \(nexus.port)
                udp_port = \(freePorts(1)[0])
                threads = 1
                """, source: "/tmp/stand-in-node.toml")
        }
    }
}
