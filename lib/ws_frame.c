/* SPDX-License-Identifier: MIT */
/* The WebSocket frame codec (RFC 6455 section 5): frame headers, masking,
 * incremental UTF-8 validation, close codes and the accept key. Pure
 * functions of their arguments: no connection state, no allocation. */
#include "ws.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <string.h>

int tether__ws_hdr_decode(const uint8_t *p, size_t n, struct tether__ws_hdr *h)
{
    if (n < 2) {
        return TETHER_EAGAIN;
    }
    h->fin = (p[0] & 0x80u) != 0;
    h->rsv = (uint8_t)((p[0] >> 4) & 0x7u);
    h->opcode = p[0] & 0x0Fu;
    h->masked = (p[1] & 0x80u) != 0;
    uint64_t len = p[1] & 0x7Fu;
    size_t off = 2;
    if (len == 126) {
        if (n < 4) {
            return TETHER_EAGAIN;
        }
        len = ((uint64_t)p[2] << 8) | p[3];
        off = 4;
    } else if (len == 127) {
        if (n < 10) {
            return TETHER_EAGAIN;
        }
        len = 0;
        for (int i = 0; i < 8; i++) {
            len = (len << 8) | p[2 + i];
        }
        if (len >> 63) {
            return TETHER_EPROTO; /* "the most significant bit MUST be 0" */
        }
        off = 10;
    }
    if (h->masked) {
        if (n < off + 4) {
            return TETHER_EAGAIN;
        }
        memcpy(h->mask, p + off, 4);
        off += 4;
    }
    h->len = len;
    h->hdr_len = off;
    return TETHER_OK;
}

size_t tether__ws_hdr_encode(uint8_t *out, bool fin, uint8_t opcode, uint64_t len,
                             const uint8_t *mask)
{
    size_t off = 2;
    out[0] = (uint8_t)((fin ? 0x80u : 0u) | (opcode & 0x0Fu));
    uint8_t m = mask != NULL ? 0x80u : 0u;
    if (len < 126) {
        out[1] = (uint8_t)(m | len);
    } else if (len <= 0xFFFF) {
        out[1] = (uint8_t)(m | 126u);
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        off = 4;
    } else {
        out[1] = (uint8_t)(m | 127u);
        for (int i = 0; i < 8; i++) {
            out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
        }
        off = 10;
    }
    if (mask != NULL) {
        memcpy(out + off, mask, 4);
        off += 4;
    }
    return off;
}

/* The mask key as a 64-bit word whose bytes in memory order are the key
 * starting at payload offset pos: one rotate instead of a byte loop. */
static inline uint64_t mask_word(const uint8_t mask[4], uint64_t pos)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint32_t k;
    memcpy(&k, mask, 4);
    unsigned r = (unsigned)(pos & 3u) * 8u;
    if (r != 0) {
        k = (k >> r) | (k << (32u - r));
    }
    return (uint64_t)k | ((uint64_t)k << 32);
#else
    uint8_t b[8];
    for (int i = 0; i < 8; i++) {
        b[i] = mask[(pos + (uint64_t)i) & 3u];
    }
    uint64_t k64;
    memcpy(&k64, b, 8);
    return k64;
#endif
}

/* dst = src ^ key over n bytes, 64 bytes per round where it can; dst may
 * be src. Masking runs over every byte a client sends and a server
 * receives. */
typedef uint64_t mask_vec __attribute__((vector_size(16))); /* SSE2 on x86-64 */

static inline void mask_run(uint8_t *dst, const uint8_t *src, size_t n, uint64_t k64)
{
    size_t i = 0;
    mask_vec kv = {k64, k64};
    for (; i + 64 <= n; i += 64) {
        /* Four separate vectors: an array would go through the stack. */
        mask_vec a, b, c, d;
        memcpy(&a, src + i, 16);
        memcpy(&b, src + i + 16, 16);
        memcpy(&c, src + i + 32, 16);
        memcpy(&d, src + i + 48, 16);
        a ^= kv;
        b ^= kv;
        c ^= kv;
        d ^= kv;
        memcpy(dst + i, &a, 16);
        memcpy(dst + i + 16, &b, 16);
        memcpy(dst + i + 32, &c, 16);
        memcpy(dst + i + 48, &d, 16);
    }
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= k64;
        memcpy(dst + i, &v, 8);
    }
    if (i < n) {
        uint8_t k[8];
        memcpy(k, &k64, 8);
        for (size_t j = 0; i < n; i++, j++) {
            dst[i] = src[i] ^ k[j];
        }
    }
}

/* Large payloads: 256 bytes a round in 32-byte vectors, which are AVX2
 * registers where the CPU has them (chosen once, at load time) and pairs
 * of SSE2 registers elsewhere. Returns the bytes done (a multiple of 256,
 * so the key word stays in phase for the rest). Eight vectors a round:
 * the loop's own instructions (count, compare, branch) then cost less
 * than one per 64 bytes. */
