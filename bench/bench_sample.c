/* Sampling benchmark on a checkpoint: grad Phi evaluations per second at a
 * batch size, and RK45 sampling of n images with per-sample step control
 * ("own") and with one step shared by the whole batch (the paper's flattened
 * solve, "shared"), at the same tolerance, on a backend. Prints images/s and
 * mean NFE per image, and a RESULT line per solve.
 *
 * The solver is the sampler pool (vapo_ode_solve_backend, states in backend
 * memory, vapo_model_field_backend as the field) on every backend, as the
 * tools and the server sample. On a device it is timed
 * after one untimed solve of the same noise (module loading, cuDNN handles,
 * scratch buffers and the per-shape algorithm choice are paid once; a
 * long-running sampler has paid them).
 *
 * Each solve also reports its process CPU seconds (cpu_s_per_image, and per
 * image and evaluation): bench/run_cpu_time.sh compares those with
 * bench_sample_torch.py's on a busy machine. NOISE, when given, receives the
 * initial noise (n x d raw float32) so that bench_sample_torch.py --noise
 * solves from the same points, with the same NFE.
 *   bench_sample MODEL [n] [rtol] [threads] [device] [own|shared|both] [NOISE] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "vapo/error.h"
#include "vapo/model.h"
#include "vapo/ode_batch.h"

typedef struct {
    vapo_model *m;
    vapo_backend *be;
    int n, d;
    float *x0;   /* host: the initial noise, n x d */
    float *x;    /* host: a solve's states */
    float *dev;  /* backend: a solve's states */
    int *nfe;    /* host, n */
    double cpu;  /* CPU seconds of the last solve */
} sampler;

/* One solve of the n noises, on the backend's solver; returns its seconds
 * (the images back on the host included), or -1. */
static double solve_once(sampler *s, const vapo_ode_config *cfg)
{
    vapo_backend *be = s->be;
    const size_t bytes = sizeof(float) * s->n * s->d;
    memcpy(s->x, s->x0, bytes);
    const double t0 = bench_now(), c0 = bench_cpu_now();
    be->upload(be, s->dev, s->x, bytes);
    int rc = vapo_ode_solve_backend(cfg, be, s->n, s->d, s->dev, vapo_model_field_backend, s->m, s->nfe, NULL, NULL);
    be->download(be, s->x, s->dev, bytes);
    be->sync(be);
    const double t = bench_now() - t0;
    s->cpu = bench_cpu_now() - c0;
    if (rc)
        fprintf(stderr, "solve: %s\n", vapo_last_error());
    return rc ? -1 : t;
}

static double mean_nfe(const sampler *s)
{
    long long total = 0;
    for (int i = 0; i < s->n; i++)
        total += s->nfe[i];
    return (double)total / s->n;
}

/* Times one solve mode and prints its lines; returns 0 or -1. */
static int bench_solve(sampler *s, const vapo_ode_config *cfg, const char *label, const char *name, int warm)
{
    if (warm && solve_once(s, cfg) < 0)
        return -1;
    const double t = solve_once(s, cfg);
    if (t < 0)
        return -1;
    const double nfe = mean_nfe(s);
    printf("vapo RK45 %-16s %.3f images/s, mean NFE %.1f, %.4f CPU s/image (rtol=atol=%g, T=%g, %d images, %s)\n",
           label, s->n / t, nfe, s->cpu / s->n, cfg->rtol, cfg->t_end, s->n, s->be->name);
    bench_result(name,
                 "device=%s n=%d rtol=%g t_end=%g images_per_s=%.4f mean_nfe=%.2f seconds=%.3f cpu_s_per_image=%.5f "
                 "cpu_ms_per_image_eval=%.4f solver=pool status=ok",
                 s->be->name, s->n, cfg->rtol, cfg->t_end, s->n / t, nfe, t, s->cpu / s->n, 1e3 * s->cpu / s->n / nfe);
    return 0;
}

