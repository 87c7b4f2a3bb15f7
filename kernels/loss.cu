/* The CUDA backend's noise and VAPO-loss ops (backend.h): one block per
 * sample, the per-element arithmetic from backend.h's VAPO_HD helpers, and
 * per-row sums through cuda_block_sum (fixed order: reproducible). */
#include "cuda_common.cuh"
#include "rng_cuda.h"

void cuda_rng_normal(vapo_backend *be, uint64_t seed, uint64_t stream, uint64_t first, size_t n, float *out)
{
    cuda_enter(be);
    vapo_cuda_rng_normal(seed, stream, first, n, out); /* legacy stream: ordered with cb->stream */
}

static __global__ void perturb_kernel(int d, const vapo_path_coef *coef, const float *xbar, const float *z, float *x,
                                      float *v, double *zx)
{
    const vapo_path_coef c = coef[blockIdx.x];
    const size_t o = (size_t)blockIdx.x * d;
    double zz = 0.0, xz = 0.0;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        const float xb = xbar[o + j], zj = z[o + j];
        x[o + j] = vapo_path_point(c.m, c.sigma, xb, zj);
        if (v)
            v[o + j] = vapo_path_point(c.vm, c.vs, xb, zj);
        zz += (double)zj * zj;
        xz += (double)xb * zj;
    }
    zz = cuda_block_sum(zz);
    xz = cuda_block_sum(xz);
    if (threadIdx.x == 0)
        zx[2 * blockIdx.x] = zz, zx[2 * blockIdx.x + 1] = xz;
}

void cuda_loss_perturb(vapo_backend *be, int batch, int d, const vapo_path_coef *coef, const float *xbar,
                       const float *z, float *x, float *v, double *zx)
{
    cuda_backend *cb = cuda_enter(be);
    if (batch <= 0)
        return;
    perturb_kernel<<<batch, VAPO_CUDA_BLOCK, 0, cb->stream>>>(d, coef, xbar, z, x, v, zx);
    cuda_check(cb, cudaGetLastError(), "loss_perturb");
}

static __global__ void seeds_kernel(int d, double scale, double lambda, const vapo_path_coef *coef,
                                    const double *zx, const float *phi, const float *grad, const float *v, float *u,
                                    float *phi_bar, double *terms)
{
    const int i = blockIdx.x;
    const size_t o = (size_t)i * d;
    double gg = 0.0, gv = 0.0;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        const float g = grad[o + j], vj = v ? v[o + j] : 0.0f;
        gg += (double)g * g;
        gv += (double)g * vj;
        u[o + j] = vapo_loss_u(scale, g, vj);
    }
    gg = cuda_block_sum(gg);
    gv = cuda_block_sum(gv);
    if (threadIdx.x == 0) {
        const double wgc = v ? 0.0 : vapo_path_wgc(&coef[i], zx + 2 * i, d);
        phi_bar[i] = vapo_loss_phi_bar(scale, lambda, wgc, phi[i]);
        vapo_loss_row_terms(scale, lambda, gg, v ? -gv : wgc * phi[i], wgc, phi[i], terms + (size_t)VAPO_ROW_TERMS * i);
    }
}

void cuda_loss_seeds(vapo_backend *be, int batch, int d, double scale, double lambda, const vapo_path_coef *coef,
                     const double *zx, const float *phi, const float *grad, const float *v, float *u, float *phi_bar,
                     double *terms)
{
    cuda_backend *cb = cuda_enter(be);
    if (batch <= 0)
        return;
    seeds_kernel<<<batch, VAPO_CUDA_BLOCK, 0, cb->stream>>>(d, scale, lambda, coef, zx, phi, grad, v, u, phi_bar,
                                                            terms);
    cuda_check(cb, cudaGetLastError(), "loss_seeds");
}
