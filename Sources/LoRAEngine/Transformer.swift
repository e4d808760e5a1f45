// Transformer: the Llama / Mistral / Qwen2 / Qwen3 / Phi3 / Gemma2 / Gemma3 decoder forward pass in fp32 (docs/formats.md
// §7, transformers modeling_llama.py): embeddings, RMSNorm, RoPE, causal GQA attention with right padding
// (sliding-window where the config has it), qwen3's and gemma3's q/k head norms, gemma's (1 + w) norms, sandwich
// norms, embedding scale, soft-capping and GeGLU, SwiGLU MLP, tied or
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
    /// DoRA's magnitude vector [out]: y = m / ‖W + s·B·A‖_row ⊙ (W·x + s·B·A·x) + bias (LoRALinear.swift).
    public var magnitude: [Float]? = nil
}

public final class Transformer: @unchecked Sendable {
    public let config: ModelConfig
    let layers: [Layer]
    /// The embedding [vocab, hidden] in its stored form (mmapped): rows are converted to fp32 as they are gathered.
    let embedWeight: LinearWeight
    /// The head [vocab, hidden] in its stored form: lm_head when untied, else the embedding.
    let head: LinearWeight
    let finalNorm: [Float]
    public private(set) var lora: [String: LoRALayer] = [:]
    /// DoRA modules' m / ‖W + s·B·A‖ and ‖W + s·B·A‖ per output row, from the current A, B, m (LoRALinear.swift);
    /// dropped whenever a module's weights change.
    var doraScales: [String: (scale: [Float], norm: [Float])] = [:]
    var rope: RopeTables
    /// gemma3's sliding layers' RoPE (rope_local_base_freq); nil when every layer uses `rope`.
    var ropeLocal: RopeTables?
    /// The arithmetic of the frozen-weight GEMMs and the head (LoRALinear.swift, ComputeBackend.swift); f32
    /// unless set.
    public var compute = ComputeChoice.f32
    public var computeDType: ComputeDType { compute.dtype }
    /// fp32 bytes of a head small enough to keep as an fp32 copy (bf16-rounded in bf16 compute) for its GEMMs;
    /// a larger head (Qwen2.5-7B's 152k × 3.5k is 2.2 GB) streams from its stored form in blocks of vocabulary
    /// rows, so it costs no memory beyond its mapped bytes. Head.swift.
    nonisolated(unsafe) public static var headResidentLimit = 1 << 30
    /// The resident fp32 head and whether it is bf16-rounded, made on first use (Head.swift).
    var headResident: (rounded: Bool, w: [Float])?
    /// One block of streamed head rows, expanded to fp32.
    var headBlock: [Float] = []
    /// The head weight in bf16 for oneDNN when it is not stored bf16, and the bf16 operand of a head chunk.
    var headBF16: [UInt16]?
    var headOperand: [UInt16] = []

