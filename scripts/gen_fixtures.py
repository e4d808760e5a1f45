#!/usr/bin/env python3
"""Generate the reference fixtures for LoRASharedTests.

Run from the repository root:  .venv/bin/python scripts/gen_fixtures.py

Writes (replacing) these folders under Tests/LoRASharedTests/Fixtures/:
  quant/            one safetensors per bitsandbytes quantize_4bit case + index.json
  tiny-llama/       tiny random LlamaForCausalLM, bf16, tied embeddings, GQA
  tiny-llama-bnb/   the same model loaded with transformers + BitsAndBytesConfig (nf4, double
                    quant, CPU) and saved with save_pretrained
  tiny-llama-fp32/  the same tiny llama, float32 master weights
  tiny-qwen2/       tiny random Qwen2ForCausalLM (q/k/v biases, untied head), bf16
  peft/             expected.json (PEFT LoRA facts for tiny-llama) + one real adapter dir

Everything is seeded and single-threaded; PYTHONHASHSEED is pinned (PEFT writes an
"all-linear" target_modules list in set order).  Running it twice gives identical bytes.

The script also carries a pure-numpy executable reference of the CPU algorithm described in
scripts/BNB_NOTES.md and asserts that it reproduces every bitsandbytes result bit for bit.
"""
import os
import sys

if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore")
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import bitsandbytes as bnb  # noqa: E402
import bitsandbytes.functional as BF  # noqa: E402
import peft  # noqa: E402
import safetensors  # noqa: E402
import transformers  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save as st_save  # noqa: E402

torch.set_num_threads(1)  # torch.mean of >= 32768 elements depends on the thread count

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "Tests" / "LoRASharedTests" / "Fixtures"
SEED = 20240611

f32 = np.float32

# ----------------------------------------------------------------------------------------------
# Executable reference of bitsandbytes 0.50.2 CPU quantize_4bit (see scripts/BNB_NOTES.md)
# ----------------------------------------------------------------------------------------------
NF4 = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0], dtype=f32)
# bnb builds this from the Python list [0, 0.0625, 8, 12, 4, 6, 2, 3, -0, ...]: "-0" is the int 0,
# so index 8 is +0.0, not -0.0.
FP4 = (np.array([0, 0.0625, 8, 12, 4, 6, 2, 3, 0.0, -0.0625, -8, -12, -4, -6, -2, -3], dtype=f32)
       / f32(12)).astype(f32)
# torch.argsort(FP4 code) on CPU (what bnb's default backend uses to map buckets -> codes)
FP4_ORDER = np.array([11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3])


def ref_bounds(qt):
    code, order = (NF4, np.arange(16)) if qt == "nf4" else (FP4, FP4_ORDER)
    s = code[order]
    return ((s[:-1] + s[1:]) / f32(2)).astype(f32), order


def ref_quantize_4bit(x, blocksize, qt):
    a = np.asarray(x, dtype=f32).reshape(-1)
    n = a.size
    rem = n % blocksize
    full = n - rem
    nb = full // blocksize
    com = a[:full].reshape(nb, blocksize)
    absmax = np.abs(com).max(axis=1).astype(f32) if nb else np.zeros(0, f32)
    inv = (f32(1) / np.maximum(absmax, f32(1e-38))).astype(f32)            # reciprocal ...
    scaled = np.clip((com * inv[:, None]).astype(f32), f32(-1), f32(1)).reshape(-1)  # ... times x
    if rem:
        am = f32(max(np.abs(a[full:]).max(), f32(1e-38)))                    # stored clamped!
        absmax = np.concatenate([absmax, [am]]).astype(f32)
        tail = np.clip((a[full:] / am).astype(f32), f32(-1), f32(1))         # true division
        scaled = np.concatenate([scaled, tail]).astype(f32)
    if scaled.size % 2:
        scaled = np.concatenate([scaled, np.zeros(1, f32)])
    bounds, order = ref_bounds(qt)
    q = order[np.searchsorted(bounds, scaled, side="left")].astype(np.uint8)  # bucketize(right=False)
    packed = ((q[0::2] << 4) | q[1::2]).astype(np.uint8).reshape(-1, 1)
    return packed, absmax


def ref_linspace_f32(start, end, steps):
    start, end = f32(start), f32(end)
    step = f32((end - start) / f32(steps - 1))
    out = np.empty(steps, f32)
    for i in range(steps):  # torch CPU linspace_kernel, FMA-contracted (one rounding)
        if i < steps // 2:
            out[i] = f32(np.float64(start) + np.float64(step) * i)
        else:
            out[i] = f32(np.float64(end) - np.float64(step) * (steps - i - 1))
    return out


def ref_dynamic_map():
    data = []
    for i in range(7):
        b = ref_linspace_f32(0.1, 1.0, 2 ** i + 1)
        means = ((b[:-1] + b[1:]) / f32(2)).astype(f32)
        s = f32(10.0 ** (-6 + i)) if i < 6 else f32(1)
        data += list((s * means).astype(f32))
        data += list((-s * means).astype(f32))
    data += [f32(0), f32(1)]
    return np.array(sorted(data), dtype=f32)


