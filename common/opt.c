/* The option table parser shared by every vapo program; see opt.h. */
#define _POSIX_C_SOURCE 200809L
#include "opt.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "vapo/backend.h"
#include "vapo/error.h"

/* ---- messages --------------------------------------------------------------------- */

static char prog_name[64] = "vapo";
static const char *prog_usage;

void opt_set_prog(const char *prog, const char *usage)
{
    snprintf(prog_name, sizeof prog_name, "%s", prog);
    prog_usage = usage;
}

const char *opt_prog(void) { return prog_name; }

static void message(const char *kind, const char *fmt, va_list ap)
{
    char buf[2048];
    vsnprintf(buf, sizeof buf, fmt, ap);
    fprintf(stderr, "%s: %s%s\n", prog_name, kind, buf);
}

#define MESSAGE(kind)                                                                                                  \
    do {                                                                                                               \
        va_list ap;                                                                                                    \
        va_start(ap, fmt);                                                                                             \
        message(kind, fmt, ap);                                                                                        \
        va_end(ap);                                                                                                    \
    } while (0)

/* The usage lines, each "usage: prog ..." (later ones aligned under it). */
static void print_usage(FILE *f)
{
    if (!prog_usage)
        return;
    const char *lead = "usage: ";
    for (const char *p = prog_usage; *p;) {
        size_t n = strcspn(p, "\n");
        fprintf(f, "%s%s %.*s\n", lead, prog_name, (int)n, p);
        lead = "       ";
        p += n + (p[n] == '\n');
    }
}

static void usage_tail(void)
{
    print_usage(stderr);
    fprintf(stderr, "Try '%s --help'.\n", prog_name);
}

int opt_error(const char *fmt, ...)
{
    MESSAGE("error: ");
    return OPT_EXIT_FAILURE;
}

int opt_usage_error(const char *fmt, ...)
{
    MESSAGE("error: ");
    usage_tail();
    return OPT_EXIT_USAGE;
}

int opt_fail(const char *fmt, ...)
{
    MESSAGE("error: ");
    usage_tail();
    return -1;
}

void opt_warn(const char *fmt, ...) { MESSAGE("warning: "); }

void opt_info(const char *fmt, ...) { MESSAGE(""); }

/* ---- numbers ------------------------------------------------------------------------ */

static int blank(const char *s) { return !s || !*s; }

int opt_parse_ll(const char *opt, const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    if (blank(s))
        return opt_fail("%s: expected an integer, got an empty value", opt);
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end != '\0' || end == s)
        return opt_fail("%s: '%s' is not an integer", opt, s);
    if (errno == ERANGE || v < lo || v > hi)
        return opt_fail("%s: %s is out of range (%lld..%lld)", opt, s, lo, hi);
    *out = v;
    return 0;
}

int opt_parse_int(const char *opt, const char *s, long long lo, long long hi, int *out)
{
    long long v = 0;
    if (opt_parse_ll(opt, s, lo < INT_MIN ? INT_MIN : lo, hi > INT_MAX ? INT_MAX : hi, &v))
        return -1;
    *out = (int)v;
    return 0;
}

int opt_parse_u64(const char *opt, const char *s, uint64_t *out)
{
    char *end;
    if (blank(s))
        return opt_fail("%s: expected a non-negative integer, got an empty value", opt);
    if (s[strspn(s, " \t")] == '-')
        return opt_fail("%s: '%s' is negative (expected 0..%llu)", opt, s, (unsigned long long)UINT64_MAX);
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end != '\0' || end == s)
        return opt_fail("%s: '%s' is not a non-negative integer", opt, s);
    if (errno == ERANGE)
        return opt_fail("%s: %s is out of range (0..%llu)", opt, s, (unsigned long long)UINT64_MAX);
    *out = (uint64_t)v;
    return 0;
}

int opt_parse_double(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    if (blank(s))
        return opt_fail("%s: expected a number, got an empty value", opt);
    errno = 0;
    const double v = strtod(s, &end);
    if (*end != '\0' || end == s)
        return opt_fail("%s: '%s' is not a number", opt, s);
    if (!isfinite(v) || errno == ERANGE)
        return opt_fail("%s: '%s' is not a finite number", opt, s);
    if (v < lo || v > hi) {
        if (isinf(hi))
            return opt_fail("%s: %s is out of range (must be >= %g)", opt, s, lo);
        if (isinf(lo))
            return opt_fail("%s: %s is out of range (must be <= %g)", opt, s, hi);
        return opt_fail("%s: %s is out of range (%g..%g)", opt, s, lo, hi);
    }
    *out = v;
    return 0;
}

