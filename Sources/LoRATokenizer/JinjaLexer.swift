// JinjaLexer: splits template text into data and tag tokens exactly as Jinja 3.1's lexer does under
// transformers' settings (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False, `-`/`+` markers).
import Foundation

/// A 1-based line:column position in the template (columns count code points).
struct JinjaPos: Sendable, Equatable {
    var line: Int
    var column: Int
}

struct JinjaToken: Sendable {
    enum Kind: Sendable, Equatable {
        case data(String)
        case blockBegin, blockEnd, varBegin, varEnd
        case name(String)
        case string(String)
        case int(Int64)
        case float(Double)
        case op(String)
        case eof
    }
    let kind: Kind
    let pos: JinjaPos

    var describe: String {
        switch kind {
        case .data: return "template data"
        case .blockBegin: return "'{%'"
        case .blockEnd: return "end of statement block"
        case .varBegin: return "'{{'"
        case .varEnd: return "end of print statement"
        case .name(let n): return "'\(n)'"
        case .string(let s): return "string \(PyString.repr(s))"
        case .int(let i): return "integer \(i)"
        case .float(let d): return "float \(JinjaValue.pyFloatStr(d))"
        case .op(let o): return "'\(o)'"
        case .eof: return "end of template"
        }
    }
}

/// A lexing or parsing failure at a position; `ChatTemplate` turns it into `ChatTemplateError`.
struct JinjaSyntaxFailure: Error {
    let pos: JinjaPos
    let message: String
    var unsupported = false
    /// A bound of TemplateLimits (nesting) was exceeded.
    var limit = false
}

struct JinjaLexer {
    private let src: [Unicode.Scalar]
    private let lineStarts: [Int]
    private(set) var tokens: [JinjaToken] = []
    private var pos = 0
    private var lineStarting = true

    /// Jinja first turns every `\r\n` / `\r` into `\n` and drops one trailing newline.
    static func normalize(_ source: String) -> [Unicode.Scalar] {
        var out: [Unicode.Scalar] = []
        out.reserveCapacity(source.unicodeScalars.count)
        var it = Array(source.unicodeScalars)[...]
        while let c = it.popFirst() {
            if c == "\r" {
                if it.first == "\n" { it.removeFirst() }
                out.append("\n")
            } else {
                out.append(c)
            }
        }
        if out.last == "\n" { out.removeLast() }
        return out
    }

    init(_ source: String) {
        src = JinjaLexer.normalize(source)
        var starts = [0]
        for (i, c) in src.enumerated() where c == "\n" { starts.append(i + 1) }
        lineStarts = starts
    }

