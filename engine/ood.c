#include "vapo/ood.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vapo/error.h"
#include "vapo/image.h"
#include "vapo/rng.h"

#define F VAPO_MS_MAX_FEATURES

static const char *const names[VAPO_SCORE_KINDS] = {"energy", "complexity", "multiscale", "mahalanobis"};

const char *vapo_score_name(vapo_score_kind k) { return k >= 0 && k < VAPO_SCORE_KINDS ? names[k] : "?"; }
const char *vapo_score_choices(void) { return "energy, complexity, multiscale or mahalanobis"; }

int vapo_score_parse(const char *name, vapo_score_kind *k)
{
    for (int i = 0; i < VAPO_SCORE_KINDS; i++)
        if (name && !strcmp(name, names[i])) {
            *k = (vapo_score_kind)i;
            return 0;
        }
    return vapo_fail("unknown OOD score '%.40s' (expected %s)", name ? name : "", vapo_score_choices());
}

void vapo_ood_init(vapo_ood *o)
{
    memset(o, 0, sizeof *o);
    o->keep = 0.95;
    o->default_score = VAPO_SCORE_ENERGY;
}

void vapo_ood_free(vapo_ood *o)
{
    free(o->g.mean), free(o->g.scale), free(o->g.chol);
    vapo_ood_init(o);
}

/* Four levels from the data's own scale to well inside the noise: the field
 * near the data, where blur and interpolation show, and where the garment's
 * shape is decided (docs/DESIGN.md). */
void vapo_ood_ms_defaults(vapo_multiscale *ms)
{
    static const float sigma[] = {0.0f, 0.05f, 0.2f, 0.8f};
    memset(ms, 0, sizeof *ms);
    ms->levels = (int)(sizeof sigma / sizeof sigma[0]);
    memcpy(ms->sigma, sigma, sizeof sigma);
    ms->seed = 0;
}

int vapo_ood_available(const vapo_ood *o, vapo_score_kind k)
{
    if (k == VAPO_SCORE_MAHALANOBIS)
        return o->g.dim > 0;
    return k != VAPO_SCORE_MULTISCALE || (o->ms.levels > 0 && o->ms.k > 0);
}

int vapo_ood_rows(const vapo_ood *o, vapo_score_kind k) { return k == VAPO_SCORE_MULTISCALE ? o->ms.levels : 1; }
int vapo_ood_needs_grad(vapo_score_kind k) { return k == VAPO_SCORE_MULTISCALE; }
int vapo_ood_needs_features(vapo_score_kind k) { return k == VAPO_SCORE_MAHALANOBIS; }
int vapo_ood_features(const vapo_ood *o, vapo_score_kind k)
{
    return k == VAPO_SCORE_MAHALANOBIS && o->g.dim > 0 ? o->g.dim - 1 : 0;
}

void vapo_ood_expand(const vapo_ood *o, vapo_score_kind k, int d, const float *x, float *rows)
{
    if (k != VAPO_SCORE_MULTISCALE) {
        memcpy(rows, x, sizeof(float) * d);
        return;
    }
    for (int l = 0; l < o->ms.levels; l++) {
        float *r = rows + (size_t)l * d;
        vapo_rng_normal(o->ms.seed, VAPO_STREAM_OOD_NOISE, (uint64_t)l * d, d, r);
        for (int i = 0; i < d; i++)
            r[i] = x[i] + o->ms.sigma[l] * r[i];
    }
}

int vapo_ood_ms_dim(const vapo_multiscale *ms) { return 2 * ms->levels + 1; }

void vapo_ood_ms_features(const vapo_multiscale *ms, int c, int h, int w, const float *x, const float *phi,
                          const float *gnorm, double *f)
{
    for (int l = 0; l < ms->levels; l++) {
        f[2 * l] = phi[l];
        f[2 * l + 1] = log(gnorm[l] > 1e-30f ? gnorm[l] : 1e-30);
    }
    f[2 * ms->levels] = vapo_ood_png_bits(x, c, h, w) / ((double)c * h * w);
}

double vapo_ood_png_bits(const float *x, int c, int h, int w)
{
    unsigned char *png = NULL;
    size_t len = 0;
    if (vapo_png_encode(x, c, h, w, &png, &len))
        return NAN;
    free(png);
    return 8.0 * (double)len;
}

