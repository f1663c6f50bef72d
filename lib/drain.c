/* SPDX-License-Identifier: MIT */
/* Draining one connection: the GOAWAY control frame with the drain flag
 * (tether_conn_goaway(), max_age_ms), the answer a connection gives when
 * its peer asks, the drain deadline, and the clean close once both sides
 * have said they send nothing more.
 *
 * The exchange (documented in tether/conn.h, "Heartbeat wire format"):
 * the side that wants to stop sends GOAWAY(drain) and keeps reading and
 * writing; the other side queues GOAWAY(drain|done) behind what it has
 * queued and refuses new sends from then on, but keeps reading; the asker
 * answers the "done" with its own "done", behind its last replies. A side
 * that has both sent and received "done" has read everything the peer
 * will ever send and has queued everything it will send itself: it closes
 * as tether_conn_close() does (flush, TLS close_notify, FIN). Nothing is
 * lost in either direction, and crossing requests (both sides ask at
 * once) end the same way. */
#include "conn_core.h"
#include "ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tether__drain {
    struct tether__tnode timer; /* the deadline of a drain we asked for */
    tether_conn *c;
    int deadline_ms;
    uint16_t code;
    bool peer_asked;                             /* the peer asked first, rather than answered us */
    bool notified;                               /* on_goaway has run */
    char text[TETHER__CTRL_GOAWAY_TEXT_MAX + 1]; /* ours when we asked, else the peer's */
};

static void drain_timer_cb(struct tether__tnode *n);

static struct tether__drain *drain_get(tether_conn *c)
{
    if (tether__conn_drain(c) == NULL) {
        struct tether__conn_extra *ex = tether__conn_extra(c);
        struct tether__drain *d = ex != NULL ? calloc(1, sizeof *d) : NULL;
        if (d == NULL) {
            return NULL;
        }
        tether__tnode_init(&d->timer, drain_timer_cb);
        d->c = c;
        d->deadline_ms = -1;
        ex->drain = d;
    }
    return c->ex->drain;
}

void tether__drain_free(tether_conn *c)
{
    struct tether__drain *d = tether__conn_drain(c);
    if (d != NULL) {
        tether__tnode_stop(c->h.loop, &d->timer);
        free(d);
        c->ex->drain = NULL;
    }
}

/* Our last data message is queued: say so behind it. Sends are refused
 * from here on. */
static int drain_send_done(tether_conn *c)
{
    int rv = tether__ctrl_queue_goaway(c, TETHER__GOAWAY_F_DRAIN | TETHER__GOAWAY_F_DONE,
                                       TETHER__GOAWAY_NONE, NULL);
    if (rv == TETHER_OK) {
        c->drain_st |= TETHER__DR_SENT_DONE;
        tether__conn_after_queue(c);
    }
    return rv;
}

/* Both sides said "done": nothing more will arrive and everything we send
 * is queued. Close as tether_conn_close() does. The side that asked
 * reports TETHER_OK, the side that was asked TETHER_EOF (its peer closed
 * it, cleanly). */
static void drain_finish(tether_conn *c)
{
    struct tether__drain *d = tether__conn_drain(c);
    tether__tnode_stop(c->h.loop, &d->timer);
    if (d->peer_asked) {
        c->reason = TETHER_EOF;
        if (d->text[0] != '\0') {
            tether__conn_set_err(c, "closed by peer after a drain (GOAWAY): %s", d->text);
        } else {
            tether__conn_set_err(c, "closed by peer after a drain (GOAWAY reason %u)",
                                 (unsigned)d->code);
        }
    } else {
        c->reason = TETHER_OK;
        tether__conn_set_err(c, "drained (GOAWAY): %s", d->text[0] != '\0' ? d->text : "done");
    }
    c->flags |= TETHER__CF_CLOSE_REQ | TETHER__CF_KEEP_REASON;
    tether__conn_begin_close(c);
}

int tether__drain_start(tether_conn *c, uint16_t code, const char *text, int deadline_ms)
{
    struct tether__drain *d = drain_get(c);
    if (d == NULL) {
        return TETHER_ENOMEM;
    }
    d->deadline_ms = deadline_ms;
    if (deadline_ms >= 0) {
        tether__tnode_start(c->h.loop, &d->timer, (uint64_t)deadline_ms);
    }
    if (c->drain_st & (TETHER__DR_SENT_REQ | TETHER__DR_GOT_REQ)) {
        return TETHER_OK; /* draining already: only the deadline is new */
    }
    int rv = tether__ctrl_queue_goaway(c, TETHER__GOAWAY_F_DRAIN, code, text);
    if (rv != TETHER_OK) {
        tether__tnode_stop(c->h.loop, &d->timer);
        return rv;
    }
    d->code = code;
    snprintf(d->text, sizeof d->text, "%s", text != NULL ? text : "");
    c->drain_st |= TETHER__DR_SENT_REQ;
    tether__conn_after_queue(c);
    if (c->ex != NULL && c->ex->gnotify != NULL) {
        c->ex->gnotify(c);
    }
    return TETHER_OK;
}

