// Parallel: splits independent rows across cores, in contiguous ranges, falling back to the calling thread when
// the work is too small to pay for the hand-off. The workers are oneDNN's OpenMP threads (lp_parallel), so our
// kernels and oneDNN's products take turns on one set of threads instead of two pools competing for the cores
// (OpenMP's workers spin for a while after each product); LORA_PARALLEL=gcd uses DispatchQueue.concurrentPerform.
import CBF16
import Dispatch
import Foundation

public enum Parallel {
    /// Workers of our own kernels: one per core unless `--threads` says otherwise (set once, at start-up).
    nonisolated(unsafe) public static var cores = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// OpenMP's threads (the default) or GCD's.
    static let useOpenMP = ProcessInfo.processInfo.environment["LORA_PARALLEL"] != "gcd"

    /// body(c) for c in 0..<n, concurrently, returning when all are done.
    @inline(__always)
    static func run(_ n: Int, _ body: (Int) -> Void) {
        guard useOpenMP else {
            DispatchQueue.concurrentPerform(iterations: n, execute: body)
            return
        }
        withoutActuallyEscaping(body) { b in
            var job = b
            withUnsafeMutablePointer(to: &job) { p in
                lp_parallel(Int32(n), { ctx, c in
                    ctx!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(Int(c))
                }, p)
            }
        }
    }

    /// Runs jobs 0..<n on up to `cores` workers, job j on worker j mod workers; `body(job, worker)` may use
    /// scratch owned by its worker (worker < workers(for: n)).
    @inline(__always)
    public static func forJobs(_ n: Int, _ body: (_ job: Int, _ worker: Int) -> Void) {
        let w = workers(for: n)
        if w <= 1 { for j in 0..<n { body(j, 0) }; return }
        run(w) { k in
            var j = k
            while j < n { body(j, k); j += w }
        }
    }

    public static func workers(for jobs: Int) -> Int { max(1, min(cores, jobs)) }

    /// Calls `body` on disjoint ranges covering 0..<n; `grain` is the least work per chunk.
    @inline(__always)
    public static func forRanges(_ n: Int, grain: Int = 1, _ body: (Range<Int>) -> Void) {
        if n <= 0 { return }
        let chunks = min(cores, max(1, n / max(1, grain)))
        if chunks == 1 { body(0..<n); return }
        run(chunks) { c in
            let s = c * n / chunks, e = (c + 1) * n / chunks
            if s < e { body(s..<e) }
        }
    }
}
