/* Tests for engine/ode.c: exact solutions, convergence orders, RK45 error
 * control (per trajectory and shared), ask/tell == batch driver bit for bit,
 * config validation and failure paths. Also writes the RK45 results that
 * tests/ode_scipy_ref.py compares with SciPy's solve_ivp. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vapo/error.h"
#include "vapo/ode.h"
#include "testutil.h"


/* ---- fields (float32 arithmetic, like the network; mirrored in ode_scipy_ref.py) ---- */

typedef struct {
    int dim;
    int calls;         /* batched calls */
    long long points;  /* points evaluated */
    int max_count;
} field_ctx;

static void count_call(field_ctx *c, int count)
{
    c->calls++;
    c->points += count;
    if (count > c->max_count)
        c->max_count = count;
}

/* dx_i/dt = -k_i x_i, k = 0.5, 1, 2, 4 repeating */
static const float decay_k[4] = {0.5f, 1.0f, 2.0f, 4.0f};
static int field_decay(void *ctx, int count, const float *p, float *out)
{
    field_ctx *c = ctx;
    count_call(c, count);
    for (long i = 0; i < (long)count * c->dim; i++)
        out[i] = -decay_k[(i % c->dim) % 4] * p[i];
    return 0;
}

/* 2x2 rotation plus decay: A = [[-a, -w], [w, -a]] */
#define ROT_A 0.3f
#define ROT_W 3.0f
static int field_rotdecay(void *ctx, int count, const float *p, float *out)
{
    count_call(ctx, count);
    for (int n = 0; n < count; n++) {
        float x = p[2 * n], y = p[2 * n + 1];
        out[2 * n] = -ROT_A * x - ROT_W * y;
        out[2 * n + 1] = ROT_W * x - ROT_A * y;
    }
    return 0;
}

/* logistic, per component */
static int field_logistic(void *ctx, int count, const float *p, float *out)
{
    field_ctx *c = ctx;
    count_call(c, count);
    for (long i = 0; i < (long)count * c->dim; i++)
        out[i] = p[i] * (1.0f - p[i]);
    return 0;
}

/* (x, y, w): rotation at angular speed w; w is a constant component, so one
 * batch can hold easy and hard trajectories while F depends on the point only. */
static int field_osc(void *ctx, int count, const float *p, float *out)
{
    count_call(ctx, count);
    for (int n = 0; n < count; n++) {
        float x = p[3 * n], y = p[3 * n + 1], w = p[3 * n + 2];
        out[3 * n] = -w * y;
        out[3 * n + 1] = w * x;
        out[3 * n + 2] = 0;
    }
    return 0;
}

/* The osc field on a flattened state of dimension 3m (ctx->dim = 3m). */
static int field_osc_flat(void *ctx, int count, const float *p, float *out)
{
    field_ctx *c = ctx;
    return field_osc(ctx, count * c->dim / 3, p, out);
}

static int field_nan(void *ctx, int count, const float *p, float *out)
{
    field_ctx *c = ctx;
    (void)p;
    count_call(c, count);
    for (long i = 0; i < (long)count * c->dim; i++)
        out[i] = NAN;
    return 0;
}

/* osc, but NaN once the point leaves |x|, |y| <= 10: an over-long trial step
 * then yields NaN, as a network can far outside its data. */
static int field_osc_nan(void *ctx, int count, const float *p, float *out)
{
    field_osc(ctx, count, p, out);
    for (int n = 0; n < count; n++)
        if (fabsf(p[3 * n]) > 10 || fabsf(p[3 * n + 1]) > 10)
            out[3 * n] = out[3 * n + 1] = NAN;
    return 0;
}

static int field_error(void *ctx, int count, const float *p, float *out)
{
    (void)ctx, (void)count, (void)p, (void)out;
    return vapo_fail("network exploded");
}

/* ---- exact solutions ---- */

static void exact_decay(int dim, const float *x0, double t, double *x)
{
    for (int i = 0; i < dim; i++)
        x[i] = x0[i] * exp(-(double)decay_k[i % 4] * t);
}

static void exact_rotdecay(int dim, const float *x0, double t, double *x)
{
    (void)dim;
    double e = exp(-(double)ROT_A * t), c = cos((double)ROT_W * t), s = sin((double)ROT_W * t);
    x[0] = e * (x0[0] * c - x0[1] * s);
    x[1] = e * (x0[0] * s + x0[1] * c);
}

