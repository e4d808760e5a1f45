// Adapter: LoRA weights for a set of Linear modules in PEFT's layout (docs/formats.md §3): lora_A [r, in] and
// lora_B [out, r] under `base_model.model.<module>.lora_{A,B}.weight`, saved as a PEFT folder or as one
// safetensors stream whose `__metadata__` carries the config (`adapter_config`), for pipes.
import Foundation

public struct LoRAWeights: Sendable {
    public var r: Int
    public var inFeatures: Int
    public var outFeatures: Int
    public var a: [Float]   // [r, in], row-major
    public var b: [Float]   // [out, r], row-major
    /// DoRA's magnitude vector [out] (`lora_magnitude_vector`); nil for plain LoRA.
    public var magnitude: [Float]?

    public init(r: Int, inFeatures: Int, outFeatures: Int, a: [Float], b: [Float], magnitude: [Float]? = nil) {
        self.r = r
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        self.a = a
        self.b = b
        self.magnitude = magnitude
    }
}

public final class Adapter: @unchecked Sendable {
    public static let keyPrefix = "base_model.model."
    public var config: LoRAConfig
    /// Module name → weights; `moduleNames` keeps model order.
    public var modules: [String: LoRAWeights]
    public var moduleNames: [String]
    /// Where it was read from, for messages.
    public let source: String

    public init(config: LoRAConfig, modules: [(String, LoRAWeights)], source: String) {
        self.config = config
        self.modules = Dictionary(uniqueKeysWithValues: modules)
        moduleNames = modules.map(\.0)
        self.source = source
    }

    public var trainableParameters: Int { modules.values.reduce(0) { $0 + $1.a.count + $1.b.count + ($1.magnitude?.count ?? 0) } }

    // MARK: creation

    /// Resolves which Linear modules the config targets (all-linear: every decoder Linear; the head is never one).
    public static func targetedModules(_ config: LoRAConfig, in linears: [LinearModule]) throws -> [LinearModule] {
        let chosen = linears.filter { config.targets($0.name) }
        if chosen.isEmpty {
            let desc: String
            switch config.targets {
            case .names(let n): desc = n.joined(separator: ",")
            case .regex(let p): desc = p
            case .allLinear: desc = "all-linear"
            }
            let available = Array(Set(linears.map(\.shortName))).sorted()
            throw AdapterError.noTargets(targets: desc, available: available)
        }
        return chosen
    }

    /// New adapter weights as PEFT initializes them: A ~ U(±1/√in) (kaiming_uniform, a=√5) or N(0, 1/r)
    /// ("gaussian": std 1/r), B = 0. Draws come from one generator seeded by `seed`, modules in model order.
    public static func initialize(config: LoRAConfig, model: ModelDir, initMode: LoRAInit, seed: UInt64) throws -> Adapter {
        let chosen = try targetedModules(config, in: try model.linearModules())
        var rng = Xoshiro256(seed: seed)
        var mods: [(String, LoRAWeights)] = []
        for m in chosen {
            let r = try checkedRank(config, m)
            var a = [Float](repeating: 0, count: r * m.inFeatures)
            switch initMode {
            case .kaiming:
                let bound = Float(1.0 / Double(m.inFeatures).squareRoot())
                for i in a.indices { a[i] = rng.uniform(-bound, bound) }
            case .gaussian:
                let std = Float(1.0 / Double(r))
                for i in a.indices { a[i] = rng.normal() * std }
            }
            let b = [Float](repeating: 0, count: m.outFeatures * r)
            // DoRA: m = ‖W + s·B·A‖ per output row = ‖W‖ with B = 0 (PEFT's DoraLinearLayer.update_layer, on the
            // dequantized weight of a 4-bit model).
            let mag = config.useDora ? try rowNorms(model: model, module: m) : nil
            mods.append((m.name, LoRAWeights(r: r, inFeatures: m.inFeatures, outFeatures: m.outFeatures, a: a, b: b, magnitude: mag)))
        }
        return Adapter(config: config, modules: mods, source: "<new adapter>")
    }

    /// The rank the config gives module m, which must be between 1 and min(in, out).
    public static func checkedRank(_ config: LoRAConfig, _ m: LinearModule) throws -> Int {
        let r = config.rank(for: m.name)
        let limit = min(m.inFeatures, m.outFeatures)
        guard r >= 1 && r <= limit else { throw AdapterError.badRank(module: m.name, rank: r, limit: limit) }
        return r
    }

