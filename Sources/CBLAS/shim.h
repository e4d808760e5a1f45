// CBLAS: the C interface of OpenBLAS (Debian's libopenblas-dev), used only through LoRAKernels/Gemm.swift.
#include <cblas.h>
// LAPACK's divide-and-conquer SVD (OpenBLAS ships LAPACK): lora-merge's svd combinations and lora-init's PiSSA
// (LoRAKernels/Linalg.swift).
void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda, double *s, double *u,
             const int *ldu, double *vt, const int *ldvt, double *work, const int *lwork, int *iwork, int *info,
             unsigned long jobz_len);
// Householder QR (lora-init's OLoRA and the range finder of PiSSA's randomized SVD: LoRAKernels/Linalg.swift).
void dgeqrf_(const int *m, const int *n, double *a, const int *lda, double *tau, double *work, const int *lwork, int *info);
void dorgqr_(const int *m, const int *n, const int *k, double *a, const int *lda, const double *tau, double *work,
             const int *lwork, int *info);
