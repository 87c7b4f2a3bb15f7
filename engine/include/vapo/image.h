/* Images: PNG encode/decode in memory (libpng), conversion between 8-bit and
 * the engine's float range, sample grids, centre crop and antialiased resize.
 *
 * Two representations:
 *   - float, planar CHW (one image) or NCHW (a batch), values in [-1, 1]:
 *     what the network sees and produces;
 *   - 8-bit, planar CHW (vapo_image), 0..255: what PNG files and the dataset
 *     store hold. Planar rather than interleaved so that both share one
 *     layout and conversion is a per-element map.
 * C is 1 (gray) or 3 (RGB) everywhere.
 *
 * Mapping (exact round trip for 8-bit values):
 *   8-bit s -> float s / 127.5 - 1
 *   float v -> round((v + 1) / 2 * 255) clipped to [0, 255]; NaN -> 0. */
#ifndef VAPO_IMAGE_H
#define VAPO_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* Decoding refuses images with more pixels than this unless told otherwise:
 * a few bytes of PNG header can declare gigapixels. */
#define VAPO_PNG_MAX_PIXELS_DEFAULT ((size_t)4096 * 4096)

typedef struct {
    int c, h, w;         /* c = 1 or 3 */
    unsigned char *data; /* c*h*w bytes, planar CHW, malloc'd */
} vapo_image;

void vapo_image_free(vapo_image *img); /* frees data, zeroes the struct; NULL ok */

/* ---- PNG -------------------------------------------------------------------- */

/* Encodes one float CHW image (c = 1 gray, 3 RGB) as an 8-bit PNG in memory.
 * *png is malloc'd (caller frees), *len its size. */
int vapo_png_encode(const float *chw, int c, int h, int w, unsigned char **png, size_t *len);
/* Encodes as above and writes the file with vapo_write_file. */
int vapo_png_write_file(const char *path, const float *chw, int c, int h, int w);

/* Writes len bytes to path through a temp file and a rename, so a reader
 * never sees half a file; 0, or -1 with a message naming path. */
int vapo_write_file(const char *path, const void *data, size_t len);
/* Same from an 8-bit planar image. */
int vapo_png_encode_u8(const vapo_image *img, unsigned char **png, size_t *len);

/* Decodes any valid PNG (palette, gray, gray+alpha, RGB, RGBA, 1..16-bit,
 * interlaced) into 8 bits per sample:
 *   - gray and gray+alpha give c = 1; palette, RGB and RGBA give c = 3;
 *   - alpha (an alpha channel or tRNS transparency) is composited over black,
 *     s' = round(s * a / 255), then dropped;
 *   - 16-bit samples are scaled to 8 bits with rounding; gamma and colour
 *     profile chunks are ignored (values are taken as stored).
 * Garbage, truncated input (including a missing IEND) and images with more
 * than max_pixels pixels fail with a message; nothing leaks. */
int vapo_png_decode(const unsigned char *buf, size_t len, vapo_image *out);
int vapo_png_decode_limited(const unsigned char *buf, size_t len, size_t max_pixels,
                            vapo_image *out);
int vapo_png_read_file(const char *path, vapo_image *out);
int vapo_png_read_file_limited(const char *path, size_t max_pixels, vapo_image *out);

/* ---- 8-bit <-> float, channel conversion -------------------------------------- */

/* Channel conversion of an 8-bit planar image from c_in to c_out channels:
 * gray -> RGB replicates; RGB -> gray is ITU-R BT.601 luma with PIL's integer
 * rounding, (19595 R + 38470 G + 7471 B + 32768) >> 16, so results match
 * PIL's convert("L"). c_in == c_out copies. `out` must not overlap `in`. */
int vapo_u8_convert_channels(const unsigned char *in, int c_in, int h, int w, int c_out,
                             unsigned char *out);

/* 8-bit planar samples -> float [-1, 1] with channel conversion as above.
 * `out` holds c_out*h*w floats; c_out = 0 keeps the image's channel count. */
int vapo_u8_to_float(const unsigned char *in, int c_in, int h, int w, int c_out, float *out);
int vapo_image_to_float(const vapo_image *img, int c_out, float *out);

/* float [-1, 1] -> 8-bit (the mapping at the top of this file), n values. */
void vapo_float_to_u8(const float *in, size_t n, unsigned char *out);

/* ---- grids ---------------------------------------------------------------------- */

/* Lays n CHW tiles out in rows of `cols` (cols <= 0: ceil(sqrt(n)); cols > n
 * is reduced to n), `pad` pixels between tiles (not around the border).
 * Padding and the empty cells of the last row are pad_value. Output size:
 *   rows = ceil(n / cols), gh = rows*h + (rows-1)*pad, gw = cols*w + (cols-1)*pad. */
int vapo_image_grid_size(int n, int h, int w, int cols, int pad, int *gh, int *gw);
/* out: c*gh*gw floats (CHW), caller-allocated. */
int vapo_image_grid(const float *nchw, int n, int c, int h, int w, int cols, int pad,
                    float pad_value, float *out);
/* Convenience: the grid as an 8-bit image (malloc'd; free with vapo_image_free);
 * padding is pad_value mapped to 8 bits. */
int vapo_image_grid_u8(const float *nchw, int n, int c, int h, int w, int cols, int pad,
                       float pad_value, vapo_image *out);

/* ---- crop and resize ------------------------------------------------------------ */

/* Centre crop of a square of side `size` (0: the min side), planar CHW.
 * The top-left corner is ((h-size)/2, (w-size)/2), rounded down.
 * Fails if size exceeds either side. out: c*size*size. */
int vapo_center_crop_u8(const unsigned char *in, int c, int h, int w, int size,
                        unsigned char *out);

/* Antialiased resize of planar CHW data to (oh, ow): separable triangle
 * (bilinear) filter whose support grows with the downscale factor, the
 * coefficients of PIL's Image.resize(..., BILINEAR) with reducing. A constant
 * image stays constant; fine detail above the new Nyquist limit averages out
 * instead of aliasing. Works for upscaling too (plain bilinear, edges clamped).
 * The u8 variant filters in float and rounds once at the end. */
int vapo_resize_f32(const float *in, int c, int h, int w, int oh, int ow, float *out);
int vapo_resize_u8(const unsigned char *in, int c, int h, int w, int oh, int ow,
                   unsigned char *out);

#endif
