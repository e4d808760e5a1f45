#!/usr/bin/env python3
"""Generate the LoRA+ (lora-train --loraplus-lr-ratio) optimizer parity fixture.

Run from the repository root, after scripts/gen_grad_fixtures.py (it reuses its model loading):
    .venv/bin/python scripts/gen_loraplus_fixtures.py

Writes Tests/LoRASharedTests/Fixtures/forward/llama-gqa-tied/adamw_loraplus.safetensors: starting from the
case's adapter, 3 optimizer steps of peft.optimizers.create_loraplus_optimizer(model, torch.optim.AdamW,
lr=1e-3, loraplus_lr_ratio=16, loraplus_weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8) with
clip_grad_norm_(max_norm=1.0) and get_linear_schedule_with_warmup(2, 10), as gen_grad_fixtures.py's
adamw.safetensors but with LoRA+'s parameter groups (lora_A at lr, lora_B at lr × ratio, both with
loraplus_weight_decay, which create_loraplus_optimizer sets on every group in place of weight_decay).
Tensors: loss_step{k}, grad_norm_step{k}, lr_step{k} (group A), lr_b_step{k} (group B), and per LoRA
parameter <key>.after / .exp_avg / .exp_avg_sq. Also checks torch's result against a hand-written
float64 AdamW with the two learning rates. Deterministic: running it twice gives identical bytes.
"""
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_grad_fixtures as gg  # noqa: E402  (threads=1, deterministic)

import torch  # noqa: E402
from peft.optimizers import create_loraplus_optimizer  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import get_linear_schedule_with_warmup  # noqa: E402

CASE = "llama-gqa-tied"
LR, RATIO, WD, BETAS, EPS, MAX_NORM = 1e-3, 16.0, 0.01, (0.9, 0.999), 1e-8, 1.0
WARMUP, TOTAL, N_STEPS = gg.WARMUP, gg.TOTAL, 3


def main():
    case_dir = Path(gg.OUT) / CASE
    io = load_file(str(case_dir / "io.safetensors"))
    io = {k: io[k] for k in ("input_ids", "attention_mask", "labels")}
    pm, _ = gg.load_peft(case_dir)
    params = gg.trainable(pm)
    plist = [p for _, p in params]
    opt = create_loraplus_optimizer(pm, torch.optim.AdamW, lr=LR, loraplus_lr_ratio=RATIO,
                                    loraplus_weight_decay=WD, betas=BETAS, eps=EPS)
    groups = {id(p): g for g in opt.param_groups for p in g["params"]}
    for k, p in params:  # lora_A at lr, lora_B at lr × ratio, every group with the LoRA+ decay
        g = groups[id(p)]
        assert g["lr"] == (LR * RATIO if ".lora_B." in k else LR), (k, g["lr"])
        assert g["weight_decay"] == WD
    sched = get_linear_schedule_with_warmup(opt, WARMUP, TOTAL)
    t, grads = {}, []
    for k in range(1, N_STEPS + 1):
        opt.zero_grad(set_to_none=True)
        loss = gg.hf_loss(pm, io)
        loss.backward()
        grads.append([p.grad.detach().clone() for p in plist])
        gn = torch.nn.utils.clip_grad_norm_(plist, max_norm=MAX_NORM)
        lr_a = next(g["lr"] for g in opt.param_groups if g["lr"] <= LR and g["params"])
        lr_b = max(g["lr"] for g in opt.param_groups if g["params"])
        opt.step()
        sched.step()
        t[f"loss_step{k}"] = loss.detach().float().reshape(1)
        t[f"grad_norm_step{k}"] = gn.detach().float().reshape(1)
        t[f"lr_step{k}"] = torch.tensor([lr_a], dtype=torch.float32)
        t[f"lr_b_step{k}"] = torch.tensor([lr_b], dtype=torch.float32)
    for key, p in params:
        st = opt.state[p]
        t[key + ".after"] = p.detach().float().contiguous().clone()
        t[key + ".exp_avg"] = st["exp_avg"].float().contiguous().clone()
        t[key + ".exp_avg_sq"] = st["exp_avg_sq"].float().contiguous().clone()

    # hand-written float64 AdamW with the LoRA+ learning rates, from the same raw gradients
    ad = load_file(str(case_dir / "adapter" / "adapter_model.safetensors"))
    x = [ad[gg.PREFIX + k].double() for k, _ in params]
    m = [torch.zeros_like(v) for v in x]
    v2 = [torch.zeros_like(v) for v in x]
    b1, b2 = BETAS
    for s in range(N_STEPS):
        gr = [g.double() for g in grads[s]]
        tn = math.sqrt(sum(float((g * g).sum()) for g in gr))
        c = min(MAX_NORM / (tn + 1e-6), 1.0)
        bc1, bc2 = 1 - b1 ** (s + 1), 1 - b2 ** (s + 1)
        for i, (k, _) in enumerate(params):
            lr = LR * (RATIO if ".lora_B." in k else 1.0) * gg.lr_lambda(s)
            g = gr[i] * c
            x[i] = x[i] * (1 - lr * WD)
            m[i] = b1 * m[i] + (1 - b1) * g
            v2[i] = b2 * v2[i] + (1 - b2) * g * g
            x[i] = x[i] - (lr / bc1) * m[i] / (v2[i].sqrt() / math.sqrt(bc2) + EPS)
    worst = max(float((x[i] - t[k + ".after"].double()).abs().max()) for i, (k, _) in enumerate(params))
    assert worst < 1e-6, worst
    save_file(t, str(case_dir / "adamw_loraplus.safetensors"), metadata={"format": "pt"})
    print(f"wrote {case_dir / 'adamw_loraplus.safetensors'}; hand-written f64 vs torch max abs {worst:.3g}")


if __name__ == "__main__":
    main()
