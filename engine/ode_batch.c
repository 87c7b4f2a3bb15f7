/* The sampler pool (vapo/ode_batch.h).
 *
 * Row `id` owns a fixed block of NBUF buffers of dim floats in one backend
 * store: two states (accepted y and candidate y_new, swapped by index), the
 * pending query point and the stage values k[0..6]. A row's roles map to
 * buffers through small host tables, so accepting a step or the FSAL shift
 * moves no data. What differs per row -- the phase of its solver, its clock
 * (t, step sizes, SciPy's controller state) -- lives on the host and is
 * stepped by the functions ode.c uses (ode_rk.h), from norms the backend
 * computes row by row.
 *
 * One step: prepare the query point of each row named (rk_combine, rows = 1,
 * after one upload of the step sizes), gather the points into one batch
 * (rows_copy), evaluate, scatter the gradients into the rows' stage buffers,
 * compute the norms the decisions need (rk_norm, rows = 1), download the
 * norms and energies once, decide on the host. Device traffic per step: one
 * upload of step sizes and row indices, one download of norms and energies. */
#include "vapo/ode_batch.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ode_rk.h"
#include "vapo/error.h"

_Static_assert(ODE_MAX_STAGES <= VAPO_RK_MAX_TERMS, "rk_combine must take every stage of a step");

enum { B_Y0, B_Y1, B_Q, B_K0, NBUF = B_K0 + ODE_MAX_STAGES };
enum { ROW_FREE, ROW_RUN, ROW_DONE, ROW_FAILED };
enum { PH_F0, PH_H0, PH_STAGE, PH_PHI }; /* what the pending evaluation is for */
enum { NORMS = 2 };                       /* norm slots per row */

typedef struct {
    int state, phase, stage;
    int ode, want_phi; /* a trajectory (else an energy row); evaluate its final energy */
    int want_gnorm;    /* an energy row that also wants |grad Phi| */
    int want_feat;     /* an energy row that also wants the network's features */
    int ready;         /* the query point is in place */
    vapo_ode_config cfg;
    const ode_tableau *tab;
    ode_clock c;
    double h0_probe, h_fixed;
    int nfe;
    ode_failure why;
    float phi, gnorm;
    unsigned char y, y_new, q, k[ODE_MAX_STAGES]; /* buffer of each role */
} row;

struct vapo_pool {
    vapo_backend *be;
    int dim;
    vapo_pool_eval_fn eval;
    void *ctx;
    int cap, live;
    row *rows;
    /* host */
    double *h, *norm;  /* cap, NORMS cap: by row id */
    int *idx, *ids;    /* 3 cap: gather/scatter indices; cap: the rows of step(NULL) */
    float *phi;        /* cap: by batch position */
    vapo_pool_features_fn features; /* NULL: no row may want features */
    int nfeat;
    float *feat, *fbatch; /* cap nfeat: by row id; cap nfeat: one batch's (allocated on first use) */
    /* backend */
    float *store;      /* cap NBUF dim */
    double *h_dev, *norm_dev;
    int *idx_dev;
    float *bx, *bg, *bphi; /* cap dim, cap dim, cap: one batch */
};

static const double unit[2] = {1.0, -1.0}; /* weights of f, and of f1 - f0 */

static float *buf(const vapo_pool *p, int id, int b) { return p->store + ((size_t)id * NBUF + b) * p->dim; }
static int buf_row(int id, int b) { return id * NBUF + b; } /* as a rows_copy index */
static const row *get(const vapo_pool *p, int id) { return id >= 0 && id < p->cap ? &p->rows[id] : NULL; }

/* ---- memory ------------------------------------------------------------------ */

static void free_backend(vapo_pool *p)
{
    vapo_backend *be = p->be;
    be->free(be, p->h_dev), be->free(be, p->idx_dev), be->free(be, p->bx), be->free(be, p->bg);
    be->free(be, p->bphi);
    p->h_dev = NULL, p->idx_dev = NULL, p->bx = p->bg = p->bphi = NULL;
}

