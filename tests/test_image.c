/* Tests for engine/image.c: PNG round trips and decoding of every PNG flavour
 * (made here with libpng), hostile input, grids, crop and antialiased resize. */
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "vapo/error.h"
#include "vapo/image.h"
#include "testutil.h"


/* Deterministic test bytes (no RNG dependency in a test of image code). */
static uint32_t lcg_state = 12345;
static unsigned lcg(void)
{
    lcg_state = lcg_state * 1664525u + 1013904223u;
    return lcg_state >> 8;
}

/* ---- a PNG writer independent of the code under test ----------------------------------- */

typedef struct {
    unsigned char *buf;
    size_t len, cap;
} membuf;

static void mem_write(png_structp png, png_bytep data, size_t n)
{
    membuf *m = png_get_io_ptr(png);
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->buf = realloc(m->buf, m->cap);
        if (!m->buf)
            abort();
    }
    memcpy(m->buf + m->len, data, n);
    m->len += n;
}
static void mem_flush(png_structp png) { (void)png; }

static int with_text; /* make_png adds tEXt and zTXt chunks (skipped by the decoder) */

/* Encodes raw rows (rowbytes each, already in PNG sample order, 16-bit
 * big-endian) with the given IHDR fields. Optional palette / tRNS. */
static membuf make_png(int w, int h, int depth, int color, int interlace, const unsigned char *raw,
                       size_t rowbytes, const png_color *pal, int npal, const png_byte *trns,
                       int ntrns, const png_color_16 *trns_color)
{
    membuf m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png)))
        abort();
    png_set_write_fn(png, &m, mem_write, mem_flush);
    png_set_IHDR(png, info, w, h, depth, color, interlace, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (pal)
        png_set_PLTE(png, info, pal, npal);
    if (trns || trns_color)
        png_set_tRNS(png, info, trns, ntrns, trns_color);
    if (with_text) {
        png_text t[2] = {{.compression = PNG_TEXT_COMPRESSION_NONE, .key = "Comment",
                          .text = "plain"},
                         {.compression = PNG_TEXT_COMPRESSION_zTXt, .key = "Description",
                          .text = "compressed text"}};
        png_set_text(png, info, t, 2);
    }
    png_write_info(png, info);
    png_bytep *rows = malloc(sizeof(png_bytep) * h);
    for (int y = 0; y < h; y++)
        rows[y] = (png_bytep)raw + (size_t)y * rowbytes;
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    return m;
}

/* ---- round trips -------------------------------------------------------------------------- */

static void test_mapping(void)
{
    for (int s = 0; s < 256; s++) {
        unsigned char u = (unsigned char)s, back;
        float f;
        vapo_u8_to_float(&u, 1, 1, 1, 1, &f);
        vapo_float_to_u8(&f, 1, &back);
        CHECK(back == s, "8-bit %d -> %g -> %d", s, f, back);
    }
    float odd[] = {-1.0f, 1.0f, -5.0f, 7.0f, NAN, INFINITY, -INFINITY, 0.0f};
    unsigned char want[] = {0, 255, 0, 255, 0, 255, 0, 128}, got[8];
    vapo_float_to_u8(odd, 8, got);
    for (int i = 0; i < 8; i++)
        CHECK(got[i] == want[i], "float %g -> %d, want %d", odd[i], got[i], want[i]);
}

