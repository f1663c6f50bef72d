/* SPDX-License-Identifier: MIT */
/* libFuzzer target for the built-in framers (see README.md in this folder).
 *
 * Input layout: byte 0 picks max_msg, byte 1 the number n of chunk sizes
 * (low 4 bits, 0..15) and the framer (high 4 bits), the next n bytes the
 * chunk sizes (cycled), and the rest is the byte stream a peer sends. The
 * framer decodes that stream twice, once
 * whole and once in chunks, and both must cut out the same frames and end
 * the same way. The stream is then used as a payload for an encode/decode
 * round trip, and for the len32 control-frame decoder its first byte and
 * the rest as the type and payload of an encoded control frame. Any broken
 * invariant aborts, which libFuzzer reports. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sanitizer/asan_interface.h>

#include "frame.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s (framer %s)\n", __FILE__, __LINE__,       \
                    #cond, fr->name);                                                              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const size_t max_choices[] = {
    0, 1, 2, 7, 8, 64, 127, 128, 300, 4096, 16384, TETHER__MAX_MSG_LIMIT, SIZE_MAX,
};

/* Delimiters with and without a border (a prefix that is also a suffix),
 * since bordered ones are where a resumed search or the encoder's check
 * could go wrong. */
static const struct {
    const char *bytes;
    size_t len;
} delims[] = {
    {"\n", 1}, {"\r\n", 2}, {"\n\n", 2}, {"aba", 3}, {"\0", 1}, {"<<END>>\n", 8}, {"aaaaaaaa", 8},
};

#define N_FRAMERS (3 + sizeof delims / sizeof delims[0])

struct outcome {
    tether_frame *frames; /* every complete frame, in order */
    size_t n;
    int end; /* TETHER_EAGAIN if the stream simply ran out, else the error */
    size_t consumed;
};

/* Checks what any single decode result must satisfy. */
static void check_result(const tether_framer *fr, bool ctrl, size_t len, size_t max_msg,
                         size_t scan, int rv, const tether_frame *f, const char *detail)
{
    switch (rv) {
    case TETHER_OK:
        FUZZ_CHECK(f->hdr_len <= TETHER_FRAME_HDR_MAX);
        FUZZ_CHECK(f->trailer_len <= TETHER_FRAME_TRAILER_MAX);
        /* A frame of zero bytes would never let the stream advance. */
        FUZZ_CHECK(f->hdr_len + f->trailer_len > 0);
        FUZZ_CHECK(f->hdr_len <= len);
        if (f->control == 0) {
            FUZZ_CHECK(f->payload_len <= max_msg);
        } else {
            FUZZ_CHECK(ctrl);
            FUZZ_CHECK(f->control >= 1 && f->control <= 255);
            FUZZ_CHECK(f->payload_len <= TETHER__CTRL_MAX_PAYLOAD);
        }
        break;
    case TETHER_EAGAIN:
        FUZZ_CHECK(scan <= len);
        break;
    case TETHER_EMSGSIZE:
        FUZZ_CHECK(detail != NULL);
        FUZZ_CHECK(f->payload_len > max_msg);
        break;
    case TETHER_EPROTO:
        FUZZ_CHECK(detail != NULL);
        break;
    default:
        FUZZ_CHECK(!"unexpected decode result");
    }
}

/* Decodes buf[0..len) from its start until it runs out or fails, the way
 * the connection does after a read. Returns the bytes consumed; *out_rv is
 * TETHER_EAGAIN when more input is needed, else the error. */