/* Room for `need` rows: the store is copied over, the rest is scratch. */
static int grow(vapo_pool *p, int need)
{
    if (need <= p->cap)
        return 0;
    vapo_backend *be = p->be;
    int cap = p->cap ? p->cap : 16;
    while (cap < need)
        cap *= 2;
    if ((long long)cap * NBUF > INT_MAX / 2)
        return vapo_fail("sampler pool: %d rows are too many", need);
    const size_t n = (size_t)cap, slab = n * p->dim;
    row *rows = realloc(p->rows, n * sizeof *rows);
    if (rows)
        p->rows = rows;
    double *h = realloc(p->h, n * (1 + NORMS) * sizeof *h);
    if (h)
        p->h = h, p->norm = h + n;
    int *idx = realloc(p->idx, n * 4 * sizeof *idx);
    if (idx)
        p->idx = idx, p->ids = idx + 3 * n;
    float *phi = realloc(p->phi, n * sizeof *phi);
    if (phi)
        p->phi = phi;
    float *feat = p->nfeat ? realloc(p->feat, n * p->nfeat * sizeof *feat) : NULL;
    if (feat)
        p->feat = feat;
    free(p->fbatch), p->fbatch = NULL; /* sized again when next needed */
    float *store = be->alloc(be, sizeof(float) * slab * NBUF);
    if (!rows || !h || !idx || !phi || (p->nfeat && !feat) || !store) {
        be->free(be, store);
        return vapo_fail("sampler pool: out of memory for %d rows of %d", cap, p->dim);
    }
    if (p->store)
        be->copy(be, store, p->store, sizeof(float) * (size_t)p->cap * NBUF * p->dim);
    be->free(be, p->store);
    p->store = store;
    free_backend(p);
    p->h_dev = be->alloc(be, sizeof(double) * n * (1 + NORMS));
    p->idx_dev = be->alloc(be, sizeof(int) * n * 3);
    p->bx = be->alloc(be, sizeof(float) * slab);
    p->bg = be->alloc(be, sizeof(float) * slab);
    p->bphi = be->alloc(be, sizeof(float) * n);
    if (!p->h_dev || !p->idx_dev || !p->bx || !p->bg || !p->bphi) {
        free_backend(p);
        p->cap = 0; /* the store is kept; nothing else is usable */
        return vapo_fail("sampler pool: out of backend memory for %d rows of %d", cap, p->dim);
    }
    p->norm_dev = p->h_dev + n;
    memset(p->rows + p->cap, 0, (n - p->cap) * sizeof *p->rows);
    p->cap = cap;
    return 0;
}

vapo_pool *vapo_pool_create(vapo_backend *be, int dim, vapo_pool_eval_fn eval, void *ctx)
{
    if (!be || dim < 1 || !eval) {
        vapo_fail("sampler pool: needs a backend, dim >= 1 and an evaluation (dim %d)", dim);
        return NULL;
    }
    if (!be->rk_combine || !be->rk_norm || !be->rows_copy) {
        vapo_fail("sampler pool: the %s backend has no Runge-Kutta ops", be->name);
        return NULL;
    }
    vapo_pool *p = calloc(1, sizeof *p);
    if (!p) {
        vapo_fail("out of memory");
        return NULL;
    }
    p->be = be, p->dim = dim, p->eval = eval, p->ctx = ctx;
    return p;
}

void vapo_pool_free(vapo_pool *p)
{
    if (!p)
        return;
    free_backend(p);
    p->be->free(p->be, p->store);
    free(p->rows), free(p->h), free(p->idx), free(p->phi), free(p->feat), free(p->fbatch);
    free(p);
}

/* ---- rows -------------------------------------------------------------------- */

