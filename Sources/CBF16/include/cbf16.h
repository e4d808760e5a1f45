// CBF16: bf16 matrix products for the frozen-weight GEMMs (bf16 operands, fp32 accumulation and results, as
// torch's bf16 CPU matmul and bitsandbytes' bf16 compute do), through oneDNN's matmul (Debian libdnnl-dev,
// which picks its AVX512-BF16 / AMX kernels at run time), plus fp32 -> bf16 conversion with
// round-to-nearest-even and the CPU feature checks behind `--compute-dtype auto`.
#ifndef CBF16_H
#define CBF16_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// 1 when the CPU executes AVX512-BF16 (vdpbf16ps) and the OS saves its registers, else 0.
int lp_cpu_has_avx512_bf16(void);
/// 1 when the CPU has AMX-BF16 tiles, else 0.
int lp_cpu_has_amx_bf16(void);

/// dst[i] = bf16(src[i]) with round-to-nearest-even (NaN stays NaN), as torch's .to(bfloat16).
void lp_f32_to_bf16(const float *src, uint16_t *dst, size_t n);
/// Row-strided conversion: rows x cols from src (row stride lds) into dst (row stride ldd).
void lp_f32_to_bf16_2d(const float *src, size_t lds, uint16_t *dst, size_t ldd, size_t rows, size_t cols);
/// In place: rows x cols floats (row stride ld floats) become bf16 values with row stride ld halves in the same
/// buffer, on the calling thread.
void lp_f32_to_bf16_rows_inplace(float *buf, size_t ld, size_t rows, size_t cols);
/// Its inverse: the bf16 values (row stride ld halves) widened to floats (row stride ld) in place.
void lp_bf16_to_f32_rows_inplace(float *buf, size_t ld, size_t rows, size_t cols);

/// dst[i] = bf16(code[q(start + i)] * absmax[(start + i) / blocksize]) for i < count, round to nearest even:
/// bitsandbytes' 4-bit dequantization (q: the nibbles of `packed`, high nibble first; code: the 16-entry NF4 or
/// FP4 code book) rounded as torch's .to(bfloat16). AVX-512 where the CPU has it.
void lp_4bit_to_bf16(const uint8_t *packed, const float *absmax, int64_t blocksize, const float *code,
                     int64_t start, int64_t count, uint16_t *dst);

/// Row-major C[m x n] = alpha * A[m x k] * op(B) + beta * C, A and B bf16, C fp32.
/// op(B) is B stored k x n (trans_b = 0, row stride ldb >= n) or n x k (trans_b = 1, ldb >= k).
/// beta must be 0 or 1. Returns 0 on success, or a oneDNN status (the message in lp_bf16_last_error()).
int lp_bf16_gemm(int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                 const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb,
                 float beta, float *c, int64_t ldc);
/// lp_f32_gemm's answer when oneDNN offers only its reference kernel for the shape: compute it another way.
#define LP_REFUSED (-2)
/// Row-major C[m x n] = alpha * op(A) * op(B) + beta * C, all fp32, on oneDNN's threads: op(A) is A stored m x k
/// (trans_a = 0, lda >= k) or k x m (trans_a = 1, lda >= m); op(B) as in lp_bf16_gemm. beta 0 or 1. Returns 0,
/// LP_REFUSED, or a oneDNN status.
int lp_f32_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc);
/// What the last failed call said (static storage).
const char *lp_bf16_last_error(void);
/// Implementation oneDNN chose for the most recently created primitive (e.g. "brg:avx512_core_bf16").
const char *lp_bf16_last_impl(void);
/// Threads oneDNN's OpenMP runtime uses (n <= 0 leaves its default).
void lp_bf16_set_threads(int n);

/// Runs fn(ctx, c) for every chunk c < n on a team of up to n threads of oneDNN's OpenMP runtime (the calling
/// thread is one of them) and returns when all are done. Our own kernels and oneDNN's products then share one
/// set of workers: a worker that just finished a product and is still spinning for the next one takes the next
/// kernel's chunk, instead of competing for the core with a second pool's thread. Inside a parallel region
/// (nested), the chunks run on the calling thread.
void lp_parallel(int n, void (*fn)(void *ctx, int chunk), void *ctx);

#ifdef __cplusplus
}
#endif
#endif
