/* vapo-score: energies Phi(x) and OOD scores of images (VAPO-MATH.md section 6;
 * the scores in vapo/ood.h).
 *
 * Inputs are PNG files, folders of PNG files (names ending in .png, sorted
 * bytewise, hidden files skipped) and idx3-ubyte image files (gzip'd or not,
 * e.g. Fashion-MNIST's t10k-images-idx3-ubyte.gz). Each image must have the
 * model's height and width (or --resize: centre crop to a square, then an
 * antialiased resize); gray and RGB are converted to the model's channels.
 *
 * --auroc-vs states the separation: AUROC = P(v(ID) > v(OOD)) for the score's
 * value v, the inputs being in distribution (positive) and the other set out of it
 * (ties count one half: the Mann-Whitney statistic, = sklearn's roc_auc_score). */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <jansson.h>

#include "common/cli.h"
#include "vapo/dataset.h"
#include "vapo/error.h"
#include "vapo/image.h"
#include "vapo/model.h"
#include "vapo/ood.h"
#include "vapo/rng.h"

/* Noise images for --auroc-vs: a stream of the RNG outside the ranges that
 * vapo/rng.h reserves for sampling, initialisation and training. */
#define SCORE_STREAM_NOISE ((uint64_t)1 << 22)

/* ---- image sets -------------------------------------------------------------------- */

typedef struct {
    const char *path;       /* points into set->names or argv */
    const vapo_dataset *ds; /* idx images, or NULL for a PNG file */
    int index;
} item;

typedef struct {
    item *items;
    int n, cap;
    vapo_dataset **ds;
    int nds;
    char **names; /* owned strings (folder listings) */
    int nnames;
} image_set;

static void set_free(image_set *s)
{
    for (int i = 0; i < s->nds; i++)
        vapo_dataset_free(s->ds[i]);
    for (int i = 0; i < s->nnames; i++)
        free(s->names[i]);
    free(s->items), free(s->ds), free(s->names);
    memset(s, 0, sizeof *s);
}

static int set_push(image_set *s, const char *path, const vapo_dataset *ds, int index)
{
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 256;
        item *p = realloc(s->items, sizeof(item) * cap);
        if (!p)
            return vapo_fail("out of memory listing images");
        s->items = p, s->cap = cap;
    }
    s->items[s->n++] = (item){path, ds, index};
    return 0;
}

static char *set_keep_name(image_set *s, char *name)
{
    char **p = realloc(s->names, sizeof(char *) * (s->nnames + 1));
    if (!p) {
        free(name);
        return NULL;
    }
    s->names = p;
    s->names[s->nnames++] = name;
    return name;
}

static int is_png_name(const char *name)
{
    size_t n = strlen(name);
    return name[0] != '.' && n > 4 && !strcasecmp(name + n - 4, ".png");
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int add_folder(image_set *s, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return vapo_fail("%s: cannot open folder: %s", dir, strerror(errno));
    char **list = NULL;
    int n = 0, cap = 0, rc = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (!is_png_name(e->d_name))
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **p = realloc(list, sizeof(char *) * cap);
            if (!p) {
                rc = vapo_fail("out of memory listing %s", dir);
                break;
            }
            list = p;
        }
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        if (!(list[n] = malloc(len))) {
            rc = vapo_fail("out of memory listing %s", dir);
            break;
        }
        snprintf(list[n], len, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", e->d_name);
        n++;
    }
    closedir(d);
    if (!rc && n == 0)
        rc = vapo_fail("%s: no PNG files in this folder", dir);
    if (!rc)
        qsort(list, n, sizeof(char *), cmp_str);
    for (int i = 0; i < n; i++) {
        if (rc) {
            free(list[i]);
            continue;
        }
        char *name = set_keep_name(s, list[i]);
        if (!name || set_push(s, name, NULL, 0))
            rc = vapo_fail("out of memory listing %s", dir);
    }
    free(list);
    return rc;
}