/* log N(z; mean_j, cov_j) + log weight_j of a standardised point for each
 * component (lp, k values); returns their maximum. */
static double component_logs(const vapo_multiscale *ms, const double *z, double *lp)
{
    const int n = vapo_ood_ms_dim(ms);
    double top = -INFINITY;
    for (int j = 0; j < ms->k; j++) {
        const double *L = ms->chol[j];
        double y[F], q = 0;
        for (int r = 0; r < n; r++) { /* solve L y = z - mean */
            double s = z[r] - ms->mean[j][r];
            for (int c = 0; c < r; c++)
                s -= L[r * n + c] * y[c];
            y[r] = s / L[r * n + r];
            q += y[r] * y[r];
        }
        lp[j] = ms->lognorm[j] - 0.5 * q;
        top = fmax(top, lp[j]);
    }
    return top;
}

/* The mixture's log-density of a feature vector (log-sum-exp of the components). */
static double ms_log_density(const vapo_multiscale *ms, const double *f)
{
    const int n = vapo_ood_ms_dim(ms);
    double z[F], lp[VAPO_MS_MAX_COMPONENTS], sum = 0;
    for (int i = 0; i < n; i++)
        z[i] = (f[i] - ms->shift[i]) / ms->scale[i];
    const double top = component_logs(ms, z, lp);
    for (int j = 0; j < ms->k; j++)
        sum += exp(lp[j] - top);
    return top + log(sum);
}

/* ---- the Gaussian of the network's features --------------------------------------- */

static size_t packed(int r, int c) { return (size_t)r * (r + 1) / 2 + c; } /* c <= r */

void vapo_ood_gauss_features(int c, int h, int w, const float *x, const float *feat, int nfeat, double *v)
{
    for (int i = 0; i < nfeat; i++) /* sums of ReLUs: heavy-tailed, log makes them closer to Gaussian */
        v[i] = log1p(feat[i] > 0 ? feat[i] : 0);
    v[nfeat] = vapo_ood_png_bits(x, c, h, w) / ((double)c * h * w);
}

/* -|L^-1 (v - mean) / scale|^2 / 2: the log-density up to a constant. */
static double gauss_log_density(const vapo_gauss *g, const double *v)
{
    double *y = malloc(sizeof(double) * g->dim), q = 0;
    if (!y)
        return NAN;
    for (int r = 0; r < g->dim; r++) {
        double s = (v[r] - g->mean[r]) / g->scale[r];
        for (int c = 0; c < r; c++)
            s -= g->chol[packed(r, c)] * y[c];
        y[r] = s / g->chol[packed(r, r)];
        q += y[r] * y[r];
    }
    free(y);
    return -0.5 * q;
}

static int gauss_alloc(vapo_gauss *g, int dim)
{
    g->mean = malloc(sizeof(double) * dim);
    g->scale = malloc(sizeof(double) * dim);
    g->chol = malloc(sizeof(double) * packed(dim, 0));
    g->dim = dim;
    return g->mean && g->scale && g->chol ? 0 : vapo_fail("out of memory");
}

/* Cholesky factor of a in place (packed lower triangle); -1 if not positive definite. */
static int cholesky(double *a, int dim)
{
    for (int r = 0; r < dim; r++)
        for (int c = 0; c <= r; c++) {
            double s = a[packed(r, c)];
            for (int t = 0; t < c; t++)
                s -= a[packed(r, t)] * a[packed(c, t)];
            if (r == c) {
                if (!(s > 0) || !isfinite(s))
                    return vapo_fail("mahalanobis Gaussian: the covariance is not positive definite");
                a[packed(r, r)] = sqrt(s);
            } else {
                a[packed(r, c)] = s / a[packed(c, c)];
            }
        }
    return 0;
}

#define GAUSS_REG 1e-3 /* added to the covariance's diagonal (standardised units) */

