import CSystemShims
import Synchronization

// MARK: - Server side of the client-driven protocol
//
// The server keeps no timers and sends nothing unsolicited: every packet it sends answers one
// it received. Per slot it keeps the current request number and, once the handler has answered,
// the response, so a retransmitted request is answered from this cache and the handler runs at
// most once per request. One that arrives while its handler still runs is answered with a
// "handler running" notice, so a client waiting on a slow handler (a long scan, a disk that
// stalls a commit) can tell it from a dead server.

extension RpcEndpoint {
    func serverReceiveRequest(_ header: PacketHeader, payload: UnsafeRawBufferPointer, session s: Int) {
        let k = s * Wire.sessionRequestWindow + Int(header.requestNumber % UInt64(Wire.sessionRequestWindow))
        let slot = slots + k
        let p = Int(header.packetNumber)
        let size = Int(header.messageSize)
        // What the header alone can prove wrong is dropped before any slot state is looked at.
        guard p < Wire.packetCount(size: size, dataPerPacket: dataPerPacket) else { return drop(.badPacketNumber) }
        guard payload.count == (size == 0 ? 0 : sliceLength(size: size, index: p)) else {
            return drop(.badPayloadLength)
        }

        if header.requestNumber == slot.pointee.requestNumber &+ UInt64(Wire.sessionRequestWindow) {
            // The next request on this slot. The client sends it only after it has the whole
            // previous response, so a handler still holding this slot means a misbehaving peer.
            guard !slot.pointee.handlerActive else { return drop(.outOfOrder) }
            guard let entry = handlers[Int(header.requestType)] else {
                return rejectRequest(header, slot: k)
            }
            guard p == 0 else { return drop(.outOfOrder) }  // its first packet was lost or is late
            let packets = Wire.packetCount(size: size, dataPerPacket: dataPerPacket)
            var assembly: MsgBuffer? = nil
            releaseAssembly(slot: k)  // a multi-packet request its client gave up on, or a copy no background thread took
            if packets > 1 || entry.mode != .foreground {
                if packets > 1 {
                    guard withinSessionShare(size: size, session: s) else { return drop(.assemblySessionShare) }
                    guard admitsAssembly(size: size) else { return drop(.assemblyBudget) }
                }
                guard let buffer = pool.allocate(size: size) else { return drop(.noBuffer) }
                assembly = buffer
                if payload.count > 0 { ee_copy(buffer.data, payload.baseAddress!, payload.count) }
            }
            retireResponse(slot: k)
            slot.pointee.requestNumber = header.requestNumber
            slot.pointee.requestType = header.requestType
            slot.pointee.serverRequestSize = size
            slot.pointee.serverRequestPackets = packets
            slot.pointee.serverNumRx = 1
            slot.pointee.assembly = assembly
            if packets == 1 {
                runHandler(entry, slot: k, session: s, zeroCopyRequest: payload)
            } else {
                charge(slot: k, size)
                slot.pointee.serverLastRx = now
                sendCreditReturn(header, slot: k)
            }
            return
        }

        // Anything but the next or the current request is stale (or forged): drop it.
        guard header.requestNumber == slot.pointee.requestNumber else { return drop(.outOfOrder) }
        // A slot that has held no request yet starts at its base number, which no client sends
        // (its first request is the next one): a packet claiming it is forged, and the slot has
        // no assembly, handler or response to answer it with.
        guard slot.pointee.serverRequestPackets > 0 else { return drop(.outOfOrder) }
        // The current request: its copies must match it, or a rejection (whose nonce leaves out
        // the request type) would be sealed again under the same nonce with another header.
        guard size == slot.pointee.serverRequestSize, header.requestType == slot.pointee.requestType else {
            return drop(.badPacketNumber)
        }
        if slot.pointee.rejected { return sendRejection(header, slot: k) }
        let packets = slot.pointee.serverRequestPackets
        let received = slot.pointee.serverNumRx
        if p < received {
            // A retransmission of a packet we already have: its client is still there.
            slot.pointee.serverLastRx = now
            if p < packets - 1 {
                sendCreditReturn(header, slot: k)
            } else if slot.pointee.responseReady {
                counters.responsesResent &+= 1
                sendResponsePacket(slot: k, index: 0)
            } else if slot.pointee.handlerActive {
                sendHandlerRunningNotice(header, slot: k)
            } else {
                drop(.outOfOrder)  // no handler will answer (the Nexus is shutting down)
            }
            return
        }
        guard p == received else { return drop(.outOfOrder) }
        // Nil if the request was freed as abandoned (`freeAbandonedAssemblies`).
        guard let assembly = slot.pointee.assembly else { return drop(.outOfOrder) }
        place(payload, at: assembly.data + p * dataPerPacket)
        slot.pointee.serverNumRx = received + 1
        slot.pointee.serverLastRx = now
        if p < packets - 1 {
            sendCreditReturn(header, slot: k)
        } else {
            uncharge(slot: k)  // whole: the buffer is the handler's now
            // The type had a handler at packet 0 and the table never changes.
            let entry = handlers[Int(slot.pointee.requestType)].unsafelyUnwrapped
            runHandler(entry, slot: k, session: s, zeroCopyRequest: nil)
        }
    }

