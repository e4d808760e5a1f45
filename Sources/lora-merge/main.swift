// lora-merge: fold LoRA adapters into a base model, W' = W + Σ weightᵢ · scalingᵢ · Bᵢ·Aᵢ in fp32, written as a
// plain Hugging Face model dir (or, with --requantize nf4, a 4-bit one). With --combination the adapters are first
// combined into one new adapter as PEFT's add_weighted_adapter does (AdapterCombiner), which is merged, or written
// as a PEFT adapter folder with --as-adapter. Prints one JSON summary on stdout.
import ArgumentParser
import Foundation
import LoRACLI
import LoRAShared

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora-merge",
        abstract: "Merge LoRA adapters into a model, writing a plain Hugging Face model dir.",
        discussion: """
            Each --adapter PATH[:WEIGHT] adds WEIGHT (default 1) × its scaling (alpha/r, or alpha/√r with rslora) \
            × B·A to the weights it targets; the sum is taken in fp32 and rounded once to --dtype. Tensors no \
            adapter touches are copied byte for byte. On a 4-bit model the weights are dequantized first (a warning \
            says so); for QLoRA, pass the original full-precision model as --base-full to merge onto it instead. \
            The output folder is built under a temporary name and renamed into place when complete. \
            With --combination TYPE the adapters are first combined into one new adapter exactly as PEFT's \
            add_weighted_adapter(adapters, weights, combination_type=TYPE) does (r = lora_alpha = the new rank): \
            linear, ties, dare_linear, dare_ties and magnitude_prune combine the A's and the B's separately and need \
            one rank (linear is PEFT's approximation, with cross terms; without --combination the weighted deltas \
            are summed exactly); cat stacks them (rank Σr, exact); svd, ties_svd, dare_linear_svd, dare_ties_svd \
            and magnitude_prune_svd combine the full deltas and keep --svd-rank singular directions. That adapter is \
            merged into the model (-o), or written as a PEFT adapter folder (--as-adapter), or both.
            """)

    @Argument(help: "The model the adapters were trained on (full precision, or 4-bit from lora-quantize / bitsandbytes).")
    var model: String

    @Option(name: .customLong("adapter"), help: "Adapter to merge as PATH[:WEIGHT] (PEFT folder or single file; repeatable).")
    var adapters: [String] = []

    @Option(name: .shortAndLong, help: "Output model folder (must not exist unless --force).")
    var output: String?

    @Option(help: "Combine the adapters into one new adapter first, as PEFT's add_weighted_adapter (dare_* draw from --seed). [default: none: the exact weighted sum of the deltas]")
    var combination: CombinationType?

    @Option(name: .customLong("as-adapter"), help: "With --combination: write the combined adapter as a PEFT adapter folder here (adapter_config.json + adapter_model.safetensors).")
    var asAdapter: String?

    @Option(help: "Rank of an svd combination's adapter. [default: the largest rank of the adapters]")
    var svdRank: Int?

    @Option(help: "Fraction of values kept by ties, dare_*, magnitude_prune* (in (0, 1]).")
    var density: Double?

    @Option(help: "ties / dare_ties: the majority sign by the total of the values or by the count of signs: total or frequency. [default: total]")
    var majoritySignMethod: MajoritySignMethod?

    @Option(help: "Output dtype: bfloat16, float16 or float32 (default: each tensor's original dtype).")
    var dtype: String?

    @Option(help: "For a 4-bit model: the full-precision model it was quantized from; the merge is done onto its weights.")
    var baseFull: String?

    @Option(help: "Write the merged model quantized: nf4 or fp4 (blocks of 64, double quantization).")
    var requantize: QuantType?

    @Option(help: "Largest shard (e.g. 5GB, 500MB); larger outputs are sharded with an index.")
    var maxShardSize: ByteSize = ByteSize(bytes: 5_000_000_000)

    @Flag(help: "Replace an existing output folder.")
    var force = false

    @OptionGroup var common: CommonOptions

    static func parseDType(_ s: String) -> DType? {
        switch s.lowercased() {
        case "bf16": return .BF16
        case "fp16", "f16", "half": return .F16
        case "fp32", "f32": return .F32
        default: return DType(torchName: s.lowercased()).flatMap { $0 == .F64 ? nil : $0 }
        }
    }

    func validate() throws {
        guard !adapters.isEmpty else { throw ValidationError("give at least one --adapter PATH[:WEIGHT]") }
        if combination == nil {
            for (flag, given) in [("--as-adapter", asAdapter != nil), ("--svd-rank", svdRank != nil), ("--density", density != nil),
                                  ("--majority-sign-method", majoritySignMethod != nil)] where given {
                throw ValidationError("\(flag) is an option of --combination; add --combination TYPE (e.g. cat, svd, ties)")
            }
        }
        if output == nil && asAdapter == nil {
            throw ValidationError("give -o OUT for the merged model\(combination == nil ? "" : ", or --as-adapter DIR for the combined adapter")")
        }
        if let d = dtype, Merge.parseDType(d) == nil {
            throw ValidationError("--dtype '\(d)' is not one of bfloat16, float16, float32")
        }
    }

    func run() throws {
        try common.apply()
        let started = Date()
        if let c = combination { return try combine(c, started: started) }
        guard let output else { throw UsageError("give -o OUT for the merged model") }
        var inputs: [MergeInput] = []
        var described: [JSONValue] = []
        for spec in adapters {
            let (path, weight) = try ModelMerger.parseAdapterSpec(spec)
            let a = try Adapter.load(path)
            inputs.append(MergeInput(adapter: a, weight: weight))
            described.append(.object(JSONObject([("path", .string(path)), ("weight", .double(weight)),
                                                  ("modules", .int(Int64(a.moduleNames.count)))])))
        }
        let m = try ModelDir(path: model)
        let full = try baseFull.map { try ModelDir(path: $0) }
        // Both models are checked whole before anything is written.
        try m.validate()
        try full?.validate()
        let (o, s) = try merge(m, full: full, inputs: inputs, output: output)
        var r = JSONObject()
        r["output"] = .string(output)
        r["adapters"] = .array(described)
        report(&r, o, s)
        r["seconds"] = .double((Date().timeIntervalSince(started) * 100).rounded() / 100)
        emitJSON(.object(r))
    }

    func merge(_ m: ModelDir, full: ModelDir?, inputs: [MergeInput], output: String) throws -> (MergeOptions, MergeSummary) {
        var o = MergeOptions()
        o.dtype = dtype.flatMap(Merge.parseDType)
        o.maxShardSize = maxShardSize.bytes
        o.replace = force
        if let q = requantize {
            var qo = QuantizeOptions()
            qo.quantType = q
            qo.maxShardSize = maxShardSize.bytes
            o.requantize = qo
        }
        var bar: ProgressBar? = nil
        let s = try ModelMerger.run(model: m, baseFull: full, adapters: inputs, output: output, options: o,
                                    warn: { Log.warn($0) }) { done, total, name in
            if bar == nil { bar = ProgressBar(total: total, label: "merge", unit: " weights") }
            bar!.update(done, detail: name)
        }
        return (o, s)
    }

    func report(_ r: inout JSONObject, _ o: MergeOptions, _ s: MergeSummary) {
        r["base"] = .string(baseFull ?? model)
        r["dequantized_base"] = .bool(s.dequantizedBase)
        r["merged_modules"] = .int(Int64(s.mergedModules))
        r["max_abs_delta"] = .double(Double(s.maxAbsDelta))
        r["dtype"] = o.dtype.map { .string($0.torchName!) } ?? .string("original")
        r["requantized"] = requantize.map { .string($0.rawValue) } ?? .null
        r["tensors"] = .int(Int64(s.tensors))
        r["bytes_out"] = .int(Int64(s.bytesOut))
        r["files"] = .array(s.files.map { .string($0) })
    }

    /// --combination: the adapters combined into one (PEFT's add_weighted_adapter), written as an adapter folder
    /// (--as-adapter) and/or merged into the model (-o).
    func combine(_ type: CombinationType, started: Date) throws {
        var inputs: [MergeInput] = []
        var described: [JSONValue] = []
        for spec in adapters {
            let (path, weight) = try ModelMerger.parseAdapterSpec(spec)
            let loaded = try Adapter.load(path)
            // Named as given on the command line in the messages (not as the file inside the folder).
            let a = Adapter(config: loaded.config, modules: loaded.moduleNames.map { ($0, loaded.modules[$0]!) }, source: path)
            inputs.append(MergeInput(adapter: a, weight: weight))
            described.append(.object(JSONObject([("path", .string(path)), ("weight", .double(weight)), ("r", .int(Int64(a.config.r))),
                                                  ("modules", .int(Int64(a.moduleNames.count)))])))
        }
        let m = try ModelDir(path: model)
        let full = try baseFull.map { try ModelDir(path: $0) }
        try m.validate()
        try full?.validate()
        let linears = try m.linearModules()
        for i in inputs { try i.adapter.validate(against: linears) }
        for p in [asAdapter, output].compactMap({ $0 }) where FileManager.default.fileExists(atPath: p) && !force {
            throw FileError.cannotWrite(path: p, reason: "already exists; choose another path or pass --force")
        }
        var co = CombineOptions(type: type)
        co.svdRank = svdRank
        co.density = density
        co.majoritySign = majoritySignMethod ?? .total
        co.seed = common.seed
        let c = try AdapterCombiner.combine(inputs, options: co)
        if c.type != type { Log.warn("one adapter: combined with linear, as PEFT does (--combination \(type.rawValue) needs two or more)") }
        var r = JSONObject()
        r["combination"] = .string(c.type.rawValue)
        r["r"] = .int(Int64(c.rank))
        r["lora_alpha"] = .double(c.adapter.config.alpha)
        r["modules"] = .int(Int64(c.adapter.moduleNames.count))
        r["adapters"] = .array(described)
        if let dir = asAdapter {
            try c.adapter.save(to: dir, replace: force)
            r["adapter_output"] = .string(dir)
        }
        if let out = output {
            let (o, s) = try merge(m, full: full, inputs: [MergeInput(adapter: c.adapter, weight: 1)], output: out)
            r["output"] = .string(out)
            report(&r, o, s)
        }
        r["seconds"] = .double((Date().timeIntervalSince(started) * 100).rounded() / 100)
        emitJSON(.object(r))
    }
}

extension CombinationType: ExpressibleByArgument {}
extension MajoritySignMethod: ExpressibleByArgument {}

runMain(Merge.self)
