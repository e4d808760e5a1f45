// BlockedMLP: a training step's MLP in blocks of its intermediate dimension, for models whose MLP activations
// (rows × 3 × intermediate: gate|up and the SwiGLU product) outgrow `Transformer.mlpArenaFloats`. The MLP is
// separable along that dimension: block J needs only gate/up rows J and down columns J, so
// out = xm + Σ_J down[:, J]·act(gate_J(n))·up_J(n), and its backward takes the blocks one by one the same way.
// Each frozen weight is still read (and, when 4-bit, dequantized) once per pass; only rows × 3 × block floats are
// live at a time, in the arena the head's logit chunk also uses. LoRA is exact across blocks: gate/up's x·Aᵀ is
// formed once and multiplied by B's rows J in each block, down's h·Aᵀ and its dB collect over the blocks; the
// LoRA dropout masks are drawn per element of the whole input (LoRADropout.apply with colOffset), as unblocked.
// DoRA modules keep the unblocked path (their per-row norm spans the whole weight).

extension Transformer {
    /// Floats of the arena a layer's MLP blocks and the head's logit chunk share in training once rows × 3 ×
    /// intermediate exceeds it (64 MB); smaller in tests, to cross block edges.
    nonisolated(unsafe) public static var mlpArenaFloats = 1 << 24
    /// Blocks are whole multiples of this many intermediate columns (64: whole 4-bit blocks of a down row; even,
    /// so a 4-bit window starts on a whole byte); smaller in tests, for several blocks of a small model.
    nonisolated(unsafe) static var mlpBlockAlign = 64

    /// Width of the MLP's intermediate blocks for `rows` rows in training: the whole intermediate dimension
    /// (unblocked) while rows × 3 × intermediate fits the arena or any LoRA module carries DoRA, else the widest
    /// multiple of mlpBlockAlign that fits, evened out over the blocks.
    func mlpBlockWidth(rows: Int) -> Int {
        Transformer.mlpBlockWidth(config: config, rows: rows, dora: lora.values.contains { $0.magnitude != nil })
    }

    /// The MLP's block width in a training step of `rows` rows, nil when it runs unblocked (MemoryPlan).
    public static func trainMLPBlock(config c: ModelConfig, rows: Int, dora: Bool) -> Int? {
        let w = mlpBlockWidth(config: c, rows: rows, dora: dora)
        return w < c.intermediateSize ? w : nil
    }

    static func mlpBlockWidth(config c: ModelConfig, rows: Int, dora: Bool) -> Int {
        let i = c.intermediateSize
        guard !dora, rows > LinearWeight.directRows, let need = Limits.product(rows, 3, i), need > mlpArenaFloats else { return i }
        let al = mlpBlockAlign
        let fit = max(al, mlpArenaFloats / (3 * rows) / al * al)
        let blocks = (i + fit - 1) / fit
        let width = ((i + blocks - 1) / blocks + al - 1) / al * al
        return min(i, width)
    }

    /// Rows of the head per chunk in training: 256 (trainHeadChunkRows), or with a blocked MLP as many as the
    /// arena holds (at least 16).
    static func trainHeadChunk(config c: ModelConfig, rows: Int, blocked: Bool) -> Int {
        let cap = blocked ? max(16, mlpArenaFloats / max(1, c.vocabSize)) : trainHeadChunkRows
        return max(1, min(rows, trainHeadChunkRows, cap))
    }

    /// Floats of the arena: the blocks' gate|up (rows × 2·block) and SwiGLU product (rows × block, which its
    /// gradient overwrites) or the head's logit chunk, whichever is larger.
    static func mlpArena(config c: ModelConfig, rows: Int, block: Int, headChunk: Int) -> Int {
        max(rows * 3 * block, headChunk * c.vocabSize)
    }

