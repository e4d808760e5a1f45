#!/usr/bin/env bash
# bench/ab_builds.sh DIR_A DIR_B [ROUNDS]: alternating A/B of two release builds of the tools (e.g. before and after
# a change to build flags or module layout), each holding lora-init, lora-train and lora-eval: per round, train tokens/s
# (4 steps, batch 4 × 256, dropout 0, the median of steps 2-4) and eval tokens/s on bench/corpus.jsonl, f32, on
# the demo model. Run from the repository root on an otherwise idle machine; compare medians across rounds.
set -euo pipefail
a=${1:?usage: bench/ab_builds.sh DIR_A DIR_B [ROUNDS]}; b=${2:?usage: bench/ab_builds.sh DIR_A DIR_B [ROUNDS]}
rounds=${3:-3}
m=models/smollm2-135m-instruct
adapter=$(mktemp -d)
trap 'rm -rf "$adapter" /tmp/ab-out-*' EXIT
"$a/lora-init" "$m" -o "$adapter/a" -q >/dev/null
for round in $(seq "$rounds"); do
    for v in "$a" "$b"; do
        t=$("$v/lora-train" "$m" "$adapter/a" --data bench/corpus.jsonl -o "/tmp/ab-out-$$" --seq-len 256 --batch-size 4 --max-steps 4 \
              --dropout 0 --log-every 1 --force -q --compute-dtype f32 | jq -s '[.[1:4][] | .tokens_per_s] | sort | .[1]')
        e=$("$v/lora-eval" "$m" --data bench/corpus.jsonl --seq-len 256 -q --compute-dtype f32 | jq .tokens_per_s)
        echo "round $round $v train_tokens_per_s $t eval_tokens_per_s $e"
    done
done
