// DecoderLayer: the one decoder layer of every pass. `layerForward` serves eval (in place, nothing kept),
// training (each layer's input, mid-residual, roped q/k/v, attention output and gate/up kept for backward) and
// decoding (attention over a key/value cache, through the `attend` closure); `layerBackward` is its backward
// pass. Norm outputs, the SwiGLU product, LoRA intermediates and attention probabilities are recomputed in
// backward (elementwise or small) instead of stored.

/// Where one layer reads and writes. Eval and decoding run in place (x, xm and out the same buffer); training
/// keeps xm and out separate and records the norms' rstd.
struct LayerBuffers {
    var x, xm, out, n, qkv, att, gu, h: UnsafeMutablePointer<Float>
    var rstd1, rstd2: UnsafeMutablePointer<Float>?
    /// Training with qwen3's q/k head norms: q|k before the norm (row stride qd + kvd) and each (row, head)'s
    /// rstd (row stride heads + kvHeads), for the backward pass.
    var qkPre: UnsafeMutablePointer<Float>? = nil
    var qkRstd: UnsafeMutablePointer<Float>? = nil
    /// Training with gemma's sandwich norms: the attention output o(att) and the MLP output down(h) before their
    /// norms, and those norms' rstd. Eval and decoding pass nil and use `n` (free at that point) instead.
    var ao: UnsafeMutablePointer<Float>? = nil
    var mo: UnsafeMutablePointer<Float>? = nil
    var rstd3: UnsafeMutablePointer<Float>? = nil
    var rstd4: UnsafeMutablePointer<Float>? = nil
    /// Training with a blocked MLP (BlockedMLP.swift): the block width and its LoRA scratch; gu and h are then one
    /// block's buffers in the arena, and nothing of the MLP is kept for backward.
    var mlpBlock: Int? = nil
    var mlpLoRA: MLPLoRAScratch? = nil
}

