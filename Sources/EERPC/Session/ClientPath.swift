import CSystemShims
/// Errors `enqueueRequest` reports synchronously.
public enum RequestError: Error, Equatable, Sendable {
    case invalidSession
    case sessionNotConnected
    case requestTooLarge
}

// MARK: - Client side of the client-driven protocol (research/erpc.md §2)
//
// A request of N packets and a response of M packets take N + M − 1 exchanges, numbered in one
// space: request packet i (0 ≤ i < N) is answered by a credit return i (i < N − 1) or by
// response packet 0 (i = N − 1); response packet j ≥ 1 is asked for by a request-for-response.
// One RFR asks for a run of packets: the one numbered N − 1 + j and the count − 1 after it
// (the count is in the low 8 bits of its size field), one credit each. The client asks once per receive burst, for everything its credits
// allow, rather than once per packet received (eRPC's one RFR per packet cost an AEAD seal and
// open and a datagram each: 45 of them per 64 KiB read). `numTx` counts exchanges asked for,
// `numRx` those answered; the client accepts only the next packet in that order, and only one
// it has asked for. An RFR also carries the slot's attempt number (retransmission timeouts of
// this request so far): within an attempt its runs only move forward, so the server answers
// each RFR at most once and a replayed one gets nothing.

extension RpcEndpoint {
    /// Sends a request on a connected client session. Completes by calling `continuation` on
    /// this dispatch thread. If all 8 slots are busy, the request waits in the session's backlog.
    ///
    /// Ownership: the runtime reads `request` and writes `response` until the continuation
    /// runs; the caller must not free or touch them before.
    public func enqueueRequest(
        session s: Int, type: UInt8, request: MsgBuffer, response: MsgBuffer, tag: UInt64 = 0,
        continuation: @escaping Continuation
    ) throws(RequestError) {
        guard s >= 0 && s < maxSessions, sessions[s].role == .client, sessions[s].state != .free else {
            throw .invalidSession
        }
        guard sessions[s].state == .connected else { throw .sessionNotConnected }
        guard request.size <= Wire.maxMessageSize else { throw .requestTooLarge }
        let free = sessions[s].freeSlots
        if free == 0 {
            sessions[s].backlog.push(
                PendingRequest(
                    requestType: type, request: request, response: response, continuation: continuation, tag: tag))
            return
        }
        let i = free.trailingZeroBitCount
        sessions[s].freeSlots = free & ~(1 << i)
        // The loop's clock is read once per iteration; an application that enqueues after not
        // polling for a while would otherwise date the request in the past, and the next loss
        // scan would take it for lost and send it again at once.
        now = ee_now_ns()
        startRequest(
            slot: s * Wire.sessionRequestWindow + i, type: type, request: request, response: response, tag: tag,
            continuation: continuation)
    }

    /// Whether any client session has an RPC in flight (its retransmission timer must keep running).
    var hasClientRequestsInFlight: Bool {
        (0..<maxSessions).contains { sessions[$0].role == .client && sessions[$0].state == .connected && sessions[$0].freeSlots != 0xFF }
    }

    /// Requests queued in a session's backlog (waiting for a slot).
    public func backlogCount(session s: Int) -> Int { sessions[s].backlog.count }

    /// RPCs in flight on a client session (slots in use).
    public func inFlightCount(session s: Int) -> Int {
        Wire.sessionRequestWindow - sessions[s].freeSlots.nonzeroBitCount
    }

    func startRequest(
        slot k: Int, type: UInt8, request: MsgBuffer, response: MsgBuffer, tag: UInt64,
        continuation: @escaping Continuation
    ) {
        let slot = slots + k
        slot.pointee.requestNumber &+= UInt64(Wire.sessionRequestWindow)
        slot.pointee.requestType = type
        slot.pointee.request = request
        slot.pointee.response = response
        slot.pointee.continuation = continuation
        slot.pointee.tag = tag
        slot.pointee.numTx = 0
        slot.pointee.numRx = 0
        slot.pointee.requestPackets = Wire.packetCount(size: request.size, dataPerPacket: dataPerPacket)
        slot.pointee.responsePackets = 0
        slot.pointee.responseSize = 0
        slot.pointee.lastProgress = now
        slot.pointee.retriesWithoutProgress = 0
        slot.pointee.attempt = 0
        slot.pointee.handlerWaitStart = 0
        kick(slot: k)
    }

