/* SPDX-License-Identifier: MIT */
/* The read path of a connection: reading from the transport, splitting
 * the input into frames (the inlined len32 parser, or the configured
 * framer), telling control frames from messages, delivering messages,
 * keeping and growing the buffer of an incomplete frame, the peer's EOF,
 * and the discarding read of a connection that lingers after close.
 *
 * Every connection reads into the loop's shared buffer and frames are
 * delivered straight from it; only the incomplete tail of a read is copied
 * into a per-connection buffer (rpart). Idle connections therefore hold no
 * input buffer at all. The buffer grows with the bytes that arrive, never
 * with the size a header announces; once the header of a frame larger
 * than 64 KiB is in, the rest is read directly into place, and so is what
 * follows it while the socket has more. */
#include "ack.h"
#include "conn_core.h"
#include "conn_deliver.h"
#include "delivery.h"
#include "ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READ_ROUNDS 4 /* reads per readiness event, for fairness */

/* The read buffer shared by all connections of a loop: per-loop state
 * registered with the loop on the first read, freed with the loop. The
 * buffer comes first, so that it keeps malloc's alignment.
 *
 * The first read of a readiness event takes up to RBUF_FIRST, the next
 * ones (the socket filled the buffer: more is waiting) all of it. A
 * stream of small messages is then read in fewer system calls (thr tcp
 * 64 B: one read per 120 KiB with 128 KiB reads), while the start of a
 * large frame, which is copied out of the buffer into the frame's own
 * (conn_keep()) before the rest is read in place, still costs at most
 * 128 KiB of copying. 128 KiB more per loop, nothing per connection. */
#define TETHER__RBUF_SIZE (256u * 1024u)
#define RBUF_FIRST (128u * 1024u)

/* Frames larger than this are read straight into their own buffer
 * (conn_reads_in_place()), and a buffer kept from an earlier frame shrinks
 * to the next one when it is larger than RPART_KEEP_MAX: sizes of their
 * own, not the read buffer's. */
#define IN_PLACE_MIN (64u * 1024u)
#define RPART_KEEP_MAX (128u * 1024u)

struct read_buf {
    uint8_t data[TETHER__RBUF_SIZE];
    struct tether__loop_ext ext;
};

static const char read_buf_key; /* its address identifies the buffer */

static void read_buf_cleanup(tether_loop *loop, struct tether__loop_ext *ext)
{
    loop->rbuf = NULL;
    free(tether__container_of(ext, struct read_buf, ext));
}

/* Finds or makes the loop's read buffer, and keeps a pointer to it with
 * the loop (loop->rbuf, cleared when the buffer is freed with the
 * loop), so that reads need no lookup. */
__attribute__((noinline, cold)) static uint8_t *read_buf_new(tether_conn *c)
{
    tether_loop *loop = c->h.loop;
    struct tether__loop_ext *e = tether__loop_ext_find(loop, &read_buf_key);
    struct read_buf *b;
    if (e != NULL) {
        b = tether__container_of(e, struct read_buf, ext);
    } else {
        b = malloc(sizeof *b);
        if (b == NULL) {
            return NULL;
        }
        b->ext.key = &read_buf_key;
        b->ext.cleanup = read_buf_cleanup;
        tether__loop_ext_add(loop, &b->ext);
    }
    loop->rbuf = b->data;
    return b->data;
}

/* The loop's read buffer (NULL on allocation failure). */
static inline uint8_t *read_buf_get(tether_conn *c)
{
    uint8_t *b = c->h.loop->rbuf;
    if (TETHER__LIKELY(b != NULL)) {
        return b;
    }
    return read_buf_new(c);
}

static void conn_protocol_error(tether_conn *c, int rv, const tether_frame *f, const char *detail)
{
    if (rv == TETHER_EMSGSIZE) {
        if (c->cfg->o.framing == TETHER_FRAMING_LINE) {
            tether__conn_fail(c, rv, "peer sent a line longer than the limit of %zu bytes",
                              c->cfg->o.max_msg);
        } else {
            tether__conn_fail(c, rv, "peer announced a %zu-byte message; the limit is %zu",
                              f->payload_len, c->cfg->o.max_msg);
        }
    } else {
        tether__conn_fail(c, rv, "framing error (%s): %s", c->cfg->framer->name,
                          detail != NULL ? detail : "malformed frame");
    }
}