extension Transformer {
    /// One decoder layer over `rows` rows: out = xm + down(silu(gate(n2))·up(n2)), n2 = norm(xm),
    /// xm = x + o(attend(rope(q, k), v)), q|k|v = proj(norm(x)); gemma norms the o and down outputs before the
    /// residual adds and uses GeGLU. `attend(qkv, att)` turns the projected, rotated
    /// q|k|v rows (stride qd + 2·kvd) into attention outputs (stride qd).
    ///
    /// `savedOnly` (the recompute of a checkpointed layer before its backward) stops once everything
    /// layerBackward reads is in place: the layer's output is the next layer's saved input, and layerBackward
    /// recomputes the SwiGLU product itself, so the activation and the down projection (about 30% of a layer's
    /// weights) are skipped. Gemma's sandwich norms need the down output (mo) and go through to the end.
    func layerForward(_ l: Int, _ io: LayerBuffers, rows: Int, positions: [Int32], scratch: ProjectionScratch, drop: LoRADropout?,
                      savedOnly: Bool = false,
                      attend: (_ qkv: UnsafeMutablePointer<Float>, _ att: UnsafeMutablePointer<Float>) -> Void) {
        let L = layers[l], c = config
        let d = c.hiddenSize, qd = c.numHeads * c.headDim, kvd = c.numKVHeads * c.headDim, ldqkv = qd + 2 * kvd
        let inter = c.intermediateSize
        let eps = Float(c.rmsNormEps)
        L.inputNorm.withUnsafeBufferPointer { Kernels.rmsNorm(io.n, io.x, $0.baseAddress!, rows: rows, dim: d, eps: eps, rstd: io.rstd1) }
        project(L.qkv, x: io.n, ldx: d, rows: rows, y: io.qkv, ldy: ldqkv, scratch: scratch, accumulate: false, drop: drop)
        if let qn = L.qNorm, let kn = L.kNorm {
            let hs = c.numHeads + c.numKVHeads
            qn.withUnsafeBufferPointer { w in
                Kernels.headRMSNorm(io.qkv, ld: ldqkv, rows: rows, heads: c.numHeads, headDim: c.headDim, w: w.baseAddress!, eps: eps,
                                    save: io.qkPre, ldSave: qd + kvd, rstd: io.qkRstd, ldRstd: hs)
            }
            kn.withUnsafeBufferPointer { w in
                Kernels.headRMSNorm(io.qkv + qd, ld: ldqkv, rows: rows, heads: c.numKVHeads, headDim: c.headDim, w: w.baseAddress!, eps: eps,
                                    save: io.qkPre.map { $0 + qd }, ldSave: qd + kvd, rstd: io.qkRstd.map { $0 + c.numHeads }, ldRstd: hs)
            }
        }
        applyRope(io.qkv, ld: ldqkv, rows: rows, qd: qd, positions: positions, backward: false, local: L.localRope)
        Profiler.shared.measure("attention") { attend(io.qkv, io.att) }
        if io.xm != io.x { io.xm.update(from: io.x, count: rows * d) }
        if let an = L.attnOutNorm {
            // gemma: xm = x + norm(o(att)); the branch goes through ao (training) or n (free after the projection).
            let ao = io.ao ?? io.n
            project([L.o], x: io.att, ldx: qd, rows: rows, y: ao, ldy: d, scratch: scratch, accumulate: false, drop: drop)
            an.withUnsafeBufferPointer { Kernels.rmsNormAdd(io.xm, ao, $0.baseAddress!, rows: rows, dim: d, eps: eps, rstd: io.rstd3) }
        } else {
            project([L.o], x: io.att, ldx: qd, rows: rows, y: io.xm, ldy: d, scratch: scratch, accumulate: true, drop: drop)  // residual
        }
        if let block = io.mlpBlock, let lt = io.mlpLoRA {
            // Blocked MLP: layerBackward recomputes it block by block from xm, so the recompute stops here.
            if savedOnly && L.mlpOutNorm == nil { return }
            L.postNorm.withUnsafeBufferPointer { Kernels.rmsNorm(io.n, io.xm, $0.baseAddress!, rows: rows, dim: d, eps: eps, rstd: io.rstd2) }
            if io.out != io.xm { io.out.update(from: io.xm, count: rows * d) }
            if let mn = L.mlpOutNorm, let mo = io.mo {
                mlpForwardBlocked(L, n: io.n, rows: rows, block: block, gu: io.gu, h: io.h, y: mo, accumulate: false, scratch: scratch,
                                  lt: lt, drop: drop)
                mn.withUnsafeBufferPointer { Kernels.rmsNormAdd(io.out, mo, $0.baseAddress!, rows: rows, dim: d, eps: eps, rstd: io.rstd4) }
            } else {
                mlpForwardBlocked(L, n: io.n, rows: rows, block: block, gu: io.gu, h: io.h, y: io.out, accumulate: true, scratch: scratch,
                                  lt: lt, drop: drop)
            }
            return
        }
        L.postNorm.withUnsafeBufferPointer { Kernels.rmsNorm(io.n, io.xm, $0.baseAddress!, rows: rows, dim: d, eps: eps, rstd: io.rstd2) }
        project(L.gateUp, x: io.n, ldx: d, rows: rows, y: io.gu, ldy: 2 * inter, scratch: scratch, accumulate: false, drop: drop)
        if savedOnly && L.mlpOutNorm == nil { return }
        Profiler.shared.measure("silu") { activate(io.h, io.gu, rows: rows) }
        if io.out != io.xm { io.out.update(from: io.xm, count: rows * d) }
        if let mn = L.mlpOutNorm {
            let mo = io.mo ?? io.n
            project([L.down], x: io.h, ldx: inter, rows: rows, y: mo, ldy: d, scratch: scratch, accumulate: false, drop: drop)
            mn.withUnsafeBufferPointer { Kernels.rmsNormAdd(io.out, mo, $0.baseAddress!, rows: rows, dim: d, eps: eps, rstd: io.rstd4) }
        } else {
            project([L.down], x: io.h, ldx: inter, rows: rows, y: io.out, ldy: d, scratch: scratch, accumulate: true, drop: drop)  // residual
        }
    }

