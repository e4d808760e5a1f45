// JinjaFilters: Jinja 3.1's built-in filters (`filters.py`) that chat templates use, with transformers'
// own `tojson` (json.dumps with ensure_ascii=False and no HTML escaping, unlike Jinja's).
import Foundation

enum JinjaFilters {
    static let supported: Set<String> = [
        "abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float", "indent", "int",
        "items", "join", "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace",
        "reverse", "round", "safe", "select", "selectattr", "sort", "string", "sum", "title", "tojson", "trim",
        "unique", "upper", "wordcount",
    ]
    /// Jinja 3.1 built-ins left out (an error names them as unsupported rather than unknown).
    static let jinjaBuiltins: Set<String> = [
        "attr", "batch", "center", "filesizeformat", "forceescape", "format", "groupby", "pprint", "random", "slice",
        "striptags", "truncate", "urlencode", "urlize", "wordwrap", "xmlattr",
    ]

    private static func bind(_ f: String, _ args: [JinjaValue], _ kwargs: JinjaKwargs, _ names: [String]) throws -> [JinjaValue?] {
        try JinjaMethods.bind("filter '\(f)'", args, kwargs, names)
    }

    static func apply(_ name: String, _ v: JinjaValue, _ args: [JinjaValue], _ kwargs: JinjaKwargs, _ interp: JinjaInterpreter) throws -> JinjaValue {
        switch name {
        case "default", "d":
            let a = try bind(name, args, kwargs, ["default_value", "boolean"])
            let useDefault = v.isUndefined || ((a[1]?.truthy ?? false) && !v.truthy)
            return useDefault ? (a[0] ?? .string("")) : v
        case "length", "count":
            _ = try bind(name, args, kwargs, [])
            return .int(Int64(try JinjaOps.length(v)))
        case "string":
            _ = try bind(name, args, kwargs, [])
            return v.isMarkup ? v : .string(v.pyStr)
        case "safe":
            _ = try bind(name, args, kwargs, [])
            return v.isMarkup ? v : .markup(v.pyStr)
        case "e", "escape":
            _ = try bind(name, args, kwargs, [])
            return v.isMarkup ? v : .markup(PyString.htmlEscape(v.pyStr))
        case "trim":
            let a = try bind(name, args, kwargs, ["chars"])
            let chars: String? = try a[0].flatMap { c in
                if c.isNone { return nil }
                guard let s = c.stringLike else { throw JinjaFailure.type("strip arg must be None or str") }
                return s
            }
            return keepMarkup(v, PyString.strip(v.pyStr, chars: chars, left: true, right: true))
        case "upper": _ = try bind(name, args, kwargs, []); return keepMarkup(v, PyString.upper(v.pyStr))
        case "lower": _ = try bind(name, args, kwargs, []); return keepMarkup(v, PyString.lower(v.pyStr))
        case "title": _ = try bind(name, args, kwargs, []); return .string(PyString.jinjaTitle(v.pyStr))
        case "capitalize": _ = try bind(name, args, kwargs, []); return keepMarkup(v, PyString.capitalize(v.pyStr))
        case "replace":
            let a = try bind(name, args, kwargs, ["old", "new", "count"])
            guard let old = a[0], let new = a[1] else { throw JinjaFailure.type("filter 'replace' needs old and new") }
            let count = try a[2].map { c -> Int in
                guard let i = c.intLike else { throw JinjaFailure.type("replace count must be an integer") }
                return Int(i)
            } ?? -1
            return .string(try PyString.replace(v.pyStr, old.pyStr, new.pyStr, count: count))
        case "wordcount":
            _ = try bind(name, args, kwargs, [])
            var n = 0, inWord = false
            for c in v.pyStr.unicodeScalars {
                let w = c == "_" || c.properties.isAlphabetic || c.properties.numericType != nil
                if w && !inWord { n += 1 }
                inWord = w
            }
            return .int(Int64(n))
        case "indent":
            let a = try bind(name, args, kwargs, ["width", "first", "blank"])
            return keepMarkup(v, try indent(v.pyStr, a[0] ?? .int(4), first: a[1]?.truthy ?? false, blank: a[2]?.truthy ?? false))
        case "first", "last":
            _ = try bind(name, args, kwargs, [])
            if case .iterator(let it) = v {
                // first: next(iter(seq)); last: reversed(seq) fails on a one-shot iterator.
                guard name == "first" else { throw JinjaFailure.type("'\(it.typeName)' object is not reversible") }
                return it.next() ?? .undefined(hint: "No first item, sequence was empty.")
            }
            let items = try JinjaOps.iterate(v)
            guard let x = name == "first" ? items.first : items.last else {
                return .undefined(hint: "No \(name) item, sequence was empty.")
            }
            return x
        case "list":
            _ = try bind(name, args, kwargs, [])
            return .array(try JinjaOps.iterate(v))
        case "items":
            _ = try bind(name, args, kwargs, [])
            switch v {
            case .undefined: return .iterator(JinjaIterator([], producer: "do_items"))
            case .object(let d): return .iterator(JinjaIterator(JinjaMethods.itemPairs(d), producer: "do_items"))
            default: throw JinjaFailure.type("Can only get item pairs from a mapping.")
            }
        case "join":
            let a = try bind(name, args, kwargs, ["d", "attribute"])
            var items = try JinjaOps.iterate(v)
            if let attr = a[1], !attr.isNone { items = try items.map { try attribute($0, attr) } }
            let parts = items.map(\.pyStr), sep = a[0]?.pyStr ?? ""
            try TemplateLimits.checkString(joinedSize(parts, sep), "the result of join")
            return .string(parts.joined(separator: sep))
        case "reverse":
            _ = try bind(name, args, kwargs, [])
            // str: value[::-1]; sequences: reversed(value), a one-shot iterator; anything else: a reversed list.
            switch v {
            case .string(let s), .markup(let s): return keepMarkup(v, PyString.string(s.unicodeScalars.reversed()))
            case .array(let a): return .iterator(JinjaIterator(a.reversed(), typeName: "list_reverseiterator", producer: "reversed"))
            case .tuple(let a): return .iterator(JinjaIterator(a.reversed(), typeName: "reversed", producer: "reversed"))
            case .object(let d): return .iterator(JinjaIterator(d.keys.reversed(), typeName: "dict_reversekeyiterator", producer: "reversed"))
            default: return .array(try JinjaOps.iterate(v).reversed())
            }
        case "abs":
            _ = try bind(name, args, kwargs, [])
            switch v.number {
            case .int(let i)?:
                guard i != .min else { throw JinjaFailure.type("integer overflow") }
                return .int(Swift.abs(i))
            case .double(let d)?: return .double(Swift.abs(d))
            case nil: throw JinjaFailure.type("bad operand type for abs(): '\(v.pythonTypeName)'")
            }
        case "int":
            let a = try bind(name, args, kwargs, ["default", "base"])
            return toInt(v, base: Int(a[1]?.intLike ?? 10)) ?? (a[0] ?? .int(0))
        case "float":
            let a = try bind(name, args, kwargs, ["default"])
            return toFloat(v).map { .double($0) } ?? (a[0] ?? .double(0))
        case "round":
            let a = try bind(name, args, kwargs, ["precision", "method"])
            return try round(v, precision: Int(a[0]?.intLike ?? 0), method: a[1]?.pyStr ?? "common")
        case "sum":
            let a = try bind(name, args, kwargs, ["attribute", "start"])
            var total = a[1] ?? .int(0)
            for var x in try JinjaOps.iterate(v) {
                if let attr = a[0], !attr.isNone { x = try attribute(x, attr) }
                total = try JinjaOps.binary("+", total, x)
            }
            return total
        case "min", "max":
            let a = try bind(name, args, kwargs, ["case_sensitive", "attribute"])
            let items = try JinjaOps.iterate(v)
            guard var best = items.first else { return .undefined(hint: "No aggregated item, sequence was empty.") }
            let key = try sortKey(caseSensitive: a[0]?.truthy ?? false, attribute: a[1])
            var bestKey = try key(best)
            for x in items.dropFirst() {
                let k = try key(x)
                if try less(name == "min" ? k : bestKey, name == "min" ? bestKey : k) { best = x; bestKey = k }
            }
            return best
        case "sort":
            let a = try bind(name, args, kwargs, ["reverse", "case_sensitive", "attribute"])
            let key = try sortKey(caseSensitive: a[1]?.truthy ?? false, attribute: a[2])
            return .array(try stableSort(try JinjaOps.iterate(v), key: key, reverse: a[0]?.truthy ?? false))
        case "dictsort":
            let a = try bind(name, args, kwargs, ["case_sensitive", "by", "reverse"])
            guard case .object(let d) = v else { throw JinjaFailure.type("dictsort: expected a mapping, got \(v.pythonTypeName)") }
            let by = a[1]?.pyStr ?? "key"
            guard by == "key" || by == "value" else { throw JinjaFailure.type("You can only sort by either \"key\" or \"value\"") }
            let pairs = JinjaMethods.itemPairs(d)
            let cs = a[0]?.truthy ?? false
            return .array(try stableSort(pairs, key: { p in
                guard case .tuple(let kv) = p else { return p }
                return fold(kv[by == "key" ? 0 : 1], caseSensitive: cs)
            }, reverse: a[2]?.truthy ?? false))
        case "unique":
            let a = try bind(name, args, kwargs, ["case_sensitive", "attribute"])
            let key = try sortKey(caseSensitive: a[0]?.truthy ?? false, attribute: a[1])
            var seen: [JinjaValue] = []
            var out: [JinjaValue] = []
            for x in try JinjaOps.iterate(v) {
                let k = try key(x)
                if !seen.contains(where: { JinjaValue.pyEqual($0, k) }) { seen.append(k); out.append(x) }
            }
            return .iterator(JinjaIterator(out, producer: "do_unique"))
        case "select", "reject", "selectattr", "rejectattr":
            let byAttr = name.hasSuffix("attr")
            var rest = args
            var attr: JinjaValue? = nil
            if byAttr {
                guard !rest.isEmpty else { throw JinjaFailure.type("filter '\(name)' needs an attribute name") }
                attr = rest.removeFirst()
            }
            let testName = rest.isEmpty ? nil : rest.removeFirst().pyStr
            if let t = testName, !JinjaTests.supported.contains(t) { throw JinjaFailure.unsupported("test '\(t)' in filter '\(name)'") }
            let keep = name.hasPrefix("select")
            // Jinja's generator starts with `if value:`, so none / empty inputs give an empty result.
            let items = v.truthy ? try JinjaOps.iterate(v) : []
            return .iterator(JinjaIterator(try items.filter { item in
                let x = try attr.map { try attribute(item, $0) } ?? item
                let ok = try testName.map { try JinjaTests.apply($0, x, rest, kwargs) } ?? x.truthy
                return ok == keep
            }, producer: "select_or_reject"))
        case "map":
            let items = v.truthy ? try JinjaOps.iterate(v) : []
            if let attr = kwargs.first(where: { $0.name == "attribute" })?.value {
                for kw in kwargs where kw.name != "attribute" && kw.name != "default" {
                    throw JinjaFailure.type("Unexpected keyword argument '\(kw.name)'")
                }
                let dflt = kwargs.first(where: { $0.name == "default" })?.value
                return .iterator(JinjaIterator(try items.map { item in
                    let x = try attribute(item, attr)
                    if x.isUndefined, let d = dflt { return d }
                    return x
                }, producer: "do_map"))
            }
            guard let f = args.first else { throw JinjaFailure.type("map requires a filter argument") }
            let fname = f.pyStr
            guard supported.contains(fname) else { throw JinjaFailure.unsupported("filter '\(fname)' in map()") }
            return .iterator(JinjaIterator(try items.map { try apply(fname, $0, Array(args.dropFirst()), kwargs, interp) }, producer: "do_map"))
        case "tojson":
            let a = try bind(name, args, kwargs, ["ensure_ascii", "indent", "separators", "sort_keys"])
            return .string(try toJSON(v, ensureASCII: a[0]?.truthy ?? false, indent: a[1], separators: a[2], sortKeys: a[3]?.truthy ?? false))
        default:
            if jinjaBuiltins.contains(name) { throw JinjaFailure.unsupported("filter '\(name)' (a Jinja built-in this interpreter does not implement)") }
            throw JinjaFailure.type("No filter named '\(name)' found.")
        }
    }

