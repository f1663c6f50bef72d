/* SPDX-License-Identifier: MIT */
/* The PROXY protocol, versions 1 and 2 (HAProxy's doc/proxy-protocol.txt):
 * the parser and the encoder of the header, as pure functions on byte
 * buffers, so that every rule can be tested without a socket.
 *
 * The parser is incremental in the simplest way: it is handed everything
 * received so far and answers "complete, N bytes", "need more" or "why
 * not". It decides "need more" only while every byte so far can still
 * belong to a valid header, which lets the caller consume what it has
 * without ever reading past the header into the TLS handshake or the
 * first frame. The receiver never guesses whether a header is present:
 * anything that is not one is an error. */
#include "proxy_proto.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

static const uint8_t pp_v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                      0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char pp_v1_sig[6] = "PROXY ";

#define PP_TLV_CRC32C 0x03u
#define PP_TLV_SSL 0x20u
#define PP_UNIX_ADDR 108u

/* ---- CRC32C ------------------------------------------------------------- */

/* Bitwise CRC32C (reflected polynomial 0x82F63B78): a header is checked
 * once per connection, so a table would buy nothing worth its size. */
static uint32_t pp_crc32c_update(uint32_t crc, const uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        crc ^= buf[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
        }
    }
    return crc;
}

uint32_t tether__pp_crc32c(const uint8_t *buf, size_t len)
{
    return ~pp_crc32c_update(0xFFFFFFFFu, buf, len);
}

/* ---- helpers ------------------------------------------------------------ */

/* Describes the first bytes of something that is not a PROXY header, so
 * that the error says what arrived instead (a TLS ClientHello, a frame). */
static void pp_describe_start(const uint8_t *buf, size_t len, char *out, size_t out_len)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < len && i < 8 && used + 4 < out_len; i++) {
        used += (size_t)snprintf(out + used, out_len - used, "%s%02x", i > 0 ? " " : "", buf[i]);
    }
}

static int pp_fail(char *why, size_t why_len, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int pp_fail(char *why, size_t why_len, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
    return code;
}

/* ---- version 1 ---------------------------------------------------------- */

/* A decimal port: 1 to 5 digits, no heading zero, at most 65535. */
static bool pp_v1_port(const char *s, size_t n, uint16_t *out)
{
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0')) {
        return false;
    }
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return false;
        }
        v = v * 10u + (uint32_t)(s[i] - '0');
    }
    if (v > 65535u) {
        return false;
    }
    *out = (uint16_t)v;
    return true;
}

/* An address token of the family the line announced. inet_pton refuses
 * heading zeros in IPv4 ("010.0.0.1"), as the spec asks. */
static bool pp_v1_addr(const char *s, size_t n, int af, struct sockaddr_storage *ss, socklen_t *sl)
{
    char tmp[INET6_ADDRSTRLEN + 1];
    if (n == 0 || n >= sizeof tmp) {
        return false;
    }
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    memset(ss, 0, sizeof *ss);
    if (af == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        *sl = sizeof *sin;
        return inet_pton(AF_INET, tmp, &sin->sin_addr) == 1;
    }
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    sin6->sin6_family = AF_INET6;
    *sl = sizeof *sin6;
    return inet_pton(AF_INET6, tmp, &sin6->sin6_addr) == 1;
}

static void pp_set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET) {
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    } else {
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
    }
}