/* ---- the table ---------------------------------------------------------------------- */

/* A table entry found by name, with its field's offset in the whole struct. */
typedef struct {
    const opt_def *d;
    size_t offset;
} found;

/* The long name without "--" (the --config key), or NULL. */
static const char *long_name(const opt_def *d, size_t *len)
{
    const char *p = d->names ? strstr(d->names, "--") : NULL;
    if (!p)
        return NULL;
    *len = strcspn(p + 2, "|");
    return p + 2;
}

static int has_name(const char *names, const char *name, size_t len)
{
    for (const char *p = names; *p;) {
        size_t n = strcspn(p, "|");
        if (n == len && !strncmp(p, name, n))
            return 1;
        p += n + (p[n] == '|');
    }
    return 0;
}

/* By a command-line name ("-n", "--num"; dashes = 1) or a config key ("num"). */
static found find(const opt_def *table, size_t base, const char *name, size_t len, int dashes)
{
    for (const opt_def *d = table; d->type != OPT_END; d++) {
        if (d->type == OPT_INCLUDE) {
            found f = find(d->group, base + d->offset, name, len, dashes);
            if (f.d)
                return f;
        } else if (d->type != OPT_SECTION) {
            size_t n;
            const char *key = dashes ? NULL : long_name(d, &n);
            if (dashes ? has_name(d->names, name, len) : (key && n == len && !strncmp(key, name, n)))
                return (found){d, base + d->offset};
        }
    }
    return (found){NULL, 0};
}

static int check_choice(const opt_def *d, const char *opt, const char *v)
{
    if (has_name(d->choices, v, strlen(v)))
        return 0;
    char list[256];
    snprintf(list, sizeof list, "%s", d->choices);
    for (char *c = list; *c; c++)
        if (*c == '|')
            *c = ',';
    return opt_fail("%s: '%s' is not one of %s", opt, v, list);
}

/* lo = hi = 0 in the table: any value of the type. */
static void range(const opt_def *d, double *lo, double *hi)
{
    *lo = d->lo, *hi = d->hi;
    if (*lo == 0 && *hi == 0)
        *lo = -INFINITY, *hi = INFINITY;
}

static long long clamp_ll(double v)
{
    return v <= (double)LLONG_MIN ? LLONG_MIN : v >= (double)LLONG_MAX ? LLONG_MAX : (long long)v;
}

/* Parses `value` (the command line's text) into the field at p. */
static int set_value(const opt_def *d, void *p, const char *opt, const char *value)
{
    double lo, hi;
    long long ll = 0;
    range(d, &lo, &hi);
    switch (d->type) {
    case OPT_FLAG:
        *(int *)p = 1;
        return 0;
    case OPT_INT:
        return opt_parse_int(opt, value, clamp_ll(lo), clamp_ll(hi), (int *)p);
    case OPT_LONG:
        if (opt_parse_ll(opt, value, clamp_ll(lo), clamp_ll(hi), &ll)) /* long is 64 bits on every target */
            return -1;
        *(long *)p = (long)ll;
        return 0;
    case OPT_SIZE:
        if (opt_parse_ll(opt, value, lo < 0 ? 0 : clamp_ll(lo), clamp_ll(hi), &ll))
            return -1;
        *(size_t *)p = (size_t)ll;
        return 0;
    case OPT_U64:
        return opt_parse_u64(opt, value, (uint64_t *)p);
    case OPT_DOUBLE:
        return opt_parse_double(opt, value, lo, hi, (double *)p);
    case OPT_CHOICE:
        if (check_choice(d, opt, value))
            return -1;
        *(const char **)p = value;
        return 0;
    case OPT_STRING:
    case OPT_ARG:
        *(const char **)p = value;
        return 0;
    case OPT_CALL:
        return d->call(p, opt, value);
    default:
        return opt_fail("%s: not an option", opt);
    }
}

