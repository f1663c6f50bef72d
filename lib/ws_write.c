/* SPDX-License-Identifier: MIT */
/* The write path of the WebSocket layer: the len32 stream the connection
 * writes becomes WebSocket frames (each data message one frame, masked on
 * clients; tether control frames become pings, pongs and the close code,
 * or travel as they are between tether ends), encoded into a buffer the
 * loop shares so that only what the socket does not take stays with the
 * connection. */
#include "conn_core.h"
#include "ws.h"

#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the loop's shared output buffer --------------------------------------
 *
 * writev encodes into one buffer per loop and hands it to the socket at
 * once; only what the socket does not take is copied into the
 * connection's own ob. Busy connections thus allocate nothing per burst
 * and idle ones hold no output buffer (as conn_read.c does for input). */

#define SHARED_OB_SIZE (TETHER__WS_OB_MAX + 1024u) /* bound of one burst (see writev) */

#define RND_POOL 4096u /* masking keys: 1024 per call of RAND_bytes() */

struct shared_ob {
    uint8_t data[SHARED_OB_SIZE];
    uint8_t rnd[RND_POOL];
    size_t rnd_off; /* RND_POOL: used up */
    struct tether__loop_ext ext;
};

static const char shared_ob_key; /* its address identifies the buffer */

static void shared_ob_cleanup(tether_loop *loop, struct tether__loop_ext *ext)
{
    (void)loop;
    free(tether__container_of(ext, struct shared_ob, ext));
}

static struct shared_ob *shared_get(tether_loop *loop)
{
    struct tether__loop_ext *e = tether__loop_ext_find(loop, &shared_ob_key);
    if (e != NULL) {
        return tether__container_of(e, struct shared_ob, ext);
    }
    struct shared_ob *b = malloc(sizeof *b);
    if (b == NULL) {
        return NULL;
    }
    b->rnd_off = RND_POOL;
    b->ext.key = &shared_ob_key;
    b->ext.cleanup = shared_ob_cleanup;
    tether__loop_ext_add(loop, &b->ext);
    return b;
}

static uint8_t *shared_ob_get(tether_loop *loop)
{
    struct shared_ob *b = shared_get(loop);
    return b != NULL ? b->data : NULL;
}

static void random_fill(uint8_t *p, size_t n)
{
    if (RAND_bytes(p, (int)n) != 1) {
        /* OpenSSL's generator does not fail once seeded; should it, the
         * kernel's is the fallback, never a predictable key. */
        (void)!getentropy(p, n);
    }
}

void tether__ws_mask_key(struct ws_transport *t, uint8_t key[4])
{
    /* One pool per loop: a connection holds no random bytes of its own,
     * and each key is used once. */
    struct shared_ob *b = shared_get(t->c->h.loop);
    if (b == NULL) {
        random_fill(key, 4);
        return;
    }
    if (b->rnd_off + 4 > RND_POOL) {
        random_fill(b->rnd, RND_POOL);
        b->rnd_off = 0;
    }
    memcpy(key, b->rnd + b->rnd_off, 4);
    b->rnd_off += 4;
}

/* ob becomes the loop's buffer (ob is empty). */
static void ob_borrow(struct ws_transport *t)
{
    uint8_t *b = shared_ob_get(t->c->h.loop);
    if (b == NULL) {
        return; /* ob stays private: slower, not wrong */
    }
    free(t->ob);
    t->ob = b;
    t->ocap = SHARED_OB_SIZE;
    t->ooff = 0;
    t->ob_shared = true;
}

/* ob becomes private again: what the socket did not take is copied. */
static int ob_return(struct ws_transport *t)
{
    if (!t->ob_shared) {
        return TETHER_OK;
    }
    uint8_t *b = t->ob;
    t->ob_shared = false;
    t->ob = NULL;
    t->ocap = 0;
    if (t->olen == 0) {
        t->ooff = 0;
        return TETHER_OK;
    }
    t->ob = malloc(t->olen);
    if (t->ob == NULL) {
        t->olen = 0;
        return TETHER_ENOMEM;
    }
    memcpy(t->ob, b + t->ooff, t->olen);
    t->ocap = t->olen;
    t->ooff = 0;
    return TETHER_OK;
}