static int pp_parse_v1(const uint8_t *buf, size_t len, struct tether__pp_result *out, char *why,
                       size_t why_len)
{
    size_t n = TETHER__MIN(len, sizeof pp_v1_sig);
    if (memcmp(buf, pp_v1_sig, n) != 0) {
        return pp_fail(why, why_len, TETHER_EPROTO,
                       "PROXY protocol v1 header does not start with \"PROXY \"");
    }
    const uint8_t *lf = memchr(buf, '\n', TETHER__MIN(len, (size_t)TETHER__PP_V1_MAX));
    if (lf == NULL) {
        if (len >= TETHER__PP_V1_MAX) {
            return pp_fail(why, why_len, TETHER_EMSGSIZE,
                           "PROXY protocol v1 header has no CRLF within %u bytes",
                           TETHER__PP_V1_MAX);
        }
        return 0;
    }
    size_t total = (size_t)(lf - buf) + 1;
    if (total < 2 || buf[total - 2] != '\r') {
        return pp_fail(why, why_len, TETHER_EPROTO,
                       "PROXY protocol v1 header ends with a bare LF instead of CRLF");
    }
    /* The line without "PROXY " and CRLF, split at single spaces. */
    const char *line = (const char *)buf + sizeof pp_v1_sig;
    size_t line_len = total - 2 - sizeof pp_v1_sig;
    const char *tok[5];
    size_t tlen[5];
    int ntok = 0;
    size_t start = 0;
    for (size_t i = 0; i <= line_len; i++) {
        if (i == line_len || line[i] == ' ') {
            if (i == start) {
                return pp_fail(why, why_len, TETHER_EPROTO,
                               "PROXY protocol v1 header has an empty field (two spaces in a "
                               "row, or a space before CRLF)");
            }
            if (ntok == 5) {
                return pp_fail(why, why_len, TETHER_EPROTO,
                               "PROXY protocol v1 header has more than 5 fields after PROXY");
            }
            tok[ntok] = line + start;
            tlen[ntok] = i - start;
            ntok++;
            start = i + 1;
            if (ntok == 1 && tlen[0] == 7 && memcmp(tok[0], "UNKNOWN", 7) == 0) {
                break; /* the rest of the line is to be ignored */
            }
        } else if ((unsigned char)line[i] < 0x21 || (unsigned char)line[i] > 0x7E) {
            return pp_fail(why, why_len, TETHER_EPROTO,
                           "PROXY protocol v1 header has a control or non-ASCII byte 0x%02x",
                           (unsigned char)line[i]);
        }
    }
    memset(out, 0, sizeof *out);
    out->version = 1;
    out->protocol = 1;
    if (tlen[0] == 7 && memcmp(tok[0], "UNKNOWN", 7) == 0) {
        return (int)total;
    }
    int af;
    if (tlen[0] == 4 && memcmp(tok[0], "TCP4", 4) == 0) {
        af = AF_INET;
        out->family = 1;
    } else if (tlen[0] == 4 && memcmp(tok[0], "TCP6", 4) == 0) {
        af = AF_INET6;
        out->family = 2;
    } else {
        return pp_fail(why, why_len, TETHER_EPROTO,
                       "PROXY protocol v1 header has an unknown protocol \"%.*s\" (not TCP4, "
                       "TCP6 or UNKNOWN)",
                       (int)TETHER__MIN(tlen[0], (size_t)16), tok[0]);
    }
    if (ntok != 5) {
        return pp_fail(why, why_len, TETHER_EPROTO,
                       "PROXY protocol v1 header has %d fields after PROXY; %s needs 5 (the "
                       "protocol, two addresses, two ports)",
                       ntok, af == AF_INET ? "TCP4" : "TCP6");
    }
    const char *names[2] = {"source", "destination"};
    struct sockaddr_storage *ss[2] = {&out->src, &out->dst};
    socklen_t *sl[2] = {&out->src_len, &out->dst_len};
    for (int i = 0; i < 2; i++) {
        if (!pp_v1_addr(tok[1 + i], tlen[1 + i], af, ss[i], sl[i])) {
            return pp_fail(why, why_len, TETHER_EPROTO,
                           "PROXY protocol v1 header has a bad %s address \"%.*s\" for %s",
                           names[i], (int)TETHER__MIN(tlen[1 + i], (size_t)46), tok[1 + i],
                           af == AF_INET ? "TCP4" : "TCP6");
        }
    }
    for (int i = 0; i < 2; i++) {
        uint16_t port;
        if (!pp_v1_port(tok[3 + i], tlen[3 + i], &port)) {
            return pp_fail(why, why_len, TETHER_EPROTO,
                           "PROXY protocol v1 header has a bad %s port \"%.*s\" (0..65535, "
                           "no heading zero)",
                           names[i], (int)TETHER__MIN(tlen[3 + i], (size_t)8), tok[3 + i]);
        }
        pp_set_port(ss[i], port);
    }
    out->has_addr = true;
    return (int)total;
}