int vapo_ood_gauss_fit(vapo_gauss *g, const double *v, int n, int dim)
{
    if (dim < 1 || n < 2 * dim)
        return vapo_fail("mahalanobis fit: need at least %d images for %d features, got %d", 2 * dim, dim, n);
    if (gauss_alloc(g, dim))
        return -1;
    for (int c = 0; c < dim; c++) {
        double s = 0, q = 0;
        for (int i = 0; i < n; i++)
            s += v[(size_t)i * dim + c];
        g->mean[c] = s / n;
        for (int i = 0; i < n; i++)
            q += (v[(size_t)i * dim + c] - g->mean[c]) * (v[(size_t)i * dim + c] - g->mean[c]);
        g->scale[c] = q > 0 ? sqrt(q / n) : 1.0;
    }
    double *a = g->chol;
    memset(a, 0, sizeof(double) * packed(dim, 0));
    for (int i = 0; i < n; i++) {
        const double *row = v + (size_t)i * dim;
        for (int r = 0; r < dim; r++) {
            const double zr = (row[r] - g->mean[r]) / g->scale[r];
            for (int c = 0; c <= r; c++)
                a[packed(r, c)] += zr * (row[c] - g->mean[c]) / g->scale[c];
        }
    }
    for (int r = 0; r < dim; r++) {
        for (int c = 0; c <= r; c++)
            a[packed(r, c)] /= n;
        a[packed(r, r)] += GAUSS_REG;
    }
    return cholesky(a, dim);
}

double vapo_ood_value(const vapo_ood *o, vapo_score_kind k, int c, int h, int w, const float *x, const float *phi,
                      const float *gnorm, const float *feat)
{
    double v;
    if (k == VAPO_SCORE_ENERGY) {
        v = phi[0];
    } else if (k == VAPO_SCORE_COMPLEXITY) {
        v = phi[0] + M_LN2 * vapo_ood_png_bits(x, c, h, w);
    } else if (k == VAPO_SCORE_MULTISCALE) {
        double f[F];
        vapo_ood_ms_features(&o->ms, c, h, w, x, phi, gnorm, f);
        v = ms_log_density(&o->ms, f);
    } else {
        double *f = malloc(sizeof(double) * o->g.dim);
        if (f)
            vapo_ood_gauss_features(c, h, w, x, feat, o->g.dim - 1, f);
        v = f ? gauss_log_density(&o->g, f) : NAN;
        free(f);
    }
    return isfinite(v) ? v : -INFINITY;
}

/* ---- the mixture ------------------------------------------------------------------- */

int vapo_ood_ms_prepare(vapo_multiscale *ms)
{
    const int n = vapo_ood_ms_dim(ms);
    for (int j = 0; j < ms->k; j++) {
        double *L = ms->chol[j], logdet = 0;
        const double *A = ms->cov[j];
        memset(L, 0, sizeof ms->chol[j]);
        for (int r = 0; r < n; r++)
            for (int c = 0; c <= r; c++) {
                double s = A[r * n + c];
                for (int t = 0; t < c; t++)
                    s -= L[r * n + t] * L[c * n + t];
                if (r == c) {
                    if (!(s > 0) || !isfinite(s))
                        return vapo_fail("multiscale mixture: covariance %d is not positive definite", j);
                    L[r * n + r] = sqrt(s);
                    logdet += 2 * log(L[r * n + r]);
                } else {
                    L[r * n + c] = s / L[c * n + c];
                }
            }
        ms->lognorm[j] = log(ms->weight[j]) - 0.5 * (logdet + n * log(2 * M_PI));
    }
    return 0;
}

#define EM_ITERS 200
#define EM_REG 1e-3 /* added to the covariances' diagonal (standardised units) */

/* Deterministic start that outliers cannot take over (a farthest-point or
 * random start can give an outlier its own spike): the points sorted by
 * their first feature (the energy) and cut into k equal slices. */
typedef struct {
    double key;
    int index;
} keyed;

static int cmp_keyed(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    if (x->key != y->key)
        return x->key > y->key ? 1 : -1;
    return (x->index > y->index) - (x->index < y->index);
}

static int slice_start(const double *z, int n, int dim, int k, int *label)
{
    keyed *order = malloc(sizeof(keyed) * n);
    if (!order)
        return vapo_fail("out of memory");
    for (int i = 0; i < n; i++)
        order[i] = (keyed){z[(size_t)i * dim], i};
    qsort(order, n, sizeof(keyed), cmp_keyed);
    for (int r = 0; r < n; r++)
        label[order[r].index] = (int)((long long)r * k / n);
    free(order);
    return 0;
}

