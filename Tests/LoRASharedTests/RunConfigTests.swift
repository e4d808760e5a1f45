// RunConfigTests: one run config for lora-init, lora-train and lora-eval. Real YAML (comments, sections, lists,
// anchors, merge keys) and JSON; flat files and training_config.json as before; every key checked against the one
// table of all tools' keys (a key of no tool names the closest, a key in the wrong section names its section);
// pipelines/run.example.yaml agrees with the table; a hostile file is refused. End to end: the same file makes the
// adapter (lora-init), trains it (lora-train) and evaluates it (lora-eval).
import XCTest
@testable import LoRAShared
import LoRACLI

final class RunConfigTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = makeTempDir("runconfig") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func write(_ name: String, _ text: String) -> String {
        let p = dir + "/" + name
        try! text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    func testNestedYAMLWithListsAnchorsAndMergeKeys() throws {
        let p = write("run.yaml", """
            # one file for the whole run
            seed: 7
            lora:
              rank: 8              # r
              alpha: 16
              targets: [q_proj, v_proj]
              rslora: yes
            data:
              train: data/train.jsonl
              seq_len: 128
              mask_prompt: false
            training: &train
              lr: 2e-4             # YAML 1.1 reads this as a string; a number here
              lr_schedule: cosine
              batch-size: 2
              max_steps: 1_000
            eval:
              <<: *train           # merge keys: the eval section takes what it has of training's
              seq_len: 256
            compute:
              threads: 1
            """)
        // The merge copies training's keys into eval, where lr is not a key: refused, naming the section.
        XCTAssertThrowsError(try ConfigFile(path: p, tool: "lora-train")) { e in
            XCTAssertTrue("\(e)".contains("'lr' in section 'eval' belongs in section 'training' (lora-train)"), "\(e)")
        }
        // A merge key within the table's keys: eval takes batch_size from training's anchor.
        let merged = write("merged.yaml", """
            training: &t
              batch_size: 3
            eval:
              <<: *t
              stride: 64
            """)
        let ev = try ConfigFile(path: merged, tool: "lora-eval")
        XCTAssertEqual(try ev.int("batch-size"), 3)
        XCTAssertEqual(try ev.int("stride"), 64)

        let fixed = write("fixed.yaml", try String(contentsOfFile: p, encoding: .utf8)
            .replacingOccurrences(of: "  <<: *train           # merge keys: the eval section takes what it has of training's\n", with: "  batch_size: 3\n"))
        let initCfg = try ConfigFile(path: fixed, tool: "lora-init")
        XCTAssertEqual(try initCfg.int("rank"), 8)
        XCTAssertEqual(try initCfg.double("alpha"), 16)
        XCTAssertEqual(try initCfg.string("targets"), "q_proj,v_proj")
        XCTAssertEqual(try initCfg.bool("rslora"), true)
        XCTAssertEqual(try initCfg.int("seed"), 7)
        XCTAssertEqual(try initCfg.int("threads"), 1)
        let train = try ConfigFile(path: fixed, tool: "lora-train")
        XCTAssertEqual(try train.double("lr"), 2e-4)
        XCTAssertEqual(try train.string("lr-schedule"), "cosine")
        XCTAssertEqual(try train.int("batch-size"), 2)
        XCTAssertEqual(try train.int("max-steps"), 1000)
        XCTAssertEqual(try train.int("seq-len"), 128)
        XCTAssertEqual(try train.bool("mask-prompt"), false)
        XCTAssertEqual(try train.string("data"), "data/train.jsonl")
        XCTAssertEqual(train.other("lora.rank"), .int(8))
        let eval = try ConfigFile(path: fixed, tool: "lora-eval")
        XCTAssertEqual(try eval.int("seq-len"), 256, "eval.seq-len wins over data.seq-len for lora-eval")
        XCTAssertEqual(try eval.int("batch-size"), 3)
        XCTAssertNil(try eval.string("data"), "lora-eval reads data.test, not the training data")
    }

