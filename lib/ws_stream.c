/* SPDX-License-Identifier: MIT */
/* The read path of the WebSocket layer and the buffers it shares with
 * the write path (ws_write.c): reading parses frames, unmasks, checks
 * every RFC 6455 rule a peer can break (closing with 1002, 1007 or 1009),
 * reassembles fragments within max_msg and streams unfragmented payloads
 * into the len32 stream the connection reads (ws.h describes the
 * mapping). */
#include "conn_core.h"
#include "ws.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RD_ROUNDS 4

/* ---- buffers ------------------------------------------------------------- */

int tether__ws_buf_reserve(uint8_t **b, size_t *cap, size_t need)
{
    if (need <= *cap) {
        return TETHER_OK;
    }
    size_t nc = TETHER__MAX(need, TETHER__MAX(*cap * 2, (size_t)256));
    uint8_t *p = realloc(*b, nc);
    if (p == NULL) {
        return TETHER_ENOMEM;
    }
    *b = p;
    *cap = nc;
    return TETHER_OK;
}

int tether__ws_ob_add(struct ws_transport *t, const void *p, size_t n)
{
    uint8_t *dst = tether__ws_ob_room(t, n);
    if (dst == NULL) {
        return TETHER_ENOMEM;
    }
    memcpy(dst, p, n);
    t->olen += n;
    return TETHER_OK;
}

/* While readv parses: n contiguous bytes in the reader's buffer, or NULL
 * (none given, db holds bytes to come first, or the entry is too short). */
static inline uint8_t *sio_room(struct ws_transport *t, size_t n)
{
    if (t->siov == NULL || t->dlen != 0 || t->sidx >= t->siovcnt ||
        t->siov[t->sidx].iov_len - t->soff < n) {
        return NULL;
    }
    return (uint8_t *)t->siov[t->sidx].iov_base + t->soff;
}

static inline void sio_commit(struct ws_transport *t, size_t n)
{
    t->soff += n;
    t->sgot += n;
    if (t->soff == t->siov[t->sidx].iov_len) {
        t->sidx++;
        t->soff = 0;
    }
}

int tether__ws_db_add(struct ws_transport *t, const void *p, size_t n)
{
    uint8_t *dst = sio_room(t, n);
    if (dst != NULL) {
        memcpy(dst, p, n);
        sio_commit(t, n);
        return TETHER_OK;
    }
    if (t->siov != NULL && t->dlen == 0) {
        /* Straight into the reader's buffers: one copy fewer. */
        const uint8_t *q = p;
        while (n > 0 && t->sidx < t->siovcnt) {
            const struct iovec *v = &t->siov[t->sidx];
            size_t k = TETHER__MIN(n, v->iov_len - t->soff);
            memcpy((uint8_t *)v->iov_base + t->soff, q, k);
            q += k, n -= k;
            t->soff += k;
            t->sgot += k;
            if (t->soff == v->iov_len) {
                t->sidx++;
                t->soff = 0;
            }
        }
        if (n == 0) {
            return TETHER_OK;
        }
        p = q;
    }
    if (t->doff > 0 && t->dlen == 0) {
        t->doff = 0;
    }
    if (tether__ws_buf_reserve(&t->db, &t->dcap, t->doff + t->dlen + n) != TETHER_OK) {
        return TETHER_ENOMEM;
    }
    memcpy(t->db + t->doff + t->dlen, p, n);
    t->dlen += n;
    return TETHER_OK;
}

int tether__ws_text_push(struct ws_transport *t)
{
    if (t->tcount == t->tcap) {
        size_t nc = t->tcap == 0 ? 64 : t->tcap * 2;
        uint32_t *p = malloc(nc * sizeof *p);
        if (p == NULL) {
            return TETHER_ENOMEM;
        }
        for (size_t i = 0; i < t->tcount; i++) {
            p[i] = t->types[(t->thead + i) & (t->tcap - 1)];
        }
        free(t->types);
        t->types = p;
        t->tcap = nc;
        t->thead = 0;
    }
    t->types[(t->thead + t->tcount) & (t->tcap - 1)] = t->rx_seq; /* (tcap: a power of 2) */
    t->tcount++;
    return TETHER_OK;
}

