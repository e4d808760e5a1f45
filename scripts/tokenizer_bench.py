#!/usr/bin/env python3
"""Encode throughput of the `tokenizers` reference on the text the Swift TokenizerBench reads.

  .venv/bin/python scripts/tokenizer_bench.py [--text FILE] [--model DIR]

Writes FILE first when it does not exist: about 5 MB of English prose and code, the *.py and *.md
files of the installed transformers package in path order, cut at a line end. Then, with the
SmolLM2 tokenizer on one thread (RAYON_NUM_THREADS=1), times encode() over ~4 KB documents (whole
lines) with a fresh and then a warm word cache, and one encode() of the whole text; prints MB/s and
the token counts (which the Swift run must match):

  LORA_BENCH=1 LORA_BENCH_TEXT=FILE swift test -c release -Xswiftc -enable-testing --filter TokenizerBench

(-enable-testing: the test target uses @testable imports.)  --model takes any tokenizer folder, e.g. a
fixture kind under Tests/LoRASharedTests/Fixtures/tokenizer/, with LORA_BENCH_KIND=<kind> on the Swift side.
"""
import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC_BYTES = 4096
TARGET = 5_000_000


def make_text(path):
    import transformers
    base = Path(transformers.__file__).parent
    out, n = [], 0
    for f in sorted(p for p in base.rglob("*") if p.suffix in (".py", ".md")):
        for line in f.read_text(encoding="utf-8", errors="replace").split("\n"):
            b = len(line.encode()) + 1
            if n + b > TARGET:
                Path(path).write_text("".join(out), encoding="utf-8")
                return
            out.append(line + "\n")
            n += b
    Path(path).write_text("".join(out), encoding="utf-8")


def documents(text):
    """Consecutive whole lines of at least DOC_BYTES bytes (the last one may be shorter)."""
    docs, cur, n = [], [], 0
    for line in text.split("\n"):
        cur.append(line + "\n")
        n += len(line.encode()) + 1
        if n >= DOC_BYTES:
            docs.append("".join(cur))
            cur, n = [], 0
    if cur:
        docs.append("".join(cur))
    docs[-1] = docs[-1][:-1]  # text.split adds one "\n" past the end
    return docs


def checksum(id_lists):
    """FNV-1a over every id, to compare the exact sequences with the Swift run."""
    h = 0xCBF29CE484222325
    for ids in id_lists:
        for i in ids:
            h = ((h ^ i) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--text", default="/tmp/lora-tokenizer-bench.txt")
    ap.add_argument("--model", default=str(ROOT / "models" / "smollm2-135m-instruct"))
    a = ap.parse_args()
    if not os.path.exists(a.text):
        make_text(a.text)
    with open(a.text, encoding="utf-8", newline="") as f:  # keep \r\n as it is in the file
        text = f.read()
    mb = len(text.encode()) / 1e6
    docs = documents(text)

    os.environ["RAYON_NUM_THREADS"] = "1"
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    t0 = time.perf_counter()
    ids = [tok.encode(d, add_special_tokens=False).ids for d in docs]
    t1 = time.perf_counter()
    n = sum(len(x) for x in ids)
    print(f"tokenizers encode loop, 1 thread: {mb:.2f} MB, {len(docs)} docs, {n} tokens, {t1 - t0:.3f} s, "
          f"{mb / (t1 - t0):.2f} MB/s, ids checksum {checksum(ids):016x}")
    t0 = time.perf_counter()
    n2 = sum(len(tok.encode(d, add_special_tokens=False).ids) for d in docs)
    t1 = time.perf_counter()
    print(f"tokenizers encode loop, warm cache: {n2} tokens, {mb / (t1 - t0):.2f} MB/s")
    t0 = time.perf_counter()
    n3 = len(tok.encode(text, add_special_tokens=False).ids)
    t1 = time.perf_counter()
    print(f"tokenizers one encode of the whole text: {n3} tokens, {mb / (t1 - t0):.2f} MB/s")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
