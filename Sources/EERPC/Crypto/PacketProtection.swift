// MARK: - Per-packet AEAD on the data path
//
// Every packet of an encrypted session is `header ‖ ciphertext ‖ 16-byte tag`. The header stays
// in the clear (the receiver needs it to find the session) and is authenticated as AAD, so control
// packets (credit returns, requests-for-response) cannot be forged either. The nonce is the
// direction's IV XOR (size field ‖ request number ‖ packet number): unique for every packet a key
// seals, and a retransmission re-seals the same bytes under the same nonce into the same
// ciphertext (an RFR's size field carries the client's attempt, so its retransmission is a new
// packet).
//
// Key updates are driven by the client, like everything else in this protocol: after
// `keyUpdatePackets` packets or `keyUpdateIntervalNs` under one key it flips the key-phase bit of
// what it sends. The server, on the first packet that opens under its next receive key, moves
// both its directions to the next phase, and the client's receive side follows when the first
// reply in the new phase opens. The client starts another update only after that, so the two ends
// are never more than one phase apart; the previous key stays to open packets still in flight.

extension RpcEndpoint {
    /// Derives and installs a session's keys. False if a derivation failed.
    func installKeys(session s: Int, transmit: Secret, receive: Secret) -> Bool {
        waitForOffloadedJobs()
        crypto[s].release()
        guard let tx = DirectionKeys(secret: transmit, backend: config.backend, algorithm: config.algorithm, now: now)
        else { return false }
        guard let rx = DirectionKeys(secret: receive, backend: config.backend, algorithm: config.algorithm, now: now)
        else {
            tx.destroy()
            return false
        }
        crypto[s].tx = tx
        crypto[s].rx = rx
        return true
    }

    /// Key updates both directions of session `s` have completed.
    public func keyUpdates(session s: Int) -> UInt64 { crypto[s].updates }

    /// The current key phase of session `s`'s sending direction.
    public func transmitKeyPhase(session s: Int) -> Bool? { crypto[s].tx?.phase }

    /// Readies a packet of session `s` for sealing under its current transmit key, inline or in
    /// the AES pool alike: starts a due client key update, marks the header with the key phase,
    /// and writes the packet's nonce after the tag room of `staging` (the slot has those 16 bytes).
    @inline(__always)
    func prepareSeal(_ item: inout TxItem, session s: Int, staging: UnsafeMutableRawPointer)
        -> (key: KeyHandle, nonce: UnsafeMutableRawPointer)
    {
        if sessions[s].role == .client {
            crypto[s].tx!.sealed &+= Self.packetsAnswering(header0: item.header0)
            maybeStartKeyUpdate(session: s)
        }
        let keys = crypto[s].tx.unsafelyUnwrapped
        if keys.phase { item.header0 |= PacketHeader.keyPhaseBitInWord0 }
        let header1 = UInt64(littleEndian: item.header1)
        let nonce = staging + item.dataLength + Wire.tagSize
        keys.current.writeNonce(
            messageSize: UInt32(truncatingIfNeeded: UInt64(littleEndian: item.header0) >> 40),
            requestNumber: header1 & PacketHeader.maxRequestNumber,
            packetNumber: UInt16(truncatingIfNeeded: header1 >> 48), to: nonce)
        return (keys.current.key, nonce)
    }

    /// Seals one queued packet of an encrypted session into `staging` (at least
    /// `dataLength + 32` bytes), sets its key-phase bit, and points the item at the sealed bytes.
    /// Items of plaintext sessions are left alone.
    @inline(__always)
    func sealIfNeeded(_ item: UnsafeMutablePointer<TxItem>, staging: UnsafeMutableRawPointer) {
        let s = Int(item.pointee.owner) / Wire.sessionRequestWindow
        guard crypto[s].tx != nil else { return }
        let (key, nonce) = prepareSeal(&item.pointee, session: s, staging: staging)
        let length = item.pointee.dataLength
        key.seal(
            nonce: nonce, aad: UnsafeRawPointer(item), aadCount: Wire.headerSize,
            source: item.pointee.data ?? UnsafeRawPointer(staging), destination: staging, count: length,
            tag: staging + length)
        item.pointee.data = UnsafeRawPointer(staging)
        item.pointee.dataLength = length + Wire.tagSize
        crypto[s].tx!.sealed &+= 1
    }

    /// Packets the server seals in answer to a client packet (little-endian header word 0): one
    /// for a request packet (a credit return, or the response's first packet), the run for a
    /// request-for-response. The client counts them with its own, so that its key updates, the
    /// only ones, bound what both directions seal under a key: most of a session's packets are
    /// the server's.
    @inline(__always)
    static func packetsAnswering(header0: UInt64) -> UInt64 {
        let word = UInt64(littleEndian: header0)
        switch UInt8(truncatingIfNeeded: word >> 8) & 0x03 {
        case PacketType.request.rawValue: return 1
        case PacketType.requestForResponse.rawValue: return word >> 40 & UInt64(Wire.rfrCountMask)
        default: return 0
        }
    }