/* A plain client that dialled a TLS server hears a TLS alert record
 * (0x15 0x03 0x0X) or nothing at all: the error then suggests tls://.
 * "Nothing at all" only counts after a small first write: a TLS server
 * gives up after the first 5 bytes, while a plain server that closes
 * after a large message more likely refused the message. */
#define FIRST_BYTES_MAX (64u * 1024u)
static bool conn_plain_client_first_bytes(const tether_conn *c)
{
    return (c->flags & TETHER__CF_DIALED) && c->cfg->tls == NULL && tether__conn_url(c) != NULL &&
           tether__conn_msgs_in(c) == 0 && c->ctrl_in == 0 &&
           strncmp(tether__conn_url(c), "tcp://", 6) == 0;
}

static bool looks_like_tls_record(const uint8_t *p, size_t len)
{
    return len >= 3 && (p[0] == 0x15 || p[0] == 0x16) && p[1] == 0x03 && p[2] <= 0x04;
}

/* Fails with detail plus the tls:// suggestion when it applies. */
static void conn_fail_hint(tether_conn *c, int rv, const char *detail, bool literal,
                           const uint8_t *first, size_t len)
{
    if (conn_plain_client_first_bytes(c) &&
        ((first != NULL && looks_like_tls_record(first, len)) ||
         (first == NULL && c->bytes_in == 0 && c->bytes_out > 0 &&
          c->bytes_out <= FIRST_BYTES_MAX))) {
        if (first != NULL) {
            tether__conn_fail(c, rv, "%s; the reply looks like a TLS record: dial tls://%s", detail,
                              tether__conn_url(c) + 6);
        } else {
            tether__conn_fail(c, rv,
                              "%s before the server sent anything; if it speaks TLS, "
                              "dial tls://%s",
                              detail, tether__conn_url(c) + 6);
        }
    } else if (literal) {
        tether__conn_fail_const(c, rv, detail);
    } else {
        tether__conn_fail(c, rv, "%s", detail);
    }
}

void tether__conn_fail_reset(tether_conn *c, const char *what)
{
    char d[96];
    snprintf(d, sizeof d, "connection reset by peer during %s", what);
    conn_fail_hint(c, TETHER_ECONNRESET, d, false, NULL, 0);
}

/* Delivers the whole frames of buf from off on. Returns the bytes consumed
 * (off included); *known is set to the total size of the incomplete frame
 * that follows when its header is complete (0 when unknown), and *scan
 * is the framer's resume hint for it (in: for the frame at off). Stops
 * early when the connection stops accepting messages (paused, closing)
 * or fails. */
