/* Tests for engine/interp.c: spherical interpolation of initial noises. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "vapo/interp.h"
#include "testutil.h"


#define DIM 784
#define PI 3.14159265358979323846

/* Test-local Gaussian noise (xorshift + Box-Muller): independent of vapo's RNG. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double uniform01(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return ((rng_state >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static void gaussian(int n, float *x)
{
    for (int i = 0; i < n; i++)
        x[i] = (float)(sqrt(-2 * log(uniform01())) * cos(2 * PI * uniform01()));
}

static double dot(int n, const float *a, const float *b)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}
static double len(int n, const float *a) { return sqrt(dot(n, a, a)); }

/* Angle between a and b, accurate near 0 and pi. */
static double angle(int n, const float *a, const float *b)
{
    double la = len(n, a), lb = len(n, b), dm = 0, dp = 0;
    for (int i = 0; i < n; i++) {
        double u = a[i] / la, v = b[i] / lb;
        dm += (u - v) * (u - v);
        dp += (u + v) * (u + v);
    }
    return 2 * atan2(sqrt(dm), sqrt(dp));
}

static int all_finite(int n, const float *x)
{
    for (int i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

/* max_i |out_i - norm * x_i / |x|| */
static double endpoint_error(int n, const float *out, const float *x, double norm)
{
    double l = len(n, x), e = 0;
    for (int i = 0; i < n; i++)
        e = fmax(e, fabs(out[i] - norm * x[i] / l));
    return e;
}

static void test_geometry(void)
{
    static float x0[DIM], x1[DIM], out[DIM];
    gaussian(DIM, x0);
    gaussian(DIM, x1);
    for (int i = 0; i < DIM; i++)
        x1[i] *= 1.3f; /* different lengths: only directions matter */
    const double norm = 1.0 * sqrt(DIM); /* omega sqrt(d), omega = 1 */
    const double theta = angle(DIM, x0, x1);
    printf("  angle between the noises: %.4f rad\n", theta);

    vapo_slerp(DIM, x0, x1, 0.0, norm, out);
    CHECK(endpoint_error(DIM, out, x0, norm) < 1e-6 * norm, "s=0: %.3e", endpoint_error(DIM, out, x0, norm));
    vapo_slerp(DIM, x0, x1, 1.0, norm, out);
    CHECK(endpoint_error(DIM, out, x1, norm) < 1e-6 * norm, "s=1: %.3e", endpoint_error(DIM, out, x1, norm));

    for (int k = 0; k <= 20; k++) {
        double s = k / 20.0;
        vapo_slerp(DIM, x0, x1, s, norm, out);
        double l = len(DIM, out), a0 = angle(DIM, x0, out), a1 = angle(DIM, out, x1);
        CHECK(fabs(l - norm) < 1e-5 * norm, "s=%g: norm %.8f, expected %.8f", s, l, norm);
        CHECK(fabs(a0 - s * theta) < 1e-5 && fabs(a1 - (1 - s) * theta) < 1e-5,
              "s=%g: angles %.7f / %.7f, expected %.7f / %.7f", s, a0, a1, s * theta, (1 - s) * theta);
    }
    /* s outside [0, 1] extrapolates along the same great circle */
    vapo_slerp(DIM, x0, x1, 1.25, norm, out);
    CHECK(fabs(angle(DIM, x0, out) - 1.25 * theta) < 1e-5, "extrapolation angle %.6f", angle(DIM, x0, out));

    /* frames = linspace(0, 1, frames), bit-identical to single calls */
    static float frames[7 * DIM];
    vapo_slerp_frames(DIM, x0, x1, 7, norm, frames);
    for (int f = 0; f < 7; f++) {
        vapo_slerp(DIM, x0, x1, f / 6.0, norm, out);
        CHECK(memcmp(out, frames + f * DIM, sizeof out) == 0, "frame %d differs from vapo_slerp", f);
    }
    vapo_slerp_frames(DIM, x0, x1, 1, norm, frames);
    vapo_slerp(DIM, x0, x1, 0.0, norm, out);
    CHECK(memcmp(out, frames, sizeof out) == 0, "frames = 1 should be s = 0");
}

/* A case small enough to check by hand: 90 degrees, halfway. */
static void test_hand_case(void)
{
    const float a[2] = {1, 0}, b[2] = {0, 3};
    float out[2];
    vapo_slerp(2, a, b, 0.5, 2.0, out);
    CHECK(fabsf(out[0] - sqrtf(2)) < 1e-6f && fabsf(out[1] - sqrtf(2)) < 1e-6f, "got (%g, %g)", out[0], out[1]);
    vapo_slerp(2, a, b, 1.0 / 3, 1.0, out);
    CHECK(fabs(out[0] - cos(PI / 6)) < 1e-6 && fabs(out[1] - sin(PI / 6)) < 1e-6, "got (%g, %g)", out[0], out[1]);
}

static void test_degenerate(void)
{
    static float x0[DIM], x1[DIM], out[DIM];
    const double norm = sqrt(DIM);
    gaussian(DIM, x0);

    /* parallel (same direction, other length) and nearly parallel */
    for (int variant = 0; variant < 2; variant++) {
        for (int i = 0; i < DIM; i++)
            x1[i] = variant == 0 ? 2 * x0[i] : x0[i] + (i == 3 ? 1e-7f : 0);
        for (int k = 0; k <= 4; k++) {
            vapo_slerp(DIM, x0, x1, k / 4.0, norm, out);
            CHECK(all_finite(DIM, out), "parallel variant %d s=%g: NaN", variant, k / 4.0);
            CHECK(fabs(len(DIM, out) - norm) < 1e-5 * norm, "parallel: norm %g", len(DIM, out));
            CHECK(endpoint_error(DIM, out, x0, norm) < 1e-5 * norm, "parallel: moved away from x0 (%g)",
                  endpoint_error(DIM, out, x0, norm));
        }
    }

    /* antipodal: any great circle is right; it must be one, without NaN */
    for (int i = 0; i < DIM; i++)
        x1[i] = -x0[i];
    for (int k = 0; k <= 8; k++) {
        double s = k / 8.0;
        vapo_slerp(DIM, x0, x1, s, norm, out);
        CHECK(all_finite(DIM, out), "antipodal s=%g: NaN", s);
        CHECK(fabs(len(DIM, out) - norm) < 1e-5 * norm, "antipodal s=%g: norm %g", s, len(DIM, out));
        CHECK(fabs(angle(DIM, x0, out) - s * PI) < 1e-5, "antipodal s=%g: angle %.6f", s, angle(DIM, x0, out));
    }
    vapo_slerp(DIM, x0, x1, 1.0, norm, out);
    CHECK(endpoint_error(DIM, out, x1, norm) < 1e-6 * norm, "antipodal s=1 endpoint");

    /* zero vectors and dimension 1 */
    memset(x1, 0, sizeof x1);
    vapo_slerp(DIM, x0, x1, 0.5, norm, out);
    CHECK(all_finite(DIM, out) && endpoint_error(DIM, out, x0, norm) < 1e-6 * norm, "zero x1");
    vapo_slerp(DIM, x1, x1, 0.5, norm, out);
    CHECK(all_finite(DIM, out) && len(DIM, out) == 0, "two zeros");
    const float p = 2, m = -3;
    float o;
    for (int k = 0; k <= 4; k++) {
        vapo_slerp(1, &p, &m, k / 4.0, 5.0, &o);
        CHECK(isfinite(o) && fabsf(fabsf(o) - 5) < 1e-6f, "dim 1, s=%g: %g", k / 4.0, o);
        vapo_slerp(1, &p, &p, k / 4.0, 5.0, &o);
        CHECK(o == 5.0f, "dim 1 parallel: %g", o);
    }
    vapo_slerp(0, x0, x1, 0.5, norm, out); /* no-op, must not touch memory */
    vapo_slerp_frames(DIM, x0, x1, 0, norm, out);
}

int main(void)
{
    test_geometry();
    test_hand_case();
    test_degenerate();
    return test_finish("test_interp");
}
