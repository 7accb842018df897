import Synchronization

import CSystemShims
import Glibc

/// Work the session-management thread hands to an endpoint, or an answer it brings back.
enum SessionManagementEvent: Sendable {
    /// Server: a peer asks to connect or disconnect; answer on `connection`, then close it.
    case request(SessionManagementMessage, connection: SessionManagementConnection)
    /// Client: the answer to our connect or disconnect request (nil: no answer; see `error`).
    /// `token` is the token of the session the request was sent for: an answer that arrives after
    /// that session is gone (and its number reused) is recognised and ignored.
    /// `secrets` are the data-plane secrets exported from the TLS handshake (nil without TLS).
    case response(
        SessionManagementMessage?, session: Int, token: UInt64, error: SessionError?, secrets: SecretsInTransit?)

    /// Lets go of an event nobody will handle: closes its connection or wipes its secrets.
    func discard() {
        switch self {
        case .request(_, let connection): connection.close()
        case .response(_, _, _, _, let secrets): secrets?.discard()
        }
    }
}

// MARK: - Session connect and disconnect (dispatch-thread side)

extension RpcEndpoint {
    /// Starts connecting a client session to Rpc `remoteRpcID` of the Nexus at `host:port`
    /// (its session-management address). Returns the local session number at once; the session
    /// becomes `.connected` (or `.failed`) while the event loop runs, and `sessionEventHandler`
    /// is told.
    /// With `peerName`, the server's certificate must be issued to that name (a node's, say
    /// `node-3`): without it any certificate of the cluster's CA would do, so any node could
    /// answer for any other.
    public func createSession(host: String, port: UInt16, remoteRpcID: UInt8, peerName: String? = nil)
        throws(SessionError) -> Int
    {
        var ip: UInt32 = 0
        guard ee_resolve_ipv4(host, &ip) == 0 else { throw .unreachableRoute }
        guard let s = (0..<maxSessions).first(where: { sessions[$0].state == .free }) else { throw .tooManySessions }
        sessions[s] = Session()
        sessions[s].state = .connecting
        sessions[s].role = .client
        sessions[s].remoteRpcID = remoteRpcID
        sessions[s].token = freshToken()
        sessions[s].remoteSMAddress = ip
        sessions[s].remoteSMPort = port
        sessionPeerNames[s] = peerName
        resetSlots(session: s)
        let request = SessionManagementMessage(
            kind: .connectRequest, transport: transportKind, token: sessions[s].token, clientRpcID: id,
            serverRpcID: remoteRpcID, clientSession: UInt16(s), mtu: UInt32(mtu),
            cryptoKeyLength: config.crypto.encrypts ? UInt8(config.algorithm.keyLength) : 0, route: localRoute)
        nexus.sendSessionManagement(request, to: ip, port: port, peerName: peerName, from: self, session: s)
        return s
    }

    /// Tells the server to drop a session this client has given up on (connect timed out, or the
    /// session failed), identified by its token. Nobody waits for the answer.
    func sendBestEffortDisconnect(session s: Int) {
        guard sessions[s].remoteSMPort != 0 else { return }
        let request = SessionManagementMessage(
            kind: .disconnectRequest, transport: transportKind, token: sessions[s].token, clientRpcID: id,
            serverRpcID: sessions[s].remoteRpcID, clientSession: UInt16(s),
            serverSession: SessionManagementMessage.unknownSession, mtu: UInt32(mtu), route: localRoute)
        nexus.sendSessionManagement(
            request, to: sessions[s].remoteSMAddress, port: sessions[s].remoteSMPort, peerName: sessionPeerNames[s],
            from: self, session: nil)
    }

    /// Gives up on a client session: one still connecting is marked, so that when its answer
    /// comes a session the server made is disconnected and a failed one freed; any other is
    /// destroyed now if it can be. Either way the number is not held for good.
    public func abandonConnect(_ s: Int) {
        guard s >= 0 && s < maxSessions, sessions[s].role == .client else { return }
        if sessions[s].state == .connecting {
            sessions[s].abandoned = true
        } else {
            try? destroySession(s)
        }
    }

