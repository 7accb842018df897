import ArgumentParser
import CSystemShims
import EEKV
import EERPC
import Glibc
import Logging
import Synchronization

/// Set by SIGINT/SIGTERM; the server's main thread polls it.
let stopRequested = Atomic<Bool>(false)

struct Server: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one eekv node of the cluster described by --config.",
        discussion: """
            Serves gets, puts, deletes, scans and multi-gets from an LMDB store in --data, with one pinned \
            dispatch thread per data-plane port the config gives the node (its `threads`; clients route \
            by it, so the config is where to change it). SIGINT or SIGTERM stops it \
            cleanly: queued writes commit and are acknowledged before it exits.
            """
    )

    @Option(help: "The cluster configuration (TOML).")
    var config: String

    @Option(help: "This node's id in the configuration.")
    var node: Int

    @Option(help: "Data directory (default: data/node-<id> next to the config).")
    var data: String?


    @Option(help: "Crypto mode: none, inline, offload, adaptive (default: the config's).")
    var crypto: String?

    @Option(help: "AES pool workers (1-64; 0, no pool, only with crypto modes none and inline).")
    var aesWorkers = 1

    @Option(help: "fsync or nosync (default: the config's).")
    var durability: String?

    @Option(help: "Microseconds a dispatch thread keeps polling after its last packet before it sleeps in poll() (waking costs tens of µs; spinning costs a core).")
    var idleSpinUs: Int = 20

    func run() throws {
        // Before any thread starts (they inherit the mask): a parent may have blocked these.
        ee_unblock_termination_signals()
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        var logger = Logger(label: "eekv.server")
        logger.logLevel = .info
        let cluster = try loadConfig(config)
        guard let me = cluster.node(id: node) else { throw ValidationError("node \(node) is not in \(config)") }
        var mode = cluster.crypto
        if let crypto {
            guard let m = CryptoMode(name: crypto) else { throw ValidationError("unknown crypto mode '\(crypto)'") }
            mode = m
        }
        if mode.encrypts && cluster.tlsDirectory == nil {
            throw ValidationError("crypto mode \(mode.name) needs a [tls] dir with the cluster's certificates in \(config)")
        }
        guard (0...64).contains(aesWorkers) else { throw ValidationError("--aes-workers is 0-64") }
        if aesWorkers == 0 && mode.usesPool {
            throw ValidationError("crypto mode \(mode.name) needs at least one AES pool worker (--aes-workers 1-64)")
        }
        var writeDurability = cluster.durability
        if let durability {
            guard let d = Durability(rawValue: durability) else { throw ValidationError("--durability is fsync or nosync") }
            writeDurability = d
        }
        let base = config.contains("/") ? String(config[..<config.lastIndex(of: "/")!]) : "."
        let directory = data ?? base + "/data/node-\(node)"
        var options = KVNode.Options(
            dataDirectory: directory, threads: me.threads, crypto: mode, aesWorkers: aesWorkers,
            durability: writeDurability)
        guard idleSpinUs >= 0 && idleSpinUs <= 10_000_000 else { throw ValidationError("--idle-spin-us is 0-10000000") }
        options.idleSpinNs = UInt64(idleSpinUs) * 1_000
        if let limit = cluster.maxStoreBytes { options.maxStoreBytes = limit }
        if writeDurability == .nosync {
            logger.warning("durability nosync: acknowledged writes may be lost if the machine crashes")
        }
        let kv = try KVNode(config: cluster, nodeID: node, options: options, logger: logger)
        signal(SIGINT) { _ in stopRequested.store(true, ordering: .relaxed) }
        signal(SIGTERM) { _ in stopRequested.store(true, ordering: .relaxed) }
        try kv.start()
        var refused = 0
        while !stopRequested.load(ordering: .relaxed) {
            usleep(50_000)
            // Tell the operator once per burst of writes refused for want of room.
            let now = kv.store.writer.rejectedFull.load(ordering: .relaxed)
            if now > refused {
                // Without a cap only the file system can be full; with one, either may be.
                let limit =
                    kv.store.maxMapSize == .max
                    ? "the file system is full" : "at the max_store_mib cap, or the file system is full"
                logger.warning("store full (\(limit)): \(now - refused) writes refused, \(now) in all")
                refused = now
            }
        }
        logger.info("stopping: committing queued writes")
        kv.stop()
    }
}

/// Reads the cluster configuration, with a message that says what to fix.
func loadConfig(_ path: String) throws -> ClusterConfig {
    do {
        return try ClusterConfig.load(path: path)
    } catch {
        throw ValidationError(error.description)
    }
}
