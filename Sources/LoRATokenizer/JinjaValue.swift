// JinjaValue: the runtime values of the chat-template interpreter, with Python's semantics for truth,
// equality, ordering, str() and repr() (Jinja 3.1 renders through Python's str(); transformers' sandbox).
import Foundation

/// A value seen by a template. JSON inputs map onto none/bool/int/double/string/array/object; the
/// rest exist only while rendering (tuples, namespaces, callables, Jinja's Undefined).
enum JinjaValue {
    /// Jinja's default `Undefined`: falsy, renders as "", fails on arithmetic and attribute access.
    /// `hint` is the message Jinja would give ("'foo' is undefined").
    case undefined(hint: String)
    case none
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    /// markupsafe's `Markup` (from `|safe`, `|e`): a str whose `+` HTML-escapes the plain strings added to it.
    case markup(String)
    case array([JinjaValue])
    case tuple([JinjaValue])
    case object(JinjaDict)
    case namespace(JinjaNamespace)
    case function(JinjaFunction)
    /// A one-shot Python iterator (what `select`, `map`, `unique`, `items`, `reverse` return): truthy,
    /// no len(), not JSON serializable, exhausted once iterated.
    case iterator(JinjaIterator)

    init(_ json: JSONValue) {
        switch json {
        case .null: self = .none
        case .bool(let b): self = .bool(b)
        case .int(let i): self = .int(i)
        case .double(let d): self = .double(d)
        case .string(let s): self = .string(s)
        case .array(let a): self = .array(a.map(JinjaValue.init))
        case .object(let o):
            var d = JinjaDict()
            for e in o.entries { d[e.key] = JinjaValue(e.value) }
            self = .object(d)
        }
    }

    static func undefinedName(_ name: String) -> JinjaValue { .undefined(hint: "'\(name)' is undefined") }

    var isUndefined: Bool { if case .undefined = self { return true }; return false }
    var isNone: Bool { if case .none = self { return true }; return false }

    /// The text of a str or Markup.
    var stringLike: String? {
        switch self {
        case .string(let s), .markup(let s): return s
        default: return nil
        }
    }

    /// Python's type name, as used in Python/Jinja error messages.
    var pythonTypeName: String {
        switch self {
        case .undefined: return "Undefined"
        case .none: return "NoneType"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float"
        case .string: return "str"
        case .markup: return "Markup"
        case .array: return "list"
        case .tuple: return "tuple"
        case .object: return "dict"
        case .namespace: return "Namespace"
        case .function: return "function"
        case .iterator(let it): return it.typeName
        }
    }

    /// Jinja's `object_type_repr`, used in "… has no attribute" hints.
    var jinjaObjectTypeRepr: String {
        if case .none = self { return "None" }
        return "\(pythonTypeName) object"
    }

    /// Python truthiness.
    var truthy: Bool {
        switch self {
        case .undefined, .none: return false
        case .bool(let b): return b
        case .int(let i): return i != 0
        case .double(let d): return d != 0
        case .string(let s), .markup(let s): return !s.isEmpty
        case .array(let a), .tuple(let a): return !a.isEmpty
        case .object(let o): return o.count > 0
        case .namespace, .function, .iterator: return true
        }
    }

    /// Numeric view (bool counts as int, as in Python).
    enum Number { case int(Int64), double(Double) }
    var number: Number? {
        switch self {
        case .bool(let b): return .int(b ? 1 : 0)
        case .int(let i): return .int(i)
        case .double(let d): return .double(d)
        default: return nil
        }
    }

    // MARK: str() and repr()

    /// Python's `str(value)`, which is what `{{ value }}` prints. Undefined prints as "".
    var pyStr: String {
        switch self {
        case .undefined: return ""
        case .string(let s), .markup(let s): return s
        default: return pyRepr
        }
    }

    /// Python's `repr(value)` (how containers print their elements).
    var pyRepr: String {
        var out = ""
        writeRepr(&out)
        return out
    }

    /// Appends `repr(value)`, stopping once `out` is past TemplateLimits.maxStringBytes (whoever uses the text
    /// then fails on its size) or the render's budget is spent (the interpreter then fails on the budget): a list
    /// that holds another many times over cannot print for hours, a namespace that holds itself cannot recurse.
    func writeRepr(_ out: inout String) {
        writeRepr(&out, RenderBudget.current, 0)
    }

