/* One full vapo training step, timed: the exact gradient of the VAPO loss
 * with the pathwise estimator (vapo_loss_step: forward, backward, tangent,
 * dual backward) and the Lamb update with clipping and EMA (optim_step, on
 * the backend), for a preset and batch on a backend. The data is a fixed
 * batch of uniform noise in [-1, 1]: a step's cost does not depend on it, and
 * loading is not what is measured. Prints ms/step (median over the timed
 * steps, each ended by a device sync), peak RSS and a RESULT line; the
 * PyTorch side is bench_train_torch.py.
 *   bench_train_step [preset] [batch] [steps] [device] [threads] [warmup] */
#include <stdio.h>
#include <stdlib.h>

#include "bench_util.h"
#include "trainer/optim.h"
#include "vapo/error.h"
#include "vapo/loss.h"
#include "vapo/rng.h"

typedef struct {
    vapo_backend *be;
    vapo_net *net;
    vapo_loss_work *work;
    vapo_loss_config loss;
    optim_state opt;
    int batch, opt_ready;
    float *xbar; /* host, batch x d */
    float *grad; /* backend, one float per parameter */
    vapo_loss_terms terms;
} trainer;

static int setup(trainer *tr, const char *preset, int batch)
{
    vapo_arch a;
    const optim_config oc = {.kind = OPTIM_LAMB, .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
                             .clip = 1.0, .ema_decay = 0.999}; /* vapo-train's defaults, no warm-up */
    tr->batch = batch;
    tr->loss = vapo_loss_config_default();
    tr->loss.estimator = VAPO_ESTIMATOR_PATHWISE;
    if (vapo_arch_preset(preset, &a) || !(tr->net = vapo_net_create(tr->be, &a)) || vapo_net_init(tr->net, 1) ||
        vapo_net_set_scales(tr->net, 0.1f))
        return -1;
    if (optim_init(&tr->opt, &oc, tr->net, vapo_net_params(tr->net)))
        return -1;
    tr->opt_ready = 1;
    const size_t n = vapo_net_input_size(tr->net) * batch;
    tr->xbar = malloc(sizeof(float) * n);
    tr->grad = tr->be->alloc(tr->be, sizeof(float) * vapo_net_param_count(tr->net));
    tr->work = vapo_loss_work_create(tr->net, batch);
    if (!tr->xbar || !tr->grad || !tr->work)
        return vapo_fail("out of memory for batch %d", batch);
    for (size_t i = 0; i < n; i++)
        tr->xbar[i] = 2.0f * (float)vapo_rng_uniform(1, 7, i) - 1.0f;
    return 0;
}

static void teardown(trainer *tr)
{
    if (tr->opt_ready)
        optim_free(&tr->opt);
    vapo_loss_work_free(tr->work);
    free(tr->xbar);
    if (tr->grad)
        tr->be->free(tr->be, tr->grad);
    vapo_net_free(tr->net);
}

/* One step as vapo-train takes it: zero the gradient, accumulate the loss
 * gradient into it, update. Returns the seconds it took, or -1. */
static double step(trainer *tr, long k)
{
    vapo_backend *be = tr->be;
    const double t0 = bench_now();
    be->zero(be, tr->grad, sizeof(float) * vapo_net_param_count(tr->net));
    if (vapo_loss_step(tr->net, tr->work, &tr->loss, tr->xbar, 1, (uint64_t)k, tr->grad, &tr->terms))
        return -1;
    optim_step(&tr->opt, vapo_net_params(tr->net), tr->grad, k);
    be->sync(be);
    return bench_now() - t0;
}

int main(int argc, char **argv)
{
    const char *preset = argc > 1 ? argv[1] : "fmnist-small", *device = argc > 4 ? argv[4] : "cpu";
    const int batch = argc > 2 ? atoi(argv[2]) : 64, steps = argc > 3 ? atoi(argv[3]) : 10;
    const int threads = argc > 5 ? atoi(argv[5]) : 0, warmup = argc > 6 ? atoi(argv[6]) : 2;
    if (batch < 1 || steps < 1 || warmup < 0) {
        fprintf(stderr, "usage: bench_train_step [preset] [batch] [steps >= 1] [device] [threads] [warmup]\n");
        return 2;
    }
    trainer tr = {.be = bench_backend(device, threads)};
    if (!tr.be)
        return 1;
    double *t = malloc(sizeof(double) * steps), total = 0;
    int rc = setup(&tr, preset, batch);
    for (long k = 0; !rc && k < warmup + steps; k++) { /* warm-up: allocation, cuDNN's per-shape choices */
        const double dt = step(&tr, k);
        rc = dt < 0;
        if (!rc && k >= warmup)
            t[k - warmup] = dt, total += dt;
    }
    if (rc) {
        fprintf(stderr, "bench_train_step: %s\n", vapo_last_error());
    } else {
        const double ms = 1e3 * bench_median(t, steps), rss = bench_peak_rss_mib();
        printf("vapo training step (pathwise, Lamb): %.2f ms/step median, %.3f steps/s (%s, batch %d, %s), "
               "loss %.4g, peak RSS %.0f MiB\n",
               ms, steps / total, preset, batch, tr.be->name, tr.terms.total, rss);
        bench_result("vapo-train", "device=%s preset=%s batch=%d estimator=pathwise steps=%d ms_per_step=%.3f "
                     "steps_per_s=%.4f peak_rss_mib=%.0f loss=%.6g status=ok",
                     tr.be->name, preset, batch, steps, ms, steps / total, rss, tr.terms.total);
    }
    free(t);
    teardown(&tr);
    tr.be->destroy(tr.be);
    return rc ? 1 : 0;
}
