// TransformerTraining: the training step of the LoRA model: a forward pass that keeps each layer's input,
// mid-residual, roped q/k/v, attention output and gate/up projection, then the backward pass through head,
// norms, MLP, attention and RoPE, producing gradients for LoRA A and B only (frozen weights of any dtype or NF4
// pass gradients to activations). Norm outputs, the SwiGLU product, LoRA intermediates and attention
// probabilities are recomputed in backward (elementwise or small) instead of stored; with checkpointing only
// each layer's input is kept and the layer is recomputed once before its backward. LoRA dropout masks are regenerated from (seed, step, micro-batch,
// module, element).

/// Gradients of every LoRA module's A and B (same shapes), accumulated across micro-batches.
public final class LoRAGradients: @unchecked Sendable {
    public var a: [String: [Float]]
    public var b: [String: [Float]]

    public init(for lora: [String: LoRALayer]) {
        a = lora.mapValues { [Float](repeating: 0, count: $0.a.count) }
        b = lora.mapValues { [Float](repeating: 0, count: $0.b.count) }
    }

    public func zero() {
        for k in a.keys { a[k]!.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }
        for k in b.keys { b[k]!.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }
    }

    /// √(Σ g²) over all A and B gradients (Double accumulation).
    public var globalNorm: Double {
        var s = 0.0
        for v in a.values { for x in v { s += Double(x) * Double(x) } }
        for v in b.values { for x in v { s += Double(x) * Double(x) } }
        return s.squareRoot()
    }
}

/// LoRA dropout: which inputs of A are kept, regenerated identically in forward and backward. The mask is
/// counter-based: element e of a module's input in one micro-batch is kept iff hash(key, e) < keep · 2²⁴,
/// where key = (seed, step, micro-batch, module). No generator state is carried from element to element, so
/// rows split across cores and lanes of a vector draw the same mask as a serial loop, and every micro-batch
/// of a step gets a mask of its own.
public struct LoRADropout: Sendable {
    public var rate: Float
    public var seed: UInt64
    public var step: UInt64
    public var microBatch: UInt64

    public init(rate: Float, seed: UInt64, step: UInt64, microBatch: UInt64 = 0) {
        self.rate = rate
        self.seed = seed
        self.step = step
        self.microBatch = microBatch
    }

