#include "vapo/image.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vapo/error.h"

void vapo_image_free(vapo_image *img)
{
    if (!img)
        return;
    free(img->data);
    memset(img, 0, sizeof *img);
}

/* a*b*c without wrapping; 0 on overflow (callers reject 0-sized images first). */
static size_t mul3(size_t a, size_t b, size_t c)
{
    if (b && a > SIZE_MAX / b)
        return 0;
    size_t ab = a * b;
    if (c && ab > SIZE_MAX / c)
        return 0;
    return ab * c;
}

static int check_shape(const char *what, int c, int h, int w)
{
    if (c != 1 && c != 3)
        return vapo_fail("%s: %d channels (want 1 or 3)", what, c);
    if (h <= 0 || w <= 0)
        return vapo_fail("%s: bad size %dx%d", what, w, h);
    return 0;
}

/* ---- 8-bit <-> float --------------------------------------------------------------- */

static unsigned char float_to_u8(float v)
{
    float x = (v + 1.0f) * 127.5f;
    if (!(x > 0.0f)) /* also NaN */
        return 0;
    if (x >= 255.0f)
        return 255;
    return (unsigned char)(x + 0.5f);
}

void vapo_float_to_u8(const float *in, size_t n, unsigned char *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = float_to_u8(in[i]);
}

int vapo_u8_convert_channels(const unsigned char *in, int c_in, int h, int w, int c_out,
                             unsigned char *out)
{
    if (check_shape("channel conversion", c_in, h, w) ||
        check_shape("channel conversion", c_out, h, w))
        return -1;
    size_t plane = (size_t)h * w;
    if (c_in == c_out) {
        memcpy(out, in, plane * c_in);
    } else if (c_in == 1) {
        for (int k = 0; k < 3; k++)
            memcpy(out + k * plane, in, plane);
    } else {
        const unsigned char *r = in, *g = in + plane, *b = in + 2 * plane;
        for (size_t i = 0; i < plane; i++)
            out[i] = (unsigned char)((19595u * r[i] + 38470u * g[i] + 7471u * b[i] + 32768u) >> 16);
    }
    return 0;
}

int vapo_u8_to_float(const unsigned char *in, int c_in, int h, int w, int c_out, float *out)
{
    if (c_out == 0)
        c_out = c_in;
    if (check_shape("8-bit to float", c_in, h, w) || check_shape("8-bit to float", c_out, h, w))
        return -1;
    size_t plane = (size_t)h * w;
    if (c_in == c_out) {
        for (size_t i = 0; i < plane * c_in; i++)
            out[i] = in[i] / 127.5f - 1.0f;
    } else if (c_in == 1) {
        for (int k = 0; k < 3; k++)
            for (size_t i = 0; i < plane; i++)
                out[k * plane + i] = in[i] / 127.5f - 1.0f;
    } else {
        const unsigned char *r = in, *g = in + plane, *b = in + 2 * plane;
        for (size_t i = 0; i < plane; i++) {
            unsigned y = (19595u * r[i] + 38470u * g[i] + 7471u * b[i] + 32768u) >> 16;
            out[i] = y / 127.5f - 1.0f;
        }
    }
    return 0;
}

int vapo_image_to_float(const vapo_image *img, int c_out, float *out)
{
    return vapo_u8_to_float(img->data, img->c, img->h, img->w, c_out, out);
}

/* ---- PNG decode ----------------------------------------------------------------------- */

/* libpng reports errors by longjmp. All state that must survive the jump
 * lives in this struct, owned by the caller of the function that calls
 * setjmp, so no local of that function is read after a jump. */
typedef struct {
    const unsigned char *buf;
    size_t len, pos;
    png_structp png;
    png_infop info;
    unsigned char *pix;  /* interleaved 8-bit rows as libpng delivers them */
    png_bytep *rows;
    char msg[200];
} png_dec;

static void png_err_fn(png_structp png, png_const_charp msg)
{
    char *dst = png_get_error_ptr(png);
    snprintf(dst, 200, "%s", msg);
    png_longjmp(png, 1);
}

