// DemoModelTests: the real SmolLM2-135M-Instruct (scripts/fetch-demo-model) through lora-quantize and lora-init.
// Skipped when the model has not been fetched; scripts/test fetches it.
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

final class DemoModelTests: XCTestCase {
    static let modelDir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("models/smollm2-135m-instruct").path

    var dir = ""
    override func setUpWithError() throws {
        guard FileManager.default.fileExists(atPath: DemoModelTests.modelDir + "/model.safetensors") else {
            throw XCTSkip("demo model not fetched (run scripts/fetch-demo-model)")
        }
        dir = makeTempDir("demo")
    }
    override func tearDown() { if !dir.isEmpty { try? FileManager.default.removeItem(atPath: dir) } }

    func testQuantizeAndInitDemoModel() throws {
        let base = try ModelDir(path: DemoModelTests.modelDir)
        XCTAssertEqual(base.config.numLayers, 30)
        XCTAssertEqual(base.parameterCount(), 134_515_008)  // transformers' count for SmolLM2-135M (tied head)
        let q = try runTool("lora-quantize", [DemoModelTests.modelDir, "-o", dir + "/nf4", "-q"], timeout: 600)
        XCTAssertEqual(q.status, 0, q.stderr)
        let s = try jsonObject(q.stdout)
        XCTAssertEqual(s["tensors_quantized"], .int(210))
        XCTAssertEqual(s["quantized_parameters"], .int(106_168_320))
        let bits = s["bits_per_quantized_weight"]!.doubleValue!
        XCTAssertTrue(bits > 4.1 && bits < 4.2, "bits per weight \(bits)")
        // NF4 with absmax per 64: the reconstruction RMSE is a small fraction of the weights' own RMS.
        XCTAssertLessThan(s["rmse"]!.doubleValue!, 0.05)
        let qm = try ModelDir(path: dir + "/nf4")
        XCTAssertTrue(qm.isQuantized)
        XCTAssertEqual(try qm.linearModules().filter(\.quantized).count, 210)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/nf4/tokenizer.json"))

        for (model, extra) in [(DemoModelTests.modelDir, [String]()), (dir + "/nf4", ["--targets", "all-linear"])] {
            let a = try runTool("lora-init", [model, "-o", dir + "/a\(extra.count)", "--rank", "16"] + extra)
            XCTAssertEqual(a.status, 0, a.stderr)
            let j = try jsonObject(a.stdout)
            // q,o: 16·(576+576); k,v: 16·(576+192); gate,up: 16·(576+1536); down: 16·(1536+576); × 30 layers.
            let expected = extra.isEmpty ? 30 * (2 * 18_432 + 2 * 12_288) : 30 * (2 * 18_432 + 2 * 12_288 + 3 * 33_792)
            XCTAssertEqual(j["trainable_params"], .int(Int64(expected)))
        }
    }

    /// bf16 compute (emulated here when the CPU lacks bf16: the same products) against f32 on the real model:
    /// perplexity within 0.5%, and a short training run's validation loss within 1%.
    func testBF16QualityOnTheDemoModel() throws {
        let root = URL(fileURLWithPath: DemoModelTests.modelDir).deletingLastPathComponent().deletingLastPathComponent().path
        let valid = root + "/data/demo/valid.jsonl", train = root + "/data/demo/train.jsonl"
        let emu = ["LORA_BF16_EMULATE": "1"]
        var ppl: [String: Double] = [:]
        for dt in ["f32", "bf16"] {
            let r = try runTool("lora-eval", [DemoModelTests.modelDir, "--data", valid, "--compute-dtype", dt, "-q"], env: emu, timeout: 600)
            XCTAssertEqual(r.status, 0, r.stderr)
            ppl[dt] = try jsonObject(r.stdout)["perplexity"]!.doubleValue!
        }
        print("demo perplexity: f32 \(ppl["f32"]!), bf16 \(ppl["bf16"]!)")
        XCTAssertEqual(ppl["bf16"]!, ppl["f32"]!, accuracy: 0.005 * ppl["f32"]!)
        XCTAssertNotEqual(ppl["bf16"]!, ppl["f32"]!, "bf16 products are not the f32 ones")
        let a = try runTool("lora-init", [DemoModelTests.modelDir, "-o", dir + "/a", "--rank", "8", "--seed", "3"])
        XCTAssertEqual(a.status, 0, a.stderr)
        var vl: [String: Double] = [:]
        for dt in ["f32", "bf16"] {
            let r = try runTool("lora-train", [DemoModelTests.modelDir, dir + "/a", "--data", train, "--valid", valid, "-o", dir + "/t-" + dt,
                                               "--max-steps", "6", "--batch-size", "2", "--seq-len", "128", "--lr", "1e-3",
                                               "--compute-dtype", dt, "-q"], env: emu, timeout: 900)
            XCTAssertEqual(r.status, 0, r.stderr)
            vl[dt] = try jsonObject(String(r.stdout.split(separator: "\n").last!))["valid_loss"]!.doubleValue!
        }
        print("demo valid loss after 6 steps: f32 \(vl["f32"]!), bf16 \(vl["bf16"]!)")
        XCTAssertEqual(vl["bf16"]!, vl["f32"]!, accuracy: 0.01 * vl["f32"]!)
    }

    func testInterruptedQuantizeLeavesNothing() throws {
        for sig in [SIGINT, SIGTERM] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: productsDir + "/lora-quantize")
            p.arguments = [DemoModelTests.modelDir, "-o", dir + "/nf4", "-q"]
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            usleep(1_500_000)  // mid-way: the debug build takes several seconds on this model
            kill(p.processIdentifier, sig)
            waitForExit(p, what: "lora-quantize after signal \(sig)")
            XCTAssertEqual(p.terminationStatus, 128 + sig, "exit code after signal \(sig)")
            XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [], "temporary outputs left after signal \(sig)")
        }
    }

    /// Greedy lora-generate equals transformers' greedy generate token for token (fixtures from
    /// scripts/gen_generate_fixtures.py: fp32, chat template, 48 new tokens or EOS), so in fp32 compute: `auto`
    /// picks bf16 on a CPU with AVX512-BF16, where greedy paths part from fp32 ones after a few tokens.
    func testGreedyGenerationMatchesTransformers() throws {
        let fx = try jsonObject(try String(contentsOfFile: Fixtures.path("generate/smollm2_greedy.json"), encoding: .utf8))
        let cases = fx["cases"]!.arrayValue!
        var input = ""
        for c in cases {
            var o = JSONObject()
            o["prompt"] = c["prompt"]!
            if let s = c["system"] { o["system"] = s }
            input += JSONValue.object(o).serialized(.compact) + "\n"
        }
        let r = try runTool("lora-generate", [DemoModelTests.modelDir, "--jsonl", "-", "--ids", "--max-tokens", "48", "--compute-dtype", "f32"],
                            stdin: Data(input.utf8), timeout: 900)
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n").map(String.init)
        XCTAssertEqual(lines.count, cases.count)
        for (l, c) in zip(lines, cases) {
            let o = try jsonObject(l)
            XCTAssertEqual(o["prompt_tokens"]!.intValue!, Int64(c["prompt_ids"]!.arrayValue!.count), "\(c["prompt"]!)")
            XCTAssertEqual(o["ids"], c["ids"], "\(c["prompt"]!)")
            XCTAssertEqual(o["finish_reason"], c["finish_reason"])
            XCTAssertEqual(o["completion"], c["text"])
        }
    }
}