static void exact_logistic(int dim, const float *x0, double t, double *x)
{
    for (int i = 0; i < dim; i++)
        x[i] = x0[i] * exp(t) / (1 - x0[i] + x0[i] * exp(t));
}

static void exact_osc(int dim, const float *x0, double t, double *x)
{
    (void)dim;
    double c = cos(x0[2] * t), s = sin(x0[2] * t);
    x[0] = x0[0] * c - x0[1] * s;
    x[1] = x0[0] * s + x0[1] * c;
    x[2] = x0[2];
}

typedef struct {
    const char *name;
    vapo_field_fn field;
    void (*exact)(int dim, const float *x0, double t, double *x);
    int dim;
    float x0[4];
    double t_end;
} problem;

static const problem problems[] = {
    {"decay", field_decay, exact_decay, 4, {1.0f, -2.0f, 0.5f, 3.0f}, 1.5},
    {"rotdecay", field_rotdecay, exact_rotdecay, 2, {1.0f, 0.5f}, 1.5},
    {"logistic", field_logistic, exact_logistic, 3, {0.1f, 0.5f, 1.5f}, 3.0},
};
#define N_PROBLEMS ((int)(sizeof problems / sizeof problems[0]))

/* Solves one trajectory of pr; returns max |x - exact| (and NFE). */
static double solve_error(const problem *pr, const vapo_ode_config *cfg, int *nfe)
{
    float x[4];
    double ex[4];
    memcpy(x, pr->x0, sizeof x);
    field_ctx fc = {.dim = pr->dim};
    int rc = vapo_ode_solve(cfg, 1, pr->dim, x, pr->field, &fc, nfe, NULL, NULL);
    CHECK(rc == 0, "%s %s: %s", pr->name, vapo_ode_method_name(cfg->method), vapo_last_error());
    pr->exact(pr->dim, pr->x0, cfg->t_end, ex);
    double err = 0;
    for (int i = 0; i < pr->dim; i++)
        err = fmax(err, fabs(x[i] - ex[i]));
    return err;
}

static vapo_ode_config fixed_config(vapo_ode_method m, int steps, double t_end)
{
    vapo_ode_config c = vapo_ode_config_default();
    c.method = m;
    c.steps = steps;
    c.t_end = t_end;
    c.max_nfe = 1000000;
    return c;
}

/* ---- tests ---- */

static void test_defaults_and_names(void)
{
    vapo_ode_config c = vapo_ode_config_default();
    CHECK(c.method == VAPO_ODE_RK45 && c.t_end == 1.5 && c.rtol == 1e-4 && c.atol == 1e-4 &&
              c.steps == 100 && c.max_nfe == 10000 && c.h0 == 0 && c.shared_step == 0,
          "unexpected defaults");
    CHECK(vapo_ode_config_validate(&c) == 0, "%s", vapo_last_error());

    const char *names[] = {"rk45", "euler", "heun", "rk4"};
    for (int i = 0; i < 4; i++) {
        vapo_ode_method m = (vapo_ode_method)-1;
        CHECK(vapo_ode_method_parse(names[i], &m) == 0 && strcmp(vapo_ode_method_name(m), names[i]) == 0,
              "round trip of %s", names[i]);
    }
    vapo_ode_method m;
    CHECK(vapo_ode_method_parse("RK45", &m) == 0 && m == VAPO_ODE_RK45, "case-insensitive parse");
    CHECK(vapo_ode_method_parse("rk5", &m) < 0 && strstr(vapo_last_error(), "rk5"), "%s", vapo_last_error());
    CHECK(vapo_ode_method_parse("", &m) < 0, "empty name");
    CHECK(vapo_ode_method_parse(NULL, &m) < 0, "NULL name");
    CHECK(strcmp(vapo_ode_method_name((vapo_ode_method)42), "unknown") == 0, "name of bad method");
}

static void expect_invalid(vapo_ode_config c, const char *field_name)
{
    float x[2] = {1, 2};
    field_ctx fc = {.dim = 2};
    CHECK(vapo_ode_config_validate(&c) < 0 && strstr(vapo_last_error(), field_name),
          "%s: got '%s'", field_name, vapo_last_error());
    vapo_traj *tr = vapo_traj_create(&c, 2, x);
    CHECK(tr == NULL, "traj_create accepted bad %s", field_name);
    vapo_traj_free(tr);
    CHECK(vapo_ode_solve(&c, 1, 2, x, field_decay, &fc, NULL, NULL, NULL) < 0 && fc.calls == 0,
          "solve accepted bad %s", field_name);
}