static size_t decode_all(const tether_framer *fr, bool ctrl, const uint8_t *buf, size_t len,
                         size_t max_msg, size_t *scan, struct outcome *o, int *out_rv)
{
    size_t off = 0;

    for (;;) {
        tether_frame f = {0, 0, 0, 0};
        const char *detail = NULL;
        size_t avail = len - off;
        size_t total;
        int rv = fr->decode(fr, avail == 0 ? NULL : buf + off, avail, max_msg, scan, &f, &detail);

        check_result(fr, ctrl, avail, max_msg, *scan, rv, &f, detail);
        if (rv != TETHER_OK) {
            *out_rv = rv;
            return off;
        }
        /* With max_msg = SIZE_MAX a varint may announce close to 2^64
         * bytes, and the sum would wrap: such a frame never completes. */
        if (f.payload_len > SIZE_MAX - f.hdr_len - f.trailer_len) {
            *out_rv = TETHER_EAGAIN;
            return off;
        }
        total = f.hdr_len + f.payload_len + f.trailer_len;
        if (total > avail) {
            *out_rv = TETHER_EAGAIN;
            return off;
        }
        o->frames[o->n++] = f;
        off += total;
        *scan = 0;
    }
}

static void run_whole(const tether_framer *fr, bool ctrl, const uint8_t *stream, size_t n,
                      size_t max_msg, struct outcome *o)
{
    /* An exactly sized copy, so AddressSanitizer sees any read past it. */
    uint8_t *buf = n == 0 ? NULL : malloc(n);
    size_t scan = 0;

    if (n > 0) {
        memcpy(buf, stream, n);
    }
    o->n = 0;
    o->consumed = decode_all(fr, ctrl, buf, n, max_msg, &scan, o, &o->end);
    free(buf);
}

/* A block of exactly n bytes whose end is the end of a heap block, with the
 * bytes before it poisoned, so that AddressSanitizer sees a read past
 * either end. One arena is reused: a malloc for every chunk made the
 * sanitizer's allocator most of the run time. (Poisoning works on 8-byte
 * granules, so a read up to 7 bytes before the window may go unseen.) */
static uint8_t *window(const uint8_t *src, size_t n)
{
    static uint8_t *arena;
    static size_t cap;
    uint8_t *w;

    if (n > cap || arena == NULL) {
        free(arena);
        cap = n > 4096 ? n : 4096;
        arena = malloc(cap);
        if (arena == NULL) {
            abort();
        }
        /* An exact fit per size class: the arena's end is the block's end. */
    }
    ASAN_UNPOISON_MEMORY_REGION(arena, cap);
    w = arena + (cap - n);
    ASAN_POISON_MEMORY_REGION(arena, cap - n);
    if (n > 0) {
        memcpy(w, src, n);
    }
    return w;
}

static void run_chunked(const tether_framer *fr, bool ctrl, const uint8_t *stream, size_t n,
                        size_t max_msg, const uint8_t *sizes, size_t nsizes, struct outcome *o)
{
    size_t received = 0;
    size_t scan = 0;
    size_t i = 0;

    o->n = 0;
    o->consumed = 0;
    o->end = TETHER_EAGAIN;
    while (received < n) {
        size_t chunk = nsizes == 0 ? n : (size_t)sizes[i++ % nsizes] + 1;
        size_t wlen;
        uint8_t *win;
        int rv;

        if (chunk > n - received) {
            chunk = n - received;
        }
        received += chunk;
        /* The unconsumed bytes, again ending where the block ends. */
        wlen = received - o->consumed;
        win = window(stream + o->consumed, wlen);
        o->consumed += decode_all(fr, ctrl, win, wlen, max_msg, &scan, o, &rv);
        FUZZ_CHECK(o->consumed <= received);
        if (rv != TETHER_EAGAIN) {
            o->end = rv;
            return;
        }
    }
}

static void compare(const tether_framer *fr, const struct outcome *a, const struct outcome *b)
{
    size_t i;

    FUZZ_CHECK(a->n == b->n);
    FUZZ_CHECK(a->end == b->end);
    FUZZ_CHECK(a->consumed == b->consumed);
    for (i = 0; i < a->n; i++) {
        FUZZ_CHECK(a->frames[i].hdr_len == b->frames[i].hdr_len);
        FUZZ_CHECK(a->frames[i].payload_len == b->frames[i].payload_len);
        FUZZ_CHECK(a->frames[i].trailer_len == b->frames[i].trailer_len);
        FUZZ_CHECK(a->frames[i].control == b->frames[i].control);
    }
}