    // MARK: Helpers

    /// Filters that run `soft_str(s).method()` keep a Markup a Markup.
    /// UTF-8 length of `parts.joined(separator: sep)`.
    static func joinedSize(_ parts: [String], _ sep: String) -> Int {
        parts.reduce(max(0, parts.count - 1) * sep.utf8.count) { $0 + $1.utf8.count }
    }

    private static func keepMarkup(_ original: JinjaValue, _ s: String) -> JinjaValue {
        original.isMarkup ? .markup(s) : .string(s)
    }

    /// Jinja's attribute getter for `map(attribute=)`, `selectattr`, `sort(attribute=)`: dotted paths, integer parts as indices.
    static func attribute(_ item: JinjaValue, _ attr: JinjaValue) throws -> JinjaValue {
        if case .int = attr { return try JinjaOps.getitem(item, attr) }
        var x = item
        for part in attr.pyStr.split(separator: ".", omittingEmptySubsequences: false) {
            let key: JinjaValue = Int64(part).map { .int($0) } ?? .string(String(part))
            x = try JinjaOps.getitem(x, key)
        }
        return x
    }

    private static func fold(_ v: JinjaValue, caseSensitive: Bool) -> JinjaValue {
        if !caseSensitive, case .string(let s) = v { return .string(PyString.lower(s)) }
        return v
    }

