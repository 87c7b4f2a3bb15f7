/* The whole network and loss against an independent autograd implementation
 * (oracle_torch.py, PyTorch in float64): Phi, grad_x Phi, the loss
 * L = mean(1/2 |grad_x Phi|^2 + c Phi + lambda Phi^2) and dL/dtheta for every
 * parameter tensor. The weights and inputs travel in a safetensors file.
 * Error metric per tensor: relative L2 error |a - b| / |b| against the float64
 * oracle; our float32 engine must stay below 1e-5 (nmse below 1e-10). */
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "vapo/ckpt.h"
#include "vapo/error.h"
#include "vapo/loss.h"
#include "vapo/net.h"

#define MAX_REL 1e-5

static double rel_err(const float *a, const float *b, size_t n) { return sqrt(nmse(a, b, n)); }

static void compare(const vapo_ckpt *ref, const char *name, const float *ours, size_t n, double *worst)
{
    const vapo_tensor_ref *t = vapo_ckpt_find(ref, name);
    if (!t) {
        CHECK(0, "oracle output lacks %s", name);
        return;
    }
    size_t count = 1;
    for (int i = 0; i < t->ndim; i++)
        count *= (size_t)t->shape[i];
    CHECK(count == n, "%s: oracle has %zu values, we have %zu", name, count, n);
    if (count != n)
        return;
    double e = rel_err(ours, t->data, n);
    if (e > *worst)
        *worst = e;
    if (e >= MAX_REL)
        CHECK(0, "%s is off: relative error %.3g (limit %.0e)", name, e, MAX_REL);
}

static void run_case(const char *preset, int batch)
{
    char dir[] = "/tmp/vapo-oracle-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char in_path[128], out_path[128], cmd[512];
    snprintf(in_path, sizeof in_path, "%s/in.safetensors", dir);
    snprintf(out_path, sizeof out_path, "%s/out.safetensors", dir);

    vapo_backend *be = vapo_backend_cpu(0);
    vapo_arch a;
    vapo_arch_preset(preset, &a);
    vapo_net *net = vapo_net_create(be, &a);
    const size_t d = vapo_net_input_size(net), np = vapo_net_param_count(net), nx = d * batch;
    float *theta = vapo_net_params(net);
    vapo_net_init(net, 3);
    const vapo_param *list;
    int count = vapo_net_params_list(net, &list);
    for (int i = 0; i < count; i++) /* perturb gains, biases and ReZero scales away from their init */
        if (strstr(list[i].name, ".v") == NULL) {
            fill_normal(theta + list[i].offset, list[i].count, 40 + i, 0.3f);
            for (size_t j = 0; j < list[i].count; j++)
                theta[list[i].offset + j] += strstr(list[i].name, ".g") ? 1.0f : 0.0f;
        }
    float *x = malloc(sizeof(float) * nx), *g = malloc(sizeof(float) * nx), *u = malloc(sizeof(float) * nx);
    float *grad = calloc(np, sizeof(float)), phi[64], phi_bar[64];
    fill_normal(x, nx, 77, 1.0f);
    const double c = 0.3, lambda = 0.05;

    /* L = mean(1/2 |g|^2 + c Phi + lambda Phi^2): dL/dPhi = (c + 2 lambda Phi)/B, dL/dg = g/B */
    vapo_net_forward(net, batch, x, phi);
    vapo_net_backward(net, g);
    double loss = 0;
    for (int b = 0; b < batch; b++) {
        loss += (0.5 * dotd(g + b * d, g + b * d, d) + c * phi[b] + lambda * phi[b] * phi[b]) / batch;
        phi_bar[b] = (float)((c + 2 * lambda * phi[b]) / batch);
    }
    for (size_t i = 0; i < nx; i++)
        u[i] = g[i] / batch;
    vapo_net_tangent(net, u, NULL);
    vapo_net_dual_backward(net, phi_bar, NULL, grad);

    /* write weights and input, run the oracle */
    vapo_tensor_ref *refs = calloc(count + 1, sizeof *refs);
    for (int i = 0; i < count; i++) {
        refs[i] = (vapo_tensor_ref){.name = list[i].name, .dtype = VAPO_DT_F32, .ndim = list[i].ndim,
                                    .data = theta + list[i].offset};
        for (int k = 0; k < list[i].ndim; k++)
            refs[i].shape[k] = list[i].shape[k];
    }
    refs[count] = (vapo_tensor_ref){.name = "x", .dtype = VAPO_DT_F32, .ndim = 4,
                                    .shape = {batch, a.in_c, a.in_h, a.in_w}, .data = x};
    json_t *meta = json_pack("{s:o, s:f, s:f}", "arch", vapo_arch_to_json(&a), "c", c, "lambda", lambda);
    CHECK(!vapo_ckpt_save(in_path, refs, count + 1, meta), "save: %s", vapo_last_error());
    json_decref(meta);
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 oracle_torch.py %s %s", in_path, out_path);
    int rc = system(cmd);
    CHECK(rc == 0, "the PyTorch oracle failed (exit %d): is python3-torch installed? (scripts/setup.sh)", rc);
    vapo_ckpt *ref = rc == 0 ? vapo_ckpt_load(out_path) : NULL;
    if (ref) {
        double worst_grad = 0, worst = 0;
        float lossf = (float)loss;
        compare(ref, "phi", phi, batch, &worst);
        compare(ref, "grad_x", g, nx, &worst);
        compare(ref, "loss", &lossf, 1, &worst);
        for (int i = 0; i < count; i++) {
            char name[96];
            snprintf(name, sizeof name, "grad.%s", list[i].name);
            compare(ref, name, grad + list[i].offset, list[i].count, &worst_grad);
        }
        printf("  %-12s batch %d: Phi, grad_x Phi, loss max relative error %.2e; %d parameter gradients max %.2e\n",
               preset, batch, worst, count, worst_grad);
        vapo_ckpt_free(ref);
    }
    unlink(in_path), unlink(out_path), rmdir(dir);
    free(refs), free(x), free(g), free(u), free(grad);
    vapo_net_free(net);
    be->destroy(be);
}

int main(void)
{
    run_case("tiny", 4);
    run_case("tiny2d", 6);
    run_case("fmnist-small", 8);
    return test_finish("test_oracle");
}
