/* CPU benchmark of the energy network: forward (Phi), forward + backward
 * (grad_x Phi, one ODE function evaluation) and the full exact second-order
 * training gradient (forward, backward, tangent, dual backward), for a preset
 * and batch size. Prints milliseconds per call (median of repeats).
 *   bench_net [preset] [batch] [repeats] [threads] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vapo/loss.h"
#include "vapo/net.h"
#include "vapo/rng.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    const char *preset = argc > 1 ? argv[1] : "fmnist-small";
    const int batch = argc > 2 ? atoi(argv[2]) : 64, reps = argc > 3 ? atoi(argv[3]) : 10;
    const int threads = argc > 4 ? atoi(argv[4]) : 0;
    vapo_backend *be = vapo_backend_cpu(threads);
    vapo_arch a;
    if (vapo_arch_preset(preset, &a))
        return 1;
    vapo_net *net = vapo_net_create(be, &a);
    vapo_net_init(net, 1);
    const vapo_param *list;
    int count = vapo_net_params_list(net, &list);
    float *theta = vapo_net_params(net);
    for (int i = 0; i < count; i++) /* non-zero ReZero scales: every block does real work */
        if (strstr(list[i].name, ".scale"))
            for (size_t j = 0; j < list[i].count; j++)
                theta[list[i].offset + j] = 0.1f;
    const size_t d = vapo_net_input_size(net), n = d * batch, np = vapo_net_param_count(net);
    float *x = malloc(sizeof(float) * n), *g = malloc(sizeof(float) * n), *grad = calloc(np, sizeof(float));
    float *phi = malloc(sizeof(float) * batch);
    vapo_rng_normal(1, 2, 0, n, x);
    vapo_loss_config cfg = vapo_loss_config_default();
    vapo_loss_work *work = vapo_loss_work_create(net, batch);
    vapo_loss_terms terms;
    double t[3][64];
    for (int r = 0; r < reps + 1; r++) {
        double t0 = now();
        vapo_net_forward(net, batch, x, phi);
        double t1 = now();
        vapo_net_backward(net, g);
        double t2 = now();
        vapo_loss_step(net, work, &cfg, x, 1, r, grad, &terms);
        double t3 = now();
        if (r > 0) /* the first round allocates */
            t[0][r - 1] = t1 - t0, t[1][r - 1] = t2 - t0, t[2][r - 1] = t3 - t2;
    }
    const char *names[3] = {"forward", "forward+backward", "second-order step"};
    for (int k = 0; k < 3; k++) {
        qsort(t[k], reps, sizeof(double), cmp);
        printf("vapo %-18s %-12s batch %3d: %8.2f ms\n", names[k], preset, batch, 1e3 * t[k][reps / 2]);
    }
    vapo_loss_work_free(work);
    free(x), free(g), free(grad), free(phi);
    vapo_net_free(net);
    be->destroy(be);
    return 0;
}
