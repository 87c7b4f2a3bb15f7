/* vapo-train: trains a VAPO energy model (VAPO-MATH.md section 4).
 * Each step draws a batch, computes the exact second-order gradient of the
 * VAPO loss (engine: vapo_loss_step), clips, applies Lamb or Adam and updates
 * the EMA. Checkpoints hold the EMA weights (what is sampled and served) and
 * the full trainer state under "train/...", so --resume continues bit for bit.
 * Under mpirun each rank computes its rows of the global batch and the ranks
 * sum their gradients (trainer/dist.h); rank 0 alone writes files. */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cli.h"
#include "trainer/dist.h"
#include "trainer/optim.h"
#include "trainer/options.h"
#include "trainer/quality.h"
#include "vapo/ckpt.h"
#include "vapo/dataset.h"
#include "vapo/error.h"
#include "vapo/image.h"
#include "vapo/model.h"

static volatile sig_atomic_t stop_requested;
static void on_signal(int sig) { stop_requested = sig; }

typedef struct {
    train_options o;
    vapo_backend *be;
    vapo_dataset *data;
    vapo_loader *loader;
    vapo_net *net;      /* trained weights */
    vapo_model *ema;    /* EMA weights, for grids, calibration and checkpoints */
    optim_state opt;
    vapo_loss_work *work;
    float *batch; /* host, this rank's rows */
    float *grad;  /* backend memory, like the weights and the optimizer state */
    dist_world world;
    int rows, row0;       /* this rank's rows of the global batch: row0 .. row0+rows-1 */
    double *terms;        /* host, the loss terms of every row of the global batch */
    float *grad_host;     /* host staging for the gradient exchange (ranks > 1) */
    long step, step0; /* steps done, at the start of this process */
    FILE *log;
    cli_progress progress; /* the step line on stderr */
    /* --select fd: the judge, the test images' features, the best EMA weights so far */
    judge *judge;
    double *ref_features, best_fd;
    float *best_params;
    long best_step;
} run;

static void out_path(const run *r, char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", r->o.out, name);
}

/* ---- checkpoints ---------------------------------------------------------------- */

static void sync_ema(run *r)
{
    r->be->copy(r->be, vapo_net_params(r->ema->net), r->opt.ema, sizeof(float) * r->opt.n);
}

/* The trainer's state saved beside the EMA weights: names and backend buffers. */
enum { NSTATE = 3 };
static const char *const state_names[NSTATE] = {"train/params", "train/m", "train/v"};
static void state_buffers(run *r, float *dev[NSTATE])
{
    dev[0] = vapo_net_params(r->net), dev[1] = r->opt.m, dev[2] = r->opt.v;
}

static int save_checkpoint(run *r, const char *path)
{
    sync_ema(r);
    json_t *train = json_pack("{s:I, s:o}", "step", (json_int_t)r->step, "options", train_options_to_json(&r->o));
    json_object_set_new(r->ema->meta, "train", train);
    const size_t n = r->opt.n;
    float *host = malloc(sizeof(float) * NSTATE * n), *dev[NSTATE]; /* read back only to be written */
    if (!host)
        return vapo_fail("out of memory saving %s", path);
    state_buffers(r, dev);
    vapo_tensor_ref extra[NSTATE];
    for (int i = 0; i < NSTATE; i++) {
        r->be->download(r->be, host + i * n, dev[i], sizeof(float) * n);
        extra[i] = (vapo_tensor_ref){
            .name = state_names[i], .dtype = VAPO_DT_F32, .ndim = 1, .shape = {(int64_t)n}, .data = host + i * n};
    }
    int rc = vapo_model_save(path, r->ema, extra, NSTATE);
    free(host);
    return rc;
}

/* Checkpoints ckpt-<step>.safetensors; only the last `keep` stay. */
static int save_step_checkpoint(run *r)
{
    char path[1024], old[1024];
    snprintf(path, sizeof path, "%s/ckpt-%08ld.safetensors", r->o.out, r->step);
    if (save_checkpoint(r, path))
        return -1;
    long gone = r->step - (long)r->o.keep * r->o.save_every;
    if (gone > 0) {
        snprintf(old, sizeof old, "%s/ckpt-%08ld.safetensors", r->o.out, gone);
        unlink(old);
    }
    return 0;
}

static int read_state(const vapo_ckpt *ck, const char *name, size_t n, float *dst)
{
    int64_t shape[1] = {(int64_t)n};
    return vapo_ckpt_read_f32(ck, name, 1, shape, dst);
}

/* The options and step of the checkpoint to resume: its saved options, then
 * --config and the command line, which win. OPT_GO, or an exit status. */