    /// h = act(gate)·up over gate|up rows (stride 2·inter): SwiGLU or gemma's GeGLU.
    func activate(_ h: UnsafeMutablePointer<Float>, _ gu: UnsafePointer<Float>, rows: Int) {
        let inter = config.intermediateSize
        switch config.activation {
        case .silu: Kernels.siluMul(h, ldh: inter, gu, gu + inter, ld: 2 * inter, rows: rows, cols: inter)
        case .geluTanh: Kernels.geluTanhMul(h, ldh: inter, gu, gu + inter, ld: 2 * inter, rows: rows, cols: inter)
        }
    }

    func applyRope(_ qkv: UnsafeMutablePointer<Float>, ld: Int, rows: Int, qd: Int, positions: [Int32], backward: Bool, local: Bool = false) {
        let c = config
        let rope = local ? (ropeLocal ?? self.rope) : self.rope
        positions.withUnsafeBufferPointer { pos in
            rope.cos.withUnsafeBufferPointer { cs in
                rope.sin.withUnsafeBufferPointer { sn in
                    Kernels.rope(qkv, ld: ld, rows: rows, heads: c.numHeads, headDim: c.headDim, rotaryDim: c.rotaryDim,
                                 positions: pos.baseAddress!, cos: cs.baseAddress!, sin: sn.baseAddress!, inverse: backward)
                    Kernels.rope(qkv + qd, ld: ld, rows: rows, heads: c.numKVHeads, headDim: c.headDim, rotaryDim: c.rotaryDim,
                                 positions: pos.baseAddress!, cos: cs.baseAddress!, sin: sn.baseAddress!, inverse: backward)
                }
            }
        }
    }