static void test_invalid_configs(void)
{
    vapo_ode_config d = vapo_ode_config_default(), c;
    c = d, c.rtol = NAN, expect_invalid(c, "rtol");
    c = d, c.rtol = -1e-4, expect_invalid(c, "rtol");
    c = d, c.rtol = 0, expect_invalid(c, "rtol");
    c = d, c.atol = -1, expect_invalid(c, "atol");
    c = d, c.atol = NAN, expect_invalid(c, "atol");
    c = d, c.atol = INFINITY, expect_invalid(c, "atol");
    c = d, c.t_end = 0, expect_invalid(c, "t_end");
    c = d, c.t_end = -1, expect_invalid(c, "t_end");
    c = d, c.t_end = NAN, expect_invalid(c, "t_end");
    c = d, c.t_end = INFINITY, expect_invalid(c, "t_end");
    c = d, c.h0 = -0.1, expect_invalid(c, "h0");
    c = d, c.h0 = NAN, expect_invalid(c, "h0");
    c = d, c.max_nfe = 0, expect_invalid(c, "max_nfe");
    c = d, c.method = (vapo_ode_method)7, expect_invalid(c, "method");
    c = d, c.method = VAPO_ODE_EULER, c.steps = 0, expect_invalid(c, "steps");
    c = d, c.method = VAPO_ODE_RK4, c.steps = 100001, expect_invalid(c, "steps");
    c = d, c.method = VAPO_ODE_RK4, c.steps = 5000, expect_invalid(c, "max_nfe"); /* 20000 NFE > 10000 */
    /* Fixed-step configs do not care about tolerances, rk45 not about steps. */
    c = d, c.method = VAPO_ODE_HEUN, c.rtol = NAN, c.atol = -1;
    CHECK(vapo_ode_config_validate(&c) == 0, "heun rejected unused tolerances: %s", vapo_last_error());
    c = d, c.steps = 0;
    CHECK(vapo_ode_config_validate(&c) == 0, "rk45 rejected unused steps: %s", vapo_last_error());
    CHECK(vapo_ode_config_validate(NULL) < 0, "NULL config");

    /* bad arguments */
    float x[2] = {1, 2};
    field_ctx fc = {.dim = 2};
    CHECK(vapo_traj_create(&d, 0, x) == NULL, "dim 0");
    CHECK(vapo_traj_create(&d, 2, NULL) == NULL, "NULL x0");
    CHECK(vapo_ode_solve(&d, 1, 0, x, field_decay, &fc, NULL, NULL, NULL) < 0, "dim 0");
    CHECK(vapo_ode_solve(&d, -1, 2, x, field_decay, &fc, NULL, NULL, NULL) < 0, "n < 0");
    CHECK(vapo_ode_solve(&d, 1, 2, x, NULL, &fc, NULL, NULL, NULL) < 0, "NULL field");
    CHECK(vapo_ode_solve(&d, 0, 2, NULL, field_decay, &fc, NULL, NULL, NULL) == 0 && fc.calls == 0,
          "n = 0 is an empty solve");
}

/* Every method on every problem against the exact solution. */
static void test_exact_solutions(void)
{
    struct { vapo_ode_method m; int steps; double bound; } fixed[] = {
        {VAPO_ODE_EULER, 2000, 5e-3},
        {VAPO_ODE_HEUN, 200, 5e-4},
        {VAPO_ODE_RK4, 50, 2e-5},
    };
    for (int p = 0; p < N_PROBLEMS; p++) {
        const problem *pr = &problems[p];
        for (int k = 0; k < 3; k++) {
            vapo_ode_config c = fixed_config(fixed[k].m, fixed[k].steps, pr->t_end);
            int nfe = 0;
            double err = solve_error(pr, &c, &nfe);
            printf("  %-9s %-5s steps %4d: max error %.2e (NFE %d)\n", pr->name,
                   vapo_ode_method_name(c.method), c.steps, err, nfe);
            CHECK(err < fixed[k].bound, "%s %s error %.3e >= %.1e", pr->name,
                  vapo_ode_method_name(c.method), err, fixed[k].bound);
            int per_step = fixed[k].m == VAPO_ODE_EULER ? 1 : fixed[k].m == VAPO_ODE_HEUN ? 2 : 4;
            CHECK(nfe == per_step * c.steps, "NFE %d", nfe);
        }
        vapo_ode_config c = vapo_ode_config_default();
        c.t_end = pr->t_end;
        c.rtol = c.atol = 1e-6;
        int nfe = 0;
        double err = solve_error(pr, &c, &nfe);
        printf("  %-9s rk45  tol 1e-6  : max error %.2e (NFE %d)\n", pr->name, err, nfe);
        CHECK(err < 1e-5, "%s rk45 error %.3e", pr->name, err);
    }
}

