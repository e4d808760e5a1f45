#!/usr/bin/env python3
"""Check that lora-train agrees with PEFT + torch AdamW step by step (the issue's acceptance check):

    with the adapter made by lora-init loaded into PEFT, dropout 0 and the same batches in the same order,
    the first 20 step losses of ours and of PEFT + torch AdamW agree within 1e-3 relative.

usage: .venv/bin/python bench/check_train_agreement.py [--model models/smollm2-135m-instruct] [--variants bf16,nf4]
           [--bnb] [--steps 20] [--seq-len 128] [--batch-size 4] [--lr 1e-3] [--rank 16] [--tol 1e-3] [--threads 0]

Setup (the same for both sides):
  data     the first --batch-size rows of bench/corpus.jsonl with at least --seq-len tokens (~530 each), so every
           row is exactly --seq-len tokens after truncation and, with exactly --batch-size rows in the file, every
           step trains on the same batch (the order of rows inside a batch changes neither the mean loss nor the
           gradient, so lora-train's shuffle does not matter).
  adapter  `lora-init MODEL -o TMP/adapter-V --rank 16 --targets q_proj,k_proj,v_proj,o_proj --dropout 0 --seed 1`
           (kaiming A, B = 0, alpha = 2r).
  ours     `lora-train MODEL TMP/adapter-V --data DATA -o TMP/out-V --max-steps 20 --seq-len 128 --batch-size 4
           --lr 1e-3 --lr-schedule constant --warmup-steps 0 --dropout 0 --log-every 1 -q` (AdamW betas 0.9/0.999,
           eps 1e-8, weight decay 0, clip 1.0: its defaults).
  PEFT     PeftModel.from_pretrained(base, TMP/adapter-V, is_trainable=True) on an fp32 base (eager attention);
           ids = tokenizer(text)["input_ids"][:seq_len] (SmolLM2: no BOS, no EOS), labels = ids, loss = the model's
           (mean NLL of the shifted positions, 4 x 127; fp32 cross-entropy; --peft-loss fp64 takes it in float64
           instead); loss.backward(); clip_grad_norm_(lora params, 1.0);
           torch.optim.AdamW(lr, betas (0.9, 0.999), eps 1e-8, weight_decay 0).step(); constant lr.
Variants:
  bf16     MODEL as given; base = from_pretrained(MODEL, dtype=float32): bf16 weights upcast exactly, fp32 compute.
  nf4      `lora-quantize MODEL -o TMP/nf4` (NF4, blocksize 64, double quant); lora-train and lora-init run on TMP/nf4.
           PEFT base: an fp32 Llama whose Linear weights are the exact fp32 dequantization of TMP/nf4
           (code[nibble] * absmax, absmax = nested_quant_map[idx] * nested_absmax[i // 256] + offset, all fp32),
           cross-checked bit for bit against bitsandbytes.functional.dequantize_4bit(fp32 out). Our engine
           dequantizes NF4 exactly to fp32 the same way.
  nf4-bnb  (--bnb, information only, never gating) TMP/nf4 loaded by transformers + bitsandbytes as is (Linear4bit
           with the compute dtype recorded in the file, bfloat16 by lora-quantize's default) and the same adapter:
           the native QLoRA path, with the non-quantized tensors (loaded as bf16) upcast to fp32 as
           prepare_model_for_kbit_training does. In training mode Linear4bit dequantizes to fp32, casts the weight and the input to
           the compute dtype and multiplies there, so this path runs its Linear layers in bf16.
  nf4-bnb-fp32  (--bnb, information only) the same with every Linear4bit's compute dtype set to float32 and its
           quant_state.dtype set to float32 (MatMul4Bit.backward dequantizes to quant_state.dtype, the checkpoint's
           bfloat16, before casting to fp32: left alone, the forward is exact but the input gradients use
           bf16-rounded weights, ~4e-4 relative in the step-1 grad_norm). This is bitsandbytes' own fp32
           dequantization end to end, so it should agree with ours as closely as nf4 does.

Gates (per gating variant): every step's |loss_ours - loss_peft| / loss_peft < --tol, the same lr at every step, the
expected number of steps / examples / truncated rows. Reported, not gating: grad_norm relative differences, the
loss computed from the fp32 logits in fp64 (lora-train's cross-entropy sums in Double), the final adapters' weight
differences, wall time per step of both (information, not a benchmark: both sides share the same cores).
Precision notes (measured on SmolLM2-135M, step 1, seq 128): lora-train's loss equals the fp64 loss of the fp32
logits to ~1e-7 relative, while transformers' fp32 cross-entropy reads ~1.8e-6 relative low; and the fp32
cross-entropy's backward puts ~1e-4 relative (Frobenius) error into the lora_B gradients against an fp64 reference,
where lora-train is within 6e-6 and torch fp32 with an fp64 loss within 3.5e-6. That 1e-4 is the seed of the
growing (still << 1e-3) loss difference over 20 steps with --peft-loss hf.
Prints one JSON object on stdout; exits 1 when a gate fails, 2 on a usage or setup error. Notes go to stderr.
"""