/* Queues one whole frame (control frames and the close frame). */
int tether__ws_ob_frame(struct ws_transport *t, uint8_t op, const uint8_t *p, size_t n)
{
    uint8_t hdr[TETHER__WS_HDR_MAX];
    uint8_t key[4];
    if (!t->server) {
        tether__ws_mask_key(t, key);
    }
    size_t hl = tether__ws_hdr_encode(hdr, true, op, n, t->server ? NULL : key);
    uint8_t body[TETHER__WS_CTRL_MAX];
    memcpy(body, p, n);
    if (!t->server) {
        tether__ws_mask(body, n, key, 0);
    }
    if (tether__ws_ob_add(t, hdr, hl) != TETHER_OK || tether__ws_ob_add(t, body, n) != TETHER_OK) {
        return TETHER_ENOMEM;
    }
    return TETHER_OK;
}

/* Writes what ob holds to the inner transport. */
int tether__ws_ob_flush(struct ws_transport *t)
{
    while (t->olen > 0) {
        struct iovec v = {t->ob + t->ooff, t->olen};
        size_t w = 0;
        int rv = t->in->ops->writev(t->in, &v, 1, &w);
        if (rv != TETHER_OK) {
            return rv;
        }
        t->ooff += w;
        t->olen -= w;
    }
    t->ooff = 0;
    return TETHER_OK;
}

int tether__ws_fail(struct ws_transport *t, int rv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->err, sizeof t->err, fmt, ap);
    va_end(ap);
    return rv;
}

/* A protocol violation by the peer: send a close frame with code (best
 * effort: the connection fails right after) and fail with the detail. */
int tether__ws_violation(struct ws_transport *t, int rv, unsigned code, const char *what)
{
    t->violated = true;
    if (!t->close_tx) {
        uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
        t->close_tx = true;
        if (tether__ws_ob_frame(t, TETHER__WS_OP_CLOSE, p, 2) == TETHER_OK) {
            (void)tether__ws_ob_flush(t);
        }
    }
    return tether__ws_fail(t, rv, "WebSocket protocol error: %s (closed with %u)", what, code);
}

/* Removes the head from ib; what follows it (frames sent at once) stays. */
void tether__ws_ib_consume(struct ws_transport *t, size_t n)
{
    memmove(t->ib, t->ib + n, t->ilen - n);
    t->ilen -= n;
}

/* ---- reading: WebSocket frames to the len32 stream ---------------------- */

static void len32_hdr(uint8_t out[4], size_t len)
{
    tether__put_be32(out, (uint32_t)len);
}

/* A data frame's payload is complete. */
static int frame_done(struct ws_transport *t)
{
    t->fr_active = false;
    if (!t->fr_fin) {
        return TETHER_OK;
    }
    if (t->msg_op == TETHER__WS_OP_TEXT && t->utf8 != 0) {
        return tether__ws_violation(t, TETHER_EPROTO, 1007,
                                    "text message ends inside a UTF-8 sequence");
    }
    if (t->msg_frag) {
        uint8_t h[4];
        len32_hdr(h, t->mlen);
        if (tether__ws_db_add(t, h, 4) != TETHER_OK ||
            tether__ws_db_add(t, t->mb, t->mlen) != TETHER_OK) {
            return tether__ws_fail(t, TETHER_ENOMEM,
                                   "out of memory reassembling a %zu-byte message", t->mlen);
        }
        t->mlen = 0;
        if (t->mcap > TETHER__WS_IB_CHUNK) {
            free(t->mb);
            t->mb = NULL;
            t->mcap = 0;
        }
    }
    t->in_msg = false;
    return TETHER_OK;
}

