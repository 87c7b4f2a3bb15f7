/* Batch invariance on the CPU (backend.h, "Batch invariance"): an image's
 * energy and gradient are bit-identical whatever the batch size (1..64), its
 * position in the batch, the other images in it and the thread count; and so
 * is a sample pushed through the ODE alone or with others. Checked on the
 * bundled model, which has every layer kind the presets use: 3x3 and 1x1
 * convolutions on 28x28, 14x14 and 7x7, pooling, the level heads' dense
 * layers, the global head and the anchor; energies, gradients and samples
 * also on a fmnist-unet with random weights (skip concatenations,
 * upsampling, the -k/2 |x - f(x)|^2 energy). And the sampler pool: rows of
 * every solver and energy rows, joining while others run and stepped in
 * random chunks, end bit-identical to each row alone. Comparisons are
 * memcmp: no tolerance. */
#include <string.h>

#include "testutil.h"
#include "vapo/error.h"
#include "vapo/model.h"
#include "vapo/ode_batch.h"

#define MODEL "../models/fmnist-small.safetensors"
#define POOL 64

/* The bundled model, or a fmnist-unet with seeded random weights and active
 * blocks (the same weights on every open). */
static vapo_model *open_model(const char *name, vapo_backend *be)
{
    if (strcmp(name, "fmnist-unet"))
        return vapo_model_load(name, be);
    vapo_arch a;
    vapo_arch_preset(name, &a);
    vapo_net *net = vapo_net_create(be, &a);
    if (!net || vapo_net_init(net, 5) || vapo_net_set_scales(net, 0.3f)) {
        vapo_net_free(net);
        return NULL;
    }
    const vapo_loss_config loss = vapo_loss_config_default();
    return vapo_model_wrap(net, &loss);
}

static int same_bits(const float *a, const float *b, size_t n) { return memcmp(a, b, sizeof(float) * n) == 0; }

/* 64 inputs: half noise as sampling starts from, half near-images (noise
 * squashed into [-1, 1]) as /energy scores. */
static float *inputs(const vapo_model *m, int d)
{
    float *x = malloc(sizeof(float) * POOL * d);
    vapo_model_noise(m, 99, 0, POOL, x);
    for (size_t i = (size_t)POOL / 2 * d; i < (size_t)POOL * d; i++)
        x[i] = tanhf(x[i]);
    return x;
}

/* The sizes whose gradients are checked too (a backward pass costs twice a
 * forward one): small ones, the block edges of 8 and 16, and the full pool. */
static int is_grad_size(int b) { return b <= 5 || b == 7 || b == 8 || b == 9 || b == 16 || b == 17 || b == 33 || b == 64; }

/* Energies of batches of every size 1..64, each a window of the pool starting at an
 * offset that moves with the size, so each image is seen at many positions
 * and with many neighbours; every row must match its image's solo values. */
static void check_batches(vapo_model *m, int d, const float *x, const float *phi1, const float *g1)
{
    float *bx = malloc(sizeof(float) * POOL * d), *bg = malloc(sizeof(float) * POOL * d);
    float phi[POOL], phi_only[POOL];
    int bad_phi = 0, bad_grad = 0, bad_energy = 0;
    for (int b = 1; b <= POOL; b++) {
        const int off = (b * 37) % POOL, grad = is_grad_size(b);
        for (int r = 0; r < b; r++)
            memcpy(bx + (size_t)r * d, x + (size_t)((off + r) % POOL) * d, sizeof(float) * d);
        CHECK(!vapo_model_energy(m, b, bx, phi_only), "energy batch %d: %s", b, vapo_last_error());
        CHECK(!grad || !vapo_model_energy_grad(m, b, bx, phi, bg), "batch %d: %s", b, vapo_last_error());
        for (int r = 0; r < b; r++) {
            const int i = (off + r) % POOL;
            if (!same_bits(&phi_only[r], &phi1[i], 1) && bad_energy++ < 3)
                fprintf(stderr, "  batch %d row %d (image %d): phi %.9g alone %.9g\n", b, r, i, phi_only[r], phi1[i]);
            if (grad && !same_bits(&phi[r], &phi1[i], 1) && bad_phi++ < 3)
                fprintf(stderr, "  batch %d row %d (image %d): phi of the gradient pass differs\n", b, r, i);
            if (grad && !same_bits(bg + (size_t)r * d, g1 + (size_t)i * d, d) && bad_grad++ < 3)
                fprintf(stderr, "  batch %d row %d (image %d): gradient differs\n", b, r, i);
        }
    }
    CHECK(!bad_phi && !bad_grad && !bad_energy, "rows that differ from the image alone: %d energies, %d gradients, "
          "%d forward-only energies", bad_phi, bad_grad, bad_energy);
    free(bx), free(bg);
}

