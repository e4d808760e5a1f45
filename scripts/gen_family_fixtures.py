#!/usr/bin/env python3
"""Parity fixtures for the model families and attention variants added after the Llama/Qwen2 core (issue 15):
qwen3 (per-head q_norm/k_norm, tied and untied head, with and without attention biases), phi3 (fused
qkv_proj and gate_up_proj, LongRoPE, partial rotary) and sliding-window attention (mistral's sliding_window on every layer; qwen2/qwen3's use_sliding_window on the layers that
layer_types marks "sliding_attention"), gemma2 and gemma3 (text).

Run from the repository root:  .venv/bin/python scripts/gen_family_fixtures.py [CASE ...]
(.venv: python3 -m venv .venv && .venv/bin/pip install torch transformers peft safetensors)

Writes (replacing) Tests/LoRASharedTests/Fixtures/forward/<case>/ for each case below, in the layout of
scripts/gen_model_fixtures.py and scripts/gen_grad_fixtures.py, so the same Swift loaders read them:
  model/              config.json + model.safetensors (save_pretrained of a seeded random tiny model, fp32)
  adapter/            PEFT adapter (save_pretrained; A and B both non-zero)
  io.safetensors      input_ids, attention_mask, labels (I64 [2, 12], right padding), logits_base,
                      logits_lora (F32 [2, 12, vocab]), loss_base, loss_lora (F32 [1])
  grads.safetensors   loss (F32 [1]) and <module>.lora_A.weight.grad / .lora_B.weight.grad of the mean loss
  generate.json       greedy continuations (model.generate, do_sample=False, KV cache) of one prompt, base
                      and with the adapter
  meta.json           versions, calls, and the checks below
Every model is loaded with attn_implementation="eager" in float32, single-threaded, deterministic. The
padding is shorter than every window, so no padded query row loses all its keys (transformers would then
attend to masked keys, a value nobody uses).

Checks recorded in meta.json: the sliding-window case's logits differ from the same weights with the window
removed (the window is really exercised), and the loss equals a float64 recomputation from the logits.
"""
import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import json
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import peft  # noqa: E402
import safetensors  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (AutoModelForCausalLM, Gemma2Config, Gemma3TextConfig, MistralConfig, Phi3Config,  # noqa: E402
                          Qwen2Config, Qwen3Config)

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests" / "LoRASharedTests" / "Fixtures" / "forward"
PREFIX = "base_model.model."
VERSIONS = {"python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__,
            "safetensors": safetensors.__version__}
BATCH, SEQ, LENGTHS = 2, 12, [12, 10]
PROMPT = [5, 17, 42, 9, 77, 23]
NEW_TOKENS = 10

COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
              rms_norm_eps=1e-6, initializer_range=0.08, bos_token_id=1, eos_token_id=2, pad_token_id=0)