    struct Layer {
        let prefix: String
        let inputNorm: [Float]
        /// The MLP's input norm: post_attention_layernorm, or gemma's pre_feedforward_layernorm.
        let postNorm: [Float]
        /// gemma's norms of the attention output and the MLP output before their residual adds
        /// (post_attention_layernorm, post_feedforward_layernorm); nil for the other families.
        let attnOutNorm, mlpOutNorm: [Float]?
        /// gemma3's sliding layers: RoPE from the local tables.
        let localRope: Bool
        /// The Linears writing q|k|v (q_proj, k_proj, v_proj; phi3's one qkv_proj) and gate|up (gate_proj, up_proj;
        /// phi3's gate_up_proj), each stacked in its columns in that order.
        let qkv: [LinearWeight]
        let o: LinearWeight
        let gateUp: [LinearWeight]
        let down: LinearWeight
        /// qwen3's per-head norms of q and k ([head_dim]); nil for the other families.
        let qNorm, kNorm: [Float]?
        /// Keys a query sees in this layer (sliding-window attention), nil for full causal attention.
        let window: Int?
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
        /// An RMSNorm weight as the kernels apply it: gemma's scale by (1 + w), added in float32 as transformers does.
        func norm(_ name: String, _ n: Int) throws -> [Float] {
            let w = try vector(name, n)
            return c.normPlusOne ? w.map { 1 + $0 } : w
        }
        embedWeight = try LinearWeight(name: "model.embed_tokens", store: s, out: c.vocabSize, in: c.hiddenSize, hasBias: false)
        if c.tieWordEmbeddings {
            head = embedWeight
        } else {
            guard s.contains("lm_head.weight") else { throw ModelError.missingWeight(dir: model.path, tensor: "lm_head.weight") }
            head = try LinearWeight(name: "lm_head", store: s, out: c.vocabSize, in: c.hiddenSize, hasBias: false)
        }
        finalNorm = try norm("model.norm.weight", c.hiddenSize)
        var ls: [Layer] = []
        let shapes = Dictionary(uniqueKeysWithValues: c.layerLinears().map { ($0.name, ($0.out, $0.in)) })
        for l in 0..<c.numLayers {
            let p = "model.layers.\(l)."
            func lin(_ m: String, bias: Bool) throws -> LinearWeight {
                let (o, i) = shapes[m]!
                return try LinearWeight(name: p + m, store: s, out: o, in: i, hasBias: bias)
            }
            let qkv = c.fusedProjections ? [try lin("self_attn.qkv_proj", bias: c.attentionBias)]
                : [try lin("self_attn.q_proj", bias: c.attentionBias), try lin("self_attn.k_proj", bias: c.attentionBias),
                   try lin("self_attn.v_proj", bias: c.attentionBias)]
            let gateUp = c.fusedProjections ? [try lin("mlp.gate_up_proj", bias: c.mlpBias)]
                : [try lin("mlp.gate_proj", bias: c.mlpBias), try lin("mlp.up_proj", bias: c.mlpBias)]
            ls.append(Layer(
                prefix: "model.layers.\(l)",
                inputNorm: try norm(p + "input_layernorm.weight", c.hiddenSize),
                postNorm: try norm(p + (c.sandwichNorms ? "pre_feedforward_layernorm.weight" : "post_attention_layernorm.weight"), c.hiddenSize),
                attnOutNorm: c.sandwichNorms ? try norm(p + "post_attention_layernorm.weight", c.hiddenSize) : nil,
                mlpOutNorm: c.sandwichNorms ? try norm(p + "post_feedforward_layernorm.weight", c.hiddenSize) : nil,
                localRope: c.layerLocalRope[l],
                qkv: qkv, o: try lin("self_attn.o_proj", bias: c.oProjBias), gateUp: gateUp,
                down: try lin("mlp.down_proj", bias: c.mlpBias),
                qNorm: c.qkNorm ? try norm(p + "self_attn.q_norm.weight", c.headDim) : nil,
                kNorm: c.qkNorm ? try norm(p + "self_attn.k_norm.weight", c.headDim) : nil,
                window: c.layerWindows[l]))
        }
        layers = ls
        rope = RopeTables(config: c, positions: min(c.maxPositionEmbeddings, 4096))
        ropeLocal = Transformer.localRopeConfig(c).map { RopeTables(config: $0, positions: rope.positions) }
    }

    /// gemma3's sliding layers' RoPE as a config of its own (θ and scaling of the local tables), nil when every
    /// layer shares one RoPE.
    static func localRopeConfig(_ c: ModelConfig) -> ModelConfig? {
        guard let theta = c.localRopeTheta, c.layerLocalRope.contains(true) else { return nil }
        var l = c
        l.ropeTheta = theta
        l.ropeScaling = c.localRopeScaling
        return l
    }

    /// RoPE tables covering positions [0, maxPosition] (at least `reserve`), with the longrope factors a pass
    /// reaching maxPosition uses.
    func ensureRope(maxPosition: Int, reserve: Int = 0) {
        let long = RopeTables.wantsLong(config, maxPosition: maxPosition)
        if maxPosition >= rope.positions || long != rope.long {
            rope = RopeTables(config: config, positions: max(maxPosition + 1, reserve, long == rope.long ? 0 : rope.positions), long: long)
        }
        if let lc = Transformer.localRopeConfig(config), maxPosition >= (ropeLocal?.positions ?? 0) {
            ropeLocal = RopeTables(config: lc, positions: max(maxPosition + 1, reserve))
        }
    }

    // MARK: adapters

