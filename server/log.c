#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

static int log_requests = 1;

void log_set_requests(int requests) { log_requests = requests; }

static void timestamp(char *buf, size_t len)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03dZ", (int)(tv.tv_usec / 1000));
}

static void emit(json_t *line)
{
    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
    if (text) {
        flockfile(stderr);
        fputs(text, stderr);
        fputc('\n', stderr);
        funlockfile(stderr);
        free(text);
    }
    json_decref(line);
}

void log_line(const char *level, json_t *fields, const char *fmt, ...)
{
    char ts[40], msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    timestamp(ts, sizeof ts);
    json_t *line = json_object();
    json_object_set_new(line, "ts", json_string(ts));
    json_object_set_new(line, "level", json_string(level));
    json_object_set_new(line, "msg", json_string(msg));
    if (fields) {
        json_object_update(line, fields);
        json_decref(fields);
    }
    emit(line);
}

void log_request(const log_request_fields *f)
{
    if (!log_requests)
        return;
    char ts[40];
    timestamp(ts, sizeof ts);
    json_t *line = json_object();
    json_object_set_new(line, "ts", json_string(ts));
    json_object_set_new(line, "level", json_string("info"));
    json_object_set_new(line, "msg", json_string("request"));
    json_object_set_new(line, "method", json_string(f->method ? f->method : "?"));
    json_object_set_new(line, "route", json_string(f->route ? f->route : "?"));
    json_object_set_new(line, "status", json_integer(f->status));
    json_object_set_new(line, "images", json_integer(f->images));
    if (f->nfe >= 0)
        json_object_set_new(line, "nfe", json_integer((json_int_t)f->nfe));
    if (f->queue_wait_s >= 0)
        json_object_set_new(line, "queue_ms", json_real((double)(long long)(f->queue_wait_s * 1e6) / 1e3));
    json_object_set_new(line, "latency_ms", json_real((double)(long long)(f->latency_s * 1e6) / 1e3));
    json_object_set_new(line, "bytes_in", json_integer((json_int_t)f->bytes_in));
    json_object_set_new(line, "bytes_out", json_integer((json_int_t)f->bytes_out));
    if (f->remote)
        json_object_set_new(line, "remote", json_string(f->remote));
    emit(line);
}
