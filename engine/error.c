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

int vapo_name_index(const char *what, const char *const *names, int n, const char *name)
{
    char list[256] = "";
    for (int i = 0; i < n; i++) {
        if (!strcmp(names[i], name))
            return i;
        size_t len = strlen(list);
        snprintf(list + len, sizeof list - len, "%s%s", i == 0 ? "" : i == n - 1 ? " or " : ", ", names[i]);
    }
    return vapo_fail("unknown %s '%s' (expected %s)", what, name, list);
}
