#!/usr/bin/env bash
# Builds fuzz/lora-fuzz: the libFuzzer harnesses of fuzz/Harness.swift over the library, compiled checked (-O,
# so every precondition and bounds check is live) with coverage and AddressSanitizer (-sanitize=fuzzer,address).
# SwiftPM cannot build a libFuzzer binary beside the tools' own main(), so this compiles the library modules with
# swiftc directly, in their layer order. Output: $FUZZ_BUILD (default .build-fuzz)/lora-fuzz.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${FUZZ_BUILD:-$root/.build-fuzz}
mkdir -p "$out"
cd "$out"
san=("-sanitize=fuzzer,address")
cat > module.modulemap <<MAP
module CBF16 {
    header "$root/Sources/CBF16/include/cbf16.h"
    export *
}
MAP
cc_flags=(-Xcc -fmodule-map-file="$root/Sources/CBLAS/module.modulemap" -Xcc -fmodule-map-file="$root/Sources/CZlib/module.modulemap"
    -Xcc -fmodule-map-file="$out/module.modulemap")
clang -O2 -fPIC -c "$root/Sources/CBF16/cbf16.c" -I "$root/Sources/CBF16/include" -o cbf16.o
# The library modules in their layer order (Package.swift), each an object file and a module the next imports.
objs=()
for m in LoRAKernels LoRAFormats LoRATokenizer LoRAQuant LoRAModel LoRAConvert LoRAEngine LoRATrain LoRAShared; do
    swiftc -module-name "$m" -parse-as-library -wmo -O "${san[@]}" "${cc_flags[@]}" -swift-version 5 -package-name lorapipeline -I . \
        -emit-module -emit-module-path "$m.swiftmodule" -c "$root/Sources/$m"/*.swift -o "$m.o"
    objs+=("$m.o")
done
swiftc -module-name LoRAFuzz -parse-as-library -O "${san[@]}" "${cc_flags[@]}" -swift-version 5 -package-name lorapipeline -I . \
    "$root/fuzz/Harness.swift" "${objs[@]}" cbf16.o -lopenblas -ldnnl -lgomp -lz -o lora-fuzz
echo "$out/lora-fuzz"