/* Room for n more bytes at the end of ob (olen is not advanced). */
uint8_t *tether__ws_ob_room_slow(struct ws_transport *t, size_t n)
{
    if (TETHER__UNLIKELY(t->ob_shared && t->ooff + t->olen + n > t->ocap)) {
        /* Beyond the shared buffer (not expected: writev keeps a burst
         * within it): go private. */
        if (ob_return(t) != TETHER_OK) {
            return NULL;
        }
    }
    if (t->ooff > 0 && t->ooff + t->olen + n > t->ocap) {
        memmove(t->ob, t->ob + t->ooff, t->olen);
        t->ooff = 0;
    }
    if (tether__ws_buf_reserve(&t->ob, &t->ocap, t->ooff + t->olen + n) != TETHER_OK) {
        return NULL;
    }
    return t->ob + t->ooff + t->olen;
}

/* ---- writing: the len32 stream to WebSocket frames ---------------------- */

/* Close codes for the reasons of a liveness GOAWAY (frame.h). */
static int goaway_code(unsigned reason)
{
    switch (reason) {
    case TETHER__GOAWAY_FRAME:
    case TETHER__GOAWAY_WRITE:
        return 1008; /* the peer broke our rules for slow peers */
    case TETHER__GOAWAY_IDLE:
    case TETHER__GOAWAY_HEARTBEAT:
    case TETHER__GOAWAY_MAX_AGE:
    case TETHER__GOAWAY_SHUTDOWN:
        return 1001;
    default:
        return 1000;
    }
}

/* The close frame's code and reason for a GOAWAY reason (the first one
 * chosen stays). */
static void set_close(struct ws_transport *t, unsigned reason, const char *text, size_t tl)
{
    if (t->tx_code != 0) {
        return;
    }
    t->tx_code = goaway_code(reason);
    tl = TETHER__MIN(tl, (size_t)TETHER__WS_REASON_MAX);
    memcpy(t->tx_reason, text, tl);
    t->tx_reason[tl] = '\0';
}

void tether__ws_close_reason(tether_conn *c, unsigned reason, const char *text)
{
    if (tether__conn_ws(c) != NULL) {
        set_close(tether__conn_ws(c), reason, text != NULL ? text : "",
                  text != NULL ? strlen(text) : 0);
    }
}

/* A tether control frame from the connection is complete. */
static int ctrl_done(struct ws_transport *t)
{
    uint8_t type = t->wctrl;
    t->wctrl = 0;
    if (t->close_tx) {
        return TETHER_OK;
    }
    switch (type) {
    case TETHER__CTRL_PING:
        return tether__ws_ob_frame(t, TETHER__WS_OP_PING, t->wcbuf,
                                   TETHER__MIN(t->wclen, (size_t)TETHER__WS_CTRL_MAX));
    case TETHER__CTRL_PONG:
        if (t->ping_due) {
            t->ping_due = false;
            return tether__ws_ob_frame(t, TETHER__WS_OP_PONG, t->ping, t->ping_len);
        }
        return TETHER_OK;
    case TETHER__CTRL_GOAWAY:
        if (t->wclen >= TETHER__CTRL_GOAWAY_MIN) {
            set_close(t, ((unsigned)t->wcbuf[1] << 8) | t->wcbuf[2],
                      (const char *)t->wcbuf + TETHER__CTRL_GOAWAY_MIN,
                      t->wclen - TETHER__CTRL_GOAWAY_MIN);
        }
        return TETHER_OK;
    case TETHER__WS_MARK_TEXT:
    case TETHER__WS_MARK_BINARY:
        t->text = type == TETHER__WS_MARK_TEXT;
        return TETHER_OK;
    default:
        return TETHER_OK; /* HELLO: the upgrade did its work */
    }
}

/* tctl: the header of the frame that carries the tether control frame in
 * whdr (payload: its 4 header bytes, then the wleft bytes that follow). */
