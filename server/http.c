#define _GNU_SOURCE /* POLLRDHUP */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "clock.h"
#include "log.h"

/* A body declared larger than the limit is read and thrown away up to this
 * much, so the 413 reaches the client instead of a reset connection; beyond
 * it (or with Expect: 100-continue) the reply goes out at once and the
 * connection closes. */
#define DISCARD_EXTRA (16u << 20)
/* How often the watcher looks for connections past their request deadline. */
#define REAP_PERIOD_MS 200

typedef enum { RQ_READING, RQ_WAITING } rq_state;

typedef struct http_request {
    struct http_server *srv;
    struct MHD_Connection *conn;
    uint64_t id;
    const route *rt;
    char method[16];
    char remote[64];
    double t_start;
    rq_state state;

    /* an answer decided from the headers alone, sent once the body is in */
    reply early;
    int has_early;

    unsigned char *body;
    size_t len, cap, received;
    size_t limit; /* the route's body limit (routes_body_limit) */
    int overflow; /* body past the limit: discarded, 413 */
    char content_type[128];

    /* the job, once submitted; mu orders suspend (handler) before resume (done) */
    pthread_mutex_t mu;
    route_work *work;
    int job_done, suspended, orphaned;
    int fd;
    int http11;     /* HTTP/1.1: an interim 100 may be sent (the half-close probe) */
    int probed;     /* the client half-closed and was sent the probe; only an error or reset ends it now */

    /* for the log line */
    int status, images;
    long long nfe; /* evaluations of the job's images; -1: no job ran */
    size_t bytes_out;
    double queue_wait;
} http_request;

struct http_server {
    app *app;
    struct MHD_Daemon *daemon;
    int port;
    atomic_int active;
    atomic_uint_fast64_t next_id;

    /* every open connection, for the deadline of a whole request */
    pthread_mutex_t conn_mu;
    struct conn_slot *conns;

    /* suspended requests whose sockets the watcher polls */
    pthread_mutex_t watch_mu;
    http_request **watched;
    int nwatched, watch_cap;
    int wake[2];
    int watch_stop;
    pthread_t watcher;
};

/* ---- the request deadline -------------------------------------------------------------- */

/* One per connection (MHD's socket context). A connection must deliver a
 * whole request, headers and body, within --request-timeout-s of opening or
 * of its previous reply: libmicrohttpd's own timeout only catches silence,
 * so a client sending a byte now and then (slowloris) would hold a slot
 * forever. */
typedef struct conn_slot {
    int fd;
    double deadline; /* clock_now() seconds; 0 while a request is being answered */
    struct conn_slot *prev, *next;
} conn_slot;

static conn_slot *slot_of(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

/* Arms (the connection now owes a request) or disarms (one is in) the deadline. */
static void slot_arm(http_server *s, struct MHD_Connection *conn, int arm)
{
    conn_slot *c = slot_of(conn);
    if (!c)
        return;
    pthread_mutex_lock(&s->conn_mu);
    c->deadline = arm ? clock_now() + s->app->cfg->request_timeout_s : 0;
    pthread_mutex_unlock(&s->conn_mu);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    http_server *s = cls;
    conn_slot *c = *socket_context;
    pthread_mutex_lock(&s->conn_mu);
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        c = calloc(1, sizeof *c);
        if (c && ci) {
            c->fd = ci->connect_fd;
            c->deadline = clock_now() + s->app->cfg->request_timeout_s;
            c->next = s->conns;
            if (s->conns)
                s->conns->prev = c;
            s->conns = c;
        } else {
            free(c), c = NULL;
        }
        *socket_context = c;
    } else if (c) {
        /* libmicrohttpd closes the socket after this returns: the reaper,
         * which holds conn_mu while it shuts sockets down, never sees a
         * reused descriptor */
        if (c->prev)
            c->prev->next = c->next;
        else
            s->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        free(c);
        *socket_context = NULL;
    }
    pthread_mutex_unlock(&s->conn_mu);
}

