#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "vapo/error.h"
#include "vapo/arch.h"

typedef struct {
    const char *name;
    int c, h, w, levels, widths[VAPO_MAX_LEVELS], blocks, unet;
} preset;

/* VAPO-MATH.md section 7, with DRL's single head (vapo-train adds the level
 * heads, the anchor and the global head by default; docs/DESIGN.md). tiny2d is
 * the MLP-like variant for 2-D points: a 1x1 "image" with two channels, so 1x1
 * convolutions are dense layers. The -unet presets are the U-Net energy
 * (net.h), their kappa the path's contraction L_eps/2 for omega = 1, nu = 0.01
 * (vapo-train's --quadratic auto sets it from the loss's omega and nu);
 * fmnist-unet has about the parameters of the flow-matching peer (bench/). */
static const preset presets[] = {
    {"tiny", 1, 8, 8, 2, {8, 16}, 1, 0},
    {"tiny2d", 2, 1, 1, 1, {64}, 2, 0},
    {"fmnist-small", 1, 28, 28, 3, {32, 64, 64}, 1, 0},
    {"fmnist", 1, 28, 28, 3, {128, 256, 256}, 2, 0},
    {"cifar10", 3, 32, 32, 4, {128, 256, 256, 256}, 8, 0},
    {"celeba64", 3, 64, 64, 5, {128, 256, 256, 256, 512}, 6, 0},
    {"lsun64", 3, 64, 64, 5, {128, 256, 256, 256, 512}, 2, 0},
    {"tiny-unet", 1, 8, 8, 2, {8, 16}, 1, 1},
    {"fmnist-unet", 1, 28, 28, 3, {32, 64, 64}, 1, 1},
    {"cifar10-unet", 3, 32, 32, 4, {128, 256, 256, 256}, 2, 1},
};

const char *vapo_arch_preset_list(void)
{
    return "tiny, tiny2d, fmnist-small, fmnist, cifar10, celeba64, lsun64, tiny-unet, fmnist-unet, cifar10-unet";
}

int vapo_arch_preset(const char *name, vapo_arch *arch)
{
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        const preset *p = &presets[i];
        if (strcmp(p->name, name))
            continue;
        memset(arch, 0, sizeof *arch);
        snprintf(arch->preset, sizeof arch->preset, "%s", p->name);
        arch->in_c = p->c, arch->in_h = p->h, arch->in_w = p->w;
        arch->levels = p->levels, arch->blocks = p->blocks;
        memcpy(arch->widths, p->widths, sizeof arch->widths);
        arch->kernel = (p->h == 1 && p->w == 1) ? 1 : 3;
        arch->act = VAPO_ACT_GELU;
        arch->head_act = VAPO_ACT_RELU;
        arch->unet = p->unet;
        arch->quadratic = p->unet ? 4.6f : 0.0f;
        return 0;
    }
    return vapo_fail("unknown preset '%s' (expected one of: %s)", name, vapo_arch_preset_list());
}

int vapo_arch_validate(const vapo_arch *a)
{
    if (a->in_c < 1 || a->in_c > 4 || a->in_h < 1 || a->in_w < 1 || a->in_h > 1024 || a->in_w > 1024)
        return vapo_fail("architecture: bad input shape %dx%dx%d", a->in_c, a->in_h, a->in_w);
    if (a->levels < 1 || a->levels > VAPO_MAX_LEVELS)
        return vapo_fail("architecture: levels must be 1..%d, got %d", VAPO_MAX_LEVELS, a->levels);
    if (a->blocks < 1 || a->blocks > 64)
        return vapo_fail("architecture: blocks per level must be 1..64, got %d", a->blocks);
    if (a->kernel != 1 && a->kernel != 3)
        return vapo_fail("architecture: kernel must be 1 or 3, got %d", a->kernel);
    if (a->act != VAPO_ACT_GELU && a->act != VAPO_ACT_SILU)
        return vapo_fail("architecture: activation must be gelu or silu");
    if (a->head_act != VAPO_ACT_GELU && a->head_act != VAPO_ACT_SILU && a->head_act != VAPO_ACT_RELU)
        return vapo_fail("architecture: head activation must be relu, gelu or silu");
    if (a->multiscale_head != 0 && a->multiscale_head != 1)
        return vapo_fail("architecture: multiscale_head must be 0 or 1");
    if (a->global_head < 0 || a->global_head > 4096)
        return vapo_fail("architecture: global_head must be 0..4096, got %d", a->global_head);
    if (a->anchor != 0 && (a->anchor != 1 || !(a->quadratic > 0.0f)))
        return vapo_fail("architecture: anchor must be 0 or 1, and 1 needs quadratic > 0");
    if (!(a->quadratic >= 0.0f && a->quadratic <= 1000.0f))
        return vapo_fail("architecture: quadratic must be in [0, 1000], got %g", a->quadratic);
    if (a->unet != 0 && a->unet != 1)
        return vapo_fail("architecture: unet must be 0 or 1");
    if (a->unet && !(a->quadratic > 0.0f))
        return vapo_fail("architecture: the U-Net energy -k/2 |x - f(x)|^2 needs quadratic k > 0");
    if (a->unet && (a->multiscale_head || a->anchor || a->global_head))
        return vapo_fail("architecture: the U-Net energy has no heads, anchor or global head");
    if (a->unet && ((a->in_h | a->in_w) & ((1 << (a->levels - 1)) - 1)))
        return vapo_fail("architecture: a U-Net of %d levels needs sides divisible by %d, got %dx%d", a->levels,
                         1 << (a->levels - 1), a->in_h, a->in_w);
    for (int l = 0; l < a->levels; l++) {
        if (a->widths[l] < 1 || a->widths[l] > 4096)
            return vapo_fail("architecture: width of level %d must be 1..4096, got %d", l, a->widths[l]);
        if (l > 0 && ((a->in_h >> l) < 1 || (a->in_w >> l) < 1))
            return vapo_fail("architecture: %d levels are too many for %dx%d inputs", a->levels, a->in_h,
                             a->in_w);
    }
    return 0;
}

