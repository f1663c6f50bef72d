/* SPDX-License-Identifier: MIT */
/* Delivery on a reconnecting client (issue 14): the completion callbacks
 * of tether_client_send_cb(), whose records travel with the client's
 * held messages (reconnect.c reports when a message was written or handed
 * back), and tether_client_call(), a thin layer over tether_call() on the
 * client's current connection. */
#include "loop.h"
#include "reconnect.h"

#include <stdlib.h>

#include <tether/delivery.h>

struct tether__cdone {
    struct tether__cdone *next;
    tether_client_done_cb cb;
    void *ud;
};

/* A client's delivery state: messages written, waiting to be reported
 * from the loop, and the counters of its calls over all connections. */
struct tether__cdone_q {
    tether_client *cl;
    tether_loop *loop;
    struct tether__pending pend;
    struct tether__cdone *head;
    struct tether__cdone *tail;
    uint64_t calls;
    uint64_t completed;
    uint64_t timed_out;
    uint64_t canceled;
    uint64_t failed;
};

static void cdone_fire(struct tether__cdone_q *q)
{
    struct tether__cdone *d = q->head;
    q->head = q->tail = NULL;
    while (d != NULL) {
        struct tether__cdone *next = d->next;
        tether_client_done_cb cb = d->cb;
        void *ud = d->ud;
        free(d);
        cb(q->cl, TETHER_OK, ud);
        d = next;
    }
}

static void cdone_pending_cb(struct tether__pending *p)
{
    cdone_fire(tether__container_of(p, struct tether__cdone_q, pend));
}

void tether__cdone_written(struct tether__cdone_q *q, struct tether__cdone *d)
{
    d->next = NULL;
    if (q->tail != NULL) {
        q->tail->next = d;
    } else {
        q->head = d;
    }
    q->tail = d;
    tether__pending_queue(q->loop, &q->pend);
}

void tether__cdone_failed(tether_client *cl, struct tether__cdone *d, int reason)
{
    /* Those written before it are reported first, to keep the order. */
    struct tether__cdone_q *q = *tether__client_dq(cl);
    tether__pending_cancel(q->loop, &q->pend);
    cdone_fire(q);
    tether_client_done_cb cb = d->cb;
    void *ud = d->ud;
    free(d);
    cb(cl, reason, ud);
}

void tether__cdone_q_free(struct tether__cdone_q *q)
{
    if (q == NULL) {
        return;
    }
    tether__pending_cancel(q->loop, &q->pend);
    cdone_fire(q);
    free(q);
}

void tether__cdone_stats(const struct tether__cdone_q *q, tether_stats *s)
{
    if (q == NULL) {
        return;
    }
    uint64_t ended = q->completed + q->timed_out + q->canceled + q->failed;
    s->calls_in_flight = q->calls - ended;
    s->calls_completed = q->completed;
    s->calls_timed_out = q->timed_out;
    s->calls_canceled = q->canceled;
    s->calls_failed = q->failed;
}

/* The client's delivery state, allocated on first use; NULL when out of
 * memory. */
static struct tether__cdone_q *cdone_q_get(tether_client *cl)
{
    struct tether__cdone_q **qp = tether__client_dq(cl);
    if (*qp == NULL) {
        struct tether__cdone_q *q = calloc(1, sizeof *q);
        if (q == NULL) {
            return NULL;
        }
        q->cl = cl;
        /* The handle is the client's first member (struct tether__handle). */
        q->loop = ((const struct tether__handle *)(const void *)cl)->loop;
        tether__pending_init(&q->pend, cdone_pending_cb);
        *qp = q;
    }
    return *qp;
}

int tether_client_send_cb(tether_client *cl, const void *data, size_t len, tether_client_done_cb cb,
                          void *ud)
{
    if (cl == NULL || cb == NULL) {
        return TETHER_EINVAL;
    }
    if (cdone_q_get(cl) == NULL) {
        return TETHER_ENOMEM;
    }
    struct tether__cdone *d = calloc(1, sizeof *d);
    if (d == NULL) {
        return TETHER_ENOMEM;
    }
    d->cb = cb;
    d->ud = ud;
    int rv = tether__client_send(cl, data, len, d);
    if (rv != TETHER_OK) {
        free(d);
    }
    return rv;
}

/* ---- calls ------------------------------------------------------------- */

struct client_call {
    tether_client *cl;
    tether_client_reply_cb cb;
    void *ud;
};

static void client_on_reply(tether_conn *c, int status, const uint8_t *data, size_t len, void *ud)
{
    (void)c;
    struct client_call *k = ud;
    tether_client *cl = k->cl;
    struct tether__cdone_q *q = *tether__client_dq(cl);
    if (status == TETHER_OK) {
        q->completed++;
    } else if (status == TETHER_ETIMEDOUT) {
        q->timed_out++;
    } else if (status == TETHER_ECANCELED) {
        q->canceled++;
    } else {
        q->failed++;
    }
    tether_client_reply_cb cb = k->cb;
    void *cud = k->ud;
    free(k);
    cb(cl, status, data, len, cud);
}

int tether_client_call(tether_client *cl, const void *req, size_t len, int timeout_ms,
                       tether_client_reply_cb on_reply, void *ud, uint32_t *out_id)
{
    if (cl == NULL || on_reply == NULL) {
        return TETHER_EINVAL;
    }
    tether_client_state st = tether_client_get_state(cl);
    if (st == TETHER_CLIENT_CLOSED) {
        return TETHER_ECLOSED;
    }
    if (st != TETHER_CLIENT_CONNECTED) {
        return TETHER_ENOTCONN;
    }
    struct tether__cdone_q *q = cdone_q_get(cl);
    struct client_call *k = q != NULL ? malloc(sizeof *k) : NULL;
    if (k == NULL) {
        return TETHER_ENOMEM;
    }
    k->cl = cl;
    k->cb = on_reply;
    k->ud = ud;
    int rv = tether_call(tether_client_conn(cl), req, len, timeout_ms, client_on_reply, k, out_id);
    if (rv != TETHER_OK) {
        free(k);
        return rv;
    }
    q->calls++;
    return TETHER_OK;
}

int tether_client_call_cancel(tether_client *cl, uint32_t id)
{
    if (cl == NULL) {
        return TETHER_EINVAL;
    }
    tether_conn *c = tether_client_conn(cl);
    return c != NULL ? tether_call_cancel(c, id) : TETHER_EINVAL;
}
