// CBF16: see include/cbf16.h. One oneDNN primitive per GEMM shape, cached (the shapes of one run are few:
// each Linear's forward and backward at the batch's row count, the head chunk, attention is not here).
#include "cbf16.h"

#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <math.h>
#include <cpuid.h>
#include <immintrin.h>

extern void omp_set_num_threads(int);
extern int omp_get_thread_num(void);
extern int omp_get_num_threads(void);
// libgomp's entry point for `#pragma omp parallel` (this target is not compiled with -fopenmp).
extern void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags);

// MARK: CPU features

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static int os_saves_zmm(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0;  // OSXSAVE
    return (xgetbv0() & 0xE6) == 0xE6;  // XMM, YMM, opmask, ZMM_Hi256, Hi16_ZMM state
}

int lp_cpu_has_avx512_bf16(void) {
    unsigned a, b, c, d;
    if (!os_saves_zmm()) return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & (1u << 16))) return 0;  // AVX512F
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
    return (a >> 5) & 1;  // AVX512_BF16
}

int lp_cpu_has_amx_bf16(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    return (d >> 22) & 1;  // AMX-BF16
}

// MARK: conversion

static inline uint16_t bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40);  // quiet NaN
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

__attribute__((target("avx512f,avx512bf16")))
static void convert_avx512(const float *src, uint16_t *dst, size_t n) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 lo = _mm512_loadu_ps(src + i), hi = _mm512_loadu_ps(src + i + 16);
        __m512bh v = _mm512_cvtne2ps_pbh(hi, lo);
        _mm512_storeu_si512((void *)(dst + i), (__m512i)v);
    }
    for (; i < n; i++) dst[i] = bf16_round(src[i]);
}

static int has_bf16_insn = -1;

void lp_f32_to_bf16(const float *src, uint16_t *dst, size_t n) {
    if (has_bf16_insn < 0) has_bf16_insn = lp_cpu_has_avx512_bf16();
    if (has_bf16_insn) { convert_avx512(src, dst, n); return; }
    for (size_t i = 0; i < n; i++) dst[i] = bf16_round(src[i]);
}

void lp_f32_to_bf16_2d(const float *src, size_t lds, uint16_t *dst, size_t ldd, size_t rows, size_t cols) {
    if (lds == cols && ldd == cols) { lp_f32_to_bf16(src, dst, rows * cols); return; }
    for (size_t r = 0; r < rows; r++) lp_f32_to_bf16(src + r * lds, dst + r * ldd, cols);
}

// In place: row r's cols floats at buf + r·ld (floats) become cols bf16 values at (uint16_t *)buf + r·ld (halves),
// rows in order, each front to back, 32 values loaded before any of them is stored. Row r's halves land on bytes
// of rows ≤ r that are already read (2·r·ld + 2·cols ≤ 4·r·ld for r ≥ 1; within row 0, value j's half at byte
// 2j is behind every value not yet read), so no value is overwritten before it is converted. Loads and stores go
// through memcpy and vector intrinsics (no typed aliasing).
__attribute__((target("avx512f,avx512bf16")))
static void inplace_avx512(unsigned char *src, unsigned char *dst, size_t n) {
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 lo = _mm512_loadu_ps(src + 4 * i), hi = _mm512_loadu_ps(src + 4 * i + 64);
        __m512bh v = _mm512_cvtne2ps_pbh(hi, lo);
        _mm512_storeu_si512((void *)(dst + 2 * i), (__m512i)v);
    }
    for (; i < n; i++) {
        float f;
        memcpy(&f, src + 4 * i, 4);
        uint16_t h = bf16_round(f);
        memcpy(dst + 2 * i, &h, 2);
    }
}

