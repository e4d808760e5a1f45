#!/usr/bin/env python3
"""Convert a llama.cpp GGUF file of a Llama-architecture model into a Hugging Face model folder.

    python scripts/gguf_to_hf.py MODEL.gguf OUT_DIR

Needs only `gguf`, `numpy` and the standard library. Writes into OUT_DIR:

  model.safetensors        all tensors dequantized (gguf.quants.dequantize) and rounded to bf16
                           exactly like torch's `.to(torch.bfloat16)` (round to nearest even),
                           with the Hugging Face Llama tensor names; the q/k row permutation that
                           llama.cpp's convert_hf_to_gguf.py applies is undone. `lm_head.weight`
                           is written only when the GGUF has its own `output.weight`.
  config.json              LlamaForCausalLM config from the GGUF metadata
  generation_config.json   bos/eos/pad ids
  tokenizer.json           byte-level BPE rebuilt from tokenizer.ggml.* metadata
  tokenizer_config.json    chat template, special tokens, added_tokens_decoder
  special_tokens_map.json

Only what the demo model needs is supported: general.architecture "llama" and a byte-level BPE
vocabulary (tokenizer.ggml.model "gpt2") with a pre-tokenizer listed in PRE_TOKENIZERS. Anything
else is refused with a clear error rather than converted wrongly.
"""

import json
import os
import struct
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType
from gguf.quants import dequantize

# GGUF token types (llama.cpp's llama_token_type)
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _byte_level(use_regex):
    # The ByteLevel pre-tokenizer exactly as `tokenizers` serializes it.
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def _split_then_bytes(regex):
    return {
        "type": "Sequence",
        "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
            _byte_level(False),
        ],
    }


# tokenizer.ggml.pre -> (normalizer, pre_tokenizer). The split rules are llama.cpp's (llama-vocab.cpp):
#  - "smollm" (also StarCoder, Refact, ...): every \p{N} alone, then the GPT-2 regex. That is what the
#    original SmolLM2 tokenizer.json writes as Digits(individual_digits) + ByteLevel(use_regex).
PRE_TOKENIZERS = {
    "smollm": (
        None,
        {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _byte_level(True)]},
    ),
    "starcoder": (
        None,
        {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _byte_level(True)]},
    ),
    "gpt-2": (None, _byte_level(True)),
    "default": (None, _byte_level(True)),
    "llama-bpe": (None, _split_then_bytes(LLAMA3_SPLIT)),
    "llama3": (None, _split_then_bytes(LLAMA3_SPLIT)),
    "qwen2": ({"type": "NFC"}, _split_then_bytes(QWEN2_SPLIT)),
}

# The ByteLevel post-processor / decoder as `tokenizers` serializes `ByteLevel()`.
BYTE_LEVEL_POST = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
BYTE_LEVEL_DECODER = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}


def log(msg):
    print(f"gguf_to_hf: {msg}", file=sys.stderr, flush=True)


class Meta:
    def __init__(self, reader):
        self.fields = reader.fields

    def has(self, key):
        return key in self.fields

    def get(self, key, default=None):
        field = self.fields.get(key)
        if field is None:
            return default
        return field.contents()

    def raw_float(self, key):
        """A float32 metadata value as the shortest decimal that round-trips in float32 (9.9999997e-06 -> 1e-05)."""
        field = self.fields[key]
        if field.types[0] == GGUFValueType.FLOAT32:
            return float(np.format_float_positional(np.float32(field.contents()), unique=True, trim="-"))
        return float(field.contents())


# ---------------------------------------------------------------- tensors