    private func writeRepr(_ out: inout String, _ g: RenderBudget?, _ depth: Int) {
        if let g, !g.visit(depth) { return }
        func items(_ a: [JinjaValue], _ open: String, _ close: String) {
            out += open
            for (i, x) in a.enumerated() {
                if out.utf8.count > TemplateLimits.maxStringBytes || g?.exhausted == true { return }
                if i > 0 { out += ", " }
                x.writeRepr(&out, g, depth + 1)
            }
            out += close
        }
        switch self {
        case .undefined: out += "Undefined"
        case .none: out += "None"
        case .bool(let b): out += b ? "True" : "False"
        case .int(let i): out += String(i)
        case .double(let d): out += JinjaValue.pyFloatStr(d)
        case .string(let s): out += PyString.repr(s)
        case .markup(let s): out += "Markup(" + PyString.repr(s) + ")"
        case .array(let a): items(a, "[", "]")
        case .tuple(let a): items(a, "(", a.count == 1 ? ",)" : ")")
        case .object(let o):
            out += "{"
            for (i, e) in o.entries.enumerated() {
                if out.utf8.count > TemplateLimits.maxStringBytes || g?.exhausted == true { return }
                if i > 0 { out += ", " }
                e.key.writeRepr(&out, g, depth + 1)
                out += ": "
                e.value.writeRepr(&out, g, depth + 1)
            }
            out += "}"
        case .namespace(let n):
            out += "<Namespace "
            JinjaValue.object(n.attrs).writeRepr(&out, g, depth + 1)
            out += ">"
        case .function(let f): out += "<function \(f.name)>"
        case .iterator(let it): out += "<\(it.typeName) object \(it.producer)>"
        }
    }

    /// Whether the value holds other values (what a whole-value walk descends into).
    var isContainer: Bool {
        switch self {
        case .array, .tuple, .object, .namespace: return true
        default: return false
        }
    }

    /// The nesting of `v`: 0 for a scalar, 1 + the deepest element for a container, walked under the render's
    /// budget (one unit per container and per 8 elements scanned), stopping past TemplateLimits.maxValueDepth.
    static func nesting(_ v: JinjaValue, _ g: RenderBudget?, _ depth: Int = 0) -> Int {
        let children: [JinjaValue]
        switch v {
        case .array(let a), .tuple(let a): children = a
        case .object(let o): children = o.values
        case .namespace(let n): children = n.attrs.values
        default: return depth
        }
        if let g, !g.visit(depth + 1, bytes: children.count * 8) { return depth + 1 }
        var deepest = depth + 1
        for x in children where x.isContainer {
            deepest = Swift.max(deepest, nesting(x, g, depth + 1))
            if deepest > TemplateLimits.maxValueDepth || g?.exhausted == true { break }
        }
        return deepest
    }

