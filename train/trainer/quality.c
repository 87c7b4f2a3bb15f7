#include "quality.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "vapo/ckpt.h"
#include "vapo/error.h"

/* bench/judge.py's layers: c1 1->16, c2 16->32, c3 32->64 (3x3, padding 1),
 * f1 576->64, fc 64->10. */
enum { C1 = 16, C2 = 32, C3 = 64, POOLED = C3 * 9, CLASSES = 10 };

struct judge {
    float c1w[C1 * 9], c1b[C1], c2w[C2 * C1 * 9], c2b[C2], c3w[C3 * C2 * 9], c3b[C3];
    float f1w[JUDGE_FEATURES * POOLED], f1b[JUDGE_FEATURES], fcw[CLASSES * JUDGE_FEATURES], fcb[CLASSES];
};

judge *judge_load(const char *path)
{
    judge *j = calloc(1, sizeof *j);
    vapo_ckpt *ck = j ? vapo_ckpt_load(path) : NULL;
    struct {
        const char *name;
        int ndim;
        int64_t shape[4];
        float *dst;
    } t[] = {
        {"c1.weight", 4, {C1, 1, 3, 3}, j ? j->c1w : NULL},  {"c1.bias", 1, {C1}, j ? j->c1b : NULL},
        {"c2.weight", 4, {C2, C1, 3, 3}, j ? j->c2w : NULL}, {"c2.bias", 1, {C2}, j ? j->c2b : NULL},
        {"c3.weight", 4, {C3, C2, 3, 3}, j ? j->c3w : NULL}, {"c3.bias", 1, {C3}, j ? j->c3b : NULL},
        {"f1.weight", 2, {JUDGE_FEATURES, POOLED}, j ? j->f1w : NULL},
        {"f1.bias", 1, {JUDGE_FEATURES}, j ? j->f1b : NULL},
        {"fc.weight", 2, {CLASSES, JUDGE_FEATURES}, j ? j->fcw : NULL},
        {"fc.bias", 1, {CLASSES}, j ? j->fcb : NULL},
    };
    int rc = ck ? 0 : -1;
    for (size_t i = 0; !rc && i < sizeof t / sizeof t[0]; i++)
        rc = vapo_ckpt_read_f32(ck, t[i].name, t[i].ndim, t[i].shape, t[i].dst);
    vapo_ckpt_free(ck);
    if (rc) {
        free(j);
        if (!j)
            vapo_fail("out of memory");
        return NULL;
    }
    return j;
}

void judge_free(judge *j) { free(j); }

/* 3x3 convolution with padding 1, bias and ReLU: in (ci, s, s) -> out (co, s, s). */
static void conv_relu(const float *in, int ci, int s, const float *w, const float *b, int co, float *out)
{
    for (int o = 0; o < co; o++)
        for (int y = 0; y < s; y++)
            for (int x = 0; x < s; x++) {
                double acc = b[o];
                for (int c = 0; c < ci; c++)
                    for (int dy = -1; dy <= 1; dy++)
                        for (int dx = -1; dx <= 1; dx++) {
                            const int yy = y + dy, xx = x + dx;
                            if (yy >= 0 && yy < s && xx >= 0 && xx < s)
                                acc += (double)w[((o * ci + c) * 3 + dy + 1) * 3 + dx + 1] * in[(c * s + yy) * s + xx];
                        }
                out[(o * s + y) * s + x] = acc > 0 ? (float)acc : 0.0f;
            }
}

static void max_pool2(const float *in, int c, int s, float *out)
{
    const int h = s / 2;
    for (int k = 0; k < c; k++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < h; x++) {
                const float *p = in + (k * s + 2 * y) * s + 2 * x;
                out[(k * h + y) * h + x] = fmaxf(fmaxf(p[0], p[1]), fmaxf(p[s], p[s + 1]));
            }
}

/* PyTorch's adaptive average pool 7x7 -> 3x3: bins [0, 3), [2, 5), [4, 7). */
static void pool_7_to_3(const float *in, int c, float *out)
{
    for (int k = 0; k < c; k++)
        for (int by = 0; by < 3; by++)
            for (int bx = 0; bx < 3; bx++) {
                double s = 0;
                for (int y = 2 * by; y < 2 * by + 3; y++)
                    for (int x = 2 * bx; x < 2 * bx + 3; x++)
                        s += in[(k * 7 + y) * 7 + x];
                out[(k * 3 + by) * 3 + bx] = (float)(s / 9);
            }
}

int judge_features(const judge *j, int n, const float *x, double *features)
{
    enum { A1 = C1 * 28 * 28, P1 = C1 * 14 * 14, A2 = C2 * 14 * 14, P2 = C2 * 7 * 7, A3 = C3 * 49 };
    float *a1 = malloc(sizeof(float) * (A1 + P1 + A2 + P2 + A3 + POOLED));
    if (!a1)
        return vapo_fail("out of memory");
    float *p1 = a1 + A1, *a2 = p1 + P1, *p2 = a2 + A2, *a3 = p2 + P2, *p3 = a3 + A3;
    for (int i = 0; i < n; i++) {
        conv_relu(x + (size_t)i * 784, 1, 28, j->c1w, j->c1b, C1, a1);
        max_pool2(a1, C1, 28, p1);
        conv_relu(p1, C1, 14, j->c2w, j->c2b, C2, a2);
        max_pool2(a2, C2, 14, p2);
        conv_relu(p2, C2, 7, j->c3w, j->c3b, C3, a3);
        pool_7_to_3(a3, C3, p3);
        for (int o = 0; o < JUDGE_FEATURES; o++) {
            double acc = j->f1b[o];
            for (int k = 0; k < POOLED; k++)
                acc += (double)j->f1w[o * POOLED + k] * p3[k];
            features[(size_t)i * JUDGE_FEATURES + o] = acc > 0 ? acc : 0;
        }
    }
    free(a1);
    return 0;
}

