import CCryptoShims
import Glibc

/// AES-GCM key sizes. AES-128-GCM is the default.
public enum AEADAlgorithm: UInt8, Sendable, CaseIterable, BitwiseCopyable {
    case aes128GCM = 16
    case aes256GCM = 32
    public var keyLength: Int { Int(rawValue) }
    public var name: String { self == .aes128GCM ? "AES-128-GCM" : "AES-256-GCM" }
}

/// Which library seals and opens.
public enum AEADBackendKind: UInt8, Sendable, CaseIterable, BitwiseCopyable {
    /// Intel ipsec-mb, direct GCM API: the default on x86-64 without VAES, and with AVX-512.
    case ipsecMB
    /// OpenSSL 3 libcrypto EVP: the fallback elsewhere.
    case openSSL
    /// Our own GCM on VAES + VPCLMULQDQ with 256-bit registers (`vaes_gcm.c`): the default on CPUs
    /// that have them without AVX-512, where ipsec-mb 1.3 runs 128-bit AES-NI at half the rate.
    case vaesAVX2
    /// ipsec-mb for messages of `IPsecMBShortVAESBackend.shortLimit` bytes and more, our VAES code
    /// for shorter ones (control packets, small requests), where it takes half the time: the
    /// default where ipsec-mb has its AVX-512 path and the CPU has VAES.
    case ipsecMBShortVAES

    /// The fastest that runs here: ipsec-mb's AVX-512 path (with our VAES code for short
    /// messages where the CPU has VAES), else VAES on AVX2, else ipsec-mb's AES-NI paths, else
    /// OpenSSL. `EERPC_AEAD_BACKEND=ipsec-mb|vaes-avx2|openssl` in the
    /// environment overrides the choice, if that backend runs here.
    ///
    /// A microbenchmark is not the judge here. On an AMD Zen 4 (2026-11-29) `eekv bench aead`
    /// has the VAES code level with ipsec-mb's AVX-512 code on 1,440-byte packets and twice as
    /// fast on empty ones, yet in the YCSB study with each in turn (four alternating runs) the
    /// VAES code gave 0.86–0.88 × plaintext at 64 KiB where ipsec-mb gave 0.88–0.91 ×, and the
    /// same at 10×100 B. So the rule stays by feature. Short messages are another matter: there
    /// ipsec-mb's cost per call dominates, and the VAES code is faster below 192 bytes on both
    /// machines measured (an empty message: 22 against 42 ns on the Zen 4, 17 against 34 on an
    /// Intel Xeon, Emerald Rapids); see ``IPsecMBShortVAESBackend``.
    public static let preferred: AEADBackendKind = {
        if let name = getenv("EERPC_AEAD_BACKEND"), let kind = AEADBackendKind(argument: String(cString: name)),
            available.contains(kind)
        {
            return kind
        }
        if IPsecMBBackend.isAvailable && String(cString: ee_imb_arch_name()) == "avx512" {
            return VAESBackend.isAvailable ? .ipsecMBShortVAES : .ipsecMB
        }
        if VAESBackend.isAvailable { return .vaesAVX2 }
        return IPsecMBBackend.isAvailable ? .ipsecMB : .openSSL
    }()

    /// The backends this CPU runs.
    public static var available: [AEADBackendKind] {
        allCases.filter {
            switch $0 {
            case .ipsecMB: IPsecMBBackend.isAvailable
            case .openSSL: OpenSSLBackend.isAvailable
            case .vaesAVX2: VAESBackend.isAvailable
            case .ipsecMBShortVAES: IPsecMBShortVAESBackend.isAvailable
            }
        }
    }

    public var name: String {
        switch self {
        case .ipsecMB: "ipsec-mb \(String(cString: ee_imb_arch_name()))"
        case .openSSL: "openssl"
        case .vaesAVX2: "vaes-avx2"
        case .ipsecMBShortVAES: "ipsec-mb \(String(cString: ee_imb_arch_name())) + vaes-avx2 < \(IPsecMBShortVAESBackend.shortLimit) B"
        }
    }

    /// The command-line name.
    public var argument: String {
        switch self {
        case .ipsecMB: "ipsec-mb"
        case .openSSL: "openssl"
        case .vaesAVX2: "vaes-avx2"
        case .ipsecMBShortVAES: "ipsec-mb+vaes"
        }
    }

