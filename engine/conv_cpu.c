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
 * shifted padded input. Images are padded a chunk at a time (about 4 MiB: a
 * task's own rows still fit L2, and 2-4% faster than 1 MiB chunks on Zen 4,
 * with fewer lane sums per image); a task is (block of COB_W output channels, input
 * channel) with 9 COB_W vector accumulators, summed over the chunk's images in
 * order and added to dw chunk by chunk: the same order for any thread count. */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv_cpu.h"
#include "vapo/error.h"

#define CONV3_CHUNK_FLOATS ((size_t)1 << 20) /* padded images per weight-gradient chunk: 4 MiB */

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

/* Winograd tiles of an h x w image: th x tw tiles of 2 x 2 outputs, each
 * reading 4 x 4 of the zero-bordered (2 th + 2) x (2 tw + 2) padded plane P.
 * Tile (ty, tx) is lane l = ty tw + tx. P is kept as eight planes, by row
 * parity pr, column parity pc and a shift of one tile column,
 * Q[sh][pr][pc][a tw + b] = P[2a + pr][2(b + sh) + pc], so that a tile
 * reads its input (i, j) at Q[j>>1][i&1][j&1][l + (i>>1) tw]: one unaligned
 * vector load per input across lanes, as the direct kernel's taps, with no
 * lane wasted at the end of a tile row. */
typedef struct {
    int th, tw;
    int nl;    /* th tw lanes per image */
    size_t pq; /* floats per plane, with room for the last vector's reads */
} wino_geom;

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
#define VADD _mm512_add_ps
#define VHSUM _mm512_reduce_add_ps /* lanes summed in halves: a fixed order */
#define VSUB _mm512_sub_ps
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
#define VADD _mm256_add_ps
#define VSUB _mm256_sub_ps
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
#define VADD _mm_add_ps
#define VSUB _mm_sub_ps
#define COB_F 4
#define PV_F 2
#define COB_W 1
#include "conv_cpu_isa.h"

/* AVX-512 versions of wino_pad's de-interleave and wino_put's interleave:
 * image rows are short (up to 16 tiles at 32 columns), too short for the
 * compiler's vector loops; two permutes and masked loads and stores do 32
 * columns. */
#define PERM_FN static __attribute__((target("avx512f")))

PERM_FN __mmask16 low_lanes(int k) { return k <= 0 ? 0 : k >= 16 ? 0xFFFF : (__mmask16)((1u << k) - 1); }

PERM_FN void wino_pad_perm(const wino_geom *wg, int h, int w, const float *src, float *q)
{
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const size_t pq = wg->pq;
    memset(q, 0, sizeof(float) * 8 * pq);
    for (int r = 0; r < h; r++) { /* padded row r + 1, column c + 1 */
        float *q0 = q + (size_t)((r + 1) & 1) * 2 * pq + (size_t)((r + 1) >> 1) * wg->tw, *q1 = q0 + pq;
        const float *s = src + (size_t)r * w;
        for (int c = 0; c < w; c += 32) {
            const int k = w - c < 32 ? w - c : 32, h0 = c / 2;
            const __m512 a = _mm512_maskz_loadu_ps(low_lanes(k), s + c);
            const __m512 b = _mm512_maskz_loadu_ps(low_lanes(k - 16), s + c + 16);
            const __m512 ev = _mm512_permutex2var_ps(a, even, b), od = _mm512_permutex2var_ps(a, odd, b);
            /* even column c + 2i: padded column 2 (h0 + i) + 1; odd: 2 (h0 + i + 1) */
            _mm512_mask_storeu_ps(q1 + h0, low_lanes((k + 1) / 2), ev);
            _mm512_mask_storeu_ps(q1 + 4 * pq + h0 - 1, low_lanes((k + 1) / 2) & (c ? 0xFFFF : 0xFFFE), ev);
            _mm512_mask_storeu_ps(q0 + h0 + 1, low_lanes(k / 2 < wg->tw - 1 - h0 ? k / 2 : wg->tw - 1 - h0), od);
            _mm512_mask_storeu_ps(q0 + 4 * pq + h0, low_lanes(k / 2), od);
        }
    }
}