static int resume_options(run *r, int argc, char **argv)
{
    const char *path = r->o.resume, *out = r->o.out;
    vapo_ckpt *ck = vapo_ckpt_load(path);
    if (!ck)
        return opt_error("%s", vapo_last_error());
    const json_t *train = json_object_get(json_object_get(vapo_ckpt_metadata(ck), "vapo"), "train");
    const json_t *step = json_object_get(train, "step");
    int rc = OPT_EXIT_FAILURE;
    if (!json_is_integer(step) || json_integer_value(step) < 0)
        opt_error("%s: no trainer state (metadata vapo.train.step) to resume from", path);
    else
        rc = train_options_resume(&r->o, json_object_get(train, "options"), path, argc, argv);
    r->o.out = out, r->o.resume = path; /* neither is saved */
    r->step = (long)json_integer_value(step);
    vapo_ckpt_free(ck);
    return rc;
}

/* The EMA weights, saved under the network's parameter names, into host. */
static int read_ema(run *r, const vapo_ckpt *ck, float *host)
{
    const vapo_param *list;
    int count = vapo_net_params_list(r->net, &list), rc = 0;
    for (int i = 0; !rc && i < count; i++) {
        int64_t shape[4];
        for (int k = 0; k < list[i].ndim; k++)
            shape[k] = list[i].shape[k];
        rc = vapo_ckpt_read_f32(ck, list[i].name, list[i].ndim, shape, host + list[i].offset);
    }
    return rc;
}

static int load_resume_tensors(run *r, const char *path)
{
    vapo_ckpt *ck = vapo_ckpt_load(path);
    if (!ck)
        return -1;
    const size_t bytes = sizeof(float) * r->opt.n;
    float *host = malloc(bytes), *dev[NSTATE];
    int rc = host ? 0 : vapo_fail("out of memory");
    state_buffers(r, dev);
    for (int i = 0; !rc && i < NSTATE; i++)
        if (!(rc = read_state(ck, state_names[i], r->opt.n, host)))
            r->be->upload(r->be, dev[i], host, bytes);
    if (!rc && !(rc = read_ema(r, ck, host)))
        r->be->upload(r->be, r->opt.ema, host, bytes);
    free(host);
    vapo_ckpt_free(ck);
    return rc ? vapo_fail("%s: %s", path, vapo_last_error()) : 0;
}

/* ---- sample grids and calibration --------------------------------------------------- */

static int progress_dot(void *ctx, const vapo_ode_progress *p)
{
    (void)ctx, (void)p;
    return stop_requested != 0;
}

static void print_values(FILE *f, const char *sep, const char *fmt, const double *x, int n)
{
    for (int k = 0; k < n; k++) {
        fputs(k ? sep : "", f);
        fprintf(f, fmt, x[k]);
    }
}

/* The EMA field against the path velocity at five noise levels: where the
 * model is still wrong, which the loss (dominated by sigma ~ 1) hides. */
static void report_field(run *r)
{
    enum { NT = 5 };
    static const double t[NT] = {0.0, 0.25, 0.5, 0.75, 1.0};
    vapo_field_fit_result fit[NT];
    double sigma[NT], cosine[NT], contraction[NT], denoiser[NT], input[NT];
    if (vapo_loader_rows(r->loader, (uint64_t)r->step, r->row0, r->rows, r->batch, NULL) ||
        vapo_field_fit(r->ema->net, r->work, &r->o.loss, r->batch, NT, t, (uint64_t)r->o.seed, fit)) {
        fprintf(stderr, "vapo-train: field diagnostic failed: %s\n", vapo_last_error());
        return;
    }
    for (int k = 0; k < NT; k++) {
        sigma[k] = vapo_schedule_at(&r->o.loss, t[k]).sigma;
        cosine[k] = fit[k].cosine, contraction[k] = fit[k].contraction;
        denoiser[k] = fit[k].denoiser_rms, input[k] = fit[k].input_rms;
    }
    fprintf(stderr, "vapo-train: field vs path velocity (EMA)  sigma:");
    print_values(stderr, "", " %6.3f", sigma, NT);
    fprintf(stderr, "\n%46s", "cos:");
    print_values(stderr, "", " %6.3f", cosine, NT);
    fprintf(stderr, "\n%46s", "contraction / path's:");
    print_values(stderr, "", " %6.3f", contraction, NT);
    fprintf(stderr, "\n%46s", "implied denoiser, RMS error:");
    print_values(stderr, "", " %6.3f", denoiser, NT);
    fprintf(stderr, "\n%46s", "(the noisy input's own):");
    print_values(stderr, "", " %6.3f", input, NT);
    fputc('\n', stderr);
    if (r->log) {
        fprintf(r->log, "{\"step\": %ld, \"field_t\": [", r->step);
        print_values(r->log, ", ", "%g", t, NT);
        fprintf(r->log, "], \"field_cos\": [");
        print_values(r->log, ", ", "%.4f", cosine, NT);
        fprintf(r->log, "], \"field_contraction\": [");
        print_values(r->log, ", ", "%.4f", contraction, NT);
        fprintf(r->log, "], \"field_denoiser_rms\": [");
        print_values(r->log, ", ", "%.4f", denoiser, NT);
        fprintf(r->log, "]}\n");
        fflush(r->log);
    }
}

