/* SPDX-License-Identifier: MIT */
/* A connection's memory: its block and the per-loop spare blocks that
 * save a malloc/free per connection, the cold struct (c->ex) allocated on
 * first use and trimmed when empty, and the free of a finished connection
 * with everything it holds. The state machine (conn.c) decides when. */
#include "ack.h"
#include "conn_core.h"
#include "delivery.h"

#include <stdlib.h>

/* ---- spare blocks (struct tether__spares) ------------------------------ */

/* A spare block is freed memory to AddressSanitizer until it is taken
 * again, so that a use after free is still caught. */
#if defined(__SANITIZE_ADDRESS__)
#define SPARES_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SPARES_ASAN 1
#endif
#endif
#ifdef SPARES_ASAN
#include <sanitizer/asan_interface.h>
#define SPARE_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define SPARE_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define SPARE_POISON(p, n) ((void)(p), (void)(n))
#define SPARE_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

/* Zeroes a block of size bytes (a multiple of 8, at least 16, at an
 * address aligned to 8, as every connection block is): what calloc()
 * would leave, in one 16-byte store per 16 bytes. (memset() through a
 * volatile pointer, as in tether__zalloc(), cost a connection twice the
 * instructions, mostly its call and its dispatch on the size. The
 * stores are volatile so that the compiler neither turns them back into
 * a memset() (or a string store of one instruction per 8 bytes) nor
 * merges them with a malloc() into a calloc(), which glibc serves
 * without its thread cache.) */
typedef uint64_t zero16 __attribute__((vector_size(16), aligned(8), may_alias));
typedef uint64_t zero8 __attribute__((may_alias));
static inline __attribute__((always_inline)) void spare_zero(void *p, size_t size)
{
    volatile zero16 *v = p;
#pragma GCC unroll 32
    for (size_t i = 0; i < size / 16; i++) {
        v[i] = (zero16){0, 0};
    }
    if (size % 16 != 0) {
        *(volatile zero8 *)(void *)((char *)p + size - 8) = 0;
    }
}

/* A block of size bytes, not zeroed: a spare one or a new one. */
static void *spare_take(struct tether__spares *s, size_t size)
{
    if (s->n == 0) {
        return malloc(size);
    }
    void *p = s->blk[--s->n];
    SPARE_UNPOISON(p, size);
    return p;
}

static void spare_put(struct tether__spares *s, void *p, size_t size)
{
    if (s->n == TETHER__SPARES) {
        free(p);
        return;
    }
    SPARE_POISON(p, size);
    s->blk[s->n++] = p;
}

static void spares_drop(struct tether__spares *s, size_t size)
{
    while (s->n > 0) {
        void *p = s->blk[--s->n];
        SPARE_UNPOISON(p, size);
        free(p);
    }
}

static_assert(sizeof(struct tether_conn) % 8 == 0, "spare_zero() zeroes 8 bytes at a time");

tether_conn *tether__conn_block_new(struct tether__mem *m)
{
    tether_conn *c = spare_take(&m->spare_conns, sizeof *c);
    if (c != NULL) {
        spare_zero(c, sizeof *c);
    }
    return c;
}

tether_conn *tether__conn_block_new_tail(size_t tail)
{
    tether_conn *c = malloc(sizeof *c + tail); /* (spares are plain blocks) */
    if (c != NULL) {
        spare_zero(c, sizeof *c + tail); /* (tail: a multiple of 8) */
    }
    return c;
}

void tether__conn_block_drop(struct tether__mem *m, tether_conn *c, size_t tail)
{
    if (tail != 0) {
        free(c);
        return;
    }
    spare_put(&m->spare_conns, c, sizeof *c);
}

void tether__conn_spares_free(struct tether__mem *m)
{
    spares_drop(&m->spare_conns, sizeof(tether_conn));
    spares_drop(&m->spare_extras, sizeof(struct tether__conn_extra));
}

/* (A spare block or malloc, and a zeroing store rather than calloc, which
 * glibc serves without its thread cache: a dial paid about 200
 * instructions for it.) */
static void conn_extra_init(tether_conn *c, struct tether__conn_extra *ex)
{
    *ex = (struct tether__conn_extra){.c = c};
    tether__tnode_init(&ex->timer, tether__conn_timer_cb);
    c->ex = ex;
}

struct tether__conn_extra *tether__conn_extra(tether_conn *c)
{
    if (c->ex == NULL) {
        struct tether__conn_extra *ex = spare_take(&c->h.loop->mem->spare_extras, sizeof *ex);
        if (ex != NULL) {
            conn_extra_init(c, ex);
        }
    }
    return c->ex;
}