static void sanitize(char *out, size_t cap, const uint8_t *p, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < cap; i++) {
        out[k++] = p[i] >= 0x20 && p[i] < 0x7f ? (char)p[i] : (p[i] >= 0x80 ? (char)p[i] : '?');
    }
    out[k] = '\0';
}

static int on_control(struct ws_transport *t, uint8_t op, uint8_t *p, size_t n)
{
    uint8_t f[TETHER__CTRL_HDR_LEN + TETHER__CTRL_PING_MAX];
    if (t->tctl && op != TETHER__WS_OP_CLOSE) {
        /* A tether peer's heartbeats travel as control frames: a
         * WebSocket ping (from an intermediary, say) is answered here. */
        return op == TETHER__WS_OP_PING ? tether__ws_ob_frame(t, TETHER__WS_OP_PONG, p, n)
                                        : TETHER_OK;
    }
    if (op == TETHER__WS_OP_PING) {
        /* Answered when the connection's PONG for it passes through (so a
         * peer that pings without reading gets no pongs, as on tcp://). */
        memcpy(t->ping, p, n);
        t->ping_len = n;
        t->ping_due = true;
        tether__len32_ctrl_header(f, TETHER__CTRL_PING, 1);
        f[4] = ++t->ping_seq;
        return tether__ws_db_add(t, f, 5);
    }
    if (op == TETHER__WS_OP_PONG) {
        size_t k = n >= 1 && n <= TETHER__CTRL_PING_MAX ? n : 1;
        tether__len32_ctrl_header(f, TETHER__CTRL_PONG, (uint16_t)k);
        f[4] = 0;
        if (n >= 1 && n <= TETHER__CTRL_PING_MAX) {
            memcpy(f + 4, p, n);
        }
        return tether__ws_db_add(t, f, TETHER__CTRL_HDR_LEN + k);
    }
    /* Close (RFC 6455 5.5.1, 7.1.5). */
    if (n == 1) {
        return tether__ws_violation(t, TETHER_EPROTO, 1002, "close frame with a 1-byte payload");
    }
    unsigned code = n >= 2 ? ((unsigned)p[0] << 8) | p[1] : 1005;
    if (n >= 2 && !tether__ws_code_ok(code)) {
        char d[64];
        snprintf(d, sizeof d, "close code %u is not allowed", code);
        return tether__ws_violation(t, TETHER_EPROTO, 1002, d);
    }
    if (n > 2 && tether__utf8_feed(0, p + 2, n - 2) != 0) {
        return tether__ws_violation(t, TETHER_EPROTO, 1007, "close reason is not valid UTF-8");
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
    if (t->c->queued == 0 && !t->close_tx) {
        /* Echo at once; with replies still queued, shutdown() sends it
         * after them. */
        uint8_t e[2] = {(uint8_t)(code >> 8), (uint8_t)code};
        t->close_tx = true;
        int rv = tether__ws_ob_frame(t, TETHER__WS_OP_CLOSE, e, n >= 2 ? 2 : 0);
        if (rv == TETHER_OK) {
            (void)tether__ws_ob_flush(t);
        }
    }
    return TETHER_OK;
}

/* Parses the frames in ib into db (and mb). */
static int ws_parse(struct ws_transport *t)
{
    size_t off = 0;
    size_t max = t->c->cfg->o.max_msg;
    int rv = TETHER_OK;
    while (!t->close_rx) {
        if (t->fr_active) {
            size_t avail = t->ilen - off;
            size_t k = (size_t)TETHER__MIN((uint64_t)avail, t->fr_left);
            if (k == 0 && t->fr_left > 0) {
                break;
            }
            uint8_t *p = t->ib + off;
            if (t->fr_masked) {
                tether__ws_mask(p, k, t->fr_mask, t->fr_pos);
            }
            if (t->msg_op == TETHER__WS_OP_TEXT) {
                t->utf8 = tether__utf8_feed(t->utf8, p, k);
                if (t->utf8 == TETHER__UTF8_BAD) {
                    rv = tether__ws_violation(t, TETHER_EPROTO, 1007,
                                              "invalid UTF-8 in a text message");
                    break;
                }
            }
            if (t->msg_frag) {
                if (tether__ws_buf_reserve(&t->mb, &t->mcap, t->mlen + k) != TETHER_OK) {
                    rv = tether__ws_fail(t, TETHER_ENOMEM, "out of memory reassembling a message");
                    break;
                }
                memcpy(t->mb + t->mlen, p, k);
                t->mlen += k;
            } else if (tether__ws_db_add(t, p, k) != TETHER_OK) {
                rv = tether__ws_fail(t, TETHER_ENOMEM, "out of memory reading a message");
                break;
            }
            off += k;
            t->fr_left -= k;
            t->fr_pos += k;
            if (t->fr_left == 0) {
                rv = frame_done(t);
                if (rv != TETHER_OK) {
                    break;
                }
            }
            continue;
        }
        const uint8_t *q = t->ib + off;
        size_t avail = t->ilen - off;
        if (avail >= 2 && q[0] == (0x80u | TETHER__WS_OP_BINARY) && !t->in_msg &&
            (q[1] & 0x7Fu) < 126 && ((q[1] & 0x80u) != 0) == t->server) {
            /* The common case in one test: a whole small binary frame
             * (FIN, no reserved bits), masked exactly when it must be. */
            size_t len = q[1] & 0x7Fu;
            size_t hl = t->server ? 6 : 2;
            uint8_t *dst = avail >= hl + len && len <= max ? sio_room(t, 4 + len) : NULL;
            if (dst != NULL) {
                len32_hdr(dst, len);
                if (t->server) {
                    tether__ws_mask_copy(dst + 4, q + hl, len, q + 2, 0);
                } else {
                    memcpy(dst + 4, q + hl, len);
                }
                sio_commit(t, 4 + len);
                t->rx_seq++; /* (a binary message) */
                off += hl + len;
                continue;
            }
        }
        struct tether__ws_hdr h;
        rv = tether__ws_hdr_decode(q, avail, &h);
        if (rv == TETHER_EAGAIN) {
            rv = TETHER_OK;
            break;
        }
        if (rv != TETHER_OK) {
            rv = tether__ws_violation(t, TETHER_EPROTO, 1002,
                                      "64-bit payload length with the top bit set");
            break;
        }
        char d[128];
        bool control = (h.opcode & 0x8u) != 0;
        if (h.rsv == TETHER__WS_RSV2 && t->tctl && h.opcode == TETHER__WS_OP_BINARY && h.fin &&
            !t->in_msg) {
            /* A tether control frame (ws.h): whole, straight to the
             * connection, which checks it as it checks them on tcp://. */
            if (h.len < TETHER__CTRL_HDR_LEN ||
                h.len > TETHER__CTRL_HDR_LEN + TETHER__CTRL_MAX_PAYLOAD) {
                snprintf(d, sizeof d, "tether control frame of %llu bytes",
                         (unsigned long long)h.len);
                rv = tether__ws_violation(t, TETHER_EPROTO, 1002, d);
                break;
            }
            if (t->ilen - off < h.hdr_len + h.len) {
                break;
            }
            uint8_t *p = t->ib + off + h.hdr_len;
            if (h.masked) {
                tether__ws_mask(p, (size_t)h.len, h.mask, 0);
            }
            if (p[0] != TETHER__CTRL_MARK ||
                (((size_t)p[2] << 8) | p[3]) != h.len - TETHER__CTRL_HDR_LEN) {
                rv = tether__ws_violation(t, TETHER_EPROTO, 1002, "malformed tether control frame");
                break;
            }
            off += h.hdr_len + (size_t)h.len;
            if (tether__ws_db_add(t, p, (size_t)h.len) != TETHER_OK) {
                rv = tether__ws_fail(t, TETHER_ENOMEM, "out of memory");
                break;
            }
            continue;
        }
        if (h.rsv != 0) {
            rv = tether__ws_violation(t, TETHER_EPROTO, 1002,
                                      "reserved bits set (no extension agreed)");
            break;
        }
        if (h.opcode > TETHER__WS_OP_BINARY && h.opcode != TETHER__WS_OP_CLOSE &&
            h.opcode != TETHER__WS_OP_PING && h.opcode != TETHER__WS_OP_PONG) {
            snprintf(d, sizeof d, "reserved opcode 0x%X", h.opcode);
            rv = tether__ws_violation(t, TETHER_EPROTO, 1002, d);
            break;
        }
        if (t->server != h.masked) {
            rv = tether__ws_violation(t, TETHER_EPROTO, 1002,
                                      t->server ? "unmasked frame from the client"
                                                : "masked frame from the server");
            break;
        }
        if (control) {
            if (!h.fin || h.len > TETHER__WS_CTRL_MAX) {
                snprintf(d, sizeof d, "%s control frame (%llu bytes)",
                         h.fin ? "oversized" : "fragmented", (unsigned long long)h.len);
                rv = tether__ws_violation(t, TETHER_EPROTO, 1002, d);
                break;
            }
            if (t->ilen - off < h.hdr_len + h.len) {
                break;
            }
            uint8_t *p = t->ib + off + h.hdr_len;
            if (h.masked) {
                tether__ws_mask(p, (size_t)h.len, h.mask, 0);
            }
            off += h.hdr_len + (size_t)h.len;
            rv = on_control(t, h.opcode, p, (size_t)h.len);
            if (rv != TETHER_OK) {
                break;
            }
            continue;
        }
        if (h.opcode == TETHER__WS_OP_CONT && !t->in_msg) {
            rv = tether__ws_violation(t, TETHER_EPROTO, 1002,
                                      "continuation frame outside a message");
            break;
        }
        if (h.opcode != TETHER__WS_OP_CONT && t->in_msg) {
            rv = tether__ws_violation(t, TETHER_EPROTO, 1002,
                                      "new data frame before the fragmented message ended");
            break;
        }
        uint64_t total = (t->in_msg ? (uint64_t)t->mlen : 0) + h.len;
        if (total > (uint64_t)max) {
            snprintf(d, sizeof d, "message of at least %llu bytes; the limit is %zu",
                     (unsigned long long)total, max);
            rv = tether__ws_violation(t, TETHER_EMSGSIZE, 1009, d);
            break;
        }
        if (!t->in_msg && h.fin && h.opcode == TETHER__WS_OP_BINARY &&
            t->ilen - off >= h.hdr_len + h.len) {
            /* A whole binary message: its len32 header and the unmasked
             * payload go to the reader's buffer in one pass when it has
             * room. */
            uint8_t *dst = sio_room(t, 4 + (size_t)h.len);
            if (dst != NULL) {
                const uint8_t *p = t->ib + off + h.hdr_len;
                len32_hdr(dst, (size_t)h.len);
                if (h.masked) {
                    tether__ws_mask_copy(dst + 4, p, (size_t)h.len, h.mask, 0);
                } else {
                    memcpy(dst + 4, p, (size_t)h.len);
                }
                sio_commit(t, 4 + (size_t)h.len);
                (void)tether__ws_types_push(t, false); /* (binary: cannot fail) */
                off += h.hdr_len + (size_t)h.len;
                continue;
            }
        }
        if (!t->in_msg) {
            t->in_msg = true;
            t->msg_op = h.opcode;
            t->msg_frag = !h.fin;
            t->utf8 = 0;
            if (tether__ws_types_push(t, h.opcode == TETHER__WS_OP_TEXT) != TETHER_OK) {
                rv = tether__ws_fail(t, TETHER_ENOMEM, "out of memory");
                break;
            }
            if (!t->msg_frag) {
                uint8_t lh[4];
                len32_hdr(lh, (size_t)h.len);
                if (tether__ws_db_add(t, lh, 4) != TETHER_OK) {
                    rv = tether__ws_fail(t, TETHER_ENOMEM, "out of memory");
                    break;
                }
            }
        }
        off += h.hdr_len;
        t->fr_active = true;
        t->fr_fin = h.fin;
        t->fr_left = h.len;
        t->fr_pos = 0;
        t->fr_masked = h.masked;
        memcpy(t->fr_mask, h.mask, 4);
        if (h.len == 0) {
            rv = frame_done(t);
            if (rv != TETHER_OK) {
                break;
            }
        }
    }
    if (t->close_rx) {
        off = t->ilen; /* nothing after a close frame counts */
    }
    tether__ws_ib_consume(t, off);
    return rv;
}

static size_t db_copy_out(struct ws_transport *t, const struct iovec *iov, int iovcnt)
{
    size_t n = 0;
    for (int i = 0; i < iovcnt && t->dlen > 0; i++) {
        size_t k = TETHER__MIN(iov[i].iov_len, t->dlen);
        memcpy(iov[i].iov_base, t->db + t->doff, k);
        t->doff += k;
        t->dlen -= k;
        n += k;
    }
    if (t->dlen == 0) {
        t->doff = 0;
        if (t->dcap > 2 * TETHER__WS_IB_CHUNK) {
            free(t->db);
            t->db = NULL;
            t->dcap = 0;
        }
    }
    return n;
}

/* Parses ib with the reader's buffers as the first destination; returns
 * the bytes put there in *got. */
static int parse_into(struct ws_transport *t, const struct iovec *iov, int iovcnt, size_t *got)
{
    t->siov = iov;
    t->siovcnt = iovcnt;
    t->sidx = 0;
    t->soff = 0;
    t->sgot = 0;
    int rv = ws_parse(t);
    *got = t->sgot;
    t->siov = NULL;
    return rv;
}

/* Input ended inside a message or frame, or cleanly between them. */
static int read_eof(struct ws_transport *t)
{
    t->eof = true;
    t->rx_code = 1006;
    if (t->in_msg || t->ilen > 0) {
        return tether__ws_fail(t, TETHER_ETRUNCATED,
                               "peer closed the connection inside a WebSocket %s (1006)",
                               t->in_msg ? "message" : "frame header");
    }
    snprintf(t->eof_detail, sizeof t->eof_detail,
             "peer closed the connection without a WebSocket close frame (1006)");
    return TETHER_OK;
}

/* Reads payload of the current (unfragmented) data frame into v. */
static int read_direct(struct ws_transport *t, const struct iovec *v, size_t *nread)
{
    struct iovec d = {v->iov_base, (size_t)TETHER__MIN((uint64_t)v->iov_len, t->fr_left)};
    size_t n = 0;
    int rv = t->in->ops->readv(t->in, &d, 1, &n);
    if (rv != TETHER_OK) {
        return rv;
    }
    if (n == 0) {
        return read_eof(t);
    }
    if (t->c->live != NULL) {
        t->c->live->last_rx = tether__loop_time(t->c->h.loop);
    }
    uint8_t *p = d.iov_base;
    if (t->fr_masked) {
        tether__ws_mask(p, n, t->fr_mask, t->fr_pos);
    }
    if (t->msg_op == TETHER__WS_OP_TEXT) {
        t->utf8 = tether__utf8_feed(t->utf8, p, n);
        if (t->utf8 == TETHER__UTF8_BAD) {
            return tether__ws_violation(t, TETHER_EPROTO, 1007, "invalid UTF-8 in a text message");
        }
    }
    t->fr_left -= n;
    t->fr_pos += n;
    if (t->fr_left == 0) {
        rv = frame_done(t);
        if (rv != TETHER_OK) {
            return rv;
        }
    }
    *nread = n;
    return TETHER_OK;
}

int tether__ws_readv(struct tether_transport *tr, const struct iovec *iov, int iovcnt,
                     size_t *nread)
{
    struct ws_transport *t = (struct ws_transport *)tr;
    *nread = 0;
    if (t->olen > 0) {
        int rv = tether__ws_ob_flush(t); /* pongs and the close frame go out from here too */
        if (rv != TETHER_OK && rv != TETHER_EAGAIN) {
            return rv;
        }
    }
    if (t->violated) {
        /* Lingering after our close frame: what the peer still sends is
         * read and dropped. */
        return t->in->ops->readv(t->in, iov, iovcnt, nread);
    }
    for (int round = 0; round < RD_ROUNDS; round++) {
        if (t->dlen > 0) {
            *nread = db_copy_out(t, iov, iovcnt);
            return TETHER_OK;
        }
        if (t->close_rx || t->eof) {
            t->eof = true;
            return TETHER_OK; /* end of stream */
        }
        if (t->ib_fresh) {
            t->ib_fresh = false;
            int rv = parse_into(t, iov, iovcnt, nread);
            if (rv != TETHER_OK || *nread > 0) {
                return rv;
            }
            continue;
        }
        if (t->fr_active && !t->msg_frag && t->ilen == 0 && iovcnt > 0 && iov[0].iov_len > 0) {
            /* The rest of an unfragmented message's payload goes from the
             * socket straight into the reader's buffer and is unmasked
             * there: no pass through ib. */
            return read_direct(t, &iov[0], nread);
        }
        /* As much as the reader can take (the frames of small messages
         * are about as long as their len32 form), so that a short read
         * still means the socket is drained. */
        size_t chunk = TETHER__WS_IB_CHUNK;
        size_t want = 0;
        for (int k = 0; k < iovcnt; k++) {
            want += iov[k].iov_len;
        }
        chunk = TETHER__MAX(chunk, TETHER__MIN(want, (size_t)TETHER__WS_IB_MAX_READ));
        if (tether__ws_buf_reserve(&t->ib, &t->icap, t->ilen + chunk) != TETHER_OK) {
            return tether__ws_fail(t, TETHER_ENOMEM, "out of memory for the input buffer");
        }
        struct iovec v = {t->ib + t->ilen, chunk};
        size_t n = 0;
        int rv = t->in->ops->readv(t->in, &v, 1, &n);
        if (rv == TETHER_EAGAIN && t->ilen == 0) {
            /* Drained: an idle connection holds no input buffer. */
            free(t->ib);
            t->ib = NULL;
            t->icap = 0;
        }
        if (rv != TETHER_OK) {
            return rv;
        }
        if (n == 0) {
            return read_eof(t);
        }
        t->ilen += n;
        if (t->c->live != NULL) {
            /* The peer is talking even when these bytes only extend a
             * fragmented message, which reaches the connection whole
             * (idle_timeout_ms counts from here). */
            t->c->live->last_rx = tether__loop_time(t->c->h.loop);
        }
        rv = parse_into(t, iov, iovcnt, nread);
        if (rv != TETHER_OK || *nread > 0) {
            return rv;
        }
        if (t->icap > 2 * TETHER__WS_IB_MAX_READ && t->ilen < TETHER__WS_IB_CHUNK) {
            uint8_t *p = realloc(t->ib, TETHER__WS_IB_CHUNK + t->ilen);
            if (p != NULL) {
                t->ib = p;
                t->icap = TETHER__WS_IB_CHUNK + t->ilen;
            }
        }
    }
    if (t->dlen > 0) {
        *nread = db_copy_out(t, iov, iovcnt);
        return TETHER_OK;
    }
    return TETHER_EAGAIN;
}
