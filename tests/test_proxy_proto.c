/* SPDX-License-Identifier: MIT */
/* The PROXY protocol: the parser and encoder of lib/proxy_proto.c with the
 * spec's examples (HAProxy doc/proxy-protocol.txt), the vectors of
 * Twisted's parser tests and malformed headers; then listeners that
 * require the header and dialled connections that send it, over loopback
 * (lib/conn_proxy.c). */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "conn.h"
#include "helpers.h"
#include "proxy_proto.h"

#ifndef TETHER_CERTS_DIR
#error "TETHER_CERTS_DIR must name the certs/ directory"
#endif
#define CERT(name) TETHER_CERTS_DIR "/" name

#define SIG "\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A"

static struct tether__pp_result R;
static char why[256];

static int parse(const void *p, size_t n, unsigned accept)
{
    memset(&R, 0, sizeof R);
    return tether__pp_parse(p, n, accept, &R, why, sizeof why);
}

static const char *fmt(const struct sockaddr_storage *ss, socklen_t sl)
{
    static char buf[2][160];
    static int i;
    i ^= 1;
    tether__addr_format((const struct sockaddr *)ss, sl, buf[i], sizeof buf[i]);
    return buf[i];
}

#define PP_ALL (TETHER__PP_V1 | TETHER__PP_V2)

/* ---- version 1 ------------------------------------------------------------- */

START_TEST(v1_spec_examples)
{
    static const char tcp4[] = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /";
    ck_assert_int_eq(parse(tcp4, sizeof tcp4 - 1, PP_ALL), 47);
    ck_assert_int_eq(R.version, 1);
    ck_assert(R.has_addr);
    ck_assert_str_eq(fmt(&R.src, R.src_len), "192.168.0.1:56324");
    ck_assert_str_eq(fmt(&R.dst, R.dst_len), "192.168.0.11:443");

    /* Twisted's test_v1parser: a full TCP6 line. */
    static const char tcp6[] = "PROXY TCP6 ::1 ::1 8080 8888\r\n";
    ck_assert_int_eq(parse(tcp6, sizeof tcp6 - 1, PP_ALL), (int)sizeof tcp6 - 1);
    ck_assert_str_eq(fmt(&R.src, R.src_len), "[::1]:8080");
    ck_assert_str_eq(fmt(&R.dst, R.dst_len), "[::1]:8888");

    /* The longest TCP6 line (104) and the worst case UNKNOWN line (107). */
    static const char v6max[] = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    ck_assert_int_eq((int)sizeof v6max - 1, 104);
    ck_assert_int_eq(parse(v6max, sizeof v6max - 1, PP_ALL), 104);
    static const char unk_max[] = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                                  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    ck_assert_int_eq((int)sizeof unk_max - 1, 107);
    ck_assert_int_eq(parse(unk_max, sizeof unk_max - 1, PP_ALL), 107);
    ck_assert(!R.has_addr);

    /* The short UNKNOWN form, followed by a frame that is not consumed. */
    static const char unk[] = "PROXY UNKNOWN\r\n\x00\x00\x00\x01x";
    ck_assert_int_eq(parse(unk, sizeof unk - 1, PP_ALL), 15);
    ck_assert_int_eq(R.version, 1);
    ck_assert(!R.has_addr);
}
END_TEST

START_TEST(v1_incremental)
{
    /* Every prefix of a valid line asks for more, never errs and never
     * claims bytes past the line. */
    static const char line[] = "PROXY TCP4 127.0.0.7 127.0.0.1 40000 5555\r\n";
    size_t n = sizeof line - 1;
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(parse(line, i, TETHER__PP_V1) == 0, "prefix %zu: %s", i, why);
    }
    ck_assert_int_eq(parse(line, n, TETHER__PP_V1), (int)n);
    ck_assert_str_eq(fmt(&R.src, R.src_len), "127.0.0.7:40000");
}
END_TEST

