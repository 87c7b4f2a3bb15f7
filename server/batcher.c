#include "batcher.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vapo/backend.h"
#include "vapo/error.h"
#include "vapo/interp.h"
#include "vapo/model.h"
#include "vapo/ode_batch.h"

#include "clock.h"
#include "log.h"

enum { RR_SHARE_DIV = 16 }; /* max_batch / 16 rows of a batch go round-robin */
#define ADMIT_SAFETY 0.9       /* admit when the estimate ends within 90% of the deadline */
#define RK45_NFE_GUESS 100.0   /* RK45 evaluations per image before one has finished */
#define RATE_TAU_S 2.0         /* the cost per row is an average over about the last 2 s of work */
#define SCORE_HOLD_S 1.0       /* keep steps short this long after the last score (batcher.h) */
enum { STATE_LOADING, STATE_READY, STATE_FAILED };

/* One row of a batch: which job and row it came from. */
typedef struct {
    job *j;
    int row;
} slot;

struct batcher {
    batcher_config cfg;
    metrics *mx;
    pthread_t thread;

    /* Shared with submitters, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t wake; /* work, cancellation or stop for the scheduler */
    pthread_cond_t idle; /* a job ended, or the load finished */
    int state;
    char load_error[512];
    job *pending, *pending_tail; /* submitted, not yet admitted */
    int pending_rows;
    int queued_images; /* images of all jobs submitted and not ended */
    int jobs_in_flight;
    int draining, cancel_all, stop;
    /* Admission (batcher.h): rows of work admitted and not yet evaluated, the
     * device's seconds per row (0: not measured yet; full: measured on a batch
     * at least half full) and RK45's evaluations per image (0: none yet). */
    double backlog_rows, sec_per_row, rk45_nfe;

    /* Scheduler-private: the sums behind sec_per_row. */
    double rate_time, rate_rows;
    int rate_full;

    /* Set once when ready, then read-only (HTTP threads read it). */
    model_info info;

    /* Scheduler-private. */
    vapo_backend *be;
    vapo_model *model;
    job **active;
    int nactive, active_cap;
    int rr; /* round-robin start */
    /* Latency classes (batcher.h): when score rows were last taken, the
     * chunk's rows, and whether the batch being run was cut to it. */
    double last_score, chunk;
    int chunked, scores_alone; /* scores_alone: the last step was score rows only */
    vapo_pool *pool; /* every row of every admitted job */
    int *ids;        /* max_batch: the pool rows of one step */
    slot *slots;     /* max_batch: which job and row each is */
};

/* ---- jobs ------------------------------------------------------------------------- */

