#include "vapo/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vapo/ckpt.h"
#include "vapo/error.h"
#include "vapo/ode_batch.h"
#include "vapo/rng.h"

static void model_defaults(vapo_model *m)
{
    m->sampling = vapo_ode_config_default();
    m->ood_keep = 0.95;
}

vapo_model *vapo_model_wrap(vapo_net *net, const vapo_loss_config *loss)
{
    vapo_model *m = calloc(1, sizeof *m);
    if (!m) {
        vapo_fail("out of memory");
        return NULL;
    }
    m->net = net;
    m->arch = *vapo_net_arch(net);
    m->loss = *loss;
    model_defaults(m);
    return m;
}

vapo_net *vapo_model_unwrap(vapo_model *m)
{
    vapo_backend *be = m->net ? vapo_net_backend(m->net) : NULL;
    if (be && m->dev_x)
        be->free(be, m->dev_x), be->free(be, m->dev_g), be->free(be, m->dev_phi);
    vapo_net *net = m->net;
    json_decref(m->meta);
    free(m);
    return net;
}

void vapo_model_free(vapo_model *m)
{
    if (m)
        vapo_net_free(vapo_model_unwrap(m));
}

/* ---- metadata ---------------------------------------------------------------------- */

static json_t *loss_to_json(const vapo_loss_config *l)
{
    return json_pack("{s:f, s:f, s:f, s:f, s:s, s:s, s:f}", "omega", l->omega, "nu", l->nu, "eps", l->eps, "lambda",
                     l->lambda, "innovation_weight", vapo_innovation_weight_name(l->weighting), "estimator",
                     vapo_estimator_name(l->estimator), "time_tilt", l->time_tilt);
}

static int loss_from_json(const json_t *o, vapo_loss_config *l)
{
    const char *weighting = "jacobian", *estimator = "score";
    json_error_t err;
    *l = vapo_loss_config_default();
    if (o && json_unpack_ex((json_t *)o, &err, 0, "{s?F, s?F, s?F, s?F, s?s, s?s, s?F}", "omega", &l->omega, "nu",
                            &l->nu, "eps", &l->eps, "lambda", &l->lambda, "innovation_weight", &weighting, "estimator",
                            &estimator, "time_tilt", &l->time_tilt))
        return vapo_fail("loss metadata: %s", err.text);
    if (vapo_innovation_weight_parse(weighting, &l->weighting) || vapo_estimator_parse(estimator, &l->estimator))
        return -1;
    return vapo_loss_config_validate(l);
}

static json_t *sampling_to_json(const vapo_ode_config *s)
{
    return json_pack("{s:s, s:f, s:f, s:f, s:i}", "solver", vapo_ode_method_name(s->method), "t_end", s->t_end, "rtol",
                     s->rtol, "atol", s->atol, "steps", s->steps);
}

static int sampling_from_json(const json_t *o, vapo_ode_config *s)
{
    const char *solver = NULL;
    json_error_t err;
    *s = vapo_ode_config_default();
    if (o && json_unpack_ex((json_t *)o, &err, 0, "{s?s, s?F, s?F, s?F, s?i}", "solver", &solver, "t_end", &s->t_end,
                            "rtol", &s->rtol, "atol", &s->atol, "steps", &s->steps))
        return vapo_fail("sampling metadata: %s", err.text);
    if (solver && vapo_ode_method_parse(solver, &s->method))
        return -1;
    return vapo_ode_config_validate(s);
}

json_t *vapo_model_metadata(const vapo_model *m)
{
    json_t *meta = m->meta ? json_deep_copy(m->meta) : json_object();
    json_object_set_new(meta, "format", json_integer(1));
    json_object_set_new(meta, "arch", vapo_arch_to_json(&m->arch));
    json_object_set_new(meta, "loss", loss_to_json(&m->loss));
    json_object_set_new(meta, "sampling", sampling_to_json(&m->sampling));
    json_t *data = json_pack("{s:[i,i,i], s:[f,f], s:s}", "shape", m->arch.in_c, m->arch.in_h, m->arch.in_w, "range",
                             -1.0, 1.0, "dataset", m->dataset);
    json_object_set_new(meta, "data", data);
    if (m->n_calib > 0) {
        json_t *q = json_array();
        for (int i = 0; i < VAPO_OOD_QUANTILES; i++)
            json_array_append_new(q, json_real(m->quantiles[i]));
        json_object_set_new(meta, "ood",
                            json_pack("{s:i, s:f, s:o, s:s}", "count", m->n_calib, "keep", m->ood_keep, "quantiles", q,
                                      "rule", "in distribution iff energy >= quantile(1 - keep)"));
    }
    return meta;
}

