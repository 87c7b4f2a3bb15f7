/* Command-line helpers shared by the vapo tools (vapo-train, vapo-sample,
 * vapo-interpolate, vapo-score): argument iteration with "--opt VALUE" and
 * "--opt=VALUE", strict number parsing with messages that name the option,
 * the solver and device option groups, and a progress line on stderr.
 *
 * Conventions every tool follows:
 *   - messages go to stderr as "<prog>: error: <what>", results to stdout
 *     or to the files named on the command line;
 *   - exit status 0 on success, 1 when the work failed (a missing model, an
 *     unreadable image, a solver failure), 2 for a bad command line
 *     (CLI_EXIT_USAGE), after which "Try '<prog> --help'." is printed.
 *
 * Typical option loop:
 *
 *   cli_args it;
 *   cli_args_init(&it, argc, argv);
 *   for (int k; (k = cli_next(&it)) != CLI_END;) {
 *       if (k == CLI_POSITIONAL) { ...it.arg...; continue; }
 *       if (cli_is(&it, "-h|--help")) { ...; return 0; }
 *       else if (cli_is(&it, "-n|--num")) { if (cli_int(&it, 1, 100000, &n)) return CLI_EXIT_USAGE; }
 *       else if ((r = cli_ode_option(&it, &ode)) != 0) { if (r < 0) return CLI_EXIT_USAGE; }
 *       else return cli_unknown(&it);
 *   }
 */
#ifndef VAPO_TRAIN_CLI_H
#define VAPO_TRAIN_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "vapo/backend.h"
#include "vapo/model.h"
#include "vapo/ode.h"

#define CLI_EXIT_FAILURE 1
#define CLI_EXIT_USAGE 2

/* The program name used in messages (basename of argv[0] unless set). */
void cli_set_prog(const char *name);
const char *cli_prog(void);

/* "<prog>: error: <message>\n" on stderr; returns CLI_EXIT_FAILURE. */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Same, followed by "Try '<prog> --help'."; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "<prog>: warning: <message>\n" on stderr. */
void cli_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "<prog>: <message>\n" on stderr (informational). */
void cli_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- argument iteration ------------------------------------------------------ */

enum { CLI_END = -1, CLI_POSITIONAL = 0, CLI_OPTION = 1 };

typedef struct {
    int argc;
    char **argv;
    int i;                  /* index of the next argument to look at */
    const char *arg;        /* the current argument (a positional, or the option name) */
    char name[64];          /* the current option without "=value" */
    const char *inline_val; /* "--opt=VALUE": points at VALUE; else NULL */
    int positional_only;    /* after "--" */
} cli_args;

void cli_args_init(cli_args *it, int argc, char **argv);

/* Advances to the next argument: CLI_OPTION for "-x"/"--xyz" (a lone "-" is a
 * positional), CLI_POSITIONAL otherwise (also everything after "--"),
 * CLI_END after the last. The value of an option is fetched by cli_value. */
int cli_next(cli_args *it);

/* 1 if the current option is one of the '|'-separated names ("-n|--num"). */
int cli_is(const cli_args *it, const char *names);

/* The current option's value: "--opt=VALUE" or the next argument (consumed).
 * NULL with a usage message if it is missing. */
const char *cli_value(cli_args *it);

/* A flag that takes no value; "--flag=x" is a usage error (returns -1). */
int cli_flag(cli_args *it);

/* "unknown option '--x'" usage error; returns CLI_EXIT_USAGE. */
int cli_unknown(const cli_args *it);

/* ---- numbers (strict: the whole string, in range; a usage message naming the
 * option otherwise). Each returns 0, or -1 after printing the message. ------ */

