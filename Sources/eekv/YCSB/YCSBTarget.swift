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
        /// With TLS, `serverName` is the name the server's certificate must carry (nil: the URL's host).
        case redis(RedisURL, tls: TLSConfig?, serverName: String?)
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

    /// `url` is redis://[[USER]:PASSWORD@]HOST:PORT[/DB], or rediss://… for TLS. The cluster's CA
    /// and client certificate serve Redis too, unless --cert says otherwise.
    static func redis(url text: String, serverName: String?, client: ClusterOptions) throws -> YCSBTarget {
        let url: RedisURL
        do {
            url = try RedisURL(text)
        } catch {
            throw ValidationError(error.description)
        }
        let secure = url.secure
        return YCSBTarget(
            kind: .redis(
                url,
                tls: secure
                    ? try client.certificateTLS(defaultCA: "ca.pem") ?? client.tls(for: loadConfig(client.configPath()))
                    : nil, serverName: serverName),
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
        case .redis(let url, let tls, let serverName):
            return { _ in
                let connection = try RESPConnection(host: url.host, port: url.port, tls: tls, serverName: serverName)
                try url.prepare(connection)
                return RedisDatabase(connection: connection)
            }
        }
    }

    /// What to tell the user when connecting or running failed with `error`; nil if the error is
    /// not the database's.
    func hint(for error: any Error) -> String? {
        switch (kind, error) {
        case (.eekv, let error as KVClientError):
            "\(error); is the cluster running (deploy/local-cluster.sh status)?"
        case (.redis(_, _, let serverName), let error as RESPError) where "\(error)".contains("certificate rejected: it is not"):
            "\(error); the server's certificate must be issued to "
                + (serverName == nil ? "the URL's host: name the one it is issued to with --redis-server-name" : "that name")
        case (.redis(let url, _, _), let error as RESPError):
            "\(error); is redis-server running at \(url.redacted)?"
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

/// Help of --redis-server-name (ycsb load/run and compare).
let redisServerNameHelp =
    "For rediss://: the name the Redis server's certificate must be issued to, a DNS name or CN (default: the URL's host; an IP address must then be in the certificate)."
