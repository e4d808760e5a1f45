#!/usr/bin/env python3
"""Draws bench/results/scale.json (bench/scale_bench.py) as SVG charts under bench/results/, standard library only:

  scale-size.svg   tokens/s, effective GFLOP/s and peak RSS against model size (the points at --size-seq, rank 16)
  scale-seq.svg    tokens/s and peak RSS of training against sequence length (the shape with the most seq points)
  scale-rank.svg   tokens/s and peak RSS of training against LoRA rank

Ours solid, the peer (transformers + PEFT, + bitsandbytes for QLoRA) dashed in the same colour; a point where the
peer ran out of memory, time or failed is an × on the axis, with the reason in the legend.

usage: bench/plot_scale.py [--json bench/results/scale.json] [--size-seq 256]"""
import argparse, json, math, pathlib, sys

root = pathlib.Path(__file__).resolve().parent.parent
ap = argparse.ArgumentParser()
ap.add_argument("--json", default=str(root / "bench/results/scale.json"))
ap.add_argument("--size-seq", type=int, default=256)
a = ap.parse_args()
points = list(json.loads(pathlib.Path(a.json).read_text())["points"].values())
COLORS = {"qlora": "#1f77b4", "lora": "#d62728", "eval": "#2ca02c", "generate": "#9467bd"}
NAMES = {"qlora": "lora-train QLoRA (NF4)", "lora": "lora-train LoRA (bf16 base)", "eval": "lora-eval (bf16)",
         "generate": "lora-generate (bf16, decode)"}


def ticks(lo, hi, log):
    if log:
        out, e = [], math.floor(math.log10(lo))
        while 10 ** e <= hi * 1.0001:
            for m in (1, 2, 5):
                v = m * 10 ** e
                if lo / 1.0001 <= v <= hi * 1.0001:
                    out.append(v)
            e += 1
        return out if len(out) >= 2 else [lo, hi]
    step = 10 ** math.floor(math.log10(max(hi - lo, 1e-9)))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (m * step) <= 6:
            step *= m
            break
    v = math.ceil(lo / step) * step
    out = []
    while v <= hi * 1.0001:
        out.append(v)
        v += step
    return out


