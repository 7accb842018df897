import CSystemShims
import Glibc
import Synchronization

/// Configuration of an Rpc endpoint.
public struct RpcConfig: Sendable {
    /// Largest number of sessions (client and server ends together) this endpoint holds.
    public var maxSessions = 256
    /// Client retransmission timeout.
    public var retransmitTimeoutNs: UInt64 = 5_000_000
    /// Timeouts in a row without progress after which a client session is declared failed
    /// (its RPCs complete with `.sessionFailed`): 400 × 5 ms = 2 s of silence by default.
    public var maxRetransmissionsWithoutProgress = 400
    /// How long a client waits for a handler the server says is still running (a retransmitted
    /// last request packet is answered with that notice, which counts as progress). Past this
    /// the session fails as `.timedOut`, like a silent one.
    public var maxHandlerWaitNs: UInt64 = 60_000_000_000
    /// How long a client waits for a session-management answer.
    public var sessionManagementTimeoutMs = 2_000
    /// A server session whose peer has sent nothing that authenticated for this long may be
    /// taken back when a new client finds the session table full: a client that died or lost its
    /// network never disconnects, and its session would otherwise hold the number forever. Only
    /// then, and only the longest-silent one. A live client whose session was taken sees its next
    /// RPC fail with `.sessionFailed` and connects again. 0: never.
    public var reclaimIdleSessionsAfterNs: UInt64 = 60_000_000_000
    /// Bytes of multi-packet requests a server holds while their packets arrive, over all its
    /// sessions. Each takes its whole size at its first packet, and a peer could otherwise hold
    /// 8 slots × 8 MiB per session by never sending the rest. A first packet that would go over
    /// is dropped (`assembly_budget`; its client sends it again), after freeing any request that
    /// has made no progress for longer than this end's silence limit (its client has given up).
    public var maxAssemblingBytes = 128 << 20
    /// The most of `maxAssemblingBytes` one session's partly received requests may hold, so one
    /// peer's uploads (live or stalled) cannot take the whole budget: with the defaults it takes
    /// four sessions, each a separate authenticated handshake. A session holding nothing may always
    /// start one request of any size the budget has room for. A first packet over the session's
    /// share is dropped (`assembly_session_share`) and sent again by its client.
    public var maxAssemblingBytesPerSession = 32 << 20
    /// Packets each client session may have in flight (request packets and response packets
    /// asked for), 1 ... ``Wire/sessionCredits`` (the longest run a server answers). Fewer bound
    /// the burst a session puts on its server's receive queue, at the cost of more round trips per
    /// large message: with many sessions per server, their sum should fit the server's socket
    /// receive buffer. A client-side setting; servers need none. Each request whose handler is
    /// running holds one credit (its last packet's) until the response begins, so with fewer
    /// credits than the 8 slots, slow handlers can hold up the session's other requests. A
    /// rejected request (no handler for its type) gives its credits back at once, while the
    /// server may still answer its other packets in flight with rejections.
    public var sessionCredits = Wire.sessionCredits
    /// Data-plane protection. Anything but `.none` needs a Nexus with TLS credentials.
    public var crypto: CryptoMode = .adaptive
    public var algorithm: AEADAlgorithm = .aes128GCM
    public var backend: AEADBackendKind = .preferred
    /// A client starts a key update after sealing this many packets under one key (AES-GCM's
    /// limit per key is 2^23 packets of this size class, RFC 9001 §6.6)...
    public var keyUpdatePackets: UInt64 = 1 << 23
    /// ...or after this much time under one key.
    public var keyUpdateIntervalNs: UInt64 = 120_000_000_000
    public init() {}

    /// Plaintext, for tests and benchmarks that measure the runtime without crypto.
    public static var plaintext: RpcConfig {
        var c = RpcConfig()
        c.crypto = .none
        return c
    }
}

/// The transport-independent part of an Rpc: sessions, slots, credits, buffers, the TX queue
/// and the protocol state machines. ``Rpc`` owns one and feeds it packets from its transport.
///
/// Threading: everything here belongs to the Rpc's dispatch thread, except the two queues that
/// background threads and the session-management thread post to (`postBackgroundResponse`,
/// `postSessionManagement`), which are thread-safe.
public final class RpcEndpoint: @unchecked Sendable {
    public let id: UInt8
    public let mtu: Int
    public let dataPerPacket: Int
    public let config: RpcConfig
    public let numaNode: Int
    /// Whether this endpoint's sessions are encrypted (all of them or none: the mode is per Rpc).
    let encrypts: Bool
    let transportKind: TransportKind
    let localRoute: RoutingInfo
    let nexus: Nexus
    let sharedPool: SharedBufferPool