/* M step from responsibilities resp (n x k). */
static void em_m_step(vapo_multiscale *ms, const double *z, int n, int dim, const double *resp)
{
    for (int j = 0; j < ms->k; j++) {
        double nj = 1e-12;
        double *mu = ms->mean[j], *cv = ms->cov[j];
        memset(mu, 0, sizeof ms->mean[j]);
        memset(cv, 0, sizeof ms->cov[j]);
        for (int i = 0; i < n; i++) {
            nj += resp[i * ms->k + j];
            for (int c = 0; c < dim; c++)
                mu[c] += resp[i * ms->k + j] * z[i * dim + c];
        }
        for (int c = 0; c < dim; c++)
            mu[c] /= nj;
        for (int i = 0; i < n; i++) {
            const double r = resp[i * ms->k + j];
            for (int a = 0; a < dim; a++)
                for (int b = 0; b <= a; b++)
                    cv[a * dim + b] += r * (z[i * dim + a] - mu[a]) * (z[i * dim + b] - mu[b]);
        }
        for (int a = 0; a < dim; a++) {
            for (int b = 0; b <= a; b++)
                cv[b * dim + a] = cv[a * dim + b] = cv[a * dim + b] / nj;
            cv[a * dim + a] += EM_REG;
        }
        ms->weight[j] = nj / n;
    }
}

int vapo_ood_ms_fit(vapo_multiscale *ms, const double *features, int n, int k)
{
    const int dim = vapo_ood_ms_dim(ms);
    if (ms->levels < 1 || ms->levels > VAPO_MS_MAX_LEVELS || k < 1 || k > VAPO_MS_MAX_COMPONENTS || n < 4 * k * dim)
        return vapo_fail("multiscale fit: need 1..%d levels, 1..%d components and at least %d images, got %d, %d, %d",
                         VAPO_MS_MAX_LEVELS, VAPO_MS_MAX_COMPONENTS, 4 * k * dim, ms->levels, k, n);
    double *z = malloc(sizeof(double) * n * dim), *resp = calloc((size_t)n * k, sizeof(double));
    int *label = malloc(sizeof(int) * n);
    if (!z || !resp || !label) {
        free(z), free(resp), free(label);
        return vapo_fail("out of memory");
    }
    for (int c = 0; c < dim; c++) { /* standardise: every feature on one scale */
        double s = 0, q = 0;
        for (int i = 0; i < n; i++)
            s += features[i * dim + c];
        ms->shift[c] = s / n;
        for (int i = 0; i < n; i++)
            q += (features[i * dim + c] - ms->shift[c]) * (features[i * dim + c] - ms->shift[c]);
        ms->scale[c] = q > 0 ? sqrt(q / n) : 1.0;
        for (int i = 0; i < n; i++)
            z[i * dim + c] = (features[i * dim + c] - ms->shift[c]) / ms->scale[c];
    }
    ms->k = k;
    int rc = slice_start(z, n, dim, k, label);
    for (int i = 0; !rc && i < n; i++)
        resp[i * k + label[i]] = 1;
    for (int it = 0; it < EM_ITERS && !rc; it++) {
        em_m_step(ms, z, n, dim, resp);
        if ((rc = vapo_ood_ms_prepare(ms)))
            break;
        for (int i = 0; i < n; i++) { /* E step: responsibilities in the standardised space */
            double lp[VAPO_MS_MAX_COMPONENTS], sum = 0;
            const double top = component_logs(ms, z + (size_t)i * dim, lp);
            for (int j = 0; j < k; j++)
                sum += (resp[i * k + j] = exp(lp[j] - top));
            for (int j = 0; j < k; j++)
                resp[i * k + j] /= sum;
        }
    }
    free(z), free(resp), free(label);
    if (rc)
        ms->k = 0;
    return rc;
}

/* ---- quantiles --------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int vapo_ood_calibrate(vapo_ood *o, vapo_score_kind k, const double *values, int n)
{
    if (n < 2)
        return vapo_fail("OOD calibration needs at least 2 values, got %d", n);
    double *sorted = malloc(sizeof(double) * n);
    if (!sorted)
        return vapo_fail("out of memory");
    for (int i = 0; i < n; i++) /* below every finite value, and still a number to store */
        sorted[i] = isfinite(values[i]) ? values[i] : -3.0e38;
    qsort(sorted, n, sizeof(double), cmp_double);
    vapo_quantiles *c = &o->calib[k];
    for (int i = 0; i < VAPO_OOD_QUANTILES; i++) {
        double pos = (double)i / (VAPO_OOD_QUANTILES - 1) * (n - 1);
        int lo = (int)pos, hi = lo + 1 < n ? lo + 1 : lo;
        c->q[i] = (float)(sorted[lo] + (pos - lo) * (sorted[hi] - sorted[lo]));
    }
    c->count = n;
    free(sorted);
    return 0;
}

