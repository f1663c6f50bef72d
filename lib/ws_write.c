/* SPDX-License-Identifier: MIT */
/* The write side of the WebSocket layer: its output buffer (the upgrade,
 * control frames it sends on its own, the close frame), the loop's pool of
 * masking keys and its masking buffer, and writev: the frames the
 * connection queued in message mode pass through unchanged (but for a
 * client's large zero-copy payloads, masked a chunk at a time on their
 * way out), while the len32 bytes queued before the upgrade finished are
 * translated into frames (each data message one frame, masked on clients;
 * tether control frames become pings, pongs and the close code, or travel
 * as they are between tether ends), encoded into a buffer the loop shares
 * so that only what the socket does not take stays with the layer. */
#include "ws.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- per-loop state: masking keys, the shared output buffer ------------ */

#define SHARED_OB_SIZE (TETHER__WS_OB_MAX + 1024u) /* bound of one burst (see writev) */

static const char rnd_key; /* its address identifies the state */

static void rnd_cleanup(tether_loop *loop, struct tether__loop_ext *ext)
{
    (void)loop;
    struct tether__ws_rnd *r = tether__container_of(ext, struct tether__ws_rnd, ext);
    EVP_CIPHER_CTX_free(r->ctr);
    free(r->shared_ob);
    free(r->chunk);
    free(r->spare);
    OPENSSL_cleanse(r->rnd, sizeof r->rnd);
    free(r);
}

struct tether__ws_rnd *tether__ws_rnd_get(tether_loop *loop)
{
    bool fresh;
    struct tether__ws_rnd *r =
        TETHER__LOOP_EXT_GET(loop, &rnd_key, struct tether__ws_rnd, ext, rnd_cleanup, &fresh);
    if (r != NULL && fresh) {
        r->off = TETHER__WS_RND_POOL; /* empty: the first key refills it */
    }
    return r;
}

/* Keystream drawn under one key before the next is taken. */
#define RND_RESEED_POOLS 256u /* 1 MiB: 256 Ki masking keys */

static void rnd_from_os(uint8_t *p, size_t n)
{
    if (RAND_bytes(p, (int)n) != 1) {
        /* OpenSSL's generator does not fail once seeded; should it, the
         * kernel's is the fallback, never a predictable key. */
        for (size_t i = 0; i < n; i += 256) {
            (void)!getentropy(p + i, TETHER__MIN(n - i, (size_t)256)); /* (256 a call at most) */
        }
    }
}

void tether__ws_rnd_refill(struct tether__ws_rnd *r)
{
    /* One pool per loop: a connection holds no random bytes of its own,
     * and each key is used once. The pool is AES-128-CTR keystream under
     * a key (and IV) from OpenSSL's generator, renewed every
     * RND_RESEED_POOLS pools, as its own CTR-DRBG produces its output,
     * but without that generator's per-call work (locks, parameters, a
     * getpid() system call for fork detection, a cleared buffer), which
     * cost more than the masking of a small message. */
    if (r->ctr == NULL || r->uses >= RND_RESEED_POOLS) {
        uint8_t kiv[32];
        rnd_from_os(kiv, sizeof kiv);
        if (r->ctr == NULL) {
            r->ctr = EVP_CIPHER_CTX_new();
        }
        if (r->ctr != NULL &&
            EVP_EncryptInit_ex(r->ctr, EVP_aes_128_ctr(), NULL, kiv, kiv + 16) != 1) {
            EVP_CIPHER_CTX_free(r->ctr);
            r->ctr = NULL;
        }
        OPENSSL_cleanse(kiv, sizeof kiv);
        r->uses = 0;
    }
    int outl = 0;
    if (r->ctr == NULL ||
        EVP_EncryptUpdate(r->ctr, r->rnd, &outl, r->rnd, (int)sizeof r->rnd) != 1 ||
        outl != (int)sizeof r->rnd) {
        rnd_from_os(r->rnd, sizeof r->rnd); /* (out of memory: the slower way) */
    }
    /* (The keystream is XORed over the used pool: as unpredictable as
     * the keystream itself, and no buffer to clear first.) */
    r->uses++;
    r->off = 0;
}