    /// Application state that handlers and continuations reach without capturing it.
    public var context: UnsafeMutableRawPointer?
    /// Called on the dispatch thread when a session connects, fails or disconnects.
    public var sessionEventHandler: ((SessionEvent) -> Void)?

    // MARK: Tables (allocated in init, freed in deinit; indexed by session number)
    let maxSessions: Int
    let sessions: UnsafeMutablePointer<Session>
    /// Resolved peer routes, referenced by TX items while they are queued.
    let routes: UnsafeMutablePointer<RoutingInfo>
    /// The name a client session's server must have in its certificate (nil: any of the CA's);
    /// session management only, kept apart from `sessions` so that table stays trivial to copy.
    var sessionPeerNames: [String?]
    /// `maxSessions * window` slots; session s owns slots s*8 ..< s*8+8.
    let slots: UnsafeMutablePointer<Slot>
    let handlers: [HandlerEntry?]
    var pool: BufferPool
    /// Packets waiting for the AES pool (sealing before TX, opening before processing).
    var txOffload: OffloadRing
    var rxOffload: OffloadRing
    let aesPool: AESPool?
    /// Packets of messages at least this large go to the AES pool (0: all; Int.max: none).
    let offloadThreshold: Int
    var offloadsReceive: Bool { offloadThreshold != Int.max }
    /// Data-plane keys per session (all disabled when the crypto mode is `.none`).
    let crypto: UnsafeMutablePointer<SessionCrypto>
    /// One MTU of scratch space: a packet is copied here before trying a second key on it.
    let scratch: UnsafeMutableRawPointer

    // MARK: TX queue: filled by the protocol, drained by ``Rpc`` through its transport.
    let txCapacity: Int
    let txQueue: UnsafeMutablePointer<TxItem>
    var txCount = 0
    /// The first packet of a long response is queued: the TX queue should go out before the rest
    /// of the RX burst is processed (see `enqueueResponse`). Cleared by every flush.
    var sendEarly = false
    /// Where sealed packets are built: one slot per item of a transport burst, each an MTU plus
    /// tag and nonce room. Reused every burst (the transport copies or sends before returning).
    let txStaging: UnsafeMutableRawPointer
    let txStagingSlot: Int
    let txBurst: Int
    /// A burst of packets the AES pool has sealed, on their way to the transport.
    let sealedBurst: UnsafeMutablePointer<TxItem>
    /// Incremented at every flush; a slot that queued packets since the last flush carries it.
    var flushEpoch: UInt64 = 1

    // MARK: Client slots waiting for credits (global slot indices, FIFO ring)
    let stallQueue: UnsafeMutablePointer<Int32>
    var stallHead = 0
    var stallCount = 0

    // MARK: Time
    /// Monotonic time of the current event-loop iteration.
    var now: UInt64 = 0
    var lastLossScan: UInt64 = 0

    // MARK: Cross-thread inboxes
    let backgroundResponses: BoundedQueue<ServerResponse>
    let backgroundOutstanding = Atomic<Int>(0)
    /// Set while the dispatch thread sleeps with background responses outstanding: whoever posts
    /// one then rings the doorbell (see ``Rpc/waitForTraffic(timeoutMs:)``).
    let sleepingOnBackground = Atomic<Bool>(false)
    let sessionManagementInbox = Mutex<[SessionManagementEvent]>([])
    let sessionManagementPending = Atomic<Int>(0)
    /// An eventfd that other threads ring when they leave work for an idle dispatch thread
    /// sleeping in ``Rpc/waitForTraffic(timeoutMs:)`` (-1 if none could be made: the sleep then
    /// just times out). Owned: closed in deinit.
    let doorbell: Int32

    // MARK: Statistics (plain counters, dispatch thread only)
    var counters = RpcStats()
    /// Sizes of the multi-packet requests whose packets are still arriving (see
    /// ``RpcConfig/maxAssemblingBytes``).
    var assemblingBytes = 0
    /// When the server last looked for abandoned requests to free (see `admitsAssembly`).
    var lastAbandonedScan: UInt64 = 0
    let dropCounts: UnsafeMutablePointer<UInt64>