    /// Sends what the slot may send now: request packets, then one RFR for as many response
    /// packets as its credits allow, a credit per packet. A slot out of credits joins the stall queue.
    func kick(slot k: Int) {
        let s = k / Wire.sessionRequestWindow
        let slot = slots + k
        guard let request = slot.pointee.request else { return }
        let n = slot.pointee.requestPackets
        let total = slot.pointee.responsePackets == 0 ? n : n + slot.pointee.responsePackets - 1
        let remote = sessions[s].remoteNumber
        while slot.pointee.numTx < total && sessions[s].credits > 0 {
            let p = slot.pointee.numTx
            if p < n {
                let offset = p * dataPerPacket
                let header = PacketHeader(
                    type: .request, destSession: remote, requestType: slot.pointee.requestType,
                    messageSize: UInt32(request.size), requestNumber: slot.pointee.requestNumber,
                    packetNumber: UInt16(truncatingIfNeeded: p))
                queuePacket(
                    header, data: request.data + offset, length: sliceLength(size: request.size, index: p), slot: k)
                slot.pointee.numTx = p + 1
                sessions[s].credits -= 1
            } else {
                // The server refuses runs longer than a credit window.
                let count = min(total - p, sessions[s].credits, Wire.sessionCredits)
                let header = PacketHeader.requestForResponse(
                    destSession: remote, requestType: slot.pointee.requestType,
                    requestNumber: slot.pointee.requestNumber, packetNumber: UInt16(truncatingIfNeeded: p),
                    count: count, attempt: slot.pointee.attempt)
                queuePacket(header, data: nil, length: 0, slot: k)
                slot.pointee.numTx = p + count
                sessions[s].credits -= count
            }
        }
        slot.pointee.lastProgress = now
        if slot.pointee.numTx < total { queueKick(slot: k) }
    }

    /// Kicks slot `k` when the stall queue is next processed: after this receive burst, or once
    /// its session has credits again.
    @inline(__always)
    func queueKick(slot k: Int) {
        guard !slots[k].stalled else { return }
        slots[k].stalled = true
        stallQueue[(stallHead + stallCount) % (maxSessions * Wire.sessionRequestWindow)] = Int32(k)
        stallCount += 1
    }

    /// Kicks the queued slots (out of credits, or with an RFR to send after this receive burst),
    /// in FIFO order.
    func processStallQueue() {
        let capacity = maxSessions * Wire.sessionRequestWindow
        var remaining = stallCount
        while remaining > 0 {
            remaining -= 1
            let k = Int(stallQueue[stallHead])
            stallHead = (stallHead + 1) % capacity
            stallCount -= 1
            slots[k].stalled = false
            if slots[k].request == nil { continue }
            if sessions[k / Wire.sessionRequestWindow].credits == 0 {
                queueKick(slot: k)
            } else {
                kick(slot: k)
            }
        }
    }

    /// The in-flight slot a server packet refers to, if it is the next one expected.
    @inline(__always)
    private func acceptInOrder(_ header: PacketHeader, session s: Int) -> Int? {
        let k = s * Wire.sessionRequestWindow + Int(header.requestNumber % UInt64(Wire.sessionRequestWindow))
        let slot = slots + k
        guard slot.pointee.request != nil, slot.pointee.requestNumber == header.requestNumber,
            Int(header.packetNumber) == slot.pointee.numRx, slot.pointee.numRx < slot.pointee.numTx
        else {
            drop(.outOfOrder)
            return nil
        }
        return k
    }

    func clientReceiveCreditReturn(_ header: PacketHeader, session s: Int) {
        if header.isHandlerRunningNotice { return clientReceiveHandlerRunning(header, session: s) }
        guard let k = acceptInOrder(header, session: s) else { return }
        guard Int(header.packetNumber) < slots[k].requestPackets - 1 else { return drop(.badPacketNumber) }
        slots[k].retriesWithoutProgress = 0
        slots[k].numRx += 1
        sessions[s].credits += 1
        kick(slot: k)
    }

    /// The server has the whole request and its handler is still running: progress, though no
    /// exchange is answered. The slot keeps its last request packet outstanding, so the next
    /// timeout sends it again and asks anew, until the response comes or `maxHandlerWaitNs` has
    /// passed since the first notice.
    private func clientReceiveHandlerRunning(_ header: PacketHeader, session s: Int) {
        let k = s * Wire.sessionRequestWindow + Int(header.requestNumber % UInt64(Wire.sessionRequestWindow))
        let slot = slots + k
        let last = slot.pointee.requestPackets - 1
        guard slot.pointee.request != nil, slot.pointee.requestNumber == header.requestNumber,
            Int(header.packetNumber) == last, slot.pointee.numRx == last, slot.pointee.numTx > last
        else { return drop(.outOfOrder) }
        counters.handlerRunningNotices &+= 1
        if slot.pointee.handlerWaitStart == 0 {
            slot.pointee.handlerWaitStart = now
        } else if now &- slot.pointee.handlerWaitStart > config.maxHandlerWaitNs {
            return failSession(s, reason: .timedOut)
        }
        slot.pointee.retriesWithoutProgress = 0
        slot.pointee.lastProgress = now
    }