static int write_grid(run *r, const char *name)
{
    sync_ema(r);
    const int n = r->o.grid, d = (int)vapo_net_input_size(r->net);
    const vapo_arch *a = &r->ema->arch;
    float *x = malloc(sizeof(float) * n * d);
    int *nfe = malloc(sizeof(int) * n);
    if (!x || !nfe) {
        free(x), free(nfe);
        return vapo_fail("out of memory");
    }
    vapo_ode_config cfg = r->ema->sampling;
    cfg.rtol = cfg.atol = r->o.sample_tol;
    vapo_model_noise(r->ema, 0, 0, n, x); /* fixed seeds: the same images over training */
    const double t0 = cli_now();
    int rc = vapo_model_sample(r->ema, &cfg, n, x, NULL, nfe, progress_dot, NULL);
    if (!rc) {
        char path[1024];
        out_path(r, path, sizeof path, name);
        rc = cli_write_grid(path, x, n, a->in_c, a->in_h, a->in_w, 0, 2);
        long total = 0;
        for (int i = 0; i < n; i++)
            total += nfe[i];
        if (!rc)
            opt_info("wrote %s (%d samples, mean NFE %.1f, %.1f s)", path, n, (double)total / n, cli_now() - t0);
        report_field(r);
    }
    free(x), free(nfe);
    return rc;
}

/* n images of ds from `first` (host, NCHW floats), or NULL. */
static float *read_images(const vapo_dataset *ds, int first, int n, int d)
{
    float *x = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1) * d);
    if (!x)
        vapo_fail("out of memory for %d images", n);
    else if (n > 0 && vapo_dataset_get(ds, first, n, x, NULL))
        free(x), x = NULL;
    return x;
}

/* The OOD scores' calibration (vapo_model_calibrate) of m for the dataset
 * spec: the mixture on its last n training images, the quantiles on its
 * first n test images (without a test split, on the n training images
 * before those). */
static int calibrate_model(vapo_model *m, const char *spec, int n)
{
    vapo_dataset *train = NULL, *test = NULL;
    const vapo_arch *a = &m->arch;
    const int d = (int)vapo_net_input_size(m->net);
    if (vapo_dataset_open(spec, "train", a->in_c, a->in_h, a->in_w, &train))
        return -1;
    if (vapo_dataset_open(spec, "test", a->in_c, a->in_h, a->in_w, &test)) {
        opt_info("no test split for the OOD calibration (%s); using held-out training images", vapo_last_error());
        test = NULL;
    }
    const int n_fit = n < train->n / 2 ? n : train->n / 2;
    const int n_cal = test ? (n < test->n ? n : test->n) : n_fit;
    float *fit = read_images(train, train->n - n_fit, n_fit, d);
    float *cal = test ? read_images(test, 0, n_cal, d) : read_images(train, train->n - 2 * n_fit, n_cal, d);
    int rc = fit && cal ? vapo_model_calibrate(m, fit, n_fit, cal, n_cal, 64) : -1;
    for (int k = 0; !rc && k < VAPO_SCORE_KINDS; k++) {
        const float *q = m->ood.calib[k].q;
        if (m->ood.calib[k].count == 0) {
            opt_info("no %s score: %d training images are too few for its mixture", vapo_score_name((vapo_score_kind)k),
                     n_fit);
            continue;
        }
        opt_info("OOD calibration (%s) on %d held-out images: 5%% %.4g, median %.4g, 95%% %.4g",
                 vapo_score_name((vapo_score_kind)k), n_cal, q[50], q[500], q[950]);
    }
    free(fit), free(cal);
    vapo_dataset_free(train);
    vapo_dataset_free(test);
    return rc;
}

static int calibrate(run *r)
{
    sync_ema(r);
    return calibrate_model(r->ema, r->o.data, r->o.calib);
}

/* --recalibrate FILE: the calibration of an existing checkpoint, redone in
 * place with today's scores; weights, trainer state and other metadata kept. */
