/* The CUDA backend: the op table, device memory, the stream, the cuBLAS and
 * cuDNN handles, error reporting. The ops live one family per file
 * (conv.cu, activation.cu, pool.cu, reduce.cu, weightnorm.cu, layout.cu).
 *
 * One stream per backend, created blocking (not cudaStreamNonBlocking) so
 * that work on the legacy default stream, such as vapo_cuda_rng_normal, is
 * ordered with it. Memory is cudaMalloc'd and zeroed on that stream;
 * upload and download return once the host buffer may be reused / read. */
#include "cuda_common.cuh"

/* ---- errors ------------------------------------------------------------------ */

int cuda_report(cuda_backend *cb, const char *what, const char *why)
{
    vapo_fail("CUDA backend: %s: %s", what, why);
    if (cb && !cb->reported) {
        cb->reported = 1;
        fprintf(stderr, "vapo: %s (further CUDA errors are not printed)\n", vapo_last_error());
    }
    return -1;
}

int cuda_check(cuda_backend *cb, cudaError_t e, const char *what)
{
    return e == cudaSuccess ? 0 : cuda_report(cb, what, cudaGetErrorString(e));
}

int cublas_check(cuda_backend *cb, cublasStatus_t s, const char *what)
{
    return s == CUBLAS_STATUS_SUCCESS ? 0 : cuda_report(cb, what, cublasGetStatusString(s));
}

int cudnn_check(cuda_backend *cb, cudnnStatus_t s, const char *what)
{
    if (s == CUDNN_STATUS_SUCCESS)
        return 0;
    char detail[256] = "", why[400];
    cudnnGetLastErrorString(detail, sizeof detail);
    snprintf(why, sizeof why, "%s%s%s", cudnnGetErrorString(s), detail[0] ? ": " : "", detail);
    return cuda_report(cb, what, why);
}

cuda_backend *cuda_enter(vapo_backend *be)
{
    cuda_backend *cb = (cuda_backend *)be;
    cuda_check(cb, cudaSetDevice(cb->device), "cudaSetDevice");
    return cb;
}

void *cuda_scratch(cuda_backend *cb, void **buf, size_t *cap, size_t bytes, const char *what)
{
    if (bytes <= *cap && *buf)
        return *buf;
    if (*buf) {
        if (cuda_check(cb, cudaStreamSynchronize(cb->stream), what))
            return NULL;
        cudaFree(*buf);
        *buf = NULL;
        *cap = 0;
    }
    if (cuda_check(cb, cudaMalloc(buf, bytes ? bytes : 256), what)) {
        cudaGetLastError(); /* not sticky: later ops must not report it again */
        *buf = NULL;
        return NULL;
    }
    *cap = bytes;
    return *buf;
}

/* ---- memory ------------------------------------------------------------------ */

static void *cuda_alloc(vapo_backend *be, size_t bytes)
{
    cuda_backend *cb = cuda_enter(be);
    void *p = NULL;
    /* 256 bytes for an empty tensor, so that NULL always means failure */
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 256);
    if (e != cudaSuccess) {
        char why[160];
        snprintf(why, sizeof why, "cudaMalloc of %zu bytes: %s", bytes, cudaGetErrorString(e));
        vapo_fail("CUDA backend: out of device memory (%s)", why);
        cudaGetLastError(); /* allocation failures are not sticky: clear it */
        return NULL;
    }
    if (cuda_check(cb, cudaMemsetAsync(p, 0, bytes ? bytes : 256, cb->stream), "zeroing an allocation")) {
        cudaFree(p);
        return NULL;
    }
    return p;
}

static void cuda_free(vapo_backend *be, void *p)
{
    cuda_backend *cb = cuda_enter(be);
    if (!p)
        return;
    /* queued kernels may still use p */
    cuda_check(cb, cudaStreamSynchronize(cb->stream), "free (draining the stream)");
    cuda_check(cb, cudaFree(p), "cudaFree");
}

static void cuda_upload(vapo_backend *be, void *dst, const void *host_src, size_t bytes)
{
    cuda_backend *cb = cuda_enter(be);
    if (!bytes)
        return;
    /* synchronous: the caller may reuse host_src (pinned or not) on return */
    if (!cuda_check(cb, cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, cb->stream), "upload"))
        cuda_check(cb, cudaStreamSynchronize(cb->stream), "upload");
}

static void cuda_download(vapo_backend *be, void *host_dst, const void *src, size_t bytes)
{
    cuda_backend *cb = cuda_enter(be);
    if (!bytes)
        return;
    if (!cuda_check(cb, cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, cb->stream), "download"))
        cuda_check(cb, cudaStreamSynchronize(cb->stream), "download");
}

