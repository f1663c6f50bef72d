/* SPDX-License-Identifier: MIT */
/* The read side of a WebSocket connection in message mode: the
 * connection's parser hands its input here (conn_read.c), and each
 * complete frame is checked against every RFC 6455 rule a peer can break
 * (closing with 1002, 1007 or 1009), unmasked in place and delivered: a
 * data message straight from the input buffer, a fragmented one once
 * reassembled within max_msg, a tether control frame (between tether
 * ends) to liveness, and the peer's pings, pongs and close frame in the
 * terms of tether's control frames. */
#include "conn_core.h"
#include "conn_deliver.h"
#include "ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void sanitize(char *out, size_t cap, const uint8_t *p, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < cap; i++) {
        out[k++] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : (p[i] >= 0x80 ? (char)p[i] : '?');
    }
    out[k] = '\0';
}

/* Our close frame: at once when nothing is queued, else behind the queue
 * (the queue holds whole frames, so either way at a frame boundary). Best
 * effort: the connection is closing. */
static void send_close(tether_conn *c, const uint8_t *p, size_t n)
{
    struct ws_transport *t = tether__conn_ws(c);
    if (c->queued == 0) {
        if (tether__ws_ob_frame(t, TETHER__WS_OP_CLOSE, p, n) == TETHER_OK) {
            (void)tether__ws_ob_flush(t);
        }
    } else {
        (void)tether__ws_queue_frame(c, TETHER__WS_OP_CLOSE, p, n);
    }
    t->close_tx = true;
}

/* A protocol violation by the peer: a close frame with code, then the
 * connection closes (gracefully while established, so that the peer
 * reads the code rather than a reset). */
static void violation(tether_conn *c, int rv, unsigned code, const char *what)
{
    struct ws_transport *t = tether__conn_ws(c);
    t->violated = true;
    (void)tether__ws_fail(t, rv, "WebSocket protocol error: %s (closed with %u)", what, code);
    if (!t->close_tx) {
        uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
        send_close(c, p, 2);
    }
    if (!tether__ws_read_failed(c, rv)) {
        tether__conn_fail_io(c, rv, "read");
    }
}

/* A tether control frame for the connection, checked as the len32 parser
 * checks them. Returns false when the connection stops taking input. */
static bool ctrl_in(tether_conn *c, const uint8_t *f, size_t n)
{
    if (tether__ctrl_frame_len(c, f) == 0) {
        if (!tether__ctrl_violation(c, f)) {
            tether__conn_fail(c, TETHER_EPROTO,
                              "protocol error: the peer sent a tether control frame of type %u "
                              "that it may not send now",
                              (unsigned)f[1]);
        }
        return false;
    }
    return tether__ctrl_on_frame(c, f, n);
}

