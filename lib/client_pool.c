/* SPDX-License-Identifier: MIT */
/* The records of a reconnecting client's held messages (struct cmsg,
 * reconnect.h): carved one after the other from the client's own slabs
 * instead of one malloc() and free() per message.
 *
 * Why: with at-least-once streams a record lives until its ACK, so up to
 * queue_max_bytes of records are alive at once and glibc's malloc works
 * through fragmented bins for every message (about a third of a client's
 * instructions per 1 KiB message); and even without acks it is the
 * largest cost of a held copy after the copy itself.
 *
 * A slab is TETHER__CSLAB_SIZE bytes; records are appended to the current
 * one and counted (live). Records are freed in about the order they were
 * made (written, acknowledged or handed back, oldest first), so slabs
 * empty in order too; but any order is correct: a slab is freed, or kept
 * as a spare, when its last record goes, and the current slab starts over
 * from its beginning whenever it holds no record. Records
 * larger than TETHER__CSLAB_MAX_REC come from malloc() as before. A
 * record knows its offset in its slab (0: from malloc).
 *
 * Spares. A client that fills its queue is told to send again once it
 * holds a quarter of it (on_drain), so the records of up to three
 * quarters of queue_max_bytes are freed before it makes new ones; with
 * at-least-once streams they go in runs, one ACK at a time. The emptied
 * slabs are kept (up to the queue's three quarters, and at most
 * SPARE_MAX_BYTES) for the records that follow, rather than freed and
 * allocated again for every slab's worth of messages.
 *
 * Memory: a slab stays while any record in it is held, which bounds the
 * slabs by the held bytes (queue_max_bytes) plus one slab per live
 * record in the worst order, and the spares by the bound above. Once the
 * client holds nothing (on the loop's next turn, if it still holds
 * nothing then), the current slab and the spares are freed: an idle
 * client keeps no slab. */
#include "reconnect.h"

#include <stdlib.h>

struct tether__cslab {
    uint32_t live;              /* records carved from it and not yet freed */
    uint32_t used;              /* bytes given out, the header included */
    struct tether__cslab *next; /* in the list of spares */
};

#define SPARE_MAX_BYTES (4u * 1024u * 1024u)

#define SLAB_HDR ((uint32_t)((sizeof(struct tether__cslab) + 15u) & ~(size_t)15u))

static uint32_t rec_size(size_t len)
{
    return (uint32_t)((sizeof(struct cmsg) + len + 15u) & ~(size_t)15u);
}

static void slab_drop(tether_client *cl, struct tether__cslab *s)
{
    size_t keep = cl->o.queue_max_bytes / 4 * 3;
    keep = (keep < SPARE_MAX_BYTES ? keep : SPARE_MAX_BYTES) / TETHER__CSLAB_SIZE;
    if (cl->pool.spare == NULL || cl->pool.n_spare < keep) {
        s->next = cl->pool.spare;
        cl->pool.spare = s;
        cl->pool.n_spare++;
    } else {
        free(s);
    }
}

static void spares_free(tether_client *cl)
{
    while (cl->pool.spare != NULL) {
        struct tether__cslab *s = cl->pool.spare;
        cl->pool.spare = s->next;
        free(s);
    }
    cl->pool.n_spare = 0;
}

struct cmsg *tether__cmsg_new(tether_client *cl, size_t len)
{
    struct cmsg *m;
    if (len > TETHER__CSLAB_MAX_REC - sizeof *m) {
        m = malloc(sizeof *m + len);
        if (m == NULL) {
            return NULL;
        }
        m->off = 0;
    } else {
        uint32_t need = rec_size(len);
        struct tether__cslab *s = cl->pool.cur;
        if (s == NULL || s->used + need > TETHER__CSLAB_SIZE) {
            s = cl->pool.spare;
            if (s != NULL) {
                cl->pool.spare = s->next;
                cl->pool.n_spare--;
            } else {
                s = malloc(TETHER__CSLAB_SIZE);
                if (s == NULL) {
                    return NULL;
                }
            }
            s->live = 0;
            s->used = SLAB_HDR;
            if (cl->pool.cur != NULL && cl->pool.cur->live == 0) {
                slab_drop(cl, cl->pool.cur);
            }
            cl->pool.cur = s; /* (a full one with records left is freed by its last) */
        }
        m = (struct cmsg *)((char *)s + s->used);
        m->off = s->used;
        s->used += need;
        s->live++;
    }
    m->next = NULL;
    m->end = 0;
    m->seq = 0;
    m->sent = false;
    m->done = NULL;
    m->len = len;
    return m;
}

static void pool_trim_cb(struct tether__pending *p)
{
    tether_client *cl = tether__container_of(p, tether_client, pool.trim);
    if (cl->held_msgs != 0) {
        return;
    }
    spares_free(cl);
    if (cl->pool.cur != NULL && cl->pool.cur->live == 0) {
        free(cl->pool.cur);
        cl->pool.cur = NULL;
    }
}

/* Frees one record; the slab's last frees (or empties) the slab. */
static inline void rec_free(tether_client *cl, struct cmsg *m)
{
    if (m->off == 0) {
        free(m);
    } else {
        struct tether__cslab *s = (struct tether__cslab *)((char *)m - m->off);
        if (--s->live == 0) {
            if (s == cl->pool.cur) {
                s->used = SLAB_HDR; /* empty: start over */
            } else {
                slab_drop(cl, s);
            }
        }
    }
}

/* After records were freed: an idle client's slabs go on the loop's next
 * turn. */
static void pool_after_free(tether_client *cl)
{
    if (cl->held_msgs == 0 && (cl->pool.cur != NULL || cl->pool.spare != NULL)) {
        /* Nothing held: unless the application sends again before the
         * loop goes on (as it does from on_drain, which runs first), the
         * burst is over and its memory goes back. */
        if (cl->pool.trim.cb == NULL) {
            tether__pending_init(&cl->pool.trim, pool_trim_cb);
        }
        tether__pending_queue(cl->loop, &cl->pool.trim);
    }
}

void tether__cmsg_free(tether_client *cl, struct cmsg *m)
{
    rec_free(cl, m);
    pool_after_free(cl);
}

void tether__cmsg_free_run(tether_client *cl, struct cmsg *m, struct cmsg *stop)
{
    while (m != stop) {
        struct cmsg *next = m->next;
        rec_free(cl, m);
        m = next;
    }
    pool_after_free(cl);
}

void tether__cpool_clear(tether_client *cl)
{
    tether__pending_cancel(cl->loop, &cl->pool.trim);
    spares_free(cl);
    free(cl->pool.cur); /* (only ever called with nothing held) */
    cl->pool.cur = NULL;
}
