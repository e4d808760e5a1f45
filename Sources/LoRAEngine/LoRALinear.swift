// LoRALinear: the one implementation of a frozen Linear with its optional LoRA, used by every pass (eval,
// training forward and backward, decoding). The frozen weight stays in its stored form (F32/F16/BF16 mmapped,
// or bitsandbytes 4-bit) and is expanded right before its GEMM; Linears that share an input (q/k/v, gate/up)
// are stacked along the output and multiplied in one GEMM. LoRA runs unmerged: y += s·(drop(x)·Aᵀ)·Bᵀ.
//
// Compute dtype (`Transformer.computeDType`): in f32 every product is fp32. In bf16 the frozen-weight GEMMs
// (forward, and the activation gradient dx = dy·W of backward) take bf16 operands — the weight as stored when
// it is bf16, otherwise rounded to bf16 as torch's `.to(bfloat16)` does (NF4 decodes to bf16 as bitsandbytes'
// dequantize does with a bf16 compute dtype), and the activation rounded to bf16 — with fp32 accumulation and
// fp32 results. Products of bf16 values are exact in fp32, so a GEMM of bf16-rounded fp32 operands is the
// bf16 GEMM up to summation order. LoRA A/B products, bias, dropout and every gradient of A and B stay fp32.

/// The arithmetic of the frozen-weight GEMMs and the head.

/// Raw fp32 buffers, zeroed, freed together with their owner.
final class BufferPool {
    private var owned: [UnsafeMutablePointer<Float>] = []
    private var ownedHalf: [UnsafeMutablePointer<UInt16>] = []

    func make(_ n: Int) -> UnsafeMutablePointer<Float> {
        let p = UnsafeMutablePointer<Float>.allocate(capacity: max(1, n))
        p.initialize(repeating: 0, count: max(1, n))
        owned.append(p)
        return p
    }

    func makeHalf(_ n: Int) -> UnsafeMutablePointer<UInt16> {
        let p = UnsafeMutablePointer<UInt16>.allocate(capacity: max(1, n))
        p.initialize(repeating: 0, count: max(1, n))
        ownedHalf.append(p)
        return p
    }

    deinit {
        for p in owned { p.deallocate() }
        for p in ownedHalf { p.deallocate() }
    }
}

/// Scratch of the projections of one pass shape (rows), allocated once.
final class ProjectionScratch {
    /// Expanded fp32 weights: the stacked weights of a projection when they fit `weightTileFloats`, else one
    /// tile of a weight's output rows at a time.
    var w: UnsafeMutablePointer<Float> {
        if let p = _w { return p }
        let p = pool.make(wCap)
        _w = p
        return p
    }
    private var _w: UnsafeMutablePointer<Float>?
    let wCap: Int
    /// Capacity of wBF (bf16 values): the stacked weights when they fit bf16TileHalves, else a tile of rows.
    let wBFCap: Int
    /// fp32 values of expanded weight per tile (16 MB): a small model's stacked projection is one tile, so one GEMM;
    /// a 7B model's 18944 × 3584 gate_proj goes in tiles of output rows instead of a 270 MB copy.
    nonisolated(unsafe) static var weightTileFloats = 1 << 22

    /// x·Aᵀ (rows × r); dy·B in backward.
    let t: UnsafeMutablePointer<Float>, dt: UnsafeMutablePointer<Float>?
    /// Dropped-out LoRA input (rows × in) and u·A before its mask (backward), when dropout is on.
    let xdrop: UnsafeMutablePointer<Float>?, tmp: UnsafeMutablePointer<Float>?
    private let rows: Int, widest: Int, weightCap: Int
    private let pool: BufferPool
    private var _op: UnsafeMutablePointer<Float>?
    private var _opBF: UnsafeMutablePointer<UInt16>?, _wBF: UnsafeMutablePointer<UInt16>?

    /// `mlpBlock`: the training step's MLP runs in blocks of that many intermediate columns (BlockedMLP.swift), so
    /// no operand is wider than a block's gate|up.
    init(config c: ModelConfig, rows: Int, maxR: Int, pool: BufferPool, backward: Bool, dropout: Bool, mlpBlock: Int? = nil) {
        let d = c.hiddenSize, qd = c.numHeads * c.headDim, kvd = c.numKVHeads * c.headDim
        let i = min(c.intermediateSize, mlpBlock ?? c.intermediateSize)
        self.rows = rows
        self.pool = pool
        widest = max(d, qd + 2 * kvd, 2 * i)
        weightCap = max((qd + 2 * kvd) * d, qd * d, 2 * i * d, i * d)
        wCap = min(weightCap, max(ProjectionScratch.weightTileFloats, max(d, i, qd)))
        wBFCap = min(weightCap, max(ProjectionScratch.bf16TileHalves, max(d, i, qd)))
        t = pool.make(rows * max(1, maxR))
        dt = backward ? pool.make(rows * max(1, maxR)) : nil
        let maxIn = max(d, i, qd)
        xdrop = dropout ? pool.make(rows * maxIn) : nil
        tmp = dropout && backward ? pool.make(rows * maxIn) : nil
    }

