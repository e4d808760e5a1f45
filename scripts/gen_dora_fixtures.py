#!/usr/bin/env python3
"""Parity fixtures for DoRA (issue 15): PEFT's LoraConfig(use_dora=True) on the tiny forward-fixture models.

Run from the repository root:  .venv/bin/python scripts/gen_dora_fixtures.py
(.venv: python3 -m venv .venv && .venv/bin/pip install torch transformers peft safetensors bitsandbytes)

Writes (replacing) Tests/LoRASharedTests/Fixtures/dora/<case>/:
  adapter/            the DoRA adapter (save_pretrained): lora_A, lora_B and lora_magnitude_vector [out], with A, B
                      and the magnitude all moved off their initial values so each matters
  init/               adapter_config.json + the magnitude vectors PEFT's initialization gives (m = ‖W‖ per output
                      row, B = 0), to check lora-init --dora
  io.safetensors      input_ids, attention_mask, labels (I64 [2, 12], right padding), logits_lora (F32), loss_lora
  grads.safetensors   loss and <module>.lora_A.weight.grad / .lora_B.weight.grad / .lora_magnitude_vector.grad of
                      the mean loss
  merged.safetensors  every targeted Linear's weight after merge_and_unload() (m / ‖W + s·B·A‖ · (W + s·B·A))
  generate.json       greedy continuation of one prompt with the adapter (model.generate, KV cache)
  meta.json           versions and calls
The model is loaded in float32 with eager attention; lora_dropout is 0 (PEFT's DoRA with dropout computes an extra
base product on the dropped-out input, which lora-train refuses for now).
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
from transformers import AutoModelForCausalLM  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "Tests" / "LoRASharedTests" / "Fixtures"
OUT = FIX / "dora"
PREFIX = "base_model.model."
VERSIONS = {"python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__,
            "safetensors": safetensors.__version__}
BATCH, SEQ, LENGTHS = 2, 12, [12, 9]
PROMPT = [5, 17, 42, 9, 77, 23]
NEW_TOKENS = 8

CASES = {
    # llama, GQA, tied head: every Linear, plain scaling.
    "dora-llama": ("forward/llama-gqa-tied/model", dict(r=4, lora_alpha=8, target_modules="all-linear")),
    # qwen2 with q/k/v biases (y = m/‖·‖ · (W·x + s·B·A·x) + b), rsLoRA scaling, a rank pattern.
    "dora-qwen2-bias": ("forward/qwen2-bias/model", dict(r=4, lora_alpha=8, use_rslora=True, rank_pattern={"v_proj": 2},
                                                         target_modules=["q_proj", "v_proj", "o_proj", "up_proj"])),
    # the NF4 (bitsandbytes layout, double-quantized) llama: PEFT's DoRA on the fp32 dequantization of its 4-bit
    # weights, as the llama-nf4 forward fixtures are made (bitsandbytes' own CPU matmul computes in bf16).
    "dora-llama-nf4": ("forward/llama-nf4/model", dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"])),
}


def load(path):
    cfg = json.loads((Path(path) / "config.json").read_text())
    if "quantization_config" in cfg:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import gen_model_fixtures as gm  # bitsandbytes' NF4 dequantization in fp32, and an fp32 llama from it
        sd32, _, _ = gm.nf4_dequant_from_file(Path(path) / "model.safetensors")
        return gm.fp32_llama_from_state(cfg, sd32).eval()
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()


def make_inputs(seed, vocab):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (BATCH, SEQ), generator=g, dtype=torch.int64)
    mask = torch.zeros(BATCH, SEQ, dtype=torch.int64)
    for b, n in enumerate(LENGTHS):
        mask[b, :n] = 1
    ids = torch.where(mask.bool(), ids, torch.zeros_like(ids))
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
    return ids, mask, labels


def save_adapter(pm, dst, model_rel):
    with tempfile.TemporaryDirectory() as td:
        pm.save_pretrained(td)
        dst.mkdir()
        for fn in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copyfile(Path(td) / fn, dst / fn)
    ac = json.loads((dst / "adapter_config.json").read_text())
    ac["base_model_name_or_path"] = model_rel
    (dst / "adapter_config.json").write_text(json.dumps(ac, indent=2, sort_keys=True) + "\n")


def build(name, model_rel, lora_kw, seed):
    case = OUT / name
    if case.exists():
        shutil.rmtree(case)
    case.mkdir(parents=True)
    src = FIX / model_rel
    cfg = dict(task_type="CAUSAL_LM", lora_dropout=0.0, use_dora=True, **lora_kw)
    # PEFT's own initialization (B = 0, m = ‖W‖): its magnitude vectors, for lora-init --dora.
    torch.manual_seed(seed)
    pm0 = get_peft_model(load(src), LoraConfig(**cfg))
    save_adapter(pm0, case / "init", model_rel)
    # A trained-looking adapter: random A (init_lora_weights=False), seeded B, magnitude ×(1 + N(0, 0.1²)).
    torch.manual_seed(seed + 1)
    pm = get_peft_model(load(src), LoraConfig(init_lora_weights=False, **cfg))
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for n, p in sorted(pm.named_parameters(), key=lambda kv: kv[0]):
            if ".lora_B." in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        for n, p in sorted(pm.named_parameters(), key=lambda kv: kv[0]):
            if "lora_magnitude_vector" in n:
                p.mul_(1 + 0.1 * torch.randn(p.shape, generator=g))
    save_adapter(pm, case / "adapter", model_rel)
    pm = PeftModel.from_pretrained(load(src), str(case / "adapter"), is_trainable=True).eval()
    ids, mask, labels = make_inputs(seed + 3, pm.config.vocab_size)
    out = pm(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
    out.loss.backward()
    grads = {}
    for n, p in pm.named_parameters():
        if p.requires_grad:
            assert n.startswith(PREFIX) and ".default" in n, n
            key = n[len(PREFIX):].replace(".default.weight", ".weight").replace("lora_magnitude_vector.weight", "lora_magnitude_vector")
            grads[key + ".grad"] = p.grad.detach().float().contiguous().clone()
    with torch.no_grad():
        gen = pm.generate(torch.tensor([PROMPT]), attention_mask=torch.ones(1, len(PROMPT), dtype=torch.long),
                          do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, pad_token_id=0,
                          eos_token_id=None)[0, len(PROMPT):].tolist()
    save_file({"input_ids": ids, "attention_mask": mask, "labels": labels,
               "logits_lora": out.logits.detach().float().contiguous(), "loss_lora": out.loss.detach().float().reshape(1)},
              str(case / "io.safetensors"), metadata={"format": "pt"})
    save_file({"loss": out.loss.detach().float().reshape(1), **grads}, str(case / "grads.safetensors"), metadata={"format": "pt"})
    (case / "generate.json").write_text(json.dumps({"prompt": PROMPT, "lora": gen}, indent=2) + "\n")
    targeted = {n.replace(PREFIX, "", 1) for n, m in pm.named_modules() if hasattr(m, "lora_magnitude_vector") and hasattr(m, "base_layer")}
    merged = pm.merge_and_unload()  # (of the dequantized weights for the NF4 case)
    sd = merged.state_dict()
    save_file({k + ".weight": sd[k + ".weight"].contiguous() for k in sorted(targeted)}, str(case / "merged.safetensors"),
              metadata={"format": "pt"})
    meta = {"case": name, "versions": VERSIONS, "model": model_rel, "lora": cfg, "lengths": LENGTHS,
            "generator": "PYTHONHASHSEED=0 .venv/bin/python scripts/gen_dora_fixtures.py",
            "calls": {"init": "get_peft_model(model, LoraConfig(use_dora=True, ...)) (init/)",
                      "logits": "PeftModel.from_pretrained(model, adapter, is_trainable=True)(input_ids, attention_mask, labels)",
                      "grads": "loss.backward()", "merged": "merge_and_unload()",
                      "generate": f"generate(prompt, do_sample=False, max_new_tokens={NEW_TOKENS})"}}
    (case / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(name, len(grads), "gradients", len(targeted), "modules")


def main():
    only = set(sys.argv[1:])  # case names to (re)build; all when none given
    for i, (name, (model_rel, kw)) in enumerate(CASES.items()):
        if not only or name in only:
            build(name, model_rel, kw, 8100 + 10 * i)


if __name__ == "__main__":
    main()
