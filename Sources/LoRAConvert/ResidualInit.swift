// ResidualInit: lora-init's initializations that move part of each targeted weight into the adapter, as PEFT's
// LoraLayer.pissa_init and olora_init do (peft/tuners/lora/layer.py): the adapter starts as the weight's
// principal part and the base becomes the residual W − scaling·B·A, so base + adapter is the original model.
//   pissa           W = U·S·Vᵀ (thin SVD in float64): A = √(S_r/scaling)·Vᵀ_r, B = U_r·√(S_r/scaling)
//   pissa_niter_N   the same from torch.svd_lowrank(W, r, niter=N)'s randomized SVD (our seeded test matrix)
//   olora           W = Q·R (Householder): A = R[:r, :], B = Q[:, :r]
// The residual model is written by ModelMerger with the new adapter at weight −1 (W − scaling·B·A in float32,
// rounded once to each tensor's dtype), every other tensor copied byte for byte; then, as PEFT does, the factors
// of a bf16/fp16 weight are rounded to that dtype (roundToBaseDType).
import Foundation

public enum ResidualInitMethod: Equatable, Sendable, CustomStringConvertible {
    case pissa
    case pissaNiter(Int)
    case olora
    /// LoftQ with N alternations of NF4 quantization and SVD (PEFT's loftq_config loftq_iter; "loftq" is 1).
    case loftq(iterations: Int)

    /// PEFT's init_lora_weights spelling: "pissa", "pissa_niter_N", "olora", "loftq" (and "loftq_iter_N" for
    /// loftq_config's loftq_iter).
    public init?(_ s: String) {
        switch s {
        case "pissa": self = .pissa
        case "olora": self = .olora
        case "loftq": self = .loftq(iterations: 1)
        default:
            for (prefix, make) in [("pissa_niter_", { (n: Int) in ResidualInitMethod.pissaNiter(n) }),
                                   ("loftq_iter_", { (n: Int) in ResidualInitMethod.loftq(iterations: n) })] where s.hasPrefix(prefix) {
                guard let n = Int(s.dropFirst(prefix.count)), n >= (prefix == "loftq_iter_" ? 1 : 0), n <= 1000 else { return nil }
                self = make(n)
                return
            }
            return nil
        }
    }

    public var description: String {
        switch self {
        case .pissa: return "pissa"
        case .pissaNiter(let n): return "pissa_niter_\(n)"
        case .olora: return "olora"
        case .loftq(let n): return n == 1 ? "loftq" : "loftq_iter_\(n)"
        }
    }
}

public enum ResidualInitError: Error, CustomStringConvertible, ToolError {
    case quantizedBase(path: String, method: String)
    case factorization(module: String, reason: String)
    case loftqWithoutResidual

    public var description: String {
        switch self {
        case .quantizedBase(let p, let m):
            return "\(p) is 4-bit: --init \(m) rewrites the base weights, which a 4-bit base cannot take exactly; run lora-init on the full-precision model and lora-quantize its residual model (PEFT's QLoRA route for PiSSA/OLoRA)"
        case .factorization(let m, let r): return "\(m): \(r)"
        case .loftqWithoutResidual: return "loftq's factors come with its quantized weights: initialize it with ResidualInit.run, which writes both"
        }
    }
}

public enum ResidualInit {
    /// The adapter `config` asks for, initialized by `method` from the model's weights (float64 factorizations).
    /// The adapter and its residual model at `residual`: PiSSA / OLoRA take scaling·B·A out of each weight; LoftQ
    /// replaces each weight by its NF4 quantization Q and starts the adapter at the best rank-r fit of W − Q.
    public static func run(config: LoRAConfig, model: ModelDir, method: ResidualInitMethod, seed: UInt64,
                           residual: String, replace: Bool) throws -> (Adapter, MergeSummary) {
        if case .loftq(let iterations) = method {
            return try loftq(config: config, model: model, iterations: iterations, residual: residual, replace: replace)
        }
        let a = try adapter(config: config, model: model, method: method, seed: seed)
        let s = try writeResidual(model: model, adapter: a, output: residual, replace: replace)
        try roundToBaseDType(a, model: model)
        return (a, s)
    }