    /// Tears down a client session. With RPCs outstanding it throws; a failed or idle session is
    /// released locally and, if connected, the server is told (best effort).
    public func destroySession(_ s: Int) throws(SessionError) {
        guard s >= 0 && s < maxSessions, sessions[s].role == .client, sessions[s].state != .free else {
            throw .protocolError
        }
        switch sessions[s].state {
        case .connected:
            guard sessions[s].freeSlots == 0xFF && sessions[s].backlog.isEmpty else { throw .protocolError }
            sessions[s].state = .disconnecting
            let request = SessionManagementMessage(
                kind: .disconnectRequest, transport: transportKind, token: sessions[s].token, clientRpcID: id,
                serverRpcID: sessions[s].remoteRpcID, clientSession: UInt16(s),
                serverSession: sessions[s].remoteNumber, mtu: UInt32(mtu), route: localRoute)
            nexus.sendSessionManagement(
                request, to: sessions[s].remoteSMAddress, port: sessions[s].remoteSMPort, peerName: sessionPeerNames[s],
                from: self, session: s)
        case .failed:
            releaseSession(s)
        case .connecting, .disconnecting, .free:
            throw .protocolError
        }
    }

    /// Session-management thread → dispatch thread. Thread-safe.
    func postSessionManagement(_ event: SessionManagementEvent) {
        sessionManagementInbox.withLock { $0.append(event) }
        sessionManagementPending.add(1, ordering: .releasing)
        wake()
    }

    /// Takes the queued session-management events (dispatch thread; the loop calls this only
    /// when the pending counter says there is something).
    func takeSessionManagementEvents() -> [SessionManagementEvent] {
        let events = sessionManagementInbox.withLock { inbox in
            let taken = inbox
            inbox.removeAll(keepingCapacity: true)
            return taken
        }
        sessionManagementPending.subtract(events.count, ordering: .relaxed)
        return events
    }

    /// Handles one event. `resolve` turns a peer's routing info into a transport route.
    func handleSessionManagement(_ event: SessionManagementEvent, resolve: (RoutingInfo) -> RoutingInfo?) {
        switch event {
        case .request(let message, let connection):
            var reply = message
            switch message.kind {
            case .connectRequest:
                reply.kind = .connectResponse
                reply = acceptConnect(message, reply: reply, connection: connection, resolve: resolve)
            case .disconnectRequest:
                reply.kind = .disconnectResponse
                reply.error = acceptDisconnect(message, from: connection)
            default:
                reply.error = .malformed
            }
            reply.transport = transportKind
            reply.mtu = UInt32(mtu)
            reply.cryptoKeyLength = config.crypto.encrypts ? UInt8(config.algorithm.keyLength) : 0
            reply.route = localRoute
            _ = connection.send(reply)
            connection.close()
        case .response(let message, let s, let token, let error, let transit):
            var secrets = transit?.take()
            defer { secrets?.wipe() }
            guard sessions[s].role == .client, sessions[s].token == token else { return }
            if sessions[s].state == .connecting {
                finishConnect(session: s, message: message, error: error, secrets: secrets, resolve: resolve)
            } else if sessions[s].state == .disconnecting {
                // Whatever the server said, this end is done with the session.
                releaseSession(s)
                sessionEventHandler?(.disconnected(session: s))
            }
        }
    }

