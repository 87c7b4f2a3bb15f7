/* Every op of the backend table (engine/include/vapo/backend.h), after
 * ggml's test-backend-ops, checked on fixed random inputs two ways:
 *
 *   cpu~naive       the CPU backend against naive loops written here in
 *                   double (direct convolution with padding, pooling, ...).
 *                   Always runs: it is what checks the CPU reference.
 *   cuda~cpu        the CUDA backend against the CPU backend, same inputs.
 *   cuda-nchw~cpu   the convolutions again with cuDNN forced onto NCHW
 *                   copies (VAPO_CUDA_CONV_LAYOUT=nchw), so both of the
 *                   CUDA backend's convolution paths are proven.
 *
 * Without a usable CUDA device the CUDA lines are replaced by "skipped: no
 * CUDA device (<reason>)" and the test passes on the CPU part alone, unless
 * VAPO_TEST_REQUIRE_CUDA=1 (bench/gpu_check.sh sets it on the GPU machine).
 *
 * The error of each output tensor is normalised, nmse = sum (ref - got)^2 /
 * sum ref^2, so one threshold per kind of op works at any magnitude. Outputs
 * of assigning ops start as NaN (an element left unwritten, or an output
 * read before it is written, fails); outputs of accumulating ops start
 * random (so "+=" versus "=" is checked). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vapo/backend.h"
#include "vapo/elementwise.h"
#include "vapo/error.h"
#include "vapo/layers.h"
#include "vapo/rng.h"

/* Tolerances on nmse, by what an op computes (float32 unit roundoff
 * u = 2^-24 = 6e-8; the smallest plausible bug, one wrong element among
 * 1e4, gives nmse >= ~1e-5):
 *  EXACT  data movement: the bits must match.
 *  ELEM   one float formula per element, the same source on both sides
 *         (elementwise.h); glibc and CUDA's erff/expf/logf/sinf differ by an
 *         ulp or two and FMA contraction may differ: expect ~1e-14.
 *  SUM    float sums of up to 2e4 terms against double: ~len*u^2/6 = 1e-11.
 *  GEMM   convolutions: float32 sums of cin*k*k (backward-filter: batch*h*w)
 *         products in different orders: expect ~1e-13..1e-11. TF32 tensor
 *         cores (10-bit mantissa) would give ~1e-7, so 1e-8 also catches
 *         TF32 slipping into the "float32" path.
 *  DOUBLE outputs an op writes as doubles: sums of float products in double
 *         in another order, rounding ~d 2^-53 relative at worst: nmse
 *         ~1e-28; a float accumulator gives ~1e-14, a wrong term far more. */
#define TOL_EXACT 0.0
#define TOL_ELEM 1e-10
#define TOL_SUM 1e-9
#define TOL_GEMM 1e-8
#define TOL_DOUBLE 1e-24

#define MAX_IN 6
#define MAX_OUT 5 /* optim_update: params, grad, m, v, ema */
#define SEED 20240611

typedef struct op_case op_case;
/* runs the op on backend memory; returns the scalar result of dot, else 0 */
typedef double (*op_run)(vapo_backend *be, const op_case *c, float *const *in, float *const *out);
/* the naive reference: ref[] arrive holding the outputs' initial contents */
typedef double (*op_naive)(const op_case *c, float *const *ref);

struct op_case {
    const char *op;
    char shape[96];
    double tol, tol_cuda; /* cpu~naive; cuda~cpu (new_case: the same) */
    int conv; /* also run on the forced-NCHW CUDA backend */
    /* parameters, as the op needs them */
    vapo_conv_shape cs;
    vapo_act act;
    size_t n, rows, len;
    int h, w, c, batch, hw;
    float alpha;
    uint64_t seed, stream, first; /* rng_normal */
    double scale, lambda;         /* loss_seeds */
    double atol, rtol;            /* rk_norm */
    int nk;                       /* rk_*: the stages, one input of nk blocks of n */
    double rk_c[VAPO_RK_MAX_TERMS];
    /* host tensors: inputs (NULL with size 0 for an absent optional one),
     * outputs with their initial contents; elements of *_size bytes (float,
     * or double, int, vapo_path_coef; outputs only float or double) */
    int nin, nout, has_scalar;
    float *in[MAX_IN];
    size_t in_n[MAX_IN], in_size[MAX_IN];
    float *out0[MAX_OUT];
    size_t out_n[MAX_OUT], out_size[MAX_OUT];
    const char *out_name[MAX_OUT];
    op_run run;
    op_naive naive;
};

static vapo_backend *cpu, *cuda, *cuda_nchw;
static int failures, checks;
static uint64_t next_stream = 1;

/* ---- host tensors --------------------------------------------------------- */

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "test_backend_ops: out of memory\n");
        exit(2);
    }
    return p;
}

/* n standard normals times scale, from a stream no other tensor uses */
static float *randn(size_t n, float scale)
{
    float *p = xmalloc(sizeof(float) * n);
    vapo_rng_normal(SEED, next_stream++, 0, n, p);
    for (size_t i = 0; i < n; i++)
        p[i] *= scale;
    return p;
}

static float *filled(size_t n, float v)
{
    float *p = xmalloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        p[i] = v;
    return p;
}

/* n uniforms in [lo, hi), from a stream no other tensor uses */
static double *uniform(size_t n, double lo, double hi)
{
    const uint64_t stream = next_stream++;
    double *p = xmalloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++)
        p[i] = lo + (hi - lo) * vapo_rng_uniform(SEED, stream, i);
    return p;
}

static float *uniform_float(size_t n, double lo, double hi)
{
    double *u = uniform(n, lo, hi);
    float *p = xmalloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        p[i] = (float)u[i];
    free(u);
    return p;
}

static void *copy_of(const void *src, size_t bytes)
{
    void *p = xmalloc(bytes);
    if (bytes)
        memcpy(p, src, bytes);
    return p;
}

/* an input of n elements of `size` bytes */
static void add_in_of(op_case *c, void *p, size_t n, size_t size)
{
    c->in[c->nin] = p;
    c->in_size[c->nin] = size;
    c->in_n[c->nin++] = n;
}

static void add_in(op_case *c, float *p, size_t n) { add_in_of(c, p, n, sizeof(float)); }

static void add_out_of(op_case *c, const char *name, void *init, size_t n, size_t size)
{
    c->out_name[c->nout] = name;
    c->out0[c->nout] = init;
    c->out_size[c->nout] = size;
    c->out_n[c->nout++] = n;
}

/* init: the output's starting contents (taken over), or NULL for NaN */
static void add_out(op_case *c, const char *name, float *init, size_t n)
{
    add_out_of(c, name, init ? init : filled(n, NAN), n, sizeof(float));
}

/* an output of n doubles, starting as NaN */
static void add_out_double(op_case *c, const char *name, size_t n)
{
    double *p = xmalloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
    add_out_of(c, name, p, n, sizeof(double));
}

static void case_free(op_case *c)
{
    for (int i = 0; i < c->nin; i++)
        free(c->in[i]);
    for (int o = 0; o < c->nout; o++)
        free(c->out0[o]);
}

/* ---- running and comparing ----------------------------------------------- */

/* Runs c on be: uploads inputs and the outputs' initial contents, runs the
 * op, downloads the outputs into got[] (allocated here). */
static int exec(vapo_backend *be, const op_case *c, float **got, double *scalar)
{
    float *din[MAX_IN] = {0}, *dout[MAX_OUT] = {0};
    int ok = 1;
    for (int i = 0; i < c->nin && ok; i++)
        if (c->in_n[i]) {
            ok = (din[i] = be->alloc(be, c->in_size[i] * c->in_n[i])) != NULL;
            if (ok)
                be->upload(be, din[i], c->in[i], c->in_size[i] * c->in_n[i]);
        }
    for (int o = 0; o < c->nout; o++) {
        const size_t bytes = c->out_size[o] * c->out_n[o];
        got[o] = xmalloc(bytes);
        if (ok && bytes) {
            ok = (dout[o] = be->alloc(be, bytes)) != NULL;
            if (ok)
                be->upload(be, dout[o], c->out0[o], bytes);
        }
    }
    if (ok) {
        *scalar = c->run(be, c, din, dout);
        be->sync(be);
        for (int o = 0; o < c->nout; o++)
            if (c->out_n[o])
                be->download(be, got[o], dout[o], c->out_size[o] * c->out_n[o]);
    } else {
        printf("%-13s %-26s %s: allocation failed: %s\n", be->name, c->op, c->shape, vapo_last_error());
        failures++;
    }
    for (int i = 0; i < c->nin; i++)
        be->free(be, din[i]);
    for (int o = 0; o < c->nout; o++)
        be->free(be, dout[o]);
    return ok;
}

/* element i of an array of floats (size 4) or doubles (size 8) */
static double elem(const float *p, size_t size, size_t i)
{
    return size == sizeof(double) ? ((const double *)p)[i] : p[i];
}

static double nmse(const float *ref, const float *got, size_t n, size_t size, size_t *worst)
{
    double num = 0.0, den = 0.0, big = -1.0;
    *worst = 0;
    for (size_t i = 0; i < n; i++) {
        const double r = elem(ref, size, i), d = r - elem(got, size, i);
        num += d * d;
        den += r * r;
        if (!(fabs(d) <= big)) { /* NaN counts as worst */
            big = isnan(d) ? INFINITY : fabs(d);
            *worst = i;
        }
    }
    return den > 0.0 ? num / den : num;
}

static void report(const char *pair, const char *name, const char *shape, double e, double tol)
{
    const int ok = e <= tol; /* false for NaN */
    printf("%-13s %-26s %-44s nmse=%9.2e tol=%.0e  %s\n", pair, name, shape, e, tol, ok ? "OK" : "FAIL");
    checks++;
    failures += !ok;
}

