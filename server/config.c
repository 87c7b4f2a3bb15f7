#include "config.h"

#include <stddef.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <netdb.h>
#include <netinet/in.h>
#include <unistd.h>

#include "opt.h"

#define DEFAULT_MODEL "models/fmnist-small.safetensors"

/* The variable's value, or NULL when unset or empty. */
static const char *env_string(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* A yes/no variable: 1, true, yes or on. */
static int env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && (!strcmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on"));
}

#define F(field) offsetof(serve_config, field)
static const opt_def table[] = {
    OPT(OPT_ARG, "MODEL", "model", F(model_arg), 0, 1, NULL, "the model (.safetensors; default: see above)"),
    OPT_HEADING("network:"),
    OPT(OPT_STRING, "--host", "H", F(host), 0, 0, "127.0.0.1", "address to bind (0.0.0.0 or :: for all)"),
    OPT(OPT_INT, "--port", "P", F(port), 0, 65535, "8080", "TCP port (0 picks a free one)"),
    OPT(OPT_STRING, "--api-key", "KEY", F(api_key), 0, 0, NULL,
        "require 'Authorization: Bearer KEY' on every route but /healthz and\n"
        "/readyz (default: $VAPO_API_KEY; with neither, a --host beyond loopback\n"
        "gets a random key, printed once at start)"),
    OPT(OPT_FLAG, "--insecure-no-auth", NULL, F(insecure_no_auth), 0, 0, NULL, "serve beyond loopback without a key"),
    OPT(OPT_STRING, "--metrics-key", "KEY", F(metrics_key), 0, 0, NULL,
        "a second key that opens GET /metrics only (default: $VAPO_METRICS_KEY)"),
    OPT(OPT_FLAG, "--metrics-open", NULL, F(metrics_open), 0, 0, NULL,
        "GET /metrics needs no key, e.g. for a Prometheus scrape"),
    OPT(OPT_STRING, "--allowed-hosts", "LIST", F(allowed_hosts), 0, 0, NULL,
        "without a key, requests must name the server by an IP address,\n"
        "localhost or one of these comma-separated Host names ('*' for any);\n"
        "stops DNS rebinding (default: $VAPO_ALLOWED_HOSTS, else none)"),
    OPT(OPT_STRING, "--cors", "ORIGIN", F(cors_origin), 0, 0, NULL,
        "allow cross-origin requests from ORIGIN ('*' for any; default off)"),
    OPT(OPT_INT, "--max-connections", "N", F(max_connections), 1, 1 << 20, "256", "concurrent connections"),
    OPT(OPT_INT, "--max-connections-per-ip", "N", F(max_per_ip), 0, 1 << 20, "64",
        "concurrent connections from one address (0: no limit; raise it behind\n"
        "a proxy that connects for everyone)"),
    OPT(OPT_INT, "--conn-timeout-s", "N", F(conn_timeout_s), 1, 86400, "30", "close a connection idle for N seconds"),
    OPT(OPT_INT, "--request-timeout-s", "N", F(request_timeout_s), 1, 86400, "20",
        "close a connection that has not delivered a whole request (headers and\n"
        "body) N seconds after it opened or after its previous reply"),
    OPT(OPT_INT, "--http-threads", "N", F(http_threads), 1, 256, "4", "HTTP worker threads"),
    OPT(OPT_SIZE, "--max-body-bytes", "N", F(max_body_bytes), 1024, 1 << 30, "8388608",
        "largest request body on any route; each route also has its own: 8 KiB\n"
        "of JSON for /generate and /interpolate, --max-images model-sized PNGs\n"
        "for /energy"),
    OPT_HEADING("device and scheduler:"),
    OPT_GROUP(F(dev), opt_device_group),
    OPT(OPT_INT, "--max-batch", "N", F(max_batch), 1, 65536, "64", "rows per batched model call"),
    OPT(OPT_INT, "--max-queue", "N", F(max_queue), 1, 1 << 24, "1024",
        "images queued or running before new work gets 503"),
    OPT(OPT_INT, "--max-wait-ms", "N", F(max_wait_ms), 0, 10000, "0",
        "when the device is idle, wait up to N ms after a request arrives for\n"
        "more to start in the same batch (0: work that arrives later joins at\n"
        "the next evaluation anyway)"),
    OPT(OPT_INT, "--score-chunk-ms", "N", F(score_chunk_ms), 0, 10000, "50",
        "while /energy work waits (and for a second after), cut the generate\n"
        "rows into steps of about N ms, so a score waits for one short step, not\n"
        "a full batch (0: never cut; see the server README)"),
    OPT(OPT_DOUBLE, "--timeout-s", "S", F(timeout_s), 0.001, 86400, "60", "deadline per request; 504 when exceeded"),
    OPT(OPT_DOUBLE, "--grace-s", "S", F(grace_s), 0, 3600, "10",
        "on SIGTERM/SIGINT, time to finish in-flight work before cancelling it"),
    OPT_HEADING("request limits:"),
    OPT(OPT_INT, "--max-images", "N", F(max_images), 1, 1 << 20, "64", "images per request"),
    OPT(OPT_INT, "--max-steps", "N", F(max_steps), 1, 100000, "1000", "steps of the fixed-step solvers"),
    OPT(OPT_INT, "--max-nfe", "N", F(max_nfe), 1, 1000000, "2000", "function evaluations per sample"),
    OPT_HEADING("other:"),
    OPT(OPT_FLAG, "--quiet", NULL, F(quiet), 0, 0, NULL, "no per-request log lines"),
    OPT_TABLE_END};

static const opt_spec spec = {
    .prog = "vapo-serve",
    .usage = "[options] [MODEL.safetensors]",
    .about = "Serves a VAPO energy model over HTTP: POST /generate, /interpolate, /energy;\n"
             "GET /healthz, /readyz, /metrics, /v1/model, /openapi.yaml and a page at /.\n"
             "MODEL defaults to $VAPO_MODEL, else " DEFAULT_MODEL " in the current\n"
             "folder, else ../models/ next to the executable.",
    .table = table,
    .footer = "environment:\n"
              "  VAPO_MODEL           the model file when MODEL is not given\n"
              "  VAPO_API_KEY         the bearer token when --api-key is not given\n"
              "  VAPO_METRICS_KEY     the metrics key when --metrics-key is not given\n"
              "  VAPO_METRICS_OPEN=1  as --metrics-open\n"
              "  VAPO_INSECURE_NO_AUTH=1  as --insecure-no-auth\n"
              "  VAPO_ALLOWED_HOSTS   as --allowed-hosts\n"
              "Exit status: 0 ok, 1 failure (model, address), 2 bad command line.\n",
    .version = "1.0.0",
};

int config_parse(int argc, char **argv, serve_config *cfg, int *exit_code)
{
    *cfg = (serve_config){0};
    int rc = opt_parse(&spec, argc, argv, cfg);
    if (rc == OPT_GO && cfg->max_images > cfg->max_queue)
        rc = opt_usage_error("--max-images (%d) must not exceed --max-queue (%d)", cfg->max_images, cfg->max_queue);
    *exit_code = rc == OPT_GO ? 0 : rc;
    if (rc != OPT_GO)
        return 1;
    if (cfg->api_key && !*cfg->api_key)
        cfg->api_key = NULL;
    cfg->api_key = cfg->api_key ? cfg->api_key : env_string("VAPO_API_KEY");
    if (cfg->metrics_key && !*cfg->metrics_key)
        cfg->metrics_key = NULL;
    cfg->metrics_key = cfg->metrics_key ? cfg->metrics_key : env_string("VAPO_METRICS_KEY");
    cfg->allowed_hosts = cfg->allowed_hosts ? cfg->allowed_hosts : env_string("VAPO_ALLOWED_HOSTS");
    cfg->metrics_open |= env_flag("VAPO_METRICS_OPEN");
    cfg->insecure_no_auth |= env_flag("VAPO_INSECURE_NO_AUTH");
    if (cfg->cors_origin && !*cfg->cors_origin)
        cfg->cors_origin = NULL;
    return 0;
}

int config_host_is_loopback(const char *host)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *ai = NULL;
    if (getaddrinfo(host, "0", &hints, &ai))
        return 0;
    int loopback = ai != NULL;
    for (struct addrinfo *p = ai; p; p = p->ai_next) {
        if (p->ai_family == AF_INET) {
            const unsigned char *b = (const unsigned char *)&((struct sockaddr_in *)p->ai_addr)->sin_addr;
            loopback &= b[0] == 127;
        } else if (p->ai_family == AF_INET6) {
            const struct in6_addr *a6 = &((struct sockaddr_in6 *)p->ai_addr)->sin6_addr;
            loopback &= IN6_IS_ADDR_LOOPBACK(a6) || (IN6_IS_ADDR_V4MAPPED(a6) && a6->s6_addr[12] == 127);
        } else {
            loopback = 0;
        }
    }
    freeaddrinfo(ai);
    return loopback;
}

