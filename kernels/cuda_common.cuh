/* Shared by the CUDA backend's translation units (one .cu per op family):
 * the backend struct, error reporting, launch shapes, growing scratch
 * buffers and a deterministic block-wide sum.
 *
 * Conventions. Every op runs on the backend's one stream, in issue order,
 * so scratch buffers need no locking beyond stream order. Ops return void
 * (backend.h), so a failure is recorded with vapo_fail() and printed once on
 * stderr; the next sync() reports asynchronous errors the same way. */
#ifndef VAPO_CUDA_COMMON_CUH
#define VAPO_CUDA_COMMON_CUH

/* System headers first: none of them may land inside the extern "C" below. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

/* The per-element formulas are inline __host__ __device__ functions under
 * nvcc; the engine's other headers declare C functions. */
#include "vapo/elementwise.h"
extern "C" {
#include "vapo/backend.h"
#include "vapo/error.h"
}

#define VAPO_CUDA_BLOCK 256 /* threads per block for element-wise kernels */

struct conv_plan; /* conv.cu: descriptors and chosen algorithms of one shape */
struct optim_plan; /* optim.cu: the chunk table of one parameter layout */

/* Which activation layout cuDNN sees for 3x3 convolutions. */
enum { CONV_LAYOUT_AUTO = 0, CONV_LAYOUT_CNHW = 1, CONV_LAYOUT_NCHW = 2 };

typedef struct {
    vapo_backend base; /* first: a vapo_backend * is a cuda_backend * */
    int device;
    int sm_count;
    int verbose;     /* VAPO_CUDA_VERBOSE: say which cuDNN algorithm each shape got */
    int conv_layout; /* VAPO_CUDA_CONV_LAYOUT: auto (default), cnhw or nchw */
    int reported;    /* an error has been printed on stderr already */
    cudaStream_t stream;
    cublasHandle_t blas;
    cudnnHandle_t dnn;

    /* growing scratch, each used only in stream order by one op at a time */
    void *workspace; /* cuDNN workspace */
    size_t workspace_bytes;
    void *layout_scratch; /* NCHW copies for the convolutions that run on NCHW (conv_select.h) */
    size_t layout_scratch_bytes;
    void *partials; /* per-slice partial sums of row reductions (double) */
    size_t partials_bytes;

    double *dot_device; /* result of dot, copied to dot_host (pinned) */
    double *dot_host;

    struct conv_plan **plans; /* one per convolution shape seen */
    int nplans, cap_plans;
    struct optim_plan *optim; /* of the last offsets table optim_update saw */
} cuda_backend;

/* Records `what` failed with `why`; the first failure is also printed on
 * stderr, as ops have no return value to carry it. Returns -1. */
int cuda_report(cuda_backend *cb, const char *what, const char *why);

/* 0 when the call succeeded, else cuda_report(...) */
int cuda_check(cuda_backend *cb, cudaError_t e, const char *what);
int cublas_check(cuda_backend *cb, cublasStatus_t s, const char *what);
int cudnn_check(cuda_backend *cb, cudnnStatus_t s, const char *what);
/* after a kernel launch: catches bad launch configurations at once */
static inline int cuda_check_launch(cuda_backend *cb, const char *what)
{
    return cuda_check(cb, cudaGetLastError(), what);
}

/* Every op starts here: binds the calling thread to the backend's device
 * (threads start on device 0) and returns the backend. */
cuda_backend *cuda_enter(vapo_backend *be);

/* Returns a device buffer of at least `bytes`, growing *buf (after the
 * stream has drained, so no queued kernel still reads the old one), or
 * NULL after cuda_report. */
void *cuda_scratch(cuda_backend *cb, void **buf, size_t *cap, size_t bytes, const char *what);

/* Blocks for a grid-stride loop over n elements: enough to fill the GPU,
 * never more than the elements need; n > 0. */
static inline unsigned cuda_grid_1d(const cuda_backend *cb, size_t n, unsigned block)
{
    const size_t need = (n + block - 1) / block, cap = (size_t)cb->sm_count * 32;
    return (unsigned)(need < cap ? need : cap);
}

/* A grid for `rows` rows of `len` elements: blockIdx.y walks rows (stride
 * gridDim.y), blockIdx.x * blockDim.x + threadIdx.x walks a row (stride
 * gridDim.x * blockDim.x). Threads per block: `len` rounded up to a warp,
 * at most VAPO_CUDA_BLOCK, returned in *block. rows, len > 0. */
static inline dim3 cuda_grid_rows(const cuda_backend *cb, size_t rows, size_t len, unsigned *block)
{
    const size_t b = len >= VAPO_CUDA_BLOCK ? VAPO_CUDA_BLOCK : (len + 31) / 32 * 32;
    const size_t gy = rows < 65535 ? rows : 65535;
    const size_t want = (size_t)cb->sm_count * 32, per_row = want / gy > 0 ? want / gy : 1;
    const size_t need = (len + b - 1) / b;
    *block = (unsigned)b;
    return dim3((unsigned)(need < per_row ? need : per_row), (unsigned)gy, 1);
}

/* Sum of v over the block, returned to every thread, in a fixed order (so
 * results are bit-reproducible). blockDim.x must be a multiple of 32 (at
 * most 1024) and every thread of the block must call it. */