void lp_f32_to_bf16_rows_inplace(float *buf, size_t ld, size_t rows, size_t cols) {
    if (has_bf16_insn < 0) has_bf16_insn = lp_cpu_has_avx512_bf16();
    unsigned char *base = (unsigned char *)buf;
    for (size_t r = 0; r < rows; r++) {
        unsigned char *src = base + 4 * r * ld, *dst = base + 2 * r * ld;
        if (has_bf16_insn) { inplace_avx512(src, dst, cols); continue; }
        for (size_t i = 0; i < cols; i++) {
            float f;
            memcpy(&f, src + 4 * i, 4);
            uint16_t h = bf16_round(f);
            memcpy(dst + 2 * i, &h, 2);
        }
    }
}

// The inverse of lp_f32_to_bf16_rows_inplace (exact widening): rows last to first, each back to front, so each
// float lands on bytes whose halves are already read.
void lp_bf16_to_f32_rows_inplace(float *buf, size_t ld, size_t rows, size_t cols) {
    unsigned char *base = (unsigned char *)buf;
    for (size_t r = rows; r-- > 0;) {
        unsigned char *src = base + 2 * r * ld, *dst = base + 4 * r * ld;
        for (size_t i = cols; i-- > 0;) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            uint32_t u = (uint32_t)h << 16;
            memcpy(dst + 4 * i, &u, 4);
        }
    }
}

// MARK: 4-bit decoding

static int has_avx512f = -1;

static int cpu_has_avx512f(void) {
    unsigned a, b, c, d;
    if (!os_saves_zmm()) return 0;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 16));
}

static inline uint16_t nf4_scalar(const uint8_t *packed, const float *absmax, int64_t bs, const float *code, int64_t j) {
    uint8_t byte = packed[j >> 1];
    return bf16_round(code[(j & 1) ? (byte & 15) : (byte >> 4)] * absmax[j / bs]);
}

// 32 values (16 bytes) at a time: the nibbles widened to 32-bit lanes, looked up in the 16-entry code book by a
// permute, scaled, rounded to bf16 with the integer round-to-nearest-even of bf16_round (no NaN can occur with a
// finite absmax, so its NaN case is not needed), and each byte's pair packed into one 32-bit lane (high nibble
// first in memory, as the scalar order).
__attribute__((target("avx512f")))
static int64_t nf4_avx512(const uint8_t *packed, float s, const float *code, int64_t j, int64_t end, uint16_t *out) {
    const __m512 cb = _mm512_loadu_ps(code), vs = _mm512_set1_ps(s);
    const __m512i m15 = _mm512_set1_epi32(15), one = _mm512_set1_epi32(1), half = _mm512_set1_epi32(0x7FFF);
    for (; j + 32 <= end; j += 32, out += 32) {
        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(packed + (j >> 1))));
        __m512i uh = _mm512_castps_si512(_mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), cb), vs));
        __m512i ul = _mm512_castps_si512(_mm512_mul_ps(_mm512_permutexvar_ps(_mm512_and_si512(v, m15), cb), vs));
        uh = _mm512_srli_epi32(_mm512_add_epi32(uh, _mm512_add_epi32(half, _mm512_and_si512(_mm512_srli_epi32(uh, 16), one))), 16);
        ul = _mm512_srli_epi32(_mm512_add_epi32(ul, _mm512_add_epi32(half, _mm512_and_si512(_mm512_srli_epi32(ul, 16), one))), 16);
        _mm512_storeu_si512((void *)out, _mm512_or_si512(uh, _mm512_slli_epi32(ul, 16)));
    }
    return j;
}

void lp_4bit_to_bf16(const uint8_t *packed, const float *absmax, int64_t blocksize, const float *code,
                     int64_t start, int64_t count, uint16_t *dst) {
    if (has_avx512f < 0) has_avx512f = cpu_has_avx512f();
    int64_t j = start, end = start + count;
    while (j < end) {
        int64_t b = j / blocksize, bend = (b + 1) * blocksize;
        if (bend > end) bend = end;
        if (has_avx512f && !(j & 1) && isfinite(absmax[b])) j = nf4_avx512(packed, absmax[b], code, j, bend, dst + (j - start));
        for (; j < bend; j++) dst[j - start] = nf4_scalar(packed, absmax, blocksize, code, j);
    }
}

