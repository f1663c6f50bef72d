/* SPDX-License-Identifier: MIT */
/* Graceful server shutdown (tether_listener_shutdown()): the listener
 * stops accepting, every connection it accepted is asked to drain
 * (drain.c), and the application hears once the last of them is gone.
 *
 * The connections of a listener share its configuration; cfg->accepted
 * counts those still allocated. The shutdown holds a reference on the
 * configuration and hangs off it (cfg->shutdown), so that freeing a
 * connection (conn.c) can tell it when the count reaches zero. */
#include "conn_core.h"

#include <stdlib.h>

struct tether__shutdown {
    tether_loop *loop;
    struct tether__conn_cfg *cfg; /* a reference */
    tether_shutdown_cb on_done;
    void *ud;
    int deadline_ms;
    int status; /* TETHER_ETIMEDOUT once the deadline cut a drain short */
    struct tether__pending done;
    struct tether__tnode timer; /* the deadline */
};

struct shutdown_walk {
    struct tether__shutdown *s;
    bool at_deadline;
};

static void shutdown_one(struct tether__handle *h, void *arg)
{
    struct shutdown_walk *w = arg;
    if (h->type != TETHER_HANDLE_CONN) {
        return;
    }
    tether_conn *c = (tether_conn *)h; /* the handle is the first member */
    if (c->cfg != w->s->cfg || !(c->flags & TETHER__CF_ACCEPTED)) {
        return;
    }
    if (!(c->flags & TETHER__CF_ACCEPT_DONE)) {
        /* Never seen by the application: nothing of it to finish. */
        tether_conn_abort(c);
        return;
    }
    if (w->at_deadline) {
        if (c->state == TETHER__CS_READY || c->state == TETHER__CS_CLOSING) {
            /* Still draining (or still flushing its close, which
             * close_timeout_ms bounds). */
            w->s->status = TETHER_ETIMEDOUT;
            if (tether__conn_drain(c) != NULL) {
                tether__drain_expire(c);
            } else {
                tether_conn_close(c);
            }
        }
        return;
    }
    if (c->state == TETHER__CS_READY && c->bytes_in == 0 && tether__conn_drain(c) == NULL &&
        !tether__ctrl_negotiated(c) && tether__conn_ws(c) == NULL) {
        /* Accepted a moment ago, nothing received yet: its HELLO may be on
         * the way with its first messages, and a close now would lose
         * them. It is asked when the HELLO comes (tether__shutdown_conn_
         * hello()); a peer that never sends one is closed at the deadline. */
        return;
    }
    if (c->state == TETHER__CS_READY) {
        (void)tether_conn_goaway(c, TETHER_GOAWAY_SHUTDOWN, "server shutting down",
                                 w->s->deadline_ms);
    }
}

static void shutdown_done_cb(struct tether__pending *p)
{
    struct tether__shutdown *s = tether__container_of(p, struct tether__shutdown, done);
    tether__tnode_stop(s->loop, &s->timer);
    s->cfg->shutdown = NULL;
    tether__conn_cfg_unref(s->cfg);
    tether_shutdown_cb cb = s->on_done;
    void *ud = s->ud;
    tether_loop *loop = s->loop;
    int status = s->status;
    free(s);
    if (cb != NULL) {
        cb(loop, status, ud);
    }
}

static void shutdown_timer_cb(struct tether__tnode *n)
{
    struct tether__shutdown *s = tether__container_of(n, struct tether__shutdown, timer);
    struct shutdown_walk w = {s, true};
    tether__handle_each(s->loop, shutdown_one, &w);
}

void tether__shutdown_conn_hello(tether_conn *c)
{
    struct tether__shutdown *s = c->cfg->shutdown;
    if (c->state == TETHER__CS_READY && tether__conn_drain(c) == NULL &&
        !(c->flags & TETHER__CF_CLOSE_REQ)) {
        (void)tether_conn_goaway(c, TETHER_GOAWAY_SHUTDOWN, "server shutting down",
                                 s->deadline_ms);
    }
}

void tether__shutdown_conn_gone(struct tether__conn_cfg *cfg)
{
    if (cfg->shutdown != NULL && cfg->accepted == 0) {
        tether__pending_queue(cfg->shutdown->loop, &cfg->shutdown->done);
    }
}

int tether__shutdown_start(tether_loop *loop, struct tether__conn_cfg *cfg, int deadline_ms,
                           tether_shutdown_cb on_done, void *ud)
{
    if (cfg->shutdown != NULL) {
        return TETHER_EBUSY;
    }
    struct tether__shutdown *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return TETHER_ENOMEM;
    }
    s->loop = loop;
    s->cfg = cfg;
    cfg->refs++;
    cfg->shutdown = s;
    s->on_done = on_done;
    s->ud = ud;
    s->deadline_ms = deadline_ms == 0 ? TETHER_DRAIN_DEADLINE_DEFAULT : deadline_ms;
    tether__pending_init(&s->done, shutdown_done_cb);
    tether__tnode_init(&s->timer, shutdown_timer_cb);
    if (s->deadline_ms > 0) {
        tether__tnode_start(loop, &s->timer, (uint64_t)s->deadline_ms);
    }
    struct shutdown_walk w = {s, false};
    tether__handle_each(loop, shutdown_one, &w);
    tether__shutdown_conn_gone(cfg); /* none left: done on the next iteration */
    return TETHER_OK;
}