    /// A rows × widest fp32 buffer made on first use in `slot`.
    private func onDemand(_ slot: inout UnsafeMutablePointer<Float>?) -> UnsafeMutablePointer<Float> {
        if let p = slot { return p }
        let p = pool.make(rows * widest)
        slot = p
        return p
    }

    /// The bf16-rounded activation operand (rows × the widest input or output), made on first use in bf16.
    var op: UnsafeMutablePointer<Float> { onDemand(&_op) }

    /// bf16 operands for oneDNN: the activation (rows × widest) and the stacked weights, made on first use.
    var opBF: UnsafeMutablePointer<UInt16> {
        if let p = _opBF { return p }
        let p = pool.makeHalf(rows * widest)
        _opBF = p
        return p
    }

    /// DoRA: the stack's unscaled outputs z = W·x + s·B·A·x, and ∂/∂z in backward; with dropout also one
    /// module's W·x_d + s·B·A·x_d (rows × the widest output each).
    private var _doraZ: UnsafeMutablePointer<Float>?, _doraDZ: UnsafeMutablePointer<Float>?, _doraW: UnsafeMutablePointer<Float>?
    var doraZ: UnsafeMutablePointer<Float> { onDemand(&_doraZ) }
    var doraDZ: UnsafeMutablePointer<Float> { onDemand(&_doraDZ) }
    var doraW: UnsafeMutablePointer<Float> { onDemand(&_doraW) }

    /// bf16 values of expanded weight per tile (32 MB): what oneDNN multiplies when the weights are not bf16.
    nonisolated(unsafe) static var bf16TileHalves = 1 << 24

    var wBF: UnsafeMutablePointer<UInt16> {
        if let p = _wBF { return p }
        let p = pool.makeHalf(wBFCap)
        _wBF = p
        return p
    }
}

extension Transformer {
    /// Whether any of `lins` carries DoRA.
    func hasDoRA(_ lins: [LinearWeight]) -> Bool { lins.contains { lora[$0.name]?.magnitude != nil } }

    /// DoRA's per-row factor g = m / ‖W + s·B·A‖ and the norm (detached from the gradient, as PEFT's
    /// weight_norm.detach()), from the current weights; made once and kept until setLoRA changes the module. W is
    /// the frozen weight in fp32 (dequantized when 4-bit), as PEFT's dequantize_module_weight gives it.
    func doraScale(_ lin: LinearWeight) -> (scale: [Float], norm: [Float])? {
        guard let l = lora[lin.name], let m = l.magnitude else { return nil }
        if let c = doraScales[lin.name] { return c }
        let inF = lin.inFeatures, out = lin.outFeatures
        let tile = max(1, min(out, (1 << 20) / max(1, inF)))
        var w = [Float](repeating: 0, count: tile * inF)
        var norm = [Float](repeating: 0, count: out)
        w.withUnsafeMutableBufferPointer { wb in
            l.a.withUnsafeBufferPointer { ap in
                l.b.withUnsafeBufferPointer { bp in
                    var o0 = 0
                    while o0 < out {
                        let n = min(tile, out - o0)
                        lin.expandRows(o0..<(o0 + n), into: wb.baseAddress!)
                        // W[o0..<o0+n, :] + s·B[o0..<o0+n, :]·A
                        gemm(.none, .none, m: n, n: inF, k: l.r, alpha: l.scaling, a: bp.baseAddress! + o0 * l.r, lda: l.r,
                             b: ap.baseAddress!, ldb: inF, beta: 1, c: wb.baseAddress!, ldc: inF)
                        for i in 0..<n {
                            var ss = 0.0
                            let row = wb.baseAddress! + i * inF
                            for j in 0..<inF { ss += Double(row[j]) * Double(row[j]) }
                            norm[o0 + i] = Float(ss.squareRoot())
                        }
                        o0 += n
                    }
                }
            }
        }
        let scale = (0..<out).map { m[$0] / norm[$0] }
        doraScales[lin.name] = (scale, norm)
        return (scale, norm)
    }

