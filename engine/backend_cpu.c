/* The CPU backend: convolutions direct (conv_cpu.c) but for the 1x1 weight
 * gradient, a BLIS GEMM (through its CBLAS interface); OpenMP for the rest.
 * With VAPO_CPU_CONV=blis (benchmarks) convolutions use BLIS, 3x3 ones im2col over
 * chunks of whole images, each chunk's column matrix about the size of a
 * core's L2 cache (VAPO_COL_BUDGET floats), so the GEMM reads it back from
 * cache rather than from memory. */
#include <blis.h>
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <xmmintrin.h>
#include <stdlib.h>
#include <string.h>

#include "backend_cpu.h"
#include "conv_cpu.h"
#include "vapo/error.h"

#define VAPO_COL_BUDGET ((size_t)1 << 18) /* floats in one im2col chunk (1 MiB), unless one image needs more */
#define FLIP_CACHE 64                      /* flipped kernels kept: a network's convolutions, a few networks */

/* The flipped kernel of weights w (of shape cin, cout, k) at version wver. */
typedef struct {
    const float *w;
    uint64_t wver;
    int cin, cout, k;
    float *flip;
} flip_entry;

typedef struct {
    vapo_backend base;
    float *col;   /* im2col scratch */
    float *wflip; /* flipped kernel of the backward data pass, weights without a version */
    size_t col_cap, wflip_cap;
    flip_entry flips[FLIP_CACHE]; /* weights with a version (vapo_conv_shape.wver) */
    int flip_next;                /* the slot to reuse when none matches */
    int threads;
    conv3 *conv3; /* direct 3x3 convolutions; NULL: im2col + BLIS */
} cpu_backend;

static void *cpu_alloc(vapo_backend *be, size_t bytes)
{
    (void)be;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64))
        return NULL;
    memset(p, 0, bytes);
    return p;
}
static void cpu_free(vapo_backend *be, void *p) { (void)be, free(p); }
static void cpu_memcpy(vapo_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes)
        memcpy(dst, src, bytes);
}
static void cpu_zero(vapo_backend *be, void *p, size_t bytes) { (void)be, memset(p, 0, bytes); }
static void cpu_sync(vapo_backend *be) { (void)be; }

/* ---- convolution ----------------------------------------------------------- */

/* Columns [j0, j0+nc) of the CNHW input, unrolled for a 3x3 kernel:
 * col[(ci*9 + ky*3 + kx) * nc + j] = x[ci, pixel j shifted by (ky-1, kx-1)].
 * j0 and nc are whole images, so shifts never cross an image boundary. Each
 * output plane is one shifted copy of the input plane (pixel p reads p + dy w
 * + dx), after which the rows that fell off the top or bottom and the column
 * that wrapped around are zeroed: one long copy instead of one per row. */
static void shifted_plane(int h, int w, int dy, int dx, const float *src, float *dst)
{
    const int y0 = dy < 0 ? -dy : 0, y1 = dy > 0 ? h - dy : h; /* rows that read inside the image */
    const ptrdiff_t shift = (ptrdiff_t)dy * w + dx;
    if (y1 <= y0 || (dx != 0 && w == 1)) { /* nothing reads inside (tiny images) */
        memset(dst, 0, sizeof(float) * h * w);
        return;
    }
    size_t first = (size_t)y0 * w, count = (size_t)(y1 - y0) * w;
    if (dx < 0) /* p + dx leaves the plane at p = 0 */
        first++, count--;
    else if (dx > 0)
        count--;
    memset(dst, 0, sizeof(float) * first);
    memcpy(dst + first, src + first + shift, sizeof(float) * count);
    memset(dst + first + count, 0, sizeof(float) * ((size_t)h * w - first - count));
    if (dx != 0) /* the column whose neighbour lies across the image edge */
        for (int y = y0; y < y1; y++)
            dst[(size_t)y * w + (dx < 0 ? 0 : w - 1)] = 0.0f;
}

