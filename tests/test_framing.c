/* SPDX-License-Identifier: MIT */
/* Unit tests for lib/framing.c: the built-in framers, exercised without
 * sockets through a small reassembler that plays the connection's part. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"

/* check records every passing assertion (a write to a temporary file),
 * which would dominate the loops that run once per byte; these assert only
 * on failure. */
#define QUIET_INT_EQ(x, y)                                                                         \
    do {                                                                                           \
        intmax_t quiet_x = (x);                                                                    \
        intmax_t quiet_y = (y);                                                                    \
        if (quiet_x != quiet_y) {                                                                  \
            ck_abort_msg("%s == %jd, %s == %jd", #x, quiet_x, #y, quiet_y);                        \
        }                                                                                          \
    } while (0)

#define QUIET_UINT(x, op, y)                                                                       \
    do {                                                                                           \
        uintmax_t quiet_x = (x);                                                                   \
        uintmax_t quiet_y = (y);                                                                   \
        if (!(quiet_x op quiet_y)) {                                                               \
            ck_abort_msg("%s " #op " %s failed: %ju, %ju", #x, #y, quiet_x, quiet_y);              \
        }                                                                                          \
    } while (0)

/* ---- framer configurations ---------------------------------------------- */

enum {
    CFG_LEN32,
    CFG_LEN32_CTRL,
    CFG_VARINT,
    CFG_LINE_LF,
    CFG_LINE_CRLF,
    CFG_LINE_LFLF,
    CFG_LINE_LONG,
    CFG_LINE_PUBLIC,
    CFG_COUNT
};

static tether__line_framer line_lf;
static tether__line_framer line_crlf;
static tether__line_framer line_lflf;
static tether__line_framer line_long;

static void init_line(tether__line_framer *lf, const char *delim)
{
    ck_assert_int_eq(tether__line_framer_init(lf, (const uint8_t *)delim, strlen(delim)),
                     TETHER_OK);
}

static const tether_framer *cfg_framer(int cfg)
{
    switch (cfg) {
    case CFG_LEN32:
        return tether_framer_len32();
    case CFG_LEN32_CTRL:
        return tether__framer_len32_ctrl();
    case CFG_VARINT:
        return tether_framer_varint();
    case CFG_LINE_LF:
        init_line(&line_lf, "\n");
        return &line_lf.base;
    case CFG_LINE_CRLF:
        init_line(&line_crlf, "\r\n");
        return &line_crlf.base;
    case CFG_LINE_LFLF:
        /* A delimiter whose prefix is also its suffix: the hard case for
         * both the resumed search and the encoder's check. */
        init_line(&line_lflf, "\n\n");
        return &line_lflf.base;
    case CFG_LINE_LONG:
        init_line(&line_long, "<<END>>\n");
        return &line_long.base;
    case CFG_LINE_PUBLIC:
        return tether_framer_line();
    default:
        ck_abort_msg("bad configuration %d", cfg);
        return NULL;
    }
}

/* ---- messages and streams ----------------------------------------------- */

struct msg {
    int control; /* 0 for data, else a control type (len32 ctrl only) */
    size_t len;
    const uint8_t *data;
};

/* Letters only, so that no payload contains any line delimiter in use. */
static uint8_t *make_payload(size_t len, unsigned seed)
{
    uint8_t *p = malloc(len + 1);
    size_t i;

    ck_assert_ptr_nonnull(p);
    for (i = 0; i < len; i++) {
        p[i] = (uint8_t)('A' + (seed * 7u + i) % 26u);
    }
    return p;
}

static const size_t mixed_sizes[] = {0, 1, 5, 0, 127, 128, 300, 0, 17, 2};
#define N_MIXED (sizeof mixed_sizes / sizeof mixed_sizes[0])

struct msgset {
    struct msg m[16];
    size_t n;
};

static void msgset_mixed(struct msgset *s, bool with_control)
{
    size_t i;

    s->n = 0;
    for (i = 0; i < N_MIXED; i++) {
        s->m[s->n].control = 0;
        s->m[s->n].len = mixed_sizes[i];
        s->m[s->n].data = make_payload(mixed_sizes[i], (unsigned)i);
        s->n++;
        if (with_control && (i == 0 || i == 4 || i == N_MIXED - 1)) {
            /* Control frames between, before and after data frames, one of
             * them empty. */
            s->m[s->n].control = (int)(i + 1);
            s->m[s->n].len = i;
            s->m[s->n].data = make_payload(i, 99);
            s->n++;
        }
    }
}

static void msgset_free(struct msgset *s)
{
    size_t i;

    for (i = 0; i < s->n; i++) {
        free((void *)s->m[i].data);
    }
    s->n = 0;
}

/* Encodes every message; the caller frees the result. */
static uint8_t *encode_stream(const tether_framer *fr, const struct msg *m, size_t n,
                              size_t *out_len)
{
    size_t cap = 64;
    size_t len = 0;
    uint8_t *out = malloc(cap);
    size_t i;

    ck_assert_ptr_nonnull(out);
    for (i = 0; i < n; i++) {
        uint8_t hdr[TETHER_FRAME_HDR_MAX];
        uint8_t trailer[TETHER_FRAME_TRAILER_MAX];
        size_t hdr_len = 0;
        size_t trailer_len = 0;

        if (m[i].control != 0) {
            ck_assert_uint_le(m[i].len, TETHER__CTRL_MAX_PAYLOAD);
            tether__len32_ctrl_header(hdr, (uint8_t)m[i].control, (uint16_t)m[i].len);
            hdr_len = TETHER__CTRL_HDR_LEN;
        } else {
            ck_assert_int_eq(
                fr->encode(fr, m[i].data, m[i].len, hdr, &hdr_len, trailer, &trailer_len),
                TETHER_OK);
        }
        ck_assert_uint_le(hdr_len, TETHER_FRAME_HDR_MAX);
        ck_assert_uint_le(trailer_len, TETHER_FRAME_TRAILER_MAX);
        while (len + hdr_len + m[i].len + trailer_len > cap) {
            cap *= 2;
            out = realloc(out, cap);
            ck_assert_ptr_nonnull(out);
        }
        memcpy(out + len, hdr, hdr_len);
        len += hdr_len;
        if (m[i].len > 0) {
            memcpy(out + len, m[i].data, m[i].len);
        }
        len += m[i].len;
        memcpy(out + len, trailer, trailer_len);
        len += trailer_len;
    }
    *out_len = len;
    return out;
}

/* ---- the reassembler ---------------------------------------------------- */

/* Does what the connection does with received bytes: append, then cut out
 * every whole frame, checking each against the expected message. */
struct reasm {
    const tether_framer *fr;
    size_t max_msg;
    uint8_t *buf;
    size_t len;
    size_t cap;
    size_t scan;
    const struct msg *expect;
    size_t nexpect;
    size_t got;
};

static void reasm_init(struct reasm *r, const tether_framer *fr, size_t max_msg,
                       const struct msg *expect, size_t nexpect)
{
    memset(r, 0, sizeof *r);
    r->fr = fr;
    r->max_msg = max_msg;
    r->expect = expect;
    r->nexpect = nexpect;
}

static void reasm_free(struct reasm *r)
{
    free(r->buf);
    r->buf = NULL;
}

/* Returns TETHER_OK while the stream is fine, else the decoder's error. */
static int reasm_feed(struct reasm *r, const uint8_t *data, size_t n)
{
    if (n > 0) {
        if (r->len + n > r->cap) {
            size_t cap = r->cap == 0 ? 16 : r->cap;
            while (cap < r->len + n) {
                cap *= 2;
            }
            r->buf = realloc(r->buf, cap);
            QUIET_UINT(r->buf != NULL, ==, 1);
            r->cap = cap;
        }
        memcpy(r->buf + r->len, data, n);
        r->len += n;
    }
    for (;;) {
        tether_frame f = {0, 0, 0, 0};
        const char *detail = NULL;
        const struct msg *e;
        size_t total;
        int rv = r->fr->decode(r->fr, r->buf, r->len, r->max_msg, &r->scan, &f, &detail);

        if (rv == TETHER_EAGAIN) {
            QUIET_UINT(r->scan, <=, r->len);
            return TETHER_OK;
        }
        if (rv != TETHER_OK) {
            QUIET_UINT(detail != NULL, ==, 1);
            return rv;
        }
        QUIET_UINT(f.hdr_len, <=, TETHER_FRAME_HDR_MAX);
        QUIET_UINT(f.trailer_len, <=, TETHER_FRAME_TRAILER_MAX);
        if (f.control == 0) {
            QUIET_UINT(f.payload_len, <=, r->max_msg);
        }
        total = f.hdr_len + f.payload_len + f.trailer_len;
        if (total > r->len) {
            /* The layout is known but the payload is still in flight. */
            return TETHER_OK;
        }
        QUIET_UINT(r->got, <, r->nexpect);
        e = &r->expect[r->got];
        QUIET_INT_EQ(f.control, e->control);
        QUIET_UINT(f.payload_len, ==, e->len);
        if (e->len > 0) {
            QUIET_INT_EQ(memcmp(r->buf + f.hdr_len, e->data, e->len), 0);
        }
        r->got++;
        memmove(r->buf, r->buf + total, r->len - total);
        r->len -= total;
        r->scan = 0;
    }
}

static void reasm_assert_done(const struct reasm *r)
{
    ck_assert_uint_eq(r->got, r->nexpect);
    ck_assert_uint_eq(r->len, 0);
}

/* ---- stream tests, run for every configuration --------------------------- */

#define STREAM_MAX 1024

START_TEST(test_stream_every_split)
{
    const tether_framer *fr = cfg_framer(_i);
    struct msgset s;
    uint8_t *stream;
    size_t n;
    size_t k;

    msgset_mixed(&s, _i == CFG_LEN32_CTRL);
    stream = encode_stream(fr, s.m, s.n, &n);
    for (k = 0; k <= n; k++) {
        struct reasm r;
        reasm_init(&r, fr, STREAM_MAX, s.m, s.n);
        QUIET_INT_EQ(reasm_feed(&r, stream, k), TETHER_OK);
        QUIET_INT_EQ(reasm_feed(&r, stream + k, n - k), TETHER_OK);
        reasm_assert_done(&r);
        reasm_free(&r);
    }
    free(stream);
    msgset_free(&s);
}
END_TEST

START_TEST(test_stream_byte_at_a_time)
{
    const tether_framer *fr = cfg_framer(_i);
    struct msgset s;
    struct reasm r;
    uint8_t *stream;
    size_t n;
    size_t k;

    msgset_mixed(&s, _i == CFG_LEN32_CTRL);
    stream = encode_stream(fr, s.m, s.n, &n);
    reasm_init(&r, fr, STREAM_MAX, s.m, s.n);
    for (k = 0; k < n; k++) {
        QUIET_INT_EQ(reasm_feed(&r, stream + k, 1), TETHER_OK);
    }
    reasm_assert_done(&r);
    reasm_free(&r);
    free(stream);
    msgset_free(&s);
}
END_TEST

START_TEST(test_stream_all_at_once)
{
    const tether_framer *fr = cfg_framer(_i);
    struct msgset s;
    struct reasm r;
    uint8_t *stream;
    size_t n;

    msgset_mixed(&s, _i == CFG_LEN32_CTRL);
    stream = encode_stream(fr, s.m, s.n, &n);
    reasm_init(&r, fr, STREAM_MAX, s.m, s.n);
    ck_assert_int_eq(reasm_feed(&r, stream, n), TETHER_OK);
    reasm_assert_done(&r);
    reasm_free(&r);
    free(stream);
    msgset_free(&s);
}
END_TEST

/* Messages long enough for 3-byte varints and long line searches, fed one
 * byte at a time: this also shows that the line framer's resumed scan keeps
 * the work linear (the test would take far longer otherwise). */
START_TEST(test_stream_large)
{
    const tether_framer *fr = cfg_framer(_i);
    struct msg m[3];
    struct reasm r;
    uint8_t *stream;
    size_t n;
    size_t k;

    m[0] = (struct msg){0, 70000, make_payload(70000, 1)};
    m[1] = (struct msg){0, 0, make_payload(0, 2)};
    m[2] = (struct msg){0, 16384, make_payload(16384, 3)};
    stream = encode_stream(fr, m, 3, &n);

    reasm_init(&r, fr, 70000, m, 3);
    for (k = 0; k < n; k++) {
        QUIET_INT_EQ(reasm_feed(&r, stream + k, 1), TETHER_OK);
    }
    reasm_assert_done(&r);
    reasm_free(&r);

    reasm_init(&r, fr, 70000, m, 3);
    ck_assert_int_eq(reasm_feed(&r, stream, n), TETHER_OK);
    reasm_assert_done(&r);
    reasm_free(&r);

    free(stream);
    for (k = 0; k < 3; k++) {
        free((void *)m[k].data);
    }
}
END_TEST

/* Decodes every prefix of a frame from an exactly sized heap block, so that
 * AddressSanitizer catches a decoder reading past len. */
START_TEST(test_stream_prefixes_exact_alloc)
{
    const tether_framer *fr = cfg_framer(_i);
    uint8_t *payload = make_payload(300, 5);
    uint8_t hdr[TETHER_FRAME_HDR_MAX];
    uint8_t trailer[TETHER_FRAME_TRAILER_MAX];
    size_t hdr_len;
    size_t trailer_len;
    size_t k;

    ck_assert_int_eq(fr->encode(fr, payload, 300, hdr, &hdr_len, trailer, &trailer_len), TETHER_OK);
    for (k = 0; k <= hdr_len + 300 + trailer_len; k++) {
        uint8_t *block = malloc(k == 0 ? 1 : k);
        tether_frame f = {0, 0, 0, 0};
        const char *detail = NULL;
        size_t scan = 0;
        size_t i;
        int rv;

        ck_assert_ptr_nonnull(block);
        for (i = 0; i < k; i++) {
            if (i < hdr_len) {
                block[i] = hdr[i];
            } else if (i < hdr_len + 300) {
                block[i] = payload[i - hdr_len];
            } else {
                block[i] = trailer[i - hdr_len - 300];
            }
        }
        rv = fr->decode(fr, block, k, STREAM_MAX, &scan, &f, &detail);
        if (k < hdr_len + (trailer_len > 0 ? 300 + trailer_len : 0)) {
            ck_assert_int_eq(rv, TETHER_EAGAIN);
        } else {
            ck_assert_int_eq(rv, TETHER_OK);
            ck_assert_uint_eq(f.hdr_len, hdr_len);
            ck_assert_uint_eq(f.payload_len, 300);
            ck_assert_uint_eq(f.trailer_len, trailer_len);
            ck_assert_int_eq(f.control, 0);
        }
        free(block);
    }
    free(payload);
}
END_TEST

START_TEST(test_decode_empty_input)
{
    const tether_framer *fr = cfg_framer(_i);
    tether_frame f = {0, 0, 0, 0};
    const char *detail = NULL;
    size_t scan = 0;

    ck_assert_int_eq(fr->decode(fr, NULL, 0, STREAM_MAX, &scan, &f, &detail), TETHER_EAGAIN);
    ck_assert_uint_eq(scan, 0);
    ck_assert_ptr_null(detail);
}
END_TEST

/* max_msg is inclusive, whichever way the frame arrives. */
START_TEST(test_max_msg_boundary)
{
    const tether_framer *fr = cfg_framer(_i);
    const size_t max = 200;
    struct msg ok = {0, max, make_payload(max, 1)};
    struct msg big = {0, max + 1, make_payload(max + 1, 2)};
    uint8_t *stream;
    struct reasm r;
    size_t n;
    size_t k;
    tether_frame f = {0, 0, 0, 0};
    const char *detail = NULL;
    size_t scan = 0;

    stream = encode_stream(fr, &ok, 1, &n);
    reasm_init(&r, fr, max, &ok, 1);
    for (k = 0; k < n; k++) {
        QUIET_INT_EQ(reasm_feed(&r, stream + k, 1), TETHER_OK);
    }
    reasm_assert_done(&r);
    reasm_free(&r);
    free(stream);

    stream = encode_stream(fr, &big, 1, &n);
    ck_assert_int_eq(fr->decode(fr, stream, n, max, &scan, &f, &detail), TETHER_EMSGSIZE);
    ck_assert_uint_eq(f.payload_len, max + 1);
    ck_assert_ptr_nonnull(detail);

    /* Fed byte by byte, the error must come no later than the frame's end,
     * and for length prefixes as soon as the header is complete: before the
     * payload could have been buffered. */
    reasm_init(&r, fr, max, &big, 1);
    for (k = 0; k < n; k++) {
        int rv = reasm_feed(&r, stream + k, 1);
        if (rv != TETHER_OK) {
            ck_assert_int_eq(rv, TETHER_EMSGSIZE);
            break;
        }
    }
    ck_assert_uint_lt(k, n);
    if (_i == CFG_LEN32 || _i == CFG_LEN32_CTRL) {
        ck_assert_uint_eq(k, 3);
    } else if (_i == CFG_VARINT) {
        ck_assert_uint_eq(k, 1);
    }
    ck_assert_uint_eq(r.got, 0);
    reasm_free(&r);
    free(stream);

    free((void *)ok.data);
    free((void *)big.data);
}
END_TEST

/* ---- len32 --------------------------------------------------------------- */

START_TEST(test_len32_encode_header)
{
    const tether_framer *fr = tether_framer_len32();
    uint8_t hdr[TETHER_FRAME_HDR_MAX];
    uint8_t trailer[TETHER_FRAME_TRAILER_MAX];
    size_t hdr_len = 99;
    size_t trailer_len = 99;
    static const uint8_t want[4] = {0x01, 0x02, 0x03, 0x04};

    /* len32 never reads the payload, so a length alone is enough here. */
    ck_assert_int_eq(fr->encode(fr, NULL, 0x01020304, hdr, &hdr_len, trailer, &trailer_len),
                     TETHER_OK);
    ck_assert_uint_eq(hdr_len, 4);
    ck_assert_uint_eq(trailer_len, 0);
    ck_assert_mem_eq(hdr, want, 4);

    ck_assert_int_eq(fr->encode(fr, NULL, 0, hdr, &hdr_len, trailer, &trailer_len), TETHER_OK);
    ck_assert_uint_eq(tether__get_be32(hdr), 0);

#if SIZE_MAX > UINT32_MAX
    ck_assert_int_eq(
        fr->encode(fr, NULL, (size_t)UINT32_MAX + 1, hdr, &hdr_len, trailer, &trailer_len),
        TETHER_EMSGSIZE);
#endif
    ck_assert_int_eq(fr->encode(fr, NULL, UINT32_MAX, hdr, &hdr_len, trailer, &trailer_len),
                     TETHER_OK);
    ck_assert_uint_eq(tether__get_be32(hdr), UINT32_MAX);

    /* The ctrl variant must not emit a data header its peer would read as a
     * control frame. */
    fr = tether__framer_len32_ctrl();
    ck_assert_int_eq(fr->encode(fr, NULL, 0xFF000000u, hdr, &hdr_len, trailer, &trailer_len),
                     TETHER_EMSGSIZE);
    ck_assert_int_eq(fr->encode(fr, NULL, 0xFEFFFFFFu, hdr, &hdr_len, trailer, &trailer_len),
                     TETHER_OK);
}
END_TEST

START_TEST(test_len32_hostile_lengths)
{
    const tether_framer *fr = tether_framer_len32();
    static const uint8_t huge[4] = {0xFF, 0xFF, 0xFF, 0xFF};
    static const uint8_t big[4] = {0x7F, 0xFF, 0xFF, 0xFF};
    tether_frame f = {0, 0, 0, 0};
    const char *detail = NULL;
    size_t scan = 0;

    ck_assert_int_eq(fr->decode(fr, huge, 3, TETHER__MAX_MSG_LIMIT, &scan, &f, &detail),
                     TETHER_EAGAIN);
    ck_assert_int_eq(fr->decode(fr, huge, 4, TETHER__MAX_MSG_LIMIT, &scan, &f, &detail),
                     TETHER_EMSGSIZE);
    ck_assert_uint_eq(f.payload_len, 0xFFFFFFFFu);
    ck_assert_str_eq(detail, "length prefix exceeds the maximum message size");

    detail = NULL;
    ck_assert_int_eq(fr->decode(fr, big, 4, TETHER__MAX_MSG_LIMIT, &scan, &f, &detail),
                     TETHER_EMSGSIZE);
    ck_assert_uint_eq(f.payload_len, 0x7FFFFFFFu);
    ck_assert_ptr_nonnull(detail);

    ck_assert_int_eq(fr->decode(fr, big, 4, SIZE_MAX, &scan, &f, &detail), TETHER_OK);
    ck_assert_uint_eq(f.payload_len, 0x7FFFFFFFu);
}
END_TEST

START_TEST(test_len32_control_frames)
{
    const tether_framer *ctrl = tether__framer_len32_ctrl();
    const tether_framer *plain = tether_framer_len32();
    uint8_t hdr[4];
    static const uint8_t want[4] = {0xFF, 0x07, 0x01, 0x02};
    static const uint8_t type0[4] = {0xFF, 0x00, 0x00, 0x00};
    tether_frame f = {0, 0, 0, 0};
    const char *detail = NULL;
    size_t scan = 0;

    tether__len32_ctrl_header(hdr, 7, 0x0102);
    ck_assert_mem_eq(hdr, want, 4);

    ck_assert_int_eq(ctrl->decode(ctrl, hdr, 3, 16, &scan, &f, &detail), TETHER_EAGAIN);
    ck_assert_int_eq(ctrl->decode(ctrl, hdr, 4, 16, &scan, &f, &detail), TETHER_OK);
    ck_assert_int_eq(f.control, 7);
    ck_assert_uint_eq(f.hdr_len, 4);
    ck_assert_uint_eq(f.payload_len, 0x0102);
    ck_assert_uint_eq(f.trailer_len, 0);

    /* The same bytes are a 4 GiB data length for a peer without control
     * frames. */
    ck_assert_int_eq(plain->decode(plain, hdr, 4, TETHER__MAX_MSG_LIMIT, &scan, &f, &detail),
                     TETHER_EMSGSIZE);
    ck_assert_uint_eq(f.payload_len, 0xFF070102u);
    ck_assert_int_eq(f.control, 0);

    detail = NULL;
    ck_assert_int_eq(ctrl->decode(ctrl, type0, 4, 16, &scan, &f, &detail), TETHER_EPROTO);
    ck_assert_ptr_nonnull(detail);
    ck_assert_int_eq(plain->decode(plain, type0, 4, 16, &scan, &f, &detail), TETHER_EMSGSIZE);

    tether__len32_ctrl_header(hdr, 255, 0xFFFF);
    ck_assert_int_eq(ctrl->decode(ctrl, hdr, 4, 16, &scan, &f, &detail), TETHER_OK);
    ck_assert_int_eq(f.control, 255);
    ck_assert_uint_eq(f.payload_len, 0xFFFF);
}
END_TEST

/* ---- varint -------------------------------------------------------------- */

START_TEST(test_varint_encode_vectors)
{
    static const struct {
        uint64_t v;
        size_t n;
        uint8_t bytes[10];
    } vec[] = {
        {0, 1, {0x00}},
        {1, 1, {0x01}},
        {127, 1, {0x7F}},
        {128, 2, {0x80, 0x01}},
        {300, 2, {0xAC, 0x02}},
        {16383, 2, {0xFF, 0x7F}},
        {16384, 3, {0x80, 0x80, 0x01}},
        {0xFFFFFFFFu, 5, {0xFF, 0xFF, 0xFF, 0xFF, 0x0F}},
        {UINT64_MAX, 10, {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}},
    };
    const tether_framer *fr = tether_framer_varint();
    size_t i;

    for (i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        uint8_t hdr[TETHER_FRAME_HDR_MAX];
        uint8_t trailer[TETHER_FRAME_TRAILER_MAX];
        size_t hdr_len = 0;
        size_t trailer_len = 99;
        tether_frame f = {0, 0, 0, 0};
        const char *detail = NULL;
        size_t scan = 0;

#if SIZE_MAX < UINT64_MAX
        if (vec[i].v > SIZE_MAX) {
            continue;
        }
#endif
        ck_assert_int_eq(
            fr->encode(fr, NULL, (size_t)vec[i].v, hdr, &hdr_len, trailer, &trailer_len),
            TETHER_OK);
        ck_assert_uint_eq(hdr_len, vec[i].n);
        ck_assert_uint_eq(trailer_len, 0);
        ck_assert_mem_eq(hdr, vec[i].bytes, vec[i].n);

        ck_assert_int_eq(fr->decode(fr, vec[i].bytes, vec[i].n, SIZE_MAX, &scan, &f, &detail),
                         TETHER_OK);
        ck_assert_uint_eq(f.hdr_len, vec[i].n);
        ck_assert_uint_eq(f.payload_len, (size_t)vec[i].v);
        if (vec[i].n > 1) {
            ck_assert_int_eq(
                fr->decode(fr, vec[i].bytes, vec[i].n - 1, SIZE_MAX, &scan, &f, &detail),
                TETHER_EAGAIN);
        }
    }
}
END_TEST

START_TEST(test_varint_non_minimal_accepted)
{
    const tether_framer *fr = tether_framer_varint();
    static const uint8_t zero2[2] = {0x80, 0x00};
    static const uint8_t five3[3] = {0x85, 0x80, 0x00};
    tether_frame f = {0, 0, 0, 0};
    const char *detail = NULL;
    size_t scan = 0;

    ck_assert_int_eq(fr->decode(fr, zero2, 2, 16, &scan, &f, &detail), TETHER_OK);
    ck_assert_uint_eq(f.hdr_len, 2);
    ck_assert_uint_eq(f.payload_len, 0);
    ck_assert_int_eq(fr->decode(fr, five3, 3, 16, &scan, &f, &detail), TETHER_OK);
    ck_assert_uint_eq(f.hdr_len, 3);
    ck_assert_uint_eq(f.payload_len, 5);
}
END_TEST

START_TEST(test_varint_hostile_lengths)
{
    const tether_framer *fr = tether_framer_varint();
    static const uint8_t max64[10] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01};
    static const uint8_t over64[10] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02};
    static const uint8_t eleven[11] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
                                       0x80, 0x80, 0x80, 0x80, 0x00};
    static const uint8_t big5[5] = {0x80, 0x80, 0x80, 0x80, 0x01}; /* 2^28 */
    tether_frame f = {0, 0, 0, 0};
    const char *detail = NULL;
    size_t scan = 0;

    ck_assert_int_eq(fr->decode(fr, max64, 9, TETHER__MAX_MSG_LIMIT, &scan, &f, &detail),
                     TETHER_EAGAIN);
    ck_assert_int_eq(fr->decode(fr, max64, 10, TETHER__MAX_MSG_LIMIT, &scan, &f, &detail),
                     TETHER_EMSGSIZE);
    ck_assert_uint_eq(f.payload_len, SIZE_MAX);
    ck_assert_ptr_nonnull(detail);

    detail = NULL;
    ck_assert_int_eq(fr->decode(fr, over64, 10, TETHER__MAX_MSG_LIMIT, &scan, &f, &detail),
                     TETHER_EPROTO);
    ck_assert_str_eq(detail, "varint overflows 64 bits");

    /* An 11-byte varint is refused once its 10th byte shows it goes on. */
    detail = NULL;
    ck_assert_int_eq(fr->decode(fr, eleven, 9, TETHER__MAX_MSG_LIMIT, &scan, &f, &detail),
                     TETHER_EAGAIN);
    ck_assert_int_eq(fr->decode(fr, eleven, 10, TETHER__MAX_MSG_LIMIT, &scan, &f, &detail),
                     TETHER_EPROTO);
    ck_assert_str_eq(detail, "varint length prefix longer than 10 bytes");
    ck_assert_int_eq(fr->decode(fr, eleven, 11, TETHER__MAX_MSG_LIMIT, &scan, &f, &detail),
                     TETHER_EPROTO);

    ck_assert_int_eq(fr->decode(fr, big5, 5, TETHER__MAX_MSG_LIMIT - 1, &scan, &f, &detail),
                     TETHER_OK);
    ck_assert_uint_eq(f.payload_len, (size_t)1 << 28);
    ck_assert_int_eq(fr->decode(fr, big5, 5, ((size_t)1 << 28) - 1, &scan, &f, &detail),
                     TETHER_EMSGSIZE);
    ck_assert_uint_eq(f.payload_len, (size_t)1 << 28);
}
END_TEST

