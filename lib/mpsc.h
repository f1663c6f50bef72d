/* SPDX-License-Identifier: MIT */
/* An intrusive multi-producer single-consumer queue (Dmitry Vyukov's
 * non-intrusive-stub design): producers push with one atomic exchange and
 * one store, lock-free and wait-free; the one consumer pops without any
 * atomic read-modify-write. FIFO in the order of the producers' exchanges,
 * so the pushes of one thread come out in the order that thread made them. */
#ifndef TETHER_MPSC_H
#define TETHER_MPSC_H

#include <stdatomic.h>
#include <stddef.h>

struct tether__mpsc_node {
    _Atomic(struct tether__mpsc_node *) next;
};

struct tether__mpsc {
    _Atomic(struct tether__mpsc_node *) head; /* the last pushed node: producers */
    struct tether__mpsc_node *tail;           /* the next to pop: consumer only */
    struct tether__mpsc_node stub;            /* keeps the list non-empty */
};

static inline void tether__mpsc_init(struct tether__mpsc *q)
{
    atomic_init(&q->stub.next, NULL);
    atomic_init(&q->head, &q->stub);
    q->tail = &q->stub;
}

/* Any thread. */
static inline void tether__mpsc_push(struct tether__mpsc *q, struct tether__mpsc_node *n)
{
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    struct tether__mpsc_node *prev = atomic_exchange_explicit(&q->head, n, memory_order_acq_rel);
    /* Between the exchange and this store the list is cut at prev: the
     * consumer sees the queue as empty from there on (pop returns NULL)
     * until the store lands. Callers must wake the consumer after it. */
    atomic_store_explicit(&prev->next, n, memory_order_release);
}

/* The consumer thread only. Returns the oldest node, or NULL when the
 * queue is empty or a producer is between its two steps (the node it is
 * pushing, and those behind it, come out on a later call). */
static inline struct tether__mpsc_node *tether__mpsc_pop(struct tether__mpsc *q)
{
    struct tether__mpsc_node *tail = q->tail;
    struct tether__mpsc_node *next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (tail == &q->stub) {
        if (next == NULL) {
            return NULL;
        }
        q->tail = next;
        tail = next;
        next = atomic_load_explicit(&next->next, memory_order_acquire);
    }
    if (next != NULL) {
        q->tail = next;
        return tail;
    }
    if (tail != atomic_load_explicit(&q->head, memory_order_acquire)) {
        return NULL; /* a push is half done */
    }
    /* tail is the last node: put the stub behind it so that it can go. */
    tether__mpsc_push(q, &q->stub);
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (next != NULL) {
        q->tail = next;
        return tail;
    }
    return NULL;
}

#endif /* TETHER_MPSC_H */
