#!/usr/bin/env bash
# cron-train.sh [CONFIG_FILE]: one unattended training round, safe to run from cron.
#
# Trains a LoRA adapter on DATA (lora-init + lora-train into WORK/run), evaluates it on VALID (lora-eval), and
# promotes it only when its eval loss beats the deployed adapter's: the adapter is copied to
# DEPLOY/releases/NAME and DEPLOY/current is switched to it by an atomic symlink swap
# (ln -s releases/NAME DEPLOY/.current.tmp && mv -T DEPLOY/.current.tmp DEPLOY/current); DEPLOY/previous
# then points to the release it replaced, which is kept. Nothing half-done is ever deployed.
#   - No overlapping runs: `flock -n` on LOCK; a run that finds it held logs "another run holds LOCK" and
#     exits 75.
#   - Resumable: a run stopped by a signal leaves lora-train's checkpoint in WORK/run; the next run continues it
#     with --resume when its inputs (data, model, hyperparameters) are unchanged, else starts over. A run that
#     finished training but not the evaluation goes straight to the evaluation.
#   - Nothing to do: when the inputs equal those of the last finished round, it exits 0 at once (FORCE=1 trains).
#   - SANITY=1: before a new run trains, `lora-train --sanity-check` (one batch, ~100 steps at most) must pass; when
#     it fails (the prompt trained, no EOS, nothing trained, a learning rate that cannot move the loss, ...) the
#     round trains nothing and exits 4, its report in WORK/sanity.json and its causes in the error line.
#   - Logs: LOG_DIR/train-YYYYmmdd-HHMMSS.log, every line prefixed with a timestamp (also shown on a terminal),
#     and beside it the round's loss curve, LOG_DIR/train-YYYYmmdd-HHMMSS.loss.svg (a copy of lora-train's
#     WORK/run/loss.svg; a promoted release holds it too); both are removed after KEEP_LOGS_DAYS;
#     stdout gets one JSON summary line, stderr the error line of a failure (so cron mails only failures when
#     stdout goes to /dev/null).
#
# Crontab (every night at 02:30; the wrapper sets PATH, locks and logs itself):
#   30 2 * * * /opt/lora-pipeline/pipelines/cron-train.sh /etc/lora-pipeline/cron-train.conf >/dev/null
#
# Exit codes:
#   0    done: the new adapter was promoted, or kept out because it was not better, or nothing had changed
#   1    failed (init, training, evaluation or promotion; the log says which); the deployed adapter is untouched
#   3    training stopped at TRAIN_TIMEOUT; the checkpoint is kept and the next run resumes
#   4    SANITY=1 and the sanity check failed: nothing was trained; fix the data or flags it names
#   64   bad usage or configuration (a required variable unset, a file missing, a value not a number)
#   75   another run holds the lock (EX_TEMPFAIL); nothing was done
#   130  stopped by SIGINT, 143 stopped by SIGTERM: training writes a checkpoint first; the next run resumes
#
# Configuration: environment variables, or KEY=value lines in CONFIG_FILE (a bash file, sourced; the
# environment wins over it). CONFIG_FILE may also be given as CRON_TRAIN_CONFIG. Relative paths are taken
# from the current directory (cron's is $HOME): prefer absolute ones.
#   MODEL          required; base model folder (full precision, or 4-bit from lora-quantize for QLoRA)
#   DATA           required; training data (JSONL)
#   VALID          required; validation data (JSONL) on which the new and the deployed adapter are compared
#   WORK           required; work folder (run/, adapter-init/, state files)
#   DEPLOY         deployment folder (current, previous, releases/); default WORK/deploy
#   BIN            folder of the lora-* tools; default: .build/release of this repository
#   LOG_DIR        default WORK/logs;  LOCK: default WORK/cron-train.lock
#   CONFIG         a run config (YAML or JSON, pipelines/run.example.yaml) passed as --config to lora-init,
#                  lora-train and lora-eval: the hyperparameters. Unset: the tools' own defaults.
#   RANK, ALPHA, DROPOUT, TARGETS (lora-init), LR, EPOCHS, MAX_STEPS, SEQ_LEN, BATCH, GRAD_ACCUM, SEED,
#   SAVE_EVERY (lora-train), THREADS, EVAL_SEQ_LEN (lora-eval): each, when set, is passed as the tool's flag,
#                  which wins over CONFIG; unset, CONFIG's value or the tool's default applies (one set of
#                  defaults, the tools'; see pipelines/run.example.yaml)
#   ADAPTER_INIT   start from this adapter instead of a new lora-init one
#   TRAIN_ARGS, EVAL_ARGS, INIT_ARGS  extra flags, split on spaces
#   MIN_IMPROVEMENT 0    promote only when new loss < deployed loss - MIN_IMPROVEMENT
#   TRAIN_TIMEOUT        e.g. 5h: stop training then (checkpoint, exit 3) and resume in the next run
#   NICE 10              nice level of the tools;  KEEP_RELEASES 5;  KEEP_LOGS_DAYS 30
#   FORCE                1: train even when the inputs are unchanged since the last round
#   SANITY               1: refuse to train on data and flags that fail lora-train --sanity-check;
#   SANITY_ARGS          extra flags for the check only (e.g. --sanity-steps 50 --sanity-examples 4)
set -euo pipefail
umask 022
PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin${PATH:+:$PATH}"
export PATH