    func clientReceiveResponse(_ header: PacketHeader, payload: UnsafeRawBufferPointer, session s: Int) {
        if header.rejected { return clientReceiveRejection(header, session: s) }
        guard let k = acceptInOrder(header, session: s) else { return }
        let slot = slots + k
        let n = slot.pointee.requestPackets
        let p = Int(header.packetNumber)
        guard p >= n - 1 else { return drop(.badPacketNumber) }
        let j = p - (n - 1)
        let size = Int(header.messageSize)
        if j == 0 {
            slot.pointee.responseSize = size
            slot.pointee.responsePackets = Wire.packetCount(size: size, dataPerPacket: dataPerPacket)
        } else if size != slot.pointee.responseSize {
            return drop(.badPayloadLength)
        }
        guard j < slot.pointee.responsePackets else { return drop(.badPacketNumber) }
        guard payload.count == (size == 0 ? 0 : sliceLength(size: size, index: j)) else {
            if j == 0 { slot.pointee.responsePackets = 0 }
            return drop(.badPayloadLength)
        }
        let response = slot.pointee.response.unsafelyUnwrapped
        if size <= response.capacity, payload.count > 0 { place(payload, at: response.data + j * dataPerPacket) }
        slot.pointee.numRx += 1
        slot.pointee.retriesWithoutProgress = 0
        // Progress: the retransmission timer counts from the last packet that arrived, not from
        // the last request-for-response, or a long final run still arriving would be re-asked.
        slot.pointee.lastProgress = now
        sessions[s].credits += 1
        if slot.pointee.numRx == n + slot.pointee.responsePackets - 1 {
            complete(slot: k, status: size <= response.capacity ? .ok : .responseTooLarge(size: size))
        } else if size > response.capacity {
            // Known from the first packet: the rest (up to 8 MiB) would be fetched only to be
            // thrown away. Nothing else is outstanding (the response follows the whole request).
            sessions[s].credits += slot.pointee.numTx - slot.pointee.numRx
            slot.pointee.numRx = slot.pointee.numTx
            complete(slot: k, status: .responseTooLarge(size: size))
        } else if slot.pointee.numTx < n + slot.pointee.responsePackets - 1 {
            // More to ask for: one RFR after this burst covers every packet it returned credits for.
            queueKick(slot: k)
        }
    }

    /// The server refused the request (no handler for its type). A refusal answers whichever
    /// packet of the request the server saw, so it is accepted for any sent packet number.
    private func clientReceiveRejection(_ header: PacketHeader, session s: Int) {
        let k = s * Wire.sessionRequestWindow + Int(header.requestNumber % UInt64(Wire.sessionRequestWindow))
        let slot = slots + k
        guard slot.pointee.request != nil, slot.pointee.requestNumber == header.requestNumber,
            Int(header.packetNumber) < slot.pointee.numTx, Int(header.packetNumber) < slot.pointee.requestPackets
        else { return drop(.outOfOrder) }
        // Every packet still outstanding is answered or lost; either way its credit comes back.
        sessions[s].credits += slot.pointee.numTx - slot.pointee.numRx
        slot.pointee.numRx = slot.pointee.numTx
        complete(slot: k, status: .rejected)
    }

    /// Finishes the RPC on slot `k`: frees the slot, runs the continuation, then starts the
    /// next backlogged request of the session on the freed slot.
    func complete(slot k: Int, status: RpcStatus) {
        let s = k / Wire.sessionRequestWindow
        let slot = slots + k
        withdrawQueuedPackets(slot: k)
        let request = slot.pointee.request.unsafelyUnwrapped
        var response = slot.pointee.response.unsafelyUnwrapped
        if status == .ok { response.resize(to: slot.pointee.responseSize) } else { response.resize(to: 0) }
        // Not `.unsafelyUnwrapped`: through that generic accessor the closure is reabstracted,
        // which allocates a thunk context per call.
        guard let continuation = slot.pointee.continuation else { preconditionFailure("slot without continuation") }
        let tag = slot.pointee.tag
        slot.pointee.request = nil
        slot.pointee.response = nil
        slot.pointee.continuation = nil
        sessions[s].freeSlots |= 1 << (k % Wire.sessionRequestWindow)
        counters.rpcsCompleted &+= 1
        continuation(
            Completion(rpc: self, session: s, tag: tag, status: status, request: request, response: response))
        // The continuation may have enqueued requests itself; the backlog goes first only if
        // the slot is still free.
        if sessions[s].state == .connected, sessions[s].freeSlots & (1 << (k % Wire.sessionRequestWindow)) != 0,
            let next = sessions[s].backlog.pop()
        {
            sessions[s].freeSlots &= ~(1 << (k % Wire.sessionRequestWindow))
            startRequest(
                slot: k, type: next.requestType, request: next.request, response: next.response, tag: next.tag,
                continuation: next.continuation)
        }
    }

    /// Fails every RPC of a client session (in flight and backlogged) with `.sessionFailed`.
    func failOutstanding(session s: Int) {
        for i in 0..<Wire.sessionRequestWindow {
            let k = s * Wire.sessionRequestWindow + i
            if slots[k].request != nil {
                slots[k].responseSize = 0
                complete(slot: k, status: .sessionFailed)
            }
        }
        while let pending = sessions[s].backlog.pop() {
            var response = pending.response
            response.resize(to: 0)
            counters.rpcsCompleted &+= 1
            pending.continuation(
                Completion(
                    rpc: self, session: s, tag: pending.tag, status: .sessionFailed, request: pending.request,
                    response: response))
        }
    }
}
