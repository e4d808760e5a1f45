// JinjaPyString: Python `str` semantics the templates rely on (strip, split, replace, title, repr…),
// computed on Unicode scalars (Python code points), never on Swift's grapheme clusters or canonical equivalence.
import Foundation

enum PyString {
    typealias Scalars = [Unicode.Scalar]

    static func scalars(_ s: String) -> Scalars { Array(s.unicodeScalars) }
    static func string<C: Collection>(_ s: C) -> String where C.Element == Unicode.Scalar {
        var v = String.UnicodeScalarView()
        v.append(contentsOf: s)
        return String(v)
    }

    /// `str.isspace()` for one code point: Unicode White_Space plus the separators 0x1C–0x1F.
    static func isSpace(_ c: Unicode.Scalar) -> Bool {
        c.properties.isWhitespace || (0x1C...0x1F).contains(c.value)
    }

    /// `str.strip/lstrip/rstrip(chars)`; `chars == nil` strips whitespace.
    static func strip(_ s: String, chars: String?, left: Bool, right: Bool) -> String {
        let u = s.unicodeScalars
        let set = chars.map { Set($0.unicodeScalars) }
        func drop(_ c: Unicode.Scalar) -> Bool { set.map { $0.contains(c) } ?? isSpace(c) }
        var lo = u.startIndex, hi = u.endIndex
        if left { while lo < hi && drop(u[lo]) { lo = u.index(after: lo) } }
        if right { while hi > lo && drop(u[u.index(before: hi)]) { hi = u.index(before: hi) } }
        if lo == u.startIndex && hi == u.endIndex { return s }
        return String(u[lo..<hi])
    }

    /// Index of `needle` in `hay` at or after `from`, by code points.
    static func find(_ hay: Scalars, _ needle: Scalars, from: Int = 0) -> Int? {
        if needle.isEmpty { return from <= hay.count ? from : nil }
        guard hay.count >= needle.count, from <= hay.count - needle.count else { return nil }
        outer: for i in from...(hay.count - needle.count) {
            for j in 0..<needle.count where hay[i + j] != needle[j] { continue outer }
            return i
        }
        return nil
    }

    static func contains(_ hay: String, _ needle: String) -> Bool { find(scalars(hay), scalars(needle)) != nil }

    static func hasPrefix(_ s: String, _ p: String) -> Bool { s.unicodeScalars.starts(with: p.unicodeScalars) }
    static func hasSuffix(_ s: String, _ p: String) -> Bool {
        s.unicodeScalars.reversed().starts(with: p.unicodeScalars.reversed())
    }

    /// `str.count(sub)`: non-overlapping occurrences.
    static func count(_ s: String, _ sub: String) -> Int {
        let a = scalars(s), n = scalars(sub)
        if n.isEmpty { return a.count + 1 }
        var i = 0, c = 0
        while let j = find(a, n, from: i) { c += 1; i = j + n.count }
        return c
    }

    /// `str.replace(old, new, count)`; count < 0 replaces all. An empty `old` inserts between code points.
    /// Fails once the result has more code points than TemplateLimits.maxStringBytes.
    static func replace(_ s: String, _ old: String, _ new: String, count: Int = -1) throws -> String {
        let a = scalars(s), o = scalars(old), n = scalars(new)
        var out = Scalars()
        var done = 0
        if o.isEmpty {
            for c in a {
                if count < 0 || done < count { out += n; done += 1 }
                out.append(c)
                if out.count > TemplateLimits.maxStringBytes { try TemplateLimits.checkString(out.count, "the result of replace") }
            }
            if count < 0 || done < count { out += n }
            return string(out)
        }
        var i = 0
        while count < 0 || done < count, let j = find(a, o, from: i) {
            out += a[i..<j]
            out += n
            i = j + o.count
            done += 1
            if out.count > TemplateLimits.maxStringBytes { try TemplateLimits.checkString(out.count, "the result of replace") }
        }
        out += a[i...]
        return string(out)
    }

    /// `str.split(sep, maxsplit)`; `sep == nil` splits on runs of whitespace and drops empty parts.
    static func split(_ s: String, sep: String?, maxsplit: Int = -1) -> [String] {
        let a = scalars(s)
        guard let sep = sep else {
            var parts: [String] = []
            var i = 0
            while i < a.count {
                while i < a.count && isSpace(a[i]) { i += 1 }
                if i == a.count { break }
                if maxsplit >= 0 && parts.count == maxsplit {
                    parts.append(string(a[i...]))  // Python keeps the rest's trailing whitespace
                    return parts
                }
                let start = i
                while i < a.count && !isSpace(a[i]) { i += 1 }
                parts.append(string(a[start..<i]))
            }
            return parts
        }
        let p = scalars(sep)
        var parts: [String] = []
        var i = 0
        while maxsplit < 0 || parts.count < maxsplit, let j = find(a, p, from: i) {
            parts.append(string(a[i..<j]))
            i = j + p.count
        }
        parts.append(string(a[i...]))
        return parts
    }

