#include <stdio.h>
#include <string.h>

#include "vapo/error.h"
#include "vapo/net.h"

typedef struct {
    const char *name;
    int c, h, w, levels, widths[VAPO_MAX_LEVELS], blocks;
} preset;

/* VAPO-MATH.md section 7. tiny2d is the MLP-like variant for 2-D points: a
 * 1x1 "image" with two channels, so 1x1 convolutions are dense layers. */
static const preset presets[] = {
    {"tiny", 1, 8, 8, 2, {8, 16}, 1},
    {"tiny2d", 2, 1, 1, 1, {64}, 2},
    {"fmnist-small", 1, 28, 28, 3, {32, 64, 64}, 1},
    {"fmnist", 1, 28, 28, 3, {128, 256, 256}, 2},
    {"cifar10", 3, 32, 32, 4, {128, 256, 256, 256}, 8},
    {"celeba64", 3, 64, 64, 5, {128, 256, 256, 256, 512}, 6},
    {"lsun64", 3, 64, 64, 5, {128, 256, 256, 256, 512}, 2},
};

const char *vapo_arch_preset_list(void) { return "tiny, tiny2d, fmnist-small, fmnist, cifar10, celeba64, lsun64"; }

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
    for (int l = 0; l < a->levels; l++) {
        if (a->widths[l] < 1 || a->widths[l] > 4096)
            return vapo_fail("architecture: width of level %d must be 1..4096, got %d", l, a->widths[l]);
        if (l > 0 && ((a->in_h >> l) < 1 || (a->in_w >> l) < 1))
            return vapo_fail("architecture: %d levels are too many for %dx%d inputs", a->levels, a->in_h,
                             a->in_w);
    }
    return 0;
}
