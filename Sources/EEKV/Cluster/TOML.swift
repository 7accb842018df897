/// The subset of TOML the cluster configuration uses: comments, `[table]`, `[[array-of-tables]]`,
/// and `key = value` with strings, integers, booleans and arrays of those. Anything else is a
/// parse error with its line number, never a silent misread.
public struct TOMLDocument: Sendable {
    public enum Value: Sendable, Equatable {
        case string(String)
        case integer(Int)
        case boolean(Bool)
        case array([Value])
    }

    /// Top-level tables by name; arrays of tables by name.
    public private(set) var tables: [String: [String: Value]] = [:]
    public private(set) var arrays: [String: [[String: Value]]] = [:]

    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public let line: Int
        public let reason: String
        public var description: String { "line \(line): \(reason)" }
    }

    public init(parsing text: String) throws(ParseError) {
        enum Target { case root, table(String), array(String) }
        var target = Target.root
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let lineNumber = index + 1
            let line = Self.stripComment(String(raw)).trimmed
            if line.isEmpty { continue }
            if line.hasPrefix("[[") {
                guard line.hasSuffix("]]"), line.count > 4 else { throw ParseError(line: lineNumber, reason: "bad [[table]] header") }
                let name = String(String(line.dropFirst(2).dropLast(2))).trimmed
                guard Self.isBareKey(name) else { throw ParseError(line: lineNumber, reason: "bad table name '\(name)'") }
                arrays[name, default: []].append([:])
                target = .array(name)
                continue
            }
            if line.hasPrefix("[") {
                guard line.hasSuffix("]"), line.count > 2 else { throw ParseError(line: lineNumber, reason: "bad [table] header") }
                let name = String(line.dropFirst().dropLast()).trimmed
                guard Self.isBareKey(name) else { throw ParseError(line: lineNumber, reason: "bad table name '\(name)'") }
                guard tables[name] == nil else { throw ParseError(line: lineNumber, reason: "table [\(name)] defined twice") }
                tables[name] = [:]
                target = .table(name)
                continue
            }
            guard let eq = line.firstIndex(of: "=") else { throw ParseError(line: lineNumber, reason: "expected key = value") }
            let key = String(line[..<eq]).trimmed
            guard !key.isEmpty, key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) else {
                throw ParseError(line: lineNumber, reason: "bad key '\(key)'")
            }
            var rest = Substring(String(line[line.index(after: eq)...]).trimmed)
            let value = try Self.parseValue(&rest, line: lineNumber)
            guard String(rest).trimmed.isEmpty else { throw ParseError(line: lineNumber, reason: "unexpected text after the value") }
            let duplicate: Bool
            switch target {
            case .root:
                duplicate = tables["", default: [:]].updateValue(value, forKey: key) != nil
            case .table(let name):
                duplicate = tables[name, default: [:]].updateValue(value, forKey: key) != nil
            case .array(let name):
                duplicate = arrays[name]![arrays[name]!.count - 1].updateValue(value, forKey: key) != nil
            }
            if duplicate { throw ParseError(line: lineNumber, reason: "key '\(key)' set twice") }
        }
    }

    private static func isBareKey(_ s: String) -> Bool {
        !s.isEmpty && s.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }
    }

    private static func stripComment(_ line: String) -> String {
        var inString = false
        var escaped = false
        for (i, c) in line.enumerated() {
            // Inside a string a backslash escapes the next character: `\"` does not end it.
            if escaped {
                escaped = false
            } else if inString && c == "\\" {
                escaped = true
            } else if c == "\"" {
                inString.toggle()
            } else if c == "#" && !inString {
                return String(line.prefix(i))
            }
        }
        return line
    }

    private static func parseValue(_ s: inout Substring, line: Int) throws(ParseError) -> Value {
        s = Substring(String(s).trimmed)
        guard let first = s.first else { throw ParseError(line: line, reason: "missing value") }
        if first == "\"" {
            var out = ""
            var i = s.index(after: s.startIndex)
            while i < s.endIndex {
                let c = s[i]
                if c == "\"" {
                    s = s[s.index(after: i)...]
                    return .string(out)
                }
                if c == "\\" {
                    i = s.index(after: i)
                    guard i < s.endIndex else { break }
                    switch s[i] {
                    case "n": out.append("\n")
                    case "t": out.append("\t")
                    case "\"": out.append("\"")
                    case "\\": out.append("\\")
                    default: throw ParseError(line: line, reason: "unsupported escape")
                    }
                } else {
                    out.append(c)
                }
                i = s.index(after: i)
            }
            throw ParseError(line: line, reason: "unterminated string")
        }
        if first == "[" {
            s = s.dropFirst()
            var items: [Value] = []
            while true {
                s = Substring(String(s).trimmed)
                if s.first == "]" {
                    s = s.dropFirst()
                    return .array(items)
                }
                items.append(try parseValue(&s, line: line))
                s = Substring(String(s).trimmed)
                if s.first == "," { s = s.dropFirst() } else if s.first != "]" {
                    throw ParseError(line: line, reason: "expected , or ] in array")
                }
            }
        }
        let token = s.prefix { $0 != "," && $0 != "]" && $0 != " " }
        s = s.dropFirst(token.count)
        if token == "true" { return .boolean(true) }
        if token == "false" { return .boolean(false) }
        // TOML 1.0: an underscore only between two digits (`1_000`, not `1_` or `_1`).
        let chars = Array(token)
        let underscoresFit = chars.indices.allSatisfy { i in
            chars[i] != "_" || (i > 0 && i < chars.count - 1 && chars[i - 1].isASCII && chars[i - 1].isNumber
                && chars[i + 1].isASCII && chars[i + 1].isNumber)
        }
        let digits = token.filter { $0 != "_" }
        if underscoresFit, let n = Int(digits) {
            // TOML 1.0: a decimal integer has no leading zeros (`0123` is not 123, nor octal).
            let magnitude = digits.drop { $0 == "+" || $0 == "-" }
            guard magnitude.count == 1 || magnitude.first != "0" else {
                throw ParseError(line: line, reason: "integer '\(token)' has a leading zero")
            }
            return .integer(n)
        }
        throw ParseError(line: line, reason: "unsupported value '\(token)'")
    }
}

extension String {
    var trimmed: String {
        var s = Substring(self)
        while let c = s.first, c == " " || c == "\t" || c == "\r" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\t" || c == "\r" { s = s.dropLast() }
        return String(s)
    }
}
