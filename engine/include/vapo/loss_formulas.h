/* The VAPO loss per element and per row (VAPO-MATH.md section 4), written
 * once for the host and the device (VAPO_HD): the CPU backend's loss ops
 * (backend_cpu_loss.c) and the CUDA kernels (kernels/loss.cu) both compute
 * these, so their results agree. The backend table (backend.h) passes
 * vapo_path_coef rows and VAPO_ROW_TERMS terms per row. */
#ifndef VAPO_LOSS_FORMULAS_H
#define VAPO_LOSS_FORMULAS_H

#include <math.h>

#include "vapo/elementwise.h"

/* Per-sample coefficients of the Gaussian homotopy at the sample's time
 * (vapo_path_coef_at in loss.c): x = m xbar + sigma z, path velocity
 * v = vm xbar + vs z, weighted innovation w gc = wz (|z|^2 - d) + wx xbar.z. */
typedef struct {
    float m, sigma, vm, vs;
    double wz, wx;
} vapo_path_coef;

VAPO_HD double vapo_path_wgc(const vapo_path_coef *c, const double *zx, int d)
{
    return c->wz * (zx[0] - d) + c->wx * zx[1];
}

/* a x + b z for one element of the path (x) or of its velocity (v) */
VAPO_HD float vapo_path_point(float a, float b, float x, float z) { return fmaf(a, x, b * z); }

enum { VAPO_ROW_TERMS = 6 }; /* per-row loss terms written by loss_seeds */

/* The seeds of loss_seeds for one element (u) and one row (phi_bar), and the row's terms. */
VAPO_HD float vapo_loss_u(double scale, float g, float v) { return (float)(scale * (g - v)); }
VAPO_HD float vapo_loss_phi_bar(double scale, double lambda, double wgc, float phi)
{
    return (float)(scale * (wgc + 2.0 * lambda * phi));
}
VAPO_HD void vapo_loss_row_terms(double scale, double lambda, double gg, double cov, double wgc, float phi,
                                 double *out)
{
    out[0] = scale * 0.5 * gg, out[1] = scale * cov, out[2] = scale * lambda * phi * phi;
    out[3] = sqrt(gg), out[4] = scale * wgc, out[5] = phi;
}

#endif
