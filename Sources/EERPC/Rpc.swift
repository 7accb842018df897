import Synchronization

import CSystemShims
import Glibc

/// An Rpc endpoint bound to one dispatch thread and one transport: eRPC's `Rpc<Transport>`.
///
/// Create it on the thread that will run its event loop (it pins that thread to `cpu` and puts
/// its buffers on that CPU's NUMA node), and use it only from there. Nothing in it is shared;
/// background handlers and the session-management thread reach it through lock-free or
/// control-plane queues.
///
/// The class is generic over the transport, so the event loop is specialised per transport.
/// Prints a warning to standard error once per process and message.
func warnOnce(_ message: String) {
    let first = warnedMessages.withLock { $0.insert(message).inserted }
    if first {
        let line = message + "\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
    }
}

private let warnedMessages = Mutex<Set<String>>([])

public final class Rpc<T: Transport & ~Copyable> {
    public let endpoint: RpcEndpoint
    public private(set) var transport: T
    /// When true, the loop adds the wall time spent inside the transport's `receive` and
    /// `transmit` calls to `transportNs` (two clock reads per call), so benchmarks can split the
    /// dispatch thread's time between the kernel or NIC and the runtime itself.
    public var instrumented = false
    public private(set) var transportNs: UInt64 = 0
    private let nexus: Nexus

    /// - Parameters:
    ///   - id: unique within the process; peers name it in `createSession`.
    ///   - cpu: pin the calling thread to this CPU (nil leaves it unpinned).
    public init(nexus: Nexus, id: UInt8, transport: consuming T, cpu: Int? = nil, config: RpcConfig = RpcConfig())
        throws(NexusError)
    {
        if config.crypto.encrypts && nexus.tls == nil { throw .encryptionNeedsTLS }
        if config.crypto.usesPool && nexus.aesPool == nil { throw .noAESPool }
        if !config.crypto.encrypts {
            warnOnce(
                "eeRPC WARNING: Rpc \(id) runs with crypto mode none: its data-plane packets are neither encrypted "
                    + "nor authenticated.")
        }
        let node = cpu.map { Threads.pinCurrentThread(to: $0) } ?? 0
        let endpoint = RpcEndpoint(
            id: id, nexus: nexus, transportKind: T.kind, localRoute: transport.localRoute, mtu: transport.mtu,
            burst: transport.maxBurst, numaNode: node, config: config)
        try nexus.add(endpoint)
        self.endpoint = endpoint
        self.transport = transport
        self.nexus = nexus
        self.cpu = cpu
        nexus.dispatchThreadPinned(cpu, added: true)
    }

    private let cpu: Int?

    deinit {
        nexus.dispatchThreadPinned(cpu, added: false)
        nexus.remove(endpoint)
    }

    // MARK: Event loop

    /// One iteration: session management (if anything is pending), an RX burst, slots waiting to
    /// send (out of credits, or asking for more of a response after this burst), background
    /// responses, the loss scan when due, then the TX burst.
    /// Returns whether the iteration had anything to do (received, sent or collected packets),
    /// so a caller can tell a busy dispatch thread from an idly polling one.
    @inline(__always)
    @discardableResult
    public func runOnce() -> Bool {
        let e = endpoint
        e.now = ee_now_ns()
        if e.sessionManagementPending.load(ordering: .acquiring) > 0 { handleSessionManagement() }
        let t0 = instrumented ? ee_now_ns() : 0
        let n = transport.receive()
        if instrumented { transportNs &+= ee_now_ns() &- t0 }
        for i in 0..<n {
            e.process(transport.received(i))
            // A packet may queue up to a credit window (a request-for-response run); a receive
            // may hold thousands of packets (UDP GRO), more than the TX queue: send before it fills.
            if (e.sendEarly || e.txCount > e.txCapacity &- Wire.sessionCredits) && i + 1 < n { flush() }
        }
        if e.rxOffload.unposted > 0 { e.postOffloaded() }
        if e.rxOffload.count > 0 {
            // Nothing arrived: rather than wait for a worker that may have no CPU, do the job.
            if n == 0 { _ = e.rxOffload.helpHead() }
            e.harvestOpened()
        }
        if n == 0 && e.txOffload.count > 0 { _ = e.txOffload.helpHead() }
        if e.stallCount > 0 { e.processStallQueue() }
        if !e.backgroundResponses.isEmpty { e.drainBackgroundResponses() }
        if e.now &- e.lastLossScan > e.lossScanInterval { e.scanForLoss() }
        let worked = n > 0 || e.txCount > 0 || e.txOffload.count > 0 || e.rxOffload.count > 0
        flush()
        return worked
    }

