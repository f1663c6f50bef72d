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
 * written), after a log line.
 *
 * Plain servers. A plain length-prefixed server (no control frames at
 * all) reads our HELLO as an oversized length: it closes, or waits for
 * four gigabytes. A connection that ends, or stays silent for the HELLO
 * deadline (calo_hello_ms()), after our HELLO and before any HELLO came
 * back has carried no data (none is sent before the answer). A fault of
 * the network looks the same once, so it takes CALO_PROBES such
 * connections in a row (dialled on the usual schedule); then the client
 * logs a warning and dials the next connection at once in plain mode: no
 * HELLO (so no acknowledgements, heartbeats or calls on it), messages done
 * once written. The fallback lasts for that one established connection:
 * when it ends, the next one asks for acknowledgements again, so that a
 * tether server that was only slow to answer (or a plain server replaced
 * by a tether one) gets them back, at the price of CALO_PROBES failed
 * probes per reconnect against a server that stays plain. */
#include "client_alo.h"

#include <stdio.h>
#include <stdlib.h>

/* The HELLO deadline when heartbeats are off. */
#define CALO_HELLO_MS 3000u
/* Probes in a row that must show a plain server before the fallback. */
#define CALO_PROBES 3u

static void calo_hello_timeout(struct tether__tnode *n);

int tether__calo_new(tether_client *cl)
{
    cl->alo = calloc(1, sizeof *cl->alo);
    if (cl->alo == NULL) {
        return TETHER_ENOMEM;
    }
    do {
        cl->alo->token = tether__random_u64();
    } while (cl->alo->token == 0);
    cl->alo->cl = cl;
    tether__tnode_init(&cl->alo->hello_timer, calo_hello_timeout);
    return TETHER_OK;
}

void tether__calo_free(tether_client *cl)
{
    if (cl->alo != NULL) {
        tether__tnode_stop(cl->loop, &cl->alo->hello_timer);
    }
    free(cl->alo);
    cl->alo = NULL;
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
        cl->alo->acked += tether__client_pop_acked(cl, seq);
        tether__client_feed(cl); /* room for more; or the close that waited for this */
        return;
    }
    if (c != cl->old_owner) {
        return;
    }
    while (cl->old_head != NULL && cl->old_head->seq <= seq) {
        cl->alo->acked++;
        tether__client_old_done(cl);
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
        cl->alo->probe_fails = 0;
        tether__tnode_stop(cl->loop, &cl->alo->hello_timer);
        tether__client_feed(cl);
    }
}

/* How long a connection waits for the server's HELLO before it counts as
 * a plain server's: the heartbeat detection time when heartbeats are on
 * (rule 5 of the control frames, include/tether/conn.h), else
 * CALO_HELLO_MS. */
static uint64_t calo_hello_ms(const tether_client *cl)
{
    if (cl->co.heartbeat_ms > 0) {
        return (uint64_t)cl->co.heartbeat_ms * (uint64_t)(cl->co.heartbeat_misses + 1);
    }
    return CALO_HELLO_MS;
}

static void calo_hello_timeout(struct tether__tnode *n)
{
    struct tether__calo *k = tether__container_of(n, struct tether__calo, hello_timer);
    tether_conn *c = k->cl->conn;
    if (c == NULL || tether__conn_ack(c) == NULL ||
        tether__conn_ack(c)->st != TETHER__ACK_UNKNOWN) {
        return;
    }
    if (k->cl->paused) {
        /* Not reading: the answer may be waiting in the kernel. */
        tether__tnode_start(k->cl->loop, &k->hello_timer, calo_hello_ms(k->cl));
        return;
    }
    k->timed_out = true;
    tether_conn_abort(c); /* its on_close decides the fallback */
}

void tether__calo_dial(tether_client *cl, bool begin)
{
    struct tether__calo *k = cl->alo;
    if (k == NULL) {
        return;
    }
    if (begin) {
        k->plain_conn = k->plain;
        if (k->plain) {
            k->saved_hb = cl->co.heartbeat_ms;
            k->saved_calls = cl->co.calls;
            cl->co.heartbeat_ms = 0;
            cl->co.calls = false;
        }
        tether__ack_dial_want(!k->plain); /* HELLO bit 1 (ack.c) */
        return;
    }
    tether__ack_dial_want(false);
    if (k->plain) {
        cl->co.heartbeat_ms = k->saved_hb;
        cl->co.calls = k->saved_calls;
    }
}

void tether__calo_connected(tether_client *cl, tether_conn *c)
{
    if (cl->alo != NULL && tether__conn_ack(c) != NULL &&
        tether__conn_ack(c)->st == TETHER__ACK_UNKNOWN) {
        tether__tnode_start(cl->loop, &cl->alo->hello_timer, calo_hello_ms(cl));
    }
}

bool tether__calo_closed(tether_client *cl, tether_conn *c, bool was_connected, int reason)
{
    struct tether__calo *k = cl->alo;
    if (k == NULL) {
        return false;
    }
    tether__tnode_stop(cl->loop, &k->hello_timer);
    bool timed_out = k->timed_out;
    k->timed_out = false;
    if (k->plain_conn) {
        if (was_connected) {
            k->plain = false; /* the next connection asks again */
        }
        return false;
    }
    if (!was_connected || tether__conn_ack(c) == NULL || !tether__conn_ack(c)->want ||
        tether__conn_ack(c)->st != TETHER__ACK_UNKNOWN) {
        return false;
    }
    if (++k->probe_fails < CALO_PROBES) {
        return false; /* (could be a fault of the network: the schedule goes on) */
    }
    k->probe_fails = 0;
    k->plain = true;
    char why[96];
    if (timed_out) {
        snprintf(why, sizeof why, "no answer within %llu ms",
                 (unsigned long long)calo_hello_ms(cl));
        snprintf(cl->err, sizeof cl->err, "the server did not answer our HELLO within %llu ms",
                 (unsigned long long)calo_hello_ms(cl));
    } else {
        snprintf(why, sizeof why, "closed: %s", tether_strerror(reason));
    }
    tether__log(TETHER_LOG_WARN,
                "%s: the server does not speak tether's control frames (%s, after our HELLO "
                "and before its answer); falling back to plain len32 without acknowledgements "
                "for the next connection (nothing had been sent)",
                cl->url, why);
    return true;
}

void tether__calo_conn(tether_client *cl, tether_conn *c)
{
    if (cl->alo != NULL && tether__conn_ack(c) != NULL) {
        tether__conn_ack(c)->on_ack = calo_on_ack;
        tether__conn_ack(c)->on_nego = calo_on_nego;
    }
}

bool tether__calo_before_send_slow(tether_client *cl, tether_conn *c, struct cmsg *m)
{
    struct tether__ack *a = tether__conn_ack(c);
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

bool tether__calo_may_close(const tether_client *cl)
{
    const tether_conn *c = cl->conn;
    if (cl->alo == NULL || c == NULL || tether__conn_ack(c) == NULL) {
        return true;
    }
    return cl->head == NULL || tether__conn_ack(c)->st == TETHER__ACK_OFF;
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
