/* The sampler pool: the one way images are made (vapo-serve's batcher, the
 * tools, vapo-train's sample grid, the benchmarks). Rows live in backend
 * memory, so a CUDA run keeps every state on the device; each row is an ODE
 * trajectory (vapo_ode_config: solver, tolerances, t_end; its own step
 * control) from a start point the caller gives (seeded noise, an
 * interpolation of noises), or an energy-only row (an /energy image).
 *
 *   id = vapo_pool_add(pool, &cfg, x0, flags)   any time, also between steps
 *   vapo_pool_step(pool, ids, n)                ONE batched network evaluation
 *                                               of the rows named (or all that
 *                                               want one); each row advances by
 *                                               one evaluation of its own solver
 *   vapo_pool_take(pool, id, x, &res)           a finished row's state and
 *                                               result; the row is freed
 *
 * A row's arithmetic never looks at another row: its query points, error
 * norms and step decisions are computed row by row (rk_combine, rk_norm with
 * rows = 1), and the network is batch invariant (backend.h). So a row's
 * result is bit-identical whatever else is in the pool, when it was added,
 * its place in a step and how the caller cuts the live rows into steps
 * (docs/DESIGN.md, "Batch invariance").
 *
 * It follows vapo_traj (ode.h) decision for decision: SciPy's RK45 with
 * per-row step control, the fixed-step methods, the same failures and
 * messages; the state is float where vapo_traj keeps double, so results
 * agree with that reference to float round-off (tests/test_ode_batch.c). */
#ifndef VAPO_ODE_BATCH_H
#define VAPO_ODE_BATCH_H

#include "vapo/backend.h"
#include "vapo/ode.h"

/* The network on backend memory: x is count rows of dim floats; phi gets
 * count energies and grad (count x dim), unless NULL, the gradient. Returns 0,
 * or a negative value (after vapo_fail). */
typedef int (*vapo_pool_eval_fn)(void *ctx, int count, const float *x, float *grad, float *phi);

/* The network's features (vapo_net_features) of the batch the last
 * evaluation took, to host memory: count x nfeat floats. */
typedef int (*vapo_pool_features_fn)(void *ctx, float *out);

typedef struct vapo_pool vapo_pool;

/* A pool of rows of `dim` floats on `be` (room grows as rows are added). */
vapo_pool *vapo_pool_create(vapo_backend *be, int dim, vapo_pool_eval_fn eval, void *ctx);
void vapo_pool_free(vapo_pool *p);
/* Lets energy rows ask for nfeat features each (VAPO_POOL_FEATURES); before
 * the first row is added. */
int vapo_pool_set_features(vapo_pool *p, int nfeat, vapo_pool_features_fn fn);

enum {
    VAPO_POOL_ENERGY = 1,   /* ode trajectory: also evaluate the energy of its final state (one more row) */
    VAPO_POOL_DEVICE = 2,   /* x0 is backend memory (else host) */
    VAPO_POOL_GRADNORM = 4, /* energy row: evaluate the gradient too and report |grad Phi| (an OOD score's row) */
    VAPO_POOL_FEATURES = 8, /* energy row: keep the network's features (vapo_pool_set_features) */
};

/* Adds a row starting at x0 (dim floats, copied): a trajectory of cfg, or
 * with cfg NULL an energy-only row (one evaluation, no gradient unless
 * VAPO_POOL_GRADNORM). Returns the
 * row's id (>= 0), or -1 on a bad config or out of memory (vapo_last_error). */
int vapo_pool_add(vapo_pool *p, const vapo_ode_config *cfg, const float *x0, int flags);

/* Rows that want an evaluation now (running trajectories, energy rows). */
int vapo_pool_waiting(const vapo_pool *p);
/* 1 if row id waits for an evaluation; 2 if that evaluation needs the
 * gradient (an ODE stage), 1 if only the energy; 0 if finished or failed. */
int vapo_pool_wants(const vapo_pool *p, int id);

/* One batched evaluation of rows ids[0..n-1] (each must want one), or with
 * ids NULL of every row that wants one. Returns the rows evaluated (0 if
 * none), or -1 when the network failed: the rows named keep their state and
 * may be stepped again or removed. */
int vapo_pool_step(vapo_pool *p, const int *ids, int n);

typedef struct {
    vapo_ode_failure failure; /* VAPO_ODE_OK: finished at t_end */
    char message[160];        /* why it failed, in words ("" if not) */
    int nfe;                  /* ODE evaluations (the final energy's not counted) */
    int steps, rejected;      /* accepted and rejected steps */
    float phi;                /* energy of the final state (VAPO_POOL_ENERGY) or of the energy row */
    float gnorm;              /* |grad Phi| of an energy row added with VAPO_POOL_GRADNORM (else 0) */
} vapo_pool_result;

/* Takes a finished or failed row out: x (dim floats, host; may be NULL) gets
 * its final state (a failed trajectory's last accepted one), res (may be
 * NULL) its result; the id is free again. Returns 0, or -1 if the row still
 * runs or the id is not a row. */
int vapo_pool_take(vapo_pool *p, int id, float *x, vapo_pool_result *res);
/* The features of a finished energy row added with VAPO_POOL_FEATURES
 * (nfeat floats, host), read before vapo_pool_take. */
int vapo_pool_features(const vapo_pool *p, int id, float *out);
/* Drops a row whatever its state (a cancelled request). */
void vapo_pool_remove(vapo_pool *p, int id);

/* Progress over rows ids[0..n-1] (not taken yet) after a step: calls++,
 * done (finished or failed), nfe, t_min; pr->n and t_end are the caller's. */
void vapo_pool_progress(const vapo_pool *p, const int *ids, int n, vapo_ode_progress *pr);

/* ---- batch solves on the pool --------------------------------------------- */

/* F on backend memory: points and out are count x dim floats (backend), rows
 * 0..count-1. Returns 0, or a negative value (after vapo_fail) to abort. */
typedef int (*vapo_field_backend_fn)(void *ctx, int count, const float *points, float *out);

/* vapo_ode_solve's contract (ode.h) on the pool: n trajectories of dimension
 * dim, x (n*dim floats, backend memory) holds the initial states and receives
 * the final ones (a failed row's last accepted state; after a field error or
 * cancellation, the initial states of the rows still running). shared_step
 * runs the batch as one trajectory of n*dim, as vapo_ode_solve does. nfe_out
 * (n ints, host) and progress may be NULL; progress is called after every
 * field call. Returns 0, or -1 as vapo_ode_solve does. */
int vapo_ode_solve_backend(const vapo_ode_config *cfg, vapo_backend *be, int n, int dim, float *x,
                           vapo_field_backend_fn field, void *ctx, int *nfe_out, vapo_ode_progress_fn progress,
                           void *progress_ctx);

#endif