static int ctrl_frame_start(struct ws_transport *t)
{
    uint8_t h[TETHER__WS_HDR_MAX + TETHER__CTRL_HDR_LEN];
    if (!t->server) {
        tether__ws_mask_key(t, t->wmask);
    }
    size_t hl = tether__ws_hdr_encode(h, true, TETHER__WS_OP_BINARY,
                                      TETHER__CTRL_HDR_LEN + t->wleft, t->server ? NULL : t->wmask);
    h[0] |= (uint8_t)(TETHER__WS_RSV2 << 4);
    memcpy(h + hl, t->whdr, TETHER__CTRL_HDR_LEN);
    if (!t->server) {
        tether__ws_mask(h + hl, TETHER__CTRL_HDR_LEN, t->wmask, 0);
    }
    t->wpos = TETHER__CTRL_HDR_LEN;
    return tether__ws_ob_add(t, h, hl + TETHER__CTRL_HDR_LEN);
}

static int ws_encode(struct ws_transport *t, const struct iovec *iov, int iovcnt, size_t *out_used);

int tether__ws_writev(struct tether_transport *tr, const struct iovec *iov, int iovcnt,
                      size_t *nwritten)
{
    struct ws_transport *t = (struct ws_transport *)tr;
    *nwritten = 0;
    int rv = tether__ws_ob_flush(t);
    if (rv != TETHER_OK) {
        /* EAGAIN: the socket is still full. Taking more now would only
         * try it again for each send; like a socket, the layer says so,
         * and the connection waits until it is writable. */
        return rv;
    }
    ob_borrow(t);
    size_t used = 0;
    rv = ws_encode(t, iov, iovcnt, &used);
    int r2 = ob_return(t);
    if (rv == TETHER_OK && r2 != TETHER_OK) {
        rv = tether__ws_fail(t, r2, "out of memory keeping unsent output");
    }
    if (rv != TETHER_OK) {
        return rv;
    }
    *nwritten = used;
    return used > 0 ? TETHER_OK : TETHER_EAGAIN;
}

