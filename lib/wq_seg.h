/* SPDX-License-Identifier: MIT */
/* The write queue's segments, shared by the write path (wqueue.c) and the
 * code that keeps them (wq_seg.c): the per-loop cache of small, large and
 * reference segments, and linking a segment to a connection's queue.
 * Inline: the per-message paths take and give back cached segments. */
#ifndef TETHER_WQ_SEG_H
#define TETHER_WQ_SEG_H

#include "conn_core.h"

#include <stdbool.h>
#include <stdlib.h>

#define SEG_FIRST_ALLOC 1024u   /* first copy segment: small replies */
#define SEG_ALLOC (64u * 1024u) /* later copy segments */

/* Small segments are recycled through a per-loop free list: a reply of a
 * few bytes would otherwise cost a malloc and a free per message, and
 * keeping one per connection would cost idle connections memory. So are
 * a few of the large ones: a stream of small messages frees one and
 * allocates the next every 64 KiB, and malloc gave the freed memory back
 * to the kernel (trimming the heap) only to take it again, a page fault
 * per 4 KiB (thr tcp 64 B, 8 million messages: 670 brk() calls and 16 000
 * page faults before, 6 and 440 with four cached). At most 64 KiB of small
 * and 256 KiB of large segments per loop, nothing per connection. */
#define SEG_SMALL_CAP (SEG_FIRST_ALLOC - sizeof(struct tether__wseg))
#define SEG_CACHE_MAX 64u
#define SEG_LARGE_CAP (SEG_ALLOC - sizeof(struct tether__wseg))
#define SEG_LARGE_CACHE_MAX 4u
#define SEG_REF_CACHE_MAX 64u /* reference records (zero-copy payloads) */

/* The cache is per-loop state registered with the loop, created with the
 * loop's first connection and freed with the loop. Each connection keeps
 * a pointer to it (c->h.loop->segs), so that the per-message paths need no
 * lookup. */
struct seg_bin {
    struct tether__wseg *head;
    unsigned n;
};

struct tether__seg_cache {
    struct tether__loop_ext ext;
    struct seg_bin small; /* segments of SEG_SMALL_CAP, up to SEG_CACHE_MAX */
    struct seg_bin large; /* of SEG_LARGE_CAP, up to SEG_LARGE_CACHE_MAX */
    struct seg_bin refs;  /* records of no capacity, up to SEG_REF_CACHE_MAX */
};

/* A cached segment, or NULL when the bin is empty. */
static inline struct tether__wseg *bin_pop(struct seg_bin *b)
{
    struct tether__wseg *s = b->head;
    if (s != NULL) {
        b->head = s->next;
        b->n--;
    }
    return s;
}

/* Keeps s in the bin unless it holds max already. */
static inline bool bin_push(struct seg_bin *b, struct tether__wseg *s, unsigned max)
{
    if (b->n >= max) {
        return false;
    }
    s->next = b->head;
    b->head = s;
    b->n++;
    return true;
}

/* Back to the loop's cache, or freed when its bin is full (or there is
 * no cache). */
static inline void seg_release(struct tether__seg_cache *sc, struct tether__wseg *s)
{
    if (sc != NULL && ((s->cap == SEG_SMALL_CAP && bin_push(&sc->small, s, SEG_CACHE_MAX)) ||
                       (s->cap == SEG_LARGE_CAP && bin_push(&sc->large, s, SEG_LARGE_CACHE_MAX)) ||
                       (s->cap == 0 && bin_push(&sc->refs, s, SEG_REF_CACHE_MAX)))) {
        return;
    }
    free(s);
}

/* Appends s to c's queue (the queue's first segment starts its write
 * timeout). */
static inline void tether__wq_link(tether_conn *c, struct tether__wseg *s)
{
    s->next = NULL;
    if (c->wq_tail != NULL) {
        c->wq_tail->next = s;
    } else {
        c->wq_head = s;
        if (c->cfg->live) {
            if (c->state == TETHER__CS_READY) {
                /* Most output is written whole before the loop polls:
                 * only what a flush leaves behind needs watching (and,
                 * when liveness is lazy, the state and a timer). The
                 * flush ends in the same iteration: same loop time. */
                c->flags |= TETHER__CF_QSTART_DUE;
            } else {
                /* The write timeout counts from here when nothing moves. */
                tether__live_queue_started(c);
            }
        }
    }
    c->wq_tail = s;
}

#endif