CASES = {
    # head_dim 24 ≠ hidden/heads (16), as Qwen3's configs set it explicitly; untied head.
    "qwen3-qknorm": (Qwen3Config, dict(head_dim=24, tie_word_embeddings=False,
                                       rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
                     dict(r=4, lora_alpha=8, target_modules="all-linear")),
    # tied head, biases on q/k/v/o (attention_bias), sliding window 4 on layer 1 (max_window_layers 1).
    "qwen3-tied-sliding": (Qwen3Config, dict(head_dim=16, tie_word_embeddings=True, attention_bias=True,
                                             use_sliding_window=True, sliding_window=4, max_window_layers=1,
                                             rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
                           dict(r=4, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])),
    # mistral: the window (3) on every layer.
    "mistral-sliding": (MistralConfig, dict(head_dim=16, tie_word_embeddings=False, sliding_window=3,
                                            rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
                        dict(r=4, lora_alpha=8, target_modules="all-linear")),
    # qwen2: biases on q/k/v, window 3 on layer 1 only.
    "qwen2-sliding": (Qwen2Config, dict(tie_word_embeddings=True, use_sliding_window=True, sliding_window=3,
                                        max_window_layers=1,
                                        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
                      dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"])),
    # phi3: fused qkv_proj and gate_up_proj (PEFT targets the fused names), window 5 on every layer.
    "phi3-fused": (Phi3Config, dict(tie_word_embeddings=False, sliding_window=5,
                                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
                   dict(r=4, lora_alpha=8, target_modules="all-linear")),
    # phi3 with LongRoPE (short/long factors, attention_factor from max/original positions) and
    # partial_rotary_factor 0.75 (12 of 16 head dimensions turn); original context 8 < the 12 positions, so the
    # long factors apply to the batch, and generate() switches from short to long as it passes position 8.
    "phi3-longrope-partial": (Phi3Config, dict(tie_word_embeddings=True, original_max_position_embeddings=8,
                                               rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                                                "partial_rotary_factor": 0.75,
                                                                "original_max_position_embeddings": 8,
                                                                "short_factor": [1.0, 1.1, 1.3, 1.7, 2.2, 3.0],
                                                                "long_factor": [1.0, 1.5, 2.5, 4.0, 6.0, 9.0]}),
                              dict(r=4, lora_alpha=8, target_modules=["qkv_proj", "o_proj"])),
    # gemma2: (1 + w) norms, sandwich norms, embeddings × √hidden, GeGLU (gelu_pytorch_tanh), scores scaled by
    # query_pre_attn_scalar^−½ (24, not head_dim 16), soft-capping of scores (2.0) and logits (3.0) set low so
    # tanh bends them, window 4 on layer 0 (gemma2 alternates sliding and full).
    "gemma2-softcap": (Gemma2Config, dict(head_dim=16, query_pre_attn_scalar=24, sliding_window=4,
                                          attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
                                          rope_parameters={"rope_type": "default", "rope_theta": 10000.0}),
                       dict(r=4, lora_alpha=8, target_modules="all-linear")),
    # gemma3 (text): gemma2's layer plus (1 + w) q/k head norms, no soft-capping, a local RoPE (θ 1e4) on the
    # sliding layer and the global one (θ 1e6, linear ×2) on the full layer; untied head.
    "gemma3-local-rope": (Gemma3TextConfig, dict(head_dim=16, query_pre_attn_scalar=16, sliding_window=4,
                                                 tie_word_embeddings=False,
                                                 layer_types=["sliding_attention", "full_attention"],
                                                 rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0,
                                                                                     "rope_theta": 1000000.0},
                                                                  "sliding_attention": {"rope_type": "default",
                                                                                        "rope_theta": 10000.0}}),
                          dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj", "down_proj"])),
}


def make_inputs(seed, vocab):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (BATCH, SEQ), generator=g, dtype=torch.int64)
    mask = torch.zeros(BATCH, SEQ, dtype=torch.int64)
    for b, n in enumerate(LENGTHS):
        mask[b, :n] = 1
    ids = torch.where(mask.bool(), ids, torch.zeros_like(ids))
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
    return ids, mask, labels


def randomize(model, seed):
    """Norm weights (incl. q_norm/k_norm) 1 + N(0, 0.2²) and biases N(0, 0.05²), so they matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))


def manual_loss(logits, labels):
    lg = logits[:, :-1].double()
    lb = labels[:, 1:]
    keep = lb != -100
    nll = -torch.log_softmax(lg, dim=-1).gather(-1, lb.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return float(nll[keep].mean())


def load(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()


@torch.no_grad()
def greedy(model):
    out = model.generate(torch.tensor([PROMPT]), attention_mask=torch.ones(1, len(PROMPT), dtype=torch.long),
                         do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, pad_token_id=0,
                         eos_token_id=None)
    return out[0, len(PROMPT):].tolist()


def build(name, cfg_cls, cfg_kw, lora_kw, seed):
    case = OUT / name
    if case.exists():
        shutil.rmtree(case)
    case.mkdir(parents=True)
    torch.manual_seed(seed)
    cfg = cfg_cls(**COMMON, **cfg_kw)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager").eval()
    randomize(model, seed + 1)
    with tempfile.TemporaryDirectory() as td:
        model.save_pretrained(td, safe_serialization=True)
        (case / "model").mkdir()
        for fn in ("config.json", "model.safetensors"):
            shutil.copyfile(Path(td) / fn, case / "model" / fn)
    base = load(case / "model")
    ids, mask, labels = make_inputs(seed + 2, cfg.vocab_size)
    with torch.no_grad():
        ob = base(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
    gen_base = greedy(base)

    # Adapter: get_peft_model with init_lora_weights=False (random A), then seeded non-zero B.
    torch.manual_seed(seed + 3)
    pm = get_peft_model(load(case / "model"), LoraConfig(task_type="CAUSAL_LM", init_lora_weights=False,
                                                          lora_dropout=0.0, **lora_kw))
    g = torch.Generator().manual_seed(seed + 4)
    with torch.no_grad():
        for n, p in sorted(pm.named_parameters(), key=lambda kv: kv[0]):
            if ".lora_B." in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    with tempfile.TemporaryDirectory() as td:
        pm.save_pretrained(td)
        (case / "adapter").mkdir()
        for fn in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copyfile(Path(td) / fn, case / "adapter" / fn)
    pm = PeftModel.from_pretrained(load(case / "model"), str(case / "adapter"), is_trainable=True).eval()
    ol = pm(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
    ol.loss.backward()
    grads = {}
    for n, p in pm.named_parameters():
        if p.requires_grad:
            assert n.startswith(PREFIX) and ".default." in n, n
            grads[n[len(PREFIX):].replace(".default.", ".") + ".grad"] = p.grad.detach().float().contiguous().clone()
    with torch.no_grad():
        gen_lora = greedy(pm)

    save_file({"input_ids": ids, "attention_mask": mask, "labels": labels,
               "logits_base": ob.logits.float().contiguous(), "logits_lora": ol.logits.detach().float().contiguous(),
               "loss_base": ob.loss.float().reshape(1), "loss_lora": ol.loss.detach().float().reshape(1)},
              str(case / "io.safetensors"), metadata={"format": "pt"})
    save_file({"loss": ol.loss.detach().float().reshape(1), **grads}, str(case / "grads.safetensors"),
              metadata={"format": "pt"})
    (case / "generate.json").write_text(json.dumps({"prompt": PROMPT, "base": gen_base, "lora": gen_lora}, indent=2) + "\n")

    checks = {"loss_base_vs_f64_from_logits": abs(float(ob.loss) - manual_loss(ob.logits, labels)),
              "loss_lora_vs_f64_from_logits": abs(float(ol.loss) - manual_loss(ol.logits.detach(), labels))}
    if getattr(cfg, "sliding_window", None):
        # The same weights with the window removed must give other logits: the window is exercised.
        full = json.loads((case / "model" / "config.json").read_text())
        if full["model_type"].startswith("gemma"):
            full["sliding_window"] = 1000  # keep the layer types (gemma3's local RoPE), widen the window past the batch
        else:
            full["sliding_window"] = None
            full.pop("layer_types", None)
            full["use_sliding_window"] = False
        with tempfile.TemporaryDirectory() as td:
            (Path(td) / "config.json").write_text(json.dumps(full))
            shutil.copyfile(case / "model" / "model.safetensors", Path(td) / "model.safetensors")
            with torch.no_grad():
                of = load(td)(input_ids=ids, attention_mask=mask, use_cache=False)
        checks["max_abs_logit_change_without_window"] = float((of.logits - ob.logits).abs().max())
        assert checks["max_abs_logit_change_without_window"] > 1e-3, checks
    meta = {"case": name, "versions": VERSIONS,
            "generator": "PYTHONHASHSEED=0 .venv/bin/python scripts/gen_family_fixtures.py",
            "config": {k: v for k, v in json.loads((case / "model" / "config.json").read_text()).items()
                       if k in ("model_type", "sliding_window", "use_sliding_window", "max_window_layers",
                                "layer_types", "head_dim", "tie_word_embeddings", "attention_bias", "rope_parameters",
                                "original_max_position_embeddings", "query_pre_attn_scalar", "attn_logit_softcapping",
                                "final_logit_softcapping", "hidden_activation")},
            "lora": lora_kw, "lengths": LENGTHS,
            "calls": {"model": "AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, attn_implementation='eager')",
                      "logits": "model(input_ids, attention_mask=attention_mask, labels=labels, use_cache=False)",
                      "grads": "PeftModel.from_pretrained(base, adapter, is_trainable=True); loss.backward()",
                      "generate": f"generate(prompt, do_sample=False, max_new_tokens={NEW_TOKENS})"},
            "checks": checks}
    (case / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(name, json.dumps(checks))


def main():
    only = set(sys.argv[1:])  # case names to (re)build; all when none given
    for i, (name, (cls, kw, lkw)) in enumerate(CASES.items()):
        if not only or name in only:
            build(name, cls, kw, lkw, 7100 + 10 * i)


if __name__ == "__main__":
    main()
