/* Error reporting for libvapo: functions return 0 on success and a negative
 * value on failure, after recording a message the caller can show. The message
 * is per thread, so worker threads do not clobber each other's errors. */
#ifndef VAPO_ERROR_H
#define VAPO_ERROR_H

/* Records a printf-style message and returns -1 (so `return vapo_fail(...)`). */
int vapo_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The last message recorded on this thread ("" if none). */
const char *vapo_last_error(void);

/* The index of `name` among the n names (an enum's, in order), or -1 with
 * "unknown <what> '<name>' (expected a, b or c)". */
int vapo_name_index(const char *what, const char *const *names, int n, const char *name);

#endif
