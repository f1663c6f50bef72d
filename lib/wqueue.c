/* SPDX-License-Identifier: MIT */
/* The output queue of a connection and the write path: segments (copies
 * of small messages, references to zero-copy buffers; their per-loop
 * cache and reference records are wq_seg.c's), send(), and flushing the
 * queue to the transport.
 *
 * send() appends to a chain of segments; small messages share a segment,
 * large ones, and a plain connection's first message, are written straight
 * from the caller's memory when the queue is empty. The queue is flushed
 * with one writev when the dispatch that sent it ends (or before the loop
 * polls, for sends made outside a dispatch of this connection), so a burst
 * of sends costs one system call. */
#include "conn_core.h"
#include "conn_ws.h"
#include "delivery.h"
#include "wq_seg.h"

#include <stdlib.h>
#include <string.h>

/* Output tuning. */
#define DIRECT_MIN (16u * 1024u) /* messages written straight from the caller */
#define IOV_BATCH 64

/* ---- output queue ------------------------------------------------------ */

void tether__wq_append_mark(tether_conn *c, struct tether__wseg *s)
{
    tether__wq_link(c, s);
}

static struct tether__wseg *wq_new_copy(tether_conn *c, size_t need)
{
    size_t cap;
    struct tether__wseg *s = NULL;
    if (c->wq_head == NULL && need <= SEG_SMALL_CAP) {
        cap = SEG_SMALL_CAP;
        if (c->h.loop->segs != NULL) {
            s = bin_pop(&c->h.loop->segs->small);
        }
    } else if (need <= SEG_LARGE_CAP) {
        cap = SEG_LARGE_CAP;
        if (c->h.loop->segs != NULL) {
            s = bin_pop(&c->h.loop->segs->large);
        }
    } else {
        cap = need;
    }
    if (s == NULL) {
        s = malloc(sizeof *s + cap);
        if (s == NULL) {
            return NULL;
        }
    }
    s->ptr = s->data;
    s->len = 0;
    s->cap = cap;
    s->free_cb = NULL; /* (free_data and free_ud are only read with a free_cb) */
    tether__wq_link(c, s);
    return s;
}

/* Appends pieces as copies: what fits goes into the tail segment, the rest
 * into one new segment. All or nothing on allocation failure. */
int tether__wq_append_copy(tether_conn *c, const struct iovec *iov, int n, size_t total)
{
    if (TETHER__UNLIKELY(tether__conn_ws(c) != NULL) && tether__ws_open(c)) {
        return tether__ws_queue_ctrl(c, iov, n, total); /* a control frame (conn_ws.c) */
    }
    struct tether__wseg *tail = c->wq_tail;
    size_t room = tether__wq_tail_room(c);
    struct tether__wseg *fresh = NULL;
    if (room < total) {
        fresh = wq_new_copy(c, total - room);
        if (fresh == NULL) {
            return TETHER_ENOMEM;
        }
    }
    struct tether__wseg *s = room > 0 ? tail : fresh;
    for (int i = 0; i < n; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t left = iov[i].iov_len;
        while (left > 0) {
            size_t r = tether__wseg_room(s);
            if (r == 0) {
                s = fresh;
                r = tether__wseg_room(s);
            }
            size_t k = left < r ? left : r;
            memcpy((uint8_t *)s->ptr + s->len, p, k);
            s->len += k;
            p += k;
            left -= k;
        }
    }
    tether__conn_queued_add(c, total);
    return TETHER_OK;
}

uint8_t *tether__wq_reserve_slow(tether_conn *c, size_t need)
{
    struct tether__wseg *t = c->wq_tail;
    if (t == NULL || tether__wq_tail_room(c) < need) {
        t = wq_new_copy(c, need);
        if (t == NULL) {
            return NULL;
        }
    }
    return (uint8_t *)t->ptr + t->len;
}

/* Drops n written bytes from the head of the queue, including empty
 * segments (zero-copy buffers already sent, waiting to be released). */
