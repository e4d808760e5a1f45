// NumericsTests: the GEMM wrapper against the naive reference for every transpose combination, fp16/bf16
// rounding against torch's rules, the seeded generator's reproducibility, and torch's cascade sum.
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

final class NumericsTests: XCTestCase {
    /// fp32 GEMM vs a Double-accumulated reference: relative error of a k-term dot product.
    static let gemmTolerance: Float = 1e-5

    func testGemmMatchesNaiveForAllTransposes() {
        var rng = Xoshiro256(seed: 7)
        for (m, n, k) in [(1, 1, 1), (3, 5, 7), (17, 33, 65), (64, 1, 300)] {
            for ta in [Transpose.none, .transpose] {
                for tb in [Transpose.none, .transpose] {
                    let a = (0..<(m * k)).map { _ in rng.uniform(-1, 1) }
                    let b = (0..<(k * n)).map { _ in rng.uniform(-1, 1) }
                    var c0 = (0..<(m * n)).map { _ in rng.uniform(-1, 1) }
                    var c1 = c0
                    let lda = ta == .none ? k : m, ldb = tb == .none ? n : k
                    gemm(ta, tb, m: m, n: n, k: k, alpha: 0.5, a: a, lda: lda, b: b, ldb: ldb, beta: 0.25, c: &c0, ldc: n)
                    gemmNaive(ta, tb, m: m, n: n, k: k, alpha: 0.5, a: a, lda: lda, b: b, ldb: ldb, beta: 0.25, c: &c1, ldc: n)
                    let d = maxAbsDiff(c0, c1)
                    XCTAssertLessThan(d, NumericsTests.gemmTolerance * Float(k), "m\(m) n\(n) k\(k) \(ta) \(tb): max diff \(d)")
                }
            }
        }
    }

    /// gemm(..., acrossCores: true) (LoRA's products while OpenBLAS is held to one thread): oneDNN's fp32 matmul and the split
    /// into row / column blocks per core, each against the reference, on strided operands and both betas.
    func testGemmAcrossCoresMatchesNaive() {
        let savedMin = gemmSplitMinFlops, savedOn = gemmOnOneDNN, savedCores = Parallel.cores
        defer { gemmSplitMinFlops = savedMin; gemmOnOneDNN = savedOn; Parallel.cores = savedCores }
        gemmSplitMinFlops = 1
        Parallel.cores = 2
        var rng = Xoshiro256(seed: 11)
        withSingleThreadedBLAS {
            for onednn in [true, false] {
                gemmOnOneDNN = onednn
                for (m, n, k) in [(40, 33, 17), (20, 70, 9), (3, 5, 7), (64, 16, 300)] {
                    for ta in [Transpose.none, .transpose] {
                        for tb in [Transpose.none, .transpose] {
                            for beta: Float in [0, 1] {
                                let lda = (ta == .none ? k : m) + 3, ldb = (tb == .none ? n : k) + 2, ldc = n + 5
                                let a = (0..<((ta == .none ? m : k) * lda)).map { _ in rng.uniform(-1, 1) }
                                let b = (0..<((tb == .none ? k : n) * ldb)).map { _ in rng.uniform(-1, 1) }
                                var c0 = (0..<(m * ldc)).map { _ in rng.uniform(-1, 1) }
                                var c1 = c0
                                gemm(ta, tb, m: m, n: n, k: k, alpha: 0.5, a: a, lda: lda, b: b, ldb: ldb, beta: beta,
                                     c: &c0, ldc: ldc, acrossCores: true)
                                gemmNaive(ta, tb, m: m, n: n, k: k, alpha: 0.5, a: a, lda: lda, b: b, ldb: ldb, beta: beta,
                                          c: &c1, ldc: ldc)
                                let d = maxAbsDiff(c0, c1)  // the padding columns too: untouched on both sides
                                XCTAssertLessThan(d, NumericsTests.gemmTolerance * Float(k),
                                                  "oneDNN \(onednn) m\(m) n\(n) k\(k) \(ta) \(tb) beta \(beta): max diff \(d)")
                            }
                        }
                    }
                }
            }
        }
    }

