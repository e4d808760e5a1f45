// Batching: the order in which training sequences are seen. Each epoch shuffles the examples from (seed, epoch);
// without packing, batches are grouped by length (sorted within windows of 16 batches, then the batch order is
// shuffled) and padded to their longest; with packing, examples are concatenated into sequences of up to
// seqLen whose attention and positions restart at each example. Deterministic, so a resumed run recomputes it.

/// One row of a batch: ids, labels (−100: not scored), and for packed rows the example starts and positions.
public struct TrainSequence: Sendable {
    public var ids: [Int32]
    public var labels: [Int32]
    public var segmentStarts: [Int32]
    public var positions: [Int32]
    public var scored: Int { labels.dropFirst().reduce(0) { $0 + ($1 >= 0 ? 1 : 0) } }
}

public enum Batching {
    /// Examples truncated to seqLen as sequences (labels from the example's targets).
    package static func sequence(_ e: Example, seqLen: Int) -> TrainSequence {
        let n = min(e.ids.count, seqLen)
        let ids = Array(e.ids[..<n])
        let labels = (0..<n).map { e.targets[$0] ? ids[$0] : -100 }
        return TrainSequence(ids: ids, labels: labels, segmentStarts: [Int32](repeating: 0, count: n),
                             positions: (0..<n).map { Int32($0) })
    }

    package static func permutation(_ n: Int, seed: UInt64, salt: UInt64) -> [Int] {
        var rng = Xoshiro256(seed: seed ^ (salt &* 0x9E37_79B9_7F4A_7C15))
        var p = Array(0..<n)
        if n > 1 { for i in stride(from: n - 1, to: 0, by: -1) { p.swapAt(i, Int(rng.next() % UInt64(i + 1))) } }
        return p
    }

    /// Packing: the examples of `order` (their lengths after truncation from `lengths`) in greedy groups of at
    /// most `seqLen` tokens, in order; an example never spans two groups.
    package static func packGroups(_ order: [Int], lengths: (Int) -> Int, seqLen: Int) -> [[Int]] {
        var groups: [[Int]] = [], cur: [Int] = [], curLen = 0
        for i in order {
            let n = lengths(i)
            if curLen + n > seqLen && !cur.isEmpty { groups.append(cur); cur = []; curLen = 0 }
            cur.append(i)
            curLen += n
        }
        if !cur.isEmpty { groups.append(cur) }
        return groups
    }

    /// The batches of one epoch.
    public static func epoch(_ examples: [Example], epoch: Int, seed: UInt64, batchSize: Int, seqLen: Int, packing: Bool) -> [[TrainSequence]] {
        let order = permutation(examples.count, seed: seed, salt: UInt64(epoch) &+ 1)
        var seqs: [TrainSequence] = []
        if packing {
            for group in packGroups(order, lengths: { min(examples[$0].ids.count, seqLen) }, seqLen: seqLen) {
                var cur = TrainSequence(ids: [], labels: [], segmentStarts: [], positions: [])
                for i in group {
                    let s = sequence(examples[i], seqLen: seqLen)
                    let start = Int32(cur.ids.count)
                    cur.ids += s.ids
                    // The first token of a packed example is not predicted from the previous example.
                    cur.labels += [-100] + s.labels.dropFirst()
                    cur.segmentStarts += [Int32](repeating: start, count: s.ids.count)
                    cur.positions += s.positions
                }
                if !cur.ids.isEmpty { seqs.append(cur) }
            }
        } else {
            seqs = order.map { sequence(examples[$0], seqLen: seqLen) }
            // Sort by length within windows of 16 batches, so batches hold similar lengths, keeping randomness.
            let window = batchSize * 16
            var sorted: [TrainSequence] = []
            var i = 0
            while i < seqs.count {
                sorted += seqs[i..<min(seqs.count, i + window)].sorted { $0.ids.count > $1.ids.count }
                i += window
            }
            seqs = sorted
        }
        var batches: [[TrainSequence]] = []
        var i = 0
        while i < seqs.count {
            batches.append(Array(seqs[i..<min(seqs.count, i + batchSize)]))
            i += batchSize
        }
        let shuffled = permutation(batches.count, seed: seed, salt: 0xBA7C4 &+ UInt64(epoch))
        return shuffled.map { batches[$0] }
    }

    /// Pads sequences to the longest and builds the model's batch.
    /// `length`: pad to this many tokens instead (at least the longest; an MPI rank pads its slice to the global
    /// micro-batch's length so that LoRA dropout masks line up with the single process's).
    public static func tokenBatch(_ seqs: [TrainSequence], packed: Bool, length: Int? = nil) -> TokenBatch {
        let T = Swift.max(length ?? 0, seqs.map(\.ids.count).max() ?? 1)
        var tokens = [Int32](repeating: 0, count: seqs.count * T), labels = [Int32](repeating: -100, count: seqs.count * T)
        var starts = [Int32](repeating: 0, count: seqs.count * T), pos = [Int32](repeating: 0, count: seqs.count * T)
        for (b, s) in seqs.enumerated() {
            for k in 0..<s.ids.count {
                tokens[b * T + k] = s.ids[k]; labels[b * T + k] = s.labels[k]
                starts[b * T + k] = s.segmentStarts[k]; pos[b * T + k] = s.positions[k]
            }
            // Padding continues the last segment's positions harmlessly; it is never scored.
            for k in s.ids.count..<T { starts[b * T + k] = s.segmentStarts.last ?? 0; pos[b * T + k] = Int32(k) }
        }
        return TokenBatch(tokens: tokens, labels: labels, lengths: seqs.map(\.ids.count), batch: seqs.count, seq: T,
                          segmentStarts: packed ? starts : nil, positionIds: packed ? pos : nil)
    }
}
