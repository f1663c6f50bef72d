/* SPDX-License-Identifier: MIT */
/* Dialling one numeric address or a Unix path (connect.c does names,
 * several addresses and SRV). Such an address is its own single candidate: there is
 * nothing to choose between, no stagger, and the one attempt's share of
 * the deadline is all of it (cand_limit() gives it no timer of its own).
 * Such a dial needs no dialer: the connection's own watcher waits for the
 * connect, its timer is the deadline (conn.c reports a timeout with the
 * words dial_report() uses for one numeric address), and a failure reads
 * as dial_report() words it. This saves the allocations and most of the
 * bookkeeping of every dial to an address (the common case for a service
 * behind a fixed IP or a Unix socket). TLS keeps the dialer, which holds
 * the host name the handshake needs. */

#include "conn.h"
#include "dial.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <unistd.h>

/* The connect deadline covers the whole set-up (resolution, attempts,
 * the TLS handshake) from here. The timer lives in c->ex, which this
 * allocates: a dial that has to wait, or needs a dialer, has one. Without
 * a deadline the idle timer's deadline field holds the start, for
 * direct_started(). */
int tether__dial_arm(tether_conn *c)
{
    struct tether__conn_extra *ex = tether__conn_extra(c);
    if (ex == NULL) {
        return TETHER_ENOMEM;
    }
    int ms = c->cfg->o.connect_timeout_ms;
    if (ms >= 0) {
        tether__tnode_start(c->h.loop, &ex->timer, (uint64_t)ms);
    } else {
        ex->timer.deadline = tether__loop_time(c->h.loop);
    }
    return TETHER_OK;
}

/* When a direct dial started, in loop ms, for "timed out after N ms" when
 * the kernel gives up before our deadline: the deadline less the timeout,
 * or the start tether__dial_arm() stored; a dial that never waited (no c->ex)
 * started now. */
static uint64_t direct_started(const tether_conn *c)
{
    if (c->ex == NULL) {
        return tether__loop_time(c->h.loop);
    }
    if (tether__tnode_active(&c->ex->timer)) {
        return c->ex->timer.deadline - (uint64_t)c->cfg->o.connect_timeout_ms;
    }
    return c->ex->timer.deadline;
}

/* The attempt failed: the same detail as dial_report() for one numeric
 * address, then the connection ends (tether__dial_cancel() closes the
 * socket). */
static void direct_failed(tether_conn *c, int err)
{
    if (err == TETHER_ETIMEDOUT) {
        uint64_t now = tether__loop_time(c->h.loop);
        uint64_t started = direct_started(c);
        tether__conn_set_err(c, "connect to %s timed out after %llu ms", tether__conn_url(c),
                             (unsigned long long)(now > started ? now - started : 0));
    } else {
        tether__conn_set_err(c, "connect to %s: %s", tether__conn_url(c), tether_strerror(err));
    }
    tether__conn_end(c, err);
}

/* Connected: the connection takes over the socket and its registration. */
static void direct_won(tether_conn *c, bool is_unix)
{
    int fd = c->io.fd;
    struct tether__io handoff = c->io;
    tether__io_forget(&c->io);
    c->io.fd = -1;
    int rv = tether__conn_attach(c, fd, is_unix, NULL, false, &handoff);
    if (rv != TETHER_OK) {
        tether__conn_fail(c, rv, "connect to %s: %s", tether__conn_url(c), tether_strerror(rv));
    }
}

static void direct_check(tether_conn *c, unsigned revents, bool is_unix)
{
    int soerr = 0;
    /* A failed TCP connect always raises EPOLLERR (sk_err is set), so a
     * clean writability report needs no SO_ERROR system call. A Unix
     * socket whose connect() said EAGAIN is asked as before. */
    if (is_unix || (revents & (TETHER__EV_ERROR | TETHER__EV_HANGUP))) {
        socklen_t sl = sizeof soerr;
        if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) {
            soerr = errno;
        }
    }
    if (soerr == 0) {
        direct_won(c, is_unix);
    } else {
        direct_failed(c, tether__errno_to_err(soerr));
    }
}

static void direct_on_writable(struct tether__io *io, unsigned revents)
{
    direct_check(tether__container_of(io, tether_conn, io), revents, false);
}

static void direct_on_writable_unix(struct tether__io *io, unsigned revents)
{
    direct_check(tether__container_of(io, tether_conn, io), revents, true);
}

