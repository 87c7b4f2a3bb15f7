/* The VAPO loss estimator against the analytic cases of VAPO-MATH.md
 * section 10 (omega = 1, nu = 0.1, eps = nu^2/omega^2 = 0.01):
 *   C   identities of the schedule and of the centred innovation;
 *   A1  single data point: the optimal quadratic potential is the Gaussian
 *       transport velocity (exact identities, and a Monte-Carlo fit);
 *   --  the deterministic population loss 0.931701 and its MC estimate;
 *   A3  time-integrated loss on Gaussian data: fitted a ~ -1.820,
 *       b ~ (1.210, -0.605, 1.815).
 * Each with the section 3.6 (score) estimator and the pathwise one.
 * A quadratic potential Phi = phi(x).p has grad Phi = M(x) p, so the MC loss
 * is quadratic in p and its minimiser solves (sum M^T M) p = -sum w gc phi. */
#include <string.h>

#include "testutil.h"
#include "vapo/loss.h"
#include "vapo/rng.h"

#define MAXP 16

static vapo_loss_config test_config(void)
{
    vapo_loss_config c = vapo_loss_config_default();
    c.nu = 0.1, c.eps = 0.01, c.lambda = 0.0;
    return c;
}

/* ---- C: identities --------------------------------------------------------------- */

static void check_identities(void)
{
    vapo_loss_config c = test_config();
    vapo_schedule s0 = vapo_schedule_at(&c, 0.0), s1 = vapo_schedule_at(&c, 1.0);
    CHECK_CLOSE(s0.tau, 0.0, 1e-15, "tau(0)");
    CHECK_CLOSE(s1.tau, 1.0, 1e-12, "tau(1)");
    CHECK_CLOSE(s0.m, 0.0, 1e-15, "m(0)");
    CHECK_CLOSE(s0.sigma, c.omega, 1e-12, "sigma(0)");
    CHECK_CLOSE(s1.sigma * s1.sigma, 0.01 / 1.01, 1e-12, "sigma(1)^2");
    for (double t = 0.0; t <= 1.0; t += 0.125) {
        vapo_schedule s = vapo_schedule_at(&c, t);
        CHECK_CLOSE(s.sigma, pow(1.0 + 1.0 / 0.01, -t / 2), 1e-12, "geometric sigma(t)");
        CHECK_CLOSE(s.m, 1.0 - s.sigma * s.sigma, 1e-12, "m = 1 - sigma^2");
        /* A1's exact identities: the optimum is the transport velocity */
        const double n2 = c.nu * c.nu, den = n2 + s.tau;
        CHECK_CLOSE(-s.w * s.sigma * s.sigma / n2, -s.dtau / (2 * den), 1e-12, "-w sigma^2/nu^2 = sigma'/sigma");
        CHECK_CLOSE(2 * s.w * s.sigma * s.sigma * (1 - s.m) / n2, s.dtau * n2 / (den * den), 1e-12,
                    "2 w sigma^2 (1-m)/nu^2 = m'");
    }
    /* section 2.3 table (nu = 0.01, eps = 1e-4) */
    vapo_loss_config d = vapo_loss_config_default();
    vapo_schedule h = vapo_schedule_at(&d, 0.5);
    CHECK_CLOSE(h.m, 0.9900, 1e-4, "m(0.5), nu = 0.01");
    CHECK_CLOSE(h.sigma, 0.1000, 1e-4, "sigma(0.5), nu = 0.01");
    CHECK_CLOSE(h.w, 4.606e-2, 1e-4, "w(0.5), nu = 0.01");
    d.weighting = VAPO_WEIGHT_CONSTANT;
    CHECK_CLOSE(vapo_schedule_at(&d, 0.5).w, 0.5, 1e-15, "constant weighting");

    /* gc from z equals gamma - gamma_hat computed from x (in double), and its
     * MC mean is 0 with the closed-form variance */
    const int d4 = 4, n = 200000;
    const float xb[4] = {0.8f, -0.5f, 0.3f, 1.2f};
    float z[4], x[4];
    vapo_path_coef coef;
    double t = 0.3, zx[2], mean = 0, var = 0, maxdiff = 0;
    vapo_schedule s = vapo_schedule_at(&c, t);
    const double xb2 = (double)xb[0] * xb[0] + (double)xb[1] * xb[1] + (double)xb[2] * xb[2] + (double)xb[3] * xb[3], n2 = c.nu * c.nu;
    const double ghat = ((1 - s.m) * (1 - s.m) * xb2 + d4 * s.sigma * s.sigma) / n2;
    for (int i = 0; i < n; i++) {
        vapo_rng_normal(3, 0, (uint64_t)i * d4, d4, z);
        vapo_loss_perturb(&c, 1, d4, xb, &t, z, x, &coef, zx, NULL);
        const double gc = vapo_path_wgc(&coef, zx, d4) / s.w;
        double gamma = 0;
        for (int j = 0; j < d4; j++) {
            double xj = s.m * xb[j] + s.sigma * (double)z[j];
            gamma += (xb[j] - xj) * (xb[j] - xj) / n2;
        }
        maxdiff = fmax(maxdiff, fabs(gamma - ghat - gc));
        mean += gc, var += gc * gc;
    }
    mean /= n, var = var / n - mean * mean;
    const double want_var = (2 * d4 * pow(s.sigma, 4) + 4 * pow(1 - s.m, 2) * s.sigma * s.sigma * xb2) / (n2 * n2);
    CHECK(maxdiff < 1e-9 * ghat, "gc closed form vs gamma - gamma_hat: max difference %g", maxdiff);
    CHECK(fabs(mean) < 4 * sqrt(want_var / n), "MC mean of gc %g (standard error %g)", mean, sqrt(want_var / n));
    CHECK(fabs(var / want_var - 1) < 0.02, "MC variance of gc %g, closed form %g", var, want_var);
    printf("  identities: schedule, A1 optimum, gc centring and variance ok\n");
}

