/* The optimizer update of the CPU backend (backend.h, optim_update): global
 * gradient-norm clipping, Lamb or Adam, and the EMA of the weights, over the
 * flat parameter buffer. The CPU reference: read it top to bottom.
 *
 * Sums of squares are double and added in a fixed order that does not depend
 * on the thread count, so a run is bit-reproducible (--resume relies on it). */
#include <math.h>

#include "backend_cpu.h"
#include "vapo/elementwise.h"

/* Loops over fewer elements stay on one thread: Lamb visits every tensor,
 * most of them small, and waking sleeping threads costs more than they save. */
#define SUM_PARTS 64

/* sum x[i]^2 in double: SUM_PARTS contiguous parts (fixed by n alone), each
 * summed serially, then the parts in order */
static double sumsq(const float *x, size_t n)
{
    const size_t parts = n < VAPO_CPU_PARALLEL_MIN ? 1 : SUM_PARTS, len = (n + parts - 1) / parts;
    double part[SUM_PARTS];
    #pragma omp parallel for schedule(static) if (parts > 1)
    for (size_t p = 0; p < parts; p++) {
        const size_t end = (p + 1) * len < n ? (p + 1) * len : n;
        double s = 0.0;
        for (size_t i = p * len; i < end; i++)
            s += (double)x[i] * x[i];
        part[p] = s;
    }
    double total = 0.0;
    for (size_t p = 0; p < parts; p++)
        total += part[p];
    return total;
}

/* g *= factor (the clip; factor 1 leaves g as it is), then the Adam
 * direction of each element into dir */
static void directions(const vapo_optim_hyper *h, float factor, size_t n, float *g, float *m, float *v, float *dir)
{
    #pragma omp parallel for schedule(static) if (n >= VAPO_CPU_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) {
        g[i] *= factor;
        dir[i] = vapo_adam_direction(g[i], &m[i], &v[i], h->beta1, h->beta2, h->eps, h->bc1, h->bc2);
    }
}

/* w -= step * dir, then the EMA of the new weight */
static void apply(size_t n, double step, const float *dir, float *w, float *ema, float decay)
{
    #pragma omp parallel for schedule(static) if (n >= VAPO_CPU_PARALLEL_MIN)
    for (size_t i = 0; i < n; i++) {
        w[i] -= (float)(step * dir[i]);
        ema[i] = vapo_ema(ema[i], w[i], decay);
    }
}

/* Lamb's trust ratio |w| / |dir|, |w| clamped to [0, 10]; 1 when either is 0 */
static double trust_ratio(size_t n, const float *w, const float *dir)
{
    const double wn = fmin(sqrt(sumsq(w, n)), 10.0), dn = sqrt(sumsq(dir, n));
    return wn == 0.0 || dn == 0.0 ? 1.0 : wn / dn;
}

/* One tensor (Lamb) or the whole buffer (Adam), at offset 0 of each array. */
static void update(const vapo_optim_hyper *h, float factor, size_t n, float *w, float *g, float *m, float *v,
                   float *ema, float *dir)
{
    directions(h, factor, n, g, m, v, dir);
    const double step = h->lamb ? (double)h->lr * trust_ratio(n, w, dir) : (double)h->lr;
    apply(n, step, dir, w, ema, h->ema_decay);
}

void cpu_optim_update(vapo_backend *be, const vapo_optim_hyper *h, int ntensors, const size_t *offsets, size_t n,
                      float *params, float *grad, float *m, float *v, float *ema, float *scratch, double *gnorm)
{
    (void)be;
    const double norm = sqrt(sumsq(grad, n));
    *gnorm = norm;
    const float factor = h->clip > 0 && norm > h->clip ? (float)(h->clip / norm) : 1.0f;
    if (!h->lamb) {
        update(h, factor, n, params, grad, m, v, ema, scratch);
        return;
    }
    for (int t = 0; t < ntensors; t++) {
        const size_t o = offsets[t];
        update(h, factor, offsets[t + 1] - o, params + o, grad + o, m + o, v + o, ema + o, scratch + o);
    }
}
