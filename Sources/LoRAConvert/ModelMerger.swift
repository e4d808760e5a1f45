// ModelMerger: folds LoRA adapters into a base model, W' = W + Σ weightᵢ · scalingᵢ · Bᵢ·Aᵢ, computed in fp32 and
// written as a plain Hugging Face model dir (PEFT's merge_and_unload + save_pretrained). One tensor is in memory
// at a time: each record of the output computes its bytes when the writer reaches it.
import Foundation

public struct MergeInput {
    public var adapter: Adapter
    public var weight: Double
    public init(adapter: Adapter, weight: Double) {
        self.adapter = adapter
        self.weight = weight
    }
}

public struct MergeOptions: Sendable {
    /// Output dtype of every floating tensor; nil keeps each tensor's original dtype (for a 4-bit Linear, the
    /// dtype recorded in its quant_state).
    public var dtype: DType?
    public var maxShardSize = 5_000_000_000
    public var replace = false
    /// Writes the merged model in the bitsandbytes 4-bit layout instead (lora-quantize's output).
    public var requantize: QuantizeOptions?
    public init() {}
}

public struct MergeSummary: Sendable {
    public var mergedModules = 0
    public var tensors = 0
    public var bytesOut = 0
    public var files: [String] = []
    public var dequantizedBase = false
    public var maxAbsDelta: Float = 0
}

public enum MergeError: Error, CustomStringConvertible, ToolError {
    case baseMismatch(quantized: String, full: String, reason: String)
    case doraNotAlone(source: String)

    public var description: String {
        switch self {
        case .doraNotAlone(let s):
            return "\(s) is a DoRA adapter: it merges alone at weight 1 (its magnitude rescales the merged rows, as PEFT's merge_and_unload does); merge it on its own"
        case .baseMismatch(let q, let f, let r):
            return "--base-full \(f) does not match \(q): \(r); pass the full-precision model the 4-bit one was quantized from"
        }
    }
}

public enum ModelMerger {
    /// Parses `--adapter PATH[:WEIGHT]`. A path that exists as given is taken whole (it may contain ':');
    /// otherwise the text after the last ':' must be a finite number.
    public static func parseAdapterSpec(_ spec: String) throws -> (path: String, weight: Double) {
        if FileManager.default.fileExists(atPath: spec) || spec == "-" { return (spec, 1.0) }
        guard let colon = spec.lastIndex(of: ":") else { return (spec, 1.0) }
        let path = String(spec[..<colon]), w = String(spec[spec.index(after: colon)...])
        guard let v = Double(w.trimmingCharacters(in: .whitespaces)), v.isFinite else {
            throw UsageError("--adapter \(spec): weight '\(w)' is not a number; write PATH:WEIGHT, e.g. \(path):0.5")
        }
        return (path, v)
    }

    /// The merged model written to `output`. `model` is the model the adapters were trained on (full precision or
    /// 4-bit); `baseFull`, for a 4-bit `model`, is the full-precision model it was quantized from, merged instead.
    public static func run(model: ModelDir, baseFull: ModelDir?, adapters: [MergeInput], output: String,
                           options: MergeOptions, warn: (String) -> Void = { _ in },
                           progress: ((Int, Int, String) -> Void)? = nil) throws -> MergeSummary {
        if FileManager.default.fileExists(atPath: output) && !options.replace {
            throw FileError.cannotWrite(path: output, reason: "already exists; choose another path or pass --force")
        }
        let trainedLinears = try model.linearModules()
        for a in adapters { try a.adapter.validate(against: trainedLinears) }
        if let d = adapters.first(where: { $0.adapter.config.useDora }), adapters.count > 1 || d.weight != 1 {
            throw MergeError.doraNotAlone(source: d.adapter.source)
        }
        let bases = Set(adapters.compactMap { $0.adapter.config.baseModelNameOrPath })
        if bases.count > 1 {
            warn("the adapters name different base models (\(bases.sorted().joined(separator: ", "))); merging them anyway, as their shapes match")
        }
        var base = model
        if let full = baseFull {
            guard model.isQuantized else {
                throw UsageError("--base-full is for a 4-bit model; \(model.path) is already full precision, merge onto it directly")
            }
            guard !full.isQuantized else {
                throw MergeError.baseMismatch(quantized: model.path, full: full.path, reason: "it is itself quantized")
            }
            let fullLinears = try full.linearModules()
            let shapes = { (l: [LinearModule]) in l.map { "\($0.name) \($0.outFeatures)x\($0.inFeatures)" } }
            guard shapes(fullLinears) == shapes(trainedLinears), full.config.vocabSize == model.config.vocabSize,
                  full.config.hiddenSize == model.config.hiddenSize else {
                throw MergeError.baseMismatch(quantized: model.path, full: full.path, reason: "the architectures differ (config.json)")
            }
            try checkQuantizedFrom(full, quantized: model, module: trainedLinears[0].name, warn: warn)
            base = full
        } else if model.isQuantized {
            warn("\(model.path) is 4-bit: merging into its dequantized weights bakes the quantization error into the merged model; pass --base-full with the original model to merge onto full precision")
        }

        if let q = options.requantize {
            // Merge into a hidden folder beside the output, quantize that into place, then drop it.
            let scratch = try AtomicDirectory(path: output + ".merged-fp")
            defer { scratch.abandon() }
            var o = options
            o.requantize = nil
            var s = try write(base: base, adapters: adapters, into: scratch.tempPath, options: o, progress: progress)
            var qo = q
            qo.replace = options.replace
            let qs = try ModelQuantizer.run(input: scratch.tempPath, output: output, options: qo)
            s.files = qs.files
            s.bytesOut = qs.bytesOut
            return s
        }
        let dir = try AtomicDirectory(path: output)
        let s = try write(base: base, adapters: adapters, into: dir.tempPath, options: options, progress: progress)
        try dir.commit(replace: options.replace)
        return s
    }

