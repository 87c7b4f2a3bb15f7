/* Whole-network checks on the CPU: parameter counts of the presets, the JSON
 * form of the architecture, the four
 * passes of Phi against finite differences (tiny and tiny2d), and the
 * consistency of backward and tangent. Tolerances as in test_layers.c. */
#include <string.h>

#include <jansson.h>

#include "testutil.h"
#include "vapo/error.h"
#include "vapo/net.h"

#define H 3e-3
#define TOL 3e-3

static void check_counts(void)
{
    /* VAPO-MATH.md section 7 quotes ~30.7 M (cifar10) and ~51.4 M (celeba64). */
    struct { const char *preset; size_t want; } cases[] = {
        {"fmnist-small", 167234}, {"cifar10", 30711170}, {"celeba64", 51362690}, {"fmnist-unet", 416964}};
    vapo_backend *be = vapo_backend_cpu(0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vapo_arch a;
        CHECK(!vapo_arch_preset(cases[i].preset, &a), "preset %s: %s", cases[i].preset, vapo_last_error());
        vapo_net *n = vapo_net_create(be, &a);
        CHECK(n && vapo_net_param_count(n) == cases[i].want, "%s: %zu parameters, expected %zu", cases[i].preset,
              n ? vapo_net_param_count(n) : 0, cases[i].want);
        printf("  %-14s %zu parameters\n", cases[i].preset, n ? vapo_net_param_count(n) : 0);
        vapo_net_free(n);
    }
    vapo_arch a;
    CHECK(vapo_arch_preset("nope", &a) && strstr(vapo_last_error(), "fmnist-small"), "unknown preset message: %s",
          vapo_last_error());
    be->destroy(be);
}

/* The architecture's JSON form: quadratic and multiscale_head round-trip, are
 * optional (0 in checkpoints from before them) and are checked. */
static void check_arch_json(void)
{
    vapo_arch a, b;
    vapo_arch_preset("fmnist-small", &a);
    a.quadratic = 4.5f, a.multiscale_head = 1;
    json_t *j = vapo_arch_to_json(&a);
    CHECK(!vapo_arch_from_json(j, &b) && b.quadratic == 4.5f && b.widths[2] == 64, "round trip: %s", vapo_last_error());
    json_object_del(j, "quadratic");
    CHECK(!vapo_arch_from_json(j, &b) && b.quadratic == 0.0f, "quadratic absent: %s", vapo_last_error());
    json_object_set_new(j, "quadratic", json_real(-1.0));
    CHECK(vapo_arch_from_json(j, &b) && strstr(vapo_last_error(), "quadratic"), "negative quadratic accepted");
    json_object_set_new(j, "quadratic", json_string("big"));
    CHECK(vapo_arch_from_json(j, &b) && strstr(vapo_last_error(), "architecture"), "string quadratic accepted");
    json_object_set_new(j, "quadratic", json_real(1.0));
    CHECK(!vapo_arch_from_json(j, &b) && b.multiscale_head == 1, "multiscale_head round trip: %s", vapo_last_error());
    json_object_del(j, "multiscale_head");
    CHECK(!vapo_arch_from_json(j, &b) && b.multiscale_head == 0, "multiscale_head absent: %s", vapo_last_error());
    json_object_set_new(j, "multiscale_head", json_string("yes"));
    CHECK(vapo_arch_from_json(j, &b) && strstr(vapo_last_error(), "architecture"), "string multiscale_head accepted");
    json_object_set_new(j, "multiscale_head", json_true());
    json_object_set_new(j, "anchor", json_true());
    CHECK(!vapo_arch_from_json(j, &b) && b.anchor == 1, "anchor round trip: %s", vapo_last_error());
    json_object_set_new(j, "quadratic", json_real(0.0));
    CHECK(vapo_arch_from_json(j, &b) && strstr(vapo_last_error(), "anchor"), "anchor without a quadratic accepted");
    json_decref(j);
    /* the U-Net: "unet" only in its own metadata, and no heads on it */
    CHECK(b.unet == 0 && !json_object_get(j = vapo_arch_to_json(&b), "unet"), "unet written for a WRN");
    json_decref(j);
    vapo_arch_preset("fmnist-unet", &a);
    j = vapo_arch_to_json(&a);
    CHECK(!vapo_arch_from_json(j, &b) && b.unet == 1 && b.quadratic == a.quadratic, "unet round trip: %s",
          vapo_last_error());
    json_object_set_new(j, "anchor", json_true());
    CHECK(vapo_arch_from_json(j, &b) && strstr(vapo_last_error(), "U-Net"), "unet with an anchor accepted");
    json_object_set_new(j, "anchor", json_false());
    json_object_set_new(j, "input", json_pack("[i,i,i]", 1, 30, 28));
    CHECK(vapo_arch_from_json(j, &b) && strstr(vapo_last_error(), "divisible"), "unet on 30x28 accepted");
    json_decref(j);
}

