/* SPDX-License-Identifier: MIT */
/* Listeners: bind, listen, accept (within tether_listen_opts::max_conns),
 * and hand new connections to conn.c.
 *
 * Running out of file descriptors is the classic way an accept loop spins
 * at 100 % CPU: the listening socket stays readable while every accept()
 * fails with EMFILE. Here the listener stops watching the socket, waits
 * with a doubling back-off (10 ms up to 1 s), and tries again; clients wait
 * in the kernel's backlog meanwhile and are served once descriptors free up.
 * (Linux keeps a client whose accept() failed in the backlog; some
 * sandboxed kernels dequeue it first and drop it.) */
#include "conn_core.h"
#include "tls.h"
#include "ws.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Accepts per readiness report, at most (see listener_on_readable()). */
#define ACCEPTS_PER_EVENT 64
#define BACKOFF_MIN_MS 10u
#define BACKOFF_MAX_MS 1000u

struct tether_listener {
    struct tether__handle h; /* active from listen to close */
    tether_loop *loop;
    struct tether__io io;
    struct tether__conn_cfg *cfg;
    tether_listen_opts o;
    struct tether__tnode backoff_timer;
    uint32_t backoff_ms;
    uint8_t burst;      /* accepts the last report allowed, 1..ACCEPTS_PER_EVENT */
    uint64_t full_poll; /* loop->polls when a report last used its whole burst */
    uint64_t accepted;
    uint64_t rejected;
    bool rejecting; /* at max_conns: reported once per episode */
    struct tether__pending free_pend;
    bool closed;
    bool is_unix;
    bool plain;        /* accepted sockets need no handshake: no TLS, WebSocket or PROXY header */
    uint8_t opts_mode; /* LOPTS_*: how accepted sockets get their options */
    bool direct;       /* plain, options inherited, no group: listener_adopt_direct() */
    int port;
    char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1]; /* to unlink, "" if none */
    char url[TETHER__HOST_MAX + 128 + TETHER__WS_PATH_MAX];
    /* Loop groups (group.c): shared counters, hand-off, close notice. */
    struct tether__lstats *gst;
    tether__listener_handoff_fn handoff;
    void *group_ud;
    void (*group_closed)(void *ud);
};

/* Accepted sockets get the connection options (TCP_NODELAY, keepalive,
 * TCP_USER_TIMEOUT) from the listening socket, where the kernel copies
 * them (checked on the first connection), or one by one. */
enum {
    LOPTS_UNKNOWN,
    LOPTS_INHERITED,
    LOPTS_PER_CONN
};

void tether_listen_opts_init_sized(tether_listen_opts *opts, size_t size)
{
    if (opts == NULL || size < sizeof(size_t)) {
        return;
    }
    tether_listen_opts d;
    memset(&d, 0, sizeof d);
    d.size = size;
    d.backlog = 1024;
    d.max_conns = TETHER_MAX_CONNS_DEFAULT;
    tether__sized_fill(opts, size, &d, sizeof d);
}