    func testFlatFilesAndJSONStillWork() throws {
        let flat = try ConfigFile(path: write("flat.yaml", "lr: 1e-3\nseq_len: 64\nbatch-size: 2\n\"data\": 'x.jsonl'\nrank: 4\n"), tool: "lora-train")
        XCTAssertEqual(try flat.double("lr"), 1e-3)
        XCTAssertEqual(try flat.int("seq-len"), 64)
        XCTAssertEqual(try flat.string("data"), "x.jsonl")
        XCTAssertEqual(try ConfigFile(path: dir + "/flat.yaml", tool: "lora-init").int("rank"), 4)
        XCTAssertEqual(try ConfigFile(path: dir + "/flat.yaml", tool: "lora-eval").int("batch-size"), 2, "a flat key serves every tool that has it")
        let json = try ConfigFile(path: write("c.json", #"{"model": "m", "adapter": "a", "compute-backend": "emulated", "lr": 0.5, "max-steps": null, "training": {"epochs": 2}}"#), tool: "lora-train")
        XCTAssertEqual(try json.double("lr"), 0.5)
        XCTAssertNil(try json.int("max-steps"))
        XCTAssertEqual(try json.int("epochs"), 2)
        // An empty file (or only comments) is an empty config.
        XCTAssertNil(try ConfigFile(path: write("empty.yaml", "# nothing yet\n"), tool: "lora-train").double("lr"))
    }

    func testUnknownKeysWrongSectionsAndTypesAreNamed() {
        func error(_ text: String, tool: String = "lora-train") -> String {
            do { _ = try ConfigFile(path: write("bad.yaml", text), tool: tool); return "no error" } catch { return "\(error)" }
        }
        XCTAssertEqual(error("training:\n  learning_rate: 1e-3\n"), "bad.yaml:2: unknown key 'learning_rate' in section 'training'; did you mean 'lr'?".withPath(dir))
        XCTAssertEqual(error("learning_rate: 1e-3\n"), "bad.yaml:1: unknown key 'learning_rate'; did you mean 'lr' in section 'training'?".withPath(dir))
        XCTAssertEqual(error("trainig:\n  lr: 1\n"), "bad.yaml:1: unknown key 'trainig'; did you mean 'training'?".withPath(dir))
        XCTAssertEqual(error("data:\n  rank: 8\n"), "bad.yaml:2: 'rank' in section 'data' belongs in section 'lora' (lora-init)".withPath(dir))
        XCTAssertEqual(error("lora:\n  r: 8\n"), "bad.yaml:2: unknown key 'r' in section 'lora'; did you mean 'rank'?".withPath(dir))
        XCTAssertEqual(error("training:\n  lr: fast\n"), "bad.yaml:2: 'training.lr' must be a number".withPath(dir))
        XCTAssertEqual(error("training:\n  epochs: 1.5\n"), "bad.yaml:2: 'training.epochs' must be an integer".withPath(dir))
        XCTAssertEqual(error("lora:\n  targets: {q: 1}\n", tool: "lora-init"), "bad.yaml:2: 'lora.targets' must be a list of names (or a comma list)".withPath(dir))
        XCTAssertEqual(error("packing: maybe\n"), "bad.yaml:1: 'packing' must be true or false".withPath(dir))
        XCTAssertEqual(error("training: 5\n"), "bad.yaml:1: 'training' is a section: give it keys (e.g. training:\\n  lr: ...)".withPath(dir))
        XCTAssertTrue(error("lr: 1\nlr: 2\n").contains("invalid YAML"), error("lr: 1\nlr: 2\n"))  // duplicate keys
        XCTAssertTrue(error("a: [\n").contains("invalid YAML"))
        XCTAssertTrue(error("- 1\n- 2\n").contains("a run config is a mapping"))
        XCTAssertTrue(error("xyzzy: 1\n").contains("unknown key 'xyzzy'; valid keys: "))
        // Every key of the table is accepted by every tool: a tool leaves the others' keys alone.
        XCTAssertEqual(error("lora:\n  rank: 8\ntraining:\n  lr: 1e-3\neval:\n  stride: 8\n", tool: "lora-init"), "no error")
    }

    func testAliasBombIsRefusedNotExpanded() {
        var text = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
        for i in 1..<12 { text += "a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 10).joined(separator: ", ") + "]\n" }
        let t0 = Date()
        XCTAssertThrowsError(try ConfigFile(path: write("bomb.yaml", text), tool: "lora-train")) { e in
            XCTAssertTrue("\(e)".contains("expands to more than 100000 values"), "\(e)")
        }
        XCTAssertLessThan(Date().timeIntervalSince(t0), 5)
    }

    /// pipelines/run.example.yaml is the table, rendered: every key with its default. Regenerate it with
    /// LORA_UPDATE_EXAMPLE=1 swift test --filter RunConfigTests.
    func testExampleFileAgreesWithTheTable() throws {
        let path = Fixtures.root + "/../../../pipelines/run.example.yaml"
        let expected = RunConfig.exampleYAML()
        if ProcessInfo.processInfo.environment["LORA_UPDATE_EXAMPLE"] == "1" {
            try expected.write(toFile: path, atomically: true, encoding: .utf8)
        }
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), expected,
                       "pipelines/run.example.yaml is out of date: LORA_UPDATE_EXAMPLE=1 swift test --filter RunConfigTests")
        for tool in ["lora-init", "lora-train", "lora-eval"] {
            let c = try ConfigFile(path: path, tool: tool)
            if tool == "lora-train" {
                XCTAssertEqual(try c.double("lr"), Defaults.lr)
                XCTAssertNil(try c.int("seq-len"), "commented out: the tools' defaults differ")
            }
            if tool == "lora-init" { XCTAssertEqual(try c.string("targets"), Defaults.targets) }
        }
        // Every flag a tool looks up has a key, and every key's default parses as its kind.
        for k in RunConfig.keys { XCTAssertFalse(k.tools.isEmpty, k.qualified) }
    }