/* Slope of log(error) against log(h) by least squares. */
static double order_slope(const problem *pr, vapo_ode_method m, const int *steps, int n)
{
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int i = 0; i < n; i++) {
        vapo_ode_config c = fixed_config(m, steps[i], pr->t_end);
        double err = solve_error(pr, &c, NULL);
        double lx = log(pr->t_end / steps[i]), ly = log(err);
        printf("  %-9s %-5s steps %4d: error %.3e\n", pr->name, vapo_ode_method_name(m), steps[i], err);
        sx += lx, sy += ly, sxx += lx * lx, sxy += lx * ly;
    }
    return (n * sxy - sx * sy) / (n * sxx - sx * sx);
}

static void test_convergence_order(void)
{
    /* Step counts in the asymptotic range, with errors far above the float
     * round-off of F (~1e-7): logistic is smoother, so RK4 needs fewer steps. */
    static const int euler[] = {100, 200, 400}, heun[] = {25, 50, 100};
    static const int rk4_rot[] = {10, 20, 40}, rk4_log[] = {6, 12, 24};
    for (int p = 1; p < N_PROBLEMS; p++) { /* rotdecay, logistic */
        const struct { vapo_ode_method m; const int *steps; double order; } cases[] = {
            {VAPO_ODE_EULER, euler, 1},
            {VAPO_ODE_HEUN, heun, 2},
            {VAPO_ODE_RK4, p == 1 ? rk4_rot : rk4_log, 4},
        };
        for (int k = 0; k < 3; k++) {
            double slope = order_slope(&problems[p], cases[k].m, cases[k].steps, 3);
            printf("  %-9s %-5s observed order %.3f\n", problems[p].name, vapo_ode_method_name(cases[k].m),
                   slope);
            CHECK(fabs(slope - cases[k].order) < 0.2, "%s %s order %.3f, expected %g", problems[p].name,
                  vapo_ode_method_name(cases[k].m), slope, cases[k].order);
        }
    }
}

/* Global error of RK45 stays a small multiple of the tolerance. */
static void test_rk45_tolerance(void)
{
    const double tols[] = {1e-3, 1e-4, 1e-5};
    for (int p = 0; p < N_PROBLEMS; p++) {
        const problem *pr = &problems[p];
        int last_nfe = 0;
        for (int k = 0; k < 3; k++) {
            vapo_ode_config c = vapo_ode_config_default();
            c.t_end = pr->t_end;
            c.rtol = c.atol = tols[k];
            float x[4];
            double ex[4], worst = 0;
            memcpy(x, pr->x0, sizeof x);
            field_ctx fc = {.dim = pr->dim};
            int nfe = 0;
            CHECK(vapo_ode_solve(&c, 1, pr->dim, x, pr->field, &fc, &nfe, NULL, NULL) == 0, "%s",
                  vapo_last_error());
            pr->exact(pr->dim, pr->x0, pr->t_end, ex);
            for (int i = 0; i < pr->dim; i++)
                worst = fmax(worst, fabs(x[i] - ex[i]) / (c.atol + c.rtol * fabs(ex[i])));
            printf("  %-9s rk45 tol %.0e: error/tol %.3f, NFE %d\n", pr->name, tols[k], worst, nfe);
            CHECK(worst < 3, "%s tol %g: error is %.2f x tolerance", pr->name, tols[k], worst);
            CHECK(nfe > last_nfe, "NFE should grow as tolerance shrinks (%d after %d)", nfe, last_nfe);
            CHECK((nfe - 2) % 6 == 0, "RK45 NFE = 2 + 6 * attempts, got %d", nfe);
            last_nfe = nfe;
        }
    }
}

/* Solves the osc problem for the given frequencies in one batch. */
static int solve_osc(const vapo_ode_config *c, int n, const float *w, float *x, int *nfe, field_ctx *fc)
{
    for (int i = 0; i < n; i++) {
        x[3 * i] = 1.0f;
        x[3 * i + 1] = 0.25f;
        x[3 * i + 2] = w[i];
    }
    *fc = (field_ctx){.dim = 3};
    return vapo_ode_solve(c, n, 3, x, field_osc, fc, nfe, NULL, NULL);
}

