/* Finite-difference checks of every layer's four passes (layers.h and the
 * backend's activation ops) on the CPU backend, in float32.
 *
 * For a layer y = f(x; p) with adjoint seeds dy, dyd we check
 *   tangent:  yd            against the central difference of f along xd;
 *   backward: <dy, J xd>  = <J^T dy, xd>   (the adjoint identity);
 *   dual:     the gradients of S = <dy, f(x)> + <dyd, J(x) xd> with respect to
 *             x, xd and p against central differences of S along random
 *             directions.
 * Tolerances: inputs are O(1) and h = 3e-3, so the truncation error of a
 * central difference is O(h^2) ~ 1e-5 relative and float32 round-off in S is
 * ~ sqrt(n) * 6e-8 / h ~ 1e-4 relative at most for these sizes: 2e-3 relative
 * leaves margin while any missing or wrong term (O(1) relative) fails. */
#include <string.h>

#include "testutil.h"
#include "vapo/error.h"
#include "vapo/layers.h"

#define H 3e-3
#define TOL 2e-3

typedef struct layer layer;
struct layer {
    const char *name;
    size_t nx, ny, np;
    void (*fwd)(const layer *l, const float *x, const float *p, float *y);
    void (*tan)(const layer *l, const float *x, const float *xd, const float *p, float *yd);
    void (*bwd)(const layer *l, const float *x, const float *dy, const float *p, float *dx);
    void (*dual)(const layer *l, const float *x, const float *xd, const float *dy, const float *dyd, const float *p,
                 float *dx, float *dxd, float *dp);
    vapo_backend *be;
    vapo_conv_shape cs; /* conv layers */
    vapo_act act;       /* activations */
    int c, h, w;        /* planes / channels, spatial size */
    size_t n;           /* columns */
};

/* ---- adapters: each layer of layers.h behind one interface --------------------- */

static size_t conv_wsize(const layer *l) { return (size_t)l->cs.cout * l->cs.cin * l->cs.k * l->cs.k; }

static void conv_fwd(const layer *l, const float *x, const float *p, float *y)
{
    vapo_conv_fwd(l->be, &l->cs, y, x, p, p + conv_wsize(l));
}
static void conv_tan(const layer *l, const float *x, const float *xd, const float *p, float *yd)
{
    (void)x;
    vapo_conv_tangent(l->be, &l->cs, yd, xd, p);
}
static void conv_bwd(const layer *l, const float *x, const float *dy, const float *p, float *dx)
{
    (void)x;
    vapo_conv_bwd(l->be, &l->cs, dx, dy, p);
}
static void conv_dual(const layer *l, const float *x, const float *xd, const float *dy, const float *dyd,
                      const float *p, float *dx, float *dxd, float *dp)
{
    vapo_conv_dual(l->be, &l->cs, dx, dxd, dp, dp + conv_wsize(l), x, xd, dy, dyd, p);
}

static void act_fwd(const layer *l, const float *x, const float *p, float *y)
{
    (void)p;
    l->be->act_forward(l->be, l->act, l->nx, y, x);
}
static void act_tan(const layer *l, const float *x, const float *xd, const float *p, float *yd)
{
    (void)p;
    l->be->act_tangent(l->be, l->act, l->nx, yd, x, xd);
}
static void act_bwd(const layer *l, const float *x, const float *dy, const float *p, float *dx)
{
    (void)p;
    l->be->act_backward(l->be, l->act, l->nx, dx, x, dy);
}
static void act_dual(const layer *l, const float *x, const float *xd, const float *dy, const float *dyd,
                     const float *p, float *dx, float *dxd, float *dp)
{
    (void)p, (void)dp;
    l->be->act_dual_backward(l->be, l->act, l->nx, dx, dxd, x, xd, dy, dyd);
}

static void pool_fwd(const layer *l, const float *x, const float *p, float *y)
{
    (void)p;
    vapo_pool_fwd(l->be, l->c, l->h, l->w, y, x);
}
static void pool_tan(const layer *l, const float *x, const float *xd, const float *p, float *yd)
{
    (void)x;
    pool_fwd(l, xd, p, yd);
}
static void pool_bwd(const layer *l, const float *x, const float *dy, const float *p, float *dx)
{
    (void)x, (void)p;
    vapo_pool_bwd(l->be, l->c, l->h, l->w, dx, dy);
}
static void pool_dual(const layer *l, const float *x, const float *xd, const float *dy, const float *dyd,
                      const float *p, float *dx, float *dxd, float *dp)
{
    (void)xd, (void)dp;
    pool_bwd(l, x, dy, p, dx);
    pool_bwd(l, x, dyd, p, dxd);
}