static void im2col3(const vapo_conv_shape *s, int channels, const float *x, size_t j0, size_t nc, float *col)
{
    const size_t n = (size_t)s->batch * s->h * s->w, hw = (size_t)s->h * s->w;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int ci = 0; ci < channels; ci++)
        for (int kk = 0; kk < 9; kk++) {
            float *dst = col + ((size_t)ci * 9 + kk) * nc;
            const float *src = x + (size_t)ci * n + j0;
            for (size_t img = 0; img < nc / hw; img++)
                shifted_plane(s->h, s->w, kk / 3 - 1, kk % 3 - 1, src + img * hw, dst + img * hw);
        }
}

/* A scratch buffer of at least `need` floats, grown (contents lost) when
 * short; NULL with the error set when memory runs out. */
static float *scratch(float **buf, size_t *cap, size_t need, const char *what)
{
    if (need > *cap) {
        free(*buf);
        *cap = 0;
        if (posix_memalign((void **)buf, 64, sizeof(float) * need)) {
            *buf = NULL;
            vapo_fail("out of memory for the %s (%zu MiB)", what, (sizeof(float) * need) >> 20);
            return NULL;
        }
        *cap = need;
    }
    return *buf;
}

/* Columns per chunk: whole images, as many as fit the scratch budget. */
static size_t chunk_cols(const vapo_conv_shape *s, int channels)
{
    const size_t hw = (size_t)s->h * s->w, rows = (size_t)channels * 9;
    size_t imgs = VAPO_COL_BUDGET / (rows * hw);
    if (imgs < 1)
        imgs = 1;
    if (imgs > (size_t)s->batch)
        imgs = s->batch;
    return imgs * hw;
}

static void bias_fill(const vapo_conv_shape *s, float *y, const float *bias)
{
    const size_t n = (size_t)s->batch * s->h * s->w;
    #pragma omp parallel for schedule(static)
    for (int co = 0; co < s->cout; co++) {
        float *r = y + (size_t)co * n;
        const float b = bias ? bias[co] : 0.0f;
        for (size_t j = 0; j < n; j++)
            r[j] = b;
    }
}

static void cpu_conv_forward(vapo_backend *be, const vapo_conv_shape *s, float *y, const float *x,
                             const float *w, const float *bias)
{
    cpu_backend *cb = (cpu_backend *)be;
    const size_t n = (size_t)s->batch * s->h * s->w;
    if (s->k == 1 && cb->conv3) {
        conv1_forward(cb->conv3, s, y, x, w, bias, 0);
        return;
    }
    if (s->k == 1) {
        bias_fill(s, y, bias);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->cout, n, s->cin, 1.0f, w, s->cin, x, n,
                    1.0f, y, n);
        return;
    }
    if (cb->conv3) {
        conv3_forward(cb->conv3, s, y, x, w, bias, 0);
        return;
    }
    bias_fill(s, y, bias);
    const size_t step = chunk_cols(s, s->cin), K = (size_t)s->cin * 9;
    float *col = scratch(&cb->col, &cb->col_cap, step * K, "im2col scratch");
    for (size_t j0 = 0; col && j0 < n; j0 += step) {
        const size_t nc = j0 + step <= n ? step : n - j0;
        im2col3(s, s->cin, x, j0, nc, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->cout, nc, K, 1.0f, w, K, col, nc,
                    1.0f, y + j0, n);
    }
}

/* w'[ci][co*kk + t] = w[co][ci*kk + kk-1 - t] (kk = k*k taps; for k = 1 the
 * transpose) */
static void flip_kernel(const vapo_conv_shape *s, const float *w, float *wf)
{
    const int kk = s->k * s->k;
    for (int ci = 0; ci < s->cin; ci++)
        for (int co = 0; co < s->cout; co++)
            for (int t = 0; t < kk; t++)
                wf[((size_t)ci * s->cout + co) * kk + t] = w[((size_t)co * s->cin + ci) * kk + kk - 1 - t];
}

/* The cache entry of weights with a version: the one for w of this shape, or
 * a slot taken round-robin; NULL with the error set when memory runs out. */