def bf16_bits(x):
    """float32 -> bf16 bit patterns (uint16), round to nearest even, NaN -> 0x7FC0 (c10::round_to_nearest_even)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32)
    rounding_bias = ((u >> np.uint32(16)) & np.uint32(1)) + np.uint32(0x7FFF)
    out = ((u + rounding_bias) >> np.uint32(16)).astype(np.uint16)  # wraps only for NaN payloads, fixed below
    out[np.isnan(x)] = np.uint16(0x7FC0)
    return out


def reverse_permute(w, n_head):
    """Undo llama.cpp's permute(w, n_head, n_head_kv): reshape(n_head, 2, d, ...).swapaxes(1, 2)."""
    d = w.shape[0] // n_head // 2
    return w.reshape(n_head, d, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_name(gguf_name):
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    if gguf_name == "output.weight":
        return "lm_head.weight"
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[3] in ("weight", "bias"):
        layer, kind, suffix = parts[1], parts[2], parts[3]
        sub = {
            "attn_norm": "input_layernorm",
            "ffn_norm": "post_attention_layernorm",
            "attn_q": "self_attn.q_proj",
            "attn_k": "self_attn.k_proj",
            "attn_v": "self_attn.v_proj",
            "attn_output": "self_attn.o_proj",
            "ffn_gate": "mlp.gate_proj",
            "ffn_up": "mlp.up_proj",
            "ffn_down": "mlp.down_proj",
        }.get(kind)
        if sub is not None:
            return f"model.layers.{layer}.{sub}.{suffix}"
    return None


def convert_tensors(reader, n_head, n_head_kv):
    tensors = {}
    types = {}
    for t in reader.tensors:
        name = hf_name(t.name)
        if name is None:
            if t.name.startswith("rope_freqs") or t.name.endswith(".rope_freqs.weight"):
                raise SystemExit(f"tensor {t.name}: rope_freqs (llama3 rope scaling) is not supported")
            raise SystemExit(f"unknown tensor {t.name} in the GGUF")
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        w = dequantize(t.data, t.tensor_type)
        w = np.asarray(w, dtype=np.float32)
        if not np.isfinite(w).all():
            log(f"warning: {t.name} has {int((~np.isfinite(w)).sum())} non-finite values")
        expected = tuple(int(d) for d in reversed(t.shape))  # GGUF lists dims fastest-first
        if tuple(w.shape) != expected:
            w = w.reshape(expected)
        if t.name.endswith("attn_q.weight") or t.name.endswith("attn_q.bias"):
            w = reverse_permute(w, n_head)
        elif t.name.endswith("attn_k.weight") or t.name.endswith("attn_k.bias"):
            w = reverse_permute(w, n_head_kv)
        if name in tensors:
            raise SystemExit(f"duplicate tensor {name}")
        tensors[name] = w
    log("GGUF tensor types: " + ", ".join(f"{k} x{v}" for k, v in sorted(types.items())))
    return tensors


def write_safetensors_bf16(path, tensors):
    names = sorted(tensors)
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name in names:
        nbytes = tensors[name].size * 2
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * ((8 - (8 + len(blob)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name in names:
            f.write(bf16_bits(tensors[name]).tobytes())
        size = f.tell()
    assert size == 8 + len(blob) + offset, (size, len(blob), offset)


# ---------------------------------------------------------------- tokenizer


def added_token(tid, content, special):
    return {
        "id": tid,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": special,
    }


def template_processing(tokens, bos_id, eos_id):
    """What transformers' update_post_processor() builds for add_bos_token / add_eos_token."""
    def part(type_id, seq):
        out = [{"SpecialToken": {"id": tokens[int(bos_id)], "type_id": type_id}}] if bos_id is not None else []
        out.append({"Sequence": {"id": seq, "type_id": type_id}})
        if eos_id is not None:
            out.append({"SpecialToken": {"id": tokens[int(eos_id)], "type_id": type_id}})
        return out

    single = part(0, "A")
    pair = part(0, "A") + part(1, "B")
    specials = {}
    for i in (bos_id, eos_id):
        if i is not None:
            specials[tokens[int(i)]] = {"id": tokens[int(i)], "ids": [int(i)], "tokens": [tokens[int(i)]]}
    return {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials}


def build_tokenizer(meta):
    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise SystemExit(f"tokenizer.ggml.model {model!r} not supported (only byte-level BPE 'gpt2')")
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in PRE_TOKENIZERS:
        raise SystemExit(f"tokenizer.ggml.pre {pre!r} not supported; known: {sorted(PRE_TOKENIZERS)}")
    normalizer, pre_tokenizer = PRE_TOKENIZERS[pre]

    tokens = list(meta.get("tokenizer.ggml.tokens"))
    token_types = list(meta.get("tokenizer.ggml.token_type") or [TOKEN_NORMAL] * len(tokens))
    merges = list(meta.get("tokenizer.ggml.merges"))
    if len(set(tokens)) != len(tokens):
        raise SystemExit("duplicate tokens in tokenizer.ggml.tokens")
    pairs = []
    for m in merges:
        a, sep, b = m.partition(" ")
        if not sep or " " in b:
            raise SystemExit(f"bad merge {m!r}")
        pairs.append([a, b])

    added = []
    for tid, (tok, ttype) in enumerate(zip(tokens, token_types)):
        if ttype == TOKEN_CONTROL:
            added.append(added_token(tid, tok, True))
        elif ttype == TOKEN_USER_DEFINED:
            added.append(added_token(tid, tok, False))

    unk_id = meta.get("tokenizer.ggml.unknown_token_id")
    post_processor = BYTE_LEVEL_POST
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    add_eos = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    if add_bos or add_eos:
        post_processor = template_processing(
            tokens, meta.get("tokenizer.ggml.bos_token_id") if add_bos else None,
            meta.get("tokenizer.ggml.eos_token_id") if add_eos else None)
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor,
        "decoder": BYTE_LEVEL_DECODER,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": pre in ("llama-bpe", "llama3"),  # llama.cpp ignores merges for llama3 only
            "vocab": {tok: i for i, tok in enumerate(tokens)},
            "merges": pairs,
        },
    }

    def tok(key):
        i = meta.get(f"tokenizer.ggml.{key}")
        return (tokens[int(i)], int(i)) if i is not None else (None, None)

    specials = {
        "bos": tok("bos_token_id"),
        "eos": tok("eos_token_id"),
        "pad": tok("padding_token_id"),
        "unk": tok("unknown_token_id") if unk_id is not None else (None, None),
    }
    return tokenizer, tokens, token_types, specials


def tokenizer_configs(meta, tokens, token_types, specials, max_len):
    chat_template = meta.get("tokenizer.chat_template")
    control = [t for t, ty in zip(tokens, token_types) if ty == TOKEN_CONTROL]
    # The GGUF does not record which control tokens the original tokenizer called "additional special
    # tokens"; the chat markers (control tokens that the chat template writes) are those that matter.
    extra = [t for t in control if chat_template and t in chat_template]
    decoder = {}
    for tid, (t, ty) in enumerate(zip(tokens, token_types)):
        if ty in (TOKEN_CONTROL, TOKEN_USER_DEFINED):
            special = ty == TOKEN_CONTROL
            decoder[str(tid)] = {
                "content": t,
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": special,
            }
    cfg = {
        "add_prefix_space": False,
        "added_tokens_decoder": decoder,
        "additional_special_tokens": extra,
        "bos_token": specials["bos"][0],
        "clean_up_tokenization_spaces": False,
        "eos_token": specials["eos"][0],
        "model_max_length": max_len,
        "pad_token": specials["pad"][0],
        # Not "GPT2Tokenizer" (what the original SmolLM2 repo says): transformers 5 rebuilds that class
        # with a plain ByteLevel pre-tokenizer and drops the Digits step of tokenizer.json, so
        # AutoTokenizer would disagree with tokenizer.json. PreTrainedTokenizerFast (TokenizersBackend
        # in transformers 5) loads tokenizer.json as written, in transformers 4 and 5 alike.
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": specials["unk"][0],
        "vocab_size": len(tokens),
    }
    if chat_template:
        cfg["chat_template"] = chat_template
    for flag in ("add_bos_token", "add_eos_token"):
        if meta.get(f"tokenizer.ggml.{flag}", False):
            cfg[flag] = True
    cfg = {k: cfg[k] for k in sorted(cfg)}
    stm = {"additional_special_tokens": extra}
    for name in ("bos", "eos", "pad", "unk"):
        if specials[name][0] is not None:
            stm[f"{name}_token"] = specials[name][0]
    return cfg, stm


# ---------------------------------------------------------------- config


def build_config(meta, has_output, specials):
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise SystemExit(f"general.architecture {arch!r} not supported (only 'llama')")
    a = arch + "."
    if meta.has(a + "rope.scaling.type") and meta.get(a + "rope.scaling.type") not in ("none",):
        raise SystemExit("rope scaling in the GGUF is not supported")
    n_head = int(meta.get(a + "attention.head_count"))
    n_head_kv = int(meta.get(a + "attention.head_count_kv", n_head))
    hidden = int(meta.get(a + "embedding_length"))
    head_dim = int(meta.get(a + "attention.key_length", meta.get(a + "rope.dimension_count", hidden // n_head)))
    vocab = int(meta.get(a + "vocab_size", len(meta.get("tokenizer.ggml.tokens"))))
    theta = meta.raw_float(a + "rope.freq_base") if meta.has(a + "rope.freq_base") else 10000.0
    if theta == int(theta):
        theta = int(theta)  # the original config.json writes 100000, not 100000.0
    cfg = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": specials["bos"][1],
        "eos_token_id": specials["eos"][1],
        "head_dim": head_dim,
        "hidden_act": "silu",
        "hidden_size": hidden,
        "initializer_range": hidden ** -0.5,
        "intermediate_size": int(meta.get(a + "feed_forward_length")),
        "max_position_embeddings": int(meta.get(a + "context_length")),
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": n_head,
        "num_hidden_layers": int(meta.get(a + "block_count")),
        "num_key_value_heads": n_head_kv,
        "pad_token_id": specials["pad"][1],
        "pretraining_tp": 1,
        "rms_norm_eps": meta.raw_float(a + "attention.layer_norm_rms_epsilon"),
        "rope_scaling": None,
        "rope_theta": theta,
        "tie_word_embeddings": not has_output,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": vocab,
    }
    gen = {"bos_token_id": specials["bos"][1], "eos_token_id": specials["eos"][1]}
    if specials["pad"][1] is not None:
        gen["pad_token_id"] = specials["pad"][1]
    return cfg, gen


def write_json(path, obj, indent=2):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    gguf_path, out_dir = argv[1], argv[2]
    reader = GGUFReader(gguf_path)
    meta = Meta(reader)
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    log(f"{os.path.basename(gguf_path)}: {meta.get('general.name')!r}, {len(reader.tensors)} tensors, "
        f"output.weight {'present' if has_output else 'absent (tied embeddings)'}")

    tokenizer, tokens, token_types, specials = build_tokenizer(meta)
    config, generation = build_config(meta, has_output, specials)
    tok_cfg, stm = tokenizer_configs(meta, tokens, token_types, specials, config["max_position_embeddings"])

    tensors = convert_tensors(reader, config["num_attention_heads"], config["num_key_value_heads"])
    expected = {"model.embed_tokens.weight", "model.norm.weight"}
    for i in range(config["num_hidden_layers"]):
        for sub in ("input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj",
                    "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            expected.add(f"model.layers.{i}.{sub}.weight")
    if has_output:
        expected.add("lm_head.weight")
    if set(tensors) != expected:
        raise SystemExit(f"tensor set mismatch: missing {sorted(expected - set(tensors))[:5]}, "
                         f"extra {sorted(set(tensors) - expected)[:5]}")
    if tensors["model.embed_tokens.weight"].shape != (config["vocab_size"], config["hidden_size"]):
        raise SystemExit(f"embedding shape {tensors['model.embed_tokens.weight'].shape} does not match config")

    os.makedirs(out_dir, exist_ok=True)
    write_safetensors_bf16(os.path.join(out_dir, "model.safetensors"), tensors)
    write_json(os.path.join(out_dir, "config.json"), config)
    write_json(os.path.join(out_dir, "generation_config.json"), generation)
    write_json(os.path.join(out_dir, "tokenizer.json"), tokenizer)
    write_json(os.path.join(out_dir, "tokenizer_config.json"), tok_cfg)
    write_json(os.path.join(out_dir, "special_tokens_map.json"), stm)
    log(f"wrote {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