static int recalibrate(const train_options *o)
{
    vapo_backend *be = vapo_backend_open(o->dev.device, o->dev.threads);
    vapo_ckpt *ck = be ? vapo_ckpt_load(o->recalibrate) : NULL;
    vapo_model *m = ck ? vapo_model_load(o->recalibrate, be) : NULL;
    int rc = m ? calibrate_model(m, o->data, o->calib) : -1;
    if (!rc) {
        vapo_tensor_ref *extra = calloc(vapo_ckpt_count(ck) + 1, sizeof *extra);
        int n = 0;
        for (int i = 0; extra && i < vapo_ckpt_count(ck); i++)
            if (!strncmp(vapo_ckpt_tensor(ck, i)->name, "train/", 6))
                extra[n++] = *vapo_ckpt_tensor(ck, i);
        rc = extra ? vapo_model_save(o->recalibrate, m, extra, n) : vapo_fail("out of memory");
        free(extra);
    }
    if (!rc)
        opt_info("recalibrated %s (default score %s)", o->recalibrate, vapo_score_name(m->ood.default_score));
    vapo_model_free(m);
    vapo_ckpt_free(ck);
    if (be)
        be->destroy(be);
    return rc;
}

/* ---- checkpoint selection by FD (--select fd) ------------------------------------- */

static int select_init(run *r)
{
    const vapo_arch *a = &r->ema->arch;
    vapo_dataset *test = NULL;
    const int n = r->o.select_n, d = (int)vapo_net_input_size(r->net);
    if (a->in_c != 1 || a->in_h != 28 || a->in_w != 28)
        return vapo_fail("--select fd needs 1x28x28 images (its judge is Fashion-MNIST's), not %dx%dx%d", a->in_c,
                         a->in_h, a->in_w);
    if (!(r->judge = judge_load(r->o.judge)))
        return vapo_fail("--select fd: the judge: %s", vapo_last_error());
    if (vapo_dataset_open(r->o.data, "test", 1, 28, 28, &test))
        return -1;
    float *x = test->n >= n ? read_images(test, 0, n, d) : NULL;
    r->ref_features = malloc(sizeof(double) * n * JUDGE_FEATURES);
    r->best_params = malloc(sizeof(float) * r->opt.n);
    int rc = x && r->ref_features && r->best_params ? judge_features(r->judge, n, x, r->ref_features)
                                                    : vapo_fail("--select-n %d: too many test images or out of memory", n);
    r->best_fd = INFINITY, r->best_step = -1;
    free(x);
    vapo_dataset_free(test);
    return rc;
}

/* FD of --select-n samples (seed 1000, the grids' solver settings, rounded to 8
 * bits as a PNG stores them) of the EMA weights; keeps them if the best. */
static int select_eval(run *r)
{
    const int n = r->o.select_n, d = (int)vapo_net_input_size(r->net);
    float *x = malloc(sizeof(float) * (size_t)n * d);
    double *f = malloc(sizeof(double) * n * JUDGE_FEATURES), t0 = cli_now();
    int rc = x && f ? 0 : vapo_fail("out of memory");
    sync_ema(r);
    vapo_ode_config cfg = r->ema->sampling;
    cfg.rtol = cfg.atol = r->o.sample_tol;
    if (!rc) {
        vapo_model_noise(r->ema, 1000, 0, n, x);
        rc = vapo_model_sample(r->ema, &cfg, n, x, NULL, NULL, progress_dot, NULL);
    }
    if (!rc) {
        for (size_t i = 0; i < (size_t)n * d; i++) {
            unsigned char u;
            vapo_float_to_u8(x + i, 1, &u);
            x[i] = u / 127.5f - 1.0f;
        }
        rc = judge_features(r->judge, n, x, f);
    }
    if (!rc) {
        const double fd = frechet_distance(f, n, r->ref_features, n, JUDGE_FEATURES);
        const int best = fd < r->best_fd;
        if (best) {
            r->best_fd = fd, r->best_step = r->step;
            r->be->download(r->be, r->best_params, r->opt.ema, sizeof(float) * r->opt.n);
        }
        opt_info("FD %.3f at step %ld (%d samples, %.0f s)%s", fd, r->step, n, cli_now() - t0,
                 best ? ", the best so far" : "");
        if (r->log) {
            fprintf(r->log, "{\"step\": %ld, \"fd\": %.6g, \"fd_n\": %d}\n", r->step, fd, n);
            fflush(r->log);
        }
    }
    free(x), free(f);
    return rc;
}

/* The best weights become the EMA weights that the final grid, calibration
 * and model.safetensors use; the metadata says which step they are. */
