/* SPDX-License-Identifier: MIT */
/* The WebSocket layer as a transport stacked on the TCP or TLS transport
 * of a connection: its operations table, the HTTP upgrade run as the end
 * of the connection's handshake, the close frame sent on shutdown, the
 * hooks the connection code calls, and the public tether_ws_* calls. The
 * data path (frames <-> the len32 stream) is in ws_stream.c. */
#include "conn_core.h"
#include "ws.h"

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct tether_transport_ops ws_ops;

/* ---- the handshake ----------------------------------------------------- */

/* Reads into ib until the head's blank line; returns OK with *head_len
 * set, EAGAIN, or an error (limit, EOF). */
static int hs_read_head(struct ws_transport *t, size_t *head_len)
{
    size_t max = t->cfg->max_request;
    for (;;) {
        if (t->ilen > 0) {
            uint8_t *end = memmem(t->ib, t->ilen, "\r\n\r\n", 4);
            if (end != NULL) {
                *head_len = (size_t)(end - t->ib) + 4;
                return TETHER_OK;
            }
        }
        if (t->ilen >= max) {
            return TETHER_EMSGSIZE;
        }
        if (tether__ws_buf_reserve(&t->ib, &t->icap, max) != TETHER_OK) {
            return TETHER_ENOMEM;
        }
        struct iovec v = {t->ib + t->ilen, max - t->ilen};
        size_t n = 0;
        int rv = t->in->ops->readv(t->in, &v, 1, &n);
        if (rv != TETHER_OK) {
            return rv;
        }
        if (n == 0) {
            return TETHER_EOF;
        }
        t->ilen += n;
    }
}

/* The connection becomes established: the peer counts as speaking tether
 * control frames (a HELLO with no interval of its own), so that our
 * heartbeats become WebSocket pings and its pings reach liveness. */
static int hs_open(struct ws_transport *t)
{
    t->phase = TETHER__WS_OPEN;
    t->ib_fresh = t->ilen > 0; /* frames sent right behind the handshake */
    if (t->tctl) {
        return TETHER_OK; /* the peer's own HELLO travels in the stream */
    }
    uint8_t hello[TETHER__CTRL_HDR_LEN + TETHER__CTRL_HELLO_LEN] = {0};
    tether__len32_ctrl_header(hello, TETHER__CTRL_HELLO, TETHER__CTRL_HELLO_LEN);
    hello[4] = TETHER__CTRL_HELLO_VERSION;
    return tether__ws_db_add(t, hello, sizeof hello);
}

static int hs_server_recv(struct ws_transport *t)
{
    size_t hl = 0;
    int rv = hs_read_head(t, &hl);
    if (rv == TETHER_EAGAIN) {
        return rv;
    }
    char detail[TETHER_ERROR_MSG_MAX];
    char *resp = NULL;
    size_t rlen = 0;
    if (rv != TETHER_OK) {
        if (rv == TETHER_EMSGSIZE) {
            resp = tether__ws_http_error(431, &rlen);
            snprintf(detail, sizeof detail,
                     "upgrade request head larger than %zu bytes (answered 431)",
                     t->cfg->max_request);
        } else if (rv == TETHER_EOF) {
            return tether__ws_fail(
                t, TETHER_EOF,
                "the client closed the connection before its upgrade request was "
                "complete (%zu bytes)",
                t->ilen);
        } else {
            return rv;
        }
    } else {
        struct tether__ws_req req;
        char *proto = NULL;
        int st = tether__ws_server_check(t->cfg, (const char *)t->ib, hl, &req, &proto, &resp,
                                         &rlen, detail, sizeof detail);
        if (st < 0) {
            return tether__ws_fail(t, TETHER_ENOMEM, "out of memory in the WebSocket handshake");
        }
        if (st == 0) {
            t->path = strndup(req.path, req.path_len);
            t->origin = req.origin != NULL ? strndup(req.origin, req.origin_len) : NULL;
            t->protocol = proto;
            t->tctl = req.tctl;
            if (t->path == NULL || (req.origin != NULL && t->origin == NULL)) {
                free(resp);
                return tether__ws_fail(t, TETHER_ENOMEM,
                                       "out of memory in the WebSocket handshake");
            }
            tether__ws_ib_consume(t, hl);
            rv = tether__ws_ob_add(t, resp, rlen);
            free(resp);
            if (rv != TETHER_OK) {
                return tether__ws_fail(t, rv, "out of memory in the WebSocket handshake");
            }
            t->phase = TETHER__WS_SEND;
            return TETHER_OK;
        }
    }
    if (resp == NULL) {
        return tether__ws_fail(t, TETHER_ENOMEM, "out of memory in the WebSocket handshake");
    }
    rv = tether__ws_ob_add(t, resp, rlen);
    free(resp);
    t->phase = TETHER__WS_REJECT;
    t->fail_rv = strncmp(detail, "answered a health", 17) == 0 ? TETHER_ECANCELED : TETHER_EPROTO;
    (void)tether__ws_fail(t, t->fail_rv, "%s", detail);
    return rv;
}

