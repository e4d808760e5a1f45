// GGUFModelExportTests: lora-export's model and adapter GGUF files read back through our reader (metadata, names,
// shapes, values with the llama q/k permutation undone), scaling folded for rsLoRA, the q8_0 → f16 fallback, the
// refusals (architecture, 4-bit model, sentencepiece-style and unknown pre-tokenizers), the Ollama Modelfile, and
// the executable end to end.
import Foundation
import XCTest
@testable import LoRAShared
@testable import LoRAConvert
@testable import LoRAModel
@testable import LoRATokenizer

final class GGUFModelExportTests: XCTestCase {
    func tinyLlama(tokenizer: String = "qwen2") throws -> String {
        let dir = makeTempDir("ggufx") + "/tiny"
        try TinyModel.write(to: dir, tokenizer: tokenizer)
        return dir
    }

    func export(_ dir: String, type: GGMLType? = nil, pre: String? = nil, warnings: UnsafeMutablePointer<[String]>? = nil) throws -> (GGUFFile, GGUFExportSummary) {
        var o = GGUFExportOptions()
        o.type = type
        o.tokenizerPre = pre
        let out = makeTempDir("ggufo") + "/m.gguf"
        var w: [String] = []
        let s = try GGUFExport.exportModel(try ModelDir(path: dir), to: out, options: o, warn: { w.append($0) })
        warnings?.pointee = w
        return (try GGUFFile(path: out), s)
    }

    /// Every source tensor comes back (under its GGUF name, q/k rows permuted back) with the same values.
    func assertTensorsEqualSource(_ f: GGUFFile, _ m: ModelDir, arch: String, exact: Bool, file: StaticString = #filePath, line: UInt = #line) throws {
        let c = m.config
        var expected: [(hf: String, gguf: String, heads: Int)] = [("model.embed_tokens.weight", "token_embd.weight", 0), ("model.norm.weight", "output_norm.weight", 0)]
        if !c.tieWordEmbeddings { expected.append(("lm_head.weight", "output.weight", 0)) }
        for l in 0..<c.numLayers {
            for (n, g) in [("input_layernorm", "attn_norm"), ("post_attention_layernorm", "ffn_norm")] {
                expected.append(("model.layers.\(l).\(n).weight", "blk.\(l).\(g).weight", 0))
            }
            for (mod, _, _) in c.layerLinears() {
                let module = "model.layers.\(l).\(mod)"
                let g = try XCTUnwrap(GGUFExport.ggufName(module: module))
                let heads = GGUFExport.permuteHeads(module: module, arch: arch, config: c)
                expected.append((module + ".weight", g + ".weight", heads))
                if m.weights.contains(module + ".bias") { expected.append((module + ".bias", g + ".bias", heads)) }
            }
        }
        XCTAssertEqual(Set(f.tensors.map(\.name)), Set(expected.map(\.gguf)), file: file, line: line)
        for e in expected {
            let t = try XCTUnwrap(f.tensor(e.gguf), e.gguf, file: file, line: line)
            let src = try m.weights.tensor(e.hf)
            XCTAssertEqual(t.shape, src.shape, e.gguf, file: file, line: line)
            var got = f.floats(t)
            if e.heads > 0 {
                got = GGUFExport.permuteRows(got, rows: src.shape[0], cols: src.shape.count > 1 ? src.shape[1] : 1, heads: e.heads, inverse: true)
            }
            let want = src.floats()
            if exact {
                XCTAssertEqual(got, want, "\(e.gguf) differs from \(e.hf)", file: file, line: line)
            } else {
                XCTAssertLessThanOrEqual(maxAbsDiff(got, want), want.map(abs).max()! / 100, e.gguf, file: file, line: line)
            }
        }
    }