// MARK: GEMM

typedef struct {
    int f32, trans_a, trans_b, accumulate;  // f32: fp32 A and B (else bf16); trans_a: A stored k x m
    int refused;                            // f32 only: oneDNN offered its reference kernel, so the caller uses sgemm
    int64_t m, n, k, lda, ldb, ldc;
    float alpha;
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c;
} entry_t;

#define CACHE_MAX 256
static entry_t cache[CACHE_MAX];
static int cache_count = 0, cache_next = 0;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static dnnl_engine_t engine = NULL;
static dnnl_stream_t stream = NULL;
static char last_error[256] = "";
static char last_impl[128] = "";

const char *lp_bf16_last_error(void) { return last_error; }
const char *lp_bf16_last_impl(void) { return last_impl; }

void lp_bf16_set_threads(int n) {
    if (n > 0) omp_set_num_threads(n);
}

typedef struct { void (*fn)(void *, int); void *ctx; int n; } parallel_job;

static void parallel_body(void *p) {
    const parallel_job *j = p;
    int team = omp_get_num_threads();
    // A smaller team than asked for (nested region, thread limit) still covers every chunk.
    for (int c = omp_get_thread_num(); c < j->n; c += team) j->fn(j->ctx, c);
}

void lp_parallel(int n, void (*fn)(void *ctx, int chunk), void *ctx) {
    if (n <= 0) return;
    if (n == 1) { fn(ctx, 0); return; }
    parallel_job j = { fn, ctx, n };
    GOMP_parallel(parallel_body, &j, (unsigned)n, 0);
}

static int fail(const char *what, dnnl_status_t s) {
    snprintf(last_error, sizeof last_error, "oneDNN %s failed (status %d)", what, (int)s);
    return s == 0 ? -1 : (int)s;
}

#define CHECK(call, what) do { dnnl_status_t s_ = (call); if (s_ != dnnl_success) { st = fail(what, s_); goto done; } } while (0)

static void release(entry_t *e) {
    if (e->prim) dnnl_primitive_destroy(e->prim);
    if (e->a) dnnl_memory_destroy(e->a);
    if (e->b) dnnl_memory_destroy(e->b);
    if (e->c) dnnl_memory_destroy(e->c);
    memset(e, 0, sizeof *e);
}

static int create(entry_t *e) {
    int st = 0;
    dnnl_memory_desc_t amd, bmd, cmd;
    dnnl_matmul_desc_t md;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_dims_t ad = {e->m, e->k}, as_n = {e->lda, 1}, as_t = {1, e->lda};
    dnnl_dims_t bd = {e->k, e->n}, bs_n = {e->ldb, 1}, bs_t = {1, e->ldb};
    dnnl_dims_t cd = {e->m, e->n}, cs = {e->ldc, 1};
    dnnl_data_type_t dt = e->f32 ? dnnl_f32 : dnnl_bf16;
    CHECK(dnnl_memory_desc_init_by_strides(&amd, 2, ad, dt, e->trans_a ? as_t : as_n), "memory_desc (A)");
    CHECK(dnnl_memory_desc_init_by_strides(&bmd, 2, bd, dt, e->trans_b ? bs_t : bs_n), "memory_desc (B)");
    CHECK(dnnl_memory_desc_init_by_strides(&cmd, 2, cd, dnnl_f32, cs), "memory_desc (C)");
    CHECK(dnnl_matmul_desc_init(&md, &amd, &bmd, NULL, &cmd), "matmul_desc_init");
    CHECK(dnnl_primitive_attr_create(&attr), "primitive_attr_create");
    if (e->alpha != 1.0f) CHECK(dnnl_primitive_attr_set_output_scales(attr, 1, 0, &e->alpha), "set_output_scales");
    if (e->accumulate) {
        CHECK(dnnl_post_ops_create(&po), "post_ops_create");
        CHECK(dnnl_post_ops_append_sum(po, 1.0f), "post_ops_append_sum");
        CHECK(dnnl_primitive_attr_set_post_ops(attr, po), "set_post_ops");
    }
    CHECK(dnnl_primitive_desc_create(&pd, &md, attr, engine, NULL), "primitive_desc_create");
    {
        const char *impl = NULL;
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
        // fp32 products have a good sgemm beside them: oneDNN's reference kernel is not worth a primitive
        if (e->f32 && impl && strncmp(impl, "ref", 3) == 0) { e->refused = 1; goto done; }
        if (impl) snprintf(last_impl, sizeof last_impl, "%s", impl);  // of primitives created only
    }
    CHECK(dnnl_primitive_create(&e->prim, pd), "primitive_create");
    CHECK(dnnl_memory_create(&e->a, &amd, engine, DNNL_MEMORY_NONE), "memory_create (A)");
    CHECK(dnnl_memory_create(&e->b, &bmd, engine, DNNL_MEMORY_NONE), "memory_create (B)");
    CHECK(dnnl_memory_create(&e->c, &cmd, engine, DNNL_MEMORY_NONE), "memory_create (C)");
done:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (st) release(e);
    return st;
}

