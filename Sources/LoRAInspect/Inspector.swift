// Inspector: what lora-inspect prints. It recognizes a path (model dir, adapter, checkpoint, training run, bare
// safetensors file) and describes it as one JSON object: config essentials, tensors, adapter norms, training
// state. Read-only; every file goes through the same validating readers as the other tools.
import Foundation
import LoRAFormats
import LoRAQuant
import LoRAModel
import LoRATrain

public enum InspectError: Error, CustomStringConvertible, ToolError {
    case unrecognized(path: String)
    case noTensor(path: String, tensor: String, hint: String)
    case unsupportedDType(path: String, tensor: String, dtype: String)
    case incomparable(a: String, aKind: String, b: String, bKind: String)
    case ggufUnsupported(path: String, action: String)

    public var description: String {
        switch self {
        case .unrecognized(let p):
            return "\(p): not a model dir, adapter, checkpoint, run dir or safetensors file (looked for config.json, adapter_config.json, trainer_state.json, training_config.json, *.safetensors)"
        case .noTensor(let p, let t, let h):
            return "\(p): no tensor named '\(t)'; \(h)"
        case .unsupportedDType(let p, let t, let d):
            return "\(p): tensor '\(t)' has dtype \(d), which lora-inspect cannot read as numbers; only float, integer and bnb 4-bit tensors have statistics"
        case .ggufUnsupported(let p, let action):
            return "\(p): \(action) reads safetensors models and adapters, not GGUF files; pass the model dir or adapter the GGUF was exported from"
        case .incomparable(let a, let ak, let b, let bk):
            return "cannot diff \(a) (\(ak)) with \(b) (\(bk)); pass two models (model dirs or safetensors files) or two adapters"
        }
    }
}

public struct InspectOptions: Sendable {
    /// List every tensor (name, dtype, shape, bytes) instead of the summary.
    public var listTensors = false
    /// How many of the largest tensors the summary names.
    public var top = 5
    public init(listTensors: Bool = false, top: Int = 5) {
        self.listTensors = listTensors
        self.top = top
    }
}

/// What a path is.
public enum InspectTarget: Equatable, Sendable {
    case model(String)
    case adapter(String)          // PEFT folder, single-file adapter, or "-"
    case checkpoint(String)
    case run(String)
    case safetensors(String)      // a bare file (not an adapter)
    case gguf(String)             // a llama.cpp GGUF model or adapter

    public var kind: String {
        switch self {
        case .model: return "model"
        case .adapter: return "adapter"
        case .checkpoint: return "checkpoint"
        case .run: return "run"
        case .safetensors: return "safetensors"
        case .gguf: return "gguf"
        }
    }
}

public enum Inspector {
    // MARK: recognition

    /// Decides what `path` is, by the files it holds: trainer_state.json (checkpoint), training_config.json (run),
    /// adapter_config.json (adapter), config.json (model), or a single *.safetensors; a .safetensors file is an
    /// adapter when its metadata carries `adapter_config`. "-" is an adapter on stdin.
    public static func recognize(_ path: String) throws -> InspectTarget {
        if path == "-" { return .adapter(path) }
        let fm = FileManager.default
        var isDir: ObjCBool = false
        guard fm.fileExists(atPath: path, isDirectory: &isDir) else {
            throw FileError.notFound(path: path, hint: "pass a model dir, an adapter (folder, file or '-'), a checkpoint, a run dir or a .safetensors file")
        }
        if isDir.boolValue {
            func has(_ f: String) -> Bool { fm.fileExists(atPath: path + "/" + f) }
            if has("trainer_state.json") { return .checkpoint(path) }
            if has("training_config.json") { return .run(path) }
            if has("adapter_config.json") { return .adapter(path) }
            if has("config.json") { return .model(path) }
            let st = ((try? fm.contentsOfDirectory(atPath: path)) ?? []).filter { $0.hasSuffix(".safetensors") }
            if st.count == 1 { return try recognize(path + "/" + st[0]) }
            throw InspectError.unrecognized(path: path)
        }
        if path.hasSuffix(".gguf") || hasGGUFMagic(path) { return .gguf(path) }
        guard path.hasSuffix(".safetensors") else { throw InspectError.unrecognized(path: path) }
        let f = try SafetensorsFile(path: path)
        return f.metadata["adapter_config"] != nil ? .adapter(path) : .safetensors(path)
    }

