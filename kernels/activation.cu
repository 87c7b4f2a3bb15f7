/* Element-wise ops: the activation passes (value, tangent, backward, dual
 * backward) through elementwise.h's vapo_act_value / _d1 / _d2, the same
 * functions the CPU loops call, plus axpy, add and the per-channel scale.
 *
 * Each kernel reads an element's inputs before writing its outputs, like
 * the CPU loop, so outputs may alias inputs element for element. The
 * activation is a template argument so each kernel inlines one formula. */
#include "cuda_common.cuh"

#define GRID_STRIDE(i, n)                                                                                              \
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

template <int A> static __global__ void act_forward_kernel(size_t n, float *y, const float *x)
{
    GRID_STRIDE(i, n) y[i] = vapo_act_value((vapo_act)A, x[i]);
}

template <int A> static __global__ void act_tangent_kernel(size_t n, float *ydot, const float *x, const float *xdot)
{
    GRID_STRIDE(i, n) ydot[i] = vapo_act_d1((vapo_act)A, x[i]) * xdot[i];
}

template <int A> static __global__ void act_backward_kernel(size_t n, float *dx, const float *x, const float *dy)
{
    GRID_STRIDE(i, n) dx[i] = vapo_act_d1((vapo_act)A, x[i]) * dy[i];
}

template <int A>
static __global__ void act_dual_backward_kernel(size_t n, float *dx, float *dxdot, const float *x, const float *xdot,
                                                const float *dy, const float *dydot)
{
    GRID_STRIDE(i, n)
    {
        float d1, d2;
        const float xi = x[i];
        vapo_act_d12((vapo_act)A, xi, &d1, &d2);
        const float dyd = dydot[i];
        const float r = d1 * dy[i] + d2 * xdot[i] * dyd;
        dx[i] = r;
        dxdot[i] = d1 * dyd;
    }
}

/* Launches kernel<act> over n elements; any activation other than GELU and
 * SiLU is ReLU, as in vapo_act_value. */
#define LAUNCH_ACT(cb, a, n, kernel, ...)                                                                              \
    do {                                                                                                               \
        if ((n) == 0)                                                                                                  \
            break;                                                                                                     \
        const unsigned grid = cuda_grid_1d((cb), (n), VAPO_CUDA_BLOCK);                                                \
        if ((a) == VAPO_ACT_GELU)                                                                                      \
            kernel<VAPO_ACT_GELU><<<grid, VAPO_CUDA_BLOCK, 0, (cb)->stream>>>((n), __VA_ARGS__);                       \
        else if ((a) == VAPO_ACT_SILU)                                                                                 \
            kernel<VAPO_ACT_SILU><<<grid, VAPO_CUDA_BLOCK, 0, (cb)->stream>>>((n), __VA_ARGS__);                       \
        else                                                                                                           \
            kernel<VAPO_ACT_RELU><<<grid, VAPO_CUDA_BLOCK, 0, (cb)->stream>>>((n), __VA_ARGS__);                       \
        cuda_check_launch((cb), #kernel);                                                                              \
    } while (0)

void cuda_act_forward(vapo_backend *be, vapo_act a, size_t n, float *y, const float *x)
{
    cuda_backend *cb = cuda_enter(be);
    LAUNCH_ACT(cb, a, n, act_forward_kernel, y, x);
}

void cuda_act_tangent(vapo_backend *be, vapo_act a, size_t n, float *ydot, const float *x, const float *xdot)
{
    cuda_backend *cb = cuda_enter(be);
    LAUNCH_ACT(cb, a, n, act_tangent_kernel, ydot, x, xdot);
}

void cuda_act_backward(vapo_backend *be, vapo_act a, size_t n, float *dx, const float *x, const float *dy)
{
    cuda_backend *cb = cuda_enter(be);
    LAUNCH_ACT(cb, a, n, act_backward_kernel, dx, x, dy);
}

void cuda_act_dual_backward(vapo_backend *be, vapo_act a, size_t n, float *dx, float *dxdot, const float *x,
                            const float *xdot, const float *dy, const float *dydot)
{
    cuda_backend *cb = cuda_enter(be);
    LAUNCH_ACT(cb, a, n, act_dual_backward_kernel, dx, dxdot, x, xdot, dy, dydot);
}

/* ---- axpy, add, scale ---------------------------------------------------------- */

static __global__ void axpy_kernel(size_t n, float a, const float *x, float *y) { GRID_STRIDE(i, n) y[i] += a * x[i]; }

static __global__ void add_kernel(size_t n, float *y, const float *a, const float *b)
{
    GRID_STRIDE(i, n) y[i] = a[i] + b[i];
}

/* y[r, :] = s[r] * x[r, :] over a rows x n matrix */
static __global__ void scale_kernel(size_t rows, size_t n, float *y, const float *x, const float *s)
{
    for (size_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const float k = s[r];
        for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < n; j += (size_t)gridDim.x * blockDim.x)
            y[r * n + j] = k * x[r * n + j];
    }
}

void cuda_axpy(vapo_backend *be, size_t n, float a, const float *x, float *y)
{
    cuda_backend *cb = cuda_enter(be);
    if (!n)
        return;
    axpy_kernel<<<cuda_grid_1d(cb, n, VAPO_CUDA_BLOCK), VAPO_CUDA_BLOCK, 0, cb->stream>>>(n, a, x, y);
    cuda_check_launch(cb, "axpy");
}

void cuda_add(vapo_backend *be, size_t n, float *y, const float *a, const float *b)
{
    cuda_backend *cb = cuda_enter(be);
    if (!n)
        return;
    add_kernel<<<cuda_grid_1d(cb, n, VAPO_CUDA_BLOCK), VAPO_CUDA_BLOCK, 0, cb->stream>>>(n, y, a, b);
    cuda_check_launch(cb, "add");
}

void cuda_scale_forward(vapo_backend *be, int c, size_t n, float *y, const float *x, const float *s)
{
    cuda_backend *cb = cuda_enter(be);
    if (c <= 0 || !n)
        return;
    unsigned block;
    const dim3 grid = cuda_grid_rows(cb, (size_t)c, n, &block);
    scale_kernel<<<grid, block, 0, cb->stream>>>((size_t)c, n, y, x, s);
    cuda_check_launch(cb, "scale_forward");
}
