import CCryptoShims
import CSystemShims
import EERPC
import Glibc

/// A reply in Redis's RESP2 protocol.
public indirect enum RESPValue: Equatable, Sendable {
    case simple(String)
    case error(String)
    case integer(Int)
    case bulk([UInt8]?)
    case array([RESPValue]?)
}

public enum RESPError: Error, CustomStringConvertible, Sendable {
    case connect(String)
    case io(String)
    case protocolError(String)
    case server(String)
    /// An earlier I/O or protocol error left the connection's replies out of step with its
    /// commands (a late or half-read reply would be taken as the next command's answer).
    case broken(String)
    public var description: String {
        switch self {
        case .broken(let m): "Redis connection unusable after an earlier error (\(m))"
        case .connect(let m): "cannot connect to Redis: \(m)"
        case .io(let m): "Redis connection: \(m)"
        case .protocolError(let m): "Redis protocol: \(m)"
        case .server(let m): "Redis: \(m)"
        }
    }
}

/// A blocking connection to a Redis server, plain TCP or TLS (libssl, with a client certificate
/// when the server asks for one). One per thread. After an I/O or protocol error (a read timeout
/// included) it is broken: every later command fails, without reconnecting.
public final class RESPConnection {
    /// Why the connection is broken, once it is.
    public private(set) var brokenBy: String?

    private let fd: Int32
    private let tlsContext: UnsafeMutableRawPointer?
    private let ssl: UnsafeMutableRawPointer?
    private var buffer = [UInt8](repeating: 0, count: 65_536)
    private var start = 0
    private var end = 0

    /// - Parameters:
    ///   - tls: CA, certificate and key for `rediss://`; nil for plain TCP.
    ///   - serverName: with TLS, the name the server's certificate must be issued to (a DNS name
    ///     or CN, or an IP address among its addresses). nil: `host`, as any TLS client checks
    ///     it; a chain to the CA alone would let every certificate the CA issued answer.
    public init(host: String, port: UInt16, tls: TLSConfig?, serverName: String? = nil, timeoutMs: Int32 = 10_000) throws {
        var ip: UInt32 = 0
        guard ee_resolve_ipv4(host, &ip) == 0 else { throw RESPError.connect("cannot resolve \(host)") }
        let fd = ee_tcp_connect(ip, port, timeoutMs)
        guard fd >= 0 else { throw RESPError.connect("\(host):\(port): \(String(cString: strerror(-fd)))") }
        self.fd = fd
        if let tls {
            // The shim takes an empty name as none, which would let any certificate the CA
            // issued answer.
            let name = serverName ?? host
            guard !name.isEmpty else {
                close(fd)
                throw RESPError.connect("TLS needs the name the server's certificate is issued to; it is empty")
            }
            var message = [CChar](repeating: 0, count: 512)
            guard let ctx = ee_tls_context_new(0, tls.caFile, tls.certificateFile, tls.keyFile, &message, 512) else {
                close(fd)
                throw RESPError.connect(String(nulTerminated: message))
            }
            guard let ssl = ee_tls_handshake(ctx, fd, 0, name, &message, 512) else {
                ee_tls_context_free(ctx)
                close(fd)
                throw RESPError.connect("TLS: " + String(nulTerminated: message))
            }
            tlsContext = ctx
            self.ssl = ssl
        } else {
            tlsContext = nil
            ssl = nil
        }
    }

    deinit {
        if let ssl { ee_tls_free(ssl) }
        if let tlsContext { ee_tls_context_free(tlsContext) }
        close(fd)
    }

    /// Sends one command and reads its reply. A Redis error reply throws.
    @discardableResult
    public func command(_ args: [[UInt8]]) throws -> RESPValue {
        queue(args)
        try flush()
        let reply = try readReply()
        if case .error(let message) = reply { throw RESPError.server(message) }
        return reply
    }

    public func command(_ args: String...) throws -> RESPValue { try command(args.map { Array($0.utf8) }) }

    /// Commands queued by ``queue(_:)`` and not yet flushed.
    private var output: [UInt8] = []

    /// Appends a command to the output without sending it (pipelining: replies come back in the
    /// order the commands were sent).
    public func queue(_ args: [[UInt8]]) {
        // A broken connection sends nothing more (its flush throws); do not let the output grow.
        guard brokenBy == nil else { return }
        output += Array("*\(args.count)\r\n".utf8)
        for a in args {
            output += Array("$\(a.count)\r\n".utf8)
            output += a
            output += [13, 10]
        }
    }

    /// Sends every queued command in one write (one TLS record per 16 KiB).
    public func flush() throws { try whileUsable(sendQueued) }

