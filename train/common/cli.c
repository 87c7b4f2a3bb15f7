/* Command-line helpers shared by the vapo tools; see cli.h. */
#define _POSIX_C_SOURCE 200809L
#include "common/cli.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vapo/error.h"
#include "vapo/ode_batch.h"

/* ---- messages ------------------------------------------------------------------- */

static char prog_name[64] = "vapo";

void cli_set_prog(const char *name)
{
    const char *slash = name ? strrchr(name, '/') : NULL;
    snprintf(prog_name, sizeof prog_name, "%s", slash ? slash + 1 : (name ? name : "vapo"));
}

const char *cli_prog(void) { return prog_name; }

static void vmessage(const char *kind, const char *fmt, va_list ap)
{
    char buf[2048];
    vsnprintf(buf, sizeof buf, fmt, ap);
    fprintf(stderr, "%s: %s%s\n", prog_name, kind, buf);
}

int cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage("error: ", fmt, ap);
    va_end(ap);
    return CLI_EXIT_FAILURE;
}

int cli_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage("error: ", fmt, ap);
    va_end(ap);
    fprintf(stderr, "Try '%s --help'.\n", prog_name);
    return CLI_EXIT_USAGE;
}

void cli_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage("warning: ", fmt, ap);
    va_end(ap);
}

void cli_info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmessage("", fmt, ap);
    va_end(ap);
}

/* ---- argument iteration ----------------------------------------------------------- */

void cli_args_init(cli_args *it, int argc, char **argv)
{
    memset(it, 0, sizeof *it);
    it->argc = argc;
    it->argv = argv;
    it->i = 1;
    if (argc > 0 && argv[0] && !strcmp(prog_name, "vapo"))
        cli_set_prog(argv[0]);
}

int cli_next(cli_args *it)
{
    it->inline_val = NULL;
    it->name[0] = '\0';
    if (it->i >= it->argc)
        return CLI_END;
    it->arg = it->argv[it->i++];
    if (!it->positional_only && !strcmp(it->arg, "--")) {
        it->positional_only = 1;
        return cli_next(it);
    }
    if (it->positional_only || it->arg[0] != '-' || it->arg[1] == '\0')
        return CLI_POSITIONAL;
    const char *eq = it->arg[1] == '-' ? strchr(it->arg, '=') : NULL;
    size_t len = eq ? (size_t)(eq - it->arg) : strlen(it->arg);
    if (len >= sizeof it->name)
        len = sizeof it->name - 1;
    memcpy(it->name, it->arg, len);
    it->name[len] = '\0';
    it->inline_val = eq ? eq + 1 : NULL;
    return CLI_OPTION;
}

int cli_is(const cli_args *it, const char *names)
{
    size_t len = strlen(it->name);
    for (const char *p = names; *p;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && !strncmp(p, it->name, n))
            return 1;
        if (!bar)
            break;
        p = bar + 1;
    }
    return 0;
}

const char *cli_value(cli_args *it)
{
    if (it->inline_val)
        return it->inline_val;
    if (it->i >= it->argc) {
        cli_usage_error("option '%s' needs a value", it->name);
        return NULL;
    }
    return it->argv[it->i++];
}

int cli_flag(cli_args *it)
{
    if (it->inline_val) {
        cli_usage_error("option '%s' takes no value", it->name);
        return -1;
    }
    return 0;
}

int cli_unknown(const cli_args *it)
{
    return cli_usage_error("unknown option '%s'", it->name);
}

/* ---- numbers ------------------------------------------------------------------------ */

static int blank(const char *s) { return !s || !*s; }