static void up_fwd(const layer *l, const float *x, const float *p, float *y)
{
    (void)p;
    vapo_upsample_fwd(l->be, l->c, l->h, l->w, y, x);
}
static void up_tan(const layer *l, const float *x, const float *xd, const float *p, float *yd)
{
    (void)x;
    up_fwd(l, xd, p, yd);
}
static void up_bwd(const layer *l, const float *x, const float *dy, const float *p, float *dx)
{
    (void)x, (void)p;
    vapo_upsample_bwd(l->be, l->c, l->h, l->w, dx, dy);
}
static void up_dual(const layer *l, const float *x, const float *xd, const float *dy, const float *dyd,
                    const float *p, float *dx, float *dxd, float *dp)
{
    (void)xd, (void)dp;
    up_bwd(l, x, dy, p, dx);
    up_bwd(l, x, dyd, p, dxd);
}

static void sum_fwd(const layer *l, const float *x, const float *p, float *y)
{
    (void)p;
    vapo_sum_fwd(l->be, l->c, (size_t)l->h * l->w, y, x);
}
static void sum_tan(const layer *l, const float *x, const float *xd, const float *p, float *yd)
{
    (void)x;
    sum_fwd(l, xd, p, yd);
}
static void sum_bwd(const layer *l, const float *x, const float *dy, const float *p, float *dx)
{
    (void)x, (void)p;
    vapo_sum_bwd(l->be, l->c, (size_t)l->h * l->w, dx, dy);
}
static void sum_dual(const layer *l, const float *x, const float *xd, const float *dy, const float *dyd,
                     const float *p, float *dx, float *dxd, float *dp)
{
    (void)xd, (void)dp;
    sum_bwd(l, x, dy, p, dx);
    sum_bwd(l, x, dyd, p, dxd);
}

static void scale_fwd(const layer *l, const float *x, const float *p, float *y)
{
    vapo_scale_fwd(l->be, l->c, l->n, y, x, p);
}
static void scale_tan(const layer *l, const float *x, const float *xd, const float *p, float *yd)
{
    (void)x;
    vapo_scale_fwd(l->be, l->c, l->n, yd, xd, p);
}
static void scale_bwd(const layer *l, const float *x, const float *dy, const float *p, float *dx)
{
    vapo_scale_dual(l->be, l->c, l->n, dx, NULL, NULL, x, NULL, dy, NULL, p);
}
static void scale_dual(const layer *l, const float *x, const float *xd, const float *dy, const float *dyd,
                       const float *p, float *dx, float *dxd, float *dp)
{
    vapo_scale_dual(l->be, l->c, l->n, dx, dxd, dp, x, xd, dy, dyd, p);
}

/* ---- the generic check ----------------------------------------------------------- */

static double eval_s(const layer *l, const float *x, const float *xd, const float *p, const float *dy,
                     const float *dyd, float *y, float *yd)
{
    l->fwd(l, x, p, y);
    l->tan(l, x, xd, p, yd);
    return dotd(dy, y, l->ny) + dotd(dyd, yd, l->ny);
}

/* Central difference of S along dir applied to `var` (x, xd or p). */
static double fd_s(const layer *l, float *x, float *xd, float *p, const float *dy, const float *dyd, float *var,
                   const float *dir, size_t n, float *y, float *yd)
{
    float *save = malloc(sizeof(float) * n);
    memcpy(save, var, sizeof(float) * n);
    for (size_t i = 0; i < n; i++)
        var[i] = save[i] + (float)H * dir[i];
    double sp = eval_s(l, x, xd, p, dy, dyd, y, yd);
    for (size_t i = 0; i < n; i++)
        var[i] = save[i] - (float)H * dir[i];
    double sm = eval_s(l, x, xd, p, dy, dyd, y, yd);
    memcpy(var, save, sizeof(float) * n);
    free(save);
    return (sp - sm) / (2 * H);
}

