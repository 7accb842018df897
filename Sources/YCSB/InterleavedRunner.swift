import Glibc
import Synchronization

extension Runner {
    /// Run phase against several databases in turn, to compare them on a machine whose speed
    /// drifts. Separate runs seconds apart differ by more than the effect being measured when the
    /// machine has slow spells (on this project's shared 2-vCPU VMs, a plaintext run's throughput
    /// moved between 5,100 and 7,900 operations per second from one second to the next).
    ///
    /// Time is cut into slices of `sliceSeconds`; each cycle of `targets` slices gives every target
    /// one slice, in an order drawn afresh for each cycle (so no target always follows the same
    /// neighbour). In its slice a target gets the whole closed loop: every thread starts
    /// operations on that target's database for `sliceSeconds`, then waits for its operations in
    /// flight; the threads meet at a barrier before the next slice, so targets never overlap. A
    /// target's time is the sum of its slices, drain included, and each target runs
    /// `seconds` of slices (or until it has done `operationCount` operations, if that is not 0).
    ///
    /// Every target has its own key space and the same seeds, so each sees the same sequence of
    /// operations and keys. The per-second series of a summary counts that target's own seconds.
    ///
    /// - Parameters:
    ///   - connect: the database of `target` for thread `thread`; all are connected before the
    ///     clock starts.
    /// - Returns: one summary per target, in target order.
    public static func interleaved(
        workload: Workload, targets: Int, threads: Int, outstanding: Int = 1, seconds: Double,
        sliceSeconds: Double = 0.2, seed: UInt64 = 1,
        connect: @escaping @Sendable (_ target: Int, _ thread: Int) throws -> any YCSBDatabase,
        progress: (@Sendable (Int, Int) -> Void)? = nil
    ) throws -> [RunSummary] {
        precondition(targets >= 1 && threads >= 1 && outstanding >= 1)
        precondition(seconds > 0 && seconds.isFinite && sliceSeconds > 0 && sliceSeconds.isFinite)
        let sliceNs = UInt64(sliceSeconds * 1e9)
        let cycles = max(1, Int((seconds / sliceSeconds).rounded(.up)))
        let keySpaces = (0..<targets).map { _ in KeySpace(initialRecords: workload.recordCount) }
        // Operations granted per target, over all threads (an array cannot hold atomics itself).
        final class Counter: Sendable { let value = Atomic<Int64>(0) }
        let issued = (0..<targets).map { _ in Counter() }
        let schedule = SliceSchedule(targets: targets, seed: seed)

        /// Slices finished, summed over threads: slice k starts once it reaches k × threads.
        let sliceBarrier = Atomic<Int>(0)
        // Each thread's databases and choosers, built before the clock starts (a chooser's zeta
        // sum is setup, not a measured operation).
        let connectAll: @Sendable (Int) throws -> (dbs: [any YCSBDatabase], choosers: [OperationChooser]) = { t in
            let dbs = try (0..<targets).map { target in
                let db = try connect(target, t)
                if outstanding > 1 && !(db is any YCSBAsyncDatabase) { throw RunnerError.notAsynchronous }
                return db
            }
            return (dbs, keySpaces.map { OperationChooser(workload: workload, keySpace: $0, seed: chooserSeed(thread: t)) })
        }
        // Per thread: one recorder and the time run, per target.
        let (_, perThread) = try runThreads(threads, progress: progress, connect: connectAll) {
            t, connection, start, live, stopped in
            var recorders = (0..<targets).map { _ in Recorder(start: start, live: live) }
            var active = [UInt64](repeating: 0, count: targets)
            let dbs = connection?.dbs
            var choosers = connection?.choosers ?? []
            for slice in 0..<(cycles * targets) {
                // A thread whose connect failed still takes part, so the others never wait for it.
                while sliceBarrier.load(ordering: .acquiring) < slice * threads { usleep(20) }
                defer { sliceBarrier.add(1, ordering: .releasing) }
                guard let dbs, !stopped() else { continue }
                let target = schedule.target(ofSlice: slice)
                let began = now()
                let end = began + sliceNs
                // The series of this target continues where its last slice stopped.
                recorders[target].start = began - active[target]
                runClosedLoop(
                    dbs[target], outstanding: outstanding, chooser: &choosers[target], recorder: &recorders[target]
                ) {
                    !stopped() && now() < end
                        && issued[target].value.wrappingAdd(1, ordering: .relaxed).oldValue < workload.operationLimit
                }
                active[target] += now() - began
            }
            return (recorders: recorders, activeNs: active)
        }
        return (0..<targets).map { target in
            // Each thread ran its slices of this target for about the same time; their mean is the
            // target's duration, so throughput is operations over the time the target had.
            let times = perThread.map { $0.activeNs[target] }
            let mean = times.isEmpty ? 0 : Double(times.reduce(0, +)) / Double(times.count) / 1e9
            return summarize(
                phase: "run", workload: workload, threads: threads, seconds: mean,
                recorders: perThread.map { $0.recorders[target] })
        }
    }

    /// One thread's closed loop on `db` while `another` grants operations: pipelined when
    /// `outstanding` is above 1, else one operation at a time.
    static func runClosedLoop(
        _ db: any YCSBDatabase, outstanding: Int, chooser: inout OperationChooser, recorder: inout Recorder,
        another: () -> Bool
    ) {
        if outstanding > 1 {
            let keySpace = chooser
            runPipelined(db as! any YCSBAsyncDatabase, outstanding: outstanding, recorder: &recorder, another: another) {
                let (op, inserted) = chooser.next()
                return (op, inserted.map { n in { keySpace.acknowledgeInsert(n) } })
            }
            return
        }
        while another() {
            let next = chooser.next()
            performOne(db, next, chooser: &chooser, recorder: &recorder, began: now())
        }
    }
}

/// Which target runs in each slice of an interleaved run: cycles of one slice per target, each
/// cycle in its own random order (Fisher–Yates over SplitMix64, so every thread computes the same
/// schedule from the seed).
struct SliceSchedule: Sendable {
    let targets: Int
    let seed: UInt64

    func target(ofSlice slice: Int) -> Int { order(ofCycle: slice / targets)[slice % targets] }

    func order(ofCycle cycle: Int) -> [Int] {
        var state = seed &+ UInt64(cycle) &* 0x9E37_79B9_7F4A_7C15
        func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        var order = Array(0..<targets)
        for i in stride(from: targets - 1, to: 0, by: -1) {
            order.swapAt(i, Int(next() % UInt64(i + 1)))
        }
        return order
    }
}
