import Glibc
import Synchronization

/// One background handler thread of a Nexus. Requests arrive on a lock-free queue; the thread
/// sleeps on a semaphore when idle, and posting costs an atomic increment (no system call)
/// while it is busy.
final class BackgroundThread: @unchecked Sendable {
    private let queue = BoundedQueue<BackgroundRequest>(capacity: 8192)
    // Owned here: allocated in init, destroyed in deinit after the thread has been joined.
    private let semaphore: UnsafeMutablePointer<sem_t>
    private let running = Atomic<Bool>(true)
    private var thread: JoinableThread?
    // unowned(unsafe): the Nexus joins this thread in shutdown (at the latest from its deinit).
    private unowned(unsafe) let nexus: Nexus
    /// The Nexus's handler table, copied on this thread at its first request (the table is
    /// frozen by then: requests exist only once an Rpc does), so execution takes no lock.
    private var handlers: [HandlerEntry?]? = nil

    init(index: Int, nexus: Nexus) {
        self.nexus = nexus
        semaphore = .allocate(capacity: 1)
        sem_init(semaphore, 0, 0)
        thread = Threads.spawn(name: "eerpc-bg-\(index)") { [unowned self] in self.run() }
    }

    deinit {
        sem_destroy(semaphore)
        semaphore.deallocate()
    }

    /// False once the thread has been stopped (nobody would run the request).
    func submit(_ request: BackgroundRequest) -> Bool {
        guard running.load(ordering: .acquiring) else { return false }
        while !queue.push(request) { _ = sched_yield() }
        sem_post(semaphore)
        return true
    }

    func stop() {
        running.store(false, ordering: .releasing)
        sem_post(semaphore)
        thread?.join()
        thread = nil
    }

    private func run() {
        while true {
            while let work = queue.pop() { execute(work) }
            if !running.load(ordering: .acquiring) { return }
            while sem_wait(semaphore) != 0 && errno == EINTR {}
        }
    }

    private func execute(_ work: BackgroundRequest) {
        let endpoint = work.endpoint.takeUnretainedValue()
        if handlers == nil { handlers = nexus.frozenHandlers() }
        // The dispatch thread only submits requests whose type has a handler.
        let entry = handlers.unsafelyUnwrapped[Int(work.requestType)].unsafelyUnwrapped
        entry.handler(
            RequestHandle(
                endpoint: endpoint, slotIndex: Int(work.slotIndex), sessionToken: work.sessionToken,
                requestNumber: work.requestNumber, assembly: work.request, requestType: work.requestType,
                request: UnsafeRawBufferPointer(start: work.request.data, count: work.request.size), isBackground: true,
                preallocatedResponse: work.preallocated))
    }
}
