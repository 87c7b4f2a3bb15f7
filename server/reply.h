/* An HTTP reply as the route handlers build it, independent of the HTTP
 * library: status, content type, body and a few extra headers. Errors have
 * one JSON shape: {"error": {"code": <status>, "type": <slug>, "message": ...}}. */
#ifndef SERVE_REPLY_H
#define SERVE_REPLY_H

#include <jansson.h>
#include <stddef.h>

#define REPLY_MAX_HEADERS 8

typedef struct {
    int status;
    const char *content_type;
    void *body;
    size_t len;
    int body_static; /* body points at static data: not freed */
    int nheaders;
    struct {
        const char *name;
        char *value; /* malloc'd */
    } headers[REPLY_MAX_HEADERS];
} reply;

void reply_free(reply *r); /* frees body and header values, zeroes r */

void reply_header(reply *r, const char *name, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The JSON error for `status` with a message; the type slug follows the
 * status unless type is given. */
void reply_error(reply *r, int status, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* A JSON body (steals obj). */
void reply_json(reply *r, int status, json_t *obj);
/* A body that takes ownership of a malloc'd buffer. */
void reply_bytes(reply *r, int status, const char *content_type, void *body, size_t len);
void reply_static(reply *r, int status, const char *content_type, const void *body, size_t len);

/* The slug for a status: 400 bad_request, 404 not_found, 422 invalid_value ... */
const char *reply_error_type(int status);

#endif