    func testLlamaModelRoundTripsMetadataNamesAndValues() throws {
        let dir = try tinyLlama()
        var warnings: [String] = []
        let (f, s) = try export(dir, type: .f32, warnings: &warnings)
        XCTAssertEqual(s.arch, "llama")
        XCTAssertEqual(f["general.architecture"]?.string, "llama")
        XCTAssertEqual(f["general.type"]?.string, "model")
        XCTAssertEqual(f["general.file_type"]?.int, 0)
        XCTAssertEqual(f["llama.block_count"]?.int, 2)
        XCTAssertEqual(f["llama.context_length"]?.int, 512)
        XCTAssertEqual(f["llama.embedding_length"]?.int, 32)
        XCTAssertEqual(f["llama.feed_forward_length"]?.int, 64)
        XCTAssertEqual(f["llama.attention.head_count"]?.int, 4)
        XCTAssertEqual(f["llama.attention.head_count_kv"]?.int, 2)
        XCTAssertEqual(f["llama.rope.dimension_count"]?.int, 8)
        XCTAssertEqual(f["llama.attention.key_length"]?.int, 8)
        XCTAssertEqual(f["llama.vocab_size"]?.int, 1824)
        XCTAssertEqual(f["llama.rope.freq_base"], .f32(10000))
        XCTAssertEqual(f["llama.attention.layer_norm_rms_epsilon"], .f32(1e-6))
        XCTAssertEqual(f["tokenizer.ggml.model"]?.string, "gpt2")
        // The fixture's vocabulary is trimmed, so its chkhsh is unknown: the pre-tokenizer is named by its config.
        XCTAssertEqual(f["tokenizer.ggml.pre"]?.string, "qwen2")
        XCTAssertEqual(s.tokenizerPreSource, "pre_tokenizer config")
        XCTAssertTrue(warnings.contains { $0.contains("chkhsh") && $0.contains("qwen2") }, "\(warnings)")
        let tokens = try XCTUnwrap(f["tokenizer.ggml.tokens"]?.array), types = try XCTUnwrap(f["tokenizer.ggml.token_type"]?.array)
        XCTAssertEqual(tokens.count, 1824); XCTAssertEqual(types.count, 1824)
        XCTAssertEqual(tokens[1813], .string("<|im_end|>")); XCTAssertEqual(types[1813], .i32(3))      // special: control
        XCTAssertEqual(tokens[1818], .string("word")); XCTAssertEqual(types[1818], .i32(4))            // added, not special
        XCTAssertEqual(tokens[1823], .string("[PAD1823]")); XCTAssertEqual(types[1823], .i32(5))      // a hole: unused
        XCTAssertEqual(types[100], .i32(1))
        let tok = try Tokenizer.load(directory: dir)
        XCTAssertEqual(tokens[100].string, tok.idToToken(100))
        XCTAssertEqual(f["tokenizer.ggml.merges"]?.array?.count, 1555)
        XCTAssertEqual(f["tokenizer.ggml.eos_token_id"]?.int, 1813)
        XCTAssertEqual(f["tokenizer.ggml.padding_token_id"]?.int, 1811)
        XCTAssertNil(f["tokenizer.ggml.bos_token_id"])
        XCTAssertNotNil(f["tokenizer.chat_template"]?.string)
        let m = try ModelDir(path: dir)
        try assertTensorsEqualSource(f, m, arch: "llama", exact: true)
        for t in f.tensors {
            XCTAssertEqual(t.type, .f32, t.name)
        }
        XCTAssertNil(f.tensor("output.weight"), "a tied head is not written")
    }

    func testDefaultTypeKeepsBF16BitsAndNormsF32() throws {
        let dir = try tinyLlama()
        let (f, s) = try export(dir)
        XCTAssertEqual(s.type, .bf16)
        XCTAssertEqual(f["general.file_type"]?.int, 32)
        let m = try ModelDir(path: dir)
        XCTAssertEqual(f.tensor("blk.0.attn_norm.weight")?.type, .f32)
        XCTAssertEqual(f.tensor("token_embd.weight")?.type, .bf16)
        XCTAssertEqual(Array(f.bytes(try XCTUnwrap(f.tensor("blk.1.ffn_down.weight")))), try m.weights.tensor("model.layers.1.mlp.down_proj.weight").bytes())
        try assertTensorsEqualSource(f, m, arch: "llama", exact: true)
    }

    func testPermutationMatchesConverterLayout() {
        // 2 heads of 4 rows, 1 column: per head, rows [0 1 2 3] → [0 2 1 3] (pairs of the two halves interleaved).
        let x: [Float] = [0, 1, 2, 3, 10, 11, 12, 13]
        let p = GGUFExport.permuteRows(x, rows: 8, cols: 1, heads: 2)
        XCTAssertEqual(p, [0, 2, 1, 3, 10, 12, 11, 13])
        XCTAssertEqual(GGUFExport.permuteRows(p, rows: 8, cols: 1, heads: 2, inverse: true), x)
        let y = (0..<(12 * 3)).map(Float.init)
        XCTAssertEqual(GGUFExport.permuteRows(GGUFExport.permuteRows(y, rows: 12, cols: 3, heads: 2), rows: 12, cols: 3, heads: 2, inverse: true), y)
    }

