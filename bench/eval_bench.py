#!/usr/bin/env python3
"""Eval throughput and memory of lora-eval against the reference peer (transformers + PEFT, ../shared/peer/peer_peft.py)
on the same model, data and shapes (batch 4 x seq 256), runs alternating, medians and ratios; fp32/bf16 model and
its NF4 version (peer with --qlora). Prints one JSON object.

usage: bench/eval_bench.py [--model models/smollm2-135m-instruct] [--runs 3] [--python .venv/bin/python]
Needs: a release build (swift build -c release), and a venv with torch transformers peft bitsandbytes for the peer."""
import argparse, json, os, pathlib, resource, statistics, subprocess, sys, tempfile, time

root = pathlib.Path(__file__).resolve().parent.parent
ap = argparse.ArgumentParser()
ap.add_argument("--model", default=str(root / "models/smollm2-135m-instruct"))
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--python", default=str(root / ".venv/bin/python"))
ap.add_argument("--peer", default=str(root / "bench/peer.py"), help="bench/peer.py (ours) or ../shared/peer/peer_peft.py")
ap.add_argument("--bin", default=str(root / ".build/release"))
ap.add_argument("--compute-dtype", default="auto", choices=["auto", "bf16", "f32"],
                help="ours: --compute-dtype (auto: bf16 on CPUs with AVX512-BF16/AMX-BF16, else f32; bf16 without them needs LORA_BF16_EMULATE=1)")
ap.add_argument("--variants", default="full,nf4")
ap.add_argument("--peer-dtype", default="fp32", choices=["fp32", "bf16"],
                help="how the peer loads the base (bf16 is the strongest peer on CPUs with AVX512-BF16; on AVX2-only CPUs fp32 is)")
a = ap.parse_args()

work = pathlib.Path(tempfile.mkdtemp(prefix="eval-bench-"))
# One long text: windows of 256 tokens, as the peer's consecutive windows of one token stream.
texts = [json.loads(l)["text"] for l in open(root / "bench/corpus.jsonl")]
data = work / "corpus-one.jsonl"
data.write_text(json.dumps({"text": "\n\n".join(texts)}) + "\n")

def run(cmd, env=None):
    """Runs cmd, returns (stdout, peak RSS of the child in MB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    p = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    rss_kb = int(p.stderr.strip().splitlines()[-1])
    return p.stdout, rss_kb / 1024

nf4 = work / "nf4"
results = {"model": a.model, "runs": a.runs, "seq": 256, "batch": 4, "variants": {}}
for variant in a.variants.split(","):
    model = a.model
    if variant == "nf4":
        subprocess.run([f"{a.bin}/lora-quantize", a.model, "-o", str(nf4), "-q", "--force"], check=True, capture_output=True)
        model = str(nf4)
    peer_tps, peer_rss, ours_tps, ours_rss, ours_ppl, peer_ppl = [], [], [], [], [], []
    for i in range(a.runs):
        out, rss = run([a.python, a.peer, a.model, str(data), "--steps", "1", "--seq", "256", "--batch", "4"]
                       + (["--bf16"] if a.peer_dtype == "bf16" else []) + (["--qlora"] if variant == "nf4" else []))
        r = json.loads(out.strip().splitlines()[-1])
        peer_tps.append(r["eval_tokens_per_s"]); peer_rss.append(r["peak_rss_mb"]); peer_ppl.append(r["eval_ppl"])
        out, rss = run([f"{a.bin}/lora-eval", model, "--data", str(data), "--seq-len", "256", "--batch-size", "4", "-q",
                        "--compute-dtype", a.compute_dtype])
        r = json.loads(out)
        ours_tps.append(r["tokens_per_s"]); ours_rss.append(rss); ours_ppl.append(r["perplexity"])
        print(f"{variant} run {i + 1}: peer {peer_tps[-1]} tok/s {peer_rss[-1]:.0f} MB | ours {ours_tps[-1]} tok/s {ours_rss[-1]:.0f} MB",
              file=sys.stderr)
    med = statistics.median
    results["variants"][variant] = {
        "peer_eval_tokens_per_s": peer_tps, "ours_eval_tokens_per_s": ours_tps,
        "peer_median": med(peer_tps), "ours_median": med(ours_tps), "speed_ratio": round(med(ours_tps) / med(peer_tps), 3),
        "peer_peak_rss_mb": med(peer_rss), "ours_peak_rss_mb": round(med(ours_rss), 1),
        "rss_ratio": round(med(ours_rss) / med(peer_rss), 3),
        "ours_compute_dtype": r.get("compute_dtype"), "peer_dtype": a.peer_dtype,
        "ours_perplexity": ours_ppl[0], "peer_eval_ppl_3_batches": peer_ppl[0],
    }
print(json.dumps(results, indent=1))
