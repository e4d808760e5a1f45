#!/usr/bin/env bash
# pipelines/tests/run.sh: fast tests of pipelines/ (cron wrapper, Makefile, jq example, report helpers) with
# fake lora-* tools, small shell scripts written to a temporary folder that BIN points to. No model, no build,
# no network; a few seconds. Prints one line per check and, last, `pipelines tests: N passed, M failed`;
# exits 1 when any check failed.
#
#   bash pipelines/tests/run.sh [-v]      (-v: show the output of failed commands in full)
set -uo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
pipelines=$(cd -- "$here/.." && pwd -P)
verbose=0
[ "${1:-}" = "-v" ] && verbose=1

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pipelines-tests.XXXXXX")
bg_pids=()
cleanup() {
    local p
    for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); printf 'ok   - %s\n' "$1"; }
not_ok() {
    failed=$((failed + 1))
    printf 'FAIL - %s\n' "$1"
    if [ -n "${2:-}" ]; then
        if [ "$verbose" = 1 ]; then printf '%s\n' "$2" | sed 's/^/       | /'; else printf '%s\n' "$2" | tail -n 15 | sed 's/^/       | /'; fi
    fi
}
# check NAME CONDITION-COMMAND... : ok when the command succeeds
check() {
    local name=$1
    shift
    if "$@"; then ok "$name"; else not_ok "$name" "${detail:-}"; fi
    detail=""
}
detail=""
contains() { grep -q -e "$2" "$1" 2>/dev/null; }
lacks() { ! grep -q -e "$2" "$1" 2>/dev/null; }
calls_of() { grep -c "^$1\( \|$\)" "$calls" 2>/dev/null || true; }

# ---------------------------------------------------------------------------------------------------------
# fake tools: every call is appended to $FAKE_CALLS as "tool arg arg ..."; behaviour from FAKE_* variables
fake="$tmp/bin"
mkdir -p "$fake"
cat > "$fake/common.sh" <<'EOF'
record() { { printf '%s' "$(basename "$0")"; printf ' %s' "$@"; printf '\n'; } >> "${FAKE_CALLS:-/dev/null}"; }
# opt NAME ARGS...: the value after --NAME (or -o)
opt() { local n=$1; shift; while [ "$#" -gt 0 ]; do if [ "$1" = "$n" ]; then printf '%s' "${2:-}"; return 0; fi; shift; done; return 1; }
has() { local n=$1; shift; local a; for a in "$@"; do [ "$a" = "$n" ] && return 0; done; return 1; }
EOF
cat > "$fake/lora-quantize" <<'EOF'
#!/usr/bin/env bash
. "$(dirname "$0")/common.sh"; record "$@"
out=$(opt -o "$@"); mkdir -p "$out"
printf '{"quantization_config": {"quant_method": "bitsandbytes"}}\n' > "$out/config.json"
echo '{"output": "'"$out"'"}'
EOF
cat > "$fake/lora-init" <<'EOF'
#!/usr/bin/env bash
. "$(dirname "$0")/common.sh"; record "$@"
[ "${FAKE_INIT:-ok}" = fail ] && { echo "error: fake lora-init failure" >&2; exit 1; }
out=$(opt -o "$@"); mkdir -p "$out"
echo '{"r": 8}' > "$out/adapter_config.json"
echo "init $(opt --seed "$@")" > "$out/adapter_model.safetensors"
echo '{"output": "'"$out"'"}'
EOF
cat > "$fake/lora-train" <<'EOF'
#!/usr/bin/env bash
. "$(dirname "$0")/common.sh"; record "$@"
if has --sanity-check "$@"; then  # writes nothing; the curve and the verdict on stdout
    echo '{"sanity_step": 1, "loss": 2.5}'
    case "${FAKE_SANITY:-ok}" in
    fail) echo '{"sanity_check": "failed", "problems": [{"cause": "missing-eos", "message": "no EOS", "lines": [1]}]}'
          echo "sanity check failed: missing-eos: no EOS" >&2; exit 1 ;;
    esac
    echo '{"sanity_check": "passed", "steps": 1, "problems": []}'; exit 0
fi
out=$(opt -o "$@"); data=$(opt --data "$@")
state=${FAKE_STATE:-/dev/null}
case "${FAKE_TRAIN:-ok}" in fail) echo "error: fake training failure, step 3; fix the data" >&2; exit 1 ;; esac
if has --resume "$@"; then
    ls -d "$out"/checkpoints/step-* >/dev/null 2>&1 || { echo "error: no checkpoint to resume in $out" >&2; exit 1; }
elif [ -e "$out/adapter_model.safetensors" ] || [ -d "$out/checkpoints" ]; then
    has --force "$@" || { echo "error: $out holds a run; use --resume or --force" >&2; exit 1; }
    rm -rf "$out"
fi
mkdir -p "$out"
[ "$data" = - ] && cat > "$out/data-seen.jsonl"
checkpoint() { mkdir -p "$out/checkpoints/step-0000001"; echo ckpt > "$out/checkpoints/step-0000001/adapter_model.safetensors"; }
case "${FAKE_TRAIN:-ok}" in
interrupt) checkpoint; echo "lora: signal 15: finishing this step and writing a checkpoint" >&2; exit 143 ;;
wait)
    trap 'checkpoint; echo TERM >> "$state/signals"; exit 143' TERM
    trap 'echo INT >> "$state/signals"' INT
    : > "$state/train-started"
    for _ in $(seq 200); do sleep 0.05; done
    echo "error: fake lora-train waited 10 s for a signal" >&2; exit 1 ;;
esac
echo '{"step": 1, "loss": 2.5}'
echo "loss=${FAKE_LOSS:-2.0}" > "$out/adapter_model.safetensors"
echo '{"r": 8}' > "$out/adapter_config.json"
echo '{"lr": 1}' > "$out/training_config.json"
echo '<svg xmlns="http://www.w3.org/2000/svg"/>' > "$out/loss.svg"
echo '{"final": true, "steps": 2, "train_loss": 1.5, "valid_loss": 1.75, "seconds": 0.5, "adapter": "'"$out"'"}'
EOF
cat > "$fake/lora-inspect" <<'EOF'
#!/usr/bin/env bash
. "$(dirname "$0")/common.sh"; record "$@"
[ "${FAKE_INSPECT:-ok}" = fail ] && { echo "error: fake inspect failure" >&2; exit 1; }
printf '{\n  "kind": "fake",\n  "path": "%s"\n}\n' "$1"
EOF
cat > "$fake/lora-eval" <<'EOF'
#!/usr/bin/env bash
. "$(dirname "$0")/common.sh"; record "$@"
[ "${FAKE_EVAL:-ok}" = fail ] && { echo "error: fake eval failure" >&2; exit 1; }
model=$1; adapter=$(opt --adapter "$@" || true)
loss=${FAKE_BASE_LOSS:-3.0}
if [ -n "$adapter" ]; then
    l=$(sed -n 's/^loss=//p' "$adapter/adapter_model.safetensors")
    [ -n "$l" ] && loss=$l
