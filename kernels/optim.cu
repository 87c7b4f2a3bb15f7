/* The optimizer update (backend.h, optim_update) on the device, with the CPU
 * backend's arithmetic (engine/backend_cpu_optim.c): sums of squares in
 * double, the clip factor and Lamb's trust ratios computed on the device and
 * read from device memory by the kernels that use them, so a training step
 * needs no host round trip.
 *
 * The buffer is cut into chunks of CHUNK elements that never straddle two
 * tensors; a chunk is a block's unit of work, and every sum is a block sum
 * per chunk followed by a sum over chunks in chunk order, so results are
 * bit-reproducible run to run. The chunk table depends only on the tensor
 * offsets: it is built and uploaded when a table is first seen. */
#include "cuda_common.cuh"

#define CHUNK (VAPO_CUDA_BLOCK * 16)

/* The chunk table and per-step results of one offsets table, in one device
 * allocation. Chunk k is [chunk_start[k], chunk_start[k + 1]), of tensor
 * chunk_tensor[k]; tensor t has chunks [chunk_first[t], chunk_first[t + 1]). */
struct optim_plan {
    int ntensors, nchunks;
    size_t *offsets_host; /* the table this plan is for */
    void *device;
    size_t *chunk_start; /* nchunks + 1 */
    double *partial;     /* 2 per chunk: sums of squares */
    double *step;        /* per tensor: lr (times Lamb's trust ratio) */
    float *factor;       /* the clip factor */
    int *chunk_tensor;   /* nchunks */
    int *chunk_first;    /* ntensors + 1 */
};

void cuda_optim_release(cuda_backend *cb)
{
    struct optim_plan *p = cb->optim;
    if (!p)
        return;
    cudaFree(p->device);
    free(p->offsets_host);
    free(p);
    cb->optim = NULL;
}

/* ---- kernels ------------------------------------------------------------------ */

/* partial[2k] = sum over chunk k of x^2 */
static __global__ void sumsq_kernel(int nchunks, const size_t *chunk_start, const float *x, double *partial)
{
    for (int k = blockIdx.x; k < nchunks; k += gridDim.x) {
        double s = 0.0;
        for (size_t i = chunk_start[k] + threadIdx.x; i < chunk_start[k + 1]; i += blockDim.x)
            s += (double)x[i] * x[i];
        s = cuda_block_sum(s);
        if (threadIdx.x == 0)
            partial[2 * (size_t)k] = s;
    }
}

/* One block: gnorm = |grad| from the chunks' sums, and the clip factor. */
static __global__ void clip_kernel(int nchunks, const double *partial, float clip, double *gnorm, float *factor)
{
    double s = 0.0;
    for (int k = threadIdx.x; k < nchunks; k += blockDim.x)
        s += partial[2 * (size_t)k];
    const double norm = sqrt(cuda_block_sum(s));
    if (threadIdx.x == 0) {
        *gnorm = norm;
        *factor = clip > 0 && norm > clip ? (float)(clip / norm) : 1.0f;
    }
}

/* grad *= factor, dir = the Adam direction; partial[2k], partial[2k + 1] =
 * the chunk's sums of w^2 and dir^2 (Lamb's norms) */
static __global__ void direction_kernel(int nchunks, const size_t *chunk_start, vapo_optim_hyper h,
                                        const float *factor, const float *w, float *grad, float *m, float *v,
                                        float *dir, double *partial)
{
    const float f = *factor;
    for (int k = blockIdx.x; k < nchunks; k += gridDim.x) {
        double sw = 0.0, sd = 0.0;
        for (size_t i = chunk_start[k] + threadIdx.x; i < chunk_start[k + 1]; i += blockDim.x) {
            const float g = grad[i] * f;
            grad[i] = g;
            const float d = vapo_adam_direction(g, &m[i], &v[i], h.beta1, h.beta2, h.eps, h.bc1, h.bc2);
            dir[i] = d;
            sw += (double)w[i] * w[i];
            sd += (double)d * d;
        }
        sw = cuda_block_sum(sw);
        sd = cuda_block_sum(sd);
        if (threadIdx.x == 0)
            partial[2 * (size_t)k] = sw, partial[2 * (size_t)k + 1] = sd;
    }
}