    private static func sortKey(caseSensitive: Bool, attribute attr: JinjaValue?) throws -> (JinjaValue) throws -> JinjaValue {
        { x in
            var k = x
            if let a = attr, !a.isNone { k = try attribute(x, a) }
            return fold(k, caseSensitive: caseSensitive)
        }
    }

    private static func less(_ a: JinjaValue, _ b: JinjaValue) throws -> Bool {
        if let err = JinjaOps.undefinedError(a) ?? JinjaOps.undefinedError(b) { throw err }
        guard let r = JinjaValue.pyLess(a, b) else {
            throw JinjaFailure.type("'<' not supported between instances of '\(a.pythonTypeName)' and '\(b.pythonTypeName)'")
        }
        return r
    }

    /// Python's `sorted(key=…, reverse=…)`: stable, and reverse keeps equal items in their original order.
    private static func stableSort(_ items: [JinjaValue], key: (JinjaValue) throws -> JinjaValue, reverse: Bool) throws -> [JinjaValue] {
        let keyed = try items.enumerated().map { (i: $0.offset, k: try key($0.element), v: $0.element) }
        var err: Error? = nil
        let sorted = keyed.sorted { x, y in
            do {
                if try less(x.k, y.k) { return !reverse }
                if try less(y.k, x.k) { return reverse }
            } catch { err = err ?? error }
            return x.i < y.i
        }
        if let e = err { throw e }
        return sorted.map(\.v)
    }