    /// y (row stride ldy) (+)= x·Wᵀ + bias + s·(drop(x)·Aᵀ)·Bᵀ for Linears sharing the input, stacked along
    /// the output: one GEMM against their weights expanded one after another (or, for a few rows — decoding —
    /// products straight from the stored form), then bias and LoRA on each one's column slice. A DoRA module's
    /// slice is g ⊙ (x·Wᵀ + s·(x·Aᵀ)·Bᵀ) + bias (PEFT's DoraLinearLayer: base_result·(g − 1) + g·s·lora added to
    /// the base output), formed in scratch.doraZ first.
    func project(_ lins: [LinearWeight], x: UnsafePointer<Float>, ldx: Int, rows: Int, y: UnsafeMutablePointer<Float>, ldy: Int,
                 scratch: ProjectionScratch, accumulate: Bool, drop: LoRADropout?) {
        guard hasDoRA(lins) else {
            projectPlain(lins, x: x, ldx: ldx, rows: rows, y: y, ldy: ldy, scratch: scratch, accumulate: accumulate, bias: true, drop: drop)
            return
        }
        if let dr = drop {
            projectDoRADropout(lins, x: x, ldx: ldx, rows: rows, y: y, ldy: ldy, scratch: scratch, accumulate: accumulate, drop: dr)
            return
        }
        let outTotal = lins.reduce(0) { $0 + $1.outFeatures }
        let z = scratch.doraZ
        projectPlain(lins, x: x, ldx: ldx, rows: rows, y: z, ldy: outTotal, scratch: scratch, accumulate: false, bias: false, drop: drop)
        Profiler.shared.measure("dora") {
            var col = 0
            for lin in lins {
                let g = doraScale(lin)?.scale, out = lin.outFeatures, c0 = col
                let bias = lin.bias
                Parallel.forRanges(rows, grain: 16) { r in
                    for i in r {
                        let yi = y + i * ldy + c0, zi = z + i * outTotal + c0
                        for o in 0..<out {
                            var v = g.map { $0[o] * zi[o] } ?? zi[o]
                            if let b = bias { v += b[o] }
                            yi[o] = accumulate ? yi[o] + v : v
                        }
                    }
                }
                col += out
            }
        }
    }

    /// A frozen product's activation operand on the emulated path: x itself in fp32 compute; in bf16, x rounded
    /// to bf16 values (as floats) in scratch.op, rows × cols packed. Returns the operand and its row stride.
    private func operand(_ x: UnsafePointer<Float>, ld: Int, rows: Int, cols: Int, scratch: ProjectionScratch,
                         bf16: Bool) -> (UnsafePointer<Float>, Int) {
        guard bf16 else { return (x, ld) }
        Kernels.roundToBF16(x, ld: ld, rows: rows, cols: cols, into: scratch.op, ldd: cols)
        return (UnsafePointer(scratch.op), cols)
    }

    /// project without DoRA's factor: y (+)= x·Wᵀ (+ bias with `bias`) + s·(drop(x)·Aᵀ)·Bᵀ.
    private func projectPlain(_ lins: [LinearWeight], x: UnsafePointer<Float>, ldx: Int, rows: Int, y: UnsafeMutablePointer<Float>, ldy: Int,
                              scratch: ProjectionScratch, accumulate: Bool, bias: Bool, drop: LoRADropout?, withLoRA: Bool = true) {
        let prof = Profiler.shared
        let inF = lins[0].inFeatures
        let outTotal = lins.reduce(0) { $0 + $1.outFeatures }
        let bf16 = computeDType == .bf16
        if bf16 && compute.backend == .onednn && rows > LinearWeight.directRows
            && oneDNNProduct(lins, a: x, lda: ldx, rows: rows, transposeW: true, y: y, ldy: ldy, accumulate: accumulate, scratch: scratch) {
            // done: bf16 × bf16 → fp32 on oneDNN
        } else {
        let (a, lda) = operand(x, ld: ldx, rows: rows, cols: inF, scratch: scratch, bf16: bf16)
        if rows <= LinearWeight.directRows {
            prof.measure("gemv linear", flops: 2.0 * Double(rows * outTotal * inF)) {
                var col = 0
                for lin in lins {
                    lin.multiplyDirect(x: a, ldx: lda, rows: rows, y: y + col, ldy: ldy, accumulate: accumulate, bf16: bf16)
                    col += lin.outFeatures
                }
            }
        } else if outTotal * inF <= scratch.wCap {
            expandStacked(lins, into: scratch.w, bf16: bf16)
            prof.measure("gemm linear", flops: 2.0 * Double(rows * outTotal * inF)) {
                gemm(.none, .transpose, m: rows, n: outTotal, k: inF, a: a, lda: lda,
                     b: scratch.w, ldb: inF, beta: accumulate ? 1 : 0, c: y, ldc: ldy)
            }
        } else {
            forEachWeightTile(lins, scratch: scratch, bf16: bf16) { col, n, w in
                prof.measure("gemm linear", flops: 2.0 * Double(rows * n * inF)) {
                    gemm(.none, .transpose, m: rows, n: n, k: inF, a: a, lda: lda, b: w, ldb: inF,
                         beta: accumulate ? 1 : 0, c: y + col, ldc: ldy)
                }
            }
        }
        }
        var col = 0
        for lin in lins {
            let yc = y + col
            col += lin.outFeatures
            if bias, let b = lin.bias { b.withUnsafeBufferPointer { Kernels.addBias(yc, ld: ldy, rows: rows, cols: lin.outFeatures, $0.baseAddress!) } }
            guard withLoRA, let l = lora[lin.name] else { continue }
            prof.measure("lora") {
                var xin = x, ldxin = ldx
                if let dr = drop {
                    let xd = scratch.xdrop!  // allocated whenever the pass has dropout
                    dr.apply(x, ld: ldx, rows: rows, cols: inF, module: lin.name, into: xd)
                    xin = UnsafePointer(xd); ldxin = inF
                }
                l.a.withUnsafeBufferPointer { ap in
                    gemm(.none, .transpose, m: rows, n: l.r, k: inF, a: xin, lda: ldxin, b: ap.baseAddress!, ldb: inF,
                         c: scratch.t, ldc: l.r, acrossCores: true)
                }
                l.b.withUnsafeBufferPointer { bp in
                    gemm(.none, .transpose, m: rows, n: lin.outFeatures, k: l.r, alpha: l.scaling, a: scratch.t, lda: l.r,
                         b: bp.baseAddress!, ldb: l.r, beta: 1, c: yc, ldc: ldy, acrossCores: true)
                }
            }
        }
    }