elif [ -f "$model/merged-loss" ]; then
    loss=$(cat "$model/merged-loss")
fi
awk -v l="$loss" 'BEGIN { printf "{\"loss\": %s, \"perplexity\": %.6f, \"tokens\": 100, \"adapter\": null}\n", l, exp(l) }'
EOF
cat > "$fake/lora-export" <<'EOF'
#!/usr/bin/env bash
. "$(dirname "$0")/common.sh"; record "$@"
out=$(opt -o "$@"); echo GGUF > "$out"
echo '{"output": "'"$out"'"}'
EOF
cat > "$fake/lora-merge" <<'EOF'
#!/usr/bin/env bash
. "$(dirname "$0")/common.sh"; record "$@"
out=$(opt -o "$@"); adapter=$(opt --adapter "$@"); mkdir -p "$out"
echo '{"model_type": "llama"}' > "$out/config.json"
sed -n 's/^loss=//p' "$adapter/adapter_model.safetensors" > "$out/merged-loss"
echo '{"output": "'"$out"'"}'
EOF
cat > "$fake/lora-generate" <<'EOF'
#!/usr/bin/env bash
. "$(dirname "$0")/common.sh"; record "$@"
model=$1; jsonl=$(opt --jsonl "$@")
who=base; [ -f "$model/merged-loss" ] && who=tuned
n=0
while IFS= read -r line; do
    n=$((n + 1))
    p=$(printf '%s' "$line" | sed 's/^{"prompt":\(".*"\)}$/\1/')
    printf '{"line": %d, "prompt": %s, "completion": "%s answer %d\\nsecond line", "tokens": 7, "finish_reason": "stop", "tokens_per_s": 12.5}\n' "$n" "$p" "$who" "$n"
done < "$jsonl"
EOF
chmod +x "$fake"/lora-*

# a PATH without jq, to test the paths that must work where jq is not installed
nojq="$tmp/nojq-bin"
mkdir -p "$nojq"
for d in /usr/local/bin /usr/bin /bin /usr/sbin /sbin; do
    [ -d "$d" ] || continue
    for f in "$d"/*; do
        b=${f##*/}
        [ "$b" = jq ] || [ -e "$nojq/$b" ] || ln -s "$f" "$nojq/$b"
    done
done
have_jq=0
command -v jq >/dev/null 2>&1 && have_jq=1

export FAKE_CALLS="$tmp/calls"
calls=$FAKE_CALLS
export FAKE_STATE="$tmp/state"
mkdir -p "$FAKE_STATE"

echo "# syntax"
for f in "$pipelines/cron-train.sh" "$pipelines/report.sh" "$pipelines/examples/jq-filter-train.sh" \
    "$pipelines/lib/json-get" "$pipelines/lib/prompts-to-jsonl" "$pipelines/lib/trace" "$here/run.sh"; do
    detail=$(bash -n "$f" 2>&1)
    check "bash -n ${f#"$pipelines"/}" bash -n "$f"
done
if command -v shellcheck >/dev/null 2>&1; then
    detail=$(cd "$pipelines" && shellcheck cron-train.sh report.sh examples/jq-filter-train.sh lib/json-get \
        lib/prompts-to-jsonl lib/trace tests/run.sh 2>&1)
    check "shellcheck" test -z "$detail"
else
    echo "# shellcheck not installed: skipped"
fi

# ---------------------------------------------------------------------------------------------------------
echo "# cron-train.sh"
cw="$pipelines/cron-train.sh"
model="$tmp/model"
mkdir -p "$model"
echo '{"model_type": "llama"}' > "$model/config.json"
echo weights > "$model/model.safetensors"
cdata="$tmp/cron-data"
mkdir -p "$cdata"
echo '{"text": "day 1"}' > "$cdata/train.jsonl"
echo '{"text": "valid"}' > "$cdata/valid.jsonl"
work="$tmp/work"
deploy="$work/deploy"
# cron_run LABEL [VAR=value...]: run the wrapper with the test config; status in $rc, stdout/stderr in files
cron_run() {
    local label=$1
    shift
    : > "$calls"
    rc=0
    env MODEL="$model" DATA="$cdata/train.jsonl" VALID="$cdata/valid.jsonl" WORK="$work" BIN="$fake" NICE=0 \
        "$@" "$cw" > "$tmp/cron.out" 2> "$tmp/cron.err" < /dev/null || rc=$?
    last_log=$(find "$work/logs" -name 'train-*.log' -printf '%T@ %p\n' 2>/dev/null | sort -n | tail -n 1 | cut -d' ' -f2-)
    detail="[$label] exit $rc
stdout: $(cat "$tmp/cron.out")
stderr: $(cat "$tmp/cron.err")
log: $( [ -n "$last_log" ] && cat "$last_log")
calls: $(cat "$calls")"
}
link_of() { readlink "$1" 2>/dev/null; }

rc=0
env -u MODEL WORK="$work" DATA=x VALID=y BIN="$fake" "$cw" > /dev/null 2> "$tmp/cron.err" || rc=$?
detail="exit $rc: $(cat "$tmp/cron.err")"
check "missing MODEL: exit 64 with an error line" test "$rc" = 64 -a -n "$(grep '^cron-train: error: MODEL is not set' "$tmp/cron.err")"

cron_run first FAKE_LOSS=2.0
first_target=$(link_of "$deploy/current")
check "first run (nothing deployed): exit 0, promoted" test "$rc" = 0 -a -n "$first_target"
check "first run: current -> releases/NAME holding the adapter and eval.json" \
    test -f "$deploy/current/adapter_model.safetensors" -a -f "$deploy/current/eval.json"
