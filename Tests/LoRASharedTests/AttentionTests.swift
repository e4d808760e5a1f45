// AttentionTests: the blocked, head-stacked causal attention (Transformer.attention, attentionBackward) against a
// direct per-head reference in Double: several query blocks with a partial last one, GQA groups of 1, 3 and 6
// heads, padded and packed sequences, and a sliding window.
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine

final class AttentionTests: XCTestCase {
    struct Case { let heads: Int, kvHeads: Int, window: Int? }

    /// A tiny model of that head layout (its weights are not used: only its config).
    func transformer(heads: Int, kvHeads: Int) throws -> Transformer {
        let dir = NSTemporaryDirectory() + "attn-\(heads)-\(kvHeads)-\(UUID().uuidString)"
        try TinyModel.write(to: dir, heads: heads, kvHeads: kvHeads)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        return try Transformer(model: try ModelDir(path: dir))
    }

    /// Two sequences of T = 150 (three query blocks of 64, the last partial): the first full length, the second
    /// 97 tokens long and packed from two examples (the second starting at 60), then padding.
    func batch(_ T: Int) -> TokenBatch {
        var b = TokenBatch(tokens: [Int32](repeating: 1, count: 2 * T), labels: [Int32](repeating: -100, count: 2 * T),
                           lengths: [T, 97], batch: 2, seq: T)
        b.segmentStarts = (0..<(2 * T)).map { r in r >= T && r - T >= 60 ? 60 : 0 }
        return b
    }

    /// The reference: per (sequence, head, query) over the query's keys (Transformer.keyRange), in Double.
    /// Returns (out, dqkv) for the given dO.
    func reference(_ tr: Transformer, qkv: [Float], dO: [Float], batch: TokenBatch, window: Int?) -> ([Double], [Double]) {
        let c = tr.config, T = batch.seq, hd = c.headDim, qd = c.numHeads * hd, kvd = c.numKVHeads * hd, ld = qd + 2 * kvd
        let group = c.numHeads / c.numKVHeads, scale = Double(c.attentionScale)
        var out = [Double](repeating: 0, count: batch.batch * T * qd), dqkv = [Double](repeating: 0, count: qkv.count)
        for b in 0..<batch.batch {
            let len = max(1, batch.lengths[b])
            for h in 0..<c.numHeads {
                let kvh = h / group
                func q(_ i: Int, _ d: Int) -> Int { (b * T + i) * ld + h * hd + d }
                func k(_ j: Int, _ d: Int) -> Int { (b * T + j) * ld + qd + kvh * hd + d }
                func v(_ j: Int, _ d: Int) -> Int { (b * T + j) * ld + qd + kvd + kvh * hd + d }
                for i in 0..<T {
                    let r = Transformer.keyRange(batch, b, i, len: len, window: window)
                    let keys = Array(r.from..<r.to)
                    let s = keys.map { j in scale * (0..<hd).reduce(0.0) { $0 + Double(qkv[q(i, $1)]) * Double(qkv[k(j, $1)]) } }
                    let m = s.max()!, e = s.map { Foundation.exp($0 - m) }, z = e.reduce(0, +), p = e.map { $0 / z }
                    let o = (b * T + i) * qd + h * hd
                    for (n, j) in keys.enumerated() { for d in 0..<hd { out[o + d] += p[n] * Double(qkv[v(j, d)]) } }
                    // Backward: dV += p·dO, dP = dO·V, dS = p·(dP − Σ p·dP), dQ = s·dS·K, dK += s·dS·Q.
                    let dp = keys.map { j in (0..<hd).reduce(0.0) { $0 + Double(dO[o + $1]) * Double(qkv[v(j, $1)]) } }
                    let dot = zip(p, dp).reduce(0.0) { $0 + $1.0 * $1.1 }
                    for (n, j) in keys.enumerated() {
                        let ds = p[n] * (dp[n] - dot)
                        for d in 0..<hd {
                            dqkv[v(j, d)] += p[n] * Double(dO[o + d])
                            dqkv[q(i, d)] += scale * ds * Double(qkv[k(j, d)])
                            dqkv[k(j, d)] += scale * ds * Double(qkv[q(i, d)])
                        }
                    }
                }
            }
        }
        return (out, dqkv)
    }

    func testStackedAttentionMatchesReference() throws {
        for cs in [Case(heads: 6, kvHeads: 2, window: nil), Case(heads: 6, kvHeads: 2, window: 40), Case(heads: 2, kvHeads: 2, window: nil),
                   Case(heads: 6, kvHeads: 1, window: 70)] {
            let tr = try transformer(heads: cs.heads, kvHeads: cs.kvHeads)
            let c = tr.config, T = 150, bt = batch(T)
            let qd = c.numHeads * c.headDim, ld = qd + 2 * c.numKVHeads * c.headDim
            var rng = Xoshiro256(seed: UInt64(cs.heads * 10 + cs.kvHeads))
            var qkv = (0..<(2 * T * ld)).map { _ in rng.normal() }
            let dO = (0..<(2 * T * qd)).map { _ in rng.normal() }
            let (refOut, refD) = reference(tr, qkv: qkv, dO: dO, batch: bt, window: cs.window)

            var out = [Float](repeating: .nan, count: 2 * T * qd)
            var scores = [Float](repeating: .nan, count: Transformer.attentionScratch(config: c, seq: T))
            qkv.withUnsafeMutableBufferPointer { q in out.withUnsafeMutableBufferPointer { o in scores.withUnsafeMutableBufferPointer { s in
                tr.attention(qkv: q.baseAddress!, out: o.baseAddress!, batch: bt, scores: s.baseAddress!, window: cs.window)
            } } }
            let label = "\(cs.heads)/\(cs.kvHeads) heads, window \(cs.window.map(String.init) ?? "none")"
            assertClose(out, refOut, label + ": output")

            let ws = Transformer.TrainWorkspace(config: c, rows: 2 * T, seq: T, maxR: 1, dropout: false, mlpBlock: c.intermediateSize)
            var dqkv = [Float](repeating: 0, count: qkv.count), datt = dO
            qkv.withUnsafeMutableBufferPointer { q in datt.withUnsafeMutableBufferPointer { d in dqkv.withUnsafeMutableBufferPointer { g in
                tr.attentionBackward(qkv: q.baseAddress!, datt: d.baseAddress!, dqkv: g.baseAddress!, batch: bt, ws: ws, window: cs.window)
            } } }
            assertClose(dqkv, refD, label + ": dqkv")
        }
    }

    func assertClose(_ got: [Float], _ want: [Double], _ label: String) {
        XCTAssertEqual(got.count, want.count)
        let scale = want.reduce(0.0) { max($0, abs($1)) }
        var worst = 0.0, at = 0
        for i in want.indices where abs(Double(got[i]) - want[i]) > worst || got[i].isNaN { worst = got[i].isNaN ? .infinity : abs(Double(got[i]) - want[i]); at = i }
        XCTAssertLessThan(worst, 1e-5 * max(1, scale), "\(label): worst |Δ| \(worst) at \(at) (got \(got[at]), want \(want[at]))")
    }
}
