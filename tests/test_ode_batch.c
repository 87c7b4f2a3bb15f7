/* Tests for engine/ode_batch.c: vapo_ode_solve_backend against the host
 * solver vapo_ode_solve (which test_ode.c checks against exact solutions and
 * SciPy) on the CPU backend, on a linear field with known solution and on
 * the real model field of a tiny network; then the same solves on CUDA
 * against the CPU. Without a usable CUDA device the CUDA part prints
 * "skipped: no CUDA device" and passes, unless VAPO_TEST_REQUIRE_CUDA=1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "vapo/error.h"
#include "vapo/model.h"
#include "vapo/ode_batch.h"

/* ---- the field: damped rotations ------------------------------------------------
 * A row is (x, y, a, w) with dx/dt = -a x - w y, dy/dt = w x - a y and a, w
 * constant: linear in (x, y), so the solution is known, and one batch holds
 * easy and stiff rows (w from 0.1 to 20). `limit` > 0 makes F non-finite
 * where |x| > limit, for the failure paths. */

#define DIM 4
#define ROWS 6
static const float rows_aw[ROWS][2] = {{0.3f, 0.5f}, {0.1f, 20.0f}, {1.0f, 4.0f},
                                       {2.0f, 1.0f}, {0.0f, 8.0f},  {-0.8f, 0.1f}};

typedef struct {
    int calls;
    long long points;
    float limit;
} field_ctx;

static int rot_field(void *ctx, int count, const float *p, float *out)
{
    field_ctx *c = ctx;
    c->calls++;
    c->points += count;
    for (int n = 0; n < count; n++) {
        const float *r = p + DIM * n;
        float *o = out + DIM * n;
        o[0] = -r[2] * r[0] - r[3] * r[1];
        o[1] = r[3] * r[0] - r[2] * r[1];
        o[2] = o[3] = 0.0f;
        if (c->limit > 0 && fabsf(r[0]) > c->limit)
            o[0] = NAN;
    }
    return 0;
}

/* The same field on backend memory: through the host, which is the test's
 * business; the solver only sees backend pointers. */
typedef struct {
    vapo_backend *be;
    field_ctx *f;
    float p[ROWS * DIM], out[ROWS * DIM];
} dev_field;

static int rot_field_backend(void *ctx, int count, const float *p, float *out)
{
    dev_field *d = ctx;
    const size_t bytes = sizeof(float) * DIM * count;
    d->be->download(d->be, d->p, p, bytes);
    rot_field(d->f, count, d->p, d->out);
    d->be->upload(d->be, out, d->out, bytes);
    return 0;
}

static void initial_rows(float *x)
{
    for (int i = 0; i < ROWS; i++) {
        float *r = x + DIM * i;
        r[0] = 1.0f, r[1] = 0.25f, r[2] = rows_aw[i][0], r[3] = rows_aw[i][1];
    }
}

static void exact_row(const float *x0, double t, double *x)
{
    const double a = x0[2], w = x0[3], d = exp(-a * t), cs = cos(w * t), sn = sin(w * t);
    x[0] = d * (cs * x0[0] - sn * x0[1]);
    x[1] = d * (sn * x0[0] + cs * x0[1]);
}

/* Solves the rows with the host solver (be NULL) or the batch driver on be. */
static int solve_rows(vapo_backend *be, const vapo_ode_config *c, float *x, int *nfe, field_ctx *fc)
{
    if (!be)
        return vapo_ode_solve(c, ROWS, DIM, x, rot_field, fc, nfe, NULL, NULL);
    const size_t bytes = sizeof(float) * ROWS * DIM;
    float *dev = be->alloc(be, bytes);
    dev_field d = {.be = be, .f = fc};
    be->upload(be, dev, x, bytes);
    int rc = vapo_ode_solve_backend(c, be, ROWS, DIM, dev, rot_field_backend, &d, nfe, NULL, NULL);
    be->download(be, x, dev, bytes);
    be->free(be, dev);
    return rc;
}

/* ---- comparing two solves --------------------------------------------------------- */

typedef struct {
    int rc;
    char err[256];
    float x[ROWS * DIM];
    int nfe[ROWS];
    field_ctx fc;
} solve_result;

static void run_rows(vapo_backend *be, const vapo_ode_config *c, float limit, solve_result *r)
{
    memset(r, 0, sizeof *r);
    r->fc.limit = limit;
    initial_rows(r->x);
    r->rc = solve_rows(be, c, r->x, r->nfe, &r->fc);
    snprintf(r->err, sizeof r->err, "%s", r->rc ? vapo_last_error() : "");
}

