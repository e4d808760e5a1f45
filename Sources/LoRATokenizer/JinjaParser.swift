// JinjaParser: recursive descent over JinjaLexer tokens, following Jinja 3.1's `parser.py` rule for rule
// (operator precedence, `is` tests, filters, tuples, slices, for/if/set/macro/with, loop controls).
import Foundation

struct JinjaParser {
    private var tokens: [JinjaToken]
    private(set) var i = 0
    private var loopDepth = 0
    /// Open block tags, innermost last, for "never closed" / "unexpected end tag" messages.
    private var open: [(tag: String, pos: JinjaPos, ends: [String])] = []
    /// Expression rules being parsed inside one another (the parser's own recursion).
    var depth = 0

    init(tokens: [JinjaToken]) { self.tokens = tokens }

    // MARK: Token stream

    var current: JinjaToken { tokens[i] }
    func look(_ n: Int = 1) -> JinjaToken { tokens[min(i + n, tokens.count - 1)] }
    @discardableResult mutating func next() -> JinjaToken {
        let t = tokens[i]
        if i < tokens.count - 1 { i += 1 }
        return t
    }

    func isOp(_ o: String, _ t: JinjaToken? = nil) -> Bool { (t ?? current).kind == .op(o) }
    func isName(_ n: String, _ t: JinjaToken? = nil) -> Bool { (t ?? current).kind == .name(n) }
    mutating func skipOp(_ o: String) -> Bool { if isOp(o) { next(); return true }; return false }
    mutating func skipName(_ n: String) -> Bool { if isName(n) { next(); return true }; return false }

    func fail(_ message: String, _ t: JinjaToken? = nil) -> JinjaSyntaxFailure {
        JinjaSyntaxFailure(pos: (t ?? current).pos, message: message)
    }
    func unsupported(_ construct: String, _ pos: JinjaPos) -> JinjaSyntaxFailure {
        JinjaSyntaxFailure(pos: pos, message: construct, unsupported: true)
    }

    /// Fails when `levels` of expressions inside the open blocks exceed TemplateLimits.maxNesting.
    func checkNesting(_ levels: Int) throws {
        guard levels + open.count > TemplateLimits.maxNesting else { return }
        let m = TemplateLimits.message("blocks and expressions nested more than \(TemplateLimits.maxNesting) deep", "maxNesting", TemplateLimits.maxNesting)
        throw JinjaSyntaxFailure(pos: current.pos, message: m, limit: true)
    }

    /// One more level of the parser's recursion (undone by the caller's `defer { depth -= 1 }`).
    mutating func enter() throws {
        depth += 1
        try checkNesting(depth)
    }

    mutating func expectOp(_ o: String) throws {
        guard skipOp(o) else { throw fail("expected '\(o)', got \(current.describe)") }
    }
    mutating func expectName() throws -> String {
        guard case .name(let n) = current.kind else { throw fail("expected a name, got \(current.describe)") }
        next()
        return n
    }
    private mutating func expectBlockEnd() throws {
        guard current.kind == .blockEnd else { throw fail("expected end of statement block ('%}'), got \(current.describe)") }
        next()
    }

    // MARK: Statements

    mutating func parseTemplate() throws -> [JinjaStmt] {
        try subparse(ends: [])
    }

    /// Parses until a block tag named in `ends` (left as the current token) or the end of the template.
    private mutating func subparse(ends: [String]) throws -> [JinjaStmt] {
        var body: [JinjaStmt] = []
        while true {
            let t = current
            switch t.kind {
            case .data(let s):
                next()
                body.append(JinjaStmt(kind: .text(s), pos: t.pos))
            case .varBegin:
                next()
                let e = try parseTuple()
                guard current.kind == .varEnd else { throw fail("expected end of print statement ('}}'), got \(current.describe)") }
                next()
                body.append(JinjaStmt(kind: .output(e), pos: e.pos))
            case .blockBegin:
                next()
                if case .name(let n) = current.kind, ends.contains(n) { return body }
                body.append(try parseStatement())
                try expectBlockEnd()
            case .eof:
                if let o = open.last {
                    throw JinjaSyntaxFailure(pos: o.pos, message: "unexpected end of template: '{% \(o.tag) %}' is never closed (expected \(o.ends.map { "'{% \($0) %}'" }.joined(separator: " or ")))")
                }
                return body
            default:
                throw fail("unexpected \(t.describe)")
            }
        }
    }

