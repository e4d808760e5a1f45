#!/usr/bin/env python3
"""Check lora-eval's loss / perplexity against an independent transformers reference.

    .venv/bin/python scripts/check_eval_parity.py --model models/smollm2-135m-instruct \
        --eval /tmp/lora-eval-release --quantize /tmp/lora-quantize-release \
        --data FILE [--seq-len 256 --stride 128]

    .venv/bin/python scripts/check_eval_parity.py --model models/smollm2-135m-instruct --write-data DIR
        writes the parity data files (long texts, exact-length edge texts, chat rows) into DIR and exits.

Models compared (each with `lora-eval MODEL --data FILE --batch-size 4 [--seq-len L] [--stride S]`):
  bf16  MODEL as given. Reference: AutoModelForCausalLM.from_pretrained(MODEL, dtype=float32,
        attn_implementation="eager"): weights upcast to fp32, fp32 compute.
  nf4   `lora-quantize MODEL -o TMP/nf4` (default NF4, blocksize 64, double quant). Primary reference:
        an fp32 Llama built from the file's exact fp32 dequantization (code[nibble] * absmax with
        absmax = nested_quant_map[idx] * nested_absmax[i // 256] + offset, all fp32; the other tensors
        upcast to fp32), cross-checked bit for bit against bitsandbytes.functional.dequantize_4bit with
        an fp32 output dtype. Secondary (reported, not gating): TMP/nf4 loaded by transformers +
        bitsandbytes as is; on a CPU with AVX512-BF16 its Linear4bit forward repacks the weights,
        rounds the nested absmax to bf16 and computes in bf16 (BNB_NOTES.md §4).

Semantics reproduced (lora-eval's):
  {"text": t}      ids = tokenizer(t)["input_ids"] (add_special_tokens=True, no EOS). n <= L: one window,
                   all labels. n > L: the Hugging Face perplexity recipe (begin in range(0, n, stride),
                   end = min(begin + L, n), only the last end - prev_end labels count, stop at end == n).
  {"messages": m}  default masking: for each assistant message i, prefix = render(m[:i],
                   add_generation_prompt=True), through = render(m[:i+1]) (apply_chat_template,
                   tokenize=False); the pieces between are tokenized separately (add_special_tokens=False)
                   and concatenated; targets are the assistant piece's tokens through <|im_end|> (the
                   newline after it is context). Rows whose piecewise tokens differ from tokenizing the
                   whole rendered conversation are reported.
  loss = sum of per-position NLL (shifted) over all windows / number of predicted positions;
  perplexity = exp(loss). Windows run in order in batches of --batch-size with right padding.
  The reference NLL is the log-softmax of the model's fp32 logits taken in fp64 (exact); torch's own fp32
  log_softmax is reported next to it (reference.perplexity_fp32_log_softmax, rel_diff_vs_fp32_log_softmax):
  an fp32 sum of exp over a 49152-entry vocabulary drops the smallest terms and reads low by ~8e-6 nats
  per token on this model, and lora-eval's 8-lane fp32 sum (Kernels.crossEntropy) by ~1.6e-5.

Prints one JSON object on stdout; exits 1 when a perplexity differs by more than --tol (relative,
default 1e-3) or a token count differs, 2 on a usage error. Progress notes go to stderr.
"""

import argparse
import glob
import json
import math
import os
import pathlib
import shutil
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


def note(*a):
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Sequences (windows) with labels


def text_windows(ids, L, stride):
    """Windows of one text: list of (ids, labels) with -100 for ignored labels (HF recipe)."""
    n = len(ids)
    if n == 0:
        return []
    if n <= L:
        return [(list(ids), list(ids))]
    out, prev_end = [], 0
    for begin in range(0, n, stride):
        end = min(begin + L, n)
        trg_len = end - prev_end
        window = list(ids[begin:end])
        labels = list(window)
        if trg_len < len(labels):
            labels[: len(labels) - trg_len] = [-100] * (len(labels) - trg_len)
        out.append((window, labels))
        prev_end = end
        if end == n:
            break
    return out