double vapo_ood_score(const vapo_ood *o, vapo_score_kind k, double e)
{
    const vapo_quantiles *c = &o->calib[k];
    if (c->count <= 0 || !isfinite(e))
        return 1.0;
    const float *q = c->q;
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
    return 1.0 - (lo + frac) / last; /* 1 - the fraction of calibration values below e */
}

int vapo_ood_in_distribution(const vapo_ood *o, vapo_score_kind k, double e)
{
    return o->calib[k].count > 0 && vapo_ood_score(o, k, e) <= o->keep;
}

/* ---- metadata ---------------------------------------------------------------------- */

static json_t *doubles_json(const double *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_real(v[i]));
    return a;
}

static json_t *quantiles_json(const vapo_quantiles *c)
{
    json_t *q = json_array();
    for (int i = 0; i < VAPO_OOD_QUANTILES; i++)
        json_array_append_new(q, json_real(c->q[i]));
    return q;
}

static json_t *ms_json(const vapo_multiscale *ms)
{
    const int dim = vapo_ood_ms_dim(ms);
    json_t *sigma = json_array(), *means = json_array(), *covs = json_array();
    for (int l = 0; l < ms->levels; l++)
        json_array_append_new(sigma, json_real(ms->sigma[l]));
    for (int j = 0; j < ms->k; j++) {
        json_array_append_new(means, doubles_json(ms->mean[j], dim));
        json_array_append_new(covs, doubles_json(ms->cov[j], dim * dim));
    }
    return json_pack("{s:o, s:I, s:o, s:o, s:o, s:o, s:o, s:s}", "sigmas", sigma, "seed", (json_int_t)ms->seed,
                     "shift", doubles_json(ms->shift, dim), "scale", doubles_json(ms->scale, dim), "weights",
                     doubles_json(ms->weight, ms->k), "means", means, "covariances", covs, "features",
                     "per sigma: phi(x + sigma z), log |grad phi(x + sigma z)|; then PNG bits per value; standardised "
                     "(f - shift) / scale");
}

static json_t *gauss_json(const vapo_gauss *g)
{
    return json_pack("{s:o, s:o, s:o, s:s}", "mean", doubles_json(g->mean, g->dim), "scale",
                     doubles_json(g->scale, g->dim), "chol", doubles_json(g->chol, (int)packed(g->dim, 0)),
                     "features",
                     "log(1 + max(0, f)) of each network feature (vapo_net_features), then PNG bits per value; "
                     "standardised (v - mean) / scale; chol: lower Cholesky factor of the standardised covariance, "
                     "rows packed");
}

json_t *vapo_ood_to_json(const vapo_ood *o)
{
    const vapo_quantiles *e = &o->calib[VAPO_SCORE_ENERGY];
    if (e->count <= 0)
        return NULL;
    json_t *obj = json_pack("{s:i, s:f, s:o, s:s, s:s}", "count", e->count, "keep", o->keep, "quantiles",
                            quantiles_json(e), "rule", "in distribution iff value >= quantile(1 - keep)", "default",
                            vapo_score_name(o->default_score));
    json_t *scores = json_object();
    for (int k = VAPO_SCORE_COMPLEXITY; k < VAPO_SCORE_KINDS; k++) {
        const vapo_quantiles *c = &o->calib[k];
        if (c->count <= 0 || !vapo_ood_available(o, (vapo_score_kind)k))
            continue;
        json_t *s = json_pack("{s:i, s:o}", "count", c->count, "quantiles", quantiles_json(c));
        if (k == VAPO_SCORE_MULTISCALE)
            json_object_set_new(s, "mixture", ms_json(&o->ms));
        if (k == VAPO_SCORE_MAHALANOBIS)
            json_object_set_new(s, "gaussian", gauss_json(&o->g));
        json_object_set_new(scores, names[k], s);
    }
    json_object_set_new(obj, "scores", scores);
    return obj;
}