static void wq_consume_slow(tether_conn *c, size_t n)
{
    tether__conn_queued_sub(c, n);
    while (c->wq_head != NULL && c->wq_head->len <= n) {
        struct tether__wseg *s = c->wq_head;
        n -= s->len;
        c->wq_head = s->next;
        if (c->wq_head == NULL) {
            c->wq_tail = NULL;
        }
        if (s->free_cb != NULL) {
            /* Releasing a zero-copy buffer calls into the application. This
             * runs from loop dispatch, or inside send() only for buffers of
             * earlier messages, whose bytes are with the kernel by now. A
             * completion marker (read before the call, which takes it)
             * belongs to completion.c. */
            bool mark = s->free_cb == tether__done_written;
            s->free_cb(s->free_data, s->free_ud);
            if (mark) {
                continue;
            }
        }
        seg_release(c->h.loop->segs, s);
    }
    if (n > 0) {
        c->wq_head->ptr += n;
        c->wq_head->len -= n;
    }
}

/* The same; inline for the common case of a queue that was one copy
 * segment, all written (a reply, or a batch of small messages). */
static inline void wq_consume(tether_conn *c, size_t n)
{
    struct tether__wseg *s = c->wq_head;
    if (TETHER__LIKELY(s == c->wq_tail && s->len == n && s->free_cb == NULL)) {
        c->wq_head = c->wq_tail = NULL;
        tether__conn_queued_sub(c, n);
        seg_release(c->h.loop->segs, s);
        return;
    }
    wq_consume_slow(c, n);
}

/* ---- writing ----------------------------------------------------------- */

/* After a flush's writes: progress is whether any byte was written. The
 * write timeout, observers, on_drain, the shutdown of a closing
 * connection and the socket's interest follow the queue. */
static void flush_finish(tether_conn *c, bool progress)
{
    if (progress && (c->hooks & TETHER__CH_LIVE)) {
        c->ex->live->wstall = c->ex->live->last_wprog = tether__loop_time(c->h.loop);
    }
    if (progress && TETHER__UNLIKELY(c->hooks & TETHER__CH_WNOTIFY)) {
        c->ex->wnotify(c);
    }
    if (progress && TETHER__UNLIKELY(c->hooks & TETHER__CH_REF)) {
        tether__conn_ref_wrote(c);
    }
    if (c->wq_head == NULL) {
        c->flags &= (uint16_t)~TETHER__CF_WBLOCKED;
    }
    if (c->flags & TETHER__CF_QSTART_DUE) {
        if (TETHER__LIKELY(c->wq_head == NULL && !(c->hooks & TETHER__CH_LIVE))) {
            c->flags &= (uint16_t)~TETHER__CF_QSTART_DUE; /* all written */
        } else if (c->wq_head == NULL) {
            /* (Its timer, armed from here, frees a lazy state.) */
            c->flags &= (uint16_t)~TETHER__CF_QSTART_DUE;
            tether__live_queue_started(c);
        } else {
            tether__live_qstart_due(c);
        }
    }
    if ((c->flags & TETHER__CF_WANT_DRAIN) && c->queued <= c->cfg->o.send_lwm) {
        c->flags &= (uint16_t)~TETHER__CF_WANT_DRAIN;
        c->flags |= TETHER__CF_DRAIN_DUE;
    }
    if (c->state == TETHER__CS_CLOSING && c->wq_head == NULL) {
        tether__conn_begin_shutdown(c);
        return;
    }
    if (TETHER__LIKELY(c->state == TETHER__CS_READY && c->tr->ops->plain && c->io.registered &&
                       c->io.events == tether__conn_ready_events(c))) {
        return; /* the interest is right already (tether__conn_update_io()) */
    }
    tether__conn_update_io(c);
}

/* The general flush: any queue, any transport, READY or CLOSING; writes
 * at most limit bytes of the queue (what the socket takes). */
