// lora-merge: fold LoRA adapters into a base model, W' = W + Σ weightᵢ · scalingᵢ · Bᵢ·Aᵢ in fp32, written as a
// plain Hugging Face model dir (or, with --requantize nf4, a 4-bit one). Prints one JSON summary on stdout.
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
            The output folder is built under a temporary name and renamed into place when complete.
            """)

    @Argument(help: "The model the adapters were trained on (full precision, or 4-bit from lora-quantize / bitsandbytes).")
    var model: String

    @Option(name: .customLong("adapter"), help: "Adapter to merge as PATH[:WEIGHT] (PEFT folder or single file; repeatable).")
    var adapters: [String] = []

    @Option(name: .shortAndLong, help: "Output model folder (must not exist unless --force).")
    var output: String

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
        if let d = dtype, Merge.parseDType(d) == nil {
            throw ValidationError("--dtype '\(d)' is not one of bfloat16, float16, float32")
        }
    }

    func run() throws {
        try common.apply()
        let started = Date()
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
        var r = JSONObject()
        r["output"] = .string(output)
        r["adapters"] = .array(described)
        r["base"] = .string(baseFull ?? model)
        r["dequantized_base"] = .bool(s.dequantizedBase)
        r["merged_modules"] = .int(Int64(s.mergedModules))
        r["max_abs_delta"] = .double(Double(s.maxAbsDelta))
        r["dtype"] = o.dtype.map { .string($0.torchName!) } ?? .string("original")
        r["requantized"] = requantize.map { .string($0.rawValue) } ?? .null
        r["tensors"] = .int(Int64(s.tensors))
        r["bytes_out"] = .int(Int64(s.bytesOut))
        r["files"] = .array(s.files.map { .string($0) })
        r["seconds"] = .double((Date().timeIntervalSince(started) * 100).rounded() / 100)
        emitJSON(.object(r))
    }
}

runMain(Merge.self)