    /// Parses a command-line name (`argument`): ipsec-mb, openssl, vaes-avx2 or ipsec-mb+vaes.
    public init?(argument: String) {
        guard let kind = Self.allCases.first(where: { $0.argument == argument }) else { return nil }
        self = kind
    }
}

public enum CryptoError: Error, Equatable, Sendable {
    case backendUnavailable
    case badKeyLength(Int)
    case keySetupFailed
    case handshake(String)
    case certificate(String)
}

extension CryptoError: CustomStringConvertible {
    public var description: String {
        switch self {
        case .backendUnavailable: "that AES-GCM backend does not run on this CPU"
        case .badKeyLength(let n): "a \(n)-byte key fits no AES-GCM variant"
        case .keySetupFailed: "AES-GCM key setup failed"
        case .handshake(let why): "TLS handshake: \(why)"
        case .certificate(let why): "certificate: \(why)"
        }
    }
}

/// One AEAD library behind the runtime: stateless functions over per-key state the caller owns.
/// Seal and open take raw pointers and never allocate. Tags are 16 bytes, nonces 12.
public protocol AEADBackend {
    static var kind: AEADBackendKind { get }
    static var isAvailable: Bool { get }
    static var stateSize: Int { get }
    static var stateAlignment: Int { get }
    /// Expands `key` into `state` (`stateSize` bytes, `stateAlignment`-aligned).
    static func initialize(_ state: UnsafeMutableRawPointer, key: UnsafeRawBufferPointer) -> Bool
    static func deinitialize(_ state: UnsafeMutableRawPointer)
    /// Encrypts `count` bytes of `source` into `destination` and writes the tag. The two may be the
    /// same memory; if not, they must not overlap (a partial overlap reads bytes already encrypted).
    static func seal(
        _ state: UnsafeMutableRawPointer, keyLength: Int, nonce: UnsafeRawPointer, aad: UnsafeRawPointer,
        aadCount: Int, source: UnsafeRawPointer, destination: UnsafeMutableRawPointer, count: Int,
        tag: UnsafeMutableRawPointer)
    /// Decrypts and verifies, with `source` and `destination` as for `seal`. On false,
    /// `destination` holds garbage the caller must ignore.
    static func open(
        _ state: UnsafeMutableRawPointer, keyLength: Int, nonce: UnsafeRawPointer, aad: UnsafeRawPointer,
        aadCount: Int, source: UnsafeRawPointer, destination: UnsafeMutableRawPointer, count: Int,
        tag: UnsafeRawPointer) -> Bool
}

/// Intel ipsec-mb. The expanded key is read-only during seal and open, so one key serves any
/// number of threads at once (the AES pool relies on this).
public enum IPsecMBBackend: AEADBackend {
    public static var kind: AEADBackendKind { .ipsecMB }
    public static var isAvailable: Bool { ee_imb_available() != 0 }
    public static var stateSize: Int { ee_imb_key_size() }
    public static var stateAlignment: Int { ee_imb_key_alignment() }

    public static func initialize(_ state: UnsafeMutableRawPointer, key: UnsafeRawBufferPointer) -> Bool {
        ee_imb_gcm_key_init(state, key.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(key.count)) == 0
    }

    public static func deinitialize(_ state: UnsafeMutableRawPointer) {
        ee_cleanse(state, stateSize)  // wipe round keys (a wipe the compiler cannot drop as dead)
    }

    @inline(__always)
    public static func seal(
        _ state: UnsafeMutableRawPointer, keyLength: Int, nonce: UnsafeRawPointer, aad: UnsafeRawPointer,
        aadCount: Int, source: UnsafeRawPointer, destination: UnsafeMutableRawPointer, count: Int,
        tag: UnsafeMutableRawPointer
    ) {
        ee_imb_gcm_seal(
            state, Int32(keyLength), destination.assumingMemoryBound(to: UInt8.self),
            source.assumingMemoryBound(to: UInt8.self), UInt64(count), nonce.assumingMemoryBound(to: UInt8.self),
            aad.assumingMemoryBound(to: UInt8.self), UInt64(aadCount), tag.assumingMemoryBound(to: UInt8.self))
    }

