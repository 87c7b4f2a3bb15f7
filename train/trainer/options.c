#include "options.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vapo/error.h"

typedef enum { T_STR, T_INT, T_LONG, T_DBL } opt_type;

typedef struct {
    const char *name;
    opt_type type;
    size_t offset;
    const char *help;
} opt_def;

#define O(field) offsetof(train_options, field)
static const opt_def defs[] = {
    {"data", T_STR, O(data), "dataset: fashion-mnist, mnist[:DIR], cifar10:DIR, folder:DIR, celeba:DIR"},
    {"preset", T_STR, O(preset), "network preset: tiny, tiny2d, fmnist-small, fmnist, cifar10, celeba64, lsun64"},
    {"out", T_STR, O(out), "output folder for checkpoints, grids and logs"},
    {"resume", T_STR, O(resume), "continue exactly from this checkpoint"},
    {"device", T_STR, O(device), "cpu, cuda, cuda:N or auto (under mpirun, cuda means cuda:LOCAL_RANK)"},
    {"threads", T_INT, O(threads), "CPU threads (0: all cores)"},
    {"steps", T_LONG, O(steps), "total training steps"},
    {"batch", T_INT, O(batch), "batch size"},
    {"seed", T_LONG, O(seed), "seed of initialisation, data order, times and noises"},
    {"optimizer", T_STR, O(optimizer), "lamb or adam"},
    {"lr", T_DBL, O(opt.lr), "learning rate"},
    {"beta1", T_DBL, O(opt.beta1), "first-moment decay"},
    {"beta2", T_DBL, O(opt.beta2), "second-moment decay"},
    {"adam-eps", T_DBL, O(opt.eps), "optimizer epsilon"},
    {"warmup", T_LONG, O(opt.warmup), "linear learning-rate warm-up steps"},
    {"lr-schedule", T_STR, O(lr_schedule), "constant, or cosine (decays to 0 at --steps)"},
    {"clip", T_DBL, O(opt.clip), "global gradient-norm clip (0: off)"},
    {"ema", T_DBL, O(opt.ema_decay), "EMA decay of the weights"},
    {"widths", T_STR, O(widths), "channels per level, e.g. 48,96,96 (their count sets the levels; empty: the preset's)"},
    {"blocks", T_INT, O(blocks), "residual blocks per level (0: the preset's)"},
    {"head-act", T_STR, O(head_act), "activation before the head's spatial sum: relu (DRL's), gelu or silu (smooth gates)"},
    {"heads", T_STR, O(heads), "all (an act-sum-linear head on every level, summed) or last (DRL's single head)"},
    {"anchor", T_STR, O(anchor), "on: the quadratic is -k/2 |x - mu|^2 with a learned image mu, started at the t = 0 optimum (L_eps/k) x the data mean; off: -k/2 |x|^2; auto: on when k > 0"},
    {"global-head", T_INT, O(global_head), "width of the global head, dense -> act -> dense on the whole flattened last level (0: none)"},
    {"quadratic", T_STR, O(quadratic), "k of the fixed -k/2 |x|^2 in Phi: auto (the path's contraction 1/2 ln(1+omega^2/nu^2)), 0 (the paper's network) or a number"},
    {"omega", T_DBL, O(loss.omega), "prior std"},
    {"nu", T_DBL, O(loss.nu), "likelihood std"},
    {"sharpness", T_DBL, O(loss.eps), "epsilon of the log-uniform time law (nu^2/omega^2 is geometric)"},
    {"lambda", T_DBL, O(loss.lambda), "spectral-gap (L2) weight"},
    {"time-tilt", T_DBL, O(loss.time_tilt), "k: train times t with density ~ exp(k t); k > 0 weights near-data noise levels more (0: U(0,1), the paper's)"},
    {"innovation-weight", T_STR, O(weighting), "jacobian (tau'/2, default) or constant (1/2)"},
    {"estimator", T_STR, O(estimator), "pathwise (-grad Phi . dx/dt: same expectation, far less noise) or score (section 3.6 verbatim)"},
    {"save-every", T_LONG, O(save_every), "checkpoint every N steps"},
    {"keep", T_INT, O(keep), "keep the last N step checkpoints"},
    {"sample-every", T_LONG, O(sample_every), "sample grid (EMA weights) every N steps (0: only at the end)"},
    {"log-every", T_LONG, O(log_every), "metrics line every N steps"},
    {"grid", T_INT, O(grid), "images in the sample grid"},
    {"sample-tol", T_DBL, O(sample_tol), "RK45 rtol = atol for the grids during training, stored as the sampling default"},
    {"t-end", T_DBL, O(t_end), "ODE end time stored as the sampling default"},
    {"calib", T_INT, O(calib), "held-out images for the OOD energy calibration"},
};
#define NDEFS ((int)(sizeof defs / sizeof defs[0]))