/* tol: the case's for this pair; double outputs always at TOL_DOUBLE */
static void compare(const char *pair, const op_case *c, double tol, float *const *ref, double ref_scalar,
                    float *const *got, double got_scalar)
{
    char name[64];
    for (int o = 0; o < c->nout; o++) {
        if (!c->out_n[o])
            continue; /* an absent optional output */
        const size_t size = c->out_size[o];
        const double t = size == sizeof(double) ? TOL_DOUBLE : tol;
        const int digits = size == sizeof(double) ? 17 : 9;
        size_t worst;
        const double e = nmse(ref[o], got[o], c->out_n[o], size, &worst);
        snprintf(name, sizeof name, "%s%s%s", c->op, c->nout > 1 ? "." : "", c->nout > 1 ? c->out_name[o] : "");
        report(pair, name, c->shape, e, t);
        if (!(e <= t))
            printf("    worst element %zu of %zu: want %.*g, got %.*g\n", worst, c->out_n[o], digits,
                   elem(ref[o], size, worst), digits, elem(got[o], size, worst));
    }
    if (c->has_scalar) {
        const double d = ref_scalar - got_scalar;
        const double e = ref_scalar != 0.0 ? d * d / (ref_scalar * ref_scalar) : d * d;
        report(pair, c->op, c->shape, e, tol);
        if (!(e <= tol))
            printf("    want %.17g, got %.17g\n", ref_scalar, got_scalar);
    }
}

static void free_outs(const op_case *c, float **outs)
{
    for (int o = 0; o < c->nout; o++)
        free(outs[o]);
}

/* cpu~naive, then cuda~cpu (and cuda-nchw~cpu for convolutions) */
static void run_case(op_case *c)
{
    float *ref[MAX_OUT], *want[MAX_OUT], *got[MAX_OUT];
    double ref_scalar, want_scalar = 0.0, got_scalar = 0.0;
    for (int o = 0; o < c->nout; o++)
        ref[o] = copy_of(c->out0[o], c->out_size[o] * c->out_n[o]);
    ref_scalar = c->naive(c, ref);
    if (exec(cpu, c, want, &want_scalar)) {
        compare("cpu~naive", c, c->tol, ref, ref_scalar, want, want_scalar);
        if (cuda && exec(cuda, c, got, &got_scalar)) {
            compare("cuda~cpu", c, c->tol_cuda, want, want_scalar, got, got_scalar);
            free_outs(c, got);
        }
        if (cuda_nchw && c->conv && exec(cuda_nchw, c, got, &got_scalar)) {
            compare("cuda-nchw~cpu", c, c->tol_cuda, want, want_scalar, got, got_scalar);
            free_outs(c, got);
        }
    }
    free_outs(c, want);
    free_outs(c, ref);
    case_free(c);
}

static op_case new_case(const char *op, double tol, op_run run, op_naive naive)
{
    op_case c;
    memset(&c, 0, sizeof c);
    c.op = op;
    c.tol = c.tol_cuda = tol;
    c.run = run;
    c.naive = naive;
    return c;
}

/* ---- memory: copy, zero, alloc returns zeroes -------------------------------- */

static double run_copy(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->copy(be, out[0], in[0], sizeof(float) * c->n);
    return 0.0;
}

static double run_zero(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    (void)in;
    be->zero(be, out[0], sizeof(float) * c->n);
    return 0.0;
}

/* A fresh allocation, made where a dirty one was just freed, must read 0. */
static double run_alloc_zeroed(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    const size_t bytes = sizeof(float) * c->n;
    float *dirty = be->alloc(be, bytes);
    if (dirty) {
        be->upload(be, dirty, c->in[0], bytes);
        be->free(be, dirty);
    }
    (void)in;
    float *fresh = be->alloc(be, bytes);
    if (fresh) {
        be->copy(be, out[0], fresh, bytes);
        be->sync(be);
        be->free(be, fresh);
    }
    return 0.0;
}

static double naive_copy(const op_case *c, float *const *ref)
{
    memcpy(ref[0], c->in[0], sizeof(float) * c->n);
    return 0.0;
}

static double naive_zero(const op_case *c, float *const *ref)
{
    memset(ref[0], 0, sizeof(float) * c->n);
    return 0.0;
}

static void memory_cases(void)
{
    const size_t n = 1001;
    op_case c = new_case("copy", TOL_EXACT, run_copy, naive_copy);
    c.n = n;
    snprintf(c.shape, sizeof c.shape, "n=%zu", n);
    add_in(&c, randn(n, 1.0f), n);
    add_out(&c, "y", NULL, n);
    run_case(&c);

    c = new_case("zero", TOL_EXACT, run_zero, naive_zero);
    c.n = n;
    snprintf(c.shape, sizeof c.shape, "n=%zu", n);
    add_out(&c, "y", randn(n, 1.0f), n);
    run_case(&c);

    c = new_case("alloc(zeroed)", TOL_EXACT, run_alloc_zeroed, naive_zero);
    c.n = 4099;
    snprintf(c.shape, sizeof c.shape, "n=%zu", c.n);
    add_in(&c, randn(c.n, 1.0f), c.n); /* the dirty contents */
    add_out(&c, "y", NULL, c.n);
    run_case(&c);
}

/* ---- convolutions ------------------------------------------------------------ */

/* naive index helpers: CNHW activations, [cout][cin][k][k] weights */
static size_t act_at(const vapo_conv_shape *s, int ch, int b, int i, int j)
{
    return ((size_t)ch * s->batch + b) * s->h * s->w + (size_t)i * s->w + j;
}

static size_t weight_at(const vapo_conv_shape *s, int co, int ci, int ky, int kx)
{
    return (((size_t)co * s->cin + ci) * s->k + ky) * s->k + kx;
}

static double naive_conv_forward(const op_case *c, float *const *ref)
{
    const vapo_conv_shape *s = &c->cs;
    const float *x = c->in[0], *w = c->in[1], *bias = c->in[2];
    const int p = s->k / 2;
    for (int co = 0; co < s->cout; co++)
        for (int b = 0; b < s->batch; b++)
            for (int i = 0; i < s->h; i++)
                for (int j = 0; j < s->w; j++) {
                    double acc = bias ? bias[co] : 0.0;
                    for (int ci = 0; ci < s->cin; ci++)
                        for (int ky = 0; ky < s->k; ky++)
                            for (int kx = 0; kx < s->k; kx++) {
                                const int yy = i + ky - p, xx = j + kx - p;
                                if (yy >= 0 && yy < s->h && xx >= 0 && xx < s->w)
                                    acc += (double)w[weight_at(s, co, ci, ky, kx)] * x[act_at(s, ci, b, yy, xx)];
                            }
                    ref[0][act_at(s, co, b, i, j)] = (float)acc;
                }
    return 0.0;
}

/* dx[ci, b, yy, xx] += sum over (co, ky, kx) of w[co, ci, ky, kx] * dy at the
 * output pixel that read x[ci, b, yy, xx] through tap (ky, kx) */
static double naive_conv_backward_data(const op_case *c, float *const *ref)
{
    const vapo_conv_shape *s = &c->cs;
    const float *dy = c->in[0], *w = c->in[1];
    const int p = s->k / 2;
    for (int ci = 0; ci < s->cin; ci++)
        for (int b = 0; b < s->batch; b++)
            for (int yy = 0; yy < s->h; yy++)
                for (int xx = 0; xx < s->w; xx++) {
                    double acc = 0.0;
                    for (int co = 0; co < s->cout; co++)
                        for (int ky = 0; ky < s->k; ky++)
                            for (int kx = 0; kx < s->k; kx++) {
                                const int i = yy - ky + p, j = xx - kx + p;
                                if (i >= 0 && i < s->h && j >= 0 && j < s->w)
                                    acc += (double)w[weight_at(s, co, ci, ky, kx)] * dy[act_at(s, co, b, i, j)];
                            }
                    float *r = &ref[0][act_at(s, ci, b, yy, xx)];
                    *r = (float)((double)*r + acc);
                }
    return 0.0;
}

static double naive_conv_backward_filter(const op_case *c, float *const *ref)
{
    const vapo_conv_shape *s = &c->cs;
    const float *dy = c->in[0], *x = c->in[1];
    const int p = s->k / 2;
    for (int co = 0; co < s->cout; co++) {
        for (int ci = 0; ci < s->cin; ci++)
            for (int ky = 0; ky < s->k; ky++)
                for (int kx = 0; kx < s->k; kx++) {
                    double acc = 0.0;
                    for (int b = 0; b < s->batch; b++)
                        for (int i = 0; i < s->h; i++)
                            for (int j = 0; j < s->w; j++) {
                                const int yy = i + ky - p, xx = j + kx - p;
                                if (yy >= 0 && yy < s->h && xx >= 0 && xx < s->w)
                                    acc += (double)dy[act_at(s, co, b, i, j)] * x[act_at(s, ci, b, yy, xx)];
                            }
                    float *r = &ref[0][weight_at(s, co, ci, ky, kx)];
                    *r = (float)((double)*r + acc);
                }
        if (c->out_n[1]) {
            double acc = 0.0;
            for (int b = 0; b < s->batch; b++)
                for (int i = 0; i < s->h; i++)
                    for (int j = 0; j < s->w; j++)
                        acc += dy[act_at(s, co, b, i, j)];
            ref[1][co] = (float)((double)ref[1][co] + acc);
        }
    }
    return 0.0;
}

static double run_conv_forward(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->conv_forward(be, &c->cs, out[0], in[0], in[1], in[2]);
    return 0.0;
}

static double run_conv_backward_data(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->conv_backward_data(be, &c->cs, out[0], in[0], in[1]);
    return 0.0;
}

/* dx = W^T dy through vapo_conv_bwd (conv_backward_data_set where the backend
 * has it): dx's old contents (random) must not show */