    /// Attaches an adapter (validated against the model's Linears, every mismatch reported at once).
    public func attach(_ adapter: Adapter, linears: [LinearModule]) throws {
        try adapter.validate(against: linears)
        var m: [String: LoRALayer] = [:]
        for n in adapter.moduleNames {
            let w = adapter.modules[n]!
            m[n] = LoRALayer(r: w.r, scaling: Float(adapter.config.scaling(for: n)), a: w.a, b: w.b, magnitude: w.magnitude)
        }
        lora = m
        doraScales = [:]
    }

    public func detach() { lora = [:]; doraScales = [:] }

    /// Replaces one module's LoRA weights (the optimizer writes updated A and B through this).
    public func setLoRA(_ module: String, _ l: LoRALayer) { lora[module] = l; doraScales[module] = nil }

    // MARK: forward

    public struct Output {
        public var nllSum: Double
        public var tokens: Int
        public var logits: [Float]?   // [batch·seq, vocab] when requested (tests, small vocab)
        public var finalHidden: [Float]?
    }

    /// Buffers of the inference passes (forward over a batch, decoding), sized once per (rows, seq); no
    /// allocation inside the layer loop.
    final class Workspace {
        let rows: Int, seq: Int, tCap: Int
        let pool = BufferPool()
        let x, n, qkv, att, gu, h, scores, head, gathered: UnsafeMutablePointer<Float>
        let scratch: ProjectionScratch
        init(config c: ModelConfig, rows: Int, seq: Int, maxLoRARank: Int, headChunk: Int) {
            self.rows = rows
            self.seq = seq
            let d = c.hiddenSize, qd = c.numHeads * c.headDim, kvd = c.numKVHeads * c.headDim, i = c.intermediateSize
            x = pool.make(rows * d); n = pool.make(rows * d)
            qkv = pool.make(rows * (qd + 2 * kvd)); att = pool.make(rows * qd)
            gu = pool.make(rows * 2 * i); h = pool.make(rows * i)
            scores = pool.make(Transformer.attentionScratch(config: c, seq: seq))
            head = pool.make(headChunk * c.vocabSize); gathered = pool.make(headChunk * d)
            tCap = rows * max(1, maxLoRARank)
            scratch = ProjectionScratch(config: c, rows: rows, maxR: maxLoRARank, pool: pool, backward: false, dropout: false)
        }
    }
    var workspace: Workspace?
    var trainWorkspace: TrainWorkspace?

    /// Bytes of the inference workspace (eval, the prompt pass of decoding) for `rows` rows, or nil on overflow;
    /// checked against memory before lora-eval allocates it.
    public static func inferenceWorkspaceBytes(config c: ModelConfig, rows: Int, seq: Int, maxR: Int) -> Int? {
        let d = c.hiddenSize, qd = c.numHeads * c.headDim, ldqkv = qd + 2 * c.numKVHeads * c.headDim, i = c.intermediateSize
        return Limits.sum(Limits.product(rows, 3 * d + ldqkv + qd + 3 * i + 2 * max(1, maxR), 4),
                          Limits.product(attentionScratch(config: c, seq: seq), 4),
                          Limits.product(min(rows, headChunkRows), c.vocabSize + d, 4))
    }

    public static let headChunkRows = 128

    func inferenceWorkspace(rows: Int, seq: Int, headChunk: Int) -> Workspace {
        let maxR = lora.values.map(\.r).max() ?? 1
        if let ws = workspace, ws.rows == rows, ws.seq == seq, ws.tCap >= rows * maxR { return ws }
        workspace = nil  // free the old buffers before allocating the new ones
        let ws = Workspace(config: config, rows: rows, seq: seq, maxLoRARank: maxR, headChunk: headChunk)
        workspace = ws
        return ws
    }

