#!/usr/bin/env python3
"""Generate forward-pass parity fixtures (base model + PEFT LoRA) for the Swift engine.

Run from the repository root:  .venv/bin/python scripts/gen_model_fixtures.py

Writes (replacing) Tests/LoRASharedTests/Fixtures/forward/.  Each case folder holds
  model/            base model dir (config.json, generation_config.json, model.safetensors)
  adapter/          PEFT adapter written by save_pretrained (adapter_config.json,
                    adapter_model.safetensors); A and B both non-zero
  io.safetensors    inputs and reference outputs (see README.md in the output folder)
  meta.json         description, versions, the exact calls that produced every tensor, checks
and forward/README.md lists the cases.

Reads the tiny models that scripts/gen_fixtures.py wrote (tiny-llama, tiny-llama-fp32,
tiny-llama-bnb, tiny-qwen2) and copies them byte for byte; the llama3-rope and
llama-linear-rope base models are created here.

Everything is seeded and single-threaded, PYTHONHASHSEED is pinned (PEFT writes the
"all-linear" target_modules list in set order).  Running it twice gives identical bytes.

Besides transformers/PEFT, every case is recomputed by an independent float64 reference
(`ref_forward` below, written from docs/formats.md section 7 and section 3) and the result must agree
with the transformers float32 logits; the agreement is recorded in meta.json.
"""
import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import json
import logging
import math
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")

import bitsandbytes as bnb  # noqa: E402
import bitsandbytes.functional as BF  # noqa: E402
import peft  # noqa: E402
import safetensors  # noqa: E402
import transformers  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402

transformers.logging.set_verbosity_error()
transformers.logging.disable_progress_bar()
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "Tests" / "LoRASharedTests" / "Fixtures"
OUT = FIX / "forward"
SEED = 20240611
PAD_ID = 0
LORA_B_STD = 0.05

VERSIONS = {"python": sys.version.split()[0], "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__,
            "bitsandbytes": bnb.__version__, "safetensors": safetensors.__version__}


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
def reset_dir(p: Path):
    if p.exists():
        shutil.rmtree(p)
    p.mkdir(parents=True)


def copy_model(src: Path, dst: Path):
    dst.mkdir(parents=True)
    for fn in ("config.json", "generation_config.json", "model.safetensors"):
        if (src / fn).exists():
            shutil.copyfile(src / fn, dst / fn)


def fmax(t):
    return float(t.abs().max())


def make_inputs(seed, batch, seq, lengths, vocab):
    """Random ids in [3, vocab); right padding with PAD_ID; labels = ids, -100 on padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, seq), generator=g, dtype=torch.int64)
    mask = torch.zeros(batch, seq, dtype=torch.int64)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    ids = torch.where(mask.bool(), ids, torch.full_like(ids, PAD_ID))
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
    return ids, mask, labels


@torch.no_grad()
def hf_run(model, ids, mask, labels):
    o = model(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True,
              use_cache=False)
    hs = torch.stack([h.float() for h in o.hidden_states])
    return {"logits": o.logits.float().contiguous(), "loss": o.loss.float().reshape(1),
            "hidden": hs.contiguous()}


def manual_loss(logits, labels):
    """mean over positions t with labels[t+1] != -100 of -log softmax(logits[t])[labels[t+1]]."""
    lg = logits[:, :-1].double()
    lb = labels[:, 1:]
    keep = lb != -100
    lp = torch.log_softmax(lg, dim=-1)
    nll = -lp.gather(-1, lb.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return float(nll[keep].mean()), int(keep.sum())


def load_base(path, **kw):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                attn_implementation="eager", **kw).eval()


def randomize_lora_B(pm, seed):
    """Replace every lora_B weight with N(0, LORA_B_STD) values from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    names = []
    with torch.no_grad():
        for name, p in sorted(pm.named_parameters(), key=lambda kv: kv[0]):
            if ".lora_B." in name:
                p.copy_((torch.randn(p.shape, generator=g, dtype=torch.float32) * LORA_B_STD).to(p.dtype))
                names.append(name)
    assert names
    return names


def make_adapter(base, lora_kwargs, seed, dst: Path):
    """get_peft_model(init_lora_weights=False) + seeded lora_B, save_pretrained -> dst."""
    torch.manual_seed(seed)
    cfg = LoraConfig(task_type="CAUSAL_LM", init_lora_weights=False, lora_dropout=0.0,
                     **lora_kwargs)
    pm = get_peft_model(base, cfg)
    randomize_lora_B(pm, seed + 1)
    pm.eval()
    with tempfile.TemporaryDirectory() as td:
        pm.save_pretrained(td)
        dst.mkdir(parents=True)
        for fn in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copyfile(Path(td) / fn, dst / fn)
    scalings = {}
    for name, mod in pm.named_modules():
        if hasattr(mod, "scaling") and isinstance(mod.scaling, dict) and "default" in mod.scaling:
            scalings[name.replace("base_model.model.", "", 1)] = {
                "r": int(mod.r["default"]), "lora_alpha": float(mod.lora_alpha["default"]),
                "scaling": float(mod.scaling["default"])}
    with safe_open(str(dst / "adapter_model.safetensors"), "pt") as f:
        dtypes = sorted({f.get_slice(k).get_dtype() for k in f.keys()})
        n_tensors = len(list(f.keys()))
    return pm, scalings, {"tensor_dtypes": dtypes, "n_tensors": n_tensors}