import argparse
import glob
import json
import math
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
warnings.filterwarnings("ignore")

import torch  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGETS = "q_proj,k_proj,v_proj,o_proj"


def note(*a):
    print(*a, file=sys.stderr, flush=True)


def die(msg, code=2):
    note(f"error: {msg}")
    sys.exit(code)


def run(cmd):
    t0 = time.time()
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if p.returncode != 0:
        die(f"{' '.join(map(str, cmd))} exited {p.returncode}:\n{p.stderr[-3000:]}")
    return p.stdout, time.time() - t0


def rel(a, b):
    return abs(a - b) / abs(b) if b != 0 else (0.0 if a == b else math.inf)


# ----------------------------------------------------------------------------------------------
# Data


def make_data(tok, corpus, n, seq_len, path):
    rows, ids = [], []
    for line in open(corpus):
        text = json.loads(line)["text"]
        t = tok(text)["input_ids"]
        if len(t) >= seq_len:
            rows.append(text)
            ids.append(t[:seq_len])
        if len(rows) == n:
            break
    if len(rows) < n:
        die(f"{corpus} has only {len(rows)} rows of >= {seq_len} tokens; need {n}")
    with open(path, "w") as f:
        for text in rows:
            f.write(json.dumps({"text": text}) + "\n")
    return torch.tensor(ids, dtype=torch.long)


# ----------------------------------------------------------------------------------------------
# Bases


def load_fp32(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")


def nf4_fp32_state_dict(model_dir):
    """fp32 state dict from a bitsandbytes 4-bit safetensors folder: exact fp32 dequantization."""
    from safetensors import safe_open

    raw = {}
    for f in sorted(glob.glob(os.path.join(model_dir, "*.safetensors"))):
        with safe_open(f, "pt") as h:
            for k in h.keys():
                raw[k] = h.get_tensor(k)
    quantized = {}
    for qk in [k for k in raw if ".quant_state.bitsandbytes__" in k]:
        quantized[qk[: qk.index(".quant_state.")]] = json.loads(bytes(raw[qk].tolist()).decode())
    sd = {}
    for k, v in raw.items():
        if k in quantized or any(k.startswith(n + ".") for n in quantized):
            continue
        sd[k] = v.float()
    for name, qs in quantized.items():
        if qs["quant_type"] != "nf4":
            die(f"{name}: quant_type {qs['quant_type']}, expected nf4")
        numel = math.prod(qs["shape"])
        packed = raw[name].reshape(-1)
        codes = torch.stack([packed >> 4, packed & 15], 1).reshape(-1)[:numel].long()
        qmap = raw[name + ".quant_map"].float()
        if name + ".nested_absmax" in raw:
            idx = raw[name + ".absmax"].long()
            nab = raw[name + ".nested_absmax"].float()
            nqm = raw[name + ".nested_quant_map"].float()
            scale = nab.repeat_interleave(qs.get("nested_blocksize", 256))[: idx.numel()]
            absmax = nqm[idx] * scale  # fp32 product
            absmax = absmax + torch.tensor(qs["nested_offset"], dtype=torch.float32)  # fp32 sum
        else:
            absmax = raw[name + ".absmax"].float()
        w = qmap[codes] * absmax.repeat_interleave(qs["blocksize"])[:numel]
        sd[name] = w.reshape(qs["shape"])
    return sd, raw, quantized


def bnb_crosscheck(raw, quantized, sd):
    import bitsandbytes.functional as F

    worst, mismatched = 0.0, 0
    for name in quantized:
        sub = {k[len(name) + 1:]: v for k, v in raw.items() if k.startswith(name + ".")}
        qs = F.QuantState.from_dict(sub, device=torch.device("cpu"))
        qs.dtype = torch.float32
        ref = F.dequantize_4bit(raw[name], qs).reshape(sd[name].shape)
        worst = max(worst, (ref - sd[name]).abs().max().item())
        mismatched += int(not torch.equal(ref, sd[name]))
    return {"tensors": len(quantized), "not_bit_identical": mismatched, "max_abs_diff": worst}


def load_nf4_exact(model_dir):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(model_dir)
    if hasattr(cfg, "quantization_config"):
        delattr(cfg, "quantization_config")
    sd, raw, quantized = nf4_fp32_state_dict(model_dir)
    check = bnb_crosscheck(raw, quantized, sd)
    m = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation="eager")
    missing, unexpected = m.load_state_dict(sd, strict=False)
    tied = getattr(cfg, "tie_word_embeddings", False)
    bad = [k for k in missing if not (tied and k == "lm_head.weight")]
    if bad or unexpected:
        die(f"exact-dequant model: missing {bad}, unexpected {unexpected}")
    if tied:
        m.tie_weights()
        assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
    assert all(p.dtype == torch.float32 for p in m.parameters())
    return m, check