    /// Client: starts a key update when the current key has sealed enough (its own packets and
    /// those they ask of the server) or lived long enough, unless the previous update is still
    /// unanswered.
    @inline(__always)
    func maybeStartKeyUpdate(session s: Int) {
        let keys = crypto[s].tx.unsafelyUnwrapped
        guard !crypto[s].updatePending,
            keys.sealed >= config.keyUpdatePackets || now &- keys.phaseStarted >= config.keyUpdateIntervalNs
        else { return }
        startKeyUpdate(session: s)
    }

    @inline(never)
    private func startKeyUpdate(session s: Int) {
        // Jobs in the pool may still use the key that `advance` retires.
        waitForOffloadedJobs()
        if crypto[s].tx!.advance(now: now) { crypto[s].updatePending = true }
    }

    /// Opens a received packet of an encrypted session, in place or into `destination` (room for
    /// the payload; see ``payloadDestination(_:count:session:)``). Returns where the plaintext
    /// payload is, or nil (counted) if no key of the session authenticates it: nothing about the
    /// session changes before this has succeeded. A packet of another key phase is opened in
    /// place whatever `destination` says (its payload is then copied as a plaintext one is).
    @inline(__always)
    func openPacket(
        _ base: UnsafeMutableRawPointer, length: Int, header: PacketHeader, session s: Int,
        into destination: UnsafeMutableRawPointer? = nil
    ) -> UnsafeRawBufferPointer? {
        guard length >= Wire.headerSize + Wire.tagSize else {
            drop(.authenticationFailed)
            return nil
        }
        let count = length - Wire.headerSize - Wire.tagSize
        let body = base + Wire.headerSize
        let tag = body + count
        let nonce = scratch + mtu  // 16 spare bytes after the scratch copy room
        let rx = crypto[s].rx.unsafelyUnwrapped
        if header.keyPhase == rx.phase {
            rx.current.writeNonce(of: header, to: nonce)
            if rx.current.key.open(
                nonce: nonce, aad: base, aadCount: Wire.headerSize, source: body, destination: destination ?? body,
                count: count, tag: tag)
            {
                return UnsafeRawBufferPointer(start: destination ?? body, count: count)
            }
            drop(.authenticationFailed)
            return nil
        }
        guard let n = openOtherPhase(base, count: count, header: header, session: s) else { return nil }
        return UnsafeRawBufferPointer(start: body, count: n)
    }

    /// The packet's phase bit is not the current one: it is either the first of the next phase,
    /// or a late one from the previous phase. Opening in place overwrites the bytes, so the
    /// packet is kept in scratch for the second try. Before the first packet of the next phase
    /// is acted on, the packets the AES pool is opening (of the current phase, sent before it)
    /// are handled. A late packet of the previous phase was sent before those: it needs no wait,
    /// which also keeps replays of captured old-phase packets (they authenticate until the phase
    /// after) from making the dispatch thread wait out the pool.
    @inline(never)
    private func openOtherPhase(_ base: UnsafeMutableRawPointer, count: Int, header: PacketHeader, session s: Int)
        -> Int?
    {
        let body = base + Wire.headerSize
        let tag = body + count
        let nonce = scratch + mtu
        scratch.copyMemory(from: body, byteCount: count + Wire.tagSize)
        let rx = crypto[s].rx.unsafelyUnwrapped
        rx.next.writeNonce(of: header, to: nonce)
        if rx.next.key.open(
            nonce: nonce, aad: base, aadCount: Wire.headerSize, source: body, destination: body, count: count, tag: tag)
        {
            if offloadsReceive { drainOpened() }
            advanceReceivePhase(session: s)
            return count
        }
        if let previous = rx.previous {
            body.copyMemory(from: scratch, byteCount: count + Wire.tagSize)
            previous.writeNonce(of: header, to: nonce)
            if previous.key.open(
                nonce: nonce, aad: base, aadCount: Wire.headerSize, source: body, destination: body, count: count,
                tag: tag)
            {
                return count
            }
        }
        drop(.authenticationFailed)
        return nil
    }

    /// The peer sent its first authenticated packet in the next phase.
    private func advanceReceivePhase(session s: Int) {
        waitForOffloadedJobs()
        guard crypto[s].rx!.advance(now: now) else { return }
        switch sessions[s].role {
        case .server:
            // Follow the client: answer in the new phase from now on, kept responses included.
            let old = crypto[s].tx!.current
            if crypto[s].tx!.advance(now: now) {
                resealPresealedResponses(
                    session: s, from: old, to: crypto[s].tx!.current, phase: crypto[s].tx!.phase)
            }
        case .client:
            // The server has moved both directions: the update is complete.
            crypto[s].updatePending = false
            crypto[s].updates &+= 1
        }
    }
}
