/* SPDX-License-Identifier: MIT */
/* Internal side of delivery tracking (issue #14): per-message completion
 * callbacks (completion.c) and request/response calls (call.c). A
 * connection that never uses either carries nothing (c->ex->dl) but
 * one zero byte (c->rx_tag); nothing here is on the path of a plain
 * tether_conn_send(). */
#ifndef TETHER_DELIVERY_INT_H
#define TETHER_DELIVERY_INT_H

#include "conn_core.h"

/* The free_cb of a completion marker: a zero-length reference segment
 * queued behind a message sent with tether_conn_send_cb(). Its memory
 * belongs to completion.c, not to the write queue: wqueue.c calls it when
 * the bytes ahead of it are written and then leaves the segment alone, and
 * tether__wq_release_all() hands it to tether__done_release() instead.
 * (Only segments with a free_cb are compared with it: plain copies never
 * are.) */
void tether__done_written(void *seg, void *conn);

struct tether__done;      /* completion.c: one tether_conn_send_cb() */
struct tether__call;      /* call.c: one pending tether_call() */
struct tether__call_slot; /* call.c: the id table */

/* Per-connection delivery state, allocated on first use. */
struct tether__dl {
    tether_conn *c;
    struct tether__pending pend; /* fires finished completions and canceled calls */

    /* Completions whose outcome is known, oldest first, not yet reported. */
    struct tether__done *done_head;
    struct tether__done *done_tail;

    /* ---- calls (call.c) ---- */
    struct tether__call **slots; /* open addressing by id, linear probing */
    uint32_t cap;                /* a power of two, or 0 */
    uint32_t n;                  /* calls in slots */
    uint32_t next_id;            /* the last id handed out */
    struct tether__call *first;  /* pending calls, oldest first */
    struct tether__call *last;
    struct tether__call *fin_head; /* canceled calls, reported from pend */
    struct tether__call *fin_tail;
    uint32_t rx_id;  /* the id of the CALL or REPLY frame just received */
    uint32_t cur_id; /* inside on_message: the id of the request it holds */
    bool peer_calls; /* the peer's HELLO announced calls */
    bool peer_plain; /* the peer sent data before any HELLO: it never will */
    /* Statistics (tether_stats). */
    uint64_t completed;
    uint64_t timed_out;
    uint64_t failed;
    uint64_t canceled;
    uint64_t late;
    uint64_t requests_in;
};

/* The connection's delivery state, allocated if needed; NULL when out of
 * memory. */
struct tether__dl *tether__dl_get(tether_conn *c);

/* The connection is gone (its on_close is about to run): reports every
 * outstanding completion and fails every pending call, from the
 * connection's own pending callback. */
void tether__dl_conn_gone(tether_conn *c);

/* Frees the delivery state with the connection (conn_free). */
void tether__dl_free(tether_conn *c);

/* What a message or call that the connection can no longer carry fails
 * with: the close reason, or TETHER_ECLOSED for a clean local close. */
int tether__dl_gone_status(const tether_conn *c);

/* tether__wq_release_all() met a completion marker: the message ahead of
 * it will never be written. */
void tether__done_release(tether_conn *c, struct tether__wseg *s);

/* HELLO capability bits (the HELLO flags byte; tether/conn.h). */
#define TETHER__HELLO_CALLS 0x01u /* request/response ids: CALL and REPLY frames */
#define TETHER__HELLO_ACKS 0x02u  /* acknowledgements: ACK and RESUME frames (ack.h) */

/* Control frame types of calls (liveness.c admits them only once both
 * HELLOs carried TETHER__HELLO_CALLS). Payload: the call id (be32). The
 * data frame that follows is the request or the reply. */
#define TETHER__CTRL_CALL 5u
#define TETHER__CTRL_REPLY 6u
#define TETHER__CTRL_CALL_LEN 4u

/* c->rx_tag: what the next data frame is. */
#define TETHER__RX_PROBE 1u /* the first frame of a connection with calls on */
#define TETHER__RX_REQ 2u   /* a request: on_message with its id */
#define TETHER__RX_REPLY 3u /* a reply: to the pending call */

/* Our HELLO flags byte. */
uint8_t tether__call_hello_flags(const tether_conn *c);

/* Both HELLOs announced calls. */
bool tether__call_negotiated(const tether_conn *c);

/* The peer's HELLO arrived with these flags: sends the calls held until
 * then, or fails them when the peer does not take calls. Returns false
 * when the connection failed. */
bool tether__call_on_hello(tether_conn *c, uint8_t flags);

/* A CALL or REPLY control frame (p, n: its payload). Returns false when
 * the connection failed. */
bool tether__call_on_ctrl(tether_conn *c, uint8_t type, const uint8_t *p, size_t n);

/* A data frame while c->rx_tag is set (conn_read.c). */
void tether__call_deliver(tether_conn *c, const uint8_t *p, size_t len);

/* Fails every pending call with the connection's end (from
 * tether__dl_conn_gone). */
void tether__call_fail_all(tether_conn *c, int status);

/* Reports the canceled calls (from the delivery pending callback). */
void tether__call_fire_fin(struct tether__dl *dl);

/* Frees the call table (tether__dl_free). */
void tether__call_free(struct tether__dl *dl);

/* Fills the call statistics. */
void tether__call_stats(const tether_conn *c, tether_stats *s);

/* Links a completion marker at the tail of the write queue (wqueue.c). */
void tether__wq_append_mark(tether_conn *c, struct tether__wseg *s);

#endif /* TETHER_DELIVERY_INT_H */
