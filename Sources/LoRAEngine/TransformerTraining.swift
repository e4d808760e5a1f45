// TransformerTraining: the training step of the LoRA model: the decoder layers' forward keeping each layer's
// input, mid-residual, roped q/k/v, attention output and gate/up projection (DecoderLayer.swift), the head's
// loss and gradient (Head.swift), then each layer's backward, producing gradients for LoRA A and B only (frozen
// weights of any dtype or NF4 pass gradients to activations). With checkpointing only each layer's input is
// kept and the layer is recomputed once before its backward, up to its gate/up projection. LoRA dropout masks are regenerated from (seed,
// step, micro-batch, module, element).

/// Gradients of every LoRA module's A and B (same shapes), accumulated across micro-batches.
public final class LoRAGradients: @unchecked Sendable {
    public var a: [String: [Float]]
    public var b: [String: [Float]]
    /// DoRA modules' magnitude gradients [out] (no entry for plain LoRA modules).
    public var m: [String: [Float]]

    public init(for lora: [String: LoRALayer]) {
        a = lora.mapValues { [Float](repeating: 0, count: $0.a.count) }
        b = lora.mapValues { [Float](repeating: 0, count: $0.b.count) }
        m = lora.compactMapValues { $0.magnitude.map { [Float](repeating: 0, count: $0.count) } }
    }

    public func zero() {
        for k in a.keys { a[k]!.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }
        for k in b.keys { b[k]!.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }
        for k in m.keys { m[k]!.withUnsafeMutableBufferPointer { $0.update(repeating: 0) } }
    }

    /// Every gradient tensor in one fixed order: per module (sorted) A, B, then the magnitude when DoRA.
    public var orderedKeys: [(module: String, which: String)] {
        a.keys.sorted().flatMap { k in [(k, "a"), (k, "b")] + (m[k] != nil ? [(k, "m")] : []) }
    }

    public subscript(module: String, which: String) -> [Float] {
        get { which == "a" ? a[module]! : which == "b" ? b[module]! : m[module]! }
        set {
            switch which {
            case "a": a[module] = newValue
            case "b": b[module] = newValue
            default: m[module] = newValue
            }
        }
    }