    @inline(__always)
    public static func open(
        _ state: UnsafeMutableRawPointer, keyLength: Int, nonce: UnsafeRawPointer, aad: UnsafeRawPointer,
        aadCount: Int, source: UnsafeRawPointer, destination: UnsafeMutableRawPointer, count: Int,
        tag: UnsafeRawPointer
    ) -> Bool {
        ee_imb_gcm_open(
            state, Int32(keyLength), destination.assumingMemoryBound(to: UInt8.self),
            source.assumingMemoryBound(to: UInt8.self), UInt64(count), nonce.assumingMemoryBound(to: UInt8.self),
            aad.assumingMemoryBound(to: UInt8.self), UInt64(aadCount), tag.assumingMemoryBound(to: UInt8.self)) != 0
    }
}

/// eeRPC's own AES-GCM for CPUs with VAES and VPCLMULQDQ (AMD Zen 3, Intel Alder Lake and later).
/// Like ipsec-mb, the expanded key is read-only during seal and open, so threads share it.
public enum VAESBackend: AEADBackend {
    public static var kind: AEADBackendKind { .vaesAVX2 }
    public static var isAvailable: Bool { ee_vgcm_available() != 0 }
    public static var stateSize: Int { ee_vgcm_key_size() }
    public static var stateAlignment: Int { ee_vgcm_key_alignment() }

    public static func initialize(_ state: UnsafeMutableRawPointer, key: UnsafeRawBufferPointer) -> Bool {
        ee_vgcm_key_init(state, key.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(key.count)) == 0
    }

    public static func deinitialize(_ state: UnsafeMutableRawPointer) {
        ee_cleanse(state, stateSize)  // wipe round keys and H powers
    }

    @inline(__always)
    public static func seal(
        _ state: UnsafeMutableRawPointer, keyLength: Int, nonce: UnsafeRawPointer, aad: UnsafeRawPointer,
        aadCount: Int, source: UnsafeRawPointer, destination: UnsafeMutableRawPointer, count: Int,
        tag: UnsafeMutableRawPointer
    ) {
        ee_vgcm_seal(
            state, destination.assumingMemoryBound(to: UInt8.self), source.assumingMemoryBound(to: UInt8.self),
            UInt64(count), nonce.assumingMemoryBound(to: UInt8.self), aad.assumingMemoryBound(to: UInt8.self),
            UInt64(aadCount), tag.assumingMemoryBound(to: UInt8.self))
    }

    @inline(__always)
    public static func open(
        _ state: UnsafeMutableRawPointer, keyLength: Int, nonce: UnsafeRawPointer, aad: UnsafeRawPointer,
        aadCount: Int, source: UnsafeRawPointer, destination: UnsafeMutableRawPointer, count: Int,
        tag: UnsafeRawPointer
    ) -> Bool {
        ee_vgcm_open(
            state, destination.assumingMemoryBound(to: UInt8.self), source.assumingMemoryBound(to: UInt8.self),
            UInt64(count), nonce.assumingMemoryBound(to: UInt8.self), aad.assumingMemoryBound(to: UInt8.self),
            UInt64(aadCount), tag.assumingMemoryBound(to: UInt8.self)) != 0
    }
}

/// ipsec-mb and our VAES code together, chosen by message size. Both implement the same AES-GCM,
/// so which one sealed a packet is invisible to the peer. ipsec-mb's AVX-512 code pays a fixed
/// cost per call that our VAES code does not (on this Intel Xeon, sealing an empty message takes
/// 34 ns against 17, 64 bytes 47 against 29), while on full packets its 512-bit registers make it
/// faster (1,440 bytes: 120 ns against 158). The two cross near 210 bytes (200: 45 against 50 ns;
/// 223: 55 against 51).
///
/// State: ipsec-mb's expanded key, then at the next 64-byte boundary our VAES key; both
/// read-only during seal and open, so threads share them as they share either alone.
public enum IPsecMBShortVAESBackend: AEADBackend {
    public static var kind: AEADBackendKind { .ipsecMBShortVAES }
    /// Messages shorter than this go to the VAES code (`bench aead --size 0,64,192,223,1440`).
    public static let shortLimit = 192
    public static var isAvailable: Bool { IPsecMBBackend.isAvailable && VAESBackend.isAvailable }
    static var vaesOffset: Int { (IPsecMBBackend.stateSize + 63) & ~63 }
    public static var stateSize: Int { vaesOffset + VAESBackend.stateSize }
    public static var stateAlignment: Int { max(64, IPsecMBBackend.stateAlignment, VAESBackend.stateAlignment) }