int config_auth(serve_config *cfg, char *err, size_t len)
{
    /* 32 hex digits: 128 bits, and nothing a shell or a header needs to quote */
    static char generated[33];
    if (cfg->api_key || cfg->insecure_no_auth || config_host_is_loopback(cfg->host))
        return 0;
    unsigned char raw[16];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
        snprintf(err, len, "cannot draw a random API key (getrandom failed); give --api-key KEY");
        return -1;
    }
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(generated + 2 * i, 3, "%02x", raw[i]);
    cfg->api_key = generated;
    cfg->api_key_generated = 1;
    return 0;
}

static int exists(const char *path) { return access(path, R_OK) == 0; }

int config_model_path(const serve_config *cfg, char *out, size_t len)
{
    const char *env = getenv("VAPO_MODEL");
    if (cfg->model_arg || (env && *env)) {
        snprintf(out, len, "%s", cfg->model_arg ? cfg->model_arg : env);
        return exists(out) ? 0 : -1;
    }
    if (exists(DEFAULT_MODEL)) {
        snprintf(out, len, "%s", DEFAULT_MODEL);
        return 0;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            char candidate[PATH_MAX + 64];
            snprintf(candidate, sizeof candidate, "%s/../%s", exe, DEFAULT_MODEL);
            if (exists(candidate)) {
                snprintf(out, len, "%s", candidate);
                return 0;
            }
        }
    }
    snprintf(out, len, "%s", DEFAULT_MODEL);
    return -1;
}