static void png_warn_fn(png_structp png, png_const_charp msg)
{
    (void)png; /* warnings (bad ancillary CRCs, odd chunks) are not errors: stay quiet */
    (void)msg;
}

static void png_read_mem(png_structp png, png_bytep data, size_t n)
{
    png_dec *d = png_get_io_ptr(png);
    if (n > d->len - d->pos)
        png_error(png, "truncated PNG data");
    memcpy(data, d->buf + d->pos, n);
    d->pos += n;
}

/* Runs libpng up to the decoded interleaved pixels in d->pix. Fills *c_raw
 * (1..4 channels after expansion), *h, *w. */
static int png_decode_run(png_dec *d, size_t max_pixels, int *c_raw, int *h, int *w)
{
    d->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, d->msg, png_err_fn, png_warn_fn);
    if (!d->png)
        return vapo_fail("PNG: out of memory");
    d->info = png_create_info_struct(d->png);
    if (!d->info)
        return vapo_fail("PNG: out of memory");
    if (setjmp(png_jmpbuf(d->png)))
        return vapo_fail("PNG: %s", d->msg);

    png_set_read_fn(d->png, d, png_read_mem);
    /* Only pixels matter here: skip the ancillary chunks that decompress or
     * allocate (text, ICC profiles, palettes suggestions), and cap what any
     * other chunk may allocate, so hostile metadata costs nothing. */
    static const png_byte skipped[] = "iCCP\0iTXt\0tEXt\0zTXt\0sPLT\0eXIf";
    png_set_keep_unknown_chunks(d->png, PNG_HANDLE_CHUNK_NEVER, skipped, 6);
    png_set_chunk_malloc_max(d->png, (png_alloc_size_t)8 << 20);
    png_read_info(d->png, d->info);
    png_uint_32 pw = png_get_image_width(d->png, d->info);
    png_uint_32 ph = png_get_image_height(d->png, d->info);
    if ((uint64_t)pw * ph > max_pixels)
        return vapo_fail("PNG: image is %ux%u = %llu pixels, above the limit of %zu pixels",
                         (unsigned)pw, (unsigned)ph, (unsigned long long)pw * ph, max_pixels);

    /* Palette -> RGB, gray < 8 bit -> 8 bit, tRNS -> alpha, 16 -> 8 bit (rounded). */
    png_set_expand(d->png);
    png_set_scale_16(d->png);
    png_set_interlace_handling(d->png);
    png_read_update_info(d->png, d->info);

    int ch = png_get_channels(d->png, d->info);
    size_t rowbytes = png_get_rowbytes(d->png, d->info);
    if (png_get_bit_depth(d->png, d->info) != 8 || ch < 1 || ch > 4 || rowbytes != (size_t)pw * ch)
        return vapo_fail("PNG: unexpected layout after expansion (%d channels, %zu bytes/row)",
                         ch, rowbytes);
    size_t total = mul3(rowbytes, ph, 1);
    if (!total)
        return vapo_fail("PNG: image too large");
    d->pix = malloc(total);
    d->rows = malloc(sizeof(png_bytep) * ph);
    if (!d->pix || !d->rows)
        return vapo_fail("PNG: out of memory for %ux%u image", (unsigned)pw, (unsigned)ph);
    for (png_uint_32 y = 0; y < ph; y++)
        d->rows[y] = d->pix + (size_t)y * rowbytes;
    png_read_image(d->png, d->rows);
    /* Reading to IEND rejects truncated files whose image data happens to be complete. */
    png_read_end(d->png, NULL);

    *c_raw = ch;
    *h = (int)ph;
    *w = (int)pw;
    return 0;
}

