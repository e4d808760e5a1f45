// CBLAS: the C interface of OpenBLAS (Debian's libopenblas-dev), used only through LoRAKernels/Gemm.swift.
#include <cblas.h>