    @inline(__always)
    static func splitmix(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// The 64-bit key of one module's mask in this (seed, step, micro-batch).
    func key(_ module: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325  // FNV-1a of the module name
        for c in module.utf8 { h = (h ^ UInt64(c)) &* 0x100_0000_01b3 }
        return LoRADropout.splitmix(seed ^ LoRADropout.splitmix(step ^ LoRADropout.splitmix(microBatch ^ LoRADropout.splitmix(h))))
    }

    /// Inputs are kept where the hash's top 24 bits fall below this (u < keep for u uniform on k/2²⁴).
    var threshold: UInt32 { UInt32((Double(1 - rate) * 16_777_216).rounded(.up)) }

    /// murmur3's 32-bit finalizer, a bijection with full avalanche.
    @inline(__always)
    static func fmix(_ x: SIMD8<UInt32>) -> SIMD8<UInt32> {
        var h = x
        h ^= h &>> 16
        h &*= SIMD8(repeating: 0x85EB_CA6B)
        h ^= h &>> 13
        h &*= SIMD8(repeating: 0xC2B2_AE35)
        h ^= h &>> 16
        return h
    }

    /// Whether element e (row-major index within the module's input) is kept, for 8 consecutive elements.
    @inline(__always)
    static func kept(_ e: UInt64, k0: UInt32, k1: UInt32, threshold: UInt32) -> SIMDMask<SIMD8<Int32>> {
        let lo = SIMD8<UInt32>(repeating: UInt32(truncatingIfNeeded: e)) &+ SIMD8(0, 1, 2, 3, 4, 5, 6, 7)
        let hi = UInt32(truncatingIfNeeded: e >> 32)
        let h = fmix(fmix((lo &* SIMD8(repeating: 0x9E37_79B1)) ^ SIMD8(repeating: k0)) ^ SIMD8(repeating: k1 ^ hi))
        return (h &>> 8) .< SIMD8(repeating: threshold)
    }

    /// dst (row stride ldd) = x ⊙ mask / (1 − rate), or dst += that with `accumulate`, for one module's input of
    /// rows × cols (row stride ld). Rows are split across cores.
    func apply(_ x: UnsafePointer<Float>, ld: Int, rows: Int, cols: Int, module: String,
               into dst: UnsafeMutablePointer<Float>, ldd: Int? = nil, accumulate: Bool = false) {
        let k = key(module)
        let k0 = UInt32(truncatingIfNeeded: k), k1 = UInt32(truncatingIfNeeded: k >> 32)
        let t = threshold, scale = 1 / (1 - rate)
        let ldd = ldd ?? cols
        Parallel.forRanges(rows, grain: max(1, 8192 / max(1, cols))) { r in
            for i in r {
                let src = x + i * ld, out = dst + i * ldd
                let e0 = UInt64(i) &* UInt64(cols)
                var j = 0
                while j + 8 <= cols {
                    let m = LoRADropout.kept(e0 &+ UInt64(j), k0: k0, k1: k1, threshold: t)
                    var v = SIMD8<Float>(repeating: 0).replacing(with: UnsafeRawPointer(src + j).loadUnaligned(as: SIMD8<Float>.self) * scale, where: m)
                    if accumulate { v += UnsafeRawPointer(out + j).loadUnaligned(as: SIMD8<Float>.self) }
                    UnsafeMutableRawPointer(out + j).storeBytes(of: v, as: SIMD8<Float>.self)
                    j += 8
                }
                if j < cols {
                    let m = LoRADropout.kept(e0 &+ UInt64(j), k0: k0, k1: k1, threshold: t)
                    for l in 0..<(cols - j) {
                        let v = m[l] ? src[j + l] * scale : 0
                        if accumulate { out[j + l] += v } else { out[j + l] = v }
                    }
                }
            }
        }
    }
}

extension Transformer {
    /// Buffers for one training step, allocated once from (config, rows, seq); the hot loop sees raw pointers.
    final class TrainWorkspace {
        let rows: Int, seq: Int, tCap: Int, dropCap: Int
        private var owned: [UnsafeMutablePointer<Float>] = []
        var xIn: [UnsafeMutablePointer<Float>] = [], xMid: [UnsafeMutablePointer<Float>] = [], qkv: [UnsafeMutablePointer<Float>] = []
        var att: [UnsafeMutablePointer<Float>] = [], rstd1: [UnsafeMutablePointer<Float>] = [], rstd2: [UnsafeMutablePointer<Float>] = []
        var gu: [UnsafeMutablePointer<Float>] = []
        var xFinal, rstdF, nF, dnF, n, h, dgu, dh, dx, dn, dqkv, datt, w, t, dt, xdrop, tmp, p, dp, head, gathered: UnsafeMutablePointer<Float>

        let checkpointed: Bool

        /// With `checkpointed`, only each layer's input is kept; the other per-layer activations share one set of
        /// buffers that the backward pass refills by recomputing the layer.
        init(config c: ModelConfig, rows: Int, seq: Int, maxR: Int, dropoutCols: Int, headChunk: Int, checkpointed: Bool = false) {
            self.rows = rows
            self.seq = seq
            self.checkpointed = checkpointed
            let d = c.hiddenSize, qd = c.numHeads * c.headDim, kvd = c.numKVHeads * c.headDim, i = c.intermediateSize
            var owned: [UnsafeMutablePointer<Float>] = []
            func z(_ n: Int) -> UnsafeMutablePointer<Float> {
                let p = UnsafeMutablePointer<Float>.allocate(capacity: max(1, n))
                p.initialize(repeating: 0, count: max(1, n))
                owned.append(p)
                return p
            }
            for l in 0..<c.numLayers {
                xIn.append(z(rows * d))
                if checkpointed && l > 0 {
                    xMid.append(xMid[0]); qkv.append(qkv[0]); att.append(att[0]); rstd1.append(rstd1[0]); rstd2.append(rstd2[0])
                    gu.append(gu[0])
                } else {
                    xMid.append(z(rows * d)); qkv.append(z(rows * (qd + 2 * kvd))); att.append(z(rows * qd))
                    rstd1.append(z(rows)); rstd2.append(z(rows)); gu.append(z(rows * 2 * i))
                }
            }
            xFinal = z(rows * d); rstdF = z(rows); nF = z(rows * d); dnF = z(rows * d)
            n = z(rows * d); h = z(rows * i); dgu = z(rows * 2 * i); dh = z(rows * i)
            dx = z(rows * d); dn = z(rows * d); dqkv = z(rows * (qd + 2 * kvd)); datt = z(rows * qd)
            w = z(max((qd + 2 * kvd) * d, qd * d, 2 * i * d, i * d))
            tCap = rows * maxR
            t = z(tCap); dt = z(tCap)
            dropCap = rows * dropoutCols
            xdrop = z(dropCap); tmp = z(rows * max(d, i, qd))
            p = z(Transformer.attentionScratch(seq: seq)); dp = z(Transformer.attentionScratch(seq: seq))
            head = z(headChunk * c.vocabSize); gathered = z(headChunk * d)
            self.owned = owned
        }

