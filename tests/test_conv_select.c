/* The CUDA backend's choice of cuDNN convolution algorithm
 * (kernels/conv_select.h), without a GPU: only deterministic algorithms, a
 * fixed order, decided at fixed probe batches (so never by the batch a
 * caller runs, nor by timing), and the layout rule. */
#include <string.h>

#include "../kernels/conv_select.h"
#include "testutil.h"

/* cuDNN's non-deterministic (or unimplemented) algorithms, per direction */
static int banned(int d, int algo)
{
    if (d == CONV_DIR_BWD_DATA)
        return algo == CONV_BWD_DATA_ALGO_0;
    if (d == CONV_DIR_BWD_FILTER)
        return algo == CONV_BWD_FILTER_ALGO_0 || algo == CONV_BWD_FILTER_ALGO_3 || algo == CONV_BWD_FILTER_WINOGRAD;
    return 0;
}

static const int algo_count[CONV_DIR_COUNT] = {8, 6, 7}; /* cuDNN's *_ALGO_COUNT */

static void check_lists(void)
{
    for (int d = 0; d < CONV_DIR_COUNT; d++) {
        const int *pref = conv_preference(d);
        int n = 0;
        for (; pref[n] >= 0 && n < CONV_MAX_PREFS; n++) {
            CHECK(pref[n] < algo_count[d], "direction %d: algorithm %d is not one of cuDNN's", d, pref[n]);
            CHECK(!banned(d, pref[n]), "direction %d: algorithm %d is not deterministic", d, pref[n]);
            for (int j = 0; j < n; j++)
                CHECK(pref[j] != pref[n], "direction %d: algorithm %d listed twice", d, pref[n]);
        }
        CHECK(n > 0 && pref[n] == -1, "direction %d: %d candidates, or the list is not ended by -1", d, n);
    }
    /* the direct sums come first: the CPU's arithmetic */
    CHECK(conv_preference(CONV_DIR_FWD)[0] == CONV_FWD_IMPLICIT_PRECOMP_GEMM, "forward prefers precomputed implicit GEMM");
    CHECK(conv_preference(CONV_DIR_BWD_DATA)[0] == CONV_BWD_DATA_ALGO_1, "backward-data prefers ALGO_1");
    CHECK(conv_preference(CONV_DIR_BWD_FILTER)[0] == CONV_BWD_FILTER_ALGO_1, "backward-filter prefers ALGO_1");
}

/* A fake cuDNN: refuses the algorithms in `refused` (at every batch), and
 * `refused_large` only at batches above 64; logs the batches it was asked. */
typedef struct {
    int refused[8], nrefused, refused_large;
    int asked[64], nasked;
} fake;

static int fake_accepts(int algo, int batch, void *ctx)
{
    fake *f = ctx;
    if (f->nasked < 64)
        f->asked[f->nasked++] = batch;
    for (int i = 0; i < f->nrefused; i++)
        if (f->refused[i] == algo)
            return 0;
    return !(algo == f->refused_large && batch > 64);
}

static void check_select(void)
{
    for (int d = 0; d < CONV_DIR_COUNT; d++) {
        const int *pref = conv_preference(d);
        fake all = {.refused_large = -1};
        CHECK(conv_select(d, 0, fake_accepts, &all) == 0, "direction %d: everything accepted: the first choice", d);
        for (int i = 0; i < all.nasked; i++) {
            int probe = 0;
            for (int b = 0; b < CONV_PROBE_COUNT; b++)
                probe |= all.asked[i] == CONV_PROBE_BATCHES[b];
            CHECK(probe, "direction %d: asked at batch %d, not a probe batch", d, all.asked[i]);
        }
        /* the first refused: the second; refused only at a large batch: refused too */
        fake first = {.refused = {pref[0]}, .nrefused = 1, .refused_large = -1};
        CHECK(conv_select(d, 0, fake_accepts, &first) == 1, "direction %d: first refused: the second", d);
        fake large = {.refused_large = pref[0]};
        CHECK(conv_select(d, 0, fake_accepts, &large) == 1,
              "direction %d: an algorithm cuDNN refuses at a large batch is not chosen", d);
        CHECK(conv_select(d, 1, fake_accepts, &all) == 1, "direction %d: `from` is honoured", d);
        fake none = {.refused_large = -1};
        for (int i = 0; pref[i] >= 0; i++)
            none.refused[none.nrefused++] = pref[i];
        CHECK(conv_select(d, 0, fake_accepts, &none) == -1, "direction %d: nothing accepted: -1", d);
    }
    int has_one = 0, has_large = 0;
    for (int b = 0; b < CONV_PROBE_COUNT; b++)
        has_one |= CONV_PROBE_BATCHES[b] == 1, has_large |= CONV_PROBE_BATCHES[b] >= 256;
    CHECK(has_one && has_large, "probe batches include one image and a large batch");
}

static void check_layout(void)
{
    CHECK(!conv_use_nchw(0, 1), "auto, CNHW accepted: CNHW in place");
    CHECK(conv_use_nchw(0, 0), "auto, CNHW refused: NCHW copies");
    CHECK(!conv_use_nchw(1, 0) && !conv_use_nchw(1, 1), "forced cnhw");
    CHECK(conv_use_nchw(2, 0) && conv_use_nchw(2, 1), "forced nchw");
}

int main(void)
{
    check_lists();
    check_select();
    check_layout();
    return test_finish("test_conv_select");
}
