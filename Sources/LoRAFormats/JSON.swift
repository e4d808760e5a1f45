// JSON: an order-preserving JSON value, a strict parser (RFC 8259, duplicate keys detectable, depth-capped)
// and a serializer that can reproduce Python's json.dumps layouts (compact, indent=2, sort_keys).
import Foundation

public enum JSONValue: Equatable, Sendable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }
    public var stringValue: String? { if case .string(let s) = self { return s }; return nil }
    public var boolValue: Bool? { if case .bool(let b) = self { return b }; return nil }
    public var intValue: Int64? {
        switch self {
        case .int(let i): return i
        case .double(let d) where d.rounded() == d && abs(d) < 9.0e18: return Int64(d)
        default: return nil
        }
    }
    public var doubleValue: Double? {
        switch self {
        case .int(let i): return Double(i)
        case .double(let d): return d
        default: return nil
        }
    }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a }; return nil }
    public var objectValue: JSONObject? { if case .object(let o) = self { return o }; return nil }
    public var isNull: Bool { if case .null = self { return true }; return false }

    /// A short name of the JSON type, for error messages.
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "boolean"
        case .int, .double: return "number"
        case .string: return "string"
        case .array: return "array"
        case .object: return "object"
        }
    }
}

/// A JSON object that keeps its keys in insertion (file) order.
public struct JSONObject: Equatable, Sendable {
    public private(set) var entries: [(key: String, value: JSONValue)] = []
    private var index: [ExactKey: Int] = [:]

    public init() {}
    public init(_ pairs: [(String, JSONValue)]) { for (k, v) in pairs { self[k] = v } }

    public var keys: [String] { entries.map(\.key) }
    public var count: Int { entries.count }

    public subscript(key: String) -> JSONValue? {
        get { index[ExactKey(key)].map { entries[$0].value } }
        set {
            if let i = index[ExactKey(key)] {
                if let v = newValue { entries[i].value = v } else {
                    entries.remove(at: i)
                    index = [:]
                    for (j, e) in entries.enumerated() { index[ExactKey(e.key)] = j }
                }
            } else if let v = newValue {
                index[ExactKey(key)] = entries.count
                entries.append((key, v))
            }
        }
    }

    public static func == (a: JSONObject, b: JSONObject) -> Bool {
        a.entries.count == b.entries.count
            && zip(a.entries, b.entries).allSatisfy { $0.key.utf8.elementsEqual($1.key.utf8) && $0.value == $1.value }
    }
}

/// A key compared by its exact code points. Swift's String == holds canonically equivalent strings equal
/// ("é" and "e\u{301}"); JSON, Python and tokenizer vocabularies keep them apart.
struct ExactKey: Hashable {
    let string: String
    init(_ s: String) { string = s }
    static func == (a: ExactKey, b: ExactKey) -> Bool { a.string.utf8.elementsEqual(b.string.utf8) }
    func hash(into h: inout Hasher) {
        if string.utf8.withContiguousStorageIfAvailable({ h.combine(bytes: UnsafeRawBufferPointer($0)) }) == nil {
            for b in string.utf8 { h.combine(b) }
        }
    }
}

public struct JSONParseError: Error, CustomStringConvertible {
    public let message: String
    public let offset: Int
    public var description: String { "\(message) at byte \(offset)" }
}

public struct JSONParser {
    public var maxDepth = 256
    /// When set, an object with a repeated key is an error (safetensors headers); otherwise the last one wins.
    public var rejectDuplicateKeys = false

    public init(rejectDuplicateKeys: Bool = false) { self.rejectDuplicateKeys = rejectDuplicateKeys }

    public func parse(_ bytes: UnsafeRawBufferPointer) throws -> JSONValue {
        var p = Cursor(bytes: bytes.bindMemory(to: UInt8.self), options: self)
        p.skipWS()
        let v = try p.value(depth: 0)
        p.skipWS()
        if p.pos != p.bytes.count { throw p.fail("unexpected trailing characters") }
        return v
    }

    public func parse(_ data: Data) throws -> JSONValue {
        try data.withUnsafeBytes { try parse($0) }
    }

    public func parse(_ text: String) throws -> JSONValue {
        var t = text
        return try t.withUTF8 { try parse(UnsafeRawBufferPointer($0)) }
    }