static void conn_extra_free(tether_conn *c)
{
    if (c->ex != NULL) {
        spare_put(&c->h.loop->mem->spare_extras, c->ex, sizeof *c->ex);
        c->ex = NULL;
    }
}

bool tether__conn_timer_start(tether_conn *c, uint64_t ms)
{
    struct tether__conn_extra *ex = tether__conn_extra(c);
    if (ex == NULL) {
        return false;
    }
    tether__tnode_start(c->h.loop, &ex->timer, ms);
    return true;
}

void tether__conn_extra_trim(tether_conn *c)
{
    const struct tether__conn_extra *ex = c->ex;
    if (ex != NULL && ex->dialer == NULL && ex->pp == NULL && ex->wnotify == NULL &&
        ex->gnotify == NULL && ex->dl == NULL && ex->drain == NULL && ex->ack == NULL &&
        ex->peer6.family == 0 && ex->ws == NULL && ex->ref_idx == 0 && ex->live == NULL &&
        ex->msgs_in_hi == 0 && c->memflags == 0 && !tether__tnode_active(&ex->timer)) {
        conn_extra_free(c);
    }
}

/* Closes the socket: off the epoll set first (see below), then the
 * transport's destroy(), made here for the plain one in place (c->tcp),
 * which every TCP connection has (a TLS one is built there too). */
static inline void conn_close_socket(tether_conn *c)
{
    /* Out of the epoll set before destroy() closes the fd (a lingering
     * connection is still registered): closing takes it out only when no
     * other descriptor refers to the open file, and a child forked
     * meanwhile keeps one, with the registration, which epoll would go on
     * reporting for this connection's freed memory. */
    if (c->io.registered) {
        tether__io_stop(c->h.loop, &c->io);
    }
    if (c->tr == &c->tcp && c->tcp.ops->plain) { /* (a TLS one is in place too) */
        tether__plain_destroy(&c->tcp);
    } else if (c->tr != NULL) {
        c->tr->ops->destroy(c->tr);
    }
    c->tr = NULL;
    c->io.fd = -1;
}

void tether__conn_destroy_transport(tether_conn *c)
{
    conn_close_socket(c);
}

/* What of c->ex is freed before the socket is closed: the reference slot,
 * the liveness state and the drain. */
static void conn_free_extra_first(tether_conn *c)
{
    if (tether__conn_ref_idx(c) != 0) {
        tether__conn_ref_gone(c); /* (normally done after on_close already) */
    }
    if (c->hooks & TETHER__CH_LIVE) {
        tether__tnode_stop(c->h.loop, &c->ex->live->timer);
        free(c->ex->live);
        c->ex->live = NULL;
    }
    if (c->ex->drain != NULL) {
        tether__drain_free(c);
    }
}

/* The rest of c->ex, and c->ex itself, once the connection is off the
 * loop. */
static void conn_free_extra_last(tether_conn *c)
{
    struct tether__conn_extra *ex = c->ex;
    if (ex->pp != NULL) {
        tether__pp_conn_free(c);
    }
    if (ex->dl != NULL) {
        tether__dl_free(c);
    }
    if (ex->ack != NULL) {
        tether__ack_free(c);
    }
    tether__tnode_stop(c->h.loop, &ex->timer);
    conn_extra_free(c);
}

void tether__conn_free(tether_conn *c)
{
    tether_loop *loop = c->h.loop;
    /* (What only some connections have is in c->ex, NULL for most: the
     * calls that would find nothing to free are skipped.) */
    if (c->ex != NULL) {
        conn_free_extra_first(c);
    }
    conn_close_socket(c);
    tether__handle_detach(&c->h);
    loop->handles--;
    tether__pending_cancel(loop, &c->pend);
    /* A send from outside this connection's callbacks (e.g. a broadcast
     * from another connection's on_message) queued a flush; an abort that
     * followed must not leave it pointing at freed memory. */
    tether__flush_cancel(loop, &c->flush);
    tether__conn_rpart_free(c);
    tether__mem_conn_gone(c);
    if (c->flags & TETHER__CF_ACCEPTED) {
        struct tether__conn_cfg *cfg = c->cfg;
        cfg->accepted--; /* counted against tether_listen_opts::max_conns */
        if (cfg->lstats != NULL) {
            atomic_fetch_sub_explicit(&cfg->lstats->active, 1, memory_order_relaxed);
        }
        if (cfg->shutdown != NULL) {
            tether__shutdown_conn_gone(cfg);
        }
    }
    if (c->ex != NULL) {
        conn_free_extra_last(c);
    }
    if (c->err_owned) {
        free((char *)c->err);
    }
    size_t tail = tether__conn_tail(c->cfg);
    tether__conn_cfg_unref(c->cfg); /* (with the URL: cfg->dial_url) */
    tether__conn_block_drop(loop->mem, c, tail);
}
