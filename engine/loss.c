#include "vapo/loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vapo/error.h"
#include "vapo/rng.h"

vapo_loss_config vapo_loss_config_default(void)
{
    return (vapo_loss_config){.omega = 1.0, .nu = 0.01, .eps = 1e-4, .lambda = 1e-4, .weighting = VAPO_WEIGHT_JACOBIAN,
                                .estimator = VAPO_ESTIMATOR_SCORE};
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
    if (c->estimator != VAPO_ESTIMATOR_SCORE && c->estimator != VAPO_ESTIMATOR_PATHWISE)
        return vapo_fail("unknown estimator");
    if (!(fabs(c->time_tilt) <= 50))
        return vapo_fail("time tilt must be a number in [-50, 50], got %g", c->time_tilt);
    return 0;
}

double vapo_loss_time(const vapo_loss_config *c, double u)
{
    const double k = c->time_tilt;
    return k == 0 ? u : log1p(u * expm1(k)) / k;
}

static const char *const weight_names[] = {[VAPO_WEIGHT_JACOBIAN] = "jacobian", [VAPO_WEIGHT_CONSTANT] = "constant"};
static const char *const estimator_names[] = {[VAPO_ESTIMATOR_SCORE] = "score", [VAPO_ESTIMATOR_PATHWISE] = "pathwise"};

int vapo_innovation_weight_parse(const char *name, vapo_innovation_weight *out)
{
    const int k = vapo_name_index("innovation weighting", weight_names, 2, name);
    return k < 0 ? -1 : (*out = (vapo_innovation_weight)k, 0);
}

const char *vapo_innovation_weight_name(vapo_innovation_weight w) { return weight_names[w == VAPO_WEIGHT_CONSTANT]; }

int vapo_estimator_parse(const char *name, vapo_estimator *out)
{
    const int k = vapo_name_index("estimator", estimator_names, 2, name);
    return k < 0 ? -1 : (*out = (vapo_estimator)k, 0);
}

const char *vapo_estimator_name(vapo_estimator e) { return estimator_names[e == VAPO_ESTIMATOR_PATHWISE]; }

double vapo_loss_l_eps(const vapo_loss_config *c) { return log((1.0 + c->eps) / c->eps); }

vapo_schedule vapo_schedule_at(const vapo_loss_config *c, double t)
{
    const double l_eps = vapo_loss_l_eps(c);
    const double w2 = c->omega * c->omega, n2 = c->nu * c->nu;
    vapo_schedule s;
    s.tau = c->eps * expm1(t * l_eps);
    s.dtau = (s.tau + c->eps) * l_eps;
    const double den = n2 + s.tau * w2;
    s.m = s.tau * w2 / den;
    s.sigma = c->omega * c->nu / sqrt(den);
    s.w = c->weighting == VAPO_WEIGHT_JACOBIAN ? 0.5 * s.dtau : 0.5;
    /* dm/dtau = omega^2 nu^2 / den^2, dsigma/dtau = -sigma omega^2 / (2 den); the
     * weight 2w turns them into d/dt (jacobian) or keeps d/dtau (constant) */
    s.vm = 2.0 * s.w * w2 * n2 / (den * den);
    s.vs = -s.w * s.sigma * w2 / den;
    return s;
}

vapo_path_coef vapo_path_coef_at(const vapo_loss_config *cfg, double t)
{
    const vapo_schedule s = vapo_schedule_at(cfg, t);
    const double n2 = cfg->nu * cfg->nu;
    /* gamma - E[gamma | xbar, t] written in z: no cancellation of two ~d/nu^2 terms */
    return (vapo_path_coef){.m = (float)s.m, .sigma = (float)s.sigma, .vm = (float)s.vm, .vs = (float)s.vs,
                            .wz = s.w * s.sigma * s.sigma / n2, .wx = -2.0 * s.w * (1.0 - s.m) * s.sigma / n2};
}

void vapo_loss_terms_sum(int batch, const double *rows, vapo_loss_terms *terms)
{
    double dir = 0, cov = 0, spec = 0, gn = 0, wgc = 0, wgc_phi = 0, phi = 0;
    for (int i = 0; i < batch; i++) {
        const double *r = rows + (size_t)VAPO_ROW_TERMS * i;
        dir += r[0], cov += r[1], spec += r[2], gn += r[3], wgc += r[4], wgc_phi += r[4] * r[5], phi += r[5];
    }
    /* The reported score term centres Phi by the leave-one-out batch mean:
     * the same expectation (E[gc | xbar, t] = 0) without the noise of Phi's
     * offset: sum_i wgc_i (phi_i - (S - phi_i)/(B-1)). The gradient does not
     * depend on the offset. Pathwise rows have wgc = 0. */
    if (batch > 1)
        cov -= (wgc * phi - wgc_phi) / (batch - 1);
    *terms = (vapo_loss_terms){.dirichlet = dir, .covariance = cov, .spectral = spec, .total = dir + cov + spec,
                               .phi_mean = phi / batch, .grad_norm = gn / batch};
}

