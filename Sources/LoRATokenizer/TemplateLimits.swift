// TemplateLimits: the bounds a chat template is parsed and rendered under. transformers renders in Jinja's
// sandbox inside a Python process (recursion limit, MemoryError); here each bound is explicit and fails as
// ChatTemplateError.limit, naming it. All are far above what real templates and long conversations need.

package struct TemplateLimits {
    /// Macro calls in progress at once (a macro calling itself). Real templates nest a handful of levels.
    package static let maxCallDepth = 500
    /// Nesting of blocks and expressions in one template (`((…))`, `{% if %}` inside `{% if %}`, `a + b + …`):
    /// keeps the recursive parser, checker and interpreter far inside an 8 MB stack, debug builds included.
    package static let maxNesting = 200
    /// Bytes of the rendered text, and of any one string a template builds; checked before building it.
    static let maxStringBytes = 64 << 20
    /// Items of any one list a template builds (list repetition, iterating a string); checked before building it.
    static let maxListItems = 1 << 22
    /// Work units per render: one per statement executed, expression evaluated, loop iteration or macro call,
    /// and one per `bytesPerUnit` bytes of every string (8 bytes per item of every list) an operator, filter,
    /// test or method reads or returns. A 1,000-turn conversation through a real template takes well under 1%;
    /// the whole budget is about a second of a release build.
    package static let maxWork = 10_000_000
    static let bytesPerUnit = 64

    /// The failure for a bound `what` exceeded (`limit` names the constant above).
    static func exceeded(_ what: String, _ limit: String, _ value: Int) -> JinjaFailure {
        .limit(message(what, limit, value))
    }

    static func message(_ what: String, _ limit: String, _ value: Int) -> String {
        "\(what) (TemplateLimits.\(limit) = \(value)); fix the template (runaway recursion, loop or repetition) or shorten its input"
    }

    /// Fails when a string of `bytes` would exceed maxStringBytes.
    static func checkString(_ bytes: Int, _ what: String) throws {
        if bytes < 0 || bytes > maxStringBytes { throw exceeded("\(what) would be longer than \(maxStringBytes) bytes", "maxStringBytes", maxStringBytes) }
    }

    /// Fails when a list of `items` would exceed maxListItems.
    static func checkList(_ items: Int, _ what: String) throws {
        if items < 0 || items > maxListItems { throw exceeded("\(what) would have more than \(maxListItems) items", "maxListItems", maxListItems) }
    }

    /// The size of `count` copies of something `size` long (Int.max when that overflows).
    static func product(_ size: Int, _ count: Int64) -> Int {
        let (r, o) = Int64(size).multipliedReportingOverflow(by: max(0, count))
        return o ? Int.max : Int(r)
    }
}

extension TemplateLimits {
    /// Nesting of any value a template builds (lists, tuples, dicts, namespaces inside one another). A JSON value
    /// from the data nests at most JSONParser's 256 deep, so every value the data holds fits; Python's repr and
    /// json.dumps give up near 1,000.
    static let maxValueDepth = 512
}

/// The work budget of one render (TemplateLimits.maxWork), shared with the operations that walk a value whole
/// (`==`, `<`, `in`, sort, repr, tojson) and the nesting check of values the template builds. A value can hold
/// another many times over (`x = [x, x]` doubles it in one step), so a walk charges every node it visits and stops
/// once the budget or TemplateLimits.maxValueDepth is exceeded; the interpreter then fails with the limit and the
/// walk's result is never used.
final class RenderBudget {
    let max: Int
    var used = 0
    /// A walk went deeper than TemplateLimits.maxValueDepth (a value that holds itself, through a namespace).
    var tooDeep = false
    /// The namespaces the render created (emptied when it ends, so a chain of them is never released recursively).
    var namespaces: [JinjaNamespace] = []

    init(max: Int) { self.max = max }

    /// The budget of the render running on this thread, if any (walks outside a render are unbounded).
    @TaskLocal static var current: RenderBudget?

    var exhausted: Bool { used > max || tooDeep }

    /// The limit failure once the budget is exhausted, naming the bound.
    func failure() -> JinjaFailure? {
        if tooDeep {
            return TemplateLimits.exceeded("a value nested more than \(TemplateLimits.maxValueDepth) deep (lists, dicts or namespaces inside one another)",
                                           "maxValueDepth", TemplateLimits.maxValueDepth)
        }
        if used > max {
            return TemplateLimits.exceeded("the render did more than \(max) units of work (loop iterations, macro calls, bytes handled)",
                                           "maxWork", max)
        }
        return nil
    }

    /// Charges one node of a walk at `depth` (plus one unit per TemplateLimits.bytesPerUnit of `bytes`); false
    /// once the walk must stop.
    @inline(__always) func visit(_ depth: Int, bytes: Int = 0) -> Bool {
        used += 1 + bytes / TemplateLimits.bytesPerUnit
        if depth > TemplateLimits.maxValueDepth { tooDeep = true }
        return !exhausted
    }
}
