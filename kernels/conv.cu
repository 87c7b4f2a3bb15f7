/* Convolutions (stride 1, "same" zero padding) on CNHW activations, with
 * the CPU backend's semantics: forward assigns y = W*x + bias, backward-data
 * accumulates into dx, backward-filter accumulates into dw and db.
 *
 * k = 1 is a plain GEMM in CNHW, W[cout x cin] * X[cin x N], and goes to
 * cuBLAS: no layout question at all.
 *
 * k = 3 goes to cuDNN. A CNHW activation is a 4-D tensor with strides
 * (n: h*w, c: batch*h*w, h: w, w: 1), fully packed but not NCHW; cuDNN can
 * take it in place through cudnnSetTensor4dDescriptorEx, or run on NCHW
 * copies made with layout.cu's transpose kernels in a growing scratch buffer.
 * Which algorithm and which layout: conv_select.h, a fixed rule per shape
 * without the batch size, made once and reused for every batch (no
 * cudnnFind: its timings differ between processes, and per-sample RK45
 * would pay one for every batch size). VAPO_CUDA_CONV_LAYOUT=nchw|cnhw
 * forces a layout (the parity test runs both); VAPO_CUDA_VERBOSE=1 prints
 * what each shape got.
 *
 * Math: CUDNN_FMA_MATH. CUDNN_DEFAULT_MATH lets cuDNN run float32
 * convolutions as TF32 on tensor cores on Ampere and newer (the H200
 * included), which is ~1e-3 relative error per product and breaks float32
 * parity with the CPU. Tensor-op math (CUDNN_TENSOR_OP_MATH, with
 * CUBLAS_TF32_TENSOR_OP_MATH for the 1x1 GEMMs) is a future speed switch,
 * with looser parity tolerances. */
#include "conv_select.h"
#include "cuda_common.cuh"

#define SAME_ALGO(ours, cudnn) static_assert((int)(ours) == (int)(cudnn), #ours " is cuDNN's " #cudnn)
SAME_ALGO(CONV_FWD_IMPLICIT_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM);
SAME_ALGO(CONV_FWD_IMPLICIT_PRECOMP_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM);
SAME_ALGO(CONV_FWD_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_GEMM);
SAME_ALGO(CONV_FWD_FFT, CUDNN_CONVOLUTION_FWD_ALGO_FFT);
SAME_ALGO(CONV_FWD_FFT_TILING, CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING);
SAME_ALGO(CONV_FWD_WINOGRAD, CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD);
SAME_ALGO(CONV_FWD_WINOGRAD_NONFUSED, CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED);
SAME_ALGO(CONV_BWD_DATA_ALGO_0, CUDNN_CONVOLUTION_BWD_DATA_ALGO_0);
SAME_ALGO(CONV_BWD_DATA_ALGO_1, CUDNN_CONVOLUTION_BWD_DATA_ALGO_1);
SAME_ALGO(CONV_BWD_DATA_FFT, CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT);
SAME_ALGO(CONV_BWD_DATA_FFT_TILING, CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING);
SAME_ALGO(CONV_BWD_DATA_WINOGRAD, CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD);
SAME_ALGO(CONV_BWD_DATA_WINOGRAD_NONFUSED, CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED);
SAME_ALGO(CONV_BWD_FILTER_ALGO_0, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0);
SAME_ALGO(CONV_BWD_FILTER_ALGO_1, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1);
SAME_ALGO(CONV_BWD_FILTER_FFT, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT);
SAME_ALGO(CONV_BWD_FILTER_ALGO_3, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3);
SAME_ALGO(CONV_BWD_FILTER_WINOGRAD_NONFUSED, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED);
SAME_ALGO(CONV_BWD_FILTER_FFT_TILING, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING);
#undef SAME_ALGO

enum { DIR_FWD = CONV_DIR_FWD, DIR_BWD_DATA = CONV_DIR_BWD_DATA, DIR_BWD_FILTER = CONV_DIR_BWD_FILTER };
static const char *const dir_name[CONV_DIR_COUNT] = {"forward", "backward-data", "backward-filter"};

