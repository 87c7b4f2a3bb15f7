/* Small helpers shared by the C tests: checks that print what differs, and
 * random fills from the project's own counter-based RNG. */
#ifndef VAPO_TESTUTIL_H
#define VAPO_TESTUTIL_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "vapo/rng.h"

static int test_failures;

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);              \
            fprintf(stderr, __VA_ARGS__);                                     \
            fprintf(stderr, "\n");                                            \
            test_failures++;                                                  \
        }                                                                     \
    } while (0)

/* |a - b| <= tol * max(1, |b|) */
#define CHECK_CLOSE(a, b, tol, what)                                                         \
    do {                                                                                     \
        double a_ = (a), b_ = (b);                                                           \
        CHECK(fabs(a_ - b_) <= (tol) * fmax(1.0, fabs(b_)), "%s: got %.9g, expected %.9g", \
              what, a_, b_);                                                                 \
    } while (0)

static inline int test_finish(const char *name)
{
    if (test_failures) {
        printf("%s: %d check(s) failed\n", name, test_failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}

static inline void fill_normal(float *x, size_t n, uint64_t seed, float scale)
{
    vapo_rng_normal(seed, 99, 0, n, x);
    for (size_t i = 0; i < n; i++)
        x[i] *= scale;
}

static inline double dotd(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* ggml-style normalised error: sum (a-b)^2 / sum b^2 */
static inline double nmse(const float *a, const float *b, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? num / den : num;
}

#endif