static void cuda_copy(vapo_backend *be, void *dst, const void *src, size_t bytes)
{
    cuda_backend *cb = cuda_enter(be);
    if (!bytes || dst == src)
        return;
    cuda_check(cb, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cb->stream), "copy");
}

static void cuda_zero(vapo_backend *be, void *p, size_t bytes)
{
    cuda_backend *cb = cuda_enter(be);
    if (bytes)
        cuda_check(cb, cudaMemsetAsync(p, 0, bytes, cb->stream), "zero");
}

static void cuda_sync(vapo_backend *be)
{
    cuda_backend *cb = cuda_enter(be);
    if (!cuda_check(cb, cudaStreamSynchronize(cb->stream), "sync (an earlier asynchronous op failed)"))
        cuda_check(cb, cudaGetLastError(), "sync");
}

/* ---- lifetime ---------------------------------------------------------------- */

static void cuda_destroy(vapo_backend *be)
{
    cuda_backend *cb = (cuda_backend *)be;
    if (!cb)
        return;
    cudaSetDevice(cb->device);
    if (cb->stream)
        cudaStreamSynchronize(cb->stream);
    cuda_conv_release(cb);
    cuda_optim_release(cb);
    cudaFree(cb->workspace);
    cudaFree(cb->layout_scratch);
    cudaFree(cb->partials);
    cudaFree(cb->dot_device);
    if (cb->dot_host)
        cudaFreeHost(cb->dot_host);
    if (cb->dnn)
        cudnnDestroy(cb->dnn);
    if (cb->blas)
        cublasDestroy(cb->blas);
    if (cb->stream)
        cudaStreamDestroy(cb->stream);
    free(cb);
}

/* Used only to ask the runtime whether this build has code for the device. */
static __global__ void cuda_probe_kernel(void) {}

/* Undoes a partly opened backend; the message is already recorded. */
static vapo_backend *open_failed(cuda_backend *cb)
{
    cuda_destroy(&cb->base);
    cudaGetLastError();
    return NULL;
}

