/* vapo-interpolate: spherical interpolation between the initial noises of two
 * samples, every frame pushed through the same ODE (VAPO-MATH.md section 5).
 *
 * Row r joins sample r of seed A to sample r of seed B (so row 0 is "sample 0
 * of each seed"), or the pair given by the r-th --pair A:B (sample 0 of each).
 * Frames are vapo_slerp_frames(x_a, x_b, K, omega * sqrt(d)): s = linspace(0, 1, K). */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "vapo/error.h"
#include "vapo/image.h"
#include "vapo/interp.h"
#include "vapo/model.h"

#define MAX_PAIRS 256

typedef struct {
    uint64_t value;
    int given;
} seed_opt;

typedef struct {
    int n;
    uint64_t a[MAX_PAIRS], b[MAX_PAIRS];
} pair_list;

typedef struct {
    const char *model, *out, *out_dir;
    int frames, rows;
    seed_opt seed_a, seed_b;
    pair_list pairs;
    cli_solve_opts run;
} options;

static int parse_seed(void *field, const char *opt, const char *value)
{
    seed_opt *s = field;
    s->given = 1;
    return opt_parse_u64(opt, value, &s->value);
}

/* --pair A:B, repeatable */
static int parse_pair(void *field, const char *opt, const char *s)
{
    pair_list *p = field;
    const char *colon = strchr(s, ':');
    char left[64];
    if (p->n == MAX_PAIRS)
        return opt_fail("%s: at most %d pairs", opt, MAX_PAIRS);
    if (!colon || (size_t)(colon - s) >= sizeof left)
        return opt_fail("%s: expected A:B (two seeds), got '%s'", opt, s);
    memcpy(left, s, colon - s);
    left[colon - s] = '\0';
    if (opt_parse_u64(opt, left, &p->a[p->n]) || opt_parse_u64(opt, colon + 1, &p->b[p->n]))
        return -1;
    p->n++;
    return 0;
}

#define F(field) offsetof(options, field)
static const opt_def table[] = {
    OPT(OPT_ARG, "MODEL", "model", F(model), 1, 1, NULL, "the model (.safetensors)"),
    OPT(OPT_CALL, "--seed-a", "A", F(seed_a), 0, 0, NULL, "seed of the first end point", .call = parse_seed),
    OPT(OPT_CALL, "--seed-b", "B", F(seed_b), 0, 0, NULL, "seed of the second end point", .call = parse_seed),
    OPT(OPT_INT, "--rows", "R", F(rows), 1, MAX_PAIRS, NULL,
        "rows (default 1): row r goes from sample r of seed A to sample r of\n"
        "seed B"),
    OPT(OPT_CALL, "--pair", "A:B", F(pairs), 0, 0, NULL,
        "one row from sample 0 of seed A to sample 0 of seed B; repeat for more\n"
        "rows (instead of --seed-a/--seed-b/--rows)", .call = parse_pair),
    OPT(OPT_INT, "--frames", "K", F(frames), 1, 1000, "10", "frames per row, s = linspace(0, 1, K)"),
    OPT(OPT_STRING, "-o|--out", "FILE", F(out), 0, 0, "interpolation.png", "the strip (grid) PNG"),
    OPT(OPT_STRING, "--out-dir", "DIR", F(out_dir), 0, 0, NULL, "also write each frame, DIR/row<r>_frame<k>.png"),
    OPT_GROUP(F(run), cli_solve_group),
    OPT_TABLE_END};

static const opt_spec spec = {
    .prog = "vapo-interpolate",
    .usage = "MODEL --seed-a A --seed-b B [options]\nMODEL --pair A:B [--pair A:B ...] [options]",
    .about = "Spherical interpolation between the initial noises of two samples; each frame is\n"
             "pushed through the model's ODE. One row per pair of samples, one column per frame.",
    .table = table,
    .footer = CLI_PROGRESS_HELP "Exit status: 0 ok, 1 failure (model, solver, files), 2 bad command line.\n",
};

/* The frames of every row, all its states in `all` (rows x frames x d). */
static void make_frames(const options *o, vapo_model *m, int rows, size_t d, float *xa, float *xb, float *all)
{
    const double norm = m->loss.omega * sqrt((double)d);
    for (int r = 0; r < rows; r++) {
        const int pair = o->pairs.n > 0;
        vapo_model_noise(m, pair ? o->pairs.a[r] : o->seed_a.value, pair ? 0 : r, 1, xa);
        vapo_model_noise(m, pair ? o->pairs.b[r] : o->seed_b.value, pair ? 0 : r, 1, xb);
        vapo_slerp_frames((int)d, xa, xb, o->frames, norm, all + (size_t)r * o->frames * d);
    }
}