    /// Loss (and optionally logits and final hidden states) of a batch. Throws when a token id is outside
    /// the vocabulary.
    public func forward(_ batch: TokenBatch, wantLogits: Bool = false, wantHidden: Bool = false) throws -> Output {
        let c = config
        let rows = batch.batch * batch.seq
        guard rows > 0 else { throw ModelError.emptyBatch(batch: batch.batch, seq: batch.seq) }
        let ws = inferenceWorkspace(rows: rows, seq: batch.seq, headChunk: min(rows, Transformer.headChunkRows))
        let positions = batch.positions
        ensureRope(maxPosition: Int(positions.max() ?? 0))
        let d = c.hiddenSize

        try embed(batch.tokens, into: ws.x)
        let io = LayerBuffers(x: ws.x, xm: ws.x, out: ws.x, n: ws.n, qkv: ws.qkv, att: ws.att, gu: ws.gu, h: ws.h,
                              rstd1: nil, rstd2: nil)
        for l in layers.indices {
            layerForward(l, io, rows: rows, positions: positions, scratch: ws.scratch, drop: nil) { qkv, att in
                attention(qkv: qkv, out: att, batch: batch, scores: ws.scores, window: layers[l].window)
            }
        }

        // Final norm, then the head and cross-entropy over the scored rows (all rows when logits are wanted).
        finalNorm.withUnsafeBufferPointer { w in
            Kernels.rmsNorm(ws.n, ws.x, w.baseAddress!, rows: rows, dim: d, eps: Float(c.rmsNormEps))
        }
        let targets = batch.shiftedTargets
        var logits: [Float]? = wantLogits ? [Float](repeating: 0, count: rows * c.vocabSize) : nil
        let scored: [Int] = wantLogits ? Array(0..<rows) : (0..<rows).filter { targets[$0] >= 0 }
        let (nll, count) = headPass(normed: ws.n, rows: scored, targets: targets, out: ws.head, gathered: ws.gathered,
                                    chunk: min(rows, Transformer.headChunkRows), mode: .loss) { i0, m, out in
            logits?.withUnsafeMutableBufferPointer { l in
                (l.baseAddress! + i0 * c.vocabSize).update(from: out, count: m * c.vocabSize)
            }
        }
        let hidden = wantHidden ? Array(UnsafeBufferPointer(start: ws.n, count: rows * d)) : nil
        return Output(nllSum: nll, tokens: count, logits: logits, finalHidden: hidden)
    }

    /// Causal attention per (sequence, head): S = Q·Kᵀ/√d over keys j ≤ i and j < length, softmax, O = S·V.
    /// Query rows go in blocks that multiply only the keys they can see (the causal triangle, not the square).
    /// Jobs are (sequence, KV head) — the query heads of a GQA group together, so backward's dK/dV sums have one
    /// writer — spread over the cores, each job's small GEMMs single-threaded on its own core. A block's queries
    /// of all the group's heads are stacked (copied) into one matrix, so each product is one GEMM of group ×
    /// block rows against the shared keys instead of one thin GEMM per head.
    public static let attentionBlock = 64

    /// Query rows per head in a block: `attentionBlock`, fewer for large GQA groups so that a stacked block stays
    /// at most 512 rows (8 queries per head for groups over 64).
    public static func attentionQueryBlock(group: Int) -> Int { max(8, min(attentionBlock, 512 / max(1, group))) }

    /// How the attention passes cut a sequence of `seq`: query heads per KV head, queries per block, rows of a
    /// stacked block (the group's heads × the block), and the floats of one worker's scratch: the stacked block's
    /// scores (rows × keys) and two stacked row sets of head-dim floats (queries and outputs, or their gradients).
    static func attentionLayout(config c: ModelConfig, seq: Int) -> (group: Int, block: Int, stackRows: Int, slot: Int) {
        let group = c.numHeads / max(1, c.numKVHeads), block = attentionQueryBlock(group: group)
        let rows = group * min(seq, block)
        return (group, block, rows, rows * (seq + 2 * c.headDim))
    }

    /// Floats of score scratch the attention passes need: one slot (attentionLayout) per worker.
    public static func attentionScratch(config c: ModelConfig, seq: Int) -> Int { Parallel.cores * attentionLayout(config: c, seq: seq).slot }

    /// The probabilities of one stacked query block [q0, q0 + m): P = softmax(softcap(scale · qs·Kᵀ)) over each
    /// query's keys (keyRange), for `qs` the group's queries stacked by stackHeads and the block's keys
    /// [lo, lo + keys) at k (row stride ld), into p (group · m rows × keys).
    func stackedProbabilities(_ qs: UnsafePointer<Float>, k: UnsafePointer<Float>, ld: Int, group: Int, m: Int, keys: Int, lo: Int,
                              q0: Int, batch: TokenBatch, b: Int, len: Int, window: Int?, into p: UnsafeMutablePointer<Float>) {
        let c = config, rows = group * m
        gemm(.none, .transpose, m: rows, n: keys, k: c.headDim, alpha: c.attentionScale, a: qs, lda: c.headDim, b: k, ldb: ld, c: p, ldc: keys)
        if let cap = c.attnSoftcap { Kernels.softcap(p, ld: keys, rows: rows, cols: keys, cap: cap) }
        for i in 0..<m {
            let r = Transformer.keyRange(batch, b, q0 + i, len: len, window: window)
            for g in 0..<group { Kernels.softmaxRow(p + (g * m + i) * keys, count: keys, from: r.from - lo, valid: r.to - lo) }
        }
    }