static int hs_client_recv(struct ws_transport *t)
{
    size_t hl = 0;
    int rv = hs_read_head(t, &hl);
    if (rv == TETHER_EAGAIN) {
        return rv;
    }
    if (rv == TETHER_EMSGSIZE) {
        return tether__ws_fail(t, TETHER_EPROTO,
                               "the server's upgrade response head is larger than %zu bytes",
                               t->cfg->max_request);
    }
    if (rv == TETHER_EOF) {
        return tether__ws_fail(t, TETHER_EPROTO,
                               "the server closed the connection during the WebSocket upgrade");
    }
    if (rv != TETHER_OK) {
        return rv;
    }
    char detail[TETHER_ERROR_MSG_MAX];
    rv = tether__ws_client_check(t->cfg, (const char *)t->ib, hl, t->key, &t->protocol, &t->tctl,
                                 detail, sizeof detail);
    if (rv != TETHER_OK) {
        return tether__ws_fail(t, rv, "%s", detail);
    }
    tether__ws_ib_consume(t, hl);
    t->path = strdup(t->cfg->path);
    if (t->path == NULL) {
        return tether__ws_fail(t, TETHER_ENOMEM, "out of memory");
    }
    return hs_open(t);
}

static int ws_handshake(struct tether_transport *tr, bool *done)
{
    struct ws_transport *t = (struct ws_transport *)tr;
    int rv;
    *done = false;
    if (t->phase == TETHER__WS_INNER) {
        bool in_done = false;
        rv = t->in->ops->handshake(t->in, &in_done);
        if (rv != TETHER_OK || !in_done) {
            return rv;
        }
        if (t->server) {
            t->phase = TETHER__WS_RECV;
        } else {
            size_t len = 0;
            char *req = tether__ws_client_request(t->cfg, t->key, &len);
            if (req == NULL) {
                return tether__ws_fail(t, TETHER_ENOMEM,
                                       "cannot build the WebSocket upgrade request");
            }
            rv = tether__ws_ob_add(t, req, len);
            free(req);
            if (rv != TETHER_OK) {
                return tether__ws_fail(t, rv, "out of memory");
            }
            t->phase = TETHER__WS_SEND;
        }
    }
    if (t->phase == TETHER__WS_RECV && t->server) {
        rv = hs_server_recv(t);
        if (rv != TETHER_OK) {
            return rv;
        }
    }
    if (t->phase == TETHER__WS_SEND || t->phase == TETHER__WS_REJECT) {
        rv = tether__ws_ob_flush(t);
        if (rv != TETHER_OK) {
            return rv;
        }
        if (t->phase == TETHER__WS_REJECT) {
            return t->fail_rv;
        }
        if (t->server) {
            rv = hs_open(t);
            if (rv != TETHER_OK) {
                return tether__ws_fail(t, rv, "out of memory");
            }
        } else {
            t->phase = TETHER__WS_RECV;
        }
    }
    if (t->phase == TETHER__WS_RECV) {
        rv = hs_client_recv(t);
        if (rv != TETHER_OK) {
            return rv;
        }
    }
    *done = t->phase == TETHER__WS_OPEN;
    return TETHER_OK;
}

