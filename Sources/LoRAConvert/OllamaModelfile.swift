// OllamaModelfile: the Modelfile beside an exported GGUF (FROM, ADAPTER, TEMPLATE, PARAMETER stop). Ollama's
// TEMPLATE is a Go template, not Jinja: one is written only for a chat template whose output on probe
// conversations is exactly a family we translate (ChatML, Llama 3 headers); otherwise Ollama falls back to the
// tokenizer.chat_template the GGUF carries.
import Foundation
import LoRAFormats
import LoRATokenizer

public enum OllamaModelfile {
    public struct Translation: Equatable {
        /// The Go template, and the end-of-turn token it stops on.
        public var template: String
        public var endOfTurn: String
        public var family: String
    }

    /// Probe conversations (system or not, multi-turn); content includes no whitespace at its ends, where
    /// templates that trim would differ (see `trimProbe`).
    static let probes: [[(String, String)]] = [
        [("user", "Hi")],
        [("system", "Sys"), ("user", "Hi"), ("assistant", "Yo"), ("user", "Q")],
        [("user", "Hi"), ("assistant", "Yo"), ("user", "Q")],
        [("user", " pad \n"), ("assistant", "\nx "), ("user", "two\nlines")],
    ]

    static func render(_ t: ChatTemplate, _ msgs: [(String, String)], vars: [String: JSONValue]) -> String? {
        let m: [JSONValue] = msgs.map { .object(JSONObject([("role", .string($0.0)), ("content", .string($0.1))])) }
        return try? t.render(messages: m, addGenerationPrompt: true, variables: vars)
    }

    /// The Go template equivalent to `source` (a Jinja chat template) on every probe, if it is ChatML or Llama 3.
    /// `bos` is the BOS text, which llama.cpp adds itself when `addBos`; a template that writes it is Llama 3
    /// only then (Ollama's prompt must not carry it twice).
    public static func translate(_ source: String, bos: String?, eos: String?, addBos: Bool) -> Translation? {
        guard let t = try? ChatTemplate(source, name: "chat_template") else { return nil }
        var vars: [String: JSONValue] = [:]
        if let b = bos { vars["bos_token"] = .string(b) }
        if let e = eos { vars["eos_token"] = .string(e) }
        guard let first = render(t, probes[0], vars: vars) else { return nil }

        // ChatML: <|im_start|>ROLE\nCONTENT<|im_end|>\n per message, an optional default system turn first.
        let chatml = { (r: String, c: String) in "<|im_start|>\(r)\n\(c)<|im_end|>\n" }
        let chatmlGen = "<|im_start|>assistant\n"
        // Llama 3: <|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>, BOS first.
        let l3 = { (r: String, c: String) in "<|start_header_id|>\(r)<|end_header_id|>\n\n\(c)<|eot_id|>" }
        let l3Gen = "<|start_header_id|>assistant<|end_header_id|>\n\n"

        for family in ["chatml", "llama3"] {
            let turn = family == "chatml" ? chatml : l3
            let gen = family == "chatml" ? chatmlGen : l3Gen
            var prefix = ""
            if family == "llama3" {
                guard let b = bos, addBos, first.hasPrefix(b) else { continue }
                prefix = b
            }
            // The default system text: what precedes the user's turn when no system message is given.
            let body = turn("user", "Hi") + gen
            guard first.hasSuffix(body), first.hasPrefix(prefix) else { continue }
            let head = String(first.dropFirst(prefix.count).dropLast(body.count))
            var defaultSystem: String? = nil
            if !head.isEmpty {
                let open = turn("system", "\u{0}").components(separatedBy: "\u{0}")
                guard open.count == 2, head.hasPrefix(open[0]), head.hasSuffix(open[1]) else { continue }
                let sys = String(head.dropFirst(open[0].count).dropLast(open[1].count))
                guard !sys.contains("{{"), !sys.contains("}}"), !sys.contains("\u{0}") else { continue }
                defaultSystem = sys
            }
            var ok = true
            for p in probes.dropFirst() {
                var want = prefix
                if let d = defaultSystem, p.first?.0 != "system" { want += turn("system", d) }
                for (r, c) in p { want += turn(r, c) }
                want += gen
                if render(t, p, vars: vars) != want { ok = false; break }
            }
            guard ok else { continue }
            let msgTurn = family == "chatml"
                ? "<|im_start|>{{ $m.Role }}\n{{ $m.Content }}<|im_end|>\n"
                : "<|start_header_id|>{{ $m.Role }}<|end_header_id|>\n\n{{ $m.Content }}<|eot_id|>"
            var go = "{{- range $i, $m := .Messages }}"
            if let d = defaultSystem { go += "{{- if and (eq $i 0) (ne $m.Role \"system\") }}" + turn("system", d) + "{{ end }}" }
            go += msgTurn + "{{ end }}" + gen
            return Translation(template: go, endOfTurn: family == "chatml" ? "<|im_end|>" : "<|eot_id|>", family: family)
        }
        return nil
    }

    /// A Go/Modelfile string literal in triple quotes (a template with `"""` cannot be one; nil then).
    static func tripleQuoted(_ s: String) -> String? { s.contains("\"\"\"") ? nil : "\"\"\"" + s + "\"\"\"" }

    static func quoted(_ s: String) -> String {
        "\"" + s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
    }

    /// The Modelfile text. `from` is the model GGUF (relative to the Modelfile); `adapter` the adapter GGUF, if any.
    public static func text(name: String, from: String, fromIsPlaceholder: Bool, adapter: String?, chatTemplate: String?,
                            bos: String?, eos: String?, addBos: Bool) -> (text: String, family: String?) {
        var lines = ["# Modelfile written by lora-export. Create the Ollama model with:", "#   ollama create \(name) -f Modelfile"]
        if fromIsPlaceholder {
            lines.append("# FROM must be the base model's GGUF: export it with `lora-export MODEL_DIR -o \(from)` (or pass --base-gguf).")
        }
        lines.append("FROM \(from)")
        if let a = adapter { lines.append("ADAPTER \(a)") }
        var stops: [String] = []
        var family: String? = nil
        if let src = chatTemplate, let tr = translate(src, bos: bos, eos: eos, addBos: addBos), let lit = tripleQuoted(tr.template) {
            lines.append("# TEMPLATE: the chat template (\(tr.family)) in Go template form, checked equal on probe conversations.")
            lines.append("TEMPLATE \(lit)")
            stops.append(tr.endOfTurn)
            family = tr.family
        } else if chatTemplate != nil {
            lines.append("# No TEMPLATE: the chat template is not one lora-export translates exactly (ChatML, Llama 3);")
            lines.append("# Ollama reads tokenizer.chat_template from the GGUF instead.")
        } else {
            lines.append("# No TEMPLATE: the model has no chat template (plain completion).")
        }
        if let e = eos, !stops.contains(e) { stops.append(e) }
        for s in stops { lines.append("PARAMETER stop \(quoted(s))") }
        return (lines.joined(separator: "\n") + "\n", family)
    }
}
