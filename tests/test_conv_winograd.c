/* The CPU backend's Winograd F(2x2, 3x3) convolution (engine/conv_cpu.c)
 * against its direct kernel, over the shapes it may be picked for and the
 * edges it must handle: channels 1 to 128, sides 1 to 32, odd and non-square
 * images, one image and several. Both passes that use it (forward, assigned
 * with a bias or accumulated; data adjoint, accumulated) must agree with the
 * direct kernel to float rounding (errors relative to the output's largest
 * magnitude), give each image the same bits alone as in any batch, the same
 * bits at any thread count, and follow weight changes announced by a new
 * version (the kept transformed weights). Prints the largest error seen. */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "../engine/conv_cpu.h"
#include "testutil.h"

#define TOL 5e-6 /* error / largest |output|: float rounding (measured: 1.2e-6 with FMA, 1.3e-6 without) */

static double worst;

static float *randn(size_t n, uint64_t stream, float scale)
{
    float *p = malloc(sizeof(float) * (n ? n : 1));
    vapo_rng_normal(11, stream, 0, n, p);
    for (size_t i = 0; i < n; i++)
        p[i] *= scale;
    return p;
}

static float *copy_of(const float *p, size_t n)
{
    float *q = malloc(sizeof(float) * (n ? n : 1));
    memcpy(q, p, sizeof(float) * n);
    return q;
}

/* max |a - b| / max |b| */
static double rel_err(const float *a, const float *b, size_t n)
{
    double d = 0, m = 1e-30;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    return d / m;
}

/* wf[ci][co][8-k] = w[co][ci][k] */
static float *flipped(const vapo_conv_shape *s, const float *w)
{
    float *wf = malloc(sizeof(float) * s->cin * s->cout * 9);
    for (int co = 0; co < s->cout; co++)
        for (int ci = 0; ci < s->cin; ci++)
            for (int k = 0; k < 9; k++)
                wf[((size_t)ci * s->cout + co) * 9 + 8 - k] = w[((size_t)co * s->cin + ci) * 9 + k];
    return wf;
}

/* pass 0: y = conv(x) + bias; 1: y += conv(x); 2: y += adjoint(x) */
static void run(conv3 *cv, conv3_algo algo, int pass, const vapo_conv_shape *s, float *y, const float *x,
                const float *w, const float *wf, const float *bias)
{
    conv3_set_algo(cv, algo);
    int rc = pass == 2 ? conv3_backward_data(cv, s, y, x, w, wf, 1) : conv3_forward(cv, s, y, x, w, pass ? NULL : bias, pass);
    CHECK(rc == 0, "pass %d failed", pass);
}

static void shape_case(conv3 *cv, vapo_conv_shape s)
{
    const size_t hw = (size_t)s.h * s.w, n = (size_t)s.batch * hw, nw = (size_t)s.cin * s.cout * 9;
    float *w = randn(nw, 1, 1.0f / sqrtf(9.0f * s.cin)), *wf = flipped(&s, w), *bias = randn(s.cout, 2, 1.0f);
    char name[80];
    snprintf(name, sizeof name, "cin=%d cout=%d batch=%d %dx%d", s.cin, s.cout, s.batch, s.h, s.w);
    for (int pass = 0; pass < 3; pass++) {
        const int ci = pass == 2 ? s.cout : s.cin, co = pass == 2 ? s.cin : s.cout;
        float *x = randn((size_t)ci * n, 3 + pass, 1.0f), *y0 = randn((size_t)co * n, 6 + pass, 1.0f);
        float *yd = copy_of(y0, (size_t)co * n), *yw = copy_of(y0, (size_t)co * n);
        run(cv, CONV3_DIRECT, pass, &s, yd, x, w, wf, bias);
        run(cv, CONV3_WINOGRAD, pass, &s, yw, x, w, wf, bias);
        const double e = rel_err(yw, yd, (size_t)co * n);
        worst = fmax(worst, e);
        CHECK(e <= TOL, "%s pass %d: winograd vs direct %.3g > %.1g", name, pass, e, TOL);

        /* each image alone: the same bits as in the batch */
        for (int img = 0; img < s.batch; img += s.batch > 2 ? s.batch - 1 : 1) {
            vapo_conv_shape one = s;
            one.batch = 1;
            float *x1 = malloc(sizeof(float) * ci * hw), *y1 = malloc(sizeof(float) * co * hw);
            for (int c = 0; c < ci; c++)
                memcpy(x1 + c * hw, x + c * n + img * hw, sizeof(float) * hw);
            for (int c = 0; c < co; c++)
                memcpy(y1 + c * hw, y0 + c * n + img * hw, sizeof(float) * hw);
            run(cv, CONV3_WINOGRAD, pass, &one, y1, x1, w, wf, bias);
            int same = 1;
            for (int c = 0; c < co; c++)
                same &= !memcmp(y1 + c * hw, yw + c * n + img * hw, sizeof(float) * hw);
            CHECK(same, "%s pass %d: image %d alone differs from the batch", name, pass, img);
            free(x1), free(y1);
        }

        /* three threads: the same bits as one */
        float *y3 = copy_of(y0, (size_t)co * n);
        const int threads = omp_get_max_threads();
        omp_set_num_threads(3);
        run(cv, CONV3_WINOGRAD, pass, &s, y3, x, w, wf, bias);
        omp_set_num_threads(threads);
        CHECK(!memcmp(y3, yw, sizeof(float) * co * n), "%s pass %d: 3 threads differ from %d", name, pass, threads);
        free(x), free(y0), free(yd), free(yw), free(y3);
    }
    free(w), free(wf), free(bias);
}

