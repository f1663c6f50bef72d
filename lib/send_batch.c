/* SPDX-License-Identifier: MIT */
/* tether_conn_send_batch(): many whole messages in one call.
 *
 * The result is by definition that of calling tether_conn_send() for each
 * message in turn and stopping at the first that is not accepted; what the
 * call saves is the per-message overhead of that API (the call itself, the
 * checks of the connection, re-reading the queue's tail). Small messages in
 * the plain len32 framing are copied straight into the tail segment of the
 * queue (wqueue.c), with the connection's checks made once per run of
 * messages and the queue's counters updated once; so are small messages
 * on an open WebSocket connection, each encoded there as the complete
 * frame tether__ws_send() would queue (conn_ws.h). Everything else (other
 * framings, a WebSocket connection before its upgrade or after its close
 * frame, large messages, an empty queue or a full tail segment, a memory
 * budget past its mark, a closing connection, any message that is
 * refused) goes through tether_conn_send() itself, one message at a time,
 * so that framing, errors and backpressure cannot differ from it. */
#include "conn_core.h"
#include "conn_ws.h"

#include <string.h>

/* Messages from this size go through tether_conn_send(), which writes them
 * straight from the caller's memory when the queue is empty (wqueue.c's
 * DIRECT_MIN; below it, both copy into the queue). */
#define BATCH_COPY_MAX (16u * 1024u)

/* The room a run of copies may fill: the tail segment's free space, up
 * to the point where the queue reaches the run's limit. 0 when the run
 * must go to tether_conn_send() (the connection's own checks, those of
 * conn_send_check() in wqueue.c: while messages are only copied, nothing
 * can change their outcome; or no copy segment to append to). *at is
 * the queue size from which tether__conn_after_queue_at() writes. */
static size_t batch_room(tether_conn *c, size_t *at)
{
    if (c->state > TETHER__CS_READY || (c->flags & (TETHER__CF_CLOSE_REQ | TETHER__CF_EOF)) ||
        (c->drain_st & TETHER__DR_SENT_DONE) || TETHER__UNLIKELY(tether__conn_mem_over(c))) {
        return 0;
    }
    const size_t room = tether__wq_tail_room(c);
    if (room == 0) {
        return 0; /* no copy segment to append to: tether_conn_send() makes one */
    }
    /* A message is accepted while the queue is below send_hwm; from `at`
     * on, tether__conn_after_queue_at() writes the queue (when it can),
     * so the run stops there to let it. A batch is written in larger
     * pieces than single sends (conn_core.h), where send_hwm leaves room
     * for them: below it, a socket that takes everything never refuses a
     * message, as with a loop of tether_conn_send(). */
    size_t lim = c->cfg->o.send_hwm;
    *at = lim > TETHER__FLUSH_BULK ? TETHER__FLUSH_BULK : TETHER__FLUSH_BATCH;
    if (c->state == TETHER__CS_READY && !(c->flags & TETHER__CF_WBLOCKED) && lim > *at) {
        lim = *at;
    }
    if (c->queued >= lim) {
        return 0;
    }
    return lim - c->queued < room ? lim - c->queued : room;
}

/* On x86-64, batch_copy() moves the 32-byte halves of a message in one
 * AVX2 register each where the CPU has them (asked once per run of
 * messages), in two SSE2 registers elsewhere: memcpy() of 32 bytes is two
 * 16-byte moves even in code compiled for AVX2. */
#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target)
#define BATCH_AVX2 1
#endif
#endif

typedef uint8_t batch_v32 __attribute__((vector_size(32)));

/* Copies 32 bytes, through one 32-byte vector when wide. */
static inline void move32(uint8_t *d, const uint8_t *s, bool wide)
{
    if (wide) {
        batch_v32 v;
        memcpy(&v, s, 32);
        memcpy(d, &v, 32);
    } else {
        memcpy(d, s, 32);
    }
}

/* Copies messages from the start of m into the tail segment while each one
 * would take tether_conn_send()'s small-message path there; returns how
 * many it took (0: send the first one with tether_conn_send()). It stops
 * before a message that needs any check to say more than "accepted":
 * tether_conn_send() then gives the answer for it. */
