// Backward: gradients of the row-wise kernels in Kernels.swift (llm.c style: gradients accumulate with +=, so
// zeroing is the caller's visible step). Each is checked against finite differences in Double (Tests).

public enum Backward {
    /// dx += ∂/∂x of y = x · rstd · w given dy:  dx_j += rstd·w_j·dy_j − x_j·rstd³/D · Σ_k w_k·dy_k·x_k.
    public static func rmsNorm(_ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
                               _ w: UnsafePointer<Float>, _ rstd: UnsafePointer<Float>, rows: Int, dim: Int) {
        Parallel.forRanges(rows, grain: 16) { r in
            for i in r {
                let xi = x + i * dim, dyi = dy + i * dim, dxi = dx + i * dim
                let s = rstd[i]
                var dot: Float = 0
                for j in 0..<dim { dot += w[j] * dyi[j] * xi[j] }
                let c = dot * s * s * s / Float(dim)
                for j in 0..<dim { dxi[j] += s * w[j] * dyi[j] - xi[j] * c }
            }
        }
    }

    /// Backward of Kernels.headRMSNorm, in place: dy (∂/∂ the normed heads, row stride ld) becomes ∂/∂ their
    /// input x (row stride ldx), with each (row, head)'s rstd at rstd[row · ldRstd + head]:
    /// dx_j = rstd·w_j·dy_j − x_j·rstd³/D · Σ_k w_k·dy_k·x_k.
    public static func headRMSNorm(_ dy: UnsafeMutablePointer<Float>, ld: Int, x: UnsafePointer<Float>, ldx: Int,
                                   w: UnsafePointer<Float>, rstd: UnsafePointer<Float>, ldRstd: Int,
                                   rows: Int, heads: Int, headDim: Int) {
        Parallel.forRanges(rows, grain: 16) { r in
            for i in r {
                for h in 0..<heads {
                    let d = dy + i * ld + h * headDim, xh = x + i * ldx + h * headDim
                    let s = rstd[i * ldRstd + h]
                    var dot: Float = 0
                    for j in 0..<headDim { dot += w[j] * d[j] * xh[j] }
                    let c = dot * s * s * s / Float(headDim)
                    for j in 0..<headDim { d[j] = s * w[j] * d[j] - xh[j] * c }
                }
            }
        }
    }

    /// In place over `count` values: d ← d · (1 − (capped / cap)²), the backward of capped = cap · tanh(raw / cap).
    public static func softcap(_ d: UnsafeMutablePointer<Float>, capped: UnsafePointer<Float>, count: Int, cap: Float) {
        let inv = 1 / cap
        for j in 0..<count { let t = capped[j] * inv; d[j] *= 1 - t * t }
    }

    /// Given dh for h = gelu_tanh(g)·u: writes dg and du (column slices of rows with stride ldd).
    /// d gelu_tanh/dx = 0.5·(1 + t) + 0.5·x·(1 − t²)·β·(1 + 3κx²), t = tanh(β·(x + κx³)).
    public static func geluTanhMul(dg: UnsafeMutablePointer<Float>, du: UnsafeMutablePointer<Float>, ldd: Int,
                                   dh: UnsafePointer<Float>, ldh: Int, g: UnsafePointer<Float>, u: UnsafePointer<Float>, ld: Int,
                                   rows: Int, cols: Int) {
        let beta = Kernels.geluBeta, kappa = Kernels.geluKappa
        Parallel.forRanges(rows, grain: 8) { r in
            for i in r {
                let gi = g + i * ld, ui = u + i * ld, dhi = dh + i * ldh, dgi = dg + i * ldd, dui = du + i * ldd
                var j = 0
                while j + 8 <= cols {
                    let x: SIMD8<Float> = load8(gi + j), d: SIMD8<Float> = load8(dhi + j)
                    let x2: SIMD8<Float> = x * x
                    let inner: SIMD8<Float> = beta * (x + kappa * (x2 * x))
                    let t: SIMD8<Float> = FastMath.tanh(inner)
                    let half: SIMD8<Float> = 0.5 * (1 + t)
                    let gelu: SIMD8<Float> = x * half
                    let slope: SIMD8<Float> = beta * (1 + (3 * kappa) * x2)
                    let dgelu: SIMD8<Float> = half + 0.5 * x * (1 - t * t) * slope
                    UnsafeMutableRawPointer(dgi + j).storeBytes(of: d * load8(ui + j) * dgelu, as: SIMD8<Float>.self)
                    UnsafeMutableRawPointer(dui + j).storeBytes(of: d * gelu, as: SIMD8<Float>.self)
                    j += 8
                }
                while j < cols {
                    let x = gi[j], d = dhi[j], x2 = x * x
                    let t = FastMath.tanh(beta * (x + kappa * (x2 * x)))
                    let half = 0.5 * (1 + t)
                    let slope = beta * (1 + (3 * kappa) * x2)
                    dgi[j] = d * ui[j] * (half + 0.5 * x * (1 - t * t) * slope)
                    dui[j] = d * x * half
                    j += 1
                }
            }
        }
    }

