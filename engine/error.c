#include "vapo/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_error[512];

int vapo_fail(const char *fmt, ...)
{
    /* format into a local buffer first: callers often pass vapo_last_error()
     * itself as an argument, to add context to a message */
    char buf[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    memcpy(last_error, buf, sizeof buf);
    return -1;
}

const char *vapo_last_error(void) { return last_error; }