static flip_entry *flip_slot(cpu_backend *cb, const vapo_conv_shape *s, const float *w)
{
    for (int i = 0; i < FLIP_CACHE; i++) {
        flip_entry *e = &cb->flips[i];
        if (e->w == w && e->flip && e->cin == s->cin && e->cout == s->cout && e->k == s->k)
            return e;
    }
    flip_entry *e = &cb->flips[cb->flip_next];
    cb->flip_next = (cb->flip_next + 1) % FLIP_CACHE;
    free(e->flip);
    *e = (flip_entry){w, 0, s->cin, s->cout, s->k, NULL};
    if (posix_memalign((void **)&e->flip, 64, sizeof(float) * s->cin * s->cout * s->k * s->k)) {
        e->flip = NULL;
        vapo_fail("out of memory for a flipped convolution kernel");
        return NULL;
    }
    return e;
}

/* The flipped kernel of w: kept while w's version (s->wver) stays, for
 * sampling and serving, which call the network many times with the same
 * weights; recomputed into a scratch buffer for weights without a version. */
static float *flipped_weights(cpu_backend *cb, const vapo_conv_shape *s, const float *w)
{
    if (!s->wver) {
        if (!scratch(&cb->wflip, &cb->wflip_cap, (size_t)s->cin * s->cout * s->k * s->k, "flipped convolution kernel"))
            return NULL;
        flip_kernel(s, w, cb->wflip);
        return cb->wflip;
    }
    flip_entry *e = flip_slot(cb, s, w);
    if (e && e->wver != s->wver) {
        flip_kernel(s, w, e->flip);
        e->wver = s->wver;
    }
    return e ? e->flip : NULL;
}

/* dx += W^T dy, or dx = W^T dy (accumulate 0: dx is written, not read) */
static void conv_backward_data(vapo_backend *be, const vapo_conv_shape *s, float *dx, const float *dy,
                               const float *w, int accumulate)
{
    cpu_backend *cb = (cpu_backend *)be;
    const size_t n = (size_t)s->batch * s->h * s->w;
    if (s->k == 1 && cb->conv3) { /* the forward kernel on the transposed weights */
        float *wt = flipped_weights(cb, s, w);
        const vapo_conv_shape t = {s->cout, s->cin, 1, s->batch, s->h, s->w, 0};
        if (wt)
            conv1_forward(cb->conv3, &t, dx, dy, wt, NULL, accumulate);
        return;
    }
    if (s->k == 1) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, s->cin, n, s->cout, 1.0f, w, s->cin, dy, n,
                    accumulate ? 1.0f : 0.0f, dx, n);
        return;
    }
    /* The adjoint of a "same" 3x3 convolution is the convolution of dy with the
     * spatially flipped, channel-transposed kernel: w'[ci][co][k] = w[co][ci][8-k].
     * So it reuses im2col and one GEMM, with no scattered col2im. */
    const size_t K = (size_t)s->cout * 9;
    float *wf = flipped_weights(cb, s, w);
    if (!wf)
        return;
    if (cb->conv3) {
        conv3_backward_data(cb->conv3, s, dx, dy, w, wf, accumulate);
        return;
    }
    if (!accumulate)
        memset(dx, 0, sizeof(float) * s->cin * n);
    const size_t step = chunk_cols(s, s->cout);
    float *col = scratch(&cb->col, &cb->col_cap, step * K, "im2col scratch");
    for (size_t j0 = 0; col && j0 < n; j0 += step) {
        const size_t nc = j0 + step <= n ? step : n - j0;
        im2col3(s, s->cout, dy, j0, nc, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->cin, nc, K, 1.0f, wf, K, col, nc, 1.0f,
                    dx + j0, n);
    }
}

/* sum_j a[j] b[j] (b NULL: sum_j a[j]) in double, in eight interleaved
 * partial sums (element j into sum j mod 8) added pairwise at the end: a
 * fixed order, the same at any vector width, and the sums run in parallel
 * where one chain of dependent double adds would wait on each. */
#ifdef __x86_64__
#define SUM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SUM_CLONES
#endif
SUM_CLONES static double sum8(const float *a, const float *b, size_t n)
{
    double acc[8] = {0};
    size_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int k = 0; k < 8; k++)
            acc[k] += (double)a[j + k] * (b ? (double)b[j + k] : 1.0);
    for (; j < n; j++)
        acc[j % 8] += (double)a[j] * (b ? (double)b[j] : 1.0);
    for (int w = 4; w >= 1; w /= 2)
        for (int k = 0; k < w; k++)
            acc[k] += acc[k + w];
    return acc[0];
}