def chat_sequence(tok, messages, im_end_id):
    """(ids, labels, whole_ids) of one messages row with assistant-only masking, built piecewise."""
    render = lambda m, gen=False: tok.apply_chat_template(m, tokenize=False, add_generation_prompt=gen)  # noqa: E731
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"] if s else []  # noqa: E731
    ids, labels, done = [], [], ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = render(messages[:i], True) if i > 0 else ""
        through = render(messages[: i + 1])
        if i == 0:  # an opening assistant turn: the prompt part is what precedes its content
            prefix = through[: through.rindex(m["content"] + "<|im_end|>")] if m["content"] else through[: through.rindex("<|im_end|>")]
        assert prefix.startswith(done) and through.startswith(prefix), (done, prefix, through)
        ctx = enc(prefix[len(done):])
        ids += ctx
        labels += [-100] * len(ctx)
        tgt = enc(through[len(prefix):])
        k = max(j for j, t in enumerate(tgt) if t == im_end_id)  # targets: content through <|im_end|>
        ids += tgt
        labels += tgt[: k + 1] + [-100] * (len(tgt) - k - 1)
        done = through
    whole = render(messages)
    assert whole.startswith(done)
    rest = enc(whole[len(done):])
    ids += rest
    labels += [-100] * len(rest)
    return ids, labels, enc(whole)


def build_sequences(tok, rows, L, stride):
    im_end_id = tok.convert_tokens_to_ids("<|im_end|>")
    seqs, info = [], {"rows": len(rows), "text_rows": 0, "chat_rows": 0, "chat_piecewise_vs_whole": []}
    for r, row in enumerate(rows):
        if "text" in row:
            info["text_rows"] += 1
            ids = tok(row["text"])["input_ids"]
            seqs += text_windows(ids, L, stride)
        elif "messages" in row:
            info["chat_rows"] += 1
            ids, labels, whole = chat_sequence(tok, row["messages"], im_end_id)
            cmp = {"row": r, "piecewise_tokens": len(ids), "whole_tokens": len(whole), "identical": ids == whole}
            if ids != whole:
                j = next((j for j in range(min(len(ids), len(whole))) if ids[j] != whole[j]), min(len(ids), len(whole)))
                cmp["first_diff_at"] = j
                cmp["piecewise_around"] = tok.convert_ids_to_tokens(ids[max(0, j - 2): j + 3])
                cmp["whole_around"] = tok.convert_ids_to_tokens(whole[max(0, j - 2): j + 3])
            info["chat_piecewise_vs_whole"].append(cmp)
            if len(ids) > L:  # lora-eval's rule for over-long chat rows is not modelled here
                info.setdefault("chat_rows_over_seq_len", []).append(r)
                ids, labels = ids[:L], labels[:L]
            seqs.append((ids, labels))
        else:
            sys.exit(f"error: row {r}: only text and messages rows are supported by this check")
    if not info["chat_rows"]:
        del info["chat_piecewise_vs_whole"]
    return seqs, info


# ----------------------------------------------------------------------------------------------
# Reference loss


@torch.no_grad()
def reference_loss(model, seqs, batch_size, pad_id):
    t0 = time.time()
    nll_sum, nll32_sum, count = 0.0, 0.0, 0
    for b in range(0, len(seqs), batch_size):
        batch = seqs[b: b + batch_size]
        T = max(len(ids) for ids, _ in batch)
        inp = torch.full((len(batch), T), pad_id, dtype=torch.long)
        lab = torch.full((len(batch), T), -100, dtype=torch.long)
        att = torch.zeros((len(batch), T), dtype=torch.long)
        for i, (ids, labels) in enumerate(batch):
            inp[i, : len(ids)] = torch.tensor(ids)
            lab[i, : len(ids)] = torch.tensor(labels)
            att[i, : len(ids)] = 1
        logits = model(input_ids=inp, attention_mask=att).logits
        for i in range(len(batch)):
            lg = logits[i, :-1].float()
            tg = lab[i, 1:]
            keep = tg != -100
            if not keep.any():
                continue
            idx = tg[keep].unsqueeze(1)
            # Primary: log-softmax of the (fp32) logits in fp64, i.e. the exact loss of the forward pass.
            nll_sum += (-torch.log_softmax(lg[keep].double(), dim=-1).gather(1, idx)).sum().item()
            # Reported: torch's fp32 log_softmax (its fp32 sum of exp over the vocabulary loses the
            # smallest terms, which biases the loss low by ~8e-6 nats/token here).
            nll32_sum += (-torch.log_softmax(lg[keep], dim=-1).gather(1, idx)).double().sum().item()
            count += int(keep.sum())
        note(f"  reference: {min(b + batch_size, len(seqs))}/{len(seqs)} windows")
    loss = nll_sum / count if count else float("nan")
    loss32 = nll32_sum / count if count else float("nan")
    return {"loss": loss, "perplexity": math.exp(loss) if count else float("nan"), "tokens": count,
            "windows": len(seqs), "seconds": round(time.time() - t0, 2),
            "loss_fp32_log_softmax": loss32, "perplexity_fp32_log_softmax": math.exp(loss32) if count else float("nan")}


