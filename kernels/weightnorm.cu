/* Weight normalisation, w = g * v / |v| per row, and its adjoint, with the
 * CPU's arithmetic: norms and projections in double, the forward scale
 * rounded to float before the product. One block per row (rows are filter
 * rows: cin*k*k elements, at most a few thousand). */
#include "cuda_common.cuh"

static __global__ void weightnorm_forward_kernel(int rows, int len, float *w, const float *v, const float *g)
{
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *vr = v + (size_t)r * len;
        double ss = 0.0;
        for (int j = threadIdx.x; j < len; j += blockDim.x)
            ss += (double)vr[j] * vr[j];
        ss = cuda_block_sum(ss);
        const float k = g[r] / (float)sqrt(ss);
        for (int j = threadIdx.x; j < len; j += blockDim.x)
            w[(size_t)r * len + j] = k * vr[j];
    }
}

static __global__ void weightnorm_backward_kernel(int rows, int len, float *dv, float *dg, const float *dw,
                                                  const float *v, const float *g)
{
    for (int r = blockIdx.x; r < rows; r += gridDim.x) {
        const float *vr = v + (size_t)r * len, *dwr = dw + (size_t)r * len;
        double ss = 0.0, proj = 0.0;
        for (int j = threadIdx.x; j < len; j += blockDim.x) {
            ss += (double)vr[j] * vr[j];
            proj += (double)dwr[j] * vr[j];
        }
        ss = cuda_block_sum(ss);
        proj = cuda_block_sum(proj);
        const double norm = sqrt(ss);
        proj /= norm; /* dw . v/|v| */
        if (threadIdx.x == 0)
            dg[r] += (float)proj;
        const double k = g[r] / norm;
        for (int j = threadIdx.x; j < len; j += blockDim.x)
            dv[(size_t)r * len + j] += (float)(k * (dwr[j] - proj * vr[j] / norm));
    }
}

static unsigned row_block(int len)
{
    return len >= VAPO_CUDA_BLOCK ? VAPO_CUDA_BLOCK : (unsigned)((len + 31) / 32 * 32);
}

static unsigned row_grid(int rows) { return (unsigned)(rows < 65535 ? rows : 65535); }

void cuda_weightnorm_forward(vapo_backend *be, int rows, int len, float *w, const float *v, const float *g)
{
    cuda_backend *cb = cuda_enter(be);
    if (rows <= 0 || len <= 0)
        return;
    weightnorm_forward_kernel<<<row_grid(rows), row_block(len), 0, cb->stream>>>(rows, len, w, v, g);
    cuda_check_launch(cb, "weightnorm_forward");
}

void cuda_weightnorm_backward(vapo_backend *be, int rows, int len, float *dv, float *dg, const float *dw,
                              const float *v, const float *g)
{
    cuda_backend *cb = cuda_enter(be);
    if (rows <= 0 || len <= 0)
        return;
    weightnorm_backward_kernel<<<row_grid(rows), row_block(len), 0, cb->stream>>>(rows, len, dv, dg, dw, v, g);
    cuda_check_launch(cb, "weightnorm_backward");
}