    init(
        id: UInt8, nexus: Nexus, transportKind: TransportKind, localRoute: RoutingInfo, mtu: Int, burst: Int,
        numaNode: Int, config: RpcConfig
    ) {
        self.id = id
        self.nexus = nexus
        self.transportKind = transportKind
        self.localRoute = localRoute
        self.mtu = mtu
        self.dataPerPacket = Wire.dataPerPacket(mtu: mtu)
        self.numaNode = numaNode
        self.config = config
        doorbell = max(-1, ee_doorbell_open())
        encrypts = config.crypto.encrypts
        txBurst = burst
        txStagingSlot = (mtu + 2 * Wire.tagSize + 63) & ~63
        txStaging = .allocate(byteCount: txStagingSlot * burst, alignment: 64)
        sealedBurst = .allocate(capacity: burst)
        aesPool = config.crypto.usesPool ? nexus.aesPool : nil
        offloadThreshold =
            switch config.crypto {
            case .none, .inline: Int.max
            case .offload: 0
            case .adaptive(let threshold): threshold ?? nexus.aesPool?.adaptiveThreshold(config.backend) ?? Int.max
            }
        // Enough entries for a few bursts in flight; the staging memory is capped at 16 MiB a ring.
        let ringEntries = aesPool == nil ? 1 : max(32, min(512, (16 << 20) / txStagingSlot))
        txOffload = OffloadRing(capacity: ringEntries, slotSize: txStagingSlot)
        rxOffload = OffloadRing(capacity: ringEntries, slotSize: txStagingSlot)
        self.sharedPool = nexus.sharedPool
        precondition(config.maxSessions > 0 && config.maxSessions < Int(SessionManagementMessage.unknownSession))
        precondition(
            config.sessionCredits >= 1 && config.sessionCredits <= Wire.sessionCredits,
            "sessionCredits must be 1-\(Wire.sessionCredits)")
        maxSessions = config.maxSessions
        sessions = .allocate(capacity: maxSessions)
        sessions.initialize(repeating: Session(), count: maxSessions)
        routes = .allocate(capacity: maxSessions)
        routes.initialize(repeating: RoutingInfo(), count: maxSessions)
        sessionPeerNames = Array(repeating: nil, count: maxSessions)
        crypto = .allocate(capacity: maxSessions)
        crypto.initialize(repeating: SessionCrypto(), count: maxSessions)
        scratch = .allocate(byteCount: mtu + 64, alignment: 64)
        let slotCount = maxSessions * Wire.sessionRequestWindow
        slots = .allocate(capacity: slotCount)
        slots.initialize(repeating: Slot(), count: slotCount)
        handlers = nexus.frozenHandlers()
        pool = BufferPool(numaNode: numaNode)
        // Each client packet spends a credit and each server packet answers one received
        // packet, so credits bound what one loop iteration can queue.
        txCapacity = maxSessions * Wire.sessionCredits + 4 * 256
        txQueue = .allocate(capacity: txCapacity)
        stallQueue = .allocate(capacity: slotCount)
        backgroundResponses = BoundedQueue(capacity: slotCount)
        dropCounts = .allocate(capacity: DropReason.allCases.count)
        dropCounts.initialize(repeating: 0, count: DropReason.allCases.count)
        now = ee_now_ns()
        lastLossScan = now
        // Warm the classes the steady state uses, so the first requests do not map slabs.
        pool.reserve(size: dataPerPacket, count: 2 * Wire.sessionRequestWindow * 8)
    }

    deinit {
        // Background handlers hold pointers into our slots and buffers; wait for them, but not
        // forever (a handler that never answers, or a Nexus already shut down).
        let deadline = ee_now_ns() &+ 2_000_000_000
        while backgroundOutstanding.load(ordering: .acquiring) > 0 && ee_now_ns() < deadline {
            drainBackgroundResponses()
        }
        drainBackgroundResponses()
        for s in 0..<maxSessions where sessions[s].state != .free { releaseSession(s) }
        for event in sessionManagementInbox.withLock({ $0 }) { event.discard() }
        sessions.deinitialize(count: maxSessions)
        sessions.deallocate()
        routes.deallocate()
        crypto.deallocate()
        scratch.deallocate()
        slots.deinitialize(count: maxSessions * Wire.sessionRequestWindow)
        slots.deallocate()
        waitForOffloadedJobs()
        txOffload.deallocate()
        rxOffload.deallocate()
        txQueue.deallocate()
        txStaging.deallocate()
        sealedBurst.deallocate()
        stallQueue.deallocate()
        dropCounts.deallocate()
        if doorbell >= 0 { close(doorbell) }
    }

    // MARK: Buffers