/* ---- line ---------------------------------------------------------------- */

START_TEST(test_line_init_validates)
{
    tether__line_framer lf;
    static const uint8_t d9[9] = "123456789";

    ck_assert_int_eq(tether__line_framer_init(&lf, d9, 0), TETHER_EINVAL);
    ck_assert_int_eq(tether__line_framer_init(&lf, d9, 9), TETHER_EINVAL);
    ck_assert_int_eq(tether__line_framer_init(&lf, NULL, 1), TETHER_EINVAL);
    ck_assert_int_eq(tether__line_framer_init(&lf, d9, 8), TETHER_OK);
    ck_assert_uint_eq(lf.delim_len, 8);
    ck_assert_str_eq(lf.base.name, "line");
    ck_assert_int_eq(tether__line_framer_init(&lf, d9, 1), TETHER_OK);
    ck_assert_uint_eq(lf.delim_len, 1);
}
END_TEST

static int line_encode_str(const tether_framer *fr, const char *s)
{
    uint8_t hdr[TETHER_FRAME_HDR_MAX];
    uint8_t trailer[TETHER_FRAME_TRAILER_MAX];
    size_t hdr_len = 99;
    size_t trailer_len = 0;

    return fr->encode(fr, (const uint8_t *)s, strlen(s), hdr, &hdr_len, trailer, &trailer_len);
}

