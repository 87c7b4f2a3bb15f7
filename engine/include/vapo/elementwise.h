/* Per-element arithmetic shared by the CPU loops and the CUDA kernels.
 * Every formula here is compiled unchanged by gcc and nvcc, so the numbers
 * the GPU computes are the numbers the CPU tests check. */
#ifndef VAPO_ELEMENTWISE_H
#define VAPO_ELEMENTWISE_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __CUDACC__
#define VAPO_HD __host__ __device__ __forceinline__
#else
#define VAPO_HD static inline
#endif

/* exp(x) in plain arithmetic (Cephes' expf polynomial after a
 * 2^k ln 2 range reduction, relative error < 2e-7), so the activation loops
 * vectorise (with -fno-trapping-math, which lets gcc turn its selects into
 * blends): a libm call per element would not, and it cost a quarter of a CPU
 * network pass. Below -87 it returns 0, above 88 e^88 (1.7e38); NaN stays NaN. */
VAPO_HD float vapo_exp(float x)
{
    const float xc = x > 88.0f ? 88.0f : x < -87.0f ? -87.0f : x;
    const float k = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    const float r = (xc - k * 0.693359375f) + k * 2.12194440e-4f;           /* xc - k ln 2, split */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t ki = (int32_t)(k >= -126.0f ? k : 0.0f); /* NaN: p carries it, any exponent will do */
    const int32_t bits = (ki + 127) * (1 << 23);
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < -87.0f ? 0.0f : p * scale;
}

/* ---- activations: value, first and second derivative ------------------- */

typedef enum { VAPO_ACT_GELU = 0, VAPO_ACT_SILU = 1, VAPO_ACT_RELU = 2 } vapo_act;

#define VAPO_INV_SQRT2 0.70710678118654752440f
#define VAPO_INV_SQRT2PI 0.39894228040143267794f

/* The standard normal CDF and PDF at x from a single exp: erf by Abramowitz &
 * Stegun 7.1.26 (|error| < 1.5e-7, the float resolution of 1 + erf), whose
 * exp(-x^2/2) is also the PDF's. Three libm calls per element become one. */
VAPO_HD void vapo_normal_cdf_pdf(float x, float *cdf, float *pdf)
{
    const float z = fabsf(x) * VAPO_INV_SQRT2, t = 1.0f / (1.0f + 0.3275911f * z);
    const float e = vapo_exp(-0.5f * x * x);
    const float tail = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f +
                                                                                        t * 1.061405429f)))) * e;
    *cdf = x >= 0.0f ? 1.0f - 0.5f * tail : 0.5f * tail; /* no cancellation in the lower tail */
    *pdf = VAPO_INV_SQRT2PI * e;
}

/* GELU, exact (erf) form as in torch.nn.GELU(): x * Phi(x). */
VAPO_HD float vapo_gelu(float x)
{
    float cdf, pdf;
    vapo_normal_cdf_pdf(x, &cdf, &pdf);
    return x * cdf;
}
VAPO_HD float vapo_gelu_d1(float x)
{
    float cdf, pdf;
    vapo_normal_cdf_pdf(x, &cdf, &pdf);
    return cdf + x * pdf;
}
VAPO_HD float vapo_gelu_d2(float x)
{
    float pdf = VAPO_INV_SQRT2PI * vapo_exp(-0.5f * x * x);
    return pdf * (2.0f - x * x);
}
/* Both derivatives at once (the dual pass needs both). */
VAPO_HD void vapo_gelu_d12(float x, float *d1, float *d2)
{
    float cdf, pdf;
    vapo_normal_cdf_pdf(x, &cdf, &pdf);
    *d1 = cdf + x * pdf;
    *d2 = pdf * (2.0f - x * x);
}

VAPO_HD float vapo_sigmoid(float x) { return 1.0f / (1.0f + vapo_exp(-x)); }
VAPO_HD float vapo_silu(float x) { return x * vapo_sigmoid(x); }
VAPO_HD float vapo_silu_d1(float x)
{
    float s = vapo_sigmoid(x);
    return s * (1.0f + x * (1.0f - s));
}
VAPO_HD float vapo_silu_d2(float x)
{
    float s = vapo_sigmoid(x);
    return s * (1.0f - s) * (2.0f + x * (1.0f - 2.0f * s));
}

/* ReLU: the second derivative is zero almost everywhere. */
VAPO_HD float vapo_relu(float x) { return x > 0.0f ? x : 0.0f; }
VAPO_HD float vapo_relu_d1(float x) { return x > 0.0f ? 1.0f : 0.0f; }

