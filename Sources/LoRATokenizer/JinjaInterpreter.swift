// JinjaInterpreter: executes a parsed template against a scope chain, with Jinja 3.1's scoping (a loop
// iteration and a macro call get their own scope; `if` does not) and Python operator semantics.
import Foundation

/// One level of variables. Lookups walk to the parent; assignments always land in the innermost scope.
final class JinjaScope {
    var vars: [String: JinjaValue] = [:]
    let parent: JinjaScope?
    init(parent: JinjaScope?) { self.parent = parent }

    func lookup(_ name: String) -> JinjaValue? {
        var s: JinjaScope? = self
        while let c = s {
            if let v = c.vars[name] { return v }
            s = c.parent
        }
        return nil
    }
}

final class JinjaInterpreter {
    enum Flow { case normal, breakLoop, continueLoop }

    let templateName: String
    /// Scopes that hold macros (macro → scope → macro cycles), cleared when rendering ends.
    private var macroScopes: [JinjaScope] = []
    /// Macro calls in progress (TemplateLimits.maxCallDepth), and the work units spent so far (maxWork), which
    /// the whole-value walks of JinjaValue charge too.
    private var callDepth = 0
    private let budget: RenderBudget

    init(templateName: String, maxWork: Int = TemplateLimits.maxWork) {
        self.templateName = templateName
        self.budget = RenderBudget(max: maxWork)
    }

    func render(_ body: [JinjaStmt], root: JinjaScope) throws -> String {
        defer {
            for s in macroScopes { s.vars = [:] }
            // Namespaces can hold one another in chains of any length; emptied one by one, none is released
            // recursively.
            for n in budget.namespaces { n.attrs = JinjaDict() }
            budget.namespaces = []
        }
        return try RenderBudget.$current.withValue(budget) {
            var out = ""
            _ = try exec(body, root, &out)
            return out
        }
    }

    /// Attaches a template position to a position-less failure.
    func located(_ f: JinjaFailure, _ pos: JinjaPos) -> ChatTemplateError {
        switch f {
        case .type(let m): return .render(template: templateName, line: pos.line, column: pos.column, message: m)
        case .unsupported(let m): return .unsupported(template: templateName, line: pos.line, column: pos.column, construct: m)
        case .raised(let m): return .raised(template: templateName, line: pos.line, column: pos.column, message: m)
        case .limit(let m): return .limit(template: templateName, line: pos.line, column: pos.column, message: m)
        }
    }

    private func at<T>(_ pos: JinjaPos, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let f as JinjaFailure { throw located(f, pos) }
    }

    // MARK: Limits

    /// Spends `units` of the render's work budget.
    private func spend(_ units: Int) throws {
        budget.used += units
        if let f = budget.failure() { throw f }
    }

    /// Fails when a value the template built nests deeper than TemplateLimits.maxValueDepth (the check walks it
    /// under the budget), or when an operation's whole-value walk spent the budget.
    private func checkNesting(_ v: JinjaValue, _ pos: JinjaPos) throws -> JinjaValue {
        if v.isContainer && JinjaValue.nesting(v, budget) > TemplateLimits.maxValueDepth { budget.tooDeep = true }
        if let f = budget.failure() { throw located(f, pos) }
        return v
    }

    /// Work units of handling `v`: its bytes (8 per list item) over TemplateLimits.bytesPerUnit.
    private static func units(_ v: JinjaValue) -> Int {
        switch v {
        case .string(let s), .markup(let s): return s.utf8.count / TemplateLimits.bytesPerUnit
        case .array(let a), .tuple(let a): return a.count * 8 / TemplateLimits.bytesPerUnit
        case .object(let o): return o.count * 16 / TemplateLimits.bytesPerUnit
        default: return 0
        }
    }

    /// Charges the work of an operation on `inputs` and checks the size of its `result`.
    /// `builds`: the result may be a new container holding the inputs (a filter's or a call's), so its nesting
    /// is checked; a part of an input (getattr, getitem, slice) cannot nest deeper than the input.
    private func charged(_ result: JinjaValue, _ inputs: [JinjaValue], _ pos: JinjaPos, builds: Bool = false) throws -> JinjaValue {
        var u = JinjaInterpreter.units(result)
        for v in inputs { u += JinjaInterpreter.units(v) }
        try at(pos) {
            budget.used += u
            if let f = budget.failure() { throw f }
            if case .string(let s) = result { try TemplateLimits.checkString(s.utf8.count, "a string") }
        }
        return builds ? try checkNesting(result, pos) : result
    }

