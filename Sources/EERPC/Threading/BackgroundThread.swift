import Glibc
import Synchronization

/// One background handler thread of a Nexus. Requests arrive on a lock-free queue; the thread
/// sleeps when idle (``IdleWaiter``), and posting costs no system call while it is awake.
final class BackgroundThread: @unchecked Sendable {
    private let queue = BoundedQueue<BackgroundRequest>(capacity: 8192)
    private let waiter = IdleWaiter()
    private let running = Atomic<Bool>(true)
    private var thread: JoinableThread?
    // unowned(unsafe): the Nexus joins this thread in shutdown (at the latest from its deinit).
    private unowned(unsafe) let nexus: Nexus
    /// The Nexus's handler table, copied on this thread at its first request (the table is
    /// frozen by then: requests exist only once an Rpc does), so execution takes no lock.
    private var handlers: [HandlerEntry?]? = nil

    init(index: Int, nexus: Nexus) {
        self.nexus = nexus
        thread = Threads.spawn(name: "eerpc-bg-\(index)") { [unowned self] in self.run() }
    }

    /// False once the thread has been stopped (nobody would run the request).
    func submit(_ request: BackgroundRequest) -> Bool {
        guard running.load(ordering: .acquiring) else { return false }
        while !queue.push(request) { _ = sched_yield() }
        waiter.notify()
        return true
    }

    func stop() {
        running.store(false, ordering: .releasing)
        waiter.wake()
        thread?.join()
        thread = nil
    }

    private func run() {
        while true {
            while let work = queue.pop() { execute(work) }
            if !running.load(ordering: .acquiring) { return }
            waiter.sleep { !queue.isEmpty || !running.load(ordering: .relaxed) }
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
                requestNumber: work.requestNumber, requestType: work.requestType, copiedRequest: work.request,
                preallocatedResponse: work.preallocated))
    }
}