/* Shuts down the sockets of connections past their deadline; libmicrohttpd
 * then reads the end of the stream and closes them. */
static void reap_slow(http_server *s)
{
    double now = clock_now();
    int reaped = 0;
    pthread_mutex_lock(&s->conn_mu);
    for (conn_slot *c = s->conns; c; c = c->next)
        if (c->deadline > 0 && now > c->deadline) {
            shutdown(c->fd, SHUT_RDWR);
            c->deadline = 0;
            reaped++;
        }
    pthread_mutex_unlock(&s->conn_mu);
    for (int i = 0; i < reaped; i++)
        metrics_rejected(s->app->mx, "request_timeout");
}

/* ---- the disconnect watcher ------------------------------------------------------------- */

static void watch_wake(http_server *s)
{
    char c = 1;
    ssize_t rc = write(s->wake[1], &c, 1);
    (void)rc; /* a full pipe already means "wake up" */
}

/* Under watch_mu. */
static void watch_remove_locked(http_server *s, http_request *rq)
{
    for (int i = 0; i < s->nwatched; i++)
        if (s->watched[i] == rq) {
            s->watched[i] = s->watched[--s->nwatched];
            return;
        }
}

static int watch_add(http_server *s, http_request *rq)
{
    pthread_mutex_lock(&s->watch_mu);
    if (s->nwatched == s->watch_cap) {
        int cap = s->watch_cap ? 2 * s->watch_cap : 64;
        http_request **grown = realloc(s->watched, sizeof *grown * cap);
        if (!grown) {
            pthread_mutex_unlock(&s->watch_mu);
            return -1;
        }
        s->watched = grown, s->watch_cap = cap;
    }
    s->watched[s->nwatched++] = rq;
    pthread_mutex_unlock(&s->watch_mu);
    watch_wake(s);
    return 0;
}

static void watch_remove(http_server *s, http_request *rq)
{
    pthread_mutex_lock(&s->watch_mu);
    watch_remove_locked(s, rq);
    pthread_mutex_unlock(&s->watch_mu);
}

/* The client of a suspended request sent a FIN. It may have closed (gone)
 * or only shut down its sending side and still wait for the reply (a
 * half-close); TCP tells them apart only when data arrives: a closed socket
 * answers with a reset. So send data that HTTP/1.1 clients must skip, an
 * interim "100 Continue", and keep watching for the reset. HTTP/1.0 knows
 * no interim replies: its FIN counts as gone. Returns 1 if the client is
 * gone. Under watch_mu (the connection is suspended: nothing else writes). */