static void test_roundtrip(void)
{
    int sizes[][2] = {{1, 1}, {7, 5}, {13, 3}, {2, 31}, {64, 17}};
    for (int c = 1; c <= 3; c += 2)
        for (int s = 0; s < 5; s++) {
            int w = sizes[s][0], h = sizes[s][1];
            size_t n = (size_t)c * h * w;
            unsigned char *u = malloc(n);
            float *f = malloc(sizeof(float) * n);
            for (size_t i = 0; i < n; i++)
                u[i] = (unsigned char)lcg();
            vapo_u8_to_float(u, c, h, w, c, f);
            unsigned char *png;
            size_t len;
            int rc = vapo_png_encode(f, c, h, w, &png, &len);
            CHECK(rc == 0, "encode %dx%dx%d: %s", c, h, w, vapo_last_error());
            vapo_image img;
            rc = vapo_png_decode(png, len, &img);
            CHECK(rc == 0, "decode %dx%dx%d: %s", c, h, w, vapo_last_error());
            if (!rc) {
                CHECK(img.c == c && img.h == h && img.w == w, "shape %dx%dx%d, want %dx%dx%d",
                      img.c, img.h, img.w, c, h, w);
                CHECK(memcmp(img.data, u, n) == 0, "pixels differ after round trip %dx%dx%d", c,
                      h, w);
                /* and the 8-bit encoder gives the same file */
                unsigned char *png2;
                size_t len2;
                CHECK(vapo_png_encode_u8(&img, &png2, &len2) == 0, "encode_u8");
                CHECK(len2 == len && memcmp(png, png2, len) == 0, "u8 and float encoders differ");
                free(png2);
            }
            vapo_image_free(&img);
            free(png);
            free(u);
            free(f);
        }
    /* bad shapes are refused */
    float px[4] = {0};
    unsigned char *png;
    size_t len;
    CHECK(vapo_png_encode(px, 2, 1, 2, &png, &len) < 0, "2 channels accepted");
    CHECK(vapo_png_encode(px, 1, 0, 2, &png, &len) < 0, "height 0 accepted");
}

/* ---- decoding of other PNG flavours ------------------------------------------------------------ */

static int decode_ok(membuf m, vapo_image *img, const char *what)
{
    int rc = vapo_png_decode(m.buf, m.len, img);
    CHECK(rc == 0, "%s: %s", what, vapo_last_error());
    free(m.buf);
    return rc == 0;
}