/* True when the delimiter occurs in payload + delimiter before offset len. */
static bool naive_line_breaks(const tether__line_framer *lf, const uint8_t *p, size_t len)
{
    size_t i;
    size_t j;

    for (i = 0; i < len; i++) {
        for (j = 0; j < lf->delim_len; j++) {
            uint8_t c = i + j < len ? p[i + j] : lf->delim[i + j - len];
            if (c != lf->delim[j]) {
                break;
            }
        }
        if (j == lf->delim_len) {
            return true;
        }
    }
    return false;
}

static void round_trip(const tether_framer *fr, const tether__line_framer *lf,
                       const uint8_t *payload, size_t len)
{
    uint8_t hdr[TETHER_FRAME_HDR_MAX];
    uint8_t trailer[TETHER_FRAME_TRAILER_MAX];
    size_t hdr_len = 0;
    size_t trailer_len = 0;
    tether_frame f = {0, 0, 0, 0};
    const char *detail = NULL;
    size_t scan = 0;
    size_t total;
    uint8_t *frame;
    int rv = fr->encode(fr, payload, len, hdr, &hdr_len, trailer, &trailer_len);

    if (lf != NULL) {
        FUZZ_CHECK(rv == TETHER_OK || rv == TETHER_EINVAL);
        FUZZ_CHECK((rv == TETHER_EINVAL) == naive_line_breaks(lf, payload, len));
    } else {
        FUZZ_CHECK(rv == TETHER_OK);
    }
    if (rv != TETHER_OK) {
        return;
    }
    FUZZ_CHECK(hdr_len <= TETHER_FRAME_HDR_MAX && trailer_len <= TETHER_FRAME_TRAILER_MAX);
    total = hdr_len + len + trailer_len;
    frame = malloc(total);
    memcpy(frame, hdr, hdr_len);
    if (len > 0) {
        memcpy(frame + hdr_len, payload, len);
    }
    memcpy(frame + hdr_len + len, trailer, trailer_len);

    rv = fr->decode(fr, frame, total, len, &scan, &f, &detail);
    FUZZ_CHECK(rv == TETHER_OK);
    FUZZ_CHECK(f.hdr_len == hdr_len && f.payload_len == len && f.trailer_len == trailer_len);
    FUZZ_CHECK(f.control == 0);
    FUZZ_CHECK(memcmp(frame + f.hdr_len, payload, len) == 0);
    if (len > 0) {
        scan = 0;
        rv = fr->decode(fr, frame, total, len - 1, &scan, &f, &detail);
        FUZZ_CHECK(rv == TETHER_EMSGSIZE);
    }
    free(frame);
}

/* A control frame (0xFF, type, be16 length, payload) built with
 * tether__len32_ctrl_header() decodes as that control frame in the
 * reference decoder, whatever max_msg is, and the plain len32 framer sees
 * an impossible length in it. */