    /// Given dy for y = project(lins, x): dx += dy·W over the stacked weights (one GEMM), then each module's
    /// LoRA path, with dA and dB accumulated into grads. DoRA modules: y = g ⊙ z + bias, so ∂/∂z = g ⊙ dy goes
    /// down the plain path, and ∂/∂m = Σ_rows dy ⊙ z / ‖W + s·B·A‖ with z recomputed from x (the norm is
    /// detached, as in PEFT).
    func projectBackward(_ lins: [LinearWeight], x: UnsafePointer<Float>, ldx: Int, dy: UnsafePointer<Float>, ldy: Int,
                         dx: UnsafeMutablePointer<Float>, lddx: Int, rows: Int, scratch: ProjectionScratch,
                         grads: LoRAGradients, drop: LoRADropout?) {
        guard hasDoRA(lins) else {
            projectBackwardPlain(lins, x: x, ldx: ldx, dy: dy, ldy: ldy, dx: dx, lddx: lddx, rows: rows, scratch: scratch, grads: grads, drop: drop)
            return
        }
        if let dr = drop {
            projectBackwardDoRADropout(lins, x: x, ldx: ldx, dy: dy, ldy: ldy, dx: dx, lddx: lddx, rows: rows, scratch: scratch, grads: grads, drop: dr)
            return
        }
        let outTotal = lins.reduce(0) { $0 + $1.outFeatures }
        let dz = scratch.doraDZ, z = scratch.doraZ
        let scales = lins.map { doraScale($0) }
        Profiler.shared.measure("dora") {
            var col = 0
            for (lin, sc) in zip(lins, scales) {
                let out = lin.outFeatures, c0 = col
                Parallel.forRanges(rows, grain: 16) { r in
                    for i in r {
                        let di = dz + i * outTotal + c0, yi = dy + i * ldy + c0
                        if let g = sc?.scale { for o in 0..<out { di[o] = g[o] * yi[o] } } else { di.update(from: yi, count: out) }
                    }
                }
                col += out
            }
        }
        projectBackwardPlain(lins, x: x, ldx: ldx, dy: dz, ldy: outTotal, dx: dx, lddx: lddx, rows: rows, scratch: scratch, grads: grads, drop: drop)
        projectPlain(lins, x: x, ldx: ldx, rows: rows, y: z, ldy: outTotal, scratch: scratch, accumulate: false, bias: false, drop: drop)
        Profiler.shared.measure("dora") {
            var col = 0
            for (lin, sc) in zip(lins, scales) {
                defer { col += lin.outFeatures }
                guard let norm = sc?.norm else { continue }
                let out = lin.outFeatures
                grads.m[lin.name]!.withUnsafeMutableBufferPointer { dm in
                    for o in 0..<out {
                        var acc = 0.0
                        for i in 0..<rows { acc += Double(dy[i * ldy + col + o]) * Double(z[i * outTotal + col + o]) }
                        dm[o] += Float(acc) / norm[o]
                    }
                }
            }
        }
    }

    private func projectBackwardPlain(_ lins: [LinearWeight], x: UnsafePointer<Float>, ldx: Int, dy: UnsafePointer<Float>, ldy: Int,
                                      dx: UnsafeMutablePointer<Float>, lddx: Int, rows: Int, scratch: ProjectionScratch,
                                      grads: LoRAGradients, drop: LoRADropout?, withLoRA: Bool = true) {
        projectBaseBackward(lins, dy: dy, ldy: ldy, dx: dx, lddx: lddx, rows: rows, scratch: scratch)
        guard withLoRA else { return }
        var col = 0
        for lin in lins {
            loraBackward(lin, x: x, ldx: ldx, dy: dy + col, ldy: ldy, dx: dx, lddx: lddx, rows: rows, scratch: scratch,
                         grads: grads, drop: drop)
            col += lin.outFeatures
        }
    }

