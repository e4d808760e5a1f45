// ScaleTests: what lets large models run in bounded memory, checked against the small-model path it replaces:
// the head streamed from its stored form in blocks of vocabulary rows (no fp32 copy of a 152k × 3.5k head)
// gives the logits, loss, LoRA gradients and decoded logits of the resident fp32 head, in f32 and bf16 compute,
// on tied, untied and 4-bit bases; and the frozen weights expanded tile by tile of output rows (no fp32 copy of a
// whole 18944 × 3584 projection) give the values of the whole stacked expansion.
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain

final class ScaleTests: XCTestCase {
    struct Pass { var logits: [Float]; var loss: Double; var grads: [Float]; var decoded: [Float] }

    func pass(_ name: String, compute: ComputeChoice) throws -> Pass {
        let (tr, _, batch, _) = try loadForwardCase(name)
        tr.compute = compute
        let out = try tr.forward(batch, wantLogits: true)
        let g = LoRAGradients(for: tr.lora)
        _ = try tr.trainStep(batch, lossScale: 1 / Float(out.tokens), grads: g)
        var flat: [Float] = []
        for m in tr.lora.keys.sorted() { flat += g.a[m]! + g.b[m]! }
        // Decoding's few-row head product (directRows) on the first row's first three tokens.
        let prompt = Array(batch.tokens[0..<3])
        let cache = KVCache(config: tr.config, capacity: 8)
        let decoded = try tr.decode(prompt, cache: cache) + tr.decode([prompt[0]], cache: cache)
        return Pass(logits: out.logits!, loss: out.nllSum / Double(out.tokens), grads: flat, decoded: decoded)
    }

    func testStreamedHeadMatchesTheResidentHead() throws {
        let saved = (Transformer.headResidentLimit, Transformer.headBlockFloats)
        defer { (Transformer.headResidentLimit, Transformer.headBlockFloats) = saved }
        try compareVariants { Transformer.headResidentLimit = 0; Transformer.headBlockFloats = 7 * 64 + 5 }  // a few rows per block, the last short
    }

    func testTiledWeightExpansionMatchesTheStackedExpansion() throws {
        let saved = (ProjectionScratch.weightTileFloats, ProjectionScratch.bf16TileHalves)
        defer { (ProjectionScratch.weightTileFloats, ProjectionScratch.bf16TileHalves) = saved }
        // tiles of a few output rows (fp32 for OpenBLAS, bf16 for oneDNN), some spanning two stacked modules
        try compareVariants { (ProjectionScratch.weightTileFloats, ProjectionScratch.bf16TileHalves) = (1, 1) }
    }

    /// Each forward case in f32 and bf16 compute, as the engine is by default and after `variant`.
    func compareVariants(_ variant: () -> Void) throws {
        let defaults = (Transformer.headResidentLimit, Transformer.headBlockFloats, ProjectionScratch.weightTileFloats,
                        ProjectionScratch.bf16TileHalves)
        // oneDNN's bf16 products too where this CPU runs them (AVX512-BF16 / AMX).
        let oneDNN = CPUFeatures.hasBF16() && OneDNN.probe() == nil ? [ComputeChoice(dtype: .bf16, backend: .onednn)] : []
        for name in ["llama-gqa-tied", "qwen2-bias", "llama-nf4", "llama-linear-rope", "llama-bf16-weights"] {
            for compute in [ComputeChoice.f32, ComputeDTypeTests.emulated] + oneDNN {
                (Transformer.headResidentLimit, Transformer.headBlockFloats, ProjectionScratch.weightTileFloats,
                 ProjectionScratch.bf16TileHalves) = defaults
                let resident = try pass(name, compute: compute)
                variant()
                let streamed = try pass(name, compute: compute)
                let what = "\(name) \(compute.dtype) \(compute.backend)"
                // The same products; only the order of the sums differs (BLAS blocking, dx summed tile by tile). In
                // bf16 compute a different fp32 sum can round an activation to the neighbouring bf16 value, so the
                // bound there is ComputeDTypeTests' for another summation order.
                let bf16 = compute.dtype == .bf16
                let logitTol = bf16 ? ComputeDTypeTests.opsLogitTolerance : 1e-5 * max(1, resident.logits.map(abs).max()!)
                let gradTol = (bf16 ? ComputeDTypeTests.opsGradTolerance : 1e-5) * max(1e-3, resident.grads.map(abs).max()!)
                XCTAssertLessThanOrEqual(maxAbsDiff(resident.logits, streamed.logits), logitTol, what)
                XCTAssertEqual(resident.loss, streamed.loss, accuracy: bf16 ? ComputeDTypeTests.opsLossTolerance : 1e-6, what)
                XCTAssertLessThanOrEqual(maxAbsDiff(resident.grads, streamed.grads), gradTol, what)
                XCTAssertEqual(resident.decoded, streamed.decoded, what)
            }
        }
    }
}
