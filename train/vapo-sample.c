/* vapo-sample: draws samples from a trained model (VAPO-MATH.md section 5).
 *
 * Sample k of seed S starts from vapo_model_noise(m, S, k) and is pushed
 * through dx/dt = grad Phi(x) on [0, t_end]. Step control is per trajectory,
 * so sample k is the same image whatever --batch or --first are. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "vapo/error.h"
#include "vapo/image.h"
#include "vapo/model.h"

static const char usage[] =
    "Usage: vapo-sample MODEL [options]\n"
    "Generates images from a vapo model by integrating dx/dt = grad Phi(x) from noise.\n"
    "Sample k of a seed is the same image whatever the batch size or --first.\n"
    "\n"
    "Options:\n"
    "  -n, --num N        number of samples (default 64)\n"
    "  --seed S           noise seed (default 0)\n"
    "  --first K          index of the first sample (default 0): samples K .. K+N-1\n"
    "  -o, --out FILE     write one grid PNG (default samples.png unless --out-dir)\n"
    "  --out-dir DIR      write one PNG per sample, DIR/seed<S>_<k>.png (created if missing)\n"
    "  --cols C           grid columns (default ceil(sqrt(N)))\n"
    "  --pad P            pixels between grid tiles (default 2)\n"
    "  --batch B          samples solved together (default 64); does not change results\n"
    "  -q, --quiet        no progress line or settings on stderr\n"
    "  -h, --help         this text\n"
    "\n";

static const char usage_tail[] =
    "\n"
    "Output: the grid (or folder) and, on stdout, one summary line with the\n"
    "average number of field evaluations (NFE) per sample.\n"
    "Progress on stderr: a live line on a terminal, else a line every 10 s\n"
    "(VAPO_PROGRESS=off|tty|plain|auto, VAPO_PROGRESS_INTERVAL=SECONDS).\n"
    "Exit status: 0 ok, 1 failure (model, solver, files), 2 bad command line.\n";

int main(int argc, char **argv)
{
    const char *model_path = NULL, *out = NULL, *out_dir = NULL;
    int n = 64, first = 0, cols = 0, pad = 2, batch = 64, quiet = 0;
    uint64_t seed = 0;
    cli_ode_opts ode = {0};
    cli_device_opts dev;
    cli_device_defaults(&dev);

    cli_set_prog("vapo-sample");
    cli_args it;
    cli_args_init(&it, argc, argv);
    for (int k, r; (k = cli_next(&it)) != CLI_END;) {
        if (k == CLI_POSITIONAL) {
            if (model_path)
                return cli_usage_error("more than one model given ('%s' and '%s')", model_path, it.arg);
            model_path = it.arg;
        } else if (cli_is(&it, "-h|--help")) {
            printf("%s%s\n%s%s", usage, cli_ode_help(), cli_device_help(), usage_tail);
            return 0;
        } else if (cli_is(&it, "-n|--num")) {
            if (cli_int(&it, 1, 1000000, &n))
                return CLI_EXIT_USAGE;
        } else if (cli_is(&it, "--seed")) {
            if (cli_u64(&it, &seed))
                return CLI_EXIT_USAGE;
        } else if (cli_is(&it, "--first")) {
            if (cli_int(&it, 0, 1000000000, &first))
                return CLI_EXIT_USAGE;
        } else if (cli_is(&it, "-o|--out")) {
            if (!(out = cli_value(&it)))
                return CLI_EXIT_USAGE;
        } else if (cli_is(&it, "--out-dir")) {
            if (!(out_dir = cli_value(&it)))
                return CLI_EXIT_USAGE;
        } else if (cli_is(&it, "--cols")) {
            if (cli_int(&it, 1, 100000, &cols))
                return CLI_EXIT_USAGE;
        } else if (cli_is(&it, "--pad")) {
            if (cli_int(&it, 0, 64, &pad))
                return CLI_EXIT_USAGE;
        } else if (cli_is(&it, "--batch")) {
            if (cli_int(&it, 1, 65536, &batch))
                return CLI_EXIT_USAGE;
        } else if (cli_is(&it, "-q|--quiet")) {
            if (cli_flag(&it))
                return CLI_EXIT_USAGE;
            quiet = 1;
        } else if ((r = cli_ode_option(&it, &ode)) != 0 || (r = cli_device_option(&it, &dev)) != 0) {
            if (r < 0)
                return CLI_EXIT_USAGE;
        } else {
            return cli_unknown(&it);
        }
    }
    if (!model_path)
        return cli_usage_error("no model given");
    if (out && out_dir)
        return cli_usage_error("give either --out or --out-dir, not both");
    if (!out && !out_dir)
        out = "samples.png";
    if ((long long)first + n > 2000000000LL)
        return cli_usage_error("--first + --num must stay below 2000000000");

    vapo_backend *be;
    vapo_model *m = cli_model_load(model_path, &dev, &be);
    if (!m)
        return CLI_EXIT_FAILURE;
    vapo_ode_config cfg = m->sampling;
    int rc = CLI_EXIT_FAILURE;
    float *all = NULL, *x = NULL;
    int *nfe = NULL;
    if (cli_ode_apply(&ode, &cfg)) {
        rc = CLI_EXIT_USAGE;
        goto done;
    }
    const int c = m->arch.in_c, h = m->arch.in_h, w = m->arch.in_w;
    const size_t d = (size_t)c * h * w;
    if (batch > n)
        batch = n;
    if (out) {
        int gh, gw;
        if (vapo_image_grid_size(n, h, w, cols, pad, &gh, &gw) || (size_t)gh * gw > VAPO_PNG_MAX_PIXELS_DEFAULT * 4) {
            cli_error("a grid of %d samples of %dx%d is too large for one PNG; use --out-dir", n, h, w);
            goto done;
        }
        all = malloc(sizeof(float) * d * n);
    }
    x = malloc(sizeof(float) * d * batch);
    nfe = malloc(sizeof(int) * batch);
    if ((out && !all) || !x || !nfe) {
        cli_error("out of memory for %d samples of %zu values", out ? n : batch, d);
        goto done;
    }
    if (out_dir && cli_mkdir_p(out_dir)) {
        cli_error("%s", vapo_last_error());
        goto done;
    }

    char solver[128];
    cli_ode_describe(&cfg, solver, sizeof solver);
    if (!quiet)
        cli_info("%s: %d samples of %dx%dx%d, seed %llu, first %d, %s, batch %d on %s", model_path, n, c, h, w,
                 (unsigned long long)seed, first, solver, batch, be->name);

    cli_progress prog;
    cli_progress_start(&prog, "sampling", n, "samples", !quiet);
    long long nfe_sum = 0;
    int nfe_min = 0, nfe_max = 0;
    const double t0 = cli_now();
    for (int done = 0; done < n; done += batch) {
        const int nb = n - done < batch ? n - done : batch;
        vapo_model_noise(m, seed, first + done, nb, x);
        if (cli_solve(m, &cfg, nb, x, nfe, &prog, done)) {
            cli_progress_finish(&prog);
            cli_error("sampling failed in samples %d..%d: %s", first + done, first + done + nb - 1,
                      vapo_last_error());
            goto done;
        }
        for (int i = 0; i < nb; i++) {
            nfe_sum += nfe[i];
            if ((done == 0 && i == 0) || nfe[i] < nfe_min)
                nfe_min = nfe[i];
            if (nfe[i] > nfe_max)
                nfe_max = nfe[i];
        }
        if (out) {
            memcpy(all + (size_t)done * d, x, sizeof(float) * d * nb);
            continue;
        }
        for (int i = 0; i < nb; i++) {
            char path[4200];
            snprintf(path, sizeof path, "%s/seed%llu_%06d.png", out_dir, (unsigned long long)seed, first + done + i);
            if (vapo_png_write_file(path, x + (size_t)i * d, c, h, w)) {
                cli_progress_finish(&prog);
                cli_error("%s", vapo_last_error());
                goto done;
            }
        }
    }
    cli_progress_finish(&prog);
    const double seconds = cli_now() - t0;

    if (out) {
        vapo_image grid = {0};
        unsigned char *png = NULL;
        size_t len = 0;
        int bad = vapo_image_grid_u8(all, n, c, h, w, cols, pad, 1.0f, &grid) ||
                  vapo_png_encode_u8(&grid, &png, &len) || cli_write_file(out, png, len);
        vapo_image_free(&grid);
        free(png);
        if (bad) {
            cli_error("%s", vapo_last_error());
            goto done;
        }
    }
    printf("%d samples -> %s%s: average NFE %.1f per sample (min %d, max %d), %.2f s\n", n, out ? out : out_dir,
               out ? "" : "/", (double)nfe_sum / n, nfe_min, nfe_max, seconds);
    rc = 0;
done:
    free(all), free(x), free(nfe);
    vapo_model_free(m);
    be->destroy(be);
    return rc;
}