        deinit { for p in owned { p.deallocate() } }
    }

    public struct StepResult: Sendable {
        public var nllSum: Double
        public var tokens: Int
    }

    /// Forward and backward over one micro-batch. The loss is Σ NLL · lossScale (e.g. 1/scored tokens);
    /// gradients of that loss are added into `grads`.
    public func trainStep(_ batch: TokenBatch, lossScale: Float, grads: LoRAGradients, dropout: LoRADropout? = nil,
                          checkpointLayers: Bool = false) -> StepResult {
        let c = config
        let rows = batch.batch * batch.seq
        let maxR = lora.values.map(\.r).max() ?? 1
        let maxIn = max(c.hiddenSize, c.intermediateSize, c.numHeads * c.headDim)
        let drop = (dropout?.rate ?? 0) > 0 ? dropout : nil
        if trainWorkspace == nil || trainWorkspace!.rows != rows || trainWorkspace!.seq != batch.seq
            || trainWorkspace!.tCap < rows * maxR || (drop != nil && trainWorkspace!.dropCap < rows * maxIn)
            || trainWorkspace!.checkpointed != checkpointLayers {
            trainWorkspace = nil  // free the old buffers before allocating the new ones
            trainWorkspace = TrainWorkspace(config: c, rows: rows, seq: batch.seq, maxR: maxR,
                                            dropoutCols: drop != nil ? maxIn : 0, headChunk: min(rows, Transformer.headChunkRows),
                                            checkpointed: checkpointLayers)
        }
        if batch.seq > rope.positions { rope = RopeTables(config: c, positions: batch.seq) }
        let ws = trainWorkspace!
        let d = c.hiddenSize
        let positions = batch.positions
        let L = layers.count

        // Forward: layer l reads xIn[l] and writes its output into xIn[l+1] (the last into xFinal).
        embedding.withUnsafeBufferPointer { e in
            for r in 0..<rows {
                let tok = Int(batch.tokens[r])
                precondition(tok >= 0 && tok < c.vocabSize, "token id \(tok) out of range")
                (ws.xIn[0] + r * d).update(from: e.baseAddress! + tok * d, count: d)
            }
        }
        for l in 0..<L { trainLayerForward(l, ws, batch, positions, drop) }
        finalNorm.withUnsafeBufferPointer { w in
            Kernels.rmsNorm(ws.nF, ws.xFinal, w.baseAddress!, rows: rows, dim: d, eps: Float(c.rmsNormEps), rstd: ws.rstdF)
        }
        let result = headBackward(ws, batch, lossScale: lossScale)
        // d(final norm) → gradient of the last layer's output, kept in ws.dx.
        ws.dx.update(repeating: 0, count: rows * d)
        finalNorm.withUnsafeBufferPointer { w in
            Backward.rmsNorm(ws.dx, ws.dnF, ws.xFinal, w.baseAddress!, ws.rstdF, rows: rows, dim: d)
        }
        for l in stride(from: L - 1, through: 0, by: -1) {
            if checkpointLayers {
                // Refill the shared buffers with this layer's activations; its output (xIn[l+1] or xFinal) is
                // rewritten with the same values, which nothing reads any more.
                Profiler.shared.measure("recompute layer") { trainLayerForward(l, ws, batch, positions, drop) }
            }
            trainLayerBackward(l, ws, batch, positions, grads, drop)
        }
        return result
    }