    public static func initialize(_ state: UnsafeMutableRawPointer, key: UnsafeRawBufferPointer) -> Bool {
        guard IPsecMBBackend.initialize(state, key: key) else { return false }
        guard VAESBackend.initialize(state + vaesOffset, key: key) else {
            IPsecMBBackend.deinitialize(state)
            return false
        }
        return true
    }

    public static func deinitialize(_ state: UnsafeMutableRawPointer) {
        IPsecMBBackend.deinitialize(state)
        VAESBackend.deinitialize(state + vaesOffset)
    }

    @inline(__always)
    public static func seal(
        _ state: UnsafeMutableRawPointer, keyLength: Int, nonce: UnsafeRawPointer, aad: UnsafeRawPointer,
        aadCount: Int, source: UnsafeRawPointer, destination: UnsafeMutableRawPointer, count: Int,
        tag: UnsafeMutableRawPointer
    ) {
        if count < shortLimit {
            VAESBackend.seal(
                state + vaesOffset, keyLength: keyLength, nonce: nonce, aad: aad, aadCount: aadCount, source: source,
                destination: destination, count: count, tag: tag)
        } else {
            IPsecMBBackend.seal(
                state, keyLength: keyLength, nonce: nonce, aad: aad, aadCount: aadCount, source: source,
                destination: destination, count: count, tag: tag)
        }
    }

    @inline(__always)
    public static func open(
        _ state: UnsafeMutableRawPointer, keyLength: Int, nonce: UnsafeRawPointer, aad: UnsafeRawPointer,
        aadCount: Int, source: UnsafeRawPointer, destination: UnsafeMutableRawPointer, count: Int,
        tag: UnsafeRawPointer
    ) -> Bool {
        count < shortLimit
            ? VAESBackend.open(
                state + vaesOffset, keyLength: keyLength, nonce: nonce, aad: aad, aadCount: aadCount, source: source,
                destination: destination, count: count, tag: tag)
            : IPsecMBBackend.open(
                state, keyLength: keyLength, nonce: nonce, aad: aad, aadCount: aadCount, source: source,
                destination: destination, count: count, tag: tag)
    }
}

/// OpenSSL 3 EVP: the cipher is fetched once per process and each key keeps one sealing and one
/// opening context, so a message changes only the IV. A context is not thread-safe: a key's
/// state belongs to one thread (AES pool workers key contexts of their own).
public enum OpenSSLBackend: AEADBackend {
    public static var kind: AEADBackendKind { .openSSL }
    public static var isAvailable: Bool { true }
    public static var stateSize: Int { 2 * MemoryLayout<UnsafeMutableRawPointer>.size }
    public static var stateAlignment: Int { MemoryLayout<UnsafeMutableRawPointer>.alignment }

    public static func initialize(_ state: UnsafeMutableRawPointer, key: UnsafeRawBufferPointer) -> Bool {
        let k = key.baseAddress?.assumingMemoryBound(to: UInt8.self)
        guard let sealing = ee_evp_gcm_new(k, Int32(key.count), 1) else { return false }
        guard let opening = ee_evp_gcm_new(k, Int32(key.count), 0) else {
            ee_evp_gcm_free(sealing)
            return false
        }
        state.storeBytes(of: sealing, as: UnsafeMutableRawPointer.self)
        state.storeBytes(of: opening, toByteOffset: 8, as: UnsafeMutableRawPointer.self)
        return true
    }

    public static func deinitialize(_ state: UnsafeMutableRawPointer) {
        ee_evp_gcm_free(state.load(as: UnsafeMutableRawPointer.self))
        ee_evp_gcm_free(state.load(fromByteOffset: 8, as: UnsafeMutableRawPointer.self))
    }

