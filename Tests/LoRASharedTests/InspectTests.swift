// InspectTests: lora-inspect run as a user runs it, on a generated tiny model, adapters written here with known
// weights, a tiny lora-train run and hand-made safetensors files: the model summary, adapter norms against ΔW
// formed in Double, untrained and NaN detection, checkpoints and runs, exact tensor statistics, diffs with a known
// maximum, stdin adapters, and the errors.
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRATrain
import LoRAInspect

final class InspectTests: XCTestCase {
    var dir = "", model = ""

    override func setUpWithError() throws {
        dir = makeTempDir("inspect")
        model = dir + "/model"
        try TinyModel.write(to: model)
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func inspect(_ args: [String], stdin: Data? = nil, file: StaticString = #filePath, line: UInt = #line) throws -> JSONValue {
        let r = try runTool("lora-inspect", args, stdin: stdin)
        XCTAssertEqual(r.status, 0, r.stderr, file: file, line: line)
        XCTAssertTrue(r.stderr.isEmpty, "nothing on stderr: \(r.stderr)", file: file, line: line)
        return try jsonObject(r.stdout)
    }

    /// An adapter on q_proj and v_proj of both layers with seeded random A and B (B = 0 with `zeroB`).
    func makeAdapter(seed: UInt64, r: Int = 3, alpha: Double = 6, zeroB: Bool = false, edit: (inout [String: LoRAWeights]) -> Void = { _ in }) -> Adapter {
        var rng = Xoshiro256(seed: seed)
        var mods: [(String, LoRAWeights)] = []
        for l in 0..<2 {
            for (n, out) in [("q_proj", 32), ("v_proj", 16)] {
                let a = (0..<(r * 32)).map { _ in rng.normal() * 0.3 }
                let b = (0..<(out * r)).map { _ in zeroB ? 0 : rng.normal() * 0.1 }
                mods.append(("model.layers.\(l).self_attn.\(n)", LoRAWeights(r: r, inFeatures: 32, outFeatures: out, a: a, b: b)))
            }
        }
        var dict = Dictionary(uniqueKeysWithValues: mods)
        edit(&dict)
        let cfg = LoRAConfig(r: r, alpha: alpha, dropout: 0, targets: .names(["q_proj", "v_proj"]))
        return Adapter(config: cfg, modules: mods.map { ($0.0, dict[$0.0]!) }, source: "test")
    }

    func moduleRows(_ j: JSONValue) -> [String: JSONValue] {
        Dictionary(uniqueKeysWithValues: (j["modules"]?.arrayValue ?? []).map { ($0["name"]!.stringValue!, $0) })
    }

    // MARK: models

    func testModelSummaryAndTensorList() throws {
        let j = try inspect([model])
        XCTAssertEqual(j["kind"], .string("model"))
        let c = j["config"]!
        XCTAssertEqual(c["model_type"], .string("llama"))
        XCTAssertEqual(c["hidden_size"], .int(32))
        XCTAssertEqual(c["num_hidden_layers"], .int(2))
        XCTAssertEqual(c["num_attention_heads"], .int(4))
        XCTAssertEqual(c["num_key_value_heads"], .int(2))
        XCTAssertEqual(c["intermediate_size"], .int(64))
        XCTAssertEqual(c["vocab_size"], .int(1824))
        XCTAssertEqual(c["tie_word_embeddings"], .bool(true))
        XCTAssertEqual(c["rope_theta"], .double(10000))
        XCTAssertEqual(j["quantized"], .bool(false))
        XCTAssertEqual(j["valid"], .bool(true))
        // TinyModel: embedding, final norm, and per layer 7 Linears and 2 norms, all BF16.
        let perLayer = 32 * 32 + 16 * 32 + 16 * 32 + 32 * 32 + 64 * 32 + 64 * 32 + 32 * 64 + 2 * 32
        let params = 1824 * 32 + 32 + 2 * perLayer
        XCTAssertEqual(j["parameters"], .int(Int64(params)))
        XCTAssertEqual(j["bytes"], .int(Int64(2 * params)))
        let t = j["tensors"]!
        XCTAssertEqual(t["count"], .int(20))
        XCTAssertEqual(t["by_dtype"]?["BF16"]?["count"], .int(20))
        XCTAssertEqual(t["by_dtype"]?["BF16"]?["bytes"], .int(Int64(2 * params)))
        let largest = t["largest"]!.arrayValue!
        XCTAssertEqual(largest.count, 5)
        XCTAssertEqual(largest[0]["name"], .string("model.embed_tokens.weight"))
        XCTAssertEqual(largest[0]["shape"], .array([.int(1824), .int(32)]))
        XCTAssertNil(t["list"])

        let full = try inspect([model, "--tensors"])["tensors"]!
        let list = full["list"]!.arrayValue!
        XCTAssertEqual(list.count, 20)
        let q = list.first { $0["name"] == .string("model.layers.1.self_attn.k_proj.weight") }
        XCTAssertEqual(q?["shape"], .array([.int(16), .int(32)]))
        XCTAssertEqual(q?["bytes"], .int(16 * 32 * 2))
        XCTAssertEqual(q?["dtype"], .string("BF16"))
    }

    func testQuantizedModelAndItsPackedWeightStats() throws {
        let q = dir + "/q"
        XCTAssertEqual(try runTool("lora-quantize", [model, "-o", q, "-q"]).status, 0)
        let j = try inspect([q])
        XCTAssertEqual(j["quantized"], .bool(true))
        XCTAssertEqual(j["quantization"]?["quant_type"], .string("nf4"))
        XCTAssertEqual(j["quantization"]?["blocksize"], .int(64))
        XCTAssertEqual(j["quantization"]?["double_quant"], .bool(true))
        XCTAssertEqual(j["quantization"]?["quantized_tensors"], .int(14))
        XCTAssertNotNil(j["quantization"]?["quantization_config"]?.objectValue)

        // The stats of a packed weight are those of its dequantized values (expanded here by LinearWeight).
        let name = "model.layers.0.mlp.up_proj"
        let s = try inspect([q, "--tensor", name + ".weight"])
        XCTAssertEqual(s["packed_4bit"], .bool(true))
        XCTAssertEqual(s["dequantized_shape"], .array([.int(64), .int(32)]))
        let w = try LinearWeight(name: name, store: try ModelDir(path: q).weights, out: 64, in: 32, hasBias: false)
        var vals = [Float](repeating: 0, count: 64 * 32)
        vals.withUnsafeMutableBufferPointer { w.expand(into: $0.baseAddress!) }
        let d = vals.map(Double.init)
        let mean = d.reduce(0, +) / Double(d.count)
        XCTAssertEqual(s["min"]?.doubleValue, d.min())
        XCTAssertEqual(s["max"]?.doubleValue, d.max())
        XCTAssertEqual(s["mean"]!.doubleValue!, mean, accuracy: 1e-12)
        XCTAssertEqual(s["zeros"], .int(Int64(d.filter { $0 == 0 }.count)))
    }

    // MARK: adapters

    func testAdapterNormsMatchTheFormedDelta() throws {
        let a = makeAdapter(seed: 3)
        try a.save(to: dir + "/ad")
        let j = try inspect([dir + "/ad"])
        XCTAssertEqual(j["kind"], .string("adapter"))
        XCTAssertEqual(j["r"], .int(3))
        XCTAssertEqual(j["scaling"], .double(2))
        XCTAssertEqual(j["target_modules"], .array([.string("q_proj"), .string("v_proj")]))
        XCTAssertEqual(j["untrained"], .bool(false))
        XCTAssertEqual(j["nan"], .int(0))
        let rows = moduleRows(j)
        XCTAssertEqual(rows.count, 4)
        var total = 0.0
        for (n, w) in a.modules {
            // ΔW = s·B·A formed in Double, [out, in].
            var sq = 0.0
            for o in 0..<w.outFeatures {
                for i in 0..<w.inFeatures {
                    var v = 0.0
                    for k in 0..<w.r { v += Double(w.b[o * w.r + k]) * Double(w.a[k * w.inFeatures + i]) }
                    sq += (2 * v) * (2 * v)
                }
            }
            total += sq
            let expect = sq.squareRoot()
            let got = try XCTUnwrap(rows[n]?["norm_delta_w"]?.doubleValue, n)
            XCTAssertEqual(got, expect, accuracy: 1e-5 * expect, n)
            let na = w.a.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            let nb = w.b.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            XCTAssertEqual(rows[n]!["norm_a"]!.doubleValue!, na, accuracy: 1e-9 * na, n)
            XCTAssertEqual(rows[n]!["norm_b"]!.doubleValue!, nb, accuracy: 1e-9 * nb, n)
            XCTAssertEqual(rows[n]!["b_zero"], .bool(false))
            // The library entry point agrees with the tool.
            XCTAssertEqual(Inspector.norms(w).normBA * 2, got, accuracy: 1e-12 * got)
        }
        XCTAssertEqual(j["norm_delta_w_total"]!.doubleValue!, total.squareRoot(), accuracy: 1e-5 * total.squareRoot())

        // The same adapter as one file (config in the metadata) is an adapter too, with the same norms.
        try SafetensorsWriter.write(a.records(), metadata: ["format": "pt", "adapter_config": a.configJSON()], toFile: dir + "/one.safetensors")
        let f = try inspect([dir + "/one.safetensors"])
        XCTAssertEqual(f["kind"], .string("adapter"))
        XCTAssertEqual(f["modules"], j["modules"])
    }

    func testUntrainedAdapterFromStdinAndNaNCounts() throws {
        let initRun = try runTool("lora-init", [model, "-o", "-", "--targets", "q_proj,v_proj", "--rank", "2"])
        XCTAssertEqual(initRun.status, 0, initRun.stderr)
        let j = try inspect(["-"], stdin: initRun.stdoutData)
        XCTAssertEqual(j["kind"], .string("adapter"))
        XCTAssertEqual(j["path"], .string("<stdin>"))
        XCTAssertEqual(j["untrained"], .bool(true))
        XCTAssertEqual(j["module_count"], .int(4))
        XCTAssertEqual(j["r"], .int(2))
        for m in j["modules"]!.arrayValue! {
            XCTAssertEqual(m["b_zero"], .bool(true))
            XCTAssertEqual(m["norm_delta_w"], .double(0))
            XCTAssertGreaterThan(m["norm_a"]!.doubleValue!, 0)
        }
        // A trained-looking adapter whose B has one non-zero value is not untrained.
        let one = makeAdapter(seed: 1, zeroB: true) { $0["model.layers.1.self_attn.v_proj"]!.b[5] = 0.5 }
        try one.save(to: dir + "/one")
        let o = try inspect([dir + "/one"])
        XCTAssertEqual(o["untrained"], .bool(false))
        XCTAssertEqual(moduleRows(o)["model.layers.1.self_attn.v_proj"]?["b_zero"], .bool(false))
        XCTAssertEqual(moduleRows(o)["model.layers.0.self_attn.v_proj"]?["b_zero"], .bool(true))

        let bad = makeAdapter(seed: 2) {
            $0["model.layers.0.self_attn.q_proj"]!.b[3] = .nan
            $0["model.layers.0.self_attn.q_proj"]!.b[4] = .nan
            $0["model.layers.1.self_attn.q_proj"]!.a[0] = .infinity
        }
        try bad.save(to: dir + "/bad")
        let r = try runTool("lora-inspect", [dir + "/bad"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertFalse(r.stdout.contains("NaN") || r.stdout.contains("Infinity"), "no NaN in the JSON: \(r.stdout)")
        let b = try jsonObject(r.stdout)
        XCTAssertEqual(b["nan"], .int(2))
        XCTAssertEqual(b["inf"], .int(1))
        let rows = moduleRows(b)
        XCTAssertEqual(rows["model.layers.0.self_attn.q_proj"]?["nan"], .int(2))
        XCTAssertEqual(rows["model.layers.0.self_attn.q_proj"]?["norm_delta_w"], .null)
        XCTAssertEqual(rows["model.layers.1.self_attn.q_proj"]?["inf"], .int(1))
        XCTAssertEqual(rows["model.layers.0.self_attn.v_proj"]?["nan"], .int(0))
        XCTAssertNotNil(rows["model.layers.0.self_attn.v_proj"]?["norm_delta_w"]?.doubleValue)
    }

    // MARK: training output

    func testCheckpointAndRunAfterATinyTraining() throws {
        let adapter = dir + "/adapter"
        XCTAssertEqual(try runTool("lora-init", [model, "-o", adapter, "--targets", "q_proj,v_proj", "--rank", "2", "--seed", "1"]).status, 0)
        let rows = (0..<6).map { #"{"text": "The harbour master counted \#($0) bells of the eastern tower before the first frost."}"# }
        let data = dir + "/data.jsonl"
        try (rows.joined(separator: "\n") + "\n").write(toFile: data, atomically: true, encoding: .utf8)
        let out = dir + "/run"
        let t = try runTool("lora-train", [model, adapter, "--data", data, "-o", out, "--seq-len", "48", "--batch-size", "2",
                                           "--lr", "5e-3", "--max-steps", "4", "--save-every", "1", "--keep-last", "2", "-q"])
        XCTAssertEqual(t.status, 0, t.stderr)
        let stateData = try Data(contentsOf: URL(fileURLWithPath: out + "/checkpoints/step-0000003/trainer_state.json"))
        let state = try JSONDecoder().decode(TrainerState.self, from: stateData)

        let run = try inspect([out])
        XCTAssertEqual(run["kind"], .string("run"))
        // lora-train checkpoints every step but the last: the latest state is step 3's.
        XCTAssertEqual(run["step"], .int(3))
        XCTAssertEqual(run["latest_checkpoint"], .string(out + "/checkpoints/step-0000003"))
        XCTAssertEqual(run["lr"], .double(5e-3))
        XCTAssertEqual(run["last_loss"]?.doubleValue, state.lastLoss)
        XCTAssertEqual(run["fingerprint"], .string(state.fingerprint))
        XCTAssertEqual(run["finished"], .bool(true))
        XCTAssertEqual(run["training_config"]?["max-steps"], .int(4))
        let cps = run["checkpoints"]!.arrayValue!
        XCTAssertEqual(cps.map { $0["step"] }, [.int(2), .int(3)], "--keep-last 2")
        XCTAssertNotNil(cps[0]["last_loss"]?.doubleValue)
        XCTAssertEqual(run["adapter"]?["untrained"], .bool(false))
        XCTAssertEqual(run["adapter"]?["module_count"], .int(4))

        let cp = try inspect([out + "/checkpoints/step-0000002"])
        XCTAssertEqual(cp["kind"], .string("checkpoint"))
        XCTAssertEqual(cp["step"], .int(2))
        XCTAssertEqual(cp["lr"], .double(5e-3))
        XCTAssertEqual(cp["fingerprint"], .string(state.fingerprint))
        XCTAssertEqual(cp["optimizer"]?["step"], .int(2))
        XCTAssertEqual(cp["optimizer"]?["tensors"], .int(16))
        XCTAssertEqual(cp["adapter"]?["kind"], .string("adapter"))
        XCTAssertEqual(cp["checkpoints"]?.arrayValue?.count, 2)

        // The trained adapter differs from its start only in B (A moves too, but B starts at zero).
        let d = try inspect(["--diff", adapter, out])
        XCTAssertEqual(d["compared"], .int(8))
        XCTAssertEqual(d["kind_b"], .string("run"))
        XCTAssertGreaterThan(d["max_abs_diff"]!.doubleValue!, 0)
    }

    // MARK: tensors

    func testTensorStatsAreExact() throws {
        let p = dir + "/known.safetensors"
        let f32: [Float] = [1.5, -2, 0, .nan, .infinity, 3, 0]
        let bf16: [Float] = [0.5, -0.25, 4, 0]   // exact in bf16
        try SafetensorsWriter.write([TensorRecord(name: "x", floats: f32, shape: [7]),
                                     TensorRecord(name: "h", floats: bf16, shape: [2, 2], dtype: .BF16),
                                     TensorRecord(name: "ids", dtype: .I64, shape: [3], bytes: [Int64(-7), 2, 11].flatMap { v in
                                         (0..<8).map { UInt8(truncatingIfNeeded: UInt64(bitPattern: v) >> (8 * UInt64($0))) } })],
                                    metadata: ["format": "pt", "note": "known"], toFile: p)
        let s = try inspect([p])
        XCTAssertEqual(s["kind"], .string("safetensors"))
        XCTAssertEqual(s["metadata"]?["note"], .string("known"))
        XCTAssertEqual(s["tensors"]?["count"], .int(3))
        XCTAssertEqual(s["tensors"]?["by_dtype"]?["I64"]?["bytes"], .int(24))

        let x = try inspect([p, "--tensor", "x"])
        let finite = [1.5, -2, 0, 3, 0]
        let mean = finite.reduce(0, +) / 5
        let std = (finite.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 5).squareRoot()
        XCTAssertEqual(x["min"], .double(-2))
        XCTAssertEqual(x["max"], .double(3))
        XCTAssertEqual(x["mean"]!.doubleValue!, mean, accuracy: 1e-15)
        XCTAssertEqual(x["std"]!.doubleValue!, std, accuracy: 1e-15)
        XCTAssertEqual(x["nan"], .int(1))
        XCTAssertEqual(x["inf"], .int(1))
        XCTAssertEqual(x["zeros"], .int(2))
        XCTAssertEqual(x["numel"], .int(7))

        let h = try inspect([p, "--tensor", "h"])
        XCTAssertEqual(h["dtype"], .string("BF16"))
        XCTAssertEqual(h["min"], .double(-0.25))
        XCTAssertEqual(h["max"], .double(4))
        XCTAssertEqual(h["mean"]!.doubleValue!, 1.0625, accuracy: 1e-15)
        XCTAssertEqual(h["zeros"], .int(1))
        let ids = try inspect([p, "--tensor", "ids"])
        XCTAssertEqual(ids["min"], .double(-7))
        XCTAssertEqual(ids["max"], .double(11))

        // A model tensor by name, and a name that does not exist.
        let n = try inspect([model, "--tensor", "model.norm.weight"])
        XCTAssertEqual(n["shape"], .array([.int(32)]))
        assertToolError(try runTool("lora-inspect", [model, "--tensor", "model.norm"]), contains: "no tensor named 'model.norm'")
    }

    // MARK: diff

    func testDiff() throws {
        let same = try inspect(["--diff", model, model])
        XCTAssertEqual(same["compared"], .int(20))
        XCTAssertEqual(same["identical"], .int(20))
        XCTAssertEqual(same["max_abs_diff"], .double(0))
        XCTAssertEqual(same["max_rel_diff"], .double(0))
        XCTAssertEqual(same["only_in_a"], .array([]))

        let a = makeAdapter(seed: 5)
        let b = makeAdapter(seed: 5) {
            $0["model.layers.1.self_attn.v_proj"]!.b[7] += 0.25
            $0["model.layers.0.self_attn.q_proj"]!.a[2] -= 0.125
        }
        try a.save(to: dir + "/a")
        try b.save(to: dir + "/b")
        let d = try inspect(["--diff", dir + "/a", dir + "/b"])
        XCTAssertEqual(d["compared"], .int(8))
        XCTAssertEqual(d["identical"], .int(6))
        XCTAssertEqual(d["differing"], .int(2))
        let va = Double(a.modules["model.layers.1.self_attn.v_proj"]!.b[7]), vb = Double(b.modules["model.layers.1.self_attn.v_proj"]!.b[7])
        XCTAssertEqual(d["max_abs_diff"], .double(abs(va - vb)))
        XCTAssertEqual(d["max_abs_diff"]!.doubleValue!, 0.25, accuracy: 1e-6)
        XCTAssertEqual(d["max_abs_tensor"], .string("model.layers.1.self_attn.v_proj.lora_B.weight"))
        let row = d["tensors"]!.arrayValue!.first { $0["name"] == .string("model.layers.0.self_attn.q_proj.lora_A.weight") }
        XCTAssertEqual(row?["differing_elements"], .int(1))
        XCTAssertEqual(row?["max_abs_diff"]!.doubleValue ?? 0, 0.125, accuracy: 1e-6)

        // Names on one side only.
        let fewer = Adapter(config: a.config, modules: a.moduleNames.dropLast().map { ($0, a.modules[$0]!) }, source: "t")
        try fewer.save(to: dir + "/fewer")
        let f = try inspect(["--diff", dir + "/fewer", dir + "/a"])
        XCTAssertEqual(f["compared"], .int(6))
        XCTAssertEqual(f["identical"], .int(6))
        XCTAssertEqual(f["only_in_a"], .array([]))
        XCTAssertEqual(f["only_in_b"], .array([.string("model.layers.1.self_attn.v_proj.lora_A.weight"),
                                               .string("model.layers.1.self_attn.v_proj.lora_B.weight")]))
        assertToolError(try runTool("lora-inspect", ["--diff", model, dir + "/a"]), contains: "cannot diff")
    }

    // MARK: errors

    func testUnrecognizedPathsAndUsage() throws {
        try FileManager.default.createDirectory(atPath: dir + "/empty", withIntermediateDirectories: true)
        let msg = "not a model dir, adapter, checkpoint, run dir or safetensors file (looked for config.json, adapter_config.json, trainer_state.json, training_config.json, *.safetensors)"
        assertToolError(try runTool("lora-inspect", [dir + "/empty"]), contains: dir + "/empty: " + msg)
        try "hello".write(toFile: dir + "/notes.txt", atomically: true, encoding: .utf8)
        assertToolError(try runTool("lora-inspect", [dir + "/notes.txt"]), contains: msg)
        assertToolError(try runTool("lora-inspect", [dir + "/missing"]), contains: "not found")
        // A damaged safetensors file gives the library's own message.
        writeBytes([8, 0, 0, 0, 0, 0, 0, 0] + Array("{\"x\":1}".utf8) + [32], dir + "/bad.safetensors")
        assertToolError(try runTool("lora-inspect", [dir + "/bad.safetensors"]), contains: "bad.safetensors: tensor 'x': entry is not an object")
        assertToolError(try runTool("lora-inspect", []), contains: "expected one PATH", code: 64)
        assertToolError(try runTool("lora-inspect", ["--diff", model]), contains: "--diff takes two paths", code: 64)
        assertToolError(try runTool("lora-inspect", ["--diff", "-", "-"]), contains: "only one input per command can be '-'", code: 64)
    }
}