/* ---- quadratic fits (tolerances: a few MC standard errors; a wrong 1/2, sign
 * or tau' moves the fitted curvature by a factor of two or more)  ----------------------------------------------------------------- */

typedef struct {
    int d, np;
    int full; /* 1: symmetric A + b; 0: isotropic a + b */
} quad;

/* grad Phi = M p (M is d x np, row major) and Phi = phi . p */
static void quad_basis(const quad *q, const double *x, double *M, double *phi)
{
    memset(M, 0, sizeof(double) * q->d * q->np);
    int k = 0;
    if (q->full) {
        for (int j = 0; j < q->d; j++)
            for (int l = j; l < q->d; l++, k++) {
                if (j == l) {
                    phi[k] = 0.5 * x[j] * x[j];
                    M[j * q->np + k] = x[j];
                } else {
                    phi[k] = x[j] * x[l];
                    M[j * q->np + k] = x[l];
                    M[l * q->np + k] = x[j];
                }
            }
    } else {
        phi[k] = 0;
        for (int j = 0; j < q->d; j++)
            phi[k] += 0.5 * x[j] * x[j], M[j * q->np + k] = x[j];
        k++;
    }
    for (int j = 0; j < q->d; j++, k++)
        phi[k] = x[j], M[j * q->np + k] = 1.0;
}

static int solve(int n, double *A, double *b)
{
    for (int c = 0; c < n; c++) {
        int piv = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(A[r * n + c]) > fabs(A[piv * n + c]))
                piv = r;
        if (fabs(A[piv * n + c]) < 1e-300)
            return -1;
        for (int k = 0; k < n; k++) {
            double t = A[c * n + k];
            A[c * n + k] = A[piv * n + k], A[piv * n + k] = t;
        }
        double t = b[c];
        b[c] = b[piv], b[piv] = t;
        for (int r = c + 1; r < n; r++) {
            double f = A[r * n + c] / A[c * n + c];
            for (int k = c; k < n; k++)
                A[r * n + k] -= f * A[c * n + k];
            b[r] -= f * b[c];
        }
    }
    for (int c = n - 1; c >= 0; c--) {
        for (int k = c + 1; k < n; k++)
            b[c] -= A[c * n + k] * b[k];
        b[c] /= A[c * n + c];
    }
    return 0;
}