static long long sum_nfe(const int *nfe, int n)
{
    long long s = 0;
    for (int i = 0; i < n; i++)
        s += nfe[i];
    return s;
}

/* Checks that b matches a: the same outcome, per-row NFE within nfe_slack,
 * states within tol (relative above 1); prints what it saw. The batch driver
 * evaluates running rows only: points == sum of NFE, unless `wasteful`. */
static void check_same(const char *what, const solve_result *a, const solve_result *b, int nfe_slack, double tol,
                       int wasteful)
{
    int nfe_diff = 0, rows_diff = 0;
    double dx = 0;
    for (int i = 0; i < ROWS; i++) {
        int d = abs(a->nfe[i] - b->nfe[i]);
        nfe_diff = d > nfe_diff ? d : nfe_diff;
        rows_diff += d != 0;
    }
    for (int i = 0; i < ROWS * DIM; i++)
        dx = fmax(dx, fabs((double)a->x[i] - b->x[i]) / fmax(1.0, fabs(a->x[i])));
    printf("  %-28s NFE %lld vs %lld (%d rows differ, by <= %d), max |dx| %.2e, %d calls, %lld points\n", what,
           sum_nfe(a->nfe, ROWS), sum_nfe(b->nfe, ROWS), rows_diff, nfe_diff, dx, b->fc.calls, b->fc.points);
    CHECK(a->rc == b->rc && strcmp(a->err, b->err) == 0, "%s: outcomes differ:\n    '%s'\n    '%s'", what, a->err,
          b->err);
    CHECK(nfe_diff <= nfe_slack, "%s: NFE differ by %d > %d", what, nfe_diff, nfe_slack);
    CHECK(dx <= tol, "%s: states differ by %.3e > %.1e", what, dx, tol);
    CHECK(wasteful || b->fc.points == sum_nfe(b->nfe, ROWS), "%s: %lld points evaluated for %lld NFE", what,
          b->fc.points, sum_nfe(b->nfe, ROWS));
}

static vapo_ode_config method_config(vapo_ode_method m, int steps)
{
    vapo_ode_config c = vapo_ode_config_default();
    c.method = m;
    c.steps = steps;
    return c;
}

/* The rk45 and fixed-step cases the CPU and CUDA parity both run. */
typedef struct {
    const char *name;
    vapo_ode_config cfg;
    float limit;
    int wasteful; /* fixed step with a failing row: it finishes its step */
} rows_case;

enum { MAX_CASES = 10 };

static int rows_cases(rows_case *out)
{
    vapo_ode_config rk = vapo_ode_config_default(), tight = rk, first = rk, shared = rk, few = rk;
    tight.rtol = tight.atol = 1e-7;
    first.h0 = 0.05;
    vapo_ode_config first_nan = rk; /* over-long first steps: NaN, rejected, shrunk */
    first_nan.h0 = 1.0;
    shared.shared_step = 1;
    few.max_nfe = 60;
    const rows_case all[MAX_CASES] = {
        {"rk45 1e-4", rk, 0, 0},
        {"rk45 1e-7", tight, 0, 0},
        {"rk45 h0 0.05", first, 0, 0},
        {"rk45 shared step", shared, 0, 0},
        {"rk45 max_nfe 60 (fails)", few, 0, 0},
        {"rk45 h0 1, NaN at |x|>4", first_nan, 4.0f, 0},
        {"euler 50", method_config(VAPO_ODE_EULER, 50), 0, 0},
        {"heun 50", method_config(VAPO_ODE_HEUN, 50), 0, 0},
        {"rk4 50", method_config(VAPO_ODE_RK4, 50), 0, 0},
        {"rk4 50, NaN at |x|>1.5 (fails)", method_config(VAPO_ODE_RK4, 50), 1.5f, 1},
    };
    memcpy(out, all, sizeof all);
    return MAX_CASES;
}

/* ---- tests on the CPU backend ---------------------------------------------------- */

