/* Batch invariance on the CPU (backend.h, "Batch invariance"): an image's
 * energy and gradient are bit-identical whatever the batch size (1..64), its
 * position in the batch, the other images in it and the thread count; and so
 * is a sample pushed through the ODE alone or with others. Checked on the
 * bundled model, which has every layer kind the presets use: 3x3 and 1x1
 * convolutions on 28x28, 14x14 and 7x7, pooling, the level heads' dense
 * layers, the global head and the anchor. Comparisons are memcmp: no
 * tolerance. */
#include <string.h>

#include "testutil.h"
#include "vapo/error.h"
#include "vapo/model.h"

#define MODEL "../models/fmnist-small.safetensors"
#define POOL 64

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
static void check_energy_grad(void)
{
    vapo_backend *one = vapo_backend_cpu(1);
    vapo_model *m1 = vapo_model_load(MODEL, one);
    CHECK(m1 != NULL, "load %s: %s", MODEL, vapo_last_error());
    if (!m1)
        return;
    const int d = (int)vapo_net_input_size(m1->net);
    float *x = inputs(m1, d), *g1 = malloc(sizeof(float) * POOL * d), phi1[POOL];
    for (int i = 0; i < POOL; i++)
        CHECK(!vapo_model_energy_grad(m1, 1, x + (size_t)i * d, &phi1[i], g1 + (size_t)i * d), "solo %d", i);
    vapo_model_free(m1);
    one->destroy(one);

    vapo_backend *two = vapo_backend_cpu(2);
    vapo_model *m = vapo_model_load(MODEL, two);
    check_batches(m, d, x, phi1, g1);
    vapo_model_free(m);
    two->destroy(two);
    free(x), free(g1);
}

/* Samples 0..3 of a seed solved together (rows join and leave the batch as
 * their adaptive steps differ) and each alone: the same floats. */
static void check_samples(void)
{
    vapo_backend *be = vapo_backend_cpu(2);
    vapo_model *m = vapo_model_load(MODEL, be);
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

int main(void)
{
    check_energy_grad();
    check_samples();
    return test_finish("test_batch_invariance");
}
