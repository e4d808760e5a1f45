// Optimizer: AdamW exactly as torch.optim.AdamW's single-tensor CPU path (decoupled weight decay, lerp first
// moment, bias corrections), clip_grad_norm_ by global norm, and the learning-rate schedules of transformers
// (get_constant/linear/cosine_schedule_with_warmup), all in float32 like torch.
import Foundation

public struct AdamWConfig: Sendable, Codable, Equatable {
    public var lr: Double = Defaults.lr
    public var beta1: Double = Defaults.adamBeta1
    public var beta2: Double = Defaults.adamBeta2
    public var eps: Double = Defaults.adamEps
    public var weightDecay: Double = Defaults.weightDecay
    public init() {}
}

public enum LRSchedule: String, Sendable, Codable, CaseIterable {
    case constant, linear, cosine

    /// The multiplier of the base lr for the update that follows `step` completed updates (LambdaLR semantics:
    /// the first update uses factor(0), so with warmup the first lr is 0, as transformers).
    public func factor(step: Int, warmup: Int, total: Int) -> Double {
        if step < warmup { return Double(step) / Double(max(1, warmup)) }
        switch self {
        case .constant: return 1
        case .linear: return max(0, Double(total - step) / Double(max(1, total - warmup)))
        case .cosine:
            let progress = Double(step - warmup) / Double(max(1, total - warmup))
            return max(0, 0.5 * (1 + Foundation.cos(Double.pi * progress)))
        }
    }
}

/// First and second moments of every LoRA parameter, and the step count.
public final class AdamWState: @unchecked Sendable {
    public var step = 0
    public var m: [String: [Float]] = [:]
    public var v: [String: [Float]] = [:]
    public init() {}
}

public enum AdamW {
    /// torch.nn.utils.clip_grad_norm_: total = ‖(‖g_i‖)_i‖₂ in float32; every gradient is multiplied by
    /// min(1, maxNorm / (total + 1e-6)). Returns the pre-clip total norm.
    @discardableResult
    public static func clipGradNorm(_ g: LoRAGradients, maxNorm: Double) -> Float {
        let keys = g.orderedKeys
        let total = l2(keys.map { l2(g[$0.module, $0.which]) })
        guard maxNorm > 0 else { return total }
        let coef = min(Float(1), Float(maxNorm) / (total + 1e-6))
        for k in g.a.keys { scale(&g.a[k]!, coef); scale(&g.b[k]!, coef) }
        for k in g.m.keys { scale(&g.m[k]!, coef) }
        return total
    }

    static func l2(_ x: [Float]) -> Float {
        var s: Double = 0
        for v in x { s += Double(v) * Double(v) }
        return Float(s.squareRoot())
    }

    static func scale(_ x: inout [Float], _ c: Float) {
        x.withUnsafeMutableBufferPointer { p in for i in p.indices { p[i] *= c } }
    }

    /// One update of every tensor `params[key]` by `grads[key]` at learning rate `lr`.
    public static func update(params: inout [Float], grad: [Float], m: inout [Float], v: inout [Float], step: Int,
                              lr: Double, config c: AdamWConfig) {
        // torch computes these scalars in Python floats (double), then applies them to float32 tensors.
        let b2 = Float(c.beta2), eps = Float(c.eps)
        let decay = Float(1 - lr * c.weightDecay)
        let stepSize = Float(lr / (1 - Foundation.pow(c.beta1, Double(step))))
        let bc2Sqrt = Float((1 - Foundation.pow(c.beta2, Double(step))).squareRoot())
        let w1 = Float(1 - c.beta1)
        let w2 = Float(1 - c.beta2)
        params.withUnsafeMutableBufferPointer { p in
            grad.withUnsafeBufferPointer { g in
                m.withUnsafeMutableBufferPointer { mm in
                    v.withUnsafeMutableBufferPointer { vv in
                        for i in p.indices {
                            if c.weightDecay != 0 { p[i] *= decay }
                            // torch lerp with weight < 0.5: self + weight·(end − self)
                            mm[i] = mm[i] + w1 * (g[i] - mm[i])
                            vv[i] = vv[i] * b2 + w2 * g[i] * g[i]  // mul_(β2).addcmul_(g, g, value=1−β2)
                            let denom = vv[i].squareRoot() / bc2Sqrt + eps
                            p[i] = p[i] + (-stepSize) * (mm[i] / denom)
                        }
                    }
                }
            }
        }
    }

    /// Applies one AdamW update to every LoRA module of the model. With LoRA+ (`loraplusLrRatio` ≠ 1) the B matrices
    /// are updated at lr × ratio, weight decay included, as the param groups of PEFT's create_loraplus_optimizer
    /// (lora_A at lr, lora_B at lr × ratio, both with the same decay) under torch's AdamW.
    public static func step(model: Transformer, grads: LoRAGradients, state: AdamWState, lr: Double, config: AdamWConfig,
                            loraplusLrRatio: Double = 1) {
        state.step += 1
        for name in model.lora.keys.sorted() {
            var l = model.lora[name]!
            // DoRA's magnitude vector is one more parameter; PEFT's create_loraplus_optimizer puts every 1-D parameter
            // in B's group, so under LoRA+ it moves at lr × ratio too.
            for which in l.magnitude == nil ? ["a", "b"] : ["a", "b", "magnitude"] {
                let key = name + "." + which
                let g = grads[name, which == "magnitude" ? "m" : which]
                var m = state.m[key] ?? [Float](repeating: 0, count: g.count)
                var v = state.v[key] ?? [Float](repeating: 0, count: g.count)
                switch which {
                case "a": update(params: &l.a, grad: g, m: &m, v: &v, step: state.step, lr: lr, config: config)
                case "b": update(params: &l.b, grad: g, m: &m, v: &v, step: state.step, lr: lr * loraplusLrRatio, config: config)
                default: update(params: &l.magnitude!, grad: g, m: &m, v: &v, step: state.step, lr: lr * loraplusLrRatio, config: config)
                }
                state.m[key] = m
                state.v[key] = v
            }
            model.setLoRA(name, l)
        }
    }
}
