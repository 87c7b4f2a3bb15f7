/* ODE solvers: explicit Runge-Kutta methods driven one function evaluation at
 * a time (ask/tell), and a batch driver on top. See vapo/ode.h.
 *
 * Every method is a Butcher tableau run by the same stage machine. RK45 adds
 * SciPy's error control; its constants and the order of operations follow
 * scipy/integrate/_ivp/rk.py and common.py so that step sequences match.
 * The tableaus and the step control on a trajectory's scalars (ode_clock)
 * are shared with ode_batch.c through ode_rk.h. */
#include "vapo/ode.h"

#include <ctype.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ode_rk.h"
#include "vapo/elementwise.h"
#include "vapo/error.h"

/* SciPy's step-size controller constants (rk.py). */
#define SAFETY 0.9
#define MIN_FACTOR 0.2
#define MAX_FACTOR 10.0
#define RK45_ERROR_EXPONENT (-1.0 / 5.0) /* -1 / (error estimator order 4 + 1) */

static const ode_tableau tab_euler = {.stages = 1, .b = {1.0}};

static const ode_tableau tab_heun = {
    .stages = 2,
    .a = {{0}, {1.0}},
    .b = {0.5, 0.5},
};

static const ode_tableau tab_rk4 = {
    .stages = 4,
    .a = {{0}, {0.5}, {0, 0.5}, {0, 0, 1.0}},
    .b = {1.0 / 6, 1.0 / 3, 1.0 / 3, 1.0 / 6},
};

/* Dormand-Prince 5(4), the coefficients of SciPy's RK45 class. */
static const ode_tableau tab_rk45 = {
    .stages = 6,
    .a = {{0},
          {1.0 / 5},
          {3.0 / 40, 9.0 / 40},
          {44.0 / 45, -56.0 / 15, 32.0 / 9},
          {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729},
          {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656}},
    .b = {35.0 / 384, 0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84},
    .e = {-71.0 / 57600, 0, 71.0 / 16695, -71.0 / 1920, 17253.0 / 339200, -22.0 / 525,
          1.0 / 40},
};

/* What the pending query is for. */
enum { PH_F0, PH_H0, PH_STAGE };
enum { ST_RUNNING, ST_DONE, ST_FAILED };

struct vapo_traj {
    vapo_ode_method method;
    const ode_tableau *tab;
    int dim;
    int status, phase;
    int stage;             /* PH_STAGE: index of the stage being evaluated */
    int nfe, max_nfe;
    ode_clock c;           /* time and step size */
    /* fixed step */
    int steps;
    double h_fixed;
    /* rk45 */
    double rtol, atol;
    double h0_probe;       /* step of select_initial_step's probe evaluation */
    /* one allocation: */
    double *y;             /* current accepted state */
    double *y_new;         /* rk45: candidate state */
    float *k;              /* stage derivatives, [stage][dim]; F is float, so float is exact */
    float *q;              /* pending query point */
    char err[160];
    ode_failure why; /* ODE_OK unless failed */
};

vapo_ode_config vapo_ode_config_default(void)
{
    vapo_ode_config c = {
        .method = VAPO_ODE_RK45,
        .t_end = 1.5,
        .rtol = 1e-4,
        .atol = 1e-4,
        .steps = 100,
        .max_nfe = 10000,
        .h0 = 0.0,
        .shared_step = 0,
    };
    return c;
}

static const char *const method_names[] = {"rk45", "euler", "heun", "rk4"};
#define N_METHODS ((int)(sizeof method_names / sizeof method_names[0]))

const char *vapo_ode_method_name(vapo_ode_method m)
{
    if ((int)m < 0 || (int)m >= N_METHODS)
        return "unknown";
    return method_names[m];
}

static int equal_nocase(const char *a, const char *b)
{
    for (; *a && *b; a++, b++)
        if (tolower((unsigned char)*a) != tolower((unsigned char)*b))
            return 0;
    return *a == *b;
}

