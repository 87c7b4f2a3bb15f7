/* The OOD scores (engine/ood.c) and their calibration in a checkpoint:
 * values monotone in the right direction on constructed cases, the mixture
 * fit on known clusters, the calibration stored and reloaded bit for bit
 * (metadata and a whole model file), batch invariance, and refusals of bad
 * metadata. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "vapo/backend.h"
#include "vapo/error.h"
#include "vapo/model.h"
#include "vapo/ode_batch.h"
#include "vapo/ood.h"

static void test_names(void)
{
    vapo_score_kind k;
    for (int i = 0; i < VAPO_SCORE_KINDS; i++)
        CHECK(!vapo_score_parse(vapo_score_name((vapo_score_kind)i), &k) && k == (vapo_score_kind)i, "name %d", i);
    CHECK(vapo_score_parse("Energy", &k) && vapo_score_parse("", &k) && vapo_score_parse(NULL, &k),
          "bad names accepted");
    CHECK(strstr(vapo_last_error(), "multiscale or mahalanobis") != NULL, "the error names the choices: %s",
          vapo_last_error());
}

/* ood_score falls as the value rises; the keep threshold sits at the 5% quantile. */
static void test_quantiles(void)
{
    vapo_ood o;
    vapo_ood_init(&o);
    double v[1000];
    for (int i = 0; i < 1000; i++)
        v[i] = (i * 7919) % 1000; /* 0..999, shuffled */
    CHECK(vapo_ood_score(&o, VAPO_SCORE_ENERGY, 5.0) == 1.0 && !vapo_ood_in_distribution(&o, VAPO_SCORE_ENERGY, 5),
          "uncalibrated: score 1, never in distribution");
    CHECK(!vapo_ood_calibrate(&o, VAPO_SCORE_ENERGY, v, 1000), "calibrate: %s", vapo_last_error());
    double prev = 2;
    for (double e = -10; e < 1010; e += 0.5) {
        double s = vapo_ood_score(&o, VAPO_SCORE_ENERGY, e);
        CHECK(s <= prev && s >= 0 && s <= 1, "ood_score not monotone at %g: %g after %g", e, s, prev);
        prev = s;
    }
    CHECK_CLOSE(vapo_ood_score(&o, VAPO_SCORE_ENERGY, 499.5), 0.5, 1e-3, "median");
    CHECK(vapo_ood_in_distribution(&o, VAPO_SCORE_ENERGY, 60) && !vapo_ood_in_distribution(&o, VAPO_SCORE_ENERGY, 40),
          "keep 0.95: 60 in, 40 out");
    CHECK(vapo_ood_score(&o, VAPO_SCORE_ENERGY, NAN) == 1.0 && vapo_ood_score(&o, VAPO_SCORE_ENERGY, -INFINITY) == 1.0,
          "non-finite values are least typical");
}

/* The complexity score adds ln 2 x PNG bits: with the same energy, a
 * constant image (few bits) scores below a busy one. */
static void test_complexity(void)
{
    enum { C = 1, H = 28, W = 28, D = C * H * W };
    float flat[D], busy[D];
    for (int i = 0; i < D; i++)
        flat[i] = 0.25f, busy[i] = (float)vapo_rng_uniform(3, 0, i) * 2 - 1;
    vapo_ood o;
    vapo_ood_init(&o);
    const float phi = 100.0f;
    double bf = vapo_ood_png_bits(flat, C, H, W), bb = vapo_ood_png_bits(busy, C, H, W);
    CHECK(bf > 0 && bb > 4 * bf, "PNG bits: flat %g, busy %g", bf, bb);
    double vf = vapo_ood_value(&o, VAPO_SCORE_COMPLEXITY, C, H, W, flat, &phi, NULL, NULL);
    double vb = vapo_ood_value(&o, VAPO_SCORE_COMPLEXITY, C, H, W, busy, &phi, NULL, NULL);
    CHECK(vf == phi + M_LN2 * bf && vb > vf, "complexity values: flat %g, busy %g", vf, vb);
    CHECK(vapo_ood_value(&o, VAPO_SCORE_ENERGY, C, H, W, flat, &phi, NULL, NULL) == phi, "energy value is phi");
    const float higher = 200.0f; /* and it still rises with the energy */
    CHECK(vapo_ood_value(&o, VAPO_SCORE_COMPLEXITY, C, H, W, flat, &higher, NULL, NULL) > vf, "complexity not rising");
}

