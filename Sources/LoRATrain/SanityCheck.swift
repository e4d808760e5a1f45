// SanityCheck: `lora-train --sanity-check`, the one-batch test before a long run. A correct setup can overfit a
// handful of examples: trained on one fixed batch, its loss falls near zero within ~100 steps. The check first looks
// at what the batch trains on (the failures that need no training to see: nothing trained, the prompt trained, no
// stop token at the end of a trained turn), then trains on the batch alone (dropout 0, weight decay 0, constant
// learning rate) until the loss falls below the threshold, the loss stalls, or the steps run out, and names the
// likely cause of a failure. It reports through a callback and writes nothing.
import Foundation

public struct SanityOptions: Sendable {
    /// Most optimizer steps (`--sanity-steps`).
    public var steps = Defaults.sanitySteps
    /// Examples in the batch (`--sanity-examples`): the first ones of the data, in file order.
    public var examples = Defaults.sanityExamples
    /// Passed when the loss falls to `relative` × the first loss or to `absolute`, whichever is higher.
    public var relative = 0.05, absolute = 0.05
    /// Stopped as stalled when after `stallSteps` steps the loss has fallen less than `stallFraction` of the first.
    public var stallSteps = 20, stallFraction = 0.01
    public init() {}

    public func threshold(firstLoss: Double) -> Double { max(relative * firstLoss, absolute) }
}

public enum SanityCause: String, Sendable, CaseIterable {
    case noTrainedTokens = "no-trained-tokens"
    case promptTrained = "prompt-trained"
    case missingEOS = "missing-eos"
    case lrTooSmall = "lr-too-small"
    case lossRose = "loss-rose"
    case notConverged = "not-converged"
    case nonFinite = "non-finite-loss"
}

public struct SanityProblem: Sendable {
    public var cause: SanityCause
    public var message: String
    /// Data lines it was seen on (empty for training causes).
    public var lines: [Int]
}

/// One example of the batch as the run builds it, with `masked`, the same row built with prompt masking on (nil for
/// text rows, which have no prompt), and why it trains nothing, if it does not.
public struct SanityExample: Sendable {
    public var example: Example
    public var masked: Example?
    public var unusable: String?
    public init(example: Example, masked: Example?, unusable: String?) {
        self.example = example
        self.masked = masked
        self.unusable = unusable
    }
}

public struct SanityStep: Sendable {
    public var step: Int, loss: Double, gradNorm: Double, lr: Double, elapsed: Double
    /// The first step's loss and the threshold it sets.
    public var firstLoss: Double, threshold: Double
}

public struct SanityRun: Sendable {
    public var losses: [Double] = []
    public var threshold: Double? = nil
    public var reached = false
    public var problems: [SanityProblem] = []
    public var seconds = 0.0
    public init() {}
}

public enum SanityCheck {
    /// "line 3", "lines 1–8" (consecutive), "lines 2, 5, 9, …" (at most 8 named).
    public static func describe(lines l: [Int]) -> String {
        guard let a = l.first, let b = l.last else { return "no lines" }
        if l.count > 2 && l == Array(a...b) { return "lines \(a)–\(b)" }
        return (l.count == 1 ? "line " : "lines ") + l.prefix(8).map(String.init).joined(separator: ", ") + (l.count > 8 ? ", …" : "")
    }

