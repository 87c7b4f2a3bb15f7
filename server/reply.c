#define _GNU_SOURCE /* vasprintf */
#include "reply.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void reply_free(reply *r)
{
    if (!r->body_static)
        free(r->body);
    for (int i = 0; i < r->nheaders; i++)
        free(r->headers[i].value);
    memset(r, 0, sizeof *r);
}

void reply_header(reply *r, const char *name, const char *fmt, ...)
{
    if (r->nheaders == REPLY_MAX_HEADERS)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *value = NULL;
    int n = vasprintf(&value, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    r->headers[r->nheaders].name = name;
    r->headers[r->nheaders].value = value;
    r->nheaders++;
}

const char *reply_error_type(int status)
{
    switch (status) {
    case 400: return "bad_request";
    case 401: return "unauthorized";
    case 403: return "forbidden_host";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 413: return "payload_too_large";
    case 415: return "unsupported_media_type";
    case 422: return "invalid_value";
    case 429: return "overloaded";
    case 499: return "cancelled";
    case 503: return "overloaded";
    case 504: return "timeout";
    default: return status >= 500 ? "internal" : "bad_request";
    }
}

static void set_body(reply *r, void *body, size_t len, int is_static)
{
    if (!r->body_static)
        free(r->body);
    r->body = body, r->len = len, r->body_static = is_static;
}

void reply_bytes(reply *r, int status, const char *content_type, void *body, size_t len)
{
    r->status = status;
    r->content_type = content_type;
    set_body(r, body, len, 0);
}

void reply_static(reply *r, int status, const char *content_type, const void *body, size_t len)
{
    r->status = status;
    r->content_type = content_type;
    set_body(r, (void *)body, len, 1);
}

void reply_json(reply *r, int status, json_t *obj)
{
    /* 9 significant digits: every float32 value round-trips */
    char *text = obj ? json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9)) : NULL;
    json_decref(obj);
    if (!text) {
        static const char oom[] = "{\"error\":{\"code\":500,\"type\":\"internal\",\"message\":\"out of memory\"}}";
        reply_static(r, 500, "application/json", oom, sizeof oom - 1);
        return;
    }
    reply_bytes(r, status, "application/json", text, strlen(text));
}

void reply_error(reply *r, int status, const char *type, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *err = json_pack("{s:{s:i, s:s, s:s}}", "error", "code", status, "type",
                            type ? type : reply_error_type(status), "message", msg);
    if (!err) /* the message was not valid UTF-8 (it quotes client input) */
        err = json_pack("{s:{s:i, s:s, s:s}}", "error", "code", status, "type",
                        type ? type : reply_error_type(status), "message", "invalid request");
    reply_json(r, status, err);
}
