// GGUFExport: a Hugging Face model dir (or a PEFT adapter on it) as a GGUF file llama.cpp and Ollama load, laid
// out as llama.cpp's own converters write it (convert_hf_to_gguf.py for models, convert_lora_to_gguf.py for
// adapters): architecture metadata, tensor names, the llama q/k row permutation, the byte-level BPE vocabulary
// with its pre-tokenizer name, special tokens and chat template. One tensor is in memory at a time.
import Foundation
import LoRAFormats
import LoRAKernels
import LoRATokenizer

public enum GGUFExportError: Error, CustomStringConvertible, ToolError {
    case unsupportedArchitecture(path: String, name: String)
    case quantizedModel(path: String)
    case unsupportedTokenizer(path: String, reason: String)
    case unknownPreTokenizer(path: String, hash: String)
    case badTokenizer(path: String, reason: String)
    case doraAdapter(source: String)

    public var description: String {
        switch self {
        case let .doraAdapter(source):
            return "\(source) is a DoRA adapter, which llama.cpp's LoRA GGUF cannot express; lora-merge it into the model and export the merged model"
        case let .unsupportedArchitecture(path, name):
            return "\(path): architecture \(name) is not one lora-export maps to GGUF; supported: \(GGUFExport.architectures.map(\.hf).joined(separator: ", "))"
        case let .quantizedModel(path):
            return "\(path) is a 4-bit (bitsandbytes) model; export the full-precision model it was quantized from, or a lora-merge output (for QLoRA: lora-merge --base-full), and use --type q8_0 for a small file"
        case let .unsupportedTokenizer(path, reason):
            return "\(path): \(reason); lora-export writes byte-level BPE vocabularies (tokenizer.ggml.model gpt2) only — convert this model with llama.cpp's convert_hf_to_gguf.py"
        case let .unknownPreTokenizer(path, hash):
            return "\(path): the BPE pre-tokenizer is not one llama.cpp knows (chkhsh \(hash), not in convert_hf_to_gguf.py's table, and the pre_tokenizer config is not a known one); pass --tokenizer-pre NAME (e.g. llama-bpe, qwen2, smollm, gpt-2) if you know which llama.cpp pre-tokenizer it is"
        case let .badTokenizer(path, reason):
            return "\(path): \(reason); the model folder needs the tokenizer.json it was trained with"
        }
    }
}

/// What to write.
public struct GGUFExportOptions: Sendable {
    /// Type of the 2-D weights; nil: the source's 16-bit type (bf16 stays bf16, otherwise f16) for a model, f32 for an
    /// adapter (what convert_lora_to_gguf.py writes by default).
    public var type: GGMLType?
    /// tokenizer.ggml.pre when the pre-tokenizer is not recognized (or to override it).
    public var tokenizerPre: String?
    /// general.name (default: the model folder's name).
    public var name: String?
    public var replace = false
    public init() {}
}

public struct GGUFExportSummary: Sendable {
    public var path = ""
    public var bytes = 0
    public var tensors = 0
    public var type = GGMLType.f16
    public var arch = ""
    public var kind = "model"
    public var tokenizerPre: String?
    /// How tokenizer.ggml.pre was found: "chkhsh", "pre_tokenizer config" or "--tokenizer-pre".
    public var tokenizerPreSource: String?
    /// Tensors asked for as q8_0 whose rows are not whole blocks of 32, written as f16.
    public var fellBackToF16: [String] = []
    /// Adapter modules whose scaling differed from alpha/r and was folded into lora_b.
    public var foldedScaling: [String] = []
    public var alpha: Double?
}

public enum GGUFPreTokenizer {
    /// The pre-tokenizer name of a tokenizer: by the sha256 of its token ids for `checkText` (llama.cpp's own
    /// identification), else by its pre_tokenizer config when that is exactly one llama.cpp implements (with a
    /// warning), else nil. Returns (name, hash, how).
    public static func identify(_ tok: Tokenizer, preTokenizer: JSONValue?) throws -> (name: String?, hash: String, how: String) {
        let ids = try tok.encodeChecked(checkText, addSpecialTokens: true)
        let text = "[" + ids.map(String.init).joined(separator: ", ") + "]"
        let hash = SHA256.hex(Array(text.utf8))
        if let n = knownHashes[hash] { return (n, hash, "chkhsh") }
        return (byConfig(preTokenizer), hash, "pre_tokenizer config")
    }

