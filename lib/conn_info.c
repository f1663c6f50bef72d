/* SPDX-License-Identifier: MIT */
/* What the application can read about a connection: its user data and
 * loop, the detail of its last failure, its queue and statistics, its TLS
 * summary and its peer's address. Read-only accessors, no state changes
 * (but for recording the peer's address at accept). */
#include "ack.h"
#include "conn_core.h"
#include "delivery.h"
#include "tls.h"
#include "ws.h"

#include <string.h>
#include <sys/socket.h>

void *tether_conn_userdata(const tether_conn *c)
{
    return c != NULL ? c->userdata : NULL;
}

void tether_conn_set_userdata(tether_conn *c, void *ud)
{
    if (c != NULL) {
        c->userdata = ud;
    }
}

tether_loop *tether_conn_loop(const tether_conn *c)
{
    return c != NULL ? c->h.loop : NULL;
}

const char *tether_conn_last_error(const tether_conn *c)
{
    if (c == NULL) {
        return "";
    }
    return c->err != NULL ? c->err : "";
}

size_t tether_conn_queued(const tether_conn *c)
{
    return c != NULL ? c->queued : 0;
}

void tether__conn_msgs_in_carry(tether_conn *c)
{
    struct tether__conn_extra *ex = tether__conn_extra(c);
    if (ex != NULL) {
        ex->msgs_in_hi++;
    } else {
        c->msgs_in = UINT32_MAX; /* out of memory: stays here, carries at the next */
    }
}

int tether_conn_get_stats_sized(const tether_conn *c, tether_stats *st, size_t size)
{
    if (c == NULL || st == NULL || size < sizeof(size_t)) {
        return TETHER_EINVAL;
    }
    tether_stats s;
    memset(&s, 0, sizeof s);
    s.size = size;
    s.bytes_in = c->bytes_in;
    s.bytes_out = c->bytes_out;
    s.msgs_in = tether__conn_msgs_in(c);
    s.msgs_out = c->msgs_out;
    s.queued_bytes = c->queued;
    s.connects = c->ready_at != 0 ? 1 : 0;
    s.heartbeat_ms = tether__conn_hb_ms(c);
    tether__conn_hb_stats(c, &s.pings_sent, &s.pongs_received, &s.rtt_us);
    tether__call_stats(c, &s);
    tether__ack_stats(c, &s);
    if (c->ready_at != 0 && (c->state == TETHER__CS_READY || c->state == TETHER__CS_CLOSING)) {
        s.uptime_ms = tether__loop_time(c->h.loop) - c->ready_at;
    }
    tether__sized_fill(st, size, &s, sizeof s);
    return TETHER_OK;
}

int tether_conn_tls_info_sized(const tether_conn *c, tether_tls_info *info, size_t size)
{
    if (c == NULL || info == NULL || size < sizeof(size_t)) {
        return TETHER_EINVAL;
    }
    if (c->tr == NULL) {
        return c->cfg->tls != NULL ? TETHER_ENOTCONN : TETHER_ENOTSUP;
    }
    tether_tls_info d;
    memset(&d, 0, sizeof d);
    d.size = size;
    int rv = tether__tls_transport_info(tether__ws_inner(c->tr), &d); /* (wss://) */
    if (rv == TETHER_OK && c->state == TETHER__CS_HANDSHAKING) {
        rv = TETHER_ENOTCONN; /* the TLS layer is done, the connection not yet */
    }
    if (rv != TETHER_OK) {
        return rv;
    }
    tether__sized_fill(info, size, &d, sizeof d);
    return TETHER_OK;
}

void tether__conn_set_peer6(tether_conn *c, const union tether__peer_addr *pa)
{
    /* In the cold struct: IPv4 peers, the common case, cost nothing
     * beyond the 8 bytes of c->peer. Out of memory, the address is not
     * kept (getpeername still answers while the socket lives). */
    struct tether__conn_extra *ex = tether__conn_extra(c);
    if (ex == NULL) {
        return;
    }
    struct tether__peer_min *m = &ex->peer6;
    m->family = AF_INET6;
    m->port = pa->in6.sin6_port;
    m->scope_id = pa->in6.sin6_scope_id;
    memcpy(m->addr, &pa->in6.sin6_addr, sizeof pa->in6.sin6_addr);
    c->peer.family = AF_INET6;
}

bool tether__conn_get_peer(const tether_conn *c, union tether__peer_addr *out)
{
    memset(out, 0, sizeof *out);
    if (c->peer.family == AF_INET) {
        out->in.sin_family = AF_INET;
        out->in.sin_port = c->peer.port;
        memcpy(&out->in.sin_addr, c->peer.addr, sizeof out->in.sin_addr);
        return true;
    }
    if (c->peer.family == AF_INET6 && c->ex != NULL) {
        const struct tether__peer_min *m = &c->ex->peer6;
        out->in6.sin6_family = AF_INET6;
        out->in6.sin6_port = m->port;
        out->in6.sin6_scope_id = m->scope_id;
        memcpy(&out->in6.sin6_addr, m->addr, sizeof out->in6.sin6_addr);
        return true;
    }
    return false;
}

int tether_conn_peer(const tether_conn *c, char *buf, size_t len)
{
    if (c == NULL || buf == NULL || len == 0) {
        return TETHER_EINVAL;
    }
    char tmp[160];
    union tether__peer_addr pa;
    if (tether__pp_conn_source(c, tmp, sizeof tmp)) {
        /* The client the proxy relayed (PROXY protocol). */
    } else if (tether__conn_get_peer(c, &pa)) {
        /* Recorded at accept: still known after the peer reset. */
        tether__addr_format(&pa.sa, sizeof pa, tmp, sizeof tmp);
    } else {
        if (c->tr == NULL) {
            return TETHER_ENOTCONN;
        }
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        if (getpeername(c->tr->fd, (struct sockaddr *)&ss, &sl) != 0) {
            return TETHER_ENOTCONN;
        }
        tether__addr_format((struct sockaddr *)&ss, sl, tmp, sizeof tmp);
    }
    if (strlen(tmp) + 1 > len) {
        return TETHER_EINVAL;
    }
    memcpy(buf, tmp, strlen(tmp) + 1);
    return TETHER_OK;
}
