/* Ops of the CPU backend that live outside backend_cpu.c, one family per
 * file (backend_cpu_<family>.c); backend_cpu.c puts them in the table. */
#ifndef VAPO_BACKEND_CPU_H
#define VAPO_BACKEND_CPU_H

#include "vapo/backend.h"

/* Elements below which an OpenMP region costs more than it saves (waking a
 * passive pool is tens of microseconds). */
#define VAPO_CPU_PARALLEL_MIN 32768

/* backend_cpu_loss.c */
void cpu_rng_normal(vapo_backend *be, uint64_t seed, uint64_t stream, uint64_t first, size_t n, float *out);
void cpu_loss_perturb(vapo_backend *be, int batch, int d, const vapo_path_coef *coef, const float *xbar,
                      const float *z, float *x, float *v, double *zx);
void cpu_loss_seeds(vapo_backend *be, int batch, int d, double scale, double lambda, const vapo_path_coef *coef,
                    const double *zx, const float *phi, const float *grad, const float *v, float *u, float *phi_bar,
                    double *terms);

/* backend_cpu_optim.c */
void cpu_optim_update(vapo_backend *be, const vapo_optim_hyper *h, int ntensors, const size_t *offsets, size_t n,
                      float *params, float *grad, float *m, float *v, float *ema, float *scratch, double *gnorm);

/* backend_cpu_ode.c */
void cpu_rk_combine(vapo_backend *be, int rows, int d, const double *h, int nk, const double *c,
                    const float *const *k, const float *y, float *out);
void cpu_rk_norm(vapo_backend *be, int rows, int d, const double *h, int nk, const double *c, const float *const *k,
                 const float *y, const float *y_new, double atol, double rtol, double *norm);
void cpu_rows_copy(vapo_backend *be, int rows, int d, float *dst, const int *dst_rows, const float *src,
                   const int *src_rows);

#endif