    @inline(__always)
    public static func seal(
        _ state: UnsafeMutableRawPointer, keyLength: Int, nonce: UnsafeRawPointer, aad: UnsafeRawPointer,
        aadCount: Int, source: UnsafeRawPointer, destination: UnsafeMutableRawPointer, count: Int,
        tag: UnsafeMutableRawPointer
    ) {
        let ok = ee_evp_gcm_seal(
            state.load(as: UnsafeMutableRawPointer.self), destination.assumingMemoryBound(to: UInt8.self),
            source.assumingMemoryBound(to: UInt8.self), Int32(count), nonce.assumingMemoryBound(to: UInt8.self),
            aad.assumingMemoryBound(to: UInt8.self), Int32(aadCount), tag.assumingMemoryBound(to: UInt8.self))
        precondition(ok == 1, "OpenSSL AES-GCM seal failed")
    }

    @inline(__always)
    public static func open(
        _ state: UnsafeMutableRawPointer, keyLength: Int, nonce: UnsafeRawPointer, aad: UnsafeRawPointer,
        aadCount: Int, source: UnsafeRawPointer, destination: UnsafeMutableRawPointer, count: Int,
        tag: UnsafeRawPointer
    ) -> Bool {
        ee_evp_gcm_open(
            state.load(fromByteOffset: 8, as: UnsafeMutableRawPointer.self),
            destination.assumingMemoryBound(to: UInt8.self), source.assumingMemoryBound(to: UInt8.self),
            Int32(count), nonce.assumingMemoryBound(to: UInt8.self), aad.assumingMemoryBound(to: UInt8.self),
            Int32(aadCount), tag.assumingMemoryBound(to: UInt8.self)) == 1
    }
}

/// An expanded AES-GCM key: a trivial handle whose owner destroys it exactly once. The runtime's
/// session tables hold these (their lifetime follows the session's key epochs); applications use
/// the owning ``AEADKey``. Sendable: the AES pool's workers use a key while its owner keeps it
/// alive (ipsec-mb state is read-only during seal and open; OpenSSL workers key their own).
@usableFromInline
struct KeyHandle: BitwiseCopyable, @unchecked Sendable {
    let backend: AEADBackendKind
    let algorithm: AEADAlgorithm
    /// Backend state, allocated by `make`, wiped and freed by `destroy`.
    let state: UnsafeMutableRawPointer
    /// The raw key (32 bytes, zero-padded), so another thread can key a context of its own.
    let rawKey: UnsafeMutableRawPointer

