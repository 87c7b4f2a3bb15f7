/* Direct convolutions of the CPU backend (3x3: all passes; 1x1: forward
 * and data adjoint, where batch invariance matters), vectorised with AVX-512,
 * AVX2 or SSE2 (every x86-64 CPU), the widest the CPU has, chosen at run
 * time: the build itself assumes no more than x86-64. VAPO_CPU_CONV=blis
 * makes conv3_open return NULL and the backend use its older im2col + BLIS
 * path, kept for benchmarks: BLIS is not batch invariant (its kernels
 * change with the matrix sizes; test_backend_ops shows it on small shapes).
 *
 * Batch invariance (backend.h): the forward pass (also the tangent, and the
 * data adjoint, which is a forward convolution with the flipped kernel) sums
 * each output element over input channels then taps in one fixed order, in
 * one vector lane, whatever the batch, the image's position or the threads.
 * The weight gradient sums over the batch: its order is fixed for a given
 * batch, and does not depend on the number of threads. */
#ifndef VAPO_CONV_CPU_H
#define VAPO_CONV_CPU_H

#include "vapo/backend.h"

typedef struct conv3 conv3;

/* The direct convolution for this CPU, or NULL (use BLIS). VAPO_CPU_CONV
 * picks one: "auto" (default: the widest the CPU has), "avx512", "avx2"
 * (each lowered to what the CPU supports), "sse2" or "blis"; another value
 * sets the error and returns NULL with *bad = 1. */
conv3 *conv3_open(int *bad);
const char *conv3_name(const conv3 *cv);
void conv3_close(conv3 *cv);

/* How conv3_forward and conv3_backward_data compute: the measured choice per
 * shape (default), or always the direct kernel, or always Winograd
 * F(2x2, 3x3) (tests and benchmarks; VAPO_CPU_WINOGRAD=auto|off|on sets it at
 * conv3_open). */
typedef enum { CONV3_PICK, CONV3_DIRECT, CONV3_WINOGRAD } conv3_algo;
void conv3_set_algo(conv3 *cv, conv3_algo algo);
/* whether a 3x3 convolution of shape s (a forward one) runs Winograd */
int conv3_uses_winograd(const conv3 *cv, const vapo_conv_shape *s);

/* y = W*x + bias (bias may be NULL) when accumulate is 0; y += W*x when 1.
 * s->k must be 3. Returns 0, or -1 with the error set (out of memory). */
int conv3_forward(conv3 *cv, const vapo_conv_shape *s, float *y, const float *x, const float *w,
                  const float *bias, int accumulate);
/* dx += (accumulate) or = the data adjoint of the 3x3 convolution s with
 * weights w, whose flipped, channel-transposed kernel wf[ci][co][8-k] the
 * caller passes (it keeps it per version). */
int conv3_backward_data(conv3 *cv, const vapo_conv_shape *s, float *dx, const float *dy, const float *w,
                        const float *wf, int accumulate);
/* The same for a 1x1 convolution (s->k == 1). */
int conv1_forward(conv3 *cv, const vapo_conv_shape *s, float *y, const float *x, const float *w, const float *bias,
                  int accumulate);
/* dw += dy * im2col(x)^T (s->k == 3; db is left to the caller). */
int conv3_backward_filter(conv3 *cv, const vapo_conv_shape *s, float *dw, const float *dy, const float *x);

#endif
