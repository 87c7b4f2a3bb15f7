#include "metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"

#define MAX_BUCKETS 24
#define MAX_SERIES 128
#define BUSY_WINDOW 10 /* seconds over which the busy fraction is reported */

typedef struct {
    int n;
    double bounds[MAX_BUCKETS];
    long long counts[MAX_BUCKETS + 1]; /* last: +Inf */
    double sum;
    long long count;
} histogram;

typedef struct {
    char route[32];
    int status;
    long long count;
} request_series;

typedef struct {
    char route[32];
    histogram h;
} duration_series;

struct metrics {
    pthread_mutex_t mu;
    double t_start;
    request_series req[MAX_SERIES];
    int nreq;
    duration_series dur[16];
    int ndur;
    long long rejected_full, rejected_not_ready, rejected_shutdown, rejected_slow, rejected_deadline;
    int queue_images, queue_requests;
    double sec_per_row, backlog_rows;
    histogram wait[2], batch; /* wait: generate, score */
    int chunk_rows;
    long long chunk_steps;
    double chunk_seconds;
    long long calls, rows, nfe, generated, scored, cancelled;
    double busy_total;
    long long busy_sec[BUSY_WINDOW + 2]; /* which second each slot holds */
    double busy_in[BUSY_WINDOW + 2];     /* busy seconds within it */
    int ready;
};

static const double latency_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                        0.5,   1,      2.5,   5,    10,    30,    60};

static void hist_init(histogram *h, const double *bounds, int n)
{
    memset(h, 0, sizeof *h);
    h->n = n < MAX_BUCKETS ? n : MAX_BUCKETS;
    memcpy(h->bounds, bounds, sizeof(double) * h->n);
}

