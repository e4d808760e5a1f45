// Head: the ends of the network shared by every pass — the embedding gather (with the one token-id check)
// and the LM head + cross-entropy in row chunks, so tokens × vocab never exists: loss only (eval), logits
// only (decoding), or loss and ∂loss/∂(final norm output) (training).

extension Transformer {
    /// x[r, :] = embedding[tokens[r], :] for every row, after checking every id: an id outside [0, vocab) is a
    /// named error (the tokenizer does not belong to this model), not a crash.
    func embed(_ tokens: [Int32], seq: Int? = nil, into x: UnsafeMutablePointer<Float>) throws {
        let v = config.vocabSize, d = config.hiddenSize
        guard !tokens.isEmpty, seq ?? 1 > 0 else { throw ModelError.emptyBatch(batch: tokens.count / max(1, seq ?? 1), seq: seq ?? 0) }
        if let bad = tokens.firstIndex(where: { $0 < 0 || Int($0) >= v }) {
            let t = max(1, seq ?? tokens.count)
            throw ModelError.tokenOutOfRange(id: Int(tokens[bad]), row: bad / t, position: bad % t, vocab: v)
        }
        let w = embedWeight
        let pairs = w.nibblePairs()
        pairs.withUnsafeBufferPointer { pb in
            let pp = pb.isEmpty ? nil : pb.baseAddress
            Parallel.forRanges(tokens.count, grain: 64) { r in
                for i in r { w.expandRow(Int(tokens[i]), into: x + i * d, pairs: pp) }
            }
        }
        // gemma: embeddings × √hidden_size.
        if let s = config.embedScale {
            Parallel.forRanges(tokens.count, grain: 64) { r in
                for i in r { let xi = x + i * d; for j in 0..<d { xi[j] *= s } }
            }
        }
    }

    enum HeadMode {
        /// Logits only (no targets): decoding.
        case logits
        /// Σ NLL over the rows' targets.
        case loss
        /// Σ NLL · lossScale, and its gradient with respect to the normed rows written into dn (totalRows ×
        /// hidden, zero on the rows not scored).
        case backward(lossScale: Float, dn: UnsafeMutablePointer<Float>, totalRows: Int)
    }

    /// The head as fp32 [vocab, hidden] (bf16-rounded when `rounded` and not stored bf16), kept resident when
    /// it is at most `headResidentLimit` bytes; nil when it streams.
    func residentHead(rounded: Bool) -> [Float]? {
        let c = config
        guard let bytes = Limits.product(c.vocabSize, c.hiddenSize, 4), bytes <= Transformer.headResidentLimit else { return nil }
        let round = rounded && !head.isStoredBF16
        if let h = headResident, h.rounded == round { return h.w }
        headResident = nil
        var w = [Float](repeating: 0, count: c.vocabSize * c.hiddenSize)
        w.withUnsafeMutableBufferPointer { head.expand(into: $0.baseAddress!, roundToBF16: round) }
        headResident = (round, w)
        return w
    }

    /// Vocabulary rows per streamed head block: about 8 MB of fp32 (fewer in tests, to cross block edges).
    nonisolated(unsafe) static var headBlockFloats = 1 << 21
    var headBlockRows: Int { max(1, Transformer.headBlockFloats / max(1, config.hiddenSize)) }

