#!/usr/bin/env python3
"""The peer our benchmarks run against, kept in this repository so a clone reproduces every figure by itself:
Hugging Face transformers + PEFT (+ bitsandbytes NF4 with --qlora) on CPU, on the same model dir, data and
shapes as lora-train / lora-eval.

  --dtype fp32|bf16   how the base is loaded (bf16: the usual recipes; LoRA weights stay fp32 as PEFT keeps them)
  --qlora             NF4 base, double quantization, compute dtype = --dtype (the QLoRA recipe uses bf16)
  --dropout P         LoRA dropout during training (PEFT's lora_dropout; 0.05 is our default)

Measures forward-only throughput (batch x seq tokens per forward, no grad), LoRA training throughput (AdamW,
r / alpha = 2r on --targets, one optimizer step per batch, first step excluded as warm-up) and the peak RSS of the
process, and prints one JSON line. Options the bench scripts pass: --steps, --seq, --batch, --rank, --targets,
--threads, --eval-batches, --generate. Needs a venv with torch transformers peft (and bitsandbytes for --qlora).

usage: bench/peer.py MODEL_DIR DATA.jsonl [--dtype fp32|bf16] [--qlora] [--dropout P] [--steps N] ...
"""
import argparse
import json
import math
import resource
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer


def token_stream(tok, path):
    """All rows of the JSONL as one stream of ids (chat rows through the model's template, others + EOS)."""
    ids = []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if "messages" in row:
                ids.extend(tok.apply_chat_template(row["messages"], tokenize=True, return_dict=False))
            else:
                text = row["text"] if "text" in row else row["prompt"] + row["completion"]
                ids.extend(tok(text)["input_ids"] + [tok.eos_token_id])
    return ids


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--bf16", action="store_true", help="same as --dtype bf16")
    ap.add_argument("--qlora", action="store_true")
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--eval-batches", type=int, default=3)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--warmup", type=int, default=1, help="untimed training steps before the timed ones")
    ap.add_argument("--grad-checkpoint", action="store_true", help="gradient checkpointing (transformers' own)")
    ap.add_argument("--generate", type=int, default=0, metavar="N",
                    help="also time greedy decoding of N new tokens after --prompt (batch 1, KV cache)")
    ap.add_argument("--prompt", default="Write a long story about a lighthouse keeper who finds a map in a bottle.",
                    help="the --generate prompt, plain text (no chat template)")
    a = ap.parse_args()
    dtype = torch.bfloat16 if (a.bf16 or a.dtype == "bf16") else torch.float32
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(a.model)
    kwargs = {"dtype": dtype}
    if a.qlora:
        from transformers import BitsAndBytesConfig
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(a.model, **kwargs)
    name = "transformers+peft" + ("+bnb-nf4" if a.qlora else "") + ("+bf16" if dtype == torch.bfloat16 else "+fp32")
    out = {"peer": name, "torch": torch.__version__, "threads": torch.get_num_threads(), "seq": a.seq, "batch": a.batch,
           "rank": a.rank, "targets": a.targets, "dropout": a.dropout, "load_s": round(time.time() - t0, 2)}

    stream = token_stream(tok, a.data)
    n = a.batch * a.seq
    while len(stream) < n + 1:
        stream = stream + stream

    def window(i):
        start = (i * n) % (len(stream) - n + 1)
        return torch.tensor(stream[start:start + n]).view(a.batch, a.seq)

    out["first_step_s"] = None
    model.eval()
    if a.eval_batches > 0:
        with torch.inference_mode():
            model(window(0))  # warm-up
            t = time.time()
            nll = 0.0
            for i in range(a.eval_batches):
                x = window(i)
                nll += model(x, labels=x).loss.item()
            out["eval_tokens_per_s"] = round(a.eval_batches * n / (time.time() - t), 2)
            out["eval_ppl"] = round(math.exp(nll / a.eval_batches), 4)

    if a.generate > 0:
        # Decode speed: N new tokens after --prompt, prompt processing subtracted (timed as a 1-token generate),
        # EOS ignored; as lora-generate reports its tokens_per_s.
        x = tok(a.prompt, return_tensors="pt")["input_ids"]
        kw = dict(do_sample=False, attention_mask=torch.ones_like(x), pad_token_id=tok.eos_token_id)
        with torch.inference_mode():
            t = time.time(); model.generate(x, max_new_tokens=1, min_new_tokens=1, **kw); t1 = time.time()
            g = model.generate(x, max_new_tokens=a.generate, min_new_tokens=a.generate, **kw); t2 = time.time()
        out["generate_tokens_per_s"] = round((g.shape[1] - x.shape[1] - 1) / ((t2 - t1) - (t1 - t)), 3)

    if not a.no_train:
        if a.qlora:
            from peft import prepare_model_for_kbit_training
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=a.grad_checkpoint)
        elif a.grad_checkpoint:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        cfg = LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=a.dropout, target_modules=a.targets.split(","),
                         task_type="CAUSAL_LM")
        model = get_peft_model(model, cfg)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        out["trainable_params"] = sum(p.numel() for p in params)
        opt = torch.optim.AdamW(params, lr=2e-4)
        losses, times = [], []
        for i in range(a.steps + a.warmup):  # the first --warmup steps are not timed
            x = window(i)
            t = time.time()
            loss = model(x, labels=x).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i == 0:
                out["first_step_s"] = round(time.time() - t0, 2)  # process start to the end of the first step
            if i >= a.warmup:
                times.append(time.time() - t)
                losses.append(round(loss.item(), 4))
        out["train_tokens_per_s"] = round(len(times) * n / sum(times), 2)
        out["train_step_s"] = round(sum(times) / len(times), 3)
        out["losses"] = losses
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