static int add_input(image_set *s, const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return vapo_fail("%s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return add_folder(s, path);
    unsigned char sig[8] = {0};
    FILE *f = fopen(path, "rb");
    if (!f)
        return vapo_fail("%s: cannot open: %s", path, strerror(errno));
    size_t got = fread(sig, 1, sizeof sig, f);
    fclose(f);
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (got == 8 && !memcmp(sig, png_sig, 8))
        return set_push(s, path, NULL, 0);
    vapo_dataset *ds = NULL;
    if (vapo_dataset_load_idx(path, NULL, &ds)) {
        char why[512]; /* vapo_fail must not read the buffer it writes */
        snprintf(why, sizeof why, "%s", vapo_last_error());
        return vapo_fail("%s: not a PNG image or an idx image file (as idx: %s)", path, why);
    }
    vapo_dataset **p = realloc(s->ds, sizeof(vapo_dataset *) * (s->nds + 1));
    if (!p) {
        vapo_dataset_free(ds);
        return vapo_fail("out of memory");
    }
    s->ds = p;
    s->ds[s->nds++] = ds;
    for (int i = 0; i < ds->n; i++)
        if (set_push(s, path, ds, i))
            return -1;
    return 0;
}

/* One 8-bit planar image -> the model's float input (c, h, w). */
static int prepare(const unsigned char *px, int c_in, int h_in, int w_in, const vapo_arch *a, int resize,
                   const char *what, float *out)
{
    if (h_in == a->in_h && w_in == a->in_w)
        return vapo_u8_to_float(px, c_in, h_in, w_in, a->in_c, out);
    if (!resize)
        return vapo_fail("%s: image is %dx%d (width x height), the model expects %dx%d (use --resize to crop and "
                         "resize)",
                         what, w_in, h_in, a->in_w, a->in_h);
    const int side = h_in < w_in ? h_in : w_in;
    unsigned char *crop = malloc((size_t)c_in * side * side);
    unsigned char *sized = malloc((size_t)c_in * a->in_h * a->in_w);
    int rc = -1;
    if (!crop || !sized) {
        rc = vapo_fail("%s: out of memory", what);
    } else if (vapo_center_crop_u8(px, c_in, h_in, w_in, side, crop) ||
               vapo_resize_u8(crop, c_in, side, side, a->in_h, a->in_w, sized) ||
               vapo_u8_to_float(sized, c_in, a->in_h, a->in_w, a->in_c, out)) {
        char why[512]; /* vapo_fail must not read the buffer it writes */
        snprintf(why, sizeof why, "%s", vapo_last_error());
        rc = vapo_fail("%s: %s", what, why);
    } else {
        rc = 0;
    }
    free(crop), free(sized);
    return rc;
}

static int load_item(const item *it, const vapo_arch *a, int resize, float *out)
{
    if (it->ds) {
        const vapo_dataset *ds = it->ds;
        char what[600];
        snprintf(what, sizeof what, "%s[%d]", it->path, it->index);
        return prepare(ds->pixels + (size_t)it->index * ds->c * ds->h * ds->w, ds->c, ds->h, ds->w, a, resize,
                       what, out);
    }
    vapo_image img = {0};
    if (vapo_png_read_file(it->path, &img))
        return -1;
    int rc = prepare(img.data, img.c, img.h, img.w, a, resize, it->path, out);
    vapo_image_free(&img);
    return rc;
}

/* ---- scoring ---------------------------------------------------------------------- */

typedef struct {
    vapo_model *m;
    vapo_score_kind kind;
    int batch;
    cli_progress *prog;
    double base;
} scorer;

/* Energies and values of score s->kind of n host images, batch by batch. */
static int score_images(scorer *s, int n, const float *x, float *energy, double *value)
{
    const size_t d = vapo_net_input_size(s->m->net);
    for (int done = 0; done < n; done += s->batch) {
        const int nb = n - done < s->batch ? n - done : s->batch;
        const float *xb = x + (size_t)done * d;
        if (vapo_model_energy(s->m, nb, xb, energy + done) ||
            vapo_model_score(s->m, s->kind, nb, xb, s->batch, value + done))
            return -1;
        cli_progress_update(s->prog, s->base + done + nb, NULL);
    }
    s->base += n;
    return 0;
}

static float *load_set(const image_set *set, int n, const vapo_arch *a, int resize)
{
    const size_t d = (size_t)a->in_c * a->in_h * a->in_w;
    float *x = malloc(sizeof(float) * d * (n > 0 ? n : 1));
    if (!x) {
        vapo_fail("out of memory for %d images", n);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (load_item(&set->items[i], a, resize, x + (size_t)i * d)) {
            free(x);
            return NULL;
        }
    return x;
}

/* kind 0: uniform 8-bit pixels; 1: 0.5 * N(0, 1) clipped to [-1, 1], rounded to 8 bits. */
static float *noise_images(int kind, uint64_t seed, int n, size_t d)
{
    float *x = malloc(sizeof(float) * d * (n > 0 ? n : 1));
    if (!x) {
        vapo_fail("out of memory for %d images", n);
        return NULL;
    }
    const size_t total = (size_t)n * d;
    if (kind == 0) {
        for (size_t i = 0; i < total; i++)
            x[i] = (float)vapo_rng_below(seed, SCORE_STREAM_NOISE, i, 256) / 127.5f - 1.0f;
        return x;
    }
    vapo_rng_normal(seed, SCORE_STREAM_NOISE + 1, 0, total, x);
    for (size_t i = 0; i < total; i++) {
        float v = 0.5f * x[i];
        v = v < -1 ? -1 : v > 1 ? 1 : v;
        unsigned char u;
        vapo_float_to_u8(&v, 1, &u);
        x[i] = u / 127.5f - 1.0f;
    }
    return x;
}

typedef struct {
    double v;
    int pos;
} ranked;

static int cmp_ranked(const void *a, const void *b)
{
    double x = ((const ranked *)a)->v, y = ((const ranked *)b)->v;
    return (x > y) - (x < y);
}

/* P(pos > neg) + P(pos == neg) / 2 by ranks; non-finite energies rank lowest. */
static double auroc(const double *pos, int np, const double *neg, int nn)
{
    ranked *r = malloc(sizeof(ranked) * (size_t)(np + nn));
    if (!r)
        return NAN;
    for (int i = 0; i < np; i++)
        r[i] = (ranked){isfinite(pos[i]) ? pos[i] : -INFINITY, 1};
    for (int i = 0; i < nn; i++)
        r[np + i] = (ranked){isfinite(neg[i]) ? neg[i] : -INFINITY, 0};
    const int n = np + nn;
    qsort(r, n, sizeof(ranked), cmp_ranked);
    double rank_sum = 0;
    for (int i = 0; i < n;) {
        int j = i;
        while (j < n && r[j].v == r[i].v)
            j++;
        double avg = 0.5 * (i + 1 + j); /* mean of ranks i+1 .. j */
        for (int k = i; k < j; k++)
            if (r[k].pos)
                rank_sum += avg;
        i = j;
    }
    free(r);
    return (rank_sum - 0.5 * np * ((double)np + 1)) / ((double)np * nn);
}

typedef struct {
    double mean, std, min, max;
    int finite;
} stats;

static stats value_stats(const double *e, int n)
{
    stats s = {0, 0, INFINITY, -INFINITY, 0};
    double sum = 0, sq = 0;
    for (int i = 0; i < n; i++)
        if (isfinite(e[i])) {
            sum += e[i];
            s.finite++;
            s.min = fmin(s.min, e[i]);
            s.max = fmax(s.max, e[i]);
        }
    s.mean = s.finite ? sum / s.finite : NAN;
    for (int i = 0; i < n; i++)
        if (isfinite(e[i]))
            sq += (e[i] - s.mean) * (e[i] - s.mean);
    s.std = s.finite > 1 ? sqrt(sq / (s.finite - 1)) : (s.finite ? 0 : NAN);
    if (!s.finite)
        s.min = s.max = NAN;
    return s;
}

static json_t *json_num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static void csv_field(FILE *f, const char *s)
{
    if (!strpbrk(s, ",\"\n\r")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

typedef struct {
    const char *model, *format, *auroc_vs, *score;
    opt_positionals inputs;
    int summary_only, limit, resize, auroc_n, batch;
    uint64_t auroc_seed;
    cli_tool_opts tool;
} options;

#define F(field) offsetof(options, field)
static const opt_def table[] = {
    OPT(OPT_ARG, "MODEL", "model", F(model), 1, 1, NULL, "the model (.safetensors)"),
    OPT(OPT_ARGS, "INPUT...", "input images (PNG files, folders of PNGs or idx files)", F(inputs), 1, 0, NULL,
        "the images to score"),
    OPT(OPT_CHOICE, "--format", "F", F(format), 0, 0, "csv", "csv or json, on stdout", .choices = "csv|json"),
    OPT(OPT_FLAG, "--summary", NULL, F(summary_only), 0, 0, NULL, "print only the summary (no row per image)"),
    OPT(OPT_INT, "--limit", "N", F(limit), 1, 2000000000, NULL, "score at most the first N input images"),
    OPT(OPT_FLAG, "--resize", NULL, F(resize), 0, 0, NULL,
        "centre-crop and resize images whose size differs from the model's\n"
        "(default: such an image is an error)"),
    OPT(OPT_CHOICE, "--score", "S", F(score), 0, 0, NULL,
        "the OOD score: energy (Phi), complexity (Phi + ln 2 x PNG bits),\n"
        "multiscale (a Gaussian mixture over Phi and |grad Phi| at a few noise\n"
        "levels) or mahalanobis (a Gaussian over the network's own features of\n"
        "the image); default: the model's (its calibration's best)",
        .choices = "energy|complexity|multiscale|mahalanobis"),
    OPT(OPT_STRING, "--auroc-vs", "SET", F(auroc_vs), 0, 0, NULL,
        "also score an out-of-distribution set and print the AUROC (inputs\n"
        "positive: P(value of input > value of SET)). SET is 'uniform'\n"
        "(uniform 8-bit pixels), 'gaussian' (pixels N(0, 0.5^2) around mid-gray,\n"
        "clipped), or a PNG/folder/idx path"),
    OPT(OPT_INT, "--auroc-n", "N", F(auroc_n), 1, 10000000, NULL,
        "noise images for uniform/gaussian (default 1000); for a path, score at\n"
        "most its first N images (default all)"),
    OPT(OPT_U64, "--auroc-seed", "S", F(auroc_seed), 0, 0, "0", "seed of the noise images"),
    OPT(OPT_INT, "--batch", "B", F(batch), 1, 65536, "256", "images per network pass"),
    OPT_GROUP(F(tool), cli_tool_group),
    OPT_TABLE_END};

static const opt_spec spec = {
    .prog = "vapo-score",
    .usage = "MODEL INPUT... [options]",
    .about = "Energies Phi(x) and out-of-distribution scores of images. INPUT is a PNG file, a\n"
             "folder of PNG files or an idx3-ubyte image file (optionally .gz).",
    .table = table,
    .footer = "Columns: source, index (image within an idx file, else 0), energy (Phi), value\n"
              "(of the score: higher = more typical), ood_score (fraction of the model's\n"
              "calibration values above this one: 0 typical, 1 below everything seen) and\n"
              "in_distribution (ood_score <= the model's keep fraction). Without a\n"
              "calibration in the model the last two are empty (null).\n"
              "The summary goes to stderr (stdout with --summary; inside the object for json).\n"
              CLI_PROGRESS_HELP
              "Exit status: 0 ok, 1 failure (model, unreadable or mis-sized image), 2 bad command line.\n",
};

int main(int argc, char **argv)
{
    options o = {0};
    int status = opt_parse(&spec, argc, argv, &o);
    if (status != OPT_GO)
        return status;
    const char *model_path = o.model, *auroc_vs = o.auroc_vs, **inputs = o.inputs.v, *score_name = o.score;
    const int ninputs = o.inputs.n, format = !strcmp(o.format, "json"), summary_only = o.summary_only;
    const int limit = o.limit, resize = o.resize, quiet = o.tool.quiet, auroc_n = o.auroc_n ? o.auroc_n : 1000;
    const uint64_t auroc_seed = o.auroc_seed;
    const int batch = o.batch;
    const int noise_kind = !auroc_vs ? -1 : !strcmp(auroc_vs, "uniform") ? 0 : !strcmp(auroc_vs, "gaussian") ? 1 : 2;

    /* Read the inputs before loading the model: a typo fails fast. */
    image_set set = {0}, ood = {0};
    int rc = OPT_EXIT_FAILURE;
    vapo_backend *be = NULL;
    vapo_model *m = NULL;
    float *x = NULL, *x_ood = NULL, *energy = NULL, *ood_energy = NULL;
    double *value = NULL, *ood_value = NULL;
    for (int i = 0; i < ninputs; i++)
        if (add_input(&set, inputs[i])) {
            opt_error("%s", vapo_last_error());
            goto done;
        }
    if (noise_kind == 2 && add_input(&ood, auroc_vs)) {
        opt_error("--auroc-vs: %s", vapo_last_error());
        goto done;
    }
    const int n = limit && limit < set.n ? limit : set.n;
    const int n_ood = noise_kind < 0    ? 0
                      : noise_kind == 2 ? (o.auroc_n && o.auroc_n < ood.n ? o.auroc_n : ood.n)
                                        : auroc_n;

    if (!(m = cli_model_load(model_path, &o.tool.dev, &be)))
        goto done;
    vapo_score_kind kind = m->ood.default_score;
    if (score_name)
        vapo_score_parse(score_name, &kind); /* checked above */
    if (!vapo_ood_available(&m->ood, kind)) {
        opt_error("%s has no %s score (no fitted mixture in its OOD calibration; try --score energy)", model_path,
                  vapo_score_name(kind));
        goto done;
    }
    const size_t d = vapo_net_input_size(m->net);
    energy = malloc(sizeof(float) * n);
    ood_energy = malloc(sizeof(float) * (n_ood ? n_ood : 1));
    value = malloc(sizeof(double) * n);
    ood_value = malloc(sizeof(double) * (n_ood ? n_ood : 1));
    if (!energy || !ood_energy || !value || !ood_value) {
        opt_error("out of memory for %d images", n);
        goto done;
    }
    if (!(x = load_set(&set, n, &m->arch, resize)) ||
        (noise_kind == 2 && !(x_ood = load_set(&ood, n_ood, &m->arch, resize))) ||
        (noise_kind >= 0 && noise_kind < 2 && !(x_ood = noise_images(noise_kind, auroc_seed, n_ood, d)))) {
        opt_error("%s", vapo_last_error());
        goto done;
    }
    if (!quiet)
        opt_info("%s: scoring %d image(s) of %dx%dx%d%s on %s, score %s", model_path, n, m->arch.in_c, m->arch.in_h,
                 m->arch.in_w, n_ood ? " and the AUROC set" : "", be->name, vapo_score_name(kind));
    const int calibrated = m->ood.calib[kind].count > 0;
    if (!calibrated)
        opt_warn("%s has no OOD calibration: only energies and values are reported", model_path);

    cli_progress prog;
    cli_progress_start(&prog, "scoring", n + n_ood, "images", !quiet);
    scorer sc = {.m = m, .kind = kind, .batch = batch, .prog = &prog};
    if (score_images(&sc, n, x, energy, value) ||
        (n_ood && score_images(&sc, n_ood, x_ood, ood_energy, ood_value))) {
        cli_progress_finish(&prog);
        opt_error("%s", vapo_last_error());
        goto done;
    }
    cli_progress_finish(&prog);

    /* ---- report ---- */
    const vapo_ood *cal = &m->ood;
    int n_in = 0;
    for (int i = 0; i < n; i++)
        n_in += vapo_ood_in_distribution(cal, kind, value[i]);
    const stats st = value_stats(value, n);
    const stats so = value_stats(ood_value, n_ood);
    const double auc = n_ood ? auroc(value, n, ood_value, n_ood) : NAN;
    const char *sname = vapo_score_name(kind);
    char ood_name[600];
    if (noise_kind == 2)
        snprintf(ood_name, sizeof ood_name, "%s", auroc_vs);
    else if (noise_kind >= 0)
        snprintf(ood_name, sizeof ood_name, "%s noise (seed %llu)", auroc_vs, (unsigned long long)auroc_seed);

    if (format == 1) {
        json_t *root = json_pack("{s:s, s:s}", "model", model_path, "score", sname);
        if (!summary_only) {
            json_t *rows = json_array();
            for (int i = 0; i < n; i++) {
                const item *it_ = &set.items[i];
                json_t *row = json_pack("{s:s, s:i, s:o, s:o}", "source", it_->path, "index", it_->index, "energy",
                                        json_num(energy[i]), "value", json_num(value[i]));
                json_object_set_new(row, "ood_score",
                                    calibrated ? json_num(vapo_ood_score(cal, kind, value[i])) : json_null());
                json_object_set_new(row, "in_distribution",
                                    calibrated ? json_boolean(vapo_ood_in_distribution(cal, kind, value[i]))
                                               : json_null());
                json_array_append_new(rows, row);
            }
            json_object_set_new(root, "images", rows);
        }
        json_t *sum = json_pack("{s:i, s:s, s:o, s:o, s:o, s:o}", "count", n, "score", sname, "value_mean",
                                json_num(st.mean), "value_std", json_num(st.std), "value_min", json_num(st.min),
                                "value_max", json_num(st.max));
        json_object_set_new(sum, "in_distribution_fraction",
                            calibrated ? json_num((double)n_in / n) : json_null());
        if (n_ood)
            json_object_set_new(sum, "auroc",
                                json_pack("{s:s, s:i, s:o, s:o, s:o, s:s}", "vs", ood_name, "count", n_ood, "value",
                                          json_num(auc), "ood_value_mean", json_num(so.mean), "ood_value_std",
                                          json_num(so.std), "positive", "inputs (higher value = in distribution)"));
        json_object_set_new(root, "summary", sum);
        if (json_dumpf(root, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(9)) == 0)
            fputc('\n', stdout);
        json_decref(root);
    } else {
        if (!summary_only) {
            printf("source,index,energy,value,ood_score,in_distribution\n");
            for (int i = 0; i < n; i++) {
                csv_field(stdout, set.items[i].path);
                printf(",%d,%.9g,%.9g,", set.items[i].index, energy[i], value[i]);
                if (calibrated)
                    printf("%.6f,%d\n", vapo_ood_score(cal, kind, value[i]), vapo_ood_in_distribution(cal, kind, value[i]));
                else
                    printf(",\n");
            }
        }
        FILE *sf = summary_only ? stdout : stderr;
        const char *pre = summary_only ? "" : "vapo-score: ";
        fprintf(sf, "%s%d image(s), score %s: value mean %.6g, std %.6g, min %.6g, max %.6g", pre, n, sname, st.mean,
                st.std, st.min, st.max);
        if (calibrated)
            fprintf(sf, "; %.1f%% in distribution (keep %.3g)", 100.0 * n_in / n, cal->keep);
        fputc('\n', sf);
        if (n_ood)
            fprintf(sf,
                    "%sAUROC %.4f (%s): inputs (positive, higher value) vs %d image(s) of %s (value mean %.6g, std "
                    "%.6g)\n",
                    pre, auc, sname, n_ood, ood_name, so.mean, so.std);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        opt_error("cannot write the results to stdout");
        goto done;
    }
    rc = 0;
done:
    free(x), free(x_ood), free(energy), free(ood_energy), free(value), free(ood_value);
    set_free(&set);
    set_free(&ood);
    vapo_model_free(m);
    if (be)
        be->destroy(be);
    opt_release();
    return rc;
}