START_TEST(v1_malformed)
{
    static const struct {
        const char *in;
        int code;
        const char *needle;
    } cases[] = {
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", TETHER_EPROTO, "bare LF"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", TETHER_EPROTO, "control"},
        {"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", TETHER_EPROTO, "unknown protocol \"TCP5\""},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", TETHER_EPROTO, "fields"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", TETHER_EPROTO, "more than 5"},
        {"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", TETHER_EPROTO, "empty field"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", TETHER_EPROTO, "empty field"},
        {"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", TETHER_EPROTO, "source address \"1.2.3.256\""},
        {"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", TETHER_EPROTO, "source address"},
        {"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", TETHER_EPROTO, "source address \"::1\" for TCP4"},
        {"PROXY TCP6 ::1 1.2.3.4 1 2\r\n", TETHER_EPROTO, "destination address"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", TETHER_EPROTO, "source port \"65536\""},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", TETHER_EPROTO, "source port \"080\""},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n", TETHER_EPROTO, "destination port"},
        {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2x\r\n", TETHER_EPROTO, "destination port"},
        {"PROXX TCP4 1.2.3.4 5.6.7.8 1 2\r\n", TETHER_EPROTO, "\"PROXY \""},
        {"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", TETHER_EPROTO, "no PROXY protocol header"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rv = parse(cases[i].in, strlen(cases[i].in), PP_ALL);
        ck_assert_msg(rv == cases[i].code, "case %zu (%s): %d, %s", i, cases[i].in, rv, why);
        ck_assert_msg(strstr(why, cases[i].needle) != NULL, "case %zu: '%s' lacks '%s'", i, why,
                      cases[i].needle);
    }
    /* No CRLF within 107 bytes. */
    char longline[200];
    memset(longline, 'a', sizeof longline);
    memcpy(longline, "PROXY UNKNOWN ", 14);
    ck_assert_int_eq(parse(longline, 106, PP_ALL), 0);
    ck_assert_int_eq(parse(longline, 107, PP_ALL), TETHER_EMSGSIZE);
    ck_assert_ptr_nonnull(strstr(why, "no CRLF within 107 bytes"));
    memcpy(longline + 106, "\r\n", 2); /* a 108-byte line */
    ck_assert_int_eq(parse(longline, 108, PP_ALL), TETHER_EMSGSIZE);
}
END_TEST

/* ---- version 2 ------------------------------------------------------------- */

/* Twisted's test_v2parser vectors: 127.0.0.1:8080 -> 127.0.0.1:8888, and
 * ::1:8080 -> ::1:8888. */
static const uint8_t tw_v4[] = SIG "\x21\x11\x00\x0C"
                                   "\x7F\x00\x00\x01\x7F\x00\x00\x01\x1F\x90\x22\xB8";
static const uint8_t tw_v6[] =
    SIG "\x21\x21\x00\x24"
        "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
        "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01"
        "\x1F\x90\x22\xB8";

START_TEST(v2_twisted_vectors)
{
    ck_assert_int_eq(parse(tw_v4, sizeof tw_v4 - 1, PP_ALL), 28);
    ck_assert_int_eq(R.version, 2);
    ck_assert(!R.local);
    ck_assert(R.has_addr);
    ck_assert_str_eq(fmt(&R.src, R.src_len), "127.0.0.1:8080");
    ck_assert_str_eq(fmt(&R.dst, R.dst_len), "127.0.0.1:8888");
    ck_assert_uint_eq(R.tlv_len, 0);

    ck_assert_int_eq(parse(tw_v6, sizeof tw_v6 - 1, PP_ALL), 52);
    ck_assert_str_eq(fmt(&R.src, R.src_len), "[::1]:8080");
    ck_assert_str_eq(fmt(&R.dst, R.dst_len), "[::1]:8888");

    /* Unix: "/home/tests/mysockets/sock" padded to 108 bytes, twice. */
    uint8_t ux[16 + 216];
    memcpy(ux, SIG "\x21\x31\x00\xD8", 16);
    memset(ux + 16, 0, 216);
    memcpy(ux + 16, "/home/tests/mysockets/sock", 26);
    memcpy(ux + 16 + 108, "/home/tests/mysockets/sock", 26);
    ck_assert_int_eq(parse(ux, sizeof ux, PP_ALL), 232);
    ck_assert(R.has_addr);
    ck_assert_str_eq(fmt(&R.src, R.src_len), "unix:/home/tests/mysockets/sock");

    /* LOCAL (Twisted's verCom 0x20): accepted, no address, even with an
     * address block present. */
    uint8_t local[sizeof tw_v4 - 1];
    memcpy(local, tw_v4, sizeof local);
    local[12] = 0x20;
    ck_assert_int_eq(parse(local, sizeof local, PP_ALL), 28);
    ck_assert(R.local);
    ck_assert(!R.has_addr);
    /* HAProxy's health check: LOCAL, family UNSPEC, no block. */
    ck_assert_int_eq(parse(SIG "\x20\x00\x00\x00", 16, PP_ALL), 16);
    ck_assert(R.local);
    /* PROXY with an unspecified family or transport: the real endpoints. */
    ck_assert_int_eq(parse(SIG "\x21\x00\x00\x00", 16, PP_ALL), 16);
    ck_assert(!R.has_addr);
    uint8_t unspec[sizeof tw_v4 - 1];
    memcpy(unspec, tw_v4, sizeof unspec);
    unspec[13] = 0x10;
    ck_assert_int_eq(parse(unspec, sizeof unspec, PP_ALL), 28);
    ck_assert(!R.has_addr);
}
END_TEST