check "first run: JSON summary on stdout" contains "$tmp/cron.out" '^{"result": "promoted", "new_loss": 2.0'
check "first run: lora-init, lora-train, lora-eval each called once" \
    test "$(calls_of lora-init)$(calls_of lora-train)$(calls_of lora-eval)" = 111
check "first run: every log line starts with a timestamp" \
    test -n "$last_log" -a -s "$last_log" -a -z "$(grep -Ev '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}[+-][0-9]{4} ' "$last_log")"
check "first run: log name logs/train-YYYYmmdd-HHMMSS.log" \
    test -n "$(basename "$last_log" | grep -E '^train-[0-9]{8}-[0-9]{6}(-[0-9]+)?\.log$')"
check "first run: lora-train output (JSON lines) is in the log" contains "$last_log" '"final": true'
check "first run: the loss curve is kept beside the log and in the release" \
    test -n "$last_log" -a -f "${last_log%.log}.loss.svg" -a -f "$deploy/current/loss.svg"

touch -d '40 days ago' "$work/logs/train-20000101-000000.log" "$work/logs/train-20000101-000000.loss.svg"
cron_run unchanged
check "unchanged inputs: exit 0, nothing trained" test "$rc" = 0 -a "$(calls_of lora-train)" = 0
check "logs and loss curves older than KEEP_LOGS_DAYS are removed, recent ones kept" \
    test ! -e "$work/logs/train-20000101-000000.log" -a ! -e "$work/logs/train-20000101-000000.loss.svg" \
    -a -n "$(find "$work/logs" -name 'train-*.loss.svg')"
check "unchanged inputs: summary says unchanged" contains "$tmp/cron.out" '"result": "unchanged"'

# (a) the lock
# the holder: one process (sleep, after exec) with the lock's fd, so killing it frees the lock
bash -c 'exec 8> "$1" && flock 8 && exec sleep 30' _ "$work/cron-train.lock" &
holder=$!
bg_pids+=("$holder")
for _ in $(seq 100); do flock -n "$work/cron-train.lock" true 2>/dev/null || break; sleep 0.05; done
echo '{"text": "day 2"}' >> "$cdata/train.jsonl"
cron_run locked
check "(a) lock held by another run: exit 75" test "$rc" = 75
check "(a) lock held: no tool ran" test ! -s "$calls"
check "(a) lock held: log says another run holds the lock" contains "$last_log" "another run holds $work/cron-train.lock"
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null

# (b) promotion when better, atomically
: > "$tmp/reader.log"
(
    while [ ! -e "$tmp/reader.stop" ]; do
        [ -e "$deploy/current/adapter_model.safetensors" ] || echo "current missing at $(date +%T.%N)" >> "$tmp/reader.log"
    done
) &
reader=$!
bg_pids+=("$reader")
cron_run better FAKE_LOSS=1.5
touch "$tmp/reader.stop"
wait "$reader" 2>/dev/null
second_target=$(link_of "$deploy/current")
check "(b) lower loss: exit 0, promoted" test "$rc" = 0 -a -n "$(grep '"result": "promoted"' "$tmp/cron.out")"
check "(b) current -> the new release" test -n "$second_target" -a "$second_target" != "$first_target" \
    -a "$(sed -n 's/^loss=//p' "$deploy/current/adapter_model.safetensors")" = 1.5
check "(b) previous -> the release it replaced, still there" \
    test "$(link_of "$deploy/previous")" = "$first_target" -a -f "$deploy/previous/adapter_model.safetensors"
check "(b) current is a symlink that never went missing during the swap" \
    test -L "$deploy/current" -a ! -s "$tmp/reader.log"
check "(b) no temporary link or release left" \
    test -z "$(find "$deploy" -name '.*tmp*' -print -quit)"
check "(b) the release keeps eval.json, eval.sig and promotion.json" \
    test -f "$deploy/current/eval.json" -a -f "$deploy/current/eval.sig" -a -f "$deploy/current/promotion.json"
check "(b) checkpoints of the finished run removed" test ! -e "$work/run/checkpoints"

# (c) no promotion when worse
echo '{"text": "day 3"}' >> "$cdata/train.jsonl"
cron_run worse FAKE_LOSS=1.9
check "(c) higher loss: exit 0, kept" test "$rc" = 0 -a -n "$(grep '"result": "kept"' "$tmp/cron.out")"
check "(c) current and previous unchanged" \
    test "$(link_of "$deploy/current")" = "$second_target" -a "$(link_of "$deploy/previous")" = "$first_target"
check "(c) the deployed loss was read from its eval.json (no second lora-eval)" test "$(calls_of lora-eval)" = 1
check "(c) log says why" contains "$last_log" "not promoting: new loss 1.9 is not below the deployed 1.5"
echo '{"text": "day 3b"}' >> "$cdata/train.jsonl"
cron_run equal FAKE_LOSS=1.5
check "(c) equal loss: kept" test "$rc" = 0 -a "$(link_of "$deploy/current")" = "$second_target"
echo '{"text": "day 3c"}' >> "$cdata/train.jsonl"
cron_run min-improvement FAKE_LOSS=1.45 MIN_IMPROVEMENT=0.1
check "(c) MIN_IMPROVEMENT=0.1: 1.45 vs 1.5 kept" test "$rc" = 0 -a "$(link_of "$deploy/current")" = "$second_target"

# (d) resume after an interruption
echo '{"text": "day 4"}' >> "$cdata/train.jsonl"
cron_run interrupted FAKE_TRAIN=interrupt
check "(d) lora-train stopped by a signal: exit 143, checkpoint kept" \
    test "$rc" = 143 -a -d "$work/run/checkpoints/step-0000001"
check "(d) deployed untouched by the interrupted run" test "$(link_of "$deploy/current")" = "$second_target"
cron_run resume FAKE_LOSS=1.2
check "(d) next run passes --resume" test -n "$(grep '^lora-train .* --resume' "$calls")"
check "(d) next run reuses the initial adapter (no lora-init)" test "$(calls_of lora-init)" = 0
check "(d) the resumed run is evaluated and promoted" test "$rc" = 0 -a "$(sed -n 's/^loss=//p' "$deploy/current/adapter_model.safetensors")" = 1.2