readonly EX_OK=0 EX_FAIL=1 EX_TIMEOUT=3 EX_SANITY=4 EX_USAGE=64 EX_TEMPFAIL=75
script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
repo_root=$(cd -- "$script_dir/.." && pwd -P)
started=$(date +%Y%m%d-%H%M%S)

logging=0
tty=0
log() { printf 'cron-train: %s\n' "$*" >&2; }
die() {
    local code=$1
    shift
    log "error: $*"
    # with the log open, stderr goes to the log: repeat the error on the original stderr for cron's mail
    if [ "$logging" = 1 ] && [ "$tty" = 0 ]; then printf 'cron-train: error: %s\n' "$*" >&4; fi
    exit "$code"
}

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    sed -n '2,/^set -euo pipefail/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
fi
[ "$#" -le 1 ] || die $EX_USAGE "too many arguments ($#), on the command line; usage: cron-train.sh [CONFIG_FILE]"

# ---- configuration: the environment wins over the config file
CONFIG_VARS=(MODEL DATA VALID WORK DEPLOY BIN LOG_DIR LOCK CONFIG RANK ALPHA DROPOUT TARGETS ADAPTER_INIT LR EPOCHS
    MAX_STEPS SEQ_LEN BATCH GRAD_ACCUM SEED SAVE_EVERY THREADS EVAL_SEQ_LEN TRAIN_ARGS EVAL_ARGS INIT_ARGS
    MIN_IMPROVEMENT TRAIN_TIMEOUT NICE KEEP_RELEASES KEEP_LOGS_DAYS FORCE SANITY SANITY_ARGS)
config=${1:-${CRON_TRAIN_CONFIG:-}}
if [ -n "$config" ]; then
    [ -r "$config" ] || die $EX_USAGE "config file $config not readable; give an existing KEY=value file"
    declare -A from_env=()
    for v in "${CONFIG_VARS[@]}"; do
        if [ -n "${!v+x}" ]; then from_env[$v]=${!v}; fi
    done
    # shellcheck disable=SC1090
    . "$config" || die $EX_USAGE "config file $config failed to load; check its syntax (bash KEY=value lines)"
    for v in "${!from_env[@]}"; do printf -v "$v" '%s' "${from_env[$v]}"; done
fi

for v in MODEL DATA VALID WORK; do
    [ -n "${!v:-}" ] || die $EX_USAGE "$v is not set, in the environment or the config file; set $v=PATH"
