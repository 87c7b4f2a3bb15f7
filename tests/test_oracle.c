/* The whole network and the VAPO loss against an independent autograd
 * implementation (oracle_torch.py, PyTorch in float64): Phi and grad_x Phi at
 * the perturbed points, and for both estimators (score, pathwise) the loss
 * and dL/dtheta for every parameter tensor. Ours come from the loss's host
 * entry points and the network's four passes (train_step_parity checks that
 * vapo_loss_step computes exactly this); the oracle rebuilds the schedule,
 * the innovation and the path velocity from VAPO-MATH.md's formulas. The
 * weights, data, noise and times travel in a safetensors file.
 * Error metric per tensor: relative L2 error |a - b| / |b| against the float64
 * oracle; our float32 engine must stay below 1e-5 (nmse below 1e-10).
 * VAPO_ORACLE_VERBOSE=1 prints the error of every tensor. */
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "vapo/ckpt.h"
#include "vapo/error.h"
#include "vapo/loss.h"
#include "vapo/net.h"

#define MAX_REL 1e-5

static double rel_err(const float *a, const float *b, size_t n) { return sqrt(nmse(a, b, n)); }

/* The oracle's float32 tensor `name` with n values; NULL after a failed check. */
static const float *oracle_values(const vapo_ckpt *ref, const char *name, size_t n)
{
    const vapo_tensor_ref *t = vapo_ckpt_find(ref, name);
    CHECK(t && t->dtype == VAPO_DT_F32, "oracle output lacks a float32 %s", name);
    if (!t || t->dtype != VAPO_DT_F32)
        return NULL;
    size_t count = 1;
    for (int i = 0; i < t->ndim; i++)
        count *= (size_t)t->shape[i];
    CHECK(count == n, "%s: oracle has %zu values, we have %zu", name, count, n);
    return count == n ? t->data : NULL;
}

static void record(const char *name, double e, const char *measure, double *worst)
{
    if (getenv("VAPO_ORACLE_VERBOSE"))
        printf("    %-40s %.3g (%s)\n", name, e, measure);
    if (e > *worst)
        *worst = e;
    CHECK(e < MAX_REL, "%s is off: %s %.3g (limit %.0e)", name, measure, e, MAX_REL);
}

static void compare(const vapo_ckpt *ref, const char *name, const float *ours, size_t n, double *worst)
{
    const float *theirs = oracle_values(ref, name, n);
    if (theirs)
        record(name, rel_err(ours, theirs, n), "relative error", worst);
}

/* The loss is a sum of terms that largely cancel (the Dirichlet against the
 * covariance term, and inside the score covariance Phi against its batch
 * mean), so its error is measured against the size of what was summed: a
 * float rounding of 1e-7 in Phi is 1e-5 of a total that is 1% of that. */
static void compare_loss(const vapo_ckpt *ref, const char *name, double ours, double scale, double *worst)
{
    const float *theirs = oracle_values(ref, name, 1);
    if (theirs)
        record(name, fabs(ours - theirs[0]) / scale, "error of the summed terms' size", worst);
}

typedef struct {
    int batch;
    size_t d, np;
    float *xbar, *z, *x, *v, *g, *u, *grad[2], phi[64];
    double t[64], loss[2], loss_scale[2];
} oracle_case;

/* Data in [-1, 1], noise and times, rounded to what the file carries. */
static void draw_batch(oracle_case *c)
{
    const size_t n = c->d * c->batch;
    fill_normal(c->xbar, n, 77, 1.0f);
    for (size_t i = 0; i < n; i++)
        c->xbar[i] = tanhf(c->xbar[i]);
    vapo_rng_normal(78, 0, 0, n, c->z);
    for (int b = 0; b < c->batch; b++)
        c->t[b] = (float)vapo_rng_uniform(79, 0, b);
}