    /// gate and up as (weight, first stored row) pieces, each `intermediate` rows: two Linears, or phi3's fused
    /// gate_up_proj twice (rows [0, i) and [i, 2i)). Pieces of one Linear share its LoRA module.
    private func gateUpPieces(_ L: Layer) -> [(lin: LinearWeight, base: Int)] {
        L.gateUp.count == 1 ? [(L.gateUp[0], 0), (L.gateUp[0], config.intermediateSize)] : [(L.gateUp[0], 0), (L.gateUp[1], 0)]
    }

    /// t = drop(n)·Aᵀ (rows × r) for gate/up's LoRA modules, one slot of `lt` per distinct module (piece order).
    private func gateUpLoRAInputs(_ pieces: [(lin: LinearWeight, base: Int)], n: UnsafePointer<Float>, rows: Int,
                                  scratch: ProjectionScratch, lt: MLPLoRAScratch, drop: LoRADropout?) {
        let d = config.hiddenSize
        for (p, piece) in pieces.enumerated() where p == 0 || piece.lin.name != pieces[0].lin.name {
            guard let l = lora[piece.lin.name] else { continue }
            let x = droppedInput(n, ld: d, rows: rows, cols: d, module: piece.lin.name, scratch: scratch, drop: drop)
            l.a.withUnsafeBufferPointer { a in
                gemm(.none, .transpose, m: rows, n: l.r, k: d, a: x, lda: d, b: a.baseAddress!, ldb: d, c: lt.t[p], ldc: l.r, acrossCores: true)
            }
        }
    }

    /// x, or drop(x) in scratch.xdrop for `module` (columns [colOffset, colOffset + cols) of an input of fullCols).
    private func droppedInput(_ x: UnsafePointer<Float>, ld: Int, rows: Int, cols: Int, module: String, scratch: ProjectionScratch,
                              drop: LoRADropout?, colOffset: Int = 0, fullCols: Int? = nil) -> UnsafePointer<Float> {
        guard let dr = drop else { return x }
        dr.apply(x, ld: ld, rows: rows, cols: cols, module: module, into: scratch.xdrop!, colOffset: colOffset, fullCols: fullCols)
        return UnsafePointer(scratch.xdrop!)
    }

    /// Block [j0, j0 + w) of the down projection's LoRA input: td (+)= drop(h_J)·A[:, J]ᵀ (the first block sets it).
    /// Returns drop(h_J) (h itself without dropout).
    private func downLoRAInput(_ l: LoRALayer, _ L: Layer, h: UnsafePointer<Float>, rows: Int, j0: Int, w: Int, scratch: ProjectionScratch,
                               lt: MLPLoRAScratch, drop: LoRADropout?) -> UnsafePointer<Float> {
        let inter = config.intermediateSize
        let x = droppedInput(h, ld: w, rows: rows, cols: w, module: L.down.name, scratch: scratch, drop: drop, colOffset: j0, fullCols: inter)
        l.a.withUnsafeBufferPointer { a in
            gemm(.none, .transpose, m: rows, n: l.r, k: w, a: x, lda: w, b: a.baseAddress! + j0, ldb: inter,
                 beta: j0 == 0 ? 0 : 1, c: lt.td, ldc: l.r, acrossCores: true)
        }
        return x
    }

    /// The LoRA slot of piece p: pieces of one fused Linear share slot 0.
    private func slot(_ pieces: [(lin: LinearWeight, base: Int)], _ p: Int) -> Int { pieces[p].lin.name == pieces[0].lin.name ? 0 : p }

