// FamilyParityTests: qwen3 (per-head q/k norms, tied and untied head, attention biases), phi3 (fused qkv_proj and
// gate_up_proj, LongRoPE with partial rotary), gemma2 (sandwich norms, GeGLU, soft-capping) and gemma3 (local RoPE,
// (1 + w) q/k norms) and sliding-window
// attention (mistral on every layer, qwen2/qwen3 on the layers layer_types marks) against transformers + PEFT
// (Fixtures/forward/<case>, scripts/gen_family_fixtures.py): logits and loss, base and with an adapter; every LoRA
// gradient (also with activation checkpointing); greedy decoding through the key/value cache against
// transformers' generate(); packing with a window; merge and 4-bit quantization of a qwen3 model; and how
// config.json's window keys are read.
import Foundation
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRAFormats

final class FamilyParityTests: XCTestCase {
    static let cases = ["qwen3-qknorm", "qwen3-tied-sliding", "mistral-sliding", "qwen2-sliding", "phi3-fused", "phi3-longrope-partial",
                        "gemma2-softcap", "gemma3-local-rope"]

    func checkForward(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let (tr, _, batch, io) = try loadForwardCase(name)
        for (withLoRA, key, lossKey) in [(true, "logits_lora", "loss_lora"), (false, "logits_base", "loss_base")] {
            if !withLoRA { tr.detach() }
            let out = try tr.forward(batch, wantLogits: true)
            let ref = try io.tensor(key).floats()
            XCTAssertEqual(out.logits!.count, ref.count, file: file, line: line)
            let diff = maxAbsDiff(out.logits!, ref)
            XCTAssertLessThan(diff, ForwardParityTests.logitTolerance, "\(name) \(key): max |Δlogit| = \(diff)", file: file, line: line)
            let loss = out.nllSum / Double(out.tokens)
            XCTAssertEqual(loss, Double(try io.tensor(lossKey).floats()[0]), accuracy: ForwardParityTests.lossTolerance, "\(name) \(lossKey)",
                           file: file, line: line)
            print("family forward parity \(name) \(withLoRA ? "lora" : "base"): max |Δlogit| \(diff)")
        }
    }

    func checkGradients(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let (tr, _, batch, _) = try loadForwardCase(name)
        let ref = try SafetensorsFile(path: Fixtures.path("forward/\(name)/grads.safetensors"))
        let scored = batch.shiftedTargets.filter { $0 >= 0 }.count
        let g = LoRAGradients(for: tr.lora), ck = LoRAGradients(for: tr.lora)
        let r = try tr.trainStep(batch, lossScale: 1 / Float(scored), grads: g)
        _ = try tr.trainStep(batch, lossScale: 1 / Float(scored), grads: ck, checkpointLayers: true)
        XCTAssertEqual(r.nllSum / Double(r.tokens), Double(try ref.tensor("loss").floats()[0]), accuracy: 1e-5, "\(name) loss", file: file, line: line)
        var maxRef: Float = 0, maxErr: Float = 0, n = 0
        for m in tr.lora.keys {
            for (w, ours, again) in [("lora_A", g.a[m]!, ck.a[m]!), ("lora_B", g.b[m]!, ck.b[m]!)] {
                let want = try ref.tensor("\(m).\(w).weight.grad").floats()
                maxRef = max(maxRef, want.map(abs).max()!)
                maxErr = max(maxErr, maxAbsDiff(ours, want))
                XCTAssertEqual(ours, again, "\(name) \(m).\(w): checkpointing changed the gradient", file: file, line: line)
                n += 1
            }
        }
        XCTAssertEqual(n, ref.names.filter { $0.hasSuffix(".grad") }.count, "every fixture gradient compared", file: file, line: line)
        XCTAssertLessThan(maxErr / maxRef, GradientParityTests.gradTolerance, "\(name): max |Δgrad| \(maxErr) vs max |grad| \(maxRef)",
                          file: file, line: line)
        print("family gradient parity \(name): \(n) tensors, max |Δ| \(maxErr), relative \(maxErr / maxRef)")
    }

