import CSystemShims
import EERPC
import Glibc
import Logging
import Synchronization

/// One eekv node: its store, a Nexus (TLS session management, AES pool, one background thread
/// that queues writes) and one pinned dispatch thread per core, each an Rpc with its own UDP port.
public final class KVNode: @unchecked Sendable {
    public struct Options: Sendable {
        public var dataDirectory: String
        public var threads: Int
        public var crypto: CryptoMode
        public var aesWorkers: Int
        public var durability: Durability
        /// CPUs to pin dispatch thread i to (i mod count); empty: CPUs 0, 1, ...
        public var cpus: [Int] = []
        /// How long a dispatch thread keeps polling without traffic before it sleeps in the kernel.
        public var idleSpinNs: UInt64 = 20_000
        /// The most the store may hold (its map), in bytes; writes that need more are refused.
        public var maxStoreBytes: Int = .max
        public init(dataDirectory: String, threads: Int, crypto: CryptoMode, aesWorkers: Int, durability: Durability) {
            self.dataDirectory = dataDirectory
            self.threads = threads
            self.crypto = crypto
            self.aesWorkers = aesWorkers
            self.durability = durability
        }
    }

    public let node: ClusterConfig.Node
    /// The cluster's data-plane MTU (every session of the cluster uses it).
    public let mtu: Int
    public let store: Store
    public let nexus: Nexus
    public let stats = KVServerStats()
    private let options: Options
    private let logger: Logger
    private let stopping = Atomic<Bool>(false)
    private let stoppingWrites = Atomic<Bool>(false)
    private let ready = Atomic<Int>(0)
    private var threads: [JoinableThread] = []
    /// The dispatch threads' endpoints, to wake them from an idle sleep when stopping.
    private let endpoints = Mutex<[RpcEndpoint]>([])
    private let failure = Mutex<(any Error)?>(nil)
    private let finishedThreadStats = Mutex(RpcStats())

    /// The dispatch threads' protocol counters (packets, drops by reason: tampered, forged or
    /// replayed packets among them), summed as each thread stops: complete once ``stop()``
    /// has returned. (Counters live on their dispatch threads, which alone may read them.)
    public var rpcStats: RpcStats { finishedThreadStats.withLock { $0 } }

    public init(config: ClusterConfig, nodeID: Int, options: Options, logger: Logger) throws {
        guard let node = config.node(id: nodeID) else {
            throw ClusterConfig.Error(description: "node \(nodeID) is not in \(config.source)")
        }
        // Clients route a key to dispatch thread slot % threads as the config says, so the node
        // must run exactly that many.
        guard options.threads == node.threads else {
            throw ClusterConfig.Error(
                description: "node \(nodeID) has threads = \(node.threads) in the config; run it with that many (clients route by it)")
        }
        self.node = node
        mtu = config.mtu
        self.options = options
        self.logger = logger
        store = try Store(
            directory: options.dataDirectory, durability: options.durability, maxMapSize: options.maxStoreBytes)
        nexus = try Nexus(
            host: node.host, port: node.port, backgroundThreads: 1,
            tls: options.crypto.encrypts ? config.tls(name: "node-\(nodeID)") : nil, aesWorkers: options.aesWorkers)
        try KVHandlers.register(on: nexus, writer: store.writer)
    }

    /// Starts the dispatch threads and returns once each has its Rpc and socket.
    public func start() throws {
        var resolved: UInt32 = 0
        guard ee_resolve_ipv4(node.host, &resolved) == 0 else {
            throw ClusterConfig.Error(description: "cannot resolve \(node.host)")
        }
        let ip = resolved
        for i in 0..<options.threads {
            // Nodes sharing a machine start from different CPUs.
            let cpu =
                options.cpus.isEmpty
                ? Threads.allowedCPU(node.id * options.threads + i) : options.cpus[i % options.cpus.count]
            let port = node.udpPort + UInt16(i)
            threads.append(
                Threads.spawn(name: "eekv-dispatch-\(i)") { [self] in
                    self.dispatchLoop(index: i, cpu: cpu, ip: ip, port: port)
                })
        }
        while ready.load(ordering: .acquiring) < options.threads {
            if let error = failure.withLock({ $0 }) {
                stop()
                throw error
            }
            usleep(1_000)
        }
        logger.info(
            "node \(node.id) serving",
            metadata: [
                "session_management": "\(node.host):\(node.port)", "udp_ports": "\(node.udpPort)-\(Int(node.udpPort) + options.threads - 1)",
                "crypto": "\(options.crypto.name)", "durability": "\(options.durability.rawValue)",
                "data": "\(options.dataDirectory)", "threads": "\(options.threads)", "mtu": "\(mtu)",
            ])
    }

    /// The longest an idle dispatch thread sleeps without a packet or a doorbell.
    static let idleSleepMs: Int32 = 100