void train_options_default(train_options *o)
{
    memset(o, 0, sizeof *o);
    o->data = "fashion-mnist", o->preset = "fmnist-small", o->out = "runs/fmnist-small", o->device = "cpu";
    o->steps = 5000, o->batch = 64, o->seed = 0;
    o->save_every = 500, o->keep = 3, o->sample_every = 1000, o->log_every = 50, o->grid = 64, o->calib = 2000;
    o->optimizer = "lamb", o->weighting = "jacobian", o->lr_schedule = "constant";
    o->opt = (optim_config){.kind = OPTIM_LAMB, .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .warmup = 500,
                            .clip = 1.0, .ema_decay = 0.999};
    o->loss = vapo_loss_config_default();
    o->estimator = "pathwise", o->quadratic = "auto", o->head_act = "relu", o->heads = "all", o->anchor = "auto";
    o->global_head = 128, o->widths = "";
    o->sample_tol = 1e-3, o->t_end = 1.5;
}

void train_options_free(train_options *o)
{
    for (int i = 0; i < o->nowned; i++)
        free(o->owned[i]);
    o->nowned = 0;
}

static const opt_def *find(const char *name)
{
    for (int i = 0; i < NDEFS; i++)
        if (!strcmp(defs[i].name, name))
            return &defs[i];
    return NULL;
}

static int set_value(train_options *o, const opt_def *d, const char *text, const char *origin)
{
    char *end;
    void *p = (char *)o + d->offset;
    errno = 0;
    if (d->type == T_STR) {
        *(const char **)p = text;
        return 0;
    }
    if (d->type == T_DBL) {
        double v = strtod(text, &end);
        if (*text == 0 || *end || errno || !isfinite(v))
            return vapo_fail("%s: --%s needs a number, got '%s'", origin, d->name, text);
        *(double *)p = v;
        return 0;
    }
    long long v = strtoll(text, &end, 10);
    if (*text == 0 || *end || errno || v < 0 || (d->type == T_INT && v > 1 << 30))
        return vapo_fail("%s: --%s needs a non-negative integer, got '%s'", origin, d->name, text);
    if (d->type == T_INT)
        *(int *)p = (int)v;
    else
        *(long *)p = (long)v;
    return 0;
}

static void print_help(void)
{
    train_options o;
    train_options_default(&o);
    printf("usage: vapo-train [--config FILE.json] [options]\n\n"
           "Trains a VAPO energy model (VAPO-MATH.md) and writes checkpoints, sample grids and a\n"
           "JSONL metrics log to --out. SIGINT/SIGTERM save a checkpoint, then exit.\n\noptions:\n");
    for (int i = 0; i < NDEFS; i++) {
        const void *p = (const char *)&o + defs[i].offset;
        char def[64] = "";
        if (defs[i].type == T_STR)
            snprintf(def, sizeof def, "%s", *(const char *const *)p ? *(const char *const *)p : "");
        else if (defs[i].type == T_INT)
            snprintf(def, sizeof def, "%d", *(const int *)p);
        else if (defs[i].type == T_LONG)
            snprintf(def, sizeof def, "%ld", *(const long *)p);
        else
            snprintf(def, sizeof def, "%g", *(const double *)p);
        printf("  --%-18s %s%s%s%s\n", defs[i].name, defs[i].help, *def ? " [" : "", def, *def ? "]" : "");
    }
    printf("  --%-18s %s\n  --%-18s %s\n", "config FILE", "JSON object of the options above (names without --)",
           "help", "this text");
}

