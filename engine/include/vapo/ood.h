/* Out-of-distribution scores of images and their calibration (VAPO-MATH.md
 * section 6; docs/DESIGN.md "OOD scores").
 *
 * Every score is a value that is higher for images more like the training
 * data, so one rule serves all of them: an image's ood_score is the fraction
 * of a held-out in-distribution set's values above its own (0 typical, 1
 * below everything seen), and it is in distribution iff ood_score <= keep.
 *   energy      Phi(x).
 *   complexity  Phi(x) + ln 2 * L(x), L the PNG code length of the 8-bit image
 *               in bits (Serra et al., ICLR 2020): the energy as a likelihood
 *               ratio against a generic compressor, so an image does not look
 *               typical merely for being simple.
 *   multiscale  the log-density, under a small Gaussian mixture fitted on
 *               held-out training images, of the features Phi(x + s_l z_l)
 *               and log |grad Phi(x + s_l z_l)| at a few noise levels s_l
 *               (fixed directions z_l; after Mahmood et al., ICLR 2021; s_0 =
 *               0, the image itself), and the PNG code length per pixel (so
 *               that simple images stand out here too).
 *   mahalanobis the log-density, under one Gaussian fitted on held-out
 *               training images, of the network's own summary of the image
 *               (vapo_net_features: log(1 + f) of each, after Lee et al.,
 *               NeurIPS 2018) and its PNG bits per value. One evaluation
 *               without the gradient.
 * A score is evaluated on rows: vapo_ood_rows images per input image (the
 * noised copies for multiscale, the image itself otherwise), each needing
 * Phi and, where vapo_ood_needs_grad, |grad Phi| (where
 * vapo_ood_needs_features, the network's features); vapo_ood_value turns the
 * rows' results into the image's value. Values depend on the image alone
 * (the noise is the same for every image), not on its batch. */
#ifndef VAPO_OOD_H
#define VAPO_OOD_H

#include <jansson.h>
#include <stdint.h>

#define VAPO_OOD_QUANTILES 1001
#define VAPO_MS_MAX_LEVELS 8
#define VAPO_MS_MAX_FEATURES (2 * VAPO_MS_MAX_LEVELS + 1)
#define VAPO_MS_MAX_COMPONENTS 8

typedef enum {
    VAPO_SCORE_ENERGY,
    VAPO_SCORE_COMPLEXITY,
    VAPO_SCORE_MULTISCALE,
    VAPO_SCORE_MAHALANOBIS,
    VAPO_SCORE_KINDS
} vapo_score_kind;

const char *vapo_score_name(vapo_score_kind k);
/* -1 with a message naming the choices for an unknown name. */
int vapo_score_parse(const char *name, vapo_score_kind *k);
/* "energy, complexity, multiscale or mahalanobis" */
const char *vapo_score_choices(void);

/* Values of a held-out in-distribution set: q[i] = quantile i/(N-1). */
typedef struct {
    int count; /* 0: not calibrated */
    float q[VAPO_OOD_QUANTILES];
} vapo_quantiles;

/* The multiscale score's features and mixture: dim = 2 * levels + 1 features
 * (per level Phi and log |grad Phi|, then PNG bits per value), standardised,
 * (f - shift) / scale, before the mixture sees them. */
typedef struct {
    int levels; /* 0: none; sigma[0] is 0 */
    float sigma[VAPO_MS_MAX_LEVELS];
    uint64_t seed; /* z_l: vapo_rng_normal(seed, VAPO_STREAM_OOD_NOISE, l * d, d) */
    int k;         /* mixture components; 0: not fitted */
    double shift[VAPO_MS_MAX_FEATURES], scale[VAPO_MS_MAX_FEATURES];
    double weight[VAPO_MS_MAX_COMPONENTS];
    double mean[VAPO_MS_MAX_COMPONENTS][VAPO_MS_MAX_FEATURES];
    double cov[VAPO_MS_MAX_COMPONENTS][VAPO_MS_MAX_FEATURES * VAPO_MS_MAX_FEATURES];
    /* derived from the above (vapo_ood_ms_prepare): lower Cholesky factors
     * and log(weight) - log det(2 pi cov) / 2 */
    double chol[VAPO_MS_MAX_COMPONENTS][VAPO_MS_MAX_FEATURES * VAPO_MS_MAX_FEATURES];
    double lognorm[VAPO_MS_MAX_COMPONENTS];
} vapo_multiscale;

