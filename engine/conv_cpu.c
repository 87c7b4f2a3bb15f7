/* Direct 3x3 convolutions on the CPU (conv_cpu.h), without im2col.
 *
 * Padded grid. Each input plane of an image is copied into a zero-bordered
 * (h+2) x (w+2) plane, ps floats apart. Output pixel (r, c) is grid position
 * q = r (w+2) + c, and its tap (ky, kx) reads the padded plane at q + ky (w+2)
 * + kx: one offset per tap for the whole image, so a run of consecutive grid
 * positions is one unaligned vector load per tap, with no edge cases. The two
 * grid columns past the image's right edge are computed and thrown away
 * (2/(w+2) of the work: 7% at 28 x 28, 22% at 7 x 7).
 *
 * Forward. A task is (image, tile of pixel vectors); for every block of
 * output channels it accumulates COB_F x PV_F vectors in registers over all
 * input channels and taps, then writes the valid grid positions out. The
 * tile's input (cin x a few hundred floats) stays in L1 across the output
 * channel blocks. Threads split the tasks only, so no thread count or batch
 * changes any output element's sum.
 *
 * Weight gradient. dw[co][ci][tap] is a dot product over the batch and the
 * grid of dy (placed on the grid, zero in the thrown-away columns) and the
 * shifted padded input. Images are padded a chunk at a time (about 1 MiB, so
 * the chunk stays in L2); a task is (block of COB_W output channels, input
 * channel) with 9 COB_W vector accumulators, summed over the chunk's images in
 * order and added to dw chunk by chunk: the same order for any thread count. */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv_cpu.h"
#include "vapo/error.h"

#define CONV3_CHUNK_FLOATS ((size_t)1 << 18) /* padded images per weight-gradient chunk: 1 MiB */

typedef struct {
    int cin, h, w, gw; /* gw = w + 2, the grid's row length */
    int qg;            /* grid floats per image, h gw rounded up to 16 (any vector width) */
    size_t ps;         /* floats per padded plane: qg + the farthest tap, rounded up to 16 */
    int ntap;          /* 9, or 1 for a 1x1 convolution */
    int tap[9];        /* tap k = 3 ky + kx reads the padded plane at q + tap[k] */
} conv3_geom;

static conv3_geom geom_of(int cin, int h, int w)
{
    conv3_geom g = {.cin = cin, .h = h, .w = w, .gw = w + 2, .ntap = 9};
    g.qg = (h * g.gw + 15) / 16 * 16;
    g.ps = ((size_t)g.qg + 2 * g.gw + 2 + 15) / 16 * 16;
    for (int k = 0; k < 9; k++)
        g.tap[k] = k / 3 * g.gw + k % 3;
    return g;
}

/* lanes summed pairwise, in a fixed order */
static float hsum_lanes(float *t, int n)
{
    for (; n > 1; n /= 2)
        for (int i = 0; i < n / 2; i++)
            t[i] = t[2 * i] + t[2 * i + 1];
    return t[0];
}

/* ---- the vector bodies, once per instruction set -------------------------- */

#define ISA_TARGET "avx512f,fma"
#define ISA_NAME(x) x##_avx512
#define V __m512
#define VW 16
#define VLOAD _mm512_loadu_ps
#define VSTORE _mm512_storeu_ps
#define VZERO _mm512_setzero_ps()
#define VSET1 _mm512_set1_ps
#define VFMA _mm512_fmadd_ps
#define COB_F 4
#define PV_F 6
#define COB_W 3
#include "conv_cpu_isa.h"

#define ISA_TARGET "avx2,fma"
#define ISA_NAME(x) x##_avx2
#define V __m256
#define VW 8
#define VLOAD _mm256_loadu_ps
#define VSTORE _mm256_storeu_ps
#define VZERO _mm256_setzero_ps()
#define VSET1 _mm256_set1_ps
#define VFMA _mm256_fmadd_ps
#define COB_F 4
#define PV_F 2
#define COB_W 1
#include "conv_cpu_isa.h"