    /// An RFR asks for response packets j ..< j + count, where its packet number is N − 1 + j and
    /// the count is in its size field. A run is at most one credit window: the client may not
    /// have more in flight, so a larger one is a misbehaving peer asking for amplification. Each
    /// RFR is answered once: one that does not move past the packets already asked for in its
    /// attempt (or comes from an older attempt) is a copy, dropped and counted.
    func serverReceiveRFR(_ header: PacketHeader, session s: Int) {
        let k = s * Wire.sessionRequestWindow + Int(header.requestNumber % UInt64(Wire.sessionRequestWindow))
        let slot = slots + k
        guard header.requestNumber == slot.pointee.requestNumber, slot.pointee.responseReady,
            !slot.pointee.rejected
        else {
            return drop(.outOfOrder)
        }
        let first = Int(header.packetNumber) - (slot.pointee.serverRequestPackets - 1)
        let count = header.runCount
        let response = slot.pointee.serverResponse.unsafelyUnwrapped
        guard first >= 1, count >= 1, count <= Wire.sessionCredits,
            first + count <= Wire.packetCount(size: response.size, dataPerPacket: dataPerPacket)
        else {
            return drop(.badPacketNumber)
        }
        let attempt = header.runAttempt
        guard attempt > slot.pointee.rfrAttempt || (attempt == slot.pointee.rfrAttempt && first > slot.pointee.rfrLast)
        else {
            return drop(.repeatedRequestForResponse)
        }
        slot.pointee.rfrAttempt = attempt
        slot.pointee.rfrLast = first + count - 1
        for j in first..<(first + count) {
            // A retransmitted RFR whose packet still waits in the AES pool: that copy will go out.
            // Another copy would only lengthen the queue the client is timing out on; with short
            // timeouts and a deep pool queue the copies crowded out new work (seen at 64 credits).
            if j <= slot.pointee.serverHighestQueued && slot.pointee.offloadPending > 0
                && awaitsSeal(slot: k, packetNumber: header.packetNumber &+ UInt16(truncatingIfNeeded: j - first))
            {
                drop(.outOfOrder)
                continue
            }
            sendResponsePacket(slot: k, index: j)
        }
    }

    /// Whether session `s` may start assembling another request of `size` bytes (see
    /// ``RpcConfig/maxAssemblingBytesPerSession``): one holding nothing always may, so a request
    /// larger than the share still gets in on its own.
    @inline(__always)
    private func withinSessionShare(size: Int, session s: Int) -> Bool {
        let held = sessions[s].assemblingBytes
        return held == 0 || held + size <= config.maxAssemblingBytesPerSession
    }

    /// Whether a multi-packet request of `size` bytes may start assembling now (see
    /// ``RpcConfig/maxAssemblingBytes``). Over the budget, requests whose clients have gone
    /// silent are freed first.
    private func admitsAssembly(size: Int) -> Bool {
        if assemblingBytes + size <= config.maxAssemblingBytes { return true }
        // At most one walk over the slots per retransmission timeout: a client sends its first
        // packet again only that often, and many clients waiting must not each cost a walk.
        if now &- lastAbandonedScan >= config.retransmitTimeoutNs {
            lastAbandonedScan = now
            freeAbandonedAssemblies()
        }
        return assemblingBytes + size <= config.maxAssemblingBytes
    }