    /// What the batch trains on, checked without training. `stop` holds the token ids that end generation.
    public static func dataProblems(_ xs: [SanityExample], seqLen: Int, stop: Set<Int32>, tokenizer: Tokenizer) -> [SanityProblem] {
        var problems: [SanityProblem] = []
        let lines = describe(lines:)
        // Nothing trained.
        let empty = xs.filter { $0.unusable != nil }
        if !empty.isEmpty {
            let all = empty.count == xs.count
            problems.append(SanityProblem(cause: .noTrainedTokens,
                message: "\(all ? "no example of the batch" : "\(empty.count) of the \(xs.count) examples") trains any token (\(lines(empty.map(\.example.line)))): \(empty[0].unusable!)",
                lines: empty.map(\.example.line)))
        }
        let usable = xs.filter { $0.unusable == nil }
        // The prompt trained: positions trained in the run that masking would not train, or chat markup in text rows.
        var promptLines: [Int] = [], promptTokens = 0, trainedTokens = 0
        var chatTextLines: [Int] = [], markers: [String: Int] = [:]
        let plain = Set([tokenizer.bosTokenId, tokenizer.eosTokenId, tokenizer.padTokenId, tokenizer.unkTokenId].compactMap { $0 })
        for x in usable {
            let e = x.example, n = min(e.ids.count, seqLen)
            let trained = (1..<max(1, n)).filter { e.targets[$0] }
            trainedTokens += trained.count
            if let m = x.masked {
                let extra = trained.filter { !m.targets[$0] }.count
                if extra > 0 { promptLines.append(e.line); promptTokens += extra }
            } else {
                var found = false
                for k in trained {
                    let id = Int(e.ids[k])
                    if !plain.contains(id) && !stop.contains(Int32(id)) && tokenizer.isSpecialToken(id) {
                        markers[tokenizer.idToToken(id) ?? "id \(id)", default: 0] += 1
                        found = true
                    }
                }
                if found { chatTextLines.append(e.line) }
            }
        }
        if !promptLines.isEmpty {
            problems.append(SanityProblem(cause: .promptTrained,
                message: "trained tokens include the prompt: \(promptTokens) of the \(trainedTokens) trained tokens are prompt, user or system tokens or template markup (\(lines(promptLines))); --mask-prompt false trains the model to write the prompts too: leave it at its default (true), so only completions and assistant turns are trained",
                lines: promptLines))
        }
        if !chatTextLines.isEmpty {
            let shown = markers.sorted { $0.value > $1.value }.prefix(3).map { "\($0.key) ×\($0.value)" }.joined(separator: ", ")
            problems.append(SanityProblem(cause: .promptTrained,
                message: "trained tokens include the prompt: \(lines(chatTextLines)) \(chatTextLines.count == 1 ? "is a text row that holds" : "are text rows that hold") a rendered chat (\(shown)), and a text row trains every token, the user turns and the template markup too; give conversations as {\"messages\": [...]} rows (or {\"prompt\", \"completion\"}), so only the assistant turns are trained",
                lines: chatTextLines))
        }
        // Each trained turn (the masked build's spans; a text row's whole text) must end with a stop token, or the
        // model never learns to stop. Whitespace the template puts after the end-of-turn token does not count; a
        // span cut by --seq-len is not judged (its end was never going to be seen).
        var eosLines: [Int] = [], endings: [String] = []
        for x in usable {
            let e = x.masked ?? x.example, n = min(e.ids.count, seqLen)
            var k = 1
            while k < n {
                guard e.targets[k] else { k += 1; continue }
                var end = k
                while end + 1 < n && e.targets[end + 1] { end += 1 }
                let cut = end == n - 1 && e.ids.count > seqLen
                var last = end
                while last > k && !stop.contains(e.ids[last]) && !tokenizer.isSpecialToken(Int(e.ids[last]))
                        && tokenizer.decode([Int(e.ids[last])]).allSatisfy(\.isWhitespace) { last -= 1 }
                if !cut && !stop.contains(e.ids[last]) {
                    if eosLines.last != e.line { eosLines.append(e.line) }
                    if endings.count < 2 {
                        let tail = tokenizer.decode(e.ids[max(k, last - 3)...last].map(Int.init))
                        endings.append("\"…\(tail.replacingOccurrences(of: "\n", with: "\\n"))\"")
                    }
                }
                k = end + 1
            }
        }
        if !eosLines.isEmpty {
            let names = stop.sorted().prefix(3).map { tokenizer.idToToken(Int($0)) ?? "id \($0)" }
            let fix: String
            if stop.isEmpty {
                fix = "the model names no end-of-sequence token (eos_token in tokenizer_config.json, eos_token_id in config.json or generation_config.json): set eos_token in tokenizer_config.json to the token its chat template ends a turn with"
            } else if usable.contains(where: { $0.masked == nil && eosLines.contains($0.example.line) }) {
                fix = "end each text with \(names[0]), or give the data as {\"messages\"} or {\"prompt\", \"completion\"} rows, which get it added"
            } else if tokenizer.eosToken == nil {
                fix = "tokenizer_config.json names no eos_token, so none is added to completions and assistant turns: set eos_token to the token the chat template ends a turn with"
            } else {
                fix = "make tokenizer_config.json's eos_token the token the chat template ends a turn with"
            }
            problems.append(SanityProblem(cause: .missingEOS,
                message: "no EOS at the end of the trained turn (\(lines(eosLines))): the trained tokens end with \(endings.joined(separator: ", ")), not with a stop token\(names.isEmpty ? "" : " (\(names.joined(separator: ", ")))"), so the model does not learn to stop; \(fix)",
                lines: eosLines))
        }
        return problems
    }