    /// The JSON description of `path`.
    public static func inspect(_ path: String, options: InspectOptions = InspectOptions()) throws -> JSONValue {
        switch try recognize(path) {
        case .model(let p): return try describeModel(p, options)
        case .adapter(let p): return .object(try describeAdapter(try Adapter.load(p), path: p))
        case .checkpoint(let p): return try describeCheckpoint(p)
        case .run(let p): return try describeRun(p)
        case .safetensors(let p): return try describeSafetensors(p, options)
        case .gguf(let p): return try describeGGUF(p)
        }
    }

    // MARK: tensors

    struct TensorEntry {
        var name: String
        var dtype: DType
        var shape: [Int]
        var bytes: Int
        /// The logical shape of a bitsandbytes 4-bit weight (its packed tensor is U8).
        var fourBitShape: [Int]? = nil
    }

    static func entryJSON(_ e: TensorEntry) -> JSONValue {
        var o = JSONObject()
        o["name"] = .string(e.name)
        o["dtype"] = .string(e.dtype.rawValue)
        o["shape"] = ints(e.shape)
        o["bytes"] = .int(Int64(e.bytes))
        if let s = e.fourBitShape { o["packed_4bit_shape"] = ints(s) }
        return .object(o)
    }

    /// Count and bytes per dtype and the `top` largest tensors, or every tensor with `listTensors`.
    static func tensorsJSON(_ entries: [TensorEntry], _ options: InspectOptions) -> JSONValue {
        var o = JSONObject()
        o["count"] = .int(Int64(entries.count))
        o["bytes"] = .int(Int64(entries.reduce(0) { $0 + $1.bytes }))
        var byDType = JSONObject()
        for d in DType.allCases {
            let of = entries.filter { $0.dtype == d }
            if of.isEmpty { continue }
            byDType[d.rawValue] = .object(JSONObject([("count", .int(Int64(of.count))),
                                                      ("bytes", .int(Int64(of.reduce(0) { $0 + $1.bytes })))]))
        }
        o["by_dtype"] = .object(byDType)
        if options.listTensors {
            o["list"] = .array(entries.map(entryJSON))
        } else {
            let largest = entries.sorted { ($0.bytes, $1.name) > ($1.bytes, $0.name) }.prefix(max(0, options.top))
            o["largest"] = .array(largest.map(entryJSON))
        }
        return .object(o)
    }

    static func entries(of store: WeightStore) -> [TensorEntry] {
        store.names.compactMap { n in
            guard let i = store.info(n) else { return nil }
            var e = TensorEntry(name: n, dtype: i.dtype, shape: i.shape, bytes: (checkedNumel(i.shape) ?? 0) * i.dtype.size)
            if BnbWeight.stateTensorName(n, in: store) != nil, let q = try? BnbWeight(name: n, store: store) { e.fourBitShape = q.shape }
            return e
        }
    }

    static func entries(of f: SafetensorsFile) -> [TensorEntry] {
        f.names.compactMap { n in
            guard let i = f.info(n) else { return nil }
            return TensorEntry(name: n, dtype: i.dtype, shape: i.shape, bytes: (checkedNumel(i.shape) ?? 0) * i.dtype.size)
        }
    }

    // MARK: model