/* A random direction with the norm of a 100-dimensional normal vector, so the
 * finite-difference step stays small however many parameters there are. */
static void random_direction(float *dir, size_t n, uint64_t seed)
{
    fill_normal(dir, n, seed, 1.0f);
    double norm = sqrt(dotd(dir, dir, n)), want = sqrt(n < 100 ? (double)n : 100.0);
    for (size_t i = 0; i < n; i++)
        dir[i] = (float)(dir[i] * want / norm);
}

static double sum_phi(vapo_net *n, int batch, const float *x, float *phi)
{
    vapo_net_forward(n, batch, x, phi);
    double s = 0;
    for (int b = 0; b < batch; b++)
        s += phi[b];
    return s;
}

/* S(theta) = sum_b phibar_b Phi_b + phidotbar_b (grad Phi_b . u_b) */
static double dual_objective(vapo_net *n, int batch, const float *x, const float *u, const float *pb,
                             const float *pdb, float *phi, float *phid)
{
    vapo_net_params_changed(n); /* the caller wrote theta through a kept pointer */
    vapo_net_forward(n, batch, x, phi);
    vapo_net_tangent(n, u, phid);
    double s = 0;
    for (int b = 0; b < batch; b++)
        s += (double)pb[b] * phi[b] + (double)pdb[b] * phid[b];
    return s;
}

/* The training step's order (forward, backward, tangent, dual with
 * phidot_bar = 1): with vapo_net_backward_keep the dual pass reads the kept
 * adjoints instead of recomputing them, and grad_x Phi and the parameter
 * gradient are the same bits as without. Three rounds: the first sizes the
 * tape, the next two read it. */
static void check_kept_adjoints(vapo_net *n, int batch, const float *x, const float *u, const float *pb,
                                const char *preset)
{
    const size_t nx = vapo_net_input_size(n) * batch, np = vapo_net_param_count(n);
    float *g0 = malloc(sizeof(float) * nx), *g1 = malloc(sizeof(float) * nx);
    float *d0 = calloc(np, sizeof(float)), *d1 = calloc(np, sizeof(float)), phi[16];
    vapo_net_forward(n, batch, x, phi);
    vapo_net_backward(n, g0);
    vapo_net_tangent(n, u, NULL);
    vapo_net_dual_backward(n, pb, NULL, d0);
    for (int round = 0; round < 3; round++) {
        memset(d1, 0, sizeof(float) * np);
        vapo_net_forward(n, batch, x, phi);
        CHECK(vapo_net_backward_keep(n, g1) == 0, "%s: %s", preset, vapo_last_error());
        vapo_net_tangent(n, u, NULL);
        vapo_net_dual_backward(n, pb, NULL, d1);
        CHECK(!memcmp(g0, g1, sizeof(float) * nx), "%s round %d: grad_x Phi of backward_keep differs", preset, round);
        size_t bad = 0;
        for (size_t i = 0; i < np; i++)
            bad += memcmp(&d0[i], &d1[i], sizeof(float)) != 0;
        CHECK(bad == 0, "%s round %d: %zu of %zu dual gradients differ from the pass without kept adjoints", preset,
              round, bad, np);
    }
    free(g0), free(g1), free(d0), free(d1);
}

