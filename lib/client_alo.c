/* SPDX-License-Identifier: MIT */
/* At-least-once streams on a reconnecting client (issue #14,
 * tether_client_opts::at_least_once): numbers the client's messages,
 * keeps each one until the server acknowledges it (not merely until it is
 * written), and resends the unacknowledged ones, announced by a RESUME
 * frame, on the next connection. The wire side (HELLO bit 1, ACK, RESUME,
 * the server's duplicate filter) is ack.c.
 *
 * A connection with acks asked for carries no data until the server's
 * HELLO has said whether it takes them: the numbering must start with a
 * RESUME, which only a peer that announced acks may receive. A server
 * that does not announce them gets the messages as before (done once
 * written), after a log line. */
#include "ack.h"
#include "reconnect.h"

#include <stdlib.h>

struct tether__calo {
    uint64_t token;    /* resume token: random, the same on every connection */
    uint64_t next_seq; /* the last number given to a message */
    uint64_t acked;    /* messages acknowledged */
    uint64_t resent;   /* messages sent again */
};

int tether__calo_new(tether_client *cl)
{
    cl->alo = calloc(1, sizeof *cl->alo);
    if (cl->alo == NULL) {
        return TETHER_ENOMEM;
    }
    do {
        cl->alo->token = tether__random_u64();
    } while (cl->alo->token == 0);
    return TETHER_OK;
}

void tether__calo_free(tether_client *cl)
{
    free(cl->alo);
    cl->alo = NULL;
}

uint64_t tether__calo_number(tether_client *cl)
{
    return cl->alo != NULL ? ++cl->alo->next_seq : 0;
}

/* A connection's acknowledgement covers every record numbered up to seq:
 * they are done (completion TETHER_OK). */
static void calo_on_ack(tether_conn *c, uint64_t seq)
{
    tether_client *cl = tether_conn_userdata(c);
    if (cl == NULL || cl->alo == NULL) {
        return;
    }
    if (c == cl->conn) {
        while (cl->head != NULL && cl->head != cl->waiting && cl->head->seq <= seq) {
            tether__client_pop_head(cl);
            cl->alo->acked++;
        }
        tether__client_feed(cl); /* room for more; or the close that waited for this */
        return;
    }
    if (c != cl->old_owner) {
        return;
    }
    while (cl->old_head != NULL && cl->old_head->seq <= seq) {
        struct cmsg *m = cl->old_head;
        cl->old_head = m->next;
        if (cl->old_head == NULL) {
            cl->old_tail = NULL;
        }
        cl->held_bytes -= m->len;
        cl->held_msgs--;
        cl->msgs_out++;
        cl->alo->acked++;
        if (m->done != NULL) {
            tether__cdone_written(cl->dq, m->done);
        }
        tether__cmsg_free(cl, m);
    }
    if (cl->old_head == NULL) {
        /* The drained connection's records are all acknowledged: the
         * current connection may go on. */
        cl->old_owner = NULL;
        cl->todo |= T_FEED;
        tether__pending_queue(cl->loop, &cl->pend);
    }
}

static void calo_on_nego(tether_conn *c, bool on)
{
    (void)on;
    tether_client *cl = tether_conn_userdata(c);
    if (cl != NULL && c == cl->conn) {
        tether__client_feed(cl);
    }
}

void tether__calo_conn(tether_client *cl, tether_conn *c)
{
    if (cl->alo != NULL && c->ack != NULL) {
        c->ack->on_ack = calo_on_ack;
        c->ack->on_nego = calo_on_nego;
    }
}

bool tether__calo_before_send(tether_client *cl, tether_conn *c, struct cmsg *m)
{
    struct tether__ack *a = c->ack;
    if (a == NULL) {
        return true; /* (could not be allocated: the dial failed) */
    }
    if (a->st == TETHER__ACK_UNKNOWN) {
        return false; /* until the server's HELLO */
    }
    if (a->st == TETHER__ACK_ON && m->seq != a->tx_next) {
        /* The first message on this connection, or the numbering jumps
         * (records of a drained connection came back). */
        return tether__ack_queue_resume(c, cl->alo->token, m->seq) == TETHER_OK;
    }
    return true;
}

void tether__calo_sent(tether_client *cl, tether_conn *c, struct cmsg *m)
{
    if (m->sent) {
        cl->alo->resent++;
    }
    m->sent = true;
    struct tether__ack *a = c->ack;
    if (a != NULL && a->st == TETHER__ACK_ON) {
        a->tx_next = m->seq + 1;
        m->end = UINT64_MAX; /* done when acknowledged, not when written */
    }
}

bool tether__calo_may_close(const tether_client *cl)
{
    const tether_conn *c = cl->conn;
    if (cl->alo == NULL || c == NULL || c->ack == NULL) {
        return true;
    }
    return cl->head == NULL || c->ack->st == TETHER__ACK_OFF;
}

void tether__calo_stats(const tether_client *cl, tether_stats *s)
{
    const struct tether__calo *k = cl->alo;
    if (k == NULL) {
        return;
    }
    s->acked = k->acked;
    s->resent = k->resent;
    uint64_t in_flight = 0;
    for (const struct cmsg *m = cl->old_head; m != NULL; m = m->next) {
        in_flight++;
    }
    for (const struct cmsg *m = cl->head; m != NULL && m != cl->waiting; m = m->next) {
        in_flight++;
    }
    s->acks_in_flight = in_flight;
}