bool tether__drain_on_goaway(tether_conn *c, uint8_t flags, uint16_t code, const char *text)
{
    struct tether__drain *d = drain_get(c);
    if (d == NULL) {
        tether__conn_fail(c, TETHER_ENOMEM, "out of memory answering a GOAWAY");
        return false;
    }
    /* A request (no "done"), or a "done" we never asked for: the peer
     * wants to go away. A "done" after our own request is its answer. */
    bool asks = !(flags & TETHER__GOAWAY_F_DONE) || !(c->drain_st & TETHER__DR_SENT_REQ);
    bool first = asks && !d->notified;
    c->drain_st |= TETHER__DR_GOT_REQ;
    if (flags & TETHER__GOAWAY_F_DONE) {
        c->drain_st |= TETHER__DR_GOT_DONE;
    }
    if (first) {
        d->notified = true;
        d->peer_asked = !(c->drain_st & TETHER__DR_SENT_REQ);
        if (d->peer_asked) {
            d->code = code;
            snprintf(d->text, sizeof d->text, "%s", text);
        }
    }
    if (!(c->drain_st & TETHER__DR_SENT_DONE) && drain_send_done(c) != TETHER_OK) {
        tether__conn_fail(c, TETHER_ENOMEM, "out of memory answering a GOAWAY");
        return false;
    }
    if (first) {
        if (c->ex != NULL && c->ex->gnotify != NULL && !(c->drain_st & TETHER__DR_SENT_REQ)) {
            c->ex->gnotify(c);
        }
        if (c->cfg->o.on_goaway != NULL) {
            c->cfg->o.on_goaway(c, code, text, c->userdata);
        }
        if (c->state != TETHER__CS_READY) {
            return false; /* closed from inside the callback */
        }
    }
    if ((c->drain_st & TETHER__DR_SENT_DONE) && (c->drain_st & TETHER__DR_GOT_DONE)) {
        drain_finish(c);
        return false;
    }
    return c->state == TETHER__CS_READY;
}

/* The deadline of a drain we asked for passed: the drain becomes a close,
 * announced with GOAWAY "closing now". What the peer still sends is lost;
 * on_close reports TETHER_ETIMEDOUT so that the application knows. */
static void drain_timer_cb(struct tether__tnode *n)
{
    tether__drain_expire(tether__container_of(n, struct tether__drain, timer)->c);
}

void tether__drain_expire(tether_conn *c)
{
    struct tether__drain *d = tether__conn_drain(c);
    if (c->state != TETHER__CS_READY || d == NULL) {
        return;
    }
    tether__tnode_stop(c->h.loop, &d->timer);
    c->dispatching++;
    tether__conn_set_err(c, "drain deadline of %d ms passed before the peer finished (%s)",
                         d->deadline_ms, d->text[0] != '\0' ? d->text : "GOAWAY");
    if (tether__ctrl_negotiated(c)) {
        (void)tether__ctrl_queue_goaway(c, 0, d->code, "drain deadline passed");
    }
    c->flags |= TETHER__CF_CLOSE_REQ | TETHER__CF_KEEP_REASON;
    c->reason = TETHER_ETIMEDOUT;
    tether__conn_begin_close(c);
    c->dispatching--;
    if (c->state == TETHER__CS_CLOSING) {
        tether__conn_dispatch_end(c);
    }
}

/* ---- public API -------------------------------------------------------- */

int tether_conn_goaway(tether_conn *c, unsigned reason, const char *text, int deadline_ms)
{
    if (c == NULL || reason > 0xFFFFu) {
        return TETHER_EINVAL;
    }
    if (text != NULL) {
        size_t n = strlen(text);
        if (n > TETHER__CTRL_GOAWAY_TEXT_MAX) {
            return TETHER_EINVAL;
        }
        for (size_t i = 0; i < n; i++) {
            if ((unsigned char)text[i] < 0x20 || (unsigned char)text[i] >= 0x7F) {
                return TETHER_EINVAL;
            }
        }
    }
    if (deadline_ms == 0) {
        deadline_ms = TETHER_DRAIN_DEADLINE_DEFAULT;
    }
    if (c->state == TETHER__CS_CONNECTING || c->state == TETHER__CS_HANDSHAKING) {
        return TETHER_ENOTCONN;
    }
    if (c->state != TETHER__CS_READY || (c->flags & TETHER__CF_CLOSE_REQ)) {
        return TETHER_ECLOSED;
    }
    if (tether__conn_ws(c) != NULL && tether__ws_goaway(c, text)) {
        return TETHER_OK; /* a WebSocket close frame 1001 instead (ws.h) */
    }
    if (!tether__ctrl_negotiated(c)) {
        /* The peer cannot be asked (it never sent HELLO): the best we can
         * do is what HTTP/1.1's "Connection: close" does, a graceful close
         * after our queue. What the peer sends meanwhile may be lost. */
        tether__conn_set_err(c,
                             "drain: the peer does not speak control frames, closed after "
                             "flushing instead (%s)",
                             text != NULL && text[0] != '\0' ? text : "GOAWAY");
        tether_conn_close(c);
        return TETHER_OK;
    }
    return tether__drain_start(c, (uint16_t)reason, text, deadline_ms);
}

unsigned tether_conn_drain_state(const tether_conn *c)
{
    if (c == NULL || tether__conn_drain(c) == NULL) {
        return 0;
    }
    unsigned st = 0;
    if (c->drain_st & TETHER__DR_SENT_REQ) {
        st |= TETHER_DRAIN_ASKED;
    }
    if (tether__conn_drain(c)->notified) {
        st |= TETHER_DRAIN_ASKED_BY_PEER;
    }
    return st;
}