static inline __attribute__((always_inline)) size_t
batch_copy_run(tether_conn *c, const tether_batch_msg *m, size_t n, const bool wide)
{
    size_t at;
    const size_t left = batch_room(c, &at);
    if (left == 0) {
        return 0;
    }
    struct tether__wseg *t = c->wq_tail;
    const struct tether__conn_cfg *cfg = c->cfg;
    const size_t small = cfg->o.max_msg < BATCH_COPY_MAX ? cfg->o.max_msg : BATCH_COPY_MAX - 1;
    /* Only the write position moves, up to a limit that is the end of
     * the segment or the point where the queue reaches lim, whichever
     * comes first. A message that would cross the latter goes to
     * tether_conn_send() (which takes it, whole, and writes the batch), so
     * that one comparison per message covers both. */
    uint8_t *const p0 = (uint8_t *)t->ptr + t->len;
    const uint8_t *const end = p0 + left;
    uint8_t *p = p0;
    /* Messages of 33 to 64 bytes (a few fields; tether_bench's 64-byte
     * ones) are told with one comparison and copied as two overlapping
     * 32-byte moves; the other sizes pay that comparison on top of the
     * general case's. A stream of small messages is mostly of one size,
     * so the branch is predicted either way. (fast is 0 when small is
     * below 64: every message then takes the general case.) */
    const size_t fast = small >= 64 ? 32 : 0;
    const tether_batch_msg *mi = m;
    const tether_batch_msg *const me = m + n;
    while (mi != me) {
        if (TETHER__LIKELY(mi->len - 33 < fast)) {
            /* As many messages as surely fit if each is of that class
             * (68 bytes framed at most) need no room check: they are
             * copied in an inner loop until one is not of it. */
            const size_t sure = (size_t)(end - p) / (4 + 64);
            const tether_batch_msg *const se = (size_t)(me - mi) <= sure ? me : mi + sure;
            for (; mi != se; mi++) {
                const uint8_t *data = mi->data;
                const size_t len = mi->len;
                if (!TETHER__LIKELY(len - 33 < fast) || data == NULL) {
                    break;
                }
                tether__put_be32(p, (uint32_t)len);
                move32(p + 4, data, wide);
                p += 4 + len;
                move32(p - 32, data + len - 32, wide);
            }
            if (mi == me) {
                break;
            }
            /* (The next message takes the general case below at least
             * once: of another size, NULL, or past the sure ones.) */
        }
        /* The general case, with its room check, until a message of that
         * class comes again. (A NULL data goes to tether_conn_send():
         * EINVAL, or an empty message. len <= small keeps len + 4 from
         * wrapping.) */
        do {
            const uint8_t *data = mi->data;
            const size_t len = mi->len;
            if (len > small || len + 4 > (size_t)(end - p) || data == NULL) {
                goto done;
            }
            tether__put_be32(p, (uint32_t)len);
            if (len <= 64) {
                tether__copy_small(p + 4, data, len);
            } else {
                memcpy(p + 4, data, len);
            }
            p += 4 + len;
            mi++;
        } while (mi != me && !(mi->len - 33 < fast));
    }
done:;
    const size_t i = (size_t)(mi - m);
    if (i > 0) {
        const size_t used = (size_t)(p - p0);
        t->len += used;
        c->queued += used; /* the budget catches up at the next write (as wqueue.c's) */
        c->msgs_out += i;
        tether__conn_after_queue_at(c, at);
    }
    return i;
}

#ifdef BATCH_AVX2
__attribute__((target("avx2"))) static size_t batch_copy_avx2(tether_conn *c,
                                                              const tether_batch_msg *m, size_t n)
{
    return batch_copy_run(c, m, n, true);
}
#endif

static size_t batch_copy(tether_conn *c, const tether_batch_msg *m, size_t n)
{
#ifdef BATCH_AVX2
    /* (Runs that start with a message of another size stay clear of
     * AVX2: the calls to memcpy() there would each need a vzeroupper.) */
    if (n > 0 && m[0].len - 33 < 32 && __builtin_cpu_supports("avx2")) {
        return batch_copy_avx2(c, m, n);
    }
#endif
    return batch_copy_run(c, m, n, false);
}

/* batch_copy() for an open WebSocket connection: each message becomes
 * the frame tether__ws_send() (or, from 126 bytes, tether__ws_send_other())
 * would queue for it: FIN, binary or text as the connection sends now, the
 * 7-bit or 16-bit length, and on clients a fresh key from the loop's pool
 * (tether__ws_mask_key(), one key a message, drawn in the same order) and
 * the payload masked while copied. */