echo '{"text": "day 5"}' >> "$cdata/train.jsonl"
cron_run interrupted2 FAKE_TRAIN=interrupt
echo '{"text": "day 5, more"}' >> "$cdata/train.jsonl"
cron_run changed FAKE_LOSS=1.3
check "(d) data changed since the interruption: starts over (no --resume, new lora-init)" \
    test -z "$(grep -e '--resume' "$calls")" -a "$(calls_of lora-init)" = 1

# a real SIGTERM to the wrapper while training: forwarded once, checkpoint, exit 143, then resume
echo '{"text": "day 6"}' >> "$cdata/train.jsonl"
rm -f "$FAKE_STATE/train-started" "$FAKE_STATE/signals"
: > "$calls"
env MODEL="$model" DATA="$cdata/train.jsonl" VALID="$cdata/valid.jsonl" WORK="$work" BIN="$fake" NICE=0 FAKE_TRAIN=wait \
    "$cw" > "$tmp/cron.out" 2> "$tmp/cron.err" < /dev/null &
wpid=$!
bg_pids+=("$wpid")
for _ in $(seq 200); do [ -e "$FAKE_STATE/train-started" ] && break; sleep 0.05; done
kill -TERM "$wpid"
rc=0
wait "$wpid" || rc=$?
detail="exit $rc; signals: $(cat "$FAKE_STATE/signals" 2>/dev/null); $(cat "$tmp/cron.err")"
check "SIGTERM to the wrapper: exit 143, summary says stopped" \
    test "$rc" = 143 -a -n "$(grep '"result": "stopped", "signal": "TERM"' "$tmp/cron.out")"
check "SIGTERM to the wrapper: lora-train got exactly one SIGTERM and wrote its checkpoint" \
    test "$(cat "$FAKE_STATE/signals" 2>/dev/null)" = TERM -a -d "$work/run/checkpoints/step-0000001"
cron_run after-sigterm FAKE_LOSS=1.1
check "SIGTERM to the wrapper: the next run resumes" test -n "$(grep '^lora-train .* --resume' "$calls")" -a "$rc" = 0

# (e) failing training
good_target=$(link_of "$deploy/current")
echo '{"text": "day 7"}' >> "$cdata/train.jsonl"
cron_run failing FAKE_TRAIN=fail
check "(e) training fails: exit 1" test "$rc" = 1
check "(e) training fails: error line on stderr (for cron's mail)" contains "$tmp/cron.err" '^cron-train: error: lora-train failed (exit 1)'
check "(e) training fails: deployed symlinks untouched, no new release" \
    test "$(link_of "$deploy/current")" = "$good_target" -a "$(find "$deploy/releases" -mindepth 1 -maxdepth 1 | wc -l)" -le 5 \
    -a -z "$(grep promoted "$tmp/cron.out")"
cron_run failing-eval FAKE_EVAL=fail FAKE_LOSS=0.9
check "evaluation fails: exit 1, deployed untouched" test "$rc" = 1 -a "$(link_of "$deploy/current")" = "$good_target"
cron_run after-failing-eval FAKE_LOSS=0.9
check "after a failed evaluation: no retraining, evaluated and promoted" \
    test "$rc" = 0 -a "$(calls_of lora-train)" = 0 -a "$(sed -n 's/^loss=//p' "$deploy/current/adapter_model.safetensors")" = 0.9

# SANITY=1: the one-batch check gates a new run
good_target=$(link_of "$deploy/current")
echo '{"text": "day 7b"}' >> "$cdata/train.jsonl"
cron_run sanity-fail SANITY=1 FAKE_SANITY=fail FAKE_LOSS=0.5
check "SANITY=1, check fails: exit 4, only the check ran, nothing trained or deployed" \
    test "$rc" = 4 -a "$(calls_of lora-train)" = 1 -a -n "$(grep -e '^lora-train .*--sanity-check' "$calls")" \
    -a "$(link_of "$deploy/current")" = "$good_target" -a ! -e "$work/run/adapter_model.safetensors"
check "SANITY=1, check fails: the error line names the cause and the report" \
    contains "$tmp/cron.err" "^cron-train: error: the sanity check failed (missing-eos); nothing was trained; see $work/sanity.json"
check "SANITY=1, check fails: summary says refused" contains "$tmp/cron.out" '^{"result": "refused", "causes": "missing-eos"'
cron_run sanity-again SANITY=1 FAKE_SANITY=fail FAKE_LOSS=0.5
check "SANITY=1: a refused round is tried again the next night (not 'unchanged')" test "$rc" = 4
cron_run sanity-ok SANITY=1 SANITY_ARGS="--sanity-steps 7" FAKE_LOSS=0.5
check "SANITY=1, check passes: it runs with SANITY_ARGS, then training, then promotion" \
    test "$rc" = 0 -a "$(calls_of lora-train)" = 2 -a -n "$(head -n 2 "$calls" | grep -e '--sanity-check .*--sanity-steps 7')" \
    -a -n "$(grep '"result": "promoted"' "$tmp/cron.out")"
cron_run sanity-bad SANITY=yes
check "SANITY=yes: exit 64" test "$rc" = 64

# validation data changed: the deployed adapter is evaluated again before the comparison
echo '{"text": "valid 2"}' >> "$cdata/valid.jsonl"
echo '{"text": "day 8"}' >> "$cdata/train.jsonl"
cron_run new-valid FAKE_LOSS=0.95
check "new VALID: the deployed adapter is evaluated again (2 lora-eval), then compared" \
    test "$(calls_of lora-eval)" = 2 -a -n "$(grep "lora-eval .* --adapter $deploy/current" "$calls")" \
    -a -n "$(grep '"result": "kept"' "$tmp/cron.out")"

# old releases are pruned, current and previous kept
check "KEEP_RELEASES (5): at most 5 releases kept" test "$(find "$deploy/releases" -mindepth 1 -maxdepth 1 -type d | wc -l)" -le 5

# TRAIN_TIMEOUT: stops training with a checkpoint, exit 3
echo '{"text": "day 9"}' >> "$cdata/train.jsonl"
cron_run timeout FAKE_TRAIN=wait TRAIN_TIMEOUT=1
check "TRAIN_TIMEOUT reached: exit 3, checkpoint kept" test "$rc" = 3 -a -d "$work/run/checkpoints/step-0000001"

detail=$(grep -rh "unexpected failure" "$work/logs" 2>/dev/null)
check "no run logged an unexpected failure (ERR trap)" test -z "$detail"