def load_nf4_bnb(model_dir, force_fp32=False):
    """TMP/nf4 through transformers + bitsandbytes (Linear4bit). force_fp32: set every Linear4bit's compute dtype
    to float32 (training mode then dequantizes to fp32 and multiplies in fp32)."""
    import bitsandbytes as bnb
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager",
                                             device_map="cpu")
    lin = [mod for mod in m.modules() if isinstance(mod, bnb.nn.Linear4bit)]
    loaded = sorted({str(p.dtype).replace("torch.", "") for p in m.parameters()})
    # A pre-quantized checkpoint keeps its non-quantized tensors (embeddings, norms) in the checkpoint dtype (bf16)
    # whatever dtype= says; upcast them to fp32 as prepare_model_for_kbit_training does (the QLoRA recipe).
    for p in m.parameters():
        if p.dtype in (torch.float16, torch.bfloat16) and not isinstance(p, bnb.nn.Params4bit):
            p.data = p.data.float()
    if force_fp32:
        for mod in lin:
            mod.compute_dtype = torch.float32
            mod.compute_type_is_set = True
            # MatMul4Bit.backward dequantizes to quant_state.dtype (the checkpoint's dtype, bfloat16) before
            # casting to fp32, so the input gradient would use bf16-rounded weights; dequantize to fp32 instead.
            mod.weight.quant_state.dtype = torch.float32
    qc = json.load(open(os.path.join(model_dir, "config.json"))).get("quantization_config", {})
    info = {"linear4bit_modules": len(lin), "file_bnb_4bit_compute_dtype": qc.get("bnb_4bit_compute_dtype"),
            "compute_dtypes": sorted({str(mod.compute_dtype).replace("torch.", "") for mod in lin}),
            "backward_dequant_dtypes": sorted({str(mod.weight.quant_state.dtype).replace("torch.", "") for mod in lin}),
            "param_dtypes_as_loaded": loaded,
            "param_dtypes": sorted({str(p.dtype).replace("torch.", "") for p in m.parameters()}),
            "non_quantized_params": "upcast to float32 (as prepare_model_for_kbit_training)"}
    return m, info


# ----------------------------------------------------------------------------------------------
# PEFT side


