// The library re-exports its lower layers (LoRAKernels: GEMM, elementwise kernels, threads, compute backend;
// LoRAFormats: file formats, errors, limits), so a tool or test that imports LoRAShared sees all three.
// LoRAKernels is the only module built with -Ounchecked; everything from the format readers up keeps its
// bounds and overflow checks in release builds, and a lower layer cannot import a higher one.
@_exported import LoRAKernels
@_exported import LoRAFormats