static void defaults(const opt_def *table, char *base)
{
    for (const opt_def *d = table; d->type != OPT_END; d++) {
        if (d->type == OPT_INCLUDE)
            defaults(d->group, base + d->offset);
        else if (d->def && set_value(d, base + d->offset, d->names, d->def))
            abort(); /* a default the table's own range refuses: a programming error */
    }
}

void opt_defaults(const opt_spec *spec, void *dst)
{
    opt_set_prog(spec->prog, spec->usage);
    defaults(spec->table, dst);
}

/* ---- JSON ----------------------------------------------------------------------------- */

static char **kept;
static size_t nkept;

/* Keeps p (malloc'd) until opt_release; NULL (p freed) when out of memory. */
static void *keep_ptr(void *p)
{
    char **k = p ? realloc(kept, sizeof *kept * (nkept + 1)) : NULL;
    if (!k) {
        free(p);
        return NULL;
    }
    kept = k;
    kept[nkept++] = p;
    return p;
}

static const char *keep(const char *s) { return keep_ptr(strdup(s)); }

void opt_release(void)
{
    for (size_t i = 0; i < nkept; i++)
        free(kept[i]);
    free(kept);
    kept = NULL, nkept = 0;
}

static const char *json_type_name(const json_t *v)
{
    return json_is_string(v) ? "a string" : json_is_integer(v) ? "an integer" : json_is_real(v) ? "a number" :
           json_is_boolean(v) ? "true or false" : json_is_null(v) ? "null" : json_is_array(v) ? "an array" :
           "an object";
}

/* One JSON value into the field, through the command line's parser (same
 * ranges and messages) once its JSON type is right. */
static int set_json(const opt_def *d, void *p, const char *opt, const json_t *v)
{
    char buf[64];
    const char *want = "a string";
    switch (d->type) {
    case OPT_FLAG:
        if (!json_is_boolean(v)) {
            want = "true or false";
            break;
        }
        *(int *)p = json_is_true(v);
        return 0;
    case OPT_INT:
    case OPT_LONG:
    case OPT_SIZE:
    case OPT_U64:
        if (!json_is_integer(v)) {
            want = "an integer";
            break;
        }
        snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        return set_value(d, p, opt, buf);
    case OPT_DOUBLE:
        if (!json_is_number(v)) {
            want = "a number";
            break;
        }
        snprintf(buf, sizeof buf, "%.17g", json_number_value(v));
        return set_value(d, p, opt, buf);
    default:
        if (!json_is_string(v))
            break;
        const char *s = keep(json_string_value(v));
        return s ? set_value(d, p, opt, s) : opt_fail("%s: out of memory", opt);
    }
    return opt_fail("%s: expected %s, got %s", opt, want, json_type_name(v));
}

int opt_apply_json(const opt_spec *spec, const json_t *obj, const char *origin, void *dst)
{
    const char *key;
    json_t *val;
    if (!json_is_object(obj))
        return opt_fail("%s: expected a JSON object of options", origin);
    json_object_foreach((json_t *)obj, key, val) {
        found f = find(spec->table, 0, key, strlen(key), 0);
        char opt[512];
        snprintf(opt, sizeof opt, "%s: --%s", origin, key);
        if (!f.d)
            return opt_fail("%s: unknown option '%s'", origin, key);
        if (set_json(f.d, (char *)dst + f.offset, opt, val))
            return -1;
    }
    return 0;
}

static int load_config(const opt_spec *spec, const char *path, void *dst)
{
    json_error_t err;
    json_t *obj = json_load_file(path, JSON_REJECT_DUPLICATES, &err);
    if (!obj)
        return opt_fail("--config %s: %s (line %d)", path, err.text, err.line);
    int rc = opt_apply_json(spec, obj, path, dst);
    json_decref(obj);
    return rc;
}

