/* One whole training step across backends.
 *  - CPU: vapo_loss_step (the backend's loss ops, the path the trainer and
 *    the GPU take) equals the host composition of the loss (vapo_loss_perturb,
 *    the network's four passes, vapo_loss_eval) bit for bit, for both
 *    estimators, on the tiny, fmnist-small and fmnist-unet presets.
 *  - CUDA (when a device is present): the loss terms and the theta-gradient
 *    match the CPU within fp32 tolerances, and two optimizer updates (Lamb
 *    and Adam) from the SAME gradient (the CPU's, uploaded) match the CPU's;
 *    otherwise "skipped: no CUDA device". The updates are checked apart from
 *    the gradient because the first Adam/Lamb update is lr * g / (|g| + eps),
 *    about lr * sign(g): a gradient entry near zero whose fp32 rounding
 *    differs between backends flips the sign and moves that parameter by
 *    2 lr, an error no gradient tolerance bounds. */
#include <string.h>

#include "testutil.h"
#include "trainer/optim.h"
#include "vapo/backend.h"
#include "vapo/error.h"
#include "vapo/loss.h"

enum { B = 6, OPT_STEPS = 2 };
static const uint64_t SEED = 5, STEP = 3;

typedef struct {
    vapo_loss_terms terms;
    float *grad, *params; /* host copies: theta-gradient, parameters after OPT_STEPS updates */
    size_t np;
} step_result;

static float *data_batch(size_t n)
{
    float *x = malloc(sizeof(float) * n);
    fill_normal(x, n, 17, 1.0f);
    for (size_t i = 0; i < n; i++)
        x[i] = tanhf(x[i]); /* images live in [-1, 1] */
    return x;
}

static vapo_net *make_net(vapo_backend *be, const char *preset)
{
    vapo_arch a;
    if (vapo_arch_preset(preset, &a))
        return NULL;
    vapo_net *net = vapo_net_create(be, &a);
    /* a fresh U-Net's f is 0 (ReZero and output gains): open every path */
    if (net && (vapo_net_init(net, 3) || (a.unet && vapo_net_set_scales(net, 0.3f)))) {
        vapo_net_free(net);
        return NULL;
    }
    return net;
}

static float *download(vapo_backend *be, const float *dev, size_t n)
{
    float *h = malloc(sizeof(float) * n);
    be->download(be, h, dev, sizeof(float) * n);
    return h;
}

/* vapo_loss_step, then OPT_STEPS optimizer updates on backend `be`, each
 * from the step's gradient, or from `update_grad` (host) when not NULL. */
static int run_step(vapo_backend *be, const char *preset, const vapo_loss_config *cfg, optim_kind kind,
                    const float *xbar, const float *update_grad, step_result *r)
{
    memset(r, 0, sizeof *r);
    vapo_net *net = make_net(be, preset);
    vapo_loss_work *wk = net ? vapo_loss_work_create(net, B) : NULL;
    if (!wk) {
        vapo_net_free(net);
        return -1;
    }
    r->np = vapo_net_param_count(net);
    float *grad = be->alloc(be, sizeof(float) * r->np), *params = vapo_net_params(net);
    optim_config oc = {.kind = kind, .lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .clip = 0.5,
                       .ema_decay = 0.99};
    optim_state opt;
    int rc = !grad || vapo_loss_step(net, wk, cfg, xbar, SEED, STEP, grad, &r->terms);
    if (!rc) {
        r->grad = download(be, grad, r->np);
        rc = optim_init(&opt, &oc, net, params);
        if (!rc) {
            for (long k = 0; k < OPT_STEPS; k++) { /* optim_step clips grad in place: upload it each time */
                be->upload(be, grad, update_grad ? update_grad : r->grad, sizeof(float) * r->np);
                optim_step(&opt, params, grad, k);
            }
            r->params = download(be, params, r->np);
            optim_free(&opt);
        }
    }
    if (grad)
        be->free(be, grad);
    vapo_loss_work_free(wk);
    vapo_net_free(net);
    return rc ? -1 : 0;
}

/* The same gradient from the host entry points and the network's passes. */
static float *host_composition(vapo_backend *cpu, const char *preset, const vapo_loss_config *cfg, const float *xbar,
                               vapo_loss_terms *terms)
{
    vapo_net *net = make_net(cpu, preset);
    const size_t d = vapo_net_input_size(net), n = B * d, np = vapo_net_param_count(net);
    float *z = malloc(sizeof(float) * n), *x = malloc(sizeof(float) * n), *v = malloc(sizeof(float) * n);
    float *g = malloc(sizeof(float) * n), *u = malloc(sizeof(float) * n), *grad = calloc(np, sizeof(float));
    float phi[B], phi_bar[B];
    double t[B], zx[2 * B];
    vapo_path_coef coef[B];
    for (int i = 0; i < B; i++)
        t[i] = vapo_loss_time(cfg, vapo_rng_uniform(SEED, VAPO_STREAM_TRAIN + 1, STEP * B + i));
    vapo_rng_normal(SEED, VAPO_STREAM_TRAIN + 2, STEP * B * d, n, z);
    const int pathwise = cfg->estimator == VAPO_ESTIMATOR_PATHWISE;
    vapo_loss_perturb(cfg, B, (int)d, xbar, t, z, x, coef, zx, pathwise ? v : NULL);
    vapo_net_forward(net, B, x, phi);
    vapo_net_backward(net, g);
    vapo_loss_eval(cfg, B, (int)d, coef, zx, phi, g, pathwise ? v : NULL, terms, phi_bar, u);
    vapo_net_tangent(net, u, NULL);
    vapo_net_dual_backward(net, phi_bar, NULL, grad);
    free(z), free(x), free(v), free(g), free(u);
    vapo_net_free(net);
    return grad;
}

