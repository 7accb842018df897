import EERPC
import Glibc

/// Cluster credentials made for one benchmark run in a temporary directory, removed afterwards.
final class BenchCredentials {
    let directory: String
    let tls: TLSConfig

    init() throws {
        var template = Array("/tmp/eekv-bench-certs-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw CryptoError.certificate("cannot create a temporary directory") }
        directory = String(cString: made)
        try ClusterCertificates.initialize(directory: directory, nodes: 1, clients: 0)
        tls = TLSConfig(directory: directory, name: "node-0")
    }

    deinit {
        for name in ["ca.pem", "ca.key", "node-0.pem", "node-0.key"] { unlink(directory + "/" + name) }
        rmdir(directory)
    }
}
