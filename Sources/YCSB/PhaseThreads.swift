import Glibc
import Synchronization

extension Runner {
    /// Runs a phase's client threads: each connects first, the clock starts once all have (as
    /// YCSB's own client initialises its DB instances before the measured phase: a TLS handshake
    /// or a session setup is not an operation, and would otherwise weigh on short runs), then each
    /// runs `work` with its connection (nil if connecting failed: the phase is then stopping) and
    /// the start time. Reports progress each second, joins the threads, and throws the first
    /// connect failure. Returns the start time and each thread's result.
    static func runThreads<Connection, Result>(
        _ threads: Int, progress: (@Sendable (Int, Int) -> Void)?,
        connect: @escaping @Sendable (_ thread: Int) throws -> Connection,
        work: @escaping @Sendable (
            _ thread: Int, _ connection: Connection?, _ start: UInt64, _ live: UnsafePointer<Atomic<Int>>,
            _ stopped: @escaping () -> Bool
        ) -> Result
    ) throws -> (start: UInt64, results: [Result]) {
        let shared = PhaseThreadState<Result>(threads)
        var handles: [pthread_t] = []
        for t in 0..<threads {
            handles.append(spawn {
                let connection: Connection?
                do {
                    connection = try connect(t)
                } catch {
                    connection = nil
                    shared.lock.withLock { _ in shared.failure = shared.failure ?? error }
                    shared.stop.store(true, ordering: .relaxed)
                }
                shared.connected.add(1, ordering: .releasing)
                var start = shared.startedAt.load(ordering: .acquiring)
                while start == 0 {
                    usleep(100)
                    start = shared.startedAt.load(ordering: .acquiring)
                }
                let result = work(t, connection, start, UnsafePointer(shared.live)) {
                    shared.stop.load(ordering: .relaxed)
                }
                shared.lock.withLock { _ in shared.results[t] = result }
                shared.done.add(1, ordering: .releasing)
            })
        }
        while shared.connected.load(ordering: .acquiring) < threads { usleep(100) }
        let start = now()
        shared.startedAt.store(start, ordering: .releasing)
        reportProgress(start: start, live: shared.live, progress: progress) {
            shared.done.load(ordering: .acquiring) == threads
        }
        for h in handles { pthread_join(h, nil) }
        if let failure = shared.failure { throw failure }
        return (start, shared.results.compactMap { $0 })
    }
}

/// What a phase's threads share (results and failure under the lock; the rest atomic).
private final class PhaseThreadState<Result>: @unchecked Sendable {
    var results: [Result?]
    var failure: (any Error)?
    let lock = Mutex<Void>(())
    /// Operations completed so far, for the per-second progress.
    let live = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1)
    let stop = Atomic<Bool>(false)
    let connected = Atomic<Int>(0)
    let startedAt = Atomic<UInt64>(0)
    let done = Atomic<Int>(0)
    init(_ n: Int) {
        results = Array(repeating: nil, count: n)
        live.initialize(to: Atomic(0))
    }
    deinit {
        live.deinitialize(count: 1)
        live.deallocate()
    }
}
