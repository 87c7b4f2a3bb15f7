/* ODE solvers for sampling: integrate dx/dt = F(x) on [0, t_end], where F is
 * an autonomous float32 field (the gradient of the energy network).
 *
 * The reference solver, on the host in double precision; images are made by
 * the sampler pool (ode_batch.h), which takes the same decisions in float on
 * backend memory and is tested against this one.
 *  - vapo_traj: an ask/tell object for ONE trajectory. query() gives the point
 *    where F is needed next, tell() hands F at that point back.
 *  - vapo_ode_solve: a batch driver on vapo_traj (tests, SciPy comparisons).
 *
 * RK45 follows SciPy's solve_ivp(method='RK45') step for step (Dormand-Prince
 * 5(4), FSAL, RMS error norm, safety 0.9, factors in [0.2, 10], SciPy's
 * select_initial_step, last step clipped to land exactly on t_end), so NFE and
 * results are comparable with SciPy (tests/ode_scipy_ref.py: same NFE). Its
 * step control is per trajectory. A non-finite F inside an RK45 step fails
 * the error test, so the step is rejected and shrunk, as in SciPy; fixed-step
 * methods, which have no error test, fail the trajectory instead. The state is
 * kept in double precision; only query points are rounded to float (the stage
 * values F are stored as the floats they arrive as, which loses nothing). */
#ifndef VAPO_ODE_H
#define VAPO_ODE_H

typedef enum {
    VAPO_ODE_RK45 = 0, /* adaptive Dormand-Prince 5(4), rtol/atol */
    VAPO_ODE_EULER,    /* fixed step, 1 NFE per step */
    VAPO_ODE_HEUN,     /* fixed step RK2 (trapezoid), 2 NFE per step */
    VAPO_ODE_RK4,      /* fixed step classic RK4, 4 NFE per step */
} vapo_ode_method;

typedef struct {
    vapo_ode_method method;
    double t_end;    /* integrate on [0, t_end]; > 0 */
    double rtol;     /* rk45: relative tolerance, >= 100 * DBL_EPSILON */
    double atol;     /* rk45: absolute tolerance, > 0 */
    int steps;       /* euler/heun/rk4: number of steps, 1..100000 */
    int max_nfe;     /* safety limit per trajectory: exceeding it fails the trajectory */
    double h0;       /* rk45: first step (SciPy's first_step; a longer one is clipped
                        to t_end); 0 = SciPy's automatic choice (costs 1 NFE) */
    int shared_step; /* vapo_ode_solve only: 1 = one step size for the whole batch,
                        as SciPy does when the batch is flattened into one state
                        (the batch becomes ONE trajectory of dimension n*dim, and
                        the error norm is the RMS over all of it). Ignored by
                        vapo_traj_create: create one trajectory of n*dim instead. */
} vapo_ode_config;

/* rk45, t_end 1.5, rtol = atol = 1e-4, steps 100, max_nfe 10000, h0 auto,
 * per-trajectory steps. */
vapo_ode_config vapo_ode_config_default(void);

/* 0 if cfg is usable, else -1 with a message saying which field is wrong. */
int vapo_ode_config_validate(const vapo_ode_config *cfg);

/* Field evaluations per step of a method (its stages: euler 1, heun 2, rk4 4,
 * rk45 6); 0 for an invalid value. */
int vapo_ode_nfe_per_step(vapo_ode_method m);
/* The evaluations a fixed-step config takes per trajectory (steps x stages);
 * 0 for rk45, whose count depends on the field. */
long long vapo_ode_fixed_nfe(const vapo_ode_config *cfg);

/* "rk45", "euler", "heun", "rk4" (case-insensitive) -> method; -1 otherwise. */
int vapo_ode_method_parse(const char *name, vapo_ode_method *out);
/* The method's name as parsed above; "unknown" for an invalid value. */
const char *vapo_ode_method_name(vapo_ode_method m);

