// LoRAConfig: PEFT's LoraConfig as stored in adapter_config.json (docs/formats.md §3): rank, alpha, dropout,
// target matching (list: exact name or "."-suffix; string: regex fullmatch), rank/alpha patterns, rslora.
import Foundation

public enum AdapterError: Error, CustomStringConvertible {
    case badConfig(source: String, reason: String)
    case unsupported(source: String, feature: String)
    case noTargets(targets: String, available: [String])
    case badRank(module: String, rank: Int, limit: Int)
    case mismatch(source: String, problems: [String])
    case badTensor(source: String, tensor: String, reason: String)

    public var description: String {
        switch self {
        case .badConfig(let s, let r): return "\(s): invalid adapter config: \(r)"
        case .unsupported(let s, let f): return "\(s): \(f) is not supported by lora-pipeline"
        case .noTargets(let t, let a):
            return "--targets \(t) matches no Linear module of the model; available: \(a.joined(separator: ", ")) (or all-linear)"
        case .badRank(let m, let r, let l): return "rank \(r) for \(m) must be between 1 and min(in, out) = \(l); lower --rank"
        case .mismatch(let s, let p):
            return "\(s) does not fit this model (\(p.count) problem\(p.count == 1 ? "" : "s")): \(p.joined(separator: "; ")); use the adapter made for this base model"
        case .badTensor(let s, let t, let r): return "\(s): tensor '\(t)': \(r)"
        }
    }
}

public enum TargetModules: Equatable, Sendable {
    case names([String])
    case regex(String)
    case allLinear
}

public enum LoRAInit: String, Sendable, CaseIterable {
    case kaiming, gaussian
}

public struct LoRAConfig: Sendable {
    public var r: Int
    public var alpha: Double
    public var dropout: Double
    public var targets: TargetModules
    public var useRslora: Bool
    /// DoRA (use_dora): each module also has a magnitude vector m [out]; y = m / ‖W + s·B·A‖_row ⊙ (W·x + s·B·A·x) + b.
    public var useDora = false
    public var initLoraWeights: JSONValue       // true (kaiming), "gaussian", false, ...
    public var rankPattern: [(pattern: String, value: Int)]
    public var alphaPattern: [(pattern: String, value: Double)]
    public var baseModelNameOrPath: String?
    /// Keys of the original file, kept so a config read from PEFT round-trips.
    public var raw: JSONObject

    public init(r: Int, alpha: Double, dropout: Double, targets: TargetModules, useRslora: Bool = false,
                initLoraWeights: JSONValue = .bool(true), baseModelNameOrPath: String? = nil) {
        self.r = r
        self.alpha = alpha
        self.dropout = dropout
        self.targets = targets
        self.useRslora = useRslora
        self.initLoraWeights = initLoraWeights
        rankPattern = []
        alphaPattern = []
        self.baseModelNameOrPath = baseModelNameOrPath
        raw = JSONObject()
    }

    // MARK: matching

    /// PEFT's check_target_module_exists for a module name.
    public func targets(_ module: String) -> Bool {
        switch targets {
        case .allLinear: return true
        case .names(let ns): return ns.contains { module == $0 || module.hasSuffix("." + $0) }
        case .regex(let p): return LoRAConfig.fullMatch(p, module)
        }
    }

    static func fullMatch(_ pattern: String, _ s: String) -> Bool {
        guard let re = try? NSRegularExpression(pattern: "^(?:" + pattern + ")$") else { return false }
        return re.firstMatch(in: s, range: NSRange(s.startIndex..., in: s)) != nil
    }

    /// The first pattern key matching `(.*\.)?(pattern)$` from the start of the module name.
    static func patternMatch<T>(_ patterns: [(pattern: String, value: T)], _ module: String) -> T? {
        for (p, v) in patterns where fullMatch("(.*\\.)?(" + p + ")", module) { return v }
        return nil
    }

    public func rank(for module: String) -> Int { LoRAConfig.patternMatch(rankPattern, module) ?? r }
    public func alpha(for module: String) -> Double { LoRAConfig.patternMatch(alphaPattern, module) ?? alpha }

    /// lora_alpha / r, or lora_alpha / sqrt(r) with rslora.
    public func scaling(for module: String) -> Double {
        let r = Double(rank(for: module)), a = alpha(for: module)
        return useRslora ? a / r.squareRoot() : a / r
    }

    // MARK: JSON

