/* Row reductions: rowsum (spatial sum pooling) and its broadcast adjoint,
 * the per-channel scale's parameter gradient, the bias gradient of a
 * convolution, and dot. Sums accumulate in double, like (or better than)
 * the CPU loops, and in a fixed order, so results are bit-reproducible run
 * to run: a row is cut into `splits` interleaved slices, one block each;
 * when splits > 1 a second kernel adds the slices' partial sums in order. */
#include "cuda_common.cuh"

/* Where a row's sum goes. */
typedef struct {
    float *out;         /* out[r] = sum, or out[r] += sum when accumulate */
    double *out_double; /* if not NULL: out_double[r] = sum instead */
    int accumulate;
} row_sink;

__device__ __forceinline__ void sink_store(row_sink k, size_t r, double sum)
{
    if (k.out_double)
        k.out_double[r] = sum;
    else if (k.accumulate)
        k.out[r] += (float)sum;
    else
        k.out[r] = (float)sum;
}

/* sum_j x[r, j] (PRODUCT: sum_j x[r, j] * y[r, j]) over slice blockIdx.x */
template <bool PRODUCT>
static __global__ void row_reduce_kernel(size_t rows, size_t len, const float *x, const float *y, double *partial,
                                         row_sink sink)
{
    const unsigned splits = gridDim.x;
    for (size_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const float *xr = x + r * len, *yr = PRODUCT ? y + r * len : NULL;
        double acc = 0.0;
        for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < len; j += (size_t)splits * blockDim.x)
            acc += PRODUCT ? (double)xr[j] * (double)yr[j] : (double)xr[j];
        acc = cuda_block_sum(acc);
        if (threadIdx.x == 0) {
            if (splits > 1)
                partial[r * splits + blockIdx.x] = acc;
            else
                sink_store(sink, r, acc);
        }
    }
}

static __global__ void row_finish_kernel(size_t rows, unsigned splits, const double *partial, row_sink sink)
{
    for (size_t r = blockIdx.x; r < rows; r += gridDim.x) {
        double acc = 0.0;
        for (unsigned s = threadIdx.x; s < splits; s += blockDim.x)
            acc += partial[r * splits + s];
        acc = cuda_block_sum(acc);
        if (threadIdx.x == 0)
            sink_store(sink, r, acc);
    }
}

/* Reduces `rows` rows of `len` elements of x (or of x .* y) into sink. */
static void row_reduce(cuda_backend *cb, size_t rows, size_t len, const float *x, const float *y, row_sink sink,
                       const char *what)
{
    if (!rows)
        return;
    if (!len) { /* empty sums: zero, or nothing to add */
        if (sink.out_double)
            cuda_check(cb, cudaMemsetAsync(sink.out_double, 0, sizeof(double) * rows, cb->stream), what);
        else if (!sink.accumulate)
            cuda_check(cb, cudaMemsetAsync(sink.out, 0, sizeof(float) * rows, cb->stream), what);
        return;
    }
    const unsigned block = len >= VAPO_CUDA_BLOCK ? VAPO_CUDA_BLOCK : (unsigned)((len + 31) / 32 * 32);
    /* few long rows: split them so that about 8 blocks per SM are busy; each
     * slice keeps at least 4 elements per thread */
    const size_t want = (size_t)cb->sm_count * 8, by_rows = rows < want ? want / rows : 1;
    const size_t by_len = (len + (size_t)block * 4 - 1) / ((size_t)block * 4);
    size_t splits = by_rows < by_len ? by_rows : by_len;
    if (splits > 1024)
        splits = 1024;
    if (splits < 1)
        splits = 1;
    double *partial = NULL;
    if (splits > 1 && !(partial = (double *)cuda_scratch(cb, &cb->partials, &cb->partials_bytes,
                                                         sizeof(double) * rows * splits, what)))
        return;
    const dim3 grid((unsigned)splits, (unsigned)(rows < 65535 ? rows : 65535), 1);
    if (y)
        row_reduce_kernel<true><<<grid, block, 0, cb->stream>>>(rows, len, x, y, partial, sink);
    else
        row_reduce_kernel<false><<<grid, block, 0, cb->stream>>>(rows, len, x, y, partial, sink);
    if (cuda_check_launch(cb, what) || splits == 1)
        return;
    const unsigned fblock = splits >= VAPO_CUDA_BLOCK ? VAPO_CUDA_BLOCK : (unsigned)((splits + 31) / 32 * 32);
    const size_t fgrid = rows < 65535 ? rows : 65535;
    row_finish_kernel<<<(unsigned)fgrid, fblock, 0, cb->stream>>>(rows, (unsigned)splits, partial, sink);
    cuda_check_launch(cb, what);
}

static row_sink to_float(float *out, int accumulate)
{
    row_sink k = {out, NULL, accumulate};
    return k;
}

void cuda_rowsum_forward(vapo_backend *be, size_t rows, size_t len, float *y, const float *x)
{
    cuda_backend *cb = cuda_enter(be);
    row_reduce(cb, rows, len, x, NULL, to_float(y, 0), "rowsum_forward");
}

void cuda_rowsum_add(cuda_backend *cb, size_t rows, size_t len, float *out, const float *m)
{
    row_reduce(cb, rows, len, m, NULL, to_float(out, 1), "conv backward-filter bias");
}

void cuda_scale_backward_param(vapo_backend *be, int c, size_t n, float *ds, const float *dy, const float *x)
{
    cuda_backend *cb = cuda_enter(be);
    if (c > 0)
        row_reduce(cb, (size_t)c, n, dy, x, to_float(ds, 1), "scale_backward_param");
}

double cuda_dot(vapo_backend *be, size_t n, const float *x, const float *y)
{
    cuda_backend *cb = cuda_enter(be);
    if (!n)
        return 0.0;
    row_sink k = {NULL, cb->dot_device, 0};
    row_reduce(cb, 1, n, x, y, k, "dot");
    /* one of the few host round trips: the scalar is read back */
    if (cuda_check(cb,
                   cudaMemcpyAsync(cb->dot_host, cb->dot_device, sizeof(double), cudaMemcpyDeviceToHost, cb->stream),
                   "dot") ||
        cuda_check(cb, cudaStreamSynchronize(cb->stream), "dot"))
        return NAN;
    return *cb->dot_host;
}

/* dx[r, j] = dy[r]: the adjoint of rowsum */
static __global__ void rowsum_backward_kernel(size_t rows, size_t len, float *dx, const float *dy)
{
    for (size_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const float v = dy[r];
        for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < len; j += (size_t)gridDim.x * blockDim.x)
            dx[r * len + j] = v;
    }
}

void cuda_rowsum_backward(vapo_backend *be, size_t rows, size_t len, float *dx, const float *dy)
{
    cuda_backend *cb = cuda_enter(be);
    if (!rows || !len)
        return;
    unsigned block;
    const dim3 grid = cuda_grid_rows(cb, rows, len, &block);
    rowsum_backward_kernel<<<grid, block, 0, cb->stream>>>(rows, len, dx, dy);
    cuda_check_launch(cb, "rowsum_backward");
}