static void flush_queue(tether_conn *c, size_t limit)
{
    if (c->tr == NULL || (c->state != TETHER__CS_READY && c->state != TETHER__CS_CLOSING)) {
        return;
    }
    bool progress = false;
    while (c->wq_head != NULL && limit > 0) {
        if (c->wq_head->len == 0) {
            wq_consume(c, 0);
            continue;
        }
        struct iovec iov[IOV_BATCH];
        int n = 0;
        size_t total = 0;
        for (struct tether__wseg *s = c->wq_head; s != NULL && n < IOV_BATCH && total < limit;
             s = s->next) {
            iov[n].iov_base = (void *)s->ptr;
            iov[n].iov_len = TETHER__MIN(s->len, limit - total);
            total += iov[n].iov_len;
            n++;
        }
        limit -= total;
        size_t w = 0;
        int rv = tether__tr_writev(c->tr, iov, n, &w);
        if (rv == TETHER_EAGAIN) {
            c->flags |= TETHER__CF_WBLOCKED;
            break;
        }
        if (rv != TETHER_OK) {
            tether__conn_fail_io(c, rv, "write");
            return;
        }
        wq_consume(c, w);
        c->bytes_out += w;
        progress = true;
        if (w < total) {
            /* A short write means the socket buffer is full: asking again
             * would only return EAGAIN. */
            c->flags |= TETHER__CF_WBLOCKED;
            break;
        }
    }
    flush_finish(c, progress);
}

/* The send() of the whole queue in one piece (below) returned n, not all
 * of it: what it took is consumed and the rest waits for writability, as
 * the general flush would leave it; a failure is the transport's, as from
 * tether__tr_writev(). */
__attribute__((noinline)) static void flush_one_short(tether_conn *c, ssize_t n)
{
    int rv = TETHER_OK;
    size_t w = (size_t)n;
    if (n < 0) {
        struct tether__wseg *s = c->wq_head;
        struct iovec iov = {(void *)s->ptr, s->len};
        rv = tether__plain_io_failed(c->tr, &iov, 1, &w, true); /* (retries on EINTR) */
        if (rv == TETHER_OK && w == s->len) {
            wq_consume(c, w);
            c->bytes_out += w;
            flush_finish(c, true);
            return;
        }
    }
    if (rv == TETHER_EAGAIN) {
        c->flags |= TETHER__CF_WBLOCKED;
        flush_finish(c, false);
        return;
    }
    if (rv != TETHER_OK) {
        tether__conn_fail_io(c, rv, "write");
        return;
    }
    wq_consume(c, w);
    c->bytes_out += w;
    c->flags |= TETHER__CF_WBLOCKED;
    flush_finish(c, true);
}

void tether__conn_flush(tether_conn *c)
{
    struct tether__wseg *s = c->wq_head;
    /* The common case: one copy segment (a reply, or a burst of small
     * messages) on an established plain socket that is not full, with
     * nothing watching the writes (liveness, observers, on_drain): one
     * send() and the segment back to the cache, none of the general
     * flush's iovecs and checks. The socket's interest cannot have
     * changed unless the callbacks paused the connection. */
    if (TETHER__LIKELY(s != NULL && s == c->wq_tail && s->len != 0 && s->free_cb == NULL &&
                       c->state == TETHER__CS_READY &&
                       !(c->flags & (TETHER__CF_WBLOCKED | TETHER__CF_WANT_DRAIN)) &&
                       !(c->hooks & (TETHER__CH_LIVE | TETHER__CH_WNOTIFY | TETHER__CH_REF)) &&
                       c->tr->ops->plain)) {
        size_t len = s->len;
        /* (tether__plain_writev() for one piece, its iovec built only
         * when the call fails) */
        ssize_t n = send(c->tr->fd, s->ptr, len, MSG_NOSIGNAL);
        if (TETHER__UNLIKELY((size_t)n != len)) {
            flush_one_short(c, n);
            return;
        }
        c->wq_head = c->wq_tail = NULL;
        if (TETHER__LIKELY(tether__conn_qlag(c) == len)) {
            c->queued -= len; /* none of it was counted: nothing to uncount */
        } else {
            tether__conn_queued_sub(c, len);
        }
        seg_release(c->h.loop->segs, s);
        c->bytes_out += len;
        /* (Lazy liveness: the queue it started is all written.) */
        c->flags &= (uint16_t)~TETHER__CF_QSTART_DUE;
        if (TETHER__UNLIKELY(!c->io.registered || c->io.events != tether__conn_ready_events(c))) {
            tether__conn_update_io(c);
        }
        return;
    }
    flush_queue(c, SIZE_MAX);
}

void tether__conn_flush_batch(tether_conn *c)
{
    /* Whole batches: a large message behind a few queued bytes still goes
     * in one write. */
    flush_queue(c, c->queued - c->queued % TETHER__FLUSH_BATCH);
}

