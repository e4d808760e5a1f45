// lora-train: train LoRA adapters on JSONL data, on a full-precision or 4-bit (QLoRA) base; resumable.
// Metrics go to stdout as JSON lines; checkpoints to OUT/checkpoints; the final adapter (PEFT layout) to OUT.
import ArgumentParser
import Foundation
import LoRACLI
import LoRAShared

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora-train",
        abstract: "Train LoRA adapters (PEFT layout) on JSONL data; QLoRA on a 4-bit base; resumable.",
        discussion: """
            Data rows as lora-eval: text, prompt/completion, instruction or messages. Every flag can also come from \
            --config FILE (a run config, YAML or JSON, shared with lora-init and lora-eval); flags win. The effective configuration is \
            saved as OUT/training_config.json. Exit codes: 0 done; 1 error; 64 bad flags; 130 / 143 stopped by \
            SIGINT / SIGTERM after finishing the step and writing a checkpoint (continue with --resume). \
            Under mpirun / srun it trains data-parallel: N ranks share every global batch of N × --batch-size × \
            --grad-accum sequences, --threads is per rank, rank 0 writes (see the README, Multi-process training).
            """)

    @Argument(help: "Model folder (full precision, or 4-bit from lora-quantize / bitsandbytes).")
    var model: String
    @Argument(help: "Adapter to train: a PEFT folder (lora-init), a single-file adapter, or '-' for stdin (not needed with --show-examples).")
    var adapter: String?
    @Option(help: "Training data: JSONL (or a JSON array, gzip too), '-' for stdin, or a folder with train.jsonl (and valid.jsonl, used for validation unless --valid is given).") var data: String?
    @Option(name: .shortAndLong, help: "Output folder: final adapter, checkpoints/, training_config.json, loss.svg (the loss curve, updated at each logged step).") var output: String?
    @Option(help: "Validation data (JSONL), evaluated every --eval-every steps and at the end.") var valid: String?
    @Option(help: "Validation interval in steps (0: only at the end). [default: \(Defaults.evalEvery)]") var evalEvery: Int?
    @Option(help: "Tokens per sequence; longer examples are truncated (counted). [default: \(Defaults.seqLen)]") var seqLen: Int?
    @Option(help: "Sequences per micro-batch. [default: \(Defaults.batchSize)]") var batchSize: Int?
    @Option(help: "Micro-batches per optimizer step. [default: \(Defaults.gradAccum)]") var gradAccum: Int?
    @Option(help: "Passes over the data (ignored with --max-steps). [default: \(Defaults.epochs)]") var epochs: Int?
    @Option(help: "Stop after this many optimizer steps.") var maxSteps: Int?
    @Option(help: "Peak learning rate. [default: \(Defaults.lr)]") var lr: Double?
    @Option(help: "constant, linear or cosine (after warmup). [default: \(Defaults.lrSchedule)]") var lrSchedule: LRSchedule?
    @Option(help: "Warmup steps (overrides --warmup-ratio).") var warmupSteps: Int?
    @Option(help: "Warmup as a fraction of all steps. [default: \(Defaults.warmupRatio)]") var warmupRatio: Double?
    @Option(help: "AdamW decoupled weight decay. [default: \(Defaults.weightDecay)]") var weightDecay: Double?
    @Option(help: "AdamW beta1. [default: \(Defaults.adamBeta1)]") var adamBeta1: Double?
    @Option(help: "AdamW beta2. [default: \(Defaults.adamBeta2)]") var adamBeta2: Double?
    @Option(help: "AdamW epsilon. [default: \(Defaults.adamEps)]") var adamEps: Double?
    @Option(help: "LoRA+: lora_B's learning rate is this × --lr (and × the schedule), as PEFT's create_loraplus_optimizer; 1 is plain LoRA. [default: \(Defaults.loraplusLrRatio)]") var loraplusLrRatio: Double?
    @Option(help: "Clip gradients to this global norm (0: off). [default: \(Defaults.maxGradNorm)]") var maxGradNorm: Double?
    @Option(help: "LoRA dropout on A's input. [default: the adapter's lora_dropout]") var dropout: Double?
    @Option(name: .customLong("mask-prompt"), help: "Score only completion / assistant tokens: true or false. [default: true except for text rows]") var maskPrompt: Bool?
    @Flag(help: "Pack several examples into each sequence (attention never crosses examples).") var packing = false
    @Flag(help: "Activation checkpointing: keep only each layer's input, recompute the layer in backward (less memory, one more forward).") var gradCheckpoint = false
    @Option(help: "Log a metrics line every N steps. [default: \(Defaults.logEvery)]") var logEvery: Int?
    @Option(help: "Write a checkpoint every N steps (0: only when stopped). [default: \(Defaults.saveEvery)]") var saveEvery: Int?
    @Option(help: "Checkpoints to keep. [default: \(Defaults.keepLast)]") var keepLast: Int?
    @Flag(help: "Continue from the latest checkpoint in OUT.") var resume = false
    @Option(help: "Continue from this checkpoint folder.") var resumeFrom: String?
    @Option(help: "Run config (YAML or JSON): its data, training and compute sections, seed and output (flat key: value files and training_config.json too); flags win. See pipelines/run.example.yaml.") var config: String?
    @Flag(name: .customLong("skip-bad-lines"), help: "Count and report malformed lines and unusable examples instead of stopping.") var skipBadLinesFlag = false
    @Flag(help: "Train into an OUT that already holds a finished adapter or checkpoints, starting over.") var force = false
    @Option(help: "Print the first N examples as training builds them (masking, --seq-len truncation, packing), then exit without training or writing anything.") var showExamples: Int?
    @Option(help: "--show-examples output: text (trained tokens marked) or jsonl (ids, tokens, labels). [default: text]") var format: ShowFormat = .text
    @Flag(help: "Train up to --sanity-steps steps on one fixed batch (the first --sanity-examples examples) with dropout and weight decay 0, and report whether the loss falls near zero, naming the likely cause if not; writes nothing. Exit 0: passed, 1: failed.") var sanityCheck = false
    @Option(help: "--sanity-check: most steps. [default: \(Defaults.sanitySteps)]") var sanitySteps: Int?
    @Option(help: "--sanity-check: examples in the batch. [default: \(Defaults.sanityExamples)]") var sanityExamples: Int?
    @OptionGroup var common: CommonOptions
    @OptionGroup var computeOptions: ComputeOptions

    func run() throws {
        let cfg = try config.map { try ConfigFile(path: $0, tool: "lora-train") }
        try common.apply(cfg)
        Interrupt.graceful = true
        let skipBadLines = try skipBadLinesFlag || (cfg?.bool("skip-bad-lines") ?? false)
        // The config's value is read (and type-checked) even when the flag wins, so every key it has is known.
        func pick<T>(_ flag: T?, _ key: String, _ get: (ConfigFile, String) throws -> T?, _ def: T) rethrows -> T {
            let fromConfig = try cfg.flatMap { try get($0, key) }
            return flag ?? fromConfig ?? def
        }
        let dataFromConfig = try cfg?.string("data"), outFromConfig = try cfg?.string("output")
        guard let dataArg = data ?? dataFromConfig else { throw UsageError("--data is required (a JSONL file, a folder with train.jsonl, or '-')") }
        // Data-parallel ranks (mpirun / srun), or nil: a single process never loads MPI.
        let world = try MPIWorld.fromEnvironment()
        if let w = world {
            w.install()
            Log.info("data-parallel: \(w.size) ranks (\(w.library)), global batch \(w.size) × --batch-size × --grad-accum")
            if showExamples != nil || sanityCheck {
                throw UsageError("--show-examples and --sanity-check run in one process; run them without mpirun / srun")
            }
            if dataArg == "-" || adapter == "-" {
                throw UsageError("under mpirun / srun every rank reads the data and the adapter itself; pass files, not '-'")
            }
        }
        if let n = showExamples, n < 1 { throw UsageError("--show-examples must be at least 1 (got \(n))") }
        if sanityCheck && showExamples != nil { throw UsageError("--sanity-check and --show-examples are separate runs; pass one") }
        if !sanityCheck && (sanitySteps != nil || sanityExamples != nil) { throw UsageError("--sanity-steps and --sanity-examples apply to --sanity-check only") }
        var sanity = SanityOptions()
        let sanitySteps = try self.sanitySteps ?? (sanityCheck ? cfg?.int("sanity-steps") : nil)
        let sanityExamples = try self.sanityExamples ?? (sanityCheck ? cfg?.int("sanity-examples") : nil)
        if let n = sanitySteps { guard (1...Limits.maxSteps).contains(n) else { throw UsageError("--sanity-steps must be in 1...\(Limits.maxSteps)") }; sanity.steps = n }
        if let n = sanityExamples { guard (1...4096).contains(n) else { throw UsageError("--sanity-examples must be in 1...4096") }; sanity.examples = n }
        if sanityCheck && (resume || resumeFrom != nil) { throw UsageError("--sanity-check starts from the adapter given; it does not resume (drop --resume)") }
        // --show-examples trains nothing: it needs no adapter and writes nothing, -o or not.
        if showExamples == nil {
            if format != .text { throw UsageError("--format applies to --show-examples only") }
            if adapter == nil { throw UsageError("the adapter to train is required (a PEFT folder from lora-init, a file, or '-')") }
            if output == nil && outFromConfig == nil && !sanityCheck { throw UsageError("--output is required") }
        }
        var o = TrainOptions()
        o.seqLen = try pick(seqLen, "seq-len", { try $0.int($1) }, Defaults.seqLen)
        o.batchSize = try pick(batchSize, "batch-size", { try $0.int($1) }, Defaults.batchSize)
        o.gradAccum = try pick(gradAccum, "grad-accum", { try $0.int($1) }, Defaults.gradAccum)
        o.epochs = try pick(epochs, "epochs", { try $0.int($1) }, Defaults.epochs)
        let maxStepsFromConfig = try cfg?.int("max-steps")
        o.maxSteps = maxSteps ?? maxStepsFromConfig
        o.adam.lr = try pick(lr, "lr", { try $0.double($1) }, Defaults.lr)
        o.schedule = try pick(lrSchedule, "lr-schedule", { c, k in try c.string(k).map { s in
            guard let v = LRSchedule(rawValue: s) else { throw UsageError("\(c.path): lr-schedule must be constant, linear or cosine") }
            return v } }, LRSchedule(rawValue: Defaults.lrSchedule)!)
        let warmupFromConfig = try cfg?.int("warmup-steps")
        o.warmupSteps = warmupSteps ?? warmupFromConfig
        o.warmupRatio = try pick(warmupRatio, "warmup-ratio", { try $0.double($1) }, Defaults.warmupRatio)
        o.adam.weightDecay = try pick(weightDecay, "weight-decay", { try $0.double($1) }, Defaults.weightDecay)
        o.adam.beta1 = try pick(adamBeta1, "adam-beta1", { try $0.double($1) }, Defaults.adamBeta1)
        o.adam.beta2 = try pick(adamBeta2, "adam-beta2", { try $0.double($1) }, Defaults.adamBeta2)
        o.adam.eps = try pick(adamEps, "adam-eps", { try $0.double($1) }, Defaults.adamEps)
        o.loraplusLrRatio = try pick(loraplusLrRatio, "loraplus-lr-ratio", { try $0.double($1) }, Defaults.loraplusLrRatio)
        o.maxGradNorm = try pick(maxGradNorm, "max-grad-norm", { try $0.double($1) }, Defaults.maxGradNorm)
        let packingFromConfig = try cfg?.bool("packing") ?? false
        o.packing = packing || packingFromConfig
        let gcFromConfig = try cfg?.bool("grad-checkpoint") ?? false
        o.gradCheckpoint = gradCheckpoint || gcFromConfig
        o.logEvery = try pick(logEvery, "log-every", { try $0.int($1) }, Defaults.logEvery)
        o.evalEvery = try pick(evalEvery, "eval-every", { try $0.int($1) }, Defaults.evalEvery)
        o.saveEvery = try pick(saveEvery, "save-every", { try $0.int($1) }, Defaults.saveEvery)
        o.keepLast = try pick(keepLast, "keep-last", { try $0.int($1) }, Defaults.keepLast)
        o.seed = try common.seed(cfg)
        let maskFromConfig = try cfg?.bool("mask-prompt"), validFromConfig = try cfg?.string("valid")
        let mask = maskPrompt ?? maskFromConfig
        let (dataPath, validPath) = try DataDir.forTraining(data: dataArg, valid: valid ?? validFromConfig)
        if dataPath != dataArg { Log.info("data: \(dataPath)\(validPath.map { ", validation: \($0)" } ?? "")") }
        let dropoutFromConfig = try cfg?.double("dropout")
        let compute = try computeOptions.resolve(cfg)
        try TrainCLI.validate(o)

        let m = try ModelDir(path: model)
        try m.validate()
        guard o.seqLen <= m.config.maxPositionEmbeddings else {
            throw UsageError("--seq-len \(o.seqLen) exceeds the model's context of \(m.config.maxPositionEmbeddings) tokens; lower --seq-len")
        }
        if let n = showExamples {
            // Examples as training builds them.
            let tokenizer = try Tokenizer.load(directory: model)
            let file = try JSONLFile.read(dataPath, skipBad: skipBadLines)
            for s in file.skipped { Log.warn("skipped \(s)") }
            let units = try ShowExamples.trainExamples(file, tokenizer: tokenizer, maskPrompt: mask, seqLen: o.seqLen, vocab: m.config.vocabSize,
                                                       packing: o.packing, seed: o.seed, skipBad: skipBadLines, count: n)
            try ShowExamples.render(units, requested: n, tokenizer: tokenizer, seqLen: o.seqLen, format: format, tool: "lora-train",
                                    path: file.path, color: isatty(1) != 0)
            return
        }
        let adapter = adapter!
        let startAdapter = try Adapter.load(adapter)
        // The run config's lora section is lora-init's; an adapter made with other values is named, not overridden.
        if let c = cfg {
            if let r = c.other("lora.rank")?.intValue, Int(r) != startAdapter.config.r {
                Log.warn("\(c.path): lora.rank is \(r) but the adapter \(adapter) has r = \(startAdapter.config.r); training the adapter as it is (lora-init makes it from the lora section)")
            }
            if let al = c.other("lora.alpha")?.doubleValue, al != startAdapter.config.alpha {
                Log.warn("\(c.path): lora.alpha is \(al) but the adapter \(adapter) has lora_alpha = \(startAdapter.config.alpha); training the adapter as it is")
            }
        }
        let maxR = startAdapter.moduleNames.map { startAdapter.modules[$0]!.r }.max() ?? 1
        let rows = Limits.product(o.batchSize, o.seqLen) ?? Int.max
        func plan(_ checkpointed: Bool) -> MemoryPlan {
            MemoryPlan.estimate(model: m, workspace: Transformer.trainWorkspaceBytes(config: m.config, rows: rows, seq: o.seqLen, maxR: maxR,
                                                                                    checkpointed: checkpointed, dora: startAdapter.config.useDora),
                                rows: rows, adapterParams: startAdapter.trainableParameters, training: true, compute: compute,
                                mlpBlock: Transformer.trainMLPBlock(config: m.config, rows: rows, dora: startAdapter.config.useDora))
        }
        var fixes: [String] = []
        if !o.gradCheckpoint { fixes.append("pass --grad-checkpoint (activations \(MemoryPlan.gb(plan(true).workspace)))") }
        fixes.append("lower --batch-size (raise --grad-accum to keep the global batch) or --seq-len")
        if !(try m.linearModules()).contains(where: \.quantized) { fixes.append("or train on a 4-bit base made by lora-quantize (QLoRA)") }
        try plan(o.gradCheckpoint).check("training \(model) at --batch-size \(o.batchSize) × --seq-len \(o.seqLen)",
                                         fix: fixes.joined(separator: ", "), warn: { Log.warn($0) })
        let linears = try m.linearModules()
        let transformer = try Transformer(model: m)
        transformer.compute = compute
        o.compute = transformer.compute
        try transformer.attach(startAdapter, linears: linears)
        o.dropout = dropout ?? dropoutFromConfig ?? startAdapter.config.dropout
        guard o.dropout >= 0 && o.dropout < 1 else { throw UsageError("--dropout must be in [0, 1)") }

        let tokenizer = try Tokenizer.load(directory: model)
        let file = try JSONLFile.read(dataPath, skipBad: skipBadLines)
        for s in file.skipped { Log.warn("skipped \(s)") }
        if sanityCheck {
            let batch = try SanityCLI.batch(file, tokenizer: tokenizer, maskPrompt: mask, seqLen: o.seqLen, vocab: m.config.vocabSize,
                                            skipBad: skipBadLines, count: sanity.examples)
            if batch.isEmpty { throw TrainError.noExamples(reason: "\(file.path): every example was dropped") }
            let stop = try StopTokens.of(model: model, config: m.config, tokenizer: tokenizer)
            let passed = try SanityCLI.run(model: transformer, adapterConfig: startAdapter.config, batch: batch, options: o, sanity: sanity,
                                           stop: stop, tokenizer: tokenizer, path: file.path)
            if !passed { throw ExitCode(1) }
            return
        }
        let out = (output ?? outFromConfig)!
        let (examples, stats) = try TrainCLI.examples(file, tokenizer: tokenizer, maskPrompt: mask, seqLen: o.seqLen,
                                                      vocab: m.config.vocabSize, skipBad: skipBadLines)
        var validWindows: [Window] = []
        if let vp = validPath {
            let vf = try JSONLFile.read(vp, skipBad: skipBadLines, name: "--valid")
            let vb = try ExampleBuilder(tokenizer: tokenizer, maskPrompt: mask, path: vf.path, maxTokens: o.seqLen)
            for s in vf.skipped { Log.warn("skipped \(s)") }
            for r in vf.records {
                let e: Example
                do {
                    e = try vb.build(r)
                    try e.checkVocabulary(m.config.vocabSize, path: vf.path)
                    try e.checkScored(seqLen: o.seqLen, path: vf.path)
                } catch {
                    if skipBadLines { Log.warn("skipped \(error)"); continue }
                    throw error
                }
                validWindows += Evaluator.windows(e, EvalOptions(seqLen: o.seqLen)).windows
            }
            if validWindows.isEmpty { throw DataError.noUsableExamples(path: vf.path, reason: "every line was skipped") }
        }
        Log.info("data: \(examples.count) examples, \(stats.truncated) truncated, \(stats.dropped) dropped, \(stats.targets) target tokens")

        let fingerprint = TrainCLI.fingerprint(model: m, adapter: startAdapter, data: file, options: o, maskPrompt: mask)
        let trainer = Trainer(model: transformer, adapterConfig: startAdapter.config, examples: examples, valid: validWindows,
                              options: o, outDir: out, fingerprint: fingerprint, world: world)
        if let w = world {
            let seqs = trainer.sequencesPerEpoch
            if seqs < w.size { throw DataParallelError.tooFewSequences(ranks: w.size, sequences: seqs) }
        }
        // Rank 0 alone owns (locks, creates, cleans) the output folder; every rank reads the checkpoint it resumes
        // (OUT on storage all ranks see, as a cluster's shared file system).
        if trainer.isWriter { try TrainCLI.prepareOutput(out, resume: resume || resumeFrom != nil, force: force) }
        if let p = resumeFrom { try trainer.resume(from: p) }
        else if resume {
            guard let latest = Checkpoint.list(out).last else { throw CheckpointError.none(dir: out) }
            try trainer.resume(from: latest.path)
        }
        if let w = world {
            let items = TrainCLI.rankItems(model: m, adapter: startAdapter, data: file, valid: validWindows, options: o, maskPrompt: mask,
                                           output: out, resumedStep: trainer.state.step)
            let differ = try DataParallel.differing(items, world: w)
            if !differ.isEmpty { throw DataParallelError.mismatch(what: differ, ranks: w.size) }
        }
        if trainer.state.step > 0 { Log.info("resumed at step \(trainer.state.step) of \(trainer.totalSteps)") }
        if trainer.isWriter {
            try TrainCLI.saveConfig(out, o, model: model, adapter: adapter, data: dataPath, valid: validPath, maskPrompt: mask)
        }
        // The adapter's weights live in the transformer now, and the optimizer's first step replaces them: the file's
        // arrays, still held here, would stay beside them for the whole run (0.15 GB on a 7B model at r 16).
        startAdapter.modules = [:]
        try TrainCLI.run(trainer, stats: stats, out: out, model: model)
    }
}

runMain(Train.self)