    /// Appends to a render buffer within TemplateLimits.maxStringBytes.
    private func append(_ s: String, _ out: inout String, _ pos: JinjaPos) throws {
        try at(pos) {
            if let f = budget.failure() { throw f }  // spent by the repr that made `s`
            try TemplateLimits.checkString(out.utf8.count + s.utf8.count, "the rendered text")
        }
        out += s
    }

    // MARK: Statements

    func exec(_ stmts: [JinjaStmt], _ s: JinjaScope, _ out: inout String) throws -> Flow {
        for st in stmts {
            try at(st.pos) { try spend(1) }  // the expressions it evaluates were counted by eval
            switch st.kind {
            case .text(let t):
                try append(t, &out, st.pos)
            case .output(let e):
                try append(try eval(e, s).pyStr, &out, st.pos)
            case .ifChain(let branches, let otherwise):
                var chosen = otherwise
                for b in branches where try eval(b.test, s).truthy {
                    chosen = b.body
                    break
                }
                let flow = try exec(chosen, s, &out)
                if flow != .normal { return flow }
            case .forLoop(let target, let iterExpr, let filter, let body, let otherwise, let usesLoop):
                let flow = try execFor(target, iterExpr, filter, body, otherwise, usesLoop, s, &out, st.pos)
                if flow != .normal { return flow }
            case .set(let target, let e):
                let v = try eval(e, s)
                try at(st.pos) { try assign(target, v, s) }
            case .setBlock(let target, let filters, let body):
                var buf = ""
                _ = try exec(body, JinjaScope(parent: s), &buf)
                var v = JinjaValue.string(buf)
                for f in filters {
                    let (args, kwargs) = try evalArgs(f.args, s)
                    v = try charged(try at(f.pos) { try JinjaFilters.apply(f.name, v, args, kwargs, self) }, [v] + args, f.pos)
                }
                try at(st.pos) { try assign(target, v, s) }
            case .filterBlock(let filters, let body):
                var buf = ""
                _ = try exec(body, JinjaScope(parent: s), &buf)
                var v = JinjaValue.string(buf)
                for f in filters {
                    let (args, kwargs) = try evalArgs(f.args, s)
                    v = try charged(try at(f.pos) { try JinjaFilters.apply(f.name, v, args, kwargs, self) }, [v] + args, f.pos)
                }
                try append(v.pyStr, &out, st.pos)
            case .macro(let name, let params, let body):
                s.vars[name] = makeMacro(name, params, body, s)
                macroScopes.append(s)
            case .with(let assignments, let body):
                let inner = JinjaScope(parent: s)
                for a in assignments {
                    let v = try eval(a.value, s)
                    try at(st.pos) { try assign(a.target, v, inner) }
                }
                let flow = try exec(body, inner, &out)
                if flow != .normal { return flow }
            case .generation(let body):
                let flow = try exec(body, s, &out)
                if flow != .normal { return flow }
            case .breakLoop:
                return .breakLoop
            case .continueLoop:
                return .continueLoop
            }
        }
        return .normal
    }

    private func execFor(_ target: JinjaTarget, _ iterExpr: JinjaExpr, _ filter: JinjaExpr?, _ body: [JinjaStmt],
                         _ otherwise: [JinjaStmt], _ usesLoop: Bool, _ s: JinjaScope, _ out: inout String, _ pos: JinjaPos) throws -> Flow {
        let seq = try eval(iterExpr, s)
        var items = try at(iterExpr.pos) { try JinjaOps.iterate(seq) }
        if let f = filter {
            items = try items.filter { item in
                let tmp = JinjaScope(parent: s)
                try at(pos) { try assign(target, item, tmp) }
                return try eval(f, tmp).truthy
            }
        }
        if items.isEmpty {
            return try exec(otherwise, JinjaScope(parent: s), &out)
        }
        let n = items.count
        for (i, item) in items.enumerated() {
            try at(pos) { try spend(1) }
            let scope = JinjaScope(parent: s)
            try at(pos) { try assign(target, item, scope) }
            if usesLoop { scope.vars["loop"] = JinjaInterpreter.loopObject(index0: i, items: items, count: n) }
            if try exec(body, scope, &out) == .breakLoop { break }
        }
        return .normal
    }