    /// LoftQ as PEFT's loftq_init (peft/utils/loftq_utils.py) with 4 bits: Q = dequant(NF4(res)) (bitsandbytes'
    /// blockwise NF4, blocksize 64, no double quantization), res = W − Q, (B, A) = the rank-r SVD factors of res
    /// (B = U_r·√S_r, A = √S_r·Vᵀ_r, no division by scaling, as PEFT), then res = W − B·A for the next round.
    /// The residual model holds Q in the model's dtype: lora-quantize it (blocksize 64, no double quantization) for
    /// the 4-bit base, whose codes are Q's.
    static func loftq(config: LoRAConfig, model: ModelDir, iterations: Int, residual: String, replace: Bool) throws -> (Adapter, MergeSummary) {
        if model.isQuantized { throw ResidualInitError.quantizedBase(path: model.path, method: "loftq") }
        let chosen = try Adapter.targetedModules(config, in: try model.linearModules())
        final class Box { var mods: [String: LoRAWeights] = [:] }
        let box = Box()
        var rewrite: [String: (inout [Float]) throws -> Void] = [:]
        for m in chosen {
            let r = try Adapter.checkedRank(config, m)
            rewrite[m.name] = { w in
                let (q, a, b) = try loftqFactors(w, out: m.outFeatures, in: m.inFeatures, r: r, iterations: iterations, module: m.name)
                w = q
                box.mods[m.name] = LoRAWeights(r: r, inFeatures: m.inFeatures, outFeatures: m.outFeatures, a: a, b: b)
            }
        }
        let summary = try ModelMerger.rewritten(model: model, output: residual, replace: replace, rewrite: rewrite)
        var cfg = config
        cfg.initLoraWeights = .bool(true)
        let a = Adapter(config: cfg, modules: chosen.map { ($0.name, box.mods[$0.name]!) }, source: "<new loftq adapter>")
        try roundToBaseDType(a, model: model)
        return (a, summary)
    }

    /// One weight's LoftQ: (Q, A, B), all float32 as PEFT computes them (the SVD in float64).
    static func loftqFactors(_ w: [Float], out: Int, in inF: Int, r: Int, iterations: Int, module: String) throws -> (q: [Float], a: [Float], b: [Float]) {
        var res = w, q = w
        var a = [Float](repeating: 0, count: r * inF), b = [Float](repeating: 0, count: out * r)
        for i in 0..<iterations {
            q = res.withUnsafeBufferPointer {
                QuantizedWeight.quantize($0.baseAddress!, shape: [out, inF], dtype: .F32, type: .nf4, blocksize: 64, doubleQuant: false).dequantized()
            }
            for j in res.indices { res[j] = w[j] - q[j] }
            let f: (u: [Double], s: [Double], vt: [Double])
            do { f = try Linalg.svd(res.map(Double.init), rows: out, cols: inF) } catch let e as LinalgError {
                throw ResidualInitError.factorization(module: module, reason: "\(e)")
            }
            let k = min(out, inF)
            for j in 0..<r {
                let root = f.s[j].squareRoot()
                for c in 0..<inF { a[j * inF + c] = Float(root * f.vt[j * inF + c]) }
                for o in 0..<out { b[o * r + j] = Float(f.u[o * k + j] * root) }
            }
            if i + 1 == iterations { break }
            var ba = [Float](repeating: 0, count: out * inF)
            gemm(.none, .none, m: out, n: inF, k: r, a: b, lda: r, b: a, ldb: inF, c: &ba, ldc: inF)
            for j in res.indices { res[j] = w[j] - ba[j] }
        }
        return (q, a, b)
    }