static int quantiles_from_json(const json_t *obj, const char *what, vapo_quantiles *c)
{
    json_t *q = NULL;
    json_error_t err;
    int count = 0;
    if (json_unpack_ex((json_t *)obj, &err, 0, "{s:i, s:o}", "count", &count, "quantiles", &q))
        return vapo_fail("ood metadata (%s): %s", what, err.text);
    if (!json_is_array(q) || json_array_size(q) != VAPO_OOD_QUANTILES || count < 1)
        return vapo_fail("ood metadata (%s): expected %d quantiles and a positive count", what, VAPO_OOD_QUANTILES);
    for (int i = 0; i < VAPO_OOD_QUANTILES; i++) {
        json_t *v = json_array_get(q, i);
        if (!json_is_number(v) || !isfinite(json_number_value(v)) || fabs(json_number_value(v)) > 3.4e38)
            return vapo_fail("ood metadata (%s): quantile %d is not a finite number", what, i);
        c->q[i] = (float)json_number_value(v);
        if (i > 0 && c->q[i] < c->q[i - 1])
            return vapo_fail("ood metadata (%s): quantiles are not sorted", what);
    }
    c->count = count;
    return 0;
}

/* n finite numbers from a JSON array of exactly n. */
static int doubles_from_json(const json_t *a, int n, double *out, const char *what)
{
    if (!json_is_array(a) || (int)json_array_size(a) != n)
        return vapo_fail("ood metadata: '%s' must be a list of %d numbers", what, n);
    for (int i = 0; i < n; i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_number(v) || !isfinite(json_number_value(v)))
            return vapo_fail("ood metadata: '%s' holds a value that is not a finite number", what);
        out[i] = json_number_value(v);
    }
    return 0;
}

static int ms_from_json(const json_t *obj, vapo_multiscale *ms)
{
    json_t *sigma, *shift, *scale, *weights, *means, *covs;
    json_int_t seed = 0;
    json_error_t err;
    if (json_unpack_ex((json_t *)obj, &err, 0, "{s:o, s?I, s:o, s:o, s:o, s:o, s:o}", "sigmas", &sigma, "seed", &seed,
                       "shift", &shift, "scale", &scale, "weights", &weights, "means", &means, "covariances", &covs))
        return vapo_fail("ood metadata (multiscale): %s", err.text);
    const int levels = json_is_array(sigma) ? (int)json_array_size(sigma) : 0;
    const int k = json_is_array(weights) ? (int)json_array_size(weights) : 0;
    if (levels < 1 || levels > VAPO_MS_MAX_LEVELS || k < 1 || k > VAPO_MS_MAX_COMPONENTS || seed < 0 ||
        !json_is_array(means) || (int)json_array_size(means) != k || !json_is_array(covs) ||
        (int)json_array_size(covs) != k)
        return vapo_fail("ood metadata (multiscale): need 1..%d sigmas, 1..%d weights, as many means and covariances, "
                         "and a seed >= 0", VAPO_MS_MAX_LEVELS, VAPO_MS_MAX_COMPONENTS);
    double s[VAPO_MS_MAX_LEVELS];
    ms->levels = levels, ms->k = k, ms->seed = (uint64_t)seed;
    const int dim = vapo_ood_ms_dim(ms);
    if (doubles_from_json(sigma, levels, s, "sigmas") || doubles_from_json(shift, dim, ms->shift, "shift") ||
        doubles_from_json(scale, dim, ms->scale, "scale") || doubles_from_json(weights, k, ms->weight, "weights"))
        return -1;
    for (int l = 0; l < levels; l++) {
        if (!(s[l] >= 0 && s[l] <= 100) || (l == 0 && s[l] != 0))
            return vapo_fail("ood metadata (multiscale): sigmas must be in [0, 100], the first 0 (the image itself)");
        ms->sigma[l] = (float)s[l];
    }
    for (int c = 0; c < dim; c++)
        if (!(ms->scale[c] > 0))
            return vapo_fail("ood metadata (multiscale): scales must be positive");
    for (int j = 0; j < k; j++) {
        if (!(ms->weight[j] > 0 && ms->weight[j] <= 1))
            return vapo_fail("ood metadata (multiscale): weights must be in (0, 1]");
        if (doubles_from_json(json_array_get(means, j), dim, ms->mean[j], "means") ||
            doubles_from_json(json_array_get(covs, j), dim * dim, ms->cov[j], "covariances"))
            return -1;
        for (int a = 0; a < dim; a++)
            for (int b = 0; b < a; b++)
                if (ms->cov[j][a * dim + b] != ms->cov[j][b * dim + a])
                    return vapo_fail("ood metadata (multiscale): covariance %d is not symmetric", j);
    }
    return vapo_ood_ms_prepare(ms);
}

