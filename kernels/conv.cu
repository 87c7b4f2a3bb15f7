/* Convolutions (stride 1, "same" zero padding) on CNHW activations, with
 * the CPU backend's semantics: forward assigns y = W*x + bias, backward-data
 * accumulates into dx, backward-filter accumulates into dw and db.
 *
 * k = 1 is a plain GEMM in CNHW, W[cout x cin] * X[cin x N], and goes to
 * cuBLAS: no layout question at all.
 *
 * k = 3 goes to cuDNN. A CNHW activation is a 4-D tensor with strides
 * (n: h*w, c: batch*h*w, h: w, w: 1), fully packed but not NCHW, so it is
 * described with cudnnSetTensor4dDescriptorEx and used in place. For each
 * shape and direction, cudnnFind* ranks the algorithms once; if cuDNN
 * accepts none of them for the strided layout (or each one it offered fails
 * with NOT_SUPPORTED when run), that shape and direction falls back to NCHW
 * copies made with layout.cu's transpose kernels, in a growing scratch
 * buffer. VAPO_CUDA_CONV_LAYOUT=nchw forces the fallback (the parity test
 * runs both paths), =cnhw forbids it; VAPO_CUDA_VERBOSE=1 prints what each
 * shape got.
 *
 * Math: CUDNN_FMA_MATH. CUDNN_DEFAULT_MATH lets cuDNN run float32
 * convolutions as TF32 on tensor cores on Ampere and newer (the H200
 * included), which is ~1e-3 relative error per product and breaks float32
 * parity with the CPU. Tensor-op math (CUDNN_TENSOR_OP_MATH, with
 * CUBLAS_TF32_TENSOR_OP_MATH for the 1x1 GEMMs) is a future speed switch,
 * with looser parity tolerances.
 *
 * Among the algorithms cuDNN reports working, deterministic ones come first
 * (a resumed training run repeats itself bit for bit), then by measured time. */
#include "cuda_common.cuh"

enum { DIR_FWD = 0, DIR_BWD_DATA = 1, DIR_BWD_FILTER = 2, DIR_COUNT = 3 };
static const char *const dir_name[DIR_COUNT] = {"forward", "backward-data", "backward-filter"};

#define MAX_CANDIDATES 16

/* The algorithms to try for one shape and direction, best first. */
typedef struct {
    int ready;        /* searched, ncand >= 1 */
    int nchw;         /* the candidates run on NCHW copies */
    int cnhw_refused; /* cuDNN had nothing that runs on the CNHW tensors */
    int ncand, next;  /* next: the candidate in use */
    int algo[MAX_CANDIDATES];
    size_t ws[MAX_CANDIDATES]; /* workspace bytes */
    float ms[MAX_CANDIDATES];  /* cudnnFind's time, or -1 */
} conv_choice;

struct conv_plan {
    vapo_conv_shape s;
    cudnnTensorDescriptor_t x_cnhw, y_cnhw, x_nchw, y_nchw;
    cudnnFilterDescriptor_t w;
    cudnnConvolutionDescriptor_t conv;
    conv_choice dir[DIR_COUNT];
};