/* Every x86-64 CPU: SSE2, no FMA (a multiply and an add, rounded twice). */
#define ISA_TARGET "sse2"
#define ISA_NAME(x) x##_sse2
#define V __m128
#define VW 4
#define VLOAD _mm_loadu_ps
#define VSTORE _mm_storeu_ps
#define VZERO _mm_setzero_ps()
#define VSET1 _mm_set1_ps
#define VFMA(a, b, c) _mm_add_ps(_mm_mul_ps(a, b), c)
#define COB_F 4
#define PV_F 2
#define COB_W 1
#include "conv_cpu_isa.h"

typedef struct {
    const char *name;
    int vw, cob_f, pv_f, cob_w;
    void (*fwd_tile)(const conv3_geom *g, const float *xp, const float *w, int cob, int pv, float *tb);
    void (*wgrad_task)(const conv3_geom *g, const float *dyg, size_t dstride, const float *xg, int nimg, int cob,
                       float *out);
} conv3_isa;

static const conv3_isa isa_avx512 = {"avx512", 16, 4, 6, 3, fwd_tile_avx512, wgrad_task_avx512};
static const conv3_isa isa_avx2 = {"avx2", 8, 4, 2, 1, fwd_tile_avx2, wgrad_task_avx2};
static const conv3_isa isa_sse2 = {"sse2", 4, 4, 2, 1, fwd_tile_sse2, wgrad_task_sse2};

struct conv3 {
    const conv3_isa *isa;
    float *buf; /* scratch: padded planes and tiles */
    size_t cap;
};

conv3 *conv3_open(int *bad)
{
    *bad = 0;
    const char *want = getenv("VAPO_CPU_CONV");
    if (!want || !*want)
        want = "auto";
    const int has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
    const int has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const conv3_isa *isa;
    if (!strcmp(want, "auto") || !strcmp(want, "avx512"))
        isa = has512 ? &isa_avx512 : has2 ? &isa_avx2 : &isa_sse2;
    else if (!strcmp(want, "avx2"))
        isa = has2 ? &isa_avx2 : &isa_sse2;
    else if (!strcmp(want, "sse2"))
        isa = &isa_sse2;
    else if (!strcmp(want, "blis"))
        isa = NULL;
    else {
        vapo_fail("VAPO_CPU_CONV=%s: expected auto, avx512, avx2, sse2 or blis", want);
        *bad = 1;
        return NULL;
    }
    if (!isa)
        return NULL;
    conv3 *cv = calloc(1, sizeof *cv);
    if (!cv) {
        vapo_fail("out of memory creating the CPU convolution");
        *bad = 1;
        return NULL;
    }
    cv->isa = isa;
    return cv;
}

const char *conv3_name(const conv3 *cv) { return cv ? cv->isa->name : "blis"; }

void conv3_close(conv3 *cv)
{
    if (cv)
        free(cv->buf);
    free(cv);
}

static float *conv3_scratch(conv3 *cv, size_t need)
{
    if (need > cv->cap) {
        free(cv->buf);
        cv->cap = 0;
        if (posix_memalign((void **)&cv->buf, 64, sizeof(float) * need)) {
            cv->buf = NULL;
            vapo_fail("out of memory for the convolution scratch (%zu MiB)", (sizeof(float) * need) >> 20);
            return NULL;
        }
        cv->cap = need;
    }
    return cv->buf;
}

/* one h x w plane into its padded plane (interior at row 1, column 1) */
static void pad_plane(const conv3_geom *g, const float *src, float *dst)
{
    memset(dst, 0, sizeof(float) * g->ps);
    for (int r = 0; r < g->h; r++)
        memcpy(dst + (size_t)(r + 1) * g->gw + 1, src + (size_t)r * g->w, sizeof(float) * g->w);
}

/* one h x w plane onto the grid (pixel (r, c) at r gw + c), zero elsewhere */
static void grid_plane(const conv3_geom *g, const float *src, float *dst)
{
    memset(dst, 0, sizeof(float) * g->qg);
    for (int r = 0; r < g->h; r++)
        memcpy(dst + (size_t)r * g->gw, src + (size_t)r * g->w, sizeof(float) * g->w);
}

/* The valid pixels of a tile's grid positions [q0, q0+qn), cob channels of tb
 * (rows tbs apart), into image img of y: assigned (+ bias) or added. */
