import CCryptoShims

/// Zeroes a value's bytes where it lives (OPENSSL_cleanse: a plain assignment may be dropped as a
/// dead store). For key material on the stack or in a struct about to be dropped.
@inline(__always)
func wipeBytes<T: BitwiseCopyable>(of value: inout T) {
    withUnsafeMutableBytes(of: &value) { ee_cleanse($0.baseAddress, $0.count) }
}

/// The two data-plane secrets of a session, exported from its TLS 1.3 handshake: one per
/// direction. Everything else (keys, IVs, next keys) is derived from these with HKDF.
struct SessionSecrets: BitwiseCopyable, Sendable {
    var clientToServer = Secret()
    var serverToClient = Secret()
    static let exporterLabel = "EXPORTER-eeRPC-dataplane-v1"

    /// Zeroes both secrets where they are.
    mutating func wipe() { wipeBytes(of: &self) }
}

/// A session's secrets on their way from a session-management thread to the dispatch thread,
/// in a heap cell of their own: inline in the event, they would sit in the inbox array's
/// storage, which is freed without being wiped. Whoever removes the event from the inbox owns
/// the cell and calls `take` or `discard` once; both wipe and free it.
struct SecretsInTransit: @unchecked Sendable {
    private let cell: UnsafeMutablePointer<SessionSecrets>

    /// Moves `secrets` into a new cell and wipes them where they were.
    init(_ secrets: inout SessionSecrets) {
        cell = .allocate(capacity: 1)
        cell.initialize(to: secrets)
        secrets.wipe()
    }

    /// The secrets (for the caller to wipe once used); the cell is wiped and freed.
    func take() -> SessionSecrets {
        let secrets = cell.pointee
        discard()
        return secrets
    }

    /// Wipes and frees the cell unread.
    func discard() {
        cell.pointee.wipe()
        cell.deallocate()
    }
}

/// 32 bytes of secret, inline.
struct Secret: BitwiseCopyable, Sendable {
    var w0: UInt64 = 0, w1: UInt64 = 0, w2: UInt64 = 0, w3: UInt64 = 0

    /// HKDF-Expand-SHA256(self, label) into `count` bytes at `out`.
    func expand(_ label: String, into out: UnsafeMutableRawPointer, count: Int) -> Bool {
        var copy = self
        defer { copy.wipe() }
        return withUnsafeBytes(of: &copy) { prk in
            Array(label.utf8).withUnsafeBufferPointer { info in
                ee_hkdf_expand_sha256(
                    prk.baseAddress!.assumingMemoryBound(to: UInt8.self), 32, info.baseAddress, info.count,
                    out.assumingMemoryBound(to: UInt8.self), count)
            }
        } == 1
    }

    /// The secret of the next key phase.
    func next() -> Secret? {
        var n = Secret()
        return withUnsafeMutableBytes(of: &n) { expand("eeRPC ku", into: $0.baseAddress!, count: 32) } ? n : nil
    }

    mutating func wipe() { wipeBytes(of: &self) }
}

/// The key, IV and secret of one key phase of one direction. The key state is owned by the
/// direction's ``DirectionKeys`` and destroyed when the epoch is retired.
struct KeyEpoch: BitwiseCopyable {
    var key: KeyHandle
    /// Nonce bytes 0-3, as derived.
    var ivHigh: UInt32
    /// Nonce bytes 4-11 as a big-endian integer; the packet's sequence is XORed into it.
    var ivLow: UInt64
    var secret: Secret

    static func derive(from secret: Secret, backend: AEADBackendKind, algorithm: AEADAlgorithm) -> KeyEpoch? {
        var material = (Secret(), UInt64(0), UInt64(0))  // 32 bytes of key room, 12 of IV (+4 spare)
        // The raw key and IV must not outlive the expanded key state on this stack.
        defer { wipeBytes(of: &material) }
        let ok = withUnsafeMutableBytes(of: &material) { raw -> Bool in
            secret.expand("eeRPC key", into: raw.baseAddress!, count: algorithm.keyLength)
                && secret.expand("eeRPC iv", into: raw.baseAddress! + 32, count: 12)
        }
        guard ok else { return nil }
        return withUnsafeBytes(of: &material) { raw -> KeyEpoch? in
            guard
                let key = try? KeyHandle.make(
                    backend: backend, key: UnsafeRawBufferPointer(start: raw.baseAddress!, count: algorithm.keyLength))
            else { return nil }
            let ivHigh = raw.loadUnaligned(fromByteOffset: 32, as: UInt32.self)
            let ivLow = UInt64(bigEndian: raw.loadUnaligned(fromByteOffset: 36, as: UInt64.self))
            return KeyEpoch(key: key, ivHigh: ivHigh, ivLow: ivLow, secret: secret)
        }
    }