/* Two clusters of features (the last one, PNG bits per value, that of a
 * flat 8x8 image); the fit finds them, and the value (log-density) is higher
 * at a cluster than between or beyond them. */
enum { FH = 8, FW = 8 };
static float flat_image[FH * FW];

static void test_mixture(void)
{
    enum { N = 900 };
    vapo_ood o;
    vapo_ood_init(&o);
    vapo_multiscale *ms = &o.ms;
    vapo_ood_ms_defaults(ms);
    ms->levels = 2;
    const int dim = vapo_ood_ms_dim(ms);
    for (int i = 0; i < FH * FW; i++)
        flat_image[i] = -0.5f;
    const double bits = vapo_ood_png_bits(flat_image, 1, FH, FW) / (FH * FW);
    double *f = malloc(sizeof(double) * N * dim);
    float z[64];
    for (int i = 0; i < N; i++) {
        vapo_rng_normal(11, 1, (uint64_t)i * dim, dim, z);
        for (int c = 0; c < dim - 1; c++)
            f[i * dim + c] = (i % 3 == 0 ? 10.0 : -5.0) * (c + 1) + (0.5 + 0.1 * c) * z[c];
        f[i * dim + dim - 1] = bits + 0.1 * z[dim - 1];
    }
    CHECK(!vapo_ood_ms_fit(ms, f, N, 2), "fit: %s", vapo_last_error());
    free(f);
    CHECK(ms->k == 2 && fabs(ms->weight[0] + ms->weight[1] - 1) < 1e-9, "weights %g + %g", ms->weight[0],
          ms->weight[1]);
    const int big = ms->weight[0] > ms->weight[1] ? 0 : 1; /* -5 (c + 1): two thirds of the points */
    CHECK_CLOSE(ms->weight[big], 2.0 / 3, 1e-6, "weight of the larger cluster");
    for (int c = 0; c < dim - 1; c++) {
        double got = ms->mean[big][c] * ms->scale[c] + ms->shift[c];
        CHECK(fabs(got + 5.0 * (c + 1)) < 0.2, "cluster mean %d: %g, want %g", c, got, -5.0 * (c + 1));
    }
    /* features (phi_0, log g_0, phi_1, log g_1) at t of the way from the big cluster's centre (t = 0) to the
     * other's (t = 1), and beyond */
    double prev = INFINITY;
    for (int step = 0; step <= 4; step++) {
        const double t = step == 4 ? -1.0 : step * 0.25;
        float phi[2], g[2];
        for (int l = 0; l < 2; l++) {
            phi[l] = (float)(-5.0 * (2 * l + 1) + t * 15.0 * (2 * l + 1));
            g[l] = (float)exp(-5.0 * (2 * l + 2) + t * 15.0 * (2 * l + 2));
        }
        double v = vapo_ood_value(&o, VAPO_SCORE_MULTISCALE, 1, FH, FW, flat_image, phi, g, NULL);
        if (step <= 2)
            CHECK(v < prev, "log-density not falling away from the cluster: %g at t = %g after %g", v, t, prev);
        else if (step == 4)
            CHECK(v < prev, "beyond the cluster (t = -1) %g is not below the midpoint's", v);
        if (step <= 2)
            prev = v;
    }
}

/* The Gaussian of the mahalanobis score on correlated features (the first
 * two move together): the fit finds mean and scale; the value is highest at
 * the mean, falls along a line away from it, and a step against the
 * correlation costs more than the same step along it. Features go in as the
 * network gives them (v = log(1 + f), so f = e^v - 1). */
