// JinjaAST: the parsed form of a template: statements and expressions, each with the line:column
// it came from so runtime errors can point at the construct (node set of Jinja 3.1's `nodes.py`, subset).

/// A literal constant in the template source.
enum JinjaConst: Sendable {
    case none
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)

    var value: JinjaValue {
        switch self {
        case .none: return .none
        case .bool(let b): return .bool(b)
        case .int(let i): return .int(i)
        case .double(let d): return .double(d)
        case .string(let s): return .string(s)
        }
    }
}

struct JinjaArgs: Sendable {
    var positional: [JinjaExpr] = []
    var keyword: [(name: String, value: JinjaExpr)] = []
}

struct JinjaExpr: Sendable {
    indirect enum Kind: Sendable {
        case const(JinjaConst)
        case name(String)
        case list([JinjaExpr])
        case tuple([JinjaExpr])
        case dict([(key: JinjaExpr, value: JinjaExpr)])
        case getattr(JinjaExpr, String)
        case getitem(JinjaExpr, JinjaExpr)
        case slice(JinjaExpr, start: JinjaExpr?, stop: JinjaExpr?, step: JinjaExpr?)
        case call(JinjaExpr, JinjaArgs)
        case filter(JinjaExpr, name: String, JinjaArgs)
        case test(JinjaExpr, name: String, JinjaArgs)
        case not(JinjaExpr)
        case neg(JinjaExpr)
        case pos(JinjaExpr)
        case binary(String, JinjaExpr, JinjaExpr)  // + - * / // % ** ~
        case and(JinjaExpr, JinjaExpr)
        case or(JinjaExpr, JinjaExpr)
        case compare(JinjaExpr, [(op: String, rhs: JinjaExpr)])  // == != < <= > >= in notin
        case conditional(test: JinjaExpr, then: JinjaExpr, otherwise: JinjaExpr?)
    }
    let kind: Kind
    let pos: JinjaPos
    /// Levels of expressions from this one down to its deepest leaf: how deep evaluating it recurses.
    let depth: Int

    init(kind: Kind, pos: JinjaPos) {
        self.kind = kind
        self.pos = pos
        depth = 1 + kind.children.reduce(0) { max($0, $1.depth) }
    }
}

extension JinjaExpr.Kind {
    /// The sub-expressions of a node.
    var children: [JinjaExpr] {
        switch self {
        case .const, .name: return []
        case .list(let xs), .tuple(let xs): return xs
        case .dict(let items): return items.flatMap { [$0.key, $0.value] }
        case .getattr(let x, _), .not(let x), .neg(let x), .pos(let x): return [x]
        case .getitem(let x, let y), .binary(_, let x, let y), .and(let x, let y), .or(let x, let y): return [x, y]
        case .slice(let x, let a, let b, let c): return [x] + [a, b, c].compactMap { $0 }
        case .call(let x, let args), .filter(let x, _, let args), .test(let x, _, let args):
            return [x] + args.positional + args.keyword.map(\.value)
        case .compare(let x, let ops): return [x] + ops.map(\.rhs)
        case .conditional(let t, let a, let b): return [t, a] + (b.map { [$0] } ?? [])
        }
    }
}

/// The left side of `set`, `for` and `with`.
enum JinjaTarget: Sendable {
    case name(String)
    case tuple([String])
    case namespaceAttr(String, String)  // ns.attr
}

struct JinjaStmt: Sendable {
    indirect enum Kind: Sendable {
        case text(String)
        case output(JinjaExpr)
        case ifChain([(test: JinjaExpr, body: [JinjaStmt])], otherwise: [JinjaStmt])
        /// `usesLoop`: whether the body mentions `loop` at all (the loop object is built only then).
        case forLoop(target: JinjaTarget, iter: JinjaExpr, filter: JinjaExpr?, body: [JinjaStmt], otherwise: [JinjaStmt], usesLoop: Bool)
        case set(JinjaTarget, JinjaExpr)
        case setBlock(JinjaTarget, filters: [(name: String, args: JinjaArgs, pos: JinjaPos)], body: [JinjaStmt])
        case macro(name: String, params: [(name: String, defaultValue: JinjaExpr?)], body: [JinjaStmt])
        case with([(target: JinjaTarget, value: JinjaExpr)], body: [JinjaStmt])
        /// `{% filter f | g(x) %}…{% endfilter %}`: the rendered body passed through filters.
        case filterBlock(filters: [(name: String, args: JinjaArgs, pos: JinjaPos)], body: [JinjaStmt])
        /// transformers' `{% generation %}` extension: renders its body unchanged.
        case generation([JinjaStmt])
        case breakLoop
        case continueLoop
    }
    let kind: Kind
    let pos: JinjaPos
}
