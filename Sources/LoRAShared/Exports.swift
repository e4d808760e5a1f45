// The library re-exports its lower layers (LoRAKernels: GEMM, elementwise kernels, threads, compute backend;
// LoRAFormats: file formats, errors, limits; LoRATokenizer: tokenizer.json and chat templates), so a tool or test
// that imports LoRAShared sees them all.
// LoRAKernels is the only module built with -Ounchecked; everything from the format readers up keeps its
// bounds and overflow checks in release builds, and a lower layer cannot import a higher one.
@_exported import LoRAKernels
@_exported import LoRAFormats
@_exported import LoRATokenizer
