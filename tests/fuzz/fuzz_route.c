/* libFuzzer harness for one POST route's request handling (FUZZ_ROUTE names
 * it): the body goes through the route's start() exactly as http.c hands it
 * over, without the network. When start() accepts the request, its job is
 * marked done without running and finish() builds the reply, so the reply
 * code sees every shape of request the parser lets through (formats, grid
 * columns, frame counts). The model description comes from a real batcher
 * that loaded the bundled model (FUZZ_MODEL); nothing is ever submitted to it.
 *
 * /energy takes a PNG body when the input starts with the PNG signature and a
 * JSON body otherwise. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "assets.h"
#include "config.h"
#include "routes.h"

/* routes.c serves these on GET routes, which this harness does not call. */
const unsigned char asset_page_html[] = "";
const size_t asset_page_html_len = 0;
const unsigned char asset_openapi_yaml[] = "";
const size_t asset_openapi_yaml_len = 0;

static serve_config cfg;
static app the_app;
static const route *rt;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_route: %s\n", what);
    exit(1);
}

/* A broken promise of the route contract: abort, so libFuzzer keeps the input. */
#define CHECK(cond, what)                                                  \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "fuzz_route: %s (status %d)\n", what, out.status); \
            abort();                                                       \
        }                                                                  \
    } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char *args[] = {"vapo-serve", "--quiet", NULL};
    int code;
    if (config_parse(2, args, &cfg, &code))
        die("config_parse failed");
    const char *model = getenv("VAPO_FUZZ_MODEL");
    batcher_config bc = {.model_path = model ? model : FUZZ_MODEL, .device = "cpu", .threads = 1,
                         .max_batch = cfg.max_batch, .max_queue = cfg.max_queue, .max_wait_ms = cfg.max_wait_ms};
    the_app.cfg = &cfg;
    the_app.mx = metrics_create(cfg.max_batch);
    the_app.b = the_app.mx ? batcher_start(&bc, the_app.mx) : NULL;
    if (!the_app.b)
        die("cannot start the batcher");
    char err[512];
    int state;
    while ((state = batcher_load_state(the_app.b, err, sizeof err)) == 1)
        nanosleep(&(struct timespec){0, 10000000}, NULL);
    if (state != 0 || !batcher_model(the_app.b)) {
        fprintf(stderr, "fuzz_route: loading %s failed: %s\n", bc.model_path, err);
        exit(1);
    }
    if (!(rt = routes_find(FUZZ_ROUTE)) || !rt->start || !rt->finish)
        die("no POST route " FUZZ_ROUTE);
    return 0;
}

static const char *content_type(const unsigned char *data, size_t size)
{
    static const unsigned char sig[4] = {0x89, 'P', 'N', 'G'};
    if (rt->accepts[1] && size >= 4 && !memcmp(data, sig, 4))
        return "image/png";
    return "application/json";
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    route_input in = {.method = "POST", .content_type = content_type(data, size), .body = data, .body_len = size};
    if (size > routes_body_limit(&the_app, rt, in.content_type))
        return 0; /* http.c answers 413 before the route sees the body */
    reply out = {0};
    route_work *w = rt->start(&the_app, &in, &out);
    if (w) {
        CHECK(!out.status, "start() both answered and returned work");
        job *j = route_work_job(w);
        CHECK(j && j->n >= 1 && j->n <= cfg.max_images, "accepted work outside 1..max_images images");
        j->status = JOB_OK;
        rt->finish(&the_app, w, &out);
        CHECK(out.status == 200 && out.body && out.len > 0, "an accepted request's finished job did not answer 200");
    } else {
        /* A client's mistake is a 4xx; only memory (503) may be the server's. */
        CHECK((out.status >= 400 && out.status < 500) || out.status == 503, "a refused request got no 4xx");
    }
    reply_free(&out);
    return 0;
}