/* The mahalanobis score's Gaussian over dim = features + 1 values (log(1 +
 * max(0, f)) of each network feature, then PNG bits per value), standardised,
 * (v - mean) / scale; chol is the lower Cholesky factor of the standardised
 * covariance, rows packed (dim (dim + 1) / 2 values). Heap memory: a
 * vapo_ood that holds one is released with vapo_ood_free. */
typedef struct {
    int dim; /* 0: not fitted */
    double *mean, *scale, *chol;
} vapo_gauss;

typedef struct {
    vapo_quantiles calib[VAPO_SCORE_KINDS];
    vapo_multiscale ms;
    vapo_gauss g;
    vapo_score_kind default_score; /* used when a request names none */
    double keep;                   /* fraction of in-distribution data kept (0.95) */
} vapo_ood;

void vapo_ood_init(vapo_ood *o);
/* Releases the Gaussian and empties o as vapo_ood_init does. */
void vapo_ood_free(vapo_ood *o);

/* The noise levels of the multiscale features a calibration uses. */
void vapo_ood_ms_defaults(vapo_multiscale *ms);

/* 1 if the score can be computed (multiscale needs a fitted mixture,
 * mahalanobis a Gaussian). */
int vapo_ood_available(const vapo_ood *o, vapo_score_kind k);
/* Rows per image, and whether they need |grad Phi| too. */
int vapo_ood_rows(const vapo_ood *o, vapo_score_kind k);
int vapo_ood_needs_grad(vapo_score_kind k);
int vapo_ood_needs_features(vapo_score_kind k);
/* Network features per row the score reads (0 when it reads none). */
int vapo_ood_features(const vapo_ood *o, vapo_score_kind k);
/* The rows of one image x (d floats): vapo_ood_rows(k) images of d floats. */
void vapo_ood_expand(const vapo_ood *o, vapo_score_kind k, int d, const float *x, float *rows);
/* Features per image of the multiscale score. */
int vapo_ood_ms_dim(const vapo_multiscale *ms);
/* The multiscale features of one image x (c, h, w) from its rows' results. */
void vapo_ood_ms_features(const vapo_multiscale *ms, int c, int h, int w, const float *x, const float *phi,
                          const float *gnorm, double *f);
/* The value of one image (c, h, w floats in [-1, 1]) from its rows' Phi,
 * |grad Phi| and network features (gnorm and feat may be NULL when the score
 * needs none). Non-finite results come back as -INFINITY (least typical). */
double vapo_ood_value(const vapo_ood *o, vapo_score_kind k, int c, int h, int w, const float *x, const float *phi,
                      const float *gnorm, const float *feat);
/* The mahalanobis score's dim values of one image from its nfeat network
 * features (dim = nfeat + 1). */
void vapo_ood_gauss_features(int c, int h, int w, const float *x, const float *feat, int nfeat, double *v);
/* Fits the Gaussian on n vectors of dim values (row-major; n >= 2 dim). */
int vapo_ood_gauss_fit(vapo_gauss *g, const double *v, int n, int dim);

/* PNG code length of the image quantised to 8 bits, in bits. */
double vapo_ood_png_bits(const float *x, int c, int h, int w);

/* Fits the mixture (k components, EM from a deterministic start) on n
 * feature vectors of vapo_ood_ms_dim values (row-major). */
int vapo_ood_ms_fit(vapo_multiscale *ms, const double *features, int n, int k);
/* Cholesky factors and normalisers; -1 if a covariance is not positive definite. */
int vapo_ood_ms_prepare(vapo_multiscale *ms);

/* Quantiles of n values of score k (non-finite values rank lowest). */
int vapo_ood_calibrate(vapo_ood *o, vapo_score_kind k, const double *values, int n);
/* The fraction of calibration values above `value` (1 when k is not calibrated). */
double vapo_ood_score(const vapo_ood *o, vapo_score_kind k, double value);
int vapo_ood_in_distribution(const vapo_ood *o, vapo_score_kind k, double value);

/* The "ood" metadata object (NULL when nothing is calibrated), and back:
 * every field checked (counts, sorted finite quantiles, a positive definite
 * mixture, the Gaussian's lengths and positive factor diagonal); an absent
 * object leaves o as vapo_ood_init made it. vapo_ood_from_json starts from
 * vapo_ood_init (o must hold no Gaussian) and on failure frees what it read. */
json_t *vapo_ood_to_json(const vapo_ood *o);
int vapo_ood_from_json(const json_t *obj, vapo_ood *o);

#endif