int vapo_pool_add(vapo_pool *p, const vapo_ode_config *cfg, const float *x0, int flags)
{
    if (cfg && vapo_ode_config_validate(cfg) < 0)
        return -1;
    if (!x0)
        return vapo_fail("sampler pool: a row needs a start point");
    if ((flags & VAPO_POOL_FEATURES) && (cfg || !p->features))
        return vapo_fail("sampler pool: features are for energy rows of a pool that has them");
    int id = 0;
    while (id < p->cap && p->rows[id].state != ROW_FREE)
        id++;
    if (grow(p, id + 1))
        return -1;
    row *r = &p->rows[id];
    memset(r, 0, sizeof *r);
    r->state = ROW_RUN;
    r->y = B_Y0, r->y_new = B_Y1, r->q = B_Q;
    for (int j = 0; j < ODE_MAX_STAGES; j++)
        r->k[j] = (unsigned char)(B_K0 + j);
    r->ode = cfg != NULL;
    r->want_phi = !cfg || (flags & VAPO_POOL_ENERGY);
    r->want_gnorm = !cfg && (flags & VAPO_POOL_GRADNORM);
    r->want_feat = !cfg && (flags & VAPO_POOL_FEATURES);
    if (cfg) {
        r->cfg = *cfg;
        r->tab = ode_method_tableau(cfg->method);
        r->c.t_end = cfg->t_end;
        r->c.h_abs = cfg->method == VAPO_ODE_RK45 ? cfg->h0 : 0;
        r->h_fixed = cfg->t_end / cfg->steps;
        /* every method starts with F(x0): rk45 as its FSAL k0, the others as stage 0 */
        r->phase = cfg->method == VAPO_ODE_RK45 ? PH_F0 : PH_STAGE;
    } else {
        r->phase = PH_PHI;
    }
    const size_t bytes = sizeof(float) * p->dim;
    if (flags & VAPO_POOL_DEVICE)
        p->be->copy(p->be, buf(p, id, r->y), x0, bytes);
    else
        p->be->upload(p->be, buf(p, id, r->y), x0, bytes);
    p->live++;
    return id;
}

int vapo_pool_waiting(const vapo_pool *p)
{
    int n = 0;
    for (int id = 0; id < p->cap; id++)
        n += p->rows[id].state == ROW_RUN;
    return n;
}

int vapo_pool_wants(const vapo_pool *p, int id)
{
    const row *r = get(p, id);
    if (!r || r->state != ROW_RUN)
        return 0;
    return r->phase == PH_PHI && !r->want_gnorm ? 1 : 2;
}

static void finish(row *r, ode_failure why)
{
    r->why = why;
    r->state = why == ODE_OK ? ROW_DONE : ROW_FAILED;
}

/* The trajectory reached t_end: done, or one more row for its energy. */
static void arrive(row *r)
{
    if (r->want_phi) {
        r->phase = PH_PHI;
        r->ready = 0;
    } else {
        finish(r, ODE_OK);
    }
}

/* The next evaluation is stage s of the current step (or, once the clock
 * failed to begin an attempt, the row fails). */
static void next_stage(row *r, int s, ode_failure begun)
{
    if (begun != ODE_OK) {
        finish(r, begun);
        return;
    }
    if (r->nfe >= r->cfg.max_nfe) {
        finish(r, ODE_FAIL_MAX_NFE);
        return;
    }
    r->phase = PH_STAGE;
    r->stage = s;
    r->ready = 0;
}

/* ---- one step ---------------------------------------------------------------- */

/* The step size the row's next combination uses (uploaded before prepare). */
static double row_h(const row *r)
{
    if (!r->ode)
        return 0;
    if (r->cfg.method != VAPO_ODE_RK45)
        return r->h_fixed;
    return r->phase == PH_H0 ? r->h0_probe : r->c.h;
}

static const float *const *stage_ptrs(const vapo_pool *p, int id, const float **k)
{
    const row *r = &p->rows[id];
    for (int j = 0; j < ODE_MAX_STAGES; j++)
        k[j] = buf(p, id, r->k[j]);
    return k;
}

/* The buffer holding row id's query point, computing it if needed:
 * F0, final energy: y; probe: y + h0 f0; stage s: y + h sum_j a[s][j] k[j];
 * rk45's FSAL stage: y_new = y + h sum_j b[j] k[j]. */