/* ---- version 2 ---------------------------------------------------------- */

/* Checks that the TLVs in [p, p + n) fit exactly; recurses once into the
 * SSL TLV's sub-TLVs. Returns the offset of a CRC32C value (relative to
 * base) in *crc_off, or SIZE_MAX when there is none. */
static int pp_v2_check_tlvs(const uint8_t *base, const uint8_t *p, size_t n, bool nested,
                            size_t *crc_off, char *why, size_t why_len)
{
    size_t off = 0;
    while (off < n) {
        if (n - off < 3) {
            return pp_fail(why, why_len, TETHER_EPROTO,
                           "PROXY protocol v2 %sTLV at offset %zu is cut short (%zu bytes left, "
                           "3 needed)",
                           nested ? "SSL sub-" : "", (size_t)(p + off - base), n - off);
        }
        uint8_t type = p[off];
        size_t vlen = ((size_t)p[off + 1] << 8) | p[off + 2];
        if (vlen > n - off - 3) {
            return pp_fail(why, why_len, TETHER_EPROTO,
                           "PROXY protocol v2 %sTLV 0x%02x at offset %zu runs past the header "
                           "(length %zu, %zu bytes left)",
                           nested ? "SSL sub-" : "", type, (size_t)(p + off - base), vlen,
                           n - off - 3);
        }
        const uint8_t *v = p + off + 3;
        if (!nested && type == PP_TLV_CRC32C) {
            if (vlen != 4) {
                return pp_fail(why, why_len, TETHER_EPROTO,
                               "PROXY protocol v2 CRC32C TLV has length %zu, not 4", vlen);
            }
            *crc_off = (size_t)(v - base);
        } else if (!nested && type == PP_TLV_SSL) {
            if (vlen < 5) {
                return pp_fail(why, why_len, TETHER_EPROTO,
                               "PROXY protocol v2 SSL TLV has length %zu, less than 5", vlen);
            }
            int rv = pp_v2_check_tlvs(base, v + 5, vlen - 5, true, crc_off, why, why_len);
            if (rv != TETHER_OK) {
                return rv;
            }
        }
        off += 3 + vlen;
    }
    return TETHER_OK;
}

/* A 108-byte AF_UNIX address: a path up to the first NUL, or, when it
 * starts with NUL, an abstract name without its trailing NULs. */
static void pp_v2_unix(const uint8_t *a, struct sockaddr_storage *ss, socklen_t *sl)
{
    struct sockaddr_un *sun = (struct sockaddr_un *)ss;
    memset(ss, 0, sizeof *ss);
    sun->sun_family = AF_UNIX;
    size_t n;
    if (a[0] == 0) {
        n = PP_UNIX_ADDR;
        while (n > 1 && a[n - 1] == 0) {
            n--;
        }
    } else {
        n = strnlen((const char *)a, PP_UNIX_ADDR);
    }
    static_assert(sizeof sun->sun_path >= PP_UNIX_ADDR, "sun_path holds a PROXY v2 address");
    memcpy(sun->sun_path, a, n);
    *sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
}

