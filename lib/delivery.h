/* SPDX-License-Identifier: MIT */
/* Internal side of delivery tracking (issue #14): per-message completion
 * callbacks (completion.c) and request/response calls (call.c). A
 * connection that never uses either carries one NULL pointer (c->dl) and
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

/* Links a completion marker at the tail of the write queue (wqueue.c). */
void tether__wq_append_mark(tether_conn *c, struct tether__wseg *s);

#endif /* TETHER_DELIVERY_INT_H */
