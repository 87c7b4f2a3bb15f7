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
    OPT(OPT_STRING, "-o|--out", "FILE", F(out), 0, 0, NULL,
        "write one grid PNG (default samples.png unless --out-dir)"),
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

typedef struct {
    long long sum;
    int min, max;
} nfe_stats;

static void nfe_add(nfe_stats *st, const int *nfe, int n)
{
    for (int i = 0; i < n; i++) {
        st->min = st->sum == 0 || nfe[i] < st->min ? nfe[i] : st->min;
        st->max = nfe[i] > st->max ? nfe[i] : st->max;
        st->sum += nfe[i];
    }
}

/* Samples o->first .. o->first + o->n - 1, o->run.batch at a time (x: a
 * batch of states), into `all` (the grid) or one file each in --out-dir. */
static int sample(const options *o, vapo_model *m, const vapo_ode_config *cfg, float *x, int *nfe, float *all,
                  nfe_stats *st)
{
    const int n = o->n, batch = o->run.batch < n ? o->run.batch : n;
    const vapo_arch *a = &m->arch;
    const size_t d = (size_t)a->in_c * a->in_h * a->in_w;
    cli_progress prog;
    cli_progress_start(&prog, "sampling", n, "samples", !o->run.tool.quiet);
    int rc = 0;
    for (int done = 0; !rc && done < n; done += batch) {
        const int nb = n - done < batch ? n - done : batch, k0 = o->first + done;
        vapo_model_noise(m, o->seed, k0, nb, x);
        if (cli_solve(m, cfg, nb, x, nfe, &prog, done)) {
            rc = vapo_fail("sampling failed in samples %d..%d: %s", k0, k0 + nb - 1, vapo_last_error());
            break;
        }
        nfe_add(st, nfe, nb);
        if (all)
            memcpy(all + (size_t)done * d, x, sizeof(float) * d * nb);
        for (int i = 0; !all && !rc && i < nb; i++) {
            char path[4200];
            snprintf(path, sizeof path, "%s/seed%llu_%06d.png", o->out_dir, (unsigned long long)o->seed, k0 + i);
            rc = vapo_png_write_file(path, x + (size_t)i * d, a->in_c, a->in_h, a->in_w);
        }
    }
    cli_progress_finish(&prog);
    return rc;
}

int main(int argc, char **argv)
{
    options o = {0};
    int status = opt_parse(&spec, argc, argv, &o);
    if (status != OPT_GO)
        return status;
    if (o.out && o.out_dir)
        return opt_usage_error("give either --out or --out-dir, not both");
    if (!o.out && !o.out_dir)
        o.out = "samples.png";
    if ((long long)o.first + o.n > 2000000000LL)
        return opt_usage_error("--first + --num must stay below 2000000000");

    vapo_backend *be;
    vapo_model *m = cli_model_load(o.model, &o.run.tool.dev, &be);
    if (!m)
        return OPT_EXIT_FAILURE;
    vapo_ode_config cfg = m->sampling;
    const int n = o.n, c = m->arch.in_c, h = m->arch.in_h, w = m->arch.in_w, batch = o.run.batch < n ? o.run.batch : n;
    const size_t d = (size_t)c * h * w;
    float *all = NULL, *x = malloc(sizeof(float) * d * batch);
    int *nfe = malloc(sizeof(int) * batch), rc = OPT_EXIT_FAILURE, gh, gw;
    nfe_stats st = {0};
    if (cli_ode_apply(&o.run.ode, &cfg))
        rc = OPT_EXIT_USAGE;
    else if (o.out && (vapo_image_grid_size(n, h, w, o.cols, o.run.pad, &gh, &gw) ||
                       (size_t)gh * gw > VAPO_PNG_MAX_PIXELS_DEFAULT * 4))
        opt_error("a grid of %d samples of %dx%d is too large for one PNG; use --out-dir", n, h, w);
    else if (!x || !nfe || (o.out && !(all = malloc(sizeof(float) * d * n))))
        opt_error("out of memory for %d samples of %zu values", o.out ? n : batch, d);
    else if (o.out_dir && cli_mkdir_p(o.out_dir))
        opt_error("%s", vapo_last_error());
    else
        rc = 0;
    if (rc == 0) {
        char solver[128];
        cli_ode_describe(&cfg, solver, sizeof solver);
        if (!o.run.tool.quiet)
            opt_info("%s: %d samples of %dx%dx%d, seed %llu, first %d, %s, batch %d on %s", o.model, n, c, h, w,
                     (unsigned long long)o.seed, o.first, solver, batch, be->name);
        const double t0 = cli_now();
        if (sample(&o, m, &cfg, x, nfe, all, &st) ||
            (o.out && cli_write_grid(o.out, all, n, c, h, w, o.cols, o.run.pad)))
            rc = opt_error("%s", vapo_last_error());
        else
            printf("%d samples -> %s%s: average NFE %.1f per sample (min %d, max %d), %.2f s\n", n,
                   o.out ? o.out : o.out_dir, o.out ? "" : "/", (double)st.sum / n, st.min, st.max, cli_now() - t0);
    }
    free(all), free(x), free(nfe);
    vapo_model_free(m);
    be->destroy(be);
    opt_release();
    return rc;
}