int train_options_apply_json(train_options *o, const json_t *obj, const char *origin)
{
    const char *key;
    json_t *val;
    if (!json_is_object(obj))
        return vapo_fail("%s: expected a JSON object of options", origin);
    json_object_foreach((json_t *)obj, key, val) {
        const opt_def *d = find(key);
        if (!d && !strcmp(key, "control-variate")) { /* checkpoints before the pathwise estimator */
            fprintf(stderr, "vapo-train: %s: option 'control-variate' is gone; its successor is --estimator pathwise "
                            "(the default)\n", origin);
            continue;
        }
        if (!d)
            return vapo_fail("%s: unknown option '%s' (see --help)", origin, key);
        char buf[64];
        const char *text = buf;
        if (json_is_string(val)) {
            if (o->nowned == (int)(sizeof o->owned / sizeof o->owned[0]))
                return vapo_fail("%s: too many string options", origin);
            text = o->owned[o->nowned++] = strdup(json_string_value(val));
        } else if (json_is_integer(val)) {
            snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(val));
        } else if (json_is_real(val)) {
            snprintf(buf, sizeof buf, "%.17g", json_real_value(val));
        } else {
            return vapo_fail("%s: option '%s' must be a string or a number", origin, key);
        }
        if (!text || set_value(o, d, text, origin))
            return -1;
    }
    return 0;
}

static int load_config(train_options *o, const char *path)
{
    json_error_t err;
    json_t *obj = json_load_file(path, 0, &err);
    if (!obj)
        return vapo_fail("%s:%d: %s", path, err.line, err.text);
    int rc = train_options_apply_json(o, obj, path);
    json_decref(obj);
    return rc;
}

/* --quadratic: auto is the path's sigma'/sigma averaged over t in [0, 1], the
 * log of sigma(0)/sigma(1); with eps = nu^2/omega^2 it is L_eps/2 at every t,
 * and the path velocity is exactly -k x plus a pull towards the data. */
static int parse_quadratic(train_options *o)
{
    char *end;
    if (!strcmp(o->quadratic, "auto")) {
        o->kappa = 0.5 * log1p(o->loss.omega * o->loss.omega / (o->loss.nu * o->loss.nu));
        return 0;
    }
    errno = 0;
    o->kappa = strtod(o->quadratic, &end);
    if (!*o->quadratic || *end || errno || !(o->kappa >= 0 && o->kappa <= 1000))
        return vapo_fail("--quadratic needs auto or a number in [0, 1000], got '%s'", o->quadratic);
    return 0;
}

static int parse_widths(train_options *o)
{
    const char *p = o->widths;
    for (o->nwidths = 0; *p;) {
        char *end;
        errno = 0;
        long w = strtol(p, &end, 10);
        if (end == p || errno || w < 1 || w > 4096 || (*end && *end != ',') || o->nwidths == VAPO_MAX_LEVELS)
            return vapo_fail("--widths needs 1..%d comma-separated channel counts in 1..4096, got '%s'",
                             VAPO_MAX_LEVELS, o->widths);
        o->width_list[o->nwidths++] = (int)w;
        p = *end ? end + 1 : end;
        if (*end && !*p)
            return vapo_fail("--widths ends with a comma: '%s'", o->widths);
    }
    return 0;
}

int train_options_arch(const train_options *o, vapo_arch *arch)
{
    if (vapo_arch_preset(o->preset, arch))
        return -1;
    if (o->nwidths) {
        arch->levels = o->nwidths;
        memcpy(arch->widths, o->width_list, sizeof(int) * o->nwidths);
    }
    if (o->blocks)
        arch->blocks = o->blocks;
    arch->quadratic = (float)o->kappa, arch->head_act = o->head;
    arch->multiscale_head = !strcmp(o->heads, "all"), arch->anchor = !strcmp(o->anchor, "on");
    arch->global_head = o->global_head;
    return vapo_arch_validate(arch);
}