static int ood_from_json(const json_t *o, vapo_model *m)
{
    json_t *q = NULL;
    json_error_t err;
    if (!o)
        return 0;
    if (json_unpack_ex((json_t *)o, &err, 0, "{s:i, s?F, s:o}", "count", &m->n_calib, "keep", &m->ood_keep,
                       "quantiles", &q))
        return vapo_fail("ood metadata: %s", err.text);
    if (!json_is_array(q) || json_array_size(q) != VAPO_OOD_QUANTILES || m->n_calib < 1 || !(m->ood_keep > 0) ||
        !(m->ood_keep < 1))
        return vapo_fail("ood metadata: expected %d quantiles, a positive count and 0 < keep < 1", VAPO_OOD_QUANTILES);
    for (int i = 0; i < VAPO_OOD_QUANTILES; i++) {
        json_t *v = json_array_get(q, i);
        if (!json_is_number(v) || !isfinite(json_number_value(v)))
            return vapo_fail("ood metadata: quantile %d is not a finite number", i);
        m->quantiles[i] = (float)json_number_value(v);
        if (i > 0 && m->quantiles[i] < m->quantiles[i - 1])
            return vapo_fail("ood metadata: quantiles are not sorted");
    }
    return 0;
}

static int read_params(vapo_model *m, const vapo_ckpt *ck, const char *path)
{
    const vapo_param *list;
    int count = vapo_net_params_list(m->net, &list);
    vapo_backend *be = vapo_net_backend(m->net);
    float *host = malloc(sizeof(float) * vapo_net_param_count(m->net));
    if (!host)
        return vapo_fail("out of memory");
    for (int i = 0; i < count; i++) {
        int64_t shape[4];
        for (int k = 0; k < list[i].ndim; k++)
            shape[k] = list[i].shape[k];
        if (vapo_ckpt_read_f32(ck, list[i].name, list[i].ndim, shape, host + list[i].offset)) {
            free(host);
            return vapo_fail("%s: %s", path, vapo_last_error());
        }
    }
    for (size_t i = 0; i < vapo_net_param_count(m->net); i++)
        if (!isfinite(host[i])) {
            free(host);
            return vapo_fail("%s: the weights contain NaN or infinite values", path);
        }
    be->upload(be, vapo_net_params(m->net), host, sizeof(float) * vapo_net_param_count(m->net));
    free(host);
    return 0;
}

vapo_model *vapo_model_load(const char *path, vapo_backend *be)
{
    vapo_ckpt *ck = vapo_ckpt_load(path);
    if (!ck)
        return NULL;
    vapo_model *m = calloc(1, sizeof *m);
    if (!m) {
        vapo_ckpt_free(ck);
        vapo_fail("out of memory");
        return NULL;
    }
    model_defaults(m);
    const json_t *meta = json_object_get(vapo_ckpt_metadata(ck), "vapo");
    if (!json_is_object(meta)) {
        vapo_fail("%s: not a vapo checkpoint (no \"vapo\" metadata object)", path);
        goto fail;
    }
    m->meta = json_deep_copy(meta);
    json_t *step = json_object_get(json_object_get(meta, "train"), "step");
    m->step = json_is_integer(step) ? json_integer_value(step) : 0;
    const char *dataset = json_string_value(json_object_get(json_object_get(meta, "data"), "dataset"));
    snprintf(m->dataset, sizeof m->dataset, "%s", dataset ? dataset : "");
    if (vapo_arch_from_json(json_object_get(meta, "arch"), &m->arch) ||
        loss_from_json(json_object_get(meta, "loss"), &m->loss) ||
        sampling_from_json(json_object_get(meta, "sampling"), &m->sampling) ||
        ood_from_json(json_object_get(meta, "ood"), m)) {
        vapo_fail("%s: %s", path, vapo_last_error());
        goto fail;
    }
    m->net = vapo_net_create(be, &m->arch);
    if (!m->net || read_params(m, ck, path))
        goto fail;
    vapo_ckpt_free(ck);
    return m;
fail:
    vapo_ckpt_free(ck);
    vapo_model_free(m);
    return NULL;
}

