#include "vapo/loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vapo/error.h"
#include "vapo/rng.h"

vapo_loss_config vapo_loss_config_default(void)
{
    return (vapo_loss_config){.omega = 1.0, .nu = 0.01, .eps = 1e-4, .lambda = 1e-4, .weighting = VAPO_WEIGHT_JACOBIAN};
}

int vapo_loss_config_validate(const vapo_loss_config *c)
{
    if (!(c->omega > 0) || !isfinite(c->omega))
        return vapo_fail("omega must be a positive number, got %g", c->omega);
    if (!(c->nu > 0) || !isfinite(c->nu))
        return vapo_fail("nu must be a positive number, got %g", c->nu);
    if (!(c->eps > 0) || !isfinite(c->eps))
        return vapo_fail("eps must be a positive number, got %g", c->eps);
    if (!(c->lambda >= 0) || !isfinite(c->lambda))
        return vapo_fail("lambda must be a non-negative number, got %g", c->lambda);
    if (c->weighting != VAPO_WEIGHT_JACOBIAN && c->weighting != VAPO_WEIGHT_CONSTANT)
        return vapo_fail("unknown innovation weighting");
    return 0;
}

int vapo_innovation_weight_parse(const char *name, vapo_innovation_weight *out)
{
    if (!strcmp(name, "jacobian"))
        *out = VAPO_WEIGHT_JACOBIAN;
    else if (!strcmp(name, "constant"))
        *out = VAPO_WEIGHT_CONSTANT;
    else
        return vapo_fail("unknown innovation weighting '%s' (expected jacobian or constant)", name);
    return 0;
}

const char *vapo_innovation_weight_name(vapo_innovation_weight w)
{
    return w == VAPO_WEIGHT_CONSTANT ? "constant" : "jacobian";
}

vapo_schedule vapo_schedule_at(const vapo_loss_config *c, double t)
{
    const double l_eps = log((1.0 + c->eps) / c->eps);
    const double w2 = c->omega * c->omega, n2 = c->nu * c->nu;
    vapo_schedule s;
    s.tau = c->eps * expm1(t * l_eps);
    s.dtau = (s.tau + c->eps) * l_eps;
    const double den = n2 + s.tau * w2;
    s.m = s.tau * w2 / den;
    s.sigma = c->omega * c->nu / sqrt(den);
    s.w = c->weighting == VAPO_WEIGHT_JACOBIAN ? 0.5 * s.dtau : 0.5;
    return s;
}

void vapo_loss_perturb(const vapo_loss_config *cfg, int batch, int d, const float *xbar, const double *t,
                       const float *z, float *x, double *gc, double *w)
{
    const double n2 = cfg->nu * cfg->nu;
    for (int i = 0; i < batch; i++) {
        const vapo_schedule s = vapo_schedule_at(cfg, t[i]);
        const float *xb = xbar + (size_t)i * d, *zi = z + (size_t)i * d;
        float *xi = x + (size_t)i * d;
        double zz = 0.0, xz = 0.0;
        for (int j = 0; j < d; j++) {
            xi[j] = (float)(s.m * xb[j] + s.sigma * zi[j]);
            zz += (double)zi[j] * zi[j];
            xz += (double)xb[j] * zi[j];
        }
        /* gamma - E[gamma | xbar, t] written in z: no cancellation of two ~d/nu^2 terms */
        gc[i] = (s.sigma * s.sigma * (zz - d) - 2.0 * (1.0 - s.m) * s.sigma * xz) / n2;
        w[i] = s.w;
    }
}

