/* vapo_cuda_rng_normal: see rng_cuda.h. One thread per Philox block of 4
 * normals, writing the lanes that fall inside [first, first + n). */
#include "cuda_common.cuh"
#include "rng_cuda.h"

static __global__ void rng_normal_kernel(uint64_t seed, uint64_t stream, uint64_t first, size_t n, uint64_t blocks,
                                         float *out)
{
    const uint64_t b0 = first / 4;
    for (uint64_t t = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; t < blocks;
         t += (uint64_t)gridDim.x * blockDim.x) {
        float v[4];
        vapo_normal4(seed, stream, b0 + t, v);
        for (int lane = 0; lane < 4; lane++) {
            const uint64_t e = (b0 + t) * 4 + lane;
            if (e >= first && e - first < n)
                out[e - first] = v[lane];
        }
    }
}

extern "C" void vapo_cuda_rng_normal(uint64_t seed, uint64_t stream, uint64_t first, size_t n, float *out_device)
{
    if (!n)
        return;
    const uint64_t blocks = (first + n - 1) / 4 - first / 4 + 1;
    int device = 0, sms = 1;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    const uint64_t need = (blocks + VAPO_CUDA_BLOCK - 1) / VAPO_CUDA_BLOCK, cap = (uint64_t)(sms > 0 ? sms : 1) * 32;
    rng_normal_kernel<<<(unsigned)(need < cap ? need : cap), VAPO_CUDA_BLOCK>>>(seed, stream, first, n, blocks,
                                                                                out_device);
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) {
        vapo_fail("vapo_cuda_rng_normal: %s", cudaGetErrorString(e));
        fprintf(stderr, "vapo: %s\n", vapo_last_error());
    }
}