/* extras: a head on every level, the anchor and a global head of width 600 (wider
 * than any other tensor of tiny, so its reverse pass sizes the scratch buffers) */
static void check_passes(const char *preset, int batch, float quadratic, int extras, int blocks)
{
    vapo_backend *be = vapo_backend_cpu(0);
    vapo_arch a;
    vapo_arch_preset(preset, &a);
    a.blocks = blocks ? blocks : a.blocks;
    /* The head's ReLU makes S piecewise smooth: a finite difference that
     * crosses a kink is meaningless, so the whole-network check uses a smooth
     * head activation (ReLU's passes are checked in test_layers.c, and the
     * real ReLU head against PyTorch in test_oracle). */
    a.head_act = VAPO_ACT_GELU;
    a.quadratic = quadratic;
    a.multiscale_head = a.anchor = extras;
    a.global_head = extras ? 600 : 0;
    vapo_net *n = vapo_net_create(be, &a);
    CHECK(n != NULL, "%s: %s", preset, vapo_last_error());
    if (!n)
        return;
    const size_t d = vapo_net_input_size(n), np = vapo_net_param_count(n), nx = d * batch;
    float *theta = vapo_net_params(n);
    fill_normal(theta, np, 5, 0.4f); /* random gains, biases and non-zero ReZero scales */
    float *x = malloc(sizeof(float) * nx), *u = malloc(sizeof(float) * nx), *g = malloc(sizeof(float) * nx);
    float *dir = malloc(sizeof(float) * (nx > np ? nx : np)), *xs = malloc(sizeof(float) * nx);
    float *grad = calloc(np, sizeof(float)), *save = malloc(sizeof(float) * np);
    float phi[16], phid[16], pb[16], pdb[16];
    fill_normal(x, nx, 6, 1.0f);
    fill_normal(u, nx, 7, 1.0f);
    fill_normal(pb, batch, 8, 1.0f);
    fill_normal(pdb, batch, 9, 1.0f);

    /* backward: grad_x sum Phi against a central difference */
    vapo_net_forward(n, batch, x, phi);
    vapo_net_backward(n, g);
    random_direction(dir, nx, 10);
    for (size_t i = 0; i < nx; i++)
        xs[i] = x[i] + (float)H * dir[i];
    double sp = sum_phi(n, batch, xs, phi);
    for (size_t i = 0; i < nx; i++)
        xs[i] = x[i] - (float)H * dir[i];
    double fd = (sp - sum_phi(n, batch, xs, phi)) / (2 * H), an = dotd(g, dir, nx);
    CHECK(fabs(fd - an) <= TOL * (fabs(fd) + 1), "%s backward: analytic %.7g, finite difference %.7g", preset, an, fd);

    /* tangent equals grad . u per sample */
    vapo_net_forward(n, batch, x, phi);
    vapo_net_tangent(n, u, phid);
    for (int b = 0; b < batch; b++) {
        double want = dotd(g + b * d, u + b * d, d);
        CHECK(fabs(phid[b] - want) <= 1e-4 * (fabs(want) + 1), "%s tangent sample %d: %.7g vs grad.u %.7g", preset, b,
              phid[b], want);
    }

    /* dual backward: d S / d theta along a random direction and along single
     * coordinates of every parameter tensor */
    vapo_net_dual_backward(n, pb, pdb, grad);
    memcpy(save, theta, sizeof(float) * np);
    random_direction(dir, np, 11);
    for (size_t i = 0; i < np; i++)
        theta[i] = save[i] + (float)H * dir[i];
    sp = dual_objective(n, batch, x, u, pb, pdb, phi, phid);
    for (size_t i = 0; i < np; i++)
        theta[i] = save[i] - (float)H * dir[i];
    fd = (sp - dual_objective(n, batch, x, u, pb, pdb, phi, phid)) / (2 * H);
    memcpy(theta, save, sizeof(float) * np);
    an = dotd(grad, dir, np);
    CHECK(fabs(fd - an) <= TOL * (fabs(fd) + 1), "%s dual, random direction: analytic %.7g, finite difference %.7g",
          preset, an, fd);

    const vapo_param *list;
    int count = vapo_net_params_list(n, &list);
    for (int t = 0; t < count; t++) {
        size_t i = list[t].offset + list[t].count / 2;
        theta[i] = save[i] + (float)H;
        sp = dual_objective(n, batch, x, u, pb, pdb, phi, phid);
        theta[i] = save[i] - (float)H;
        fd = (sp - dual_objective(n, batch, x, u, pb, pdb, phi, phid)) / (2 * H);
        theta[i] = save[i];
        CHECK(fabs(fd - grad[i]) <= 5 * TOL * (fabs(fd) + 1), "%s dual d/d %s[%zu]: analytic %.7g, finite difference %.7g",
              preset, list[t].name, list[t].count / 2, grad[i], fd);
    }
    printf("  %-9s batch %d, blocks %d, quadratic %g%s: backward, tangent and dual agree with finite differences "
           "(%d tensors)\n", preset, batch, a.blocks, quadratic, extras ? ", anchor, level heads, global head" : "", count);
    check_kept_adjoints(n, batch, x, u, pb, preset);
    free(x), free(u), free(g), free(dir), free(xs), free(grad), free(save);
    vapo_net_free(n);
    be->destroy(be);
}