def peft_train(base, adapter_dir, ids, a):
    from peft import PeftModel, get_peft_model_state_dict
    from safetensors.torch import load_file

    for p in base.parameters():
        p.requires_grad_(False)
    model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=True)
    cfg = model.peft_config["default"]
    if cfg.lora_dropout != 0:
        die(f"adapter lora_dropout is {cfg.lora_dropout}, expected 0")
    # The adapter file's tensors must be exactly what PEFT loaded.
    ref = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    got = get_peft_model_state_dict(model)
    if set(ref) != set(got):
        die(f"adapter keys differ from PEFT's: {sorted(set(ref) ^ set(got))[:6]}")
    for k, v in ref.items():
        if not torch.equal(v.float(), got[k].float()):
            die(f"PEFT loaded {k} differently from the adapter file")
    params = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not names or not all(".lora_A." in n or ".lora_B." in n for n in names):
        die(f"unexpected trainable parameters: {names[:6]}")
    model.train()
    opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    att = torch.ones_like(ids)
    rec = {"losses": [], "losses_fp64": [], "grad_norms": [], "lrs": [], "step_s": []}
    for step in range(a.steps):
        t0 = time.perf_counter()
        if a.peft_loss == "hf":
            out = model(input_ids=ids, attention_mask=att, labels=ids, use_cache=False)
            loss = out.loss
        else:  # fp64: cross-entropy of the fp32 logits taken in float64 (its gradient flows back through the cast)
            out = model(input_ids=ids, attention_mask=att, use_cache=False)
            lg64 = out.logits[:, :-1].double()
            loss = torch.nn.functional.cross_entropy(lg64.reshape(-1, lg64.shape[-1]), ids[:, 1:].reshape(-1))
            del lg64
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
        lr = opt.param_groups[0]["lr"]
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        with torch.no_grad():  # the exact loss of this forward: fp64 log-softmax of the fp32 logits (not timed)
            lg = out.logits[:, :-1].double()
            nll = -torch.log_softmax(lg, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1))
            loss64 = nll.mean().item()
        rec["losses"].append(loss.item())
        rec["losses_fp64"].append(loss64)
        rec["grad_norms"].append(gn.item())
        rec["lrs"].append(lr)
        rec["step_s"].append(round(dt, 4))
        note(f"  peft step {step + 1}: loss {loss.item():.6f} grad_norm {gn.item():.6f} ({dt:.2f} s)")
        del out, loss, lg, nll
    rec["trainable_params"] = sum(p.numel() for p in params)
    rec["median_step_s"] = round(statistics.median(rec["step_s"][1:] or rec["step_s"]), 4)
    final = {k: v.detach().float().clone() for k, v in get_peft_model_state_dict(model).items()}
    return rec, final


# ----------------------------------------------------------------------------------------------
# Ours


def ours_train(a, model_dir, adapter_dir, data, out_dir):
    cmd = [a.bin / "lora-train", model_dir, adapter_dir, "--data", data, "-o", out_dir,
           "--max-steps", a.steps, "--seq-len", a.seq_len, "--batch-size", a.batch_size, "--lr", a.lr,
           "--lr-schedule", "constant", "--warmup-steps", 0, "--dropout", 0, "--log-every", 1,
           "--threads", a.threads, "-q"]
    stdout, wall = run(cmd)
    lines = [json.loads(l) for l in stdout.strip().splitlines() if l.strip()]
    steps = [l for l in lines if "step" in l and not l.get("final")]
    final = next((l for l in lines if l.get("final")), None)
    if final is None:
        die("lora-train printed no final line")
    prev, step_s = 0.0, []
    for s in steps:
        step_s.append(round(s["elapsed_s"] - prev, 4))
        prev = s["elapsed_s"]
    rec = {"losses": [s["loss"] for s in steps], "grad_norms": [s["grad_norm"] for s in steps],
           "lrs": [s["lr"] for s in steps], "step_s": step_s,
           "median_step_s": round(statistics.median(step_s[1:] or step_s), 4) if step_s else None,
           "process_wall_s": round(wall, 2),
           "final": {k: final.get(k) for k in ("steps", "tokens", "examples", "truncated", "dropped", "seconds",
                                                "peak_rss_mb")}}
    return rec, " ".join(map(str, cmd))


def adapter_diff(out_dir, peft_final):
    from safetensors.torch import load_file

    ours = load_file(os.path.join(out_dir, "adapter_model.safetensors"))
    if set(ours) != set(peft_final):
        return {"error": f"keys differ: {sorted(set(ours) ^ set(peft_final))[:6]}"}
    worst_abs, worst_rel, worst_key = 0.0, 0.0, None
    for k, v in ours.items():
        d = (v.float() - peft_final[k]).norm().item()
        r = d / max(peft_final[k].norm().item(), 1e-30)
        worst_abs = max(worst_abs, (v.float() - peft_final[k]).abs().max().item())
        if r > worst_rel:
            worst_rel, worst_key = r, k
    return {"tensors": len(ours), "max_abs_diff": worst_abs, "max_rel_frobenius_diff": worst_rel,
            "worst_tensor": worst_key}


