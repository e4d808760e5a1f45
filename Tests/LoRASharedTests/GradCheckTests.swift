// GradCheckTests: every backward kernel against central finite differences of a Double forward reference, on
// tiny shapes, for the loss L = Σ c·y with random c. The kernels run in Float, so the bound is relative 1e-3.
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

final class GradCheckTests: XCTestCase {
    /// Float kernels vs Double finite differences (h = 1e-5): a correct formula lands near 1e-5 relative.
    static let tolerance = 1e-3

    var rng = Xoshiro256(seed: 11)
    func rand(_ n: Int, _ s: Float = 1) -> [Float] { (0..<n).map { _ in rng.normal() * s } }

    /// Central differences of f at x (Double).
    func numericGrad(_ x: [Double], _ f: ([Double]) -> Double) -> [Double] {
        let h = 1e-5
        return x.indices.map { i in
            var a = x, b = x
            a[i] += h; b[i] -= h
            return (f(a) - f(b)) / (2 * h)
        }
    }

    func assertClose(_ analytic: [Float], _ numeric: [Double], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        let scale = max(1e-3, numeric.map(abs).max() ?? 1)
        let err = zip(analytic, numeric).map { abs(Double($0) - $1) }.max() ?? 0
        XCTAssertLessThan(err / scale, GradCheckTests.tolerance, "\(what): max error \(err) relative to \(scale)", file: file, line: line)
        print("gradcheck \(what): max rel error \(err / scale)")
    }

    func testRMSNorm() {
        let rows = 3, dim = 8, eps: Float = 1e-5
        let x = rand(rows * dim), w = rand(dim), c = rand(rows * dim)
        func f(_ xd: [Double]) -> Double {
            var l = 0.0
            for i in 0..<rows {
                let ss = (0..<dim).reduce(0.0) { $0 + xd[i * dim + $1] * xd[i * dim + $1] }
                let r = 1 / (ss / Double(dim) + Double(eps)).squareRoot()
                for j in 0..<dim { l += Double(c[i * dim + j]) * xd[i * dim + j] * r * Double(w[j]) }
            }
            return l
        }
        var y = [Float](repeating: 0, count: rows * dim), rstd = [Float](repeating: 0, count: rows)
        var dx = [Float](repeating: 0, count: rows * dim)
        Kernels.rmsNorm(&y, x, w, rows: rows, dim: dim, eps: eps, rstd: &rstd)
        Backward.rmsNorm(&dx, c, x, w, rstd, rows: rows, dim: dim)
        assertClose(dx, numericGrad(x.map(Double.init), f), "rmsnorm dx")
    }

    /// qwen3's per-head RMSNorm (q_norm / k_norm) over strided rows, in place: forward against the Double
    /// reference, backward against finite differences.
    func testHeadRMSNorm() {
        let rows = 3, heads = 2, hd = 6, ld = heads * hd + 5, eps: Float = 1e-6
        var x = rand(rows * ld), w = rand(hd), c = rand(rows * ld)
        for i in 0..<rows { for j in (heads * hd)..<ld { c[i * ld + j] = 0 } }  // the columns past the heads are not normed
        w = w.map { 1 + 0.3 * $0 }
        func f(_ xd: [Double]) -> Double {
            var l = 0.0
            for i in 0..<rows {
                for h in 0..<heads {
                    let o = i * ld + h * hd
                    let ss = (0..<hd).reduce(0.0) { $0 + xd[o + $1] * xd[o + $1] }
                    let r = 1 / (ss / Double(hd) + Double(eps)).squareRoot()
                    for j in 0..<hd { l += Double(c[o + j]) * xd[o + j] * r * Double(w[j]) }
                }
            }
            return l
        }
        let x0 = x
        var saved = [Float](repeating: 0, count: rows * heads * hd), rstd = [Float](repeating: 0, count: rows * (heads + 1))
        Kernels.headRMSNorm(&x, ld: ld, rows: rows, heads: heads, headDim: hd, w: w, eps: eps,
                            save: &saved, ldSave: heads * hd, rstd: &rstd, ldRstd: heads + 1)
        let forward = zip(x, c).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        XCTAssertEqual(forward, f(x0.map(Double.init)), accuracy: 1e-4)
        for i in 0..<rows { XCTAssertEqual(Array(saved[(i * heads * hd)..<((i + 1) * heads * hd)]), Array(x0[(i * ld)..<(i * ld + heads * hd)])) }
        var d = c
        Backward.headRMSNorm(&d, ld: ld, x: saved, ldx: heads * hd, w: w, rstd: rstd, ldRstd: heads + 1, rows: rows, heads: heads, headDim: hd)
        let num = numericGrad(x0.map(Double.init), f)
        var got: [Float] = [], want: [Double] = []
        for i in 0..<rows { for j in 0..<(heads * hd) { got.append(d[i * ld + j]); want.append(num[i * ld + j]) } }
        assertClose(got, want, "head rmsnorm dx")
    }

