/* Command-line options of every vapo program (vapo-train, vapo-sample,
 * vapo-interpolate, vapo-score, vapo-serve), declared once in a table: name,
 * type, field, range, default and help. One parser reads the table for the
 * command line and for --config FILE.json; --help is generated from it.
 *
 * Conventions every program follows:
 *   - "--opt VALUE" and "--opt=VALUE"; "--" ends the options;
 *   - --config FILE.json: a JSON object of the same options (long names
 *     without "--"; numbers as JSON numbers, flags as true/false, the rest as
 *     strings), applied before the command line, which wins;
 *   - messages on stderr as "<prog>: error: <what>";
 *   - exit status 0 after --help, 2 (OPT_EXIT_USAGE) for a bad command line,
 *     after the message, the usage line and "Try '<prog> --help'.";
 *     1 when the work itself failed.
 *
 * Typical use:
 *
 *   static const opt_def table[] = {
 *       OPT(OPT_ARG, "MODEL", "model", F(model), 1, 1, NULL, "the model (.safetensors)"),
 *       OPT(OPT_INT, "-n|--num", "N", F(n), 1, 1e6, "64", "number of samples"),
 *       OPT_GROUP(F(dev), opt_device_group),
 *       OPT_TABLE_END};
 *   static const opt_spec spec = {"vapo-sample", "MODEL [options]", "about", table};
 *   int rc = opt_parse(&spec, argc, argv, &o);
 *   if (rc != OPT_GO) return rc;
 *   ...
 *   opt_release();
 */
#ifndef VAPO_OPT_H
#define VAPO_OPT_H

#include <stddef.h>
#include <stdint.h>

struct json_t;

#define OPT_EXIT_FAILURE 1
#define OPT_EXIT_USAGE 2
#define OPT_GO (-1) /* opt_parse: go on (else: exit with the value returned) */

typedef enum {
    OPT_END = 0,
    OPT_SECTION, /* help: a heading line (help) */
    OPT_INCLUDE, /* a shared table (group), its offsets relative to offset */
    OPT_FLAG,    /* int, set to 1 (JSON: true/false) */
    OPT_INT,     /* int in [lo, hi] */
    OPT_LONG,    /* long in [lo, hi] */
    OPT_U64,     /* uint64_t, 0..UINT64_MAX */
    OPT_SIZE,    /* size_t in [lo, hi] */
    OPT_DOUBLE,  /* finite double in [lo, hi] */
    OPT_STRING,  /* const char * (points into argv or a kept copy) */
    OPT_CHOICE,  /* const char *, one of choices ("csv|json") */
    OPT_CALL,    /* parsed by call (repeatable values, lists) */
    OPT_ARG,     /* the next positional argument, const char * (lo = 1: required) */
    OPT_ARGS,    /* the remaining positional arguments, opt_positionals (at least lo) */
} opt_type;

typedef struct opt_def opt_def;
struct opt_def {
    opt_type type;
    const char *names;  /* "-n|--num": the long name without "--" is the --config key
                           (OPT_ARG, OPT_ARGS: the help's "MODEL") */
    const char *arg;    /* the value's name in the help ("N"; OPT_ARG, OPT_ARGS: in
                           messages, "model") */
    size_t offset;      /* of the field in the program's options struct */
    double lo, hi;      /* the range of numbers */
    const char *def;    /* the default, parsed as a command-line value (NULL: 0 / NULL) */
    const char *help;   /* lines separated by '\n'; "(default X)" is appended */
    const char *choices;                                    /* OPT_CHOICE */
    int (*call)(void *field, const char *opt, const char *value); /* OPT_CALL: 0, or -1 after opt_fail */
    const opt_def *group; /* OPT_INCLUDE */
    int nosave;           /* not in opt_to_json (where and how a run ran, not what it made) */
};

/* Table rows: OPT(type, names, arg, field offset, lo, hi, default, help, extra
 * fields as designated initializers), OPT_HEADING(text), OPT_GROUP(offset,
 * table), and OPT_TABLE_END last. */
#define OPT(t, n, a, off, l, h, d, hp, ...)                                                                            \
    {.type = (t), .names = (n), .arg = (a), .offset = (off), .lo = (l), .hi = (h), .def = (d), .help = (hp),          \
     __VA_ARGS__}
#define OPT_HEADING(text) {.type = OPT_SECTION, .help = (text)}
#define OPT_GROUP(off, table) {.type = OPT_INCLUDE, .offset = (off), .group = (table)}
#define OPT_TABLE_END {.type = OPT_END}

typedef struct {
    const char *prog;  /* "vapo-sample" */
    const char *usage; /* after the name: "MODEL [options]" ('\n' starts another usage line) */
    const char *about; /* paragraph after the usage line */
    const opt_def *table;
    const char *footer;  /* text after the options (environment, exit status) */
    const char *version; /* --version prints it when set */
} opt_spec;

typedef struct {
    const char **v; /* positional arguments, in order (kept until opt_release) */
    int n;
} opt_positionals;

/* Sets the table's defaults in dst, applies --config, then the command line
 * (positional arguments fill the OPT_ARG, OPT_ARGS rows in order). OPT_GO to
 * go on, else the exit status (0 after --help or --version, 2 after a usage
 * message). */
int opt_parse(const opt_spec *spec, int argc, char **argv, void *dst);

/* opt_parse without setting the defaults first (dst already has them, or
 * values the command line should override, such as a resumed run's). */
int opt_parse_args(const opt_spec *spec, int argc, char **argv, void *dst);
/* The table's defaults into dst. */
void opt_defaults(const opt_spec *spec, void *dst);
/* A JSON object of option values (a --config file, a checkpoint's saved
 * options) into dst; origin names it in messages. 0, or -1 after a message. */
int opt_apply_json(const opt_spec *spec, const struct json_t *obj, const char *origin, void *dst);
/* The options as a JSON object (all but the nosave ones). */
struct json_t *opt_to_json(const opt_spec *spec, const void *src);
/* Prints the help text to stdout. */
void opt_help(const opt_spec *spec);
/* Frees what the parser kept: strings from JSON files, positional lists. */
void opt_release(void);

/* ---- messages ----------------------------------------------------------------
 * "<prog>: error: <message>" on stderr; the program name is spec->prog once
 * opt_parse ran. */
void opt_set_prog(const char *prog, const char *usage);
const char *opt_prog(void);
int opt_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));       /* returns 1 */
int opt_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2))); /* + usage; returns 2 */
int opt_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));        /* as usage_error; returns -1 */
void opt_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void opt_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- numbers: the whole string, in range, or a usage message naming opt
 * ("--num: 'x' is not an integer"). 0, or -1 after the message. ----------- */
int opt_parse_ll(const char *opt, const char *s, long long lo, long long hi, long long *out);
int opt_parse_int(const char *opt, const char *s, long long lo, long long hi, int *out);
int opt_parse_u64(const char *opt, const char *s, uint64_t *out);
int opt_parse_double(const char *opt, const char *s, double lo, double hi, double *out);

/* ---- the shared device options: --device D (checked by vapo_device_parse)
 * and --threads N, into a struct of this shape. -------------------------- */
typedef struct {
    const char *device; /* auto */
    int threads;        /* 0: all cores */
} opt_device;
extern const opt_def opt_device_group[];

#endif
