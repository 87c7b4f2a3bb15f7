/* The CUDA backend's choice of cuDNN convolution algorithm
 * (kernels/conv_select.h), without a GPU: only deterministic algorithms, a
 * fixed order, decided at fixed probe batches (so never by the batch a
 * caller runs, nor by timing), and the layout rule. With a CUDA device, what
 * the rule is for: a sample's convolution outputs (forward, backward-data)
 * are the same bits whatever batch it is computed in; else "skipped: no
 * CUDA device" (a failure under VAPO_TEST_REQUIRE_CUDA=1). */
#include <string.h>

#include "../kernels/conv_select.h"
#include "testutil.h"
#include "vapo/backend.h"
#include "vapo/error.h"

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

enum { POOL = 64 }; /* samples; batches are their first B */

/* out (CNHW, c channels, B samples) -> the NCHW rows of samples [0, B) */
static void rows_of(const float *cnhw, int c, int batch, int hw, float *nchw)
{
    for (int b = 0; b < batch; b++)
        for (int ch = 0; ch < c; ch++)
            memcpy(nchw + ((size_t)b * c + ch) * hw, cnhw + ((size_t)ch * batch + b) * hw, sizeof(float) * hw);
}

/* One direction (0 forward, 1 backward-data) of shape s at `batch` samples
 * of the pool (NCHW, `in_c` channels): the outputs' NCHW rows. */
static float *run_conv(vapo_backend *be, vapo_conv_shape s, int batch, int dir, const float *pool, const float *w)
{
    const int hw = s.h * s.w, in_c = dir ? s.cout : s.cin, out_c = dir ? s.cin : s.cout;
    const size_t nin = (size_t)in_c * batch * hw, nout = (size_t)out_c * batch * hw, nw = (size_t)s.cout * s.cin * s.k * s.k;
    float *in = malloc(sizeof(float) * nin), *out = malloc(sizeof(float) * nout);
    float *rows = malloc(sizeof(float) * nout);
    for (int b = 0; b < batch; b++) /* NCHW pool -> CNHW batch */
        for (int c = 0; c < in_c; c++)
            memcpy(in + ((size_t)c * batch + b) * hw, pool + ((size_t)b * in_c + c) * hw, sizeof(float) * hw);
    float *din = be->alloc(be, sizeof(float) * nin), *dout = be->alloc(be, sizeof(float) * nout);
    float *dw = be->alloc(be, sizeof(float) * nw);
    be->upload(be, din, in, sizeof(float) * nin);
    be->upload(be, dw, w, sizeof(float) * nw);
    s.batch = batch;
    if (dir) {
        be->zero(be, dout, sizeof(float) * nout);
        be->conv_backward_data(be, &s, dout, din, dw);
    } else {
        be->conv_forward(be, &s, dout, din, dw, NULL);
    }
    be->download(be, out, dout, sizeof(float) * nout);
    rows_of(out, out_c, batch, hw, rows);
    be->free(be, din), be->free(be, dout), be->free(be, dw);
    free(in), free(out);
    return rows;
}

static void check_cuda_batch_invariance(void)
{
    const char *require = getenv("VAPO_TEST_REQUIRE_CUDA");
    vapo_backend *cuda = vapo_backend_cuda(0);
    if (!cuda) {
        printf("cuda: skipped: no CUDA device (%s)\n", vapo_last_error());
        CHECK(!(require && *require && strcmp(require, "0")), "VAPO_TEST_REQUIRE_CUDA is set");
        return;
    }
    const vapo_conv_shape shapes[] = {{.cin = 1, .cout = 32, .k = 3, .h = 28, .w = 28},
                                      {.cin = 64, .cout = 64, .k = 3, .h = 14, .w = 14},
                                      {.cin = 128, .cout = 128, .k = 3, .h = 8, .w = 8},
                                      {.cin = 64, .cout = 32, .k = 1, .h = 7, .w = 7}};
    const int batches[] = {1, 3, 17, POOL};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (int dir = 0; dir < 2; dir++) {
            const vapo_conv_shape s = shapes[i];
            const int hw = s.h * s.w, in_c = dir ? s.cout : s.cin, out_c = dir ? s.cin : s.cout;
            float *pool = malloc(sizeof(float) * POOL * in_c * hw), *w = malloc(sizeof(float) * s.cout * s.cin * s.k * s.k);
            fill_normal(pool, (size_t)POOL * in_c * hw, 11 + i, 1.0f);
            fill_normal(w, (size_t)s.cout * s.cin * s.k * s.k, 29 + i, 0.1f);
            float *ref = run_conv(cuda, s, POOL, dir, pool, w);
            for (size_t j = 0; j + 1 < sizeof batches / sizeof batches[0]; j++) {
                float *got = run_conv(cuda, s, batches[j], dir, pool, w);
                CHECK(!memcmp(got, ref, sizeof(float) * batches[j] * out_c * hw),
                      "cuda conv %s cin=%d cout=%d k=%d %dx%d: the first %d samples differ from the same samples "
                      "in a batch of %d (nmse %.3g)",
                      dir ? "backward-data" : "forward", s.cin, s.cout, s.k, s.h, s.w, batches[j], POOL,
                      nmse(got, ref, (size_t)batches[j] * out_c * hw));
                free(got);
            }
            printf("  cuda conv %-13s cin=%-3d cout=%-3d k=%d %2dx%-2d: batches 1, 3, 17 and %d checked bit for bit\n",
                   dir ? "backward-data" : "forward", s.cin, s.cout, s.k, s.h, s.w, POOL);
            free(ref), free(pool), free(w);
        }
    cuda->destroy(cuda);
}

int main(void)
{
    check_lists();
    check_select();
    check_layout();
    check_cuda_batch_invariance();
    return test_finish("test_conv_select");
}
