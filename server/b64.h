/* Base64 (RFC 4648, standard alphabet) for PNGs inside JSON. */
#ifndef SERVE_B64_H
#define SERVE_B64_H

#include <stddef.h>

/* Encodes len bytes; returns a malloc'd NUL-terminated string or NULL. */
char *b64_encode(const unsigned char *data, size_t len);

/* Decodes a padded or unpadded string of len characters; a leading data URL
 * prefix ("data:...;base64,") is skipped. Returns a malloc'd buffer (size in
 * *out_len), or NULL when the text is not valid base64 or memory ran out
 * (*oom = 1 then). */
unsigned char *b64_decode(const char *text, size_t len, size_t *out_len, int *oom);

#endif