    /// Head and cross-entropy over scored rows in chunks: loss, and dnF = ∂loss/∂(final norm output).
    func headBackward(_ ws: TrainWorkspace, _ batch: TokenBatch, lossScale: Float) -> StepResult {
        let c = config, d = c.hiddenSize, rows = batch.batch * batch.seq
        let targets = batch.shiftedTargets
        let scored = (0..<rows).filter { targets[$0] >= 0 }
        let chunk = min(rows, Transformer.headChunkRows)
        var nll = 0.0, count = 0
        let headW = headWeight ?? embedding
        var chunkTargets = [Int32](repeating: -100, count: chunk)
        let dn = ws.dnF, n = ws.nF, out = ws.head, g = ws.gathered
        dn.update(repeating: 0, count: rows * d)
        headW.withUnsafeBufferPointer { hw in
            var i0 = 0
            while i0 < scored.count {
                let m = min(chunk, scored.count - i0)
                for k in 0..<m {
                    (g + k * d).update(from: n + scored[i0 + k] * d, count: d)
                    chunkTargets[k] = targets[scored[i0 + k]]
                }
                Profiler.shared.measure("train head", flops: 4.0 * Double(m * c.vocabSize * d)) {
                    gemm(.none, .transpose, m: m, n: c.vocabSize, k: d, a: g, lda: d, b: hw.baseAddress!, ldb: d, c: out, ldc: c.vocabSize)
                    let (s, k) = chunkTargets.withUnsafeBufferPointer {
                        Backward.crossEntropy(out, rows: m, vocab: c.vocabSize, targets: $0.baseAddress!, scale: lossScale)
                    }
                    nll += s
                    count += k
                    // d(normed rows) = dlogits · W_head, scattered back to their rows.
                    gemm(.none, .none, m: m, n: d, k: c.vocabSize, a: out, lda: c.vocabSize, b: hw.baseAddress!, ldb: d, c: g, ldc: d)
                }
                for k in 0..<m { (dn + scored[i0 + k] * d).update(from: g + k * d, count: d) }
                i0 += m
            }
        }
        return StepResult(nllSum: nll, tokens: count)
    }

    // MARK: projections with LoRA (training)

    /// y (row stride ldy) = x·Wᵀ + bias + s·(drop(x)·Aᵀ)·Bᵀ for Linears sharing the input, stacked along the
    /// output (q/k/v, gate/up): one GEMM against their weights expanded one after another, then bias and LoRA
    /// on each one's column slice. Accumulates into y when asked.
    func trainProject(_ lins: [LinearWeight], x: UnsafePointer<Float>, ldx: Int, rows: Int, y: UnsafeMutablePointer<Float>, ldy: Int,
                      ws: TrainWorkspace, accumulate: Bool, drop: LoRADropout?) {
        let prof = Profiler.shared
        let inF = lins[0].inFeatures
        let outTotal = lins.reduce(0) { $0 + $1.outFeatures }
        prof.measure("expand weights") {
            var off = 0
            for lin in lins { lin.expand(into: ws.w + off * inF); off += lin.outFeatures }
        }
        prof.measure("gemm linear", flops: 2.0 * Double(rows * outTotal * inF)) {
            gemm(.none, .transpose, m: rows, n: outTotal, k: inF, a: x, lda: ldx,
                 b: ws.w, ldb: inF, beta: accumulate ? 1 : 0, c: y, ldc: ldy)
        }
        var col = 0
        for lin in lins {
            loraForward(lin, x: x, ldx: ldx, rows: rows, y: y + col, ldy: ldy, ws: ws, drop: drop)
            col += lin.outFeatures
        }
    }

