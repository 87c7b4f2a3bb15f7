/* The batch ODE driver on backend memory (vapo/ode_batch.h).
 *
 * Every running trajectory has had the same number of evaluations: they start
 * together and each field call evaluates all of them. So the stages of all
 * rows advance in lockstep, and one rk_combine builds a stage's points for the
 * whole batch. What differs per row lives on the host, per trajectory: the
 * clock (t, step sizes, SciPy's controller state), stepped by the same
 * functions as ode.c's (ode_rk.h) from the norms the backend computes. */
#include "vapo/ode_batch.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ode_rk.h"
#include "vapo/error.h"

_Static_assert(ODE_MAX_STAGES <= VAPO_RK_MAX_TERMS, "rk_combine must take every stage of a step");

enum { ST_RUNNING, ST_DONE, ST_FAILED };

typedef struct {
    const vapo_ode_config *cfg;
    const ode_tableau *tab;
    vapo_backend *be;
    int n_traj, dim, per_traj; /* shared step: one trajectory of n*dim, n points */
    float *x;                  /* the caller's states, by trajectory */
    vapo_field_backend_fn field;
    void *ctx;
    vapo_ode_progress_fn progress;
    void *progress_ctx;
    vapo_ode_progress prog;
    int unreported; /* a field call whose outcome progress has not seen */

    /* host, per trajectory */
    ode_clock *clock;
    int *status, *nfe;
    ode_failure *why;
    long long nfe_left; /* sum of nfe over trajectories that left */
    /* host, per batch row: row r is trajectory live[r] */
    int rows, nfe_now; /* running rows; the evaluations each has had */
    int *live, *idx;   /* idx: 3 n_traj ints staged for rows_copy */
    double *h, *norm;  /* n_traj and ODE_MAX_STAGES n_traj */

    /* backend, n_traj rows of dim: y (accepted), y_new, query points, stages */
    float *y, *y_new, *q, *k[ODE_MAX_STAGES];
    float *state_block;
    double *h_dev, *norm_dev; /* n_traj and ODE_MAX_STAGES n_traj */
    int *idx_dev;
} batch;

static void swap_rows(float **a, float **b)
{
    float *t = *a;
    *a = *b;
    *b = t;
}

/* Trajectory live[r] stops after `nfe` evaluations: done (ODE_OK) or failed.
 * Its row stays until compact(). */
static void leave(batch *b, int r, ode_failure why, int nfe)
{
    const int i = b->live[r];
    b->status[i] = why == ODE_OK ? ST_DONE : ST_FAILED;
    b->why[i] = why;
    b->nfe[i] = nfe;
    b->nfe_left += nfe;
}

/* Rows whose trajectory stopped leave the batch: their states go to x, the
 * running rows' states (and FSAL stages, if `fsal`) move to the front. The
 * gathers go through a spare buffer, as rows_copy must not overlap. */
static void compact(batch *b, int fsal)
{
    vapo_backend *be = b->be;
    int gone = 0, kept = 0;
    for (int r = 0; r < b->rows; r++)
        gone += b->status[b->live[r]] != ST_RUNNING;
    if (!gone)
        return;
    int *src = b->idx, *dst = b->idx + gone, *keep = b->idx + 2 * gone;
    for (int r = 0, g = 0; r < b->rows; r++) {
        if (b->status[b->live[r]] != ST_RUNNING) {
            src[g] = r;
            dst[g++] = b->live[r];
        } else {
            keep[kept] = r;
            b->live[kept++] = b->live[r];
        }
    }
    be->upload(be, b->idx_dev, b->idx, sizeof(int) * (2 * (size_t)gone + kept));
    be->rows_copy(be, gone, b->dim, b->x, b->idx_dev + gone, b->y, b->idx_dev);
    b->rows = kept;
    if (!kept)
        return;
    const int *keep_dev = b->idx_dev + 2 * gone;
    be->rows_copy(be, kept, b->dim, b->y_new, NULL, b->y, keep_dev);
    swap_rows(&b->y, &b->y_new);
    if (fsal) {
        be->rows_copy(be, kept, b->dim, b->k[1], NULL, b->k[0], keep_dev);
        swap_rows(&b->k[0], &b->k[1]);
    }
}

/* Progress of the last field call, reported once the decisions it led to
 * are taken (as the host driver does), i.e. before the next call or at the end. */
