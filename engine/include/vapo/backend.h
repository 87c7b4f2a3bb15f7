/* The backend interface: every tensor operation the engine performs goes
 * through this table, so the same network, loss and solver code runs on the
 * CPU (backend_cpu.c) and on CUDA (kernels/). Pointers passed to these
 * functions are backend memory (device memory for CUDA).
 *
 * Layout. Activations are stored channel-major with the batch inside:
 * "CNHW", a C x N matrix with N = batch * H * W. A convolution is then one
 * GEMM, W[Cout x Cin*k*k] * im2col(X)[Cin*k*k x N], with no transposes, and a
 * tangent or adjoint is just another matrix of the same shape. The network
 * converts to and from the user-facing NCHW layout at its boundary.
 *
 * Batch invariance (the contract every backend keeps). In the passes that
 * sampling and scoring use -- conv_forward (forward and tangent),
 * conv_backward_data, the activations, pooling, upsampling, rowsum, scale_forward, axpy,
 * add, the transposes, the rk_* ops, and scale_backward_param per row (the
 * network's |x|^2 sums one (channel, image) row each) -- the result for one
 * image (one column block of CNHW, one row of NCHW) is bit-identical
 * whatever the batch size, the image's position in the batch, the other
 * images and the thread count. So a seed names the same pixels alone, in a batch of 64, or mixed
 * with other requests. It takes:
 *  - a per-image reduction order that never depends on the batch: no GEMM
 *    whose shape, blocking or kernel choice follows the batch (a library GEMM
 *    picks paths and K-blocking from m, n, k), no split of a reduction across
 *    images, the same code path for an image at the edge of a batch;
 *  - threads partitioned over images (or over outputs within an image in a
 *    way that does not change any output's summation order);
 *  - no algorithm choice that depends on the batch (on CUDA: one convolution
 *    algorithm per shape-without-batch).
 * Exempt: conv_backward_filter, scale_backward_param when a row spans the
 * batch, dot, and the loss and optimizer ops -- training's parameter
 * gradients reduce over the batch by definition.
 * tests/test_batch_invariance.c checks the CPU backend on the bundled model
 * with memcmp (energies for batch sizes 1..64 at moving positions, gradients
 * for a spread of sizes, samples alone vs together). */
#ifndef VAPO_BACKEND_H
#define VAPO_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "vapo/elementwise.h"
#include "vapo/loss_formulas.h"

/* A convolution with stride 1 and "same" zero padding (k = 1 or 3). */
typedef struct {
    int cin, cout, k;
    int batch, h, w; /* N = batch * h * w columns */
    /* Nonzero: the version of the weights' values (vapo_net's parameter
     * version, unique in the process): calls with the same weight pointer and
     * wver see the same weights, so a backend may keep what it derives from
     * them (the CPU's flipped adjoint kernel). 0: no such promise. */
    uint64_t wver;
} vapo_conv_shape;

/* Hyper-parameters of one optimizer update (optim_update). */
typedef struct {
    int lamb;           /* 1: Lamb, 0: Adam */
    float lr, beta1, beta2, eps;
    float bc1, bc2;     /* Adam's bias corrections 1 - beta^(t+1); 1 for Lamb */
    float clip;         /* global gradient-norm clip; 0 = off */
    float ema_decay;
} vapo_optim_hyper;

