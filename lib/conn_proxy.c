/* SPDX-License-Identifier: MIT */
/* The PROXY protocol on connections: sending the header first on a
 * dialled connection, receiving and checking it first on an accepted one
 * (before the TLS handshake and the first frame), and the public accessors
 * for what it said. The format itself lives in proxy_proto.c.
 *
 * Receiving never reads past the header: the bytes are peeked, handed to
 * the parser, and only the ones it says belong to the header are taken
 * off the socket, so the TLS ClientHello or the first frame that follows
 * stays in the kernel for the transport. Bytes that may still be header
 * are consumed too (into a buffer), so that a level-triggered readiness
 * report never spins on a partial header. */
#include "conn_core.h"
#include "proxy_proto.h"
#include "tls.h"
#include "ws.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static_assert(TETHER_PROXY_V1 == TETHER__PP_V1 && TETHER_PROXY_V2 == TETHER__PP_V2,
              "public and internal version bits agree");
static_assert(TETHER_PROXY_V2_MAX_LEN == TETHER__PP_V2_MAX_LEN, "one documented limit");

/* The connection's header state, kept in its cold state (c->ex). */
static inline struct tether__pp_conn *pp_of(const tether_conn *c)
{
    return c->ex != NULL ? c->ex->pp : NULL;
}

enum {
    PP_SEND = 1,
    PP_RECV = 2,
    PP_DONE = 3
};

struct tether__pp_conn {
    uint8_t mode;
    uint8_t version;
    bool local;   /* no client address: LOCAL, UNKNOWN or unspecified */
    size_t have;  /* bytes received (PP_RECV) or sent (PP_SEND) */
    size_t need;  /* PP_SEND: the header's length */
    uint8_t *buf; /* the header being sent or received; NULL once done */
    struct sockaddr_storage src, dst;
    socklen_t src_len, dst_len;
    uint8_t *tlv; /* v2 TLVs as received, or NULL */
    size_t tlv_len;
};

/* The socket's real peer, as tether_conn_peer() reports it without the
 * PROXY protocol. */
static int pp_real_peer(const tether_conn *c, char *buf, size_t len)
{
    union tether__peer_addr pa;
    if (tether__conn_get_peer(c, &pa)) {
        tether__addr_format(&pa.sa, sizeof pa, buf, len);
        return TETHER_OK;
    }
    if (c->tr == NULL) {
        return TETHER_ENOTCONN;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(c->tr->fd, (struct sockaddr *)&ss, &sl) != 0) {
        return TETHER_ENOTCONN;
    }
    tether__addr_format((struct sockaddr *)&ss, sl, buf, len);
    return TETHER_OK;
}

static void pp_peer_name(const tether_conn *c, char *buf, size_t len)
{
    if (pp_real_peer(c, buf, len) != TETHER_OK) {
        snprintf(buf, len, "an unknown peer");
    }
}

/* ---- configuration ----------------------------------------------------- */

/* "IP", "IP:port" or "[IPv6]:port"; a bare IPv6 address is taken whole. */
static bool pp_parse_source(const char *s, struct sockaddr_storage *ss)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *port = NULL;
    size_t hl;
    memset(ss, 0, sizeof *ss);
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || (end[1] != '\0' && end[1] != ':')) {
            return false;
        }
        hl = (size_t)(end - s - 1);
        s++;
        port = end[1] == ':' ? end + 2 : NULL;
    } else {
        const char *colon = strchr(s, ':');
        if (colon != NULL && strchr(colon + 1, ':') == NULL) {
            hl = (size_t)(colon - s);
            port = colon + 1;
        } else {
            hl = strlen(s);
        }
    }
    if (hl == 0 || hl >= sizeof host) {
        return false;
    }
    memcpy(host, s, hl);
    host[hl] = '\0';
    unsigned long p = 0;
    if (port != NULL) {
        char *end;
        if (port[0] < '0' || port[0] > '9') {
            return false;
        }
        p = strtoul(port, &end, 10);
        if (*end != '\0' || p > 65535) {
            return false;
        }
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)p);
        return true;
    }
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)p);
        return true;
    }
    return false;
}

