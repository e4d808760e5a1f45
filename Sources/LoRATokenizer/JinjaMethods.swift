// JinjaMethods: the Python methods templates call on values (`content.strip()`, `message.get('x')`,
// `d.items()`), and the globals transformers provides (range, namespace, dict, raise_exception, strftime_now).
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

enum JinjaMethods {
    private static let strMethods: Set<String> = [
        "capitalize", "casefold", "center", "count", "encode", "endswith", "expandtabs", "find", "format", "format_map",
        "index", "isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric",
        "isprintable", "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip", "maketrans", "partition",
        "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust", "rpartition", "rsplit", "rstrip", "split",
        "splitlines", "startswith", "strip", "swapcase", "title", "translate", "upper", "zfill",
    ]
    private static let dictMethods: Set<String> = ["clear", "copy", "fromkeys", "get", "items", "keys", "pop", "popitem", "setdefault", "update", "values"]
    private static let listMethods: Set<String> = ["append", "clear", "copy", "count", "extend", "index", "insert", "pop", "remove", "reverse", "sort"]
    /// Methods that modify their object; transformers' ImmutableSandboxedEnvironment refuses them.
    private static let mutating: Set<String> = ["clear", "pop", "popitem", "setdefault", "update", "append", "extend", "insert", "remove", "reverse", "sort"]

    /// The bound method `receiver.name`, or nil when the receiver's type has no such method.
    static func method(_ receiver: JinjaValue, _ name: String) -> JinjaValue? {
        let typeName: String
        switch receiver {
        case .string: guard strMethods.contains(name) else { return nil }; typeName = "str"
        case .markup: guard strMethods.contains(name) else { return nil }; typeName = "Markup"
        case .object: guard dictMethods.contains(name) else { return nil }; typeName = "dict"
        case .array: guard listMethods.contains(name) else { return nil }; typeName = "list"
        default: return nil
        }
        return .function(JinjaFunction("\(typeName).\(name)") { args, kwargs in
            if mutating.contains(name) {
                throw JinjaFailure.type("access to attribute '\(name)' of '\(typeName)' object is unsafe.")
            }
            switch receiver {
            case .string(let s): return try stringMethod(s, name, args, kwargs)
            case .markup(let s): return try markupMethod(s, name, args, kwargs)
            case .object(let d): return try dictMethod(d, name, args, kwargs)
            case .array(let a): return try listMethod(a, name, args, kwargs)
            default: throw JinjaFailure.unsupported("method '\(name)'")
            }
        })
    }

    /// Binds positional and keyword arguments to parameter names (Python call rules); nil = not given.
    static func bind(_ fname: String, _ args: [JinjaValue], _ kwargs: JinjaKwargs, _ names: [String]) throws -> [JinjaValue?] {
        guard args.count <= names.count else {
            throw JinjaFailure.type("\(fname)() takes at most \(names.count) argument(s) (\(args.count) given)")
        }
        var out: [JinjaValue?] = args + Array(repeating: nil, count: names.count - args.count)
        for kw in kwargs {
            guard let i = names.firstIndex(of: kw.name) else {
                throw JinjaFailure.type("\(fname)() got an unexpected keyword argument '\(kw.name)'")
            }
            if out[i] != nil { throw JinjaFailure.type("\(fname)() got multiple values for argument '\(kw.name)'") }
            out[i] = kw.value
        }
        return out
    }

    private static func str(_ v: JinjaValue?, _ what: String) throws -> String? {
        guard let v = v, !v.isNone else { return nil }
        guard let s = v.stringLike else { throw JinjaFailure.type("\(what) must be str or None, not \(v.pythonTypeName)") }
        return s
    }

    private static func int(_ v: JinjaValue?, _ dflt: Int) throws -> Int {
        guard let v = v else { return dflt }
        guard let i = v.intLike else { throw JinjaFailure.type("'\(v.pythonTypeName)' object cannot be interpreted as an integer") }
        return Int(i)
    }

    private static func allChars(_ s: String, _ pred: (Unicode.Scalar) -> Bool) -> Bool {
        !s.isEmpty && s.unicodeScalars.allSatisfy(pred)
    }

