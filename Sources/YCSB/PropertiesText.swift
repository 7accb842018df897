/// Java's `.properties` text format, which YCSB's workload files and `-p` options use, read as
/// `java.util.Properties.load` reads it:
/// - A line whose first non-blank character is `#` or `!` is a comment; blank lines are skipped.
/// - A line ending in an odd number of backslashes goes on in the next line, whose leading
///   blanks are dropped.
/// - The key ends at the first unescaped `=`, `:` or blank; blanks around it and one `=` or `:`
///   after it are skipped, and the rest of the line is the value (a key alone has an empty one).
/// - `\t`, `\n`, `\r`, `\f` and `\uXXXX` are escapes; a backslash before any other character
///   stands for that character (`\=`, `\:`, `\ `, `\\`).
/// Blanks are space, tab and form feed; a CR before a line's LF ends the line too.
public enum PropertiesText {
    /// Each key and value in order, with the (1-based) line where its entry starts.
    public static func entries(_ text: String) -> [(key: String, value: String, line: Int)] {
        var result: [(key: String, value: String, line: Int)] = []
        let lines = naturalLines(text)
        var i = 0
        while i < lines.count {
            let first = i
            var logical = dropLeadingBlanks(lines[i])
            i += 1
            if logical.isEmpty || logical.first == "#" || logical.first == "!" { continue }
            while endsInContinuation(logical) {
                logical.removeLast()
                guard i < lines.count else { break }
                logical += dropLeadingBlanks(lines[i])
                i += 1
            }
            let (key, value) = split(logical)
            result.append((unescape(key), unescape(value), first + 1))
        }
        return result
    }

    static func isBlank(_ c: Unicode.Scalar) -> Bool { c == " " || c == "\t" || c == "\u{0C}" }

    /// Lines split at LF, CR LF or a lone CR, as Java's line reader splits them.
    static func naturalLines(_ text: String) -> [[Unicode.Scalar]] {
        var lines: [[Unicode.Scalar]] = []
        var line: [Unicode.Scalar] = []
        var afterCR = false
        for c in text.unicodeScalars {
            if afterCR && c == "\n" {
                afterCR = false
                continue
            }
            afterCR = c == "\r"
            if c == "\n" || c == "\r" {
                lines.append(line)
                line = []
            } else {
                line.append(c)
            }
        }
        if !line.isEmpty { lines.append(line) }
        return lines
    }

    static func dropLeadingBlanks(_ line: [Unicode.Scalar]) -> [Unicode.Scalar] {
        Array(line.drop(while: isBlank))
    }

    /// `text` without blanks at either end.
    static func withoutBlanks(_ text: String) -> String {
        var s = Substring(text).unicodeScalars
        while let c = s.first, isBlank(c) { s.removeFirst() }
        while let c = s.last, isBlank(c) { s.removeLast() }
        return String(s)
    }

    static func endsInContinuation(_ line: [Unicode.Scalar]) -> Bool {
        line.reversed().prefix(while: { $0 == "\\" }).count % 2 == 1
    }

    /// The raw (still escaped) key and value of a logical line that starts with its key.
    static func split(_ line: [Unicode.Scalar]) -> (key: [Unicode.Scalar], value: [Unicode.Scalar]) {
        var end = 0
        var escaped = false
        while end < line.count {
            let c = line[end]
            if escaped {
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else if c == "=" || c == ":" || isBlank(c) {
                break
            }
            end += 1
        }
        var start = end
        while start < line.count && isBlank(line[start]) { start += 1 }
        if start < line.count && (line[start] == "=" || line[start] == ":") {
            start += 1
            while start < line.count && isBlank(line[start]) { start += 1 }
        }
        return (Array(line[..<end]), Array(line[start...]))
    }

    static func unescape(_ raw: [Unicode.Scalar]) -> String {
        var out = String.UnicodeScalarView()
        var i = 0
        while i < raw.count {
            let c = raw[i]
            i += 1
            guard c == "\\", i < raw.count else {
                if c != "\\" { out.append(c) }  // a trailing lone backslash (a continuation at the end) stands for nothing
                continue
            }
            let e = raw[i]
            i += 1
            switch e {
            case "t": out.append("\t")
            case "n": out.append("\n")
            case "r": out.append("\r")
            case "f": out.append("\u{0C}")
            case "u":
                // \uXXXX; Java refuses a malformed one, here it stands for itself.
                let digits = raw[i..<min(i + 4, raw.count)]
                if digits.count == 4, let v = UInt32(String(String.UnicodeScalarView(digits)), radix: 16),
                    let scalar = Unicode.Scalar(v)
                {
                    out.append(scalar)
                    i += 4
                } else {
                    out.append("u")
                }
            default: out.append(e)
            }
        }
        return String(out)
    }
}
