// SanityCheckTests: `lora-train --sanity-check` on a generated tiny model with a chat template. A sound setup
// passes (the loss falls below the threshold well before the step limit, nothing is written); each broken variant
// fails with exit 1 and its cause named: the prompt trained (--mask-prompt false, or a rendered chat in text rows),
// no EOS (text rows without it, a tokenizer without eos_token), no trained tokens, a learning rate that cannot
// move the loss (stopped early as stalled), a non-finite loss. The diagnosis of loss curves is tested on its own.
import XCTest
@testable import LoRAShared
@testable import LoRATrain
@testable import LoRATokenizer
import LoRACLI

final class SanityCheckTests: XCTestCase {
    var dir = "", model = "", adapter = "", data = ""
    let rows = [
        #"{"messages": [{"role": "user", "content": "What colour is the sea?"}, {"role": "assistant", "content": "Blue, mostly."}]}"#,
        #"{"prompt": "Two plus two is", "completion": " four."}"#,
        #"{"instruction": "Name a colour.", "output": "Green."}"#,
        #"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye."}]}"#,
    ]

    override func setUpWithError() throws {
        dir = makeTempDir("sanity")
        model = dir + "/model"
        try TinyModel.write(to: model)
        adapter = dir + "/adapter"
        let r = try runTool("lora-init", [model, "-o", adapter, "--rank", "8", "--targets", "all-linear", "--seed", "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        data = try write("data.jsonl", rows)
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func write(_ name: String, _ lines: [String]) throws -> String {
        let p = dir + "/" + name
        try (lines.joined(separator: "\n") + "\n").write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    func check(_ extra: [String], data d: String? = nil, model m: String? = nil, env: [String: String] = [:]) throws -> (RunResult, JSONValue) {
        let r = try runTool("lora-train", [m ?? model, adapter, "--data", d ?? data, "--sanity-check", "--lr", "1e-2", "--seq-len", "64"] + extra,
                            env: env)
        let last = r.stdout.split(separator: "\n").last.map(String.init) ?? "{}"
        return (r, try jsonObject(last))
    }

    func causes(_ v: JSONValue) -> [String] { (v["problems"]?.arrayValue ?? []).compactMap { $0["cause"]?.stringValue } }

    func testASoundSetupPassesAndWritesNothing() throws {
        let out = dir + "/out"
        let (r, v) = try check(["-o", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(v["sanity_check"], .string("passed"), r.stdout)
        XCTAssertEqual(causes(v), [])
        let steps = v["steps"]!.intValue!, first = v["first_loss"]!.doubleValue!, final = v["final_loss"]!.doubleValue!
        XCTAssertLessThan(steps, 100, "it stops as soon as the loss is below the threshold")
        XCTAssertLessThanOrEqual(final, v["threshold"]!.doubleValue!)
        XCTAssertEqual(v["threshold"]!.doubleValue!, max(0.05 * first, 0.05), accuracy: 1e-5)
        XCTAssertEqual(v["examples"], .int(4))
        // The curve: one JSON line per step on stdout, one bar line per step on stderr.
        let stepLines: [JSONValue] = try r.stdout.split(separator: "\n").dropLast().map { try jsonObject(String($0)) }
        XCTAssertEqual(stepLines.count, Int(steps))
        XCTAssertEqual(stepLines.first?["sanity_step"], JSONValue.int(1))
        XCTAssertEqual(r.stderr.components(separatedBy: "sanity step ").count - 1, Int(steps))
        XCTAssertTrue(r.stderr.contains("sanity check passed"), r.stderr)
        XCTAssertTrue(r.stderr.contains("gives only 4 examples (--sanity-examples 8)"), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "the check writes nothing, not even -o")
        // The adapter it started from is untouched.
        let a = try Adapter.load(adapter)
        XCTAssertTrue(a.modules.values.allSatisfy { $0.b.allSatisfy { $0 == 0 } })
    }

    func testPromptNotMaskedFailsWithoutTraining() throws {
        let (r, v) = try check(["--mask-prompt", "false"])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertEqual(v["sanity_check"], .string("failed"))
        XCTAssertEqual(causes(v), ["prompt-trained"])
        XCTAssertEqual(v["steps"], .int(0), "a batch that trains the wrong tokens is not trained on")
        XCTAssertTrue(r.stderr.contains("sanity check failed: prompt-trained: trained tokens include the prompt"), r.stderr)
        XCTAssertTrue(r.stderr.contains("--mask-prompt false"), r.stderr)
        XCTAssertEqual(v["problems"]?.arrayValue?[0]["lines"], .array([.int(1), .int(2), .int(3), .int(4)]))
    }

    func testAOneLineJSONArrayIsCheckedRowByRow() throws {
        // Every element of a one-line array has line 1: each is still compared with its own masked build.
        let d = try write("one-line.json", ["[" + rows.joined(separator: ", ") + "]"])
        let (r, v) = try check(["--mask-prompt", "false"], data: d)
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertEqual(causes(v), ["prompt-trained"])
        XCTAssertEqual(v["examples"], .int(4))
    }

    func testARenderedChatInTextRowsTrainsThePrompt() throws {
        let tok = try Tokenizer.load(directory: model)
        let tpl = try ChatTemplate(tok.chatTemplate!, name: "t")
        let msgs = try jsonObject(rows[0])["messages"]!.arrayValue!
        let text = try tpl.render(messages: msgs, addGenerationPrompt: false, variables: tok.templateVariables)
        let d = try write("text-chat.jsonl", [JSONValue.object(JSONObject([("text", .string(text))])).serialized()])
        let (r, v) = try check([], data: d)
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertTrue(causes(v).contains("prompt-trained"), r.stdout)
        XCTAssertTrue(r.stderr.contains("rendered chat"), r.stderr)
        XCTAssertTrue(r.stderr.contains("{\"messages\": [...]}"), r.stderr)
    }

    func testTextRowsWithoutEOSFail() throws {
        let tok = try Tokenizer.load(directory: model)
        let eos = tok.eosToken!
        let d = try write("text.jsonl", [#"{"text": "Q: What colour is the sea?\nA: Blue, mostly."}"#,
                                          "{\"text\": \"Q: Two plus two?\\nA: Four.\(eos)\"}"])
        let (r, v) = try check([], data: d)
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertEqual(causes(v), ["missing-eos"])
        XCTAssertEqual(v["problems"]?.arrayValue?[0]["lines"], .array([.int(1)]), "line 2 ends with the EOS token")
        XCTAssertTrue(r.stderr.contains("no EOS at the end of the trained turn (line 1)"), r.stderr)
        XCTAssertTrue(r.stderr.contains("end each text with \(eos)"), r.stderr)
    }

    func testATokenizerWithoutEOSFails() throws {
        let m2 = dir + "/model-no-eos"
        try FileManager.default.copyItem(atPath: model, toPath: m2)
        let p = m2 + "/tokenizer_config.json"
        var cfg = try jsonObject(String(contentsOfFile: p, encoding: .utf8)).objectValue!
        cfg["eos_token"] = nil
        try JSONValue.object(cfg).serialized().write(toFile: p, atomically: true, encoding: .utf8)
        let d = try write("pc.jsonl", [rows[1]])
        let (r, v) = try check([], data: d, model: m2)
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertEqual(causes(v), ["missing-eos"])
        XCTAssertTrue(r.stderr.contains("names no"), r.stderr)
    }

    func testNoTrainedTokens() throws {
        let d = try write("users.jsonl", [#"{"messages": [{"role": "user", "content": "Hello there"}]}"#, rows[1]])
        let (r, v) = try check([], data: d)
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertEqual(causes(v), ["no-trained-tokens"])
        XCTAssertEqual(v["problems"]?.arrayValue?[0]["lines"], .array([.int(1)]))
        XCTAssertTrue(r.stderr.contains(#"no message has the role "assistant" (roles here: user)"#), r.stderr)
        // --skip-bad-lines drops it, as training would, and the rest passes.
        let (s, w) = try check(["--skip-bad-lines"], data: d)
        XCTAssertEqual(s.status, 0, s.stderr)
        XCTAssertEqual(w["lines"], .array([.int(2)]))
    }

    func testATinyLearningRateStallsAndIsNamed() throws {
        let (r, v) = try check(["--lr", "1e-9"])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertEqual(causes(v), ["lr-too-small"])
        XCTAssertEqual(v["steps"], .int(20), "a loss that has not moved after 20 steps is not trained for 100")
        XCTAssertTrue(r.stderr.contains("the learning rate is too small to move the loss; raise --lr"), r.stderr)
    }

    func testANonFiniteLossIsNamed() throws {
        let (r, v) = try check([], env: ["LORA_TEST_NAN_AT_STEP": "3"])
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertEqual(causes(v), ["non-finite-loss"])
        XCTAssertEqual(v["steps"], .int(2))
        XCTAssertTrue(r.stderr.contains("is not finite at step 3"), r.stderr)
    }

    func testExamplesStepsAndBatchSizeAreTheRuns() throws {
        // Two examples of four, in micro-batches of one: every step sees both (the trained-token count is theirs).
        let (r, v) = try check(["--sanity-examples", "2", "--batch-size", "1", "--sanity-steps", "3"])
        XCTAssertEqual(v["examples"], .int(2))
        XCTAssertEqual(v["lines"], .array([.int(1), .int(2)]))
        XCTAssertLessThanOrEqual(v["steps"]!.intValue!, 3)
        if r.status == 1 { XCTAssertEqual(causes(v), ["not-converged"], r.stderr) }
        let tok = try Tokenizer.load(directory: model)
        let b = try ExampleBuilder(tokenizer: tok, maskPrompt: nil, path: data, maxTokens: 64)
        let file = try JSONLFile.read(data, skipBad: false)
        let trained = try file.records.prefix(2).map { try Batching.sequence(b.build($0), seqLen: 64).scored }.reduce(0, +)
        XCTAssertEqual(v["trained_tokens"], .int(Int64(trained)))
    }

    func testDiagnosisOfLossCurves() {
        let s = SanityOptions()
        XCTAssertEqual(SanityCheck.diagnose([3, 3.5, 6, 5], threshold: 0.15, lr: 0.5, sanity: s).cause, .lossRose)
        XCTAssertEqual(SanityCheck.diagnose([3, 2.99, 2.98], threshold: 0.15, lr: 1e-9, sanity: s).cause, .lrTooSmall)
        XCTAssertTrue(SanityCheck.diagnose([3, 2.99], threshold: 0.15, lr: 2e-4, sanity: s).message.contains("scaling"))
        XCTAssertEqual(SanityCheck.diagnose([3, 2, 1, 0.5], threshold: 0.15, lr: 1e-3, sanity: s).cause, .notConverged)
        XCTAssertEqual(s.threshold(firstLoss: 3), 0.15, accuracy: 1e-12)
        XCTAssertEqual(s.threshold(firstLoss: 0.4), 0.05, accuracy: 1e-12)
    }

    func testBadUsage() throws {
        assertToolError(try runTool("lora-train", [model, adapter, "--data", data, "-o", dir + "/o", "--sanity-steps", "5"]),
                        contains: "--sanity-check", code: 64)
        assertToolError(try runTool("lora-train", [model, adapter, "--data", data, "--sanity-check", "--show-examples", "2"]),
                        contains: "--sanity-check", code: 64)
        assertToolError(try runTool("lora-train", [model, adapter, "--data", data, "--sanity-check", "--sanity-steps", "0"]),
                        contains: "--sanity-steps", code: 64)
        assertToolError(try runTool("lora-train", [model, adapter, "--data", data, "--sanity-check", "--resume"]),
                        contains: "resume", code: 64)
        assertToolError(try runTool("lora-train", [model, "--data", data, "--sanity-check"]), contains: "adapter", code: 64)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/o"))
    }
}