/* Encodes iov into ob and writes it, while the socket takes it all. */
static int ws_encode(struct ws_transport *t, const struct iovec *iov, int iovcnt, size_t *out_used)
{
    int rv;
    size_t used = 0;
    int i = 0;
    size_t at = 0; /* offset into iov[i] */
    /* Encode up to TETHER__WS_OB_MAX, hand it to the socket, and go on
     * while the socket takes everything: like a socket, the layer accepts
     * less than it was given only when the socket is full. */
    for (;;) {
        for (; i < iovcnt && t->olen < TETHER__WS_OB_MAX; i++, at = 0) {
            const uint8_t *p = (const uint8_t *)iov[i].iov_base + at;
            size_t n = iov[i].iov_len - at;
            while (n > 0 && t->olen < TETHER__WS_OB_MAX) {
                size_t k;
                if (t->whave == 0 && n >= 4 && p[0] != TETHER__CTRL_MARK && !t->close_tx) {
                    /* A whole data message in this iovec: its frame header
                     * and (masked) payload straight into ob. */
                    size_t len = tether__get_be32(p);
                    if (n - 4 >= len && len <= TETHER__WS_OB_MAX - t->olen) {
                        uint8_t *dst = tether__ws_ob_room(t, TETHER__WS_HDR_MAX + len);
                        if (dst == NULL) {
                            return tether__ws_fail(t, TETHER_ENOMEM,
                                                   "out of memory encoding a frame");
                        }
                        uint8_t op = t->text ? TETHER__WS_OP_TEXT : TETHER__WS_OP_BINARY;
                        size_t hl;
                        if (t->server) {
                            hl = tether__ws_hdr_encode(dst, true, op, len, NULL);
                            memcpy(dst + hl, p + 4, len);
                        } else if (len < 126) {
                            /* The common small frame, header inline. */
                            dst[0] = (uint8_t)(0x80u | op);
                            dst[1] = (uint8_t)(0x80u | len);
                            tether__ws_mask_key(t, dst + 2);
                            hl = 6;
                            tether__ws_mask_copy(dst + hl, p + 4, len, dst + 2, 0);
                        } else {
                            tether__ws_mask_key(t, t->wmask);
                            hl = tether__ws_hdr_encode(dst, true, op, len, t->wmask);
                            tether__ws_mask_copy(dst + hl, p + 4, len, t->wmask, 0);
                        }
                        t->olen += hl + len;
                        p += 4 + len, n -= 4 + len, used += 4 + len;
                        continue;
                    }
                }
                if (t->whave < 4) {
                    k = TETHER__MIN(n, (size_t)(4 - t->whave));
                    memcpy(t->whdr + t->whave, p, k);
                    t->whave = (uint8_t)(t->whave + k);
                    p += k, n -= k, used += k;
                    if (t->whave < 4) {
                        break;
                    }
                    if (t->whdr[0] == TETHER__CTRL_MARK && t->tctl &&
                        t->whdr[1] != TETHER__WS_MARK_TEXT &&
                        t->whdr[1] != TETHER__WS_MARK_BINARY) {
                        /* Between tether ends the control frame travels
                         * as it is, in a frame of its own (ws.h). */
                        t->wctrl = 0;
                        t->wleft = ((size_t)t->whdr[2] << 8) | t->whdr[3];
                        rv = t->close_tx ? TETHER_OK : ctrl_frame_start(t);
                    } else if (t->whdr[0] == TETHER__CTRL_MARK) {
                        t->wctrl = t->whdr[1];
                        t->wleft = ((size_t)t->whdr[2] << 8) | t->whdr[3];
                        t->wclen = 0;
                        rv = t->wleft == 0 ? ctrl_done(t) : TETHER_OK;
                    } else {
                        t->wctrl = 0;
                        t->wleft = tether__get_be32(t->whdr);
                        t->wpos = 0;
                        rv = TETHER_OK;
                        if (!t->close_tx) {
                            uint8_t h[TETHER__WS_HDR_MAX];
                            if (!t->server) {
                                tether__ws_mask_key(t, t->wmask);
                            }
                            size_t hl = tether__ws_hdr_encode(
                                h, true, t->text ? TETHER__WS_OP_TEXT : TETHER__WS_OP_BINARY,
                                t->wleft, t->server ? NULL : t->wmask);
                            rv = tether__ws_ob_add(t, h, hl);
                        }
                    }
                    if (rv != TETHER_OK) {
                        return tether__ws_fail(t, rv, "out of memory encoding a frame");
                    }
                    if (t->wleft == 0) {
                        t->whave = 0;
                    }
                    continue;
                }
                k = (size_t)TETHER__MIN((uint64_t)n, t->wleft);
                if (t->wctrl != 0) {
                    size_t room = sizeof t->wcbuf - t->wclen;
                    memcpy(t->wcbuf + t->wclen, p, TETHER__MIN(k, room));
                    t->wclen += TETHER__MIN(k, room);
                } else {
                    k = TETHER__MIN(k, TETHER__WS_OB_MAX - t->olen);
                    if (!t->close_tx) {
                        uint8_t *dst = tether__ws_ob_room(t, k);
                        if (dst == NULL) {
                            return tether__ws_fail(t, TETHER_ENOMEM,
                                                   "out of memory encoding a frame");
                        }
                        if (t->server) {
                            memcpy(dst, p, k);
                        } else {
                            tether__ws_mask_copy(dst, p, k, t->wmask, t->wpos);
                        }
                        t->olen += k;
                    }
                    t->wpos += k;
                }
                p += k, n -= k, used += k;
                t->wleft -= k;
                if (t->wleft == 0) {
                    t->whave = 0;
                    if (t->wctrl != 0 && ctrl_done(t) != TETHER_OK) {
                        return tether__ws_fail(t, TETHER_ENOMEM, "out of memory encoding a frame");
                    }
                }
            }
            if (n > 0) {
                at = iov[i].iov_len - n; /* the buffer filled up inside this iovec */
                break;
            }
        }
        rv = tether__ws_ob_flush(t);
        if (rv != TETHER_OK && rv != TETHER_EAGAIN) {
            return rv;
        }
        if (i >= iovcnt || t->olen > 0) {
            break; /* all encoded, or the socket is full */
        }
    }
    if (!t->ob_shared && t->olen == 0 && t->ocap > 4096) {
        /* The burst is out: idle connections keep no large buffer. */
        free(t->ob);
        t->ob = NULL;
        t->ocap = 0;
    }
    *out_used = used;
    return TETHER_OK;
}