done
absolute() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
MODEL=$(absolute "${MODEL%/}")
DATA=$(absolute "$DATA")
VALID=$(absolute "$VALID")
WORK=$(absolute "${WORK%/}")
DEPLOY=$(absolute "${DEPLOY:-$WORK/deploy}")
DEPLOY=${DEPLOY%/}
BIN=$(absolute "${BIN:-$repo_root/.build/release}")
LOG_DIR=$(absolute "${LOG_DIR:-$WORK/logs}")
LOCK=$(absolute "${LOCK:-$WORK/cron-train.lock}")
ADAPTER_INIT=${ADAPTER_INIT:-}
[ -z "$ADAPTER_INIT" ] || ADAPTER_INIT=$(absolute "$ADAPTER_INIT")
CONFIG=${CONFIG:-}
[ -z "$CONFIG" ] || CONFIG=$(absolute "$CONFIG")
# Hyperparameters: no defaults here (the tools', or CONFIG's); a value set becomes the tool's flag.
HYPER_VARS=(RANK ALPHA DROPOUT TARGETS LR EPOCHS MAX_STEPS SEQ_LEN BATCH GRAD_ACCUM SEED SAVE_EVERY THREADS EVAL_SEQ_LEN)
for v in "${HYPER_VARS[@]}"; do printf -v "$v" '%s' "${!v:-}"; done
TRAIN_ARGS=${TRAIN_ARGS:-}
EVAL_ARGS=${EVAL_ARGS:-}
INIT_ARGS=${INIT_ARGS:-}
MIN_IMPROVEMENT=${MIN_IMPROVEMENT:-0}
TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-}
NICE=${NICE:-10}
KEEP_RELEASES=${KEEP_RELEASES:-5}
KEEP_LOGS_DAYS=${KEEP_LOGS_DAYS:-30}
FORCE=${FORCE:-0}
SANITY=${SANITY:-0}
SANITY_ARGS=${SANITY_ARGS:-}

is_uint() { case "$1" in '' | *[!0-9]*) return 1 ;; esac; }
is_number() { [[ $1 =~ ^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$ ]]; }
for v in KEEP_RELEASES KEEP_LOGS_DAYS; do
    is_uint "${!v}" || die $EX_USAGE "$v=${!v} is not a whole number; set $v to one"
done
for v in RANK EPOCHS SEQ_LEN BATCH GRAD_ACCUM SEED SAVE_EVERY EVAL_SEQ_LEN MAX_STEPS THREADS; do
    [ -z "${!v}" ] || is_uint "${!v}" || die $EX_USAGE "$v=${!v} is not a whole number; set $v to one or leave it unset"
done
[[ $NICE =~ ^-?[0-9]+$ ]] || die $EX_USAGE "NICE=$NICE is not a whole number; set NICE to a nice level such as 10"
is_number "$MIN_IMPROVEMENT" || die $EX_USAGE "MIN_IMPROVEMENT=$MIN_IMPROVEMENT is not a number; set it to one"
for v in LR ALPHA DROPOUT; do
    [ -z "${!v}" ] || is_number "${!v}" || die $EX_USAGE "$v=${!v} is not a number; set $v to one or leave it unset"
done
[ -z "$CONFIG" ] || [ -r "$CONFIG" ] || die $EX_USAGE "run config $CONFIG not readable; set CONFIG to a YAML or JSON run config (pipelines/run.example.yaml)"
# flag NAME VALUE...: "--NAME VALUE" when VALUE is set, else nothing (for the tools' argument arrays)
flag() { if [ -n "$2" ]; then printf '%s\0%s\0' "$1" "$2"; fi; }
config_flag=()
[ -z "$CONFIG" ] || config_flag=(--config "$CONFIG")
# lora-train's flags shared by the sanity check and the training run
train_flags=()
mapfile -d '' train_flags < <(flag --seq-len "$SEQ_LEN"; flag --batch-size "$BATCH"; flag --grad-accum "$GRAD_ACCUM"
    flag --lr "$LR"; flag --seed "$SEED"; flag --threads "$THREADS")
[ -f "$MODEL/config.json" ] || die $EX_USAGE "no model at $MODEL (config.json missing); set MODEL to a model folder"
[ -r "$DATA" ] || die $EX_USAGE "training data $DATA not readable; set DATA to a JSONL file"
[ -r "$VALID" ] || die $EX_USAGE "validation data $VALID not readable; set VALID to a JSONL file"
[ -z "$ADAPTER_INIT" ] || [ -e "$ADAPTER_INIT" ] || die $EX_USAGE "ADAPTER_INIT $ADAPTER_INIT not found; set it to an adapter folder or file"
tools=(lora-train lora-eval)
[ -n "$ADAPTER_INIT" ] || tools+=(lora-init)
for t in "${tools[@]}"; do
    [ -x "$BIN/$t" ] || die $EX_USAGE "$BIN/$t not found or not executable; build the tools or set BIN"