    func loraForward(_ lin: LinearWeight, x: UnsafePointer<Float>, ldx: Int, rows: Int, y: UnsafeMutablePointer<Float>, ldy: Int,
                     ws: TrainWorkspace, drop: LoRADropout?) {
        let prof = Profiler.shared
        if let b = lin.bias { b.withUnsafeBufferPointer { Kernels.addBias(y, ld: ldy, rows: rows, cols: lin.outFeatures, $0.baseAddress!) } }
        guard let l = lora[lin.name] else { return }
        prof.measure("lora") {
            var xin = x, ldxin = ldx
            if let dr = drop {
                dr.apply(x, ld: ldx, rows: rows, cols: lin.inFeatures, module: lin.name, into: ws.xdrop)
                xin = UnsafePointer(ws.xdrop); ldxin = lin.inFeatures
            }
            l.a.withUnsafeBufferPointer { a in
                gemm(.none, .transpose, m: rows, n: l.r, k: lin.inFeatures, a: xin, lda: ldxin, b: a.baseAddress!, ldb: lin.inFeatures,
                     c: ws.t, ldc: l.r)
            }
            l.b.withUnsafeBufferPointer { b in
                gemm(.none, .transpose, m: rows, n: lin.outFeatures, k: l.r, alpha: l.scaling, a: ws.t, lda: l.r,
                     b: b.baseAddress!, ldb: l.r, beta: 1, c: y, ldc: ldy)
            }
        }
    }

    /// Given dy for y = trainProject(lins, x): dx += dy·W over the stacked weights (one GEMM), then each
    /// module's LoRA path, with dA and dB accumulated into grads.
    func trainProjectBackward(_ lins: [LinearWeight], x: UnsafePointer<Float>, ldx: Int, dy: UnsafePointer<Float>, ldy: Int,
                              dx: UnsafeMutablePointer<Float>, lddx: Int, rows: Int, ws: TrainWorkspace,
                              grads: LoRAGradients, drop: LoRADropout?) {
        let prof = Profiler.shared
        let inF = lins[0].inFeatures
        let outTotal = lins.reduce(0) { $0 + $1.outFeatures }
        prof.measure("expand weights") {
            var off = 0
            for lin in lins { lin.expand(into: ws.w + off * inF); off += lin.outFeatures }
        }
        prof.measure("gemm linear", flops: 2.0 * Double(rows * outTotal * inF)) {
            gemm(.none, .none, m: rows, n: inF, k: outTotal, a: dy, lda: ldy, b: ws.w, ldb: inF, beta: 1, c: dx, ldc: lddx)
        }
        var col = 0
        for lin in lins {
            loraBackward(lin, x: x, ldx: ldx, dy: dy + col, ldy: ldy, dx: dx, lddx: lddx, rows: rows, ws: ws, grads: grads, drop: drop)
            col += lin.outFeatures
        }
    }