    /// out (m × vocab) = g·Wᵀ (`forward`), or g (m × hidden) = out·W, for a chunk of m rows: against the resident
    /// fp32 head when it fits, else block by block of vocabulary rows expanded from the stored form (rounded to
    /// bf16 with `bf16`). Every output element sums over the same k in the same order either way.
    func headGEMM(forward: Bool, m: Int, g: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>, bf16: Bool) {
        let d = config.hiddenSize, vocab = config.vocabSize
        if let hw = residentHead(rounded: bf16) {
            hw.withUnsafeBufferPointer { hb in
                let w = hb.baseAddress!
                if forward {
                    gemm(.none, .transpose, m: m, n: vocab, k: d, a: g, lda: d, b: w, ldb: d, c: out, ldc: vocab)
                } else {
                    gemm(.none, .none, m: m, n: d, k: vocab, a: out, lda: vocab, b: w, ldb: d, c: g, ldc: d)
                }
            }
            return
        }
        let nb = headBlockRows
        if headBlock.count < nb * d { headBlock = [Float](repeating: 0, count: nb * d) }
        let round = bf16 && !head.isStoredBF16
        headBlock.withUnsafeMutableBufferPointer { bb in
            let blk = bb.baseAddress!
            var v0 = 0
            while v0 < vocab {
                let n = min(nb, vocab - v0)
                head.expandRows(v0..<(v0 + n), into: blk, roundToBF16: round)
                if forward {
                    gemm(.none, .transpose, m: m, n: n, k: d, a: g, lda: d, b: blk, ldb: d, c: out + v0, ldc: vocab)
                } else {
                    gemm(.none, .none, m: m, n: d, k: n, a: out + v0, lda: vocab, b: blk, ldb: d, beta: v0 == 0 ? 0 : 1, c: g, ldc: d)
                }
                v0 += n
            }
        }
    }

    /// Most vocabulary rows one product of the head's backward sums over (headOneDNN).
    static let headBackwardSlice = 40960

    /// out (m × vocab) = g·Wᵀ (`forward`) or g (m × hidden) = out·W on oneDNN with bf16 operands: the head as
    /// mapped when stored bf16, else one bf16 copy; false when oneDNN is not the backend, the chunk is a few rows,
    /// or it failed.
    func headOneDNN(forward: Bool, m: Int, g: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) -> Bool {
        guard compute.backend == .onednn, m > LinearWeight.directRows else { return false }
        let c = config, d = c.hiddenSize, vocab = c.vocabSize
        var mapped: UnsafePointer<UInt16>? = nil
        if case .dense(let t) = head.storage, t.dtype == .BF16 { mapped = UnsafePointer(t.data.baseAddress!.assumingMemoryBound(to: UInt16.self)) }
        if mapped == nil && headBF16 == nil {
            let nb = headBlockRows
            var h = [UInt16](repeating: 0, count: vocab * d)
            var blk = [Float](repeating: 0, count: nb * d)
            h.withUnsafeMutableBufferPointer { hb in blk.withUnsafeMutableBufferPointer { bb in
                var v0 = 0
                while v0 < vocab {
                    let n = min(nb, vocab - v0)
                    head.expandRows(v0..<(v0 + n), into: bb.baseAddress!, roundToBF16: false)
                    OneDNN.convert(bb.baseAddress!, ld: d, rows: n, cols: d, into: hb.baseAddress! + v0 * d, ldd: d)
                    v0 += n
                }
            } }
            headBF16 = h
        }
        if forward && headOperand.count < m * d { headOperand = [UInt16](repeating: 0, count: m * d) }
        func run(_ w: UnsafePointer<UInt16>) -> Bool {
            if forward {
                return headOperand.withUnsafeMutableBufferPointer { ob in
                    let a = ob.baseAddress!
                    OneDNN.convert(g, ld: d, rows: m, cols: d, into: a, ldd: d)
                    return OneDNN.gemm(transB: true, m: m, n: vocab, k: d, a: a, lda: d, b: w, ldb: d, accumulate: false, c: out, ldc: vocab)
                }
            }
            // The chunk's logit gradient (m × vocab) is its own bf16 operand, converted in place: no m × vocab copy.
            // On failure the values are widened back (bf16-rounded, as the emulation rounds them anyway).
            // The product sums over the vocabulary in slices (Transformer.headBackwardSlice) added into g: one
            // product over all of a 152k vocabulary was slower on oneDNN 2.6 (the 7B shape's head in a LORA_PROFILE=1
            // step: 286 GFLOP/s over forward and backward with one product, 317 with four slices).
            let a = OneDNN.convertInPlace(out, ld: vocab, rows: m, cols: vocab)
            let slices = (vocab + Transformer.headBackwardSlice - 1) / Transformer.headBackwardSlice
            let slice = (vocab + slices - 1) / slices
            var v0 = 0
            while v0 < vocab {
                let k = min(slice, vocab - v0)
                if !OneDNN.gemm(transB: false, m: m, n: d, k: k, a: a + v0, lda: vocab, b: w + v0 * d, ldb: d, accumulate: v0 > 0, c: g, ldc: d) {
                    OneDNN.widenInPlace(out, ld: vocab, rows: m, cols: vocab)
                    return false  // the emulation recomputes all of g
                }
                v0 += k
            }
            return true
        }
        let ok = mapped.map(run) ?? headBF16!.withUnsafeBufferPointer { run($0.baseAddress!) }
        if !ok { OneDNN.warnFallback() }
        return ok
    }