def load_fp32(model_dir):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    return m.eval()


def nf4_fp32_state_dict(model_dir):
    """fp32 state dict from a bitsandbytes 4-bit safetensors folder: exact fp32 dequantization."""
    from safetensors import safe_open

    files = sorted(glob.glob(os.path.join(model_dir, "*.safetensors")))
    raw = {}
    for f in files:
        with safe_open(f, "pt") as h:
            for k in h.keys():
                raw[k] = h.get_tensor(k)
    sd, quantized = {}, {}
    qs_suffix = [k for k in raw if ".quant_state.bitsandbytes__" in k]
    for qk in qs_suffix:
        name = qk[: qk.index(".quant_state.")]
        quantized[name] = json.loads(bytes(raw[qk].tolist()).decode())
    for k, v in raw.items():
        base = next((n for n in quantized if k.startswith(n + ".")), None)
        if base is not None or k in quantized:
            continue
        sd[k] = v.float()
    for name, qs in quantized.items():
        numel = math.prod(qs["shape"])
        packed = raw[name].reshape(-1)
        codes = torch.stack([packed >> 4, packed & 15], 1).reshape(-1)[:numel].long()
        qmap = raw[name + ".quant_map"].float()
        if name + ".nested_absmax" in raw:
            idx = raw[name + ".absmax"].long()
            nab = raw[name + ".nested_absmax"].float()
            nqm = raw[name + ".nested_quant_map"].float()
            nb = qs.get("nested_blocksize", 256)
            scale = nab.repeat_interleave(nb)[: idx.numel()]
            absmax = nqm[idx] * scale  # fp32 product
            absmax = absmax + torch.tensor(qs["nested_offset"], dtype=torch.float32)  # fp32 sum
        else:
            absmax = raw[name + ".absmax"].float()
        w = qmap[codes] * absmax.repeat_interleave(qs["blocksize"])[:numel]
        sd[name] = w.reshape(qs["shape"])
    return sd, raw, quantized


def bnb_crosscheck(raw, quantized, sd):
    """Our fp32 dequantization vs bitsandbytes.functional.dequantize_4bit (fp32 output): max |diff|."""
    import bitsandbytes.functional as F

    worst, mismatched = 0.0, 0
    for name in quantized:
        sub = {k[len(name) + 1:]: v for k, v in raw.items() if k.startswith(name + ".")}
        qs = F.QuantState.from_dict(sub, device=torch.device("cpu"))
        qs.dtype = torch.float32
        ref = F.dequantize_4bit(raw[name], qs)
        d = (ref.reshape(sd[name].shape) - sd[name]).abs().max().item()
        worst = max(worst, d)
        mismatched += int(not torch.equal(ref.reshape(sd[name].shape), sd[name]))
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
    bad_missing = [k for k in missing if not (tied and k == "lm_head.weight")]
    if bad_missing or unexpected:
        sys.exit(f"error: exact-dequant model: missing {bad_missing}, unexpected {unexpected}")
    if tied:
        m.tie_weights()
        assert m.lm_head.weight.data_ptr() == m.model.embed_tokens.weight.data_ptr()
    assert all(p.dtype == torch.float32 for p in m.parameters())
    return m.eval(), check


def load_nf4_bnb(model_dir):
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager",
                                             device_map="cpu")
    dts = sorted({str(p.dtype).replace("torch.", "") for p in m.parameters()})
    return m.eval(), dts


# ----------------------------------------------------------------------------------------------
# Ours


def run_ours(binary, model_dir, data, a):
    cmd = [binary, model_dir, "--data", data, "--batch-size", str(a.batch_size), "-q"]
    if a.seq_len is not None:
        cmd += ["--seq-len", str(a.seq_len)]
    if a.stride is not None:
        cmd += ["--stride", str(a.stride)]
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} exited {p.returncode}:\n{p.stderr[-3000:]}")
    r = json.loads(p.stdout)
    r["wall_seconds"] = round(time.time() - t0, 2)
    r["command"] = " ".join(cmd)
    return r


def compare(ours, ref):
    rel = abs(ours["perplexity"] - ref["perplexity"]) / ref["perplexity"]
    rel32 = abs(ours["perplexity"] - ref["perplexity_fp32_log_softmax"]) / ref["perplexity_fp32_log_softmax"]
    return {"rel_diff": rel, "loss_abs_diff": abs(ours["loss"] - ref["loss"]),
            "rel_diff_vs_fp32_log_softmax": rel32,
            "tokens_ours": ours["tokens"], "tokens_ref": ref["tokens"],
            "tokens_match": ours["tokens"] == ref["tokens"],
            "windows_ours": ours.get("windows"), "windows_ref": ref["windows"]}