static void test_per_trajectory_control(void)
{
    vapo_ode_config c = vapo_ode_config_default();
    const float w[3] = {0.5f, 20.0f, 4.0f};
    float xb[9], x1[3];
    int nfe_b[3], nfe_1;
    field_ctx fb, f1;
    CHECK(solve_osc(&c, 3, w, xb, nfe_b, &fb) == 0, "%s", vapo_last_error());
    printf("  batch NFE: w=0.5 -> %d, w=20 -> %d, w=4 -> %d; %d field calls, %lld points\n", nfe_b[0],
           nfe_b[1], nfe_b[2], fb.calls, fb.points);
    CHECK(nfe_b[1] > 3 * nfe_b[0], "hard trajectory should need many more NFE (%d vs %d)", nfe_b[1], nfe_b[0]);
    /* A finished trajectory stops costing work: points == sum of NFE, calls == max NFE. */
    CHECK(fb.points == (long long)nfe_b[0] + nfe_b[1] + nfe_b[2], "points %lld", fb.points);
    CHECK(fb.calls == nfe_b[1] && fb.max_count == 3, "calls %d, max count %d", fb.calls, fb.max_count);
    for (int i = 0; i < 3; i++) {
        CHECK(solve_osc(&c, 1, &w[i], x1, &nfe_1, &f1) == 0, "%s", vapo_last_error());
        CHECK(nfe_1 == nfe_b[i], "w=%g: NFE %d alone, %d in the batch", w[i], nfe_1, nfe_b[i]);
        CHECK(memcmp(x1, xb + 3 * i, sizeof x1) == 0, "w=%g: state differs alone vs batch", w[i]);
        double ex[3];
        float x0[3] = {1.0f, 0.25f, w[i]};
        exact_osc(3, x0, c.t_end, ex);
        /* Phase error grows with the angle turned (30 rad for w = 20), so the
         * global error of the fast one is ~10x the tolerance. */
        double err = fmax(fabs(xb[3 * i] - ex[0]), fabs(xb[3 * i + 1] - ex[1]));
        CHECK(err < (1 + w[i] * c.t_end) * (c.atol + c.rtol), "w=%g: error %.3e", w[i], err);
    }

    /* Shared step: the batch is one trajectory of dimension n*dim (SciPy's way). */
    vapo_ode_config cs = c;
    cs.shared_step = 1;
    float xs[9], xf[9];
    int nfe_s[3], nfe_f;
    field_ctx fs, ff;
    CHECK(solve_osc(&cs, 3, w, xs, nfe_s, &fs) == 0, "%s", vapo_last_error());
    printf("  shared-step NFE: %d for every sample (%d field calls of 3 points)\n", nfe_s[0], fs.calls);
    CHECK(nfe_s[0] == nfe_s[1] && nfe_s[1] == nfe_s[2], "shared NFE differ");
    CHECK(nfe_s[0] > 3 * nfe_b[0] && fs.points == 3LL * nfe_s[0] && fs.max_count == 3,
          "shared step should cost the easy sample more (%d vs %d)", nfe_s[0], nfe_b[0]);
    /* ... which is the same as flattening by hand. */
    for (int i = 0; i < 3; i++)
        xf[3 * i] = 1.0f, xf[3 * i + 1] = 0.25f, xf[3 * i + 2] = w[i];
    ff = (field_ctx){.dim = 9};
    CHECK(vapo_ode_solve(&c, 1, 9, xf, field_osc_flat, &ff, &nfe_f, NULL, NULL) == 0, "%s",
          vapo_last_error());
    CHECK(nfe_f == nfe_s[0] && memcmp(xf, xs, sizeof xs) == 0, "shared step != hand-flattened (NFE %d vs %d)",
          nfe_f, nfe_s[0]);
}

/* Driving vapo_traj by hand, one trajectory at a time in reverse order, gives
 * exactly what the batch driver gives. */
