/* Internal to the engine: what the two ODE drivers share so that they take the
 * same decisions from the same numbers. ode.c runs one trajectory in double on
 * the host (vapo_traj); ode_batch.c runs batches in backend memory. Both use
 * these Butcher tableaus, SciPy's RK45 step-size control on one trajectory's
 * scalars (ode_clock), and these failure messages. Defined in ode.c. */
#ifndef VAPO_ODE_RK_H
#define VAPO_ODE_RK_H

#include <stddef.h>

#include "vapo/ode.h"

#define ODE_MAX_STAGES 7 /* Dormand-Prince: 6 stages + the FSAL evaluation */

typedef struct {
    int stages;                               /* evaluations per step, FSAL one excluded */
    double a[ODE_MAX_STAGES][ODE_MAX_STAGES]; /* a[s][j]: weight of stage j in stage s's point */
    double b[ODE_MAX_STAGES];                 /* solution weights */
    double e[ODE_MAX_STAGES];                 /* rk45 only: error weights incl. the FSAL stage */
} ode_tableau;

/* NULL for an invalid method. */
const ode_tableau *ode_method_tableau(vapo_ode_method m);

/* Time and step size of one trajectory. Fixed-step methods use t, t_end and
 * accepted only. */
typedef struct {
    double t, t_end;
    int accepted, rejected;
    double h_abs;      /* proposed |step| (SciPy's h_abs) */
    double h, t_new;   /* step being attempted */
    double min_step;
    int step_rejected; /* this step has been rejected at least once */
    int saw_nonfinite; /* a rejected attempt had a non-finite error, for the message */
} ode_clock;

typedef enum {
    ODE_OK = 0,
    ODE_FAIL_MAX_NFE,          /* no evaluation left before t_end */
    ODE_FAIL_UNDERFLOW,        /* rk45: step shrank below min_step */
    ODE_FAIL_INITIAL_NONFINITE,/* rk45: F(x0) not finite */
    ODE_FAIL_NONFINITE,        /* fixed step: a non-finite F */
} ode_failure;

/* The message of a failure of the trajectory with clock c. */
void ode_failure_message(ode_failure why, const ode_clock *c, char *buf, size_t size);

/* SciPy's select_initial_step from RMS norms scaled by atol + |y0| rtol:
 * the probe step from d0 = |y0| and d1 = |f0|, then the first step from d1
 * and d2 = |f(y0 + probe f0) - f0| (not yet divided by the probe). */
double ode_probe_step(double d0, double d1);
double ode_first_step(double probe, double d1, double d2);

/* rk45, head of SciPy's _step_impl: a new step from the accepted state, and
 * one attempt at it (h, t_new set, the last step clipped to t_end). Both
 * return ODE_OK or ODE_FAIL_UNDERFLOW. */
ode_failure ode_begin_step(ode_clock *c);
ode_failure ode_begin_attempt(ode_clock *c);

/* rk45: the attempt's error norm decides. 1: accepted (t = t_new, h_abs
 * grown); the caller takes y_new and, unless t reached t_end, begins a step.
 * 0: rejected (h_abs shrunk); the caller begins another attempt. */
int ode_finish_attempt(ode_clock *c, double error_norm);

/* Fixed step: one more of `steps` steps taken; 1 once t_end is reached. */
int ode_fixed_advance(ode_clock *c, int steps);

#endif