static void cpu_conv_backward_data(vapo_backend *be, const vapo_conv_shape *s, float *dx, const float *dy,
                                   const float *w)
{
    conv_backward_data(be, s, dx, dy, w, 1);
}

static void cpu_conv_backward_data_set(vapo_backend *be, const vapo_conv_shape *s, float *dx, const float *dy,
                                       const float *w)
{
    conv_backward_data(be, s, dx, dy, w, 0);
}

static void rowsum_add(int rows, size_t n, float *out, const float *m)
{
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        out[r] += (float)sum8(m + (size_t)r * n, NULL, n);
}

static void cpu_conv_backward_filter(vapo_backend *be, const vapo_conv_shape *s, float *dw, float *db,
                                     const float *dy, const float *x)
{
    cpu_backend *cb = (cpu_backend *)be;
    const size_t n = (size_t)s->batch * s->h * s->w;
    if (db)
        rowsum_add(s->cout, n, db, dy);
    if (s->k == 1) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->cout, s->cin, n, 1.0f, dy, n, x, n, 1.0f, dw,
                    s->cin);
        return;
    }
    if (cb->conv3) {
        conv3_backward_filter(cb->conv3, s, dw, dy, x);
        return;
    }
    const size_t step = chunk_cols(s, s->cin), K = (size_t)s->cin * 9;
    float *col = scratch(&cb->col, &cb->col_cap, step * K, "im2col scratch");
    for (size_t j0 = 0; col && j0 < n; j0 += step) {
        const size_t nc = j0 + step <= n ? step : n - j0;
        im2col3(s, s->cin, x, j0, nc, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->cout, K, nc, 1.0f, dy + j0, n, col, nc,
                    1.0f, dw, K);
    }
}

/* ---- element-wise ------------------------------------------------------------ */

/* The activation passes run in chunks, each through a chunk function that
 * calls a span function with the activation as a literal, so every span's
 * loop is specialised and vectorised; a per-element branch on the activation
 * keeps the loop scalar. The chunk functions are compiled for AVX-512, AVX2
 * and the build's baseline (target_clones: the loader picks the widest the
 * CPU has; the baseline's SSE does 4 lanes, AVX-512 16), and this file is
 * compiled with -ffp-contract=off (CMakeLists.txt), so each element is the
 * same IEEE operations at any width: the numbers do not depend on the CPU.
 * The passes may run in place (y == x), which is safe element by element:
 * `omp simd` says so, where gcc's overlap check would pick the scalar loop. */
#define ACT_CHUNK ((size_t)4096)
#ifdef __x86_64__
#define ACT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ACT_CLONES
#endif
#define ACT_SPAN static inline __attribute__((always_inline)) void
#define ACT_DISPATCH(a, span, ...)                                                                      \
    switch (a) {                                                                                        \
    case VAPO_ACT_GELU: span(VAPO_ACT_GELU, __VA_ARGS__); break;                                        \
    case VAPO_ACT_SILU: span(VAPO_ACT_SILU, __VA_ARGS__); break;                                        \
    default: span(VAPO_ACT_RELU, __VA_ARGS__); break;                                                   \
    }
#define ACT_PASS(a, n, chunk, ...)                                                                      \
    _Pragma("omp parallel for schedule(static)") for (size_t c = 0; c < (n); c += ACT_CHUNK)            \
        chunk(a, (n) - c < ACT_CHUNK ? (n) - c : ACT_CHUNK, c, __VA_ARGS__)

