// Examples: JSONL rows → token ids with a loss mask. Formats: {"text"}, {"prompt","completion"},
// {"instruction","input"?,"output"} and {"messages":[{role, content}]}; chat data goes through the model's
// chat template, and with masking only completion / assistant tokens (each ending with the end-of-turn
// token the model stops on) count.
import Foundation

public enum DataFormat: String, Sendable, CaseIterable {
    case text, promptCompletion = "prompt-completion", instruction, messages, sharegpt
}

public enum DataError: Error, CustomStringConvertible {
    case badRecord(path: String, line: Int, reason: String)
    case noChatTemplate(path: String, line: Int, format: String)
    case noUsableExamples(path: String, reason: String)

    public var description: String {
        switch self {
        case .badRecord(let p, let l, let r): return "\(p):\(l): \(r)"
        case .noChatTemplate(let p, let l, let f):
            return "\(p):\(l): \(f) rows need the model's chat template, and the model has none (tokenizer_config.json chat_template or chat_template.jinja); use {\"text\"} or {\"prompt\",\"completion\"} rows"
        case .noUsableExamples(let p, let r): return "\(p): no usable example: \(r)"
        }
    }
}

/// One tokenized example: ids and, per position, whether its token is a training target.
public struct Example: Sendable {
    public var ids: [Int32]
    public var targets: [Bool]
    public var line: Int
    public var format: DataFormat
    /// Why the builder placed no target, when it can tell (a conversation without an assistant turn).
    public var noTargetHint: String? = nil
    public var targetCount: Int { targets.reduce(0) { $0 + ($1 ? 1 : 0) } }
}

extension Example {
    /// The one check of a tokenized example against a model's vocabulary: an id the embedding has no row for
    /// names the file and line (the tokenizer does not belong to the model).
    public func checkVocabulary(_ vocab: Int, path: String) throws {
        if let bad = ids.first(where: { $0 < 0 || Int($0) >= vocab }) {
            throw DataError.badRecord(path: path, line: line,
                reason: "token id \(bad) is outside the model's vocabulary of \(vocab); the tokenizer does not belong to this model")
        }
    }

    /// The one check that an example gives the loss something within `seqLen` tokens (a position scores the
    /// token after it, so the first never counts): an empty row (`{"text": ""}` with a tokenizer that adds no
    /// BOS, or a pre-tokenizer that removes all of it) or one whose targets all lie beyond `seqLen` names its line.
    /// Returns the number of scored tokens in the first `seqLen`. lora-train and lora-eval both apply it.
    @discardableResult
    public func checkScored(seqLen: Int, path: String) throws -> Int {
        let kept = targets.prefix(seqLen).dropFirst().reduce(0) { $0 + ($1 ? 1 : 0) }
        guard kept == 0 else { return kept }
        let reason: String
        if ids.isEmpty {
            reason = "the example has no tokens (empty text, or everything removed by the tokenizer); remove the line or pass --skip-bad-lines"
        } else if ids.count > seqLen {
            reason = "all \(targetCount) target tokens lie beyond --seq-len \(seqLen) (the example has \(ids.count) tokens); raise --seq-len or shorten the prompt"
        } else if ids.count == 1 {
            reason = "the example has a single token, which scores nothing (each position predicts the next); remove the line or pass --skip-bad-lines"
        } else {
            reason = noTargetHint ?? "the example has no target token"
        }
        throw DataError.badRecord(path: path, line: line, reason: reason)
    }
}

public struct ExampleBuilder {
    public let tokenizer: Tokenizer
    public let template: ChatTemplate?
    /// The template transformers renders for a conversation with tools, when the model names one ("tool_use").
    public let toolUseTemplate: ChatTemplate?
    public let maskPrompt: Bool?     // nil: default (off for text, on for the others)
    public let path: String
    /// The tokens a chat example is cut to afterwards (--seq-len), or nil: turns that start beyond it are not
    /// placed one by one (each needs a render of the conversation so far, so placing all of a 2,000-turn row
    /// would cost time quadratic in its length); the whole conversation is still rendered once, so a row the
    /// template rejects is refused all the same.
    public let maxTokens: Int?

    public init(tokenizer: Tokenizer, maskPrompt: Bool?, path: String, maxTokens: Int? = nil) throws {
        self.tokenizer = tokenizer
        self.maskPrompt = maskPrompt
        self.path = path
        self.maxTokens = maxTokens
        template = try tokenizer.chatTemplate.map { try ChatTemplate($0, name: "chat_template") }
        toolUseTemplate = try tokenizer.toolUseChatTemplate.map { try ChatTemplate($0, name: "chat_template[tool_use]") }
    }