static double run_conv_backward_data_set(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    vapo_conv_bwd(be, &c->cs, out[0], in[0], in[1]);
    return 0.0;
}

static double naive_conv_backward_data_set(const op_case *c, float *const *ref)
{
    const vapo_conv_shape *s = &c->cs;
    memset(ref[0], 0, sizeof(float) * s->cin * s->batch * s->h * s->w);
    return naive_conv_backward_data(c, ref);
}

static double run_conv_backward_filter(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->conv_backward_filter(be, &c->cs, out[0], out[1], in[0], in[1]);
    return 0.0;
}

static void conv_cases(void)
{
    /* odd sizes, one image and several, k = 1 and 3, cin != cout, 1x1 and
     * 2x3 images (every tap hits padding), a shape whose CPU im2col works in
     * chunks (19 images, one per chunk), and one whose single image needs more
     * than the CPU's chunk budget (the scratch grows) */
    static const vapo_conv_shape shapes[] = {
        {3, 8, 3, 1, 5, 7, 0}, {4, 6, 3, 3, 9, 6, 0},   {8, 5, 1, 2, 7, 5, 0},   {5, 7, 3, 2, 1, 1, 0},
        {2, 3, 3, 2, 2, 3, 0}, {16, 32, 3, 4, 8, 8, 0}, {32, 16, 1, 3, 8, 8, 0}, {24, 20, 3, 19, 32, 32, 0},
        {32, 8, 3, 2, 40, 40, 0},
    };
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const vapo_conv_shape s = shapes[t];
        const size_t n = (size_t)s.batch * s.h * s.w, nx = (size_t)s.cin * n, ny = (size_t)s.cout * n;
        const size_t nw = (size_t)s.cout * s.cin * s.k * s.k;
        const int with_bias = t % 2 == 0;
        char shape[64];
        snprintf(shape, sizeof shape, "cin=%d cout=%d k=%d batch=%d %dx%d", s.cin, s.cout, s.k, s.batch, s.h, s.w);

        op_case c = new_case("conv_forward", TOL_GEMM, run_conv_forward, naive_conv_forward);
        c.cs = s;
        c.conv = 1;
        snprintf(c.shape, sizeof c.shape, "%s%s", shape, with_bias ? " +bias" : "");
        add_in(&c, randn(nx, 1.0f), nx);
        add_in(&c, randn(nw, 0.5f), nw);
        add_in(&c, with_bias ? randn(s.cout, 1.0f) : NULL, with_bias ? (size_t)s.cout : 0);
        add_out(&c, "y", NULL, ny);
        run_case(&c);

        for (int set = 0; set < 2; set++) { /* dx += W^T dy, and dx = W^T dy */
            c = set ? new_case("conv_backward_data_set", TOL_GEMM, run_conv_backward_data_set,
                               naive_conv_backward_data_set)
                    : new_case("conv_backward_data", TOL_GEMM, run_conv_backward_data, naive_conv_backward_data);
            c.cs = s;
            c.conv = 1;
            snprintf(c.shape, sizeof c.shape, "%s", shape);
            add_in(&c, randn(ny, 1.0f), ny);
            add_in(&c, randn(nw, 0.5f), nw);
            add_out(&c, "dx", randn(nx, 1.0f), nx);
            run_case(&c);
        }

        c = new_case("conv_backward_filter", TOL_GEMM, run_conv_backward_filter, naive_conv_backward_filter);
        c.cs = s;
        c.conv = 1;
        snprintf(c.shape, sizeof c.shape, "%s%s", shape, with_bias ? "" : " +db");
        add_in(&c, randn(ny, 1.0f), ny);
        add_in(&c, randn(nx, 1.0f), nx);
        add_out(&c, "dw", randn(nw, 1.0f), nw);
        add_out(&c, "db", with_bias ? NULL : randn(s.cout, 1.0f), with_bias ? 0 : (size_t)s.cout);
        run_case(&c);
    }
}

/* Batch invariance (backend.h): an image's forward and data-adjoint
 * convolutions must be the same bits whatever the batch around it and its
 * place in it. Each image of a batch is run again alone and compared bit for
 * bit; the weight gradient, which sums over the batch, must at least repeat
 * exactly. The shapes cover a tile boundary inside an image (28 x 28), odd
 * channel counts (blocks of output channels with a remainder), 1x1
 * images, and 1x1 convolutions: heads (one output channel), dense layers on
 * one column per image, and the anchor's product (batch as output channels).
 * The "error" printed is the number of elements that differ. */
static size_t differing(const float *a, const float *b, size_t n)
{
    size_t d = 0;
    for (size_t i = 0; i < n; i++)
        d += memcmp(a + i, b + i, sizeof(float)) != 0;
    return d;
}

/* host memory: the CPU backend only */
static void conv_invariance_case(vapo_backend *be, const char *pair, vapo_conv_shape s)
{
    const int batch = s.batch;
    const size_t hw = (size_t)s.h * s.w, n = batch * hw, nw = (size_t)s.cout * s.cin * s.k * s.k;
    float *x = randn(s.cin * n, 1.0f), *dy = randn(s.cout * n, 1.0f), *w = randn(nw, 0.5f), *b = randn(s.cout, 1.0f);
    float *y = xmalloc(sizeof(float) * s.cout * n), *dx = xmalloc(sizeof(float) * s.cin * n);
    float *x1 = xmalloc(sizeof(float) * s.cin * hw), *dy1 = xmalloc(sizeof(float) * s.cout * hw);
    float *y1 = xmalloc(sizeof(float) * s.cout * hw), *dx1 = xmalloc(sizeof(float) * s.cin * hw);
    float *dw = xmalloc(sizeof(float) * nw), *dw2 = xmalloc(sizeof(float) * nw);
    be->conv_forward(be, &s, y, x, w, b);
    memset(dx, 0, sizeof(float) * s.cin * n);
    be->conv_backward_data(be, &s, dx, dy, w);
    size_t dfwd = 0, dbwd = 0;
    vapo_conv_shape one = s;
    one.batch = 1;
    for (int i = 0; i < batch; i++) {
        for (int c = 0; c < s.cin; c++)
            memcpy(x1 + c * hw, x + c * n + i * hw, sizeof(float) * hw);
        for (int c = 0; c < s.cout; c++)
            memcpy(dy1 + c * hw, dy + c * n + i * hw, sizeof(float) * hw);
        be->conv_forward(be, &one, y1, x1, w, b);
        memset(dx1, 0, sizeof(float) * s.cin * hw);
        be->conv_backward_data(be, &one, dx1, dy1, w);
        for (int c = 0; c < s.cout; c++)
            dfwd += differing(y1 + c * hw, y + c * n + i * hw, hw);
        for (int c = 0; c < s.cin; c++)
            dbwd += differing(dx1 + c * hw, dx + c * n + i * hw, hw);
    }
    memset(dw, 0, sizeof(float) * nw);
    memset(dw2, 0, sizeof(float) * nw);
    be->conv_backward_filter(be, &s, dw, NULL, dy, x);
    be->conv_backward_filter(be, &s, dw2, NULL, dy, x);
    char shape[64];
    snprintf(shape, sizeof shape, "cin=%d cout=%d k=%d batch=%d %dx%d", s.cin, s.cout, s.k, batch, s.h, s.w);
    report(pair, "conv_forward:alone~batch", shape, (double)dfwd, TOL_EXACT);
    report(pair, "conv_backward_data:alone~b", shape, (double)dbwd, TOL_EXACT);
    report(pair, "conv_backward_filter:again", shape, (double)differing(dw, dw2, nw), TOL_EXACT);
    free(x), free(dy), free(w), free(b), free(y), free(dx), free(x1), free(dy1), free(y1), free(dx1);
    free(dw), free(dw2);
}

static void conv_invariance_cases(void)
{
    static const vapo_conv_shape shapes[] = {
        {5, 7, 3, 5, 28, 28, 0}, {32, 33, 3, 3, 7, 7, 0}, {3, 2, 3, 4, 1, 1, 0}, {1, 32, 3, 3, 13, 9, 0},
        {64, 1, 1, 5, 7, 7, 0},  {200, 33, 1, 7, 1, 1, 0}, {2, 64, 1, 9, 1, 1, 0}, {784, 6, 1, 1, 1, 1, 0},
    };
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++)
        conv_invariance_case(cpu, "cpu", shapes[t]);
}

/* ---- activations ------------------------------------------------------------- */

static const char *act_name(vapo_act a) { return a == VAPO_ACT_GELU ? "gelu" : a == VAPO_ACT_SILU ? "silu" : "relu"; }

/* The activations from their definitions, in double. */
static double ref_act(vapo_act a, double x)
{
    if (a == VAPO_ACT_GELU)
        return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    if (a == VAPO_ACT_SILU)
        return x / (1.0 + exp(-x));
    return x > 0.0 ? x : 0.0;
}

/* Derivatives by fourth-order central differences of ref_act, so the
 * closed forms in elementwise.h are checked against the function itself
 * (error ~1e-12 for f', ~1e-9 for f''). ReLU's are exact. */
static double ref_d1(vapo_act a, double x)
{
    if (a == VAPO_ACT_RELU)
        return x > 0.0 ? 1.0 : 0.0;
    const double h = 1e-3;
    return (-ref_act(a, x + 2 * h) + 8 * ref_act(a, x + h) - 8 * ref_act(a, x - h) + ref_act(a, x - 2 * h)) / (12 * h);
}

static double ref_d2(vapo_act a, double x)
{
    if (a == VAPO_ACT_RELU)
        return 0.0;
    const double h = 1e-2;
    return (-ref_act(a, x + 2 * h) + 16 * ref_act(a, x + h) - 30 * ref_act(a, x) + 16 * ref_act(a, x - h) -
            ref_act(a, x - 2 * h)) /
           (12 * h * h);
}

