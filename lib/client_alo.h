/* SPDX-License-Identifier: MIT */
/* The per-message steps of at-least-once streams on a reconnecting client
 * (client_alo.c), inline: numbering a message, the check before it is
 * handed to a connection, and the note that it was. They run for every
 * message, so reconnect.c takes the common case here (acknowledgements on,
 * the numbering continuous) and calls client_alo.c only for the rest. */
#ifndef TETHER_CLIENT_ALO_INT_H
#define TETHER_CLIENT_ALO_INT_H

#include "ack.h"
#include "reconnect.h"

struct tether__calo {
    uint64_t token;    /* resume token: random, the same on every connection */
    uint64_t next_seq; /* the last number given to a message */
    uint64_t acked;    /* messages acknowledged */
    uint64_t resent;   /* messages sent again */
    tether_client *cl;
    struct tether__tnode hello_timer; /* the HELLO deadline of cl->conn */
    bool plain;                       /* the next connection is dialled without HELLO */
    bool plain_conn;                  /* cl->conn was dialled so */
    int saved_hb;                     /* conn options zeroed around a plain dial */
    bool saved_calls;
    bool timed_out;      /* the HELLO deadline closed cl->conn */
    uint8_t probe_fails; /* connections in a row that showed a plain server */
};

/* The number of a new message (0 without at-least-once). */
static inline uint64_t tether__calo_number(tether_client *cl)
{
    return cl->alo != NULL ? ++cl->alo->next_seq : 0;
}

/* The connection acknowledges what it carries: its records are done when
 * acknowledged, never when written. */
static inline bool tether__calo_acks_on(const tether_conn *c)
{
    return (c->hooks & TETHER__CH_ACK) && c->ex->ack->st == TETHER__ACK_ON;
}

/* Before m is handed to c: false to wait (acks not negotiated yet, or no
 * memory for the RESUME frame). The rest of tether__calo_before_send(). */
bool tether__calo_before_send_slow(tether_client *cl, tether_conn *c, struct cmsg *m);

static inline bool tether__calo_before_send(tether_client *cl, tether_conn *c, struct cmsg *m)
{
    if (TETHER__LIKELY(tether__calo_acks_on(c) && m->seq == c->ex->ack->tx_next)) {
        return true; /* the numbering continues */
    }
    return tether__calo_before_send_slow(cl, c, m);
}

/* m was handed to c (m->end set): with acks on it is done once
 * acknowledged. */
static inline void tether__calo_sent(tether_client *cl, tether_conn *c, struct cmsg *m)
{
    if (TETHER__UNLIKELY(m->sent)) {
        cl->alo->resent++;
    }
    m->sent = true;
    if (tether__calo_acks_on(c)) {
        c->ex->ack->tx_next = m->seq + 1;
        m->end = UINT64_MAX; /* done when acknowledged, not when written */
    }
}

#endif /* TETHER_CLIENT_ALO_INT_H */
