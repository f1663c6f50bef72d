/* SPDX-License-Identifier: MIT */
/* Shared by the two halves of dialling: connect.c (names, Happy Eyeballs,
 * SRV) and dial_direct.c (one numeric address or a Unix path). */
#ifndef TETHER_DIAL_H
#define TETHER_DIAL_H

#include "conn.h"

#include "url.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

/* A loop's memory of its last dial (dial_cfg.c): the configuration built
 * for a URL and options, to share with the next dial that gives the same
 * again. */
struct tether__dial_mem {
    struct tether__loop_ext ext;
    struct tether__conn_cfg *cfg; /* the last dial's (a reference), or NULL */
    bool defaults;                /* it was built from NULL options */
    bool express;                 /* tether__dial_express() takes its dials */
    tether_conn_opts key;         /* else from these (key.size bytes of them) */
    struct tether__url u;         /* cfg->dial_url parsed */
};

/* The loop's memory when url and opts are those it remembers, else NULL:
 * then tether__dial_cfg() builds (and remembers) a configuration. Inline
 * because every dial asks, and most are repeats. A match is exact, the
 * same URL string and the same option bytes but for userdata (which the
 * connection takes from the caller's options itself): the contents are
 * compared, never the pointers, so a caller may rewrite its buffers
 * between dials. */
static inline const struct tether__dial_mem *
tether__dial_mem_find(const tether_loop *loop, const char *url, const tether_conn_opts *opts)
{
    const struct tether__dial_mem *m = loop->dial_mem;
    if (m == NULL || m->cfg == NULL || url == NULL) {
        return NULL;
    }
    if (opts == NULL || m->defaults) {
        if (opts != NULL || !m->defaults) {
            return NULL;
        }
    } else {
        /* (userdata is the second member: size was compared before it) */
        const size_t ud_end = offsetof(tether_conn_opts, userdata) + sizeof opts->userdata;
        static_assert(offsetof(tether_conn_opts, userdata) == sizeof opts->size,
                      "userdata follows size");
        if (opts->size != m->key.size ||
            memcmp((const char *)opts + ud_end, (const char *)&m->key + ud_end,
                   opts->size - ud_end) != 0) {
            return NULL;
        }
    }
    return strcmp(url, m->cfg->dial_url) == 0 ? m : NULL;
}

/* The address family tether_conn_opts::family allows (AF_UNSPEC: any). */
static inline int tether__family_af(tether_family f)
{
    return f == TETHER_FAMILY_V4 ? AF_INET : f == TETHER_FAMILY_V6 ? AF_INET6 : AF_UNSPEC;
}

/* Arms the connect deadline (connect_timeout_ms) in c->ex, allocating it;
 * TETHER_ENOMEM when it cannot. */
int tether__dial_arm(tether_conn *c);

/* Dials u directly when it is one numeric address or a Unix path (no
 * TLS, no SRV: the caller checked); false when it needs the dialer. On
 * true the outcome is on its way (or already reported) from the loop. */
bool tether__dial_direct(tether_conn *c, const struct tether__url *u);

/* Whether every dial of u with cfg can take tether__dial_express(): a
 * TCP socket to a numeric loopback address of a family the options allow,
 * with no more to set on it than TCP_NODELAY, and nothing (TLS, SRV,
 * WebSocket, a PROXY header, a HELLO) to do before it is established.
 * dial_cfg.c asks once, when it remembers a dial. */
bool tether__dial_express_ok(const struct tether__conn_cfg *cfg, const struct tether__url *u);

/* connect(), again after a signal: 0 or its errno (every dial: the
 * express and direct dials here and in dial_direct.c, the dialer's
 * candidates in connect.c). */
static inline int tether__connect_nointr(int fd, const struct sockaddr *sa, socklen_t len)
{
    int e;
    do {
        e = connect(fd, sa, len) == 0 ? 0 : errno;
    } while (e == EINTR);
    return e;
}

/* A TCP handshake with a loopback address is over by the time connect()
 * returns (the kernel handles the SYN, the SYN-ACK and the ACK before the
 * call ends), although a non-blocking socket still says EINPROGRESS.
 * Asking for the state then saves registering for writability, a loop
 * iteration and registering again for reading. Anything but established
 * (a refusal too: its error stays for the watcher to report) takes the
 * usual way. To any other address the handshake would almost never be
 * over yet, so only loopback destinations are asked (dial_direct.c). */
static inline bool tether__tcp_established(int fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti.tcpi_state;
    ti.tcpi_state = 0;
    return getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 &&
           ti.tcpi_state == TCP_ESTABLISHED;
}

/* A direct dial established inside connect(): taken over from the loop
 * (tether__dial_connected()), as if the watcher had reported it; until
 * then the connection is still connecting for the caller, who gets
 * on_connect from the loop. */
static inline void tether__dial_established(tether_conn *c)
{
    c->todo |= TETHER__CT_DIALED;
    tether__pending_queue(c->h.loop, &c->pend);
}

/* tether__dial_express() when the socket could not be made (fd < 0, e
 * its errno) or connect() did not finish at once (e: its errno, or 0):
 * the ways of the direct dial (dial_direct.c). */
void tether__dial_express_rest(tether_conn *c, const struct tether__url *u, int fd, int e);

/* tether__dial_direct() of such a dial, without its tests: the remembered
 * dials of tether_conn_dial(). Anything but a connect() that the kernel
 * finished at once (a refusal, a full backlog) goes on as the direct dial
 * does. Inline: most dials of a client that dials its server again and
 * again come here. */
static inline void tether__dial_express(tether_conn *c, const struct tether__url *u)
{
    int fd = socket(u->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (TETHER__UNLIKELY(fd < 0)) {
        tether__dial_express_rest(c, u, fd, errno);
        return;
    }
    /* (tether__io_init() of the zeroed block, but for the callback:
     * dial_direct.c's rest sets it when it needs a watcher.) */
    c->io.fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int e = tether__connect_nointr(fd, (const struct sockaddr *)&u->addr, u->addr_len);
    if (TETHER__LIKELY(e == EINPROGRESS && tether__tcp_established(fd))) {
        tether__dial_established(c);
        return;
    }
    tether__dial_express_rest(c, u, fd, e);
}

/* Dials u with the dialer (connect.c): names, Happy Eyeballs, SRV, TLS;
 * what tether__dial_direct() does not take. */
int tether__dial_dialer(tether_conn *c, const struct tether__url *u);

/* Starts dialling u for c. Arms the connect deadline (in c->ex) when the
 * dial has to wait, and may report an error synchronously: the caller then
 * turns it into a deferred failure. Inline: a direct dial (one address, no
 * TLS, no SRV) goes straight to dial_direct.c. */
static inline int tether__dial_start(tether_conn *c, const struct tether__url *u)
{
    if (!u->srv && c->cfg->tls == NULL && tether__dial_direct(c, u)) {
        return TETHER_OK;
    }
    return tether__dial_dialer(c, u);
}

#endif