/* ---- the remaining operations --------------------------------------------- */

static unsigned ws_want_events(const struct tether_transport *tr)
{
    const struct ws_transport *t = (const struct ws_transport *)tr;
    unsigned ev = t->in->ops->want_events(t->in);
    switch (t->phase) {
    case TETHER__WS_INNER:
        return ev;
    case TETHER__WS_RECV:
        return ev | TETHER_EV_READ;
    default:
        return ev | (t->olen > 0 ? TETHER_EV_WRITE : 0u);
    }
}

static bool ws_has_pending(const struct tether_transport *tr)
{
    const struct ws_transport *t = (const struct ws_transport *)tr;
    if (t->phase != TETHER__WS_OPEN) {
        return false;
    }
    return t->dlen > 0 || t->ib_fresh || (t->close_rx && !t->eof) || t->in->ops->has_pending(t->in);
}

static int ws_shutdown(struct tether_transport *tr, bool *done)
{
    struct ws_transport *t = (struct ws_transport *)tr;
    *done = false;
    if (t->phase == TETHER__WS_OPEN && !t->close_tx) {
        /* Our close frame goes after everything queued: the code the
         * application chose, the one a liveness close implies, the peer's
         * echoed, or 1000. */
        int code = t->tx_code;
        if (code == 0) {
            code = t->close_rx && t->rx_code != 1005 && t->rx_code != 1006 ? t->rx_code : 1000;
        }
        uint8_t p[2 + TETHER__WS_REASON_MAX];
        size_t rl = strlen(t->tx_reason);
        p[0] = (uint8_t)(code >> 8);
        p[1] = (uint8_t)code;
        memcpy(p + 2, t->tx_reason, rl);
        t->close_tx = true;
        if (tether__ws_ob_frame(t, TETHER__WS_OP_CLOSE, p, 2 + rl) != TETHER_OK) {
            return tether__ws_fail(t, TETHER_ENOMEM, "out of memory closing");
        }
    }
    int rv = tether__ws_ob_flush(t);
    if (rv == TETHER_EAGAIN) {
        return TETHER_OK;
    }
    if (rv != TETHER_OK) {
        return rv;
    }
    return t->in->ops->shutdown(t->in, done);
}

static void ws_destroy(struct tether_transport *tr)
{
    struct ws_transport *t = (struct ws_transport *)tr;
    if (t->c != NULL && tether__conn_ws(t->c) == t) {
        t->c->ex->ws = NULL;
        t->c->hooks &= (uint8_t)~TETHER__CH_WS;
    }
    t->in->ops->destroy(t->in);
    free(t->ib);
    free(t->db);
    free(t->mb);
    free(t->ob);
    free(t->types);
    free(t->path);
    free(t->origin);
    free(t->protocol);
    free(t);
}

static const char *ws_last_error(const struct tether_transport *tr)
{
    const struct ws_transport *t = (const struct ws_transport *)tr;
    return t->err[0] != '\0' ? t->err : t->in->ops->last_error(t->in);
}

static int ws_readv_op(struct tether_transport *tr, const struct iovec *iov, int iovcnt,
                       size_t *nread)
{
    struct ws_transport *t = (struct ws_transport *)tr;
    if (t->phase != TETHER__WS_OPEN) {
        *nread = 0;
        return TETHER_EAGAIN;
    }
    return tether__ws_readv(tr, iov, iovcnt, nread);
}

static const struct tether_transport_ops ws_ops = {
    .name = "WebSocket",
    .handshake = ws_handshake,
    .readv = ws_readv_op,
    .writev = tether__ws_writev,
    .want_events = ws_want_events,
    .has_pending = ws_has_pending,
    .shutdown = ws_shutdown,
    .destroy = ws_destroy,
    .last_error = ws_last_error,
};

/* ---- hooks for the connection code --------------------------------------- */