void vapo_loss_eval(const vapo_loss_config *cfg, int batch, int d, const float *phi, const float *grad,
                    const double *gc, const double *w, vapo_loss_terms *terms, float *phi_bar, float *u)
{
    const double scale = 1.0 / ((double)batch * d);
    double dir = 0.0, cov = 0.0, spec = 0.0, pm = 0.0, gn = 0.0, phi_sum = 0.0;
    for (int i = 0; i < batch; i++)
        phi_sum += phi[i];
    for (int i = 0; i < batch; i++) {
        const float *gi = grad + (size_t)i * d;
        double gg = 0.0;
        for (int j = 0; j < d; j++) {
            gg += (double)gi[j] * gi[j];
            if (u)
                u[(size_t)i * d + j] = (float)(scale * gi[j]);
        }
        dir += 0.5 * gg;
        /* The reported value centres Phi by the leave-one-out batch mean: the
         * same expectation (E[gc | xbar, t] = 0) without the noise of Phi's
         * offset. The gradient (phi_bar) does not depend on the offset. */
        const double loo = batch > 1 ? (phi_sum - phi[i]) / (batch - 1) : 0.0;
        cov += w[i] * gc[i] * (phi[i] - loo);
        spec += cfg->lambda * (double)phi[i] * phi[i];
        pm += phi[i];
        gn += sqrt(gg);
        if (phi_bar)
            phi_bar[i] = (float)(scale * (w[i] * gc[i] + 2.0 * cfg->lambda * phi[i]));
    }
    terms->dirichlet = dir * scale;
    terms->covariance = cov * scale;
    terms->spectral = spec * scale;
    terms->total = terms->dirichlet + terms->covariance + terms->spectral;
    terms->phi_mean = pm / batch;
    terms->grad_norm = gn / batch;
}

/* ---- one exact gradient through the network -------------------------------------- */

/* Rows of the network batch: the B perturbed points, then (with the control
 * variate) the B homotopy means m xbar. */
struct vapo_loss_work {
    int batch, d, rows;
    double *t, *gc, *w;
    float *z, *x, *phi, *grad, *phi_bar, *u; /* host; x, grad, u: rows x d */
    float *dev;                              /* backend: x | grad | u | phi | phi_bar */
    vapo_backend *be;
};

void vapo_loss_work_free(vapo_loss_work *w)
{
    if (!w)
        return;
    if (w->dev)
        w->be->free(w->be, w->dev);
    free(w->t), free(w->gc), free(w->w), free(w->z), free(w->x), free(w->phi), free(w->grad), free(w->phi_bar),
        free(w->u);
    free(w);
}

static size_t row_floats(const vapo_loss_work *w) { return (size_t)w->rows * w->d; }
static float *dev_x(vapo_loss_work *w) { return w->dev; }
static float *dev_grad(vapo_loss_work *w) { return w->dev + row_floats(w); }
static float *dev_u(vapo_loss_work *w) { return w->dev + 2 * row_floats(w); }
static float *dev_phi(vapo_loss_work *w) { return w->dev + 3 * row_floats(w); }
static float *dev_phi_bar(vapo_loss_work *w) { return dev_phi(w) + w->rows; }

vapo_loss_work *vapo_loss_work_create(vapo_net *net, int batch)
{
    vapo_loss_work *w = calloc(1, sizeof *w);
    if (!w)
        goto oom;
    const size_t d = vapo_net_input_size(net), rows = 2 * (size_t)batch, n = rows * d;
    w->batch = batch, w->d = (int)d, w->rows = (int)rows;
    w->t = malloc(sizeof(double) * batch), w->gc = malloc(sizeof(double) * batch);
    w->w = malloc(sizeof(double) * batch), w->phi = malloc(sizeof(float) * rows);
    w->phi_bar = malloc(sizeof(float) * rows);
    w->z = malloc(sizeof(float) * n), w->x = malloc(sizeof(float) * n);
    w->grad = malloc(sizeof(float) * n), w->u = calloc(n, sizeof(float));
    vapo_backend *be = w->be = vapo_net_backend(net);
    w->dev = be->alloc(be, sizeof(float) * (3 * n + 2 * rows));
    if (!w->t || !w->gc || !w->w || !w->phi || !w->phi_bar || !w->z || !w->x || !w->grad || !w->u || !w->dev)
        goto oom;
    return w;
oom:
    vapo_loss_work_free(w);
    vapo_fail("out of memory for a training batch of %d", batch);
    return NULL;
}