    /// Greedy decoding through the KV cache gives transformers' generate() tokens, base and with the adapter, and
    /// each decoded step's logits equal the full forward over the same tokens.
    func checkDecode(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let (tr, model, _, _) = try loadForwardCase(name)
        let ref = try jsonObject(String(contentsOfFile: Fixtures.path("forward/\(name)/generate.json"), encoding: .utf8))
        func ids(_ k: String) -> [Int32] { ref[k]!.arrayValue!.map { Int32($0.intValue!) } }
        let prompt = ids("prompt"), V = model.config.vocabSize
        for (withLoRA, key) in [(true, "lora"), (false, "base")] {
            if !withLoRA { tr.detach() }
            let want = ids(key)
            let cache = KVCache(config: model.config, capacity: prompt.count + want.count)
            var logits = try tr.decode(prompt, cache: cache)
            var got: [Int32] = [], steps: [[Float]] = [logits]
            for _ in want.indices {
                let next = Int32(logits.indices.max { logits[$0] < logits[$1] || (logits[$0] == logits[$1] && $0 > $1) }!)
                got.append(next)
                if got.count < want.count { logits = try tr.decode([next], cache: cache); steps.append(logits) }
            }
            XCTAssertEqual(got, want, "\(name) \(key): greedy tokens differ from transformers' generate()", file: file, line: line)
            // LongRoPE switching to its long factors part way (as transformers does, keeping the keys cached with the
            // short ones) has no single full forward to compare with.
            if let rs = model.config.ropeScaling, rs.type == "longrope", prompt.count + want.count - 1 > rs.originalMaxPositionEmbeddings { continue }
            let all = prompt + got.dropLast()
            let full = try tr.forward(TokenBatch(tokens: all, labels: all, lengths: [all.count], batch: 1, seq: all.count), wantLogits: true).logits!
            var worst: Float = 0
            for (s, l) in steps.enumerated() {
                let row = prompt.count - 1 + s
                worst = max(worst, maxAbsDiff(l, Array(full[(row * V)..<((row + 1) * V)])))
            }
            XCTAssertLessThan(worst, 1e-4, "\(name) \(key): cached decoding differs from the full forward", file: file, line: line)
        }
    }

    func testQwen3Forward() throws { try checkForward("qwen3-qknorm") }
    func testQwen3TiedSlidingForward() throws { try checkForward("qwen3-tied-sliding") }
    func testMistralSlidingForward() throws { try checkForward("mistral-sliding") }
    func testQwen2SlidingForward() throws { try checkForward("qwen2-sliding") }
    func testQwen3Gradients() throws { try checkGradients("qwen3-qknorm") }
    func testQwen3TiedSlidingGradients() throws { try checkGradients("qwen3-tied-sliding") }
    func testMistralSlidingGradients() throws { try checkGradients("mistral-sliding") }
    func testQwen2SlidingGradients() throws { try checkGradients("qwen2-sliding") }
    func testPhi3FusedForward() throws { try checkForward("phi3-fused") }
    func testPhi3LongRopePartialForward() throws { try checkForward("phi3-longrope-partial") }
    func testPhi3FusedGradients() throws { try checkGradients("phi3-fused") }
    func testGemma2Forward() throws { try checkForward("gemma2-softcap") }
    func testGemma3Forward() throws { try checkForward("gemma3-local-rope") }
    func testGemma2Gradients() throws { try checkGradients("gemma2-softcap") }
    func testGemma3Gradients() throws { try checkGradients("gemma3-local-rope") }
    func testPhi3LongRopePartialGradients() throws { try checkGradients("phi3-longrope-partial") }

