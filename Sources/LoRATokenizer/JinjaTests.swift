// JinjaTests: Jinja 3.1's built-in tests (`tests.py`): `x is defined`, `is none`, `is string`, `is divisibleby 3`…
// with Python's type rules (bool is a number but not an integer; Undefined is iterable).
import Foundation

enum JinjaTests {
    static let supported: Set<String> = [
        "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "even", "false", "float", "ge", "greaterthan",
        "gt", "in", "integer", "iterable", "le", "lessthan", "lower", "lt", "mapping", "ne", "none", "number", "odd",
        "sameas", "sequence", "string", "true", "undefined", "upper", "==", "!=", "<", "<=", ">", ">=",
    ]
    static let jinjaBuiltins: Set<String> = ["escaped", "filter", "test"]

    static func apply(_ name: String, _ v: JinjaValue, _ args: [JinjaValue], _ kwargs: JinjaKwargs) throws -> Bool {
        let arity: Int
        switch name {
        case "divisibleby", "eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">",
             "ge", ">=", "in", "sameas":
            arity = 1
        default: arity = 0
        }
        let a = try JinjaMethods.bind("test '\(name)'", args, kwargs, arity == 1 ? ["other"] : [])
        if arity == 1 && a[0] == nil { throw JinjaFailure.type("test '\(name)' needs an argument") }
        let other = a.first ?? nil
        switch name {
        case "defined": return !v.isUndefined
        case "undefined": return v.isUndefined
        case "none": return v.isNone
        case "boolean": if case .bool = v { return true }; return false
        case "true": if case .bool(true) = v { return true }; return false
        case "false": if case .bool(false) = v { return true }; return false
        case "integer": if case .int = v { return true }; return false
        case "float": if case .double = v { return true }; return false
        case "number": return v.number != nil
        case "string": return v.stringLike != nil
        case "mapping": if case .object = v { return true }; return false
        case "callable": if case .function = v { return true }; return false
        case "iterable", "sequence":
            switch v {
            case .string, .markup, .array, .tuple, .object, .undefined: return true
            case .iterator: return name == "iterable"
            default: return false
            }
        case "odd", "even":
            let r = try JinjaOps.binary("%", v, .int(2))
            return JinjaValue.pyEqual(r, .int(name == "odd" ? 1 : 0))
        case "divisibleby":
            return JinjaValue.pyEqual(try JinjaOps.binary("%", v, other!), .int(0))
        case "lower", "upper":
            return JinjaMethods.casedCheck(v.pyStr, lower: name == "lower")
        case "eq", "equalto", "==": return try JinjaOps.compare("==", v, other!)
        case "ne", "!=": return try JinjaOps.compare("!=", v, other!)
        case "lt", "lessthan", "<": return try JinjaOps.compare("<", v, other!)
        case "le", "<=": return try JinjaOps.compare("<=", v, other!)
        case "gt", "greaterthan", ">": return try JinjaOps.compare(">", v, other!)
        case "ge", ">=": return try JinjaOps.compare(">=", v, other!)
        case "in": return try JinjaOps.contains(other!, v)
        case "sameas":
            switch (v, other!) {
            case (.none, .none): return true
            case (.bool(let x), .bool(let y)): return x == y
            case (.namespace(let x), .namespace(let y)): return x === y
            case (.function(let x), .function(let y)): return x === y
            case (.int(let x), .int(let y)): return x == y && (-5...256).contains(x)  // CPython's small-int cache
            default: return false
            }
        default:
            if jinjaBuiltins.contains(name) { throw JinjaFailure.unsupported("test '\(name)' (a Jinja built-in this interpreter does not implement)") }
            throw JinjaFailure.type("No test named '\(name)' found.")
        }
    }
}