int vapo_ode_method_parse(const char *name, vapo_ode_method *out)
{
    if (!name)
        return vapo_fail("ode: no method name given (expected rk45, euler, heun or rk4)");
    for (int i = 0; i < N_METHODS; i++) {
        if (equal_nocase(name, method_names[i])) {
            if (out)
                *out = (vapo_ode_method)i;
            return 0;
        }
    }
    return vapo_fail("ode: unknown method '%.40s' (expected rk45, euler, heun or rk4)", name);
}

const ode_tableau *ode_method_tableau(vapo_ode_method m)
{
    switch (m) {
    case VAPO_ODE_RK45: return &tab_rk45;
    case VAPO_ODE_EULER: return &tab_euler;
    case VAPO_ODE_HEUN: return &tab_heun;
    case VAPO_ODE_RK4: return &tab_rk4;
    }
    return NULL;
}

int vapo_ode_nfe_per_step(vapo_ode_method m)
{
    const ode_tableau *tab = ode_method_tableau(m);
    return tab ? tab->stages : 0;
}

long long vapo_ode_fixed_nfe(const vapo_ode_config *cfg)
{
    return cfg->method == VAPO_ODE_RK45 ? 0 : (long long)cfg->steps * vapo_ode_nfe_per_step(cfg->method);
}

int vapo_ode_config_validate(const vapo_ode_config *cfg)
{
    if (!cfg)
        return vapo_fail("ode: no config given");
    const ode_tableau *tab = ode_method_tableau(cfg->method);
    if (!tab)
        return vapo_fail("ode: invalid method %d (expected rk45, euler, heun or rk4)", (int)cfg->method);
    if (!isfinite(cfg->t_end) || cfg->t_end <= 0)
        return vapo_fail("ode: t_end must be a finite number > 0, got %g", cfg->t_end);
    if (cfg->max_nfe < 1)
        return vapo_fail("ode: max_nfe must be >= 1, got %d", cfg->max_nfe);
    if (cfg->method == VAPO_ODE_RK45) {
        /* SciPy clamps rtol to 100 eps with a warning; a library cannot warn, so say it. */
        if (!isfinite(cfg->rtol) || cfg->rtol < 100 * DBL_EPSILON)
            return vapo_fail("ode: rtol must be a finite number >= %g, got %g", 100 * DBL_EPSILON,
                             cfg->rtol);
        /* atol > 0 keeps the error scale positive where a component is exactly 0. */
        if (!isfinite(cfg->atol) || cfg->atol <= 0)
            return vapo_fail("ode: atol must be a finite number > 0, got %g", cfg->atol);
        if (!isfinite(cfg->h0) || cfg->h0 < 0)
            return vapo_fail("ode: h0 must be 0 (automatic) or a finite step > 0, got %g", cfg->h0);
    } else {
        if (cfg->steps < 1 || cfg->steps > 100000)
            return vapo_fail("ode: steps must be in 1..100000 for %s, got %d",
                             vapo_ode_method_name(cfg->method), cfg->steps);
        const long long need = vapo_ode_fixed_nfe(cfg);
        if (need > cfg->max_nfe)
            return vapo_fail("ode: %s with %d steps needs %lld evaluations, more than max_nfe %d",
                             vapo_ode_method_name(cfg->method), cfg->steps, need, cfg->max_nfe);
    }
    return 0;
}

/* ---- step control, shared with ode_batch.c (ode_rk.h) ------------------------ */