    private func sendQueued() throws {
        guard !output.isEmpty else { return }
        let r = output.withUnsafeBytes { b in
            if let ssl { return ee_tls_write_all(ssl, b.baseAddress, b.count) }
            return ee_write_all(fd, b.baseAddress, b.count)
        }
        output.removeAll(keepingCapacity: true)
        guard r == 0 else { throw RESPError.io("write failed") }
    }

    /// Reads the next reply, waiting for it. A Redis error reply is returned, not thrown.
    public func readReply() throws -> RESPValue { try whileUsable(readValue) }

    /// Runs `body` unless the connection is broken, and breaks it if `body` throws: after a
    /// failed read or write, what the server sends next no longer answers the next command.
    private func whileUsable<T>(_ body: () throws -> T) throws -> T {
        if let brokenBy { throw RESPError.broken(brokenBy) }
        do {
            return try body()
        } catch {
            brokenBy = "\(error)"
            throw error
        }
    }

    private func fill() throws {
        if start == end {
            start = 0
            end = 0
        } else if end == buffer.count {
            buffer.removeSubrange(0..<start)
            buffer += [UInt8](repeating: 0, count: start)
            end -= start
            start = 0
        }
        if end == buffer.count { buffer += [UInt8](repeating: 0, count: buffer.count) }
        let n = buffer.withUnsafeMutableBytes { b -> Int in
            if let ssl { return ee_tls_read_some(ssl, b.baseAddress! + end, b.count - end) }
            return recv(fd, b.baseAddress! + end, b.count - end, 0)
        }
        guard n > 0 else {
            if n == 0 { throw RESPError.io("closed by the server") }
            // SO_RCVTIMEO expired (plain TCP says EAGAIN; the TLS shim may not set errno).
            throw RESPError.io(errno == EAGAIN || errno == EWOULDBLOCK ? "read timed out" : "read failed")
        }
        end += n
    }

    /// Redis's own limits: a bulk string of at most 512 MiB (`proto-max-bulk-len`), and a reply
    /// line (a type byte and a number, or a status) far under 64 KiB.
    static let maxBulkLength = 512 << 20
    static let maxLineLength = 65_536
    /// More elements than any reply of the commands sent here holds: refused as a corrupt count
    /// before anything is reserved for them.
    static let maxArrayCount = 1 << 24

    private func readLine() throws -> [UInt8] {
        var searched = 0  // bytes after `start` known to hold no LF (`fill` keeps them, maybe moved)
        while true {
            if let i = buffer[(start + searched)..<end].firstIndex(of: 10) {
                guard i > start, buffer[i - 1] == 13 else { throw RESPError.protocolError("a reply line not ended by CRLF") }
                let line = Array(buffer[start..<(i - 1)])
                start = i + 1
                return line
            }
            searched = end - start
            guard searched <= Self.maxLineLength else { throw RESPError.protocolError("a reply line over 64 KiB") }
            try fill()
        }
    }

    private func readBytes(_ n: Int) throws -> [UInt8] {
        while end - start < n + 2 { try fill() }
        guard buffer[start + n] == 13 && buffer[start + n + 1] == 10 else {
            throw RESPError.protocolError("a bulk string not followed by CRLF (its length is wrong)")
        }
        // The same copy as eekv's client makes of a value, so neither side pays glibc's slow case.
        let bytes = buffer.withUnsafeBytes { Array(copying: UnsafeRawBufferPointer(rebasing: $0[start..<start + n])) }
        start += n + 2
        return bytes
    }

    private func readValue() throws -> RESPValue {
        let line = try readLine()
        guard let kind = line.first else { throw RESPError.protocolError("empty line") }
        let rest = String(decoding: line.dropFirst(), as: UTF8.self)
        switch kind {
        case UInt8(ascii: "+"): return .simple(rest)
        case UInt8(ascii: "-"): return .error(rest)
        case UInt8(ascii: ":"):
            guard let n = Int(rest) else { throw RESPError.protocolError("bad integer") }
            return .integer(n)
        case UInt8(ascii: "$"):
            guard let n = Int(rest), n <= Self.maxBulkLength else { throw RESPError.protocolError("bad bulk length") }
            return .bulk(n < 0 ? nil : try readBytes(n))
        case UInt8(ascii: "*"):
            guard let n = Int(rest), n <= Self.maxArrayCount else { throw RESPError.protocolError("bad array length") }
            if n < 0 { return .array(nil) }
            var items: [RESPValue] = []
            items.reserveCapacity(min(n, 4_096))
            for _ in 0..<n { items.append(try readValue()) }
            return .array(items)
        default: throw RESPError.protocolError("unknown reply type \(kind)")
        }
    }
}
