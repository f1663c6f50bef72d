/* SPDX-License-Identifier: MIT */
/* The built-in framings: len32 (with optional control frames), varint and
 * line. Decoders are pure functions of the bytes they are given: they keep no
 * state, never allocate and never read outside buf[0..len), so the
 * connection can call them again whenever more bytes arrive. */
#include "frame.h"

#include <string.h>

/* ---- len32 ------------------------------------------------------------- */

/* The ctrl variant must not produce a data header whose first byte is the
 * control mark, or its own peer would read the message as a control frame. */
#define LEN32_CTRL_DATA_LIMIT 0xFF000000u

static int len32_decode_common(const uint8_t *buf, size_t len, size_t max_msg, bool ctrl,
                               tether_frame *f, const char **detail)
{
    uint32_t n;

    if (len < 4) {
        return TETHER_EAGAIN;
    }
    if (ctrl && buf[0] == TETHER__CTRL_MARK) {
        if (buf[1] == 0) {
            *detail = "control frame with type 0";
            return TETHER_EPROTO;
        }
        /* A control payload is at most 64 KiB by construction, so it needs
         * no check against max_msg to keep allocations bounded. */
        f->hdr_len = TETHER__CTRL_HDR_LEN;
        f->payload_len = ((size_t)buf[2] << 8) | (size_t)buf[3];
        f->trailer_len = 0;
        f->control = buf[1];
        return TETHER_OK;
    }

    n = tether__get_be32(buf);
    f->hdr_len = 4;
    f->payload_len = n;
    f->trailer_len = 0;
    f->control = 0;
    if ((uint64_t)n > (uint64_t)max_msg) {
        *detail = "length prefix exceeds the maximum message size";
        return TETHER_EMSGSIZE;
    }
    return TETHER_OK;
}

static int len32_decode(const tether_framer *fr, const uint8_t *buf, size_t len, size_t max_msg,
                        size_t *scan, tether_frame *f, const char **detail)
{
    (void)fr;
    (void)scan;
    return len32_decode_common(buf, len, max_msg, false, f, detail);
}

static int len32_ctrl_decode(const tether_framer *fr, const uint8_t *buf, size_t len,
                             size_t max_msg, size_t *scan, tether_frame *f, const char **detail)
{
    (void)fr;
    (void)scan;
    return len32_decode_common(buf, len, max_msg, true, f, detail);
}

static int len32_encode(const tether_framer *fr, const uint8_t *payload, size_t len, uint8_t *hdr,
                        size_t *hdr_len, uint8_t *trailer, size_t *trailer_len)
{
    (void)fr;
    (void)payload;
    (void)trailer;
    /* Guarded by the preprocessor so 32-bit builds do not warn about a
     * comparison that can never be true there. */
#if SIZE_MAX > UINT32_MAX
    if (len > UINT32_MAX) {
        return TETHER_EMSGSIZE;
    }
#endif
    tether__put_be32(hdr, (uint32_t)len);
    *hdr_len = 4;
    *trailer_len = 0;
    return TETHER_OK;
}

static int len32_ctrl_encode(const tether_framer *fr, const uint8_t *payload, size_t len,
                             uint8_t *hdr, size_t *hdr_len, uint8_t *trailer, size_t *trailer_len)
{
    if ((uint64_t)len >= LEN32_CTRL_DATA_LIMIT) {
        return TETHER_EMSGSIZE;
    }
    return len32_encode(fr, payload, len, hdr, hdr_len, trailer, trailer_len);
}

static const tether_framer len32_framer = {
    .name = "len32",
    .decode = len32_decode,
    .encode = len32_encode,
    .arg = NULL,
};

static const tether_framer len32_ctrl_framer = {
    .name = "len32",
    .decode = len32_ctrl_decode,
    .encode = len32_ctrl_encode,
    .arg = NULL,
};

const tether_framer *tether_framer_len32(void)
{
    return &len32_framer;
}

const tether_framer *tether__framer_len32_ctrl(void)
{
    return &len32_ctrl_framer;
}