static void listener_report(tether_listener *l, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void listener_report(tether_listener *l, int err, const char *fmt, ...)
{
    char msg[TETHER_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* Also logged: a server without on_error would otherwise never hear of
     * accept failures or of clients that fail their TLS handshake. */
    tether__log(TETHER_LOG_WARN, "%s", msg);
    if (l->o.on_error != NULL) {
        l->o.on_error(l, err, msg, l->o.userdata);
    }
}

void tether__listener_report_conn(tether_listener *l, int err, const char *detail)
{
    listener_report(l, err, "%s", detail);
}

static void listener_on_readable(struct tether__io *io, unsigned revents);

/* At max_conns: the client is accepted and closed at once, so that it
 * hears at once instead of waiting in the backlog, and the listening
 * socket does not stay readable (a busy loop). Reported once per episode,
 * which ends at the next accept below the limit. */
static void listener_reject(tether_listener *l, int fd, const union tether__peer_addr *pa)
{
    close(fd);
    l->rejected++;
    if (l->gst != NULL) {
        atomic_fetch_add_explicit(&l->gst->rejected, 1, memory_order_relaxed);
    }
    if (!l->rejecting) {
        char peer[160] = "a client";
        if (pa->sa.sa_family == AF_INET || pa->sa.sa_family == AF_INET6) {
            tether__addr_format(&pa->sa, sizeof *pa, peer, sizeof peer);
        }
        l->rejecting = true;
        listener_report(l, TETHER_EAGAIN,
                        "%s: at the limit of %zu connections (max_conns); closing new ones "
                        "(the first: %s) until some end",
                        l->url, l->o.max_conns, peer);
    }
}

static void listener_backoff_cb(struct tether__tnode *n)
{
    tether_listener *l = tether__container_of(n, tether_listener, backoff_timer);
    if (!l->closed) {
        /* Try at once rather than wait for the next readiness report:
         * clients may have queued up while accepts were paused. */
        tether__io_set(l->loop, &l->io, TETHER_EV_READ);
        listener_on_readable(&l->io, TETHER_EV_READ);
    }
}

/* accept4() failed with e: true when the next client may do better. Out
 * of line: it keeps the accept loop short. */
__attribute__((noinline, cold)) static bool listener_accept_failed(tether_listener *l, int e)
{
    if (e == EAGAIN || e == EWOULDBLOCK) {
        return false;
    }
    if (e == EINTR || e == ECONNABORTED || e == EPROTO) {
        return true; /* that client gave up; the next may be fine */
    }
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
        bool first = l->backoff_ms == 0;
        l->backoff_ms = first ? BACKOFF_MIN_MS : TETHER__MIN(l->backoff_ms * 2, BACKOFF_MAX_MS);
        tether__io_set(l->loop, &l->io, 0);
        tether__tnode_start(l->loop, &l->backoff_timer, l->backoff_ms);
        if (first) {
            listener_report(l, tether__errno_to_err(e),
                            "accept on %s failed: %s; pausing accepts and retrying", l->url,
                            strerror(e));
        }
        return false;
    }
    listener_report(l, tether__errno_to_err(e), "accept on %s failed: %s", l->url, strerror(e));
    return false;
}

/* tether__conn_attach() for an accepted plain socket (no TLS, WebSocket
 * or PROXY header): established at once. conn.c's conn_became_ready()
 * for a new accepted connection: not dialled, no handshake deadline, its
 * accept notice still to come, and a socket to add to the epoll set. A
 * failure to watch it fails the connection. Inline in the accept loop. */
static inline __attribute__((always_inline)) void listener_attach_plain(tether_conn *c, int fd,
                                                                        bool is_unix)
{
    tether__tcp_transport_init(&c->tcp, fd, is_unix);
    c->tr = &c->tcp;
    c->io.fd = fd; /* (its watcher is not registered yet: tether__conn_alloc()) */
    c->io.cb = tether__conn_io_plain_cb; /* (plain for life) */
    tether__conn_mark_ready(c);
    tether__conn_report_accept(c);
    unsigned ev = TETHER_EV_READ;
    if (c->cfg->on_accept != NULL) {
        if (c->state != TETHER__CS_READY) {
            return;
        }
        ev = tether__conn_ready_events(c); /* (it may have paused, which watches it) */
    }
    int rv = TETHER__LIKELY(!c->io.registered) ? tether__io_add(c->h.loop, &c->io, ev)
                                               : tether__io_set(c->h.loop, &c->io, ev);
    if (rv != TETHER_OK) {
        tether__conn_fail(c, rv, "cannot watch the socket: %s", tether_strerror(rv));
        return;
    }
    if (c->wq_head != NULL) {
        tether__conn_todo(c, TETHER__CT_FLUSH); /* sent from on_accept */
    }
}

/* Whether accepted sockets can take listener_adopt_direct(). */
static void listener_set_direct(tether_listener *l)
{
    l->direct = l->plain && l->opts_mode == LOPTS_INHERITED && l->gst == NULL && l->handoff == NULL;
}

/* The connection for an accepted socket, counted against max_conns and
 * hidden until on_accept; NULL (the socket closed, the failure reported)
 * when out of memory. */
static inline __attribute__((always_inline)) tether_conn *
listener_new_conn(tether_listener *l, int fd, const union tether__peer_addr *pa)
{
    tether_conn *c = tether__conn_alloc(l->loop, l->cfg, TETHER__CS_HANDSHAKING);
    if (c == NULL) {
        close(fd);
        listener_report(l, TETHER_ENOMEM, "accept on %s: out of memory", l->url);
        return NULL;
    }
    c->flags |= TETHER__CF_ACCEPTED;
    c->h.hidden = true; /* not the application's until on_accept */
    l->cfg->accepted++;
    l->accepted++;
    tether__conn_set_peer(c, pa);
    return c;
}

/* tether__listener_adopt(), inline in the accept loop. */
static inline __attribute__((always_inline)) void
listener_adopt(tether_listener *l, int fd, const union tether__peer_addr *pa, bool counted)
{
    struct tether__lstats *gst = l->gst;
    if (gst != NULL && !counted) {
        atomic_fetch_add_explicit(&gst->active, 1, memory_order_relaxed);
    }
    if (l->o.max_conns != 0 && l->cfg->accepted >= l->o.max_conns) {
        listener_reject(l, fd, pa);
        goto uncount;
    }
    if (l->rejecting) {
        l->rejecting = false;
        tether__log(TETHER_LOG_INFO, "%s: below %zu connections again, accepting", l->url,
                    l->o.max_conns);
    }
    if (l->opts_mode == LOPTS_UNKNOWN) {
        l->opts_mode =
            tether__sock_opts_inherited(fd, l->cfg, l->is_unix) ? LOPTS_INHERITED : LOPTS_PER_CONN;
        listener_set_direct(l);
    }
    if (l->opts_mode == LOPTS_PER_CONN) {
        tether__sock_apply_opts(fd, l->cfg, l->is_unix);
    }
    tether_conn *c = listener_new_conn(l, fd, pa);
    if (c == NULL) {
        goto uncount;
    }
    if (gst != NULL) {
        /* conn.c takes it out of gst->active when it frees the connection. */
        atomic_fetch_add_explicit(&gst->accepted, 1, memory_order_relaxed);
    }
    if (l->plain) {
        listener_attach_plain(c, fd, l->is_unix);
        return;
    }
    int rv = tether__conn_attach(c, fd, l->is_unix, NULL, true, NULL);
    if (rv != TETHER_OK) {
        listener_report(l, rv, "accept on %s: %s", l->url, tether_strerror(rv));
        tether__conn_end(c, rv);
    }
    return;

uncount:
    if (gst != NULL) {
        atomic_fetch_sub_explicit(&gst->active, 1, memory_order_relaxed);
    }
}

/* listener_adopt() for the common listener (l->direct): a plain one in
 * no loop group whose sockets inherit their options, below max_conns. */
static inline __attribute__((always_inline)) void
listener_adopt_direct(tether_listener *l, int fd, const union tether__peer_addr *pa)
{
    if (TETHER__UNLIKELY((l->o.max_conns != 0 && l->cfg->accepted >= l->o.max_conns) ||
                         l->rejecting)) {
        tether__listener_adopt(l, fd, pa, false); /* rejects it, or ends the episode */
        return;
    }
    tether_conn *c = listener_new_conn(l, fd, pa);
    if (c != NULL) {
        listener_attach_plain(c, fd, l->is_unix);
    }
}

/* The listening socket is level-triggered: a client left in the backlog
 * is reported again by the next epoll_wait. So the listener accepts only
 * as many as it expects (the burst) and does not ask for the EAGAIN that
 * would confirm the backlog empty: the common report, one client, costs
 * one accept4() instead of two. A queue shows as a report in the
 * iteration right after one that used its whole burst: then the burst
 * doubles, up to ACCEPTS_PER_EVENT; otherwise it is one. */
static void listener_on_readable(struct tether__io *io, unsigned revents)
{
    (void)revents;
    tether_listener *l = tether__container_of(io, tether_listener, io);
    uint64_t poll = l->loop->polls;
    int burst = l->full_poll + 1 == poll ? TETHER__MIN(l->burst * 2, ACCEPTS_PER_EVENT) : 1;
    l->burst = (uint8_t)burst;
    int i;
    for (i = 0; i < burst && !l->closed; i++) {
        union tether__peer_addr pa;
        socklen_t pl = sizeof pa;
        pa.sa.sa_family = AF_UNSPEC; /* (what accept4() does not fill in) */
        int fd = accept4(l->io.fd, &pa.sa, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (listener_accept_failed(l, errno)) {
                continue;
            }
            return;
        }
        if (l->backoff_ms != 0) {
            l->backoff_ms = 0;
        }
        if (TETHER__LIKELY(l->direct)) {
            listener_adopt_direct(l, fd, &pa);
            continue;
        }
        if (l->handoff != NULL) {
            l->handoff(l->group_ud, fd, &pa);
            continue;
        }
        listener_adopt(l, fd, &pa, false);
    }
    if (i == burst) {
        l->full_poll = poll; /* more may be waiting */
    }
}

void tether__listener_adopt(tether_listener *l, int fd, const union tether__peer_addr *pa,
                            bool counted)
{
    listener_adopt(l, fd, pa, counted);
}

static void listener_free_cb(struct tether__pending *p)
{
    tether_listener *l = tether__container_of(p, tether_listener, free_pend);
    l->loop->handles--;
    tether__conn_cfg_unref(l->cfg);
    free(l);
}

static void listener_close_obj(void *obj)
{
    tether_listener_close(obj);
}

static void listener_format_url(tether_listener *l, const struct sockaddr_storage *ss, socklen_t sl)
{
    char addr[200];
    if (l->is_unix) {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)ss;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t pl = sl > off ? (size_t)sl - off : 0;
        if (pl > 0 && sun->sun_path[0] == '\0') {
            snprintf(l->url, sizeof l->url, "unix://@%.*s", (int)(pl - 1), sun->sun_path + 1);
        } else {
            snprintf(l->url, sizeof l->url, "unix://%.*s", (int)strnlen(sun->sun_path, pl),
                     sun->sun_path);
        }
        return;
    }
    tether__addr_format((const struct sockaddr *)ss, sl, addr, sizeof addr);
    const struct tether__ws_cfg *ws = l->cfg->ws;
    snprintf(l->url, sizeof l->url, "%s%s://%s%s", ws != NULL ? "w" : "",
             l->cfg->tls != NULL ? (ws != NULL ? "ss" : "tls") : (ws != NULL ? "s" : "tcp"), addr,
             ws != NULL && !ws->any_path ? ws->path : "");
    if (ss->ss_family == AF_INET) {
        l->port = ntohs(((const struct sockaddr_in *)ss)->sin_port);
    } else {
        l->port = ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    }
}