    /// Llama 3.1's rope scaling (theta 500000, head_dim 128, factor 8, low 1, high 4, 8192): the rope_freqs values
    /// convert_hf_to_gguf.py generates (float32 bit patterns from torch 2.13), and the tensor in the file.
    func testLlama3RopeFreqsAsTheConverter() throws {
        var bits = [UInt32](repeating: 0x3f80_0000, count: 29) + [0x3f9a_8ed5, 0x3fc6_d64a, 0x4001_af1d, 0x402c_732e, 0x406b_cace, 0x40a8_3c06]
        bits += [UInt32](repeating: 0x4100_0000, count: 64 - bits.count)
        var o = JSONObject()
        for (k, v) in [("model_type", JSONValue.string("llama")), ("vocab_size", .int(256)), ("hidden_size", .int(256)),
                       ("intermediate_size", .int(64)), ("num_hidden_layers", .int(1)), ("num_attention_heads", .int(2)),
                       ("rope_theta", .double(500000)),
                       ("rope_scaling", .object(JSONObject([("rope_type", .string("llama3")), ("factor", .double(8)), ("low_freq_factor", .double(1)),
                                                             ("high_freq_factor", .double(4)), ("original_max_position_embeddings", .int(8192))])))] {
            o[k] = v
        }
        let c = try ModelConfig(o, path: "config.json")
        let f = GGUFExport.llama3RopeFactors(c, try XCTUnwrap(c.ropeScaling))
        XCTAssertEqual(f.map(\.bitPattern), bits)
    }

    func testSHA256() {
        XCTAssertEqual(SHA256.hex(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(SHA256.hex([]), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256.hex(Array(String(repeating: "a", count: 119).utf8)).count, 64)
    }

    /// A byte-level BPE tokenizer of exactly 256 tokens (the GPT-2 byte alphabet, no merges) with Qwen2's
    /// pre-tokenizer, for the 256-token tiny-qwen2 fixture.
    func writeByteTokenizer(into dir: String) throws {
        var vocab = JSONObject()
        var n = 0
        for b in 0..<256 {
            let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
            let scalar = printable ? b : 256 + { defer { n += 1 }; return n }()
            vocab[String(Character(Unicode.Scalar(UInt32(scalar))!))] = .int(Int64(b))
        }
        let q = try JSONParser().parse(try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("tokenizer/qwen2/tokenizer.json")))).objectValue!
        let tj = JSONObject([("version", .string("1.0")), ("added_tokens", .array([])),
                             ("pre_tokenizer", q["pre_tokenizer"]!), ("post_processor", q["post_processor"]!), ("decoder", q["decoder"]!),
                             ("model", .object(JSONObject([("type", .string("BPE")), ("vocab", .object(vocab)), ("merges", .array([]))])))])
        try JSONValue.object(tj).serialized().write(toFile: dir + "/tokenizer.json", atomically: true, encoding: .utf8)
    }

    func testQwen2ModelKeepsBiasesUnpermutedAndWritesTheHead() throws {
        let dir = makeTempDir("ggufq") + "/q"
        try FileManager.default.copyItem(atPath: Fixtures.path("tiny-qwen2"), toPath: dir)
        try writeByteTokenizer(into: dir)
        var warnings: [String] = []
        let (f, s) = try export(dir, type: .f32, warnings: &warnings)
        XCTAssertEqual(s.arch, "qwen2")
        XCTAssertEqual(f["general.architecture"]?.string, "qwen2")
        XCTAssertEqual(f["qwen2.block_count"]?.int, 2)
        XCTAssertEqual(f["tokenizer.ggml.pre"]?.string, "qwen2")
        XCTAssertNotNil(f.tensor("blk.0.attn_q.bias"))
        XCTAssertNotNil(f.tensor("output.weight"))
        XCTAssertNil(f["tokenizer.ggml.merges"])
        XCTAssertTrue(warnings.contains { $0.contains("no merges") }, "\(warnings)")
        try assertTensorsEqualSource(f, try ModelDir(path: dir), arch: "qwen2", exact: true)
        // No permutation for qwen2: the q rows are the source's as they are.
        XCTAssertEqual(f.floats(try XCTUnwrap(f.tensor("blk.1.attn_q.weight"))),
                       try ModelDir(path: dir).weights.tensor("model.layers.1.self_attn.q_proj.weight").floats())
    }