    /// Runs the event loop for `nanoseconds`.
    public func run(forNanoseconds nanoseconds: UInt64) {
        let end = ee_now_ns() &+ nanoseconds
        repeat { runOnce() } while endpoint.now < end
    }

    /// Runs the event loop until `condition` is true or `timeoutNs` passes; returns the condition.
    @discardableResult
    public func run(until condition: () -> Bool, timeoutNs: UInt64 = 10_000_000_000) -> Bool {
        let end = ee_now_ns() &+ timeoutNs
        while !condition() {
            runOnce()
            if endpoint.now > end { return condition() }
        }
        return true
    }

    private func flush() {
        let e = endpoint
        var sent = 0
        while sent < e.txCount {
            let n = min(e.txCount - sent, e.txBurst)
            var out = n
            if e.encrypts {
                // Packets for the AES pool leave the queue; the rest are sealed here, compacted
                // to the front of the burst.
                out = 0
                let burst = e.txQueue + sent
                for i in 0..<n {
                    let presealed = burst[i].presealed  // sealed already: goes out as it is
                    if !presealed && e.offloads(messageSize: PacketHeader.carriedMessageSize(word0: burst[i].header0)) {
                        while !e.submitSeal(burst + i) {
                            e.postOffloaded()
                            if !e.txOffload.helpHead() { spinPause() }
                            sendSealed()
                        }
                        continue
                    }
                    if out != i { burst[out] = burst[i] }
                    if !presealed { e.sealIfNeeded(burst + out, staging: e.txStaging + out * e.txStagingSlot) }
                    out += 1
                }
                // The pool starts on this burst's packets while the rest go out.
                if e.txOffload.unposted > 0 { e.postOffloaded() }
            }
            // The whole burst goes out before its staging slots are reused.
            let t0 = instrumented ? ee_now_ns() : 0
            var done = 0
            while done < out { done += transport.transmit(e.txQueue + sent + done, count: out - done) }
            if instrumented { transportNs &+= ee_now_ns() &- t0 }
            sent += n
        }
        e.didFlush()
        // Jobs a full pool did not take last time are tried again.
        if e.txOffload.unposted > 0 { e.postOffloaded() }
        if e.txOffload.count > 0 { sendSealed() }
    }

    /// Sends the packets the AES pool has sealed, in the order they were queued.
    private func sendSealed() {
        let e = endpoint
        var batch = 0
        while let item = e.nextSealed() {
            // The sealed bytes stay in the ring's staging slots until the next submission, which
            // comes after this burst is sent.
            e.sealedBurst[batch] = item
            batch += 1
            if batch == e.txBurst {
                var done = 0
                while done < batch { done += transport.transmit(e.sealedBurst + done, count: batch - done) }
                batch = 0
            }
        }
        var done = 0
        while done < batch { done += transport.transmit(e.sealedBurst + done, count: batch - done) }
    }

    private func handleSessionManagement() {
        for event in endpoint.takeSessionManagementEvents() {
            endpoint.handleSessionManagement(event) { transport.resolve($0) }
        }
    }

