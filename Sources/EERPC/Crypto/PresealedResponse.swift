import CSystemShims

// MARK: - Presealed responses: the seal is the copy
//
// A handler that answers from memory it cannot lend the runtime (a value in a storage snapshot)
// copies it into a response buffer, and on an encrypted session each packet is then sealed from
// that buffer into a staging slot as it leaves: two passes over every byte. Sealing every packet
// at once, straight from the handler's bytes into the buffer the runtime keeps, is one pass: the
// encryption replaces the copy a plaintext response needs anyway. The packets are what sealing
// at send time would produce (same key, nonce, header and bytes), so the peer cannot tell, and a
// retransmission sends the kept ciphertext again without sealing it again.
//
// The kept packets are sealed under the session's current transmit key. When a key update moves
// it on, they are opened with the old key and sealed again with the new one before anything else
// is sent, so they never fall behind the keys the client still holds.

extension RpcEndpoint {
    /// Whether `respond(copying:_:)` seals a response of `size` bytes at once here: encrypted,
    /// sealed on this thread rather than in the AES pool (whose point is to keep encryption off
    /// the dispatch thread), and small enough that its sealed packets, a tag each, fit one
    /// buffer. The largest messages (within a tag per packet of ``Wire/maxMessageSize``) do not:
    /// they are copied, and sealed as they leave.
    @inline(__always)
    func presealsResponses(size: Int) -> Bool {
        encrypts && !offloads(messageSize: size) && presealedSize(of: size) <= Wire.maxMessageSize
    }

    /// Bytes a presealed response of `size` bytes takes: its packets, each followed by its tag.
    @inline(__always)
    func presealedSize(of size: Int) -> Int {
        Wire.packetCount(size: size, dataPerPacket: dataPerPacket) * (dataPerPacket + Wire.tagSize)
    }

    /// Seals the response `prefix ‖ body` for slot `k` into a buffer of its own (the slot's
    /// one-packet buffer if it fits), packet j at `j × (dataPerPacket + tag)`. Call only where
    /// ``presealsResponses(size:)`` holds; nil if no buffer is left.
    ///
    /// Memory: `prefix` and `body` are read during the call only. The buffer belongs to the slot
    /// from here on (`retireResponse` frees it), like any response buffer.
    func presealResponse(
        slot k: Int, preallocated: MsgBuffer, prefix: UnsafeRawBufferPointer, body: UnsafeRawBufferPointer
    ) -> (MsgBuffer, phase: Bool)? {
        let size = prefix.count + body.count
        let s = k / Wire.sessionRequestWindow
        let packets = Wire.packetCount(size: size, dataPerPacket: dataPerPacket)
        let stride = dataPerPacket + Wire.tagSize
        var buffer: MsgBuffer
        if packets == 1 && size <= preallocated.capacity {
            buffer = preallocated  // the tag goes into its tail room
        } else {
            guard let b = allocate(size: presealedSize(of: size)) else { return nil }
            buffer = b
        }
        let keys = crypto[s].tx.unsafelyUnwrapped
        // A packet straddling prefix and body is assembled in the scratch, after the AAD and
        // nonce (`responsePacketAAD`); the scratch has room for an MTU plus 64 bytes.
        let assembly = scratch + 64
        // Two packets ahead: a value read from storage is often in no cache, and the seal would
        // otherwise wait for each line (the hardware prefetcher stops at every page).
        let ahead = 2 * dataPerPacket
        if let b = body.baseAddress { ee_prefetch(b, min(body.count, ahead)) }
        for j in 0..<packets {
            let offset = j * dataPerPacket
            let bodyOffset = offset - prefix.count  // of this packet's first byte; negative in the prefix
            if let b = body.baseAddress, bodyOffset + ahead >= 0, bodyOffset + ahead < body.count {
                ee_prefetch(b + bodyOffset + ahead, min(dataPerPacket, body.count - bodyOffset - ahead))
            }
            let length = size == 0 ? 0 : sliceLength(size: size, index: j)
            let (aad, nonce) = responsePacketAAD(slot: k, index: j, size: size, keyPhase: keys.phase, epoch: keys.current)
            let source: UnsafeRawPointer
            if bodyOffset >= 0 {
                source = body.baseAddress.map { UnsafeRawPointer($0) + bodyOffset } ?? UnsafeRawPointer(assembly)
            } else {
                // Only the first packet or so: the prefix is a status byte or a small header.
                let fromPrefix = min(length, -bodyOffset)
                if fromPrefix > 0 { ee_copy(assembly, prefix.baseAddress! + offset, fromPrefix) }
                if length > fromPrefix { ee_copy(assembly + fromPrefix, body.baseAddress!, length - fromPrefix) }
                source = UnsafeRawPointer(assembly)
            }
            let destination = buffer.data + j * stride
            keys.current.key.seal(
                nonce: nonce, aad: aad, aadCount: Wire.headerSize, source: source, destination: destination,
                count: length, tag: destination + length)
        }
        crypto[s].tx!.sealed &+= UInt64(packets)
        counters.presealedPackets &+= UInt64(packets)
        buffer.resize(to: size)
        return (buffer, keys.phase)
    }

