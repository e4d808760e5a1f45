// ShowExamplesTests: `lora-train --show-examples N` and `lora-eval --show-examples N` on a generated tiny model with
// a chat template: the labels printed are the trainer's (same builder, masking, truncation, packing), prompts are
// masked for chat and prompt/completion rows and not for text rows, truncation and the plain-text markers show, nothing
// is written, N past the end of the data is said, and bad input exits 64 / 1 with one error line.
import XCTest
@testable import LoRAShared
@testable import LoRATrain
@testable import LoRATokenizer
import LoRACLI

final class ShowExamplesTests: XCTestCase {
    var dir = "", model = "", data = ""
    let rows = [
        #"{"messages": [{"role": "user", "content": "What colour is the sea?"}, {"role": "assistant", "content": "Blue, mostly."}]}"#,
        #"{"prompt": "Two plus two is", "completion": " four."}"#,
        #"{"text": "The harbour master counted bells."}"#,
        #"{"text": "A long text about the harbour master who counted eleven bells of the eastern tower before the first frost came over the hills and the sea."}"#,
        #"{"instruction": "Name a colour.", "output": "Green."}"#,
    ]

    override func setUpWithError() throws {
        dir = makeTempDir("show")
        model = dir + "/model"
        try TinyModel.write(to: model)
        data = dir + "/data.jsonl"
        try (rows.joined(separator: "\n") + "\n").write(toFile: data, atomically: true, encoding: .utf8)
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func lines(_ r: RunResult) throws -> [JSONValue] {
        try r.stdout.split(separator: "\n").map { try jsonObject(String($0)) }
    }
    func ints(_ v: JSONValue?) -> [Int32] { (v?.arrayValue ?? []).map { Int32($0.intValue ?? -999) } }

    /// The trainer's examples for the data, built by the library as lora-train builds them.
    func trainerExamples(seqLen: Int, maskPrompt: Bool? = nil) throws -> [Example] {
        let tok = try Tokenizer.load(directory: model)
        let file = try JSONLFile.read(data, skipBad: false)
        let b = try ExampleBuilder(tokenizer: tok, maskPrompt: maskPrompt, path: file.path, maxTokens: seqLen)
        return try file.records.map { try b.build($0) }
    }

    func testJSONLLabelsAreTheTrainersAndNothingIsWritten() throws {
        let out = dir + "/out"
        let r = try runTool("lora-train", [model, "--data", data, "-o", out, "--show-examples", "10", "--format", "jsonl", "--seq-len", "64"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out), "--show-examples writes nothing, not even -o")
        let objs = try lines(r)
        XCTAssertEqual(objs.count, rows.count + 1)
        let tok = try Tokenizer.load(directory: model)
        let expected = try trainerExamples(seqLen: 64)
        var totalTrained = 0
        for (k, e) in expected.enumerated() {
            let o = objs[k]
            XCTAssertEqual(o["example"], .int(Int64(k + 1)))
            XCTAssertEqual(o["line"], .int(Int64(e.line)))
            let ids = ints(o["ids"]), labels = ints(o["labels"])
            XCTAssertEqual(ids, Array(e.ids.prefix(64)), "line \(e.line)")
            // The trainer's labels for the same row: Batching's sequence, position 0 never predicted.
            let seq = Batching.sequence(e, seqLen: 64)
            XCTAssertEqual(labels, [-100] + Array(seq.labels.dropFirst()), "line \(e.line)")
            XCTAssertEqual(o["trained"]?.intValue, Int64(seq.scored))
            XCTAssertEqual(o["tokens"]?.arrayValue?.compactMap(\.stringValue), ids.map { tok.idToToken(Int($0))! })
            XCTAssertEqual(o["truncated"], .bool(e.ids.count > 64))
            totalTrained += seq.scored
            switch e.format {
            case .text:
                XCTAssertEqual(Array(labels.dropFirst()), Array(ids.dropFirst()), "text rows train on every token")
            default:
                XCTAssertTrue(labels.prefix(3).allSatisfy { $0 == -100 }, "the prompt is masked: \(labels)")
                XCTAssertGreaterThan(seq.scored, 0)
                XCTAssertLessThan(seq.scored, ids.count - 1, "line \(e.line): something is masked")
                XCTAssertEqual(labels.last(where: { $0 >= 0 }), Int32(tok.eosTokenId!), "the trained turn ends with <|im_end|>")
            }
        }
        XCTAssertEqual(expected.map { $0.ids.count > 64 }, [false, false, false, true, false], "only the long text row is cut at --seq-len 64")
        let s = objs.last!
        XCTAssertEqual(s["summary"], .bool(true))
        XCTAssertEqual(s["examples"], .int(Int64(rows.count)))
        XCTAssertEqual(s["trained"], .int(Int64(totalTrained)))
        XCTAssertEqual(s["truncated"], .int(1))
        // --mask-prompt false trains on the prompt too.
        let u = try runTool("lora-train", [model, "--data", data, "--show-examples", "1", "--format", "jsonl", "--mask-prompt", "false"])
        XCTAssertEqual(u.status, 0, u.stderr)
        let first = try lines(u)[0]
        let unmasked = Batching.sequence(try trainerExamples(seqLen: 512, maskPrompt: false)[0], seqLen: 512)
        XCTAssertEqual(ints(first["labels"]), [-100] + Array(unmasked.labels.dropFirst()))
        XCTAssertEqual(Array(ints(first["labels"])[1..<6]), Array(ints(first["ids"])[1..<6]), "the prompt is trained")
    }

    func testTextOutputMarksTrainedRunsAndTruncation() throws {
        let r = try runTool("lora-train", [model, "--data", data, "--show-examples", "4", "--seq-len", "48"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(r.stdout.contains("\u{1B}["), "no ANSI codes when stdout is not a terminal")
        // The prompt (with its special tokens) is plain, the answer through <|im_end|> is marked.
        XCTAssertTrue(r.stdout.contains("<|im_start|>user\nWhat colour is the sea?<|im_end|>\n<|im_start|>assistant\n«Blue, mostly.<|im_end|>»"), r.stdout)
        XCTAssertTrue(r.stdout.contains("Two plus two is« four.<|im_end|>»"), r.stdout)
        XCTAssertTrue(r.stdout.contains("=== example 1 · line 1 · messages ·"), r.stdout)
        let ex = try trainerExamples(seqLen: 48)
        XCTAssertEqual(ex.map { $0.ids.count > 48 }, [false, false, false, true, false])
        XCTAssertTrue(r.stdout.contains("[truncated at --seq-len 48: \(ex[3].ids.count - 48) tokens dropped]"), r.stdout)
        XCTAssertTrue(r.stdout.contains("truncated yes"), r.stdout)
        XCTAssertTrue(r.stdout.contains("summary: 4 examples shown"), r.stdout)
        XCTAssertTrue(r.stdout.contains("1 truncated at --seq-len 48"), r.stdout)
        XCTAssertFalse(r.stdout.contains("example 5"), "only the first 4")
    }

    func testPackingFollowsTheFirstEpoch() throws {
        let r = try runTool("lora-train", [model, "--data", data, "--show-examples", "10", "--format", "jsonl", "--seq-len", "40",
                                           "--packing", "--seed", "3"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let objs = try lines(r).dropLast()
        // The trainer's packed sequences of epoch 0, in one batch so their order is the packing order.
        let seqs = Batching.epoch(try trainerExamples(seqLen: 40), epoch: 0, seed: 3, batchSize: 64, seqLen: 40, packing: true)[0]
        var shown: [Int: (ids: [Int32], labels: [Int32])] = [:]
        for o in objs {
            let s = Int(o["sequence"]!.intValue!)
            shown[s, default: ([], [])].ids += ints(o["ids"])
            shown[s, default: ([], [])].labels += ints(o["labels"])
        }
        XCTAssertEqual(shown.count, seqs.count)
        XCTAssertLessThan(seqs.count, rows.count, "something is packed together")
        for (k, s) in seqs.enumerated() {
            XCTAssertEqual(shown[k + 1]?.ids, s.ids, "sequence \(k + 1)")
            XCTAssertEqual(shown[k + 1]?.labels, s.labels, "sequence \(k + 1)")
        }
        let t = try runTool("lora-train", [model, "--data", data, "--show-examples", "10", "--seq-len", "40", "--packing", "--seed", "3"])
        XCTAssertTrue(t.stdout.contains("[next example packed here]"), t.stdout)
        XCTAssertTrue(t.stdout.contains("packed in sequence 1 with line"), t.stdout)
    }

    func testFewerRowsThanAskedAndWarnings() throws {
        let r = try runTool("lora-train", [model, "--data", data, "--show-examples", "50"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("summary: 5 examples shown (asked for 50; the data has no more)"), r.stdout)
        XCTAssertTrue(r.stderr.contains("asked for 50 examples, the data has only 5"), r.stderr)
        // A completion cut by --seq-len loses its end-of-turn token: warned on stderr.
        let cut = dir + "/cut.jsonl"
        try #"{"prompt": "Hi", "completion": " a very long answer that goes on and on past the end of the sequence"}"#
            .write(toFile: cut, atomically: true, encoding: .utf8)
        let w = try runTool("lora-train", [model, "--data", cut, "--show-examples", "1", "--seq-len", "6"])
        XCTAssertEqual(w.status, 0, w.stderr)
        XCTAssertTrue(w.stderr.contains("without the end-of-turn token <|im_end|> (cut by --seq-len)"), w.stderr)
        let ok = try runTool("lora-train", [model, "--data", data, "--show-examples", "2"])
        XCTAssertFalse(ok.stderr.contains("warning"), ok.stderr)
    }

    func testEvalShowsWindowsAsTheEvaluatorScoresThem() throws {
        let r = try runTool("lora-eval", [model, "--data", data, "--show-examples", "4", "--format", "jsonl", "--seq-len", "16"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let objs = try lines(r)
        let ex = try trainerExamples(seqLen: 16)
        var expected: [Window] = []
        for e in ex.prefix(4) { expected += Evaluator.windows(e, EvalOptions(seqLen: 16)).windows }
        XCTAssertGreaterThan(expected.count, 4, "the long text row is scored in windows")
        XCTAssertEqual(objs.count, expected.count + 1)
        for (o, w) in zip(objs, expected) {
            XCTAssertEqual(ints(o["ids"]), w.ids)
            XCTAssertEqual(ints(o["labels"]), [-100] + Array(w.labels.dropFirst()))
        }
        let windowed = objs.filter { $0["line"] == .int(4) }
        XCTAssertGreaterThan(windowed.count, 1)
        XCTAssertEqual(windowed.map { $0["window"] }, (1...windowed.count).map { JSONValue.int(Int64($0)) })
        XCTAssertTrue(windowed.allSatisfy { $0["truncated"] == .bool(false) }, "text rows are windowed, not cut")
        XCTAssertEqual(objs[0]["truncated"], .bool(true), "the chat row is cut at --seq-len 16")
        XCTAssertEqual(objs.last!["examples"], .int(4))
    }

    func testColorOnATerminalAndPlainMarkersOtherwise() throws {
        let tok = try Tokenizer.load(directory: model)
        let shown = try ShowExamples.trainExamples(try JSONLFile.read(data, skipBad: false), tokenizer: tok, maskPrompt: nil, seqLen: 64,
                                                   vocab: 1824, packing: false, seed: 0, skipBad: false, count: 2)
        let color = ShowExamples.text(shown.units, requested: 2, tokenizer: tok, seqLen: 64, color: true)
        XCTAssertTrue(color.contains("\u{1B}[2m<|im_start|>user\nWhat colour"), "masked tokens dimmed: \(color)")
        XCTAssertTrue(color.contains("\u{1B}[1;32mBlue, mostly.<|im_end|>\u{1B}[0m"), "trained tokens bold green: \(color)")
        XCTAssertFalse(color.contains("«"))
        let plain = ShowExamples.text(shown.units, requested: 2, tokenizer: tok, seqLen: 64, color: false)
        XCTAssertFalse(plain.contains("\u{1B}"))
        XCTAssertTrue(plain.contains("«Blue, mostly.<|im_end|>»"), plain)
    }

    func testAnExampleThatTrainsNothingIsShownAndWarned() throws {
        let mixed = dir + "/mixed.jsonl"
        try "{\"text\": \"\"}\n\(rows[1])\n".write(toFile: mixed, atomically: true, encoding: .utf8)
        let r = try runTool("lora-train", [model, "--data", mixed, "--show-examples", "1", "--format", "jsonl"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let o = try lines(r)[0]
        XCTAssertEqual(o["trained"], .int(0))
        XCTAssertNotNil(o["unusable"]?.stringValue)
        XCTAssertTrue(r.stderr.contains("warning: example 1 (line 1) has 0 trained tokens"), r.stderr)
        // With --skip-bad-lines it is dropped, as training drops it.
        let s = try runTool("lora-train", [model, "--data", mixed, "--show-examples", "1", "--format", "jsonl", "--skip-bad-lines"])
        XCTAssertEqual(s.status, 0, s.stderr)
        XCTAssertEqual(try lines(s)[0]["line"], .int(2))
    }

    func testBadInput() throws {
        assertToolError(try runTool("lora-train", [model, "--data", data, "--show-examples", "0"]), contains: "--show-examples", code: 64)
        assertToolError(try runTool("lora-train", [model, "--data", data, "--show-examples=-2"]), contains: "--show-examples", code: 64)
        assertToolError(try runTool("lora-eval", [model, "--data", data, "--show-examples", "0"]), contains: "--show-examples", code: 64)
        assertToolError(try runTool("lora-train", [model, "--show-examples", "2"]), contains: "--data", code: 64)
        assertToolError(try runTool("lora-train", [model, "--data", data, "-o", dir + "/o"]), contains: "adapter", code: 64)
        let empty = dir + "/empty.jsonl"
        try #"{"text": ""}"#.write(toFile: empty, atomically: true, encoding: .utf8)
        assertToolError(try runTool("lora-train", [model, "--data", empty, "--show-examples", "3"]), contains: empty)
        assertToolError(try runTool("lora-eval", [model, "--data", empty, "--show-examples", "3"]), contains: empty)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/o"))
    }
}
