/* SPDX-License-Identifier: MIT */
/* Per-message completion callbacks (tether_conn_send_cb): a zero-length
 * marker segment queued behind the message reports, once the write path
 * consumes it, that every byte ahead of it went to the transport; a marker
 * the queue releases unwritten reports why the connection ended. Also owns
 * the per-connection delivery state (struct tether__dl) that call.c
 * shares. */
#include "delivery.h"

#include <stdlib.h>

/* The record lives in the marker segment's data[]: one allocation per
 * tracked message, freed after its callback ran. */
struct tether__done {
    struct tether__done *next;
    tether_send_cb cb;
    void *ud;
    int status;
};

static struct tether__done *done_of(struct tether__wseg *s)
{
    return (struct tether__done *)(void *)s->data;
}

static struct tether__wseg *seg_of(struct tether__done *d)
{
    return tether__container_of((void *)d, struct tether__wseg, data);
}

static void dl_pending_cb(struct tether__pending *p);

struct tether__dl *tether__dl_get(tether_conn *c)
{
    if (tether__conn_dl(c) == NULL) {
        struct tether__conn_extra *ex = tether__conn_extra(c);
        struct tether__dl *dl = ex != NULL ? calloc(1, sizeof *dl) : NULL;
        if (dl == NULL) {
            return NULL;
        }
        dl->c = c;
        tether__pending_init(&dl->pend, dl_pending_cb);
        ex->dl = dl;
    }
    return c->ex->dl;
}

int tether__dl_gone_status(const tether_conn *c)
{
    return c->reason != TETHER_OK ? c->reason : TETHER_ECLOSED;
}

static void done_push(tether_conn *c, struct tether__done *d, int status)
{
    struct tether__dl *dl = tether__conn_dl(c);
    d->status = status;
    d->next = NULL;
    if (dl->done_tail != NULL) {
        dl->done_tail->next = d;
    } else {
        dl->done_head = d;
    }
    dl->done_tail = d;
}

/* Runs the reported completions in order. A callback may send, close or
 * abort; what it adds is reported by a later run. */
static void dl_fire_done(struct tether__dl *dl)
{
    struct tether__done *d = dl->done_head;
    dl->done_head = dl->done_tail = NULL;
    while (d != NULL) {
        struct tether__done *next = d->next;
        tether_send_cb cb = d->cb;
        void *ud = d->ud;
        int st = d->status;
        free(seg_of(d));
        cb(dl->c, st, ud);
        d = next;
    }
}

static void dl_pending_cb(struct tether__pending *p)
{
    struct tether__dl *dl = tether__container_of(p, struct tether__dl, pend);
    tether_conn *c = dl->c;
    c->dispatching++;
    dl_fire_done(dl);
    tether__call_fire_fin(dl);
    c->dispatching--;
    if (c->state == TETHER__CS_READY || c->state == TETHER__CS_CLOSING) {
        /* Send what the callbacks queued, as at the end of any dispatch. */
        c->dispatching++;
        tether__conn_dispatch_end(c);
        c->dispatching--;
    }
}

/* The write path consumed the marker (free_cb of the segment): every byte
 * queued before it is with the transport. Reported from the loop, never
 * from inside the write, which may run inside a later send. */
void tether__done_written(void *data, void *ud)
{
    tether_conn *c = ud;
    done_push(c, done_of(data), TETHER_OK);
    tether__pending_queue(c->h.loop, &tether__conn_dl(c)->pend);
}

void tether__done_release(tether_conn *c, struct tether__wseg *s)
{
    done_push(c, done_of(s), tether__dl_gone_status(c));
}

void tether__dl_conn_gone(tether_conn *c)
{
    struct tether__dl *dl = tether__conn_dl(c);
    tether__pending_cancel(c->h.loop, &dl->pend);
    dl_fire_done(dl);
    tether__call_fail_all(c, tether__dl_gone_status(c));
}

void tether__dl_free(tether_conn *c)
{
    struct tether__dl *dl = tether__conn_dl(c);
    if (dl == NULL) {
        return;
    }
    /* Normally empty by now (tether__dl_conn_gone ran before on_close). */
    tether__pending_cancel(c->h.loop, &dl->pend);
    dl_fire_done(dl);
    tether__call_free(dl);
    free(dl);
    c->ex->dl = NULL;
}

int tether_conn_send_cb(tether_conn *c, const void *data, size_t len, tether_send_cb cb, void *ud)
{
    if (c == NULL || cb == NULL) {
        return TETHER_EINVAL;
    }
    if (tether__dl_get(c) == NULL) {
        return TETHER_ENOMEM;
    }
    /* Allocated first: once the message is queued, queueing its marker
     * must not fail. */
    struct tether__wseg *s = malloc(sizeof *s + sizeof(struct tether__done));
    if (s == NULL) {
        return TETHER_ENOMEM;
    }
    int rv = tether_conn_send(c, data, len);
    if (rv != TETHER_OK) {
        free(s);
        return rv;
    }
    struct tether__done *d = done_of(s);
    d->next = NULL;
    d->cb = cb;
    d->ud = ud;
    d->status = TETHER_OK;
    s->ptr = s->data;
    s->len = 0;
    s->cap = 0;
    s->free_cb = tether__done_written;
    s->free_data = s;
    s->free_ud = c;
    tether__wq_append_mark(c, s);
    /* A message the socket took whole left only the marker: the flush
     * before the next poll (or at the end of this dispatch) consumes it. */
    tether__conn_after_queue(c);
    return TETHER_OK;
}
