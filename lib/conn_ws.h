/* SPDX-License-Identifier: MIT */
/* The per-message part of WebSocket message mode (ws.h), inline in the
 * connection's send path (wqueue.c): a small message becomes one frame
 * written whole into the tail of the queue. Everything else goes to
 * conn_ws.c. */
#ifndef TETHER_CONN_WS_H
#define TETHER_CONN_WS_H

#include "conn_core.h"
#include "ws.h"

/* tether_conn_send() and _send_zc() on an open WebSocket connection (the
 * checks of the connection are done): the messages tether__ws_send()
 * does not take inline. */
int tether__ws_send_other(tether_conn *c, const uint8_t *data, size_t len, bool zc,
                          tether_free_cb fcb, void *fud);

/* (Always inline: out of line, the second call with its own prologue and
 * epilogue cost a sixth of a small message's instructions.) */
static inline __attribute__((always_inline)) int tether__ws_send(tether_conn *c,
                                                                 const uint8_t *data, size_t len,
                                                                 bool zc, tether_free_cb fcb,
                                                                 void *fud)
{
    struct ws_transport *t = tether__conn_ws(c);
    if (TETHER__UNLIKELY(len >= 126 || zc || t->close_tx)) {
        return tether__ws_send_other(c, data, len, zc, fcb, fud);
    }
    /* The frame goes whole into the tail segment; on clients the payload
     * is masked while copied (one pass, as the copy alone would be). */
    uint8_t *p = tether__wq_reserve(c, 6 + len);
    if (p == NULL) {
        return TETHER_ENOMEM;
    }
    p[0] = (uint8_t)(0x80u | (t->stext ? TETHER__WS_OP_TEXT : TETHER__WS_OP_BINARY));
    size_t n;
    if (t->server) {
        p[1] = (uint8_t)len;
        if (len > 0) {
            memcpy(p + 2, data, len);
        }
        n = 2 + len;
    } else {
        p[1] = (uint8_t)(0x80u | len);
        tether__ws_mask_key(t, p + 2);
        tether__ws_mask_small(p + 6, data, len, p + 2);
        n = 6 + len;
    }
    c->wq_tail->len += n;
    c->queued += n; /* the budget catches up at the next write (as wqueue.c's) */
    c->msgs_out++;
    tether__conn_after_queue(c);
    return TETHER_OK;
}

#endif /* TETHER_CONN_WS_H */