    /// gate|up of block [j0, j0 + w) into gu (rows × 2w: gate then up), LoRA included from lt.t.
    private func gateUpBlock(_ pieces: [(lin: LinearWeight, base: Int)], n: UnsafePointer<Float>, rows: Int, j0: Int, w: Int,
                             gu: UnsafeMutablePointer<Float>, scratch: ProjectionScratch, lt: MLPLoRAScratch) {
        let d = config.hiddenSize
        let views = pieces.map { $0.lin.window(rows: ($0.base + j0)..<($0.base + j0 + w), cols: 0..<d) }
        projectBase(views, x: n, ldx: d, rows: rows, y: gu, ldy: 2 * w, scratch: scratch, accumulate: false, bias: true)
        for (p, piece) in pieces.enumerated() {
            guard let l = lora[piece.lin.name] else { continue }
            Profiler.shared.measure("lora") {
                l.b.withUnsafeBufferPointer { b in
                    gemm(.none, .transpose, m: rows, n: w, k: l.r, alpha: l.scaling, a: lt.t[slot(pieces, p)], lda: l.r,
                         b: b.baseAddress! + (piece.base + j0) * l.r, ldb: l.r, beta: 1, c: gu + p * w, ldc: 2 * w, acrossCores: true)
                }
            }
        }
    }

    /// h (rows × w) = act(gate)·up of a block's gu (rows × 2w).
    private func activateBlock(_ h: UnsafeMutablePointer<Float>, _ gu: UnsafePointer<Float>, rows: Int, w: Int) {
        Profiler.shared.measure("silu") {
            switch config.activation {
            case .silu: Kernels.siluMul(h, ldh: w, gu, gu + w, ld: 2 * w, rows: rows, cols: w)
            case .geluTanh: Kernels.geluTanhMul(h, ldh: w, gu, gu + w, ld: 2 * w, rows: rows, cols: w)
            }
        }
    }

    /// y (+)= down(act(gate(n))·up(n)) in blocks of `block` intermediate columns (rows × hidden, accumulating onto y
    /// with `accumulate`: the residual). gu and h are the arena's block buffers.
    func mlpForwardBlocked(_ L: Layer, n: UnsafePointer<Float>, rows: Int, block: Int, gu: UnsafeMutablePointer<Float>,
                           h: UnsafeMutablePointer<Float>, y: UnsafeMutablePointer<Float>, accumulate: Bool,
                           scratch: ProjectionScratch, lt: MLPLoRAScratch, drop: LoRADropout?) {
        let d = config.hiddenSize, inter = config.intermediateSize
        let pieces = gateUpPieces(L)
        gateUpLoRAInputs(pieces, n: n, rows: rows, scratch: scratch, lt: lt, drop: drop)
        let dl = lora[L.down.name]
        var j0 = 0
        while j0 < inter {
            let w = min(block, inter - j0)
            gateUpBlock(pieces, n: n, rows: rows, j0: j0, w: w, gu: gu, scratch: scratch, lt: lt)
            activateBlock(h, gu, rows: rows, w: w)
            let dv = L.down.window(rows: 0..<d, cols: j0..<(j0 + w), keepBias: j0 == 0)
            projectBase([dv], x: h, ldx: w, rows: rows, y: y, ldy: d, scratch: scratch, accumulate: accumulate || j0 > 0, bias: true)
            if let l = dl { Profiler.shared.measure("lora") { _ = downLoRAInput(l, L, h: h, rows: rows, j0: j0, w: w, scratch: scratch, lt: lt, drop: drop) } }
            j0 += w
        }
        if let l = dl {
            Profiler.shared.measure("lora") {
                l.b.withUnsafeBufferPointer { b in
                    gemm(.none, .transpose, m: rows, n: d, k: l.r, alpha: l.scaling, a: lt.td, lda: l.r, b: b.baseAddress!, ldb: l.r,
                         beta: 1, c: y, ldc: d, acrossCores: true)
                }
            }
        }
    }