static void ctrl_round_trip(const tether_framer *fr, uint8_t type, const uint8_t *payload,
                            size_t len, size_t max_msg)
{
    uint8_t *frame;
    tether_frame f = {0, 0, 0, 0};
    const char *detail = NULL;
    size_t scan = 0;
    int rv;

    if (len > TETHER__CTRL_MAX_PAYLOAD) {
        len = TETHER__CTRL_MAX_PAYLOAD;
    }
    frame = malloc(TETHER__CTRL_HDR_LEN + len + 1);
    if (frame == NULL) {
        abort();
    }
    if (type != 0) {
        tether__len32_ctrl_header(frame, type, (uint16_t)len);
    } else {
        /* Type 0 is no control frame: the encoder refuses it (it asserts),
         * so a hostile peer's version is built by hand. */
        frame[0] = TETHER__CTRL_MARK;
        frame[1] = 0;
        frame[2] = (uint8_t)(len >> 8);
        frame[3] = (uint8_t)len;
    }
    FUZZ_CHECK(frame[0] == TETHER__CTRL_MARK && frame[1] == type);
    FUZZ_CHECK(((size_t)frame[2] << 8 | frame[3]) == len);
    if (len > 0) {
        memcpy(frame + TETHER__CTRL_HDR_LEN, payload, len);
    }
    rv = fr->decode(fr, frame, TETHER__CTRL_HDR_LEN + len, max_msg, &scan, &f, &detail);
    if (type == 0) {
        FUZZ_CHECK(rv == TETHER_EPROTO && detail != NULL);
    } else {
        FUZZ_CHECK(rv == TETHER_OK);
        FUZZ_CHECK(f.control == type && f.hdr_len == TETHER__CTRL_HDR_LEN);
        FUZZ_CHECK(f.payload_len == len && f.trailer_len == 0);
    }
    scan = 0;
    rv = tether_framer_len32()->decode(tether_framer_len32(), frame, TETHER__CTRL_HDR_LEN + len,
                                       TETHER__MAX_MSG_LIMIT, &scan, &f, &detail);
    FUZZ_CHECK(rv == TETHER_EMSGSIZE);
    free(frame);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static tether__line_framer lines[sizeof delims / sizeof delims[0]];
    static bool lines_ready;
    struct outcome whole;
    struct outcome chunked;
    const uint8_t *sizes;
    const uint8_t *stream;
    size_t nsizes;
    size_t n;
    size_t max_msg;
    size_t k;

    if (!lines_ready) {
        for (k = 0; k < sizeof delims / sizeof delims[0]; k++) {
            if (tether__line_framer_init(&lines[k], (const uint8_t *)delims[k].bytes,
                                         delims[k].len) != TETHER_OK) {
                abort();
            }
        }
        lines_ready = true;
    }
    if (size < 2) {
        return 0;
    }
    max_msg = max_choices[data[0] % (sizeof max_choices / sizeof max_choices[0])];
    nsizes = data[1] % 16u;
    if (size - 2 < nsizes) {
        return 0;
    }
    sizes = data + 2;
    stream = data + 2 + nsizes;
    n = size - 2 - nsizes;

    /* Each complete frame takes at least one byte, so n + 1 entries suffice. */
    whole.frames = malloc((n + 1) * sizeof *whole.frames);
    chunked.frames = malloc((n + 1) * sizeof *chunked.frames);
    if (whole.frames == NULL || chunked.frames == NULL) {
        abort();
    }

    /* One framer per input: running all of them on every input made each
     * execution ten times dearer without finding anything more. */
    k = (size_t)(data[1] >> 4) % N_FRAMERS;
    {
        const tether_framer *fr;
        const tether__line_framer *lf = NULL;
        bool ctrl = false;

        if (k == 0) {
            fr = tether_framer_len32();
        } else if (k == 1) {
            fr = tether__framer_len32_ctrl();
            ctrl = true;
        } else if (k == 2) {
            fr = tether_framer_varint();
        } else {
            lf = &lines[k - 3];
            fr = &lf->base;
        }
        run_whole(fr, ctrl, stream, n, max_msg, &whole);
        run_chunked(fr, ctrl, stream, n, max_msg, sizes, nsizes, &chunked);
        FUZZ_CHECK(whole.consumed <= n);
        compare(fr, &whole, &chunked);
        round_trip(fr, lf, stream, n);
        if (ctrl) {
            ctrl_round_trip(fr, n > 0 ? stream[0] : 0, n > 0 ? stream + 1 : NULL, n > 0 ? n - 1 : 0,
                            max_msg);
        }
    }

    free(whole.frames);
    free(chunked.frames);
    return 0;
}
