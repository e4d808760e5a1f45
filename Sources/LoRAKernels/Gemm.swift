// Gemm: row-major single-precision matrix products through OpenBLAS cblas_sgemm, with named transposes,
// plus a naive reference used by tests. C[m×n] = alpha · op(A)[m×k] · op(B)[k×n] + beta · C.
import CBF16
import CBLAS
import Dispatch

public enum Transpose: Sendable {
    case none
    case transpose

    var cblas: CBLAS_TRANSPOSE { self == .none ? CblasNoTrans : CblasTrans }
}

@inline(__always)
private func int32(_ v: Int, _ what: StaticString) -> Int32 {
    precondition(v >= 0 && v <= Int(Int32.max), "gemm: \(what) = \(v) does not fit a BLAS Int32")
    return Int32(v)
}

/// Row-major SGEMM. `lda`, `ldb`, `ldc` are row strides of A, B, C as stored (before op()). `acrossCores`: see
/// gemmAcrossCores below (LoRA's products in bf16 compute).
/// op(A) is m×k: A is stored m×k (`.none`, lda ≥ k) or k×m (`.transpose`, lda ≥ m).
public func gemm(
    _ transA: Transpose, _ transB: Transpose,
    m: Int, n: Int, k: Int,
    alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int,
    acrossCores: Bool = false
) {
    precondition(lda >= max(1, transA == .none ? k : m), "gemm: lda too small")
    precondition(ldb >= max(1, transB == .none ? n : k), "gemm: ldb too small")
    precondition(ldc >= max(1, n), "gemm: ldc too small")
    if m == 0 || n == 0 { return }
    if acrossCores && gemmAcrossCores(transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc) { return }
    cblas_sgemm(
        CblasRowMajor, transA.cblas, transB.cblas,
        int32(m, "m"), int32(n, "n"), int32(k, "k"),
        alpha, a, int32(lda, "lda"), b, int32(ldb, "ldb"),
        beta, c, int32(ldc, "ldc"))
}

/// The obviously correct triple loop (accumulating in Double), kept beside the fast path for tests.
public func gemmNaive(
    _ transA: Transpose, _ transB: Transpose,
    m: Int, n: Int, k: Int,
    alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int
) {
    for i in 0..<m {
        for j in 0..<n {
            var acc = 0.0
            for p in 0..<k {
                let av = transA == .none ? a[i * lda + p] : a[p * lda + i]
                let bv = transB == .none ? b[p * ldb + j] : b[j * ldb + p]
                acc += Double(av) * Double(bv)
            }
            let prev = beta == 0 ? 0 : Double(beta) * Double(c[i * ldc + j])
            c[i * ldc + j] = Float(Double(alpha) * acc + prev)
        }
    }
}

/// Runs `body` with OpenBLAS single-threaded, then restores its thread count: for GEMMs that our own worker
/// threads issue concurrently (attention over batch × head), each on the core that calls it.
public func withSingleThreadedBLAS<T>(_ body: () -> T) -> T {
    let n = openblas_get_num_threads()
    if n > 1 { openblas_set_num_threads(1) }
    defer { if n > 1 { openblas_set_num_threads(n) } }
    return body()
}

/// Number of threads OpenBLAS uses (0 or negative: leave OpenBLAS's own default).
public func setBLASThreads(_ n: Int) {
    if n > 0 { openblas_set_num_threads(Int32(n)) }
}

/// `gemm(..., acrossCores: true)`: for products that run while OpenBLAS is held to the calling thread (bf16 compute
/// on oneDNN, where its spinning workers would take the cores from oneDNN's) — LoRA's rank-r products. They go to
/// oneDNN's fp32 matmul, on the same threads as its bf16 products; where oneDNN offers only its reference kernel
/// for a shape (or fails), C is cut into one block of rows (or of columns, when wider than tall) per core, each a
/// single-threaded sgemm. False (the caller runs one sgemm) with OpenBLAS on several threads, one core, or a
/// product too small to pay for the hand-off. fp32 throughout: only the order of each sum over k can differ.
private func gemmAcrossCores(_ transA: Transpose, _ transB: Transpose, _ m: Int, _ n: Int, _ k: Int, _ alpha: Float,
                             _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int, _ beta: Float,
                             _ c: UnsafeMutablePointer<Float>, _ ldc: Int) -> Bool {
    let parts = min(Parallel.cores, max(m, n) / 16)
    guard parts > 1, 2 * m * n * max(k, 1) >= gemmSplitMinFlops, beta == 0 || beta == 1,
          openblas_get_num_threads() == 1 else { return false }
    if gemmOnOneDNN && lp_f32_gemm(transA == .none ? 0 : 1, transB == .none ? 0 : 1, Int64(m), Int64(n), Int64(k), alpha,
                                   a, Int64(lda), b, Int64(ldb), beta, c, Int64(ldc)) == 0 {
        return true
    }
    let byRows = m >= n
    // `parts` contiguous blocks (forRanges cuts min(cores, total / 16))
    Parallel.forRanges(byRows ? m : n, grain: 16) { r in
        let s = r.lowerBound, e = r.upperBound
        if byRows {  // rows s..<e of op(A) and C
            let ap = transA == .none ? a + s * lda : a + s
            gemm(transA, transB, m: e - s, n: n, k: k, alpha: alpha, a: ap, lda: lda, b: b, ldb: ldb, beta: beta,
                 c: c + s * ldc, ldc: ldc)
        } else {  // columns s..<e of op(B) and C
            let bp = transB == .none ? b + s : b + s * ldb
            gemm(transA, transB, m: m, n: e - s, k: k, alpha: alpha, a: a, lda: lda, b: bp, ldb: ldb, beta: beta,
                 c: c + s, ldc: ldc)
        }
    }
    return true
}

/// The least work (FLOPs) `gemm(..., acrossCores: true)` hands to other cores: below it the hand-off costs more than it saves.
nonisolated(unsafe) public var gemmSplitMinFlops = 1 << 20
/// Whether `gemmAcrossCores` tries oneDNN's fp32 matmul first (tests turn it off to check the split).
nonisolated(unsafe) public var gemmOnOneDNN = true