static void test_ask_tell_matches_solve(void)
{
    const vapo_ode_method methods[] = {VAPO_ODE_RK45, VAPO_ODE_EULER, VAPO_ODE_HEUN, VAPO_ODE_RK4};
    const float w[4] = {0.5f, 20.0f, 4.0f, 9.0f};
    for (int m = 0; m < 4; m++) {
        vapo_ode_config c = vapo_ode_config_default();
        c.method = methods[m];
        c.steps = 37;
        float xb[12];
        int nfe_b[4];
        field_ctx fb;
        CHECK(solve_osc(&c, 4, w, xb, nfe_b, &fb) == 0, "%s", vapo_last_error());
        for (int i = 3; i >= 0; i--) {
            float x0[3] = {1.0f, 0.25f, w[i]}, f[3], xh[3];
            field_ctx fc = {.dim = 3};
            vapo_traj *tr = vapo_traj_create(&c, 3, x0);
            CHECK(tr != NULL, "%s", vapo_last_error());
            if (!tr)
                continue;
            const float *q;
            while ((q = vapo_traj_query(tr)) != NULL) {
                field_osc(&fc, 1, q, f);
                CHECK(vapo_traj_tell(tr, f) == 0, "%s", vapo_last_error());
            }
            vapo_traj_copy_state(tr, xh);
            CHECK(vapo_traj_done(tr) && !vapo_traj_failed(tr) && vapo_traj_error(tr)[0] == 0, "not done cleanly");
            CHECK(vapo_traj_time(tr) == c.t_end, "%s: ends at t = %.17g", vapo_ode_method_name(c.method),
                  vapo_traj_time(tr));
            CHECK(vapo_traj_nfe(tr) == nfe_b[i] && vapo_traj_nfe(tr) == fc.calls, "%s w=%g: NFE %d vs %d",
                  vapo_ode_method_name(c.method), w[i], vapo_traj_nfe(tr), nfe_b[i]);
            CHECK(memcmp(xh, xb + 3 * i, sizeof xh) == 0, "%s w=%g: ask/tell state differs from solve",
                  vapo_ode_method_name(c.method), w[i]);
            CHECK((float)vapo_traj_state(tr)[0] == xh[0], "double state");
            int rejected, accepted = vapo_traj_steps(tr, &rejected);
            if (c.method == VAPO_ODE_RK45)
                CHECK(vapo_traj_nfe(tr) == 2 + 6 * (accepted + rejected), "rk45 NFE accounting");
            else
                CHECK(accepted == c.steps && rejected == 0, "fixed steps %d", accepted);
            CHECK(vapo_traj_tell(tr, f) < 0 && strstr(vapo_last_error(), "finished"), "tell after done");
            vapo_traj_free(tr);
        }
    }
    vapo_traj_free(NULL);
}

/* A given first step skips select_initial_step's probe; a far too long one is
 * rejected, also when the trial points make F non-finite. */
static void test_first_step(void)
{
    vapo_ode_config c = vapo_ode_config_default();
    const problem *pr = &problems[0];
    c.h0 = 0.05;
    int nfe;
    double err = solve_error(pr, &c, &nfe);
    CHECK(err < 3 * (c.atol + c.rtol * 3), "h0 0.05: error %.3e", err);
    CHECK((nfe - 1) % 6 == 0, "with h0 given, NFE = 1 + 6 * attempts, got %d", nfe);

    float x0[3] = {1.0f, 0.25f, 20.0f}, f[3];
    c.h0 = 10;
    for (int k = 0; k < 2; k++) {
        field_ctx fc = {.dim = 3};
        vapo_traj *tr = vapo_traj_create(&c, 3, x0);
        const float *q;
        while (tr && (q = vapo_traj_query(tr)) != NULL) {
            (k == 0 ? field_osc : field_osc_nan)(&fc, 1, q, f);
            vapo_traj_tell(tr, f);
        }
        int rejected = 0, accepted = vapo_traj_steps(tr, &rejected);
        CHECK(tr && !vapo_traj_failed(tr), "%s", vapo_traj_error(tr));
        CHECK(rejected >= 3, "h0 = 10 should be rejected (accepted %d, rejected %d)", accepted, rejected);
        double ex[3];
        exact_osc(3, x0, c.t_end, ex);
        const double *y = vapo_traj_state(tr);
        CHECK(fabs(y[0] - ex[0]) < 5e-3 && fabs(y[1] - ex[1]) < 5e-3, "error %.3e", fabs(y[0] - ex[0]));
        printf("  h0 = 10, %s field: %d accepted, %d rejected, NFE %d\n", k ? "NaN-far-out" : "plain", accepted,
               rejected, vapo_traj_nfe(tr));
        vapo_traj_free(tr);
    }
}

