/* The shared request batcher: one scheduler thread per device owns the model;
 * HTTP threads validate requests, wrap them as jobs and submit them, and never
 * touch the model.
 *
 * Work is cut into function evaluations. The scheduler owns the engine's
 * sampler pool (vapo/ode_batch.h): a /generate job of n images is n pool
 * rows (ODE trajectories in backend memory), an /energy job n energy-only
 * rows. Each scheduler iteration
 *   1. admits newly submitted jobs (noise, pool rows) and drops jobs that
 *      were cancelled or passed their deadline (their rows leave the pool),
 *   2. chooses the waiting rows of one step, up to max_batch, in this order:
 *      /energy rows (one cheap evaluation each, so scoring stays fast under a
 *      generate load); then the rows of generate/interpolate jobs in
 *      submission order, which is deadline order (one timeout for all), for
 *      all but max_batch/16 rows; those last rows go round-robin, one row per
 *      job per round, so later requests keep moving;
 *   3. runs ONE vapo_pool_step over them (each row advances its own solver),
 *   4. takes the finished rows' results (a failure comes back as an enum,
 *      vapo_ode_failure) and completes the jobs that are done.
 * Latency classes. /energy rows are latency work, the rest throughput work.
 * While score rows wait -- and for SCORE_HOLD_S after the last one, so that
 * a stream of scores finds short steps in flight -- the scheduler chunks:
 * waiting score rows run in a step of their own (a forward pass, no
 * gradient), and the other steps take only as many generate rows as fit in
 * about score_chunk_ms (the chunk: a row count adjusted from the measured
 * time of the chunked steps). A score then waits for at most one chunk in
 * flight and its own short step, instead of a full batch in flight and a
 * full batch of its own. Two score-only steps never follow each other, so a
 * flood of scores cannot stop generation. With no score for SCORE_HOLD_S,
 * steps are full batches again. Chunking changes no result (the pool is
 * batch invariant), only how many rows share a step.
 *
 * Trajectories join and leave the batch at every iteration (continuous
 * batching). Earlier requests finish first: under overload, sharing the
 * device equally would make every request late together, while serving in
 * deadline order makes the admitted ones finish in time. A finished
 * trajectory takes one more row to evaluate the energy of its final state.
 *
 * Admission by estimated completion time. The scheduler keeps a running
 * estimate of the device's cost per row (seconds per row of a batch at least
 * half full) and of RK45's evaluations per image; a job's work is
 * images x (evaluations + 1) rows (fixed-step solvers: steps x stages). A job
 * with a deadline is refused at once (SUBMIT_LATE, with the seconds after
 * which a retry would fit) when the rows admitted before it plus its own,
 * at the estimated cost, would end past 90% of its deadline; so admitted work
 * finishes. With nothing queued a job is always admitted. The queue is also
 * bounded by images: a submission that would take the images queued or in
 * flight past max_queue is refused (SUBMIT_FULL). When the device is idle,
 * the scheduler waits up to max_wait_ms after the first arrival so that a
 * burst of requests starts in one batch. */
#ifndef SERVE_BATCHER_H
#define SERVE_BATCHER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "vapo/ode.h"
#include "vapo/ood.h"

#include "metrics.h"

typedef enum { JOB_SAMPLE, JOB_INTERPOLATE, JOB_ENERGY } job_kind; /* JOB_ENERGY: the score class */

typedef enum {
    JOB_OK = 0,
    JOB_CANCELLED, /* batcher_cancel: the client went away */
    JOB_TIMEOUT,   /* past its deadline */
    JOB_TOO_HARD,  /* a trajectory hit max_nfe or a step underflow: the settings' fault */
    JOB_FAILED,    /* the model or memory failed */
    JOB_SHUTDOWN,  /* cancelled by the server shutting down */
} job_status;

typedef struct job job;
typedef void (*job_done_fn)(job *j, void *ctx);