done
read -r -a train_extra <<< "$TRAIN_ARGS"
read -r -a eval_extra <<< "$EVAL_ARGS"
read -r -a init_extra <<< "$INIT_ARGS"
read -r -a sanity_extra <<< "$SANITY_ARGS"
case "$SANITY" in 0 | 1) ;; *) die $EX_USAGE "SANITY=$SANITY must be 0 or 1" ;; esac

# ---- the log: every line of this script and of the tools, timestamped
mkdir -p "$WORK" "$LOG_DIR" "$DEPLOY/releases" "$(dirname -- "$LOCK")"
log_file="$LOG_DIR/train-$started.log"
if ! (set -C && : > "$log_file") 2>/dev/null; then
    log_file="$LOG_DIR/train-$started-$$.log"
    : > "$log_file"
fi
exec 3>&1 4>&2
[ -t 4 ] && tty=1
exec > >(
    trap '' INT TERM HUP
    exec 5>> "$log_file"
    while IFS= read -r line || [ -n "$line" ]; do
        printf -v line '%(%Y-%m-%dT%H:%M:%S%z)T %s' -1 "$line"
        printf '%s\n' "$line" >&5
        if [ "$tty" = 1 ]; then printf '%s\n' "$line" >&4; fi
    done
) 2>&1
logger_pid=$!
logging=1
# shellcheck disable=SC2317  # called by the EXIT trap
finish() {
    local rc=$?
    trap - EXIT
    # close our ends of the log pipe and let the logger write its last lines
    exec 1>&3 2>&4
    wait "$logger_pid" 2>/dev/null || true
    exit "$rc"
}
trap finish EXIT
# any other failing command (set -e) is named in the log and on the original stderr before the exit
# shellcheck disable=SC2317  # called by the ERR trap
on_error() {
    log "error: unexpected failure (exit $1) at line $2: $3"
    if [ "$tty" = 0 ]; then printf 'cron-train: error: unexpected failure (exit %s) at line %s: %s\n' "$1" "$2" "$3" >&4; fi
}
trap 'on_error $? $LINENO "$BASH_COMMAND"' ERR

summary() { # summary RESULT [KEY VALUE]...: the JSON line on stdout, also kept as WORK/last-run.json
    local line="{\"result\": \"$1\"" k v
    shift
    while [ "$#" -ge 2 ]; do
        k=$1 v=$2
        shift 2
        if is_number "$v" || [ "$v" = null ]; then line+=", \"$k\": $v"; else line+=", \"$k\": \"${v//\"/\\\"}\""; fi
    done
    line+=", \"log\": \"$log_file\"}"
    printf '%s\n' "$line" > "$WORK/last-run.json.tmp" && mv -f "$WORK/last-run.json.tmp" "$WORK/last-run.json"
    printf '%s\n' "$line" >&3
    log "summary: $line"
}

# ---- the lock (held until this script and its tools are gone; the fd is inherited on purpose)
exec 9<> "$LOCK"
if ! flock -n 9; then
    holder=$(head -c 64 "$LOCK" 2>/dev/null | tr -dc '0-9' || true)
    log "another run holds $LOCK${holder:+ (pid $holder)}; exiting"
    printf '{"result": "locked", "lock": "%s", "log": "%s"}\n' "$LOCK" "$log_file" >&3
    exit $EX_TEMPFAIL
fi
printf '%s\n' "$$" > "$LOCK"
log "started (pid $$); log $log_file"
log "model $MODEL, data $DATA, valid $VALID, work $WORK, deploy $DEPLOY"
find "$LOG_DIR" -maxdepth 1 \( -name 'train-*.log' -o -name 'train-*.loss.svg' \) -mtime +"$KEEP_LOGS_DAYS" -delete 2>/dev/null || true

