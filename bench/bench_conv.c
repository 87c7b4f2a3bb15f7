/* The CPU backend's 3x3 convolutions on the fmnist-small shapes, pass by
 * pass, the direct kernels (VAPO_CPU_CONV=auto) against im2col + BLIS
 * (VAPO_CPU_CONV=blis), alternated in one process so that a shared machine
 * slows both alike; and the machine's measured FMA peak for a roofline
 * column (GFLOPS of the pass / peak). Times are the minimum over repeats.
 * With "direct" as the fourth argument only the direct kernels run (BLIS's
 * own threads spin at barriers: on a machine busy with other work, its
 * 2-thread passes took seconds instead of milliseconds).
 * With "winograd" the direct kernels (VAPO_CPU_WINOGRAD=off) run against
 * Winograd F(2x2, 3x3) (=on) on the forward and data-adjoint passes; with
 * "grid" as the sixth argument over a grid of channels and sides, the
 * measurement behind conv3_uses_winograd's choice.
 * With "cpu" as the fifth, times are the process's CPU time divided by the
 * threads, not wall time: on a machine shared with other work, what the
 * passes would take with the cores to themselves (while threads are not
 * waiting: fair for 1 thread, flattering for more).
 * Weights carry a version (vapo_conv_shape.wver), as a network's do: what the
 * backend derives from them is kept between calls.
 *   bench_conv [batch] [repeats] [threads] [both|direct|winograd] [wall|cpu] [grid] */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "vapo/error.h"
#include "vapo/rng.h"

static int cpu_clock, clock_threads = 1;

static double now(void)
{
    if (!cpu_clock)
        return bench_now();
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (ts.tv_sec + 1e-9 * ts.tv_nsec) / clock_threads;
}

/* Single-precision FMA peak of `threads` threads, in GFLOPS: 12 independent
 * AVX-512 (or AVX2) FMA chains per thread, the best of a few tries. */
__attribute__((target("avx512f,fma"))) static double fma_loop_avx512(long iters)
{
    __m512 a[12], m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++)
        a[i] = _mm512_set1_ps((float)i);
    for (long t = 0; t < iters; t++)
        for (int i = 0; i < 12; i++)
            a[i] = _mm512_fmadd_ps(a[i], m, c);
    float s = 0;
    for (int i = 0; i < 12; i++)
        s += _mm512_reduce_add_ps(a[i]);
    return s;
}

__attribute__((target("avx2,fma"))) static double fma_loop_avx2(long iters)
{
    __m256 a[12], m = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < 12; i++)
        a[i] = _mm256_set1_ps((float)i);
    for (long t = 0; t < iters; t++)
        for (int i = 0; i < 12; i++)
            a[i] = _mm256_fmadd_ps(a[i], m, c);
    float s = 0, lanes[8];
    for (int i = 0; i < 12; i++) {
        _mm256_storeu_ps(lanes, a[i]);
        for (int j = 0; j < 8; j++)
            s += lanes[j];
    }
    return s;
}

static double peak_gflops(int threads)
{
    const int wide = __builtin_cpu_supports("avx512f");
    const long iters = 20000000;
    double best = 0, sink = 0;
    for (int rep = 0; rep < 3; rep++) {
        const double t0 = now();
        #pragma omp parallel num_threads(threads) reduction(+ : sink)
        sink += wide ? fma_loop_avx512(iters) : fma_loop_avx2(iters);
        const double gf = (double)iters * 12 * (wide ? 16 : 8) * 2 * threads / (now() - t0) * 1e-9;
        best = gf > best ? gf : best;
    }
    return sink == 42.0 ? 0 : best;
}

typedef struct {
    const char *what;
    int cin, cout, hw;
} conv_case;

enum { PASSES = 3 };
static const char *pass_name[PASSES] = {"forward", "backward_data", "backward_filter"};

static void run_pass(vapo_backend *be, int pass, const vapo_conv_shape *s, float *y, float *x, float *w,
                     float *b, float *dw)
{
    if (pass == 0)
        be->conv_forward(be, s, y, x, w, b);
    else if (pass == 1)
        be->conv_backward_data(be, s, x, y, w);
    else
        be->conv_backward_filter(be, s, dw, NULL, y, x);
}