static int probe_half_close(http_request *rq)
{
    static const char probe[] = "HTTP/1.1 100 Continue\r\n\r\n";
    if (!rq->http11)
        return 1;
    rq->probed = 1;
    ssize_t n = send(rq->fd, probe, sizeof probe - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n == (ssize_t)(sizeof probe - 1))
        return 0;
    /* a full send buffer: nothing was written, the request runs to its end;
     * an error or a partial write: the stream is over */
    return !(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

static void *watch_main(void *arg)
{
    http_server *s = arg;
    struct pollfd *pfd = NULL;
    uint64_t *ids = NULL;
    int cap = 0;
    for (;;) {
        pthread_mutex_lock(&s->watch_mu);
        if (s->watch_stop) {
            pthread_mutex_unlock(&s->watch_mu);
            break;
        }
        if (s->nwatched + 1 > cap) {
            int ncap = 2 * (s->nwatched + 1);
            struct pollfd *p2 = realloc(pfd, sizeof *p2 * ncap);
            if (p2)
                pfd = p2;
            uint64_t *i2 = realloc(ids, sizeof *i2 * ncap);
            if (i2)
                ids = i2;
            if (p2 && i2)
                cap = ncap;
        }
        if (cap == 0) { /* out of memory: try again in a moment */
            pthread_mutex_unlock(&s->watch_mu);
            usleep(10000);
            continue;
        }
        int n = 1;
        pfd[0] = (struct pollfd){.fd = s->wake[0], .events = POLLIN};
        for (int i = 0; i < s->nwatched && n < cap; i++) {
            http_request *rq = s->watched[i];
            /* not POLLIN: unread bytes (a pipelined request) would wake us
             * forever; errors and hang-ups are reported whatever is asked */
            pfd[n] = (struct pollfd){.fd = rq->fd, .events = rq->probed ? 0 : POLLRDHUP};
            ids[n] = rq->id;
            n++;
        }
        pthread_mutex_unlock(&s->watch_mu);

        /* wake at least every REAP_PERIOD_MS for the request deadlines */
        int ready = poll(pfd, n, REAP_PERIOD_MS);
        reap_slow(s);
        if (ready <= 0)
            continue;
        if (pfd[0].revents) {
            char buf[64];
            while (read(s->wake[0], buf, sizeof buf) > 0) {
            }
        }
        pthread_mutex_lock(&s->watch_mu);
        for (int k = 1; k < n; k++) {
            if (!pfd[k].revents)
                continue;
            /* still suspended and still the same request? (the fd may have been reused) */
            http_request *rq = NULL;
            for (int i = 0; i < s->nwatched; i++)
                if (s->watched[i]->id == ids[k])
                    rq = s->watched[i];
            if (!rq)
                continue;
            int gone = (pfd[k].revents & (POLLERR | POLLHUP | POLLNVAL)) ||
                       ((pfd[k].revents & POLLRDHUP) && !rq->probed && probe_half_close(rq));
            if (gone) {
                watch_remove_locked(s, rq);
                batcher_cancel(s->app->b, route_work_job(rq->work));
            }
        }
        pthread_mutex_unlock(&s->watch_mu);
    }
    free(pfd);
    free(ids);
    return NULL;
}

/* ---- replies ------------------------------------------------------------------------------ */

static enum MHD_Result send_reply(http_request *rq, reply *r)
{
    http_server *s = rq->srv;
    const serve_config *cfg = s->app->cfg;
    struct MHD_Response *resp;
    if (r->body_static || r->len == 0)
        resp = MHD_create_response_from_buffer(r->len, r->len ? r->body : (void *)"", MHD_RESPMEM_PERSISTENT);
    else
        resp = MHD_create_response_from_buffer(r->len, r->body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        reply_free(r);
        return MHD_NO;
    }
    if (!r->body_static && r->len) /* the response owns it now */
        r->body = NULL;
    if (r->content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
    for (int i = 0; i < r->nheaders; i++)
        MHD_add_response_header(resp, r->headers[i].name, r->headers[i].value);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (rq->rt && rq->rt->post)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (cfg->cors_origin) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, cfg->cors_origin);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Origin");
        MHD_add_response_header(resp, "Access-Control-Expose-Headers",
                                "X-Vapo-Seed, X-Vapo-First, X-Vapo-NFE, Retry-After");
    }
    if (atomic_load(&s->app->draining))
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    rq->status = r->status;
    rq->bytes_out = r->len;
    enum MHD_Result ret = MHD_queue_response(rq->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    reply_free(r);
    return ret;
}

/* ---- request lifecycle --------------------------------------------------------------------- */

static void request_free(http_request *rq)
{
    reply_free(&rq->early);
    route_work_free(rq->work);
    free(rq->body);
    pthread_mutex_destroy(&rq->mu);
    free(rq);
}

/* Constant-time comparison of "Bearer <token>" with the key: the time depends
 * on the key's length only. */
static int bearer_matches(const char *header, const char *key)
{
    if (!header || strncasecmp(header, "Bearer ", 7))
        return 0;
    const char *tok = header + 7;
    while (*tok == ' ')
        tok++;
    size_t tl = strlen(tok), kl = strlen(key);
    volatile unsigned char diff = tl != kl;
    for (size_t i = 0; i < kl; i++)
        diff |= (unsigned char)key[i] ^ (unsigned char)(i < tl ? tok[i] : 0);
    return diff == 0;
}

static int accepts_media(const route *rt, const char *ct)
{
    if (!ct)
        return 0;
    for (int i = 0; rt->accepts[i]; i++) {
        size_t n = strlen(rt->accepts[i]);
        const char *p = ct;
        while (*p == ' ')
            p++;
        if (!strncasecmp(p, rt->accepts[i], n) && (p[n] == 0 || p[n] == ';' || p[n] == ' '))
            return 1;
    }
    return 0;
}

static void remote_address(struct MHD_Connection *conn, char *out, size_t len)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    snprintf(out, len, "?");
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)len);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)len);
}

