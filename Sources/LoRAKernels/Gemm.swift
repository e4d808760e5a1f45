// Gemm: row-major single-precision matrix products through OpenBLAS cblas_sgemm, with named transposes,
// plus a naive reference used by tests. C[m×n] = alpha · op(A)[m×k] · op(B)[k×n] + beta · C.
import CBLAS

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

/// Row-major SGEMM. `lda`, `ldb`, `ldc` are row strides of A, B, C as stored (before op()).
/// op(A) is m×k: A is stored m×k (`.none`, lda ≥ k) or k×m (`.transpose`, lda ≥ m).
public func gemm(
    _ transA: Transpose, _ transB: Transpose,
    m: Int, n: Int, k: Int,
    alpha: Float = 1,
    a: UnsafePointer<Float>, lda: Int,
    b: UnsafePointer<Float>, ldb: Int,
    beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int
) {
    precondition(lda >= max(1, transA == .none ? k : m), "gemm: lda too small")
    precondition(ldb >= max(1, transB == .none ? n : k), "gemm: ldb too small")
    precondition(ldc >= max(1, n), "gemm: ldc too small")
    if m == 0 || n == 0 { return }
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