START_TEST(v2_incremental_and_tlvs)
{
    /* IPv4 plus ALPN "h2", AUTHORITY "example.test", an SSL TLV with a
     * VERSION sub-TLV, and a NOOP. */
    uint8_t h[128];
    size_t n = 0;
    memcpy(h, tw_v4, 28);
    n = 28;
    static const uint8_t tlvs[] = "\x01\x00\x02h2"
                                  "\x02\x00\x0C"
                                  "example.test"
                                  "\x20\x00\x0C\x01\x00\x00\x00\x00\x21\x00\x04TLS1"
                                  "\x04\x00\x00";
    memcpy(h + n, tlvs, sizeof tlvs - 1);
    n += sizeof tlvs - 1;
    h[15] = (uint8_t)(n - 16);
    for (size_t i = 0; i < n; i++) {
        ck_assert_msg(parse(h, i, TETHER__PP_V2) == 0, "prefix %zu: %s", i, why);
    }
    ck_assert_int_eq(parse(h, n, TETHER__PP_V2), (int)n);
    ck_assert_uint_eq(R.tlv_len, sizeof tlvs - 1);
    const uint8_t *v;
    size_t vl;
    ck_assert(tether__pp_tlv_find(R.tlv, R.tlv_len, 0x01, &v, &vl));
    ck_assert_uint_eq(vl, 2);
    ck_assert_int_eq(memcmp(v, "h2", 2), 0);
    ck_assert(tether__pp_tlv_find(R.tlv, R.tlv_len, 0x02, &v, &vl));
    ck_assert_uint_eq(vl, 12);
    ck_assert(!tether__pp_tlv_find(R.tlv, R.tlv_len, 0x05, &v, &vl));

    /* A TLV that runs past the header. */
    h[28 + 1] = 1; /* ALPN claims 258 bytes */
    ck_assert_int_eq(parse(h, n, TETHER__PP_V2), TETHER_EPROTO);
    ck_assert_msg(strstr(why, "TLV 0x01 at offset 28 runs past the header") != NULL, "%s", why);
    h[28 + 1] = 0;
    /* An SSL sub-TLV that runs past its parent. */
    h[28 + 5 + 15 + 3 + 5 + 2] = 5;
    ck_assert_int_eq(parse(h, n, TETHER__PP_V2), TETHER_EPROTO);
    ck_assert_msg(strstr(why, "SSL sub-TLV 0x21") != NULL, "%s", why);
    h[28 + 5 + 15 + 3 + 5 + 2] = 4;
    /* A TLV cut short (2 bytes left). */
    h[15] = (uint8_t)(h[15] + 2);
    h[n] = 0x04;
    h[n + 1] = 0x00;
    ck_assert_int_eq(parse(h, n + 2, TETHER__PP_V2), TETHER_EPROTO);
    ck_assert_msg(strstr(why, "cut short") != NULL, "%s", why);
}
END_TEST

START_TEST(v2_crc32c)
{
    /* The RFC 3720 / iSCSI check value. */
    ck_assert_uint_eq(tether__pp_crc32c((const uint8_t *)"123456789", 9), 0xE3069283u);
    uint8_t h[64];
    memcpy(h, tw_v4, 28);
    memcpy(h + 28, "\x03\x00\x04\x00\x00\x00\x00", 7);
    h[15] = 12 + 7;
    uint32_t crc = tether__pp_crc32c(h, 35);
    h[31] = (uint8_t)(crc >> 24);
    h[32] = (uint8_t)(crc >> 16);
    h[33] = (uint8_t)(crc >> 8);
    h[34] = (uint8_t)crc;
    ck_assert_int_eq(parse(h, 35, TETHER__PP_V2), 35);
    h[20] ^= 1; /* a changed address */
    ck_assert_int_eq(parse(h, 35, TETHER__PP_V2), TETHER_EPROTO);
    ck_assert_msg(strstr(why, "CRC32C") != NULL, "%s", why);
}
END_TEST