/* (a) rk45 on the rows against the exact solution, per row. */
static void test_exact(vapo_backend *cpu)
{
    vapo_ode_config c = vapo_ode_config_default();
    c.rtol = c.atol = 1e-6;
    solve_result r;
    run_rows(cpu, &c, 0, &r);
    CHECK(r.rc == 0, "exact: %s", r.err);
    float x0[ROWS * DIM];
    initial_rows(x0);
    for (int i = 0; i < ROWS; i++) {
        double ex[2];
        exact_row(x0 + DIM * i, c.t_end, ex);
        const float *x = r.x + DIM * i;
        double err = fmax(fabs(x[0] - ex[0]), fabs(x[1] - ex[1]));
        /* the phase error grows with the angle turned (30 rad for w = 20) */
        double bound = (1 + fabs(x0[DIM * i + 3]) * c.t_end) * 2 * (c.atol + c.rtol);
        printf("  exact: a %5.2f w %5.2f: NFE %4d, error %.2e (bound %.1e)\n", x0[DIM * i + 2], x0[DIM * i + 3],
               r.nfe[i], err, bound);
        CHECK(err < bound, "row %d: error %.3e >= %.1e", i, err, bound);
    }
    CHECK(r.nfe[1] > 3 * r.nfe[0], "the stiff row should need many more NFE (%d vs %d)", r.nfe[1], r.nfe[0]);
}

/* Every case solved on `ref` (NULL: the host solver) and by the batch driver
 * on `be`. Both see the same error norms up to the float state (and the
 * order of CUDA's sums); one attempt (6 NFE) is the slack where that turns a
 * decision. */
static void compare_cases(const char *prefix, vapo_backend *ref, vapo_backend *be)
{
    rows_case cases[MAX_CASES];
    int n = rows_cases(cases);
    for (int k = 0; k < n; k++) {
        solve_result a, b;
        run_rows(ref, &cases[k].cfg, cases[k].limit, &a);
        run_rows(be, &cases[k].cfg, cases[k].limit, &b);
        char what[64];
        snprintf(what, sizeof what, "%s%s", prefix, cases[k].name);
        const int fixed = cases[k].cfg.method != VAPO_ODE_RK45;
        check_same(what, &a, &b, fixed ? 0 : 6, 1e-5, cases[k].wasteful);
    }
}

static int record(void *ctx, const vapo_ode_progress *p)
{
    *(vapo_ode_progress *)ctx = *p;
    return 0;
}

static int cancel(void *ctx, const vapo_ode_progress *p)
{
    (void)ctx;
    return p->calls == 3;
}

static void test_progress(vapo_backend *cpu)
{
    vapo_ode_config c = vapo_ode_config_default();
    float x[ROWS * DIM], *dev = cpu->alloc(cpu, sizeof x);
    field_ctx fc = {0};
    dev_field d = {.be = cpu, .f = &fc};
    int nfe[ROWS];
    vapo_ode_progress last = {0};
    initial_rows(x);
    cpu->upload(cpu, dev, x, sizeof x);
    CHECK(vapo_ode_solve_backend(&c, cpu, ROWS, DIM, dev, rot_field_backend, &d, nfe, record, &last) == 0, "%s",
          vapo_last_error());
    CHECK(last.calls == fc.calls && last.done == ROWS && last.nfe == sum_nfe(nfe, ROWS) && last.t_min == c.t_end,
          "last progress: calls %d (%d), done %d, nfe %lld (%lld), t_min %g", last.calls, fc.calls, last.done,
          last.nfe, sum_nfe(nfe, ROWS), last.t_min);
    CHECK(vapo_ode_solve_backend(&c, cpu, ROWS, DIM, dev, rot_field_backend, &d, nfe, cancel, NULL) < 0 &&
              strstr(vapo_last_error(), "cancelled"),
          "cancel: %s", vapo_last_error());
    CHECK(vapo_ode_solve_backend(&c, cpu, 0, DIM, dev, rot_field_backend, &d, nfe, NULL, NULL) == 0, "n = 0");
    c.rtol = 0;
    CHECK(vapo_ode_solve_backend(&c, cpu, ROWS, DIM, dev, rot_field_backend, &d, nfe, NULL, NULL) < 0 &&
              strstr(vapo_last_error(), "rtol"),
          "bad config: %s", vapo_last_error());
    cpu->free(cpu, dev);
}

/* ---- the model field ------------------------------------------------------------- */

#define SAMPLES 5

/* The tiny network with its initial weights moved off zero (the ReZero
 * scales start at 0), so the field is not nearly linear. */