__device__ __forceinline__ double cuda_block_sum(double v)
{
    __shared__ double warp_sums[32];
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_down_sync(0xffffffffu, v, o);
    __syncthreads(); /* an earlier call's readers are done with warp_sums */
    if ((threadIdx.x & 31) == 0)
        warp_sums[threadIdx.x >> 5] = v;
    __syncthreads();
    double t = 0.0;
    for (unsigned i = 0; i < (blockDim.x >> 5); i++)
        t += warp_sums[i];
    return t;
}

/* ---- ops, one family per file; each matches the CPU backend's semantics -- */

/* conv.cu */
void cuda_conv_forward(vapo_backend *be, const vapo_conv_shape *s, float *y, const float *x, const float *w,
                       const float *bias);
void cuda_conv_backward_data(vapo_backend *be, const vapo_conv_shape *s, float *dx, const float *dy, const float *w);
void cuda_conv_backward_filter(vapo_backend *be, const vapo_conv_shape *s, float *dw, float *db, const float *dy,
                               const float *x);
void cuda_conv_release(cuda_backend *cb); /* frees the per-shape plans */

/* activation.cu: activations, axpy, add, per-channel scale */
void cuda_act_forward(vapo_backend *be, vapo_act a, size_t n, float *y, const float *x);
void cuda_act_tangent(vapo_backend *be, vapo_act a, size_t n, float *ydot, const float *x, const float *xdot);
void cuda_act_backward(vapo_backend *be, vapo_act a, size_t n, float *dx, const float *x, const float *dy);
void cuda_act_dual_backward(vapo_backend *be, vapo_act a, size_t n, float *dx, float *dxdot, const float *x,
                            const float *xdot, const float *dy, const float *dydot);
void cuda_axpy(vapo_backend *be, size_t n, float a, const float *x, float *y);
void cuda_add(vapo_backend *be, size_t n, float *y, const float *a, const float *b);
void cuda_scale_forward(vapo_backend *be, int c, size_t n, float *y, const float *x, const float *s);

/* pool.cu */
void cuda_avgpool2_forward(vapo_backend *be, size_t planes, int h, int w, float *y, const float *x);
void cuda_avgpool2_backward(vapo_backend *be, size_t planes, int h, int w, float *dx, const float *dy);
void cuda_upsample2_forward(vapo_backend *be, size_t planes, int h, int w, float *y, const float *x);
void cuda_upsample2_backward(vapo_backend *be, size_t planes, int h, int w, float *dx, const float *dy);

/* reduce.cu */
void cuda_rowsum_forward(vapo_backend *be, size_t rows, size_t len, float *y, const float *x);
void cuda_rowsum_backward(vapo_backend *be, size_t rows, size_t len, float *dx, const float *dy);
void cuda_scale_backward_param(vapo_backend *be, int c, size_t n, float *ds, const float *dy, const float *x);
double cuda_dot(vapo_backend *be, size_t n, const float *x, const float *y);
/* out[r] += sum_j m[r, j] in double (the bias gradient of a convolution) */
void cuda_rowsum_add(cuda_backend *cb, size_t rows, size_t len, float *out, const float *m);

/* weightnorm.cu */
void cuda_weightnorm_forward(vapo_backend *be, int rows, int len, float *w, const float *v, const float *g);
void cuda_weightnorm_backward(vapo_backend *be, int rows, int len, float *dv, float *dg, const float *dw,
                              const float *v, const float *g);

/* loss.cu: noise and the VAPO loss */
void cuda_rng_normal(vapo_backend *be, uint64_t seed, uint64_t stream, uint64_t first, size_t n, float *out);
void cuda_loss_perturb(vapo_backend *be, int batch, int d, const vapo_path_coef *coef, const float *xbar,
                       const float *z, float *x, float *v, double *zx);
void cuda_loss_seeds(vapo_backend *be, int batch, int d, double scale, double lambda, const vapo_path_coef *coef,
                     const double *zx, const float *phi, const float *grad, const float *v, float *u, float *phi_bar,
                     double *terms);

/* ode.cu: Runge-Kutta sampling */
void cuda_rk_combine(vapo_backend *be, int rows, int d, const double *h, int nk, const double *c,
                     const float *const *k, const float *y, float *out);
void cuda_rk_norm(vapo_backend *be, int rows, int d, const double *h, int nk, const double *c,
                  const float *const *k, const float *y, const float *y_new, double atol, double rtol, double *norm);
void cuda_rows_copy(vapo_backend *be, int rows, int d, float *dst, const int *dst_rows, const float *src,
                    const int *src_rows);

/* layout.cu */
void cuda_nchw_to_cnhw(vapo_backend *be, int batch, int c, int hw, float *dst, const float *src);
void cuda_cnhw_to_nchw(vapo_backend *be, int batch, int c, int hw, float *dst, const float *src);
/* dst[i1, i2, :] (=|+=) src[i2, i1, :] for a d2 x d1 x hw source: the two
 * transposes above, and the accumulating one the conv fallback needs. */
void cuda_swap_leading(cuda_backend *cb, int d1, int d2, int hw, float *dst, const float *src, int accumulate);

/* optim.cu */
void cuda_optim_update(vapo_backend *be, const vapo_optim_hyper *h, int ntensors, const size_t *offsets, size_t n,
                       float *params, float *grad, float *m, float *v, float *ema, float *scratch, double *gnorm);
void cuda_optim_release(cuda_backend *cb); /* frees the chunk table */

#endif
