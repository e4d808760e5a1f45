// ChatTemplate: renders a model's chat template (Jinja text from tokenizer_config.json) the way
// transformers' `apply_chat_template(..., tokenize=False)` does (render_jinja_template, transformers 5.x, Jinja 3.1).
import Foundation

public enum ChatTemplateError: Error, CustomStringConvertible, Equatable {
    /// The template text is malformed: an unterminated tag, a bad expression, an unclosed block.
    case syntax(template: String, line: Int, column: Int, message: String)
    /// A Jinja construct (tag, filter, test, method, syntax form) this interpreter does not implement.
    case unsupported(template: String, line: Int, column: Int, construct: String)
    /// Rendering failed where Python/Jinja would raise (type error, use of an undefined value…).
    case render(template: String, line: Int, column: Int, message: String)
    /// The template called `raise_exception(message)` (transformers' TemplateError).
    case raised(template: String, line: Int, column: Int, message: String)
    /// The template exceeded a bound of TemplateLimits (nesting, recursion, string or list size, work).
    case limit(template: String, line: Int, column: Int, message: String)

    public var description: String {
        switch self {
        case .syntax(let t, let l, let c, let m): return "\(t):\(l):\(c): template syntax error: \(m)"
        case .unsupported(let t, let l, let c, let m): return "\(t):\(l):\(c): unsupported \(m)"
        case .render(let t, let l, let c, let m): return "\(t):\(l):\(c): render error: \(m)"
        case .raised(let t, let l, let c, let m): return "\(t):\(l):\(c): raise_exception: \(m)"
        case .limit(let t, let l, let c, let m): return "\(t):\(l):\(c): template limit exceeded: \(m)"
        }
    }

    /// The message a template passed to `raise_exception`, if that is what this error is.
    public var raisedMessage: String? {
        if case .raised(_, _, _, let m) = self { return m }
        return nil
    }
}

public struct ChatTemplate: Sendable {
    public let name: String
    private let body: [JinjaStmt]
    /// The clock behind `strftime_now` (tests pin it).
    package var now: @Sendable () -> Date = { Date() }
    /// The time zone `strftime_now` formats the clock in; nil is the process's local time zone, as Python's
    /// naive `datetime.now()` (tests pin it to UTC so a rendered date never depends on where they run).
    package var timeZone: TimeZone? = nil
    /// The render's work budget (tests lower it to reach it quickly).
    package var maxWork = TemplateLimits.maxWork

    /// Parses `source` once; `name` prefixes every error message (e.g. the model folder).
    public init(_ source: String, name: String = "chat_template") throws {
        self.name = name
        do {
            var lexer = JinjaLexer(source)
            var parser = JinjaParser(tokens: try lexer.tokenize())
            body = try parser.parseTemplate()
            try JinjaParser.validate(body, soft: false)
        } catch let f as JinjaSyntaxFailure {
            if f.limit {
                throw ChatTemplateError.limit(template: name, line: f.pos.line, column: f.pos.column, message: f.message)
            }
            if f.unsupported {
                throw ChatTemplateError.unsupported(template: name, line: f.pos.line, column: f.pos.column, construct: f.message)
            }
            throw ChatTemplateError.syntax(template: name, line: f.pos.line, column: f.pos.column, message: f.message)
        }
    }

    /// Renders a conversation. `variables` carries `bos_token`, `eos_token`, `tools`, `date_string`, …
    /// As in transformers, `tools` and `documents` are defined (as none) unless given, and a message's
    /// `reasoning_content` / `thinking` / `reasoning` is also exposed under `thinking` and `reasoning_content`.
    public func render(messages: [JSONValue], addGenerationPrompt: Bool, variables: [String: JSONValue] = [:]) throws -> String {
        let globals = JinjaScope(parent: nil)
        globals.vars = JinjaMethods.globals(now: now, timeZone: timeZone)
        let root = JinjaScope(parent: globals)
        root.vars["tools"] = JinjaValue.none
        root.vars["documents"] = JinjaValue.none
        for (k, v) in variables { root.vars[k] = JinjaValue(v) }
        root.vars["messages"] = .array(messages.map { JinjaValue(ChatTemplate.aliasReasoning($0)) })
        root.vars["add_generation_prompt"] = .bool(addGenerationPrompt)
        return try JinjaInterpreter(templateName: name, maxWork: maxWork).render(body, root: root)
    }

    /// transformers' `_alias_reasoning_fields`: `{"thinking": r, **message, "reasoning_content": r}` where r is
    /// the first non-null of reasoning_content, thinking, reasoning.
    static func aliasReasoning(_ message: JSONValue) -> JSONValue {
        guard case .object(let m) = message else { return message }
        guard let r = ["reasoning_content", "thinking", "reasoning"].lazy.compactMap({ k -> JSONValue? in
            guard let v = m[k], !v.isNull else { return nil }
            return v
        }).first else { return message }
        var out = JSONObject()
        out["thinking"] = r
        for e in m.entries { out[e.key] = e.value }
        out["reasoning_content"] = r
        return .object(out)
    }
}