    /// ws.dx holds ∂loss/∂(layer output) on entry and ∂loss/∂(layer input) on return.
    func layerBackward(_ l: Int, _ ws: TrainWorkspace, _ batch: TokenBatch, _ positions: [Int32], _ grads: LoRAGradients, _ drop: LoRADropout?) {
        let L = layers[l], c = config
        let rows = batch.batch * batch.seq, d = c.hiddenSize, hd = c.headDim
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
        // ∂/∂(gate|up) overwrites gate|up: the activation's backward reads each g, u before writing its dg, du, and
        // nothing reads them after (the recompute, or the next forward, refills them).
        let dgu = gu
        let dh = ws.dh
        let dx = ws.dx
        let dn = ws.dn
        let dqkv = ws.dqkv
        let datt = ws.datt

        // MLP block: out = xm + down(silu(gate(n2))·up(n2)), n2 = norm(xm). gate/up is the forward's; n2 and the
        // SwiGLU product h (elementwise, shared buffers) are recomputed from xm and gate/up.
        L.postNorm.withUnsafeBufferPointer { Kernels.rmsNorm(n, xm, $0.baseAddress!, rows: rows, dim: d, eps: eps, rstd: r2) }
        // gemma: out = xm + norm(mo), so ∂/∂mo comes through the post-feedforward norm (into ws.dbr).
        var dyDown = UnsafePointer(dx)
        if let mn = L.mlpOutNorm, let mo = ws.mo[l], let r4 = ws.rstd4[l] {
            ws.dbr.update(repeating: 0, count: rows * d)
            mn.withUnsafeBufferPointer { Backward.rmsNorm(ws.dbr, dx, mo, $0.baseAddress!, r4, rows: rows, dim: d) }
            dyDown = UnsafePointer(ws.dbr)
        }
        if let block = ws.mlpBlock, let lt = ws.mlpLoRA {
            dn.update(repeating: 0, count: rows * d)
            mlpBackwardBlocked(L, n: n, dy: dyDown, dn: dn, rows: rows, block: block, gu: gu, h: h, scratch: ws.scratch, lt: lt,
                               grads: grads, drop: drop)
        } else {
            activate(h, gu, rows: rows)
            dh.update(repeating: 0, count: rows * inter)
            projectBackward([L.down], x: h, ldx: inter, dy: dyDown, ldy: d, dx: dh, lddx: inter, rows: rows, scratch: ws.scratch, grads: grads, drop: drop)
            switch c.activation {
            case .silu:
                Backward.siluMul(dg: dgu, du: dgu + inter, ldd: 2 * inter, dh: dh, ldh: inter, g: gu, u: gu + inter, ld: 2 * inter, rows: rows, cols: inter)
            case .geluTanh:
                Backward.geluTanhMul(dg: dgu, du: dgu + inter, ldd: 2 * inter, dh: dh, ldh: inter, g: gu, u: gu + inter, ld: 2 * inter, rows: rows, cols: inter)
            }
            dn.update(repeating: 0, count: rows * d)
            projectBackward(L.gateUp, x: n, ldx: d, dy: dgu, ldy: 2 * inter, dx: dn, lddx: d, rows: rows, scratch: ws.scratch, grads: grads, drop: drop)
        }
        // dx (= ∂/∂out) flows unchanged through the residual into ∂/∂xm; add the norm's path.
        L.postNorm.withUnsafeBufferPointer { Backward.rmsNorm(dx, dn, xm, $0.baseAddress!, r2, rows: rows, dim: d) }

        // Attention block: xm = x + o(att) (gemma: x + norm(o(att))), att = attention(rope(q, k), v),
        // q/k/v = proj(n1), n1 = norm(x).
        var dyO = UnsafePointer(dx)
        if let an = L.attnOutNorm, let ao = ws.ao[l], let r3 = ws.rstd3[l] {
            ws.dbr.update(repeating: 0, count: rows * d)
            an.withUnsafeBufferPointer { Backward.rmsNorm(ws.dbr, dx, ao, $0.baseAddress!, r3, rows: rows, dim: d) }
            dyO = UnsafePointer(ws.dbr)
        }
        datt.update(repeating: 0, count: rows * qd)
        projectBackward([L.o], x: att, ldx: qd, dy: dyO, ldy: d, dx: datt, lddx: qd, rows: rows, scratch: ws.scratch, grads: grads, drop: drop)
        dqkv.update(repeating: 0, count: rows * ldqkv)
        Profiler.shared.measure("attention backward") {
            attentionBackward(qkv: qkv, datt: datt, dqkv: dqkv, batch: batch, ws: ws, window: L.window)
        }
        applyRope(dqkv, ld: ldqkv, rows: rows, qd: qd, positions: positions, backward: true, local: L.localRope)
        if let qn = L.qNorm, let kn = L.kNorm, let pre = ws.qkPre[l], let rs = ws.qkRstd[l] {
            let hs = c.numHeads + c.numKVHeads
            qn.withUnsafeBufferPointer { w in
                Backward.headRMSNorm(dqkv, ld: ldqkv, x: pre, ldx: qd + kvd, w: w.baseAddress!, rstd: rs, ldRstd: hs,
                                     rows: rows, heads: c.numHeads, headDim: hd)
            }
            kn.withUnsafeBufferPointer { w in
                Backward.headRMSNorm(dqkv + qd, ld: ldqkv, x: pre + qd, ldx: qd + kvd, w: w.baseAddress!, rstd: rs + c.numHeads, ldRstd: hs,
                                     rows: rows, heads: c.numKVHeads, headDim: hd)
            }
        }
        L.inputNorm.withUnsafeBufferPointer { Kernels.rmsNorm(n, x, $0.baseAddress!, rows: rows, dim: d, eps: eps, rstd: r1) }
        dn.update(repeating: 0, count: rows * d)
        projectBackward(L.qkv, x: n, ldx: d, dy: dqkv, ldy: ldqkv, dx: dn, lddx: d, rows: rows, scratch: ws.scratch, grads: grads, drop: drop)
        L.inputNorm.withUnsafeBufferPointer { Backward.rmsNorm(dx, dn, x, $0.baseAddress!, r1, rows: rows, dim: d) }
    }