static vapo_backend *open_with(const char *conv, const char *wino, int threads)
{
    setenv("VAPO_CPU_CONV", conv, 1);
    setenv("VAPO_CPU_WINOGRAD", wino, 1);
    vapo_backend *be = vapo_backend_cpu(threads);
    if (!be)
        fprintf(stderr, "bench_conv: %s\n", vapo_last_error());
    return be;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const int batch = argc > 1 ? atoi(argv[1]) : 64, reps = argc > 2 ? atoi(argv[2]) : 10;
    const int threads = argc > 3 ? atoi(argv[3]) : 2;
    const int wino = argc > 4 && !strcmp(argv[4], "winograd");
    const int sides = argc > 4 && !strcmp(argv[4], "direct") ? 1 : 2, passes = wino ? 2 : PASSES;
    cpu_clock = argc > 5 && !strcmp(argv[5], "cpu"), clock_threads = threads;
    static const conv_case paper[] = {
        {"conv_in", 1, 32, 28}, {"level 0", 32, 32, 28}, {"level 1 c1/sc", 32, 64, 14},
        {"level 1 c2", 64, 64, 14}, {"level 2", 64, 64, 7},
    };
    conv_case grid[64];
    size_t ncases = sizeof paper / sizeof paper[0];
    const conv_case *cases = paper;
    if (argc > 6 && !strcmp(argv[6], "grid")) {
        static const int ch[] = {4, 8, 16, 32, 64, 128}, side[] = {4, 7, 8, 14, 16, 28, 32};
        ncases = 0;
        for (size_t i = 0; i < sizeof ch / sizeof ch[0]; i++)
            for (size_t j = 0; j < sizeof side / sizeof side[0]; j++)
                grid[ncases++] = (conv_case){"grid", ch[i], ch[i], side[j]};
        cases = grid;
    }
    const char *other = wino ? "winograd" : "blis";
    vapo_backend *be[2] = {open_with("auto", "off", threads),
                           sides == 2 ? open_with(wino ? "auto" : "blis", wino ? "on" : "off", threads) : NULL};
    if (!be[0] || (sides == 2 && !be[1]) || batch < 1 || reps < 1)
        return 1;
    const double peak = peak_gflops(threads);
    printf("FMA peak, %d threads: %.1f GFLOPS\n", threads, peak);
    printf("%-14s %-16s %10s %10s %8s %8s %8s\n", "shape", "pass", "direct ms", wino ? "wino ms" : "blis ms",
           wino ? "wino x" : "speedup", "GFLOPS", "of peak");
    double total[2] = {0, 0};
    for (size_t t = 0; t < ncases; t++) {
        const conv_case *c = &cases[t];
        const vapo_conv_shape s = {c->cin, c->cout, 3, batch, c->hw, c->hw, 1};
        const size_t n = (size_t)batch * c->hw * c->hw, nw = (size_t)c->cin * c->cout * 9;
        float *x = malloc(sizeof(float) * n * c->cin), *y = malloc(sizeof(float) * n * c->cout);
        float *w = malloc(sizeof(float) * nw), *dw = calloc(nw, sizeof(float)), *b = calloc(c->cout, sizeof(float));
        vapo_rng_normal(1, 1, 0, n * c->cin, x);
        vapo_rng_normal(1, 2, 0, n * c->cout, y);
        vapo_rng_normal(1, 3, 0, nw, w);
        const double flops = 2.0 * n * nw;
        for (int pass = 0; pass < passes; pass++) {
            double best[2] = {1e30, 1e30};
            for (int r = 0; r < reps; r++)
                for (int k = 0; k < sides; k++) {
                    const double t0 = now();
                    run_pass(be[k], pass, &s, y, x, w, b, dw);
                    const double dt = now() - t0;
                    best[k] = dt < best[k] ? dt : best[k];
                }
            total[0] += best[0], total[1] += sides == 2 ? best[1] : 0;
            char shape[32];
            snprintf(shape, sizeof shape, "%d>%d %dx%d", c->cin, c->cout, c->hw, c->hw);
            char blis[32] = "-", ratio[32] = "-";
            if (sides == 2 && wino) /* the winograd pass's speed-up, and GFLOPS of direct FLOPs */
                snprintf(blis, sizeof blis, "%.3f", best[1] * 1e3), snprintf(ratio, sizeof ratio, "%.2fx", best[0] / best[1]);
            else if (sides == 2)
                snprintf(blis, sizeof blis, "%.3f", best[1] * 1e3), snprintf(ratio, sizeof ratio, "%.2fx", best[1] / best[0]);
            const double tr = wino ? best[1] : best[0]; /* winograd: effective GFLOPS, direct FLOPs / time */
            printf("%-14s %-16s %10.3f %10s %8s %8.1f %7.0f%%\n", shape, pass_name[pass], best[0] * 1e3, blis, ratio,
                   flops / tr * 1e-9, 100 * flops / tr * 1e-9 / peak);
        }
        free(x), free(y), free(w), free(dw), free(b);
    }
    if (sides == 2)
        printf("all passes above: direct %.2f ms, %s %.2f ms (%.2fx)\n", total[0] * 1e3, other, total[1] * 1e3,
               total[1] / total[0]);
    else
        printf("all passes above: direct %.2f ms\n", total[0] * 1e3);
    bench_result("vapo-conv", "batch=%d threads=%d peak_gflops=%.1f direct_ms=%.3f %s_ms=%.3f", batch, threads,
                 peak, total[0] * 1e3, other, total[1] * 1e3);
    for (int k = 0; k < sides; k++)
        be[k]->destroy(be[k]);
    return 0;
}