# ----------------------------------------------------------------------------------------------
# independent float64 reference (docs/formats.md section 7 + section 3)
# ----------------------------------------------------------------------------------------------
def rope_inv_freq(cfg):
    rp = dict(cfg.get("rope_parameters") or {})
    if not rp:  # legacy layout
        rp = dict(cfg.get("rope_scaling") or {})
        rp.setdefault("rope_theta", cfg.get("rope_theta", 10000.0))
    rtype = rp.get("rope_type", rp.get("type", "default"))
    theta = float(rp.get("rope_theta", cfg.get("rope_theta", 10000.0)))
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    j = torch.arange(0, hd, 2, dtype=torch.float64)
    inv = 1.0 / (theta ** (j / hd))
    if rtype == "default":
        return inv
    if rtype == "linear":
        return inv / float(rp["factor"])
    if rtype == "llama3":
        factor = float(rp["factor"])
        low, high = float(rp["low_freq_factor"]), float(rp["high_freq_factor"])
        orig = float(rp["original_max_position_embeddings"])
        out = []
        for f in inv.tolist():
            lam = 2 * math.pi / f
            if lam < orig / high:
                out.append(f)
            elif lam > orig / low:
                out.append(f / factor)
            else:
                s = (orig / lam - low) / (high - low)
                out.append((1 - s) * f / factor + s * f)
        return torch.tensor(out, dtype=torch.float64)
    raise ValueError(rtype)


def lora_scalings_from_config(ac, module_name):
    """(r, alpha, scaling) for one module, from adapter_config.json (rank/alpha patterns)."""
    def pick(patterns, default):
        for key, val in patterns.items():
            if re.match(rf"(.*\.)?({key})$", module_name):
                return val
        return default
    r = pick(ac.get("rank_pattern") or {}, ac["r"])
    alpha = pick(ac.get("alpha_pattern") or {}, ac["lora_alpha"])
    s = alpha / math.sqrt(r) if ac.get("use_rslora") else alpha / r
    return r, alpha, s


def load_lora(adapter_dir):
    ac = json.loads((adapter_dir / "adapter_config.json").read_text())
    t = load_file(str(adapter_dir / "adapter_model.safetensors"))
    lora = {}
    for k, v in t.items():
        m = re.fullmatch(r"base_model\.model\.(.*)\.lora_([AB])\.weight", k)
        assert m, k
        lora.setdefault(m.group(1), {})[m.group(2)] = v.double()
    for name, d in lora.items():
        r, alpha, s = lora_scalings_from_config(ac, name)
        assert d["A"].shape[0] == r and d["B"].shape[1] == r, (name, r)
        d["scaling"] = s
    return lora


