// MemoryPlan: what a pass over a model will hold in memory, estimated from the model's tensor index before a
// single weight is read, so a model too big for the memory left is refused with the numbers and the flags that
// shrink it instead of being killed by the OOM killer an hour in.
//
// Two kinds of memory: the frozen weights are mmapped (their pages are the file's, and the kernel can drop and
// re-read them, so a shortfall there makes each step re-read the disk: slow, not fatal), everything else is
// allocated (activations, scratch, the adapter and its optimizer state: a shortfall there is fatal).
import Foundation

public struct MemoryPlan: Sendable {
    /// Mapped bytes the passes read: every frozen Linear in its stored form, the head, norms and biases (not the
    /// embedding when untied: a batch touches a few of its rows).
    public var mappedWeights = 0
    /// Allocated bytes: the activation workspace of the pass, the weight tiles and operands of the projections,
    /// the resident head (when small enough to keep in fp32), and the adapter (with gradients and AdamW moments
    /// when training).
    public var workspace = 0
    public var scratch = 0
    public var head = 0
    public var adapter = 0

    public var allocated: Int { Limits.sum(workspace, scratch, head, adapter) ?? Int.max }
    public var total: Int { Limits.sum(allocated, mappedWeights) ?? Int.max }

    public static func gb(_ b: Int) -> String { b == Int.max ? "more than 2^63 bytes" : String(format: "%.1f GB", Double(b) / 1e9) }

    /// The plan of a pass over `model`: `workspace` from trainWorkspaceBytes / inferenceWorkspaceBytes (nil:
    /// overflowed), `rows` = batch × sequence, `adapterParams` LoRA values (0 for the base alone), `mlpBlock` the
    /// training step's MLP block width when it is blocked (Transformer.trainMLPBlock).
    public static func estimate(model: ModelDir, workspace: Int?, rows: Int, adapterParams: Int, training: Bool,
                                compute: ComputeChoice, mlpBlock: Int? = nil) -> MemoryPlan {
        let c = model.config, s = model.weights
        var p = MemoryPlan()
        for n in s.names where n != "model.embed_tokens.weight" || c.tieWordEmbeddings {
            guard let i = s.info(n), let numel = checkedNumel(i.shape), let b = Limits.product(numel, i.dtype.size) else {
                p.mappedWeights = Int.max
                break
            }
            p.mappedWeights = Limits.sum(p.mappedWeights, b) ?? Int.max
        }
        p.workspace = workspace ?? Int.max
        let d = c.hiddenSize, qd = c.numHeads * c.headDim, kvd = c.numKVHeads * c.headDim
        let i = min(c.intermediateSize, mlpBlock ?? c.intermediateSize)
        let widest = max(d, qd + 2 * kvd, 2 * i)
        let weightCap = max((qd + 2 * kvd) * d, 2 * i * d)
        let tile = min(weightCap, max(ProjectionScratch.weightTileFloats, max(d, i, qd)))
        let tileBF16 = min(weightCap, max(ProjectionScratch.bf16TileHalves, max(d, i, qd)))
        let bf16 = compute.dtype == .bf16, onednn = compute.backend == .onednn
        let headFloats = Limits.product(c.vocabSize, d) ?? Int.max
        // The fp32 tile is made on first use, which bf16 compute on oneDNN never has.
        p.scratch = Limits.sum(bf16 && onednn ? 0 : Limits.product(tile, 4),
                               bf16 && !onednn ? Limits.product(rows, widest, 4) : 0,
                               onednn ? Limits.sum(Limits.product(tileBF16, 2), Limits.product(rows, widest, 2)) : 0,
                               Transformer.headBlockFloats * 4) ?? Int.max
        if let hb = Limits.product(headFloats, 4), hb <= Transformer.headResidentLimit { p.head = hb }
        // oneDNN multiplies a bf16 head where it is mapped, any other one from a bf16 copy.
        let headName = c.tieWordEmbeddings ? "model.embed_tokens.weight" : "lm_head.weight"
        if onednn && s.info(headName)?.dtype != .BF16 { p.head = Limits.sum(p.head, Limits.product(headFloats, 2)) ?? Int.max }
        p.adapter = Limits.product(adapterParams, 4, training ? 4 : 1) ?? Int.max
        return p
    }

    /// One line of the parts: "5.6 GB (weights 4.6 GB mapped, activations 0.6 GB, ...)".
    public var breakdown: String {
        var parts = ["weights \(MemoryPlan.gb(mappedWeights)) mapped", "activations \(MemoryPlan.gb(workspace))",
                     "weight tiles and operands \(MemoryPlan.gb(scratch))"]
        if head > 0 { parts.append("fp32 head \(MemoryPlan.gb(head))") }
        if adapter > 0 { parts.append("adapter \(MemoryPlan.gb(adapter))") }
        return "\(MemoryPlan.gb(total)) (\(parts.joined(separator: ", ")))"
    }

    /// Refuses the plan when its allocated part exceeds the memory available (an error naming the numbers and
    /// `fix`), and warns when the mapped weights on top of it do (the run would re-read them from disk each step).
    public func check(_ what: String, fix: String, warn: (String) -> Void) throws {
        let (have, source) = Limits.availableMemory
        if allocated > have {
            throw MemoryLimitError(description: "\(what) needs about \(breakdown) but \(MemoryPlan.gb(have)) is available (\(source)); \(fix)")
        }
        if total > have {
            warn("\(what) needs about \(breakdown) but \(MemoryPlan.gb(have)) is available (\(source)): the mapped weights will not all stay in memory and are re-read from disk, which is slow; \(fix)")
        }
    }
}
