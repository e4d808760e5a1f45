// ScaleTests: what lets large models run in bounded memory, checked against the small-model path it replaces:
// the head streamed from its stored form in blocks of vocabulary rows (no fp32 copy of a 152k × 3.5k head)
// gives the logits, loss, LoRA gradients and decoded logits of the resident fp32 head, in f32 and bf16 compute,
// on tied, untied and 4-bit bases.
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
        for name in ["llama-gqa-tied", "qwen2-bias", "llama-nf4", "llama-linear-rope", "llama-bf16-weights"] {
            for compute in [ComputeChoice.f32, ComputeDTypeTests.emulated] {
                Transformer.headResidentLimit = 1 << 30
                let resident = try pass(name, compute: compute)
                Transformer.headResidentLimit = 0
                Transformer.headBlockFloats = 7 * 64 + 5  // blocks of a few rows, the last one short
                let streamed = try pass(name, compute: compute)
                let what = "\(name) \(compute.dtype)"
                // The same k-sum per element; only BLAS's blocking of n differs, which leaves each dot product's
                // order alone in OpenBLAS, so the values are equal to within a last-bit difference.
                XCTAssertLessThanOrEqual(maxAbsDiff(resident.logits, streamed.logits), 1e-5 * max(1, resident.logits.map(abs).max()!), what)
                XCTAssertEqual(resident.loss, streamed.loss, accuracy: 1e-6, what)
                XCTAssertLessThanOrEqual(maxAbsDiff(resident.grads, streamed.grads), 1e-5 * max(1e-3, resident.grads.map(abs).max()!), what)
                XCTAssertEqual(resident.decoded, streamed.decoded, what)
            }
        }
    }
}