static void write_tile(const conv3_geom *g, const vapo_conv_shape *s, float *y, int img, int co0, int cob, int q0,
                       int qn, const float *tb, int tbs, const float *bias, int accumulate)
{
    const size_t hw = (size_t)s->h * s->w, n = (size_t)s->batch * hw;
    const int r0 = q0 / g->gw, r1 = (q0 + qn - 1) / g->gw + 1 < g->h ? (q0 + qn - 1) / g->gw + 1 : g->h;
    for (int c = 0; c < cob; c++) {
        float *yi = y + (size_t)(co0 + c) * n + (size_t)img * hw;
        const float *t = tb + (size_t)c * tbs - q0, b = bias ? bias[co0 + c] : 0.0f;
        for (int r = r0; r < r1; r++) {
            const int lo = r * g->gw > q0 ? r * g->gw : q0;
            const int hi = r * g->gw + g->w < q0 + qn ? r * g->gw + g->w : q0 + qn;
            float *yr = yi + (size_t)r * g->w - (size_t)r * g->gw;
            if (accumulate)
                for (int q = lo; q < hi; q++)
                    yr[q] += t[q];
            else
                for (int q = lo; q < hi; q++)
                    yr[q] = t[q] + b;
        }
    }
}

int conv3_forward(conv3 *cv, const vapo_conv_shape *s, float *y, const float *x, const float *w,
                  const float *bias, int accumulate)
{
    const conv3_isa *isa = cv->isa;
    const conv3_geom g = geom_of(s->cin, s->h, s->w);
    const size_t hw = (size_t)s->h * s->w, n = (size_t)s->batch * hw;
    const int nv = g.qg / isa->vw, ntile = (nv + isa->pv_f - 1) / isa->pv_f, tbs = isa->pv_f * isa->vw;
    const size_t per = (size_t)s->cin * g.ps + (size_t)isa->cob_f * tbs;
    float *buf = conv3_scratch(cv, per * omp_get_max_threads());
    if (!buf)
        return -1;
    const long ntasks = (long)s->batch * ntile;
    #pragma omp parallel
    {
        float *xp = buf + per * omp_get_thread_num(), *tb = xp + (size_t)s->cin * g.ps;
        long padded = -1;
        #pragma omp for schedule(static)
        for (long t = 0; t < ntasks; t++) {
            const int img = (int)(t / ntile), tile = (int)(t % ntile);
            if (img != padded) {
                for (int ci = 0; ci < s->cin; ci++)
                    pad_plane(&g, x + (size_t)ci * n + (size_t)img * hw, xp + (size_t)ci * g.ps);
                padded = img;
            }
            /* tiles split the image's nv vectors evenly, at most pv_f each */
            const int v0 = (int)((long)tile * nv / ntile), v1 = (int)((long)(tile + 1) * nv / ntile);
            const int q0 = v0 * isa->vw;
            for (int co0 = 0; co0 < s->cout; co0 += isa->cob_f) {
                const int cob = s->cout - co0 < isa->cob_f ? s->cout - co0 : isa->cob_f;
                isa->fwd_tile(&g, xp + q0, w + (size_t)co0 * s->cin * 9, cob, v1 - v0, tb);
                write_tile(&g, s, y, img, co0, cob, q0, (v1 - v0) * isa->vw, tb, tbs, bias, accumulate);
            }
        }
    }
    return 0;
}

/* A 1x1 convolution is a matrix product over the columns of the CNHW
 * matrix: tiles of columns, each copied (zero-padded to whole vectors) for
 * all input channels, then the forward kernel with one tap. Tasks are (tile,
 * group of output-channel blocks): a dense layer on a few columns still
 * splits over threads. */