static int matmul(int f32, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const void *a, int64_t lda, const void *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    if (m <= 0 || n <= 0) return 0;
    if (beta != 0.0f && beta != 1.0f) { snprintf(last_error, sizeof last_error, "beta must be 0 or 1"); return -1; }
    int acc = beta == 1.0f;
    if (k <= 0) {  // an empty sum: C = beta * C
        if (!acc) for (int64_t i = 0; i < m; i++) memset(c + i * ldc, 0, (size_t)n * sizeof(float));
        return 0;
    }
    int st = 0;
    pthread_mutex_lock(&lock);
    if (!engine) {
        CHECK(dnnl_engine_create(&engine, dnnl_cpu, 0), "engine_create");
        CHECK(dnnl_stream_create(&stream, engine, dnnl_stream_default_flags), "stream_create");
    }
    entry_t *e = NULL;
    for (int i = 0; i < cache_count; i++) {
        entry_t *x = &cache[i];
        if (x->f32 == f32 && x->trans_a == trans_a && x->trans_b == trans_b && x->accumulate == acc && x->m == m
            && x->n == n && x->k == k && x->lda == lda && x->ldb == ldb && x->ldc == ldc && x->alpha == alpha) { e = x; break; }
    }
    if (!e) {
        int appended = cache_count < CACHE_MAX;
        if (appended) e = &cache[cache_count++];
        else { e = &cache[cache_next]; cache_next = (cache_next + 1) % CACHE_MAX; release(e); }
        e->f32 = f32; e->trans_a = trans_a; e->trans_b = trans_b; e->accumulate = acc; e->m = m; e->n = n; e->k = k;
        e->lda = lda; e->ldb = ldb; e->ldc = ldc; e->alpha = alpha;
        if ((st = create(e)) != 0) {  // create() left the slot zeroed; an appended one is given back
            if (appended) cache_count--;
            goto done;
        }
    }
    if (e->refused) { st = LP_REFUSED; goto done; }  // remembered, so the next call of the shape costs a lookup
    CHECK(dnnl_memory_set_data_handle(e->a, (void *)a), "set_data_handle (A)");
    CHECK(dnnl_memory_set_data_handle(e->b, (void *)b), "set_data_handle (B)");
    CHECK(dnnl_memory_set_data_handle(e->c, c), "set_data_handle (C)");
    {
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->b}, {DNNL_ARG_DST, e->c}};
        CHECK(dnnl_primitive_execute(e->prim, stream, 3, args), "primitive_execute");
        CHECK(dnnl_stream_wait(stream), "stream_wait");
    }
done:
    pthread_mutex_unlock(&lock);
    return st;
}

int lp_bf16_gemm(int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                 const uint16_t *a, int64_t lda, const uint16_t *b, int64_t ldb,
                 float beta, float *c, int64_t ldc) {
    return matmul(0, 0, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

int lp_f32_gemm(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    return matmul(1, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