void tether__len32_ctrl_header(uint8_t hdr[4], uint8_t type, uint16_t payload_len)
{
    assert(type != 0);
    hdr[0] = (uint8_t)TETHER__CTRL_MARK;
    hdr[1] = type;
    hdr[2] = (uint8_t)(payload_len >> 8);
    hdr[3] = (uint8_t)payload_len;
}

/* ---- varint ------------------------------------------------------------ */

/* A uint64 needs at most ceil(64 / 7) = 10 groups of 7 bits. */
#define VARINT_MAX_BYTES 10

static int varint_decode(const tether_framer *fr, const uint8_t *buf, size_t len, size_t max_msg,
                         size_t *scan, tether_frame *f, const char **detail)
{
    uint64_t v = 0;
    size_t i;

    (void)fr;
    /* The prefix is at most 10 bytes, so rescanning it costs less than
     * keeping partial state would. */
    (void)scan;
    for (i = 0; i < len && i < VARINT_MAX_BYTES; i++) {
        uint8_t b = buf[i];
        if (i == VARINT_MAX_BYTES - 1) {
            if ((b & 0x80u) != 0) {
                *detail = "varint length prefix longer than 10 bytes";
                return TETHER_EPROTO;
            }
            /* The 10th group holds bit 63 only; anything above it would be
             * silently dropped by the shift below. */
            if (b > 1) {
                *detail = "varint overflows 64 bits";
                return TETHER_EPROTO;
            }
        }
        v |= (uint64_t)(b & 0x7Fu) << (7 * i);
        if ((b & 0x80u) == 0) {
            f->hdr_len = i + 1;
            f->trailer_len = 0;
            f->control = 0;
#if SIZE_MAX < UINT64_MAX
            f->payload_len = v > SIZE_MAX ? SIZE_MAX : (size_t)v;
#else
            f->payload_len = (size_t)v;
#endif
            if (v > (uint64_t)max_msg) {
                *detail = "length prefix exceeds the maximum message size";
                return TETHER_EMSGSIZE;
            }
            return TETHER_OK;
        }
    }
    return TETHER_EAGAIN;
}

static int varint_encode(const tether_framer *fr, const uint8_t *payload, size_t len, uint8_t *hdr,
                         size_t *hdr_len, uint8_t *trailer, size_t *trailer_len)
{
    uint64_t v = (uint64_t)len;
    size_t n = 0;

    (void)fr;
    (void)payload;
    (void)trailer;
    while (v >= 0x80u) {
        hdr[n++] = (uint8_t)(v | 0x80u);
        v >>= 7;
    }
    hdr[n++] = (uint8_t)v;
    *hdr_len = n;
    *trailer_len = 0;
    return TETHER_OK;
}

static_assert(VARINT_MAX_BYTES <= TETHER_FRAME_HDR_MAX, "a varint header must fit");

static const tether_framer varint_framer = {
    .name = "varint",
    .decode = varint_decode,
    .encode = varint_encode,
    .arg = NULL,
};

const tether_framer *tether_framer_varint(void)
{
    return &varint_framer;
}

/* ---- line -------------------------------------------------------------- */

static_assert(sizeof(((tether__line_framer *)0)->delim) <= TETHER_FRAME_TRAILER_MAX,
              "a line delimiter must fit in a trailer");

/* Returns the offset of the first delimiter in hay[0..len), or len if there
 * is none. */
static size_t line_find(const uint8_t *hay, size_t len, const uint8_t *delim, size_t dl)
{
    size_t p = 0;

    while (len - p >= dl) {
        const uint8_t *c = memchr(hay + p, delim[0], len - p - dl + 1);
        if (c == NULL) {
            return len;
        }
        p = (size_t)(c - hay);
        if (memcmp(c, delim, dl) == 0) {
            return p;
        }
        p++;
    }
    return len;
}

