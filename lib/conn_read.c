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
 * buffer comes first, so that it keeps malloc's alignment. */
#define TETHER__RBUF_SIZE (128u * 1024u)

struct read_buf {
    uint8_t data[TETHER__RBUF_SIZE];
    struct tether__loop_ext ext;
};

static const char read_buf_key; /* its address identifies the buffer */

static void read_buf_cleanup(tether_loop *loop, struct tether__loop_ext *ext)
{
    (void)loop;
    free(tether__container_of(ext, struct read_buf, ext));
}

/* Finds or makes the loop's read buffer, and keeps a pointer to it with
 * the loop's budget (c->mem->rbuf, freed at the same time: with the
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
    c->mem->rbuf = b->data;
    return b->data;
}

/* The loop's read buffer (NULL on allocation failure). */
static inline uint8_t *read_buf_get(tether_conn *c)
{
    uint8_t *b = c->mem->rbuf;
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
           c->msgs_in == 0 && c->ctrl_in == 0 && strncmp(tether__conn_url(c), "tcp://", 6) == 0;
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
 * that follows when its header is complete (0 when unknown). Stops early
 * when the connection stops accepting messages (paused, closing) or
 * fails. */
static size_t conn_parse_at(tether_conn *c, const uint8_t *buf, size_t len, size_t off,
                            size_t *known)
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
        int rv = fr->decode(fr, buf + off, len - off, c->cfg->o.max_msg, &c->rscan, &f, &detail);
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
        c->rscan = 0;
        if (f.control == 0) {
            tether__conn_deliver(c, buf + off + f.hdr_len, f.payload_len);
        }
        off += total;
    }
    return off;
}

static size_t conn_parse(tether_conn *c, const uint8_t *buf, size_t len, size_t *known)
{
    return conn_parse_at(c, buf, len, 0, known);
}

/* conn_parse() inline, for the read loop: the plain len32 messages here,
 * anything else (a control frame, an impossible length, another framer)
 * from where it starts in conn_parse_at(). */