    private static func isAlpha(_ c: Unicode.Scalar) -> Bool {
        switch c.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: return true
        default: return false
        }
    }

    static func casedCheck(_ s: String, lower: Bool) -> Bool {
        var cased = false
        for c in s.unicodeScalars {
            let p = c.properties
            if p.generalCategory == .titlecaseLetter { return false }
            if lower ? p.isUppercase : p.isLowercase { return false }
            if p.isUppercase || p.isLowercase { cased = true }
        }
        return cased
    }

    private static func stringMethod(_ s: String, _ name: String, _ args: [JinjaValue], _ kwargs: JinjaKwargs) throws -> JinjaValue {
        let f = "str.\(name)"
        switch name {
        case "strip", "lstrip", "rstrip":
            let a = try bind(f, args, kwargs, ["chars"])
            return .string(PyString.strip(s, chars: try str(a[0], "strip arg"), left: name != "rstrip", right: name != "lstrip"))
        case "split", "rsplit":
            let a = try bind(f, args, kwargs, ["sep", "maxsplit"])
            let sep = try str(a[0], "sep")
            if sep == "" { throw JinjaFailure.type("empty separator") }
            let parts = name == "split" ? PyString.split(s, sep: sep, maxsplit: try int(a[1], -1))
                : PyString.rsplit(s, sep: sep, maxsplit: try int(a[1], -1))
            return .array(parts.map { .string($0) })
        case "splitlines":
            _ = try bind(f, args, kwargs, [])
            return .array(PyString.splitlines(s).map { .string($0) })
        case "startswith", "endswith":
            let a = try bind(f, args, kwargs, ["prefix"])
            guard let p = a[0] else { throw JinjaFailure.type("\(f)() takes at least 1 argument (0 given)") }
            let cands: [JinjaValue]
            switch p {
            case .string, .markup: cands = [p]
            case .tuple(let t): cands = t
            default: throw JinjaFailure.type("\(name) first arg must be str or a tuple of str, not \(p.pythonTypeName)")
            }
            for c in cands {
                guard let x = c.stringLike else { throw JinjaFailure.type("tuple for \(name) must only contain str, not \(c.pythonTypeName)") }
                if name == "startswith" ? PyString.hasPrefix(s, x) : PyString.hasSuffix(s, x) { return .bool(true) }
            }
            return .bool(false)
        case "upper": _ = try bind(f, args, kwargs, []); return .string(PyString.upper(s))
        case "lower": _ = try bind(f, args, kwargs, []); return .string(PyString.lower(s))
        case "title": _ = try bind(f, args, kwargs, []); return .string(PyString.title(s))
        case "capitalize": _ = try bind(f, args, kwargs, []); return .string(PyString.capitalize(s))
        case "replace":
            let a = try bind(f, args, kwargs, ["old", "new", "count"])
            guard let old = try str(a[0], "replace() argument 1"), let new = try str(a[1], "replace() argument 2") else {
                throw JinjaFailure.type("replace() takes at least 2 arguments")
            }
            return .string(try PyString.replace(s, old, new, count: try int(a[2], -1)))
        case "find", "rfind", "index", "rindex", "count":
            let a = try bind(f, args, kwargs, ["sub"])
            guard let sub = try str(a[0], "\(name)() argument") else { throw JinjaFailure.type("\(name)() takes at least 1 argument") }
            if name == "count" { return .int(Int64(PyString.count(s, sub))) }
            let hay = PyString.scalars(s), needle = PyString.scalars(sub)
            var found: Int? = nil
            if name.hasPrefix("r") {
                var i = 0
                while let j = PyString.find(hay, needle, from: i) { found = j; i = j + 1; if j >= hay.count { break } }
            } else {
                found = PyString.find(hay, needle)
            }
            if found == nil && name.hasSuffix("index") { throw JinjaFailure.type("substring not found") }
            return .int(Int64(found ?? -1))
        case "join":
            let a = try bind(f, args, kwargs, ["iterable"])
            guard let it = a[0] else { throw JinjaFailure.type("join() takes exactly one argument (0 given)") }
            var parts: [String] = []
            for (i, v) in try JinjaOps.iterate(it).enumerated() {
                guard let x = v.stringLike else { throw JinjaFailure.type("sequence item \(i): expected str instance, \(v.pythonTypeName) found") }
                parts.append(x)
            }
            try TemplateLimits.checkString(JinjaFilters.joinedSize(parts, s), "the result of join")
            return .string(parts.joined(separator: s))
        case "removeprefix", "removesuffix":
            let a = try bind(f, args, kwargs, ["affix"])
            guard let x = try str(a[0], "\(name)() argument") else { throw JinjaFailure.type("\(name)() takes exactly one argument") }
            let u = PyString.scalars(s), n = x.unicodeScalars.count
            if name == "removeprefix" { return .string(PyString.hasPrefix(s, x) ? PyString.string(u[n...]) : s) }
            return .string(PyString.hasSuffix(s, x) ? PyString.string(u[..<(u.count - n)]) : s)
        case "isdigit", "isdecimal", "isnumeric":
            _ = try bind(f, args, kwargs, [])
            return .bool(allChars(s) { c in
                guard let t = c.properties.numericType else { return false }
                return name == "isnumeric" || t == .decimal || (name == "isdigit" && t == .digit)
            })
        case "isalpha": _ = try bind(f, args, kwargs, []); return .bool(allChars(s, isAlpha))
        case "isalnum":
            _ = try bind(f, args, kwargs, [])
            return .bool(allChars(s) { isAlpha($0) || $0.properties.numericType != nil })
        case "isspace": _ = try bind(f, args, kwargs, []); return .bool(allChars(s, PyString.isSpace))
        case "islower": _ = try bind(f, args, kwargs, []); return .bool(casedCheck(s, lower: true))
        case "isupper": _ = try bind(f, args, kwargs, []); return .bool(casedCheck(s, lower: false))
        case "format": return .string(try format(s, args, kwargs))
        default:
            throw JinjaFailure.unsupported("string method '\(name)'")
        }
    }

    /// markupsafe wraps these str methods to return Markup, escaping their string arguments.
    private static let markupReturning: Set<String> = ["strip", "lstrip", "rstrip", "upper", "lower", "title", "capitalize", "replace", "join", "format"]

    private static func markupMethod(_ s: String, _ name: String, _ args: [JinjaValue], _ kwargs: JinjaKwargs) throws -> JinjaValue {
        // markupsafe's escape(): a Markup stays, anything else becomes escaped str(value).
        func esc(_ v: JinjaValue) -> JinjaValue { v.isMarkup ? v : .markup(PyString.htmlEscape(v.pyStr)) }
        var escArgs = args, escKwargs = kwargs
        switch name {
        case "replace": if escArgs.count > 1 { escArgs[1] = esc(escArgs[1]) }  // only `new` is escaped
        case "join": if let items = args.first { escArgs = [.array(try JinjaOps.iterate(items).map(esc))] }
        case "format":
            escArgs = args.map(esc)
            escKwargs = kwargs.map { ($0.name, esc($0.value)) }
        default: break
        }
        let r = try stringMethod(s, name, escArgs, escKwargs)
        switch r {
        case .string(let x) where markupReturning.contains(name): return .markup(x)
        case .array(let a) where name.hasSuffix("split") || name == "splitlines": return .array(a.map { .markup($0.stringLike ?? "") })
        default: return r
        }
    }

    /// `str.format` with `{}`, `{0}`, `{name}` fields, `!s`/`!r` conversions and `{{`/`}}` escapes (no format specs).
    static func format(_ s: String, _ args: [JinjaValue], _ kwargs: JinjaKwargs) throws -> String {
        var out = ""
        var it = Array(s.unicodeScalars)[...]
        var auto = 0
        while let c = it.popFirst() {
            if c == "}" {
                guard it.popFirst() == "}" else { throw JinjaFailure.type("Single '}' encountered in format string") }
                out += "}"
                continue
            }
            guard c == "{" else { out.unicodeScalars.append(c); continue }
            if it.first == "{" { it.removeFirst(); out += "{"; continue }
            var field = ""
            while let d = it.popFirst(), d != "}" { field.unicodeScalars.append(d) }
            var conversion: String? = nil
            if let bang = field.firstIndex(of: "!") {
                conversion = String(field[field.index(after: bang)...])
                field = String(field[..<bang])
            }
            if field.contains(":") || field.contains(".") || field.contains("[") {
                throw JinjaFailure.unsupported("str.format fields with format specs, attributes or indices ('{\(field)}')")
            }
            let value: JinjaValue
            if field.isEmpty {
                guard auto < args.count else { throw JinjaFailure.type("Replacement index \(auto) out of range for positional args tuple") }
                value = args[auto]
                auto += 1
            } else if let i = Int(field) {
                guard i < args.count else { throw JinjaFailure.type("Replacement index \(i) out of range for positional args tuple") }
                value = args[i]
            } else {
                guard let kw = kwargs.last(where: { $0.name == field }) else { throw JinjaFailure.type("'\(field)'") }
                value = kw.value
            }
            switch conversion {
            case nil, "s": out += value.pyStr
            case "r": out += value.pyRepr
            default: throw JinjaFailure.unsupported("str.format conversion '!\(conversion!)'")
            }
            try TemplateLimits.checkString(out.utf8.count, "the result of str.format")
        }
        return out
    }

    static func itemPairs(_ d: JinjaDict) -> [JinjaValue] { d.entries.map { .tuple([$0.key, $0.value]) } }

    private static func dictMethod(_ d: JinjaDict, _ name: String, _ args: [JinjaValue], _ kwargs: JinjaKwargs) throws -> JinjaValue {
        let f = "dict.\(name)"
        switch name {
        case "get":
            let a = try bind(f, args, kwargs, ["key", "default"])
            guard let k = a[0] else { throw JinjaFailure.type("get expected at least 1 argument, got 0") }
            if let v = d[value: k] { return v }
            return a[1] ?? .none
        case "items": _ = try bind(f, args, kwargs, []); return .array(itemPairs(d))
        case "keys": _ = try bind(f, args, kwargs, []); return .array(d.keys)
        case "values": _ = try bind(f, args, kwargs, []); return .array(d.values)
        case "copy": _ = try bind(f, args, kwargs, []); return .object(d)
        default: throw JinjaFailure.unsupported("dict method '\(name)'")
        }
    }

    private static func listMethod(_ a: [JinjaValue], _ name: String, _ args: [JinjaValue], _ kwargs: JinjaKwargs) throws -> JinjaValue {
        let f = "list.\(name)"
        switch name {
        case "count":
            let b = try bind(f, args, kwargs, ["value"])
            guard let v = b[0] else { throw JinjaFailure.type("count() takes exactly one argument (0 given)") }
            return .int(Int64(a.filter { JinjaValue.pyEqual($0, v) }.count))
        case "index":
            let b = try bind(f, args, kwargs, ["value"])
            guard let v = b[0] else { throw JinjaFailure.type("index expected at least 1 argument, got 0") }
            guard let i = a.firstIndex(where: { JinjaValue.pyEqual($0, v) }) else { throw JinjaFailure.type("\(v.pyRepr) is not in list") }
            return .int(Int64(i))
        case "copy": _ = try bind(f, args, kwargs, []); return .array(a)
        default: throw JinjaFailure.unsupported("list method '\(name)'")
        }
    }

    // MARK: Globals

    /// The names transformers puts in the environment, plus Jinja's defaults (range, dict, namespace…).
    static func globals(now: @escaping @Sendable () -> Date, timeZone: TimeZone? = nil) -> [String: JinjaValue] {
        var g: [String: JinjaValue] = [:]
        g["range"] = .function(JinjaFunction("range") { args, kwargs in
            guard kwargs.isEmpty else { throw JinjaFailure.type("range() takes no keyword arguments") }
            let ints = try args.map { v -> Int64 in
                guard let i = v.intLike else { throw JinjaFailure.type("'\(v.pythonTypeName)' object cannot be interpreted as an integer") }
                return i
            }
            var start: Int64 = 0, stop: Int64, step: Int64 = 1
            switch ints.count {
            case 1: stop = ints[0]
            case 2: start = ints[0]; stop = ints[1]
            case 3: start = ints[0]; stop = ints[1]; step = ints[2]
            default: throw JinjaFailure.type("range expected 1 to 3 arguments, got \(ints.count)")
            }
            guard step != 0 else { throw JinjaFailure.type("range() arg 3 must not be zero") }
            var out: [JinjaValue] = []
            var i = start
            while step > 0 ? i < stop : i > stop {
                if out.count >= 100_000 {
                    throw JinjaFailure.type("Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).")
                }
                out.append(.int(i))
                i += step
            }
            return .array(out)
        })
        let makeDict = { (fname: String, args: [JinjaValue], kwargs: JinjaKwargs) throws -> JinjaDict in
            var d = JinjaDict()
            if args.count > 1 { throw JinjaFailure.type("\(fname) expected at most 1 argument, got \(args.count)") }
            if let a = args.first {
                switch a {
                case .object(let o): d = o
                case .namespace(let n): d = n.attrs
                default:
                    for pair in try JinjaOps.iterate(a) {
                        let kv = try JinjaOps.iterate(pair)
                        guard kv.count == 2 else { throw JinjaFailure.type("\(fname) needs a mapping or (key, value) pairs") }
                        try d.insert(kv[0], kv[1])
                    }
                }
            }
            for kw in kwargs { d[kw.name] = kw.value }
            return d
        }
        g["dict"] = .function(JinjaFunction("dict") { args, kwargs in .object(try makeDict("dict", args, kwargs)) })
        g["namespace"] = .function(JinjaFunction("namespace") { args, kwargs in
            let d = try makeDict("namespace", args, kwargs)
            if let bad = d.keys.first(where: { $0.stringLike?.hasPrefix("_") ?? false }) {
                throw JinjaFailure.type("Chat templates cannot store underscore-prefixed attributes on a namespace, but got \(bad.pyRepr). Please rename the attribute.")
            }
            let ns = JinjaNamespace(d)
            RenderBudget.current?.namespaces.append(ns)
            return .namespace(ns)
        })
        g["raise_exception"] = .function(JinjaFunction("raise_exception") { args, kwargs in
            let a = try bind("raise_exception", args, kwargs, ["message"])
            throw JinjaFailure.raised(a[0]?.pyStr ?? "")
        })
        g["strftime_now"] = .function(JinjaFunction("strftime_now") { args, kwargs in
            let a = try bind("strftime_now", args, kwargs, ["format"])
            guard case .string(let fmt)? = a[0] else { throw JinjaFailure.type("strftime_now() argument 'format' must be str") }
            return .string(strftime(fmt, now(), timeZone: timeZone))
        })
        for name in ["lipsum", "cycler", "joiner"] {
            g[name] = .function(JinjaFunction(name) { _, _ in throw JinjaFailure.unsupported("global function '\(name)'") })
        }
        return g
    }

    /// Python's `datetime.now().strftime(format)` on Linux: C `strftime` in the C locale on local time (or on
    /// the wall clock of `timeZone` when one is given), with `%f` (microseconds) and `%z`/`%Z` (empty for a
    /// naive datetime) handled as Python does.
    static func strftime(_ format: String, _ date: Date, timeZone: TimeZone? = nil) -> String {
        let seconds = date.timeIntervalSince1970.rounded(.down)
        let micro = Int(((date.timeIntervalSince1970 - seconds) * 1_000_000).rounded(.down))
        var fmt = ""
        var it = format.unicodeScalars.makeIterator()
        while let c = it.next() {
            guard c == "%" else { fmt.unicodeScalars.append(c); continue }
            guard let d = it.next() else { fmt += "%"; break }
            switch d {
            case "f": fmt += String(format: "%06d", micro)
            case "z", "Z": break
            default: fmt.unicodeScalars.append(c); fmt.unicodeScalars.append(d)
            }
        }
        if fmt.isEmpty { return "" }
        var tmv = tm()
        if let tz = timeZone {
            var t = time_t(seconds) + time_t(tz.secondsFromGMT(for: date))
            gmtime_r(&t, &tmv)
        } else {
            var t = time_t(seconds)
            localtime_r(&t, &tmv)
        }
        var size = 256
        while size <= 1 << 16 {
            var buf = [CChar](repeating: 0, count: size)
            let n = Foundation.strftime(&buf, size, fmt, &tmv)
            if n > 0 { return String(decoding: buf[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) }
            size *= 4
        }
        return ""
    }
}