START_TEST(v2_malformed)
{
    uint8_t h[300];
    memcpy(h, tw_v4, 28);
#define V2CASE(mutate, len, code, needle)                                                          \
    do {                                                                                           \
        memcpy(h, tw_v4, 28);                                                                      \
        mutate;                                                                                    \
        int rv_ = parse(h, (len), PP_ALL);                                                         \
        ck_assert_msg(rv_ == (code), "%s: %d %s", #mutate, rv_, why);                              \
        ck_assert_msg(strstr(why, (needle)) != NULL, "%s: '%s' lacks '%s'", #mutate, why,          \
                      (needle));                                                                   \
    } while (0)
    V2CASE(h[3] = 0x0B, 28, TETHER_EPROTO, "bad signature");
    V2CASE(h[11] = 0x0B, 28, TETHER_EPROTO, "bad signature");
    V2CASE(h[12] = 0x11, 28, TETHER_EPROTO, "version 1");
    V2CASE(h[12] = 0x22, 28, TETHER_EPROTO, "unknown command 0x2");
    V2CASE(h[13] = 0x41, 28, TETHER_EPROTO, "unknown address family 0x4");
    V2CASE(h[13] = 0x13, 28, TETHER_EPROTO, "unknown transport protocol 0x3");
    V2CASE(h[15] = 11, 27, TETHER_EPROTO, "length 11 does not cover the IPv4 address block");
    V2CASE((h[13] = 0x21, h[15] = 12), 28, TETHER_EPROTO, "does not cover the IPv6");
    V2CASE((h[13] = 0x31, h[15] = 12), 28, TETHER_EPROTO, "does not cover the Unix");
    V2CASE((h[14] = 0x10, h[15] = 0x01), 16, TETHER_EMSGSIZE, "limit is 4096");
#undef V2CASE
    /* A listener that accepts one version refuses the other by name. */
    ck_assert_int_eq(parse(tw_v4, 28, TETHER__PP_V1), TETHER_EPROTO);
    ck_assert_ptr_nonnull(strstr(why, "accepts v1 only"));
    ck_assert_int_eq(parse("PROXY UNKNOWN\r\n", 15, TETHER__PP_V2), TETHER_EPROTO);
    ck_assert_ptr_nonnull(strstr(why, "accepts v2 only"));
    /* No header at all: a TLS ClientHello, or a len32 frame. */
    ck_assert_int_eq(parse("\x16\x03\x01\x02\x00\x01", 6, PP_ALL), TETHER_EPROTO);
    ck_assert_msg(strstr(why, "starts with 16 03 01 02 00 01 (a TLS ClientHello)") != NULL, "%s",
                  why);
    ck_assert_int_eq(parse("\x00\x00\x00\x05hello", 9, PP_ALL), TETHER_EPROTO);
    ck_assert_ptr_nonnull(strstr(why, "no PROXY protocol header"));
}
END_TEST

START_TEST(encode_round_trip)
{
    struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = htons(40000)};
    struct sockaddr_in d4 = {.sin_family = AF_INET, .sin_port = htons(5555)};
    inet_pton(AF_INET, "127.0.0.7", &s4.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &d4.sin_addr);
    uint8_t buf[256];
    int n = tether__pp_encode(buf, sizeof buf, 1, (struct sockaddr *)&s4, (struct sockaddr *)&d4);
    ck_assert_int_eq(n, 43);
    ck_assert_int_eq(memcmp(buf, "PROXY TCP4 127.0.0.7 127.0.0.1 40000 5555\r\n", 43), 0);
    n = tether__pp_encode(buf, sizeof buf, 2, (struct sockaddr *)&s4, (struct sockaddr *)&d4);
    ck_assert_int_eq(n, 28);
    ck_assert_int_eq(parse(buf, (size_t)n, PP_ALL), 28);
    ck_assert_str_eq(fmt(&R.src, R.src_len), "127.0.0.7:40000");

    /* IPv6, and an IPv4-mapped source with an IPv6 destination. */
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons(1)};
    struct sockaddr_in6 d6 = {.sin6_family = AF_INET6, .sin6_port = htons(2)};
    inet_pton(AF_INET6, "2001:db8::1", &s6.sin6_addr);
    inet_pton(AF_INET6, "::1", &d6.sin6_addr);
    n = tether__pp_encode(buf, sizeof buf, 1, (struct sockaddr *)&s6, (struct sockaddr *)&d6);
    ck_assert_int_eq(parse(buf, (size_t)n, PP_ALL), n);
    ck_assert_str_eq(fmt(&R.src, R.src_len), "[2001:db8::1]:1");
    n = tether__pp_encode(buf, sizeof buf, 2, (struct sockaddr *)&s4, (struct sockaddr *)&d6);
    ck_assert_int_eq(n, 52);
    ck_assert_int_eq(parse(buf, (size_t)n, PP_ALL), 52);
    ck_assert_str_eq(fmt(&R.src, R.src_len), "[::ffff:127.0.0.7]:40000");

    /* Unknown endpoints. */
    n = tether__pp_encode(buf, sizeof buf, 1, NULL, NULL);
    ck_assert_int_eq(n, 15);
    ck_assert_int_eq(memcmp(buf, "PROXY UNKNOWN\r\n", 15), 0);
    n = tether__pp_encode(buf, sizeof buf, 2, NULL, NULL);
    ck_assert_int_eq(n, 16);
    ck_assert_int_eq(memcmp(buf, SIG "\x21\x00\x00\x00", 16), 0);
    /* Errors. */
    ck_assert_int_eq(tether__pp_encode(buf, 10, 1, (struct sockaddr *)&s4, (struct sockaddr *)&d4),
                     TETHER_ENOMEM);
    ck_assert_int_eq(tether__pp_encode(buf, sizeof buf, 3, NULL, NULL), TETHER_EINVAL);
}
END_TEST