int tether__ws_wrap(tether_conn *c, bool server)
{
    struct tether__conn_extra *ex = tether__conn_extra(c); /* holds c's pointer to it */
    struct ws_transport *t = ex != NULL ? calloc(1, sizeof *t) : NULL;
    if (t == NULL) {
        return TETHER_ENOMEM;
    }
    t->base.ops = &ws_ops;
    t->base.fd = c->tr->fd;
    t->in = c->tr;
    t->c = c;
    t->cfg = c->cfg->ws;
    t->server = server;
    t->phase = TETHER__WS_INNER;
    t->text = t->cfg->text;
    c->tr = &t->base;
    ex->ws = t;
    c->hooks |= TETHER__CH_WS;
    if (server && c->cfg->pp_accept == 0) {
        /* One deadline for TLS and the upgrade request together. */
        tether__conn_timer_stop(c);
        if (t->cfg->handshake_timeout_ms >= 0 &&
            !tether__conn_timer_start(c, (uint64_t)t->cfg->handshake_timeout_ms)) {
            return TETHER_ENOMEM;
        }
    }
    return TETHER_OK;
}

bool tether__ws_handshake_timeout(tether_conn *c)
{
    struct ws_transport *t = tether__conn_ws(c);
    if (tether__conn_url(c) != NULL) {
        if (t->phase == TETHER__WS_INNER) {
            return false;
        }
        tether__conn_fail(c, TETHER_ETIMEDOUT,
                          "connect to %s: WebSocket upgrade timed out (connect timeout of %d ms)",
                          tether__conn_url(c), c->cfg->o.connect_timeout_ms);
        return true;
    }
    char peer[80];
    if (tether_conn_peer(c, peer, sizeof peer) != TETHER_OK) {
        snprintf(peer, sizeof peer, "an unknown peer");
    }
    c->flags |= TETHER__CF_REPORT_LISTENER;
    tether__conn_fail(c, TETHER_ETIMEDOUT,
                      "WebSocket handshake with %s timed out after %d ms (%s; %zu bytes of the "
                      "upgrade request received)",
                      peer, t->cfg->handshake_timeout_ms,
                      t->phase == TETHER__WS_INNER ? "during TLS" : "awaiting the upgrade request",
                      t->ilen);
    return true;
}

void tether__ws_on_deliver(tether_conn *c)
{
    struct ws_transport *t = tether__conn_ws(c);
    if (t == NULL) {
        return;
    }
    t->cur_text = t->tcount > 0 && t->types[t->thead] == t->dv_seq;
    if (t->cur_text) {
        t->thead = (t->thead + 1) & (t->tcap - 1);
        t->tcount--;
    }
    t->dv_seq++;
}

bool tether__ws_read_failed(tether_conn *c, int rv)
{
    struct ws_transport *t = tether__conn_ws(c);
    if (t == NULL || !t->violated || c->state != TETHER__CS_READY) {
        return false;
    }
    /* As a liveness close does it (liveness.c): on_close keeps the reason
     * and the detail, and the close timeout bounds the rest. */
    tether__conn_set_err(c, "read failed: %s", t->err);
    c->flags |= TETHER__CF_CLOSE_REQ | TETHER__CF_KEEP_REASON;
    c->reason = rv;
    tether__conn_begin_close(c);
    return true;
}

bool tether__ws_goaway(tether_conn *c, const char *text)
{
    struct ws_transport *t = tether__conn_ws(c);
    if (t == NULL) {
        return false;
    }
    if (t->tctl && tether__ctrl_negotiated(c)) {
        /* A tether peer: the GOAWAY travels in the stream and the drain
         * runs as on tcp://; the final close frame says 1001. */
        if (t->tx_code == 0) {
            t->tx_code = 1001;
            snprintf(t->tx_reason, sizeof t->tx_reason, "%s", text != NULL ? text : "");
        }
        return false;
    }
    /* Any other WebSocket peer cannot answer a GOAWAY: the close frame is
     * its GOAWAY (RFC 6455 7.4.1, 1001 "going away"), sent behind what is
     * queued, and the closing handshake ends the connection now rather
     * than at the drain deadline. */
    if (t->tx_code == 0) {
        t->tx_code = 1001;
        snprintf(t->tx_reason, sizeof t->tx_reason, "%s",
                 text != NULL && text[0] != '\0' ? text : "going away");
    }
    tether__conn_set_err(c, "drained (WebSocket close 1001 after the queue): %s", t->tx_reason);
    c->flags |= TETHER__CF_CLOSE_REQ | TETHER__CF_KEEP_REASON;
    c->reason = TETHER_OK;
    tether__conn_begin_close(c);
    return true;
}

