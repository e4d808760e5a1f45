// The library re-exports its kernel layer (LoRAKernels: GEMM, elementwise kernels, threads, compute backend), so
// a tool or test that imports LoRAShared sees both. LoRAKernels is the only module built with -Ounchecked; every
// parser and format reader here keeps its bounds and overflow checks in release builds.
@_exported import LoRAKernels
