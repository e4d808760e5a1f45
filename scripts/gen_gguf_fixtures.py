#!/usr/bin/env python3
"""Writes Tests/LoRASharedTests/Fixtures/gguf/q8_0.gguf: a small GGUF made by the gguf python package
(.venv-demo has it) with one F32 tensor of inputs and the same values quantized to Q8_0 by gguf-py's
quants.quantize (the reference for ggml's quantize_row_q8_0_ref), so the Swift tests check our Q8_0
bytes, our reader and the metadata types against the upstream writer without needing Python.
Run: .venv-demo/bin/python scripts/gen_gguf_fixtures.py"""
import os
import numpy as np
import gguf
from gguf import quants

out = os.path.join(os.path.dirname(__file__), "..", "Tests", "LoRASharedTests", "Fixtures", "gguf", "q8_0.gguf")
rng = np.random.default_rng(13)
x = rng.standard_normal((4, 64)).astype(np.float32)
x[0, :32] = 0.0                       # an all-zero block (d = 0)
x[1, :32] = np.linspace(-1, 1, 32)    # exact halves after scaling: round half away from zero
x[2, 5] = 1000.0                      # one large outlier in a block
q = quants.quantize(x, gguf.GGMLQuantizationType.Q8_0)

w = gguf.GGUFWriter(out, "llama")
w.add_uint32("test.u32", 7)
w.add_int64("test.i64", -5)
w.add_float32("test.f32", 0.5)
w.add_bool("test.bool", True)
w.add_string("test.string", "héllo")
w.add_array("test.strings", ["a", "bc", ""])
w.add_array("test.ints", [1, 2, 3])
w.add_tensor("x", x)
w.add_tensor("x.q8_0", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(out)
