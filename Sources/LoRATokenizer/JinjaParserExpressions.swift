// JinjaParser+Expressions: Jinja 3.1's expression grammar (parser.py): conditional < or < and < not < compare
// < + - < ~ < * / // % < ** < unary < primary/postfix, then filters `|f`, tests `is t` and calls.
import Foundation

extension JinjaParser {
    /// A new node; a chain (`a + b + …`, `x.a.b…`, `x|f|g…`) deepens the tree without recursing here, so its depth is checked.
    private func node(_ k: JinjaExpr.Kind, _ pos: JinjaPos) throws -> JinjaExpr {
        let n = JinjaExpr(kind: k, pos: pos)
        try checkNesting(n.depth)
        return n
    }

    private func isTupleEnd(_ extraEnds: [String]) -> Bool {
        switch current.kind {
        case .varEnd, .blockEnd, .op(")"): return true
        default: return extraEnds.contains { isName($0) }
        }
    }

    mutating func parseTuple(withCondexpr: Bool = true, extraEnds: [String] = [], explicitParens: Bool = false) throws -> JinjaExpr {
        let start = current.pos
        var args: [JinjaExpr] = []
        var isTuple = false
        while true {
            if !args.isEmpty { try expectOp(",") }
            if isTupleEnd(extraEnds) { break }
            args.append(try parseExpression(withCondexpr: withCondexpr))
            if isOp(",") { isTuple = true } else { break }
        }
        if !isTuple {
            if let a = args.first { return a }
            if !explicitParens { throw fail("expected an expression, got \(current.describe)") }
        }
        return try node(.tuple(args), start)
    }

    mutating func parseExpression(withCondexpr: Bool = true) throws -> JinjaExpr {
        withCondexpr ? try parseCondexpr() : try parseOr()
    }

    private mutating func parseCondexpr() throws -> JinjaExpr {
        var expr = try parseOr()
        while isName("if") {
            let pos = next().pos
            let test = try parseOr()
            try enter()
            defer { depth -= 1 }
            let otherwise = skipName("else") ? try parseCondexpr() : nil
            expr = try node(.conditional(test: test, then: expr, otherwise: otherwise), pos)
        }
        return expr
    }

    private mutating func parseOr() throws -> JinjaExpr {
        var left = try parseAnd()
        while isName("or") {
            let pos = next().pos
            left = try node(.or(left, try parseAnd()), pos)
        }
        return left
    }

    private mutating func parseAnd() throws -> JinjaExpr {
        var left = try parseNot()
        while isName("and") {
            let pos = next().pos
            left = try node(.and(left, try parseNot()), pos)
        }
        return left
    }

    private mutating func parseNot() throws -> JinjaExpr {
        if isName("not") {
            try enter()
            defer { depth -= 1 }
            let pos = next().pos
            return try node(.not(try parseNot()), pos)
        }
        return try parseCompare()
    }

    private mutating func parseCompare() throws -> JinjaExpr {
        let start = current.pos
        let expr = try parseMath1()
        var ops: [(op: String, rhs: JinjaExpr)] = []
        while true {
            if case .op(let o) = current.kind, ["==", "!=", "<", "<=", ">", ">="].contains(o) {
                next()
                ops.append((o, try parseMath1()))
            } else if skipName("in") {
                ops.append(("in", try parseMath1()))
            } else if isName("not") && isName("in", look()) {
                next(); next()
                ops.append(("notin", try parseMath1()))
            } else {
                break
            }
        }
        return ops.isEmpty ? expr : try node(.compare(expr, ops), start)
    }

    private mutating func parseBinary(_ ops: [String], _ operand: (inout JinjaParser) throws -> JinjaExpr) throws -> JinjaExpr {
        var left = try operand(&self)
        while case .op(let o) = current.kind, ops.contains(o) {
            let pos = next().pos
            left = try node(.binary(o, left, try operand(&self)), pos)
        }
        return left
    }

    private mutating func parseMath1() throws -> JinjaExpr { try parseBinary(["+", "-"]) { try $0.parseConcat() } }
    private mutating func parseConcat() throws -> JinjaExpr { try parseBinary(["~"]) { try $0.parseMath2() } }
    private mutating func parseMath2() throws -> JinjaExpr { try parseBinary(["*", "/", "//", "%"]) { try $0.parsePow() } }
    private mutating func parsePow() throws -> JinjaExpr { try parseBinary(["**"]) { try $0.parseUnary() } }

    /// Every nested operand passes here: one level of the parser's recursion.
    private mutating func parseUnary(withFilter: Bool = true) throws -> JinjaExpr {
        try enter()
        defer { depth -= 1 }
        var n: JinjaExpr
        if isOp("-") {
            let pos = next().pos
            n = try node(.neg(try parseUnary(withFilter: false)), pos)
        } else if isOp("+") {
            let pos = next().pos
            n = try node(.pos(try parseUnary(withFilter: false)), pos)
        } else {
            n = try parsePrimary()
        }
        n = try parsePostfix(n)
        if withFilter { n = try parseFilterExpr(n) }
        return n
    }

