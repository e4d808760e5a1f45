// ModelQuantizer: a Hugging Face model dir → the checkpoint transformers + bitsandbytes save for
// `BitsAndBytesConfig(load_in_4bit=True, ...)`: decoder Linear weights in the bnb 4-bit layout, everything
// else (embeddings, norms, lm_head, biases) unchanged, config.json gaining `quantization_config`.
import Foundation

public struct QuantizeOptions: Sendable {
    public var quantType: QuantType = .nf4
    public var blocksize = 64
    public var doubleQuant = true
    public var computeDType: DType = .BF16
    public var maxShardSize = 5_000_000_000
    public var replace = false
    public init() {}
}

public struct QuantizeSummary: Sendable {
    public var tensorsQuantized = 0
    public var tensorsCopied = 0
    public var quantizedParameters = 0
    public var bytesIn = 0
    public var bytesOut = 0
    public var quantizedBytesOut = 0
    public var sumSquaredError = 0.0
    public var maxAbsError: Float = 0
    public var files: [String] = []

    public var bitsPerQuantizedWeight: Double { quantizedParameters == 0 ? 0 : Double(quantizedBytesOut * 8) / Double(quantizedParameters) }
    public var rmse: Double { quantizedParameters == 0 ? 0 : (sumSquaredError / Double(quantizedParameters)).squareRoot() }
}

public enum ModelQuantizer {
    /// Files copied beside the weights: everything but weights, their index, and config.json.
    static func isCopiedFile(_ name: String) -> Bool {
        if name == "config.json" || name.hasPrefix(".") { return false }
        for s in [".safetensors", ".safetensors.index.json", ".bin", ".bin.index.json", ".pt", ".pth", ".gguf", ".h5", ".msgpack"]
            where name.hasSuffix(s) { return false }
        return true
    }

    /// Copies the files that travel with the weights (tokenizer, generation config, ...) from one model folder
    /// into another; returns their names.
    static func copyCompanionFiles(from input: String, to dir: String) throws -> [String] {
        var copied: [String] = []
        for f in try FileManager.default.contentsOfDirectory(atPath: input).sorted() where isCopiedFile(f) {
            var isDir: ObjCBool = false
            let src = input + "/" + f
            guard FileManager.default.fileExists(atPath: src, isDirectory: &isDir), !isDir.boolValue else { continue }
            try FileManager.default.copyItem(atPath: src, toPath: dir + "/" + f)
            copied.append(f)
        }
        return copied
    }

    /// quantization_config as transformers writes it for a bitsandbytes 4-bit model.
    public static func quantizationConfig(_ o: QuantizeOptions) -> JSONObject {
        let dtype = JSONValue.string(o.computeDType.torchName ?? "float32")
        return JSONObject([
            ("_load_in_4bit", .bool(true)),
            ("_load_in_8bit", .bool(false)),
            ("bnb_4bit_compute_dtype", dtype),
            ("bnb_4bit_quant_storage", .string("uint8")),
            ("bnb_4bit_quant_type", .string(o.quantType.rawValue)),
            ("bnb_4bit_use_double_quant", .bool(o.doubleQuant)),
            ("llm_int8_enable_fp32_cpu_offload", .bool(false)),
            ("llm_int8_has_fp16_weight", .bool(false)),
            ("llm_int8_skip_modules", .null),
            ("llm_int8_threshold", .double(6.0)),
            ("load_in_4bit", .bool(true)),
            ("load_in_8bit", .bool(false)),
            ("quant_method", .string("bitsandbytes")),
        ])
    }

    /// Holds the one tensor being written, so its U8 records (adjacent in the file) share one quantization;
    /// its F32 statistics, written earlier in the file, are recomputed from the block scales alone.
    final class Cache: @unchecked Sendable {
        var name = ""
        var weight: QuantizedWeight?
        var summary = QuantizeSummary()
    }

    /// The block scales and, with double quantization, their nested statistics: what the F32 records need.
    static func statistics(_ t: TensorView, _ o: QuantizeOptions) -> (absmax: [Float], nested: FourBit.Nested?) {
        let values = t.floats()
        let am = values.withUnsafeBufferPointer { FourBit.blockAbsmax($0.baseAddress!, count: values.count, blocksize: o.blocksize) }
        return (am, o.doubleQuant ? FourBit.doubleQuantize(am) : nil)
    }

