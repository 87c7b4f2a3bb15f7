/* Monotonic time in seconds, for deadlines, queue waits and latencies. */
#ifndef SERVE_CLOCK_H
#define SERVE_CLOCK_H

#include <time.h>

static inline double clock_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

#endif