    /// `str.rsplit(sep, maxsplit)`.
    static func rsplit(_ s: String, sep: String?, maxsplit: Int = -1) -> [String] {
        if maxsplit < 0 { return split(s, sep: sep) }
        let rev = string(scalars(s).reversed())
        let revSep = sep.map { string(scalars($0).reversed()) }
        return split(rev, sep: revSep, maxsplit: maxsplit).reversed().map { string(scalars($0).reversed()) }
    }

    /// `str.splitlines()` (line boundaries as Python defines them; no keepends).
    static func splitlines(_ s: String) -> [String] {
        let a = scalars(s)
        var lines: [String] = []
        var start = 0, i = 0
        while i < a.count {
            let v = a[i].value
            if v == 0x0A || v == 0x0B || v == 0x0C || v == 0x0D || (0x1C...0x1E).contains(v) || v == 0x85 || v == 0x2028 || v == 0x2029 {
                lines.append(string(a[start..<i]))
                if v == 0x0D && i + 1 < a.count && a[i + 1].value == 0x0A { i += 1 }
                i += 1
                start = i
            } else {
                i += 1
            }
        }
        if start < a.count { lines.append(string(a[start...])) }
        return lines
    }

    static func upper(_ s: String) -> String { s.uppercased() }
    static func lower(_ s: String) -> String { s.lowercased() }

    private static func isCased(_ c: Unicode.Scalar) -> Bool {
        let p = c.properties
        return p.isUppercase || p.isLowercase || p.generalCategory == .titlecaseLetter
    }

    /// `str.title()`: a cased letter after a cased letter is lowercased, otherwise titlecased.
    static func title(_ s: String) -> String {
        var out = ""
        var prevCased = false
        for c in s.unicodeScalars {
            if prevCased { out += c.properties.lowercaseMapping } else { out += c.properties.titlecaseMapping }
            prevCased = isCased(c)
        }
        return out
    }

    /// `str.capitalize()`: first code point titlecased, the rest lowercased.
    static func capitalize(_ s: String) -> String {
        var out = ""
        for (i, c) in s.unicodeScalars.enumerated() {
            out += i == 0 ? c.properties.titlecaseMapping : c.properties.lowercaseMapping
        }
        return out
    }

    /// Jinja's `title` filter (not `str.title`): words start after runs of `-`, whitespace, `(`, `{`, `[`, `<`.
    static func jinjaTitle(_ s: String) -> String {
        var out = ""
        var atStart = true
        for c in s.unicodeScalars {
            let sep = c == "-" || c == "(" || c == "{" || c == "[" || c == "<" || isSpace(c)
            if sep {
                out.unicodeScalars.append(c)
                atStart = true
            } else if atStart {
                out += String(c).uppercased()
                atStart = false
            } else {
                out += String(c).lowercased()
            }
        }
        return out
    }

    /// `str.isprintable()` for one code point.
    static func isPrintable(_ c: Unicode.Scalar) -> Bool {
        if c == " " { return true }
        switch c.properties.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator, .spaceSeparator:
            return false
        default:
            return true
        }
    }

    /// Python's `repr(str)`.
    static func repr(_ s: String) -> String {
        let hasSingle = s.unicodeScalars.contains("'"), hasDouble = s.unicodeScalars.contains("\"")
        let quote: Unicode.Scalar = hasSingle && !hasDouble ? "\"" : "'"
        var out = String(quote)
        for c in s.unicodeScalars {
            switch c {
            case quote, "\\": out += "\\"; out.unicodeScalars.append(c)
            case "\t": out += "\\t"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            default:
                if c.value < 0x20 || c.value == 0x7F {
                    out += String(format: "\\x%02x", c.value)
                } else if c.value < 0x7F || isPrintable(c) {
                    out.unicodeScalars.append(c)
                } else if c.value < 0x100 {
                    out += String(format: "\\x%02x", c.value)
                } else if c.value < 0x10000 {
                    out += String(format: "\\u%04x", c.value)
                } else {
                    out += String(format: "\\U%08x", c.value)
                }
            }
        }
        out.unicodeScalars.append(quote)
        return out
    }

    /// HTML escaping of Jinja's `escape`/`e` filter (markupsafe): & < > " '.
    static func htmlEscape(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&#34;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }
}