PERM_FN void wino_put_perm(const wino_geom *wg, int h, int w, const float *o, int os, int l0, int nlanes, float *y,
                           float b, int accumulate)
{
    const __m512i zip = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512 bv = _mm512_set1_ps(b);
    const int l1 = l0 + nlanes < wg->nl ? l0 + nlanes : wg->nl;
    for (int l = l0; l < l1;) {
        const int ty = l / wg->tw, tx0 = l % wg->tw;
        const int end = (ty + 1) * wg->tw < l1 ? (ty + 1) * wg->tw : l1; /* this tile row's lanes */
        const int tx1 = end - ty * wg->tw;
        const float *oo = o + (l - l0) - tx0;
        for (int r = 0; r < 2 && 2 * ty + r < h; r++) {
            float *yr = y + (size_t)(2 * ty + r) * w;
            const float *e0 = oo + (2 * r) * os, *e1 = oo + (2 * r + 1) * os;
            for (int x = tx0; x < tx1; x += 8) {
                const int nt = tx1 - x < 8 ? tx1 - x : 8, cols = 2 * (x + nt) < w ? 2 * nt : w - 2 * x;
                const __mmask16 mt = low_lanes(nt), mc = low_lanes(cols);
                __m512 v = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(mt, e0 + x), zip,
                                                  _mm512_maskz_loadu_ps(mt, e1 + x));
                v = accumulate ? _mm512_add_ps(_mm512_maskz_loadu_ps(mc, yr + 2 * x), v) : _mm512_add_ps(v, bv);
                _mm512_mask_storeu_ps(yr + 2 * x, mc, v);
            }
        }
        l = end;
    }
}

#undef PERM_FN

typedef struct {
    const char *name;
    int vw, cob_f, pv_f, cob_w;
    void (*fwd_tile)(const conv3_geom *g, const float *xp, const float *w, int cob, int pv, float *tb);
    void (*wgrad_task)(const conv3_geom *g, const float *dyg, size_t dstride, const float *xg, int nimg, int cob,
                       float *out);
    void (*wino_pad)(const wino_geom *wg, int h, int w, const float *src, float *q);
    void (*wino_in)(const wino_geom *wg, const float *q, int l0, int nvec, float *v, size_t es);
    void (*wino_out)(const float *m, size_t es, int nvec, float *o, int os);
    void (*wino_put)(const wino_geom *wg, int h, int w, const float *o, int os, int l0, int nlanes, float *y, float b,
                     int accumulate);
} conv3_isa;

static const conv3_isa isa_avx512 = {"avx512", 16, 4, 6, 3, fwd_tile_avx512, wgrad_task_avx512,
                                   wino_pad_perm, wino_in_avx512, wino_out_avx512,
                                   wino_put_perm};
static const conv3_isa isa_avx2 = {"avx2", 8, 4, 2, 1, fwd_tile_avx2, wgrad_task_avx2,
                                   wino_pad_avx2, wino_in_avx2, wino_out_avx2,
                                   wino_put_avx2};
static const conv3_isa isa_sse2 = {"sse2", 4, 4, 2, 1, fwd_tile_sse2, wgrad_task_sse2,
                                   wino_pad_sse2, wino_in_sse2, wino_out_sse2,
                                   wino_put_sse2};

/* Winograd-transformed weights U[e][co][ci] of a forward (adj 0) or data
 * adjoint (adj 1) kernel, kept for weights with a version. */
typedef struct {
    const float *w; /* the caller's weights: the key, with adj, wver and the shape */
    uint64_t wver;
    int adj, cin, cout;
    float *u;
} wino_entry;

#define WINO_CACHE 64 /* a network's convolutions, both directions, a few networks */

struct conv3 {
    const conv3_isa *isa;
    conv3_algo algo;
    float *buf; /* scratch: padded planes and tiles */
    size_t cap;
    float *u;   /* transformed weights without a version */
    size_t ucap;
    wino_entry wcache[WINO_CACHE];
    int wnext; /* the entry to reuse when none matches */
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
    const char *wino = getenv("VAPO_CPU_WINOGRAD");
    conv3_algo algo = CONV3_PICK;
    if (wino && *wino && strcmp(wino, "auto")) {
        if (!strcmp(wino, "on"))
            algo = CONV3_WINOGRAD;
        else if (!strcmp(wino, "off"))
            algo = CONV3_DIRECT;
        else {
            vapo_fail("VAPO_CPU_WINOGRAD=%s: expected auto, on or off", wino);
            *bad = 1;
            return NULL;
        }
    }
    conv3 *cv = calloc(1, sizeof *cv);
    if (!cv) {
        vapo_fail("out of memory creating the CPU convolution");
        *bad = 1;
        return NULL;
    }
    cv->isa = isa;
    cv->algo = algo;
    return cv;
}

const char *conv3_name(const conv3 *cv) { return cv ? cv->isa->name : "blis"; }

void conv3_set_algo(conv3 *cv, conv3_algo algo) { cv->algo = algo; }