ACT_SPAN forward_span(vapo_act a, size_t m, size_t c, float *y, const float *x)
{
    #pragma omp simd
    for (size_t i = c; i < c + m; i++)
        y[i] = vapo_act_value(a, x[i]);
}
ACT_SPAN tangent_span(vapo_act a, size_t m, size_t c, float *ydot, const float *x, const float *xdot)
{
    #pragma omp simd
    for (size_t i = c; i < c + m; i++)
        ydot[i] = vapo_act_d1(a, x[i]) * xdot[i];
}
ACT_SPAN dual_span(vapo_act a, size_t m, size_t c, float *dx, float *dxdot, const float *x, const float *xdot,
                   const float *dy, const float *dydot)
{
    #pragma omp simd
    for (size_t i = c; i < c + m; i++) {
        float d1, d2;
        vapo_act_d12(a, x[i], &d1, &d2);
        const float dyd = dydot[i];
        dx[i] = d1 * dy[i] + d2 * xdot[i] * dyd;
        dxdot[i] = d1 * dyd;
    }
}

ACT_CLONES static void forward_chunk(vapo_act a, size_t m, size_t c, float *y, const float *x)
{
    ACT_DISPATCH(a, forward_span, m, c, y, x);
}
ACT_CLONES static void tangent_chunk(vapo_act a, size_t m, size_t c, float *ydot, const float *x, const float *xdot)
{
    ACT_DISPATCH(a, tangent_span, m, c, ydot, x, xdot);
}
ACT_CLONES static void dual_chunk(vapo_act a, size_t m, size_t c, float *dx, float *dxdot, const float *x,
                                  const float *xdot, const float *dy, const float *dydot)
{
    ACT_DISPATCH(a, dual_span, m, c, dx, dxdot, x, xdot, dy, dydot);
}

static void cpu_act_forward(vapo_backend *be, vapo_act a, size_t n, float *y, const float *x)
{
    (void)be;
    ACT_PASS(a, n, forward_chunk, y, x);
}

static void cpu_act_tangent(vapo_backend *be, vapo_act a, size_t n, float *ydot, const float *x,
                            const float *xdot)
{
    (void)be;
    ACT_PASS(a, n, tangent_chunk, ydot, x, xdot);
}

/* dx = f'(x) dy: the tangent pass with dy in place of xdot */
static void cpu_act_backward(vapo_backend *be, vapo_act a, size_t n, float *dx, const float *x,
                             const float *dy)
{
    (void)be;
    ACT_PASS(a, n, tangent_chunk, dx, x, dy);
}

static void cpu_act_dual_backward(vapo_backend *be, vapo_act a, size_t n, float *dx, float *dxdot,
                                  const float *x, const float *xdot, const float *dy, const float *dydot)
{
    (void)be;
    ACT_PASS(a, n, dual_chunk, dx, dxdot, x, xdot, dy, dydot);
}

static void cpu_avgpool2_forward(vapo_backend *be, size_t planes, int h, int w, float *y, const float *x)
{
    (void)be;
    const int ho = h / 2, wo = w / 2;
    #pragma omp parallel for schedule(static)
    for (size_t p = 0; p < planes; p++)
        for (int i = 0; i < ho; i++)
            for (int j = 0; j < wo; j++) {
                const float *r0 = x + p * h * w + (size_t)(2 * i) * w + 2 * j, *r1 = r0 + w;
                y[p * ho * wo + (size_t)i * wo + j] = 0.25f * (r0[0] + r0[1] + r1[0] + r1[1]);
            }
}

static void cpu_avgpool2_backward(vapo_backend *be, size_t planes, int h, int w, float *dx, const float *dy)
{
    (void)be;
    const int ho = h / 2, wo = w / 2;
    #pragma omp parallel for schedule(static)
    for (size_t p = 0; p < planes; p++)
        for (int i = 0; i < h; i++)
            for (int j = 0; j < w; j++) {
                const int oi = i / 2, oj = j / 2;
                dx[p * h * w + (size_t)i * w + j] =
                    (oi < ho && oj < wo) ? 0.25f * dy[p * ho * wo + (size_t)oi * wo + oj] : 0.0f;
            }
}

static void cpu_upsample2_forward(vapo_backend *be, size_t planes, int h, int w, float *y, const float *x)
{
    (void)be;
    const int wo = 2 * w;
    #pragma omp parallel for schedule(static)
    for (size_t p = 0; p < planes; p++)
        for (int i = 0; i < 2 * h; i++)
            for (int j = 0; j < wo; j++)
                y[p * 4 * h * w + (size_t)i * wo + j] = x[p * h * w + (size_t)(i / 2) * w + j / 2];
}