/* ---- evaluation -------------------------------------------------------------------- */

static int reserve(vapo_model *m, int count)
{
    if (count <= m->cap)
        return 0;
    vapo_backend *be = vapo_net_backend(m->net);
    if (m->dev_x)
        be->free(be, m->dev_x), be->free(be, m->dev_g), be->free(be, m->dev_phi);
    const size_t n = (size_t)count * vapo_net_input_size(m->net);
    m->dev_x = be->alloc(be, sizeof(float) * n);
    m->dev_g = be->alloc(be, sizeof(float) * n);
    m->dev_phi = be->alloc(be, sizeof(float) * count);
    m->cap = (m->dev_x && m->dev_g && m->dev_phi) ? count : 0;
    return m->cap ? 0 : vapo_fail("out of memory for a batch of %d", count);
}

int vapo_model_energy_grad(vapo_model *m, int count, const float *x, float *phi, float *grad)
{
    vapo_backend *be = vapo_net_backend(m->net);
    const size_t n = (size_t)count * vapo_net_input_size(m->net);
    if (count < 1)
        return vapo_fail("empty batch");
    if (reserve(m, count))
        return -1;
    be->upload(be, m->dev_x, x, sizeof(float) * n);
    if (vapo_net_forward(m->net, count, m->dev_x, m->dev_phi))
        return -1;
    if (grad) {
        if (vapo_net_backward(m->net, m->dev_g))
            return -1;
        be->download(be, grad, m->dev_g, sizeof(float) * n);
    }
    if (phi)
        be->download(be, phi, m->dev_phi, sizeof(float) * count);
    return 0;
}

int vapo_model_field(void *model, int count, const float *points, float *out)
{
    return vapo_model_energy_grad(model, count, points, NULL, out);
}

int vapo_model_field_backend(void *model, int count, const float *points, float *out)
{
    vapo_model *m = model;
    if (count < 1)
        return vapo_fail("empty batch");
    if (reserve(m, count)) /* for the energies the forward pass writes */
        return -1;
    if (vapo_net_forward(m->net, count, points, m->dev_phi))
        return -1;
    return vapo_net_backward(m->net, out);
}

int vapo_model_eval_backend(void *model, int count, const float *x, float *grad, float *phi)
{
    vapo_model *m = model;
    if (count < 1)
        return vapo_fail("empty batch");
    if (vapo_net_forward(m->net, count, x, phi))
        return -1;
    return grad ? vapo_net_backward(m->net, grad) : 0;
}

vapo_pool *vapo_model_pool(vapo_model *m)
{
    return vapo_pool_create(vapo_net_backend(m->net), (int)vapo_net_input_size(m->net), vapo_model_eval_backend, m);
}

int vapo_model_sample(vapo_model *m, const vapo_ode_config *cfg, int n, float *x, float *phi, int *nfe,
                      vapo_ode_progress_fn progress, void *progress_ctx)
{
    const size_t d = vapo_net_input_size(m->net);
    vapo_pool *p = vapo_model_pool(m);
    int *ids = malloc(sizeof(int) * (n > 0 ? n : 1)), rc = 0, added = 0, failed = 0;
    if (!p || !ids) {
        free(ids);
        vapo_pool_free(p);
        return p ? vapo_fail("out of memory") : -1;
    }
    for (; rc == 0 && added < n; added++)
        rc = (ids[added] = vapo_pool_add(p, cfg, x + added * d, phi ? VAPO_POOL_ENERGY : 0)) < 0 ? -1 : 0;
    vapo_ode_progress pr = {.n = n, .t_end = cfg->t_end};
    while (rc == 0 && (rc = vapo_pool_step(p, NULL, 0)) > 0) {
        rc = 0;
        vapo_pool_progress(p, ids, n, &pr);
        if (progress && progress(progress_ctx, &pr))
            rc = vapo_fail("sampling cancelled after %d evaluations", pr.calls);
    }
    char why[200] = "";
    for (int i = 0; rc == 0 && i < n; i++) {
        vapo_pool_result res;
        vapo_pool_take(p, ids[i], x + i * d, &res);
        if (nfe)
            nfe[i] = res.nfe;
        if (phi)
            phi[i] = res.phi;
        if (res.failure != VAPO_ODE_OK && failed++ == 0)
            snprintf(why, sizeof why, "sample %d: %s", i, res.message);
    }
    if (rc == 0 && failed)
        rc = vapo_fail("%d of %d samples failed; %s", failed, n, why);
    free(ids);
    vapo_pool_free(p);
    return rc;
}

