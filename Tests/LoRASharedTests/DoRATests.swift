// DoRATests: DoRA (use_dora, lora_magnitude_vector) against PEFT (Fixtures/dora/<case>, scripts/gen_dora_fixtures.py):
// logits and loss, the A / B / magnitude gradients (also with activation checkpointing, and the magnitude's by
// finite differences), greedy decoding against generate(), merge_and_unload's weights, lora-init --dora's magnitude;
// on an NF4 base against the dequantized merge; lora-train end to end with resume; and the tool paths that refuse
// DoRA.
import Foundation
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRAFormats

final class DoRATests: XCTestCase {
    static let cases = [("dora-llama", "forward/llama-gqa-tied/model"), ("dora-qwen2-bias", "forward/qwen2-bias/model"),
                        ("dora-llama-nf4", "forward/llama-nf4/model")]
    var dir = ""
    override func setUp() { dir = makeTempDir("dora") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func load(_ name: String, model: String) throws -> (Transformer, ModelDir, TokenBatch, SafetensorsFile) {
        let m = try ModelDir(path: Fixtures.path(model))
        let io = try SafetensorsFile(path: Fixtures.path("dora/\(name)/io.safetensors"))
        let batch = try fixtureBatch(io)
        let tr = try Transformer(model: m)
        let a = try Adapter.load(Fixtures.path("dora/\(name)/adapter"))
        XCTAssertTrue(a.config.useDora)
        try tr.attach(a, linears: try m.linearModules())
        return (tr, m, batch, io)
    }

    func testForwardMatchesPEFT() throws {
        for (name, model) in DoRATests.cases {
            let (tr, _, batch, io) = try load(name, model: model)
            let out = try tr.forward(batch, wantLogits: true)
            let diff = maxAbsDiff(out.logits!, try io.tensor("logits_lora").floats())
            XCTAssertLessThan(diff, ForwardParityTests.logitTolerance, "\(name): max |Δlogit| \(diff)")
            XCTAssertEqual(out.nllSum / Double(out.tokens), Double(try io.tensor("loss_lora").floats()[0]), accuracy: ForwardParityTests.lossTolerance)
            print("dora forward parity \(name): max |Δlogit| \(diff)")
        }
    }

    func testGradientsMatchPEFT() throws {
        for (name, model) in DoRATests.cases {
            let (tr, _, batch, _) = try load(name, model: model)
            let ref = try SafetensorsFile(path: Fixtures.path("dora/\(name)/grads.safetensors"))
            let scored = batch.shiftedTargets.filter { $0 >= 0 }.count
            let g = LoRAGradients(for: tr.lora), ck = LoRAGradients(for: tr.lora)
            let r = try tr.trainStep(batch, lossScale: 1 / Float(scored), grads: g)
            _ = try tr.trainStep(batch, lossScale: 1 / Float(scored), grads: ck, checkpointLayers: true)
            XCTAssertEqual(r.nllSum / Double(r.tokens), Double(try ref.tensor("loss").floats()[0]), accuracy: 1e-5)
            var n = 0
            var worst: [String: Float] = [:]
            for m in tr.lora.keys {
                for (w, key) in [("a", "lora_A.weight"), ("b", "lora_B.weight"), ("m", "lora_magnitude_vector")] {
                    let want = try ref.tensor("\(m).\(key).grad").floats()
                    let ours = g[m, w]
                    XCTAssertEqual(ours, ck[m, w], "\(name) \(m).\(key): checkpointing changed the gradient")
                    let rel = maxAbsDiff(ours, want) / max(1e-12, want.map(abs).max()!)
                    worst[w] = max(worst[w] ?? 0, rel)
                    n += 1
                }
            }
            XCTAssertEqual(n, ref.names.filter { $0.hasSuffix(".grad") }.count, "every fixture gradient compared")
            for (w, e) in worst { XCTAssertLessThan(e, GradientParityTests.gradTolerance, "\(name) \(w): relative error \(e)") }
            print("dora gradient parity \(name): \(n) tensors, relative A \(worst["a"]!), B \(worst["b"]!), magnitude \(worst["m"]!)")
        }
    }

    /// ∂loss/∂m by central differences of the forward loss (Double), for a few magnitude entries.
    func testMagnitudeGradientByFiniteDifferences() throws {
        let (tr, _, batch, _) = try load("dora-llama", model: "forward/llama-gqa-tied/model")
        let scored = batch.shiftedTargets.filter { $0 >= 0 }.count
        let g = LoRAGradients(for: tr.lora)
        _ = try tr.trainStep(batch, lossScale: 1 / Float(scored), grads: g)
        for (module, o) in [("model.layers.0.self_attn.q_proj", 3), ("model.layers.1.mlp.down_proj", 10), ("model.layers.0.self_attn.v_proj", 0)] {
            let base = tr.lora[module]!
            func loss(_ delta: Float) throws -> Double {
                var l = base
                l.magnitude![o] += delta
                tr.setLoRA(module, l)
                let out = try tr.forward(batch)
                return out.nllSum / Double(out.tokens)
            }
            let h: Float = 1e-2 * abs(base.magnitude![o])
            let numeric = (try loss(h) - loss(-h)) / Double(2 * h)
            tr.setLoRA(module, base)
            // The forward is fp32: its loss carries ~1e-7 relative rounding noise, which central differences turn
            // into ~5e-6 absolute (the BLAS kernel, so the summation order, varies with the CPU), hence the floor.
            XCTAssertEqual(Double(g.m[module]![o]), numeric, accuracy: 2e-3 * max(abs(numeric), 1e-2), "\(module)[\(o)]")
        }
    }

    /// With LoRA dropout: every gradient (A, B, magnitude) against central differences of the training loss under
    /// the same masks (for A and B with the norm held, as it is detached), and a mask that keeps everything gives
    /// the dropout-free step.
    func testDropoutGradientsByFiniteDifferences() throws {
        let (tr, _, batch, _) = try load("dora-llama", model: "forward/llama-gqa-tied/model")
        let scored = batch.shiftedTargets.filter { $0 >= 0 }.count
        let drop = LoRADropout(rate: 0.3, seed: 7, step: 2)
        let g = LoRAGradients(for: tr.lora)
        _ = try tr.trainStep(batch, lossScale: 1 / Float(scored), grads: g, dropout: drop)
        func loss() throws -> Double {
            let scratch = LoRAGradients(for: tr.lora)
            let r = try tr.trainStep(batch, lossScale: 1 / Float(scored), grads: scratch, dropout: drop)
            return r.nllSum / Double(r.tokens)
        }
        for (module, which, i) in [("model.layers.0.self_attn.q_proj", "m", 5), ("model.layers.1.mlp.down_proj", "m", 2),
                                   ("model.layers.0.mlp.up_proj", "a", 17), ("model.layers.1.self_attn.v_proj", "b", 9)] {
            let base = tr.lora[module]!
            let frozen = tr.doraScales[module]!  // the norm is detached: hold it at the unperturbed weights' value
            func set(_ d: Float) {
                var l = base
                switch which {
                case "m": l.magnitude![i] += d
                case "a": l.a[i] += d
                default: l.b[i] += d
                }
                tr.setLoRA(module, l)
                if which != "m" { tr.doraScales[module] = frozen }
            }
            let v = which == "m" ? base.magnitude![i] : which == "a" ? base.a[i] : base.b[i]
            let h = max(1e-3, 1e-2 * abs(v))
            set(h); let up = try loss()
            set(-h); let down = try loss()
            tr.setLoRA(module, base)
            let numeric = (up - down) / Double(2 * h)
            XCTAssertEqual(Double(g[module, which][i]), numeric, accuracy: 3e-3 * max(abs(numeric), 1e-2), "\(module).\(which)[\(i)]")
        }
        // keep-everything dropout (rate → 0 rounds the threshold to 2²⁴) equals no dropout up to the 1/(1 − rate) scale
        let none = LoRAGradients(for: tr.lora), keep = LoRAGradients(for: tr.lora)
        let a = try tr.trainStep(batch, lossScale: 1 / Float(scored), grads: none)
        let b = try tr.trainStep(batch, lossScale: 1 / Float(scored), grads: keep, dropout: LoRADropout(rate: 1e-9, seed: 1, step: 0))
        XCTAssertEqual(a.nllSum, b.nllSum, accuracy: 1e-6 * abs(a.nllSum))
        for k in none.orderedKeys { XCTAssertLessThan(maxAbsDiff(none[k.module, k.which], keep[k.module, k.which]), 1e-6, "\(k)") }
    }

    /// LoRA+ moves the magnitude at B's rate (PEFT's create_loraplus_optimizer puts 1-D parameters in B's group).
    func testLoRAPlusMovesTheMagnitudeAtBsRate() throws {
        let (tr1, _, batch, _) = try load("dora-llama", model: "forward/llama-gqa-tied/model")
        let (tr2, _, _, _) = try load("dora-llama", model: "forward/llama-gqa-tied/model")
        let g = LoRAGradients(for: tr1.lora)
        _ = try tr1.trainStep(batch, lossScale: 0.05, grads: g)
        let lr = 1.0 / 1024
        AdamW.step(model: tr1, grads: g, state: AdamWState(), lr: lr, config: AdamWConfig(), loraplusLrRatio: 4)
        AdamW.step(model: tr2, grads: g, state: AdamWState(), lr: 4 * lr, config: AdamWConfig())
        for n in tr1.lora.keys {
            XCTAssertEqual(tr1.lora[n]!.magnitude!, tr2.lora[n]!.magnitude!, n)
            XCTAssertEqual(tr1.lora[n]!.b, tr2.lora[n]!.b, n)
        }
    }

    func testDecodeMatchesGenerate() throws {
        for (name, model) in DoRATests.cases {
            let (tr, m, _, _) = try load(name, model: model)
            let ref = try jsonObject(String(contentsOfFile: Fixtures.path("dora/\(name)/generate.json"), encoding: .utf8))
            func ids(_ k: String) -> [Int32] { ref[k]!.arrayValue!.map { Int32($0.intValue!) } }
            let prompt = ids("prompt"), want = ids("lora")
            let cache = KVCache(config: m.config, capacity: prompt.count + want.count)
            var logits = try tr.decode(prompt, cache: cache)
            var got: [Int32] = []
            for _ in want.indices {
                let next = Int32(logits.indices.max { logits[$0] < logits[$1] || (logits[$0] == logits[$1] && $0 > $1) }!)
                got.append(next)
                if got.count < want.count { logits = try tr.decode([next], cache: cache) }
            }
            XCTAssertEqual(got, want, "\(name): greedy tokens differ from PEFT's generate()")
        }
    }

    func testMergeMatchesPEFT() throws {
        for (name, model) in DoRATests.cases {
            // float32 out, as the fixture merged the model loaded in float32 (qwen2-bias is stored bf16).
            let r = try runTool("lora-merge", [Fixtures.path(model), "--adapter", Fixtures.path("dora/\(name)/adapter"), "-o", dir + "/\(name)",
                                               "--dtype", "float32", "-q"])
            XCTAssertEqual(r.status, 0, r.stderr)
            let merged = try ModelDir(path: dir + "/\(name)")
            let want = try SafetensorsFile(path: Fixtures.path("dora/\(name)/merged.safetensors"))
            var worst: Float = 0
            for n in want.names {
                let w = try want.tensor(n).floats()
                worst = max(worst, maxAbsDiff(try merged.weights.tensor(n).floats(), w) / w.map(abs).max()!)
            }
            XCTAssertLessThan(worst, 1e-5, "\(name): merged weights differ from PEFT's merge_and_unload")
            let (tr, _, batch, io) = try load(name, model: model)
            _ = tr
            let mergedLogits = try Transformer(model: merged).forward(batch, wantLogits: true).logits!
            XCTAssertLessThan(maxAbsDiff(mergedLogits, try io.tensor("logits_lora").floats()), 1e-4)
            print("dora merge parity \(name): max relative |ΔW| \(worst)")
        }
    }

    /// lora-init --dora: m = ‖W‖ per row as PEFT initializes it; the config says use_dora; B = 0 so the model
    /// starts equal to the base.
    func testInitMatchesPEFT() throws {
        let model = Fixtures.path("forward/qwen2-bias/model")
        let r = try runTool("lora-init", [model, "-o", dir + "/a", "--dora", "--rank", "4", "--alpha", "8", "--rslora",
                                          "--targets", "q_proj,v_proj,o_proj,up_proj", "-q"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let ours = try Adapter.load(dir + "/a"), ref = try Adapter.load(Fixtures.path("dora/dora-qwen2-bias/init"))
        XCTAssertTrue(ours.config.useDora)
        for n in ref.moduleNames {
            let want = ref.modules[n]!.magnitude!, got = ours.modules[n]!.magnitude!
            XCTAssertLessThan(maxAbsDiff(got, want), 1e-6 * want.max()!, n)
        }
        let cfg = try jsonObject(String(contentsOfFile: dir + "/a/adapter_config.json", encoding: .utf8))
        XCTAssertEqual(cfg["use_dora"], .bool(true))
        let m = try ModelDir(path: model)
        let tr = try Transformer(model: m)
        let t: [Int32] = [3, 9, 27, 81, 50, 11]
        let b = TokenBatch(tokens: t, labels: t, lengths: [t.count], batch: 1, seq: t.count)
        let plain = try tr.forward(b, wantLogits: true).logits!
        try tr.attach(ours, linears: try m.linearModules())
        XCTAssertLessThan(maxAbsDiff(try tr.forward(b, wantLogits: true).logits!, plain), 1e-5, "a new DoRA adapter changes the model")
    }

    /// On a 4-bit base the norm is taken of the dequantized weight: base + DoRA adapter equals lora-merge's
    /// dequantized DoRA merge.
    func testNF4BaseEqualsItsDequantizedMerge() throws {
        let (name, model) = DoRATests.cases[0]
        XCTAssertEqual(try runTool("lora-quantize", [Fixtures.path(model), "-o", dir + "/nf4", "-q"]).status, 0)
        let nf4 = try ModelDir(path: dir + "/nf4")
        let (_, _, batch, _) = try load(name, model: model)
        let tr = try Transformer(model: nf4)
        try tr.attach(try Adapter.load(Fixtures.path("dora/\(name)/adapter")), linears: try nf4.linearModules())
        let got = try tr.forward(batch, wantLogits: true).logits!
        let r = try runTool("lora-merge", [dir + "/nf4", "--adapter", Fixtures.path("dora/\(name)/adapter"), "-o", dir + "/merged", "-q"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let want = try Transformer(model: try ModelDir(path: dir + "/merged")).forward(batch, wantLogits: true).logits!
        XCTAssertLessThan(maxAbsDiff(got, want), 1e-4)
        // QLoRA + DoRA trains: the gradient of every magnitude is finite and non-zero.
        let g = LoRAGradients(for: tr.lora)
        _ = try tr.trainStep(batch, lossScale: 0.05, grads: g)
        XCTAssertTrue(g.m.values.allSatisfy { $0.allSatisfy(\.isFinite) && $0.contains { $0 != 0 } })
    }

    /// lora-train on a DoRA adapter: the magnitude is trained, saved, checkpointed and resumed byte for byte.
    func testTrainAndResume() throws {
        let model = dir + "/model"
        try TinyModel.write(to: model)
        XCTAssertEqual(try runTool("lora-init", [model, "-o", dir + "/init", "--dora", "--rank", "4", "--targets", "q_proj,v_proj,down_proj", "-q"]).status, 0)
        let rows = (0..<8).map { #"{"text": "The ferry to Lumeport leaves at \#($0) past the hour from the eastern quay."}"# }
        try (rows.joined(separator: "\n") + "\n").write(toFile: dir + "/d.jsonl", atomically: true, encoding: .utf8)
        let common = ["--data", dir + "/d.jsonl", "--seq-len", "32", "--batch-size", "2", "--lr", "1e-2", "--seed", "4", "-q",
                      "--max-steps", "8", "--save-every", "2", "--max-grad-norm", "0.5"]
        let full = try runTool("lora-train", [model, dir + "/init", "-o", dir + "/full"] + common)
        XCTAssertEqual(full.status, 0, full.stderr)
        let cut = try runTool("lora-train", [model, dir + "/init", "-o", dir + "/cut"] + common, env: ["LORA_TEST_NAN_AT_STEP": "5"])
        XCTAssertNotEqual(cut.status, 0)
        let resumed = try runTool("lora-train", [model, dir + "/init", "-o", dir + "/cut", "--resume"] + common)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/full/adapter_model.safetensors")),
                       try Data(contentsOf: URL(fileURLWithPath: dir + "/cut/adapter_model.safetensors")))
        let before = try Adapter.load(dir + "/init"), after = try Adapter.load(dir + "/full")
        XCTAssertTrue(after.config.useDora)
        for n in before.moduleNames {
            XCTAssertGreaterThan(maxAbsDiff(before.modules[n]!.magnitude!, after.modules[n]!.magnitude!), 0, "\(n): magnitude not trained")
        }
        let opt = try SafetensorsFile(path: try Checkpoint.list(dir + "/full").last!.path + "/optimizer.safetensors")
        XCTAssertTrue(opt.names.contains("model.layers.0.self_attn.q_proj.lora_magnitude_vector.exp_avg"), opt.names.joined(separator: " "))
        // With dropout (PEFT's DoRA: W·x + g⊙(W·x_d + s·B·A·x_d) − W·x_d): trains and resumes byte for byte too.
        let drop = try runTool("lora-train", [model, dir + "/init", "-o", dir + "/drop", "--dropout", "0.1"] + common)
        XCTAssertEqual(drop.status, 0, drop.stderr)
        let dcut = try runTool("lora-train", [model, dir + "/init", "-o", dir + "/dcut", "--dropout", "0.1"] + common, env: ["LORA_TEST_NAN_AT_STEP": "5"])
        XCTAssertNotEqual(dcut.status, 0)
        XCTAssertEqual(try runTool("lora-train", [model, dir + "/init", "-o", dir + "/dcut", "--dropout", "0.1", "--resume"] + common).status, 0)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/drop/adapter_model.safetensors")),
                       try Data(contentsOf: URL(fileURLWithPath: dir + "/dcut/adapter_model.safetensors")))
        XCTAssertNotEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/drop/adapter_model.safetensors")),
                          try Data(contentsOf: URL(fileURLWithPath: dir + "/full/adapter_model.safetensors")), "dropout changed nothing")
    }

    func testRefusals() throws {
        let model = Fixtures.path("forward/llama-gqa-tied/model"), dora = Fixtures.path("dora/dora-llama/adapter")
        // A DoRA adapter merges alone at weight 1, is not combined, and is not a GGUF adapter.
        assertToolError(try runTool("lora-merge", [model, "--adapter", dora + ":0.5", "-o", dir + "/m"]), contains: "merges alone at weight 1")
        assertToolError(try runTool("lora-merge", [model, "--adapter", dora, "--adapter", dora, "--combination", "cat", "--as-adapter", dir + "/c"]),
                        contains: "DoRA")
        assertToolError(try runTool("lora-export", [model, "--adapter", dora, "-o", dir + "/a.gguf"]), contains: "DoRA adapter")
        // Config and tensors must agree.
        let bad = dir + "/bad"
        try FileManager.default.createDirectory(atPath: bad, withIntermediateDirectories: true)
        let cfg = try String(contentsOfFile: dora + "/adapter_config.json", encoding: .utf8)
        try cfg.replacingOccurrences(of: "\"use_dora\": true", with: "\"use_dora\": false").write(toFile: bad + "/adapter_config.json", atomically: true, encoding: .utf8)
        try FileManager.default.copyItem(atPath: dora + "/adapter_model.safetensors", toPath: bad + "/adapter_model.safetensors")
        assertThrows(try Adapter.load(bad), contains: "use_dora false")
        let st = try SafetensorsFile(path: dora + "/adapter_model.safetensors")
        let gone = "base_model.model.model.layers.1.mlp.up_proj.lora_magnitude_vector"
        let kept = try st.names.filter { $0 != gone }.map { TensorRecord(copying: try st.tensor($0)) }
        try FileManager.default.removeItem(atPath: bad + "/adapter_model.safetensors")
        try SafetensorsWriter.write(kept, toFile: bad + "/adapter_model.safetensors")
        try cfg.write(toFile: bad + "/adapter_config.json", atomically: true, encoding: .utf8)
        assertThrows(try Adapter.load(bad), contains: "model.layers.1.mlp.up_proj.lora_magnitude_vector")
    }
}
