// TrainTests: lora-train end to end on a generated tiny model: resume gives the same final adapter bytes as an
// uninterrupted run, packing equals separate rows, adapters arrive through a pipe, signals stop cleanly, and bad
// input (no usable example, fully masked long example, nonsense lr, foreign adapter or checkpoint, corrupt
// checkpoint, full disk during a checkpoint, NaN loss) is refused with one error line.
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

final class TrainTests: XCTestCase {
    var dir = "", model = "", adapter = "", data = ""

    override func setUpWithError() throws {
        dir = makeTempDir("train")
        model = dir + "/model"
        try TinyModel.write(to: model)
        adapter = dir + "/adapter"
        XCTAssertEqual(try runTool("lora-init", [model, "-o", adapter, "--targets", "all-linear", "--rank", "4", "--seed", "1"]).status, 0)
        let rows = (0..<12).map { i -> String in
            i % 3 == 0 ? #"{"messages": [{"role": "user", "content": "Question \#(i)?"}, {"role": "assistant", "content": "Answer number \#(i) is here."}]}"#
                : #"{"text": "The harbour master counted \#(i) bells of the eastern tower before the first frost."}"#
        }
        data = dir + "/data.jsonl"
        try (rows.joined(separator: "\n") + "\n").write(toFile: data, atomically: true, encoding: .utf8)
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func train(_ out: String, _ extra: [String], env: [String: String] = [:]) throws -> RunResult {
        try runTool("lora-train", [model, adapter, "--data", data, "-o", out, "--seq-len", "48", "--batch-size", "2", "--lr", "5e-3",
                                    "--seed", "7", "--dropout", "0.1", "-q"] + extra, env: env)
    }

    func bytes(_ p: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: p)) }

    func testResumeGivesTheSameAdapterBytes() throws {
        let full = try train(dir + "/full", ["--max-steps", "9", "--grad-accum", "2", "--warmup-steps", "2", "--weight-decay", "0.01"])
        XCTAssertEqual(full.status, 0, full.stderr)
        // The same run broken off at step 6 (a NaN there stops it, keeping the step-4 checkpoint), then resumed.
        let part = try train(dir + "/part", ["--max-steps", "9", "--grad-accum", "2", "--warmup-steps", "2", "--weight-decay", "0.01",
                                             "--save-every", "4"], env: ["LORA_TEST_NAN_AT_STEP": "6"])
        assertToolError(part, contains: "step 6: the loss is not finite")
        XCTAssertTrue(part.stderr.contains("step-0000004"), "the error names the last good checkpoint: \(part.stderr)")
        let resumed = try train(dir + "/part", ["--max-steps", "9", "--grad-accum", "2", "--warmup-steps", "2", "--weight-decay", "0.01",
                                                "--save-every", "4", "--resume"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try bytes(dir + "/part/adapter_model.safetensors"), try bytes(dir + "/full/adapter_model.safetensors"),
                       "resumed run must end with the same adapter bytes")
        let last = try jsonObject(full.stdout.split(separator: "\n").last.map(String.init) ?? "")
        XCTAssertEqual(last["final"], .bool(true))
        XCTAssertEqual(last["steps"], .int(9))
    }

    func testHintsFitTheSituation() throws {
        // A finished run's folder: --resume cannot continue it, so the hint is --force.
        XCTAssertEqual(try train(dir + "/done", ["--max-steps", "1"]).status, 0)
        let again = try train(dir + "/done", ["--max-steps", "1"])
        assertToolError(again, contains: "already holds a finished run (adapter_model.safetensors); pass --force")
        XCTAssertFalse(again.stderr.contains("--resume"), again.stderr)
        XCTAssertEqual(try train(dir + "/done", ["--max-steps", "1", "--force"]).status, 0)
        // An adapter folder where the model belongs.
        let r = try runTool("lora-eval", [adapter, "--data", data])
        assertToolError(r, contains: "is a LoRA adapter folder (adapter_config.json), not a model")
    }

    func testMetricsConfigAndPEFTLayout() throws {
        let cfg = dir + "/train.yaml"
        try "max-steps: 4\nlog-every: 2  # every other step\nlr: 0.01\n".write(toFile: cfg, atomically: true, encoding: .utf8)
        let r = try train(dir + "/o", ["--config", cfg, "--lr", "0.002", "--valid", data, "--eval-every", "2"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let lines = r.stdout.split(separator: "\n").map { try! jsonObject(String($0)) }
        XCTAssertEqual(lines.count, 3)  // steps 2 and 4, then the summary
        XCTAssertEqual(lines[0]["step"], .int(2))
        XCTAssertNotNil(lines[0]["valid_loss"]?.doubleValue)
        for k in ["loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s", "epoch"] { XCTAssertNotNil(lines[1][k], k) }
        XCTAssertEqual(lines[2]["final"], .bool(true))
        let saved = try jsonObject(String(contentsOfFile: dir + "/o/training_config.json", encoding: .utf8))
        XCTAssertEqual(saved["lr"], .double(0.002), "flags win over --config")
        XCTAssertEqual(saved["max-steps"], .int(4), "the config file fills what flags leave out")
        // Without --eval-every, --valid is evaluated once, at the end.
        let e = try train(dir + "/e", ["--max-steps", "2", "--valid", data])
        XCTAssertEqual(e.status, 0, e.stderr)
        let el = e.stdout.split(separator: "\n").map { try! jsonObject(String($0)) }
        XCTAssertNotNil(el.last!["valid_loss"]?.doubleValue, e.stdout)
        XCTAssertNotNil(el[el.count - 2]["valid_loss"]?.doubleValue, e.stdout)
        let trained = try Adapter.load(dir + "/o")
        XCTAssertEqual(trained.moduleNames.count, 14)
        XCTAssertTrue(trained.modules.values.contains { $0.b.contains { $0 != 0 } }, "B moved away from zero")
        try trained.validate(against: try ModelDir(path: model).linearModules())
    }

    func testAdapterThroughAPipeAndPacking() throws {
        let initRun = try runTool("lora-init", [model, "-o", "-", "--targets", "q_proj,v_proj", "--rank", "2"])
        let r = try runTool("lora-train", [model, "-", "--data", data, "-o", dir + "/piped", "--max-steps", "2", "--packing",
                                           "--seq-len", "96", "-q"], stdin: initRun.stdoutData)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try Adapter.load(dir + "/piped").moduleNames.count, 4)
        // '-' for both the adapter and the data is refused.
        assertToolError(try runTool("lora-train", [model, "-", "--data", "-", "-o", dir + "/x"], stdin: initRun.stdoutData),
                        contains: "only one input per command", code: 64)
    }

    func testPackedRowEqualsSeparateRows() throws {
        let m = try ModelDir(path: model)
        let tr = try Transformer(model: m)
        try tr.attach(try Adapter.load(adapter), linears: try m.linearModules())
        let a = Example(ids: [5, 9, 13, 200, 31], targets: [true, true, true, true, true], line: 1, format: .text)
        let b = Example(ids: [7, 300, 41, 8], targets: [false, false, true, true], line: 2, format: .promptCompletion)
        let packed = Batching.tokenBatch(Batching.epoch([a, b], epoch: 0, seed: 1, batchSize: 1, seqLen: 16, packing: true)[0], packed: true)
        XCTAssertEqual(packed.batch, 1)
        let sepA = Batching.tokenBatch([Batching.sequence(a, seqLen: 16)], packed: false)
        let sepB = Batching.tokenBatch([Batching.sequence(b, seqLen: 16)], packed: false)
        let gp = LoRAGradients(for: tr.lora), gs = LoRAGradients(for: tr.lora)
        let rp = try tr.trainStep(packed, lossScale: 1, grads: gp)
        let ra = try tr.trainStep(sepA, lossScale: 1, grads: gs), rb = try tr.trainStep(sepB, lossScale: 1, grads: gs)
        XCTAssertEqual(rp.tokens, ra.tokens + rb.tokens)
        XCTAssertEqual(rp.nllSum, ra.nllSum + rb.nllSum, accuracy: 1e-4)
        for k in gp.a.keys {
            XCTAssertLessThan(maxAbsDiff(gp.a[k]!, gs.a[k]!), 1e-5, k)
            XCTAssertLessThan(maxAbsDiff(gp.b[k]!, gs.b[k]!), 1e-5, k)
        }
    }

    func testSignalStopsWithACheckpointAndResumes() throws {
        let out = dir + "/sig"
        let p = Process()
        p.executableURL = URL(fileURLWithPath: productsDir + "/lora-train")
        p.arguments = [model, adapter, "--data", data, "-o", out, "--seq-len", "48", "--max-steps", "100000", "--log-every", "1", "-q"]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = FileHandle.nullDevice
        try p.run()
        _ = pipe.fileHandleForReading.availableData  // the first metrics line: training is under way
        kill(p.processIdentifier, SIGTERM)
        waitForExit(p, what: "lora-train after SIGTERM")
        XCTAssertEqual(p.terminationStatus, 143)
        let cps = Checkpoint.list(out)
        XCTAssertEqual(cps.count, 1)
        XCTAssertTrue(FileManager.default.fileExists(atPath: cps[0].path + "/optimizer.safetensors"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/adapter_model.safetensors"), "no final adapter after a stop")
        // Starting again without --resume is refused; the checkpoint is from this run, so --resume is accepted.
        assertToolError(try runTool("lora-train", [model, adapter, "--data", data, "-o", out, "--seq-len", "48", "--max-steps", "100000"]),
                        contains: "--resume")
    }

    func testBadInput() throws {
        // Nonsense learning rate and rank.
        assertToolError(try train(dir + "/a", ["--lr", "5"]), contains: "--lr 5.0 makes no sense", code: 64)
        assertToolError(try train(dir + "/a", ["--lr=-1e-3"]), contains: "makes no sense", code: 64)
        assertToolError(try runTool("lora-init", [model, "-o", dir + "/r", "--rank", "4096"]), contains: "min(in, out)")
        // No usable example / a long example whose targets are all cut off.
        let tiny = dir + "/tiny.jsonl"
        try #"{"prompt": "p", "completion": ""}"#.write(toFile: tiny, atomically: true, encoding: .utf8)
        let long = dir + "/long.jsonl"
        let prompt = String(repeating: "many words in a very long prompt ", count: 30)
        try #"{"prompt": "\#(prompt)", "completion": " short answer"}"#.write(toFile: long, atomically: true, encoding: .utf8)
        assertToolError(try runTool("lora-train", [model, adapter, "--data", long, "-o", dir + "/b", "--seq-len", "32"]),
                        contains: ":1: all")
        let skip = try runTool("lora-train", [model, adapter, "--data", long, "-o", dir + "/b2", "--seq-len", "32", "--skip-bad-lines"])
        assertToolError(skip, contains: "no usable training example")
        // An adapter made for another model.
        assertToolError(try runTool("lora-train", [model, Fixtures.path("peft/tiny-llama-r8-all-linear"), "--data", data, "-o", dir + "/c"]),
                        contains: "does not fit")
        // A checkpoint from another run (other lr) and a corrupted one.
        XCTAssertEqual(try train(dir + "/d", ["--max-steps", "3", "--save-every", "2"]).status, 0)
        assertToolError(try train(dir + "/d", ["--max-steps", "3", "--save-every", "2", "--resume-from", dir + "/d/checkpoints/step-0000002", "--lr", "1e-3"]),
                        contains: "checkpoint from another run")
        let cp = dir + "/d/checkpoints/step-0000002"
        let opt = try bytes(cp + "/optimizer.safetensors")
        try opt.prefix(opt.count / 2).write(to: URL(fileURLWithPath: cp + "/optimizer.safetensors"))
        assertToolError(try train(dir + "/d", ["--max-steps", "3", "--save-every", "2", "--resume-from", cp]), contains: "corrupt checkpoint")
        // A full disk while writing a checkpoint: the previous checkpoint stays intact and nothing half-written remains.
        let e = try train(dir + "/e", ["--max-steps", "6", "--save-every", "2"], env: ["LORA_TEST_FAIL_WRITES": "step-0000004"])
        assertToolError(e, contains: "No space left on device")
        XCTAssertEqual(Checkpoint.list(dir + "/e").map(\.step), [2])
        XCTAssertNoThrow(try Adapter.load(dir + "/e/checkpoints/step-0000002"))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir + "/e/checkpoints"), ["step-0000002"])
        // NaN at the first step: stop, nothing written.
        let n = try train(dir + "/f", ["--max-steps", "3"], env: ["LORA_TEST_NAN_AT_STEP": "1"])
        assertToolError(n, contains: "step 1: the loss is not finite")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/f/adapter_model.safetensors"))
        // An existing output folder with results is not overwritten by accident.
        assertToolError(try train(dir + "/d", ["--max-steps", "3"]), contains: "--force")
        // A stopped run's folder (checkpoints, no adapter) suggests --resume.
        try FileManager.default.removeItem(atPath: dir + "/d/adapter_model.safetensors")
        assertToolError(try train(dir + "/d", ["--max-steps", "3"]), contains: "checkpoints of a stopped run; pass --resume")
    }

    /// --compute-dtype: recorded in every JSON line and training_config.json; a resume in another dtype is refused
    /// naming the flag; an unknown value is a usage error; bf16 on a CPU without it names the feature.
    func testComputeDTypeIsRecordedAndResumeMustMatch() throws {
        let emu = ["LORA_BF16_EMULATE": "1"]
        let args = ["--max-steps", "4", "--save-every", "2", "--compute-dtype", "bf16"]
        let part = try train(dir + "/b", args, env: emu.merging(["LORA_TEST_NAN_AT_STEP": "3"]) { $1 })
        assertToolError(part, contains: "step 3: the loss is not finite")
        let state = try jsonObject(String(decoding: try bytes(dir + "/b/checkpoints/step-0000002/trainer_state.json"), as: UTF8.self))
        XCTAssertEqual(state["compute_dtype"], .string("bf16"))
        assertToolError(try train(dir + "/b", ["--max-steps", "4", "--save-every", "2", "--compute-dtype", "f32", "--resume"]),
                        contains: "pass --compute-dtype bf16")
        let done = try train(dir + "/b", args + ["--resume"], env: emu)
        XCTAssertEqual(done.status, 0, done.stderr)
        // "bf16" through oneDNN on a CPU with AVX512-BF16 / AMX, else "bf16-emulated".
        let label = try ComputeChoice.resolve(.bf16, environment: ProcessInfo.processInfo.environment.merging(emu) { $1 }).label
        for l in done.stdout.split(separator: "\n") { XCTAssertEqual(try jsonObject(String(l))["compute_dtype"], .string(label)) }
        let cfg = try jsonObject(String(decoding: try bytes(dir + "/b/training_config.json"), as: UTF8.self))
        XCTAssertEqual(cfg["compute-dtype"], .string("bf16"))
        // The f32 run of the same data differs (the products really are bf16) but not by much.
        let f = try train(dir + "/f32", ["--max-steps", "4", "--compute-dtype", "f32"])
        XCTAssertEqual(f.status, 0, f.stderr)
        let lb = try jsonObject(String(done.stdout.split(separator: "\n").last!))["train_loss"]!.doubleValue!
        let lf = try jsonObject(String(f.stdout.split(separator: "\n").last!))["train_loss"]!.doubleValue!
        XCTAssertEqual(lb, lf, accuracy: 0.01 * lf)
        XCTAssertEqual(try jsonObject(String(f.stdout.split(separator: "\n").last!))["compute_dtype"], .string("f32"))
        XCTAssertEqual(try train(dir + "/x", ["--max-steps", "1", "--compute-dtype", "half"]).status, 64)
        let forced = try train(dir + "/y", ["--max-steps", "1", "--compute-dtype", "bf16"], env: ["LORA_COMPUTE_FALLBACK": "1"])
        assertToolError(forced, contains: "--compute-dtype f32")
        XCTAssertTrue(forced.stderr.contains("BF16"), forced.stderr)
        // auto under the forced fallback trains in f32.
        let auto = try train(dir + "/z", ["--max-steps", "1"], env: ["LORA_COMPUTE_FALLBACK": "1"])
        XCTAssertEqual(auto.status, 0, auto.stderr)
        XCTAssertEqual(try jsonObject(String(auto.stdout.split(separator: "\n").last!))["compute_dtype"], .string("f32"))
    }
}