    /// Backward of mlpForwardBlocked: given dy = ∂loss/∂(MLP output) (rows × hidden) and n its input, adds
    /// ∂loss/∂n into dn and the LoRA gradients into grads, recomputing each block's gate|up and SwiGLU product.
    func mlpBackwardBlocked(_ L: Layer, n: UnsafePointer<Float>, dy: UnsafePointer<Float>, dn: UnsafeMutablePointer<Float>, rows: Int,
                            block: Int, gu: UnsafeMutablePointer<Float>, h: UnsafeMutablePointer<Float>,
                            scratch: ProjectionScratch, lt: MLPLoRAScratch, grads: LoRAGradients, drop: LoRADropout?) {
        let d = config.hiddenSize, inter = config.intermediateSize
        let pieces = gateUpPieces(L)
        gateUpLoRAInputs(pieces, n: n, rows: rows, scratch: scratch, lt: lt, drop: drop)
        for p in pieces.indices where slot(pieces, p) == p { if let l = lora[pieces[p].lin.name] { lt.v[p].update(repeating: 0, count: rows * l.r) } }
        let dl = lora[L.down.name]
        if let l = dl {
            // ud = dy·B_down (rows × r)
            l.b.withUnsafeBufferPointer { b in
                gemm(.none, .none, m: rows, n: l.r, k: d, a: dy, lda: d, b: b.baseAddress!, ldb: l.r, c: lt.ud, ldc: l.r, acrossCores: true)
            }
        }
        var j0 = 0
        while j0 < inter {
            let w = min(block, inter - j0)
            gateUpBlock(pieces, n: n, rows: rows, j0: j0, w: w, gu: gu, scratch: scratch, lt: lt)
            activateBlock(h, gu, rows: rows, w: w)
            if let l = dl {
                Profiler.shared.measure("lora") {
                    // td += drop(h_J)·A[:, J]ᵀ; dA[:, J] += s·udᵀ·drop(h_J) — before h_J's buffer takes dh_J.
                    let x = downLoRAInput(l, L, h: h, rows: rows, j0: j0, w: w, scratch: scratch, lt: lt, drop: drop)
                    grads.a[L.down.name]!.withUnsafeMutableBufferPointer { da in
                        gemm(.transpose, .none, m: l.r, n: w, k: rows, alpha: l.scaling, a: lt.ud, lda: l.r, b: x, ldb: w,
                             beta: 1, c: da.baseAddress! + j0, ldc: inter, acrossCores: true)
                    }
                }
            }
            // dh_J = dy·down[:, J] + s·(ud·A[:, J]) ⊙ mask/keep, over h_J's buffer.
            let dh = h
            dh.update(repeating: 0, count: rows * w)
            let dv = L.down.window(rows: 0..<d, cols: j0..<(j0 + w), keepBias: false)
            projectBaseBackward([dv], dy: dy, ldy: d, dx: dh, lddx: w, rows: rows, scratch: scratch)
            if let l = dl {
                Profiler.shared.measure("lora") {
                    l.a.withUnsafeBufferPointer { a in
                        if let dr = drop {
                            let tmp = scratch.tmp!
                            gemm(.none, .none, m: rows, n: w, k: l.r, alpha: l.scaling, a: lt.ud, lda: l.r, b: a.baseAddress! + j0, ldb: inter,
                                 c: tmp, ldc: w, acrossCores: true)
                            dr.apply(tmp, ld: w, rows: rows, cols: w, module: L.down.name, into: dh, ldd: w, accumulate: true,
                                     colOffset: j0, fullCols: inter)
                        } else {
                            gemm(.none, .none, m: rows, n: w, k: l.r, alpha: l.scaling, a: lt.ud, lda: l.r, b: a.baseAddress! + j0, ldb: inter,
                                 beta: 1, c: dh, ldc: w, acrossCores: true)
                        }
                    }
                }
            }
            // ∂/∂(gate|up) of the block over gu (each g, u read before its dg, du is written).
            switch config.activation {
            case .silu:
                Backward.siluMul(dg: gu, du: gu + w, ldd: 2 * w, dh: dh, ldh: w, g: gu, u: gu + w, ld: 2 * w, rows: rows, cols: w)
            case .geluTanh:
                Backward.geluTanhMul(dg: gu, du: gu + w, ldd: 2 * w, dh: dh, ldh: w, g: gu, u: gu + w, ld: 2 * w, rows: rows, cols: w)
            }
            let views = pieces.map { $0.lin.window(rows: ($0.base + j0)..<($0.base + j0 + w), cols: 0..<d, keepBias: false) }
            projectBaseBackward(views, dy: gu, ldy: 2 * w, dx: dn, lddx: d, rows: rows, scratch: scratch)
            for (p, piece) in pieces.enumerated() {
                guard let l = lora[piece.lin.name] else { continue }
                let s = slot(pieces, p)
                Profiler.shared.measure("lora") {
                    l.b.withUnsafeBufferPointer { b in
                        // v += dg_J·B[J] (rows × r); dB[J] += s·dg_Jᵀ·t
                        gemm(.none, .none, m: rows, n: l.r, k: w, a: gu + p * w, lda: 2 * w, b: b.baseAddress! + (piece.base + j0) * l.r,
                             ldb: l.r, beta: 1, c: lt.v[s], ldc: l.r, acrossCores: true)
                    }
                    grads.b[piece.lin.name]!.withUnsafeMutableBufferPointer { db in
                        gemm(.transpose, .none, m: w, n: l.r, k: rows, alpha: l.scaling, a: gu + p * w, lda: 2 * w, b: lt.t[s], ldb: l.r,
                             beta: 1, c: db.baseAddress! + (piece.base + j0) * l.r, ldc: l.r, acrossCores: true)
                    }
                }
            }
            j0 += w
        }
        if let l = dl {
            Profiler.shared.measure("lora") {
                grads.b[L.down.name]!.withUnsafeMutableBufferPointer { db in
                    gemm(.transpose, .none, m: d, n: l.r, k: rows, alpha: l.scaling, a: dy, lda: d, b: lt.td, ldb: l.r,
                         beta: 1, c: db.baseAddress!, ldc: l.r, acrossCores: true)
                }
            }
        }
        // gate/up modules: dA += s·vᵀ·drop(n); dn += s·(v·A) ⊙ mask/keep.
        for p in pieces.indices where slot(pieces, p) == p {
            let name = pieces[p].lin.name
            guard let l = lora[name] else { continue }
            Profiler.shared.measure("lora") {
                let x = droppedInput(n, ld: d, rows: rows, cols: d, module: name, scratch: scratch, drop: drop)
                grads.a[name]!.withUnsafeMutableBufferPointer { da in
                    gemm(.transpose, .none, m: l.r, n: d, k: rows, alpha: l.scaling, a: lt.v[p], lda: l.r, b: x, ldb: d,
                         beta: 1, c: da.baseAddress!, ldc: d, acrossCores: true)
                }
                l.a.withUnsafeBufferPointer { a in
                    if let dr = drop {
                        let tmp = scratch.tmp!
                        gemm(.none, .none, m: rows, n: d, k: l.r, alpha: l.scaling, a: lt.v[p], lda: l.r, b: a.baseAddress!, ldb: d,
                             c: tmp, ldc: d, acrossCores: true)
                        dr.apply(tmp, ld: d, rows: rows, cols: d, module: name, into: dn, ldd: d, accumulate: true)
                    } else {
                        gemm(.none, .none, m: rows, n: d, k: l.r, alpha: l.scaling, a: lt.v[p], lda: l.r, b: a.baseAddress!, ldb: d,
                             beta: 1, c: dn, ldc: d, acrossCores: true)
                    }
                }
            }
        }
    }
}

/// The blocked MLP's LoRA intermediates (rows × max r each): gate/up's x·Aᵀ and their gradients' dg·B per
/// piece, down's h·Aᵀ (collected over blocks) and dy·B.
final class MLPLoRAScratch {
    let t: [UnsafeMutablePointer<Float>], v: [UnsafeMutablePointer<Float>]
    let td, ud: UnsafeMutablePointer<Float>

    init(rows: Int, maxR: Int, pool: BufferPool) {
        let n = rows * max(1, maxR)
        t = [pool.make(n), pool.make(n)]
        v = [pool.make(n), pool.make(n)]
        td = pool.make(n)
        ud = pool.make(n)
    }
}
