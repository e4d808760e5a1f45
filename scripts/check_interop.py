#!/usr/bin/env python3
"""Check lora-quantize and lora-init output against transformers + bitsandbytes + PEFT.

    .venv/bin/python scripts/check_interop.py --model models/smollm2-135m-instruct --bin .build/debug

Runs our binaries itself into a temporary folder (removed at the end unless --keep or --workdir),
prints one JSON summary on stdout and exits 1 when any check fails (2 on a usage error).
Progress notes go to stderr. --threads (default: torch's own) sets torch's thread count and is passed
to lora-quantize as LORA_TORCH_THREADS: bitsandbytes' nested offset is a torch float32 mean whose
summation order depends on the thread count once a tensor has >= 32768 absmax blocks (BNB_NOTES §2a).

quantize  `lora-quantize MODEL -o TMP/nf4` (timed; its JSON summary is recorded).
          load      AutoModelForCausalLM.from_pretrained(TMP/nf4) on CPU: no missing, unexpected or
                    mismatched keys, no key-related warnings, every decoder Linear is a Linear4bit.
          tensors   MODEL loaded with BitsAndBytesConfig(nf4, double quant, bf16 compute) and saved
                    with save_pretrained (before any forward pass: on a CPU with AVX512-BF16 the
                    first forward repacks the 4-bit weights in place) compared tensor by tensor,
                    byte for byte, with TMP/nf4/model.safetensors, counted per kind (packed weight,
                    absmax, quant_map, nested_absmax, nested_quant_map, quant_state JSON, plain).
                    Also compared: that model's in-memory state_dict, and the state_dict of our
                    file as loaded by transformers (a round trip). File layout and
                    quantization_config differences are reported, not failures.
          logits    both 4-bit models run on a few prompts: max |logit difference| must be 0 and
                    argmax must agree everywhere. The distance to the bf16 model is reported.
peft      `lora-init MODEL -o TMP/adapter --rank 16 --targets q_proj,k_proj,v_proj,o_proj --seed 0`,
          `lora-init MODEL -o TMP/adapter-all --rank 8 --targets all-linear --rslora --init gaussian`,
          `lora-init TMP/nf4 -o TMP/adapter-q` (4-bit base). For each: LoraConfig(**adapter_config)
          (strict) and LoraConfig.from_pretrained without warnings; PeftModel.from_pretrained(base,
          dir, is_trainable=True) without warnings; a second load_adapter gives no missing or
          unexpected keys; get_peft_model_state_dict equals the file (same keys, dtypes, values);
          get_nb_trainable_parameters() equals our trainable_params / all_params; targeted modules,
          in/out features, r and scaling equal our JSON; lora_B is all zero; lora_A is within the
          init's range/std; PEFT model logits equal the base model's exactly.
stream    `lora-init MODEL -o - > TMP/a.safetensors`: safe_open loads it, metadata adapter_config is
          valid JSON with peft_type LORA and equals TMP/adapter/adapter_config.json, the summary on
          stderr parses, and every tensor equals TMP/adapter's (same seed) byte for byte.
"""

import argparse
import contextlib
import io
import json
import logging
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import warnings

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "Once upon a time, in a small village by the sea, there lived",
    "Q: What is 12 + 35?\nA:",
]
CHAT = [{"role": "user", "content": "Give me three tips for learning a new language."}]

# Warnings / log lines that would mean a key or config field was dropped or invented.
KEY_WARNING = re.compile(
    r"missing|unexpected|mismatch|not initiali[sz]ed|newly initiali[sz]ed|were not used|not used when"
    r"|unknown|unrecogni[sz]ed|unused|ignor",
    re.IGNORECASE,
)


def log(msg):
    print(f"check_interop: {msg}", file=sys.stderr, flush=True)


class Checker:
    def __init__(self):
        self.failures = []

    def check(self, cond, what):
        if not cond:
            self.failures.append(what)
            log(f"FAIL {what}")
        return bool(cond)


class _ListHandler(logging.Handler):
    def __init__(self, sink):
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record):
        try:
            self.sink.append(f"{record.name}: {record.getMessage()}")
        except Exception:  # pragma: no cover
            self.sink.append(f"{record.name}: {record.msg!r}")


@contextlib.contextmanager
def capture():
    """Collect warnings.warn, WARNING+ log records and Python-level stderr writes."""
    got = {"warnings": [], "logs": [], "stderr": ""}
    handler = _ListHandler(got["logs"])
    loggers = [logging.getLogger(n) for n in ("", "transformers", "peft", "bitsandbytes", "accelerate", "safetensors")]
    buf = io.StringIO()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for lg in loggers:
            lg.addHandler(handler)
        try:
            with contextlib.redirect_stderr(buf):
                yield got
        finally:
            for lg in loggers:
                lg.removeHandler(handler)
            got["warnings"] = [f"{x.category.__name__}: {x.message}" for x in w]
            got["stderr"] = buf.getvalue()