/* Fires on_drain if due; only called from loop dispatch. */
static void conn_fire_drain(tether_conn *c)
{
    if ((c->flags & TETHER__CF_DRAIN_DUE) && c->state == TETHER__CS_READY) {
        c->flags &= (uint16_t)~TETHER__CF_DRAIN_DUE;
        if (c->cfg->o.on_drain != NULL) {
            c->cfg->o.on_drain(c, c->userdata);
        }
    }
}

/* End of a dispatch to this connection: send what the callbacks queued. */
void tether__conn_dispatch_end(tether_conn *c)
{
    if (c->wq_head != NULL && !(c->flags & TETHER__CF_WBLOCKED)) {
        tether__conn_flush(c);
    }
    conn_fire_drain(c);
    /* on_drain may have queued more. */
    if (c->wq_head != NULL && !(c->flags & TETHER__CF_WBLOCKED)) {
        tether__conn_flush(c);
    }
    if (TETHER__UNLIKELY(c->flags & TETHER__CF_DRAIN_DUE) && c->state == TETHER__CS_READY) {
        /* on_drain was refused (TETHER_EAGAIN) and that flush wrote the
         * queue down to send_lwm again: no event of this connection may
         * follow (all is written), so fire on_drain from the loop. */
        tether__flush_queue(c->h.loop, &c->flush);
    }
}

void tether__conn_flush_cb(struct tether__flush *f)
{
    tether_conn *c = tether__container_of(f, tether_conn, flush);
    tether__conn_dispatch_end(c);
}

/* Whether a message may be queued now: 0, or the error send() returns. */
static inline int conn_send_check(tether_conn *c, const void *data, size_t len)
{
    if (c == NULL || (data == NULL && len > 0)) {
        return TETHER_EINVAL;
    }
    if (c->state > TETHER__CS_READY || (c->flags & (TETHER__CF_CLOSE_REQ | TETHER__CF_EOF)) ||
        (c->drain_st & TETHER__DR_SENT_DONE)) {
        /* (Draining: our last message went out before GOAWAY "done".) */
        return TETHER_ECLOSED;
    }
    const struct tether__conn_cfg *cfg = c->cfg;
    if (len > cfg->o.max_msg) {
        return TETHER_EMSGSIZE;
    }
    if (c->queued >= cfg->o.send_hwm) {
        c->flags |= TETHER__CF_WANT_DRAIN;
        return TETHER_EAGAIN;
    }
    if (TETHER__UNLIKELY(tether__conn_mem_over(c)) && tether__mem_heavy(c, c->queued) &&
        tether__mem_block(c, TETHER__MF_REFUSED)) {
        /* The loop's memory budget is spent and this connection holds
         * more than its share: on_drain runs once usage is back down. */
        return TETHER_EAGAIN;
    }
    return TETHER_OK;
}

/* A fresh copy segment for an empty queue: the loop's cached small one
 * when the message fits it (wq_new_copy() in short), else wq_new_copy(). */
static inline struct tether__wseg *wq_new_first(tether_conn *c, size_t need)
{
    struct tether__seg_cache *sc = c->h.loop->segs;
    struct tether__wseg *s;
    if (TETHER__LIKELY(need <= SEG_SMALL_CAP && sc != NULL && (s = bin_pop(&sc->small)) != NULL)) {
        s->next = NULL;
        s->ptr = s->data;
        s->len = 0;
        s->cap = SEG_SMALL_CAP;
        s->free_cb = NULL;
        c->wq_head = c->wq_tail = s;
        if (c->cfg->live) {
            if (c->state == TETHER__CS_READY) {
                c->flags |= TETHER__CF_QSTART_DUE; /* as tether__wq_link() */
            } else {
                tether__live_queue_started(c);
            }
        }
        return s;
    }
    return wq_new_copy(c, need);
}

/* After a message was written from the caller's memory (rv and w from
 * the write): counts it and queues what the socket did not take (header
 * remainder, payload remainder, trailer), or fails the connection. */