    private struct Cursor {
        let bytes: UnsafeBufferPointer<UInt8>
        let options: JSONParser
        var pos = 0

        init(bytes: UnsafeBufferPointer<UInt8>, options: JSONParser) {
            self.bytes = bytes
            self.options = options
        }

        func fail(_ m: String) -> JSONParseError { JSONParseError(message: m, offset: pos) }

        mutating func skipWS() {
            while pos < bytes.count {
                let c = bytes[pos]
                if c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { pos += 1 } else { break }
            }
        }

        mutating func value(depth: Int) throws -> JSONValue {
            guard depth < options.maxDepth else { throw fail("nesting deeper than \(options.maxDepth)") }
            guard pos < bytes.count else { throw fail("unexpected end of input") }
            switch bytes[pos] {
            case UInt8(ascii: "{"): return try object(depth: depth)
            case UInt8(ascii: "["): return try array(depth: depth)
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try literal("true"); return .bool(true)
            case UInt8(ascii: "f"): try literal("false"); return .bool(false)
            case UInt8(ascii: "n"): try literal("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
            // Python's json writes these for non-finite floats; accept them as numbers when reading.
            case UInt8(ascii: "N"): try literal("NaN"); return .double(.nan)
            case UInt8(ascii: "I"): try literal("Infinity"); return .double(.infinity)
            default: throw fail("unexpected character '\(Character(Unicode.Scalar(bytes[pos])))'")
            }
        }

        mutating func literal(_ s: StaticString) throws {
            let n = s.utf8CodeUnitCount
            guard pos + n <= bytes.count else { throw fail("unexpected end of input") }
            for i in 0..<n where bytes[pos + i] != s.utf8Start[i] { throw fail("invalid literal") }
            pos += n
        }

        mutating func object(depth: Int) throws -> JSONValue {
            pos += 1
            var obj = JSONObject()
            skipWS()
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(obj) }
            while true {
                skipWS()
                guard pos < bytes.count, bytes[pos] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
                let keyPos = pos
                let key = try string()
                skipWS()
                guard pos < bytes.count, bytes[pos] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                pos += 1
                skipWS()
                let v = try value(depth: depth + 1)
                if obj[key] != nil && options.rejectDuplicateKeys {
                    throw JSONParseError(message: "duplicate key \"\(key)\"", offset: keyPos)
                }
                obj[key] = v
                skipWS()
                guard pos < bytes.count else { throw fail("unexpected end of input in object") }
                if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
                if bytes[pos] == UInt8(ascii: "}") { pos += 1; return .object(obj) }
                throw fail("expected ',' or '}'")
            }
        }

        mutating func array(depth: Int) throws -> JSONValue {
            pos += 1
            var arr: [JSONValue] = []
            skipWS()
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(arr) }
            while true {
                skipWS()
                arr.append(try value(depth: depth + 1))
                skipWS()
                guard pos < bytes.count else { throw fail("unexpected end of input in array") }
                if bytes[pos] == UInt8(ascii: ",") { pos += 1; continue }
                if bytes[pos] == UInt8(ascii: "]") { pos += 1; return .array(arr) }
                throw fail("expected ',' or ']'")
            }
        }

