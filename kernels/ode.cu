/* Runge-Kutta sampling ops (backend.h: rk_combine, rk_norm, rows_copy) for
 * engine/ode_batch.c. The arithmetic is elementwise.h's vapo_rk_sum and
 * vapo_rk_scaled, as on the CPU. A row's norm is one block's deterministic
 * sum (cuda_block_sum), so it is bit-reproducible run to run; its order
 * differs from the CPU's sequential sum only in the last bits. */
#include "cuda_common.cuh"

/* The stages of one combination, passed by value: kernel parameters are
 * the only device-visible copy of host arrays that needs no upload. */
typedef struct {
    const float *k[VAPO_RK_MAX_TERMS];
    double c[VAPO_RK_MAX_TERMS];
    int nk;
} rk_terms;

static rk_terms make_terms(int nk, const double *c, const float *const *k)
{
    rk_terms t = {};
    t.nk = nk;
    for (int j = 0; j < nk; j++) {
        t.k[j] = k[j];
        t.c[j] = c[j];
    }
    return t;
}

static __global__ void rk_combine_kernel(size_t n, int d, const double *h, rk_terms t, const float *y, float *out)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const double hr = h ? h[i / d] : 1.0;
        out[i] = (float)(y[i] + hr * vapo_rk_sum(t.nk, t.c, t.k, i));
    }
}

void cuda_rk_combine(vapo_backend *be, int rows, int d, const double *h, int nk, const double *c,
                     const float *const *k, const float *y, float *out)
{
    cuda_backend *cb = cuda_enter(be);
    const size_t n = (size_t)rows * d;
    if (!n)
        return;
    rk_combine_kernel<<<cuda_grid_1d(cb, n, VAPO_CUDA_BLOCK), VAPO_CUDA_BLOCK, 0, cb->stream>>>(
        n, d, h, make_terms(nk, c, k), y, out);
    cuda_check_launch(cb, "rk_combine");
}

/* One block per row (blockIdx.x strides over rows). */
static __global__ void rk_norm_kernel(int rows, int d, const double *h, rk_terms t, const float *y,
                                      const float *y_new, double atol, double rtol, double *norm)
{
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const double hr = h ? h[r] : 1.0;
        double sumsq = 0.0;
        for (size_t i = (size_t)r * d + threadIdx.x; i < (size_t)(r + 1) * d; i += blockDim.x) {
            const double v = vapo_rk_scaled(vapo_rk_sum(t.nk, t.c, t.k, i) * hr, y[i], y_new[i], atol, rtol);
            sumsq += v * v;
        }
        sumsq = cuda_block_sum(sumsq);
        if (threadIdx.x == 0)
            norm[r] = vapo_rk_rms(sumsq, d);
    }
}

void cuda_rk_norm(vapo_backend *be, int rows, int d, const double *h, int nk, const double *c,
                  const float *const *k, const float *y, const float *y_new, double atol, double rtol, double *norm)
{
    cuda_backend *cb = cuda_enter(be);
    if (rows <= 0 || d <= 0)
        return;
    const unsigned block = d >= VAPO_CUDA_BLOCK ? VAPO_CUDA_BLOCK : (unsigned)((d + 31) / 32 * 32);
    const unsigned grid = (unsigned)(rows < 65535 ? rows : 65535);
    rk_norm_kernel<<<grid, block, 0, cb->stream>>>(rows, d, h, make_terms(nk, c, k), y, y_new ? y_new : y, atol,
                                                   rtol, norm);
    cuda_check_launch(cb, "rk_norm");
}

static __global__ void rows_copy_kernel(size_t n, int d, float *dst, const int *dst_rows, const float *src,
                                        const int *src_rows)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / d, col = i % d;
        const size_t to = dst_rows ? (size_t)dst_rows[r] : r, from = src_rows ? (size_t)src_rows[r] : r;
        dst[to * d + col] = src[from * d + col];
    }
}

void cuda_rows_copy(vapo_backend *be, int rows, int d, float *dst, const int *dst_rows, const float *src,
                    const int *src_rows)
{
    cuda_backend *cb = cuda_enter(be);
    const size_t n = (size_t)rows * d;
    if (!n)
        return;
    rows_copy_kernel<<<cuda_grid_1d(cb, n, VAPO_CUDA_BLOCK), VAPO_CUDA_BLOCK, 0, cb->stream>>>(n, d, dst, dst_rows,
                                                                                              src, src_rows);
    cuda_check_launch(cb, "rows_copy");
}