/* Per tensor: step = lr, times (Lamb) the trust ratio |w| / |dir| with |w|
 * clamped to [0, 10], 1 when either norm is 0. */
static __global__ void trust_kernel(int ntensors, const int *chunk_first, const double *partial, int lamb, float lr,
                                    double *step)
{
    for (int t = blockIdx.x; t < ntensors; t += gridDim.x) {
        double sw = 0.0, sd = 0.0;
        if (lamb)
            for (int k = chunk_first[t] + threadIdx.x; k < chunk_first[t + 1]; k += blockDim.x)
                sw += partial[2 * (size_t)k], sd += partial[2 * (size_t)k + 1];
        sw = cuda_block_sum(sw);
        sd = cuda_block_sum(sd);
        const double wn = fmin(sqrt(sw), 10.0), dn = sqrt(sd);
        if (threadIdx.x == 0)
            step[t] = lamb && wn != 0.0 && dn != 0.0 ? (double)lr * (wn / dn) : (double)lr;
    }
}

/* w -= step * dir, then the EMA of the new weight */
static __global__ void apply_kernel(int nchunks, const size_t *chunk_start, const int *chunk_tensor,
                                    const double *step, const float *dir, float *w, float *ema, float decay)
{
    for (int k = blockIdx.x; k < nchunks; k += gridDim.x) {
        const double s = step[chunk_tensor[k]];
        for (size_t i = chunk_start[k] + threadIdx.x; i < chunk_start[k + 1]; i += blockDim.x) {
            w[i] -= (float)(s * dir[i]);
            ema[i] = vapo_ema(ema[i], w[i], decay);
        }
    }
}

/* ---- the chunk table ------------------------------------------------------------ */

static int count_chunks(int ntensors, const size_t *offsets)
{
    size_t total = 0;
    for (int t = 0; t < ntensors; t++)
        total += (offsets[t + 1] - offsets[t] + CHUNK - 1) / CHUNK;
    return total < INT32_MAX ? (int)total : -1;
}

/* Points the plan's arrays into memory at `base` laid out as on the device
 * (8-byte members first) and returns its size; base 0 only measures. */
static size_t plan_layout(struct optim_plan *p, uintptr_t base)
{
    const size_t nc = (size_t)p->nchunks, nt = (size_t)p->ntensors;
    size_t at = 0;
    p->chunk_start = (size_t *)(base + at), at += sizeof(size_t) * (nc + 1);
    p->partial = (double *)(base + at), at += sizeof(double) * 2 * nc;
    p->step = (double *)(base + at), at += sizeof(double) * nt;
    p->factor = (float *)(base + at), at += sizeof(double);
    p->chunk_tensor = (int *)(base + at), at += sizeof(int) * nc;
    p->chunk_first = (int *)(base + at), at += sizeof(int) * (nt + 1);
    return at;
}

static void fill_chunks(struct optim_plan *p, const size_t *offsets)
{
    int k = 0;
    for (int t = 0; t < p->ntensors; t++) {
        p->chunk_first[t] = k;
        for (size_t at = offsets[t]; at < offsets[t + 1]; at += CHUNK)
            p->chunk_tensor[k] = t, p->chunk_start[k++] = at;
    }
    p->chunk_first[p->ntensors] = k;
    p->chunk_start[k] = offsets[p->ntensors];
}

static int same_table(const struct optim_plan *p, int ntensors, const size_t *offsets)
{
    return p && p->ntensors == ntensors && !memcmp(p->offsets_host, offsets, sizeof(size_t) * (ntensors + 1));
}