/* Our loss and theta-gradient for one estimator (host composition). */
static void our_loss(vapo_net *net, const vapo_loss_config *cfg, oracle_case *c, int e)
{
    const int B = c->batch, d = (int)c->d;
    vapo_path_coef coef[64];
    double zx[128];
    float phi_bar[64];
    float *v = cfg->estimator == VAPO_ESTIMATOR_PATHWISE ? c->v : NULL;
    vapo_loss_terms terms;
    vapo_loss_perturb(cfg, B, d, c->xbar, c->t, c->z, c->x, coef, zx, v);
    vapo_net_forward(net, B, c->x, c->phi);
    vapo_net_backward(net, c->g);
    vapo_loss_eval(cfg, B, d, coef, zx, c->phi, c->g, v, &terms, phi_bar, c->u);
    vapo_net_tangent(net, c->u, NULL);
    vapo_net_dual_backward(net, phi_bar, NULL, c->grad[e]);
    c->loss[e] = terms.total;
    /* what the loss sums: its terms, and inside the score covariance each
     * w gc_i Phi_i and its share of the leave-one-out mean (Phi's offset cancels) */
    double summed = fabs(terms.dirichlet) + fabs(terms.covariance) + fabs(terms.spectral);
    for (int b = 0; b < B && !v; b++)
        summed += 2 * fabs(vapo_path_wgc(&coef[b], zx + 2 * b, d) * c->phi[b]) / ((double)B * d);
    c->loss_scale[e] = summed;
}

static int write_input(const char *path, const vapo_arch *a, const vapo_loss_config *cfg, vapo_net *net,
                       const oracle_case *c)
{
    const vapo_param *list;
    const int count = vapo_net_params_list(net, &list), B = c->batch;
    float *theta = vapo_net_params(net), t32[64];
    for (int b = 0; b < B; b++)
        t32[b] = (float)c->t[b];
    vapo_tensor_ref *refs = calloc(count + 3, sizeof *refs);
    for (int i = 0; i < count; i++) {
        refs[i] = (vapo_tensor_ref){.name = list[i].name, .dtype = VAPO_DT_F32, .ndim = list[i].ndim,
                                    .data = theta + list[i].offset};
        for (int k = 0; k < list[i].ndim; k++)
            refs[i].shape[k] = list[i].shape[k];
    }
    const int64_t shape[4] = {B, a->in_c, a->in_h, a->in_w};
    refs[count] = (vapo_tensor_ref){.name = "xbar", .dtype = VAPO_DT_F32, .ndim = 4, .data = c->xbar};
    refs[count + 1] = (vapo_tensor_ref){.name = "z", .dtype = VAPO_DT_F32, .ndim = 4, .data = c->z};
    memcpy(refs[count].shape, shape, sizeof shape), memcpy(refs[count + 1].shape, shape, sizeof shape);
    refs[count + 2] = (vapo_tensor_ref){.name = "t", .dtype = VAPO_DT_F32, .ndim = 1, .shape = {B}, .data = t32};
    json_t *loss = json_pack("{s:f, s:f, s:f, s:f, s:s}", "omega", cfg->omega, "nu", cfg->nu, "eps", cfg->eps,
                             "lambda", cfg->lambda, "innovation_weight",
                             vapo_innovation_weight_name(cfg->weighting));
    json_t *meta = json_pack("{s:o, s:o}", "arch", vapo_arch_to_json(a), "loss", loss);
    int rc = vapo_ckpt_save(path, refs, count + 3, meta);
    json_decref(meta);
    free(refs);
    return rc;
}

/* Moves gains, biases and ReZero scales away from their init, so every
 * parameter's gradient is exercised. */
static void perturb_params(vapo_net *net)
{
    const vapo_param *list;
    const int count = vapo_net_params_list(net, &list);
    float *theta = vapo_net_params(net);
    for (int i = 0; i < count; i++)
        if (strstr(list[i].name, ".v") == NULL) {
            fill_normal(theta + list[i].offset, list[i].count, 40 + i, 0.3f);
            for (size_t j = 0; j < list[i].count; j++)
                theta[list[i].offset + j] += strstr(list[i].name, ".g") ? 1.0f : 0.0f;
            if (!strcmp(list[i].name, "out.offset")) /* in units of kappa d U / 2: a constant of O(1), as the rest */
                theta[list[i].offset] /= VAPO_UNET_OFFSET_UNIT * (float)vapo_net_input_size(net);
        }
}