    private mutating func parsePrimary() throws -> JinjaExpr {
        let t = current
        switch t.kind {
        case .name(let n):
            next()
            switch n {
            case "true", "True": return try node(.const(.bool(true)), t.pos)
            case "false", "False": return try node(.const(.bool(false)), t.pos)
            case "none", "None": return try node(.const(.none), t.pos)
            default: return try node(.name(n), t.pos)
            }
        case .string(var s):
            next()
            while case .string(let more) = current.kind { s += more; next() }
            return try node(.const(.string(s)), t.pos)
        case .int(let v): next(); return try node(.const(.int(v)), t.pos)
        case .float(let v): next(); return try node(.const(.double(v)), t.pos)
        case .op("("):
            next()
            let e = try parseTuple(explicitParens: true)
            try expectOp(")")
            return e
        case .op("["):
            next()
            var items: [JinjaExpr] = []
            while !isOp("]") {
                if !items.isEmpty { try expectOp(",") }
                if isOp("]") { break }
                items.append(try parseExpression())
            }
            try expectOp("]")
            return try node(.list(items), t.pos)
        case .op("{"):
            next()
            var items: [(key: JinjaExpr, value: JinjaExpr)] = []
            while !isOp("}") {
                if !items.isEmpty { try expectOp(",") }
                if isOp("}") { break }
                let k = try parseExpression()
                try expectOp(":")
                items.append((k, try parseExpression()))
            }
            try expectOp("}")
            return try node(.dict(items), t.pos)
        default:
            throw fail("unexpected \(t.describe)")
        }
    }

    private mutating func parsePostfix(_ start: JinjaExpr) throws -> JinjaExpr {
        var n = start
        while true {
            if isOp(".") || isOp("[") { n = try parseSubscript(n) } else if isOp("(") { n = try parseCall(n) } else { return n }
        }
    }

    private mutating func parseFilterExpr(_ start: JinjaExpr) throws -> JinjaExpr {
        var n = start
        while true {
            if isOp("|") {
                next()
                let (name, args, pos) = try parseFilterCall()
                n = try node(.filter(n, name: name, args), pos)
            } else if isName("is") {
                n = try parseTest(n)
            } else if isOp("(") {
                n = try parseCall(n)
            } else {
                return n
            }
        }
    }

    private mutating func parseSubscript(_ target: JinjaExpr) throws -> JinjaExpr {
        let t = next()
        if isOp(".", t) {
            let a = next()
            switch a.kind {
            case .name(let n): return try node(.getattr(target, n), a.pos)
            case .int(let v): return try node(.getitem(target, try node(.const(.int(v)), a.pos)), a.pos)
            default: throw fail("expected a name or number after '.', got \(a.describe)", a)
            }
        }
        // `[`: an index or a slice.
        var parts: [JinjaExpr?] = []
        if isOp(":") {
            parts.append(nil)
        } else {
            let e = try parseExpression()
            if isOp(",") { throw unsupported("tuple subscripts (x[a, b])", current.pos) }
            if !isOp(":") {
                try expectOp("]")
                return try node(.getitem(target, e), t.pos)
            }
            parts.append(e)
        }
        next()  // the first ':'
        if isOp(":") || isOp("]") { parts.append(nil) } else { parts.append(try parseExpression()) }
        if skipOp(":") {
            if isOp("]") { parts.append(nil) } else { parts.append(try parseExpression()) }
        } else {
            parts.append(nil)
        }
        try expectOp("]")
        return try node(.slice(target, start: parts[0], stop: parts[1], step: parts[2]), t.pos)
    }

    private mutating func parseCallArgs() throws -> JinjaArgs {
        try expectOp("(")
        var args = JinjaArgs()
        var first = true
        while !isOp(")") {
            if !first { try expectOp(",") }
            first = false
            if isOp(")") { break }
            if isOp("*") || isOp("**") { throw unsupported("*args / **kwargs in calls", current.pos) }
            if case .name(let n) = current.kind, isOp("=", look()) {
                next(); next()
                args.keyword.append((n, try parseExpression()))
            } else {
                if !args.keyword.isEmpty { throw fail("positional argument follows keyword argument") }
                args.positional.append(try parseExpression())
            }
        }
        try expectOp(")")
        return args
    }

    private mutating func parseCall(_ callee: JinjaExpr) throws -> JinjaExpr {
        let pos = current.pos
        return try node(.call(callee, try parseCallArgs()), pos)
    }

    /// `name[.name…][(args)]` after a `|`; the filter must be one this interpreter implements.
    mutating func parseFilterCall() throws -> (String, JinjaArgs, JinjaPos) {
        let t = current
        var name = try expectName()
        while skipOp(".") { name += "." + (try expectName()) }
        let args = isOp("(") ? try parseCallArgs() : JinjaArgs()
        return (name, args, t.pos)
    }