    /// DoRA with LoRA dropout in training, as PEFT's Linear.forward then computes it: the base output on x, and on
    /// each module's dropped-out input x_d = drop(x) the DoRA term (g − 1)⊙(W·x_d) + g⊙s·B·A·x_d, so
    /// y = W·x + bias + g⊙(W·x_d + s·B·A·x_d) − W·x_d. Each module has its own mask, so W·x_d is one product per
    /// module, beside the stacked W·x.
    private func projectDoRADropout(_ lins: [LinearWeight], x: UnsafePointer<Float>, ldx: Int, rows: Int, y: UnsafeMutablePointer<Float>,
                                    ldy: Int, scratch: ProjectionScratch, accumulate: Bool, drop dr: LoRADropout) {
        projectPlain(lins, x: x, ldx: ldx, rows: rows, y: y, ldy: ldy, scratch: scratch, accumulate: accumulate, bias: true, drop: nil, withLoRA: false)
        var col = 0
        for lin in lins {
            defer { col += lin.outFeatures }
            guard lora[lin.name] != nil else { continue }
            let out = lin.outFeatures, c0 = col
            let xd = doraDroppedInput(lin, x: x, ldx: ldx, rows: rows, scratch: scratch, drop: dr)
            let (z1, z2) = doraDroppedOutputs(lin, xd: xd, rows: rows, scratch: scratch)
            let g = doraScale(lin)?.scale
            Profiler.shared.measure("dora") {
                Parallel.forRanges(rows, grain: 16) { r in
                    for i in r {
                        let yi = y + i * ldy + c0, a = z1 + i * out, b = z2 + i * out
                        for o in 0..<out { yi[o] += (g.map { $0[o] * b[o] } ?? b[o]) - a[o] }
                    }
                }
            }
        }
    }

    /// x_d = drop(x) for one module (its own mask), in scratch.xdrop (rows × in).
    private func doraDroppedInput(_ lin: LinearWeight, x: UnsafePointer<Float>, ldx: Int, rows: Int, scratch: ProjectionScratch,
                                  drop dr: LoRADropout) -> UnsafePointer<Float> {
        let xd = scratch.xdrop!  // allocated whenever the pass has dropout
        dr.apply(x, ld: ldx, rows: rows, cols: lin.inFeatures, module: lin.name, into: xd)
        return UnsafePointer(xd)
    }

    /// z1 = W·x_d (scratch.doraZ) and z2 = W·x_d + s·B·A·x_d (scratch.doraW), rows × out each.
    private func doraDroppedOutputs(_ lin: LinearWeight, xd: UnsafePointer<Float>, rows: Int,
                                    scratch: ProjectionScratch) -> (UnsafePointer<Float>, UnsafePointer<Float>) {
        let out = lin.outFeatures, z1 = scratch.doraZ, z2 = scratch.doraW
        projectPlain([lin], x: xd, ldx: lin.inFeatures, rows: rows, y: z1, ldy: out, scratch: scratch, accumulate: false, bias: false,
                     drop: nil, withLoRA: false)
        z2.update(from: z1, count: rows * out)
        addLoRA(lin, x: xd, ldx: lin.inFeatures, rows: rows, y: z2, ldy: out, scratch: scratch)
        return (UnsafePointer(z1), UnsafePointer(z2))
    }

    /// y += s·(x·Aᵀ)·Bᵀ for one module (no dropout).
    private func addLoRA(_ lin: LinearWeight, x: UnsafePointer<Float>, ldx: Int, rows: Int, y: UnsafeMutablePointer<Float>, ldy: Int,
                         scratch: ProjectionScratch) {
        guard let l = lora[lin.name] else { return }
        l.a.withUnsafeBufferPointer { ap in
            gemm(.none, .transpose, m: rows, n: l.r, k: lin.inFeatures, a: x, lda: ldx, b: ap.baseAddress!, ldb: lin.inFeatures,
                 c: scratch.t, ldc: l.r, acrossCores: true)
        }
        l.b.withUnsafeBufferPointer { bp in
            gemm(.none, .transpose, m: rows, n: lin.outFeatures, k: l.r, alpha: l.scaling, a: scratch.t, lda: l.r,
                 b: bp.baseAddress!, ldb: l.r, beta: 1, c: y, ldc: ldy, acrossCores: true)
        }
    }

