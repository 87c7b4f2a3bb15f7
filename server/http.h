/* The HTTP front (libmicrohttpd): connections, bodies and their limits,
 * authentication, CORS, replies, per-request logs and metrics. A request
 * that needs the model becomes a batcher job; its connection is suspended
 * (MHD_suspend_connection) while the job runs and resumed from the job's
 * completion callback, so no HTTP thread waits on the device. While a
 * connection is suspended libmicrohttpd does not look at its socket, so a
 * watcher thread polls the sockets of suspended requests and cancels the job
 * of a client that hung up (a reset, or a FIN that an interim reply shows to
 * be a close rather than a half-close), and cuts connections that do not
 * deliver a whole request within --request-timeout-s. */
#ifndef SERVE_HTTP_H
#define SERVE_HTTP_H

#include <stddef.h>

#include "routes.h"

typedef struct http_server http_server;

/* Binds cfg->host:cfg->port and starts serving; NULL with a message in err. */
http_server *http_start(app *a, char *err, size_t errlen);
int http_port(const http_server *s); /* the bound port (useful with --port 0) */

/* Stops accepting connections; requests already received go on. */
void http_quiesce(http_server *s);
/* Requests received and not yet answered and closed. */
int http_active_requests(http_server *s);
/* Closes everything. Call once no job is in flight. */
void http_stop(http_server *s);

#endif
