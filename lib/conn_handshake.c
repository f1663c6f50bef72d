/* SPDX-License-Identifier: MIT */
/* A connection before it is established, and its deadline: the steps of
 * its handshakes (a PROXY header, then the transport's: TLS, WebSocket)
 * as its socket becomes ready, and what the connection's timer means in
 * each state (the connect timeout, the handshake's, the close timeout).
 * The state machine (conn.c) moves it on once the handshake is done. */
#include "conn_core.h"
#include "dial.h"
#include "tls.h"
#include "ws.h"

#include <stdio.h>

void tether__conn_handshake_step(tether_conn *c)
{
    bool done = false;
    if (!tether__pp_conn_step(c, &done)) {
        return; /* failed; the connection is ending */
    }
    if (!done) {
        tether__conn_update_io(c);
        return;
    }
    done = false;
    int rv = c->tr->ops->handshake(c->tr, &done);
    if (rv != TETHER_OK && rv != TETHER_EAGAIN) {
        const char *d = c->tr->ops->last_error(c->tr);
        if (tether__conn_url(c) != NULL) {
            tether__conn_fail(c, rv, "connect to %s: %s", tether__conn_url(c),
                              d != NULL ? d : tether_strerror(rv));
        } else {
            char peer[80];
            if (tether_conn_peer(c, peer, sizeof peer) != TETHER_OK) {
                snprintf(peer, sizeof peer, "an unknown peer");
            }
            if (rv != TETHER_ECANCELED) { /* (a WebSocket health check answered) */
                c->flags |= TETHER__CF_REPORT_LISTENER;
            }
            tether__conn_fail(c, rv, "%s handshake with %s failed: %s",
                              c->cfg->tls != NULL && tether__conn_ws(c) == NULL ? "TLS"
                                                                                : c->tr->ops->name,
                              peer, d != NULL ? d : tether_strerror(rv));
        }
        return;
    }
    if (done) {
        tether__conn_became_ready(c);
    } else {
        tether__conn_update_io(c);
    }
}

/* The deadline passed during the TLS handshake: for a dialled connection
 * the connect timeout, for an accepted one the TLS configuration's. */
static void conn_handshake_timeout(tether_conn *c)
{
    if (tether__conn_url(c) != NULL) {
        tether__conn_fail(c, TETHER_ETIMEDOUT,
                          "connect to %s: TLS handshake timed out (connect timeout of %d ms)",
                          tether__conn_url(c), c->cfg->o.connect_timeout_ms);
        return;
    }
    char peer[80];
    if (tether_conn_peer(c, peer, sizeof peer) != TETHER_OK) {
        snprintf(peer, sizeof peer, "an unknown peer");
    }
    c->flags |= TETHER__CF_REPORT_LISTENER;
    tether__conn_fail(c, TETHER_ETIMEDOUT, "TLS handshake with %s timed out after %d ms", peer,
                      tether__tls_handshake_timeout_ms(c->cfg->tls));
}

void tether__conn_timer_cb(struct tether__tnode *n)
{
    tether_conn *c = tether__container_of(n, struct tether__conn_extra, timer)->c;
    unsigned pp_ev;
    switch (c->state) {
    case TETHER__CS_CONNECTING:
    case TETHER__CS_HANDSHAKING:
        if (c->state == TETHER__CS_CONNECTING && c->ex != NULL && c->ex->dialer != NULL) {
            tether__dial_timeout(c); /* names the addresses it tried */
            break;
        }
        if (c->state == TETHER__CS_HANDSHAKING && tether__pp_conn_pending(c, &pp_ev) &&
            tether__conn_url(c) == NULL) {
            tether__pp_conn_timeout(c);
            break;
        }
        if (c->state == TETHER__CS_HANDSHAKING && tether__conn_ws(c) != NULL &&
            tether__ws_handshake_timeout(c)) {
            break;
        }
        if (c->state == TETHER__CS_HANDSHAKING && c->cfg->tls != NULL) {
            conn_handshake_timeout(c);
            break;
        }
        tether__conn_fail(c, TETHER_ETIMEDOUT, "connect to %s timed out after %d ms",
                          tether__conn_url(c) != NULL ? tether__conn_url(c) : "peer",
                          c->cfg->o.connect_timeout_ms);
        break;
    case TETHER__CS_CLOSING:
        if ((c->flags & TETHER__CF_KEEP_REASON) && c->reason != TETHER_OK) {
            /* A liveness close the peer did not take (it stopped reading):
             * the reason stays the timeout that started it. */
            tether__conn_end(c, c->reason);
            break;
        }
        tether__conn_fail(c, TETHER_ETIMEDOUT,
                          "close timed out after %d ms with %zu bytes still queued",
                          c->cfg->o.close_timeout_ms, c->queued);
        break;
    default:
        break;
    }
}