static double naive_act_forward(const op_case *c, float *const *ref)
{
    for (size_t i = 0; i < c->n; i++)
        ref[0][i] = (float)ref_act(c->act, c->in[0][i]);
    return 0.0;
}

static double naive_act_tangent(const op_case *c, float *const *ref) /* also backward: f'(x) * v */
{
    for (size_t i = 0; i < c->n; i++)
        ref[0][i] = (float)(ref_d1(c->act, c->in[0][i]) * c->in[1][i]);
    return 0.0;
}

static double naive_act_dual_backward(const op_case *c, float *const *ref)
{
    const float *x = c->in[0], *xdot = c->in[1], *dy = c->in[2], *dydot = c->in[3];
    for (size_t i = 0; i < c->n; i++) {
        const double d1 = ref_d1(c->act, x[i]), d2 = ref_d2(c->act, x[i]);
        ref[0][i] = (float)(d1 * dy[i] + d2 * xdot[i] * dydot[i]);
        ref[1][i] = (float)(d1 * dydot[i]);
    }
    return 0.0;
}

static double run_act_forward(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->act_forward(be, c->act, c->n, out[0], in[0]);
    return 0.0;
}

static double run_act_tangent(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->act_tangent(be, c->act, c->n, out[0], in[0], in[1]);
    return 0.0;
}

static double run_act_backward(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->act_backward(be, c->act, c->n, out[0], in[0], in[1]);
    return 0.0;
}

static double run_act_dual_backward(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->act_dual_backward(be, c->act, c->n, out[0], out[1], in[0], in[1], in[2], in[3]);
    return 0.0;
}

static void act_cases(void)
{
    static const size_t sizes[] = {0, 1000, 65537};
    for (int a = VAPO_ACT_GELU; a <= VAPO_ACT_RELU; a++)
        for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
            const size_t n = sizes[t];
            char shape[96];
            snprintf(shape, sizeof shape, "%s n=%zu", act_name((vapo_act)a), n);

            op_case c = new_case("act_forward", TOL_ELEM, run_act_forward, naive_act_forward);
            c.act = (vapo_act)a;
            c.n = n;
            snprintf(c.shape, sizeof c.shape, "%s", shape);
            add_in(&c, randn(n, 3.0f), n);
            add_out(&c, "y", NULL, n);
            run_case(&c);

            c = new_case("act_tangent", TOL_ELEM, run_act_tangent, naive_act_tangent);
            c.act = (vapo_act)a;
            c.n = n;
            snprintf(c.shape, sizeof c.shape, "%s", shape);
            add_in(&c, randn(n, 3.0f), n);
            add_in(&c, randn(n, 1.0f), n);
            add_out(&c, "ydot", NULL, n);
            run_case(&c);

            c = new_case("act_backward", TOL_ELEM, run_act_backward, naive_act_tangent);
            c.act = (vapo_act)a;
            c.n = n;
            snprintf(c.shape, sizeof c.shape, "%s", shape);
            add_in(&c, randn(n, 3.0f), n);
            add_in(&c, randn(n, 1.0f), n);
            add_out(&c, "dx", NULL, n);
            run_case(&c);

            c = new_case("act_dual_backward", TOL_ELEM, run_act_dual_backward, naive_act_dual_backward);
            c.act = (vapo_act)a;
            c.n = n;
            snprintf(c.shape, sizeof c.shape, "%s", shape);
            add_in(&c, randn(n, 3.0f), n);
            add_in(&c, randn(n, 1.0f), n);
            add_in(&c, randn(n, 1.0f), n);
            add_in(&c, randn(n, 1.0f), n);
            add_out(&c, "dx", NULL, n);
            add_out(&c, "dxdot", NULL, n);
            run_case(&c);
        }
}

/* elementwise.h's polynomial exp, which every GELU and SiLU pass uses on both
 * backends: against libm's double exp over its whole range, 0 below it, NaN
 * through. The error column is the worst relative error. */
static void exp_cases(void)
{
    double worst = 0.0;
    for (int i = 0; i <= 1000000; i++) {
        const float x = -87.0f + 175.0f * (float)i / 1000000.0f;
        const double want = exp((double)x), e = fabs(vapo_exp(x) - want) / want;
        if (!(e <= worst)) /* NaN counts as worst */
            worst = isnan(e) ? INFINITY : e;
    }
    report("host~libm", "vapo_exp", "x in [-87, 88], 1e6 points", worst, 2e-7);
    const int edges = vapo_exp(-90.0f) == 0.0f && vapo_exp(-INFINITY) == 0.0f && isnan(vapo_exp(NAN)) &&
                      isfinite(vapo_exp(1000.0f)) && vapo_exp(0.0f) == 1.0f;
    report("host~libm", "vapo_exp", "-90, -inf -> 0; NaN -> NaN; 0 -> 1", edges ? 0.0 : 1.0, 0.0);
}

/* ---- pooling ---------------------------------------------------------------------- */

static double naive_avgpool2_forward(const op_case *c, float *const *ref)
{
    const int h = c->h, w = c->w, ho = h / 2, wo = w / 2;
    for (size_t p = 0; p < c->rows; p++)
        for (int i = 0; i < ho; i++)
            for (int j = 0; j < wo; j++) {
                double acc = 0.0;
                for (int di = 0; di < 2; di++)
                    for (int dj = 0; dj < 2; dj++)
                        acc += c->in[0][(p * h + 2 * i + di) * w + 2 * j + dj];
                ref[0][(p * ho + i) * wo + j] = (float)(acc / 4.0);
            }
    return 0.0;
}

static double naive_avgpool2_backward(const op_case *c, float *const *ref)
{
    const int h = c->h, w = c->w, ho = h / 2, wo = w / 2;
    memset(ref[0], 0, sizeof(float) * c->rows * h * w);
    for (size_t p = 0; p < c->rows; p++)
        for (int i = 0; i < ho; i++)
            for (int j = 0; j < wo; j++)
                for (int di = 0; di < 2; di++)
                    for (int dj = 0; dj < 2; dj++)
                        ref[0][(p * h + 2 * i + di) * w + 2 * j + dj] = (float)(c->in[0][(p * ho + i) * wo + j] / 4.0);
    return 0.0;
}

static double run_avgpool2_forward(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->avgpool2_forward(be, c->rows, c->h, c->w, out[0], in[0]);
    return 0.0;
}

static double run_avgpool2_backward(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->avgpool2_backward(be, c->rows, c->h, c->w, out[0], in[0]);
    return 0.0;
}

static double naive_upsample2_forward(const op_case *c, float *const *ref)
{
    const int h = c->h, w = c->w;
    for (size_t p = 0; p < c->rows; p++)
        for (int i = 0; i < 2 * h; i++)
            for (int j = 0; j < 2 * w; j++)
                ref[0][(p * 2 * h + i) * 2 * w + j] = c->in[0][(p * h + i / 2) * w + j / 2];
    return 0.0;
}

static double naive_upsample2_backward(const op_case *c, float *const *ref)
{
    const int h = c->h, w = c->w;
    for (size_t p = 0; p < c->rows; p++)
        for (int i = 0; i < h; i++)
            for (int j = 0; j < w; j++) {
                double acc = 0.0;
                for (int di = 0; di < 2; di++)
                    for (int dj = 0; dj < 2; dj++)
                        acc += c->in[0][(p * 2 * h + 2 * i + di) * 2 * w + 2 * j + dj];
                ref[0][(p * h + i) * w + j] = (float)acc;
            }
    return 0.0;
}

static double run_upsample2_forward(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->upsample2_forward(be, c->rows, c->h, c->w, out[0], in[0]);
    return 0.0;
}

static double run_upsample2_backward(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->upsample2_backward(be, c->rows, c->h, c->w, out[0], in[0]);
    return 0.0;
}

/* Upsampling is a copy (exact); its adjoint sums four values (pooling's tolerance). */
static void upsample_cases(void)
{
    static const struct {
        size_t planes;
        int h, w;
    } shapes[] = {{6, 5, 7}, {40, 7, 7}, {3, 1, 1}, {70000, 2, 3}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const size_t planes = shapes[t].planes;
        const int h = shapes[t].h, w = shapes[t].w;
        const size_t nx = planes * h * w, ny = 4 * nx;

        op_case c = new_case("upsample2_forward", TOL_EXACT, run_upsample2_forward, naive_upsample2_forward);
        c.rows = planes;
        c.h = h;
        c.w = w;
        snprintf(c.shape, sizeof c.shape, "planes=%zu %dx%d", planes, h, w);
        add_in(&c, randn(nx, 1.0f), nx);
        add_out(&c, "y", NULL, ny);
        run_case(&c);

        c = new_case("upsample2_backward", TOL_ELEM, run_upsample2_backward, naive_upsample2_backward);
        c.rows = planes;
        c.h = h;
        c.w = w;
        snprintf(c.shape, sizeof c.shape, "planes=%zu %dx%d", planes, h, w);
        add_in(&c, randn(ny, 1.0f), ny);
        add_out(&c, "dx", NULL, nx);
        run_case(&c);
    }
}

static void pool_cases(void)
{
    static const struct {
        size_t planes;
        int h, w;
    } shapes[] = {{6, 5, 7}, {40, 8, 8}, {3, 1, 1}, {70000, 2, 3}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const size_t planes = shapes[t].planes;
        const int h = shapes[t].h, w = shapes[t].w;
        const size_t nx = planes * h * w, ny = planes * (h / 2) * (w / 2);

        op_case c = new_case("avgpool2_forward", TOL_ELEM, run_avgpool2_forward, naive_avgpool2_forward);
        c.rows = planes;
        c.h = h;
        c.w = w;
        snprintf(c.shape, sizeof c.shape, "planes=%zu %dx%d", planes, h, w);
        add_in(&c, randn(nx, 1.0f), nx);
        add_out(&c, "y", NULL, ny);
        run_case(&c);

        c = new_case("avgpool2_backward", TOL_ELEM, run_avgpool2_backward, naive_avgpool2_backward);
        c.rows = planes;
        c.h = h;
        c.w = w;
        snprintf(c.shape, sizeof c.shape, "planes=%zu %dx%d", planes, h, w);
        add_in(&c, randn(ny, 1.0f), ny);
        add_out(&c, "dx", NULL, nx);
        run_case(&c);
    }
}

