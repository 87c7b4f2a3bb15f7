/* vapo-serve: loads a VAPO model and serves it over HTTP.
 *
 * Threads: libmicrohttpd's pool parses and answers requests (http.c), one
 * scheduler thread owns the model and batches all work (batcher.c), a watcher
 * thread notices clients that hang up (http.c), and this main thread waits
 * for SIGTERM/SIGINT and then drains: stop accepting, let in-flight work
 * finish for --grace-s seconds, cancel what is left, answer, exit 0. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "batcher.h"
#include "clock.h"
#include "config.h"
#include "http.h"
#include "log.h"
#include "metrics.h"
#include "routes.h"

/* Waits up to `seconds` for a signal in `set`; returns it, or 0 on timeout. */
static int wait_signal(const sigset_t *set, double seconds)
{
    struct timespec ts = {.tv_sec = (time_t)seconds, .tv_nsec = (long)((seconds - (time_t)seconds) * 1e9)};
    int sig = sigtimedwait(set, NULL, &ts);
    return sig > 0 ? sig : 0;
}

static void drain(app *a, http_server *http, const sigset_t *set)
{
    const double t0 = clock_now();
    atomic_store(&a->draining, 1);
    http_quiesce(http);
    batcher_drain_begin(a->b);
    int jobs = batcher_in_flight(a->b);
    log_line("info", json_pack("{s:i, s:f}", "in_flight", jobs, "grace_s", a->cfg->grace_s),
             "draining: no new connections; finishing in-flight work");
    int forced = 0;
    while (batcher_in_flight(a->b) > 0 && clock_now() - t0 < a->cfg->grace_s) {
        if (wait_signal(set, 0.05)) {
            log_warn("second signal: cancelling in-flight work now");
            forced = 1;
            break;
        }
    }
    int left = batcher_in_flight(a->b);
    if (left > 0) {
        if (!forced)
            log_warn("grace period over: cancelling %d in-flight requests", left);
        batcher_cancel_all(a->b);
        while (batcher_in_flight(a->b) > 0)
            wait_signal(set, 0.01);
    }
    /* let the last replies go out */
    const double t1 = clock_now();
    while (http_active_requests(http) > 0 && clock_now() - t1 < 2.0)
        wait_signal(set, 0.01);
}

/* Says once how requests are authenticated when it is not the obvious
 * (loopback) case: a generated key is printed here and nowhere else, as
 * notebook servers do, so that `docker run -p 8080:8080 vapo` is one command
 * and still not open to everyone. */
static void announce_auth(const serve_config *cfg)
{
    if (cfg->api_key_generated) {
        log_line("warn", json_pack("{s:s}", "api_key_generated", cfg->api_key),
                 "no API key given and --host %s is beyond loopback: generated a key", cfg->host);
        fprintf(stderr,
                "vapo-serve: no API key given; generated one: %s (send 'Authorization: Bearer %s'; "
                "--api-key or VAPO_API_KEY to choose one, --insecure-no-auth to serve without a key)\n",
                cfg->api_key, cfg->api_key);
    } else if (!cfg->api_key && cfg->insecure_no_auth && !config_host_is_loopback(cfg->host)) {
        log_warn("--insecure-no-auth: serving %s without an API key: anyone who reaches it can use it", cfg->host);
    }
}

int main(int argc, char **argv)
{
    serve_config cfg;
    int code;
    if (config_parse(argc, argv, &cfg, &code))
        return code;
    log_set_requests(!cfg.quiet);
    char err[512];
    if (config_auth(&cfg, err, sizeof err)) {
        log_error("%s", err);
        return 1;
    }
    announce_auth(&cfg);

    char model_path[PATH_MAX];
    if (config_model_path(&cfg, model_path, sizeof model_path)) {
        log_error("model file not found: %s (give MODEL.safetensors, set VAPO_MODEL, or see --help)", model_path);
        return 1;
    }

    /* Signals go to this thread only, through sigtimedwait. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    metrics *mx = metrics_create(cfg.max_batch);
    batcher_config bc = {.model_path = model_path,
                         .device = cfg.dev.device,
                         .threads = cfg.dev.threads,
                         .max_batch = cfg.max_batch,
                         .max_queue = cfg.max_queue,
                         .max_wait_ms = cfg.max_wait_ms,
                         .score_chunk_ms = cfg.score_chunk_ms};
    app a = {.mx = mx, .cfg = &cfg};
    atomic_init(&a.draining, 0);
    a.b = mx ? batcher_start(&bc, mx) : NULL;
    if (!a.b) {
        log_error("cannot start the scheduler thread");
        return 1;
    }
    /* Listen while the model loads: /healthz answers, /readyz says 503. */
    http_server *http = http_start(&a, err, sizeof err);
    if (!http) {
        log_error("%s", err);
        batcher_stop(a.b);
        metrics_free(mx);
        return 1;
    }
    char url[300];
    snprintf(url, sizeof url, "http://%s%s%s:%d", strchr(cfg.host, ':') ? "[" : "", cfg.host,
             strchr(cfg.host, ':') ? "]" : "", http_port(http));
    log_line("info", json_pack("{s:s, s:i}", "url", url, "port", http_port(http)), "listening on %s", url);

    int state, sig = 0;
    while ((state = batcher_load_state(a.b, err, sizeof err)) == 1 && !sig)
        sig = wait_signal(&set, 0.05);
    if (state != 0) {
        if (sig)
            log_info("received %s while loading the model: exiting", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        else
            log_error("cannot load the model %s: %s", model_path, err);
        http_stop(http);
        batcher_stop(a.b); /* waits for the load to end */
        metrics_free(mx);
        return sig ? 0 : 1;
    }
    const model_info *mi = batcher_model(a.b);
    if (mi->c != 1 && mi->c != 3) {
        /* images go out as gray or RGB PNGs: anything else would load and then fail every request */
        log_error("cannot serve the model %s: it has %d input channels; vapo-serve serves images with 1 "
                  "(gray) or 3 (RGB) channels", model_path, mi->c);
        http_stop(http);
        batcher_stop(a.b);
        metrics_free(mx);
        return 1;
    }
    log_line("info",
             json_pack("{s:s, s:s, s:s, s:[i,i,i], s:I, s:s, s:i, s:i, s:i}", "model", model_path, "preset",
                       mi->preset, "backend", mi->backend, "shape", mi->c, mi->h, mi->w, "parameters",
                       (json_int_t)mi->params, "auth", cfg.api_key ? "bearer" : "none", "max_batch", cfg.max_batch,
                       "max_queue", cfg.max_queue, "threads", cfg.dev.threads),
             "ready: model %s (%s, %dx%dx%d) on %s", model_path, mi->preset, mi->c, mi->h, mi->w, mi->backend);

    while (!sig) /* (a signal may already have come during the last wait for the load) */
        sig = wait_signal(&set, 3600);
    log_info("received %s: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    drain(&a, http, &set);
    http_stop(http);
    batcher_stop(a.b);
    metrics_free(mx);
    log_info("stopped");
    return 0;
}