        mutating func hex4() throws -> UInt32 {
            guard pos + 4 <= bytes.count else { throw fail("truncated \\u escape") }
            var v: UInt32 = 0
            for _ in 0..<4 {
                let c = bytes[pos]
                let d: UInt32
                switch c {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): d = UInt32(c - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): d = UInt32(c - UInt8(ascii: "a") + 10)
                case UInt8(ascii: "A")...UInt8(ascii: "F"): d = UInt32(c - UInt8(ascii: "A") + 10)
                default: throw fail("invalid \\u escape")
                }
                v = v << 4 | d
                pos += 1
            }
            return v
        }

        mutating func string() throws -> String {
            pos += 1
            var out: [UInt8] = []
            var start = pos
            while true {
                guard pos < bytes.count else { throw fail("unterminated string") }
                let c = bytes[pos]
                if c == UInt8(ascii: "\"") {
                    out.append(contentsOf: bytes[start..<pos])
                    pos += 1
                    break
                }
                if c < 0x20 { throw fail("control character in string") }
                if c == UInt8(ascii: "\\") {
                    out.append(contentsOf: bytes[start..<pos])
                    pos += 1
                    guard pos < bytes.count else { throw fail("unterminated escape") }
                    let e = bytes[pos]
                    pos += 1
                    switch e {
                    case UInt8(ascii: "\""): out.append(0x22)
                    case UInt8(ascii: "\\"): out.append(0x5C)
                    case UInt8(ascii: "/"): out.append(0x2F)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0C)
                    case UInt8(ascii: "n"): out.append(0x0A)
                    case UInt8(ascii: "r"): out.append(0x0D)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        var scalar = try hex4()
                        if (0xD800..<0xDC00).contains(scalar) {
                            // A high surrogate must be followed by an escaped low surrogate.
                            if pos + 6 <= bytes.count, bytes[pos] == UInt8(ascii: "\\"), bytes[pos + 1] == UInt8(ascii: "u") {
                                pos += 2
                                let low = try hex4()
                                guard (0xDC00..<0xE000).contains(low) else { throw fail("invalid surrogate pair") }
                                scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                            } else {
                                scalar = 0xFFFD  // lone surrogate, as Python does on decode with errors=replace
                            }
                        } else if (0xDC00..<0xE000).contains(scalar) {
                            scalar = 0xFFFD
                        }
                        out.append(contentsOf: Array(String(Unicode.Scalar(scalar)!).utf8))
                    default: throw fail("invalid escape")
                    }
                    start = pos
                    continue
                }
                pos += 1
            }
            guard let s = String(validating: out, as: UTF8.self) else { throw fail("string is not valid UTF-8") }
            return s
        }

        mutating func number() throws -> JSONValue {
            let start = pos
            var isInt = true
            if bytes[pos] == UInt8(ascii: "-") { pos += 1 }
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "I") { try literal("Infinity"); return .double(-.infinity) }
            guard pos < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[pos]) else {
                throw fail("invalid number")
            }
            if bytes[pos] == UInt8(ascii: "0") {
                pos += 1
            } else {
                while pos < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[pos]) { pos += 1 }
            }
            if pos < bytes.count, bytes[pos] == UInt8(ascii: ".") {
                isInt = false
                pos += 1
                let d = pos
                while pos < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[pos]) { pos += 1 }
                if d == pos { throw fail("invalid number") }
            }
            if pos < bytes.count, bytes[pos] == UInt8(ascii: "e") || bytes[pos] == UInt8(ascii: "E") {
                isInt = false
                pos += 1
                if pos < bytes.count, bytes[pos] == UInt8(ascii: "+") || bytes[pos] == UInt8(ascii: "-") { pos += 1 }
                let d = pos
                while pos < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[pos]) { pos += 1 }
                if d == pos { throw fail("invalid number") }
            }
            let text = String(decoding: bytes[start..<pos], as: UTF8.self)
            if isInt, let i = Int64(text) { return .int(i) }
            guard let d = Double(text) else { throw fail("invalid number") }
            return .double(d)
        }
    }
}

// MARK: - Serialization

public enum JSONStyle: Sendable {
    /// `{"a":1,"b":[1,2]}`: the form used inside safetensors headers.
    case compact
    /// Python `json.dumps(v)` default separators: `{"a": 1, "b": [1, 2]}`.
    case python
    /// Python `json.dumps(v, indent=n)`.
    case indented(Int)
}

extension JSONValue {
    public func serialized(_ style: JSONStyle = .compact, sortKeys: Bool = false, asciiOnly: Bool = false) -> String {
        var out = ""
        write(to: &out, style: style, sortKeys: sortKeys, asciiOnly: asciiOnly, level: 0)
        return out
    }