def summarize_ours(r):
    keys = ("loss", "perplexity", "tokens", "examples", "windows", "truncated", "seq_len", "seconds", "wall_seconds")
    return {k: r.get(k) for k in keys}


# ----------------------------------------------------------------------------------------------
# Data files (--write-data)


def write_data(model_dir, out_dir, L=256, stride=128):
    from transformers import AutoTokenizer

    root = pathlib.Path(__file__).resolve().parent.parent
    tok = AutoTokenizer.from_pretrained(model_dir)
    texts = [json.loads(l)["text"] for l in open(root / "bench/corpus.jsonl")]
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = lambda s: len(tok(s)["input_ids"])  # noqa: E731
    # Long texts: joined corpus rows (some > 1000 tokens, one > 2048 so the default seq-len windows too).
    groups = [[0, 1], [2, 3, 4], [5, 6, 7, 8], [9], [10, 11], [12, 13, 14, 15]]
    long_rows = [{"text": "\n\n".join(texts[i] for i in g)} for g in groups]
    with open(out / "long.jsonl", "w") as f:
        for r in long_rows:
            f.write(json.dumps(r) + "\n")
    # Exact-length texts around the window boundaries for L=256, stride=128.
    big = "\n\n".join(texts)
    edges = []
    for target in (1, 2, L - 1, L, L + 1, L + stride - 1, L + stride, L + stride + 1, 2 * L, 2 * L + 1, 3 * L + 5):
        lo, hi = 1, len(big)
        while lo < hi:  # smallest character prefix with >= target tokens
            mid = (lo + hi) // 2
            if n(big[:mid]) >= target:
                hi = mid
            else:
                lo = mid + 1
        cut = lo
        while n(big[:cut]) != target and cut < len(big):
            cut += 1
        assert n(big[:cut]) == target, target
        edges.append({"text": big[:cut]})
        big = big[cut:] + big[:cut]  # rotate so texts differ
    with open(out / "edges.jsonl", "w") as f:
        for r in edges:
            f.write(json.dumps(r) + "\n")
    chat = [
        {"messages": [{"role": "user", "content": "What is the capital of France?"},
                      {"role": "assistant", "content": "The capital of France is Paris."}]},
        {"messages": [{"role": "system", "content": "You are a concise assistant that answers in one sentence."},
                      {"role": "user", "content": "Why is the sky blue?"},
                      {"role": "assistant", "content": "Sunlight scatters off air molecules, and blue light scatters the most, so the sky looks blue."}]},
        {"messages": [{"role": "user", "content": "Give me a number between 1 and 10."},
                      {"role": "assistant", "content": "7"},
                      {"role": "user", "content": "Now double it and add 3."},
                      {"role": "assistant", "content": "7 doubled is 14, and 14 + 3 = 17."}]},
        {"messages": [{"role": "system", "content": "You write short Python snippets."},
                      {"role": "user", "content": "Write a function that reverses a string."},
                      {"role": "assistant", "content": "Here it is:\n\n```python\ndef reverse(s):\n    return s[::-1]\n```\n\nIt uses slicing with a step of -1."},
                      {"role": "user", "content": "And one that checks for palindromes?"},
                      {"role": "assistant", "content": "```python\ndef is_palindrome(s):\n    return s == s[::-1]\n```"}]},
        {"messages": [{"role": "user", "content": "Translate 'good morning' into French, Spanish and German."},
                      {"role": "assistant", "content": "French: « Bonjour ». Spanish: «Buenos días». German: „Guten Morgen“."}]},
    ]
    with open(out / "chat.jsonl", "w") as f:
        for r in chat:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    chat_edge = [
        {"messages": [{"role": "user", "content": "Start with a blank line."},
                      {"role": "assistant", "content": "\nSure, this answer starts with a newline."}]},
        {"messages": [{"role": "user", "content": "Start with a space."},
                      {"role": "assistant", "content": " Leading space here."}]},
        {"messages": [{"role": "user", "content": "Trailing whitespace?"},
                      {"role": "assistant", "content": "Yes, two newlines follow.\n\n"}]},
        {"messages": [{"role": "user", "content": "Say nothing."},
                      {"role": "assistant", "content": ""},
                      {"role": "user", "content": "Thanks."}]},
    ]
    with open(out / "chat-edge.jsonl", "w") as f:
        for r in chat_edge:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    info = {"dir": str(out), "long.jsonl": [n(r["text"]) for r in long_rows],
            "edges.jsonl": [n(r["text"]) for r in edges], "chat.jsonl": len(chat), "chat-edge.jsonl": len(chat_edge)}
    print(json.dumps(info))


