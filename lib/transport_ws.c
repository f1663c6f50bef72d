/* SPDX-License-Identifier: MIT */
/* The WebSocket layer as a transport stacked on the TCP or TLS transport
 * of a connection: its operations table, the HTTP upgrade run as the end
 * of the connection's handshake, reading (what came with the handshake,
 * then the inner transport's bytes as they are: the connection parses the
 * frames, conn_ws_read.c) and the close frame sent on shutdown. Writing
 * is in ws_write.c. Nothing here knows the connection. */
#include "ws.h"

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

/* The upgrade is done. A peer without the extension counts as speaking
 * tether control frames (a HELLO with no interval of its own), so that
 * our heartbeats become WebSocket pings and its pings reach liveness: the
 * HELLO comes first in the input, in a frame of the extension's form that
 * only this one position admits (hello_synth). */
static int hs_open(struct ws_transport *t)
{
    t->phase = TETHER__WS_OPEN;
    if (!t->tctl) {
        uint8_t f[6 + TETHER__CTRL_HDR_LEN + TETHER__CTRL_HELLO_LEN] = {0};
        f[0] = (uint8_t)(0x80u | (TETHER__WS_RSV2 << 4) | TETHER__WS_OP_BINARY);
        f[1] =
            (uint8_t)((t->server ? 0x80u : 0u) | (TETHER__CTRL_HDR_LEN + TETHER__CTRL_HELLO_LEN));
        size_t hl = t->server ? 6 : 2; /* (masked as a client's frame must be, key 0) */
        tether__len32_ctrl_header(f + hl, TETHER__CTRL_HELLO, TETHER__CTRL_HELLO_LEN);
        f[hl + TETHER__CTRL_HDR_LEN] = TETHER__CTRL_HELLO_VERSION;
        size_t n = hl + TETHER__CTRL_HDR_LEN + TETHER__CTRL_HELLO_LEN;
        if (tether__ws_buf_reserve(&t->ib, &t->icap, t->ilen + n) != TETHER_OK) {
            return TETHER_ENOMEM;
        }
        memmove(t->ib + n, t->ib, t->ilen);
        memcpy(t->ib, f, n);
        t->ilen += n;
        t->hello_synth = true;
    }
    t->ioff = 0;
    if (t->ilen == 0) {
        free(t->ib);
        t->ib = NULL;
        t->icap = 0;
    }
    if (t->on_open != NULL) {
        t->on_open(t, t->open_ud);
    }
    return TETHER_OK;
}

/* Removes the head from ib; what follows it (frames sent at once) stays. */
static void ib_consume(struct ws_transport *t, size_t n)
{
    memmove(t->ib, t->ib + n, t->ilen - n);
    t->ilen -= n;
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
            ib_consume(t, hl);
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
    ib_consume(t, hl);
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
        if (rv == TETHER_ENOMEM) {
            return tether__ws_fail(t, rv, "out of memory");
        }
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
    return t->ilen > 0 || (t->close_rx && !t->eof) || t->in->ops->has_pending(t->in);
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
    if (t->owner != NULL && *t->owner == t) {
        *t->owner = NULL;
    }
    t->in->ops->destroy(t->in);
    free(t->ib);
    free(t->mb);
    tether__ws_lazy_forget(t);
    if (!t->ob_shared) {
        free(t->ob);
    }
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

/* Reading in the open phase: what came with the handshake first, then
 * the inner transport's bytes unchanged. */
static int ws_readv_op(struct tether_transport *tr, const struct iovec *iov, int iovcnt,
                       size_t *nread)
{
    struct ws_transport *t = (struct ws_transport *)tr;
    *nread = 0;
    if (t->phase != TETHER__WS_OPEN) {
        return TETHER_EAGAIN;
    }
    if (t->olen > 0) {
        int rv = tether__ws_ob_flush(t); /* the close frame goes out from here too */
        if (rv != TETHER_OK && rv != TETHER_EAGAIN) {
            return rv;
        }
    }
    if (t->ilen > 0) {
        size_t n = 0;
        for (int i = 0; i < iovcnt && t->ilen > 0; i++) {
            size_t k = TETHER__MIN(iov[i].iov_len, t->ilen);
            memcpy(iov[i].iov_base, t->ib + t->ioff, k);
            t->ioff += k;
            t->ilen -= k;
            n += k;
        }
        if (t->ilen == 0) {
            free(t->ib);
            t->ib = NULL;
            t->icap = t->ioff = 0;
        }
        *nread = n;
        return TETHER_OK;
    }
    if (t->close_rx || t->eof) {
        t->eof = true;
        return TETHER_OK; /* nothing after a close frame counts: end of stream */
    }
    int rv = t->in->ops->readv(t->in, iov, iovcnt, nread);
    if (rv == TETHER_OK && *nread == 0 && !t->violated) {
        t->eof = true;
        t->rx_code = 1006;
        if (t->in_msg) {
            return tether__ws_fail(t, TETHER_ETRUNCATED,
                                   "peer closed the connection inside a WebSocket message (1006)");
        }
        snprintf(t->eof_detail, sizeof t->eof_detail,
                 "peer closed the connection without a WebSocket close frame (1006)");
    }
    return rv;
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

/* ---- the layer ------------------------------------------------------------ */

int tether__ws_transport_new(struct ws_transport **out, struct tether_transport *in,
                             tether_loop *loop, const struct tether__ws_cfg *cfg, bool server)
{
    struct tether__ws_rnd *rnd = tether__ws_rnd_get(loop);
    if (rnd == NULL) {
        return TETHER_ENOMEM;
    }
    struct ws_transport *t = calloc(1, sizeof *t);
    if (t == NULL) {
        return TETHER_ENOMEM;
    }
    t->base.ops = &ws_ops;
    t->base.fd = in->fd;
    t->in = in;
    t->rnd = rnd;
    t->cfg = cfg;
    t->server = server;
    t->phase = TETHER__WS_INNER;
    t->text = t->stext = cfg->text;
    *out = t;
    return TETHER_OK;
}

const struct tether_transport *tether__ws_inner(const struct tether_transport *tr)
{
    return tr != NULL && tr->ops == &ws_ops ? ((const struct ws_transport *)tr)->in : tr;
}