static int select_apply(run *r)
{
    if (!r->judge || (r->best_step != r->step && select_eval(r)))
        return r->judge ? -1 : 0;
    r->be->upload(r->be, r->opt.ema, r->best_params, sizeof(float) * r->opt.n);
    json_object_set_new(r->ema->meta, "select",
                        json_pack("{s:s, s:I, s:f, s:i}", "by", "fd", "step", (json_int_t)r->best_step, "fd",
                                  r->best_fd, "n", r->o.select_n));
    opt_info("model.safetensors holds the EMA weights of step %ld (FD %.3f)", r->best_step, r->best_fd);
    return 0;
}

/* ---- the loop ------------------------------------------------------------------ */

/* The shared progress line on stderr (printed when due: cheap otherwise). */
static void progress(run *r, const vapo_loss_terms *t, double gnorm)
{
    cli_progress_update(&r->progress, (double)(r->step - r->step0),
                        "step %ld/%ld, loss %+.5f (dir %.4f cov %+.4f l2 %.2e), |grad| %.3g", r->step, r->o.steps,
                        t->total, t->dirichlet, t->covariance, t->spectral, gnorm);
}

/* A line of the metrics log (JSONL). */
static void report(run *r, const vapo_loss_terms *t, double gnorm, double rate)
{
    if (r->log) {
        fprintf(r->log,
                "{\"step\": %ld, \"loss\": %.8g, \"dirichlet\": %.8g, \"covariance\": %.8g, \"spectral\": %.8g, "
                "\"phi_mean\": %.6g, \"grad_x_norm\": %.6g, \"grad_norm\": %.6g, \"lr\": %.6g, \"steps_per_s\": %.4g}\n",
                r->step, t->total, t->dirichlet, t->covariance, t->spectral, t->phi_mean, t->grad_norm, gnorm,
                optim_lr(&r->o.opt, r->step), rate);
        fflush(r->log);
    }
}

/* The ranks' gradients summed, on every rank (through host memory). */
static int sum_gradients(run *r)
{
    if (r->world.size == 1)
        return 0;
    const size_t bytes = sizeof(float) * r->opt.n;
    r->be->download(r->be, r->grad_host, r->grad, bytes);
    if (dist_sum(&r->world, r->grad_host, r->opt.n))
        return -1;
    r->be->upload(r->be, r->grad, r->grad_host, bytes);
    return 0;
}

static int train_step(run *r, vapo_loss_terms *terms, double *gnorm)
{
    const int B = r->o.batch, nt = VAPO_ROW_TERMS * r->rows;
    double *mine = r->terms + (size_t)VAPO_ROW_TERMS * r->row0;
    if (vapo_loader_rows(r->loader, (uint64_t)r->step, r->row0, r->rows, r->batch, NULL))
        return -1;
    r->be->zero(r->be, r->grad, sizeof(float) * r->opt.n);
    if (vapo_loss_step_rows(r->net, r->work, &r->o.loss, r->batch, (uint64_t)r->o.seed, (uint64_t)r->step, B,
                            r->row0, r->grad, mine) ||
        dist_gather(&r->world, r->terms, nt) || sum_gradients(r))
        return -1;
    vapo_loss_terms_sum(B, r->terms, terms); /* in row order: the single-process sum */
    if (vapo_loss_check(terms, (uint64_t)r->step))
        return -1;
    *gnorm = optim_step(&r->opt, vapo_net_params(r->net), r->grad, r->step);
    r->step++;
    return 0;
}

static int train_loop(run *r)
{
    vapo_loss_terms terms = {0};
    double gnorm = 0, t0 = cli_now(), rate = 0;
    const long s0 = r->step0 = r->step;
    const int writer = r->world.rank == 0;
    cli_progress_start(&r->progress, "training", (double)(r->o.steps - s0), "steps", writer);
    /* every rank stops at the same step: a signal may reach them at different ones */
    while (r->step < r->o.steps && !dist_any(&r->world, stop_requested)) {
        if (train_step(r, &terms, &gnorm))
            return cli_progress_break(&r->progress), -1;
        rate = (r->step - s0) / (cli_now() - t0);
        if (!writer)
            continue;
        progress(r, &terms, gnorm);
        if (r->step % r->o.log_every == 0 || r->step == s0 + 1 || r->step == r->o.steps)
            report(r, &terms, gnorm, rate);
        if (r->step % r->o.save_every == 0 && save_step_checkpoint(r))
            return cli_progress_break(&r->progress), -1;
        if (r->o.sample_every && r->step % r->o.sample_every == 0 && r->step < r->o.steps) {
            char name[64];
            cli_progress_break(&r->progress);
            snprintf(name, sizeof name, "samples-%08ld.png", r->step);
            if (write_grid(r, name) || (r->judge && select_eval(r)))
                return -1;
        }
    }
    cli_progress_finish(&r->progress);
    if (r->step < r->o.steps)
        stop_requested = 1; /* maybe another rank's signal: this one saves the interrupted state */
    return 0;
}

