// Transformer: the Llama / Mistral / Qwen2 decoder forward pass in fp32 (formats.md §7, transformers
// modeling_llama.py): embeddings, RMSNorm, RoPE, causal GQA attention with right padding, SwiGLU MLP, tied or
// untied head, with LoRA applied unmerged as two skinny GEMMs. One GEMM per projection over batch × sequence
// (q/k/v fused, gate/up fused); the head and cross-entropy run in row chunks so tokens × vocab never exists.
import Foundation

/// Tokens of a batch, right-padded to `seq`. `labels` follow transformers: position t's logits predict
/// labels[t + 1]; a label below 0 (−100) is ignored.
public struct TokenBatch: Sendable {
    public var tokens: [Int32]
    public var labels: [Int32]
    public var lengths: [Int]
    public let batch: Int
    public let seq: Int
    /// Packed rows: for each position, the index (within its row) where its example starts, so attention stays
    /// inside the example; and positions restarting at 0 for each example. Nil: one example per row.
    public var segmentStarts: [Int32]?
    public var positionIds: [Int32]?

    public init(tokens: [Int32], labels: [Int32], lengths: [Int], batch: Int, seq: Int,
                segmentStarts: [Int32]? = nil, positionIds: [Int32]? = nil) {
        precondition(tokens.count == batch * seq && labels.count == batch * seq && lengths.count == batch)
        precondition(segmentStarts == nil || segmentStarts!.count == batch * seq)
        precondition(positionIds == nil || positionIds!.count == batch * seq)
        self.tokens = tokens
        self.labels = labels
        self.lengths = lengths
        self.batch = batch
        self.seq = seq
        self.segmentStarts = segmentStarts
        self.positionIds = positionIds
    }

    /// Position of each token for RoPE.
    public var positions: [Int32] { positionIds ?? (0..<(batch * seq)).map { Int32($0 % seq) } }

    /// First key position query (b, i) may attend to.
    @inline(__always)
    func firstKey(_ b: Int, _ i: Int) -> Int { segmentStarts.map { Int($0[b * seq + i]) } ?? 0 }

    /// The target of each position: labels shifted left by one within its row, −100 at the row's end.
    public var shiftedTargets: [Int32] {
        var t = [Int32](repeating: -100, count: batch * seq)
        for b in 0..<batch {
            for i in 0..<(seq - 1) { t[b * seq + i] = labels[b * seq + i + 1] }
        }
        return t
    }
}

/// LoRA weights of one module in the form the engine applies: y += scaling · (x·Aᵀ)·Bᵀ.
public struct LoRALayer: Sendable {
    public var r: Int
    public var scaling: Float
    public var a: [Float]   // [r, in]
    public var b: [Float]   // [out, r]
}

public final class Transformer: @unchecked Sendable {
    public let config: ModelConfig
    let layers: [Layer]
    let embedding: [Float]     // [vocab, hidden] fp32
    let headWeight: [Float]?   // [vocab, hidden] when untied
    let finalNorm: [Float]
    public private(set) var lora: [String: LoRALayer] = [:]
    var rope: RopeTables

    struct Layer {
        let prefix: String
        let inputNorm: [Float]
        let postNorm: [Float]
        let q, k, v, o, gate, up, down: LinearWeight
    }

