// Parallel: splits independent rows across cores (DispatchQueue.concurrentPerform), in contiguous ranges,
// falling back to the calling thread when the work is too small to pay for the hand-off.
import Dispatch
import Foundation

public enum Parallel {
    /// Workers of our own kernels: one per core unless `--threads` says otherwise (set once, at start-up).
    nonisolated(unsafe) public static var cores = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// Runs jobs 0..<n on up to `cores` workers, job j on worker j mod workers; `body(job, worker)` may use
    /// scratch owned by its worker (worker < workers(for: n)).
    @inline(__always)
    public static func forJobs(_ n: Int, _ body: (_ job: Int, _ worker: Int) -> Void) {
        let w = workers(for: n)
        if w <= 1 { for j in 0..<n { body(j, 0) }; return }
        DispatchQueue.concurrentPerform(iterations: w) { k in
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
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            let s = c * n / chunks, e = (c + 1) * n / chunks
            if s < e { body(s..<e) }
        }
    }
}
