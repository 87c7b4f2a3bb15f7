/* libFuzzer harness for base64 (server/b64.c): decoding any text either fails
 * cleanly or gives bytes whose encoding decodes to the same bytes; encoding
 * the input's bytes always decodes back to them. (Empty text is refused by
 * design, an image is never empty, so the round trip starts at one byte.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "b64.h"

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_b64: %s\n", what);
        abort();
    }
}

/* decode(encode(bytes)) == bytes */
static void round_trip(const unsigned char *bytes, size_t len)
{
    char *text = b64_encode(bytes, len);
    check(text != NULL, "encode failed");
    check(strlen(text) == (len + 2) / 3 * 4, "encoded length is not 4 * ceil(n / 3)");
    size_t back_len = 0;
    int oom = 0;
    unsigned char *back = b64_decode(text, strlen(text), &back_len, &oom);
    check(back != NULL, "decoding our own encoding failed");
    check(back_len == len && (len == 0 || !memcmp(back, bytes, len)), "round trip changed the bytes");
    free(back);
    free(text);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    size_t len = 0;
    int oom = 0;
    unsigned char *bytes = b64_decode((const char *)data, size, &len, &oom);
    if (bytes) {
        check(len <= size / 4 * 3 + 2, "decoded more bytes than the text can hold");
        round_trip(bytes, len);
        free(bytes);
    } else {
        check(!oom, "out of memory on a small input");
    }
    if (size > 0)
        round_trip(data, size);
    return 0;
}
