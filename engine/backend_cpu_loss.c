/* The CPU backend's noise and VAPO-loss ops (backend.h), and the host entry
 * points of loss.h that run them on host arrays. One sample per OpenMP
 * iteration; each row's sums run in a fixed order, so results do not depend
 * on the thread count. */
#include <math.h>
#include <stdlib.h>

#include "backend_cpu.h"
#include "vapo/loss.h"
#include "vapo/rng.h"

void cpu_rng_normal(vapo_backend *be, uint64_t seed, uint64_t stream, uint64_t first, size_t n, float *out)
{
    (void)be;
    vapo_rng_normal(seed, stream, first, n, out);
}

void cpu_loss_perturb(vapo_backend *be, int batch, int d, const vapo_path_coef *coef, const float *xbar,
                      const float *z, float *x, float *v, double *zx)
{
    (void)be;
    #pragma omp parallel for schedule(static) if ((size_t)batch * d >= VAPO_CPU_PARALLEL_MIN)
    for (int i = 0; i < batch; i++) {
        const vapo_path_coef c = coef[i];
        const size_t o = (size_t)i * d;
        double zz = 0.0, xz = 0.0;
        for (int j = 0; j < d; j++) {
            x[o + j] = vapo_path_point(c.m, c.sigma, xbar[o + j], z[o + j]);
            if (v)
                v[o + j] = vapo_path_point(c.vm, c.vs, xbar[o + j], z[o + j]);
            zz += (double)z[o + j] * z[o + j];
            xz += (double)xbar[o + j] * z[o + j];
        }
        zx[2 * i] = zz, zx[2 * i + 1] = xz;
    }
}

void cpu_loss_seeds(vapo_backend *be, int batch, int d, double scale, double lambda, const vapo_path_coef *coef,
                    const double *zx, const float *phi, const float *grad, const float *v, float *u, float *phi_bar,
                    double *terms)
{
    (void)be;
    #pragma omp parallel for schedule(static) if ((size_t)batch * d >= VAPO_CPU_PARALLEL_MIN)
    for (int i = 0; i < batch; i++) {
        const size_t o = (size_t)i * d;
        double gg = 0.0, gv = 0.0;
        for (int j = 0; j < d; j++) {
            gg += (double)grad[o + j] * grad[o + j];
            if (v)
                gv += (double)grad[o + j] * v[o + j];
            u[o + j] = vapo_loss_u(scale, grad[o + j], v ? v[o + j] : 0.0f);
        }
        const double wgc = v ? 0.0 : vapo_path_wgc(&coef[i], zx + 2 * i, d);
        phi_bar[i] = vapo_loss_phi_bar(scale, lambda, wgc, phi[i]);
        vapo_loss_row_terms(scale, lambda, gg, v ? -gv : wgc * phi[i], wgc, phi[i], terms + (size_t)VAPO_ROW_TERMS * i);
    }
}

/* The host entry points: the ops above ignore their backend argument. */
void vapo_loss_perturb(const vapo_loss_config *cfg, int batch, int d, const float *xbar, const double *t,
                       const float *z, float *x, vapo_path_coef *coef, double *zx, float *v)
{
    for (int i = 0; i < batch; i++)
        coef[i] = vapo_path_coef_at(cfg, t[i]);
    cpu_loss_perturb(NULL, batch, d, coef, xbar, z, x, v, zx);
}

void vapo_loss_eval(const vapo_loss_config *cfg, int batch, int d, const vapo_path_coef *coef, const double *zx,
                    const float *phi, const float *grad, const float *v, vapo_loss_terms *terms, float *phi_bar,
                    float *u)
{
    float *u_tmp = u ? NULL : malloc(sizeof(float) * batch * d), *pb_tmp = phi_bar ? NULL : malloc(sizeof(float) * batch);
    double *rows = malloc(sizeof(double) * VAPO_ROW_TERMS * batch);
    if ((!u && !u_tmp) || (!phi_bar && !pb_tmp) || !rows) {
        free(u_tmp), free(pb_tmp), free(rows);
        *terms = (vapo_loss_terms){.total = NAN};
        return;
    }
    cpu_loss_seeds(NULL, batch, d, 1.0 / ((double)batch * d), cfg->lambda, coef, zx, phi, grad, v, u ? u : u_tmp,
                   phi_bar ? phi_bar : pb_tmp, rows);
    vapo_loss_terms_sum(batch, rows, terms);
    free(u_tmp), free(pb_tmp), free(rows);
}
