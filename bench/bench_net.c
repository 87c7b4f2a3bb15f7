/* Benchmark of the energy network: forward (Phi), forward + backward
 * (grad_x Phi, one ODE function evaluation) and the full exact second-order
 * training gradient (forward, backward, tangent, dual backward), for a preset
 * and batch size, on a backend (cpu by default; cuda, auto). Prints
 * milliseconds per call (median of repeats) and a RESULT line.
 *   bench_net [preset] [batch] [repeats] [threads] [device] */
#include <stdio.h>
#include <stdlib.h>

#include "bench_util.h"
#include "vapo/error.h"
#include "vapo/loss.h"
#include "vapo/rng.h"

enum { MAX_REPS = 64 };

typedef struct {
    vapo_net *net;
    vapo_backend *be;
    int batch;
    float *x_host;        /* the batch on the host, for vapo_loss_step */
    float *x, *g, *phi;   /* backend */
    float *grad;          /* backend, the parameter gradient */
    vapo_loss_work *work;
} bench;

/* Seconds of one round of the three passes, each ended by a device sync. */
static int round_times(bench *b, const vapo_loss_config *cfg, int r, double out[3])
{
    vapo_loss_terms terms;
    double t0 = bench_now();
    int rc = vapo_net_forward(b->net, b->batch, b->x, b->phi);
    b->be->sync(b->be);
    double t1 = bench_now();
    rc = rc || vapo_net_backward(b->net, b->g);
    b->be->sync(b->be);
    double t2 = bench_now();
    rc = rc || vapo_loss_step(b->net, b->work, cfg, b->x_host, 1, r, b->grad, &terms);
    b->be->sync(b->be);
    double t3 = bench_now();
    out[0] = t1 - t0, out[1] = t2 - t0, out[2] = t3 - t2;
    return rc;
}

static int setup(bench *b, const char *preset, int batch, vapo_backend *be)
{
    vapo_arch a;
    b->be = be, b->batch = batch;
    if (vapo_arch_preset(preset, &a) || !(b->net = vapo_net_create(be, &a)) || vapo_net_init(b->net, 1) ||
        vapo_net_set_scales(b->net, 0.1f))
        return -1;
    const size_t n = vapo_net_input_size(b->net) * batch, np = vapo_net_param_count(b->net);
    b->x_host = malloc(sizeof(float) * n);
    b->x = be->alloc(be, sizeof(float) * n), b->g = be->alloc(be, sizeof(float) * n);
    b->phi = be->alloc(be, sizeof(float) * batch), b->grad = be->alloc(be, sizeof(float) * np);
    b->work = vapo_loss_work_create(b->net, batch);
    if (!b->x_host || !b->x || !b->g || !b->phi || !b->grad || !b->work)
        return vapo_fail("out of memory for batch %d", batch);
    vapo_rng_normal(1, 2, 0, n, b->x_host);
    be->upload(be, b->x, b->x_host, sizeof(float) * n);
    return 0;
}

static void teardown(bench *b)
{
    vapo_loss_work_free(b->work);
    free(b->x_host);
    if (b->be) /* backends' free takes NULL */
        b->be->free(b->be, b->x), b->be->free(b->be, b->g), b->be->free(b->be, b->phi), b->be->free(b->be, b->grad);
    vapo_net_free(b->net);
}

int main(int argc, char **argv)
{
    const char *preset = argc > 1 ? argv[1] : "fmnist-small", *device = argc > 5 ? argv[5] : "cpu";
    const int batch = argc > 2 ? atoi(argv[2]) : 64, threads = argc > 4 ? atoi(argv[4]) : 0;
    int reps = argc > 3 ? atoi(argv[3]) : 10;
    reps = reps < 1 ? 1 : reps > MAX_REPS ? MAX_REPS : reps;
    vapo_backend *be = bench_backend(device, threads);
    if (!be)
        return 1;
    bench b = {0};
    vapo_loss_config cfg = vapo_loss_config_default();
    double t[3][MAX_REPS], one[3];
    int rc = setup(&b, preset, batch, be);
    for (int r = 0; !rc && r < reps + 1; r++) {
        rc = round_times(&b, &cfg, r, one);
        for (int k = 0; r > 0 && k < 3; k++) /* the first round allocates */
            t[k][r - 1] = one[k];
    }
    if (rc) {
        fprintf(stderr, "bench_net: %s\n", vapo_last_error());
    } else {
        const char *names[3] = {"forward", "forward+backward", "second-order step"};
        double ms[3];
        for (int k = 0; k < 3; k++) {
            ms[k] = 1e3 * bench_median(t[k], reps);
            printf("vapo %-18s %-12s batch %3d: %8.2f ms\n", names[k], preset, batch, ms[k]);
        }
        bench_result("vapo-net", "device=%s preset=%s batch=%d forward_ms=%.3f forward_backward_ms=%.3f step_ms=%.3f",
                     be->name, preset, batch, ms[0], ms[1], ms[2]);
    }
    teardown(&b);
    be->destroy(be);
    return rc ? 1 : 0;
}