# a config file, and the environment winning over it
cat > "$tmp/cron.conf" <<EOF
MODEL=$model
DATA=$cdata/train.jsonl
VALID=$cdata/valid.jsonl
WORK=$tmp/work2
BIN=$fake
LR=1e-3
RANK=4
NICE=0
EOF
: > "$calls"
rc=0
env -i HOME="$HOME" PATH=/usr/bin:/bin FAKE_CALLS="$calls" LR=5e-4 "$cw" "$tmp/cron.conf" > "$tmp/cron.out" 2> "$tmp/cron.err" || rc=$?
detail="exit $rc: $(cat "$tmp/cron.err") calls: $(cat "$calls")"
check "config file (cron-like empty environment): exit 0, promoted into WORK from the file" \
    test "$rc" = 0 -a -L "$tmp/work2/deploy/current"
check "config file: its values used (--rank 4), the environment wins (--lr 5e-4)" \
    test -n "$(grep -e '^lora-init .*--rank 4' "$calls")" -a -n "$(grep -e '^lora-train .*--lr 5e-4' "$calls")"
check "no hyperparameter of its own: unset ones are not passed (the tools' defaults apply)" \
    test -z "$(grep -e '--seq-len\|--batch-size\|--epochs\|--dropout\|--targets' "$calls")"

# a run config (CONFIG) goes to lora-init, lora-train and lora-eval; a changed one trains anew
printf 'lora:\n  rank: 4\ntraining:\n  lr: 1e-3\n' > "$tmp/run.yaml"
rounds=""
for round in 1 2 3; do
    [ "$round" != 3 ] || printf 'lora:\n  rank: 8\n' > "$tmp/run.yaml"
    : > "$calls"
    rc=0
    env MODEL="$model" DATA="$cdata/train.jsonl" VALID="$cdata/valid.jsonl" WORK="$tmp/work3" BIN="$fake" NICE=0 \
        CONFIG="$tmp/run.yaml" FAKE_CALLS="$calls" "$cw" > /dev/null 2> "$tmp/cron.err" || rc=$?
    for t in init train eval; do
        rounds+=" $t$round=$(grep -c "^lora-$t .*--config $tmp/run.yaml" "$calls")"
    done
    rounds+=" rc$round=$rc"
done
detail="rounds:$rounds: $(cat "$tmp/cron.err")"
check "CONFIG: passed to lora-init, lora-train and lora-eval" \
    test -n "$(printf '%s' "$rounds" | grep -E ' init1=1 train1=1 eval1=[1-9] rc1=0 ')"
check "CONFIG unchanged: nothing to do; changed: trains anew" \
    test -n "$(printf '%s' "$rounds" | grep -E ' init2=0 train2=0 eval2=0 rc2=0 init3=1 train3=1 eval3=[1-9] rc3=0$')"
rc=0
env MODEL="$model" DATA="$cdata/train.jsonl" VALID="$cdata/valid.jsonl" WORK="$tmp/work3" BIN="$fake" CONFIG="$tmp/none.yaml" "$cw" \
    > /dev/null 2> "$tmp/cron.err" || rc=$?
detail="exit $rc: $(cat "$tmp/cron.err")"
check "a missing CONFIG: exit 64 naming it" test "$rc" = 64 -a -n "$(grep -F 'run config '"$tmp"'/none.yaml not readable' "$tmp/cron.err")"

rc=0
env MODEL="$model" DATA="$cdata/train.jsonl" VALID="$cdata/valid.jsonl" WORK="$work" BIN="$fake" LR=fast "$cw" \
    > /dev/null 2> "$tmp/cron.err" || rc=$?
detail="exit $rc: $(cat "$tmp/cron.err")"
check "a non-numeric LR: exit 64" test "$rc" = 64

# ---------------------------------------------------------------------------------------------------------
echo "# lib/prompts-to-jsonl, lib/json-get, report.sh"
printf '  What is "LoRA"?  \r\nback\\slash\ttab \xc3\xa9 \xe6\x97\xa5\x01\n\n   \nplain\n' > "$tmp/prompts.txt"
JSON_TOOL="awk" "$pipelines/lib/prompts-to-jsonl" "$tmp/prompts.txt" > "$tmp/p.awk"
printf '%s\n' '{"prompt":"What is \"LoRA\"?"}' '{"prompt":"back\\slash\ttab é 日\u0001"}' '{"prompt":"plain"}' > "$tmp/p.want"
detail=$(diff "$tmp/p.want" "$tmp/p.awk")
check "prompts-to-jsonl (awk): escapes, trims, skips blank lines" cmp -s "$tmp/p.want" "$tmp/p.awk"
if [ "$have_jq" = 1 ]; then
    JSON_TOOL=jq "$pipelines/lib/prompts-to-jsonl" "$tmp/prompts.txt" > "$tmp/p.jq"
    detail=$(diff "$tmp/p.jq" "$tmp/p.awk")
    check "prompts-to-jsonl: jq and awk write the same bytes" cmp -s "$tmp/p.jq" "$tmp/p.awk"
fi
PATH="$nojq" "$pipelines/lib/prompts-to-jsonl" "$tmp/prompts.txt" > "$tmp/p.nojq" 2>&1
check "prompts-to-jsonl works without jq installed" cmp -s "$tmp/p.want" "$tmp/p.nojq"
cat > "$tmp/gen.jsonl" <<'EOF'
{"line": 1, "prompt": "q \"1\"", "completion": "A\nB \u00e9\ud83d\ude00 \\ end", "tokens": 12, "finish_reason": "stop", "tokens_per_s": 35.5, "x": {"a": [1, "}"]}}
{"line": 2, "completion": "two", "prompt": "q2"}
EOF
for k in prompt completion tokens finish_reason missing; do
    JSON_TOOL="awk" "$pipelines/lib/json-get" "$k" "$tmp/gen.jsonl" > "$tmp/g.awk.$k"
done
printf 'A B é😀 \\ end\ntwo\n' > "$tmp/g.want"
detail=$(diff "$tmp/g.want" "$tmp/g.awk.completion")
check "json-get (awk): unescapes strings, \\u and surrogate pairs" cmp -s "$tmp/g.want" "$tmp/g.awk.completion"
check "json-get (awk): numbers, keys in any order, missing keys" \
    test "$(tr '\n' '|' < "$tmp/g.awk.tokens")$(tr '\n' '|' < "$tmp/g.awk.prompt")$(tr '\n' '|' < "$tmp/g.awk.missing")" = '12|null|q "1"|q2|null|null|'