START_TEST(test_line_encode_rejects_delimiter)
{
    const tether_framer *lf = cfg_framer(CFG_LINE_LF);
    const tether_framer *crlf = cfg_framer(CFG_LINE_CRLF);
    const tether_framer *lflf = cfg_framer(CFG_LINE_LFLF);
    uint8_t hdr[TETHER_FRAME_HDR_MAX];
    uint8_t trailer[TETHER_FRAME_TRAILER_MAX];
    size_t hdr_len = 99;
    size_t trailer_len = 0;

    ck_assert_int_eq(
        crlf->encode(crlf, (const uint8_t *)"hi", 2, hdr, &hdr_len, trailer, &trailer_len),
        TETHER_OK);
    ck_assert_uint_eq(hdr_len, 0);
    ck_assert_uint_eq(trailer_len, 2);
    ck_assert_mem_eq(trailer, "\r\n", 2);
    ck_assert_int_eq(crlf->encode(crlf, NULL, 0, hdr, &hdr_len, trailer, &trailer_len), TETHER_OK);

    ck_assert_int_eq(line_encode_str(lf, "a\nb"), TETHER_EINVAL);
    ck_assert_int_eq(line_encode_str(lf, "\n"), TETHER_EINVAL);
    ck_assert_int_eq(line_encode_str(lf, "ab\r"), TETHER_OK);
    ck_assert_int_eq(line_encode_str(crlf, "a\r\nb"), TETHER_EINVAL);
    ck_assert_int_eq(line_encode_str(crlf, "\r\n"), TETHER_EINVAL);
    /* Half a CRLF is harmless: "a\r" + "\r\n" still ends where it should. */
    ck_assert_int_eq(line_encode_str(crlf, "a\r"), TETHER_OK);
    ck_assert_int_eq(line_encode_str(crlf, "a\nb\r"), TETHER_OK);
    /* With "\n\n", a payload ending in "\n" would read back one byte short. */
    ck_assert_int_eq(line_encode_str(lflf, "a\n"), TETHER_EINVAL);
    ck_assert_int_eq(line_encode_str(lflf, "\n"), TETHER_EINVAL);
    ck_assert_int_eq(line_encode_str(lflf, "a\n\nb"), TETHER_EINVAL);
    ck_assert_int_eq(line_encode_str(lflf, "\na\nb"), TETHER_OK);
}
END_TEST