# ----------------------------------------------------------------------------------------------


def dumps(obj):
    """Indented JSON with lists of numbers (and lists of such lists) kept on one line."""
    import re

    text = json.dumps(obj, indent=1)
    flat = re.compile(r"\[(?:[^\[\]{}\"]|\[[^\[\]{}\"\n]*\])*\]")
    def join(m):
        return json.dumps(json.loads(m.group(0)))
    prev = None
    while prev != text:
        prev, text = text, flat.sub(join, text)
    return text


def compare(ours, peft, a):
    n = min(len(ours["losses"]), len(peft["losses"]))
    lrd = [rel(ours["losses"][i], peft["losses"][i]) for i in range(n)]
    lrd64 = [rel(ours["losses"][i], peft["losses_fp64"][i]) for i in range(n)]
    gnd = [rel(ours["grad_norms"][i], peft["grad_norms"][i]) for i in range(n)]
    lr_equal = ours["lrs"][:n] == peft["lrs"][:n] and all(abs(x - a.lr) <= 1e-12 * a.lr for x in ours["lrs"])
    f = ours["final"]
    counts_ok = (len(ours["losses"]) == a.steps == len(peft["losses"]) and f["steps"] == a.steps
                 and f["examples"] == a.batch_size and f["truncated"] == a.batch_size and f["dropped"] == 0
                 and f["tokens"] == a.steps * a.batch_size * a.seq_len)
    first_bad = next((i + 1 for i, d in enumerate(lrd) if not d < a.tol), None)
    return {"loss_rel_diff": [float(f"{d:.3e}") for d in lrd],
            "max_loss_rel_diff": max(lrd) if lrd else None,
            "first_step_over_tol": first_bad,
            "max_loss_rel_diff_vs_fp64_loss": max(lrd64) if lrd64 else None,
            "grad_norm_rel_diff": [float(f"{d:.3e}") for d in gnd],
            "max_grad_norm_rel_diff": max(gnd) if gnd else None,
            "lr_equal": lr_equal, "counts_ok": counts_ok,
            "pass": bool(lrd) and first_bad is None and lr_equal and counts_ok}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models/smollm2-135m-instruct"))
    ap.add_argument("--corpus", default=str(ROOT / "bench/corpus.jsonl"))
    ap.add_argument("--bin", default=str(ROOT / ".build/release"), type=pathlib.Path)
    ap.add_argument("--variants", default="bf16,nf4", help="comma list of bf16, nf4")
    ap.add_argument("--bnb", action="store_true", help="also run the bitsandbytes-native QLoRA path (information)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=0, help="threads for both sides (0: torch / lora-train default)")
    ap.add_argument("--peft-loss", choices=("hf", "fp64"), default="hf",
                    help="PEFT side's training loss: hf (the model's own, fp32 cross-entropy: the reference) or fp64 "
                         "(cross-entropy of the fp32 logits in float64, as lora-train's Double log-sum-exp)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    a = ap.parse_args()
    variants = [v for v in a.variants.split(",") if v]
    if any(v not in ("bf16", "nf4") for v in variants):
        die(f"unknown variant in {a.variants}")
    for b in ("lora-init", "lora-train", "lora-quantize"):
        if not (a.bin / b).exists():
            die(f"{a.bin / b} not found (swift build -c release)")
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    from transformers import AutoTokenizer

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="train-agreement-"))
    note(f"work folder {tmp}")
    tok = AutoTokenizer.from_pretrained(a.model)
    data = tmp / "data.jsonl"
    ids = make_data(tok, a.corpus, a.batch_size, a.seq_len, data)

    res = {"check": "lora-train vs PEFT + torch AdamW, same adapter, dropout 0, same batch every step",
           "command": " ".join([sys.executable] + sys.argv),
           "settings": {"model": a.model, "steps": a.steps, "seq_len": a.seq_len, "batch_size": a.batch_size,
                        "lr": a.lr, "lr_schedule": "constant", "warmup_steps": 0, "adamw": "betas (0.9, 0.999), eps 1e-8, weight_decay 0",
                        "max_grad_norm": 1.0, "rank": a.rank, "alpha": 2 * a.rank, "targets": TARGETS,
                        "dropout": 0, "init_seed": a.seed, "peft_loss": a.peft_loss, "tol": a.tol, "torch_threads": torch.get_num_threads(),
                        "ours_threads": a.threads,
                        "batch_first_ids": [r[:5].tolist() for r in ids]},
           "versions": {"torch": torch.__version__},
           "binaries": {b: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime((a.bin / b).stat().st_mtime)) + " UTC"
                        for b in ("lora-init", "lora-train", "lora-quantize")},
           "models": {}}
    import peft
    import transformers
    res["versions"].update({"transformers": transformers.__version__, "peft": peft.__version__})

    nf4_dir = tmp / "nf4"
    runs = [(v, False) for v in variants] + ([("nf4-bnb", True), ("nf4-bnb-fp32", True)] if a.bnb else [])
    if any(v.startswith("nf4") for v, _ in runs):
        note("lora-quantize ...")
        _, qs = run([a.bin / "lora-quantize", a.model, "-o", nf4_dir, "--threads", a.threads, "-q"])
        res["quantize_s"] = round(qs, 2)

    adapters = {}
    for v, info_only in runs:
        model_dir = a.model if v == "bf16" else nf4_dir
        entry = {"model_dir": str(model_dir), "gating": not info_only}
        if model_dir not in adapters:
            ad = tmp / f"adapter-{v}"
            run([a.bin / "lora-init", model_dir, "-o", ad, "--rank", a.rank, "--targets", TARGETS, "--dropout", 0,
                 "--seed", a.seed, "--threads", a.threads, "-q"])
            adapters[model_dir] = ad
        ad = adapters[model_dir]
        entry["adapter"] = str(ad)

        note(f"[{v}] lora-train ...")
        out_dir = tmp / f"out-{v}"
        reused = v.startswith("nf4-bnb") and "nf4" in res["models"]
        if reused:
            ours = res["models"]["nf4"]["ours"]  # the same run as nf4: reuse it
            out_dir = tmp / "out-nf4"
            entry["ours_command"] = res["models"]["nf4"]["ours_command"]
        else:
            ours, cmd = ours_train(a, model_dir, ad, data, out_dir)
            entry["ours_command"] = cmd
        note(f"[{v}] ours: losses {ours['losses'][:3]} ... {ours['losses'][-1:]}")

        note(f"[{v}] PEFT ...")
        if v == "bf16":
            base = load_fp32(a.model)
            entry["base"] = "from_pretrained(dtype=float32, eager): bf16 weights upcast to fp32"
        elif v == "nf4":
            base, check = load_nf4_exact(str(nf4_dir))
            entry["base"] = "fp32 Llama from the exact fp32 dequantization of TMP/nf4"
            entry["dequant_vs_bnb_dequantize_4bit"] = check
            if check["not_bit_identical"]:
                die(f"our fp32 dequantization differs from bitsandbytes': {check}")
        else:
            base, info = load_nf4_bnb(str(nf4_dir), force_fp32=v == "nf4-bnb-fp32")
            entry["base"] = ("transformers + bitsandbytes Linear4bit (native QLoRA path), information only"
                             + (": compute dtype forced to float32" if v == "nf4-bnb-fp32" else
                                ": the file's compute dtype"))
            entry["bnb"] = info
        peft_rec, peft_final = peft_train(base, str(ad), ids, a)
        del base
        if reused:
            entry["ours"] = "the nf4 run (models.nf4.ours)"
        else:
            entry["ours"] = ours
        entry["peft"] = peft_rec
        cmp = compare(ours, peft_rec, a)
        if info_only:
            cmp["within_tol"] = cmp.pop("pass")
        entry.update(cmp)
        entry["final_adapter_ours_vs_peft"] = adapter_diff(str(out_dir), peft_final)
        res["models"][v] = entry
        verdict = ("pass" if entry["pass"] else "FAIL") if not info_only else \
            ("within tol" if entry["within_tol"] else "over tol") + " (information only)"
        note(f"[{v}] max loss rel diff {entry['max_loss_rel_diff']:.3e}, max grad_norm rel diff "
             f"{entry['max_grad_norm_rel_diff']:.3e}: {verdict}")

    gating = [e for e in res["models"].values() if e["gating"]]
    res["pass"] = bool(gating) and all(e["pass"] for e in gating)
    print(dumps(res))
    if a.keep:
        note(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if res["pass"] else 1)


if __name__ == "__main__":
    main()
