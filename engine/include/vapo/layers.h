/* The layers of the energy network, each with its four passes:
 *   forward   y = f(x)
 *   tangent   ydot = (df/dx) xdot                       (forward mode along xdot)
 *   backward  dx = (df/dx)^T dy                         (gives grad_x Phi)
 *   dual      the reverse pass of (forward, tangent) together: given the
 *             adjoints dy of y and dydot of ydot, it returns the adjoints
 *             dx, dxdot of x, xdot and accumulates parameter gradients from
 *             both. With xdot = u = dL/d(grad_x Phi) this yields the exact
 *             second-order parameter gradient of the VAPO loss.
 * All tensors are CNHW (see backend.h). Data adjoints are assigned, parameter
 * gradients accumulated; a NULL data adjoint output is skipped. */
#ifndef VAPO_LAYERS_H
#define VAPO_LAYERS_H

#include "vapo/backend.h"

/* Convolution (3x3 or 1x1, "same") with normalised weight w and bias b. */
void vapo_conv_fwd(vapo_backend *be, const vapo_conv_shape *s, float *y, const float *x, const float *w,
                   const float *b);
void vapo_conv_tangent(vapo_backend *be, const vapo_conv_shape *s, float *ydot, const float *xdot,
                       const float *w);
void vapo_conv_bwd(vapo_backend *be, const vapo_conv_shape *s, float *dx, const float *dy, const float *w);
void vapo_conv_dual(vapo_backend *be, const vapo_conv_shape *s, float *dx, float *dxdot, float *dw, float *db,
                    const float *x, const float *xdot, const float *dy, const float *dydot, const float *w);

/* Per-channel scale y[c,:] = s[c] x[c,:] (the ResBlock's ReZero output gain). */
void vapo_scale_fwd(vapo_backend *be, int c, size_t n, float *y, const float *x, const float *s);
void vapo_scale_dual(vapo_backend *be, int c, size_t n, float *dx, float *dxdot, float *ds, const float *x,
                     const float *xdot, const float *dy, const float *dydot, const float *s);

/* 2x2 average pooling of c*batch planes of h x w, and its adjoint. Linear, so
 * the tangent is the forward pass and the dual is two backward passes. */
void vapo_pool_fwd(vapo_backend *be, size_t planes, int h, int w, float *y, const float *x);
void vapo_pool_bwd(vapo_backend *be, size_t planes, int h, int w, float *dx, const float *dy);

/* Nearest 2x upsampling of c*batch planes of h x w to 2h x 2w, and its
 * adjoint (2x2 block sums). Linear and exact (a copy), hence batch invariant;
 * the U-Net's decoder uses it. */
void vapo_upsample_fwd(vapo_backend *be, size_t planes, int h, int w, float *y, const float *x);
void vapo_upsample_bwd(vapo_backend *be, size_t planes, int h, int w, float *dx, const float *dy);

/* Spatial sum pooling: C x (batch*hw) -> C x batch. Linear, like pooling. */
void vapo_sum_fwd(vapo_backend *be, size_t planes, size_t hw, float *y, const float *x);
void vapo_sum_bwd(vapo_backend *be, size_t planes, size_t hw, float *dx, const float *dy);

/* Activations: the backend's act_* ops are the four passes (backend.h). */

#endif
