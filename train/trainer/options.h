/* The trainer's options: its table (common/opt.h) drives the command line,
 * the JSON config file (--config, same names without the dashes), --help and
 * the options saved in checkpoints, so every knob is documented once. */
#ifndef VAPO_TRAIN_OPTIONS_H
#define VAPO_TRAIN_OPTIONS_H

#include <jansson.h>

#include "opt.h"
#include "optim.h"
#include "vapo/loss.h"
#include "vapo/net.h"

typedef struct {
    const char *data, *preset, *out, *resume;
    opt_device dev; /* --device, --threads */
    long steps, seed, save_every, sample_every, log_every;
    int batch, keep, grid, calib;
    int global_head; /* arch.global_head */
    const char *widths; /* "48,96,96": arch.widths and levels ("": the preset's) */
    int blocks;         /* arch.blocks (0: the preset's) */
    int width_list[VAPO_MAX_LEVELS], nwidths; /* parsed --widths */
    optim_config opt;
    vapo_loss_config loss;
    const char *optimizer, *weighting, *estimator, *lr_schedule; /* parsed into opt.kind, loss.*, opt.decay_steps */
    const char *quadratic; /* parsed into kappa: the network's arch.quadratic */
    const char *head_act;  /* parsed into head: the network's arch.head_act */
    const char *heads;     /* all or last: arch.multiscale_head */
    const char *anchor;    /* on, off or auto (on when kappa > 0): arch.anchor */
    double kappa;
    vapo_act head;
    double sample_tol, t_end;
    const char *recalibrate;    /* a checkpoint whose OOD calibration to redo (no training) */
    const char *select, *judge; /* checkpoint selection: none or fd; the judge's weights */
    int select_n;               /* samples per FD */
} train_options;

/* The defaults, then --config FILE, then the command line. OPT_GO to go on,
 * else the exit status (0 after --help, 2 after a usage message). */
int train_options_parse(train_options *o, int argc, char **argv);

/* A resumed run: its checkpoint's saved options (`saved`, from `origin`),
 * then --config and the command line again, which win. As above. */
int train_options_resume(train_options *o, const json_t *saved, const char *origin, int argc, char **argv);

/* The network the options ask for: the preset with the options' changes
 * (widths, blocks, quadratic, heads, anchor, global head). */
int train_options_arch(const train_options *o, vapo_arch *arch);

/* The options as JSON, stored in checkpoints. */
json_t *train_options_to_json(const train_options *o);

#endif