    /// Backward of projectDoRADropout: dx += dy·W (the base path); per module, with x_d its dropped-out input,
    /// ∂/∂x_d = (g − 1)⊙dy·W + the LoRA path of g⊙dy (dA, dB from x_d), and dx += mask/keep ⊙ ∂/∂x_d;
    /// ∂/∂m = Σ_rows dy ⊙ (W·x_d + s·B·A·x_d) / ‖W + s·B·A‖.
    private func projectBackwardDoRADropout(_ lins: [LinearWeight], x: UnsafePointer<Float>, ldx: Int, dy: UnsafePointer<Float>, ldy: Int,
                                            dx: UnsafeMutablePointer<Float>, lddx: Int, rows: Int, scratch: ProjectionScratch,
                                            grads: LoRAGradients, drop dr: LoRADropout) {
        projectBackwardPlain(lins, x: x, ldx: ldx, dy: dy, ldy: ldy, dx: dx, lddx: lddx, rows: rows, scratch: scratch, grads: grads,
                             drop: nil, withLoRA: false)
        var col = 0
        for lin in lins {
            defer { col += lin.outFeatures }
            guard lora[lin.name] != nil else { continue }
            let out = lin.outFeatures, inF = lin.inFeatures, c0 = col
            let sc = doraScale(lin)
            let xd = doraDroppedInput(lin, x: x, ldx: ldx, rows: rows, scratch: scratch, drop: dr)
            let dxd = scratch.tmp!  // rows × in, allocated with dropout in backward
            dxd.update(repeating: 0, count: rows * inF)
            let dz = scratch.doraDZ
            for i in 0..<rows {
                let di = dz + i * out, yi = dy + i * ldy + c0
                if let g = sc?.scale { for o in 0..<out { di[o] = g[o] * yi[o] } } else { di.update(from: yi, count: out) }
            }
            loraBackward(lin, x: xd, ldx: inF, dy: dz, ldy: out, dx: dxd, lddx: inF, rows: rows, scratch: scratch, grads: grads, drop: nil)
            if let g = sc?.scale, let norm = sc?.norm {
                for i in 0..<rows {
                    let di = dz + i * out, yi = dy + i * ldy + c0
                    for o in 0..<out { di[o] = (g[o] - 1) * yi[o] }
                }
                projectBackwardPlain([lin], x: xd, ldx: inF, dy: dz, ldy: out, dx: dxd, lddx: inF, rows: rows, scratch: scratch, grads: grads,
                                     drop: nil, withLoRA: false)
                let (_, z2) = doraDroppedOutputs(lin, xd: xd, rows: rows, scratch: scratch)
                grads.m[lin.name]!.withUnsafeMutableBufferPointer { dm in
                    for o in 0..<out {
                        var acc = 0.0
                        for i in 0..<rows { acc += Double(dy[i * ldy + c0 + o]) * Double(z2[i * out + o]) }
                        dm[o] += Float(acc) / norm[o]
                    }
                }
            }
            // x_d was overwritten by nothing above (the products read it); the mask scales ∂/∂x_d back to x.
            dr.apply(dxd, ld: inF, rows: rows, cols: inF, module: lin.name, into: dx, ldd: lddx, accumulate: true)
        }
    }

