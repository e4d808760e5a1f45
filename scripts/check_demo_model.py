#!/usr/bin/env python3
"""Check a folder written by scripts/gguf_to_hf.py against transformers' own GGUF loader.

    .venv/bin/python scripts/check_demo_model.py MODEL_DIR GGUF

Needs torch, transformers, tokenizers, gguf (the project's .venv). Prints a JSON summary on stdout
and exits 1 when any exact check fails:

  files         every file there; model.safetensors laid out as docs/formats.md section 4 says
  config        the fields that matter equal the config transformers derives from the GGUF
  state_dict    every tensor equal, bit for bit, to transformers' GGUF load in bf16
  logits        bf16 vs bf16: identical. fp32 (ours, i.e. bf16 weights upcast) vs the GGUF in fp32
                with its weights rounded to bf16: identical. fp32 vs the unrounded GGUF: reported only
  tokenizer     ids from our tokenizer.json (the `tokenizers` library and AutoTokenizer) equal to
                transformers' GGUF tokenizer with llama.cpp's split rule for the file's
                tokenizer.ggml.pre; decode round trips; vocab and special tokens equal
  chat_template apply_chat_template text and ids equal

transformers' GGUF tokenizer has no split rule for tokenizer.ggml.pre "smollm" and falls back to plain
GPT-2 ByteLevel, while llama.cpp (and the original SmolLM2 tokenizer.json) first isolates every \\p{N}
character. That only changes whitespace runs right before a digit ("  1": ["ĠĠ","1"] vs
["Ġ","Ġ","1"]). Those differences are listed under tokenizer.plain_gguf_differences and are
failures only if a differing text has no digit in it.
"""

import json
import math
import os
import re
import struct
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
from tokenizers import Regex, Tokenizer, pre_tokenizers  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))
try:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
except Exception:  # pragma: no cover - older/newer transformers
    pass

FILES = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
]

TEXTS = [
    "Hello world",
    "Hello, world! How are you today?",
    "The quick brown fox jumps over the lazy dog.",
    "12345",
    "x = 12345 + 678.90",
    "Call 555-0123 or +1 (800) 123-4567 before 2024-12-31.",
    "  1",
    "a  2  bb   33    ccc",
    "tab\tseparated\tvalues\t42",
    "   leading and trailing spaces   ",
    "line one\nline two\n\nline four\r\nwindows\n",
    "\n\n\n",
    "    def f(x):\n        return x ** 2  # square\n",
    "emoji 🙂👍🏽🚀 and ZWJ 👨‍👩‍👧",
    "CJK: 日本語のテキスト、中文文本，한국어 텍스트",
    "Accents: café, naïve, Ærøskøbing, São Paulo, Dvořák, ﬁ ligature",
    "Arabic-Indic digits ٠١٢٣ and superscript ² and fraction ½ and Ⅻ",
    "Mixed: it's, don't, we'll, they're, I'm, you've, he'd",
    "URL https://example.com/path?q=1&r=22#frag and email a.b@c.de",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>",
    "<|endoftext|><repo_name>x<file_sep>y<jupyter_code>z",
    "not special: <|im_start |> < |im_end|> <im_start>",
    "",
    " ",
    "\u00a0non-breaking\u2009thin\u3000ideographic spaces",
    "Ünïcödé \u0301combining and \ufeffBOM",
]

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\n",
]

CONVERSATIONS = [
    [{"role": "user", "content": "Hi there!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Count: 1 2  3"}],
    [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 10  *  3?\n\nThanks 🙂"},
    ],
]

# llama.cpp llama-vocab.cpp: the regexes it applies, in order, before BPE, per tokenizer.ggml.pre.
# The GPT-2 regex itself is what ByteLevel(use_regex=True) applies.
LLAMA_CPP_FIRST_SPLIT = {
    "smollm": r"\p{N}",
    "starcoder": r"\p{N}",
    "refact": r"\p{N}",
    "codeshell": r"\p{N}",
}


