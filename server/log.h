/* Structured logs: one JSON object per line on stderr, e.g.
 *   {"ts":"2024-05-01T12:00:00.123Z","level":"info","msg":"listening","url":"http://127.0.0.1:8080"}
 * Request lines carry method, route, status, images, evaluations, queue wait
 * and latency. */
#ifndef SERVE_LOG_H
#define SERVE_LOG_H

#include <jansson.h>

/* requests = 0 turns the per-request lines off (--quiet). */
void log_set_requests(int requests);

/* A line with level and message plus the fields of `fields` (stolen; may be NULL). */
void log_line(const char *level, json_t *fields, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define log_info(...) log_line("info", NULL, __VA_ARGS__)
#define log_warn(...) log_line("warn", NULL, __VA_ARGS__)
#define log_error(...) log_line("error", NULL, __VA_ARGS__)

typedef struct {
    const char *method, *route, *remote;
    int status;
    int images;
    long long nfe;       /* evaluations of all the request's images; < 0: none ran */
    double queue_wait_s; /* < 0: the request did not queue */
    double latency_s;
    size_t bytes_in, bytes_out;
} log_request_fields;

void log_request(const log_request_fields *f);

#endif