static int finish(train_options *o)
{
    if (strcmp(o->lr_schedule, "constant") && strcmp(o->lr_schedule, "cosine"))
        return vapo_fail("unknown --lr-schedule '%s' (expected constant or cosine)", o->lr_schedule);
    o->opt.decay_steps = strcmp(o->lr_schedule, "cosine") ? 0 : o->steps;
    if (optim_kind_parse(o->optimizer, &o->opt.kind) || vapo_innovation_weight_parse(o->weighting, &o->loss.weighting) ||
        vapo_estimator_parse(o->estimator, &o->loss.estimator))
        return -1;
    if (o->steps < 1 || o->batch < 1 || o->batch > 65536)
        return vapo_fail("--steps must be >= 1 and --batch in 1..65536");
    if (!(o->opt.lr > 0) || !(o->opt.beta1 >= 0 && o->opt.beta1 < 1) || !(o->opt.beta2 >= 0 && o->opt.beta2 < 1) ||
        !(o->opt.eps > 0) || !(o->opt.ema_decay >= 0 && o->opt.ema_decay < 1) || !(o->opt.clip >= 0))
        return vapo_fail("optimizer: need lr > 0, 0 <= beta1, beta2, ema < 1, adam-eps > 0, clip >= 0");
    if (o->grid < 1 || o->grid > 1024 || o->save_every < 1 || o->log_every < 1 || o->keep < 1)
        return vapo_fail("--grid must be 1..1024; --save-every, --log-every and --keep at least 1");
    if (!(o->sample_tol > 0) || !(o->t_end > 0))
        return vapo_fail("--sample-tol and --t-end must be positive");
    if (vapo_loss_config_validate(&o->loss) || vapo_act_parse(o->head_act, &o->head))
        return -1;
    if (parse_widths(o))
        return -1;
    if (o->blocks > 64)
        return vapo_fail("--blocks must be 0..64, got %d", o->blocks);
    if (o->global_head < 0 || o->global_head > 4096)
        return vapo_fail("--global-head must be 0..4096, got %d", o->global_head);
    if (strcmp(o->heads, "all") && strcmp(o->heads, "last"))
        return vapo_fail("--heads takes all or last, got '%s'", o->heads);
    if (parse_quadratic(o))
        return -1;
    if (!strcmp(o->anchor, "auto"))
        o->anchor = o->kappa > 0 ? "on" : "off";
    if (strcmp(o->anchor, "on") && strcmp(o->anchor, "off"))
        return vapo_fail("--anchor takes on, off or auto, got '%s'", o->anchor);
    if (!strcmp(o->anchor, "on") && o->kappa == 0)
        return vapo_fail("--anchor on centres the quadratic: it needs --quadratic > 0");
    return 0;
}

int train_options_parse(train_options *o, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            print_help();
            return 1;
        }
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc)
                return vapo_fail("--config needs a file");
            if (load_config(o, argv[i + 1]))
                return -1;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2))
            return vapo_fail("unexpected argument '%s' (options start with --; see --help)", arg);
        if (!strcmp(arg, "--config")) {
            i++;
            continue;
        }
        const char *eq = strchr(arg, '=');
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(eq ? (size_t)(eq - arg - 2) : strlen(arg + 2)), arg + 2);
        const opt_def *d = find(name);
        if (!d)
            return vapo_fail("unknown option '%s' (see --help)", arg);
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!val)
            return vapo_fail("--%s needs a value", name);
        if (set_value(o, d, val, "command line"))
            return -1;
    }
    return finish(o);
}

json_t *train_options_to_json(const train_options *o)
{
    json_t *obj = json_object();
    for (int i = 0; i < NDEFS; i++) {
        const void *p = (const char *)o + defs[i].offset;
        json_t *v = NULL;
        if (!strcmp(defs[i].name, "resume") || !strcmp(defs[i].name, "out") || !strcmp(defs[i].name, "device") ||
            !strcmp(defs[i].name, "threads"))
            continue; /* where and how it ran, not what it trains */
        if (defs[i].type == T_STR)
            v = *(const char *const *)p ? json_string(*(const char *const *)p) : NULL;
        else if (defs[i].type == T_INT)
            v = json_integer(*(const int *)p);
        else if (defs[i].type == T_LONG)
            v = json_integer(*(const long *)p);
        else
            v = json_real(*(const double *)p);
        if (v)
            json_object_set_new(obj, defs[i].name, v);
    }
    return obj;
}