/* A Unix socket file left behind by a process that died would make bind()
 * fail forever. Remove it only if nobody answers on it. */
static bool unix_path_is_stale(const struct sockaddr_storage *ss, socklen_t sl)
{
    const struct sockaddr_un *sun = (const struct sockaddr_un *)ss;
    if (sun->sun_path[0] == '\0') {
        return false; /* abstract names vanish with their owner */
    }
    struct stat st;
    if (stat(sun->sun_path, &st) != 0 || !S_ISSOCK(st.st_mode)) {
        return false;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return false;
    }
    bool stale = connect(fd, (const struct sockaddr *)ss, sl) != 0 && errno == ECONNREFUSED;
    close(fd);
    return stale;
}

/* The part of tether_listen() before the socket: checks the arguments and
 * builds the listener with its connection configuration. */
static int listener_prepare(tether_listener **out, tether_loop *loop, const char *url,
                            const tether_listen_opts *opts, struct tether__url *up,
                            tether_error *out_err)
{
    tether__error_clear(out_err);
    if (out == NULL) {
        return tether__set_error(out_err, TETHER_EINVAL, "out is NULL");
    }
    *out = NULL;
    if (loop == NULL) {
        return tether__set_error(out_err, TETHER_EINVAL, "loop is NULL");
    }
    if (opts != NULL && opts->size < sizeof(size_t)) {
        return tether__set_error(out_err, TETHER_EINVAL,
                                 "options not initialised with tether_listen_opts_init()");
    }
    struct tether__url u;
    int rv = tether__url_parse(url, true, &u, out_err);
    if (rv != TETHER_OK) {
        return rv;
    }
    tether_listener *l = calloc(1, sizeof *l);
    if (l == NULL) {
        return tether__set_error(out_err, TETHER_ENOMEM, "out of memory");
    }
    tether_listen_opts_init(&l->o);
    if (opts != NULL) {
        tether__opts_merge(&l->o, sizeof l->o, opts);
        l->o.size = sizeof l->o;
    }
    if (l->o.backlog <= 0) {
        l->o.backlog = 1024;
    }
    if ((l->o.proxy_protocol & ~(unsigned)(TETHER_PROXY_V1 | TETHER_PROXY_V2)) != 0) {
        unsigned bad = l->o.proxy_protocol;
        free(l);
        return tether__set_error(out_err, TETHER_EINVAL,
                                 "proxy_protocol must be TETHER_PROXY_V1, TETHER_PROXY_V2, both "
                                 "or 0, not 0x%x",
                                 bad);
    }
    rv = tether__conn_cfg_new_role(&l->cfg, l->o.conn_opts, true, out_err);
    if (rv != TETHER_OK) {
        free(l);
        return rv;
    }
    l->cfg->pp_accept = l->o.proxy_protocol;
    l->cfg->pp_timeout_ms =
        l->o.proxy_timeout_ms == 0 ? TETHER_PROXY_TIMEOUT_DEFAULT : l->o.proxy_timeout_ms;
    l->o.conn_opts = NULL; /* copied into cfg */
    if (u.scheme == TETHER__SCHEME_TLS) {
        rv = tether__conn_cfg_set_tls(l->cfg, true, out_err);
        if (rv != TETHER_OK) {
            tether__conn_cfg_unref(l->cfg);
            free(l);
            return rv;
        }
    }
    rv = u.ws ? tether__ws_cfg_set(l->cfg, &u, out_err) : TETHER_OK;
    if (rv != TETHER_OK) {
        tether__conn_cfg_unref(l->cfg);
        free(l);
        return rv;
    }
    l->cfg->on_accept = l->o.on_accept;
    l->cfg->accept_ud = l->o.userdata;
    l->cfg->listener = l;
    l->loop = loop;
    l->is_unix = u.scheme == TETHER__SCHEME_UNIX;
    l->plain = l->cfg->tls == NULL && l->cfg->ws == NULL && l->cfg->pp_accept == 0;
    tether__tnode_init(&l->backoff_timer, listener_backoff_cb);
    tether__pending_init(&l->free_pend, listener_free_cb);
    l->burst = 1;
    l->full_poll = UINT64_MAX - 1; /* (not the poll before any) */
    *up = u;
    *out = l;
    return TETHER_OK;
}