static void test_gaussian(void)
{
    enum { N = 2000, NF = 4, DIM = NF + 1 };
    const double bits = vapo_ood_png_bits(flat_image, 1, FH, FW) / (FH * FW);
    double *v = malloc(sizeof(double) * N * DIM);
    float z[DIM];
    for (int i = 0; i < N; i++) {
        vapo_rng_normal(13, 1, (uint64_t)i * DIM, DIM, z);
        v[i * DIM + 0] = 2.0 + 0.5 * z[0];
        v[i * DIM + 1] = 3.0 + 0.5 * (0.95 * z[0] + 0.31 * z[1]); /* correlation 0.95 with the first */
        v[i * DIM + 2] = 1.0 + 0.2 * z[2];
        v[i * DIM + 3] = 4.0 + 1.0 * z[3];
        v[i * DIM + 4] = bits + 0.01 * z[4];
    }
    vapo_ood o;
    vapo_ood_init(&o);
    CHECK(vapo_ood_gauss_fit(&o.g, v, 2 * DIM - 1, DIM) != 0, "a fit on too few images accepted");
    vapo_ood_free(&o);
    CHECK(!vapo_ood_gauss_fit(&o.g, v, N, DIM), "fit: %s", vapo_last_error());
    free(v);
    CHECK(vapo_ood_available(&o, VAPO_SCORE_MAHALANOBIS) && vapo_ood_features(&o, VAPO_SCORE_MAHALANOBIS) == NF &&
              vapo_ood_rows(&o, VAPO_SCORE_MAHALANOBIS) == 1 && !vapo_ood_needs_grad(VAPO_SCORE_MAHALANOBIS),
          "the score's shape");
    CHECK(fabs(o.g.mean[0] - 2) < 0.05 && fabs(o.g.mean[3] - 4) < 0.1 && fabs(o.g.scale[2] - 0.2) < 0.02,
          "mean %g %g, scale %g", o.g.mean[0], o.g.mean[3], o.g.scale[2]);
    const double centre[NF] = {2, 3, 1, 4};
    double prev = INFINITY, along = 0, across = 0;
    for (int step = 0; step <= 4; step++) { /* away from the mean along feature 3 */
        float f[NF];
        for (int c = 0; c < NF; c++)
            f[c] = (float)expm1(centre[c] + (c == 3 ? step * 0.75 : 0));
        const double val = vapo_ood_value(&o, VAPO_SCORE_MAHALANOBIS, 1, FH, FW, flat_image, NULL, NULL, f);
        CHECK(isfinite(val) && val < prev, "value not falling away from the mean: %g after %g (step %d)", val, prev,
              step);
        prev = val;
    }
    for (int dir = 0; dir < 2; dir++) { /* 0.5 along (+, +) and across (+, -) the correlation */
        float f[NF];
        for (int c = 0; c < NF; c++)
            f[c] = (float)expm1(centre[c] + (c == 0 ? 0.35 : c == 1 ? (dir ? -0.35 : 0.35) : 0));
        *(dir ? &across : &along) = vapo_ood_value(&o, VAPO_SCORE_MAHALANOBIS, 1, FH, FW, flat_image, NULL, NULL, f);
    }
    CHECK(across < along - 5, "across the correlation %g, along it %g", across, along);
    float busy[FH * FW], f[NF]; /* the same features with many more PNG bits */
    for (int c = 0; c < NF; c++)
        f[c] = (float)expm1(centre[c]);
    for (int i = 0; i < FH * FW; i++)
        busy[i] = (float)vapo_rng_uniform(3, 0, i) * 2 - 1;
    CHECK(vapo_ood_value(&o, VAPO_SCORE_MAHALANOBIS, 1, FH, FW, busy, NULL, NULL, f) <
              vapo_ood_value(&o, VAPO_SCORE_MAHALANOBIS, 1, FH, FW, flat_image, NULL, NULL, f) - 100,
          "an image far from the fit's PNG bits is not less typical");
    vapo_ood_free(&o);
    CHECK(o.g.dim == 0 && !vapo_ood_available(&o, VAPO_SCORE_MAHALANOBIS), "freed");
}

