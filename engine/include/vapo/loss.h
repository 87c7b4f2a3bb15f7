/* The VAPO loss: the minibatch estimator of VAPO-MATH.md section 3.6.
 *   x_i  = m(t_i) xbar_i + sigma(t_i) z_i           (Gaussian homotopy)
 *   gc_i = closed-form conditionally centred innovation (exact in z)
 *   loss = 1/(B d) sum_i [ 1/2 |grad Phi(x_i)|^2 + w_i gc_i Phi(x_i) + lambda Phi(x_i)^2 ]
 * with the log-uniform time reparameterisation tau(t) of section 2.3 and the
 * innovation weight w = tau'/2 ("jacobian", reading A) or 1/2 ("constant").
 * The pathwise estimator replaces w_i gc_i Phi(x_i) by -grad Phi(x_i) . v_i,
 * v_i = 2 w_i (dm/dtau xbar_i + dsigma/dtau z_i): equal in expectation. */
#ifndef VAPO_LOSS_H
#define VAPO_LOSS_H

#include <stdint.h>

#include "vapo/net.h"

typedef enum { VAPO_WEIGHT_JACOBIAN = 0, VAPO_WEIGHT_CONSTANT = 1 } vapo_innovation_weight;

/* How the covariance term E[w gc Phi] is estimated; both have the same
 * expectation for every theta (docs/DESIGN.md, "Estimators"):
 *   SCORE     w gc Phi(x)             section 3.6 verbatim
 *   PATHWISE  -grad Phi(x) . v        v = dx/dt of the path: Stein's identity
 *             turns the score-function form into the reparameterised one,
 *             with far less noise and no extra cost */
typedef enum { VAPO_ESTIMATOR_SCORE = 0, VAPO_ESTIMATOR_PATHWISE = 1 } vapo_estimator;

typedef struct {
    double omega;  /* prior std (1) */
    double nu;     /* likelihood std (0.01) */
    double eps;    /* sharpness of the time law (nu^2 / omega^2) */
    double lambda; /* spectral-gap weight (1e-4) */
    vapo_innovation_weight weighting;
    vapo_estimator estimator;
    double time_tilt; /* k: the density of t is proportional to exp(k t); 0 (default) is the paper's U(0, 1) */
} vapo_loss_config;

typedef struct {
    double tau, dtau; /* exponent and its time derivative */
    double m, sigma;  /* homotopy mean factor and std */
    double w;         /* innovation weight */
    double vm, vs;    /* velocity of the path: v = vm xbar + vs z = 2w (dm/dtau xbar + dsigma/dtau z) */
} vapo_schedule;

typedef struct {
    double total, dirichlet, covariance, spectral; /* each already divided by B d */
    double phi_mean, grad_norm;                    /* diagnostics: mean Phi, mean |grad Phi| */
} vapo_loss_terms;

vapo_loss_config vapo_loss_config_default(void);
int vapo_loss_config_validate(const vapo_loss_config *cfg);
int vapo_innovation_weight_parse(const char *name, vapo_innovation_weight *out);
const char *vapo_innovation_weight_name(vapo_innovation_weight w);
int vapo_estimator_parse(const char *name, vapo_estimator *out);
const char *vapo_estimator_name(vapo_estimator e);

vapo_schedule vapo_schedule_at(const vapo_loss_config *cfg, double t);
/* L_eps = ln((1 + eps) / eps), the rate of the time law
 * tau(t) = eps (exp(t L_eps) - 1) (VAPO-MATH.md). */
double vapo_loss_l_eps(const vapo_loss_config *cfg);

/* The training time for a uniform draw u in [0, 1): u itself, or with a time
 * tilt k the inverse CDF of the density k e^{kt} / (e^k - 1). A tilt k > 0
 * samples near-data noise levels more (sigma^{-2k/L_eps} relative to the
 * paper's law): it changes the weighting of the loss over t, not its form. */
double vapo_loss_time(const vapo_loss_config *cfg, double u);

