/* The VAPO loss: the minibatch estimator of VAPO-MATH.md section 3.6.
 *   x_i  = m(t_i) xbar_i + sigma(t_i) z_i           (Gaussian homotopy)
 *   gc_i = closed-form conditionally centred innovation (exact in z)
 *   loss = 1/(B d) sum_i [ 1/2 |grad Phi(x_i)|^2 + w_i gc_i Phi(x_i) + lambda Phi(x_i)^2 ]
 * with the log-uniform time reparameterisation tau(t) of section 2.3 and the
 * innovation weight w = tau'/2 ("jacobian", reading A) or 1/2 ("constant"). */
#ifndef VAPO_LOSS_H
#define VAPO_LOSS_H

#include <stdint.h>

#include "vapo/net.h"

typedef enum { VAPO_WEIGHT_JACOBIAN = 0, VAPO_WEIGHT_CONSTANT = 1 } vapo_innovation_weight;

typedef struct {
    double omega;  /* prior std (1) */
    double nu;     /* likelihood std (0.01) */
    double eps;    /* sharpness of the time law (nu^2 / omega^2) */
    double lambda; /* spectral-gap weight (1e-4) */
    vapo_innovation_weight weighting;
    int control_variate; /* subtract w gc Phi(m xbar): same expectation, less noise (training) */
} vapo_loss_config;

typedef struct {
    double tau, dtau; /* exponent and its time derivative */
    double m, sigma;  /* homotopy mean factor and std */
    double w;         /* innovation weight */
} vapo_schedule;

typedef struct {
    double total, dirichlet, covariance, spectral; /* each already divided by B d */
    double phi_mean, grad_norm;                    /* diagnostics: mean Phi, mean |grad Phi| */
} vapo_loss_terms;

vapo_loss_config vapo_loss_config_default(void);
int vapo_loss_config_validate(const vapo_loss_config *cfg);
int vapo_innovation_weight_parse(const char *name, vapo_innovation_weight *out);
const char *vapo_innovation_weight_name(vapo_innovation_weight w);

vapo_schedule vapo_schedule_at(const vapo_loss_config *cfg, double t);

/* For B samples of dimension d (host arrays): builds x, gc and w from data
 * xbar, times t and standard normal noise z. */
void vapo_loss_perturb(const vapo_loss_config *cfg, int batch, int d, const float *xbar, const double *t,
                       const float *z, float *x, double *gc, double *w);

/* The loss value and its seeds for the dual pass: phi_bar = dL/dPhi (B) and
 * u = dL/d(grad Phi) (B x d), all host arrays. */
void vapo_loss_eval(const vapo_loss_config *cfg, int batch, int d, const float *phi, const float *grad,
                    const double *gc, const double *w, vapo_loss_terms *terms, float *phi_bar, float *u);

/* Host scratch for vapo_loss_step, sized for one batch shape. */
typedef struct vapo_loss_work vapo_loss_work;
vapo_loss_work *vapo_loss_work_create(vapo_net *net, int batch);
void vapo_loss_work_free(vapo_loss_work *w);

/* One exact gradient of the loss: draws t and z for (seed, step) from the
 * counter-based RNG, runs forward, backward, tangent and dual passes, and
 * ACCUMULATES dL/dtheta into param_grad (backend memory). xbar is host NCHW. */
int vapo_loss_step(vapo_net *net, vapo_loss_work *work, const vapo_loss_config *cfg, const float *xbar,
                   uint64_t seed, uint64_t step, float *param_grad, vapo_loss_terms *terms);

#endif
