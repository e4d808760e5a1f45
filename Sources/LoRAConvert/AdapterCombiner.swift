// AdapterCombiner: several LoRA adapters combined into one new adapter, as PEFT's
// LoraModel.add_weighted_adapter does (peft/tuners/lora/model.py, peft/utils/merge_utils.py): `linear`, `ties`,
// `dare_linear`, `dare_ties` and `magnitude_prune` combine the A matrices and the B matrices separately (each
// adapter's A weighted by ±√|weight·scaling|, its B by √|weight·scaling|, so they need one rank); `cat` stacks
// the scaled A's and the B's (rank = Σ ranks, exact: B·A = Σ weight·scaling·Bᵢ·Aᵢ); the `*_svd` types combine the
// full deltas weight·scaling·Bᵢ·Aᵢ and keep the top --svd-rank singular directions (B = U·S, A = Vᵀ). The new
// adapter has r = lora_alpha = the new rank (scaling 1) and otherwise the first adapter's config, as PEFT writes it.
// Random pruning (dare) draws from our seeded generator: torch's bernoulli stream cannot be reproduced.
import Foundation

public enum CombinationType: String, CaseIterable, Sendable {
    case linear, cat, svd, ties, ties_svd, dare_linear, dare_ties, dare_linear_svd, dare_ties_svd
    case magnitude_prune, magnitude_prune_svd

    /// Combines the A and B matrices separately, so every adapter must have the same rank.
    public var needsEqualRanks: Bool { [.linear, .ties, .dare_linear, .dare_ties, .magnitude_prune].contains(self) }
    public var isSVD: Bool { rawValue.hasSuffix("svd") }
    public var needsDensity: Bool { ![.linear, .cat, .svd].contains(self) }
    public var usesMajoritySign: Bool { [.ties, .ties_svd, .dare_ties, .dare_ties_svd].contains(self) }
    /// The task-arithmetic rule applied to the tensors (for the svd types, to the deltas).
    var rule: Rule {
        switch self {
        case .linear, .svd, .cat: return .linear
        case .ties, .ties_svd: return .ties
        case .dare_linear, .dare_linear_svd: return .dareLinear
        case .dare_ties, .dare_ties_svd: return .dareTies
        case .magnitude_prune, .magnitude_prune_svd: return .magnitudePrune
        }
    }
    enum Rule { case linear, ties, dareLinear, dareTies, magnitudePrune }
}

public enum MajoritySignMethod: String, CaseIterable, Sendable { case total, frequency }

public struct CombineOptions: Sendable {
    public var type: CombinationType
    /// Rank of the svd types' result (nil: the largest rank of the adapters).
    public var svdRank: Int?
    /// Fraction of values kept by the pruning types, in (0, 1] (1: no pruning).
    public var density: Double?
    public var majoritySign: MajoritySignMethod = .total
    public var seed: UInt64 = 0
    public init(type: CombinationType) { self.type = type }
}

public struct CombineResult {
    public var adapter: Adapter
    /// The type used: PEFT combines a single adapter with `linear` whatever was asked.
    public var type: CombinationType
    public var rank: Int
}

public enum CombineError: Error, CustomStringConvertible, ToolError {
    case unequalRanks(type: CombinationType, ranks: [(String, Int)])
    case mixedTargets(adapters: [String])
    case badOption(String)
    case svd(module: String, info: Int)

    public var description: String {
        switch self {
        case .unequalRanks(let t, let r):
            let list = r.map { "\($0.0) has r=\($0.1)" }.joined(separator: ", ")
            let ok = CombinationType.allCases.filter { !$0.needsEqualRanks }.map(\.rawValue).joined(separator: ", ")
            return "--combination \(t.rawValue) needs adapters of one rank, but \(list); use one of \(ok), which accept different ranks"
        case .mixedTargets(let a):
            return "the adapters \(a.joined(separator: ", ")) mix target_modules given as a list and as a regex string, which PEFT cannot combine; save them with the same kind of target_modules"
        case .badOption(let m): return m
        case .svd(let m, let i): return "the SVD of \(m)'s combined delta did not converge (LAPACK info \(i)); try another --combination"
        }
    }
}

