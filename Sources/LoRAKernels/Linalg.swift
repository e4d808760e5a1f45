// Linalg: the dense factorizations the tools need beyond GEMM, on LAPACK (OpenBLAS ships it) in double: the thin
// SVD (lora-merge's svd combinations, lora-init's PiSSA), the thin Householder QR (lora-init's OLoRA) and the
// randomized low-rank SVD of torch.svd_lowrank (PiSSA's pissa_niter_N). Matrices are row-major [rows, cols];
// LAPACK sees the same bytes as the column-major transpose, which the wrappers account for.
import CBLAS

public enum LinalgError: Error, CustomStringConvertible, Sendable {
    case lapack(routine: String, info: Int)
    case tooLarge(rows: Int, cols: Int)

    public var description: String {
        switch self {
        case .lapack(let r, let i): return "LAPACK \(r) failed (info \(i)): the matrix has non-finite values or did not converge"
        case .tooLarge(let r, let c): return "a \(r) × \(c) matrix is too large for LAPACK's 32-bit sizes"
        }
    }
}

public enum Linalg {
    static func int32(_ v: Int, _ rows: Int, _ cols: Int) throws -> Int32 {
        guard v >= 0, v <= Int(Int32.max) else { throw LinalgError.tooLarge(rows: rows, cols: cols) }
        return Int32(v)
    }

    /// Thin SVD a = U·diag(S)·Vᵀ of row-major a [rows, cols]: U [rows, k], S descending [k], Vᵀ [k, cols]
    /// (row-major), k = min(rows, cols). LAPACK dgesdd. Each singular pair's sign is LAPACK's: torch's float32
    /// SVD may give the pair (u, v) as (−u, −v), the same product.
    public static func svd(_ a: [Double], rows: Int, cols: Int) throws -> (u: [Double], s: [Double], vt: [Double]) {
        precondition(a.count == rows * cols)
        // The row-major [rows, cols] bytes are column-major aᵀ [cols, rows]; its SVD U'·S·V'ᵀ = aᵀ gives
        // a = V'·S·U'ᵀ, so LAPACK's V'ᵀ (column-major [k, rows]) is our U row-major and its U' our Vᵀ.
        let k = min(rows, cols)
        guard k > 0 else { return ([], [], []) }
        var m = try int32(cols, rows, cols), n = try int32(rows, rows, cols)
        var lda = m, ldu = m, ldvt = try int32(k, rows, cols)
        var mat = a
        var s = [Double](repeating: 0, count: k)
        var lu = [Double](repeating: 0, count: cols * k)
        var lvt = [Double](repeating: 0, count: k * rows)
        var iwork = [Int32](repeating: 0, count: 8 * k)
        var info: Int32 = 0
        var jobz = CChar(UInt8(ascii: "S"))
        var lwork: Int32 = -1
        var query = [Double](repeating: 0, count: 1)
        dgesdd_(&jobz, &m, &n, &mat, &lda, &s, &lu, &ldu, &lvt, &ldvt, &query, &lwork, &iwork, &info, 1)
        guard info == 0 else { throw LinalgError.lapack(routine: "dgesdd", info: Int(info)) }
        lwork = Int32(min(query[0], Double(Int32.max)))
        var work = [Double](repeating: 0, count: max(1, Int(lwork)))
        dgesdd_(&jobz, &m, &n, &mat, &lda, &s, &lu, &ldu, &lvt, &ldvt, &work, &lwork, &iwork, &info, 1)
        guard info == 0 else { throw LinalgError.lapack(routine: "dgesdd", info: Int(info)) }
        // lvt column-major [k, rows]: element (j, i) at j + i·k = row-major U[i, j]; lu column-major [cols, k]:
        // element (c, j) at c + j·cols = row-major Vᵀ[j, c].
        return (lvt, s, lu)
    }