    /// Frees the partly received requests that have had no packet for longer than a client
    /// waits before it fails the session (this end's `maxRetransmissionsWithoutProgress` timeouts;
    /// clients configured to wait longer lose such a request, and their session with it). Their
    /// clients have given up, or crashed without a disconnect. Later packets of such a request
    /// are dropped; a new request on the slot starts afresh.
    private func freeAbandonedAssemblies() {
        let silence = config.retransmitTimeoutNs &* UInt64(config.maxRetransmissionsWithoutProgress)
        for k in 0..<(maxSessions * Wire.sessionRequestWindow)
        where slots[k].assemblyCharge > 0 && now &- slots[k].serverLastRx > silence {
            releaseAssembly(slot: k)
            counters.assembliesAbandoned &+= 1
        }
    }

    /// Counts slot `k`'s partly received request of `size` bytes against the budget.
    @inline(__always)
    private func charge(slot k: Int, _ size: Int) {
        assemblingBytes += size
        sessions[k / Wire.sessionRequestWindow].assemblingBytes += size
        slots[k].assemblyCharge = size
    }

    /// Gives back what slot `k` is charged (nothing if it holds no partly received request).
    @inline(__always)
    private func uncharge(slot k: Int) {
        assemblingBytes -= slots[k].assemblyCharge
        sessions[k / Wire.sessionRequestWindow].assemblingBytes -= slots[k].assemblyCharge
        slots[k].assemblyCharge = 0
    }

    /// Frees the request buffer slot `k` holds, if any, and gives back its charge. Only for a
    /// slot whose handler is not running (a running handler owns the buffer until it answers).
    func releaseAssembly(slot k: Int) {
        uncharge(slot: k)
        if let a = slots[k].assembly {
            free(a)
            slots[k].assembly = nil
        }
    }

    private func sendCreditReturn(_ request: PacketHeader, slot k: Int) {
        let s = k / Wire.sessionRequestWindow
        let header = PacketHeader(
            type: .creditReturn, destSession: sessions[s].remoteNumber, requestType: request.requestType,
            messageSize: 0, requestNumber: request.requestNumber, packetNumber: request.packetNumber)
        queuePacket(header, data: nil, length: 0, slot: k)
    }

    /// Tells the client that the handler of its request is still running: a credit return for
    /// the last request packet, marked by its size. One per copy received, so it amplifies
    /// nothing, and every copy is the same packet under the same nonce.
    private func sendHandlerRunningNotice(_ request: PacketHeader, slot k: Int) {
        let s = k / Wire.sessionRequestWindow
        counters.handlerRunningNotices &+= 1
        let header = PacketHeader(
            type: .creditReturn, destSession: sessions[s].remoteNumber, requestType: request.requestType,
            messageSize: Wire.handlerRunningMark, requestNumber: request.requestNumber,
            packetNumber: request.packetNumber)
        queuePacket(header, data: nil, length: 0, slot: k)
    }

    /// Refuses a request whose type has no handler: the slot moves to it (so duplicates are
    /// refused again) and the client completes it with `.rejected` instead of retrying forever.
    private func rejectRequest(_ request: PacketHeader, slot k: Int) {
        drop(.noHandler)
        retireResponse(slot: k)
        releaseAssembly(slot: k)
        let slot = slots + k
        slot.pointee.requestNumber = request.requestNumber
        slot.pointee.requestType = request.requestType
        slot.pointee.serverRequestSize = Int(request.messageSize)
        slot.pointee.serverRequestPackets = Wire.packetCount(
            size: Int(request.messageSize), dataPerPacket: dataPerPacket)
        slot.pointee.serverNumRx = 0
        slot.pointee.rejected = true
        sendRejection(request, slot: k)
    }