public enum AdapterCombiner {
    /// PEFT's rank of an adapter: r, or the largest of r and its rank_pattern.
    static func configRank(_ c: LoRAConfig) -> Int { max(c.r, c.rankPattern.map(\.value).max() ?? c.r) }

    public static func combine(_ inputs: [MergeInput], options o: CombineOptions) throws -> CombineResult {
        precondition(!inputs.isEmpty)
        if let d = inputs.first(where: { $0.adapter.config.useDora }) {
            throw CombineError.badOption("\(d.adapter.source) is a DoRA adapter: PEFT's add_weighted_adapter does not combine DoRA magnitudes; merge it alone with lora-merge")
        }
        let type = inputs.count == 1 ? .linear : o.type
        if type.needsDensity && type != .linear {
            guard let d = o.density else {
                throw CombineError.badOption("--combination \(type.rawValue) needs --density D (the fraction of values kept, in (0, 1])")
            }
            guard d > 0 && d <= 1 && d.isFinite else {
                throw CombineError.badOption("--density \(d) must be in (0, 1] (1 keeps every value)")
            }
        }
        let ranks = inputs.map { ($0.adapter.source, configRank($0.adapter.config)) }
        let newRank: Int
        if type.needsEqualRanks {
            guard Set(ranks.map(\.1)).count == 1 else { throw CombineError.unequalRanks(type: type, ranks: ranks) }
            newRank = ranks[0].1
        } else if type == .cat {
            newRank = ranks.reduce(0) { $0 + $1.1 }
        } else {
            if let r = o.svdRank, r < 1 || r > LoRAConfig.maxRank {
                throw CombineError.badOption("--svd-rank \(r) must be between 1 and \(LoRAConfig.maxRank)")
            }
            newRank = o.svdRank ?? ranks.map(\.1).max()!
        }

        // The union of the modules, in model order.
        var names = Set<String>()
        for i in inputs { names.formUnion(i.adapter.moduleNames) }
        let modules = names.sorted { $0.compare($1, options: .numeric) == .orderedAscending }

        var rng = Xoshiro256(seed: o.seed)
        var out: [(String, LoRAWeights)] = []
        var rankPattern: [(pattern: String, value: Int)] = []
        for m in modules {
            let valid = inputs.filter { $0.adapter.modules[m] != nil }
            let first = valid[0].adapter.modules[m]!
            let inF = first.inFeatures, outF = first.outFeatures
            for v in valid {
                let w = v.adapter.modules[m]!
                guard w.inFeatures == inF && w.outFeatures == outF else {
                    throw CombineError.badOption("\(m) is [\(outF)×\(inF)] in \(valid[0].adapter.source) but [\(w.outFeatures)×\(w.inFeatures)] in \(v.adapter.source); combine adapters of one base model")
                }
            }
            switch type {
            case .cat:
                var a = [Float](repeating: 0, count: newRank * inF), b = [Float](repeating: 0, count: outF * newRank)
                var row = 0
                for v in valid {
                    let w = v.adapter.modules[m]!
                    let wt = Float(v.weight), s = Float(v.adapter.config.scaling(for: m))
                    for k in 0..<(w.r * inF) { a[row * inF + k] = w.a[k] * wt * s }
                    for o in 0..<outF { for k in 0..<w.r { b[o * newRank + row + k] = w.b[o * w.r + k] } }
                    row += w.r
                }
                out.append((m, LoRAWeights(r: newRank, inFeatures: inF, outFeatures: outF, a: a, b: b)))
            case _ where type.isSVD:
                guard newRank <= min(inF, outF) else {
                    throw CombineError.badOption("--svd-rank \(newRank) exceeds min(out, in) = \(min(inF, outF)) of \(m); give a smaller --svd-rank")
                }
                var deltas: [[Float]] = []
                for v in valid {
                    let w = v.adapter.modules[m]!
                    var d = [Float](repeating: 0, count: outF * inF)
                    w.b.withUnsafeBufferPointer { bp in
                        w.a.withUnsafeBufferPointer { ap in
                            d.withUnsafeMutableBufferPointer { dp in
                                gemm(.none, .none, m: outF, n: inF, k: w.r, alpha: 1, a: bp.baseAddress!, lda: w.r,
                                     b: ap.baseAddress!, ldb: inF, beta: 0, c: dp.baseAddress!, ldc: inF)
                            }
                        }
                    }
                    let s = Float(v.adapter.config.scaling(for: m))
                    for i in d.indices { d[i] *= s }
                    deltas.append(d)
                }
                let delta = try apply(type.rule, deltas, weights: valid.map { Float($0.weight) }, options: o, rng: &rng)
                let (a, b) = try truncatedSVD(delta, out: outF, in: inF, rank: newRank, module: m)
                out.append((m, LoRAWeights(r: newRank, inFeatures: inF, outFeatures: outF, a: a, b: b)))
            default:
                let r = first.r
                for v in valid where v.adapter.modules[m]!.r != r {
                    throw CombineError.unequalRanks(type: type, ranks: valid.map { ($0.adapter.source + " (\(m))", $0.adapter.modules[m]!.r) })
                }
                var wA: [Float] = [], wB: [Float] = []
                for v in valid {
                    let ws = v.weight * v.adapter.config.scaling(for: m)
                    let root = abs(ws).squareRoot()
                    wA.append(Float(ws >= 0 ? root : -root))
                    wB.append(Float(root))
                }
                let a = try apply(type.rule, valid.map { $0.adapter.modules[m]!.a }, weights: wA, options: o, rng: &rng)
                let b = try apply(type.rule, valid.map { $0.adapter.modules[m]!.b }, weights: wB, options: o, rng: &rng)
                out.append((m, LoRAWeights(r: r, inFeatures: inF, outFeatures: outF, a: a, b: b)))
                // PEFT would store a smaller tensor than its config's r here (a rank_pattern adapter); say so in
                // the config instead, with scaling 1 like the other modules.
                if r != newRank { rankPattern.append((m, r)) }
            }
        }

        var cfg = inputs[0].adapter.config
        cfg.r = newRank
        cfg.alpha = Double(newRank)
        cfg.rankPattern = rankPattern
        cfg.alphaPattern = rankPattern.map { ($0.pattern, Double($0.value)) }
        cfg.raw["rank_pattern"] = .object(JSONObject())
        cfg.raw["alpha_pattern"] = .object(JSONObject())
        cfg.targets = try unionTargets(inputs.map(\.adapter))
        let adapter = Adapter(config: cfg, modules: out, source: "<\(type.rawValue) combination>")
        return CombineResult(adapter: adapter, type: type, rank: newRank)
    }

