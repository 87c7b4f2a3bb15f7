#include "vapo/rng.h"

#include "vapo/elementwise.h"

void vapo_rng_normal(uint64_t seed, uint64_t stream, uint64_t first, size_t n, float *out)
{
    float block[4];
    uint64_t loaded = UINT64_MAX;
    for (size_t i = 0; i < n; i++) {
        uint64_t e = first + i;
        if (e / 4 != loaded) {
            loaded = e / 4;
            vapo_normal4(seed, stream, loaded, block);
        }
        out[i] = block[e % 4];
    }
}

static uint64_t rng_bits64(uint64_t seed, uint64_t stream, uint64_t index)
{
    vapo_u32x4 ctr = {{(uint32_t)index, (uint32_t)(index >> 32), (uint32_t)stream, (uint32_t)(stream >> 32)}};
    vapo_u32x4 r = vapo_philox4x32_10(ctr, (uint32_t)seed, (uint32_t)(seed >> 32));
    return ((uint64_t)r.v[0] << 32) | r.v[1];
}

double vapo_rng_uniform(uint64_t seed, uint64_t stream, uint64_t index)
{
    return (double)(rng_bits64(seed, stream, index) >> 11) * (1.0 / 9007199254740992.0);
}

uint64_t vapo_rng_below(uint64_t seed, uint64_t stream, uint64_t index, uint64_t bound)
{
    /* 128-bit multiply-shift: bias below 2^-64 * bound, negligible here. */
    return (uint64_t)(((unsigned __int128)rng_bits64(seed, stream, index) * bound) >> 64);
}
