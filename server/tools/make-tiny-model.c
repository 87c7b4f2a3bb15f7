/* make-tiny-model: writes a small random `tiny` model (1x8x8 images) that the
 * server tests load. Not trained: the weights are a seeded random draw with
 * non-zero ReZero scales, so grad Phi is a smooth, non-trivial field and an
 * RK45 solve takes a few dozen evaluations. The OOD calibration comes from
 * the energies of seeded uniform-noise images.
 *
 *   make-tiny-model OUT.safetensors [SEED] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vapo/backend.h"
#include "vapo/error.h"
#include "vapo/model.h"
#include "vapo/net.h"
#include "vapo/rng.h"

#define CALIB_IMAGES 256

static int randomise_scales(vapo_net *net, uint64_t seed)
{
    vapo_backend *be = vapo_net_backend(net);
    const size_t np = vapo_net_param_count(net);
    float *theta = malloc(sizeof(float) * np);
    if (!theta)
        return vapo_fail("out of memory");
    be->download(be, theta, vapo_net_params(net), sizeof(float) * np);
    const vapo_param *list;
    int count = vapo_net_params_list(net, &list);
    for (int i = 0; i < count; i++) {
        size_t len = strlen(list[i].name);
        if (len < 6 || strcmp(list[i].name + len - 6, ".scale"))
            continue;
        for (size_t j = 0; j < list[i].count; j++) /* 0.3 .. 0.7: blocks matter, nothing blows up */
            theta[list[i].offset + j] = 0.3f + 0.4f * (float)vapo_rng_uniform(seed, 7, list[i].offset + j);
    }
    be->upload(be, vapo_net_params(net), theta, sizeof(float) * np);
    free(theta);
    return 0;
}

static int calibrate(vapo_model *m, uint64_t seed)
{
    const size_t d = vapo_net_input_size(m->net);
    float *x = malloc(sizeof(float) * d * CALIB_IMAGES), *phi = malloc(sizeof(float) * CALIB_IMAGES);
    int rc = -1;
    if (!x || !phi) {
        vapo_fail("out of memory");
        goto out;
    }
    for (size_t i = 0; i < d * CALIB_IMAGES; i++)
        x[i] = (float)(2.0 * vapo_rng_uniform(seed, 8, i) - 1.0);
    if (vapo_model_energy(m, CALIB_IMAGES, x, phi) == 0)
        rc = vapo_model_calibrate(m, phi, CALIB_IMAGES);
out:
    free(x), free(phi);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fprintf(stderr, "usage: %s OUT.safetensors [SEED]\n"
                        "Writes a random (untrained) 1x8x8 `tiny` model for the server tests.\n", argv[0]);
        return argc < 2 ? 2 : (argc == 2 ? 0 : 2);
    }
    uint64_t seed = argc == 3 ? strtoull(argv[2], NULL, 10) : 1;
    vapo_arch arch;
    vapo_backend *be = vapo_backend_cpu(1);
    if (!be || vapo_arch_preset("tiny", &arch))
        goto fail;
    arch.in_h = arch.in_w = 8;
    vapo_net *net = vapo_net_create(be, &arch);
    if (!net || vapo_net_init(net, seed) || randomise_scales(net, seed))
        goto fail;
    vapo_loss_config loss = vapo_loss_config_default();
    vapo_model *m = vapo_model_wrap(net, &loss);
    if (!m)
        goto fail;
    snprintf(m->dataset, sizeof m->dataset, "random (make-tiny-model, seed %llu)", (unsigned long long)seed);
    m->sampling = vapo_ode_config_default();
    m->sampling.method = VAPO_ODE_RK45;
    m->sampling.t_end = 1.5;
    m->sampling.rtol = m->sampling.atol = 1e-3;
    m->sampling.steps = 20;
    if (calibrate(m, seed) || vapo_model_save(argv[1], m, NULL, 0)) {
        vapo_model_free(m);
        goto fail;
    }
    vapo_model_free(m);
    be->destroy(be);
    printf("wrote %s (tiny, 1x8x8, seed %llu)\n", argv[1], (unsigned long long)seed);
    return 0;
fail:
    fprintf(stderr, "make-tiny-model: %s\n", vapo_last_error());
    return 1;
}