int vapo_png_decode_limited(const unsigned char *buf, size_t len, size_t max_pixels,
                            vapo_image *out)
{
    memset(out, 0, sizeof *out);
    if (!buf || len < 8 || png_sig_cmp(buf, 0, 8))
        return vapo_fail("PNG: not a PNG file (bad signature)");

    png_dec d = {.buf = buf, .len = len};
    int ch = 0, h = 0, w = 0;
    int rc = png_decode_run(&d, max_pixels, &ch, &h, &w);
    png_destroy_read_struct(&d.png, d.info ? &d.info : NULL, NULL);
    free(d.rows);
    if (rc) {
        free(d.pix);
        return rc;
    }

    /* Interleaved (with or without alpha) -> planar, alpha composited over black. */
    int c = ch <= 2 ? 1 : 3;
    int has_alpha = ch == 2 || ch == 4;
    size_t plane = (size_t)h * w;
    unsigned char *data = malloc(plane * c);
    if (!data) {
        free(d.pix);
        return vapo_fail("PNG: out of memory for %dx%d image", w, h);
    }
    for (size_t i = 0; i < plane; i++) {
        const unsigned char *px = d.pix + i * ch;
        unsigned a = has_alpha ? px[ch - 1] : 255;
        for (int k = 0; k < c; k++)
            data[k * plane + i] = has_alpha ? (unsigned char)((px[k] * a + 127) / 255) : px[k];
    }
    free(d.pix);
    out->c = c;
    out->h = h;
    out->w = w;
    out->data = data;
    return 0;
}

int vapo_png_decode(const unsigned char *buf, size_t len, vapo_image *out)
{
    return vapo_png_decode_limited(buf, len, VAPO_PNG_MAX_PIXELS_DEFAULT, out);
}

/* Reads a whole file; *buf malloc'd. */
static int read_file(const char *path, unsigned char **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return vapo_fail("%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    unsigned char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap)
            break;
        unsigned char *nb = cap <= SIZE_MAX / 2 ? realloc(b, cap * 2) : NULL;
        if (!nb) {
            free(b);
            b = NULL;
            break;
        }
        b = nb;
        cap *= 2;
    }
    int err = ferror(f);
    fclose(f);
    if (!b)
        return vapo_fail("%s: out of memory reading file", path);
    if (err) {
        free(b);
        return vapo_fail("%s: read error", path);
    }
    *buf = b;
    *len = n;
    return 0;
}

int vapo_png_read_file_limited(const char *path, size_t max_pixels, vapo_image *out)
{
    memset(out, 0, sizeof *out);
    unsigned char *buf;
    size_t len;
    if (read_file(path, &buf, &len))
        return -1;
    int rc = vapo_png_decode_limited(buf, len, max_pixels, out);
    free(buf);
    if (rc) {
        char msg[400];
        snprintf(msg, sizeof msg, "%s", vapo_last_error());
        return vapo_fail("%s: %s", path, msg);
    }
    return 0;
}

int vapo_png_read_file(const char *path, vapo_image *out)
{
    return vapo_png_read_file_limited(path, VAPO_PNG_MAX_PIXELS_DEFAULT, out);
}

/* ---- PNG encode ---------------------------------------------------------------------- */

typedef struct {
    png_structp png;
    png_infop info;
    unsigned char *buf; /* the growing output */
    size_t len, cap;
    unsigned char *pix; /* interleaved rows */
    png_bytep *rows;
    char msg[200];
} png_enc;

static void png_write_mem(png_structp png, png_bytep data, size_t n)
{
    png_enc *e = png_get_io_ptr(png);
    if (n > e->cap - e->len) {
        size_t cap = e->cap ? e->cap : 4096;
        while (n > cap - e->len) {
            if (cap > SIZE_MAX / 2)
                png_error(png, "output too large");
            cap *= 2;
        }
        unsigned char *nb = realloc(e->buf, cap);
        if (!nb)
            png_error(png, "out of memory");
        e->buf = nb;
        e->cap = cap;
    }
    memcpy(e->buf + e->len, data, n);
    e->len += n;
}

static void png_flush_mem(png_structp png) { (void)png; }

