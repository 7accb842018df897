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
}
