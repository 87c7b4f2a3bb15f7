/* NCHW <-> CNHW transposes. Both swap the two leading dimensions of a
 * d2 x d1 x hw tensor, moving whole contiguous hw-runs, so reads and
 * writes are both coalesced along hw. */
#include "cuda_common.cuh"

/* dst[i1][i2][:] = (or +=) src[i2][i1][:], dst being d1 x d2 x hw.
 * blockIdx.y walks dst rows q = i1 * d2 + i2; x walks the hw run. */
template <bool ACCUMULATE>
static __global__ void swap_leading_kernel(int d1, int d2, int hw, float *dst, const float *src)
{
    const size_t rows = (size_t)d1 * d2;
    for (size_t q = blockIdx.y; q < rows; q += gridDim.y) {
        const size_t i1 = q / d2, i2 = q % d2;
        float *d = dst + q * hw;
        const float *s = src + (i2 * d1 + i1) * hw;
        for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < hw; p += gridDim.x * blockDim.x) {
            if (ACCUMULATE)
                d[p] += s[p];
            else
                d[p] = s[p];
        }
    }
}

void cuda_swap_leading(cuda_backend *cb, int d1, int d2, int hw, float *dst, const float *src, int accumulate)
{
    if (d1 <= 0 || d2 <= 0 || hw <= 0)
        return;
    unsigned block;
    const dim3 grid = cuda_grid_rows(cb, (size_t)d1 * d2, (size_t)hw, &block);
    if (accumulate)
        swap_leading_kernel<true><<<grid, block, 0, cb->stream>>>(d1, d2, hw, dst, src);
    else
        swap_leading_kernel<false><<<grid, block, 0, cb->stream>>>(d1, d2, hw, dst, src);
    cuda_check_launch(cb, "layout transpose");
}

/* dst[c][b][:] = src[b][c][:] */
void cuda_nchw_to_cnhw(vapo_backend *be, int batch, int c, int hw, float *dst, const float *src)
{
    cuda_swap_leading(cuda_enter(be), c, batch, hw, dst, src, 0);
}

/* dst[b][c][:] = src[c][b][:] */
void cuda_cnhw_to_nchw(vapo_backend *be, int batch, int c, int hw, float *dst, const float *src)
{
    cuda_swap_leading(cuda_enter(be), batch, c, hw, dst, src, 0);
}