static size_t batch_copy_ws(tether_conn *c, struct ws_transport *ws, const tether_batch_msg *m,
                            size_t n)
{
    /* Before the upgrade the queue is len32 (translated on its way out);
     * after our close frame nothing is queued at all. */
    if (ws->phase != TETHER__WS_OPEN || ws->close_tx) {
        return 0;
    }
    size_t at;
    /* (What may still be written, counted down: fewer registers than an
     * end pointer, which the masking loop needs.) */
    size_t left = batch_room(c, &at);
    if (left == 0) {
        return 0;
    }
    struct tether__wseg *t = c->wq_tail;
    const struct tether__conn_cfg *cfg = c->cfg;
    /* (Below 64 KiB: a 16-bit length at most.) */
    const size_t small = cfg->o.max_msg < BATCH_COPY_MAX ? cfg->o.max_msg : BATCH_COPY_MAX - 1;
    const uint8_t b0 = (uint8_t)(0x80u | (ws->stext ? TETHER__WS_OP_TEXT : TETHER__WS_OP_BINARY));
    uint8_t *const p0 = (uint8_t *)t->ptr + t->len;
    uint8_t *p = p0;
    const tether_batch_msg *mi = m;
    const tether_batch_msg *const me = m + n;
    /* (Each message's header: 7-bit length up to small7, else 16-bit.) */
    const size_t small7 = small < 125 ? small : 125;
    if (ws->server) {
        for (; mi != me; mi++) {
            const uint8_t *data = mi->data;
            const size_t len = mi->len;
            size_t hl = 2;
            if (TETHER__UNLIKELY(len > small7)) {
                if (len > small) {
                    break;
                }
                hl = 4;
            }
            if (hl + len > left || data == NULL) {
                break;
            }
            p[0] = b0;
            if (hl == 2) {
                p[1] = (uint8_t)len;
            } else {
                p[1] = 126;
                p[2] = (uint8_t)(len >> 8);
                p[3] = (uint8_t)len;
            }
            if (len <= 64) {
                tether__copy_small(p + hl, data, len);
            } else {
                memcpy(p + hl, data, len);
            }
            p += hl + len;
            left -= hl + len;
        }
    } else {
        /* The pool's position stays in a register for the run; the
         * refill is tether__ws_mask_key()'s. */
        struct tether__ws_rnd *r = ws->rnd;
        size_t off = r->off;
        for (; mi != me; mi++) {
            const uint8_t *data = mi->data;
            const size_t len = mi->len;
            size_t hl = 6;
            if (TETHER__UNLIKELY(len > small7)) {
                if (len > small) {
                    break;
                }
                hl = 8;
            }
            if (hl + len > left || data == NULL) {
                break;
            }
            if (TETHER__UNLIKELY(off + 4 > TETHER__WS_RND_POOL)) {
                tether__ws_rnd_refill(r);
                off = r->off;
            }
            p[0] = b0;
            if (hl == 6) {
                p[1] = (uint8_t)(0x80u | len);
            } else {
                p[1] = 0x80u | 126u;
                p[2] = (uint8_t)(len >> 8);
                p[3] = (uint8_t)len;
            }
            uint8_t *key = p + hl - 4;
            memcpy(key, r->rnd + off, 4);
            off += 4;
            tether__ws_mask_small(p + hl, data, len, key);
            p += hl + len;
            left -= hl + len;
        }
        r->off = off;
    }
    const size_t i = (size_t)(mi - m);
    if (i > 0) {
        size_t used = (size_t)(p - p0);
        t->len += used;
        c->queued += used; /* the budget catches up at the next write (as wqueue.c's) */
        c->msgs_out += i;
        tether__conn_after_queue_at(c, at);
    }
    return i;
}

int tether_conn_send_batch(tether_conn *c, const tether_batch_msg *msgs, size_t n, size_t *out_sent)
{
    if (out_sent != NULL) {
        *out_sent = 0;
    }
    if (c == NULL || (msgs == NULL && n > 0)) {
        return TETHER_EINVAL;
    }
    size_t i = 0;
    int rv = TETHER_OK;
    while (i < n) {
        /* (Asked each time: a send that failed the connection may have
         * taken its WebSocket layer.) */
        struct ws_transport *ws = tether__conn_ws(c);
        if (ws != NULL || c->cfg->fast_len32) {
            i +=
                ws != NULL ? batch_copy_ws(c, ws, msgs + i, n - i) : batch_copy(c, msgs + i, n - i);
            if (i == n) {
                break;
            }
        }
        /* The message batch_copy() left (each run of it ends with one). */
        rv = tether_conn_send(c, msgs[i].data, msgs[i].len);
        if (rv != TETHER_OK) {
            break;
        }
        i++;
    }
    if (out_sent != NULL) {
        *out_sent = i;
    }
    return rv;
}
