/* libFuzzer harness for the PNG decoder (engine/image.c) as /energy uses it:
 * decode with a pixel limit, convert to float in both channel counts. What
 * decodes must survive a round trip: encoding the 8-bit image and decoding it
 * again gives the same pixels. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vapo/image.h"

#define MAX_PIXELS ((size_t)256 * 256) /* /energy's limit is the model's image size */

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_png: %s\n", what);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    vapo_image img = {0};
    if (vapo_png_decode_limited(data, size, MAX_PIXELS, &img)) {
        check(!img.data, "a failed decode left pixels behind");
        return 0;
    }
    check((img.c == 1 || img.c == 3) && img.h > 0 && img.w > 0 && (size_t)img.h * img.w <= MAX_PIXELS,
          "decoded image outside the contract");
    size_t px = (size_t)img.h * img.w;
    float *f = malloc(sizeof(float) * 3 * px);
    check(f != NULL, "out of memory");
    for (int c = 1; c <= 3; c += 2) {
        check(vapo_image_to_float(&img, c, f) == 0, "channel conversion failed");
        for (size_t i = 0; i < (size_t)c * px; i++)
            check(f[i] >= -1.0f && f[i] <= 1.0f, "a pixel outside [-1, 1]");
    }
    free(f);

    unsigned char *png = NULL;
    size_t len = 0;
    vapo_image again = {0};
    check(vapo_png_encode_u8(&img, &png, &len) == 0, "re-encoding a decoded image failed");
    check(vapo_png_decode(png, len, &again) == 0, "decoding our own PNG failed");
    check(again.c == img.c && again.h == img.h && again.w == img.w &&
              !memcmp(again.data, img.data, (size_t)img.c * px),
          "the round trip changed the pixels");
    free(png);
    vapo_image_free(&again);
    vapo_image_free(&img);
    return 0;
}