    private func acceptConnect(
        _ m: SessionManagementMessage, reply: SessionManagementMessage, connection: SessionManagementConnection,
        resolve: (RoutingInfo) -> RoutingInfo?
    ) -> SessionManagementMessage {
        var reply = reply
        // A token names one session. Clients draw a fresh one for every connect, so a second
        // connect with a live session's token is not a client's retry; answering it with that
        // session would hand out a session whose keys came from another handshake.
        if (0..<maxSessions).contains(where: {
            sessions[$0].state == .connected && sessions[$0].role == .server && sessions[$0].token == m.token
        }) {
            reply.error = .malformed
            return reply
        }
        guard m.transport == transportKind else {
            reply.error = .transportMismatch
            return reply
        }
        guard Int(m.mtu) == mtu else {
            reply.error = .mtuMismatch
            return reply
        }
        let encrypts = config.crypto.encrypts
        guard m.cryptoKeyLength == (encrypts ? UInt8(config.algorithm.keyLength) : 0),
            !encrypts || connection.tls != nil
        else {
            reply.error = .cryptoMismatch
            return reply
        }
        guard let route = resolve(m.route) else {
            reply.error = .unreachableRoute
            return reply
        }
        guard let s = (0..<maxSessions).first(where: { sessions[$0].state == .free }) ?? reclaimIdleSession() else {
            reply.error = .tooManySessions
            return reply
        }
        sessions[s] = Session()
        sessions[s].lastHeard = ee_now_ns()
        sessions[s].state = .connected
        sessions[s].role = .server
        sessions[s].remoteNumber = m.clientSession
        sessions[s].remoteRpcID = m.clientRpcID
        sessions[s].token = m.token
        sessions[s].peerCertificate = connection.peerFingerprint()
        // Over TLS the peer has a certificate; one that cannot be read would leave a session
        // that no disconnect could end.
        if connection.tls != nil && sessions[s].peerCertificate == nil {
            sessions[s] = Session()
            reply.error = .cryptoMismatch
            return reply
        }
        routes[s] = route
        resetSlots(session: s)
        for i in 0..<Wire.sessionRequestWindow {
            guard let buffer = pool.allocate(size: dataPerPacket) else {
                releaseSession(s)
                reply.error = .tooManySessions
                return reply
            }
            slots[s * Wire.sessionRequestWindow + i].preallocated = buffer
        }
        if encrypts {
            // Keys come from this very handshake: only the holder of a cluster certificate who
            // asked for this session can speak on it.
            var secrets = connection.exportSecrets(
                clientSession: m.clientSession, serverSession: UInt16(s), token: m.token, clientRpcID: m.clientRpcID,
                serverRpcID: id)
            // Only the derived keys stay; the exported secrets go once they are installed.
            defer { secrets?.wipe() }
            guard let exported = secrets,
                installKeys(session: s, transmit: exported.serverToClient, receive: exported.clientToServer)
            else {
                releaseSession(s)
                reply.error = .cryptoMismatch
                return reply
            }
        }
        reply.serverSession = UInt16(s)
        return reply
    }

    /// The table is full: releases the server session silent the longest, if that is longer than
    /// `reclaimIdleSessionsAfterNs` and none of its handlers is still running. Returns its number.
    private func reclaimIdleSession() -> Int? {
        guard config.reclaimIdleSessionsAfterNs > 0 else { return nil }
        let now = ee_now_ns()
        var oldest: Int? = nil
        for s in 0..<maxSessions where sessions[s].role == .server && sessions[s].state == .connected {
            guard now &- sessions[s].lastHeard >= config.reclaimIdleSessionsAfterNs else { continue }
            let busy = (0..<Wire.sessionRequestWindow).contains { slots[s * Wire.sessionRequestWindow + $0].handlerActive }
            if !busy && (oldest.map { sessions[s].lastHeard < sessions[$0].lastHeard } ?? true) { oldest = s }
        }
        guard let s = oldest else { return nil }
        releaseSession(s)
        counters.sessionsReclaimed &+= 1
        return s
    }

    private func acceptDisconnect(_ m: SessionManagementMessage, from connection: SessionManagementConnection)
        -> SessionManagementMessage.ErrorCode
    {
        // A client that gave up before learning our session number names it by token alone.
        let candidate =
            m.serverSession == SessionManagementMessage.unknownSession
            ? (0..<maxSessions).first { sessions[$0].role == .server && sessions[$0].token == m.token }
            : Int(m.serverSession)
        guard let s = candidate, s < maxSessions, sessions[s].state == .connected, sessions[s].role == .server,
            sessions[s].token == m.token
        else { return .unknownSession }
        // Another certificate than the one that made the session: answered as if there were no
        // such session, so the answer tells nothing about it.
        guard sessions[s].peerCertificate == connection.peerFingerprint() else {
            counters.disconnectsRefused &+= 1
            return .unknownSession
        }
        releaseSession(s)
        return .ok
    }