/* ---- rowsum, scale ------------------------------------------------------------ */

static double naive_rowsum_forward(const op_case *c, float *const *ref)
{
    for (size_t r = 0; r < c->rows; r++) {
        double acc = 0.0;
        for (size_t j = 0; j < c->len; j++)
            acc += c->in[0][r * c->len + j];
        ref[0][r] = (float)acc;
    }
    return 0.0;
}

static double naive_rowsum_backward(const op_case *c, float *const *ref)
{
    for (size_t r = 0; r < c->rows; r++)
        for (size_t j = 0; j < c->len; j++)
            ref[0][r * c->len + j] = c->in[0][r];
    return 0.0;
}

static double naive_scale_forward(const op_case *c, float *const *ref)
{
    for (size_t r = 0; r < c->rows; r++)
        for (size_t j = 0; j < c->len; j++)
            ref[0][r * c->len + j] = (float)((double)c->in[1][r] * c->in[0][r * c->len + j]);
    return 0.0;
}

static double naive_scale_backward_param(const op_case *c, float *const *ref)
{
    for (size_t r = 0; r < c->rows; r++) {
        double acc = 0.0;
        for (size_t j = 0; j < c->len; j++)
            acc += (double)c->in[0][r * c->len + j] * c->in[1][r * c->len + j];
        ref[0][r] = (float)((double)ref[0][r] + acc);
    }
    return 0.0;
}

static double run_rowsum_forward(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->rowsum_forward(be, c->rows, c->len, out[0], in[0]);
    return 0.0;
}

static double run_rowsum_backward(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->rowsum_backward(be, c->rows, c->len, out[0], in[0]);
    return 0.0;
}

static double run_scale_forward(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->scale_forward(be, (int)c->rows, c->len, out[0], in[0], in[1]);
    return 0.0;
}

static double run_scale_backward_param(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->scale_backward_param(be, (int)c->rows, c->len, out[0], in[0], in[1]);
    return 0.0;
}

static void row_cases(void)
{
    /* short rows (spatial sum pooling of small maps), one-element rows, and
     * few long rows (the CUDA reduction splits those across blocks) */
    static const struct {
        size_t rows, len;
    } shapes[] = {{12, 49}, {3, 1}, {2048, 64}, {5, 20000}, {1, 4097}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const size_t rows = shapes[t].rows, len = shapes[t].len, n = rows * len;
        char shape[96];
        snprintf(shape, sizeof shape, "rows=%zu len=%zu", rows, len);

        op_case c = new_case("rowsum_forward", TOL_SUM, run_rowsum_forward, naive_rowsum_forward);
        c.rows = rows;
        c.len = len;
        snprintf(c.shape, sizeof c.shape, "%s", shape);
        add_in(&c, randn(n, 1.0f), n);
        add_out(&c, "y", NULL, rows);
        run_case(&c);

        c = new_case("rowsum_backward", TOL_EXACT, run_rowsum_backward, naive_rowsum_backward);
        c.rows = rows;
        c.len = len;
        snprintf(c.shape, sizeof c.shape, "%s", shape);
        add_in(&c, randn(rows, 1.0f), rows);
        add_out(&c, "dx", NULL, n);
        run_case(&c);

        c = new_case("scale_forward", TOL_ELEM, run_scale_forward, naive_scale_forward);
        c.rows = rows;
        c.len = len;
        snprintf(c.shape, sizeof c.shape, "c=%zu n=%zu", rows, len);
        add_in(&c, randn(n, 1.0f), n);
        add_in(&c, randn(rows, 1.0f), rows);
        add_out(&c, "y", NULL, n);
        run_case(&c);

        c = new_case("scale_backward_param", TOL_SUM, run_scale_backward_param, naive_scale_backward_param);
        c.rows = rows;
        c.len = len;
        snprintf(c.shape, sizeof c.shape, "c=%zu n=%zu", rows, len);
        add_in(&c, randn(n, 1.0f), n);
        add_in(&c, randn(n, 1.0f), n);
        add_out(&c, "ds", randn(rows, 1.0f), rows);
        run_case(&c);
    }
}

/* ---- axpy, add, dot --------------------------------------------------------------- */

static double naive_axpy(const op_case *c, float *const *ref)
{
    for (size_t i = 0; i < c->n; i++)
        ref[0][i] = (float)((double)ref[0][i] + (double)c->alpha * c->in[0][i]);
    return 0.0;
}

static double naive_add(const op_case *c, float *const *ref)
{
    for (size_t i = 0; i < c->n; i++)
        ref[0][i] = (float)((double)c->in[0][i] + c->in[1][i]);
    return 0.0;
}

static double naive_dot(const op_case *c, float *const *ref)
{
    (void)ref;
    double acc = 0.0;
    for (size_t i = 0; i < c->n; i++)
        acc += (double)c->in[0][i] * c->in[1][i];
    return acc;
}

static double run_axpy(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->axpy(be, c->n, c->alpha, in[0], out[0]);
    return 0.0;
}

static double run_add(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->add(be, c->n, out[0], in[0], in[1]);
    return 0.0;
}

static double run_dot(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    (void)out;
    return be->dot(be, c->n, in[0], in[1]);
}

static void vector_cases(void)
{
    static const size_t sizes[] = {1, 1001, 65537, (1u << 20) + 3};
    for (size_t t = 0; t < sizeof sizes / sizeof sizes[0]; t++) {
        const size_t n = sizes[t];

        op_case c = new_case("axpy", TOL_ELEM, run_axpy, naive_axpy);
        c.n = n;
        c.alpha = -0.37f;
        snprintf(c.shape, sizeof c.shape, "n=%zu a=%.2f", n, c.alpha);
        add_in(&c, randn(n, 1.0f), n);
        add_out(&c, "y", randn(n, 1.0f), n);
        run_case(&c);

        c = new_case("add", TOL_ELEM, run_add, naive_add);
        c.n = n;
        snprintf(c.shape, sizeof c.shape, "n=%zu", n);
        add_in(&c, randn(n, 1.0f), n);
        add_in(&c, randn(n, 1.0f), n);
        add_out(&c, "y", NULL, n);
        run_case(&c);

        c = new_case("dot", TOL_SUM, run_dot, naive_dot);
        c.n = n;
        c.has_scalar = 1;
        snprintf(c.shape, sizeof c.shape, "n=%zu", n);
        add_in(&c, randn(n, 1.0f), n);
        add_in(&c, randn(n, 1.0f), n);
        run_case(&c);
    }
}

/* ---- weight normalisation ------------------------------------------------------- */

static double naive_weightnorm_forward(const op_case *c, float *const *ref)
{
    const float *v = c->in[0], *g = c->in[1];
    for (size_t r = 0; r < c->rows; r++) {
        double ss = 0.0;
        for (size_t j = 0; j < c->len; j++)
            ss += (double)v[r * c->len + j] * v[r * c->len + j];
        for (size_t j = 0; j < c->len; j++)
            ref[0][r * c->len + j] = (float)(g[r] * v[r * c->len + j] / sqrt(ss));
    }
    return 0.0;
}

static double naive_weightnorm_backward(const op_case *c, float *const *ref)
{
    const float *dw = c->in[0], *v = c->in[1], *g = c->in[2];
    for (size_t r = 0; r < c->rows; r++) {
        const float *vr = v + r * c->len, *dwr = dw + r * c->len;
        double ss = 0.0, dot = 0.0;
        for (size_t j = 0; j < c->len; j++) {
            ss += (double)vr[j] * vr[j];
            dot += (double)dwr[j] * vr[j];
        }
        const double norm = sqrt(ss), proj = dot / norm;
        ref[1][r] = (float)((double)ref[1][r] + proj);
        for (size_t j = 0; j < c->len; j++) {
            float *d = &ref[0][r * c->len + j];
            *d = (float)((double)*d + g[r] / norm * (dwr[j] - proj * vr[j] / norm));
        }
    }
    return 0.0;
}

static double run_weightnorm_forward(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->weightnorm_forward(be, (int)c->rows, (int)c->len, out[0], in[0], in[1]);
    return 0.0;
}

static double run_weightnorm_backward(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->weightnorm_backward(be, (int)c->rows, (int)c->len, out[0], out[1], in[0], in[1], in[2]);
    return 0.0;
}

static void weightnorm_cases(void)
{
    static const struct {
        size_t rows, len;
    } shapes[] = {{8, 27}, {64, 576}, {3, 1}, {10, 1153}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const size_t rows = shapes[t].rows, len = shapes[t].len, n = rows * len;
        char shape[96];
        snprintf(shape, sizeof shape, "rows=%zu len=%zu", rows, len);

        op_case c = new_case("weightnorm_forward", TOL_ELEM, run_weightnorm_forward, naive_weightnorm_forward);
        c.rows = rows;
        c.len = len;
        snprintf(c.shape, sizeof c.shape, "%s", shape);
        add_in(&c, randn(n, 1.0f), n);
        add_in(&c, randn(rows, 1.0f), rows);
        add_out(&c, "w", NULL, n);
        run_case(&c);

        c = new_case("weightnorm_backward", TOL_ELEM, run_weightnorm_backward, naive_weightnorm_backward);
        c.rows = rows;
        c.len = len;
        snprintf(c.shape, sizeof c.shape, "%s", shape);
        add_in(&c, randn(n, 1.0f), n);
        add_in(&c, randn(n, 1.0f), n);
        add_in(&c, randn(rows, 1.0f), rows);
        add_out(&c, "dv", randn(n, 1.0f), n);
        add_out(&c, "dg", randn(rows, 1.0f), rows);
        run_case(&c);
    }
}