/* vapo-train's network on the tiny preset: quadratic, anchor, level heads, global head */
static vapo_arch tiny_with_extras(void)
{
    vapo_arch a;
    vapo_arch_preset("tiny", &a);
    a.quadratic = 1.5f, a.multiscale_head = a.anchor = 1, a.global_head = 600;
    return a;
}

/* The buffers only grow: a batch that shrinks (the sampler's, as trajectories
 * finish) and grows again reuses them with a new layout, and every sample's
 * Phi and grad_x Phi are those of the first pass. */
static void check_batch_changes(void)
{
    vapo_backend *be = vapo_backend_cpu(0);
    const vapo_arch a = tiny_with_extras();
    vapo_net *n = vapo_net_create(be, &a);
    const size_t d = vapo_net_input_size(n);
    fill_normal(vapo_net_params(n), vapo_net_param_count(n), 5, 0.4f);
    enum { MAX = 7 };
    float *x = malloc(sizeof(float) * d * MAX), *g0 = malloc(sizeof(float) * d * MAX);
    float *g = malloc(sizeof(float) * d * MAX), phi0[MAX], phi[MAX];
    fill_normal(x, d * MAX, 11, 1.0f);
    vapo_net_forward(n, 5, x, phi0);
    vapo_net_backward(n, g0);
    const int batches[] = {2, 5, 1, 7, 3};
    double worst = 0;
    for (int k = 0; k < 5; k++) {
        const int b = batches[k];
        CHECK(vapo_net_forward(n, b, x, phi) == 0 && vapo_net_backward(n, g) == 0, "batch %d runs", b);
        for (int i = 0; i < (b < 5 ? b : 5); i++) {
            worst = fmax(worst, fabs(phi[i] - phi0[i]) / (1 + fabs(phi0[i])));
            for (size_t j = 0; j < d; j++)
                worst = fmax(worst, fabs(g[i * d + j] - g0[i * d + j]) / (1 + fabs(g0[i * d + j])));
        }
    }
    CHECK(worst < 1e-5, "per-sample Phi and grad independent of the batch sequence (worst %.2g)", worst);
    printf("  batch 5 -> 2 -> 5 -> 1 -> 7 -> 3: every sample's Phi and grad unchanged (worst %.2g)\n", worst);
    free(x), free(g0), free(g);
    vapo_net_free(n);
    be->destroy(be);
}