    /// Copies rows [q0, q0 + m) of the group's heads (column hd · head, row stride ld) into `dst`, stacked head by
    /// head (row g · m + i is query q0 + i of the group's head g), or back with `unstack`.
    @inline(__always)
    static func stackHeads(_ src: UnsafeMutablePointer<Float>, ld: Int, firstHead: Int, group: Int, hd: Int, q0: Int, m: Int,
                           _ dst: UnsafeMutablePointer<Float>, unstack: Bool = false) {
        for g in 0..<group {
            let base = src + q0 * ld + (firstHead + g) * hd
            for i in 0..<m {
                let packed = dst + (g * m + i) * hd, strided = base + i * ld
                if unstack { strided.update(from: packed, count: hd) } else { packed.update(from: strided, count: hd) }
            }
        }
    }

    /// The keys query i of sequence b attends to: [from, to) with `lo` ≤ from, where `lo` is the first key any
    /// row of the query block starting at q0 can see. Causal, inside its packed example, below the sequence's
    /// length and, with a window W, j > i − W (transformers' sliding_window_overlay). A padding row past the
    /// window of every real key keeps its last real key, so its (unused) values stay finite.
    @inline(__always)
    static func keyRange(_ batch: TokenBatch, _ b: Int, _ i: Int, len: Int, window: Int?) -> (from: Int, to: Int) {
        let to = min(i + 1, len)
        var from = batch.firstKey(b, i)
        if let w = window { from = max(from, i - w + 1) }
        return (min(from, to - 1), to)
    }

    /// The first key a block of query rows starting at q0 can need (windowed layers skip the keys before it).
    @inline(__always)
    static func blockFirstKey(_ q0: Int, len: Int, window: Int?) -> Int {
        guard let w = window else { return 0 }
        return max(0, min(q0 - w + 1, len - 1))
    }

    func attention(qkv: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>, batch: TokenBatch,
                   scores s: UnsafeMutablePointer<Float>, window: Int?) {
        let c = config, T = batch.seq, hd = c.headDim
        let qd = c.numHeads * hd, kvd = c.numKVHeads * hd, ld = qd + 2 * kvd
        let kvHeads = c.numKVHeads
        let (group, blk, stackRows, slot) = Transformer.attentionLayout(config: c, seq: T)
        withSingleThreadedBLAS {
            Parallel.forJobs(batch.batch * kvHeads) { job, worker in
                let b = job / kvHeads, kvh = job % kvHeads
                let s = s + worker * slot
                let qs = s + stackRows * T, os = qs + stackRows * hd
                let len = max(1, batch.lengths[b])
                let k = qkv + b * T * ld + qd + kvh * hd
                let v = qkv + b * T * ld + qd + kvd + kvh * hd
                var q0 = 0
                while q0 < T {
                    let q1 = min(T, q0 + blk), m = q1 - q0, rows = group * m
                    // The block's rows see keys within [lo, min(q1, len)): the causal triangle, cut at the window.
                    let lo = Transformer.blockFirstKey(q0, len: len, window: window)
                    let keys = min(q1, len) - lo
                    Transformer.stackHeads(qkv + b * T * ld, ld: ld, firstHead: kvh * group, group: group, hd: hd, q0: q0, m: m, qs)
                    stackedProbabilities(qs, k: k + lo * ld, ld: ld, group: group, m: m, keys: keys, lo: lo, q0: q0, batch: batch, b: b,
                                         len: len, window: window, into: s)
                    gemm(.none, .none, m: rows, n: hd, k: keys, a: s, lda: keys, b: v + lo * ld, ldb: ld, c: os, ldc: hd)
                    Transformer.stackHeads(out + b * T * qd, ld: qd, firstHead: kvh * group, group: group, hd: hd, q0: q0, m: m, os, unstack: true)
                    q0 = q1
                }
            }
        }
    }
}
