import Glibc
import Synchronization

/// Lets a consumer thread sleep when its lock-free queue is empty without a producer ever
/// having to take a lock or make a system call while the consumer is awake.
///
/// The consumer announces that it is about to sleep, re-checks its queue, and only then waits on
/// a semaphore; a producer pushes, then wakes the consumer only if it announced sleep. A full
/// fence on each side (x86 reorders a store with a later load) makes sure that either the
/// consumer sees the item or the producer sees the consumer sleeping: no wake-up is lost.
public final class IdleWaiter: @unchecked Sendable {
    // Memory: allocated in init, destroyed in deinit; the owner joins its thread before then.
    private let semaphore: UnsafeMutablePointer<sem_t>
    private let sleeping = Atomic<Bool>(false)

    public init() {
        semaphore = .allocate(capacity: 1)
        sem_init(semaphore, 0, 0)
    }

    deinit {
        sem_destroy(semaphore)
        semaphore.deallocate()
    }

    /// Producer, after pushing: wakes the consumer if it is (about to be) asleep.
    @inline(__always)
    public func notify() {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if sleeping.load(ordering: .relaxed) { sem_post(semaphore) }
    }

    /// Wakes the consumer unconditionally (to stop it).
    public func wake() { sem_post(semaphore) }

    /// Consumer: sleeps until notified, unless `hasWork` turns true after the announcement.
    public func sleep(unless hasWork: () -> Bool) {
        sleeping.store(true, ordering: .relaxed)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if !hasWork() {
            while sem_wait(semaphore) != 0 && errno == EINTR {}
        }
        sleeping.store(false, ordering: .relaxed)
    }
}
