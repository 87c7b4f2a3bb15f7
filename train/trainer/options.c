#include "options.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vapo/error.h"

#define F(field) offsetof(train_options, field)
static const opt_def table[] = {
    OPT(OPT_STRING, "--data", "SPEC", F(data), 0, 0, "fashion-mnist",
        "dataset: fashion-mnist, mnist[:DIR], cifar10:DIR, folder:DIR, celeba:DIR"),
    OPT(OPT_STRING, "--preset", "NAME", F(preset), 0, 0, "fmnist-small",
        "network preset: tiny, tiny2d, fmnist-small, fmnist, cifar10, celeba64, lsun64;\n"
        "U-Net energies: tiny-unet, fmnist-unet, cifar10-unet"),
    OPT(OPT_STRING, "--out", "DIR", F(out), 0, 0, "runs/fmnist-small", "output folder for checkpoints, grids and logs",
        .nosave = 1),
    OPT(OPT_STRING, "--resume", "FILE", F(resume), 0, 0, NULL, "continue exactly from this checkpoint", .nosave = 1),
    OPT_GROUP(F(dev), opt_device_group),
    OPT(OPT_LONG, "--steps", "N", F(steps), 1, 1e15, "5000", "total training steps"),
    OPT(OPT_INT, "--batch", "N", F(batch), 1, 65536, "64", "batch size (under mpirun: the global batch)"),
    OPT(OPT_LONG, "--seed", "S", F(seed), 0, 1e15, "0", "seed of initialisation, data order, times and noises"),
    OPT(OPT_STRING, "--optimizer", "NAME", F(optimizer), 0, 0, "auto",
        "lamb, adam, or auto: Adam for the U-Net presets, Lamb otherwise (docs/DESIGN.md)"),
    OPT(OPT_DOUBLE, "--lr", "LR", F(opt.lr), 1e-30, 1e6, "1e-3", "learning rate"),
    OPT(OPT_DOUBLE, "--beta1", "B", F(opt.beta1), 0, 0.999999999, "0.9", "first-moment decay"),
    OPT(OPT_DOUBLE, "--beta2", "B", F(opt.beta2), 0, 0.999999999, "0.999", "second-moment decay"),
    OPT(OPT_DOUBLE, "--adam-eps", "E", F(opt.eps), 1e-30, 1, "1e-8", "optimizer epsilon"),
    OPT(OPT_LONG, "--warmup", "N", F(opt.warmup), 0, 1e15, "500", "linear learning-rate warm-up steps"),
    OPT(OPT_STRING, "--lr-schedule", "NAME", F(lr_schedule), 0, 0, "constant",
        "constant, or cosine (decays to 0 at --steps)"),
    OPT(OPT_DOUBLE, "--clip", "C", F(opt.clip), 0, 1e30, "1", "global gradient-norm clip (0: off)"),
    OPT(OPT_DOUBLE, "--ema", "D", F(opt.ema_decay), 0, 0.999999999, "0.999", "EMA decay of the weights"),
    OPT(OPT_STRING, "--widths", "LIST", F(widths), 0, 0, "",
        "channels per level, e.g. 48,96,96 (their count sets the levels; empty:\n"
        "the preset's)"),
    OPT(OPT_INT, "--blocks", "N", F(blocks), 0, 64, "0", "residual blocks per level (0: the preset's)"),
    OPT(OPT_STRING, "--head-act", "NAME", F(head_act), 0, 0, "relu",
        "activation before the head's spatial sum: relu (DRL's), gelu or silu\n"
        "(smooth gates)"),
    OPT(OPT_STRING, "--heads", "WHICH", F(heads), 0, 0, "all",
        "all (an act-sum-linear head on every level, summed) or last (DRL's\n"
        "single head)"),
    OPT(OPT_STRING, "--anchor", "MODE", F(anchor), 0, 0, "auto",
        "on: the quadratic is -k/2 |x - mu|^2 with a learned image mu, started\n"
        "at the t = 0 optimum (L_eps/k) x the data mean; off: -k/2 |x|^2; auto:\n"
        "on when k > 0"),
    OPT(OPT_INT, "--global-head", "N", F(global_head), 0, 4096, "128",
        "width of the global head, dense -> act -> dense on the whole flattened\n"
        "last level (0: none)"),
    OPT(OPT_STRING, "--quadratic", "K", F(quadratic), 0, 0, "auto",
        "k of the fixed -k/2 |x|^2 in Phi: auto (the path's contraction\n"
        "1/2 ln(1+omega^2/nu^2)), 0 (the paper's network) or a number in 0..1000"),
    OPT(OPT_DOUBLE, "--omega", "W", F(loss.omega), 0, 0, "1", "prior std"),
    OPT(OPT_DOUBLE, "--nu", "V", F(loss.nu), 0, 0, "0.01", "likelihood std"),
    OPT(OPT_DOUBLE, "--sharpness", "E", F(loss.eps), 0, 0, "1e-4",
        "epsilon of the log-uniform time law (nu^2/omega^2 is geometric)"),
    OPT(OPT_DOUBLE, "--lambda", "L", F(loss.lambda), 0, 0, "1e-4", "spectral-gap (L2) weight"),
    OPT(OPT_DOUBLE, "--time-tilt", "K", F(loss.time_tilt), 0, 0, "0",
        "k: train times t with density ~ exp(k t); k > 0 weights near-data noise\n"
        "levels more (0: U(0,1), the paper's)"),
    OPT(OPT_STRING, "--innovation-weight", "W", F(weighting), 0, 0, "jacobian", "jacobian (tau'/2) or constant (1/2)"),
    OPT(OPT_STRING, "--estimator", "NAME", F(estimator), 0, 0, "pathwise",
        "pathwise (-grad Phi . dx/dt: same expectation, far less noise) or score\n"
        "(section 3.6 verbatim)"),
    OPT(OPT_LONG, "--save-every", "N", F(save_every), 1, 1e15, "500", "checkpoint every N steps"),
    OPT(OPT_INT, "--keep", "N", F(keep), 1, 1 << 20, "3", "keep the last N step checkpoints"),
    OPT(OPT_LONG, "--sample-every", "N", F(sample_every), 0, 1e15, "1000",
        "sample grid (EMA weights) every N steps (0: only at the end)"),
    OPT(OPT_LONG, "--log-every", "N", F(log_every), 1, 1e15, "50", "metrics line every N steps"),
    OPT(OPT_INT, "--grid", "N", F(grid), 1, 1024, "64", "images in the sample grid"),
    OPT(OPT_DOUBLE, "--sample-tol", "TOL", F(sample_tol), 1e-12, 1, "1e-3",
        "RK45 rtol = atol for the grids during training, stored as the sampling\n"
        "default"),
    OPT(OPT_DOUBLE, "--t-end", "T", F(t_end), 1e-9, 1e6, "1.5", "ODE end time stored as the sampling default"),
    OPT(OPT_INT, "--calib", "N", F(calib), 0, 1 << 30, "2000",
        "held-out images for the OOD calibration: the last N training images fit\n"
        "the multiscale score's mixture and the mahalanobis score's Gaussian, the\n"
        "first N test images give every score's quantiles"),
    OPT(OPT_STRING, "--select", "WHAT", F(select), 0, 0, "none",
        "none, or fd: at every grid and at the end, the FD of --select-n samples\n"
        "to as many test images in the judge's features; model.safetensors gets\n"
        "the EMA weights with the lowest"),
    OPT(OPT_INT, "--select-n", "N", F(select_n), 2, 1000000, "500", "samples per FD of --select fd"),
    OPT(OPT_STRING, "--judge", "FILE", F(judge), 0, 0, "models/fmnist-judge.safetensors",
        "the judge's weights for --select fd (Fashion-MNIST, bench/judge.py)", .nosave = 1),
    OPT(OPT_STRING, "--recalibrate", "FILE", F(recalibrate), 0, 0, NULL,
        "no training: redo the OOD calibration of this checkpoint in place\n"
        "(--data, --calib), keeping its weights and state", .nosave = 1),
    OPT_TABLE_END};

