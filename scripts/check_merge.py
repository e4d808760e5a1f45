#!/usr/bin/env python3
"""transformers loads lora-merge's output unchanged, and the merged model agrees with PEFT's base + adapter.

    .venv/bin/python scripts/check_merge.py [--model models/smollm2-135m-instruct] [--bin .build/release]

Makes an adapter with non-zero B (lora-init all-linear r 8, then 4 steps of lora-train at lr 1e-3 on
bench/corpus.jsonl), merges it with `lora-merge --dtype float32` and with the default dtype (bf16), then:
  fp32: AutoModelForCausalLM(merged fp32) logits vs PeftModel(base in fp32, adapter) logits on 4 prompts
        (relative max difference, bound 1e-5);
  bf16: every merged tensor vs PEFT's merge_and_unload() of the fp32 base rounded once to bf16 (what
        lora-merge computes; where W and the delta cancel, the fp32 products' last bits show as a few ulps of
        a near-zero result, so the bound is on the absolute difference: 1e-6), and vs PEFT's merge
        of the bf16 base (reported: PEFT rounds the delta to bf16 before adding it in bf16, which loses
        ulps where W and the delta cancel);
  load: transformers reports no missing / unexpected keys for either dir.
Prints one JSON object; exits 1 when a bound fails.
"""
import argparse, json, os, pathlib, subprocess, sys, tempfile
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import PeftModel
from safetensors.torch import load_file

root = pathlib.Path(__file__).resolve().parent.parent
ap = argparse.ArgumentParser()
ap.add_argument("--model", default=str(root / "models/smollm2-135m-instruct"))
ap.add_argument("--bin", default=str(root / ".build/release"))
a = ap.parse_args()
work = pathlib.Path(tempfile.mkdtemp(prefix="check-merge-"))
def run(*cmd):
    subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.DEVNULL)

run(f"{a.bin}/lora-init", a.model, "-o", work / "init", "--rank", "8", "--targets", "all-linear", "-q")
run(f"{a.bin}/lora-train", a.model, work / "init", "--data", root / "bench/corpus.jsonl", "-o", work / "trained",
    "--max-steps", "4", "--lr", "1e-3", "--seq-len", "64", "--batch-size", "2", "-q")
run(f"{a.bin}/lora-merge", a.model, "--adapter", work / "trained", "-o", work / "m32", "--dtype", "float32", "-q")
run(f"{a.bin}/lora-merge", a.model, "--adapter", work / "trained", "-o", work / "m16", "-q")

tok = AutoTokenizer.from_pretrained(a.model)
prompts = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a land far away,", "LoRA adapters are"]
batch = [torch.tensor([tok(p)["input_ids"]]) for p in prompts]
res = {}

m32, info = AutoModelForCausalLM.from_pretrained(work / "m32", dtype=torch.float32, output_loading_info=True)
res["load_fp32"] = {k: len(v) for k, v in info.items() if isinstance(v, (list, set))}
base = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
peft = PeftModel.from_pretrained(base, work / "trained").eval()
worst = 0.0
with torch.no_grad():
    for ids in batch:
        x, y = m32(ids).logits, peft(ids).logits
        worst = max(worst, ((x - y).abs().max() / y.abs().max()).item())
res["fp32_logits_max_rel_diff"] = worst

m16, info = AutoModelForCausalLM.from_pretrained(work / "m16", output_loading_info=True)
res["load_bf16"] = {k: len(v) for k, v in info.items() if isinstance(v, (list, set))}
res["bf16_dtype"] = str(m16.dtype)
ours = load_file(str(work / "m16/model.safetensors"))
def compare(refsd):
    diff = max_ulp = 0
    max_abs = 0.0
    for k, v in ours.items():
        r = refsd[k].to(torch.bfloat16)
        ne = v.view(torch.int16) != r.view(torch.int16)
        diff += int(ne.sum())
        if ne.any():
            max_ulp = max(max_ulp, int((v.view(torch.int16).int() - r.view(torch.int16).int()).abs().max()))
            max_abs = max(max_abs, (v.float() - r.float()).abs().max().item())
    return diff, max_ulp, max_abs
res["bf16_elements"] = sum(v.numel() for v in ours.values())
# PEFT's own bf16 merge (delta rounded to bf16, then added in bf16), and PEFT's fp32 merge rounded once to bf16.
peft16 = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16), work / "trained").merge_and_unload()
res["bf16_vs_peft_bf16_merge"] = dict(zip(["elements_differing", "max_ulp", "max_abs_diff"], compare(peft16.state_dict())))
peft32 = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32), work / "trained").merge_and_unload()
res["bf16_vs_peft_fp32_merge_rounded_once"] = dict(zip(["elements_differing", "max_ulp", "max_abs_diff"], compare(peft32.state_dict())))
max_abs = res["bf16_vs_peft_fp32_merge_rounded_once"]["max_abs_diff"]
ok = worst < 1e-5 and all(v == 0 for v in list(res["load_fp32"].values()) + list(res["load_bf16"].values())) and max_abs <= 1e-6
res["ok"] = ok
print(json.dumps(res, indent=1))
sys.exit(0 if ok else 1)