/* Whether the bearer token opens the route. */
static int authorized(const serve_config *cfg, const route *rt, const char *authorization)
{
    if (rt->access == ACCESS_OPEN)
        return 1;
    if (rt->access == ACCESS_METRICS) {
        if (cfg->metrics_open || (!cfg->api_key && !cfg->metrics_key))
            return 1;
        return (cfg->api_key && bearer_matches(authorization, cfg->api_key)) ||
               (cfg->metrics_key && bearer_matches(authorization, cfg->metrics_key));
    }
    return !cfg->api_key || bearer_matches(authorization, cfg->api_key);
}

/* DNS rebinding: a web page on evil.example whose name comes to resolve to
 * this server's address can read its replies, but its requests then say
 * "Host: evil.example". Without a key, only an IP address, localhost or a
 * name from --allowed-hosts may be named. No Host at all is no browser. */
static int host_allowed(const serve_config *cfg, const char *host)
{
    if (cfg->api_key || !host)
        return 1;
    char name[256];
    size_t n;
    if (host[0] == '[') /* [IPv6]:port */
        return strchr(host, ']') != NULL;
    n = strcspn(host, ":");
    if (n == 0 || n >= sizeof name)
        return 0;
    memcpy(name, host, n);
    name[n] = 0;
    struct in_addr a4;
    if (inet_pton(AF_INET, name, &a4) == 1 || !strcasecmp(name, "localhost"))
        return 1;
    for (const char *p = cfg->allowed_hosts; p && *p;) {
        size_t k = strcspn(p, ",");
        while (k > 0 && *p == ' ')
            p++, k--;
        size_t kk = k;
        while (kk > 0 && p[kk - 1] == ' ')
            kk--;
        if ((kk == 1 && *p == '*') || (kk == n && !strncasecmp(p, name, n)))
            return 1;
        p += k;
        if (*p == ',')
            p++;
    }
    return 0;
}

/* What the headers alone decide: 404, OPTIONS, 403, 401, 405, 413, 415.
 * Returns 1 if the early reply must go out now rather than after the body. */
