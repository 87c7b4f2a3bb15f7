/* Spherical interpolation of initial noises. See vapo/interp.h.
 *
 * Works on the float inputs directly, in double, without temporary copies:
 * everything needed (two norms, the angle) is a pair of passes over the data,
 * computed once per pair and shared by all frames. */
#include "vapo/interp.h"

#include <math.h>
#include <stddef.h>

#define PI 3.14159265358979323846
#define PARALLEL_EPS 1e-6 /* angle (rad) below which inputs count as parallel or antipodal */

typedef enum { SL_ZERO, SL_SLERP, SL_NLERP, SL_ANTIPODAL } slerp_kind;

typedef struct {
    slerp_kind kind;
    const float *x0, *x1;
    double inv0, inv1;     /* 1/|x0|, 1/|x1| (unit vectors are x * inv) */
    double theta, sin_theta;
    int k;                 /* antipodal: coordinate of the helper axis e_k */
    double v_scale;        /* antipodal: 1 / |e_k - u0_k u0| */
} slerp_plan;

static double norm_of(int dim, const float *x)
{
    double s = 0;
    for (int i = 0; i < dim; i++)
        s += (double)x[i] * x[i];
    return sqrt(s);
}

static slerp_plan slerp_prepare(int dim, const float *x0, const float *x1)
{
    slerp_plan p = {.kind = SL_ZERO, .x0 = x0, .x1 = x1};
    double n0 = norm_of(dim, x0), n1 = norm_of(dim, x1);
    if (n0 == 0 && n1 == 0)
        return p;
    /* A zero vector has no direction: borrow the other's. */
    if (n0 == 0) {
        p.x0 = x1;
        n0 = n1;
    }
    if (n1 == 0) {
        p.x1 = p.x0;
        n1 = n0;
    }
    p.inv0 = 1 / n0;
    p.inv1 = 1 / n1;

    /* theta = 2 atan2(|u0 - u1|, |u0 + u1|) stays accurate near 0 and pi,
     * where acos of the dot product loses half the digits. */
    double dm = 0, dp = 0;
    for (int i = 0; i < dim; i++) {
        double a = p.x0[i] * p.inv0, b = p.x1[i] * p.inv1;
        dm += (a - b) * (a - b);
        dp += (a + b) * (a + b);
    }
    p.theta = 2 * atan2(sqrt(dm), sqrt(dp));
    p.sin_theta = sin(p.theta);
    if (p.theta < PARALLEL_EPS) {
        p.kind = SL_NLERP;
    } else if (PI - p.theta < PARALLEL_EPS) {
        /* Any great circle joins antipodes; take the one through the axis e_k
         * least aligned with u0, so the helper direction is well conditioned. */
        p.kind = SL_ANTIPODAL;
        p.k = 0;
        for (int i = 1; i < dim; i++)
            if (fabs(p.x0[i]) < fabs(p.x0[p.k]))
                p.k = i;
        double u0k = p.x0[p.k] * p.inv0;
        double v2 = 1 - u0k * u0k;
        p.v_scale = v2 > 0 ? 1 / sqrt(v2) : 0;
    } else {
        p.kind = SL_SLERP;
    }
    return p;
}

static void slerp_apply(const slerp_plan *p, int dim, double s, double norm, float *out)
{
    double c0, c1; /* out = norm * (c0 u0 + c1 u1), except antipodal */
    if (p->kind == SL_ZERO) {
        for (int i = 0; i < dim; i++)
            out[i] = 0;
        return;
    }
    /* Exact endpoints: no sin() round-off leaks into s = 0 or 1. */
    if (s == 0 || s == 1) {
        c0 = s == 0;
        c1 = s == 1;
        goto combine;
    }
    switch (p->kind) {
    case SL_NLERP: {
        /* |(1-s) u0 + s u1|^2 in closed form; >= cos(theta/2)^2 ~ 1 here. */
        double w2 = (1 - s) * (1 - s) + s * s + 2 * s * (1 - s) * cos(p->theta);
        double w = sqrt(w2);
        c0 = (1 - s) / w;
        c1 = s / w;
        break;
    }
    case SL_ANTIPODAL:
        if (p->v_scale == 0) {
            /* dim 1: no orthogonal direction exists; switch halfway. */
            c0 = s < 0.5;
            c1 = !(s < 0.5);
            break;
        } else {
            /* cos(s pi) u0 + sin(s pi) v, with v = (e_k - u0_k u0) / |...|. */
            double cs = cos(s * PI), sn = sin(s * PI);
            double u0k = p->x0[p->k] * p->inv0;
            double a = cs - sn * u0k * p->v_scale;
            for (int i = 0; i < dim; i++) {
                double v = a * p->x0[i] * p->inv0 + (i == p->k ? sn * p->v_scale : 0);
                out[i] = (float)(norm * v);
            }
            return;
        }
    case SL_SLERP:
    default:
        c0 = sin((1 - s) * p->theta) / p->sin_theta;
        c1 = sin(s * p->theta) / p->sin_theta;
        break;
    }
combine:
    for (int i = 0; i < dim; i++)
        out[i] = (float)(norm * (c0 * p->x0[i] * p->inv0 + c1 * p->x1[i] * p->inv1));
}

void vapo_slerp(int dim, const float *x0, const float *x1, double s, double norm, float *out)
{
    if (dim < 1)
        return;
    slerp_plan p = slerp_prepare(dim, x0, x1);
    slerp_apply(&p, dim, s, norm, out);
}

void vapo_slerp_frames(int dim, const float *x0, const float *x1, int frames, double norm, float *out)
{
    if (dim < 1 || frames < 1)
        return;
    slerp_plan p = slerp_prepare(dim, x0, x1);
    for (int f = 0; f < frames; f++) {
        double s = frames == 1 ? 0.0 : (double)f / (frames - 1);
        slerp_apply(&p, dim, s, norm, out + (size_t)f * dim);
    }
}
