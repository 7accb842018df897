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
///
/// One source address may hold at most `perSourceLimit` of the places, so a flood from one host
/// leaves the rest to everyone else.
final class SessionManagementGate: Sendable {
    let limit: Int
    let perSourceLimit: Int
    let deadlineNs: UInt64
    private struct Registered {
        /// ns on the `ee_now_ns` clock; `.max` once shut down.
        var deadline: UInt64
        /// The peer's IPv4 address, nil where sources are not limited (this end's own connects).
        var source: UInt32?
    }
    private struct State {
        var sockets: [Int32: Registered] = [:]
        /// Registered sockets per source address.
        var bySource: [UInt32: Int] = [:]
    }
    private let open = Mutex<State>(State())
    private let stopping = Atomic<Bool>(false)
    /// Connections closed unread because `limit` were being read already, or `perSourceLimit`
    /// from their source.
    let overflows = Atomic<Int>(0)
    /// Of those, the ones refused for their source's share.
    let sourceOverflows = Atomic<Int>(0)
    /// Connections shut down at their deadline.
    let expirations = Atomic<Int>(0)
    /// Reader threads started and not yet finished. The Nexus waits for none to be left before
    /// its memory goes: readers use it without holding a reference (see `Nexus.acceptLoop`).
    private let readers = Atomic<Int>(0)

    init(limit: Int, perSourceLimit: Int? = nil, deadlineMs: Int32) {
        self.limit = limit
        self.perSourceLimit = perSourceLimit ?? limit
        deadlineNs = UInt64(deadlineMs) * 1_000_000
    }

    /// Registers an accepted socket from `source` (nil: not limited per source); false (counted)
    /// when `limit` are being read already, or `perSourceLimit` from `source`, and the caller
    /// then closes it. `deadlineMs` overrides the gate's own time for this socket.
    func admit(_ fd: Int32, source: UInt32? = nil, deadlineMs: Int32? = nil) -> Bool {
        let deadline = deadlineMs.map { UInt64($0) * 1_000_000 } ?? deadlineNs
        var sourceFull = false
        let admitted = open.withLock { state -> Bool in
            guard state.sockets.count < limit else { return false }
            if let source {
                let held = state.bySource[source, default: 0]
                guard held < perSourceLimit else {
                    sourceFull = true
                    return false
                }
                state.bySource[source] = held + 1
            }
            state.sockets[fd] = Registered(deadline: ee_now_ns() &+ deadline, source: source)
            return true
        }
        if !admitted { overflows.add(1, ordering: .relaxed) }
        if sourceFull { sourceOverflows.add(1, ordering: .relaxed) }
        return admitted
    }

    /// The reader is done with `fd`; call before closing it or handing it on. Returns whether its
    /// time was up: the watchdog had shut it down, or its deadline had passed (the socket's own
    /// read timeout, as long, may fire first when the watchdog is slow to run). A read that
    /// failed then failed for want of time, not for what it read.
    @discardableResult
    func release(_ fd: Int32) -> Bool {
        let now = ee_now_ns()
        return open.withLock { state in
            guard let registered = state.sockets.removeValue(forKey: fd) else { return false }
            if let source = registered.source {
                let held = state.bySource[source, default: 1] - 1
                state.bySource[source] = held > 0 ? held : nil
            }
            return registered.deadline == .max || now >= registered.deadline
        }
    }

    /// Shuts down every socket past its deadline (under the lock, so none is closed meanwhile).
    func expire(now: UInt64 = ee_now_ns()) { shutDownSockets(where: { $0 <= now }, counted: true) }

    /// Shuts down the registered sockets whose deadline satisfies `due`, each once: the reader
    /// releases it when its read returns. `counted`: as expirations.
    private func shutDownSockets(where due: (UInt64) -> Bool, counted: Bool) {
        open.withLock { state in
            for (fd, registered) in state.sockets where due(registered.deadline) {
                // Counted first: the peer may see the socket close before this thread runs again.
                if counted { expirations.add(1, ordering: .relaxed) }
                state.sockets[fd]!.deadline = .max
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