static int pp_parse_v2(const uint8_t *buf, size_t len, struct tether__pp_result *out, char *why,
                       size_t why_len)
{
    size_t n = TETHER__MIN(len, sizeof pp_v2_sig);
    if (memcmp(buf, pp_v2_sig, n) != 0) {
        return pp_fail(why, why_len, TETHER_EPROTO, "PROXY protocol v2 header has a bad signature");
    }
    if (len < TETHER__PP_V2_HDR) {
        return 0;
    }
    unsigned ver = buf[12] >> 4, cmd = buf[12] & 0x0Fu;
    unsigned fam = buf[13] >> 4, proto = buf[13] & 0x0Fu;
    size_t alen = ((size_t)buf[14] << 8) | buf[15];
    if (ver != 2) {
        return pp_fail(why, why_len, TETHER_EPROTO,
                       "PROXY protocol v2 header has version %u (only 2 is defined)", ver);
    }
    if (cmd > 1) {
        return pp_fail(why, why_len, TETHER_EPROTO,
                       "PROXY protocol v2 header has an unknown command 0x%x (0 LOCAL, 1 PROXY)",
                       cmd);
    }
    if (fam > 3) {
        return pp_fail(why, why_len, TETHER_EPROTO,
                       "PROXY protocol v2 header has an unknown address family 0x%x", fam);
    }
    if (proto > 2) {
        return pp_fail(why, why_len, TETHER_EPROTO,
                       "PROXY protocol v2 header has an unknown transport protocol 0x%x", proto);
    }
    if (alen > TETHER__PP_V2_MAX_LEN) {
        return pp_fail(why, why_len, TETHER_EMSGSIZE,
                       "PROXY protocol v2 header announces %zu bytes of addresses and TLVs; "
                       "the limit is %u",
                       alen, TETHER__PP_V2_MAX_LEN);
    }
    size_t total = TETHER__PP_V2_HDR + alen;
    if (len < total) {
        return 0;
    }
    memset(out, 0, sizeof *out);
    out->version = 2;
    out->local = cmd == 0;
    out->family = (uint8_t)fam;
    out->protocol = (uint8_t)proto;
    if (out->local) {
        /* The block, family included, is to be ignored (spec 2.2). */
        return (int)total;
    }
    static const size_t need[4] = {0, 12, 36, 2 * PP_UNIX_ADDR};
    static const char *const fam_name[4] = {"unspecified", "IPv4", "IPv6", "Unix"};
    if (alen < need[fam]) {
        return pp_fail(why, why_len, TETHER_EPROTO,
                       "PROXY protocol v2 header length %zu does not cover the %s address block "
                       "(%zu bytes)",
                       alen, fam_name[fam], need[fam]);
    }
    const uint8_t *a = buf + TETHER__PP_V2_HDR;
    if (fam == 0) {
        /* Address length unknown: the block is opaque, no TLVs can be
         * found in it, and the real endpoints stand. */
        return (int)total;
    }
    size_t crc_off = SIZE_MAX;
    int rv = pp_v2_check_tlvs(buf, a + need[fam], alen - need[fam], false, &crc_off, why, why_len);
    if (rv != TETHER_OK) {
        return rv;
    }
    if (crc_off != SIZE_MAX) {
        static const uint8_t zero[4] = {0, 0, 0, 0};
        uint32_t crc = pp_crc32c_update(0xFFFFFFFFu, buf, crc_off);
        crc = pp_crc32c_update(crc, zero, 4);
        crc = ~pp_crc32c_update(crc, buf + crc_off + 4, total - crc_off - 4);
        uint32_t got = ((uint32_t)buf[crc_off] << 24) | ((uint32_t)buf[crc_off + 1] << 16) |
                       ((uint32_t)buf[crc_off + 2] << 8) | buf[crc_off + 3];
        if (crc != got) {
            return pp_fail(why, why_len, TETHER_EPROTO,
                           "PROXY protocol v2 header fails its CRC32C check (carries %08x, "
                           "computed %08x)",
                           got, crc);
        }
    }
    out->tlv = a + need[fam];
    out->tlv_len = alen - need[fam];
    if (proto == 0) {
        return (int)total; /* unspecified transport: the real endpoints stand */
    }
    if (fam == 1) {
        struct sockaddr_in *s = (struct sockaddr_in *)&out->src;
        struct sockaddr_in *d = (struct sockaddr_in *)&out->dst;
        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, a, 4);
        memcpy(&d->sin_addr, a + 4, 4);
        memcpy(&s->sin_port, a + 8, 2);
        memcpy(&d->sin_port, a + 10, 2);
        out->src_len = out->dst_len = sizeof *s;
    } else if (fam == 2) {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->src;
        struct sockaddr_in6 *d = (struct sockaddr_in6 *)&out->dst;
        s->sin6_family = d->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, a, 16);
        memcpy(&d->sin6_addr, a + 16, 16);
        memcpy(&s->sin6_port, a + 32, 2);
        memcpy(&d->sin6_port, a + 34, 2);
        out->src_len = out->dst_len = sizeof *s;
    } else {
        pp_v2_unix(a, &out->src, &out->src_len);
        pp_v2_unix(a + PP_UNIX_ADDR, &out->dst, &out->dst_len);
    }
    out->has_addr = true;
    return (int)total;
}

