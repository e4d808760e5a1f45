// Kernels: the elementwise and row-wise pieces of the Llama forward pass in fp32 (transformers
// modeling_llama.py semantics): RMSNorm, SiLU-gated product, rotary embedding, row softmax, log-softmax NLL.
// Each takes raw pointers and sizes; rows are split across cores.

public enum Kernels {
    /// Σ bf16(w[i])·x[i] in fp32 with 16 lanes, widening the bf16 values in registers.
    @inline(__always)
    public static func dotBF16(_ w: UnsafePointer<UInt16>, _ x: UnsafePointer<Float>, count n: Int) -> Float {
        var s0 = SIMD8<Float>(), s1 = SIMD8<Float>()
        var i = 0
        @inline(__always) func wide(_ p: UnsafePointer<UInt16>) -> SIMD8<Float> {
            let h = UnsafeRawPointer(p).loadUnaligned(as: SIMD8<UInt16>.self)
            return unsafeBitCast(SIMD8<UInt32>(truncatingIfNeeded: h) &<< 16, to: SIMD8<Float>.self)
        }
        while i + 16 <= n {
            s0 += wide(w + i) * load8(x + i)
            s1 += wide(w + i + 8) * load8(x + i + 8)
            i += 16
        }
        if i + 8 <= n { s0 += wide(w + i) * load8(x + i); i += 8 }
        var s = (s0 + s1).sum()
        while i < n { s += bf16ToFloat(w[i]) * x[i]; i += 1 }
        return s
    }

    /// Each lane rounded to the nearest bf16 value (ties to even), as fp32; NaN stays a quiet NaN with its sign
    /// and top payload bits, as torch's `.to(bfloat16)` (and `floatToBF16`).
    @inline(__always)
    public static func roundBF16(_ v: SIMD8<Float>) -> SIMD8<Float> {
        let u = unsafeBitCast(v, to: SIMD8<UInt32>.self)
        let mask = SIMD8<UInt32>(repeating: 0xFFFF_0000)
        let r = (u &+ ((u &>> 16) & 1) &+ 0x7FFF) & mask
        let q = (u | 0x0040_0000) & mask
        let nan = (u & 0x7FFF_FFFF) .> SIMD8(repeating: 0x7F80_0000)
        return unsafeBitCast(r.replacing(with: q, where: nan), to: SIMD8<Float>.self)
    }

    /// p[0..<n] rounded to bf16 in place.
    @inline(__always)
    public static func roundToBF16InPlace(_ p: UnsafeMutablePointer<Float>, count n: Int) {
        var i = 0
        while i + 8 <= n {
            UnsafeMutableRawPointer(p + i).storeBytes(of: roundBF16(load8(p + i)), as: SIMD8<Float>.self)
            i += 8
        }
        while i < n { p[i] = bf16ToFloat(floatToBF16(p[i])); i += 1 }
    }

    /// dst (row stride ldd) = bf16(src) for rows × cols of src (row stride ld); rows split across cores.
    public static func roundToBF16(_ src: UnsafePointer<Float>, ld: Int, rows: Int, cols: Int,
                                   into dst: UnsafeMutablePointer<Float>, ldd: Int) {
        Parallel.forRanges(rows, grain: max(1, 16384 / max(1, cols))) { r in
            for i in r {
                let s = src + i * ld, d = dst + i * ldd
                var j = 0
                while j + 8 <= cols {
                    UnsafeMutableRawPointer(d + j).storeBytes(of: roundBF16(load8(s + j)), as: SIMD8<Float>.self)
                    j += 8
                }
                while j < cols { d[j] = bf16ToFloat(floatToBF16(s[j])); j += 1 }
            }
        }
    }

