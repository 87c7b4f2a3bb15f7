/* Optimisers for the trainer: Lamb (cybertronai-style, as the paper uses) and
 * Adam, with linear warm-up, global-norm gradient clipping and an EMA of the
 * weights. The update runs on the network's backend (optim_update), over the
 * flat parameter buffer in backend memory; per-tensor quantities (Lamb's
 * trust ratio) use the network's parameter table. A step reads back one
 * double, the gradient norm. */
#ifndef VAPO_TRAIN_OPTIM_H
#define VAPO_TRAIN_OPTIM_H

#include <stddef.h>

#include "vapo/net.h"

typedef enum { OPTIM_LAMB = 0, OPTIM_ADAM = 1 } optim_kind;

typedef struct {
    optim_kind kind;
    double lr, beta1, beta2, eps;
    long warmup;      /* steps of linear learning-rate warm-up */
    long decay_steps; /* > 0: cosine decay of the learning rate to 0 at this step */
    double clip;      /* global gradient-norm clip; 0 = off */
    double ema_decay; /* EMA decay (with the usual (1+t)/(10+t) warm-up) */
} optim_config;

typedef struct {
    optim_config cfg;
    vapo_backend *be;
    vapo_net *net; /* whose parameters a step changes (vapo_net_params_changed) */
    int ntensors;
    size_t n;
    size_t *offsets;              /* host, ntensors + 1: tensor t is [offsets[t], offsets[t + 1]) */
    float *m, *v, *ema, *scratch; /* backend memory, n floats each */
    double *gnorm;                /* backend memory, one double */
} optim_state;

int optim_kind_parse(const char *name, optim_kind *out);
const char *optim_kind_name(optim_kind k);

/* Zero moments; the EMA starts at params (backend memory, the network's). */
int optim_init(optim_state *s, const optim_config *cfg, vapo_net *net, const float *params);
void optim_free(optim_state *s);

/* One update of params (the network's) from grad (both backend memory; grad
 * is clipped in place) at step `step` (0-based); tells the network its
 * parameters changed; returns the gradient norm before clipping. */
double optim_step(optim_state *s, float *params, float *grad, long step);

/* The learning rate used at `step`. */
double optim_lr(const optim_config *cfg, long step);

#endif