void ode_failure_message(ode_failure why, const ode_clock *c, char *buf, size_t size)
{
    switch (why) {
    case ODE_FAIL_MAX_NFE:
        snprintf(buf, size, "ode: trajectory reached max_nfe before t_end (at t = %g)", c->t);
        return;
    case ODE_FAIL_UNDERFLOW:
        if (c->saw_nonfinite)
            snprintf(buf, size, "ode: step size underflow at t = %g: the field returned non-finite values", c->t);
        else
            snprintf(buf, size, "ode: step size underflow at t = %g (field too stiff for rtol/atol?)", c->t);
        return;
    case ODE_FAIL_INITIAL_NONFINITE:
        snprintf(buf, size, "ode: the field is not finite at the initial state (t = %g)", c->t);
        return;
    case ODE_FAIL_NONFINITE:
        snprintf(buf, size, "ode: the field returned a non-finite value near t = %g", c->t);
        return;
    case ODE_OK:
        break;
    }
    snprintf(buf, size, "%s", "");
}

double ode_probe_step(double d0, double d1) { return (d0 < 1e-5 || d1 < 1e-5) ? 1e-6 : 0.01 * d0 / d1; }

double ode_first_step(double h0, double d1, double d2)
{
    d2 /= h0;
    double h1;
    if (!isfinite(d2))
        h1 = h0; /* the probe blew up: start small and let step control sort it out */
    else if (d1 <= 1e-15 && d2 <= 1e-15)
        h1 = fmax(1e-6, h0 * 1e-3);
    else
        h1 = pow(0.01 / fmax(d1, d2), 1.0 / 5.0); /* 1 / (order 4 + 1) */
    return fmin(100 * h0, h1);
}

ode_failure ode_begin_attempt(ode_clock *c)
{
    if (c->h_abs < c->min_step)
        return ODE_FAIL_UNDERFLOW;
    c->t_new = c->t + c->h_abs;
    if (c->t_new > c->t_end)
        c->t_new = c->t_end; /* land exactly on t_end */
    c->h = c->t_new - c->t;
    c->h_abs = fabs(c->h);
    return ODE_OK;
}

ode_failure ode_begin_step(ode_clock *c)
{
    c->min_step = 10 * fabs(nextafter(c->t, INFINITY) - c->t);
    if (c->h_abs < c->min_step)
        c->h_abs = c->min_step;
    c->step_rejected = 0;
    c->saw_nonfinite = 0;
    return ode_begin_attempt(c);
}

int ode_finish_attempt(ode_clock *c, double error_norm)
{
    if (error_norm < 1) {
        double factor = error_norm == 0 ? MAX_FACTOR
                                        : fmin(MAX_FACTOR, SAFETY * pow(error_norm, RK45_ERROR_EXPONENT));
        if (c->step_rejected)
            factor = fmin(1, factor);
        c->h_abs *= factor;
        c->accepted++;
        c->t = c->t_new;
        return 1;
    }
    /* Rejected. A non-finite norm (NaN/inf F from an over-long step) fails the
     * "< 1" test; SciPy then shrinks by MIN_FACTOR, as fmax does here with NaN. */
    if (!isfinite(error_norm))
        c->saw_nonfinite = 1;
    c->h_abs *= fmax(MIN_FACTOR, SAFETY * pow(error_norm, RK45_ERROR_EXPONENT));
    c->step_rejected = 1;
    c->rejected++;
    return 0;
}

int ode_fixed_advance(ode_clock *c, int steps)
{
    c->accepted++;
    /* t from the step count, not by summing h, so the last step ends on t_end. */
    c->t = c->accepted == steps ? c->t_end : c->t_end * c->accepted / steps;
    return c->accepted == steps;
}

/* ---- the stage machine ---------------------------------------------------- */

/* Stops the trajectory; the message goes to the object and the thread. */
static int traj_fail(vapo_traj *tr, ode_failure why)
{
    ode_failure_message(why, &tr->c, tr->err, sizeof tr->err);
    tr->status = ST_FAILED;
    tr->why = why;
    return vapo_fail("%s", tr->err);
}

/* Sets the query for stage s of the current step: y + h * sum_j a[s][j] k_j.
 * For rk45, stage 6 is the FSAL evaluation at the candidate y_new. */