/* ---- JSON form ------------------------------------------------------------------ */

static const char *act_names[] = {"gelu", "silu", "relu"};

const char *vapo_act_name(vapo_act a) { return (unsigned)a < 3 ? act_names[a] : "?"; }

int vapo_act_parse(const char *name, vapo_act *out)
{
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, act_names[i])) {
            *out = (vapo_act)i;
            return 0;
        }
    return vapo_fail("unknown activation '%s' (expected gelu, silu or relu)", name);
}

json_t *vapo_arch_to_json(const vapo_arch *a)
{
    json_t *widths = json_array();
    for (int l = 0; l < a->levels; l++)
        json_array_append_new(widths, json_integer(a->widths[l]));
    json_t *j = json_pack("{s:s, s:[i,i,i], s:o, s:i, s:i, s:s, s:s, s:f, s:b, s:b, s:i}", "preset", a->preset, "input",
                     a->in_c, a->in_h, a->in_w, "widths", widths, "blocks", a->blocks, "kernel", a->kernel, "act",
                     vapo_act_name(a->act), "head_act", vapo_act_name(a->head_act), "quadratic", (double)a->quadratic,
                     "multiscale_head", a->multiscale_head, "anchor", a->anchor, "global_head", a->global_head);
    if (j && a->unet) /* only when set: the other networks' metadata reads as before */
        json_object_set_new(j, "unet", json_true());
    return j;
}

int vapo_arch_from_json(const json_t *obj, vapo_arch *a)
{
    json_t *widths = NULL;
    const char *preset = "", *act = "gelu", *head_act = "relu";
    double quadratic = 0.0; /* absent in checkpoints from before the option: the paper's network */
    int multiscale = 0, anchor = 0, unet = 0; /* absent: as every checkpoint before the options */
    json_error_t err;
    memset(a, 0, sizeof *a);
    if (json_unpack_ex((json_t *)obj, &err, JSON_STRICT, "{s?s, s:[iii], s:o, s:i, s:i, s?s, s?s, s?F, s?b, s?b, s?i, s?b}",
                       "preset", &preset, "input", &a->in_c, &a->in_h, &a->in_w, "widths", &widths, "blocks",
                       &a->blocks, "kernel", &a->kernel, "act", &act, "head_act", &head_act, "quadratic", &quadratic,
                       "multiscale_head", &multiscale, "anchor", &anchor, "global_head", &a->global_head, "unet", &unet))
        return vapo_fail("architecture metadata: %s", err.text);
    a->quadratic = (float)quadratic;
    a->multiscale_head = multiscale, a->anchor = anchor, a->unet = unet;
    if (!json_is_array(widths) || json_array_size(widths) < 1 || json_array_size(widths) > VAPO_MAX_LEVELS)
        return vapo_fail("architecture metadata: widths must be an array of 1..%d integers", VAPO_MAX_LEVELS);
    a->levels = (int)json_array_size(widths);
    for (int l = 0; l < a->levels; l++) {
        json_t *w = json_array_get(widths, l);
        if (!json_is_integer(w) || json_integer_value(w) < 1 || json_integer_value(w) > 4096)
            return vapo_fail("architecture metadata: widths[%d] must be an integer in 1..4096", l);
        a->widths[l] = (int)json_integer_value(w);
    }
    snprintf(a->preset, sizeof a->preset, "%s", preset);
    if (vapo_act_parse(act, &a->act) || vapo_act_parse(head_act, &a->head_act))
        return -1;
    return vapo_arch_validate(a);
}