/* Draws samples through vapo_loss_perturb and returns the MC minimiser p.
 * data: mean mu and std s of xbar (s = 0: a single point); t_fixed < 0: t ~ U.
 * pathwise: the covariance term is -grad Phi . v (minimiser: sum M^T v). */
static void fit(const quad *q, const float *mu, double s, double t_fixed, int n, uint64_t seed, int pathwise, double *p)
{
    vapo_loss_config c = test_config();
    double A[MAXP * MAXP] = {0}, rhs[MAXP] = {0}, M[8 * MAXP], phi[MAXP], xd[8], zx[2];
    vapo_path_coef coef;
    float xb[8], z[8], x[8], v[8];
    const int d = q->d;
    for (int i = 0; i < n; i++) {
        double t = t_fixed >= 0 ? t_fixed : vapo_rng_uniform(seed, 1, i);
        vapo_rng_normal(seed, 2, (uint64_t)i * d, d, z);
        vapo_rng_normal(seed, 3, (uint64_t)i * d, d, xb);
        for (int j = 0; j < d; j++)
            xb[j] = mu[j] + (float)s * xb[j];
        vapo_loss_perturb(&c, 1, d, xb, &t, z, x, &coef, zx, v);
        const double wgc = vapo_path_wgc(&coef, zx, d);
        for (int j = 0; j < d; j++)
            xd[j] = x[j];
        quad_basis(q, xd, M, phi);
        for (int a = 0; a < q->np; a++) {
            for (int b = 0; b < q->np; b++) {
                double acc = 0;
                for (int r = 0; r < d; r++)
                    acc += M[r * q->np + a] * M[r * q->np + b];
                A[a * q->np + b] += acc;
            }
            if (pathwise)
                for (int r = 0; r < d; r++)
                    rhs[a] += M[r * q->np + a] * v[r];
            else
                rhs[a] -= wgc * phi[a];
        }
    }
    solve(q->np, A, rhs);
    memcpy(p, rhs, sizeof(double) * q->np);
}

static void check_a1(void)
{
    const float xb[4] = {0.8f, -0.5f, 0.3f, 1.2f};
    const quad q = {4, 14, 1};
    vapo_loss_config c = test_config();
    const double ts[2] = {0.2, 0.5};
    for (int k = 0; k < 4; k++) {
        double p[MAXP];
        const int pathwise = k >= 2;
        fit(&q, xb, 0.0, ts[k % 2], pathwise ? 20000 : 1500000, 11 + k, pathwise, p);
        vapo_schedule s = vapo_schedule_at(&c, ts[k % 2]);
        const double rate = -s.dtau / (2 * (c.nu * c.nu + s.tau)); /* sigma'/sigma = -2.30756 */
        const double mdot = s.dtau * c.nu * c.nu / pow(c.nu * c.nu + s.tau, 2);
        int diag[4] = {0, 4, 7, 9};
        for (int j = 0; j < 4; j++) {
            const double b_exact = (mdot - rate * s.m) * xb[j];
            /* pathwise: the velocity is linear in z, so the fit is exact */
            const double tol_a = pathwise ? 1e-4 : 0.1, tol_b = pathwise ? 1e-4 : 0.3;
            CHECK(fabs(p[diag[j]] - rate) < tol_a, "A1 %s t=%g: A[%d][%d] = %.4f, exact %.4f", pathwise ? "pathwise" : "score",
                  ts[k % 2], j, j, p[diag[j]], rate);
            CHECK(fabs(p[10 + j] - b_exact) < tol_b, "A1 %s t=%g: b[%d] = %.4f, exact %.4f",
                  pathwise ? "pathwise" : "score", ts[k % 2], j, p[10 + j], b_exact);
        }
        printf("  A1 %-8s t=%.1f: diag(A) = %.5f %.5f %.5f %.5f (exact %.5f), b = %.3f %.3f %.3f %.3f\n",
               pathwise ? "pathwise" : "score", ts[k % 2], p[0], p[4], p[7], p[9], rate, p[10], p[11], p[12], p[13]);
    }
}