/* Runs one trajectory to its end with ask/tell and returns why it stopped. */
static vapo_ode_failure run_traj(const vapo_ode_config *c, int dim, const float *x0, vapo_field_fn f)
{
    field_ctx fc = {.dim = dim};
    float out[3];
    vapo_traj *tr = vapo_traj_create(c, dim, x0);
    const float *q;
    while (tr && (q = vapo_traj_query(tr)) != NULL) {
        f(&fc, 1, q, out);
        vapo_traj_tell(tr, out);
    }
    vapo_ode_failure why = vapo_traj_failure(tr);
    CHECK(tr && (why == VAPO_ODE_OK) == !vapo_traj_failed(tr), "failure %d vs failed %d", why, vapo_traj_failed(tr));
    vapo_traj_free(tr);
    return why;
}

/* Failures come back as an enum (the server acts on it), not only as text. */
static void test_failure_kinds(void)
{
    vapo_ode_config c = vapo_ode_config_default();
    const float x0[3] = {1.0f, 0.0f, 20.0f};
    CHECK(run_traj(&c, 3, x0, field_osc) == VAPO_ODE_OK, "the oscillator finishes");
    c.max_nfe = 20;
    CHECK(run_traj(&c, 3, x0, field_osc) == VAPO_ODE_MAX_NFE, "max_nfe 20 on the fast oscillator");
    c = vapo_ode_config_default();
    CHECK(run_traj(&c, 3, x0, field_nan) == VAPO_ODE_NONFINITE, "rk45 on a NaN field");
    c = fixed_config(VAPO_ODE_HEUN, 10, 1.0);
    CHECK(run_traj(&c, 3, x0, field_nan) == VAPO_ODE_NONFINITE, "heun on a NaN field");
    CHECK(vapo_traj_failure(NULL) == VAPO_ODE_OK, "no trajectory, no failure");
}

static int cancel_at_3(void *ctx, const vapo_ode_progress *p)
{
    int *seen = ctx;
    *seen = p->calls;
    return p->calls >= 3;
}

static int record_progress(void *ctx, const vapo_ode_progress *p)
{
    vapo_ode_progress *last = ctx;
    if (p->t_min < last->t_min || p->done < last->done || p->calls != last->calls + 1)
        last->n = -1; /* went backwards */
    else
        *last = *p;
    return 0;
}

static void test_failures_and_progress(void)
{
    vapo_ode_config c = vapo_ode_config_default();
    const float w[2] = {0.5f, 20.0f};
    float x[6], xe[3];
    int nfe[2], nfe_e;
    field_ctx fc;

    /* max_nfe stops the hard trajectory; the easy one still finishes unchanged. */
    c.max_nfe = 50;
    int rc = solve_osc(&c, 2, w, x, nfe, &fc);
    CHECK(rc < 0 && strstr(vapo_last_error(), "max_nfe") && strstr(vapo_last_error(), "trajectory 1"),
          "rc %d, '%s'", rc, vapo_last_error());
    CHECK(nfe[1] <= 50, "NFE %d over the limit", nfe[1]);
    CHECK(solve_osc(&c, 1, w, xe, &nfe_e, &fc) == 0 && nfe_e == nfe[0] && memcmp(xe, x, sizeof xe) == 0,
          "easy trajectory changed by its failing neighbour");
    c.max_nfe = 10000;

    /* NaN everywhere: rk45 fails at once, fixed-step methods at the first F. */
    float y[2] = {1, 2};
    fc = (field_ctx){.dim = 2};
    rc = vapo_ode_solve(&c, 1, 2, y, field_nan, &fc, NULL, NULL, NULL);
    CHECK(rc < 0 && strstr(vapo_last_error(), "not finite") && fc.calls == 1, "rk45 NaN: rc %d, %d calls, '%s'",
          rc, fc.calls, vapo_last_error());
    CHECK(y[0] == 1 && y[1] == 2, "failed trajectory should keep its last accepted state");
    vapo_ode_config e = fixed_config(VAPO_ODE_HEUN, 10, 1.0);
    fc = (field_ctx){.dim = 2};
    rc = vapo_ode_solve(&e, 1, 2, y, field_nan, &fc, NULL, NULL, NULL);
    CHECK(rc < 0 && strstr(vapo_last_error(), "non-finite") && fc.calls == 1, "heun NaN: rc %d, '%s'", rc,
          vapo_last_error());

    /* The field's own error comes through. */
    rc = vapo_ode_solve(&c, 1, 2, y, field_error, NULL, NULL, NULL, NULL);
    CHECK(rc < 0 && strstr(vapo_last_error(), "network exploded"), "'%s'", vapo_last_error());

    /* Progress: monotone, complete; and a nonzero return cancels. */
    vapo_ode_progress last = {.t_min = -1};
    fc = (field_ctx){.dim = 3};
    for (int i = 0; i < 2; i++)
        x[3 * i] = 1, x[3 * i + 1] = 0.25f, x[3 * i + 2] = w[i];
    CHECK(vapo_ode_solve(&c, 2, 3, x, field_osc, &fc, nfe, record_progress, &last) == 0, "%s", vapo_last_error());
    CHECK(last.n == 2 && last.done == 2 && last.calls == fc.calls && last.nfe == nfe[0] + nfe[1] &&
              last.t_min == c.t_end && last.t_end == c.t_end,
          "progress n %d done %d calls %d/%d nfe %lld", last.n, last.done, last.calls, fc.calls, last.nfe);
    int seen = 0;
    rc = vapo_ode_solve(&c, 2, 3, x, field_osc, &fc, nfe, cancel_at_3, &seen);
    CHECK(rc < 0 && seen == 3 && strstr(vapo_last_error(), "cancelled"), "cancel: rc %d after %d, '%s'", rc, seen,
          vapo_last_error());

    /* tell without a trajectory or values */
    CHECK(vapo_traj_tell(NULL, y) < 0, "tell(NULL)");
    CHECK(vapo_traj_query(NULL) == NULL && vapo_traj_done(NULL), "NULL trajectory");
}

