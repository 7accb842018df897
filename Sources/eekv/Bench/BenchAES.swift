import ArgumentParser
import CSystemShims
import EERPC
import Synchronization

struct BenchAES: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aes",
        abstract: "AES-GCM throughput through the shared AES pool vs the raw library call, in one run.",
        discussion: """
            Pool: one submitting thread (pinned to CPU 0) keeps up to 256 seal jobs in flight through \
            the Nexus's AES pool and collects their completions in order, so the figure includes \
            building and posting each job, the sealing, and noticing it is done. Raw: the same seal \
            called in a loop on one thread pinned to the CPU the worker runs on, over the same 256 buffers. Messages carry 16 \
            bytes of AAD (an eeRPC header).
            """
    )

    @Option(help: "Comma-separated message sizes in bytes.")
    var size = "64,1024,8192"

    @Option(help: "AES pool workers.")
    var workers = 1

    @Option(help: "Measured seconds per size and side.")
    var seconds = 2.0

    @Option(help: "Backend: ipsec-mb, openssl, vaes-avx2 or ipsec-mb+vaes (default: the runtime's choice for this CPU).")
    var backend: String?

    @Option(help: "Key size in bits: 128 or 256.")
    var keyBits = 128

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    func run() throws {
        let sizes = try parseSizes(size)
        guard workers >= 1 && workers <= 64 else { throw ValidationError("--workers must be 1…64") }
        guard keyBits == 128 || keyBits == 256 else { throw ValidationError("--key-bits must be 128 or 256") }
        let chosen: AEADBackendKind? = backend.map { AEADBackendKind(argument: $0) } ?? AEADBackendKind.preferred
        guard let kind = chosen else {
            throw ValidationError("--backend must be ipsec-mb, openssl, vaes-avx2 or ipsec-mb+vaes")
        }
        guard AEADBackendKind.available.contains(kind) else {
            throw ValidationError("the \(kind.name) backend does not run on this CPU")
        }
        let nexus = try Nexus(backgroundThreads: 0, aesWorkers: workers)
        defer { nexus.shutdown() }
        let pool = nexus.aesPool!
        // Workers on the cores the submitter does not use (all on CPU 1 on a 2-core machine).
        let cpus = Threads.cpuCount
        for w in 0..<workers { pool.pin(worker: w, to: Threads.allowedCPU(cpus > 1 ? 1 + w % (cpus - 1) : 0)) }
        let duration = UInt64(seconds * 1e9)
        var rows: [(size: Int, pool: AESRate, raw: AESRate)] = []
        // Raw, pool, pool, raw, each for half the time: drift on a shared machine hits both alike.
        for s in sizes {
            var raw = AESRate.zero
            var pooled = AESRate.zero
            let cpu = cpus > 1 ? 1 : 0
            raw.add(try AESThroughput.raw(size: s, backend: kind, keyBytes: keyBits / 8, cpu: cpu, ns: duration / 2))
            for _ in 0..<2 {
                pooled.add(
                    try AESThroughput.pooled(size: s, backend: kind, keyBytes: keyBits / 8, pool: pool, cpu: 0, ns: duration / 2))
            }
            raw.add(try AESThroughput.raw(size: s, backend: kind, keyBytes: keyBits / 8, cpu: cpu, ns: duration / 2))
            rows.append((s, pooled, raw))
        }
        let calibration = pool.calibrate(kind)
        let threshold = calibration.threshold == Int.max ? "none" : "\(calibration.threshold)"
        if json {
            let results = rows.map { r in
                "{\"size\":\(r.size),\"workers\":\(workers),\"backend\":\"\(kind.argument)\",\"key_bits\":\(keyBits),"
                    + "\"pool_gbps\":\(fixed(r.pool.gbps, 2)),\"pool_ns_per_msg\":\(fixed(r.pool.nsPerMessage, 1)),"
                    + "\"raw_gbps\":\(fixed(r.raw.gbps, 2)),\"raw_ns_per_msg\":\(fixed(r.raw.nsPerMessage, 1)),"
                    + "\"ratio\":\(fixed(r.raw.gbps > 0 ? r.pool.gbps / r.raw.gbps : 0, 3))}"
            }
            print(
                "{\"results\":[" + results.joined(separator: ",") + "],\"adaptive_threshold\":\""
                    + threshold + "\",\"handoff_ns\":\(fixed(calibration.handoffNs, 1))}")
        } else {
            print("eeRPC bench aes — AES-\(keyBits)-GCM via \(kind.name), \(workers) pool worker(s), 16 B AAD")
            print("")
            print(pad("size B", 10) + pad("pool Gbit/s", 14) + pad("pool ns/msg", 14) + pad("raw Gbit/s", 14)
                + pad("raw ns/msg", 14) + "pool/raw")
            for r in rows {
                print(
                    pad("\(r.size)", 10) + pad(fixed(r.pool.gbps, 2), 14) + pad(fixed(r.pool.nsPerMessage, 1), 14)
                        + pad(fixed(r.raw.gbps, 2), 14) + pad(fixed(r.raw.nsPerMessage, 1), 14)
                        + fixed(r.raw.gbps > 0 ? r.pool.gbps / r.raw.gbps : 0, 3))
            }
            print("")
            print(
                "adaptive mode's start-up calibration: a hand-off costs the dispatch thread "
                    + "\(fixed(calibration.handoffNs, 0)) ns; messages from \(threshold) B go to the pool")
        }
    }
}