    /// PEFT's new target_modules: the union of the name sets, or the regexes joined as `(r1)|(r2)`.
    static func unionTargets(_ adapters: [Adapter]) throws -> TargetModules {
        var names = Set<String>(), regexes: [String] = []
        for a in adapters {
            switch a.config.targets {
            case .names(let n): names.formUnion(n)
            case .allLinear: names.formUnion(a.moduleNames.map { String($0.split(separator: ".").last!) })
            case .regex(let p): regexes.append(p)
            }
        }
        if !regexes.isEmpty && !names.isEmpty { throw CombineError.mixedTargets(adapters: adapters.map(\.source)) }
        return regexes.isEmpty ? .names(names.sorted()) : .regex(regexes.map { "(\($0))" }.joined(separator: "|"))
    }

    // MARK: merge_utils

    /// One of merge_utils' rules over equally shaped tensors, in float32 as torch computes it.
    static func apply(_ rule: CombinationType.Rule, _ tensors: [[Float]], weights: [Float], options o: CombineOptions,
                      rng: inout Xoshiro256) throws -> [Float] {
        let density = o.density ?? 1
        var t = tensors
        switch rule {
        case .linear: break
        case .ties, .magnitudePrune:
            if density < 1 { for i in t.indices { magnitudePrune(&t[i], density: density) } }
        case .dareLinear, .dareTies:
            if density < 1 { for i in t.indices { randomPrune(&t[i], density: density, rng: &rng) } }
        }
        let n = t[0].count
        var out = [Float](repeating: 0, count: n)
        switch rule {
        case .linear, .dareLinear, .magnitudePrune:
            for j in 0..<n {
                var s: Float = 0
                for i in t.indices { s = i == 0 ? t[i][j] * weights[i] : s + t[i][j] * weights[i] }
                out[j] = s
            }
        case .ties, .dareTies:
            for j in 0..<n {
                // The majority sign of the (pruned, unweighted) values: their sum, or the sum of their signs.
                var mag: Float = 0
                for i in t.indices {
                    let x = t[i][j]
                    mag += o.majoritySign == .total ? x : (x > 0 ? 1 : x < 0 ? -1 : 0)
                }
                let majority: Float = mag >= 0 ? 1 : -1
                var s: Float = 0, count = 0
                for i in t.indices {
                    let x = t[i][j]
                    let sign: Float = x > 0 ? 1 : x < 0 ? -1 : 0
                    let keep: Float = sign == majority ? 1 : 0
                    if sign == majority { count += 1 }
                    s = i == 0 ? (x * weights[i]) * keep : s + (x * weights[i]) * keep
                }
                out[j] = s / Float(max(count, 1))
            }
        }
        return out
    }