    public init(model: ModelDir) throws {
        let c = model.config
        config = c
        let s = model.weights
        func vector(_ name: String, _ n: Int) throws -> [Float] {
            let t = try s.tensor(name)
            guard t.numel == n, t.dtype.isFloatingPoint else {
                throw ModelError.shapeMismatch(dir: model.path, tensor: name, found: t.shape, expected: [n])
            }
            return t.floats()
        }
        func matrix(_ name: String, _ rows: Int, _ cols: Int) throws -> [Float] {
            let t = try s.tensor(name)
            guard t.shape == [rows, cols], t.dtype.isFloatingPoint else {
                throw ModelError.shapeMismatch(dir: model.path, tensor: name, found: t.shape, expected: [rows, cols])
            }
            return t.floats()
        }
        embedding = try matrix("model.embed_tokens.weight", c.vocabSize, c.hiddenSize)
        if s.contains("lm_head.weight") && !c.tieWordEmbeddings {
            headWeight = try matrix("lm_head.weight", c.vocabSize, c.hiddenSize)
        } else if !c.tieWordEmbeddings {
            throw ModelError.missingWeight(dir: model.path, tensor: "lm_head.weight")
        } else {
            headWeight = nil
        }
        finalNorm = try vector("model.norm.weight", c.hiddenSize)
        var ls: [Layer] = []
        let shapes = Dictionary(uniqueKeysWithValues: c.layerLinears().map { ($0.name, ($0.out, $0.in)) })
        for l in 0..<c.numLayers {
            let p = "model.layers.\(l)."
            func lin(_ m: String, bias: Bool) throws -> LinearWeight {
                let (o, i) = shapes[m]!
                return try LinearWeight(name: p + m, store: s, out: o, in: i, hasBias: bias)
            }
            ls.append(Layer(
                prefix: "model.layers.\(l)",
                inputNorm: try vector(p + "input_layernorm.weight", c.hiddenSize),
                postNorm: try vector(p + "post_attention_layernorm.weight", c.hiddenSize),
                q: try lin("self_attn.q_proj", bias: c.attentionBias), k: try lin("self_attn.k_proj", bias: c.attentionBias),
                v: try lin("self_attn.v_proj", bias: c.attentionBias), o: try lin("self_attn.o_proj", bias: c.oProjBias),
                gate: try lin("mlp.gate_proj", bias: c.mlpBias), up: try lin("mlp.up_proj", bias: c.mlpBias),
                down: try lin("mlp.down_proj", bias: c.mlpBias)))
        }
        layers = ls
        rope = RopeTables(config: c, positions: min(c.maxPositionEmbeddings, 4096))
    }

    // MARK: adapters

    /// Attaches an adapter (validated against the model's Linears, every mismatch reported at once).
    public func attach(_ adapter: Adapter, linears: [LinearModule]) throws {
        try adapter.validate(against: linears)
        var m: [String: LoRALayer] = [:]
        for n in adapter.moduleNames {
            let w = adapter.modules[n]!
            m[n] = LoRALayer(r: w.r, scaling: Float(adapter.config.scaling(for: n)), a: w.a, b: w.b)
        }
        lora = m
    }

    public func detach() { lora = [:] }

    /// Replaces one module's LoRA weights (the optimizer writes updated A and B through this).
    public func setLoRA(_ module: String, _ l: LoRALayer) { lora[module] = l }

    // MARK: forward

    public struct Output {
        public var nllSum: Double
        public var tokens: Int
        public var logits: [Float]?   // [batch·seq, vocab] when requested (tests, small vocab)
        public var finalHidden: [Float]?
    }

    /// Buffers sized once per (rows, seq); no allocation inside the layer loop.
    final class Workspace {
        let rows: Int
        var x, n, qkv, att, gu, h: [Float]
        var w: [Float]
        var t: [Float]
        var scores: [Float]
        var head: [Float]
        init(config c: ModelConfig, rows: Int, seq: Int, maxLoRARank: Int, headChunk: Int) {
            self.rows = rows
            let d = c.hiddenSize, qd = c.numHeads * c.headDim, kvd = c.numKVHeads * c.headDim, i = c.intermediateSize
            x = .init(repeating: 0, count: rows * d)
            n = .init(repeating: 0, count: rows * d)
            qkv = .init(repeating: 0, count: rows * (qd + 2 * kvd))
            att = .init(repeating: 0, count: rows * max(qd, d))
            gu = .init(repeating: 0, count: rows * 2 * i)
            h = .init(repeating: 0, count: rows * max(i, d))
            let maxW = max((qd + 2 * kvd) * d, qd * d, 2 * i * d, i * d)
            w = .init(repeating: 0, count: maxW)
            t = .init(repeating: 0, count: rows * max(1, maxLoRARank))
            scores = .init(repeating: 0, count: Transformer.attentionScratch(seq: seq))
            head = .init(repeating: 0, count: headChunk * c.vocabSize)
        }
    }
    var workspace: Workspace?
    var trainWorkspace: TrainWorkspace?

    public static let headChunkRows = 128

