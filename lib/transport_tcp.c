/* SPDX-License-Identifier: MIT */
/* The plain transport: a connected, non-blocking TCP or Unix stream socket.
 *
 * Writes use sendmsg() with MSG_NOSIGNAL so that a peer that went away
 * yields EPIPE instead of a SIGPIPE that would kill the process. */
#include "transport.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int tcp_fail(struct tether_transport *t, int e)
{
    t->last_errno = e;
    return tether__errno_to_err(e);
}

static int tcp_handshake(struct tether_transport *tr, bool *done)
{
    (void)tr;
    *done = true;
    return TETHER_OK;
}

int tether__plain_io_failed(struct tether_transport *t, const struct iovec *iov, int iovcnt,
                            size_t *n, bool write)
{
    int e = errno;
    if (e == EINTR) {
        return write ? tether__plain_writev(t, iov, iovcnt, n)
                     : tether__plain_readv(t, iov, iovcnt, n);
    }
    *n = 0;
    if (e == EAGAIN || e == EWOULDBLOCK) {
        return TETHER_EAGAIN;
    }
    return tcp_fail(t, e);
}

/* The table's entries (the WebSocket layer over TCP goes through the
 * table; the connection makes the same calls inline, tether__tr_readv()). */
static int tcp_readv(struct tether_transport *tr, const struct iovec *iov, int iovcnt,
                     size_t *nread)
{
    return tether__plain_readv(tr, iov, iovcnt, nread);
}

static int tcp_writev(struct tether_transport *tr, const struct iovec *iov, int iovcnt,
                      size_t *nwritten)
{
    return tether__plain_writev(tr, iov, iovcnt, nwritten);
}

static unsigned tcp_want_events(const struct tether_transport *tr)
{
    (void)tr;
    return 0;
}

static bool tcp_has_pending(const struct tether_transport *tr)
{
    (void)tr;
    return false;
}

static int tcp_shutdown(struct tether_transport *tr, bool *done)
{
    *done = true;
    return tether__plain_shutdown(tr);
}

static void tcp_destroy(struct tether_transport *tr)
{
    tether__plain_destroy(tr);
}

static const char *tcp_last_error(const struct tether_transport *tr)
{
    return tr->last_errno ? strerror(tr->last_errno) : NULL;
}

const struct tether_transport_ops tether__tcp_ops = {
    .name = "tcp",
    .plain = true,
    .handshake = tcp_handshake,
    .readv = tcp_readv,
    .writev = tcp_writev,
    .want_events = tcp_want_events,
    .has_pending = tcp_has_pending,
    .shutdown = tcp_shutdown,
    .destroy = tcp_destroy,
    .last_error = tcp_last_error,
};

const struct tether_transport_ops tether__unix_ops = {
    .name = "unix",
    .plain = true,
    .handshake = tcp_handshake,
    .readv = tcp_readv,
    .writev = tcp_writev,
    .want_events = tcp_want_events,
    .has_pending = tcp_has_pending,
    .shutdown = tcp_shutdown,
    .destroy = tcp_destroy,
    .last_error = tcp_last_error,
};

/* ---- socket options ---------------------------------------------------- */

/* Keepalive and the user timeout belong to the TCP socket rather than to the
 * transport object: they are set on every candidate socket before connect()
 * (so TCP_USER_TIMEOUT also bounds the SYN retransmissions) and on every
 * accepted socket before any byte moves (libuv's uv__tcp_keepalive). */
static int tcp_setopt_int(int fd, int level, int name, int value)
{
    if (setsockopt(fd, level, name, &value, sizeof value) != 0) {
        return tether__errno_to_err(errno);
    }
    return TETHER_OK;
}

static int ms_to_s_ceil(int ms)
{
    return ms / 1000 + (ms % 1000 != 0 ? 1 : 0);
}

int tether__tcp_set_keepalive(int fd, int idle_ms, int interval_ms, int count)
{
    int rv = tcp_setopt_int(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
    int r;
    if (idle_ms > 0) {
        r = tcp_setopt_int(fd, IPPROTO_TCP, TCP_KEEPIDLE, ms_to_s_ceil(idle_ms));
        rv = rv != TETHER_OK ? rv : r;
    }
    if (interval_ms > 0) {
        r = tcp_setopt_int(fd, IPPROTO_TCP, TCP_KEEPINTVL, ms_to_s_ceil(interval_ms));
        rv = rv != TETHER_OK ? rv : r;
    }
    if (count > 0) {
        r = tcp_setopt_int(fd, IPPROTO_TCP, TCP_KEEPCNT, count);
        rv = rv != TETHER_OK ? rv : r;
    }
    return rv;
}

int tether__tcp_set_user_timeout(int fd, int ms)
{
    return tcp_setopt_int(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, ms);
}