int conv1_forward(conv3 *cv, const vapo_conv_shape *s, float *y, const float *x, const float *w, const float *bias,
                  int accumulate)
{
    const conv3_isa *isa = cv->isa;
    const size_t n = (size_t)s->batch * s->h * s->w;
    const int tbs = isa->pv_f * isa->vw, nblk = (s->cout + isa->cob_f - 1) / isa->cob_f;
    const long ntile = (long)((n + tbs - 1) / tbs);
    const int threads = omp_get_max_threads();
    const int groups = ntile >= 4 * threads ? 1 : nblk < threads ? nblk : threads;
    const conv3_geom g = {.cin = s->cin, .ps = (size_t)tbs, .ntap = 1};
    const size_t per = (size_t)s->cin * tbs + (size_t)isa->cob_f * tbs;
    float *buf = conv3_scratch(cv, per * threads);
    if (!buf)
        return -1;
    #pragma omp parallel
    {
        float *xp = buf + per * omp_get_thread_num(), *tb = xp + (size_t)s->cin * tbs;
        long copied = -1;
        #pragma omp for schedule(static)
        for (long t = 0; t < ntile * groups; t++) {
            const long tile = t / groups;
            const int grp = (int)(t % groups);
            const size_t j0 = (size_t)tile * tbs, len = n - j0 < (size_t)tbs ? n - j0 : (size_t)tbs;
            if (tile != copied) {
                for (int ci = 0; ci < s->cin; ci++) {
                    memcpy(xp + (size_t)ci * tbs, x + (size_t)ci * n + j0, sizeof(float) * len);
                    memset(xp + (size_t)ci * tbs + len, 0, sizeof(float) * (tbs - len));
                }
                copied = tile;
            }
            const int pv = (int)((len + isa->vw - 1) / isa->vw);
            for (int b = nblk * grp / groups; b < nblk * (grp + 1) / groups; b++) {
                const int co0 = b * isa->cob_f, cob = s->cout - co0 < isa->cob_f ? s->cout - co0 : isa->cob_f;
                isa->fwd_tile(&g, xp, w + (size_t)co0 * s->cin, cob, pv, tb);
                for (int c = 0; c < cob; c++) {
                    float *yr = y + (size_t)(co0 + c) * n + j0;
                    const float *tr = tb + (size_t)c * tbs, bc = bias ? bias[co0 + c] : 0.0f;
                    if (accumulate)
                        for (size_t i = 0; i < len; i++)
                            yr[i] += tr[i];
                    else
                        for (size_t i = 0; i < len; i++)
                            yr[i] = tr[i] + bc;
                }
            }
        }
    }
    return 0;
}

int conv3_backward_filter(conv3 *cv, const vapo_conv_shape *s, float *dw, const float *dy, const float *x)
{
    const conv3_isa *isa = cv->isa;
    const conv3_geom g = geom_of(s->cin, s->h, s->w);
    const size_t hw = (size_t)s->h * s->w, n = (size_t)s->batch * hw;
    const size_t per_img = (size_t)s->cin * g.ps + (size_t)s->cout * g.qg;
    size_t chunk = CONV3_CHUNK_FLOATS / per_img;
    chunk = chunk < 1 ? 1 : chunk > (size_t)s->batch ? (size_t)s->batch : chunk;
    float *buf = conv3_scratch(cv, chunk * per_img);
    if (!buf)
        return -1;
    const int nblk = (s->cout + isa->cob_w - 1) / isa->cob_w;
    for (int i0 = 0; i0 < s->batch; i0 += (int)chunk) {
        const int m = s->batch - i0 < (int)chunk ? s->batch - i0 : (int)chunk;
        float *xg = buf, *dyg = buf + (size_t)s->cin * m * g.ps; /* [ci][img][ps], [co][img][qg] */
        #pragma omp parallel
        {
            #pragma omp for schedule(static)
            for (long t = 0; t < (long)s->cin * m; t++)
                pad_plane(&g, x + (size_t)(t / m) * n + (size_t)(i0 + t % m) * hw, xg + (size_t)t * g.ps);
            #pragma omp for schedule(static)
            for (long t = 0; t < (long)s->cout * m; t++)
                grid_plane(&g, dy + (size_t)(t / m) * n + (size_t)(i0 + t % m) * hw, dyg + (size_t)t * g.qg);
            #pragma omp for schedule(static)
            for (long t = 0; t < (long)nblk * s->cin; t++) {
                const int co0 = (int)(t / s->cin) * isa->cob_w, ci = (int)(t % s->cin);
                const int cob = s->cout - co0 < isa->cob_w ? s->cout - co0 : isa->cob_w;
                float out[9 * 4];
                isa->wgrad_task(&g, dyg + (size_t)co0 * m * g.qg, (size_t)m * g.qg, xg + (size_t)ci * m * g.ps, m,
                                cob, out);
                for (int c = 0; c < cob; c++)
                    for (int k = 0; k < 9; k++)
                        dw[((size_t)(co0 + c) * s->cin + ci) * 9 + k] += out[c * 9 + k];
            }
        }
    }
    return 0;
}