static void test_flavours(void)
{
    enum { W = 11, H = 9 };
    unsigned char raw[H * W * 8];
    vapo_image img;

    /* Palette with transparency: index i -> colour (10i, 20i, 30i), alpha 255
     * except index 1 (alpha 0) and 2 (alpha 128). Composited over black. */
    png_color pal[8];
    for (int i = 0; i < 8; i++)
        pal[i] = (png_color){(png_byte)(10 * i), (png_byte)(20 * i), (png_byte)(30 * i)};
    png_byte trns[3] = {255, 0, 128};
    for (int i = 0; i < H * W; i++)
        raw[i] = (unsigned char)(i % 8);
    if (decode_ok(make_png(W, H, 8, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE, raw, W, pal, 8,
                           trns, 3, NULL), &img, "palette")) {
        CHECK(img.c == 3 && img.h == H && img.w == W, "palette shape %d %d %d", img.c, img.h, img.w);
        int bad = 0;
        for (int i = 0; i < H * W; i++) {
            int p = i % 8, a = p < 3 ? trns[p] : 255;
            int want[3] = {pal[p].red, pal[p].green, pal[p].blue};
            for (int k = 0; k < 3; k++)
                bad += img.data[k * H * W + i] != (want[k] * a + 127) / 255;
        }
        CHECK(bad == 0, "palette: %d samples differ", bad);
        vapo_image_free(&img);
    }

    /* 4-bit palette (packed samples) */
    unsigned char packed[H * 6];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < 6; x++)
            packed[y * 6 + x] = (unsigned char)(((2 * x) % 8) << 4 | ((2 * x + 1) % 8));
    if (decode_ok(make_png(W, H, 4, PNG_COLOR_TYPE_PALETTE, PNG_INTERLACE_NONE, packed, 6, pal, 8,
                           NULL, 0, NULL), &img, "4-bit palette")) {
        int bad = 0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                bad += img.data[H * W + y * W + x] != pal[x % 8].green;
        CHECK(img.c == 3 && bad == 0, "4-bit palette: c=%d, %d samples differ", img.c, bad);
        vapo_image_free(&img);
    }

    /* 16-bit RGB: sample v16 = 257 * v8 + delta scales back to v8 (rounded). */
    for (int i = 0; i < H * W * 3; i++) {
        unsigned v = 257u * (unsigned)(i % 251) + (i % 3 == 0 ? 100 : 0);
        raw[2 * i] = (unsigned char)(v >> 8);
        raw[2 * i + 1] = (unsigned char)v;
    }
    if (decode_ok(make_png(W, H, 16, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, raw, W * 6, NULL, 0,
                           NULL, 0, NULL), &img, "16-bit RGB")) {
        int bad = 0;
        for (int i = 0; i < H * W; i++)
            for (int k = 0; k < 3; k++)
                bad += img.data[k * H * W + i] != (i * 3 + k) % 251;
        CHECK(img.c == 3 && bad == 0, "16-bit RGB: c=%d, %d samples differ", img.c, bad);
        vapo_image_free(&img);
    }

    /* 16-bit gray + alpha: full alpha keeps the value, zero alpha gives black. */
    for (int i = 0; i < H * W; i++) {
        unsigned v = 257u * (unsigned)(i % 256), a = (i % 2) ? 65535u : 0u;
        raw[4 * i] = (unsigned char)(v >> 8);
        raw[4 * i + 1] = (unsigned char)v;
        raw[4 * i + 2] = (unsigned char)(a >> 8);
        raw[4 * i + 3] = (unsigned char)a;
    }
    if (decode_ok(make_png(W, H, 16, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_INTERLACE_NONE, raw, W * 4,
                           NULL, 0, NULL, 0, NULL), &img, "16-bit gray+alpha")) {
        int bad = 0;
        for (int i = 0; i < H * W; i++)
            bad += img.data[i] != ((i % 2) ? i % 256 : 0);
        CHECK(img.c == 1 && bad == 0, "gray+alpha: c=%d, %d samples differ", img.c, bad);
        vapo_image_free(&img);
    }

    /* RGBA 8-bit, half transparent */
    for (int i = 0; i < H * W; i++) {
        raw[4 * i] = 200;
        raw[4 * i + 1] = 100;
        raw[4 * i + 2] = 50;
        raw[4 * i + 3] = 128;
    }
    if (decode_ok(make_png(W, H, 8, PNG_COLOR_TYPE_RGBA, PNG_INTERLACE_NONE, raw, W * 4, NULL, 0,
                           NULL, 0, NULL), &img, "RGBA")) {
        CHECK(img.c == 3 && img.data[0] == 100 && img.data[H * W] == 50 &&
                  img.data[2 * H * W] == 25,
              "RGBA over black: c=%d %d %d %d", img.c, img.data[0], img.data[H * W],
              img.data[2 * H * W]);
        vapo_image_free(&img);
    }

    /* 1-bit gray: 0 -> 0, 1 -> 255 */
    unsigned char bits[H * 2];
    for (int i = 0; i < H * 2; i++)
        bits[i] = 0xA5;
    if (decode_ok(make_png(W, H, 1, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, bits, 2, NULL, 0,
                           NULL, 0, NULL), &img, "1-bit gray")) {
        int bad = 0;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                int bit = (bits[y * 2 + x / 8] >> (7 - x % 8)) & 1;
                bad += img.data[y * W + x] != (bit ? 255 : 0);
            }
        CHECK(img.c == 1 && bad == 0, "1-bit gray: %d samples differ", bad);
        vapo_image_free(&img);
    }

    /* Gray with a tRNS colour key: that value becomes black, others stay. */
    for (int i = 0; i < H * W; i++)
        raw[i] = (unsigned char)(i % 3 ? 77 : 9);
    png_color_16 key = {.gray = 9};
    if (decode_ok(make_png(W, H, 8, PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE, raw, W, NULL, 0, NULL,
                           0, &key), &img, "gray tRNS")) {
        int bad = 0;
        for (int i = 0; i < H * W; i++)
            bad += img.data[i] != (i % 3 ? 77 : 0);
        CHECK(img.c == 1 && bad == 0, "gray tRNS: %d samples differ", bad);
        vapo_image_free(&img);
    }

    /* Adam7-interlaced RGB with an odd size */
    for (int i = 0; i < H * W * 3; i++)
        raw[i] = (unsigned char)lcg();
    if (decode_ok(make_png(W, H, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_ADAM7, raw, W * 3, NULL, 0,
                           NULL, 0, NULL), &img, "interlaced")) {
        int bad = 0;
        for (int i = 0; i < H * W; i++)
            for (int k = 0; k < 3; k++)
                bad += img.data[k * H * W + i] != raw[i * 3 + k];
        CHECK(img.c == 3 && bad == 0, "interlaced: %d samples differ", bad);
        vapo_image_free(&img);
    }

    /* text chunks are ignored */
    with_text = 1;
    if (decode_ok(make_png(W, H, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, raw, W * 3, NULL, 0,
                           NULL, 0, NULL), &img, "with text chunks")) {
        CHECK(img.c == 3 && img.data[0] == raw[0], "with text: c=%d", img.c);
        vapo_image_free(&img);
    }
    with_text = 0;
}

