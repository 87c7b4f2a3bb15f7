/* The HTTP API's routes: which paths and methods exist, and for each the
 * handler that validates a request and either answers at once or turns it
 * into a batcher job, then builds the reply once the job has ended. Nothing
 * here knows the HTTP library (http.c drives these) or touches the model
 * (the batcher does). */
#ifndef SERVE_ROUTES_H
#define SERVE_ROUTES_H

#include <stdatomic.h>
#include <stddef.h>

#include "batcher.h"
#include "config.h"
#include "metrics.h"
#include "reply.h"

typedef struct {
    batcher *b;
    metrics *mx;
    const serve_config *cfg;
    atomic_int draining; /* set at SIGTERM: readyz says 503, replies close the connection */
} app;

typedef struct {
    const char *method, *content_type;
    const unsigned char *body;
    size_t body_len;
} route_input;

/* A request waiting for its job: the job plus what the reply needs. */
typedef struct route_work route_work;
job *route_work_job(route_work *w);
int route_work_images(const route_work *w);
void route_work_free(route_work *w); /* frees the job too; only after done() or if never submitted */

typedef struct route route;

/* Who may call a route: everyone; holders of the API key; holders of the API
 * key or of the metrics key (or everyone with --metrics-open). */
typedef enum { ACCESS_OPEN, ACCESS_KEY, ACCESS_METRICS } route_access;

struct route {
    const char *path;
    const char *allow;   /* Allow header: "GET, HEAD" or "POST" */
    int post;            /* POST (with a body) rather than GET/HEAD; other routes take no body */
    route_access access;
    /* Media types the body may have (NULL-terminated). A missing
     * Content-Type is refused (415): a browser's no-cors fetch sends none. */
    const char *accepts[3];
    /* Answers in *out (returns NULL), or returns work whose job the caller
     * submits; *out is untouched then. */
    route_work *(*start)(app *a, const route_input *in, reply *out);
    /* Builds the reply of a job that has ended; frees w. */
    void (*finish)(app *a, route_work *w, reply *out);
};

/* The route for a path (query string already stripped), or NULL. */
const route *routes_find(const char *path);
int route_allows(const route *r, const char *method);
/* The label for metrics and logs: the route's path, or "other". */
const char *routes_label(const route *r);

/* The largest body the route takes with this Content-Type: a few KiB of
 * JSON for /generate and /interpolate, --max-images PNGs of the model's size
 * (their worst-case encoding) for /energy, 0 for routes without a body;
 * never above --max-body-bytes. */
size_t routes_body_limit(app *a, const route *r, const char *content_type);

/* The evaluations the job's images took (sum over images), for the log. */
long long route_work_nfe(const route_work *w);

/* Fills *out with the error for a refused submission. */
void routes_submit_error(app *a, submit_result res, const job *j, reply *out);

#endif