struct job {
    /* Set by the submitter before batcher_submit; read-only afterwards. */
    job_kind kind;
    int n;                 /* images made (sample, interpolate) or rows scored (energy) */
    int d;                 /* floats per image */
    uint64_t seed, seed_b; /* sample: seed; interpolate: seed (a) and seed_b */
    int first;             /* sample: index of the first sample of the seed */
    vapo_ode_config ode;   /* sample, interpolate */
    double deadline;       /* monotonic seconds (clock_now); 0 = none */
    job_done_fn done;      /* called once, from the scheduler thread, when the job ends */
    void *done_ctx;

    int want_norm;         /* energy: the rows need |grad Phi| too (vapo_ood_needs_grad) */
    int nfeat;             /* energy: the network's features per row the score reads (vapo_ood_features) */
    float *feat;           /* energy with nfeat: n*nfeat, the rows' features (set with nfeat, freed by job_free) */

    /* Rows (allocated by job_create). energy: x holds the rows to evaluate
     * (vapo_ood_expand's rows of each image); sample/interpolate: x receives
     * the final states. */
    float *x;       /* n*d */
    float *phi;     /* n: energy of the row / of the final state */
    float *gnorm;   /* n: |grad Phi| of the row (energy jobs with want_norm) */
    int *nfe;       /* n: ODE evaluations per sample */

    /* Results, valid inside and after done(). */
    job_status status;
    char message[256];
    double t_submit; /* set by batcher_submit */
    double t_first;  /* first evaluation; 0 if it never ran */
    double retry_after_s; /* SUBMIT_LATE: when a retry would fit, from now */
    double est_s;         /* SUBMIT_LATE: estimated seconds to finish it after the admitted work */

    /* Scheduler-private. */
    atomic_int cancel_requested;
    int *row;             /* per image: its sampler-pool row, -1 once taken out (or none yet) */
    unsigned char *taken; /* per image: in the batch being gathered */
    double work_est;      /* rows of evaluation the job was estimated to take */
    double work_done;     /* rows evaluated for it so far */
    int remaining, cursor;
    job *next;
};

/* A job with n rows of d floats, zeroed; NULL when out of memory. */
job *job_create(job_kind kind, int n, int d);
void job_free(job *j);

typedef struct {
    const char *model_path;
    const char *device; /* cpu | cuda | auto */
    int threads;
    int max_batch, max_queue, max_wait_ms;
    int score_chunk_ms; /* latency classes: a step's target time while scores wait; 0 = off */
} batcher_config;

/* What HTTP threads may know about the model: immutable once ready. */
typedef struct {
    char preset[32], dataset[128], file[256], backend[16];
    int c, h, w, d;
    size_t params;
    long long step;
    double omega;
    vapo_ode_config sampling;
    const vapo_ood *ood;   /* the model's OOD calibration (vapo/ood.h) */
    const json_t *quality; /* metadata vapo.quality (measured FD, AUROC table), or NULL */
} model_info;

typedef struct batcher batcher;

/* Starts the scheduler thread, which opens the backend and loads the model. */
batcher *batcher_start(const batcher_config *cfg, metrics *mx);
/* 1 while the model loads, 0 once loaded, -1 if loading failed (message in err). */
int batcher_load_state(batcher *b, char *err, size_t len);
/* The model description, or NULL before it is loaded. */
const model_info *batcher_model(batcher *b);

typedef enum { SUBMIT_OK, SUBMIT_FULL, SUBMIT_LATE, SUBMIT_NOT_READY, SUBMIT_SHUTTING_DOWN } submit_result;
/* Queues a job; on SUBMIT_OK the scheduler owns it until it calls done().
 * SUBMIT_LATE: it would not finish before its deadline after the work
 * already admitted (j->retry_after_s, j->est_s say when and why). */
submit_result batcher_submit(batcher *b, job *j);
/* Asks for a job to stop; done() follows within one iteration (status
 * JOB_CANCELLED, unless it finished first). Only valid before done() ran. */
void batcher_cancel(batcher *b, job *j);

/* Shutdown: refuse new jobs; count the ones still running; end them all
 * (JOB_SHUTDOWN); then stop the thread and free the model. */
void batcher_drain_begin(batcher *b);
int batcher_in_flight(batcher *b);
void batcher_cancel_all(batcher *b);
void batcher_stop(batcher *b);

#endif