    static let llama3Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let qwen2Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// The llama.cpp pre-tokenizer whose splitting is exactly this pre_tokenizer config, for the few configs that
    /// map one to one: GPT-2's ByteLevel regex (gpt-2), digits split one by one before it (smollm), Llama 3's split
    /// regex (llama-bpe) and Qwen2's (qwen2), each followed by a ByteLevel without its own regex.
    static func byConfig(_ p: JSONValue?) -> String? {
        guard let p = p?.objectValue, let type = p["type"]?.stringValue else { return nil }
        func byteLevel(_ o: JSONObject?, regex: Bool) -> Bool {
            o?["type"]?.stringValue == "ByteLevel" && (o?["use_regex"]?.boolValue ?? true) == regex
        }
        if type == "ByteLevel" { return byteLevel(p, regex: true) ? "gpt-2" : nil }
        guard type == "Sequence", let seq = p["pretokenizers"]?.arrayValue?.compactMap(\.objectValue), seq.count == 2 else { return nil }
        if seq[0]["type"]?.stringValue == "Digits", seq[0]["individual_digits"]?.boolValue == true, byteLevel(seq[1], regex: true) {
            return "smollm"
        }
        guard seq[0]["type"]?.stringValue == "Split", seq[0]["behavior"]?.stringValue == "Isolated",
              seq[0]["invert"]?.boolValue != true, byteLevel(seq[1], regex: false),
              let re = seq[0]["pattern"]?.objectValue?["Regex"]?.stringValue else { return nil }
        return re == llama3Regex ? "llama-bpe" : re == qwen2Regex ? "qwen2" : nil
    }
}

public enum GGUFExport {
    /// HF architectures lora-export maps, with the GGUF architecture llama.cpp's converter gives them.
    public static let architectures: [(hf: String, gguf: String)] = [
        ("LlamaForCausalLM", "llama"), ("MistralForCausalLM", "llama"), ("Qwen2ForCausalLM", "qwen2"),
    ]

    /// The GGUF architecture of a model folder (config.json "architectures", else model_type).
    public static func architecture(_ c: ModelConfig, path: String) throws -> String {
        let hf: String
        if let a = c.raw["architectures"]?.arrayValue?.first?.stringValue {
            hf = a
        } else {
            hf = ["llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"][c.modelType] ?? c.modelType
        }
        guard let g = architectures.first(where: { $0.hf == hf })?.gguf else {
            throw GGUFExportError.unsupportedArchitecture(path: path + "/config.json", name: hf)
        }
        return g
    }

    /// general.file_type (llama_ftype) of a file whose 2-D weights are `t`.
    static func fileType(_ t: GGMLType) -> UInt32 {
        switch t { case .f32: 0; case .f16: 1; case .q8_0: 7; case .bf16: 32 }
    }

    /// The type a tensor is stored as: 1-D tensors and norms in f32 (as the converter does), a q8_0 request
    /// for rows that are not whole blocks of 32 in f16 (the converter's fallback), else the request.
    public static func storageType(name: String, shape: [Int], requested: GGMLType) -> (type: GGMLType, fellBack: Bool) {
        if shape.count <= 1 || name.hasSuffix("_norm.weight") { return (.f32, false) }
        if requested == .q8_0, let w = shape.last, w % 32 != 0 { return (.f16, true) }
        return (requested, false)
    }

    /// The GGUF name of a decoder Linear or norm (`model.layers.3.self_attn.q_proj` → `blk.3.attn_q`).
    public static func ggufName(module: String) -> String? {
        let parts = module.split(separator: ".").map(String.init)
        guard parts.count >= 4, parts[0] == "model", parts[1] == "layers", let l = Int(parts[2]) else {
            return ["model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"][module]
        }
        let map = ["self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                   "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                   "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"]
        return map[parts[3...].joined(separator: ".")].map { "blk.\(l).\($0)" }
    }