    /// Jinja's `loop` variable for one iteration.
    private static func loopObject(index0 i: Int, items: [JinjaValue], count n: Int) -> JinjaValue {
        var d = JinjaDict()
        d["index"] = .int(Int64(i + 1))
        d["index0"] = .int(Int64(i))
        d["revindex"] = .int(Int64(n - i))
        d["revindex0"] = .int(Int64(n - i - 1))
        d["first"] = .bool(i == 0)
        d["last"] = .bool(i == n - 1)
        d["length"] = .int(Int64(n))
        d["depth"] = .int(1)
        d["depth0"] = .int(0)
        d["previtem"] = i > 0 ? items[i - 1] : .undefined(hint: "there is no previous item")
        d["nextitem"] = i < n - 1 ? items[i + 1] : .undefined(hint: "there is no next item")
        d["cycle"] = .function(JinjaFunction("loop.cycle") { args, _ in
            guard !args.isEmpty else { throw JinjaFailure.type("no items for cycling given") }
            return args[i % args.count]
        })
        return .object(d)
    }

    private func assign(_ target: JinjaTarget, _ v: JinjaValue, _ s: JinjaScope) throws {
        switch target {
        case .name(let n):
            s.vars[n] = v
        case .tuple(let names):
            let parts = try JinjaOps.iterate(v)
            if parts.count < names.count {
                throw JinjaFailure.type("not enough values to unpack (expected \(names.count), got \(parts.count))")
            }
            if parts.count > names.count { throw JinjaFailure.type("too many values to unpack (expected \(names.count))") }
            for (n, p) in zip(names, parts) { s.vars[n] = p }
        case .namespaceAttr(let ns, let attr):
            guard case .namespace(let obj)? = s.lookup(ns) else {
                throw JinjaFailure.type("cannot assign attribute on non-namespace object '\(ns)'")
            }
            if attr.hasPrefix("_") {
                throw JinjaFailure.type("Chat templates cannot store underscore-prefixed attributes on a namespace, but got '\(attr)'. Please rename the attribute.")
            }
            obj.attrs[attr] = v  // v was built by checked operations; namespaces are emptied when the render ends
        }
    }

    private func makeMacro(_ name: String, _ params: [(name: String, defaultValue: JinjaExpr?)], _ body: [JinjaStmt],
                           _ defining: JinjaScope) -> JinjaValue {
        .function(JinjaFunction(name) { [unowned self] args, kwargs in
            self.callDepth += 1
            defer { self.callDepth -= 1 }
            if self.callDepth > TemplateLimits.maxCallDepth {
                throw TemplateLimits.exceeded("macro '\(name)' called with more than \(TemplateLimits.maxCallDepth) macro calls in progress (a macro that calls itself without end?)",
                                              "maxCallDepth", TemplateLimits.maxCallDepth)
            }
            try self.spend(1)
            if args.count > params.count {
                throw JinjaFailure.type("macro '\(name)' takes not more than \(params.count) argument(s)")
            }
            for kw in kwargs where !params.contains(where: { $0.name == kw.name }) {
                throw JinjaFailure.type("macro '\(name)' takes no keyword argument '\(kw.name)'")
            }
            let scope = JinjaScope(parent: defining)
            for (i, p) in params.enumerated() {
                if i < args.count {
                    scope.vars[p.name] = args[i]
                } else if let kw = kwargs.last(where: { $0.name == p.name }) {
                    scope.vars[p.name] = kw.value
                } else if let d = p.defaultValue {
                    scope.vars[p.name] = try self.eval(d, scope)
                } else {
                    scope.vars[p.name] = .undefined(hint: "parameter '\(p.name)' was not provided")
                }
            }
            var buf = ""
            _ = try self.exec(body, scope, &buf)
            return .string(buf)
        })
    }

    // MARK: Expressions