static void cpu_upsample2_backward(vapo_backend *be, size_t planes, int h, int w, float *dx, const float *dy)
{
    (void)be;
    const int wo = 2 * w;
    #pragma omp parallel for schedule(static)
    for (size_t p = 0; p < planes; p++)
        for (int i = 0; i < h; i++)
            for (int j = 0; j < w; j++) {
                const float *r0 = dy + p * 4 * h * w + (size_t)(2 * i) * wo + 2 * j, *r1 = r0 + wo;
                dx[p * h * w + (size_t)i * w + j] = r0[0] + r0[1] + r1[0] + r1[1];
            }
}

static void cpu_rowsum_forward(vapo_backend *be, size_t rows, size_t len, float *y, const float *x)
{
    (void)be;
    #pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++) {
        float acc = 0.0f;
        for (size_t j = 0; j < len; j++)
            acc += x[r * len + j];
        y[r] = acc;
    }
}

static void cpu_rowsum_backward(vapo_backend *be, size_t rows, size_t len, float *dx, const float *dy)
{
    (void)be;
    #pragma omp parallel for schedule(static)
    for (size_t r = 0; r < rows; r++)
        for (size_t j = 0; j < len; j++)
            dx[r * len + j] = dy[r];
}

static void cpu_scale_forward(vapo_backend *be, int c, size_t n, float *y, const float *x, const float *s)
{
    (void)be;
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < c; i++)
        for (size_t j = 0; j < n; j++)
            y[(size_t)i * n + j] = s[i] * x[(size_t)i * n + j];
}

static void cpu_scale_backward_param(vapo_backend *be, int c, size_t n, float *ds, const float *dy,
                                     const float *x)
{
    (void)be;
    #pragma omp parallel for schedule(static)
    for (int i = 0; i < c; i++)
        ds[i] += (float)sum8(dy + (size_t)i * n, x + (size_t)i * n, n);
}

static void cpu_axpy(vapo_backend *be, size_t n, float a, const float *x, float *y)
{
    (void)be;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

static void cpu_add(vapo_backend *be, size_t n, float *y, const float *a, const float *b)
{
    (void)be;
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}

static double cpu_dot(vapo_backend *be, size_t n, const float *x, const float *y)
{
    (void)be;
    double acc = 0.0;
    #pragma omp parallel for reduction(+ : acc) schedule(static)
    for (size_t i = 0; i < n; i++)
        acc += (double)x[i] * y[i];
    return acc;
}

static void cpu_weightnorm_forward(vapo_backend *be, int rows, int len, float *w, const float *v,
                                   const float *g)
{
    (void)be;
    for (int r = 0; r < rows; r++) {
        const float *vr = v + (size_t)r * len;
        double ss = 0.0;
        for (int j = 0; j < len; j++)
            ss += (double)vr[j] * vr[j];
        const float k = g[r] / (float)sqrt(ss);
        for (int j = 0; j < len; j++)
            w[(size_t)r * len + j] = k * vr[j];
    }
}

static void cpu_weightnorm_backward(vapo_backend *be, int rows, int len, float *dv, float *dg,
                                    const float *dw, const float *v, const float *g)
{
    (void)be;
    for (int r = 0; r < rows; r++) {
        const float *vr = v + (size_t)r * len, *dwr = dw + (size_t)r * len;
        double ss = 0.0, proj = 0.0;
        for (int j = 0; j < len; j++) {
            ss += (double)vr[j] * vr[j];
            proj += (double)dwr[j] * vr[j];
        }
        const double norm = sqrt(ss);
        proj /= norm; /* dw . v/|v| */
        dg[r] += (float)proj;
        const double k = g[r] / norm;
        for (int j = 0; j < len; j++)
            dv[(size_t)r * len + j] += (float)(k * (dwr[j] - proj * vr[j] / norm));
    }
}

static void cpu_nchw_to_cnhw(vapo_backend *be, int batch, int c, int hw, float *dst, const float *src)
{
    (void)be;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int ci = 0; ci < c; ci++)
        for (int b = 0; b < batch; b++)
            memcpy(dst + ((size_t)ci * batch + b) * hw, src + ((size_t)b * c + ci) * hw, sizeof(float) * hw);
}

