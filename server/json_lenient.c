#include "json_lenient.h"

#include <stdlib.h>
#include <string.h>

static const char *const literals[] = {"-Infinity", "Infinity", "NaN"};

static int is_delim(char c) { return c == ',' || c == ']' || c == '}' || c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Length of an integer token at text[i] too long for a 64-bit integer, or 0. */
static size_t huge_integer_at(const char *text, size_t len, size_t i)
{
    size_t j = i + (text[i] == '-');
    size_t digits = 0;
    while (j + digits < len && text[j + digits] >= '0' && text[j + digits] <= '9')
        digits++;
    size_t end = j + digits;
    if (digits < 19 || (end < len && (text[end] == '.' || text[end] == 'e' || text[end] == 'E')))
        return 0;
    return end - i;
}

/* The literal starting at text[i] outside a string, or -1. */
static int literal_at(const char *text, size_t len, size_t i)
{
    for (int k = 0; k < 3; k++) {
        size_t n = strlen(literals[k]);
        if (i + n <= len && !memcmp(text + i, literals[k], n) && (i + n == len || is_delim(text[i + n])))
            return k;
    }
    return -1;
}

/* Quotes the non-finite literals and integers beyond 64 bits; NULL if there
 * were none (or no memory). */
static char *quote_literals(const char *text, size_t len, size_t *out_len)
{
    char *out = malloc(len * 2 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    int in_string = 0, found = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            out[o++] = c;
            if (c == '\\' && i + 1 < len)
                out[o++] = text[++i];
            else if (c == '"')
                in_string = 0;
            continue;
        }
        if (c == '"') {
            in_string = 1;
            out[o++] = c;
            continue;
        }
        int k = (c == '-' || c == 'I' || c == 'N') ? literal_at(text, len, i) : -1;
        size_t n = k >= 0 ? strlen(literals[k]) : 0;
        if (k < 0 && (c == '-' || (c >= '0' && c <= '9')) && (i == 0 || !(text[i - 1] >= '0' && text[i - 1] <= '9')))
            n = huge_integer_at(text, len, i);
        if (n == 0) {
            out[o++] = c;
            continue;
        }
        out[o++] = '"';
        memcpy(out + o, text + i, n);
        o += n;
        out[o++] = '"';
        i += n - 1;
        found = 1;
    }
    if (!found) {
        free(out);
        return NULL;
    }
    *out_len = o;
    return out;
}

json_t *json_parse_lenient(const char *text, size_t len, json_error_t *err)
{
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, err);
    if (root)
        return root;
    size_t qlen;
    char *quoted = quote_literals(text, len, &qlen);
    if (!quoted)
        return NULL;
    json_error_t err2;
    root = json_loadb(quoted, qlen, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &err2);
    free(quoted);
    return root; /* on failure *err keeps the first parse's message */
}