extern "C" vapo_backend *vapo_backend_cuda(int device)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess) {
        cudaGetLastError();
        vapo_fail("CUDA is not usable: %s", cudaGetErrorString(e));
        return NULL;
    }
    if (count == 0) {
        vapo_fail("no CUDA device is present");
        return NULL;
    }
    if (device < 0 || device >= count) {
        vapo_fail("CUDA device %d does not exist (%d present)", device, count);
        return NULL;
    }
    if ((e = cudaSetDevice(device)) != cudaSuccess) {
        cudaGetLastError();
        vapo_fail("cannot use CUDA device %d: %s", device, cudaGetErrorString(e));
        return NULL;
    }
    cudaFuncAttributes attr;
    if ((e = cudaFuncGetAttributes(&attr, cuda_probe_kernel)) != cudaSuccess) {
        int major = 0, minor = 0;
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
        cudaGetLastError();
        vapo_fail("this build of vapo has no GPU code for CUDA device %d (compute capability %d.%d): %s; "
                  "rebuild with -DCMAKE_CUDA_ARCHITECTURES=%d%d",
                  device, major, minor, cudaGetErrorString(e), major, minor);
        return NULL;
    }

    cuda_backend *cb = (cuda_backend *)calloc(1, sizeof *cb);
    if (!cb) {
        vapo_fail("out of memory creating the CUDA backend");
        return NULL;
    }
    cb->device = device;
    cb->reported = 1; /* failures while opening are returned, not printed */
    if ((e = cudaDeviceGetAttribute(&cb->sm_count, cudaDevAttrMultiProcessorCount, device)) != cudaSuccess) {
        vapo_fail("CUDA device query failed: %s", cudaGetErrorString(e));
        return open_failed(cb);
    }
    if (cb->sm_count < 1)
        cb->sm_count = 1;
    if ((e = cudaStreamCreate(&cb->stream)) != cudaSuccess) {
        cb->stream = NULL;
        vapo_fail("cudaStreamCreate failed: %s", cudaGetErrorString(e));
        return open_failed(cb);
    }
    cublasStatus_t bs = cublasCreate(&cb->blas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        cb->blas = NULL;
        vapo_fail("cuBLAS could not start: %s", cublasGetStatusString(bs));
        return open_failed(cb);
    }
    /* CUBLAS_DEFAULT_MATH keeps float32 GEMMs in FP32 (no TF32): the parity
     * tests compare with the CPU at float32 precision. Tensor-op math
     * (CUBLAS_TF32_TENSOR_OP_MATH) is a future speed switch. */
    if ((bs = cublasSetStream(cb->blas, cb->stream)) != CUBLAS_STATUS_SUCCESS ||
        (bs = cublasSetMathMode(cb->blas, CUBLAS_DEFAULT_MATH)) != CUBLAS_STATUS_SUCCESS) {
        vapo_fail("cuBLAS setup failed: %s", cublasGetStatusString(bs));
        return open_failed(cb);
    }
    cudnnStatus_t ds = cudnnCreate(&cb->dnn);
    if (ds != CUDNN_STATUS_SUCCESS) {
        cb->dnn = NULL;
        vapo_fail("cuDNN could not start: %s", cudnnGetErrorString(ds));
        return open_failed(cb);
    }
    if ((ds = cudnnSetStream(cb->dnn, cb->stream)) != CUDNN_STATUS_SUCCESS) {
        vapo_fail("cuDNN setup failed: %s", cudnnGetErrorString(ds));
        return open_failed(cb);
    }
    if ((e = cudaMalloc((void **)&cb->dot_device, sizeof(double))) != cudaSuccess ||
        (e = cudaMallocHost((void **)&cb->dot_host, sizeof(double))) != cudaSuccess) {
        vapo_fail("CUDA allocation failed: %s", cudaGetErrorString(e));
        return open_failed(cb);
    }

    const char *layout = getenv("VAPO_CUDA_CONV_LAYOUT");
    if (!layout || !*layout || !strcmp(layout, "auto")) {
        cb->conv_layout = CONV_LAYOUT_AUTO;
    } else if (!strcmp(layout, "cnhw")) {
        cb->conv_layout = CONV_LAYOUT_CNHW;
    } else if (!strcmp(layout, "nchw")) {
        cb->conv_layout = CONV_LAYOUT_NCHW;
    } else {
        vapo_fail("VAPO_CUDA_CONV_LAYOUT is '%s' (expected auto, cnhw or nchw)", layout);
        return open_failed(cb);
    }
    const char *verbose = getenv("VAPO_CUDA_VERBOSE");
    cb->verbose = verbose && *verbose && strcmp(verbose, "0");
    cb->reported = 0;

    cb->base.name = "cuda";
    cb->base.alloc = cuda_alloc;
    cb->base.free = cuda_free;
    cb->base.upload = cuda_upload;
    cb->base.download = cuda_download;
    cb->base.copy = cuda_copy;
    cb->base.zero = cuda_zero;
    cb->base.sync = cuda_sync;
    cb->base.conv_forward = cuda_conv_forward;
    cb->base.conv_backward_data = cuda_conv_backward_data;
    cb->base.conv_backward_filter = cuda_conv_backward_filter;
    cb->base.act_forward = cuda_act_forward;
    cb->base.act_tangent = cuda_act_tangent;
    cb->base.act_backward = cuda_act_backward;
    cb->base.act_dual_backward = cuda_act_dual_backward;
    cb->base.avgpool2_forward = cuda_avgpool2_forward;
    cb->base.avgpool2_backward = cuda_avgpool2_backward;
    cb->base.upsample2_forward = cuda_upsample2_forward;
    cb->base.upsample2_backward = cuda_upsample2_backward;
    cb->base.rowsum_forward = cuda_rowsum_forward;
    cb->base.rowsum_backward = cuda_rowsum_backward;
    cb->base.scale_forward = cuda_scale_forward;
    cb->base.scale_backward_param = cuda_scale_backward_param;
    cb->base.axpy = cuda_axpy;
    cb->base.add = cuda_add;
    cb->base.dot = cuda_dot;
    cb->base.weightnorm_forward = cuda_weightnorm_forward;
    cb->base.weightnorm_backward = cuda_weightnorm_backward;
    cb->base.nchw_to_cnhw = cuda_nchw_to_cnhw;
    cb->base.cnhw_to_nchw = cuda_cnhw_to_nchw;
    cb->base.optim_update = cuda_optim_update;
    cb->base.rng_normal = cuda_rng_normal;
    cb->base.loss_perturb = cuda_loss_perturb;
    cb->base.loss_seeds = cuda_loss_seeds;
    cb->base.rk_combine = cuda_rk_combine;
    cb->base.rk_norm = cuda_rk_norm;
    cb->base.rows_copy = cuda_rows_copy;
    cb->base.destroy = cuda_destroy;

    if (cb->verbose) {
        static const char *const layouts[] = {"auto", "cnhw", "nchw"};
        cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, device) == cudaSuccess)
            fprintf(stderr, "vapo: CUDA device %d: %s, compute capability %d.%d, %d SMs, cuDNN %zu, conv layout %s\n",
                    device, prop.name, prop.major, prop.minor, cb->sm_count, cudnnGetVersion(),
                    layouts[cb->conv_layout]);
    }
    return &cb->base;
}
