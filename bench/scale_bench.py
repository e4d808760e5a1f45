#!/usr/bin/env python3
"""The cost curve (issue 12): tokens/s, peak RSS and time to the first step of lora-train against model size,
sequence length and rank, on synthetic models of the published shapes (scripts/make-synthetic-model: seeded random
weights; throughput and memory do not depend on the weights' values, so these measure what the real models cost),
ours beside transformers + PEFT (+ bitsandbytes) from bench/peer.py where the peer fits in memory, alternating runs.

  bench/scale_bench.py --points qwen2.5-0.5b:qlora:1024:16,qwen2.5-7b:qlora:1024:16 [--peer] [--runs 1]
                       [--models-dir /work/scale] [--out bench/results/scale.json]

A point is SHAPE:VARIANT:SEQ:RANK with VARIANT qlora (our lora-quantize NF4 dir / the peer's --qlora) or lora
(the bf16 base, mmapped; the peer loads it in bf16). Batch 1, LoRA on all linear layers, --grad-checkpoint on both
sides, --max-steps STEPS (the last step is timed; the first includes paging the weights in). Models are made (and
quantized) on first use under --models-dir. Results merge into --out by point; bench/plot_scale.py draws them.
Never run it while a build or anything else runs: only same-run ratios count.
"""
import argparse, json, os, pathlib, subprocess, sys, tempfile, time

root = pathlib.Path(__file__).resolve().parent.parent
ap = argparse.ArgumentParser()
ap.add_argument("--points", required=True)
ap.add_argument("--models-dir", default=str(root / "bench/.models"))
ap.add_argument("--out", default=str(root / "bench/results/scale.json"))
ap.add_argument("--bin", default=str(root / ".build/release"))
ap.add_argument("--python", default=str(root / ".venv/bin/python"))
ap.add_argument("--steps", type=int, default=2)
ap.add_argument("--runs", type=int, default=1)
ap.add_argument("--peer", action="store_true", help="also run bench/peer.py, alternating with ours")
ap.add_argument("--peer-timeout", type=int, default=3600)
a = ap.parse_args()
data = root / "bench/corpus.jsonl"
work = pathlib.Path(tempfile.mkdtemp(prefix="scale-bench-"))


def model_dir(shape, variant):
    base = pathlib.Path(a.models_dir) / shape
    if not (base / "config.json").exists():
        subprocess.run([sys.executable, str(root / "scripts/make-synthetic-model"), shape, str(base)], check=True,
                       stdout=subprocess.DEVNULL)
    if variant == "lora":
        return base
    q = pathlib.Path(a.models_dir) / (shape + "-nf4")
    if not (q / "config.json").exists():
        subprocess.run([f"{a.bin}/lora-quantize", str(base), "-o", str(q), "-q"], check=True, stdout=subprocess.DEVNULL)
    return q


def params(cfg):
    """Linear parameters (the FLOPs of a token: 2 per parameter forward, 2 more for the activation gradient)."""
    d, i, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    hd = cfg.get("head_dim") or d // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    return L * (d * (q + 2 * kv) + q * d + 3 * d * i) + cfg["vocab_size"] * d


def ours(shape, variant, seq, rank):
    m = model_dir(shape, variant)
    ad = work / f"a-{shape}-{variant}-{seq}-{rank}"
    subprocess.run([f"{a.bin}/lora-init", str(m), "-o", str(ad), "--rank", str(rank), "--alpha", str(2 * rank),
                    "--targets", "all-linear", "--dropout", "0", "-q", "--force"], check=True, capture_output=True)
    cmd = ["/usr/bin/time", "-f", "%M", f"{a.bin}/lora-train", str(m), str(ad), "--data", str(data), "-o",
           str(work / f"o-{time.time()}"), "--max-steps", str(a.steps), "--seq-len", str(seq), "--batch-size", "1",
           "--grad-checkpoint", "--log-every", "1", "-q", "--save-every", "0"]
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    steps, first_line_at = [], None
    for line in p.stdout:
        if first_line_at is None:
            first_line_at = time.time() - t0
        steps.append(json.loads(line))
    err = p.stderr.read()
    p.wait()
    if p.returncode != 0:
        return {"error": err.strip().splitlines()[-1] if err.strip() else f"exit {p.returncode}"}
    st = [s for s in steps if "step" in s and not s.get("final")]
    return {"tokens_per_s": st[-1]["tokens_per_s"], "peak_rss_mb": round(int(err.strip().splitlines()[-1]) / 1024),
            # process start to training start: the first step line's arrival less the step's own time
            "startup_s": round(first_line_at - st[0]["elapsed_s"], 2), "first_step_s": round(first_line_at, 2)}


def peer(shape, variant, seq, rank):
    m = model_dir(shape, "lora")
    cmd = ["/usr/bin/time", "-f", "%M", a.python, str(root / "bench/peer.py"), str(m), str(data), "--bf16", "--seq", str(seq),
           "--batch", "1", "--rank", str(rank), "--targets", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
           "--steps", str(max(1, a.steps - 1)), "--warmup", "1", "--eval-batches", "0", "--grad-checkpoint"] + (["--qlora"] if variant == "qlora" else [])
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.peer_timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {a.peer_timeout} s"}
    if p.returncode != 0:
        tail = p.stderr.strip().splitlines()
        oom = p.returncode in (-9, 137) or "Killed" in p.stderr
        return {"error": "out of memory" if oom else (tail[-2] if len(tail) > 1 else f"exit {p.returncode}")}
    r = json.loads(p.stdout.strip().splitlines()[-1])
    return {"tokens_per_s": r["train_tokens_per_s"], "peak_rss_mb": round(int(p.stderr.strip().splitlines()[-1]) / 1024),
            "first_step_s": r.get("first_step_s")}


out = pathlib.Path(a.out)
results = json.loads(out.read_text()) if out.exists() else {"note": __doc__.split("\n\n")[0], "points": {}}
for spec in a.points.split(","):
    shape, variant, seq, rank = spec.split(":")
    seq, rank = int(seq), int(rank)
    cfg = json.loads((model_dir(shape, "lora") / "config.json").read_text())
    runs = []
    for i in range(a.runs):
        r = {"ours": ours(shape, variant, seq, rank)}
        if a.peer:
            r["peer"] = peer(shape, variant, seq, rank)
        runs.append(r)
        print(f"{spec} run {i + 1}: {json.dumps(r)}", file=sys.stderr)
    med = lambda side, k: sorted(x[side][k] for x in runs if k in x.get(side, {}))[len(runs) // 2] if all(k in x.get(side, {}) for x in runs) else None
    point = {"shape": shape, "variant": variant, "seq": seq, "rank": rank, "batch": 1, "linear_params": params(cfg),
             "runs": runs, "ours_tokens_per_s": med("ours", "tokens_per_s"), "ours_peak_rss_mb": med("ours", "peak_rss_mb")}
    if point["ours_tokens_per_s"]:
        # 6 FLOPs per linear parameter and token: forward, activation gradient, and the checkpointed recompute.
        point["ours_gflops"] = round(point["ours_tokens_per_s"] * 6 * point["linear_params"] / 1e9, 1)
    if a.peer:
        point["peer_tokens_per_s"] = med("peer", "tokens_per_s")
        point["peer_peak_rss_mb"] = med("peer", "peak_rss_mb")
        if point["peer_tokens_per_s"] and point["ours_tokens_per_s"]:
            point["speed_ratio"] = round(point["ours_tokens_per_s"] / point["peer_tokens_per_s"], 3)
    results["points"][spec] = point
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
print(json.dumps(results["points"], indent=1))