    private static func indent(_ s: String, _ width: JinjaValue, first: Bool, blank: Bool) throws -> String {
        let pad: String
        if case .string(let w) = width { pad = w } else {
            guard let n = width.intLike else { throw JinjaFailure.type("indent width must be an int or a string") }
            try TemplateLimits.checkString(Int(clamping: n), "the indent")
            pad = String(repeating: " ", count: max(0, Int(n)))
        }
        let lines = PyString.splitlines(s + "\n")
        try TemplateLimits.checkString(TemplateLimits.product(pad.utf8.count, Int64(lines.count + 1)) &+ s.utf8.count, "the result of indent")
        var rv: String
        if blank {
            rv = lines.joined(separator: "\n" + pad)
        } else {
            rv = lines.first ?? ""
            if lines.count > 1 {
                rv += "\n" + lines.dropFirst().map { $0.isEmpty ? $0 : pad + $0 }.joined(separator: "\n")
            }
        }
        return first ? pad + rv : rv
    }

    /// Jinja's `int` filter: int(value, base), else int(float(value)), else nil (the default).
    private static func toInt(_ v: JinjaValue, base: Int) -> JinjaValue? {
        switch v {
        case .int(let i): return .int(i)
        case .bool(let b): return .int(b ? 1 : 0)
        case .double(let d):
            guard d.isFinite, Swift.abs(d) < 9.2e18 else { return nil }
            return .int(Int64(d.rounded(.towardZero)))
        case .string(let s):
            var t = PyString.strip(s, chars: nil, left: true, right: true).replacingOccurrences(of: "_", with: "")
            var neg = false
            if t.hasPrefix("-") || t.hasPrefix("+") { neg = t.hasPrefix("-"); t.removeFirst() }
            if base == 16, t.lowercased().hasPrefix("0x") { t.removeFirst(2) }
            if base == 8, t.lowercased().hasPrefix("0o") { t.removeFirst(2) }
            if base == 2, t.lowercased().hasPrefix("0b") { t.removeFirst(2) }
            if let i = Int64(t, radix: base) { return .int(neg ? -i : i) }
            if let d = toFloat(v) { return toInt(.double(d), base: 10) }
            return nil
        default: return nil
        }
    }

    /// Python's float(): numbers, and strings such as " 1.5 ", "1e3", "inf", "nan", "1_000.5".
    private static func toFloat(_ v: JinjaValue) -> Double? {
        switch v {
        case .int(let i): return Double(i)
        case .bool(let b): return b ? 1 : 0
        case .double(let d): return d
        case .string(let s):
            let t = PyString.strip(s, chars: nil, left: true, right: true).lowercased()
            switch t {
            case "inf", "+inf", "infinity", "+infinity": return .infinity
            case "-inf", "-infinity": return -.infinity
            case "nan", "+nan", "-nan": return .nan
            default:
                guard !t.isEmpty, !t.hasPrefix("_"), !t.hasSuffix("_"), !t.contains("__"),
                      t.unicodeScalars.allSatisfy({ "0123456789.eE+-_".unicodeScalars.contains($0) }) else { return nil }
                return Double(t.replacingOccurrences(of: "_", with: ""))
            }
        default: return nil
        }
    }

