#!/usr/bin/env python3
"""Decoding speed of lora-generate against transformers' generate() on the demo model: greedy, one prompt
(chat template), exactly --new-tokens new tokens (EOS ignored on both sides), batch 1, KV cache on both.
Variants: full (our bf16 model; transformers loads it in fp32, the peer's compute dtype) and nf4 (our
lora-quantize output; transformers + bitsandbytes 4-bit with fp32 compute). Runs alternate; medians of
new tokens / decode seconds (prompt processing excluded on both sides: ours reports it separately,
transformers' is timed as a 1-token generate and subtracted). Prints one JSON object.

usage: .venv/bin/python bench/generate_bench.py [--runs 3] [--new-tokens 128] [--variants full,nf4]"""
import argparse, json, os, pathlib, statistics, subprocess, sys, tempfile, time
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

root = pathlib.Path(__file__).resolve().parent.parent
ap = argparse.ArgumentParser()
ap.add_argument("--model", default=str(root / "models/smollm2-135m-instruct"))
ap.add_argument("--bin", default=str(root / ".build/release"))
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--new-tokens", type=int, default=128)
ap.add_argument("--variants", default="full,nf4")
a = ap.parse_args()
prompt = "Write a long story about a lighthouse keeper who finds a map in a bottle."

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
torch.set_num_threads(os.cpu_count())
tok = AutoTokenizer.from_pretrained(a.model)
ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
x = torch.tensor([ids])

def theirs(model):
    kw = dict(do_sample=False, attention_mask=torch.ones_like(x), pad_token_id=tok.eos_token_id)
    with torch.no_grad():
        t0 = time.perf_counter(); model.generate(x, max_new_tokens=1, min_new_tokens=1, **kw); t1 = time.perf_counter()
        out = model.generate(x, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, **kw); t2 = time.perf_counter()
    n = out.shape[1] - len(ids)
    return (n - 1) / ((t2 - t1) - (t1 - t0))

def ours(model_dir):
    p = subprocess.run([f"{a.bin}/lora-generate", model_dir, "--max-tokens", str(a.new_tokens),
                        "--ignore-eos", "--jsonl", "-"], input=json.dumps({"prompt": prompt}) + "\n",
                       capture_output=True, text=True, check=True)
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["tokens"] == a.new_tokens, r
    return r["tokens_per_s"]

work = pathlib.Path(tempfile.mkdtemp(prefix="gen-bench-"))
res = {"model": a.model, "new_tokens": a.new_tokens, "prompt_tokens": len(ids), "runs": a.runs, "threads": os.cpu_count(), "variants": {}}
for v in a.variants.split(","):
    if v == "nf4":
        subprocess.run([f"{a.bin}/lora-quantize", a.model, "-o", str(work / "nf4"), "-q"], check=True, stdout=subprocess.DEVNULL)
        hf = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32)).eval()
        mdir = str(work / "nf4")
    else:
        hf = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
        mdir = a.model
    theirs(hf)  # warm-up
    t, o = [], []
    for i in range(a.runs):
        t.append(round(theirs(hf), 1)); o.append(ours(mdir))
        print(f"{v} run {i + 1}: transformers {t[-1]} tok/s | ours {o[-1]} tok/s", file=sys.stderr)
    res["variants"][v] = {"transformers_tokens_per_s": t, "ours_tokens_per_s": o, "transformers_median": statistics.median(t),
                          "ours_median": statistics.median(o), "ratio": round(statistics.median(o) / statistics.median(t), 2)}
    del hf
print(json.dumps(res, indent=1))