/* ---- over sockets ---------------------------------------------------------- */

struct srv {
    int accepted;
    int errors;
    int last_err;
    char err[TETHER_ERROR_MSG_MAX];
    char peer[160];
    char proxy[160];
    tether_proxy_info info;
    int info_rv;
    char alpn[16];
    int msgs;
    char msg[64];
};
static struct srv S;

static void srv_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    S.accepted++;
    ck_assert_int_eq(tether_conn_peer(c, S.peer, sizeof S.peer), TETHER_OK);
    ck_assert_int_eq(tether_conn_proxy_peer(c, S.proxy, sizeof S.proxy), TETHER_OK);
    S.info_rv = tether_conn_proxy_info(c, &S.info);
    const uint8_t *v;
    size_t vl;
    S.alpn[0] = '\0';
    if (tether_conn_proxy_tlv(c, TETHER_PROXY_TLV_ALPN, &v, &vl) == TETHER_OK &&
        vl < sizeof S.alpn) {
        memcpy(S.alpn, v, vl);
        S.alpn[vl] = '\0';
    }
}

static void srv_message(tether_conn *c, const uint8_t *d, size_t n, void *ud)
{
    (void)ud;
    S.msgs++;
    snprintf(S.msg, sizeof S.msg, "%.*s", (int)n, (const char *)d);
    tether_conn_send(c, d, n);
}

static void srv_error(tether_listener *l, int err, const char *detail, void *ud)
{
    (void)l;
    (void)ud;
    S.errors++;
    S.last_err = err;
    snprintf(S.err, sizeof S.err, "%s", detail);
}

static tether_listener *pp_listen(const char *url, unsigned versions, int timeout_ms,
                                  tether_tls_config *tls)
{
    memset(&S, 0, sizeof S);
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = srv_message;
    co.tls = tls;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = srv_accept;
    lo.on_error = srv_error;
    lo.conn_opts = &co;
    lo.proxy_protocol = versions;
    lo.proxy_timeout_ms = timeout_ms;
    tether_listener *l = NULL;
    tether_error err;
    ck_assert_msg(tether_listen(&l, th_loop, url, &lo, &err) == TETHER_OK, "%s", err.message);
    return l;
}

static int raw_connect(int port, const char *src_ip)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    if (src_ip != NULL) {
        struct sockaddr_in b = {.sin_family = AF_INET};
        inet_pton(AF_INET, src_ip, &b.sin_addr);
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&b, sizeof b), 0);
    }
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    return fd;
}

static void raw_write(int fd, const void *p, size_t n)
{
    ck_assert_int_eq((int)write(fd, p, n), (int)n);
}

static bool pred_accepted(void *arg)
{
    return S.accepted >= *(int *)arg;
}

static bool pred_errors(void *arg)
{
    return S.errors >= *(int *)arg;
}

static bool pred_msgs(void *arg)
{
    return S.msgs >= *(int *)arg;
}