/* ---- public entry points ------------------------------------------------ */

int tether__pp_parse(const uint8_t *buf, size_t len, unsigned accept, struct tether__pp_result *out,
                     char *why, size_t why_len)
{
    why[0] = '\0';
    if (len == 0) {
        return 0;
    }
    if (buf[0] == pp_v2_sig[0]) {
        if (!(accept & TETHER__PP_V2)) {
            size_t n = TETHER__MIN(len, sizeof pp_v2_sig);
            if (memcmp(buf, pp_v2_sig, n) == 0) {
                return n == sizeof pp_v2_sig
                           ? pp_fail(why, why_len, TETHER_EPROTO,
                                     "PROXY protocol v2 header, but this listener accepts v1 "
                                     "only")
                           : 0;
            }
        } else {
            return pp_parse_v2(buf, len, out, why, why_len);
        }
    } else if (buf[0] == (uint8_t)pp_v1_sig[0]) {
        if (!(accept & TETHER__PP_V1)) {
            size_t n = TETHER__MIN(len, sizeof pp_v1_sig);
            if (memcmp(buf, pp_v1_sig, n) == 0) {
                return n == sizeof pp_v1_sig
                           ? pp_fail(why, why_len, TETHER_EPROTO,
                                     "PROXY protocol v1 header, but this listener accepts v2 "
                                     "only")
                           : 0;
            }
        } else {
            return pp_parse_v1(buf, len, out, why, why_len);
        }
    }
    char start[40];
    pp_describe_start(buf, len, start, sizeof start);
    return pp_fail(why, why_len, TETHER_EPROTO,
                   "no PROXY protocol header (the listener requires %s); the connection starts "
                   "with %s%s",
                   accept == TETHER__PP_V1   ? "v1"
                   : accept == TETHER__PP_V2 ? "v2"
                                             : "v1 or v2",
                   start, buf[0] == 0x16 ? " (a TLS ClientHello)" : "");
}

bool tether__pp_tlv_find(const uint8_t *tlv, size_t tlv_len, uint8_t type, const uint8_t **val,
                         size_t *val_len)
{
    size_t off = 0;
    while (tlv != NULL && tlv_len - off >= 3) {
        size_t vlen = ((size_t)tlv[off + 1] << 8) | tlv[off + 2];
        if (vlen > tlv_len - off - 3) {
            return false;
        }
        if (tlv[off] == type) {
            *val = tlv + off + 3;
            *val_len = vlen;
            return true;
        }
        off += 3 + vlen;
    }
    return false;
}

/* An IPv4-mapped IPv6 address as IPv4, so that a dual-stack socket's view
 * of an IPv4 peer is announced as TCP4. */
static void pp_unmap(const struct sockaddr *in, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof *out);
    if (in->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)in;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            struct sockaddr_in *s4 = (struct sockaddr_in *)out;
            s4->sin_family = AF_INET;
            memcpy(&s4->sin_addr, &s6->sin6_addr.s6_addr[12], 4);
            s4->sin_port = s6->sin6_port;
            return;
        }
        memcpy(out, in, sizeof *s6);
    } else if (in->sa_family == AF_INET) {
        memcpy(out, in, sizeof(struct sockaddr_in));
    } else {
        out->ss_family = in->sa_family;
    }
}

/* An IPv4 address as IPv4-mapped IPv6, to pair it with an IPv6 one. */
static void pp_map(struct sockaddr_storage *ss)
{
    if (ss->ss_family != AF_INET) {
        return;
    }
    struct sockaddr_in s4;
    memcpy(&s4, ss, sizeof s4);
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof *ss);
    s6->sin6_family = AF_INET6;
    s6->sin6_addr.s6_addr[10] = 0xFF;
    s6->sin6_addr.s6_addr[11] = 0xFF;
    memcpy(&s6->sin6_addr.s6_addr[12], &s4.sin_addr, 4);
    s6->sin6_port = s4.sin_port;
}

