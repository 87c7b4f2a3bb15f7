#include "config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
            "                       /healthz and /readyz (default: $VAPO_API_KEY, else none)\n"
            "  --cors ORIGIN        allow cross-origin requests from ORIGIN ('*' for any; default off)\n"
            "  --max-connections N  concurrent connections (default 256)\n"
            "  --conn-timeout-s N   close a connection idle for N seconds (default 30)\n"
            "  --http-threads N     HTTP worker threads (default 4)\n"
            "  --max-body-bytes N   largest request body (default 8388608)\n"
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
            "  VAPO_API_KEY         the bearer token when --api-key is not given\n");
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

typedef struct {
    const char *name;
    char kind; /* i: int, z: size, d: double, s: string */
    void *dst;
    double lo, hi;
} option;

int config_parse(int argc, char **argv, serve_config *cfg, int *exit_code)
{
    *cfg = (serve_config){
        .host = "127.0.0.1", .port = 8080, .device = "auto", .threads = 0, .max_batch = 64,
        .max_queue = 1024, .max_wait_ms = 0, .timeout_s = 60, .max_images = 64, .max_steps = 1000,
        .max_nfe = 2000, .max_body_bytes = 8u << 20, .max_connections = 256, .conn_timeout_s = 30,
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
        {"--conn-timeout-s", 'i', &cfg->conn_timeout_s, 1, 86400},
        {"--http-threads", 'i', &cfg->http_threads, 1, 256},
        {"--api-key", 's', &cfg->api_key, 0, 0},
        {"--cors", 's', &cfg->cors_origin, 0, 0},
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
        if (!strcmp(a, "--quiet")) {
            cfg->quiet = 1;
            continue;
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
    if (!cfg->api_key) {
        const char *env = getenv("VAPO_API_KEY");
        if (env && *env)
            cfg->api_key = env;
    }
    if (cfg->api_key && !*cfg->api_key)
        cfg->api_key = NULL;
    if (cfg->cors_origin && !*cfg->cors_origin)
        cfg->cors_origin = NULL;
    return 0;
bad:
    *exit_code = 2;
    return 1;
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