/* The choice for one shape (without the batch) and direction. */
typedef struct {
    int ready; /* chosen */
    int nchw;  /* runs on NCHW copies */
    int pos;   /* position in conv_preference(d) */
    int warned_batch; /* a batch at which cuDNN refused the choice was reported */
} conv_choice;

/* Descriptors of one shape; the tensor descriptors describe `batch` images
 * and are re-set when a call comes with another batch size (a host call). */
struct conv_plan {
    vapo_conv_shape s; /* s.batch: what the tensor descriptors describe now */
    cudnnTensorDescriptor_t x_cnhw, y_cnhw, x_nchw, y_nchw;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    conv_choice dir[CONV_DIR_COUNT];
};

/* ---- plans: descriptors per shape ------------------------------------------ */

static void plan_destroy(conv_plan *p)
{
    if (!p)
        return;
    if (p->x_cnhw)
        cudnnDestroyTensorDescriptor(p->x_cnhw);
    if (p->y_cnhw)
        cudnnDestroyTensorDescriptor(p->y_cnhw);
    if (p->x_nchw)
        cudnnDestroyTensorDescriptor(p->x_nchw);
    if (p->y_nchw)
        cudnnDestroyTensorDescriptor(p->y_nchw);
    if (p->w)
        cudnnDestroyFilterDescriptor(p->w);
    if (p->conv)
        cudnnDestroyConvolutionDescriptor(p->conv);
    free(p);
}

void cuda_conv_release(cuda_backend *cb)
{
    for (int i = 0; i < cb->nplans; i++)
        plan_destroy(cb->plans[i]);
    free(cb->plans);
    cb->plans = NULL;
    cb->nplans = cb->cap_plans = 0;
}

/* A CNHW tensor of c channels: (n, c, h, w) with strides (h*w, batch*h*w, w, 1).
 * With one image that is plain NCHW, and is described as such. */
static cudnnStatus_t set_cnhw(cudnnTensorDescriptor_t d, const vapo_conv_shape *s, int c)
{
    const int hw = s->h * s->w;
    if (s->batch == 1)
        return cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, c, s->h, s->w);
    return cudnnSetTensor4dDescriptorEx(d, CUDNN_DATA_FLOAT, s->batch, c, s->h, s->w, hw, s->batch * hw, s->w, 1);
}

/* Points the four tensor descriptors at `batch` images. */
static cudnnStatus_t plan_set_batch(conv_plan *p, int batch)
{
    vapo_conv_shape *s = &p->s;
    cudnnStatus_t st;
    s->batch = batch;
    if ((st = set_cnhw(p->x_cnhw, s, s->cin)) != CUDNN_STATUS_SUCCESS ||
        (st = set_cnhw(p->y_cnhw, s, s->cout)) != CUDNN_STATUS_SUCCESS ||
        (st = cudnnSetTensor4dDescriptor(p->x_nchw, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, batch, s->cin, s->h,
                                         s->w)) != CUDNN_STATUS_SUCCESS)
        return st;
    return cudnnSetTensor4dDescriptor(p->y_nchw, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, batch, s->cout, s->h, s->w);
}

