import CAllocCounter
@testable import EERPC
import Testing

/// A GCM test vector (McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 1-4,
/// 13, 14 and 16, as used by NIST's GCM validation).
struct GCMVector: Sendable, CustomTestStringConvertible {
    let name: String
    let key: [UInt8]
    let plaintext: [UInt8]
    let iv: [UInt8]
    let aad: [UInt8]
    let ciphertext: [UInt8]
    let tag: [UInt8]
    var testDescription: String { name }
}

func hex(_ s: String) -> [UInt8] {
    var bytes: [UInt8] = []
    var i = s.startIndex
    while i < s.endIndex {
        let j = s.index(i, offsetBy: 2)
        bytes.append(UInt8(s[i..<j], radix: 16)!)
        i = j
    }
    return bytes
}

let p3 =
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
let gcmVectors: [GCMVector] = [
    GCMVector(
        name: "TC1 AES-128 empty", key: hex(String(repeating: "00", count: 16)), plaintext: [],
        iv: hex(String(repeating: "00", count: 12)), aad: [], ciphertext: [], tag: hex("58e2fccefa7e3061367f1d57a4e7455a")),
    GCMVector(
        name: "TC2 AES-128 one block", key: hex(String(repeating: "00", count: 16)),
        plaintext: hex(String(repeating: "00", count: 16)), iv: hex(String(repeating: "00", count: 12)), aad: [],
        ciphertext: hex("0388dace60b6a392f328c2b971b2fe78"), tag: hex("ab6e47d42cec13bdf53a67b21257bddf")),
    GCMVector(
        name: "TC3 AES-128 four blocks", key: hex("feffe9928665731c6d6a8f9467308308"), plaintext: hex(p3),
        iv: hex("cafebabefacedbaddecaf888"), aad: [],
        ciphertext: hex(
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985"
        ), tag: hex("4d5c2af327cd64a62cf35abd2ba6fab4")),
    GCMVector(
        name: "TC4 AES-128 with AAD", key: hex("feffe9928665731c6d6a8f9467308308"),
        plaintext: Array(hex(p3).prefix(60)), iv: hex("cafebabefacedbaddecaf888"),
        aad: hex("feedfacedeadbeeffeedfacedeadbeefabaddad2"),
        ciphertext: hex(
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091"
        ), tag: hex("5bc94fbc3221a5db94fae95ae7121a47")),
    GCMVector(
        name: "AAD only", key: hex("feffe9928665731c6d6a8f9467308308"), plaintext: [],
        iv: hex("cafebabefacedbaddecaf888"), aad: hex("feedfacedeadbeeffeedfacedeadbeefabaddad2"), ciphertext: [],
        tag: hex("346434fd51d5cd0c5887ec63e39b907a")),
    GCMVector(
        name: "TC13 AES-256 empty", key: hex(String(repeating: "00", count: 32)), plaintext: [],
        iv: hex(String(repeating: "00", count: 12)), aad: [], ciphertext: [], tag: hex("530f8afbc74536b9a963b4f1c4cb738b")),
    GCMVector(
        name: "TC14 AES-256 one block", key: hex(String(repeating: "00", count: 32)),
        plaintext: hex(String(repeating: "00", count: 16)), iv: hex(String(repeating: "00", count: 12)), aad: [],
        ciphertext: hex("cea7403d4d606b6e074ec5d3baf39d18"), tag: hex("d0d1c8a799996bf0265b98b5d48ab919")),
    GCMVector(
        name: "TC16 AES-256 with AAD", key: hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308"),
        plaintext: Array(hex(p3).prefix(60)), iv: hex("cafebabefacedbaddecaf888"),
        aad: hex("feedfacedeadbeeffeedfacedeadbeefabaddad2"),
        ciphertext: hex(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
        ), tag: hex("76fc6ece0f4e1768cddf8853bb2d551b")),
]