static void to_json(const opt_def *table, const char *base, json_t *obj)
{
    for (const opt_def *d = table; d->type != OPT_END; d++) {
        const void *p = base + d->offset;
        size_t n;
        const char *key = long_name(d, &n);
        json_t *v = NULL;
        if (d->type == OPT_INCLUDE)
            to_json(d->group, base + d->offset, obj);
        if (d->nosave || !key)
            continue;
        switch (d->type) {
        case OPT_FLAG:
            v = json_boolean(*(const int *)p);
            break;
        case OPT_INT:
            v = json_integer(*(const int *)p);
            break;
        case OPT_LONG:
            v = json_integer(*(const long *)p);
            break;
        case OPT_SIZE:
            v = json_integer((json_int_t) * (const size_t *)p);
            break;
        case OPT_U64:
            v = json_integer((json_int_t) * (const uint64_t *)p);
            break;
        case OPT_DOUBLE:
            v = json_real(*(const double *)p);
            break;
        case OPT_STRING:
        case OPT_CHOICE:
            v = *(const char *const *)p ? json_string(*(const char *const *)p) : NULL;
            break;
        default:
            break;
        }
        if (v) {
            char name[64];
            snprintf(name, sizeof name, "%.*s", (int)n, key);
            json_object_set_new(obj, name, v);
        }
    }
}

json_t *opt_to_json(const opt_spec *spec, const void *src)
{
    json_t *obj = json_object();
    if (obj)
        to_json(spec->table, src, obj);
    return obj;
}

/* ---- help ------------------------------------------------------------------------------ */

static void help_entry(const char *names, const char *arg, const char *help, const char *def)
{
    char head[96] = "";
    int n = 0;
    for (const char *p = names; *p && n < (int)sizeof head - 8;) {
        size_t len = strcspn(p, "|");
        n += snprintf(head + n, sizeof head - n, "%s%.*s", n ? ", " : "", (int)len, p);
        p += len + (p[len] == '|');
    }
    if (arg)
        snprintf(head + n, sizeof head - n, " %s", arg);
    printf("  %-20s", head);
    if (strlen(head) > 19)
        printf("\n  %-20s", "");
    for (const char *p = help ? help : "";;) {
        size_t len = strcspn(p, "\n");
        printf(" %.*s", (int)len, p);
        p += len;
        if (!*p++)
            break;
        printf("\n  %-20s", "");
    }
    if (def)
        printf(" (default %s)", *def ? def : "none");
    putchar('\n');
}

static int is_arg(const opt_def *d) { return d->type == OPT_ARG || d->type == OPT_ARGS; }

/* The table's lines: the positional arguments under "Arguments:", then the
 * options under "Options:" unless a heading of the table's comes first. */
static void help_table(const opt_def *table, const opt_def **prev)
{
    for (const opt_def *d = table; d->type != OPT_END; d++) {
        if (d->type == OPT_INCLUDE) {
            help_table(d->group, prev);
            continue;
        }
        if (d->type != OPT_SECTION && (!*prev || is_arg(*prev) != is_arg(d)))
            printf("\n%s\n", is_arg(d) ? "Arguments:" : "Options:");
        if (d->type == OPT_SECTION)
            printf("\n%s\n", d->help);
        else
            help_entry(d->names, is_arg(d) ? NULL : d->arg, d->help, d->type == OPT_FLAG ? NULL : d->def);
        *prev = d;
    }
}

void opt_help(const opt_spec *spec)
{
    const opt_def *prev = NULL;
    opt_set_prog(spec->prog, spec->usage);
    print_usage(stdout);
    if (spec->about)
        printf("%s\n", spec->about);
    help_table(spec->table, &prev);
    putchar('\n');
    help_entry("--config", "FILE.json", "options as a JSON object: the long names without --, numbers as\n"
                                        "numbers, flags as true/false (the command line wins)", NULL);
    if (spec->version)
        help_entry("--version", NULL, "print the version", NULL);
    help_entry("-h|--help", NULL, "this text", NULL);
    if (spec->footer)
        printf("\n%s", spec->footer);
}

/* ---- the command line ------------------------------------------------------------------- */

/* The value of --config (the last one given), or NULL; -1 when it has none. */
static int find_config(int argc, char **argv, const char **path)
{
    *path = NULL;
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++) {
        if (!strncmp(argv[i], "--config=", 9))
            *path = argv[i] + 9;
        else if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc)
                return opt_fail("option '--config' needs a value");
            *path = argv[++i];
        }
    }
    return 0;
}

static int wants(int argc, char **argv, const char *a, const char *b)
{
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
        if (!strcmp(argv[i], a) || (b && !strcmp(argv[i], b)))
            return 1;
    return 0;
}

/* The positional arguments (n of them in v) into the table's OPT_ARG and
 * OPT_ARGS rows, in order. */
