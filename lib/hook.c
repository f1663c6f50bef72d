/* SPDX-License-Identifier: MIT */
/* Hooks: user callbacks run once per iteration at a fixed point of the
 * loop (idle, prepare before blocking, check after waking). Each kind has a
 * list of started hooks on the loop; loop.c calls tether__hooks_run() at
 * the matching point. */
#include "loop.h"

#include <stdlib.h>

struct tether_hook {
    struct tether__handle h;
    struct tether__queue node; /* in loop->hook_q[kind] while started */
    tether_hook_kind kind;
    tether_hook_cb cb;
    void *ud;
};

void tether__hooks_run(tether_loop *loop, tether_hook_kind kind)
{
    struct tether__queue *list = &loop->hook_q[kind];
    if (tether__queue_empty(list)) {
        return;
    }
    /* Run the hooks started before this point, each once, in start order:
     * move them aside and put each back before its callback, which may
     * then stop or free it or any other (they unlink from whichever list
     * holds them); hooks started meanwhile wait for the next iteration. */
    struct tether__queue todo;
    tether__queue_move(list, &todo);
    while (!tether__queue_empty(&todo)) {
        struct tether__queue *q = todo.next;
        tether__queue_remove(q);
        tether__queue_insert_tail(list, q);
        tether_hook *h = tether__container_of(q, tether_hook, node);
        h->cb(h, h->ud);
    }
}

static void hook_close(void *obj)
{
    tether_hook_free(obj);
}

int tether_hook_new(tether_hook **out, tether_loop *loop, tether_hook_kind kind)
{
    if (out == NULL) {
        return TETHER_EINVAL;
    }
    *out = NULL;
    if (loop == NULL ||
        (kind != TETHER_HOOK_IDLE && kind != TETHER_HOOK_PREPARE && kind != TETHER_HOOK_CHECK)) {
        return TETHER_EINVAL;
    }
    tether_hook *h = calloc(1, sizeof *h);
    if (h == NULL) {
        return TETHER_ENOMEM;
    }
    tether__queue_init(&h->node);
    h->kind = kind;
    tether__handle_init(&h->h, loop, TETHER_HANDLE_HOOK, h, hook_close);
    *out = h;
    return TETHER_OK;
}

int tether_hook_start(tether_hook *h, tether_hook_cb cb, void *ud)
{
    if (h == NULL || cb == NULL || h->h.closing) {
        return TETHER_EINVAL;
    }
    h->cb = cb;
    h->ud = ud;
    if (!h->h.active) {
        tether__queue_insert_tail(&h->h.loop->hook_q[h->kind], &h->node);
        h->h.loop->hooks++;
        h->h.loop->attn = true;
        tether__handle_start(&h->h);
        tether__loop_touch(h->h.loop);
    }
    return TETHER_OK;
}

void tether_hook_stop(tether_hook *h)
{
    if (h == NULL || !h->h.active) {
        return;
    }
    tether__queue_remove(&h->node);
    h->h.loop->hooks--;
    tether__handle_stop(&h->h);
}

void tether_hook_free(tether_hook *h)
{
    if (h == NULL || h->h.closing) {
        return;
    }
    tether_hook_stop(h);
    tether__handle_detach(&h->h);
    /* Nothing points at the hook any more (tether__hooks_run() does not
     * touch it after its callback), so it can go at once. */
    tether__loop_handle_remove(h->h.loop, false);
    free(h);
}

tether_hook_kind tether_hook_get_kind(const tether_hook *h)
{
    return h->kind;
}

void tether_hook_unref(tether_hook *h)
{
    if (h != NULL) {
        tether__handle_unref(&h->h);
    }
}

void tether_hook_ref(tether_hook *h)
{
    if (h != NULL) {
        tether__handle_ref(&h->h);
    }
}