    /// Python's `str(float)`.
    static func pyFloatStr(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d < 0 ? "-inf" : "inf" }
        return JSONValue.pythonFloatRepr(d)
    }

    // MARK: Equality and ordering

    /// Python `==`: numbers compare across int/float/bool, lists and tuples never equal each other,
    /// dicts compare as unordered maps, strings by code points. Undefined equals only Undefined.
    static func pyEqual(_ a: JinjaValue, _ b: JinjaValue) -> Bool {
        pyEqual(a, b, a.isContainer || b.isContainer ? RenderBudget.current : nil, 0)
    }

    /// pyEqual charging each pair of nodes compared to `g` (its result is meaningless once `g` is exhausted).
    private static func pyEqual(_ a: JinjaValue, _ b: JinjaValue, _ g: RenderBudget?, _ depth: Int) -> Bool {
        switch (a, b) {
        case (.undefined, .undefined), (.none, .none): return true
        case (.string(let x), .string(let y)), (.string(let x), .markup(let y)), (.markup(let x), .string(let y)), (.markup(let x), .markup(let y)):
            if let g, !g.visit(depth, bytes: Swift.min(x.utf8.count, y.utf8.count)) { return false }
            return x.unicodeScalars.elementsEqual(y.unicodeScalars)
        case (.array(let x), .array(let y)), (.tuple(let x), .tuple(let y)):
            if let g, !g.visit(depth) { return false }
            return x.count == y.count && zip(x, y).allSatisfy { pyEqual($0, $1, g, depth + 1) }
        case (.object(let x), .object(let y)):
            if let g, !g.visit(depth) { return false }
            guard x.count == y.count else { return false }
            for e in x.entries {
                guard let v = y[value: e.key], pyEqual(e.value, v, g, depth + 1) else { return false }
            }
            return true
        case (.namespace(let x), .namespace(let y)): return x === y
        case (.function(let x), .function(let y)): return x === y
        case (.iterator(let x), .iterator(let y)): return x === y
        default:
            switch (a.number, b.number) {
            case (.int(let x)?, .int(let y)?): return x == y
            case (let x?, let y?): return JinjaValue.doubleOf(x) == JinjaValue.doubleOf(y)
            default: return false
            }
        }
    }

    static func doubleOf(_ n: Number) -> Double {
        switch n {
        case .int(let i): return Double(i)
        case .double(let d): return d
        }
    }

    /// Python ordering (`<`): numbers, strings by code point, lists/tuples lexicographically.
    /// Returns nil where Python raises TypeError.
    static func pyLess(_ a: JinjaValue, _ b: JinjaValue) -> Bool? {
        pyLess(a, b, a.isContainer || b.isContainer ? RenderBudget.current : nil, 0)
    }

    private static func pyLess(_ a: JinjaValue, _ b: JinjaValue, _ g: RenderBudget?, _ depth: Int) -> Bool? {
        switch (a, b) {
        case (.string(let x), .string(let y)), (.string(let x), .markup(let y)), (.markup(let x), .string(let y)), (.markup(let x), .markup(let y)):
            if let g, !g.visit(depth, bytes: Swift.min(x.utf8.count, y.utf8.count)) { return false }
            return x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars) { $0.value < $1.value }
        case (.array(let x), .array(let y)), (.tuple(let x), .tuple(let y)):
            if let g, !g.visit(depth) { return false }
            for (p, q) in zip(x, y) where !pyEqual(p, q, g, depth + 1) {
                if g?.exhausted == true { return false }
                return pyLess(p, q, g, depth + 1)
            }
            return x.count < y.count
        default:
            switch (a.number, b.number) {
            case (.int(let x)?, .int(let y)?): return x < y
            case (let x?, let y?): return doubleOf(x) < doubleOf(y)
            default: return nil
            }
        }
    }

    // MARK: JSON

    /// Converts back to JSON (for `tojson`). Tuples become arrays; Undefined, namespaces and callables
    /// are not JSON serializable (the message is Python's).
    func toJSON() throws -> JSONValue {
        try toJSON(isContainer ? RenderBudget.current : nil, 0)
    }

    private func toJSON(_ g: RenderBudget?, _ depth: Int) throws -> JSONValue {
        if let g, !g.visit(depth), let f = g.failure() { throw f }
        switch self {
        case .none: return .null
        case .bool(let b): return .bool(b)
        case .int(let i): return .int(i)
        case .double(let d): return .double(d)
        case .string(let s), .markup(let s): return .string(s)
        case .array(let a), .tuple(let a): return .array(try a.map { try $0.toJSON(g, depth + 1) })
        case .object(let o):
            var out = JSONObject()
            for e in o.entries { out[try JinjaDict.jsonKey(e.key)] = try e.value.toJSON(g, depth + 1) }
            return .object(out)
        case .undefined, .namespace, .function, .iterator:
            throw JinjaFailure.type("Object of type \(pythonTypeName) is not JSON serializable")
        }
    }
}

/// A dictionary key: Python hashes 1, 1.0 and True alike, so numbers are normalised.
enum JinjaKey: Hashable {
    case str(String)
    case int(Int64)
    case double(Double)
    case none
}

/// An insertion-ordered dictionary (a Python dict as templates see it). Keys are str, numbers, bools or None.
struct JinjaDict {
    private var order: [JinjaKey] = []
    private var storage: [JinjaKey: (key: JinjaValue, value: JinjaValue)] = [:]

    init() {}
    var count: Int { order.count }
    var entries: [(key: JinjaValue, value: JinjaValue)] { order.map { storage[$0]! } }
    var keys: [JinjaValue] { order.map { storage[$0]!.key } }
    var values: [JinjaValue] { order.map { storage[$0]!.value } }

