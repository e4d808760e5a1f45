// LoRAPlusTests: lora-train --loraplus-lr-ratio. Three steps against PEFT's create_loraplus_optimizer under
// torch.optim.AdamW (Fixtures/forward/llama-gqa-tied/adamw_loraplus.safetensors, from
// scripts/gen_loraplus_fixtures.py: lora_A at lr, lora_B at lr × 16, weight decay on both, clipping and the linear
// warmup schedule), then end to end: the ratio is saved in training_config.json and the fingerprint, a resume
// with the same ratio gives the same adapter bytes as an uninterrupted run, a resume with another is refused, a
// config file sets it, and ratio 1 is plain LoRA.
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain

final class LoRAPlusTests: XCTestCase {
    func testLoRAPlusAdamWMatchesPEFT() throws {
        let dir = Fixtures.path("forward/llama-gqa-tied")
        let (tr, _, batch, _) = try loadForwardCase("llama-gqa-tied")
        let ref = try SafetensorsFile(path: dir + "/adamw_loraplus.safetensors")

        var cfg = AdamWConfig()
        cfg.lr = 1e-3; cfg.weightDecay = 0.01
        let ratio = 16.0
        let state = AdamWState()
        let scored = batch.shiftedTargets.filter { $0 >= 0 }.count
        let g = LoRAGradients(for: tr.lora)
        for k in 1...3 {
            g.zero()
            let r = try tr.trainStep(batch, lossScale: 1 / Float(scored), grads: g)
            XCTAssertEqual(r.nllSum / Double(r.tokens), Double(try ref.tensor("loss_step\(k)").floats()[0]), accuracy: 2e-6, "loss step \(k)")
            let norm = AdamW.clipGradNorm(g, maxNorm: 1.0)
            XCTAssertEqual(norm, try ref.tensor("grad_norm_step\(k)").floats()[0], accuracy: 1e-5, "grad norm step \(k)")
            let lr = cfg.lr * LRSchedule.linear.factor(step: k - 1, warmup: 2, total: 10)
            XCTAssertEqual(lr, Double(try ref.tensor("lr_step\(k)").floats()[0]), accuracy: 1e-9, "lr step \(k)")
            XCTAssertEqual(lr * ratio, Double(try ref.tensor("lr_b_step\(k)").floats()[0]), accuracy: 1e-8, "lr of B step \(k)")
            AdamW.step(model: tr, grads: g, state: state, lr: lr, config: cfg, loraplusLrRatio: ratio)
        }
        var worstA: Float = 0, worstB: Float = 0, worstMoments: Float = 0, changeA: Float = 0, changeB: Float = 0
        let start = try Adapter.load(dir + "/adapter")
        for m in tr.lora.keys {
            for (w, key, mine) in [("lora_A", m + ".a", tr.lora[m]!.a), ("lora_B", m + ".b", tr.lora[m]!.b)] {
                let p = "\(m).\(w).weight"
                let d = maxAbsDiff(mine, try ref.tensor(p + ".after").floats())
                let moved = maxAbsDiff(mine, w == "lora_A" ? start.modules[m]!.a : start.modules[m]!.b)
                if w == "lora_A" { worstA = max(worstA, d); changeA = max(changeA, moved) } else { worstB = max(worstB, d); changeB = max(changeB, moved) }
                worstMoments = max(worstMoments, maxAbsDiff(state.m[key]!, try ref.tensor(p + ".exp_avg").floats()),
                                   maxAbsDiff(state.v[key]!, try ref.tensor(p + ".exp_avg_sq").floats()))
            }
        }
        print("loraplus parity (ratio 16, 3 AdamW steps): max |ΔA| \(worstA), max |ΔB| \(worstB), max |Δmoment| \(worstMoments); largest change A \(changeA), B \(changeB)")
        XCTAssertLessThan(worstA, GradientParityTests.adamTolerance)
        XCTAssertLessThan(worstB, GradientParityTests.adamTolerance * 16)
        XCTAssertLessThan(worstMoments, GradientParityTests.adamTolerance)
        // B really moved at the larger rate (Adam's steps are about lr in size).
        XCTAssertGreaterThan(changeB, 4 * changeA)
    }