#if defined(__x86_64__) && defined(__has_attribute) && !defined(__SANITIZE_THREAD__)
/* (Not under ThreadSanitizer: the clones' ifunc resolver runs while the
 * dynamic loader relocates, before TSan is set up, and crashes there.) */
#if __has_attribute(target_clones)
#define MASK_CLONES __attribute__((target_clones("avx2", "default")))
#endif
#endif
#ifndef MASK_CLONES
#define MASK_CLONES
#endif
#define MASK_WIDE_MIN 1024u

typedef uint64_t mask_wvec __attribute__((vector_size(32)));

MASK_CLONES static size_t mask_wide(uint8_t *dst, const uint8_t *src, size_t n, uint64_t k64)
{
    mask_wvec kv = {k64, k64, k64, k64};
    size_t done = n & ~(size_t)255;
    /* (Two pointers and an end: no index to keep besides.) */
    for (const uint8_t *end = src + done; src < end; src += 256, dst += 256) {
        /* Separate vectors: an array would go through the stack. */
        mask_wvec a, b, c, d, e, f, g, h;
        memcpy(&a, src, 32);
        memcpy(&b, src + 32, 32);
        memcpy(&c, src + 64, 32);
        memcpy(&d, src + 96, 32);
        memcpy(&e, src + 128, 32);
        memcpy(&f, src + 160, 32);
        memcpy(&g, src + 192, 32);
        memcpy(&h, src + 224, 32);
        a ^= kv;
        b ^= kv;
        c ^= kv;
        d ^= kv;
        e ^= kv;
        f ^= kv;
        g ^= kv;
        h ^= kv;
        memcpy(dst, &a, 32);
        memcpy(dst + 32, &b, 32);
        memcpy(dst + 64, &c, 32);
        memcpy(dst + 96, &d, 32);
        memcpy(dst + 128, &e, 32);
        memcpy(dst + 160, &f, 32);
        memcpy(dst + 192, &g, 32);
        memcpy(dst + 224, &h, 32);
    }
    return done;
}

static void mask_any(uint8_t *dst, const uint8_t *src, size_t n, uint64_t k64)
{
    size_t done = n >= MASK_WIDE_MIN ? mask_wide(dst, src, n, k64) : 0;
    mask_run(dst + done, src + done, n - done, k64);
}

void tether__ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t pos)
{
    mask_any(p, p, n, mask_word(mask, pos));
}

void tether__ws_mask_copy(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t mask[4],
                          uint64_t pos)
{
    /* One pass for the copy and the mask (a client's send path). */
    mask_any(dst, src, n, mask_word(mask, pos));
}

/* State: bits 0-7 the continuation bytes still expected, bits 8-15 and
 * 16-23 the range the next byte must fall in (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF). */
static uint32_t utf8_state(unsigned need, unsigned lo, unsigned hi)
{
    return (uint32_t)need | ((uint32_t)lo << 8) | ((uint32_t)hi << 16);
}

uint32_t tether__utf8_feed(uint32_t state, const uint8_t *p, size_t n)
{
    unsigned need = state & 0xFFu;
    unsigned lo = (state >> 8) & 0xFFu;
    unsigned hi = (state >> 16) & 0xFFu;
    for (size_t i = 0; i < n; i++) {
        unsigned b = p[i];
        if (need == 0) {
            if (b < 0x80u) {
                continue;
            }
            if (b >= 0xC2u && b <= 0xDFu) {
                need = 1, lo = 0x80u, hi = 0xBFu;
            } else if (b == 0xE0u) {
                need = 2, lo = 0xA0u, hi = 0xBFu;
            } else if ((b >= 0xE1u && b <= 0xECu) || b == 0xEEu || b == 0xEFu) {
                need = 2, lo = 0x80u, hi = 0xBFu;
            } else if (b == 0xEDu) {
                need = 2, lo = 0x80u, hi = 0x9Fu;
            } else if (b == 0xF0u) {
                need = 3, lo = 0x90u, hi = 0xBFu;
            } else if (b >= 0xF1u && b <= 0xF3u) {
                need = 3, lo = 0x80u, hi = 0xBFu;
            } else if (b == 0xF4u) {
                need = 3, lo = 0x80u, hi = 0x8Fu;
            } else {
                return TETHER__UTF8_BAD;
            }
            continue;
        }
        if (b < lo || b > hi) {
            return TETHER__UTF8_BAD;
        }
        need--;
        lo = 0x80u;
        hi = 0xBFu;
    }
    return need == 0 ? 0 : utf8_state(need, lo, hi);
}

bool tether__ws_code_ok(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

int tether__ws_accept_key(const char *key, size_t key_len, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    uint8_t buf[128];
    if (key_len + sizeof guid - 1 > sizeof buf) {
        return TETHER_EINVAL;
    }
    memcpy(buf, key, key_len);
    memcpy(buf + key_len, guid, sizeof guid - 1);
    uint8_t md[SHA_DIGEST_LENGTH];
    SHA1(buf, key_len + sizeof guid - 1, md);
    if (EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH) != 28) {
        return TETHER_EINVAL;
    }
    out[28] = '\0';
    return TETHER_OK;
}
