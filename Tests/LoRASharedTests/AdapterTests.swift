// AdapterTests: lora-init's adapters have PEFT's keys, shapes and parameter counts (Fixtures/peft/expected.json),
// initialize as PEFT does, round-trip through folders and single-file streams, and read genuine PEFT files.
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

final class AdapterTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = makeTempDir("ad") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func config(from c: JSONValue) -> LoRAConfig {
        let r = Int(c["r"]!.intValue!)
        let t: TargetModules
        switch c["target_modules"]! {
        case .string(let s): t = s == "all-linear" ? .allLinear : .regex(s)
        case .array(let a): t = .names(a.map { $0.stringValue! })
        default: fatalError("bad fixture")
        }
        return LoRAConfig(r: r, alpha: c["lora_alpha"]?.doubleValue ?? 8, dropout: c["lora_dropout"]?.doubleValue ?? 0,
                          targets: t, useRslora: c["use_rslora"]?.boolValue ?? false)
    }

    func testMatchesPEFTCountsKeysAndShapes() throws {
        let expected = try jsonObject(String(contentsOfFile: Fixtures.path("peft/expected.json"), encoding: .utf8))
        let model = try ModelDir(path: Fixtures.path("tiny-llama"))
        let quantized = dir + "/nf4"
        _ = try ModelQuantizer.run(input: Fixtures.path("tiny-llama"), output: quantized, options: QuantizeOptions())
        let qmodel = try ModelDir(path: quantized)
        for case_ in expected["configs"]!.arrayValue! {
            let cfg = config(from: case_["config"]!)
            if case_["error"] != nil {
                // PEFT refuses this config (a string target is a regex full match on the whole name); so do we.
                assertThrows(try Adapter.initialize(config: cfg, model: model, initMode: .kaiming, seed: 1), contains: "matches no Linear module")
                continue
            }
            for m in [model, qmodel] {
                let a = try Adapter.initialize(config: cfg, model: m, initMode: .kaiming, seed: 1)
                XCTAssertEqual(a.trainableParameters, Int(case_["trainable"]!.intValue!), "\(case_["config"]!.serialized())")
                XCTAssertEqual(m.parameterCount() + a.trainableParameters, Int(case_["total"]!.intValue!), "total for \(m.path)")
                let rows = a.records().map { r in "\(r.name) \(r.shape) \(r.dtype.rawValue)" }.sorted()
                let want = case_["adapter_model_tensors"]!.arrayValue!.map { row -> String in
                    let r = row.arrayValue!
                    return "\(r[0].stringValue!) \(r[1].arrayValue!.map { Int($0.intValue!) }) \(r[2].stringValue!)"
                }
                XCTAssertEqual(rows, want)
                XCTAssertEqual(cfg.scaling(for: a.moduleNames[0]), case_["scaling"]!.doubleValue!, accuracy: 1e-12)
            }
        }
    }

    func testInitDistributionsAndZeroB() throws {
        let model = try ModelDir(path: Fixtures.path("tiny-llama"))
        var cfg = LoRAConfig(r: 8, alpha: 16, dropout: 0, targets: .allLinear)
        let k = try Adapter.initialize(config: cfg, model: model, initMode: .kaiming, seed: 5)
        for n in k.moduleNames {
            let w = k.modules[n]!
            let bound = 1 / Float(w.inFeatures).squareRoot()
            XCTAssertTrue(w.a.allSatisfy { abs($0) <= bound }, n)
            XCTAssertGreaterThan(w.a.map(abs).max()!, bound * 0.9, n)
            XCTAssertTrue(w.b.allSatisfy { $0 == 0 }, n)
        }
        cfg.r = 4
        let g = try Adapter.initialize(config: cfg, model: model, initMode: .gaussian, seed: 5)
        let all = g.modules.values.flatMap(\.a).map(Double.init)
        let std = (all.map { $0 * $0 }.reduce(0, +) / Double(all.count)).squareRoot()
        XCTAssertEqual(std, 0.25, accuracy: 0.02)  // N(0, 1/r), r = 4
        // Same seed → same bytes; another seed → different.
        let k2 = try Adapter.initialize(config: LoRAConfig(r: 8, alpha: 16, dropout: 0, targets: .allLinear), model: model, initMode: .kaiming, seed: 5)
        XCTAssertEqual(k.modules[k.moduleNames[0]]!.a, k2.modules[k.moduleNames[0]]!.a)
    }

    func testFolderAndStreamRoundTrip() throws {
        let model = try ModelDir(path: Fixtures.path("tiny-llama"))
        let cfg = LoRAConfig(r: 4, alpha: 8, dropout: 0.1, targets: .names(["q_proj", "v_proj"]), useRslora: true)
        let a = try Adapter.initialize(config: cfg, model: model, initMode: .kaiming, seed: 2)
        let folder = dir + "/adapter"
        try a.save(to: folder)
        let b = try Adapter.load(folder)
        XCTAssertEqual(b.moduleNames, a.moduleNames)
        XCTAssertEqual(b.modules[a.moduleNames[1]]!.a, a.modules[a.moduleNames[1]]!.a)
        XCTAssertTrue(b.config.useRslora)
        XCTAssertEqual(b.config.dropout, 0.1)
        try b.validate(against: model.linearModules())
        assertThrows(try a.save(to: folder), contains: "already exists")
        // Single-file stream with the config in metadata.
        let single = dir + "/adapter.safetensors"
        let f = try AtomicFile(path: single)
        try a.write(stream: f)
        try f.commit()
        let c = try Adapter.load(single)
        XCTAssertEqual(c.modules[a.moduleNames[0]]!.a, a.modules[a.moduleNames[0]]!.a)
        XCTAssertEqual(c.config.r, 4)
        // A plain safetensors without adapter_config metadata is refused with a hint.
        assertThrows(try Adapter.load(folder + "/adapter_model.safetensors"), contains: "adapter_config")
    }

    func testReadsGenuinePEFTAdapter() throws {
        let a = try Adapter.load(Fixtures.path("peft/tiny-llama-r8-all-linear"))
        XCTAssertEqual(a.moduleNames.count, 14)
        XCTAssertEqual(a.config.r, 8)
        XCTAssertTrue(a.modules.values.contains { $0.b.contains { $0 != 0 } })
        let model = try ModelDir(path: Fixtures.path("tiny-llama"))
        try a.validate(against: model.linearModules())
        let qwen = try ModelDir(path: Fixtures.path("tiny-qwen2"))
        if try qwen.linearModules().map(\.inFeatures) != model.linearModules().map(\.inFeatures) {
            assertThrows(try a.validate(against: qwen.linearModules()), contains: "does not fit")
        }
    }

    func testTargetMatchingAndErrors() throws {
        let model = try ModelDir(path: Fixtures.path("tiny-llama"))
        let none = LoRAConfig(r: 4, alpha: 8, dropout: 0, targets: .names(["query"]))
        assertThrows(try Adapter.initialize(config: none, model: model, initMode: .kaiming, seed: 0), contains: "q_proj")
        let big = LoRAConfig(r: 65, alpha: 8, dropout: 0, targets: .names(["q_proj"]))
        assertThrows(try Adapter.initialize(config: big, model: model, initMode: .kaiming, seed: 0), contains: "min(in, out)")
        let suffix = LoRAConfig(r: 2, alpha: 4, dropout: 0, targets: .names(["self_attn.q_proj"]))
        XCTAssertEqual(try Adapter.initialize(config: suffix, model: model, initMode: .kaiming, seed: 0).moduleNames.count, 2)
        let regex = LoRAConfig(r: 2, alpha: 4, dropout: 0, targets: .regex(#".*\.1\.mlp\.(up|down)_proj"#))
        XCTAssertEqual(try Adapter.initialize(config: regex, model: model, initMode: .kaiming, seed: 0).moduleNames,
                       ["model.layers.1.mlp.up_proj", "model.layers.1.mlp.down_proj"])
        var patterned = LoRAConfig(r: 4, alpha: 8, dropout: 0, targets: .allLinear)
        patterned.rankPattern = [("layers.0.self_attn.q_proj", 2)]
        patterned.alphaPattern = [("down_proj", 32)]
        XCTAssertEqual(patterned.rank(for: "model.layers.0.self_attn.q_proj"), 2)
        XCTAssertEqual(patterned.rank(for: "model.layers.10.self_attn.q_proj"), 4)
        XCTAssertEqual(patterned.scaling(for: "model.layers.1.mlp.down_proj"), 8)
    }
}