static void hist_add(histogram *h, double v)
{
    int i = 0;
    while (i < h->n && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->sum += v;
    h->count++;
}

metrics *metrics_create(int max_batch)
{
    metrics *mx = calloc(1, sizeof *mx);
    if (!mx)
        return NULL;
    pthread_mutex_init(&mx->mu, NULL);
    mx->t_start = clock_now();
    for (int c = 0; c < 2; c++)
        hist_init(&mx->wait[c], latency_bounds, sizeof latency_bounds / sizeof latency_bounds[0]);
    double b[MAX_BUCKETS];
    int n = 0;
    for (int v = 1; v < max_batch && n < MAX_BUCKETS - 1; v *= 2)
        b[n++] = v;
    b[n++] = max_batch;
    hist_init(&mx->batch, b, n);
    for (int i = 0; i < BUSY_WINDOW + 2; i++)
        mx->busy_sec[i] = -1;
    return mx;
}

void metrics_free(metrics *mx)
{
    if (!mx)
        return;
    pthread_mutex_destroy(&mx->mu);
    free(mx);
}

void metrics_request(metrics *mx, const char *route, int status, double seconds)
{
    pthread_mutex_lock(&mx->mu);
    int i = 0;
    while (i < mx->nreq && (mx->req[i].status != status || strcmp(mx->req[i].route, route)))
        i++;
    if (i == mx->nreq && mx->nreq < MAX_SERIES) {
        snprintf(mx->req[i].route, sizeof mx->req[i].route, "%s", route);
        mx->req[i].status = status;
        mx->nreq++;
    }
    if (i < mx->nreq)
        mx->req[i].count++;
    int j = 0;
    while (j < mx->ndur && strcmp(mx->dur[j].route, route))
        j++;
    if (j == mx->ndur && mx->ndur < (int)(sizeof mx->dur / sizeof mx->dur[0])) {
        snprintf(mx->dur[j].route, sizeof mx->dur[j].route, "%s", route);
        hist_init(&mx->dur[j].h, latency_bounds, sizeof latency_bounds / sizeof latency_bounds[0]);
        mx->ndur++;
    }
    if (j < mx->ndur)
        hist_add(&mx->dur[j].h, seconds);
    pthread_mutex_unlock(&mx->mu);
}

void metrics_rejected(metrics *mx, const char *reason)
{
    pthread_mutex_lock(&mx->mu);
    if (!strcmp(reason, "queue_full"))
        mx->rejected_full++;
    else if (!strcmp(reason, "not_ready"))
        mx->rejected_not_ready++;
    else if (!strcmp(reason, "request_timeout"))
        mx->rejected_slow++;
    else if (!strcmp(reason, "deadline"))
        mx->rejected_deadline++;
    else
        mx->rejected_shutdown++;
    pthread_mutex_unlock(&mx->mu);
}

void metrics_queue(metrics *mx, int images, int requests)
{
    pthread_mutex_lock(&mx->mu);
    mx->queue_images = images, mx->queue_requests = requests;
    pthread_mutex_unlock(&mx->mu);
}

void metrics_admission(metrics *mx, double sec_per_row, double backlog_rows)
{
    pthread_mutex_lock(&mx->mu);
    mx->sec_per_row = sec_per_row, mx->backlog_rows = backlog_rows;
    pthread_mutex_unlock(&mx->mu);
}

void metrics_queue_wait(metrics *mx, int score, double seconds)
{
    pthread_mutex_lock(&mx->mu);
    hist_add(&mx->wait[score != 0], seconds);
    pthread_mutex_unlock(&mx->mu);
}

void metrics_chunk(metrics *mx, int rows)
{
    pthread_mutex_lock(&mx->mu);
    mx->chunk_rows = rows;
    pthread_mutex_unlock(&mx->mu);
}

/* Spreads a busy interval over the per-second slots it covers. */
static void busy_add(metrics *mx, double t0, double t1)
{
    for (double t = t0; t < t1;) {
        long long sec = (long long)floor(t - mx->t_start);
        double end = mx->t_start + (double)(sec + 1);
        double part = (t1 < end ? t1 : end) - t;
        int slot = (int)(sec % (BUSY_WINDOW + 2));
        if (mx->busy_sec[slot] != sec)
            mx->busy_sec[slot] = sec, mx->busy_in[slot] = 0;
        mx->busy_in[slot] += part;
        t += part > 0 ? part : 1e-9;
    }
}

void metrics_batch(metrics *mx, int rows, int nfe, double t0, double t1, int chunked)
{
    pthread_mutex_lock(&mx->mu);
    if (chunked)
        mx->chunk_steps++, mx->chunk_seconds += t1 - t0;
    hist_add(&mx->batch, rows);
    mx->calls++;
    mx->rows += rows;
    mx->nfe += nfe;
    mx->busy_total += t1 - t0;
    busy_add(mx, t0, t1);
    pthread_mutex_unlock(&mx->mu);
}

void metrics_images(metrics *mx, int generated, int scored)
{
    pthread_mutex_lock(&mx->mu);
    mx->generated += generated, mx->scored += scored;
    pthread_mutex_unlock(&mx->mu);
}

void metrics_cancelled(metrics *mx, int trajectories)
{
    pthread_mutex_lock(&mx->mu);
    mx->cancelled += trajectories;
    pthread_mutex_unlock(&mx->mu);
}

void metrics_ready(metrics *mx, int ready)
{
    pthread_mutex_lock(&mx->mu);
    mx->ready = ready;
    pthread_mutex_unlock(&mx->mu);
}

/* ---- rendering ------------------------------------------------------------------ */

typedef struct {
    char *buf;
    size_t len, cap;
    int oom;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...)
{
    if (t->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->oom = 1;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap * 2 + (size_t)n;
        char *grown = realloc(t->buf, cap);
        if (!grown) {
            t->oom = 1;
            return;
        }
        t->buf = grown, t->cap = cap;
    }
}

static void header(text *t, const char *name, const char *type, const char *help)
{
    put(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_hist(text *t, const char *name, const char *labels, const histogram *h)
{
    long long cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (int i = 0; i < h->n; i++) {
        cum += h->counts[i];
        put(t, "%s_bucket{%s%sle=\"%g\"} %lld\n", name, labels, sep, h->bounds[i], cum);
    }
    cum += h->counts[h->n];
    put(t, "%s_bucket{%s%sle=\"+Inf\"} %lld\n", name, labels, sep, cum);
    if (labels[0]) {
        put(t, "%s_sum{%s} %.9g\n%s_count{%s} %lld\n", name, labels, h->sum, name, labels, h->count);
    } else {
        put(t, "%s_sum %.9g\n%s_count %lld\n", name, h->sum, name, h->count);
    }
}

char *metrics_render(metrics *mx, size_t *len)
{
    text t = {.buf = malloc(4096), .cap = 4096};
    if (!t.buf)
        return NULL;
    t.buf[0] = 0;
    pthread_mutex_lock(&mx->mu);
    double now = clock_now();
    header(&t, "vapo_http_requests_total", "counter", "HTTP requests by route and status (499: client went away).");
    for (int i = 0; i < mx->nreq; i++)
        put(&t, "vapo_http_requests_total{route=\"%s\",status=\"%d\"} %lld\n", mx->req[i].route, mx->req[i].status,
            mx->req[i].count);
    header(&t, "vapo_http_request_duration_seconds", "histogram", "HTTP request latency by route.");
    for (int i = 0; i < mx->ndur; i++) {
        char labels[64];
        snprintf(labels, sizeof labels, "route=\"%s\"", mx->dur[i].route);
        put_hist(&t, "vapo_http_request_duration_seconds", labels, &mx->dur[i].h);
    }
    header(&t, "vapo_requests_rejected_total", "counter", "Requests refused before queueing, by reason.");
    put(&t, "vapo_requests_rejected_total{reason=\"queue_full\"} %lld\n", mx->rejected_full);
    put(&t, "vapo_requests_rejected_total{reason=\"not_ready\"} %lld\n", mx->rejected_not_ready);
    put(&t, "vapo_requests_rejected_total{reason=\"shutting_down\"} %lld\n", mx->rejected_shutdown);
    put(&t, "vapo_requests_rejected_total{reason=\"request_timeout\"} %lld\n", mx->rejected_slow);
    put(&t, "vapo_requests_rejected_total{reason=\"deadline\"} %lld\n", mx->rejected_deadline);
    header(&t, "vapo_admission_seconds_per_row", "gauge", "Estimated device seconds per batch row (admission).");
    put(&t, "vapo_admission_seconds_per_row %.9g\n", mx->sec_per_row);
    header(&t, "vapo_admission_backlog_rows", "gauge", "Rows of admitted work not yet evaluated (estimate).");
    put(&t, "vapo_admission_backlog_rows %.0f\n", mx->backlog_rows);
    header(&t, "vapo_queue_images", "gauge", "Images (trajectories and energy inputs) queued or in flight.");
    put(&t, "vapo_queue_images %d\n", mx->queue_images);
    header(&t, "vapo_queue_requests", "gauge", "Requests queued or in flight in the scheduler.");
    put(&t, "vapo_queue_requests %d\n", mx->queue_requests);
    header(&t, "vapo_queue_wait_seconds", "histogram",
           "Time from submission to a request's first evaluation, by latency class (score: /energy).");
    put_hist(&t, "vapo_queue_wait_seconds", "class=\"generate\"", &mx->wait[0]);
    put_hist(&t, "vapo_queue_wait_seconds", "class=\"score\"", &mx->wait[1]);
    header(&t, "vapo_score_chunk_rows", "gauge", "Rows per step while scores wait (0: full batches now).");
    put(&t, "vapo_score_chunk_rows %d\n", mx->chunk_rows);
    header(&t, "vapo_chunked_steps_total", "counter", "Steps cut short because scores waited.");
    put(&t, "vapo_chunked_steps_total %lld\n", mx->chunk_steps);
    header(&t, "vapo_chunked_step_seconds_total", "counter", "Seconds of model calls in those steps.");
    put(&t, "vapo_chunked_step_seconds_total %.6f\n", mx->chunk_seconds);
    header(&t, "vapo_batch_size", "histogram", "Rows per batched model call.");
    put_hist(&t, "vapo_batch_size", "", &mx->batch);
    header(&t, "vapo_model_calls_total", "counter", "Batched model calls.");
    put(&t, "vapo_model_calls_total %lld\n", mx->calls);
    header(&t, "vapo_model_rows_total", "counter", "Rows evaluated by the model (ODE evaluations and energies).");
    put(&t, "vapo_model_rows_total %lld\n", mx->rows);
    header(&t, "vapo_nfe_total", "counter", "ODE function evaluations (gradient rows).");
    put(&t, "vapo_nfe_total %lld\n", mx->nfe);
    header(&t, "vapo_images_generated_total", "counter", "Images generated (generate and interpolate).");
    put(&t, "vapo_images_generated_total %lld\n", mx->generated);
    header(&t, "vapo_images_scored_total", "counter", "Images scored by /energy.");
    put(&t, "vapo_images_scored_total %lld\n", mx->scored);
    header(&t, "vapo_trajectories_cancelled_total", "counter",
           "Trajectories stopped before the end: client gone, deadline, shutdown or a failed sibling.");
    put(&t, "vapo_trajectories_cancelled_total %lld\n", mx->cancelled);
    header(&t, "vapo_device_busy_seconds_total", "counter", "Seconds the scheduler spent in model calls.");
    put(&t, "vapo_device_busy_seconds_total %.6f\n", mx->busy_total);
    double busy = 0;
    long long cur = (long long)floor(now - mx->t_start);
    for (int i = 0; i < BUSY_WINDOW + 2; i++)
        if (mx->busy_sec[i] >= cur - BUSY_WINDOW && mx->busy_sec[i] < cur)
            busy += mx->busy_in[i];
    double window = cur < BUSY_WINDOW ? (cur > 0 ? cur : 1) : BUSY_WINDOW;
    header(&t, "vapo_device_busy_fraction", "gauge", "Fraction of the last 10 whole seconds spent in model calls.");
    put(&t, "vapo_device_busy_fraction %.4f\n", busy / window > 1 ? 1.0 : busy / window);
    header(&t, "vapo_ready", "gauge", "1 once the model is loaded and the server accepts work.");
    put(&t, "vapo_ready %d\n", mx->ready);
    header(&t, "vapo_uptime_seconds", "gauge", "Seconds since the server started.");
    put(&t, "vapo_uptime_seconds %.3f\n", now - mx->t_start);
    pthread_mutex_unlock(&mx->mu);
    if (t.oom) {
        free(t.buf);
        return NULL;
    }
    *len = t.len;
    return t.buf;
}