    func evalArgs(_ a: JinjaArgs, _ s: JinjaScope) throws -> ([JinjaValue], JinjaKwargs) {
        (try a.positional.map { try eval($0, s) }, try a.keyword.map { ($0.name, try eval($0.value, s)) })
    }

    func eval(_ e: JinjaExpr, _ s: JinjaScope) throws -> JinjaValue {
        budget.used += 1  // checked by the statement that evaluates it, or by the next charged operation
        switch e.kind {
        case .const(let c):
            return c.value
        case .name(let n):
            return s.lookup(n) ?? .undefinedName(n)
        case .list(let items):
            return try checkNesting(.array(try items.map { try eval($0, s) }), e.pos)
        case .tuple(let items):
            return try checkNesting(.tuple(try items.map { try eval($0, s) }), e.pos)
        case .dict(let items):
            var d = JinjaDict()
            for item in items {
                let k = try eval(item.key, s), v = try eval(item.value, s)
                try at(item.key.pos) { try d.insert(k, v) }
            }
            return try checkNesting(.object(d), e.pos)
        case .getattr(let obj, let name):
            let o = try eval(obj, s)
            return try charged(try at(e.pos) { try JinjaOps.getattr(o, name) }, [o], e.pos)
        case .getitem(let obj, let key):
            let o = try eval(obj, s), k = try eval(key, s)
            return try charged(try at(e.pos) { try JinjaOps.getitem(o, k) }, [o], e.pos)
        case .slice(let obj, let start, let stop, let step):
            let o = try eval(obj, s)
            let a = try start.map { try eval($0, s) }, b = try stop.map { try eval($0, s) }, c = try step.map { try eval($0, s) }
            return try charged(try at(e.pos) { try JinjaOps.slice(o, a, b, c) }, [o], e.pos)
        case .call(let callee, let args):
            let f = try eval(callee, s)
            let (pos, kw) = try evalArgs(args, s)
            return try charged(try at(e.pos) { try JinjaOps.call(f, pos, kw) }, pos + kw.map(\.value), e.pos, builds: true)
        case .filter(let subject, let name, let args):
            let v = try eval(subject, s)
            let (pos, kw) = try evalArgs(args, s)
            return try charged(try at(e.pos) { try JinjaFilters.apply(name, v, pos, kw, self) }, [v] + pos + kw.map(\.value), e.pos, builds: true)
        case .test(let subject, let name, let args):
            let v = try eval(subject, s)
            let (pos, kw) = try evalArgs(args, s)
            _ = try charged(.none, [v] + pos, e.pos)
            let r = try at(e.pos) { try JinjaTests.apply(name, v, pos, kw) }
            if let f = budget.failure() { throw located(f, e.pos) }  // spent by a whole-value comparison
            return .bool(r)
        case .not(let x):
            return .bool(!(try eval(x, s).truthy))
        case .neg(let x):
            let v = try eval(x, s)
            return try at(e.pos) { try JinjaOps.negate(v) }
        case .pos(let x):
            let v = try eval(x, s)
            return try at(e.pos) { try JinjaOps.unaryPlus(v) }
        case .binary(let op, let l, let r):
            let a = try eval(l, s), b = try eval(r, s)
            return try charged(try at(e.pos) { try JinjaOps.binary(op, a, b) }, [a, b], e.pos)
        case .and(let l, let r):
            let a = try eval(l, s)
            return a.truthy ? try eval(r, s) : a
        case .or(let l, let r):
            let a = try eval(l, s)
            return a.truthy ? a : try eval(r, s)
        case .compare(let first, let ops):
            var left = try eval(first, s)
            for o in ops {
                let right = try eval(o.rhs, s)
                _ = try charged(.none, [left, right], o.rhs.pos)
                let holds = try at(o.rhs.pos, { try JinjaOps.compare(o.op, left, right) })
                if let f = budget.failure() { throw located(f, o.rhs.pos) }  // spent by a whole-value comparison
                guard holds else { return .bool(false) }
                left = right
            }
            return .bool(true)
        case .conditional(let test, let then, let otherwise):
            if try eval(test, s).truthy { return try eval(then, s) }
            if let o = otherwise { return try eval(o, s) }
            return .undefined(hint: "the inline if-expression on line \(e.pos.line) evaluated to false and no else section was defined.")
        }
    }
}
