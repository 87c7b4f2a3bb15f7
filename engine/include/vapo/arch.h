/* The network's architecture: what vapo_net_create builds, named by a preset
 * (VAPO-MATH.md section 7) and changed by vapo-train's options; stored in
 * checkpoint metadata as JSON. Defined in arch.c. */
#ifndef VAPO_ARCH_H
#define VAPO_ARCH_H

#include "vapo/backend.h" /* vapo_act */

#define VAPO_MAX_LEVELS 6

typedef struct {
    char preset[32];
    int in_c, in_h, in_w;              /* image shape, e.g. 1 x 28 x 28 */
    int levels;                        /* resolutions; 2x2 avg-pool between them */
    int widths[VAPO_MAX_LEVELS];       /* channels per level */
    int blocks;                        /* residual blocks per level */
    int kernel;                        /* 3, or 1 for 1x1 "images" such as 2-D points */
    vapo_act act;                      /* GELU by default */
    vapo_act head_act;                 /* before the spatial sum: ReLU as in DRL */
    float quadratic;                   /* kappa >= 0: Phi = net(x) - kappa/2 |x|^2 (0: the paper's) */
    int multiscale_head;               /* 1: every level has a head, their sum is Phi (0: the last only, DRL's) */
    int anchor;                        /* 1: the quadratic is -kappa/2 |x - mu|^2, mu a learned image "anchor" */
    int global_head;                   /* > 0: + dense(1, act(dense(global_head, flat last level))) */
    int unet;                          /* 1: Phi = -kappa/2 |x - f(x)|^2, f a U-Net (net.h); no heads */
} vapo_arch;

/* Fills *arch from a preset name (tiny, tiny2d, fmnist-small, fmnist, cifar10,
 * celeba64, lsun64, and the U-Nets tiny-unet, fmnist-unet, cifar10-unet); -1 with a message listing the presets otherwise. */
int vapo_arch_preset(const char *name, vapo_arch *arch);
int vapo_arch_validate(const vapo_arch *arch);
const char *vapo_arch_preset_list(void);

/* The architecture as a JSON object (for checkpoint metadata) and back; the
 * parser validates and names the offending field. */
struct json_t;
struct json_t *vapo_arch_to_json(const vapo_arch *arch);
int vapo_arch_from_json(const struct json_t *obj, vapo_arch *arch);
const char *vapo_act_name(vapo_act a);
int vapo_act_parse(const char *name, vapo_act *out);

#endif
