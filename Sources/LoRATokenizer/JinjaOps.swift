// JinjaOps: Python operators as Jinja evaluates them: arithmetic (int/float promotion, floor division and
// modulo with the divisor's sign), comparisons, `in`, attribute/item lookup (environment.getattr/getitem), slicing.
import Foundation

enum JinjaOps {
    static func undefinedError(_ v: JinjaValue) -> JinjaFailure? {
        if case .undefined(let hint) = v { return .type(hint) }
        return nil
    }

    // MARK: Iteration and length

    /// `iter(value)` as a list: list/tuple items, dict keys, string code points; Undefined iterates as empty.
    static func iterate(_ v: JinjaValue) throws -> [JinjaValue] {
        switch v {
        case .array(let a), .tuple(let a): return a
        case .object(let o): return o.keys
        case .string(let s), .markup(let s):
            try TemplateLimits.checkList(s.unicodeScalars.count, "the characters of a string")
            return s.unicodeScalars.map { .string(String($0)) }
        case .iterator(let it): return it.drain()
        case .undefined: return []
        default: throw JinjaFailure.type("'\(v.pythonTypeName)' object is not iterable")
        }
    }

    static func length(_ v: JinjaValue) throws -> Int {
        switch v {
        case .array(let a), .tuple(let a): return a.count
        case .object(let o): return o.count
        case .string(let s), .markup(let s): return s.unicodeScalars.count
        case .undefined: return 0
        default: throw JinjaFailure.type("object of type '\(v.pythonTypeName)' has no len()")
        }
    }

    // MARK: Attribute and item access

    /// `obj.name`: a method or attribute first, then (dicts, namespaces) the item of that name.
    static func getattr(_ obj: JinjaValue, _ name: String) throws -> JinjaValue {
        if let err = undefinedError(obj) { throw err }
        if !name.hasPrefix("_"), let m = JinjaMethods.method(obj, name) { return m }
        switch obj {
        case .object(let d): if let v = d[name] { return v }
        case .namespace(let n): if let v = n.attrs[name] { return v }
        default: break
        }
        return .undefined(hint: "'\(obj.jinjaObjectTypeRepr)' has no attribute '\(name)'")
    }

    /// `obj[key]`: the item first, then for string keys the attribute of that name.
    static func getitem(_ obj: JinjaValue, _ key: JinjaValue) throws -> JinjaValue {
        if let err = undefinedError(obj) { throw err }
        switch (obj, key) {
        case (.object(let d), _):
            if let v = d[value: key] { return v }
        case (.array(let a), _), (.tuple(let a), _):
            if let i = index(key) {
                let j = i < 0 ? i + a.count : i
                if j >= 0 && j < a.count { return a[j] }
            }
        case (.string(let s), _), (.markup(let s), _):
            if let i = index(key) {
                let u = Array(s.unicodeScalars)
                let j = i < 0 ? i + u.count : i
                if j >= 0 && j < u.count { return obj.isMarkup ? .markup(String(u[j])) : .string(String(u[j])) }
            }
        default: break
        }
        if case .string(let name) = key { return try getattr(obj, name) }
        return .undefined(hint: "\(obj.jinjaObjectTypeRepr) has no element \(key.pyRepr)")
    }