# ---- signals: forward to the tool running (lora-train checkpoints, then exits 130/143), then exit 130/143
child=""
child_name=""
got_signal=""
signal_pending=""
critical=0
signal_exit() {
    summary stopped signal "$got_signal" || true
    if [ "$got_signal" = INT ]; then exit 130; else exit 143; fi
}
# shellcheck disable=SC2317  # called by the INT/TERM traps
on_signal() {
    got_signal=$1
    signal_pending=1
    if [ -n "$child" ]; then
        log "got SIG$1; asking $child_name (pid $child) to stop"
        kill -TERM "$child" 2>/dev/null || true
    elif [ "$critical" = 1 ]; then
        log "got SIG$1; stopping once the promotion is complete"
    else
        log "got SIG$1; stopping"
        signal_exit
    fi
}
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM

# run_tool NAME CMD...: run CMD in its own session (a terminal's Ctrl-C reaches only this script, which passes
# one SIGTERM on: a second signal would make lora-train abort without its checkpoint) and return its status.
run_tool() {
    child_name=$1
    shift
    setsid -w nice -n "$NICE" "$@" 3>&- 4>&- &
    child=$!
    local rc prev=""
    while :; do
        signal_pending=""
        rc=0
        wait "$child" || rc=$?
        if [ -n "$signal_pending" ]; then
            prev=$rc
            continue # wait was interrupted by a signal: wait again for the tool's own status
        fi
        if [ "$rc" = 127 ] && [ -n "$prev" ]; then rc=$prev; fi
        break
    done
    child=""
    return "$rc"
}

# loss_of FILE: the "loss" number of a lora-eval JSON, or nothing
loss_of() {
    local v
    v=$(sed -n 's/.*"loss"[[:space:]]*:[[:space:]]*\([-+0-9.eE]*\).*/\1/p' "$1" 2>/dev/null | head -n 1)
    if is_number "$v"; then printf '%s' "$v"; fi
}

sha_of() { sha256sum "$@" | cut -c1-64; }

# ---- the inputs of this round: a change of any of them means a new training run
model_files=$(find "$MODEL" -maxdepth 1 -type f \( -name '*.safetensors' -o -name '*.json' \) -printf '%f %s %T@\n' | sort)
train_params="rank=$RANK alpha=$ALPHA dropout=$DROPOUT targets=$TARGETS adapter_init=$ADAPTER_INIT lr=$LR"
train_params+=" epochs=$EPOCHS max_steps=$MAX_STEPS seq_len=$SEQ_LEN batch=$BATCH grad_accum=$GRAD_ACCUM"
train_params+=" seed=$SEED save_every=$SAVE_EVERY train_args=$TRAIN_ARGS init_args=$INIT_ARGS config=$CONFIG"
config_sig=""
[ -z "$CONFIG" ] || config_sig=$(sha_of "$CONFIG")
init_sig=""
if [ -n "$ADAPTER_INIT" ]; then
    init_sig=$(find "$ADAPTER_INIT" -type f -print0 | sort -z | xargs -0 cat | sha_of)
fi
inputs_sig=$(
    printf 'model=%s\n%s\ndata=%s\n%s\n%s\n%s\n' "$MODEL" "$model_files" "$DATA" "$train_params" "$init_sig" "$config_sig"
    sha_of "$DATA" "$MODEL/config.json"
)
inputs_sig=$(printf '%s\n' "$inputs_sig" | sha_of)
eval_sig=$( (printf 'model=%s\n%s\nseq_len=%s args=%s config=%s\n' "$MODEL" "$model_files" "$EVAL_SEQ_LEN" "$EVAL_ARGS" "$config_sig"
    sha_of "$VALID") | sha_of)

run="$WORK/run"
run_sig_file="$WORK/run.sig"
decided_file="$WORK/run.decided"
last_sig_file="$WORK/last.sig"
new_eval="$WORK/run.eval.json"


if [ "$FORCE" != 1 ] && [ "$(cat "$last_sig_file" 2>/dev/null)" = "$inputs_sig" ]; then
    log "inputs unchanged since the last finished round ($(cat "$decided_file" 2>/dev/null || echo ?)); nothing to do (FORCE=1 trains anyway)"
    summary unchanged
    exit $EX_OK
fi

has_checkpoint() { compgen -G "$run/checkpoints/step-*" > /dev/null; }
same_run=0
[ "$(cat "$run_sig_file" 2>/dev/null)" = "$inputs_sig" ] && same_run=1