/* ob becomes the loop's buffer (ob is empty). */
static void ob_borrow(struct ws_transport *t)
{
    struct tether__ws_rnd *r = t->rnd;
    if (r->shared_ob == NULL) {
        r->shared_ob = malloc(SHARED_OB_SIZE);
        if (r->shared_ob == NULL) {
            return; /* ob stays private: slower, not wrong */
        }
    }
    free(t->ob);
    t->ob = r->shared_ob;
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

/* ---- the output buffer ---------------------------------------------------- */

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

size_t tether__ws_frame_encode(struct ws_transport *t, uint8_t *out, uint8_t op, const uint8_t *p,
                               size_t n)
{
    uint8_t key[4];
    if (!t->server) {
        tether__ws_mask_key(t, key);
    }
    size_t hl = tether__ws_hdr_encode(out, true, op, n, t->server ? NULL : key);
    if (t->server) {
        memcpy(out + hl, p, n);
    } else {
        tether__ws_mask_copy(out + hl, p, n, key, 0);
    }
    return hl + n;
}

int tether__ws_ob_frame(struct ws_transport *t, uint8_t op, const uint8_t *p, size_t n)
{
    uint8_t *dst = tether__ws_ob_room(t, TETHER__WS_HDR_MAX + n);
    if (dst == NULL) {
        return TETHER_ENOMEM;
    }
    t->olen += tether__ws_frame_encode(t, dst, op, p, n);
    return TETHER_OK;
}

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

/* ---- writing: the len32 bytes queued before the upgrade ------------------ */

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

void tether__ws_set_close(struct ws_transport *t, unsigned reason, const char *text, size_t tl)
{
    if (t->tx_code != 0) {
        return;
    }
    t->tx_code = goaway_code(reason);
    tl = TETHER__MIN(tl, (size_t)TETHER__WS_REASON_MAX);
    memcpy(t->tx_reason, text, tl);
    t->tx_reason[tl] = '\0';
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
            tether__ws_set_close(t, ((unsigned)t->wcbuf[1] << 8) | t->wcbuf[2],
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

/* Translates the first of the len32 bytes queued before the upgrade. */
static int legacy_writev(struct ws_transport *t, const struct iovec *iov, int iovcnt,
                         size_t *nwritten)
{
    struct iovec v[64];
    int n = 0;
    size_t left = t->legacy;
    for (int i = 0; i < iovcnt && n < 64 && left > 0; i++, n++) {
        v[n] = iov[i];
        v[n].iov_len = TETHER__MIN(v[n].iov_len, left);
        left -= v[n].iov_len;
    }
    ob_borrow(t);
    size_t used = 0;
    int rv = ws_encode(t, v, n, &used);
    int r2 = ob_return(t);
    if (rv == TETHER_OK && r2 != TETHER_OK) {
        rv = tether__ws_fail(t, r2, "out of memory keeping unsent output");
    }
    if (rv != TETHER_OK) {
        return rv;
    }
    t->legacy -= used;
    *nwritten = used;
    /* (Where the translated part ends the count falls short of the
     * iovecs: the connection takes that as a full socket and comes back
     * when it is writable, to message mode.) */
    return used > 0 ? TETHER_OK : TETHER_EAGAIN;
}

/* ---- writing: payloads masked on their way out (ws.h) ------------------- */

/* The masking buffer (TETHER__WS_CHUNK, ws.h: why 1 MiB). */
#define LAZY_CHUNK TETHER__WS_CHUNK
#define LAZY_IOV 64 /* iovecs per write */

uint8_t *tether__ws_chunk_get(struct tether__ws_rnd *r)
{
    if (r->chunk == NULL) {
        r->chunk = malloc(TETHER__WS_CHUNK);
    }
    r->chunk_t = NULL;
    return r->chunk;
}

int tether__ws_lazy_add(struct ws_transport *t, const uint8_t *p, size_t len, const uint8_t key[4])
{
    if (t->lz_n == t->lz_cap) {
        uint32_t cap = t->lz_cap != 0 ? t->lz_cap * 2 : 4;
        struct tether__ws_lazy *a = malloc(cap * sizeof *a);
        if (a == NULL) {
            return TETHER_ENOMEM;
        }
        for (uint32_t i = 0; i < t->lz_n; i++) {
            a[i] = t->lz[(t->lz_head + i) % t->lz_cap];
        }
        free(t->lz);
        t->lz = a;
        t->lz_cap = cap;
        t->lz_head = 0;
    }
    struct tether__ws_lazy *z = &t->lz[(t->lz_head + t->lz_n) % t->lz_cap];
    z->p = p;
    z->len = len;
    z->done = 0;
    memcpy(z->key, key, 4);
    t->lz_n++;
    return TETHER_OK;
}

/* The ring is empty: idle connections keep none. */
static void lazy_free(struct ws_transport *t)
{
    free(t->lz);
    t->lz = NULL;
    t->lz_head = t->lz_n = t->lz_cap = 0;
}

void tether__ws_lazy_forget(struct ws_transport *t)
{
    if (t->rnd->chunk_t == t) {
        t->rnd->chunk_t = NULL; /* another layer may come to live at this address */
    }
    free(t->lz);
    t->lz = NULL;
}

void tether__ws_lazy_drop_last(struct ws_transport *t)
{
    if (--t->lz_n == 0) {
        lazy_free(t);
    }
}

/* writev while lazy payloads are queued: the iovecs pass through, but for
 * the one that starts where the oldest lazy payload's unwritten part
 * starts (the queue is in order, and the caller's memory is never one of
 * the library's own buffers), which goes out a masked chunk at a time.
 * One chunk buffer serves every connection of the loop: what the socket
 * did not take of a chunk is used at the next call if the buffer still
 * holds it for this payload and position, else masked again from the
 * caller's bytes (the same bytes, as a TLS layer retrying a record needs
 * them). */
static int lazy_writev(struct ws_transport *t, const struct iovec *iov, int iovcnt,
                       size_t *nwritten)
{
    if (t->rnd->chunk == NULL && tether__ws_chunk_get(t->rnd) == NULL) {
        return tether__ws_fail(t, TETHER_ENOMEM, "out of memory masking a frame");
    }
    uint8_t *chunk = t->rnd->chunk;
    size_t total = 0;
    int i = 0;
    size_t at = 0; /* bytes of iov[i] written by this call */
    while (i < iovcnt) {
        struct iovec out[LAZY_IOV];
        int n = 0;
        size_t plain = 0;
        struct tether__ws_lazy *z = NULL;
        for (; i < iovcnt && n < LAZY_IOV - 1; i++, at = 0) {
            const uint8_t *b = (const uint8_t *)iov[i].iov_base + at;
            size_t l = iov[i].iov_len - at;
            if (l == 0) {
                continue;
            }
            if (t->lz_n > 0) {
                z = &t->lz[t->lz_head];
                if (b == z->p + z->done) {
                    break;
                }
                z = NULL;
            }
            out[n].iov_base = (void *)b;
            out[n].iov_len = l;
            plain += l;
            n++;
        }
        size_t k = 0;
        if (z != NULL) {
            struct tether__ws_rnd *r = t->rnd;
            k = TETHER__MIN(iov[i].iov_len - at, z->len - z->done);
            if (r->chunk_t == t && r->chunk_src == z->p + z->done &&
                memcmp(r->chunk_key, z->key, 4) == 0) {
                /* What the socket did not take last time, masked already. */
                k = TETHER__MIN(k, r->chunk_n);
                out[n].iov_base = chunk + r->chunk_off;
            } else {
                k = TETHER__MIN(k, (size_t)LAZY_CHUNK);
                tether__ws_mask_copy(chunk, z->p + z->done, k, z->key, z->done);
                out[n].iov_base = chunk;
            }
            r->chunk_t = NULL;
            out[n].iov_len = k;
            n++;
        }
        if (n == 0) {
            break;
        }
        size_t w = 0;
        int rv = t->in->ops->writev(t->in, out, n, &w);
        if (rv != TETHER_OK) {
            *nwritten = total;
            return rv == TETHER_EAGAIN && total > 0 ? TETHER_OK : rv;
        }
        total += w;
        if (z != NULL && w > plain) {
            z->done += w - plain;
            at += w - plain;
            if (z->done == z->len) {
                t->lz_head = (t->lz_head + 1) % t->lz_cap;
                if (--t->lz_n == 0) {
                    lazy_free(t);
                }
            }
        }
        if (w < plain + k) {
            if (z != NULL) {
                /* The socket is full before the chunk's end: the rest of
                 * it stays for the next call (unless another connection's
                 * payload takes the buffer first). */
                struct tether__ws_rnd *r = t->rnd;
                size_t took = w > plain ? w - plain : 0;
                r->chunk_t = t;
                r->chunk_src = z->p + z->done;
                r->chunk_off = (size_t)((uint8_t *)out[n - 1].iov_base - chunk) + took;
                r->chunk_n = k - took;
                memcpy(r->chunk_key, z->key, 4);
            }
            break; /* the socket is full */
        }
        if (z != NULL && at == iov[i].iov_len) {
            i++;
            at = 0;
        }
    }
    *nwritten = total;
    return TETHER_OK;
}

int tether__ws_writev(struct tether_transport *tr, const struct iovec *iov, int iovcnt,
                      size_t *nwritten)
{
    struct ws_transport *t = (struct ws_transport *)tr;
    *nwritten = 0;
    if (TETHER__UNLIKELY(t->olen > 0)) {
        int rv = tether__ws_ob_flush(t);
        if (rv != TETHER_OK) {
            /* EAGAIN: the socket is still full. Taking more now would
             * only try it again for each send; like a socket, the layer
             * says so, and the connection waits until it is writable. */
            return rv;
        }
    }
    if (TETHER__UNLIKELY(t->legacy > 0)) {
        return legacy_writev(t, iov, iovcnt, nwritten);
    }
    if (TETHER__UNLIKELY(t->lz_n > 0)) {
        return lazy_writev(t, iov, iovcnt, nwritten);
    }
    /* Message mode: the queue holds finished frames. */
    return t->in->ops->writev(t->in, iov, iovcnt, nwritten);
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