static inline __attribute__((always_inline)) size_t
conn_parse_fast(tether_conn *c, const uint8_t *buf, size_t len, size_t *known)
{
    if (TETHER__UNLIKELY(!c->cfg->fast_len32 || tether__conn_ws(c) != NULL)) {
        return conn_parse_at(c, buf, len, 0, known);
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
            return conn_parse_at(c, buf, len, off, known);
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

/* ---- the input buffer (rpart) ------------------------------------------
 *
 * Its capacity follows what has arrived, never what a header announces: a
 * peer that sends a header claiming 16 MiB and nothing else costs a few
 * hundred bytes. It grows geometrically (at most twice the bytes it holds)
 * and never beyond the size of the frame in front (rknown) or, when that is
 * unknown (a line without its delimiter yet), beyond the largest frame
 * allowed. Every change of capacity goes through the loop's memory budget. */

void tether__conn_rpart_free(tether_conn *c)
{
    if (c->rpart != NULL) {
        free(c->rpart);
        tether__mem_sub(c->mem, &c->mem->in_bytes, c->rcap);
        c->rpart = NULL;
    }
    c->rlen = c->rcap = 0;
    c->rknown = 0;
}

/* The largest capacity the frame at rpart[0] can use. */
static size_t rpart_limit(const tether_conn *c)
{
    if (c->rknown != 0) {
        return c->rknown;
    }
    return c->cfg->o.max_msg + TETHER_FRAME_HDR_MAX + TETHER_FRAME_TRAILER_MAX;
}

/* Sets the capacity to cap (>= rlen), moving the contents. */
static int rpart_resize(tether_conn *c, size_t cap)
{
    uint8_t *b = realloc(c->rpart, cap);
    if (b == NULL) {
        tether__conn_fail(c, TETHER_ENOMEM, "out of memory buffering %zu bytes of input", cap);
        return TETHER_ENOMEM;
    }
    if (cap > c->rcap) {
        tether__mem_add(c->mem, &c->mem->in_bytes, cap - c->rcap);
    } else {
        tether__mem_sub(c->mem, &c->mem->in_bytes, c->rcap - cap);
    }
    c->rpart = b;
    c->rcap = cap;
    return TETHER_OK;
}

/* Makes room for need bytes in all: doubles (at least), within the limit
 * unless need itself is above it. */
static int rpart_reserve(tether_conn *c, size_t need)
{
    if (TETHER__LIKELY(need <= c->rcap)) {
        return TETHER_OK;
    }
    size_t cap = TETHER__MAX(TETHER__MAX(need, c->rcap * 2), (size_t)256);
    cap = TETHER__MIN(cap, TETHER__MAX(rpart_limit(c), need));
    return rpart_resize(c, cap);
}

/* Keeps the unconsumed tail of a read for later, reusing the buffer when it
 * is large enough. known is the full size of the incomplete frame when its
 * header has arrived. */
static int conn_keep(tether_conn *c, const uint8_t *p, size_t n, size_t known)
{
    if (n == 0) {
        tether__conn_rpart_free(c); /* idle connections hold no input buffer */
        return TETHER_OK;
    }
    c->rknown = known;
    c->rlen = 0;
    /* A buffer left from the previous frame is kept for the next one up to
     * that frame's size (a peer sending large messages back to back does
     * not regrow it each time), but no larger, and not at all while the
     * size is unknown: it is at most what this peer has just sent. */
    size_t fit = known != 0 ? TETHER__MAX(known, n) : TETHER__MAX(n * 2, (size_t)256);
    if (c->rcap > TETHER__RBUF_SIZE && c->rcap > fit) {
        if (rpart_resize(c, fit) != TETHER_OK) {
            return TETHER_ENOMEM;
        }
    } else if (rpart_reserve(c, n) != TETHER_OK) {
        return TETHER_ENOMEM;
    }
    memcpy(c->rpart, p, n);
    c->rlen = n;
    return TETHER_OK;
}

/* Parses what rpart holds. keep: more input follows at once, so an emptied
 * buffer stays for it (conn_keep decides whether its size fits). */
static void rpart_parse(tether_conn *c, bool keep)
{
    size_t known;
    size_t used = conn_parse(c, c->rpart, c->rlen, &known);
    if (c->state == TETHER__CS_DEAD || c->rpart == NULL) {
        return;
    }
    if (used == c->rlen) {
        if (keep) {
            c->rlen = 0;
            c->rknown = 0;
        } else {
            tether__conn_rpart_free(c);
        }
        return;
    }
    if (used > 0) {
        memmove(c->rpart, c->rpart + used, c->rlen - used);
        c->rlen -= used;
    }
    /* The buffer grows with what arrives (conn_read_rounds), not here. */
    c->rknown = known;
}

/* Parses what rpart holds (after a resume, or once a large frame is in). */
void tether__conn_parse_rpart(tether_conn *c)
{
    rpart_parse(c, false);
}

static void conn_on_eof(tether_conn *c)
{
    if (c->rlen > 0) {
        size_t known = tether__conn_ws(c) != NULL ? c->rknown : 0;
        if (c->cfg->fast_len32 && tether__conn_ws(c) == NULL && c->rlen >= 4) {
            known = tether__ctrl_frame_len(c, c->rpart);
            if (known == 0) {
                known = 4 + (size_t)tether__get_be32(c->rpart);
            }
        }
        char d[128];
        if (known > 0) {
            snprintf(d, sizeof d, "peer closed the connection after %zu of %zu bytes of a message",
                     c->rlen, known);
        } else {
            snprintf(d, sizeof d, "peer closed the connection inside a message (%zu bytes pending)",
                     c->rlen);
        }
        conn_fail_hint(c, TETHER_ETRUNCATED, d, false,
                       looks_like_tls_record(c->rpart, c->rlen) ? c->rpart : NULL, c->rlen);
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

static void conn_read_rounds(tether_conn *c);

void tether__conn_read(tether_conn *c)
{
    conn_read_rounds(c);
    if (TETHER__UNLIKELY(c->hooks & TETHER__CH_ACK)) {
        tether__ack_after_read(c);
    }
    if (c->cfg->live && (c->rlen != 0 || (c->live != NULL && c->live->frame_mark != UINT64_MAX))) {
        /* (With nothing buffered and no frame being timed, there is
         * nothing for it to do.) */
        tether__live_after_read(c);
    }
}

/* After a read of n bytes that returned rv: false when there is nothing
 * to parse (no data yet, an error or the end of the stream, each handled
 * here), else counts the bytes. */
static inline bool conn_read_took(tether_conn *c, int rv, size_t n)
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
    if (c->live != NULL) {
        c->live->last_rx = tether__loop_time(c->h.loop);
    }
    return true;
}

/* Whether the next read goes straight into rpart: a frame larger than half
 * the read buffer is under way (its header has arrived), or rpart is still
 * that large from one that has just been delivered and more input
 * follows. Copying such a frame through lb would cost a memcpy of up to
 * the whole buffer per read. */
static inline bool conn_reads_in_place(const tether_conn *c)
{
    return c->rcap >= TETHER__RBUF_SIZE / 2 || c->rknown > TETHER__RBUF_SIZE / 2;
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
    size_t limit = rpart_limit(c);
    if (c->rlen >= limit) {
        tether__conn_fail(c, TETHER_EMSGSIZE,
                          "peer sent a message longer than the limit of %zu bytes",
                          c->cfg->o.max_msg);
        return false;
    }
    if (c->rcap - c->rlen < c->rlen / 2 || c->rcap == c->rlen) {
        size_t cap = TETHER__MIN(TETHER__MAX(c->rlen * 2, (size_t)256), limit);
        if (TETHER__UNLIKELY(c->mem->over) && tether__mem_heavy(c, cap + c->queued) &&
            tether__mem_block(c, TETHER__MF_PAUSED)) {
            /* Growing would take this peer past its share. */
            return false;
        }
        if (rpart_resize(c, cap) != TETHER_OK) {
            return false;
        }
    }
    struct iovec iov = {c->rpart + c->rlen, c->rcap - c->rlen};
    size_t n = 0;
    int rv = tether__tr_readv(c->tr, &iov, 1, &n);
    if (!conn_read_took(c, rv, n)) {
        if (rv == TETHER_EAGAIN && c->rlen == 0) {
            tether__conn_rpart_free(c); /* kept for input that did not come */
        }
        return false;
    }
    c->rlen += n;
    bool more = n >= iov.iov_len; /* (else the socket is drained) */
    rpart_parse(c, more);
    if (c->state == TETHER__CS_DEAD || c->rpart == NULL) {
        return false;
    }
    if (c->rlen > 0 && c->rcap > TETHER__RBUF_SIZE) {
        /* As conn_keep(): a buffer kept from a larger frame shrinks to
         * the one in front (or to twice what it holds while that one's
         * size is unknown). */
        size_t fit = c->rknown != 0 ? TETHER__MAX(c->rknown, c->rlen)
                                    : TETHER__MAX(c->rlen * 2, (size_t)256);
        if (c->rcap > fit && rpart_resize(c, fit) != TETHER_OK) {
            return false;
        }
    }
    return more;
}

static void conn_read_rounds(tether_conn *c)
{
    uint8_t *lb = read_buf_get(c);
    if (lb == NULL) {
        tether__conn_fail(c, TETHER_ENOMEM, "out of memory for the read buffer");
        return;
    }
    for (int round = 0; round < READ_ROUNDS; round++) {
        if (!tether__conn_can_deliver(c)) {
            return;
        }
        if (TETHER__UNLIKELY(c->mem->over) && tether__mem_heavy(c, c->rcap + c->queued) &&
            tether__mem_block(c, TETHER__MF_PAUSED)) {
            /* The loop's budget is spent and this peer holds more than its
             * share: stop reading it until usage is back down. */
            return;
        }
        if (TETHER__UNLIKELY(conn_reads_in_place(c))) {
            if (!conn_read_large(c)) {
                return;
            }
            continue;
        }
        size_t pre = 0; /* bytes of rpart copied to the front of lb */
        if (c->rlen > 0) {
            memcpy(lb, c->rpart, c->rlen);
            pre = c->rlen;
        }
        struct iovec iov = {lb + pre, TETHER__RBUF_SIZE - pre};
        size_t n = 0;
        int rv = tether__tr_readv(c->tr, &iov, 1, &n);
        if (!conn_read_took(c, rv, n)) {
            return;
        }
        /* rpart (if any) was copied into lb: it takes the new tail, reusing
         * its memory. */
        c->rlen = 0;
        size_t avail = pre + n;
        size_t known;
        size_t used = conn_parse_fast(c, lb, avail, &known);
        if (c->state == TETHER__CS_DEAD) {
            return;
        }
        if (used == avail && c->rpart == NULL) {
            c->rknown = 0; /* nothing to keep, and no buffer to free (conn_keep()) */
        } else if (conn_keep(c, lb + used, avail - used, known) != 0) {
            return;
        }
        if (n < iov.iov_len) {
            return; /* the socket is drained: no need to try again */
        }
    }
}

/* Reads and discards after our FIN, until the peer's FIN. */
void tether__conn_linger_read(tether_conn *c)
{
    uint8_t *lb = read_buf_get(c);
    for (int round = 0; round < READ_ROUNDS && lb != NULL; round++) {
        struct iovec iov = {lb, TETHER__RBUF_SIZE};
        size_t n = 0;
        int rv = c->tr->ops->readv(c->tr, &iov, 1, &n);
        if (rv == TETHER_EAGAIN) {
            return;
        }
        if (rv != TETHER_OK || n == 0) {
            tether__conn_end(c, TETHER_OK);
            return;
        }
    }
}