    private static func index(_ v: JinjaValue) -> Int? {
        switch v {
        case .int(let i): return Int(i)
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    /// Python slicing `seq[start:stop:step]` on lists, tuples and strings.
    static func slice(_ obj: JinjaValue, _ start: JinjaValue?, _ stop: JinjaValue?, _ step: JinjaValue?) throws -> JinjaValue {
        if let err = undefinedError(obj) { throw err }
        func bound(_ v: JinjaValue?) throws -> Int? {
            guard let v = v, !v.isNone else { return nil }
            guard let i = index(v) else { throw JinjaFailure.type("slice indices must be integers or None") }
            return i
        }
        let st = try bound(step) ?? 1
        guard st != 0 else { throw JinjaFailure.type("slice step cannot be zero") }
        func pick(_ n: Int) throws -> [Int] {
            let (lower, upper) = st > 0 ? (0, n) : (-1, n - 1)
            func clamp(_ x: Int?, _ dflt: Int) -> Int {
                guard var v = x else { return dflt }
                if v < 0 { v += n; if v < lower { v = lower } } else if v > upper { v = upper }
                return v
            }
            var i = clamp(try bound(start), st > 0 ? lower : upper)
            let end = clamp(try bound(stop), st > 0 ? upper : lower)
            var out: [Int] = []
            while st > 0 ? i < end : i > end { out.append(i); i += st }
            return out
        }
        switch obj {
        case .array(let a): return .array(try pick(a.count).map { a[$0] })
        case .tuple(let a): return .tuple(try pick(a.count).map { a[$0] })
        case .string(let s), .markup(let s):
            let u = Array(s.unicodeScalars)
            let r = PyString.string(try pick(u.count).map { u[$0] })
            return obj.isMarkup ? .markup(r) : .string(r)
        default: throw JinjaFailure.type("'\(obj.pythonTypeName)' object is not subscriptable")
        }
    }

    static func call(_ f: JinjaValue, _ args: [JinjaValue], _ kwargs: JinjaKwargs) throws -> JinjaValue {
        switch f {
        case .function(let fn): return try fn.body(args, kwargs)
        case .undefined(let hint): throw JinjaFailure.type(hint)
        default: throw JinjaFailure.type("'\(f.pythonTypeName)' object is not callable")
        }
    }

    // MARK: Arithmetic

    static func negate(_ v: JinjaValue) throws -> JinjaValue {
        if let err = undefinedError(v) { throw err }
        switch v.number {
        case .int(let i)?:
            guard i != .min else { throw JinjaFailure.type("integer overflow") }
            return .int(-i)
        case .double(let d)?: return .double(-d)
        case nil: throw JinjaFailure.type("bad operand type for unary -: '\(v.pythonTypeName)'")
        }
    }

    static func unaryPlus(_ v: JinjaValue) throws -> JinjaValue {
        if let err = undefinedError(v) { throw err }
        switch v.number {
        case .int(let i)?: return .int(i)
        case .double(let d)?: return .double(d)
        case nil: throw JinjaFailure.type("bad operand type for unary +: '\(v.pythonTypeName)'")
        }
    }

    private static func overflow() -> JinjaFailure {
        .type("integer overflow (Python would use an arbitrary-precision integer here)")
    }

    private static func operandError(_ op: String, _ a: JinjaValue, _ b: JinjaValue) -> JinjaFailure {
        if case .string = a, op == "+" {
            return .type("can only concatenate str (not \"\(b.pythonTypeName)\") to str")
        }
        return .type("unsupported operand type(s) for \(op): '\(a.pythonTypeName)' and '\(b.pythonTypeName)'")
    }

    static func binary(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws -> JinjaValue {
        if op == "~" {
            let x = a.pyStr, y = b.pyStr
            try TemplateLimits.checkString(x.utf8.count + y.utf8.count, "the result of '~'")
            return .string(x + y)
        }
        if let err = undefinedError(a) ?? undefinedError(b) { throw err }
        try checkSize(op, a, b)
        switch (op, a, b) {
        case ("%", .string, _), ("%", .markup, _): throw JinjaFailure.unsupported("printf-style string formatting ('…' % value)")
        case ("+", .string(let x), .string(let y)): return .string(x + y)
        // markupsafe: Markup + str escapes the str (and str + Markup escapes the left side).
        case ("+", .markup(let x), .markup(let y)): return .markup(x + y)
        case ("+", .markup(let x), .string(let y)): return .markup(x + PyString.htmlEscape(y))
        case ("+", .string(let x), .markup(let y)): return .markup(PyString.htmlEscape(x) + y)
        case ("*", .markup(let s), _), ("*", _, .markup(let s)):
            guard let n = (a.isMarkup ? b : a).intLike else { throw operandError(op, a, b) }
            return .markup(String(repeating: s, count: max(0, Int(n))))
        case ("+", .array(let x), .array(let y)): return .array(x + y)
        case ("+", .tuple(let x), .tuple(let y)): return .tuple(x + y)
        case ("*", .string(let s), _), ("*", _, .string(let s)):
            guard let n = (a.isString ? b : a).intLike else { throw operandError(op, a, b) }
            return .string(String(repeating: s, count: max(0, Int(n))))
        case ("*", .array(let x), _), ("*", _, .array(let x)):
            guard let n = (a.isArray ? b : a).intLike else { throw operandError(op, a, b) }
            return .array(Array(repeating: x, count: max(0, Int(n))).flatMap { $0 })
        default: break
        }
        guard let x = a.number, let y = b.number else { throw operandError(op, a, b) }
        if case .int(let i) = x, case .int(let j) = y { return try intOp(op, i, j) }
        let p = JinjaValue.doubleOf(x), q = JinjaValue.doubleOf(y)
        switch op {
        case "+": return .double(p + q)
        case "-": return .double(p - q)
        case "*": return .double(p * q)
        case "/":
            guard q != 0 else { throw JinjaFailure.type("float division by zero") }
            return .double(p / q)
        case "//":
            guard q != 0 else { throw JinjaFailure.type("float floor division by zero") }
            return .double(pyFloatMod(p, q).div)
        case "%":
            guard q != 0 else { throw JinjaFailure.type("float modulo") }
            return .double(pyFloatMod(p, q).mod)
        case "**":
            if p == 0 && q < 0 { throw JinjaFailure.type("0.0 cannot be raised to a negative power") }
            return .double(Foundation.pow(p, q))
        default: throw JinjaFailure.unsupported("operator '\(op)'")
        }
    }

    /// Fails before `a op b` would build a string or list over TemplateLimits (repetition, concatenation).
    private static func checkSize(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws {
        switch (op, a, b) {
        case ("+", .string(let x), .string(let y)), ("+", .markup(let x), .markup(let y)),
             ("+", .markup(let x), .string(let y)), ("+", .string(let x), .markup(let y)):
            try TemplateLimits.checkString(x.utf8.count + y.utf8.count, "the result of '+'")
        case ("+", .array(let x), .array(let y)), ("+", .tuple(let x), .tuple(let y)):
            try TemplateLimits.checkList(x.count + y.count, "the result of '+'")
        case ("*", .string(let s), _), ("*", _, .string(let s)), ("*", .markup(let s), _), ("*", _, .markup(let s)):
            if let n = (a.stringLike != nil ? b : a).intLike { try TemplateLimits.checkString(TemplateLimits.product(s.utf8.count, n), "a repeated string") }
        case ("*", .array(let x), _), ("*", _, .array(let x)):
            if let n = (a.isArray ? b : a).intLike { try TemplateLimits.checkList(TemplateLimits.product(x.count, n), "a repeated list") }
        default: break
        }
    }

    /// Python's float divmod: the remainder takes the divisor's sign.
    private static func pyFloatMod(_ a: Double, _ b: Double) -> (div: Double, mod: Double) {
        var mod = fmod(a, b)
        var div = (a - mod) / b
        if mod != 0 {
            if (b < 0) != (mod < 0) { mod += b; div -= 1 }
        } else {
            mod = b < 0 ? -0.0 : 0.0
        }
        var floordiv: Double
        if div != 0 {
            floordiv = div.rounded(.down)
            if div - floordiv > 0.5 { floordiv += 1 }
        } else {
            floordiv = (a / b < 0) ? -0.0 : 0.0
        }
        return (floordiv, mod)
    }

    private static func intOp(_ op: String, _ i: Int64, _ j: Int64) throws -> JinjaValue {
        switch op {
        case "+":
            let (r, o) = i.addingReportingOverflow(j)
            if o { throw overflow() }
            return .int(r)
        case "-":
            let (r, o) = i.subtractingReportingOverflow(j)
            if o { throw overflow() }
            return .int(r)
        case "*":
            let (r, o) = i.multipliedReportingOverflow(by: j)
            if o { throw overflow() }
            return .int(r)
        case "/":
            guard j != 0 else { throw JinjaFailure.type("division by zero") }
            return .double(Double(i) / Double(j))
        case "//", "%":
            guard j != 0 else { throw JinjaFailure.type("integer division or modulo by zero") }
            if i == .min && j == -1 { if op == "%" { return .int(0) }; throw overflow() }
            var q = i / j, r = i % j
            if r != 0 && ((r < 0) != (j < 0)) { q -= 1; r += j }
            return .int(op == "//" ? q : r)
        case "**":
            if j < 0 {
                if i == 0 { throw JinjaFailure.type("0.0 cannot be raised to a negative power") }
                return .double(Foundation.pow(Double(i), Double(j)))
            }
            var result: Int64 = 1, base = i, e = j
            while e > 0 {
                if e & 1 == 1 {
                    let (r, o) = result.multipliedReportingOverflow(by: base)
                    if o { throw overflow() }
                    result = r
                }
                e >>= 1
                if e > 0 {
                    let (b2, o) = base.multipliedReportingOverflow(by: base)
                    if o { throw overflow() }
                    base = b2
                }
            }
            return .int(result)
        default: throw JinjaFailure.unsupported("operator '\(op)'")
        }
    }

    // MARK: Comparisons

    static func compare(_ op: String, _ a: JinjaValue, _ b: JinjaValue) throws -> Bool {
        switch op {
        case "==": return JinjaValue.pyEqual(a, b)
        case "!=": return !JinjaValue.pyEqual(a, b)
        case "in": return try contains(b, a)
        case "notin": return !(try contains(b, a))
        default:
            if let err = undefinedError(a) ?? undefinedError(b) { throw err }
            let less: Bool?
            switch op {
            case "<": less = JinjaValue.pyLess(a, b)
            case ">": less = JinjaValue.pyLess(b, a)
            case "<=": less = JinjaValue.pyLess(b, a).map { !$0 }
            case ">=": less = JinjaValue.pyLess(a, b).map { !$0 }
            default: throw JinjaFailure.unsupported("comparison '\(op)'")
            }
            guard let r = less else {
                throw JinjaFailure.type("'\(op)' not supported between instances of '\(a.pythonTypeName)' and '\(b.pythonTypeName)'")
            }
            return r
        }
    }

    /// Python `item in container`.
    static func contains(_ container: JinjaValue, _ item: JinjaValue) throws -> Bool {
        switch container {
        case .string(let s), .markup(let s):
            guard let sub = item.stringLike else {
                throw JinjaFailure.type("'in <string>' requires string as left operand, not \(item.pythonTypeName)")
            }
            return PyString.contains(s, sub)
        case .array(let a), .tuple(let a): return a.contains { JinjaValue.pyEqual($0, item) }
        case .object(let d):
            guard JinjaDict.key(item) != nil else { throw JinjaFailure.type("unhashable type: '\(item.pythonTypeName)'") }
            return d[value: item] != nil
        case .iterator(let it):
            while let x = it.next() { if JinjaValue.pyEqual(x, item) { return true } }
            return false
        case .undefined: return false
        default: throw JinjaFailure.type("argument of type '\(container.pythonTypeName)' is not iterable")
        }
    }
}

extension JinjaValue {
    var isString: Bool { if case .string = self { return true }; return false }
    var isMarkup: Bool { if case .markup = self { return true }; return false }
    var isArray: Bool { if case .array = self { return true }; return false }
    /// An int or bool as Int64 (what Python accepts as an index or repeat count).
    var intLike: Int64? {
        switch self {
        case .int(let i): return i
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }
}
