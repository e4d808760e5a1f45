// ModelConfig: config.json of a Llama-family model (model_type llama, mistral, qwen2, qwen3, phi3, gemma2,
// gemma3_text), in both the
// transformers 4.x form (rope_theta, torch_dtype) and the 5.x form (rope_parameters, dtype). docs/formats.md §7.
import Foundation

public enum ConfigError: Error, CustomStringConvertible {
    case missing(path: String)
    case invalidJSON(path: String, reason: String)
    case unsupportedModelType(path: String, type: String)
    case missingKey(path: String, key: String)
    case badValue(path: String, key: String, reason: String)

    public var description: String {
        switch self {
        case .missing(let p): return "\(p): not found; a model folder needs the config.json that save_pretrained writes"
        case .invalidJSON(let p, let r): return "\(p): invalid JSON: \(r)"
        case .unsupportedModelType(let p, let t):
            return "\(p): model_type '\(t)' is not supported; supported: \(ModelConfig.supportedTypes.joined(separator: ", "))"
        case .missingKey(let p, let k): return "\(p): missing required key \"\(k)\""
        case .badValue(let p, let k, let r): return "\(p): \"\(k)\": \(r)"
        }
    }
}

public struct RopeScaling: Equatable, Sendable {
    public var type: String  // "default", "linear", "llama3", ...
    public var factor: Double
    public var lowFreqFactor: Double
    public var highFreqFactor: Double
    public var originalMaxPositionEmbeddings: Int
    /// longrope (Phi-3.5, Phi-4-mini): per-frequency divisors for sequences up to (short) and past (long) the
    /// original context, and the factor cos/sin are multiplied by.
    public var shortFactor: [Double] = []
    public var longFactor: [Double] = []
    public var attentionFactor: Double = 1
}

/// The MLP's gate activation: h = act(gate(x)) · up(x).
public enum Activation: String, Sendable {
    case silu
    /// transformers' gelu_pytorch_tanh: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (gemma's GeGLU).
    case geluTanh = "gelu_pytorch_tanh"
}

public struct ModelConfig: Sendable {
    public static let supportedTypes = ["gemma2", "gemma3_text", "llama", "mistral", "phi3", "qwen2", "qwen3"]

    public var modelType: String
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numLayers: Int
    public var numHeads: Int
    public var numKVHeads: Int
    public var headDim: Int
    public var maxPositionEmbeddings: Int
    public var rmsNormEps: Double
    public var ropeTheta: Double
    public var ropeScaling: RopeScaling?
    public var attentionBias: Bool  // bias on q, k, v (and o for llama's attention_bias)
    public var oProjBias: Bool
    public var mlpBias: Bool
    public var tieWordEmbeddings: Bool
    public var bosTokenId: Int?
    public var eosTokenIds: [Int]
    public var dtype: DType?
    /// The attention window of the sliding-window layers (mistral's `sliding_window`; qwen2/qwen3's when
    /// `use_sliding_window` is true), nil when no layer slides.
    public var slidingWindow: Int?
    /// Per layer: the number of keys a query sees (itself and the window − 1 before it), nil for full causal
    /// attention. transformers' `sliding_window_overlay`: key j is visible to query i iff j > i − window.
    public var layerWindows: [Int?]
    /// qwen3: RMSNorm over each head of q and k (`self_attn.q_norm`, `self_attn.k_norm`, [head_dim]) after the
    /// projection, before RoPE.
    public var qkNorm: Bool
    /// phi3: q|k|v as one Linear (`self_attn.qkv_proj`, rows in that order) and gate|up as one
    /// (`mlp.gate_up_proj`, gate first); PEFT targets the fused names.
    public var fusedProjections: Bool
    public var activation: Activation
    /// gemma: RMSNorm scales by (1 + w) (the stored weights are offsets from 1).
    public var normPlusOne: Bool
    /// gemma2/gemma3: the attention output and the MLP output are normed before their residual adds
    /// (`post_attention_layernorm`, `post_feedforward_layernorm`), and the MLP's input norm is
    /// `pre_feedforward_layernorm`.
    public var sandwichNorms: Bool
    /// gemma: embeddings are multiplied by √hidden_size (in float32).
    public var embedScale: Float?
    /// The attention scores' scale: query_pre_attn_scalar^−½ (gemma) or head_dim^−½.
    public var attentionScale: Float
    /// gemma2: scores become cap · tanh(scores / cap) before the mask (attn_logit_softcapping), and the logits
    /// cap · tanh(logits / cap) (final_logit_softcapping).
    public var attnSoftcap: Float?
    public var finalSoftcap: Float?
    /// gemma3: the sliding-window layers' RoPE (rope_local_base_freq, or rope_parameters.sliding_attention);
    /// nil when every layer uses the one RoPE above.
    public var localRopeTheta: Double?
    public var localRopeScaling: RopeScaling?
    /// Per layer: whether it takes the local RoPE (gemma3's "sliding_attention" layers).
    public var layerLocalRope: [Bool]
    /// The leading dimensions of each head that RoPE rotates (phi3's partial_rotary_factor; headDim otherwise).
    public var rotaryDim: Int
    /// The whole file, keys in order, for tools that rewrite it.
    public var raw: JSONObject