void tether__dial_connected(tether_conn *c)
{
    /* (A direct dial has no TLS, and nothing is registered for its socket
     * yet: with nothing to exchange first, it is established now.) */
    if (c->cfg->ws == NULL && c->cfg->o.proxy_protocol == 0) {
        tether__conn_attach_dialed(c, false);
        return;
    }
    direct_won(c, false);
}

/* Only loopback destinations are asked whether connect() finished the
 * handshake (tether__tcp_established(), dial.h). */
static bool is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return false;
}

/* A dial that has to wait for its connect: the deadline, and the watcher
 * for writability. */
static void direct_wait(tether_conn *c)
{
    /* (A failed connect raises EPOLLERR: direct_check() wants to know.) */
    c->io.report_errors = true;
    int rv = tether__dial_arm(c);
    if (rv == TETHER_OK) {
        rv = tether__io_set(c->h.loop, &c->io, TETHER_EV_WRITE);
    }
    if (rv != TETHER_OK) {
        direct_failed(c, rv);
    }
}

/* What follows connect() (which said e, an errno or 0) on a direct dial. */
static void direct_after_connect(tether_conn *c, const struct sockaddr_storage *ss, bool is_unix,
                                 int e)
{
    if (e == 0) {
        direct_won(c, is_unix);
    } else if (e != EINPROGRESS && e != EAGAIN) {
        direct_failed(c, tether__errno_to_err(e));
    } else if (e == EINPROGRESS && is_loopback(ss) && tether__tcp_established(c->io.fd)) {
        tether__dial_established(c);
    } else {
        /* EAGAIN: a Unix socket whose accept queue is full; it becomes
         * writable once the server accepts. */
        direct_wait(c);
    }
}

/* Dials u directly when it names one address of a family the options
 * allow; false (nothing done) otherwise. */
bool tether__dial_direct(tether_conn *c, const struct tether__url *u)
{
    /* (The address tether__url_parse() worked out, in place: the copy
     * tether__url_sockaddr() makes is only needed when there is none.) */
    const struct sockaddr_storage *ss = &u->addr;
    socklen_t sl = u->addr_len;
    struct sockaddr_storage own;
    if (sl == 0) {
        if (tether__url_sockaddr(u, &own, &sl) != TETHER_OK) {
            return false;
        }
        ss = &own;
    }
    int af = tether__family_af(c->cfg->o.family);
    int fam = ss->ss_family;
    if (af != AF_UNSPEC && fam != AF_UNIX && fam != af) {
        return false; /* the dialer words the refusal */
    }
    bool is_unix = fam == AF_UNIX;
    /* (The deadline is only armed once the dial has to wait.) */
    int fd = socket(fam, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        direct_failed(c, tether__errno_to_err(errno));
        return true;
    }
    tether__io_init(&c->io, fd, is_unix ? direct_on_writable_unix : direct_on_writable);
    if (TETHER__LIKELY(!is_unix && tether__sock_opts_just_nodelay(&c->cfg->o))) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    } else {
        tether__sock_apply_opts(fd, c->cfg, is_unix);
    }
    direct_after_connect(c, ss, is_unix,
                         tether__connect_nointr(fd, (const struct sockaddr *)ss, sl));
    return true;
}

bool tether__dial_express_ok(const struct tether__conn_cfg *cfg, const struct tether__url *u)
{
    int af = tether__family_af(cfg->o.family);
    int fam = u->addr.ss_family;
    return cfg->tls == NULL && cfg->ws == NULL && !u->srv && !u->ws && u->addr_len != 0 &&
           (fam == AF_INET || fam == AF_INET6) && (af == AF_UNSPEC || af == fam) &&
           is_loopback(&u->addr) && tether__sock_opts_just_nodelay(&cfg->o) &&
           cfg->o.proxy_protocol == 0 && cfg->o.heartbeat_ms <= 0 && !cfg->o.calls;
}

void tether__dial_express_rest(tether_conn *c, const struct tether__url *u, int fd, int e)
{
    if (fd < 0) {
        direct_failed(c, tether__errno_to_err(e));
        return;
    }
    c->io.cb = direct_on_writable; /* (the express dial left conn_on_io) */
    if (e == EINPROGRESS) {
        direct_wait(c); /* (not established at once: a full backlog, a SYN dropped) */
    } else {
        direct_after_connect(c, &u->addr, false, e); /* (0, or a refusal) */
    }
}
