#!/usr/bin/env python3
"""Training throughput and memory of lora-train against the reference peer (transformers + PEFT [+ bitsandbytes],
../shared/peer/peer_peft.py) on the same model, data and shapes: batch 4 x seq 256, LoRA r 16 on q,k,v,o, AdamW,
no accumulation, runs alternating, medians and ratios. Variants: full (fp32 compute on the bf16 model), nf4 (QLoRA:
our lora-quantize output vs the peer's --qlora), and ours with --grad-checkpoint. Prints one JSON object.

usage: bench/train_bench.py [--model models/smollm2-135m-instruct] [--runs 3] [--steps 10]"""
import argparse, json, os, pathlib, re, statistics, subprocess, sys, tempfile

root = pathlib.Path(__file__).resolve().parent.parent
ap = argparse.ArgumentParser()
ap.add_argument("--model", default=str(root / "models/smollm2-135m-instruct"))
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--steps", type=int, default=10)
ap.add_argument("--python", default=str(root / ".venv/bin/python"))
ap.add_argument("--peer", default=str(root / "bench/peer.py"), help="bench/peer.py (ours) or ../shared/peer/peer_peft.py")
ap.add_argument("--bin", default=str(root / ".build/release"))
ap.add_argument("--compute-dtype", default="auto", choices=["auto", "bf16", "f32"],
                help="ours: --compute-dtype (auto: bf16 on CPUs with AVX512-BF16/AMX-BF16, else f32; bf16 without them needs LORA_BF16_EMULATE=1)")
ap.add_argument("--variants", default="full,full-d05,nf4,full-ckpt",
                help="full: dropout 0; full-d05: dropout 0.05 (the default) on both sides; nf4: QLoRA; full-ckpt: ours only")
ap.add_argument("--peer-dtype", default="fp32", choices=["fp32", "bf16"],
                help="how the peer loads the base (bf16 is the strongest peer on CPUs with AVX512-BF16; on AVX2-only CPUs fp32 is)")
a = ap.parse_args()

work = pathlib.Path(tempfile.mkdtemp(prefix="train-bench-"))
# Rows of >256 tokens, so every sequence is a full 256 (ours truncates; the peer cuts windows of one stream).
data = root / "bench/corpus.jsonl"

def run(cmd, env=None):
    p = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    run.stderr = p.stderr
    return p.stdout, int(p.stderr.strip().splitlines()[-1]) / 1024

def profile(stderr):
    """Our LORA_PROFILE=1 report: {section: {"seconds", "share", "gflops"}}."""
    out, on = {}, False
    for line in stderr.splitlines():
        if line.startswith("profile ("): on = True; continue
        m = re.match(r"\s+(.+?)\s+([0-9.]+)\s+([0-9.]+)%\s+(\d+)(?:\s+([0-9.]+) GFLOP/s)?$", line) if on else None
        if m: out[m.group(1)] = {"seconds": float(m.group(2)), "share": float(m.group(3)), "gflops": float(m.group(5)) if m.group(5) else None}
        elif on and not line.startswith("  "): on = False
    return out

nf4 = work / "nf4"
subprocess.run([f"{a.bin}/lora-quantize", a.model, "-o", str(nf4), "-q"], check=True, stdout=subprocess.DEVNULL)
results = {"model": a.model, "runs": a.runs, "steps": a.steps, "seq": 256, "batch": 4, "rank": 16, "targets": "q,k,v,o", "variants": {}}
for variant in a.variants.split(","):
    model = str(nf4) if variant == "nf4" else a.model
    dropout = "0.05" if variant.endswith("-d05") else "0"
    peer_tps, peer_rss, ours_tps, ours_rss, ours_step = [], [], [], [], []
    for i in range(a.runs):
        if variant != "full-ckpt":
            out, _ = run([a.python, a.peer, a.model, str(data), "--steps", str(a.steps), "--seq", "256", "--batch", "4",
                          "--rank", "16"] + (["--bf16"] if a.peer_dtype == "bf16" else []) + (["--qlora"] if variant == "nf4" else [])
                         + (["--dropout", dropout] if dropout != "0" else []))  # --dropout: bench/peer.py only
            r = json.loads(out.strip().splitlines()[-1])
            peer_tps.append(r["train_tokens_per_s"]); peer_rss.append(r["peak_rss_mb"])
        adapter = work / f"adapter-{variant}-{i}"
        subprocess.run([f"{a.bin}/lora-init", model, "-o", str(adapter), "--rank", "16", "--alpha", "32", "--dropout", dropout, "-q"],
                       check=True, capture_output=True)
        out, rss = run([f"{a.bin}/lora-train", model, str(adapter), "--data", str(data), "-o", str(work / f"out-{variant}-{i}"),
                        "--max-steps", str(a.steps + 1), "--seq-len", "256", "--batch-size", "4", "--log-every", "1", "-q",
                        "--compute-dtype", a.compute_dtype]
                       + (["--grad-checkpoint"] if variant == "full-ckpt" else []))
        lines = [json.loads(l) for l in out.strip().splitlines()]
        steps = [l for l in lines if "step" in l and not l.get("final")][1:]  # the first step is the warm-up, as the peer's
        ours_tps.append(statistics.median(s["tokens_per_s"] for s in steps))
        ours_step.append(round(1024 / ours_tps[-1], 3))
        ours_rss.append(rss)
        ours_dtype = lines[-1].get("compute_dtype")
        print(f"{variant} run {i + 1}: peer {peer_tps[-1] if peer_tps else '-'} tok/s | ours {ours_tps[-1]:.1f} tok/s {rss:.0f} MB",
              file=sys.stderr)
    # One more run of ours with LORA_PROFILE=1 (not timed: the profiler adds a lock per section) for the breakdown.
    run([f"{a.bin}/lora-train", model, str(adapter), "--data", str(data), "-o", str(work / f"prof-{variant}"), "--max-steps", "3",
         "--seq-len", "256", "--batch-size", "4", "-q", "--compute-dtype", a.compute_dtype]
        + (["--grad-checkpoint"] if variant == "full-ckpt" else []), env={**os.environ, "LORA_PROFILE": "1"})
    prof = profile(run.stderr)
    med = statistics.median
    v = {"ours_profile_3_steps": prof, "ours_train_tokens_per_s": ours_tps, "ours_median": med(ours_tps), "ours_step_s": med(ours_step),
         "ours_peak_rss_mb": round(med(ours_rss), 1), "ours_compute_dtype": ours_dtype, "peer_dtype": a.peer_dtype}
    if peer_tps:
        v.update({"peer_train_tokens_per_s": peer_tps, "peer_median": med(peer_tps), "speed_ratio": round(med(ours_tps) / med(peer_tps), 3),
                  "peer_peak_rss_mb": med(peer_rss), "rss_ratio": round(med(ours_rss) / med(peer_rss), 3)})
    results["variants"][variant] = v
print(json.dumps(results, indent=1))
