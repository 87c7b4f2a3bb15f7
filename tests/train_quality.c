/* vapo-train's sample quality (train/trainer/quality.c): the Frechet distance
 * on constructed sets whose answer is known exactly, and the judge's features
 * and class probabilities against PyTorch's (bench/judge.py --fixture wrote
 * tests/data/judge_fixture.json from the committed weights). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "testutil.h"
#include "trainer/quality.h"
#include "vapo/dataset.h"
#include "vapo/error.h"

/* Set 2 = s * (set 1 - its mean) + m2: FD = |m1 - m2|^2 + (1 - s)^2 Tr C1. */
static void test_frechet(void)
{
    enum { N = 300, D = 6 };
    double *a = malloc(sizeof(double) * N * D), *b = malloc(sizeof(double) * N * D), mean[D] = {0}, tr = 0, shift = 0;
    float z[N * D];
    vapo_rng_normal(5, 3, 0, N * D, z);
    for (int i = 0; i < N * D; i++) /* correlated columns */
        a[i] = z[i] * (1 + i % D) + 0.5 * z[i - i % D];
    for (int i = 0; i < N * D; i++)
        mean[i % D] += a[i] / N;
    for (int c = 0; c < D; c++) {
        double v = 0;
        for (int i = 0; i < N; i++)
            v += (a[i * D + c] - mean[c]) * (a[i * D + c] - mean[c]);
        tr += v / (N - 1);
    }
    const double s = 0.6, m2[D] = {1, -2, 0.5, 0, 3, -1};
    for (int i = 0; i < N * D; i++)
        b[i] = s * (a[i] - mean[i % D]) + m2[i % D];
    for (int c = 0; c < D; c++)
        shift += (mean[c] - m2[c]) * (mean[c] - m2[c]);
    CHECK(fabs(frechet_distance(a, N, a, N, D)) < 1e-7 * tr, "FD of a set to itself: %g",
          frechet_distance(a, N, a, N, D));
    CHECK_CLOSE(frechet_distance(a, N, b, N, D), shift + (1 - s) * (1 - s) * tr, 1e-8, "FD shifted and scaled");
    CHECK_CLOSE(frechet_distance(b, N, a, N, D), shift + (1 - s) * (1 - s) * tr, 1e-8, "FD is symmetric");
    free(a), free(b);
}

static void test_judge(const char *weights, const char *fixture)
{
    json_error_t err;
    json_t *fx = json_load_file(fixture, 0, &err);
    judge *j = judge_load(weights);
    vapo_dataset *ds = NULL;
    CHECK(fx && j, "fixture %s (%s) or judge %s (%s)", fixture, fx ? "ok" : err.text, weights,
          j ? "ok" : vapo_last_error());
    if (!fx || !j)
        goto done;
    if (vapo_dataset_load_idx(json_string_value(json_object_get(fx, "images")), NULL, &ds)) {
        printf("SKIP the judge's features: %s\n", vapo_last_error());
        goto done;
    }
    json_t *idx = json_object_get(fx, "indices"), *feat = json_object_get(fx, "features"),
           *prob = json_object_get(fx, "probabilities");
    for (size_t k = 0; k < json_array_size(idx); k++) {
        float x[784];
        double f[JUDGE_FEATURES], p[10], err_f = 0, norm = 0, err_p = 0;
        vapo_dataset_get(ds, (int)json_integer_value(json_array_get(idx, k)), 1, x, NULL);
        CHECK(!judge_features(j, 1, x, f), "features: %s", vapo_last_error());
        judge_classes(j, f, p);
        for (int c = 0; c < JUDGE_FEATURES; c++) {
            const double want = json_number_value(json_array_get(json_array_get(feat, k), c));
            err_f = fmax(err_f, fabs(f[c] - want));
            norm = fmax(norm, fabs(want));
        }
        for (int c = 0; c < 10; c++)
            err_p = fmax(err_p, fabs(p[c] - json_number_value(json_array_get(json_array_get(prob, k), c))));
        CHECK(err_f <= 1e-4 * fmax(norm, 1) && err_p < 1e-5, "image %zu: features off by %g (max %g), "
              "probabilities by %g", k, err_f, norm, err_p);
    }
done:
    vapo_dataset_free(ds);
    judge_free(j);
    json_decref(fx);
}

int main(int argc, char **argv)
{
    test_frechet();
    if (argc == 3)
        test_judge(argv[1], argv[2]);
    return test_finish("train_quality");
}