void conv3_close(conv3 *cv)
{
    if (!cv)
        return;
    free(cv->buf);
    free(cv->u);
    for (int i = 0; i < WINO_CACHE; i++)
        free(cv->wcache[i].u);
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

static int direct_forward(conv3 *cv, const vapo_conv_shape *s, float *y, const float *x, const float *w,
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

/* ---- Winograd F(2x2, 3x3) ---------------------------------------------------
 *
 * y = A^T [ (G g G^T) . (B^T d B) ] A per 2 x 2 output tile: 16 products per
 * tile and channel pair instead of 36. Per image the input planes are padded
 * (to whole tiles) and transformed to V[e][ci][tile]; for each of the 16
 * positions e, M[e] = U[e] V[e] is a 1x1 convolution over the tiles, the
 * forward kernel with one tap (tiles in the vector lanes, one FMA chain per
 * element over ci in order); then the output transform. A task is (image,
 * run of at most PV_F tile vectors), so no tile's arithmetic depends on the
 * batch, its position or the threads (batch invariance, as the direct
 * kernel). U is kept per (weights, version) like the backend's flipped
 * kernels. */

/* vw: the vector width; a plane has room for whole vectors of lanes */
static wino_geom wino_geom_of(int h, int w, int vw)
{
    wino_geom wg = {.th = (h + 1) / 2, .tw = (w + 1) / 2};
    wg.nl = wg.th * wg.tw;
    const size_t rows = (size_t)(wg.th + 1) * wg.tw, reads = (size_t)(wg.nl + vw - 1) / vw * vw + wg.tw;
    wg.pq = ((rows > reads ? rows : reads) + 15) / 16 * 16;
    return wg;
}

/* U[e][co][ci] = (G g G^T)[e] of w[co][ci][9] */
static void wino_weights(int cin, int cout, const float *w, float *u)
{
    const size_t es = (size_t)cout * cin;
    for (int co = 0; co < cout; co++)
        for (int ci = 0; ci < cin; ci++) {
            const float *g = w + ((size_t)co * cin + ci) * 9;
            float t[4][3];
            for (int j = 0; j < 3; j++) {
                t[0][j] = g[j];
                t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
                t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
                t[3][j] = g[6 + j];
            }
            float *o = u + (size_t)co * cin + ci;
            for (int i = 0; i < 4; i++) {
                o[(4 * i + 0) * es] = t[i][0];
                o[(4 * i + 1) * es] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
                o[(4 * i + 2) * es] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
                o[(4 * i + 3) * es] = t[i][2];
            }
        }
}

static float *alloc_floats(size_t n, const char *what)
{
    float *p = NULL;
    if (posix_memalign((void **)&p, 64, sizeof(float) * n)) {
        vapo_fail("out of memory for %s (%zu MiB)", what, (sizeof(float) * n) >> 20);
        return NULL;
    }
    return p;
}

/* The transformed weights of wk (the kernel that runs: w itself or its
 * flipped adjoint kernel), keyed by the caller's w and adj; kept while s->wver
 * stays, recomputed per call for weights without a version. */
static const float *wino_u(conv3 *cv, const vapo_conv_shape *s, const float *w, int adj, const float *wk)
{
    const size_t nu = (size_t)16 * s->cin * s->cout;
    if (!s->wver) {
        if (nu > cv->ucap) {
            free(cv->u);
            cv->ucap = 0;
            if (!(cv->u = alloc_floats(nu, "Winograd weights")))
                return NULL;
            cv->ucap = nu;
        }
        wino_weights(s->cin, s->cout, wk, cv->u);
        return cv->u;
    }
    wino_entry *e = NULL;
    for (int i = 0; i < WINO_CACHE && !e; i++) {
        wino_entry *c = &cv->wcache[i];
        if (c->u && c->w == w && c->adj == adj && c->cin == s->cin && c->cout == s->cout)
            e = c;
    }
    if (!e) {
        e = &cv->wcache[cv->wnext];
        cv->wnext = (cv->wnext + 1) % WINO_CACHE;
        free(e->u);
        *e = (wino_entry){w, 0, adj, s->cin, s->cout, alloc_floats(nu, "Winograd weights")};
        if (!e->u)
            return NULL;
    }
    if (e->wver != s->wver) {
        wino_weights(s->cin, s->cout, wk, e->u);
        e->wver = s->wver;
    }
    return e->u;
}

static int wino_forward(conv3 *cv, const vapo_conv_shape *s, float *y, const float *x, const float *u,
                        const float *bias, int accumulate)
{
    const conv3_isa *isa = cv->isa;
    const wino_geom wg = wino_geom_of(s->h, s->w, isa->vw);
    const size_t hw = (size_t)s->h * s->w, n = (size_t)s->batch * hw;
    const int nv = (wg.nl + isa->vw - 1) / isa->vw, nrun = (nv + isa->pv_f - 1) / isa->pv_f;
    const int tbs = isa->pv_f * isa->vw;
    /* V[e] and M[e] apart by a cache line more than their size: a transform
     * writes or reads 16 streams, which at a multiple of 4 KiB apart would
     * share an L1 set */
    const size_t vs = (size_t)s->cin * tbs + 16, ms = (size_t)s->cout * tbs + 16, qs = 8 * wg.pq;
    const size_t per = (size_t)s->cin * qs + 16 * vs + 16 * ms + 4 * (size_t)tbs;
    float *buf = conv3_scratch(cv, per * omp_get_max_threads());
    if (!buf)
        return -1;
    const conv3_geom g1 = {.cin = s->cin, .ps = (size_t)tbs, .ntap = 1}; /* a 1x1 over tiles */
    const long ntasks = (long)s->batch * nrun;
    #pragma omp parallel
    {
        float *q = buf + per * omp_get_thread_num(), *v = q + (size_t)s->cin * qs, *m = v + 16 * vs, *o = m + 16 * ms;
        long padded = -1;
        #pragma omp for schedule(static)
        for (long t = 0; t < ntasks; t++) {
            const int img = (int)(t / nrun), run = (int)(t % nrun);
            if (img != padded) {
                for (int ci = 0; ci < s->cin; ci++)
                    isa->wino_pad(&wg, s->h, s->w, x + (size_t)ci * n + (size_t)img * hw, q + (size_t)ci * qs);
                padded = img;
            }
            /* runs split the image's nv lane vectors evenly, at most pv_f each */
            const int v0 = (int)((long)run * nv / nrun), v1 = (int)((long)(run + 1) * nv / nrun);
            const int l0 = v0 * isa->vw, nvec = v1 - v0;
            for (int ci = 0; ci < s->cin; ci++)
                isa->wino_in(&wg, q + (size_t)ci * qs, l0, nvec, v + (size_t)ci * tbs, vs);
            for (int e = 0; e < 16; e++)
                for (int co0 = 0; co0 < s->cout; co0 += isa->cob_f) {
                    const int cob = s->cout - co0 < isa->cob_f ? s->cout - co0 : isa->cob_f;
                    isa->fwd_tile(&g1, v + e * vs, u + ((size_t)e * s->cout + co0) * s->cin, cob, nvec,
                                  m + e * ms + (size_t)co0 * tbs);
                }
            for (int co = 0; co < s->cout; co++) {
                isa->wino_out(m + (size_t)co * tbs, ms, nvec, o, tbs);
                isa->wino_put(&wg, s->h, s->w, o, tbs, l0, nvec * isa->vw, y + (size_t)co * n + (size_t)img * hw,
                              bias ? bias[co] : 0.0f, accumulate);
            }
        }
    }
    return 0;
}

/* Winograd or direct for this shape: a choice of channels and image size,
 * never of the batch, from `bench_conv 8 3 1 winograd cpu grid` (bench/
 * BENCHMARKS.md): Winograd is 1.15-2.2x faster from 16 channels at sides of 8
 * and more, and from 32 channels at 7 x 7; slower with fewer channels (the
 * transforms, which do not shrink with them, are a larger share) and on
 * 4 x 4 images. */
int conv3_uses_winograd(const conv3 *cv, const vapo_conv_shape *s)
{
    if (cv->algo != CONV3_PICK)
        return cv->algo == CONV3_WINOGRAD;
    const int ch = s->cin < s->cout ? s->cin : s->cout, side = s->h < s->w ? s->h : s->w;
    return ch >= 16 && side >= (ch >= 32 ? 7 : 8);
}

int conv3_forward(conv3 *cv, const vapo_conv_shape *s, float *y, const float *x, const float *w,
                  const float *bias, int accumulate)
{
    if (!conv3_uses_winograd(cv, s))
        return direct_forward(cv, s, y, x, w, bias, accumulate);
    const float *u = wino_u(cv, s, w, 0, w);
    return u ? wino_forward(cv, s, y, x, u, bias, accumulate) : -1;
}

int conv3_backward_data(conv3 *cv, const vapo_conv_shape *s, float *dx, const float *dy, const float *w,
                        const float *wf, int accumulate)
{
    const vapo_conv_shape t = {s->cout, s->cin, 3, s->batch, s->h, s->w, s->wver};
    if (!conv3_uses_winograd(cv, &t))
        return direct_forward(cv, &t, dx, dy, wf, NULL, accumulate);
    const float *u = wino_u(cv, &t, w, 1, wf);
    return u ? wino_forward(cv, &t, dx, dy, u, NULL, accumulate) : -1;
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