    public func forward(_ batch: TokenBatch, wantLogits: Bool = false, wantHidden: Bool = false) -> Output {
        let c = config
        let rows = batch.batch * batch.seq
        let maxR = lora.values.map(\.r).max() ?? 1
        if workspace == nil || workspace!.rows != rows || workspace!.scores.count != Transformer.attentionScratch(seq: batch.seq)
            || workspace!.t.count < rows * maxR {
            workspace = Workspace(config: c, rows: rows, seq: batch.seq, maxLoRARank: maxR, headChunk: min(rows, Transformer.headChunkRows))
        }
        if batch.seq > rope.positions { rope = RopeTables(config: c, positions: batch.seq) }
        let ws = workspace!
        let d = c.hiddenSize
        let positions = batch.positions

        // Embeddings.
        embedding.withUnsafeBufferPointer { e in
            ws.x.withUnsafeMutableBufferPointer { x in
                for r in 0..<rows {
                    let tok = Int(batch.tokens[r])
                    precondition(tok >= 0 && tok < c.vocabSize, "token id \(tok) out of range")
                    (x.baseAddress! + r * d).update(from: e.baseAddress! + tok * d, count: d)
                }
            }
        }
        let hd = c.headDim, qd = c.numHeads * hd, kvd = c.numKVHeads * hd
        let group = c.numHeads / c.numKVHeads, scale = 1 / Float(hd).squareRoot()
        for layer in layers {
            runLayer(layer, ws, rows: rows, positions: positions) { qkv, att in
                ws.scores.withUnsafeMutableBufferPointer {
                    attention(qkv: qkv, ld: qd + 2 * kvd, out: att, batch: batch, T: batch.seq, hd: hd, qd: qd, kvd: kvd,
                              group: group, scale: scale, scores: $0.baseAddress!)
                }
            }
        }

        // Final norm, then the head and cross-entropy in row chunks.
        ws.x.withUnsafeBufferPointer { x in
            ws.n.withUnsafeMutableBufferPointer { n in
                finalNorm.withUnsafeBufferPointer { w in
                    Kernels.rmsNorm(n.baseAddress!, x.baseAddress!, w.baseAddress!, rows: rows, dim: d, eps: Float(c.rmsNormEps))
                }
            }
        }
        let targets = batch.shiftedTargets
        var nll = 0.0, count = 0
        var logits: [Float]? = wantLogits ? [Float](repeating: 0, count: rows * c.vocabSize) : nil
        // Only scored rows go through the head (all rows when logits are wanted).
        let scored: [Int] = wantLogits ? Array(0..<rows) : (0..<rows).filter { targets[$0] >= 0 }
        let headW = headWeight ?? embedding
        let chunk = min(rows, Transformer.headChunkRows)
        var gathered = [Float](repeating: 0, count: chunk * d)
        var chunkTargets = [Int32](repeating: -100, count: chunk)
        headW.withUnsafeBufferPointer { hw in
            ws.n.withUnsafeBufferPointer { n in
                ws.head.withUnsafeMutableBufferPointer { out in
                    gathered.withUnsafeMutableBufferPointer { g in
                        var i0 = 0
                        while i0 < scored.count {
                            let m = min(chunk, scored.count - i0)
                            for k in 0..<m {
                                let r = scored[i0 + k]
                                (g.baseAddress! + k * d).update(from: n.baseAddress! + r * d, count: d)
                                chunkTargets[k] = targets[r]
                            }
                            Profiler.shared.measure("gemm head", flops: 2.0 * Double(m * c.vocabSize * d)) {
                                gemm(.none, .transpose, m: m, n: c.vocabSize, k: d, a: g.baseAddress!, lda: d,
                                     b: hw.baseAddress!, ldb: d, c: out.baseAddress!, ldc: c.vocabSize)
                            }
                            if logits != nil {
                                logits!.withUnsafeMutableBufferPointer { l in
                                    (l.baseAddress! + scored[i0] * c.vocabSize).update(from: out.baseAddress!, count: m * c.vocabSize)
                                }
                            }
                            let (s, k) = Profiler.shared.measure("cross-entropy") {
                                chunkTargets.withUnsafeBufferPointer { tg in
                                    Kernels.crossEntropy(out.baseAddress!, rows: m, vocab: c.vocabSize, targets: tg.baseAddress!)
                                }
                            }
                            nll += s
                            count += k
                            i0 += m
                        }
                    }
                }
            }
        }
        return Output(nllSum: nll, tokens: count, logits: logits, finalHidden: wantHidden ? ws.n : nil)
    }