#define GAUSS_MAX_DIM 8192

static int gauss_from_json(const json_t *obj, vapo_gauss *g)
{
    json_t *mean = json_object_get(obj, "mean");
    const int dim = json_is_array(mean) ? (int)json_array_size(mean) : 0;
    json_t *chol = json_object_get(obj, "chol");
    if (!json_is_object(obj) || dim < 1 || dim > GAUSS_MAX_DIM || !json_is_array(chol) ||
        json_array_size(chol) != packed(dim, 0)) /* before allocating what the lengths ask for */
        return vapo_fail("ood metadata (mahalanobis): need a 'gaussian' object with 1..%d means and a factor of "
                         "dim (dim + 1) / 2 values", GAUSS_MAX_DIM);
    if (gauss_alloc(g, dim) || doubles_from_json(mean, dim, g->mean, "mean") ||
        doubles_from_json(json_object_get(obj, "scale"), dim, g->scale, "scale") ||
        doubles_from_json(chol, (int)packed(dim, 0), g->chol, "chol"))
        return -1;
    for (int r = 0; r < dim; r++)
        if (!(g->scale[r] > 0) || !(g->chol[packed(r, r)] > 0))
            return vapo_fail("ood metadata (mahalanobis): scales and the factor's diagonal must be positive");
    return 0;
}

static int ood_from_json(const json_t *obj, vapo_ood *o);

int vapo_ood_from_json(const json_t *obj, vapo_ood *o)
{
    vapo_ood_init(o);
    int rc = ood_from_json(obj, o);
    if (rc)
        vapo_ood_free(o);
    return rc;
}

static int ood_from_json(const json_t *obj, vapo_ood *o)
{
    if (!obj)
        return 0;
    double keep = o->keep;
    const char *def = "energy";
    json_t *scores = NULL;
    json_error_t err;
    if (!json_is_object(obj) ||
        json_unpack_ex((json_t *)obj, &err, 0, "{s?F, s?s, s?o}", "keep", &keep, "default", &def, "scores", &scores))
        return vapo_fail("ood metadata: %s", json_is_object(obj) ? err.text : "not an object");
    if (!(keep > 0 && keep < 1))
        return vapo_fail("ood metadata: keep must be in (0, 1)");
    o->keep = keep;
    if (quantiles_from_json(obj, "energy", &o->calib[VAPO_SCORE_ENERGY]))
        return -1;
    if (scores && !json_is_object(scores))
        return vapo_fail("ood metadata: 'scores' must be an object");
    for (int k = VAPO_SCORE_COMPLEXITY; scores && k < VAPO_SCORE_KINDS; k++) {
        json_t *s = json_object_get(scores, names[k]);
        if (!s)
            continue;
        if (!json_is_object(s))
            return vapo_fail("ood metadata: scores.%s must be an object", names[k]);
        if (quantiles_from_json(s, names[k], &o->calib[k]))
            return -1;
        if (k == VAPO_SCORE_MULTISCALE && ms_from_json(json_object_get(s, "mixture"), &o->ms))
            return -1;
        if (k == VAPO_SCORE_MAHALANOBIS && gauss_from_json(json_object_get(s, "gaussian"), &o->g))
            return -1;
    }
    vapo_score_kind d = VAPO_SCORE_ENERGY;
    if (vapo_score_parse(def, &d))
        return vapo_fail("ood metadata: unknown default score (expected %s)", vapo_score_choices());
    if (o->calib[d].count <= 0 || !vapo_ood_available(o, d))
        return vapo_fail("ood metadata: the default score '%s' is not calibrated", names[d]);
    o->default_score = d;
    return 0;
}