static void check_layer(const layer *l, uint64_t seed)
{
    size_t nx = l->nx, ny = l->ny, np = l->np ? l->np : 1;
    float *x = malloc(sizeof(float) * nx), *xd = malloc(sizeof(float) * nx), *p = malloc(sizeof(float) * np);
    float *dy = malloc(sizeof(float) * ny), *dyd = malloc(sizeof(float) * ny);
    float *y = malloc(sizeof(float) * ny), *yd = malloc(sizeof(float) * ny), *yp = malloc(sizeof(float) * ny);
    float *ym = malloc(sizeof(float) * ny), *dx = malloc(sizeof(float) * nx), *dxd = malloc(sizeof(float) * nx);
    float *dp = calloc(np, sizeof(float)), *dir = malloc(sizeof(float) * (nx > np ? nx : np));
    fill_normal(x, nx, seed, 1.0f);
    if (l->act == VAPO_ACT_RELU && l->fwd == act_fwd) /* keep finite differences off the kink */
        for (size_t i = 0; i < nx; i++)
            x[i] += x[i] >= 0 ? 0.1f : -0.1f;
    fill_normal(xd, nx, seed + 1, 1.0f);
    fill_normal(p, np, seed + 2, 0.5f);
    fill_normal(dy, ny, seed + 3, 1.0f);
    fill_normal(dyd, ny, seed + 4, 1.0f);

    /* tangent against a central difference of the forward pass */
    l->tan(l, x, xd, p, yd);
    float *xs = malloc(sizeof(float) * nx);
    for (size_t i = 0; i < nx; i++)
        xs[i] = x[i] + (float)H * xd[i];
    l->fwd(l, xs, p, yp);
    for (size_t i = 0; i < nx; i++)
        xs[i] = x[i] - (float)H * xd[i];
    l->fwd(l, xs, p, ym);
    for (size_t i = 0; i < ny; i++)
        yp[i] = (float)((yp[i] - (double)ym[i]) / (2 * H));
    double e = nmse(yd, yp, ny);
    CHECK(e < TOL * TOL, "%s tangent: nmse %.3g against finite differences", l->name, e);

    /* backward: the adjoint identity */
    l->bwd(l, x, dy, p, dx);
    double lhs = dotd(dy, yd, ny), rhs = dotd(dx, xd, nx);
    CHECK(fabs(lhs - rhs) <= 1e-5 * (fabs(lhs) + 1), "%s backward: <dy,J xd> = %.9g but <J^T dy, xd> = %.9g",
          l->name, lhs, rhs);

    /* dual: gradients of S with respect to x, xd and p */
    l->dual(l, x, xd, dy, dyd, p, dx, dxd, dp);
    struct { const char *what; float *var, *grad; size_t n; } parts[3] = {
        {"x", x, dx, nx}, {"xdot", xd, dxd, nx}, {"params", p, dp, l->np}};
    for (int k = 0; k < 3; k++) {
        if (!parts[k].n)
            continue;
        fill_normal(dir, parts[k].n, seed + 10 + k, 1.0f);
        double fd = fd_s(l, x, xd, p, dy, dyd, parts[k].var, dir, parts[k].n, y, yd);
        double an = dotd(parts[k].grad, dir, parts[k].n);
        CHECK(fabs(fd - an) <= TOL * (fabs(fd) + 1), "%s dual d/d%s: analytic %.7g, finite difference %.7g", l->name,
              parts[k].what, an, fd);
    }
    printf("  %-28s ok (tangent nmse %.2g)\n", l->name, e);
    free(x), free(xd), free(p), free(dy), free(dyd), free(y), free(yd), free(yp), free(ym);
    free(dx), free(dxd), free(dp), free(dir), free(xs);
}

static layer conv_layer(vapo_backend *be, const char *name, int cin, int cout, int k, int batch, int h, int w)
{
    layer l = {.name = name, .be = be, .cs = {cin, cout, k, batch, h, w}};
    l.nx = (size_t)cin * batch * h * w;
    l.ny = (size_t)cout * batch * h * w;
    l.np = conv_wsize(&l) + cout;
    l.fwd = conv_fwd, l.tan = conv_tan, l.bwd = conv_bwd, l.dual = conv_dual;
    return l;
}

/* Weight normalisation is a map of parameters (v, g) -> w with no tangent in
 * x; its adjoint is checked against finite differences directly. */