    /// √(Σ g²) over all A, B (and magnitude) gradients (Double accumulation).
    public var globalNorm: Double {
        var s = 0.0
        for v in a.values { for x in v { s += Double(x) * Double(x) } }
        for v in b.values { for x in v { s += Double(x) * Double(x) } }
        for v in m.values { for x in v { s += Double(x) * Double(x) } }
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
    /// Rows (tokens) of the micro-batch before the first one this pass sees: an MPI rank computing its slice of a
    /// global micro-batch (padded to the global length) draws the mask the single process draws for those rows.
    public var rowOffset: UInt64

    public init(rate: Float, seed: UInt64, step: UInt64, microBatch: UInt64 = 0, rowOffset: UInt64 = 0) {
        self.rate = rate
        self.seed = seed
        self.step = step
        self.microBatch = microBatch
        self.rowOffset = rowOffset
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
    /// rows × cols (row stride ld). Rows are split across cores. `colOffset` and `fullCols`: x is columns
    /// [colOffset, colOffset + cols) of the module's input of fullCols columns (a block of an MLP's intermediate
    /// dimension), and draws that block's part of the whole input's mask.
    func apply(_ x: UnsafePointer<Float>, ld: Int, rows: Int, cols: Int, module: String,
               into dst: UnsafeMutablePointer<Float>, ldd: Int? = nil, accumulate: Bool = false, colOffset: Int = 0, fullCols: Int? = nil) {
        let k = key(module)
        let k0 = UInt32(truncatingIfNeeded: k), k1 = UInt32(truncatingIfNeeded: k >> 32)
        let t = threshold, scale = 1 / (1 - rate)
        let ldd = ldd ?? cols
        Parallel.forRanges(rows, grain: max(1, 8192 / max(1, cols))) { r in
            for i in r {
                let src = x + i * ld, out = dst + i * ldd
                let e0 = (UInt64(i) &+ rowOffset) &* UInt64(fullCols ?? cols) &+ UInt64(colOffset)
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
        let rows: Int, seq: Int, tCap: Int, dropout: Bool
        let pool = BufferPool()
        var xIn: [UnsafeMutablePointer<Float>] = [], xMid: [UnsafeMutablePointer<Float>] = [], qkv: [UnsafeMutablePointer<Float>] = []
        var att: [UnsafeMutablePointer<Float>] = [], rstd1: [UnsafeMutablePointer<Float>] = [], rstd2: [UnsafeMutablePointer<Float>] = []
        var gu: [UnsafeMutablePointer<Float>] = []
        /// qwen3: q|k before their head norms and the norms' rstd, per layer (nil for the other families).
        var qkPre: [UnsafeMutablePointer<Float>?] = [], qkRstd: [UnsafeMutablePointer<Float>?] = []
        /// gemma: the attention and MLP outputs before their sandwich norms, and the norms' rstd, per layer.
        var ao: [UnsafeMutablePointer<Float>?] = [], mo: [UnsafeMutablePointer<Float>?] = []
        var rstd3: [UnsafeMutablePointer<Float>?] = [], rstd4: [UnsafeMutablePointer<Float>?] = []
        /// ∂/∂ a sandwich-normed branch's input (gemma; one float otherwise).
        let dbr: UnsafeMutablePointer<Float>
        let xFinal, rstdF, nF, dnF, n, h, dh, dx, dn, dqkv, datt, p, dp, head, gathered: UnsafeMutablePointer<Float>
        let scratch: ProjectionScratch
        let checkpointed: Bool
        /// The MLP's block width when it runs blocked (BlockedMLP.swift), its LoRA scratch, and the head's rows per chunk.
        let mlpBlock: Int?
        let mlpLoRA: MLPLoRAScratch?
        let headChunk: Int

        /// With `checkpointed`, only each layer's input is kept; the other per-layer activations share one set of
        /// buffers that the backward pass refills by recomputing the layer.
        /// `mlpBlock`: the MLP's block width (mlpBlockWidth); below the intermediate size, gate|up is not kept for
        /// backward and one arena holds a block's gate|up and SwiGLU product, or the head's logit chunk.
        init(config c: ModelConfig, rows: Int, seq: Int, maxR: Int, dropout: Bool, mlpBlock: Int, checkpointed: Bool = false) {
            self.rows = rows
            self.seq = seq
            self.checkpointed = checkpointed
            self.dropout = dropout
            tCap = rows * max(1, maxR)
            let d = c.hiddenSize, qd = c.numHeads * c.headDim, kvd = c.numKVHeads * c.headDim, i = c.intermediateSize
            let z = pool.make
            let blocked = mlpBlock < i
            headChunk = Transformer.trainHeadChunk(config: c, rows: rows, blocked: blocked)
            self.mlpBlock = blocked ? mlpBlock : nil
            mlpLoRA = blocked ? MLPLoRAScratch(rows: rows, maxR: maxR, pool: pool) : nil
            let arena = blocked ? z(Transformer.mlpArena(config: c, rows: rows, block: mlpBlock, headChunk: headChunk)) : nil
            for l in 0..<c.numLayers {
                xIn.append(z(rows * d))
                if checkpointed && l > 0 {
                    xMid.append(xMid[0]); qkv.append(qkv[0]); att.append(att[0]); rstd1.append(rstd1[0]); rstd2.append(rstd2[0])
                    gu.append(arena ?? gu[0]); qkPre.append(qkPre[0]); qkRstd.append(qkRstd[0])
                    ao.append(ao[0]); mo.append(mo[0]); rstd3.append(rstd3[0]); rstd4.append(rstd4[0])
                } else {
                    xMid.append(z(rows * d)); qkv.append(z(rows * (qd + 2 * kvd))); att.append(z(rows * qd))
                    rstd1.append(z(rows)); rstd2.append(z(rows)); gu.append(arena ?? z(rows * 2 * i))
                    qkPre.append(c.qkNorm ? z(rows * (qd + kvd)) : nil)
                    qkRstd.append(c.qkNorm ? z(rows * (c.numHeads + c.numKVHeads)) : nil)
                    ao.append(c.sandwichNorms ? z(rows * d) : nil); mo.append(c.sandwichNorms ? z(rows * d) : nil)
                    rstd3.append(c.sandwichNorms ? z(rows) : nil); rstd4.append(c.sandwichNorms ? z(rows) : nil)
                }
            }
            dbr = z(c.sandwichNorms ? rows * d : 1)
            // The final norm's output and gradient live in the layers' n and dn, free while the head runs.
            n = z(rows * d); dn = z(rows * d)
            xFinal = z(rows * d); rstdF = z(rows); nF = n; dnF = dn
            if let a = arena {
                // A block's gate|up, then its SwiGLU product, which its gradient overwrites; or the logit chunk.
                h = a + rows * 2 * mlpBlock; dh = h; head = a
            } else {
                // The SwiGLU product h and its gradient dh are free while the head runs (h is recomputed before each
                // use, dh zeroed), so the head's logit chunk shares their memory.
                let swiglu = z(max(2 * rows * i, headChunk * c.vocabSize))
                h = swiglu; dh = swiglu + rows * i; head = swiglu
            }
            dx = z(rows * d); dqkv = z(rows * (qd + 2 * kvd)); datt = z(rows * qd)
            p = z(Transformer.attentionScratch(config: c, seq: seq)); dp = z(Transformer.attentionScratch(config: c, seq: seq))
            gathered = z(headChunk * d)
            scratch = ProjectionScratch(config: c, rows: rows, maxR: maxR, pool: pool, backward: true, dropout: dropout,
                                        mlpBlock: blocked ? mlpBlock : nil)
        }

        /// Layer l's buffers: it reads xIn[l] and writes its output into xIn[l+1] (the last into xFinal).
        func layer(_ l: Int) -> LayerBuffers {
            LayerBuffers(x: xIn[l], xm: xMid[l], out: l + 1 < xIn.count ? xIn[l + 1] : xFinal, n: n, qkv: qkv[l], att: att[l],
                         gu: gu[l], h: h, rstd1: rstd1[l], rstd2: rstd2[l], qkPre: qkPre[l], qkRstd: qkRstd[l],
                         ao: ao[l], mo: mo[l], rstd3: rstd3[l], rstd4: rstd4[l], mlpBlock: mlpBlock, mlpLoRA: mlpLoRA)
        }
    }

    /// Bytes of the training workspace for `rows` rows (batch × sequence), or nil when that overflows: the
    /// per-layer saved activations (only layer inputs with `checkpointed`), the shared per-row buffers, attention
    /// scratch per core, and the SwiGLU buffers or the blocked MLP's arena, which the head's logit chunk shares
    /// (`dora`: the adapter has DoRA modules, so the MLP is not blocked). Checked against memory before lora-train
    /// allocates it.
    public static func trainWorkspaceBytes(config c: ModelConfig, rows: Int, seq: Int, maxR: Int, checkpointed: Bool,
                                           dora: Bool = false) -> Int? {
        let d = c.hiddenSize, qd = c.numHeads * c.headDim, ldqkv = qd + 2 * c.numKVHeads * c.headDim
        let i = c.intermediateSize
        let block = mlpBlockWidth(config: c, rows: rows, dora: dora), blocked = block < i
        let headChunk = trainHeadChunk(config: c, rows: rows, blocked: blocked)
        let qkNormSaved = c.qkNorm ? qd + c.numKVHeads * c.headDim + c.numHeads + c.numKVHeads : 0
        let sandwichSaved = c.sandwichNorms ? 2 * d + 2 : 0
        let saved = 2 * d + ldqkv + qd + 2 + (blocked ? 0 : 2 * i) + qkNormSaved + sandwichSaved
        let perLayer = checkpointed ? d : saved
        guard let perRow = Limits.sum(Limits.product(perLayer, c.numLayers), checkpointed ? saved : 0,
                                      4 * d + 2 * ldqkv + qd + (blocked ? 9 : 3) * max(1, maxR) + (c.sandwichNorms ? d : 0)),
              let swiglu = blocked ? Limits.product(rows, 3, block) : Limits.product(rows, 2, i),
              let logits = Limits.product(headChunk, c.vocabSize) else { return nil }
        // h and dh and the head's logit chunk share one buffer (TrainWorkspace).
        return Limits.sum(Limits.product(rows, perRow, 4),
                          Limits.product(Transformer.attentionScratch(config: c, seq: seq), 2, 4),
                          Limits.product(max(swiglu, logits), 4),
                          Limits.product(headChunk, d, 4))
    }

    /// Rows of the head per chunk in training (unless the MLP is blocked: trainHeadChunk): its logits (rows ×
    /// vocabulary) share the SwiGLU buffers, so on long sequences they cost nothing extra; 256 rows run the vocabulary-wide products ~12% faster than 128
    /// (oneDNN, 151,936 × 896 and × 3,584).
    public static let trainHeadChunkRows = 256

    public struct StepResult: Sendable {
        public var nllSum: Double
        public var tokens: Int
    }

    /// Forward and backward over one micro-batch. The loss is Σ NLL · lossScale (e.g. 1/scored tokens);
    /// gradients of that loss are added into `grads`. Throws when a token id is outside the vocabulary.
    public func trainStep(_ batch: TokenBatch, lossScale: Float, grads: LoRAGradients, dropout: LoRADropout? = nil,
                          checkpointLayers: Bool = false) throws -> StepResult {
        let c = config
        let rows = batch.batch * batch.seq
        guard rows > 0 else { throw ModelError.emptyBatch(batch: batch.batch, seq: batch.seq) }
        let maxR = lora.values.map(\.r).max() ?? 1
        let drop = (dropout?.rate ?? 0) > 0 ? dropout : nil
        if trainWorkspace == nil || trainWorkspace!.rows != rows || trainWorkspace!.seq != batch.seq
            || trainWorkspace!.tCap < rows * maxR || (drop != nil && !trainWorkspace!.dropout)
            || trainWorkspace!.checkpointed != checkpointLayers || (trainWorkspace!.mlpBlock ?? c.intermediateSize) != mlpBlockWidth(rows: rows) {
            trainWorkspace = nil  // free the old buffers before allocating the new ones
            trainWorkspace = TrainWorkspace(config: c, rows: rows, seq: batch.seq, maxR: maxR, dropout: drop != nil,
                                            mlpBlock: mlpBlockWidth(rows: rows), checkpointed: checkpointLayers)
        }
        let ws = trainWorkspace!
        let d = c.hiddenSize
        let positions = batch.positions
        ensureRope(maxPosition: Int(positions.max() ?? 0))
        let L = layers.count

        try embed(batch.tokens, seq: batch.seq, into: ws.xIn[0])
        func forwardLayer(_ l: Int, savedOnly: Bool = false) {
            layerForward(l, ws.layer(l), rows: rows, positions: positions, scratch: ws.scratch, drop: drop, savedOnly: savedOnly) { qkv, att in
                attention(qkv: qkv, out: att, batch: batch, scores: ws.p, window: layers[l].window)
            }
        }
        for l in 0..<L { forwardLayer(l) }
        finalNorm.withUnsafeBufferPointer { w in
            Kernels.rmsNorm(ws.nF, ws.xFinal, w.baseAddress!, rows: rows, dim: d, eps: Float(c.rmsNormEps), rstd: ws.rstdF)
        }
        let targets = batch.shiftedTargets
        let (nll, count) = headPass(normed: ws.nF, rows: (0..<rows).filter { targets[$0] >= 0 }, targets: targets, out: ws.head,
                                    gathered: ws.gathered, chunk: ws.headChunk,
                                    mode: .backward(lossScale: lossScale, dn: ws.dnF, totalRows: rows))
        // d(final norm) → gradient of the last layer's output, kept in ws.dx.
        ws.dx.update(repeating: 0, count: rows * d)
        finalNorm.withUnsafeBufferPointer { w in
            Backward.rmsNorm(ws.dx, ws.dnF, ws.xFinal, w.baseAddress!, ws.rstdF, rows: rows, dim: d)
        }
        for l in stride(from: L - 1, through: 0, by: -1) {
            if checkpointLayers && l < L - 1 {
                // Refill the shared buffers with this layer's activations; its output (xIn[l+1] or xFinal), which
                // nothing reads any more, is not recomputed. The last layer's are still there from the forward
                // (the head and the final norm have buffers of their own).
                Profiler.shared.measure("recompute layer") { forwardLayer(l, savedOnly: true) }
            }
            layerBackward(l, ws, batch, positions, grads, drop)
        }
        return StepResult(nllSum: nll, tokens: count)
    }
}