    func destroy() { key.destroy() }

    /// Writes the 12-byte nonce of the packet whose header carries (messageSize, requestNumber,
    /// packetNumber): IV XOR (0x00 ‖ size₂₄ ‖ reqnum₄₈ ‖ pktnum₁₆), unique for every packet this
    /// key seals (see DESIGN.md §5). The size is in it because a request-for-response carries its
    /// run length and the client's attempt number there: two RFRs from one packet number asking
    /// for different counts, or in different attempts, are different packets and must not share
    /// a nonce. Every other packet's size is fixed by its request.
    @inline(__always)
    func writeNonce(messageSize: UInt32, requestNumber: UInt64, packetNumber: UInt16, to p: UnsafeMutableRawPointer) {
        let sequence = (requestNumber << 16) | UInt64(packetNumber)
        p.storeBytes(of: ivHigh ^ (messageSize & 0xFF_FFFF).bigEndian, as: UInt32.self)
        p.storeBytes(of: (ivLow ^ sequence).bigEndian, toByteOffset: 4, as: UInt64.self)
    }

    /// The nonce of the packet with this header.
    @inline(__always)
    func writeNonce(of header: PacketHeader, to p: UnsafeMutableRawPointer) {
        writeNonce(
            messageSize: header.messageSize, requestNumber: header.requestNumber, packetNumber: header.packetNumber,
            to: p)
    }
}

/// The keys of one direction of a session: the current phase, the next one (derived ahead so a
/// switch costs nothing on the data path), and the previous one (kept to open late packets).
struct DirectionKeys: BitwiseCopyable {
    var current: KeyEpoch
    var next: KeyEpoch
    var previous: KeyEpoch?
    /// The key-phase bit of `current`.
    var phase = false
    /// Packets sealed under `current` (sending direction); at a client, with the server's
    /// answers to them (see `packetsAnswering`).
    var sealed: UInt64 = 0
    var phaseStarted: UInt64 = 0

    init?(secret: Secret, backend: AEADBackendKind, algorithm: AEADAlgorithm, now: UInt64) {
        guard let current = KeyEpoch.derive(from: secret, backend: backend, algorithm: algorithm) else { return nil }
        guard var nextSecret = secret.next() else {
            current.destroy()
            return nil
        }
        defer { nextSecret.wipe() }  // the epoch keeps its own copy
        guard let next = KeyEpoch.derive(from: nextSecret, backend: backend, algorithm: algorithm) else {
            current.destroy()
            return nil
        }
        self.current = current
        self.next = next
        // Only the next phase's secret derives anything more; the current one's key is made.
        self.current.secret.wipe()
        phaseStarted = now
    }

    /// Moves to the next phase: previous ← current ← next, and derives a new next.
    /// Returns false (and stays put) if the derivation failed.
    mutating func advance(now: UInt64) -> Bool {
        guard var secret = next.secret.next() else { return false }
        defer { secret.wipe() }  // the epoch keeps its own copy
        guard let fresh = KeyEpoch.derive(from: secret, backend: next.key.backend, algorithm: next.key.algorithm)
        else { return false }
        previous?.destroy()
        previous = current
        current = next
        next = fresh
        // The new current phase's secret derived `fresh`; nothing needs it any more.
        current.secret.wipe()
        phase.toggle()
        sealed = 0
        phaseStarted = now
        return true
    }

    func destroy() {
        current.destroy()
        next.destroy()
        previous?.destroy()
    }
}

/// The data-plane protection of one session end.
struct SessionCrypto: BitwiseCopyable {
    var tx: DirectionKeys? = nil
    var rx: DirectionKeys? = nil
    /// Client: a key update was started and the server has not yet answered in the new phase.
    var updatePending = false
    /// Key updates completed (both directions moved), for tests and stats.
    var updates: UInt64 = 0

    var enabled: Bool { tx != nil }

    mutating func release() {
        tx?.destroy()
        rx?.destroy()
        // Assigning a fresh value would leave the old secrets' bytes where the optionals were.
        wipeBytes(of: &self)
        self = SessionCrypto()
    }
}