/* ---- one exact gradient through the network -------------------------------------- */

/* Backend buffers of one training batch (rows x d floats unless noted). */
struct vapo_loss_work {
    int batch, d;
    vapo_backend *be;
    vapo_path_coef *coef;                   /* host, batch */
    double *rows;                           /* host, VAPO_ROW_TERMS x batch */
    float *xbar, *z, *x, *v, *grad, *u;     /* backend */
    float *phi, *phi_bar;                   /* backend, batch */
    vapo_path_coef *dev_coef;               /* backend, batch */
    double *zx, *dev_rows;                  /* backend, 2 x batch and VAPO_ROW_TERMS x batch */
};

void vapo_loss_work_free(vapo_loss_work *w)
{
    if (!w)
        return;
    void *dev[] = {w->xbar, w->z, w->x, w->v, w->grad, w->u, w->phi, w->phi_bar, w->dev_coef, w->zx, w->dev_rows};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i])
            w->be->free(w->be, dev[i]);
    free(w->coef), free(w->rows);
    free(w);
}

vapo_loss_work *vapo_loss_work_create(vapo_net *net, int batch)
{
    vapo_loss_work *w = calloc(1, sizeof *w);
    if (!w)
        goto oom;
    vapo_backend *be = w->be = vapo_net_backend(net);
    const size_t d = vapo_net_input_size(net), n = (size_t)batch * d * sizeof(float);
    w->batch = batch, w->d = (int)d;
    w->coef = malloc(sizeof(vapo_path_coef) * batch);
    w->rows = malloc(sizeof(double) * VAPO_ROW_TERMS * batch);
    float **big[] = {&w->xbar, &w->z, &w->x, &w->v, &w->grad, &w->u};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
        if (!(*big[i] = be->alloc(be, n)))
            goto oom;
    w->phi = be->alloc(be, sizeof(float) * batch), w->phi_bar = be->alloc(be, sizeof(float) * batch);
    w->dev_coef = be->alloc(be, sizeof(vapo_path_coef) * batch);
    w->zx = be->alloc(be, sizeof(double) * 2 * batch);
    w->dev_rows = be->alloc(be, sizeof(double) * VAPO_ROW_TERMS * batch);
    if (!w->coef || !w->rows || !w->phi || !w->phi_bar || !w->dev_coef || !w->zx || !w->dev_rows)
        goto oom;
    return w;
oom:
    vapo_loss_work_free(w);
    vapo_fail("out of memory for a training batch of %d", batch);
    return NULL;
}

/* v's buffer when the estimator needs the path velocity, else NULL */
static float *velocity(const vapo_loss_config *cfg, vapo_loss_work *wk)
{
    return cfg->estimator == VAPO_ESTIMATOR_PATHWISE ? wk->v : NULL;
}

/* x, v and the innovation sums for (seed, step): times on the host (B
 * scalars, uploaded), noise drawn straight into backend memory. */
static void perturb(const vapo_loss_config *cfg, vapo_loss_work *wk, const float *xbar, uint64_t seed, uint64_t step,
                    int global, int row0)
{
    vapo_backend *be = wk->be;
    const int B = wk->batch, d = wk->d;
    const uint64_t first = step * (uint64_t)global + (uint64_t)row0; /* global row: the same draws for any split */
    for (int i = 0; i < B; i++) {
        const double u = vapo_rng_uniform(seed, VAPO_STREAM_TRAIN + 1, first + i);
        wk->coef[i] = vapo_path_coef_at(cfg, vapo_loss_time(cfg, u));
    }
    be->upload(be, wk->dev_coef, wk->coef, sizeof(vapo_path_coef) * B);
    be->upload(be, wk->xbar, xbar, sizeof(float) * B * d);
    be->rng_normal(be, seed, VAPO_STREAM_TRAIN + 2, first * d, (size_t)B * d, wk->z);
    be->loss_perturb(be, B, d, wk->dev_coef, wk->xbar, wk->z, wk->x, velocity(cfg, wk), wk->zx);
}

int vapo_loss_step_rows(vapo_net *net, vapo_loss_work *wk, const vapo_loss_config *cfg, const float *xbar,
                        uint64_t seed, uint64_t step, int global, int row0, float *param_grad, double *rows)
{
    vapo_backend *be = wk->be;
    const int B = wk->batch, d = wk->d;
    if (global < B || row0 < 0 || row0 > global - B)
        return vapo_fail("rows %d..%d are not in a batch of %d", row0, row0 + B - 1, global);
    perturb(cfg, wk, xbar, seed, step, global, row0);
    if (vapo_net_forward(net, B, wk->x, wk->phi) || vapo_net_backward_keep(net, wk->grad))
        return -1;
    be->loss_seeds(be, B, d, 1.0 / ((double)global * d), cfg->lambda, wk->dev_coef, wk->zx, wk->phi, wk->grad,
                   velocity(cfg, wk), wk->u, wk->phi_bar, wk->dev_rows);
    if (vapo_net_tangent(net, wk->u, NULL) || vapo_net_dual_backward(net, wk->phi_bar, NULL, param_grad))
        return -1;
    be->download(be, rows, wk->dev_rows, sizeof(double) * VAPO_ROW_TERMS * B);
    return 0;
}

