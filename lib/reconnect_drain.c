/* SPDX-License-Identifier: MIT */
/* A reconnecting client whose connection is drained (a GOAWAY with the
 * drain flag from the server, or its own max_age_ms): it dials a new
 * connection at once, with a fresh name or SRV lookup, so that the
 * balancer or DNS can give it another server, while the old connection
 * finishes: it writes the records it was handed, delivers what the server
 * still sends, and closes once the drain is complete (drain.c).
 *
 * The records handed to the old connection move to a list of their own
 * (old_head); the new connection is fed the waiting records only once the
 * old one has written all of its own, so that the stream keeps its order
 * across the two. Hence at most one draining connection holds records
 * (old_owner), however many are still finishing. If it ends before
 * writing them (its deadline, a reset), they go back in front of the
 * waiting records and the current connection sends them first: nothing
 * queued is lost. */
#include "conn.h"
#include "reconnect.h"

#include <stdio.h>
#include <stdlib.h>

/* One connection still finishing its drain. */
struct tether__cdrain {
    struct tether__cdrain *next;
    tether_conn *c;
};

static void drain_feed_later(tether_client *cl)
{
    cl->todo |= T_FEED;
    tether__pending_queue(cl->loop, &cl->pend);
}

bool tether__client_is_old(const tether_client *cl, const tether_conn *c)
{
    for (const struct tether__cdrain *d = cl->olds; d != NULL; d = d->next) {
        if (d->c == c) {
            return true;
        }
    }
    return false;
}

void tether__client_gnotify(tether_conn *c)
{
    tether_client *cl = tether_conn_userdata(c);
    if (cl == NULL || c != cl->conn || !cl->connected || cl->closing) {
        return; /* (it then ends as any other connection) */
    }
    struct tether__cdrain *d = malloc(sizeof *d);
    if (d == NULL) {
        return; /* the same, without the early reconnect */
    }
    d->c = c;
    d->next = cl->olds;
    cl->olds = d;
    /* [head, waiting) were handed to c: they become its list. (While an
     * older draining connection holds records, c was handed none.) */
    struct cmsg *last = NULL;
    for (struct cmsg *m = cl->head; m != cl->waiting; m = m->next) {
        last = m;
    }
    if (last != NULL) {
        cl->old_owner = c;
        cl->old_head = cl->head;
        cl->old_tail = last;
        last->next = NULL;
        cl->head = cl->waiting;
        if (cl->head == NULL) {
            cl->tail = NULL;
        }
    }
    cl->conn = NULL;
    cl->connected = false;
    cl->stable = false;
    if (cl->tmode == TM_STABLE) {
        cl->tmode = TM_NONE;
        tether__tnode_stop(cl->loop, &cl->timer);
    }
    snprintf(cl->err, sizeof cl->err,
             "the connection is draining (GOAWAY): moving to a new connection");
    tether__client_report(cl, TETHER_CLIENT_DISCONNECTED, TETHER_OK, cl->err);
    if (cl->closing || cl->conn != NULL || cl->gave_up || (cl->todo & T_START)) {
        return; /* closed or restarted from inside on_state */
    }
    /* A planned move, not a failure: at once, with a fresh schedule. */
    tether__client_restart(cl);
}

void tether__client_old_done(tether_client *cl)
{
    struct cmsg *m = cl->old_head;
    cl->old_head = m->next;
    if (cl->old_head == NULL) {
        cl->old_tail = NULL;
    }
    cl->held_bytes -= m->len;
    cl->held_msgs--;
    cl->msgs_out++;
    if (m->done != NULL) {
        tether__cdone_written(cl->dq, m->done); /* (reported from the loop) */
    }
    tether__cmsg_free(cl, m);
}

void tether__client_drain_prune(tether_client *cl, tether_conn *c)
{
    if (c != cl->old_owner) {
        return;
    }
    uint64_t written = c->bytes_out;
    bool had = cl->old_head != NULL;
    while (cl->old_head != NULL && cl->old_head->end <= written) {
        tether__client_old_done(cl);
    }
    if (had && cl->old_head == NULL) {
        cl->old_owner = NULL;
        drain_feed_later(cl); /* the current connection may go on */
    }
}

void tether__client_drain_closed(tether_client *cl, tether_conn *c, int reason)
{
    tether__conn_set_wnotify(c, NULL);
    if (c->ex != NULL) {
        c->ex->gnotify = NULL;
    }
    tether__client_drain_prune(cl, c);
    tether__client_account(cl, c);
    for (struct tether__cdrain **p = &cl->olds; *p != NULL; p = &(*p)->next) {
        if ((*p)->c == c) {
            struct tether__cdrain *d = *p;
            *p = d->next;
            free(d);
            break;
        }
    }
    struct cmsg *rest = NULL;
    struct cmsg *rest_tail = NULL;
    if (c == cl->old_owner) {
        rest = cl->old_head;
        rest_tail = cl->old_tail;
        cl->old_head = cl->old_tail = NULL;
        cl->old_owner = NULL;
    }
    if (cl->finished) {
        /* The client was closed meanwhile: hand back what the connection
         * did not write, then free the client after the last one. */
        while (rest != NULL) {
            struct cmsg *next = rest->next;
            cl->held_bytes -= rest->len;
            cl->held_msgs--;
            tether__client_undeliver(cl, rest, reason != TETHER_OK ? reason : TETHER_ECANCELED);
            rest = next;
        }
        if (cl->olds == NULL) {
            cl->todo |= T_FREE;
            tether__pending_queue(cl->loop, &cl->pend);
        }
        return;
    }
    if (rest != NULL) {
        /* Never handed to a later connection (feeding waited for them): in
         * front of the waiting records, sent again from their first byte. */
        rest_tail->next = cl->head;
        cl->head = rest;
        if (cl->tail == NULL) {
            cl->tail = rest_tail;
        }
        cl->waiting = cl->head;
    }
    drain_feed_later(cl);
}

void tether__client_drain_close_all(tether_client *cl)
{
    for (struct tether__cdrain *d = cl->olds; d != NULL; d = d->next) {
        tether_conn_close(d->c); /* (its on_close comes later, from the loop) */
    }
}

void tether__client_drain_pause(tether_client *cl, bool pause)
{
    for (struct tether__cdrain *d = cl->olds; d != NULL; d = d->next) {
        if (pause) {
            tether_conn_pause(d->c);
        } else {
            tether_conn_resume(d->c);
        }
    }
}