int tether__listen_sockless(tether_listener **out, tether_loop *loop, const char *url,
                            const tether_listen_opts *opts, tether_error *out_err)
{
    struct tether__url u;
    int rv = listener_prepare(out, loop, url, opts, &u, out_err);
    if (rv != TETHER_OK) {
        return rv;
    }
    tether_listener *l = *out;
    *out = NULL; /* until it is listening */
    l->io.fd = -1;
    snprintf(l->url, sizeof l->url, "%s", url);
    tether__handle_init(&l->h, loop, TETHER_HANDLE_LISTENER, l, listener_close_obj);
    tether__handle_start(&l->h);
    *out = l;
    return TETHER_OK;
}

int tether_listen(tether_listener **out, tether_loop *loop, const char *url,
                  const tether_listen_opts *opts, tether_error *out_err)
{
    struct tether__url u;
    int rv = listener_prepare(out, loop, url, opts, &u, out_err);
    if (rv != TETHER_OK) {
        return rv;
    }
    tether_listener *l = *out;
    *out = NULL; /* until it is listening */
    struct sockaddr_storage ss;
    socklen_t sl;
    rv = tether__url_sockaddr(&u, &ss, &sl);
    if (rv == TETHER_EAGAIN) {
        if (strcmp(u.host, "localhost") == 0) {
            struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
            memset(&ss, 0, sizeof ss);
            sin->sin_family = AF_INET;
            sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            sin->sin_port = htons((uint16_t)u.port);
            sl = sizeof *sin;
            rv = TETHER_OK;
        } else {
            tether__conn_cfg_unref(l->cfg);
            free(l);
            return tether__set_error(out_err, TETHER_EINVAL,
                                     "listen on '%s': use a numeric address, '*' or localhost "
                                     "(a name would need a blocking lookup)",
                                     url);
        }
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        tether__conn_cfg_unref(l->cfg);
        free(l);
        return tether__set_error(out_err, tether__errno_to_err(e), "listen on %s: socket: %s", url,
                                 strerror(e));
    }
    if (!l->is_unix) {
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (l->o.reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
            int e = errno;
            close(fd);
            tether__conn_cfg_unref(l->cfg);
            free(l);
            return tether__set_error(out_err, tether__errno_to_err(e),
                                     "listen on %s: SO_REUSEPORT: %s", url, strerror(e));
        }
    }
    if (!l->is_unix) {
        tether__sock_apply_opts(fd, l->cfg, false); /* inherited by accepted sockets */
    }
    int r = bind(fd, (struct sockaddr *)&ss, sl);
    if (r != 0 && errno == EADDRINUSE && l->is_unix && unix_path_is_stale(&ss, sl)) {
        unlink(((struct sockaddr_un *)&ss)->sun_path);
        r = bind(fd, (struct sockaddr *)&ss, sl);
    }
    if (r != 0 || listen(fd, l->o.backlog) != 0) {
        int e = errno;
        close(fd);
        tether__conn_cfg_unref(l->cfg);
        free(l);
        return tether__set_error(out_err, tether__errno_to_err(e), "listen on %s: %s", url,
                                 strerror(e));
    }
    if (l->is_unix && u.path[0] != '\0') {
        snprintf(l->unix_path, sizeof l->unix_path, "%s", u.path);
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof bound;
    if (getsockname(fd, (struct sockaddr *)&bound, &bl) == 0) {
        listener_format_url(l, &bound, bl);
    } else {
        snprintf(l->url, sizeof l->url, "%s", url);
    }
    tether__io_init(&l->io, fd, listener_on_readable);
    rv = tether__io_set(loop, &l->io, TETHER_EV_READ);
    if (rv != TETHER_OK) {
        close(fd);
        if (l->unix_path[0] != '\0') {
            unlink(l->unix_path);
        }
        tether__conn_cfg_unref(l->cfg);
        free(l);
        return tether__set_error(out_err, rv, "listen on %s: cannot watch the socket", url);
    }
    tether__handle_init(&l->h, loop, TETHER_HANDLE_LISTENER, l, listener_close_obj);
    tether__handle_start(&l->h);
    tether__log(TETHER_LOG_INFO, "listening on %s", l->url);
    *out = l;
    return TETHER_OK;
}

void tether_listener_close(tether_listener *l)
{
    if (l == NULL || l->closed) {
        return;
    }
    l->closed = true;
    tether__io_stop(l->loop, &l->io);
    if (l->io.fd >= 0) {
        close(l->io.fd);
    }
    l->io.fd = -1;
    if (l->unix_path[0] != '\0') {
        unlink(l->unix_path);
    }
    tether__tnode_stop(l->loop, &l->backoff_timer);
    /* Connections still handshaking outlive us; they must not call back
     * into a freed listener. */
    l->cfg->listener = NULL;
    /* Off the registry and no longer active, but still counted in
     * loop->handles until freed from the loop: we may be inside our own
     * accept dispatch. */
    tether__handle_detach(&l->h);
    tether__pending_queue(l->loop, &l->free_pend);
    if (l->group_closed != NULL) {
        l->group_closed(l->group_ud);
    }
}

void tether__listener_set_group(tether_listener *l, struct tether__lstats *st,
                                tether__listener_handoff_fn handoff, void *ud,
                                void (*closed)(void *ud))
{
    l->gst = st;
    l->cfg->lstats = st;
    l->handoff = handoff;
    l->group_ud = ud;
    l->group_closed = closed;
    listener_set_direct(l);
}

/* Before a graceful shutdown closes the socket: accepts the connections
 * the kernel has completed and queued, which the close would reset, losing
 * what their clients have sent already (e.g. through a proxy that relays
 * them at once). They are drained like the others. Stops at the first
 * failure (EAGAIN: the queue is empty) and after SOMAXCONN of them. A
 * group's acceptor hands its sockets to other loops, whose drains may be
 * over: its queue is left as it was. */
static void listener_accept_queued(tether_listener *l)
{
    for (int i = 0; i < SOMAXCONN && !l->closed && l->handoff == NULL; i++) {
        union tether__peer_addr pa;
        socklen_t pl = sizeof pa;
        memset(&pa, 0, sizeof pa);
        int fd = accept4(l->io.fd, &pa.sa, &pl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) {
                continue;
            }
            return;
        }
        tether__listener_adopt(l, fd, &pa, false);
    }
}

