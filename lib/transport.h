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

#include <sys/uio.h>

#include "internal.h"

struct tether_transport;

struct tether_transport_ops {
    const char *name; /* "tcp", "unix" or "tls", for logs and errors */

    /* A plain socket: want_events() is always 0 and has_pending() always
     * false, so the connection's per-message paths skip both calls. */
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
};

/* Wraps a connected, non-blocking socket. Takes ownership of fd (closes it
 * on failure too). */
int tether__tcp_transport_new(struct tether_transport **out, int fd, bool is_unix);

/* TCP keepalive on a TCP socket: SO_KEEPALIVE, and TCP_KEEPIDLE,
 * TCP_KEEPINTVL (milliseconds, rounded up to the seconds the kernel takes)
 * and TCP_KEEPCNT where they are not 0. Best effort: returns the first
 * failure as a TETHER_E* code, the socket stays usable. */
int tether__tcp_set_keepalive(int fd, int idle_ms, int interval_ms, int count);

/* TCP_USER_TIMEOUT in milliseconds (best effort, as above). */
int tether__tcp_set_user_timeout(int fd, int ms);

#endif /* TETHER_TRANSPORT_H */