    static func describeModel(_ path: String, _ options: InspectOptions) throws -> JSONValue {
        let m = try ModelDir(path: path)
        let c = m.config
        var o = JSONObject()
        o["kind"] = .string("model")
        o["path"] = .string(path)
        var cfg = JSONObject()
        cfg["model_type"] = .string(c.modelType)
        cfg["hidden_size"] = .int(Int64(c.hiddenSize))
        cfg["num_hidden_layers"] = .int(Int64(c.numLayers))
        cfg["num_attention_heads"] = .int(Int64(c.numHeads))
        cfg["num_key_value_heads"] = .int(Int64(c.numKVHeads))
        cfg["head_dim"] = .int(Int64(c.headDim))
        cfg["intermediate_size"] = .int(Int64(c.intermediateSize))
        cfg["vocab_size"] = .int(Int64(c.vocabSize))
        cfg["max_position_embeddings"] = .int(Int64(c.maxPositionEmbeddings))
        cfg["tie_word_embeddings"] = .bool(c.tieWordEmbeddings)
        cfg["rms_norm_eps"] = finite(c.rmsNormEps)
        cfg["rope_theta"] = finite(c.ropeTheta)
        if let r = c.ropeScaling {
            cfg["rope_scaling"] = .object(JSONObject([("type", .string(r.type)), ("factor", finite(r.factor)),
                                                      ("low_freq_factor", finite(r.lowFreqFactor)),
                                                      ("high_freq_factor", finite(r.highFreqFactor)),
                                                      ("original_max_position_embeddings", .int(Int64(r.originalMaxPositionEmbeddings)))]))
        } else {
            cfg["rope_scaling"] = .null
        }
        cfg["torch_dtype"] = c.dtype.map { .string($0.torchName ?? $0.rawValue) } ?? .null
        o["config"] = .object(cfg)
        o["quantized"] = .bool(m.isQuantized)
        if m.isQuantized {
            var q = JSONObject()
            q["quantization_config"] = c.raw["quantization_config"] ?? .null
            let packed = m.weights.names.filter { $0.hasSuffix(".weight") && BnbWeight.stateTensorName($0, in: m.weights) != nil }
            q["quantized_tensors"] = .int(Int64(packed.count))
            if let first = packed.first, let w = try? BnbWeight(name: first, store: m.weights) {
                q["quant_type"] = .string(w.state.quantType.rawValue)
                q["blocksize"] = .int(Int64(w.state.blocksize))
                q["double_quant"] = .bool(w.state.isNested)
                q["original_dtype"] = .string(w.state.dtype)
            }
            o["quantization"] = .object(q)
        } else {
            o["quantization"] = .null
        }
        // Described even when incomplete: the check's verdict is part of the answer, not a refusal.
        do { try m.validate(); o["valid"] = .bool(true) } catch {
            o["valid"] = .bool(false)
            o["problem"] = .string("\(error)")
        }
        o["parameters"] = .int(Int64(m.parameterCount()))
        o["bytes"] = .int(Int64(m.weights.dataBytes))
        o["files"] = .array(m.weights.files.map { .string(URL(fileURLWithPath: $0.path).lastPathComponent) })
        o["tensors"] = tensorsJSON(entries(of: m.weights), options)
        return .object(o)
    }

    // MARK: safetensors