/* Payloads with parts of the delimiter in them, which must survive a round
 * trip through every split of the stream. */
START_TEST(test_line_partial_delimiters_in_payload)
{
    static const char *crlf_msgs[] = {"a\r", "\r", "\n", "\nx\r", "", "\r\r\r"};
    static const char *lflf_msgs[] = {"\nx", "a\nb", "", "\na\n\rb", "z"};
    struct {
        int cfg;
        const char **msgs;
        size_t n;
    } cases[] = {
        {CFG_LINE_CRLF, crlf_msgs, sizeof crlf_msgs / sizeof crlf_msgs[0]},
        {CFG_LINE_LFLF, lflf_msgs, sizeof lflf_msgs / sizeof lflf_msgs[0]},
    };
    size_t c;

    for (c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const tether_framer *fr = cfg_framer(cases[c].cfg);
        struct msg m[8];
        uint8_t *stream;
        size_t n;
        size_t i;
        size_t k;

        for (i = 0; i < cases[c].n; i++) {
            m[i] = (struct msg){0, strlen(cases[c].msgs[i]), (const uint8_t *)cases[c].msgs[i]};
        }
        stream = encode_stream(fr, m, cases[c].n, &n);
        for (k = 0; k <= n; k++) {
            struct reasm r;
            reasm_init(&r, fr, STREAM_MAX, m, cases[c].n);
            QUIET_INT_EQ(reasm_feed(&r, stream, k), TETHER_OK);
            QUIET_INT_EQ(reasm_feed(&r, stream + k, n - k), TETHER_OK);
            reasm_assert_done(&r);
            reasm_free(&r);
        }
        free(stream);
    }
}
END_TEST

