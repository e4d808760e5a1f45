#!/usr/bin/env bash
# jq-filter-train.sh: filter a JSONL training set with jq and stream the rows straight into lora-train.
#
#   pipelines/examples/jq-filter-train.sh [--keyword WORD] [--max-chars N] DATA.jsonl OUT_DIR [-- TRAIN_FLAGS...]
#
#   jq -c 'select(answer mentions WORD and row is short)' DATA.jsonl | lora-train MODEL ADAPTER --data - -o OUT_DIR
#
# Keeps the rows whose answer (the last assistant turn of a messages row; completion, output or text for the
# other row kinds) contains WORD, ignoring case, and whose strings add up to at most N characters (0: no
# limit). The data comes in on stdin, so the adapter cannot: ADAPTER must be a folder or a file. Unless
# ADAPTER is set, lora-init makes one first in OUT_DIR.init (summary on stderr). Flags after `--` go to
# lora-train as they are (e.g. -- --epochs 2 --lr 1e-3). stdout: lora-train's JSON lines.
#
# Environment: MODEL (default: models/smollm2-135m-instruct of this repository), BIN (default: its
# .build/release), ADAPTER, RANK (16), TARGETS (all-linear).
# Exit codes: 0 trained; 1 failure (jq missing, no row kept, a tool failed); 64 bad usage;
# 130/143 lora-train stopped by SIGINT/SIGTERM after writing a checkpoint (rerun with -- --resume).
#
# Example, on the demo data: only the answers about the capital, rows under 600 characters:
#   pipelines/examples/jq-filter-train.sh --keyword Lumeport --max-chars 600 data/demo/train.jsonl /tmp/capital \
#       -- --epochs 2 --seq-len 256
set -euo pipefail

repo_root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)
usage() { sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; }
bad() { echo "error: $*; see --help" >&2; exit 64; }

keyword=""
max_chars=0
while [ "$#" -gt 0 ]; do
    case "$1" in
    -h | --help) usage; exit 0 ;;
    --keyword) [ "$#" -ge 2 ] || bad "--keyword needs a word"; keyword=$2; shift 2 ;;
    --max-chars) [ "$#" -ge 2 ] || bad "--max-chars needs a number"; max_chars=$2; shift 2 ;;
    --) break ;;
    -*) bad "unknown flag $1, on the command line" ;;
    *) break ;;
    esac
done
[ "$#" -ge 2 ] || bad "DATA.jsonl and OUT_DIR are required, on the command line"
data=$1
out=${2%/}
shift 2
if [ "$#" -gt 0 ]; then
    [ "$1" = "--" ] || bad "unexpected argument $1 (lora-train flags go after --)"
    shift
fi
case "$max_chars" in '' | *[!0-9]*) bad "--max-chars $max_chars is not a whole number" ;; esac

if ! command -v jq >/dev/null 2>&1; then
    echo "error: jq not found, in PATH; install it (apt-get install jq) to run this example" >&2
    exit 1
fi
[ -r "$data" ] || { echo "error: $data not readable, the training data; give a JSONL file" >&2; exit 1; }

model=${MODEL:-$repo_root/models/smollm2-135m-instruct}
bin=${BIN:-$repo_root/.build/release}

# the jq program: one row in, the row out when it passes ($kw and $max are jq variables)
# shellcheck disable=SC2016
filter='
def answer:
  if has("messages") then ([.messages[]? | select(.role == "assistant") | .content] | last // "")
  elif has("completion") then .completion
  elif has("output") then .output
  elif has("text") then .text
  else "" end;
def size: [.. | strings | length] | add // 0;
select(($kw == "" or (answer | tostring | ascii_downcase | contains($kw | ascii_downcase)))
       and ($max == 0 or size <= $max))'
select_rows() { jq -c --arg kw "$keyword" --argjson max "$max_chars" "$filter" "$data"; }

total=$(grep -c . "$data" || true)
kept=$(select_rows | wc -l)
echo "jq-filter-train: $kept of $total rows of $data kept (keyword '${keyword}', max ${max_chars} chars)" >&2
[ "$kept" -gt 0 ] || { echo "error: no row of $data passes the filter; loosen --keyword or --max-chars" >&2; exit 1; }

adapter=${ADAPTER:-}
if [ -z "$adapter" ]; then
    adapter="$out.init"
    echo "jq-filter-train: lora-init $model -> $adapter" >&2
    "$bin/lora-init" "$model" -o "$adapter" --rank "${RANK:-16}" --targets "${TARGETS:-all-linear}" --force >&2
fi

# the pipeline itself: filtered rows on lora-train's stdin
rc=0
select_rows | "$bin/lora-train" "$model" "$adapter" --data - -o "$out" "$@" || rc=$?
case "$rc" in
0) echo "jq-filter-train: adapter in $out" >&2 ;;
130 | 143) echo "jq-filter-train: lora-train stopped (exit $rc) with a checkpoint in $out; rerun with -- --resume" >&2 ;;
*) echo "error: the pipeline failed (exit $rc), training into $out; see the messages above" >&2 ;;
esac
exit "$rc"
