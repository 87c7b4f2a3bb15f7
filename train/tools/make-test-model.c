/* make-test-model: writes a small random model for the tool tests.
 *
 *   make-test-model OUT.safetensors [--preset tiny] [--seed S] [--scale V]
 *                   [--calib N] [--no-calib]
 *
 * The network is initialised from `seed` as vapo-train would, but its ReZero
 * scales (parameters named "...scale", zero after init) are set to V so that
 * the residual blocks contribute and the field grad Phi is non-trivial.
 * Sampling defaults: rk45, t_end 1.5, rtol = atol = 1e-3. The OOD calibration
 * (every score) uses samples of this very model (pushed through the ODE and
 * rounded to 8 bits as a PNG would store them): the multiscale mixture is
 * fitted on 256 of seed 2000 and the quantiles come from N of seed 1000, so
 * its own samples score as in distribution and flat noise mostly does not. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "vapo/error.h"
#include "vapo/image.h"
#include "vapo/model.h"

/* n samples of the model from `seed`, rounded to 8 bits as a PNG stores them. */
static float *samples(vapo_model *m, uint64_t seed, int n)
{
    const int d = (int)vapo_net_input_size(m->net);
    float *x = malloc(sizeof(float) * (size_t)n * d);
    unsigned char *u8 = malloc((size_t)n * d);
    int rc = x && u8 ? 0 : vapo_fail("out of memory");
    if (!rc) {
        vapo_model_noise(m, seed, 0, n, x);
        rc = vapo_model_sample(m, &m->sampling, n, x, NULL, NULL, NULL, NULL);
    }
    if (!rc) {
        vapo_float_to_u8(x, (size_t)n * d, u8);
        for (size_t i = 0; i < (size_t)n * d; i++)
            x[i] = u8[i] / 127.5f - 1.0f;
    }
    free(u8);
    if (rc)
        free(x);
    return rc ? NULL : x;
}

/* The mixture on FIT_SAMPLES samples of seed 2000, the quantiles on n of seed 1000. */
enum { FIT_SAMPLES = 256 };
static int calibrate(vapo_model *m, int n)
{
    float *fit = samples(m, 2000, FIT_SAMPLES), *cal = fit ? samples(m, 1000, n) : NULL;
    int rc = cal ? vapo_model_calibrate(m, fit, FIT_SAMPLES, cal, n, 256) : -1;
    free(fit), free(cal);
    return rc;
}

typedef struct {
    const char *out, *preset;
    uint64_t seed;
    double scale;
    int calib, no_calib;
} options;

#define F(field) offsetof(options, field)
static const opt_def table[] = {
    OPT(OPT_ARG, "OUT.safetensors", "output file", F(out), 1, 1, NULL, "the model file to write"),
    OPT(OPT_STRING, "--preset", "NAME", F(preset), 0, 0, "tiny", "architecture preset (tiny: 1x8x8)"),
    OPT(OPT_U64, "--seed", "S", F(seed), 0, 0, "7", "initialisation seed"),
    OPT(OPT_DOUBLE, "--scale", "V", F(scale), -100, 100, "0.5", "value of every ReZero scale"),
    OPT(OPT_INT, "--calib", "N", F(calib), 2, 1000000, "64", "samples used for the OOD calibration"),
    OPT(OPT_FLAG, "--no-calib", NULL, F(no_calib), 0, 0, NULL, "write no OOD calibration"),
    OPT_TABLE_END};

static const opt_spec spec = {
    .prog = "make-test-model",
    .usage = "OUT.safetensors [options]",
    .about = "Writes a random model (for tests) with non-zero ReZero scales and an OOD calibration.",
    .table = table,
};

int main(int argc, char **argv)
{
    options o = {0};
    int status = opt_parse(&spec, argc, argv, &o);
    if (status != OPT_GO)
        return status;
    const char *out = o.out, *preset = o.preset;
    const uint64_t seed = o.seed;
    const double scale = o.scale;
    const int n_calib = o.no_calib ? 0 : o.calib;

    vapo_arch arch;
    if (vapo_arch_preset(preset, &arch))
        return opt_usage_error("--preset: %s", vapo_last_error());
    vapo_backend *be = vapo_backend_cpu(1);
    if (!be)
        return opt_error("cannot open the CPU backend: %s", vapo_last_error());
    vapo_net *net = vapo_net_create(be, &arch);
    if (!net || vapo_net_init(net, seed) || vapo_net_set_scales(net, (float)scale)) {
        opt_error("cannot build the network: %s", vapo_last_error());
        vapo_net_free(net);
        be->destroy(be);
        return OPT_EXIT_FAILURE;
    }
    vapo_loss_config loss = vapo_loss_config_default();
    vapo_model *m = vapo_model_wrap(net, &loss);
    if (!m) {
        vapo_net_free(net);
        be->destroy(be);
        return opt_error("%s", vapo_last_error());
    }
    snprintf(m->dataset, sizeof m->dataset, "random-test-model");
    m->sampling.method = VAPO_ODE_RK45;
    m->sampling.t_end = 1.5;
    m->sampling.rtol = 1e-3;
    m->sampling.atol = 1e-3;

    int rc = 0;
    if (n_calib > 0 && calibrate(m, n_calib))
        rc = opt_error("calibration failed: %s", vapo_last_error());
    else if (vapo_model_save(out, m, NULL, 0))
        rc = opt_error("cannot save '%s': %s", out, vapo_last_error());
    else
        printf("wrote %s (%s, seed %llu, ReZero scales %g, %d calibration images)\n", out, preset,
               (unsigned long long)seed, scale, m->ood.calib[VAPO_SCORE_ENERGY].count);
    vapo_model_free(m);
    be->destroy(be);
    opt_release();
    return rc;
}