int tether__pp_cfg_init(struct tether__conn_cfg *cfg, tether_error *err)
{
    tether_conn_opts *o = &cfg->o;
    const char *src = o->proxy_source;
    o->proxy_source = NULL; /* the caller's string is not kept */
    if (o->proxy_protocol != 0 && o->proxy_protocol != TETHER_PROXY_V1 &&
        o->proxy_protocol != TETHER_PROXY_V2) {
        return tether__set_error(err, TETHER_EINVAL,
                                 "proxy_protocol must be 0, TETHER_PROXY_V1 or TETHER_PROXY_V2, "
                                 "not %d",
                                 o->proxy_protocol);
    }
    if (src != NULL) {
        if (o->proxy_protocol == 0) {
            return tether__set_error(err, TETHER_EINVAL, "proxy_source needs proxy_protocol");
        }
        if (!pp_parse_source(src, &cfg->pp_source)) {
            return tether__set_error(err, TETHER_EINVAL,
                                     "proxy_source '%.80s' is not \"IP\", \"IP:port\" or "
                                     "\"[IPv6]:port\"",
                                     src);
        }
    }
    return TETHER_OK;
}

/* ---- the header exchange ----------------------------------------------- */

static int pp_start_send(tether_conn *c)
{
    struct sockaddr_storage src, dst;
    socklen_t sl = sizeof src, dl = sizeof dst;
    int fd = c->tr->fd;
    bool inet = getsockname(fd, (struct sockaddr *)&src, &sl) == 0 &&
                getpeername(fd, (struct sockaddr *)&dst, &dl) == 0 &&
                (dst.ss_family == AF_INET || dst.ss_family == AF_INET6);
    if (inet && c->cfg->pp_source.ss_family != 0) {
        src = c->cfg->pp_source;
    }
    struct tether__pp_conn *pp = calloc(1, sizeof *pp);
    uint8_t *buf = malloc(TETHER__PP_V2_HDR + 36);
    if (pp == NULL || buf == NULL) {
        free(pp);
        free(buf);
        return TETHER_ENOMEM;
    }
    int n = tether__pp_encode(buf, TETHER__PP_V2_HDR + 36, c->cfg->o.proxy_protocol,
                              inet ? (struct sockaddr *)&src : NULL,
                              inet ? (struct sockaddr *)&dst : NULL);
    if (n < 0) {
        free(pp);
        free(buf);
        return n;
    }
    pp->mode = PP_SEND;
    pp->version = (uint8_t)c->cfg->o.proxy_protocol;
    pp->buf = buf;
    pp->need = (size_t)n;
    c->ex->pp = pp;
    return TETHER_OK;
}

int tether__pp_conn_start(tether_conn *c, bool server)
{
    if ((server ? c->cfg->pp_accept != 0 : c->cfg->o.proxy_protocol != 0) &&
        tether__conn_extra(c) == NULL) {
        return TETHER_ENOMEM; /* c->ex holds the header's state */
    }
    if (!server) {
        return c->cfg->o.proxy_protocol != 0 ? pp_start_send(c) : TETHER_OK;
    }
    if (c->cfg->pp_accept == 0) {
        return TETHER_OK;
    }
    struct tether__pp_conn *pp = calloc(1, sizeof *pp);
    if (pp == NULL) {
        return TETHER_ENOMEM;
    }
    pp->buf = malloc(TETHER__PP_MAX);
    if (pp->buf == NULL) {
        free(pp);
        return TETHER_ENOMEM;
    }
    pp->mode = PP_RECV;
    c->ex->pp = pp;
    if (c->cfg->pp_timeout_ms >= 0 &&
        !tether__conn_timer_start(c, (uint64_t)c->cfg->pp_timeout_ms)) {
        return TETHER_ENOMEM;
    }
    return TETHER_OK;
}

static bool pp_step_send(tether_conn *c, bool *done)
{
    struct tether__pp_conn *pp = pp_of(c);
    while (pp->have < pp->need) {
        ssize_t n =
            send(c->tr->fd, pp->buf + pp->have, pp->need - pp->have, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            int e = errno;
            if (e == EINTR) {
                continue;
            }
            if (e == EAGAIN || e == EWOULDBLOCK) {
                return true;
            }
            tether__conn_fail(c, tether__errno_to_err(e),
                              "connect to %s: sending the PROXY protocol header failed: %s",
                              tether__conn_url(c) != NULL ? tether__conn_url(c) : "peer",
                              strerror(e));
            return false;
        }
        pp->have += (size_t)n;
    }
    tether__pp_conn_free(c); /* nothing to remember on the sending side */
    *done = true;
    return true;
}

