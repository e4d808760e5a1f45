// DataParallel: what the training loop needs from a group of processes (MPI ranks) to train as one: element-wise
// sums and maxima over ranks. Every rank builds the same data order from the same --seed and takes its slice of
// every global micro-batch of --batch-size × ranks sequences; the LoRA gradients, the loss sum and a stop flag go
// through one sum per optimizer step, so every rank applies the same AdamW update. The MPI implementation lives
// in LoRACLI (loaded at run time); this layer knows nothing of MPI.
import Foundation

public protocol Collective: AnyObject {
    var rank: Int { get }
    var size: Int { get }
    /// x[i] ← Σ over ranks of x[i], the same values on every rank.
    func sum(_ x: inout [Float]) throws
    func sum(_ x: inout [Double]) throws
    /// x[i] ← max over ranks of x[i].
    func max(_ x: inout [Double]) throws
}

public enum DataParallelError: Error, CustomStringConvertible, ToolError {
    case tooFewSequences(ranks: Int, sequences: Int)
    case diverged(step: Int)
    case mismatch(what: [String], ranks: Int)

    public var description: String {
        switch self {
        case .tooFewSequences(let n, let s):
            return "\(n) ranks but the data gives only \(s) training sequence\(s == 1 ? "" : "s") per epoch, so a rank would never get an example of a global batch; launch at most \(s) rank\(s == 1 ? "" : "s") (mpirun -np \(s)) or add data"
        case .diverged(let s):
            return "step \(s): the ranks' LoRA weights differ although every rank applied the same update: this MPI's allreduce gave ranks different sums; run with fewer ranks or another MPI (the last checkpoint is intact)"
        case .mismatch(let w, let n):
            return "the \(n) ranks were launched with different \(w.joined(separator: ", ")); launch every rank with the same flags, config and data files"
        }
    }
}

public enum DataParallel {
    /// Rank `rank`'s slice of a global micro-batch (contiguous: rank r takes sequences r·b ..< (r+1)·b, so together
    /// the ranks cover it in the single-process order). Empty when the micro-batch is short (an epoch's last).
    public static func shard<T>(_ global: [T], rank: Int, perRank: Int) -> ArraySlice<T> {
        let lo = Swift.min(global.count, rank * perRank), hi = Swift.min(global.count, lo + perRank)
        return global[lo..<hi]
    }

    /// A 52-bit hash of a string, exact in a Double (for comparing values across ranks with a max/min reduction).
    public static func hash52(_ s: String) -> Double {
        var f = Fingerprint()
        f.add(s)
        return Double(f.raw & ((1 << 52) - 1))
    }

    /// Names whose values differ between ranks: one max reduction over (h, −h) of each value's hash.
    public static func differing(_ items: [(name: String, value: String)], world: Collective) throws -> [String] {
        let h = items.map { hash52($0.value) }
        var buf = h + h.map { -$0 }
        try world.max(&buf)
        return items.indices.filter { buf[$0] != -buf[items.count + $0] }.map { items[$0].name }
    }
}