/// Seals with `key`; returns ciphertext and tag.
func seal(_ key: borrowing AEADKey, iv: [UInt8], aad: [UInt8], plaintext: [UInt8]) -> ([UInt8], [UInt8]) {
    var out = [UInt8](repeating: 0, count: max(plaintext.count, 1))
    var tag = [UInt8](repeating: 0, count: 16)
    let aadBytes = aad.isEmpty ? [0] : aad
    let input = plaintext.isEmpty ? [0] : plaintext
    iv.withUnsafeBytes { n in
        aadBytes.withUnsafeBytes { a in
            input.withUnsafeBytes { p in
                out.withUnsafeMutableBytes { o in
                    tag.withUnsafeMutableBytes { t in
                        key.seal(
                            nonce: n.baseAddress!, aad: a.baseAddress!, aadCount: aad.count, source: p.baseAddress!,
                            destination: o.baseAddress!, count: plaintext.count, tag: t.baseAddress!)
                    }
                }
            }
        }
    }
    return (Array(out.prefix(plaintext.count)), tag)
}

/// Opens; nil if the tag does not verify.
func open(_ key: borrowing AEADKey, iv: [UInt8], aad: [UInt8], ciphertext: [UInt8], tag: [UInt8]) -> [UInt8]? {
    var out = [UInt8](repeating: 0, count: max(ciphertext.count, 1))
    let aadBytes = aad.isEmpty ? [0] : aad
    let input = ciphertext.isEmpty ? [0] : ciphertext
    let ok = iv.withUnsafeBytes { n in
        aadBytes.withUnsafeBytes { a in
            input.withUnsafeBytes { c in
                out.withUnsafeMutableBytes { o in
                    tag.withUnsafeBytes { t in
                        key.open(
                            nonce: n.baseAddress!, aad: a.baseAddress!, aadCount: aad.count, source: c.baseAddress!,
                            destination: o.baseAddress!, count: ciphertext.count, tag: t.baseAddress!)
                    }
                }
            }
        }
    }
    return ok ? Array(out.prefix(ciphertext.count)) : nil
}

func makeKey(_ backend: AEADBackendKind, _ bytes: [UInt8]) throws -> AEADKey {
    let raw = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 16)
    defer { raw.deallocate() }
    raw.copyBytes(from: bytes)
    return try AEADKey(backend: backend, key: UnsafeRawBufferPointer(rebasing: raw[0..<bytes.count]))
}

@Suite("AES-GCM backends")
struct AEADTests {
    /// Every backend this CPU runs (the VAES one needs VAES and VPCLMULQDQ).
    static let backends = AEADBackendKind.available

    @Test("ipsec-mb is available on this x86-64 machine, and the preferred backend runs here")
    func ipsecAvailable() {
        #expect(IPsecMBBackend.isAvailable)
        #expect(AEADBackendKind.available.contains(.preferred))
        // OpenSSL only where nothing faster runs.
        #expect(AEADBackendKind.preferred != .openSSL)
        // With VAES but without AVX-512 (the Zen 3 machines), our VAES code is the default; with
        // both (Zen 4, recent Xeons), ipsec-mb with our VAES code for short messages.
        if VAESBackend.isAvailable && AEADBackendKind.ipsecMB.name != "ipsec-mb avx512" {
            #expect(AEADBackendKind.preferred == .vaesAVX2)
        }
        if VAESBackend.isAvailable && AEADBackendKind.ipsecMB.name == "ipsec-mb avx512" {
            #expect(AEADBackendKind.preferred == .ipsecMBShortVAES)
        }
    }