/* F on a batch: points and out are count x dim floats, row-major. Returns 0,
 * or a negative value (after vapo_fail) to abort the solve. */
typedef int (*vapo_field_fn)(void *ctx, int count, const float *points, float *out);

/* ---- one trajectory, ask/tell --------------------------------------------- */

typedef struct vapo_traj vapo_traj;

/* A trajectory starting at x0 (dim floats, copied) at t = 0. NULL on an
 * invalid config or out of memory (message in vapo_last_error()). */
vapo_traj *vapo_traj_create(const vapo_ode_config *cfg, int dim, const float *x0);
void vapo_traj_free(vapo_traj *tr);

/* The dim floats where F is needed next; NULL once finished or failed.
 * The pointer stays valid until the next tell or free. */
const float *vapo_traj_query(const vapo_traj *tr);

/* Hands back F at the query point (dim floats) and advances: next stage, or
 * step accept/reject. Returns 0; -1 if no query was pending, or if this
 * evaluation made the trajectory fail (max_nfe reached, step size underflow,
 * non-finite F at an accepted state); the reason is also kept in
 * vapo_traj_error(). */
int vapo_traj_tell(vapo_traj *tr, const float *f);

/* Why a trajectory failed, for callers that act on it (the server answers
 * 422 for the settings' faults, 500 for the model's); vapo_traj_error says it
 * in words. */
typedef enum {
    VAPO_ODE_OK = 0,
    VAPO_ODE_MAX_NFE,   /* max_nfe evaluations before t_end */
    VAPO_ODE_TOO_STIFF, /* rk45: the step shrank below the smallest step */
    VAPO_ODE_NONFINITE, /* F not finite (rk45: at the start; fixed step: anywhere) */
} vapo_ode_failure;

int vapo_traj_done(const vapo_traj *tr);   /* 1 once finished or failed */
vapo_ode_failure vapo_traj_failure(const vapo_traj *tr); /* VAPO_ODE_OK unless failed */
int vapo_traj_failed(const vapo_traj *tr); /* 1 if it stopped before t_end */
const char *vapo_traj_error(const vapo_traj *tr); /* why it failed, "" if not */
int vapo_traj_nfe(const vapo_traj *tr);    /* evaluations told so far */
double vapo_traj_time(const vapo_traj *tr); /* time of the current accepted state */
/* Accepted steps; *rejected (may be NULL) gets the rejected ones (rk45). */
int vapo_traj_steps(const vapo_traj *tr, int *rejected);
/* The current accepted state (dim doubles), and a float copy of it. */
const double *vapo_traj_state(const vapo_traj *tr);
void vapo_traj_copy_state(const vapo_traj *tr, float *x);

/* ---- batch driver ---------------------------------------------------------- */

typedef struct {
    int n;             /* trajectories in the solve */
    int done;          /* finished or failed so far */
    int calls;         /* batched field calls so far */
    long long nfe;     /* sum of NFE over trajectories */
    double t_min;      /* smallest time among running trajectories (t_end if none) */
    double t_end;
} vapo_ode_progress;

/* Called after every batched field call; return nonzero to cancel the solve. */
typedef int (*vapo_ode_progress_fn)(void *ctx, const vapo_ode_progress *p);

/* Solves n trajectories of dimension dim; x (n*dim) holds the initial states
 * and receives the final ones. Each field call evaluates, in one batch, the
 * next point of every running trajectory (count <= n); finished ones drop
 * out. nfe_out (n ints) and progress may be NULL.
 * Returns 0; -1 on a bad argument, a field or allocation error, cancellation,
 * or when a trajectory failed: the others still run to the end, x holds every
 * trajectory's last accepted state, and the message names the first failure. */
int vapo_ode_solve(const vapo_ode_config *cfg, int n, int dim, float *x, vapo_field_fn field,
                   void *ctx, int *nfe_out, vapo_ode_progress_fn progress, void *progress_ctx);

#endif
