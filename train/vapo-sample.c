/* vapo-sample: draws samples from a trained model (VAPO-MATH.md section 5).
 *
 * Sample k of seed S starts from vapo_model_noise(m, S, k) and is pushed
 * through dx/dt = grad Phi(x) on [0, t_end]. Step control is per trajectory,
 * so sample k is the same image whatever --batch or --first are. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "vapo/error.h"
#include "vapo/image.h"
#include "vapo/model.h"

typedef struct {
    const char *model, *out, *out_dir;
    int n, first, cols;
    uint64_t seed;
    cli_solve_opts run;
} options;

#define F(field) offsetof(options, field)
static const opt_def table[] = {
    OPT(OPT_ARG, "MODEL", "model", F(model), 1, 1, NULL, "the model (.safetensors)"),
    OPT(OPT_INT, "-n|--num", "N", F(n), 1, 1000000, "64", "number of samples"),
    OPT(OPT_U64, "--seed", "S", F(seed), 0, 0, "0", "noise seed"),
    OPT(OPT_INT, "--first", "K", F(first), 0, 1000000000, "0", "index of the first sample: samples K .. K+N-1"),
    OPT(OPT_STRING, "-o|--out", "FILE", F(out), 0, 0, NULL, "write one grid PNG (default samples.png unless --out-dir)"),
    OPT(OPT_STRING, "--out-dir", "DIR", F(out_dir), 0, 0, NULL,
        "write one PNG per sample, DIR/seed<S>_<k>.png (created if missing)"),
    OPT(OPT_INT, "--cols", "C", F(cols), 1, 100000, NULL, "grid columns (default ceil(sqrt(N)))"),
    OPT_GROUP(F(run), cli_solve_group),
    OPT_TABLE_END};

static const opt_spec spec = {
    .prog = "vapo-sample",
    .usage = "MODEL [options]",
    .about = "Generates images from a vapo model by integrating dx/dt = grad Phi(x) from noise.\n"
             "Sample k of a seed is the same image whatever the batch size or --first.",
    .table = table,
    .footer = "Output: the grid (or folder) and, on stdout, one summary line with the\n"
              "average number of field evaluations (NFE) per sample.\n"
              CLI_PROGRESS_HELP "Exit status: 0 ok, 1 failure (model, solver, files), 2 bad command line.\n",
};

int main(int argc, char **argv)
{
    options o = {0};
    int status = opt_parse(&spec, argc, argv, &o);
    if (status != OPT_GO)
        return status;
    const char *model_path = o.model;
    if (o.out && o.out_dir)
        return opt_usage_error("give either --out or --out-dir, not both");
    const char *out = o.out, *out_dir = o.out_dir;
    if (!out && !out_dir)
        out = "samples.png";
    if ((long long)o.first + o.n > 2000000000LL)
        return opt_usage_error("--first + --num must stay below 2000000000");
    const int n = o.n, first = o.first, cols = o.cols, pad = o.run.pad, quiet = o.run.tool.quiet;
    const uint64_t seed = o.seed;
    int batch = o.run.batch;

    vapo_backend *be;
    vapo_model *m = cli_model_load(model_path, &o.run.tool.dev, &be);
    if (!m)
        return OPT_EXIT_FAILURE;
    vapo_ode_config cfg = m->sampling;
    int rc = OPT_EXIT_FAILURE;
    float *all = NULL, *x = NULL;
    int *nfe = NULL;
    if (cli_ode_apply(&o.run.ode, &cfg)) {
        rc = OPT_EXIT_USAGE;
        goto done;
    }
    const int c = m->arch.in_c, h = m->arch.in_h, w = m->arch.in_w;
    const size_t d = (size_t)c * h * w;
    if (batch > n)
        batch = n;
    if (out) {
        int gh, gw;
        if (vapo_image_grid_size(n, h, w, cols, pad, &gh, &gw) || (size_t)gh * gw > VAPO_PNG_MAX_PIXELS_DEFAULT * 4) {
            opt_error("a grid of %d samples of %dx%d is too large for one PNG; use --out-dir", n, h, w);
            goto done;
        }
        all = malloc(sizeof(float) * d * n);
    }
    x = malloc(sizeof(float) * d * batch);
    nfe = malloc(sizeof(int) * batch);
    if ((out && !all) || !x || !nfe) {
        opt_error("out of memory for %d samples of %zu values", out ? n : batch, d);
        goto done;
    }
    if (out_dir && cli_mkdir_p(out_dir)) {
        opt_error("%s", vapo_last_error());
        goto done;
    }

    char solver[128];
    cli_ode_describe(&cfg, solver, sizeof solver);
    if (!quiet)
        opt_info("%s: %d samples of %dx%dx%d, seed %llu, first %d, %s, batch %d on %s", model_path, n, c, h, w,
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
            opt_error("sampling failed in samples %d..%d: %s", first + done, first + done + nb - 1,
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
                opt_error("%s", vapo_last_error());
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
                  vapo_png_encode_u8(&grid, &png, &len) || vapo_write_file(out, png, len);
        vapo_image_free(&grid);
        free(png);
        if (bad) {
            opt_error("%s", vapo_last_error());
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
    opt_release();
    return rc;
}