/* The per-sample coefficients the backend's loss ops use (backend.h). */
vapo_path_coef vapo_path_coef_at(const vapo_loss_config *cfg, double t);

/* Host versions of the backend's loss ops, for tests and tools. For B samples
 * of dimension d: coef from the times t; x and (if not NULL) v from data xbar
 * and standard normal noise z; zx = (|z|^2, xbar.z) per sample. */
void vapo_loss_perturb(const vapo_loss_config *cfg, int batch, int d, const float *xbar, const double *t,
                       const float *z, float *x, vapo_path_coef *coef, double *zx, float *v);

/* The loss value and its seeds for the dual pass: phi_bar = dL/dPhi (B) and
 * u = dL/d(grad Phi) (B x d), either may be NULL. v != NULL: PATHWISE. */
void vapo_loss_eval(const vapo_loss_config *cfg, int batch, int d, const vapo_path_coef *coef, const double *zx,
                    const float *phi, const float *grad, const float *v, vapo_loss_terms *terms, float *phi_bar,
                    float *u);

/* Sums the per-row terms of loss_seeds (VAPO_ROW_TERMS doubles per row). */
void vapo_loss_terms_sum(int batch, const double *rows, vapo_loss_terms *terms);

/* Host scratch for vapo_loss_step, sized for one batch shape. */
typedef struct vapo_loss_work vapo_loss_work;
vapo_loss_work *vapo_loss_work_create(vapo_net *net, int batch);
void vapo_loss_work_free(vapo_loss_work *w);

/* One exact gradient of the loss: draws t and z for (seed, step) from the
 * counter-based RNG, runs forward, backward, tangent and dual passes, and
 * ACCUMULATES dL/dtheta into param_grad (backend memory). xbar is host NCHW.
 * Everything runs on the backend; the only read back is the B rows of loss
 * terms, after the step is queued. */
int vapo_loss_step(vapo_net *net, vapo_loss_work *work, const vapo_loss_config *cfg, const float *xbar,
                   uint64_t seed, uint64_t step, float *param_grad, vapo_loss_terms *terms);

/* The same for rows row0 .. row0+b-1 (b: the work's batch size) of a batch
 * of `global` rows, for data-parallel workers: each row draws the t and z it
 * draws in the whole batch, and the loss is scaled by 1/(global d), so the
 * workers' gradients sum to the whole batch's. Writes the b rows'
 * VAPO_ROW_TERMS doubles to rows (host); vapo_loss_terms_sum over all global
 * rows gives the whole batch's terms, vapo_loss_check checks them. */
int vapo_loss_step_rows(vapo_net *net, vapo_loss_work *work, const vapo_loss_config *cfg, const float *xbar,
                        uint64_t seed, uint64_t step, int global, int row0, float *param_grad, double *rows);

/* 0 if the loss is finite, else -1 with a message naming the step. */
int vapo_loss_check(const vapo_loss_terms *terms, uint64_t step);

/* How well the field follows the path at one noise level (vapo_field_fit). */
typedef struct {
    double cosine;       /* batch mean of cos(grad Phi(x), v); v also carries noise that x does not
                            determine, so even the best field stays below 1 */
    double contraction;  /* batch mean of (grad Phi . z / |z|^2) / vs: 1 when noise shrinks at the path's rate */
    double denoiser_rms; /* RMS pixel error of the denoiser the field implies (grad Phi = E[v | x] holds
                            for D = E[xbar | x] = (grad Phi - (vs / sigma) x) / (vm - vs m / sigma)) */
    double input_rms;    /* the same for D = x / m, the noisy input itself: sigma / m (infinite at m = 0) */
} vapo_field_fit_result;

/* A training diagnostic: for the data batch xbar (host, the work's batch
 * size) perturbed to each time t[k] with noise of (seed), out[k]. Reads
 * gradients back to the host; not for the training loop. */
int vapo_field_fit(vapo_net *net, vapo_loss_work *work, const vapo_loss_config *cfg, const float *xbar, int nt,
                   const double *t, uint64_t seed, vapo_field_fit_result *out);

#endif