/* ---- layout ------------------------------------------------------------------------ */

static double naive_nchw_to_cnhw(const op_case *c, float *const *ref)
{
    for (int b = 0; b < c->batch; b++)
        for (int ch = 0; ch < c->c; ch++)
            for (int p = 0; p < c->hw; p++)
                ref[0][((size_t)ch * c->batch + b) * c->hw + p] = c->in[0][((size_t)b * c->c + ch) * c->hw + p];
    return 0.0;
}

static double naive_cnhw_to_nchw(const op_case *c, float *const *ref)
{
    for (int b = 0; b < c->batch; b++)
        for (int ch = 0; ch < c->c; ch++)
            for (int p = 0; p < c->hw; p++)
                ref[0][((size_t)b * c->c + ch) * c->hw + p] = c->in[0][((size_t)ch * c->batch + b) * c->hw + p];
    return 0.0;
}

static double run_nchw_to_cnhw(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->nchw_to_cnhw(be, c->batch, c->c, c->hw, out[0], in[0]);
    return 0.0;
}

static double run_cnhw_to_nchw(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->cnhw_to_nchw(be, c->batch, c->c, c->hw, out[0], in[0]);
    return 0.0;
}

static void layout_cases(void)
{
    static const struct {
        int batch, c, hw;
    } shapes[] = {{3, 5, 35}, {1, 4, 16}, {2, 3, 1}, {7, 64, 1024}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const int batch = shapes[t].batch, ch = shapes[t].c, hw = shapes[t].hw;
        const size_t n = (size_t)batch * ch * hw;

        op_case c = new_case("nchw_to_cnhw", TOL_EXACT, run_nchw_to_cnhw, naive_nchw_to_cnhw);
        c.batch = batch;
        c.c = ch;
        c.hw = hw;
        snprintf(c.shape, sizeof c.shape, "batch=%d c=%d hw=%d", batch, ch, hw);
        add_in(&c, randn(n, 1.0f), n);
        add_out(&c, "dst", NULL, n);
        run_case(&c);

        c = new_case("cnhw_to_nchw", TOL_EXACT, run_cnhw_to_nchw, naive_cnhw_to_nchw);
        c.batch = batch;
        c.c = ch;
        c.hw = hw;
        snprintf(c.shape, sizeof c.shape, "batch=%d c=%d hw=%d", batch, ch, hw);
        add_in(&c, randn(n, 1.0f), n);
        add_out(&c, "dst", NULL, n);
        run_case(&c);
    }
}

/* ---- noise: rng_normal against engine/rng.c -------------------------------------- */

/* Drawn from the start of first's Philox block of 4 and sliced, so an
 * unaligned first is checked against an aligned one. */
static double naive_rng_normal(const op_case *c, float *const *ref)
{
    const uint64_t lead = c->first % 4;
    float *all = xmalloc(sizeof(float) * (c->n + lead));
    vapo_rng_normal(c->seed, c->stream, c->first - lead, c->n + lead, all);
    memcpy(ref[0], all + lead, sizeof(float) * c->n);
    free(all);
    return 0.0;
}

static double run_rng_normal(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    (void)in;
    be->rng_normal(be, c->seed, c->stream, c->first, c->n, out[0]);
    return 0.0;
}

/* exact on the CPU; CUDA's logf/sinf/cosf may differ in the last ulp (rng_cuda.h) */
static void rng_case(uint64_t seed, uint64_t stream, uint64_t first, size_t n)
{
    op_case c = new_case("rng_normal", TOL_EXACT, run_rng_normal, naive_rng_normal);
    c.tol_cuda = TOL_ELEM;
    c.seed = seed, c.stream = stream, c.first = first, c.n = n;
    snprintf(c.shape, sizeof c.shape, "seed=%llu stream=%llu first=%llu n=%zu", (unsigned long long)seed,
             (unsigned long long)stream, (unsigned long long)first, n);
    add_out(&c, "z", NULL, n);
    run_case(&c);
}

static void rng_cases(void)
{
    rng_case(42, VAPO_STREAM_SAMPLE_NOISE, 0, 3072);
    rng_case(0xDEADBEEFCAFEF00Dull, VAPO_STREAM_TRAIN + 5, 3, 1001);      /* unaligned start and end */
    rng_case(7, ((uint64_t)1 << 40) + 3, ((uint64_t)1 << 33) + 1, 65537); /* high counter bits */
    rng_case(9, VAPO_STREAM_TRAIN + 2, 6, 1);                              /* one element, mid-block */
    rng_case(9, VAPO_STREAM_TRAIN + 2, 8, 1);                              /* one element, a block's first */
}

/* ---- the VAPO loss: loss_perturb, loss_seeds ------------------------------------ */

/* Coefficient rows in vapo_schedule_at's ranges: m, sigma in [0, 1], vm >= 0,
 * vs <= 0, wz >= 0, wx <= 0. */
static vapo_path_coef *random_coefs(int batch)
{
    double *u = uniform(6 * (size_t)batch, 0.0, 1.0);
    vapo_path_coef *p = xmalloc(sizeof *p * batch);
    for (int i = 0; i < batch; i++) {
        const double *r = u + 6 * i;
        p[i] = (vapo_path_coef){.m = (float)r[0], .sigma = (float)(0.01 + 0.99 * r[1]), .vm = (float)(4.0 * r[2]),
                                .vs = (float)(-4.0 * r[3]), .wz = 10.0 * r[4], .wx = -10.0 * r[5]};
    }
    free(u);
    return p;
}

/* zx rows as loss_perturb writes them for normal z: |z|^2 ~ d, xbar.z ~ sqrt(d) */
static double *random_zx(int batch, int d)
{
    double *zx = uniform(2 * (size_t)batch, -1.0, 1.0);
    for (int i = 0; i < batch; i++)
        zx[2 * i] = d * (1.0 + 0.2 * zx[2 * i]), zx[2 * i + 1] *= 2.0 * sqrt(d);
    return zx;
}

static double naive_loss_perturb(const op_case *c, float *const *ref)
{
    const vapo_path_coef *coef = (const vapo_path_coef *)c->in[0];
    const float *xbar = c->in[1], *z = c->in[2];
    double *zx = (double *)ref[2];
    for (size_t r = 0; r < c->rows; r++) {
        const vapo_path_coef k = coef[r];
        double zz = 0.0, xz = 0.0;
        for (size_t j = r * c->len; j < (r + 1) * c->len; j++) {
            ref[0][j] = (float)((double)k.m * xbar[j] + (double)k.sigma * z[j]);
            if (c->out_n[1])
                ref[1][j] = (float)((double)k.vm * xbar[j] + (double)k.vs * z[j]);
            zz += (double)z[j] * z[j];
            xz += (double)xbar[j] * z[j];
        }
        zx[2 * r] = zz, zx[2 * r + 1] = xz;
    }
    return 0.0;
}

/* Pathwise rows (v given) have no weighted innovation: wgc = 0 (loss.c's
 * vapo_loss_terms_sum relies on it). */
static double naive_loss_seeds(const op_case *c, float *const *ref)
{
    const vapo_path_coef *coef = (const vapo_path_coef *)c->in[0];
    const double *zx = (const double *)c->in[1];
    const float *phi = c->in[2], *g = c->in[3], *v = c->in[4];
    const double s = c->scale, lambda = c->lambda;
    for (size_t r = 0; r < c->rows; r++) {
        double gg = 0.0, gv = 0.0;
        for (size_t j = r * c->len; j < (r + 1) * c->len; j++) {
            const double vj = v ? v[j] : 0.0;
            gg += (double)g[j] * g[j];
            gv += g[j] * vj;
            ref[0][j] = (float)(s * (g[j] - vj));
        }
        const double wgc = v ? 0.0 : coef[r].wz * (zx[2 * r] - (double)c->len) + coef[r].wx * zx[2 * r + 1];
        const double cov = v ? -gv : wgc * phi[r];
        double *t = (double *)ref[2] + (size_t)VAPO_ROW_TERMS * r;
        ref[1][r] = (float)(s * (wgc + 2.0 * lambda * phi[r]));
        t[0] = s * 0.5 * gg, t[1] = s * cov, t[2] = s * lambda * phi[r] * phi[r];
        t[3] = sqrt(gg), t[4] = s * wgc, t[5] = phi[r];
    }
    return 0.0;
}

static double run_loss_perturb(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->loss_perturb(be, (int)c->rows, (int)c->len, (const vapo_path_coef *)in[0], in[1], in[2], out[0], out[1],
                     (double *)out[2]);
    return 0.0;
}

static double run_loss_seeds(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->loss_seeds(be, (int)c->rows, (int)c->len, c->scale, c->lambda, (const vapo_path_coef *)in[0],
                   (const double *)in[1], in[2], in[3], in[4], out[0], out[1], (double *)out[2]);
    return 0.0;
}