START_TEST(test_line_crlf_straddles_chunks)
{
    const tether_framer *fr = cfg_framer(CFG_LINE_CRLF);
    static const uint8_t data[] = "hello\r\nworld\r\n";
    tether_frame f = {0, 0, 0, 0};
    const char *detail = NULL;
    size_t scan = 0;

    /* "hello\r": the scan records 6 bytes seen, yet the next call must still
     * find the "\r" at offset 5. */
    ck_assert_int_eq(fr->decode(fr, data, 6, STREAM_MAX, &scan, &f, &detail), TETHER_EAGAIN);
    ck_assert_uint_eq(scan, 6);
    ck_assert_int_eq(fr->decode(fr, data, 7, STREAM_MAX, &scan, &f, &detail), TETHER_OK);
    ck_assert_uint_eq(f.hdr_len, 0);
    ck_assert_uint_eq(f.payload_len, 5);
    ck_assert_uint_eq(f.trailer_len, 2);
    ck_assert_int_eq(f.control, 0);

    /* A scan hint beyond the data is a caller bug; it is ignored. */
    scan = 1000;
    ck_assert_int_eq(fr->decode(fr, data, 7, STREAM_MAX, &scan, &f, &detail), TETHER_OK);
    ck_assert_uint_eq(f.payload_len, 5);
}
END_TEST