    /// How many heads the llama q/k permutation groups a module's rows by (convert_hf_to_gguf's
    /// `permute(w, n_head, n_head_kv)`): q by the attention heads, k by the key-value heads; 0 for no permutation
    /// (other modules, and every module of qwen2).
    public static func permuteHeads(module: String, arch: String, config c: ModelConfig) -> Int {
        guard arch == "llama" else { return 0 }
        if module.hasSuffix("self_attn.q_proj") { return c.numHeads }
        if module.hasSuffix("self_attn.k_proj") { return c.numKVHeads }
        return 0
    }

    /// Rows reordered within each head from [first halves; second halves] (HF's rotate_half layout) to interleaved
    /// pairs (llama.cpp's): new row h·d + 2i + j is old row h·d + j·d/2 + i. `x` is [rows, cols] row-major.
    public static func permuteRows(_ x: [Float], rows: Int, cols: Int, heads: Int, inverse: Bool = false) -> [Float] {
        guard heads > 0, rows % heads == 0, (rows / heads) % 2 == 0 else { return x }
        let d = rows / heads, half = d / 2
        var out = [Float](repeating: 0, count: x.count)
        x.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for h in 0..<heads {
                    for i in 0..<half {
                        for j in 0..<2 {
                            let new = h * d + 2 * i + j, old = h * d + j * half + i
                            let (to, from) = inverse ? (old, new) : (new, old)
                            for c in 0..<cols { dst[to * cols + c] = src[from * cols + c] }
                        }
                    }
                }
            }
        }
        return out
    }

    // MARK: model

    struct Planned {
        var plan: GGUFTensorPlan
        var make: () throws -> [Float]
    }

    /// Writes `model` as a GGUF model file at `output` (atomically).
    public static func exportModel(_ m: ModelDir, to output: String, options: GGUFExportOptions,
                                   warn: (String) -> Void = { _ in }) throws -> GGUFExportSummary {
        if m.isQuantized { throw GGUFExportError.quantizedModel(path: m.path) }
        try checkOutput(output, replace: options.replace)
        let c = m.config
        let arch = try architecture(c, path: m.path)
        try m.validate()
        let embed = try m.weights.tensor("model.embed_tokens.weight")
        let type = options.type ?? (embed.dtype == .BF16 ? .bf16 : .f16)
        if let w = c.slidingWindow { warn("\(m.path): sliding_window \(w) is not written (llama.cpp's \(arch) attends to the whole context)") }

        var s = GGUFExportSummary()
        s.arch = arch
        s.type = type
        // Tensors, in model order.
        var planned: [Planned] = []
        func add(_ name: String, _ shape: [Int], _ make: @escaping () throws -> [Float]) {
            let (t, fb) = storageType(name: name, shape: shape, requested: type)
            if fb { s.fellBackToF16.append(name) }
            planned.append(Planned(plan: GGUFTensorPlan(name: name, shape: shape, type: t), make: make))
        }
        let store = m.weights
        func source(_ hf: String, _ gguf: String, heads: Int = 0) throws {
            guard let info = store.info(hf) else { throw ModelError.missingWeight(dir: m.path, tensor: hf) }
            add(gguf, info.shape) {
                let x = try store.tensor(hf).floats()
                return heads > 0 ? permuteRows(x, rows: info.shape[0], cols: info.shape.count > 1 ? info.shape[1] : 1, heads: heads) : x
            }
        }
        try source("model.embed_tokens.weight", "token_embd.weight")
        if let rs = c.ropeScaling, rs.type == "llama3" {
            let f = llama3RopeFactors(c, rs)
            add("rope_freqs.weight", [f.count]) { f }
        }
        for l in 0..<c.numLayers {
            let p = "model.layers.\(l)."
            try source(p + "input_layernorm.weight", "blk.\(l).attn_norm.weight")
            for (mod, _, _) in c.layerLinears() {
                let module = p + mod
                guard let g = ggufName(module: module) else { continue }
                let heads = permuteHeads(module: module, arch: arch, config: c)
                try source(module + ".weight", g + ".weight", heads: heads)
                if store.contains(module + ".bias") { try source(module + ".bias", g + ".bias", heads: heads) }
            }
            try source(p + "post_attention_layernorm.weight", "blk.\(l).ffn_norm.weight")
        }
        try source("model.norm.weight", "output_norm.weight")
        if !c.tieWordEmbeddings { try source("lm_head.weight", "output.weight") }

        var md = generalMetadata(arch: arch, kind: "model", name: options.name ?? URL(fileURLWithPath: m.path).standardized.lastPathComponent)
        md += architectureMetadata(c, arch: arch, type: type)
        let (tmd, pre, how) = try tokenizerMetadata(directory: m.path, vocabSize: c.vocabSize, arch: arch, options: options, warn: warn)
        md += tmd
        s.tokenizerPre = pre
        s.tokenizerPreSource = how
        try write(md, planned, to: output, summary: &s)
        return s
    }

    /// rope_freqs for llama3 rope scaling, as the converter generates them: its arithmetic is on float32 torch
    /// scalars (each Python number taken as float32), so ours is in Float step for step.
    static func llama3RopeFactors(_ c: ModelConfig, _ rs: RopeScaling) -> [Float] {
        let dim = c.headDim
        let old = Float(rs.originalMaxPositionEmbeddings)
        let low = Float(rs.lowFreqFactor), span = Float(rs.highFreqFactor - rs.lowFreqFactor), factor = Float(rs.factor)
        let lowWave = Float(Double(rs.originalMaxPositionEmbeddings) / rs.lowFreqFactor)
        let highWave = Float(Double(rs.originalMaxPositionEmbeddings) / rs.highFreqFactor)
        return stride(from: 0, to: dim, by: 2).map { i in
            let freq = Float(1) / powf(Float(c.ropeTheta), Float(i) / Float(dim))
            let wave = Float(2 * Double.pi) / freq
            if wave < highWave { return 1 }
            if wave > lowWave { return factor }
            let smooth = (old / wave - low) / span
            return 1 / ((1 - smooth) / factor + smooth)
        }
    }

    static func generalMetadata(arch: String, kind: String, name: String) -> [(String, GGUFValue)] {
        [("general.architecture", .string(arch)), ("general.type", .string(kind)), ("general.name", .string(name))]
    }

    static func architectureMetadata(_ c: ModelConfig, arch a: String, type: GGMLType) -> [(String, GGUFValue)] {
        var md: [(String, GGUFValue)] = [
            ("\(a).block_count", .u32(UInt32(c.numLayers))),
            ("\(a).context_length", .u32(UInt32(c.maxPositionEmbeddings))),
            ("\(a).embedding_length", .u32(UInt32(c.hiddenSize))),
            ("\(a).feed_forward_length", .u32(UInt32(c.intermediateSize))),
            ("\(a).attention.head_count", .u32(UInt32(c.numHeads))),
            ("\(a).attention.head_count_kv", .u32(UInt32(c.numKVHeads))),
        ]
        if let rs = c.ropeScaling, rs.type == "linear" {
            md.append(("\(a).rope.scaling.type", .string("linear")))
            md.append(("\(a).rope.scaling.factor", .f32(Float(rs.factor))))
        }
        md.append(("\(a).rope.freq_base", .f32(Float(c.ropeTheta))))
        md.append(("\(a).attention.layer_norm_rms_epsilon", .f32(Float(c.rmsNormEps))))
        if c.raw["head_dim"].map({ !$0.isNull }) == true {
            md.append(("\(a).attention.key_length", .u32(UInt32(c.headDim))))
            md.append(("\(a).attention.value_length", .u32(UInt32(c.headDim))))
        }
        md.append(("general.file_type", .u32(fileType(type))))
        md.append(("\(a).vocab_size", .u32(UInt32(c.vocabSize))))
        md.append(("\(a).rope.dimension_count", .u32(UInt32(c.headDim))))
        md.append(("general.quantization_version", .u32(2)))
        return md
    }

    // MARK: tokenizer

    enum TokenType: Int32 { case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6 }

    /// Added tokens the converter marks CONTROL although they are not flagged special.
    static func looksSpecial(_ t: String) -> Bool {
        ["<pad>", "<mask>", "<2mass>", "[@BOS@]"].contains(t)
            || (t.hasPrefix("<|") && t.hasSuffix("|>")) || (t.hasPrefix("<｜") && t.hasSuffix("｜>"))
            || (t.hasPrefix("<unused") && t.hasSuffix(">"))
    }

    /// The tokenizer.* metadata as convert_hf_to_gguf's _set_vocab_gpt2 and gguf-py's SpecialVocab write it.
    static func tokenizerMetadata(directory dir: String, vocabSize: Int, arch: String, options: GGUFExportOptions,
                                  warn: (String) -> Void) throws -> ([(String, GGUFValue)], String, String) {
        let path = dir + "/tokenizer.json"
        guard FileManager.default.fileExists(atPath: path) else {
            throw GGUFExportError.badTokenizer(path: path, reason: "not found")
        }
        guard let tj = try readJSONObject(path) else { throw GGUFExportError.badTokenizer(path: path, reason: "not found") }
        let tc = try readJSONObject(dir + "/tokenizer_config.json")
        guard let model = tj["model"]?.objectValue else { throw GGUFExportError.badTokenizer(path: path, reason: "no \"model\" object") }
        let mtype = model["type"]?.stringValue ?? (model["merges"] != nil ? "BPE" : "?")
        guard mtype == "BPE" else {
            throw GGUFExportError.unsupportedTokenizer(path: path, reason: "the tokenizer model is \(mtype), not BPE")
        }
        if model["byte_fallback"]?.boolValue == true {
            throw GGUFExportError.unsupportedTokenizer(path: path, reason: "a sentencepiece-style BPE (byte_fallback, as Llama 2 and Mistral v0.1 use) needs llama.cpp's SPM vocabulary")
        }
        let preJSON = tj["pre_tokenizer"]
        guard let pj = preJSON, pj.serialized().contains("\"ByteLevel\"") else {
            throw GGUFExportError.unsupportedTokenizer(path: path, reason: "the pre-tokenizer is not byte-level")
        }
        let tok = try Tokenizer.load(directory: dir)

        // The vocabulary: the model's, then the added tokens by id.
        guard let vocabObj = model["vocab"]?.objectValue else { throw GGUFExportError.badTokenizer(path: path, reason: "model.vocab is not an object") }
        var byId = [String?](repeating: nil, count: vocabSize)
        func place(_ token: String, _ idv: JSONValue?) throws -> Int {
            guard let id64 = idv?.intValue, id64 >= 0 else { throw GGUFExportError.badTokenizer(path: path, reason: "token '\(token)' has no valid id") }
            guard id64 < Int64(vocabSize) else {
                throw GGUFExportError.badTokenizer(path: path, reason: "token '\(token)' has id \(id64), outside config.json's vocab_size \(vocabSize)")
            }
            byId[Int(id64)] = token
            return Int(id64)
        }
        for (k, v) in vocabObj.entries { _ = try place(k, v) }
        struct Added { var content: String; var special: Bool; var normalized: Bool }
        var added: [Int: Added] = [:]
        var addedContents = Set<String>()
        var addedList: [(id: Int, content: String)] = []
        for a in tj["added_tokens"]?.arrayValue ?? [] {
            guard let o = a.objectValue, let content = o["content"]?.stringValue else { continue }
            let id = try place(content, o["id"])
            added[id] = Added(content: content, special: o["special"]?.boolValue ?? false, normalized: o["normalized"]?.boolValue ?? true)
            addedContents.insert(content)
            addedList.append((id, content))
        }
        var tokens: [GGUFValue] = [], types: [GGUFValue] = []
        tokens.reserveCapacity(vocabSize); types.reserveCapacity(vocabSize)
        for i in 0..<vocabSize {
            guard var t = byId[i] else {
                tokens.append(.string("[PAD\(i)]")); types.append(.i32(TokenType.unused.rawValue)); continue
            }
            var ty = TokenType.normal
            if addedContents.contains(t), let a = added[i] {
                if !a.normalized { t = try tok.decodeChecked(try tok.encodeChecked(t, addSpecialTokens: false)) }
                if a.special || looksSpecial(t) {
                    ty = .control
                } else {
                    t = t.replacingOccurrences(of: "\u{2581}", with: " ")
                    ty = .userDefined
                }
            }
            tokens.append(.string(t)); types.append(.i32(ty.rawValue))
        }

        // Pre-tokenizer.
        let (found, hash, how) = try GGUFPreTokenizer.identify(tok, preTokenizer: preJSON)
        let pre: String, source: String
        if let p = options.tokenizerPre {
            if let f = found, f != p { warn("\(path): --tokenizer-pre \(p) overrides the identified pre-tokenizer \(f) (by \(how))") }
            pre = p; source = "--tokenizer-pre"
        } else if let f = found {
            if how != "chkhsh" {
                warn("\(path): chkhsh \(hash) is not in llama.cpp's table (a trimmed or new vocabulary); tokenizer.ggml.pre = \(f), identified by its pre_tokenizer config")
            }
            pre = f; source = how
        } else {
            throw GGUFExportError.unknownPreTokenizer(path: path, hash: hash)
        }

        // Merges, as strings "a b" (a space inside a part is written as U+0120, as gguf-py does).
        var merges: [GGUFValue] = []
        for (n, mv) in (model["merges"]?.arrayValue ?? []).enumerated() {
            if let sv = mv.stringValue { merges.append(.string(sv)); continue }
            guard let pair = mv.arrayValue, pair.count == 2, let a = pair[0].stringValue, let b = pair[1].stringValue else {
                throw GGUFExportError.badTokenizer(path: path, reason: "merges[\(n)] is neither \"a b\" nor [\"a\", \"b\"]")
            }
            let enc = { (s: String) in s.replacingOccurrences(of: " ", with: "\u{0120}") }
            merges.append(.string(enc(a) + " " + enc(b)))
        }

        // Special tokens (SpecialVocab): the post-processor decides add_bos/add_eos first, tokenizer_config.json's
        // add_*_token only where it did not; ids from tokenizer_config.json's *_token via added_tokens, then
        // config.json's *_token_id.
        var addSpecial: [(String, Bool)] = []
        func setAdd(_ k: String, _ v: Bool, override: Bool) {
            if let i = addSpecial.firstIndex(where: { $0.0 == k }) { if override { addSpecial[i].1 = v } } else { addSpecial.append((k, v)) }
        }
        let bosText = tc?["bos_token"].flatMap(tokenText), eosText = tc?["eos_token"].flatMap(tokenText)
        if let pp = tj["post_processor"]?.objectValue {
            let procs = pp["processors"]?.arrayValue?.compactMap(\.objectValue) ?? [pp]
            for pr in procs {
                switch pr["type"]?.stringValue {
                case "ByteLevel"?:
                    setAdd("bos", false, override: false); setAdd("eos", false, override: false)
                case "RobertaProcessing"?:
                    setAdd("bos", true, override: true); setAdd("eos", true, override: true); setAdd("sep", true, override: true)
                case "TemplateProcessing"?:
                    let single = pr["single"]?.arrayValue ?? []
                    if single.count > 1 {
                        // A leading special token is BOS (the converter takes it as BOS when none is named); a
                        // trailing one is EOS (the converter renames EOS to it).
                        if let first = single.first?["SpecialToken"]?["id"]?.stringValue {
                            setAdd("bos", bosText == nil || first == bosText, override: true)
                        }
                        if let last = single.last?["SpecialToken"]?["id"]?.stringValue {
                            if let e = eosText, e != last { warn("\(path): the post-processor ends with \(last), not the eos_token \(e); add_eos_token is written for \(e)") }
                            setAdd("eos", true, override: true)
                        }
                    }
                default: break
                }
            }
        }
        let kinds = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"]
        var ids: [(String, Int)] = []
        func setId(_ k: String, _ id: Int?) {
            guard let id, id >= 0, !ids.contains(where: { $0.0 == k }) else { return }
            ids.append((k, id))
        }
        var chatTemplate: JSONValue? = nil
        if let tc {
            for k in kinds {
                if let b = tc["add_\(k)_token"]?.boolValue { setAdd(k, b, override: false) }
                if let text = tc["\(k)_token"].flatMap(tokenText) {
                    setId(k, addedList.first { $0.content == text }?.id)
                }
            }
            chatTemplate = tc["chat_template"]
        }
        if chatTemplate == nil || chatTemplate?.isNull == true, tc != nil,
           let j = try? String(contentsOfFile: dir + "/chat_template.jinja", encoding: .utf8) {
            chatTemplate = .string(j)
        }
        if let cfg = try readJSONObject(dir + "/config.json") {
            for k in kinds { setId(k, cfg["\(k)_token_id"]?.intValue.map { Int($0) }) }
        }

        var md: [(String, GGUFValue)] = []
        if arch == "llama", let b = tc?["add_prefix_space"]?.boolValue { md.append(("tokenizer.ggml.add_space_prefix", .bool(b))) }
        md.append(("tokenizer.ggml.model", .string("gpt2")))
        md.append(("tokenizer.ggml.pre", .string(pre)))
        md.append(("tokenizer.ggml.tokens", .array(tokens)))
        md.append(("tokenizer.ggml.token_type", .array(types)))
        if !merges.isEmpty { md.append(("tokenizer.ggml.merges", .array(merges))) } else { warn("\(path): no merges; llama.cpp's tokenizer will not merge anything") }
        let idKey = ["bos": "bos_token_id", "eos": "eos_token_id", "unk": "unknown_token_id", "sep": "seperator_token_id",
                     "pad": "padding_token_id", "cls": "cls_token_id", "mask": "mask_token_id"]
        for (k, id) in ids { if let key = idKey[k] { md.append(("tokenizer.ggml.\(key)", .u32(UInt32(clamping: id)))) } }
        for (k, v) in addSpecial where ["bos", "eos", "sep"].contains(k) { md.append(("tokenizer.ggml.add_\(k)_token", .bool(v))) }
        switch chatTemplate {
        case .string(let t)?:
            md.append(("tokenizer.chat_template", .string(t)))
        case .array(let list)?:
            var names: [String] = [], def: String? = nil
            for e in list {
                guard let n = e["name"]?.stringValue, let t = e["template"]?.stringValue, !n.isEmpty else { continue }
                let clean = String(n.map { $0.isASCII && ($0.isLetter || $0.isNumber) ? $0 : "_" })
                if clean == "default" { def = t } else { names.append(clean); md.append(("tokenizer.chat_template.\(clean)", .string(t))) }
            }
            if !names.isEmpty { md.append(("tokenizer.chat_templates", .array(names.map { .string($0) }))) }
            if let d = def { md.append(("tokenizer.chat_template", .string(d))) }
        default: break
        }
        return (md, pre, source)
    }

    /// A JSON object file, nil when absent.
    static func readJSONObject(_ p: String) throws -> JSONObject? {
        guard FileManager.default.fileExists(atPath: p) else { return nil }
        guard let data = FileManager.default.contents(atPath: p) else { throw FileError.cannotRead(path: p, reason: "unreadable") }
        let v: JSONValue
        do { v = try JSONParser().parse(data) } catch { throw GGUFExportError.badTokenizer(path: p, reason: "invalid JSON: \(error)") }
        guard let o = v.objectValue else { throw GGUFExportError.badTokenizer(path: p, reason: "top level is not an object") }
        return o
    }

    /// A special-token entry of tokenizer_config.json: "text" or {"content": "text"}.
    static func tokenText(_ v: JSONValue) -> String? { v.stringValue ?? v["content"]?.stringValue }

    // MARK: adapter

    /// Writes `adapter` (trained on `m`) as a GGUF LoRA adapter at `output`: lora_a [r, in] and lora_b [out, r] per
    /// module, lora_b rows permuted as the base's q/k are. llama.cpp scales every module by adapter.lora.alpha / r;
    /// where the adapter's own scaling differs (rsLoRA, alpha_pattern) the ratio is folded into lora_b.
    public static func exportAdapter(_ m: ModelDir, adapter: Adapter, to output: String, options: GGUFExportOptions,
                                     warn: (String) -> Void = { _ in }) throws -> GGUFExportSummary {
        try checkOutput(output, replace: options.replace)
        let c = m.config
        let arch = try architecture(c, path: m.path)
        try adapter.validate(against: try m.linearModules())
        if adapter.config.useDora {
            throw GGUFExportError.doraAdapter(source: adapter.source)
        }
        let type = options.type ?? .f32
        let alpha = adapter.config.alpha
        let alpha32 = Float(alpha)
        var s = GGUFExportSummary()
        s.arch = arch; s.type = type; s.kind = "adapter"; s.alpha = Double(alpha32)
        var planned: [Planned] = []
        for name in adapter.moduleNames {
            guard let w = adapter.modules[name], let g = ggufName(module: name) else {
                throw AdapterError.badTensor(source: adapter.source, tensor: name, reason: "not a decoder Linear llama.cpp applies adapters to")
            }
            let want = Float(adapter.config.scaling(for: name))
            let llama: Float = alpha32 != 0 ? alpha32 / Float(w.r) : 1
            let factor = want / llama
            if factor != 1 { s.foldedScaling.append(name) }
            let heads = permuteHeads(module: name, arch: arch, config: c)
            for (suffix, shape) in [("lora_a", [w.r, w.inFeatures]), ("lora_b", [w.outFeatures, w.r])] {
                let tname = g + ".weight." + suffix
                let (t, fb) = storageType(name: tname, shape: shape, requested: type)
                if fb { s.fellBackToF16.append(tname) }
                planned.append(Planned(plan: GGUFTensorPlan(name: tname, shape: shape, type: t)) {
                    guard let w = adapter.modules[name] else { return [] }
                    if suffix == "lora_a" { return w.a }
                    var b = factor == 1 ? w.b : w.b.map { $0 * factor }
                    if heads > 0 { b = permuteRows(b, rows: w.outFeatures, cols: w.r, heads: heads) }
                    return b
                })
            }
        }
        if !s.foldedScaling.isEmpty {
            let why = adapter.config.useRslora ? "rsLoRA scales by alpha/√r" : "alpha_pattern / rank_pattern give them another alpha/r"
            warn("\(s.foldedScaling.count) module(s) (\(s.foldedScaling.prefix(3).joined(separator: ", "))\(s.foldedScaling.count > 3 ? ", ..." : "")) are scaled otherwise than adapter.lora.alpha / r (\(why)); the difference is folded into their lora_b, so llama.cpp applies the same ΔW")
        }
        var md = generalMetadata(arch: arch, kind: "adapter", name: options.name ?? URL(fileURLWithPath: adapter.source).standardized.lastPathComponent)
        md.append(("adapter.type", .string("lora")))
        md.append(("adapter.lora.alpha", .f32(alpha32)))
        md.append(("general.quantization_version", .u32(2)))
        try write(md, planned, to: output, summary: &s)
        return s
    }

    // MARK: writing

    static func checkOutput(_ output: String, replace: Bool) throws {
        var isDir: ObjCBool = false
        if FileManager.default.fileExists(atPath: output, isDirectory: &isDir) {
            if isDir.boolValue { throw FileError.cannotWrite(path: output, reason: "is a folder; give the .gguf file to write") }
            if !replace { throw FileError.cannotWrite(path: output, reason: "already exists; choose another path or pass --force") }
        }
    }

    static func write(_ md: [(String, GGUFValue)], _ planned: [Planned], to output: String, summary s: inout GGUFExportSummary) throws {
        let f = try AtomicFile(path: output)
        do {
            s.bytes = try GGUFWriter.write(metadata: md, plan: planned.map(\.plan), to: f) { i in
                GGUFCodec.encode(try planned[i].make(), as: planned[i].plan.type)
            }
            try f.commit()
        } catch {
            f.abandon()
            throw error
        }
        s.path = output
        s.tensors = planned.count
    }
}

