import CCryptoShims

/// Where a Nexus finds its credentials for the session-management channel: the cluster CA that
/// signs every node and client certificate, and this process's certificate and key (PEM files,
/// as `eekv certs init` writes them).
public struct TLSConfig: Sendable, Equatable {
    public var caFile: String
    public var certificateFile: String
    public var keyFile: String

    public init(caFile: String, certificateFile: String, keyFile: String) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
    }

    /// The files `eekv certs init` writes for `name` (node-0, client-0, ...) in `directory`.
    public init(directory: String, name: String) {
        self.init(
            caFile: directory + "/ca.pem", certificateFile: directory + "/\(name).pem",
            keyFile: directory + "/\(name).key")
    }
}

/// The two OpenSSL contexts (accepting and connecting) built from a ``TLSConfig``, owned: freed
/// in deinit. Thread-safe: OpenSSL contexts may be shared once built.
final class TLSContexts: @unchecked Sendable {
    let server: UnsafeMutableRawPointer
    let client: UnsafeMutableRawPointer

    init(_ config: TLSConfig) throws(CryptoError) {
        var message = [CChar](repeating: 0, count: 512)
        guard let server = ee_tls_context_new(1, config.caFile, config.certificateFile, config.keyFile, &message, 512)
        else { throw .certificate(String(nulTerminated: message)) }
        guard let client = ee_tls_context_new(0, config.caFile, config.certificateFile, config.keyFile, &message, 512)
        else {
            ee_tls_context_free(server)
            throw .certificate(String(nulTerminated: message))
        }
        self.server = server
        self.client = client
    }

    deinit {
        ee_tls_context_free(server)
        ee_tls_context_free(client)
    }
}
