/* The resolution changes of the networks: 2x2 average pooling of `planes`
 * planes of h x w (floor for odd sizes: the last row / column of an odd plane
 * is dropped, and gets a zero gradient), and nearest 2x upsampling. */
#include "cuda_common.cuh"

/* blockIdx.y walks planes, the x dimension the outputs of a plane */
static __global__ void avgpool2_forward_kernel(size_t planes, int h, int w, float *y, const float *x)
{
    const int ho = h / 2, wo = w / 2, per_plane = ho * wo;
    for (size_t p = blockIdx.y; p < planes; p += gridDim.y)
        for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < per_plane; o += gridDim.x * blockDim.x) {
            const int i = o / wo, j = o - i * wo;
            const float *r0 = x + p * h * w + (size_t)(2 * i) * w + 2 * j, *r1 = r0 + w;
            y[p * per_plane + o] = 0.25f * (r0[0] + r0[1] + r1[0] + r1[1]);
        }
}

static __global__ void avgpool2_backward_kernel(size_t planes, int h, int w, float *dx, const float *dy)
{
    const int ho = h / 2, wo = w / 2, per_plane = h * w;
    for (size_t p = blockIdx.y; p < planes; p += gridDim.y)
        for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < per_plane; o += gridDim.x * blockDim.x) {
            const int i = o / w, j = o - i * w, oi = i / 2, oj = j / 2;
            dx[p * per_plane + o] = (oi < ho && oj < wo) ? 0.25f * dy[p * ho * wo + (size_t)oi * wo + oj] : 0.0f;
        }
}

void cuda_avgpool2_forward(vapo_backend *be, size_t planes, int h, int w, float *y, const float *x)
{
    cuda_backend *cb = cuda_enter(be);
    const size_t per_plane = (size_t)(h / 2) * (w / 2);
    if (!planes || !per_plane)
        return;
    unsigned block;
    const dim3 grid = cuda_grid_rows(cb, planes, per_plane, &block);
    avgpool2_forward_kernel<<<grid, block, 0, cb->stream>>>(planes, h, w, y, x);
    cuda_check_launch(cb, "avgpool2_forward");
}

void cuda_avgpool2_backward(vapo_backend *be, size_t planes, int h, int w, float *dx, const float *dy)
{
    cuda_backend *cb = cuda_enter(be);
    const size_t per_plane = (size_t)h * w;
    if (!planes || !per_plane || h < 0 || w < 0)
        return;
    unsigned block;
    const dim3 grid = cuda_grid_rows(cb, planes, per_plane, &block);
    avgpool2_backward_kernel<<<grid, block, 0, cb->stream>>>(planes, h, w, dx, dy);
    cuda_check_launch(cb, "avgpool2_backward");
}

/* Nearest 2x upsampling (h x w -> 2h x 2w) and its adjoint, the 2x2 block
 * sums, added in the CPU backend's order. */
static __global__ void upsample2_forward_kernel(size_t planes, int h, int w, float *y, const float *x)
{
    const int wo = 2 * w, per_plane = 4 * h * w;
    for (size_t p = blockIdx.y; p < planes; p += gridDim.y)
        for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < per_plane; o += gridDim.x * blockDim.x) {
            const int i = o / wo, j = o - i * wo;
            y[p * per_plane + o] = x[p * h * w + (size_t)(i / 2) * w + j / 2];
        }
}

static __global__ void upsample2_backward_kernel(size_t planes, int h, int w, float *dx, const float *dy)
{
    const int wo = 2 * w, per_plane = h * w;
    for (size_t p = blockIdx.y; p < planes; p += gridDim.y)
        for (int o = blockIdx.x * blockDim.x + threadIdx.x; o < per_plane; o += gridDim.x * blockDim.x) {
            const int i = o / w, j = o - i * w;
            const float *r0 = dy + p * 4 * per_plane + (size_t)(2 * i) * wo + 2 * j, *r1 = r0 + wo;
            dx[p * per_plane + o] = r0[0] + r0[1] + r1[0] + r1[1];
        }
}

void cuda_upsample2_forward(vapo_backend *be, size_t planes, int h, int w, float *y, const float *x)
{
    cuda_backend *cb = cuda_enter(be);
    const size_t per_plane = (size_t)4 * h * w;
    if (!planes || !per_plane || h < 0 || w < 0)
        return;
    unsigned block;
    const dim3 grid = cuda_grid_rows(cb, planes, per_plane, &block);
    upsample2_forward_kernel<<<grid, block, 0, cb->stream>>>(planes, h, w, y, x);
    cuda_check_launch(cb, "upsample2_forward");
}

void cuda_upsample2_backward(vapo_backend *be, size_t planes, int h, int w, float *dx, const float *dy)
{
    cuda_backend *cb = cuda_enter(be);
    const size_t per_plane = (size_t)h * w;
    if (!planes || !per_plane || h < 0 || w < 0)
        return;
    unsigned block;
    const dim3 grid = cuda_grid_rows(cb, planes, per_plane, &block);
    upsample2_backward_kernel<<<grid, block, 0, cb->stream>>>(planes, h, w, dx, dy);
    cuda_check_launch(cb, "upsample2_backward");
}
