// lora-init: create a LoRA adapter for a model (full-precision or 4-bit) in PEFT's layout, as a folder
// or, with `-o -`, as one safetensors stream on stdout. Prints trainable/total parameters as JSON.
import ArgumentParser
import Foundation
import LoRACLI
import LoRAShared

struct Init: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora-init",
        abstract: "Create LoRA adapters (PEFT layout) for a model's Linear modules.",
        discussion: """
            Initializes A as PEFT does (kaiming: U(±1/√in); gaussian: N(0, 1/r)) and B = 0, so the adapted \
            model starts equal to the base. --init pissa / pissa_niter_N / olora start the adapter from each \
            weight's SVD or QR as PEFT does and write the residual base (W − scaling·B·A) to --residual-model. `-o -` streams the adapter (config in the safetensors metadata) \
            to stdout for `lora-init M -o - | lora-train M - ...`; the JSON summary then goes to stderr.
            """)

    @Argument(help: "Model folder (full precision, or 4-bit from lora-quantize / bitsandbytes).")
    var model: String

    @Option(name: .shortAndLong, help: "Adapter folder to create, or '-' for a single-file stream on stdout.")
    var output: String

    @Option(help: "LoRA rank r. [default: \(Defaults.rank)]")
    var rank: Int?

    @Option(help: "lora_alpha. [default: 2 × rank]")
    var alpha: Double?

    @Option(help: "LoRA dropout on A's input, used when training. [default: \(Defaults.dropout)]")
    var dropout: Double?

    @Option(help: "Comma list of module names matched as PEFT does (exact or '.'-suffix), or all-linear. [default: \(Defaults.targets)]")
    var targets: String?

    @Flag(help: "Rank-stabilized scaling alpha/√r instead of alpha/r.")
    var rslora = false

    @Flag(help: "DoRA (use_dora): each module also gets a magnitude vector m = ‖W‖ per output row.")
    var dora = false

    @Option(name: .customLong("init"), help: """
        Initialization: kaiming or gaussian (A random, B = 0: the adapted model starts equal to the base), or \
        pissa, pissa_niter_N, olora or loftq / loftq_iter_N (the adapter takes the weight's principal part, or \
        LoftQ's fit of its NF4 quantization error; needs --residual-model). \
        [default: kaiming]
        """)
    var initMode: String?

    @Option(help: "With --init pissa/pissa_niter_N/olora: the folder to write the residual model to (the base with scaling·B·A taken out of every targeted weight); train and merge on it.")
    var residualModel: String?

    @Option(help: "base_model_name_or_path recorded in adapter_config.json (default: the model path).")
    var baseName: String?

    @Option(help: "Run config (YAML or JSON): its lora section (rank, alpha, dropout, targets, rslora, init), seed and compute.threads; flags win. See pipelines/run.example.yaml.")
    var config: String?

    @Flag(help: "Replace an existing adapter folder.")
    var force = false

    @OptionGroup var common: CommonOptions

    func run() throws {
        let file = try config.map { try ConfigFile(path: $0, tool: "lora-init") }
        try common.apply(file)
        // Each value: the flag, else the run config's lora section, else the default.
        let rank = try self.rank ?? file?.int("rank") ?? Defaults.rank
        let alpha = try self.alpha ?? file?.double("alpha")
        let dora = try self.dora || (file?.bool("dora") ?? false)
        let dropout = try self.dropout ?? file?.double("dropout") ?? Defaults.dropout
        let m = try ModelDir(path: model)
        try m.validate()
        // The default names the attention Linears: q/k/v/o, or phi3's fused qkv_proj and o_proj.
        let targets = try self.targets ?? file?.string("targets") ?? (m.config.fusedProjections ? Defaults.fusedTargets : Defaults.targets)
        let rslora = try self.rslora || (file?.bool("rslora") ?? false)
        // --init, else the run config's lora.init: kaiming/gaussian, or a residual initialization.
        var initName = self.initMode ?? "kaiming", initOrigin = "--init"
        if self.initMode == nil, let c = file, let s = try c.string("init") { initName = s; initOrigin = "\(c.path): 'lora.init'" }
        var initMode = LoRAInit.kaiming
        let residual = ResidualInitMethod(initName)
        if residual == nil {
            guard let v = LoRAInit(rawValue: initName) else {
                throw UsageError("\(initOrigin) must be kaiming, gaussian, pissa, pissa_niter_N, olora, loftq or loftq_iter_N (got '\(initName)')")
            }
            initMode = v
        }
        if let method = residual {
            guard !dora else { throw UsageError("--dora with --init \(method) is not supported; use one of them") }
            guard let rm = residualModel else {
                throw UsageError("--init \(method) moves part of each targeted weight into the adapter; name the folder for the residual model with --residual-model DIR")
            }
            guard output != "-" else { throw UsageError("--init \(method) writes two folders; give -o a folder, not '-'") }
            guard URL(fileURLWithPath: rm).standardized.path != URL(fileURLWithPath: model).standardized.path else {
                throw UsageError("--residual-model \(rm) is the model itself; write the residual model to a new folder")
            }
        } else if residualModel != nil {
            throw UsageError("--residual-model is for --init pissa, pissa_niter_N or olora; --init \(initName) leaves the base unchanged")
        }
        let origin = config == nil ? "--" : "\(config!): lora."
        guard (1...LoRAConfig.maxRank).contains(rank) else { throw UsageError("\(origin)rank must be in 1...\(LoRAConfig.maxRank)") }
        guard dropout >= 0 && dropout < 1 else { throw UsageError("\(origin)dropout must be in [0, 1)") }
        if let a = alpha, !(a > 0) || !a.isFinite { throw UsageError("\(origin)alpha must be a positive number") }
        let names = targets.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard !names.isEmpty, !names.contains(where: \.isEmpty) else {
            throw UsageError("\(origin)targets must be a comma list of module names such as q_proj,v_proj, or all-linear")
        }
        let t: TargetModules = names == ["all-linear"] ? .allLinear : .names(names)
        var cfg = LoRAConfig(r: rank, alpha: alpha ?? Defaults.alpha(rank: rank), dropout: dropout, targets: t,
                             useRslora: rslora, initLoraWeights: initMode == .kaiming ? .bool(true) : .string("gaussian"),
                             baseModelNameOrPath: baseName ?? model)
        cfg.useDora = dora
        if case .names(let ns) = t {
            // A name that matches nothing next to names that do is most often another family's module name.
            let linears = try m.linearModules()
            for n in ns where !linears.contains(where: { $0.name == n || $0.name.hasSuffix("." + n) }) {
                let have = Array(Set(linears.map(\.shortName))).sorted().joined(separator: ", ")
                Log.warn("target '\(n)' matches no Linear of \(model) (model_type \(m.config.modelType): \(have)); it gets no adapter")
            }
        }
        let adapter: Adapter
        var residualSummary: MergeSummary? = nil
        if let method = residual {
            for p in [output, residualModel!] where FileManager.default.fileExists(atPath: p) && !force {
                throw FileError.cannotWrite(path: p, reason: "already exists; choose another path or pass --force")
            }
            if case .loftq = method, cfg.scaling(for: "") != 1 {
                Log.warn("loftq: lora_alpha / r = \(cfg.scaling(for: "")); PEFT's LoftQ fits B·A to W − Q without the scaling, so base + adapter starts \(cfg.scaling(for: ""))× that fit away from Q; --alpha \(rank) makes it exact")
            }
            // The residual model first, then the adapter: each is built under a temporary name and renamed.
            (adapter, residualSummary) = try ResidualInit.run(config: cfg, model: m, method: method, seed: try common.seed(file),
                                                              residual: residualModel!, replace: force)
            try adapter.save(to: output, replace: force)
            if case .loftq = method {
                Log.info("loftq: \(residualModel!) holds each targeted weight's NF4 quantization (in the model's dtype); lora-quantize --no-double-quant it (blocksize 64) for the QLoRA base whose weights are exactly Q, then train on that with the adapter")
            } else {
                Log.info("\(method): the adapter holds each targeted weight's principal part; train and merge on the residual model \(residualModel!) (base − scaling·B·A), not on \(model)")
            }
        } else {
            adapter = try Adapter.initialize(config: cfg, model: m, initMode: initMode, seed: try common.seed(file))
            if output == "-" {
                let sink = FDSink.standardOutput()
                try adapter.write(stream: sink)
                try sink.flush()
            } else {
                try adapter.save(to: output, replace: force)
            }
        }
        let trainable = adapter.trainableParameters
        let total = m.parameterCount() + trainable
        var o = JSONObject()
        o["output"] = .string(output)
        o["trainable_params"] = .int(Int64(trainable))
        o["all_params"] = .int(Int64(total))
        o["trainable_percent"] = .double((Double(trainable) / Double(total) * 1e6).rounded() / 1e4)
        o["r"] = .int(Int64(rank))
        o["lora_alpha"] = .double(cfg.alpha)
        o["scaling"] = .double(cfg.scaling(for: ""))
        o["quantized_base"] = .bool(m.isQuantized)
        o["use_dora"] = .bool(dora)
        o["init"] = .string(initName)
        if let rs = residualSummary {
            o["residual_model"] = .string(residualModel!)
            o["residual_modules"] = .int(Int64(rs.mergedModules))
        }
        var mods: [JSONValue] = []
        for n in adapter.moduleNames {
            let w = adapter.modules[n]!
            var e = JSONObject()
            e["name"] = .string(n)
            e["in"] = .int(Int64(w.inFeatures))
            e["out"] = .int(Int64(w.outFeatures))
            e["r"] = .int(Int64(w.r))
            mods.append(.object(e))
        }
        o["modules"] = .array(mods)
        let summary = JSONValue.object(o)
        if output == "-" {
            FileHandle.standardError.write(Data((summary.serialized(.python) + "\n").utf8))
        } else {
            emitJSON(summary)
        }
    }
}

runMain(Init.self)