    /// One file: lora-init makes the adapter from its lora section, lora-train trains it from data and training,
    /// lora-eval evaluates from data and eval; flags still win.
    func testOneFileDrivesInitTrainAndEval() throws {
        let model = dir + "/model"
        try TinyModel.write(to: model)
        let data = write("train.jsonl", (0..<8).map { #"{"prompt": "Count to \#($0):", "completion": " \#((0...$0).map(String.init).joined(separator: " "))"}"# }.joined(separator: "\n") + "\n")
        let cfg = write("run.yaml", """
            seed: 3
            lora:
              rank: 4
              targets:
                - q_proj
                - v_proj
              dropout: 0
            data:
              train: \(data)
              test: \(data)
              seq_len: 64
            training:
              lr: 1e-3
              max_steps: 2
              batch_size: 2
              log_every: 1
            eval:
              batch_size: 8
            compute:
              threads: 1
            """)
        let i = try runTool("lora-init", [model, "-o", dir + "/init", "--config", cfg])
        XCTAssertEqual(i.status, 0, i.stderr)
        let summary = try jsonObject(i.stdout)
        XCTAssertEqual(summary["r"], .int(4))
        XCTAssertEqual(summary["modules"]?.arrayValue?.count, 4, "q_proj and v_proj of 2 layers")
        let t = try runTool("lora-train", [model, dir + "/init", "-o", dir + "/run", "--config", cfg, "--lr", "5e-4"])
        XCTAssertEqual(t.status, 0, t.stderr)
        let saved = try jsonObject(try String(contentsOfFile: dir + "/run/training_config.json", encoding: .utf8))
        XCTAssertEqual(saved["lr"], .double(5e-4), "the flag wins")
        XCTAssertEqual(saved["max-steps"], .int(2))
        XCTAssertEqual(saved["seq-len"], .int(64))
        XCTAssertEqual(saved["seed"], .int(3))
        XCTAssertEqual(t.stdout.split(separator: "\n").count, 3, "log_every 1: two steps and the summary")
        let e = try runTool("lora-eval", [model, "--adapter", dir + "/run", "--config", cfg])
        XCTAssertEqual(e.status, 0, e.stderr)
        XCTAssertEqual(try jsonObject(e.stdout)["seq_len"], .int(64))
        // The adapter made from another rank is named by lora-train.
        let other = try runTool("lora-init", [model, "-o", dir + "/r8", "--rank", "8"])
        XCTAssertEqual(other.status, 0, other.stderr)
        let w = try runTool("lora-train", [model, dir + "/r8", "-o", dir + "/run8", "--config", cfg])
        XCTAssertEqual(w.status, 0, w.stderr)
        XCTAssertTrue(w.stderr.contains("lora.rank is 4 but the adapter \(dir)/r8 has r = 8"), w.stderr)
        // A bad value in the lora section is lora-init's usage error, naming the file.
        let bad = write("bad.yaml", "lora:\n  rank: 0\n")
        assertToolError(try runTool("lora-init", [model, "-o", dir + "/x", "--config", bad]), contains: "\(bad): lora.rank must be in 1...", code: 64)
    }
}

private extension String {
    func withPath(_ dir: String) -> String { dir + "/" + self }
}