static int report_progress(batch *b)
{
    vapo_ode_progress *p = &b->prog;
    if (!b->progress || !b->unreported)
        return 0;
    b->unreported = 0;
    p->calls++;
    p->done = (b->n_traj - b->rows) * b->per_traj;
    p->nfe = (b->nfe_left + (long long)b->rows * b->nfe_now) * b->per_traj;
    p->t_min = b->cfg->t_end;
    for (int r = 0; r < b->rows; r++)
        p->t_min = fmin(p->t_min, b->clock[b->live[r]].t);
    if (b->progress(b->progress_ctx, p) != 0)
        return vapo_fail("ode: solve cancelled by the progress callback after %d field calls", p->calls);
    return 0;
}

/* out = F(points) for the running rows; they all fail instead when max_nfe
 * is reached (callers check b->rows afterwards). */
static int evaluate(batch *b, const float *points, float *out)
{
    if (report_progress(b))
        return -1;
    if (b->nfe_now >= b->cfg->max_nfe) {
        for (int r = 0; r < b->rows; r++)
            leave(b, r, ODE_FAIL_MAX_NFE, b->nfe_now);
        compact(b, 0);
        return 0;
    }
    int frc = b->field(b->ctx, b->rows * b->per_traj, points, out);
    if (frc < 0) {
        char why[256];
        snprintf(why, sizeof why, "%s", vapo_last_error());
        return vapo_fail("ode: field evaluation failed (%d): %s", frc, why[0] ? why : "no message");
    }
    b->nfe_now++;
    b->unreported = 1;
    return 0;
}

/* The rows' step sizes (clock.h) to the backend. */
static void upload_steps(batch *b)
{
    for (int r = 0; r < b->rows; r++)
        b->h[r] = b->clock[b->live[r]].h;
    b->be->upload(b->be, b->h_dev, b->h, sizeof(double) * b->rows);
}

/* norm slot `slot` (rows doubles) = rk_norm of sum_j c[j] k[j], unscaled by h. */
static void norm_into(batch *b, int slot, int nk, const double *c, const float *const *k)
{
    b->be->rk_norm(b->be, b->rows, b->dim, NULL, nk, c, k, b->y, NULL, b->cfg->atol, b->cfg->rtol,
                   b->norm_dev + (size_t)slot * b->rows);
}

static void download_norms(batch *b, int slots)
{
    b->be->download(b->be, b->norm, b->norm_dev, sizeof(double) * slots * b->rows);
}

/* Rows that rejected the attempt keep y and the FSAL stage k[0]: copied into
 * y_new and k[last] before those are swapped in for everyone. */
static void take_steps(batch *b, int n_keep, int last)
{
    vapo_backend *be = b->be;
    if (n_keep) {
        be->upload(be, b->idx_dev, b->idx, sizeof(int) * n_keep);
        be->rows_copy(be, n_keep, b->dim, b->y_new, b->idx_dev, b->y, b->idx_dev);
        if (last)
            be->rows_copy(be, n_keep, b->dim, b->k[last], b->idx_dev, b->k[0], b->idx_dev);
    }
    swap_rows(&b->y, &b->y_new);
    if (last)
        swap_rows(&b->k[0], &b->k[last]);
}

/* ---- rk45 ------------------------------------------------------------------ */

static const double unit[2] = {1.0, -1.0}; /* weights of f and of f1 - f0 */

/* F(x0) is in k[0]: check it, then SciPy's select_initial_step (one probe
 * evaluation) unless cfg->h0 is given, then every row's first attempt. */
static int rk45_first_step(batch *b)
{
    const float *f0[1] = {b->k[0]}, *y0[1] = {b->y};
    norm_into(b, 0, 1, unit, y0);
    norm_into(b, 1, 1, unit, f0);
    download_norms(b, 2);
    for (int r = 0; r < b->rows; r++) {
        const double d0 = b->norm[r], d1 = b->norm[b->rows + r];
        if (!isfinite(d1))
            leave(b, r, ODE_FAIL_INITIAL_NONFINITE, b->nfe_now);
        else
            b->clock[b->live[r]].h = ode_probe_step(d0, d1);
    }
    compact(b, 1);
    if (b->cfg->h0 == 0 && b->rows) {
        upload_steps(b);
        b->be->rk_combine(b->be, b->rows, b->dim, b->h_dev, 1, unit, (const float *const *)b->k, b->y, b->q);
        if (evaluate(b, b->q, b->k[1]))
            return -1;
        if (!b->rows) /* max_nfe */
            return 0;
        const float *diff[2] = {b->k[1], b->k[0]}, *f0_now[1] = {b->k[0]};
        norm_into(b, 0, 1, unit, f0_now);
        norm_into(b, 1, 2, unit, diff);
        download_norms(b, 2);
        for (int r = 0; r < b->rows; r++) {
            ode_clock *c = &b->clock[b->live[r]];
            c->h_abs = ode_first_step(c->h, b->norm[r], b->norm[b->rows + r]);
        }
    }
    for (int r = 0; r < b->rows; r++)
        if (ode_begin_step(&b->clock[b->live[r]]) != ODE_OK)
            leave(b, r, ODE_FAIL_UNDERFLOW, b->nfe_now);
    compact(b, 1);
    return 0;
}