# ----------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--eval", help="lora-eval binary")
    ap.add_argument("--quantize", help="lora-quantize binary")
    ap.add_argument("--data")
    ap.add_argument("--seq-len", type=int)
    ap.add_argument("--stride", type=int)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--tol", type=float, default=1e-3, help="bound on the relative perplexity difference")
    ap.add_argument("--models", default="bf16,nf4", help="which of bf16,nf4 to check")
    ap.add_argument("--skip-bnb", action="store_true", help="skip the (slow, non-gating) bitsandbytes NF4 run")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--write-data", metavar="DIR", help="write the parity data files into DIR and exit")
    a = ap.parse_args()
    if a.write_data:
        write_data(a.model, a.write_data)
        return 0
    if not (a.eval and a.data) or ("nf4" in a.models and not a.quantize):
        ap.error("--eval, --data (and --quantize for nf4) are required")
    torch.set_num_threads(a.threads)
    from transformers import AutoConfig, AutoTokenizer

    cfg = AutoConfig.from_pretrained(a.model)
    L = a.seq_len if a.seq_len is not None else min(getattr(cfg, "max_position_embeddings", 2048), 2048)
    S = a.stride if a.stride is not None else L
    tok = AutoTokenizer.from_pretrained(a.model)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    rows = [json.loads(l) for l in open(a.data) if l.strip()]
    seqs, info = build_sequences(tok, rows, L, S)
    result = {"data": a.data, "seq_len": L, "stride": S, "batch_size": a.batch_size, "tol": a.tol,
              "torch_threads": torch.get_num_threads(), "data_info": info, "models": {}}
    ok = True
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="eval-parity-"))
    try:
        if "bf16" in a.models.split(","):
            note("bf16: lora-eval")
            ours = run_ours(a.eval, a.model, a.data, a)
            note("bf16: reference (fp32 upcast, eager)")
            ref = reference_loss(load_fp32(a.model), seqs, a.batch_size, pad_id)
            c = compare(ours, ref)
            c["pass"] = c["rel_diff"] <= a.tol and c["tokens_match"]
            ok &= c["pass"]
            result["models"]["bf16"] = {"ours": summarize_ours(ours), "reference": ref, **c,
                                        "reference_kind": "transformers fp32 (weights upcast), eager",
                                        "command": ours["command"]}
        if "nf4" in a.models.split(","):
            nf4 = tmp / "nf4"
            note("nf4: lora-quantize")
            t0 = time.time()
            q = subprocess.run([a.quantize, a.model, "-o", str(nf4), "-q"], capture_output=True, text=True)
            if q.returncode != 0:
                sys.exit(f"error: lora-quantize failed:\n{q.stderr[-3000:]}")
            qsec = round(time.time() - t0, 2)
            note("nf4: lora-eval")
            ours = run_ours(a.eval, str(nf4), a.data, a)
            note("nf4: reference (exact fp32 dequantization)")
            m, deq_check = load_nf4_exact(str(nf4))
            ref = reference_loss(m, seqs, a.batch_size, pad_id)
            del m
            c = compare(ours, ref)
            c["pass"] = c["rel_diff"] <= a.tol and c["tokens_match"]
            ok &= c["pass"]
            entry = {"ours": summarize_ours(ours), "reference": ref, **c,
                     "reference_kind": "fp32 Llama from the file's exact fp32 dequantization, eager",
                     "dequant_vs_bitsandbytes": deq_check, "quantize_seconds": qsec,
                     "command": ours["command"].replace(str(nf4), "TMP/nf4")}
            if not a.skip_bnb:
                note("nf4: transformers + bitsandbytes (secondary)")
                mb, dts = load_nf4_bnb(str(nf4))
                rb = reference_loss(mb, seqs, a.batch_size, pad_id)
                del mb
                rb["param_dtypes"] = dts
                rb["rel_diff_vs_ours"] = abs(ours["perplexity"] - rb["perplexity"]) / rb["perplexity"]
                rb["rel_diff_vs_exact_fp32"] = abs(ref["perplexity"] - rb["perplexity"]) / ref["perplexity"]
                rb["tokens_match"] = rb["tokens"] == ours["tokens"]
                entry["bnb_transformers"] = rb
            result["models"]["nf4"] = entry
    finally:
        if a.keep:
            note(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    result["pass"] = bool(ok)
    print(json.dumps(result, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