/* Reads one len32 frame from a blocking raw socket (hang-guarded). */
static void raw_read_frame(int fd, char *out, size_t cap)
{
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    uint8_t hdr[4];
    size_t got = 0;
    while (got < 4) {
        ssize_t r = recv(fd, hdr + got, 4 - got, 0);
        ck_assert_int_gt((int)r, 0);
        got += (size_t)r;
    }
    size_t len = ((size_t)hdr[0] << 24) | ((size_t)hdr[1] << 16) | ((size_t)hdr[2] << 8) | hdr[3];
    ck_assert_uint_lt(len, cap);
    got = 0;
    while (got < len) {
        ssize_t r = recv(fd, out + got, len - got, 0);
        ck_assert_int_gt((int)r, 0);
        got += (size_t)r;
    }
    out[len] = '\0';
}

START_TEST(listener_v1_v2_report_client)
{
    tether_listener *l = pp_listen("tcp://127.0.0.1:0", TETHER_PROXY_V1 | TETHER_PROXY_V2, 0, NULL);
    int port = tether_listener_port(l);

    /* v1 and a frame in one write: the frame is not eaten by the header. */
    int fd = raw_connect(port, "127.0.0.5");
    static const char v1[] = "PROXY TCP4 127.0.0.7 127.0.0.1 40000 5555\r\n"
                             "\x00\x00\x00\x02hi";
    raw_write(fd, v1, sizeof v1 - 1);
    int one = 1;
    ck_assert(th_run_until_pred(pred_msgs, &one, 10000));
    ck_assert_str_eq(S.peer, "127.0.0.7:40000");
    ck_assert_msg(strncmp(S.proxy, "127.0.0.5:", 10) == 0, "%s", S.proxy);
    ck_assert_int_eq(S.info_rv, TETHER_OK);
    ck_assert_int_eq(S.info.version, 1);
    ck_assert(!S.info.local);
    ck_assert_str_eq(S.info.source, "127.0.0.7:40000");
    ck_assert_str_eq(S.info.destination, "127.0.0.1:5555");
    ck_assert_str_eq(S.msg, "hi");
    char echo[64];
    raw_read_frame(fd, echo, sizeof echo);
    ck_assert_str_eq(echo, "hi");
    close(fd);

    /* v2 with an ALPN TLV, sent one byte at a time. */
    uint8_t h[64];
    memcpy(h, tw_v4, 28);
    memcpy(h + 28, "\x01\x00\x02h2", 5);
    h[15] = 12 + 5;
    h[19] = 9; /* source 127.0.0.9 */
    fd = raw_connect(port, NULL);
    for (size_t i = 0; i < 33; i++) {
        raw_write(fd, h + i, 1);
        tether_loop_run_once(th_loop, 1);
    }
    raw_write(fd, "\x00\x00\x00\x02yo", 6);
    int two = 2;
    ck_assert(th_run_until_pred(pred_msgs, &two, 10000));
    ck_assert_str_eq(S.peer, "127.0.0.9:8080");
    ck_assert_int_eq(S.info.version, 2);
    ck_assert_str_eq(S.alpn, "h2");
    ck_assert_str_eq(S.msg, "yo");
    close(fd);

    /* A LOCAL health check: accepted with the real peer. */
    fd = raw_connect(port, "127.0.0.6");
    raw_write(fd, SIG "\x20\x00\x00\x00", 16);
    int three = 3;
    ck_assert(th_run_until_pred(pred_accepted, &three, 10000));
    ck_assert_msg(strncmp(S.peer, "127.0.0.6:", 10) == 0, "%s", S.peer);
    ck_assert(S.info.local);
    ck_assert_str_eq(S.info.source, "");
    close(fd);
    ck_assert_int_eq(S.errors, 0);
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

START_TEST(listener_refuses_missing_and_malformed)
{
    tether_listener *l = pp_listen("tcp://127.0.0.1:0", TETHER_PROXY_V2, 0, NULL);
    int port = tether_listener_port(l);
    /* A plain tether client, no header. */
    tether_conn *c;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, th_url_of(l), NULL, NULL), TETHER_OK);
    ck_assert_int_eq(tether_conn_send(c, "x", 1), TETHER_OK);
    int one = 1;
    ck_assert(th_run_until_pred(pred_errors, &one, 10000));
    ck_assert_int_eq(S.last_err, TETHER_EPROTO);
    ck_assert_msg(strstr(S.err, "PROXY protocol header from 127.0.0.1:") != NULL &&
                      strstr(S.err, "no PROXY protocol header (the listener requires v2); "
                                    "the connection starts with 00 00 00 01 78") != NULL,
                  "%s", S.err);
    ck_assert_int_eq(S.accepted, 0);
    /* A v1 line on a v2-only listener. */
    int fd = raw_connect(port, NULL);
    raw_write(fd, "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 32);
    int two = 2;
    ck_assert(th_run_until_pred(pred_errors, &two, 10000));
    ck_assert_msg(strstr(S.err, "accepts v2 only") != NULL, "%s", S.err);
    /* The connection was closed: the read sees EOF or a reset. */
    char b[8];
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ck_assert_int_le((int)recv(fd, b, sizeof b, 0), 0);
    close(fd);
    /* A partial header, then close. */
    fd = raw_connect(port, NULL);
    raw_write(fd, tw_v4, 20);
    close(fd);
    int three = 3;
    ck_assert(th_run_until_pred(pred_errors, &three, 10000));
    ck_assert_int_eq(S.last_err, TETHER_ETRUNCATED);
    ck_assert_msg(strstr(S.err, "closed before the header was complete (20 bytes") != NULL, "%s",
                  S.err);
    ck_assert_int_eq(S.accepted, 0);
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

START_TEST(listener_header_deadline)
{
    tether_listener *l = pp_listen("tcp://127.0.0.1:0", TETHER_PROXY_V1, 300, NULL);
    int fd = raw_connect(tether_listener_port(l), NULL);
    raw_write(fd, "PROXY TCP4 ", 11);
    int one = 1;
    ck_assert(th_run_until_pred(pred_errors, &one, 10000));
    ck_assert_int_eq(S.last_err, TETHER_ETIMEDOUT);
    ck_assert_msg(strstr(S.err, "not complete within 300 ms (11 bytes received)") != NULL, "%s",
                  S.err);
    close(fd);
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

static bool cli_done;
static char cli_echo[64];

static void cli_message(tether_conn *c, const uint8_t *d, size_t n, void *ud)
{
    (void)ud;
    snprintf(cli_echo, sizeof cli_echo, "%.*s", (int)n, (const char *)d);
    cli_done = true;
    tether_conn_close(c);
}

static void dial_with_header(const char *url, int version, const char *source,
                             tether_tls_config *tls)
{
    cli_done = false;
    cli_echo[0] = '\0';
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.on_message = cli_message;
    o.proxy_protocol = version;
    o.proxy_source = source;
    o.tls = tls;
    tether_conn *c;
    tether_error err;
    ck_assert_msg(tether_conn_dial(&c, th_loop, url, &o, &err) == TETHER_OK, "%s", err.message);
    ck_assert_int_eq(tether_conn_send(c, "ping", 4), TETHER_OK);
    ck_assert(th_run_until(&cli_done, 10000));
    ck_assert_str_eq(cli_echo, "ping");
}

START_TEST(dialled_sends_v1_and_v2)
{
    tether_listener *l = pp_listen("tcp://127.0.0.1:0", TETHER_PROXY_V1 | TETHER_PROXY_V2, 0, NULL);
    dial_with_header(th_url_of(l), TETHER_PROXY_V1, "127.0.0.9:1234", NULL);
    ck_assert_str_eq(S.peer, "127.0.0.9:1234");
    ck_assert_int_eq(S.info.version, 1);
    dial_with_header(th_url_of(l), TETHER_PROXY_V2, "[2001:db8::7]:99", NULL);
    ck_assert_str_eq(S.peer, "[2001:db8::7]:99");
    dial_with_header(th_url_of(l), TETHER_PROXY_V2, NULL, NULL);
    ck_assert_int_eq(S.info.version, 2);
    ck_assert_str_eq(S.peer, S.proxy); /* the local address is the real peer */
    ck_assert_int_eq(S.errors, 0);
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

START_TEST(unix_listener)
{
    /* A proxy on the same host may reach its servers over Unix sockets. */
    char url[80];
    snprintf(url, sizeof url, "unix://@tether-pp-test-%d", (int)getpid());
    tether_listener *l = pp_listen(url, TETHER_PROXY_V1 | TETHER_PROXY_V2, 0, NULL);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int n = snprintf(sun.sun_path + 1, sizeof sun.sun_path - 1, "tether-pp-test-%d", (int)getpid());
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sun,
                             (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n)),
                     0);
    static const char v1[] = "PROXY TCP6 2001:db8::5 ::1 1111 2222\r\n\x00\x00\x00\x01u";
    raw_write(fd, v1, sizeof v1 - 1);
    int one = 1;
    ck_assert(th_run_until_pred(pred_msgs, &one, 10000));
    ck_assert_str_eq(S.peer, "[2001:db8::5]:1111");
    ck_assert_str_eq(S.proxy, "unix:(unnamed)");
    close(fd);
    /* A tether client over a Unix socket has no address to announce: v1
     * sends UNKNOWN, v2 an unspecified family; both leave the real peer. */
    dial_with_header(url, TETHER_PROXY_V1, NULL, NULL);
    ck_assert(S.info.local);
    ck_assert_int_eq(S.info.version, 1);
    ck_assert_str_eq(S.peer, "unix:(unnamed)");
    dial_with_header(url, TETHER_PROXY_V2, NULL, NULL);
    ck_assert(S.info.local);
    ck_assert_int_eq(S.info.version, 2);
    ck_assert_int_eq(S.errors, 0);
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

START_TEST(bad_options)
{
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.proxy_protocol = 3;
    tether_conn *c;
    tether_error err;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, "tcp://127.0.0.1:9", &o, &err), TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "proxy_protocol must be"));
    o.proxy_protocol = TETHER_PROXY_V1;
    o.proxy_source = "1.2.3.4:99999";
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, "tcp://127.0.0.1:9", &o, &err), TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "proxy_source '1.2.3.4:99999'"));
    o.proxy_protocol = 0;
    o.proxy_source = "1.2.3.4";
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, "tcp://127.0.0.1:9", &o, &err), TETHER_EINVAL);
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.proxy_protocol = 4;
    tether_listener *l;
    ck_assert_int_eq(tether_listen(&l, th_loop, "tcp://127.0.0.1:0", &lo, &err), TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "proxy_protocol must be"));
}
END_TEST