/* The solo reference with one thread, the batches with two: the thread
 * count must not matter either. */
static void check_energy_grad(const char *name)
{
    vapo_backend *one = vapo_backend_cpu(1);
    vapo_model *m1 = open_model(name, one);
    CHECK(m1 != NULL, "open %s: %s", name, vapo_last_error());
    if (!m1)
        return;
    const int d = (int)vapo_net_input_size(m1->net);
    float *x = inputs(m1, d), *g1 = malloc(sizeof(float) * POOL * d), phi1[POOL];
    for (int i = 0; i < POOL; i++)
        CHECK(!vapo_model_energy_grad(m1, 1, x + (size_t)i * d, &phi1[i], g1 + (size_t)i * d), "solo %d", i);
    vapo_model_free(m1);
    one->destroy(one);

    vapo_backend *two = vapo_backend_cpu(2);
    vapo_model *m = open_model(name, two);
    check_batches(m, d, x, phi1, g1);
    vapo_model_free(m);
    two->destroy(two);
    free(x), free(g1);
}

/* Samples 0..3 of a seed solved together (rows join and leave the batch as
 * their adaptive steps differ) and each alone: the same floats. */
static void check_samples(const char *name)
{
    vapo_backend *be = vapo_backend_cpu(2);
    vapo_model *m = open_model(name, be);
    if (!m)
        return;
    enum { N = 4 };
    const int d = (int)vapo_net_input_size(m->net);
    vapo_ode_config cfg = m->sampling;
    cfg.rtol = cfg.atol = 1e-2; /* still adaptive: rows accept and reject steps of their own */
    float *together = malloc(sizeof(float) * N * d), *alone = malloc(sizeof(float) * d);
    int nfe[N], nfe1;
    vapo_model_noise(m, 7, 0, N, together);
    CHECK(!vapo_ode_solve(&cfg, N, d, together, vapo_model_field, m, nfe, NULL, NULL), "%s", vapo_last_error());
    for (int k = 0; k < N; k++) {
        vapo_model_noise(m, 7, k, 1, alone);
        CHECK(!vapo_ode_solve(&cfg, 1, d, alone, vapo_model_field, m, &nfe1, NULL, NULL), "%s", vapo_last_error());
        CHECK(nfe1 == nfe[k] && same_bits(alone, together + (size_t)k * d, d),
              "sample %d alone (NFE %d) differs from it in a batch of %d (NFE %d)", k, nfe1, N, nfe[k]);
    }
    free(together), free(alone);
    vapo_model_free(m);
    be->destroy(be);
}

/* ---- the sampler pool: rows alone vs mixed, added late, stepped in chunks ---- */

enum { MINE = 6, OTHERS = 6, SCORES = 4 };

static unsigned lcg(unsigned *s) { return *s = *s * 1103515245u + 12345u, (*s >> 16) & 0x7fff; }

/* Row i of the pool's mix: seeds 7's samples 0..5 (rk45), other seeds on
 * every solver, and energy-only rows. */
static vapo_ode_config mix_config(const vapo_model *m, int i)
{
    vapo_ode_config c = m->sampling;
    c.rtol = c.atol = 1e-2;
    if (i >= MINE) {
        const vapo_ode_method methods[] = {VAPO_ODE_EULER, VAPO_ODE_HEUN, VAPO_ODE_RK4, VAPO_ODE_RK45};
        c.method = methods[i % 4];
        c.steps = 5 + i;
        c.t_end = i % 2 ? 1.0 : c.t_end;
    }
    return c;
}