    /// For a dispatch thread that has been idle for a while: blocks until a packet may have
    /// arrived, another thread rings the endpoint's doorbell (a session-management event was
    /// queued, or a background or deferred handler responded), or `timeoutMs` passes, unless the
    /// endpoint has work in progress that arrives by other paths (responses already posted, AES
    /// pool jobs, queued session-management events, stalled or in-flight client requests, whose
    /// timers must run).
    ///
    /// Requests held by background or deferred handlers do not keep it awake: with fsync a write
    /// holds its request for a millisecond or more, and a dispatch thread polling all that time
    /// took the CPU from the writer's neighbours (on a 2-core machine running three nodes and a
    /// client, reads waited for the scheduler's 4 ms tick).
    public func waitForTraffic(timeoutMs: Int32) {
        let e = endpoint
        // Read before the response queue: a responder pushes, then decrements (releasing), so a
        // count of 0 seen here means its response is visible below; a count above 0 takes the
        // fenced path, where the responder sees the flag or we see its response.
        let outstanding = e.backgroundOutstanding.load(ordering: .acquiring)
        if hasWorkArrivingOtherwise || e.hasClientRequestsInFlight { return }
        if outstanding > 0 {
            // Without a doorbell nobody could wake us for the response: keep polling.
            guard e.doorbell >= 0 else { return }
            e.sleepingOnBackground.store(true, ordering: .relaxed)
            // Pairs with the fence in `postBackgroundResponse`.
            atomicMemoryFence(ordering: .sequentiallyConsistent)
            if e.backgroundResponses.isEmpty { sleepUntilTraffic(timeoutMs: timeoutMs) }
            e.sleepingOnBackground.store(false, ordering: .relaxed)
        } else {
            sleepUntilTraffic(timeoutMs: timeoutMs)
        }
    }

    /// For a client's event loop that has found nothing to do for a while, with requests in
    /// flight: sleeps until a packet may have arrived, the doorbell rings, or `timeoutMs` passes.
    /// The client's timers (retransmission after ``RpcConfig/retransmitTimeoutNs``) then run late
    /// by at most `timeoutMs`. Returns at once when no request is in flight, or when work is
    /// pending that arrives by other paths.
    ///
    /// A client that polls through a slow reply takes its core from whoever shares it, a node
    /// of a local cluster say, which then waits for the scheduler's tick (4 ms here) to run.
    public func waitForResponses(timeoutMs: Int32) {
        let e = endpoint
        // Nothing to wait for: an open-loop caller between requests must not be held up.
        guard e.hasClientRequestsInFlight, !hasWorkArrivingOtherwise else { return }
        sleepUntilTraffic(timeoutMs: timeoutMs)
    }

    /// Work that reaches the dispatch thread without a packet or a doorbell ring, so that it must
    /// not sleep: responses already posted, AES pool jobs, stalled requests, session-management
    /// events.
    private var hasWorkArrivingOtherwise: Bool {
        let e = endpoint
        return !e.backgroundResponses.isEmpty || e.txOffload.count > 0 || e.rxOffload.count > 0 || e.stallCount > 0
            || e.sessionManagementPending.load(ordering: .relaxed) > 0
    }

    /// Blocks in poll(2) on the socket and the doorbell for up to `timeoutMs`, then clears the
    /// doorbell (whoever rang it published their work first, and the caller looks again).
    private func sleepUntilTraffic(timeoutMs: Int32) {
        transport.waitForPackets(timeoutMs: timeoutMs, doorbell: endpoint.doorbell)
        if endpoint.doorbell >= 0 { ee_doorbell_clear(endpoint.doorbell) }
    }

    // MARK: Conveniences that forward to the endpoint

    public var id: UInt8 { endpoint.id }
    public var stats: RpcStats { endpoint.stats }

    /// Connects a session and runs the event loop until it is connected; throws if it fails.
    /// With `peerName`, the server's certificate must be issued to that name.
    public func connect(
        host: String, port: UInt16, remoteRpcID: UInt8, peerName: String? = nil, timeoutNs: UInt64 = 10_000_000_000
    ) throws(SessionError) -> Int {
        let s = try endpoint.createSession(host: host, port: port, remoteRpcID: remoteRpcID, peerName: peerName)
        run(until: { endpoint.sessionState(s) != .connecting }, timeoutNs: timeoutNs)
        switch endpoint.sessionState(s) {
        case .connected: return s
        case .connecting:
            endpoint.abandonConnect(s)
            throw .timedOut
        default:
            let failure = endpoint.sessionFailure(s) ?? .protocolError
            try? endpoint.destroySession(s)
            throw failure
        }
    }

    /// Disconnects a client session and runs the event loop until the server has answered.
    public func disconnect(_ session: Int, timeoutNs: UInt64 = 10_000_000_000) throws(SessionError) {
        try endpoint.destroySession(session)
        run(until: { endpoint.sessionState(session) == .free }, timeoutNs: timeoutNs)
    }
}