    public static func format(of o: JSONObject) -> DataFormat? {
        if o["messages"] != nil { return .messages }
        if o["conversations"] != nil { return .sharegpt }
        if o["text"] != nil { return .text }
        if o["prompt"] != nil || o["completion"] != nil { return .promptCompletion }
        if o["instruction"] != nil || o["output"] != nil { return .instruction }
        return nil
    }

    func string(_ o: JSONObject, _ key: String, line: Int, optional: Bool = false) throws -> String? {
        guard let v = o[key], !v.isNull else {
            if optional { return nil }
            throw DataError.badRecord(path: path, line: line, reason: "missing \"\(key)\"")
        }
        guard let s = v.stringValue else {
            throw DataError.badRecord(path: path, line: line, reason: "\"\(key)\" must be a string, found a \(v.typeName)")
        }
        return s
    }

    var eos: Int32? { tokenizer.eosTokenId.map { Int32($0) } }

    public func build(_ r: JSONLRecord) throws -> Example {
        let o = r.value
        guard let f = ExampleBuilder.format(of: o) else {
            let keys = o.keys.prefix(6).joined(separator: ", ")
            throw DataError.badRecord(path: path, line: r.line,
                reason: "unrecognized row (keys: \(keys)); expected \"text\", \"prompt\"+\"completion\", \"instruction\"+\"output\", \"messages\" or \"conversations\" (ShareGPT)")
        }
        let mask = maskPrompt ?? (f != .text)
        switch f {
        case .text:
            let t = try string(o, "text", line: r.line)!
            let ids = try encode(t, special: true, line: r.line)
            return Example(ids: ids, targets: [Bool](repeating: true, count: ids.count), line: r.line, format: f)
        case .promptCompletion:
            let p = try string(o, "prompt", line: r.line)!, c = try string(o, "completion", line: r.line)!
            let pi = try encode(p, special: true, line: r.line)
            var ci = try encode(c, special: false, line: r.line)
            if let e = eos, ci.last != e { ci.append(e) }
            return Example(ids: pi + ci, targets: [Bool](repeating: !mask, count: pi.count) + [Bool](repeating: true, count: ci.count),
                           line: r.line, format: f)
        case .instruction:
            let ins = try string(o, "instruction", line: r.line)!
            let inp = try string(o, "input", line: r.line, optional: true) ?? ""
            let out = try string(o, "output", line: r.line)!
            let user = inp.isEmpty ? ins : ins + "\n\n" + inp
            let msgs: [JSONValue] = [
                .object(JSONObject([("role", .string("user")), ("content", .string(user))])),
                .object(JSONObject([("role", .string("assistant")), ("content", .string(out))])),
            ]
            return try chat(msgs, tools: nil, line: r.line, mask: mask, format: f)
        case .messages, .sharegpt:
            let key = f == .messages ? "messages" : "conversations"
            guard var arr = o[key]?.arrayValue, !arr.isEmpty else {
                throw DataError.badRecord(path: path, line: r.line, reason: "\"\(key)\" must be a non-empty array")
            }
            if f == .sharegpt { arr = try ExampleBuilder.fromShareGPT(arr, path: path, line: r.line) }
            for (i, m) in arr.enumerated() {
                guard let mo = m.objectValue, mo["role"]?.stringValue != nil else {
                    throw DataError.badRecord(path: path, line: r.line, reason: "messages[\(i)] must be an object with a string \"role\"")
                }
                if let c = mo["content"], c.stringValue == nil, !c.isNull, c.arrayValue == nil {
                    throw DataError.badRecord(path: path, line: r.line, reason: "messages[\(i)].content must be a string")
                }
                if let c = mo["tool_calls"], !c.isNull, !(c.arrayValue?.allSatisfy { $0.objectValue != nil } ?? false) {
                    throw DataError.badRecord(path: path, line: r.line,
                        reason: "messages[\(i)].tool_calls must be a list of calls ({\"type\": \"function\", \"function\": {\"name\": ..., \"arguments\": ...}}), found a \(c.typeName)")
                }
            }
            let tools = try ExampleBuilder.tools(o, sharegpt: f == .sharegpt, path: path, line: r.line)
            return try chat(arr, tools: tools, line: r.line, mask: mask, format: f)
        }
    }

    /// Token ids of `text`; a tokenizer regex that runs past its limits names the line.
    func encode(_ text: String, special: Bool, line: Int) throws -> [Int32] {
        do { return try tokenizer.encodeChecked(text, addSpecialTokens: special).map { Int32($0) } } catch {
            throw DataError.badRecord(path: path, line: line, reason: "\(error)")
        }
    }

    /// The part of `s` after its UTF-8 prefix `p`.
    func suffix(_ s: String, after p: String) -> String {
        String(decoding: Array(s.utf8.dropFirst(p.utf8.count)), as: UTF8.self)
    }

