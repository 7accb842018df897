@testable import EERPC
import Testing

@Suite("Secrets on their way to the Rpc")
struct SecretsInTransitTests {
    private static let sample = SessionSecrets(
        clientToServer: Secret(w0: 1, w1: 2, w2: 3, w3: 4), serverToClient: Secret(w0: 5, w1: 6, w2: 7, w3: 8))

    private static func bytes(_ s: SessionSecrets) -> [UInt8] {
        var s = s
        return withUnsafeBytes(of: &s) { Array($0) }
    }

    /// The exported secrets leave the session-management thread in a cell of their own: the
    /// copy they came from is zeroed as they move in, and the Rpc gets every byte back.
    @Test("moving secrets into transit zeroes the source, and taking them returns every byte")
    func moveAndTake() {
        var secrets = Self.sample
        let transit = SecretsInTransit(&secrets)
        #expect(Self.bytes(secrets).allSatisfy { $0 == 0 })
        #expect(Self.bytes(transit.take()) == Self.bytes(Self.sample))
    }

    /// An event nobody handles (an Rpc that is gone, shutdown) discards its secrets unread.
    @Test("an event discarded unread frees its secrets, and its source is zeroed too")
    func discardUnread() {
        var secrets = Self.sample
        let event = SessionManagementEvent.response(
            nil, session: 0, token: 1, error: nil, secrets: SecretsInTransit(&secrets))
        #expect(Self.bytes(secrets).allSatisfy { $0 == 0 })
        event.discard()  // freed memory cannot be read back; this must neither leak nor crash
    }

    /// A session's keys keep only the secret that derives further phases; the rest is wiped
    /// where it lies, and a released session leaves none of its secrets' bytes behind.
    @Test("only the next phase's secret is kept, and a released session's secrets are wiped")
    func keyScheduleKeepsOnlyTheNextSecret() throws {
        let backend = AEADBackendKind.preferred
        let secret = Secret(w0: 0x1111, w1: 0x2222, w2: 0x3333, w3: 0x4444)
        var keys = try #require(DirectionKeys(secret: secret, backend: backend, algorithm: .aes128GCM, now: 0))
        func zero(_ s: Secret) -> Bool { s.w0 == 0 && s.w1 == 0 && s.w2 == 0 && s.w3 == 0 }
        #expect(zero(keys.current.secret) && !zero(keys.next.secret))
        let advanced = keys.advance(now: 1)
        #expect(advanced)
        #expect(zero(keys.current.secret) && zero(keys.previous!.secret) && !zero(keys.next.secret))
        // Each direction's next secret sits in the session's table until it is released; then
        // no word of either is left in the table's bytes.
        var crypto = SessionCrypto()
        crypto.tx = keys
        let other = Secret(w0: 0x5555, w1: 0x6666, w2: 0x7777, w3: 0x8888)
        let rx = try #require(DirectionKeys(secret: other, backend: backend, algorithm: .aes128GCM, now: 0))
        crypto.rx = rx
        let words = [keys.next.secret, crypto.rx!.next.secret].flatMap { [$0.w0, $0.w1, $0.w2, $0.w3] }
        func table() -> [UInt64] {
            withUnsafeBytes(of: &crypto) { raw in (0..<raw.count / 8).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self) } }
        }
        let before = table()
        #expect(words.allSatisfy { before.contains($0) }, "the secrets are where this test looks")
        crypto.release()
        let after = table()
        #expect(!words.contains { after.contains($0) })
    }
}
