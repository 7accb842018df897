import CSystemShims
import Glibc
import Synchronization

/// Errors from setting up a Nexus or registering with it.
public enum NexusError: Error, Equatable, Sendable {
    case listen(errno: Int32)
    case unresolvableHost(String)
    /// The TLS credentials could not be loaded.
    case credentials(String)
    /// An encrypting Rpc needs a Nexus with TLS credentials (the keys come from its handshakes).
    case encryptionNeedsTLS
    /// `.offload` and `.adaptive` need a Nexus with at least one AES pool worker.
    case noAESPool
    case handlersFrozen
    case duplicateRpcID(UInt8)
    /// A background handler needs a Nexus started with at least one background thread.
    case noBackgroundThreads
}

extension NexusError: CustomStringConvertible {
    public var description: String {
        switch self {
        case .listen(let e): "cannot listen for session management: \(String(cString: strerror(e)))"
        case .unresolvableHost(let host): "cannot resolve \(host)"
        case .credentials(let why): "TLS credentials: \(why)"
        case .encryptionNeedsTLS: "an encrypting Rpc needs TLS credentials"
        case .noAESPool: "crypto modes offload and adaptive need at least one AES pool worker"
        case .handlersFrozen: "handlers must be registered before the first Rpc starts"
        case .duplicateRpcID(let id): "Rpc id \(id) is taken"
        case .noBackgroundThreads: "a background handler needs a background thread"
        }
    }
}

/// One per process: the request-handler table, the session-management (SM) thread that
/// accepts session requests from peers, the background handler threads and the buffer pool
/// they share.
///
/// Register every handler before creating the first ``Rpc``: each Rpc copies the table when it
/// starts, so its dispatch thread reads it without synchronisation.
public final class Nexus: @unchecked Sendable {
    /// The SM listener's address: what peers pass to `createSession`.
    public let host: String
    public let port: UInt16
    let sharedPool: SharedBufferPool
    /// The shared background AES pool used by `.offload` and `.adaptive` Rpcs (nil with 0 workers).
    public let aesPool: AESPool?
    /// CPUs that Rpcs of this process are pinned to. `.adaptive` uses the pool only while the
    /// machine has a CPU for every pinned dispatch thread and every AES worker: a worker that has
    /// to preempt a busy-polling dispatch thread costs more than it saves.
    private let pinnedCPUs = Mutex<[Int]>([])
    let poolHasSpareCPU = Atomic<Bool>(true)

    func dispatchThreadPinned(_ cpu: Int?, added: Bool) {
        guard let cpu else { return }
        let pinned = pinnedCPUs.withLock { list -> Int in
            if added {
                list.append(cpu)
            } else if let i = list.firstIndex(of: cpu) {
                list.remove(at: i)
            }
            return Set(list).count
        }
        poolHasSpareCPU.store(
            Threads.cpuCount >= pinned + (aesPool?.workerCount ?? 0), ordering: .releasing)
    }

    private let state = Mutex<State>(State())
    private struct State {
        var handlers: [HandlerEntry?] = Array(repeating: nil, count: 256)
        var frozen = false
        var endpoints: [UInt8: RpcEndpoint] = [:]
        var shuttingDown = false
    }

    /// TLS contexts for the SM channel; nil runs it over plain TCP (plaintext data plane only).
    let tls: TLSContexts?
    /// SM handshakes refused at this Nexus (bad, missing or foreign certificates, or a peer of
    /// another protocol version), and the last reason, so operators and tests can see what happened.
    private let refusals = Mutex<(count: Int, last: String?)>((0, nil))
    public var handshakeRefusals: Int { refusals.withLock { $0.count } }
    public var lastHandshakeRefusal: String? { refusals.withLock { $0.last } }