    /// The frozen product on oneDNN with bf16 operands: y (+)= bf16(a)·Wᵀ (`transposeW`, a is rows × in) or
    /// y (+)= bf16(a)·W (a is rows × Σ out). Weights stored as bf16 are multiplied where they are mapped (no copy: a
    /// 7B model's gate/up pair is 270 MB); runs of other weights (NF4, fp16, fp32) are expanded to bf16 in tiles
    /// of output rows into one stacked buffer and multiplied together. False when oneDNN failed; the caller then
    /// computes the same product emulated.
    private func oneDNNProduct(_ lins: [LinearWeight], a: UnsafePointer<Float>, lda: Int, rows: Int, transposeW: Bool,
                               y: UnsafeMutablePointer<Float>, ldy: Int, accumulate: Bool, scratch: ProjectionScratch) -> Bool {
        let inF = lins[0].inFeatures
        let outTotal = lins.reduce(0) { $0 + $1.outFeatures }
        let ab = scratch.opBF
        let k = transposeW ? inF : outTotal
        OneDNN.convert(a, ld: lda, rows: rows, cols: k, into: ab, ldd: k)
        // One product of the stacked weights [col, col + n) held at w (row stride ldw).
        var first = true, failed = false
        func product(col: Int, n: Int, w: UnsafePointer<UInt16>, ldw: Int) -> Bool {
            let acc = transposeW ? accumulate : (accumulate || !first)
            let wasFirst = first
            first = false
            if !failed {
                let ok = Profiler.shared.measure("gemm linear", flops: 2.0 * Double(rows * n * inF)) {
                    transposeW
                        ? OneDNN.gemm(transB: true, m: rows, n: n, k: inF, a: ab, lda: k, b: w, ldb: ldw, accumulate: acc, c: y + col, ldc: ldy)
                        : OneDNN.gemm(transB: false, m: rows, n: inF, k: n, a: ab + col, lda: k, b: w, ldb: ldw, accumulate: acc, c: y, ldc: ldy)
                }
                if ok { return true }
                failed = true
                if wasFirst { return false }  // nothing written yet: the caller computes the whole product
                OneDNN.warnFallback()
            }
            // oneDNN failed after part of y was written: this part and the rest by emulation (the bf16 operands
            // widened to fp32 exactly, OpenBLAS sgemm), in tiles of the weight's rows.
            let af = scratch.op, wf = scratch.w
            for r in 0..<rows { for j in 0..<k { af[r * k + j] = bf16ToFloat(ab[r * k + j]) } }
            let tile = max(1, scratch.wCap / inF)
            var o0 = 0
            while o0 < n {
                let m = min(tile, n - o0)
                for i in 0..<m { for j in 0..<inF { wf[i * inF + j] = bf16ToFloat(w[(o0 + i) * ldw + j]) } }
                if transposeW {
                    gemm(.none, .transpose, m: rows, n: m, k: inF, a: af, lda: k, b: wf, ldb: inF, beta: acc ? 1 : 0, c: y + col + o0, ldc: ldy)
                } else {
                    gemm(.none, .none, m: rows, n: inF, k: m, a: af + col + o0, lda: k, b: wf, ldb: inF,
                         beta: (acc || o0 > 0) ? 1 : 0, c: y, ldc: ldy)
                }
                o0 += m
            }
            return true
        }
        var ok = true
        var i = 0, col = 0
        while i < lins.count && ok {
            if case .dense(let t) = lins[i].storage, t.dtype == .BF16 {
                let w = t.data.baseAddress!.assumingMemoryBound(to: UInt16.self) + lins[i].storedIndex(0)
                ok = product(col: col, n: lins[i].outFeatures, w: w, ldw: lins[i].storedIn)
                col += lins[i].outFeatures
                i += 1
                continue
            }
            // A run of weights not stored as bf16: expanded, stacked, in tiles of at most wBFCap values (a
            // small model's whole run is one tile, so one product; a 7B model's NF4 gate + up pair goes in ~9
            // tiles of 32 MB instead of one 270 MB copy), one product per tile.
            let wb = scratch.wBF
            // Tiles of equal size over the run (no thin last product).
            let runRows = lins[i...].prefix { !$0.isStoredBF16 }.reduce(0) { $0 + $1.outFeatures }
            let capRows = max(1, scratch.wBFCap / inF), tiles = (runRows + capRows - 1) / capRows
            let tileRows = (runRows + tiles - 1) / tiles
            var filled = 0, o0 = 0
            while i < lins.count && ok {
                let lin = lins[i]
                if lin.isStoredBF16 { break }
                let n = min(tileRows - filled, lin.outFeatures - o0)
                Profiler.shared.measure("expand weights") { lin.expandRowsBF16(o0..<(o0 + n), into: wb + filled * inF) }
                filled += n; o0 += n
                if o0 == lin.outFeatures { o0 = 0; i += 1 }
                let runEnds = i == lins.count || lins[i].isStoredBF16
                if filled == tileRows || (o0 == 0 && runEnds) {
                    ok = product(col: col, n: filled, w: wb, ldw: inF)
                    col += filled
                    filled = 0
                }
            }
        }
        if !ok { OneDNN.warnFallback() }
        return ok
    }

    /// The stacked weights of `lins` as fp32 [Σ out, in] (bf16-rounded in bf16 compute).
    private func expandStacked(_ lins: [LinearWeight], into w: UnsafeMutablePointer<Float>, bf16: Bool) {
        Profiler.shared.measure("expand weights") {
            var off = 0
            let inF = lins[0].inFeatures
            for lin in lins { lin.expand(into: w + off * inF, roundToBF16: bf16); off += lin.outFeatures }
        }
    }

    /// Each tile of output rows of `lins` (stacked), expanded to fp32 (bf16-rounded with `bf16`) into scratch.w:
    /// body(first stacked output column, rows in the tile, weights [rows, in]).
    private func forEachWeightTile(_ lins: [LinearWeight], scratch: ProjectionScratch, bf16: Bool,
                                   _ body: (Int, Int, UnsafePointer<Float>) -> Void) {
        let inF = lins[0].inFeatures
        let tile = max(1, scratch.wCap / inF)
        var col = 0
        for lin in lins {
            var o0 = 0
            while o0 < lin.outFeatures {
                let n = min(tile, lin.outFeatures - o0)
                Profiler.shared.measure("expand weights") { lin.expandRows(o0..<(o0 + n), into: scratch.w, roundToBF16: bf16) }
                body(col + o0, n, UnsafePointer(scratch.w))
                o0 += n
            }
            col += lin.outFeatures
        }
    }

    /// y (+)= x·Wᵀ (+ bias with `bias`) over stacked weights, without LoRA: a blocked MLP's windows.
    func projectBase(_ lins: [LinearWeight], x: UnsafePointer<Float>, ldx: Int, rows: Int, y: UnsafeMutablePointer<Float>, ldy: Int,
                     scratch: ProjectionScratch, accumulate: Bool, bias: Bool) {
        projectPlain(lins, x: x, ldx: ldx, rows: rows, y: y, ldy: ldy, scratch: scratch, accumulate: accumulate, bias: bias, drop: nil,
                     withLoRA: false)
    }