/* RK45 results for tests/ode_scipy_ref.py: one line per trajectory,
 * "field rtol atol t_end h0 nfe dim x0[dim] x[dim]". */
static void write_scipy_cases(void)
{
    const char *dir = getenv("VAPO_BUILD_DIR");
    if (!dir) {
        printf("  VAPO_BUILD_DIR not set: not writing the SciPy comparison file\n");
        return;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/ode_rk45_results.txt", dir);
    FILE *fp = fopen(path, "w");
    CHECK(fp != NULL, "cannot write %s", path);
    if (!fp)
        return;
    const double tols[] = {1e-3, 1e-4, 1e-6};
    const float w[3] = {0.5f, 4.0f, 20.0f};
    const double osc_h0[] = {0, 1.5}; /* automatic, and the whole interval (forces rejections) */
    for (int k = 0; k < 3; k++) {
        vapo_ode_config c = vapo_ode_config_default();
        c.rtol = c.atol = tols[k];
        for (int p = 0; p < N_PROBLEMS + 2; p++) {
            const problem *pr = p < N_PROBLEMS ? &problems[p] : NULL;
            int n = pr ? 1 : 3, dim = pr ? pr->dim : 3, nfe[3];
            float x0[12], x[12];
            field_ctx fc = {.dim = dim};
            c.t_end = pr ? pr->t_end : 1.5;
            c.h0 = pr ? 0 : osc_h0[p - N_PROBLEMS];
            if (pr)
                memcpy(x0, pr->x0, sizeof pr->x0);
            else
                for (int i = 0; i < 3; i++)
                    x0[3 * i] = 1.0f, x0[3 * i + 1] = 0.25f, x0[3 * i + 2] = w[i];
            memcpy(x, x0, sizeof x);
            int rc = vapo_ode_solve(&c, n, dim, x, pr ? pr->field : field_osc, &fc, nfe, NULL, NULL);
            CHECK(rc == 0, "%s", vapo_last_error());
            for (int i = 0; i < n; i++) {
                fprintf(fp, "%s %.17g %.17g %.17g %.17g %d %d", pr ? pr->name : "osc", c.rtol, c.atol, c.t_end,
                        c.h0, nfe[i], dim);
                for (int j = 0; j < dim; j++)
                    fprintf(fp, " %.9g", x0[i * dim + j]);
                for (int j = 0; j < dim; j++)
                    fprintf(fp, " %.9g", x[i * dim + j]);
                fprintf(fp, "\n");
            }
        }
    }
    CHECK(fclose(fp) == 0, "writing %s", path);
    printf("  wrote %s\n", path);
}

int main(void)
{
    test_defaults_and_names();
    test_invalid_configs();
    test_exact_solutions();
    test_convergence_order();
    test_rk45_tolerance();
    test_per_trajectory_control();
    test_ask_tell_matches_solve();
    test_first_step();
    test_failures_and_progress();
    test_failure_kinds();
    write_scipy_cases();
    return test_finish("test_ode");
}