    func position(_ offset: Int) -> JinjaPos {
        var lo = 0, hi = lineStarts.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if lineStarts[mid] <= offset { lo = mid } else { hi = mid - 1 }
        }
        return JinjaPos(line: lo + 1, column: offset - lineStarts[lo] + 1)
    }

    private func fail(_ offset: Int, _ message: String) -> JinjaSyntaxFailure {
        JinjaSyntaxFailure(pos: position(offset), message: message)
    }

    private func at(_ i: Int, _ s: String) -> Bool {
        var j = i
        for c in s.unicodeScalars {
            guard j < src.count, src[j] == c else { return false }
            j += 1
        }
        return true
    }

    private mutating func emit(_ kind: JinjaToken.Kind, _ offset: Int) {
        tokens.append(JinjaToken(kind: kind, pos: position(offset)))
    }

    private func skipSpace(_ i: Int) -> Int {
        var j = i
        while j < src.count && PyString.isSpace(src[j]) { j += 1 }
        return j
    }

    mutating func tokenize() throws -> [JinjaToken] {
        while pos < src.count {
            var open: Int? = nil
            var i = pos
            while i + 1 < src.count {
                if src[i] == "{" && (src[i + 1] == "{" || src[i + 1] == "%" || src[i + 1] == "#") { open = i; break }
                i += 1
            }
            guard let tagStart = open else {
                emit(.data(PyString.string(src[pos...])), pos)
                pos = src.count
                break
            }
            let kind = src[tagStart + 1]
            var after = tagStart + 2
            var sign: Unicode.Scalar? = nil
            if after < src.count && (src[after] == "-" || src[after] == "+") { sign = src[after]; after += 1 }

            // `{% raw %}` is recognised before the ordinary block rule.
            var rawBodyStart: Int? = nil
            if kind == "%" {
                var j = skipSpace(after)
                if at(j, "raw") {
                    j = skipSpace(j + 3)
                    if at(j, "-%}") { rawBodyStart = skipSpace(j + 3) } else if at(j, "%}") { rawBodyStart = j + 2 }
                }
            }

            emitData(from: pos, to: tagStart, sign: sign, lstripAllowed: kind != "{")

            if let body = rawBodyStart {
                lineStarting = body > 0 && src[body - 1] == "\n"
                try lexRaw(from: body, openedAt: tagStart)
            } else if kind == "#" {
                try lexComment(from: after, openedAt: tagStart)
            } else {
                try lexTag(from: after, openedAt: tagStart, block: kind == "%")
            }
        }
        emit(.eof, src.count)
        return tokens
    }

    /// Emits the text before a tag after `-` stripping or lstrip_blocks.
    private mutating func emitData(from start: Int, to end: Int, sign: Unicode.Scalar?, lstripAllowed: Bool) {
        var stop = end
        if sign == "-" {
            while stop > start && PyString.isSpace(src[stop - 1]) { stop -= 1 }
        } else if sign != "+" && lstripAllowed {
            var lineStart = start
            for k in stride(from: end - 1, through: start, by: -1) where src[k] == "\n" { lineStart = k + 1; break }
            if (lineStart > start || lineStarting) && lineStart < end && src[lineStart..<end].allSatisfy(PyString.isSpace) {
                stop = lineStart
            }
        }
        if stop > start { emit(.data(PyString.string(src[start..<stop])), start) }
    }

    private mutating func lexComment(from start: Int, openedAt: Int) throws {
        var j = start
        while j < src.count {
            if at(j, "+#}") { pos = j + 3; lineStarting = false; return }
            if at(j, "-#}") { pos = skipSpace(j + 3); lineStarting = src[pos - 1] == "\n"; return }
            if at(j, "#}") {
                pos = j + 2
                if pos < src.count && src[pos] == "\n" { pos += 1 }  // trim_blocks
                lineStarting = src[pos - 1] == "\n"
                return
            }
            j += 1
        }
        throw fail(openedAt, "missing end of comment tag '#}'")
    }

    private mutating func lexRaw(from start: Int, openedAt: Int) throws {
        var j = start
        while j < src.count {
            if at(j, "{%") {
                var k = j + 2
                var sign: Unicode.Scalar? = nil
                if k < src.count && (src[k] == "-" || src[k] == "+") { sign = src[k]; k += 1 }
                k = skipSpace(k)
                if at(k, "endraw") {
                    k = skipSpace(k + 6)
                    var end: Int? = nil
                    if at(k, "+%}") { end = k + 3 } else if at(k, "-%}") { end = skipSpace(k + 3) } else if at(k, "%}") {
                        end = k + 2
                        if end! < src.count && src[end!] == "\n" { end! += 1 }
                    }
                    if let e = end {
                        emitData(from: start, to: j, sign: sign, lstripAllowed: true)
                        pos = e
                        lineStarting = src[e - 1] == "\n"
                        return
                    }
                }
            }
            j += 1
        }
        throw fail(openedAt, "missing end of raw directive ('{% endraw %}')")
    }

    private mutating func lexTag(from start: Int, openedAt: Int, block: Bool) throws {
        emit(block ? .blockBegin : .varBegin, openedAt)
        var j = start
        var balance: [Unicode.Scalar] = []
        while true {
            guard j < src.count else {
                throw fail(openedAt, "unterminated '\(block ? "{%" : "{{")' tag: expected '\(block ? "%}" : "}}")' before the end of the template")
            }
            if balance.isEmpty {
                if block {
                    if at(j, "+%}") { emit(.blockEnd, j); pos = j + 3; lineStarting = false; return }
                    if at(j, "-%}") { emit(.blockEnd, j); pos = skipSpace(j + 3); lineStarting = src[pos - 1] == "\n"; return }
                    if at(j, "%}") {
                        emit(.blockEnd, j)
                        pos = j + 2
                        if pos < src.count && src[pos] == "\n" { pos += 1 }  // trim_blocks
                        lineStarting = src[pos - 1] == "\n"
                        return
                    }
                } else {
                    if at(j, "-}}") { emit(.varEnd, j); pos = skipSpace(j + 3); lineStarting = src[pos - 1] == "\n"; return }
                    if at(j, "}}") { emit(.varEnd, j); pos = j + 2; lineStarting = false; return }
                }
            }
            let c = src[j]
            if PyString.isSpace(c) { j += 1; continue }
            if let (tok, end) = try number(at: j) { emit(tok, j); j = end; continue }
            if c == "_" || c.properties.isAlphabetic {
                var k = j + 1
                while k < src.count && (src[k] == "_" || src[k].properties.isAlphabetic || src[k].properties.numericType != nil) { k += 1 }
                emit(.name(PyString.string(src[j..<k])), j)
                j = k
                continue
            }
            if c == "'" || c == "\"" {
                let (value, end) = try string(at: j)
                emit(.string(value), j)
                j = end
                continue
            }
            var op: String? = nil
            for cand in ["//", "**", "==", "!=", ">=", "<="] where at(j, cand) { op = cand; break }
            if op == nil, "+-/*%~[](){}><=.:|,;".unicodeScalars.contains(c) { op = String(c) }
            guard let o = op else { throw fail(j, "unexpected character \(PyString.repr(String(c)))") }
            switch o {
            case "(": balance.append(")")
            case "[": balance.append("]")
            case "{": balance.append("}")
            case ")", "]", "}":
                guard let expected = balance.popLast() else { throw fail(j, "unexpected '\(o)'") }
                if String(expected) != o { throw fail(j, "unexpected '\(o)', expected '\(expected)'") }
            default: break
            }
            emit(.op(o), j)
            j += o.unicodeScalars.count
        }
    }

    // MARK: Literals

    /// `(\d+_)*\d+`: digits with single underscores between them. Returns the end index.
    private func digits(at i: Int, _ isDigit: (Unicode.Scalar) -> Bool) -> Int? {
        var j = i
        guard j < src.count, isDigit(src[j]) else { return nil }
        while true {
            while j < src.count && isDigit(src[j]) { j += 1 }
            if j + 1 < src.count && src[j] == "_" && isDigit(src[j + 1]) { j += 1 } else { return j }
        }
    }

    private static func isDec(_ c: Unicode.Scalar) -> Bool { ("0"..."9").contains(c) }

    /// Jinja's float rule, then its integer rule (binary, octal, hex, decimal; `_` separators).
    private func number(at i: Int) throws -> (JinjaToken.Kind, Int)? {
        guard JinjaLexer.isDec(src[i]) else { return nil }
        let clean = { (a: Int, b: Int) in PyString.string(self.src[a..<b]).replacingOccurrences(of: "_", with: "") }
        if i == 0 || src[i - 1] != "." {
            let intEnd = digits(at: i, JinjaLexer.isDec)!
            var fracEnd: Int? = nil
            if intEnd < src.count && src[intEnd] == ".", let f = digits(at: intEnd + 1, JinjaLexer.isDec) { fracEnd = f }
            let mantEnd = fracEnd ?? intEnd
            if mantEnd < src.count && (src[mantEnd] == "e" || src[mantEnd] == "E") {
                var k = mantEnd + 1
                if k < src.count && (src[k] == "+" || src[k] == "-") { k += 1 }
                if let e = digits(at: k, JinjaLexer.isDec) {
                    return (.float(Double(clean(i, e))!), e)
                }
            }
            if let f = fracEnd { return (.float(Double(clean(i, f))!), f) }
        }
        if src[i] == "0" && i + 1 < src.count {
            let p = src[i + 1]
            let radix: Int? = (p == "b" || p == "B") ? 2 : (p == "o" || p == "O") ? 8 : (p == "x" || p == "X") ? 16 : nil
            if let r = radix {
                var k = i + 2
                var text = ""
                while k < src.count {
                    if src[k] == "_" && k + 1 < src.count && Int(String(src[k + 1]), radix: r) != nil { k += 1; continue }
                    guard Int(String(src[k]), radix: r) != nil else { break }
                    text.unicodeScalars.append(src[k])
                    k += 1
                }
                if !text.isEmpty {
                    guard let v = Int64(text, radix: r) else { throw fail(i, "integer literal too large") }
                    return (.int(v), k)
                }
            }
            // `0(_?0)*`
            var k = i + 1
            while k < src.count {
                if src[k] == "0" { k += 1 } else if src[k] == "_" && k + 1 < src.count && src[k + 1] == "0" { k += 2 } else { break }
            }
            return (.int(0), k)
        }
        let end = digits(at: i, JinjaLexer.isDec)!
        guard let v = Int64(clean(i, end)) else { throw fail(i, "integer literal too large") }
        return (.int(v), end)
    }

    /// A quoted string with Python's `unicode-escape` decoding (unknown escapes keep their backslash).
    private func string(at i: Int) throws -> (String, Int) {
        let quote = src[i]
        var out = String.UnicodeScalarView()
        var j = i + 1
        func hex(_ n: Int) throws -> Unicode.Scalar {
            guard j + n <= src.count, let v = UInt32(PyString.string(src[j..<(j + n)]), radix: 16),
                  let s = Unicode.Scalar(v) else { throw fail(j, "truncated or invalid \\x/\\u/\\U escape in string") }
            j += n
            return s
        }
        while true {
            guard j < src.count else { throw fail(i, "unterminated string literal") }
            let c = src[j]
            if c == quote { return (String(out), j + 1) }
            if c != "\\" { out.append(c); j += 1; continue }
            guard j + 1 < src.count else { throw fail(i, "unterminated string literal") }
            let e = src[j + 1]
            j += 2
            switch e {
            case "\n": break
            case "\\": out.append("\\")
            case "'": out.append("'")
            case "\"": out.append("\"")
            case "a": out.append("\u{07}")
            case "b": out.append("\u{08}")
            case "f": out.append("\u{0C}")
            case "n": out.append("\n")
            case "r": out.append("\r")
            case "t": out.append("\t")
            case "v": out.append("\u{0B}")
            case "x": out.append(try hex(2))
            case "u": out.append(try hex(4))
            case "U": out.append(try hex(8))
            case "0"..."7":
                var v = e.value - 48
                var n = 1
                while n < 3 && j < src.count && ("0"..."7").contains(src[j]) { v = v * 8 + src[j].value - 48; j += 1; n += 1 }
                out.append(Unicode.Scalar(v)!)
            case "N": throw JinjaSyntaxFailure(pos: position(j - 2), message: "\\N{...} escapes in string literals", unsupported: true)
            default: out.append("\\"); out.append(e)
            }
        }
    }
}
