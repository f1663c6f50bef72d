/* SPDX-License-Identifier: MIT */
/* The transport interface: the byte-stream layer under a connection.
 *
 * A connection (conn.c) moves framed bytes; a transport moves raw bytes over
 * one socket, plain (transport_tcp.c, also used for Unix sockets) or
 * encrypted (transport_tls.c). Every transport embeds struct
 * tether_transport as its first member and points `ops` at one static
 * table. Transports return codes and never call user callbacks: only the
 * connection code (conn.c and the files listed in conn_core.h) does. All
 * operations are non-blocking. */
#ifndef TETHER_TRANSPORT_H
#define TETHER_TRANSPORT_H

#include <errno.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"

struct tether_transport;

struct tether_transport_ops {
    const char *name; /* "tcp", "unix" or "tls", for logs and errors */

    /* A plain socket (transport_tcp.c): want_events() is always 0,
     * has_pending() always false, and readv()/writev() are the system
     * calls on fd. The connection's per-message paths skip the first two
     * and make the calls themselves (tether__tr_readv(), tether__tr_writev()). */
    bool plain;

    /* One step of the handshake. Sets *done once the stream is ready for
     * data; TCP sets it at once. Returns 0 or an error; while not done, the
     * conn waits for want_events() and calls again. */
    int (*handshake)(struct tether_transport *t, bool *done);

    /* Reads into the iovecs (TLS may fill only the first). Returns 0 with
     * *nread > 0, 0 with *nread == 0 at a clean end of stream, TETHER_EAGAIN
     * when nothing is available, or an error (TETHER_ECONNRESET,
     * TETHER_ETRUNCATED for TLS without close_notify, ...). */
    int (*readv)(struct tether_transport *t, const struct iovec *iov, int iovcnt, size_t *nread);

    /* Writes from the iovecs; partial writes are normal. Returns 0 with
     * *nwritten > 0, TETHER_EAGAIN when nothing could be written, or an error.
     * A transport that accepted bytes it could not yet send (TLS records)
     * reports them as written and flushes them on later calls. */
    int (*writev)(struct tether_transport *t, const struct iovec *iov, int iovcnt,
                  size_t *nwritten);

    /* The readiness (TETHER_EV_READ|TETHER_EV_WRITE) the transport needs to
     * make progress on its own account, beyond what the conn wants: TLS may
     * have to write in order to read, or read to finish a write. */
    unsigned (*want_events)(const struct tether_transport *t);

    /* Decrypted bytes held inside the transport that epoll cannot see. */
    bool (*has_pending)(const struct tether_transport *t);

    /* Graceful shutdown of the write side (TCP shutdown(SHUT_WR), TLS
     * close_notify). Sets *done when finished; otherwise call again when
     * want_events() is satisfied. */
    int (*shutdown)(struct tether_transport *t, bool *done);

    /* Frees this layer only (and closes the fd); never calls user code. */
    void (*destroy)(struct tether_transport *t);

    /* Detail for the last failure, or NULL. */
    const char *(*last_error)(const struct tether_transport *t);
};

struct tether_transport {
    const struct tether_transport_ops *ops;
    int fd;
    /* The last socket failure: an errno value (Linux's are below 4096). */
    uint16_t last_errno;
    /* The transport's own flags: a TLS one's TF_* (tls_transport.h); 0
     * for the plain one. (Here rather than after the struct: an idle TLS
     * connection's block stays within 256 bytes, issue #12.) */
    uint16_t flags;
};

/* The room a TLS transport (transport_tls.c) takes: it is built in place,
 * at a connection's struct tether_transport and on into the bytes after
 * it (struct tether_conn's tcp, the last member, and the block's tail).
 * A server's needs less than a client's (which keeps its session cache
 * key): an accepted connection's block is 248 bytes, a 256-byte heap
 * chunk. */
#define TETHER__TLS_TRANSPORT_SIZE 40
#define TETHER__TLS_SERVER_TRANSPORT_SIZE 32

/* The plain transport's tables (transport_tcp.c), for the inline
 * tether__tcp_transport_init(). */
extern const struct tether_transport_ops tether__tcp_ops;
extern const struct tether_transport_ops tether__unix_ops;

/* Wraps a connected, non-blocking socket in t: the plain transport
 * (transport_tcp.c) is the bare struct, embedded in the connection rather
 * than allocated (a separate block cost an idle connection 32 bytes of
 * heap, issue #12). t must stay allocated until its destroy(), which
 * closes fd and frees nothing. Takes ownership of fd. Cannot fail. Inline:
 * every accepted socket and dial takes it. */