    private let listenFD: Int32
    private var listener: JoinableThread?
    private var backgroundThreads: [BackgroundThread] = []
    private let nextBackground = Atomic<Int>(0)
    private let smTimeoutMs: Int32 = 2_000
    /// Session-management connections that, once authenticated, sent something other than a
    /// request (bad magic or kind), or closed before sending one.
    public var sessionManagementMalformed: Int { malformedRequests.load(ordering: .relaxed) }
    private let malformedRequests = Atomic<Int>(0)
    /// Session-management connections read at once, and the time each gets (see the gate).
    private let gate: SessionManagementGate
    /// This Nexus's own session-management requests, each given a deadline for the whole
    /// exchange (connect, handshake, answer), kept by the same watchdog.
    private let clientGate = SessionManagementGate(limit: .max, deadlineMs: 6_000)  // each socket gets its own
    private var watchdog: JoinableThread?
    /// Session-management connections closed unread because too many were being read at once.
    public var sessionManagementOverflows: Int { gate.overflows.load(ordering: .relaxed) }
    /// Of those, the ones closed because their source address already had
    /// `maxPendingSessionManagementPerSource` being read.
    public var sessionManagementSourceOverflows: Int { gate.sourceOverflows.load(ordering: .relaxed) }
    /// Session-management connections shut down for taking longer than the session-management
    /// timeout from accept to their request (slow or silent peers).
    public var sessionManagementTimeouts: Int { gate.expirations.load(ordering: .relaxed) }
    /// Session-management reader threads still running (tests).
    var sessionManagementReaders: Int { gate.activeReaders }

    /// Starts the SM listener on `host:port` (port 0 picks a free one) and `backgroundThreads`
    /// background handler threads.
    ///
    /// With `tls`, every session-management exchange runs over TLS 1.3 with mutual certificate
    /// authentication against the cluster CA, and encrypted sessions take their keys from it.
    /// At most `maxPendingSessionManagement` incoming session-management connections are read at
    /// once (more are closed unread), at most `maxPendingSessionManagementPerSource` of them from
    /// one IP address (default: three quarters, at least one place short of the limit, so a flood
    /// from one host leaves places to the others and a client host starting many sessions at once
    /// is rarely turned away), each for at most 2 s from accept to its request.
    public init(
        host: String = "127.0.0.1", port: UInt16 = 0, backgroundThreads: Int = 1, numaNode: Int = 0,
        tls: TLSConfig? = nil, aesWorkers: Int = 1, maxPendingSessionManagement: Int = 64,
        maxPendingSessionManagementPerSource: Int? = nil
    ) throws(NexusError) {
        precondition(maxPendingSessionManagement >= 1)
        let limit = maxPendingSessionManagement
        let perSource = maxPendingSessionManagementPerSource ?? (limit > 1 ? limit - max(1, limit / 4) : 1)
        precondition(perSource >= 1)
        gate = SessionManagementGate(limit: limit, perSourceLimit: perSource, deadlineMs: smTimeoutMs)
        var ip: UInt32 = 0
        guard ee_resolve_ipv4(host, &ip) == 0 else { throw .unresolvableHost(host) }
        do {
            self.tls = try tls.map { config throws(CryptoError) in try TLSContexts(config) }
        } catch {
            if case .certificate(let message) = error { throw .credentials(message) }
            throw .credentials("\(error)")
        }
        let fd = ee_tcp_listen(ip, port)
        guard fd >= 0 else { throw .listen(errno: -fd) }
        let bound = ee_socket_port(fd)
        guard bound > 0 else {
            close(fd)
            throw .listen(errno: -bound)
        }
        self.host = host
        self.port = UInt16(bound)
        listenFD = fd
        sharedPool = SharedBufferPool(numaNode: numaNode)
        aesPool = aesWorkers > 0 ? AESPool(workers: aesWorkers) : nil
        for i in 0..<backgroundThreads { self.backgroundThreads.append(BackgroundThread(index: i, nexus: self)) }
        // unowned(unsafe): shutdown() joins this thread, at the latest from deinit, so the memory
        // outlives it; plain `unowned` would trap when the loop notices shutdown during deinit.
        listener = Threads.spawn(name: "eerpc-sm") { [unowned(unsafe) self] in self.acceptLoop() }
        let gate = self.gate
        let clientGate = self.clientGate
        watchdog = Threads.spawn(name: "eerpc-sm-watch") { gate.watch(alongside: [clientGate]) }
    }

    deinit { shutdown() }

    /// Stops the SM thread and the background threads. Rpcs should be gone first.
    public func shutdown() {
        let alreadyDown = state.withLock { s -> Bool in
            defer { s.shuttingDown = true }
            return s.shuttingDown
        }
        guard !alreadyDown else { return }
        ee_shutdown(listenFD)  // wakes accept()
        listener?.join()
        close(listenFD)
        // Readers hold no reference to the Nexus, so none may outlive this (nor a deinit).
        gate.endReaders()
        gate.stop()
        watchdog?.join()
        for t in backgroundThreads { t.stop() }
        aesPool?.shutdown()
    }