static void check_weightnorm(vapo_backend *be)
{
    const int rows = 5, len = 27;
    float v[135], g[5], w[135], wp[135], dw[135], dv[135] = {0}, dg[5] = {0}, dir[135], dirg[5];
    fill_normal(v, 135, 1, 1.0f);
    fill_normal(g, 5, 2, 1.0f);
    fill_normal(dw, 135, 3, 1.0f);
    fill_normal(dir, 135, 4, 1.0f);
    fill_normal(dirg, 5, 5, 1.0f);
    be->weightnorm_forward(be, rows, len, w, v, g);
    for (int r = 0; r < rows; r++) {
        double nrm = 0;
        for (int j = 0; j < len; j++)
            nrm += (double)w[r * len + j] * w[r * len + j];
        CHECK_CLOSE(sqrt(nrm), fabs(g[r]), 1e-6, "row norm of w equals |g|");
    }
    be->weightnorm_backward(be, rows, len, dv, dg, dw, v, g);
    float vs[135], gs[5];
    memcpy(vs, v, sizeof v), memcpy(gs, g, sizeof g);
    for (int i = 0; i < 135; i++)
        vs[i] = v[i] + (float)H * dir[i];
    for (int i = 0; i < 5; i++)
        gs[i] = g[i] + (float)H * dirg[i];
    be->weightnorm_forward(be, rows, len, wp, vs, gs);
    double sp = dotd(dw, wp, 135);
    for (int i = 0; i < 135; i++)
        vs[i] = v[i] - (float)H * dir[i];
    for (int i = 0; i < 5; i++)
        gs[i] = g[i] - (float)H * dirg[i];
    be->weightnorm_forward(be, rows, len, wp, vs, gs);
    double fd = (sp - dotd(dw, wp, 135)) / (2 * H), an = dotd(dv, dir, 135) + dotd(dg, dirg, 5);
    CHECK(fabs(fd - an) <= TOL * (fabs(fd) + 1), "weightnorm adjoint: analytic %.7g, finite difference %.7g", an, fd);
    printf("  %-28s ok\n", "weightnorm");
}

int main(void)
{
    vapo_backend *be = vapo_backend_cpu(0);
    layer layers[16];
    int n = 0;
    layers[n++] = conv_layer(be, "conv3x3 3->5, 2x 6x7", 3, 5, 3, 2, 6, 7);
    layers[n++] = conv_layer(be, "conv3x3 4->4, 3x 5x5", 4, 4, 3, 3, 5, 5);
    layers[n++] = conv_layer(be, "conv1x1 6->2, 4x 3x2", 6, 2, 1, 4, 3, 2);
    layers[n++] = conv_layer(be, "linear (1x1) 8->1, 5x", 8, 1, 1, 5, 1, 1);
    const char *act_names[3] = {"gelu", "silu", "relu"};
    for (int a = 0; a < 3; a++)
        layers[n++] = (layer){.name = act_names[a], .be = be, .act = (vapo_act)a, .nx = 300, .ny = 300,
                              .fwd = act_fwd, .tan = act_tan, .bwd = act_bwd, .dual = act_dual};
    layers[n++] = (layer){.name = "avgpool2 6x8", .be = be, .c = 6, .h = 6, .w = 8, .nx = 288, .ny = 72,
                          .fwd = pool_fwd, .tan = pool_tan, .bwd = pool_bwd, .dual = pool_dual};
    layers[n++] = (layer){.name = "avgpool2 odd 5x7", .be = be, .c = 4, .h = 5, .w = 7, .nx = 140, .ny = 24,
                          .fwd = pool_fwd, .tan = pool_tan, .bwd = pool_bwd, .dual = pool_dual};
    layers[n++] = (layer){.name = "upsample2 3x(7x5)", .be = be, .c = 3, .h = 7, .w = 5, .nx = 105, .ny = 420,
                          .fwd = up_fwd, .tan = up_tan, .bwd = up_bwd, .dual = up_dual};
    layers[n++] = (layer){.name = "spatial sum 5x(4x3)", .be = be, .c = 5, .h = 4, .w = 3, .nx = 60, .ny = 5,
                          .fwd = sum_fwd, .tan = sum_tan, .bwd = sum_bwd, .dual = sum_dual};
    layers[n++] = (layer){.name = "channel scale 4x30", .be = be, .c = 4, .n = 30, .nx = 120, .ny = 120, .np = 4,
                          .fwd = scale_fwd, .tan = scale_tan, .bwd = scale_bwd, .dual = scale_dual};
    for (int i = 0; i < n; i++)
        check_layer(&layers[i], 1000 + 17 * i);
    check_weightnorm(be);

    /* the activation formulas themselves, against differences of the value */
    for (int a = 0; a < 2; a++)
        for (float x = -4.0f; x <= 4.0f; x += 0.37f) {
            double h = 1e-3, d1 = (vapo_act_value(a, x + h) - vapo_act_value(a, x - h)) / (2 * h);
            double d2 = (vapo_act_d1(a, x + h) - vapo_act_d1(a, x - h)) / (2 * h);
            CHECK(fabs(d1 - vapo_act_d1(a, x)) < 2e-3, "%s' at %g: %g vs %g", act_names[a], x, vapo_act_d1(a, x), d1);
            CHECK(fabs(d2 - vapo_act_d2(a, x)) < 2e-3, "%s'' at %g: %g vs %g", act_names[a], x, vapo_act_d2(a, x), d2);
        }
    be->destroy(be);
    return test_finish("test_layers");
}
