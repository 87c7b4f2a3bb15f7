/* JSON parsing that tolerates the non-standard literals NaN, Infinity and
 * -Infinity (which Python's json module and others write): they come back as
 * the strings "NaN", "Infinity" and "-Infinity", so that a field check can
 * reject the value by name instead of the whole body being "malformed". */
#ifndef SERVE_JSON_LENIENT_H
#define SERVE_JSON_LENIENT_H

#include <jansson.h>
#include <stddef.h>

/* Like json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, err). */
json_t *json_parse_lenient(const char *text, size_t len, json_error_t *err);

#endif