static int png_encode_run(png_enc *e, int c, int h, int w)
{
    e->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, e->msg, png_err_fn, png_warn_fn);
    if (!e->png)
        return vapo_fail("PNG encode: out of memory");
    e->info = png_create_info_struct(e->png);
    if (!e->info)
        return vapo_fail("PNG encode: out of memory");
    if (setjmp(png_jmpbuf(e->png)))
        return vapo_fail("PNG encode: %s", e->msg);
    png_set_write_fn(e->png, e, png_write_mem, png_flush_mem);
    png_set_IHDR(e->png, e->info, (png_uint_32)w, (png_uint_32)h, 8,
                 c == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(e->png, e->info);
    png_write_image(e->png, e->rows);
    png_write_end(e->png, NULL);
    return 0;
}

/* Shared by the float and 8-bit encoders: `fill` writes interleaved rows. */
static int png_encode_common(const float *chw_f, const unsigned char *chw_u8, int c, int h, int w,
                             unsigned char **png, size_t *len)
{
    *png = NULL;
    *len = 0;
    if (check_shape("PNG encode", c, h, w))
        return -1;
    size_t plane = (size_t)h * w;
    png_enc e = {0};
    e.pix = malloc(plane * c);
    e.rows = malloc(sizeof(png_bytep) * h);
    int rc;
    if (!e.pix || !e.rows) {
        rc = vapo_fail("PNG encode: out of memory");
    } else {
        for (size_t i = 0; i < plane; i++)
            for (int k = 0; k < c; k++)
                e.pix[i * c + k] = chw_f ? float_to_u8(chw_f[k * plane + i]) : chw_u8[k * plane + i];
        for (int y = 0; y < h; y++)
            e.rows[y] = e.pix + (size_t)y * w * c;
        rc = png_encode_run(&e, c, h, w);
    }
    png_destroy_write_struct(&e.png, e.info ? &e.info : NULL);
    free(e.pix);
    free(e.rows);
    if (rc) {
        free(e.buf);
        return rc;
    }
    *png = e.buf;
    *len = e.len;
    return 0;
}

int vapo_png_encode(const float *chw, int c, int h, int w, unsigned char **png, size_t *len)
{
    return png_encode_common(chw, NULL, c, h, w, png, len);
}

int vapo_png_encode_u8(const vapo_image *img, unsigned char **png, size_t *len)
{
    return png_encode_common(NULL, img->data, img->c, img->h, img->w, png, len);
}

int vapo_png_write_file(const char *path, const float *chw, int c, int h, int w)
{
    unsigned char *png;
    size_t len;
    if (vapo_png_encode(chw, c, h, w, &png, &len))
        return -1;
    int rc = vapo_write_file(path, png, len);
    free(png);
    return rc;
}

int vapo_write_file(const char *path, const void *data, size_t len)
{
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (!tmp)
        return vapo_fail("out of memory");
    snprintf(tmp, n, "%s.tmp%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int e = errno;
        free(tmp);
        return vapo_fail("cannot write '%s': %s", path, strerror(e));
    }
    int ok = fwrite(data, 1, len, f) == len;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        remove(tmp);
        free(tmp);
        return vapo_fail("cannot write '%s': %s", path, strerror(e));
    }
    free(tmp);
    return 0;
}

/* ---- grids --------------------------------------------------------------------------- */

int vapo_image_grid_size(int n, int h, int w, int cols, int pad, int *gh, int *gw)
{
    if (n <= 0 || h <= 0 || w <= 0 || pad < 0)
        return vapo_fail("image grid: bad arguments (n=%d, %dx%d, pad=%d)", n, w, h, pad);
    if (cols <= 0)
        cols = (int)ceil(sqrt((double)n));
    if (cols > n)
        cols = n;
    int rows = (n + cols - 1) / cols;
    int64_t H = (int64_t)rows * h + (int64_t)(rows - 1) * pad;
    int64_t W = (int64_t)cols * w + (int64_t)(cols - 1) * pad;
    if (H > INT32_MAX || W > INT32_MAX || H * W > (int64_t)1 << 40)
        return vapo_fail("image grid: %lldx%lld is too large", (long long)W, (long long)H);
    *gh = (int)H;
    *gw = (int)W;
    return 0;
}

