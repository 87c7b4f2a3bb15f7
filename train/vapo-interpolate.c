/* vapo-interpolate: spherical interpolation between the initial noises of two
 * samples, every frame pushed through the same ODE (VAPO-MATH.md section 5).
 *
 * Row r joins sample r of seed A to sample r of seed B (so row 0 is "sample 0
 * of each seed"), or the pair given by the r-th --pair A:B (sample 0 of each).
 * Frames are vapo_slerp_frames(x_a, x_b, K, omega * sqrt(d)): s = linspace(0, 1, K). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "vapo/error.h"
#include "vapo/image.h"
#include "vapo/interp.h"
#include "vapo/model.h"

#define MAX_PAIRS 256

static const char usage[] =
    "Usage: vapo-interpolate MODEL --seed-a A --seed-b B [options]\n"
    "       vapo-interpolate MODEL --pair A:B [--pair A:B ...] [options]\n"
    "Spherical interpolation between the initial noises of two samples; each frame is\n"
    "pushed through the model's ODE. One row per pair of samples, one column per frame.\n"
    "\n"
    "Options:\n"
    "  --seed-a A         seed of the first end point\n"
    "  --seed-b B         seed of the second end point\n"
    "  --rows R           rows (default 1): row r goes from sample r of seed A to\n"
    "                     sample r of seed B\n"
    "  --pair A:B         one row from sample 0 of seed A to sample 0 of seed B;\n"
    "                     repeat for more rows (instead of --seed-a/--seed-b/--rows)\n"
    "  --frames K         frames per row, s = linspace(0, 1, K) (default 10, 1..1000)\n"
    "  -o, --out FILE     the strip (grid) PNG (default interpolation.png)\n"
    "  --out-dir DIR      also write each frame, DIR/row<r>_frame<k>.png\n"
    "  --pad P            pixels between tiles (default 2)\n"
    "  --batch B          frames solved together (default 64); does not change results\n"
    "  -q, --quiet        no progress line or settings on stderr\n"
    "  -h, --help         this text\n"
    "\n";

static const char usage_tail[] =
    "\n"
    "Progress on stderr: a live line on a terminal, else a line every 10 s\n"
    "(VAPO_PROGRESS=off|tty|plain|auto, VAPO_PROGRESS_INTERVAL=SECONDS).\n"
    "Exit status: 0 ok, 1 failure (model, solver, files), 2 bad command line.\n";

static int parse_pair(const char *opt, const char *s, uint64_t *a, uint64_t *b)
{
    const char *colon = strchr(s, ':');
    char left[64];
    if (!colon || (size_t)(colon - s) >= sizeof left) {
        cli_usage_error("%s: expected A:B (two seeds), got '%s'", opt, s);
        return -1;
    }
    memcpy(left, s, colon - s);
    left[colon - s] = '\0';
    return cli_parse_u64(opt, left, a) || cli_parse_u64(opt, colon + 1, b) ? -1 : 0;
}

int main(int argc, char **argv)
{
    const char *model_path = NULL, *out = NULL, *out_dir = NULL;
    int frames = 10, rows = 1, pad = 2, batch = 64, quiet = 0, has_a = 0, has_b = 0, has_rows = 0, npairs = 0;
    uint64_t seed_a = 0, seed_b = 0;
    static uint64_t pair_a[MAX_PAIRS], pair_b[MAX_PAIRS];
    cli_ode_opts ode = {0};
    cli_device_opts dev;
    cli_device_defaults(&dev);

    cli_set_prog("vapo-interpolate");
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
        } else if (cli_is(&it, "--seed-a")) {
            if (cli_u64(&it, &seed_a))
                return CLI_EXIT_USAGE;
            has_a = 1;
        } else if (cli_is(&it, "--seed-b")) {
            if (cli_u64(&it, &seed_b))
                return CLI_EXIT_USAGE;
            has_b = 1;
        } else if (cli_is(&it, "--rows")) {
            if (cli_int(&it, 1, MAX_PAIRS, &rows))
                return CLI_EXIT_USAGE;
            has_rows = 1;
        } else if (cli_is(&it, "--pair")) {
            const char *v = cli_value(&it);
            if (!v)
                return CLI_EXIT_USAGE;
            if (npairs == MAX_PAIRS)
                return cli_usage_error("--pair: at most %d pairs", MAX_PAIRS);
            if (parse_pair(it.name, v, &pair_a[npairs], &pair_b[npairs]))
                return CLI_EXIT_USAGE;
            npairs++;
        } else if (cli_is(&it, "--frames")) {
            if (cli_int(&it, 1, 1000, &frames))
                return CLI_EXIT_USAGE;
        } else if (cli_is(&it, "-o|--out")) {
            if (!(out = cli_value(&it)))
                return CLI_EXIT_USAGE;
        } else if (cli_is(&it, "--out-dir")) {
            if (!(out_dir = cli_value(&it)))
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
    if (npairs && (has_a || has_b || has_rows))
        return cli_usage_error("give either --pair A:B or --seed-a/--seed-b/--rows, not both");
    if (!npairs && !(has_a && has_b))
        return cli_usage_error("give --seed-a and --seed-b (or --pair A:B)");
    if (!out)
        out = "interpolation.png";
    if (npairs)
        rows = npairs;
    const int total = rows * frames;

    vapo_backend *be;
    vapo_model *m = cli_model_load(model_path, &dev, &be);
    if (!m)
        return CLI_EXIT_FAILURE;
    vapo_ode_config cfg = m->sampling;
    int rc = CLI_EXIT_FAILURE;
    float *all = NULL, *xa = NULL, *xb = NULL;
    int *nfe = NULL;
    if (cli_ode_apply(&ode, &cfg)) {
        rc = CLI_EXIT_USAGE;
        goto done;
    }
    const int c = m->arch.in_c, h = m->arch.in_h, w = m->arch.in_w;
    const size_t d = (size_t)c * h * w;
    const double norm = m->loss.omega * sqrt((double)d);
    int gh, gw;
    if (vapo_image_grid_size(total, h, w, frames, pad, &gh, &gw) ||
        (size_t)gh * gw > VAPO_PNG_MAX_PIXELS_DEFAULT * 4) {
        cli_error("a grid of %d x %d frames of %dx%d is too large for one PNG", rows, frames, h, w);
        goto done;
    }
    all = malloc(sizeof(float) * d * total);
    xa = malloc(sizeof(float) * d);
    xb = malloc(sizeof(float) * d);
    nfe = malloc(sizeof(int) * total);
    if (!all || !xa || !xb || !nfe) {
        cli_error("out of memory for %d frames of %zu values", total, d);
        goto done;
    }
    if (out_dir && cli_mkdir_p(out_dir)) {
        cli_error("%s", vapo_last_error());
        goto done;
    }
    for (int r = 0; r < rows; r++) {
        if (npairs) {
            vapo_model_noise(m, pair_a[r], 0, 1, xa);
            vapo_model_noise(m, pair_b[r], 0, 1, xb);
        } else {
            vapo_model_noise(m, seed_a, r, 1, xa);
            vapo_model_noise(m, seed_b, r, 1, xb);
        }
        vapo_slerp_frames((int)d, xa, xb, frames, norm, all + (size_t)r * frames * d);
    }

    char solver[128];
    cli_ode_describe(&cfg, solver, sizeof solver);
    if (!quiet)
        cli_info("%s: %d row(s) x %d frames of %dx%dx%d, %s, batch %d on %s", model_path, rows, frames, c, h, w,
                 solver, batch, be->name);
    cli_progress prog;
    cli_progress_start(&prog, "interpolating", total, "frames", !quiet);
    const double t0 = cli_now();
    for (int done = 0; done < total; done += batch) {
        const int nb = total - done < batch ? total - done : batch;
        if (cli_solve(m, &cfg, nb, all + (size_t)done * d, nfe + done, &prog, done)) {
            cli_progress_finish(&prog);
            cli_error("interpolation failed in frames %d..%d: %s", done, done + nb - 1, vapo_last_error());
            goto done;
        }
    }
    cli_progress_finish(&prog);
    const double seconds = cli_now() - t0;

    vapo_image grid = {0};
    unsigned char *png = NULL;
    size_t len = 0;
    int bad = vapo_image_grid_u8(all, total, c, h, w, frames, pad, 1.0f, &grid) ||
              vapo_png_encode_u8(&grid, &png, &len) || cli_write_file(out, png, len);
    vapo_image_free(&grid);
    free(png);
    if (bad) {
        cli_error("%s", vapo_last_error());
        goto done;
    }
    if (out_dir) {
        for (int i = 0; i < total; i++) {
            char path[4200];
            snprintf(path, sizeof path, "%s/row%d_frame%03d.png", out_dir, i / frames, i % frames);
            if (vapo_png_write_file(path, all + (size_t)i * d, c, h, w)) {
                cli_error("%s", vapo_last_error());
                goto done;
            }
        }
    }
    long long nfe_sum = 0;
    for (int i = 0; i < total; i++)
        nfe_sum += nfe[i];
    printf("%d row(s) x %d frames -> %s (%dx%d): average NFE %.1f per frame, %.2f s\n", rows, frames, out, gw, gh,
           (double)nfe_sum / total, seconds);
    rc = 0;
done:
    free(all), free(xa), free(xb), free(nfe);
    vapo_model_free(m);
    be->destroy(be);
    return rc;
}