    func testBF16RoundsToNearestEven() {
        XCTAssertEqual(floatToBF16(1.0), 0x3F80)
        // 1 + 2^-8 is exactly halfway between bf16 1.0 and the next value: ties to even (down).
        XCTAssertEqual(floatToBF16(Float(bitPattern: 0x3F80_8000)), 0x3F80)
        // 0x3F818000 is halfway between 0x3F81 and 0x3F82: ties to even (up).
        XCTAssertEqual(floatToBF16(Float(bitPattern: 0x3F81_8000)), 0x3F82)
        XCTAssertEqual(floatToBF16(Float(bitPattern: 0x3F80_8001)), 0x3F81)
        XCTAssertEqual(floatToBF16(-.infinity), 0xFF80)
        XCTAssertTrue(bf16ToFloat(floatToBF16(.nan)).isNaN)
        for bits: UInt16 in [0x0000, 0x8000, 0x0001, 0x7F7F, 0xC2F7] {
            XCTAssertEqual(floatToBF16(bf16ToFloat(bits)), bits)
        }
    }

    func testF16RoundTrip() {
        XCTAssertEqual(floatToF16(1.0), 0x3C00)
        XCTAssertEqual(floatToF16(65504), 0x7BFF)
        XCTAssertEqual(f16ToFloat(0x0001), Float(bitPattern: 0x3380_0000))  // smallest subnormal 2^-24
        XCTAssertEqual(floatToF16(1e6), 0x7C00)  // overflow → inf, as torch
    }

    func testSeededGeneratorRepeats() {
        var a = Xoshiro256(seed: 42), b = Xoshiro256(seed: 42), c = Xoshiro256(seed: 43)
        let xa = (0..<100).map { _ in a.next() }, xb = (0..<100).map { _ in b.next() }, xc = (0..<100).map { _ in c.next() }
        XCTAssertEqual(xa, xb)
        XCTAssertNotEqual(xa, xc)
        var g = Xoshiro256(seed: 1)
        let u = (0..<10000).map { _ in g.uniform(-2, 2) }
        XCTAssertTrue(u.allSatisfy { $0 >= -2 && $0 < 2 })
        let normals = (0..<20000).map { _ in Double(g.normal()) }
        let mean = normals.reduce(0, +) / Double(normals.count)
        let variance = normals.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(normals.count)
        XCTAssertEqual(mean, 0, accuracy: 0.03)
        XCTAssertEqual(variance, 1, accuracy: 0.05)
    }

    func testTorchSumIsExactOnRepresentableSums() {
        // Sums of small integers are exact in any order: checks the cascade visits every element once.
        for n in [0, 1, 5, 15, 16, 17, 63, 64, 65, 1000, 4099, 40000] {
            let x = (0..<n).map { Float($0 % 7) }
            XCTAssertEqual(TorchSum.sum(x), Float(x.reduce(0) { $0 + Double($1) }), "n=\(n)")
        }
    }

    /// The 8-lane exp equals the scalar one bit for bit (so vectorizing softmax, SiLU and cross-entropy changed no
    /// result), over random values, the clamps, underflow and the tails; and stays within 2e-7 of libm.
    func testVectorExpEqualsScalarExp() {
        // A NaN (from non-finite weights) gives NaN, not a trap in the float-to-int conversion.
        XCTAssertTrue(FastMath.exp(Float.nan).isNaN)
        XCTAssertTrue(FastMath.exp(SIMD8<Float>(repeating: .nan))[0].isNaN)
        XCTAssertEqual(FastMath.exp(-Float.infinity), 0)
        var rng = Xoshiro256(seed: 9)
        var v: [Float] = [0, -0, 1, -1, 88.7, 88.71, 100, -87.3, -87.31, -104, 0.5, -0.5, 1e-30, -1e-30]
        for _ in 0..<100_000 { v.append(Float(Double(rng.next() >> 11) * 0x1p-53 * 200 - 105)) }
        while v.count % 8 != 0 { v.append(3) }
        var worst = 0.0
        v.withUnsafeBufferPointer { p in
            var i = 0
            while i < v.count {
                let e = FastMath.exp(UnsafeRawPointer(p.baseAddress! + i).loadUnaligned(as: SIMD8<Float>.self))
                for l in 0..<8 {
                    let x = p[i + l]
                    XCTAssertEqual(e[l].bitPattern, FastMath.exp(x).bitPattern, "exp(\(x))")
                    if x > -80 && x < 80 { worst = max(worst, abs(Double(e[l]) - Foundation.exp(Double(x))) / Foundation.exp(Double(x))) }
                }
                i += 8
            }
        }
        XCTAssertLessThan(worst, 2e-7)
    }
}