    public static func adapter(config: LoRAConfig, model: ModelDir, method: ResidualInitMethod, seed: UInt64) throws -> Adapter {
        if case .loftq = method { throw ResidualInitError.loftqWithoutResidual }
        if model.isQuantized { throw ResidualInitError.quantizedBase(path: model.path, method: method.description) }
        let chosen = try Adapter.targetedModules(config, in: try model.linearModules())
        var rng = Xoshiro256(seed: seed)
        var mods: [(String, LoRAWeights)] = []
        for m in chosen {
            let r = try Adapter.checkedRank(config, m)
            let scaling = config.scaling(for: m.name)
            let lin = try LinearWeight(name: m.name, store: model.weights, out: m.outFeatures, in: m.inFeatures, hasBias: false)
            var w = [Float](repeating: 0, count: lin.numel)
            w.withUnsafeMutableBufferPointer { lin.expand(into: $0.baseAddress!) }
            let (a, b) = try factors(w.map(Double.init), out: m.outFeatures, in: m.inFeatures, r: r, scaling: scaling,
                                     method: method, rng: &rng, module: m.name)
            mods.append((m.name, LoRAWeights(r: r, inFeatures: m.inFeatures, outFeatures: m.outFeatures, a: a, b: b)))
        }
        // As PEFT's PiSSA example saves it: init_lora_weights true, so loading the adapter onto the residual model
        // (in PEFT or here) never runs the initialization a second time.
        var cfg = config
        cfg.initLoraWeights = .bool(true)
        return Adapter(config: cfg, modules: mods, source: "<new \(method) adapter>")
    }

    /// A [r, in] and B [out, r] of one weight W [out, in].
    static func factors(_ w: [Double], out: Int, in inF: Int, r: Int, scaling: Double, method: ResidualInitMethod,
                        rng: inout Xoshiro256, module: String) throws -> (a: [Float], b: [Float]) {
        var a = [Float](repeating: 0, count: r * inF), b = [Float](repeating: 0, count: out * r)
        do {
            switch method {
            case .loftq:
                throw ResidualInitError.loftqWithoutResidual
            case .pissa, .pissaNiter:
                let f: (u: [Double], s: [Double], vt: [Double])
                let k: Int
                if case .pissaNiter(let n) = method {
                    f = try Linalg.svdLowRank(w, rows: out, cols: inF, q: r, niter: n, rng: &rng)
                    k = r
                } else {
                    f = try Linalg.svd(w, rows: out, cols: inF)
                    k = min(out, inF)
                }
                for j in 0..<r {
                    let root = (f.s[j] / scaling).squareRoot()
                    for i in 0..<inF { a[j * inF + i] = Float(root * f.vt[j * inF + i]) }
                    for o in 0..<out { b[o * r + j] = Float(f.u[o * k + j] * root) }
                }
            case .olora:
                let k = min(out, inF)
                let (q, rr) = try Linalg.qr(w, rows: out, cols: inF)
                for j in 0..<r {
                    for i in 0..<inF { a[j * inF + i] = Float(rr[j * inF + i]) }
                    for o in 0..<out { b[o * r + j] = Float(q[o * k + j]) }
                }
            }
        } catch let e as LinalgError {
            throw ResidualInitError.factorization(module: module, reason: "\(e); check the model's weights with lora-inspect --tensor")
        }
        return (a, b)
    }

    /// Writes the residual model (base − scaling·B·A for every module of `adapter`) to `output`.
    public static func writeResidual(model: ModelDir, adapter: Adapter, output: String, replace: Bool) throws -> MergeSummary {
        var o = MergeOptions()
        o.replace = replace
        return try ModelMerger.run(model: model, baseFull: nil, adapters: [MergeInput(adapter: adapter, weight: -1)], output: output, options: o)
    }

    /// The factors as PEFT keeps them after its initialization: cast to the dtype of the weight they came from
    /// (LoraLayer._move_adapter_to_device_of_base_layer runs after pissa_init / olora_init), so a bf16 or fp16
    /// model's A and B are rounded to bf16 / fp16 (and saved as float32). The residual was taken with the
    /// unrounded factors, as in PEFT. A float32 model's factors are unchanged.
    public static func roundToBaseDType(_ adapter: Adapter, model: ModelDir) throws {
        for n in adapter.moduleNames {
            guard let info = model.weights.info(n + ".weight"), info.dtype == .BF16 || info.dtype == .F16 else { continue }
            var w = adapter.modules[n]!
            for i in w.a.indices { w.a[i] = info.dtype == .BF16 ? bf16ToFloat(floatToBF16(w.a[i])) : f16ToFloat(floatToF16(w.a[i])) }
            for i in w.b.indices { w.b[i] = info.dtype == .BF16 ? bf16ToFloat(floatToBF16(w.b[i])) : f16ToFloat(floatToF16(w.b[i])) }
            adapter.modules[n] = w
        }
    }
}