/* The deterministic check: population loss of a given quadratic, closed form
 * and Monte Carlo. */
static void check_population_loss(void)
{
    vapo_loss_config c = test_config();
    const double A[2][2] = {{-1, 0.3}, {0.3, -2}}, b[2] = {0.5, 0.2}, xb[2] = {0.8, -0.5}, t = 0.5;
    vapo_schedule s = vapo_schedule_at(&c, t);
    double mu[2] = {s.m * xb[0], s.m * xb[1]}, u[2], trA2 = 0, uu = 0, ud = 0;
    for (int i = 0; i < 2; i++) {
        u[i] = A[i][0] * mu[0] + A[i][1] * mu[1] + b[i];
        uu += u[i] * u[i];
        ud += u[i] * (xb[i] - mu[i]);
        for (int j = 0; j < 2; j++)
            trA2 += A[i][j] * A[j][i];
    }
    const double s2 = s.sigma * s.sigma, n2 = c.nu * c.nu;
    const double closed = 0.5 * uu + 0.5 * s2 * trA2 + (s.w / n2) * (s2 * s2 * (A[0][0] + A[1][1]) - 2 * s2 * ud);
    CHECK_CLOSE(closed, 0.931701, 1e-6, "closed-form population loss");

    const int n = 1000000, B = 1000;
    float xbf[2 * B], z[2 * B], x[2 * B], phi[B], g[2 * B];
    vapo_path_coef coef[B];
    double ts[B], zx[2 * B], sum = 0, sum2 = 0;
    for (int i = 0; i < B; i++)
        xbf[2 * i] = 0.8f, xbf[2 * i + 1] = -0.5f, ts[i] = t;
    for (int k = 0; k < n / B; k++) {
        vapo_rng_normal(21, 0, (uint64_t)k * 2 * B, 2 * B, z);
        vapo_loss_perturb(&c, B, 2, xbf, ts, z, x, coef, zx, NULL);
        for (int i = 0; i < B; i++) {
            const float *xi = x + 2 * i;
            g[2 * i] = (float)(A[0][0] * xi[0] + A[0][1] * xi[1] + b[0]);
            g[2 * i + 1] = (float)(A[1][0] * xi[0] + A[1][1] * xi[1] + b[1]);
            phi[i] = (float)(0.5 * (xi[0] * g[2 * i] + xi[1] * g[2 * i + 1] - b[0] * xi[0] - b[1] * xi[1]) +
                             b[0] * xi[0] + b[1] * xi[1]);
            vapo_loss_terms one;
            vapo_loss_eval(&c, 1, 2, coef + i, zx + 2 * i, phi + i, g + 2 * i, NULL, &one, NULL, NULL);
            const double li = one.total * 2; /* undo the 1/d */
            sum += li, sum2 += li * li;
        }
    }
    const double mean = sum / n, se = sqrt((sum2 / n - mean * mean) / n);
    CHECK(fabs(mean - closed) < 4 * se, "MC population loss %.5f +- %.5f, closed form %.6f", mean, se, closed);
    printf("  population loss: closed form %.6f, estimator %.5f +- %.5f\n", closed, mean, se);

    /* the pathwise estimator (vapo_loss_eval with v): -grad Phi . v has the same
     * expectation as w gc Phi by Stein's identity, with far less spread */
    double pw_sum = 0, pw_sum2 = 0;
    float v[2 * B];
    for (int k = 0; k < n / B; k++) {
        vapo_rng_normal(21, 0, (uint64_t)k * 2 * B, 2 * B, z);
        vapo_loss_perturb(&c, B, 2, xbf, ts, z, x, coef, zx, v);
        for (int i = 0; i < B; i++) {
            const float *xi = x + 2 * i;
            g[2 * i] = (float)(A[0][0] * xi[0] + A[0][1] * xi[1] + b[0]);
            g[2 * i + 1] = (float)(A[1][0] * xi[0] + A[1][1] * xi[1] + b[1]);
            vapo_loss_terms one;
            vapo_loss_eval(&c, 1, 2, coef + i, zx + 2 * i, phi + i, g + 2 * i, v + 2 * i, &one, NULL, NULL);
            const double li = one.total * 2;
            pw_sum += li, pw_sum2 += li * li;
        }
    }
    const double pw_mean = pw_sum / n, pw_se = sqrt((pw_sum2 / n - pw_mean * pw_mean) / n);
    CHECK(fabs(pw_mean - closed) < 4 * pw_se + 1e-6, "pathwise: %.6f +- %.6f, closed form %.6f", pw_mean, pw_se, closed);
    CHECK(pw_se < 0.25 * se, "the pathwise estimator is not much less noisy (%g vs %g)", pw_se, se);
    printf("  pathwise -grad Phi . v: %.6f +- %.6f\n", pw_mean, pw_se);
}

