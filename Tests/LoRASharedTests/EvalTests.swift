// EvalTests: lora-eval end to end on a random tiny Llama with a real tokenizer: its loss equals the library's
// forward pass, masking counts exactly the assistant / completion tokens, long texts go in windows, and bad
// input (empty file, malformed lines, missing keys, no chat template, foreign adapters) gets one error line.
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

final class EvalTests: XCTestCase {
    var dir = ""
    var model = ""
    override func setUpWithError() throws {
        dir = makeTempDir("eval")
        model = dir + "/model"
        try TinyModel.write(to: model)
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func data(_ lines: [String]) -> String {
        let p = dir + "/d\(UUID().uuidString.prefix(6)).jsonl"
        try! (lines.joined(separator: "\n") + "\n").write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    func eval(_ args: [String]) throws -> JSONValue {
        let r = try runTool("lora-eval", [model] + args + ["-q"])
        XCTAssertEqual(r.status, 0, r.stderr)
        return try jsonObject(r.stdout)
    }

    func testTextLossEqualsForwardPass() throws {
        let text = "The harbour master counted the bells of the eastern tower before the first frost."
        // The f32 pass is the reference the library's Transformer runs by default (auto picks bf16 on bf16 CPUs).
        let j = try eval(["--data", data([#"{"text": "\#(text)"}"#]), "--compute-dtype", "f32"])
        let tok = try Tokenizer.load(directory: model)
        let ids = tok.encode(text).map { Int32($0) }
        let tr = try Transformer(model: try ModelDir(path: model))
        let out = try tr.forward(TokenBatch(tokens: ids, labels: ids, lengths: [ids.count], batch: 1, seq: ids.count))
        XCTAssertEqual(j["tokens"], .int(Int64(ids.count - 1)))
        XCTAssertEqual(j["loss"]!.doubleValue!, out.nllSum / Double(out.tokens), accuracy: 1e-9)
        XCTAssertEqual(j["perplexity"]!.doubleValue!, Foundation.exp(out.nllSum / Double(out.tokens)), accuracy: 1e-6)
    }

    func testWindowsCoverEveryTokenOnce() throws {
        let long = Array(repeating: "a quiet morning by the old mill wheel", count: 18).joined(separator: ", ")
        let d = data([#"{"text": "\#(long)"}"#])
        let n = try Tokenizer.load(directory: model).encode(long).count
        XCTAssertTrue(n > 200 && n <= 512, "text of \(n) tokens should fit one 512 window")
        let whole = try eval(["--data", d, "--seq-len", "512"])
        let windowed = try eval(["--data", d, "--seq-len", "64"])
        let strided = try eval(["--data", d, "--seq-len", "64", "--stride", "32"])
        XCTAssertEqual(whole["tokens"], .int(Int64(n - 1)))
        // Disjoint windows lose one prediction per window (no context for its first token); strided windows
        // score each new token once, with context.
        let windows = (n + 63) / 64
        XCTAssertEqual(windowed["windows"], .int(Int64(windows)))
        XCTAssertEqual(windowed["tokens"], .int(Int64(n - windows)))
        XCTAssertEqual(strided["tokens"], .int(Int64(n - 1)))
        XCTAssertEqual(whole["truncated"], .int(0))
    }

    func testMaskingCountsOnlyAssistantAndCompletionTokens() throws {
        let tok = try Tokenizer.load(directory: model)
        let answer = "The capital of France is Paris."
        let chat = #"{"messages": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "\#(answer)"}]}"#
        let masked = try eval(["--data", data([chat])])
        // Targets: the answer's tokens and <|im_end|>; the trailing newline is context.
        XCTAssertEqual(masked["tokens"], .int(Int64(tok.encode(answer, addSpecialTokens: false).count + 1)))
        let unmasked = try eval(["--data", data([chat]), "--mask-prompt", "false"])
        XCTAssertGreaterThan(unmasked["tokens"]!.intValue!, masked["tokens"]!.intValue!)
        let pc = try eval(["--data", data([#"{"prompt": "Say hi:", "completion": " hello there"}"#])])
        XCTAssertEqual(pc["tokens"], .int(Int64(tok.encode(" hello there", addSpecialTokens: false).count + 1)))  // + EOS
        let ins = try eval(["--data", data([#"{"instruction": "Name a colour.", "output": "\#(answer)"}"#])])
        XCTAssertEqual(ins["tokens"], masked["tokens"])
    }

    func testZeroAdapterMatchesBaseAndStdinAdapter() throws {
        let d = data([#"{"text": "the winter storms came early that year"}"#])
        let base = try eval(["--data", d])
        let a = try runTool("lora-init", [model, "-o", "-", "--targets", "all-linear"])
        XCTAssertEqual(a.status, 0)
        let r = try runTool("lora-eval", [model, "--data", d, "--adapter", "-", "-q"], stdin: a.stdoutData)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try jsonObject(r.stdout)["loss"], base["loss"], "B = 0 must leave the loss unchanged")
    }

    func testBadInput() throws {
        assertToolError(try runTool("lora-eval", [model, "--data", data([""])]), contains: "no records")
        assertToolError(try runTool("lora-eval", [model, "--data", data([#"{"text": "ok"}"#, "[1, 2]"])]), contains: ":2: expected a JSON object")
        assertToolError(try runTool("lora-eval", [model, "--data", data([#"{"text": "ok"}"#, "{broken"])]), contains: ":2: invalid JSON")
        assertToolError(try runTool("lora-eval", [model, "--data", data([#"{"question": "?"}"#])]), contains: ":1: unrecognized row")
        assertToolError(try runTool("lora-eval", [model, "--data", data([#"{"prompt": "p"}"#])]), contains: "missing \"completion\"")
        assertToolError(try runTool("lora-eval", [model, "--data", data([#"{"text": 5}"#])]), contains: "\"text\" must be a string")
        assertToolError(try runTool("lora-eval", [model, "--data", dir + "/none.jsonl"]), contains: "not found")
        assertToolError(try runTool("lora-eval", [model, "--data", data([#"{"text": "ok"}"#]), "--seq-len", "4096"]), contains: "exceeds the model's context", code: 64)
        // A tokenizer whose ids exceed the model's vocabulary.
        let small = dir + "/small"
        try TinyModel.write(to: small, vocab: 300)
        assertToolError(try runTool("lora-eval", [small, "--data", data([#"{"text": "words beyond the first three hundred ids"}"#])]),
                        contains: "outside the model's vocabulary of 300")
        // --skip-bad-lines counts instead of stopping.
        let r = try runTool("lora-eval", [model, "--data", data([#"{"text": "fine words here"}"#, "{bad", #"{"text": "more fine words"}"#]), "--skip-bad-lines", "-q"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try jsonObject(r.stdout)["skipped_lines"], .int(1))
        XCTAssertTrue(r.stderr.contains(":2:"))
        // A chat file for a model without a chat template.
        let noTpl = dir + "/notpl"
        try TinyModel.write(to: noTpl, chatTemplate: false)
        assertToolError(try runTool("lora-eval", [noTpl, "--data", data([#"{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}"#])]),
                        contains: "chat template")
        // Missing and malformed tokenizer.json.
        try FileManager.default.removeItem(atPath: noTpl + "/tokenizer.json")
        assertToolError(try runTool("lora-eval", [noTpl, "--data", data([#"{"text": "x"}"#])]), contains: "tokenizer.json")
        try "{".write(toFile: noTpl + "/tokenizer.json", atomically: true, encoding: .utf8)
        assertToolError(try runTool("lora-eval", [noTpl, "--data", data([#"{"text": "x"}"#])]), contains: "tokenizer.json")
    }

    func testForeignAdapterListsEveryMismatch() throws {
        let other = dir + "/other"
        try TinyModel.write(to: other)
        // An adapter for a model with other shapes: the fixture tiny Llama (hidden 64).
        let r = try runTool("lora-eval", [model, "--data", data([#"{"text": "x y z"}"#]), "--adapter", Fixtures.path("peft/tiny-llama-r8-all-linear")])
        assertToolError(r, contains: "(14 problems)")
        // An adapter naming modules the model lacks (layer 5 of a 2-layer model).
        let a = dir + "/adapter"
        XCTAssertEqual(try runTool("lora-init", [other, "-o", a, "--targets", "q_proj"]).status, 0)
        let st = try SafetensorsFile(path: a + "/adapter_model.safetensors")
        let recs = try st.names.map { n in TensorRecord(copying: try st.tensor(n), as: n.replacingOccurrences(of: "layers.1.", with: "layers.5.")) }
        try SafetensorsWriter.write(recs, toFile: a + "/adapter_model.safetensors")
        assertToolError(try runTool("lora-eval", [model, "--data", data([#"{"text": "x y z"}"#]), "--adapter", a]),
                        contains: "model.layers.5.self_attn.q_proj is not a Linear module of the model")
    }
}