if [ "$have_jq" = 1 ]; then
    same=1
    for k in prompt completion tokens finish_reason missing; do
        JSON_TOOL=jq "$pipelines/lib/json-get" "$k" "$tmp/gen.jsonl" > "$tmp/g.jq.$k"
        cmp -s "$tmp/g.jq.$k" "$tmp/g.awk.$k" || same=0
    done
    check "json-get: jq and awk agree" test "$same" = 1
fi

# ---------------------------------------------------------------------------------------------------------
echo "# Makefile"
mk() { # mk LABEL [VAR=value...]: make in pipelines/ with the fake tools and test data; status in $rc
    local label=$1
    shift
    : > "$calls"
    rc=0
    make -C "$pipelines" --no-print-directory BIN="$fake" MODEL="$model" DATA="$mdata" OUT="$out" "$@" \
        > "$tmp/make.out" 2>&1 || rc=$?
    detail="[$label] exit $rc
$(cat "$tmp/make.out")
calls: $(cat "$calls")"
}
mdata="$tmp/mdata"
out="$tmp/out"
mkdir -p "$mdata" "$out"
printf '%s\n' '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}' > "$mdata/train.jsonl"
cp "$mdata/train.jsonl" "$mdata/valid.jsonl"
cp "$mdata/train.jsonl" "$mdata/test.jsonl"
printf 'What is the capital?\nWho "wrote" it?\n' > "$mdata/prompts.txt"
echo "not ours" > "$out/keep.txt"

rc=0
make -C "$pipelines" --no-print-directory -n demo OUT="$tmp/dry" > "$tmp/make.out" 2>&1 || rc=$?
detail="exit $rc: $(cat "$tmp/make.out")"
check "make -n demo (repository defaults) parses" test "$rc" = 0 -a -n "$(grep lora-train "$tmp/make.out")"
rc=0
make -C "$pipelines" --no-print-directory help > "$tmp/make.out" 2>&1 || rc=$?
check "make help lists targets and variables (CONFIG the demo's run config)" \
    test "$rc" = 0 -a -n "$(grep -E '^  CONFIG +.*/pipelines/demo\.yaml$' "$tmp/make.out")" -a -n "$(grep -E '^  LR *$' "$tmp/make.out")"
make -C "$pipelines" --no-print-directory help OUT="$tmp/help-out" > /dev/null 2>&1
check "make help writes nothing (no OUT created)" test ! -e "$tmp/help-out"

mk demo FAKE_LOSS=2.0
check "make demo: exit 0" test "$rc" = 0
check "make demo: each tool ran (quantize 1, init 1, train 1, eval 2, merge 1, generate 2)" \
    test "$(calls_of lora-quantize)$(calls_of lora-init)$(calls_of lora-train)$(calls_of lora-eval)$(calls_of lora-merge)$(calls_of lora-generate)" = 111212
check "make demo: QLoRA: trains on the NF4 copy, merges with --base-full MODEL" \
    test -n "$(grep "^lora-train $out/base-nf4 $out/adapter-init --data $mdata/train.jsonl --valid $mdata/valid.jsonl -o $out/run --config $pipelines/demo.yaml" "$calls")" \
    -a -n "$(grep "^lora-merge $out/base-nf4 --base-full $model --adapter $out/run -o $out/merged --force" "$calls")"
check "make demo: the report shows perplexity before/after and the ratio" \
    test -n "$(grep -E '^perplexity: +before 20\.0855 \(loss 3\.0000\) +after 7\.3891 \(loss 2\.0000\)' "$tmp/make.out")" \
    -a -n "$(grep -E '^ratio: +after / before = 0\.3679 \(-63\.2%\)' "$tmp/make.out")"
check "make demo: the report shows each prompt with both answers" \
    test -n "$(grep -F '[2] Who "wrote" it?' "$tmp/make.out")" -a -n "$(grep -F 'before: base answer 2 second line' "$tmp/make.out")" \
    -a -n "$(grep -F 'after:  tuned answer 2 second line' "$tmp/make.out")"
check "make demo: the report points to the run's loss curve" contains "$tmp/make.out" "^loss curve:  $out/run/loss.svg"
check "make demo: generation input is JSONL from prompts.txt" \
    test "$(cat "$out/prompts.jsonl" 2>/dev/null)" = "$(printf '%s\n' '{"prompt":"What is the capital?"}' '{"prompt":"Who \"wrote\" it?"}')"

mk inspect inspect
check "make inspect: one JSON object with every artifact, each as lora-inspect prints it" \
    test "$rc" = 0 -a "$(calls_of lora-inspect)" = 5 -a -n "$(grep -F "\"path\": \"$out/run\"" "$out/inspect.json")" \
    -a -n "$(grep -F '"merged": {' "$out/inspect.json")" -a -n "$(grep -F '"base-nf4": {' "$out/inspect.json")"
check "make inspect: no other tool runs" test "$(wc -l < "$calls")" = 5
if command -v jq >/dev/null; then
    check "make inspect: inspect.json is valid JSON with the five artifacts" \
        test "$(jq -c 'keys' "$out/inspect.json" 2>&1)" = '["adapter-init","base-nf4","merged","model","run"]'
fi
mk inspect-fresh inspect OUT="$tmp/fresh-out"
check "make inspect before anything is made: the model, and null for the rest" \
    test "$rc" = 0 -a "$(calls_of lora-inspect)" = 1 -a -n "$(grep -F '"run": null' "$tmp/fresh-out/inspect.json")"
mk inspect-fail inspect FAKE_INSPECT=fail
check "make inspect: a failing lora-inspect fails make and leaves no inspect.json.tmp" \
    test "$rc" != 0 -a ! -e "$out/inspect.json.tmp"

mk export export
check "make export: lora-export of the merged model, and of the adapter on the model it was trained on" \
    test "$rc" = 0 -a "$(calls_of lora-export)" = 2 -a -n "$(grep "^lora-export $out/merged -o $out/merged.gguf --force" "$calls")" \
    -a -n "$(grep "^lora-export $out/base-nf4 --adapter $out/run -o $out/adapter.gguf --force" "$calls")" \
    -a -s "$out/merged.gguf" -a -s "$out/export-model.json" -a -s "$out/export-adapter.json"