    /// Registers the handler for request type `type`. Only before the first Rpc is created.
    public func register(type: UInt8, mode: HandlerMode = .foreground, _ handler: @escaping RequestHandler)
        throws(NexusError)
    {
        if mode == .background && backgroundThreads.isEmpty { throw .noBackgroundThreads }
        let ok = state.withLock { s -> Bool in
            guard !s.frozen else { return false }
            s.handlers[Int(type)] = HandlerEntry(mode: mode, handler: handler)
            return true
        }
        guard ok else { throw .handlersFrozen }
    }

    func frozenHandlers() -> [HandlerEntry?] {
        state.withLock { s in
            s.frozen = true
            return s.handlers
        }
    }

    func add(_ endpoint: RpcEndpoint) throws(NexusError) {
        let ok = state.withLock { s -> Bool in
            guard s.endpoints[endpoint.id] == nil else { return false }
            s.endpoints[endpoint.id] = endpoint
            return true
        }
        guard ok else { throw .duplicateRpcID(endpoint.id) }
    }

    func remove(_ endpoint: RpcEndpoint) {
        state.withLock { s in
            if s.endpoints[endpoint.id] === endpoint { s.endpoints[endpoint.id] = nil }
        }
    }

    // MARK: Background handlers

    /// Hands a request to a background thread; false once the Nexus is shutting down.
    func submitBackground(_ request: BackgroundRequest) -> Bool {
        let i = nextBackground.wrappingAdd(1, ordering: .relaxed).oldValue % backgroundThreads.count
        return backgroundThreads[i].submit(request)
    }

    /// Posts a session-management event to Rpc `id` under the registry lock, so the endpoint
    /// cannot be released (and deinitialised on this foreign thread) while we post. False if no
    /// such Rpc exists; the caller still owns any connection in the event.
    @discardableResult
    func post(_ event: SessionManagementEvent, to id: UInt8) -> Bool {
        state.withLock { s -> Bool in
            guard let endpoint = s.endpoints[id] else { return false }
            endpoint.postSessionManagement(event)
            return true
        }
    }

    private var isShuttingDown: Bool { state.withLock { $0.shuttingDown } }

    // MARK: Session management

    /// Server side: accepts SM connections; each is read on a short-lived thread of its own (so
    /// a slow or silent peer delays nobody) and handed to the target Rpc, which answers on the
    /// same connection from its event loop.
    private func acceptLoop() {
        while true {
            var source: UInt32 = 0
            let fd = ee_tcp_accept(listenFD, &source)
            if fd < 0 {
                if isShuttingDown { return }
                // EMFILE, ENOBUFS and the like pass; back off instead of spinning or giving up.
                if fd != -EINTR && fd != -ECONNABORTED { usleep(1_000) }
                continue
            }
            // Unauthenticated so far: only so many are read at once, each for a bounded time.
            guard gate.admit(fd, source: source) else {
                close(fd)
                continue
            }
            let timeout = smTimeoutMs
            let gate = self.gate
            // The reader is counted before it exists, and shutdown() waits for the count to reach
            // zero, so it may use the Nexus without a reference: this loop may be running while
            // the Nexus is being deinitialised, when a strong reference would not keep it alive.
            // Unmanaged, not unowned(unsafe): the reader must do no reference counting at all, or
            // a release placed after readerFinished() could touch freed memory.
            gate.readerStarting()
            let nexus = Unmanaged.passUnretained(self)
            guard
                let worker = Threads.spawnIfPossible(
                    name: "eerpc-sm-conn",
                    {
                        nexus._withUnsafeGuaranteedRef { $0.readRequest(fd: fd, timeoutMs: timeout) }
                        gate.readerFinished()
                    })
            else {
                // Out of threads: this connection goes unanswered, the listener goes on.
                gate.readerFinished()
                gate.release(fd)
                close(fd)
                gate.overflows.add(1, ordering: .relaxed)
                continue
            }
            _ = pthread_detach(worker.tid)
        }
    }