def messages(got):
    out = list(got["warnings"]) + list(got["logs"])
    out += [ln for ln in got["stderr"].splitlines() if ln.strip()]
    # de-duplicate, keep order
    seen, res = set(), []
    for m in out:
        if m not in seen:
            seen.add(m)
            res.append(m[:500])
    return res


def key_warnings(msgs):
    return [m for m in msgs if KEY_WARNING.search(m)]


def parse_summary(text):
    """The last line of text that is a JSON object."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                v = json.loads(line)
            except ValueError:
                continue
            if isinstance(v, dict):
                return v
    return None


def run_bin(binary, argv, stdout_path=None, env=None):
    cmd = [binary] + argv
    log("run " + " ".join(cmd) + (f" > {stdout_path}" if stdout_path else ""))
    full_env = dict(os.environ, **(env or {}))
    t0 = time.perf_counter()
    if stdout_path:
        with open(stdout_path, "wb") as f:
            p = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, env=full_env)
        out = ""
    else:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env)
        out = p.stdout.decode("utf-8", "replace")
    wall = time.perf_counter() - t0
    err = p.stderr.decode("utf-8", "replace")
    summary = parse_summary(err if stdout_path else out)
    return {
        "cmd": cmd,
        "env": env or {},
        "rc": p.returncode,
        "wall_s": round(wall, 3),
        "summary": summary,
        "stderr_tail": err[-2000:] if p.returncode else None,
    }


def st_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), n


def st_raw_tensors(path):
    """name -> (dtype, shape, raw bytes) straight from a safetensors file."""
    hdr, n = st_header(path)
    with open(path, "rb") as f:
        blob = f.read()
    base = 8 + n
    res = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        a, b = v["data_offsets"]
        res[k] = (v["dtype"], list(v["shape"]), blob[base + a : base + b])
    return res, hdr


def model_files(d):
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as f:
            return sorted(set(json.load(f)["weight_map"].values()))
    return ["model.safetensors"]


def dir_raw_tensors(d):
    res, headers = {}, {}
    for fn in model_files(d):
        t, h = st_raw_tensors(os.path.join(d, fn))
        res.update(t)
        headers[fn] = h
    return res, headers


SUMMARIES = {}  # lora-init JSON summaries by adapter name (the stream check compares with one)


def tensor_bytes(t):
    import torch

    t = t.detach().contiguous().cpu()
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def kind_of(name):
    for suffix, kind in (
        (".weight.nested_absmax", "nested_absmax"),
        (".weight.nested_quant_map", "nested_quant_map"),
        (".weight.quant_map", "quant_map"),
        (".weight.absmax", "absmax"),
    ):
        if name.endswith(suffix):
            return kind
    if ".weight.quant_state." in name:
        return "quant_state"
    return None  # decided by the caller (packed weight or plain)


def compare_raw(ours, ref, packed_weights):
    """Compare two name -> (dtype, shape, bytes) maps. Returns a report dict."""
    kinds = {}
    diffs = []
    only_ours = sorted(set(ours) - set(ref))
    only_ref = sorted(set(ref) - set(ours))
    for name in sorted(set(ours) & set(ref)):
        kind = kind_of(name) or ("packed_weight" if name in packed_weights else "plain")
        k = kinds.setdefault(kind, {"identical": 0, "different": 0})
        a, b = ours[name], ref[name]
        same = a[0] == b[0] and a[1] == b[1] and a[2] == b[2]
        if same:
            k["identical"] += 1
        else:
            k["different"] += 1
            d = {"name": name, "ours": [a[0], a[1], len(a[2])], "ref": [b[0], b[1], len(b[2])]}
            if len(a[2]) == len(b[2]):
                nb = sum(1 for x, y in zip(a[2], b[2]) if x != y)
                d["bytes_different"] = nb
            if kind == "quant_state":
                d["ours_json"] = a[2].decode("utf-8", "replace")
                d["ref_json"] = b[2].decode("utf-8", "replace")
            diffs.append(d)
    total_same = sum(v["identical"] for v in kinds.values())
    total_diff = sum(v["different"] for v in kinds.values())
    return {
        "compared": total_same + total_diff,
        "identical": total_same,
        "different": total_diff,
        "by_kind": kinds,
        "only_ours": only_ours[:20],
        "only_ours_count": len(only_ours),
        "only_ref": only_ref[:20],
        "only_ref_count": len(only_ref),
        "first_differences": diffs[:10],
    }


def state_dict_raw(model):
    """state_dict -> name -> (safetensors dtype, shape, bytes), shared (tied) tensors kept."""
    import torch

    names = {
        torch.bfloat16: "BF16",
        torch.float16: "F16",
        torch.float32: "F32",
        torch.uint8: "U8",
        torch.int8: "I8",
        torch.int32: "I32",
        torch.int64: "I64",
    }
    res = {}
    for k, v in model.state_dict().items():
        res[k] = (names.get(v.dtype, str(v.dtype)), list(v.shape), tensor_bytes(v))
    return res


def logits_for(model, tok, device="cpu"):
    import torch

    outs = []
    texts = list(PROMPTS)
    try:
        texts.append(tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True))
    except Exception:  # no chat template: just the plain prompts
        pass
    with torch.no_grad():
        for t in texts:
            enc = tok(t, return_tensors="pt")
            out = model(input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device))
            outs.append(out.logits.detach().float().cpu())
    return outs


def compare_logits(a, b):
    import torch

    max_abs = 0.0
    agree = 0
    total = 0
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return {"error": f"shape {list(x.shape)} vs {list(y.shape)}"}
        d = (x - y).abs()
        finite = torch.isfinite(d)
        if not bool(finite.all()):
            max_abs = float("inf")
        else:
            max_abs = max(max_abs, float(d.max()))
        am, bm = x.argmax(-1), y.argmax(-1)
        agree += int((am == bm).sum())
        total += am.numel()
    return {
        "prompts": len(a),
        "positions": total,
        "max_abs_diff": max_abs,
        "argmax_agree": agree,
        "argmax_agreement": round(agree / total, 6) if total else None,
        "bitwise_equal": all(torch.equal(x, y) for x, y in zip(a, b)),
    }


def quantized_linear_names(model):
    import bitsandbytes as bnb

    return sorted(n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit))


# ---------------------------------------------------------------------------------------------
# 1. lora-quantize vs transformers + bitsandbytes
# ---------------------------------------------------------------------------------------------
def check_quantize(args, tmp, ck, res):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    out = os.path.join(tmp, "nf4")
    # bitsandbytes' nested offset is a torch float32 mean, whose summation order depends on
    # torch.get_num_threads() once a tensor has >= 32768 blocks; lora-quantize follows
    # LORA_TORCH_THREADS, so both sides are given the same count.
    run = run_bin(os.path.join(args.bin, "lora-quantize"), [args.model, "-o", out],
                  env={"LORA_TORCH_THREADS": str(args.threads)})
    res["run"] = run
    if not ck.check(run["rc"] == 0, f"quantize: lora-quantize exited {run['rc']}"):
        return None
    ck.check(run["summary"] is not None, "quantize: no JSON summary on stdout")
    res["files"] = sorted(os.listdir(out))

    # (a) our folder through transformers
    log("load TMP/nf4 with transformers")
    with capture() as got:
        ours, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True, device_map="cpu")
    ours.eval()
    msgs = messages(got)
    info = {k: sorted(map(str, v)) if isinstance(v, (set, list, tuple)) else str(v) for k, v in info.items()}
    res["load"] = {"loading_info": info, "messages": msgs, "key_warnings": key_warnings(msgs)}
    for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        ck.check(not info.get(k), f"quantize: loading TMP/nf4 reported {k}: {info.get(k)}")
    ck.check(not res["load"]["key_warnings"], "quantize: key-related warnings loading TMP/nf4")
    q_ours = quantized_linear_names(ours)
    res["load"]["linear4bit_modules"] = len(q_ours)

    # (b) the reference quantization, compared before any forward pass
    log("quantize MODEL with transformers + bitsandbytes")
    cfg = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    with capture() as got:
        ref, rinfo = AutoModelForCausalLM.from_pretrained(
            args.model, quantization_config=cfg, output_loading_info=True, device_map="cpu"
        )
    ref.eval()
    rmsgs = messages(got)
    res["reference_load"] = {
        "loading_info": {k: sorted(map(str, v)) if isinstance(v, (set, list, tuple)) else str(v) for k, v in rinfo.items()},
        "messages": rmsgs,
    }
    q_ref = quantized_linear_names(ref)
    res["load"]["linear4bit_modules_reference"] = len(q_ref)
    ck.check(q_ours == q_ref, f"quantize: Linear4bit modules differ ({len(q_ours)} ours vs {len(q_ref)} reference)")
    packed = {n + ".weight" for n in q_ref}
    blocks = max((m.weight.quant_state.absmax.numel() for n, m in ref.named_modules() if n in set(q_ref)), default=0)
    res["largest_absmax_blocks"] = blocks
    res["offset_depends_on_threads"] = blocks >= 32768

    ours_raw, ours_headers = dir_raw_tensors(out)

    # in-memory reference state_dict vs our file (tied lm_head.weight is not in either file)
    sd_ref = state_dict_raw(ref)
    tied = [k for k in sd_ref if k not in ours_raw and k == "lm_head.weight"]
    for k in tied:
        sd_ref.pop(k)
    cmp_mem = compare_raw(ours_raw, sd_ref, packed)
    cmp_mem["skipped_tied"] = tied
    res["tensors_vs_reference_state_dict"] = cmp_mem

    # our file as transformers loaded it (round trip through Params4bit / QuantState)
    sd_ours = state_dict_raw(ours)
    for k in tied:
        sd_ours.pop(k, None)
    cmp_rt = compare_raw(ours_raw, sd_ours, packed)
    res["tensors_roundtrip_loaded_ours"] = {k: cmp_rt[k] for k in ("compared", "identical", "different", "only_ours_count", "only_ref_count", "first_differences")}

    log("save_pretrained of the reference")
    refdir = os.path.join(tmp, "ref-nf4")
    with capture():
        ref.save_pretrained(refdir)
    ref_raw, ref_headers = dir_raw_tensors(refdir)
    cmp_file = compare_raw(ours_raw, ref_raw, packed)
    res["tensors_vs_reference_file"] = cmp_file
    ck.check(
        cmp_file["different"] == 0 and cmp_file["only_ours_count"] == 0 and cmp_file["only_ref_count"] == 0,
        f"quantize: tensors differ from save_pretrained of transformers+bnb ({cmp_file['different']} different, "
        f"{cmp_file['only_ours_count']} only ours, {cmp_file['only_ref_count']} only reference)",
    )
    ck.check(
        cmp_mem["different"] == 0 and cmp_mem["only_ours_count"] == 0 and cmp_mem["only_ref_count"] == 0,
        "quantize: tensors differ from the reference's in-memory state_dict",
    )
    ck.check(
        cmp_rt["different"] == 0 and cmp_rt["only_ours_count"] == 0 and cmp_rt["only_ref_count"] == 0,
        "quantize: our file does not round-trip through transformers' state_dict",
    )

    # informational: file layout and config
    layout = {}
    for fn in sorted(set(ours_headers) | set(ref_headers)):
        ho, hr = ours_headers.get(fn), ref_headers.get(fn)
        if ho is None or hr is None:
            layout[fn] = "only in one folder"
            continue

        def order(h):
            return [k for _, k in sorted((v["data_offsets"][0], k) for k, v in h.items() if k != "__metadata__")]

        a = os.path.join(out, fn)
        b = os.path.join(refdir, fn)
        layout[fn] = {
            "byte_identical": _same_file(a, b),
            "size_ours": os.path.getsize(a),
            "size_ref": os.path.getsize(b),
            "header_len_ours": st_header(a)[1],
            "header_len_ref": st_header(b)[1],
            "metadata_ours": ho.get("__metadata__"),
            "metadata_ref": hr.get("__metadata__"),
            "same_data_order": order(ho) == order(hr),
            "first_in_data_order_ours": order(ho)[:3],
            "first_in_data_order_ref": order(hr)[:3],
        }
    res["file_layout_info"] = layout
    with open(os.path.join(out, "config.json")) as f:
        qc_ours = json.load(f).get("quantization_config")
    with open(os.path.join(refdir, "config.json")) as f:
        qc_ref = json.load(f).get("quantization_config")
    qdiff = {k: [qc_ours.get(k) if qc_ours else None, qc_ref.get(k) if qc_ref else None]
             for k in sorted(set(qc_ours or {}) | set(qc_ref or {}))
             if (qc_ours or {}).get(k) != (qc_ref or {}).get(k)}
    res["quantization_config_diff_ours_vs_ref"] = qdiff
    s = run["summary"] or {}
    ck.check(s.get("tensors_quantized") == len(q_ref), f"quantize: summary tensors_quantized {s.get('tensors_quantized')} != {len(q_ref)}")

    # (c) forward passes (these repack the 4-bit weights on AVX512-BF16 CPUs: keep them last)
    log("forward passes (4-bit ours, 4-bit reference, bf16)")
    tok = AutoTokenizer.from_pretrained(args.model)
    with capture():
        lo = logits_for(ours, tok)
        lr = logits_for(ref, tok)
    c = compare_logits(lo, lr)
    res["logits_ours_vs_reference"] = c
    ck.check(c.get("max_abs_diff") == 0.0 and c.get("argmax_agree") == c.get("positions"),
             f"quantize: logits differ from transformers+bnb ({c})")
    del ref
    with capture():
        full = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16, device_map="cpu")
    full.eval()
    with capture():
        lf = logits_for(full, tok)
    res["logits_ours_vs_bf16_info"] = compare_logits(lo, lf)
    del full, ours
    return out


def _same_file(a, b):
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


# ---------------------------------------------------------------------------------------------
# 2. lora-init vs PEFT
# ---------------------------------------------------------------------------------------------
def check_adapter(args, tmp, ck, name, base_dir, argv, quantized):
    import torch
    from peft import LoraConfig, PeftModel
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    res = {}
    adir = os.path.join(tmp, name)
    run = run_bin(os.path.join(args.bin, "lora-init"), [base_dir, "-o", adir] + argv)
    res["run"] = {k: v for k, v in run.items() if k != "summary"}
    summ = run["summary"] or {}
    res["summary"] = {k: v for k, v in summ.items() if k != "modules"}
    res["summary"]["modules_count"] = len(summ.get("modules", []))
    SUMMARIES[name] = summ
    tag = f"peft[{name}]"
    if not ck.check(run["rc"] == 0, f"{tag}: lora-init exited {run['rc']}"):
        return res
    ck.check(bool(summ), f"{tag}: no JSON summary on stdout")
    res["files"] = sorted(os.listdir(adir))
    ck.check(res["files"] == ["adapter_config.json", "adapter_model.safetensors"], f"{tag}: unexpected files {res['files']}")

    with open(os.path.join(adir, "adapter_config.json")) as f:
        cfg_json = json.load(f)

    # LoraConfig parses our config: strict constructor, then from_pretrained with warnings captured
    cfg_res = {}
    try:
        with capture() as got:
            LoraConfig(**cfg_json)
        cfg_res["strict_constructor"] = "ok"
        cfg_res["strict_constructor_messages"] = messages(got)
    except TypeError as e:
        cfg_res["strict_constructor"] = f"TypeError: {e}"
    ck.check(cfg_res["strict_constructor"] == "ok", f"{tag}: LoraConfig(**adapter_config.json) failed: {cfg_res['strict_constructor']}")
    with capture() as got:
        pc = LoraConfig.from_pretrained(adir)
    cfg_res["from_pretrained_messages"] = messages(got)
    ck.check(not cfg_res["from_pretrained_messages"], f"{tag}: LoraConfig.from_pretrained warned: {cfg_res['from_pretrained_messages']}")
    pd = pc.to_dict()
    changed = {}
    for k, v in cfg_json.items():
        pv = pd.get(k, "<absent>")
        if isinstance(pv, set):
            pv = sorted(pv)
        if isinstance(pv, str) and hasattr(pv, "value"):
            pv = pv.value
        if k == "target_modules" and isinstance(v, list) and isinstance(pv, list):
            same = sorted(v) == sorted(pv)
        else:
            same = json.dumps(v, sort_keys=True, default=str) == json.dumps(pv, sort_keys=True, default=str)
        if not same:
            changed[k] = [v, pv]
    cfg_res["fields_changed_by_peft"] = changed  # e.g. inference_mode: never a problem
    cfg_res["peft_fields_not_in_ours_info"] = sorted(k for k in pd if k not in cfg_json)
    res["lora_config"] = cfg_res

    # Base logits come from a separate, fresh copy of the base. The copy that PEFT wraps runs no
    # forward pass before the state_dict work below: on a CPU with AVX512-BF16 the first 4-bit
    # forward repacks the weights (absmax to bf16), and a later state_dict() (which PEFT's
    # load_adapter and get_peft_model_state_dict call) converts them back in place, lossily, so the
    # next forward no longer equals a fresh model's.
    def load_base():
        with capture() as got:
            if quantized:
                m = AutoModelForCausalLM.from_pretrained(base_dir, device_map="cpu")
            else:
                m = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.bfloat16, device_map="cpu")
        m.eval()
        return m, key_warnings(messages(got))

    log(f"{name}: base logits from a fresh {base_dir}")
    tok = AutoTokenizer.from_pretrained(args.model)
    base, kw = load_base()
    res["base_load_key_warnings"] = kw
    with capture():
        base_logits = logits_for(base, tok)
    del base
    base, _ = load_base()

    log(f"{name}: PeftModel.from_pretrained")
    with capture() as got:
        pm = PeftModel.from_pretrained(base, adir, is_trainable=True)
    pmsgs = messages(got)
    res["from_pretrained_messages"] = pmsgs
    ck.check(not key_warnings(pmsgs), f"{tag}: PeftModel.from_pretrained key warnings: {key_warnings(pmsgs)}")

    # the same load once more, with the result that from_pretrained does not return
    with capture() as got:
        lr = pm.load_adapter(adir, adapter_name="recheck", is_trainable=False)
    res["load_adapter"] = {
        "missing_keys": list(lr.missing_keys),
        "unexpected_keys": list(lr.unexpected_keys),
        "messages": messages(got),
    }
    ck.check(not lr.missing_keys, f"{tag}: load_adapter missing_keys {list(lr.missing_keys)[:5]}")
    ck.check(not lr.unexpected_keys, f"{tag}: load_adapter unexpected_keys {list(lr.unexpected_keys)[:5]}")
    pm.delete_adapter("recheck")
    pm.set_adapter("default")
    pm.eval()

    # state dict as PEFT would save it vs our file
    file_t = load_file(os.path.join(adir, "adapter_model.safetensors"))
    sd = get_peft_model_state_dict(pm, adapter_name="default")
    only_file = sorted(set(file_t) - set(sd))
    only_peft = sorted(set(sd) - set(file_t))
    neq, dtype_diff = [], []
    a_stats = {"count": 0, "max_abs_over_bound": 0.0, "std_ratio_min": None, "std_ratio_max": None}
    b_nonzero = []
    for k in sorted(set(sd) & set(file_t)):
        a, b = sd[k].detach().cpu(), file_t[k]
        if a.dtype != b.dtype:
            dtype_diff.append([k, str(b.dtype), str(a.dtype)])
        if a.shape != b.shape or not torch.equal(a.to(b.dtype), b) or tensor_bytes(a.to(b.dtype)) != tensor_bytes(b):
            neq.append(k)
        if ".lora_B." in k and bool((b != 0).any()):
            b_nonzero.append(k)
    res["state_dict"] = {
        "file_tensors": len(file_t),
        "peft_tensors": len(sd),
        "only_in_file": only_file[:10],
        "only_in_peft": only_peft[:10],
        "values_different": neq[:10],
        "values_different_count": len(neq),
        "dtype_different": dtype_diff[:10],
        "file_dtypes": sorted({str(t.dtype) for t in file_t.values()}),
        "lora_B_nonzero": b_nonzero[:10],
    }
    ck.check(not only_file and not only_peft, f"{tag}: adapter keys differ from PEFT's ({len(only_file)} only in file, {len(only_peft)} only in PEFT)")
    ck.check(not neq, f"{tag}: {len(neq)} loaded tensors differ from the file")
    ck.check(not dtype_diff, f"{tag}: loaded dtypes differ from the file: {dtype_diff[:3]}")
    ck.check(not b_nonzero, f"{tag}: lora_B not all zero")

    # parameter counts
    trainable, total = pm.get_nb_trainable_parameters()
    res["params"] = {"peft_trainable": trainable, "peft_all": total,
                     "ours_trainable": summ.get("trainable_params"), "ours_all": summ.get("all_params")}
    ck.check(trainable == summ.get("trainable_params"), f"{tag}: trainable params PEFT {trainable} != ours {summ.get('trainable_params')}")
    ck.check(total == summ.get("all_params"), f"{tag}: all params PEFT {total} != ours {summ.get('all_params')}")

    # modules, shapes, r, scaling, init ranges
    from peft.tuners.lora import LoraLayer

    peft_mods = {}
    for mname, m in pm.base_model.model.named_modules():
        if isinstance(m, LoraLayer) and "default" in m.lora_A:
            peft_mods[mname] = m
    ours_mods = {m["name"]: m for m in summ.get("modules", [])}
    mod_problems = []
    if sorted(peft_mods) != sorted(ours_mods):
        mod_problems.append(f"targeted modules differ: only ours {sorted(set(ours_mods) - set(peft_mods))[:5]}, "
                            f"only PEFT {sorted(set(peft_mods) - set(ours_mods))[:5]}")
    scalings = set()
    init = cfg_json.get("init_lora_weights", True)
    r_cfg = cfg_json.get("r")
    ratios = []
    worst_over = 0.0
    for mname in sorted(set(peft_mods) & set(ours_mods)):
        m, o = peft_mods[mname], ours_mods[mname]
        A = m.lora_A["default"].weight.detach().float()
        inf_, outf = m.in_features, m.out_features
        if (o.get("in"), o.get("out"), o.get("r")) != (inf_, outf, m.r["default"]):
            mod_problems.append(f"{mname}: ours in/out/r {o.get('in')}/{o.get('out')}/{o.get('r')} vs PEFT {inf_}/{outf}/{m.r['default']}")
        scalings.add(m.scaling["default"])
        if init is True or init == "kaiming":
            bound = 1.0 / math.sqrt(inf_)
            worst_over = max(worst_over, float(A.abs().max()) - bound)
            ratios.append(float(A.std()) / (bound / math.sqrt(3)))
        elif init == "gaussian":
            ratios.append(float(A.std()) / (1.0 / m.r["default"]))
    res["modules"] = {"peft": len(peft_mods), "ours": len(ours_mods), "problems": mod_problems[:10]}
    ck.check(not mod_problems, f"{tag}: module list/shape problems: {mod_problems[:3]}")
    res["scaling"] = {"peft": sorted(scalings), "ours": summ.get("scaling"),
                      "expected": (cfg_json["lora_alpha"] / math.sqrt(r_cfg)) if cfg_json.get("use_rslora") else cfg_json["lora_alpha"] / r_cfg}
    ck.check(len(scalings) == 1 and abs(next(iter(scalings)) - float(summ.get("scaling", float("nan")))) <= 1e-12 * abs(next(iter(scalings))),
             f"{tag}: scaling PEFT {sorted(scalings)} vs ours {summ.get('scaling')}")
    res["scaling"]["exact_repr_equal"] = len(scalings) == 1 and next(iter(scalings)) == summ.get("scaling")
    res["init_A"] = {
        "init": init,
        "std_ratio_min": round(min(ratios), 4) if ratios else None,
        "std_ratio_max": round(max(ratios), 4) if ratios else None,
        "max_abs_minus_bound": worst_over if (init is True or init == "kaiming") else None,
    }
    ck.check(bool(ratios) and 0.9 < min(ratios) and max(ratios) < 1.1, f"{tag}: lora_A std off for init {init}: {res['init_A']}")
    if init is True or init == "kaiming":
        ck.check(worst_over <= 0.0, f"{tag}: lora_A exceeds the kaiming bound by {worst_over}")

    # logits: B = 0 so the adapted model equals the base (first forward of this copy)
    with capture():
        pl = logits_for(pm, tok)
    c = compare_logits(pl, base_logits)
    res["logits_peft_vs_base"] = c
    ck.check(c.get("bitwise_equal") is True, f"{tag}: PEFT logits differ from the base ({c})")
    with capture():
        with pm.disable_adapter():
            dl = logits_for(pm, tok)
    c2 = compare_logits(pl, dl)
    res["logits_peft_vs_disable_adapter"] = c2
    ck.check(c2.get("bitwise_equal") is True, f"{tag}: PEFT logits differ from the same model with the adapter disabled ({c2})")
    del pm, base
    return res


# ---------------------------------------------------------------------------------------------
# 3. single-file stream
# ---------------------------------------------------------------------------------------------
def check_stream(args, tmp, ck, dir_adapter):
    from safetensors import safe_open

    res = {}
    path = os.path.join(tmp, "a.safetensors")
    run = run_bin(os.path.join(args.bin, "lora-init"), [args.model, "-o", "-"], stdout_path=path)
    summ = run["summary"] or {}
    res["run"] = {k: v for k, v in run.items() if k != "summary"}
    res["summary_on_stderr"] = {k: v for k, v in summ.items() if k != "modules"}
    if not ck.check(run["rc"] == 0, f"stream: lora-init -o - exited {run['rc']}"):
        return res
    ck.check(bool(summ), "stream: no JSON summary on stderr")
    res["bytes"] = os.path.getsize(path)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        names = sorted(f.keys())
        tensors = {k: f.get_tensor(k) for k in names}
    res["metadata_keys"] = sorted(meta)
    cfg = None
    try:
        cfg = json.loads(meta.get("adapter_config", ""))
        res["adapter_config_json"] = "valid"
    except ValueError as e:
        res["adapter_config_json"] = f"invalid: {e}"
    ck.check(isinstance(cfg, dict), "stream: metadata adapter_config missing or not a JSON object")
    if isinstance(cfg, dict):
        res["peft_type"] = cfg.get("peft_type")
        ck.check(cfg.get("peft_type") == "LORA", f"stream: peft_type {cfg.get('peft_type')}")
        try:
            from peft import LoraConfig

            with capture() as got:
                LoraConfig(**cfg)
            res["lora_config_strict"] = "ok"
            ck.check(not messages(got), f"stream: LoraConfig(**metadata) warned {messages(got)}")
        except TypeError as e:
            res["lora_config_strict"] = f"TypeError: {e}"
            ck.check(False, f"stream: LoraConfig(**metadata) failed: {e}")
    res["format_metadata"] = meta.get("format")
    if dir_adapter and os.path.isdir(dir_adapter):
        with open(os.path.join(dir_adapter, "adapter_config.json")) as f:
            dcfg = json.load(f)
        res["adapter_config_equals_directory"] = cfg == dcfg
        ck.check(cfg == dcfg, "stream: metadata adapter_config differs from the directory adapter's adapter_config.json")
        dir_raw, _ = st_raw_tensors(os.path.join(dir_adapter, "adapter_model.safetensors"))
        str_raw, _ = st_raw_tensors(path)
        same = sum(1 for k in str_raw if k in dir_raw and str_raw[k] == dir_raw[k])
        res["tensors"] = {"stream": len(str_raw), "directory": len(dir_raw), "identical": same,
                          "only_stream": sorted(set(str_raw) - set(dir_raw))[:5],
                          "only_directory": sorted(set(dir_raw) - set(str_raw))[:5]}
        ck.check(same == len(str_raw) == len(dir_raw), f"stream: tensors differ from the directory adapter ({res['tensors']})")
        ck.check(len(tensors) == len(str_raw), "stream: safe_open saw a different tensor count")
        ds = {k: v for k, v in SUMMARIES.get(os.path.basename(dir_adapter), {}).items() if k != "output"}
        ss = {k: v for k, v in summ.items() if k != "output"}
        res["summary_equals_directory_summary"] = ds == ss
        ck.check(ds == ss, "stream: JSON summary differs from the directory adapter's (apart from output)")
    else:
        ck.check(False, "stream: no directory adapter to compare with")
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="bf16/fp16/fp32 Hugging Face model folder")
    ap.add_argument("--bin", required=True, help="folder with lora-quantize and lora-init")
    ap.add_argument("--workdir", help="use this folder (created) instead of a temporary one; kept")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads, also given to lora-quantize as LORA_TORCH_THREADS (default: torch's own default)")
    args = ap.parse_args()
    args.model = os.path.abspath(args.model)
    args.bin = os.path.abspath(args.bin)
    for b in ("lora-quantize", "lora-init"):
        if not os.access(os.path.join(args.bin, b), os.X_OK):
            ap.error(f"{os.path.join(args.bin, b)} is not an executable")
    if not os.path.isfile(os.path.join(args.model, "config.json")):
        ap.error(f"{args.model} has no config.json")

    t_start = time.perf_counter()
    with capture() as import_msgs:
        import bitsandbytes
        import peft
        import safetensors
        import torch
        import transformers
    if args.threads <= 0:
        args.threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover
        pass

    if args.workdir:
        tmp = os.path.abspath(args.workdir)
        os.makedirs(tmp, exist_ok=False)
    else:
        tmp = tempfile.mkdtemp(prefix="check_interop-")
    ck = Checker()
    result = {
        "model": args.model,
        "bin": args.bin,
        "workdir": tmp,
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "bitsandbytes": bitsandbytes.__version__,
            "safetensors": safetensors.__version__,
        },
        "torch_threads": torch.get_num_threads(),
        "import_messages": messages(import_msgs),
    }

    def section(key, fn, *a):
        try:
            return fn(*a)
        except Exception as e:
            ck.check(False, f"{key}: exception {type(e).__name__}: {e}")
            result.setdefault("exceptions", {})[key] = traceback.format_exc()[-3000:]
            return None

    try:
        qres = {}
        result["quantize"] = qres
        nf4 = section("quantize", check_quantize, args, tmp, ck, qres)

        result["peft"] = {}
        jobs = [
            ("adapter", args.model, ["--rank", "16", "--targets", "q_proj,k_proj,v_proj,o_proj", "--seed", "0"], False),
            ("adapter-all", args.model, ["--rank", "8", "--targets", "all-linear", "--rslora", "--init", "gaussian"], False),
        ]
        if nf4:
            jobs.append(("adapter-q", nf4, [], True))
        else:
            ck.check(False, "peft[adapter-q]: skipped, no quantized model")
        for name, base_dir, argv, quantized in jobs:
            result["peft"][name] = section(f"peft[{name}]", check_adapter, args, tmp, ck, name, base_dir, argv, quantized)

        result["stream"] = section("stream", check_stream, args, tmp, ck, os.path.join(tmp, "adapter"))
    finally:
        result["failures"] = ck.failures
        result["ok"] = not ck.failures
        result["seconds"] = round(time.perf_counter() - t_start, 1)
        if not args.workdir and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
            result["workdir_removed"] = True
        print(json.dumps(result, indent=1, default=str))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