static void check_a3(int pathwise)
{
    const float mu[3] = {0.5f, -0.25f, 0.75f};
    const quad q = {3, 4, 0};
    double p[MAXP];
    /* the pathwise estimator reaches the same minimiser with 1/4 of the samples and 1/3 of the tolerance */
    const double tol = pathwise ? 0.01 : 0.03;
    fit(&q, mu, 0.3, -1.0, pathwise ? 500000 : 2000000, 31, pathwise, p);
    const double a = -1.82005, b[3] = {1.20984, -0.60492, 1.81477};
    const char *name = pathwise ? "pathwise" : "score";
    CHECK(fabs(p[0] - a) < tol, "A3 %s: a = %.4f, quadrature truth %.5f", name, p[0], a);
    for (int j = 0; j < 3; j++)
        CHECK(fabs(p[1 + j] - b[j]) < tol, "A3 %s: b[%d] = %.4f, truth %.5f", name, j, p[1 + j], b[j]);
    printf("  A3 %-8s: a = %.4f (truth %.5f), b = (%.4f, %.4f, %.4f) (truth %.5f, %.5f, %.5f)\n", name, p[0], a, p[1],
           p[2], p[3], b[0], b[1], b[2]);
}

/* vapo_loss_time: the identity without a tilt; with tilt k the mean of t is
 * 1/(1 - e^{-k}) - 1/k and P(t < 1/2) = 1/(1 + e^{k/2}); the validator bounds k. */
static void check_time_law(void)
{
    vapo_loss_config c = vapo_loss_config_default();
    CHECK(vapo_loss_time(&c, 0.3) == 0.3, "no tilt: t = u");
    const double k = c.time_tilt = 3.0, want_mean = 1 / (1 - exp(-k)) - 1 / k, want_half = 1 / (1 + exp(k / 2));
    const int n = 200000;
    double mean = 0, half = 0;
    for (int i = 0; i < n; i++) {
        const double t = vapo_loss_time(&c, vapo_rng_uniform(5, 0, i));
        CHECK(t >= 0 && t <= 1, "tilted t = %g outside [0, 1]", t);
        mean += t / n, half += (t < 0.5) / (double)n;
    }
    CHECK(fabs(mean - want_mean) < 0.003 && fabs(half - want_half) < 0.004,
          "tilt 3: mean %.4f (want %.4f), P(t < 1/2) %.4f (want %.4f)", mean, want_mean, half, want_half);
    printf("  time tilt 3: mean t %.4f (exact %.4f), P(t < 1/2) %.4f (exact %.4f)\n", mean, want_mean, half, want_half);
    c.time_tilt = NAN;
    CHECK(vapo_loss_config_validate(&c) != 0, "a NaN tilt passes validation");
}

int main(void)
{
    check_time_law();
    check_identities();
    check_a1();
    check_population_loss();
    check_a3(0);
    check_a3(1);
    return test_finish("test_loss");
}