int vapo_model_energy(vapo_model *m, int count, const float *x, float *phi)
{
    return vapo_model_energy_grad(m, count, x, phi, NULL);
}

void vapo_model_noise(const vapo_model *m, uint64_t seed, int first, int n, float *x)
{
    const size_t d = vapo_net_input_size(m->net);
    vapo_rng_normal(seed, VAPO_STREAM_SAMPLE_NOISE, (uint64_t)first * d, (size_t)n * d, x);
    for (size_t i = 0; i < (size_t)n * d; i++)
        x[i] *= (float)m->loss.omega;
}

/* ---- OOD calibration ------------------------------------------------------------ */

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

int vapo_model_calibrate(vapo_model *m, const float *energies, int n)
{
    if (n < 2)
        return vapo_fail("OOD calibration needs at least 2 energies, got %d", n);
    float *sorted = malloc(sizeof(float) * n);
    if (!sorted)
        return vapo_fail("out of memory");
    memcpy(sorted, energies, sizeof(float) * n);
    qsort(sorted, n, sizeof(float), cmp_float);
    for (int i = 0; i < VAPO_OOD_QUANTILES; i++) {
        double pos = (double)i / (VAPO_OOD_QUANTILES - 1) * (n - 1);
        int lo = (int)pos;
        int hi = lo + 1 < n ? lo + 1 : lo;
        m->quantiles[i] = (float)(sorted[lo] + (pos - lo) * (sorted[hi] - sorted[lo]));
    }
    m->n_calib = n;
    free(sorted);
    return 0;
}

double vapo_model_ood_score(const vapo_model *m, double e)
{
    if (m->n_calib <= 0 || !isfinite(e))
        return 1.0;
    const float *q = m->quantiles;
    const int last = VAPO_OOD_QUANTILES - 1;
    if (e <= q[0])
        return 1.0;
    if (e >= q[last])
        return 0.0;
    int lo = 0, hi = last; /* q[lo] < e <= q[hi] */
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (q[mid] < e)
            lo = mid;
        else
            hi = mid;
    }
    double frac = q[hi] > q[lo] ? (e - q[lo]) / (q[hi] - q[lo]) : 1.0;
    double below = (lo + frac) / last; /* fraction of calibration energies below e */
    return 1.0 - below;
}

int vapo_model_in_distribution(const vapo_model *m, double e)
{
    return m->n_calib > 0 && vapo_model_ood_score(m, e) <= m->ood_keep;
}

int vapo_model_save(const char *path, const vapo_model *m, const vapo_tensor_ref *extra, int n_extra)
{
    const vapo_param *list;
    int count = vapo_net_params_list(m->net, &list);
    const size_t np = vapo_net_param_count(m->net);
    vapo_backend *be = vapo_net_backend(m->net);
    float *host = malloc(sizeof(float) * np);
    vapo_tensor_ref *refs = calloc((size_t)count + n_extra, sizeof *refs);
    if (!host || !refs) {
        free(host), free(refs);
        return vapo_fail("out of memory");
    }
    be->download(be, host, vapo_net_params(m->net), sizeof(float) * np);
    for (int i = 0; i < count; i++) {
        refs[i] = (vapo_tensor_ref){.name = list[i].name, .dtype = VAPO_DT_F32, .ndim = list[i].ndim,
                                    .data = host + list[i].offset};
        for (int k = 0; k < list[i].ndim; k++)
            refs[i].shape[k] = list[i].shape[k];
    }
    for (int i = 0; i < n_extra; i++)
        refs[count + i] = extra[i];
    json_t *meta = json_pack("{s:o}", "vapo", vapo_model_metadata(m));
    int rc = vapo_ckpt_save(path, refs, count + n_extra, meta);
    json_decref(meta);
    free(host), free(refs);
    return rc;
}