    private mutating func parseTest(_ subject: JinjaExpr) throws -> JinjaExpr {
        let isTok = next()
        let negated = skipName("not")
        let t = current
        var name = try expectName()
        while skipOp(".") { name += "." + (try expectName()) }
        var args = JinjaArgs()
        if isOp("(") {
            args = try parseCallArgs()
        } else {
            switch current.kind {
            case .name, .string, .int, .float, .op("("), .op("["), .op("{"):
                if isName("else") || isName("or") || isName("and") { break }
                if isName("is") { throw fail("you cannot chain multiple tests with 'is'") }
                args.positional = [try parsePostfix(try parsePrimary())]
            default: break
            }
        }
        let test = try node(.test(subject, name: name, args), t.pos)
        return negated ? try node(.not(test), isTok.pos) : test
    }

    // MARK: Filter and test names

    /// Jinja checks filter and test names when it compiles, except in "soft" frames (the test and branches
    /// of an `if`, and inline `a if b else c`), where an unknown name fails only if that code runs.
    static func validate(_ body: [JinjaStmt], soft: Bool) throws {
        for st in body {
            switch st.kind {
            case .text, .breakLoop, .continueLoop: break
            case .output(let e), .set(_, let e): try validate(e, soft: soft)
            case .ifChain(let branches, let otherwise):
                for b in branches {
                    try validate(b.test, soft: true)
                    try validate(b.body, soft: true)
                }
                try validate(otherwise, soft: true)
            case .forLoop(_, let iter, let filter, let loopBody, let otherwise, _):
                try validate(iter, soft: soft)
                if let f = filter { try validate(f, soft: false) }
                try validate(loopBody, soft: false)
                try validate(otherwise, soft: false)
            case .setBlock(_, let filters, let blockBody):
                for f in filters {
                    try validateName(f.name, filter: true, soft: soft, f.pos)
                    try validate(f.args, soft: soft)
                }
                try validate(blockBody, soft: false)
            case .macro(_, let params, let macroBody):
                for p in params { if let d = p.defaultValue { try validate(d, soft: false) } }
                try validate(macroBody, soft: false)
            case .with(let assignments, let withBody):
                for a in assignments { try validate(a.value, soft: soft) }
                try validate(withBody, soft: false)
            case .filterBlock(let filters, let blockBody):
                for f in filters {
                    try validateName(f.name, filter: true, soft: soft, f.pos)
                    try validate(f.args, soft: soft)
                }
                try validate(blockBody, soft: false)
            case .generation(let genBody):
                try validate(genBody, soft: false)
            }
        }
    }

    private static func validate(_ a: JinjaArgs, soft: Bool) throws {
        for e in a.positional { try validate(e, soft: soft) }
        for k in a.keyword { try validate(k.value, soft: soft) }
    }

    private static func validateName(_ name: String, filter: Bool, soft: Bool, _ pos: JinjaPos) throws {
        let kind = filter ? "filter" : "test"
        if filter ? JinjaFilters.supported.contains(name) : JinjaTests.supported.contains(name) { return }
        if filter ? JinjaFilters.jinjaBuiltins.contains(name) : JinjaTests.jinjaBuiltins.contains(name) {
            // A Jinja built-in we lack would render in transformers: refuse it up front, soft frame or not.
            throw JinjaSyntaxFailure(pos: pos, message: "\(kind) '\(name)' (a Jinja built-in this interpreter does not implement)", unsupported: true)
        }
        if !soft {
            throw JinjaSyntaxFailure(pos: pos, message: "\(kind) '\(name)' (no such \(kind) in Jinja or transformers)", unsupported: true)
        }
    }

    static func validate(_ e: JinjaExpr, soft: Bool) throws {
        switch e.kind {
        case .const, .name: break
        case .list(let items), .tuple(let items): for x in items { try validate(x, soft: soft) }
        case .dict(let items):
            for x in items {
                try validate(x.key, soft: soft)
                try validate(x.value, soft: soft)
            }
        case .getattr(let x, _), .not(let x), .neg(let x), .pos(let x): try validate(x, soft: soft)
        case .getitem(let x, let y), .binary(_, let x, let y), .and(let x, let y), .or(let x, let y):
            try validate(x, soft: soft)
            try validate(y, soft: soft)
        case .slice(let x, let a, let b, let c):
            try validate(x, soft: soft)
            for y in [a, b, c] { if let y = y { try validate(y, soft: soft) } }
        case .call(let x, let args):
            try validate(x, soft: soft)
            try validate(args, soft: soft)
        case .filter(let x, let name, let args), .test(let x, let name, let args):
            if case .filter = e.kind { try validateName(name, filter: true, soft: soft, e.pos) } else { try validateName(name, filter: false, soft: soft, e.pos) }
            try validate(x, soft: soft)
            try validate(args, soft: soft)
        case .compare(let x, let ops):
            try validate(x, soft: soft)
            for o in ops { try validate(o.rhs, soft: soft) }
        case .conditional(let test, let then, let otherwise):
            try validate(test, soft: true)
            try validate(then, soft: true)
            if let o = otherwise { try validate(o, soft: true) }
        }
    }
}