    /// Attention backward per (sequence, KV head), recomputing the probabilities: dV += Pᵀ·dO, dP = dO·Vᵀ,
    /// dS = softmax'(dP), dQ = s·dS·K, dK += s·dSᵀ·Q, with the group's query heads stacked as in the forward
    /// (Transformer.attention), so they add into the shared K and V in one product.
    func attentionBackward(qkv: UnsafeMutablePointer<Float>, datt: UnsafeMutablePointer<Float>, dqkv: UnsafeMutablePointer<Float>,
                           batch: TokenBatch, ws: TrainWorkspace, window: Int?) {
        let c = config, T = batch.seq, hd = c.headDim
        let qd = c.numHeads * hd, kvd = c.numKVHeads * hd, ld = qd + 2 * kvd
        let scale = c.attentionScale, kvHeads = c.numKVHeads
        let (group, blk, stackRows, slot) = Transformer.attentionLayout(config: c, seq: T)
        withSingleThreadedBLAS {
            // One job per (sequence, KV head): the group's query heads add into the same dK and dV, so one writer.
            Parallel.forJobs(batch.batch * kvHeads) { job, worker in
                let b = job / kvHeads, kvh = job % kvHeads
                let p = ws.p + worker * slot, dp = ws.dp + worker * slot
                // Stacked queries and their gradient after the scores; the stacked output gradient after dP's.
                let qs = p + stackRows * T, dqs = qs + stackRows * hd, dos = dp + stackRows * T
                let len = max(1, batch.lengths[b])
                let base = b * T * ld
                let k = qkv + base + qd + kvh * hd, v = qkv + base + qd + kvd + kvh * hd
                let dk = dqkv + base + qd + kvh * hd, dv = dqkv + base + qd + kvd + kvh * hd
                // Query blocks multiply only the keys they can see (the causal triangle, cut at the window).
                var q0 = 0
                while q0 < T {
                    let q1 = min(T, q0 + blk), m = q1 - q0, rows = group * m
                    let lo = Transformer.blockFirstKey(q0, len: len, window: window)
                    let keys = min(q1, len) - lo
                    let kl = k + lo * ld, vl = v + lo * ld, dkl = dk + lo * ld, dvl = dv + lo * ld
                    Transformer.stackHeads(qkv + base, ld: ld, firstHead: kvh * group, group: group, hd: hd, q0: q0, m: m, qs)
                    Transformer.stackHeads(datt + b * T * qd, ld: qd, firstHead: kvh * group, group: group, hd: hd, q0: q0, m: m, dos)
                    stackedProbabilities(qs, k: kl, ld: ld, group: group, m: m, keys: keys, lo: lo, q0: q0, batch: batch, b: b,
                                         len: len, window: window, into: p)
                    gemm(.none, .transpose, m: rows, n: keys, k: hd, a: dos, lda: hd, b: vl, ldb: ld, c: dp, ldc: keys)
                    gemm(.transpose, .none, m: keys, n: hd, k: rows, a: p, lda: keys, b: dos, ldb: hd, beta: 1, c: dvl, ldc: ld)
                    for i in 0..<m {
                        let r = Transformer.keyRange(batch, b, q0 + i, len: len, window: window)
                        for g in 0..<group {
                            let o = (g * m + i) * keys
                            Backward.softmaxRow(dp + o, p + o, from: r.from - lo, valid: r.to - lo, count: keys)
                        }
                    }
                    if let cap = c.attnSoftcap {
                        // Soft-capped scores (gemma2): ∂/∂raw = ∂/∂capped · (1 − tanh²), tanh = capped / cap from the
                        // recomputed scores (P is no longer needed).
                        gemm(.none, .transpose, m: rows, n: keys, k: hd, alpha: scale, a: qs, lda: hd, b: kl, ldb: ld, c: p, ldc: keys)
                        Kernels.softcap(p, ld: keys, rows: rows, cols: keys, cap: cap)
                        Backward.softcap(dp, capped: p, count: rows * keys, cap: cap)
                    }
                    gemm(.none, .none, m: rows, n: hd, k: keys, alpha: scale, a: dp, lda: keys, b: kl, ldb: ld, c: dqs, ldc: hd)
                    gemm(.transpose, .none, m: keys, n: hd, k: rows, alpha: scale, a: dp, lda: keys, b: qs, ldb: hd, beta: 1, c: dkl, ldc: ld)
                    Transformer.stackHeads(dqkv + base, ld: ld, firstHead: kvh * group, group: group, hd: hd, q0: q0, m: m, dqs, unstack: true)
                    q0 = q1
                }
            }
        }
    }
}