/* Builds the plan's table on the host, laid out as on the device, and
 * uploads it into p->device; 0 or -1 after cuda_report. */
static int plan_upload(cuda_backend *cb, struct optim_plan *p, const size_t *offsets)
{
    const char *what = "optim_update (chunk table)";
    const size_t bytes = plan_layout(p, 0);
    char *host = (char *)calloc(1, bytes);
    if (!host)
        return cuda_report(cb, what, "out of memory");
    plan_layout(p, (uintptr_t)host);
    fill_chunks(p, offsets);
    int rc = cuda_check(cb, cudaMalloc(&p->device, bytes), what);
    if (rc) {
        cudaGetLastError(); /* an allocation failure is not sticky */
        p->device = NULL;
    } else {
        rc = cuda_check(cb, cudaMemcpyAsync(p->device, host, bytes, cudaMemcpyHostToDevice, cb->stream), what) ||
             cuda_check(cb, cudaStreamSynchronize(cb->stream), what); /* before host is freed */
        plan_layout(p, (uintptr_t)p->device);
    }
    free(host);
    return rc ? -1 : 0;
}

/* The plan for this offsets table: the cached one, or a new one; NULL
 * after cuda_report. */
static struct optim_plan *plan_for(cuda_backend *cb, int ntensors, const size_t *offsets)
{
    if (same_table(cb->optim, ntensors, offsets))
        return cb->optim;
    cuda_optim_release(cb); /* cudaFree waits for kernels still using it */
    const int nchunks = count_chunks(ntensors, offsets);
    if (nchunks < 0) {
        cuda_report(cb, "optim_update", "too many parameters");
        return NULL;
    }
    struct optim_plan *p = (struct optim_plan *)calloc(1, sizeof *p);
    if (p)
        p->offsets_host = (size_t *)malloc(sizeof(size_t) * (ntensors + 1));
    if (!p || !p->offsets_host) {
        free(p);
        cuda_report(cb, "optim_update", "out of memory");
        return NULL;
    }
    p->ntensors = ntensors, p->nchunks = nchunks;
    memcpy(p->offsets_host, offsets, sizeof(size_t) * (ntensors + 1));
    cb->optim = p;
    if (plan_upload(cb, p, offsets)) {
        cuda_optim_release(cb);
        return NULL;
    }
    return p;
}

/* ---- the op ------------------------------------------------------------------ */

void cuda_optim_update(vapo_backend *be, const vapo_optim_hyper *h, int ntensors, const size_t *offsets, size_t n,
                       float *params, float *grad, float *m, float *v, float *ema, float *scratch, double *gnorm)
{
    cuda_backend *cb = cuda_enter(be);
    (void)n; /* offsets[ntensors] */
    const struct optim_plan *p = plan_for(cb, ntensors, offsets);
    if (!p)
        return;
    const int nc = p->nchunks, nt = p->ntensors;
    const unsigned block = VAPO_CUDA_BLOCK, grid = nc ? cuda_grid_1d(cb, (size_t)nc, 1) : 1;
    const unsigned tgrid = nt < 65535 ? (nt ? nt : 1) : 65535;
    cudaStream_t s = cb->stream;
    sumsq_kernel<<<grid, block, 0, s>>>(nc, p->chunk_start, grad, p->partial);
    clip_kernel<<<1, block, 0, s>>>(nc, p->partial, h->clip, gnorm, p->factor);
    direction_kernel<<<grid, block, 0, s>>>(nc, p->chunk_start, *h, p->factor, params, grad, m, v, scratch,
                                            p->partial);
    trust_kernel<<<tgrid, block, 0, s>>>(nt, p->chunk_first, p->partial, h->lamb, h->lr, p->step);
    apply_kernel<<<grid, block, 0, s>>>(nc, p->chunk_start, p->chunk_tensor, p->step, scratch, params, ema,
                                        h->ema_decay);
    cuda_check_launch(cb, "optim_update");
}