static size_t conn_parse_at(tether_conn *c, const uint8_t *buf, size_t len, size_t off,
                            size_t *known, size_t *scan)
{
    *known = 0;
    if (TETHER__UNLIKELY(tether__conn_ws(c) != NULL)) {
        /* WebSocket frames, unmasked in place (buf is lb or rpart). */
        return tether__ws_parse(c, (uint8_t *)buf, len, known);
    }
    if (c->cfg->fast_len32) {
        size_t max = c->cfg->o.max_msg;
        while (tether__conn_can_deliver(c)) {
            size_t avail = len - off;
            if (avail < 4) {
                break;
            }
            size_t plen = tether__get_be32(buf + off);
            if (TETHER__UNLIKELY(plen > max)) {
                /* An impossible length: a control frame, if the peer may
                 * send one, else a framing error. */
                size_t clen = tether__ctrl_frame_len(c, buf + off);
                if (clen == 0) {
                    if (off == 0 && looks_like_tls_record(buf, avail) &&
                        conn_plain_client_first_bytes(c)) {
                        char d[96];
                        snprintf(d, sizeof d, "peer announced a %zu-byte message", plen);
                        conn_fail_hint(c, TETHER_EMSGSIZE, d, false, buf, avail);
                        return off;
                    }
                    if (!tether__ctrl_violation(c, buf + off)) {
                        tether_frame f = {.hdr_len = 4, .payload_len = plen};
                        conn_protocol_error(c, TETHER_EMSGSIZE, &f, NULL);
                    }
                    return off;
                }
                if (avail < clen) {
                    *known = clen;
                    break;
                }
                if (!tether__ctrl_on_frame(c, buf + off, clen)) {
                    return off;
                }
                off += clen;
                continue;
            }
            if (avail - 4 < plen) {
                *known = 4 + plen;
                break;
            }
            tether__conn_deliver(c, buf + off + 4, plen);
            off += 4 + plen;
        }
        return off;
    }
    const tether_framer *fr = c->cfg->framer;
    while (tether__conn_can_deliver(c)) {
        tether_frame f = {0, 0, 0, 0};
        const char *detail = NULL;
        int rv = fr->decode(fr, buf + off, len - off, c->cfg->o.max_msg, scan, &f, &detail);
        if (rv == TETHER_EAGAIN) {
            break;
        }
        if (rv != TETHER_OK) {
            conn_protocol_error(c, rv, &f, detail);
            return off;
        }
        if (f.payload_len > c->cfg->o.max_msg) {
            conn_protocol_error(c, TETHER_EMSGSIZE, &f, NULL);
            return off;
        }
        size_t total = f.hdr_len + f.payload_len + f.trailer_len;
        if (len - off < total) {
            *known = total;
            break;
        }
        *scan = 0;
        if (f.control == 0) {
            tether__conn_deliver(c, buf + off + f.hdr_len, f.payload_len);
        }
        off += total;
    }
    return off;
}

static size_t conn_parse(tether_conn *c, const uint8_t *buf, size_t len, size_t *known,
                         size_t *scan)
{
    return conn_parse_at(c, buf, len, 0, known, scan);
}

/* conn_parse() inline, for the read loop: the plain len32 messages here,
 * anything else (a control frame, an impossible length, another framer)
 * from where it starts in conn_parse_at(). */
static inline __attribute__((always_inline)) size_t
conn_parse_fast(tether_conn *c, const uint8_t *buf, size_t len, size_t *known, size_t *scan)
{
    if (TETHER__UNLIKELY(!c->cfg->fast_len32 || tether__conn_ws(c) != NULL)) {
        return conn_parse_at(c, buf, len, 0, known, scan);
    }
    size_t off = 0;
    size_t max = c->cfg->o.max_msg;
    while (tether__conn_can_deliver(c)) {
        size_t avail = len - off;
        if (avail < 4) {
            break;
        }
        size_t plen = tether__get_be32(buf + off);
        if (TETHER__UNLIKELY(plen > max)) {
            return conn_parse_at(c, buf, len, off, known, scan);
        }
        if (avail - 4 < plen) {
            *known = 4 + plen;
            return off;
        }
        tether__conn_deliver(c, buf + off + 4, plen);
        off += 4 + plen;
    }
    *known = 0;
    return off;
}

/* ---- the input buffer (rpart: c->rb) -----------------------------------
 *
 * Its capacity follows what has arrived, never what a header announces: a
 * peer that sends a header claiming 16 MiB and nothing else costs a few
 * hundred bytes. It grows geometrically (at most twice the bytes it holds)
 * and never beyond the size of the frame in front (known) or, when that is
 * unknown (a line without its delimiter yet), beyond the largest frame
 * allowed. Every change of capacity goes through the loop's memory budget. */

void tether__conn_rpart_drop(tether_conn *c)
{
    tether__mem_sub(tether__conn_mem(c), &tether__conn_mem(c)->in_bytes, c->rb->cap);
    free(c->rb);
    c->rb = NULL;
}

/* The capacity of the input buffer (0 without one). */
static inline size_t rpart_cap(const tether_conn *c)
{
    return c->rb != NULL ? c->rb->cap : 0;
}

/* The largest capacity a frame of size known (0: unknown) can use. */
static size_t rpart_limit(const tether_conn *c, size_t known)
{
    if (known != 0) {
        return known;
    }
    return c->cfg->o.max_msg + TETHER_FRAME_HDR_MAX + TETHER_FRAME_TRAILER_MAX;
}

/* Sets the capacity to cap (>= what it holds), moving the contents; a new
 * buffer starts empty. */