START_TEST(test_line_resumed_scan_matches_fresh)
{
    const tether_framer *fr = cfg_framer(CFG_LINE_LONG);
    static const uint8_t data[] = "ab<<END<<END>>\n";
    size_t n = sizeof data - 1;
    size_t k;

    /* Whatever prefix was examined before, the result is the first full
     * delimiter, at offset 7, past a false start at offset 2. */
    for (k = 0; k <= n; k++) {
        tether_frame f = {0, 0, 0, 0};
        const char *detail = NULL;
        size_t scan = 0;
        size_t i;

        for (i = 0; i <= k; i++) {
            int rv = fr->decode(fr, data, i, STREAM_MAX, &scan, &f, &detail);
            if (i < n) {
                ck_assert_int_eq(rv, TETHER_EAGAIN);
                ck_assert_uint_eq(scan, i);
            }
        }
        ck_assert_int_eq(fr->decode(fr, data, n, STREAM_MAX, &scan, &f, &detail), TETHER_OK);
        ck_assert_uint_eq(f.payload_len, 7);
        ck_assert_uint_eq(f.trailer_len, 8);
    }
}
END_TEST

START_TEST(test_line_too_long)
{
    const tether_framer *lf = cfg_framer(CFG_LINE_LF);
    const tether_framer *crlf = cfg_framer(CFG_LINE_CRLF);
    const size_t max = 16;
    uint8_t buf[64];
    tether_frame f = {0, 0, 0, 0};
    const char *detail = NULL;
    size_t scan = 0;

    memset(buf, 'x', sizeof buf);

    /* "\n": max bytes may still be followed by a delimiter; max + 1 cannot. */
    ck_assert_int_eq(lf->decode(lf, buf, max, max, &scan, &f, &detail), TETHER_EAGAIN);
    ck_assert_int_eq(lf->decode(lf, buf, max + 1, max, &scan, &f, &detail), TETHER_EMSGSIZE);
    ck_assert_uint_eq(f.payload_len, max + 1);
    ck_assert_str_eq(detail, "line longer than the maximum without a delimiter");

    /* "\r\n": max bytes and a lone "\r" are still a legal line in progress. */
    scan = 0;
    buf[max] = '\r';
    ck_assert_int_eq(crlf->decode(crlf, buf, max + 1, max, &scan, &f, &detail), TETHER_EAGAIN);
    buf[max + 1] = '\n';
    ck_assert_int_eq(crlf->decode(crlf, buf, max + 2, max, &scan, &f, &detail), TETHER_OK);
    ck_assert_uint_eq(f.payload_len, max);
    buf[max] = 'x';
    buf[max + 1] = 'x';
    scan = 0;
    ck_assert_int_eq(crlf->decode(crlf, buf, max + 2, max, &scan, &f, &detail), TETHER_EMSGSIZE);
    ck_assert_uint_eq(f.payload_len, max + 1);

    /* A whole over-long line in one read is reported with its real length. */
    scan = 0;
    detail = NULL;
    buf[40] = '\n';
    ck_assert_int_eq(lf->decode(lf, buf, 50, max, &scan, &f, &detail), TETHER_EMSGSIZE);
    ck_assert_uint_eq(f.payload_len, 40);
    ck_assert_ptr_nonnull(detail);

    /* A hostile peer that never sends a delimiter. */
    scan = 0;
    memset(buf, 'y', sizeof buf);
    ck_assert_int_eq(lf->decode(lf, buf, sizeof buf, max, &scan, &f, &detail), TETHER_EMSGSIZE);
    ck_assert_uint_eq(f.payload_len, sizeof buf);
}
END_TEST