static int direct_rest(tether_conn *c, int rv, size_t w, const uint8_t *hdr, size_t hl,
                       const uint8_t *data, size_t len, const uint8_t *trl, size_t tl, bool zc,
                       tether_free_cb fcb, void *fud)
{
    size_t total = hl + len + tl;
    c->msgs_out++;
    if (rv != TETHER_OK && rv != TETHER_EAGAIN) {
        /* The connection is broken: report it from the loop, as the
         * callback contract asks, and keep the caller's buffer. */
        tether__conn_fail_io(c, rv, "write");
        return TETHER_OK;
    }
    tether__conn_direct_wrote(c, w);
    if (w == total) {
        if (zc && fcb != NULL) {
            /* Sent already; the buffer is released from the loop. */
            int r2 = tether__wq_append_ref(c, data + len, 0, fcb, (void *)data, fud);
            if (r2 != TETHER_OK) {
                return r2;
            }
            tether__flush_queue(c->h.loop, &c->flush);
        }
        return TETHER_OK;
    }
    c->flags |= TETHER__CF_WBLOCKED;
    /* Queue the rest: header remainder, payload remainder, trailer. A
     * zero-copy payload is queued by reference even when the header's
     * remainder could not be (the connection then fails, and releasing
     * the queue releases the buffer); its record was reserved. */
    int r3 = TETHER_OK;
    size_t skip = w;
    if (skip < hl) {
        struct iovec h = {(void *)(hdr + skip), hl - skip};
        r3 = tether__wq_append_copy(c, &h, 1, hl - skip);
        skip = 0;
    } else {
        skip -= hl;
    }
    if (skip < len) {
        int rp;
        if (zc) {
            rp = tether__wq_append_ref(c, data + skip, len - skip, fcb, (void *)data, fud);
        } else {
            struct iovec p = {(void *)(data + skip), len - skip};
            rp = r3 == TETHER_OK ? tether__wq_append_copy(c, &p, 1, len - skip) : r3;
        }
        r3 = r3 != TETHER_OK ? r3 : rp;
        skip = 0;
    } else {
        skip -= len;
        if (zc && fcb != NULL) {
            int rp = tether__wq_append_ref(c, data + len, 0, fcb, (void *)data, fud);
            r3 = r3 != TETHER_OK ? r3 : rp;
        }
    }
    if (r3 == TETHER_OK && tl > skip) {
        struct iovec t = {(void *)(trl + skip), tl - skip};
        r3 = tether__wq_append_copy(c, &t, 1, tl - skip);
    }
    return tether__conn_direct_queued(c, r3);
}

/* Queues a message (send() and send_zc() once conn_send_check() passed). */
static int conn_send_queue(tether_conn *c, const uint8_t *data, size_t len, bool zc,
                           tether_free_cb fcb, void *fud)
{
    const struct tether__conn_cfg *cfg = c->cfg;
    uint8_t hdr[TETHER_FRAME_HDR_MAX];
    uint8_t trl[TETHER_FRAME_TRAILER_MAX];
    size_t hl = 4;
    size_t tl = 0;
    if (cfg->fast_len32) {
        tether__put_be32(hdr, (uint32_t)len);
    } else {
        int rv = cfg->framer->encode(cfg->framer, data, len, hdr, &hl, trl, &tl);
        if (rv != TETHER_OK) {
            return rv;
        }
    }
    size_t total = hl + len + tl;
    bool can_write = c->state == TETHER__CS_READY && !(c->flags & TETHER__CF_WBLOCKED);

    if (len >= DIRECT_MIN && can_write && c->wq_head == NULL) {
        /* A large message with nothing ahead of it: write it from the
         * caller's memory and queue only what the socket did not take. */
        struct iovec iov[3] = {{hdr, hl}, {(void *)data, len}, {trl, tl}};
        size_t w = 0;
        int rv = tether__tr_writev(c->tr, iov, tl > 0 ? 3 : 2, &w);
        return direct_rest(c, rv, w, hdr, hl, data, len, trl, tl, zc, fcb, fud);
    }

    int rv;
    if (zc) {
        struct iovec h = {hdr, hl};
        rv = tether__wq_append_copy(c, &h, 1, hl);
        if (rv != TETHER_OK) {
            return rv; /* nothing of it queued: the buffer stays the caller's */
        }
        rv = tether__wq_append_ref(c, data, len, fcb, (void *)data, fud);
        if (rv == TETHER_OK && tl > 0) {
            struct iovec t = {trl, tl};
            rv = tether__wq_append_copy(c, &t, 1, tl);
        }
        if (rv != TETHER_OK) {
            /* A header without its payload would corrupt the stream. */
            tether__conn_fail(c, TETHER_ENOMEM, "out of memory queueing a message");
            return TETHER_OK;
        }
    } else {
        struct iovec iov[3] = {{hdr, hl}, {(void *)data, len}, {trl, tl}};
        rv = tether__wq_append_copy(c, iov, tl > 0 ? 3 : 2, total);
        if (rv != TETHER_OK) {
            return rv;
        }
    }
    c->msgs_out++;
    tether__conn_after_queue(c);
    return TETHER_OK;
}

