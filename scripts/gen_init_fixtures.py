#!/usr/bin/env python3
"""Parity fixtures for lora-init's PiSSA and OLoRA initializations (issue 15): PEFT's
get_peft_model(model, LoraConfig(init_lora_weights="pissa" | "olora", ...)) on the tiny forward-fixture models.

Run from the repository root:  .venv/bin/python scripts/gen_init_fixtures.py [CASE ...]
(.venv: python3 -m venv .venv && .venv/bin/pip install torch transformers peft safetensors bitsandbytes)

Writes (replacing) Tests/LoRASharedTests/Fixtures/init/<case>/:
  adapter/             the initialized adapter as PEFT's PiSSA example saves it: init_lora_weights set back to True
                       first, so loading it onto the residual model does not run the initialization again
                       (peft/examples/pissa_finetuning)
  residual.safetensors every targeted Linear's weight after the initialization (W − scaling·B·A, in the model's
                       dtype), as model.save_pretrained writes it after peft_model.unload()
  meta.json            versions, the LoraConfig and the model it was made from
PiSSA: torch.linalg.svd(W in float32, full_matrices=False), A = √S_r/scaling · Vᵀ_r, B = U_r · √S_r/scaling.
OLoRA: torch.linalg.qr(W in float32), A = R[:r], B = Q[:, :r]. Singular vectors are defined up to sign, so the
Swift tests compare A and B after aligning each rank's sign, and B·A and the residual directly.
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
from peft import LoraConfig, get_peft_model  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

transformers.logging.set_verbosity_error()
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "Tests" / "LoRASharedTests" / "Fixtures"
OUT = FIX / "init"
VERSIONS = {"python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__,
            "safetensors": safetensors.__version__}

CASES = {
    # float32 base, plain scaling (alpha / r = 2).
    "pissa-f32": ("forward/llama-gqa-tied/model", dict(init_lora_weights="pissa", r=4, lora_alpha=8,
                                                        target_modules=["q_proj", "v_proj", "down_proj"])),
    # bfloat16 base (the residual is rounded to bf16), rsLoRA scaling (alpha / √r), a rank pattern.
    "pissa-bf16-rslora": ("forward/llama-bf16-weights/model",
                          dict(init_lora_weights="pissa", r=4, lora_alpha=16, use_rslora=True,
                               rank_pattern={"o_proj": 2}, target_modules=["q_proj", "o_proj", "up_proj"])),
    "olora-f32": ("forward/llama-gqa-tied/model", dict(init_lora_weights="olora", r=4, lora_alpha=8,
                                                        target_modules=["k_proj", "o_proj", "gate_proj"])),
}


def build(name, model_rel, lora_kw):
    case = OUT / name
    if case.exists():
        shutil.rmtree(case)
    case.mkdir(parents=True)
    src = FIX / model_rel
    cfg = json.loads((src / "config.json").read_text())
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[cfg.get("dtype") or cfg.get("torch_dtype")]
    model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype).eval()
    pm = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, **lora_kw))
    # As peft/examples/pissa_finetuning: the saved adapter says init_lora_weights = True.
    pm.peft_config["default"].init_lora_weights = True
    with tempfile.TemporaryDirectory() as td:
        pm.save_pretrained(td)
        (case / "adapter").mkdir()
        for fn in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copyfile(Path(td) / fn, case / "adapter" / fn)
    # The fixture model's path relative to Fixtures/, not this machine's absolute one.
    ac = json.loads((case / "adapter" / "adapter_config.json").read_text())
    ac["base_model_name_or_path"] = model_rel
    (case / "adapter" / "adapter_config.json").write_text(json.dumps(ac, indent=2, sort_keys=True) + "\n")
    residual = {}
    for n, mod in pm.named_modules():
        if hasattr(mod, "base_layer") and hasattr(mod, "lora_A"):
            key = n.replace("base_model.model.", "", 1) + ".weight"
            residual[key] = mod.base_layer.weight.detach().contiguous().clone()
    save_file(residual, str(case / "residual.safetensors"), metadata={"format": "pt"})
    meta = {"case": name, "versions": VERSIONS, "model": model_rel, "dtype": str(dtype),
            "lora": lora_kw, "generator": "PYTHONHASHSEED=0 .venv/bin/python scripts/gen_init_fixtures.py",
            "calls": {"init": "get_peft_model(AutoModelForCausalLM.from_pretrained(model, dtype), LoraConfig(...))",
                      "adapter": "peft_config['default'].init_lora_weights = True; save_pretrained",
                      "residual": "base_layer.weight of every LoRA layer after the initialization"}}
    (case / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(name, len(residual), "modules")


# LoftQ: PEFT's loftq_init (peft/utils/loftq_utils.py) hard-codes a CUDA/XPU device, so this runs the same steps on
# the CPU with the same calls: bitsandbytes' Params4bit-equivalent quantize_4bit (nf4, blocksize 64, no double
# quantization) and dequantize_4bit, peft's own _low_rank_decomposition (torch.linalg.svd), the same alternation.
LOFTQ_CASES = {
    "loftq-f32": ("forward/llama-gqa-tied/model", dict(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj", "down_proj"]), 1),
    "loftq-iter3": ("forward/llama-gqa-tied/model", dict(r=4, lora_alpha=4, target_modules=["o_proj", "up_proj"]), 3),
}


def loftq_cpu(weight, reduced_rank, num_iter):
    import bitsandbytes.functional as bf
    from peft.utils.loftq_utils import _low_rank_decomposition
    dtype = weight.dtype
    weight = weight.to(torch.float32)
    res = weight.clone()
    for i in range(num_iter):
        q, state = bf.quantize_4bit(res, blocksize=64, compress_statistics=False, quant_type="nf4")
        dequantized = bf.dequantize_4bit(q, state)
        res = weight - dequantized
        out = _low_rank_decomposition(res, reduced_rank=reduced_rank)
        L, R = out["L"], out["R"]
        if i + 1 == num_iter:
            break
        res = weight - torch.mm(L, R)
    return dequantized.to(dtype), R, L


def build_loftq(name, model_rel, lora_kw, iters):
    import bitsandbytes
    case = OUT / name
    if case.exists():
        shutil.rmtree(case)
    (case / "adapter").mkdir(parents=True)
    src = FIX / model_rel
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32).eval()
    cfg = LoraConfig(task_type="CAUSAL_LM", lora_dropout=0.0, **lora_kw)
    pm = get_peft_model(model, cfg)
    residual, tensors = {}, {}
    with torch.no_grad():
        for n, mod in pm.named_modules():
            if hasattr(mod, "base_layer") and hasattr(mod, "lora_A"):
                q, a, b = loftq_cpu(mod.base_layer.weight, mod.r["default"], iters)
                mod.lora_A["default"].weight.copy_(a)
                mod.lora_B["default"].weight.copy_(b)
                mod.base_layer.weight.copy_(q)
                key = n.replace("base_model.model.", "", 1)
                residual[key + ".weight"] = q.contiguous().clone()
    with tempfile.TemporaryDirectory() as td:
        pm.save_pretrained(td)
        for fn in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copyfile(Path(td) / fn, case / "adapter" / fn)
    ac = json.loads((case / "adapter" / "adapter_config.json").read_text())
    ac["base_model_name_or_path"] = model_rel
    (case / "adapter" / "adapter_config.json").write_text(json.dumps(ac, indent=2, sort_keys=True) + "\n")
    save_file(residual, str(case / "residual.safetensors"), metadata={"format": "pt"})
    meta = {"case": name, "versions": {**VERSIONS, "bitsandbytes": bitsandbytes.__version__}, "model": model_rel,
            "lora": lora_kw, "loftq_iter": iters, "generator": "PYTHONHASHSEED=0 .venv/bin/python scripts/gen_init_fixtures.py",
            "calls": {"init": "peft loftq_init's steps on the CPU: bitsandbytes.functional.quantize_4bit(res, blocksize=64, "
                              "compress_statistics=False, quant_type='nf4'), dequantize_4bit, peft _low_rank_decomposition",
                      "residual": "the dequantized NF4 weight Q of every LoRA layer"}}
    (case / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(name, len(residual), "modules")


def main():
    only = set(sys.argv[1:])  # case names to (re)build; all when none given
    for name, (model_rel, kw) in CASES.items():
        if not only or name in only:
            build(name, model_rel, kw)
    for name, (model_rel, kw, iters) in LOFTQ_CASES.items():
        if not only or name in only:
            build_loftq(name, model_rel, kw, iters)


if __name__ == "__main__":
    main()
