// AdapterSummary: rank, alpha, scaling, targets and, per module, ‖A‖_F, ‖B‖_F and ‖ΔW‖_F = s·‖B·A‖_F without
// forming the [out, in] product: ‖BA‖_F² = trace((BᵀB)(AAᵀ)), two r×r Gram matrices accumulated in Double.
import Foundation
import LoRAFormats
import LoRAModel

public struct ModuleNorms: Sendable, Equatable {
    public var normA: Double
    public var normB: Double
    /// ‖B·A‖_F (unscaled).
    public var normBA: Double
    public var bIsZero: Bool
    public var nan: Int
    public var inf: Int
}

extension Inspector {
    /// Norms of one module's LoRA weights. With a NaN or infinity among A or B the norms are not finite.
    public static func norms(_ w: LoRAWeights) -> ModuleNorms {
        let r = w.r, inF = w.inFeatures, outF = w.outFeatures
        var nan = 0, inf = 0
        for x in w.a { if x.isNaN { nan += 1 } else if x.isInfinite { inf += 1 } }
        var bZero = true
        for x in w.b {
            if x.isNaN { nan += 1 } else if x.isInfinite { inf += 1 }
            if x != 0 { bZero = false }
        }
        // G = BᵀB (r×r, sum over the out rows), H = AAᵀ (r×r, sum over the in columns); both symmetric.
        var g = [Double](repeating: 0, count: r * r), h = [Double](repeating: 0, count: r * r)
        var sa = 0.0, sb = 0.0
        w.b.withUnsafeBufferPointer { b in
            for o in 0..<outF {
                let row = o * r
                for i in 0..<r {
                    let bi = Double(b[row + i])
                    sb += bi * bi
                    if bi == 0 { continue }
                    for j in i..<r { g[i * r + j] += bi * Double(b[row + j]) }
                }
            }
        }
        w.a.withUnsafeBufferPointer { a in
            for i in 0..<r {
                for j in i..<r {
                    var s = 0.0
                    let pi = i * inF, pj = j * inF
                    for k in 0..<inF { s += Double(a[pi + k]) * Double(a[pj + k]) }
                    h[i * r + j] = s
                }
                sa += h[i * r + i]
            }
        }
        // trace(G·H) = Σ_ij G_ij H_ji = Σ_ij G_ij H_ij (symmetric): the diagonal once, the upper triangle twice.
        var t = 0.0
        for i in 0..<r {
            t += g[i * r + i] * h[i * r + i]
            for j in (i + 1)..<r { t += 2 * g[i * r + j] * h[i * r + j] }
        }
        return ModuleNorms(normA: sa.squareRoot(), normB: sb.squareRoot(), normBA: t.isNaN ? .nan : max(0, t).squareRoot(),
                           bIsZero: bZero, nan: nan, inf: inf)
    }

    /// The adapter as lora-inspect prints it (also inside checkpoints and runs).
    static func describeAdapter(_ a: Adapter, path: String) throws -> JSONObject {
        let c = a.config
        var o = JSONObject()
        o["kind"] = .string("adapter")
        o["path"] = .string(path == "-" ? "<stdin>" : path)
        o["r"] = .int(Int64(c.r))
        o["lora_alpha"] = finite(c.alpha)
        o["scaling"] = finite(c.useRslora ? c.alpha / Double(c.r).squareRoot() : c.alpha / Double(c.r))
        o["use_rslora"] = .bool(c.useRslora)
        o["use_dora"] = .bool(c.useDora)
        o["lora_dropout"] = finite(c.dropout)
        switch c.targets {
        case .names(let n): o["target_modules"] = .array(Array(Set(n)).sorted().map { .string($0) })
        case .regex(let p): o["target_modules"] = .string(p)
        case .allLinear: o["target_modules"] = .string("all-linear")
        }
        if !c.rankPattern.isEmpty { o["rank_pattern"] = .object(JSONObject(c.rankPattern.map { ($0.pattern, .int(Int64($0.value))) })) }
        if !c.alphaPattern.isEmpty { o["alpha_pattern"] = .object(JSONObject(c.alphaPattern.map { ($0.pattern, finite($0.value)) })) }
        o["base_model_name_or_path"] = c.baseModelNameOrPath.map { .string($0) } ?? .null
        o["module_count"] = .int(Int64(a.moduleNames.count))
        o["trainable_parameters"] = .int(Int64(a.trainableParameters))
        var mods: [JSONValue] = []
        var allZero = true, nan = 0, inf = 0
        var sumSq = 0.0
        for n in a.moduleNames {
            let w = a.modules[n]!
            let s = c.scaling(for: n)
            let nm = norms(w)
            allZero = allZero && nm.bIsZero
            nan += nm.nan
            inf += nm.inf
            let dw = abs(s) * nm.normBA
            sumSq += dw * dw
            var m = JSONObject()
            m["name"] = .string(n)
            m["r"] = .int(Int64(w.r))
            m["in"] = .int(Int64(w.inFeatures))
            m["out"] = .int(Int64(w.outFeatures))
            m["scaling"] = finite(s)
            m["norm_a"] = finite(nm.normA)
            m["norm_b"] = finite(nm.normB)
            m["norm_delta_w"] = finite(dw)
            m["b_zero"] = .bool(nm.bIsZero)
            if let mag = w.magnitude {
                // DoRA: the magnitude vector's range and its NaN/Inf (counted with the others).
                m["magnitude_min"] = finite(Double(mag.min() ?? 0))
                m["magnitude_max"] = finite(Double(mag.max() ?? 0))
                let bad = mag.filter { !$0.isFinite }.count
                nan += mag.filter(\.isNaN).count
                inf += bad - mag.filter(\.isNaN).count
            }
            m["nan"] = .int(Int64(nm.nan))
            m["inf"] = .int(Int64(nm.inf))
            mods.append(.object(m))
        }
        o["untrained"] = .bool(allZero)
        o["nan"] = .int(Int64(nan))
        o["inf"] = .int(Int64(inf))
        // ‖ΔW‖_F over all modules together (root of the sum of squares).
        o["norm_delta_w_total"] = finite(sumSq.squareRoot())
        o["modules"] = .array(mods)
        return o
    }
}