    static func describeSafetensors(_ path: String, _ options: InspectOptions) throws -> JSONValue {
        let f = try SafetensorsFile(path: path)
        var o = JSONObject()
        o["kind"] = .string("safetensors")
        o["path"] = .string(path)
        o["file_bytes"] = .int(Int64(f.file.bytes.count))
        o["metadata"] = .object(JSONObject(f.metadata.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) }))
        o["tensors"] = tensorsJSON(entries(of: f), options)
        return .object(o)
    }

    // MARK: checkpoints and runs

    static func readJSON(_ path: String) throws -> JSONValue {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw FileError.cannotRead(path: path, reason: "unreadable")
        }
        return try JSONParser().parse(data)
    }

    static func trainerState(_ dir: String) throws -> TrainerState {
        let statePath = dir + "/trainer_state.json"
        guard let data = FileManager.default.contents(atPath: statePath) else {
            throw CheckpointError.corrupt(path: dir, reason: "trainer_state.json is unreadable")
        }
        do { return try JSONDecoder().decode(TrainerState.self, from: data) } catch {
            throw CheckpointError.corrupt(path: dir, reason: "trainer_state.json is unreadable: \(error)")
        }
    }

    static func stateJSON(_ s: TrainerState, into o: inout JSONObject) {
        o["step"] = .int(Int64(s.step))
        o["epoch"] = .int(Int64(s.epoch))
        o["batch_in_epoch"] = .int(Int64(s.batchInEpoch))
        o["tokens_seen"] = .int(Int64(s.tokensSeen))
        o["last_loss"] = s.step == 0 ? .null : finite(s.lastLoss)
        o["elapsed_seconds"] = finite(s.elapsedSeconds)
        o["compute_dtype"] = .string(s.computeDType ?? "f32")
        o["fingerprint"] = .string(s.fingerprint)
        o["format"] = .string(s.format)
    }

    static func checkpointList(_ runDir: String) -> JSONValue {
        .array(Checkpoint.list(runDir).map { c in
            var o = JSONObject()
            o["step"] = .int(Int64(c.step))
            o["path"] = .string(c.path)
            if let s = try? trainerState(c.path) {
                o["epoch"] = .int(Int64(s.epoch))
                o["last_loss"] = s.step == 0 ? .null : finite(s.lastLoss)
            }
            return .object(o)
        })
    }

    static func describeCheckpoint(_ path: String) throws -> JSONValue {
        let s = try trainerState(path)
        var o = JSONObject()
        o["kind"] = .string("checkpoint")
        o["path"] = .string(path)
        stateJSON(s, into: &o)
        // OUT/checkpoints/step-N: the run folder, when it holds the training configuration.
        let runDir = URL(fileURLWithPath: path).standardizedFileURL.deletingLastPathComponent().deletingLastPathComponent().path
        let cfgPath = runDir + "/training_config.json"
        if FileManager.default.fileExists(atPath: cfgPath) {
            let cfg = try readJSON(cfgPath)
            o["lr"] = cfg["lr"] ?? .null
            o["run_dir"] = .string(runDir)
            o["training_config"] = cfg
            o["checkpoints"] = checkpointList(runDir)
        } else {
            o["lr"] = .null
            o["run_dir"] = .null
            o["training_config"] = .null
        }
        let opt = path + "/optimizer.safetensors"
        if FileManager.default.fileExists(atPath: opt) {
            let f = try SafetensorsFile(path: opt)
            o["optimizer"] = .object(JSONObject([("step", f.metadata["step"].flatMap { Int64($0) }.map { .int($0) } ?? .null),
                                                 ("tensors", .int(Int64(f.names.count)))]))
        } else {
            o["optimizer"] = .null
        }
        o["adapter"] = .object(try describeAdapter(try Adapter.load(path), path: path))
        return .object(o)
    }

    static func describeRun(_ path: String) throws -> JSONValue {
        let cfg = try readJSON(path + "/training_config.json")
        let fm = FileManager.default
        var o = JSONObject()
        o["kind"] = .string("run")
        o["path"] = .string(path)
        let cps = Checkpoint.list(path)
        let latest = try cps.last.map { try trainerState($0.path) }
        if let s = latest {
            stateJSON(s, into: &o)
            o["latest_checkpoint"] = .string(cps.last!.path)
        } else {
            for k in ["step", "epoch", "last_loss", "fingerprint", "latest_checkpoint"] { o[k] = .null }
        }
        o["lr"] = cfg["lr"] ?? .null
        o["training_config"] = cfg
        o["checkpoints"] = checkpointList(path)
        let final = fm.fileExists(atPath: path + "/adapter_config.json") && fm.fileExists(atPath: path + "/adapter_model.safetensors")
        o["finished"] = .bool(final)
        if final {
            o["adapter_source"] = .string(path)
            o["adapter"] = .object(try describeAdapter(try Adapter.load(path), path: path))
        } else if let c = cps.last {
            o["adapter_source"] = .string(c.path)
            o["adapter"] = .object(try describeAdapter(try Adapter.load(c.path), path: c.path))
        } else {
            o["adapter_source"] = .null
            o["adapter"] = .null
        }
        return .object(o)
    }

    // MARK: helpers

    static func ints(_ a: [Int]) -> JSONValue { .array(a.map { .int(Int64($0)) }) }

    /// A double, or null when it is NaN or infinite (the JSON we print never holds NaN).
    static func finite(_ x: Double) -> JSONValue { x.isFinite ? .double(x) : .null }
}
