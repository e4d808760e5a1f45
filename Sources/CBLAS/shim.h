// CBLAS: the C interface of OpenBLAS (Debian's libopenblas-dev), used only through LoRAKernels/Gemm.swift.
#include <cblas.h>
// LAPACK's divide-and-conquer SVD (OpenBLAS ships LAPACK): lora-merge's svd combinations (LoRAConvert/AdapterCombiner).
void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda, double *s, double *u,
             const int *ldu, double *vt, const int *ldvt, double *work, const int *lwork, int *iwork, int *info,
             unsigned long jobz_len);
