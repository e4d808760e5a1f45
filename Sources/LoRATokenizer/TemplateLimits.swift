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
    /// Work units per render: one per loop iteration or macro call, and one per `bytesPerUnit` bytes of
    /// every string (8 bytes per item of every list) an operator, filter, test or method reads or returns.
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
