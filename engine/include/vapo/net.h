/* The energy network Phi_theta: a Wide-ResNet (VAPO-MATH.md section 7) with
 * weight-normalised 3x3 convolutions, GELU, ReZero-scaled residual blocks,
 * 2x2 average pooling between levels, and a ReLU -> spatial sum -> linear head
 * on the last level (or, with arch.multiscale_head, on every level, summed).
 *
 * Passes (x and u are NCHW batches in backend memory, outputs too):
 *   vapo_net_forward        Phi(x) per sample; keeps what later passes need
 *   vapo_net_backward       grad_x Phi for the last forward batch
 *   vapo_net_tangent        Phidot = grad_x Phi . u (forward mode along u)
 *   vapo_net_dual_backward  d/dtheta of sum_b [phi_bar_b Phi_b + phidot_bar_b Phidot_b]
 * With u = dL/d(grad_x Phi), phi_bar = dL/dPhi and phidot_bar = 1 the dual
 * backward gives the exact parameter gradient of any loss L(Phi, grad_x Phi).
 *
 * An optional fixed quadratic, Phi = net(x) - kappa/2 |x|^2 (arch.quadratic),
 * gives the field a built-in contraction -kappa x: with kappa = sigma'/sigma of
 * the path, the network only has to learn the pull towards the data (a
 * denoiser), not to reproduce the noise it removes (docs/DESIGN.md). It has no
 * parameters, so the dual backward is unchanged. With arch.anchor it is
 * centred on a learned image mu (parameter "anchor"): -kappa/2 |x - mu|^2
 * gives the field the position-dependent pull -kappa (x - mu) that a
 * translation-equivariant network with a spatial sum cannot express.
 *
 * With arch.unet the network is instead Phi(x) = kappa/2 (d U c - |x - f(x)|^2), f a
 * U-Net: the encoder's levels, a decoder that upsamples (nearest 2x) and
 * concatenates each encoder level's output before its blocks, and
 * f = s * conv(act(decoder output)) with the gain s ("out.scale") starting at
 * 0, so a fresh U-Net is the quadratic alone (docs/DESIGN.md).
 *
 * The multi-scale head gives small networks energy terms at every resolution:
 * with the last level's head alone, a 3-level network's grad_x Phi reaches the
 * pixels only through two average pools, and its samples start as blobs on
 * the last level's grid (docs/DESIGN.md). */
#ifndef VAPO_NET_H
#define VAPO_NET_H

/* U: the U-Net constant's parameter c is |x - f|^2 / d in units of U, so that
 * Adam's steps (about lr = 1e-3) move Phi's level faster than f changes the
 * residual while it learns (0.5 per pixel in its first 300 steps; with U = 1
 * the level lagged and lambda Phi^2 grew from 0.006 to 0.1 of the loss). */
#define VAPO_UNET_OFFSET_UNIT 10.0f

#include <stddef.h>
#include <stdint.h>

#include "vapo/arch.h"
#include "vapo/backend.h"

/* One named parameter tensor inside the network's single parameter buffer. */
typedef struct {
    char name[64];
    int ndim;
    int shape[4];
    size_t offset, count; /* in floats */
} vapo_param;

typedef struct vapo_net vapo_net;

vapo_net *vapo_net_create(vapo_backend *be, const vapo_arch *arch);
void vapo_net_free(vapo_net *net);

const vapo_arch *vapo_net_arch(const vapo_net *net);
vapo_backend *vapo_net_backend(const vapo_net *net);
size_t vapo_net_param_count(const vapo_net *net);
int vapo_net_params_list(const vapo_net *net, const vapo_param **list); /* returns the count */
const vapo_param *vapo_net_param_find(const vapo_net *net, const char *name);
/* The parameters, backend memory, vapo_net_param_count floats, for reading
 * and writing. The net keeps its weight-normalised weights (and the backend
 * what it derives from them) while the parameters keep their version; each
 * call here starts a new one. A caller that keeps the pointer and writes
 * through it after a pass calls vapo_net_params_changed before the next. */
float *vapo_net_params(vapo_net *net);
void vapo_net_params_changed(vapo_net *net);
size_t vapo_net_input_size(const vapo_net *net); /* floats per image: in_c*in_h*in_w */

/* Initialisation: v ~ N(0, 1/fan_in), gains 1, biases 0, ReZero scales 0. */
int vapo_net_init(vapo_net *net, uint64_t seed);

/* Sets every ReZero block scale (".scale" parameters) to value: a fresh
 * network's blocks start at 0, so tests and benchmarks that want the blocks
 * to do work set them. -1 if the network has none. */
int vapo_net_set_scales(vapo_net *net, float value);

int vapo_net_forward(vapo_net *net, int batch, const float *x, float *phi);
int vapo_net_backward(vapo_net *net, float *grad_x);
/* vapo_net_backward, keeping its adjoints (memory about one activation set)
 * for the next vapo_net_dual_backward of this forward batch with phidot_bar
 * NULL (= 1), whose tangent adjoints they are: that pass then skips their
 * data adjoints (the training step's: the same numbers, bit for bit). */
int vapo_net_backward_keep(vapo_net *net, float *grad_x);
int vapo_net_tangent(vapo_net *net, const float *u, float *phi_dot);
int vapo_net_dual_backward(vapo_net *net, const float *phi_bar, const float *phidot_bar, float *param_grad);

/* The network's own summary of an image (the mahalanobis OOD score's
 * features): per level the spatial sum of max(0, y), y the level's last block
 * output (the encoder's for a U-Net), then the global head's hidden
 * activations. vapo_net_features writes them for the last forward batch to
 * host memory, batch x vapo_net_feature_count floats, sample-major. */
int vapo_net_feature_count(const vapo_net *net);
int vapo_net_features(vapo_net *net, float *out);

#endif
