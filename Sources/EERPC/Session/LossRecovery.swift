// MARK: - Client-side loss recovery
//
// Only the client keeps timers. A slot that has packets outstanding and has made no progress
// for one retransmission timeout rolls back to the first unanswered packet (go-back-N): it
// takes back the credits of the packets presumed lost and sends again from there, as a new
// attempt. Retransmitted packets carry exactly the bytes of the originals, except RFRs, which
// carry the new attempt number (the server answers an RFR only once per attempt). A response has
// 32,767 attempts (timeouts while the request goes out or its handler runs take none); one that
// would need more (it kept making some progress through that many timeouts) fails its session as
// `.timedOut`, like one that makes none.

extension RpcEndpoint {
    /// Scans a tenth of an RTO apart, as eRPC does, so timeouts fire within 10 % of the RTO.
    var lossScanInterval: UInt64 { config.retransmitTimeoutNs / 10 }

    func scanForLoss() {
        lastLossScan = now
        let rto = config.retransmitTimeoutNs
        for s in 0..<maxSessions where sessions[s].role == .client && sessions[s].state == .connected {
            if sessions[s].freeSlots == 0xFF { continue }
            for i in 0..<Wire.sessionRequestWindow {
                let k = s * Wire.sessionRequestWindow + i
                let slot = slots + k
                guard slot.pointee.request != nil, slot.pointee.numTx > slot.pointee.numRx,
                    now &- slot.pointee.lastProgress > rto
                else { continue }
                slot.pointee.retriesWithoutProgress += 1
                // The attempt number tells RFRs apart, so only timeouts once the response has
                // begun use one up: a long wait on a handler must not exhaust them.
                if slot.pointee.numRx >= slot.pointee.requestPackets { slot.pointee.attempt += 1 }
                if slot.pointee.retriesWithoutProgress > config.maxRetransmissionsWithoutProgress
                    || slot.pointee.attempt > Wire.maxRFRAttempt
                {
                    failSession(s, reason: .timedOut)
                    break
                }
                // Packets of the previous attempt still queued are superseded by this one.
                withdrawQueuedPackets(slot: k)
                sessions[s].credits += slot.pointee.numTx - slot.pointee.numRx
                slot.pointee.numTx = slot.pointee.numRx
                counters.retransmissions &+= 1
                kick(slot: k)
            }
        }
    }

    /// Declares a client session dead: its RPCs complete with `.sessionFailed`, the server is
    /// told (best effort), and the application sees `.connectFailed`-style state `.failed`.
    func failSession(_ s: Int, reason: SessionError) {
        sessions[s].state = .failed
        sessions[s].failure = reason
        for i in 0..<Wire.sessionRequestWindow { withdrawQueuedPackets(slot: s * Wire.sessionRequestWindow + i) }
        // Before the continuations run: one may destroy the session (allowed once it has failed),
        // which forgets the server's address, and even connect anew under the same number, whose
        // session this must not disconnect.
        sendBestEffortDisconnect(session: s)
        let token = sessions[s].token
        failOutstanding(session: s)
        // Reported only if the continuations left the session as it was (a destroyed one is the
        // application's doing; a new one under the number is not the one that failed).
        if sessions[s].state == .failed && sessions[s].token == token {
            sessionEventHandler?(.connectFailed(session: s, reason))
        }
    }
}