    /// Keeps the int(density · n) values of largest magnitude (torch.topk), zeroes the rest.
    static func magnitudePrune(_ x: inout [Float], density: Double) {
        let k = Int((density * Double(x.count)).rounded(.down))
        let order = x.indices.sorted { (abs(x[$0]), $1) > (abs(x[$1]), $0) }
        var keep = [Bool](repeating: false, count: x.count)
        for i in order.prefix(k) { keep[i] = true }
        for i in x.indices { x[i] = x[i] * (keep[i] ? 1 : 0) }
    }

    /// DARE: keeps each value with probability `density` (our seeded draws) and rescales the kept by 1/density.
    static func randomPrune(_ x: inout [Float], density: Double, rng: inout Xoshiro256) {
        let d = Float(density)
        for i in x.indices {
            let u = Double(rng.next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
            x[i] = (x[i] * (u < density ? 1 : 0)) / d
        }
    }

    /// The best rank-`rank` factors of `delta` [out, in]: B = U[:, :rank]·diag(S[:rank]) [out, rank] and
    /// A = Vᵀ[:rank, :] [rank, in] (torch.linalg.svd as PEFT calls it; LAPACK dgesdd, in double).
    static func truncatedSVD(_ delta: [Float], out: Int, in inF: Int, rank: Int, module: String) throws -> (a: [Float], b: [Float]) {
        let k = min(inF, out)
        let f: (u: [Double], s: [Double], vt: [Double])
        do { f = try Linalg.svd(delta.map(Double.init), rows: out, cols: inF) } catch LinalgError.lapack(_, let info) {
            throw CombineError.svd(module: module, info: info)
        }
        var a = [Float](repeating: 0, count: rank * inF), b = [Float](repeating: 0, count: out * rank)
        for j in 0..<rank {
            for i in 0..<inF { a[j * inF + i] = Float(f.vt[j * inF + i]) }
            for o in 0..<out { b[o * rank + j] = Float(f.s[j] * f.u[o * k + j]) }
        }
        return (a, b)
    }
}