def ref_build_lut(code):
    mids = (f32(0.5) * (code[:-1] + code[1:])).astype(f32)
    lut = np.empty(65536, np.uint8)
    ci = 0
    for i in range(65536):
        val = f32(f32(f32(2 * i) / f32(65535)) - f32(1))
        while ci < 255 and mids[ci] < val:
            ci += 1
        lut[i] = ci
    return lut


_LUTS = {}


def ref_quantize_blockwise_8bit(a, code, blocksize=256):
    key = code.tobytes()
    if key not in _LUTS:
        _LUTS[key] = ref_build_lut(code)
    lut = _LUTS[key]
    a = np.asarray(a, f32)
    n = a.size
    out = np.zeros(n, np.uint8)
    absmax = np.zeros(-(-n // blocksize), f32)
    for b in range(absmax.size):
        blk = a[b * blocksize:(b + 1) * blocksize]
        am = f32(max(f32(0), np.abs(blk).max()))
        absmax[b] = am
        if am == 0:
            continue  # whole block -> index 0
        inv = f32(f32(1) / am)
        v = np.clip((blk * inv).astype(f32), f32(-1), f32(1))
        h = ((v + f32(1)) * f32(0.5)).astype(f32)
        t = (h.astype(np.float64) * 65535.0 + 0.5).astype(f32)  # fmaf(h, 65535, 0.5)
        out[b * blocksize:(b + 1) * blocksize] = lut[np.trunc(t).astype(np.int64) & 0xFFFF]
    return out, absmax


def _ceil_log2(x):
    return 1 if x <= 2 else (int(x) - 1).bit_length()


def _multi_row_sum(load, size, nrows, zero):
    levels = 4
    power = max(4, _ceil_log2(size) // levels)
    step = 1 << power
    mask = step - 1
    acc = [[zero() for _ in range(nrows)] for _ in range(levels)]
    i = 0
    while i + step <= size:
        for _ in range(step):
            for k in range(nrows):
                acc[0][k] = acc[0][k] + load(i, k)
            i += 1
        for j in range(1, levels):
            for k in range(nrows):
                acc[j][k] = acc[j][k] + acc[j - 1][k]
                acc[j - 1][k] = zero()
            if i & (mask << (j * power)):
                break
    while i < size:
        for k in range(nrows):
            acc[0][k] = acc[0][k] + load(i, k)
        i += 1
    for j in range(1, levels):
        for k in range(nrows):
            acc[0][k] = acc[0][k] + acc[j][k]
    return acc[0]


def _row_sum(get, size, zero):
    size_ilp = size // 4
    ps = _multi_row_sum(lambda i, k: get(i * 4 + k), size_ilp, 4, zero)
    for i in range(size_ilp * 4, size):
        ps[0] = ps[0] + get(i)
    for k in range(1, 4):
        ps[0] = ps[0] + ps[k]
    return ps[0]


def ref_torch_sum_serial(a, W=8):
    a = np.asarray(a, f32)
    n = a.size
    if n >= W:
        vs = n // W
        vecs = a[:vs * W].reshape(vs, W)
        vacc = _row_sum(lambda i: vecs[i], vs, lambda: np.zeros(W, f32))
        final = f32(0)
        for k in range(vs * W, n):
            final = f32(final + a[k])
        for lane in range(W):
            final = f32(final + vacc[lane])
        return f32(final)
    return f32(_row_sum(lambda i: a[i], n, lambda: f32(0)))


def ref_torch_mean(a, threads=1, W=8):
    a = np.asarray(a, f32)
    n = a.size
    if n < 32768 or threads == 1:
        s = ref_torch_sum_serial(a, W)
    else:
        nt = min(threads, -(-n // 32768))
        chunk = -(-n // nt)
        buf = np.zeros(threads, f32)
        for t in range(nt):
            if t * chunk < n:
                buf[t] = ref_torch_sum_serial(a[t * chunk:min(n, (t + 1) * chunk)], W)
        s = ref_torch_sum_serial(buf, W)
    return f32(s / f32(n))


def ref_check(x_f32, blocksize, qt, nested, packed, absmax, nested_absmax=None, offset=None,
              nested_code=None, tag=""):
    """Assert the numpy reference reproduces bnb bit for bit."""
    p, am = ref_quantize_4bit(x_f32, blocksize, qt)
    assert p.tobytes() == packed.tobytes(), f"{tag}: packed mismatch"
    if not nested:
        assert am.tobytes() == absmax.tobytes(), f"{tag}: absmax mismatch"
        return
    off = ref_torch_mean(am, threads=torch.get_num_threads())
    assert off.tobytes() == np.asarray(offset, f32).tobytes(), f"{tag}: offset mismatch"
    q8, a2 = ref_quantize_blockwise_8bit((am - off).astype(f32), nested_code, 256)
    assert q8.tobytes() == absmax.tobytes(), f"{tag}: nested absmax index mismatch"
    assert a2.tobytes() == nested_absmax.tobytes(), f"{tag}: nested_absmax mismatch"


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
TDT = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def reset_dir(p: Path):
    if p.exists():
        shutil.rmtree(p)
    p.mkdir(parents=True)


def save_file(tensors, path, metadata):
    """safetensors.torch.save_file, but with the __metadata__ keys sorted.

    The Rust writer keeps __metadata__ in a HashMap, so with more than one key its order in the
    header changes from run to run; re-emit the header (same compact serde_json style, space
    padding to a multiple of 8) with sorted metadata so the fixture bytes are reproducible."""
    raw = st_save(tensors, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    hb = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    hb += b" " * ((8 - (8 + len(hb)) % 8) % 8)
    with open(path, "wb") as fh:
        fh.write(len(hb).to_bytes(8, "little") + hb + raw[8 + n:])
    with safe_open(str(path), "pt") as fh:  # round-trip sanity check
        assert fh.metadata() == metadata
        for k, v in tensors.items():
            assert torch.equal(fh.get_tensor(k), v), k


def nextafter_steps(x, k, dtype):
    """x moved k ulps (in `dtype`) away, x a numpy float32 array."""
    t = torch.from_numpy(np.asarray(x, f32)).to(TDT[dtype])
    inf = torch.full_like(t, float("inf"))
    for _ in range(abs(k)):
        t = torch.nextafter(t, inf if k > 0 else -inf)
    return t.float().numpy()


def to_dtype_np(x, dtype):
    """Round a float32 numpy array to dtype (RNE) and back to float32."""
    return torch.from_numpy(np.asarray(x, f32)).to(TDT[dtype]).float().numpy()


def discriminators(qt, a, dtype, limit=24):
    """Values x (representable in dtype) with |x| <= a whose code differs between x*(1/a) and x/a,
    plus values whose scaled value lands exactly on a threshold."""
    bounds, _ = ref_bounds(qt)
    inv = f32(f32(1) / a)
    out = []
    for m in bounds:
        base = to_dtype_np(np.array([m * a], f32), dtype)
        for k in range(-3, 4):
            x = nextafter_steps(base, k, dtype)[0]
            if abs(x) > a:
                continue
            s_mul = f32(np.clip(f32(x * inv), -1, 1))
            s_div = f32(np.clip(f32(x / a), -1, 1))
            b_mul = np.searchsorted(bounds, s_mul, side="left")
            b_div = np.searchsorted(bounds, s_div, side="left")
            if b_mul != b_div or s_mul in bounds or s_div in bounds:
                out.append(x)
    return np.array(out[:limit], f32)


def fill_block(vals, a, blocksize, rng, dtype):
    """Block of `blocksize` values containing vals, +a and -a, rest random below a."""
    vals = list(vals)[: blocksize - 2]
    rest = blocksize - 2 - len(vals)
    filler = to_dtype_np((rng.random(rest) * 1.6 - 0.8).astype(f32) * a, dtype)
    blk = np.concatenate([[a, -a], vals, filler]).astype(f32)
    return blk


# ----------------------------------------------------------------------------------------------
# Part 1: quantize_4bit cases
# ----------------------------------------------------------------------------------------------
def build_cases(rng):
    cases = []

    def add(name, desc, x, qt, bs, nested, dtype, shape=None):
        assert all(c["name"] != name for c in cases), name
        x = np.asarray(x, f32)
        shape = list(shape) if shape is not None else [int(x.size)]
        x = to_dtype_np(x, dtype).reshape(shape)
        cases.append(dict(name=name, description=desc, x=x, quant_type=qt, blocksize=bs,
                          nested=nested, dtype=dtype, shape=shape))

    randn = lambda *s: rng.standard_normal(s).astype(f32)

    # --- basic dtype coverage --------------------------------------------------------------------
    w = randn(32, 64)
    add("nf4_f32_bs64", "fp32 [32,64] N(0,1), NF4, bs 64, no double quant", w, "nf4", 64, False,
        "float32", [32, 64])
    add("nf4_f32_bs64_nested", "same input as nf4_f32_bs64, with double quant", w, "nf4", 64, True,
        "float32", [32, 64])
    add("nf4_f16_bs64_nested", "fp16 [48,64] N(0,0.5), NF4 double quant", randn(48, 64) * 0.5,
        "nf4", 64, True, "float16", [48, 64])
    add("nf4_f16_bs64", "fp16 [48,64] N(0,0.5), NF4 no double quant", randn(48, 64) * 0.5,
        "nf4", 64, False, "float16", [48, 64])
    add("nf4_bf16_bs64_nested", "bf16 [64,96] N(0,0.02) (Linear-like), NF4 double quant",
        randn(64, 96) * 0.02, "nf4", 64, True, "bfloat16", [64, 96])
    add("nf4_bf16_bs64", "bf16 [64,96] N(0,0.02), NF4 no double quant", randn(64, 96) * 0.02,
        "nf4", 64, False, "bfloat16", [64, 96])
    add("fp4_f32_bs64", "fp32 [32,64] N(0,1), FP4 no double quant", w, "fp4", 64, False,
        "float32", [32, 64])
    add("fp4_f32_bs64_nested", "fp32 [32,64] N(0,1), FP4 double quant", w, "fp4", 64, True,
        "float32", [32, 64])
    add("fp4_bf16_bs64_nested", "bf16 [64,96] N(0,0.02), FP4 double quant", randn(64, 96) * 0.02,
        "fp4", 64, True, "bfloat16", [64, 96])
    add("fp4_f16_bs128", "fp16 [24,80] N(0,1), FP4 bs 128, no double quant (partial last block)",
        randn(24, 80), "fp4", 128, False, "float16", [24, 80])
    add("nf4_f16_3d_nested", "fp16 3-D shape [2,3,64] (JSON shape has 3 entries), NF4 double quant",
        randn(2, 3, 64), "nf4", 64, True, "float16", [2, 3, 64])

    # --- odd lengths / partial trailing blocks ---------------------------------------------------
    x = randn(7, 143)
    add("nf4_f32_odd1001", "fp32 [7,143]=1001 elems: odd (pad nibble) + partial last block of 41",
        x, "nf4", 64, False, "float32", [7, 143])
    add("nf4_f32_odd1001_nested", "as nf4_f32_odd1001 with double quant", x, "nf4", 64, True,
        "float32", [7, 143])
    add("fp4_f32_odd1001", "as nf4_f32_odd1001 but FP4 (pad nibble is FP4 code 0)", x, "fp4", 64,
        False, "float32", [7, 143])
    add("nf4_bf16_odd65", "bf16 [5,13]=65 elems: one full block + 1-element trailing block, odd",
        randn(5, 13), "nf4", 64, False, "bfloat16", [5, 13])
    add("nf4_f16_odd65_nested", "fp16 [65] one full block + 1-element block, double quant",
        randn(65), "nf4", 64, True, "float16", [65])
    add("nf4_f32_n1", "single element [1] (-0.3): one partial block, absmax 0.3, pad nibble",
        [-0.3], "nf4", 64, False, "float32", [1])
    add("nf4_f32_n1_nested", "single element, double quant: absmax-offset == 0 -> nested absmax 0,"
        " index 0, offset == absmax", [-0.3], "nf4", 64, True, "float32", [1])
    add("fp4_bf16_n3_nested", "bf16 [3] = [0.5,-0.25,0.001], FP4 double quant (1 block)",
        [0.5, -0.25, 0.001], "fp4", 64, True, "bfloat16", [3])

    # --- thresholds, exact codes, +-absmax -------------------------------------------------------
    for qt in ("nf4", "fp4"):
        code = NF4 if qt == "nf4" else FP4
        bounds, _ = ref_bounds(qt)
        uniq = np.unique(code)
        blocks = []
        for a in (f32(1.0), f32(2.0)):  # exact scaling: values land exactly on thresholds/codes
            vals = np.concatenate([uniq * a, bounds * a, nextafter_steps(bounds * a, 1, "float32"),
                                   nextafter_steps(bounds * a, -1, "float32")])
            blocks.append(fill_block(vals, a, 64, rng, "float32"))
        for a in (f32(0.7391), f32(3.3), f32(0.0123457), f32(117.9)):
            blocks.append(fill_block(discriminators(qt, a, "float32", 48), a, 64, rng, "float32"))
        a = f32(0.7391)  # partial trailing block of 40 (division path)
        tail = fill_block(discriminators(qt, a, "float32", 38), a, 40, rng, "float32")
        xs = np.concatenate(blocks + [tail])
        add(f"{qt}_f32_thresholds",
            f"fp32, {qt.upper()} bs 64: blocks with absmax 1 and 2 holding every code, every "
            "threshold (midpoint) and +-1 ulp; blocks with absmax 0.7391/3.3/0.0123457/117.9 holding"
            " values where x*(1/absmax) and x/absmax bucket differently or hit a threshold; a "
            "40-elem trailing block (division path); +-absmax in every block",
            xs, qt, 64, False, "float32", [xs.size])
    # bf16 thresholds
    blocks = []
    for a in (f32(1.0), f32(0.5)):
        vals = np.concatenate([NF4 * a, to_dtype_np(ref_bounds("nf4")[0] * a, "bfloat16")])
        blocks.append(fill_block(to_dtype_np(vals, "bfloat16"), a, 64, rng, "bfloat16"))
    nb = ref_bounds("nf4")[0]
    for a in (f32(0.73828125), f32(0.01251221)):
        a = to_dtype_np([a], "bfloat16")[0]
        near = to_dtype_np(nb * a, "bfloat16")  # bf16 values nearest each threshold, +-1 bf16 ulp
        vals = np.concatenate([near, nextafter_steps(near, 1, "bfloat16"),
                               nextafter_steps(near, -1, "bfloat16")])
        blocks.append(fill_block(vals, a, 64, rng, "bfloat16"))
    a = to_dtype_np([0.73828125], "bfloat16")[0]
    tail = fill_block(to_dtype_np(nb * a, "bfloat16"), a, 33, rng, "bfloat16")
    xs = np.concatenate(blocks + [tail])
    add("nf4_bf16_thresholds", "bf16 NF4 bs 64: codes and bf16-rounded thresholds at absmax 1 and"
        " 0.5, the bf16 values nearest each threshold (+-1 ulp) for absmax 0.738/0.0125, odd "
        "33-elem trailing block",
        xs, "nf4", 64, True, "bfloat16", [xs.size])

    # --- zero blocks -----------------------------------------------------------------------------
    z = randn(4 * 64 + 10)
    z[64:128] = 0
    z[256:] = 0
    add("nf4_f32_zero_blocks", "fp32 266 elems: block 1 all zero (stored absmax 0.0, codes 7), "
        "trailing 10-elem all-zero block (stored absmax is the clamp 1e-38!)",
        z, "nf4", 64, False, "float32", [266])
    add("nf4_f32_zero_blocks_nested", "as nf4_f32_zero_blocks with double quant", z, "nf4", 64,
        True, "float32", [266])
    add("fp4_f32_zero_blocks", "as nf4_f32_zero_blocks, FP4 (zeros -> code 0)", z, "fp4", 64,
        False, "float32", [266])
    add("nf4_bf16_all_zero_nested", "bf16 [2,64] all zeros, double quant: absmax 0, offset 0.0",
        np.zeros(128, f32), "nf4", 64, True, "bfloat16", [2, 64])

    # --- negative-only ---------------------------------------------------------------------------
    neg = -np.abs(randn(3 * 64 + 20))
    neg[5] = 0
    add("nf4_f32_negative", "fp32 212 elems all <= 0 (absmax from a negative value -> code 0)",
        neg, "nf4", 64, False, "float32", [212])
    add("fp4_f32_negative_nested", "fp32 212 elems all <= 0, FP4 double quant", neg, "fp4", 64,
        True, "float32", [212])
    add("fp4_f32_tiny_signs", "fp32 FP4: values around 0 inside +-0.0026*absmax (tiny negatives "
        "-> code 0, tiny positives -> code 8)",
        np.concatenate([[1.0, -1.0], np.linspace(-0.004, 0.004, 62)]).astype(f32), "fp4", 64,
        False, "float32", [64])

    # --- magnitudes ------------------------------------------------------------------------------
    big = np.concatenate([
        fill_block(randn(30), f32(3.0e38), 64, rng, "float32"),           # 1/absmax subnormal
        fill_block([], np.finfo(f32).max, 64, rng, "float32"),
        fill_block(randn(10) * f32(1e29), f32(1e30), 64, rng, "float32"),
        randn(20) * f32(1e20)])
    add("nf4_f32_large", "fp32 huge magnitudes: absmax 3e38 and FLT_MAX (1/absmax is subnormal), "
        "1e30, tail ~1e20", big, "nf4", 64, False, "float32", [big.size])
    add("nf4_f32_large_nested_overflow", "as nf4_f32_large with double quant: the float32 sum of "
        "absmax overflows, offset = inf, JSON text holds the bare token Infinity, nested_absmax inf",
        big, "nf4", 64, True, "float32", [big.size])
    big2 = np.concatenate([
        fill_block(randn(30) * f32(1e36), f32(2.5e37), 64, rng, "float32"),
        fill_block(randn(30) * f32(1e30), f32(7.7e30), 64, rng, "float32"),
        randn(41) * f32(1e35)])
    add("nf4_f32_large_nested", "fp32 absmax 2.5e37 / 7.7e30 / ~1e35 (41-elem odd tail), double "
        "quant: offset ~1e37, repr in e+37 form", big2, "nf4", 64, True, "float32", [big2.size])
    sub = np.float32(1.4e-45)
    tiny = np.concatenate([
        randn(64) * f32(1e-30),
        (rng.integers(-800, 800, 64).astype(np.float64) * 1.401298464324817e-45).astype(f32),
        randn(64) * f32(3e-39),                                           # max < 1e-38, full block
        np.array([sub, -sub, 2 * sub, 0, 5 * sub], f32)])                 # partial tail of subnormals
    add("nf4_f32_tiny", "fp32 tiny magnitudes: 1e-30 block; block of subnormals (absmax < 1e-38: "
        "scaled by the clamp 1e-38, stored unclamped); 3e-39 block; 5-elem subnormal tail (stored "
        "absmax clamped to 1e-38)", tiny, "nf4", 64, False, "float32", [tiny.size])
    add("nf4_f32_tiny_nested", "as nf4_f32_tiny with double quant (tiny offset, repr in e-31 form)",
        tiny, "nf4", 64, True, "float32", [tiny.size])
    h = np.concatenate([fill_block(np.clip(randn(20) * f32(15000), -60000, 60000), f32(65504), 64, rng, "float16"),
                        randn(64) * f32(1e-6),                            # fp16 subnormals
                        np.array([5.96e-8, -5.96e-8, 1.2e-7], f32)])
    add("nf4_f16_extremes", "fp16: block with 65504 (fp16 max), block of fp16 subnormals, "
        "3-elem tail of smallest subnormals", h, "nf4", 64, True, "float16", [h.size])
    b = np.concatenate([fill_block(np.clip(randn(20) * f32(5e37), -3e38, 3e38), f32(3.3e38), 64, rng, "bfloat16"),
                        randn(64) * f32(1e-39), randn(64) * f32(1e-3)])
    add("nf4_bf16_extremes", "bf16: block near bf16 max 3.3e38, block of bf16 subnormals (~1e-39), "
        "normal block", b, "nf4", 64, False, "bfloat16", [b.size])

    # --- every block size ------------------------------------------------------------------------
    for bs in (32, 64, 128, 256, 512, 1024, 2048, 4096):
        n = bs * 3 + bs // 2 + 1
        add(f"sweep_nf4_bf16_bs{bs}_nested", f"bf16 [{n}] NF4 bs {bs}, 3 full blocks + {bs // 2 + 1}-elem "
            "tail (odd), double quant", randn(n) * 0.05, "nf4", bs, True, "bfloat16", [n])
        n2 = bs * 2 + 3
        add(f"sweep_fp4_f32_bs{bs}", f"fp32 [{n2}] FP4 bs {bs}, 2 full blocks + 3-elem tail (odd), no "
            "double quant", randn(n2), "fp4", bs, False, "float32", [n2])
        add(f"sweep_nf4_f16_bs{bs}", f"fp16 [{n2}] NF4 bs {bs}, 2 full blocks + 3-elem tail (odd), no "
            "double quant", randn(n2), "nf4", bs, False, "float16", [n2])

    # --- many blocks: several nested blocks ------------------------------------------------------
    add("nf4_bf16_603blocks_nested", "bf16 [150,257]=38550 elems -> 603 blocks of 64 -> 3 nested "
        "blocks (256,256,91); per-row scale varies", randn(150, 257) *
        (np.abs(randn(150, 1)) * 0.05 + 0.001), "nf4", 64, True, "bfloat16", [150, 257])
    add("fp4_f32_bs32_938blocks_nested", "fp32 [100,300] FP4 bs 32 -> 938 blocks -> 4 nested "
        "blocks (last 170)", randn(100, 300), "fp4", 32, True, "float32", [100, 300])
    u = np.tile(np.concatenate([[0.5, -0.5], np.zeros(62)]).astype(f32), 300)
    u[2::64] = np.clip(randn(300) * 0.1, -0.25, 0.25)
    add("nf4_f32_uniform_absmax_exact", "fp32 300 blocks all with absmax exactly 0.5: offset 0.5, "
        "absmax-offset all 0 -> nested absmax [0,0], all indices 0", u, "nf4", 64, True, "float32",
        [300, 64])
    u3 = u.copy()
    u3[0::64] = 0.3
    u3[1::64] = -0.3
    add("nf4_f32_uniform_absmax_03", "fp32 300 blocks all with absmax 0.3f: the cascade mean is "
        "not exactly 0.3f, residuals of +-1ulp get quantized", u3, "nf4", 64, True, "float32",
        [300, 64])
    return cases


def run_quant_case(c):
    x = torch.from_numpy(c["x"]).to(TDT[c["dtype"]])
    packed, st = BF.quantize_4bit(x, blocksize=c["blocksize"], compress_statistics=c["nested"],
                                  quant_type=c["quant_type"])
    d = st.as_dict(packed=True)
    key = f"quant_state.bitsandbytes__{c['quant_type']}"
    js = bytes(d[key].tolist()).decode("utf-8")
    tensors = {"input": x.contiguous(), "packed": packed.contiguous(),
               "absmax": d["absmax"].contiguous(), "quant_map": d["quant_map"].contiguous()}
    if c["nested"]:
        tensors["nested_absmax"] = d["nested_absmax"].contiguous()
        tensors["nested_quant_map"] = d["nested_quant_map"].contiguous()
        tensors["nested_offset"] = st.offset.reshape(1).to(torch.float32).contiguous()
        # extra: the float32 absmax before double quantization (stage-1 output)
        _, st0 = BF.quantize_4bit(x, blocksize=c["blocksize"], compress_statistics=False,
                                  quant_type=c["quant_type"])
        tensors["absmax_f32"] = st0.absmax.contiguous()
    ref_check(x.float().numpy(), c["blocksize"], c["quant_type"], c["nested"], packed.numpy(),
              d["absmax"].numpy(),
              d["nested_absmax"].numpy() if c["nested"] else None,
              st.offset.numpy() if c["nested"] else None,
              d["nested_quant_map"].numpy() if c["nested"] else None, tag=c["name"])
    if c["nested"]:
        assert json.loads(js)["nested_offset"] == st.offset.item()
    meta = {"quant_type": c["quant_type"], "blocksize": str(c["blocksize"]),
            "nested": "true" if c["nested"] else "false", "dtype": c["dtype"],
            "shape": json.dumps(c["shape"]), "quant_state_json": js,
            "bnb_version": bnb.__version__, "torch_version": torch.__version__,
            "description": c["description"]}
    return tensors, meta, js


def gen_quant(rng):
    out = FIX / "quant"
    reset_dir(out)
    # blocksize acceptance on CPU
    accepted, rejected = [], {}
    for bs in (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192):
        try:
            for dt in (torch.float32, torch.float16, torch.bfloat16):
                BF.quantize_4bit(torch.ones(100, dtype=dt), blocksize=bs, quant_type="nf4",
                                 compress_statistics=True)
            accepted.append(bs)
        except Exception as e:  # noqa: BLE001
            rejected[str(bs)] = f"{type(e).__name__}: {e}"
    assert ref_dynamic_map().tobytes() == BF.create_dynamic_map().numpy().tobytes()
    assert BF.get_4bit_type("fp4", device="cpu").numpy().tobytes() == FP4.tobytes()
    assert torch.argsort(BF.get_4bit_type("fp4", device="cpu")).tolist() == FP4_ORDER.tolist()
    index = {"bnb_version": bnb.__version__, "torch_version": torch.__version__,
             "torch_num_threads": torch.get_num_threads(),
             "blocksizes_accepted_on_cpu": accepted, "blocksizes_rejected": rejected,
             "tensors": "input (original dtype/shape), packed U8 [(n+1)/2,1], absmax (F32, or U8 "
                        "when nested), quant_map F32[16]; nested only: nested_absmax F32, "
                        "nested_quant_map F32[256], nested_offset F32[1], absmax_f32 (extra: the "
                        "F32 absmax before double quantization)",
             "cases": []}
    for c in build_cases(rng):
        tensors, meta, js = run_quant_case(c)
        save_file(tensors, str(out / f"{c['name']}.safetensors"), metadata=meta)
        index["cases"].append({"name": c["name"], "file": f"{c['name']}.safetensors",
                               "description": c["description"], "quant_type": c["quant_type"],
                               "blocksize": c["blocksize"], "nested": c["nested"],
                               "dtype": c["dtype"], "shape": c["shape"]})
    (out / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return index


# ----------------------------------------------------------------------------------------------
# Part 2: tiny models
# ----------------------------------------------------------------------------------------------
def _perturb_norms(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))


def gen_models():
    from transformers import (AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig,
                              LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM)
    info = {}
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
                      tie_word_embeddings=True, max_position_embeddings=128)
    master = LlamaForCausalLM(cfg)  # float32 master weights
    _perturb_norms(master, gen)
    master.eval()

    d32 = FIX / "tiny-llama-fp32"
    reset_dir(d32)
    master.save_pretrained(d32)

    dbf = FIX / "tiny-llama"
    reset_dir(dbf)
    bf = LlamaForCausalLM(cfg)
    bf.load_state_dict(master.state_dict())
    bf = bf.to(torch.bfloat16)
    bf.config.dtype = torch.bfloat16
    bf.save_pretrained(dbf)

    # bnb 4-bit load on CPU, then save (no forward pass: a CPU forward with AVX512-BF16 repacks
    # the weight and turns absmax into bf16)
    dq = FIX / "tiny-llama-bnb"
    reset_dir(dq)
    qcfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)
    qm = AutoModelForCausalLM.from_pretrained(str(dbf), quantization_config=qcfg, device_map="cpu")
    qm.save_pretrained(dq)
    # cross-check: every quantized weight == quantize_4bit(bf16 weight) == numpy reference
    with safe_open(str(dbf / "model.safetensors"), "pt") as fo, \
            safe_open(str(dq / "model.safetensors"), "pt") as fq:
        qkeys = set(fq.keys())
        for k in fo.keys():
            w = fo.get_tensor(k)
            if k + ".absmax" not in qkeys:
                assert torch.equal(w, fq.get_tensor(k)), k
                continue
            p, st = BF.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
            d = st.as_dict(packed=True)
            assert torch.equal(p, fq.get_tensor(k)), k
            for sfx in ("absmax", "quant_map", "nested_absmax", "nested_quant_map",
                        "quant_state.bitsandbytes__nf4"):
                assert torch.equal(d[sfx], fq.get_tensor(f"{k}.{sfx}")), (k, sfx)
            ref_check(w.float().numpy(), 64, "nf4", True, p.numpy(), d["absmax"].numpy(),
                      d["nested_absmax"].numpy(), st.offset.numpy(),
                      d["nested_quant_map"].numpy(), tag=k)
    info["tiny-llama-bnb"] = "verified: equals quantize_4bit(bf16 weight, 64, nested, nf4)"

    # Qwen2
    torch.manual_seed(SEED + 1)
    qcfg2 = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
                        tie_word_embeddings=False, max_position_embeddings=128)
    qw = Qwen2ForCausalLM(qcfg2)
    _perturb_norms(qw, gen)
    qw = qw.to(torch.bfloat16)
    qw.config.dtype = torch.bfloat16
    dqw = FIX / "tiny-qwen2"
    reset_dir(dqw)
    qw.save_pretrained(dqw)
    return info


# ----------------------------------------------------------------------------------------------
# Part 3: PEFT
# ----------------------------------------------------------------------------------------------
def _adapter_listing(path):
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        rows = []
        for k in sorted(f.keys()):
            sl = f.get_slice(k)
            rows.append([k, list(sl.get_shape()), sl.get_dtype()])
    return rows, meta


def gen_peft():
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    out = FIX / "peft"
    reset_dir(out)
    configs = [
        dict(r=16, lora_alpha=32, lora_dropout=0.05,
             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM"),
        dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
             task_type="CAUSAL_LM"),
        dict(r=4, lora_alpha=8, target_modules=["gate_proj", "up_proj", "down_proj"],
             use_rslora=True, task_type="CAUSAL_LM"),
        dict(r=2, lora_alpha=4, target_modules="q_proj", task_type="CAUSAL_LM"),
        dict(r=2, lora_alpha=4, target_modules=["q_proj"], task_type="CAUSAL_LM"),
    ]
    cwd = os.getcwd()
    os.chdir(FIX)  # base_model_name_or_path becomes the relative "tiny-llama"
    try:
        results = []
        for cfgd in configs:
            torch.manual_seed(SEED)
            base = AutoModelForCausalLM.from_pretrained("tiny-llama")
            entry = {"config": cfgd}
            try:
                m = get_peft_model(base, LoraConfig(**cfgd))
            except Exception as e:  # noqa: BLE001
                entry["error"] = f"{type(e).__name__}: {e}"
                results.append(entry)
                continue
            trainable, total = m.get_nb_trainable_parameters()
            entry["trainable"], entry["total"] = int(trainable), int(total)
            mod = next(mm for n, mm in m.named_modules() if hasattr(mm, "scaling") and
                       isinstance(getattr(mm, "scaling"), dict) and "default" in mm.scaling)
            entry["scaling"] = mod.scaling["default"]
            with tempfile.TemporaryDirectory() as td:
                m.save_pretrained(td)
                rows, meta = _adapter_listing(Path(td) / "adapter_model.safetensors")
                entry["adapter_model_tensors"] = rows
                entry["adapter_model_metadata"] = meta
                entry["adapter_config_json"] = (Path(td) / "adapter_config.json").read_text()
                entry["files_written"] = sorted(os.listdir(td))
            results.append(entry)

        # one genuine adapter with non-zero B
        torch.manual_seed(SEED + 7)
        base = AutoModelForCausalLM.from_pretrained("tiny-llama")
        m = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear",
                                            init_lora_weights=False, task_type="CAUSAL_LM"))
        ad = out / "tiny-llama-r8-all-linear"
        with tempfile.TemporaryDirectory() as td:
            m.save_pretrained(td)
            ad.mkdir()
            for fn in ("adapter_config.json", "adapter_model.safetensors"):
                shutil.copyfile(Path(td) / fn, ad / fn)
    finally:
        os.chdir(cwd)
    expected = {"peft_version": peft.__version__, "transformers_version": transformers.__version__,
                "torch_version": torch.__version__, "base_model": "tiny-llama",
                "base_model_dtype": "bfloat16",
                "note": "trainable/total from PeftModel.get_nb_trainable_parameters(); "
                        "adapter_model_tensors rows are [key, shape, safetensors dtype], sorted; "
                        "peft/tiny-llama-r8-all-linear was made with init_lora_weights=False "
                        "(A and B both kaiming-uniform, seeded)",
                "configs": results}
    (out / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")


def main():
    rng = np.random.default_rng(SEED)
    torch.manual_seed(SEED)
    FIX.mkdir(parents=True, exist_ok=True)
    idx = gen_quant(rng)
    print(f"quant: {len(idx['cases'])} cases; blocksizes accepted {idx['blocksizes_accepted_on_cpu']}")
    gen_models()
    print("models: done (tiny-llama-bnb verified against quantize_4bit and the numpy reference)")
    gen_peft()
    print("peft: done")


if __name__ == "__main__":
    main()