static int line_decode(const tether_framer *fr, const uint8_t *buf, size_t len, size_t max_msg,
                       size_t *scan, tether_frame *f, const char **detail)
{
    const tether__line_framer *lf = (const tether__line_framer *)fr;
    size_t dl = lf->delim_len;
    size_t start = *scan;
    size_t p;

    if (len < dl) {
        *scan = len;
        return TETHER_EAGAIN;
    }
    /* A hint beyond the data cannot be trusted, so search from the start. A
     * delimiter that straddled the end of the bytes seen last time was not
     * recognisable then, so resume dl - 1 bytes before that end. */
    if (start > len) {
        start = 0;
    }
    start = start >= dl - 1 ? start - (dl - 1) : 0;

    p = start + line_find(buf + start, len - start, lf->delim, dl);
    if (p < len) {
        f->hdr_len = 0;
        f->payload_len = p;
        f->trailer_len = dl;
        f->control = 0;
        /* The whole buffer is searched, not just max_msg bytes of it, so a
         * line that arrived in one read is reported with its real size. */
        if (p > max_msg) {
            *detail = "line longer than the maximum";
            return TETHER_EMSGSIZE;
        }
        return TETHER_OK;
    }

    /* No delimiter starts in buf[0..len - dl], so the line is at least
     * len - dl + 1 bytes long; only that much proves it too long, since the
     * last dl - 1 bytes may still turn out to begin the delimiter. */
    if (len - (dl - 1) > max_msg) {
        f->hdr_len = 0;
        f->payload_len = len - (dl - 1);
        f->trailer_len = 0;
        f->control = 0;
        *detail = "line longer than the maximum without a delimiter";
        return TETHER_EMSGSIZE;
    }
    *scan = len;
    return TETHER_EAGAIN;
}

/* True when payload followed by the delimiter contains the delimiter before
 * offset len: the decoder would then cut the message short. Besides a
 * delimiter inside the payload, that includes one that starts in the
 * payload's tail and ends in the trailer, which a delimiter whose prefix is
 * also its suffix (such as "\n\n") allows: "a\n" + "\n\n" reads back as "a". */
static bool line_payload_breaks(const tether__line_framer *lf, const uint8_t *payload, size_t len)
{
    size_t dl = lf->delim_len;
    size_t k;

    if (len == 0) {
        return false;
    }
    if (line_find(payload, len, lf->delim, dl) < len) {
        return true;
    }
    for (k = 1; k < dl && k <= len; k++) {
        if (memcmp(payload + len - k, lf->delim, k) == 0 &&
            memcmp(lf->delim + k, lf->delim, dl - k) == 0) {
            return true;
        }
    }
    return false;
}

static int line_encode(const tether_framer *fr, const uint8_t *payload, size_t len, uint8_t *hdr,
                       size_t *hdr_len, uint8_t *trailer, size_t *trailer_len)
{
    const tether__line_framer *lf = (const tether__line_framer *)fr;

    (void)hdr;
    if (line_payload_breaks(lf, payload, len)) {
        return TETHER_EINVAL;
    }
    memcpy(trailer, lf->delim, lf->delim_len);
    *hdr_len = 0;
    *trailer_len = lf->delim_len;
    return TETHER_OK;
}

/* The public newline framer: the same code as TETHER_FRAMING_LINE with its
 * default delimiter, so a custom framing can wrap or reuse it. */
static const tether__line_framer newline_framer = {
    .base = {.name = "line", .decode = line_decode, .encode = line_encode, .arg = NULL},
    .delim = {'\n'},
    .delim_len = 1,
};

const tether_framer *tether_framer_line(void)
{
    return &newline_framer.base;
}

int tether__line_framer_init(tether__line_framer *lf, const uint8_t *delim, size_t delim_len)
{
    if (lf == NULL || delim == NULL || delim_len == 0 || delim_len > sizeof lf->delim) {
        return TETHER_EINVAL;
    }
    memset(lf, 0, sizeof *lf);
    lf->base.name = "line";
    lf->base.decode = line_decode;
    lf->base.encode = line_encode;
    lf->base.arg = NULL;
    memcpy(lf->delim, delim, delim_len);
    lf->delim_len = delim_len;
    return TETHER_OK;
}