    /// Renders a conversation; each assistant turn (content through its end-of-turn token) is a target. `tools`
    /// (function definitions) reach the template as transformers' `apply_chat_template(tools=...)` passes them, and
    /// select its "tool_use" template when the model has one.
    func chat(_ msgs: [JSONValue], tools: JSONValue?, line: Int, mask: Bool, format: DataFormat) throws -> Example {
        guard let tpl = (tools != nil ? toolUseTemplate : nil) ?? template else {
            throw DataError.noChatTemplate(path: path, line: line, format: format.rawValue)
        }
        var vars = tokenizer.templateVariables
        if let tools { vars["tools"] = tools }
        func render(_ m: [JSONValue], _ gen: Bool, _ v: [String: JSONValue]? = nil) throws -> String {
            do { return try tpl.render(messages: m, addGenerationPrompt: gen, variables: v ?? vars) } catch {
                throw DataError.badRecord(path: path, line: line, reason: "chat template: \(error)")
            }
        }
        var ids: [Int32] = [], targets: [Bool] = []
        var done = ""   // text already tokenized
        var cut = false  // stopped placing turns at maxTokens
        let full = try render(msgs, false)
        // Tools and tool calls the template does not render would vanish from the text trained on: refused, never dropped.
        // (A render that fails without them depends on them.)
        if tools != nil, (try? render(msgs, false, tokenizer.templateVariables)) == full {
            throw DataError.badRecord(path: path, line: line,
                reason: "the model's chat template does not render \"tools\", so the function definitions would not be in the text trained on; use a model whose chat template renders tools (e.g. Qwen2.5, Llama 3.1), or describe the tools in the system message")
        }
        if let i = msgs.firstIndex(where: { !($0["tool_calls"]?.arrayValue?.isEmpty ?? true) }) {
            let stripped = msgs.map { m -> JSONValue in
                guard var o = m.objectValue, o["tool_calls"] != nil else { return m }
                o["tool_calls"] = nil
                return .object(o)
            }
            if (try? render(stripped, false)) == full {
                throw DataError.badRecord(path: path, line: line,
                    reason: "the model's chat template does not render \"tool_calls\" (messages[\(i)]), so the calls would not be in the text trained on; use a model whose chat template renders tool calls, or write the call into the message's content")
            }
        }
        for i in msgs.indices where msgs[i]["role"]?.stringValue == "assistant" {
            if let cap = maxTokens, ids.count > cap { cut = true; break }
            let before = try render(Array(msgs[..<i]), true)
            let through = try render(Array(msgs[...i]), false)
            guard before.utf8.starts(with: done.utf8), through.utf8.starts(with: before.utf8) else {
                throw DataError.badRecord(path: path, line: line,
                    reason: "the chat template does not render this conversation incrementally (turn \(i)); the loss mask cannot be placed")
            }
            // The turn's own text: a header (when the template has no generation prompt, or a different one),
            // then the content through the end-of-turn token. Only the latter is a target.
            let seg = suffix(through, after: before)
            var head = "", body = seg
            if let content = msgs[i]["content"]?.stringValue, !content.isEmpty, let r = seg.range(of: content) {
                head = String(seg[..<r.lowerBound])
                body = String(seg[r.lowerBound...])
            }
            let ctx = try encode(suffix(before, after: done) + head, special: false, line: line)
            var turn = try encode(body, special: false, line: line)
            // The target ends with the end-of-turn token; anything the template adds after it is context.
            let trained = try ExampleBuilder.isTrained(msgs[i], index: i, path: path, line: line)
            var turnTargets = [Bool](repeating: trained, count: turn.count)
            if let e = eos, let last = turn.lastIndex(of: e) {
                for k in (last + 1)..<turn.count { turnTargets[k] = false }
            } else if let e = eos {
                turn.append(e)
                turnTargets.append(trained)
            }
            ids += ctx
            targets += [Bool](repeating: !mask, count: ctx.count)
            ids += turn
            targets += turnTargets
            done = through
        }
        if !cut, full.utf8.count > done.utf8.count, full.utf8.starts(with: done.utf8) {
            let rest = try encode(suffix(full, after: done), special: false, line: line)
            ids += rest
            targets += [Bool](repeating: !mask, count: rest.count)
        }
        var e = Example(ids: ids, targets: targets, line: line, format: format)
        if mask && !msgs.contains(where: { $0["role"]?.stringValue == "assistant" }) {
            var roles: [String] = []
            for m in msgs { if let r = m["role"]?.stringValue, !roles.contains(r) { roles.append(r) } }
            e.noTargetHint = "no message has the role \"assistant\" (roles here: \(roles.prefix(6).joined(separator: ", "))), and only assistant turns are trained; name the roles system, user and assistant"
        }
        return e
    }
}