    public static func run(input: String, output: String, options: QuantizeOptions,
                           progress: ((Int, Int, String) -> Void)? = nil) throws -> QuantizeSummary {
        let model = try ModelDir(path: input)
        if model.isQuantized {
            throw QuantError.unsupported(tensor: input, reason: "is already quantized (config.json has quantization_config); quantize the original full-precision model")
        }
        if FileManager.default.fileExists(atPath: output) && !options.replace {
            throw FileError.cannotWrite(path: output, reason: "already exists; choose another path or pass --force")
        }
        try model.validate()  // a broken model is refused here, not written out for lora-eval to discover
        let store = model.weights
        let linearNames = Set(model.config.linearModules().map { $0.name + ".weight" })
        let cache = Cache()

        // Pass 1: which tensors are quantized, their block scales and hence the exact state JSON and sizes.
        var records: [TensorRecord] = []
        var quantNames: [String] = []
        for name in store.names {
            let info = store.info(name)!
            if linearNames.contains(name) {
                guard info.dtype.isFloatingPoint, info.dtype != .F64, info.shape.count == 2 else {
                    throw QuantError.unsupported(tensor: name, reason: "has dtype \(info.dtype.rawValue) and shape \(info.shape); a Linear weight to quantize must be 2-D F32, F16 or BF16")
                }
                quantNames.append(name)
            }
        }
        let quantSet = Set(quantNames)
        for name in store.names {
            let t = try store.tensor(name)
            cache.summary.bytesIn += t.byteCount
            guard quantSet.contains(name) else {
                records.append(TensorRecord(copying: t))
                cache.summary.tensorsCopied += 1
                continue
            }
            var state = BnbQuantState(quantType: options.quantType, blocksize: options.blocksize,
                                      dtype: t.dtype.torchName!, shape: t.shape)
            if options.doubleQuant {
                let values = t.floats()
                let am = values.withUnsafeBufferPointer { FourBit.blockAbsmax($0.baseAddress!, count: values.count, blocksize: options.blocksize) }
                state.nestedBlocksize = FourBit.nestedBlockSize
                state.nestedDtype = "float32"
                state.nestedOffset = Double(TorchSum.mean(am))
            }
            // The records' shapes follow from the state alone; their bytes are computed when written.
            let n = state.numel
            let blocks = FourBit.blockCount(n, options.blocksize)
            let stateBytes = Array(state.json.utf8)
            func weight() -> QuantizedWeight {
                if cache.name != name {
                    let values = t.floats()
                    let w = values.withUnsafeBufferPointer {
                        QuantizedWeight.quantize($0.baseAddress!, shape: t.shape, dtype: t.dtype, type: options.quantType,
                                                 blocksize: options.blocksize, doubleQuant: options.doubleQuant)
                    }
                    precondition(w.state == state, "quantization state changed between passes for \(name)")
                    let rec = w.dequantized()
                    var sse = 0.0
                    var mx: Float = 0
                    for i in 0..<n {
                        let e = rec[i] - values[i]
                        sse += Double(e) * Double(e)
                        mx = max(mx, abs(e))
                    }
                    cache.summary.sumSquaredError += sse
                    cache.summary.maxAbsError = max(cache.summary.maxAbsError, mx)
                    cache.summary.tensorsQuantized += 1
                    cache.summary.quantizedParameters += n
                    progress?(cache.summary.tensorsQuantized, quantNames.count, name)
                    cache.name = name
                    cache.weight = w
                }
                return cache.weight!
            }
            records.append(TensorRecord(name: name, dtype: .U8, shape: [(n + 1) / 2, 1]) { try $0.write(weight().packed) })
            if options.doubleQuant {
                records.append(TensorRecord(name: name + ".absmax", dtype: .U8, shape: [blocks]) { try $0.write(weight().nested!.absmax) })
                records.append(TensorRecord(name: name + ".nested_absmax", dtype: .F32, shape: [FourBit.blockCount(blocks, FourBit.nestedBlockSize)]) {
                    try writeFloats(statistics(t, options).nested!.nestedAbsmax, $0)
                })
                records.append(TensorRecord(name: name + ".nested_quant_map", floats: DynamicMap.signed, shape: [256]))
            } else {
                records.append(TensorRecord(name: name + ".absmax", dtype: .F32, shape: [blocks]) { try writeFloats(statistics(t, options).absmax, $0) })
            }
            records.append(TensorRecord(name: name + ".quant_map", floats: options.quantType.code, shape: [16]))
            records.append(TensorRecord(name: name + ".quant_state.bitsandbytes__" + options.quantType.rawValue,
                                        dtype: .U8, shape: [stateBytes.count], bytes: stateBytes))
            cache.summary.quantizedBytesOut += QuantizedWeight.storedBytes(numel: n, blocksize: options.blocksize,
                                                                          doubleQuant: options.doubleQuant, stateJSONLength: stateBytes.count)
        }

        // Pass 2: write into a temporary folder beside the output, then rename it into place.
        let dir = try AtomicDirectory(path: output)
        // Laid out as the Python writer lays out transformers' save, so the file is byte-identical to it.
        let files = try ShardedWriter.write(SafetensorsWriter.canonicalOrder(records), to: dir.tempPath,
                                            maxShardSize: options.maxShardSize, canonical: false)
        var config = model.config.raw
        config["quantization_config"] = .object(quantizationConfig(options))
        try AtomicFile.write(JSONValue.object(config).serialized(.indented(2), sortKeys: true) + "\n", to: dir.file("config.json"))
        let copied = try copyCompanionFiles(from: input, to: dir.tempPath)
        try dir.commit(replace: options.replace)
        var s = cache.summary
        s.bytesOut = SafetensorsWriter.dataSize(records)
        s.files = ["config.json"] + files + copied
        return s
    }

    static func writeFloats(_ v: [Float], _ sink: ByteSink) throws {
        try v.withUnsafeBytes { try sink.write($0) }
    }
}