    func testSiluMul() {
        let rows = 2, cols = 5
        let g = rand(rows * cols, 2), u = rand(rows * cols), c = rand(rows * cols)
        func silu(_ v: Double) -> Double { v / (1 + Foundation.exp(-v)) }
        let dgNum = numericGrad(g.map(Double.init)) { gd in (0..<(rows * cols)).reduce(0.0) { $0 + Double(c[$1]) * silu(gd[$1]) * Double(u[$1]) } }
        let duNum = numericGrad(u.map(Double.init)) { ud in (0..<(rows * cols)).reduce(0.0) { $0 + Double(c[$1]) * silu(Double(g[$1])) * ud[$1] } }
        var dg = [Float](repeating: 0, count: rows * cols), du = dg
        Backward.siluMul(dg: &dg, du: &du, ldd: cols, dh: c, ldh: cols, g: g, u: u, ld: cols, rows: rows, cols: cols)
        assertClose(dg, dgNum, "silu·u dg")
        assertClose(du, duNum, "silu·u du")
    }

    func testRoPE() throws {
        let cfg = try ModelConfig.load(directory: Fixtures.path("forward/llama3-rope/model"))
        let tables = RopeTables(config: cfg, positions: 16)
        let rows = 3, heads = 2, hd = cfg.headDim, ld = heads * hd
        let x = rand(rows * ld), c = rand(rows * ld)
        let pos: [Int32] = [0, 5, 15]
        // y = R(θ)x is linear: dL/dx = R(θ)ᵀ c, checked by differences of the forward kernel in Double.
        func f(_ xd: [Double]) -> Double {
            var l = 0.0
            let half = hd / 2
            for i in 0..<rows {
                for h in 0..<heads {
                    for j in 0..<half {
                        let a = xd[i * ld + h * hd + j], b = xd[i * ld + h * hd + j + half]
                        let cs = Double(tables.cos[Int(pos[i]) * half + j]), sn = Double(tables.sin[Int(pos[i]) * half + j])
                        l += Double(c[i * ld + h * hd + j]) * (a * cs - b * sn) + Double(c[i * ld + h * hd + j + half]) * (b * cs + a * sn)
                    }
                }
            }
            return l
        }
        var d = c
        Backward.rope(&d, ld: ld, rows: rows, heads: heads, headDim: hd, positions: pos, cos: tables.cos, sin: tables.sin)
        assertClose(d, numericGrad(x.map(Double.init), f), "rope")
    }

    func testSoftmax() {
        let n = 7, valid = 5
        let s = rand(n, 2), c = rand(n)
        func f(_ sd: [Double]) -> Double {
            let m = sd[0..<valid].max()!
            let e = sd[0..<valid].map { Foundation.exp($0 - m) }
            let z = e.reduce(0, +)
            return (0..<valid).reduce(0.0) { $0 + Double(c[$1]) * e[$1] / z }
        }
        var p = s
        Kernels.softmaxRow(&p, count: n, valid: valid)
        var dp = c
        Backward.softmaxRow(&dp, p, valid: valid, count: n)
        assertClose(dp, numericGrad(s.map(Double.init), f), "softmax")
    }

    func testCrossEntropy() {
        let rows = 3, vocab = 11
        let logits = rand(rows * vocab, 2)
        let targets: [Int32] = [4, -100, 10]
        let scale: Float = 0.5
        func f(_ ld: [Double]) -> Double {
            var l = 0.0
            for i in 0..<rows where targets[i] >= 0 {
                let row = ld[(i * vocab)..<((i + 1) * vocab)]
                let m = row.max()!
                let lse = m + Foundation.log(row.reduce(0.0) { $0 + Foundation.exp($1 - m) })
                l += Double(scale) * (lse - ld[i * vocab + Int(targets[i])])
            }
            return l
        }
        var g = logits
        let (nll, count) = Backward.crossEntropy(&g, rows: rows, vocab: vocab, targets: targets, scale: scale)
        XCTAssertEqual(count, 2)
        XCTAssertEqual(nll * Double(scale), f(logits.map(Double.init)), accuracy: 1e-4)
        assertClose(g, numericGrad(logits.map(Double.init), f), "cross-entropy")
    }

    /// gemma's GeGLU h = gelu_tanh(g)·u: forward against the Double formula, dg and du against differences.
    func testGeluTanhMul() {
        let rows = 2, cols = 11
        let g = rand(rows * cols, 3), u = rand(rows * cols), c = rand(rows * cols)
        func gelu(_ v: Double) -> Double { 0.5 * v * (1 + Foundation.tanh((2 / Double.pi).squareRoot() * (v + 0.044715 * v * v * v))) }
        var h = [Float](repeating: 0, count: rows * cols)
        Kernels.geluTanhMul(&h, ldh: cols, g, u, ld: cols, rows: rows, cols: cols)
        for i in h.indices { XCTAssertEqual(Double(h[i]), gelu(Double(g[i])) * Double(u[i]), accuracy: 1e-5) }
        let dgNum = numericGrad(g.map(Double.init)) { gd in (0..<(rows * cols)).reduce(0.0) { $0 + Double(c[$1]) * gelu(gd[$1]) * Double(u[$1]) } }
        let duNum = numericGrad(u.map(Double.init)) { ud in (0..<(rows * cols)).reduce(0.0) { $0 + Double(c[$1]) * gelu(Double(g[$1])) * ud[$1] } }
        var dg = [Float](repeating: 0, count: rows * cols), du = dg
        Backward.geluTanhMul(dg: &dg, du: &du, ldd: cols, dh: c, ldh: cols, g: g, u: u, ld: cols, rows: rows, cols: cols)
        assertClose(dg, dgNum, "gelu_tanh·u dg")
        assertClose(du, duNum, "gelu_tanh·u du")
    }