/* Data-dependent scale of the fresh network (the paper's NVAE-style init):
 * sets the head's gain so that |grad Phi| at prior samples matches the speed
 * of the exact Gaussian flow there, |sigma'/sigma| |x| = (L_eps/2) omega sqrt(d).
 * Phi is linear in that gain, so one rescaling is exact. Without it the
 * network starts ~100x too slow and spends thousands of steps growing. With
 * --quadratic the fixed term already has that speed, so this is skipped. */
static int init_scale(run *r)
{
    /* each rank its rows of the global batch; the norms summed in row order */
    const int n = r->o.batch, b = r->rows, d = (int)vapo_net_input_size(r->net);
    vapo_model *probe = vapo_model_wrap(r->net, &r->o.loss);
    float *x = malloc(sizeof(float) * b * d), *g = malloc(sizeof(float) * b * d);
    double *rownorm = malloc(sizeof(double) * n);
    int rc = probe && x && g && rownorm ? 0 : vapo_fail("out of memory");
    if (!rc) {
        vapo_model_noise(probe, (uint64_t)r->o.seed, r->row0, b, x);
        rc = vapo_model_field(probe, b, x, g);
    }
    for (int i = 0; !rc && i < b; i++) {
        double s = 0;
        for (int j = 0; j < d; j++)
            s += (double)g[(size_t)i * d + j] * g[(size_t)i * d + j];
        rownorm[r->row0 + i] = sqrt(s);
    }
    if (!rc)
        rc = dist_gather(&r->world, rownorm, b);
    if (!rc) {
        double norm = 0;
        for (int i = 0; i < n; i++)
            norm += rownorm[i] / n;
        const double want = 0.5 * vapo_loss_l_eps(&r->o.loss) * r->o.loss.omega * sqrt((double)d);
        const vapo_param *gain = vapo_net_param_find(r->net, "head.g");
        float value;
        r->be->download(r->be, &value, vapo_net_params(r->net) + gain->offset, sizeof value);
        value *= (float)(want / fmax(norm, 1e-12));
        r->be->upload(r->be, vapo_net_params(r->net) + gain->offset, &value, sizeof value);
        if (r->world.rank == 0)
            fprintf(stderr, "vapo-train: initial |grad Phi| %.3g at prior samples; head gain set to %.4g for %.3g\n",
                    norm, value, want);
    }
    if (probe)
        vapo_model_unwrap(probe); /* the network stays ours */
    free(x), free(g), free(rownorm);
    return rc;
}

/* The anchor mu starts where the t = 0 path puts it: there the velocity is
 * L_eps E[xbar] - (L_eps/2) x, and -kappa (x - mu) fits it best with mu =
 * (L_eps/kappa) times the data mean (2x the mean for --quadratic auto). The
 * mean is of the flip-augmented data, so it is mirror-symmetric. */
static int init_anchor(run *r)
{
    const vapo_dataset *ds = r->data;
    const size_t hw = (size_t)ds->h * ds->w, d = (size_t)ds->c * hw;
    double *sum = calloc(d, sizeof *sum);
    float *mu = malloc(sizeof(float) * d);
    if (!sum || !mu) {
        free(sum), free(mu);
        return vapo_fail("out of memory");
    }
    for (size_t i = 0; i < (size_t)ds->n; i++)
        for (size_t j = 0; j < d; j++)
            sum[j] += ds->pixels[i * d + j] / 127.5 - 1.0;
    const double scale = vapo_loss_l_eps(&r->o.loss) / r->o.kappa / ds->n;
    for (size_t j = 0; j < d; j++) {
        const size_t x = j % ds->w, mirror = j - x + (ds->w - 1 - x);
        mu[j] = (float)(0.5 * scale * (sum[j] + sum[mirror]));
    }
    const vapo_param *p = vapo_net_param_find(r->net, "anchor");
    r->be->upload(r->be, vapo_net_params(r->net) + p->offset, mu, sizeof(float) * d);
    free(sum), free(mu);
    return 0;
}

/* The U-Net's constant c (Phi = kappa/2 (d U c - |x - f(x)|^2), net.h) starts
 * where E[Phi] = 0 over the training law, as the spectral-gap term wants: f = 0
 * at the start, so c = E|x_t|^2 / (d U) = E_t[m^2 E|xbar|^2 + sigma^2 d] / (d U)
 * (midpoint rule over the uniform draw that the time law maps to t). From 0,
 * lambda Phi^2 would pull f towards x until c had grown. */