    /// Thin QR a = Q·R of row-major a [rows, cols] by Householder reflections (LAPACK dgeqrf + dorgqr, as
    /// torch.linalg.qr): Q [rows, k] with orthonormal columns, R [k, cols] upper triangular, k = min(rows, cols).
    public static func qr(_ a: [Double], rows: Int, cols: Int) throws -> (q: [Double], r: [Double]) {
        precondition(a.count == rows * cols)
        let k = min(rows, cols)
        guard k > 0 else { return ([], []) }
        var m = try int32(rows, rows, cols), n = try int32(cols, rows, cols), kk = try int32(k, rows, cols)
        var lda = m
        // Column-major copy of a.
        var cm = [Double](repeating: 0, count: rows * cols)
        for i in 0..<rows { for j in 0..<cols { cm[i + j * rows] = a[i * cols + j] } }
        var tau = [Double](repeating: 0, count: k)
        var info: Int32 = 0
        var lwork: Int32 = -1
        var query = [Double](repeating: 0, count: 1)
        dgeqrf_(&m, &n, &cm, &lda, &tau, &query, &lwork, &info)
        guard info == 0 else { throw LinalgError.lapack(routine: "dgeqrf", info: Int(info)) }
        lwork = Int32(min(query[0], Double(Int32.max)))
        var work = [Double](repeating: 0, count: max(1, Int(lwork)))
        dgeqrf_(&m, &n, &cm, &lda, &tau, &work, &lwork, &info)
        guard info == 0 else { throw LinalgError.lapack(routine: "dgeqrf", info: Int(info)) }
        var r = [Double](repeating: 0, count: k * cols)
        for i in 0..<k { for j in i..<cols { r[i * cols + j] = cm[i + j * rows] } }
        // Q: the first k columns, formed in place from the reflectors.
        lwork = -1
        dorgqr_(&m, &kk, &kk, &cm, &lda, &tau, &query, &lwork, &info)
        guard info == 0 else { throw LinalgError.lapack(routine: "dorgqr", info: Int(info)) }
        lwork = Int32(min(query[0], Double(Int32.max)))
        work = [Double](repeating: 0, count: max(1, Int(lwork)))
        dorgqr_(&m, &kk, &kk, &cm, &lda, &tau, &work, &lwork, &info)
        guard info == 0 else { throw LinalgError.lapack(routine: "dorgqr", info: Int(info)) }
        var q = [Double](repeating: 0, count: rows * k)
        for i in 0..<rows { for j in 0..<k { q[i * k + j] = cm[i + j * rows] } }
        return (q, r)
    }

    /// Row-major C [m, n] = op(A)·op(B) in double (cblas_dgemm).
    public static func matmul(_ a: [Double], _ b: [Double], m: Int, n: Int, k: Int,
                              transA: Bool = false, transB: Bool = false) -> [Double] {
        var c = [Double](repeating: 0, count: m * n)
        guard m > 0, n > 0, k > 0 else { return c }
        cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), 1, a, Int32(transA ? m : k), b, Int32(transB ? k : n), 0, &c, Int32(n))
        return c
    }

    /// The rank-q randomized SVD of torch.svd_lowrank(a, q, niter) (Halko et al.'s range finder with `niter`
    /// power iterations, each re-orthonormalized by QR, then the SVD of the projected matrix), with our seeded
    /// Gaussian test matrix instead of torch's: U [rows, q], S [q], Vᵀ [q, cols]. A wide matrix is processed as its
    /// transpose, as torch does.
    public static func svdLowRank(_ a: [Double], rows: Int, cols: Int, q: Int, niter: Int,
                                  rng: inout Xoshiro256) throws -> (u: [Double], s: [Double], vt: [Double]) {
        if rows < cols {
            var t = [Double](repeating: 0, count: rows * cols)
            for i in 0..<rows { for j in 0..<cols { t[j * rows + i] = a[i * cols + j] } }
            let (u, s, vt) = try svdLowRank(t, rows: cols, cols: rows, q: q, niter: niter, rng: &rng)
            // tᵀ = a: U_a = V_t, Vᵀ_a = U_tᵀ.
            var ua = [Double](repeating: 0, count: rows * q), vta = [Double](repeating: 0, count: q * cols)
            for i in 0..<rows { for j in 0..<q { ua[i * q + j] = vt[j * rows + i] } }
            for j in 0..<q { for c in 0..<cols { vta[j * cols + c] = u[c * q + j] } }
            return (ua, s, vta)
        }
        let m = rows, n = cols
        let r = (0..<(n * q)).map { _ in Double(rng.normal()) }
        var basis = try qr(matmul(a, r, m: m, n: q, k: n), rows: m, cols: q).q
        for _ in 0..<niter {
            let x = matmul(a, basis, m: n, n: q, k: m, transA: true)
            let qx = try qr(x, rows: n, cols: q).q
            basis = try qr(matmul(a, qx, m: m, n: q, k: n), rows: m, cols: q).q
        }
        // B = Qᵀ·a [q, n]; its SVD Ub·S·Vᵀ; U = Q·Ub.
        let bm = matmul(basis, a, m: q, n: n, k: m, transA: true)
        let (ub, s, vt) = try svd(bm, rows: q, cols: n)
        let u = matmul(basis, ub, m: m, n: q, k: q)
        return (u, s, vt)
    }
}