/* Fails an accepted connection during the header exchange; the listener's
 * on_error hears of it (it never reached on_accept). */
static void pp_fail_accepted(tether_conn *c, int code, const char *what)
{
    char peer[160];
    pp_peer_name(c, peer, sizeof peer);
    c->flags |= TETHER__CF_REPORT_LISTENER;
    tether__conn_fail(c, code, "PROXY protocol header from %s: %s", peer, what);
}

/* The header is complete and valid: keep what it says, free the buffer,
 * and hand the deadline over to the TLS handshake. */
static void pp_received(tether_conn *c, const struct tether__pp_result *r)
{
    struct tether__pp_conn *pp = pp_of(c);
    pp->version = r->version;
    pp->local = !r->has_addr;
    if (r->has_addr) {
        pp->src = r->src;
        pp->src_len = r->src_len;
        pp->dst = r->dst;
        pp->dst_len = r->dst_len;
    }
    if (r->tlv_len > 0) {
        pp->tlv = malloc(r->tlv_len);
        if (pp->tlv != NULL) { /* out of memory: the TLVs are dropped, not the client */
            memcpy(pp->tlv, r->tlv, r->tlv_len);
            pp->tlv_len = r->tlv_len;
        }
    }
    free(pp->buf);
    pp->buf = NULL;
    pp->mode = PP_DONE;
    tether__conn_timer_stop(c);
    /* The next deadline: WebSocket's covers its TLS handshake too. */
    int ms = c->cfg->ws != NULL    ? c->cfg->ws->handshake_timeout_ms
             : c->cfg->tls != NULL ? tether__tls_handshake_timeout_ms(c->cfg->tls)
                                   : -1;
    if (ms >= 0) {
        (void)tether__conn_timer_start(c, (uint64_t)ms); /* c->ex exists: it holds pp */
    }
    if (r->has_addr) {
        char s[160], p[160];
        tether__addr_format((const struct sockaddr *)&pp->src, pp->src_len, s, sizeof s);
        pp_peer_name(c, p, sizeof p);
        tether__log(TETHER_LOG_DEBUG, "PROXY v%u header from %s: client %s", pp->version, p, s);
    }
}

static bool pp_step_recv(tether_conn *c, bool *done)
{
    struct tether__pp_conn *pp = pp_of(c);
    for (int round = 0; round < 4; round++) {
        ssize_t n =
            recv(c->tr->fd, pp->buf + pp->have, TETHER__PP_MAX - pp->have, MSG_PEEK | MSG_DONTWAIT);
        if (n < 0) {
            int e = errno;
            if (e == EINTR) {
                continue;
            }
            if (e == EAGAIN || e == EWOULDBLOCK) {
                return true;
            }
            char msg[160];
            snprintf(msg, sizeof msg, "receiving it failed after %zu bytes: %s", pp->have,
                     strerror(e));
            pp_fail_accepted(c, tether__errno_to_err(e), msg);
            return false;
        }
        if (n == 0) {
            char msg[160];
            snprintf(msg, sizeof msg,
                     "the connection closed before the header was complete (%zu bytes "
                     "received)",
                     pp->have);
            pp_fail_accepted(c, pp->have == 0 ? TETHER_EOF : TETHER_ETRUNCATED, msg);
            return false;
        }
        struct tether__pp_result r;
        char why[TETHER_ERROR_MSG_MAX];
        size_t avail = pp->have + (size_t)n;
        int rv = tether__pp_parse(pp->buf, avail, c->cfg->pp_accept, &r, why, sizeof why);
        if (rv < 0) {
            pp_fail_accepted(c, rv, why);
            return false;
        }
        /* Take off the socket exactly the bytes that are header: all of
         * them while incomplete, the header's length once complete. */
        size_t take = rv == 0 ? (size_t)n : (size_t)rv - pp->have;
        ssize_t got = recv(c->tr->fd, pp->buf + pp->have, take, MSG_DONTWAIT);
        if (got != (ssize_t)take) {
            pp_fail_accepted(c, TETHER_ESYS, "the socket lost bytes it had just shown");
            return false;
        }
        pp->have += take;
        if (rv > 0) {
            pp_received(c, &r);
            *done = true;
            return true;
        }
    }
    return true; /* more next time the socket is readable */
}