    /// ‖W[o, :]‖₂ of one Linear's weight (dequantized when 4-bit), accumulated in double, rounded to float32.
    public static func rowNorms(model: ModelDir, module m: LinearModule) throws -> [Float] {
        let lin = try LinearWeight(name: m.name, store: model.weights, out: m.outFeatures, in: m.inFeatures, hasBias: false)
        var row = [Float](repeating: 0, count: m.inFeatures)
        return (0..<m.outFeatures).map { o in
            row.withUnsafeMutableBufferPointer { lin.expandRows(o..<(o + 1), into: $0.baseAddress!) }
            return Float(row.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot())
        }
    }

    // MARK: saving

    public func records() -> [TensorRecord] {
        var out: [TensorRecord] = []
        for n in moduleNames {
            let w = modules[n]!
            out.append(TensorRecord(name: Adapter.keyPrefix + n + ".lora_A.weight", floats: w.a, shape: [w.r, w.inFeatures]))
            out.append(TensorRecord(name: Adapter.keyPrefix + n + ".lora_B.weight", floats: w.b, shape: [w.outFeatures, w.r]))
            if let m = w.magnitude {
                out.append(TensorRecord(name: Adapter.keyPrefix + n + ".lora_magnitude_vector", floats: m, shape: [w.outFeatures]))
            }
        }
        return out
    }

    /// adapter_config.json text (all-linear is saved expanded to module names, as PEFT does).
    public func configJSON() -> String {
        config.json(resolvedTargets: moduleNames.map { String($0.split(separator: ".").last!) })
    }

    /// Writes `adapter_config.json` + `adapter_model.safetensors` into an existing folder, each atomically.
    public func save(into dir: String) throws {
        try SafetensorsWriter.write(records(), toFile: dir + "/adapter_model.safetensors")
        try AtomicFile.write(configJSON() + "\n", to: dir + "/adapter_config.json")
    }

    /// Writes a new adapter folder at `path` atomically (built under a temporary name, then renamed).
    public func save(to path: String, replace: Bool = false) throws {
        if FileManager.default.fileExists(atPath: path) && !replace {
            throw FileError.cannotWrite(path: path, reason: "already exists; choose another path or pass --force")
        }
        let d = try AtomicDirectory(path: path)
        try save(into: d.tempPath)
        try d.commit(replace: replace)
    }

    /// The single-stream form: one safetensors with the config JSON in `__metadata__["adapter_config"]`.
    public func write(stream sink: ByteSink) throws {
        try SafetensorsWriter.write(records(), metadata: ["format": "pt", "adapter_config": configJSON()], to: sink)
    }

    // MARK: loading

    /// Reads an adapter from a PEFT folder, a single-file adapter (config in metadata), or "-" (stdin).
    public static func load(_ source: String) throws -> Adapter {
        let fm = FileManager.default
        var isDir: ObjCBool = false
        if source == "-" {
            try StdinClaim.shared.claim("the adapter")
            return try fromSingleFile(try SafetensorsFile(file: try MappedFile(stdinNamed: "<stdin adapter>")))
        }
        guard fm.fileExists(atPath: source, isDirectory: &isDir) else {
            throw FileError.notFound(path: source, hint: "expected a PEFT adapter folder, a single-file adapter, or '-'")
        }
        if !isDir.boolValue {
            return try fromSingleFile(try SafetensorsFile(path: source))
        }
        let cfgPath = source + "/adapter_config.json"
        let stPath = source + "/adapter_model.safetensors"
        guard fm.fileExists(atPath: cfgPath) else {
            throw FileError.notFound(path: cfgPath, hint: "an adapter folder needs adapter_config.json (PEFT save_pretrained writes it)")
        }
        guard fm.fileExists(atPath: stPath) else {
            let hint = fm.fileExists(atPath: source + "/adapter_model.bin")
                ? "found adapter_model.bin, which is not read; save with safe_serialization=True"
                : "an adapter folder needs adapter_model.safetensors"
            throw FileError.notFound(path: stPath, hint: hint)
        }
        guard let data = fm.contents(atPath: cfgPath), let text = String(data: data, encoding: .utf8) else {
            throw FileError.cannotRead(path: cfgPath, reason: "unreadable or not UTF-8")
        }
        let cfg = try LoRAConfig.parse(text, source: cfgPath)
        return try fromTensors(try SafetensorsFile(path: stPath), config: cfg)
    }

    static func fromSingleFile(_ f: SafetensorsFile) throws -> Adapter {
        guard let text = f.metadata["adapter_config"] else {
            throw AdapterError.badConfig(source: f.path, reason: "a single-file adapter needs __metadata__[\"adapter_config\"] (write it with `lora-init -o -`), or pass the PEFT folder")
        }
        return try fromTensors(f, config: try LoRAConfig.parse(text, source: f.path + " (adapter_config metadata)"))
    }