int cli_parse_ll(const char *opt, const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    if (blank(s)) {
        cli_usage_error("%s: expected an integer, got an empty value", opt);
        return -1;
    }
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end != '\0' || end == s) {
        cli_usage_error("%s: '%s' is not an integer", opt, s);
        return -1;
    }
    if (errno == ERANGE || v < lo || v > hi) {
        cli_usage_error("%s: %s is out of range (%lld..%lld)", opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_parse_int(const char *opt, const char *s, long long lo, long long hi, int *out)
{
    long long v;
    if (lo < INT_MIN)
        lo = INT_MIN;
    if (hi > INT_MAX)
        hi = INT_MAX;
    if (cli_parse_ll(opt, s, lo, hi, &v))
        return -1;
    *out = (int)v;
    return 0;
}

int cli_parse_u64(const char *opt, const char *s, uint64_t *out)
{
    char *end;
    if (blank(s)) {
        cli_usage_error("%s: expected a non-negative integer, got an empty value", opt);
        return -1;
    }
    const char *p = s;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '-') {
        cli_usage_error("%s: '%s' is negative (expected 0..%llu)", opt, s, (unsigned long long)UINT64_MAX);
        return -1;
    }
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0' || end == s) {
        cli_usage_error("%s: '%s' is not a non-negative integer", opt, s);
        return -1;
    }
    if (errno == ERANGE) {
        cli_usage_error("%s: %s is out of range (0..%llu)", opt, s, (unsigned long long)UINT64_MAX);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

int cli_parse_double(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    if (blank(s)) {
        cli_usage_error("%s: expected a number, got an empty value", opt);
        return -1;
    }
    errno = 0;
    double v = strtod(s, &end);
    if (*end != '\0' || end == s) {
        cli_usage_error("%s: '%s' is not a number", opt, s);
        return -1;
    }
    if (!isfinite(v) || errno == ERANGE) {
        cli_usage_error("%s: '%s' is not a finite number", opt, s);
        return -1;
    }
    if (v < lo || v > hi) {
        if (isinf(hi))
            cli_usage_error("%s: %s is out of range (must be >= %g)", opt, s, lo);
        else if (isinf(lo))
            cli_usage_error("%s: %s is out of range (must be <= %g)", opt, s, hi);
        else
            cli_usage_error("%s: %s is out of range (%g..%g)", opt, s, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int cli_int(cli_args *it, long long lo, long long hi, int *out)
{
    const char *v = cli_value(it);
    return v ? cli_parse_int(it->name, v, lo, hi, out) : -1;
}

int cli_ll(cli_args *it, long long lo, long long hi, long long *out)
{
    const char *v = cli_value(it);
    return v ? cli_parse_ll(it->name, v, lo, hi, out) : -1;
}

int cli_u64(cli_args *it, uint64_t *out)
{
    const char *v = cli_value(it);
    return v ? cli_parse_u64(it->name, v, out) : -1;
}

int cli_double(cli_args *it, double lo, double hi, double *out)
{
    const char *v = cli_value(it);
    return v ? cli_parse_double(it->name, v, lo, hi, out) : -1;
}

int cli_choice(cli_args *it, const char *choices, int *index)
{
    const char *v = cli_value(it);
    if (!v)
        return -1;
    int k = 0;
    size_t len = strlen(v);
    for (const char *p = choices; *p; k++) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && !strncmp(p, v, n)) {
            *index = k;
            return 0;
        }
        if (!bar)
            break;
        p = bar + 1;
    }
    char list[256];
    snprintf(list, sizeof list, "%s", choices);
    for (char *c = list; *c; c++)
        if (*c == '|')
            *c = ',';
    cli_usage_error("%s: '%s' is not one of %s", it->name, v, list);
    return -1;
}

/* ---- solver options ------------------------------------------------------------------ */

int cli_ode_option(cli_args *it, cli_ode_opts *o)
{
    if (cli_is(it, "--solver")) {
        const char *v = cli_value(it);
        if (!v)
            return -1;
        if (vapo_ode_method_parse(v, &o->method)) {
            cli_usage_error("%s: unknown solver '%s' (expected rk45, euler, heun or rk4)", it->name, v);
            return -1;
        }
        o->has_method = 1;
        return 1;
    }
    if (cli_is(it, "--t-end")) {
        if (cli_double(it, 1e-9, 1e6, &o->t_end))
            return -1;
        o->has_t_end = 1;
        return 1;
    }
    if (cli_is(it, "--rtol")) {
        if (cli_double(it, 1e-13, 1.0, &o->rtol))
            return -1;
        o->has_rtol = 1;
        return 1;
    }
    if (cli_is(it, "--atol")) {
        if (cli_double(it, 1e-300, 1e6, &o->atol))
            return -1;
        o->has_atol = 1;
        return 1;
    }
    if (cli_is(it, "--steps")) {
        if (cli_int(it, 1, 100000, &o->steps))
            return -1;
        o->has_steps = 1;
        return 1;
    }
    if (cli_is(it, "--max-nfe")) {
        if (cli_int(it, 1, 100000000, &o->max_nfe))
            return -1;
        o->has_max_nfe = 1;
        return 1;
    }
    return 0;
}

static int method_stages(vapo_ode_method m)
{
    switch (m) {
    case VAPO_ODE_EULER:
        return 1;
    case VAPO_ODE_HEUN:
        return 2;
    case VAPO_ODE_RK4:
        return 4;
    default:
        return 6;
    }
}

int cli_ode_apply(const cli_ode_opts *o, vapo_ode_config *cfg)
{
    if (o->has_method)
        cfg->method = o->method;
    if (o->has_t_end)
        cfg->t_end = o->t_end;
    if (o->has_rtol)
        cfg->rtol = o->rtol;
    if (o->has_atol)
        cfg->atol = o->atol;
    if (o->has_steps)
        cfg->steps = o->steps;
    if (o->has_max_nfe)
        cfg->max_nfe = o->max_nfe;
    const int fixed = cfg->method != VAPO_ODE_RK45;
    if (fixed && (o->has_rtol || o->has_atol))
        cli_warn("--rtol/--atol have no effect with the fixed-step solver %s (use --steps)",
                 vapo_ode_method_name(cfg->method));
    if (!fixed && o->has_steps)
        cli_warn("--steps has no effect with the adaptive solver rk45 (use --rtol/--atol, or --solver rk4)");
    if (fixed && !o->has_max_nfe) {
        long long need = (long long)cfg->steps * method_stages(cfg->method);
        if (need > cfg->max_nfe)
            cfg->max_nfe = (int)need;
    }
    if (vapo_ode_config_validate(cfg)) {
        cli_usage_error("solver options: %s", vapo_last_error());
        return -1;
    }
    return 0;
}

void cli_ode_describe(const vapo_ode_config *cfg, char *buf, size_t size)
{
    if (cfg->method == VAPO_ODE_RK45)
        snprintf(buf, size, "rk45 (rtol %g, atol %g), t_end %g", cfg->rtol, cfg->atol, cfg->t_end);
    else
        snprintf(buf, size, "%s (%d steps), t_end %g", vapo_ode_method_name(cfg->method), cfg->steps, cfg->t_end);
}

const char *cli_ode_help(void)
{
    return "Solver options (default: the model's sampling settings):\n"
           "  --solver NAME      rk45 (adaptive Dormand-Prince), euler, heun or rk4 (fixed step)\n"
           "  --t-end T          integrate dx/dt = grad Phi(x) on [0, T] (T > 0)\n"
           "  --rtol R           rk45 relative tolerance\n"
           "  --atol A           rk45 absolute tolerance\n"
           "  --steps N          steps of a fixed-step solver (1..100000)\n"
           "  --max-nfe N        give up on a sample after N field evaluations\n"
           "                     (default 10000, raised to what --steps needs)\n"
           "  The states stay on the GPU with CUDA (float); on the CPU they are kept in double.\n";
}

/* ---- device options ------------------------------------------------------------------- */

void cli_device_defaults(cli_device_opts *o)
{
    snprintf(o->device, sizeof o->device, "auto");
    o->threads = 0;
}

int cli_device_option(cli_args *it, cli_device_opts *o)
{
    if (cli_is(it, "--device")) {
        const char *v = cli_value(it);
        if (!v)
            return -1;
        int ok = !strcmp(v, "cpu") || !strcmp(v, "cuda") || !strcmp(v, "auto");
        if (!ok && !strncmp(v, "cuda:", 5)) {
            int dev;
            char opt[80];
            snprintf(opt, sizeof opt, "%s (cuda:N)", it->name);
            if (cli_parse_int(opt, v + 5, 0, 1023, &dev))
                return -1;
            ok = 1;
        }
        if (!ok || strlen(v) >= sizeof o->device) {
            cli_usage_error("%s: unknown device '%s' (expected cpu, cuda, cuda:N or auto)", it->name, v);
            return -1;
        }
        snprintf(o->device, sizeof o->device, "%s", v);
        return 1;
    }
    if (cli_is(it, "--threads")) {
        if (cli_int(it, 0, 4096, &o->threads))
            return -1;
        return 1;
    }
    return 0;
}

vapo_backend *cli_backend_open(const cli_device_opts *o)
{
    vapo_backend *be;
    if (!strncmp(o->device, "cuda:", 5))
        be = vapo_backend_cuda(atoi(o->device + 5));
    else
        be = vapo_backend_open(o->device, o->threads);
    if (!be)
        cli_error("cannot open device '%s': %s", o->device, vapo_last_error());
    return be;
}

const char *cli_device_help(void)
{
    return "Device options:\n"
           "  --device D         cpu, cuda, cuda:N or auto (default auto: CUDA when usable, else CPU)\n"
           "  --threads N        CPU threads (default 0 = all cores)\n";
}

/* ---- progress -------------------------------------------------------------------------- */

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void cli_format_duration(double s, char *buf, size_t size)
{
    if (!isfinite(s) || s < 0) {
        snprintf(buf, size, "?");
        return;
    }
    long long t = (long long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, size, "%lld:%02lld:%02lld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, size, "%lld:%02lld", t / 60, t % 60);
}

enum { PROGRESS_OFF = 0, PROGRESS_TTY = 1, PROGRESS_PLAIN = 2 };

void cli_progress_start(cli_progress *p, const char *label, double total, const char *unit, int enabled)
{
    memset(p, 0, sizeof *p);
    snprintf(p->label, sizeof p->label, "%s", label ? label : "");
    snprintf(p->unit, sizeof p->unit, "%s", unit ? unit : "");
    p->total = total;
    p->t0 = p->last = cli_now();
    p->interval = 10.0;
    const char *iv = getenv("VAPO_PROGRESS_INTERVAL");
    if (iv && *iv) {
        char *end;
        double v = strtod(iv, &end);
        if (*end == '\0' && isfinite(v) && v >= 0)
            p->interval = v;
    }
    const char *mode = getenv("VAPO_PROGRESS");
    if (!enabled || (mode && !strcmp(mode, "off")))
        p->mode = PROGRESS_OFF;
    else if (mode && !strcmp(mode, "tty"))
        p->mode = PROGRESS_TTY;
    else if (mode && !strcmp(mode, "plain"))
        p->mode = PROGRESS_PLAIN;
    else
        p->mode = isatty(STDERR_FILENO) ? PROGRESS_TTY : PROGRESS_PLAIN;
}

static void progress_print(cli_progress *p, double now, int final)
{
    char line[512], el[32], eta[32];
    const double elapsed = now - p->t0;
    const double rate = elapsed > 0 ? p->done / elapsed : 0;
    cli_format_duration(elapsed, el, sizeof el);
    int n = snprintf(line, sizeof line, "%s", p->label);
    if (p->total > 0) {
        double pct = 100.0 * p->done / p->total;
        n += snprintf(line + n, sizeof line - n, " %lld/%lld %s (%.0f%%)", (long long)floor(p->done + 1e-9),
                      (long long)p->total, p->unit, pct > 100 ? 100 : pct);
    } else {
        n += snprintf(line + n, sizeof line - n, " %lld %s", (long long)floor(p->done + 1e-9), p->unit);
    }
    if (rate > 0) {
        if (rate >= 100)
            n += snprintf(line + n, sizeof line - n, ", %.0f %s/s", rate, p->unit);
        else if (rate >= 1)
            n += snprintf(line + n, sizeof line - n, ", %.3g %s/s", rate, p->unit);
        else
            n += snprintf(line + n, sizeof line - n, ", %.3g s/%s", 1.0 / rate, p->unit);
    }
    n += snprintf(line + n, sizeof line - n, ", elapsed %s", el);
    if (!final && p->total > 0 && rate > 0 && p->done < p->total) {
        cli_format_duration((p->total - p->done) / rate, eta, sizeof eta);
        n += snprintf(line + n, sizeof line - n, ", ETA %s", eta);
    }
    if (p->extra[0] && n < (int)sizeof line)
        snprintf(line + n, sizeof line - n, " | %s", p->extra);
    if (p->mode == PROGRESS_TTY)
        fprintf(stderr, "\r%s\033[K%s", line, final ? "\n" : "");
    else
        fprintf(stderr, "%s\n", line);
    fflush(stderr);
    p->printed++;
    p->printed_done = p->done;
    p->last = now;
}

void cli_progress_update(cli_progress *p, double done, const char *extra_fmt, ...)
{
    p->done = done;
    if (p->mode == PROGRESS_OFF)
        return;
    const double now = cli_now();
    const double wait = p->mode == PROGRESS_TTY ? 0.1 : p->interval;
    if (now - p->last < wait)
        return;
    p->extra[0] = '\0';
    if (extra_fmt) {
        va_list ap;
        va_start(ap, extra_fmt);
        vsnprintf(p->extra, sizeof p->extra, extra_fmt, ap);
        va_end(ap);
    }
    progress_print(p, now, 0);
}

void cli_progress_finish(cli_progress *p)
{
    if (p->mode == PROGRESS_OFF || !p->printed)
        return;
    if (p->done != p->printed_done)
        progress_print(p, cli_now(), 1); /* ends a live line with '\n' too */
    else if (p->mode == PROGRESS_TTY)
        fputc('\n', stderr);
    p->mode = PROGRESS_OFF;
}

/* ---- models ------------------------------------------------------------------------------ */

vapo_model *cli_model_load(const char *path, const cli_device_opts *dev, vapo_backend **be_out)
{
    *be_out = NULL;
    vapo_backend *be = cli_backend_open(dev);
    if (!be)
        return NULL;
    vapo_model *m = vapo_model_load(path, be);
    if (!m) {
        cli_error("cannot load model: %s", vapo_last_error());
        be->destroy(be);
        return NULL;
    }
    *be_out = be;
    return m;
}

typedef struct {
    cli_progress *progress;
    double base;
} solve_ctx;

static int solve_progress(void *ctx, const vapo_ode_progress *p)
{
    const solve_ctx *s = ctx;
    if (!s->progress)
        return 0;
    /* Finished trajectories count whole; running ones by the time the
     * slowest has reached, a lower bound that keeps the ETA honest. */
    double frac = p->t_end > 0 ? p->t_min / p->t_end : 0;
    double done = s->base + p->done + (p->n - p->done) * (frac < 0 ? 0 : frac > 1 ? 1 : frac);
    cli_progress_update(s->progress, done, "batch at t %.3g/%.3g, %.1f NFE/sample", p->t_min, p->t_end,
                        p->n > 0 ? (double)p->nfe / p->n : 0.0);
    return 0;
}

/* Off the CPU the states stay in backend memory for the whole solve; the
 * CPU keeps the host solver (double states), whose results tests pin. */
static int solve_batch(vapo_model *m, const vapo_ode_config *cfg, int n, float *x, int *nfe, solve_ctx *ctx)
{
    vapo_backend *be = vapo_net_backend(m->net);
    const int dim = (int)vapo_net_input_size(m->net);
    if (!strcmp(be->name, "cpu"))
        return vapo_ode_solve(cfg, n, dim, x, vapo_model_field, m, nfe, solve_progress, ctx);
    const size_t bytes = sizeof(float) * n * dim;
    float *dev = be->alloc(be, bytes);
    if (!dev)
        return vapo_fail("out of %s memory for %d samples", be->name, n);
    be->upload(be, dev, x, bytes);
    int rc = vapo_ode_solve_backend(cfg, be, n, dim, dev, vapo_model_field_backend, m, nfe, solve_progress, ctx);
    be->download(be, x, dev, bytes);
    be->free(be, dev);
    return rc;
}

int cli_solve(vapo_model *m, const vapo_ode_config *cfg, int n, float *x, int *nfe, cli_progress *progress,
              double progress_base)
{
    solve_ctx ctx = {progress, progress_base};
    int rc = solve_batch(m, cfg, n, x, nfe, &ctx);
    if (progress)
        cli_progress_update(progress, progress_base + n, NULL);
    return rc;
}

/* ---- files ----------------------------------------------------------------------------- */

int cli_is_dir(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

int cli_mkdir_p(const char *path)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf)
        return vapo_fail("bad folder name '%s'", path);
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return vapo_fail("cannot create folder '%s': %s", buf, strerror(errno));
            if (!cli_is_dir(buf))
                return vapo_fail("'%s' exists and is not a folder", buf);
            *p = c;
            if (c == '\0')
                break;
        }
    }
    return 0;
}

int cli_write_file(const char *path, const void *data, size_t len)
{
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (!tmp)
        return vapo_fail("out of memory");
    snprintf(tmp, n, "%s.tmp%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int e = errno;
        free(tmp);
        return vapo_fail("cannot write '%s': %s", path, strerror(e));
    }
    int ok = fwrite(data, 1, len, f) == len;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        free(tmp);
        return vapo_fail("cannot write '%s': %s", path, strerror(e));
    }
    free(tmp);
    return 0;
}