static int prepare(vapo_pool *p, int id)
{
    row *r = &p->rows[id];
    if (r->phase == PH_F0 || r->phase == PH_PHI || (r->phase == PH_STAGE && r->stage == 0))
        return r->y;
    const int fsal = r->phase == PH_STAGE && r->stage == r->tab->stages;
    const int to = fsal ? r->y_new : r->q;
    if (!r->ready) {
        const float *k[ODE_MAX_STAGES];
        const int nk = r->phase == PH_H0 ? 1 : r->stage;
        const double *c = r->phase == PH_H0 ? unit : fsal ? r->tab->b : r->tab->a[r->stage];
        p->be->rk_combine(p->be, 1, p->dim, p->h_dev + id, nk, c, stage_ptrs(p, id, k), buf(p, id, r->y),
                          buf(p, id, to));
        r->ready = 1;
    }
    return to;
}

/* The buffer the evaluation's gradient goes to. */
static int grad_buffer(const row *r)
{
    if (r->phase == PH_F0)
        return r->k[0];
    if (r->phase == PH_H0)
        return r->k[1];
    return r->k[r->stage];
}

/* Norm slot j of row id = rk_norm of sum_i c[i] k[i] (nk terms): scaled by
 * the tolerances and y, or also by y_new and times the row's h (`err`), or
 * (`plain`) unscaled, which is finite iff the terms are. */
enum { SCALED, ERR, PLAIN };
static void norm_of(vapo_pool *p, int id, int j, int nk, const double *c, const float *const *k, int how)
{
    const row *r = &p->rows[id];
    const float *y_new = how == ERR ? buf(p, id, r->y_new) : NULL;
    p->be->rk_norm(p->be, 1, p->dim, how == ERR ? p->h_dev + id : NULL, nk, c, k, buf(p, id, r->y), y_new,
                   how == PLAIN ? 1.0 : r->cfg.atol, how == PLAIN ? 0.0 : r->cfg.rtol,
                   p->norm_dev + (size_t)NORMS * id + j);
}

/* The norms row id's decision needs, after its evaluation; 1 if any. */
static int norms(vapo_pool *p, int id)
{
    const row *r = &p->rows[id];
    const float *k[ODE_MAX_STAGES];
    stage_ptrs(p, id, k);
    if (!r->ode || r->phase == PH_PHI)
        return 0;
    if (r->phase == PH_F0) { /* |y0| and |f0| */
        const float *y0[1] = {buf(p, id, r->y)};
        norm_of(p, id, 0, 1, unit, y0, SCALED);
        norm_of(p, id, 1, 1, unit, k, SCALED);
    } else if (r->phase == PH_H0) { /* |f0| and |f1 - f0| */
        const float *diff[2] = {k[1], k[0]};
        norm_of(p, id, 0, 1, unit, k, SCALED);
        norm_of(p, id, 1, 2, unit, diff, SCALED);
    } else if (r->cfg.method != VAPO_ODE_RK45) { /* finite iff F is */
        const float *f[1] = {k[r->stage]};
        norm_of(p, id, 0, 1, unit, f, PLAIN);
    } else if (r->stage == r->tab->stages) { /* the attempt's error */
        norm_of(p, id, 0, r->tab->stages + 1, r->tab->e, k, ERR);
    } else {
        return 0;
    }
    return 1;
}

static void swap(unsigned char *a, unsigned char *b)
{
    unsigned char t = *a;
    *a = *b;
    *b = t;
}

/* rk45: the error norm of the attempt decides, as in ode.c. */
static void rk45_decide(row *r, double err)
{
    if (!ode_finish_attempt(&r->c, err)) {
        next_stage(r, 1, ode_begin_attempt(&r->c));
        return;
    }
    swap(&r->y, &r->y_new);
    swap(&r->k[0], &r->k[r->tab->stages]); /* FSAL */
    if (r->c.t >= r->c.t_end)
        arrive(r);
    else
        next_stage(r, 1, ode_begin_step(&r->c));
}