    /// Trains `trainer` (built on the batch's examples alone, with the check's options) on its one batch: every
    /// step sees all of it. Stops when the loss reaches the threshold, stalls, turns non-finite, or after
    /// `sanity.steps` steps, and names the cause of a failure.
    public static func train(_ trainer: Trainer, sanity: SanityOptions, onStep: (SanityStep) -> Void) throws -> SanityRun {
        let o = trainer.options
        let group = Batching.epoch(trainer.examples, epoch: 0, seed: o.seed, batchSize: o.batchSize, seqLen: o.seqLen, packing: o.packing)
        let grads = LoRAGradients(for: trainer.model.lora)
        let started = Date()
        var run = SanityRun()
        for step in 1...max(1, sanity.steps) {
            let r: (loss: Double, gradNorm: Float, tokens: Int)
            do {
                r = try trainer.optimizerStep(group, grads: grads, lr: o.adam.lr, step: step, dropout: 0, checkpoint: nil)
            } catch TrainError.nonFinite(let s, let what, _) {
                let before = run.losses.last.map { String(format: " (step \(s - 1): %.4f)", $0) } ?? ""
                run.problems.append(SanityProblem(cause: .nonFinite,
                    message: "\(what) is not finite at step \(s)\(before): lower --lr (now \(o.adam.lr)), or check the model for NaN/Inf weights (lora-inspect MODEL --tensor NAME)",
                    lines: []))
                run.seconds = Date().timeIntervalSince(started)
                return run
            }
            run.losses.append(r.loss)
            let first = run.losses[0]
            let threshold = sanity.threshold(firstLoss: first)
            run.threshold = threshold
            onStep(SanityStep(step: step, loss: r.loss, gradNorm: Double(r.gradNorm), lr: o.adam.lr, elapsed: Date().timeIntervalSince(started),
                              firstLoss: first, threshold: threshold))
            run.seconds = Date().timeIntervalSince(started)
            if r.loss <= threshold { run.reached = true; return run }
            if step == sanity.stallSteps && step < sanity.steps && first - (run.losses.min() ?? first) < sanity.stallFraction * first { break }
        }
        run.problems.append(diagnose(run.losses, threshold: run.threshold ?? 0, lr: o.adam.lr, sanity: sanity))
        return run
    }

    /// Why a loss curve that did not reach the threshold failed.
    static func diagnose(_ losses: [Double], threshold: Double, lr: Double, sanity: SanityOptions) -> SanityProblem {
        let first = losses[0], last = losses[losses.count - 1], best = losses.min() ?? first
        let steps = losses.count
        let curve = String(format: "%.4f → %.4f", first, last)
        if last > first * 1.02 || (losses.max() ?? first) > first * 1.5 {
            return SanityProblem(cause: .lossRose,
                message: "the loss rose (\(curve), highest \(String(format: "%.4f", losses.max() ?? first))) in \(steps) steps at --lr \(lr): the learning rate is likely too large; lower --lr (LoRA usually trains at 1e-4 to 2e-3)",
                lines: [])
        }
        let fell = (first - best) / first
        if fell < 0.1 {
            let hint = lr < 1e-5
                ? "the learning rate is too small to move the loss; raise --lr (LoRA usually trains at 1e-4 to 2e-3)"
                : "at this learning rate the loss should move: check that the adapter trains at all (lora-inspect ADAPTER: scaling = alpha / r must not be 0) or raise --lr"
            return SanityProblem(cause: .lrTooSmall,
                message: "the loss fell only \(String(format: "%.2f", 100 * fell))% (\(curve)) in \(steps) steps at --lr \(lr): \(hint)",
                lines: [])
        }
        return SanityProblem(cause: .notConverged,
            message: "the loss fell (\(curve), best \(String(format: "%.4f", best))) but not to \(String(format: "%.4f", threshold)) in \(steps) steps at --lr \(lr): give it more steps (--sanity-steps) or a larger --lr; if it has flattened out, the batch may hold rows with the same prompt and different answers",
            lines: [])
    }
}
