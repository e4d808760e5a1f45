// lora-generate: sample text from a model, or model + LoRA adapter, with a key/value cache. Plain mode streams the
// generated text to stdout as it comes; --jsonl reads one prompt per line and writes one JSON result per line.
import ArgumentParser
import Foundation
import LoRACLI
import LoRAShared

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora-generate",
        abstract: "Generate text from a model (or model + LoRA adapter).",
        discussion: """
            The prompt comes from --prompt, --prompt-file or stdin. With a chat template (the default when the \
            tokenizer has one) the prompt is the user turn, after --system if given, and generation starts the \
            assistant turn; --no-chat feeds the text as is. Generation stops at the end-of-turn / EOS tokens \
            (tokenizer, config.json and generation_config.json) or after --max-tokens. --temperature 0 (the \
            default) is greedy decoding, equal to transformers' generate(do_sample=False); otherwise temperature, \
            top-k and top-p are applied in that order, as transformers' sampling does, with draws from --seed. \
            With --jsonl each input line is {"prompt": ..., "system": ...} or {"messages": [...]} (an "id" is echoed) \
            and each output line is {"line", "completion", "tokens", "prompt_tokens", "finish_reason", "tokens_per_s"}.
            """)

    @Argument(help: "Model folder (full precision or 4-bit).")
    var model: String

    @Option(help: "LoRA adapter: a PEFT folder, a single-file adapter, or '-' for stdin.")
    var adapter: String?

    @Option(help: "The prompt text.")
    var prompt: String?

    @Option(help: "Read the prompt from this file ('-': stdin).")
    var promptFile: String?

    @Option(help: "JSONL prompts, one per line ('-': stdin); one JSON result per line on stdout.")
    var jsonl: String?

    @Flag(inversion: .prefixedNo, help: "Wrap the prompt in the chat template (default: when the model has one).")
    var chat: Bool?

    @Option(help: "System message for chat prompts.")
    var system: String?

    @Option(help: "Sampling temperature (0: greedy).")
    var temperature: Double = 0

    @Option(help: "Sample only among the k most likely tokens (0: all).")
    var topK: Int = 0

    @Option(help: "Sample only among the most likely tokens whose probabilities add up to p (1: all).")
    var topP: Double = 1

    @Option(help: "Most tokens to generate per prompt.")
    var maxTokens: Int = 256

    @Flag(help: "Include the generated token ids in --jsonl results.")
    var ids = false

    @Flag(help: "Keep generating past end-of-turn / EOS tokens until --max-tokens (benchmarks).")
    var ignoreEos = false

    @Option(help: .hidden)  // debugging / llama.cpp parity: every next-token distribution's logits, fp32 little-endian, appended
    var logitsOut: String?

    @OptionGroup var common: CommonOptions
    @OptionGroup var computeOptions: ComputeOptions

    func validate() throws {
        guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be 0 (greedy) or positive") }
        guard topK >= 0 else { throw ValidationError("--top-k must be 0 (off) or positive") }
        guard topP > 0, topP <= 1 else { throw ValidationError("--top-p must be in (0, 1]") }
        guard maxTokens >= 1 else { throw ValidationError("--max-tokens must be at least 1") }
        let sources = [prompt != nil, promptFile != nil, jsonl != nil].filter { $0 }.count
        guard sources <= 1 else { throw ValidationError("give only one of --prompt, --prompt-file and --jsonl") }
        if adapter == "-" && (promptFile == "-" || jsonl == "-" || sources == 0) {
            throw ValidationError("stdin cannot carry both the adapter and the prompts; give the prompt with --prompt or a file")
        }
    }

    func run() throws {
        try common.apply()
        let m = try ModelDir(path: model)
        try m.validate()
        let tokenizer = try Tokenizer.load(directory: model)
        let useChat = chat ?? (tokenizer.chatTemplate != nil)
        var template: ChatTemplate? = nil
        if useChat {
            guard let src = tokenizer.chatTemplate else {
                throw UsageError("\(model) has no chat template (tokenizer_config.json chat_template); pass --no-chat to use the prompt as plain text")
            }
            template = try ChatTemplate(src, name: "chat_template")
        }
        let transformer = try Transformer(model: m)
        transformer.compute = try computeOptions.resolve()
        if let a = adapter {
            try transformer.attach(try Adapter.load(a), linears: try m.linearModules())
        }
        let stops = try StopTokens.of(model: model, config: m.config, tokenizer: tokenizer)
        let ctx = min(m.config.maxPositionEmbeddings, 1 << 20)
        var sampler = Sampler(options: SamplingOptions(temperature: temperature, topK: topK, topP: topP), seed: common.seed)
        let logitsSink = try logitsOut.map { try AtomicFile(path: $0) }

        func promptIDs(messages: [JSONValue]?, text: String, system sys: String?) throws -> [Int] {
            if let tpl = template {
                var msgs = messages ?? []
                if messages == nil {
                    if let s = sys { msgs.append(.object(JSONObject([("role", .string("system")), ("content", .string(s))]))) }
                    msgs.append(.object(JSONObject([("role", .string("user")), ("content", .string(text))])))
                }
                let rendered = try tpl.render(messages: msgs, addGenerationPrompt: true, variables: tokenizer.templateVariables)
                return try tokenizer.encodeChecked(rendered, addSpecialTokens: false)
            }
            return try tokenizer.encodeChecked(text, addSpecialTokens: true)
        }

        struct Result { var ids: [Int] = []; var text = ""; var finish = "length"; var seconds = 0.0; var promptSeconds = 0.0 }
        func generate(_ promptTokens: [Int], stream: ((String) -> Void)?) throws -> Result {
            guard promptTokens.count < ctx else { throw GenerationError.contextFull(tokens: promptTokens.count, capacity: ctx) }
            let budget = min(maxTokens, ctx - promptTokens.count)
            if budget < maxTokens {
                Log.warn("the prompt (\(promptTokens.count) tokens) leaves room for only \(budget) new tokens in the context of \(ctx)")
            }
            let cache = KVCache(config: m.config, capacity: promptTokens.count + budget)
            var r = Result()
            var textStream = TextStream(tokenizer: tokenizer)
            let t0 = Date()
            try transformer.decodeStep(promptTokens.map { Int32($0) }, cache: cache)
            r.promptSeconds = Date().timeIntervalSince(t0)
            let t1 = Date()
            var one: [Int32] = [0]  // reused: a decoded token allocates nothing in the model
            while r.ids.count < budget {
                if let f = logitsSink { try cache.logits.withUnsafeBytes { try f.write($0) } }
                let next = sampler.next(cache.logits)
                if !ignoreEos && stops.contains(next) { r.finish = "stop"; break }
                r.ids.append(next)
                let piece = try textStream.push(next)
                if !piece.isEmpty { stream?(piece) }
                if r.ids.count == budget || Interrupt.received != 0 { break }
                one[0] = Int32(next)
                try transformer.decodeStep(one, cache: cache)
            }
            let rest = try textStream.finish()
            if !rest.isEmpty { stream?(rest) }
            r.text = try textStream.text()
            r.seconds = Date().timeIntervalSince(t1)
            return r
        }
        func rate(_ r: Result) -> Double { r.seconds > 0 ? (Double(r.ids.count) / r.seconds * 10).rounded() / 10 : 0 }

        if let path = jsonl {
            let shown = path == "-" ? "<stdin>" : path
            let parser = JSONParser()
            func handle(_ line: Int, _ bytes: [UInt8]) throws {
                if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }) { return }
                let value: JSONValue
                switch Swift.Result(catching: { try parser.parse(Data(bytes)) }) {
                case .success(let v): value = v
                case .failure(let error):
                    throw DataError.badRecord(path: shown, line: line, reason: "invalid JSON (\(error)); each line must be {\"prompt\": ...} or {\"messages\": [...]}")
                }
                guard let o = value.objectValue else {
                    throw DataError.badRecord(path: shown, line: line, reason: "expected a JSON object, found a \(value.typeName)")
                }
                let messages = o["messages"]?.arrayValue
                let text = o["prompt"]?.stringValue
                if o["messages"] != nil && messages == nil { throw DataError.badRecord(path: shown, line: line, reason: "\"messages\" must be an array") }
                guard messages != nil || text != nil else {
                    throw DataError.badRecord(path: shown, line: line, reason: "needs a string \"prompt\" or a \"messages\" array")
                }
                if messages == nil, let t = text, t.allSatisfy(\.isWhitespace) {
                    throw DataError.badRecord(path: shown, line: line, reason: "the prompt is empty; give the text to continue (or a \"messages\" array)")
                }
                if messages != nil && template == nil {
                    throw DataError.badRecord(path: shown, line: line, reason: "\"messages\" rows need the chat template; drop --no-chat or use \"prompt\"")
                }
                let sys = o["system"]?.stringValue ?? system
                let p: [Int]
                do { p = try promptIDs(messages: messages, text: text ?? "", system: sys) } catch {
                    throw DataError.badRecord(path: shown, line: line, reason: "chat template: \(error)")
                }
                let r: Result
                do { r = try generate(p, stream: nil) } catch let e as GenerationError {
                    throw DataError.badRecord(path: shown, line: line, reason: "\(e)")
                }
                var out = JSONObject()
                if let id = o["id"] { out["id"] = id }
                out["line"] = .int(Int64(line))
                if let t = text { out["prompt"] = .string(t) }
                out["completion"] = .string(r.text)
                out["tokens"] = .int(Int64(r.ids.count))
                out["prompt_tokens"] = .int(Int64(p.count))
                out["finish_reason"] = .string(r.finish)
                out["tokens_per_s"] = .double(rate(r))
                out["compute_dtype"] = .string(transformer.compute.label)
                if ids { out["ids"] = .array(r.ids.map { .int(Int64($0)) }) }
                emitJSON(.object(out))
                Log.info("line \(line): \(r.ids.count) tokens, \(rate(r)) tokens/s (prompt \(p.count) tokens in \(String(format: "%.2f", r.promptSeconds)) s)")
            }
            if path == "-" {
                try StdinClaim.shared.claim("the --jsonl prompts")
                var line = 0
                while let l = readLine(strippingNewline: true) {
                    line += 1
                    try handle(line, Array(l.utf8))
                    if Interrupt.received != 0 { break }
                }
                Profiler.shared.report()
            } else {
                guard let data = FileManager.default.contents(atPath: path) else {
                    throw FileError.cannotRead(path: path, reason: "missing or unreadable")
                }
                var line = 0
                for l in data.split(separator: 0x0A, omittingEmptySubsequences: false) {
                    line += 1
                    try handle(line, Array(l))
                    if Interrupt.received != 0 { break }
                }
                Profiler.shared.report()
            }
            try logitsSink?.commit()
            return
        }

        let text: String
        if let p = prompt {
            text = p
        } else {
            let src = promptFile ?? "-"
            if src == "-" { try StdinClaim.shared.claim("the prompt") }
            guard let data = src == "-" ? FileHandle.standardInput.readDataToEndOfFile() : FileManager.default.contents(atPath: src) else {
                throw FileError.cannotRead(path: src, reason: "missing or unreadable")
            }
            guard let s = String(data: data, encoding: .utf8) else { throw FileError.cannotRead(path: src, reason: "not UTF-8 text") }
            text = src == "-" || promptFile != nil ? String(s.trimmingSuffix { $0 == "\n" || $0 == "\r" }) : s
        }
        if text.allSatisfy(\.isWhitespace) {
            throw UsageError("the prompt is empty\(prompt == nil ? " (\(promptFile ?? "stdin") holds no text)" : ""); give the text to continue")
        }
        let p = try promptIDs(messages: nil, text: text, system: system)
        let out = FDSink.standardOutput()
        let r = try generate(p, stream: { piece in try? out.write(piece); try? out.flush() })
        try out.write("\n")
        try out.flush()
        try logitsSink?.commit()
        Profiler.shared.report()
        Log.info("generate: \(r.ids.count) tokens in \(String(format: "%.2f", r.seconds)) s (\(rate(r)) tokens/s), finish: \(r.finish), compute \(transformer.compute.label); prompt \(p.count) tokens in \(String(format: "%.2f", r.promptSeconds)) s")
    }
}

extension String {
    func trimmingSuffix(while p: (Character) -> Bool) -> Substring {
        var s = Substring(self)
        while let l = s.last, p(l) { s = s.dropLast() }
        return s
    }
}

runMain(Generate.self)
