/* A trained model ready for use: the network with its (EMA) weights on a
 * backend, plus what its checkpoint says about data, sampling and OOD
 * calibration. This is what vapo-sample, vapo-score and vapo-serve load.
 *
 * Checkpoint layout (safetensors, see ckpt.h):
 *   tensors  one per network parameter, named as vapo_net_params_list says,
 *            holding the weights to sample with (the EMA weights);
 *            trainer state under "train/..." (ignored here);
 *   metadata "vapo": {"format": 1, "arch": {...}, "data": {...},
 *            "loss": {...}, "train": {...}, "sampling": {...}, "ood": {...}}
 * Sample k of a request is x0 = omega * N(0, I) from the counter-based RNG at
 * (seed, stream VAPO_STREAM_SAMPLE_NOISE, elements k*d .. k*d+d-1), pushed
 * through dx/dt = grad Phi(x): it depends on (seed, k) only. */
#ifndef VAPO_MODEL_H
#define VAPO_MODEL_H

#include <jansson.h>
#include <stdint.h>

#include "vapo/ckpt.h"
#include "vapo/loss.h"
#include "vapo/net.h"
#include "vapo/ode.h"
#include "vapo/ood.h"

typedef struct {
    vapo_net *net;
    vapo_arch arch;
    vapo_loss_config loss;    /* omega is the prior std of the initial noise */
    vapo_ode_config sampling; /* defaults for generation */
    long long step;           /* training step of the weights */
    char dataset[128];
    vapo_ood ood; /* OOD scores' calibration (vapo/ood.h); nothing calibrated when
                   * ood.calib[VAPO_SCORE_ENERGY].count == 0 */
    json_t *meta; /* the full "vapo" metadata object */

    /* scratch for batched evaluation on the backend */
    int cap;
    float *dev_x, *dev_g, *dev_phi;
} vapo_model;

/* A fresh model around a network (for training); takes ownership of net. */
vapo_model *vapo_model_wrap(vapo_net *net, const vapo_loss_config *loss);
vapo_model *vapo_model_load(const char *path, vapo_backend *be);
void vapo_model_free(vapo_model *m);
/* Frees the model but not its network, which it returns. */
vapo_net *vapo_model_unwrap(vapo_model *m);

/* Saves the network's current weights, the metadata and `n_extra` further
 * host tensors (trainer state, named "train/...") atomically. */
int vapo_model_save(const char *path, const vapo_model *m, const vapo_tensor_ref *extra, int n_extra);

/* The metadata object to store with the weights (new reference). */
json_t *vapo_model_metadata(const vapo_model *m);

/* Field and energy on host arrays of `count` NCHW images. vapo_model_field has
 * the signature of vapo_field_fn (ctx = the model), for the ODE solvers. */
int vapo_model_field(void *model, int count, const float *points, float *out);
/* The same field on backend memory (vapo_field_backend_fn, for
 * vapo_ode_solve_backend): points and out are count NCHW images on the
 * model's backend, so nothing crosses to the host. */
int vapo_model_field_backend(void *model, int count, const float *points, float *out);
/* Both at once: phi (count) and grad (count x d); either may be NULL. */
int vapo_model_energy_grad(vapo_model *m, int count, const float *x, float *phi, float *grad);
int vapo_model_energy(vapo_model *m, int count, const float *x, float *phi);

/* The network as the sampler pool evaluates it (vapo_pool_eval_fn; ctx = the
 * model): x, grad and phi are backend memory. */
int vapo_model_eval_backend(void *model, int count, const float *x, float *grad, float *phi);
/* A sampler pool (vapo/ode_batch.h) on the model's backend and network. */
struct vapo_pool *vapo_model_pool(vapo_model *m);

/* Samples n trajectories on a pool: x (n x d, host) holds the start points
 * (vapo_model_noise, an interpolation) and receives the final states; phi
 * (n, may be NULL) their energies, nfe (n, may be NULL) their evaluations;
 * progress (may be NULL) is called after every batched evaluation. The rows
 * are stepped together, but a row's result does not depend on the others.
 * Returns 0, or -1 when the evaluation failed, progress cancelled, or a
 * sample failed (the message names the first; the others still finish). */
int vapo_model_sample(vapo_model *m, const vapo_ode_config *cfg, int n, float *x, float *phi, int *nfe,
                      vapo_ode_progress_fn progress, void *progress_ctx);

/* Initial noise of samples first..first+n-1 for `seed` (host, n*d floats). */
void vapo_model_noise(const vapo_model *m, uint64_t seed, int first, int n, float *x);

/* Values of OOD score k (vapo/ood.h: higher = more typical) of n host
 * images, in batches of at most `batch` rows; each value depends on its image
 * alone. The multiscale score needs a fitted mixture (vapo_ood_available),
 * except through vapo_model_ms_features, which gives the features it uses
 * (vapo_ood_ms_dim per image) with the levels set in m->ood.ms. */
int vapo_model_score(vapo_model *m, vapo_score_kind k, int n, const float *x, int batch, double *value);
int vapo_model_ms_features(vapo_model *m, int n, const float *x, int batch, double *features);

/* The OOD calibration at the end of training: fits the multiscale mixture
 * (vapo_ood_ms_defaults' levels, VAPO_MS_COMPONENTS components) and the
 * mahalanobis score's Gaussian on n_fit held-out training images, then
 * stores every score's quantiles over n_cal other held-out images, and makes
 * the best measured score the default (mahalanobis, models/README.md). With
 * too few fit images for one (fewer than 4 x components x features for the
 * mixture, 2 x features for the Gaussian: a toy dataset) that score is left
 * out; with neither the default is the energy. */
#define VAPO_MS_COMPONENTS 4
int vapo_model_calibrate(vapo_model *m, const float *fit, int n_fit, const float *cal, int n_cal, int batch);

#endif
