#!/usr/bin/env bash
# fuzz/run.sh [SECONDS] [TARGET...]: runs each libFuzzer harness (default: all) for SECONDS (default 60) on a seed
# corpus built from the test fixtures, and prints one line per target: executions, corpus size, and whether a
# crash or a slow unit (over 10 s) was found (its input is kept under $FUZZ_BUILD/crashes/TARGET/). Exits 1 if any was.
# Builds fuzz/lora-fuzz first when it is missing or older than the sources (fuzz/build.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${FUZZ_BUILD:-$root/.build-fuzz}
secs=${1:-60}; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors json config adapter tokenizer jinja jsonl checkpoint gguf)
bin="$out/lora-fuzz"
if [ ! -x "$bin" ] || [ -n "$(find "$root/Sources" "$root/fuzz" -name '*.swift' -newer "$bin" -print -quit)" ]; then
    FUZZ_BUILD="$out" bash "$root/fuzz/build.sh" >&2
fi
fx="$root/Tests/LoRASharedTests/Fixtures"
seed() {  # seed TARGET DIR: the fixtures that become TARGET's corpus
    local t=$1 d=$2
    mkdir -p "$d"
    case $t in
        safetensors) find "$fx" -name '*.safetensors' -size -64k -exec cp -t "$d" --backup=numbered {} + ;;
        json) find "$fx" -name '*.json' -size -16k -exec cp -t "$d" --backup=numbered {} + ;;
        config) find "$fx" -name 'config.json' -exec cp -t "$d" --backup=numbered {} + ;;
        adapter) find "$fx" -name 'adapter_config.json' -exec cp -t "$d" --backup=numbered {} + ;;
        tokenizer) find "$fx/tokenizer" -name 'tokenizer.json' -exec cp -t "$d" --backup=numbered {} + ;;
        jinja) cp "$fx"/chat/*.jinja "$root"/fuzz/seeds/jinja/*.jinja "$d"/ ;;
        jsonl) find "$root/data" -name '*.jsonl' -size -64k -exec cp -t "$d" --backup=numbered {} +
               head -c 4000 "$root/bench/corpus.jsonl" > "$d/corpus-head.jsonl"
               cp "$root"/fuzz/seeds/jsonl/* "$d"/ ;;
        gguf) cp "$fx"/gguf/*.gguf "$root"/fuzz/seeds/gguf/*.gguf "$d"/ ;;
        checkpoint) printf '{"step": 4, "epoch": 1, "batchInEpoch": 2, "tokensSeen": 900, "fingerprint": "ab", "elapsedSeconds": 3.5, "lastLoss": 2.5, "format": "lora-pipeline-checkpoint-1", "compute_dtype": "f32"}' > "$d/state.json" ;;
    esac
}
status=0
for t in "${targets[@]}"; do
    corpus="$out/corpus/$t"; crashes="$out/crashes/$t"
    [ -d "$corpus" ] || seed "$t" "$corpus"
    mkdir -p "$crashes"
    log="$out/$t.log"
    max_len=65536; [ "$t" = tokenizer ] && max_len=262144
    set +e
    (cd "$root" && ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 LORA_FUZZ_TARGET=$t "$bin" -max_total_time="$secs" \
        -max_len=$max_len -timeout=10 -rss_limit_mb=3072 -artifact_prefix="$crashes/" -print_final_stats=1 "$corpus" >"$log" 2>&1)
    rc=$?
    set -e
    execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log" | tail -1)
    found=$(find "$crashes" -type f | wc -l)
    # libFuzzer keeps an input that ran longer than -report_slow_units (10 s) as slow-unit-*: a near-timeout, a finding too.
    slow=$(find "$crashes" -type f -name 'slow-unit-*' | wc -l)
    echo "fuzz $t: ${execs:-?} executions in ${secs} s, corpus $(find "$corpus" -type f | wc -l), crashes $((found - slow)), slow units $slow (exit $rc)"
    if [ "$rc" -ne 0 ] || [ "$found" -gt 0 ]; then status=1; grep -m3 -E "ERROR|SUMMARY|Fatal error|runtime failure" "$log" >&2 || true; fi
done
exit $status
