// LoRAEngine: the transformer (one LoRA linear module, one decoder layer, head and cross-entropy, RoPE), its eval
// forward, training step and KV-cache decoding; it sees the model layer and the tokenizer (decoding), never the
// training loop or the data.
@_exported import LoRAModel
@_exported import LoRATokenizer