    public var isQuantized: Bool { raw["quantization_config"] != nil }

    public static func load(directory: String) throws -> ModelConfig {
        let path = directory + "/config.json"
        guard FileManager.default.fileExists(atPath: path) else { throw ConfigError.missing(path: path) }
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: path)) } catch {
            throw FileError.cannotRead(path: path, reason: error.localizedDescription)
        }
        return try parse(data, path: path)
    }

    public static func parse(_ data: Data, path: String) throws -> ModelConfig {
        let json: JSONValue
        do { json = try JSONParser().parse(data) } catch {
            throw ConfigError.invalidJSON(path: path, reason: "\(error)")
        }
        guard case .object(let o) = json else {
            throw ConfigError.invalidJSON(path: path, reason: "top level is a \(json.typeName), not an object")
        }
        return try ModelConfig(o, path: path)
    }

    public init(_ o: JSONObject, path: String) throws {
        raw = o
        guard let mt = o["model_type"]?.stringValue else { throw ConfigError.missingKey(path: path, key: "model_type") }
        guard ModelConfig.supportedTypes.contains(mt) else { throw ConfigError.unsupportedModelType(path: path, type: mt) }
        modelType = mt

        func int(_ k: String, default d: Int? = nil) throws -> Int {
            guard let v = o[k], !v.isNull else {
                if let d { return d }
                throw ConfigError.missingKey(path: path, key: k)
            }
            guard let i = v.intValue, i > 0, i < Int64(Int32.max) else {
                throw ConfigError.badValue(path: path, key: k, reason: "expected a positive integer, got \(v.serialized())")
            }
            return Int(i)
        }
        func bool(_ k: String, default d: Bool) throws -> Bool {
            guard let v = o[k], !v.isNull else { return d }
            guard let b = v.boolValue else { throw ConfigError.badValue(path: path, key: k, reason: "expected true or false") }
            return b
        }

        vocabSize = try int("vocab_size")
        hiddenSize = try int("hidden_size")
        intermediateSize = try int("intermediate_size")
        numLayers = try int("num_hidden_layers")
        numHeads = try int("num_attention_heads")
        numKVHeads = try int("num_key_value_heads", default: numHeads)
        guard numHeads % numKVHeads == 0 else {
            throw ConfigError.badValue(path: path, key: "num_key_value_heads",
                                       reason: "\(numKVHeads) does not divide num_attention_heads \(numHeads)")
        }
        if let hd = o["head_dim"], !hd.isNull {
            headDim = try int("head_dim")
        } else {
            guard hiddenSize % numHeads == 0 else {
                throw ConfigError.badValue(path: path, key: "hidden_size", reason: "not divisible by num_attention_heads and no head_dim given")
            }
            headDim = hiddenSize / numHeads
        }
        guard headDim % 2 == 0 else { throw ConfigError.badValue(path: path, key: "head_dim", reason: "must be even for rotary embeddings") }
        maxPositionEmbeddings = try int("max_position_embeddings", default: 2048)
        guard let eps = (o["rms_norm_eps"] ?? .double(1e-6)).doubleValue, eps >= 0, eps < 1 else {
            throw ConfigError.badValue(path: path, key: "rms_norm_eps", reason: "expected a finite number in [0, 1), got \(o["rms_norm_eps"]!.serialized())")
        }
        rmsNormEps = eps
        // The MLP is a gated one: SwiGLU (silu; swish is the same function) or gemma's GeGLU (gelu_pytorch_tanh).
        // gemma's modeling code reads hidden_activation, the others hidden_act.
        let gemma = mt.hasPrefix("gemma")
        let actKey = gemma ? (o["hidden_activation"].map { _ in "hidden_activation" } ?? "hidden_act") : (o["hidden_act"] != nil ? "hidden_act" : "hidden_activation")
        activation = gemma ? .geluTanh : .silu
        if let act = o[actKey], !act.isNull {
            switch act.stringValue {
            case "silu", "swish": activation = .silu
            case "gelu_pytorch_tanh": activation = .geluTanh
            default:
                throw ConfigError.badValue(path: path, key: actKey, reason: "\(act.serialized()) is not supported (silu, gelu_pytorch_tanh)")
            }
        }
        normPlusOne = gemma
        sandwichNorms = gemma
        embedScale = gemma ? Float(Double(hiddenSize).squareRoot()) : nil
        /// A positive number, nil for JSON null, the default when absent.
        func optionalNumber(_ k: String, default d: Double?) throws -> Double? {
            guard let v = o[k] else { return d }
            if v.isNull { return nil }
            guard let x = v.doubleValue, x > 0, x.isFinite else {
                throw ConfigError.badValue(path: path, key: k, reason: "expected a positive number or null, got \(v.serialized())")
            }
            return x
        }
        if gemma {
            attentionScale = Float(1 / (try optionalNumber("query_pre_attn_scalar", default: 256) ?? 256).squareRoot())
            attnSoftcap = try optionalNumber("attn_logit_softcapping", default: mt == "gemma2" ? 50 : nil).map(Float.init)
            finalSoftcap = try optionalNumber("final_logit_softcapping", default: mt == "gemma2" ? 30 : nil).map(Float.init)
            if let b = o["use_bidirectional_attention"], b.boolValue == true {
                throw ConfigError.badValue(path: path, key: "use_bidirectional_attention", reason: "bidirectional attention is not a causal language model; only causal gemma models are supported")
            }
        } else {
            attentionScale = 1 / Float(headDim).squareRoot()
            attnSoftcap = nil
            finalSoftcap = nil
        }
        // Size products the engine forms (e.g. vocab × hidden) must fit easily in an Int.
        for (k, v) in [("vocab_size", vocabSize), ("hidden_size", hiddenSize), ("intermediate_size", intermediateSize), ("num_hidden_layers", numLayers),
                       ("num_attention_heads", numHeads), ("head_dim", headDim)] where v > 1 << 24 {
            throw ConfigError.badValue(path: path, key: k, reason: "\(v) is beyond any supported model (at most \(1 << 24))")
        }

        // rope: 5.x nests everything in rope_parameters; 4.x has rope_theta + rope_scaling.
        let ropeObj: JSONObject? = o["rope_parameters"]?.objectValue ?? o["rope_scaling"]?.objectValue
        for k in ["rope_scaling", "rope_parameters"] {
            if let v = o[k], !v.isNull, v.objectValue == nil {
                throw ConfigError.badValue(path: path, key: k, reason: "expected an object or null, got \(v.serialized())")
            }
        }
        let maxPos = maxPositionEmbeddings
        /// RoPE base and scaling from a rope object (5.x rope_parameters or 4.x rope_scaling) and a rope_theta value.
        func parseRope(_ ropeObj: JSONObject?, _ thetaValue: JSONValue?, defaultTheta: Double) throws -> (Double, RopeScaling?) {
            var theta = defaultTheta
            var scaling: RopeScaling? = nil
            if let tv = thetaValue, !tv.isNull {
                guard let t = tv.doubleValue, t > 0, t.isFinite else {
                    throw ConfigError.badValue(path: path, key: "rope_theta", reason: "expected a positive finite number, got \(tv.serialized())")
                }
                theta = t
            }
            if let r = ropeObj {
                let tv = r["rope_type"] ?? r["type"] ?? .string("default")
                guard let named = tv.stringValue else {
                    throw ConfigError.badValue(path: path, key: "rope_type", reason: "expected a string, got \(tv.serialized())")
                }
                let t = mt == "phi3" && (named == "su" || named == "yarn") ? "longrope" : named
                /// A positive finite number of the scaling object (absent: the default).
                func number(_ k: String, _ def: Double?) throws -> Double {
                    guard let v = r[k], !v.isNull else {
                        if let def { return def }
                        throw ConfigError.badValue(path: path, key: "rope_scaling.\(k)", reason: "rope_type \(t) needs a positive factor")
                    }
                    guard let d = v.doubleValue, d > 0, d.isFinite else {
                        throw ConfigError.badValue(path: path, key: "rope_scaling.\(k)", reason: "expected a positive finite number, got \(v.serialized())")
                    }
                    return d
                }
                switch t {
                case "default":
                    scaling = nil
                case "longrope":
                    // transformers' _compute_longrope_parameters (Phi3Config maps the legacy "su"/"yarn" names to it).
                    var origValue = r["original_max_position_embeddings"] ?? o["original_max_position_embeddings"]
                    if origValue?.isNull ?? true { origValue = nil }
                    guard let ov = origValue, let orig = ov.intValue, orig > 0, orig < Int64(Int32.max) else {
                        throw ConfigError.badValue(path: path, key: "original_max_position_embeddings", reason: "rope_type longrope needs a positive integer")
                    }
                    let f = try number("factor", Double(maxPos) / Double(orig))
                    let att: Double
                    if let a = r["attention_factor"], !a.isNull {
                        att = try number("attention_factor", nil)
                    } else {
                        att = f <= 1 ? 1 : (1 + Foundation.log(f) / Foundation.log(Double(orig))).squareRoot()
                    }
                    func factors(_ k: String) throws -> [Double] {
                        guard case .array(let a)? = r[k], a.allSatisfy({ ($0.doubleValue ?? 0) > 0 }) else {
                            throw ConfigError.badValue(path: path, key: "rope_scaling.\(k)", reason: "rope_type longrope needs a list of positive numbers")
                        }
                        return a.map { $0.doubleValue! }
                    }
                    var rs = RopeScaling(type: "longrope", factor: f, lowFreqFactor: 1, highFreqFactor: 1, originalMaxPositionEmbeddings: Int(orig))
                    rs.shortFactor = try factors("short_factor")
                    rs.longFactor = try factors("long_factor")
                    rs.attentionFactor = att
                    scaling = rs
                case "linear", "llama3":
                    let f = try number("factor", nil)
                    let orig = try number("original_max_position_embeddings", 8192)
                    guard orig == orig.rounded(), orig < Double(Int32.max) else {
                        throw ConfigError.badValue(path: path, key: "rope_scaling.original_max_position_embeddings", reason: "expected a positive integer")
                    }
                    let low = try number("low_freq_factor", 1), high = try number("high_freq_factor", 4)
                    guard t != "llama3" || high > low else {
                        throw ConfigError.badValue(path: path, key: "rope_scaling.high_freq_factor", reason: "must exceed low_freq_factor (\(low))")
                    }
                    scaling = RopeScaling(type: t, factor: f, lowFreqFactor: low, highFreqFactor: high,
                                              originalMaxPositionEmbeddings: Int(orig))
                default:
                    throw ConfigError.badValue(path: path, key: "rope_type", reason: "'\(t)' is not supported (default, linear, llama3, longrope)")
                }
            } else {
                scaling = nil
            }
            return (theta, scaling)
        }
        localRopeTheta = nil
        localRopeScaling = nil
        if mt == "gemma3_text" {
            // gemma3: one RoPE for the full-attention layers (θ 1e6 by default, e.g. linear ×8 on the 4B) and one for
            // the sliding layers (θ 1e4): 5.x nests them per layer type, 4.x has rope_theta + rope_scaling and
            // rope_local_base_freq.
            if let rp = o["rope_parameters"]?.objectValue, rp["full_attention"] != nil || rp["sliding_attention"] != nil {
                for k in ["full_attention", "sliding_attention"] where rp[k] != nil && rp[k]?.objectValue == nil {
                    throw ConfigError.badValue(path: path, key: "rope_parameters.\(k)", reason: "expected an object")
                }
                let full = rp["full_attention"]?.objectValue, local = rp["sliding_attention"]?.objectValue
                (ropeTheta, ropeScaling) = try parseRope(full, full?["rope_theta"], defaultTheta: 1_000_000)
                let (lt, ls) = try parseRope(local, local?["rope_theta"], defaultTheta: 10000)
                (localRopeTheta, localRopeScaling) = (lt, ls)
            } else {
                (ropeTheta, ropeScaling) = try parseRope(o["rope_scaling"]?.objectValue, o["rope_theta"], defaultTheta: 1_000_000)
                (localRopeTheta, localRopeScaling) = try parseRope(nil, o["rope_local_base_freq"], defaultTheta: 10000)
            }
        } else {
            var thetaValue = o["rope_theta"]
            if let rp = o["rope_parameters"]?.objectValue, let t = rp["rope_theta"] { thetaValue = t }
            (ropeTheta, ropeScaling) = try parseRope(ropeObj, thetaValue, defaultTheta: 10000)
        }

        if mt == "qwen2" {
            attentionBias = true
            oProjBias = false
        } else {
            attentionBias = try bool("attention_bias", default: false)
            oProjBias = attentionBias
        }
        mlpBias = try bool("mlp_bias", default: false)
        tieWordEmbeddings = try bool("tie_word_embeddings", default: gemma)
        bosTokenId = o["bos_token_id"]?.intValue.map { Int($0) }
        switch o["eos_token_id"] {
        case .some(.array(let a)): eosTokenIds = a.compactMap { $0.intValue.map { Int($0) } }
        case .some(let v): eosTokenIds = v.intValue.map { [Int($0)] } ?? []
        case .none: eosTokenIds = []
        }
        let dt = o["dtype"]?.stringValue ?? o["torch_dtype"]?.stringValue
        dtype = dt.flatMap { DType(torchName: $0) }
        qkNorm = mt == "qwen3" || mt == "gemma3_text"
        fusedProjections = mt == "phi3"
        // partial_rotary_factor: phi3 reads it from rope_parameters (5.x) or the top level (4.x); int(head_dim · f).
        rotaryDim = headDim
        if mt == "phi3", let pv = o["rope_parameters"]?.objectValue?["partial_rotary_factor"] ?? o["partial_rotary_factor"], !pv.isNull {
            guard let f = pv.doubleValue, f > 0, f <= 1 else {
                throw ConfigError.badValue(path: path, key: "partial_rotary_factor", reason: "expected a number in (0, 1], got \(pv.serialized())")
            }
            rotaryDim = Int(Double(headDim) * f)
            guard rotaryDim >= 2, rotaryDim % 2 == 0 else {
                throw ConfigError.badValue(path: path, key: "partial_rotary_factor", reason: "head_dim \(headDim) × \(f) = \(rotaryDim) rotary dimensions; RoPE needs an even number")
            }
        }
        if let rs = ropeScaling, rs.type == "longrope" {
            for (k, v) in [("short_factor", rs.shortFactor), ("long_factor", rs.longFactor)] where v.count != rotaryDim / 2 {
                throw ConfigError.badValue(path: path, key: "rope_scaling.\(k)", reason: "has \(v.count) entries; the \(rotaryDim) rotary dimensions need \(rotaryDim / 2)")
            }
        }

        // Sliding-window attention, as transformers configures it: mistral applies `sliding_window` (when not
        // null) to every layer and ignores `layer_types`; qwen2/qwen3 use it only with `use_sliding_window`, on
        // the layers `layer_types` marks "sliding_attention" (by default those from `max_window_layers` on).
        var window: Int? = nil
        let slides = mt == "mistral" || mt == "phi3" || gemma ? true : (mt == "qwen2" || mt == "qwen3") ? try bool("use_sliding_window", default: false) : false
        if slides, let v = o["sliding_window"], !v.isNull {
            guard let w = v.intValue, w > 0, w < Int64(Int32.max) else {
                throw ConfigError.badValue(path: path, key: "sliding_window", reason: "expected a positive integer or null, got \(v.serialized())")
            }
            window = Int(w)
        }
        slidingWindow = window
        /// `layer_types`, true for "sliding_attention"; nil when absent.
        let nLayers = numLayers
        func layerTypes() throws -> [Bool]? {
            guard let lt = o["layer_types"], !lt.isNull else { return nil }
            guard case .array(let a) = lt, a.count == nLayers else {
                throw ConfigError.badValue(path: path, key: "layer_types",
                                           reason: "expected a list of \(nLayers) layer types (one per num_hidden_layers), got \(lt.serialized())")
            }
            return try a.enumerated().map { i, t in
                switch t.stringValue {
                case "full_attention": return false
                case "sliding_attention": return true
                default:
                    throw ConfigError.badValue(path: path, key: "layer_types",
                                               reason: "entry \(i) is \(t.serialized()); expected \"full_attention\" or \"sliding_attention\"")
                }
            }
        }
        layerLocalRope = Array(repeating: false, count: numLayers)
        if gemma {
            // gemma2 alternates sliding and full layers; gemma3 has a full one every sliding_window_pattern (6).
            // gemma3's sliding layers also take the local RoPE, whether or not a window is set.
            var pattern = mt == "gemma2" ? 2 : 6
            if mt == "gemma3_text", let v = o["sliding_window_pattern"], !v.isNull {
                pattern = try int("sliding_window_pattern")
                guard pattern > 0 else {
                    throw ConfigError.badValue(path: path, key: "sliding_window_pattern", reason: "expected a positive integer")
                }
            }
            let sliding = try layerTypes() ?? (0..<numLayers).map { ($0 + 1) % pattern != 0 }
            layerWindows = sliding.map { $0 ? window : nil }
            if mt == "gemma3_text" { layerLocalRope = sliding }
        } else if mt == "mistral" || mt == "phi3" || window == nil {
            layerWindows = Array(repeating: window, count: numLayers)
        } else if let types = try layerTypes() {
            layerWindows = types.map { $0 ? window : nil }
        } else {
            var first = 28
            if let v = o["max_window_layers"], !v.isNull {
                guard let i = v.intValue, i >= 0, i < Int64(Int32.max) else {
                    throw ConfigError.badValue(path: path, key: "max_window_layers", reason: "expected a non-negative integer, got \(v.serialized())")
                }
                first = Int(i)
            }
            layerWindows = (0..<numLayers).map { $0 >= first ? window : nil }
        }
    }

    /// The Linear modules of one decoder layer, with (out, in) shapes, in the order transformers registers them.
    public func layerLinears() -> [(name: String, out: Int, in: Int)] {
        let q = numHeads * headDim, kv = numKVHeads * headDim
        if fusedProjections {
            return [
                ("self_attn.qkv_proj", q + 2 * kv, hiddenSize),
                ("self_attn.o_proj", hiddenSize, q),
                ("mlp.gate_up_proj", 2 * intermediateSize, hiddenSize),
                ("mlp.down_proj", hiddenSize, intermediateSize),
            ]
        }
        return [
            ("self_attn.q_proj", q, hiddenSize),
            ("self_attn.k_proj", kv, hiddenSize),
            ("self_attn.v_proj", kv, hiddenSize),
            ("self_attn.o_proj", hiddenSize, q),
            ("mlp.gate_proj", intermediateSize, hiddenSize),
            ("mlp.up_proj", intermediateSize, hiddenSize),
            ("mlp.down_proj", hiddenSize, intermediateSize),
        ]
    }

    /// Full module names of every decoder Linear (`model.layers.N.self_attn.q_proj`, ...), with shapes.
    public func linearModules() -> [(name: String, out: Int, in: Int)] {
        var out: [(String, Int, Int)] = []
        for l in 0..<numLayers {
            for m in layerLinears() { out.append(("model.layers.\(l).\(m.name)", m.out, m.in)) }
        }
        return out
    }
}