def ref_forward(W, cfg, ids, mask, lora=None):
    """Pure float64 Llama/Qwen2 forward. W: name -> tensor (any float dtype, upcast).

    Semantics: positions 0..T-1 for every row (right padding); key j is visible to query i iff
    j <= i and mask[b, j] == 1 (padded queries still attend to all valid keys before them)."""
    d = torch.float64
    W = {k: v.to(d) for k, v in W.items()}
    lora = lora or {}
    B, T = ids.shape
    hid = cfg["hidden_size"]
    H, KV = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or hid // H
    eps = cfg["rms_norm_eps"]

    def lin(name, x):
        y = x @ W[name + ".weight"].T
        if name + ".bias" in W:
            y = y + W[name + ".bias"]
        if name in lora:
            l = lora[name]
            y = y + l["scaling"] * ((x @ l["A"].T) @ l["B"].T)
        return y

    def rms(x, w):
        return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w

    inv = rope_inv_freq(cfg)
    pos = torch.arange(T, dtype=d)
    ang = pos[:, None] * inv[None, :]
    cos = torch.cat([ang.cos(), ang.cos()], -1)
    sin = torch.cat([ang.sin(), ang.sin()], -1)

    def rope(x):  # [B, h, T, hd]
        rot = torch.cat([-x[..., hd // 2:], x[..., :hd // 2]], -1)
        return x * cos + rot * sin

    allowed = torch.tril(torch.ones(T, T, dtype=torch.bool))[None] & mask.bool()[:, None, :]
    x = W["model.embed_tokens.weight"][ids]
    hs = [x]
    for li in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{li}"
        n = rms(x, W[p + ".input_layernorm.weight"])
        q = lin(p + ".self_attn.q_proj", n).view(B, T, H, hd).transpose(1, 2)
        k = lin(p + ".self_attn.k_proj", n).view(B, T, KV, hd).transpose(1, 2)
        v = lin(p + ".self_attn.v_proj", n).view(B, T, KV, hd).transpose(1, 2)
        q, k = rope(q), rope(k)
        rep = H // KV
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        sc = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        sc = sc.masked_fill(~allowed[:, None], float("-inf"))
        a = torch.softmax(sc, -1) @ v
        a = a.transpose(1, 2).reshape(B, T, H * hd)
        x = x + lin(p + ".self_attn.o_proj", a)
        n = rms(x, W[p + ".post_attention_layernorm.weight"])
        g = lin(p + ".mlp.gate_proj", n)
        u = lin(p + ".mlp.up_proj", n)
        x = x + lin(p + ".mlp.down_proj", torch.nn.functional.silu(g) * u)
        hs.append(x)
    x = rms(x, W["model.norm.weight"])
    hs[-1] = x  # transformers' last hidden_states entry is the final-norm output
    head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    return x @ head.T, torch.stack(hs)


def ref_check(W, cfg, ids, mask, adapter_dir, out_base, out_lora):
    lb, hb = ref_forward(W, cfg, ids, mask)
    ll, hl = ref_forward(W, cfg, ids, mask, load_lora(adapter_dir))
    res = {"max_abs_logits_base_vs_f64": fmax(out_base["logits"].double() - lb),
           "max_abs_logits_lora_vs_f64": fmax(out_lora["logits"].double() - ll),
           "max_abs_hidden_base_vs_f64": fmax(out_base["hidden"].double() - hb),
           "max_abs_hidden_lora_vs_f64": fmax(out_lora["hidden"].double() - hl)}
    for k, v in res.items():
        assert v < 5e-4, (k, v)
    return res


def model_weights(path: Path):
    return load_file(str(path / "model.safetensors"))


# ----------------------------------------------------------------------------------------------
# generic case
# ----------------------------------------------------------------------------------------------
def io_tensors(ids, mask, labels, base, lora):
    return {"input_ids": ids.contiguous(), "attention_mask": mask.contiguous(),
            "labels": labels.contiguous(),
            "logits_base": base["logits"], "logits_lora": lora["logits"],
            "loss_base": base["loss"], "loss_lora": lora["loss"],
            "hidden_last": base["hidden"][-1].clone(),
            "hidden_last_lora": lora["hidden"][-1].clone()}


def summarize(ids, mask, labels, base, lora):
    lb, n = manual_loss(base["logits"], labels)
    ll, _ = manual_loss(lora["logits"], labels)
    assert abs(lb - float(base["loss"])) < 1e-5 and abs(ll - float(lora["loss"])) < 1e-5
    valid = mask.bool()
    d = (lora["logits"] - base["logits"]).abs()
    return {"B": ids.shape[0], "T": ids.shape[1], "row_lengths": mask.sum(1).tolist(),
            "loss_terms": n,
            "loss_base": float(base["loss"]), "loss_lora": float(lora["loss"]),
            "max_abs_logits_lora_minus_base": float(d.max()),
            "max_abs_logits_lora_minus_base_valid_positions": float(d[valid].max()),
            "mean_abs_logits_lora_minus_base": float(d.mean()),
            "max_abs_logits_base": fmax(base["logits"])}


def padding_checks(model, ids, mask, full):
    """Row 1 alone (unpadded, its valid prefix) vs its padded row in the batch."""
    n = int(mask[1].sum())
    with torch.no_grad():
        o = model(input_ids=ids[1:2, :n], use_cache=False)
    return {"row1_valid_positions_vs_unpadded_run_max_abs": fmax(o.logits[0] - full["logits"][1, :n])}


def run_case(name, desc, model_src, model_dir_writer, lora_kwargs, seed, batch, seq, lengths,
             extra=None, adapter_from=None):
    cdir = OUT / name
    cdir.mkdir(parents=True)
    model_dir_writer(cdir / "model")
    cwd = os.getcwd()
    os.chdir(cdir)  # base_model_name_or_path becomes the relative "model"
    try:
        cfg = json.loads(Path("model/config.json").read_text())
        ids, mask, labels = make_inputs(seed, batch, seq, lengths, cfg["vocab_size"])
        base_model = load_base("model")
        out_base = hf_run(base_model, ids, mask, labels)
        pad = padding_checks(base_model, ids, mask, out_base)
        with torch.no_grad():
            lh = base_model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        last_is_norm = bool(torch.equal(lh.float(), out_base["hidden"][-1]))
        assert last_is_norm
        if adapter_from is None:
            pm, scalings, ainfo = make_adapter(base_model, lora_kwargs, seed + 100, Path("adapter"))
        else:
            Path("adapter").mkdir()
            for fn in ("adapter_config.json", "adapter_model.safetensors"):
                shutil.copyfile(OUT / adapter_from / "adapter" / fn, Path("adapter") / fn)
            pm = PeftModel.from_pretrained(base_model, "adapter").eval()
            scalings, ainfo = None, {"copied_from": f"forward/{adapter_from}/adapter"}
        out_mem = hf_run(pm, ids, mask, labels)
        with pm.disable_adapter():
            out_dis = hf_run(pm, ids, mask, labels)
        # what gets recorded: a fresh base + PeftModel.from_pretrained(saved adapter)
        pm2 = PeftModel.from_pretrained(load_base("model"), "adapter").eval()
        out_lora = hf_run(pm2, ids, mask, labels)
        checks = {
            "in_memory_peft_vs_reloaded_adapter_max_abs": fmax(out_mem["logits"] - out_lora["logits"]),
            "disable_adapter_vs_base_max_abs": fmax(out_dis["logits"] - out_base["logits"]),
        }
        assert checks["in_memory_peft_vs_reloaded_adapter_max_abs"] == 0.0
        assert checks["disable_adapter_vs_base_max_abs"] == 0.0
        checks["hidden_states_last_equals_model_norm_output"] = last_is_norm
        checks.update(pad)
        checks.update(ref_check(model_weights(Path("model")), cfg, ids, mask, Path("adapter"),
                                out_base, out_lora))
        tensors = io_tensors(ids, mask, labels, out_base, out_lora)
        summary = summarize(ids, mask, labels, out_base, out_lora)
        ex = extra(cfg, ids, mask, labels, tensors) if extra else {}
        save_file(tensors, "io.safetensors", metadata={"format": "pt"})
        meta = {
            "case": name, "description": desc, "versions": VERSIONS,
            "generator": "PYTHONHASHSEED=0 .venv/bin/python scripts/gen_model_fixtures.py "
                         "(torch.set_num_threads(1))",
            "base_model": model_src,
            "calls": {
                "base": 'AutoModelForCausalLM.from_pretrained("model", dtype=torch.float32, '
                        'attn_implementation="eager").eval()',
                "adapter": (f"torch.manual_seed({seed + 100}); get_peft_model(base, LoraConfig("
                            f"task_type='CAUSAL_LM', init_lora_weights=False, lora_dropout=0.0, "
                            f"**{lora_kwargs!r})); then every lora_B (sorted by name) <- "
                            f"N(0, {LORA_B_STD}) from torch.Generator().manual_seed({seed + 101}); "
                            f"save_pretrained") if adapter_from is None else
                           f"byte copy of forward/{adapter_from}/adapter",
                "inputs": f"torch.randint(3, {cfg['vocab_size']}, ({batch}, {seq}), "
                          f"generator=torch.Generator().manual_seed({seed})); right padding: "
                          f"row b valid for t < {lengths}[b], padded ids = {PAD_ID}; labels = "
                          f"input_ids with -100 where attention_mask == 0",
                "forward": "with torch.no_grad(): model(input_ids=input_ids, attention_mask="
                           "attention_mask, labels=labels, output_hidden_states=True, "
                           "use_cache=False)",
                "lora": 'PeftModel.from_pretrained(<fresh base as above>, "adapter").eval(), same '
                        "forward",
            },
            "tensors": {
                "input_ids": "I64 [B,T]", "attention_mask": "I64 [B,T] (right padding)",
                "labels": "I64 [B,T] (input_ids, -100 at padding)",
                "logits_base": "F32 [B,T,V] base model, all positions (padding included)",
                "logits_lora": "F32 [B,T,V] base + adapter",
                "loss_base": "F32 [1] transformers loss: mean over t with labels[t+1] != -100",
                "loss_lora": "F32 [1]",
                "hidden_last": "F32 [B,T,hidden] final-norm output, base",
                "hidden_last_lora": "F32 [B,T,hidden] final-norm output, with adapter"},
            "hidden_states_note": "output_hidden_states gives L+1 entries: [0] embeddings, [i] "
                                  "output of layer i-1 for i < L, [L] the final-norm output (the "
                                  "raw output of the last layer is not among them); hidden_last "
                                  "is entry [L] (asserted equal to model.model(...)"
                                  ".last_hidden_state)",
            "adapter": ainfo, "lora_kwargs": lora_kwargs if adapter_from is None else None,
            "effective_scaling_per_module": scalings,
            "results": summary, "checks": checks,
        }
        meta.update(ex)
        Path("meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        return summary
    finally:
        os.chdir(cwd)


# ----------------------------------------------------------------------------------------------
# rope cases: new tiny models
# ----------------------------------------------------------------------------------------------
def rope_model_writer(rope_parameters, seed):
    def write(dst: Path):
        cfg = LlamaConfig(hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                          vocab_size=256, tie_word_embeddings=False, max_position_embeddings=256,
                          rms_norm_eps=1e-5, rope_parameters=dict(rope_parameters))
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        m = LlamaForCausalLM(cfg)
        with torch.no_grad():
            for name, p in m.named_parameters():
                if name.endswith("norm.weight"):
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                elif name.endswith(("q_proj.weight", "k_proj.weight")):
                    # sharper attention (scores O(1)) so that RoPE visibly matters
                    p.copy_(0.25 * torch.randn(p.shape, generator=g))
        m.save_pretrained(dst)
    return write


def rope_extra(rope_parameters):
    def extra(cfg, ids, mask, labels, tensors):
        # 1) how much the rope scaling matters: same weights, default rope
        with tempfile.TemporaryDirectory() as td:
            shutil.copyfile("model/model.safetensors", Path(td) / "model.safetensors")
            j = json.loads(Path("model/config.json").read_text())
            j["rope_parameters"] = {"rope_theta": j["rope_parameters"]["rope_theta"],
                                    "rope_type": "default"}
            (Path(td) / "config.json").write_text(json.dumps(j))
            o = hf_run(load_base(td), ids, mask, labels)
        diff_default = fmax(o["logits"] - tensors["logits_base"])
        # 2) legacy config.json layout (top-level rope_theta + rope_scaling) gives the same logits
        j = json.loads(Path("model/config.json").read_text())
        rp = dict(j.pop("rope_parameters"))
        legacy = dict(j)
        legacy["rope_theta"] = rp.pop("rope_theta")
        legacy["rope_scaling"] = rp
        legacy_text = json.dumps(legacy, indent=2, sort_keys=True) + "\n"
        Path("config.legacy-rope_scaling.json").write_text(legacy_text)
        with tempfile.TemporaryDirectory() as td:
            shutil.copyfile("model/model.safetensors", Path(td) / "model.safetensors")
            (Path(td) / "config.json").write_text(legacy_text)
            lc = AutoConfig.from_pretrained(td)
            o2 = hf_run(load_base(td), ids, mask, labels)
        assert torch.equal(o2["logits"], tensors["logits_base"])
        inv = rope_inv_freq(cfg)
        hd = cfg["head_dim"]
        theta = cfg["rope_parameters"]["rope_theta"]
        raw = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        return {"rope": {
            "config_json_rope_parameters": cfg["rope_parameters"],
            "inv_freq_f64_reference": inv.tolist(),
            "inv_freq_unscaled": raw.tolist(),
            "wavelength_unscaled": (2 * math.pi / raw).tolist(),
            "max_abs_logits_vs_same_weights_default_rope": diff_default,
            "legacy_config_file": "config.legacy-rope_scaling.json (same config with top-level "
                                  "rope_theta + rope_scaling instead of rope_parameters); "
                                  "transformers reads it into rope_parameters = "
                                  + json.dumps(lc.rope_parameters, sort_keys=True)
                                  + " and gives bitwise identical logits_base",
        }}
    return extra


# ----------------------------------------------------------------------------------------------
# NF4 case
# ----------------------------------------------------------------------------------------------
def nf4_dequant_from_file(path: Path):
    """Exact fp32 dequantization of every bnb 4-bit weight in a safetensors file.

    Returns (fp32 state dict with non-quantized tensors upcast, bf16-rounded variant, info)."""
    t = load_file(str(path))
    qnames = sorted(k[:-len(".absmax")] for k in t if k.endswith(".weight.absmax"))
    sd32, sdbf, info = {}, {}, {}
    for k, v in t.items():
        if any(k.startswith(q + ".") for q in qnames) or k in qnames:
            continue
        sd32[k] = v.float()
        sdbf[k] = v.float()
    for q in qnames:
        comp = {k[len(q) + 1:]: v for k, v in t.items() if k.startswith(q + ".")}
        qs = BF.QuantState.from_dict(comp, device=torch.device("cpu"))
        packed = t[q]
        # bitsandbytes, forced to fp32 output
        am32 = BF.dequantize_blockwise(qs.absmax, qs.state2) + qs.offset
        w32 = torch.ops.bitsandbytes.dequantize_4bit.default(packed, am32.float(), qs.blocksize,
                                                             qs.quant_type, qs.shape, torch.float32)
        # pure torch formula (docs/formats.md §1.6 / §1.7) must agree bit for bit
        idx = comp["absmax"].long()
        am_ref = comp["nested_quant_map"][idx] * comp["nested_absmax"][torch.arange(idx.numel()) // 256]
        am_ref = am_ref + torch.tensor(qs.offset, dtype=torch.float32)
        flat = packed.reshape(-1)
        nib = torch.stack([flat >> 4, flat & 0xF], 1).reshape(-1).long()
        n = math.prod(qs.shape)
        w_ref = (comp["quant_map"][nib[:n]] * am_ref[torch.arange(n) // qs.blocksize]).reshape(qs.shape)
        assert torch.equal(am_ref, am32), q
        assert torch.equal(w_ref, w32), q
        # bitsandbytes' own dequantize_4bit(packed, quant_state): output in quant_state.dtype
        wdef = BF.dequantize_4bit(packed, qs)
        assert wdef.dtype == qs.dtype
        assert torch.equal(wdef, w32.to(qs.dtype)), q
        sd32[q] = w32
        sdbf[q] = wdef.float()
        info[q] = {"shape": list(qs.shape), "stored_dtype": str(qs.dtype).replace("torch.", ""),
                   "offset": float(qs.offset),
                   "max_abs_fp32_minus_bf16_rounded": fmax(w32 - wdef.float())}
    return sd32, sdbf, info


def fp32_llama_from_state(cfg_dict, sd):
    c = dict(cfg_dict)
    c.pop("quantization_config", None)
    c["dtype"] = "float32"
    cfg = LlamaConfig(**{k: v for k, v in c.items() if k not in ("architectures",
                                                                 "transformers_version")})
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    m = LlamaForCausalLM(cfg)
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert not unexpected, unexpected
    assert set(missing) <= {"lm_head.weight"}, missing
    m.tie_weights()
    assert torch.equal(m.lm_head.weight, m.model.embed_tokens.weight)
    return m.float().eval()


def bnb_load(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, device_map="cpu",
                                                attn_implementation="eager").eval()


def bnb_force_fp32(m, packed_kernel):
    """Upcast every non-4-bit parameter to fp32, compute_dtype fp32 on every Linear4bit."""
    for _, p in m.named_parameters():
        if not isinstance(p, bnb.nn.Params4bit):
            p.data = p.data.float()
    for _, mod in m.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            mod.compute_dtype = torch.float32
            mod.compute_type_is_set = True
            if not packed_kernel:
                mod.support_avx512bf16_for_cpu = False
    return m


def linear4bit_state(m):
    mod = next(mm for _, mm in m.named_modules() if isinstance(mm, bnb.nn.Linear4bit))
    qs = mod.weight.quant_state
    return {"compute_dtype": str(mod.compute_dtype), "quant_state.dtype": str(qs.dtype),
            "absmax.dtype": str(qs.absmax.dtype),
            "packing_format_for_cpu": bool(getattr(qs, "packing_format_for_cpu", False)),
            "embed_tokens.dtype": str(m.get_input_embeddings().weight.dtype),
            "support_avx512bf16_for_cpu": bool(mod.support_avx512bf16_for_cpu)}


def run_nf4_case(name, desc, seed, batch, seq, lengths, lora_kwargs):
    cdir = OUT / name
    cdir.mkdir(parents=True)
    copy_model(FIX / "tiny-llama-bnb", cdir / "model")
    cwd = os.getcwd()
    os.chdir(cdir)
    try:
        cfg = json.loads(Path("model/config.json").read_text())
        ids, mask, labels = make_inputs(seed, batch, seq, lengths, cfg["vocab_size"])
        sd32, sdbf, dq_info = nf4_dequant_from_file(Path("model/model.safetensors"))

        # --- the 4-bit model as transformers loads it; PEFT adapter created on it -------------
        qm = bnb_load("model")
        as_loaded = linear4bit_state(qm)
        from transformers import BitsAndBytesConfig
        with warnings.catch_warnings(record=True) as wl:
            warnings.simplefilter("always")
            q32 = AutoModelForCausalLM.from_pretrained(
                "model", dtype=torch.float32, device_map="cpu", attn_implementation="eager",
                quantization_config=BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                    bnb_4bit_compute_dtype=torch.float32))
        with_qc = linear4bit_state(q32)
        with_qc_warnings = sorted({str(w.message).split(".")[0] for w in wl
                                   if "quantization_config" in str(w.message)})
        del q32
        pm_q, scalings, ainfo = make_adapter(qm, lora_kwargs, seed + 100, Path("adapter"))

        # --- A: exact fp32 dequantization (primary reference) --------------------------------
        ref = fp32_llama_from_state(cfg, sd32)
        out_base = hf_run(ref, ids, mask, labels)
        pad = padding_checks(ref, ids, mask, out_base)
        out_lora = hf_run(PeftModel.from_pretrained(fp32_llama_from_state(cfg, sd32), "adapter")
                          .eval(), ids, mask, labels)
        # --- B: dequantize_4bit default output (bf16, the stored dtype), then fp32 compute ---
        out_base_bf = hf_run(fp32_llama_from_state(cfg, sdbf), ids, mask, labels)
        out_lora_bf = hf_run(PeftModel.from_pretrained(fp32_llama_from_state(cfg, sdbf), "adapter")
                             .eval(), ids, mask, labels)
        # --- C: bnb runtime, everything as transformers loads it (bf16), eval/no-grad ---------
        pm_q.eval()
        out_lora_c = hf_run(pm_q, ids, mask, labels)  # first forward: repacks for the CPU kernel
        after_fwd = linear4bit_state(pm_q)
        with pm_q.disable_adapter():
            out_base_c = hf_run(pm_q, ids, mask, labels)
        # --- D: bnb runtime, non-4-bit params + compute_dtype fp32, CPU AVX512-BF16 kernel -----
        md = bnb_force_fp32(bnb_load("model"), packed_kernel=True)
        out_base_d = hf_run(md, ids, mask, labels)
        d_state = linear4bit_state(md)
        out_lora_d = hf_run(PeftModel.from_pretrained(
            bnb_force_fp32(bnb_load("model"), packed_kernel=True), "adapter").eval(),
            ids, mask, labels)
        # --- E: bnb runtime, fp32, packed kernel disabled (default dequantize + F.linear) -----
        me = bnb_force_fp32(bnb_load("model"), packed_kernel=False)
        out_base_e = hf_run(me, ids, mask, labels)
        e_state = linear4bit_state(me)
        out_lora_e = hf_run(PeftModel.from_pretrained(
            bnb_force_fp32(bnb_load("model"), packed_kernel=False), "adapter").eval(),
            ids, mask, labels)

        checks = {
            "E_vs_A_logits_base_max_abs": fmax(out_base_e["logits"] - out_base["logits"]),
            "E_vs_A_logits_lora_max_abs": fmax(out_lora_e["logits"] - out_lora["logits"]),
            "B_vs_A_logits_base_max_abs": fmax(out_base_bf["logits"] - out_base["logits"]),
            "B_vs_A_logits_lora_max_abs": fmax(out_lora_bf["logits"] - out_lora["logits"]),
            "C_vs_A_logits_base_max_abs": fmax(out_base_c["logits"] - out_base["logits"]),
            "C_vs_A_logits_lora_max_abs": fmax(out_lora_c["logits"] - out_lora["logits"]),
            "D_vs_A_logits_base_max_abs": fmax(out_base_d["logits"] - out_base["logits"]),
            "D_vs_A_logits_lora_max_abs": fmax(out_lora_d["logits"] - out_lora["logits"]),
            "C_loss_base": float(out_base_c["loss"]), "C_loss_lora": float(out_lora_c["loss"]),
            "D_loss_base": float(out_base_d["loss"]), "D_loss_lora": float(out_lora_d["loss"]),
            "E_loss_base": float(out_base_e["loss"]), "E_loss_lora": float(out_lora_e["loss"]),
            "B_loss_base": float(out_base_bf["loss"]), "B_loss_lora": float(out_lora_bf["loss"]),
        }
        checks.update(pad)
        checks.update(ref_check(sd32, cfg, ids, mask, Path("adapter"), out_base, out_lora))
        tensors = io_tensors(ids, mask, labels, out_base, out_lora)
        tensors.update({
            "logits_base_dq_bf16": out_base_bf["logits"], "logits_lora_dq_bf16": out_lora_bf["logits"],
            "loss_base_dq_bf16": out_base_bf["loss"], "loss_lora_dq_bf16": out_lora_bf["loss"],
            "logits_base_bnb_cpu_kernel": out_base_d["logits"],
            "logits_lora_bnb_cpu_kernel": out_lora_d["logits"],
            "loss_base_bnb_cpu_kernel": out_base_d["loss"],
            "loss_lora_bnb_cpu_kernel": out_lora_d["loss"],
        })
        summary = summarize(ids, mask, labels, out_base, out_lora)
        save_file(tensors, "io.safetensors", metadata={"format": "pt"})
        meta = {
            "case": name, "description": desc, "versions": VERSIONS,
            "generator": "PYTHONHASHSEED=0 .venv/bin/python scripts/gen_model_fixtures.py "
                         "(torch.set_num_threads(1))",
            "base_model": "byte copy of Fixtures/tiny-llama-bnb (NF4, blocksize 64, double quant, "
                          "quant_state dtype bfloat16; embeddings/norms bf16; tied head)",
            "variants": {
                "A (logits_base, logits_lora, loss_*, hidden_*)":
                    "PRIMARY. Every 4-bit weight dequantized exactly in fp32 before any forward: "
                    "absmax = nested_quant_map[absmax_u8] * nested_absmax[i/256] + offset (fp32), "
                    "w = quant_map[nibble] * absmax[i/64] (fp32, never rounded to bf16); "
                    "embeddings/norms upcast bf16->fp32; loaded into a plain fp32 "
                    "LlamaForCausalLM(eager); adapter via PeftModel.from_pretrained. "
                    "bnb's torch.ops.bitsandbytes.dequantize_4bit(..., dtype=float32) and the "
                    "pure-torch formula agree bit for bit (asserted).",
                "B (*_dq_bf16)":
                    "as A, but w = bitsandbytes.functional.dequantize_4bit(packed, quant_state), "
                    "whose output dtype is quant_state.dtype = bfloat16 (w rounded to bf16), then "
                    "fp32 compute",
                "C (not stored)":
                    "bnb runtime as transformers 5 loads the checkpoint: everything bf16 (see "
                    "'transformers_load'), Linear4bit eval/no-grad forward on this AVX512-BF16 CPU "
                    "(repacked weight, bf16 absmax, bf16 kernel)",
                "D (*_bnb_cpu_kernel)":
                    "bnb runtime with every non-4-bit parameter upcast to fp32 and "
                    "Linear4bit.compute_dtype = float32; eval/no-grad still takes the "
                    "AVX512-BF16 packed kernel (gemv_4bit casts activations and absmax to bf16)",
                "E (not stored)":
                    "as D with Linear4bit.support_avx512bf16_for_cpu = False: default gemm_4bit "
                    "(dequantize to fp32 + F.linear); expected to equal A",
            },
            "transformers_load": {
                "call": 'AutoModelForCausalLM.from_pretrained("model", dtype=torch.float32, '
                        'device_map="cpu", attn_implementation="eager")',
                "state_after_load": as_loaded,
                "call_with_quantization_config": 'same + quantization_config=BitsAndBytesConfig('
                                                 'load_in_4bit=True, bnb_4bit_quant_type="nf4", '
                                                 'bnb_4bit_use_double_quant=True, '
                                                 'bnb_4bit_compute_dtype=torch.float32)',
                "state_after_load_with_quantization_config": with_qc,
                "warnings_with_quantization_config": with_qc_warnings,
                "state_after_first_eval_forward": after_fwd,
                "D_state_after_forward": d_state, "E_state_after_forward": e_state,
                "note": "for a pre-quantized bnb checkpoint transformers 5 uses the checkpoint's "
                        "quantization_config (bnb_4bit_compute_dtype bfloat16); a "
                        "BitsAndBytesConfig passed to from_pretrained is ignored except for "
                        "'loading attributes' (warning 'The quantization_config from the model "
                        "will be used', see state_after_load_with_quantization_config), and "
                        "dtype=torch.float32 does not upcast the non-quantized tensors either "
                        "(embeddings/norms stay bf16). In eval/no-grad the first forward "
                        "repacks every Linear4bit for the AVX512-BF16 kernel (absmax -> bf16, "
                        "packing_format_for_cpu); variant D shows this happens even with fp32 "
                        "compute_dtype, because gemv_4bit casts activations to bf16.",
            },
            "dequantized_weights": dq_info,
            "calls": {
                "adapter": f"torch.manual_seed({seed + 100}); get_peft_model(<4-bit model as "
                           f"loaded above>, LoraConfig(task_type='CAUSAL_LM', "
                           f"init_lora_weights=False, lora_dropout=0.0, **{lora_kwargs!r})); "
                           f"every lora_B (sorted by name) <- N(0, {LORA_B_STD}) from "
                           f"torch.Generator().manual_seed({seed + 101}); save_pretrained",
                "inputs": f"torch.randint(3, {cfg['vocab_size']}, ({batch}, {seq}), "
                          f"generator=torch.Generator().manual_seed({seed})); right padding: "
                          f"row b valid for t < {lengths}[b], padded ids = {PAD_ID}; labels = "
                          f"input_ids with -100 where attention_mask == 0",
                "forward": "with torch.no_grad(): model(input_ids=input_ids, attention_mask="
                           "attention_mask, labels=labels, output_hidden_states=True, "
                           "use_cache=False)",
            },
            "tensors": "as the other cases, plus logits_*_dq_bf16 / loss_*_dq_bf16 (variant B) "
                       "and logits_*_bnb_cpu_kernel / loss_*_bnb_cpu_kernel (variant D)",
            "adapter": ainfo, "lora_kwargs": lora_kwargs,
            "effective_scaling_per_module": scalings,
            "results": summary, "checks": checks,
        }
        Path("meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        return summary, checks
    finally:
        os.chdir(cwd)


# ----------------------------------------------------------------------------------------------
def main():
    reset_dir(OUT)
    ALL_LINEAR_R4 = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear", "use_rslora": False}
    B, T, L = 2, 12, [12, 7]
    lines = []
    res = {}

    def copier(src):
        return lambda dst: copy_model(FIX / src, dst)

    name = "llama-gqa-tied"
    res[name] = run_case(name, "tiny-llama-fp32 (GQA 4 heads / 2 kv heads, tied head) in fp32; "
                         "adapter all-linear r=4 alpha=8", "byte copy of Fixtures/tiny-llama-fp32",
                         copier("tiny-llama-fp32"), ALL_LINEAR_R4, SEED + 1000, B, T, L)
    lines.append(f"| `{name}` | tiny-llama-fp32 (fp32, GQA 4/2, tied) | all-linear r=4 alpha=8 | "
                 f"B={B} T={T} lengths {L} |")

    name = "llama-rslora-patterns"
    kw = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj", "down_proj"],
          "use_rslora": True, "rank_pattern": {"v_proj": 2}, "alpha_pattern": {"down_proj": 4}}
    res[name] = run_case(name, "tiny-llama-fp32 in fp32; rsLoRA r=8 alpha=16 on q/v/down with "
                         "rank_pattern {v_proj: 2} and alpha_pattern {down_proj: 4} (scalings: "
                         "q 16/sqrt(8), v 16/sqrt(2), down 4/sqrt(8))",
                         "byte copy of Fixtures/tiny-llama-fp32", copier("tiny-llama-fp32"), kw,
                         SEED + 2000, B, T, L)
    lines.append(f"| `{name}` | tiny-llama-fp32 | rsLoRA r=8 a=16 q,v,down; rank_pattern "
                 f"v_proj=2, alpha_pattern down_proj=4 | B={B} T={T} lengths {L} |")

    name = "qwen2-bias"
    res[name] = run_case(name, "tiny-qwen2 (bf16 checkpoint: q/k/v biases, untied head) loaded "
                         "with dtype=torch.float32; adapter all-linear r=4 alpha=8",
                         "byte copy of Fixtures/tiny-qwen2", copier("tiny-qwen2"), ALL_LINEAR_R4,
                         SEED + 3000, B, T, L)
    lines.append(f"| `{name}` | tiny-qwen2 (bf16 ckpt -> fp32, q/k/v bias, untied) | all-linear "
                 f"r=4 alpha=8 | B={B} T={T} lengths {L} |")

    name = "llama3-rope"
    rp = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 32, "rope_theta": 500000.0}
    qkvo = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    res[name] = run_case(name, "new tiny Llama (hidden 64, intermediate 64, 2 heads / 1 kv head, head_dim 32, "
                         "untied, fp32) with llama3 rope scaling (factor 8, low 1, high 4, "
                         "original 32, theta 5e5); q/k weights N(0,0.25) for sharp attention; "
                         "T=40 > 32; adapter q,k,v,o r=4 alpha=8",
                         "created here (rope_model_writer)", rope_model_writer(rp, SEED + 4000),
                         qkvo, SEED + 4000, 2, 40, [40, 29], extra=rope_extra(rp))
    lines.append(f"| `{name}` | new tiny Llama fp32, head_dim 32, 2/1 heads, untied, rope llama3 "
                 f"(f=8, lo=1, hi=4, orig=32, theta=5e5) | q,k,v,o r=4 alpha=8 | B=2 T=40 "
                 f"lengths [40, 29] |")

    name = "llama-linear-rope"
    rp = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    res[name] = run_case(name, "as llama3-rope but rope_type linear factor 2.0, rope_theta 1e4; "
                         "T=24; adapter q,k,v,o r=4 alpha=8",
                         "created here (rope_model_writer)", rope_model_writer(rp, SEED + 5000),
                         qkvo, SEED + 5000, 2, 24, [24, 15], extra=rope_extra(rp))
    lines.append(f"| `{name}` | as llama3-rope but rope linear factor 2, theta 1e4 | q,k,v,o "
                 f"r=4 alpha=8 | B=2 T=24 lengths [24, 15] |")

    name = "llama-nf4"
    res[name] = run_nf4_case(name, "tiny-llama-bnb (NF4 double quant) + adapter all-linear r=4 "
                             "alpha=8 created on the 4-bit model; reference logits from exact "
                             "fp32 dequantization (see variants)", SEED + 6000, B, T, L,
                             ALL_LINEAR_R4)
    lines.append(f"| `{name}` | tiny-llama-bnb (NF4 nested); logits_* from exact fp32 dequant; "
                 f"extra *_dq_bf16 and *_bnb_cpu_kernel variants | all-linear r=4 alpha=8 | "
                 f"B={B} T={T} lengths {L} |")

    name = "llama-bf16-weights"
    res[name] = run_case(name, "tiny-llama (bf16 checkpoint) loaded with dtype=torch.float32 "
                         "(weights upcast exactly); adapter = byte copy of llama-gqa-tied's",
                         "byte copy of Fixtures/tiny-llama", copier("tiny-llama"), None,
                         SEED + 1000, B, T, L, adapter_from="llama-gqa-tied")
    lines.append(f"| `{name}` | tiny-llama (bf16 ckpt -> fp32) | llama-gqa-tied's adapter "
                 f"(copy) | B={B} T={T} lengths {L} (same ids as llama-gqa-tied) |")

    readme = [
        "# Forward-pass parity fixtures (generated by scripts/gen_model_fixtures.py)",
        "",
        "Each folder: `model/` (base model), `adapter/` (PEFT save_pretrained, non-zero A and B),",
        "`io.safetensors` (I64 input_ids / attention_mask (right padding) / labels (-100 at",
        "padding); F32 logits_base, logits_lora [B,T,V], loss_base, loss_lora [1],",
        "hidden_last / hidden_last_lora [B,T,H] (final-norm output, base / with adapter)), and",
        "`meta.json` (calls, versions, checks).",
        "All references: transformers eager attention, fp32 compute, positions 0..T-1 per row;",
        "padded positions are included (a padded query attends to the valid keys before it, not",
        "to itself). Loss = mean over t with labels[t+1] != -100.",
        "",
        "| case | base model | adapter | inputs |",
        "|---|---|---|---|",
    ] + lines
    (OUT / "README.md").write_text("\n".join(readme) + "\n")

    for k, v in res.items():
        s = v[0] if isinstance(v, tuple) else v
        print(f"{k:24s} loss_base {s['loss_base']:.6f} loss_lora {s['loss_lora']:.6f} "
              f"max|lora-base| {s['max_abs_logits_lora_minus_base']:.4f}")


if __name__ == "__main__":
    main()