job *job_create(job_kind kind, int n, int d)
{
    job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->kind = kind, j->n = n, j->d = d;
    j->x = calloc((size_t)n * d, sizeof(float));
    j->phi = calloc(n, sizeof(float));
    j->gnorm = calloc(n, sizeof(float));
    j->nfe = calloc(n, sizeof(int));
    j->taken = calloc(n, 1);
    j->row = malloc(sizeof(int) * (n > 0 ? n : 1));
    if (!j->x || !j->phi || !j->gnorm || !j->nfe || !j->taken || !j->row) {
        job_free(j);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        j->row[i] = -1;
    atomic_init(&j->cancel_requested, 0);
    return j;
}

void job_free(job *j)
{
    if (!j)
        return;
    free(j->x), free(j->phi), free(j->gnorm), free(j->feat), free(j->nfe), free(j->taken), free(j->row);
    free(j);
}

/* ---- submitter side --------------------------------------------------------------------- */

/* Rows of evaluation a job will take (under mu): one per image for /energy;
 * images x (evaluations + the final energy) for the solvers. */
static double job_rows_estimate(const batcher *b, const job *j)
{
    if (j->kind == JOB_ENERGY)
        return j->n;
    double nfe;
    switch (j->ode.method) {
    case VAPO_ODE_EULER: nfe = j->ode.steps; break;
    case VAPO_ODE_HEUN: nfe = 2.0 * j->ode.steps; break;
    case VAPO_ODE_RK4: nfe = 4.0 * j->ode.steps; break;
    default: nfe = b->rk45_nfe > 0 ? b->rk45_nfe : RK45_NFE_GUESS; break;
    }
    return j->n * (nfe + 1.0);
}

/* SUBMIT_LATE when the work admitted before j and j's own would end past
 * ADMIT_SAFETY of its deadline at the measured rate (under mu). With nothing
 * admitted, or no rate measured yet, j is admitted: the deadline still holds.
 * /energy jobs go ahead of the generate work (gather), so they are not
 * behind the backlog and always admitted. */
static submit_result admit_by_deadline(batcher *b, job *j)
{
    if (j->kind == JOB_ENERGY || j->deadline <= 0 || b->backlog_rows <= 0 || b->sec_per_row <= 0)
        return SUBMIT_OK;
    const double ahead = b->backlog_rows * b->sec_per_row, finish = ahead + j->work_est * b->sec_per_row;
    const double avail = ADMIT_SAFETY * (j->deadline - clock_now());
    if (finish <= avail)
        return SUBMIT_OK;
    /* A retry fits once enough of the work ahead is done (if no more arrives),
     * and at the latest when all of it is. */
    j->est_s = finish;
    j->retry_after_s = ceil(fmax(1.0, fmin(finish - avail, ahead)));
    return SUBMIT_LATE;
}

submit_result batcher_submit(batcher *b, job *j)
{
    pthread_mutex_lock(&b->mu);
    submit_result r = SUBMIT_OK;
    if (b->draining || b->stop)
        r = SUBMIT_SHUTTING_DOWN;
    else if (b->state != STATE_READY)
        r = SUBMIT_NOT_READY;
    else if (b->queued_images + j->n > b->cfg.max_queue)
        r = SUBMIT_FULL;
    if (r == SUBMIT_OK) {
        j->work_est = job_rows_estimate(b, j);
        j->work_done = 0;
        r = admit_by_deadline(b, j);
    }
    if (r == SUBMIT_OK) {
        b->backlog_rows += j->work_est;
        j->t_submit = clock_now();
        j->status = JOB_OK;
        j->next = NULL;
        if (b->pending_tail)
            b->pending_tail->next = j;
        else
            b->pending = j;
        b->pending_tail = j;
        b->pending_rows += j->n;
        b->queued_images += j->n;
        b->jobs_in_flight++;
        metrics_queue(b->mx, b->queued_images, b->jobs_in_flight);
        pthread_cond_signal(&b->wake);
    }
    pthread_mutex_unlock(&b->mu);
    return r;
}

void batcher_cancel(batcher *b, job *j)
{
    atomic_store(&j->cancel_requested, 1);
    pthread_mutex_lock(&b->mu);
    pthread_cond_signal(&b->wake);
    pthread_mutex_unlock(&b->mu);
}

const model_info *batcher_model(batcher *b)
{
    pthread_mutex_lock(&b->mu);
    int ready = b->state == STATE_READY;
    pthread_mutex_unlock(&b->mu);
    return ready ? &b->info : NULL;
}

int batcher_load_state(batcher *b, char *err, size_t len)
{
    pthread_mutex_lock(&b->mu);
    int state = b->state;
    if (state == STATE_FAILED)
        snprintf(err, len, "%s", b->load_error);
    pthread_mutex_unlock(&b->mu);
    return state == STATE_LOADING ? 1 : state == STATE_READY ? 0 : -1;
}

void batcher_drain_begin(batcher *b)
{
    pthread_mutex_lock(&b->mu);
    b->draining = 1;
    pthread_mutex_unlock(&b->mu);
}

int batcher_in_flight(batcher *b)
{
    pthread_mutex_lock(&b->mu);
    int n = b->jobs_in_flight;
    pthread_mutex_unlock(&b->mu);
    return n;
}

void batcher_cancel_all(batcher *b)
{
    pthread_mutex_lock(&b->mu);
    b->draining = 1;
    b->cancel_all = 1;
    pthread_cond_signal(&b->wake);
    pthread_mutex_unlock(&b->mu);
}

/* ---- scheduler: job lifecycle ---------------------------------------------------------- */

/* Takes the job's rows out of the pool; returns the trajectories that had
 * not reached t_end. */
static int release_rows(batcher *b, job *j)
{
    int n = 0;
    for (int i = 0; i < j->n; i++) {
        if (j->row[i] < 0)
            continue;
        n += j->kind != JOB_ENERGY && vapo_pool_wants(b->pool, j->row[i]) == 2;
        vapo_pool_remove(b->pool, j->row[i]);
        j->row[i] = -1;
    }
    return n;
}

/* Ends a job: out of the scheduler's hands, then done(). The job must no
 * longer be in b->active. */
static void job_end(batcher *b, job *j, job_status status, const char *message)
{
    const int unfinished = release_rows(b, j);
    if (status != JOB_OK && j->kind != JOB_ENERGY)
        metrics_cancelled(b->mx, unfinished);
    if (status == JOB_OK)
        metrics_images(b->mx, j->kind == JOB_ENERGY ? 0 : j->n, j->kind == JOB_ENERGY ? j->n : 0);
    j->status = status;
    if (message && message != j->message)
        snprintf(j->message, sizeof j->message, "%s", message);
    pthread_mutex_lock(&b->mu);
    /* its rows leave the backlog before done() answers the client, whose next
     * request must not find them there */
    b->backlog_rows = fmax(0.0, b->backlog_rows - fmax(0.0, j->work_est - j->work_done));
    b->queued_images -= j->n;
    b->jobs_in_flight--;
    if (b->jobs_in_flight == 0) /* nothing admitted: no estimate's residue may refuse the next */
        b->backlog_rows = 0;
    metrics_queue(b->mx, b->queued_images, b->jobs_in_flight);
    pthread_cond_broadcast(&b->idle);
    pthread_mutex_unlock(&b->mu);
    j->done(j, j->done_ctx); /* the job may be freed from here on */
}

/* Start points and pool rows of a new job; 0, or -1 with j->message set. */
static int job_admit(batcher *b, job *j)
{
    const int d = b->info.d;
    j->remaining = j->n;
    j->cursor = 0;
    if (j->kind == JOB_ENERGY) {
        /* nothing to prepare */
    } else if (j->kind == JOB_SAMPLE) {
        vapo_model_noise(b->model, j->seed, j->first, j->n, j->x);
    } else {
        float *ends = malloc(sizeof(float) * 2 * d);
        if (!ends) {
            snprintf(j->message, sizeof j->message, "out of memory");
            return -1;
        }
        vapo_model_noise(b->model, j->seed, 0, 1, ends);
        vapo_model_noise(b->model, j->seed_b, 0, 1, ends + d);
        vapo_slerp_frames(d, ends, ends + d, j->n, b->info.omega * sqrt((double)d), j->x);
        free(ends);
    }
    const vapo_ode_config *ode = j->kind == JOB_ENERGY ? NULL : &j->ode;
    const int flags = j->kind != JOB_ENERGY ? VAPO_POOL_ENERGY
                                            : (j->want_norm ? VAPO_POOL_GRADNORM : 0) | (j->feat ? VAPO_POOL_FEATURES : 0);
    for (int i = 0; i < j->n; i++) {
        j->row[i] = vapo_pool_add(b->pool, ode, j->x + (size_t)i * d, flags);
        if (j->row[i] < 0) {
            snprintf(j->message, sizeof j->message, "%s", vapo_last_error());
            return -1;
        }
    }
    return 0;
}

static int active_push(batcher *b, job *j)
{
    if (b->nactive == b->active_cap) {
        int cap = b->active_cap ? 2 * b->active_cap : 64;
        job **grown = realloc(b->active, sizeof *grown * cap);
        if (!grown)
            return -1;
        b->active = grown, b->active_cap = cap;
    }
    b->active[b->nactive++] = j;
    return 0;
}

/* Ends the active jobs that are complete, failed, cancelled, past their
 * deadline, or all of them on shutdown; the others keep their order. */
static void sweep(batcher *b, int shutdown_all, double now)
{
    int keep = 0, rr = b->rr;
    for (int k = 0; k < b->nactive; k++) {
        job *j = b->active[k];
        job_status st = JOB_OK;
        int end = 1;
        const char *msg = j->message;
        if (j->status != JOB_OK)
            st = j->status; /* failed during the last batch */
        else if (j->remaining == 0)
            st = JOB_OK;
        else if (shutdown_all)
            st = JOB_SHUTDOWN, msg = "the server is shutting down";
        else if (atomic_load(&j->cancel_requested))
            st = JOB_CANCELLED, msg = "cancelled: the client went away";
        else if (j->deadline > 0 && now > j->deadline)
            st = JOB_TIMEOUT, msg = "the request did not finish before its deadline";
        else
            end = 0;
        if (end) {
            if (k < b->rr)
                rr--; /* the job the next round starts with keeps its turn */
            job_end(b, j, st, msg);
        } else {
            b->active[keep++] = j;
        }
    }
    b->nactive = keep;
    b->rr = keep ? (rr > 0 ? rr : 0) % keep : 0;
}

/* ---- scheduler: one batch --------------------------------------------------------------- */

static int row_wants(const batcher *b, const job *j, int r)
{
    return !j->taken[r] && j->row[r] >= 0 && vapo_pool_wants(b->pool, j->row[r]);
}

/* Puts row r of j into the batch as row `rows`; returns rows + 1. */
static int take_row(batcher *b, job *j, int r, int rows, int *grad_rows)
{
    b->slots[rows] = (slot){j, r};
    b->ids[rows] = j->row[r];
    j->taken[r] = 1;
    *grad_rows += vapo_pool_wants(b->pool, j->row[r]) == 2;
    return rows + 1;
}

/* Every row the jobs of one kind (energy or not) want, job by job in
 * submission order, until the batch holds `limit` rows. */
static int take_in_order(batcher *b, int energy, int rows, int limit, int *grad_rows)
{
    for (int k = 0; k < b->nactive && rows < limit; k++) {
        job *j = b->active[k];
        if ((j->kind == JOB_ENERGY) != energy)
            continue;
        for (int r = 0; r < j->n && rows < limit; r++)
            if (row_wants(b, j, r))
                rows = take_row(b, j, r, rows, grad_rows);
    }
    return rows;
}

/* The rest of the batch round-robin: every job with work gets one row per
 * round, starting from a job that rotates between iterations and, inside a
 * job, from where the last batch stopped. */
static int take_round_robin(batcher *b, int rows, int max, int *grad_rows)
{
    int progress = 1;
    /* scanned rows per job live in a small stack array when possible */
    int stack_scan[64] = {0}, *scanned = b->nactive <= 64 ? stack_scan : calloc(b->nactive, sizeof(int));
    if (!scanned)
        return rows;
    while (rows < max && progress) {
        progress = 0;
        for (int t = 0; t < b->nactive && rows < max; t++) {
            int k = (b->rr + t) % b->nactive;
            job *j = b->active[k];
            while (scanned[k] < j->n) {
                int r = j->cursor;
                j->cursor = (r + 1) % j->n;
                scanned[k]++;
                if (!row_wants(b, j, r))
                    continue;
                rows = take_row(b, j, r, rows, grad_rows);
                progress = 1;
                break;
            }
        }
    }
    if (scanned != stack_scan)
        free(scanned);
    b->rr = (b->rr + 1) % b->nactive;
    return rows;
}

/* Steps are cut to the chunk while scores wait or waited recently. */
static int chunking(const batcher *b, double now)
{
    return b->cfg.score_chunk_ms > 0 && b->last_score > 0 && now - b->last_score < SCORE_HOLD_S;
}

/* The chunk's rows: kept from the last chunked steps, or at first from the
 * measured cost per row (a quarter batch before any is known). */
static int chunk_rows(batcher *b)
{
    const int max = b->cfg.max_batch;
    if (b->chunk <= 0)
        b->chunk = b->sec_per_row > 0 ? 1e-3 * b->cfg.score_chunk_ms / b->sec_per_row : 0.25 * max;
    b->chunk = fmin(fmax(b->chunk, 1.0), max);
    return (int)b->chunk;
}

/* After a chunked step of `rows` rows that took dt seconds: move the chunk
 * towards the rows that take score_chunk_ms at that rate. */
static void update_chunk(batcher *b, int rows, double dt)
{
    if (dt <= 0)
        return;
    const double want = rows * 1e-3 * b->cfg.score_chunk_ms / dt;
    b->chunk = fmin(fmax(0.7 * b->chunk + 0.3 * want, 1.0), b->cfg.max_batch);
}

/* Fills the batch in the order batcher.h states; returns the number of
 * rows. While chunking, waiting score rows make a step of their own (no
 * gradient: a forward pass), but never two in a row, so generate rows
 * move at least every other step; other steps are cut to the chunk. */
static int gather(batcher *b, int *grad_rows, double now)
{
    const int max = b->cfg.max_batch, alone = b->scores_alone;
    *grad_rows = 0;
    b->chunked = b->scores_alone = 0;
    if (b->nactive == 0)
        return 0;
    int rows = take_in_order(b, 1, 0, max, grad_rows);
    if (rows)
        b->last_score = now;
    int limit = max;
    if (chunking(b, now)) {
        if (rows && !alone)
            return b->scores_alone = 1, rows;
        limit = rows + chunk_rows(b) < max ? rows + chunk_rows(b) : max;
        b->chunked = limit < max;
    }
    rows = take_in_order(b, 0, rows, limit - limit / RR_SHARE_DIV, grad_rows);
    return take_round_robin(b, rows, limit, grad_rows);
}

static void fail_job(job *j, job_status st, const char *msg)
{
    if (j->status == JOB_OK) {
        j->status = st;
        snprintf(j->message, sizeof j->message, "%s", msg);
    }
}

/* Row r of j finished or failed in the pool: its result into the job. */
static void row_result(batcher *b, job *j, int r, double *nfe_sum, int *nfe_count)
{
    const int d = b->info.d;
    vapo_pool_result res;
    if (j->feat)
        vapo_pool_features(b->pool, j->row[r], j->feat + (size_t)r * j->nfeat);
    vapo_pool_take(b->pool, j->row[r], j->x + (size_t)r * d, &res);
    j->row[r] = -1;
    j->phi[r] = res.phi;
    j->nfe[r] = res.nfe;
    if (res.failure != VAPO_ODE_OK) {
        char msg[256];
        const int settings = res.failure == VAPO_ODE_MAX_NFE || res.failure == VAPO_ODE_TOO_STIFF;
        snprintf(msg, sizeof msg, "sample %d: %s%s", r, res.message,
                 settings ? "; loosen rtol/atol, lower t_end or use a fixed-step solver" : "");
        fail_job(j, settings ? JOB_TOO_HARD : JOB_FAILED, msg);
        return;
    }
    if (j->kind == JOB_ENERGY) {
        j->gnorm[r] = res.gnorm;
    } else if (j->ode.method == VAPO_ODE_RK45) {
        *nfe_sum += res.nfe, (*nfe_count)++;
    }
    j->remaining--;
}

/* After a step: the rows of the batch that finished hand their results back. */
static void scatter(batcher *b, int rows, double t0)
{
    double nfe_sum = 0;
    int nfe_count = 0;
    for (int s = 0; s < rows; s++) {
        job *j = b->slots[s].j;
        const int r = b->slots[s].row;
        j->work_done += 1.0;
        if (j->t_first == 0) {
            j->t_first = t0;
            metrics_queue_wait(b->mx, j->kind == JOB_ENERGY, t0 - j->t_submit);
        }
        if (j->status == JOB_OK && !vapo_pool_wants(b->pool, j->row[r]))
            row_result(b, j, r, &nfe_sum, &nfe_count);
    }
    if (nfe_count) { /* a running mean over recent trajectories */
        pthread_mutex_lock(&b->mu);
        const double mean = nfe_sum / nfe_count, w = fmin(1.0, 0.1 * nfe_count);
        b->rk45_nfe = b->rk45_nfe > 0 ? (1 - w) * b->rk45_nfe + w * mean : mean;
        pthread_mutex_unlock(&b->mu);
    }
}

/* After an iteration of `rows` rows that took dt seconds (the model pass and
 * the scheduler's own work: with a small model the bookkeeping is a good part
 * of it): the cost per row, from batches at least half full once there has
 * been one (the estimate matters when the device is full). */
static void update_rate(batcher *b, int rows, double dt)
{
    const int full = 2 * rows >= b->cfg.max_batch;
    if (full && !b->rate_full) /* forget what small batches said */
        b->rate_time = b->rate_rows = 0;
    else if (!full && b->rate_full)
        return;
    /* seconds over rows, both summed over about the last RATE_TAU_S of work:
     * a mean of per-batch ratios would let slow batches count twice */
    const double keep = exp(-dt / RATE_TAU_S);
    b->rate_time = keep * b->rate_time + dt;
    b->rate_rows = keep * b->rate_rows + rows;
    b->rate_full |= full;
    pthread_mutex_lock(&b->mu);
    b->sec_per_row = b->rate_time / b->rate_rows;
    pthread_mutex_unlock(&b->mu);
}

/* The rows still to evaluate for the jobs admitted: the estimate left of
 * each running job (at least one row per image not done), and the pending
 * jobs' estimates. Called after every sweep, so it is 0 when idle. */
static void publish_backlog(batcher *b)
{
    double backlog = 0;
    for (int k = 0; k < b->nactive; k++) {
        const job *j = b->active[k];
        if (j->status == JOB_OK && j->remaining > 0)
            backlog += fmax(j->work_est - j->work_done, j->remaining);
    }
    pthread_mutex_lock(&b->mu);
    for (const job *j = b->pending; j; j = j->next)
        backlog += j->work_est;
    b->backlog_rows = backlog;
    const double c = b->sec_per_row;
    pthread_mutex_unlock(&b->mu);
    metrics_admission(b->mx, c, backlog);
}

/* One batch; returns its rows. */
static int run_batch(batcher *b)
{
    int grad_rows;
    double t0 = clock_now();
    int rows = gather(b, &grad_rows, t0);
    if (rows == 0)
        return 0;
    int rc = vapo_pool_step(b->pool, b->ids, rows) < 0;
    double t1 = clock_now();
    metrics_batch(b->mx, rows, grad_rows, t0, t1, b->chunked);
    if (rc) {
        char msg[256];
        snprintf(msg, sizeof msg, "model evaluation failed: %s", vapo_last_error());
        log_error("%s", msg);
        for (int s = 0; s < rows; s++)
            fail_job(b->slots[s].j, JOB_FAILED, msg);
    } else {
        scatter(b, rows, t0);
    }
    for (int s = 0; s < rows; s++)
        b->slots[s].j->taken[b->slots[s].row] = 0;
    return rows;
}

/* ---- scheduler thread ------------------------------------------------------------------- */

static int load_model(batcher *b)
{
    /* For tests: loading that takes a while, so /readyz can be seen saying 503. */
    const char *delay = getenv("VAPO_SERVE_TEST_LOAD_DELAY_MS");
    if (delay && atoi(delay) > 0)
        usleep((useconds_t)atoi(delay) * 1000);
    b->be = vapo_backend_open(b->cfg.device, b->cfg.threads);
    if (!b->be)
        return -1;
    b->model = vapo_model_load(b->cfg.model_path, b->be);
    if (!b->model)
        return -1;
    vapo_model *m = b->model;
    model_info *in = &b->info;
    snprintf(in->preset, sizeof in->preset, "%s", m->arch.preset);
    snprintf(in->dataset, sizeof in->dataset, "%s", m->dataset);
    const char *slash = strrchr(b->cfg.model_path, '/');
    snprintf(in->file, sizeof in->file, "%s", slash ? slash + 1 : b->cfg.model_path);
    snprintf(in->backend, sizeof in->backend, "%s", b->be->name);
    in->c = m->arch.in_c, in->h = m->arch.in_h, in->w = m->arch.in_w;
    in->d = (int)vapo_net_input_size(m->net);
    in->params = vapo_net_param_count(m->net);
    in->step = m->step;
    in->omega = m->loss.omega;
    in->sampling = m->sampling;
    in->ood = &m->ood;
    in->quality = json_is_object(json_object_get(m->meta, "quality")) ? json_object_get(m->meta, "quality") : NULL;
    const size_t rows = (size_t)b->cfg.max_batch;
    b->pool = vapo_model_pool(m);
    b->ids = malloc(sizeof(int) * rows);
    b->slots = malloc(sizeof(slot) * rows);
    if (!b->pool || !b->ids || !b->slots)
        return vapo_fail("out of memory for batches of %zu rows", rows);
    return 0;
}

static void add_deadline(struct timespec *ts, double at_monotonic)
{
    double s = floor(at_monotonic);
    ts->tv_sec = (time_t)s;
    ts->tv_nsec = (long)((at_monotonic - s) * 1e9);
    if (ts->tv_nsec >= 1000000000L)
        ts->tv_sec++, ts->tv_nsec -= 1000000000L;
}

static void *scheduler_main(void *arg)
{
    batcher *b = arg;
    int loaded = load_model(b) == 0;
    pthread_mutex_lock(&b->mu);
    b->state = loaded ? STATE_READY : STATE_FAILED;
    if (!loaded)
        snprintf(b->load_error, sizeof b->load_error, "%s", vapo_last_error());
    pthread_cond_broadcast(&b->idle);
    pthread_mutex_unlock(&b->mu);
    if (!loaded)
        return NULL;
    metrics_ready(b->mx, 1);

    for (;;) {
        pthread_mutex_lock(&b->mu);
        while (!b->stop && !b->pending && b->nactive == 0)
            pthread_cond_wait(&b->wake, &b->mu);
        /* Idle device: give a burst a moment to arrive so it starts as one batch. */
        if (b->nactive == 0 && b->pending && b->cfg.max_wait_ms > 0) {
            double until = b->pending->t_submit + b->cfg.max_wait_ms * 1e-3;
            struct timespec ts;
            add_deadline(&ts, until);
            while (!b->stop && !b->cancel_all && b->pending_rows < b->cfg.max_batch && clock_now() < until)
                if (pthread_cond_timedwait(&b->wake, &b->mu, &ts) == ETIMEDOUT)
                    break;
        }
        job *incoming = b->pending;
        b->pending = b->pending_tail = NULL;
        b->pending_rows = 0;
        int shutdown_all = b->cancel_all || b->stop;
        int stop = b->stop;
        pthread_mutex_unlock(&b->mu);
        const double t_iter = clock_now();

        while (incoming) {
            job *j = incoming;
            incoming = j->next;
            j->next = NULL;
            if (job_admit(b, j) || active_push(b, j))
                job_end(b, j, JOB_FAILED, j->message[0] ? j->message : "out of memory");
        }
        sweep(b, shutdown_all, clock_now());
        if (stop && b->nactive == 0)
            break;
        int rows = run_batch(b);
        sweep(b, 0, clock_now());
        if (rows)
            update_rate(b, rows, clock_now() - t_iter);
        if (rows && b->chunked)
            update_chunk(b, rows, clock_now() - t_iter); /* (score rows in it count as generate rows) */
        metrics_chunk(b->mx, chunking(b, clock_now()) ? chunk_rows(b) : 0);
        publish_backlog(b);
    }
    return NULL;
}

batcher *batcher_start(const batcher_config *cfg, metrics *mx)
{
    batcher *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->cfg = *cfg;
    b->mx = mx;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->wake, &ca);
    pthread_cond_init(&b->idle, &ca);
    pthread_condattr_destroy(&ca);
    b->state = STATE_LOADING;
    if (pthread_create(&b->thread, NULL, scheduler_main, b)) {
        pthread_mutex_destroy(&b->mu);
        pthread_cond_destroy(&b->wake);
        pthread_cond_destroy(&b->idle);
        free(b);
        return NULL;
    }
    return b;
}

void batcher_stop(batcher *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    b->stop = 1;
    b->draining = 1;
    pthread_cond_signal(&b->wake);
    pthread_mutex_unlock(&b->mu);
    pthread_join(b->thread, NULL);
    metrics_ready(b->mx, 0);
    vapo_pool_free(b->pool);
    vapo_model_free(b->model);
    if (b->be)
        b->be->destroy(b->be);
    free(b->active), free(b->ids), free(b->slots);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->wake);
    pthread_cond_destroy(&b->idle);
    free(b);
}
