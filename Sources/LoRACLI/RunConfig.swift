// RunConfig: the one description of a run that lora-init, lora-train, lora-eval and the pipelines share — every key a
// run config (`--config FILE`, `make CONFIG=FILE`, cron's CONFIG) may hold, the section it belongs in, the tools that
// read it, and its default (from `Defaults`, the only definition of them: the tools' flags and options structs fall
// back to them, and pipelines/run.example.yaml, checked against this table by the tests, shows them).
import Foundation
import LoRAShared

public enum RunConfig {
    public enum Kind: String, Sendable { case int = "integer", number, bool = "true or false", string, list = "list of names" }

    /// One key of a run config.
    public struct Key: Sendable {
        /// Section ("" for the top level) and name (dashes; underscores are accepted too).
        public let section: String, name: String
        public let kind: Kind
        /// The tools that read it, and the flag of theirs it stands for.
        public let tools: [String], flag: String
        /// How the key is spelled at the top level of a flat config (`training_config.json`, the old `key: value`
        /// files): the flag's name, except where two tools' flags share one (lora-eval's data is `test`).
        public let flat: String
        /// The default, as shown in run.example.yaml (nil: none, or computed, as `help` says).
        public let example: String?
        public let help: String

        init(_ section: String, _ name: String, _ kind: Kind, _ tools: [String], flag: String? = nil, flat: String? = nil,
             _ example: String?, _ help: String) {
            self.section = section; self.name = name; self.kind = kind; self.tools = tools
            self.flag = flag ?? name; self.flat = flat ?? flag ?? name; self.example = example; self.help = help
        }
        public var qualified: String { section.isEmpty ? name : section + "." + name }
    }

    static let initTool = ["lora-init"], train = ["lora-train"], eval = ["lora-eval"], model = ["lora-init", "lora-train", "lora-eval"]

    public static let sections: [(name: String, help: String)] = [
        ("lora", "the adapter lora-init creates (lora-train and lora-eval read it from the adapter)"),
        ("data", "the data and how examples are built (lora-train, lora-eval)"),
        ("training", "lora-train's optimizer, schedule, logging and checkpoints"),
        ("eval", "lora-eval"),
        ("compute", "threads and arithmetic (every tool that runs the model)"),
    ]