    /// `model` with some Linears' weights rewritten (fp32, in place, one tensor at a time), every other tensor copied
    /// byte for byte; written under a temporary name and renamed to `output`.
    static func rewritten(model: ModelDir, output: String, replace: Bool, rewrite: [String: (inout [Float]) throws -> Void]) throws -> MergeSummary {
        if FileManager.default.fileExists(atPath: output) && !replace {
            throw FileError.cannotWrite(path: output, reason: "already exists; choose another path or pass --force")
        }
        var o = MergeOptions()
        o.replace = replace
        let dir = try AtomicDirectory(path: output)
        let s = try write(base: model, adapters: [], into: dir.tempPath, options: o, progress: nil, rewrite: rewrite)
        try dir.commit(replace: replace)
        return s
    }

    /// Quantizes one Linear of `full` with the 4-bit model's settings and compares the packed bytes: a cheap
    /// check that the 4-bit model was made from this full-precision one.
    static func checkQuantizedFrom(_ full: ModelDir, quantized: ModelDir, module: String, warn: (String) -> Void) throws {
        let name = module + ".weight"
        let q = try BnbWeight(name: name, store: quantized.weights)
        let t = try full.weights.tensor(name)
        let values = t.floats()
        let w = values.withUnsafeBufferPointer {
            QuantizedWeight.quantize($0.baseAddress!, shape: t.shape, dtype: t.dtype, type: q.state.quantType,
                                     blocksize: q.state.blocksize, doubleQuant: q.state.isNested)
        }
        if w.packed != Array(q.packed.bytes()) {
            warn("\(name) of --base-full \(full.path) does not quantize to the 4-bit weights of \(quantized.path); is it the model they were made from?")
        }
    }

    /// The delta Σ weightᵢ · scalingᵢ · Bᵢ·Aᵢ of one module into `delta` ([out, in], fp32); false if no adapter
    /// targets it.
    static func delta(_ module: String, adapters: [MergeInput], out: Int, in inF: Int, into delta: UnsafeMutablePointer<Float>) -> Bool {
        var any = false
        for a in adapters {
            guard let w = a.adapter.modules[module] else { continue }
            let s = Float(a.weight * a.adapter.config.scaling(for: module))
            w.b.withUnsafeBufferPointer { b in
                w.a.withUnsafeBufferPointer { am in
                    gemm(.none, .none, m: out, n: inF, k: w.r, alpha: s, a: b.baseAddress!, lda: w.r,
                         b: am.baseAddress!, ldb: inF, beta: any ? 1 : 0, c: delta, ldc: inF)
                }
            }
            any = true
        }
        return any
    }