    /// Jinja's `round`: Python's round() (half to even, correctly rounded decimals), or ceil/floor at a precision.
    private static func round(_ v: JinjaValue, precision p: Int, method: String) throws -> JinjaValue {
        guard ["common", "ceil", "floor"].contains(method) else { throw JinjaFailure.type("method must be common, ceil or floor") }
        guard let n = v.number else { throw JinjaFailure.type("type \(v.pythonTypeName) doesn't define __round__ method") }
        if method == "common" {
            switch n {
            case .int(let i): return .int(i)
            case .double(let d):
                guard d.isFinite else { return .double(d) }
                if p == 0 { return .double(d.rounded(.toNearestOrEven)) }
                if p > 0 { return .double(Double(String(format: "%.\(min(p, 340))f", d)) ?? d) }
                let scale = Foundation.pow(10.0, Double(-p))
                return .double((d / scale).rounded(.toNearestOrEven) * scale)
            }
        }
        let scale = Foundation.pow(10.0, Double(p))
        let x = JinjaValue.doubleOf(n) * scale
        return .double((method == "ceil" ? x.rounded(.up) : x.rounded(.down)) / scale)
    }

    /// transformers' tojson: `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`.
    static func toJSON(_ v: JinjaValue, ensureASCII: Bool, indent: JinjaValue?, separators: JinjaValue?, sortKeys: Bool) throws -> String {
        var pad: String? = nil
        if let i = indent, !i.isNone {
            if case .string(let s) = i { pad = s } else if let n = i.intLike {
                try TemplateLimits.checkString(Int(clamping: n), "the tojson indent")
                pad = String(repeating: " ", count: max(0, Int(n)))
            } else {
                throw JinjaFailure.type("tojson indent must be an int or a string")
            }
        }
        var itemSep = pad == nil ? ", " : ",", keySep = ": "
        if let s = separators, !s.isNone {
            let parts = try JinjaOps.iterate(s)
            guard parts.count == 2, case .string(let a) = parts[0], case .string(let b) = parts[1] else {
                throw JinjaFailure.type("tojson separators must be a (item_separator, key_separator) pair of strings")
            }
            itemSep = a
            keySep = b
        }
        var out = ""
        try writeJSON(v, &out, ascii: ensureASCII, pad: pad, itemSep: itemSep, keySep: keySep, sortKeys: sortKeys, level: 0)
        return out
    }

    /// json.dumps over template values: sort_keys compares the original keys (mixed types raise, as in Python)
    /// before they become strings.
    private static func writeJSON(_ v: JinjaValue, _ out: inout String, ascii: Bool, pad: String?, itemSep: String, keySep: String,
                                  sortKeys: Bool, level: Int) throws {
        func newline(_ l: Int) throws {
            if let p = pad {
                try TemplateLimits.checkString(out.utf8.count &+ TemplateLimits.product(p.utf8.count, Int64(l)), "the result of tojson")
                out += "\n" + String(repeating: p, count: l)
            }
        }
        try TemplateLimits.checkString(out.utf8.count, "the result of tojson")
        switch v {
        case .array(let a), .tuple(let a):
            if a.isEmpty { out += "[]"; return }
            out += "["
            for (i, x) in a.enumerated() {
                if i > 0 { out += itemSep }
                try newline(level + 1)
                try writeJSON(x, &out, ascii: ascii, pad: pad, itemSep: itemSep, keySep: keySep, sortKeys: sortKeys, level: level + 1)
            }
            try newline(level)
            out += "]"
        case .object(let o):
            if o.count == 0 { out += "{}"; return }
            out += "{"
            var entries = o.entries
            if sortKeys {
                var err: Error? = nil
                entries = entries.enumerated().sorted { x, y in
                    do {
                        if try less(x.element.key, y.element.key) { return true }
                        if try less(y.element.key, x.element.key) { return false }
                    } catch { err = err ?? error }
                    return x.offset < y.offset
                }.map(\.element)
                if let e = err { throw e }
            }
            for (i, e) in entries.enumerated() {
                if i > 0 { out += itemSep }
                try newline(level + 1)
                JSONValue.writeString(try JinjaDict.jsonKey(e.key), to: &out, asciiOnly: ascii)
                out += keySep
                try writeJSON(e.value, &out, ascii: ascii, pad: pad, itemSep: itemSep, keySep: keySep, sortKeys: sortKeys, level: level + 1)
            }
            try newline(level)
            out += "}"
        default:
            out += try v.toJSON().serialized(.compact, asciiOnly: ascii)
        }
    }
}