    private func dispatchLoop(index: Int, cpu: Int, ip: UInt32, port: UInt16) {
        do {
            var config = RpcConfig()
            config.crypto = options.crypto
            let rpc = try Rpc(
                nexus: nexus, id: UInt8(index), transport: try UDPTransport(address: ip, port: port, mtu: mtu), cpu: cpu,
                config: config)
            let state = DispatchState(reader: try store.makeReader(), store: store, stats: stats, slots: node.slots)
            rpc.endpoint.context = Unmanaged.passUnretained(state).toOpaque()
            endpoints.withLock { $0.append(rpc.endpoint) }
            ready.add(1, ordering: .releasing)
            var lastWork = ee_now_ns()
            while !stopping.load(ordering: .relaxed) {
                var worked = false
                for _ in 0..<16 where rpc.runOnce() {
                    worked = true
                    // The burst's writes, in one transaction on this thread (nosync; with fsync
                    // the writer thread has them already).
                    store.writer.commitPending()
                }
                // A pass that reports no work can still have run a write handler (a request the
                // AES pool finished opening): its write must not wait for the next packet.
                store.writer.commitPending()
                // Busy-poll while traffic flows; after a short quiet spell, sleep in the kernel until
                // a packet comes, so nodes and clients sharing cores (a laptop, CI) do not starve
                // each other. A dedicated core keeps the thread spinning through any steady load.
                // A quiet moment inside the spell yields the core, and so does a busy one while
                // writes are out with the background thread and the group-commit writer: they may
                // share this core, and they produce what this thread is waiting for. (On a core
                // of its own the yield returns at once; under steady reads with writes pending,
                // not yielding would leave the writer waiting for the end of a time slice.)
                if worked {
                    lastWork = ee_now_ns()
                    if rpc.endpoint.hasBackgroundWork { _ = sched_yield() }
                } else if ee_now_ns() &- lastWork > options.idleSpinNs {
                    // A server has no timers of its own (clients drive retransmission and key
                    // updates) and new sessions ring the doorbell, so an idle thread can sleep
                    // long: each wake-up would take the CPU from a busy neighbour.
                    rpc.waitForTraffic(timeoutMs: Self.idleSleepMs)
                    lastWork = ee_now_ns()
                } else {
                    _ = sched_yield()
                }
            }
            // Let in-flight writes come back from the writer and be answered before the Rpc goes.
            let deadline = ee_now_ns() &+ 500_000_000
            while ee_now_ns() < deadline { rpc.runOnce() }
            let final = rpc.endpoint.stats
            finishedThreadStats.withLock { $0.add(final) }
            withExtendedLifetime(state) {}
        } catch {
            failure.withLock { $0 = error }
            logger.error("dispatch thread \(index) could not start: \(error)")
        }
    }

    /// Stops taking requests, commits every queued write, answers what it can, and closes the
    /// store to writes. Safe to call more than once. The LMDB environment itself closes when the
    /// node is released: LMDB forbids opening one environment twice in a process, so a new node
    /// on the same data directory in this process must start after the old one is gone.
    public func stop() {
        guard !stoppingWrites.exchange(true, ordering: .acquiringAndReleasing) else { return }
        // 1. The writer commits everything queued and acknowledges it through the endpoints, which
        //    are still running; writes that arrive from now on are refused with a store error.
        if let error = store.close() {
            logger.error("writing the store out at stop failed: \(error); writes since the last flush may be lost")
        }
        // 2. The dispatch threads send those replies and stop.
        stopping.store(true, ordering: .releasing)
        for e in endpoints.withLock({ $0 }) { e.wake() }
        for t in threads { t.join() }
        endpoints.withLock { $0.removeAll() }
        threads = []
        nexus.shutdown()
        let rpc = rpcStats
        var metadata: Logger.Metadata = [
            "writes": "\(store.writer.writes.load(ordering: .relaxed))", "requests": "\(rpc.requestsHandled)",
            "packets_in": "\(rpc.packetsReceived)", "packets_out": "\(rpc.packetsSent)",
            "refused_handshakes": "\(nexus.handshakeRefusals)",
            "sm_closed_unread": "\(nexus.sessionManagementOverflows)",
            "sm_closed_unread_per_source": "\(nexus.sessionManagementSourceOverflows)",
            "sm_timeouts": "\(nexus.sessionManagementTimeouts)",
            "refused_disconnects": "\(rpc.disconnectsRefused)",
            "abandoned_uploads": "\(rpc.assembliesAbandoned)",
        ]
        // Dropped packets by reason: damage and loss, but also tampering, forgeries and replays.
        for (reason, n) in rpc.drops { metadata["dropped_" + reason.name] = "\(n)" }
        logger.info("node \(node.id) stopped", metadata: metadata)
    }
}