    var dir = "", model = "", adapter = "", data = ""

    override func setUpWithError() throws {
        dir = makeTempDir("loraplus")
        model = dir + "/model"
        try TinyModel.write(to: model)
        adapter = dir + "/adapter"
        XCTAssertEqual(try runTool("lora-init", [model, "-o", adapter, "--targets", "q_proj,v_proj", "--rank", "4", "--seed", "1"]).status, 0)
        let rows = (0..<8).map { #"{"text": "The harbour master counted \#($0) bells of the eastern tower before the first frost."}"# }
        data = dir + "/data.jsonl"
        try (rows.joined(separator: "\n") + "\n").write(toFile: data, atomically: true, encoding: .utf8)
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func train(_ out: String, _ extra: [String], env: [String: String] = [:]) throws -> RunResult {
        try runTool("lora-train", [model, adapter, "--data", data, "-o", out, "--seq-len", "32", "--batch-size", "2", "--lr", "2e-3",
                                    "--seed", "3", "--weight-decay", "0.01", "-q"] + extra, env: env)
    }

    func bytes(_ p: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: p)) }

    func testTrainSavesTheRatioAndResumeKeepsIt() throws {
        let args = ["--max-steps", "6", "--save-every", "2", "--loraplus-lr-ratio", "16"]
        let full = try train(dir + "/full", args)
        XCTAssertEqual(full.status, 0, full.stderr)
        let cfg = try jsonObject(String(decoding: try bytes(dir + "/full/training_config.json"), as: UTF8.self))
        XCTAssertEqual(cfg["loraplus-lr-ratio"], .double(16))
        // Broken off at step 3 (the step-2 checkpoint is kept), then resumed with the same ratio: the same bytes.
        assertToolError(try train(dir + "/part", args, env: ["LORA_TEST_NAN_AT_STEP": "3"]), contains: "step 3")
        // Another ratio is another run: refused, as any other changed hyperparameter.
        assertToolError(try train(dir + "/part", ["--max-steps", "6", "--save-every", "2", "--loraplus-lr-ratio", "8", "--resume"]),
                        contains: "fingerprint")
        assertToolError(try train(dir + "/part", ["--max-steps", "6", "--save-every", "2", "--resume"]), contains: "fingerprint")
        let resumed = try train(dir + "/part", args + ["--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try bytes(dir + "/part/adapter_model.safetensors"), try bytes(dir + "/full/adapter_model.safetensors"))
        // The saved training_config.json given back as --config sets the ratio too.
        let viaConfig = try runTool("lora-train", [model, adapter, "--data", data, "-o", dir + "/cfg", "--config", dir + "/full/training_config.json", "-q"])
        XCTAssertEqual(viaConfig.status, 0, viaConfig.stderr)
        XCTAssertEqual(try bytes(dir + "/cfg/adapter_model.safetensors"), try bytes(dir + "/full/adapter_model.safetensors"))
        // Ratio 1 is plain LoRA, byte for byte; 16 is not.
        let plain = try train(dir + "/plain", ["--max-steps", "6"]), one = try train(dir + "/one", ["--max-steps", "6", "--loraplus-lr-ratio", "1"])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertEqual(one.status, 0, one.stderr)
        XCTAssertEqual(try bytes(dir + "/plain/adapter_model.safetensors"), try bytes(dir + "/one/adapter_model.safetensors"))
        XCTAssertNotEqual(try bytes(dir + "/plain/adapter_model.safetensors"), try bytes(dir + "/full/adapter_model.safetensors"))
        // Nonsense ratios are refused naming the flag.
        for bad in ["0", "-2", "inf", "nan"] {
            let r = try train(dir + "/bad", ["--max-steps", "1", "--loraplus-lr-ratio", bad])
            XCTAssertNotEqual(r.status, 0)
            XCTAssertTrue(r.stderr.contains("--loraplus-lr-ratio") || r.stderr.contains("loraplus-lr-ratio"), r.stderr)
        }
    }
}
