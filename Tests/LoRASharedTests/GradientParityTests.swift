// GradientParityTests: LoRA gradients of the whole model against PyTorch + PEFT autograd (Fixtures/forward/
// <case>/grads.safetensors, scripts/gen_grad_fixtures.py) for GQA/tied Llama, rslora with rank/alpha patterns,
// Qwen2 biases, an NF4 base and llama3 RoPE; and three AdamW steps against torch.optim.AdamW with clipping and
// transformers' linear warmup schedule.
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

final class GradientParityTests: XCTestCase {
    /// Relative to the largest gradient of the case: the 1e-4 bound.
    static let gradTolerance: Float = 1e-4
    /// AdamW state after 3 steps in float32 against torch's float32 run.
    static let adamTolerance: Float = 1e-6

    func setup(_ name: String) throws -> (Transformer, TokenBatch, String) {
        let dir = Fixtures.path("forward/" + name)
        let model = try ModelDir(path: dir + "/model")
        let io = try SafetensorsFile(path: dir + "/io.safetensors")
        func ints(_ t: TensorView) -> [Int32] { t.data.bindMemory(to: Int64.self).map { Int32($0) } }
        let ids = try io.tensor("input_ids"), mask = ints(try io.tensor("attention_mask"))
        let B = ids.shape[0], T = ids.shape[1]
        let lengths = (0..<B).map { b in (0..<T).reduce(0) { $0 + Int(mask[b * T + $1]) } }
        let tr = try Transformer(model: model)
        try tr.attach(try Adapter.load(dir + "/adapter"), linears: try model.linearModules())
        return (tr, TokenBatch(tokens: ints(ids), labels: ints(try io.tensor("labels")), lengths: lengths, batch: B, seq: T), dir)
    }

    func checkGradients(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let (tr, batch, dir) = try setup(name)
        let ref = try SafetensorsFile(path: dir + "/grads.safetensors")
        let scored = batch.shiftedTargets.filter { $0 >= 0 }.count
        let g = LoRAGradients(for: tr.lora)
        let r = try tr.trainStep(batch, lossScale: 1 / Float(scored), grads: g)
        XCTAssertEqual(r.nllSum / Double(r.tokens), Double(try ref.tensor("loss").floats()[0]), accuracy: 1e-5, "\(name) loss", file: file, line: line)
        var maxRef: Float = 0, maxErr: Float = 0, n = 0
        for m in tr.lora.keys {
            for (w, ours) in [("lora_A", g.a[m]!), ("lora_B", g.b[m]!)] {
                let want = try ref.tensor("\(m).\(w).weight.grad").floats()
                maxRef = max(maxRef, want.map(abs).max()!)
                maxErr = max(maxErr, maxAbsDiff(ours, want))
                n += 1
            }
        }
        XCTAssertEqual(n, ref.names.filter { $0.hasSuffix(".grad") }.count, "every fixture gradient compared", file: file, line: line)
        XCTAssertLessThan(maxErr / maxRef, GradientParityTests.gradTolerance, "\(name): max |Δgrad| \(maxErr) vs max |grad| \(maxRef)", file: file, line: line)
        print("gradient parity \(name): \(n) tensors, max |Δ| \(maxErr), relative \(maxErr / maxRef)")
    }

    func testLlamaGQATied() throws { try checkGradients("llama-gqa-tied") }