/* A complete WebSocket control frame (payload unmasked). */
static bool on_control(tether_conn *c, uint8_t op, const uint8_t *p, size_t n)
{
    struct ws_transport *t = tether__conn_ws(c);
    uint8_t f[TETHER__CTRL_HDR_LEN + TETHER__CTRL_PING_MAX];
    if (t->tctl && op != TETHER__WS_OP_CLOSE) {
        /* A tether peer's heartbeats travel as control frames: a
         * WebSocket ping (from an intermediary, say) is answered here. */
        if (op == TETHER__WS_OP_PING && !t->close_tx) {
            if (tether__ws_queue_frame(c, TETHER__WS_OP_PONG, p, n) != TETHER_OK) {
                tether__conn_fail(c, TETHER_ENOMEM, "out of memory answering a WebSocket ping");
                return false;
            }
            tether__conn_after_queue(c);
        }
        return true;
    }
    if (op == TETHER__WS_OP_PING) {
        /* Answered when the connection's PONG for it is queued (so a peer
         * that pings without reading gets no pongs, as on tcp://). */
        memcpy(t->ping, p, n);
        t->ping_len = n;
        t->ping_due = true;
        tether__len32_ctrl_header(f, TETHER__CTRL_PING, 1);
        f[4] = ++t->ping_seq;
        return ctrl_in(c, f, TETHER__CTRL_HDR_LEN + 1);
    }
    if (op == TETHER__WS_OP_PONG) {
        size_t k = n >= 1 && n <= TETHER__CTRL_PING_MAX ? n : 1;
        tether__len32_ctrl_header(f, TETHER__CTRL_PONG, (uint16_t)k);
        f[4] = 0;
        if (n >= 1 && n <= TETHER__CTRL_PING_MAX) {
            memcpy(f + 4, p, n);
        }
        return ctrl_in(c, f, TETHER__CTRL_HDR_LEN + k);
    }
    /* Close (RFC 6455 5.5.1, 7.1.5). */
    if (n == 1) {
        violation(c, TETHER_EPROTO, 1002, "close frame with a 1-byte payload");
        return false;
    }
    unsigned code = n >= 2 ? ((unsigned)p[0] << 8) | p[1] : 1005;
    if (n >= 2 && !tether__ws_code_ok(code)) {
        char d[64];
        snprintf(d, sizeof d, "close code %u is not allowed", code);
        violation(c, TETHER_EPROTO, 1002, d);
        return false;
    }
    if (n > 2 && tether__utf8_feed(0, p + 2, n - 2) != 0) {
        violation(c, TETHER_EPROTO, 1007, "close reason is not valid UTF-8");
        return false;
    }
    t->close_rx = true;
    t->rx_code = (int)code;
    sanitize(t->rx_text, sizeof t->rx_text, p + 2, n > 2 ? n - 2 : 0);
    if (n >= 2) {
        snprintf(t->eof_detail, sizeof t->eof_detail, "peer closed the WebSocket with %u%s%s%s",
                 code, t->rx_text[0] != '\0' ? ": \"" : "", t->rx_text,
                 t->rx_text[0] != '\0' ? "\"" : "");
    } else {
        snprintf(t->eof_detail, sizeof t->eof_detail,
                 "peer closed the WebSocket (close frame without a code)");
    }
    if (c->queued == 0 && !t->close_tx) {
        /* Echo at once; with replies still queued, shutdown() sends it
         * after them. */
        uint8_t e[2] = {(uint8_t)(code >> 8), (uint8_t)code};
        t->close_tx = true;
        if (tether__ws_ob_frame(t, TETHER__WS_OP_CLOSE, e, n >= 2 ? 2 : 0) == TETHER_OK) {
            (void)tether__ws_ob_flush(t);
        }
    }
    return true;
}

/* A data frame, complete and unmasked: delivered, or added to the
 * fragmented message under way. Returns false when the connection stops
 * taking input. */
static bool on_data(tether_conn *c, const struct tether__ws_hdr *h, uint8_t *p)
{
    struct ws_transport *t = tether__conn_ws(c);
    size_t n = (size_t)h->len;
    uint8_t op = t->in_msg ? t->msg_op : h->opcode;
    if (op == TETHER__WS_OP_TEXT) {
        uint32_t u = tether__utf8_feed(t->in_msg ? t->utf8 : 0, p, n);
        if (u == TETHER__UTF8_BAD) {
            violation(c, TETHER_EPROTO, 1007, "invalid UTF-8 in a text message");
            return false;
        }
        if (h->fin && u != 0) {
            violation(c, TETHER_EPROTO, 1007, "text message ends inside a UTF-8 sequence");
            return false;
        }
        t->utf8 = u;
    }
    if (!t->in_msg && h->fin) {
        t->cur_text = op == TETHER__WS_OP_TEXT;
        tether__conn_deliver(c, p, n);
        return true;
    }
    if (!t->in_msg) {
        t->in_msg = true;
        t->msg_op = op;
        t->mlen = 0;
    }
    if (tether__ws_buf_reserve(&t->mb, &t->mcap, t->mlen + n) != TETHER_OK) {
        tether__conn_fail(c, TETHER_ENOMEM, "out of memory reassembling a %zu-byte message",
                          t->mlen + n);
        return false;
    }
    if (n > 0) {
        memcpy(t->mb + t->mlen, p, n);
        t->mlen += n;
    }
    if (!h->fin) {
        return true;
    }
    uint8_t *m = t->mb;
    size_t ml = t->mlen;
    t->in_msg = false;
    t->mlen = 0;
    t->cur_text = op == TETHER__WS_OP_TEXT;
    tether__conn_deliver(c, ml > 0 ? m : p, ml); /* (never a NULL pointer) */
    if (tether__conn_ws(c) == t && t->mb == m && t->mlen == 0 && t->mcap > TETHER__WS_MB_KEEP) {
        free(t->mb);
        t->mb = NULL;
        t->mcap = 0;
    }
    return true;
}