/* Pushes the total frames in `all` through the ODE, o->run.batch at a time. */
static int solve_frames(const options *o, vapo_model *m, const vapo_ode_config *cfg, int total, size_t d, float *all,
                        int *nfe)
{
    const int batch = o->run.batch;
    cli_progress prog;
    cli_progress_start(&prog, "interpolating", total, "frames", !o->run.tool.quiet);
    int rc = 0;
    for (int done = 0; !rc && done < total; done += batch) {
        const int nb = total - done < batch ? total - done : batch;
        if (cli_solve(m, cfg, nb, all + (size_t)done * d, nfe + done, &prog, done))
            rc = vapo_fail("interpolation failed in frames %d..%d: %s", done, done + nb - 1, vapo_last_error());
    }
    cli_progress_finish(&prog);
    return rc;
}

/* Each frame as DIR/row<r>_frame<k>.png. */
static int write_frames(const options *o, const vapo_arch *a, int total, const float *all)
{
    const size_t d = (size_t)a->in_c * a->in_h * a->in_w;
    for (int i = 0; i < total; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/row%d_frame%03d.png", o->out_dir, i / o->frames, i % o->frames);
        if (vapo_png_write_file(path, all + (size_t)i * d, a->in_c, a->in_h, a->in_w))
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static options o; /* the pair list is large */
    int status = opt_parse(&spec, argc, argv, &o);
    if (status != OPT_GO)
        return status;
    if (o.pairs.n && (o.seed_a.given || o.seed_b.given || o.rows))
        return opt_usage_error("give either --pair A:B or --seed-a/--seed-b/--rows, not both");
    if (!o.pairs.n && !(o.seed_a.given && o.seed_b.given))
        return opt_usage_error("give --seed-a and --seed-b (or --pair A:B)");
    const int rows = o.pairs.n ? o.pairs.n : o.rows ? o.rows : 1, frames = o.frames, total = rows * frames;

    vapo_backend *be;
    vapo_model *m = cli_model_load(o.model, &o.run.tool.dev, &be);
    if (!m)
        return OPT_EXIT_FAILURE;
    vapo_ode_config cfg = m->sampling;
    const int c = m->arch.in_c, h = m->arch.in_h, w = m->arch.in_w;
    const size_t d = (size_t)c * h * w;
    float *all = malloc(sizeof(float) * d * total), *xa = malloc(sizeof(float) * d), *xb = malloc(sizeof(float) * d);
    int *nfe = malloc(sizeof(int) * total), rc = OPT_EXIT_FAILURE, gh, gw;
    if (cli_ode_apply(&o.run.ode, &cfg))
        rc = OPT_EXIT_USAGE;
    else if (vapo_image_grid_size(total, h, w, frames, o.run.pad, &gh, &gw) ||
             (size_t)gh * gw > VAPO_PNG_MAX_PIXELS_DEFAULT * 4)
        opt_error("a grid of %d x %d frames of %dx%d is too large for one PNG", rows, frames, h, w);
    else if (!all || !xa || !xb || !nfe)
        opt_error("out of memory for %d frames of %zu values", total, d);
    else if (o.out_dir && cli_mkdir_p(o.out_dir))
        opt_error("%s", vapo_last_error());
    else
        rc = 0;
    if (rc == 0) {
        char solver[128];
        cli_ode_describe(&cfg, solver, sizeof solver);
        if (!o.run.tool.quiet)
            opt_info("%s: %d row(s) x %d frames of %dx%dx%d, %s, batch %d on %s", o.model, rows, frames, c, h, w,
                     solver, o.run.batch, be->name);
        make_frames(&o, m, rows, d, xa, xb, all);
        const double t0 = cli_now();
        if (solve_frames(&o, m, &cfg, total, d, all, nfe) ||
            cli_write_grid(o.out, all, total, c, h, w, frames, o.run.pad) ||
            (o.out_dir && write_frames(&o, &m->arch, total, all))) {
            rc = opt_error("%s", vapo_last_error());
        } else {
            long long nfe_sum = 0;
            for (int i = 0; i < total; i++)
                nfe_sum += nfe[i];
            printf("%d row(s) x %d frames -> %s (%dx%d): average NFE %.1f per frame, %.2f s\n", rows, frames, o.out,
                   gw, gh, (double)nfe_sum / total, cli_now() - t0);
        }
    }
    free(all), free(xa), free(xb), free(nfe);
    vapo_model_free(m);
    be->destroy(be);
    opt_release();
    return rc;
}