def read_gguf_pre(gguf_path):
    from gguf import GGUFReader

    field = GGUFReader(gguf_path).fields.get("tokenizer.ggml.pre")
    return field.contents() if field is not None else None


def check_safetensors(path):
    problems = []
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n).decode("utf-8"))
    if (8 + n) % 8:
        problems.append(f"8 + header length {8 + n} is not a multiple of 8")
    if header.get("__metadata__") != {"format": "pt"}:
        problems.append(f"__metadata__ is {header.get('__metadata__')!r}")
    entries = sorted((v["data_offsets"], k, v) for k, v in header.items() if k != "__metadata__")
    pos = 0
    dtypes = {}
    for (begin, end), name, v in entries:
        if begin != pos:
            problems.append(f"{name}: begins at {begin}, expected {pos}")
        numel = math.prod(v["shape"])
        if end - begin != numel * 2 or v["dtype"] != "BF16":
            problems.append(f"{name}: {v['dtype']} {v['shape']} takes {end - begin} bytes")
        dtypes[v["dtype"]] = dtypes.get(v["dtype"], 0) + 1
        pos = end
    if 8 + n + pos != size:
        problems.append(f"file is {size} bytes, header says {8 + n + pos}")
    return {"tensors": len(entries), "dtypes": dtypes, "header_bytes": n, "problems": problems}


def get_rope_theta(cfg):
    theta = getattr(cfg, "rope_theta", None)
    if theta is None:
        params = getattr(cfg, "rope_parameters", None) or {}
        theta = params.get("rope_theta")
    return theta


def compare_configs(ours, theirs):
    keys = [
        "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
        "rms_norm_eps", "tie_word_embeddings", "bos_token_id", "eos_token_id", "pad_token_id",
        "hidden_act", "attention_bias", "mlp_bias",
    ]
    diffs = {}
    for k in keys:
        a, b = getattr(ours, k, None), getattr(theirs, k, None)
        if k == "rms_norm_eps" and a is not None and b is not None:
            # The GGUF stores a float32 (9.999999747e-06 read as a double); config.json says 1e-05 like
            # the original. The model adds eps to a float32 tensor, where the two are the same number.
            same = torch.tensor(a, dtype=torch.float32) == torch.tensor(b, dtype=torch.float32)
            if not bool(same):
                diffs[k] = [a, b]
        elif a != b:
            diffs[k] = [a, b]
    a, b = get_rope_theta(ours), get_rope_theta(theirs)
    if a is None or b is None or float(a) != float(b):
        diffs["rope_theta"] = [a, b]
    return diffs


def load(path, dtype, gguf_file=None):
    kwargs = {"dtype": dtype}
    if gguf_file:
        kwargs["gguf_file"] = gguf_file
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    model.eval()
    return model


