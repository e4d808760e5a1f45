#!/usr/bin/env python3
"""The cost curve (issue 12): tokens/s, peak RSS and time to the first step of lora-train, lora-eval and
lora-generate against model size, sequence length and rank, on synthetic models of the published shapes
(scripts/make-synthetic-model: seeded random weights; throughput and memory do not depend on the weights' values,
so these measure what the real models cost), ours beside transformers + PEFT (+ bitsandbytes) from bench/peer.py
where the peer fits in memory and time, alternating runs, medians.

  bench/scale_bench.py --points qwen2.5-0.5b:qlora:1024:16,llama-3.2-1b:eval:1024:0 [--peer] [--runs 1]
                       [--models-dir bench/.models] [--out bench/results/scale.json]

A point is SHAPE:VARIANT:SEQ:RANK. VARIANT:
  qlora     lora-train on our lora-quantize NF4 dir (the peer: bitsandbytes NF4, double quant, bf16 compute)
  lora      lora-train on the bf16 base, mmapped (the peer loads it in bf16)
  eval      lora-eval of the bf16 base, windows of SEQ tokens (RANK ignored; the peer: forward, no grad);
            the model's files are read once first, so its pages are in the cache as the peer's weights are in
            its memory when its timer starts (the same for generate)
  generate  lora-generate from the bf16 base, SEQ new tokens after a 16-token prompt, greedy, EOS ignored
            (the peer: transformers' generate() with its KV cache; prompt processing excluded on both sides)
Training: batch 1, LoRA r RANK / alpha 2r on all linear layers, --grad-checkpoint on both sides, --steps steps;
tokens/s is the last step's (the first includes paging the weights in; the peer times its steps after a
warm-up step). The data are the 16 rows of
bench/corpus.jsonl each joined with the others (about 9k tokens a row), so every sequence is SEQ tokens long.
Models are made (and quantized) on first use under --models-dir. Results merge into --out by point, each with
the date and the commit it was measured at;
bench/plot_scale.py draws them. Never run it while a build or anything else runs: only same-run ratios count.
"""
import argparse, json, os, pathlib, statistics, subprocess, sys, tempfile, time

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
    """(linear parameters of the layers, of the head): a token costs 2 FLOPs per parameter in each forward."""
    d, i, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    hd = cfg.get("head_dim") or d // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    return L * (d * (q + 2 * kv) + q * d + 3 * d * i), cfg["vocab_size"] * d


def flops_per_token(cfg, variant, seq):
    """FLOPs a token costs. Training with --grad-checkpoint: each layer's forward twice and its activation gradient
    (6 per parameter), the head forward and backward (4); causal attention 2·seq·q_dim per layer in a forward (QKᵀ
    and PV over seq/2 keys on average), 4 forwards' worth in training. Eval: one forward. Decoding: the
    forward of one token (the attention over its short context left out). LoRA's own FLOPs (r ≪ d) left out.
    These are the FLOPs of a standard checkpointed step, which the peer does (torch's checkpoint reruns the whole
    layer). Ours reruns a layer only up to its gate/up projection and not the last layer at all, about 9% fewer
    FLOPs, so its GFLOP/s is a throughput in the peer's units, not the arithmetic rate of the cores."""
    layers, head = params(cfg)
    L = cfg["num_hidden_layers"]
    qd = cfg["num_attention_heads"] * (cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"])
    attn = 2 * seq * qd * L
    if variant in ("qlora", "lora"):
        return 6 * layers + 4 * head + 4 * attn
    if variant == "eval":
        return 2 * (layers + head) + attn
    return 2 * (layers + head)


def long_data():
    """The training / eval rows: each corpus row followed by all the others (about 9k tokens), written once."""
    path = work / "long.jsonl"
    if not path.exists():
        texts = [json.loads(l)["text"] for l in data.read_text().splitlines() if l.strip()]
        path.write_text("".join(json.dumps({"text": " ".join(texts[i:] + texts[:i])}) + "\n" for i in range(len(texts))))
    return path


def eval_data(seq):
    """One text of about two SEQ-token windows (the demo tokenizer: about 4.6 characters a token on this prose)."""
    path = work / f"eval-{seq}.jsonl"
    text = " ".join(json.loads(l)["text"] for l in data.read_text().splitlines() if l.strip())
    while len(text) < 10 * seq:
        text = text + " " + text
    path.write_text(json.dumps({"text": text[:int(9.4 * seq)]}) + "\n")
    return path


def timed(cmd, **kw):
    """Runs cmd under /usr/bin/time: (CompletedProcess, peak RSS of the child in MB or None)."""
    p = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, **kw)
    tail = p.stderr.strip().splitlines()
    rss = round(int(tail[-1]) / 1024) if tail and tail[-1].isdigit() else None
    return p, rss


def failure(p):
    tail = [l for l in p.stderr.strip().splitlines() if not l.strip().isdigit()]
    if p.returncode in (-9, 137) or "Killed" in p.stderr or "out of memory" in p.stderr.lower():
        return {"error": "out of memory"}
    errs = [l for l in tail if l.startswith("error:") or "Error" in l]
    return {"error": (errs[-1] if errs else (tail[-1] if tail else f"exit {p.returncode}"))[:300]}


def warm(model):
    """Reads the model's files once, so the page cache holds them: lora-eval and lora-generate map the weights
    and time from the first token, where the peer has read them into its own memory before its timer starts
    (after the peer's run a large model's pages are gone from the cache, so without this ours would be timed
    reading them from disk)."""
    for f in sorted(pathlib.Path(model).glob("*.safetensors")):
        with open(f, "rb") as fh:
            while fh.read(1 << 24):
                pass