static conv_plan *plan_create(cuda_backend *cb, const vapo_conv_shape *s)
{
    conv_plan *p = (conv_plan *)calloc(1, sizeof *p);
    if (!p) {
        cuda_report(cb, "convolution plan", "out of host memory");
        return NULL;
    }
    p->s = *s;
    const int pad = s->k / 2;
#define DNN(call)                                                                                                      \
    if (cudnn_check(cb, (call), #call)) {                                                                              \
        plan_destroy(p);                                                                                               \
        return NULL;                                                                                                   \
    }
    DNN(cudnnCreateTensorDescriptor(&p->x_cnhw));
    DNN(cudnnCreateTensorDescriptor(&p->y_cnhw));
    DNN(cudnnCreateTensorDescriptor(&p->x_nchw));
    DNN(cudnnCreateTensorDescriptor(&p->y_nchw));
    DNN(cudnnCreateFilterDescriptor(&p->w));
    DNN(cudnnCreateConvolutionDescriptor(&p->conv));
    DNN(plan_set_batch(p, s->batch));
    /* weights [cout][cin][ky][kx], the CPU's row-major W[cout x cin*k*k] */
    DNN(cudnnSetFilter4dDescriptor(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, s->cout, s->cin, s->k, s->k));
    DNN(cudnnSetConvolution2dDescriptor(p->conv, pad, pad, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    DNN(cudnnSetConvolutionMathType(p->conv, CUDNN_FMA_MATH));
#undef DNN
    return p;
}

/* The plan key: the shape without the batch size. */
static int same_shape(const vapo_conv_shape *a, const vapo_conv_shape *b)
{
    return a->cin == b->cin && a->cout == b->cout && a->k == b->k && a->h == b->h && a->w == b->w;
}

/* The plan of s's shape, its descriptors set to s->batch images. */
static conv_plan *plan_get(cuda_backend *cb, const vapo_conv_shape *s)
{
    for (int i = 0; i < cb->nplans; i++) {
        conv_plan *p = cb->plans[i];
        if (!same_shape(&p->s, s))
            continue;
        if (p->s.batch != s->batch && cudnn_check(cb, plan_set_batch(p, s->batch), "convolution descriptors"))
            return NULL;
        return p;
    }
    if (cb->nplans == cb->cap_plans) {
        const int cap = cb->cap_plans ? 2 * cb->cap_plans : 16;
        conv_plan **grown = (conv_plan **)realloc(cb->plans, sizeof *grown * cap);
        if (!grown) {
            cuda_report(cb, "convolution plan", "out of host memory");
            return NULL;
        }
        cb->plans = grown;
        cb->cap_plans = cap;
    }
    conv_plan *p = plan_create(cb, s);
    if (p)
        cb->plans[cb->nplans++] = p;
    return p;
}

/* ---- choosing algorithms (conv_select.h) -------------------------------------- */

static cudnnStatus_t workspace_size(cuda_backend *cb, conv_plan *p, int d, int nchw, int algo, size_t *bytes)
{
    const cudnnTensorDescriptor_t x = nchw ? p->x_nchw : p->x_cnhw, y = nchw ? p->y_nchw : p->y_cnhw;
    *bytes = 0;
    if (d == DIR_FWD)
        return cudnnGetConvolutionForwardWorkspaceSize(cb->dnn, x, p->w, p->conv, y, (cudnnConvolutionFwdAlgo_t)algo,
                                                       bytes);
    if (d == DIR_BWD_DATA)
        return cudnnGetConvolutionBackwardDataWorkspaceSize(cb->dnn, p->w, y, p->conv, x,
                                                            (cudnnConvolutionBwdDataAlgo_t)algo, bytes);
    return cudnnGetConvolutionBackwardFilterWorkspaceSize(cb->dnn, x, y, p->conv, p->w,
                                                          (cudnnConvolutionBwdFilterAlgo_t)algo, bytes);
}

typedef struct {
    cuda_backend *cb;
    conv_plan *p;
    int d, nchw;
} probe_ctx;

/* conv_accepts_fn: cuDNN's workspace query answers NOT_SUPPORTED for an
 * algorithm that does not take these descriptors. */
static int probe_accepts(int algo, int batch, void *ctx)
{
    probe_ctx *c = (probe_ctx *)ctx;
    size_t bytes;
    return plan_set_batch(c->p, batch) == CUDNN_STATUS_SUCCESS &&
           workspace_size(c->cb, c->p, c->d, c->nchw, algo, &bytes) == CUDNN_STATUS_SUCCESS;
}

static int choose(cuda_backend *cb, conv_plan *p, int d)
{
    conv_choice *c = &p->dir[d];
    const int batch = p->s.batch, forced = cb->conv_layout == CONV_LAYOUT_CNHW ? 1
                                          : cb->conv_layout == CONV_LAYOUT_NCHW ? 2
                                                                                : 0;
    probe_ctx ctx = {cb, p, d, forced != 1};
    int pos = conv_select(d, 0, probe_accepts, &ctx), cnhw_ok = 0;
    if (pos >= 0 && forced == 0) { /* the algorithm NCHW gets: does it take CNHW too? */
        ctx.nchw = 0;
        cnhw_ok = conv_accepted(conv_preference(d)[pos], probe_accepts, &ctx);
    }
    if (cudnn_check(cb, plan_set_batch(p, batch), "convolution descriptors"))
        return -1;
    char what[160];
    snprintf(what, sizeof what, "conv %s cin=%d cout=%d k=%d %dx%d", dir_name[d], p->s.cin, p->s.cout, p->s.k,
             p->s.h, p->s.w);
    if (pos < 0)
        return cuda_report(cb, what,
                           forced == 1 ? "cuDNN takes none of the deterministic algorithms on the CNHW layout "
                                         "(VAPO_CUDA_CONV_LAYOUT=cnhw)"
                                       : "cuDNN takes none of the deterministic algorithms");
    c->pos = pos;
    c->nchw = conv_use_nchw(forced, cnhw_ok);
    c->ready = 1;
    if (cb->verbose)
        fprintf(stderr, "vapo: %s (every batch): %s layout, algorithm %d (preference %d)\n", what,
                c->nchw ? "NCHW-copy" : "CNHW-strided", conv_preference(d)[pos], pos);
    return 0;
}

/* ---- running ----------------------------------------------------------------- */

/* One cuDNN call: out = a (*) b (+ beta * out), on the layout `nchw` says.
 * forward: a = x, b = w, out = y;  backward-data: a = dy, b = w, out = dx;
 * backward-filter: a = x, b = dy, out = dw. */
static cudnnStatus_t run_algo(cuda_backend *cb, conv_plan *p, int d, int nchw, int algo, void *ws, size_t ws_bytes,
                              const float *a, const float *b, float *out, float beta)
{
    const cudnnTensorDescriptor_t x = nchw ? p->x_nchw : p->x_cnhw, y = nchw ? p->y_nchw : p->y_cnhw;
    const float one = 1.0f;
    if (d == DIR_FWD)
        return cudnnConvolutionForward(cb->dnn, &one, x, a, p->w, b, p->conv, (cudnnConvolutionFwdAlgo_t)algo, ws,
                                       ws_bytes, &beta, y, out);
    if (d == DIR_BWD_DATA)
        return cudnnConvolutionBackwardData(cb->dnn, &one, p->w, b, y, a, p->conv, (cudnnConvolutionBwdDataAlgo_t)algo,
                                            ws, ws_bytes, &beta, x, out);
    return cudnnConvolutionBackwardFilter(cb->dnn, &one, x, a, y, b, p->conv, (cudnnConvolutionBwdFilterAlgo_t)algo, ws,
                                          ws_bytes, &beta, p->w, out);
}

/* run_nchw's answer when its scratch could not be allocated (reported) */
#define SCRATCH_FAILED CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED

/* The same call on NCHW copies: CNHW inputs are transposed into scratch,
 * and results transposed back (added, for backward-data's dx +=). */
static cudnnStatus_t run_nchw(cuda_backend *cb, conv_plan *p, int d, int algo, void *ws, size_t ws_bytes, float *out,
                              const float *in1, const float *in2)
{
    const vapo_conv_shape *s = &p->s;
    const int hw = s->h * s->w;
    const size_t n = (size_t)s->batch * hw;
    float *buf = (float *)cuda_scratch(cb, &cb->layout_scratch, &cb->layout_scratch_bytes,
                                       sizeof(float) * n * (size_t)(s->cin + s->cout), "NCHW scratch");
    if (!buf)
        return SCRATCH_FAILED;
    float *xs = buf, *ys = buf + n * s->cin; /* x-side (cin) and y-side (cout) copies */
    cudnnStatus_t st;
    if (d == DIR_FWD) { /* in1 = x, in2 = w, out = y */
        cuda_swap_leading(cb, s->batch, s->cin, hw, xs, in1, 0);
        st = run_algo(cb, p, d, 1, algo, ws, ws_bytes, xs, in2, ys, 0.0f);
        if (st == CUDNN_STATUS_SUCCESS)
            cuda_swap_leading(cb, s->cout, s->batch, hw, out, ys, 0);
    } else if (d == DIR_BWD_DATA) { /* in1 = dy, in2 = w, out = dx */
        cuda_swap_leading(cb, s->batch, s->cout, hw, ys, in1, 0);
        st = run_algo(cb, p, d, 1, algo, ws, ws_bytes, ys, in2, xs, 0.0f);
        if (st == CUDNN_STATUS_SUCCESS)
            cuda_swap_leading(cb, s->cin, s->batch, hw, out, xs, 1);
    } else { /* in1 = x, in2 = dy, out = dw */
        cuda_swap_leading(cb, s->batch, s->cin, hw, xs, in1, 0);
        cuda_swap_leading(cb, s->batch, s->cout, hw, ys, in2, 0);
        st = run_algo(cb, p, d, 1, algo, ws, ws_bytes, xs, ys, out, 1.0f);
    }
    return st;
}

/* Runs direction d through cuDNN with the algorithm chosen for the shape.
 * Should cuDNN refuse it at this batch size (the probes said it would not),
 * the next algorithms of the preference order are tried for this call only,
 * and the first time is said on stderr: rows computed at such a batch may
 * round differently from the same rows in another batch. */
static void conv_cudnn(cuda_backend *cb, const vapo_conv_shape *s, int d, float *out, const float *in1,
                       const float *in2)
{
    conv_plan *p = plan_get(cb, s);
    if (!p)
        return;
    conv_choice *c = &p->dir[d];
    if (!c->ready && choose(cb, p, d))
        return;
    const int *pref = conv_preference(d);
    const float beta = d == DIR_FWD ? 0.0f : 1.0f; /* forward assigns, the backward passes accumulate */
    cudnnStatus_t st = CUDNN_STATUS_NOT_SUPPORTED;
    for (int i = c->pos; pref[i] >= 0; i++) {
        size_t ws_bytes = 0;
        void *ws = NULL;
        if ((st = workspace_size(cb, p, d, c->nchw, pref[i], &ws_bytes)) != CUDNN_STATUS_SUCCESS)
            continue;
        if (ws_bytes && !(ws = cuda_scratch(cb, &cb->workspace, &cb->workspace_bytes, ws_bytes, "cuDNN workspace")))
            return;
        st = c->nchw ? run_nchw(cb, p, d, pref[i], ws, ws_bytes, out, in1, in2)
                     : run_algo(cb, p, d, 0, pref[i], ws, ws_bytes, in1, in2, out, beta);
        if (st == CUDNN_STATUS_SUCCESS) {
            if (i != c->pos && !c->warned_batch) {
                c->warned_batch = 1;
                fprintf(stderr,
                        "vapo: warning: conv %s cin=%d cout=%d %dx%d: cuDNN refused algorithm %d at batch %d; "
                        "ran %d (results at this batch may round differently)\n",
                        dir_name[d], s->cin, s->cout, s->h, s->w, pref[c->pos], s->batch, pref[i]);
            }
            cuda_check_launch(cb, dir_name[d]);
            return;
        }
        if (c->nchw && st == SCRATCH_FAILED)
            return;
        const int category = CUDNN_STATUS_CATEGORY(st);
        if (category != CUDNN_STATUS_NOT_SUPPORTED && category != CUDNN_STATUS_BAD_PARAM) {
            cudnn_check(cb, st, dir_name[d]);
            return;
        }
    }
    if (!c->nchw && cb->conv_layout == CONV_LAYOUT_AUTO) {
        /* cuDNN's queries took the CNHW descriptors but its run refused them:
         * this shape runs on NCHW copies from now on (choose() picked the
         * algorithm for NCHW, so c->pos stands). */
        fprintf(stderr, "vapo: warning: conv %s cin=%d cout=%d %dx%d: cuDNN refused the CNHW layout at batch %d (%s); "
                        "NCHW copies from now on\n",
                dir_name[d], s->cin, s->cout, s->h, s->w, s->batch, cudnnGetErrorString(st));
        c->nchw = 1;
        conv_cudnn(cb, s, d, out, in1, in2);
        return;
    }
    cudnn_check(cb, st, dir_name[d]);
}

/* ---- 1x1: cuBLAS -------------------------------------------------------------- */

/* cuBLAS is column-major: a row-major r x c matrix is its c x r transpose. */
static void gemm(cuda_backend *cb, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k, const float *a,
                 int lda, const float *b, int ldb, float beta, float *c, int ldc, const char *what)
{
    const float one = 1.0f;
    cublas_check(cb, cublasSgemm(cb->blas, ta, tb, m, n, k, &one, a, lda, b, ldb, &beta, c, ldc), what);
}

/* ---- bias --------------------------------------------------------------------- */

static __global__ void bias_add_kernel(size_t rows, size_t n, float *y, const float *bias)
{
    for (size_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const float b = bias[r];
        float *yr = y + r * n;
        for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < n; j += (size_t)gridDim.x * blockDim.x)
            yr[j] += b;
    }
}

/* ---- the three ops ---------------------------------------------------------- */

void cuda_conv_forward(vapo_backend *be, const vapo_conv_shape *s, float *y, const float *x, const float *w,
                       const float *bias)
{
    cuda_backend *cb = cuda_enter(be);
    const size_t n = (size_t)s->batch * s->h * s->w;
    if (!n || s->cout <= 0)
        return;
    if (s->cin <= 0)
        cuda_check(cb, cudaMemsetAsync(y, 0, sizeof(float) * n * s->cout, cb->stream), "conv forward");
    else if (s->k == 1) /* y^T[N x cout] = x^T[N x cin] * w^T[cin x cout] */
        gemm(cb, CUBLAS_OP_N, CUBLAS_OP_N, (int)n, s->cout, s->cin, x, (int)n, w, s->cin, 0.0f, y, (int)n,
             "conv forward (cublasSgemm)");
    else
        conv_cudnn(cb, s, DIR_FWD, y, x, w);
    if (bias) {
        unsigned block;
        const dim3 grid = cuda_grid_rows(cb, (size_t)s->cout, n, &block);
        bias_add_kernel<<<grid, block, 0, cb->stream>>>((size_t)s->cout, n, y, bias);
        cuda_check_launch(cb, "conv forward bias");
    }
}

void cuda_conv_backward_data(vapo_backend *be, const vapo_conv_shape *s, float *dx, const float *dy, const float *w)
{
    cuda_backend *cb = cuda_enter(be);
    const size_t n = (size_t)s->batch * s->h * s->w;
    if (!n || s->cin <= 0 || s->cout <= 0)
        return;
    if (s->k == 1) /* dx^T[N x cin] += dy^T[N x cout] * w[cout x cin] */
        gemm(cb, CUBLAS_OP_N, CUBLAS_OP_T, (int)n, s->cin, s->cout, dy, (int)n, w, s->cin, 1.0f, dx, (int)n,
             "conv backward-data (cublasSgemm)");
    else
        conv_cudnn(cb, s, DIR_BWD_DATA, dx, dy, w);
}

void cuda_conv_backward_filter(vapo_backend *be, const vapo_conv_shape *s, float *dw, float *db, const float *dy,
                               const float *x)
{
    cuda_backend *cb = cuda_enter(be);
    const size_t n = (size_t)s->batch * s->h * s->w;
    if (db && s->cout > 0)
        cuda_rowsum_add(cb, (size_t)s->cout, n, db, dy);
    if (!n || s->cin <= 0 || s->cout <= 0)
        return;
    if (s->k == 1) /* dw^T[cin x cout] += x[cin x N] * dy^T[N x cout] */
        gemm(cb, CUBLAS_OP_T, CUBLAS_OP_N, s->cin, s->cout, (int)n, x, (int)n, dy, (int)n, 1.0f, dw, s->cin,
             "conv backward-filter (cublasSgemm)");
    else
        conv_cudnn(cb, s, DIR_BWD_FILTER, dw, x, dy);
}