void judge_classes(const judge *j, const double *f, double *p)
{
    double top = -INFINITY, sum = 0;
    for (int c = 0; c < CLASSES; c++) {
        double acc = j->fcb[c];
        for (int k = 0; k < JUDGE_FEATURES; k++)
            acc += (double)j->fcw[c * JUDGE_FEATURES + k] * f[k];
        p[c] = acc;
        top = fmax(top, acc);
    }
    for (int c = 0; c < CLASSES; c++)
        sum += (p[c] = exp(p[c] - top));
    for (int c = 0; c < CLASSES; c++)
        p[c] /= sum;
}

/* ---- the Frechet distance ------------------------------------------------------------ */

static void mean_cov(const double *f, int n, int dim, double *mean, double *cov)
{
    memset(mean, 0, sizeof(double) * dim);
    memset(cov, 0, sizeof(double) * dim * dim);
    for (int i = 0; i < n; i++)
        for (int a = 0; a < dim; a++)
            mean[a] += f[(size_t)i * dim + a] / n;
    for (int i = 0; i < n; i++)
        for (int a = 0; a < dim; a++)
            for (int b = 0; b <= a; b++)
                cov[a * dim + b] += (f[(size_t)i * dim + a] - mean[a]) * (f[(size_t)i * dim + b] - mean[b]);
    for (int a = 0; a < dim; a++)
        for (int b = 0; b <= a; b++)
            cov[b * dim + a] = cov[a * dim + b] /= (n > 1 ? n - 1 : 1);
}

/* Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations:
 * a is destroyed (its diagonal ends as the eigenvalues, w), v gets the
 * eigenvectors as columns. */
static void jacobi_eigen(double *a, int n, double *w, double *v)
{
    for (int i = 0; i < n * n; i++)
        v[i] = (i / n == i % n);
    for (int sweep = 0; sweep < 60; sweep++) {
        double off = 0, diag = 0;
        for (int p = 0; p < n; p++)
            for (int q = 0; q < n; q++) {
                const double e = a[p * n + q] * a[p * n + q];
                if (p == q)
                    diag += e;
                else
                    off += e;
            }
        if (off <= 1e-24 * diag || off == 0)
            break;
        for (int p = 0; p < n; p++)
            for (int q = p + 1; q < n; q++) {
                const double apq = a[p * n + q];
                if (apq == 0)
                    continue;
                const double theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
                const double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
                const double c = 1 / sqrt(t * t + 1), s = t * c;
                for (int k = 0; k < n; k++) { /* columns p, q */
                    const double akp = a[k * n + p], akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq, a[k * n + q] = s * akp + c * akq;
                }
                for (int k = 0; k < n; k++) { /* rows p, q */
                    const double apk = a[p * n + k], aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk, a[q * n + k] = s * apk + c * aqk;
                }
                for (int k = 0; k < n; k++) {
                    const double vkp = v[k * n + p], vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq, v[k * n + q] = s * vkp + c * vkq;
                }
            }
    }
    for (int i = 0; i < n; i++)
        w[i] = a[i * n + i];
}

double frechet_distance(const double *f1, int n1, const double *f2, int n2, int dim)
{
    const size_t dd = (size_t)dim * dim;
    double *buf = malloc(sizeof(double) * (6 * dd + 4 * dim));
    if (!buf)
        return NAN;
    double *c1 = buf, *c2 = c1 + dd, *v = c2 + dd, *s = v + dd, *t = s + dd, *u = t + dd;
    double *m1 = u + dd, *m2 = m1 + dim, *w = m2 + dim;
    mean_cov(f1, n1, dim, m1, c1);
    mean_cov(f2, n2, dim, m2, c2);
    double fd = 0;
    for (int a = 0; a < dim; a++)
        fd += (m1[a] - m2[a]) * (m1[a] - m2[a]) + c1[a * dim + a] + c2[a * dim + a];
    memcpy(t, c1, sizeof(double) * dd);
    jacobi_eigen(t, dim, w, v); /* s = C1^1/2 = V sqrt(W) V^T */
    for (int a = 0; a < dim; a++)
        for (int b = 0; b < dim; b++) {
            double acc = 0;
            for (int k = 0; k < dim; k++)
                acc += v[a * dim + k] * sqrt(fmax(w[k], 0)) * v[b * dim + k];
            s[a * dim + b] = acc;
        }
    for (int a = 0; a < dim; a++) /* u = s C2 */
        for (int b = 0; b < dim; b++) {
            double acc = 0;
            for (int k = 0; k < dim; k++)
                acc += s[a * dim + k] * c2[k * dim + b];
            u[a * dim + b] = acc;
        }
    for (int a = 0; a < dim; a++) /* t = u s, symmetric positive semi-definite */
        for (int b = 0; b < dim; b++) {
            double acc = 0;
            for (int k = 0; k < dim; k++)
                acc += u[a * dim + k] * s[k * dim + b];
            t[a * dim + b] = acc;
        }
    jacobi_eigen(t, dim, w, v);
    for (int a = 0; a < dim; a++)
        fd -= 2 * sqrt(fmax(w[a], 0));
    free(buf);
    return fd;
}