def ours(shape, variant, seq, rank):
    if variant in ("eval", "generate"):
        warm(model_dir(shape, "lora"))
    if variant == "eval":
        p, rss = timed([f"{a.bin}/lora-eval", str(model_dir(shape, "lora")), "--data", str(eval_data(seq)), "--seq-len",
                        str(seq), "--batch-size", "1", "-q"])
        if p.returncode != 0:
            return failure(p)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        return {"tokens_per_s": r["tokens_per_s"], "peak_rss_mb": rss}
    if variant == "generate":
        p, rss = timed([f"{a.bin}/lora-generate", str(model_dir(shape, "lora")), "--no-chat", "--max-tokens", str(seq),
                        "--ignore-eos", "--temperature", "0", "--jsonl", "-"], input=json.dumps({"prompt": PROMPT}) + "\n")
        if p.returncode != 0:
            return failure(p)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        return {"tokens_per_s": r["tokens_per_s"], "peak_rss_mb": rss}
    m = model_dir(shape, variant)
    ad = work / f"a-{shape}-{variant}-{seq}-{rank}"
    subprocess.run([f"{a.bin}/lora-init", str(m), "-o", str(ad), "--rank", str(rank), "--alpha", str(2 * rank),
                    "--targets", "all-linear", "--dropout", "0", "-q", "--force"], check=True, capture_output=True)
    cmd = ["/usr/bin/time", "-f", "%M", f"{a.bin}/lora-train", str(m), str(ad), "--data", str(long_data()), "-o",
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
        return failure(subprocess.CompletedProcess(cmd, p.returncode, "", err))
    st = [s for s in steps if "step" in s and not s.get("final")]
    # With --log-every 1 each step line's tokens_per_s is that step's own (scored tokens / the step's seconds).
    return {"tokens_per_s": st[-1]["tokens_per_s"], "peak_rss_mb": round(int(err.strip().splitlines()[-1]) / 1024),
            # process start to training start: the first step line's arrival less the step's own time
            "startup_s": round(first_line_at - st[0]["elapsed_s"], 2), "first_step_s": round(first_line_at, 2)}


PROMPT = "Write a long story about a lighthouse keeper who finds a map in a bottle."


def peer(shape, variant, seq, rank):
    m = model_dir(shape, "lora")
    cmd = [a.python, str(root / "bench/peer.py"), str(m)]
    if variant == "eval":
        cmd += [str(eval_data(seq)), "--bf16", "--seq", str(seq), "--batch", "1", "--no-train", "--eval-batches", "1"]
    elif variant == "generate":
        cmd += [str(data), "--bf16", "--no-train", "--eval-batches", "0", "--generate", str(seq), "--prompt", PROMPT]
    else:
        cmd += [str(long_data()), "--bf16", "--seq", str(seq), "--batch", "1", "--rank", str(rank), "--targets",
                "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "--steps", str(max(1, a.steps - 1)),
                "--warmup", "1", "--eval-batches", "0", "--grad-checkpoint"] + (["--qlora"] if variant == "qlora" else [])
    try:
        p, rss = timed(cmd, timeout=a.peer_timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {a.peer_timeout} s"}
    if p.returncode != 0:
        return failure(p)
    r = json.loads(p.stdout.strip().splitlines()[-1])
    key = {"eval": "eval_tokens_per_s", "generate": "generate_tokens_per_s"}.get(variant, "train_tokens_per_s")
    return {"tokens_per_s": r[key], "peak_rss_mb": rss, "first_step_s": r.get("first_step_s")}


out = pathlib.Path(a.out)
results = json.loads(out.read_text()) if out.exists() else {"points": {}}
results["note"] = __doc__.split("\n\n")[0]


def source_state():
    """The commit the tools were built from (+ "-dirty" with uncommitted changes), for each point's record."""
    git = lambda *args: subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


measured = {"date": time.strftime("%Y-%m-%d"), "commit": source_state()}
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
    med = lambda side, k: statistics.median(x[side][k] for x in runs) if all(x.get(side, {}).get(k) is not None for x in runs) else None
    point = {"shape": shape, "variant": variant, "seq": seq, "rank": rank, "batch": 1, "linear_params": sum(params(cfg)),
             "flops_per_token": flops_per_token(cfg, variant, seq),
             "runs": runs, "ours_tokens_per_s": med("ours", "tokens_per_s"), "ours_peak_rss_mb": med("ours", "peak_rss_mb"),
             "command": "bench/scale_bench.py --points " + spec + (" --peer" if a.peer else "") + f" --runs {a.runs} --steps {a.steps}",
             "measured": measured}
    if point["ours_tokens_per_s"]:
        point["ours_gflops"] = round(point["ours_tokens_per_s"] * point["flops_per_token"] / 1e9, 1)
    if variant in ("qlora", "lora"):
        point["ours_first_step_s"] = med("ours", "first_step_s")
        point["ours_startup_s"] = med("ours", "startup_s")
    if a.peer:
        point["peer_tokens_per_s"] = med("peer", "tokens_per_s")
        point["peer_peak_rss_mb"] = med("peer", "peak_rss_mb")
        errs = [x["peer"]["error"] for x in runs if "error" in x["peer"]]
        if errs:
            point["peer_error"] = errs[0]
        if point["peer_tokens_per_s"] and point["ours_tokens_per_s"]:
            point["speed_ratio"] = round(point["ours_tokens_per_s"] / point["peer_tokens_per_s"], 3)
            point["peer_gflops"] = round(point["peer_tokens_per_s"] * point["flops_per_token"] / 1e9, 1)
    results["points"][spec] = point
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
print(json.dumps(results["points"], indent=1))