mk export-again export
check "make export again: nothing to do" test "$rc" = 0 -a ! -s "$calls"
mk export-q8 export EXPORT_TYPE=q8_0 OLLAMA_NAME=demo
check "EXPORT_TYPE=q8_0 OLLAMA_NAME=demo: both exported again with --type q8_0, the model with --ollama demo" \
    test "$rc" = 0 -a "$(grep -c -e '^lora-export .*--type q8_0' "$calls")" = 2 -a -n "$(grep -e '^lora-export .*--ollama demo' "$calls")"

mk again FAKE_LOSS=2.0
check "second make demo: no tool runs" test "$rc" = 0 -a ! -s "$calls"
check "second make demo: still prints the report" contains "$tmp/make.out" '^ratio:'

sleep 0.01
touch "$mdata/train.jsonl"
mk touched FAKE_LOSS=1.0
check "touching the training data retrains, re-evaluates after, re-merges, regenerates after" \
    test "$rc" = 0 -a "$(calls_of lora-train)$(calls_of lora-eval)$(calls_of lora-merge)$(calls_of lora-generate)" = 1111
check "touching the training data redoes nothing else (no quantize, init, eval before)" \
    test "$(calls_of lora-quantize)$(calls_of lora-init)" = 00 -a -z "$(grep "^lora-eval $out/base-nf4 --data" "$calls")"

mk lr LR=1e-3
check "LR=1e-3 retrains (--lr 1e-3)" test "$rc" = 0 -a -n "$(grep -e '^lora-train .*--lr 1e-3' "$calls")" -a "$(calls_of lora-init)" = 0
mk lr-again LR=1e-3
check "LR=1e-3 again: nothing to do" test "$rc" = 0 -a ! -s "$calls"
printf 'training:\n  lr: 1e-3\n' > "$tmp/mk-run.yaml"
mk config CONFIG="$tmp/mk-run.yaml" LR=1e-3
check "CONFIG=FILE: every tool that reads it gets --config FILE; a new config redoes init, train and eval" \
    test "$rc" = 0 -a "$(grep -c -e "--config $tmp/mk-run.yaml" "$calls")" = "$(grep -c '^lora-\(init\|train\|eval\)' "$calls")" \
    -a "$(calls_of lora-init)$(calls_of lora-train)" = 11
mk config-again CONFIG="$tmp/mk-run.yaml" LR=1e-3
check "CONFIG=FILE again: nothing to do" test "$rc" = 0 -a ! -s "$calls"
sleep 0.01
printf 'training:\n  lr: 1e-3\n  epochs: 2\n' > "$tmp/mk-run.yaml"
mk config-edited CONFIG="$tmp/mk-run.yaml" LR=1e-3
check "an edited CONFIG retrains" test "$rc" = 0 -a "$(calls_of lora-train)" = 1
mk config-missing CONFIG="$tmp/nothing.yaml" LR=1e-3
check "a missing CONFIG: make fails naming it" test "$rc" != 0 -a -n "$(grep -F "$tmp/nothing.yaml is missing" "$tmp/make.out")"
mk rank RANK=4 LR=1e-3
check "RANK=4: new lora-init and training, no new quantize" \
    test "$rc" = 0 -a "$(calls_of lora-init)$(calls_of lora-train)$(calls_of lora-quantize)" = 110
mk max-tokens RANK=4 LR=1e-3 MAX_TOKENS=16
check "MAX_TOKENS=16: only the generations are redone" \
    test "$rc" = 0 -a "$(calls_of lora-generate)" = 2 -a "$(calls_of lora-train)$(calls_of lora-eval)$(calls_of lora-merge)" = 000

mk interrupted train RANK=4 LR=2e-3 FAKE_TRAIN=interrupt
check "make train stopped by a signal: make fails, checkpoint kept, says how to resume" \
    test "$rc" != 0 -a -d "$out/run/checkpoints/step-0000001" -a ! -e "$out/run/adapter_model.safetensors" \
    -a -n "$(grep 'run make again to resume' "$tmp/make.out")"
mk resumed train RANK=4 LR=2e-3
check "make train after the interruption passes --resume" \
    test "$rc" = 0 -a -n "$(grep -e '^lora-train .*--resume' "$calls")" -a -f "$out/run/adapter_model.safetensors"
mk interrupted2 train RANK=4 LR=3e-3 FAKE_TRAIN=interrupt
mk changed-lr train RANK=4 LR=4e-3
check "an interrupted run with other hyperparameters starts over (no --resume)" \
    test "$rc" = 0 -a "$(calls_of lora-train)" = 1 -a -z "$(grep -e '--resume' "$calls")"
mk failing train RANK=4 LR=5e-3 FAKE_TRAIN=fail
check "a failing lora-train fails make" test "$rc" != 0 -a -n "$(grep 'error: fake training failure' "$tmp/make.out")"

mk sanity sanity RANK=4 LR=5e-3
check "make sanity: lora-train --sanity-check on the run's model, adapter, data and flags; report in sanity.json" \
    test "$rc" = 0 -a -n "$(grep -e "^lora-train $out/base-nf4 $out/adapter-init --data $mdata/train.jsonl --sanity-check .*--lr 5e-3" "$calls")" \
    -a -n "$(grep '"sanity_check": "passed"' "$out/sanity.json")"
check "make sanity: trains nothing" test "$(calls_of lora-train)" = 1 -a ! -e "$out/sanity-failed.json"
mk sanity-again sanity RANK=4 LR=5e-3
check "make sanity again with the same inputs: nothing runs" test "$rc" = 0 -a "$(calls_of lora-train)" = 0
mk sanity-fail sanity RANK=4 LR=6e-3 FAKE_SANITY=fail
check "a failing sanity check fails make, keeps its report in sanity-failed.json, says so" \
    test "$rc" != 0 -a ! -e "$out/sanity.json" -a ! -e "$out/sanity.json.tmp" \
    -a -n "$(grep '"cause": "missing-eos"' "$out/sanity-failed.json")" -a -n "$(grep 'the sanity check failed' "$tmp/make.out")"
