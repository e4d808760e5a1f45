// ModelQuantizeTests: lora-quantize on the tiny Llama reproduces, tensor for tensor and byte for byte, the
// checkpoint transformers + bitsandbytes saved (Fixtures/tiny-llama-bnb); config decoding; bad model dirs.
import XCTest
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

final class ModelQuantizeTests: XCTestCase {
    var dir = ""
    override func setUp() { dir = makeTempDir("mq") }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func testMatchesTransformersBitsandbytesCheckpoint() throws {
        let out = dir + "/nf4"
        let s = try ModelQuantizer.run(input: Fixtures.path("tiny-llama"), output: out, options: QuantizeOptions())
        XCTAssertEqual(s.tensorsQuantized, 14)
        let ours = try WeightStore(directory: out)
        let ref = try WeightStore(directory: Fixtures.path("tiny-llama-bnb"))
        XCTAssertEqual(ours.names, ref.names, "tensor names differ")
        for n in ref.names {
            let a = try ours.tensor(n), b = try ref.tensor(n)
            XCTAssertEqual(a.dtype, b.dtype, n)
            XCTAssertEqual(a.shape, b.shape, n)
            XCTAssertEqual(a.bytes(), b.bytes(), "\(n): bytes differ")
        }
        // The whole file, header and layout included, is byte-identical to transformers' save_pretrained.
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: out + "/model.safetensors")),
                       try Data(contentsOf: URL(fileURLWithPath: Fixtures.path("tiny-llama-bnb/model.safetensors"))),
                       "model.safetensors differs from transformers' file as a whole")
        let oc = try ModelConfig.load(directory: out).raw["quantization_config"]
        let rc = try ModelConfig.load(directory: Fixtures.path("tiny-llama-bnb")).raw["quantization_config"]
        XCTAssertEqual(oc, rc)
        XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/generation_config.json"))
        // The quantized dir reads back as a 4-bit model whose dequantized weights match the reference's.
        let m = try ModelDir(path: out)
        XCTAssertTrue(m.isQuantized)
        let w = try BnbWeight(name: "model.layers.1.mlp.down_proj.weight", store: m.weights)
        let wr = try BnbWeight(name: "model.layers.1.mlp.down_proj.weight", store: ref)
        XCTAssertEqual(w.absmax, wr.absmax)
    }

    func testFP4NoDoubleQuantAndSharding() throws {
        var o = QuantizeOptions()
        o.quantType = .fp4
        o.doubleQuant = false
        o.blocksize = 128
        o.maxShardSize = 20_000
        let out = dir + "/fp4"
        let s = try ModelQuantizer.run(input: Fixtures.path("tiny-llama"), output: out, options: o)
        XCTAssertTrue(s.files.contains("model.safetensors.index.json"))
        let m = try ModelDir(path: out)
        let w = try BnbWeight(name: "model.layers.0.self_attn.q_proj.weight", store: m.weights)
        XCTAssertEqual(w.state.quantType, .fp4)
        XCTAssertEqual(w.state.blocksize, 128)
        XCTAssertFalse(w.state.isNested)
        XCTAssertEqual(try m.linearModules().count, 14)
    }

    func testRefusesQuantizedInputAndExistingOutput() throws {
        assertThrows(try ModelQuantizer.run(input: Fixtures.path("tiny-llama-bnb"), output: dir + "/x", options: QuantizeOptions()),
                     contains: "already quantized")
        try FileManager.default.createDirectory(atPath: dir + "/exists", withIntermediateDirectories: true)
        assertThrows(try ModelQuantizer.run(input: Fixtures.path("tiny-llama"), output: dir + "/exists", options: QuantizeOptions()),
                     contains: "--force")
        var o = QuantizeOptions()
        o.replace = true
        _ = try ModelQuantizer.run(input: Fixtures.path("tiny-llama"), output: dir + "/exists", options: o)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/exists/model.safetensors"))
    }

    func testUnwritableOutputLeavesNothing() throws {
        let ro = dir + "/ro"
        try FileManager.default.createDirectory(atPath: ro, withIntermediateDirectories: true)
        chmod(ro, 0o555)
        defer { chmod(ro, 0o755) }
        if getuid() == 0 {
            // root ignores permissions; a missing parent folder is the portable unwritable case.
            assertThrows(try ModelQuantizer.run(input: Fixtures.path("tiny-llama"), output: dir + "/missing/parent/out", options: QuantizeOptions()),
                         contains: "does not exist")
        } else {
            assertThrows(try ModelQuantizer.run(input: Fixtures.path("tiny-llama"), output: ro + "/out", options: QuantizeOptions()),
                         contains: "cannot write")
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: ro), [])
    }

    func testConfigForms() throws {
        let c4 = try ModelConfig.load(directory: Fixtures.path("tiny-llama"))
        XCTAssertEqual(c4.numKVHeads, 2)
        XCTAssertEqual(c4.headDim, 16)
        XCTAssertTrue(c4.tieWordEmbeddings)
        let c5 = try ModelConfig.load(directory: Fixtures.path("tiny-llama-fp32"))
        XCTAssertEqual(c5.ropeTheta, 10000)
        XCTAssertEqual(c5.dtype, .F32)
        let q = try ModelConfig.load(directory: Fixtures.path("tiny-qwen2"))
        XCTAssertTrue(q.attentionBias)
        XCTAssertFalse(q.oProjBias)
        let legacy = #"{"model_type":"mistral","vocab_size":10,"hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"rope_theta":500000.0,"torch_dtype":"float16","rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}"#
        let c = try ModelConfig.parse(Data(legacy.utf8), path: "config.json")
        XCTAssertEqual(c.ropeTheta, 500000)
        XCTAssertEqual(c.dtype, .F16)
        XCTAssertEqual(c.ropeScaling?.type, "llama3")
        XCTAssertEqual(c.numKVHeads, 2)
    }

    func testBadModelDirs() throws {
        assertThrows(try ModelDir(path: dir + "/nope"), contains: "not found")
        let empty = dir + "/empty"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        assertThrows(try ModelDir(path: empty), contains: "config.json")
        try #"{"model_type":"gpt2","vocab_size":10}"#.write(toFile: empty + "/config.json", atomically: true, encoding: .utf8)
        assertThrows(try ModelDir(path: empty), contains: "'gpt2' is not supported; supported: " + ModelConfig.supportedTypes.joined(separator: ", "))
        XCTAssertTrue(ModelConfig.supportedTypes.contains("llama") && ModelConfig.supportedTypes.contains("qwen2"))
        try #"{"model_type":"llama","hidden_size":8}"#.write(toFile: empty + "/config.json", atomically: true, encoding: .utf8)
        assertThrows(try ModelDir(path: empty), contains: "vocab_size")
        try "{".write(toFile: empty + "/config.json", atomically: true, encoding: .utf8)
        assertThrows(try ModelDir(path: empty), contains: "invalid JSON")
        // Config fine, weights absent.
        try FileManager.default.copyItem(atPath: Fixtures.path("tiny-llama/config.json"), toPath: dir + "/cfg-only.json")
        let noW = dir + "/noweights"
        try FileManager.default.createDirectory(atPath: noW, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: Fixtures.path("tiny-llama/config.json"), toPath: noW + "/config.json")
        writeBytes([1], noW + "/pytorch_model.bin")
        assertThrows(try ModelDir(path: noW), contains: "pytorch_model.bin")
        // Index naming a missing shard.
        try #"{"metadata":{},"weight_map":{"model.embed_tokens.weight":"model-00001-of-00002.safetensors"}}"#
            .write(toFile: noW + "/model.safetensors.index.json", atomically: true, encoding: .utf8)
        assertThrows(try ModelDir(path: noW), contains: "model-00001-of-00002.safetensors")
    }

    func testInconsistentQuantState() throws {
        // Copy the bnb checkpoint with one absmax tensor truncated: the reader must refuse it.
        let ref = try WeightStore(directory: Fixtures.path("tiny-llama-bnb"))
        var recs: [TensorRecord] = []
        for n in ref.names {
            let t = try ref.tensor(n)
            if n == "model.layers.0.mlp.up_proj.weight.absmax" {
                recs.append(TensorRecord(name: n, dtype: .U8, shape: [3], bytes: Array(t.bytes().prefix(3))))
            } else {
                recs.append(TensorRecord(copying: t))
            }
        }
        let bad = dir + "/bad"
        try FileManager.default.createDirectory(atPath: bad, withIntermediateDirectories: true)
        try SafetensorsWriter.write(recs, toFile: bad + "/model.safetensors")
        try FileManager.default.copyItem(atPath: Fixtures.path("tiny-llama-bnb/config.json"), toPath: bad + "/config.json")
        let m = try ModelDir(path: bad)
        assertThrows(try m.linearModules(), contains: "up_proj.weight.absmax")
    }
}