def compare_state_dicts(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    result = {"tensors": len(sa), "missing_in_gguf_load": sorted(set(sa) - set(sb)),
              "extra_in_gguf_load": sorted(set(sb) - set(sa)), "mismatched": []}
    for name in sorted(set(sa) & set(sb)):
        x, y = sa[name], sb[name]
        if x.dtype != y.dtype or x.shape != y.shape:
            result["mismatched"].append({"name": name, "ours": [str(x.dtype), list(x.shape)],
                                         "gguf": [str(y.dtype), list(y.shape)]})
        elif not torch.equal(x.view(torch.int16) if x.dtype == torch.bfloat16 else x,
                             y.view(torch.int16) if y.dtype == torch.bfloat16 else y):
            diff = (x.float() - y.float()).abs()
            result["mismatched"].append({"name": name, "max_abs_diff": float(diff.max()),
                                         "n_diff": int((x != y).sum())})
    return result


@torch.no_grad()
def logits_of(model, tok, prompts):
    out = []
    for p in prompts:
        ids = tok(p, return_tensors="pt")["input_ids"]
        out.append(model(input_ids=ids).logits[0].float())
    return out


def max_diff(xs, ys):
    return max(float((x - y).abs().max()) for x, y in zip(xs, ys))


def argmax_agree(xs, ys):
    return all(torch.equal(x.argmax(-1), y.argmax(-1)) for x, y in zip(xs, ys))


def check_bf16_rounding():
    """gguf_to_hf.bf16_bits against torch on values that exercise ties, NaN, inf, subnormals, overflow."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import numpy as np
    from gguf_to_hf import bf16_bits

    bits = np.array([
        0x3F808000, 0x3F818000, 0x3F80FFFF, 0x3F807FFF, 0x3F808001, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F8000,
        0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF, 0x00000001, 0x00008000, 0x00018000,
        0x80008000, 0x00000000, 0x80000000, 0x007FFFFF,
    ], dtype=np.uint32)
    rng = np.random.default_rng(0)
    bits = np.concatenate([bits, rng.integers(0, 2**32, size=200000, dtype=np.uint32),
                           (rng.integers(0, 2**16, size=20000, dtype=np.uint32) << 16) | 0x8000])
    x = bits.view(np.float32)
    ours = bf16_bits(x)
    ref = torch.from_numpy(x.copy()).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(x)
    # torch keeps NaN payloads' sign/quiet bit in its own way; both must at least be NaN in bf16.
    ours_nan = ((ours & 0x7F80) == 0x7F80) & ((ours & 0x7F) != 0)
    same = (ours == ref) | (nan & ours_nan)
    return {"values": int(x.size), "mismatches": int((~same).sum()),
            "nan_bit_patterns_differ": int((nan & (ours != ref)).sum())}


def dumps(obj):
    """Indented JSON with lists of numbers and short strings kept on one line."""
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    return re.sub(r"\[\s*((?:(?:-?[\d.eE+-]+|\"(?:[^\"\\\n]|\\.){0,12}\")\s*,\s*)*"
                  r"(?:-?[\d.eE+-]+|\"(?:[^\"\\\n]|\\.){0,12}\"))\s*\]",
                  lambda m: json.dumps(json.loads("[" + m.group(1) + "]"), ensure_ascii=False), text)


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    model_dir, gguf_path = os.path.abspath(argv[1]), os.path.abspath(argv[2])
    gguf_dir, gguf_name = os.path.dirname(gguf_path), os.path.basename(gguf_path)
    t0 = time.time()
    summary = {"model_dir": model_dir, "gguf": gguf_path}
    failures = []

    # ---- files
    missing = [f for f in FILES if not os.path.isfile(os.path.join(model_dir, f))]
    st = check_safetensors(os.path.join(model_dir, "model.safetensors")) if not missing else None
    summary["files"] = {"missing": missing, "safetensors": st}
    if missing:
        failures.append(f"missing files {missing}")
        print(dumps(summary))
        return 1
    if st["problems"]:
        failures.append("safetensors layout")

    rounding = check_bf16_rounding()
    summary["bf16_rounding_vs_torch"] = rounding
    if rounding["mismatches"]:
        failures.append("bf16 rounding")

    # ---- config
    ours_cfg = AutoConfig.from_pretrained(model_dir)
    gguf_cfg = AutoConfig.from_pretrained(gguf_dir, gguf_file=gguf_name)
    cfg_diffs = compare_configs(ours_cfg, gguf_cfg)
    with open(os.path.join(model_dir, "generation_config.json")) as f:
        gen = json.load(f)
    gen_ok = gen.get("eos_token_id") == gguf_cfg.eos_token_id and gen.get("bos_token_id") == gguf_cfg.bos_token_id
    summary["config"] = {"differences_from_gguf_config": cfg_diffs, "generation_config": gen,
                         "generation_config_matches": gen_ok}
    if cfg_diffs:
        failures.append("config")
    if not gen_ok:
        failures.append("generation_config")

    # ---- tokenizers
    pre_type = read_gguf_pre(gguf_path)
    raw = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    ours_tok = AutoTokenizer.from_pretrained(model_dir)
    gguf_plain = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    gguf_ref = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    first_split = LLAMA_CPP_FIRST_SPLIT.get(pre_type)
    if first_split is not None:
        gguf_ref.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(first_split), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    tok_summary = {
        "gguf_pre": pre_type,
        "ours_class": type(ours_tok).__name__,
        "ours_pre_tokenizer": str(ours_tok.backend_tokenizer.pre_tokenizer),
        "gguf_plain_pre_tokenizer": str(gguf_plain.backend_tokenizer.pre_tokenizer),
        "gguf_reference_pre_tokenizer": str(gguf_ref.backend_tokenizer.pre_tokenizer),
        "texts": len(TEXTS),
        "mismatches": [],
        "plain_gguf_differences": [],
    }
    total_tokens = 0
    for text in TEXTS:
        ids_raw = raw.encode(text).ids
        ids_auto = ours_tok(text)["input_ids"]
        ids_ref = gguf_ref(text)["input_ids"]
        ids_plain = gguf_plain(text)["input_ids"]
        total_tokens += len(ids_raw)
        dec_ours = ours_tok.decode(ids_auto)
        dec_ref = gguf_ref.decode(ids_ref)
        dec_raw = raw.decode(ids_raw, skip_special_tokens=False)
        problems = []
        if ids_raw != ids_auto:
            problems.append("tokenizer.json via `tokenizers` != AutoTokenizer(MODEL_DIR)")
        if ids_auto != ids_ref:
            problems.append("ours != transformers GGUF tokenizer (+ llama.cpp split rule)")
        if not (dec_ours == dec_ref == dec_raw == text):
            problems.append("decode does not round-trip identically")
        if problems:
            tok_summary["mismatches"].append({"text": text, "problems": problems, "ours": ids_auto,
                                              "raw": ids_raw, "gguf_reference": ids_ref,
                                              "decoded_ours": dec_ours, "decoded_gguf": dec_ref})
        if ids_auto != ids_plain:
            entry = {"text": text, "ours": ids_auto, "gguf_plain": ids_plain,
                     "ours_tokens": ours_tok.convert_ids_to_tokens(ids_auto),
                     "gguf_plain_tokens": gguf_plain.convert_ids_to_tokens(ids_plain)}
            tok_summary["plain_gguf_differences"].append(entry)
            if not re.search(r"\d", text) and not any(c.isnumeric() for c in text):
                tok_summary["mismatches"].append({"text": text, "problems": [
                    "differs from plain transformers GGUF tokenizer without a digit in the text"]})
    tok_summary["tokens_total"] = total_tokens
    # vocab, added tokens and special tokens
    v_ours, v_gguf = ours_tok.get_vocab(), gguf_plain.get_vocab()
    tok_summary["vocab_equal"] = v_ours == v_gguf
    tok_summary["vocab_size"] = len(v_ours)
    specials = {}
    for attr in ("bos_token", "eos_token", "pad_token", "unk_token", "bos_token_id", "eos_token_id",
                 "pad_token_id", "unk_token_id"):
        a, b = getattr(ours_tok, attr, None), getattr(gguf_plain, attr, None)
        specials[attr] = a if a == b else {"ours": a, "gguf": b}
    tok_summary["special_tokens"] = specials
    added_ours = {i: (t.content, t.special) for i, t in ours_tok.added_tokens_decoder.items()}
    added_gguf = {i: (t.content, t.special) for i, t in gguf_plain.added_tokens_decoder.items()}
    tok_summary["added_tokens_equal"] = added_ours == added_gguf
    tok_summary["added_tokens"] = len(added_ours)
    # tokenizer.json as the current `tokenizers` library would write it
    with open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8") as f:
        written = json.load(f)
    tok_summary["tokenizer_json_canonical"] = json.loads(raw.to_str()) == written
    if not tok_summary["tokenizer_json_canonical"]:
        canon = json.loads(raw.to_str())
        tok_summary["tokenizer_json_noncanonical_keys"] = sorted(
            k for k in set(canon) | set(written) if canon.get(k) != written.get(k))
    if tok_summary["mismatches"]:
        failures.append("tokenization")
    if not tok_summary["vocab_equal"] or not tok_summary["added_tokens_equal"]:
        failures.append("vocab/added tokens")
    if any(isinstance(v, dict) for v in specials.values()):
        failures.append("special tokens")
    if not tok_summary["tokenizer_json_canonical"]:
        failures.append("tokenizer.json differs from its re-serialization by `tokenizers`")
    summary["tokenizer"] = tok_summary

    # ---- chat template
    chat = {"template_equal": ours_tok.chat_template == gguf_plain.chat_template, "cases": 0, "mismatches": []}
    for conv in CONVERSATIONS:
        for gen_prompt in (False, True):
            chat["cases"] += 1
            s_ours = ours_tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen_prompt)
            s_gguf = gguf_plain.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen_prompt)
            i_ours = list(ours_tok.apply_chat_template(conv, tokenize=True, add_generation_prompt=gen_prompt,
                                                       return_dict=True)["input_ids"])
            i_ref = list(gguf_ref.apply_chat_template(conv, tokenize=True, add_generation_prompt=gen_prompt,
                                                      return_dict=True)["input_ids"])
            if s_ours != s_gguf or i_ours != i_ref or i_ours != raw.encode(s_ours).ids:
                chat["mismatches"].append({"conversation": conv, "add_generation_prompt": gen_prompt,
                                           "ours": s_ours, "gguf": s_gguf, "ids_ours": i_ours, "ids_gguf": i_ref})
    chat["example"] = ours_tok.apply_chat_template(CONVERSATIONS[0], tokenize=False, add_generation_prompt=True)
    if chat["mismatches"] or not chat["template_equal"]:
        failures.append("chat template")
    summary["chat_template"] = chat

    # ---- weights and logits
    ours_bf16 = load(model_dir, torch.bfloat16)
    gguf_bf16 = load(gguf_dir, torch.bfloat16, gguf_name)
    sd = compare_state_dicts(ours_bf16, gguf_bf16)
    sd["lm_head_tied"] = ours_bf16.lm_head.weight.data_ptr() == ours_bf16.model.embed_tokens.weight.data_ptr()
    sd["param_count"] = sum(p.numel() for p in ours_bf16.parameters())
    summary["state_dict"] = sd
    if sd["missing_in_gguf_load"] or sd["extra_in_gguf_load"] or sd["mismatched"]:
        failures.append("state dict")

    logits = {"prompts": len(PROMPTS)}
    lo, lg = logits_of(ours_bf16, ours_tok, PROMPTS), logits_of(gguf_bf16, gguf_ref, PROMPTS)
    logits["bf16_max_abs_diff"] = max_diff(lo, lg)
    logits["bf16_argmax_agree"] = argmax_agree(lo, lg)
    del ours_bf16, gguf_bf16
    ours_f32 = load(model_dir, torch.float32)
    gguf_f32 = load(gguf_dir, torch.float32, gguf_name)
    lo32, lg32 = logits_of(ours_f32, ours_tok, PROMPTS), logits_of(gguf_f32, gguf_ref, PROMPTS)
    logits["fp32_vs_unrounded_gguf_max_abs_diff"] = max_diff(lo32, lg32)
    logits["fp32_vs_unrounded_gguf_argmax_agree"] = argmax_agree(lo32, lg32)
    with torch.no_grad():
        for p in gguf_f32.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
    lr32 = logits_of(gguf_f32, gguf_ref, PROMPTS)
    logits["fp32_vs_bf16_rounded_gguf_max_abs_diff"] = max_diff(lo32, lr32)
    logits["logit_scale_max_abs"] = max(float(x.abs().max()) for x in lg32)
    next_tokens = [ours_tok.decode([int(x[-1].argmax())]) for x in lo32]
    logits["next_token_fp32"] = next_tokens
    summary["logits"] = logits
    if logits["bf16_max_abs_diff"] != 0.0:
        failures.append("bf16 logits")
    if logits["fp32_vs_bf16_rounded_gguf_max_abs_diff"] != 0.0:
        failures.append("fp32 logits with bf16-rounded GGUF weights")

    summary["failures"] = failures
    summary["ok"] = not failures
    summary["seconds"] = round(time.time() - t0, 1)
    print(dumps(summary))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
