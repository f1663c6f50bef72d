/* SPDX-License-Identifier: MIT */
/* The handle registry of a loop: every timer, fd watcher, signal watcher,
 * hook, listener, connection and reconnecting client registers here while
 * it lives. It decides which handles keep tether_loop_run() going (active
 * and referenced), lets tether_loop_walk() and tether_loop_close_all() find
 * them at shutdown, and holds the thread-safe keep-alive count of
 * tether_loop_ref(). (Registering, starting, stopping and detaching a
 * handle are inline, in loop.h.) */
#include "loop.h"

void tether__handle_ref(struct tether__handle *h)
{
    if (!h->unref) {
        return;
    }
    h->unref = false;
    if (h->active) {
        h->loop->active++;
    }
}

void tether__handle_unref(struct tether__handle *h)
{
    if (h->unref) {
        return;
    }
    h->unref = true;
    if (h->active) {
        h->loop->active--;
    }
}

/* Calls fn on every handle registered when it starts. The registry is
 * moved aside and each handle put back before its call: a call that frees
 * any handle unlinks it from whichever list holds it, and handles it
 * creates go to the real registry only, so they are not visited. */
static void for_each_handle(tether_loop *loop, void (*fn)(struct tether__handle *h, void *arg),
                            void *arg)
{
    struct tether__queue todo;
    tether__queue_move(&loop->handle_q, &todo);
    while (!tether__queue_empty(&todo)) {
        struct tether__queue *q = todo.next;
        tether__queue_remove(q);
        tether__queue_insert_tail(&loop->handle_q, q);
        fn(tether__container_of(q, struct tether__handle, node), arg);
    }
}

void tether__handle_each(tether_loop *loop, void (*fn)(struct tether__handle *h, void *arg),
                         void *arg)
{
    for_each_handle(loop, fn, arg);
}

struct walk {
    tether_loop *loop;
    tether_walk_cb cb;
    void *ud;
};

static void walk_one(struct tether__handle *h, void *arg)
{
    struct walk *w = arg;
    if (!h->hidden) {
        w->cb(w->loop, (tether_handle_type)h->type, h, w->ud);
    }
}

int tether_loop_walk(tether_loop *loop, tether_walk_cb cb, void *ud)
{
    if (loop == NULL || cb == NULL) {
        return TETHER_EINVAL;
    }
    struct walk w = {loop, cb, ud};
    for_each_handle(loop, walk_one, &w);
    return TETHER_OK;
}

static void close_one(struct tether__handle *h, void *arg)
{
    (void)arg;
    h->loop->handle_close[h->type](h);
}

void tether_loop_close_all(tether_loop *loop)
{
    if (loop == NULL) {
        return;
    }
    /* Each handle brought its own close function (the loop knows nothing
     * of listeners). */
    for_each_handle(loop, close_one, NULL);
}

const char *tether_handle_type_name(tether_handle_type type)
{
    switch (type) {
    case TETHER_HANDLE_TIMER:
        return "timer";
    case TETHER_HANDLE_IO:
        return "io";
    case TETHER_HANDLE_SIGNAL:
        return "signal";
    case TETHER_HANDLE_HOOK:
        return "hook";
    case TETHER_HANDLE_LISTENER:
        return "listener";
    case TETHER_HANDLE_CONN:
        return "conn";
    case TETHER_HANDLE_CLIENT:
        return "client";
    }
    return "unknown";
}

void tether_loop_ref(tether_loop *loop)
{
    if (loop != NULL) {
        atomic_fetch_add(&loop->keepalive, 1);
    }
}

void tether_loop_unref(tether_loop *loop)
{
    if (loop == NULL) {
        return;
    }
    /* Under the post lock, like tether_loop_post(): tether_loop_free()
     * takes it too, so once the count is 0 and the loop thread frees the
     * loop, no unref is still about to touch it. The wakeup makes a run
     * with nothing else to do re-check and return. */
    pthread_mutex_lock(&loop->post_mu);
    size_t n = atomic_load(&loop->keepalive);
    while (n > 0 && !atomic_compare_exchange_weak(&loop->keepalive, &n, n - 1)) {
    }
    tether_loop_wakeup(loop);
    pthread_mutex_unlock(&loop->post_mu);
}