    /// Reads an admitted connection's request and hands it to its Rpc. The socket leaves the
    /// gate before it is closed or handed on.
    private func readRequest(fd: Int32, timeoutMs: Int32) {
        _ = ee_set_io_timeout(fd, timeoutMs)
        let connection: SessionManagementConnection
        switch SessionManagementConnection.accept(fd: fd, contexts: tls) {
        case .success(let c): connection = c
        case .failure(let error):
            let expired = gate.release(fd)
            close(fd)
            // A handshake cut off at its deadline is counted there (a timeout), not as a refusal.
            guard !expired else { return }
            let reason = if case .handshakeFailed(let why) = error { why } else { "\(error)" }
            refusals.withLock {
                $0.count += 1
                $0.last = reason
            }
            return
        }
        let request = connection.receiveOrExplain()
        let expired = gate.release(fd)
        if case .failure(.versionMismatch(let peer)) = request {
            // Answered in this end's version, which the peer recognises as foreign and reports.
            refusals.withLock {
                $0.count += 1
                $0.last = "session-management version \(peer) (this node speaks \(SessionManagementMessage.version))"
            }
            let reply = SessionManagementMessage(
                kind: .connectResponse, error: .versionMismatch, transport: .udp, token: 0, clientRpcID: 0,
                serverRpcID: 0, clientSession: 0, mtu: 0)
            _ = connection.send(reply)
            connection.close()
            return
        }
        guard case .success(let m) = request, m.kind == .connectRequest || m.kind == .disconnectRequest else {
            // An authenticated peer that sent something other than a request (a slow one is the
            // gate's): counted, and closed.
            if case .failure(.timedOut) = request {} else if !expired { malformedRequests.add(1, ordering: .relaxed) }
            connection.close()
            return
        }
        if post(.request(m, connection: connection), to: m.serverRpcID) { return }
        var reply = m
        reply.kind = m.kind == .connectRequest ? .connectResponse : .disconnectResponse
        reply.error = .invalidRemoteRpcID
        _ = connection.send(reply)
        connection.close()
    }

    /// Client side: sends `message` to the remote Nexus on a short-lived thread and posts the
    /// answer (or the failure) to `endpoint`'s inbox. Control plane only.
    /// With `session` nil the answer is not wanted (best-effort disconnects).
    func sendSessionManagement(
        _ message: SessionManagementMessage, to ip: UInt32, port: UInt16, peerName: String?, from endpoint: RpcEndpoint,
        session: Int?
    ) {
        let timeout = Int32(endpoint.config.sessionManagementTimeoutMs)
        let rpcID = endpoint.id
        // Strong: the Nexus must outlive the exchange (at most one timeout).
        let worker = Threads.spawn(name: "eerpc-sm-client") {
            var reply: SessionManagementMessage? = nil
            var error: SessionError? = nil
            var secrets: SessionSecrets? = nil
            // The whole exchange: connect, handshake, request and answer, each within `timeout`.
            switch SessionManagementConnection.connect(
                ip: ip, port: port, timeoutMs: timeout, contexts: self.tls, peerName: peerName, gate: self.clientGate,
                deadlineMs: 3 * timeout)
            {
            case .failure(let e): error = e
            case .success(let connection):
                if !connection.send(message) {
                    // The server may have refused our certificate and closed already: its alert
                    // is still there to be read, and says why.
                    if connection.tls != nil, case .failure(let e) = connection.receiveOrExplain(),
                        case .handshakeFailed = e
                    {
                        error = e
                    } else {
                        error = connection.tls != nil ? .handshakeFailed("connection closed by the server") : .protocolError
                    }
                } else {
                    switch connection.receiveOrExplain() {
                    case .success(let m):
                        reply = m
                        if m.kind == .connectResponse && m.error == .ok {
                            secrets = connection.exportSecrets(
                                clientSession: message.clientSession, serverSession: m.serverSession,
                                token: message.token, clientRpcID: message.clientRpcID,
                                serverRpcID: message.serverRpcID)
                        }
                    case .failure(let e): error = e
                    }
                }
                self.clientGate.release(connection.fd)
                connection.close()
            }
            // The secrets leave this thread in a cell of their own, wiped here.
            var transit: SecretsInTransit? = nil
            if secrets != nil { transit = SecretsInTransit(&secrets!) }
            let event = SessionManagementEvent.response(
                reply, session: session ?? 0, token: message.token, error: error, secrets: transit)
            if session == nil || !self.post(event, to: rpcID) { event.discard() }
        }
        _ = pthread_detach(worker.tid)
    }
}
