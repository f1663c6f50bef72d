/* SPDX-License-Identifier: MIT */
/* Keeping the write queue's segments (wq_seg.h): the per-loop cache's
 * life, releasing a connection's whole queue, and the reference records
 * of zero-copy payloads, one reserved before each zero-copy send so that
 * appending it cannot fail once part of the message is out. */
#include "wq_seg.h"
#include "delivery.h"

static void seg_list_free(struct tether__wseg *s)
{
    while (s != NULL) {
        struct tether__wseg *next = s->next;
        free(s);
        s = next;
    }
}

static const char seg_cache_key; /* its address identifies the cache */

static void seg_cache_cleanup(tether_loop *loop, struct tether__loop_ext *ext)
{
    loop->segs = NULL;
    struct tether__seg_cache *sc = tether__container_of(ext, struct tether__seg_cache, ext);
    seg_list_free(sc->small.head);
    seg_list_free(sc->large.head);
    seg_list_free(sc->refs.head);
    free(sc);
}

struct tether__seg_cache *tether__seg_cache_get(tether_loop *loop)
{
    bool fresh;
    return TETHER__LOOP_EXT_GET(loop, &seg_cache_key, struct tether__seg_cache, ext,
                                seg_cache_cleanup, &fresh);
}

void tether__wq_release_all(tether_conn *c)
{
    struct tether__wseg *s = c->wq_head;
    c->wq_head = c->wq_tail = NULL;
    tether__conn_queued_sub(c, c->queued);
    while (s != NULL) {
        struct tether__wseg *next = s->next;
        if (s->free_cb == tether__done_written) {
            /* A completion marker: its message will never be written. */
            tether__done_release(c, s);
        } else {
            if (s->free_cb != NULL) {
                s->free_cb(s->free_data, s->free_ud);
            }
            seg_release(c->h.loop->segs, s);
        }
        s = next;
    }
}

#ifdef TETHER_TESTING
/* Unit tests: when set to n > 0, the n-th allocation of a reference
 * record from now fails, and tether__wq_ref_reserve() allocates one even
 * when the loop holds one (test_conn's and test_ws's zero-copy
 * out-of-memory cases). */
TETHER_API unsigned tether__test_ref_alloc_fail;
#endif

static struct tether__wseg *ref_alloc(void)
{
#ifdef TETHER_TESTING
    if (tether__test_ref_alloc_fail > 0 && --tether__test_ref_alloc_fail == 0) {
        return NULL;
    }
#endif
    return malloc(sizeof(struct tether__wseg));
}

/* A reference record: the loop's cached one (tether__wq_ref_reserve()
 * keeps one there for each zero-copy send), else a fresh one. */
static struct tether__wseg *ref_new(tether_conn *c)
{
    struct tether__seg_cache *sc = c->h.loop->segs;
    struct tether__wseg *s = sc != NULL ? bin_pop(&sc->refs) : NULL;
    return s != NULL ? s : ref_alloc();
}

int tether__wq_ref_reserve(tether_conn *c)
{
    tether_loop *loop = c->h.loop;
    if (loop->segs == NULL && (loop->segs = tether__seg_cache_get(loop)) == NULL) {
        return TETHER_ENOMEM;
    }
#ifdef TETHER_TESTING
    bool cached = loop->segs->refs.head != NULL && tether__test_ref_alloc_fail == 0;
#else
    bool cached = loop->segs->refs.head != NULL;
#endif
    if (cached) {
        return TETHER_OK;
    }
    struct tether__wseg *s = ref_alloc();
    if (s == NULL) {
        return TETHER_ENOMEM;
    }
    s->cap = 0;
    bin_push(&loop->segs->refs, s, SEG_REF_CACHE_MAX);
    return TETHER_OK;
}

int tether__wq_append_ref(tether_conn *c, const uint8_t *data, size_t len, tether_free_cb fcb,
                          void *fdata, void *fud)
{
    struct tether__wseg *s = ref_new(c);
    if (s == NULL) {
        return TETHER_ENOMEM;
    }
    s->ptr = data;
    s->len = len;
    s->cap = 0;
    s->free_cb = fcb;
    s->free_data = fdata;
    s->free_ud = fud;
    tether__wq_link(c, s);
    tether__conn_queued_add(c, len);
    return TETHER_OK;
}