    private func write(to out: inout String, style: JSONStyle, sortKeys: Bool, asciiOnly: Bool, level: Int) {
        switch self {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d): out += JSONValue.pythonFloatRepr(d)
        case .string(let s): JSONValue.writeString(s, to: &out, asciiOnly: asciiOnly)
        case .array(let a):
            if a.isEmpty { out += "[]"; return }
            out += "["
            for (i, v) in a.enumerated() {
                if i > 0 { out += JSONValue.itemSeparator(style) }
                JSONValue.newline(&out, style, level + 1)
                v.write(to: &out, style: style, sortKeys: sortKeys, asciiOnly: asciiOnly, level: level + 1)
            }
            JSONValue.newline(&out, style, level)
            out += "]"
        case .object(let o):
            if o.count == 0 { out += "{}"; return }
            out += "{"
            let entries = sortKeys ? o.entries.sorted { $0.key < $1.key } : o.entries
            for (i, e) in entries.enumerated() {
                if i > 0 { out += JSONValue.itemSeparator(style) }
                JSONValue.newline(&out, style, level + 1)
                JSONValue.writeString(e.key, to: &out, asciiOnly: asciiOnly)
                if case .compact = style { out += ":" } else { out += ": " }
                e.value.write(to: &out, style: style, sortKeys: sortKeys, asciiOnly: asciiOnly, level: level + 1)
            }
            JSONValue.newline(&out, style, level)
            out += "}"
        }
    }

    private static func itemSeparator(_ style: JSONStyle) -> String {
        switch style {
        case .compact: return ","
        case .python: return ", "
        case .indented: return ","
        }
    }

    private static func newline(_ out: inout String, _ style: JSONStyle, _ level: Int) {
        if case .indented(let n) = style {
            out += "\n"
            out += String(repeating: " ", count: n * level)
        }
    }

    package static func writeString(_ s: String, to out: inout String, asciiOnly: Bool) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if scalar.value < 0x20 || (asciiOnly && scalar.value > 0x7E) {
                    if scalar.value > 0xFFFF {
                        let v = scalar.value - 0x10000
                        out += String(format: "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF))
                    } else {
                        out += String(format: "\\u%04x", scalar.value)
                    }
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }

    /// Python's `repr(float)`: the shortest string that round-trips, with Python's exponent rules
    /// (scientific below 1e-4 and from 1e16 on, exponent with sign and at least two digits).
    public static func pythonFloatRepr(_ d: Double) -> String {
        if d.isNaN { return "NaN" }
        if d.isInfinite { return d < 0 ? "-Infinity" : "Infinity" }
        if d == 0 { return d.sign == .minus ? "-0.0" : "0.0" }
        // Swift's description is also shortest-round-trip; only the layout differs.
        let s = "\(d)"
        let neg = s.hasPrefix("-")
        let body = neg ? String(s.dropFirst()) : s
        var digits: String
        var exp10: Int  // value = 0.digits * 10^exp10
        if let eIdx = body.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            let mant = String(body[..<eIdx])
            let e = Int(body[body.index(after: eIdx)...])!
            let parts = mant.split(separator: ".", omittingEmptySubsequences: false)
            let intPart = String(parts[0])
            let frac = parts.count > 1 ? String(parts[1]) : ""
            digits = intPart + frac
            exp10 = e + intPart.count
        } else {
            let parts = body.split(separator: ".", omittingEmptySubsequences: false)
            let intPart = String(parts[0])
            let frac = parts.count > 1 ? String(parts[1]) : ""
            digits = intPart + frac
            exp10 = intPart.count
        }
        // Strip leading zeros (adjusting the exponent) and trailing zeros.
        while digits.hasPrefix("0") && digits.count > 1 { digits.removeFirst(); exp10 -= 1 }
        while digits.hasSuffix("0") && digits.count > 1 { digits.removeLast() }
        let sciExp = exp10 - 1  // value = d.ddd * 10^sciExp
        var r: String
        if sciExp < -4 || sciExp >= 16 {
            let first = digits.prefix(1)
            let rest = digits.dropFirst()
            r = String(first) + (rest.isEmpty ? "" : "." + rest)
            r += "e" + (sciExp < 0 ? "-" : "+") + (abs(sciExp) < 10 ? "0" : "") + String(abs(sciExp))
        } else if exp10 <= 0 {
            r = "0." + String(repeating: "0", count: -exp10) + digits
        } else if exp10 >= digits.count {
            r = digits + String(repeating: "0", count: exp10 - digits.count) + ".0"
        } else {
            let i = digits.index(digits.startIndex, offsetBy: exp10)
            r = String(digits[..<i]) + "." + String(digits[i...])
        }
        return neg ? "-" + r : r
    }
}