    /// dx += dy·W over the stacked weights (one GEMM, or one per weight tile), without LoRA.
    func projectBaseBackward(_ lins: [LinearWeight], dy: UnsafePointer<Float>, ldy: Int, dx: UnsafeMutablePointer<Float>, lddx: Int,
                             rows: Int, scratch: ProjectionScratch) {
        let inF = lins[0].inFeatures
        let outTotal = lins.reduce(0) { $0 + $1.outFeatures }
        let bf16 = computeDType == .bf16
        if bf16 && compute.backend == .onednn
            && oneDNNProduct(lins, a: dy, lda: ldy, rows: rows, transposeW: false, y: dx, ldy: lddx, accumulate: true, scratch: scratch) {
            // done: dx += bf16(dy) · bf16(W) on oneDNN
        } else {
            let (g, ldg) = operand(dy, ld: ldy, rows: rows, cols: outTotal, scratch: scratch, bf16: bf16)
            if outTotal * inF <= scratch.wCap {
                expandStacked(lins, into: scratch.w, bf16: bf16)
                Profiler.shared.measure("gemm linear", flops: 2.0 * Double(rows * outTotal * inF)) {
                    gemm(.none, .none, m: rows, n: inF, k: outTotal, a: g, lda: ldg, b: scratch.w, ldb: inF, beta: 1, c: dx, ldc: lddx)
                }
            } else {
                // dx += Σ over tiles of output rows: dy[:, tile]·W[tile, :].
                forEachWeightTile(lins, scratch: scratch, bf16: bf16) { col, n, w in
                    Profiler.shared.measure("gemm linear", flops: 2.0 * Double(rows * n * inF)) {
                        gemm(.none, .none, m: rows, n: inF, k: n, a: g + col, lda: ldg, b: w, ldb: inF, beta: 1, c: dx, ldc: lddx)
                    }
                }
            }
        }
    }

    private func loraBackward(_ lin: LinearWeight, x: UnsafePointer<Float>, ldx: Int, dy: UnsafePointer<Float>, ldy: Int,
                              dx: UnsafeMutablePointer<Float>, lddx: Int, rows: Int, scratch: ProjectionScratch,
                              grads: LoRAGradients, drop: LoRADropout?) {
        guard let l = lora[lin.name] else { return }
        Profiler.shared.measure("lora") {
            let inF = lin.inFeatures, outF = lin.outFeatures, r = l.r
            let t = scratch.t, u = scratch.dt!
            l.a.withUnsafeBufferPointer { a in
            l.b.withUnsafeBufferPointer { b in
            grads.a[lin.name]!.withUnsafeMutableBufferPointer { da in
            grads.b[lin.name]!.withUnsafeMutableBufferPointer { db in
                var xin = x, ldxin = ldx
                if let dr = drop {
                    let xd = scratch.xdrop!  // allocated whenever the pass has dropout
                    dr.apply(x, ld: ldx, rows: rows, cols: inF, module: lin.name, into: xd)
                    xin = UnsafePointer(xd); ldxin = inF
                }
                // t = drop(x)·Aᵀ; dB += s·dyᵀ·t
                gemm(.none, .transpose, m: rows, n: r, k: inF, a: xin, lda: ldxin, b: a.baseAddress!, ldb: inF, c: t, ldc: r, acrossCores: true)
                gemm(.transpose, .none, m: outF, n: r, k: rows, alpha: l.scaling, a: dy, lda: ldy, b: t, ldb: r,
                     beta: 1, c: db.baseAddress!, ldc: r, acrossCores: true)
                // u = dy·B; dA += s·uᵀ·drop(x)
                gemm(.none, .none, m: rows, n: r, k: outF, a: dy, lda: ldy, b: b.baseAddress!, ldb: r, c: u, ldc: r, acrossCores: true)
                gemm(.transpose, .none, m: r, n: inF, k: rows, alpha: l.scaling, a: u, lda: r, b: xin, ldb: ldxin,
                     beta: 1, c: da.baseAddress!, ldc: inF, acrossCores: true)
                // dx += s·(u·A) ⊙ mask/keep
                if let dr = drop {
                    let tmp = scratch.tmp!
                    gemm(.none, .none, m: rows, n: inF, k: r, alpha: l.scaling, a: u, lda: r, b: a.baseAddress!, ldb: inF,
                         c: tmp, ldc: inF, acrossCores: true)
                    dr.apply(tmp, ld: inF, rows: rows, cols: inF, module: lin.name, into: dx, ldd: lddx, accumulate: true)
                } else {
                    gemm(.none, .none, m: rows, n: inF, k: r, alpha: l.scaling, a: u, lda: r, b: a.baseAddress!, ldb: inF,
                         beta: 1, c: dx, ldc: lddx, acrossCores: true)
                }
            }}}}
        }
    }
}
