#!/usr/bin/env python3
"""Generate the bf16 compute-dtype fixtures: logits, loss and LoRA gradients of base + adapter computed by
PyTorch with bf16 frozen-weight products, for `--compute-dtype bf16` (Sources/LoRAEngine/LoRALinear.swift).

Run from the repository root, AFTER scripts/gen_model_fixtures.py and scripts/gen_grad_fixtures.py:
    .venv/bin/python scripts/gen_bf16_fixtures.py [CASE ...]

For each case in CASES, reads Tests/LoRASharedTests/Fixtures/forward/<case>/{model,adapter,io.safetensors} and
writes <case>/bf16.safetensors with two references:

  *_ops       our bf16 semantics, in torch: every frozen Linear (q/k/v/o/gate/up/down base layers) and the LM
              head compute y = bf16(x) · bf16(W)ᵀ (+ b) with fp32 accumulation and an fp32 result, and in
              backward dx = bf16(dy) · bf16(W) (a custom autograd Function: the rounding is the operand cast of
              a bf16 GEMM, not a rounding of the gradient). LoRA A/B, norms, RoPE, softmax, cross-entropy and
              all LoRA gradients are fp32 — the same as PEFT on a bf16 base with fp32 adapters, except that
              activations between ops stay fp32. This is what `bf16` computes, up to summation order.
  *_autocast  torch's own bf16: the same fp32 PEFT model run under torch.autocast("cpu", dtype=torch.bfloat16)
              (every Linear, LoRA included, in bf16 with bf16 outputs), the usual bf16 CPU training recipe. A
              looser reference: it rounds every Linear output and the LoRA path to bf16 too.

Keys: logits_ops / logits_autocast (F32 [B, T, V]), loss_ops / loss_autocast (F32 [1]), and per LoRA parameter
"<module>.lora_A.weight.grad_ops" / ".grad_autocast" (F32), named like grads.safetensors. The NF4 case uses the
fp32 dequantization of the 4-bit checkpoint as its base (bitsandbytes dequantizes to bf16 as RNE of the same fp32
product code·absmax, which is what bf16(W) of that fp32 weight gives).

Seeded, single-threaded, deterministic: running it twice gives identical bytes.
"""
import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import json
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_grad_fixtures as gg  # noqa: E402  (threads=1, deterministic; load_peft, trainable)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

CASES = ["llama-gqa-tied", "qwen2-bias", "llama-nf4",
         # the families of scripts/gen_family_fixtures.py (run that first): q/k norms, fused projections, sliding
         # windows, LongRoPE, gemma's sandwich norms, GeGLU and soft-capping
         "qwen3-qknorm", "qwen3-tied-sliding", "mistral-sliding", "phi3-fused", "phi3-longrope-partial",
         "gemma2-softcap", "gemma3-local-rope"]


def bf(t):
    return t.to(torch.bfloat16).to(torch.float32)


class BF16Linear(torch.autograd.Function):
    """y = bf16(x)·bf16(W)ᵀ + b (fp32 accumulation and result); dx = bf16(dy)·bf16(W). W and b are frozen."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        w = bf(weight)
        ctx.save_for_backward(w)
        y = bf(x) @ w.t()
        return y if bias is None else y + bias

    @staticmethod
    def backward(ctx, gy):
        (w,) = ctx.saved_tensors
        return bf(gy) @ w, None, None


def patch_frozen_linears(pm):
    """Every nn.Linear that is not a LoRA A/B (the frozen base layers and lm_head) computes through BF16Linear."""
    n = 0
    for name, mod in pm.named_modules():
        if isinstance(mod, torch.nn.Linear) and "lora_" not in name:
            assert not mod.weight.requires_grad, name
            mod.forward = (lambda m: lambda x: BF16Linear.apply(x, m.weight, m.bias))(mod)
            n += 1
    return n


def run(pm, params, io, autocast):
    pm.zero_grad(set_to_none=True)
    if autocast:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = pm(io["input_ids"], attention_mask=io["attention_mask"])
    else:
        out = pm(io["input_ids"], attention_mask=io["attention_mask"])
    logits = out.logits.float()
    lg = logits[:, :-1].reshape(-1, logits.shape[-1])
    lb = io["labels"][:, 1:].reshape(-1)
    loss = F.cross_entropy(lg, lb, ignore_index=-100, reduction="mean")
    loss.backward()
    grads = {k: p.grad.detach().float().clone() for k, p in params}
    return logits.detach().contiguous(), loss.detach().reshape(1), grads


def main():
    only = set(sys.argv[1:])  # case names to (re)build; all when none given
    meta_path = gg.OUT / "bf16_meta.json"
    meta = json.loads(meta_path.read_text()) if only and meta_path.exists() else {"cases": {}}
    meta["versions"] = {"torch": torch.__version__}
    for name in CASES:
        if only and name not in only:
            continue
        case = gg.OUT / name
        io = load_file(str(case / "io.safetensors"))
        ref32 = load_file(str(case / "grads.safetensors"))
        out = {}
        m = {}
        for kind in ("autocast", "ops"):
            pm, _ = gg.load_peft(case)
            params = gg.trainable(pm)
            if kind == "ops":
                m["patched_linears"] = patch_frozen_linears(pm)
            logits, loss, grads = run(pm, params, io, autocast=kind == "autocast")
            out[f"logits_{kind}"] = logits
            out[f"loss_{kind}"] = loss
            for k, g in grads.items():
                out[f"{k}.grad_{kind}"] = g.contiguous()
            gmax = max(float(v.abs().max()) for k, v in ref32.items() if k.endswith(".grad"))
            m[kind] = {
                "loss": float(loss),
                "loss_minus_f32": float(loss) - float(ref32["loss"]),
                "grad_max_abs_diff_vs_f32_over_max_grad": max(
                    float((grads[k] - ref32[k + ".grad"]).abs().max()) for k in grads) / gmax,
            }
        lf = io["logits_lora"].float()
        for kind in ("autocast", "ops"):
            m[kind]["logits_max_abs_diff_vs_f32"] = float((out[f"logits_{kind}"] - lf).abs().max())
        m["logits_ops_vs_autocast_max_abs"] = float((out["logits_ops"] - out["logits_autocast"]).abs().max())
        save_file(out, str(case / "bf16.safetensors"), metadata={"format": "pt"})
        meta["cases"][name] = m
        print(name, json.dumps(m))
    meta_path.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