    /// A buffer from this endpoint's pool, `size` set; nil above ``Wire/maxMessageSize``.
    /// Dispatch thread only.
    public func allocate(size: Int) -> MsgBuffer? { pool.allocate(size: size) }

    /// Returns a buffer to the pool it came from. Dispatch thread only.
    public func free(_ buffer: MsgBuffer) {
        switch buffer.origin {
        case .endpointPool: pool.free(buffer)
        case .sharedPool: sharedPool.free(buffer)
        }
    }

    // MARK: Inspection

    /// Wakes the dispatch thread if it sleeps in ``Rpc/waitForTraffic(timeoutMs:)`` (to stop it,
    /// say). Thread-safe.
    public func wake() { if doorbell >= 0 { ee_doorbell_ring(doorbell) } }

    /// True while background handlers hold requests of this endpoint (their responses are not
    /// back yet). An event loop sharing its core with the background threads yields then.
    public var hasBackgroundWork: Bool { backgroundOutstanding.load(ordering: .relaxed) > 0 }

    public var stats: RpcStats {
        var s = counters
        for r in DropReason.allCases where dropCounts[r.rawValue] > 0 { s.drops[r] = dropCounts[r.rawValue] }
        return s
    }

    /// Bytes this endpoint's buffer pool has mapped (it grows on demand, never shrinks).
    public var pooledBytes: Int { pool.mappedBytes }

    /// Session numbers not free, client and server ends alike (diagnostics; walks the table).
    public var sessionsInUse: Int {
        var n = 0
        for s in 0..<maxSessions where sessions[s].state != .free { n += 1 }
        return n
    }

    public func sessionState(_ session: Int) -> SessionState {
        guard session >= 0 && session < maxSessions else { return .free }
        return sessions[session].state
    }

    public func sessionFailure(_ session: Int) -> SessionError? {
        guard session >= 0 && session < maxSessions else { return nil }
        return sessions[session].failure
    }

    /// Sessions in use at this endpoint, by role.
    public func sessionCount(role: SessionRole) -> Int {
        (0..<maxSessions).reduce(0) { $0 + (sessions[$1].state != .free && sessions[$1].role == role ? 1 : 0) }
    }

    // MARK: Internals shared by the client and server paths

    @inline(__always)
    func drop(_ reason: DropReason) {
        dropCounts[reason.rawValue] &+= 1
    }

    /// Appends a packet to the TX queue. The queue is sized so this cannot overflow in correct
    /// operation; if it ever does, the packet is dropped and counted, and the client's
    /// retransmission recovers it.
    @inline(__always)
    func queuePacket(_ header: PacketHeader, data: UnsafeRawPointer?, length: Int, slot k: Int, presealed: Bool = false) {
        guard txCount < txCapacity else {
            drop(.noBuffer)
            return
        }
        let session = k / Wire.sessionRequestWindow
        (txQueue + txCount).initialize(
            to: TxItem(
                header: header, data: data, dataLength: length, route: UnsafePointer(routes + session),
                owner: Int32(k)))
        txQueue[txCount].presealed = presealed
        txCount &+= 1
        slots[k].queuedEpoch = flushEpoch
    }

    /// Removes the slot's packets that are queued but not yet sent, before the buffers they point
    /// into go back to a pool (or back to the application, which may refill them: sending them
    /// later would put different bytes under a packet number already used).
    func withdrawQueuedPackets(slot k: Int) {
        cancelOffloadedPackets(slot: k)
        guard slots[k].queuedEpoch == flushEpoch else { return }
        var kept = 0
        for i in 0..<txCount where txQueue[i].owner != Int32(k) {
            txQueue[kept] = txQueue[i]
            kept += 1
        }
        txCount = kept
    }

    /// Called by ``Rpc`` once the TX queue has gone out.
    @inline(__always)
    func didFlush() {
        counters.packetsSent &+= UInt64(txCount)
        txCount = 0
        sendEarly = false
        flushEpoch &+= 1
    }

    /// Byte count of packet `index` of a message of `size` bytes.
    @inline(__always)
    func sliceLength(size: Int, index: Int) -> Int {
        min(dataPerPacket, size - index * dataPerPacket)
    }

    /// A session's token, from the system's CSPRNG (getrandom): part of it shows in every data
    /// packet (the request numbers start from it), and a generator whose state could be worked
    /// out from a few sessions' packets would give away every other session's token, with which
    /// a disconnect can name a session. Control plane only.
    func freshToken() -> UInt64 {
        var random = SystemRandomNumberGenerator()
        var token: UInt64 = 0
        while token == 0 { token = random.next() }
        return token
    }