    static func make(backend: AEADBackendKind, key: UnsafeRawBufferPointer) throws(CryptoError) -> KeyHandle {
        guard let algorithm = AEADAlgorithm(rawValue: UInt8(truncatingIfNeeded: key.count)), key.count <= 32 else {
            throw .badKeyLength(key.count)
        }
        let size: Int
        let alignment: Int
        switch backend {
        case .ipsecMB:
            guard IPsecMBBackend.isAvailable else { throw .backendUnavailable }
            size = IPsecMBBackend.stateSize
            alignment = IPsecMBBackend.stateAlignment
        case .openSSL:
            size = OpenSSLBackend.stateSize
            alignment = OpenSSLBackend.stateAlignment
        case .vaesAVX2:
            guard VAESBackend.isAvailable else { throw .backendUnavailable }
            size = VAESBackend.stateSize
            alignment = VAESBackend.stateAlignment
        case .ipsecMBShortVAES:
            guard IPsecMBShortVAESBackend.isAvailable else { throw .backendUnavailable }
            size = IPsecMBShortVAESBackend.stateSize
            alignment = IPsecMBShortVAESBackend.stateAlignment
        }
        let state = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: alignment)
        let ok =
            switch backend {
            case .ipsecMB: IPsecMBBackend.initialize(state, key: key)
            case .openSSL: OpenSSLBackend.initialize(state, key: key)
            case .vaesAVX2: VAESBackend.initialize(state, key: key)
            case .ipsecMBShortVAES: IPsecMBShortVAESBackend.initialize(state, key: key)
            }
        guard ok else {
            state.deallocate()
            throw .keySetupFailed
        }
        let raw = UnsafeMutableRawPointer.allocate(byteCount: 32, alignment: 16)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: 32)
        raw.copyMemory(from: key.baseAddress!, byteCount: key.count)
        return KeyHandle(backend: backend, algorithm: algorithm, state: state, rawKey: raw)
    }

    func destroy() {
        switch backend {
        case .ipsecMB: IPsecMBBackend.deinitialize(state)
        case .openSSL: OpenSSLBackend.deinitialize(state)
        case .vaesAVX2: VAESBackend.deinitialize(state)
        case .ipsecMBShortVAES: IPsecMBShortVAESBackend.deinitialize(state)
        }
        state.deallocate()
        ee_cleanse(rawKey, 32)
        rawKey.deallocate()
    }

    @inline(__always)
    func seal(
        nonce: UnsafeRawPointer, aad: UnsafeRawPointer, aadCount: Int, source: UnsafeRawPointer,
        destination: UnsafeMutableRawPointer, count: Int, tag: UnsafeMutableRawPointer
    ) {
        switch backend {
        case .ipsecMB:
            IPsecMBBackend.seal(
                state, keyLength: algorithm.keyLength, nonce: nonce, aad: aad, aadCount: aadCount, source: source,
                destination: destination, count: count, tag: tag)
        case .openSSL:
            OpenSSLBackend.seal(
                state, keyLength: algorithm.keyLength, nonce: nonce, aad: aad, aadCount: aadCount, source: source,
                destination: destination, count: count, tag: tag)

        case .vaesAVX2:
            VAESBackend.seal(
                state, keyLength: algorithm.keyLength, nonce: nonce, aad: aad, aadCount: aadCount, source: source,
                destination: destination, count: count, tag: tag)
        case .ipsecMBShortVAES:
            IPsecMBShortVAESBackend.seal(
                state, keyLength: algorithm.keyLength, nonce: nonce, aad: aad, aadCount: aadCount, source: source,
                destination: destination, count: count, tag: tag)
        }
    }

    @inline(__always)
    func open(
        nonce: UnsafeRawPointer, aad: UnsafeRawPointer, aadCount: Int, source: UnsafeRawPointer,
        destination: UnsafeMutableRawPointer, count: Int, tag: UnsafeRawPointer
    ) -> Bool {
        switch backend {
        case .ipsecMB:
            IPsecMBBackend.open(
                state, keyLength: algorithm.keyLength, nonce: nonce, aad: aad, aadCount: aadCount, source: source,
                destination: destination, count: count, tag: tag)
        case .openSSL:
            OpenSSLBackend.open(
                state, keyLength: algorithm.keyLength, nonce: nonce, aad: aad, aadCount: aadCount, source: source,
                destination: destination, count: count, tag: tag)

        case .vaesAVX2:
            VAESBackend.open(
                state, keyLength: algorithm.keyLength, nonce: nonce, aad: aad, aadCount: aadCount, source: source,
                destination: destination, count: count, tag: tag)
        case .ipsecMBShortVAES:
            IPsecMBShortVAESBackend.open(
                state, keyLength: algorithm.keyLength, nonce: nonce, aad: aad, aadCount: aadCount, source: source,
                destination: destination, count: count, tag: tag)
        }
    }
}

/// One AES-GCM key with its expanded state, owned: the state is allocated at init and wiped and
/// freed in deinit. Seal and open dispatch on the backend with a switch (no existential).
public struct AEADKey: ~Copyable {
    @usableFromInline let handle: KeyHandle
    public var backend: AEADBackendKind { handle.backend }
    public var algorithm: AEADAlgorithm { handle.algorithm }

    public init(backend: AEADBackendKind, key: UnsafeRawBufferPointer) throws(CryptoError) {
        handle = try KeyHandle.make(backend: backend, key: key)
    }

    deinit { handle.destroy() }

    /// Seals `count` bytes. `destination` may equal `source`. Never allocates.
    @inline(__always)
    public func seal(
        nonce: UnsafeRawPointer, aad: UnsafeRawPointer, aadCount: Int, source: UnsafeRawPointer,
        destination: UnsafeMutableRawPointer, count: Int, tag: UnsafeMutableRawPointer
    ) {
        handle.seal(
            nonce: nonce, aad: aad, aadCount: aadCount, source: source, destination: destination, count: count,
            tag: tag)
    }

    /// Opens `count` bytes and verifies the tag. Never allocates.
    @inline(__always)
    public func open(
        nonce: UnsafeRawPointer, aad: UnsafeRawPointer, aadCount: Int, source: UnsafeRawPointer,
        destination: UnsafeMutableRawPointer, count: Int, tag: UnsafeRawPointer
    ) -> Bool {
        handle.open(
            nonce: nonce, aad: aad, aadCount: aadCount, source: source, destination: destination, count: count,
            tag: tag)
    }
}
