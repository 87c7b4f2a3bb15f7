#include "b64.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *b64_encode(const unsigned char *data, size_t len)
{
    size_t out_len = 4 * ((len + 2) / 3);
    char *out = malloc(out_len + 1), *p = out;
    if (!out)
        return NULL;
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        *p++ = alphabet[v >> 18], *p++ = alphabet[(v >> 12) & 63];
        *p++ = alphabet[(v >> 6) & 63], *p++ = alphabet[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < len ? (uint32_t)data[i + 1] << 8 : 0);
        *p++ = alphabet[v >> 18], *p++ = alphabet[(v >> 12) & 63];
        *p++ = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
        *p++ = '=';
    }
    *p = 0;
    return out;
}

static int value_of(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

unsigned char *b64_decode(const char *text, size_t len, size_t *out_len, int *oom)
{
    *oom = 0;
    if (len >= 5 && !strncmp(text, "data:", 5)) {
        const char *comma = memchr(text, ',', len);
        if (!comma || comma - text < 12 || strncmp(comma - 7, ";base64", 7))
            return NULL;
        len -= (size_t)(comma + 1 - text);
        text = comma + 1;
    }
    while (len > 0 && text[len - 1] == '=')
        len--;
    if (len % 4 == 1 || (len == 0))
        return NULL;
    size_t n = len / 4 * 3 + (len % 4 ? len % 4 - 1 : 0);
    unsigned char *out = malloc(n ? n : 1);
    if (!out) {
        *oom = 1;
        return NULL;
    }
    uint32_t acc = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int v = value_of((unsigned char)text[i]);
        if (v < 0) {
            free(out);
            return NULL;
        }
        acc = acc << 6 | (uint32_t)v;
        if (i % 4 == 3) {
            out[o++] = (unsigned char)(acc >> 16), out[o++] = (unsigned char)(acc >> 8), out[o++] = (unsigned char)acc;
            acc = 0;
        }
    }
    if (len % 4 == 2)
        out[o++] = (unsigned char)(acc >> 4);
    else if (len % 4 == 3)
        out[o++] = (unsigned char)(acc >> 10), out[o++] = (unsigned char)(acc >> 2);
    *out_len = o;
    return out;
}