/* Unmasks the payload bytes p[0..n) of the incomplete frame in front not
 * done yet; returns off (the parser's result). (Out of line, as
 * unmask_rest(): the small frames' loop keeps its registers.) */
__attribute__((noinline)) static size_t unmask_arrived(struct ws_transport *t, uint8_t *p, size_t n,
                                                       const uint8_t key[4], size_t off)
{
    size_t done = t->rx_unmasked;
    if (n > done) {
        tether__ws_mask(p + done, n - done, key, done);
        t->rx_unmasked = n;
    }
    return off;
}

/* Unmasks the rest of a complete frame of n payload bytes. */
__attribute__((noinline)) static void unmask_rest(struct ws_transport *t, uint8_t *p, size_t n,
                                                  const uint8_t key[4])
{
    size_t done = t->rx_unmasked;
    t->rx_unmasked = 0;
    tether__ws_mask(p + done, n - done, key, done);
}

/* Delivers the frames from off on while each is the common case: a whole
 * small binary frame (FIN, no reserved bits, masked exactly when masked,
 * its length below 126 and max_msg: the 7-bit length's top value, 127,
 * never matches), tested in its first two bytes. Returns the new offset;
 * *known is set when such a frame is incomplete. (Inline twice with
 * masked a constant, and only outside a fragmented message: the loop
 * tests neither.) */
static inline __attribute__((always_inline)) size_t
small_run(tether_conn *c, struct ws_transport *t, uint8_t *buf, size_t len, size_t off,
          size_t small_max, size_t *known, const bool masked)
{
    const unsigned want = (0x80u | TETHER__WS_OP_BINARY) | (masked ? 0x8000u : 0u);
    const size_t hl = masked ? 6 : 2;
    while (len - off >= 2 && tether__conn_can_deliver(c)) {
        uint8_t *q = buf + off;
        size_t plen = q[1] & 0x7Fu;
        if ((((unsigned)q[1] << 8 | q[0]) & 0x80FFu) != want || plen > small_max) {
            break;
        }
        if (len - off < hl + plen) {
            *known = hl + plen;
            break;
        }
        uint8_t *p = q + hl;
        if (masked) {
            tether__ws_mask_small(p, p, plen, q + 2);
        }
        off += hl + plen;
        t->cur_text = false;
        tether__conn_deliver(c, p, plen);
    }
    return off;
}