/* ---- hostile input -------------------------------------------------------------------------- */

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static void test_hostile(void)
{
    vapo_image img;
    /* A valid file cut at every length fails cleanly (ASan catches leaks and overruns). */
    float px[5 * 7 * 3];
    for (int i = 0; i < 5 * 7 * 3; i++)
        px[i] = (float)(lcg() % 200) / 100.0f - 1.0f;
    unsigned char *png;
    size_t len;
    CHECK(vapo_png_encode(px, 3, 5, 7, &png, &len) == 0, "encode: %s", vapo_last_error());
    int ok_cuts = 0;
    for (size_t cut = 0; cut < len; cut++) {
        unsigned char *copy = malloc(cut ? cut : 1); /* exact size so ASan sees overreads */
        memcpy(copy, png, cut);
        if (vapo_png_decode(copy, cut, &img) == 0) {
            ok_cuts++;
            vapo_image_free(&img);
        } else {
            CHECK(vapo_last_error()[0] != '\0', "no message for cut %zu", cut);
        }
        free(copy);
    }
    CHECK(ok_cuts == 0, "%d truncated files decoded", ok_cuts);

    /* Flipped bytes: any outcome but a crash or leak. */
    for (int trial = 0; trial < 2000; trial++) {
        unsigned char *copy = malloc(len);
        memcpy(copy, png, len);
        for (int k = 0; k < 1 + trial % 4; k++)
            copy[8 + lcg() % (len - 8)] ^= (unsigned char)(1 + lcg() % 255);
        if (vapo_png_decode(copy, len, &img) == 0) {
            CHECK(img.c == 1 || img.c == 3, "odd channels %d", img.c);
            vapo_image_free(&img);
        }
        free(copy);
    }
    free(png);

    /* Garbage of all short lengths, with and without the PNG signature. */
    unsigned char junk[300];
    for (size_t n = 0; n < sizeof junk; n++) {
        for (size_t i = 0; i < n; i++)
            junk[i] = (unsigned char)lcg();
        if (n >= 8 && n % 2)
            memcpy(junk, "\x89PNG\r\n\x1a\n", 8);
        CHECK(vapo_png_decode(junk, n, &img) < 0, "garbage of %zu bytes decoded", n);
    }
    CHECK(vapo_png_decode(NULL, 0, &img) < 0, "NULL decoded");
    CHECK(strstr(vapo_last_error(), "not a PNG") != NULL, "message: %s", vapo_last_error());

    /* A header declaring 100000 x 100000 is refused before any allocation. */
    unsigned char big[8 + 25 + 12];
    memcpy(big, "\x89PNG\r\n\x1a\n", 8);
    put_be32(big + 8, 13);
    memcpy(big + 12, "IHDR", 4);
    put_be32(big + 16, 100000);
    put_be32(big + 20, 100000);
    big[24] = 8;
    big[25] = PNG_COLOR_TYPE_RGB;
    big[26] = big[27] = big[28] = 0;
    put_be32(big + 29, (uint32_t)crc32(0, big + 12, 17));
    put_be32(big + 33, 0);
    memcpy(big + 37, "IDAT", 4); /* an (empty) IDAT ends the header part */
    put_be32(big + 41, (uint32_t)crc32(0, (const unsigned char *)"IDAT", 4));
    CHECK(vapo_png_decode(big, sizeof big, &img) < 0, "gigapixel header accepted");
    CHECK(strstr(vapo_last_error(), "limit") != NULL, "message: %s", vapo_last_error());

    /* The limit is configurable. */
    float flat[40 * 30] = {0};
    CHECK(vapo_png_encode(flat, 1, 30, 40, &png, &len) == 0, "encode");
    CHECK(vapo_png_decode_limited(png, len, 1000, &img) < 0, "1200 pixels under a limit of 1000");
    CHECK(strstr(vapo_last_error(), "1200 pixels") != NULL, "message: %s", vapo_last_error());
    CHECK(vapo_png_decode_limited(png, len, 1200, &img) == 0, "at the limit: %s",
          vapo_last_error());
    vapo_image_free(&img);
    free(png);

    CHECK(vapo_png_read_file("/nonexistent/x.png", &img) < 0, "missing file read");
    CHECK(strstr(vapo_last_error(), "/nonexistent/x.png") != NULL, "message: %s",
          vapo_last_error());
}