    func loraBackward(_ lin: LinearWeight, x: UnsafePointer<Float>, ldx: Int, dy: UnsafePointer<Float>, ldy: Int,
                      dx: UnsafeMutablePointer<Float>, lddx: Int, rows: Int, ws: TrainWorkspace,
                      grads: LoRAGradients, drop: LoRADropout?) {
        let prof = Profiler.shared
        guard let l = lora[lin.name] else { return }
        prof.measure("lora") {
            let inF = lin.inFeatures, outF = lin.outFeatures, r = l.r
            let t = ws.t, u = ws.dt, xd = ws.xdrop, tmp = ws.tmp
            l.a.withUnsafeBufferPointer { a in
            l.b.withUnsafeBufferPointer { b in
            grads.a[lin.name]!.withUnsafeMutableBufferPointer { da in
            grads.b[lin.name]!.withUnsafeMutableBufferPointer { db in
                var xin = x, ldxin = ldx
                if let dr = drop {
                    dr.apply(x, ld: ldx, rows: rows, cols: inF, module: lin.name, into: xd)
                    xin = UnsafePointer(xd); ldxin = inF
                }
                // t = drop(x)·Aᵀ; dB += s·dyᵀ·t
                gemm(.none, .transpose, m: rows, n: r, k: inF, a: xin, lda: ldxin, b: a.baseAddress!, ldb: inF, c: t, ldc: r)
                gemm(.transpose, .none, m: outF, n: r, k: rows, alpha: l.scaling, a: dy, lda: ldy, b: t, ldb: r,
                     beta: 1, c: db.baseAddress!, ldc: r)
                // u = dy·B; dA += s·uᵀ·drop(x)
                gemm(.none, .none, m: rows, n: r, k: outF, a: dy, lda: ldy, b: b.baseAddress!, ldb: r, c: u, ldc: r)
                gemm(.transpose, .none, m: r, n: inF, k: rows, alpha: l.scaling, a: u, lda: r, b: xin, ldb: ldxin,
                     beta: 1, c: da.baseAddress!, ldc: inF)
                // dx += s·(u·A) ⊙ mask/keep
                if let dr = drop {
                    gemm(.none, .none, m: rows, n: inF, k: r, alpha: l.scaling, a: u, lda: r, b: a.baseAddress!, ldb: inF,
                         c: tmp, ldc: inF)
                    dr.apply(tmp, ld: inF, rows: rows, cols: inF, module: lin.name, into: dx, ldd: lddx, accumulate: true)
                } else {
                    gemm(.none, .none, m: rows, n: inF, k: r, alpha: l.scaling, a: u, lda: r, b: a.baseAddress!, ldb: inF,
                         beta: 1, c: dx, ldc: lddx)
                }
            }}}}
        }
    }

    // MARK: layers

    func trainLayerForward(_ l: Int, _ ws: TrainWorkspace, _ batch: TokenBatch, _ positions: [Int32], _ drop: LoRADropout?) {
        let L = layers[l], c = config
        let rows = batch.batch * batch.seq, T = batch.seq, d = c.hiddenSize, hd = c.headDim
        let qd = c.numHeads * hd, kvd = c.numKVHeads * hd, ldqkv = qd + 2 * kvd, inter = c.intermediateSize
        let eps = Float(c.rmsNormEps)
        let out: UnsafeMutablePointer<Float> = l + 1 < layers.count ? ws.xIn[l + 1] : ws.xFinal
        let x = ws.xIn[l]
        let xm = ws.xMid[l]
        let qkv = ws.qkv[l]
        let att = ws.att[l]
        let r1 = ws.rstd1[l]
        let r2 = ws.rstd2[l]
        let n = ws.n
        let gu = ws.gu[l]
        let h = ws.h
        L.inputNorm.withUnsafeBufferPointer { Kernels.rmsNorm(n, x, $0.baseAddress!, rows: rows, dim: d, eps: eps, rstd: r1) }
        trainProject([L.q, L.k, L.v], x: n, ldx: d, rows: rows, y: qkv, ldy: ldqkv, ws: ws, accumulate: false, drop: drop)
        applyRope(qkv, ld: ldqkv, rows: rows, qd: qd, positions: positions, backward: false)
        Profiler.shared.measure("attention") {
            attention(qkv: qkv, ld: ldqkv, out: att, batch: batch, T: T, hd: hd, qd: qd, kvd: kvd,
                      group: c.numHeads / c.numKVHeads, scale: 1 / Float(hd).squareRoot(), scores: ws.p)
        }
        xm.update(from: x, count: rows * d)
        trainProject([L.o], x: att, ldx: qd, rows: rows, y: xm, ldy: d, ws: ws, accumulate: true, drop: drop)
        L.postNorm.withUnsafeBufferPointer { Kernels.rmsNorm(n, xm, $0.baseAddress!, rows: rows, dim: d, eps: eps, rstd: r2) }
        trainProject([L.gate, L.up], x: n, ldx: d, rows: rows, y: gu, ldy: 2 * inter, ws: ws, accumulate: false, drop: drop)
        Kernels.siluMul(h, ldh: inter, gu, gu + inter, ld: 2 * inter, rows: rows, cols: inter)
        out.update(from: xm, count: rows * d)
        trainProject([L.down], x: h, ldx: inter, rows: rows, y: out, ldy: d, ws: ws, accumulate: true, drop: drop)
    }