/* Fixed step: stage `stage` was evaluated (and is finite). */
static void fixed_decide(vapo_pool *p, int id)
{
    row *r = &p->rows[id];
    if (r->stage + 1 < r->tab->stages) {
        next_stage(r, r->stage + 1, ODE_OK);
        return;
    }
    const float *k[ODE_MAX_STAGES];
    p->be->rk_combine(p->be, 1, p->dim, p->h_dev + id, r->tab->stages, r->tab->b, stage_ptrs(p, id, k),
                      buf(p, id, r->y), buf(p, id, r->y_new));
    swap(&r->y, &r->y_new);
    if (ode_fixed_advance(&r->c, r->cfg.steps))
        arrive(r);
    else
        next_stage(r, 0, ODE_OK);
}

/* |grad Phi| of the energy rows that want it, from the batch's gradient
 * (position i of the step), summed in double on the host. */
static int grad_norms(vapo_pool *p, const int *ids, int n)
{
    float *g = NULL;
    for (int i = 0; i < n; i++) {
        row *r = &p->rows[ids[i]];
        if (!r->want_gnorm)
            continue;
        if (!g && !(g = malloc(sizeof(float) * p->dim)))
            return vapo_fail("sampler pool: out of memory");
        p->be->download(p->be, g, p->bg + (size_t)i * p->dim, sizeof(float) * p->dim);
        double s = 0;
        for (int k = 0; k < p->dim; k++)
            s += (double)g[k] * g[k];
        r->gnorm = (float)sqrt(s);
    }
    free(g);
    return 0;
}

/* The network's features of the energy rows that want them, from the batch
 * just evaluated (position i of the step). */
static int row_features(vapo_pool *p, const int *ids, int n)
{
    int any = 0;
    for (int i = 0; i < n; i++)
        any |= p->rows[ids[i]].want_feat;
    if (!any)
        return 0;
    if (!p->fbatch && !(p->fbatch = malloc(sizeof(float) * (size_t)p->cap * p->nfeat)))
        return vapo_fail("sampler pool: out of memory");
    if (p->features(p->ctx, p->fbatch))
        return -1;
    for (int i = 0; i < n; i++)
        if (p->rows[ids[i]].want_feat)
            memcpy(p->feat + (size_t)ids[i] * p->nfeat, p->fbatch + (size_t)i * p->nfeat, sizeof(float) * p->nfeat);
    return 0;
}

/* Row id was evaluated (its energy is phi): its next phase. */
static void decide(vapo_pool *p, int id, float phi)
{
    row *r = &p->rows[id];
    const double *nm = p->norm + (size_t)NORMS * id;
    if (r->phase == PH_PHI) {
        r->phi = phi;
        finish(r, ODE_OK);
        return;
    }
    r->nfe++;
    if (r->phase == PH_F0) {
        if (!isfinite(nm[1])) {
            finish(r, ODE_FAIL_INITIAL_NONFINITE);
        } else if (r->c.h_abs > 0) {
            next_stage(r, 1, ode_begin_step(&r->c));
        } else if (r->nfe >= r->cfg.max_nfe) {
            finish(r, ODE_FAIL_MAX_NFE);
        } else {
            r->h0_probe = ode_probe_step(nm[0], nm[1]);
            r->phase = PH_H0;
            r->ready = 0;
        }
    } else if (r->phase == PH_H0) {
        r->c.h_abs = ode_first_step(r->h0_probe, nm[0], nm[1]);
        next_stage(r, 1, ode_begin_step(&r->c));
    } else if (r->cfg.method != VAPO_ODE_RK45) {
        if (!isfinite(nm[0]))
            finish(r, ODE_FAIL_NONFINITE);
        else
            fixed_decide(p, id);
    } else if (r->stage < r->tab->stages) {
        next_stage(r, r->stage + 1, ODE_OK);
    } else {
        rk45_decide(r, nm[0]);
    }
}

