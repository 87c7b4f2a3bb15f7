/* libFuzzer harness for the option parser (common/opt.c): the input is a
 * command line (arguments separated by NUL bytes) whose first argument, when
 * it starts with '{' or '[', is instead a --config JSON document. Whatever
 * the input, the parser either accepts it with every field in its table's
 * range or refuses it with exit status 2; it never crashes or leaks. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "opt.h"

typedef struct {
    const char *arg;
    opt_positionals rest;
    int flag, i;
    long l;
    uint64_t u;
    size_t z;
    double d;
    const char *s, *c;
    opt_device dev;
    int calls;
} options;

static int count(void *field, const char *opt, const char *value)
{
    (void)opt, (void)value;
    ++*(int *)field;
    return 0;
}

#define F(field) offsetof(options, field)
static const opt_def table[] = {
    OPT(OPT_ARG, "ARG", "arg", F(arg), 0, 1, NULL, "an optional argument"),
    OPT(OPT_ARGS, "REST...", "rest", F(rest), 0, 0, NULL, "the others"),
    OPT(OPT_FLAG, "-f|--flag", NULL, F(flag), 0, 0, NULL, "a flag"),
    OPT(OPT_INT, "-i|--int", "N", F(i), -5, 5, "1", "an int"),
    OPT(OPT_LONG, "--long", "N", F(l), 0, 1e12, "0", "a long"),
    OPT(OPT_U64, "--u64", "N", F(u), 0, 0, "7", "a u64"),
    OPT(OPT_SIZE, "--size", "N", F(z), 1, 1 << 20, "1", "a size"),
    OPT(OPT_DOUBLE, "--double", "X", F(d), -1, 1, "0.5", "a double"),
    OPT(OPT_STRING, "--string", "S", F(s), 0, 0, "s", "a string"),
    OPT(OPT_CHOICE, "--choice", "C", F(c), 0, 0, "a", "a choice", .choices = "a|bb|ccc"),
    OPT(OPT_CALL, "--call", "V", F(calls), 0, 0, NULL, "counted", .call = count),
    OPT_HEADING("device:"),
    OPT_GROUP(F(dev), opt_device_group),
    OPT_TABLE_END};

static const opt_spec spec = {"fuzz", "[options] [ARG [REST...]]", "fuzzing", table};

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_opt: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char *text = malloc(size + 1), *argv[66] = {"fuzz"}, path[64] = "";
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    int argc = 1;
    for (size_t i = 0; i <= size && argc < 64; i += strlen(text + i) + 1)
        argv[argc++] = text + i;
    if (argc > 1 && (argv[1][0] == '{' || argv[1][0] == '[')) { /* a --config document */
        snprintf(path, sizeof path, "/tmp/fuzz_opt.%d.json", (int)getpid());
        FILE *f = fopen(path, "w");
        if (f) {
            fputs(argv[1], f);
            fclose(f);
        }
        argv[1] = "--config", argv[argc++] = path;
    }
    argv[argc] = NULL;
    options o = {0};
    FILE *out = stdout;
    stdout = fopen("/dev/null", "w"); /* --help */
    int rc = opt_parse(&spec, argc, argv, &o);
    fclose(stdout);
    stdout = out;
    check(rc == OPT_GO || rc == 0 || rc == OPT_EXIT_USAGE, "an exit status other than go, 0 or 2");
    if (rc == OPT_GO) {
        check(o.i >= -5 && o.i <= 5 && o.l >= 0 && o.l <= 1000000000000L, "an integer out of its range");
        check(o.z >= 1 && o.z <= 1 << 20 && isfinite(o.d) && o.d >= -1 && o.d <= 1, "a number out of its range");
        check(o.s && o.c && (!strcmp(o.c, "a") || !strcmp(o.c, "bb") || !strcmp(o.c, "ccc")), "a bad choice");
        check(o.dev.device && o.dev.threads >= 0, "a bad device");
        check(o.rest.n == 0 || (o.arg && o.rest.n < argc - 1), "positional arguments out of order");
        json_decref(opt_to_json(&spec, &o));
    }
    opt_release();
    if (*path)
        unlink(path);
    free(text);
    return 0;
}