    /// phi3: lora-init's default targets are the fused attention Linears; a target that names another family's
    /// module is warned about; lora-merge folds the fused adapter (logits equal base + adapter); and lora-export
    /// refuses the architecture naming the supported ones.
    func testPhi3ToolsUseTheFusedNames() throws {
        let dir = makeTempDir("family")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let src = Fixtures.path("forward/phi3-fused")
        let r = try runTool("lora-init", [src + "/model", "-o", dir + "/a"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let cfg = try jsonObject(String(contentsOfFile: dir + "/a/adapter_config.json", encoding: .utf8))
        XCTAssertEqual(Set(cfg["target_modules"]!.arrayValue!.compactMap(\.stringValue)), ["qkv_proj", "o_proj"])
        let w = try runTool("lora-init", [src + "/model", "-o", dir + "/b", "--targets", "q_proj,o_proj"])
        XCTAssertEqual(w.status, 0, w.stderr)
        XCTAssertTrue(w.stderr.contains("target 'q_proj' matches no Linear"), w.stderr)
        XCTAssertTrue(w.stderr.contains("qkv_proj"), w.stderr)
        let (tr, _, batch, _) = try loadForwardCase("phi3-fused")
        let withAdapter = try tr.forward(batch, wantLogits: true).logits!
        let merge = try runTool("lora-merge", [src + "/model", "--adapter", src + "/adapter", "-o", dir + "/merged", "-q"])
        XCTAssertEqual(merge.status, 0, merge.stderr)
        let merged = try Transformer(model: try ModelDir(path: dir + "/merged")).forward(batch, wantLogits: true).logits!
        XCTAssertLessThan(maxAbsDiff(merged, withAdapter), 1e-4, "merged phi3 differs from base + adapter")
        let e = try runTool("lora-export", [src + "/model", "-o", dir + "/m.gguf"])
        XCTAssertNotEqual(e.status, 0)
        XCTAssertTrue(e.stderr.hasPrefix("error: "), e.stderr)
    }

    func testDecodeMatchesGenerate() throws { for c in FamilyParityTests.cases { try checkDecode(c) } }

    /// Two examples packed into one row (segment starts, positions restarting) give each example's logits alone,
    /// with a window shorter than the examples: the window never reaches across the packing boundary.
    func testPackingWithAWindowEqualsSeparateRows() throws {
        let (tr, model, _, _) = try loadForwardCase("mistral-sliding")
        let a: [Int32] = [5, 9, 33, 71, 12, 8, 100, 4], b: [Int32] = [7, 61, 19, 3, 88, 40]
        let V = model.config.vocabSize
        func alone(_ t: [Int32]) throws -> [Float] {
            try tr.forward(TokenBatch(tokens: t, labels: t, lengths: [t.count], batch: 1, seq: t.count), wantLogits: true).logits!
        }
        let row = a + b
        let starts = [Int32](repeating: 0, count: a.count) + [Int32](repeating: Int32(a.count), count: b.count)
        let pos = (0..<a.count).map(Int32.init) + (0..<b.count).map(Int32.init)
        let packed = try tr.forward(TokenBatch(tokens: row, labels: row, lengths: [row.count], batch: 1, seq: row.count,
                                               segmentStarts: starts, positionIds: pos), wantLogits: true).logits!
        XCTAssertLessThan(maxAbsDiff(Array(packed[..<(a.count * V)]), try alone(a)), 1e-5)
        XCTAssertLessThan(maxAbsDiff(Array(packed[(a.count * V)...]), try alone(b)), 1e-5)
    }

    /// lora-merge folds an adapter into a qwen3 / gemma2 / gemma3 model (q_norm/k_norm and the sandwich norms carried
    /// over): the merged model's logits equal the base + adapter; lora-quantize writes a 4-bit dir whose norms stay in
    /// full precision and which loads, validates and runs.
    func checkMergeAndQuantize(_ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = makeTempDir("family")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let src = Fixtures.path("forward/\(name)")
        let (tr, _, batch, _) = try loadForwardCase(name)
        let withAdapter = try tr.forward(batch, wantLogits: true).logits!
        let merge = try runTool("lora-merge", [src + "/model", "--adapter", src + "/adapter", "-o", dir + "/merged", "-q"])
        XCTAssertEqual(merge.status, 0, merge.stderr, file: file, line: line)
        let merged = try ModelDir(path: dir + "/merged")
        try merged.validate()
        let mergedLogits = try Transformer(model: merged).forward(batch, wantLogits: true).logits!
        XCTAssertLessThan(maxAbsDiff(mergedLogits, withAdapter), 1e-4, "merged \(name) differs from base + adapter", file: file, line: line)
        let q = try runTool("lora-quantize", [src + "/model", "-o", dir + "/nf4", "-q"])
        XCTAssertEqual(q.status, 0, q.stderr, file: file, line: line)
        let nf4 = try ModelDir(path: dir + "/nf4")
        try nf4.validate()
        XCTAssertTrue(try nf4.linearModules().allSatisfy(\.quantized), file: file, line: line)
        let norms = nf4.weights.names.filter { $0.hasSuffix("norm.weight") }
        XCTAssertFalse(norms.isEmpty, file: file, line: line)
        for n in norms { XCTAssertEqual(nf4.weights.info(n)?.dtype, .F32, n, file: file, line: line) }
        // The 4-bit model with the adapter computes what its dequantized weights with the adapter folded in compute
        // (lora-merge of the 4-bit dir), and stays in the range of its full-precision source (tiny random models:
        // 4-bit error on 64-wide rows, amplified by gemma's normed branches, moves logits by about half their range).
        let qtr = try Transformer(model: nf4)
        try qtr.attach(try Adapter.load(src + "/adapter"), linears: try nf4.linearModules())
        let out = try qtr.forward(batch, wantLogits: true).logits!
        XCTAssertTrue(out.allSatisfy(\.isFinite), file: file, line: line)
        let m4 = try runTool("lora-merge", [dir + "/nf4", "--adapter", src + "/adapter", "-o", dir + "/merged4", "-q"])
        XCTAssertEqual(m4.status, 0, m4.stderr, file: file, line: line)
        let deq = try Transformer(model: try ModelDir(path: dir + "/merged4")).forward(batch, wantLogits: true).logits!
        XCTAssertLessThan(maxAbsDiff(out, deq), 1e-4, "NF4 \(name) + adapter differs from its dequantized merge", file: file, line: line)
        let spread = withAdapter.map(abs).max()!
        XCTAssertLessThan(maxAbsDiff(out, withAdapter) / spread, 1, "NF4 \(name) is far from its source", file: file, line: line)
        print("family nf4 \(name): max |Δlogit| vs dequantized merge \(maxAbsDiff(out, deq)), vs full precision \(maxAbsDiff(out, withAdapter)) of max |logit| \(spread)")
    }

    func testQwen3MergeAndQuantize() throws { try checkMergeAndQuantize("qwen3-qknorm") }
    func testPhi3MergeAndQuantize() throws { try checkMergeAndQuantize("phi3-fused") }
    func testSlidingWindowMergeAndQuantize() throws { try checkMergeAndQuantize("mistral-sliding") }
    func testGemma2MergeAndQuantize() throws { try checkMergeAndQuantize("gemma2-softcap") }
    func testGemma3MergeAndQuantize() throws { try checkMergeAndQuantize("gemma3-local-rope") }

    /// gemma2 and gemma3 through the tools: lora-init's default targets, lora-train (loss falls, resume from a
    /// checkpoint gives the uninterrupted run's adapter byte for byte), lora-eval of base and adapter (the adapter
    /// lowers the loss), lora-generate (greedy tokens are the full forward's argmax), lora-quantize + QLoRA training.
    func testGemmaThroughTheTools() throws {
        for family in ["gemma2", "gemma3_text"] {
            let dir = makeTempDir("family")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let model = dir + "/model"
            try TinyModel.write(to: model, family: family)
            let rows = (0..<8).map { #"{"text": "The lighthouse keeper of Kestra wound the lamp \#($0) times before dawn."}"# }
            try (rows.joined(separator: "\n") + "\n").write(toFile: dir + "/d.jsonl", atomically: true, encoding: .utf8)
            let i = try runTool("lora-init", [model, "-o", dir + "/init", "--rank", "4", "--seed", "1"])
            XCTAssertEqual(i.status, 0, i.stderr)
            let common = ["--data", dir + "/d.jsonl", "--seq-len", "32", "--batch-size", "2", "--lr", "2e-2", "--seed", "2", "-q",
                          "--max-steps", "16", "--save-every", "4"]
            let full = try runTool("lora-train", [model, dir + "/init", "-o", dir + "/run"] + common)
            XCTAssertEqual(full.status, 0, "\(family): \(full.stderr)")
            // Broken off at step 7 (the step-4 checkpoint is kept), then resumed: the same bytes.
            let cut = try runTool("lora-train", [model, dir + "/init", "-o", dir + "/cut"] + common, env: ["LORA_TEST_NAN_AT_STEP": "7"])
            XCTAssertNotEqual(cut.status, 0)
            let resumed = try runTool("lora-train", [model, dir + "/init", "-o", dir + "/cut", "--resume"] + common)
            XCTAssertEqual(resumed.status, 0, resumed.stderr)
            XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/run/adapter_model.safetensors")),
                           try Data(contentsOf: URL(fileURLWithPath: dir + "/cut/adapter_model.safetensors")), "\(family): resume differs")
            let base = try runTool("lora-eval", [model, "--data", dir + "/d.jsonl", "--seq-len", "32"])
            let tuned = try runTool("lora-eval", [model, "--adapter", dir + "/run", "--data", dir + "/d.jsonl", "--seq-len", "32"])
            XCTAssertEqual(base.status, 0, base.stderr)
            XCTAssertEqual(tuned.status, 0, tuned.stderr)
            let lb = try jsonObject(base.stdout)["loss"]!.doubleValue!, lt = try jsonObject(tuned.stdout)["loss"]!.doubleValue!
            XCTAssertLessThan(lt, lb - 0.5, "\(family): training did not lower the loss (\(lb) → \(lt))")
            let g = try runTool("lora-generate", [model, "--adapter", dir + "/run", "--no-chat", "--jsonl", "-", "--max-tokens", "6", "--ids"],
                                stdin: Data(#"{"prompt": "The lighthouse keeper"}"#.utf8 + [10]))
            XCTAssertEqual(g.status, 0, g.stderr)
            XCTAssertEqual(try jsonObject(g.stdout)["tokens"], .int(6), g.stdout)
            let q = try runTool("lora-quantize", [model, "-o", dir + "/nf4", "-q"])
            XCTAssertEqual(q.status, 0, q.stderr)
            let ql = try runTool("lora-train", [dir + "/nf4", dir + "/init", "-o", dir + "/qlora"] + common)
            XCTAssertEqual(ql.status, 0, "\(family) QLoRA: \(ql.stderr)")
            print("family tools \(family): eval loss base \(lb) → adapter \(lt)")
        }
    }

    /// gemma checkpoints without a sandwich norm are refused naming the tensor; lora-export refuses gemma (its GGUF
    /// form needs llama.cpp's gemma conventions) with a one-line error naming what it supports.
    func testGemmaRefusals() throws {
        let dir = makeTempDir("family")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let src = Fixtures.path("forward/gemma2-softcap/model")
        try FileManager.default.createDirectory(atPath: dir + "/m", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: src + "/config.json", toPath: dir + "/m/config.json")
        let st = try SafetensorsFile(path: src + "/model.safetensors")
        let gone = "model.layers.1.post_feedforward_layernorm.weight"
        let kept = try st.names.filter { $0 != gone }.map { TensorRecord(copying: try st.tensor($0)) }
        try SafetensorsWriter.write(kept, toFile: dir + "/m/model.safetensors")
        assertThrows(try Transformer(model: try ModelDir(path: dir + "/m")), contains: gone)
        assertThrows(try ModelDir(path: dir + "/m").validate(), contains: gone)
        let e = try runTool("lora-export", [src, "-o", dir + "/m.gguf"])
        XCTAssertNotEqual(e.status, 0)
        XCTAssertTrue(e.stderr.hasPrefix("error: ") && e.stderr.contains("Gemma2ForCausalLM"), e.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/m.gguf"))
    }

    /// A qwen3 checkpoint without its head norms is refused, naming the tensor.
    func testQwen3WithoutQNormIsNamed() throws {
        let dir = makeTempDir("family")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let src = Fixtures.path("forward/qwen3-qknorm/model")
        try FileManager.default.copyItem(atPath: src + "/config.json", toPath: dir + "/config.json")
        let st = try SafetensorsFile(path: src + "/model.safetensors")
        let kept = try st.names.filter { $0 != "model.layers.1.self_attn.k_norm.weight" }.map { TensorRecord(copying: try st.tensor($0)) }
        try SafetensorsWriter.write(kept, toFile: dir + "/model.safetensors")
        assertThrows(try Transformer(model: try ModelDir(path: dir)), contains: "model.layers.1.self_attn.k_norm.weight")
        assertThrows(try ModelDir(path: dir).validate(), contains: "model.layers.1.self_attn.k_norm.weight")
    }

    func config(_ json: String) throws -> ModelConfig {
        let base = #""vocab_size": 32, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 4, "num_attention_heads": 2"#
        return try ModelConfig.parse(Data("{\(base), \(json)}".utf8), path: "config.json")
    }

    /// config.json's window keys, read as transformers reads them.
    func testSlidingWindowConfig() throws {
        XCTAssertEqual(try config(#""model_type": "mistral", "sliding_window": 8"#).layerWindows, [8, 8, 8, 8])
        XCTAssertEqual(try config(#""model_type": "mistral", "sliding_window": null"#).layerWindows, [nil, nil, nil, nil])
        // mistral ignores layer_types (transformers warns and applies the window everywhere).
        XCTAssertEqual(try config(#""model_type": "mistral", "sliding_window": 8, "layer_types": ["full_attention", "full_attention", "full_attention", "full_attention"]"#).layerWindows,
                       [8, 8, 8, 8])
        // qwen2/qwen3: only with use_sliding_window; layers from max_window_layers on (default 28), or layer_types.
        XCTAssertEqual(try config(#""model_type": "qwen2", "sliding_window": 8, "max_window_layers": 2"#).layerWindows, [nil, nil, nil, nil])
        XCTAssertEqual(try config(#""model_type": "qwen2", "use_sliding_window": true, "sliding_window": 8, "max_window_layers": 2"#).layerWindows,
                       [nil, nil, 8, 8])
        XCTAssertEqual(try config(#""model_type": "qwen3", "use_sliding_window": true, "sliding_window": 8"#).layerWindows, [nil, nil, nil, nil])
        XCTAssertEqual(try config(#""model_type": "qwen3", "use_sliding_window": true, "sliding_window": 8, "max_window_layers": 0"#).layerWindows,
                       [8, 8, 8, 8])
        XCTAssertEqual(try config(#""model_type": "qwen3", "use_sliding_window": true, "sliding_window": 8, "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]"#).layerWindows,
                       [8, nil, 8, nil])
        XCTAssertEqual(try config(#""model_type": "llama", "sliding_window": 8"#).layerWindows, [nil, nil, nil, nil])
        XCTAssertTrue(try config(#""model_type": "qwen3""#).qkNorm)
        XCTAssertFalse(try config(#""model_type": "qwen2""#).qkNorm)
        assertThrows(try config(#""model_type": "mistral", "sliding_window": 0"#), contains: "\"sliding_window\": expected a positive integer or null")
        assertThrows(try config(#""model_type": "qwen2", "use_sliding_window": true, "sliding_window": 8, "layer_types": ["full_attention"]"#),
                     contains: "expected a list of 4 layer types")
        assertThrows(try config(#""model_type": "qwen2", "use_sliding_window": true, "sliding_window": 8, "layer_types": ["full_attention", "chunked_attention", "full_attention", "full_attention"]"#),
                     contains: "entry 1 is \"chunked_attention\"")
        assertThrows(try config(#""model_type": "gemma""#), contains: "supported: " + ModelConfig.supportedTypes.joined(separator: ", "))
        // gemma2: sliding and full layers alternate; (1 + w) norms, sandwich norms, √hidden embeddings, GeGLU, soft-caps
        // 50 / 30 and query_pre_attn_scalar 256 by default; tied head by default.
        let g2 = try config(#""model_type": "gemma2", "sliding_window": 8, "head_dim": 8"#)
        XCTAssertEqual(g2.layerWindows, [8, nil, 8, nil])
        XCTAssertEqual(g2.layerLocalRope, [false, false, false, false])
        XCTAssertTrue(g2.normPlusOne && g2.sandwichNorms && g2.tieWordEmbeddings)
        XCTAssertEqual(g2.activation, .geluTanh)
        XCTAssertEqual(g2.embedScale, Float(16.0.squareRoot()))
        XCTAssertEqual(g2.attentionScale, 1 / Float(256).squareRoot())
        XCTAssertEqual(g2.attnSoftcap, 50)
        XCTAssertEqual(g2.finalSoftcap, 30)
        XCTAssertNil(try config(#""model_type": "gemma2", "attn_logit_softcapping": null, "final_logit_softcapping": null"#).finalSoftcap)
        // gemma3: a full layer every sliding_window_pattern (6 by default), the local RoPE on the sliding ones (also
        // without a window); the 4.x keys rope_local_base_freq and rope_scaling (full layers only).
        let g3 = try config(#""model_type": "gemma3_text", "sliding_window": 8, "sliding_window_pattern": 2, "rope_theta": 1000000, "rope_local_base_freq": 20000, "rope_scaling": {"rope_type": "linear", "factor": 8}"#)
        XCTAssertEqual(g3.layerWindows, [8, nil, 8, nil])
        XCTAssertEqual(g3.layerLocalRope, [true, false, true, false])
        XCTAssertEqual(g3.ropeTheta, 1_000_000)
        XCTAssertEqual(g3.ropeScaling?.factor, 8)
        XCTAssertEqual(g3.localRopeTheta, 20000)
        XCTAssertNil(g3.localRopeScaling)
        XCTAssertTrue(g3.qkNorm)
        XCTAssertNil(g3.attnSoftcap)
        let g3d = try config(#""model_type": "gemma3_text", "sliding_window": null"#)
        XCTAssertEqual(g3d.layerWindows, [nil, nil, nil, nil])
        XCTAssertEqual(g3d.layerLocalRope, [true, true, true, true])
        XCTAssertEqual(g3d.ropeTheta, 1_000_000)
        XCTAssertEqual(g3d.localRopeTheta, 10000)
        assertThrows(try config(#""model_type": "gemma3_text", "use_bidirectional_attention": true"#), contains: "use_bidirectional_attention")
        assertThrows(try config(#""model_type": "gemma2", "hidden_activation": "relu""#), contains: "\"hidden_activation\"")
        assertThrows(try config(#""model_type": "gemma2", "attn_logit_softcapping": -1"#), contains: "attn_logit_softcapping")
        // phi3: the window on every layer; partial rotary; longrope's factor lists sized to the rotary dimensions.
        let phi = try config(#""model_type": "phi3", "sliding_window": 6, "max_position_embeddings": 64, "partial_rotary_factor": 0.5, "rope_scaling": {"type": "su", "short_factor": [1, 2], "long_factor": [3, 4]}, "original_max_position_embeddings": 16"#)
        XCTAssertEqual(phi.layerWindows, [6, 6, 6, 6])
        XCTAssertEqual(phi.rotaryDim, 4)
        XCTAssertEqual(phi.ropeScaling?.type, "longrope")
        XCTAssertEqual(phi.ropeScaling!.attentionFactor, (1 + Foundation.log(4.0) / Foundation.log(16.0)).squareRoot(), accuracy: 1e-12)
        XCTAssertEqual(phi.linearModules().map(\.name).prefix(4), ["model.layers.0.self_attn.qkv_proj", "model.layers.0.self_attn.o_proj",
                                                                   "model.layers.0.mlp.gate_up_proj", "model.layers.0.mlp.down_proj"])
        assertThrows(try config(#""model_type": "phi3", "rope_scaling": {"type": "longrope", "short_factor": [1, 2, 3], "long_factor": [3, 4]}, "original_max_position_embeddings": 16"#),
                     contains: "has 3 entries; the 8 rotary dimensions need 4")
        assertThrows(try config(#""model_type": "phi3", "rope_scaling": {"type": "longrope", "short_factor": [1, 2, 3, 4], "long_factor": [3, 4, 5, 6]}"#),
                     contains: "original_max_position_embeddings")
    }
}
