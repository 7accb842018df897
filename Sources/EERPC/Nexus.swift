import CSystemShims
import Glibc
import Synchronization

/// Errors from setting up a Nexus or registering with it.
public enum NexusError: Error, Equatable, Sendable {
    case listen(errno: Int32)
    case unresolvableHost(String)
    case handlersFrozen
    case duplicateRpcID(UInt8)
    /// A background handler needs a Nexus started with at least one background thread.
    case noBackgroundThreads
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

    private let state = Mutex<State>(State())
    private struct State {
        var handlers: [HandlerEntry?] = Array(repeating: nil, count: 256)
        var frozen = false
        var endpoints: [UInt8: RpcEndpoint] = [:]
        var shuttingDown = false
    }

    private let listenFD: Int32
    private var listener: JoinableThread?
    private var backgroundThreads: [BackgroundThread] = []
    private let nextBackground = Atomic<Int>(0)
    private let smTimeoutMs: Int32 = 2_000

    /// Starts the SM listener on `host:port` (port 0 picks a free one) and `backgroundThreads`
    /// background handler threads.
    public init(host: String = "127.0.0.1", port: UInt16 = 0, backgroundThreads: Int = 1, numaNode: Int = 0)
        throws(NexusError)
    {
        var ip: UInt32 = 0
        guard ee_resolve_ipv4(host, &ip) == 0 else { throw .unresolvableHost(host) }
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
        for i in 0..<backgroundThreads { self.backgroundThreads.append(BackgroundThread(index: i, nexus: self)) }
        listener = Threads.spawn(name: "eerpc-sm") { [unowned self] in self.acceptLoop() }
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
        for t in backgroundThreads { t.stop() }
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
            let fd = ee_tcp_accept(listenFD)
            if fd < 0 {
                if isShuttingDown { return }
                // EMFILE, ENOBUFS and the like pass; back off instead of spinning or giving up.
                if fd != -EINTR && fd != -ECONNABORTED { usleep(1_000) }
                continue
            }
            let timeout = smTimeoutMs
            // Strong: the Nexus must outlive the reader (at most one timeout).
            let worker = Threads.spawn(name: "eerpc-sm-conn") {
                self.readRequest(fd: fd, timeoutMs: timeout)
            }
            _ = pthread_detach(worker.tid)
        }
    }

    private func readRequest(fd: Int32, timeoutMs: Int32) {
        _ = ee_set_io_timeout(fd, timeoutMs)
        var message: SessionManagementMessage? = nil
        withUnsafeTemporaryAllocation(byteCount: SessionManagementMessage.size, alignment: 8) { buffer in
            if ee_read_exact(fd, buffer.baseAddress, SessionManagementMessage.size) == 0 {
                message = SessionManagementMessage.decode(buffer.baseAddress!)
            }
        }
        guard let m = message, m.kind == .connectRequest || m.kind == .disconnectRequest else {
            close(fd)
            return
        }
        if post(.request(m, connection: fd), to: m.serverRpcID) { return }
        var reply = m
        reply.kind = m.kind == .connectRequest ? .connectResponse : .disconnectResponse
        reply.error = .invalidRemoteRpcID
        withUnsafeTemporaryAllocation(byteCount: SessionManagementMessage.size, alignment: 8) { buffer in
            reply.encode(to: buffer.baseAddress!)
            _ = ee_write_all(fd, buffer.baseAddress, SessionManagementMessage.size)
        }
        close(fd)
    }

    /// Client side: sends `message` to the remote Nexus on a short-lived thread and posts the
    /// answer (or the failure) to `endpoint`'s inbox. Control plane only.
    /// With `session` nil the answer is not wanted (best-effort disconnects).
    func sendSessionManagement(
        _ message: SessionManagementMessage, to ip: UInt32, port: UInt16, from endpoint: RpcEndpoint, session: Int?
    ) {
        let timeout = Int32(endpoint.config.sessionManagementTimeoutMs)
        let rpcID = endpoint.id
        // Strong: the Nexus must outlive the exchange (at most one timeout).
        let worker = Threads.spawn(name: "eerpc-sm-client") {
            var reply: SessionManagementMessage? = nil
            var error: SessionError? = nil
            let fd = ee_tcp_connect(ip, port, timeout)
            if fd < 0 {
                error = fd == -ETIMEDOUT ? .timedOut : .connectFailed(errno: -fd)
            } else {
                withUnsafeTemporaryAllocation(byteCount: SessionManagementMessage.size, alignment: 8) { buffer in
                    message.encode(to: buffer.baseAddress!)
                    if ee_write_all(fd, buffer.baseAddress, SessionManagementMessage.size) != 0 {
                        error = .protocolError
                    } else {
                        let r = ee_read_exact(fd, buffer.baseAddress, SessionManagementMessage.size)
                        if r == -EAGAIN || r == -ETIMEDOUT {
                            error = .timedOut
                        } else if r != 0 {
                            error = .protocolError
                        } else if let m = SessionManagementMessage.decode(buffer.baseAddress!) {
                            reply = m
                        } else {
                            error = .protocolError
                        }
                    }
                }
                close(fd)
            }
            if let session {
                self.post(.response(reply, session: session, token: message.token, error: error), to: rpcID)
            }
        }
        _ = pthread_detach(worker.tid)
    }
}
