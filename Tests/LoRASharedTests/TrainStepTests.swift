// TrainStepTests: the training step's loss equals the eval forward's, its LoRA gradients match finite
// differences of the whole-model loss, and they are independent of how the batch is split into calls.
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

final class TrainStepTests: XCTestCase {
    func load(_ name: String) throws -> (Transformer, ModelDir, TokenBatch) {
        let (tr, model, batch, _) = try loadForwardCase(name)
        return (tr, model, batch)
    }

    func testLossEqualsForward() throws {
        for name in ["llama-gqa-tied", "qwen2-bias", "llama-nf4", "llama3-rope"] {
            let (tr, _, batch) = try load(name)
            let f = try tr.forward(batch)
            let g = LoRAGradients(for: tr.lora)
            let s = try tr.trainStep(batch, lossScale: 1 / Float(f.tokens), grads: g)
            XCTAssertEqual(s.tokens, f.tokens)
            XCTAssertEqual(s.nllSum, f.nllSum, accuracy: 1e-5 * f.nllSum, name)
        }
    }

    /// Compares `g` with central differences of `meanLoss` on a seeded sample of A and B entries; returns
    /// (checked, worst relative error). The bound reflects Float loss noise at h = 1e-2.
    func checkFiniteDifferences(_ tr: Transformer, _ g: LoRAGradients, seed: UInt64, meanLoss: () throws -> Double) throws -> (Int, Double) {
        var rng = Xoshiro256(seed: seed)
        var checked = 0, worst = 0.0
        for module in tr.lora.keys.sorted() where rng.next() % 3 == 0 {
            for which in ["a", "b"] {
                let n = which == "a" ? tr.lora[module]!.a.count : tr.lora[module]!.b.count
                let i = Int(rng.next() % UInt64(n))
                func loss(_ delta: Float) throws -> Double {
                    var l = tr.lora[module]!
                    if which == "a" { l.a[i] += delta } else { l.b[i] += delta }
                    let saved = tr.lora[module]!
                    tr.setLoRA(module, l)
                    defer { tr.setLoRA(module, saved) }
                    return try meanLoss()
                }
                let h: Float = 1e-2
                let numeric = (try loss(h) - loss(-h)) / Double(2 * h)
                let analytic = Double(which == "a" ? g.a[module]![i] : g.b[module]![i])
                let err = abs(numeric - analytic) / max(1e-3, abs(numeric))
                worst = max(worst, err)
                XCTAssertLessThan(err, 2e-2, "\(module).\(which)[\(i)]: analytic \(analytic) numeric \(numeric)")
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 4)
        return (checked, worst)
    }

    func testGradientsMatchFiniteDifferences() throws {
        let (tr, _, batch) = try load("llama-gqa-tied")
        let count = try tr.forward(batch).tokens
        let g = LoRAGradients(for: tr.lora)
        _ = try tr.trainStep(batch, lossScale: 1 / Float(count), grads: g)
        let (checked, worst) = try checkFiniteDifferences(tr, g, seed: 5) {
            let o = try tr.forward(batch)
            return o.nllSum / Double(o.tokens)
        }
        print("whole-model finite differences: \(checked) parameters, worst relative error \(worst)")
    }

    /// The same check on the default training path, LoRA dropout on: the loss is the training step's own
    /// (same masks for every evaluation, since they depend only on seed, step, micro-batch, module, element).
    func testGradientsMatchFiniteDifferencesWithDropout() throws {
        let (tr, _, batch) = try load("llama-gqa-tied")
        let drop = LoRADropout(rate: 0.3, seed: 11, step: 4, microBatch: 1)
        let count = try tr.forward(batch).tokens
        let g = LoRAGradients(for: tr.lora)
        let base = try tr.trainStep(batch, lossScale: 1 / Float(count), grads: g, dropout: drop)
        XCTAssertNotEqual(base.nllSum, try tr.forward(batch).nllSum, "dropout changes the loss")
        let scratch = LoRAGradients(for: tr.lora)
        let (checked, worst) = try checkFiniteDifferences(tr, g, seed: 6) {
            try tr.trainStep(batch, lossScale: 1, grads: scratch, dropout: drop).nllSum / Double(count)
        }
        print("whole-model finite differences with dropout 0.3: \(checked) parameters, worst relative error \(worst)")
    }

    /// Dropout masks: a pure function of (seed, step, micro-batch, module, element); each micro-batch and
    /// module gets its own; the kept share is 1 − rate; kept values are scaled by 1/(1 − rate).
    func testDropoutMasksAreCounterBased() {
        let rows = 37, cols = 203  // not multiples of the vector width
        let x = [Float](repeating: 1, count: rows * cols)
        func mask(_ d: LoRADropout, _ module: String = "model.layers.0.self_attn.q_proj") -> [Float] {
            var out = [Float](repeating: -1, count: rows * cols)
            x.withUnsafeBufferPointer { xb in
                out.withUnsafeMutableBufferPointer { d.apply(xb.baseAddress!, ld: cols, rows: rows, cols: cols, module: module, into: $0.baseAddress!) }
            }
            return out
        }
        let d = LoRADropout(rate: 0.25, seed: 3, step: 9, microBatch: 0)
        let m0 = mask(d)
        XCTAssertEqual(m0, mask(d), "same key, same mask")
        var d1 = d; d1.microBatch = 1
        var d2 = d; d2.step = 10
        var d3 = d; d3.seed = 4
        for (other, what) in [(mask(d1), "micro-batch"), (mask(d2), "step"), (mask(d3), "seed"), (mask(d, "model.layers.0.self_attn.k_proj"), "module")] {
            let same = zip(m0, other).filter { $0 == $1 }.count
            // Independent masks agree on p² + (1 − p)² = 62.5% of elements.
            XCTAssertLessThan(abs(Double(same) / Double(m0.count) - 0.625), 0.03, "another \(what) gives another mask")
        }
        let kept = m0.filter { $0 != 0 }
        XCTAssertTrue(kept.allSatisfy { $0 == 1 / 0.75 }, "kept values are scaled by 1/(1 − rate)")
        let n = Double(m0.count), p = Double(kept.count) / n
        XCTAssertLessThan(abs(p - 0.75), 5 * (0.75 * 0.25 / n).squareRoot(), "kept share \(p)")
        // accumulate adds the masked values into a strided destination
        var acc = [Float](repeating: 2, count: rows * (cols + 5))
        x.withUnsafeBufferPointer { xb in
            acc.withUnsafeMutableBufferPointer {
                d.apply(xb.baseAddress!, ld: cols, rows: rows, cols: cols, module: "model.layers.0.self_attn.q_proj",
                        into: $0.baseAddress!, ldd: cols + 5, accumulate: true)
            }
        }
        for i in [0, 17, rows - 1] {
            for j in [0, 8, cols - 1] { XCTAssertEqual(acc[i * (cols + 5) + j], 2 + m0[i * cols + j]) }
            XCTAssertEqual(acc[i * (cols + 5) + cols + 2], 2, "padding untouched")
        }
    }

    func testGradientsAddAcrossMicroBatches() throws {
        let (tr, _, batch) = try load("llama-gqa-tied")
        let whole = LoRAGradients(for: tr.lora)
        _ = try tr.trainStep(batch, lossScale: 1, grads: whole)
        // The two rows separately, summed NLL (scale 1): identical gradients up to summation order.
        let parts = LoRAGradients(for: tr.lora)
        let T = batch.seq
        for b in 0..<batch.batch {
            let row = TokenBatch(tokens: Array(batch.tokens[(b * T)..<((b + 1) * T)]), labels: Array(batch.labels[(b * T)..<((b + 1) * T)]),
                                 lengths: [batch.lengths[b]], batch: 1, seq: T)
            _ = try tr.trainStep(row, lossScale: 1, grads: parts)
        }
        for k in whole.a.keys {
            XCTAssertLessThan(maxAbsDiff(whole.a[k]!, parts.a[k]!), 1e-4, k)
            XCTAssertLessThan(maxAbsDiff(whole.b[k]!, parts.b[k]!), 1e-4, k)
        }
    }
}