    /// After a statement header: `%}`, the body up to one of `ends`, optionally consuming that end tag's name.
    private mutating func parseBody(_ tag: String, _ pos: JinjaPos, ends: [String], dropNeedle: Bool = false) throws -> [JinjaStmt] {
        _ = skipOp(":")
        try expectBlockEnd()
        try checkNesting(depth + 1)
        open.append((tag, pos, ends))
        let body = try subparse(ends: ends)
        open.removeLast()
        if dropNeedle { next() }
        return body
    }

    private static let unsupportedTags: Set<String> = ["block", "extends", "include", "import", "from", "call", "autoescape", "do", "trans", "pluralize", "debug"]
    private static let endTags: Set<String> = ["endif", "elif", "else", "endfor", "endset", "endmacro", "endwith", "endgeneration", "endraw", "endblock", "endfilter", "endcall"]

    private mutating func parseStatement() throws -> JinjaStmt {
        let t = current
        guard case .name(let tag) = t.kind else { throw fail("expected a tag name after '{%', got \(t.describe)") }
        switch tag {
        case "if": return try parseIf()
        case "for": return try parseFor()
        case "set": return try parseSet()
        case "macro": return try parseMacro()
        case "with": return try parseWith()
        case "print":
            next()
            let e = try parseTuple()
            return JinjaStmt(kind: .output(e), pos: t.pos)
        case "break", "continue":
            next()
            guard loopDepth > 0 else { throw fail("'{% \(tag) %}' outside of a loop", t) }
            return JinjaStmt(kind: tag == "break" ? .breakLoop : .continueLoop, pos: t.pos)
        case "filter":
            next()
            var filters: [(name: String, args: JinjaArgs, pos: JinjaPos)] = []
            repeat {
                let (name, args, pos) = try parseFilterCall()
                filters.append((name, args, pos))
            } while skipOp("|")
            let body = try parseBody(tag, t.pos, ends: ["endfilter"], dropNeedle: true)
            return JinjaStmt(kind: .filterBlock(filters: filters, body: body), pos: t.pos)
        case "generation":
            next()
            let body = try parseBody(tag, t.pos, ends: ["endgeneration"], dropNeedle: true)
            return JinjaStmt(kind: .generation(body), pos: t.pos)
        default:
            if JinjaParser.unsupportedTags.contains(tag) { throw unsupported("tag '{% \(tag) %}'", t.pos) }
            if JinjaParser.endTags.contains(tag) {
                if let o = open.last {
                    throw fail("unexpected '{% \(tag) %}' (expected \(o.ends.map { "'{% \($0) %}'" }.joined(separator: " or ")) to close '{% \(o.tag) %}' at \(o.pos.line):\(o.pos.column))", t)
                }
                throw fail("unexpected '{% \(tag) %}' with no open block", t)
            }
            throw fail("unknown tag '{% \(tag) %}'", t)
        }
    }

    private mutating func parseIf() throws -> JinjaStmt {
        let start = next().pos
        var branches: [(test: JinjaExpr, body: [JinjaStmt])] = []
        var otherwise: [JinjaStmt] = []
        var tag = "if", tagPos = start
        while true {
            let test = try parseTuple(withCondexpr: false)
            let body = try parseBody(tag, tagPos, ends: ["elif", "else", "endif"])
            branches.append((test, body))
            let end = next()
            if isName("elif", end) { tag = "elif"; tagPos = end.pos; continue }
            if isName("else", end) { otherwise = try parseBody("else", end.pos, ends: ["endif"], dropNeedle: true) }
            break
        }
        return JinjaStmt(kind: .ifChain(branches, otherwise: otherwise), pos: start)
    }

