// ModelDir: a Hugging Face model folder opened for reading: config.json, the safetensors weights (mmapped),
// and the decoder's Linear modules with their shapes, whether stored in full precision or bnb 4-bit.
import Foundation

public struct LinearModule: Sendable, Equatable {
    public let name: String      // e.g. "model.layers.0.self_attn.q_proj"
    public let outFeatures: Int
    public let inFeatures: Int
    public let quantized: Bool

    /// The last path component (`q_proj`).
    public var shortName: String { String(name.split(separator: ".").last ?? "") }
}

public enum ModelError: Error, CustomStringConvertible {
    case missingWeight(dir: String, tensor: String)
    case shapeMismatch(dir: String, tensor: String, found: [Int], expected: [Int])
    /// A token id the embedding has no row for (row and position within the batch).
    case tokenOutOfRange(id: Int, row: Int, position: Int, vocab: Int)
    /// A tensor whose dtype is not a float type where the model needs one.
    case badDType(dir: String, tensor: String, dtype: String)
    /// A batch with no positions (a zero-token sequence reached the model).
    case emptyBatch(batch: Int, seq: Int)

    public var description: String {
        switch self {
        case .missingWeight(let d, let t): return "\(d): weight '\(t)' is missing; the checkpoint does not match its config.json"
        case .shapeMismatch(let d, let t, let f, let e): return "\(d): weight '\(t)' has shape \(f), config.json implies \(e)"
        case .tokenOutOfRange(let id, let r, let p, let v):
            return "token id \(id) (sequence \(r), position \(p)) is outside the model's vocabulary of \(v) ids: the tokenizer does not belong to this model; use the model dir's own tokenizer.json"
        case .badDType(let d, let t, let dt):
            return "\(d): weight '\(t)' has dtype \(dt); the model needs a float type (F32, F16 or BF16) there"
        case .emptyBatch(let b, let t):
            return "a batch of \(b) sequences of \(t) tokens has no token to run; every sequence needs at least one token"
        }
    }
}

public final class ModelDir: @unchecked Sendable {
    public let path: String
    public let config: ModelConfig
    public let weights: WeightStore

    public init(path: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw FileError.notFound(path: path, hint: "expected a Hugging Face model folder (config.json + model.safetensors)")
        }
        guard isDir.boolValue else {
            throw FileError.cannotRead(path: path, reason: "not a folder; pass the model folder, not a file in it")
        }
        self.path = path
        let fm = FileManager.default
        if !fm.fileExists(atPath: path + "/config.json") && fm.fileExists(atPath: path + "/adapter_config.json") {
            throw FileError.cannotRead(path: path,
                reason: "is a LoRA adapter folder (adapter_config.json), not a model; pass the base model folder as MODEL_DIR and this folder as the adapter")
        }
        config = try ModelConfig.load(directory: path)
        weights = try WeightStore(directory: path)
    }

    /// True when the checkpoint stores its Linear weights in the bitsandbytes 4-bit layout.
    public var isQuantized: Bool {
        config.isQuantized || weights.names.contains { $0.contains(".quant_state.bitsandbytes__") }
    }

    /// Every decoder Linear, with shapes checked against the stored weights.
    public func linearModules() throws -> [LinearModule] {
        var out: [LinearModule] = []
        for m in config.linearModules() {
            let w = m.name + ".weight"
            guard let info = weights.info(w) else { throw ModelError.missingWeight(dir: path, tensor: w) }
            let shape: [Int]
            let quantized = BnbWeight.stateTensorName(w, in: weights) != nil
            if quantized {
                shape = try BnbWeight(name: w, store: weights).shape
            } else {
                shape = info.shape
            }
            guard shape == [m.out, m.in] else {
                throw ModelError.shapeMismatch(dir: path, tensor: w, found: shape, expected: [m.out, m.in])
            }
            out.append(LinearModule(name: m.name, outFeatures: m.out, inFeatures: m.in, quantized: quantized))
        }
        return out
    }

    /// Every tensor the model needs, checked before a tool writes anything: the embedding, each layer's norms,
    /// Linears (full precision or 4-bit) and the biases config.json implies, the final norm and an untied head,
    /// with their shapes and float dtypes. A missing or misshapen tensor names itself and the file it came from.
    public func validate() throws {
        let c = config, d = c.hiddenSize
        func need(_ name: String, _ shape: [Int]) throws {
            guard let i = weights.info(name) else { throw ModelError.missingWeight(dir: path, tensor: name) }
            guard i.shape == shape else { throw ModelError.shapeMismatch(dir: path, tensor: name, found: i.shape, expected: shape) }
            guard i.dtype.isFloatingPoint else { throw ModelError.badDType(dir: path, tensor: name, dtype: i.dtype.rawValue) }
        }
        try need("model.embed_tokens.weight", [c.vocabSize, d])
        try need("model.norm.weight", [d])
        if !c.tieWordEmbeddings { try need("lm_head.weight", [c.vocabSize, d]) }
        for m in try linearModules() {
            if !m.quantized {
                let w = m.name + ".weight"
                guard let i = weights.info(w), i.dtype.isFloatingPoint else {
                    throw ModelError.badDType(dir: path, tensor: w, dtype: weights.info(w)?.dtype.rawValue ?? "?")
                }
            }
            let short = m.shortName
            let biased = ["q_proj", "k_proj", "v_proj", "qkv_proj"].contains(short) ? c.attentionBias
                : short == "o_proj" ? c.oProjBias : c.mlpBias
            if biased { try need(m.name + ".bias", [m.outFeatures]) }
        }
        for l in 0..<c.numLayers {
            try need("model.layers.\(l).input_layernorm.weight", [d])
            try need("model.layers.\(l).post_attention_layernorm.weight", [d])
            if c.sandwichNorms {
                try need("model.layers.\(l).pre_feedforward_layernorm.weight", [d])
                try need("model.layers.\(l).post_feedforward_layernorm.weight", [d])
            }
            if c.qkNorm {
                try need("model.layers.\(l).self_attn.q_norm.weight", [c.headDim])
                try need("model.layers.\(l).self_attn.k_norm.weight", [c.headDim])
            }
        }
    }

    /// Parameter count as PEFT's get_nb_trainable_parameters reports it for the base model: every stored
    /// parameter once (a 4-bit packed weight counts as 2 values per byte; its statistics are not parameters).
    public func parameterCount() -> Int {
        var total = 0
        for n in weights.names {
            guard let info = weights.info(n) else { continue }
            if n.hasSuffix("rotary_emb.inv_freq") || n.contains(".weight.") { continue }  // buffers and 4-bit stats
            let numel = checkedNumel(info.shape) ?? 0
            if BnbWeight.stateTensorName(n, in: weights) != nil {
                total += numel * 2 * info.dtype.size
            } else {
                total += numel
            }
        }
        return total
    }
}

extension ModelError: ToolError {}