    /// FastMath.tanh over the range soft-capping and GeGLU see, including saturation.
    func testTanh() {
        var worst = 0.0
        for i in -4000...4000 {
            let x = Float(i) / 200
            worst = max(worst, abs(Double(FastMath.tanh(x)) - Foundation.tanh(Double(x))))
            let v = FastMath.tanh(SIMD8<Float>(repeating: x))
            worst = max(worst, abs(Double(v[3]) - Foundation.tanh(Double(x))))
        }
        XCTAssertLessThan(worst, 5e-7)
        XCTAssertEqual(FastMath.tanh(Float(100)), 1)
        XCTAssertEqual(FastMath.tanh(Float(-100)), -1)
    }

    /// gemma2's soft-capped attention scores: capped = cap·tanh(raw/cap), then softmax; ∂/∂raw through
    /// Backward.softmaxRow and Backward.softcap.
    func testSoftcappedSoftmax() {
        let n = 9, valid = 7, cap: Float = 2
        let s = rand(n, 4), c = rand(n)
        func f(_ sd: [Double]) -> Double {
            let z = sd[0..<valid].map { Double(cap) * Foundation.tanh($0 / Double(cap)) }
            let m = z.max()!
            let e = z.map { Foundation.exp($0 - m) }
            let t = e.reduce(0, +)
            return (0..<valid).reduce(0.0) { $0 + Double(c[$1]) * e[$1] / t }
        }
        var p = s
        Kernels.softcap(&p, ld: n, rows: 1, cols: n, cap: cap)
        let capped = p
        for i in 0..<n { XCTAssertEqual(Double(capped[i]), Double(cap) * Foundation.tanh(Double(s[i]) / Double(cap)), accuracy: 1e-6) }
        Kernels.softmaxRow(&p, count: n, valid: valid)
        var dp = c
        Backward.softmaxRow(&dp, p, valid: valid, count: n)
        Backward.softcap(&dp, capped: capped, count: n, cap: cap)
        assertClose(dp, numericGrad(s.map(Double.init), f), "soft-capped softmax")
    }

    /// gemma2's final logit soft-capping in the cross-entropy: the logits arrive capped, the gradient leaves for
    /// the raw ones.
    func testSoftcappedCrossEntropy() {
        let rows = 3, vocab = 11, cap: Float = 3
        let raw = rand(rows * vocab, 4)
        let targets: [Int32] = [4, -100, 10]
        let scale: Float = 0.5
        func f(_ ld: [Double]) -> Double {
            var l = 0.0
            for i in 0..<rows where targets[i] >= 0 {
                let row = ld[(i * vocab)..<((i + 1) * vocab)].map { Double(cap) * Foundation.tanh($0 / Double(cap)) }
                let m = row.max()!
                let lse = m + Foundation.log(row.reduce(0.0) { $0 + Foundation.exp($1 - m) })
                l += Double(scale) * (lse - row[Int(targets[i])])
            }
            return l
        }
        var g = raw
        Kernels.softcap(&g, ld: vocab, rows: rows, cols: vocab, cap: cap)
        let (nll, count) = Backward.crossEntropy(&g, rows: rows, vocab: vocab, targets: targets, scale: scale, softcap: cap)
        XCTAssertEqual(count, 2)
        XCTAssertEqual(nll * Double(scale), f(raw.map(Double.init)), accuracy: 1e-4)
        assertClose(g, numericGrad(raw.map(Double.init), f), "soft-capped cross-entropy")
    }

    /// gemma's sandwich norm y += norm(x)·w: the forward against the Double formula; its backward is
    /// Backward.rmsNorm (testRMSNorm) from the saved rstd, which must equal rmsNorm's.
    func testRMSNormAdd() {
        let rows = 3, dim = 8, eps: Float = 1e-6
        let x = rand(rows * dim), w = rand(dim), y0 = rand(rows * dim)
        var y = y0, rstd = [Float](repeating: 0, count: rows), rstd2 = rstd
        var n = [Float](repeating: 0, count: rows * dim)
        Kernels.rmsNormAdd(&y, x, w, rows: rows, dim: dim, eps: eps, rstd: &rstd)
        Kernels.rmsNorm(&n, x, w, rows: rows, dim: dim, eps: eps, rstd: &rstd2)
        XCTAssertEqual(rstd, rstd2)
        for i in y.indices { XCTAssertEqual(y[i], y0[i] + n[i], accuracy: 1e-6) }
    }
}