static int set_stage_query(vapo_traj *tr, int s)
{
    if (tr->nfe >= tr->max_nfe)
        return traj_fail(tr, ODE_FAIL_MAX_NFE);
    const ode_tableau *tab = tr->tab;
    const int dim = tr->dim;
    const double h = tr->method == VAPO_ODE_RK45 ? tr->c.h : tr->h_fixed;
    tr->phase = PH_STAGE;
    tr->stage = s;
    if (s == tab->stages) {
        /* y_new = y + h * (sum_j b_j k_j), SciPy's order of operations. */
        for (int i = 0; i < dim; i++) {
            double acc = 0;
            for (int j = 0; j < tab->stages; j++)
                acc += tab->b[j] * tr->k[(size_t)j * dim + i];
            tr->y_new[i] = tr->y[i] + h * acc;
            tr->q[i] = (float)tr->y_new[i];
        }
        return 0;
    }
    /* y + (sum_j a_sj k_j) * h */
    for (int i = 0; i < dim; i++) {
        double acc = 0;
        for (int j = 0; j < s; j++)
            acc += tab->a[s][j] * tr->k[(size_t)j * dim + i];
        tr->q[i] = (float)(tr->y[i] + acc * h);
    }
    return 0;
}

static void set_state_query(vapo_traj *tr)
{
    for (int i = 0; i < tr->dim; i++)
        tr->q[i] = (float)tr->y[i];
}

/* rk45: queries the attempt that ode_begin_step/_attempt just set up, from
 * stage 1 (stage 0 is F(y), known: FSAL). */
static int rk45_attempt(vapo_traj *tr, ode_failure begun)
{
    return begun != ODE_OK ? traj_fail(tr, begun) : set_stage_query(tr, 1);
}

/* select_initial_step's scaled component v / (atol + |y0| * rtol). */
static double init_scaled(const vapo_traj *tr, int i, double v)
{
    return vapo_rk_scaled(v, tr->y[i], tr->y[i], tr->atol, tr->rtol);
}

/* Told F(y0): either the given h0, or SciPy's select_initial_step, first half. */
static int rk45_start(vapo_traj *tr)
{
    const int dim = tr->dim;
    const float *f0 = tr->k;
    for (int i = 0; i < dim; i++)
        if (!isfinite(f0[i]))
            return traj_fail(tr, ODE_FAIL_INITIAL_NONFINITE);
    if (tr->c.h_abs > 0)
        return rk45_attempt(tr, ode_begin_step(&tr->c));
    double s0 = 0, s1 = 0;
    for (int i = 0; i < dim; i++) {
        double v0 = init_scaled(tr, i, tr->y[i]), v1 = init_scaled(tr, i, f0[i]);
        s0 += v0 * v0;
        s1 += v1 * v1;
    }
    tr->h0_probe = ode_probe_step(vapo_rk_rms(s0, dim), vapo_rk_rms(s1, dim));
    if (tr->nfe >= tr->max_nfe)
        return traj_fail(tr, ODE_FAIL_MAX_NFE);
    for (int i = 0; i < dim; i++)
        tr->q[i] = (float)(tr->y[i] + tr->h0_probe * f0[i]);
    tr->phase = PH_H0;
    return 0;
}

/* Told F(y0 + h0 f0): the second half of select_initial_step. */
static int rk45_finish_initial_step(vapo_traj *tr, const float *f1)
{
    const int dim = tr->dim;
    const float *f0 = tr->k;
    double s1 = 0, s2 = 0;
    for (int i = 0; i < dim; i++) {
        double v1 = init_scaled(tr, i, f0[i]), df = init_scaled(tr, i, (double)f1[i] - f0[i]);
        s1 += v1 * v1;
        s2 += df * df;
    }
    tr->c.h_abs = ode_first_step(tr->h0_probe, vapo_rk_rms(s1, dim), vapo_rk_rms(s2, dim));
    return rk45_attempt(tr, ode_begin_step(&tr->c));
}