/* The control variate: E[gc | xbar, t] = 0, so subtracting w gc Phi(m xbar)
 * (Phi at the homotopy mean, independent of z) leaves the gradient's
 * expectation unchanged while removing most of its noise when sigma is small:
 * Phi(x) - Phi(m xbar) = O(sigma). The B mean points ride in the same batch
 * with tangent 0, so one forward/backward/tangent/dual pass does both. */
static void add_control_variate(const vapo_loss_config *cfg, vapo_loss_work *wk, const float *xbar,
                                vapo_loss_terms *terms)
{
    const int B = wk->batch, d = wk->d;
    const double scale = 1.0 / ((double)B * d);
    double cov = 0;
    for (int i = 0; i < B; i++) {
        wk->phi_bar[B + i] = (float)(-scale * wk->w[i] * wk->gc[i]);
        cov += wk->w[i] * wk->gc[i] * ((double)wk->phi[i] - wk->phi[B + i]);
    }
    /* the reported covariance term uses the same, far less noisy, estimator */
    terms->total += cov * scale - terms->covariance;
    terms->covariance = cov * scale;
    (void)cfg, (void)xbar;
}

int vapo_loss_step(vapo_net *net, vapo_loss_work *wk, const vapo_loss_config *cfg, const float *xbar,
                   uint64_t seed, uint64_t step, float *param_grad, vapo_loss_terms *terms)
{
    vapo_backend *be = vapo_net_backend(net);
    const int B = wk->batch, d = wk->d, rows = cfg->control_variate ? 2 * B : B;
    const size_t n = (size_t)B * d, nr = (size_t)rows * d;
    const uint64_t first = step * (uint64_t)B;
    for (int i = 0; i < B; i++)
        wk->t[i] = vapo_rng_uniform(seed, VAPO_STREAM_TRAIN + 1, first + i);
    vapo_rng_normal(seed, VAPO_STREAM_TRAIN + 2, first * d, n, wk->z);
    vapo_loss_perturb(cfg, B, d, xbar, wk->t, wk->z, wk->x, wk->gc, wk->w);
    if (cfg->control_variate)
        for (int i = 0; i < B; i++) {
            const double m = vapo_schedule_at(cfg, wk->t[i]).m;
            for (int j = 0; j < d; j++)
                wk->x[n + (size_t)i * d + j] = (float)(m * xbar[(size_t)i * d + j]);
        }

    be->upload(be, dev_x(wk), wk->x, sizeof(float) * nr);
    if (vapo_net_forward(net, rows, dev_x(wk), dev_phi(wk)) || vapo_net_backward(net, dev_grad(wk)))
        return -1;
    be->download(be, wk->phi, dev_phi(wk), sizeof(float) * rows);
    be->download(be, wk->grad, dev_grad(wk), sizeof(float) * n);
    vapo_loss_eval(cfg, B, d, wk->phi, wk->grad, wk->gc, wk->w, terms, wk->phi_bar, wk->u);
    if (cfg->control_variate)
        add_control_variate(cfg, wk, xbar, terms);
    if (!isfinite(terms->total))
        return vapo_fail("the loss is not finite (%g) at step %llu", terms->total, (unsigned long long)step);
    be->upload(be, dev_u(wk), wk->u, sizeof(float) * nr); /* rows past B stay 0: no tangent at the means */
    be->upload(be, dev_phi_bar(wk), wk->phi_bar, sizeof(float) * rows);
    if (vapo_net_tangent(net, dev_u(wk), NULL))
        return -1;
    return vapo_net_dual_backward(net, dev_phi_bar(wk), NULL, param_grad);
}
