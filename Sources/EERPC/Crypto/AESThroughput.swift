import CSystemShims
import Synchronization

/// A measured AES-GCM rate.
public struct AESRate: Sendable {
    public var messages: UInt64
    public var bytes: UInt64
    public var nanoseconds: UInt64
    public init(messages: UInt64, bytes: UInt64, nanoseconds: UInt64) {
        self.messages = messages
        self.bytes = bytes
        self.nanoseconds = nanoseconds
    }
    public static var zero: AESRate { AESRate(messages: 0, bytes: 0, nanoseconds: 0) }
    /// Adds another measurement of the same thing (benchmarks split a run into interleaved parts).
    public mutating func add(_ other: AESRate) {
        messages += other.messages
        bytes += other.bytes
        nanoseconds += other.nanoseconds
    }
    public var gbps: Double { nanoseconds > 0 ? Double(bytes) * 8 / Double(nanoseconds) : 0 }
    public var nsPerMessage: Double { messages > 0 ? Double(nanoseconds) / Double(messages) : 0 }
}

/// The measurements behind `eekv bench aes`: sealing through the AES pool, hand-off included,
/// against the raw library call on one thread.
public enum AESThroughput {
    /// Seals `size`-byte messages (16 bytes of AAD) in a loop for `ns` on a thread pinned to `cpu`,
    /// cycling through `buffers` messages, the same working set the pooled run keeps in flight
    /// (one hot buffer would measure an L1-resident best case no data path sees).
    public static func raw(
        size: Int, backend: AEADBackendKind, keyBytes: Int, cpu: Int, ns: UInt64, buffers count: Int = 256
    ) throws(CryptoError) -> AESRate {
        let key = try makeKey(backend: backend, keyBytes: keyBytes)
        defer { key.destroy() }
        final class Box: @unchecked Sendable { var rate = AESRate.zero }
        let box = Box()
        Threads.spawn(name: "aes-raw") {
            Threads.pinCurrentThread(to: cpu)
            let slot = (size + 64 + 63) & ~63
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: slot * count + 64, alignment: 64)
            defer { buffer.deallocate() }
            buffer.initializeMemory(as: UInt8.self, repeating: 0x3C, count: slot * count + 64)
            let header = buffer + slot * count
            let nonce = header + 16, aad = header
            // Warm up, then seal in chunks, checking the clock between chunks.
            for i in 0..<count {
                let b = buffer + i * slot
                key.seal(nonce: nonce, aad: aad, aadCount: 16, source: b + 64, destination: b + 64, count: size, tag: b)
            }
            var messages: UInt64 = 0
            let start = ee_now_ns()
            var now = start
            while now &- start < ns {
                for i in 0..<count {
                    let b = buffer + i * slot
                    key.seal(nonce: nonce, aad: aad, aadCount: 16, source: b + 64, destination: b + 64, count: size, tag: b)
                }
                messages &+= UInt64(count)
                now = ee_now_ns()
            }
            box.rate = AESRate(messages: messages, bytes: messages &* UInt64(size), nanoseconds: now &- start)
        }.join()
        return box.rate
    }

    /// Keeps up to `inFlight` seal jobs in the pool from a thread pinned to `cpu`, collecting
    /// completions in submission order and resubmitting, for `ns`.
    public static func pooled(
        size: Int, backend: AEADBackendKind, keyBytes: Int, pool: AESPool, cpu: Int, ns: UInt64, inFlight: Int = 256
    ) throws(CryptoError) -> AESRate {
        let key = try makeKey(backend: backend, keyBytes: keyBytes)
        defer { key.destroy() }
        final class Box: @unchecked Sendable { var rate = AESRate.zero }
        let box = Box()
        Threads.spawn(name: "aes-submit") {
            Threads.pinCurrentThread(to: cpu)
            let slot = (size + 64 + 63) & ~63
            let buffers = UnsafeMutableRawPointer.allocate(byteCount: slot * inFlight, alignment: 64)
            let header = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
            let flags = JobStateWords(count: inFlight)
            defer {
                buffers.deallocate()
                header.deallocate()
                flags.deallocate()
            }
            buffers.initializeMemory(as: UInt8.self, repeating: 0x3C, count: slot * inFlight)
            header.initializeMemory(as: UInt8.self, repeating: 0xEE, count: 64)
            @inline(__always) func job(_ i: Int) -> AESJob {
                let b = buffers + i * slot
                let ticket = AESJob.arm(flags[i])
                return AESJob(
                    seal: true, key: key, nonce: header + 16, aad: header, aadCount: 16, source: b + 64,
                    destination: b + 64, count: size, tag: b, done: UnsafePointer(flags[i]), ticket: ticket)
            }
            // Jobs are posted in bursts, as a dispatch thread posts a TX or RX burst.
            let burst = UnsafeMutablePointer<AESJob>.allocate(capacity: inFlight)
            defer { burst.deallocate() }
            var messages: UInt64 = 0
            var head = 0
            var submitted = 0
            let start = ee_now_ns()
            var now = start
            @inline(__always) func post(from first: Int, count: Int) {
                for k in 0..<count { burst[k] = job((first + k) % inFlight) }
                var posted = 0
                while posted < count {
                    posted += pool.submit(burst + posted, count: count - posted)
                    if posted < count { spinPause() }
                }
            }
            // Fill the window, then replace completed jobs (in order) with new ones, a burst of
            // up to 32 at a time.
            post(from: 0, count: inFlight)
            submitted = inFlight
            var polls = 0
            while submitted > 0 {
                var finished = 0
                while finished < min(32, submitted) && flags.state((head + finished) % inFlight) >= AESJob.succeeded {
                    finished += 1
                }
                if finished > 0 {
                    messages &+= UInt64(finished)
                    if now &- start < ns {
                        post(from: head, count: finished)
                    } else {
                        submitted -= finished
                    }
                    head = (head + finished) % inFlight
                } else {
                    spinPause()
                }
                polls &+= 1
                if polls & 63 == 0 { now = ee_now_ns() }
            }
            let end = ee_now_ns()
            box.rate = AESRate(messages: messages, bytes: messages &* UInt64(size), nanoseconds: end &- start)
        }.join()
        return box.rate
    }

    private static func makeKey(backend: AEADBackendKind, keyBytes: Int) throws(CryptoError) -> KeyHandle {
        let key = UnsafeMutableRawPointer.allocate(byteCount: 32, alignment: 16)
        defer { key.deallocate() }
        for i in 0..<32 { key.storeBytes(of: UInt8(truncatingIfNeeded: i &* 29 &+ 7), toByteOffset: i, as: UInt8.self) }
        return try KeyHandle.make(backend: backend, key: UnsafeRawBufferPointer(start: key, count: keyBytes))
    }
}