/// SHA-256 (FIPS 180-4), for the pre-tokenizer hash.
enum SHA256 {
    static let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]

    static func hex(_ message: [UInt8]) -> String {
        var h: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
        var m = message
        let bits = UInt64(message.count) &* 8
        m.append(0x80)
        while m.count % 64 != 56 { m.append(0) }
        for i in (0..<8).reversed() { m.append(UInt8(truncatingIfNeeded: bits >> (8 * UInt64(i)))) }
        var w = [UInt32](repeating: 0, count: 64)
        func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }
        for chunk in stride(from: 0, to: m.count, by: 64) {
            for i in 0..<16 {
                w[i] = (0..<4).reduce(UInt32(0)) { ($0 << 8) | UInt32(m[chunk + 4 * i + $1]) }
            }
            for i in 16..<64 {
                let s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
                let s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
                w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
            }
            var (a, b, c, d, e, f, g, hh) = (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7])
            for i in 0..<64 {
                let t1 = hh &+ (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) &+ ((e & f) ^ (~e & g)) &+ k[i] &+ w[i]
                let t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) &+ ((a & b) ^ (a & c) ^ (b & c))
                hh = g; g = f; f = e; e = d &+ t1; d = c; c = b; b = a; a = t1 &+ t2
            }
            for (i, v) in [a, b, c, d, e, f, g, hh].enumerated() { h[i] = h[i] &+ v }
        }
        return h.map { String(format: "%08x", $0) }.joined()
    }
}