static int precheck(http_request *rq, const char *url, const char *method)
{
    http_server *s = rq->srv;
    const serve_config *cfg = s->app->cfg;
    struct MHD_Connection *c = rq->conn;
    reply *r = &rq->early;
    const route *rt = rq->rt = routes_find(url);
    const char *ct = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    unsigned long long declared = cl ? strtoull(cl, NULL, 10) : 0;
    int has_body = declared > 0 || (te && *te);
    snprintf(rq->content_type, sizeof rq->content_type, "%s", ct ? ct : "");
    rq->limit = rt ? routes_body_limit(s->app, rt, ct) : 0;
    rq->has_early = 1;
    if (!rt) {
        reply_error(r, 404, NULL, "no such route (see GET /openapi.yaml)");
    } else if (rt->access != ACCESS_OPEN && !host_allowed(cfg, host)) {
        reply_error(r, 403, NULL,
                    "Host '%.100s' is not allowed without an API key (DNS rebinding protection): name the "
                    "server by its IP address or localhost, or add the name with --allowed-hosts",
                    host);
    } else if (!strcmp(method, "OPTIONS")) {
        r->status = 204;
        reply_header(r, "Allow", "%s, OPTIONS", rt->allow);
        if (cfg->cors_origin) {
            reply_header(r, "Access-Control-Allow-Methods", "%s, OPTIONS", rt->allow);
            reply_header(r, "Access-Control-Allow-Headers", "Authorization, Content-Type");
            reply_header(r, "Access-Control-Max-Age", "600");
        }
    } else if (!authorized(cfg, rt, MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION))) {
        reply_error(r, 401, NULL, "missing or wrong bearer token");
        reply_header(r, "WWW-Authenticate", "Bearer");
    } else if (!route_allows(rt, method)) {
        reply_error(r, 405, NULL, "%s is not allowed on %s", method, rt->path);
        reply_header(r, "Allow", "%s, OPTIONS", rt->allow);
    } else if (!rt->post && has_body) {
        /* nothing to read: refuse before a byte of it is buffered */
        reply_error(r, 413, NULL, "%s %s takes no request body", method, rt->path);
    } else if (rt->post && declared > rq->limit) {
        reply_error(r, 413, NULL, "the body has %llu bytes, more than the limit of %zu for %s", declared, rq->limit,
                    rt->path);
    } else if (rt->post && !accepts_media(rt, ct)) {
        reply_error(r, 415, NULL, "send the header 'Content-Type: %s'%s%s%s (got %s%.60s%s)", rt->accepts[0],
                    rt->accepts[1] ? " or 'Content-Type: " : "", rt->accepts[1] ? rt->accepts[1] : "",
                    rt->accepts[1] ? "'" : "", ct ? "'" : "none", ct ? ct : "", ct ? "'" : "");
    } else {
        rq->has_early = 0;
        if (declared > 0) {
            /* not all of it up front: a client can declare much and send little */
            size_t first = declared < (64u << 10) ? (size_t)declared : (64u << 10);
            rq->body = malloc(first);
            rq->cap = rq->body ? first : 0;
        }
    }
    if (!rq->has_early)
        return 0;
    const char *expect = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_EXPECT);
    return (expect && strcasestr(expect, "100-continue")) || declared > rq->limit + DISCARD_EXTRA ||
           (has_body && !(rt && rt->post)); /* a body no route reads is not read to say so */
}

static int body_append(http_request *rq, const char *data, size_t n)
{
    const size_t max = rq->limit;
    rq->received += n;
    if (rq->has_early || rq->overflow)
        return rq->received <= max + DISCARD_EXTRA ? 0 : -1;
    if (rq->len + n > max) {
        rq->overflow = 1;
        free(rq->body);
        rq->body = NULL;
        rq->len = rq->cap = 0;
        return 0;
    }
    if (rq->len + n > rq->cap) {
        size_t cap = rq->cap ? rq->cap : 4096;
        while (cap < rq->len + n)
            cap *= 2;
        if (cap > max)
            cap = max;
        unsigned char *grown = realloc(rq->body, cap);
        if (!grown)
            return -1;
        rq->body = grown, rq->cap = cap;
    }
    memcpy(rq->body + rq->len, data, n);
    rq->len += n;
    return 0;
}

static void on_job_done(job *j, void *ctx)
{
    (void)j;
    http_request *rq = ctx;
    pthread_mutex_lock(&rq->mu);
    rq->job_done = 1;
    watch_remove(rq->srv, rq);
    int orphaned = rq->orphaned;
    if (rq->suspended && !orphaned) {
        rq->suspended = 0;
        MHD_resume_connection(rq->conn);
    }
    pthread_mutex_unlock(&rq->mu);
    if (orphaned) /* the connection ended while the job ran: nobody else will free it */
        request_free(rq);
}

/* The body is complete: run the route. */
static enum MHD_Result dispatch(http_request *rq)
{
    http_server *s = rq->srv;
    reply r = {0};
    if (rq->overflow) {
        reply_error(&r, 413, NULL, "the body is larger than the limit of %zu bytes for %s", rq->limit, rq->rt->path);
        return send_reply(rq, &r);
    }
    route_input in = {.method = rq->method,
                      .content_type = rq->content_type[0] ? rq->content_type : NULL,
                      .body = rq->body,
                      .body_len = rq->len};
    route_work *w = rq->rt->start(s->app, &in, &r);
    free(rq->body);
    rq->body = NULL;
    rq->len = rq->cap = 0;
    if (!w)
        return send_reply(rq, &r);