bool tether__pp_conn_step(tether_conn *c, bool *done)
{
    *done = false;
    const struct tether__pp_conn *pp = pp_of(c);
    if (pp == NULL || pp->mode == PP_DONE) {
        *done = true;
        return true;
    }
    return pp->mode == PP_SEND ? pp_step_send(c, done) : pp_step_recv(c, done);
}

bool tether__pp_conn_pending(const tether_conn *c, unsigned *events)
{
    const struct tether__pp_conn *pp = pp_of(c);
    if (pp == NULL || pp->mode == PP_DONE) {
        return false;
    }
    *events = pp->mode == PP_SEND ? TETHER_EV_WRITE : TETHER_EV_READ;
    return true;
}

void tether__pp_conn_timeout(tether_conn *c)
{
    char msg[160];
    snprintf(msg, sizeof msg, "not complete within %d ms (%zu bytes received)",
             c->cfg->pp_timeout_ms, pp_of(c)->have);
    pp_fail_accepted(c, TETHER_ETIMEDOUT, msg);
}

bool tether__pp_conn_source(const tether_conn *c, char *buf, size_t len)
{
    const struct tether__pp_conn *pp = pp_of(c);
    if (pp == NULL || pp->mode != PP_DONE || pp->local) {
        return false;
    }
    tether__addr_format((const struct sockaddr *)&pp->src, pp->src_len, buf, len);
    return true;
}

void tether__pp_conn_free(tether_conn *c)
{
    struct tether__pp_conn *pp = pp_of(c);
    if (pp != NULL) {
        free(pp->buf);
        free(pp->tlv);
        free(pp);
        c->ex->pp = NULL;
    }
}

/* ---- public API -------------------------------------------------------- */

/* The received header of an accepted connection, or why there is none. */
static int pp_received_of(const tether_conn *c, const struct tether__pp_conn **out)
{
    if (!(c->flags & TETHER__CF_ACCEPTED) || c->cfg->pp_accept == 0) {
        return TETHER_ENOTSUP;
    }
    const struct tether__pp_conn *pp = pp_of(c);
    if (pp == NULL || pp->mode != PP_DONE) {
        return TETHER_ENOTCONN;
    }
    *out = pp;
    return TETHER_OK;
}

int tether_conn_proxy_info_sized(const tether_conn *c, tether_proxy_info *info, size_t size)
{
    if (c == NULL || info == NULL || size < sizeof(size_t)) {
        return TETHER_EINVAL;
    }
    const struct tether__pp_conn *pp;
    int rv = pp_received_of(c, &pp);
    if (rv != TETHER_OK) {
        return rv;
    }
    tether_proxy_info d;
    memset(&d, 0, sizeof d);
    d.size = size;
    d.version = pp->version;
    d.local = pp->local;
    if (!pp->local) {
        tether__addr_format((const struct sockaddr *)&pp->src, pp->src_len, d.source,
                            sizeof d.source);
        tether__addr_format((const struct sockaddr *)&pp->dst, pp->dst_len, d.destination,
                            sizeof d.destination);
    }
    if (pp_real_peer(c, d.proxy, sizeof d.proxy) != TETHER_OK) {
        d.proxy[0] = '\0';
    }
    tether__sized_fill(info, size, &d, sizeof d);
    return TETHER_OK;
}

int tether_conn_proxy_tlv(const tether_conn *c, uint8_t type, const uint8_t **out_val,
                          size_t *out_len)
{
    if (c == NULL || out_val == NULL || out_len == NULL) {
        return TETHER_EINVAL;
    }
    const struct tether__pp_conn *pp;
    int rv = pp_received_of(c, &pp);
    if (rv != TETHER_OK) {
        return rv;
    }
    if (!tether__pp_tlv_find(pp->tlv, pp->tlv_len, type, out_val, out_len)) {
        return TETHER_ENOTFOUND;
    }
    return TETHER_OK;
}

int tether_conn_proxy_peer(const tether_conn *c, char *buf, size_t len)
{
    if (c == NULL || buf == NULL || len == 0) {
        return TETHER_EINVAL;
    }
    char tmp[160];
    int rv = pp_real_peer(c, tmp, sizeof tmp);
    if (rv != TETHER_OK) {
        return rv;
    }
    if (strlen(tmp) + 1 > len) {
        return TETHER_EINVAL;
    }
    memcpy(buf, tmp, strlen(tmp) + 1);
    return TETHER_OK;
}