static void compare_outputs(const vapo_ckpt *ref, vapo_net *net, const oracle_case *c, const char *preset)
{
    static const char *const est[2] = {"score", "pathwise"};
    const vapo_param *list;
    const int count = vapo_net_params_list(net, &list);
    double worst = 0, worst_grad = 0;
    compare(ref, "phi", c->phi, c->batch, &worst);
    compare(ref, "grad_x", c->g, c->d * c->batch, &worst);
    for (int e = 0; e < 2; e++) {
        char name[128];
        snprintf(name, sizeof name, "%s.loss", est[e]);
        compare_loss(ref, name, c->loss[e], c->loss_scale[e], &worst);
        for (int i = 0; i < count; i++) {
            snprintf(name, sizeof name, "%s.grad.%s", est[e], list[i].name);
            compare(ref, name, c->grad[e] + list[i].offset, list[i].count, &worst_grad);
        }
    }
    printf("  %-12s batch %d: Phi, grad_x Phi, both losses max relative error %.2e; 2 x %d parameter gradients "
           "max %.2e\n", preset, c->batch, worst, count, worst_grad);
}

/* extras: vapo-train's additions (level heads, anchor, a global head of width 16) */
static void run_case(const char *preset, int batch, vapo_innovation_weight weighting, float quadratic, int extras)
{
    char dir[] = "/tmp/vapo-oracle-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char in_path[128], out_path[128], cmd[512];
    snprintf(in_path, sizeof in_path, "%s/in.safetensors", dir);
    snprintf(out_path, sizeof out_path, "%s/out.safetensors", dir);

    vapo_backend *be = vapo_backend_cpu(0);
    vapo_arch a;
    vapo_arch_preset(preset, &a);
    a.quadratic = quadratic;
    a.multiscale_head = a.anchor = extras;
    a.global_head = extras ? 16 : 0;
    vapo_net *net = vapo_net_create(be, &a);
    vapo_net_init(net, 3);
    perturb_params(net);
    oracle_case c = {.batch = batch, .d = vapo_net_input_size(net), .np = vapo_net_param_count(net)};
    const size_t nx = c.d * batch;
    float **bufs[] = {&c.xbar, &c.z, &c.x, &c.v, &c.g, &c.u};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        *bufs[i] = malloc(sizeof(float) * nx);
    draw_batch(&c);
    vapo_loss_config cfg = vapo_loss_config_default();
    cfg.lambda = 0.05, cfg.weighting = weighting;
    for (int e = 0; e < 2; e++) {
        c.grad[e] = calloc(c.np, sizeof(float));
        cfg.estimator = e ? VAPO_ESTIMATOR_PATHWISE : VAPO_ESTIMATOR_SCORE;
        our_loss(net, &cfg, &c, e);
    }

    CHECK(!write_input(in_path, &a, &cfg, net, &c), "save: %s", vapo_last_error());
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 oracle_torch.py %s %s", in_path, out_path);
    int rc = system(cmd);
    CHECK(rc == 0, "the PyTorch oracle failed (exit %d): is python3-torch installed? (scripts/setup.sh)", rc);
    vapo_ckpt *ref = rc == 0 ? vapo_ckpt_load(out_path) : NULL;
    if (ref) {
        compare_outputs(ref, net, &c, preset);
        vapo_ckpt_free(ref);
    }
    unlink(in_path), unlink(out_path), rmdir(dir);
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(*bufs[i]);
    free(c.grad[0]), free(c.grad[1]);
    vapo_net_free(net);
    be->destroy(be);
}

int main(void)
{
    run_case("tiny", 4, VAPO_WEIGHT_CONSTANT, 0.0f, 0);
    run_case("tiny2d", 6, VAPO_WEIGHT_JACOBIAN, 0.0f, 0);
    run_case("fmnist-small", 8, VAPO_WEIGHT_JACOBIAN, 0.0f, 0); /* the paper's network: one head */
    run_case("fmnist-small", 8, VAPO_WEIGHT_JACOBIAN, 4.6f, 1); /* as vapo-train builds it */
    run_case("tiny-unet", 4, VAPO_WEIGHT_JACOBIAN, 1.5f, 0);
    run_case("fmnist-unet", 4, VAPO_WEIGHT_JACOBIAN, 4.6f, 0); /* -k/2 |x - f(x)|^2 with f the U-Net */
    return test_finish("test_oracle");
}