static int rpart_resize(tether_conn *c, size_t cap)
{
    size_t old = rpart_cap(c);
    struct tether__rbuf *b = realloc(c->rb, sizeof *b + cap);
    if (b == NULL) {
        tether__conn_fail(c, TETHER_ENOMEM, "out of memory buffering %zu bytes of input", cap);
        return TETHER_ENOMEM;
    }
    if (c->rb == NULL) {
        b->len = 0;
        b->scan = 0;
        b->known = 0;
    }
    if (cap > old) {
        tether__mem_add(tether__conn_mem(c), &tether__conn_mem(c)->in_bytes, cap - old);
    } else {
        tether__mem_sub(tether__conn_mem(c), &tether__conn_mem(c)->in_bytes, old - cap);
    }
    b->cap = cap;
    c->rb = b;
    return TETHER_OK;
}

/* Makes room for need bytes in all for a frame of size known: doubles (at
 * least), within the limit unless need itself is above it. */
static int rpart_reserve(tether_conn *c, size_t need, size_t known)
{
    size_t have = rpart_cap(c);
    if (TETHER__LIKELY(need <= have)) {
        return TETHER_OK;
    }
    size_t cap = TETHER__MAX(TETHER__MAX(need, have * 2), (size_t)256);
    cap = TETHER__MIN(cap, TETHER__MAX(rpart_limit(c, known), need));
    return rpart_resize(c, cap);
}

/* Keeps the unconsumed tail of a read for later, reusing the buffer when it
 * is large enough. known is the full size of the incomplete frame when its
 * header has arrived, scan the framer's resume hint for it. */
static int conn_keep(tether_conn *c, const uint8_t *p, size_t n, size_t known, size_t scan)
{
    if (n == 0) {
        tether__conn_rpart_free(c); /* idle connections hold no input buffer */
        return TETHER_OK;
    }
    /* A buffer left from the previous frame is kept for the next one up to
     * that frame's size (a peer sending large messages back to back does
     * not regrow it each time), but no larger, and not at all while the
     * size is unknown: it is at most what this peer has just sent. */
    size_t fit = known != 0 ? TETHER__MAX(known, n) : TETHER__MAX(n * 2, (size_t)256);
    size_t have = rpart_cap(c);
    if (have > RPART_KEEP_MAX && have > fit) {
        if (rpart_resize(c, fit) != TETHER_OK) {
            return TETHER_ENOMEM;
        }
    } else if (rpart_reserve(c, n, known) != TETHER_OK) {
        return TETHER_ENOMEM;
    }
    struct tether__rbuf *b = c->rb;
    memcpy(b->data, p, n);
    b->len = n;
    b->known = known;
    b->scan = scan;
    return TETHER_OK;
}

/* Parses what rpart holds. keep: more input follows at once, so an emptied
 * buffer stays for it (conn_keep decides whether its size fits). */
static void rpart_parse(tether_conn *c, bool keep)
{
    size_t known;
    struct tether__rbuf *b = c->rb;
    /* (&b->scan is written only before a message is delivered: a callback
     * that frees the buffer stops the parse.) */
    size_t used = conn_parse(c, b->data, b->len, &known, &b->scan);
    if (c->state == TETHER__CS_DEAD || c->rb == NULL) {
        return;
    }
    b = c->rb;
    if (used == b->len) {
        if (keep) {
            b->len = 0;
            b->known = 0;
        } else {
            tether__conn_rpart_free(c);
        }
        return;
    }
    if (used > 0) {
        memmove(b->data, b->data + used, b->len - used);
        b->len -= used;
    }
    /* The buffer grows with what arrives (conn_read_rounds), not here. */
    b->known = known;
}

/* Parses what rpart holds (after a resume, or once a large frame is in). */
void tether__conn_parse_rpart(tether_conn *c)
{
    rpart_parse(c, false);
}

/* The peer closed inside a frame: fails naming what is missing. Out of
 * line: the common EOF, between frames, stays short. */