    /// Every key, in the order run.example.yaml lists them. A tool looking a flag up takes the first key of this
    /// list that it reads and the file sets (so eval.seq-len wins over data.seq-len for lora-eval), then a flat one.
    public static let keys: [Key] = [
        Key("", "seed", .int, model, "\(Defaults.seed)", "every random choice; the same inputs and seed give the same bytes"),
        Key("", "output", .string, train, nil, "lora-train's output folder (-o)"),
        Key("lora", "rank", .int, initTool, "\(Defaults.rank)", "LoRA rank r"),
        Key("lora", "alpha", .number, initTool, nil, "lora_alpha (default: 2 × rank)"),
        Key("lora", "dropout", .number, initTool, "\(Defaults.dropout)", "LoRA dropout on A's input when training"),
        Key("lora", "targets", .list, initTool, "[" + Defaults.targets.replacingOccurrences(of: ",", with: ", ") + "]",
            "module names matched as PEFT does, or all-linear"),
        Key("lora", "rslora", .bool, initTool, "false", "rank-stabilized scaling alpha/√r"),
        Key("lora", "dora", .bool, initTool, "false", "DoRA: a magnitude vector per module (use_dora)"),
        Key("lora", "init", .string, initTool, "kaiming", "initialization: kaiming, gaussian, pissa, pissa_niter_N, olora, loftq or loftq_iter_N"),
        Key("data", "train", .string, train, flag: "data", flat: "data", nil,
            "training data: JSONL (JSON array, gzip), or a folder with train.jsonl, valid.jsonl, test.jsonl"),
        Key("data", "valid", .string, train, nil, "validation data (default: the data folder's valid.jsonl)"),
        Key("data", "test", .string, eval, flag: "data", flat: "test", nil, "lora-eval's data (default: the data folder's test.jsonl)"),
        Key("data", "seq-len", .int, ["lora-train", "lora-eval"], nil,
            "tokens per sequence, longer examples truncated (default: lora-train \(Defaults.seqLen), lora-eval the model's context up to \(Defaults.evalMaxSeqLen))"),
        Key("data", "mask-prompt", .bool, ["lora-train", "lora-eval"], nil, "score only completion / assistant tokens (default: true except for text rows)"),
        Key("data", "packing", .bool, train, "false", "pack several examples into each sequence"),
        Key("data", "skip-bad-lines", .bool, ["lora-train", "lora-eval"], "false", "count and report malformed lines instead of stopping"),
        Key("training", "lr", .number, train, "\(Defaults.lr)", "peak learning rate"),
        Key("training", "lr-schedule", .string, train, Defaults.lrSchedule, "constant, linear or cosine (after warmup)"),
        Key("training", "warmup-steps", .int, train, nil, "warmup steps (overrides warmup-ratio)"),
        Key("training", "warmup-ratio", .number, train, "\(Defaults.warmupRatio)", "warmup as a fraction of all steps"),
        Key("training", "epochs", .int, train, "\(Defaults.epochs)", "passes over the data (ignored with max-steps)"),
        Key("training", "max-steps", .int, train, nil, "stop after this many optimizer steps"),
        Key("training", "batch-size", .int, train, "\(Defaults.batchSize)", "sequences per micro-batch"),
        Key("training", "grad-accum", .int, train, "\(Defaults.gradAccum)", "micro-batches per optimizer step"),
        Key("training", "weight-decay", .number, train, "\(Defaults.weightDecay)", "AdamW decoupled weight decay"),
        Key("training", "adam-beta1", .number, train, "\(Defaults.adamBeta1)", "AdamW beta1"),
        Key("training", "adam-beta2", .number, train, "\(Defaults.adamBeta2)", "AdamW beta2"),
        Key("training", "adam-eps", .number, train, "\(Defaults.adamEps)", "AdamW epsilon"),
        Key("training", "loraplus-lr-ratio", .number, train, "\(Defaults.loraplusLrRatio)", "LoRA+: lora_B's lr = this × lr (1: plain LoRA)"),
        Key("training", "max-grad-norm", .number, train, "\(Defaults.maxGradNorm)", "clip gradients to this global norm (0: off)"),
        Key("training", "dropout", .number, train, nil, "LoRA dropout while training (default: the adapter's lora_dropout)"),
        Key("training", "grad-checkpoint", .bool, train, "false", "recompute each layer in backward (less memory)"),
        Key("training", "log-every", .int, train, "\(Defaults.logEvery)", "a metrics line every N steps"),
        Key("training", "eval-every", .int, train, "\(Defaults.evalEvery)", "validation every N steps (0: only at the end)"),
        Key("training", "save-every", .int, train, "\(Defaults.saveEvery)", "a checkpoint every N steps (0: only when stopped)"),
        Key("training", "keep-last", .int, train, "\(Defaults.keepLast)", "checkpoints to keep"),
        Key("training", "sanity-steps", .int, train, "\(Defaults.sanitySteps)", "--sanity-check: most steps"),
        Key("training", "sanity-examples", .int, train, "\(Defaults.sanityExamples)", "--sanity-check: examples in the batch"),
        Key("eval", "batch-size", .int, eval, "\(Defaults.evalBatchSize)", "sequences per forward pass"),
        Key("eval", "seq-len", .int, eval, nil, "lora-eval's tokens per sequence, if not data.seq-len"),
        Key("eval", "stride", .int, eval, nil, "window advance for texts longer than seq-len (default: seq-len)"),
        Key("compute", "threads", .int, ["lora-init", "lora-train", "lora-eval"], "0", "threads (0: one per core)"),
        Key("compute", "compute-dtype", .string, ["lora-train", "lora-eval"], "auto", "auto, bf16 or f32"),
    ]

    /// Keys lora-train writes into training_config.json for the record, which a flat config may hold and no tool
    /// reads (the positional arguments win).
    static let recordOnly: Set<String> = ["model", "adapter", "compute-backend"]

    /// run.example.yaml: every section and key with its default (commented out where there is none).
    public static func exampleYAML() -> String {
        var out = """
            # A run config: one file for lora-init, lora-train, lora-eval and the pipelines (make CONFIG=FILE, cron's
            # CONFIG). Every key is optional; the values shown are the defaults (keys without one are commented out).
            # Flags given on the command line win over the file. Keys may be spelled with _ or - (seq_len, seq-len).
            # Generated from Sources/LoRACLI/RunConfig.swift; the tests check that they agree.

            """
        func line(_ k: Key, indent: String) -> String {
            let value = k.example ?? "…"
            let text = "\(indent)\(k.name.replacingOccurrences(of: "-", with: "_")): \(value)"
            let pad = String(repeating: " ", count: max(1, 34 - text.count))
            return (k.example == nil ? "#" : "") + text + pad + "# " + k.help + "\n"
        }
        for k in keys where k.section.isEmpty { out += line(k, indent: "") }
        for s in sections {
            out += "\n\(s.name):  # \(s.help)\n"
            for k in keys where k.section == s.name { out += line(k, indent: "  ") }
        }
        return out
    }
}