/* A model of the tiny preset, calibrated on random images. */
static vapo_model *tiny_model(vapo_backend *be, float **images, int n)
{
    vapo_arch arch;
    vapo_arch_preset("tiny", &arch);
    vapo_net *net = vapo_net_create(be, &arch);
    CHECK(net && !vapo_net_init(net, 5) && !vapo_net_set_scales(net, 0.5f), "net: %s", vapo_last_error());
    vapo_loss_config loss = vapo_loss_config_default();
    vapo_model *m = vapo_model_wrap(net, &loss);
    const int d = (int)vapo_net_input_size(net);
    float *x = malloc(sizeof(float) * n * d);
    for (int i = 0; i < n * d; i++) /* smooth-ish images: a ramp plus noise */
        x[i] = (float)(0.6 * sin(0.3 * (i % d) + 0.01 * (i / d)) + 0.3 * (vapo_rng_uniform(7, 0, i) - 0.5));
    CHECK(!vapo_model_calibrate(m, x, n / 2, x + (size_t)(n / 2) * d, n / 2, 32), "calibrate: %s", vapo_last_error());
    *images = x;
    return m;
}

static void test_model_roundtrip(void)
{
    enum { N = 400 };
    vapo_backend *be = vapo_backend_cpu(1);
    float *x;
    vapo_model *m = tiny_model(be, &x, N);
    const int d = (int)vapo_net_input_size(m->net);
    CHECK(m->ood.default_score == VAPO_SCORE_MAHALANOBIS, "the default is the mahalanobis score");
    for (int k = 0; k < VAPO_SCORE_KINDS; k++)
        CHECK(m->ood.calib[k].count == N / 2, "score %d calibrated on %d", k, m->ood.calib[k].count);

    char path[] = "/tmp/vapo_test_ood_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK(!vapo_model_save(path, m, NULL, 0), "save: %s", vapo_last_error());
    vapo_model *r = vapo_model_load(path, be);
    CHECK(r != NULL, "load: %s", vapo_last_error());
    unlink(path);
    if (!r)
        goto done;
    CHECK(r->ood.default_score == m->ood.default_score && r->ood.keep == m->ood.keep, "default and keep");
    CHECK(!memcmp(r->ood.calib, m->ood.calib, sizeof m->ood.calib), "quantiles differ after reload");
    const vapo_multiscale *a = &m->ood.ms, *b = &r->ood.ms;
    CHECK(a->levels == b->levels && a->k == b->k && a->seed == b->seed && !memcmp(a->sigma, b->sigma, sizeof a->sigma),
          "mixture shape differs after reload");
    CHECK(!memcmp(a->mean, b->mean, sizeof a->mean) && !memcmp(a->cov, b->cov, sizeof a->cov) &&
              !memcmp(a->weight, b->weight, sizeof a->weight) && !memcmp(a->shift, b->shift, sizeof a->shift),
          "mixture parameters differ after reload");
    const vapo_gauss *ga = &m->ood.g, *gb = &r->ood.g;
    CHECK(ga->dim == vapo_net_feature_count(m->net) + 1 && gb->dim == ga->dim &&
              !memcmp(ga->mean, gb->mean, sizeof(double) * ga->dim) &&
              !memcmp(ga->scale, gb->scale, sizeof(double) * ga->dim) &&
              !memcmp(ga->chol, gb->chol, sizeof(double) * ga->dim * (ga->dim + 1) / 2),
          "Gaussian differs after reload (dim %d, %d)", ga->dim, gb->dim);
    /* the same values image by image, alone or in a batch (batch invariance) */
    double va[16], vb[16], one, va_maha[16];
    for (int k = 0; k < VAPO_SCORE_KINDS; k++) {
        CHECK(!vapo_model_score(m, (vapo_score_kind)k, 16, x, 64, va) &&
                  !vapo_model_score(r, (vapo_score_kind)k, 16, x, 5, vb),
              "score: %s", vapo_last_error());
        for (int i = 0; i < 16; i++)
            CHECK(va[i] == vb[i] && isfinite(va[i]), "score %d image %d: %.17g before, %.17g after reload", k, i,
                  va[i], vb[i]);
        CHECK(!vapo_model_score(r, (vapo_score_kind)k, 1, x + 9 * d, 1, &one) && one == va[9],
              "score %d of image 9 alone: %.17g, in a batch %.17g", k, one, va[9]);
        if (k == VAPO_SCORE_MAHALANOBIS)
            memcpy(va_maha, va, sizeof va);
    }
    /* the server's path: energy rows of the sampler pool with their features, 16 in one step, give the
     * values vapo_model_score gives */
    vapo_pool *pool = vapo_model_pool(r);
    int ids[16];
    for (int i = 0; i < 16; i++)
        ids[i] = vapo_pool_add(pool, NULL, x + (size_t)i * d, VAPO_POOL_FEATURES);
    CHECK(vapo_pool_step(pool, NULL, 0) == 16, "pool step: %s", vapo_last_error());
    const int nf = vapo_ood_features(&r->ood, VAPO_SCORE_MAHALANOBIS);
    float *feat = malloc(sizeof(float) * nf);
    for (int i = 0; i < 16; i++) {
        vapo_pool_result res;
        CHECK(!vapo_pool_features(pool, ids[i], feat) && !vapo_pool_take(pool, ids[i], NULL, &res), "row %d: %s", i,
              vapo_last_error());
        const double pv = vapo_ood_value(&r->ood, VAPO_SCORE_MAHALANOBIS, r->arch.in_c, r->arch.in_h, r->arch.in_w,
                                         x + (size_t)i * d, &res.phi, NULL, feat);
        CHECK(pv == va_maha[i], "pool value of image %d: %.17g, vapo_model_score %.17g", i, pv, va_maha[i]);
    }
    CHECK(vapo_pool_add(pool, &r->sampling, x, VAPO_POOL_FEATURES) < 0, "features asked of a trajectory");
    free(feat);
    vapo_pool_free(pool);
    /* calibration images are mostly in distribution; flat images (simpler) less typical under the complexity
     * score than the calibration images' median */
    int in = 0;
    double v[N / 2];
    vapo_model_score(r, VAPO_SCORE_MULTISCALE, N / 2, x + (size_t)(N / 2) * d, 64, v);
    for (int i = 0; i < N / 2; i++)
        in += vapo_ood_in_distribution(&r->ood, VAPO_SCORE_MULTISCALE, v[i]);
    CHECK(in >= 0.9 * N / 2, "only %d of %d calibration images in distribution", in, N / 2);
    vapo_model_free(r);
done:
    vapo_model_free(m);
    free(x);
    be->destroy(be);
}

