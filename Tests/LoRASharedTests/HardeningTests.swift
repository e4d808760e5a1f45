// HardeningTests: the inputs a hostile or careless user hands the tools, each found by mutating files and
// flags against the release binaries, each refused with one `error:` line and the exact exit code of the
// contract (1 bad input, 64 usage, 75 a held lock): zero-token rows, damaged checkpoints, non-finite adapter
// settings, unknown config keys, a second run on a locked folder, and failed runs that must leave nothing.
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

final class HardeningTests: XCTestCase {
    var dir = "", model = "", adapter = "", data = ""

    override func setUpWithError() throws {
        dir = makeTempDir("hard")
        model = dir + "/model"
        try TinyModel.write(to: model)  // the qwen2 tokenizer: no BOS, so an empty text is zero tokens
        adapter = dir + "/adapter"
        XCTAssertEqual(try runTool("lora-init", [model, "-o", adapter, "--targets", "q_proj,v_proj", "--rank", "4"]).status, 0)
        data = write("data.jsonl", (0..<6).map { #"{"text": "The harbour master counted \#($0) bells before the frost."}"# })
    }
    override func tearDown() { if ProcessInfo.processInfo.environment["KEEP"] == nil { try? FileManager.default.removeItem(atPath: dir) } else { print("KEPT", dir) } }

    func write(_ name: String, _ lines: [String]) -> String {
        let p = dir + "/" + name
        try! (lines.joined(separator: "\n") + "\n").write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    func train(_ out: String, _ extra: [String], env: [String: String] = [:]) throws -> RunResult {
        try runTool("lora-train", [model, adapter, "--data", data, "-o", out, "--seq-len", "32", "--batch-size", "2", "-q"] + extra, env: env)
    }

    /// `{"text": ""}` alone in a batch crashed lora-eval (SIGSEGV); now it is refused like lora-train refuses it,
    /// or skipped and counted with --skip-bad-lines.
    func testZeroTokenRows() throws {
        let d = write("empty.jsonl", [#"{"text": "a few words"}"#, #"{"text": ""}"#])
        for bs in ["1", "4"] {
            assertToolError(try runTool("lora-eval", [model, "--data", d, "--batch-size", bs]), contains: "empty.jsonl:2: the example has no tokens")
        }
        let r = try runTool("lora-eval", [model, "--data", d, "--batch-size", "1", "--skip-bad-lines", "-q"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try jsonObject(r.stdout)["skipped_lines"], .int(1))
        XCTAssertEqual(try jsonObject(r.stdout)["examples"], .int(1))
        // A single token scores nothing either.
        let one = write("one.jsonl", [#"{"text": "a"}"#])
        assertToolError(try runTool("lora-eval", [model, "--data", one]), contains: "single token")
        // lora-train refuses it in --data and now in --valid too.
        assertToolError(try train(dir + "/t", ["--max-steps", "1", "--data", d]), contains: "no tokens")
        assertToolError(try train(dir + "/t", ["--max-steps", "1", "--valid", d]), contains: "empty.jsonl:2: the example has no tokens")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/t"), "a failed run leaves no output folder")
        // The library refuses an empty batch instead of running off the end of its buffers.
        let t = try Transformer(model: try ModelDir(path: model))
        assertThrows(try t.forward(TokenBatch(tokens: [], labels: [], lengths: [0], batch: 1, seq: 0)), contains: "no token to run")
    }

    /// Negative or huge integers in trainer_state.json reached pointer arithmetic on --resume (SIGSEGV).
    func testDamagedCheckpointStateIsRefused() throws {
        let out = dir + "/run"
        let r = try train(out, ["--max-steps", "4", "--save-every", "2"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let ck = out + "/checkpoints/step-0000002/trainer_state.json"
        let good = try String(contentsOfFile: ck, encoding: .utf8)
        // (field, damaged value, what the error names)
        let cases: [(String, String, String)] = [
            ("batchInEpoch", "-1", "batchInEpoch -1"),
            ("batchInEpoch", "4611686018427387904", "batchInEpoch 4611686018427387904"),
            ("step", "-2", "step -2"),
            ("step", "9223372036854775807", "step 9223372036854775807"),
            ("epoch", "-7", "epoch -7"),
            ("epoch", "3", "epoch 3"),
            ("tokensSeen", "-5", "tokensSeen -5"),
            ("tokensSeen", "9223372036854775807", "tokensSeen 9223372036854775807"),
            ("elapsedSeconds", "-1e308", "elapsedSeconds"),
            ("elapsedSeconds", "1e300", "elapsedSeconds"),
            ("lastLoss", "1e999", "trainer_state.json"),
            ("format", "\"x\"", "unknown format"),
            ("compute_dtype", "\"f8\"", "compute_dtype 'f8'"),
        ]
        for (field, value, expect) in cases {
            let re = try NSRegularExpression(pattern: "\"\(field)\" : [^,\\n]+")
            let damaged = re.stringByReplacingMatches(in: good, range: NSRange(good.startIndex..., in: good),
                                                      withTemplate: "\"\(field)\" : \(value)")
            XCTAssertNotEqual(damaged, good, "the state has no \(field): \(good)")
            try damaged.write(toFile: ck, atomically: true, encoding: .utf8)
            // The step-4 checkpoint is the latest; resume from the damaged one explicitly.
            assertToolError(try train(out, ["--max-steps", "4", "--save-every", "2", "--resume-from", out + "/checkpoints/step-0000002"]),
                            contains: expect)
        }
        try good.write(toFile: ck, atomically: true, encoding: .utf8)
        let ok = try train(out, ["--max-steps", "4", "--save-every", "2", "--resume-from", out + "/checkpoints/step-0000002"])
        XCTAssertEqual(ok.status, 0, ok.stderr)
    }

    /// lora_alpha Infinity/NaN gave a merged model full of NaN (exit 0) and `{"loss": NaN}` from lora-eval;
    /// lora_dropout NaN, negative or ≥ 1 was accepted by eval, merge and generate.
    func testNonFiniteAdapterSettingsAreRefused() throws {
        let cfgPath = adapter + "/adapter_config.json"
        let good = try String(contentsOfFile: cfgPath, encoding: .utf8)
        var o = try jsonObject(good).objectValue!
        let cases: [(String, JSONValue, String)] = [
            ("lora_alpha", .double(.infinity), "lora_alpha must be a finite number"),
            ("lora_alpha", .double(.nan), "lora_alpha must be a finite number"),
            ("lora_alpha", .string("16"), "lora_alpha must be a finite number"),
            ("lora_dropout", .double(.nan), "lora_dropout must be a finite number"),
            ("lora_dropout", .double(-0.1), "must be in [0, 1)"),
            ("lora_dropout", .double(1), "must be in [0, 1)"),
            ("r", .int(1 << 40), "r must be an integer in 1...65536"),
            ("use_rslora", .string("yes"), "use_rslora must be true or false"),
            ("use_qalora", .bool(true), "use_qalora: true"),
        ]
        for (key, value, expect) in cases {
            let saved = o[key]
            o[key] = value
            try JSONValue.object(o).serialized().write(toFile: cfgPath, atomically: true, encoding: .utf8)
            assertToolError(try runTool("lora-eval", [model, "--adapter", adapter, "--data", data]), contains: expect)
            assertToolError(try runTool("lora-merge", [model, "--adapter", adapter, "-o", dir + "/merged"]), contains: expect)
            assertToolError(try runTool("lora-generate", [model, "--adapter", adapter, "--no-chat", "--prompt", "hi", "--max-tokens", "1"]),
                            contains: expect)
            XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/merged"))
            o[key] = saved
        }
    }

    /// A config key no flag reads trained at the default silently; now it is a usage error naming the
    /// closest key, and --seed on the command line wins over the config's seed.
    func testConfigKeysAndSeedPrecedence() throws {
        let typo = write("typo.yaml", ["max-steps: 1", "learning_rate: 0.01"])
        assertToolError(try train(dir + "/o", ["--config", typo]), contains: "typo.yaml:2: unknown key 'learning_rate'; did you mean 'lr' in section 'training'?", code: 64)
        let near = write("near.yaml", ["max-steps: 1", "batch-sise: 2"])
        assertToolError(try train(dir + "/o", ["--config", near]), contains: "did you mean 'batch-size'?", code: 64)
        let rank = write("rank.yaml", ["max-steps: 1", "training:", "  rank: 8"])
        assertToolError(try train(dir + "/o", ["--config", rank]), contains: "rank.yaml:3: 'rank' in section 'training' belongs in section 'lora' (lora-init)", code: 64)
        let badType = write("type.yaml", ["max-steps: many"])
        assertToolError(try train(dir + "/o", ["--config", badType]), contains: "type.yaml:1: 'max-steps' must be an integer", code: 64)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/o"))
        // Seeds: the flag beats the config, the config beats the default.
        let seeded = write("seed.yaml", ["max-steps: 2", "seed: 5", "dropout: 0.2"])
        for (name, extra) in [("flag", ["--seed", "9"]), ("flag2", ["--seed=9"]), ("nine", [] as [String])] {
            let cfg = name == "nine" ? write("seed9.yaml", ["max-steps: 2", "seed: 9", "dropout: 0.2"]) : seeded
            let r = try train(dir + "/" + name, ["--config", cfg] + extra)
            XCTAssertEqual(r.status, 0, r.stderr)
            let saved = try jsonObject(try String(contentsOfFile: dir + "/\(name)/training_config.json", encoding: .utf8))
            XCTAssertEqual(saved["seed"], .int(9), name)
        }
        let a = try Data(contentsOf: URL(fileURLWithPath: dir + "/flag/adapter_model.safetensors"))
        let b = try Data(contentsOf: URL(fileURLWithPath: dir + "/nine/adapter_model.safetensors"))
        XCTAssertEqual(a, b, "the same seed, from the flag or the config, gives the same bytes")
        // The saved training_config.json is itself a valid --config.
        let again = try train(dir + "/again", ["--config", dir + "/flag/training_config.json"])
        XCTAssertEqual(again.status, 0, again.stderr)
    }

    /// Two runs on one output folder: the second exits 75 (EX_TEMPFAIL) and touches nothing.
    func testHeldLockExits75() throws {
        let out = dir + "/locked"
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let fd = open(out, O_RDONLY | O_DIRECTORY)
        XCTAssertGreaterThanOrEqual(fd, 0)
        XCTAssertEqual(flock(fd, LOCK_EX | LOCK_NB), 0)
        assertToolError(try train(out, ["--max-steps", "1"]), contains: "another lora-train is writing this folder", code: 75)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out), [])
        flock(fd, LOCK_UN)
        close(fd)
        let r = try train(out, ["--max-steps", "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
    }

    /// A failed lora-train (nothing to resume, a NaN at step 1) left an empty or partial output folder.
    func testFailedRunLeavesNoOutputFolder() throws {
        assertToolError(try train(dir + "/r1", ["--max-steps", "2", "--resume"]), contains: "no checkpoint to resume from")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/r1"))
        assertToolError(try train(dir + "/r2", ["--max-steps", "2"], env: ["LORA_TEST_NAN_AT_STEP": "1"]), contains: "not finite")
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/r2"))
        // With a usable checkpoint the folder stays, so --resume can continue.
        assertToolError(try train(dir + "/r3", ["--max-steps", "4", "--save-every", "2"], env: ["LORA_TEST_NAN_AT_STEP": "3"]), contains: "not finite")
        XCTAssertEqual(Checkpoint.list(dir + "/r3").map(\.step), [2])
        // A folder the user made is never removed.
        try FileManager.default.createDirectory(atPath: dir + "/mine", withIntermediateDirectories: true)
        assertToolError(try train(dir + "/mine", ["--max-steps", "2"], env: ["LORA_TEST_NAN_AT_STEP": "1"]), contains: "not finite")
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/mine"))
    }

    /// A copy of the tiny model with `edit` applied to its tensors and `config` to its config.json.
    func brokenModel(_ name: String, tensors edit: ([TensorRecord], SafetensorsFile) -> [TensorRecord] = { r, _ in r },
                     config: (inout JSONObject) -> Void = { _ in }) throws -> String {
        let out = dir + "/" + name
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        for f in ["tokenizer.json", "tokenizer_config.json"] { try FileManager.default.copyItem(atPath: model + "/" + f, toPath: out + "/" + f) }
        var c = try jsonObject(try String(contentsOfFile: model + "/config.json", encoding: .utf8)).objectValue!
        config(&c)
        try JSONValue.object(c).serialized().write(toFile: out + "/config.json", atomically: true, encoding: .utf8)
        let st = try SafetensorsFile(path: model + "/model.safetensors")
        try SafetensorsWriter.write(edit(try st.names.map { TensorRecord(copying: try st.tensor($0)) }, st), toFile: out + "/model.safetensors")
        return out
    }

    /// lora-quantize and lora-merge wrote broken models (a projection missing, a misshapen embedding) with exit 0.
    func testBrokenModelsAreRefusedBeforeWriting() throws {
        let missing = try brokenModel("missing", tensors: { r, _ in r.filter { $0.name != "model.layers.1.mlp.down_proj.weight" } })
        let wrongEmbed = try brokenModel("embed", tensors: { r, _ in
            r.map { $0.name == "model.embed_tokens.weight" ? TensorRecord(name: $0.name, floats: [Float](repeating: 0.1, count: 1000 * 32), shape: [1000, 32], dtype: .BF16) : $0 }
        })
        let noNorm = try brokenModel("nonorm", tensors: { r, _ in r.filter { $0.name != "model.layers.0.post_attention_layernorm.weight" } })
        for (m, expect) in [(missing, "model.layers.1.mlp.down_proj.weight' is missing"), (wrongEmbed, "model.embed_tokens.weight' has shape [1000, 32]"),
                            (noNorm, "post_attention_layernorm.weight' is missing")] {
            assertToolError(try runTool("lora-quantize", [m, "-o", dir + "/q"]), contains: expect)
            assertToolError(try runTool("lora-merge", [m, "--adapter", adapter, "-o", dir + "/mm"]), contains: expect)
            assertToolError(try runTool("lora-eval", [m, "--data", data]), contains: expect)
            assertToolError(try runTool("lora-init", [m, "-o", dir + "/ai"]), contains: expect)
            for p in ["/q", "/mm", "/ai"] { XCTAssertFalse(FileManager.default.fileExists(atPath: dir + p), p) }
        }
    }

    /// Config values that were parsed and silently ignored or accepted out of range.
    func testConfigValuesAreChecked() throws {
        let cases: [(String, (inout JSONObject) -> Void, String)] = [
            ("gelu", { $0["hidden_act"] = .string("gelu") }, "\"gelu\" is not supported"),
            ("eps", { $0["rms_norm_eps"] = .double(.infinity) }, "rms_norm_eps"),
            ("theta", { $0["rope_theta"] = .double(.infinity) }, "rope_theta"),
            ("theta0", { $0["rope_theta"] = .string("big") }, "rope_theta"),
            ("scaling", { $0["rope_scaling"] = .string("garbage") }, "rope_scaling"),
            ("yarn", { $0["rope_scaling"] = .object(JSONObject([("rope_type", .string("yarn")), ("factor", .double(4))])) }, "'yarn' is not supported"),
            ("factor", { $0["rope_scaling"] = .object(JSONObject([("rope_type", .string("linear")), ("factor", .double(.nan))])) }, "rope_scaling.factor"),
            ("llama3", { $0["rope_scaling"] = .object(JSONObject([("rope_type", .string("llama3")), ("factor", .double(8)),
                                                                  ("low_freq_factor", .double(4)), ("high_freq_factor", .double(1))])) }, "high_freq_factor"),
            ("vocab", { $0["vocab_size"] = .int(1 << 40) }, "vocab_size"),
        ]
        for (name, edit, expect) in cases {
            let m = try brokenModel(name, config: edit)
            assertToolError(try runTool("lora-eval", [m, "--data", data]), contains: expect)
            assertToolError(try runTool("lora-quantize", [m, "-o", dir + "/q"]), contains: expect)
        }
        // A malformed generation_config.json was ignored, so generation ran past the model's stop token.
        for (text, expect) in [("{", "generation_config.json: invalid JSON"), (#"{"eos_token_id": "x"}"#, "eos_token_id"),
                               (#"{"eos_token_id": [5, 99999999]}"#, "eos_token_id")] {
            let m = try brokenModel("gen\(text.count)")
            try text.write(toFile: m + "/generation_config.json", atomically: true, encoding: .utf8)
            assertToolError(try runTool("lora-generate", [m, "--no-chat", "--prompt", "hi", "--max-tokens", "1"]), contains: expect)
        }
    }

    /// Numeric flags that overflowed: --rank 2^62 (SIGILL in the default alpha), --batch-size 2^63-1 (SIGABRT
    /// allocating), and sizes whose memory cannot exist.
    func testNumericFlagsAreBounded() throws {
        assertToolError(try runTool("lora-init", [model, "-o", dir + "/a", "--rank", "4611686018427387904"]), contains: "--rank must be in 1...65536", code: 64)
        assertToolError(try runTool("lora-init", [model, "-o", dir + "/a", "--rank", "33"]), contains: "rank")  // beyond the modules' 32
        assertToolError(try runTool("lora-eval", [model, "--data", data, "--batch-size", "9223372036854775807"]), contains: "--batch-size must be in", code: 64)
        assertToolError(try train(dir + "/t", ["--batch-size", "9223372036854775807"]), contains: "--batch-size must be in", code: 64)
        assertToolError(try train(dir + "/t", ["--grad-accum", "9223372036854775807"]), contains: "--grad-accum must be in", code: 64)
        assertToolError(try train(dir + "/t", ["--epochs", "9223372036854775807"]), contains: "--epochs must be in", code: 64)
        assertToolError(try train(dir + "/t", ["--adam-eps", "inf"]), contains: "--adam-eps", code: 64)
        assertToolError(try train(dir + "/t", ["--threads", "100000"]), contains: "--threads", code: 64)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/t"))
        // Within the flag bounds but beyond this machine: refused before allocating, naming the flag.
        let long = dir + "/long"
        try TinyModel.write(to: long, maxPositions: 1 << 20)
        assertToolError(try runTool("lora-train", [long, adapter, "--data", data, "-o", dir + "/t", "--seq-len", "1048576", "--batch-size", "65536"]),
                        contains: "lower --batch-size")
        XCTAssertEqual(Limits.product(1 << 40, 1 << 30), nil)
        XCTAssertEqual(Limits.product(3, 5, 7), 105)
    }

    /// A model too big for the memory left is refused before loading, with the estimate's parts and the fixes;
    /// mapped weights beyond it only warn (the kernel re-reads them). LORA_MEMORY_LIMIT stands for a smaller box.
    func testMemoryPlanRefusesWhatDoesNotFit() throws {
        let m = try ModelDir(path: model)
        let a = try Adapter.load(adapter)
        let ws = Transformer.trainWorkspaceBytes(config: m.config, rows: 64, seq: 32, maxR: 4, checkpointed: false)
        let plan = MemoryPlan.estimate(model: m, workspace: ws, rows: 64, adapterParams: a.trainableParameters, training: true, compute: .f32)
        let onDisk = try FileManager.default.attributesOfItem(atPath: model + "/model.safetensors")[.size] as! Int
        // Tied model: every tensor is read, so the mapped part is the file less its header.
        XCTAssertLessThanOrEqual(plan.mappedWeights, onDisk)
        XCTAssertGreaterThan(plan.mappedWeights, onDisk - 4096)
        XCTAssertEqual(plan.workspace, ws)
        XCTAssertEqual(plan.adapter, a.trainableParameters * 16)
        XCTAssertEqual(plan.head, m.config.vocabSize * m.config.hiddenSize * 4)

        let r = try train(dir + "/t", [], env: ["LORA_MEMORY_LIMIT": "100KB"])
        assertToolError(r, contains: "needs about")
        for part in ["weights", "mapped", "activations", "LORA_MEMORY_LIMIT=100KB", "pass --grad-checkpoint (activations", "lower --batch-size",
                     "4-bit base"] {
            XCTAssertTrue(r.stderr.contains(part), "\(part): \(r.stderr)")
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/t"))
        // Room for what is allocated but not for the mapped weights too: a warning, and the run goes on.
        let between = plan.allocated + (plan.total - plan.allocated) / 2
        // (In f32, the compute the plan above was made for; auto adds bf16 operands on a bf16 CPU.)
        let w = try train(dir + "/t2", ["--max-steps", "1", "--compute-dtype", "f32"], env: ["LORA_MEMORY_LIMIT": "\(between)"])
        XCTAssertEqual(w.status, 0, w.stderr)
        XCTAssertTrue(w.stderr.contains("re-read from disk"), w.stderr)
        assertToolError(try runTool("lora-eval", [model, "--data", data], env: ["LORA_MEMORY_LIMIT": "10KB"]), contains: "evaluating")
    }

    /// Non-finite weights used to print {"loss": NaN} (not even JSON); now the error names the data line.
    func testNonFiniteLossIsAnError() throws {
        let bad = dir + "/nanadapter"
        try FileManager.default.copyItem(atPath: adapter, toPath: bad)
        let st = try SafetensorsFile(path: adapter + "/adapter_model.safetensors")
        let recs = try st.names.map { n -> TensorRecord in
            let t = try st.tensor(n)
            return n.contains("lora_B") ? TensorRecord(name: n, floats: [Float](repeating: .infinity, count: t.numel), shape: t.shape, dtype: t.dtype)
                : TensorRecord(copying: t)
        }
        try FileManager.default.removeItem(atPath: bad + "/adapter_model.safetensors")
        try SafetensorsWriter.write(recs, toFile: bad + "/adapter_model.safetensors")
        let r = try runTool("lora-eval", [model, "--adapter", bad, "--data", data])
        assertToolError(r, contains: "the loss is")
        XCTAssertFalse(r.stdout.contains("NaN"), r.stdout)
    }

    /// Starts a tool without waiting (for the kill tests).
    func start(_ name: String, _ args: [String]) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: productsDir + "/" + name)
        p.arguments = args
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        p.standardInput = FileHandle.nullDevice
        try p.run()
        return p
    }

    /// SIGKILL lora-train at random moments (before, between and during checkpoint writes) and resume each
    /// time: no checkpoint is ever unreadable, and the final adapter equals the uninterrupted run's bytes.
    func testKillNineAtAnyMomentThenResume() throws {
        let args = ["--max-steps", "150", "--save-every", "1", "--keep-last", "2", "--seed", "3", "--dropout", "0.1"]
        let ref = try train(dir + "/ref", args)
        XCTAssertEqual(ref.status, 0, ref.stderr)
        let out = dir + "/killed"
        var rng = Xoshiro256(seed: 42)
        var kills = 0, finished = false
        for _ in 0..<60 {
            let resume = !Checkpoint.list(out).isEmpty
            let p = try start("lora-train", [model, adapter, "--data", data, "-o", out, "--seq-len", "32", "--batch-size", "2", "-q"]
                                + args + (resume ? ["--resume"] : []))
            usleep(UInt32(5_000 + rng.next() % 300_000))
            if p.isRunning { kill(p.processIdentifier, SIGKILL); kills += 1 }
            let status = waitForExit(p, what: "lora-train under kill -9")
            if status == 0 { finished = true; break }
            XCTAssertEqual(status, 137, "killed, not failed")
            // Every checkpoint left behind is whole.
            for c in Checkpoint.list(out) {
                let state = try Data(contentsOf: URL(fileURLWithPath: c.path + "/trainer_state.json"))
                XCTAssertNoThrow(try JSONDecoder().decode(TrainerState.self, from: state), c.path)
                XCTAssertNoThrow(try Adapter.load(c.path), c.path)
                XCTAssertNoThrow(try SafetensorsFile(path: c.path + "/optimizer.safetensors"), c.path)
            }
        }
        if !finished {
            let r = try train(out, args + (Checkpoint.list(out).isEmpty ? [] : ["--resume"]))
            XCTAssertEqual(r.status, 0, r.stderr)
        }
        print("kill -9: \(kills) kills, then resumed to the end")
        XCTAssertGreaterThan(kills, 3, "the kills should land while training runs")
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: out + "/checkpoints").filter { $0.hasPrefix(".") }
        XCTAssertEqual(leftovers, [], "the finishing run cleans what killed runs left")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out + "/adapter_model.safetensors")),
                       try Data(contentsOf: URL(fileURLWithPath: dir + "/ref/adapter_model.safetensors")),
                       "after \(kills) kills the resumed run ends with the uninterrupted run's adapter")
    }

    /// SIGKILL lora-merge and lora-quantize at random moments: the output is either absent or whole, never a
    /// half-written folder under the final name.
    func testKillNineNeverLeavesAHalfWrittenModel() throws {
        var rng = Xoshiro256(seed: 7)
        for (tool, extra) in [("lora-merge", ["--adapter", adapter]), ("lora-quantize", [])] {
            for i in 0..<12 {
                let out = dir + "/\(tool)-\(i)"
                let p = try start(tool, [model] + extra + ["-o", out])
                usleep(UInt32(rng.next() % 250_000))
                if p.isRunning { kill(p.processIdentifier, SIGKILL) }
                waitForExit(p, what: tool)
                guard FileManager.default.fileExists(atPath: out) else { continue }
                let m = try ModelDir(path: out)
                XCTAssertNoThrow(try m.validate(), "\(out) exists but is not whole")
            }
        }
    }
}