VAPO_HD float vapo_act_value(vapo_act a, float x)
{
    return a == VAPO_ACT_GELU ? vapo_gelu(x) : a == VAPO_ACT_SILU ? vapo_silu(x) : vapo_relu(x);
}
VAPO_HD float vapo_act_d1(vapo_act a, float x)
{
    return a == VAPO_ACT_GELU ? vapo_gelu_d1(x) : a == VAPO_ACT_SILU ? vapo_silu_d1(x) : vapo_relu_d1(x);
}
VAPO_HD float vapo_act_d2(vapo_act a, float x)
{
    return a == VAPO_ACT_GELU ? vapo_gelu_d2(x) : a == VAPO_ACT_SILU ? vapo_silu_d2(x) : 0.0f;
}
VAPO_HD void vapo_act_d12(vapo_act a, float x, float *d1, float *d2)
{
    if (a == VAPO_ACT_GELU) {
        vapo_gelu_d12(x, d1, d2);
    } else {
        *d1 = vapo_act_d1(a, x);
        *d2 = vapo_act_d2(a, x);
    }
}

/* ---- counter-based RNG: Philox4x32-10 (Salmon et al., SC'11) ------------ */

typedef struct { uint32_t v[4]; } vapo_u32x4;

VAPO_HD uint32_t vapo_mulhilo32(uint32_t a, uint32_t b, uint32_t *hi)
{
    uint64_t p = (uint64_t)a * (uint64_t)b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

VAPO_HD vapo_u32x4 vapo_philox4x32_10(vapo_u32x4 ctr, uint32_t k0, uint32_t k1)
{
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = vapo_mulhilo32(0xD2511F53u, ctr.v[0], &hi0);
        uint32_t lo1 = vapo_mulhilo32(0xCD9E8D57u, ctr.v[2], &hi1);
        vapo_u32x4 next = {{hi1 ^ ctr.v[1] ^ k0, lo1, hi0 ^ ctr.v[3] ^ k1, lo0}};
        ctr = next;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    return ctr;
}

/* Uniform in the open interval (0, 1) with 24 random bits (exact in float). */
VAPO_HD float vapo_u32_to_unit(uint32_t u) { return ((float)(u >> 8) + 0.5f) * (1.0f / 16777216.0f); }

/* The four standard normals of Philox block `block` of stream `stream` under
 * `seed` (Box-Muller on two pairs of uniforms). Element i of a stream lives in
 * block i/4, lane i%4, so any element can be produced on its own. */
VAPO_HD void vapo_normal4(uint64_t seed, uint64_t stream, uint64_t block, float out[4])
{
    vapo_u32x4 ctr = {{(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream, (uint32_t)(stream >> 32)}};
    vapo_u32x4 r = vapo_philox4x32_10(ctr, (uint32_t)seed, (uint32_t)(seed >> 32));
    for (int p = 0; p < 2; p++) {
        float u1 = vapo_u32_to_unit(r.v[2 * p]);
        float u2 = vapo_u32_to_unit(r.v[2 * p + 1]);
        float rad = sqrtf(-2.0f * logf(u1));
        float ang = 6.28318530717958647692f * u2;
        out[2 * p] = rad * cosf(ang);
        out[2 * p + 1] = rad * sinf(ang);
    }
}

/* ---- Runge-Kutta sampling (engine/ode.c, engine/ode_batch.c) ------------- */

/* sum_j c[j] k[j][i] in double. Zero weights are kept, as in SciPy's dot, so
 * a non-finite stage poisons the sum whatever its weight. */
VAPO_HD double vapo_rk_sum(int nk, const double *c, const float *const *k, size_t i)
{
    double acc = 0.0;
    for (int j = 0; j < nk; j++)
        acc += c[j] * k[j][i];
    return acc;
}

/* One component of SciPy's scaled RK45 error, e / (atol + max(|y|, |y_new|) rtol);
 * select_initial_step's scale atol + |y0| rtol is y_new = y. */
VAPO_HD double vapo_rk_scaled(double e, double y, double y_new, double atol, double rtol)
{
    return e / (atol + fmax(fabs(y), fabs(y_new)) * rtol);
}

/* SciPy's RMS norm from the sum of squares of n components. */
VAPO_HD double vapo_rk_rms(double sumsq, int n) { return sqrt(sumsq / n); }

/* ---- optimiser updates (one parameter element) --------------------------- */

/* Adam with bias correction; returns the step to subtract (before lr). */
VAPO_HD float vapo_adam_direction(float g, float *m, float *v, float beta1, float beta2, float eps,
                                  float bc1, float bc2)
{
    *m = beta1 * *m + (1.0f - beta1) * g;
    *v = beta2 * *v + (1.0f - beta2) * g * g;
    return (*m / bc1) / (sqrtf(*v / bc2) + eps);
}

/* Exponential moving average of a weight. */
VAPO_HD float vapo_ema(float avg, float w, float decay) { return decay * avg + (1.0f - decay) * w; }

#endif
