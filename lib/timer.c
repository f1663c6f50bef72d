/* SPDX-License-Identifier: MIT */
/* Timers: a binary min-heap of nodes ordered by (deadline, start order).
 *
 * Each node records its heap index, so stopping or restarting a timer is
 * O(log n) without searching. The nearest deadline becomes the epoll
 * timeout. Internal users (connections) embed a tether__tnode; the public
 * tether_timer wraps one. */
#include "loop.h"

#include <stdlib.h>

static bool heap_less(const struct tether__tnode *a, const struct tether__tnode *b)
{
    if (a->deadline != b->deadline) {
        return a->deadline < b->deadline;
    }
    return a->seq < b->seq;
}

static void heap_place(tether_loop *loop, uint32_t i, struct tether__tnode *n)
{
    loop->heap[i] = n;
    n->index = i;
}

static void heap_sift_up(tether_loop *loop, uint32_t i)
{
    struct tether__tnode *n = loop->heap[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (!heap_less(n, loop->heap[parent])) {
            break;
        }
        heap_place(loop, i, loop->heap[parent]);
        i = parent;
    }
    heap_place(loop, i, n);
}

static void heap_sift_down(tether_loop *loop, uint32_t i)
{
    struct tether__tnode *n = loop->heap[i];
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= loop->heap_len) {
            break;
        }
        if (child + 1 < loop->heap_len && heap_less(loop->heap[child + 1], loop->heap[child])) {
            child++;
        }
        if (!heap_less(loop->heap[child], n)) {
            break;
        }
        heap_place(loop, i, loop->heap[child]);
        i = child;
    }
    heap_place(loop, i, n);
}

static void heap_remove(tether_loop *loop, struct tether__tnode *n)
{
    uint32_t i = n->index;
    uint32_t last = --loop->heap_len;
    n->index = TETHER__TNODE_IDLE;
    if (i == last) {
        return;
    }
    /* Move the last node into the hole and restore the order in whichever
     * direction it is violated. */
    heap_place(loop, i, loop->heap[last]);
    if (i > 0 && heap_less(loop->heap[i], loop->heap[(i - 1) / 2])) {
        heap_sift_up(loop, i);
    } else {
        heap_sift_down(loop, i);
    }
}

void tether__tnode_init(struct tether__tnode *n, tether__tnode_cb cb)
{
    n->deadline = 0;
    n->seq = 0;
    n->index = TETHER__TNODE_IDLE;
    n->cb = cb;
}

void tether__tnode_stop(tether_loop *loop, struct tether__tnode *n)
{
    if (n->index != TETHER__TNODE_IDLE) {
        heap_remove(loop, n);
    }
}

void tether__tnode_start(tether_loop *loop, struct tether__tnode *n, uint64_t timeout_ms)
{
    tether__tnode_stop(loop, n);
    /* Armed from outside the loop, the cached time may be stale by however
     * long the caller took, which would make the deadline fire early. */
    uint64_t now = tether__loop_time(loop);
    if (loop->heap_len == loop->heap_cap) {
        uint32_t cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
        struct tether__tnode **h = realloc(loop->heap, cap * sizeof *h);
        if (h == NULL) {
            /* A timer that cannot be armed would silently never fire; an
             * internal deadline missing is worse than aborting. This only
             * happens when malloc fails for a few kilobytes. */
            abort();
        }
        loop->heap = h;
        loop->heap_cap = cap;
    }
    n->deadline = now + timeout_ms;
    n->seq = loop->timer_seq++;
    loop->heap_len++;
    heap_place(loop, loop->heap_len - 1, n);
    heap_sift_up(loop, loop->heap_len - 1);
    if (n->index == 0) {
        /* The nearest deadline moved: an embedding loop must re-read
         * tether_loop_backend_timeout(). */
        tether__loop_touch(loop);
    }
}

int tether__timers_run(tether_loop *loop)
{
    int ran = 0;
    /* Bound the work so that timers re-armed with 0 ms inside their own
     * callback run on the next iteration instead of looping forever. */
    uint64_t limit_seq = loop->timer_seq;
    while (loop->heap_len > 0) {
        struct tether__tnode *n = loop->heap[0];
        if (n->deadline > loop->now || n->seq >= limit_seq) {
            break;
        }
        heap_remove(loop, n);
        n->cb(n);
        ran++;
    }
    return ran;
}

/* ---- public timers ---------------------------------------------------- */

struct tether_timer {
    struct tether__handle h; /* active while armed */
    struct tether__tnode node;
    tether_loop *loop;
    tether_timer_cb cb;
    void *ud;
    uint64_t repeat;
    bool in_cb;
    bool free_requested;
};

static void timer_fire(struct tether__tnode *n)
{
    tether_timer *t = tether__container_of(n, tether_timer, node);
    if (t->repeat > 0) {
        tether__tnode_start(t->loop, &t->node, t->repeat);
    } else {
        tether__handle_stop(&t->h);
    }
    t->in_cb = true;
    t->cb(t, t->ud);
    t->in_cb = false;
    if (t->free_requested) {
        tether__loop_handle_remove(t->loop, false);
        free(t);
    }
}

static void timer_close(void *obj)
{
    tether_timer_free(obj);
}

int tether_timer_new(tether_timer **out, tether_loop *loop)
{
    if (out == NULL) {
        return TETHER_EINVAL;
    }
    *out = NULL;
    if (loop == NULL) {
        return TETHER_EINVAL;
    }
    tether_timer *t = calloc(1, sizeof *t);
    if (t == NULL) {
        return TETHER_ENOMEM;
    }
    tether__tnode_init(&t->node, timer_fire);
    t->loop = loop;
    tether__handle_init(&t->h, loop, TETHER_HANDLE_TIMER, t, timer_close);
    *out = t;
    return TETHER_OK;
}

int tether_timer_start(tether_timer *t, uint64_t timeout_ms, uint64_t repeat_ms, tether_timer_cb cb,
                       void *ud)
{
    if (t == NULL || cb == NULL || t->free_requested) {
        return TETHER_EINVAL;
    }
    t->cb = cb;
    t->ud = ud;
    t->repeat = repeat_ms;
    tether__tnode_start(t->loop, &t->node, timeout_ms);
    tether__handle_start(&t->h);
    return TETHER_OK;
}

void tether_timer_stop(tether_timer *t)
{
    if (t == NULL) {
        return;
    }
    tether__tnode_stop(t->loop, &t->node);
    tether__handle_stop(&t->h);
}

bool tether_timer_active(const tether_timer *t)
{
    return t != NULL && tether__tnode_active(&t->node);
}

void tether_timer_free(tether_timer *t)
{
    if (t == NULL || t->free_requested) {
        return;
    }
    tether_timer_stop(t);
    tether__handle_detach(&t->h);
    if (t->in_cb) {
        /* Freed from its own callback: timer_fire frees it on return. */
        t->free_requested = true;
        return;
    }
    tether__loop_handle_remove(t->loop, false);
    free(t);
}

void tether_timer_unref(tether_timer *t)
{
    if (t != NULL) {
        tether__handle_unref(&t->h);
    }
}

void tether_timer_ref(tether_timer *t)
{
    if (t != NULL) {
        tether__handle_ref(&t->h);
    }
}

bool tether_timer_has_ref(const tether_timer *t)
{
    return t != NULL && !t->h.unref;
}