int tether_listener_shutdown(tether_listener *l, int deadline_ms, tether_shutdown_cb on_done,
                             void *ud)
{
    if (l == NULL || l->closed) {
        return TETHER_EINVAL;
    }
    listener_accept_queued(l);
    if (l->closed) {
        return TETHER_EINVAL; /* closed by an on_accept it ran */
    }
    int rv = tether__shutdown_start(l->loop, l->cfg, deadline_ms, on_done, ud);
    if (rv == TETHER_OK) {
        tether_listener_close(l); /* (after the walk: it must still see l's connections) */
    }
    return rv;
}

int tether_listener_port(const tether_listener *l)
{
    return l != NULL ? l->port : 0;
}

const char *tether_listener_url(const tether_listener *l)
{
    return l != NULL ? l->url : "";
}

void tether_listener_unref(tether_listener *l)
{
    if (l != NULL) {
        tether__handle_unref(&l->h);
    }
}

void tether_listener_ref(tether_listener *l)
{
    if (l != NULL) {
        tether__handle_ref(&l->h);
    }
}

int tether_listener_get_stats_sized(const tether_listener *l, tether_listener_stats *st,
                                    size_t size)
{
    if (l == NULL || st == NULL || size < sizeof(size_t)) {
        return TETHER_EINVAL;
    }
    tether_listener_stats s;
    memset(&s, 0, sizeof s);
    s.size = size;
    s.accepted = l->accepted;
    s.rejected = l->rejected;
    s.active = l->cfg->accepted;
    tether__sized_fill(st, size, &s, sizeof s);
    return TETHER_OK;
}