/* ---- grid ----------------------------------------------------------------------------------- */

static void test_grid(void)
{
    enum { N = 5, C = 1, Hh = 2, Ww = 3, PAD = 1 };
    float tiles[N * C * Hh * Ww];
    for (int t = 0; t < N; t++)
        for (int i = 0; i < Hh * Ww; i++)
            tiles[t * Hh * Ww + i] = (float)(t * 10 + i) / 100.0f;
    int gh, gw;
    CHECK(vapo_image_grid_size(N, Hh, Ww, 3, PAD, &gh, &gw) == 0 && gh == 5 && gw == 11,
          "grid size %dx%d, want 11x5", gw, gh);
    float g[5 * 11];
    CHECK(vapo_image_grid(tiles, N, C, Hh, Ww, 3, PAD, -1.0f, g) == 0, "grid");
    int bad = 0;
    for (int y = 0; y < gh; y++)
        for (int x = 0; x < gw; x++) {
            int ty = y / (Hh + PAD), tx = x / (Ww + PAD), iy = y % (Hh + PAD), ix = x % (Ww + PAD);
            int t = ty * 3 + tx;
            float want = (iy < Hh && ix < Ww && t < N) ? tiles[t * Hh * Ww + iy * Ww + ix] : -1.0f;
            bad += g[y * gw + x] != want;
        }
    CHECK(bad == 0, "grid: %d pixels misplaced", bad);

    /* cols <= 0 -> ceil(sqrt(n)); cols > n -> n (a strip) */
    CHECK(vapo_image_grid_size(5, 2, 3, 0, 1, &gh, &gw) == 0 && gw == 11, "auto cols gw=%d", gw);
    CHECK(vapo_image_grid_size(3, 2, 3, 10, 2, &gh, &gw) == 0 && gh == 2 && gw == 13,
          "strip %dx%d, want 13x2", gw, gh);
    CHECK(vapo_image_grid_size(0, 2, 3, 1, 0, &gh, &gw) < 0, "n = 0 accepted");

    /* RGB, 8-bit output */
    float rgb[2 * 3 * 2 * 2];
    for (int i = 0; i < 24; i++)
        rgb[i] = i < 12 ? 1.0f : -1.0f;
    vapo_image u;
    CHECK(vapo_image_grid_u8(rgb, 2, 3, 2, 2, 2, 1, 0.0f, &u) == 0, "grid u8");
    CHECK(u.c == 3 && u.h == 2 && u.w == 5, "grid u8 shape %d %d %d", u.c, u.h, u.w);
    CHECK(u.data[0] == 255 && u.data[2] == 128 && u.data[4] == 0 && u.data[2 * 10 + 3] == 0,
          "grid u8 values %d %d %d", u.data[0], u.data[2], u.data[4]);
    vapo_image_free(&u);
}

/* ---- crop, resize, channels ------------------------------------------------------------------- */