def fmt(v):
    if v >= 1e9:
        return f"{v / 1e9:.3g}B"
    if v >= 1e6:
        return f"{v / 1e6:.3g}M"
    if v >= 1e4:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def panel(x0, y0, w, h, title, xlabel, series, xlog, ylog, xs_all=None):
    """series: [(label, colour, dashed, [(x, y)], [x of failures])]. Returns SVG elements."""
    xs = [p[0] for s in series for p in s[3]] + [x for s in series for x in s[4]] + (xs_all or [])
    ys = [p[1] for s in series for p in s[3] if p[1] > 0]
    if not xs or not ys:
        return [f'<text x="{x0 + w / 2}" y="{y0 + h / 2}" text-anchor="middle" font-size="12">{title}: no data</text>']
    xlo, xhi = min(xs), max(xs)
    ylo, yhi = min(ys), max(ys)
    if xlo == xhi:
        xlo, xhi = xlo / 2, xhi * 2
    if ylog:
        ylo, yhi = ylo / 1.6, yhi * 1.6
    else:
        ylo, yhi = 0, yhi * 1.15
    if xlog:
        xlo, xhi = xlo / 1.15, xhi * 1.15
    tx = (lambda v: math.log(v)) if xlog else (lambda v: v)
    ty = (lambda v: math.log(v)) if ylog else (lambda v: v)
    X = lambda v: x0 + (tx(v) - tx(xlo)) / (tx(xhi) - tx(xlo)) * w
    Y = lambda v: y0 + h - (ty(v) - ty(ylo)) / (ty(yhi) - ty(ylo)) * h
    el = [f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#888"/>',
          f'<text x="{x0 + w / 2}" y="{y0 - 8}" text-anchor="middle" font-size="13" font-weight="bold">{title}</text>',
          f'<text x="{x0 + w / 2}" y="{y0 + h + 40}" text-anchor="middle" font-size="12">{xlabel}</text>']
    for v in ticks(ylo, yhi, ylog):
        el.append(f'<line x1="{x0}" x2="{x0 + w}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="#eee"/>')
        el.append(f'<text x="{x0 - 4}" y="{Y(v) + 4:.1f}" text-anchor="end" font-size="10">{fmt(v)}</text>')
    xt = sorted(set(xs_all or [])) if xs_all else ticks(xlo, xhi, xlog)
    for i, v in enumerate(xt):  # close ticks (1.24B and 1.54B) alternate between two rows
        el.append(f'<line x1="{X(v):.1f}" x2="{X(v):.1f}" y1="{y0 + h}" y2="{y0 + h + 4}" stroke="#888"/>')
        el.append(f'<text x="{X(v):.1f}" y="{y0 + h + 14 + 10 * (i % 2)}" text-anchor="middle" font-size="10">{fmt(v)}</text>')
    for label, colour, dashed, pts, fails in series:
        pts = sorted(p for p in pts if p[1] > 0)
        dash = ' stroke-dasharray="6,4"' if dashed else ""
        if len(pts) > 1:
            d = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in pts)
            el.append(f'<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        for x, y in pts:
            el.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3.5" fill="{"white" if dashed else colour}" stroke="{colour}" stroke-width="1.5"/>')
        for x in fails:
            cx, cy = X(x), y0 + h - 8
            el.append(f'<path d="M{cx - 5:.1f},{cy - 5} l10,10 m0,-10 l-10,10" stroke="{colour}" stroke-width="2"/>')
    return el


def legend(x0, y0, entries):
    el = []
    for i, (label, colour, dashed) in enumerate(entries):
        y = y0 + 16 * i
        dash = ' stroke-dasharray="6,4"' if dashed else ""
        el.append(f'<line x1="{x0}" x2="{x0 + 26}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="2"{dash}/>')
        el.append(f'<text x="{x0 + 32}" y="{y + 4}" font-size="11">{label}</text>')
    return el


def chart(name, title, panels, entries):
    """panels: [(title, xlabel, series, xlog, ylog, xs_all)] side by side."""
    pw, ph, gap, left, top = 300, 230, 80, 60, 50
    width = left + len(panels) * (pw + gap)
    height = top + ph + 60 + 16 * len(entries) + 20
    el = [f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">{title}</text>']
    for i, (t, xl, series, xlog, ylog, xs_all) in enumerate(panels):
        el += panel(left + i * (pw + gap), top, pw, ph, t, xl, series, xlog, ylog, xs_all)
    el += legend(left, top + ph + 62, entries)
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">'
           f'<rect width="100%" height="100%" fill="white"/>' + "".join(el) + "</svg>\n")
    path = root / "bench/results" / name
    path.write_text(svg)
    print(path, file=sys.stderr)


def curves(selected, xkey, ykey, variants):
    """Series for each variant (ours, then the peer), x = xkey(point), y = point[side_ykey]."""
    series, entries = [], []
    for v in variants:
        pts = sorted((p for p in selected if p["variant"] == v), key=xkey)
        if not pts:
            continue
        ours = [(xkey(p), p.get("ours_" + ykey) or 0) for p in pts if p.get("ours_" + ykey)]
        series.append((NAMES[v], COLORS[v], False, ours, [xkey(p) for p in pts if not p.get("ours_" + ykey)]))
        if ykey == "gflops" or not any("peer_tokens_per_s" in p or "peer_error" in p for p in pts):
            continue
        peer = [(xkey(p), p["peer_" + ykey]) for p in pts if p.get("peer_" + ykey)]
        fails = [xkey(p) for p in pts if not p.get("peer_" + ykey) and ("peer_error" in p)]
        series.append(("peer", COLORS[v], True, peer, fails))
    for v in variants:
        pts = [p for p in selected if p["variant"] == v]
        if not pts:
            continue
        entries.append((f"ours: {NAMES[v]}", COLORS[v], False))
        if any("peer_tokens_per_s" in p or "peer_error" in p for p in pts):
            why = sorted({p["peer_error"][:60] for p in pts if p.get("peer_error") and not p.get("peer_tokens_per_s")})
            entries.append(("peer: transformers + PEFT" + (" + bitsandbytes" if v == "qlora" else "") + " (bf16)"
                            + (f"; × = {'; '.join(why)}" if why else ""), COLORS[v], True))
    return series, entries


variants = ["qlora", "lora", "eval", "generate"]
size_pts = [p for p in points if p["seq"] == a.size_seq and p["rank"] in (16, 0) or p["variant"] == "generate"]
if size_pts:
    xk = lambda p: p["linear_params"]
    xs = sorted({p["linear_params"] for p in size_pts})
    s1, e1 = curves(size_pts, xk, "tokens_per_s", variants)
    s2, _ = curves(size_pts, xk, "gflops", variants)
    s3, _ = curves(size_pts, xk, "peak_rss_mb", variants)
    chart("scale-size.svg", f"Cost against model size (synthetic weights of the published shapes; batch 1, seq {a.size_seq}, r 16)",
          [("tokens/s", "linear parameters", s1, True, True, xs), ("effective GFLOP/s (ours)", "linear parameters", s2, True, False, xs),
           ("peak RSS (MiB)", "linear parameters", s3, True, True, xs)], e1)

train = [p for p in points if p["variant"] in ("qlora", "lora", "eval")]
by_shape = {}
for p in train:
    if p["rank"] in (16, 0):
        by_shape.setdefault(p["shape"], set()).add(p["seq"])
if by_shape:
    shape = max(by_shape, key=lambda s: len(by_shape[s]))
    sel = [p for p in train if p["shape"] == shape and p["rank"] in (16, 0)]
    multi = {v for v in ("qlora", "lora", "eval") if len({p["seq"] for p in sel if p["variant"] == v}) > 1}
    sel = [p for p in sel if p["variant"] in multi]  # only the curves, not single points
    if len({p["seq"] for p in sel}) > 1:
        xk = lambda p: p["seq"]
        xs = sorted({p["seq"] for p in sel})
        s1, e1 = curves(sel, xk, "tokens_per_s", ["qlora", "lora", "eval"])
        s2, _ = curves(sel, xk, "peak_rss_mb", ["qlora", "lora", "eval"])
        chart("scale-seq.svg", f"Cost against sequence length ({shape} shape, batch 1, r 16)",
              [("tokens/s", "sequence length", s1, True, True, xs), ("peak RSS (MiB)", "sequence length", s2, True, False, xs)], e1)

by_shape = {}
for p in points:
    if p["variant"] in ("qlora", "lora"):
        by_shape.setdefault((p["shape"], p["seq"]), set()).add(p["rank"])
if by_shape:
    key = max(by_shape, key=lambda k: len(by_shape[k]))
    sel = [p for p in points if p["variant"] in ("qlora", "lora") and (p["shape"], p["seq"]) == key]
    multi = {v for v in ("qlora", "lora") if len({p["rank"] for p in sel if p["variant"] == v}) > 1}
    sel = [p for p in sel if p["variant"] in multi]
    if len({p["rank"] for p in sel}) > 1:
        xk = lambda p: p["rank"]
        xs = sorted({p["rank"] for p in sel})
        s1, e1 = curves(sel, xk, "tokens_per_s", ["qlora", "lora"])
        s2, _ = curves(sel, xk, "peak_rss_mb", ["qlora", "lora"])
        chart("scale-rank.svg", f"Cost against LoRA rank ({key[0]} shape, batch 1, seq {key[1]}, all linear layers)",
              [("tokens/s", "rank", s1, True, True, xs), ("peak RSS (MiB)", "rank", s2, True, False, xs)], e1)

# The README's scale table (markdown on stdout), one row per point.
SHAPE_ORDER = ["qwen2.5-0.5b", "llama-3.2-1b", "qwen2.5-1.5b", "llama-3.2-3b", "qwen2.5-7b", "llama-3.1-8b"]
VARIANT_ORDER = ["qlora", "lora", "eval", "generate"]
print("| shape | tool | seq | r | ours tokens/s | ours GFLOP/s | ours peak RSS | peer tokens/s | peer peak RSS | ours / peer |")
print("|---|---|---|---|---|---|---|---|---|---|")
gb = lambda mb: f"{mb / 1024:.2f} GiB" if mb else "–"  # /usr/bin/time KiB / 1024 / 1024
for p in sorted(points, key=lambda p: (VARIANT_ORDER.index(p["variant"]), p["seq"], p["rank"],
                                       SHAPE_ORDER.index(p["shape"]) if p["shape"] in SHAPE_ORDER else 99)):
    tool = {"qlora": "train QLoRA", "lora": "train LoRA bf16", "eval": "eval bf16", "generate": "generate bf16"}[p["variant"]]
    seq = f"{p['seq']} new" if p["variant"] == "generate" else str(p["seq"])
    r = str(p["rank"]) if p["variant"] in ("qlora", "lora") else "–"
    ours = p.get("ours_tokens_per_s")
    ours_err = next((x["ours"]["error"] for x in p["runs"] if "error" in x["ours"]), None)
    peer = p.get("peer_tokens_per_s")
    if peer:
        peer_s = f"{peer:g}"
    elif "peer_error" in p:
        peer_s = "fails: " + p["peer_error"].replace("|", "/")[:80]
    else:
        peer_s = "not run"
    ratio = f"{p['speed_ratio']:.2f}×" if p.get("speed_ratio") else "–"
    print(f"| {p['shape']} | {tool} | {seq} | {r} | {ours if ours else 'fails: ' + str(ours_err)} | {p.get('ours_gflops', '–')} | "
          f"{gb(p.get('ours_peak_rss_mb'))} | {peer_s} | {gb(p.get('peer_peak_rss_mb'))} | {ratio} |")
