import ArgumentParser
import EERPC

struct Certs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Cluster credentials for the TLS 1.3 session-management channel.",
        subcommands: [CertsInit.self]
    )
}

struct CertsInit: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "init",
        abstract: "Make a cluster CA and the node and client certificates it signs (ECDSA P-256).",
        discussion: """
            Writes ca.pem/ca.key, node-<i>.pem/.key (usable as server and client) and \
            client-<i>.pem/.key (client only) into DIR. Keys are written with mode 0600. Keep ca.key \
            offline once the certificates are issued.
            """
    )

    @Option(help: "Directory to write into (created if missing).")
    var dir: String

    @Option(help: "Node certificates to issue.")
    var nodes = 3

    @Option(help: "Client certificates to issue.")
    var clients = 1

    @Option(help: "Validity in days.")
    var days = 365

    func validate() throws {
        guard nodes >= 0, clients >= 0, nodes + clients > 0 else { throw ValidationError("issue at least one certificate") }
        guard days > 0 else { throw ValidationError("--days must be positive") }
    }

    func run() throws {
        do {
            let files = try ClusterCertificates.initialize(directory: dir, nodes: nodes, clients: clients, days: days)
            print("wrote \(files.count) files to \(dir): CA, \(nodes) node and \(clients) client certificates")
        } catch {
            throw ValidationError("certs init failed: \(error)")
        }
    }
}
