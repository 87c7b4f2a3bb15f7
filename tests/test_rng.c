/* Philox4x32-10 known answers (Random123's kat_vectors) and the moments of
 * the Gaussian stream. */
#include <string.h>

#include "testutil.h"
#include "vapo/elementwise.h"
#include "vapo/rng.h"

static void kat(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1, const uint32_t want[4])
{
    vapo_u32x4 ctr = {{c0, c1, c2, c3}};
    vapo_u32x4 r = vapo_philox4x32_10(ctr, k0, k1);
    for (int i = 0; i < 4; i++)
        CHECK(r.v[i] == want[i], "philox lane %d: got %08x, expected %08x", i, r.v[i], want[i]);
}

int main(void)
{
    const uint32_t zero[4] = {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8};
    const uint32_t ones[4] = {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd};
    const uint32_t pi[4] = {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1};
    kat(0, 0, 0, 0, 0, 0, zero);
    kat(~0u, ~0u, ~0u, ~0u, ~0u, ~0u, ones);
    kat(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, pi);

    /* moments of 2^20 normals */
    const size_t n = 1u << 20;
    float *z = malloc(sizeof(float) * n);
    vapo_rng_normal(42, 7, 0, n, z);
    double m1 = 0, m2 = 0, m3 = 0, m4 = 0;
    for (size_t i = 0; i < n; i++) {
        double v = z[i];
        m1 += v, m2 += v * v, m3 += v * v * v, m4 += v * v * v * v;
    }
    m1 /= n, m2 /= n, m3 /= n, m4 /= n;
    /* standard errors: 1/sqrt(n) ~ 1e-3 for the mean; sqrt(2/n) for the variance */
    CHECK(fabs(m1) < 5e-3, "mean %g", m1);
    CHECK(fabs(m2 - 1) < 7e-3, "variance %g", m2);
    CHECK(fabs(m3) < 1.5e-2, "third moment %g", m3);
    CHECK(fabs(m4 - 3) < 4e-2, "fourth moment %g", m4);

    /* element i is the same whatever range it is drawn in */
    float part[10];
    vapo_rng_normal(42, 7, 1001, 10, part);
    CHECK(!memcmp(part, z + 1001, sizeof part), "stream slice differs from the full stream");
    /* different streams and seeds differ */
    vapo_rng_normal(42, 8, 1001, 10, part);
    CHECK(memcmp(part, z + 1001, sizeof part), "streams 7 and 8 coincide");
    vapo_rng_normal(43, 7, 1001, 10, part);
    CHECK(memcmp(part, z + 1001, sizeof part), "seeds 42 and 43 coincide");
    free(z);

    /* uniforms in [0,1), integers below a bound */
    double s = 0;
    int hist[10] = {0};
    for (int i = 0; i < 100000; i++) {
        double u = vapo_rng_uniform(1, 2, i);
        CHECK(u >= 0 && u < 1, "uniform out of range: %g", u);
        s += u;
        hist[vapo_rng_below(1, 3, i, 10)]++;
    }
    CHECK(fabs(s / 100000 - 0.5) < 0.005, "uniform mean %g", s / 100000);
    for (int b = 0; b < 10; b++)
        CHECK(abs(hist[b] - 10000) < 500, "bucket %d has %d of 100000", b, hist[b]);
    return test_finish("test_rng");
}
