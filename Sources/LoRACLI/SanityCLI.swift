// SanityCLI: `lora-train --sanity-check`. Builds the batch (the first --sanity-examples examples, exactly as training
// builds them), checks what it trains on, trains on it alone, and reports: the loss curve on stderr as it goes (a
// bar per step) and as JSON lines on stdout, then one JSON verdict. Writes no file. Exit 0: passed; 1: failed.
import Foundation
import LoRAShared

public enum SanityCLI {
    /// The first `count` examples of `file` as the run builds them (`--skip-bad-lines` drops rows that train
    /// nothing, as training would; without it they stay in the batch and fail the check by name).
    public static func batch(_ file: JSONLFile, tokenizer: Tokenizer, maskPrompt: Bool?, seqLen: Int, vocab: Int, skipBad: Bool,
                             count: Int) throws -> [SanityExample] {
        let builder = try ExampleBuilder(tokenizer: tokenizer, maskPrompt: maskPrompt, path: file.path, maxTokens: seqLen)
        // With --mask-prompt false, the same rows masked: what the prompt is, and where each trained turn ends.
        let masking = maskPrompt == false
            ? try ExampleBuilder(tokenizer: tokenizer, maskPrompt: true, path: file.path, maxTokens: seqLen) : nil
        let (first, _) = try ShowExamples.firstExamples(file, builder, vocab: vocab, seqLen: seqLen, skipBad: skipBad, count: count)
        return try first.map { e, why, record in
            let masked = e.format == .text ? nil : try masking.map { try $0.build(record) } ?? e
            return SanityExample(example: e, masked: masked, unusable: why)
        }
    }

    /// Runs the check and prints its report; true when it passed.
    public static func run(model: Transformer, adapterConfig: LoRAConfig, batch: [SanityExample], options: TrainOptions,
                           sanity: SanityOptions, stop: Set<Int>, tokenizer: Tokenizer, path: String) throws -> Bool {
        let started = Date()
        let usable = batch.filter { $0.unusable == nil }.map(\.example)
        if batch.count < sanity.examples {
            Log.info("sanity check: \(path) gives only \(batch.count) example\(batch.count == 1 ? "" : "s") (--sanity-examples \(sanity.examples)); the check uses \(batch.count == 1 ? "it" : "those")")
        }
        let seqs = batch.map { Batching.sequence($0.example, seqLen: options.seqLen) }
        let tokens = seqs.reduce(0) { $0 + $1.ids.count }, trained = seqs.reduce(0) { $0 + $1.scored }
        Log.info("sanity check: \(batch.count) examples (\(SanityCheck.describe(lines: batch.map(\.example.line)))), \(tokens) tokens, \(trained) trained; up to \(sanity.steps) steps at --lr \(options.adam.lr) (constant), dropout 0, weight decay 0; passes when the loss falls to \(Int(sanity.relative * 100))% of the first or to \(sanity.absolute)")
        var problems = SanityCheck.dataProblems(batch, seqLen: options.seqLen, stop: Set(stop.map { Int32($0) }), tokenizer: tokenizer)
        var run = SanityRun()
        if problems.isEmpty {
            var o = options
            o.dropout = 0
            o.adam.weightDecay = 0
            o.schedule = .constant
            o.warmupSteps = 0
            o.maxSteps = sanity.steps
            let trainer = Trainer(model: model, adapterConfig: adapterConfig, examples: usable, valid: [], options: o, outDir: "",
                                  fingerprint: "")
            run = try SanityCheck.train(trainer, sanity: sanity) { s in
                var j = JSONObject()
                j["sanity_step"] = .int(Int64(s.step)); j["loss"] = TrainCLI.round(s.loss); j["grad_norm"] = TrainCLI.round(s.gradNorm)
                j["lr"] = .double(s.lr); j["elapsed_s"] = TrainCLI.round(s.elapsed, 100)
                emitJSON(.object(j))
                Log.info(String(format: "sanity step %3d/%d  loss %8.4f  %@", s.step, sanity.steps, s.loss,
                                bar(s.loss, first: s.firstLoss, threshold: s.threshold)))
            }
            problems += run.problems
        } else {
            Log.info("sanity check: the batch itself is wrong; not training (fix the data or the flags, then run the check again)")
        }
        let passed = problems.isEmpty
        var out = JSONObject()
        out["sanity_check"] = .string(passed ? "passed" : "failed")
        out["examples"] = .int(Int64(batch.count))
        out["lines"] = .array(batch.map { .int(Int64($0.example.line)) })
        out["tokens"] = .int(Int64(tokens)); out["trained_tokens"] = .int(Int64(trained))
        out["lr"] = .double(options.adam.lr)
        out["steps"] = .int(Int64(run.losses.count))
        out["first_loss"] = run.losses.first.map { TrainCLI.round($0) } ?? .null
        out["final_loss"] = run.losses.last.map { TrainCLI.round($0) } ?? .null
        out["best_loss"] = run.losses.min().map { TrainCLI.round($0) } ?? .null
        out["threshold"] = run.threshold.map { TrainCLI.round($0) } ?? .null
        out["problems"] = .array(problems.map { p in
            .object(JSONObject([("cause", .string(p.cause.rawValue)), ("message", .string(p.message)),
                                ("lines", .array(p.lines.map { .int(Int64($0)) }))]))
        })
        out["seconds"] = TrainCLI.round(Date().timeIntervalSince(started), 100)
        emitJSON(.object(out))
        if passed {
            Log.info(String(format: "sanity check passed: the loss fell from %.4f to %.4f (threshold %.4f) in %d steps, %.0f s",
                            run.losses.first ?? 0, run.losses.last ?? 0, run.threshold ?? 0, run.losses.count, run.seconds))
        } else {
            for p in problems { Log.info("sanity check failed: \(p.cause.rawValue): \(p.message)") }
        }
        return passed
    }

    /// The loss as a bar 40 columns wide at the first loss, with the threshold marked.
    static func bar(_ loss: Double, first: Double, threshold: Double) -> String {
        let width = 40
        func col(_ x: Double) -> Int { first > 0 && x.isFinite ? max(0, min(width + 20, Int((x / first * Double(width)).rounded()))) : 0 }
        let n = col(loss), t = col(threshold)
        var s = ""
        for i in 0..<max(n, t + 1) { s += i == t ? "|" : (i < n ? "█" : " ") }
        return s
    }
}