    /// The combined backend keeps two expanded keys. Spoiling one at a time shows which sizes
    /// each serves: a seal that still matches OpenSSL did not use the spoiled key.
    @Test("ipsec-mb+vaes seals messages under 192 bytes with the VAES code, longer ones with ipsec-mb")
    func combinedBackendSplitsBySize() throws {
        guard IPsecMBShortVAESBackend.isAvailable else { return }
        let keyBytes = (0..<16).map { UInt8($0 &* 7 &+ 3) }
        let reference = try makeKey(.openSSL, keyBytes)
        let iv = (0..<12).map { UInt8($0) }
        let aad = [UInt8](repeating: 0xEE, count: 16)
        let limit = IPsecMBShortVAESBackend.shortLimit
        #expect(limit == 192)
        func matches(_ key: borrowing AEADKey, _ length: Int) -> Bool {
            let text = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 13) }
            let (c, t) = seal(key, iv: iv, aad: aad, plaintext: text)
            let (c0, t0) = seal(reference, iv: iv, aad: aad, plaintext: text)
            return c == c0 && t == t0
        }
        let sizes = [0, 1, 64, limit - 1, limit, 1440, 65536]
        // Wiping one half's round keys (as `deinitialize` does) spoils only that half's output.
        let vaesSpoiled = try makeKey(.ipsecMBShortVAES, keyBytes)
        VAESBackend.deinitialize(vaesSpoiled.handle.state + IPsecMBShortVAESBackend.vaesOffset)
        for n in sizes { #expect(matches(vaesSpoiled, n) == (n >= limit), "VAES key wiped, \(n) bytes") }
        let ipsecSpoiled = try makeKey(.ipsecMBShortVAES, keyBytes)
        IPsecMBBackend.deinitialize(ipsecSpoiled.handle.state)
        for n in sizes { #expect(matches(ipsecSpoiled, n) == (n < limit), "ipsec-mb key wiped, \(n) bytes") }
    }

    @Test("every backend matches OpenSSL on random lengths, AADs and keys", arguments: AEADAlgorithm.allCases)
    func matchesOpenSSL(algorithm: AEADAlgorithm) throws {
        var rng = SplitMix64(seed: 11 + UInt64(algorithm.keyLength))
        func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }
        // Every length up to 600 walks each tail path (partial blocks, 1–7 trailing blocks, the
        // 128- and 256-byte chunks); random ones up to 70,000 cover the long loops.
        // Then short messages against every AAD length around the one-run GHASH path's limits
        // (under 128 bytes of text, at most 32 of AAD).
        let lengths = Array(0...600) + (0..<60).map { _ in Int(rng.next() % 70_000) }
        let short = [0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 127, 128, 129]
        let cases = lengths.enumerated().map { (i, n) in (n, i % 3 == 0 ? 16 : Int(rng.next() % 300)) }
            + short.flatMap { n in (0...34).map { (n, $0) } }
        for (length, aadLength) in cases {
            let keyBytes = bytes(algorithm.keyLength)
            let reference = try makeKey(.openSSL, keyBytes)
            let iv = bytes(12)
            let aad = bytes(aadLength)
            let plaintext = bytes(length)
            let (c, t) = seal(reference, iv: iv, aad: aad, plaintext: plaintext)
            for backend in Self.backends where backend != .openSSL {
                let key = try makeKey(backend, keyBytes)
                let (c2, t2) = seal(key, iv: iv, aad: aad, plaintext: plaintext)
                #expect(c2 == c && t2 == t, "\(backend.name): length \(length), AAD \(aad.count)")
                #expect(open(key, iv: iv, aad: aad, ciphertext: c, tag: t) == plaintext, "\(backend.name): length \(length)")
                if length > 0 {
                    var tampered = c
                    tampered[Int(rng.next() % UInt64(length))] ^= 1 << (rng.next() % 8)
                    #expect(open(key, iv: iv, aad: aad, ciphertext: tampered, tag: t) == nil, "\(backend.name): length \(length)")
                }
            }
        }
    }

    @Test("GCM test vectors seal and open", arguments: backends, gcmVectors)
    func vectors(backend: AEADBackendKind, v: GCMVector) throws {
        let key = try makeKey(backend, v.key)
        #expect(key.algorithm == (v.key.count == 16 ? .aes128GCM : .aes256GCM))
        let (c, t) = seal(key, iv: v.iv, aad: v.aad, plaintext: v.plaintext)
        #expect(c == v.ciphertext)
        #expect(t == v.tag)
        #expect(open(key, iv: v.iv, aad: v.aad, ciphertext: v.ciphertext, tag: v.tag) == v.plaintext)
    }

    @Test("flipping any tag, ciphertext, AAD or nonce bit fails the open", arguments: backends)
    func everyBitFlipFails(backend: AEADBackendKind) throws {
        let v = gcmVectors[3]
        let key = try makeKey(backend, v.key)
        for bit in 0..<(v.tag.count * 8) {
            var tag = v.tag
            tag[bit / 8] ^= 1 << (bit % 8)
            #expect(open(key, iv: v.iv, aad: v.aad, ciphertext: v.ciphertext, tag: tag) == nil, "tag bit \(bit)")
        }
        for bit in 0..<(v.ciphertext.count * 8) {
            var c = v.ciphertext
            c[bit / 8] ^= 1 << (bit % 8)
            #expect(open(key, iv: v.iv, aad: v.aad, ciphertext: c, tag: v.tag) == nil, "ciphertext bit \(bit)")
        }
        for bit in 0..<(v.aad.count * 8) {
            var aad = v.aad
            aad[bit / 8] ^= 1 << (bit % 8)
            #expect(open(key, iv: v.iv, aad: aad, ciphertext: v.ciphertext, tag: v.tag) == nil, "aad bit \(bit)")
        }
        for bit in 0..<(v.iv.count * 8) {
            var iv = v.iv
            iv[bit / 8] ^= 1 << (bit % 8)
            #expect(open(key, iv: iv, aad: v.aad, ciphertext: v.ciphertext, tag: v.tag) == nil, "nonce bit \(bit)")
        }
        // Empty plaintext: the tag alone authenticates the AAD.
        let aadOnly = gcmVectors[4]
        var tag = aadOnly.tag
        tag[15] ^= 0x80
        #expect(open(key, iv: aadOnly.iv, aad: aadOnly.aad, ciphertext: [], tag: tag) == nil)
    }

    @Test("what one backend seals, every other opens", arguments: AEADAlgorithm.allCases)
    func interoperate(algorithm: AEADAlgorithm) throws {
        var rng = SplitMix64(seed: 5)
        let keyBytes = (0..<algorithm.keyLength).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        for size in [0, 1, 15, 16, 17, 63, 64, 100, 1_440, 4_096, 9_000, 65_000] {
            let iv = (0..<12).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let aad = (0..<16).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let plaintext = (0..<size).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            for sealing in Self.backends {
                let (c, t) = seal(try makeKey(sealing, keyBytes), iv: iv, aad: aad, plaintext: plaintext)
                for opening in Self.backends {
                    #expect(
                        open(try makeKey(opening, keyBytes), iv: iv, aad: aad, ciphertext: c, tag: t) == plaintext,
                        "size \(size): \(sealing.name) → \(opening.name)")
                }
            }
        }
    }

    @Test("sealing and opening in place", arguments: backends)
    func inPlace(backend: AEADBackendKind) throws {
        let v = gcmVectors[2]
        let key = try makeKey(backend, v.key)
        var buffer = v.plaintext
        var tag = [UInt8](repeating: 0, count: 16)
        v.iv.withUnsafeBytes { n in
            buffer.withUnsafeMutableBytes { b in
                tag.withUnsafeMutableBytes { t in
                    key.seal(
                        nonce: n.baseAddress!, aad: n.baseAddress!, aadCount: 0, source: b.baseAddress!,
                        destination: b.baseAddress!, count: b.count, tag: t.baseAddress!)
                }
            }
        }
        #expect(buffer == v.ciphertext && tag == v.tag)
        let ok = v.iv.withUnsafeBytes { n in
            buffer.withUnsafeMutableBytes { b in
                tag.withUnsafeBytes { t in
                    key.open(
                        nonce: n.baseAddress!, aad: n.baseAddress!, aadCount: 0, source: b.baseAddress!,
                        destination: b.baseAddress!, count: b.count, tag: t.baseAddress!)
                }
            }
        }
        #expect(ok && buffer == v.plaintext)
    }

    @Test("bad key lengths are refused", arguments: [0, 15, 24, 33])
    func badKeys(length: Int) {
        #expect(throws: CryptoError.self) { _ = try makeKey(.openSSL, [UInt8](repeating: 1, count: length)) }
    }

    @Test(
        "seal and open allocate nothing", .disabled(if: releaseOnly, "runs in the release pass of make test"),
        arguments: backends)
    func noAllocation(backend: AEADBackendKind) throws {
        let key = try makeKey(backend, [UInt8](repeating: 7, count: 16))
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 2_048, alignment: 64)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 3, count: 2_048)
        let nonce = buffer, aad = buffer + 16, tag = buffer + 32, data = buffer + 64
        for _ in 0..<10 { key.seal(nonce: nonce, aad: aad, aadCount: 16, source: data, destination: data, count: 1_024, tag: tag) }
        ee_alloc_counting_start()
        var opened = 0
        for _ in 0..<10_000 {
            key.seal(nonce: nonce, aad: aad, aadCount: 16, source: data, destination: data, count: 1_024, tag: tag)
            if key.open(nonce: nonce, aad: aad, aadCount: 16, source: data, destination: data, count: 1_024, tag: tag) {
                opened += 1
            }
        }
        let counts = ee_alloc_counting_stop()
        #expect(opened == 10_000)
        #expect(counts.mallocs == 0, "\(counts.mallocs) mallocs over 10,000 seal+open pairs")
    }
}