    private func sendRejection(_ request: PacketHeader, slot k: Int) {
        let s = k / Wire.sessionRequestWindow
        let header = PacketHeader(
            type: .response, rejected: true, destSession: sessions[s].remoteNumber,
            requestType: request.requestType, messageSize: 0, requestNumber: request.requestNumber,
            packetNumber: request.packetNumber)
        queuePacket(header, data: nil, length: 0, slot: k)
    }

    private func sendResponsePacket(slot k: Int, index j: Int) {
        let slot = slots + k
        let response = slot.pointee.serverResponse.unsafelyUnwrapped
        let length = response.size == 0 ? 0 : sliceLength(size: response.size, index: j)
        slot.pointee.serverHighestQueued = max(slot.pointee.serverHighestQueued, j)
        if slot.pointee.presealed {
            let header = responseHeader(slot: k, index: j, size: response.size, keyPhase: slot.pointee.presealedPhase)
            queuePacket(
                header, data: response.data + j * (dataPerPacket + Wire.tagSize), length: length + Wire.tagSize,
                slot: k, presealed: true)
            return
        }
        let header = responseHeader(slot: k, index: j, size: response.size, keyPhase: false)
        queuePacket(header, data: response.data + j * dataPerPacket, length: length, slot: k)
    }

    /// The header of packet `j` of slot `k`'s response (`size` bytes).
    @inline(__always)
    func responseHeader(slot k: Int, index j: Int, size: Int, keyPhase: Bool) -> PacketHeader {
        PacketHeader(
            type: .response, keyPhase: keyPhase, destSession: sessions[k / Wire.sessionRequestWindow].remoteNumber,
            requestType: slots[k].requestType, messageSize: UInt32(size), requestNumber: slots[k].requestNumber,
            packetNumber: UInt16(truncatingIfNeeded: slots[k].serverRequestPackets - 1 + j))
    }

    private func runHandler(
        _ entry: HandlerEntry, slot k: Int, session s: Int, zeroCopyRequest: UnsafeRawBufferPointer?
    ) {
        let slot = slots + k
        slot.pointee.handlerActive = true
        counters.requestsHandled &+= 1
        var prealloc = slot.pointee.preallocated.unsafelyUnwrapped
        prealloc.resize(to: 0)
        switch entry.mode {
        case .foreground:
            let request: UnsafeRawBufferPointer
            if let zeroCopyRequest {
                request = zeroCopyRequest
            } else {
                let a = slot.pointee.assembly.unsafelyUnwrapped
                request = UnsafeRawBufferPointer(start: a.data, count: a.size)
            }
            entry.handler(
                RequestHandle(
                    endpoint: self, slotIndex: k, sessionToken: sessions[s].token,
                    requestNumber: slot.pointee.requestNumber, assembly: slot.pointee.assembly,
                    requestType: slot.pointee.requestType, request: request, isBackground: false,
                    preallocatedResponse: prealloc))
        case .background:
            backgroundOutstanding.add(1, ordering: .relaxed)
            let submitted = nexus.submitBackground(
                BackgroundRequest(
                    endpoint: Unmanaged.passUnretained(self), slotIndex: Int32(k), sessionToken: sessions[s].token,
                    requestNumber: slot.pointee.requestNumber, requestType: slot.pointee.requestType,
                    request: slot.pointee.assembly.unsafelyUnwrapped, preallocated: prealloc))
            if !submitted {
                // The Nexus is shutting down: nobody will run it, so the client will time out.
                backgroundOutstanding.subtract(1, ordering: .relaxed)
                counters.requestsHandled &-= 1
                slot.pointee.handlerActive = false
                drop(.noHandler)
            }
        case .deferred:
            // Counted like a background request: the reply arrives through the same queue.
            backgroundOutstanding.add(1, ordering: .relaxed)
            entry.handler(
                RequestHandle(
                    endpoint: self, slotIndex: k, sessionToken: sessions[s].token,
                    requestNumber: slot.pointee.requestNumber, requestType: slot.pointee.requestType,
                    copiedRequest: slot.pointee.assembly.unsafelyUnwrapped, preallocatedResponse: prealloc))
        }
    }

