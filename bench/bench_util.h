/* What the C benchmarks share: a monotonic clock, the median of repeats, the
 * backend named on the command line, non-zero ReZero scales, peak RSS and the
 * machine-readable RESULT line that bench/gpu_check.sh parses. */
#ifndef VAPO_BENCH_UTIL_H
#define VAPO_BENCH_UTIL_H

#include "vapo/net.h"

double bench_now(void);

/* CPU seconds used by the process so far (all threads): what a run costs on a
 * machine too busy for wall-clock times. */
double bench_cpu_now(void);

/* The median of t[0..n-1] (sorts t). */
double bench_median(double *t, int n);

/* vapo_backend_open(name, threads), or NULL after printing why. */
vapo_backend *bench_backend(const char *name, int threads);

/* 1 when the backend's memory is not host memory (CUDA). */
int bench_on_device(const vapo_backend *be);

/* Sets every ReZero scale (zero after vapo_net_init) to `value`, on any
 * backend, so that every residual block does real work. */

double bench_peak_rss_mib(void);

/* Prints "RESULT name=<name> <fields>" with fields given printf-style, e.g.
 * bench_result("vapo-train", "device=%s ms_per_step=%.3f", ...). */
void bench_result(const char *name, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