    /// Given dh for h = silu(g)·u: writes dg and du (column slices of rows with stride ld).
    public static func siluMul(dg: UnsafeMutablePointer<Float>, du: UnsafeMutablePointer<Float>, ldd: Int,
                               dh: UnsafePointer<Float>, ldh: Int, g: UnsafePointer<Float>, u: UnsafePointer<Float>, ld: Int,
                               rows: Int, cols: Int) {
        Parallel.forRanges(rows, grain: 8) { r in
            for i in r {
                let gi = g + i * ld, ui = u + i * ld, dhi = dh + i * ldh, dgi = dg + i * ldd, dui = du + i * ldd
                var j = 0
                while j + 8 <= cols {
                    let v = load8(gi + j)
                    let s = 1 / (1 + FastMath.exp(-v))
                    let d = load8(dhi + j)
                    UnsafeMutableRawPointer(dgi + j).storeBytes(of: d * load8(ui + j) * s * (1 + v * (1 - s)), as: SIMD8<Float>.self)
                    UnsafeMutableRawPointer(dui + j).storeBytes(of: d * v * s, as: SIMD8<Float>.self)
                    j += 8
                }
                while j < cols {
                    let v = gi[j]
                    let s = 1 / (1 + FastMath.exp(-v))
                    let d = dhi[j]
                    dgi[j] = d * ui[j] * s * (1 + v * (1 - s))
                    dui[j] = d * v * s
                    j += 1
                }
            }
        }
    }

    /// The transpose of Kernels.rope: rotates gradients by −θ in place.
    public static func rope(_ dx: UnsafeMutablePointer<Float>, ld: Int, rows: Int, heads: Int, headDim: Int,
                            positions: UnsafePointer<Int32>, cos: UnsafePointer<Float>, sin: UnsafePointer<Float>) {
        Kernels.rope(dx, ld: ld, rows: rows, heads: heads, headDim: headDim, positions: positions, cos: cos, sin: sin, inverse: true)
    }

    /// Softmax backward for one row over entries [from, valid): dS = P ⊙ (dP − Σ_k dP_k·P_k), in place in dP.
    @inline(__always)
    public static func softmaxRow(_ dp: UnsafeMutablePointer<Float>, _ p: UnsafePointer<Float>, from: Int = 0, valid: Int, count: Int) {
        var dot: Float = 0
        for j in from..<valid { dot += dp[j] * p[j] }
        for j in from..<valid { dp[j] = p[j] * (dp[j] - dot) }
        for j in 0..<from { dp[j] = 0 }
        for j in valid..<count { dp[j] = 0 }
    }

    /// Cross-entropy over rows of logits, in place: each row with target ≥ 0 becomes scale·(softmax − onehot),
    /// other rows 0. Returns Σ NLL (Double) and the number of scored rows.
    /// With `softcap`, the logits are already capped (c = cap·tanh(z/cap)) and the gradient is carried back to
    /// the raw z: ∂/∂z = ∂/∂c · (1 − (c/cap)²).
    public static func crossEntropy(_ logits: UnsafeMutablePointer<Float>, rows: Int, vocab: Int,
                                    targets: UnsafePointer<Int32>, scale: Float, softcap: Float? = nil) -> (Double, Int) {
        var total = 0.0, count = 0
        let lock = NSLockShim()
        Parallel.forRanges(rows, grain: 4) { r in
            var t = 0.0, c = 0
            var capped = softcap == nil ? [] : [Float](repeating: 0, count: vocab)
            for i in r {
                let li = logits + i * vocab
                let y = Int(targets[i])
                if y < 0 { for j in 0..<vocab { li[j] = 0 }; continue }
                if softcap != nil { capped.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: li, count: vocab) } }
                let m = FastMath.max(li, vocab)
                let target = li[y]
                let s = FastMath.expShiftSumPrecise(li, vocab, shift: m)
                t += Double(m) + Foundation_log(s) - Double(target)
                c += 1
                let k = Float(Double(scale) / s)
                for j in 0..<vocab { li[j] *= k }
                li[y] -= scale
                if let cap = softcap {
                    let inv = 1 / cap
                    for j in 0..<vocab { let q = capped[j] * inv; li[j] *= 1 - q * q }
                }
            }
            lock.locked { total += t; count += c }
        }
        return (total, count)
    }
}