    /// The hash key of a value, or nil when this interpreter cannot use it as a key (lists, dicts, tuples…).
    static func key(_ v: JinjaValue) -> JinjaKey? {
        switch v {
        case .string(let s), .markup(let s): return .str(s)
        case .int(let i): return .int(i)
        case .bool(let b): return .int(b ? 1 : 0)
        case .double(let d):
            if d.rounded() == d && Swift.abs(d) < 9.2e18 { return .int(Int64(d)) }
            return .double(d)
        case .none: return JinjaKey.none
        default: return nil
        }
    }

    /// json.dumps turns non-string keys into strings: 1 -> "1", 1.5 -> "1.5", True -> "true", None -> "null".
    static func jsonKey(_ k: JinjaValue) throws -> String {
        switch k {
        case .string(let s), .markup(let s): return s
        case .int(let i): return String(i)
        case .bool(let b): return b ? "true" : "false"
        case .double(let d): return d.isNaN ? "NaN" : d.isInfinite ? (d < 0 ? "-Infinity" : "Infinity") : JSONValue.pythonFloatRepr(d)
        case .none: return "null"
        default: throw JinjaFailure.type("keys must be str, int, float, bool or None, not \(k.pythonTypeName)")
        }
    }

    subscript(key: String) -> JinjaValue? {
        get { storage[.str(key)]?.value }
        set { set(.str(key), .string(key), newValue) }
    }

    subscript(value key: JinjaValue) -> JinjaValue? {
        JinjaDict.key(key).flatMap { storage[$0]?.value }
    }

    /// Inserts or updates (an existing key keeps its original key object, as in Python).
    mutating func insert(_ key: JinjaValue, _ value: JinjaValue) throws {
        guard let k = JinjaDict.key(key) else {
            switch key {
            case .array, .object: throw JinjaFailure.type("unhashable type: '\(key.pythonTypeName)'")
            default: throw JinjaFailure.unsupported("dict keys of type \(key.pythonTypeName)")
            }
        }
        set(k, key, value)
    }

    private mutating func set(_ k: JinjaKey, _ original: JinjaValue, _ value: JinjaValue?) {
        if let v = value {
            if let old = storage[k] { storage[k] = (old.key, v) } else { storage[k] = (original, v); order.append(k) }
        } else if storage.removeValue(forKey: k) != nil {
            order.removeAll { $0 == k }
        }
    }
}

/// A one-shot iterator over precomputed items (Jinja's generator-returning filters, evaluated eagerly).
final class JinjaIterator {
    let typeName: String
    /// The generator function's name, shown when the iterator is printed (Python also shows an address).
    let producer: String
    private let items: [JinjaValue]
    private var position = 0

    init(_ items: [JinjaValue], typeName: String = "generator", producer: String) {
        self.items = items
        self.typeName = typeName
        self.producer = producer
    }

    func next() -> JinjaValue? {
        guard position < items.count else { return nil }
        position += 1
        return items[position - 1]
    }

    func drain() -> [JinjaValue] {
        let rest = Array(items[position...])
        position = items.count
        return rest
    }
}

/// `namespace(...)`: the one mutable object templates can write into from inside loops.
final class JinjaNamespace {
    var attrs: JinjaDict
    init(_ attrs: JinjaDict) { self.attrs = attrs }
}

/// Keyword arguments in call order.
typealias JinjaKwargs = [(name: String, value: JinjaValue)]

/// A callable: a global (`range`, `namespace`, `raise_exception`…), a bound method, or a macro.
final class JinjaFunction {
    let name: String
    let body: (_ args: [JinjaValue], _ kwargs: JinjaKwargs) throws -> JinjaValue
    init(_ name: String, _ body: @escaping (_ args: [JinjaValue], _ kwargs: JinjaKwargs) throws -> JinjaValue) {
        self.name = name
        self.body = body
    }
}

/// A failure inside an evaluation step that does not know its template position yet; the interpreter
/// attaches the line:column of the node being evaluated.
enum JinjaFailure: Error {
    /// A Python TypeError / ValueError / UndefinedError equivalent.
    case type(String)
    /// A construct (method, argument form) this interpreter does not implement.
    case unsupported(String)
    /// `raise_exception(message)` was called.
    case raised(String)
    /// A bound of TemplateLimits was exceeded.
    case limit(String)
}
