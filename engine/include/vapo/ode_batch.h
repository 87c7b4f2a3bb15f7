/* The batch ODE driver with its states in backend memory, so that a CUDA
 * solve keeps them on the device. It has vapo_ode_solve's contract (ode.h):
 * the same methods, SciPy's RK45 with per-trajectory step control (or one
 * shared step, cfg->shared_step), the same failure handling and messages.
 *
 * Traffic per RK45 attempt (6 evaluations): one upload of the rows' step
 * sizes and one download of their error norms, a double each; per fixed
 * step, one download of a finiteness norm per stage and row. Rows that
 * finish or fail leave the batch (their states go to x, the running rows are
 * gathered to the front), so every field call evaluates running rows only.
 *
 * Differences from vapo_ode_solve:
 *  - The state is float (the host solver keeps double). Results agree to
 *    float round-off; an accept/reject decision that sits on the edge can
 *    go the other way, which moves a trajectory's NFE by a step or so.
 *  - A fixed-step trajectory whose field turns non-finite is evaluated to the
 *    end of that step; its NFE is reported as the host solver's.
 *  - After a field error or cancellation, x holds the final states of the
 *    trajectories that had finished and the initial states of the others. */
#ifndef VAPO_ODE_BATCH_H
#define VAPO_ODE_BATCH_H

#include "vapo/backend.h"
#include "vapo/ode.h"

/* F on backend memory: points and out are count x dim floats (backend), rows
 * 0..count-1. Returns 0, or a negative value (after vapo_fail) to abort. */
typedef int (*vapo_field_backend_fn)(void *ctx, int count, const float *points, float *out);

/* Solves n trajectories of dimension dim on backend `be`: x (n*dim floats,
 * backend memory) holds the initial states and receives the final ones.
 * nfe_out (n ints, host) and progress may be NULL; progress is called after
 * every field call. Returns 0, or -1 as vapo_ode_solve does. */
int vapo_ode_solve_backend(const vapo_ode_config *cfg, vapo_backend *be, int n, int dim, float *x,
                           vapo_field_backend_fn field, void *ctx, int *nfe_out, vapo_ode_progress_fn progress,
                           void *progress_ctx);

#endif