static void free_result(step_result *r) { free(r->grad), free(r->params); }

static void check_cpu(vapo_backend *cpu, const char *preset, const vapo_loss_config *cfg, const float *xbar)
{
    const char *est = vapo_estimator_name(cfg->estimator);
    step_result r;
    vapo_loss_terms ht;
    CHECK(!run_step(cpu, preset, cfg, OPTIM_LAMB, xbar, NULL, &r), "%s %s: CPU step: %s", preset, est, vapo_last_error());
    float *ref = host_composition(cpu, preset, cfg, xbar, &ht);
    if (r.grad) {
        CHECK(!memcmp(ref, r.grad, sizeof(float) * r.np), "%s %s: loss step gradient differs from the host composition",
              preset, est);
        CHECK(r.terms.total == ht.total, "%s %s: loss %.9g vs host %.9g", preset, est, r.terms.total, ht.total);
        printf("  cpu  %-12s %-8s loss %+.6f  |grad| %.3g: equals the host composition\n", preset, est,
               r.terms.total, sqrt(dotd(r.grad, r.grad, r.np)));
    }
    free(ref);
    free_result(&r);
}

static void check_cuda(vapo_backend *cpu, vapo_backend *cuda, const char *preset, const vapo_loss_config *cfg,
                       optim_kind kind, const float *xbar)
{
    const char *est = vapo_estimator_name(cfg->estimator), *opt = optim_kind_name(kind);
    step_result a, b;
    const int ra = run_step(cpu, preset, cfg, kind, xbar, NULL, &a);
    const int rb = ra ? -1 : run_step(cuda, preset, cfg, kind, xbar, a.grad, &b);
    CHECK(!ra && !rb, "%s %s: step failed: %s", preset, est, vapo_last_error());
    if (!ra && !rb) {
        const double eg = nmse(b.grad, a.grad, a.np), ep = nmse(b.params, a.params, a.np);
        CHECK_CLOSE(b.terms.total, a.terms.total, 1e-4, "loss, CUDA vs CPU");
        CHECK(eg < 1e-6, "%s %s: theta-gradient nmse %.3g (tolerance 1e-6)", preset, est, eg);
        CHECK(ep < 1e-9, "%s %s %s: parameters after %d updates from the same gradient nmse %.3g (tolerance 1e-9)",
              preset, est, opt, OPT_STEPS, ep);
        printf("  cuda %-12s %-8s %-4s loss %+.6f vs %+.6f, gradient nmse %.2e, parameters after %d updates from the "
               "same gradient nmse %.2e\n",
               preset, est, opt, b.terms.total, a.terms.total, eg, OPT_STEPS, ep);
    }
    free_result(&a);
    free_result(&b);
}

int main(void)
{
    vapo_backend *cpu = vapo_backend_cpu(0), *cuda = vapo_backend_cuda(0);
    const char *presets[] = {"tiny", "fmnist-small", "fmnist-unet"};
    const char *require = getenv("VAPO_TEST_REQUIRE_CUDA");
    float *xbar = data_batch(B * 28 * 28);
    for (int p = 0; p < 3; p++)
        for (int e = 0; e < 2; e++) {
            vapo_loss_config cfg = vapo_loss_config_default();
            cfg.estimator = e ? VAPO_ESTIMATOR_PATHWISE : VAPO_ESTIMATOR_SCORE;
            cfg.time_tilt = e ? 3.0 : 0.0; /* the step draws its times through vapo_loss_time */
            check_cpu(cpu, presets[p], &cfg, xbar);
            for (int k = 0; cuda && k < 2; k++)
                check_cuda(cpu, cuda, presets[p], &cfg, k ? OPTIM_ADAM : OPTIM_LAMB, xbar);
        }
    if (!cuda) {
        printf("  cuda: skipped: no CUDA device (%s)\n", vapo_last_error());
        CHECK(!(require && *require && strcmp(require, "0")), "VAPO_TEST_REQUIRE_CUDA is set");
    } else {
        cuda->destroy(cuda);
    }
    free(xbar);
    cpu->destroy(cpu);
    return test_finish("train_step_parity");
}