START_TEST(tls_listener_after_header)
{
    tether_tls_opts so;
    tether_tls_opts_init(&so);
    so.cert_file = CERT("server.pem");
    so.key_file = CERT("server.key");
    tether_tls_config *scfg = NULL;
    tether_error err;
    ck_assert_msg(tether_tls_config_new(&scfg, &so, &err) == TETHER_OK, "%s", err.message);
    tether_listener *l = pp_listen("tls://127.0.0.1:0", TETHER_PROXY_V2, 0, scfg);
    tether_tls_config_unref(scfg);
    tether_tls_opts to;
    tether_tls_opts_init(&to);
    to.ca_file = CERT("ca.pem");
    tether_tls_config *ccfg = NULL;
    ck_assert_msg(tether_tls_config_new(&ccfg, &to, &err) == TETHER_OK, "%s", err.message);
    char url[64];
    snprintf(url, sizeof url, "tls://localhost:%d", tether_listener_port(l));
    dial_with_header(url, TETHER_PROXY_V2, "127.0.0.8:4242", ccfg);
    ck_assert_str_eq(S.peer, "127.0.0.8:4242");
    /* Without the header, the ClientHello is named in the error. */
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.tls = ccfg;
    tether_conn *c;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, url, &o, NULL), TETHER_OK);
    int one = 1;
    ck_assert(th_run_until_pred(pred_errors, &one, 10000));
    ck_assert_msg(strstr(S.err, "(a TLS ClientHello)") != NULL, "%s", S.err);
    tether_tls_config_unref(ccfg);
    tether_listener_close(l);
    th_run_idle(10000);
}
END_TEST

Suite *proxy_proto_suite(void);
Suite *proxy_proto_suite(void)
{
    Suite *s = suite_create("proxy_proto");
    TCase *tc = tcase_create("parser");
    tcase_add_test(tc, v1_spec_examples);
    tcase_add_test(tc, v1_incremental);
    tcase_add_test(tc, v1_malformed);
    tcase_add_test(tc, v2_twisted_vectors);
    tcase_add_test(tc, v2_incremental_and_tlvs);
    tcase_add_test(tc, v2_crc32c);
    tcase_add_test(tc, v2_malformed);
    tcase_add_test(tc, encode_round_trip);
    suite_add_tcase(s, tc);
    tc = tcase_create("sockets");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, listener_v1_v2_report_client);
    tcase_add_test(tc, listener_refuses_missing_and_malformed);
    tcase_add_test(tc, listener_header_deadline);
    tcase_add_test(tc, dialled_sends_v1_and_v2);
    tcase_add_test(tc, unix_listener);
    tcase_add_test(tc, bad_options);
    tcase_add_test(tc, tls_listener_after_header);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(proxy_proto_suite());
}