size_t tether__ws_parse(tether_conn *c, uint8_t *buf, size_t len, size_t *known)
{
    struct ws_transport *t = tether__conn_ws(c);
    const bool server = t->server;
    const size_t max = c->cfg->o.max_msg;
    const size_t small_max = TETHER__MIN(max, (size_t)125);
    size_t off = 0;
    *known = 0;
    while (tether__conn_can_deliver(c)) {
        if (TETHER__LIKELY(!t->in_msg)) {
            off = server ? small_run(c, t, buf, len, off, small_max, known, true)
                         : small_run(c, t, buf, len, off, small_max, known, false);
            if (*known != 0 || !tether__conn_can_deliver(c)) {
                break;
            }
        }
        uint8_t *q = buf + off;
        size_t avail = len - off;
        if (avail < 2) {
            break;
        }
        struct tether__ws_hdr h;
        int rv = tether__ws_hdr_decode(q, avail, &h);
        if (rv == TETHER_EAGAIN) {
            break;
        }
        if (rv != TETHER_OK) {
            violation(c, TETHER_EPROTO, 1002, "64-bit payload length with the top bit set");
            return off;
        }
        char d[128];
        uint8_t *p = q + h.hdr_len;
        if (h.rsv == TETHER__WS_RSV2 && (t->tctl || t->hello_synth) &&
            h.opcode == TETHER__WS_OP_BINARY && h.fin && !t->in_msg) {
            /* A tether control frame (ws.h): whole, to the connection,
             * which checks it as it checks them on tcp://. */
            if (h.len < TETHER__CTRL_HDR_LEN ||
                h.len > TETHER__CTRL_HDR_LEN + TETHER__CTRL_MAX_PAYLOAD) {
                snprintf(d, sizeof d, "tether control frame of %llu bytes",
                         (unsigned long long)h.len);
                violation(c, TETHER_EPROTO, 1002, d);
                return off;
            }
            if (avail - h.hdr_len < h.len) {
                *known = h.hdr_len + (size_t)h.len;
                break;
            }
            if (h.masked) {
                tether__ws_mask(p, (size_t)h.len, h.mask, 0);
            }
            if (p[0] != TETHER__CTRL_MARK ||
                (((size_t)p[2] << 8) | p[3]) != h.len - TETHER__CTRL_HDR_LEN) {
                violation(c, TETHER_EPROTO, 1002, "malformed tether control frame");
                return off;
            }
            off += h.hdr_len + (size_t)h.len;
            t->hello_synth = false;
            if (!ctrl_in(c, p, (size_t)h.len)) {
                return off;
            }
            continue;
        }
        if (h.rsv != 0) {
            violation(c, TETHER_EPROTO, 1002, "reserved bits set (no extension agreed)");
            return off;
        }
        if (h.opcode > TETHER__WS_OP_BINARY && h.opcode != TETHER__WS_OP_CLOSE &&
            h.opcode != TETHER__WS_OP_PING && h.opcode != TETHER__WS_OP_PONG) {
            snprintf(d, sizeof d, "reserved opcode 0x%X", h.opcode);
            violation(c, TETHER_EPROTO, 1002, d);
            return off;
        }
        if (server != h.masked) {
            violation(c, TETHER_EPROTO, 1002,
                      server ? "unmasked frame from the client" : "masked frame from the server");
            return off;
        }
        if ((h.opcode & 0x8u) != 0) {
            if (!h.fin || h.len > TETHER__WS_CTRL_MAX) {
                snprintf(d, sizeof d, "%s control frame (%llu bytes)",
                         h.fin ? "oversized" : "fragmented", (unsigned long long)h.len);
                violation(c, TETHER_EPROTO, 1002, d);
                return off;
            }
            if (avail - h.hdr_len < h.len) {
                *known = h.hdr_len + (size_t)h.len;
                break;
            }
            if (h.masked) {
                tether__ws_mask(p, (size_t)h.len, h.mask, 0);
            }
            off += h.hdr_len + (size_t)h.len;
            if (!on_control(c, h.opcode, p, (size_t)h.len)) {
                return off;
            }
            if (t->close_rx) {
                return len; /* nothing after a close frame counts */
            }
            continue;
        }
        if (h.opcode == TETHER__WS_OP_CONT && !t->in_msg) {
            violation(c, TETHER_EPROTO, 1002, "continuation frame outside a message");
            return off;
        }
        if (h.opcode != TETHER__WS_OP_CONT && t->in_msg) {
            violation(c, TETHER_EPROTO, 1002, "new data frame before the fragmented message ended");
            return off;
        }
        uint64_t total = (t->in_msg ? (uint64_t)t->mlen : 0) + h.len;
        if (total > (uint64_t)max) {
            snprintf(d, sizeof d, "message of at least %llu bytes; the limit is %zu",
                     (unsigned long long)total, max);
            violation(c, TETHER_EMSGSIZE, 1009, d);
            return off;
        }
        /* The payload bytes here are unmasked as they arrive, while the
         * read has just brought them into the cache: a large frame comes
         * in many reads, and a pass over all of it once complete would
         * fetch it from memory again. What is done is counted for this
         * frame, which starts the input of the next call. */
        if (avail - h.hdr_len < h.len) {
            *known = h.hdr_len + (size_t)h.len;
            return h.masked ? unmask_arrived(t, p, avail - h.hdr_len, h.mask, off) : off;
        }
        if (h.masked) {
            unmask_rest(t, p, (size_t)h.len, h.mask);
        }
        off += h.hdr_len + (size_t)h.len;
        if (!on_data(c, &h, p)) {
            return off;
        }
    }
    return off;
}