    func testQ8_0ModelExportFallsBackForNarrowRows() throws {
        let dir = try tinyLlama()
        let (f, s) = try export(dir, type: .q8_0)
        XCTAssertEqual(f["general.file_type"]?.int, 7)
        // hidden 32 and inter 64: every 2-D row is whole blocks, so nothing falls back; 1-D stays f32.
        XCTAssertEqual(s.fellBackToF16, [])
        XCTAssertEqual(f.tensor("blk.0.ffn_up.weight")?.type, .q8_0)
        XCTAssertEqual(f.tensor("output_norm.weight")?.type, .f32)
        try assertTensorsEqualSource(f, try ModelDir(path: dir), arch: "llama", exact: false)
    }

    func testAdapterExportLayoutAndPermutation() throws {
        let m = try ModelDir(path: Fixtures.path("tiny-llama"))
        let a = try Adapter.load(Fixtures.path("peft/tiny-llama-r8-all-linear"))
        let out = makeTempDir("gguca") + "/a.gguf"
        let s = try GGUFExport.exportAdapter(m, adapter: a, to: out, options: GGUFExportOptions())
        XCTAssertEqual(s.type, .f32)
        XCTAssertEqual(s.foldedScaling, [])
        let f = try GGUFFile(path: out)
        XCTAssertEqual(f["general.architecture"]?.string, "llama")
        XCTAssertEqual(f["general.type"]?.string, "adapter")
        XCTAssertEqual(f["adapter.type"]?.string, "lora")
        XCTAssertEqual(f["adapter.lora.alpha"], .f32(16))
        XCTAssertEqual(f.tensors.count, 2 * a.moduleNames.count)
        for n in a.moduleNames {
            let w = try XCTUnwrap(a.modules[n]), g = try XCTUnwrap(GGUFExport.ggufName(module: n))
            let ta = try XCTUnwrap(f.tensor(g + ".weight.lora_a")), tb = try XCTUnwrap(f.tensor(g + ".weight.lora_b"))
            XCTAssertEqual(ta.shape, [w.r, w.inFeatures]); XCTAssertEqual(tb.shape, [w.outFeatures, w.r])
            XCTAssertEqual(f.floats(ta), w.a, n)
            let heads = n.hasSuffix("q_proj") ? 4 : n.hasSuffix("k_proj") ? 2 : 0
            XCTAssertEqual(GGUFExport.permuteHeads(module: n, arch: "llama", config: m.config), heads)
            let b = f.floats(tb)
            XCTAssertEqual(heads > 0 ? GGUFExport.permuteRows(b, rows: w.outFeatures, cols: w.r, heads: heads, inverse: true) : b, w.b, n)
            if heads > 0 { XCTAssertNotEqual(b, w.b, "\(n): lora_b rows should be permuted") }
        }
    }

    func testRsloraScalingIsFoldedIntoLoraB() throws {
        let dir = makeTempDir("ggucr") + "/rs"
        try FileManager.default.copyItem(atPath: Fixtures.path("peft/tiny-llama-r8-all-linear"), toPath: dir)
        let cfg = try String(contentsOfFile: dir + "/adapter_config.json", encoding: .utf8)
        try cfg.replacingOccurrences(of: "\"use_rslora\": false", with: "\"use_rslora\": true")
            .write(toFile: dir + "/adapter_config.json", atomically: true, encoding: .utf8)
        let a = try Adapter.load(dir)
        XCTAssertTrue(a.config.useRslora)
        let out = makeTempDir("ggucr") + "/a.gguf"
        var warned: [String] = []
        let s = try GGUFExport.exportAdapter(try ModelDir(path: Fixtures.path("tiny-llama")), adapter: a, to: out,
                                             options: GGUFExportOptions(), warn: { warned.append($0) })
        XCTAssertEqual(s.foldedScaling.count, a.moduleNames.count)
        XCTAssertTrue(warned.contains { $0.contains("rsLoRA") }, "\(warned)")
        let f = try GGUFFile(path: out)
        // llama.cpp applies alpha/r · B·A; the file's B carries √r more, so the product is alpha/√r · B·A.
        let n = "model.layers.0.mlp.up_proj", w = try XCTUnwrap(a.modules[n])
        let b = f.floats(try XCTUnwrap(f.tensor("blk.0.ffn_up.weight.lora_b")))
        let factor = Float(16 / Double(8).squareRoot()) / (Float(16) / 8)
        XCTAssertEqual(b, w.b.map { $0 * factor })
    }