static int positionals(const opt_spec *spec, const char **v, int n, void *dst)
{
    const opt_def *last = NULL;
    int k = 0;
    for (const opt_def *d = spec->table; d->type != OPT_END; d++) {
        if (d->type != OPT_ARG && d->type != OPT_ARGS)
            continue;
        const int count = d->type == OPT_ARG ? (k < n) : n - k;
        if (count < d->lo)
            return opt_fail("no %s given", d->arg);
        if (d->type == OPT_ARG && count)
            *(const char **)((char *)dst + d->offset) = v[k];
        else if (d->type == OPT_ARGS)
            *(opt_positionals *)((char *)dst + d->offset) = (opt_positionals){v + k, count};
        k += count, last = d;
    }
    if (k == n)
        return 0;
    if (last && last->type == OPT_ARG)
        return opt_fail("more than one %s given ('%s' and '%s')", last->arg, v[k - 1], v[k]);
    return opt_fail("unexpected argument '%s'", v[k]);
}

/* One "--name[=value]" or "-x" at argv[*i]; advances *i past its value. */
static int option(const opt_spec *spec, int argc, char **argv, int *i, void *dst)
{
    const char *arg = argv[*i];
    const char *eq = arg[1] == '-' ? strchr(arg, '=') : NULL;
    const size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    char name[64];
    snprintf(name, sizeof name, "%.*s", (int)(len < sizeof name ? len : sizeof name - 1), arg);
    if (!strcmp(name, "--config")) {
        *i += !eq; /* read before the command line */
        return 0;
    }
    found f = find(spec->table, 0, arg, len, 1);
    if (!f.d)
        return opt_fail("unknown option '%s'", name);
    if (f.d->type == OPT_FLAG) {
        if (eq)
            return opt_fail("option '%s' takes no value", name);
        return set_value(f.d, (char *)dst + f.offset, name, NULL);
    }
    const char *value = eq ? eq + 1 : *i + 1 < argc ? argv[++*i] : NULL;
    if (!value)
        return opt_fail("option '%s' needs a value", name);
    return set_value(f.d, (char *)dst + f.offset, name, value);
}

int opt_parse_args(const opt_spec *spec, int argc, char **argv, void *dst)
{
    opt_set_prog(spec->prog, spec->usage);
    if (wants(argc, argv, "-h", "--help")) {
        opt_help(spec);
        return 0;
    }
    if (spec->version && wants(argc, argv, "--version", NULL)) {
        printf("%s %s\n", spec->prog, spec->version);
        return 0;
    }
    const char *config;
    if (find_config(argc, argv, &config) || (config && load_config(spec, config, dst)))
        return OPT_EXIT_USAGE;
    const char **pos = keep_ptr(malloc(sizeof(char *) * (argc > 0 ? argc : 1)));
    if (!pos)
        return opt_error("out of memory");
    int rc = 0, npos = 0, only_pos = 0;
    for (int i = 1; !rc && i < argc; i++) {
        const char *a = argv[i];
        if (!only_pos && !strcmp(a, "--"))
            only_pos = 1;
        else if (only_pos || a[0] != '-' || !a[1])
            pos[npos++] = a;
        else
            rc = option(spec, argc, argv, &i, dst);
    }
    if (!rc)
        rc = positionals(spec, pos, npos, dst);
    return rc ? OPT_EXIT_USAGE : OPT_GO;
}

int opt_parse(const opt_spec *spec, int argc, char **argv, void *dst)
{
    opt_defaults(spec, dst);
    return opt_parse_args(spec, argc, argv, dst);
}

/* ---- the shared device options ----------------------------------------------------------- */

static int parse_device(void *field, const char *opt, const char *value)
{
    int device = 0;
    if (vapo_device_parse(value, &device))
        return opt_fail("%s: %s", opt, vapo_last_error());
    *(const char **)field = value;
    return 0;
}

#define DEV(field) offsetof(opt_device, field)
const opt_def opt_device_group[] = {
    OPT(OPT_CALL, "--device", "D", DEV(device), 0, 0, "auto",
        "cpu, cuda, cuda:N (GPU N) or auto (CUDA when usable, else the CPU)", .call = parse_device, .nosave = 1),
    OPT(OPT_INT, "--threads", "N", DEV(threads), 0, 4096, "0", "CPU threads (0: all cores)", .nosave = 1),
    OPT_TABLE_END};