/* Told the FSAL evaluation: estimate the error, accept or reject. */
static int rk45_finish_attempt(vapo_traj *tr)
{
    const int dim = tr->dim;
    const ode_tableau *tab = tr->tab;
    double sumsq = 0;
    for (int i = 0; i < dim; i++) {
        double acc = 0;
        for (int j = 0; j <= tab->stages; j++)
            acc += tab->e[j] * tr->k[(size_t)j * dim + i];
        double v = vapo_rk_scaled(acc * tr->c.h, tr->y[i], tr->y_new[i], tr->atol, tr->rtol);
        sumsq += v * v;
    }
    if (ode_finish_attempt(&tr->c, vapo_rk_rms(sumsq, dim))) {
        double *tmp = tr->y;
        tr->y = tr->y_new;
        tr->y_new = tmp;
        memcpy(tr->k, tr->k + (size_t)tab->stages * dim, (size_t)dim * sizeof *tr->k); /* FSAL */
        if (tr->c.t >= tr->c.t_end) {
            tr->status = ST_DONE;
            return 0;
        }
        return rk45_attempt(tr, ode_begin_step(&tr->c));
    }
    return rk45_attempt(tr, ode_begin_attempt(&tr->c));
}

/* Fixed step: all stages told, take the step. */
static int fixed_finish_step(vapo_traj *tr)
{
    const int dim = tr->dim;
    const ode_tableau *tab = tr->tab;
    for (int i = 0; i < dim; i++) {
        double acc = 0;
        for (int j = 0; j < tab->stages; j++)
            acc += tab->b[j] * tr->k[(size_t)j * dim + i];
        tr->y[i] += tr->h_fixed * acc;
    }
    if (ode_fixed_advance(&tr->c, tr->steps)) {
        tr->status = ST_DONE;
        return 0;
    }
    return set_stage_query(tr, 0);
}

vapo_traj *vapo_traj_create(const vapo_ode_config *cfg, int dim, const float *x0)
{
    if (vapo_ode_config_validate(cfg) < 0)
        return NULL;
    if (dim < 1 || !x0) {
        vapo_fail("ode: trajectory needs dim >= 1 and an initial state (dim %d)", dim);
        return NULL;
    }
    const ode_tableau *tab = ode_method_tableau(cfg->method);
    int rk45 = cfg->method == VAPO_ODE_RK45;
    size_t nk = (size_t)tab->stages + (rk45 ? 1 : 0);
    size_t head = (sizeof(vapo_traj) + 15) & ~(size_t)15;
    size_t bytes = head + (size_t)dim * sizeof(double) * (rk45 ? 2 : 1) + (size_t)dim * sizeof(float) * (nk + 1);
    vapo_traj *tr = calloc(1, bytes);
    if (!tr) {
        vapo_fail("ode: out of memory for a trajectory of dimension %d (%zu bytes)", dim, bytes);
        return NULL;
    }
    char *p = (char *)tr + head;
    tr->y = (double *)p;
    p += (size_t)dim * sizeof(double);
    if (rk45) {
        tr->y_new = (double *)p;
        p += (size_t)dim * sizeof(double);
    }
    tr->k = (float *)p;
    p += nk * dim * sizeof(float);
    tr->q = (float *)p;

    tr->method = cfg->method;
    tr->tab = tab;
    tr->dim = dim;
    tr->status = ST_RUNNING;
    tr->max_nfe = cfg->max_nfe;
    tr->c.t = 0;
    tr->c.t_end = cfg->t_end;
    tr->steps = cfg->steps;
    tr->h_fixed = cfg->t_end / cfg->steps;
    tr->rtol = cfg->rtol;
    tr->atol = cfg->atol;
    tr->c.h_abs = rk45 ? cfg->h0 : 0;
    for (int i = 0; i < dim; i++)
        tr->y[i] = x0[i];
    /* Every method starts with F(x0): rk45 as its FSAL k0, the others as stage 0. */
    tr->phase = rk45 ? PH_F0 : PH_STAGE;
    tr->stage = 0;
    set_state_query(tr);
    return tr;
}

