/* libFuzzer harness for the lenient JSON parser (server/json_lenient.c):
 * whatever it accepts must be a value that jansson can write out and read back
 * equal (NaN and the infinities come back as strings, so they round-trip). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_lenient.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_json: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    json_error_t err;
    json_t *v = json_parse_lenient((const char *)data, size, &err);
    if (!v) {
        check(strlen(err.text) > 0, "a refused document has no message");
        return 0;
    }
    char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
    check(text != NULL, "cannot write back a parsed value");
    json_t *again = json_parse_lenient(text, strlen(text), &err);
    check(again != NULL, "cannot parse our own output");
    check(json_equal(v, again), "the round trip changed the value");
    json_decref(again);
    free(text);
    json_decref(v);
    return 0;
}