const struct tether_transport *tether__ws_inner(const struct tether_transport *tr)
{
    return tr != NULL && tr->ops == &ws_ops ? ((const struct ws_transport *)tr)->in : tr;
}

const char *tether__ws_eof_detail(tether_conn *c)
{
    struct ws_transport *t = tether__conn_ws(c);
    return t != NULL && t->eof_detail[0] != '\0' ? t->eof_detail : NULL;
}

/* ---- public calls --------------------------------------------------------- */

int tether_ws_set_text(tether_conn *c, bool text)
{
    if (c == NULL) {
        return TETHER_EINVAL;
    }
    if (c->cfg->ws == NULL) {
        return TETHER_ENOTSUP;
    }
    if (c->state > TETHER__CS_READY || (c->flags & (TETHER__CF_CLOSE_REQ | TETHER__CF_EOF))) {
        return TETHER_ECLOSED;
    }
    bool cur = c->ws_mode != 0 ? c->ws_mode == 2 : c->cfg->ws->text;
    if (cur == text) {
        return TETHER_OK;
    }
    /* A marker in the queue, so that the switch takes effect between the
     * messages sent before and after it. */
    uint8_t m[TETHER__CTRL_HDR_LEN];
    tether__len32_ctrl_header(m, text ? TETHER__WS_MARK_TEXT : TETHER__WS_MARK_BINARY, 0);
    struct iovec v = {m, sizeof m};
    int rv = tether__wq_append_copy(c, &v, 1, sizeof m);
    if (rv != TETHER_OK) {
        return rv;
    }
    c->ws_mode = text ? 2 : 1;
    tether__conn_after_queue(c);
    return TETHER_OK;
}

bool tether_ws_msg_is_text(const tether_conn *c)
{
    return c != NULL && tether__conn_ws(c) != NULL && tether__conn_ws(c)->cur_text;
}

const char *tether_ws_path(const tether_conn *c)
{
    return c != NULL && tether__conn_ws(c) != NULL && tether__conn_ws(c)->phase == TETHER__WS_OPEN
               ? tether__conn_ws(c)->path
               : NULL;
}

const char *tether_ws_origin(const tether_conn *c)
{
    if (c == NULL || tether__conn_ws(c) == NULL || tether__conn_ws(c)->phase != TETHER__WS_OPEN) {
        return NULL;
    }
    return tether__conn_ws(c)->server ? tether__conn_ws(c)->origin : c->cfg->ws->origin;
}

const char *tether_ws_protocol(const tether_conn *c)
{
    return c != NULL && tether__conn_ws(c) != NULL && tether__conn_ws(c)->phase == TETHER__WS_OPEN
               ? tether__conn_ws(c)->protocol
               : NULL;
}

int tether_ws_close(tether_conn *c, int code, const char *reason)
{
    if (c == NULL || code < 0 || !tether__ws_code_ok((unsigned)code)) {
        return TETHER_EINVAL;
    }
    size_t rl = reason != NULL ? strlen(reason) : 0;
    if (rl > TETHER__WS_REASON_MAX ||
        (rl > 0 && tether__utf8_feed(0, (const uint8_t *)reason, rl) != 0)) {
        return TETHER_EINVAL;
    }
    if (c->cfg->ws == NULL) {
        return TETHER_ENOTSUP;
    }
    struct ws_transport *t = tether__conn_ws(c);
    if (t != NULL && !t->close_tx && t->tx_code == 0) {
        t->tx_code = code;
        memcpy(t->tx_reason, reason != NULL ? reason : "", rl + 1);
    }
    tether_conn_close(c);
    return TETHER_OK;
}

int tether_ws_close_code(const tether_conn *c)
{
    return c != NULL && tether__conn_ws(c) != NULL ? tether__conn_ws(c)->rx_code : 0;
}
