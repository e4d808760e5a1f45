// gemm_probe: GFLOP/s of the candidate backends for the frozen-weight GEMMs on the demo model's real shapes
// (batch 4 x seq 256 = 1024 rows; SmolLM2-135M: hidden 576, q|k|v 960, gate|up 3072, intermediate 1536, head
// 49152 x 576 in chunks of 128 rows): OpenBLAS sgemm (fp32, today's path) against oneDNN's bf16 matmul
// (bf16 operands, fp32 accumulation and output) through Sources/CBF16, and the fp32 -> bf16 conversion of
// the activations that the bf16 path adds. Build and run with bench/gemm_probe.sh. Other shapes: pass them after
// the two numbers as M:N:K:T (T 1: x.W^T with W stored n x k, as the forward; T 0: dy.W, as the activation
// gradient), e.g. the Qwen2.5-7B shape's tiles: gemm_probe 2 1 1024:37888:3584:1 1024:3584:18944:1.
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "cbf16.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

typedef struct { const char *name; int m, n, k, trans_b; } shape_t;

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    double budget = argc > 2 ? atof(argv[2]) : 0.6;  // seconds per measurement
    openblas_set_num_threads(threads);
    lp_bf16_set_threads(threads);
    shape_t shapes[] = {
        {"fwd q|k|v   x.W^T", 1024, 960, 576, 1}, {"fwd o       x.W^T", 1024, 576, 576, 1},
        {"fwd gate|up x.W^T", 1024, 3072, 576, 1}, {"fwd down    x.W^T", 1024, 576, 1536, 1},
        {"bwd q|k|v   dy.W", 1024, 576, 960, 0}, {"bwd o       dy.W", 1024, 576, 576, 0},
        {"bwd gate|up dy.W", 1024, 576, 3072, 0}, {"bwd down    dy.W", 1024, 1536, 576, 0},
        {"head fwd    128 rows", 128, 49152, 576, 1}, {"head bwd    128 rows", 128, 576, 49152, 0},
    };
    int ns = sizeof shapes / sizeof shapes[0];
    if (argc > 3) {  // the shapes named on the command line instead of the demo model's
        if (argc - 3 > ns) {
            fprintf(stderr, "error: at most %d shapes per run (got %d); split them over several runs\n", ns, argc - 3);
            return 2;
        }
        ns = 0;
        for (int i = 3; i < argc; i++) {
            shape_t sh = {argv[i], 0, 0, 0, 1};
            if (sscanf(argv[i], "%d:%d:%d:%d", &sh.m, &sh.n, &sh.k, &sh.trans_b) != 4 || sh.m <= 0 || sh.n <= 0 || sh.k <= 0
                || (sh.trans_b != 0 && sh.trans_b != 1)) {
                fprintf(stderr, "error: shape '%s' is not M:N:K:T (positive sizes, T 0 or 1)\n", argv[i]);
                return 2;
            }
            shapes[ns++] = sh;
        }
    }
    printf("{\"threads\": %d, \"avx512_bf16\": %d, \"amx_bf16\": %d, \"shapes\": [\n", threads,
           lp_cpu_has_avx512_bf16(), lp_cpu_has_amx_bf16());
    double tot_f = 0, tot_s = 0, tot_b = 0, tot_c = 0;
    for (int s = 0; s < ns; s++) {
        shape_t sh = shapes[s];
        size_t an = (size_t)sh.m * sh.k, bn = (size_t)sh.k * sh.n, cn = (size_t)sh.m * sh.n;
        float *a = malloc(an * 4), *b = malloc(bn * 4), *c = malloc(cn * 4);
        uint16_t *a16 = malloc(an * 2), *b16 = malloc(bn * 2);
        srand(s + 1);
        for (size_t i = 0; i < an; i++) a[i] = rand() / (float)RAND_MAX - 0.5f;
        for (size_t i = 0; i < bn; i++) b[i] = (rand() / (float)RAND_MAX - 0.5f) * 0.05f;
        lp_f32_to_bf16(b, b16, bn);
        int ldb = sh.trans_b ? sh.k : sh.n;
        double flops = 2.0 * sh.m * sh.n * sh.k;
        // warm up both (oneDNN creates its primitive on the first call)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, sh.trans_b ? CblasTrans : CblasNoTrans, sh.m, sh.n, sh.k, 1, a, sh.k, b, ldb, 0, c, sh.n);
        lp_f32_to_bf16(a, a16, an);
        // oneDNN 2.6 implements bf16 matmul only on avx512_core and newer: elsewhere the primitive is refused
        int bf16_ok = lp_bf16_gemm(sh.trans_b, sh.m, sh.n, sh.k, 1, a16, sh.k, b16, ldb, 0, c, sh.n) == 0;
        const char *impl = bf16_ok ? lp_bf16_last_impl() : lp_bf16_last_error();
        int it = 0; double t0 = now(), ts, tb = 0, tc;
        do { cblas_sgemm(CblasRowMajor, CblasNoTrans, sh.trans_b ? CblasTrans : CblasNoTrans, sh.m, sh.n, sh.k, 1, a, sh.k, b, ldb, 0, c, sh.n); it++; } while (now() - t0 < budget);
        ts = (now() - t0) / it;
        if (bf16_ok) {
            it = 0; t0 = now();
            do { lp_bf16_gemm(sh.trans_b, sh.m, sh.n, sh.k, 1, a16, sh.k, b16, ldb, 0, c, sh.n); it++; } while (now() - t0 < budget);
            tb = (now() - t0) / it;
        }
        it = 0; t0 = now();
        do { lp_f32_to_bf16(a, a16, an); it++; } while (now() - t0 < budget / 4);
        tc = (now() - t0) / it;
        tot_f += flops; tot_s += ts; tot_b += tb; tot_c += tc;
        printf("  {\"shape\": \"%s\", \"m\": %d, \"n\": %d, \"k\": %d, \"sgemm_gflops\": %.1f, \"onednn_bf16_gflops\": %.1f, "
               "\"bf16_vs_sgemm\": %.2f, \"convert_A_ms\": %.3f, \"impl\": \"%s\"}%s\n",
               sh.name, sh.m, sh.n, sh.k, flops / ts / 1e9, bf16_ok ? flops / tb / 1e9 : 0.0, bf16_ok ? ts / tb : 0.0, tc * 1e3, impl,
               s + 1 < ns ? "," : "");
        free(a); free(b); free(c); free(a16); free(b16);
    }
    if (tot_b > 0)
        printf("], \"total\": {\"sgemm_gflops\": %.1f, \"onednn_bf16_gflops\": %.1f, \"bf16_with_conversion_gflops\": %.1f, \"speedup\": %.2f}}\n",
               tot_f / tot_s / 1e9, tot_f / tot_b / 1e9, tot_f / (tot_b + tot_c) / 1e9, tot_s / (tot_b + tot_c));
    else
        printf("], \"total\": {\"sgemm_gflops\": %.1f, \"onednn_bf16_gflops\": null, \"note\": \"no bf16 matmul on this CPU\"}}\n",
               tot_f / tot_s / 1e9);
    return 0;
}