START_TEST(test_public_accessors)
{
    ck_assert_ptr_nonnull(tether_framer_len32());
    ck_assert_ptr_eq(tether_framer_len32(), tether_framer_len32());
    ck_assert_str_eq(tether_framer_len32()->name, "len32");
    ck_assert_ptr_nonnull(tether_framer_varint());
    ck_assert_str_eq(tether_framer_varint()->name, "varint");
    ck_assert_ptr_ne(tether__framer_len32_ctrl(), tether_framer_len32());
}
END_TEST

/* tether_framer_line() is the newline framer of TETHER_FRAMING_LINE: "\n"
 * after each payload, refused inside one, found again by the decoder. */
START_TEST(test_line_public_framer)
{
    const tether_framer *fr = tether_framer_line();
    ck_assert_ptr_nonnull(fr);
    ck_assert_ptr_eq(fr, tether_framer_line());
    ck_assert_str_eq(fr->name, "line");

    uint8_t hdr[TETHER_FRAME_HDR_MAX];
    uint8_t trl[TETHER_FRAME_TRAILER_MAX];
    size_t hl = 99;
    size_t tl = 99;
    ck_assert_int_eq(fr->encode(fr, (const uint8_t *)"hello", 5, hdr, &hl, trl, &tl), TETHER_OK);
    ck_assert_uint_eq(hl, 0);
    ck_assert_uint_eq(tl, 1);
    ck_assert_int_eq(trl[0], '\n');
    ck_assert_int_eq(fr->encode(fr, (const uint8_t *)"a\nb", 3, hdr, &hl, trl, &tl), TETHER_EINVAL);

    const uint8_t in[] = "first\nsecond";
    size_t scan = 0;
    tether_frame f;
    const char *detail = NULL;
    ck_assert_int_eq(fr->decode(fr, in, sizeof in - 1, 64, &scan, &f, &detail), TETHER_OK);
    ck_assert_uint_eq(f.hdr_len, 0);
    ck_assert_uint_eq(f.payload_len, 5);
    ck_assert_uint_eq(f.trailer_len, 1);
    scan = 0;
    ck_assert_int_eq(fr->decode(fr, in + 6, sizeof in - 7, 64, &scan, &f, &detail), TETHER_EAGAIN);
    scan = 0;
    ck_assert_int_eq(fr->decode(fr, in, sizeof in - 1, 4, &scan, &f, &detail), TETHER_EMSGSIZE);
}
END_TEST