    // MARK: Packet demultiplexing

    /// Handles one received packet. The bytes are valid for the duration of the call.
    @inline(__always)
    func process(_ packet: UnsafeMutableRawBufferPointer) {
        counters.packetsReceived &+= 1
        guard let base = packet.baseAddress else { return drop(.truncated) }
        if packet.count > mtu { return drop(.badPayloadLength) }
        let header: PacketHeader
        switch PacketHeader.parse(base, length: packet.count, trailer: encrypts ? Wire.tagSize : 0) {
        case .success(let h): header = h
        case .failure(let reason): return drop(reason)
        }
        let s = Int(header.destSession)
        guard s < maxSessions, sessions[s].state == .connected || sessions[s].state == .disconnecting else {
            return drop(.unknownSession)
        }
        var payload = UnsafeRawBufferPointer(start: base + Wire.headerSize, count: packet.count - Wire.headerSize)
        if encrypts {
            if offloadsReceive && submitOpen(base, length: packet.count, header: header, session: s) { return }
            // Verify before acting: nothing below runs for a packet that does not authenticate.
            // A packet the protocol will place in a message buffer is decrypted straight there,
            // which saves the copy a plaintext packet needs.
            let destination = payloadDestination(
                header, count: packet.count - Wire.headerSize - Wire.tagSize, session: s)
            guard let opened = openPacket(base, length: packet.count, header: header, session: s, into: destination)
            else { return }
            payload = opened
        }
        dispatch(header, payload: payload, session: s)
    }

    /// Where the protocol will copy the payload of this packet if it authenticates: the next
    /// slice of a multi-packet message being assembled (a response at a client, a request after
    /// its first packet at a server), or nil. It changes nothing, and names only the slice the
    /// packet would fill in order, which holds nothing yet: an open that fails there leaves
    /// bytes the authentic packet will overwrite, and no received data is touched.
    @inline(__always)
    func payloadDestination(_ header: PacketHeader, count: Int, session s: Int) -> UnsafeMutableRawPointer? {
        guard count > 0 else { return nil }
        let k = s * Wire.sessionRequestWindow + Int(header.requestNumber % UInt64(Wire.sessionRequestWindow))
        let slot = slots + k
        let p = Int(header.packetNumber)
        let size = Int(header.messageSize)
        switch (sessions[s].role, header.type) {
        case (.client, .response):
            guard !header.rejected, let response = slot.pointee.response, slot.pointee.request != nil,
                slot.pointee.requestNumber == header.requestNumber, p == slot.pointee.numRx,
                p < slot.pointee.numTx, p >= slot.pointee.requestPackets - 1, size <= response.capacity
            else { return nil }
            let j = p - (slot.pointee.requestPackets - 1)
            if j > 0 {
                guard size == slot.pointee.responseSize, j < slot.pointee.responsePackets else { return nil }
            }
            guard j * dataPerPacket < size, count == sliceLength(size: size, index: j) else { return nil }
            return response.data + j * dataPerPacket
        case (.server, .request):
            guard p > 0, let assembly = slot.pointee.assembly, header.requestNumber == slot.pointee.requestNumber,
                !slot.pointee.rejected, p == slot.pointee.serverNumRx, size == slot.pointee.serverRequestSize,
                header.requestType == slot.pointee.requestType, p < slot.pointee.serverRequestPackets,
                count == sliceLength(size: size, index: p)
            else { return nil }
            return assembly.data + p * dataPerPacket
        default:
            return nil
        }
    }

    /// Puts a packet's payload at `destination`, unless it was decrypted there already.
    @inline(__always)
    func place(_ payload: UnsafeRawBufferPointer, at destination: UnsafeMutableRawPointer) {
        guard let source = payload.baseAddress, source != UnsafeRawPointer(destination) else { return }
        ee_copy(destination, source, payload.count)
    }

    /// Hands an authenticated (or plaintext-session) packet to the protocol.
    @inline(__always)
    func dispatch(_ header: PacketHeader, payload: UnsafeRawBufferPointer, session s: Int) {
        sessions[s].lastHeard = now
        switch (sessions[s].role, header.type) {
        case (.server, .request): serverReceiveRequest(header, payload: payload, session: s)
        case (.server, .requestForResponse): serverReceiveRFR(header, session: s)
        case (.client, .response): clientReceiveResponse(header, payload: payload, session: s)
        case (.client, .creditReturn): clientReceiveCreditReturn(header, session: s)
        default: drop(.wrongDirection)
        }
    }
}