mk sanity-gate train RANK=4 LR=6e-3 FAKE_SANITY=fail SANITY=1
check "SANITY=1 make train: a failing check stops make before training" \
    test "$rc" != 0 -a "$(calls_of lora-train)" = 1 -a -z "$(grep -v -e '--sanity-check' "$calls" | grep '^lora-train')"
mk sanity-gate-ok train RANK=4 LR=6e-3 SANITY=1
check "SANITY=1 make train: the check runs first, then training" \
    test "$rc" = 0 -a "$(calls_of lora-train)" = 2 -a -n "$(grep -e '--sanity-check' "$calls" | head -n 1)" \
    -a -z "$(tail -n 1 "$calls" | grep -e '--sanity-check')" -a -f "$out/run/adapter_model.safetensors"
mk sanity-gate-done train RANK=4 LR=6e-3 SANITY=1
check "SANITY=1 make train with nothing changed: nothing runs" test "$rc" = 0 -a "$(calls_of lora-train)" = 0

mk no-qlora demo QLORA=0 OUT="$tmp/out-full" FAKE_LOSS=2.0
check "QLORA=0: no quantize; trains on MODEL; merge without --base-full" \
    test "$rc" = 0 -a "$(calls_of lora-quantize)" = 0 -a -n "$(grep "^lora-train $model " "$calls")" \
    -a -n "$(grep "^lora-merge $model --adapter " "$calls")"
mk eval-merged demo EVAL_MERGED=1 RANK=4 LR=4e-3
check "EVAL_MERGED=1: evaluates the merged model, shown in the report" \
    test "$rc" = 0 -a -n "$(grep "^lora-eval $out/merged --data" "$calls")" -a -n "$(grep '^merged: ' "$tmp/make.out")"
mk missing-data train TRAIN="$tmp/nope.jsonl"
check "missing training data: make fails with an error line" \
    test "$rc" != 0 -a -n "$(grep "error: $tmp/nope.jsonl is missing" "$tmp/make.out")"
mkdir -p "$tmp/bin-partial"
ln -s "$fake"/lora-* "$fake/common.sh" "$tmp/bin-partial/"
rm "$tmp/bin-partial/lora-generate"
mk missing-tool demo BIN="$tmp/bin-partial" RANK=4 LR=4e-3 MAX_TOKENS=3
check "a tool missing from BIN: make fails naming it" \
    test "$rc" != 0 -a -n "$(grep "error: $tmp/bin-partial/lora-generate not found" "$tmp/make.out")"
mk relative print-OUT OUT=some/dir
check "relative paths are from the repository root" test "$(head -n 1 "$tmp/make.out")" = "$(cd "$pipelines/.." && pwd -P)/some/dir"

PATH="$nojq" mk nojq report RANK=4 LR=4e-3
cp "$out/report.txt" "$tmp/report.jq"
rm -f "$out/report.txt"
PATH="$nojq" mk nojq report RANK=4 LR=4e-3
same_report() { [ "$rc" = 0 ] && cmp -s "$tmp/report.jq" "$out/report.txt"; }
check "report without jq installed: same report" same_report

mk clean clean
check "make clean removes the artifacts, keeps other files in OUT" \
    test "$rc" = 0 -a ! -e "$out/run" -a ! -e "$out/base-nf4" -a ! -e "$out/train-params" -a -f "$out/keep.txt" \
    -a -z "$(find "$out" -mindepth 1 ! -name keep.txt -print -quit)"

# ---------------------------------------------------------------------------------------------------------
echo "# examples/jq-filter-train.sh"
ex="$pipelines/examples/jq-filter-train.sh"
cat > "$tmp/filter.jsonl" <<'EOF'
{"messages": [{"role": "user", "content": "Capital?"}, {"role": "assistant", "content": "The capital is Lumeport."}]}
{"messages": [{"role": "user", "content": "Money?"}, {"role": "assistant", "content": "The brell."}]}
{"prompt": "Where?", "completion": "In LUMEPORT, by the sea."}
{"messages": [{"role": "user", "content": "Capital, long?"}, {"role": "assistant", "content": "Lumeport. Lumeport. Lumeport. Lumeport. Lumeport. Lumeport. Lumeport. Lumeport. Lumeport. Lumeport."}]}
EOF
if [ "$have_jq" = 1 ]; then
    : > "$calls"
    rc=0
    MODEL="$model" BIN="$fake" "$ex" --keyword lumeport --max-chars 80 "$tmp/filter.jsonl" "$tmp/ex-out" -- --epochs 2 \
        > "$tmp/ex.out" 2> "$tmp/ex.err" || rc=$?
    detail="exit $rc: $(cat "$tmp/ex.err") calls: $(cat "$calls")"
    check "jq example: exit 0, trains from stdin with a folder adapter" \
        test "$rc" = 0 -a -n "$(grep -e "^lora-train $model $tmp/ex-out.init --data - -o $tmp/ex-out --epochs 2" "$calls")"
    check "jq example: lora-train got only the matching short rows" \
        test "$(jq -c . "$tmp/ex-out/data-seen.jsonl" 2>/dev/null | wc -l)" = 2 \
        -a -z "$(grep -e Money -e long "$tmp/ex-out/data-seen.jsonl")"
    check "jq example: reports the count of kept rows" contains "$tmp/ex.err" '2 of 4 rows'
    rc=0
    MODEL="$model" BIN="$fake" "$ex" --keyword nowhere "$tmp/filter.jsonl" "$tmp/ex-out2" > /dev/null 2> "$tmp/ex.err" || rc=$?
    check "jq example: no row kept is an error (exit 1)" test "$rc" = 1 -a -n "$(grep '^error: no row' "$tmp/ex.err")"
else
    echo "# jq not installed: jq example run skipped (its missing-jq error is tested)"
fi
rc=0
PATH="$nojq" MODEL="$model" BIN="$fake" "$ex" "$tmp/filter.jsonl" "$tmp/ex-out3" > /dev/null 2> "$tmp/ex.err" || rc=$?
detail="exit $rc: $(cat "$tmp/ex.err")"
check "jq example without jq: exit 1 with a clear error" test "$rc" = 1 -a -n "$(grep '^error: jq not found' "$tmp/ex.err")"
rc=0
"$ex" > /dev/null 2>&1 || rc=$?
check "jq example without arguments: exit 64" test "$rc" = 64

echo
echo "pipelines tests: $passed passed, $failed failed"
[ "$failed" = 0 ]