static int init_offset(run *r)
{
    const vapo_dataset *ds = r->data;
    const size_t d = vapo_net_input_size(r->net), count = (size_t)ds->n * d;
    double xbar2 = 0, x2 = 0;
    for (size_t i = 0; i < count; i++) {
        const double v = ds->pixels[i] / 127.5 - 1.0;
        xbar2 += v * v;
    }
    xbar2 /= ds->n;
    const int steps = 4096;
    for (int k = 0; k < steps; k++) {
        const vapo_schedule s = vapo_schedule_at(&r->o.loss, vapo_loss_time(&r->o.loss, (k + 0.5) / steps));
        x2 += (s.m * s.m * xbar2 + s.sigma * s.sigma * (double)d) / steps;
    }
    const float c = (float)(x2 / (double)d / VAPO_UNET_OFFSET_UNIT);
    const vapo_param *p = vapo_net_param_find(r->net, "out.offset");
    r->be->upload(r->be, vapo_net_params(r->net) + p->offset, &c, sizeof c);
    if (r->world.rank == 0)
        fprintf(stderr, "vapo-train: E|x_t|^2 / d = %.4g over the training law: Phi's constant\n", c * VAPO_UNET_OFFSET_UNIT);
    return 0;
}

/* A resumed run continues the metrics log from its step: lines of steps the
 * interrupted run logged after its last checkpoint are dropped. */
static void truncate_log(const char *path, long step)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[1024], tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *out = fopen(tmp, "w");
    while (out && fgets(line, sizeof line, f)) {
        long s;
        if (sscanf(line, "{\"step\": %ld", &s) == 1 && s <= step)
            fputs(line, out);
    }
    fclose(f);
    if (out && !fclose(out))
        rename(tmp, path);
}

/* This rank's rows of the global batch. */
static int split_batch(run *r)
{
    const int R = r->world.size;
    if (r->o.batch % R)
        return vapo_fail("--batch %d does not split over %d ranks: it must be a multiple of the rank count",
                         r->o.batch, R);
    r->rows = r->o.batch / R, r->row0 = r->world.rank * r->rows;
    return 0;
}

/* The device: under mpirun, cuda (or auto, when CUDA is usable) is the GPU
 * of the rank's number on its machine. */
static vapo_backend *open_device(const run *r)
{
    const char *dev = r->o.dev.device;
    if (r->world.size == 1 || (strcmp(dev, "cuda") && strcmp(dev, "auto")))
        return vapo_backend_open(dev, r->o.dev.threads);
    char name[32];
    snprintf(name, sizeof name, "cuda:%d", r->world.local_rank);
    vapo_backend *be = vapo_backend_open(name, r->o.dev.threads);
    if (!be && !strcmp(dev, "auto")) {
        opt_info("%s; using the CPU backend", vapo_last_error());
        be = vapo_backend_open("cpu", r->o.dev.threads);
    }
    return be;
}

/* The run's device, folder and data; the network comes next. */
static int open_run(run *r, vapo_arch *arch)
{
    if (train_options_arch(&r->o, arch) || split_batch(r))
        return -1;
    if (r->world.rank == 0 && cli_mkdir_p(r->o.out))
        return -1;
    if (!(r->be = open_device(r)))
        return -1;
    return vapo_dataset_open(r->o.data, "train", arch->in_c, arch->in_h, arch->in_w, &r->data) ||
           vapo_loader_create(r->data, (uint64_t)r->o.seed, r->o.batch, 1, &r->loader);
}

/* The network, its EMA copy and the step's buffers: freshly initialised, or
 * the checkpoint's state when resuming. */
static int build_model(run *r, const vapo_arch *arch)
{
    const int resume = r->o.resume != NULL;
    r->net = vapo_net_create(r->be, arch);
    vapo_net *ema_net = vapo_net_create(r->be, arch);
    if (!r->net || !ema_net || vapo_net_init(r->net, (uint64_t)r->o.seed))
        return vapo_net_free(ema_net), -1;
    if (!(r->ema = vapo_model_wrap(ema_net, &r->o.loss)))
        return vapo_net_free(ema_net), -1;
    r->ema->sampling.t_end = r->o.t_end; /* the served samples look like the training grids */
    r->ema->sampling.rtol = r->ema->sampling.atol = r->o.sample_tol;
    r->ema->meta = json_object();
    snprintf(r->ema->dataset, sizeof r->ema->dataset, "%s", r->o.data);
    const size_t np = vapo_net_param_count(r->net);
    r->batch = malloc(sizeof(float) * r->rows * vapo_net_input_size(r->net));
    r->grad = r->be->alloc(r->be, sizeof(float) * np);
    r->work = vapo_loss_work_create(r->net, r->rows);
    r->terms = malloc(sizeof(double) * VAPO_ROW_TERMS * r->o.batch);
    r->grad_host = r->world.size > 1 ? malloc(sizeof(float) * np) : NULL;
    if (!r->batch || !r->grad || !r->work || !r->terms || (r->world.size > 1 && !r->grad_host))
        return vapo_fail("out of memory");
    if (!resume && arch->quadratic == 0.0f && init_scale(r))
        return -1;
    if (!resume && arch->anchor && init_anchor(r))
        return -1;
    if (!resume && arch->unet && init_offset(r))
        return -1;
    if (optim_init(&r->opt, &r->o.opt, r->net, vapo_net_params(r->net)))
        return -1;
    return resume ? load_resume_tensors(r, r->o.resume) : 0;
}