/* One attempt of every row: stages 1..6 (stage 6 is the FSAL evaluation at
 * y_new), the error norms, then each row's decision as in ode.c. */
static int rk45_attempt(batch *b)
{
    vapo_backend *be = b->be;
    const ode_tableau *tab = b->tab;
    const int last = tab->stages;
    upload_steps(b);
    for (int s = 1; s <= last; s++) {
        float *pt = s < last ? b->q : b->y_new;
        be->rk_combine(be, b->rows, b->dim, b->h_dev, s, s < last ? tab->a[s] : tab->b,
                       (const float *const *)b->k, b->y, pt);
        if (evaluate(b, pt, b->k[s]))
            return -1;
        if (!b->rows)
            return 0;
    }
    be->rk_norm(be, b->rows, b->dim, b->h_dev, last + 1, tab->e, (const float *const *)b->k, b->y, b->y_new,
                b->cfg->atol, b->cfg->rtol, b->norm_dev);
    download_norms(b, 1);
    int n_rejected = 0;
    for (int r = 0; r < b->rows; r++) {
        ode_clock *c = &b->clock[b->live[r]];
        ode_failure next;
        if (ode_finish_attempt(c, b->norm[r])) {
            if (c->t >= c->t_end) {
                leave(b, r, ODE_OK, b->nfe_now);
                continue;
            }
            next = ode_begin_step(c);
        } else {
            b->idx[n_rejected++] = r;
            next = ode_begin_attempt(c);
        }
        if (next != ODE_OK)
            leave(b, r, next, b->nfe_now);
    }
    take_steps(b, n_rejected, last);
    compact(b, 1);
    return 0;
}

/* Runs `step` (an attempt, or a fixed step, of every row) until all rows left. */
static int run_steps(batch *b, int (*step)(batch *))
{
    while (b->rows)
        if (step(b))
            return -1;
    return 0;
}

static int rk45_solve(batch *b)
{
    if (evaluate(b, b->y, b->k[0]) || (b->rows && rk45_first_step(b)))
        return -1;
    return run_steps(b, rk45_attempt);
}

/* ---- fixed step ------------------------------------------------------------ */

/* One step of every row. A stage's norm is finite iff its F is, the check
 * the host solver makes per evaluation; here it is read once per step. */
static int fixed_step(batch *b)
{
    vapo_backend *be = b->be;
    const ode_tableau *tab = b->tab;
    const int stages = tab->stages;
    for (int s = 0; s < stages; s++) {
        const float *pt = b->y;
        if (s > 0) {
            be->rk_combine(be, b->rows, b->dim, b->h_dev, s, tab->a[s], (const float *const *)b->k, b->y, b->q);
            pt = b->q;
        }
        if (evaluate(b, pt, b->k[s]))
            return -1;
        const float *f[1] = {b->k[s]};
        norm_into(b, s, 1, unit, f);
    }
    download_norms(b, stages);
    be->rk_combine(be, b->rows, b->dim, b->h_dev, stages, tab->b, (const float *const *)b->k, b->y, b->y_new);
    int n_failed = 0;
    for (int r = 0; r < b->rows; r++) {
        int s = 0;
        while (s < stages && isfinite(b->norm[(size_t)s * b->rows + r]))
            s++;
        if (s < stages) {
            b->idx[n_failed++] = r;
            leave(b, r, ODE_FAIL_NONFINITE, b->nfe_now - stages + s + 1);
        } else if (ode_fixed_advance(&b->clock[b->live[r]], b->cfg->steps)) {
            leave(b, r, ODE_OK, b->nfe_now);
        }
    }
    take_steps(b, n_failed, 0);
    compact(b, 0);
    return 0;
}

static int fixed_solve(batch *b)
{
    /* one step size for all rows: the compaction never has to move it */
    for (int i = 0; i < b->n_traj; i++)
        b->h[i] = b->cfg->t_end / b->cfg->steps;
    b->be->upload(b->be, b->h_dev, b->h, sizeof(double) * b->n_traj);
    return run_steps(b, fixed_step);
}

/* ---- setup and the driver -------------------------------------------------- */

