// CBLAS: the C interface of OpenBLAS (Debian's libopenblas-dev), used only through Numerics/Gemm.swift.
#include <cblas.h>
