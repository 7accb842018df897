import CNuma
import CSystemShims
import Glibc

/// CPU pinning and thread creation for dispatch, background and session-management threads.
public enum Threads {
    /// Pins the calling thread to `cpu` (libnuma when the system has NUMA support, else
    /// pthread affinity) and returns the CPU's NUMA node (0 without NUMA).
    @discardableResult
    public static func pinCurrentThread(to cpu: Int) -> Int {
        if MemoryRegion.numaAvailable {
            let mask = numa_allocate_cpumask()
            numa_bitmask_setbit(mask, UInt32(cpu))
            let r = numa_sched_setaffinity(0, mask)
            numa_free_cpumask(mask)
            if r != 0 { _ = ee_pin_thread_to_cpu(Int32(cpu)) }
            return max(0, Int(numa_node_of_cpu(Int32(cpu))))
        }
        _ = ee_pin_thread_to_cpu(Int32(cpu))
        return 0
    }

    /// The CPUs this process may use (its affinity mask: taskset or a cgroup cpuset narrows it).
    public static var cpuCount: Int { Int(ee_cpu_count()) }

    /// The `index`-th CPU this process may use, wrapping around.
    public static func allowedCPU(_ index: Int) -> Int { Int(ee_allowed_cpu(Int32(index % max(cpuCount, 1)))) }

    /// Starts a joinable thread running `body`.
    public static func spawn(name: String, _ body: @escaping @Sendable () -> Void) -> JoinableThread {
        guard let thread = spawnIfPossible(name: name, body) else { preconditionFailure("pthread_create failed") }
        return thread
    }

    /// `spawn`, or nil if the system has no thread to give (its limit, or memory for a stack).
    public static func spawnIfPossible(name: String, _ body: @escaping @Sendable () -> Void) -> JoinableThread? {
        final class Box: @unchecked Sendable {
            let name: String
            let body: @Sendable () -> Void
            init(name: String, body: @escaping @Sendable () -> Void) {
                self.name = name
                self.body = body
            }
        }
        let box = Unmanaged.passRetained(Box(name: name, body: body))
        var tid = pthread_t()
        let r = pthread_create(
            &tid, nil,
            { raw in
                let box = Unmanaged<AnyObject>.fromOpaque(raw!).takeRetainedValue() as! Box
                ee_set_thread_name(box.name)
                box.body()
                return nil
            }, box.toOpaque())
        guard r == 0 else {
            box.release()
            return nil
        }
        return JoinableThread(tid: tid)
    }
}

/// A started thread; `join` waits for it to end. Join exactly once.
public struct JoinableThread: Sendable {
    let tid: pthread_t
    public func join() { pthread_join(tid, nil) }
}
