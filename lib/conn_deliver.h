/* SPDX-License-Identifier: MIT */
/* One received message to the application (conn_read.c for len32 and
 * other framers, conn_ws_read.c for WebSocket frames): a request or reply
 * to call.c, a numbered message through ack.c's duplicate filter, anything
 * else to on_message. Inline: it runs for every message. */
#ifndef TETHER_CONN_DELIVER_H
#define TETHER_CONN_DELIVER_H

#include "ack.h"
#include "conn_core.h"
#include "delivery.h"

static inline void tether__conn_deliver(tether_conn *c, const uint8_t *p, size_t len)
{
    if (TETHER__UNLIKELY(c->rx_tag != 0)) {
        if (c->rx_tag != TETHER__RX_SEQ) {
            tether__call_deliver(c, p, len); /* a request or reply (call.c) */
            tether__ack_retag(c);
            return;
        }
        if (!tether__ack_rx_data(c)) {
            return; /* a duplicate (ack.c) */
        }
    }
    tether_msg_cb cb = c->cfg->o.on_message;
    tether__conn_count_in(c);
    if (cb != NULL) {
        cb(c, p, len, c->userdata);
    }
}

#endif
