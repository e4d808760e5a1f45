// Generation: incremental decoding with a key/value cache (one sequence), and the samplers of transformers'
// generate(): greedy, or temperature → top-k → top-p → multinomial (the order of its logits warpers).
import Foundation

/// Keys and values of every layer for positions [0, count), rotary embedding already applied to the keys, and
/// the decoding scratch that lives as long as the cache (scores, positions, logits), so a decoded token
/// allocates nothing.
public final class KVCache {
    public let capacity: Int
    public internal(set) var count = 0
    var k: [[Float]]   // per layer [capacity, kvDim]
    var v: [[Float]]
    let kvDim: Int
    /// One (new rows × cached positions) score matrix per worker.
    var scores: [Float] = []
    var positions: [Int32] = []
    /// The logits of the last decoded position ([vocab]).
    public internal(set) var logits: [Float]

    public init(config c: ModelConfig, capacity: Int) {
        self.capacity = capacity
        kvDim = c.numKVHeads * c.headDim
        k = Array(repeating: [Float](repeating: 0, count: capacity * kvDim), count: c.numLayers)
        v = k
        logits = [Float](repeating: 0, count: c.vocabSize)
        scores = [Float](repeating: 0, count: Parallel.workers(for: c.numHeads) * capacity)
    }

    public func reset() { count = 0 }
}

public enum GenerationError: Error, CustomStringConvertible, ToolError {
    case contextFull(tokens: Int, capacity: Int)

    public var description: String {
        switch self {
        case .contextFull(let t, let c):
            return "the prompt is \(t) tokens but the model's context (max_position_embeddings) holds \(c); shorten the prompt"
        }
    }
}

extension Transformer {
    /// Runs `tokens` at positions cache.count ..< cache.count + n, appends their keys and values to the cache,
    /// and returns the logits of the last token ([vocab], also in cache.logits).
    @discardableResult
    public func decode(_ tokens: [Int32], cache: KVCache) throws -> [Float] {
        try decodeStep(tokens, cache: cache)
        return cache.logits
    }

    /// `decode` without returning a copy: the logits are left in cache.logits. After the first call with a given
    /// token count, nothing is allocated.
    public func decodeStep(_ tokens: [Int32], cache: KVCache) throws {
        let c = config
        let n = tokens.count
        guard n > 0 else { return }
        let p0 = cache.count
        guard p0 + n <= cache.capacity else { throw GenerationError.contextFull(tokens: p0 + n, capacity: cache.capacity) }
        let ws = inferenceWorkspace(rows: n, seq: 1, headChunk: 1)
        ensureRope(maxPosition: p0 + n - 1, reserve: min(2 * rope.positions, cache.capacity))
        let d = c.hiddenSize, hd = c.headDim
        let qd = c.numHeads * hd, kvd = c.numKVHeads * hd, ldqkv = qd + 2 * kvd
        let group = c.numHeads / c.numKVHeads
        let scale = c.attentionScale
        let total = p0 + n
        if cache.positions.count != n { cache.positions = [Int32](repeating: 0, count: n) }
        for i in 0..<n { cache.positions[i] = Int32(p0 + i) }
        let workers = Parallel.workers(for: c.numHeads)
        if cache.scores.count < workers * n * total { cache.scores = [Float](repeating: 0, count: workers * n * max(total, cache.capacity)) }

        try embed(tokens, into: ws.x)
        let io = LayerBuffers(x: ws.x, xm: ws.x, out: ws.x, n: ws.n, qkv: ws.qkv, att: ws.att, gu: ws.gu, h: ws.h,
                              rstd1: nil, rstd2: nil)
        for li in layers.indices {
            let window = layers[li].window
            layerForward(li, io, rows: n, positions: cache.positions, scratch: ws.scratch, drop: nil) { qkv, att in
                cache.k[li].withUnsafeMutableBufferPointer { kb in
                cache.v[li].withUnsafeMutableBufferPointer { vb in
                cache.scores.withUnsafeMutableBufferPointer { sb in
                    let kc = kb.baseAddress!, vc = vb.baseAddress!, sp = sb.baseAddress!
                    for r in 0..<n {
                        (kc + (p0 + r) * kvd).update(from: qkv + r * ldqkv + qd, count: kvd)
                        (vc + (p0 + r) * kvd).update(from: qkv + r * ldqkv + qd + kvd, count: kvd)
                    }
                    // The n new rows over all `total` cached positions (row i sees keys ≤ p0 + i), one head per
                    // job, each on its own core with its own scores.
                    withSingleThreadedBLAS {
                        Parallel.forJobs(c.numHeads) { hh, worker in
                            let s = sp + worker * n * total
                            let kvh = hh / group
                            gemm(.none, .transpose, m: n, n: total, k: hd, alpha: scale, a: qkv + hh * hd, lda: ldqkv,
                                 b: kc + kvh * hd, ldb: kvd, c: s, ldc: total)
                            if let cap = c.attnSoftcap { Kernels.softcap(s, ld: total, rows: n, cols: total, cap: cap) }
                            for i in 0..<n {
                                // Sliding-window layers: position p sees keys (p − window, p].
                                let from = window.map { max(0, p0 + i - $0 + 1) } ?? 0
                                Kernels.softmaxRow(s + i * total, count: total, from: from, valid: p0 + i + 1)
                            }
                            gemm(.none, .none, m: n, n: hd, k: total, a: s, lda: total, b: vc + kvh * hd, ldb: kvd,
                                 c: att + hh * hd, ldc: qd)
                        }
                    }
                }}}
            }
        }
        cache.count = total
        // Final norm and the head for the last row only.
        finalNorm.withUnsafeBufferPointer { w in
            Kernels.rmsNorm(ws.n, ws.x + (n - 1) * d, w.baseAddress!, rows: 1, dim: d, eps: Float(c.rmsNormEps))
        }
        cache.logits.withUnsafeMutableBufferPointer { lb in
            let lp = lb.baseAddress!, vocab = c.vocabSize
            _ = headPass(normed: ws.n, rows: Transformer.lastRow, targets: [], out: ws.head, gathered: ws.gathered, chunk: 1,
                         mode: .logits) { _, _, out in lp.update(from: out, count: vocab) }
        }
    }

