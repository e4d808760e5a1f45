// DataFormatsTests: the data layouts people already have. Gzip (by magic bytes, files and stdin, several members;
// truncated or corrupt data is an error naming the line reached), a JSON array file (records named by the line
// each element starts on), ShareGPT rows (the same example as the equivalent messages row), per-message
// "weight"/"train" excluding an assistant turn from the loss, and `--data DIR` in mlx-lm's layout.
import XCTest
@testable import LoRAShared
@testable import LoRATrain
@testable import LoRATokenizer
import LoRACLI

final class DataFormatsTests: XCTestCase {
    var dir = "", model = ""
    let rows = [
        #"{"messages": [{"role": "user", "content": "What colour is the sea?"}, {"role": "assistant", "content": "Blue, mostly."}]}"#,
        #"{"prompt": "Two plus two is", "completion": " four."}"#,
        #"{"text": "The harbour master counted bells."}"#,
    ]

    override func setUpWithError() throws {
        dir = makeTempDir("formats")
        model = dir + "/model"
        try TinyModel.write(to: model)
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func write(_ name: String, _ text: String) throws -> String {
        let p = dir + "/" + name
        try text.write(toFile: p, atomically: true, encoding: .utf8)
        return p
    }

    /// gzip's own output for `text` (the system's gzip; the tests skip without it).
    func gzipped(_ text: String) throws -> Data {
        let src = try write("gz-src-\(UUID().uuidString)", text)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", "gzip -c -n '\(src)' > '\(src).gz'"]
        try p.run()
        p.waitUntilExit()
        try XCTSkipUnless(p.terminationStatus == 0, "gzip is not installed")
        return try Data(contentsOf: URL(fileURLWithPath: src + ".gz"))
    }

    func values(_ f: JSONLFile) -> [String] { f.records.map { "\($0.line) " + JSONValue.object($0.value).serialized() } }

    func testGzipIsReadByItsMagicBytes() throws {
        let text = rows.joined(separator: "\n") + "\n"
        let plain = try JSONLFile.read(try write("d.jsonl", text))
        let gz = try gzipped(text)
        let p = dir + "/d.jsonl.gz"
        try gz.write(to: URL(fileURLWithPath: p))
        XCTAssertEqual(values(try JSONLFile.read(p)), values(plain))
        // Any name: the bytes decide.
        let q = dir + "/data.txt"
        try gz.write(to: URL(fileURLWithPath: q))
        XCTAssertEqual(values(try JSONLFile.read(q)), values(plain))
        // Two members (cat a.gz b.gz) are one stream; line numbers run on.
        let two = gz + (try gzipped(rows[0] + "\n"))
        try two.write(to: URL(fileURLWithPath: q))
        let both = try JSONLFile.read(q)
        XCTAssertEqual(both.records.count, 4)
        XCTAssertEqual(both.records.last?.line, 4)
        // On stdin, through a tool: the same loss as the plain file.
        let a = try runTool("lora-eval", [model, "--data", dir + "/d.jsonl"])
        let b = try runTool("lora-eval", [model, "--data", "-"], stdin: gz)
        XCTAssertEqual(a.status, 0, a.stderr)
        XCTAssertEqual(b.status, 0, b.stderr)
        XCTAssertEqual(try jsonObject(a.stdout)["loss"], try jsonObject(b.stdout)["loss"])
    }

    func testTruncatedOrCorruptGzipIsAnErrorNamingTheLineReached() throws {
        let text = (0..<4000).map { #"{"text": "line \#($0) of a long file with some words in it"}"# }.joined(separator: "\n") + "\n"
        let gz = try gzipped(text)
        let p = dir + "/cut.jsonl.gz"
        try gz.prefix(gz.count / 2).write(to: URL(fileURLWithPath: p))
        assertThrows(try JSONLFile.read(p), contains: "the gzip data is truncated")
        assertThrows(try JSONLFile.read(p), contains: "decompressed up to line ")
        var bad = gz
        for i in 200..<260 { bad[i] ^= 0x5A }
        try bad.write(to: URL(fileURLWithPath: p))
        assertThrows(try JSONLFile.read(p), contains: "the gzip data is corrupt")
        let r = try runTool("lora-eval", [model, "--data", p])
        assertToolError(r, contains: p + ": the gzip data is corrupt")
        // A bomb is bounded.
        let big = try gzipped(String(repeating: "\n", count: 1 << 20))
        try big.withUnsafeBytes { b in
            XCTAssertThrowsError(try Gzip.decompress(b, limit: 1 << 16)) { XCTAssertTrue("\($0)".contains("decompresses to more than")) }
        }
    }

    func testAJSONArrayFileIsReadElementByElement() throws {
        let text = "[\n  " + rows[0] + ",\n  " + rows[1] + ",\n\n  {\"text\": \"a [bracket] and \\\"quote\\\" {brace}\"},\n  " + rows[2] + "\n]\n"
        let f = try JSONLFile.read(try write("d.json", text))
        XCTAssertEqual(f.records.map(\.line), [2, 3, 5, 6], "each record is named by the line its element starts on")
        XCTAssertEqual(f.records[2].value["text"], .string("a [bracket] and \"quote\" {brace}"))
        let bad = try write("bad.json", "[\n" + rows[0] + ",\n 7,\n" + rows[1] + "]")
        assertThrows(try JSONLFile.read(bad), contains: "bad.json:3: element 2 of the JSON array is a number, not an object")
        XCTAssertEqual(try JSONLFile.read(bad, skipBad: true).records.map(\.line), [2, 4])
        let broken = try write("broken.json", "[\n" + rows[0] + ",\n" + rows[1])
        assertThrows(try JSONLFile.read(broken), contains: "the file is a JSON array")
        assertThrows(try JSONLFile.read(broken), contains: "jq -c '.[]'")
    }

    func testShareGPTRowsAreMessages() throws {
        let tok = try Tokenizer.load(directory: model)
        let b = try ExampleBuilder(tokenizer: tok, maskPrompt: nil, path: "d.jsonl")
        let sg = try jsonObject(#"{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]}"#)
        let ms = try jsonObject(#"{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}"#)
        let e1 = try b.build(JSONLRecord(line: 1, value: sg.objectValue!)), e2 = try b.build(JSONLRecord(line: 1, value: ms.objectValue!))
        XCTAssertEqual(e1.format, .sharegpt)
        XCTAssertEqual(e1.ids, e2.ids)
        XCTAssertEqual(e1.targets, e2.targets)
        XCTAssertGreaterThan(e1.targetCount, 0)
        let unknown = try jsonObject(#"{"conversations": [{"from": "robot", "value": "Hi"}]}"#)
        assertThrows(try b.build(JSONLRecord(line: 7, value: unknown.objectValue!)), contains: #"d.jsonl:7: conversations[0]: unknown "from": "robot""#)
        let noValue = try jsonObject(#"{"conversations": [{"from": "human"}]}"#)
        assertThrows(try b.build(JSONLRecord(line: 2, value: noValue.objectValue!)), contains: #"needs a string "value""#)
        XCTAssertEqual(ExampleBuilder.shareGPTRoles["function_call"], "assistant")
        XCTAssertEqual(ExampleBuilder.shareGPTRoles["observation"], "tool")
    }

    /// A model folder whose tokenizer_config.json has the chat fixture `template` (e.g. qwen2.5) as its chat template.
    func model(withTemplate template: String) throws -> String {
        let m = dir + "/model-" + template
        try TinyModel.write(to: m)
        let src = try String(contentsOfFile: Fixtures.path("chat/\(template).jinja"), encoding: .utf8)
        let p = m + "/tokenizer_config.json"
        var cfg = try JSONParser().parse(try Data(contentsOf: URL(fileURLWithPath: p))).objectValue!
        cfg["chat_template"] = .string(src)
        try JSONValue.object(cfg).serialized().write(toFile: p, atomically: true, encoding: .utf8)
        return m
    }

    /// The decoded text of each run of trained tokens.
    func trainedRuns(_ e: Example, _ tok: Tokenizer) -> [String] {
        var runs: [String] = [], cur: [Int] = []
        for (id, t) in zip(e.ids, e.targets) {
            if t { cur.append(Int(id)) } else if !cur.isEmpty { runs.append(tok.decode(cur)); cur = [] }
        }
        if !cur.isEmpty { runs.append(tok.decode(cur)) }
        return runs
    }

    func testToolsAndToolCallsReachTheChatTemplateAsInTransformers() throws {
        // transformers' rendering of a tool conversation (chat fixtures, scripts/gen_chat_fixtures.py).
        let cases = try JSONParser().parse(try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("chat/cases.json"))))["cases"]!.arrayValue!
        let c = cases.first { $0["template"]?.stringValue == "qwen2.5" && $0["name"]?.stringValue == "tools/no_system" }!
        let tools = c["variables"]!["tools"]!
        let qwen = try model(withTemplate: "qwen2.5")
        let tok = try Tokenizer.load(directory: qwen)
        let b = try ExampleBuilder(tokenizer: tok, maskPrompt: nil, path: "d.jsonl")
        let row = JSONObject([("messages", c["messages"]!), ("tools", tools)])
        let e = try b.build(JSONLRecord(line: 1, value: row))
        XCTAssertEqual(tok.decode(e.ids.map(Int.init)), c["expected"]!.stringValue!)
        // Trained: the tool call (content null) and the answer, each through <|im_end|>; not the tool's response.
        let runs = trainedRuns(e, tok)
        XCTAssertEqual(runs.count, 2)
        XCTAssertTrue(runs[0].hasPrefix("<tool_call>\n{\"name\": \"get_weather\""), runs[0])
        XCTAssertTrue(runs[0].hasSuffix("</tool_call><|im_end|>"), runs[0])
        XCTAssertEqual(runs[1], "It is 21 °C and clear.<|im_end|>")

        // ShareGPT (LLaMA-Factory): "tools" as a JSON string, a function_call turn, an observation.
        let call = #"{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}"#
        let sg = try jsonObject(#"{"conversations": [{"from": "human", "value": "Weather in Paris?"}, {"from": "function_call", "value": "\#(call)"}, {"from": "observation", "value": "{\"temp\": 21, \"sky\": \"clear\"}"}, {"from": "gpt", "value": "It is 21 °C and clear."}], "tools": \#(JSONValue.string(tools.serialized()).serialized())}"#)
        let es = try b.build(JSONLRecord(line: 1, value: sg.objectValue!))
        let sgText = tok.decode(es.ids.map(Int.init))
        XCTAssertTrue(sgText.contains("<tools>\n{\"type\": \"function\", \"function\": {\"name\": \"get_weather\""), sgText)
        XCTAssertTrue(sgText.contains("<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call><|im_end|>"), sgText)
        XCTAssertTrue(sgText.contains("<tool_response>\n{\"temp\": 21, \"sky\": \"clear\"}\n</tool_response>"), sgText)
        XCTAssertEqual(trainedRuns(es, tok).count, 2)

        // A named "tool_use" template is the one rendered when tools are given (the qwen2 fixture's: {{ tools }}).
        let named = try Tokenizer.load(directory: model)
        let nb = try ExampleBuilder(tokenizer: named, maskPrompt: false, path: "d.jsonl")
        let withTools = try nb.build(JSONLRecord(line: 1, value: try jsonObject(#"{"messages": [{"role": "user", "content": "Hi"}], "tools": [{"type": "function", "function": {"name": "ping"}}]}"#).objectValue!))
        XCTAssertEqual(named.decode(withTools.ids.map(Int.init)), "[{'type': 'function', 'function': {'name': 'ping'}}]")

        // Tools or calls the template does not render are refused, never dropped.
        let chatml = try ExampleBuilder(tokenizer: try Tokenizer.load(directory: try model(withTemplate: "chatml")), maskPrompt: nil, path: "d.jsonl")
        let plain = JSONObject([("messages", try jsonObject(#"[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]"#)), ("tools", tools)])
        assertThrows(try chatml.build(JSONLRecord(line: 4, value: plain)), contains: #"d.jsonl:4: the model's chat template does not render "tools""#)
        let silentCall = try jsonObject(#"{"messages": [{"role": "user", "content": "Ping?"}, {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "ping", "arguments": {}}}]}]}"#)
        assertThrows(try chatml.build(JSONLRecord(line: 5, value: silentCall.objectValue!)), contains: #"d.jsonl:5: the model's chat template does not render "tool_calls" (messages[1])"#)
        assertThrows(try b.build(JSONLRecord(line: 6, value: try jsonObject(#"{"messages": [{"role": "user", "content": "Hi"}], "tools": {"name": "x"}}"#).objectValue!)),
                     contains: #""tools" must be a list of function definitions"#)
        assertThrows(try b.build(JSONLRecord(line: 7, value: try jsonObject(#"{"messages": [{"role": "assistant", "content": null, "tool_calls": "ping()"}]}"#).objectValue!)),
                     contains: "messages[0].tool_calls must be a list of calls")
    }

    func testWeightZeroExcludesAnAssistantTurn() throws {
        let tok = try Tokenizer.load(directory: model)
        let b = try ExampleBuilder(tokenizer: tok, maskPrompt: nil, path: "d.jsonl")
        func build(_ s: String) throws -> Example { try b.build(JSONLRecord(line: 1, value: try jsonObject(s).objectValue!)) }
        let all = try build(#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}, {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye."}]}"#)
        let w0 = try build(#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there.", "weight": 0}, {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye."}]}"#)
        let tf = try build(#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there.", "train": false}, {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "Goodbye.", "weight": 1}]}"#)
        XCTAssertEqual(w0.ids, all.ids)
        XCTAssertEqual(tf.targets, w0.targets)
        let first = tok.encode("Hello there.", addSpecialTokens: false).count + 1  // content and its end-of-turn token
        XCTAssertEqual(w0.targetCount, all.targetCount - first)
        // The excluded turn is the first: everything trained is after it.
        let firstTrained = w0.targets.firstIndex(of: true)!
        XCTAssertGreaterThan(firstTrained, all.targets.firstIndex(of: true)!)
        assertThrows(try build(#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo", "weight": 0.5}]}"#),
                     contains: "messages[1].weight must be 0 or 1")
        // ShareGPT's per-turn weight too.
        let sg = try build(#"{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello there.", "weight": 0}, {"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Goodbye."}]}"#)
        XCTAssertEqual(sg.targets, w0.targets)
    }

    func testDataDirInMLXLayout() throws {
        let d = dir + "/ds"
        try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
        let train = rows.joined(separator: "\n") + "\n"
        try train.write(toFile: d + "/train.jsonl", atomically: true, encoding: .utf8)
        try (rows[0] + "\n").write(toFile: d + "/valid.jsonl", atomically: true, encoding: .utf8)
        try (rows[1] + "\n").write(toFile: d + "/test.jsonl", atomically: true, encoding: .utf8)
        // lora-eval: test.jsonl.
        let a = try runTool("lora-eval", [model, "--data", d])
        let b = try runTool("lora-eval", [model, "--data", d + "/test.jsonl"])
        XCTAssertEqual(a.status, 0, a.stderr)
        XCTAssertEqual(try jsonObject(a.stdout)["loss"], try jsonObject(b.stdout)["loss"])
        // lora-train: train.jsonl, validated on valid.jsonl.
        let adapter = dir + "/adapter"
        XCTAssertEqual(try runTool("lora-init", [model, "-o", adapter, "--rank", "4"]).status, 0)
        let t = try runTool("lora-train", [model, adapter, "--data", d, "-o", dir + "/run", "--max-steps", "1", "--seq-len", "64", "-q"])
        XCTAssertEqual(t.status, 0, t.stderr)
        let last = try jsonObject(String(t.stdout.split(separator: "\n").last!))
        XCTAssertNotNil(last["valid_loss"]?.doubleValue, t.stdout)
        XCTAssertEqual(last["examples"], .int(3))
        let cfg = try jsonObject(String(contentsOfFile: dir + "/run/training_config.json", encoding: .utf8))
        XCTAssertEqual(cfg["data"], .string(d + "/train.jsonl"))
        XCTAssertEqual(cfg["valid"], .string(d + "/valid.jsonl"))
        // A folder without the split names the layout.
        try FileManager.default.removeItem(atPath: d + "/test.jsonl")
        assertToolError(try runTool("lora-eval", [model, "--data", d]), contains: "test.jsonl: not found; --data DIR evaluates DIR/test.jsonl")
        let empty = dir + "/empty-dir"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        assertToolError(try runTool("lora-train", [model, adapter, "--data", empty, "-o", dir + "/run2"]), contains: "needs DIR/train.jsonl")
    }
}