    func testAdapterQ8_0FallsBackToF16ForRankRows() throws {
        var o = GGUFExportOptions()
        o.type = .q8_0
        let out = makeTempDir("gguc8") + "/a.gguf"
        let a = try Adapter.load(Fixtures.path("peft/tiny-llama-r8-all-linear"))
        let s = try GGUFExport.exportAdapter(try ModelDir(path: Fixtures.path("tiny-llama")), adapter: a, to: out, options: o)
        XCTAssertEqual(s.fellBackToF16.count, a.moduleNames.count)  // every lora_b: rows of r = 8
        let f = try GGUFFile(path: out)
        XCTAssertEqual(f.tensor("blk.0.attn_q.weight.lora_b")?.type, .f16)
        XCTAssertEqual(f.tensor("blk.0.attn_q.weight.lora_a")?.type, .q8_0)  // rows of 64
        XCTAssertEqual(f.tensor("blk.0.ffn_down.weight.lora_a")?.type, .q8_0)  // rows of 128
    }

    func testRefusals() throws {
        // 4-bit model.
        XCTAssertThrowsError(try export(Fixtures.path("tiny-llama-bnb"))) { XCTAssertTrue("\($0)".contains("4-bit"), "\($0)") }
        // An architecture llama.cpp's converter maps otherwise (or not at all).
        let dir = try tinyLlama()
        let cfgPath = dir + "/config.json"
        let cfg = try String(contentsOfFile: cfgPath, encoding: .utf8)
        try cfg.replacingOccurrences(of: "LlamaForCausalLM", with: "LlamaForSequenceClassification").write(toFile: cfgPath, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try export(dir)) {
            XCTAssertTrue("\($0)".contains("LlamaForSequenceClassification") && "\($0)".contains("Qwen2ForCausalLM"), "\($0)")
        }
        try cfg.write(toFile: cfgPath, atomically: true, encoding: .utf8)
        // A sentencepiece-style (byte_fallback) tokenizer.
        let sp = try tinyLlama(tokenizer: "llama2")
        XCTAssertThrowsError(try export(sp)) { XCTAssertTrue("\($0)".contains("byte_fallback"), "\($0)") }
        // An unknown pre-tokenizer: an error naming the hash, unless --tokenizer-pre names it.
        let tjPath = dir + "/tokenizer.json"
        let tj = try String(contentsOfFile: tjPath, encoding: .utf8)
        try tj.replacingOccurrences(of: "\\\\p{N}|", with: "\\\\p{N}{1,2}|").write(toFile: tjPath, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try export(dir)) { XCTAssertTrue("\($0)".contains("chkhsh") && "\($0)".contains("--tokenizer-pre"), "\($0)") }
        let (f, s) = try export(dir, pre: "qwen2")
        XCTAssertEqual(f["tokenizer.ggml.pre"]?.string, "qwen2")
        XCTAssertEqual(s.tokenizerPreSource, "--tokenizer-pre")
    }

    func testModelfileTemplates() throws {
        let chatml = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nBe brief.<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
        let t = try XCTUnwrap(OllamaModelfile.translate(chatml, bos: nil, eos: "<|im_end|>", addBos: false))
        XCTAssertEqual(t.family, "chatml")
        XCTAssertEqual(t.template, "{{- range $i, $m := .Messages }}{{- if and (eq $i 0) (ne $m.Role \"system\") }}<|im_start|>system\nBe brief.<|im_end|>\n{{ end }}<|im_start|>{{ $m.Role }}\n{{ $m.Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n")
        // Llama 3 headers without trimming: translated; the fixture's template trims the content: not exact, omitted.
        let l3 = "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
        XCTAssertEqual(OllamaModelfile.translate(l3, bos: "<|begin_of_text|>", eos: "<|eot_id|>", addBos: true)?.family, "llama3")
        XCTAssertNil(OllamaModelfile.translate(l3, bos: "<|begin_of_text|>", eos: "<|eot_id|>", addBos: false))
        let trimmed = l3.replacingOccurrences(of: "m['content'] }}", with: "m['content'] | trim }}")
        XCTAssertNil(OllamaModelfile.translate(trimmed, bos: "<|begin_of_text|>", eos: "<|eot_id|>", addBos: true))
        let text = OllamaModelfile.text(name: "x", from: "./base.gguf", fromIsPlaceholder: true, adapter: "./a.gguf", chatTemplate: trimmed,
                                        bos: "<|begin_of_text|>", eos: "<|eot_id|>", addBos: true)
        XCTAssertNil(text.family)
        XCTAssertTrue(text.text.contains("FROM ./base.gguf\nADAPTER ./a.gguf\n"), text.text)
        XCTAssertTrue(text.text.contains("Ollama reads tokenizer.chat_template"), text.text)
        XCTAssertTrue(text.text.contains("PARAMETER stop \"<|eot_id|>\""), text.text)
        XCTAssertFalse(text.text.contains("TEMPLATE \"\"\""), text.text)
    }