# ---- train (or resume, or skip when the same run already finished training)
if [ "$same_run" = 1 ] && [ -f "$run/adapter_model.safetensors" ] && [ ! -e "$decided_file" ] && [ "$FORCE" != 1 ]; then
    log "training of this run already finished; going on to the evaluation"
else
    mode=()
    if [ "$same_run" = 1 ] && [ ! -f "$run/adapter_model.safetensors" ] && has_checkpoint; then
        mode=(--resume)
        log "resuming the stopped run from its latest checkpoint ($(basename "$(compgen -G "$run/checkpoints/step-*" | sort | tail -n 1)"))"
    else
        if has_checkpoint; then log "the checkpoints in $run are from other inputs; starting over"; fi
        rm -rf "$run" "$decided_file" "$new_eval"
        printf '%s\n' "$inputs_sig" > "$run_sig_file"
    fi
    if [ -n "$ADAPTER_INIT" ]; then
        start_adapter=$ADAPTER_INIT
    else
        start_adapter="$WORK/adapter-init"
        if [ "${#mode[@]}" = 0 ] || [ ! -f "$start_adapter/adapter_model.safetensors" ]; then
            init=("$BIN/lora-init" "$MODEL" -o "$start_adapter" --force)
            mapfile -d '' -O "${#init[@]}" init < <(flag --rank "$RANK"; flag --alpha "$ALPHA"; flag --dropout "$DROPOUT"
                flag --targets "$TARGETS"; flag --seed "$SEED"; flag --threads "$THREADS")
            init+=("${config_flag[@]}" "${init_extra[@]}")
            log "lora-init: ${init[*]}"
            rc=0
            run_tool lora-init "${init[@]}" || rc=$?
            [ -z "$got_signal" ] || signal_exit
            [ "$rc" = 0 ] || die $EX_FAIL "lora-init failed (exit $rc), creating $start_adapter; see $log_file"
        fi
    fi
    if [ "$SANITY" = 1 ] && [ "${#mode[@]}" = 0 ]; then
        check=("$BIN/lora-train" "$MODEL" "$start_adapter" --data "$DATA" --sanity-check "${train_flags[@]}")
        check+=("${config_flag[@]}" "${train_extra[@]}" "${sanity_extra[@]}")
        log "sanity check: ${check[*]}"
        rc=0
        run_tool lora-train "${check[@]}" > "$WORK/sanity.json.tmp" || rc=$?
        [ -z "$got_signal" ] || { rm -f "$WORK/sanity.json.tmp"; signal_exit; }
        mv -f "$WORK/sanity.json.tmp" "$WORK/sanity.json"
        verdict=$(tail -n 1 "$WORK/sanity.json")
        log "sanity check result: ${verdict:0:2000}"
        case "$rc" in
        0) ;;
        1)
            causes=$(printf '%s\n' "$verdict" | grep -o '"cause": *"[a-z-]*"' | sed 's/.*"\([a-z-]*\)"$/\1/' | sort -u | paste -sd, -)
            if [ -n "$causes" ]; then
                summary refused causes "$causes" report "$WORK/sanity.json"
                die $EX_SANITY "the sanity check failed ($causes); nothing was trained; see $WORK/sanity.json and $log_file"
            fi
            die $EX_FAIL "the sanity check could not run (exit 1); see $log_file"
            ;;
        *) die $EX_FAIL "the sanity check could not run (exit $rc); see $log_file" ;;
        esac
    fi
    train=("$BIN/lora-train" "$MODEL" "$start_adapter" --data "$DATA" -o "$run" "${train_flags[@]}")
    mapfile -d '' -O "${#train[@]}" train < <(flag --save-every "$SAVE_EVERY"; flag --max-steps "$MAX_STEPS"; flag --epochs "$EPOCHS")
    train+=("${config_flag[@]}" "${train_extra[@]}" "${mode[@]}")
    [ -z "$TRAIN_TIMEOUT" ] || train=(timeout --signal=TERM "$TRAIN_TIMEOUT" "${train[@]}")
    log "lora-train: ${train[*]}"
    rc=0
    run_tool lora-train "${train[@]}" || rc=$?
    # this round's loss curve (the points from before a resume included), kept beside its log
    if [ -f "$run/loss.svg" ]; then
        cp -f "$run/loss.svg" "${log_file%.log}.loss.svg" 2>/dev/null || log "warning: could not copy $run/loss.svg into $LOG_DIR"
    fi
    if [ -n "$got_signal" ]; then
        if has_checkpoint; then log "training stopped by SIG$got_signal with a checkpoint in $run; the next run resumes"; fi
        signal_exit
    fi
    case "$rc" in
    0) ;;
    124)
        if [ -n "$TRAIN_TIMEOUT" ]; then
            log "training reached TRAIN_TIMEOUT=$TRAIN_TIMEOUT; checkpoint kept in $run, the next run resumes"
            summary paused timeout "$TRAIN_TIMEOUT"
            exit $EX_TIMEOUT
        fi
        die $EX_FAIL "lora-train failed (exit 124), training into $run; see $log_file"
        ;;
    130 | 143)
        log "lora-train was stopped by a signal (exit $rc); its checkpoint is in $run and the next run resumes"
        summary stopped exit "$rc"
        exit "$rc"
        ;;
    *) die $EX_FAIL "lora-train failed (exit $rc), training into $run; see $log_file; the deployed adapter is untouched" ;;
    esac
    [ -f "$run/adapter_model.safetensors" ] || die $EX_FAIL "lora-train exited 0 but $run/adapter_model.safetensors is missing"