    /// Whether a handler's request is still the one in its slot, on the session it came from.
    @inline(__always)
    func handleIsCurrent(slot k: Int, sessionToken: UInt64, requestNumber: UInt64) -> Bool {
        sessionIsCurrent(k / Wire.sessionRequestWindow, token: sessionToken)
            && slotAwaitsResponse(k, requestNumber: requestNumber)
    }

    /// The handler's session is still the one in its table entry.
    @inline(__always)
    func sessionIsCurrent(_ s: Int, token: UInt64) -> Bool { sessions[s].state != .free && sessions[s].token == token }

    /// The slot still runs the handler of this request (no reply yet).
    @inline(__always)
    func slotAwaitsResponse(_ k: Int, requestNumber: UInt64) -> Bool {
        slots[k].requestNumber == requestNumber && slots[k].handlerActive
    }

    /// Accepts a handler's response (dispatch thread). Responses for a request that is no longer
    /// current (its session went away) are freed and counted.
    func enqueueResponse(_ r: ServerResponse) {
        let k = Int(r.slotIndex)
        let s = k / Wire.sessionRequestWindow
        let slot = slots + k
        if let assembly = r.assembly { free(assembly) }
        guard sessionIsCurrent(s, token: r.sessionToken) else {
            // The session went away while the handler ran: its buffers come home with the response.
            counters.staleResponses &+= 1
            if r.response.data != r.preallocated.data { free(r.response) }
            free(r.preallocated)
            return
        }
        guard slotAwaitsResponse(k, requestNumber: r.requestNumber) else {
            counters.staleResponses &+= 1
            if r.response.data != slot.pointee.preallocated?.data { free(r.response) }
            return
        }
        precondition(r.response.size <= Wire.maxMessageSize, "response larger than Wire.maxMessageSize")
        slot.pointee.assembly = nil
        slot.pointee.handlerActive = false
        slot.pointee.serverResponse = r.response
        slot.pointee.presealed = r.presealed
        slot.pointee.presealedPhase = r.presealedPhase
        slot.pointee.responseReady = true
        sendResponsePacket(slot: k, index: 0)
        // The client asks for the rest of a response only once it has packet 0, so that packet
        // should not wait while the rest of the burst is handled (other requests' handlers, whose
        // responses are sealed at once, can take tens of µs). Worth a send call of its own only
        // for long responses: at 64 KiB (46 packets) it gave encrypted reads 3-13 % more
        // throughput, while at 4 KiB (3 packets) the extra call cost 2-11 %.
        if r.response.size >= Self.sendEarlyResponseSize { sendEarly = true }
    }

    /// Responses at least this long have their first packet sent before the rest of the RX burst
    /// is handled.
    static let sendEarlyResponseSize = 16 << 10

    /// Frees the cached response of a slot (when the next request arrives or the session ends).
    func retireResponse(slot k: Int) {
        let slot = slots + k
        withdrawQueuedPackets(slot: k)
        slot.pointee.rejected = false
        if let response = slot.pointee.serverResponse, response.data != slot.pointee.preallocated?.data {
            free(response)
        }
        slot.pointee.serverResponse = nil
        slot.pointee.presealed = false
        slot.pointee.responseReady = false
        slot.pointee.serverHighestQueued = -1
        slot.pointee.rfrAttempt = 0
        slot.pointee.rfrLast = 0
    }

    /// Background thread → dispatch thread. Thread-safe.
    func postBackgroundResponse(_ r: ServerResponse) {
        while !backgroundResponses.push(r) {
            // The queue holds one entry per slot, so it is full only transiently.
            sched_yield_shim()
        }
        backgroundOutstanding.subtract(1, ordering: .releasing)
        // Pairs with the fence in `waitForTraffic`: either the dispatch thread sees this response
        // before it sleeps, or this sees it sleeping and rings (x86 may reorder the push's store
        // with the load below without it).
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if sleepingOnBackground.load(ordering: .relaxed) { wake() }
    }

    func drainBackgroundResponses() {
        while let r = backgroundResponses.pop() { enqueueResponse(r) }
    }
}

import Glibc

@inline(__always)
private func sched_yield_shim() { _ = sched_yield() }
