/* Server metrics in Prometheus text format. All functions are thread-safe:
 * HTTP threads record requests, the scheduler records batches. */
#ifndef SERVE_METRICS_H
#define SERVE_METRICS_H

#include <stddef.h>

typedef struct metrics metrics;

metrics *metrics_create(int max_batch);
void metrics_free(metrics *mx);

/* A finished HTTP request: route is one of the server's routes or "other". */
void metrics_request(metrics *mx, const char *route, int status, double seconds);
/* A request refused before it queued: reason "queue_full", "not_ready", "shutting_down",
 * "deadline" (it would not finish in time after the admitted work), or
 * "request_timeout" (a connection that did not deliver a whole request in time). */
void metrics_rejected(metrics *mx, const char *reason);

/* Scheduler side. */
void metrics_queue(metrics *mx, int images, int requests);
/* Time from submission to a job's first evaluation, by latency class. */
void metrics_queue_wait(metrics *mx, int score, double seconds);
/* Latency classes: the chunk (rows of a step while scores wait; 0 = full
 * batches now). */
void metrics_chunk(metrics *mx, int rows);
/* The admission estimates (batcher.h): seconds per row, rows admitted and not evaluated. */
void metrics_admission(metrics *mx, double sec_per_row, double backlog_rows);
/* One batched model call of `rows` rows, `nfe` of them ODE evaluations,
 * busy from t0 to t1 (monotonic seconds); `chunked`: cut short for scores. */
void metrics_batch(metrics *mx, int rows, int nfe, double t0, double t1, int chunked);
void metrics_images(metrics *mx, int generated, int scored);
void metrics_cancelled(metrics *mx, int trajectories);
void metrics_ready(metrics *mx, int ready);

/* The exposition text (malloc'd, NUL-terminated; length in *len). */
char *metrics_render(metrics *mx, size_t *len);

#endif