    /// Σ a[i]·b[i] in fp32 with 16 lanes.
    @inline(__always)
    public static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count n: Int) -> Float {
        var s0 = SIMD8<Float>(), s1 = SIMD8<Float>()
        var i = 0
        while i + 16 <= n {
            s0 += load8(a + i) * load8(b + i)
            s1 += load8(a + i + 8) * load8(b + i + 8)
            i += 16
        }
        if i + 8 <= n { s0 += load8(a + i) * load8(b + i); i += 8 }
        var s = (s0 + s1).sum()
        while i < n { s += a[i] * b[i]; i += 1 }
        return s
    }

    /// Per-head RMSNorm in place (qwen3's q_norm / k_norm): for each of `rows` rows (stride ld) and each of its
    /// `heads` contiguous heads of headDim values, x ← x · rsqrt(mean(x²) + eps) · w. With `save`, the values
    /// before the norm are first copied there (row stride ldSave); with `rstd`, each (row, head)'s rsqrt is kept
    /// at rstd[row · ldRstd + head] for the backward pass.
    public static func headRMSNorm(_ x: UnsafeMutablePointer<Float>, ld: Int, rows: Int, heads: Int, headDim: Int,
                                   w: UnsafePointer<Float>, eps: Float, save: UnsafeMutablePointer<Float>? = nil, ldSave: Int = 0,
                                   rstd: UnsafeMutablePointer<Float>? = nil, ldRstd: Int = 0) {
        Parallel.forRanges(rows, grain: 16) { r in
            for i in r {
                let xi = x + i * ld
                save?.advanced(by: i * ldSave).update(from: xi, count: heads * headDim)
                for h in 0..<heads {
                    let xh = xi + h * headDim
                    var ss: Float = 0
                    for j in 0..<headDim { ss += xh[j] * xh[j] }
                    let inv = 1 / (ss / Float(headDim) + eps).squareRoot()
                    rstd?[i * ldRstd + h] = inv
                    for j in 0..<headDim { xh[j] = xh[j] * inv * w[j] }
                }
            }
        }
    }

    /// y[i,:] = x[i,:] * rsqrt(mean(x[i,:]²) + eps) * w. x, y are [rows, dim] (may alias). When `rstd` is given,
    /// rstd[i] = rsqrt(mean(x[i,:]²) + eps) is recorded for the backward pass.
    public static func rmsNorm(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                               rows: Int, dim: Int, eps: Float, rstd: UnsafeMutablePointer<Float>? = nil) {
        Parallel.forRanges(rows, grain: 16) { r in
            for i in r {
                let xi = x + i * dim, yi = y + i * dim
                var ss: Float = 0
                for j in 0..<dim { ss += xi[j] * xi[j] }
                let inv = 1 / (ss / Float(dim) + eps).squareRoot()
                rstd?[i] = inv
                for j in 0..<dim { yi[j] = xi[j] * inv * w[j] }
            }
        }
    }

    /// gelu_pytorch_tanh's constants: √(2/π) and κ.
    public static let geluBeta: Float = 0.797_884_560_802_865_4, geluKappa: Float = 0.044715

    /// h[i, j] = gelu_tanh(g[i, j]) * u[i, j] (gemma's GeGLU), g and u column slices of rows with stride `ld`;
    /// gelu_tanh(x) = 0.5·x·(1 + tanh(√(2/π)·(x + κ·x³))) as torch's gelu(approximate="tanh").
    public static func geluTanhMul(_ h: UnsafeMutablePointer<Float>, ldh: Int, _ g: UnsafePointer<Float>, _ u: UnsafePointer<Float>,
                                   ld: Int, rows: Int, cols: Int) {
        Parallel.forRanges(rows, grain: 8) { r in
            for i in r {
                let gi = g + i * ld, ui = u + i * ld, hi = h + i * ldh
                var j = 0
                while j + 8 <= cols {
                    let x = load8(gi + j)
                    let t = FastMath.tanh(geluBeta * (x + geluKappa * (x * x * x)))
                    UnsafeMutableRawPointer(hi + j).storeBytes(of: 0.5 * x * (1 + t) * load8(ui + j), as: SIMD8<Float>.self)
                    j += 8
                }
                while j < cols {
                    let x = gi[j]
                    hi[j] = 0.5 * x * (1 + FastMath.tanh(geluBeta * (x + geluKappa * (x * x * x)))) * ui[j]
                    j += 1
                }
            }
        }
    }

    /// In place over `rows` rows of `cols` values (row stride ld): x ← cap · tanh(x / cap) (gemma2's soft-capping).
    public static func softcap(_ x: UnsafeMutablePointer<Float>, ld: Int, rows: Int, cols: Int, cap: Float) {
        let inv = 1 / cap
        for i in 0..<rows {
            let xi = x + i * ld
            var j = 0
            while j + 8 <= cols {
                UnsafeMutableRawPointer(xi + j).storeBytes(of: cap * FastMath.tanh(load8(xi + j) * inv), as: SIMD8<Float>.self)
                j += 8
            }
            while j < cols { xi[j] = cap * FastMath.tanh(xi[j] * inv); j += 1 }
        }
    }

    /// y[i,:] += x[i,:] · rsqrt(mean(x[i,:]²) + eps) · w (a normed branch added to the residual: gemma's
    /// post-attention and post-feedforward norms); rstd as in rmsNorm.
    public static func rmsNormAdd(_ y: UnsafeMutablePointer<Float>, _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>,
                                  rows: Int, dim: Int, eps: Float, rstd: UnsafeMutablePointer<Float>? = nil) {
        Parallel.forRanges(rows, grain: 16) { r in
            for i in r {
                let xi = x + i * dim, yi = y + i * dim
                var ss: Float = 0
                for j in 0..<dim { ss += xi[j] * xi[j] }
                let inv = 1 / (ss / Float(dim) + eps).squareRoot()
                rstd?[i] = inv
                for j in 0..<dim { yi[j] += xi[j] * inv * w[j] }
            }
        }
    }

    /// h[i, j] = silu(g[i, j]) * u[i, j], where g and u are column slices of rows with stride `ld`.
    public static func siluMul(_ h: UnsafeMutablePointer<Float>, ldh: Int, _ g: UnsafePointer<Float>, _ u: UnsafePointer<Float>,
                               ld: Int, rows: Int, cols: Int) {
        Parallel.forRanges(rows, grain: 8) { r in
            for i in r {
                let gi = g + i * ld, ui = u + i * ld, hi = h + i * ldh
                var j = 0
                while j + 8 <= cols {
                    let v = load8(gi + j)
                    let y = v / (1 + FastMath.exp(-v)) * load8(ui + j)
                    UnsafeMutableRawPointer(hi + j).storeBytes(of: y, as: SIMD8<Float>.self)
                    j += 8
                }
                while j < cols {
                    let v = gi[j]
                    hi[j] = v / (1 + FastMath.exp(-v)) * ui[j]
                    j += 1
                }
            }
        }
    }

    /// Rotary embedding in place on `heads` heads of width `headDim` per row (row stride `ld`), HF half-split
    /// layout: dimension j pairs with j + headDim/2. `cos`/`sin` are [positions, headDim/2]; row i uses position pos[i].
    /// `inverse` rotates by −θ (the transpose, used for gradients).
    public static func rope(_ x: UnsafeMutablePointer<Float>, ld: Int, rows: Int, heads: Int, headDim: Int, rotaryDim: Int? = nil,
                            positions: UnsafePointer<Int32>, cos: UnsafePointer<Float>, sin: UnsafePointer<Float>,
                            inverse: Bool = false) {
        // Partial rotary (phi3's partial_rotary_factor): only each head's first rotaryDim values turn.
        let half = (rotaryDim ?? headDim) / 2
        let sign: Float = inverse ? -1 : 1
        Parallel.forRanges(rows, grain: 16) { r in
            for i in r {
                let c = cos + Int(positions[i]) * half, s = sin + Int(positions[i]) * half
                for h in 0..<heads {
                    let p = x + i * ld + h * headDim
                    for j in 0..<half {
                        let a = p[j], b = p[j + half]
                        let sn = sign * s[j]
                        p[j] = a * c[j] - b * sn
                        p[j + half] = b * c[j] + a * sn
                    }
                }
            }
        }
    }

    /// Adds a bias row to every row of a column slice.
    public static func addBias(_ y: UnsafeMutablePointer<Float>, ld: Int, rows: Int, cols: Int, _ b: UnsafePointer<Float>) {
        Parallel.forRanges(rows, grain: 64) { r in
            for i in r { let yi = y + i * ld; for j in 0..<cols { yi[j] += b[j] } }
        }
    }

    /// In-place softmax of a row over entries [from, valid); the others become 0.
    @inline(__always)
    public static func softmaxRow(_ s: UnsafeMutablePointer<Float>, count: Int, from: Int = 0, valid: Int) {
        let p = s + from, n = valid - from
        let m = FastMath.max(p, n)
        let sum = FastMath.expShiftSum(p, n, shift: m)
        let inv = 1 / sum
        for j in 0..<n { p[j] *= inv }
        for j in 0..<from { s[j] = 0 }
        for j in valid..<count { s[j] = 0 }
    }

    /// For each row: log-sum-exp of the logits and the NLL of `target` (skipped when target < 0).
    /// Returns (Σ NLL in Double, number of counted rows). The logits are overwritten (used as scratch).
    public static func crossEntropy(_ logits: UnsafeMutablePointer<Float>, rows: Int, vocab: Int, targets: UnsafePointer<Int32>) -> (Double, Int) {
        var total = 0.0, count = 0
        let lock = NSLockShim()
        Parallel.forRanges(rows, grain: 4) { r in
            var t = 0.0, c = 0
            for i in r {
                let y = Int(targets[i])
                if y < 0 { continue }
                let li = logits + i * vocab
                let m = FastMath.max(li, vocab)
                let target = li[y]
                let s = FastMath.expShiftSumPrecise(li, vocab, shift: m)
                t += Double(m) + Foundation_log(s) - Double(target)
                c += 1
            }
            lock.locked { total += t; count += c }
        }
        return (total, count)
    }
}
