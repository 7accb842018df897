import ArgumentParser
import CSystemShims
import EEKV
import EERPC
import Glibc
import Synchronization

struct BenchStore: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "store",
        abstract: "The storage layer in process: GETs per second on one thread, and puts per second through group commit.",
        discussion: """
            Loads --keys keys (16-byte keys, --value-size values) into a fresh LMDB store in a temporary \
            directory, then measures: random GETs on one thread, each in its own read snapshot as the \
            server does per request; and puts from --writers concurrent writers (each with one put in \
            flight, as that many clients would have) through the group-commit writer, with nosync and \
            with fsync.
            """
    )

    @Option(help: "Keys loaded before measuring.") var keys = 200_000
    @Option(help: "Value size in bytes.") var valueSize = 100
    @Option(help: "Concurrent writers for the put measurements.") var writers = 64
    @Option(help: "Seconds per measurement.") var seconds = 3.0
    @Option(help: "Directory for the store (default: a fresh one under /tmp, removed afterwards).") var dir: String?
    @Flag(help: "Print one JSON object.") var json = false

    func run() throws {
        guard keys > 0, writers > 0, writers <= 4_096, seconds > 0 else { throw ValidationError("bad arguments") }
        var template = Array("/tmp/eekv-bench-store-XXXXXX".utf8CString)
        let base = dir ?? String(cString: mkdtemp(&template)!)
        defer { if dir == nil { _ = system("rm -rf '\(base)'") } }
        let ns = UInt64(seconds * 1e9)

        // Load, with nosync (the load is not what is measured).
        var gets = 0.0
        do {
            let store = try Store(directory: base + "/get", durability: .nosync)
            defer { store.close() }
            _ = putRate(store: store, writers: 1_024, ns: 0, preload: keys)
            gets = try getRate(store: store, ns: ns)
        }
        let nosync: Double
        do {
            let store = try Store(directory: base + "/nosync", durability: .nosync)
            defer { store.close() }
            nosync = putRate(store: store, writers: writers, ns: ns, preload: 0)
        }
        let fsync: Double
        let fsyncCommits: Int
        do {
            let store = try Store(directory: base + "/fsync", durability: .fsync)
            defer { store.close() }
            fsync = putRate(store: store, writers: writers, ns: ns, preload: 0)
            fsyncCommits = store.writer.commits.load(ordering: .relaxed)
        }
        if json {
            print(
                "{\"keys\":\(keys),\"value_size\":\(valueSize),\"writers\":\(writers),\"gets_per_s_one_thread\":\(fixed(gets, 0)),"
                    + "\"puts_per_s_nosync\":\(fixed(nosync, 0)),\"puts_per_s_fsync\":\(fixed(fsync, 0)),"
                    + "\"fsync_commits\":\(fsyncCommits)}")
        } else {
            print("eekv bench store — LMDB, \(keys) keys of 16 B + \(valueSize) B, \(writers) concurrent writers")
            print("")
            print(pad("GETs/s, one thread", 34) + fixed(gets, 0))
            print(pad("puts/s, group commit, nosync", 34) + fixed(nosync, 0))
            print(pad("puts/s, group commit, fsync", 34) + fixed(fsync, 0) + "  (\(fsyncCommits) fsync'd commits)")
        }
    }

    private func key(_ i: Int, into p: UnsafeMutableRawPointer) {
        // 16 bytes: "key:" + 12 decimal digits.
        var n = i
        p.storeBytes(of: 0x3A79_656B as UInt32, as: UInt32.self)  // "key:"
        for d in (4..<16).reversed() {
            p.storeBytes(of: UInt8(48 + n % 10), toByteOffset: d, as: UInt8.self)
            n /= 10
        }
    }

    /// Random gets for `ns`, one snapshot per get (as the server does per request).
    private func getRate(store: Store, ns: UInt64) throws -> Double {
        let reader = try store.makeReader()
        let k = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 8)
        defer { k.deallocate() }
        var rng = SplitMix64(seed: 3)
        var done = 0
        var found = 0
        let start = ee_now_ns()
        var now = start
        while now &- start < ns {
            for _ in 0..<1_024 {
                key(Int(rng.next() % UInt64(keys)), into: k)
                try reader.withSnapshot { s throws(StoreError) in
                    if try s.get(UnsafeRawBufferPointer(start: k, count: 16)) != nil { found += 1 }
                }
            }
            done += 1_024
            now = ee_now_ns()
        }
        precondition(found == done, "every loaded key is found")
        return Double(done) / (Double(now &- start) / 1e9)
    }

    /// Puts from `writers` concurrent writers (each one put in flight) for `ns`, or `preload` puts
    /// of keys 0..<preload. Returns puts per second.
    private func putRate(store: Store, writers: Int, ns: UInt64, preload: Int) -> Double {
        let slot = 16 + max(valueSize, 1)
        let memory = UnsafeMutableRawPointer.allocate(byteCount: slot * writers, alignment: 64)
        let counters = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: writers)
        defer {
            memory.deallocate()
            counters.deinitialize(count: writers)
            counters.deallocate()
        }
        memory.initializeMemory(as: UInt8.self, repeating: 0x76, count: slot * writers)
        for w in 0..<writers { (counters + w).initialize(to: Atomic(0)) }
        var rng = SplitMix64(seed: 9)
        var issued = [Int](repeating: 0, count: writers)
        var next = 0
        func submit(_ w: Int) {
            let p = memory + w * slot
            key(preload > 0 ? next : Int(rng.next() % UInt64(max(keys, 1))), into: p)
            next += 1
            issued[w] += 1
            _ = store.writer.submit(
                WriteOp(
                    kind: .put, key: UnsafeRawBufferPointer(start: p, count: 16),
                    value: UnsafeRawBufferPointer(start: p + 16, count: valueSize), ack: .counter(counters + w, result: nil)))
        }
        let start = ee_now_ns()
        for w in 0..<min(writers, preload > 0 ? preload : writers) { submit(w) }
        var completed = 0
        while true {
            let stop = preload > 0 ? next >= preload : ee_now_ns() &- start >= ns
            var outstanding = 0
            for w in 0..<writers where issued[w] > 0 {
                if counters[w].load(ordering: .acquiring) == issued[w] {
                    if !stop { submit(w) }
                } else {
                    outstanding += 1
                }
            }
            if stop && outstanding == 0 { break }
            spinPause()
        }
        for w in 0..<writers { completed += counters[w].load(ordering: .relaxed) }
        return Double(completed) / (Double(ee_now_ns() &- start) / 1e9)
    }
}