/* Rank 0's metrics log (continued from the resumed step), the run's summary
 * and, with --select fd, the judge's view of the test images. */
static int open_log(run *r, const vapo_arch *arch)
{
    if (r->world.rank > 0)
        return 0;
    if (!strcmp(r->o.select, "fd") && select_init(r))
        return -1;
    char path[1024];
    out_path(r, path, sizeof path, "metrics.jsonl");
    if (r->step > 0)
        truncate_log(path, r->step);
    if (!(r->log = fopen(path, r->step > 0 ? "a" : "w")))
        return vapo_fail("cannot write %s: %s", path, strerror(errno));
    if (r->world.size > 1)
        opt_info("data-parallel over %d ranks, %d rows of the batch each", r->world.size, r->rows);
    opt_info("%s (%zu parameters) on %s [%d images] with %s, batch %d, %ld steps, backend %s", arch->preset,
             vapo_net_param_count(r->net), r->o.data, r->data->n, optim_kind_name(r->o.opt.kind), r->o.batch,
             r->o.steps, r->be->name);
    if (r->o.resume)
        opt_info("resumed from %s at step %ld", r->o.resume, r->step);
    return 0;
}

/* After the loop: an interrupted run saves its state; a finished one its last
 * steps, then the final grid, calibration and model. Rank 0 alone writes. */
static int finish_run(run *r)
{
    char path[1024];
    if (r->world.rank > 0)
        return 0;
    if (stop_requested) {
        out_path(r, path, sizeof path, "interrupted.safetensors");
        if (save_checkpoint(r, path))
            return -1;
        opt_info("interrupted at step %ld; saved %s (resume with --resume %s)", r->step, path, path);
        return 0;
    }
    /* The last steps first: sampling the grid and calibrating can fail (a
     * diverged model at max NFE, a full disk), and that must not lose up to
     * save_every - 1 steps. */
    if ((r->step % r->o.save_every != 0 && save_step_checkpoint(r)) || select_apply(r) ||
        write_grid(r, "samples.png") || calibrate(r))
        return -1;
    out_path(r, path, sizeof path, "model.safetensors");
    if (save_checkpoint(r, path))
        return -1;
    opt_info("done; model at %s", path);
    return 0;
}

static void teardown(run *r)
{
    if (r->log)
        fclose(r->log);
    optim_free(&r->opt);
    vapo_loss_work_free(r->work);
    if (r->grad)
        r->be->free(r->be, r->grad);
    free(r->batch), free(r->terms), free(r->grad_host);
    vapo_model_free(r->ema);
    vapo_net_free(r->net);
    judge_free(r->judge);
    free(r->ref_features), free(r->best_params);
    vapo_loader_free(r->loader);
    vapo_dataset_free(r->data);
    if (r->be)
        r->be->destroy(r->be);
    opt_release();
}

/* parse -> open device and data -> build or resume -> loop -> final files */
int main(int argc, char **argv)
{
    run r = {0};
    vapo_arch arch;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    if (dist_init(&argc, &argv, &r.world))
        return opt_error("%s", vapo_last_error());
    int status = train_options_parse(&r.o, argc, argv);
    if (status == OPT_GO && r.o.recalibrate) /* no training */
        status = recalibrate(&r.o) ? opt_error("%s", vapo_last_error()) : 0;
    if (status == OPT_GO && r.o.resume)
        status = resume_options(&r, argc, argv);
    if (status != OPT_GO) {
        opt_release();
        dist_finalize(&r.world);
        return status;
    }
    int rc = open_run(&r, &arch) || build_model(&r, &arch) || open_log(&r, &arch) || train_loop(&r) ||
             finish_run(&r);
    if (rc && r.world.size > 1) {
        fprintf(stderr, "vapo-train (rank %d of %d): error: %s\n", r.world.rank, r.world.size, vapo_last_error());
        dist_abort(&r.world, 1); /* the other ranks would wait for this one forever */
    } else if (rc) {
        opt_error("%s", vapo_last_error());
    }
    teardown(&r);
    dist_finalize(&r.world);
    return rc ? OPT_EXIT_FAILURE : 0;
}