__attribute__((noinline, cold)) static void conn_on_eof_truncated(tether_conn *c)
{
    const struct tether__rbuf *b = c->rb;
    size_t known = tether__conn_ws(c) != NULL ? b->known : 0;
    if (c->cfg->fast_len32 && tether__conn_ws(c) == NULL && b->len >= 4) {
        known = tether__ctrl_frame_len(c, b->data);
        if (known == 0) {
            known = 4 + (size_t)tether__get_be32(b->data);
        }
    }
    char d[128];
    if (known > 0) {
        snprintf(d, sizeof d, "peer closed the connection after %zu of %zu bytes of a message",
                 b->len, known);
    } else {
        snprintf(d, sizeof d, "peer closed the connection inside a message (%zu bytes pending)",
                 b->len);
    }
    conn_fail_hint(c, TETHER_ETRUNCATED, d, false,
                   looks_like_tls_record(b->data, b->len) ? b->data : NULL, b->len);
}

static void conn_on_eof(tether_conn *c)
{
    if (c->rb != NULL && c->rb->len > 0) {
        conn_on_eof_truncated(c);
        return;
    }
    c->flags |= TETHER__CF_EOF;
    const char *wsd =
        tether__conn_ws(c) != NULL ? tether__ws_eof_detail(c) : NULL; /* its close code */
    if (c->queued == 0) {
        if (wsd == NULL && !(c->flags & TETHER__CF_DIALED)) {
            /* An accepted connection: no tls:// hint for its peer. */
            tether__conn_fail_const(c, TETHER_EOF, "connection closed by peer");
            return;
        }
        /* (The WebSocket text is the transport's: copied, not kept.) */
        conn_fail_hint(c, TETHER_EOF, wsd != NULL ? wsd : "connection closed by peer", wsd == NULL,
                       NULL, 0);
        return;
    }
    /* Half-close: the peer is done sending but may still read our replies. */
    c->reason = TETHER_EOF;
    tether__conn_set_err(c, "%s", wsd != NULL ? wsd : "connection closed by peer");
    tether__conn_begin_close(c);
}

/* Whether the peer's FIN, just read from a plain socket, ends c at once
 * (tether__conn_end_eof()): an accepted connection with nothing queued
 * or buffered, no hook (so nothing runs after the read: no
 * acknowledgements, no liveness) and no work of its own due, while the
 * loop has no deferred work, which would have run first. The rest of the
 * dispatch would do nothing but tether__conn_end_in_dispatch(). */
static inline bool conn_eof_ends(const tether_conn *c)
{
    const tether_loop *loop = c->h.loop;
    return c->todo == 0 && c->hooks == 0 && c->queued == 0 && !(c->flags & TETHER__CF_DIALED) &&
           (c->rb == NULL || c->rb->len == 0) && loop->pend_tail == NULL && loop->pend_last == NULL;
}

static inline __attribute__((always_inline)) bool conn_read_rounds(tether_conn *c, bool plain);

/* tether__conn_read(), inline in it and in tether__conn_on_io_plain()
 * (plain: the transport is known to be a plain socket). True if the
 * peer's FIN ended the connection, which is freed (plain only). */
static inline __attribute__((always_inline)) bool conn_read(tether_conn *c, bool plain)
{
    if (conn_read_rounds(c, plain)) {
        return true;
    }
    if (TETHER__UNLIKELY(c->hooks & TETHER__CH_ACK)) {
        tether__ack_after_read(c);
    }
    if (c->cfg->live && (tether__conn_rlen(c) != 0 ||
                         ((c->hooks & TETHER__CH_LIVE) && c->ex->live->frame_mark != UINT64_MAX))) {
        /* (With nothing buffered and no frame being timed, there is
         * nothing for it to do.) */
        tether__live_after_read(c);
    }
    return false;
}

void tether__conn_read(tether_conn *c)
{
    (void)conn_read(c, false);
}

void tether__conn_on_io_plain(tether_conn *c, unsigned revents)
{
    c->dispatching++;
    if (revents & TETHER_EV_WRITE) {
        c->flags &= (uint16_t)~TETHER__CF_WBLOCKED;
        tether__conn_flush(c);
    }
    if ((revents & TETHER_EV_READ) && c->state == TETHER__CS_READY && conn_read(c, true)) {
        return; /* the peer's FIN ended it: freed */
    }
    c->dispatching--;
    if (c->state == TETHER__CS_READY || c->state == TETHER__CS_CLOSING) {
        tether__conn_dispatch_end_fast(c);
    } else if (c->state == TETHER__CS_DEAD) {
        tether__conn_end_in_dispatch(c);
    }
}

