#!/usr/bin/env bash
# Builds and runs bench/gemm_probe.c (OpenBLAS sgemm vs oneDNN bf16 on the demo model's GEMM shapes) and
# writes its JSON to bench/results/gemm_probe.json (or $GEMM_PROBE_OUT). Usage:
#   bench/gemm_probe.sh [THREADS] [SECONDS_PER_SHAPE] [M:N:K:T ...]   (shapes: see bench/gemm_probe.c)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -e /usr/include/oneapi/dnnl/dnnl.h ] || { echo "error: oneDNN headers missing; apt-get install libdnnl-dev" >&2; exit 1; }
bin=$(mktemp -d)/gemm_probe
trap 'rm -rf "$(dirname "$bin")"' EXIT
cc -O2 -o "$bin" bench/gemm_probe.c Sources/CBF16/cbf16.c -I Sources/CBF16/include -lopenblas -ldnnl -lgomp -lpthread
mkdir -p bench/results
out=${GEMM_PROBE_OUT:-bench/results/gemm_probe.json}
part=$(mktemp "$out.XXXXXX")  # beside the output, renamed into place once complete
trap 'rm -rf "$(dirname "$bin")" "$part"' EXIT
"$bin" "${1:-2}" "${2:-0.6}" "${@:3}" > "$part"
mv "$part" "$out"
cat "$out"