    job *j = route_work_job(w);
    j->done = on_job_done;
    j->done_ctx = rq;
    rq->images = route_work_images(w);
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    rq->fd = ci ? ci->connect_fd : -1;

    pthread_mutex_lock(&rq->mu);
    rq->work = w;
    submit_result res = batcher_submit(s->app->b, j);
    if (res != SUBMIT_OK) {
        rq->work = NULL;
        pthread_mutex_unlock(&rq->mu);
        routes_submit_error(s->app, res, j, &r);
        route_work_free(w);
        return send_reply(rq, &r);
    }
    rq->state = RQ_WAITING;
    MHD_suspend_connection(rq->conn);
    rq->suspended = 1;
    if (rq->fd >= 0)
        watch_add(s, rq);
    pthread_mutex_unlock(&rq->mu);
    return MHD_YES;
}

/* Resumed: the job has ended. */
static enum MHD_Result finish(http_request *rq)
{
    reply r = {0};
    route_work *w = rq->work;
    rq->work = NULL;
    job *j = route_work_job(w);
    rq->queue_wait = j->t_first > 0 ? j->t_first - j->t_submit : -1;
    rq->nfe = route_work_nfe(w);
    rq->rt->finish(rq->srv->app, w, &r);
    return send_reply(rq, &r);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_data_size,
                                 void **con_cls)
{
    http_server *s = cls;
    http_request *rq = *con_cls;
    if (!rq) {
        rq = calloc(1, sizeof *rq);
        if (!rq)
            return MHD_NO;
        rq->srv = s;
        rq->conn = conn;
        rq->id = atomic_fetch_add(&s->next_id, 1) + 1;
        rq->t_start = clock_now();
        rq->queue_wait = -1;
        rq->nfe = -1;
        rq->fd = -1;
        pthread_mutex_init(&rq->mu, NULL);
        snprintf(rq->method, sizeof rq->method, "%s", method);
        rq->http11 = version && !strcmp(version, MHD_HTTP_VERSION_1_1);
        remote_address(conn, rq->remote, sizeof rq->remote);
        *con_cls = rq;
        atomic_fetch_add(&s->active, 1);
        if (precheck(rq, url, method)) {
            slot_arm(s, conn, 0);
            reply early = rq->early;
            memset(&rq->early, 0, sizeof rq->early);
            rq->has_early = 0;
            return send_reply(rq, &early);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        int rc = body_append(rq, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return rc ? MHD_NO : MHD_YES;
    }
    if (rq->state == RQ_WAITING)
        return finish(rq);
    slot_arm(s, conn, 0); /* the whole request is in */
    if (rq->has_early) {
        reply early = rq->early;
        memset(&rq->early, 0, sizeof rq->early);
        rq->has_early = 0;
        return send_reply(rq, &early);
    }
    return dispatch(rq);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    http_server *s = cls;
    http_request *rq = *con_cls;
    slot_arm(s, conn, 1); /* a kept-alive connection owes its next request in time */
    if (!rq)
        return;
    *con_cls = NULL;
    int status = rq->status ? rq->status : 499;
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && status < 400)
        status = 499; /* the reply did not reach the client */
    double latency = clock_now() - rq->t_start;
    const char *label = routes_label(rq->rt);
    metrics_request(s->app->mx, label, status, latency);
    log_request(&(log_request_fields){.method = rq->method,
                                      .route = label,
                                      .remote = rq->remote,
                                      .status = status,
                                      .images = rq->images,
                                      .nfe = rq->nfe,
                                      .queue_wait_s = rq->queue_wait,
                                      .latency_s = latency,
                                      .bytes_in = rq->received,
                                      .bytes_out = rq->bytes_out});
    /* A job still running (the daemon closed a suspended connection): hand
     * the request to on_job_done, which frees it. Under rq->mu so that
     * on_job_done cannot run (and free it) in between. */
    pthread_mutex_lock(&rq->mu);
    int running = rq->work && !rq->job_done;
    if (running) {
        rq->orphaned = 1;
        rq->suspended = 0;
        watch_remove(s, rq);
        batcher_cancel(s->app->b, route_work_job(rq->work));
    }
    pthread_mutex_unlock(&rq->mu);
    if (!running)
        request_free(rq);
    atomic_fetch_sub(&s->active, 1);
}

/* libmicrohttpd's messages, one line each, except that a message repeated
 * within a second of its last line (one per refused connection, when a
 * client floods) is counted, not written; the count goes out before the
 * next line that is written. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static char last[512];
    static double last_t;
    static long dropped;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = 0;
    double now = clock_now();
    pthread_mutex_lock(&mu);
    if (!strcmp(msg, last) && now - last_t < 1.0) {
        dropped++;
        pthread_mutex_unlock(&mu);
        return;
    }
    long repeats = dropped;
    char prev[sizeof last];
    memcpy(prev, last, sizeof prev);
    dropped = 0;
    last_t = now;
    snprintf(last, sizeof last, "%s", msg);
    pthread_mutex_unlock(&mu);
    if (repeats)
        log_line("warn", json_pack("{s:s, s:I}", "source", "libmicrohttpd", "repeats", (json_int_t)repeats),
                 "%s (%ld more times)", prev, repeats);
    log_line("warn", json_pack("{s:s}", "source", "libmicrohttpd"), "%s", msg);
}

/* ---- server ---------------------------------------------------------------------------------- */

http_server *http_start(app *a, char *err, size_t errlen)
{
    const serve_config *cfg = a->cfg;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    int gai = getaddrinfo(cfg->host, port, &hints, &ai);
    if (gai) {
        snprintf(err, errlen, "cannot resolve --host '%s': %s", cfg->host, gai_strerror(gai));
        return NULL;
    }
    http_server *s = calloc(1, sizeof *s);
    if (!s || pipe2(s->wake, O_NONBLOCK | O_CLOEXEC)) {
        snprintf(err, errlen, "out of memory or pipes");
        free(s);
        freeaddrinfo(ai);
        return NULL;
    }
    s->app = a;
    pthread_mutex_init(&s->watch_mu, NULL);
    pthread_mutex_init(&s->conn_mu, NULL);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    s->daemon = MHD_start_daemon(
        flags, (uint16_t)cfg->port, NULL, NULL, on_access, s, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        /* a pool of one is no pool: MHD warns, so pass 0 (its polling thread serves) */
        MHD_OPTION_THREAD_POOL_SIZE, cfg->http_threads > 1 ? (unsigned)cfg->http_threads : 0u,
        MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)cfg->max_connections, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->conn_timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->max_per_ip,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->daemon) {
        snprintf(err, errlen, "cannot listen on %s:%d (%s)", cfg->host, cfg->port,
                 errno ? strerror(errno) : "port in use?");
        close(s->wake[0]), close(s->wake[1]);
        pthread_mutex_destroy(&s->watch_mu);
        pthread_mutex_destroy(&s->conn_mu);
        free(s);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : cfg->port;
    pthread_create(&s->watcher, NULL, watch_main, s);
    return s;
}

int http_port(const http_server *s) { return s->port; }

void http_quiesce(http_server *s)
{
    MHD_socket fd = MHD_quiesce_daemon(s->daemon);
    if (fd != MHD_INVALID_SOCKET)
        close(fd);
}

int http_active_requests(http_server *s) { return atomic_load(&s->active); }

void http_stop(http_server *s)
{
    if (!s)
        return;
    MHD_stop_daemon(s->daemon);
    pthread_mutex_lock(&s->watch_mu);
    s->watch_stop = 1;
    pthread_mutex_unlock(&s->watch_mu);
    watch_wake(s);
    pthread_join(s->watcher, NULL);
    close(s->wake[0]), close(s->wake[1]);
    free(s->watched);
    pthread_mutex_destroy(&s->watch_mu);
    pthread_mutex_destroy(&s->conn_mu); /* stopping the daemon closed every connection and freed its slot */
    free(s);
}