/* pathwise: with the path velocity v; else v = NULL (the score estimator) */
static void loss_case(int batch, int d, int pathwise)
{
    const size_t n = (size_t)batch * d;
    char shape[96];
    snprintf(shape, sizeof shape, "batch=%d d=%d %s", batch, d, pathwise ? "pathwise" : "score");

    op_case c = new_case("loss_perturb", TOL_ELEM, run_loss_perturb, naive_loss_perturb);
    c.rows = (size_t)batch, c.len = (size_t)d;
    snprintf(c.shape, sizeof c.shape, "%s", shape);
    add_in_of(&c, random_coefs(batch), (size_t)batch, sizeof(vapo_path_coef));
    add_in(&c, uniform_float(n, -1.0, 1.0), n);
    add_in(&c, randn(n, 1.0f), n);
    add_out(&c, "x", NULL, n);
    add_out(&c, "v", NULL, pathwise ? n : 0);
    add_out_double(&c, "zx", 2 * (size_t)batch);
    run_case(&c);

    c = new_case("loss_seeds", TOL_ELEM, run_loss_seeds, naive_loss_seeds);
    c.rows = (size_t)batch, c.len = (size_t)d, c.scale = 1.0 / (double)n, c.lambda = 0.3;
    snprintf(c.shape, sizeof c.shape, "%s", shape);
    add_in_of(&c, random_coefs(batch), (size_t)batch, sizeof(vapo_path_coef));
    add_in_of(&c, random_zx(batch, d), 2 * (size_t)batch, sizeof(double));
    add_in(&c, randn((size_t)batch, 1.0f), (size_t)batch);
    add_in(&c, randn(n, 1.0f), n);
    add_in(&c, pathwise ? randn(n, 1.0f) : NULL, pathwise ? n : 0);
    add_out(&c, "u", NULL, n);
    add_out(&c, "phi_bar", NULL, (size_t)batch);
    add_out_double(&c, "terms", (size_t)VAPO_ROW_TERMS * batch);
    run_case(&c);
}

static void loss_cases(void)
{
    static const struct {
        int batch, d;
    } shapes[] = {{1, 1}, {3, 64}, {17, 784}, {3, 3072}, {17, 1}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++)
        for (int pathwise = 1; pathwise >= 0; pathwise--)
            loss_case(shapes[t].batch, shapes[t].d, pathwise);
}

/* ---- the optimizer update -------------------------------------------------------- */

/* Parameter layouts (tensor sizes): odd lengths, one of length 1, several
 * chunks of the CUDA kernels, more than one thread's share on the CPU; and a
 * second, tiny one, so the CUDA backend must notice a new offsets table. */
static const size_t optim_sizes[2][5] = {{37, 1, 64, 5000, 70001}, {1, 2}};
static const int optim_ntensors[2] = {5, 2};
enum { OPTIM_ZERO_W = 2, OPTIM_ZERO_G = 3 }; /* layout 0: weights 0; gradient and first moment 0 */

static void optim_offsets(int layout, size_t *off)
{
    off[0] = 0;
    for (int t = 0; t < optim_ntensors[layout]; t++)
        off[t + 1] = off[t] + optim_sizes[layout][t];
}

/* c->rows: layout, c->c: 1 Lamb / 0 Adam, c->alpha: clip; Adam at step 3 */
static vapo_optim_hyper optim_hyper(const op_case *c)
{
    vapo_optim_hyper h = {.lamb = c->c, .lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                          .bc1 = 1.0f, .bc2 = 1.0f, .clip = c->alpha, .ema_decay = 0.9f};
    if (!h.lamb)
        h.bc1 = (float)(1 - pow(0.9, 4)), h.bc2 = (float)(1 - pow(0.999, 4));
    return h;
}

static double sumsq_double(const float *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return s;
}

/* backend.h's contract, tensor by tensor (Adam's step is the same per tensor) */
static double naive_optim_update(const op_case *c, float *const *ref)
{
    const vapo_optim_hyper h = optim_hyper(c);
    float *w = ref[0], *g = ref[1], *m = ref[2], *v = ref[3], *ema = ref[4], *dir = xmalloc(sizeof(float) * c->n);
    size_t off[8];
    optim_offsets((int)c->rows, off);
    const double gnorm = sqrt(sumsq_double(g, c->n));
    if (h.clip > 0 && gnorm > h.clip)
        for (size_t i = 0; i < c->n; i++)
            g[i] *= (float)(h.clip / gnorm);
    for (int t = 0; t < optim_ntensors[c->rows]; t++) {
        const size_t a = off[t], len = off[t + 1] - a;
        for (size_t i = a; i < a + len; i++)
            dir[i] = vapo_adam_direction(g[i], &m[i], &v[i], h.beta1, h.beta2, h.eps, h.bc1, h.bc2);
        double trust = 1.0;
        const double wn = fmin(sqrt(sumsq_double(w + a, len)), 10.0), dn = sqrt(sumsq_double(dir + a, len));
        if (h.lamb && wn != 0.0 && dn != 0.0)
            trust = wn / dn;
        for (size_t i = a; i < a + len; i++) {
            w[i] -= (float)(h.lr * trust * dir[i]);
            ema[i] = vapo_ema(ema[i], w[i], h.ema_decay);
        }
    }
    free(dir);
    return gnorm;
}

static double run_optim_update(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    (void)in;
    const vapo_optim_hyper h = optim_hyper(c);
    size_t off[8];
    optim_offsets((int)c->rows, off);
    float *scratch = be->alloc(be, sizeof(float) * c->n);
    double *gnorm = be->alloc(be, sizeof(double)), result = NAN;
    if (scratch && gnorm) {
        be->optim_update(be, &h, optim_ntensors[c->rows], off, c->n, out[0], out[1], out[2], out[3], out[4],
                         scratch, gnorm);
        be->download(be, &result, gnorm, sizeof result);
    }
    be->free(be, scratch);
    be->free(be, gnorm);
    return result;
}

static void optim_case(int layout, int lamb, float clip)
{
    op_case c = new_case("optim_update", TOL_ELEM, run_optim_update, naive_optim_update);
    size_t off[8];
    optim_offsets(layout, off);
    const size_t n = off[optim_ntensors[layout]];
    c.rows = (size_t)layout, c.c = lamb, c.alpha = clip, c.n = n, c.has_scalar = 1;
    snprintf(c.shape, sizeof c.shape, "%s clip=%g tensors=%d n=%zu", lamb ? "lamb" : "adam", clip,
             optim_ntensors[layout], n);
    float *w = randn(n, 0.1f), *g = randn(n, 1.0f), *m = randn(n, 0.1f), *v = randn(n, 0.1f);
    for (size_t i = 0; i < n; i++)
        v[i] *= v[i]; /* a second moment is >= 0 */
    if (layout == 0) {
        memset(w + off[OPTIM_ZERO_W], 0, sizeof(float) * optim_sizes[0][OPTIM_ZERO_W]); /* |w| = 0: trust 1 */
        memset(g + off[OPTIM_ZERO_G], 0, sizeof(float) * optim_sizes[0][OPTIM_ZERO_G]); /* |dir| = 0: trust 1 */
        memset(m + off[OPTIM_ZERO_G], 0, sizeof(float) * optim_sizes[0][OPTIM_ZERO_G]);
    }
    add_out(&c, "params", w, n);
    add_out(&c, "grad", g, n);
    add_out(&c, "m", m, n);
    add_out(&c, "v", v, n);
    add_out(&c, "ema", randn(n, 0.1f), n);
    run_case(&c);
}

static void optim_cases(void)
{
    for (int layout = 0; layout < 2; layout++)
        for (int lamb = 1; lamb >= 0; lamb--) {
            optim_case(layout, lamb, 0.0f);
            optim_case(layout, lamb, 1.0f); /* |grad| is ~270 (layout 0) and ~1.7: clipped */
        }
}

/* ---- Runge-Kutta sampling: rk_combine, rk_norm, rows_copy ----------------------- */

/* Dormand-Prince's solution weights (rk_combine) and error weights with the
 * FSAL stage (rk_norm); cases use the first nk */
static const double rk_b[VAPO_RK_MAX_TERMS] = {35.0 / 384,      0.0,       500.0 / 1113, 125.0 / 192,
                                               -2187.0 / 6784, 11.0 / 84, 0.0};
static const double rk_e[VAPO_RK_MAX_TERMS] = {71.0 / 57600,      0.0,        -71.0 / 16695, 71.0 / 1920,
                                               -17253.0 / 339200, 22.0 / 525, -1.0 / 40};

/* sum_j c[j] k[j][i] for the stages in input 1 */
static double naive_rk_sum(const op_case *c, size_t i)
{
    double acc = 0.0;
    for (int j = 0; j < c->nk; j++)
        acc += c->rk_c[j] * c->in[1][(size_t)j * c->n + i];
    return acc;
}

/* h (input 0, NULL: 1) of the row of element i */
static double naive_rk_h(const op_case *c, size_t i)
{
    return c->in[0] ? ((const double *)c->in[0])[i / c->len] : 1.0;
}

static double naive_rk_combine(const op_case *c, float *const *ref)
{
    for (size_t i = 0; i < c->n; i++)
        ref[0][i] = (float)(c->in[2][i] + naive_rk_h(c, i) * naive_rk_sum(c, i));
    return 0.0;
}

/* SciPy's RK45 error norm: RMS of e / (atol + max(|y|, |y_new|) rtol) */
static double naive_rk_norm(const op_case *c, float *const *ref)
{
    const float *y = c->in[2], *y_new = c->in[3] ? c->in[3] : y;
    for (size_t r = 0; r < c->rows; r++) {
        double ss = 0.0;
        for (size_t i = r * c->len; i < (r + 1) * c->len; i++) {
            const double e = naive_rk_h(c, i) * naive_rk_sum(c, i);
            const double q = e / (c->atol + c->rtol * fmax(fabs(y[i]), fabs(y_new[i])));
            ss += q * q;
        }
        ((double *)ref[0])[r] = sqrt(ss / (double)c->len);
    }
    return 0.0;
}

/* the host array of stage pointers into the one stage tensor k */
static void rk_stages(const op_case *c, const float *k, const float **stage)
{
    for (int j = 0; j < c->nk; j++)
        stage[j] = k + (size_t)j * c->n;
}

