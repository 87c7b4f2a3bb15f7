/* vapo-serve's command line: its option table (common/opt.h: defaults,
 * --help, --config), and where the model file comes from when none is given. */
#ifndef SERVE_CONFIG_H
#define SERVE_CONFIG_H

#include <stddef.h>

#include "opt.h"

typedef struct {
    const char *host;      /* 127.0.0.1 */
    int port;              /* 8080; 0 = any free port (printed at start) */
    opt_device dev;        /* --device (auto), --threads (0 = all cores) */
    int max_batch;         /* rows per model call */
    int max_queue;         /* images queued or in flight before 503 */
    int max_wait_ms;       /* batching delay when the device is idle */
    int score_chunk_ms;    /* step time while scores wait; 0 = full batches always */
    double timeout_s;      /* per-request deadline */
    int max_images;        /* images per request */
    int max_steps;         /* fixed-step solvers */
    int max_nfe;           /* evaluations per trajectory */
    size_t max_body_bytes; /* request body */
    int max_connections;
    int max_per_ip;        /* connections from one address; 0 = no limit */
    int conn_timeout_s;    /* idle connection timeout */
    int request_timeout_s; /* a whole request (headers and body) must arrive in this time */
    int http_threads;
    double grace_s;        /* SIGTERM: time to finish in-flight work */
    const char *api_key;   /* NULL = no auth; also from VAPO_API_KEY; generated beyond loopback */
    int api_key_generated; /* api_key was drawn at start (no key given, bound beyond loopback) */
    int insecure_no_auth;  /* --insecure-no-auth / VAPO_INSECURE_NO_AUTH=1 */
    const char *metrics_key; /* a second key that opens /metrics only; also VAPO_METRICS_KEY */
    int metrics_open;        /* /metrics needs no key (--metrics-open / VAPO_METRICS_OPEN=1) */
    const char *allowed_hosts; /* comma-separated Host names accepted without a key (DNS rebinding) */
    const char *cors_origin;
    int quiet;             /* no per-request log lines */
    const char *model_arg; /* the positional MODEL, or NULL */
} serve_config;

/* Fills cfg from argv. Returns 0 to go on, or 1 when the program should exit
 * now with *exit_code (after --help, --version or a usage error, which is
 * printed). */
int config_parse(int argc, char **argv, serve_config *cfg, int *exit_code);

/* Decides authentication once the address is known: with no key given and
 * --host beyond loopback, draws a random key into cfg->api_key (unless
 * --insecure-no-auth) and sets api_key_generated. A host that does not
 * resolve counts as beyond loopback (binding it fails later anyway). 0, or
 * -1 with a message in err (no randomness). */
int config_auth(serve_config *cfg, char *err, size_t len);

/* 1 if every address `host` resolves to is a loopback address. */
int config_host_is_loopback(const char *host);

/* The model file: MODEL, else $VAPO_MODEL, else models/fmnist-small.safetensors
 * in the current folder, else ../models/fmnist-small.safetensors next to the
 * executable. Writes the first that exists (or, if none does, the first
 * candidate, for the error message) to out. Returns 0 if it exists. */
int config_model_path(const serve_config *cfg, char *out, size_t len);

#endif