static const opt_spec spec = {
    .prog = "vapo-train",
    .usage = "[--config FILE.json] [options]",
    .about = "Trains a VAPO energy model (VAPO-MATH.md) and writes checkpoints, sample grids and a\n"
             "JSONL metrics log to --out. SIGINT/SIGTERM save a checkpoint, then exit.",
    .table = table,
    .footer = "Under mpirun each rank computes its rows of --batch; --device cuda or auto\n"
              "is then the rank's local GPU (cuda:LOCAL_RANK).\n"
              "Exit status: 0 ok, 1 failure (data, model, files), 2 bad command line.\n",
};

static int parse_widths(train_options *o)
{
    const char *p = o->widths;
    for (o->nwidths = 0; *p;) {
        char *end;
        errno = 0;
        long w = strtol(p, &end, 10);
        if (end == p || errno || w < 1 || w > 4096 || (*end && *end != ',') || o->nwidths == VAPO_MAX_LEVELS)
            return vapo_fail("needs 1..%d comma-separated channel counts in 1..4096, got '%s'", VAPO_MAX_LEVELS,
                             o->widths);
        o->width_list[o->nwidths++] = (int)w;
        p = *end ? end + 1 : end;
        if (*end && !*p)
            return vapo_fail("ends with a comma: '%s'", o->widths);
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
    if (arch->unet) /* its Phi is -k/2 |x - f(x)|^2: no heads, no anchor */
        arch->multiscale_head = arch->anchor = arch->global_head = 0;
    return vapo_arch_validate(arch);
}

/* A usage message for a parser's failure (rc != 0), naming the option. */
static int named(const char *opt, int rc) { return rc ? opt_fail("%s: %s", opt, vapo_last_error()) : 0; }

/* Cross-checks and the values parsed from names (the engine's parsers name
 * what they accept). 0, or -1 after a usage message. */
static int finish(train_options *o)
{
    if (strcmp(o->lr_schedule, "constant") && strcmp(o->lr_schedule, "cosine"))
        return opt_fail("--lr-schedule: unknown schedule '%s' (expected constant or cosine)", o->lr_schedule);
    o->opt.decay_steps = strcmp(o->lr_schedule, "cosine") ? 0 : o->steps;
    vapo_arch preset;
    if (!strcmp(o->optimizer, "auto")) /* an unknown preset is reported with the architecture */
        o->optimizer = !vapo_arch_preset(o->preset, &preset) && preset.unet ? "adam" : "lamb";
    if (named("--optimizer", optim_kind_parse(o->optimizer, &o->opt.kind)) ||
        named("--innovation-weight", vapo_innovation_weight_parse(o->weighting, &o->loss.weighting)) ||
        named("--estimator", vapo_estimator_parse(o->estimator, &o->loss.estimator)) ||
        named("--head-act", vapo_act_parse(o->head_act, &o->head)) ||
        named("loss options", vapo_loss_config_validate(&o->loss)) || named("--widths", parse_widths(o)))
        return -1;
    if (strcmp(o->heads, "all") && strcmp(o->heads, "last"))
        return opt_fail("--heads takes all or last, got '%s'", o->heads);
    if (strcmp(o->quadratic, "auto") &&
        opt_parse_double("--quadratic (auto or a number)", o->quadratic, 0, 1000, &o->kappa))
        return -1;
    if (!strcmp(o->quadratic, "auto")) /* the path's sigma'/sigma averaged over t in [0, 1]; see DESIGN.md */
        o->kappa = 0.5 * log1p(o->loss.omega * o->loss.omega / (o->loss.nu * o->loss.nu));
    if (!strcmp(o->anchor, "auto"))
        o->anchor = o->kappa > 0 ? "on" : "off";
    if (strcmp(o->anchor, "on") && strcmp(o->anchor, "off"))
        return opt_fail("--anchor takes on, off or auto, got '%s'", o->anchor);
    if (!strcmp(o->anchor, "on") && o->kappa == 0)
        return opt_fail("--anchor on centres the quadratic: it needs --quadratic > 0");
    if (strcmp(o->select, "none") && strcmp(o->select, "fd"))
        return opt_fail("--select takes none or fd, got '%s'", o->select);
    return 0;
}

int train_options_parse(train_options *o, int argc, char **argv)
{
    memset(o, 0, sizeof *o);
    int rc = opt_parse(&spec, argc, argv, o);
    return rc != OPT_GO ? rc : finish(o) ? OPT_EXIT_USAGE : OPT_GO;
}

int train_options_resume(train_options *o, const json_t *saved, const char *origin, int argc, char **argv)
{
    memset(o, 0, sizeof *o);
    opt_defaults(&spec, o);
    /* checkpoints from before these options trained the paper's network */
    o->quadratic = "0", o->heads = "last", o->anchor = "off", o->global_head = 0;
    json_t *copy = json_deep_copy(saved);
    if (json_object_get(copy, "control-variate")) { /* checkpoints before the pathwise estimator */
        opt_warn("%s: option 'control-variate' is gone; its successor is --estimator pathwise (the default)", origin);
        json_object_del(copy, "control-variate");
    }
    int rc = opt_apply_json(&spec, copy, origin, o);
    json_decref(copy);
    if (rc)
        return OPT_EXIT_USAGE;
    rc = opt_parse_args(&spec, argc, argv, o);
    return rc != OPT_GO ? rc : finish(o) ? OPT_EXIT_USAGE : OPT_GO;
}

json_t *train_options_to_json(const train_options *o) { return opt_to_json(&spec, o); }