fi

# ---- evaluate: eval_adapter ADAPTER OUT_JSON
eval_adapter() {
    # evaluated at EVAL_SEQ_LEN, else the training SEQ_LEN, else CONFIG's or lora-eval's own
    local cmd=("$BIN/lora-eval" "$MODEL" --adapter "$1" --data "$VALID")
    mapfile -d '' -O "${#cmd[@]}" cmd < <(flag --seq-len "${EVAL_SEQ_LEN:-$SEQ_LEN}"; flag --seed "$SEED"; flag --threads "$THREADS")
    cmd+=("${config_flag[@]}" "${eval_extra[@]}")
    log "lora-eval: ${cmd[*]}"
    local rc=0
    run_tool lora-eval "${cmd[@]}" > "$2.tmp" || rc=$?
    [ -z "$got_signal" ] || { rm -f "$2.tmp"; signal_exit; }
    if [ "$rc" != 0 ]; then
        rm -f "$2.tmp"
        return "$rc"
    fi
    log "lora-eval result: $(head -c 2000 "$2.tmp")"
    mv -f "$2.tmp" "$2"
}

rc=0
eval_adapter "$run" "$new_eval" || rc=$?
[ "$rc" = 0 ] || die $EX_FAIL "lora-eval of the new adapter failed (exit $rc); see $log_file; the deployed adapter is untouched"
new_loss=$(loss_of "$new_eval")
[ -n "$new_loss" ] || die $EX_FAIL "the evaluation of the new adapter ($new_eval) has no finite loss; not promoting"
log "new adapter: eval loss $new_loss on $VALID"

current="$DEPLOY/current"
old_loss=""
old_target=""
if [ -L "$current" ]; then
    old_target=$(readlink "$current")
    if [ ! -e "$current/adapter_model.safetensors" ]; then
        log "warning: $current -> $old_target holds no adapter; treating it as nothing deployed"
        old_target=""
    else
        if [ "$(cat "$current/eval.sig" 2>/dev/null)" = "$eval_sig" ]; then
            old_loss=$(loss_of "$current/eval.json")
        fi
        if [ -z "$old_loss" ]; then
            log "the deployed adapter's eval.json is missing or from other validation data or model; evaluating it again"
            rc=0
            eval_adapter "$current" "$WORK/deployed.eval.json" || rc=$?
            [ "$rc" = 0 ] || die $EX_FAIL "lora-eval of the deployed adapter $current failed (exit $rc); not promoting; see $log_file"
            old_loss=$(loss_of "$WORK/deployed.eval.json")
            [ -n "$old_loss" ] || die $EX_FAIL "the evaluation of the deployed adapter has no finite loss; not promoting"
            cp "$WORK/deployed.eval.json" "$current/.eval.json.tmp" && mv -f "$current/.eval.json.tmp" "$current/eval.json"
            printf '%s\n' "$eval_sig" > "$current/.eval.sig.tmp" && mv -f "$current/.eval.sig.tmp" "$current/eval.sig"
        fi
        log "deployed adapter ($old_target): eval loss $old_loss"
    fi