    func testActivationCheckpointingGivesTheSameGradients() throws {
        let (tr, batch, _) = try setup("qwen2-bias")
        let plain = LoRAGradients(for: tr.lora), ckpt = LoRAGradients(for: tr.lora)
        let a = try tr.trainStep(batch, lossScale: 0.1, grads: plain)
        let b = try tr.trainStep(batch, lossScale: 0.1, grads: ckpt, checkpointLayers: true)
        XCTAssertEqual(a.nllSum, b.nllSum)
        for k in plain.a.keys {
            XCTAssertEqual(plain.a[k]!, ckpt.a[k]!, k)
            XCTAssertEqual(plain.b[k]!, ckpt.b[k]!, k)
        }
    }
    /// The checkpointed recompute stops at gate/up (the down projection's output is the next layer's saved input)
    /// and the last layer is not recomputed at all: the gradients stay bit-identical with LoRA dropout on, in
    /// fp32 and bf16 compute, on an fp32 and an NF4 base.
    func testCheckpointingWithDropoutGivesTheSameGradients() throws {
        var choices: [ComputeChoice] = [.f32, ComputeChoice(dtype: .bf16, backend: .emulated)]
        if CPUFeatures.hasBF16(), OneDNN.probe() == nil { choices.append(ComputeChoice(dtype: .bf16, backend: .onednn)) }
        for name in ["qwen2-bias", "llama-nf4"] {
            for choice in choices {
                let (tr, batch, _) = try setup(name)
                tr.compute = choice
                let drop = LoRADropout(rate: 0.2, seed: 5, step: 3)
                let plain = LoRAGradients(for: tr.lora), ckpt = LoRAGradients(for: tr.lora)
                let a = try tr.trainStep(batch, lossScale: 0.1, grads: plain, dropout: drop)
                let b = try tr.trainStep(batch, lossScale: 0.1, grads: ckpt, dropout: drop, checkpointLayers: true)
                XCTAssertEqual(a.nllSum, b.nllSum, "\(name) \(choice)")
                for k in plain.a.keys {
                    XCTAssertEqual(plain.a[k]!, ckpt.a[k]!, "\(name) \(choice) \(k).lora_A")
                    XCTAssertEqual(plain.b[k]!, ckpt.b[k]!, "\(name) \(choice) \(k).lora_B")
                }
            }
        }
    }
    func testRsloraPatterns() throws { try checkGradients("llama-rslora-patterns") }
    func testQwen2Biases() throws { try checkGradients("qwen2-bias") }
    func testNF4Base() throws { try checkGradients("llama-nf4") }
    func testLlama3Rope() throws { try checkGradients("llama3-rope") }

    func testSumLossGradients() throws {
        let (tr, batch, dir) = try setup("llama-gqa-tied")
        let ref = try SafetensorsFile(path: dir + "/grads_sum.safetensors")
        let g = LoRAGradients(for: tr.lora)
        _ = try tr.trainStep(batch, lossScale: 1, grads: g)
        for m in tr.lora.keys {
            let want = try ref.tensor("\(m).lora_B.weight.grad").floats()
            XCTAssertLessThan(maxAbsDiff(g.b[m]!, want) / want.map(abs).max()!, GradientParityTests.gradTolerance, m)
        }
    }

    func checkAdamW(_ fixture: String, maxNorm: Double) throws {
        let (tr, batch, dir) = try setup("llama-gqa-tied")
        let ref = try SafetensorsFile(path: dir + "/" + fixture)
        var cfg = AdamWConfig()
        cfg.lr = 1e-3; cfg.weightDecay = 0.01
        let state = AdamWState()
        let scored = batch.shiftedTargets.filter { $0 >= 0 }.count
        let g = LoRAGradients(for: tr.lora)
        for k in 1...3 {
            g.zero()
            let r = try tr.trainStep(batch, lossScale: 1 / Float(scored), grads: g)
            XCTAssertEqual(r.nllSum / Double(r.tokens), Double(try ref.tensor("loss_step\(k)").floats()[0]), accuracy: 2e-6, "loss step \(k)")
            let norm = AdamW.clipGradNorm(g, maxNorm: maxNorm)
            XCTAssertEqual(norm, try ref.tensor("grad_norm_step\(k)").floats()[0], accuracy: 1e-5, "grad norm step \(k)")
            let lr = cfg.lr * LRSchedule.linear.factor(step: k - 1, warmup: 2, total: 10)
            XCTAssertEqual(lr, Double(try ref.tensor("lr_step\(k)").floats()[0]), accuracy: 1e-9, "lr step \(k)")
            AdamW.step(model: tr, grads: g, state: state, lr: lr, config: cfg)
        }
        var worst: Float = 0
        for m in tr.lora.keys {
            for (w, key, mine) in [("lora_A", m + ".a", tr.lora[m]!.a), ("lora_B", m + ".b", tr.lora[m]!.b)] {
                let p = "\(m).\(w).weight"
                worst = max(worst, maxAbsDiff(mine, try ref.tensor(p + ".after").floats()))
                XCTAssertLessThan(maxAbsDiff(state.m[key]!, try ref.tensor(p + ".exp_avg").floats()), GradientParityTests.adamTolerance, p)
                XCTAssertLessThan(maxAbsDiff(state.v[key]!, try ref.tensor(p + ".exp_avg_sq").floats()), GradientParityTests.adamTolerance, p)
            }
        }
        XCTAssertLessThan(worst, GradientParityTests.adamTolerance, "parameters after 3 AdamW steps")
        print("adamw parity \(fixture): max |Δparam| \(worst)")
    }

    func testAdamWWithScheduleMatchesTorch() throws { try checkAdamW("adamw.safetensors", maxNorm: 1.0) }
    func testAdamWWithClippingMatchesTorch() throws { try checkAdamW("adamw_clip.safetensors", maxNorm: 0.25) }
}