/* (A jump to tether__conn_on_io_plain(), not a second copy of it: the
 * copy inline here came out slower per message.) */
void tether__conn_io_plain_cb(struct tether__io *io, unsigned revents)
{
    tether_conn *c = tether__container_of(io, tether_conn, io);
    if (c->state == TETHER__CS_READY) {
        tether__conn_on_io_plain(c, revents);
    } else {
        tether__conn_on_io_other(c, revents);
    }
}

/* After a read of n bytes that returned rv: false when there is nothing
 * to parse (no data yet, an error or the end of the stream, each handled
 * here), else counts the bytes. */
static inline __attribute__((always_inline)) bool conn_read_took(tether_conn *c, int rv, size_t n)
{
    if (TETHER__UNLIKELY(rv != TETHER_OK)) {
        if (rv != TETHER_EAGAIN && (tether__conn_ws(c) == NULL || !tether__ws_read_failed(c, rv))) {
            tether__conn_fail_io(c, rv, "read");
        }
        return false;
    }
    if (TETHER__UNLIKELY(n == 0)) {
        conn_on_eof(c);
        return false;
    }
    c->bytes_in += n;
    if (c->hooks & TETHER__CH_LIVE) {
        c->ex->live->last_rx = tether__loop_time(c->h.loop);
    }
    return true;
}

/* Whether the next read goes straight into rpart: a frame larger than
 * IN_PLACE_MIN is under way (its header has arrived), or rpart is still
 * that large from one that has just been delivered and more input
 * follows. Copying such a frame through lb would cost a memcpy of up to
 * the whole buffer per read. */
static inline bool conn_reads_in_place(const tether_conn *c)
{
    const struct tether__rbuf *b = c->rb;
    return b != NULL && (b->cap >= IN_PLACE_MIN || b->known > IN_PLACE_MIN);
}

/* One read round straight into rpart (conn_reads_in_place()): reads into
 * its free space, growing it by what has arrived so far (at most twice
 * what it holds, within the frame's size), then delivers what is
 * complete. A large buffer left empty is kept only while the socket has
 * more to read; one larger than the frame in front shrinks to it.
 * Returns true to read again. Out of line: it keeps the common round
 * short. */
__attribute__((noinline)) static bool conn_read_large(tether_conn *c)
{
    struct tether__rbuf *b = c->rb; /* (conn_reads_in_place(): there is one) */
    size_t limit = rpart_limit(c, b->known);
    if (b->len >= limit) {
        tether__conn_fail(c, TETHER_EMSGSIZE,
                          "peer sent a message longer than the limit of %zu bytes",
                          c->cfg->o.max_msg);
        return false;
    }
    /* Less than a third free: grow, but a buffer that has the frame's
     * size already only fills up (resizing it to its own size would copy
     * the frame once per read under allocators that do not resize in
     * place, ASan's among them). */
    if ((b->cap - b->len < b->len / 2 || b->cap == b->len) && b->cap < limit) {
        size_t cap = TETHER__MIN(TETHER__MAX(b->len * 2, (size_t)256), limit);
        if (TETHER__UNLIKELY(tether__conn_mem_over(c)) && tether__mem_heavy(c, cap + c->queued) &&
            tether__mem_block(c, TETHER__MF_PAUSED)) {
            /* Growing would take this peer past its share. */
            return false;
        }
        if (rpart_resize(c, cap) != TETHER_OK) {
            return false;
        }
        b = c->rb;
    }
    struct iovec iov = {b->data + b->len, b->cap - b->len};
    size_t n = 0;
    int rv = tether__tr_readv(c->tr, &iov, 1, &n);
    if (!conn_read_took(c, rv, n)) {
        if (rv == TETHER_EAGAIN && c->rb != NULL && c->rb->len == 0) {
            tether__conn_rpart_free(c); /* kept for input that did not come */
        }
        return false;
    }
    b->len += n;
    bool more = n >= iov.iov_len; /* (else the socket is drained) */
    rpart_parse(c, more);
    if (c->state == TETHER__CS_DEAD || c->rb == NULL) {
        return false;
    }
    b = c->rb;
    if (b->len > 0 && b->cap > RPART_KEEP_MAX) {
        /* As conn_keep(): a buffer kept from a larger frame shrinks to
         * the one in front (or to twice what it holds while that one's
         * size is unknown). */
        size_t fit =
            b->known != 0 ? TETHER__MAX(b->known, b->len) : TETHER__MAX(b->len * 2, (size_t)256);
        if (b->cap > fit && rpart_resize(c, fit) != TETHER_OK) {
            return false;
        }
    }
    return more;
}