static double run_rk_combine(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    const float *k[VAPO_RK_MAX_TERMS];
    rk_stages(c, in[1], k);
    be->rk_combine(be, (int)c->rows, (int)c->len, (const double *)in[0], c->nk, c->rk_c, k, in[2], out[0]);
    return 0.0;
}

static double run_rk_norm(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    const float *k[VAPO_RK_MAX_TERMS];
    rk_stages(c, in[1], k);
    be->rk_norm(be, (int)c->rows, (int)c->len, (const double *)in[0], c->nk, c->rk_c, k, in[2], in[3], c->atol,
                c->rtol, (double *)out[0]);
    return 0.0;
}

/* inputs 0..2: h (per row, the first 0, as for a finished row; or NULL), the
 * nk stages, y */
static op_case rk_case(const char *op, double tol, op_run run, op_naive naive, size_t rows, size_t d, int nk,
                       const double *weights, int with_h)
{
    op_case c = new_case(op, tol, run, naive);
    c.rows = rows, c.len = d, c.n = rows * d, c.nk = nk;
    memcpy(c.rk_c, weights, sizeof(double) * nk);
    double *h = with_h ? uniform(rows, 0.0, 0.1) : NULL;
    if (h)
        h[0] = 0.0;
    add_in_of(&c, h, with_h ? rows : 0, sizeof(double));
    add_in(&c, randn((size_t)nk * c.n, 1.0f), (size_t)nk * c.n);
    add_in(&c, randn(c.n, 1.0f), c.n);
    return c;
}

static void rk_cases(void)
{
    static const struct {
        size_t rows, d;
        int nk, h, y_new;
    } shapes[] = {{1, 1, 1, 1, 1}, {3, 64, 4, 0, 1}, {17, 784, 7, 1, 0}, {5, 3072, 6, 1, 1}, {70000, 2, 2, 1, 1}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++) {
        const size_t rows = shapes[t].rows, d = shapes[t].d;
        const int nk = shapes[t].nk, with_h = shapes[t].h, with_y_new = shapes[t].y_new;
        char shape[64];
        snprintf(shape, sizeof shape, "rows=%zu d=%zu nk=%d%s", rows, d, nk, with_h ? "" : " h=NULL");

        op_case c = rk_case("rk_combine", TOL_ELEM, run_rk_combine, naive_rk_combine, rows, d, nk, rk_b, with_h);
        snprintf(c.shape, sizeof c.shape, "%s", shape);
        add_out(&c, "out", NULL, c.n);
        run_case(&c);

        c = rk_case("rk_norm", TOL_DOUBLE, run_rk_norm, naive_rk_norm, rows, d, nk, rk_e, with_h);
        c.atol = 1e-6, c.rtol = 1e-3;
        snprintf(c.shape, sizeof c.shape, "%s%s", shape, with_y_new ? "" : " y_new=NULL");
        add_in(&c, with_y_new ? randn(c.n, 1.0f) : NULL, with_y_new ? c.n : 0);
        add_out_double(&c, "norm", rows);
        run_case(&c);
    }
}

/* `count` distinct row indices below `total`, in random order */
static int *random_rows(size_t count, size_t total)
{
    const uint64_t stream = next_stream++;
    int *p = xmalloc(sizeof(int) * total);
    for (size_t i = 0; i < total; i++)
        p[i] = (int)i;
    for (size_t i = 0; i < count; i++) {
        const size_t j = i + vapo_rng_below(SEED, stream, i, total - i);
        const int t = p[i];
        p[i] = p[j], p[j] = t;
    }
    return p;
}

static double naive_rows_copy(const op_case *c, float *const *ref)
{
    const int *dst_rows = (const int *)c->in[1], *src_rows = (const int *)c->in[2];
    for (size_t r = 0; r < c->rows; r++) {
        const size_t to = dst_rows ? (size_t)dst_rows[r] : r, from = src_rows ? (size_t)src_rows[r] : r;
        for (size_t j = 0; j < c->len; j++)
            ref[0][to * c->len + j] = c->in[0][from * c->len + j];
    }
    return 0.0;
}

static double run_rows_copy(vapo_backend *be, const op_case *c, float *const *in, float *const *out)
{
    be->rows_copy(be, (int)c->rows, (int)c->len, out[0], (const int *)in[1], in[0], (const int *)in[2]);
    return 0.0;
}

/* gather: rows picked from 2 rows + 1 source rows; scatter: written to 2 rows
 * + 1 destination rows, whose other rows must keep their contents */
static void rows_copy_case(size_t rows, size_t d, int gather, int scatter)
{
    const size_t nsrc = gather ? 2 * rows + 1 : rows, ndst = scatter ? 2 * rows + 1 : rows;
    op_case c = new_case("rows_copy", TOL_EXACT, run_rows_copy, naive_rows_copy);
    c.rows = rows, c.len = d;
    snprintf(c.shape, sizeof c.shape, "rows=%zu d=%zu%s%s", rows, d, gather ? " gather" : "",
             scatter ? " scatter" : "");
    add_in(&c, randn(nsrc * d, 1.0f), nsrc * d);
    add_in_of(&c, scatter ? random_rows(rows, ndst) : NULL, scatter ? rows : 0, sizeof(int));
    add_in_of(&c, gather ? random_rows(rows, nsrc) : NULL, gather ? rows : 0, sizeof(int));
    add_out(&c, "dst", scatter ? randn(ndst * d, 1.0f) : NULL, ndst * d);
    run_case(&c);
}

static void rows_copy_cases(void)
{
    static const struct {
        size_t rows, d;
        int gather, scatter;
    } shapes[] = {{1, 1, 0, 0}, {5, 784, 1, 0}, {5, 784, 0, 1}, {17, 64, 1, 1}, {3, 3072, 1, 1}, {1000, 3, 1, 1}};
    for (size_t t = 0; t < sizeof shapes / sizeof shapes[0]; t++)
        rows_copy_case(shapes[t].rows, shapes[t].d, shapes[t].gather, shapes[t].scatter);
}

/* ---- main ------------------------------------------------------------------------- */

static void open_cuda(void)
{
    const char *require = getenv("VAPO_TEST_REQUIRE_CUDA");
    const int required = require && *require && strcmp(require, "0");
    cuda = vapo_backend_cuda(0);
    if (!cuda) {
        printf("cuda: skipped: no CUDA device (%s)\n", vapo_last_error());
        if (required) {
            printf("FAIL: VAPO_TEST_REQUIRE_CUDA is set\n");
            failures++;
        }
        return;
    }
    /* a second CUDA backend whose convolutions run on NCHW copies */
    const char *saved = getenv("VAPO_CUDA_CONV_LAYOUT");
    char *keep = saved ? strdup(saved) : NULL;
    setenv("VAPO_CUDA_CONV_LAYOUT", "nchw", 1);
    cuda_nchw = vapo_backend_cuda(0);
    if (keep) {
        setenv("VAPO_CUDA_CONV_LAYOUT", keep, 1);
        free(keep);
    } else {
        unsetenv("VAPO_CUDA_CONV_LAYOUT");
    }
    if (!cuda_nchw) {
        printf("FAIL: a second CUDA backend (VAPO_CUDA_CONV_LAYOUT=nchw) did not open: %s\n", vapo_last_error());
        failures++;
    }
    /* a device that does not exist is refused with a message, not a crash */
    vapo_backend *bogus = vapo_backend_cuda(1 << 20);
    report("cuda", "open(no such device)", vapo_last_error(), bogus ? 1.0 : 0.0, 0.0);
    if (bogus)
        bogus->destroy(bogus);
}

/* opening the CPU backend with var=value is refused with a message */
static void refused_env(const char *var, const char *value)
{
    const char *saved = getenv(var);
    char *keep = saved ? strdup(saved) : NULL, op[64];
    setenv(var, value, 1);
    vapo_backend *be = vapo_backend_cpu(0);
    snprintf(op, sizeof op, "open(%s=%s)", var, value);
    report("cpu", op, vapo_last_error(), be ? 1.0 : 0.0, 0.0);
    if (be)
        be->destroy(be);
    if (keep) {
        setenv(var, keep, 1);
        free(keep);
    } else {
        unsetenv(var);
    }
}

/* VAPO_CPU_CONV picks the CPU convolution, VAPO_CPU_WINOGRAD allows Winograd;
 * a value either does not know is refused */
static void bad_conv_choice(void)
{
    refused_env("VAPO_CPU_CONV", "avx1024");
    refused_env("VAPO_CPU_WINOGRAD", "maybe");
}

int main(void)
{
    const char *conv = getenv("VAPO_CPU_CONV");
    const char *wino = getenv("VAPO_CPU_WINOGRAD");
    printf("CPU convolutions: VAPO_CPU_CONV=%s VAPO_CPU_WINOGRAD=%s\n", conv && *conv ? conv : "auto",
           wino && *wino ? wino : "auto");
    cpu = vapo_backend_cpu(0);
    if (!cpu) {
        printf("FAIL: CPU backend: %s\n", vapo_last_error());
        return 1;
    }
    open_cuda();
    bad_conv_choice();
    printf("%-13s %-26s %-44s %-15s %-9s\n", "pair", "op", "shape", "error", "tolerance");

    memory_cases();
    conv_cases();
    conv_invariance_cases();
    act_cases();
    exp_cases();
    pool_cases();
    upsample_cases();
    row_cases();
    vector_cases();
    weightnorm_cases();
    layout_cases();
    rng_cases();
    loss_cases();
    optim_cases();
    rk_cases();
    rows_copy_cases();

    printf("%d checks, %d failed%s\n", checks, failures, cuda ? "" : " (CPU only: no CUDA device)");
    if (cuda_nchw)
        cuda_nchw->destroy(cuda_nchw);
    if (cuda)
        cuda->destroy(cuda);
    cpu->destroy(cpu);
    return failures ? 1 : 0;
}