/* Phi and grad_x Phi of a fresh net with parameters p, on backend be, or on a
 * backend of its own (nothing kept from other nets) when be is NULL. */
static void fresh_pass(vapo_backend *be, const vapo_arch *a, const float *p, int b, const float *x, float *phi,
                       float *g)
{
    vapo_backend *own = be ? NULL : vapo_backend_cpu(0);
    vapo_net *n = vapo_net_create(be ? be : own, a);
    memcpy(vapo_net_params(n), p, sizeof(float) * vapo_net_param_count(n));
    vapo_net_forward(n, b, x, phi);
    vapo_net_backward(n, g);
    vapo_net_free(n);
    if (own)
        own->destroy(own);
}

/* The net keeps its normalised weights, and the CPU backend its flipped
 * kernels, while the parameters keep their version: after a change through
 * vapo_net_params, or through a kept pointer and vapo_net_params_changed, the
 * passes are those of a fresh net with the new parameters on a backend of its
 * own, bit for bit; so are those of fresh nets sharing the backend (each
 * allocated where the last one was freed). */
static void check_weight_cache(void)
{
    vapo_backend *be = vapo_backend_cpu(0);
    const vapo_arch a = tiny_with_extras();
    vapo_net *n = vapo_net_create(be, &a);
    const size_t d = vapo_net_input_size(n), np = vapo_net_param_count(n), bytes = sizeof(float) * d * 3;
    float *x = malloc(bytes), *g = malloc(bytes), *gf = malloc(bytes), *gs = malloc(bytes);
    float *p = malloc(sizeof(float) * np), phi[3], phif[3], phis[3];
    fill_normal(x, d * 3, 12, 1.0f);
    fill_normal(p, np, 13, 0.4f);
    memcpy(vapo_net_params(n), p, sizeof(float) * np);
    float *theta = vapo_net_params(n);
    for (int k = 0; k < 4; k++) {
        vapo_net_forward(n, 3, x, phi);
        vapo_net_backward(n, g);
        fresh_pass(NULL, &a, p, 3, x, phif, gf);
        fresh_pass(be, &a, p, 3, x, phis, gs);
        CHECK(!memcmp(phi, phif, sizeof phi) && !memcmp(g, gf, bytes), "change %d: Phi and grad differ from a fresh "
              "net's", k);
        CHECK(!memcmp(phis, phif, sizeof phi) && !memcmp(gs, gf, bytes), "change %d: a fresh net on the shared "
              "backend differs from one on its own", k);
        for (size_t i = 0; i < np; i++) /* every tensor: gains, directions, biases, scales, the anchor */
            p[i] *= 1.25f;
        if (k % 2)
            memcpy(vapo_net_params(n), p, sizeof(float) * np);
        else {
            memcpy(theta, p, sizeof(float) * np);
            vapo_net_params_changed(n);
        }
    }
    printf("  kept weights: after each change the passes equal a fresh net's\n");
    free(x), free(g), free(gf), free(gs), free(p);
    vapo_net_free(n);
    be->destroy(be);
}

int main(void)
{
    check_counts();
    check_arch_json();
    check_passes("tiny", 3, 0.0f, 0, 0);
    check_passes("tiny2d", 5, 0.0f, 0, 0);
    check_passes("tiny", 3, 1.5f, 0, 0); /* the fixed -k/2 |x|^2 term: in Phi, grad and tangent, not in the dual */
    check_passes("tiny", 3, 1.5f, 1, 0); /* vapo-train's network: -k/2 |x - mu|^2, level heads, global head */
    check_passes("tiny-unet", 3, 1.5f, 0, 0); /* -k/2 |x - f(x)|^2: skip concatenation, upsampling */
    check_passes("tiny-unet", 2, 0.7f, 0, 2); /* decoder blocks after a level's first */
    check_batch_changes();
    check_weight_cache();
    return test_finish("test_net");
}