    /// lora-generate's hidden --logits-out (what scripts/check-llama-cpp compares with llama.cpp): one row of vocab
    /// fp32 logits per next-token choice, whose argmax is the greedy token.
    func testGenerateLogitsOut() throws {
        let dir = try tinyLlama()
        let tmp = makeTempDir("ggufl")
        writeData(Data("{\"prompt\": \"Hello there\"}\n".utf8), tmp + "/p.jsonl")
        let r = try runTool("lora-generate", [dir, "--jsonl", tmp + "/p.jsonl", "--no-chat", "--temperature", "0", "--max-tokens", "4",
                                              "--ids", "--ignore-eos", "--compute-dtype", "f32", "--logits-out", tmp + "/l.f32", "-q"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let ids = try XCTUnwrap(try jsonObject(r.stdout)["ids"]?.arrayValue).compactMap { $0.intValue.map(Int.init) }
        XCTAssertEqual(ids.count, 4)
        let data = try Data(contentsOf: URL(fileURLWithPath: tmp + "/l.f32"))
        XCTAssertEqual(data.count, 4 * 1824 * 4)
        let rows = data.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        for (k, id) in ids.enumerated() {
            let row = rows[(k * 1824)..<((k + 1) * 1824)]
            XCTAssertEqual(row.indices.max { row[$0] < row[$1] }.map { $0 - k * 1824 }, id)
        }
    }

    func testCLIEndToEnd() throws {
        let dir = try tinyLlama()
        let outDir = makeTempDir("ggufcli")
        let out = outDir + "/tiny.gguf"
        let r = try runTool("lora-export", [dir, "-o", out, "--type", "q8_0", "--ollama", "tiny", "-q"])
        XCTAssertEqual(r.status, 0, r.stderr)
        let j = try jsonObject(r.stdout)
        XCTAssertEqual(j["arch"]?.stringValue, "llama")
        XCTAssertEqual(j["type"]?.stringValue, "q8_0")
        XCTAssertEqual(j["kind"]?.stringValue, "model")
        XCTAssertEqual(j["tokenizer_pre"]?.stringValue, "qwen2")
        XCTAssertEqual(j["bytes"]?.intValue, Int64((try FileManager.default.attributesOfItem(atPath: out)[.size] as? NSNumber)?.intValue ?? -1))
        XCTAssertEqual(j["tensors"]?.intValue, Int64(try GGUFFile(path: out).tensors.count))
        let mf = try String(contentsOfFile: outDir + "/Modelfile", encoding: .utf8)
        XCTAssertTrue(mf.contains("FROM ./tiny.gguf\n"), mf)
        XCTAssertTrue(mf.contains("TEMPLATE") || mf.contains("tokenizer.chat_template"), mf)
        // Again without --force: refused, the file untouched.
        assertToolError(try runTool("lora-export", [dir, "-o", out]), contains: "--force")
        // An adapter, with the q8_0 fallback warned about on stderr.
        let aout = outDir + "/adapter.gguf"
        let ra = try runTool("lora-export", [Fixtures.path("tiny-llama"), "--adapter", Fixtures.path("peft/tiny-llama-r8-all-linear"),
                                             "-o", aout, "--type", "q8_0"])
        XCTAssertEqual(ra.status, 0, ra.stderr)
        XCTAssertTrue(ra.stderr.contains("written as f16 instead of q8_0"), ra.stderr)
        XCTAssertEqual(try jsonObject(ra.stdout)["kind"]?.stringValue, "adapter")
        // Usage and input errors.
        assertToolError(try runTool("lora-export", [dir, "-o", outDir + "/x.gguf", "--type", "q4_0"]), contains: "q4_0", code: 64)
        assertToolError(try runTool("lora-export", [Fixtures.path("tiny-llama-bnb"), "-o", outDir + "/y.gguf"]), contains: "4-bit")
        XCTAssertFalse(FileManager.default.fileExists(atPath: outDir + "/y.gguf"))
    }
}