int vapo_pool_step(vapo_pool *p, const int *ids, int n)
{
    vapo_backend *be = p->be;
    if (!ids) {
        n = 0;
        for (int id = 0; id < p->cap; id++)
            if (p->rows[id].state == ROW_RUN)
                p->ids[n++] = id;
        ids = p->ids;
    }
    if (n == 0)
        return 0;
    int grad = 0, high = 0;
    for (int i = 0; i < n; i++) {
        const int w = vapo_pool_wants(p, ids[i]);
        if (!w)
            return vapo_fail("sampler pool: row %d does not wait for an evaluation", ids[i]);
        grad |= w == 2;
        high = ids[i] + 1 > high ? ids[i] + 1 : high;
    }
    for (int id = 0; id < high; id++)
        p->h[id] = row_h(&p->rows[id]);
    be->upload(be, p->h_dev, p->h, sizeof(double) * high);
    /* indices: gather sources, then scatter destinations of the gradient rows and their positions */
    int *src = p->idx, *dst = p->idx + n, *pos = p->idx + 2 * n, m = 0;
    for (int i = 0; i < n; i++) {
        const row *r = &p->rows[ids[i]];
        src[i] = buf_row(ids[i], prepare(p, ids[i]));
        if (r->phase != PH_PHI)
            dst[m] = buf_row(ids[i], grad_buffer(r)), pos[m++] = i;
    }
    memmove(pos - n + m, pos, sizeof(int) * m); /* pack: src n, dst m, pos m */
    pos = dst + m;
    be->upload(be, p->idx_dev, p->idx, sizeof(int) * (n + 2 * (size_t)m));
    be->rows_copy(be, n, p->dim, p->bx, NULL, p->store, p->idx_dev);
    int rc = p->eval(p->ctx, n, p->bx, grad ? p->bg : NULL, p->bphi);
    if (rc < 0) {
        char why[256];
        snprintf(why, sizeof why, "%s", vapo_last_error());
        return vapo_fail("sampler pool: evaluation of %d rows failed (%d): %s", n, rc, why[0] ? why : "no message");
    }
    if (m)
        be->rows_copy(be, m, p->dim, p->store, p->idx_dev + n, p->bg, p->idx_dev + n + m);
    int any_norm = 0;
    for (int i = 0; i < n; i++)
        any_norm |= norms(p, ids[i]);
    if (any_norm)
        be->download(be, p->norm, p->norm_dev, sizeof(double) * NORMS * high);
    be->download(be, p->phi, p->bphi, sizeof(float) * n);
    if (grad_norms(p, ids, n) || row_features(p, ids, n))
        return -1;
    for (int i = 0; i < n; i++)
        decide(p, ids[i], p->phi[i]);
    return n;
}

/* ---- results ----------------------------------------------------------------- */

static vapo_ode_failure public_failure(ode_failure why)
{
    switch (why) {
    case ODE_FAIL_MAX_NFE: return VAPO_ODE_MAX_NFE;
    case ODE_FAIL_UNDERFLOW: return VAPO_ODE_TOO_STIFF;
    case ODE_FAIL_INITIAL_NONFINITE:
    case ODE_FAIL_NONFINITE: return VAPO_ODE_NONFINITE;
    case ODE_OK: break;
    }
    return VAPO_ODE_OK;
}

int vapo_pool_set_features(vapo_pool *p, int nfeat, vapo_pool_features_fn fn)
{
    if (p->cap) /* the buffers are sized with the rows */
        return vapo_fail("sampler pool: features are set before the first row");
    p->nfeat = nfeat > 0 && fn ? nfeat : 0;
    p->features = p->nfeat ? fn : NULL;
    return 0;
}

int vapo_pool_features(const vapo_pool *p, int id, float *out)
{
    const row *r = get(p, id);
    if (!r || r->state != ROW_DONE || !r->want_feat)
        return vapo_fail("sampler pool: row %d has no features", id);
    memcpy(out, p->feat + (size_t)id * p->nfeat, sizeof(float) * p->nfeat);
    return 0;
}

int vapo_pool_take(vapo_pool *p, int id, float *x, vapo_pool_result *res)
{
    const row *r = get(p, id);
    if (!r || (r->state != ROW_DONE && r->state != ROW_FAILED))
        return vapo_fail("sampler pool: row %d has not finished", id);
    if (x)
        p->be->download(p->be, x, buf(p, id, r->y), sizeof(float) * p->dim);
    if (res) {
        memset(res, 0, sizeof *res);
        res->failure = public_failure(r->why);
        ode_failure_message(r->why, &r->c, res->message, sizeof res->message);
        res->nfe = r->nfe;
        res->steps = r->c.accepted;
        res->rejected = r->c.rejected;
        res->phi = r->phi;
        res->gnorm = r->gnorm;
    }
    vapo_pool_remove(p, id);
    return 0;
}

