/* Which cuDNN algorithm a 3x3 convolution runs: a pure function of the
 * direction and of what cuDNN accepts, so that it is tested without a GPU
 * (tests/test_conv_select.c) and used by conv.cu.
 *
 * The contract (docs/DESIGN.md, "Determinism"): a seed names a result, and
 * a row's result does not depend on the batch it is computed in. So:
 *  - only cuDNN's deterministic algorithms are candidates, in a fixed order
 *    of preference per direction (never a ranking by measured time, which
 *    differs between processes and would make --resume on CUDA not bit-exact);
 *  - the choice is made once per shape WITHOUT the batch size (cin, cout, k,
 *    h, w) and reused for every batch (per-sample RK45 shrinks the batch at
 *    every step; a search per batch size would cost a cudnnFind each time);
 *  - whether a candidate is accepted is asked for fixed probe batches
 *    (CONV_PROBE_BATCHES), not the batch of the first call.
 * The order: the direct sums first (implicit GEMM: the CPU's arithmetic, a
 * plain float sum of cin*k*k products per output), then GEMM, then the
 * transform algorithms (Winograd, FFT), which round differently.
 *
 * The numbers are cuDNN's enum values (cudnn_ops.h), spelled here so that
 * the test compiles without cuDNN; conv.cu checks them with static_assert. */
#ifndef VAPO_CONV_SELECT_H
#define VAPO_CONV_SELECT_H

enum { CONV_DIR_FWD = 0, CONV_DIR_BWD_DATA = 1, CONV_DIR_BWD_FILTER = 2, CONV_DIR_COUNT = 3 };

enum { /* cudnnConvolutionFwdAlgo_t */
       CONV_FWD_IMPLICIT_GEMM = 0,
       CONV_FWD_IMPLICIT_PRECOMP_GEMM = 1,
       CONV_FWD_GEMM = 2,
       CONV_FWD_DIRECT = 3,
       CONV_FWD_FFT = 4,
       CONV_FWD_FFT_TILING = 5,
       CONV_FWD_WINOGRAD = 6,
       CONV_FWD_WINOGRAD_NONFUSED = 7 };
enum { /* cudnnConvolutionBwdDataAlgo_t; ALGO_0 is non-deterministic */
       CONV_BWD_DATA_ALGO_0 = 0,
       CONV_BWD_DATA_ALGO_1 = 1,
       CONV_BWD_DATA_FFT = 2,
       CONV_BWD_DATA_FFT_TILING = 3,
       CONV_BWD_DATA_WINOGRAD = 4,
       CONV_BWD_DATA_WINOGRAD_NONFUSED = 5 };
enum { /* cudnnConvolutionBwdFilterAlgo_t; ALGO_0 and ALGO_3 are non-deterministic */
       CONV_BWD_FILTER_ALGO_0 = 0,
       CONV_BWD_FILTER_ALGO_1 = 1,
       CONV_BWD_FILTER_FFT = 2,
       CONV_BWD_FILTER_ALGO_3 = 3,
       CONV_BWD_FILTER_WINOGRAD = 4, /* not implemented by cuDNN */
       CONV_BWD_FILTER_WINOGRAD_NONFUSED = 5,
       CONV_BWD_FILTER_FFT_TILING = 6 };

#define CONV_MAX_PREFS 8

/* Direction d's candidates, best first, ended by -1. */
static inline const int *conv_preference(int d)
{
    static const int fwd[] = {CONV_FWD_IMPLICIT_PRECOMP_GEMM, CONV_FWD_IMPLICIT_GEMM, CONV_FWD_GEMM,
                              CONV_FWD_WINOGRAD, CONV_FWD_WINOGRAD_NONFUSED, CONV_FWD_FFT_TILING, CONV_FWD_FFT,
                              -1};
    static const int bwd_data[] = {CONV_BWD_DATA_ALGO_1, CONV_BWD_DATA_WINOGRAD, CONV_BWD_DATA_WINOGRAD_NONFUSED,
                                   CONV_BWD_DATA_FFT_TILING, CONV_BWD_DATA_FFT, -1};
    static const int bwd_filter[] = {CONV_BWD_FILTER_ALGO_1, CONV_BWD_FILTER_WINOGRAD_NONFUSED,
                                     CONV_BWD_FILTER_FFT_TILING, CONV_BWD_FILTER_FFT, -1};
    return d == CONV_DIR_FWD ? fwd : d == CONV_DIR_BWD_DATA ? bwd_data : bwd_filter;
}

/* The batch sizes at which "does cuDNN accept this algorithm" is asked: one
 * image (CNHW is then plain NCHW) and two strided sizes. */
#define CONV_PROBE_COUNT 3
static const int CONV_PROBE_BATCHES[CONV_PROBE_COUNT] = {1, 2, 256};

/* accepts(algo, batch, ctx): nonzero when cuDNN takes `algo` for this shape
 * and direction at `batch` images (conv.cu asks its workspace-size query). */
typedef int (*conv_accepts_fn)(int algo, int batch, void *ctx);

/* Nonzero when `accepts` takes `algo` at every probe batch. */
static inline int conv_accepted(int algo, conv_accepts_fn accepts, void *ctx)
{
    for (int b = 0; b < CONV_PROBE_COUNT; b++)
        if (!accepts(algo, CONV_PROBE_BATCHES[b], ctx))
            return 0;
    return 1;
}

/* Position in conv_preference(d), from `from` on, of the first algorithm
 * accepted at every probe batch, or -1. Depends on nothing but d and what
 * `accepts` answers: not on timing, nor on any batch a caller runs. */
static inline int conv_select(int d, int from, conv_accepts_fn accepts, void *ctx)
{
    const int *pref = conv_preference(d);
    for (int i = from; pref[i] >= 0; i++)
        if (conv_accepted(pref[i], accepts, ctx))
            return i;
    return -1;
}

/* Layout rule, fixed (not timed): NCHW copies unless `cnhw_ok`, i.e. the
 * algorithm chosen for NCHW also takes the strided CNHW tensors at every
 * probe batch; then no copies are made and the same algorithm runs.
 * `forced`: 0 (auto), 1 (cnhw only), 2 (nchw only) as VAPO_CUDA_CONV_LAYOUT
 * says. Returns 1 for NCHW copies. */
static inline int conv_use_nchw(int forced, int cnhw_ok)
{
    return forced == 2 || (forced == 0 && !cnhw_ok);
}

#endif