static float *tiny_params(size_t *np)
{
    vapo_backend *cpu = vapo_backend_cpu(0);
    vapo_arch a;
    vapo_arch_preset("tiny", &a);
    vapo_net *net = vapo_net_create(cpu, &a);
    vapo_net_init(net, 3);
    *np = vapo_net_param_count(net);
    float *p = malloc(sizeof(float) * *np), *dp = malloc(sizeof(float) * *np);
    memcpy(p, vapo_net_params(net), sizeof(float) * *np);
    fill_normal(dp, *np, 11, 0.1f);
    for (size_t i = 0; i < *np; i++)
        p[i] += dp[i];
    free(dp);
    vapo_net_free(net);
    cpu->destroy(cpu);
    return p;
}

static vapo_model *tiny_model(vapo_backend *be, const float *params, size_t np)
{
    vapo_arch a;
    vapo_arch_preset("tiny", &a);
    vapo_net *net = vapo_net_create(be, &a);
    be->upload(be, vapo_net_params(net), params, sizeof(float) * np);
    vapo_loss_config loss = vapo_loss_config_default();
    return vapo_model_wrap(net, &loss);
}

/* Samples 0..SAMPLES-1 of seed 1: host solver (host NULL) or batch driver. */
static int sample(vapo_model *m, int on_backend, const vapo_ode_config *c, float *x, int *nfe)
{
    vapo_backend *be = vapo_net_backend(m->net);
    const int d = (int)vapo_net_input_size(m->net);
    const size_t bytes = sizeof(float) * SAMPLES * d;
    vapo_model_noise(m, 1, 0, SAMPLES, x);
    if (!on_backend)
        return vapo_ode_solve(c, SAMPLES, d, x, vapo_model_field, m, nfe, NULL, NULL);
    float *dev = be->alloc(be, bytes);
    be->upload(be, dev, x, bytes);
    int rc = vapo_ode_solve_backend(c, be, SAMPLES, d, dev, vapo_model_field_backend, m, nfe, NULL, NULL);
    be->download(be, x, dev, bytes);
    be->free(be, dev);
    return rc;
}

/* Compares two sample sets: NFE within slack, states within tol. */
static void check_samples(const char *what, int d, const float *a, const int *na, const float *b, const int *nb,
                          int slack, double tol)
{
    int nfe_diff = 0;
    for (int i = 0; i < SAMPLES; i++)
        nfe_diff = abs(na[i] - nb[i]) > nfe_diff ? abs(na[i] - nb[i]) : nfe_diff;
    double dx = 0, scale = 0;
    for (int i = 0; i < SAMPLES * d; i++) {
        dx = fmax(dx, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs(a[i]));
    }
    printf("  %-28s NFE %lld vs %lld (differ by <= %d), max |dx| %.2e (max |x| %.2f)\n", what, sum_nfe(na, SAMPLES),
           sum_nfe(nb, SAMPLES), nfe_diff, dx, scale);
    CHECK(nfe_diff <= slack, "%s: NFE differ by %d > %d", what, nfe_diff, slack);
    CHECK(dx <= tol * fmax(1.0, scale), "%s: samples differ by %.3e > %.1e", what, dx, tol);
}

/* (d) The model's field: host path vs backend path on the CPU. */
static void test_model_cpu(vapo_backend *cpu, const float *params, size_t np)
{
    vapo_model *m = tiny_model(cpu, params, np);
    const int d = (int)vapo_net_input_size(m->net);
    float *xh = malloc(sizeof(float) * SAMPLES * d), *xb = malloc(sizeof(float) * SAMPLES * d);
    int nh[SAMPLES], nb[SAMPLES];
    const vapo_ode_method methods[] = {VAPO_ODE_RK45, VAPO_ODE_RK4};
    for (int k = 0; k < 2; k++) {
        vapo_ode_config c = method_config(methods[k], 20);
        CHECK(sample(m, 0, &c, xh, nh) == 0 && sample(m, 1, &c, xb, nb) == 0, "model: %s", vapo_last_error());
        char what[64];
        snprintf(what, sizeof what, "model %s, host vs cpu", vapo_ode_method_name(c.method));
        check_samples(what, d, xh, nh, xb, nb, k == 0 ? 6 : 0, 1e-5);
    }
    free(xh), free(xb);
    vapo_model_free(m);
}

/* (e) Energy rows with VAPO_POOL_GRADNORM (the OOD scores' rows): phi and
 * |grad Phi| as the model computes them, next to plain energy rows and a
 * trajectory, and the same value whatever the row's company. */