void vapo_pool_remove(vapo_pool *p, int id)
{
    if (id < 0 || id >= p->cap || p->rows[id].state == ROW_FREE)
        return;
    p->rows[id].state = ROW_FREE;
    p->live--;
}

/* ---- vapo_ode_solve_backend -------------------------------------------------- */

typedef struct {
    vapo_field_backend_fn field;
    void *ctx;
    int per_row; /* shared step: a row is the whole batch */
} field_adapter;

static int adapt(void *ctx, int count, const float *x, float *grad, float *phi)
{
    (void)phi;
    const field_adapter *a = ctx;
    return a->field(a->ctx, count * a->per_row, x, grad);
}

void vapo_pool_progress(const vapo_pool *p, const int *ids, int n, vapo_ode_progress *pr)
{
    pr->calls++;
    pr->done = 0;
    pr->nfe = 0;
    pr->t_min = pr->t_end;
    for (int i = 0; i < n; i++) {
        const row *r = get(p, ids[i]);
        if (!r || r->state == ROW_FREE)
            continue;
        pr->done += r->state != ROW_RUN || r->phase == PH_PHI;
        pr->nfe += r->nfe;
        if (r->state == ROW_RUN && r->phase != PH_PHI)
            pr->t_min = fmin(pr->t_min, r->c.t);
    }
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
    if (n == 0)
        return 0;
    int rows = n, per_row = 1;
    if (cfg->shared_step) { /* SciPy's flattened batch, as in vapo_ode_solve */
        if ((long long)n * dim > INT_MAX / NBUF)
            return vapo_fail("ode: shared-step batch too large (%d x %d)", n, dim);
        rows = 1, per_row = n, dim *= n;
    }
    field_adapter fa = {field, ctx, per_row};
    vapo_pool *p = vapo_pool_create(be, dim, adapt, &fa);
    int *ids = malloc(sizeof(int) * rows), added = 0, rc = 0;
    if (!p || !ids) {
        free(ids);
        vapo_pool_free(p);
        return p ? vapo_fail("out of memory") : -1;
    }
    for (; added < rows && rc == 0; added++)
        rc = (ids[added] = vapo_pool_add(p, cfg, x + (size_t)added * dim, VAPO_POOL_DEVICE)) < 0 ? -1 : 0;
    vapo_ode_progress pr = {.n = rows, .t_end = cfg->t_end};
    while (rc == 0 && (rc = vapo_pool_step(p, NULL, 0)) > 0) {
        rc = 0;
        vapo_pool_progress(p, ids, rows, &pr);
        pr.n = n, pr.done *= per_row, pr.nfe *= per_row;
        if (progress && progress(progress_ctx, &pr))
            rc = vapo_fail("ode: solve cancelled by the progress callback after %d field calls", pr.calls);
    }
    /* finished rows to x, also after an error; the others keep their start */
    int n_failed = 0, first = -1;
    char why[160] = "";
    for (int i = 0; i < added && ids[i] >= 0; i++) {
        const row *r = &p->rows[ids[i]];
        vapo_pool_result res;
        if (r->state == ROW_RUN)
            continue;
        be->copy(be, x + (size_t)i * dim, buf(p, ids[i], r->y), sizeof(float) * dim);
        vapo_pool_take(p, ids[i], NULL, &res);
        for (int j = 0; nfe_out && j < per_row; j++)
            nfe_out[(size_t)i * per_row + j] = res.nfe;
        if (res.failure != VAPO_ODE_OK && n_failed++ == 0)
            first = i, snprintf(why, sizeof why, "%s", res.message);
    }
    if (rc == 0 && n_failed)
        rc = vapo_fail("ode: %d of %d trajectories failed; trajectory %d: %s", n_failed, rows, first, why);
    free(ids);
    vapo_pool_free(p);
    return rc;
}
