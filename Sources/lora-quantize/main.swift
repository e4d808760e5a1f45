// lora-quantize: a Hugging Face model dir → NF4/FP4 model dir in the bitsandbytes layout, loadable by
// transformers + bitsandbytes unchanged. Prints one JSON summary on stdout.
import ArgumentParser
import Foundation
import LoRACLI
import LoRAShared

struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lora-quantize",
        abstract: "Quantize a model's Linear weights to 4-bit (QLoRA), bit-identical to bitsandbytes.",
        discussion: """
            Quantizes the decoder's q/k/v/o/gate/up/down projections as transformers + bitsandbytes do for \
            BitsAndBytesConfig(load_in_4bit=True); embeddings, norms, lm_head and biases keep their dtype. \
            The output folder is built under a temporary name and renamed into place when complete.
            """)

    @Argument(help: "Hugging Face model folder (config.json + safetensors, F32/F16/BF16).")
    var model: String

    @Option(name: .shortAndLong, help: "Output model folder (must not exist unless --force).")
    var output: String

    @Option(help: "4-bit data type: nf4 or fp4.")
    var quantType: QuantType = .nf4

    @Option(help: "Values per absmax block: 32, 64, 128, 256, 512, 1024, 2048 or 4096.")
    var blockSize: Int = 64

    @Flag(inversion: .prefixedNo, help: "Double quantization of the block scales (QLoRA's default).")
    var doubleQuant = true

    @Option(help: "Compute dtype recorded in quantization_config: bfloat16, float16 or float32.")
    var computeDtype: String = "bfloat16"

    @Option(help: "Largest shard (e.g. 5GB, 500MB); larger outputs are sharded with an index.")
    var maxShardSize: ByteSize = ByteSize(bytes: 5_000_000_000)

    @Flag(help: "Replace an existing output folder.")
    var force = false

    @OptionGroup var common: CommonOptions

    func validate() throws {
        guard FourBit.allowedBlockSizes.contains(blockSize) else {
            throw ValidationError("--block-size \(blockSize) is not allowed; use one of \(FourBit.allowedBlockSizes.map(String.init).joined(separator: ", "))")
        }
        guard let d = DType(torchName: computeDtype), d != .F64 else {
            throw ValidationError("--compute-dtype '\(computeDtype)' is not one of bfloat16, float16, float32")
        }
    }

    func run() throws {
        try common.apply()
        var o = QuantizeOptions()
        o.quantType = quantType
        o.blocksize = blockSize
        o.doubleQuant = doubleQuant
        o.computeDType = DType(torchName: computeDtype)!
        o.maxShardSize = maxShardSize.bytes
        o.replace = force
        let started = Date()
        var bar: ProgressBar? = nil
        let s = try ModelQuantizer.run(input: model, output: output, options: o) { done, total, name in
            if bar == nil { bar = ProgressBar(total: total, label: "quantize", unit: " tensors") }
            bar!.update(done, detail: name)
        }
        var r = JSONObject()
        r["output"] = .string(output)
        r["quant_type"] = .string(quantType.rawValue)
        r["block_size"] = .int(Int64(blockSize))
        r["double_quant"] = .bool(doubleQuant)
        r["tensors_quantized"] = .int(Int64(s.tensorsQuantized))
        r["tensors_copied"] = .int(Int64(s.tensorsCopied))
        r["quantized_parameters"] = .int(Int64(s.quantizedParameters))
        r["bytes_in"] = .int(Int64(s.bytesIn))
        r["bytes_out"] = .int(Int64(s.bytesOut))
        r["bits_per_quantized_weight"] = .double((s.bitsPerQuantizedWeight * 10000).rounded() / 10000)
        r["rmse"] = .double(s.rmse)
        r["max_abs_error"] = .double(Double(s.maxAbsError))
        r["files"] = .array(s.files.map { .string($0) })
        r["seconds"] = .double((Date().timeIntervalSince(started) * 100).rounded() / 100)
        emitJSON(.object(r))
    }
}

runMain(Quantize.self)