int cli_parse_int(const char *opt, const char *s, long long lo, long long hi, int *out);
int cli_parse_ll(const char *opt, const char *s, long long lo, long long hi, long long *out);
int cli_parse_u64(const char *opt, const char *s, uint64_t *out);
/* Finite doubles in [lo, hi]; pass -INFINITY/INFINITY for an open side. */
int cli_parse_double(const char *opt, const char *s, double lo, double hi, double *out);
/* The value of the current option, parsed as above. */
int cli_int(cli_args *it, long long lo, long long hi, int *out);
int cli_ll(cli_args *it, long long lo, long long hi, long long *out);
int cli_u64(cli_args *it, uint64_t *out);
int cli_double(cli_args *it, double lo, double hi, double *out);
/* One of the '|'-separated choices ("csv|json"); *index gets its position. */
int cli_choice(cli_args *it, const char *choices, int *index);

/* ---- solver options: --solver --rtol --atol --steps --t-end --max-nfe --------- */

typedef struct {
    int has_method, has_t_end, has_rtol, has_atol, has_steps, has_max_nfe;
    vapo_ode_method method;
    double t_end, rtol, atol;
    int steps, max_nfe;
} cli_ode_opts;

/* 1 if the current option is a solver option (parsed into o), 0 if it is
 * not one, -1 on a bad value (message printed). */
int cli_ode_option(cli_args *it, cli_ode_opts *o);
/* Overrides the fields given on the command line in cfg (the model's
 * sampling defaults), raises max_nfe to what a fixed-step method needs when
 * --max-nfe was not given, and validates. -1 with a message on a bad mix. */
int cli_ode_apply(const cli_ode_opts *o, vapo_ode_config *cfg);
/* One line describing cfg: "rk45 (rtol 0.001, atol 0.001), t_end 1.5". */
void cli_ode_describe(const vapo_ode_config *cfg, char *buf, size_t size);
/* The help text of the group (each line starts with two spaces). */
const char *cli_ode_help(void);

/* ---- device options: --device cpu|cuda|cuda:N|auto, --threads N ---------------- */

typedef struct {
    char device[32]; /* "auto" by default */
    int threads;     /* 0 = all cores */
} cli_device_opts;

void cli_device_defaults(cli_device_opts *o);
int cli_device_option(cli_args *it, cli_device_opts *o); /* 1, 0 or -1 as cli_ode_option */
/* Opens the backend; NULL after printing an error. */
vapo_backend *cli_backend_open(const cli_device_opts *o);
const char *cli_device_help(void);

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
} cli_progress;

double cli_now(void); /* monotonic seconds */

/* enabled = 0 (e.g. --quiet) switches it off whatever the environment says. */
void cli_progress_start(cli_progress *p, const char *label, double total, const char *unit, int enabled);
/* done: units finished so far (may be fractional); extra: printf-style text
 * appended to the line (NULL for none). Cheap when nothing is printed. */
void cli_progress_update(cli_progress *p, double done, const char *extra_fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Final state: on a terminal ends the live line; in plain mode prints a last
 * line if any was printed before. */
void cli_progress_finish(cli_progress *p);

/* "1:02:03" or "2:03" */
void cli_format_duration(double seconds, char *buf, size_t size);

/* ---- models ------------------------------------------------------------------------ */

/* Opens the backend and loads the model; NULL after printing an error (the
 * backend is closed again then). *be_out gets the backend to destroy after
 * vapo_model_free. */
vapo_model *cli_model_load(const char *path, const cli_device_opts *dev, vapo_backend **be_out);

/* Integrates n trajectories x (n * d floats, initial noise in, final states
 * out) with cfg, one batched field call per evaluation, updating `progress`
 * (may be NULL) as progress_base + the fraction of this batch done.
 * nfe (n ints) may be NULL. 0, or -1 with vapo_last_error(). */
int cli_solve(vapo_model *m, const vapo_ode_config *cfg, int n, float *x, int *nfe, cli_progress *progress,
              double progress_base);

/* ---- files ------------------------------------------------------------------------ */

/* mkdir -p; 0 or -1 with a message (vapo_last_error). */
int cli_mkdir_p(const char *path);
/* 1 if path is an existing directory. */
int cli_is_dir(const char *path);
/* Writes len bytes to path via a temp file and rename; -1 with a message. */
int cli_write_file(const char *path, const void *data, size_t len);

#endif
