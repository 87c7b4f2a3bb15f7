#include "config.h"

#include <errno.h>
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

#define DEFAULT_MODEL "models/fmnist-small.safetensors"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vapo-serve [options] [MODEL.safetensors]\n"
            "\n"
            "Serves a VAPO energy model over HTTP: POST /generate, /interpolate, /energy;\n"
            "GET /healthz, /readyz, /metrics, /v1/model, /openapi.yaml and a page at /.\n"
            "MODEL defaults to $VAPO_MODEL, else " DEFAULT_MODEL " in the current\n"
            "folder, else ../models/ next to the executable.\n"
            "\n"
            "network:\n"
            "  --host H             address to bind (default 127.0.0.1; 0.0.0.0 or :: for all)\n"
            "  --port P             TCP port (default 8080; 0 picks a free one)\n"
            "  --api-key KEY        require 'Authorization: Bearer KEY' on every route but\n"
            "                       /healthz and /readyz (default: $VAPO_API_KEY; with neither,\n"
            "                       a --host beyond loopback gets a random key, printed once at start)\n"
            "  --insecure-no-auth   serve beyond loopback without a key (default off)\n"
            "  --metrics-key KEY    a second key that opens GET /metrics only (default: $VAPO_METRICS_KEY)\n"
            "  --metrics-open       GET /metrics needs no key, e.g. for a Prometheus scrape (default off)\n"
            "  --allowed-hosts LIST without a key, requests must name the server by an IP address,\n"
            "                       localhost or one of these comma-separated Host names ('*' for\n"
            "                       any); stops DNS rebinding (default: $VAPO_ALLOWED_HOSTS, else none)\n"
            "  --cors ORIGIN        allow cross-origin requests from ORIGIN ('*' for any; default off)\n"
            "  --max-connections N  concurrent connections (default 256)\n"
            "  --max-connections-per-ip N  concurrent connections from one address (default 64;\n"
            "                       0 = no limit; raise it behind a proxy that connects for everyone)\n"
            "  --conn-timeout-s N   close a connection idle for N seconds (default 30)\n"
            "  --request-timeout-s N  close a connection that has not delivered a whole request\n"
            "                       (headers and body) N seconds after it opened or after its\n"
            "                       previous reply (default 20)\n"
            "  --http-threads N     HTTP worker threads (default 4)\n"
            "  --max-body-bytes N   largest request body on any route (default 8388608); each route\n"
            "                       also has its own: 8 KiB of JSON for /generate and /interpolate,\n"
            "                       --max-images model-sized PNGs for /energy\n"
            "device and scheduler:\n"
            "  --device D           cpu, cuda or auto (default auto: CUDA when usable)\n"
            "  --threads N          CPU backend threads (default 0 = all cores)\n"
            "  --max-batch N        rows per batched model call (default 64)\n"
            "  --max-queue N        images queued or running before new work gets 503 (default 1024)\n"
            "  --max-wait-ms N      when the device is idle, wait up to N ms after a request arrives\n"
            "                       for more to start in the same batch (default 0: work that\n"
            "                       arrives later joins at the next evaluation anyway)\n"
            "  --timeout-s S        deadline per request; 504 when exceeded (default 60)\n"
            "  --grace-s S          on SIGTERM/SIGINT, time to finish in-flight work before\n"
            "                       cancelling it (default 10)\n"
            "request limits:\n"
            "  --max-images N       images per request (default 64)\n"
            "  --max-steps N        steps of the fixed-step solvers (default 1000)\n"
            "  --max-nfe N          function evaluations per sample (default 2000)\n"
            "other:\n"
            "  --quiet              no per-request log lines\n"
            "  --version            print the version\n"
            "  -h, --help           this text\n"
            "environment:\n"
            "  VAPO_MODEL           the model file when MODEL is not given\n"
            "  VAPO_API_KEY         the bearer token when --api-key is not given\n"
            "  VAPO_METRICS_KEY     the metrics key when --metrics-key is not given\n"
            "  VAPO_METRICS_OPEN=1  as --metrics-open\n"
            "  VAPO_INSECURE_NO_AUTH=1  as --insecure-no-auth\n"
            "  VAPO_ALLOWED_HOSTS   as --allowed-hosts\n");
}