    /// `rewrite[module]`, when given, replaces that Linear's fp32 weight in place instead of an adapter delta (lora-init
    /// --init loftq writes its quantized weights through it, one tensor at a time).
    static func write(base: ModelDir, adapters: [MergeInput], into dir: String, options: MergeOptions,
                      progress: ((Int, Int, String) -> Void)?,
                      rewrite: [String: (inout [Float]) throws -> Void] = [:]) throws -> MergeSummary {
        let store = base.weights
        let linears = try base.linearModules()
        let byWeight = Dictionary(uniqueKeysWithValues: linears.map { ($0.name + ".weight", $0) })
        let targeted = Set(adapters.flatMap { $0.adapter.moduleNames }).union(rewrite.keys)
        // Companion tensors of 4-bit weights (absmax, quant_map, quant_state, ...) are not part of the output.
        let quantizedWeights = linears.filter(\.quantized).map { $0.name + ".weight" }
        let companions = Set(store.names.filter { n in quantizedWeights.contains { n.hasPrefix($0 + ".") } })

        final class State: @unchecked Sendable { var s = MergeSummary(); var done = 0 }
        let st = State()
        var records: [TensorRecord] = []
        for name in store.names where !companions.contains(name) {
            if let lin = byWeight[name] {
                let weight = try LinearWeight(name: lin.name, store: store, out: lin.outFeatures, in: lin.inFeatures, hasBias: false)
                let stored: DType
                switch weight.storage {
                case .dense(let t):
                    stored = t.dtype
                case .fourBit(let q):
                    guard let d = DType(torchName: q.state.dtype) else {
                        throw QuantError.badQuantState(tensor: name, reason: "unknown original dtype '\(q.state.dtype)'")
                    }
                    stored = d
                    st.s.dequantizedBase = true
                }
                let outDType = options.dtype ?? stored
                let isTarget = targeted.contains(lin.name)
                if !isTarget && !lin.quantized && outDType == stored {
                    records.append(TensorRecord(copying: try store.tensor(name)))
                    continue
                }
                records.append(TensorRecord(name: name, dtype: outDType, shape: [lin.outFeatures, lin.inFeatures]) { sink in
                    let n = lin.outFeatures * lin.inFeatures
                    var w = [Float](repeating: 0, count: n)
                    w.withUnsafeMutableBufferPointer { weight.expand(into: $0.baseAddress!) }
                    if let r = rewrite[lin.name] {
                        try r(&w)
                        st.s.mergedModules += 1
                    } else if isTarget {
                        var d = [Float](repeating: 0, count: n)
                        let any = d.withUnsafeMutableBufferPointer {
                            delta(lin.name, adapters: adapters, out: lin.outFeatures, in: lin.inFeatures, into: $0.baseAddress!)
                        }
                        if any {
                            var mx: Float = 0
                            // A zero delta leaves the weight's bits alone (-0.0 + 0.0 would turn into +0.0).
                            for i in 0..<n where d[i] != 0 { w[i] += d[i]; mx = max(mx, abs(d[i])) }
                            st.s.maxAbsDelta = max(st.s.maxAbsDelta, mx)
                            st.s.mergedModules += 1
                            if let m = adapters.first?.adapter.modules[lin.name]?.magnitude {
                                // DoRA (PEFT's merge): W' = m / ‖W + Δ‖ ⊙ (W + Δ), row by row.
                                let inF = lin.inFeatures
                                for o in 0..<lin.outFeatures {
                                    var ss = 0.0
                                    for j in 0..<inF { ss += Double(w[o * inF + j]) * Double(w[o * inF + j]) }
                                    let f = m[o] / Float(ss.squareRoot())
                                    for j in 0..<inF { w[o * inF + j] *= f }
                                }
                            }
                        }
                    }
                    try sink.write(encodeFloats(w, as: outDType))
                    st.done += 1
                    progress?(st.done, linears.count, lin.name)
                })
            } else {
                let t = try store.tensor(name)
                if let d = options.dtype, t.dtype.isFloatingPoint, t.dtype != d {
                    records.append(TensorRecord(name: name, dtype: d, shape: t.shape) { try $0.write(encodeFloats(t.floats(), as: d)) })
                } else {
                    records.append(TensorRecord(copying: t))
                }
            }
        }
        let files = try ShardedWriter.write(SafetensorsWriter.canonicalOrder(records), to: dir, maxShardSize: options.maxShardSize, canonical: false)
        var config = base.config.raw
        config["quantization_config"] = nil
        if let d = options.dtype {
            // transformers 5 writes `dtype`, 4.x `torch_dtype`: update whichever the base has.
            var wrote = false
            for k in ["dtype", "torch_dtype"] where config[k] != nil { config[k] = .string(d.torchName!); wrote = true }
            if !wrote { config["torch_dtype"] = .string(d.torchName!) }
        }
        try AtomicFile.write(JSONValue.object(config).serialized(.indented(2), sortKeys: true) + "\n", to: dir + "/config.json")
        let copied = try ModelQuantizer.copyCompanionFiles(from: base.path, to: dir)
        var s = st.s
        s.tensors = records.count
        s.bytesOut = SafetensorsWriter.dataSize(records)
        s.files = ["config.json"] + files + copied
        return s
    }
}
