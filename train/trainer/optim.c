#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vapo/elementwise.h"
#include "vapo/error.h"

int optim_kind_parse(const char *name, optim_kind *out)
{
    if (!strcmp(name, "lamb"))
        *out = OPTIM_LAMB;
    else if (!strcmp(name, "adam"))
        *out = OPTIM_ADAM;
    else
        return vapo_fail("unknown optimizer '%s' (expected lamb or adam)", name);
    return 0;
}

const char *optim_kind_name(optim_kind k) { return k == OPTIM_ADAM ? "adam" : "lamb"; }

int optim_init(optim_state *s, const optim_config *cfg, const vapo_net *net, const float *params)
{
    memset(s, 0, sizeof *s);
    s->cfg = *cfg;
    s->ntensors = vapo_net_params_list(net, &s->tensors);
    s->n = vapo_net_param_count(net);
    s->m = calloc(s->n, sizeof(float));
    s->v = calloc(s->n, sizeof(float));
    s->ema = malloc(sizeof(float) * s->n);
    if (!s->m || !s->v || !s->ema) {
        optim_free(s);
        return vapo_fail("out of memory for the optimizer state");
    }
    memcpy(s->ema, params, sizeof(float) * s->n);
    return 0;
}

void optim_free(optim_state *s)
{
    free(s->m), free(s->v), free(s->ema);
    s->m = s->v = s->ema = NULL;
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

static double norm2(const float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    return sqrt(s);
}

/* Lamb on one tensor: Adam direction without bias correction, scaled by the
 * trust ratio |w| / |direction| with |w| clamped to [0, 10]. */
static void lamb_tensor(optim_state *s, float *w, const float *g, size_t off, size_t n, double lr, float *dir)
{
    const optim_config *c = &s->cfg;
    for (size_t i = 0; i < n; i++)
        dir[i] = vapo_adam_direction(g[i], &s->m[off + i], &s->v[off + i], (float)c->beta1, (float)c->beta2,
                                     (float)c->eps, 1.0f, 1.0f);
    double wn = fmin(norm2(w, n), 10.0), an = norm2(dir, n);
    double trust = (wn == 0 || an == 0) ? 1.0 : wn / an;
    for (size_t i = 0; i < n; i++)
        w[i] -= (float)(lr * trust * dir[i]);
}

double optim_step(optim_state *s, float *params, float *grad, long step)
{
    const optim_config *c = &s->cfg;
    const double gnorm = norm2(grad, s->n);
    if (c->clip > 0 && gnorm > c->clip)
        for (size_t i = 0; i < s->n; i++)
            grad[i] *= (float)(c->clip / gnorm);
    const double lr = optim_lr(c, step);
    if (c->kind == OPTIM_ADAM) {
        const float bc1 = (float)(1 - pow(c->beta1, step + 1)), bc2 = (float)(1 - pow(c->beta2, step + 1));
        for (size_t i = 0; i < s->n; i++)
            params[i] -= (float)lr * vapo_adam_direction(grad[i], &s->m[i], &s->v[i], (float)c->beta1,
                                                         (float)c->beta2, (float)c->eps, bc1, bc2);
    } else {
        float *dir = grad; /* reuse: each tensor reads its gradient before writing its direction */
        for (int t = 0; t < s->ntensors; t++)
            lamb_tensor(s, params + s->tensors[t].offset, grad + s->tensors[t].offset, s->tensors[t].offset,
                        s->tensors[t].count, lr, dir + s->tensors[t].offset);
    }
    const float decay = (float)fmin(c->ema_decay, (1.0 + step) / (10.0 + step));
    for (size_t i = 0; i < s->n; i++)
        s->ema[i] = vapo_ema(s->ema[i], params[i], decay);
    return gnorm;
}