/* Too few images for the mixture: energy and complexity only, energy the default; it still round-trips. */
static void test_few_images(void)
{
    vapo_backend *be = vapo_backend_cpu(1);
    float *x;
    vapo_model *m = tiny_model(be, &x, 400);
    const int d = (int)vapo_net_input_size(m->net);
    CHECK(!vapo_model_calibrate(m, x, 40, x + 40 * d, 40, 16), "calibrate: %s", vapo_last_error());
    CHECK(m->ood.default_score == VAPO_SCORE_ENERGY && m->ood.calib[VAPO_SCORE_COMPLEXITY].count == 40 &&
              m->ood.calib[VAPO_SCORE_MULTISCALE].count == 0 && !vapo_ood_available(&m->ood, VAPO_SCORE_MULTISCALE),
          "40 fit images: default %d, counts %d %d", m->ood.default_score, m->ood.calib[1].count,
          m->ood.calib[2].count);
    json_t *j = vapo_ood_to_json(&m->ood);
    vapo_ood o;
    CHECK(j && !vapo_ood_from_json(j, &o) && !memcmp(o.calib, m->ood.calib, sizeof o.calib) && o.ms.k == 0 &&
              o.g.dim == 0,
          "round trip without a mixture or a Gaussian: %s", vapo_last_error());
    double v;
    CHECK(vapo_model_score(m, VAPO_SCORE_MULTISCALE, 1, x, 1, &v) != 0, "a multiscale value without a mixture");
    CHECK(vapo_model_score(m, VAPO_SCORE_MAHALANOBIS, 1, x, 1, &v) != 0, "a mahalanobis value without a Gaussian");
    json_decref(j);
    vapo_model_free(m);
    free(x);
    be->destroy(be);
}