/* Kept transformed weights: a new version after a change in place is seen,
 * and the forward and adjoint kernels of one weight array are kept apart. */
static void version_case(conv3 *cv)
{
    vapo_conv_shape s = {16, 24, 3, 2, 14, 14, 1001};
    const size_t n = (size_t)s.batch * s.h * s.w, nw = (size_t)s.cin * s.cout * 9;
    float *w = randn(nw, 20, 0.1f), *x = randn(s.cin * n, 21, 1.0f), *dy = randn(s.cout * n, 22, 1.0f);
    float *ya = calloc(s.cout * n, sizeof(float)), *yb = calloc(s.cout * n, sizeof(float));
    float *da = calloc(s.cin * n, sizeof(float)), *db = calloc(s.cin * n, sizeof(float));
    float *wf = flipped(&s, w);
    run(cv, CONV3_WINOGRAD, 0, &s, ya, x, w, wf, NULL);
    run(cv, CONV3_WINOGRAD, 2, &s, da, dy, w, wf, NULL); /* same weights and version, other direction */
    for (size_t i = 0; i < nw; i++)
        w[i] = -2 * w[i];
    free(wf);
    wf = flipped(&s, w);
    s.wver = 1002;
    run(cv, CONV3_WINOGRAD, 0, &s, yb, x, w, wf, NULL);
    run(cv, CONV3_WINOGRAD, 2, &s, db, dy, w, wf, NULL);
    /* w -> -2 w doubles and negates the output exactly (powers of two) */
    int fwd = 1, adj = 1;
    for (size_t i = 0; i < s.cout * n; i++)
        fwd &= yb[i] == -2 * ya[i];
    for (size_t i = 0; i < s.cin * n; i++)
        adj &= db[i] == -2 * da[i];
    CHECK(fwd && adj, "weights changed under a new version: forward %s, adjoint %s", fwd ? "followed" : "stale",
          adj ? "followed" : "stale");
    /* the adjoint is not the forward's kept transform: compare with direct */
    float *dd = calloc(s.cin * n, sizeof(float));
    run(cv, CONV3_DIRECT, 2, &s, dd, dy, w, wf, NULL);
    CHECK(rel_err(db, dd, s.cin * n) <= TOL, "adjoint under a version: %.3g", rel_err(db, dd, s.cin * n));
    free(w), free(wf), free(x), free(dy), free(ya), free(yb), free(da), free(db), free(dd);
}

int main(void)
{
    int bad = 0;
    conv3 *cv = conv3_open(&bad);
    if (!cv) {
        printf("test_conv_winograd: no direct convolution here (%s): skipped\n", bad ? "error" : "blis");
        return bad;
    }
    printf("CPU convolution: %s\n", conv3_name(cv));
    static const vapo_conv_shape shapes[] = {
        {1, 32, 3, 3, 28, 28, 0},   {32, 1, 3, 2, 28, 28, 0},   {32, 32, 3, 3, 28, 28, 0}, {32, 64, 3, 2, 14, 14, 0},
        {64, 64, 3, 3, 14, 14, 0},  {64, 64, 3, 3, 7, 7, 0},    {128, 128, 3, 2, 8, 8, 0}, {128, 64, 3, 1, 32, 32, 0},
        {16, 16, 3, 5, 16, 16, 0},  {3, 5, 3, 2, 1, 1, 0},      {2, 3, 3, 2, 2, 3, 0},     {5, 7, 3, 3, 3, 5, 0},
        {7, 9, 3, 4, 4, 4, 0},      {17, 19, 3, 3, 9, 13, 0},   {24, 20, 3, 2, 31, 17, 0}, {33, 18, 3, 2, 15, 15, 1},
        {16, 48, 3, 3, 32, 32, 0},  {100, 20, 3, 2, 6, 29, 0},  {8, 8, 3, 7, 11, 4, 0},    {1, 1, 3, 1, 5, 5, 0},
    };
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        shape_case(cv, shapes[t]);
        /* the choice never depends on the batch */
        vapo_conv_shape a = shapes[t], b = shapes[t];
        a.batch = 1, b.batch = 64;
        conv3_set_algo(cv, CONV3_PICK);
        CHECK(conv3_uses_winograd(cv, &a) == conv3_uses_winograd(cv, &b), "choice depends on the batch");
    }
    version_case(cv);
    printf("largest error of winograd against direct, relative to the largest |output|: %.3g (tolerance %.1g)\n",
           worst, TOL);
    conv3_close(cv);
    return test_finish("test_conv_winograd");
}