/* grad Phi of the whole batch, repeated for about 3 s: images/s. */
static double eval_rate(sampler *s)
{
    vapo_backend *be = s->be;
    const size_t bytes = sizeof(float) * s->n * s->d;
    float *x = be->alloc(be, bytes), *g = be->alloc(be, bytes);
    double rate = -1;
    if (!x || !g) {
        vapo_fail("out of memory for %d images", s->n);
        goto done;
    }
    be->upload(be, x, s->x0, bytes);
    if (vapo_model_field_backend(s->m, s->n, x, g)) /* allocate, autotune */
        goto done;
    be->sync(be);
    int evals = 0;
    const double t0 = bench_now();
    while (bench_now() - t0 < 3.0 || evals < 3) {
        if (vapo_model_field_backend(s->m, s->n, x, g))
            goto done;
        be->sync(be);
        evals++;
    }
    rate = evals * s->n / (bench_now() - t0);
done:
    be->free(be, x), be->free(be, g);
    return rate;
}

/* The initial noise as raw float32, for bench_sample_torch.py --noise. */
static int write_noise(const sampler *s, const char *path)
{
    FILE *f = fopen(path, "wb");
    const size_t count = (size_t)s->n * s->d;
    const int ok = f && fwrite(s->x0, sizeof(float), count, f) == count;
    return (f && fclose(f)) || !ok ? vapo_fail("cannot write %s", path) : 0;
}

static int setup(sampler *s, const char *path, int n)
{
    if (!(s->m = vapo_model_load(path, s->be)))
        return -1;
    s->n = n, s->d = (int)vapo_net_input_size(s->m->net);
    const size_t count = (size_t)n * s->d;
    s->x0 = malloc(sizeof(float) * count), s->x = malloc(sizeof(float) * count);
    s->nfe = malloc(sizeof(int) * n);
    s->dev = s->be->alloc(s->be, sizeof(float) * count);
    if (!s->x0 || !s->x || !s->nfe || !s->dev)
        return vapo_fail("out of memory for %d images", n);
    vapo_model_noise(s->m, 1, 0, n, s->x0);
    return 0;
}

static void teardown(sampler *s)
{
    free(s->x0), free(s->x), free(s->nfe);
    if (s->dev)
        s->be->free(s->be, s->dev);
    vapo_model_free(s->m);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_sample MODEL [n] [rtol] [threads] [device] [own|shared|both] [NOISE]\n");
        return 2;
    }
    const int n = argc > 2 ? atoi(argv[2]) : 64, threads = argc > 4 ? atoi(argv[4]) : 0;
    const double tol = argc > 3 ? atof(argv[3]) : 1e-4;
    const char *device = argc > 5 ? argv[5] : "cpu", *modes = argc > 6 ? argv[6] : "both";
    sampler s = {.be = bench_backend(device, threads)};
    if (!s.be)
        return 1;
    int rc = n < 1 ? vapo_fail("n must be >= 1") : setup(&s, argv[1], n);
    if (!rc && argc > 7)
        rc = write_noise(&s, argv[7]);
    const double rate = rc ? -1 : eval_rate(&s);
    rc = rc || rate < 0;
    if (!rc)
        printf("vapo grad-Phi evaluations: %.1f images/s (batch %d, %s)\n", rate, n, s.be->name);
    vapo_ode_config cfg = rc ? vapo_ode_config_default() : s.m->sampling;
    cfg.method = VAPO_ODE_RK45, cfg.rtol = cfg.atol = tol;
    if (!rc && strcmp(modes, "shared"))
        rc = bench_solve(&s, &cfg, "per-sample steps:", "vapo-rk45", bench_on_device(s.be));
    cfg.shared_step = 1;
    if (!rc && strcmp(modes, "own"))
        rc = bench_solve(&s, &cfg, "shared step:", "vapo-rk45-shared", 0);
    if (rc)
        fprintf(stderr, "bench_sample: %s\n", vapo_last_error());
    teardown(&s);
    s.be->destroy(s.be);
    return rc ? 1 : 0;
}