    private func finishConnect(
        session s: Int, message: SessionManagementMessage?, error: SessionError?, secrets: SessionSecrets?,
        resolve: (RoutingInfo) -> RoutingInfo?
    ) {
        var failure = error
        if failure == nil, let m = message {
            switch m.error {
            case .ok:
                if m.kind != .connectResponse || m.token != sessions[s].token {
                    failure = .protocolError
                } else if config.crypto.encrypts
                    && (secrets == nil
                        || !installKeys(session: s, transmit: secrets!.clientToServer, receive: secrets!.serverToClient))
                {
                    failure = .cryptoMismatch
                } else if let route = resolve(m.route) {
                    routes[s] = route
                    sessions[s].remoteNumber = m.serverSession
                    sessions[s].credits = config.sessionCredits
                    sessions[s].state = .connected
                    if sessions[s].abandoned {
                        try? destroySession(s)
                        return
                    }
                    sessionEventHandler?(.connected(session: s))
                    return
                } else {
                    failure = .unreachableRoute
                }
            case .invalidRemoteRpcID: failure = .invalidRemoteRpcID
            case .transportMismatch: failure = .transportMismatch
            case .mtuMismatch: failure = .mtuMismatch
            case .tooManySessions: failure = .tooManySessions
            case .unreachableRoute: failure = .unreachableRoute
            case .cryptoMismatch: failure = .cryptoMismatch
            case .versionMismatch: failure = .protocolError  // a peer of this version never sends it
            case .unknownSession, .malformed: failure = .rejected(code: m.error.rawValue)
            }
        }
        sessions[s].state = .failed
        sessions[s].failure = failure ?? .protocolError
        // Without an answer the server may still have made the session: ask it to drop it.
        if message == nil { sendBestEffortDisconnect(session: s) }
        if sessions[s].abandoned {
            releaseSession(s)
            return
        }
        sessionEventHandler?(.connectFailed(session: s, sessions[s].failure!))
    }

    private func resetSlots(session s: Int) {
        let base = Session.requestBase(token: sessions[s].token)
        for i in 0..<Wire.sessionRequestWindow {
            let k = s * Wire.sessionRequestWindow + i
            // Entries of the slot may still sit in the AES pool's TX ring (cancelled when the
            // session was released); nextSealed counts them off as it pops them, so the count
            // must survive, or it goes negative and a later cancellation is skipped.
            let pending = slots[k].offloadPending
            // Likewise a slot still in the stall queue stays marked, or it could be queued twice
            // and overrun the queue (sized for one entry per slot); the stale entry finds no
            // request and is skipped.
            let stalled = slots[k].stalled
            slots[k] = Slot()
            slots[k].requestNumber = base + UInt64(i)
            slots[k].offloadPending = pending
            slots[k].stalled = stalled
        }
    }

    /// Frees a session number and its buffers. Client RPCs still outstanding fail. Buffers a
    /// handler still holds come back with its (now stale) response and are freed then.
    func releaseSession(_ s: Int) {
        if sessions[s].role == .client {
            sessions[s].state = .failed
            failOutstanding(session: s)
        }
        for i in 0..<Wire.sessionRequestWindow {
            let k = s * Wire.sessionRequestWindow + i
            if slots[k].handlerActive { continue }
            retireResponse(slot: k)
            releaseAssembly(slot: k)
            if let p = slots[k].preallocated { free(p) }
        }
        sessions[s].backlog.release()
        // Nothing of this session's is sent once it is gone.
        for i in 0..<Wire.sessionRequestWindow { cancelOffloadedPackets(slot: s * Wire.sessionRequestWindow + i) }
        if crypto[s].enabled { waitForOffloadedJobs() }
        crypto[s].release()
        sessions[s] = Session()
        resetSlots(session: s)
    }

}