/* Metadata that must be refused, each a small edit of a good object. */
static void test_bad_metadata(void)
{
    enum { N = 400 };
    vapo_backend *be = vapo_backend_cpu(1);
    float *x;
    vapo_model *m = tiny_model(be, &x, N);
    json_t *good = vapo_ood_to_json(&m->ood);
    vapo_ood o;
    CHECK(!vapo_ood_from_json(good, &o) && o.g.dim > 0, "the good object: %s", vapo_last_error());
    vapo_ood_free(&o);
    CHECK(!vapo_ood_from_json(NULL, &o) && o.calib[0].count == 0, "absent: nothing calibrated");
    static const char *const edits[] = {"unsorted", "sigma0", "notpd", "default", "unknown-default", "keep",
                                        "weights", "scores", "chol", "gauss-length"};
    for (size_t e = 0; e < sizeof edits / sizeof edits[0]; e++) {
        json_t *bad = json_deep_copy(good);
        json_t *mix = json_object_get(json_object_get(json_object_get(bad, "scores"), "multiscale"), "mixture");
        json_t *gauss = json_object_get(json_object_get(json_object_get(bad, "scores"), "mahalanobis"), "gaussian");
        const char *what = edits[e];
        if (!strcmp(what, "unsorted"))
            json_array_set_new(json_object_get(bad, "quantiles"), 3, json_real(1e30));
        else if (!strcmp(what, "sigma0"))
            json_array_set_new(json_object_get(mix, "sigmas"), 0, json_real(0.1));
        else if (!strcmp(what, "notpd"))
            json_array_set_new(json_array_get(json_object_get(mix, "covariances"), 0), 0, json_real(-1));
        else if (!strcmp(what, "default"))
            json_object_del(json_object_get(bad, "scores"), "mahalanobis");
        else if (!strcmp(what, "chol"))
            json_array_set_new(json_object_get(gauss, "chol"), 2, json_real(-1)); /* the second diagonal entry */
        else if (!strcmp(what, "gauss-length"))
            json_array_append_new(json_object_get(gauss, "mean"), json_real(0));
        else if (!strcmp(what, "unknown-default"))
            json_object_set_new(bad, "default", json_string("likelihood"));
        else if (!strcmp(what, "keep"))
            json_object_set_new(bad, "keep", json_real(1.5));
        else if (!strcmp(what, "weights"))
            json_array_set_new(json_object_get(mix, "weights"), 0, json_string("x"));
        else
            json_object_set_new(bad, "scores", json_integer(3));
        CHECK(vapo_ood_from_json(bad, &o) != 0, "metadata with a bad '%s' accepted", what);
        json_decref(bad);
    }
    json_decref(good);
    vapo_model_free(m);
    free(x);
    be->destroy(be);
}

int main(void)
{
    test_names();
    test_quantiles();
    test_complexity();
    test_mixture();
    test_gaussian();
    test_model_roundtrip();
    test_few_images();
    test_bad_metadata();
    return test_finish("test_ood");
}