static int batch_init(batch *b)
{
    vapo_backend *be = b->be;
    const size_t n = (size_t)b->n_traj, slab = n * b->dim;
    const int nk = b->tab->stages + (b->cfg->method == VAPO_ODE_RK45);
    b->clock = calloc(n, sizeof *b->clock);
    b->status = calloc(n, sizeof *b->status);
    b->nfe = calloc(n, sizeof *b->nfe);
    b->why = calloc(n, sizeof *b->why);
    b->live = malloc(n * sizeof *b->live);
    b->idx = malloc(3 * n * sizeof *b->idx);
    b->h = malloc(n * sizeof *b->h);
    b->norm = malloc(ODE_MAX_STAGES * n * sizeof *b->norm);
    if (!b->clock || !b->status || !b->nfe || !b->why || !b->live || !b->idx || !b->h || !b->norm)
        return vapo_fail("ode: out of memory for a batch of %d x %d", b->n_traj, b->dim);
    b->state_block = be->alloc(be, sizeof(float) * slab * (3 + nk));
    b->h_dev = be->alloc(be, sizeof(double) * n * (1 + ODE_MAX_STAGES));
    b->idx_dev = be->alloc(be, sizeof(int) * 3 * n);
    if (!b->state_block || !b->h_dev || !b->idx_dev)
        return vapo_fail("ode: out of backend memory for a batch of %d x %d", b->n_traj, b->dim);
    b->norm_dev = b->h_dev + n;
    b->y = b->state_block;
    b->y_new = b->y + slab;
    b->q = b->y_new + slab;
    for (int j = 0; j < nk; j++)
        b->k[j] = b->q + (j + 1) * slab;
    for (int i = 0; i < b->n_traj; i++) {
        b->live[i] = i;
        b->clock[i].t_end = b->cfg->t_end;
        b->clock[i].h_abs = b->cfg->method == VAPO_ODE_RK45 ? b->cfg->h0 : 0;
    }
    b->rows = b->n_traj;
    be->copy(be, b->y, b->x, sizeof(float) * slab);
    return 0;
}

static void batch_free(batch *b)
{
    vapo_backend *be = b->be;
    be->free(be, b->state_block);
    be->free(be, b->h_dev);
    be->free(be, b->idx_dev);
    free(b->clock), free(b->status), free(b->nfe), free(b->why);
    free(b->live), free(b->idx), free(b->h), free(b->norm);
}

/* nfe_out, and the message naming the first failed trajectory. */
static int batch_report(const batch *b, int *nfe_out)
{
    int n_failed = 0, first = -1;
    for (int i = 0; i < b->n_traj; i++) {
        if (nfe_out)
            for (int r = 0; r < b->per_traj; r++)
                nfe_out[(size_t)i * b->per_traj + r] = b->nfe[i];
        if (b->status[i] == ST_FAILED && n_failed++ == 0)
            first = i;
    }
    if (!n_failed)
        return 0;
    char why[160];
    ode_failure_message(b->why[first], &b->clock[first], why, sizeof why);
    return vapo_fail("ode: %d of %d trajectories failed; trajectory %d: %s", n_failed, b->n_traj, first, why);
}

int vapo_ode_solve_backend(const vapo_ode_config *cfg, vapo_backend *be, int n, int dim, float *x,
                           vapo_field_backend_fn field, void *ctx, int *nfe_out, vapo_ode_progress_fn progress,
                           void *progress_ctx)
{
    if (vapo_ode_config_validate(cfg) < 0)
        return -1;
    if (!be || n < 0 || dim < 1 || (n > 0 && (!x || !field)))
        return vapo_fail("ode: solve needs a backend, n >= 0, dim >= 1, states and a field (n %d, dim %d)", n,
                         dim);
    if (!be->rk_combine || !be->rk_norm || !be->rows_copy)
        return vapo_fail("ode: the %s backend has no Runge-Kutta ops", be->name);
    if (n == 0)
        return 0;
    batch b = {.cfg = cfg, .tab = ode_method_tableau(cfg->method), .be = be, .n_traj = n, .dim = dim,
               .per_traj = 1, .x = x, .field = field, .ctx = ctx, .progress = progress,
               .progress_ctx = progress_ctx, .prog = {.n = n, .t_end = cfg->t_end}};
    if (cfg->shared_step) { /* SciPy's flattened batch, as in vapo_ode_solve */
        if ((long long)n * dim > INT_MAX)
            return vapo_fail("ode: shared-step batch too large (%d x %d)", n, dim);
        b.n_traj = 1;
        b.dim = n * dim;
        b.per_traj = n;
    }
    int rc = batch_init(&b);
    if (rc == 0)
        rc = cfg->method == VAPO_ODE_RK45 ? rk45_solve(&b) : fixed_solve(&b);
    if (rc == 0)
        rc = report_progress(&b);
    if (rc == 0)
        rc = batch_report(&b, nfe_out);
    batch_free(&b);
    return rc;
}