    /// adapter_config.json as PEFT writes it (indent 2, keys sorted). `resolvedTargets` replaces all-linear
    /// by the module names it expanded to, as PEFT saves it.
    public func json(resolvedTargets: [String]? = nil) -> String {
        var o = raw
        func set(_ k: String, _ v: JSONValue) { o[k] = v }
        let defaults: [(String, JSONValue)] = [
            ("alpha_pattern", .object(JSONObject())), ("bias", .string("none")), ("exclude_modules", .null),
            ("fan_in_fan_out", .bool(false)), ("inference_mode", .bool(true)), ("layers_pattern", .null),
            ("layers_to_transform", .null), ("loftq_config", .object(JSONObject())), ("lora_bias", .bool(false)),
            ("megatron_config", .null), ("megatron_core", .string("megatron.core")), ("modules_to_save", .null),
            ("rank_pattern", .object(JSONObject())), ("revision", .null), ("task_type", .string("CAUSAL_LM")),
            ("use_dora", .bool(false)), ("auto_mapping", .null),
        ]
        for (k, v) in defaults where o[k] == nil { set(k, v) }
        set("peft_type", .string("LORA"))
        set("r", .int(Int64(r)))
        set("lora_alpha", alpha.rounded() == alpha && abs(alpha) < 1e15 ? .int(Int64(alpha)) : .double(alpha))
        set("lora_dropout", .double(dropout))
        set("use_rslora", .bool(useRslora))
        set("use_dora", .bool(useDora))
        set("init_lora_weights", initLoraWeights)
        set("base_model_name_or_path", baseModelNameOrPath.map { .string($0) } ?? .null)
        switch targets {
        case .regex(let p): set("target_modules", .string(p))
        case .names(let ns): set("target_modules", .array(Array(Set(ns)).sorted().map { .string($0) }))
        case .allLinear:
            if let r = resolvedTargets { set("target_modules", .array(Array(Set(r)).sorted().map { .string($0) })) }
            else { set("target_modules", .string("all-linear")) }
        }
        if !rankPattern.isEmpty { set("rank_pattern", .object(JSONObject(rankPattern.map { ($0.pattern, .int(Int64($0.value))) }))) }
        if !alphaPattern.isEmpty { set("alpha_pattern", .object(JSONObject(alphaPattern.map { ($0.pattern, .double($0.value)) }))) }
        return JSONValue.object(o).serialized(.indented(2), sortKeys: true)
    }

    /// The largest rank accepted anywhere (adapter files, lora-init): far above any useful LoRA rank, low
    /// enough that r × features cannot overflow.
    public static let maxRank = 1 << 16

    public static func parse(_ text: String, source: String) throws -> LoRAConfig {
        let v: JSONValue
        do { v = try JSONParser().parse(text) } catch {
            throw AdapterError.badConfig(source: source, reason: "\(error)")
        }
        guard case .object(let o) = v else { throw AdapterError.badConfig(source: source, reason: "not a JSON object") }
        guard o["peft_type"]?.stringValue == "LORA" else {
            throw AdapterError.badConfig(source: source, reason: "peft_type is \(o["peft_type"]?.serialized() ?? "missing"), expected \"LORA\"")
        }
        func bad(_ r: String) -> AdapterError { .badConfig(source: source, reason: r) }
        guard let r = o["r"]?.intValue, r >= 1, r <= LoRAConfig.maxRank else {
            throw bad("r must be an integer in 1...\(LoRAConfig.maxRank)")
        }
        /// A number field: absent or null gives the default; anything else must be a finite number.
        func number(_ k: String, _ def: Double) throws -> Double {
            guard let v = o[k], !v.isNull else { return def }
            guard let d = v.doubleValue, d.isFinite else { throw bad("\(k) must be a finite number (found \(v.serialized()))") }
            return d
        }
        let alpha = try number("lora_alpha", 8)
        let dropout = try number("lora_dropout", 0)
        guard dropout >= 0 && dropout < 1 else { throw bad("lora_dropout \(dropout) must be in [0, 1)") }
        // Every use_* switch is a boolean; the ones we do not implement must be off.
        for (k, v) in o.entries where k.hasPrefix("use_") && !v.isNull {
            guard let on = v.boolValue else { throw bad("\(k) must be true or false (found \(v.serialized()))") }
            if on && k != "use_rslora" && k != "use_dora" {
                throw AdapterError.unsupported(source: source, feature: k == "use_dora" ? "DoRA (use_dora: true)" : "\(k): true")
            }
        }
        let targets: TargetModules
        switch o["target_modules"] {
        case .some(.string(let s)): targets = s == "all-linear" ? .allLinear : .regex(s)
        case .some(.array(let a)):
            let names = a.compactMap(\.stringValue)
            guard names.count == a.count, !names.isEmpty else {
                throw AdapterError.badConfig(source: source, reason: "target_modules must be a non-empty list of strings")
            }
            targets = .names(names)
        default: throw AdapterError.badConfig(source: source, reason: "target_modules is missing")
        }
        if let b = o["bias"]?.stringValue, b != "none" { throw AdapterError.unsupported(source: source, feature: "bias \"\(b)\"") }
        if o["fan_in_fan_out"]?.boolValue == true { throw AdapterError.unsupported(source: source, feature: "fan_in_fan_out") }
        if let l = o["layers_to_transform"], !l.isNull { throw AdapterError.unsupported(source: source, feature: "layers_to_transform") }
        if let m = o["modules_to_save"], !m.isNull, m.arrayValue?.isEmpty == false {
            throw AdapterError.unsupported(source: source, feature: "modules_to_save")
        }
        var c = LoRAConfig(r: Int(r), alpha: alpha, dropout: dropout, targets: targets,
                           useRslora: o["use_rslora"]?.boolValue ?? false,
                           initLoraWeights: o["init_lora_weights"] ?? .bool(true),
                           baseModelNameOrPath: o["base_model_name_or_path"]?.stringValue)
        c.useDora = o["use_dora"]?.boolValue ?? false
        if let rp = o["rank_pattern"]?.objectValue {
            for (k, v) in rp.entries {
                guard let i = v.intValue, i >= 1, i <= LoRAConfig.maxRank else { throw bad("rank_pattern[\(k)] must be an integer in 1...\(LoRAConfig.maxRank)") }
                c.rankPattern.append((k, Int(i)))
            }
        }
        if let ap = o["alpha_pattern"]?.objectValue {
            for (k, v) in ap.entries {
                guard let d = v.doubleValue, d.isFinite else { throw bad("alpha_pattern[\(k)] must be a finite number") }
                c.alphaPattern.append((k, d))
            }
        }
        c.raw = o
        return c
    }
}