    /// y (row stride ldy) = x·Wᵀ (+ bias) (+ LoRA) for Linears sharing the input, stacked along the output
    /// (q/k/v, gate/up): their weights are expanded one after another and multiplied in one GEMM.
    func project(_ lins: [LinearWeight], x: UnsafePointer<Float>, ldx: Int, rows: Int,
                 y: UnsafeMutablePointer<Float>, ldy: Int, ws: Workspace, accumulate: Bool = false) {
        let prof = Profiler.shared
        let inF = lins[0].inFeatures
        let outTotal = lins.reduce(0) { $0 + $1.outFeatures }
        if rows <= LinearWeight.directRows {
            prof.measure("gemv linear", flops: 2.0 * Double(rows * outTotal * inF)) {
                var col = 0
                for lin in lins {
                    lin.multiplyDirect(x: x, ldx: ldx, rows: rows, y: y + col, ldy: ldy, accumulate: accumulate)
                    col += lin.outFeatures
                }
            }
        } else {
        ws.w.withUnsafeMutableBufferPointer { w in
            prof.measure("expand weights") {
                var off = 0
                for lin in lins { lin.expand(into: w.baseAddress! + off * inF); off += lin.outFeatures }
            }
            prof.measure("gemm linear", flops: 2.0 * Double(rows * outTotal * inF)) {
                gemm(.none, .transpose, m: rows, n: outTotal, k: inF, a: x, lda: ldx,
                     b: w.baseAddress!, ldb: inF, beta: accumulate ? 1 : 0, c: y, ldc: ldy)
            }
        }
        }
        var col = 0
        for lin in lins {
            let yc = y + col
            col += lin.outFeatures
            if let b = lin.bias { b.withUnsafeBufferPointer { Kernels.addBias(yc, ld: ldy, rows: rows, cols: lin.outFeatures, $0.baseAddress!) } }
            guard let l = lora[lin.name] else { continue }
            prof.measure("lora") {
                ws.t.withUnsafeMutableBufferPointer { t in
                    l.a.withUnsafeBufferPointer { a in
                        gemm(.none, .transpose, m: rows, n: l.r, k: inF, a: x, lda: ldx, b: a.baseAddress!, ldb: inF, c: t.baseAddress!, ldc: l.r)
                    }
                    l.b.withUnsafeBufferPointer { b in
                        gemm(.none, .transpose, m: rows, n: lin.outFeatures, k: l.r, alpha: l.scaling, a: t.baseAddress!, lda: l.r,
                             b: b.baseAddress!, ldb: l.r, beta: 1, c: yc, ldc: ldy)
                    }
                }
            }
        }
    }

