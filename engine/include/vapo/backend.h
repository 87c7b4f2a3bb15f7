/* The backend interface: every tensor operation the engine performs goes
 * through this table, so the same network, loss and solver code runs on the
 * CPU (backend_cpu.c) and on CUDA (kernels/). Pointers passed to these
 * functions are backend memory (device memory for CUDA).
 *
 * Layout. Activations are stored channel-major with the batch inside:
 * "CNHW", a C x N matrix with N = batch * H * W. A convolution is then one
 * GEMM, W[Cout x Cin*k*k] * im2col(X)[Cin*k*k x N], with no transposes, and a
 * tangent or adjoint is just another matrix of the same shape. The network
 * converts to and from the user-facing NCHW layout at its boundary. */
#ifndef VAPO_BACKEND_H
#define VAPO_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "vapo/elementwise.h"

/* A convolution with stride 1 and "same" zero padding (k = 1 or 3). */
typedef struct {
    int cin, cout, k;
    int batch, h, w; /* N = batch * h * w columns */
} vapo_conv_shape;

typedef struct vapo_backend vapo_backend;
struct vapo_backend {
    const char *name; /* "cpu" or "cuda" */

    /* memory: alloc returns zeroed memory or NULL */
    void *(*alloc)(vapo_backend *be, size_t bytes);
    void (*free)(vapo_backend *be, void *p);
    void (*upload)(vapo_backend *be, void *dst, const void *host_src, size_t bytes);
    void (*download)(vapo_backend *be, void *host_dst, const void *src, size_t bytes);
    void (*copy)(vapo_backend *be, void *dst, const void *src, size_t bytes);
    void (*zero)(vapo_backend *be, void *p, size_t bytes);
    void (*sync)(vapo_backend *be);

    /* convolution (CNHW). y = W*x (+ bias if not NULL). */
    void (*conv_forward)(vapo_backend *be, const vapo_conv_shape *s, float *y, const float *x,
                         const float *w, const float *bias);
    /* dx += W^T * dy */
    void (*conv_backward_data)(vapo_backend *be, const vapo_conv_shape *s, float *dx, const float *dy,
                               const float *w);
    /* dw += dy * im2col(x)^T; db += row sums of dy (db may be NULL) */
    void (*conv_backward_filter)(vapo_backend *be, const vapo_conv_shape *s, float *dw, float *db,
                                 const float *dy, const float *x);

    /* element-wise activation passes over n elements:
     *   forward:  y = f(x)
     *   tangent:  ydot = f'(x) xdot
     *   backward: dx = f'(x) dy                       (assigns)
     *   dual:     dx = f'(x) dy + f''(x) xdot dydot;  dxdot = f'(x) dydot  (assign) */
    void (*act_forward)(vapo_backend *be, vapo_act a, size_t n, float *y, const float *x);
    void (*act_tangent)(vapo_backend *be, vapo_act a, size_t n, float *ydot, const float *x,
                        const float *xdot);
    void (*act_backward)(vapo_backend *be, vapo_act a, size_t n, float *dx, const float *x,
                         const float *dy);
    void (*act_dual_backward)(vapo_backend *be, vapo_act a, size_t n, float *dx, float *dxdot,
                              const float *x, const float *xdot, const float *dy, const float *dydot);

    /* 2x2 average pooling of `planes` planes of h x w (floor for odd sizes). */
    void (*avgpool2_forward)(vapo_backend *be, size_t planes, int h, int w, float *y, const float *x);
    void (*avgpool2_backward)(vapo_backend *be, size_t planes, int h, int w, float *dx, const float *dy);

    /* sum over the `len` contiguous elements of each of `rows` rows, and its
     * adjoint (broadcast). Spatial sum pooling is rows = C*batch, len = h*w. */
    void (*rowsum_forward)(vapo_backend *be, size_t rows, size_t len, float *y, const float *x);
    void (*rowsum_backward)(vapo_backend *be, size_t rows, size_t len, float *dx, const float *dy);

    /* per-channel scale of a C x N matrix: y[c,:] = s[c] * x[c,:]; and
     * ds[c] += sum_j dy[c,j] * x[c,j]. */
    void (*scale_forward)(vapo_backend *be, int c, size_t n, float *y, const float *x, const float *s);
    void (*scale_backward_param)(vapo_backend *be, int c, size_t n, float *ds, const float *dy,
                                 const float *x);

    /* y += a * x;  y = a + b;  returns sum x*y (a few scalars per step are read back) */
    void (*axpy)(vapo_backend *be, size_t n, float a, const float *x, float *y);
    void (*add)(vapo_backend *be, size_t n, float *y, const float *a, const float *b);
    double (*dot)(vapo_backend *be, size_t n, const float *x, const float *y);

    /* weight normalisation of `rows` rows of length `len`: w = g * v / |v|, and
     * its adjoint: dg += dw . v/|v|;  dv += (g/|v|)(dw - (dw . v/|v|) v/|v|). */
    void (*weightnorm_forward)(vapo_backend *be, int rows, int len, float *w, const float *v,
                               const float *g);
    void (*weightnorm_backward)(vapo_backend *be, int rows, int len, float *dv, float *dg,
                                const float *dw, const float *v, const float *g);

    /* NCHW <-> CNHW transposes of a batch x c x hw tensor. */
    void (*nchw_to_cnhw)(vapo_backend *be, int batch, int c, int hw, float *dst, const float *src);
    void (*cnhw_to_nchw)(vapo_backend *be, int batch, int c, int hw, float *dst, const float *src);

    void (*destroy)(vapo_backend *be);
};

/* The CPU backend (OpenBLAS GEMMs, OpenMP loops); threads <= 0 means all cores. */
vapo_backend *vapo_backend_cpu(int threads);

/* The CUDA backend on device `device`, or NULL (with vapo_last_error set)
 * when the build has no CUDA or no usable GPU is present. */
vapo_backend *vapo_backend_cuda(int device);

/* "cpu", "cuda" or "auto" (CUDA when usable, else CPU, saying so on stderr). */
vapo_backend *vapo_backend_open(const char *name, int threads);

#endif
