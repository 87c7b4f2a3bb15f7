/* Runge-Kutta sampling ops of the CPU backend (backend.h: rk_combine,
 * rk_norm, rows_copy). A row's norm is summed in index order, as ode.c sums a
 * trajectory's, so the CPU batch driver sees the host solver's error norms for
 * the same stages. */
#include <string.h>

#include "backend_cpu.h"

void cpu_rk_combine(vapo_backend *be, int rows, int d, const double *h, int nk, const double *c,
                    const float *const *k, const float *y, float *out)
{
    (void)be;
    const size_t n = (size_t)rows * d;
    #pragma omp parallel for schedule(static) if ((size_t)rows * d >= VAPO_CPU_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) {
        const double hr = h ? h[i / d] : 1.0;
        out[i] = (float)(y[i] + hr * vapo_rk_sum(nk, c, k, i));
    }
}

void cpu_rk_norm(vapo_backend *be, int rows, int d, const double *h, int nk, const double *c, const float *const *k,
                 const float *y, const float *y_new, double atol, double rtol, double *norm)
{
    (void)be;
    if (!y_new)
        y_new = y;
    #pragma omp parallel for schedule(static) if ((size_t)rows * d >= VAPO_CPU_PARALLEL_MIN)
    for (int r = 0; r < rows; r++) {
        const double hr = h ? h[r] : 1.0;
        double sumsq = 0.0;
        for (size_t i = (size_t)r * d; i < (size_t)(r + 1) * d; i++) {
            const double v = vapo_rk_scaled(vapo_rk_sum(nk, c, k, i) * hr, y[i], y_new[i], atol, rtol);
            sumsq += v * v;
        }
        norm[r] = vapo_rk_rms(sumsq, d);
    }
}

void cpu_rows_copy(vapo_backend *be, int rows, int d, float *dst, const int *dst_rows, const float *src,
                   const int *src_rows)
{
    (void)be;
    #pragma omp parallel for schedule(static) if ((size_t)rows * d >= VAPO_CPU_PARALLEL_MIN)
    for (int r = 0; r < rows; r++) {
        const size_t to = dst_rows ? (size_t)dst_rows[r] : (size_t)r;
        const size_t from = src_rows ? (size_t)src_rows[r] : (size_t)r;
        memcpy(dst + to * d, src + from * d, sizeof(float) * d);
    }
}
