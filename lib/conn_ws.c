/* SPDX-License-Identifier: MIT */
/* The connection's side of WebSocket: wrapping a connection's transport in
 * the layer, message mode for sending (each message one frame, written
 * into the connection's queue: header and payload copied, or masked while
 * copied on clients, a client's large ones masked a chunk at a time as
 * they are written; tether control frames turned into what the peer
 * understands), the hooks the connection code calls, and the public
 * tether_ws_* calls. Reading is in conn_ws_read.c. */
#include "conn_ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DIRECT_MIN (16u * 1024u) /* server messages written from the caller's memory */
/* Client frames from this size are masked a chunk at a time on their way
 * out (zero-copy, or nothing queued ahead), else into a block of their own. */
#define STAGE_MIN (64u * 1024u)
#define STAGE_KEEP (4u << 20) /* the largest block the loop keeps for the next one */

/* ---- the layer and its connection ---------------------------------------- */

/* The upgrade is done: what the queue holds is len32 and is translated
 * on its way out; from here on messages are queued as frames. */
static void ws_on_open(struct ws_transport *t, void *ud)
{
    tether_conn *c = ud;
    t->legacy = c->queued;
    t->stext = c->ws_mode != 0 ? c->ws_mode == 2 : t->cfg->text;
}

int tether__ws_wrap(tether_conn *c, bool server)
{
    struct tether__conn_extra *ex = tether__conn_extra(c); /* holds c's pointer to it */
    if (ex == NULL) {
        return TETHER_ENOMEM;
    }
    struct ws_transport *t = NULL;
    int rv = tether__ws_transport_new(&t, c->tr, c->h.loop, c->cfg->ws, server);
    if (rv != TETHER_OK) {
        return rv;
    }
    t->on_open = ws_on_open;
    t->open_ud = c;
    t->owner = &ex->ws; /* (cleared when the transport goes: tether__conn_ws() is NULL) */
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

/* ---- sending in message mode --------------------------------------------- */

/* The header of a data frame of len bytes (with a fresh key on clients,
 * in key). Returns its length. */
static inline size_t data_hdr(struct ws_transport *t, uint8_t *out, size_t len, uint8_t key[4])
{
    uint8_t op = t->stext ? TETHER__WS_OP_TEXT : TETHER__WS_OP_BINARY;
    if (t->server) {
        return tether__ws_hdr_encode(out, true, op, len, NULL);
    }
    tether__ws_mask_key(t, key);
    return tether__ws_hdr_encode(out, true, op, len, key);
}

/* A large server message with nothing queued ahead: written from the
 * caller's memory, header and payload in one writev; only what the socket
 * does not take is queued. */
static int send_direct(tether_conn *c, const uint8_t *hdr, size_t hl, const uint8_t *data,
                       size_t len, bool zc, tether_free_cb fcb, void *fud)
{
    struct iovec iov[2] = {{(void *)hdr, hl}, {(void *)data, len}};
    size_t w = 0;
    int rv = c->tr->ops->writev(c->tr, iov, 2, &w);
    c->msgs_out++;
    if (rv != TETHER_OK && rv != TETHER_EAGAIN) {
        /* Reported from the loop, as the callback contract asks. */
        tether__conn_fail_io(c, rv, "write");
        return TETHER_OK;
    }
    tether__conn_direct_wrote(c, w);
    if (w < hl + len) {
        c->flags |= TETHER__CF_WBLOCKED;
    }
    size_t skip = w;
    bool hdr_lost = false;
    if (skip < hl) {
        uint8_t *p = tether__wq_reserve(c, hl - skip);
        if (p != NULL) {
            memcpy(p, hdr + skip, hl - skip);
            tether__wq_commit(c, hl - skip);
        }
        hdr_lost = p == NULL;
        skip = 0;
    } else {
        skip -= hl;
    }
    if (zc) {
        /* The rest by reference; the buffer is released once written (or
         * from the loop, when all of it went out already). Queued even
         * when the header's rest was not, so that the failed connection
         * releases it; its record was reserved (tether__wq_ref_reserve()). */
        int rv2 = tether__wq_append_ref(c, data + skip, len - skip, fcb, (void *)data, fud);
        if (rv2 != TETHER_OK || hdr_lost) {
            goto oom;
        }
        if (skip == len) {
            tether__flush_queue(c->h.loop, &c->flush);
        }
    } else if (hdr_lost) {
        goto oom;
    } else if (skip < len) {
        uint8_t *p = tether__wq_reserve(c, len - skip);
        if (p == NULL) {
            goto oom;
        }
        memcpy(p, data + skip, len - skip);
        tether__wq_commit(c, len - skip);
    }
    tether__conn_update_io(c);
    return TETHER_OK;
oom:
    /* Part of the frame is on the wire: the stream cannot be kept
     * consistent without the rest. */
    tether__conn_fail(c, TETHER_ENOMEM, "out of memory queueing a message");
    return TETHER_OK;
}

/* A large client frame, masked: queued by reference, and on release kept
 * (one per loop) for the next. A fresh block per message would make the
 * allocator return the memory to the system and fault it in again each
 * time, which costs more than the masking. */
struct stage {
    size_t cap;
    struct tether__ws_rnd *r;
    uint8_t data[];
};

static void stage_release(void *data, void *ud)
{
    (void)data;
    struct stage *s = ud;
    struct tether__ws_rnd *r = s->r;
    struct stage *old = r->spare;
    if (s->cap <= STAGE_KEEP && (old == NULL || old->cap < s->cap)) {
        r->spare = s;
        s = old;
    }
    free(s);
}

/* Queues hdr[0..hl) and data[0..len) masked with key from payload offset
 * pos, as one block by reference. */
static int stage_rest(tether_conn *c, const uint8_t *hdr, size_t hl, const uint8_t *data,
                      size_t len, const uint8_t key[4], uint64_t pos)
{
    struct ws_transport *t = tether__conn_ws(c);
    size_t need = hl + len;
    struct stage *s = t->rnd->spare;
    if (s != NULL && s->cap >= need) {
        t->rnd->spare = NULL;
    } else {
        s = malloc(sizeof *s + need);
        if (s == NULL) {
            return TETHER_ENOMEM;
        }
        s->cap = need;
        s->r = t->rnd;
    }
    memcpy(s->data, hdr, hl);
    tether__ws_mask_copy(s->data + hl, data, len, key, pos);
    if (tether__wq_append_ref(c, s->data, need, stage_release, s->data, s) != TETHER_OK) {
        stage_release(s->data, s);
        return TETHER_ENOMEM;
    }
    return TETHER_OK;
}

static int send_staged(tether_conn *c, const uint8_t *data, size_t len)
{
    uint8_t hdr[TETHER__WS_HDR_MAX];
    uint8_t key[4];
    size_t hl = data_hdr(tether__conn_ws(c), hdr, len, key);
    return stage_rest(c, hdr, hl, data, len, key, 0);
}

/* A large client message with nothing queued ahead: masked a chunk at a
 * time (TETHER__WS_CHUNK) into the loop's buffer and written while the
 * socket takes it all, with no staged copy of the message; what the
 * socket does not take is staged, masked from where it stopped. */
static int send_direct_masked(tether_conn *c, const uint8_t *data, size_t len)
{
    struct ws_transport *t = tether__conn_ws(c);
    uint8_t *chunk = tether__ws_chunk_get(t->rnd);
    if (chunk == NULL) {
        return send_staged(c, data, len); /* (slower, not wrong) */
    }
    uint8_t hdr[TETHER__WS_HDR_MAX];
    uint8_t key[4];
    size_t hl = data_hdr(t, hdr, len, key);
    size_t hsent = 0; /* header bytes written */
    size_t sent = 0;  /* payload bytes written */
    c->msgs_out++;
    for (;;) {
        size_t k = TETHER__MIN(len - sent, (size_t)TETHER__WS_CHUNK);
        tether__ws_mask_copy(chunk, data + sent, k, key, sent);
        struct iovec iov[2] = {{hdr + hsent, hl - hsent}, {chunk, k}};
        int first = hsent < hl ? 0 : 1;
        size_t w = 0;
        int rv = c->tr->ops->writev(c->tr, iov + first, 2 - first, &w);
        if (rv != TETHER_OK && rv != TETHER_EAGAIN) {
            /* Reported from the loop, as the callback contract asks. */
            tether__conn_fail_io(c, rv, "write");
            return TETHER_OK;
        }
        tether__conn_direct_wrote(c, w);
        size_t h = TETHER__MIN(w, hl - hsent);
        hsent += h;
        sent += w - h;
        if (rv != TETHER_OK || hsent < hl || w - h < k || sent == len) {
            break;
        }
    }
    if (hsent < hl || sent < len) {
        c->flags |= TETHER__CF_WBLOCKED;
        /* (Each chunk is masked from the caller's bytes: the part of the
         * last one the socket did not take is masked again here.) */
        return tether__conn_direct_queued(
            c, stage_rest(c, hdr + hsent, hl - hsent, data + sent, len - sent, key, sent));
    }
    tether__conn_update_io(c);
    return TETHER_OK;
}

/* A large zero-copy client message: the header queued, the caller's
 * payload by reference, masked on its way out (ws.h, tether__ws_lazy). */
static int send_lazy(tether_conn *c, const uint8_t *data, size_t len, tether_free_cb fcb, void *fud)
{
    struct ws_transport *t = tether__conn_ws(c);
    uint8_t hdr[TETHER__WS_HDR_MAX];
    uint8_t key[4];
    size_t hl = data_hdr(t, hdr, len, key);
    if (tether__ws_lazy_add(t, data, len, key) != TETHER_OK) {
        return TETHER_ENOMEM;
    }
    uint8_t *p = tether__wq_reserve(c, hl);
    if (p == NULL) {
        tether__ws_lazy_drop_last(t);
        return TETHER_ENOMEM;
    }
    memcpy(p, hdr, hl);
    tether__wq_commit(c, hl);
    if (tether__wq_append_ref(c, data, len, fcb, (void *)data, fud) != TETHER_OK) {
        /* A header without its payload would corrupt the stream. */
        tether__ws_lazy_drop_last(t);
        tether__conn_fail(c, TETHER_ENOMEM, "out of memory queueing a message");
        return TETHER_OK;
    }
    c->msgs_out++;
    tether__conn_after_queue(c);
    return TETHER_OK;
}

int tether__ws_send_other(tether_conn *c, const uint8_t *data, size_t len, bool zc,
                          tether_free_cb fcb, void *fud)
{
    struct ws_transport *t = tether__conn_ws(c);
    if (t->close_tx) {
        /* Our close frame is out: nothing may follow it (RFC 6455 5.5.1).
         * The message counts as sent, as one the socket took would. */
        c->msgs_out++;
        if (zc && fcb != NULL) {
            /* The buffer is released from the loop (callback contract). */
            if (tether__wq_append_ref(c, data + len, 0, fcb, (void *)data, fud) != TETHER_OK) {
                return TETHER_ENOMEM;
            }
            tether__flush_queue(c->h.loop, &c->flush);
        }
        return TETHER_OK;
    }
    uint8_t key[4];
    if (t->server && (zc || len >= DIRECT_MIN)) {
        /* No mask: the payload need not be copied. */
        uint8_t hdr[TETHER__WS_HDR_MAX];
        size_t hl = data_hdr(t, hdr, len, key);
        if (c->wq_head == NULL && c->state == TETHER__CS_READY &&
            !(c->flags & TETHER__CF_WBLOCKED) && len >= DIRECT_MIN) {
            return send_direct(c, hdr, hl, data, len, zc, fcb, fud);
        }
        uint8_t *p = tether__wq_reserve(c, zc ? hl : hl + len);
        if (p == NULL) {
            return TETHER_ENOMEM;
        }
        memcpy(p, hdr, hl);
        if (!zc) {
            memcpy(p + hl, data, len);
            tether__wq_commit(c, hl + len);
        } else {
            tether__wq_commit(c, hl);
            if (tether__wq_append_ref(c, data, len, fcb, (void *)data, fud) != TETHER_OK) {
                /* A header without its payload would corrupt the stream. */
                tether__conn_fail(c, TETHER_ENOMEM, "out of memory queueing a message");
                return TETHER_OK;
            }
        }
        c->msgs_out++;
        tether__conn_after_queue(c);
        return TETHER_OK;
    }
    if (!t->server && zc && len >= STAGE_MIN) {
        return send_lazy(c, data, len, fcb, fud);
    }
    if (!t->server && len >= STAGE_MIN && c->wq_head == NULL && c->state == TETHER__CS_READY &&
        !(c->flags & TETHER__CF_WBLOCKED)) {
        return send_direct_masked(c, data, len);
    }
    /* The frame goes into the queue whole, a client's message masked on
     * the way in (one pass over the payload, which had to be copied
     * anyway). */
    if (!t->server && len >= STAGE_MIN) {
        int rv = send_staged(c, data, len);
        if (rv != TETHER_OK) {
            return rv;
        }
    } else {
        uint8_t *p = tether__wq_reserve(c, TETHER__WS_HDR_MAX + len);
        if (p == NULL) {
            return TETHER_ENOMEM;
        }
        size_t hl = data_hdr(t, p, len, key);
        if (len == 0) {
            /* (data may be NULL) */
        } else if (t->server) {
            memcpy(p + hl, data, len);
        } else {
            tether__ws_mask_copy(p + hl, data, len, key, 0);
        }
        tether__wq_commit(c, hl + len);
    }
    if (zc && fcb != NULL) {
        /* Copied: the buffer is released from the loop once this is out. */
        if (tether__wq_append_ref(c, data + len, 0, fcb, (void *)data, fud) != TETHER_OK) {
            tether__conn_fail(c, TETHER_ENOMEM, "out of memory queueing a message");
            return TETHER_OK;
        }
    }
    c->msgs_out++;
    tether__conn_after_queue(c);
    return TETHER_OK;
}

int tether__ws_queue_frame(tether_conn *c, uint8_t op, const uint8_t *p, size_t n)
{
    uint8_t *dst = tether__wq_reserve(c, TETHER__WS_HDR_MAX + n);
    if (dst == NULL) {
        return TETHER_ENOMEM;
    }
    tether__wq_commit(c, tether__ws_frame_encode(tether__conn_ws(c), dst, op, p, n));
    return TETHER_OK;
}

/* A read position in the iovecs handed to tether__ws_queue_ctrl(). */
struct cursor {
    const struct iovec *iov;
    int n;
    int i;
    size_t off;
};

/* Copies up to want bytes to dst (NULL: skips them); returns how many. */
static size_t cursor_take(struct cursor *k, uint8_t *dst, size_t want)
{
    size_t got = 0;
    while (got < want && k->i < k->n) {
        size_t m = TETHER__MIN(want - got, k->iov[k->i].iov_len - k->off);
        if (dst != NULL) {
            memcpy(dst + got, (const uint8_t *)k->iov[k->i].iov_base + k->off, m);
        }
        got += m;
        k->off += m;
        if (k->off == k->iov[k->i].iov_len) {
            k->i++;
            k->off = 0;
        }
    }
    return got;
}

/* Queues the next len bytes of k as one frame (op, RSV bits in rsv). */
static int queue_from(tether_conn *c, struct cursor *k, uint8_t op, uint8_t rsv, size_t len,
                      const uint8_t *prefix, size_t plen)
{
    struct ws_transport *t = tether__conn_ws(c);
    uint8_t *dst = tether__wq_reserve(c, TETHER__WS_HDR_MAX + plen + len);
    if (dst == NULL) {
        return TETHER_ENOMEM;
    }
    uint8_t key[4];
    if (!t->server) {
        tether__ws_mask_key(t, key);
    }
    size_t hl = tether__ws_hdr_encode(dst, true, op, plen + len, t->server ? NULL : key);
    dst[0] |= (uint8_t)(rsv << 4);
    if (plen > 0) {
        memcpy(dst + hl, prefix, plen);
    }
    (void)cursor_take(k, dst + hl + plen, len);
    if (!t->server) {
        tether__ws_mask(dst + hl, plen + len, key, 0);
    }
    tether__wq_commit(c, hl + plen + len);
    return TETHER_OK;
}

/* What a tether control frame means to a peer without the extension. */
static int ctrl_translate(tether_conn *c, uint8_t type, const uint8_t *p, size_t pl)
{
    struct ws_transport *t = tether__conn_ws(c);
    switch (type) {
    case TETHER__CTRL_PING:
        return tether__ws_queue_frame(c, TETHER__WS_OP_PING, p,
                                      TETHER__MIN(pl, (size_t)TETHER__WS_CTRL_MAX));
    case TETHER__CTRL_PONG:
        /* The answer to the peer's last ping, now that the connection
         * answers it (a peer that pings without reading gets none). */
        if (t->ping_due) {
            t->ping_due = false;
            return tether__ws_queue_frame(c, TETHER__WS_OP_PONG, t->ping, t->ping_len);
        }
        return TETHER_OK;
    case TETHER__CTRL_GOAWAY:
        if (pl >= TETHER__CTRL_GOAWAY_MIN) {
            tether__ws_set_close(t, ((unsigned)p[1] << 8) | p[2],
                                 (const char *)p + TETHER__CTRL_GOAWAY_MIN,
                                 pl - TETHER__CTRL_GOAWAY_MIN);
        }
        return TETHER_OK;
    case TETHER__WS_MARK_TEXT:
    case TETHER__WS_MARK_BINARY:
        t->stext = type == TETHER__WS_MARK_TEXT;
        return TETHER_OK;
    default:
        return TETHER_OK; /* HELLO: the upgrade did its work */
    }
}

int tether__ws_queue_ctrl(tether_conn *c, const struct iovec *iov, int n, size_t total)
{
    struct ws_transport *t = tether__conn_ws(c);
    if (t->close_tx) {
        return TETHER_OK; /* nothing follows our close frame */
    }
    /* The pieces are len32 items queued as one: a control frame, and for
     * CALL and REPLY the data frame that belongs to it (call.c). */
    struct cursor k = {iov, n, 0, 0};
    size_t done = 0;
    size_t first = 0; /* the bytes of the first item */
    int rv = TETHER_OK;
    while (rv == TETHER_OK && done + TETHER__CTRL_HDR_LEN <= total) {
        uint8_t h[TETHER__CTRL_HDR_LEN];
        (void)cursor_take(&k, h, sizeof h);
        if (h[0] != TETHER__CTRL_MARK) {
            size_t len = tether__get_be32(h);
            uint8_t op = t->stext ? TETHER__WS_OP_TEXT : TETHER__WS_OP_BINARY;
            rv = queue_from(c, &k, op, 0, len, NULL, 0);
            done += TETHER__CTRL_HDR_LEN + len;
            first = first != 0 ? first : done;
            continue;
        }
        size_t pl = ((size_t)h[2] << 8) | h[3];
        done += TETHER__CTRL_HDR_LEN + pl;
        if (t->tctl && h[1] != TETHER__WS_MARK_TEXT && h[1] != TETHER__WS_MARK_BINARY) {
            /* Between tether ends the control frame travels as it is, in a
             * binary frame of its own with RSV2 set (ws.h). */
            rv = queue_from(c, &k, TETHER__WS_OP_BINARY, TETHER__WS_RSV2, pl, h, sizeof h);
            first = first != 0 ? first : done;
            continue;
        }
        uint8_t buf[TETHER__CTRL_GOAWAY_MIN + TETHER__CTRL_GOAWAY_TEXT_MAX];
        size_t got = cursor_take(&k, buf, TETHER__MIN(pl, sizeof buf));
        (void)cursor_take(&k, NULL, pl - got);
        rv = ctrl_translate(c, h[1], buf, got);
        first = first != 0 ? first : done;
    }
    if (rv != TETHER_OK && done > first) {
        /* A control frame without the data frame that belongs to it
         * would corrupt the stream. */
        tether__conn_fail(c, rv, "out of memory queueing a message");
        return TETHER_OK;
    }
    return rv;
}

/* ---- hooks for the connection code --------------------------------------- */

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

void tether__ws_close_reason(tether_conn *c, unsigned reason, const char *text)
{
    if (tether__conn_ws(c) != NULL) {
        tether__ws_set_close(tether__conn_ws(c), reason, text != NULL ? text : "",
                             text != NULL ? strlen(text) : 0);
    }
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
    if (tether__conn_ws(c) != NULL && tether__ws_open(c)) {
        tether__conn_ws(c)->stext = text; /* messages are framed as they are sent */
    } else {
        /* A marker in the len32 queue, so that the switch takes effect
         * between the messages sent before and after it. */
        uint8_t m[TETHER__CTRL_HDR_LEN];
        tether__len32_ctrl_header(m, text ? TETHER__WS_MARK_TEXT : TETHER__WS_MARK_BINARY, 0);
        struct iovec v = {m, sizeof m};
        int rv = tether__wq_append_copy(c, &v, 1, sizeof m);
        if (rv != TETHER_OK) {
            return rv;
        }
        tether__conn_after_queue(c);
    }
    c->ws_mode = text ? 2 : 1;
    return TETHER_OK;
}

bool tether_ws_msg_is_text(const tether_conn *c)
{
    const struct ws_transport *t = c != NULL ? tether__conn_ws(c) : NULL;
    return t != NULL && t->cur_text;
}

const char *tether_ws_path(const tether_conn *c)
{
    const struct ws_transport *t = c != NULL ? tether__conn_ws(c) : NULL;
    return t != NULL && t->phase == TETHER__WS_OPEN ? t->path : NULL;
}

const char *tether_ws_origin(const tether_conn *c)
{
    const struct ws_transport *t = c != NULL ? tether__conn_ws(c) : NULL;
    if (t == NULL || t->phase != TETHER__WS_OPEN) {
        return NULL;
    }
    return t->server ? t->origin : c->cfg->ws->origin;
}

const char *tether_ws_protocol(const tether_conn *c)
{
    const struct ws_transport *t = c != NULL ? tether__conn_ws(c) : NULL;
    return t != NULL && t->phase == TETHER__WS_OPEN ? t->protocol : NULL;
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
    const struct ws_transport *t = c != NULL ? tether__conn_ws(c) : NULL;
    return t != NULL ? t->rx_code : 0;
}