    private mutating func parseFor() throws -> JinjaStmt {
        let start = next().pos
        let target = try parseAssignTarget(extraEnds: ["in"])
        guard skipName("in") else { throw fail("expected 'in' in for loop, got \(current.describe)") }
        let iter = try parseTuple(withCondexpr: false, extraEnds: ["recursive"])
        var filter: JinjaExpr? = nil
        if skipName("if") { filter = try parseExpression() }
        if isName("recursive") { throw unsupported("recursive for loops", current.pos) }
        loopDepth += 1
        let bodyStart = i
        let body = try parseBody("for", start, ends: ["endfor", "else"])
        let bodyEnd = i
        loopDepth -= 1
        var otherwise: [JinjaStmt] = []
        let end = next()
        if isName("else", end) { otherwise = try parseBody("else", end.pos, ends: ["endfor"], dropNeedle: true) }
        let usesLoop = tokens[bodyStart..<bodyEnd].contains { $0.kind == .name("loop") }
        return JinjaStmt(kind: .forLoop(target: target, iter: iter, filter: filter, body: body, otherwise: otherwise, usesLoop: usesLoop), pos: start)
    }

    private mutating func parseSet() throws -> JinjaStmt {
        let start = next().pos
        let target: JinjaTarget
        if case .name(let ns) = current.kind, isOp(".", look()) {
            next(); next()
            target = .namespaceAttr(ns, try expectName())
        } else {
            target = try parseAssignTarget(extraEnds: [])
        }
        if skipOp("=") {
            return JinjaStmt(kind: .set(target, try parseTuple()), pos: start)
        }
        var filters: [(name: String, args: JinjaArgs, pos: JinjaPos)] = []
        while isOp("|") {
            next()
            let (name, args, pos) = try parseFilterCall()
            filters.append((name, args, pos))
        }
        let body = try parseBody("set", start, ends: ["endset"], dropNeedle: true)
        return JinjaStmt(kind: .setBlock(target, filters: filters, body: body), pos: start)
    }

    private mutating func parseMacro() throws -> JinjaStmt {
        let start = next().pos
        let name = try expectName()
        try expectOp("(")
        var params: [(name: String, defaultValue: JinjaExpr?)] = []
        while !isOp(")") {
            if !params.isEmpty { try expectOp(",") }
            let p = try expectName()
            if skipOp("=") {
                params.append((p, try parseExpression()))
            } else {
                if params.contains(where: { $0.defaultValue != nil }) { throw fail("non-default argument follows default argument") }
                params.append((p, nil))
            }
        }
        try expectOp(")")
        let saved = loopDepth
        loopDepth = 0
        let body = try parseBody("macro", start, ends: ["endmacro"], dropNeedle: true)
        loopDepth = saved
        return JinjaStmt(kind: .macro(name: name, params: params, body: body), pos: start)
    }

    private mutating func parseWith() throws -> JinjaStmt {
        let start = next().pos
        var assignments: [(target: JinjaTarget, value: JinjaExpr)] = []
        while current.kind != .blockEnd {
            if !assignments.isEmpty { try expectOp(",") }
            let target = try parseAssignTarget(extraEnds: [])
            try expectOp("=")
            assignments.append((target, try parseExpression()))
        }
        let body = try parseBody("with", start, ends: ["endwith"], dropNeedle: true)
        return JinjaStmt(kind: .with(assignments, body: body), pos: start)
    }

    /// A name or a comma-separated tuple of names (optionally parenthesised).
    mutating func parseAssignTarget(extraEnds: [String]) throws -> JinjaTarget {
        let parens = skipOp("(")
        var names: [String] = []
        var comma = false
        while true {
            let t = current
            let n = try expectName()
            if ["true", "false", "True", "False", "none", "None"].contains(n) { throw fail("can't assign to '\(n)'", t) }
            names.append(n)
            guard skipOp(",") else { break }
            comma = true
            if current.kind == .blockEnd || isOp(")") || extraEnds.contains(where: { isName($0) }) { break }
        }
        if parens { try expectOp(")") }
        return comma || parens && names.count > 1 ? .tuple(names) : .name(names[0])
    }
}
