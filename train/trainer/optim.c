#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vapo/error.h"

static const char *const kind_names[] = {[OPTIM_LAMB] = "lamb", [OPTIM_ADAM] = "adam"};

int optim_kind_parse(const char *name, optim_kind *out)
{
    const int k = vapo_name_index("optimizer", kind_names, 2, name);
    return k < 0 ? -1 : (*out = (optim_kind)k, 0);
}

const char *optim_kind_name(optim_kind k) { return kind_names[k == OPTIM_ADAM]; }

int optim_init(optim_state *s, const optim_config *cfg, vapo_net *net, const float *params)
{
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    s->net = net;
    s->be = vapo_net_backend(net);
    const vapo_param *list;
    s->ntensors = vapo_net_params_list(net, &list);
    s->n = vapo_net_param_count(net);
    s->offsets = malloc(sizeof(size_t) * (s->ntensors + 1));
    if (s->offsets) {
        for (int t = 0; t < s->ntensors; t++)
            s->offsets[t] = list[t].offset;
        s->offsets[s->ntensors] = s->n;
    }
    vapo_backend *be = s->be;
    const size_t bytes = sizeof(float) * s->n;
    s->m = be->alloc(be, bytes), s->v = be->alloc(be, bytes); /* zeroed */
    s->ema = be->alloc(be, bytes), s->scratch = be->alloc(be, bytes);
    s->gnorm = be->alloc(be, sizeof(double));
    if (!s->offsets || !s->m || !s->v || !s->ema || !s->scratch || !s->gnorm) {
        optim_free(s);
        return vapo_fail("out of memory for the optimizer state");
    }
    be->copy(be, s->ema, params, bytes);
    return 0;
}

void optim_free(optim_state *s)
{
    if (s->be) { /* backends' free takes NULL */
        s->be->free(s->be, s->m), s->be->free(s->be, s->v), s->be->free(s->be, s->ema);
        s->be->free(s->be, s->scratch), s->be->free(s->be, s->gnorm);
    }
    free(s->offsets);
    s->offsets = NULL, s->m = s->v = s->ema = s->scratch = NULL, s->gnorm = NULL;
}

double optim_lr(const optim_config *c, long step)
{
    if (c->warmup > 0 && step < c->warmup)
        return c->lr * (double)(step + 1) / c->warmup;
    if (c->decay_steps > c->warmup) {
        double p = fmin(1.0, (double)(step - c->warmup) / (double)(c->decay_steps - c->warmup));
        return c->lr * 0.5 * (1.0 + cos(3.14159265358979323846 * p));
    }
    return c->lr;
}

double optim_step(optim_state *s, float *params, float *grad, long step)
{
    const optim_config *c = &s->cfg;
    const int adam = c->kind == OPTIM_ADAM;
    vapo_optim_hyper h = {
        .lamb = !adam,
        .lr = (float)optim_lr(c, step),
        .beta1 = (float)c->beta1,
        .beta2 = (float)c->beta2,
        .eps = (float)c->eps,
        .bc1 = adam ? (float)(1 - pow(c->beta1, step + 1)) : 1.0f,
        .bc2 = adam ? (float)(1 - pow(c->beta2, step + 1)) : 1.0f,
        .clip = (float)c->clip,
        .ema_decay = (float)fmin(c->ema_decay, (1.0 + step) / (10.0 + step)),
    };
    vapo_backend *be = s->be;
    be->optim_update(be, &h, s->ntensors, s->offsets, s->n, params, grad, s->m, s->v, s->ema, s->scratch, s->gnorm);
    vapo_net_params_changed(s->net);
    double gnorm;
    be->download(be, &gnorm, s->gnorm, sizeof gnorm); /* the step's one read-back */
    return gnorm;
}
