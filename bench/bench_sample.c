/* Sampling benchmark on a checkpoint: grad Phi evaluations per second at a
 * batch size, and RK45 sampling of n images with per-sample step control and
 * with one step shared by the whole batch (the paper's flattened solve), at
 * the same tolerance. Prints images/s and mean NFE per image.
 *   bench_sample MODEL [n] [rtol] [threads] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "vapo/error.h"
#include "vapo/model.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static double solve(vapo_model *m, int n, const vapo_ode_config *cfg, double *mean_nfe)
{
    const int d = (int)vapo_net_input_size(m->net);
    float *x = malloc(sizeof(float) * n * d);
    int *nfe = malloc(sizeof(int) * n);
    vapo_model_noise(m, 1, 0, n, x);
    double t0 = now();
    if (vapo_ode_solve(cfg, n, d, x, vapo_model_field, m, nfe, NULL, NULL))
        fprintf(stderr, "solve: %s\n", vapo_last_error());
    double t = now() - t0;
    long total = 0;
    for (int i = 0; i < n; i++)
        total += nfe[i];
    *mean_nfe = (double)total / n;
    free(x), free(nfe);
    return t;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_sample MODEL [n] [rtol] [threads]\n");
        return 2;
    }
    const int n = argc > 2 ? atoi(argv[2]) : 64, threads = argc > 4 ? atoi(argv[4]) : 0;
    const double tol = argc > 3 ? atof(argv[3]) : 1e-4;
    vapo_backend *be = vapo_backend_cpu(threads);
    vapo_model *m = vapo_model_load(argv[1], be);
    if (!m) {
        fprintf(stderr, "%s\n", vapo_last_error());
        return 1;
    }
    const int d = (int)vapo_net_input_size(m->net);
    float *x = malloc(sizeof(float) * n * d), *g = malloc(sizeof(float) * n * d);
    vapo_model_noise(m, 1, 0, n, x);
    vapo_model_field(m, n, x, g); /* allocate */
    double t0 = now();
    int evals = 0;
    while (now() - t0 < 3.0 || evals < 3)
        vapo_model_field(m, n, x, g), evals++;
    printf("vapo grad-Phi evaluations: %.1f images/s (batch %d)\n", evals * n / (now() - t0), n);
    vapo_ode_config cfg = m->sampling;
    cfg.method = VAPO_ODE_RK45, cfg.rtol = cfg.atol = tol;
    double nfe_own, nfe_shared;
    double t_own = solve(m, n, &cfg, &nfe_own);
    cfg.shared_step = 1;
    double t_shared = solve(m, n, &cfg, &nfe_shared);
    printf("vapo RK45 per-sample steps: %.3f images/s, mean NFE %.1f (rtol=atol=%g, T=%g, %d images)\n", n / t_own,
           nfe_own, tol, cfg.t_end, n);
    printf("vapo RK45 shared step:      %.3f images/s, mean NFE %.1f\n", n / t_shared, nfe_shared);
    free(x), free(g);
    vapo_model_free(m);
    be->destroy(be);
    return 0;
}
