#!/usr/bin/env bash
# report.sh OUT_DIR: the short report `make demo` prints, from the files the Makefile leaves in OUT_DIR:
#   eval-before.json, eval-after.json     lora-eval of the base, then base + trained adapter (test set)
#   eval-merged.json      (optional)      lora-eval of the merged model
#   train.jsonl, train-params (optional)  lora-train's metrics lines, the hyperparameters
#   run/training_config.json, run/adapter_config.json (optional)  the values the run used (preferred)
#   run/loss.svg          (optional)      lora-train's loss curve, named in the report when present
#   gen-before.jsonl, gen-after.jsonl     lora-generate --jsonl answers of the base and the merged model
#   prompts.jsonl                         the prompts they answer, line by line
# It prints the perplexity before and after and their ratio, then each prompt with a sample answer before
# and after (cut to ANSWER_CHARS bytes, default 300, on a character boundary; newlines shown as spaces).
# Needs no jq (lib/json-get falls back to awk). Exit codes: 0 done, 1 a required file is missing or
# unreadable, 64 bad usage.
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
json_get="$here/lib/json-get"

if [ "$#" -ne 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    [ "$#" -eq 1 ] && exit 0 || exit 64
fi
out=${1%/}
answer_chars=${ANSWER_CHARS:-300}
case "$answer_chars" in '' | *[!0-9]*) echo "error: ANSWER_CHARS=$answer_chars is not a number; set a byte count such as 300" >&2; exit 64 ;; esac

need() {
    [ -r "$1" ] || { echo "error: $1 is missing, needed for the report; run make in pipelines/ first" >&2; exit 1; }
}
need "$out/eval-before.json"
need "$out/eval-after.json"

# value KEY FILE: the first line's KEY (see lib/json-get)
value() { "$json_get" "$1" "$2" | head -n 1; }

# cut TEXT to answer_chars bytes without splitting a UTF-8 character
shorten() {
    printf '%s\n' "$1" | LC_ALL=C awk -v max="$answer_chars" '
    BEGIN { for (i = 128; i < 192; i++) cont[sprintf("%c", i)] = 1 }
    {
        gsub(/[ ]+/, " ")
        if (length($0) <= max) { print; next }
        n = max
        while (n > 0 && (substr($0, n + 1, 1) in cont)) n--
        print substr($0, 1, n) " [...]"
    }'
}

ppl_before=$(value perplexity "$out/eval-before.json")
ppl_after=$(value perplexity "$out/eval-after.json")
loss_before=$(value loss "$out/eval-before.json")
loss_after=$(value loss "$out/eval-after.json")
tokens=$(value tokens "$out/eval-after.json")

echo "== lora-pipeline report: $out =="
if [ -r "$out/run/training_config.json" ]; then
    # the values the run used (flags, CONFIG and the tools' defaults together), as lora-train and lora-init saved them
    tc=$(tr '\n' ' ' < "$out/run/training_config.json")
    ac=$(tr '\n' ' ' < "$out/run/adapter_config.json" 2>/dev/null || echo '{}')
    get() { printf '%s\n' "$tc" | "$json_get" "$1"; }
    aget() { printf '%s\n' "$ac" | "$json_get" "$1"; }
    steps=$(get max-steps)
    if [ "$steps" = null ]; then steps="epochs=$(get epochs)"; else steps="max_steps=$steps"; fi
    echo "training:    model=$(get model)  train=$(get data)  rank=$(aget r)  alpha=$(aget lora_alpha)  targets=$(aget target_modules | tr -d '" ')  lr=$(get lr)  $steps  seq_len=$(get seq-len)  batch=$(get batch-size)  seed=$(get seed)"
elif [ -r "$out/train-params" ]; then
    # key=value lines -> one line of the ones that describe the run
    params=$(awk -F= '$1 ~ /^(model|train|rank|alpha|targets|lr|epochs|max_steps|seq_len|batch|seed)$/ && $2 != "" {
        printf "%s%s=%s", sep, $1, $2; sep = "  " }' "$out/train-params")
    echo "training:    $params"
fi
if [ -r "$out/train.jsonl" ] && [ -s "$out/train.jsonl" ]; then
    last=$(tail -n 1 "$out/train.jsonl")
    if [ "$(printf '%s\n' "$last" | "$json_get" final)" = true ]; then
        field() { printf '%s\n' "$last" | "$json_get" "$1"; }
        valid_loss=$(field valid_loss)
        printf 'trained:     %s steps in %s s, final train loss %s%s\n' "$(field steps)" "$(field seconds)" \
            "$(field train_loss)" "$([ "$valid_loss" = null ] || printf ', valid loss %s' "$valid_loss")"
    fi
fi
if [ -r "$out/run/loss.svg" ]; then
    echo "loss curve:  $out/run/loss.svg (train and valid loss, learning rate; open in a browser)"
fi
if [ -r "$out/eval-params" ]; then
    eval_model=$(sed -n 's/^model=//p' "$out/eval-params")
    eval_data=$(sed -n 's/^test=//p' "$out/eval-params")
    echo "evaluated:   $eval_data on $eval_model, without (before) and with (after) the adapter"
fi
awk -v pb="$ppl_before" -v pa="$ppl_after" -v lb="$loss_before" -v la="$loss_after" -v t="$tokens" 'BEGIN {
    printf "test set:    %s scored tokens\n", t
    printf "perplexity:  before %.4f (loss %.4f)   after %.4f (loss %.4f)\n", pb, lb, pa, la
    if (pb + 0 > 0) printf "ratio:       after / before = %.4f (%+.1f%%)\n", pa / pb, (pa / pb - 1) * 100
}'
if [ -r "$out/eval-merged.json" ]; then
    printf 'merged:      perplexity %.4f (loss %.4f)\n' "$(value perplexity "$out/eval-merged.json")" \
        "$(value loss "$out/eval-merged.json")"
fi

before="$out/gen-before.jsonl"
after="$out/gen-after.jsonl"
if [ -r "$before" ] || [ -r "$after" ]; then
    src=$before
    [ -r "$src" ] || src=$after
    # the prompts: our own input file (line n of the answers is prompt n), else the answers' "prompt" key
    if [ -r "$out/prompts.jsonl" ]; then
        mapfile -t prompts < <("$json_get" prompt "$out/prompts.jsonl")
    else
        mapfile -t prompts < <("$json_get" prompt "$src")
    fi
    mapfile -t answers_before < <([ -r "$before" ] && "$json_get" completion "$before")
    mapfile -t answers_after < <([ -r "$after" ] && "$json_get" completion "$after")
    mapfile -t reasons_before < <([ -r "$before" ] && "$json_get" finish_reason "$before")
    mapfile -t reasons_after < <([ -r "$after" ] && "$json_get" finish_reason "$after")
    echo
    echo "sample answers (before: base model; after: merged model):"
    for i in "${!prompts[@]}"; do
        echo
        echo "[$((i + 1))] $(shorten "${prompts[$i]}")"
        cut_before=""
        cut_after=""
        [ "${reasons_before[$i]:-}" != length ] || cut_before=" (stopped at MAX_TOKENS)"
        [ "${reasons_after[$i]:-}" != length ] || cut_after=" (stopped at MAX_TOKENS)"
        echo "  before: $(shorten "${answers_before[$i]:-(none)}")$cut_before"
        echo "  after:  $(shorten "${answers_after[$i]:-(none)}")$cut_after"
    done
fi
