/* SPDX-License-Identifier: MIT */
/* Internal side of acknowledgements (issue #14, at-least-once streams):
 * HELLO capability bit 1, the ACK and RESUME control frames, the
 * receiver's duplicate filter with its per-loop table of resume tokens
 * (ack.c), and the hooks a reconnecting client (client_alo.c) sets on its
 * connections. A connection that never negotiates acknowledgements
 * carries nothing (c->ex->ack is NULL). */
#ifndef TETHER_ACK_INT_H
#define TETHER_ACK_INT_H

#include "conn_core.h"

/* Control frame types (admitted only once both HELLOs carried bit 1).
 * ACK: the highest sequence number received (be64), cumulative; receiver
 * to sender. RESUME: the sender's resume token (be64), then the sequence
 * number of the next data frame (be64); sender to receiver, before the
 * first data frame and wherever the numbering jumps. */
#define TETHER__CTRL_ACK 7u
#define TETHER__CTRL_RESUME 8u
#define TETHER__CTRL_ACK_LEN 8u
#define TETHER__CTRL_RESUME_LEN 16u

/* c->rx_tag while data frames carry implicit sequence numbers. */
#define TETHER__RX_SEQ 4u

/* Resume tokens a loop remembers (the receiver's duplicate filter), and
 * how long an unused one lives. Past the bound the least recently used
 * token without a connection is forgotten. */
#define TETHER__ACK_TABLE_MAX 4096u
#define TETHER__ACK_EXPIRE_MS (10u * 60u * 1000u)

enum {
    TETHER__ACK_UNKNOWN,
    TETHER__ACK_ON,
    TETHER__ACK_OFF
};

struct tether__ack_entry; /* ack.c */

struct tether__ack {
    /* ---- sending side (a dialled connection that asked for acks) ---- */
    bool want;        /* our HELLO announces bit 1 */
    uint8_t st;       /* TETHER__ACK_*: what the peer's HELLO said */
    uint64_t tx_next; /* sequence number of the next data frame we queue; 0: RESUME due */
    uint64_t acked;   /* highest acknowledged */
    uint64_t acked_n; /* messages acknowledged on this connection */
    /* Owner's hooks (client_alo.c); run inside the connection's dispatch. */
    void (*on_nego)(tether_conn *c, bool on);
    void (*on_ack)(tether_conn *c, uint64_t seq);

    /* ---- receiving side (the peer's HELLO carried bit 1) ---- */
    bool rx_on;      /* the peer announced acks */
    bool rx_resumed; /* a RESUME arrived: data frames are numbered */
    uint64_t rx_token;
    uint64_t rx_next;  /* sequence number of the next data frame */
    uint64_t rx_acked; /* the last value we acknowledged */
    uint64_t rx_own;   /* delivered, when the table had no room */
    struct tether__ack_entry *e;
    uint64_t *rx_done; /* the highest delivered: in e, or rx_own */
    uint64_t dups;     /* duplicates dropped */
    uint64_t acks_out; /* ACK frames sent */
    /* Coalescing (tether__ack_after_read): at most one ACK per loop
     * millisecond unless TETHER__ACK_COALESCE_BYTES arrived since the last;
     * the rest waits for this timer (1 ms). */
    uint64_t ack_at;    /* loop ms of the last ACK */
    uint64_t ack_bytes; /* c->bytes_in at the last ACK */
    struct tether__tnode timer;
    tether_conn *c;
};

/* Bytes received that are acknowledged at once, even within the
 * millisecond of the last ACK. */
#define TETHER__ACK_COALESCE_BYTES (256u * 1024u)

/* Forgets every resume token of the loop (the fuzz_conn harness, whose
 * inputs share one loop, starts each input with an empty duplicate
 * filter, even before the last input's connection is freed). */
void tether__ack_forget(tether_loop *loop);

/* A dialled connection of this thread's next tether_conn_dial() asks for
 * acknowledgements (set by client_alo.c just around the dial). */
void tether__ack_dial_want(bool want);

/* The wish itself (ack.c's), read inline by every dial: one load.
 * (Initial-exec: the general model's __tls_get_addr() call would cost
 * more than the rest of the check.) */
extern _Thread_local bool tether__ack_dial_want_flag
    __attribute__((tls_model("initial-exec"), visibility("hidden")));
static inline bool tether__ack_dial_wanted(void)
{
    return tether__ack_dial_want_flag;
}

/* conn.c, tether_conn_dial(): takes the wish above (allocating c->ex->ack).
 * TETHER_ENOMEM when it cannot. */
int tether__ack_dial_take(tether_conn *c);

/* Our HELLO's capability bit for acks. */
uint8_t tether__ack_hello_flags(const tether_conn *c);

/* The peer's HELLO arrived with these flags. False when the connection
 * failed. */
bool tether__ack_on_hello(tether_conn *c, uint8_t flags);

/* tether__ctrl_frame_len(): may the peer send this type now? */
bool tether__ack_admits(const tether_conn *c, uint8_t type);

/* An ACK or RESUME control frame. False when the connection failed. */
bool tether__ack_on_ctrl(tether_conn *c, uint8_t type, const uint8_t *p, size_t n);

/* A data frame while rx_tag is TETHER__RX_SEQ: true to deliver it, false
 * for a duplicate (dropped). Inline: it runs for every message received. */
static inline bool tether__ack_rx_data(tether_conn *c)
{
    struct tether__ack *a = c->ex->ack; /* (rx_tag is TETHER__RX_SEQ: it exists) */
    uint64_t seq = a->rx_next++;
    if (TETHER__UNLIKELY(seq <= *a->rx_done)) {
        a->dups++;
        return false;
    }
    *a->rx_done = seq;
    return true;
}

/* End of a read batch: acknowledges what was received. */
void tether__ack_after_read(tether_conn *c);

/* Queues RESUME(token, seq) (client_alo.c); the next data frame queued
 * is number seq (tx_next). */
int tether__ack_queue_resume(tether_conn *c, uint64_t token, uint64_t seq);

/* Fills the acknowledgement statistics of a connection. */
void tether__ack_stats(const tether_conn *c, tether_stats *s);

/* Frees c->ex->ack with the connection. */
void tether__ack_free(tether_conn *c);

/* After a tagged (call) data frame: numbered frames continue. */
static inline void tether__ack_retag(tether_conn *c)
{
    const struct tether__ack *a = tether__conn_ack(c);
    if (a != NULL && a->rx_resumed && c->rx_tag == 0) {
        c->rx_tag = TETHER__RX_SEQ;
    }
}

#endif /* TETHER_ACK_INT_H */