    static let lastRow = [0]
}

public struct SamplingOptions: Sendable {
    /// 0: greedy (argmax, the first on ties as torch.argmax).
    public var temperature: Double = 0
    /// Keep the k most likely tokens (0: off).
    public var topK: Int = 0
    /// Keep the smallest set of most likely tokens whose probability reaches p (1: off).
    public var topP: Double = 1
    public init(temperature: Double = 0, topK: Int = 0, topP: Double = 1) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
    }
}

public struct Sampler {
    public let options: SamplingOptions
    var rng: Xoshiro256
    /// Candidate ids and their weights, reused from token to token (sized to the vocabulary once).
    var cand: [Int32] = []
    var probs: [Double] = []

    public init(options: SamplingOptions, seed: UInt64) {
        self.options = options
        rng = Xoshiro256(seed: seed)
    }

    public static func argmax(_ logits: [Float]) -> Int {
        var best = 0
        var bv = logits[0]
        for i in 1..<logits.count where logits[i] > bv { best = i; bv = logits[i] }
        return best
    }

    /// The next token: greedy at temperature 0, otherwise a draw from the warped distribution. Allocates
    /// nothing after the first call: top-k and top-p sort only the candidates at or above a logit threshold
    /// that provably holds everything they keep, not the whole vocabulary.
    public mutating func next(_ logits: [Float]) -> Int {
        let o = options
        if o.temperature <= 0 { return Sampler.argmax(logits) }
        let n = logits.count
        if cand.capacity < n { cand.reserveCapacity(n); probs.reserveCapacity(n) }
        let t = Float(o.temperature)
        let top = logits[Sampler.argmax(logits)]
        let m = top / t
        @inline(__always) func weight(_ i: Int32) -> Double { Double(exp(logits[Int(i)] / t - m)) }
        if o.topK <= 0 && o.topP >= 1 {
            // No filter: every token, in id order (the same distribution as any order).
            cand.removeAll(keepingCapacity: true)
            probs.removeAll(keepingCapacity: true)
            var total = 0.0
            for i in 0..<Int32(n) { let w = weight(i); cand.append(i); probs.append(w); total += w }
            return draw(total: total)
        }
        // The total over the whole vocabulary, which top-p's cumulative share divides by.
        var all = 0.0
        for i in 0..<Int32(n) { all += weight(i) }
        // Candidates: the tokens whose logit is ≥ λ, λ lowered until they hold all that the filters keep.
        // Every token left out has a smaller logit than every candidate, so it sorts after all of them and
        // the sorted candidates are exactly the head of the fully sorted vocabulary.
        var gap: Float = 4 * max(t, 1e-3)
        while true {
            let lambda = top - gap
            cand.removeAll(keepingCapacity: true)
            var mass = 0.0
            for i in 0..<Int32(n) where logits[Int(i)] >= lambda { cand.append(i); mass += weight(i) }
            let enoughK = o.topK <= 0 || cand.count >= o.topK
            // Top-p with a top-k filter renormalizes over the top-k set, which the candidates then hold.
            let enoughP = o.topP >= 1 || o.topK > 0 || mass >= o.topP * all
            if (enoughK && enoughP) || cand.count == n || !gap.isFinite { break }
            gap *= 4
        }
        Sampler.sortDescending(&cand, logits)
        if o.topK > 0 && o.topK < cand.count {
            // Like TopKLogitsWarper: everything below the k-th value goes (ties at the k-th value stay).
            let kth = logits[Int(cand[o.topK - 1])]
            var keep = o.topK
            while keep < cand.count && logits[Int(cand[keep])] >= kth { keep += 1 }
            cand.removeSubrange(keep...)
        }
        probs.removeAll(keepingCapacity: true)
        var total = 0.0
        for i in cand { let w = weight(i); probs.append(w); total += w }
        if o.topK <= 0 { total = all }
        if o.topP < 1 {
            // TopPLogitsWarper keeps the most likely tokens until their cumulative probability reaches top_p
            // (at least one).
            var cum = 0.0
            var keep = 0
            while keep < probs.count {
                cum += probs[keep] / total
                keep += 1
                if cum >= o.topP { break }
            }
            probs.removeSubrange(keep...)
            cand.removeSubrange(keep...)
            total = probs.reduce(0, +)
        }
        return draw(total: total)
    }