static inline __attribute__((always_inline)) bool conn_read_rounds(tether_conn *c, bool plain)
{
    uint8_t *lb = read_buf_get(c);
    if (lb == NULL) {
        tether__conn_fail(c, TETHER_ENOMEM, "out of memory for the read buffer");
        return false;
    }
    for (int round = 0; round < READ_ROUNDS; round++) {
        if (!tether__conn_can_deliver(c)) {
            return false;
        }
        if (TETHER__UNLIKELY(tether__conn_mem_over(c)) &&
            tether__mem_heavy(c, rpart_cap(c) + c->queued) &&
            tether__mem_block(c, TETHER__MF_PAUSED)) {
            /* The loop's budget is spent and this peer holds more than its
             * share: stop reading it until usage is back down. */
            return false;
        }
        if (TETHER__UNLIKELY(conn_reads_in_place(c))) {
            if (!conn_read_large(c)) {
                return false;
            }
            continue;
        }
        size_t pre = 0;  /* bytes of rpart copied to the front of lb */
        size_t scan = 0; /* the framer's resume hint for the frame at lb[0] */
        const struct tether__rbuf *b = c->rb;
        if (b != NULL && b->len > 0) {
            memcpy(lb, b->data, b->len);
            pre = b->len;
            scan = b->scan;
        }
        /* (pre < IN_PLACE_MIN: else the frame would be read in place) */
        struct iovec iov = {lb + pre, (round == 0 ? RBUF_FIRST : TETHER__RBUF_SIZE) - pre};
        size_t n = 0;
        int rv =
            plain ? tether__plain_readv(c->tr, &iov, 1, &n) : tether__tr_readv(c->tr, &iov, 1, &n);
        if (plain && rv == TETHER_OK && n == 0 && conn_eof_ends(c)) {
            tether__conn_end_eof(c);
            return true;
        }
        if (!conn_read_took(c, rv, n)) {
            return false;
        }
        if (pre > 0) {
            /* rpart was copied into lb: it takes the new tail, reusing its
             * memory. */
            c->rb->len = 0;
        }
        size_t avail = pre + n;
        size_t known;
        size_t used = conn_parse_fast(c, lb, avail, &known, &scan);
        if (c->state == TETHER__CS_DEAD) {
            return false;
        }
        if ((used != avail || c->rb != NULL) &&
            conn_keep(c, lb + used, avail - used, known, scan) != 0) {
            return false;
        }
        if (n < iov.iov_len) {
            return false; /* the socket is drained: no need to try again */
        }
    }
    return false;
}

/* Reads and discards after our FIN, until the peer's FIN. */
static inline __attribute__((always_inline)) bool conn_linger_read(tether_conn *c)
{
    uint8_t *lb = read_buf_get(c);
    for (int round = 0; round < READ_ROUNDS && lb != NULL; round++) {
        struct iovec iov = {lb, TETHER__RBUF_SIZE};
        size_t n = 0;
        int rv = tether__tr_readv(c->tr, &iov, 1, &n);
        if (rv == TETHER_EAGAIN) {
            return false;
        }
        if (rv != TETHER_OK || n == 0) {
            return true;
        }
    }
    return false;
}

bool tether__conn_linger_read(tether_conn *c)
{
    return conn_linger_read(c);
}

void tether__conn_on_io_linger(tether_conn *c)
{
    if (!conn_linger_read(c)) {
        return;
    }
    c->state = TETHER__CS_DEAD;
    tether__linger_remove(c);
    tether__conn_release_queue(c);
    tether__conn_free(c);
}