    func applyRope(_ qkv: UnsafeMutablePointer<Float>, ld: Int, rows: Int, qd: Int, positions: [Int32], backward: Bool) {
        let c = config
        positions.withUnsafeBufferPointer { pos in
            rope.cos.withUnsafeBufferPointer { cs in
                rope.sin.withUnsafeBufferPointer { sn in
                    Kernels.rope(qkv, ld: ld, rows: rows, heads: c.numHeads, headDim: c.headDim, positions: pos.baseAddress!,
                                 cos: cs.baseAddress!, sin: sn.baseAddress!, inverse: backward)
                    Kernels.rope(qkv + qd, ld: ld, rows: rows, heads: c.numKVHeads, headDim: c.headDim, positions: pos.baseAddress!,
                                 cos: cs.baseAddress!, sin: sn.baseAddress!, inverse: backward)
                }
            }
        }
    }

    /// ws.dx holds ∂loss/∂(layer output) on entry and ∂loss/∂(layer input) on return.
    func trainLayerBackward(_ l: Int, _ ws: TrainWorkspace, _ batch: TokenBatch, _ positions: [Int32], _ grads: LoRAGradients, _ drop: LoRADropout?) {
        let L = layers[l], c = config
        let rows = batch.batch * batch.seq, T = batch.seq, d = c.hiddenSize, hd = c.headDim
        let qd = c.numHeads * hd, kvd = c.numKVHeads * hd, ldqkv = qd + 2 * kvd, inter = c.intermediateSize
        let eps = Float(c.rmsNormEps)
        let x = ws.xIn[l]
        let xm = ws.xMid[l]
        let qkv = ws.qkv[l]
        let att = ws.att[l]
        let r1 = ws.rstd1[l]
        let r2 = ws.rstd2[l]
        let n = ws.n
        let gu = ws.gu[l]
        let h = ws.h
        let dgu = ws.dgu
        let dh = ws.dh
        let dx = ws.dx
        let dn = ws.dn
        let dqkv = ws.dqkv
        let datt = ws.datt

        // MLP block: out = xm + down(silu(gate(n2))·up(n2)), n2 = norm(xm). gate/up is the forward's; n2 and the
        // SwiGLU product h (elementwise, shared buffers) are recomputed from xm and gate/up.
        L.postNorm.withUnsafeBufferPointer { Kernels.rmsNorm(n, xm, $0.baseAddress!, rows: rows, dim: d, eps: eps, rstd: r2) }
        Kernels.siluMul(h, ldh: inter, gu, gu + inter, ld: 2 * inter, rows: rows, cols: inter)
        dh.update(repeating: 0, count: rows * inter)
        trainProjectBackward([L.down], x: h, ldx: inter, dy: dx, ldy: d, dx: dh, lddx: inter, rows: rows, ws: ws, grads: grads, drop: drop)
        Backward.siluMul(dg: dgu, du: dgu + inter, ldd: 2 * inter, dh: dh, ldh: inter, g: gu, u: gu + inter, ld: 2 * inter, rows: rows, cols: inter)
        dn.update(repeating: 0, count: rows * d)
        trainProjectBackward([L.gate, L.up], x: n, ldx: d, dy: dgu, ldy: 2 * inter, dx: dn, lddx: d, rows: rows, ws: ws, grads: grads, drop: drop)
        // dx (= ∂/∂out) flows unchanged through the residual into ∂/∂xm; add the norm's path.
        L.postNorm.withUnsafeBufferPointer { Backward.rmsNorm(dx, dn, xm, $0.baseAddress!, r2, rows: rows, dim: d) }

        // Attention block: xm = x + o(att), att = attention(rope(q, k), v), q/k/v = proj(n1), n1 = norm(x).
        datt.update(repeating: 0, count: rows * qd)
        trainProjectBackward([L.o], x: att, ldx: qd, dy: dx, ldy: d, dx: datt, lddx: qd, rows: rows, ws: ws, grads: grads, drop: drop)
        dqkv.update(repeating: 0, count: rows * ldqkv)
        Profiler.shared.measure("attention backward") {
            attentionBackward(qkv: qkv, ld: ldqkv, datt: datt, dqkv: dqkv, batch: batch, T: T, hd: hd, qd: qd, kvd: kvd,
                              group: c.numHeads / c.numKVHeads, scale: 1 / Float(hd).squareRoot(), ws: ws)
        }
        applyRope(dqkv, ld: ldqkv, rows: rows, qd: qd, positions: positions, backward: true)
        L.inputNorm.withUnsafeBufferPointer { Kernels.rmsNorm(n, x, $0.baseAddress!, rows: rows, dim: d, eps: eps, rstd: r1) }
        dn.update(repeating: 0, count: rows * d)
        trainProjectBackward([L.q, L.k, L.v], x: n, ldx: d, dy: dqkv, ldy: ldqkv, dx: dn, lddx: d, rows: rows, ws: ws, grads: grads, drop: drop)
        L.inputNorm.withUnsafeBufferPointer { Backward.rmsNorm(dx, dn, x, $0.baseAddress!, r1, rows: rows, dim: d) }
    }

