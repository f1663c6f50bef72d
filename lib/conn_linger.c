/* SPDX-License-Identifier: MIT */
/* The deadline of lingering connections: the loop's list of those reported
 * closed, and the one timer that ends them.
 *
 * After our FIN a connection reads (and drops) what the peer still sends,
 * until the peer's FIN or for at most TETHER__LINGER_MS (conn.c). Every
 * connection lingers for the same time, so in the order they start they
 * are also in the order of their deadlines: a FIFO list, and one timer for
 * the oldest, stand for a timer each. Joining and leaving the list is a
 * few stores (inline in conn_core.h: tether__linger_add(),
 * tether__linger_remove()), where a timer of the connection's own took
 * its cold block (c->ex) and a heap insert and removal per close. The
 * list runs through the connection's output queue pointers (empty once
 * lingering) and its deadline sits in place of ready_at (see struct
 * tether_conn): a connection joins once on_close has run, when nothing
 * reads either any more: from the deferred work of the iteration it
 * started to linger in (or, closed from deferred work itself, of the next
 * one, which does not block), and its deadline counts from then. It
 * leaves before it is freed (conn_finish(), or conn_on_io() at the peer's
 * FIN).
 *
 * The timer stays armed when the list empties before it fires (the usual
 * end: the peer's FIN comes first): it then finds the next connection not
 * yet due and re-arms for its deadline, or finds none and stops. So every
 * connection ends at its own deadline, and a busy loop re-arms the timer
 * about once per linger time instead of twice per connection. (Until it
 * fires, the loop has a deadline to wait for: an embedding loop sees
 * tether_loop_backend_timeout() at most 2 s, not -1, for that while.) */
#include "conn_core.h"

static void linger_timer_cb(struct tether__tnode *n)
{
    struct tether__mem *m = tether__container_of(n, struct tether__mem, linger_timer);
    tether_loop *loop = m->loop;
    while (!tether__queue_empty(&m->linger_q)) {
        tether_conn *c = tether__container_of(m->linger_q.next, tether_conn, linger_node);
        if (c->linger_until > loop->now) {
            tether__tnode_start(loop, n, c->linger_until - loop->now);
            return;
        }
        /* (Takes it off the list: conn_finish() calls tether__linger_remove().) */
        tether__conn_end(c, TETHER_OK);
    }
}

void tether__linger_init(struct tether__mem *m)
{
    tether__queue_init(&m->linger_q);
    tether__tnode_init(&m->linger_timer, linger_timer_cb);
}

void tether__linger_fini(struct tether__mem *m)
{
    tether__tnode_stop(m->loop, &m->linger_timer);
}