    /// Head (and cross-entropy) over the normed rows `rows` (indices into `normed`, rows × hidden), in chunks of
    /// `chunk` rows through `out` (chunk × vocab) and `gathered` (chunk × hidden). `sink(i0, m, logits)` sees
    /// each chunk's logits (rows i0 ..< i0 + m of `rows`) before the cross-entropy overwrites them.
    /// Returns (Σ NLL, scored rows).
    func headPass(normed n: UnsafePointer<Float>, rows: [Int], targets: [Int32], out: UnsafeMutablePointer<Float>,
                  gathered g: UnsafeMutablePointer<Float>, chunk: Int, mode: HeadMode,
                  sink: ((_ i0: Int, _ m: Int, _ logits: UnsafePointer<Float>) -> Void)? = nil) -> (Double, Int) {
        let c = config, d = c.hiddenSize, vocab = c.vocabSize
        let bf16 = computeDType == .bf16
        let prof = Profiler.shared
        var nll = 0.0, count = 0
        var chunkTargets = [Int32](repeating: -100, count: chunk)
        if case .backward(_, let dn, let total) = mode { dn.update(repeating: 0, count: total * d) }
        do {
            var i0 = 0
            while i0 < rows.count {
                let m = min(chunk, rows.count - i0)
                for k in 0..<m {
                    (g + k * d).update(from: n + rows[i0 + k] * d, count: d)
                    if case .logits = mode {} else { chunkTargets[k] = targets[rows[i0 + k]] }
                }
                prof.measure("gemm head", flops: 2.0 * Double(m * vocab * d)) {
                    if headOneDNN(forward: true, m: m, g: g, out: out) { return }
                    if bf16 { Kernels.roundToBF16InPlace(g, count: m * d) }
                    if m <= LinearWeight.directRows {
                        // A few rows (decoding): one dot product per vocabulary row from the stored form, split across
                        // cores (the same values and summation order as the fp32 copy).
                        head.multiplyDirect(x: g, ldx: d, rows: m, y: out, ldy: vocab, accumulate: false, bf16: bf16)
                    } else {
                        headGEMM(forward: true, m: m, g: g, out: out, bf16: bf16)
                    }
                }
                // gemma2's final_logit_softcapping: the logits are cap · tanh(z / cap) everywhere after this.
                if let cap = c.finalSoftcap { Kernels.softcap(out, ld: vocab, rows: m, cols: vocab, cap: cap) }
                sink?(i0, m, UnsafePointer(out))
                switch mode {
                case .logits:
                    break
                case .loss:
                    let (s, k) = prof.measure("cross-entropy") {
                        chunkTargets.withUnsafeBufferPointer { Kernels.crossEntropy(out, rows: m, vocab: vocab, targets: $0.baseAddress!) }
                    }
                    nll += s
                    count += k
                case .backward(let scale, let dn, _):
                    let (s, k) = prof.measure("cross-entropy") {
                        chunkTargets.withUnsafeBufferPointer {
                            Backward.crossEntropy(out, rows: m, vocab: vocab, targets: $0.baseAddress!, scale: scale, softcap: c.finalSoftcap)
                        }
                    }
                    nll += s
                    count += k
                    // d(normed rows) = dlogits · W_head, scattered back to their rows.
                    prof.measure("gemm head", flops: 2.0 * Double(m * vocab * d)) {
                        if headOneDNN(forward: false, m: m, g: g, out: out) { return }
                        if bf16 { Kernels.roundToBF16InPlace(out, count: m * vocab) }
                        headGEMM(forward: false, m: m, g: g, out: out, bf16: bf16)
                    }
                    for k in 0..<m { (dn + rows[i0 + k] * d).update(from: g + k * d, count: d) }
                }
                i0 += m
            }
        }
        return (nll, count)
    }
}
