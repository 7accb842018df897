import CCryptoShims
import Glibc

/// Makes the credentials of a cluster with OpenSSL's APIs (no `openssl` command needed): a CA,
/// and node and client certificates it signs, all ECDSA P-256.
public enum ClusterCertificates {
    /// Writes `ca.pem`/`ca.key`, `node-<i>.pem`/`.key` for i < nodes (server and client use),
    /// and `client-<i>.pem`/`.key` for i < clients (client use only) into `directory`.
    /// Returns the paths written.
    @discardableResult
    public static func initialize(directory: String, nodes: Int, clients: Int, days: Int = 365) throws(CryptoError)
        -> [String]
    {
        // Like mkdir -p: every missing parent too.
        var path = directory.hasPrefix("/") ? "" : "."
        for part in directory.split(separator: "/") {
            path += "/" + part
            if mkdir(path, 0o700) != 0 && errno != EEXIST {
                throw .certificate("cannot create \(path): \(String(cString: strerror(errno)))")
            }
        }
        var written: [String] = []
        let ca = directory + "/ca.pem"
        let caKey = directory + "/ca.key"
        var message = [CChar](repeating: 0, count: 512)
        guard ee_cert_write_ca(ca, caKey, "eekv cluster CA", Int32(days), &message, 512) == 0 else {
            throw .certificate(String(nulTerminated: message))
        }
        written += [ca, caKey]
        for i in 0..<nodes {
            written += try issue(directory: directory, name: "node-\(i)", server: true, validFrom: -60, validFor: days * 86_400)
        }
        for i in 0..<clients {
            written += try issue(directory: directory, name: "client-\(i)", server: false, validFrom: -60, validFor: days * 86_400)
        }
        return written
    }

    /// Issues one certificate signed by the CA in `directory`. `validFrom` and `validFor` are in
    /// seconds relative to now (a negative `validFor` makes an expired certificate, for tests).
    @discardableResult
    public static func issue(directory: String, name: String, server: Bool, validFrom: Int, validFor: Int)
        throws(CryptoError) -> [String]
    {
        let cert = directory + "/\(name).pem"
        let key = directory + "/\(name).key"
        var message = [CChar](repeating: 0, count: 512)
        guard
            ee_cert_write_signed(
                directory + "/ca.pem", directory + "/ca.key", cert, key, name, server ? 1 : 0, validFrom, validFor,
                &message, 512) == 0
        else { throw .certificate(String(nulTerminated: message)) }
        return [cert, key]
    }
}