void vapo_traj_free(vapo_traj *tr) { free(tr); }

const float *vapo_traj_query(const vapo_traj *tr)
{
    return tr && tr->status == ST_RUNNING ? tr->q : NULL;
}

int vapo_traj_tell(vapo_traj *tr, const float *f)
{
    if (!tr || !f)
        return vapo_fail("ode: tell needs a trajectory and its F values");
    if (tr->status != ST_RUNNING)
        return vapo_fail("ode: tell on a trajectory that has %s", tr->status == ST_DONE ? "finished" : "failed");
    const int dim = tr->dim;
    tr->nfe++;
    switch (tr->phase) {
    case PH_F0:
        memcpy(tr->k, f, (size_t)dim * sizeof *f);
        return rk45_start(tr);
    case PH_H0:
        return rk45_finish_initial_step(tr, f);
    default:
        break;
    }
    memcpy(tr->k + (size_t)tr->stage * dim, f, (size_t)dim * sizeof *f);
    if (tr->method == VAPO_ODE_RK45) {
        if (tr->stage < tr->tab->stages)
            return set_stage_query(tr, tr->stage + 1);
        return rk45_finish_attempt(tr);
    }
    /* Fixed step: no error estimate to catch a bad F, so fail at once rather
     * than carry NaN to the end. */
    for (int i = 0; i < dim; i++)
        if (!isfinite(f[i]))
            return traj_fail(tr, ODE_FAIL_NONFINITE);
    if (tr->stage + 1 < tr->tab->stages)
        return set_stage_query(tr, tr->stage + 1);
    return fixed_finish_step(tr);
}

int vapo_traj_done(const vapo_traj *tr) { return !tr || tr->status != ST_RUNNING; }
int vapo_traj_failed(const vapo_traj *tr) { return !tr || tr->status == ST_FAILED; }

vapo_ode_failure vapo_traj_failure(const vapo_traj *tr)
{
    switch (tr ? tr->why : ODE_OK) {
    case ODE_FAIL_MAX_NFE: return VAPO_ODE_MAX_NFE;
    case ODE_FAIL_UNDERFLOW: return VAPO_ODE_TOO_STIFF;
    case ODE_FAIL_INITIAL_NONFINITE:
    case ODE_FAIL_NONFINITE: return VAPO_ODE_NONFINITE;
    default: return VAPO_ODE_OK;
    }
}
const char *vapo_traj_error(const vapo_traj *tr) { return tr ? tr->err : "no trajectory"; }
int vapo_traj_nfe(const vapo_traj *tr) { return tr ? tr->nfe : 0; }
double vapo_traj_time(const vapo_traj *tr) { return tr ? tr->c.t : 0; }
const double *vapo_traj_state(const vapo_traj *tr) { return tr ? tr->y : NULL; }

int vapo_traj_steps(const vapo_traj *tr, int *rejected)
{
    if (rejected)
        *rejected = tr ? tr->c.rejected : 0;
    return tr ? tr->c.accepted : 0;
}

void vapo_traj_copy_state(const vapo_traj *tr, float *x)
{
    if (!tr || !x)
        return;
    for (int i = 0; i < tr->dim; i++)
        x[i] = (float)tr->y[i];
}

/* ---- batch driver ------------------------------------------------------------ */