static void test_crop_resize(void)
{
    /* crop: 5 wide, 3 high -> the middle 3x3 */
    unsigned char in[15], out[9];
    for (int i = 0; i < 15; i++)
        in[i] = (unsigned char)i;
    CHECK(vapo_center_crop_u8(in, 1, 3, 5, 0, out) == 0, "crop");
    CHECK(out[0] == 1 && out[2] == 3 && out[8] == 13, "crop values %d %d %d", out[0], out[2],
          out[8]);
    CHECK(vapo_center_crop_u8(in, 1, 3, 5, 4, out) < 0, "crop larger than the image accepted");

    /* constant stays constant, in both directions and odd factors */
    enum { H = 48, W = 64 };
    static unsigned char img[3 * H * W], small[3 * 100 * 100];
    for (int k = 0; k < 3; k++)
        memset(img + k * H * W, 40 + 70 * k, H * W);
    int sizes[][2] = {{13, 17}, {48, 64}, {7, 3}, {100, 90}, {1, 1}};
    for (int s = 0; s < 5; s++) {
        int oh = sizes[s][0], ow = sizes[s][1], bad = 0;
        CHECK(vapo_resize_u8(img, 3, H, W, oh, ow, small) == 0, "resize: %s", vapo_last_error());
        for (int k = 0; k < 3; k++)
            for (int i = 0; i < oh * ow; i++)
                bad += small[k * oh * ow + i] != 40 + 70 * k;
        CHECK(bad == 0, "constant image %dx%d -> %dx%d: %d samples changed", W, H, ow, oh, bad);
    }

    /* identity size is exact */
    for (int i = 0; i < H * W; i++)
        img[i] = (unsigned char)lcg();
    CHECK(vapo_resize_u8(img, 1, H, W, H, W, small) == 0 && memcmp(img, small, H * W) == 0,
          "same-size resize changed the image");

    /* 1-pixel checkerboard 64x64 -> 16x16: antialiasing gives grey; point
     * sampling would give all 0 or all 255 (aliasing). */
    static unsigned char cb[64 * 64];
    for (int y = 0; y < 64; y++)
        for (int x = 0; x < 64; x++)
            cb[y * 64 + x] = (x + y) % 2 ? 255 : 0;
    CHECK(vapo_resize_u8(cb, 1, 64, 64, 16, 16, small) == 0, "resize checkerboard");
    int lo = 255, hi = 0, inner_bad = 0;
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 16; x++) {
            int v = small[y * 16 + x];
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
            if (y > 0 && y < 15 && x > 0 && x < 15)
                inner_bad += v < 126 || v > 129;
        }
    CHECK(lo >= 110 && hi <= 145, "checkerboard range %d..%d, want grey", lo, hi);
    CHECK(inner_bad == 0, "%d interior samples are not 127/128", inner_bad);

    /* float version: a horizontal ramp stays a ramp (monotone, mean kept) */
    float ramp[8 * 32], rs[4 * 8];
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 32; x++)
            ramp[y * 32 + x] = (float)x;
    CHECK(vapo_resize_f32(ramp, 1, 8, 32, 4, 8, rs) == 0, "resize f32");
    int mono = 1;
    for (int x = 1; x < 8; x++)
        mono &= rs[x] > rs[x - 1];
    CHECK(mono && fabsf(rs[3] + rs[4] - 31.0f) < 1e-3f, "ramp: %g %g", rs[3], rs[4]);
    CHECK(vapo_resize_f32(ramp, 1, 8, 32, 0, 8, rs) < 0, "zero size accepted");
}

static void test_channels(void)
{
    unsigned char rgb[3 * 2] = {255, 0, 0, 255, 0, 0}; /* pixel 0 red, pixel 1 green */
    unsigned char gray[2], back[6];
    CHECK(vapo_u8_convert_channels(rgb, 3, 1, 2, 1, gray) == 0, "rgb->gray");
    CHECK(gray[0] == 76 && gray[1] == 150, "luma red %d (76), green %d (150)", gray[0], gray[1]);
    CHECK(vapo_u8_convert_channels(gray, 1, 1, 2, 3, back) == 0, "gray->rgb");
    CHECK(back[0] == 76 && back[2] == 76 && back[4] == 76 && back[5] == 150, "replicate");
    float f[6];
    CHECK(vapo_u8_to_float(gray, 1, 1, 2, 3, f) == 0, "to float");
    CHECK(fabsf(f[4] - (76 / 127.5f - 1)) < 1e-6f, "float %g", f[4]);
    CHECK(vapo_u8_to_float(gray, 1, 1, 2, 2, f) < 0, "2 channels accepted");
}

int main(void)
{
    test_mapping();
    test_roundtrip();
    test_flavours();
    test_hostile();
    test_grid();
    test_crop_resize();
    test_channels();
    return test_finish("test_image");
}