Suite *framing_suite(void)
{
    Suite *s = suite_create("framing");
    TCase *tc;

    tc = tcase_create("stream");
    tcase_set_timeout(tc, 10);
    tcase_add_loop_test(tc, test_stream_every_split, 0, CFG_COUNT);
    tcase_add_loop_test(tc, test_stream_byte_at_a_time, 0, CFG_COUNT);
    tcase_add_loop_test(tc, test_stream_all_at_once, 0, CFG_COUNT);
    tcase_add_loop_test(tc, test_stream_large, 0, CFG_COUNT);
    tcase_add_loop_test(tc, test_stream_prefixes_exact_alloc, 0, CFG_COUNT);
    tcase_add_loop_test(tc, test_decode_empty_input, 0, CFG_COUNT);
    tcase_add_loop_test(tc, test_max_msg_boundary, 0, CFG_COUNT);
    suite_add_tcase(s, tc);

    tc = tcase_create("len32");
    tcase_set_timeout(tc, 5);
    tcase_add_test(tc, test_len32_encode_header);
    tcase_add_test(tc, test_len32_hostile_lengths);
    tcase_add_test(tc, test_len32_control_frames);
    tcase_add_test(tc, test_public_accessors);
    suite_add_tcase(s, tc);

    tc = tcase_create("varint");
    tcase_set_timeout(tc, 5);
    tcase_add_test(tc, test_varint_encode_vectors);
    tcase_add_test(tc, test_varint_non_minimal_accepted);
    tcase_add_test(tc, test_varint_hostile_lengths);
    suite_add_tcase(s, tc);

    tc = tcase_create("line");
    tcase_set_timeout(tc, 5);
    tcase_add_test(tc, test_line_init_validates);
    tcase_add_test(tc, test_line_encode_rejects_delimiter);
    tcase_add_test(tc, test_line_partial_delimiters_in_payload);
    tcase_add_test(tc, test_line_crlf_straddles_chunks);
    tcase_add_test(tc, test_line_resumed_scan_matches_fresh);
    tcase_add_test(tc, test_line_too_long);
    tcase_add_test(tc, test_line_public_framer);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(framing_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