    private mutating func draw(total: Double) -> Int {
        let u = Double(rng.next() >> 11) * 0x1p-53 * total
        var acc = 0.0
        for j in probs.indices {
            acc += probs[j]
            if u < acc { return Int(cand[j]) }
        }
        return Int(cand[probs.count - 1])
    }

    /// In-place heapsort by logit descending, ties by id ascending (a total order, so the result is unique);
    /// no temporary buffer, unlike the standard library's sort.
    static func sortDescending(_ ids: inout [Int32], _ logits: [Float]) {
        // "Greater" in heap terms = later in the output: smaller logit, or equal logit and larger id.
        @inline(__always) func after(_ a: Int32, _ b: Int32) -> Bool {
            let la = logits[Int(a)], lb = logits[Int(b)]
            return la < lb || (la == lb && a > b)
        }
        let n = ids.count
        guard n > 1 else { return }
        ids.withUnsafeMutableBufferPointer { h in
            func sift(_ start: Int, _ end: Int) {
                var root = start
                while true {
                    var child = 2 * root + 1
                    if child >= end { return }
                    if child + 1 < end && after(h[child + 1], h[child]) { child += 1 }
                    if !after(h[child], h[root]) { return }
                    h.swapAt(root, child)
                    root = child
                }
            }
            for s in stride(from: n / 2 - 1, through: 0, by: -1) { sift(s, n) }
            for end in stride(from: n - 1, to: 0, by: -1) {
                h.swapAt(0, end)
                sift(0, end)
            }
        }
    }
}

/// Streams text as tokens arrive: decodes everything generated so far and releases what is new, holding back
/// while the text ends in an incomplete UTF-8 sequence (shown as U+FFFD). A decoder regex of tokenizer.json that
/// runs past its limits is an error (TokenizerError.regexLimit), not text left silently undecoded.
public struct TextStream {
    let tokenizer: Tokenizer
    var ids: [Int] = []
    var emitted = 0   // unicode scalars already released
    public init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    public mutating func push(_ id: Int) throws -> String {
        ids.append(id)
        let text = try tokenizer.decodeChecked(ids, skipSpecialTokens: true)
        let scalars = Array(text.unicodeScalars)
        if scalars.last == "\u{FFFD}" { return "" }
        guard scalars.count > emitted else { return "" }
        var out = String.UnicodeScalarView()
        out.append(contentsOf: scalars[emitted...])
        emitted = scalars.count
        return String(out)
    }

    /// Whatever is still held back (at the end of generation).
    public mutating func finish() throws -> String {
        let scalars = Array(try tokenizer.decodeChecked(ids, skipSpecialTokens: true).unicodeScalars)
        guard scalars.count > emitted else { return "" }
        var out = String.UnicodeScalarView()
        out.append(contentsOf: scalars[emitted...])
        emitted = scalars.count
        return String(out)
    }

    /// Everything generated so far.
    public func text() throws -> String { try tokenizer.decodeChecked(ids, skipSpecialTokens: true) }
}

/// The tokens generation stops on, which a trained turn must end with.
public enum StopTokens {
    /// Token ids that end generation: the tokenizer's EOS (for chat models, the end-of-turn token), config.json's
    /// eos_token_id and generation_config.json's (an int or a list). A generation_config.json that is there but
    /// malformed is an error, not silently ignored (generation would then run past the model's stop token).
    public static func of(model: String, config: ModelConfig, tokenizer: Tokenizer) throws -> Set<Int> {
        var s = Set(config.eosTokenIds)
        if let e = tokenizer.eosTokenId { s.insert(e) }
        let path = model + "/generation_config.json"
        guard let data = FileManager.default.contents(atPath: path) else { return s }
        let v: JSONValue
        do { v = try data.withUnsafeBytes { try JSONParser().parse($0) } } catch {
            throw ConfigError.invalidJSON(path: path, reason: "\(error)")
        }
        guard let o = v.objectValue else { throw ConfigError.invalidJSON(path: path, reason: "top level is a \(v.typeName), not an object") }
        guard let e = o["eos_token_id"], !e.isNull else { return s }
        let ids = e.arrayValue ?? [e]
        for x in ids {
            guard let i = x.intValue, i >= 0, i < config.vocabSize else {
                throw ConfigError.badValue(path: path, key: "eos_token_id",
                                           reason: "expected token ids in 0..<\(config.vocabSize) (an int or a list), got \(e.serialized())")
            }
            s.insert(Int(i))
        }
        return s
    }
}
