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
    vapo_ood_init(&m->ood);
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
    vapo_ood_free(&m->ood);
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
    json_t *ood = vapo_ood_to_json(&m->ood);
    if (ood)
        json_object_set_new(meta, "ood", ood);
    else
        json_object_del(meta, "ood");
    return meta;
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
        vapo_ood_from_json(json_object_get(meta, "ood"), &m->ood)) {
        vapo_fail("%s: %s", path, vapo_last_error());
        goto fail;
    }
    m->net = vapo_net_create(be, &m->arch);
    if (!m->net || read_params(m, ck, path))
        goto fail;
    if (m->ood.g.dim && m->ood.g.dim != vapo_net_feature_count(m->net) + 1) {
        vapo_fail("%s: ood metadata (mahalanobis): %d values per image, the network gives %d features + 1", path,
                  m->ood.g.dim, vapo_net_feature_count(m->net));
        goto fail;
    }
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

static int pool_features(void *model, float *out) { return vapo_net_features(((vapo_model *)model)->net, out); }

vapo_pool *vapo_model_pool(vapo_model *m)
{
    vapo_pool *p =
        vapo_pool_create(vapo_net_backend(m->net), (int)vapo_net_input_size(m->net), vapo_model_eval_backend, m);
    if (p)
        vapo_pool_set_features(p, vapo_net_feature_count(m->net), pool_features);
    return p;
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

/* ---- OOD scores ------------------------------------------------------------------ */

/* Rows of OOD score k for n images, evaluated in batches: phi, |grad phi|
 * and the network's features (nf per row) as the score needs them (rows = n
 * * vapo_ood_rows). */
typedef struct {
    float *phi, *gnorm, *feat;
    int nf;
} score_rows_out;

static int score_rows(vapo_model *m, vapo_score_kind k, int n, const float *x, int batch, const score_rows_out *o)
{
    const int d = (int)vapo_net_input_size(m->net), per = vapo_ood_rows(&m->ood, k), grad = vapo_ood_needs_grad(k);
    const int chunk = batch / per > 0 ? batch / per : 1; /* images per pass */
    float *rows = malloc(sizeof(float) * (size_t)chunk * per * d);
    float *g = grad ? malloc(sizeof(float) * (size_t)chunk * per * d) : NULL;
    int rc = rows && (g || !grad) ? 0 : vapo_fail("out of memory");
    for (int i0 = 0; !rc && i0 < n; i0 += chunk) {
        const int nb = n - i0 < chunk ? n - i0 : chunk, nr = nb * per;
        for (int i = 0; i < nb; i++)
            vapo_ood_expand(&m->ood, k, d, x + (size_t)(i0 + i) * d, rows + (size_t)i * per * d);
        rc = vapo_model_energy_grad(m, nr, rows, o->phi + (size_t)i0 * per, g);
        if (!rc && o->nf)
            rc = vapo_net_features(m->net, o->feat + (size_t)i0 * per * o->nf);
        for (int r = 0; !rc && g && r < nr; r++) {
            double s = 0;
            for (int t = 0; t < d; t++)
                s += (double)g[(size_t)r * d + t] * g[(size_t)r * d + t];
            o->gnorm[(size_t)i0 * per + r] = (float)sqrt(s);
        }
    }
    free(rows), free(g);
    return rc;
}

static int score_rows_alloc(vapo_model *m, vapo_score_kind k, int n, const float *x, int batch, score_rows_out *o)
{
    const size_t rows = (size_t)n * vapo_ood_rows(&m->ood, k);
    o->nf = vapo_ood_needs_features(k) ? vapo_net_feature_count(m->net) : 0;
    o->phi = malloc(sizeof(float) * rows);
    o->gnorm = malloc(sizeof(float) * rows);
    o->feat = malloc(sizeof(float) * rows * (o->nf ? o->nf : 1));
    if (!o->phi || !o->gnorm || !o->feat)
        return vapo_fail("out of memory");
    return score_rows(m, k, n, x, batch, o);
}

static void score_rows_free(score_rows_out *o) { free(o->phi), free(o->gnorm), free(o->feat); }

int vapo_model_score(vapo_model *m, vapo_score_kind k, int n, const float *x, int batch, double *value)
{
    if (!vapo_ood_available(&m->ood, k))
        return vapo_fail("the model has no %s score (its checkpoint holds no fitted %s)", vapo_score_name(k),
                         k == VAPO_SCORE_MAHALANOBIS ? "Gaussian" : "mixture");
    score_rows_out o = {0};
    const vapo_arch *a = &m->arch;
    const int per = vapo_ood_rows(&m->ood, k), d = (int)vapo_net_input_size(m->net);
    int rc = score_rows_alloc(m, k, n, x, batch, &o);
    for (int i = 0; !rc && i < n; i++)
        value[i] = vapo_ood_value(&m->ood, k, a->in_c, a->in_h, a->in_w, x + (size_t)i * d, o.phi + (size_t)i * per,
                                  o.gnorm + (size_t)i * per, o.feat + (size_t)i * per * o.nf);
    score_rows_free(&o);
    return rc;
}

/* The mahalanobis score's values of n images, for its fit. */
static int gauss_features(vapo_model *m, int n, const float *x, int batch, double *v)
{
    score_rows_out o = {0};
    const vapo_arch *a = &m->arch;
    const size_t d = vapo_net_input_size(m->net);
    int rc = score_rows_alloc(m, VAPO_SCORE_MAHALANOBIS, n, x, batch, &o);
    for (int i = 0; !rc && i < n; i++)
        vapo_ood_gauss_features(a->in_c, a->in_h, a->in_w, x + i * d, o.feat + (size_t)i * o.nf, o.nf,
                                v + (size_t)i * (o.nf + 1));
    score_rows_free(&o);
    return rc;
}

int vapo_model_ms_features(vapo_model *m, int n, const float *x, int batch, double *features)
{
    score_rows_out o = {0};
    const vapo_multiscale *ms = &m->ood.ms;
    const vapo_arch *a = &m->arch;
    const size_t d = vapo_net_input_size(m->net);
    int rc = score_rows_alloc(m, VAPO_SCORE_MULTISCALE, n, x, batch, &o);
    for (int i = 0; !rc && i < n; i++)
        vapo_ood_ms_features(ms, a->in_c, a->in_h, a->in_w, x + i * d, o.phi + (size_t)i * ms->levels,
                             o.gnorm + (size_t)i * ms->levels, features + (size_t)i * vapo_ood_ms_dim(ms));
    score_rows_free(&o);
    return rc;
}

/* The mahalanobis score's Gaussian on the fit images (none for too few). */
static int fit_gauss(vapo_model *m, const float *fit, int n_fit, int batch)
{
    const int dim = vapo_net_feature_count(m->net) + 1;
    if (n_fit < 2 * dim)
        return 0;
    double *v = malloc(sizeof(double) * (size_t)n_fit * dim);
    int rc = v ? gauss_features(m, n_fit, fit, batch, v) : vapo_fail("out of memory");
    if (!rc && (rc = vapo_ood_gauss_fit(&m->ood.g, v, n_fit, dim)))
        vapo_ood_free(&m->ood);
    free(v);
    return rc;
}

int vapo_model_calibrate(vapo_model *m, const float *fit, int n_fit, const float *cal, int n_cal, int batch)
{
    vapo_ood *o = &m->ood;
    vapo_ood_free(o);
    vapo_ood_ms_defaults(&o->ms);
    const int dim = vapo_ood_ms_dim(&o->ms), mixture = n_fit >= 4 * VAPO_MS_COMPONENTS * dim;
    double *f = malloc(sizeof(double) * (size_t)(mixture ? n_fit : 1) * dim);
    double *v = malloc(sizeof(double) * (size_t)n_cal);
    int rc = f && v ? 0 : vapo_fail("out of memory");
    if (!rc && mixture)
        rc = vapo_model_ms_features(m, n_fit, fit, batch, f) || vapo_ood_ms_fit(&o->ms, f, n_fit, VAPO_MS_COMPONENTS);
    if (!rc)
        rc = fit_gauss(m, fit, n_fit, batch);
    for (int k = 0; !rc && k < VAPO_SCORE_KINDS; k++)
        if (vapo_ood_available(o, (vapo_score_kind)k))
            rc = vapo_model_score(m, (vapo_score_kind)k, n_cal, cal, batch, v) ||
                 vapo_ood_calibrate(o, (vapo_score_kind)k, v, n_cal);
    if (!rc) /* the best measured that the fit images allow (models/README.md) */
        o->default_score = vapo_ood_available(o, VAPO_SCORE_MAHALANOBIS) ? VAPO_SCORE_MAHALANOBIS
                           : mixture                                    ? VAPO_SCORE_MULTISCALE
                                                                        : VAPO_SCORE_ENERGY;
    free(f), free(v);
    return rc;
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