int vapo_image_grid(const float *nchw, int n, int c, int h, int w, int cols, int pad,
                    float pad_value, float *out)
{
    int gh, gw;
    if (check_shape("image grid", c, h, w) || vapo_image_grid_size(n, h, w, cols, pad, &gh, &gw))
        return -1;
    if (cols <= 0)
        cols = (int)ceil(sqrt((double)n));
    if (cols > n)
        cols = n;
    size_t gplane = (size_t)gh * gw, plane = (size_t)h * w;
    for (size_t i = 0; i < gplane * c; i++)
        out[i] = pad_value;
    for (int t = 0; t < n; t++) {
        size_t y0 = (size_t)(t / cols) * (h + pad), x0 = (size_t)(t % cols) * (w + pad);
        for (int k = 0; k < c; k++)
            for (int y = 0; y < h; y++)
                memcpy(out + k * gplane + (y0 + y) * gw + x0,
                       nchw + ((size_t)t * c + k) * plane + (size_t)y * w, sizeof(float) * w);
    }
    return 0;
}

int vapo_image_grid_u8(const float *nchw, int n, int c, int h, int w, int cols, int pad,
                       float pad_value, vapo_image *out)
{
    memset(out, 0, sizeof *out);
    int gh, gw;
    if (check_shape("image grid", c, h, w) || vapo_image_grid_size(n, h, w, cols, pad, &gh, &gw))
        return -1;
    size_t total = (size_t)gh * gw * c;
    float *g = malloc(sizeof(float) * total);
    unsigned char *u = malloc(total);
    if (!g || !u) {
        free(g);
        free(u);
        return vapo_fail("image grid: out of memory for %dx%d", gw, gh);
    }
    vapo_image_grid(nchw, n, c, h, w, cols, pad, pad_value, g);
    vapo_float_to_u8(g, total, u);
    free(g);
    out->c = c;
    out->h = gh;
    out->w = gw;
    out->data = u;
    return 0;
}

/* ---- crop and resize -------------------------------------------------------------------- */

int vapo_center_crop_u8(const unsigned char *in, int c, int h, int w, int size,
                        unsigned char *out)
{
    if (check_shape("centre crop", c, h, w))
        return -1;
    if (size == 0)
        size = h < w ? h : w;
    if (size < 0 || size > h || size > w)
        return vapo_fail("centre crop: crop %d does not fit a %dx%d image", size, w, h);
    int y0 = (h - size) / 2, x0 = (w - size) / 2;
    for (int k = 0; k < c; k++)
        for (int y = 0; y < size; y++)
            memcpy(out + ((size_t)k * size + y) * size,
                   in + ((size_t)k * h + y0 + y) * w + x0, (size_t)size);
    return 0;
}

/* Filter taps for resampling `in` samples to `out` along one axis, as PIL's
 * precompute_coeffs with the bilinear (triangle) filter: output i is centred
 * at (i + 0.5) * scale in input coordinates; when shrinking, the triangle is
 * stretched by the scale factor so every input sample contributes
 * (antialiasing). Taps of output i: first[i] .. first[i]+count[i]-1 with
 * weights wt[i*ksize ..], normalised to sum 1. */
typedef struct {
    int ksize;
    int *first, *count;
    float *wt;
} taps;

static void taps_free(taps *t)
{
    free(t->first);
    free(t->count);
    free(t->wt);
    t->first = t->count = NULL;
    t->wt = NULL;
}

static double triangle(double x)
{
    x = fabs(x);
    return x < 1.0 ? 1.0 - x : 0.0;
}

