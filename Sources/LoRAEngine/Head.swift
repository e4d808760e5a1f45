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
        embedding.withUnsafeBufferPointer { e in
            let ep = e.baseAddress!
            Parallel.forRanges(tokens.count, grain: 64) { r in
                for i in r { (x + i * d).update(from: ep + Int(tokens[i]) * d, count: d) }
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

    /// The head weight as the compute dtype multiplies it: fp32 ([vocab, hidden], tied to the embedding or
    /// not), rounded to bf16 in bf16 compute when stored wider.
    func headMatrix() -> [Float] {
        let w = headWeight ?? embedding
        guard computeDType == .bf16, !headStoredBF16 else { return w }
        if let r = headRounded { return r }
        var r = w
        r.withUnsafeMutableBufferPointer { Kernels.roundToBF16InPlace($0.baseAddress!, count: $0.count) }
        headRounded = r
        return r
    }

    /// out (m × vocab) = g·Wᵀ (`forward`) or g (m × hidden) = out·W on oneDNN with bf16 operands; false when
    /// oneDNN is not the backend, the chunk is a few rows, or it failed.
    func headOneDNN(forward: Bool, m: Int, g: UnsafeMutablePointer<Float>, out: UnsafeMutablePointer<Float>) -> Bool {
        guard compute.backend == .onednn, m > LinearWeight.directRows else { return false }
        let c = config, d = c.hiddenSize, vocab = c.vocabSize
        if headBF16 == nil {
            let w = headWeight ?? embedding
            var h = [UInt16](repeating: 0, count: w.count)
            w.withUnsafeBufferPointer { wb in h.withUnsafeMutableBufferPointer {
                OneDNN.convert(wb.baseAddress!, ld: d, rows: vocab, cols: d, into: $0.baseAddress!, ldd: d)
            } }
            headBF16 = h
        }
        let need = m * (forward ? d : vocab)
        if headOperand.count < need { headOperand = [UInt16](repeating: 0, count: need) }
        let ok = headBF16!.withUnsafeBufferPointer { hb in
            headOperand.withUnsafeMutableBufferPointer { ob in
                let w = hb.baseAddress!, a = ob.baseAddress!
                if forward {
                    OneDNN.convert(g, ld: d, rows: m, cols: d, into: a, ldd: d)
                    return OneDNN.gemm(transB: true, m: m, n: vocab, k: d, a: a, lda: d, b: w, ldb: d, accumulate: false, c: out, ldc: vocab)
                }
                OneDNN.convert(out, ld: vocab, rows: m, cols: vocab, into: a, ldd: vocab)
                return OneDNN.gemm(transB: false, m: m, n: d, k: vocab, a: a, lda: vocab, b: w, ldb: d, accumulate: false, c: g, ldc: d)
            }
        }
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
        let hw = headMatrix()
        hw.withUnsafeBufferPointer { hwb in
            let w = hwb.baseAddress!
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
                        // A few rows (decoding): one dot product per vocabulary row, split across cores; from the
                        // mapped weight when it is bf16 (the same values and summation order as the fp32 copy).
                        if let ht = headStored {
                            let hb = ht.data.baseAddress!.assumingMemoryBound(to: UInt16.self)
                            Parallel.forRanges(vocab, grain: 1024) { r in
                                for t in r { for i in 0..<m { out[i * vocab + t] = Kernels.dotBF16(hb + t * d, g + i * d, count: d) } }
                            }
                        } else {
                            Parallel.forRanges(vocab, grain: 1024) { r in
                                for t in r { for i in 0..<m { out[i * vocab + t] = Kernels.dot(w + t * d, g + i * d, count: d) } }
                            }
                        }
                    } else {
                        gemm(.none, .transpose, m: m, n: vocab, k: d, a: g, lda: d, b: w, ldb: d, c: out, ldc: vocab)
                    }
                }
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
                            Backward.crossEntropy(out, rows: m, vocab: vocab, targets: $0.baseAddress!, scale: scale)
                        }
                    }
                    nll += s
                    count += k
                    // d(normed rows) = dlogits · W_head, scattered back to their rows.
                    prof.measure("gemm head", flops: 2.0 * Double(m * vocab * d)) {
                        if headOneDNN(forward: false, m: m, g: g, out: out) { return }
                        if bf16 { Kernels.roundToBF16InPlace(out, count: m * vocab) }
                        gemm(.none, .none, m: m, n: d, k: vocab, a: out, lda: vocab, b: w, ldb: d, c: g, ldc: d)
                    }
                    for k in 0..<m { (dn + rows[i0 + k] * d).update(from: g + k * d, count: d) }
                }
                i0 += m
            }
        }
        return (nll, count)
    }
}