int vapo_ode_solve(const vapo_ode_config *cfg, int n, int dim, float *x, vapo_field_fn field,
                   void *ctx, int *nfe_out, vapo_ode_progress_fn progress, void *progress_ctx)
{
    if (vapo_ode_config_validate(cfg) < 0)
        return -1;
    if (n < 0 || dim < 1 || (n > 0 && (!x || !field)))
        return vapo_fail("ode: solve needs n >= 0, dim >= 1, states and a field (n %d, dim %d)", n, dim);
    if (n == 0)
        return 0;

    /* Shared step = SciPy's flattened batch: one trajectory over all n*dim
     * components. Its query is still n points of dim, so the field sees the
     * same batches either way. */
    int n_traj = n, traj_dim = dim, per_traj = 1;
    if (cfg->shared_step) {
        if ((long long)n * dim > INT_MAX)
            return vapo_fail("ode: shared-step batch too large (%d x %d)", n, dim);
        n_traj = 1;
        traj_dim = n * dim;
        per_traj = n;
    }

    int rc = 0;
    vapo_traj **tr = calloc((size_t)n_traj, sizeof *tr);
    int *live = malloc((size_t)n_traj * sizeof *live);
    float *pts = malloc((size_t)n * dim * sizeof *pts);
    float *out = malloc((size_t)n * dim * sizeof *out);
    if (!tr || !live || !pts || !out) {
        rc = vapo_fail("ode: out of memory for a batch of %d x %d", n, dim);
        goto done;
    }
    for (int i = 0; i < n_traj; i++) {
        tr[i] = vapo_traj_create(cfg, traj_dim, x + (size_t)i * traj_dim);
        if (!tr[i]) {
            rc = -1;
            goto done;
        }
    }

    vapo_ode_progress prog = {.n = n, .t_end = cfg->t_end};
    for (;;) {
        /* Gather the next point of every running trajectory. */
        int count = 0;
        for (int i = 0; i < n_traj; i++) {
            const float *q = vapo_traj_query(tr[i]);
            if (!q)
                continue;
            memcpy(pts + (size_t)count * traj_dim, q, (size_t)traj_dim * sizeof *q);
            live[count++] = i;
        }
        if (count == 0)
            break;
        int frc = field(ctx, count * per_traj, pts, out);
        if (frc < 0) {
            char why[256];
            snprintf(why, sizeof why, "%s", vapo_last_error());
            rc = vapo_fail("ode: field evaluation failed (%d): %s", frc, why[0] ? why : "no message");
            goto done;
        }
        /* Scatter. A failing trajectory just stops; it is reported below. */
        for (int c = 0; c < count; c++)
            (void)vapo_traj_tell(tr[live[c]], out + (size_t)c * traj_dim);

        if (progress) {
            prog.calls++;
            prog.done = 0;
            prog.nfe = 0;
            prog.t_min = cfg->t_end;
            for (int i = 0; i < n_traj; i++) {
                prog.nfe += (long long)vapo_traj_nfe(tr[i]) * per_traj;
                if (vapo_traj_done(tr[i]))
                    prog.done += per_traj;
                else if (vapo_traj_time(tr[i]) < prog.t_min)
                    prog.t_min = vapo_traj_time(tr[i]);
            }
            if (progress(progress_ctx, &prog) != 0) {
                rc = vapo_fail("ode: solve cancelled by the progress callback after %d field calls",
                               prog.calls);
                goto done;
            }
        }
    }

    int n_failed = 0, first_failed = -1;
    for (int i = 0; i < n_traj; i++) {
        vapo_traj_copy_state(tr[i], x + (size_t)i * traj_dim);
        if (nfe_out)
            for (int r = 0; r < per_traj; r++)
                nfe_out[(size_t)i * per_traj + r] = vapo_traj_nfe(tr[i]);
        if (vapo_traj_failed(tr[i]) && n_failed++ == 0)
            first_failed = i;
    }
    if (n_failed)
        rc = vapo_fail("ode: %d of %d trajectories failed; trajectory %d: %s", n_failed, n_traj,
                       first_failed, vapo_traj_error(tr[first_failed]));

done:
    if (tr)
        for (int i = 0; i < n_traj; i++)
            vapo_traj_free(tr[i]);
    free(tr);
    free(live);
    free(pts);
    free(out);
    return rc;
}