static int parse_long(const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "vapo-serve: %s expects an integer in %ld..%ld, got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_double(const char *flag, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "vapo-serve: %s expects a number in %g..%g, got '%s'\n", flag, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

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

typedef struct {
    const char *name;
    char kind; /* i: int, z: size, d: double, s: string, b: flag without a value */
    void *dst;
    double lo, hi;
} option;

int config_parse(int argc, char **argv, serve_config *cfg, int *exit_code)
{
    *cfg = (serve_config){
        .host = "127.0.0.1", .port = 8080, .device = "auto", .threads = 0, .max_batch = 64,
        .max_queue = 1024, .max_wait_ms = 0, .timeout_s = 60, .max_images = 64, .max_steps = 1000,
        .max_nfe = 2000, .max_body_bytes = 8u << 20, .max_connections = 256, .max_per_ip = 64, .conn_timeout_s = 30,
        .request_timeout_s = 20,
        .http_threads = 4, .grace_s = 10,
    };
    const option options[] = {
        {"--host", 's', &cfg->host, 0, 0},
        {"--port", 'i', &cfg->port, 0, 65535},
        {"--device", 's', &cfg->device, 0, 0},
        {"--threads", 'i', &cfg->threads, 0, 1024},
        {"--max-batch", 'i', &cfg->max_batch, 1, 65536},
        {"--max-queue", 'i', &cfg->max_queue, 1, 1 << 24},
        {"--max-wait-ms", 'i', &cfg->max_wait_ms, 0, 10000},
        {"--timeout-s", 'd', &cfg->timeout_s, 0.001, 86400},
        {"--grace-s", 'd', &cfg->grace_s, 0, 3600},
        {"--max-images", 'i', &cfg->max_images, 1, 1 << 20},
        {"--max-steps", 'i', &cfg->max_steps, 1, 100000},
        {"--max-nfe", 'i', &cfg->max_nfe, 1, 1000000},
        {"--max-body-bytes", 'z', &cfg->max_body_bytes, 1024, 1 << 30},
        {"--max-connections", 'i', &cfg->max_connections, 1, 1 << 20},
        {"--max-connections-per-ip", 'i', &cfg->max_per_ip, 0, 1 << 20},
        {"--conn-timeout-s", 'i', &cfg->conn_timeout_s, 1, 86400},
        {"--request-timeout-s", 'i', &cfg->request_timeout_s, 1, 86400},
        {"--http-threads", 'i', &cfg->http_threads, 1, 256},
        {"--api-key", 's', &cfg->api_key, 0, 0},
        {"--cors", 's', &cfg->cors_origin, 0, 0},
        {"--metrics-key", 's', &cfg->metrics_key, 0, 0},
        {"--allowed-hosts", 's', &cfg->allowed_hosts, 0, 0},
        {"--insecure-no-auth", 'b', &cfg->insecure_no_auth, 0, 0},
        {"--metrics-open", 'b', &cfg->metrics_open, 0, 0},
        {"--quiet", 'b', &cfg->quiet, 0, 0},
    };
    *exit_code = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(a, "--version")) {
            printf("vapo-serve 1.0.0\n");
            return 1;
        }
        if (a[0] != '-' || !strcmp(a, "-")) {
            if (cfg->model_arg) {
                fprintf(stderr, "vapo-serve: more than one model given ('%s', '%s')\n", cfg->model_arg, a);
                goto bad;
            }
            cfg->model_arg = a;
            continue;
        }
        /* --flag VALUE or --flag=VALUE */
        const char *eq = strchr(a, '=');
        size_t name_len = eq ? (size_t)(eq - a) : strlen(a);
        const option *opt = NULL;
        for (size_t k = 0; k < sizeof options / sizeof options[0]; k++)
            if (strlen(options[k].name) == name_len && !strncmp(options[k].name, a, name_len))
                opt = &options[k];
        if (!opt) {
            fprintf(stderr, "vapo-serve: unknown option '%s' (see --help)\n", a);
            goto bad;
        }
        if (opt->kind == 'b') {
            if (eq) {
                fprintf(stderr, "vapo-serve: %s takes no value\n", opt->name);
                goto bad;
            }
            *(int *)opt->dst = 1;
            continue;
        }
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!val) {
            fprintf(stderr, "vapo-serve: %s needs a value\n", opt->name);
            goto bad;
        }
        long l;
        double d;
        switch (opt->kind) {
        case 'i':
            if (parse_long(opt->name, val, (long)opt->lo, (long)opt->hi, &l))
                goto bad;
            *(int *)opt->dst = (int)l;
            break;
        case 'z':
            if (parse_long(opt->name, val, (long)opt->lo, (long)opt->hi, &l))
                goto bad;
            *(size_t *)opt->dst = (size_t)l;
            break;
        case 'd':
            if (parse_double(opt->name, val, opt->lo, opt->hi, &d))
                goto bad;
            *(double *)opt->dst = d;
            break;
        default:
            *(const char **)opt->dst = val;
        }
    }
    if (strcmp(cfg->device, "cpu") && strcmp(cfg->device, "cuda") && strcmp(cfg->device, "auto")) {
        fprintf(stderr, "vapo-serve: --device expects cpu, cuda or auto, got '%s'\n", cfg->device);
        goto bad;
    }
    if (cfg->max_images > cfg->max_queue) {
        fprintf(stderr, "vapo-serve: --max-images (%d) must not exceed --max-queue (%d)\n", cfg->max_images,
                cfg->max_queue);
        goto bad;
    }
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
bad:
    *exit_code = 2;
    return 1;
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