/* Each row alone in a pool of its own, stepped whole. */
static void solo(vapo_model *m, int i, const float *x0, float *x, float *phi, int *nfe)
{
    vapo_ode_config c = mix_config(m, i);
    memcpy(x, x0, sizeof(float) * vapo_net_input_size(m->net));
    CHECK(!vapo_model_sample(m, &c, 1, x, phi, nfe, NULL, NULL), "solo %d: %s", i, vapo_last_error());
}

/* All rows in one pool: the others join after a few steps, energy rows
 * arrive mid-way, and each step evaluates a random subset of the waiting
 * rows (as the server's chunks do). Same floats as alone. */
static void check_pool(void)
{
    vapo_backend *be = vapo_backend_cpu(2);
    vapo_model *m = vapo_model_load(MODEL, be);
    if (!m)
        return;
    const int d = (int)vapo_net_input_size(m->net), n = MINE + OTHERS;
    float *x0 = malloc(sizeof(float) * (n + SCORES) * d), *ref = malloc(sizeof(float) * n * d);
    float *got = malloc(sizeof(float) * d), ref_phi[MINE + OTHERS + SCORES];
    int ref_nfe[MINE + OTHERS], ids[MINE + OTHERS + SCORES], pick[MINE + OTHERS + SCORES];
    vapo_model_noise(m, 7, 0, MINE, x0);
    vapo_model_noise(m, 31, 0, OTHERS, x0 + (size_t)MINE * d);
    vapo_model_noise(m, 5, 0, SCORES, x0 + (size_t)n * d);
    for (size_t i = (size_t)n * d; i < (size_t)(n + SCORES) * d; i++)
        x0[i] = tanhf(x0[i]);
    for (int i = 0; i < n; i++)
        solo(m, i, x0 + (size_t)i * d, ref + (size_t)i * d, &ref_phi[i], &ref_nfe[i]);
    CHECK(!vapo_model_energy(m, SCORES, x0 + (size_t)n * d, ref_phi + n), "%s", vapo_last_error());

    vapo_pool *p = vapo_model_pool(m);
    unsigned seed = 1;
    int steps = 0, added = 0, bad = 0;
    for (int i = 0; i < n + SCORES; i++)
        ids[i] = -1;
    for (;;) {
        if (steps == 0 || steps == 3 || steps == 9) /* rows join while others run */
            for (int stop = steps == 0 ? MINE : steps == 3 ? n : n + SCORES; added < stop; added++) {
                vapo_ode_config c = mix_config(m, added);
                ids[added] = vapo_pool_add(p, added < n ? &c : NULL, x0 + (size_t)added * d, VAPO_POOL_ENERGY);
            }
        int k = 0;
        for (int i = 0; i < added; i++)
            if (vapo_pool_wants(p, ids[i]) && lcg(&seed) % 3 != 0)
                pick[k++] = ids[i];
        if (k == 0 && vapo_pool_waiting(p) == 0 && added == n + SCORES)
            break;
        CHECK(vapo_pool_step(p, pick, k) == k, "step: %s", vapo_last_error());
        steps++;
    }
    for (int i = 0; i < n + SCORES; i++) {
        vapo_pool_result res;
        CHECK(!vapo_pool_take(p, ids[i], got, &res), "take %d: %s", i, vapo_last_error());
        const int same = (i >= n || (same_bits(got, ref + (size_t)i * d, d) && res.nfe == ref_nfe[i])) &&
                         same_bits(&res.phi, &ref_phi[i], 1);
        if (!same && bad++ < 3)
            fprintf(stderr, "  pool row %d: NFE %d (alone %d), phi %.9g (alone %.9g)\n", i, res.nfe,
                    i < n ? ref_nfe[i] : 0, res.phi, ref_phi[i]);
    }
    CHECK(!bad, "%d of %d pool rows differ from the same row alone (%d steps)", bad, n + SCORES, steps);
    vapo_pool_free(p);
    free(x0), free(ref), free(got);
    vapo_model_free(m);
    be->destroy(be);
}

int main(void)
{
    check_energy_grad(MODEL);
    check_samples(MODEL);
    check_energy_grad("fmnist-unet");
    check_samples("fmnist-unet");
    check_pool();
    return test_finish("test_batch_invariance");
}