enum { VAPO_RK_MAX_TERMS = 7 }; /* stages in one rk_combine/rk_norm: Dormand-Prince's 6 + FSAL */

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
    /* dx = W^T * dy, where the backend writes it without reading dx (no
     * zeroing pass); NULL: callers zero dx and use conv_backward_data */
    void (*conv_backward_data_set)(vapo_backend *be, const vapo_conv_shape *s, float *dx, const float *dy,
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
    /* nearest-neighbour 2x upsampling of `planes` planes of h x w to 2h x 2w
     * (each value copied to its 2x2 block), and its adjoint: the 2x2 block sums. */
    void (*upsample2_forward)(vapo_backend *be, size_t planes, int h, int w, float *y, const float *x);
    void (*upsample2_backward)(vapo_backend *be, size_t planes, int h, int w, float *dx, const float *dy);

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

    /* ---- training and sampling ops: whole steps stay in backend memory ---------- */

    /* standard normals for elements first .. first+n-1 of (seed, stream): vapo_rng_normal's numbers */
    void (*rng_normal)(vapo_backend *be, uint64_t seed, uint64_t stream, uint64_t first, size_t n, float *out);

    /* The VAPO loss (loss.c), B rows of d (row-major, NCHW), coef: B rows.
     * perturb: x = m xbar + sigma z; v = vm xbar + vs z (skipped when v is NULL);
     *          zx[2i] = |z_i|^2, zx[2i+1] = xbar_i . z_i (double).
     * seeds:   with g = grad row i, phi = phi[i], wgc = vapo_path_wgc(coef_i, zx_i, d) (0 when v != NULL):
     *          v != NULL (pathwise): u = scale (g - v), phi_bar = scale 2 lambda phi, cov = -g.v
     *          v == NULL (score):    u = scale g,       phi_bar = scale (wgc + 2 lambda phi), cov = wgc phi
     *          terms[VAPO_ROW_TERMS i + ...] = scale 0.5|g|^2, scale cov, scale lambda phi^2, |g|,
     *          scale wgc, phi (double; vapo_loss_terms_sum adds them up). */
    void (*loss_perturb)(vapo_backend *be, int batch, int d, const vapo_path_coef *coef, const float *xbar,
                         const float *z, float *x, float *v, double *zx);
    void (*loss_seeds)(vapo_backend *be, int batch, int d, double scale, double lambda, const vapo_path_coef *coef,
                       const double *zx, const float *phi, const float *grad, const float *v, float *u,
                       float *phi_bar, double *terms);

    /* One optimizer update of the flat parameter buffer (n floats, tensors at
     * host offsets[0..ntensors], offsets[ntensors] = n): gnorm (backend, one
     * double) = |grad| before clipping; grad is clipped in place by
     * min(1, clip / |grad|) (clip > 0); then Lamb (per-tensor trust ratio
     * |w| / |adam direction|, |w| clamped to [0, 10], no bias correction) or
     * Adam (bias corrections bc1, bc2); then ema = vapo_ema(ema, params, ema_decay).
     * scratch: n floats. Per-element arithmetic: vapo_adam_direction, vapo_ema. */
    void (*optim_update)(vapo_backend *be, const vapo_optim_hyper *h, int ntensors, const size_t *offsets,
                         size_t n, float *params, float *grad, float *m, float *v, float *ema, float *scratch,
                         double *gnorm);

    /* Runge-Kutta sampling on backend memory (ode_batch.c): `rows` trajectories
     * of d floats, row-major. c and k are host arrays of nk <= VAPO_RK_MAX_TERMS
     * weights and backend pointers; h (backend, per row) may be NULL for 1.
     *   combine: out[r,:] = y[r,:] + h[r] * sum_j c[j] k[j][r,:]   (vapo_rk_sum, in double)
     *   norm:    norm[r] = RMS_i of h[r] sum_j c[j] k[j][r,i] scaled by vapo_rk_scaled with
     *            y and y_new (NULL: y), SciPy's error norm (backend doubles)
     *   copy:    dst[dst_rows[r],:] = src[src_rows[r],:] for r < rows (NULL index: r);
     *            a gather or a scatter of whole rows; src and dst must not overlap, and
     *            dst_rows must be distinct (rows are copied in parallel on a device). */
    void (*rk_combine)(vapo_backend *be, int rows, int d, const double *h, int nk, const double *c,
                       const float *const *k, const float *y, float *out);
    void (*rk_norm)(vapo_backend *be, int rows, int d, const double *h, int nk, const double *c,
                    const float *const *k, const float *y, const float *y_new, double atol, double rtol,
                    double *norm);
    void (*rows_copy)(vapo_backend *be, int rows, int d, float *dst, const int *dst_rows, const float *src,
                      const int *src_rows);

    void (*destroy)(vapo_backend *be);
};

/* The CPU backend (direct convolution kernels, BLIS for the rest, OpenMP loops); threads <= 0 means all cores. */
vapo_backend *vapo_backend_cpu(int threads);

/* The CUDA backend on device `device`, or NULL (with vapo_last_error set)
 * when the build has no CUDA or no usable GPU is present. */
vapo_backend *vapo_backend_cuda(int device);

/* A --device value: "cpu" (*device = VAPO_DEVICE_CPU), "auto" or NULL
 * (VAPO_DEVICE_AUTO), "cuda" (0) or "cuda:N" (N); -1 with a message naming
 * the value otherwise. Every program's --device goes through it. */
enum { VAPO_DEVICE_CPU = -1, VAPO_DEVICE_AUTO = -2 };
int vapo_device_parse(const char *name, int *device);

/* Opens the backend a device name (as vapo_device_parse) asks for: auto is
 * CUDA when usable, else the CPU, saying so on stderr. NULL with a message
 * naming the device when it cannot be opened. */
vapo_backend *vapo_backend_open(const char *name, int threads);

#endif