    /// Writes the AAD (the header) and the nonce of packet `j` of slot `k`'s response (`size`
    /// bytes) in phase `keyPhase` under `epoch` into the scratch: the header at 0, the nonce at 16.
    @inline(__always)
    func responsePacketAAD(slot k: Int, index j: Int, size: Int, keyPhase: Bool, epoch: KeyEpoch)
        -> (aad: UnsafeRawPointer, nonce: UnsafeRawPointer)
    {
        let header = responseHeader(slot: k, index: j, size: size, keyPhase: keyPhase)
        header.encode(to: scratch)
        epoch.writeNonce(of: header, to: scratch + Wire.headerSize)
        return (UnsafeRawPointer(scratch), UnsafeRawPointer(scratch + Wire.headerSize))
    }

    /// Session `s`'s transmit key moved from `old` (phase `!phase`) to `new` (phase `phase`):
    /// seals its kept responses again under the new key, and marks their packets still queued
    /// with the new phase. Runs before anything else is sent.
    func resealPresealedResponses(session s: Int, from old: KeyEpoch, to new: KeyEpoch, phase: Bool) {
        let stride = dataPerPacket + Wire.tagSize
        for i in 0..<Wire.sessionRequestWindow {
            let k = s * Wire.sessionRequestWindow + i
            guard slots[k].presealed, slots[k].responseReady, let response = slots[k].serverResponse else { continue }
            let size = response.size
            for j in 0..<Wire.packetCount(size: size, dataPerPacket: dataPerPacket) {
                let length = size == 0 ? 0 : sliceLength(size: size, index: j)
                let packet = response.data + j * stride
                var (aad, nonce) = responsePacketAAD(slot: k, index: j, size: size, keyPhase: !phase, epoch: old)
                let opened = old.key.open(
                    nonce: nonce, aad: aad, aadCount: Wire.headerSize, source: packet, destination: packet,
                    count: length, tag: packet + length)
                // Our own ciphertext under our own key: a failure means memory was overwritten.
                precondition(opened, "a presealed response no longer opens")
                (aad, nonce) = responsePacketAAD(slot: k, index: j, size: size, keyPhase: phase, epoch: new)
                new.key.seal(
                    nonce: nonce, aad: aad, aadCount: Wire.headerSize, source: packet, destination: packet,
                    count: length, tag: packet + length)
                counters.resealedPackets &+= 1
            }
            slots[k].presealedPhase = phase
            for q in 0..<txCount where txQueue[q].owner == Int32(k) && txQueue[q].presealed {
                let bit = PacketHeader.keyPhaseBitInWord0
                txQueue[q].header0 = phase ? txQueue[q].header0 | bit : txQueue[q].header0 & ~bit
            }
        }
    }
}