    /// One decoder layer over `rows` rows of ws.x, in place. `attend(qkv, att)` turns the projected, rotated
    /// q|k|v rows (stride qd + 2·kvd) into attention outputs (stride qd): over the batch itself (`forward`) or
    /// over a key/value cache (`decode`).
    func runLayer(_ L: Layer, _ ws: Workspace, rows: Int, positions: [Int32],
                  attend: (_ qkv: UnsafeMutablePointer<Float>, _ att: UnsafeMutablePointer<Float>) -> Void) {
        let c = config
        let d = c.hiddenSize, hd = c.headDim
        let qd = c.numHeads * hd, kvd = c.numKVHeads * hd, ldqkv = qd + 2 * kvd
        let inter = c.intermediateSize
        let eps = Float(c.rmsNormEps)

        ws.x.withUnsafeMutableBufferPointer { xb in
        ws.n.withUnsafeMutableBufferPointer { nb in
        ws.qkv.withUnsafeMutableBufferPointer { qkvb in
        ws.att.withUnsafeMutableBufferPointer { attb in
        ws.gu.withUnsafeMutableBufferPointer { gub in
        ws.h.withUnsafeMutableBufferPointer { hb in
            let x = xb.baseAddress!, n = nb.baseAddress!, qkv = qkvb.baseAddress!, att = attb.baseAddress!
            let gu = gub.baseAddress!, h = hb.baseAddress!
            // Attention block.
            L.inputNorm.withUnsafeBufferPointer { Kernels.rmsNorm(n, x, $0.baseAddress!, rows: rows, dim: d, eps: eps) }
            project([L.q, L.k, L.v], x: n, ldx: d, rows: rows, y: qkv, ldy: ldqkv, ws: ws)
            positions.withUnsafeBufferPointer { pos in
                rope.cos.withUnsafeBufferPointer { cs in
                    rope.sin.withUnsafeBufferPointer { sn in
                        Kernels.rope(qkv, ld: ldqkv, rows: rows, heads: c.numHeads, headDim: hd, positions: pos.baseAddress!, cos: cs.baseAddress!, sin: sn.baseAddress!)
                        Kernels.rope(qkv + qd, ld: ldqkv, rows: rows, heads: c.numKVHeads, headDim: hd, positions: pos.baseAddress!, cos: cs.baseAddress!, sin: sn.baseAddress!)
                    }
                }
            }
            Profiler.shared.measure("attention") { attend(qkv, att) }
            project([L.o], x: att, ldx: qd, rows: rows, y: x, ldy: d, ws: ws, accumulate: true)  // residual
            // MLP block.
            L.postNorm.withUnsafeBufferPointer { Kernels.rmsNorm(n, x, $0.baseAddress!, rows: rows, dim: d, eps: eps) }
            project([L.gate, L.up], x: n, ldx: d, rows: rows, y: gu, ldy: 2 * inter, ws: ws)
            Profiler.shared.measure("silu") { Kernels.siluMul(h, ldh: inter, gu, gu + inter, ld: 2 * inter, rows: rows, cols: inter) }
            project([L.down], x: h, ldx: inter, rows: rows, y: x, ldy: d, ws: ws, accumulate: true)  // residual
        }}}}}}
    }

    /// Causal attention per (sequence, head): S = Q·Kᵀ/√d over keys j ≤ i and j < length, softmax, O = S·V.
    /// Query rows go in blocks that multiply only the keys they can see (the causal triangle, not the square).
    /// Jobs are (sequence, KV head) — the query heads of a GQA group together, so backward's dK/dV sums have one
    /// writer — spread over the cores, each job's small GEMMs single-threaded on its own core.
    public static let attentionBlock = 64

    /// Floats of score scratch the attention passes need: one (query block × keys) matrix per worker.
    public static func attentionScratch(seq: Int) -> Int { Parallel.cores * min(seq, attentionBlock) * seq }

    func attention(qkv: UnsafeMutablePointer<Float>, ld: Int, out: UnsafeMutablePointer<Float>, batch: TokenBatch,
                   T: Int, hd: Int, qd: Int, kvd: Int, group: Int, scale: Float, scores s: UnsafeMutablePointer<Float>) {
        let kvHeads = config.numKVHeads
        let blk = Transformer.attentionBlock, slot = min(T, blk) * T
        withSingleThreadedBLAS {
            Parallel.forJobs(batch.batch * kvHeads) { job, worker in
                let b = job / kvHeads, kvh = job % kvHeads
                let s = s + worker * slot
                let len = max(1, batch.lengths[b])
                let k = qkv + b * T * ld + qd + kvh * hd
                let v = qkv + b * T * ld + qd + kvd + kvh * hd
                for h in (kvh * group)..<((kvh + 1) * group) {
                    let q = qkv + b * T * ld + h * hd
                    let o = out + b * T * qd + h * hd
                    var q0 = 0
                    while q0 < T {
                        let q1 = min(T, q0 + blk)
                        let keys = min(q1, len)  // the last row of the block sees keys [0, min(q1, len))
                        gemm(.none, .transpose, m: q1 - q0, n: keys, k: hd, alpha: scale, a: q + q0 * ld, lda: ld,
                             b: k, ldb: ld, c: s, ldc: keys)
                        for i in 0..<(q1 - q0) {
                            Kernels.softmaxRow(s + i * keys, count: keys, from: batch.firstKey(b, q0 + i), valid: min(q0 + i + 1, len))
                        }
                        gemm(.none, .none, m: q1 - q0, n: hd, k: keys, a: s, lda: keys, b: v, ldb: ld, c: o + q0 * qd, ldc: qd)
                        q0 = q1
                    }
                }
            }
        }
    }
}
