// lora-eval: loss and perplexity of a model, or model + LoRA adapter, on a JSONL file (text, prompt/completion,
// instruction or chat rows). Prints one JSON object on stdout; progress on stderr.
import ArgumentParser
import Foundation
import LoRACLI
import LoRAShared

struct Eval: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora-eval",
        abstract: "Loss and perplexity of a model (or model + LoRA adapter) on JSONL data.",
        discussion: """
            Rows: {"text": ...}, {"prompt": ..., "completion": ...}, {"instruction": ..., "input": ..., "output": ...} \
            or {"messages": [{"role": ..., "content": ...}, ...]}. A text row is tokenized as the tokenizer does by \
            default (its post-processor, e.g. a BOS, once per text; no EOS added); texts longer than --seq-len are \
            scored in windows advancing by --stride. Other rows get the chat template (instruction, messages) and end \
            with the end-of-turn token; with --mask-prompt only completion / assistant tokens count.
            """)

    @Argument(help: "Model folder (full precision or 4-bit).")
    var model: String

    @Option(help: "LoRA adapter: a PEFT folder, a single-file adapter, or '-' for stdin.")
    var adapter: String?

    @Option(help: "Data: JSONL (or a JSON array, gzip too), '-' for stdin, or a folder with test.jsonl.")
    var data: String?

    @Option(name: .customLong("mask-prompt"), help: "Score only completion / assistant tokens: true or false (default: true for prompt/completion, instruction and messages rows, false for text).")
    var maskPrompt: Bool?

    @Option(help: "Tokens per sequence (default: the model's context, at most 2048).")
    var seqLen: Int?

    @Option(help: "Window advance for texts longer than --seq-len (default: --seq-len, no overlap).")
    var stride: Int?

    @Option(help: "Sequences per forward pass. [default: \(Defaults.evalBatchSize)]")
    var batchSize: Int?

    @Flag(name: .customLong("skip-bad-lines"), help: "Count and report malformed lines instead of stopping at the first.")
    var skipBadLinesFlag = false

    @Option(help: "Run config (YAML or JSON): data.test (or the data folder), data.seq-len, data.mask-prompt, the eval section and compute; flags win. See pipelines/run.example.yaml.")
    var config: String?

    @Option(help: "Print the first N examples as evaluation builds them (masking, --seq-len truncation, windows), then exit without running the model.")
    var showExamples: Int?

    @Option(help: "--show-examples output: text (scored tokens marked) or jsonl (ids, tokens, labels).")
    var format: ShowFormat = .text

    @OptionGroup var common: CommonOptions
    @OptionGroup var computeOptions: ComputeOptions

    func validate() throws {
        if let n = showExamples, n < 1 { throw ValidationError("--show-examples must be at least 1 (got \(n))") }
        if showExamples == nil && format != .text { throw ValidationError("--format applies to --show-examples only") }
    }

    func run() throws {
        let cfg = try config.map { try ConfigFile(path: $0, tool: "lora-eval") }
        try common.apply(cfg)
        // Each value: the flag, else the run config, else the default.
        let seqLen = try self.seqLen ?? cfg?.int("seq-len")
        let stride = try self.stride ?? cfg?.int("stride")
        let batchSize = try self.batchSize ?? cfg?.int("batch-size") ?? Defaults.evalBatchSize
        let maskPrompt = try self.maskPrompt ?? cfg?.bool("mask-prompt")
        let skipBadLines = try skipBadLinesFlag || (cfg?.bool("skip-bad-lines") ?? false)
        // A run config's data folder (data: DIR) gives lora-eval its test split, as --data DIR does.
        let dataFolder = cfg?.other("data.train")?.stringValue.flatMap { DataDir.isDirectory($0) ? $0 : nil }
        guard let data = try data ?? cfg?.string("data") ?? dataFolder else {
            throw UsageError("--data is required (a JSONL file, a folder with test.jsonl, or '-'; or data.test in --config)")
        }
        if let s = seqLen, s < 2 { throw UsageError("--seq-len must be at least 2") }
        if let s = stride, s < 1 { throw UsageError("--stride must be at least 1") }
        if let s = stride, let l = seqLen, s > l { throw UsageError("--stride \(s) must not exceed --seq-len \(l)") }
        guard (1...Limits.maxBatchSize).contains(batchSize) else { throw UsageError("--batch-size must be in 1...\(Limits.maxBatchSize)") }
        let started = Date()
        let m = try ModelDir(path: model)
        try m.validate()
        let ctx = m.config.maxPositionEmbeddings
        let L = seqLen ?? min(ctx, Defaults.evalMaxSeqLen)
        guard L <= ctx else {
            throw UsageError("--seq-len \(L) exceeds the model's context of \(ctx) tokens (max_position_embeddings); lower --seq-len")
        }
        let tokenizer = try Tokenizer.load(directory: model)
        let file = try JSONLFile.read(try DataDir.forEvaluation(data: data), skipBad: skipBadLines)
        for s in file.skipped { Log.warn("skipped \(s)") }
        if let n = showExamples {
            let units = try ShowExamples.evalExamples(file, tokenizer: tokenizer, maskPrompt: maskPrompt, seqLen: L, stride: stride,
                                                      vocab: m.config.vocabSize, skipBad: skipBadLines, count: n)
            try ShowExamples.render(units, requested: n, tokenizer: tokenizer, seqLen: L, format: format, tool: "lora-eval",
                                    path: file.path, color: isatty(1) != 0)
            return
        }
        let builder = try ExampleBuilder(tokenizer: tokenizer, maskPrompt: maskPrompt, path: file.path, maxTokens: L)
        let options = EvalOptions(seqLen: L, stride: stride, batchSize: batchSize)
        var windows: [Window] = []
        var result = EvalResult()
        var skippedRows = 0
        for r in file.records {
            let e: Example
            do {
                e = try builder.build(r)
                try e.checkVocabulary(m.config.vocabSize, path: file.path)
                try e.checkScored(seqLen: L, path: file.path)
            } catch {
                if skipBadLines { Log.warn("skipped \(error)"); skippedRows += 1; continue }
                throw error
            }
            let (w, cut) = Evaluator.windows(e, options)
            windows += w
            result.examples += 1
            if cut { result.truncated += 1 }
        }
        guard !windows.isEmpty else { throw DataError.noUsableExamples(path: file.path, reason: "every line was skipped") }
        result.windows = windows.count

        let loaded = try adapter.map { try Adapter.load($0) }
        let maxR = loaded.map { a in a.moduleNames.map { a.modules[$0]!.r }.max() ?? 1 } ?? 1
        let longest = windows.map(\.ids.count).max() ?? 1
        let rows = Limits.product(min(batchSize, windows.count), longest) ?? Int.max
        let compute = try computeOptions.resolve(cfg)
        try MemoryPlan.estimate(model: m, workspace: Transformer.inferenceWorkspaceBytes(config: m.config, rows: rows, seq: longest, maxR: maxR),
                                rows: rows, adapterParams: loaded?.trainableParameters ?? 0, training: false, compute: compute)
            .check("evaluating \(model) on \(min(batchSize, windows.count)) windows of \(longest) tokens at once",
                   fix: "lower --batch-size or --seq-len, or evaluate a 4-bit base made by lora-quantize", warn: { Log.warn($0) })
        let transformer = try Transformer(model: m)
        transformer.compute = compute
        if let a = loaded {
            try transformer.attach(a, linears: try m.linearModules())
        }
        var bar: ProgressBar? = nil
        let t0 = Date()
        let (nll, count) = try Evaluator.evaluate(transformer, windows: windows, options: options) { done, total in
            if bar == nil { bar = ProgressBar(total: total, label: "eval", unit: " tokens") }
            bar!.update(done)
        }
        Profiler.shared.report()
        guard count > 0 else {
            throw DataError.noUsableExamples(path: file.path, reason: "no token is scored (every target is masked or cut off by --seq-len \(L))")
        }
        result.nll = nll
        result.tokens = count
        let dt = Date().timeIntervalSince(t0)
        let inputTokens = windows.reduce(0) { $0 + $1.ids.count }
        var o = JSONObject()
        o["loss"] = .double(result.loss)
        o["perplexity"] = .double(result.perplexity)
        o["tokens"] = .int(Int64(result.tokens))
        o["examples"] = .int(Int64(result.examples))
        o["windows"] = .int(Int64(result.windows))
        o["truncated"] = .int(Int64(result.truncated))
        o["skipped_lines"] = .int(Int64(file.skipped.count + skippedRows))
        o["seq_len"] = .int(Int64(L))
        o["adapter"] = adapter.map { .string($0) } ?? .null
        // The loss curve of the lora-train run the adapter comes from (its folder, or the run of a checkpoint).
        if let c = adapter.flatMap(LossPlot.curve(forAdapter:)) { o["loss_curve"] = .string(c) }
        o["compute_dtype"] = .string(transformer.compute.label)
        o["tokens_per_s"] = .double((Double(inputTokens) / dt * 10).rounded() / 10)
        o["seconds"] = .double((Date().timeIntervalSince(started) * 100).rounded() / 100)
        emitJSON(.object(o))
    }
}

runMain(Eval.self)