/* tether_conn_send() on a WebSocket connection and on any other: two
 * functions, so that neither pays for the other's registers, and the
 * choice between them before either saves any. */
static __attribute__((noinline)) int conn_send_ws(tether_conn *c, const void *data, size_t len)
{
    int rv = conn_send_check(c, data, len);
    if (rv != TETHER_OK) {
        return rv;
    }
    if (tether__ws_open(c)) {
        return tether__ws_send(c, data, len, false, NULL, NULL); /* one frame a message */
    }
    return conn_send_queue(c, data, len, false, NULL, NULL);
}

static int conn_send_plain(tether_conn *c, const void *data, size_t len);

/* tether_conn_send() of the connection's first message with nothing
 * queued (a client's request from on_connect, a server's first reply,
 * typically): with every check of conn_send_plain(), on a plain socket
 * that can take it, in the default framing and below DIRECT_MIN, nothing
 * went before it to batch it with, so it is written from the caller's
 * memory, as a large message is, and only what the socket does not take
 * is queued. Any other case goes to conn_send_plain(), whose checks then
 * pass again. */
static __attribute__((noinline)) int conn_send_first(tether_conn *c, const void *data, size_t len)
{
    /* The tests of conn_send_check() that a direct write passes, and its
     * own, at once: anything else (an error, a full queue, the memory
     * budget spent) is conn_send_plain()'s, which tests again. */
    const struct tether__conn_cfg *cfg = c->cfg;
    if (TETHER__UNLIKELY(
            c->state != TETHER__CS_READY ||
            (c->flags & (TETHER__CF_CLOSE_REQ | TETHER__CF_EOF | TETHER__CF_WBLOCKED)) ||
            (c->drain_st & TETHER__DR_SENT_DONE) || (data == NULL && len > 0) || !cfg->fast_len32 ||
            len >= DIRECT_MIN || len > cfg->o.max_msg || c->queued >= cfg->o.send_hwm ||
            tether__conn_mem_over(c) || !c->tr->ops->plain)) {
        return conn_send_plain(c, data, len);
    }
    uint8_t hdr[4];
    tether__put_be32(hdr, (uint32_t)len);
    struct iovec iov[2] = {{hdr, 4}, {(void *)data, len}};
    size_t w = 0;
    int rv = tether__plain_writev(c->tr, iov, len > 0 ? 2 : 1, &w);
    if (TETHER__LIKELY(rv == TETHER_OK && w == 4 + len && !(c->hooks & TETHER__CH_LIVE))) {
        c->msgs_out++;
        c->bytes_out += w;
        return TETHER_OK;
    }
    return direct_rest(c, rv, w, hdr, 4, data, len, NULL, 0, false, NULL, NULL);
}

/* tether_conn_send() on any other connection, every case: the checks
 * (conn_send_check()), then a small message in the default framing
 * copied into the tail segment or a fresh one, else conn_send_queue(). */
