import ArgumentParser
import EEKV
import EERPC
import YCSB
import YCSBBindings

/// A database the load generator drives (an eekv cluster or a Redis server), with what its
/// results are labelled by.
struct YCSBTarget {
    enum Kind {
        /// The cluster, its client certificate, and how long its clients poll before sleeping.
        case eekv(ClusterConfig, TLSConfig?, spinUs: Int)
        case redis(url: String, host: String, port: UInt16, tls: TLSConfig?)
    }
    let kind: Kind
    /// eekv, redis or redis+tls.
    let label: String
    /// eekv's crypto mode, tls or none.
    let crypto: String
    let nodes: Int
    let mtu: Int?
    /// The eekv clients' transport counters (left empty for Redis).
    let transport = TransportTally()

    static func eekv(_ cluster: ClusterConfig, tls: TLSConfig?, spinUs: Int) -> YCSBTarget {
        YCSBTarget(
            kind: .eekv(cluster, tls, spinUs: spinUs), label: "eekv", crypto: cluster.crypto.name, nodes: cluster.nodes.count,
            mtu: cluster.mtu)
    }

    /// `url` is redis://HOST:PORT, or rediss://HOST:PORT for TLS. The cluster's CA and client
    /// certificate serve Redis too, unless --cert says otherwise.
    static func redis(url: String, client: ClusterOptions) throws -> YCSBTarget {
        let secure = url.hasPrefix("rediss://")
        guard secure || url.hasPrefix("redis://") else {
            throw ValidationError("a Redis URL starts with redis:// or rediss://: \(url)")
        }
        let rest = url.dropFirst(secure ? 9 : 8).split(separator: "/").first.map(String.init) ?? ""
        let parts = rest.split(separator: ":")
        guard parts.count == 2, let port = UInt16(parts[1]) else { throw ValidationError("a Redis URL needs HOST:PORT: \(url)") }
        return YCSBTarget(
            kind: .redis(
                url: url, host: String(parts[0]), port: port,
                tls: secure
                    ? try client.certificateTLS(defaultCA: "ca.pem") ?? client.tls(for: loadConfig(client.configPath()))
                    : nil),
            label: secure ? "redis+tls" : "redis", crypto: secure ? "tls" : "none", nodes: 1, mtu: nil)
    }

    /// A new connection (one per generator thread).
    var connector: @Sendable (Int) throws -> any YCSBDatabase {
        switch kind {
        case .eekv(let cluster, let tls, let spinUs):
            let tally = transport
            return { _ in
                EEKVDatabase(client: try KVClient(config: cluster, tls: tls, idleSpinMicroseconds: spinUs), onClose: tally.add)
            }
        case .redis(_, let host, let port, let tls):
            return { _ in RedisDatabase(connection: try RESPConnection(host: host, port: port, tls: tls)) }
        }
    }

    /// What to tell the user when connecting or running failed with `error`; nil if the error is
    /// not the database's.
    func hint(for error: any Error) -> String? {
        switch (kind, error) {
        case (.eekv, let error as KVClientError):
            "\(error); is the cluster running (deploy/local-cluster.sh status)?"
        case (.redis(let url, _, _, _), let error as RESPError):
            "\(error); is redis-server running at \(url)?"
        default: nil
        }
    }

    var transportTotals: TransportTally.Totals? {
        if case .eekv = kind { return transport.totals }
        return nil
    }

    /// Prints the summary and writes the JSON and plot files asked for.
    func report(_ summary: RunSummary, workload: Workload, outstanding: Int, json: String?, plot: String?) throws {
        printSummary(summary)
        let totals = transportTotals
        if let totals { printTransport(totals) }
        if let json {
            try writeJSON(
                summary, workload: workload, to: json, db: label, crypto: crypto, nodes: nodes, mtu: mtu,
                outstanding: outstanding, transport: totals)
        }
        if let plot {
            let title = "\(label) \(crypto == "none" || crypto == "tls" ? "" : crypto + " ")workload \(workload.name)"
            try writeText(summary.svgPlot(title: title), to: plot)
        }
    }
}
