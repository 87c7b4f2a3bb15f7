/* The trainer's options: one table drives the command line, the JSON config
 * file (--config, same names without the dashes) and --help, so every knob
 * is documented once. */
#ifndef VAPO_TRAIN_OPTIONS_H
#define VAPO_TRAIN_OPTIONS_H

#include <jansson.h>

#include "optim.h"
#include "vapo/loss.h"
#include "vapo/net.h"

typedef struct {
    const char *data, *preset, *out, *resume, *device;
    long steps, seed, save_every, sample_every, log_every;
    int batch, keep, threads, grid, calib;
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
    char *owned[64]; /* option strings copied from JSON, freed by train_options_free */
    int nowned;
} train_options;

void train_options_default(train_options *o);

/* Parses argv (after --config FILE, whose values the command line overrides).
 * Returns 0 to go on, 1 when --help was printed, -1 on error (message set). */
int train_options_parse(train_options *o, int argc, char **argv);

void train_options_free(train_options *o);

/* The network the options ask for: the preset with the options' changes
 * (widths, blocks, quadratic, heads, anchor, global head). */
int train_options_arch(const train_options *o, vapo_arch *arch);

/* Applies a JSON object of option values (config files, resumed checkpoints). */
int train_options_apply_json(train_options *o, const json_t *obj, const char *origin);

/* The options as JSON, stored in checkpoints. */
json_t *train_options_to_json(const train_options *o);

#endif
