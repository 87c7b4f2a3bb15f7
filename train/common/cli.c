/* Command-line helpers shared by the vapo tools; see cli.h. */
#define _POSIX_C_SOURCE 200809L
#include "common/cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "vapo/error.h"
#include "vapo/image.h"
#include "vapo/ode_batch.h"

/* ---- solver options ------------------------------------------------------------------ */

static int parse_solver(void *field, const char *opt, const char *value)
{
    vapo_ode_method m;
    if (vapo_ode_method_parse(value, &m))
        return opt_fail("%s: unknown solver '%s' (expected rk45, euler, heun or rk4)", opt, value);
    *(const char **)field = value;
    return 0;
}

#define ODE(field) offsetof(cli_ode_opts, field)
const opt_def cli_ode_group[] = {
    OPT_HEADING("Solver options (default: the model's sampling settings):"),
    OPT(OPT_CALL, "--solver", "NAME", ODE(solver), 0, 0, NULL,
        "rk45 (adaptive Dormand-Prince), euler, heun or rk4 (fixed step)", .call = parse_solver),
    OPT(OPT_DOUBLE, "--t-end", "T", ODE(t_end), 1e-9, 1e6, NULL, "integrate dx/dt = grad Phi(x) on [0, T]"),
    OPT(OPT_DOUBLE, "--rtol", "R", ODE(rtol), 1e-13, 1.0, NULL, "rk45 relative tolerance"),
    OPT(OPT_DOUBLE, "--atol", "A", ODE(atol), 1e-300, 1e6, NULL, "rk45 absolute tolerance"),
    OPT(OPT_INT, "--steps", "N", ODE(steps), 1, 100000, NULL, "steps of a fixed-step solver"),
    OPT(OPT_INT, "--max-nfe", "N", ODE(max_nfe), 1, 100000000, NULL,
        "give up on a sample after N field evaluations (default 10000, raised\n"
        "to what --steps needs). The states stay on the GPU with CUDA (float);\n"
        "on the CPU they are kept in double."),
    OPT_TABLE_END};

#define TOOL(field) offsetof(cli_tool_opts, field)
const opt_def cli_tool_group[] = {
    OPT(OPT_FLAG, "-q|--quiet", NULL, TOOL(quiet), 0, 0, NULL, "no progress line or settings on stderr"),
    OPT_HEADING("Device options:"),
    OPT_GROUP(TOOL(dev), opt_device_group),
    OPT_TABLE_END};

#define SOLVE(field) offsetof(cli_solve_opts, field)
const opt_def cli_solve_group[] = {
    OPT(OPT_INT, "--batch", "B", SOLVE(batch), 1, 65536, "64", "images solved together; does not change results"),
    OPT(OPT_INT, "--pad", "P", SOLVE(pad), 0, 64, "2", "pixels between grid tiles"),
    OPT_GROUP(SOLVE(tool), cli_tool_group),
    OPT_GROUP(offsetof(cli_solve_opts, ode), cli_ode_group),
    OPT_TABLE_END};

int cli_ode_apply(const cli_ode_opts *o, vapo_ode_config *cfg)
{
    if (o->solver)
        vapo_ode_method_parse(o->solver, &cfg->method); /* checked by parse_solver */
    if (o->t_end)
        cfg->t_end = o->t_end;
    if (o->rtol)
        cfg->rtol = o->rtol;
    if (o->atol)
        cfg->atol = o->atol;
    if (o->steps)
        cfg->steps = o->steps;
    if (o->max_nfe)
        cfg->max_nfe = o->max_nfe;
    const int fixed = cfg->method != VAPO_ODE_RK45;
    if (fixed && (o->rtol || o->atol))
        opt_warn("--rtol/--atol have no effect with the fixed-step solver %s (use --steps)",
                 vapo_ode_method_name(cfg->method));
    if (!fixed && o->steps)
        opt_warn("--steps has no effect with the adaptive solver rk45 (use --rtol/--atol, or --solver rk4)");
    const long long need = vapo_ode_fixed_nfe(cfg);
    if (!o->max_nfe && need > cfg->max_nfe)
        cfg->max_nfe = (int)need;
    if (vapo_ode_config_validate(cfg))
        return opt_fail("solver options: %s", vapo_last_error());
    return 0;
}

void cli_ode_describe(const vapo_ode_config *cfg, char *buf, size_t size)
{
    if (cfg->method == VAPO_ODE_RK45)
        snprintf(buf, size, "rk45 (rtol %g, atol %g), t_end %g", cfg->rtol, cfg->atol, cfg->t_end);
    else
        snprintf(buf, size, "%s (%d steps), t_end %g", vapo_ode_method_name(cfg->method), cfg->steps, cfg->t_end);
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
    p->live = p->mode == PROGRESS_TTY && !final;
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

void cli_progress_break(cli_progress *p)
{
    if (p->live)
        fputc('\n', stderr);
    p->live = 0;
}

void cli_progress_finish(cli_progress *p)
{
    if (p->mode == PROGRESS_OFF || !p->printed)
        return;
    if (p->done != p->printed_done)
        progress_print(p, cli_now(), 1); /* ends a live line with '\n' too */
    else
        cli_progress_break(p);
    p->mode = PROGRESS_OFF;
}

/* ---- models ------------------------------------------------------------------------------ */

vapo_model *cli_model_load(const char *path, const opt_device *dev, vapo_backend **be_out)
{
    *be_out = NULL;
    vapo_backend *be = vapo_backend_open(dev->device, dev->threads);
    if (!be) {
        opt_error("%s", vapo_last_error());
        return NULL;
    }
    vapo_model *m = vapo_model_load(path, be);
    if (!m) {
        opt_error("cannot load model: %s", vapo_last_error());
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

int cli_solve(vapo_model *m, const vapo_ode_config *cfg, int n, float *x, int *nfe, cli_progress *progress,
              double progress_base)
{
    solve_ctx ctx = {progress, progress_base};
    int rc = vapo_model_sample(m, cfg, n, x, NULL, nfe, solve_progress, &ctx);
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

int cli_write_grid(const char *path, const float *x, int n, int c, int h, int w, int cols, int pad)
{
    vapo_image grid = {0};
    unsigned char *png = NULL;
    size_t len = 0;
    int rc = vapo_image_grid_u8(x, n, c, h, w, cols, pad, 1.0f, &grid) || vapo_png_encode_u8(&grid, &png, &len) ||
             vapo_write_file(path, png, len);
    vapo_image_free(&grid);
    free(png);
    return rc ? -1 : 0;
}
