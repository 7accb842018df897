import ArgumentParser
import EERPC
import Glibc

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

    @Flag(help: "Replace the CA (and every certificate) already in DIR. The old CA's certificates stop working.")
    var force = false

    func validate() throws {
        guard !dir.isEmpty else { throw ValidationError("--dir must name a directory") }
        guard nodes >= 0, clients >= 0, nodes + clients > 0 else { throw ValidationError("issue at least one certificate") }
        guard days > 0 && days <= 36_500 else { throw ValidationError("--days must be 1-36500") }
    }

    func run() throws {
        // A new CA silently replacing a live cluster's would lock every node and client out.
        if !force && (access(dir + "/ca.pem", F_OK) == 0 || access(dir + "/ca.key", F_OK) == 0) {
            throw ValidationError("\(dir) already has a cluster CA; --force replaces it (and every certificate it signed)")
        }
        do {
            let files = try ClusterCertificates.initialize(directory: dir, nodes: nodes, clients: clients, days: days)
            print("wrote \(files.count) files to \(dir): CA, \(nodes) node and \(clients) client certificates")
        } catch {
            throw ValidationError("certs init failed: \(error)")
        }
    }
}