/* One row of a cudnnFind* / cudnnGet*_v7 answer, whatever the direction. */
typedef struct {
    int algo;
    cudnnStatus_t status;
    cudnnDeterminism_t determinism;
    cudnnMathType_t math;
    float ms; /* measured time, or -1 (heuristics, or failed) */
} algo_perf;

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
    DNN(set_cnhw(p->x_cnhw, s, s->cin));
    DNN(set_cnhw(p->y_cnhw, s, s->cout));
    DNN(cudnnSetTensor4dDescriptor(p->x_nchw, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, s->batch, s->cin, s->h, s->w));
    DNN(cudnnSetTensor4dDescriptor(p->y_nchw, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, s->batch, s->cout, s->h, s->w));
    /* weights [cout][cin][ky][kx], the CPU's row-major W[cout x cin*k*k] */
    DNN(cudnnSetFilter4dDescriptor(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, s->cout, s->cin, s->k, s->k));
    DNN(cudnnSetConvolution2dDescriptor(p->conv, pad, pad, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    DNN(cudnnSetConvolutionMathType(p->conv, CUDNN_FMA_MATH));
#undef DNN
    return p;
}

static int same_shape(const vapo_conv_shape *a, const vapo_conv_shape *b)
{
    return a->cin == b->cin && a->cout == b->cout && a->k == b->k && a->batch == b->batch && a->h == b->h &&
           a->w == b->w;
}

static conv_plan *plan_get(cuda_backend *cb, const vapo_conv_shape *s)
{
    for (int i = 0; i < cb->nplans; i++)
        if (same_shape(&cb->plans[i]->s, s))
            return cb->plans[i];
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

/* ---- choosing algorithms ------------------------------------------------------ */

/* Measured ranking (cudnnFind*, which runs every algorithm on scratch data),
 * or cuDNN's heuristics (cudnnGet*_v7) when measuring is impossible. */
static cudnnStatus_t find_algos(cuda_backend *cb, conv_plan *p, int d, int nchw, algo_perf *out, int *nout)
{
    const cudnnTensorDescriptor_t x = nchw ? p->x_nchw : p->x_cnhw, y = nchw ? p->y_nchw : p->y_cnhw;
    const cudnnHandle_t h = cb->dnn;
    const int want = MAX_CANDIDATES;
    int got = 0, measured = 1;
    cudnnStatus_t st;
    *nout = 0;
#define COPY_PERF(r)                                                                                                   \
    for (int i = 0; i < got; i++) {                                                                                    \
        out[i].algo = (int)r[i].algo;                                                                                  \
        out[i].status = r[i].status;                                                                                   \
        out[i].determinism = r[i].determinism;                                                                         \
        out[i].math = r[i].mathType;                                                                                   \
        out[i].ms = measured && r[i].status == CUDNN_STATUS_SUCCESS ? r[i].time : -1.0f;                               \
    }
    if (d == DIR_FWD) {
        cudnnConvolutionFwdAlgoPerf_t r[MAX_CANDIDATES];
        st = cudnnFindConvolutionForwardAlgorithm(h, x, p->w, p->conv, y, want, &got, r);
        if (st != CUDNN_STATUS_SUCCESS) {
            measured = 0;
            st = cudnnGetConvolutionForwardAlgorithm_v7(h, x, p->w, p->conv, y, want, &got, r);
        }
        COPY_PERF(r);
    } else if (d == DIR_BWD_DATA) {
        cudnnConvolutionBwdDataAlgoPerf_t r[MAX_CANDIDATES];
        st = cudnnFindConvolutionBackwardDataAlgorithm(h, p->w, y, p->conv, x, want, &got, r);
        if (st != CUDNN_STATUS_SUCCESS) {
            measured = 0;
            st = cudnnGetConvolutionBackwardDataAlgorithm_v7(h, p->w, y, p->conv, x, want, &got, r);
        }
        COPY_PERF(r);
    } else {
        cudnnConvolutionBwdFilterAlgoPerf_t r[MAX_CANDIDATES];
        st = cudnnFindConvolutionBackwardFilterAlgorithm(h, x, y, p->conv, p->w, want, &got, r);
        if (st != CUDNN_STATUS_SUCCESS) {
            measured = 0;
            st = cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, x, y, p->conv, p->w, want, &got, r);
        }
        COPY_PERF(r);
    }
#undef COPY_PERF
    if (st == CUDNN_STATUS_SUCCESS)
        *nout = got < want ? got : want;
    return st;
}

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

/* Fills c with the algorithms that work for one layout, best first: cuDNN
 * lists them fastest first; deterministic ones are moved ahead, and rows it
 * timed with tensor-op math come last (they run with FMA math here). */
static void rank_algos(cuda_backend *cb, conv_plan *p, int d, int nchw, const algo_perf *r, int n, conv_choice *c)
{
    c->ncand = c->next = 0;
    for (int pass = 0; pass < 3; pass++)
        for (int i = 0; i < n && c->ncand < MAX_CANDIDATES; i++) {
            const int tensor_op =
                r[i].math == CUDNN_TENSOR_OP_MATH || r[i].math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
            if (r[i].status != CUDNN_STATUS_SUCCESS || (pass == 0 && r[i].determinism != CUDNN_DETERMINISTIC) ||
                (pass < 2 && tensor_op))
                continue;
            int seen = 0;
            for (int j = 0; j < c->ncand; j++)
                seen |= c->algo[j] == r[i].algo;
            size_t bytes;
            if (seen || workspace_size(cb, p, d, nchw, r[i].algo, &bytes) != CUDNN_STATUS_SUCCESS)
                continue;
            c->algo[c->ncand] = r[i].algo;
            c->ws[c->ncand] = bytes;
            c->ms[c->ncand] = r[i].ms;
            c->ncand++;
        }
}

static int choose(cuda_backend *cb, conv_plan *p, int d)
{
    conv_choice *c = &p->dir[d];
    const vapo_conv_shape *s = &p->s;
    algo_perf r[MAX_CANDIDATES];
    int n = 0;
    cudnnStatus_t st = CUDNN_STATUS_NOT_SUPPORTED;
    c->ready = 0;
    if (cb->conv_layout != CONV_LAYOUT_NCHW && !c->cnhw_refused) {
        st = find_algos(cb, p, d, 0, r, &n);
        rank_algos(cb, p, d, 0, r, n, c);
        if (c->ncand > 0) {
            c->nchw = 0;
            c->ready = 1;
        } else {
            c->cnhw_refused = 1;
        }
    }
    if (!c->ready && cb->conv_layout != CONV_LAYOUT_CNHW) {
        st = find_algos(cb, p, d, 1, r, &n);
        rank_algos(cb, p, d, 1, r, n, c);
        if (c->ncand > 0) {
            c->nchw = 1;
            c->ready = 1;
        }
    }
    cudaGetLastError(); /* cudnnFind may leave a benign runtime error behind */
    char what[160];
    snprintf(what, sizeof what, "conv %s cin=%d cout=%d k=%d batch=%d %dx%d", dir_name[d], s->cin, s->cout, s->k,
             s->batch, s->h, s->w);
    if (!c->ready) {
        char why[200];
        snprintf(why, sizeof why, "cuDNN offers no algorithm for the %s layout%s (last status: %s)",
                 cb->conv_layout == CONV_LAYOUT_CNHW ? "CNHW" : "CNHW or NCHW",
                 cb->conv_layout == CONV_LAYOUT_CNHW ? " (VAPO_CUDA_CONV_LAYOUT=cnhw)" : "", cudnnGetErrorString(st));
        return cuda_report(cb, what, why);
    }
    if (cb->verbose) {
        fprintf(stderr, "vapo: %s: %s layout, algorithm %d (%.3f ms) of %d candidates, workspace %zu bytes\n", what,
                c->nchw ? "NCHW-copy" : "CNHW-strided", c->algo[0], c->ms[0], c->ncand, c->ws[0]);
        if (!c->nchw && cb->conv_layout == CONV_LAYOUT_AUTO) { /* data for choosing the default layout */
            conv_choice alt;
            memset(&alt, 0, sizeof alt);
            if (find_algos(cb, p, d, 1, r, &n) == CUDNN_STATUS_SUCCESS)
                rank_algos(cb, p, d, 1, r, n, &alt);
            cudaGetLastError();
            if (alt.ncand)
                fprintf(stderr, "vapo: %s: for comparison, NCHW layout algorithm %d takes %.3f ms (plus the copies)\n",
                        what, alt.algo[0], alt.ms[0]);
        }
    }
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

/* Runs direction d through cuDNN, moving down the candidate list (and to
 * the NCHW fallback) when cuDNN refuses one at run time. */
static void conv_cudnn(cuda_backend *cb, const vapo_conv_shape *s, int d, float *out, const float *in1,
                       const float *in2)
{
    conv_plan *p = plan_get(cb, s);
    if (!p)
        return;
    conv_choice *c = &p->dir[d];
    for (;;) {
        if (!c->ready && choose(cb, p, d))
            return;
        const int algo = c->algo[c->next];
        const size_t ws_bytes = c->ws[c->next];
        void *ws = NULL;
        if (ws_bytes && !(ws = cuda_scratch(cb, &cb->workspace, &cb->workspace_bytes, ws_bytes, "cuDNN workspace")))
            return;
        const float beta = d == DIR_FWD ? 0.0f : 1.0f; /* forward assigns, the backward passes accumulate */
        const cudnnStatus_t st = c->nchw ? run_nchw(cb, p, d, algo, ws, ws_bytes, out, in1, in2)
                                         : run_algo(cb, p, d, 0, algo, ws, ws_bytes, in1, in2, out, beta);
        if (st == CUDNN_STATUS_SUCCESS) {
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
        if (cb->verbose)
            fprintf(stderr, "vapo: conv %s: cuDNN refused algorithm %d on the %s layout at run time (%s)\n",
                    dir_name[d], algo, c->nchw ? "NCHW" : "CNHW", cudnnGetErrorString(st));
        if (++c->next < c->ncand)
            continue;
        if (c->nchw || cb->conv_layout == CONV_LAYOUT_CNHW) {
            cudnn_check(cb, st, dir_name[d]);
            c->ready = 0; /* search again next time rather than index past the list */
            return;
        }
        c->cnhw_refused = 1;
        c->ready = 0;
    }
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
