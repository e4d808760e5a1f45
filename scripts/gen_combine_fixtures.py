#!/usr/bin/env python3
"""Generate adapter-combination parity fixtures (lora-merge --combination) from PEFT's
LoraModel.add_weighted_adapter.

Run from the repository root:
    .venv/bin/python scripts/gen_combine_fixtures.py

Base: Tests/LoRASharedTests/Fixtures/tiny-llama-fp32 (fp32, 2 layers, hidden 64, kv 32).
Writes Tests/LoRASharedTests/Fixtures/combine/:
  a1/  r=4, lora_alpha=8,  targets q_proj,v_proj            (random A and B, seeded)
  a2/  r=4, lora_alpha=16, targets q_proj,k_proj            (random A and B, seeded)
  a3/  r=8, lora_alpha=8,  targets q_proj,v_proj, use_rslora (random A and B, seeded)
  <case>/  the adapter add_weighted_adapter made, saved with save_pretrained (safetensors)
  cases.json  every case: adapters, weights, combination_type, svd_rank, density,
              majority_sign_method, and the resulting r / lora_alpha / target_modules
Cases with random pruning (dare_*) are saved too; the Swift tests check them structurally
(torch's bernoulli draws cannot be reproduced), the others exactly.
Seeded and single-threaded: running it twice gives identical bytes.
"""
import json
import os
import shutil
import sys

os.environ.setdefault("PYTHONHASHSEED", "0")
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "Tests/LoRASharedTests/Fixtures")
BASE = os.path.join(FIX, "tiny-llama-fp32")
OUT = os.path.join(FIX, "combine")

ADAPTERS = {
    "a1": dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], seed=11),
    "a2": dict(r=4, lora_alpha=16, target_modules=["q_proj", "k_proj"], seed=12),
    "a3": dict(r=8, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_rslora=True, seed=13),
}

# (name, adapters, weights, combination_type, extra kwargs)
CASES = [
    ("linear", ["a1", "a2"], [0.7, -0.4], "linear", {}),
    ("linear_single", ["a1"], [1.5], "linear", {}),
    ("cat", ["a1", "a3"], [0.7, -0.4], "cat", {}),
    ("cat3", ["a1", "a2", "a3"], [1.0, 0.5, 2.0], "cat", {}),
    ("svd", ["a1", "a3"], [0.7, -0.4], "svd", {}),
    ("svd_rslora_first", ["a3", "a1"], [0.7, -0.4], "svd", {}),
    ("svd_rank3", ["a1", "a2", "a3"], [1.0, 0.5, -2.0], "svd", {"svd_rank": 3}),
    ("ties", ["a1", "a2"], [0.7, 0.4], "ties", {"density": 0.5}),
    ("ties_frequency", ["a1", "a2"], [0.7, -0.4], "ties", {"density": 0.3, "majority_sign_method": "frequency"}),
    ("ties_svd", ["a1", "a3"], [0.7, 0.4], "ties_svd", {"density": 0.5}),
    ("magnitude_prune", ["a1", "a2"], [0.7, 0.4], "magnitude_prune", {"density": 0.5}),
    ("magnitude_prune_svd", ["a1", "a3"], [0.7, 0.4], "magnitude_prune_svd", {"density": 0.4, "svd_rank": 6}),
    ("dare_linear", ["a1", "a2"], [0.7, 0.4], "dare_linear", {"density": 0.5}),
    ("dare_ties", ["a1", "a2"], [0.7, -0.4], "dare_ties", {"density": 0.5}),
    ("dare_linear_svd", ["a1", "a3"], [0.7, 0.4], "dare_linear_svd", {"density": 0.5}),
    ("dare_ties_svd", ["a1", "a3"], [0.7, 0.4], "dare_ties_svd", {"density": 0.5, "majority_sign_method": "frequency"}),
]


def base():
    return AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32)


def sort_targets(path):
    # PEFT saves a set of target modules in hash order; sorted, the bytes repeat.
    cfg = json.load(open(path))
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    json.dump(cfg, open(path, "w"), indent=2, sort_keys=True)


def make_adapters():
    for name, spec in ADAPTERS.items():
        spec = dict(spec)
        seed = spec.pop("seed")
        torch.manual_seed(seed)
        m = get_peft_model(base(), LoraConfig(lora_dropout=0.0, task_type="CAUSAL_LM", **spec))
        with torch.no_grad():
            for n, p in m.named_parameters():
                if "lora_" in n:
                    p.copy_(torch.randn_like(p) * 0.2)
        d = os.path.join(OUT, name)
        m.save_pretrained(d)
        cfgp = os.path.join(d, "adapter_config.json")
        cfg = json.load(open(cfgp))
        cfg["base_model_name_or_path"] = "tiny-llama-fp32"
        json.dump(cfg, open(cfgp, "w"), indent=2, sort_keys=True)
        sort_targets(cfgp)
        if os.path.exists(os.path.join(d, "README.md")):
            os.remove(os.path.join(d, "README.md"))


def main():
    if os.path.exists(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    make_adapters()
    cases = []
    for name, adapters, weights, ctype, kw in CASES:
        torch.manual_seed(1234)
        m = PeftModel.from_pretrained(base(), os.path.join(OUT, adapters[0]), adapter_name=adapters[0])
        for a in adapters[1:]:
            m.load_adapter(os.path.join(OUT, a), adapter_name=a)
        m.add_weighted_adapter(adapters, weights, name, combination_type=ctype, **kw)
        d = os.path.join(OUT, "_tmp")
        m.save_pretrained(d, selected_adapters=[name])
        shutil.move(os.path.join(d, name), os.path.join(OUT, name))
        shutil.rmtree(d)
        if os.path.exists(os.path.join(OUT, name, "README.md")):
            os.remove(os.path.join(OUT, name, "README.md"))
        sort_targets(os.path.join(OUT, name, "adapter_config.json"))
        c = m.peft_config[name]
        tm = c.target_modules
        cases.append({
            "name": name, "adapters": adapters, "weights": weights, "combination_type": ctype,
            "svd_rank": kw.get("svd_rank"), "density": kw.get("density"),
            "majority_sign_method": kw.get("majority_sign_method", "total"),
            "r": c.r, "lora_alpha": c.lora_alpha, "use_rslora": c.use_rslora,
            "target_modules": sorted(tm) if not isinstance(tm, str) else tm,
        })
    import peft, transformers
    json.dump({"peft": peft.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
               "cases": cases}, open(os.path.join(OUT, "cases.json"), "w"), indent=2, sort_keys=True)
    print("wrote", OUT, len(cases), "cases")


if __name__ == "__main__":
    main()
