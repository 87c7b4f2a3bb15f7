/* What the vapo tools (vapo-train, vapo-sample, vapo-interpolate, vapo-score)
 * share beyond their option tables (common/opt.h, which also has the
 * messages and exit codes): the tool and solver option groups, model
 * loading, batched solving with a progress line on stderr, and folders. */
#ifndef VAPO_TRAIN_CLI_H
#define VAPO_TRAIN_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "opt.h"
#include "vapo/backend.h"
#include "vapo/model.h"
#include "vapo/ode.h"

/* ---- solver options: --solver --rtol --atol --steps --t-end --max-nfe ---------
 * A field left 0 / NULL was not given: the model's sampling setting stays. */

typedef struct {
    const char *solver;
    double t_end, rtol, atol;
    int steps, max_nfe;
} cli_ode_opts;

extern const opt_def cli_ode_group[]; /* OPT_GROUP(offsetof(..., ode), cli_ode_group) */

/* What every image tool takes: -q/--quiet and the device options. */
typedef struct {
    int quiet;
    opt_device dev;
} cli_tool_opts;
extern const opt_def cli_tool_group[];

/* The tools that integrate the ODE into a grid: --batch, --pad, the above
 * and the solver options. */
typedef struct {
    int batch, pad;
    cli_tool_opts tool;
    cli_ode_opts ode;
} cli_solve_opts;
extern const opt_def cli_solve_group[];

/* The help's paragraph on the progress line (cli_progress below). */
#define CLI_PROGRESS_HELP                                                                                              \
    "Progress on stderr: a live line on a terminal, else a line every 10 s\n"                                          \
    "(VAPO_PROGRESS=off|tty|plain|auto, VAPO_PROGRESS_INTERVAL=SECONDS).\n"

/* Overrides the fields given on the command line in cfg (the model's
 * sampling defaults), raises max_nfe to what a fixed-step method needs when
 * --max-nfe was not given, and validates. -1 after a usage message. */
int cli_ode_apply(const cli_ode_opts *o, vapo_ode_config *cfg);
/* One line describing cfg: "rk45 (rtol 0.001, atol 0.001), t_end 1.5". */
void cli_ode_describe(const vapo_ode_config *cfg, char *buf, size_t size);

/* ---- progress on stderr --------------------------------------------------------
 * On a terminal: one live line rewritten with '\r' at most 10 times a second.
 * Otherwise (a log file, CI): a plain line every `interval` seconds (10 by
 * default), none for runs shorter than that, and a final line if any was
 * printed. Each line: label, done/total, percent, rate, elapsed, ETA, extra.
 * VAPO_PROGRESS=off|tty|plain|auto overrides the mode, and
 * VAPO_PROGRESS_INTERVAL=SECONDS the plain-line interval (0 = every update). */

typedef struct {
    char label[32];
    char unit[16];
    double total;
    double t0, last;     /* start and last print (monotonic seconds) */
    int mode;            /* 0 off, 1 tty, 2 plain */
    double interval;
    int printed;         /* lines (or live updates) printed so far */
    double done, printed_done;
    char extra[160];
    int live;            /* a terminal line is open (no '\n' yet) */
} cli_progress;

double cli_now(void); /* monotonic seconds */

/* enabled = 0 (e.g. --quiet) switches it off whatever the environment says. */
void cli_progress_start(cli_progress *p, const char *label, double total, const char *unit, int enabled);
/* done: units finished so far (may be fractional); extra: printf-style text
 * appended to the line (NULL for none). Cheap when nothing is printed. */
void cli_progress_update(cli_progress *p, double done, const char *extra_fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Ends an open terminal line, so that messages printed next start on their own. */
void cli_progress_break(cli_progress *p);
/* Final state: on a terminal ends the live line; in plain mode prints a last
 * line if any was printed before. */
void cli_progress_finish(cli_progress *p);

/* "1:02:03" or "2:03" */
void cli_format_duration(double seconds, char *buf, size_t size);

/* ---- models ------------------------------------------------------------------------ */

/* Opens the backend and loads the model; NULL after printing an error (the
 * backend is closed again then). *be_out gets the backend to destroy after
 * vapo_model_free. */
vapo_model *cli_model_load(const char *path, const opt_device *dev, vapo_backend **be_out);

/* Integrates n trajectories x (n * d floats, initial noise in, final states
 * out) with cfg, one batched field call per evaluation, updating `progress`
 * (may be NULL) as progress_base + the fraction of this batch done.
 * nfe (n ints) may be NULL. 0, or -1 with vapo_last_error(). */
int cli_solve(vapo_model *m, const vapo_ode_config *cfg, int n, float *x, int *nfe, cli_progress *progress,
              double progress_base);

/* ---- files ------------------------------------------------------------------------ */

/* n images (NCHW floats in [-1, 1]) as one grid PNG (vapo_image_grid_u8's
 * cols and pad), written whole or not at all; -1 with vapo_last_error(). */
int cli_write_grid(const char *path, const float *x, int n, int c, int h, int w, int cols, int pad);

/* mkdir -p; 0 or -1 with a message (vapo_last_error). */
int cli_mkdir_p(const char *path);
/* 1 if path is an existing directory. */
int cli_is_dir(const char *path);

#endif