extension ExampleBuilder {
    /// ShareGPT's roles, as the chat templates name them: `from` → `role`, `value` → `content`; `function_call`
    /// is the assistant's tool call, `observation` the tool's answer (LLaMA-Factory's names).
    static let shareGPTRoles = ["human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
                                "function_call": "assistant", "observation": "tool", "tool": "tool"]

    /// A row's `tools`: a list of function definitions, passed to the chat template as they are (ShareGPT files
    /// from LLaMA-Factory hold the list as a JSON string, which is parsed). nil when the row has none.
    static func tools(_ o: JSONObject, sharegpt: Bool, path: String, line: Int) throws -> JSONValue? {
        guard var t = o["tools"], !t.isNull else { return nil }
        if sharegpt, let s = t.stringValue {
            if s.trimmingCharacters(in: .whitespaces).isEmpty { return nil }
            do { t = try JSONParser().parse(s) } catch {
                throw DataError.badRecord(path: path, line: line, reason: "\"tools\" is a string that is not JSON (\(error)); give the list of function definitions")
            }
        }
        guard let list = t.arrayValue, list.allSatisfy({ $0.objectValue != nil }) else {
            throw DataError.badRecord(path: path, line: line,
                reason: "\"tools\" must be a list of function definitions ({\"type\": \"function\", \"function\": {\"name\": ..., \"parameters\": ...}}), found a \(t.typeName)")
        }
        return t
    }

    /// A ShareGPT `function_call` turn's value as the assistant's `tool_calls` when it is a call (`{"name",
    /// "arguments"}`) or a list of calls, so templates that render tool calls render it as one; other text stays
    /// the content.
    static func shareGPTCalls(_ value: String) -> JSONValue? {
        guard let v = try? JSONParser().parse(value) else { return nil }
        let calls = v.arrayValue ?? [v]
        guard !calls.isEmpty, calls.allSatisfy({ $0["name"]?.stringValue != nil }) else { return nil }
        return .array(calls.map { .object(JSONObject([("type", .string("function")), ("function", $0)])) })
    }

    /// A ShareGPT conversation (`[{"from", "value"}]`) as `messages`; other keys of a turn (`weight`) are kept.
    static func fromShareGPT(_ turns: [JSONValue], path: String, line: Int) throws -> [JSONValue] {
        try turns.enumerated().map { i, t in
            guard let o = t.objectValue, let from = o["from"]?.stringValue else {
                throw DataError.badRecord(path: path, line: line, reason: "conversations[\(i)] must be an object with a string \"from\"")
            }
            guard let role = shareGPTRoles[from] else {
                throw DataError.badRecord(path: path, line: line,
                    reason: "conversations[\(i)]: unknown \"from\": \"\(from)\"; expected one of \(shareGPTRoles.keys.sorted().joined(separator: ", "))")
            }
            guard let v = o["value"], v.stringValue != nil else {
                throw DataError.badRecord(path: path, line: line, reason: "conversations[\(i)] needs a string \"value\"")
            }
            var m = JSONObject([("role", .string(role)), ("content", v)])
            if from == "function_call", let calls = shareGPTCalls(v.stringValue!) {
                m["content"] = JSONValue.null
                m["tool_calls"] = calls
            }
            for k in o.keys where k != "from" && k != "value" { m[k] = o[k] }
            return .object(m)
        }
    }

    /// Whether an assistant turn counts in the loss: `"weight": 0` or `"train": false` on the message excludes it.
    static func isTrained(_ m: JSONValue, index i: Int, path: String, line: Int) throws -> Bool {
        if let w = m["weight"], !w.isNull {
            switch w {
            case .int(0), .bool(false): return false
            case .int(1), .bool(true): return true
            case .double(let d) where d == 0 || d == 1: return d == 1
            default: throw DataError.badRecord(path: path, line: line, reason: "messages[\(i)].weight must be 0 or 1, found \(w.serialized())")
            }
        }
        if let t = m["train"], !t.isNull {
            guard case .bool(let b) = t else {
                throw DataError.badRecord(path: path, line: line, reason: "messages[\(i)].train must be true or false, found \(t.serialized())")
            }
            return b
        }
        return true
    }
}

extension DataError: ToolError {}

extension Tokenizer {
    /// The variables chat templates read besides `messages` and `add_generation_prompt`.
    public var templateVariables: [String: JSONValue] {
        var v: [String: JSONValue] = [:]
        if let b = bosToken { v["bos_token"] = .string(b) }
        if let e = eosToken { v["eos_token"] = .string(e) }
        if let p = padToken { v["pad_token"] = .string(p) }
        if let u = unkToken { v["unk_token"] = .string(u) }
        return v
    }
}