int vapo_loss_step(vapo_net *net, vapo_loss_work *wk, const vapo_loss_config *cfg, const float *xbar,
                   uint64_t seed, uint64_t step, float *param_grad, vapo_loss_terms *terms)
{
    if (vapo_loss_step_rows(net, wk, cfg, xbar, seed, step, wk->batch, 0, param_grad, wk->rows))
        return -1;
    vapo_loss_terms_sum(wk->batch, wk->rows, terms);
    return vapo_loss_check(terms, step);
}

int vapo_loss_check(const vapo_loss_terms *terms, uint64_t step)
{
    if (!isfinite(terms->total))
        return vapo_fail("the loss is not finite (%g) at step %llu", terms->total, (unsigned long long)step);
    return 0;
}

/* ---- diagnostic ------------------------------------------------------------------------ */

/* Per row: cos(g, v); the noise contraction (g.z / |z|^2) / vs; and the RMS
 * error of the denoiser the field implies. The best field is E[v | x] =
 * vm D + vs (x - m D) / sigma with D = E[xbar | x], so D can be read back from
 * g, and its error is in pixel units: the scale of what the samples get wrong. */
static void fit_rows(const vapo_loss_work *wk, const float *g, const float *v, const float *z, const float *xbar,
                     vapo_path_coef c, vapo_field_fit_result *out)
{
    const double a = c.vs / c.sigma, b = c.vm - c.vs * c.m / c.sigma; /* g = b D + a x */
    double cs = 0, k = 0, e = 0;
    for (int i = 0; i < wk->batch; i++) {
        const size_t row = (size_t)i * wk->d;
        const float *gi = g + row, *vi = v + row, *zi = z + row, *xi = xbar + row;
        double gv = 0, gg = 0, vv = 0, gz = 0, zz = 0;
        for (int j = 0; j < wk->d; j++) {
            const double x = c.m * xi[j] + c.sigma * zi[j], err = (gi[j] - a * x) / b - xi[j];
            gv += (double)gi[j] * vi[j], gg += (double)gi[j] * gi[j], vv += (double)vi[j] * vi[j];
            gz += (double)gi[j] * zi[j], zz += (double)zi[j] * zi[j], e += err * err;
        }
        cs += gg > 0 && vv > 0 ? gv / sqrt(gg * vv) : 0.0;
        k += zz > 0 ? gz / zz / c.vs : 0.0;
    }
    out->cosine = cs / wk->batch, out->contraction = k / wk->batch;
    out->denoiser_rms = sqrt(e / ((double)wk->batch * wk->d));
    out->input_rms = c.m > 0 ? c.sigma / c.m : INFINITY;
}

int vapo_field_fit(vapo_net *net, vapo_loss_work *wk, const vapo_loss_config *cfg, const float *xbar, int nt,
                   const double *t, uint64_t seed, vapo_field_fit_result *out)
{
    vapo_backend *be = wk->be;
    const int B = wk->batch, d = wk->d;
    const size_t n = (size_t)B * d;
    float *host = malloc(sizeof(float) * 3 * n);
    int rc = host ? 0 : vapo_fail("out of memory");
    be->upload(be, wk->xbar, xbar, sizeof(float) * n);
    for (int k = 0; !rc && k < nt; k++) {
        for (int i = 0; i < B; i++)
            wk->coef[i] = vapo_path_coef_at(cfg, t[k]);
        be->upload(be, wk->dev_coef, wk->coef, sizeof(vapo_path_coef) * B);
        be->rng_normal(be, seed, VAPO_STREAM_TRAIN + 3, (uint64_t)k * n, n, wk->z);
        be->loss_perturb(be, B, d, wk->dev_coef, wk->xbar, wk->z, wk->x, wk->v, wk->zx);
        rc = vapo_net_forward(net, B, wk->x, wk->phi) || vapo_net_backward(net, wk->grad);
        if (!rc) {
            be->download(be, host, wk->grad, sizeof(float) * n);
            be->download(be, host + n, wk->v, sizeof(float) * n);
            be->download(be, host + 2 * n, wk->z, sizeof(float) * n);
            fit_rows(wk, host, host + n, host + 2 * n, xbar, wk->coef[0], out + k);
        }
    }
    free(host);
    return rc ? -1 : 0;
}
