// TinyModel: writes a random tiny Llama model folder (config.json + bf16 model.safetensors) with a tokenizer
// copied from the fixtures, so the data tools can run end to end without Python.
import Foundation
@testable import LoRAShared
@testable import LoRAModel
@testable import LoRAEngine
@testable import LoRATrain
@testable import LoRATokenizer

enum TinyModel {
    /// A Llama with `vocab` tokens (≥ the tokenizer's), hidden 32, 2 layers, GQA `heads`/`kvHeads` (4/2), tied head.
    /// `family` "gemma2" or "gemma3_text" writes that family's layer instead (its config keys, the sandwich norms as
    /// offsets from 1, gemma3's q/k norms; a window of 8 on the sliding layers).
    static func write(to dir: String, tokenizer: String = "qwen2", vocab: Int = 1824, seed: UInt64 = 1,
                      maxPositions: Int = 512, chatTemplate: Bool = true, family: String = "llama",
                      heads: Int = 4, kvHeads: Int = 2) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let h = 32, inter = 64, layers = 2, kv = kvHeads, hd = 8
        let gemma = family.hasPrefix("gemma")
        let arch = ["llama": "LlamaForCausalLM", "gemma2": "Gemma2ForCausalLM", "gemma3_text": "Gemma3ForCausalLM"][family]!
        let familyKeys = gemma
            ? #""hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": 8, "sliding_window": 8, "sliding_window_pattern": 2"#
            : #""hidden_act": "silu""#
        let config = """
        {"architectures": ["\(arch)"], "model_type": "\(family)", "vocab_size": \(vocab), "hidden_size": \(h),
         "intermediate_size": \(inter), "num_hidden_layers": \(layers), "num_attention_heads": \(heads),
         "num_key_value_heads": \(kv), "head_dim": \(hd), "max_position_embeddings": \(maxPositions), "rms_norm_eps": 1e-06,
         "rope_theta": 10000.0, "tie_word_embeddings": true, "torch_dtype": "bfloat16", \(familyKeys)}
        """
        try config.write(toFile: dir + "/config.json", atomically: true, encoding: .utf8)
        var rng = Xoshiro256(seed: seed)
        func rand(_ n: Int, _ std: Float) -> [Float] { (0..<n).map { _ in rng.normal() * std } }
        // gemma stores norm weights as offsets from 1 and scales embeddings by √hidden.
        let one: Float = gemma ? 0 : 1
        func norm(_ name: String, _ n: Int) -> TensorRecord {
            TensorRecord(name: name, floats: (0..<n).map { _ in one + 0.1 * rng.normal() }, shape: [n], dtype: .BF16)
        }
        var recs = [TensorRecord(name: "model.embed_tokens.weight", floats: rand(vocab * h, gemma ? 0.1 : 0.5), shape: [vocab, h], dtype: .BF16),
                    norm("model.norm.weight", h)]
        for l in 0..<layers {
            let p = "model.layers.\(l)."
            for (n, o, i) in [("self_attn.q_proj", heads * hd, h), ("self_attn.k_proj", kv * hd, h), ("self_attn.v_proj", kv * hd, h),
                              ("self_attn.o_proj", h, heads * hd), ("mlp.gate_proj", inter, h), ("mlp.up_proj", inter, h), ("mlp.down_proj", h, inter)] {
                recs.append(TensorRecord(name: p + n + ".weight", floats: rand(o * i, 0.2), shape: [o, i], dtype: .BF16))
            }
            recs.append(norm(p + "input_layernorm.weight", h))
            recs.append(norm(p + "post_attention_layernorm.weight", h))
            if gemma {
                recs.append(norm(p + "pre_feedforward_layernorm.weight", h))
                recs.append(norm(p + "post_feedforward_layernorm.weight", h))
            }
            if family == "gemma3_text" {
                recs.append(norm(p + "self_attn.q_norm.weight", hd))
                recs.append(norm(p + "self_attn.k_norm.weight", hd))
            }
        }
        try SafetensorsWriter.write(recs, toFile: dir + "/model.safetensors")
        let src = Fixtures.path("tokenizer/" + tokenizer)
        try FileManager.default.copyItem(atPath: src + "/tokenizer.json", toPath: dir + "/tokenizer.json")
        var cfg = try JSONParser().parse(try Data(contentsOf: URL(fileURLWithPath: src + "/tokenizer_config.json"))).objectValue!
        if !chatTemplate { cfg["chat_template"] = nil }
        try JSONValue.object(cfg).serialized(.indented(2)).write(toFile: dir + "/tokenizer_config.json", atomically: true, encoding: .utf8)
    }
}