    static func fromTensors(_ f: SafetensorsFile, config: LoRAConfig) throws -> Adapter {
        var a: [String: TensorView] = [:], b: [String: TensorView] = [:], mag: [String: TensorView] = [:]
        var order: [String] = []
        for key in f.names {
            var k = key
            if k.hasPrefix(keyPrefix) { k.removeFirst(keyPrefix.count) }
            k = k.replacingOccurrences(of: ".default.weight", with: ".weight")
            if k.hasSuffix(".lora_A.weight") {
                let m = String(k.dropLast(".lora_A.weight".count))
                a[m] = try f.tensor(key)
                if b[m] == nil { order.append(m) }
            } else if k.hasSuffix(".lora_B.weight") {
                let m = String(k.dropLast(".lora_B.weight".count))
                b[m] = try f.tensor(key)
                if a[m] == nil { order.append(m) }
            } else if k.hasSuffix(".lora_magnitude_vector") || k.hasSuffix(".lora_magnitude_vector.weight") {
                guard config.useDora else {
                    throw AdapterError.badTensor(source: f.path, tensor: key, reason: "a DoRA magnitude vector, but the config has use_dora false")
                }
                let m = String(k.dropLast(k.hasSuffix(".weight") ? ".lora_magnitude_vector.weight".count : ".lora_magnitude_vector".count))
                mag[m] = try f.tensor(key)
            } else {
                throw AdapterError.badTensor(source: f.path, tensor: key, reason: "not a LoRA A/B weight")
            }
        }
        var mods: [(String, LoRAWeights)] = []
        for m in order {
            guard let ta = a[m] else { throw AdapterError.badTensor(source: f.path, tensor: m, reason: "lora_B without lora_A") }
            guard let tb = b[m] else { throw AdapterError.badTensor(source: f.path, tensor: m, reason: "lora_A without lora_B") }
            guard ta.dtype.isFloatingPoint, tb.dtype.isFloatingPoint, ta.shape.count == 2, tb.shape.count == 2 else {
                throw AdapterError.badTensor(source: f.path, tensor: m, reason: "lora_A and lora_B must be 2-D floating-point tensors")
            }
            guard ta.shape[0] == tb.shape[1] else {
                throw AdapterError.badTensor(source: f.path, tensor: m, reason: "lora_A \(ta.shape) and lora_B \(tb.shape) disagree on the rank")
            }
            var magnitude: [Float]? = nil
            if config.useDora {
                guard let tm = mag[m] else {
                    throw AdapterError.badTensor(source: f.path, tensor: m + ".lora_magnitude_vector", reason: "missing: use_dora is true, so every module needs its magnitude vector")
                }
                guard tm.dtype.isFloatingPoint, tm.shape == [tb.shape[0]] else {
                    throw AdapterError.badTensor(source: f.path, tensor: m + ".lora_magnitude_vector", reason: "must be a floating-point vector of \(tb.shape[0]) (lora_B's rows), found \(tm.dtype.rawValue) \(tm.shape)")
                }
                magnitude = tm.floats()
                guard magnitude!.allSatisfy(\.isFinite) else {
                    throw AdapterError.badTensor(source: f.path, tensor: m + ".lora_magnitude_vector", reason: "has non-finite values")
                }
            }
            mods.append((m, LoRAWeights(r: ta.shape[0], inFeatures: ta.shape[1], outFeatures: tb.shape[0], a: ta.floats(), b: tb.floats(),
                                        magnitude: magnitude)))
        }
        if let stray = mag.keys.sorted().first(where: { a[$0] == nil }) {
            throw AdapterError.badTensor(source: f.path, tensor: stray + ".lora_magnitude_vector", reason: "a magnitude vector without lora_A / lora_B")
        }
        if mods.isEmpty { throw AdapterError.badTensor(source: f.path, tensor: "-", reason: "no LoRA weights in the file") }
        mods.sort { $0.0.compare($1.0, options: .numeric) == .orderedAscending }
        return Adapter(config: config, modules: mods, source: f.path)
    }

    /// Checks every module against the model's Linears and reports all mismatches at once.
    public func validate(against linears: [LinearModule]) throws {
        let byName = Dictionary(uniqueKeysWithValues: linears.map { ($0.name, $0) })
        var problems: [String] = []
        for n in moduleNames {
            let w = modules[n]!
            guard let l = byName[n] else { problems.append("\(n) is not a Linear module of the model"); continue }
            if w.inFeatures != l.inFeatures || w.outFeatures != l.outFeatures {
                problems.append("\(n): adapter is [\(w.outFeatures)×\(w.inFeatures)], model is [\(l.outFeatures)×\(l.inFeatures)]")
            }
            if w.r != config.rank(for: n) {
                problems.append("\(n): rank \(w.r) but the config says \(config.rank(for: n))")
            }
        }
        if !problems.isEmpty { throw AdapterError.mismatch(source: source, problems: problems) }
    }
}

extension AdapterError: ToolError {}