int tether__pp_encode(uint8_t *buf, size_t cap, int version, const struct sockaddr *src,
                      const struct sockaddr *dst)
{
    if (version != 1 && version != 2) {
        return TETHER_EINVAL;
    }
    struct sockaddr_storage s, d;
    if (src != NULL) {
        if (dst == NULL) {
            return TETHER_EINVAL;
        }
        pp_unmap(src, &s);
        pp_unmap(dst, &d);
        if ((s.ss_family != AF_INET && s.ss_family != AF_INET6) ||
            (d.ss_family != AF_INET && d.ss_family != AF_INET6)) {
            return TETHER_EINVAL;
        }
        if (s.ss_family != d.ss_family) {
            pp_map(&s);
            pp_map(&d);
        }
    }
    if (version == 1) {
        char line[TETHER__PP_V1_MAX + 1];
        int n;
        if (src == NULL) {
            n = snprintf(line, sizeof line, "PROXY UNKNOWN\r\n");
        } else {
            char sa[INET6_ADDRSTRLEN], da[INET6_ADDRSTRLEN];
            bool v4 = s.ss_family == AF_INET;
            const void *sp = v4 ? (const void *)&((struct sockaddr_in *)&s)->sin_addr
                                : (const void *)&((struct sockaddr_in6 *)&s)->sin6_addr;
            const void *dp = v4 ? (const void *)&((struct sockaddr_in *)&d)->sin_addr
                                : (const void *)&((struct sockaddr_in6 *)&d)->sin6_addr;
            inet_ntop(s.ss_family, sp, sa, sizeof sa);
            inet_ntop(d.ss_family, dp, da, sizeof da);
            unsigned sport = ntohs(v4 ? ((struct sockaddr_in *)&s)->sin_port
                                      : ((struct sockaddr_in6 *)&s)->sin6_port);
            unsigned dport = ntohs(v4 ? ((struct sockaddr_in *)&d)->sin_port
                                      : ((struct sockaddr_in6 *)&d)->sin6_port);
            n = snprintf(line, sizeof line, "PROXY %s %s %s %u %u\r\n", v4 ? "TCP4" : "TCP6", sa,
                         da, sport, dport);
        }
        if (n < 0 || (size_t)n >= sizeof line) {
            return TETHER_EINVAL;
        }
        if ((size_t)n > cap) {
            return TETHER_ENOMEM;
        }
        memcpy(buf, line, (size_t)n);
        return n;
    }
    size_t alen = src == NULL ? 0 : s.ss_family == AF_INET ? 12 : 36;
    if (cap < TETHER__PP_V2_HDR + alen) {
        return TETHER_ENOMEM;
    }
    memcpy(buf, pp_v2_sig, sizeof pp_v2_sig);
    buf[12] = 0x21; /* PROXY; without addresses, with an unspecified family */
    buf[13] = src == NULL ? 0x00 : s.ss_family == AF_INET ? 0x11 : 0x21;
    buf[14] = 0;
    buf[15] = (uint8_t)alen;
    uint8_t *a = buf + TETHER__PP_V2_HDR;
    if (alen == 12) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&s;
        const struct sockaddr_in *d4 = (const struct sockaddr_in *)&d;
        memcpy(a, &s4->sin_addr, 4);
        memcpy(a + 4, &d4->sin_addr, 4);
        memcpy(a + 8, &s4->sin_port, 2);
        memcpy(a + 10, &d4->sin_port, 2);
    } else if (alen == 36) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&s;
        const struct sockaddr_in6 *d6 = (const struct sockaddr_in6 *)&d;
        memcpy(a, &s6->sin6_addr, 16);
        memcpy(a + 16, &d6->sin6_addr, 16);
        memcpy(a + 32, &s6->sin6_port, 2);
        memcpy(a + 34, &d6->sin6_port, 2);
    }
    return (int)(TETHER__PP_V2_HDR + alen);
}