static void cpu_cnhw_to_nchw(vapo_backend *be, int batch, int c, int hw, float *dst, const float *src)
{
    (void)be;
    #pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < batch; b++)
        for (int ci = 0; ci < c; ci++)
            memcpy(dst + ((size_t)b * c + ci) * hw, src + ((size_t)ci * batch + b) * hw, sizeof(float) * hw);
}

static void cpu_destroy(vapo_backend *be)
{
    cpu_backend *cb = (cpu_backend *)be;
    free(cb->col);
    free(cb->wflip);
    for (int i = 0; i < FLIP_CACHE; i++)
        free(cb->flips[i].flip);
    conv3_close(cb->conv3);
    free(cb);
}

/* Denormal floats cost microcode assists on x86: a trained fmnist-small
 * network's training step ran 2.7x slower with them (1.4 s vs 0.51 s). Flush
 * them to zero in this thread, which new threads inherit, and in the OpenMP
 * pool's threads, which BLIS shares. Values below 1.2e-38 become 0. */
static void flush_denormals(void)
{
    _mm_setcsr(_mm_getcsr() | 0x8040); /* FTZ | DAZ */
    #pragma omp parallel
    _mm_setcsr(_mm_getcsr() | 0x8040);
}

vapo_backend *vapo_backend_cpu(int threads)
{
    cpu_backend *cb = calloc(1, sizeof *cb);
    if (!cb) {
        vapo_fail("out of memory creating the CPU backend");
        return NULL;
    }
    if (threads > 0)
        omp_set_num_threads(threads);
    cb->threads = threads > 0 ? threads : omp_get_max_threads();
    bli_thread_set_num_threads(cb->threads); /* BLIS runs single-threaded unless told */
    flush_denormals();
    int bad;
    cb->conv3 = conv3_open(&bad);
    if (bad) {
        free(cb);
        return NULL;
    }
    cb->base = (vapo_backend){
        .name = "cpu",
        .alloc = cpu_alloc,
        .free = cpu_free,
        .upload = cpu_memcpy,
        .download = cpu_memcpy,
        .copy = cpu_memcpy,
        .zero = cpu_zero,
        .sync = cpu_sync,
        .conv_forward = cpu_conv_forward,
        .conv_backward_data = cpu_conv_backward_data,
        .conv_backward_data_set = cpu_conv_backward_data_set,
        .conv_backward_filter = cpu_conv_backward_filter,
        .act_forward = cpu_act_forward,
        .act_tangent = cpu_act_tangent,
        .act_backward = cpu_act_backward,
        .act_dual_backward = cpu_act_dual_backward,
        .avgpool2_forward = cpu_avgpool2_forward,
        .avgpool2_backward = cpu_avgpool2_backward,
        .upsample2_forward = cpu_upsample2_forward,
        .upsample2_backward = cpu_upsample2_backward,
        .rowsum_forward = cpu_rowsum_forward,
        .rowsum_backward = cpu_rowsum_backward,
        .scale_forward = cpu_scale_forward,
        .scale_backward_param = cpu_scale_backward_param,
        .axpy = cpu_axpy,
        .add = cpu_add,
        .dot = cpu_dot,
        .weightnorm_forward = cpu_weightnorm_forward,
        .weightnorm_backward = cpu_weightnorm_backward,
        .nchw_to_cnhw = cpu_nchw_to_cnhw,
        .cnhw_to_nchw = cpu_cnhw_to_nchw,
        .rng_normal = cpu_rng_normal,
        .loss_perturb = cpu_loss_perturb,
        .loss_seeds = cpu_loss_seeds,
        .rk_combine = cpu_rk_combine,
        .rk_norm = cpu_rk_norm,
        .rows_copy = cpu_rows_copy,
        .optim_update = cpu_optim_update,
        .destroy = cpu_destroy,
    };
    return &cb->base;
}
