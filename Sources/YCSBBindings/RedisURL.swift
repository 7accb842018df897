/// A Redis URL as redis-cli takes it: `redis://[[USER]:PASSWORD@]HOST:PORT[/DB]`, or `rediss://`
/// for TLS. The password never appears in a parse error or in ``redacted``.
public struct RedisURL: Sendable, Equatable {
    public var secure: Bool
    public var host: String
    public var port: UInt16
    /// The ACL user (Redis 6+); nil authenticates as the default user.
    public var user: String? { userBytes.map { String(decoding: $0, as: UTF8.self) } }
    public var password: String? { passwordBytes.map { String(decoding: $0, as: UTF8.self) } }
    /// As decoded from the URL: a percent-escape may stand for any byte, UTF-8 or not, and AUTH
    /// sends the bytes themselves (as redis-cli does).
    var userBytes: [UInt8]?
    var passwordBytes: [UInt8]?
    /// The logical database to SELECT; nil keeps database 0.
    public var database: Int?

    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    public init(_ url: String) throws(ParseError) {
        let secure = url.hasPrefix("rediss://")
        guard secure || url.hasPrefix("redis://") else {
            throw ParseError(description: "a Redis URL starts with redis:// or rediss://: \(Self.redact(url))")
        }
        self.secure = secure
        var rest = Substring(url.dropFirst(secure ? 9 : 8))
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = credentials.firstIndex(of: ":") {
                userBytes = colon == credentials.startIndex ? nil : Self.percentDecoded(credentials[..<colon])
                passwordBytes = Self.percentDecoded(credentials[credentials.index(after: colon)...])
            } else {
                passwordBytes = Self.percentDecoded(credentials)  // redis://PASSWORD@HOST:PORT, as redis-cli reads it
            }
        }
        if let slash = rest.firstIndex(of: "/") {
            let path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !path.isEmpty {
                guard let n = Int(path), n >= 0 else {
                    throw ParseError(description: "the database in a Redis URL is a number: \(Self.redact(url))")
                }
                database = n
            }
        }
        let parts = rest.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, let port = UInt16(parts[1]), port > 0 else {
            throw ParseError(description: "a Redis URL needs HOST:PORT: \(Self.redact(url))")
        }
        host = String(parts[0])
        self.port = port
    }

    /// `text` with each `%XX` (two hex digits) made the byte it stands for, as redis-cli decodes a
    /// URL's user and password (so `p%40ss` is `p@ss`); any other `%` stays as it is.
    static func percentDecoded(_ text: Substring) -> [UInt8] {
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "%"), i + 2 < bytes.count, let high = hexDigit(bytes[i + 1]),
                let low = hexDigit(bytes[i + 2])
            {
                out.append(high << 4 | low)
                i += 3
            } else {
                out.append(bytes[i])
                i += 1
            }
        }
        return out
    }

    private static func hexDigit(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// The URL without its password, for messages and results.
    public var redacted: String {
        (secure ? "rediss://" : "redis://") + (user.map { $0 + ":***@" } ?? (password == nil ? "" : ":***@"))
            + "\(host):\(port)" + (database.map { "/\($0)" } ?? "")
    }

    /// `url` with anything between the scheme and an `@` hidden.
    static func redact(_ url: String) -> String {
        guard let at = url.lastIndex(of: "@") else { return url }
        let scheme = url.hasPrefix("rediss://") ? "rediss://" : url.hasPrefix("redis://") ? "redis://" : ""
        return scheme + "***" + String(url[at...])
    }

    /// Authenticates and selects the database on a new connection, as the URL asks.
    public func prepare(_ connection: RESPConnection) throws {
        if let passwordBytes {
            _ = try connection.command([Array("AUTH".utf8)] + (userBytes.map { [$0] } ?? []) + [passwordBytes])
        }
        if let database { _ = try connection.command("SELECT", "\(database)") }
    }
}
