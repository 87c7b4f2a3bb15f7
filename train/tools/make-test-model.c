/* make-test-model: writes a small random model for the tool tests.
 *
 *   make-test-model OUT.safetensors [--preset tiny] [--seed S] [--scale V]
 *                   [--calib N] [--no-calib]
 *
 * The network is initialised from `seed` as vapo-train would, but its ReZero
 * scales (parameters named "...scale", zero after init) are set to V so that
 * the residual blocks contribute and the field grad Phi is non-trivial.
 * Sampling defaults: rk45, t_end 1.5, rtol = atol = 1e-3. The OOD calibration
 * uses the energies of N samples of this very model (seed 1000, pushed through
 * the ODE and rounded to 8 bits as a PNG would store them), so its own
 * samples score as in distribution and flat noise mostly does not. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "vapo/error.h"
#include "vapo/image.h"
#include "vapo/model.h"

static const char usage[] =
    "Usage: make-test-model OUT.safetensors [options]\n"
    "Writes a random model (for tests) with non-zero ReZero scales and an OOD calibration.\n"
    "\n"
    "Options:\n"
    "  --preset NAME      architecture preset (default tiny: 1x8x8)\n"
    "  --seed S           initialisation seed (default 7)\n"
    "  --scale V          value of every ReZero scale (default 0.5)\n"
    "  --calib N          samples used for the OOD calibration (default 64, >= 2)\n"
    "  --no-calib         write no OOD calibration\n"
    "  -h, --help         this text\n";

static int calibrate(vapo_model *m, int n)
{
    const int d = (int)vapo_net_input_size(m->net);
    float *x = malloc(sizeof(float) * (size_t)n * d);
    unsigned char *u8 = malloc((size_t)n * d);
    float *phi = malloc(sizeof(float) * n);
    int rc = -1;
    if (!x || !u8 || !phi) {
        vapo_fail("out of memory");
        goto done;
    }
    vapo_model_noise(m, 1000, 0, n, x);
    if (vapo_ode_solve(&m->sampling, n, d, x, vapo_model_field, m, NULL, NULL, NULL))
        goto done;
    vapo_float_to_u8(x, (size_t)n * d, u8);
    for (size_t i = 0; i < (size_t)n * d; i++)
        x[i] = u8[i] / 127.5f - 1.0f;
    if (vapo_model_energy(m, n, x, phi) || vapo_model_calibrate(m, phi, n))
        goto done;
    rc = 0;
done:
    free(x), free(u8), free(phi);
    return rc;
}

int main(int argc, char **argv)
{
    const char *out = NULL, *preset = "tiny";
    uint64_t seed = 7;
    double scale = 0.5;
    int n_calib = 64;

    cli_set_prog("make-test-model");
    cli_args it;
    cli_args_init(&it, argc, argv);
    for (int k; (k = cli_next(&it)) != CLI_END;) {
        if (k == CLI_POSITIONAL) {
            if (out)
                return cli_usage_error("more than one output file given ('%s' and '%s')", out, it.arg);
            out = it.arg;
        } else if (cli_is(&it, "-h|--help")) {
            fputs(usage, stdout);
            return 0;
        } else if (cli_is(&it, "--preset")) {
            if (!(preset = cli_value(&it)))
                return CLI_EXIT_USAGE;
        } else if (cli_is(&it, "--seed")) {
            if (cli_u64(&it, &seed))
                return CLI_EXIT_USAGE;
        } else if (cli_is(&it, "--scale")) {
            if (cli_double(&it, -100, 100, &scale))
                return CLI_EXIT_USAGE;
        } else if (cli_is(&it, "--calib")) {
            if (cli_int(&it, 2, 1000000, &n_calib))
                return CLI_EXIT_USAGE;
        } else if (cli_is(&it, "--no-calib")) {
            if (cli_flag(&it))
                return CLI_EXIT_USAGE;
            n_calib = 0;
        } else {
            return cli_unknown(&it);
        }
    }
    if (!out)
        return cli_usage_error("no output file given");

    vapo_arch arch;
    if (vapo_arch_preset(preset, &arch))
        return cli_usage_error("--preset: %s", vapo_last_error());
    vapo_backend *be = vapo_backend_cpu(1);
    if (!be)
        return cli_error("cannot open the CPU backend: %s", vapo_last_error());
    vapo_net *net = vapo_net_create(be, &arch);
    if (!net || vapo_net_init(net, seed) || vapo_net_set_scales(net, (float)scale)) {
        cli_error("cannot build the network: %s", vapo_last_error());
        vapo_net_free(net);
        be->destroy(be);
        return CLI_EXIT_FAILURE;
    }
    vapo_loss_config loss = vapo_loss_config_default();
    vapo_model *m = vapo_model_wrap(net, &loss);
    if (!m) {
        vapo_net_free(net);
        be->destroy(be);
        return cli_error("%s", vapo_last_error());
    }
    snprintf(m->dataset, sizeof m->dataset, "random-test-model");
    m->sampling.method = VAPO_ODE_RK45;
    m->sampling.t_end = 1.5;
    m->sampling.rtol = 1e-3;
    m->sampling.atol = 1e-3;

    int rc = 0;
    if (n_calib > 0 && calibrate(m, n_calib))
        rc = cli_error("calibration failed: %s", vapo_last_error());
    else if (vapo_model_save(out, m, NULL, 0))
        rc = cli_error("cannot save '%s': %s", out, vapo_last_error());
    else
        printf("wrote %s (%s, seed %llu, ReZero scales %g, %d calibration energies)\n", out, preset,
               (unsigned long long)seed, scale, m->n_calib);
    vapo_model_free(m);
    be->destroy(be);
    return rc;
}