static inline void tether__tcp_transport_init(struct tether_transport *t, int fd, bool is_unix)
{
    t->ops = is_unix ? &tether__unix_ops : &tether__tcp_ops;
    t->fd = fd;
    t->last_errno = 0;
    t->flags = 0; /* (with last_errno: one store) */
}

/* TCP keepalive on a TCP socket: SO_KEEPALIVE, and TCP_KEEPIDLE,
 * TCP_KEEPINTVL (milliseconds, rounded up to the seconds the kernel takes)
 * and TCP_KEEPCNT where they are not 0. Best effort: returns the first
 * failure as a TETHER_E* code, the socket stays usable. */
int tether__tcp_set_keepalive(int fd, int idle_ms, int interval_ms, int count);

/* TCP_USER_TIMEOUT in milliseconds (best effort, as above). */
int tether__tcp_set_user_timeout(int fd, int ms);

/* A plain transport's read or write returned -1 (errno set): retries on
 * EINTR, returns TETHER_EAGAIN or the error (recorded for last_error()),
 * with *n = 0. */
__attribute__((cold)) int tether__plain_io_failed(struct tether_transport *t,
                                                  const struct iovec *iov, int iovcnt, size_t *n,
                                                  bool write);

/* A plain socket's readv() and writev() (transport_tcp.c's table entries),
 * inline. MSG_NOSIGNAL: a peer that went away yields EPIPE, not a SIGPIPE;
 * send() for one piece skips sendmsg()'s iovec copy-in. */
static inline int tether__plain_readv(struct tether_transport *t, const struct iovec *iov,
                                      int iovcnt, size_t *nread)
{
    ssize_t n =
        iovcnt == 1 ? read(t->fd, iov[0].iov_base, iov[0].iov_len) : readv(t->fd, iov, iovcnt);
    if (TETHER__LIKELY(n >= 0)) {
        *nread = (size_t)n;
        return TETHER_OK;
    }
    return tether__plain_io_failed(t, iov, iovcnt, nread, false);
}

static inline int tether__plain_writev(struct tether_transport *t, const struct iovec *iov,
                                       int iovcnt, size_t *nwritten)
{
    ssize_t n;
    if (iovcnt == 1) {
        n = send(t->fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL);
    } else {
        struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt};
        n = sendmsg(t->fd, &mh, MSG_NOSIGNAL);
    }
    if (TETHER__LIKELY(n >= 0)) {
        *nwritten = (size_t)n;
        return TETHER_OK;
    }
    return tether__plain_io_failed(t, iov, iovcnt, nwritten, true);
}

/* A plain transport's shutdown() and destroy() (transport_tcp.c's table
 * entries), inline for the connection's end: the FIN (a failure is
 * recorded for last_error(); ENOTCONN, the peer already gone, is none),
 * and the close of the socket (the struct is embedded in its owner:
 * nothing to free). */
static inline int tether__plain_shutdown(struct tether_transport *t)
{
    if (shutdown(t->fd, SHUT_WR) != 0 && errno != ENOTCONN) {
        t->last_errno = errno;
        return tether__errno_to_err(t->last_errno);
    }
    return TETHER_OK;
}

static inline void tether__plain_destroy(struct tether_transport *t)
{
    if (t->fd >= 0) {
        close(t->fd);
        t->fd = -1;
    }
}

/* t->ops->readv() and t->ops->writev(), with a plain socket's system call
 * made here: the connection reads and writes once per message exchange,
 * and the indirect call and the transport's frame cost more than the
 * system call's own wrapper. */
static inline int tether__tr_readv(struct tether_transport *t, const struct iovec *iov, int iovcnt,
                                   size_t *nread)
{
    if (TETHER__LIKELY(t->ops->plain)) {
        return tether__plain_readv(t, iov, iovcnt, nread);
    }
    return t->ops->readv(t, iov, iovcnt, nread);
}

static inline int tether__tr_writev(struct tether_transport *t, const struct iovec *iov, int iovcnt,
                                    size_t *nwritten)
{
    if (TETHER__LIKELY(t->ops->plain)) {
        return tether__plain_writev(t, iov, iovcnt, nwritten);
    }
    return t->ops->writev(t, iov, iovcnt, nwritten);
}

#endif /* TETHER_TRANSPORT_H */
