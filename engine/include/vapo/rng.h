/* Counter-based Gaussian and uniform noise keyed by (seed, stream, index).
 * Element `index` of a stream is the same number whatever the batch it is
 * drawn in and on whichever backend: this names samples by (seed, k). */
#ifndef VAPO_RNG_H
#define VAPO_RNG_H

#include <stddef.h>
#include <stdint.h>

/* Standard normals for elements first .. first+n-1 of (seed, stream). */
void vapo_rng_normal(uint64_t seed, uint64_t stream, uint64_t first, size_t n, float *out);

/* One uniform in [0, 1) and one integer in [0, bound) for element `index`. */
double vapo_rng_uniform(uint64_t seed, uint64_t stream, uint64_t index);
uint64_t vapo_rng_below(uint64_t seed, uint64_t stream, uint64_t index, uint64_t bound);

/* Streams used by the project, so that independent uses never share noise. */
enum {
    VAPO_STREAM_SAMPLE_NOISE = 1, /* initial ODE noise: stream base + sample index */
    VAPO_STREAM_INIT = 1u << 20,  /* parameter initialisation */
    VAPO_STREAM_TRAIN = 1u << 21, /* training: times, noises, flips, shuffles */
    /* 1u << 22: vapo-score's noise images */
    VAPO_STREAM_OOD_NOISE = 1u << 23, /* the multiscale OOD score's fixed noise directions */
};

#endif