static __attribute__((noinline)) int conn_send_plain(tether_conn *c, const void *data, size_t len)
{
    int rv = conn_send_check(c, data, len);
    if (rv != TETHER_OK) {
        return rv;
    }
    if (TETHER__LIKELY(c->cfg->fast_len32 && len < DIRECT_MIN)) {
        /* The common case: a small message in the default framing that fits
         * the tail segment (or starts an empty queue: a reply in a
         * request/response exchange). One header store and one copy, no
         * iovecs. */
        struct tether__wseg *t = c->wq_tail;
        bool fits;
        if (t == NULL) {
            /* (A first message came through conn_send_first().) */
            t = wq_new_first(c, 4 + len);
            if (t == NULL) {
                return TETHER_ENOMEM;
            }
            /* A fresh copy segment holds at least what was asked, unless
             * linking it failed the connection (liveness out of memory),
             * which released the queue. */
            fits = c->wq_tail == t;
        } else {
            fits = tether__wq_tail_room(c) >= 4 + len;
        }
        if (fits) {
            uint8_t *p = (uint8_t *)t->ptr + t->len;
            tether__put_be32(p, (uint32_t)len);
            if (len > 0) {
                memcpy(p + 4, data, len);
            }
            t->len += 4 + len;
            c->queued += 4 + len; /* the budget catches up at the next write */
            c->msgs_out++;
            tether__conn_after_queue(c);
            return TETHER_OK;
        }
    }
    return conn_send_queue(c, data, len, false, NULL, NULL);
}

/* The rest of tether_conn_send()'s fast path once a message is queued:
 * write or have the queue flushed (tether__conn_after_queue()). */
static __attribute__((noinline)) int conn_send_after(tether_conn *c)
{
    tether__conn_after_queue(c);
    return TETHER_OK;
}

int tether_conn_send(tether_conn *c, const void *data, size_t len)
{
    /* The common case inline, with no call on its way: a message of up to
     * 64 bytes in the default framing that every check of
     * conn_send_check() lets through and that fits the tail copy segment
     * (a stream of small messages). Anything else goes, with nothing
     * done yet, to the function for its case, which checks everything
     * again; an empty queue (a reply, one message at a time) is told
     * first. */
    if (TETHER__UNLIKELY(c == NULL)) {
        return conn_send_plain(c, data, len); /* (EINVAL) */
    }
    if (TETHER__UNLIKELY(tether__conn_ws(c) != NULL)) {
        return conn_send_ws(c, data, len);
    }
    struct tether__wseg *t = c->wq_tail;
    if (t == NULL) {
        return c->msgs_out == 0 ? conn_send_first(c, data, len) : conn_send_plain(c, data, len);
    }
    const struct tether__conn_cfg *cfg = c->cfg;
    if (len > 64 || data == NULL || c->state > TETHER__CS_READY ||
        (c->flags & (TETHER__CF_CLOSE_REQ | TETHER__CF_EOF)) ||
        (c->drain_st & TETHER__DR_SENT_DONE) || !cfg->fast_len32 || len > cfg->o.max_msg ||
        c->queued >= cfg->o.send_hwm || tether__conn_mem_over(c) || t->cap == 0 ||
        tether__wseg_room(t) < 4 + len) {
        return conn_send_plain(c, data, len);
    }
    uint8_t *p = (uint8_t *)t->ptr + t->len;
    tether__put_be32(p, (uint32_t)len);
    tether__copy_small(p + 4, data, len);
    t->len += 4 + len;
    c->queued += 4 + len; /* the budget catches up at the next write */
    c->msgs_out++;
    if (c->queued >= TETHER__FLUSH_BATCH || (c->dispatching == 0 && c->flush.next == NULL)) {
        return conn_send_after(c);
    }
    return TETHER_OK;
}

int tether_conn_send_zc(tether_conn *c, void *data, size_t len, tether_free_cb free_cb,
                        void *free_ud)
{
    int rv = conn_send_check(c, data, len);
    if (rv != TETHER_OK) {
        return rv;
    }
    /* Its reference record, before anything is written or queued: once
     * part of the message is out, it can no longer fail with the buffer
     * still the caller's, and once it is sent whole, the record is what
     * releases the buffer (from the loop). */
    if (TETHER__UNLIKELY(tether__wq_ref_reserve(c) != TETHER_OK)) {
        return TETHER_ENOMEM;
    }
    if (TETHER__UNLIKELY(tether__conn_ws(c) != NULL) && tether__ws_open(c)) {
        return tether__ws_send(c, data, len, true, free_cb, free_ud); /* conn_ws.h */
    }
    return conn_send_queue(c, data, len, true, free_cb, free_ud);
}