elif [ -e "$current" ]; then
    die $EX_FAIL "$current exists and is not a symlink; it is not replaced: move it away (or make it a link to a release)"
fi
if [ -e "$DEPLOY/previous" ] && [ ! -L "$DEPLOY/previous" ]; then
    die $EX_FAIL "$DEPLOY/previous exists and is not a symlink; it is not replaced: move it away"
fi

# ---- decide, promote
if [ -n "$old_loss" ] && ! awk -v n="$new_loss" -v o="$old_loss" -v m="$MIN_IMPROVEMENT" 'BEGIN { exit !(n + 0 < o - m) }'; then
    log "not promoting: new loss $new_loss is not below the deployed $old_loss (MIN_IMPROVEMENT=$MIN_IMPROVEMENT)"
    printf 'kept %s\n' "$started" > "$decided_file"
    printf '%s\n' "$inputs_sig" > "$last_sig_file"
    rm -rf "$run/checkpoints"
    summary kept new_loss "$new_loss" deployed_loss "$old_loss" deployed "$old_target"
    exit $EX_OK
fi

critical=1
name=$started
[ ! -e "$DEPLOY/releases/$name" ] || name="$started-$$"
tmp_release="$DEPLOY/releases/.tmp-$name"
rm -rf "$tmp_release"
mkdir "$tmp_release"
find "$run" -maxdepth 1 -type f ! -name '.*' -exec cp -p {} "$tmp_release/" \;
cp "$new_eval" "$tmp_release/eval.json"
printf '%s\n' "$eval_sig" > "$tmp_release/eval.sig"
printf '{"promoted": "%s", "loss": %s, "previous_loss": %s, "previous": "%s", "inputs_sig": "%s"}\n' \
    "$name" "$new_loss" "${old_loss:-null}" "$old_target" "$inputs_sig" > "$tmp_release/promotion.json"
mv -T "$tmp_release" "$DEPLOY/releases/$name"
# previous first, then current: at every instant both links are valid
if [ -n "$old_target" ]; then
    ln -sfn "$old_target" "$DEPLOY/.previous.tmp"
    mv -T "$DEPLOY/.previous.tmp" "$DEPLOY/previous"
fi
ln -sfn "releases/$name" "$DEPLOY/.current.tmp"
mv -T "$DEPLOY/.current.tmp" "$current"
printf 'promoted %s\n' "$name" > "$decided_file"
printf '%s\n' "$inputs_sig" > "$last_sig_file"
if [ -n "$old_loss" ]; then
    log "promoted: $current -> releases/$name (loss $new_loss < $old_loss); previous -> $old_target"
else
    log "promoted: $current -> releases/$name (loss $new_loss; nothing was deployed before)"
fi
critical=0

# ---- housekeeping: old releases (never current or previous), checkpoints of the finished run, old logs
keep_current=$(basename "$(readlink "$current")")
keep_previous=$(basename "$(readlink "$DEPLOY/previous" 2>/dev/null || echo none)")
mapfile -t releases < <(find "$DEPLOY/releases" -mindepth 1 -maxdepth 1 -type d ! -name '.*' -printf '%f\n' | sort -r)
for i in "${!releases[@]}"; do
    r=${releases[$i]}
    if [ "$i" -ge "$KEEP_RELEASES" ] && [ "$r" != "$keep_current" ] && [ "$r" != "$keep_previous" ]; then
        log "removing old release $r (KEEP_RELEASES=$KEEP_RELEASES)"
        rm -rf "${DEPLOY:?}/releases/$r"
    fi
done
rm -rf "$run/checkpoints"
summary promoted new_loss "$new_loss" deployed_loss "${old_loss:-null}" release "$DEPLOY/releases/$name" previous "${old_target:-null}"
[ -z "$got_signal" ] || signal_exit
exit $EX_OK