static void test_gradnorm(vapo_backend *cpu, const float *params, size_t np)
{
    vapo_model *m = tiny_model(cpu, params, np);
    const int d = (int)vapo_net_input_size(m->net);
    float *x = malloc(sizeof(float) * 3 * d), *g = malloc(sizeof(float) * 3 * d), phi[3];
    vapo_model_noise(m, 4, 0, 3, x);
    CHECK(!vapo_model_energy_grad(m, 3, x, phi, g), "model: %s", vapo_last_error());
    struct vapo_pool *pool = vapo_model_pool(m);
    vapo_ode_config c = method_config(VAPO_ODE_RK4, 5);
    const int traj = vapo_pool_add(pool, &c, x, VAPO_POOL_ENERGY);
    const int plain = vapo_pool_add(pool, NULL, x + d, 0);
    const int a = vapo_pool_add(pool, NULL, x + d, VAPO_POOL_GRADNORM);
    CHECK(vapo_pool_wants(pool, plain) == 1 && vapo_pool_wants(pool, a) == 2, "wants: plain %d, gradnorm %d",
          vapo_pool_wants(pool, plain), vapo_pool_wants(pool, a));
    while (vapo_pool_waiting(pool))
        CHECK(vapo_pool_step(pool, NULL, 0) >= 0, "step: %s", vapo_last_error());
    const int alone = vapo_pool_add(pool, NULL, x + 2 * d, VAPO_POOL_GRADNORM);
    CHECK(vapo_pool_step(pool, NULL, 0) == 1, "one row alone");
    vapo_pool_result ra, rp, rl;
    vapo_pool_take(pool, a, NULL, &ra);
    vapo_pool_take(pool, plain, NULL, &rp);
    vapo_pool_take(pool, alone, NULL, &rl);
    vapo_pool_take(pool, traj, NULL, NULL);
    for (int i = 1; i < 3; i++) {
        const vapo_pool_result *r = i == 1 ? &ra : &rl;
        double want = sqrt(dotd(g + (size_t)i * d, g + (size_t)i * d, d));
        CHECK(r->phi == phi[i] && fabs(r->gnorm - want) <= 1e-6 * want, "row %d: phi %g (want %g), |grad| %g (want %g)",
              i, r->phi, phi[i], r->gnorm, want);
    }
    CHECK(rp.phi == ra.phi && rp.gnorm == 0, "a plain energy row: phi %g (%g), gnorm %g", rp.phi, ra.phi, rp.gnorm);
    vapo_pool_free(pool);
    free(x), free(g);
    vapo_model_free(m);
}

/* ---- CUDA against CPU ------------------------------------------------------------ */

static void test_cuda(vapo_backend *cpu, vapo_backend *cuda, const float *params, size_t np)
{
    compare_cases("cuda: ", cpu, cuda);
    vapo_model *mc = tiny_model(cpu, params, np), *mg = tiny_model(cuda, params, np);
    const int d = (int)vapo_net_input_size(mc->net);
    float *xc = malloc(sizeof(float) * SAMPLES * d), *xg = malloc(sizeof(float) * SAMPLES * d);
    int nc[SAMPLES], ng[SAMPLES];
    vapo_ode_config c = vapo_ode_config_default();
    CHECK(sample(mc, 1, &c, xc, nc) == 0 && sample(mg, 1, &c, xg, ng) == 0, "model: %s", vapo_last_error());
    /* cuDNN and BLIS sum in different orders: F agrees to ~1e-6 relative */
    check_samples("cuda: model rk45 vs cpu", d, xc, nc, xg, ng, 6, 1e-4);
    free(xc), free(xg);
    vapo_model_free(mc);
    vapo_model_free(mg);
}

int main(void)
{
    vapo_backend *cpu = vapo_backend_cpu(0);
    size_t np;
    float *params = tiny_params(&np);
    test_exact(cpu);
    compare_cases("", NULL, cpu); /* (b), (c) and the failure paths */
    test_progress(cpu);
    test_model_cpu(cpu, params, np);
    test_gradnorm(cpu, params, np);

    const char *require = getenv("VAPO_TEST_REQUIRE_CUDA");
    vapo_backend *cuda = vapo_backend_cuda(0);
    if (cuda) {
        test_cuda(cpu, cuda, params, np);
        cuda->destroy(cuda);
    } else {
        printf("cuda: skipped: no CUDA device (%s)\n", vapo_last_error());
        CHECK(!(require && strcmp(require, "1") == 0), "VAPO_TEST_REQUIRE_CUDA is set");
    }
    free(params);
    cpu->destroy(cpu);
    return test_finish("test_ode_batch");
}