    /// Attention backward per (sequence, head), recomputing the probabilities: dV += Pᵀ·dO, dP = dO·Vᵀ,
    /// dS = softmax'(dP), dQ = s·dS·K, dK += s·dSᵀ·Q (GQA heads of a group add into the shared K and V).
    func attentionBackward(qkv: UnsafeMutablePointer<Float>, ld: Int, datt: UnsafeMutablePointer<Float>, dqkv: UnsafeMutablePointer<Float>,
                           batch: TokenBatch, T: Int, hd: Int, qd: Int, kvd: Int, group: Int, scale: Float, ws: TrainWorkspace) {
        let kvHeads = config.numKVHeads
        let slot = min(T, Transformer.attentionBlock) * T
        withSingleThreadedBLAS {
            // One job per (sequence, KV head): the group's query heads add into the same dK and dV, so one writer.
            Parallel.forJobs(batch.batch * kvHeads) { job, worker in
                let b = job / kvHeads, kvh = job % kvHeads
                let p = ws.p + worker * slot, dp = ws.dp + worker * slot
                let len = max(1, batch.lengths[b])
                for h in (kvh * group)..<((kvh + 1) * group) {
                    let base = b * T * ld
                    let q = qkv + base + h * hd, k = qkv + base + qd + kvh * hd, v = qkv + base + qd + kvd + kvh * hd
                    let dq = dqkv + base + h * hd, dk = dqkv + base + qd + kvh * hd, dv = dqkv + base + qd + kvd + kvh * hd
                    let dO = datt + b * T * qd + h * hd
                    // Query blocks multiply only the keys they can see (the causal triangle).
                    var q0 = 0
                    while q0 < T {
                        let q1 = min(T, q0 + Transformer.attentionBlock), m = q1 - q0
                        let keys = min(q1, len)
                        gemm(.none, .transpose, m: m, n: keys, k: hd, alpha: scale, a: q + q0 * ld, lda: ld, b: k, ldb: ld, c: p, ldc: keys)
                        for i in 0..<m { Kernels.softmaxRow(p + i * keys, count: keys, from: batch.firstKey(b, q0 + i), valid: min(q0 + i + 1, len)) }
                        gemm(.none, .transpose, m: m, n: keys, k: hd, a: dO + q0 * qd, lda: qd, b: v, ldb: ld, c: dp, ldc: keys)
                        gemm(.transpose, .none, m: keys, n: hd, k: m, a: p, lda: keys, b: dO + q0 * qd, ldb: qd, beta: 1, c: dv, ldc: ld)
                        for i in 0..<m { Backward.softmaxRow(dp + i * keys, p + i * keys, from: batch.firstKey(b, q0 + i), valid: min(q0 + i + 1, len), count: keys) }
                        gemm(.none, .none, m: m, n: hd, k: keys, alpha: scale, a: dp, lda: keys, b: k, ldb: ld, c: dq + q0 * ld, ldc: ld)
                        gemm(.transpose, .none, m: keys, n: hd, k: m, alpha: scale, a: dp, lda: keys, b: q + q0 * ld, ldb: ld, beta: 1, c: dk, ldc: ld)
                        q0 = q1
                    }
                }
            }
        }
    }
}
