import CSystemShims
import Glibc
import Synchronization

/// Bounds the session-management connections a Nexus reads at once, and the time each may take
/// from accept to its request. Anyone can open a TCP connection before authenticating; without
/// these, a flood of connections would take a reader thread and a file descriptor each, and a
/// peer sending a byte just inside every read timeout would keep its own for as long as it liked.
///
/// Sockets are registered from accept until their reader is done with them, and a watchdog thread
/// shuts down those past their deadline, so the reader's blocked read returns. A reader must
/// `release` its socket before it closes it (or hands it on): a closed descriptor's number is
/// soon another socket's, which the watchdog must never touch.
final class SessionManagementGate: Sendable {
    let limit: Int
    let deadlineNs: UInt64
    /// Socket → deadline (ns on the `ee_now_ns` clock).
    private let open = Mutex<[Int32: UInt64]>([:])
    private let stopping = Atomic<Bool>(false)
    /// Connections closed unread because `limit` were being read already.
    let overflows = Atomic<Int>(0)
    /// Connections shut down at their deadline.
    let expirations = Atomic<Int>(0)
    /// Reader threads started and not yet finished. The Nexus waits for none to be left before
    /// its memory goes: readers use it without holding a reference (see `Nexus.acceptLoop`).
    private let readers = Atomic<Int>(0)

    init(limit: Int, deadlineMs: Int32) {
        self.limit = limit
        deadlineNs = UInt64(deadlineMs) * 1_000_000
    }

    /// Registers an accepted socket; false (counted) when `limit` are being read already, and the
    /// caller then closes it. `deadlineMs` overrides the gate's own time for this socket.
    func admit(_ fd: Int32, deadlineMs: Int32? = nil) -> Bool {
        let deadline = deadlineMs.map { UInt64($0) * 1_000_000 } ?? deadlineNs
        let admitted = open.withLock { sockets -> Bool in
            guard sockets.count < limit else { return false }
            sockets[fd] = ee_now_ns() &+ deadline
            return true
        }
        if !admitted { overflows.add(1, ordering: .relaxed) }
        return admitted
    }

    /// The reader is done with `fd`; call before closing it or handing it on. Returns whether its
    /// time was up: the watchdog had shut it down, or its deadline had passed (the socket's own
    /// read timeout, as long, may fire first when the watchdog is slow to run). A read that
    /// failed then failed for want of time, not for what it read.
    @discardableResult
    func release(_ fd: Int32) -> Bool {
        let now = ee_now_ns()
        return open.withLock { sockets in
            guard let deadline = sockets.removeValue(forKey: fd) else { return false }
            return deadline == .max || now >= deadline
        }
    }

    /// Shuts down every socket past its deadline (under the lock, so none is closed meanwhile).
    func expire(now: UInt64 = ee_now_ns()) { shutDownSockets(where: { $0 <= now }, counted: true) }

    /// Shuts down the registered sockets whose deadline satisfies `due`, each once: the reader
    /// releases it when its read returns. `counted`: as expirations.
    private func shutDownSockets(where due: (UInt64) -> Bool, counted: Bool) {
        open.withLock { sockets in
            for (fd, deadline) in sockets where due(deadline) {
                // Counted first: the peer may see the socket close before this thread runs again.
                if counted { expirations.add(1, ordering: .relaxed) }
                sockets[fd] = .max
                ee_shutdown(fd)
            }
        }
    }

    func readerStarting() { readers.add(1, ordering: .relaxed) }
    /// The reader's last step: after it, the reader touches nothing of the Nexus.
    func readerFinished() { readers.subtract(1, ordering: .releasing) }
    var activeReaders: Int { readers.load(ordering: .acquiring) }

    /// At shutdown: ends every read in progress (their sockets are shut down, so blocked reads
    /// return at once) and waits until no reader thread is left.
    func endReaders() {
        while activeReaders > 0 {
            shutDownSockets(where: { $0 != .max }, counted: false)
            usleep(1_000)
        }
    }

    /// The watchdog's loop, until `stop`: checks ten times per deadline (at least every 100 ms),
    /// and expires the sockets of `others` (gates that share this watchdog) as it goes.
    func watch(alongside others: [SessionManagementGate] = []) {
        let periodUs = UInt32(min(100_000, max(1_000, deadlineNs / 10_000)))
        while !stopping.load(ordering: .relaxed) {
            usleep(periodUs)
            expire()
            for gate in others { gate.expire() }
        }
    }

    func stop() { stopping.store(true, ordering: .relaxed) }
}