static int taps_make(int in, int out, taps *t)
{
    double scale = (double)in / out;
    double fscale = scale > 1.0 ? scale : 1.0;
    double support = 1.0 * fscale; /* triangle support is 1, stretched when shrinking */
    t->ksize = (int)ceil(support) * 2 + 1;
    t->first = malloc(sizeof(int) * out);
    t->count = malloc(sizeof(int) * out);
    t->wt = malloc(sizeof(float) * (size_t)out * t->ksize);
    double *wk = malloc(sizeof(double) * t->ksize);
    if (!t->first || !t->count || !t->wt || !wk) {
        taps_free(t);
        free(wk);
        return vapo_fail("resize: out of memory");
    }
    for (int i = 0; i < out; i++) {
        double center = (i + 0.5) * scale;
        int lo = (int)(center - support + 0.5), hi = (int)(center + support + 0.5);
        if (lo < 0)
            lo = 0;
        if (hi > in)
            hi = in;
        if (hi - lo > t->ksize)
            hi = lo + t->ksize;
        double sum = 0.0;
        for (int x = lo; x < hi; x++)
            sum += wk[x - lo] = triangle((x - center + 0.5) / fscale);
        float *w = t->wt + (size_t)i * t->ksize;
        for (int x = lo; x < hi; x++)
            w[x - lo] = (float)(sum > 0.0 ? wk[x - lo] / sum : 0.0);
        t->first[i] = lo;
        t->count[i] = hi - lo;
    }
    free(wk);
    return 0;
}

int vapo_resize_f32(const float *in, int c, int h, int w, int oh, int ow, float *out)
{
    if (c <= 0 || h <= 0 || w <= 0 || oh <= 0 || ow <= 0)
        return vapo_fail("resize: bad sizes %dx%d -> %dx%d", w, h, ow, oh);
    taps tx = {0}, ty = {0};
    float *tmp = malloc(sizeof(float) * (size_t)c * h * ow);
    if (!tmp)
        return vapo_fail("resize: out of memory");
    if (taps_make(w, ow, &tx) || taps_make(h, oh, &ty)) {
        free(tmp);
        taps_free(&tx);
        taps_free(&ty);
        return -1;
    }
    /* Horizontal pass: (c, h, w) -> (c, h, ow). */
    for (size_t r = 0; r < (size_t)c * h; r++) {
        const float *src = in + r * w;
        for (int x = 0; x < ow; x++) {
            const float *k = tx.wt + (size_t)x * tx.ksize;
            float s = 0.0f;
            for (int j = 0; j < tx.count[x]; j++)
                s += k[j] * src[tx.first[x] + j];
            tmp[r * ow + x] = s;
        }
    }
    /* Vertical pass: (c, h, ow) -> (c, oh, ow). */
    for (int ch = 0; ch < c; ch++) {
        const float *src = tmp + (size_t)ch * h * ow;
        float *dst = out + (size_t)ch * oh * ow;
        for (int y = 0; y < oh; y++) {
            const float *k = ty.wt + (size_t)y * ty.ksize;
            float *row = dst + (size_t)y * ow;
            for (int x = 0; x < ow; x++)
                row[x] = 0.0f;
            for (int j = 0; j < ty.count[y]; j++) {
                const float *s = src + (size_t)(ty.first[y] + j) * ow;
                for (int x = 0; x < ow; x++)
                    row[x] += k[j] * s[x];
            }
        }
    }
    free(tmp);
    taps_free(&tx);
    taps_free(&ty);
    return 0;
}

int vapo_resize_u8(const unsigned char *in, int c, int h, int w, int oh, int ow,
                   unsigned char *out)
{
    if (c <= 0 || h <= 0 || w <= 0 || oh <= 0 || ow <= 0)
        return vapo_fail("resize: bad sizes %dx%d -> %dx%d", w, h, ow, oh);
    size_t nin = (size_t)c * h * w, nout = (size_t)c * oh * ow;
    float *fi = malloc(sizeof(float) * nin), *fo = malloc(sizeof(float) * nout);
    int rc = -1;
    if (!fi || !fo) {
        vapo_fail("resize: out of memory");
    } else {
        for (size_t i = 0; i < nin; i++)
            fi[i] = in[i];
        rc = vapo_resize_f32(fi, c, h, w, oh, ow, fo);
        if (!rc)
            for (size_t i = 0; i < nout; i++) {
                float v = fo[i] + 0.5f;
                out[i] = v <= 0.0f ? 0 : v >= 255.0f ? 255 : (unsigned char)v;
            }
    }
    free(fi);
    free(fo);
    return rc;
}
