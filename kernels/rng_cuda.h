/* Gaussian noise generated on the GPU, the same numbers as engine/rng.c's
 * vapo_rng_normal (up to the last ulp or two of logf/sinf/cosf): element i
 * of (seed, stream) is lane i%4 of Philox block i/4 (vapo_normal4 in
 * elementwise.h), whatever the batch it is drawn in. */
#ifndef VAPO_RNG_CUDA_H
#define VAPO_RNG_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Writes elements first .. first+n-1 of (seed, stream) to out_device, memory
 * on the calling thread's current CUDA device. The kernel is queued on the
 * legacy default stream, which the CUDA backend's (blocking) stream is
 * ordered with, so backend ops issued before and after see it in order.
 * Errors are recorded with vapo_fail and printed on stderr. */
void vapo_cuda_rng_normal(uint64_t seed, uint64_t stream, uint64_t first, size_t n, float *out_device);

#ifdef __cplusplus
}
#endif

#endif
