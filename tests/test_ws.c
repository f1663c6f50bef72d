/* SPDX-License-Identifier: MIT */
/* WebSocket (lib/ws_frame.c, lib/ws_handshake.c, lib/transport_ws.c,
 * lib/ws_write.c, lib/conn_ws.c, lib/conn_ws_read.c): the codec without sockets, then tether
 * against tether over ws:// and wss:// on loopback, and the server's answers to requests and frames
 * written by hand on a raw socket. The interoperability tests against Node's ws package are in
 * tests/interop/node/. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"

#include "url.h"
#include "ws.h"
#include <tether/openssl.h>

#ifndef TETHER_CERTS_DIR
#error "TETHER_CERTS_DIR must name the certs/ directory"
#endif

/* ---- the codec ----------------------------------------------------------- */

START_TEST(hdr_roundtrip)
{
    static const uint64_t lens[] = {0, 1, 125, 126, 65535, 65536, (uint64_t)1 << 40};
    uint8_t mask[4] = {1, 2, 3, 4};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        for (int m = 0; m < 2; m++) {
            uint8_t b[TETHER__WS_HDR_MAX];
            size_t n = tether__ws_hdr_encode(b, i % 2 == 0, TETHER__WS_OP_BINARY, lens[i],
                                             m ? mask : NULL);
            struct tether__ws_hdr h;
            /* Every prefix is incomplete, the whole header is not. */
            for (size_t k = 0; k < n; k++) {
                ck_assert_int_eq(tether__ws_hdr_decode(b, k, &h), TETHER_EAGAIN);
            }
            ck_assert_int_eq(tether__ws_hdr_decode(b, n, &h), TETHER_OK);
            ck_assert_uint_eq(h.len, lens[i]);
            ck_assert_uint_eq(h.hdr_len, n);
            ck_assert_int_eq(h.fin, i % 2 == 0);
            ck_assert_int_eq(h.masked, m);
            ck_assert_uint_eq(h.opcode, TETHER__WS_OP_BINARY);
            if (m) {
                ck_assert_mem_eq(h.mask, mask, 4);
            }
        }
    }
    /* RFC 6455 5.7: a single-frame masked text message "Hello". */
    static const uint8_t hello[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                    0x7f, 0x9f, 0x4d, 0x51, 0x58};
    struct tether__ws_hdr h;
    ck_assert_int_eq(tether__ws_hdr_decode(hello, sizeof hello, &h), TETHER_OK);
    ck_assert_uint_eq(h.len, 5);
    uint8_t p[5];
    memcpy(p, hello + h.hdr_len, 5);
    tether__ws_mask(p, 5, h.mask, 0);
    ck_assert_mem_eq(p, "Hello", 5);
    /* A 64-bit length with the top bit set. */
    static const uint8_t bad[] = {0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1};
    ck_assert_int_eq(tether__ws_hdr_decode(bad, sizeof bad, &h), TETHER_EPROTO);
}
END_TEST

START_TEST(mask_offsets)
{
    /* Masking in pieces at any offset equals masking in one go. */
    uint8_t a[100];
    uint8_t b[100];
    th_fill(a, sizeof a, 7);
    memcpy(b, a, sizeof b);
    const uint8_t key[4] = {0xde, 0xad, 0xbe, 0xef};
    tether__ws_mask(a, sizeof a, key, 0);
    tether__ws_mask(b, 3, key, 0);
    tether__ws_mask(b + 3, 50, key, 3);
    tether__ws_mask(b + 53, 47, key, 53);
    ck_assert_mem_eq(a, b, sizeof a);
    for (size_t i = 0; i < sizeof a; i++) {
        b[i] ^= key[i % 4];
    }
    th_fill(a, sizeof a, 7);
    ck_assert_mem_eq(a, b, sizeof a);
    /* The copying variant gives the same bytes, at every offset. */
    for (uint64_t pos = 0; pos < 5; pos++) {
        uint8_t c[100];
        memcpy(b, a, sizeof b);
        tether__ws_mask(b, 37, key, pos);
        tether__ws_mask_copy(c, a, 37, key, pos);
        ck_assert_mem_eq(b, c, 37);
    }
}
END_TEST

START_TEST(mask_large)
{
    /* Every size and offset through the wide, vector and byte paths
     * against the definition (RFC 6455 5.3: byte i ^ key[(pos + i) % 4]). */
    enum {
        N = 5000
    };
    static uint8_t src[N], ref[N], inplace[N], copy[N];
    th_fill(src, N, 11);
    const uint8_t key[4] = {0x01, 0x80, 0x7f, 0xfe};
    static const size_t sizes[] = {0,    1,    7,    63,   64,   65,   127,  1023,
                                   1024, 1025, 1151, 1279, 1280, 1535, 4097, N};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        size_t n = sizes[si];
        for (uint64_t pos = 0; pos < 6; pos++) {
            for (size_t off = 0; off < 3; off++) {
                size_t len = n > off ? n - off : 0;
                for (size_t i = 0; i < len; i++) {
                    ref[i] = src[off + i] ^ key[(pos + i) % 4];
                }
                memcpy(inplace, src + off, len);
                tether__ws_mask(inplace, len, key, pos);
                tether__ws_mask_copy(copy, src + off, len, key, pos);
                ck_assert_mem_eq(inplace, ref, len);
                ck_assert_mem_eq(copy, ref, len);
            }
        }
    }
}
END_TEST

static uint32_t utf8(const char *s)
{
    return tether__utf8_feed(0, (const uint8_t *)s, strlen(s));
}

START_TEST(mask_small_matches)
{
    /* The inline masker of small frames agrees with the general one, in
     * place and while copying, for every length up to a few rounds. */
    uint8_t src[300], ref[300], cp[300], in[300];
    const uint8_t key[4] = {0xA1, 0x5C, 0x07, 0xF3};
    th_fill(src, sizeof src, 7);
    for (size_t n = 0; n <= sizeof src; n++) {
        memcpy(ref, src, n);
        tether__ws_mask(ref, n, key, 0);
        memset(cp, 0xEE, sizeof cp);
        tether__ws_mask_small(cp, src, n, key);
        ck_assert_msg(memcmp(cp, ref, n) == 0, "copy, length %zu", n);
        if (n < sizeof cp) {
            ck_assert_uint_eq(cp[n], 0xEE); /* nothing written past the end */
        }
        memcpy(in, src, n);
        tether__ws_mask_small(in, in, n, key);
        ck_assert_msg(memcmp(in, ref, n) == 0, "in place, length %zu", n);
    }
}
END_TEST

START_TEST(utf8_validation)
{
    ck_assert_uint_eq(utf8("hello"), 0);
    ck_assert_uint_eq(utf8("κόσμε"), 0);
    ck_assert_uint_eq(utf8("\xf4\x8f\xbf\xbf"), 0);        /* U+10FFFF */
    ck_assert_uint_eq(utf8("\xc0\xaf"), TETHER__UTF8_BAD); /* overlong '/' */
    ck_assert_uint_eq(utf8("\xe0\x80\xaf"), TETHER__UTF8_BAD);
    ck_assert_uint_eq(utf8("\xed\xa0\x80"), TETHER__UTF8_BAD);     /* surrogate */
    ck_assert_uint_eq(utf8("\xf4\x90\x80\x80"), TETHER__UTF8_BAD); /* > U+10FFFF */
    ck_assert_uint_eq(utf8("\xff"), TETHER__UTF8_BAD);
    ck_assert_uint_eq(utf8("a\x80"), TETHER__UTF8_BAD);
    /* Incomplete at the end: neither valid (0) nor invalid. */
    uint32_t st = utf8("\xe2\x82");
    ck_assert(st != 0 && st != TETHER__UTF8_BAD);
    /* Split anywhere, the result is the same. */
    const char *s = "x\xf0\x9f\x98\x80y\xe2\x82\xac";
    for (size_t k = 0; k <= strlen(s); k++) {
        uint32_t a = tether__utf8_feed(0, (const uint8_t *)s, k);
        ck_assert(a != TETHER__UTF8_BAD);
        ck_assert_uint_eq(tether__utf8_feed(a, (const uint8_t *)s + k, strlen(s) - k), 0);
    }
}
END_TEST

START_TEST(accept_key_and_codes)
{
    char out[29];
    /* RFC 6455 section 1.3. */
    const char *key = "dGhlIHNhbXBsZSBub25jZQ==";
    ck_assert_int_eq(tether__ws_accept_key(key, strlen(key), out), TETHER_OK);
    ck_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    ck_assert(tether__ws_code_ok(1000));
    ck_assert(tether__ws_code_ok(1011));
    ck_assert(tether__ws_code_ok(4999));
    ck_assert(!tether__ws_code_ok(999));
    ck_assert(!tether__ws_code_ok(1004));
    ck_assert(!tether__ws_code_ok(1005));
    ck_assert(!tether__ws_code_ok(1006));
    ck_assert(!tether__ws_code_ok(1015));
    ck_assert(!tether__ws_code_ok(2999));
    ck_assert(!tether__ws_code_ok(5000));
}
END_TEST

START_TEST(urls)
{
    struct tether__url u;
    tether_error err;
    ck_assert_int_eq(tether__url_parse("ws://127.0.0.1:8080/chat?room=1", false, &u, &err),
                     TETHER_OK);
    ck_assert(u.ws);
    ck_assert_int_eq(u.scheme, TETHER__SCHEME_TCP);
    ck_assert_str_eq(u.host, "127.0.0.1");
    ck_assert_int_eq(u.port, 8080);
    ck_assert_str_eq(u.ws_path, "/chat?room=1");
    ck_assert(!u.ws_any_path);
    ck_assert_int_eq(tether__url_parse("wss://[::1]:443", false, &u, &err), TETHER_OK);
    ck_assert_int_eq(u.scheme, TETHER__SCHEME_TLS);
    ck_assert_str_eq(u.host, "::1");
    ck_assert_str_eq(u.ws_path, "/");
    ck_assert(u.ws_any_path);
    ck_assert_int_eq(tether__url_parse("ws://*:0/x", true, &u, &err), TETHER_OK);
    ck_assert(u.wildcard);
    ck_assert_int_eq(tether__url_parse("ws://127.0.0.1/x", false, &u, &err), TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "missing port"));
    ck_assert_int_eq(tether__url_parse("ws://h:1/a b", false, &u, &err), TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "path"));
    ck_assert_int_eq(tether__url_parse("ws://h:1/a#frag", false, &u, &err), TETHER_EINVAL);
}
END_TEST

START_TEST(bad_options)
{
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.framing = TETHER_FRAMING_VARINT;
    tether_conn *c = NULL;
    tether_error err;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, "ws://127.0.0.1:1/", &o, &err), TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "TETHER_FRAMING_LEN32"));
    tether_conn_opts_init(&o);
    tether_ws_opts w;
    tether_ws_opts_init(&w);
    const char *bad[] = {"a b", NULL};
    w.protocols = bad;
    o.ws = &w;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, "ws://127.0.0.1:1/", &o, &err), TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "subprotocol"));
    tether_ws_opts_init(&w);
    w.headers = "X-Broken";
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, "ws://127.0.0.1:1/", &o, &err), TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "headers"));
    ck_assert_int_eq(tether_ws_set_text(NULL, true), TETHER_EINVAL);
    ck_assert(!tether_ws_msg_is_text(NULL));
    ck_assert_ptr_null(tether_ws_path(NULL));
}
END_TEST

/* ---- tether against tether -------------------------------------------- */

struct side {
    tether_conn *c;
    int msgs;
    int texts;
    size_t bytes;
    bool closed;
    int reason;
    int code;
    char detail[256];
    char path[64];
    char origin[64];
    char proto[32];
    bool echo;
    uint32_t seed_ok;
    bool connected;
};

static struct side srv;
static struct side cli;
static tether_tls_config *srv_tls;
static tether_tls_config *cli_tls;

static void on_msg(tether_conn *c, const uint8_t *p, size_t n, void *ud)
{
    struct side *s = ud;
    s->msgs++;
    s->bytes += n;
    bool text = tether_ws_msg_is_text(c);
    if (text) {
        s->texts++;
    }
    if (s->echo) {
        ck_assert_int_eq(tether_ws_set_text(c, text), TETHER_OK);
        ck_assert_int_eq(tether_conn_send(c, p, n), TETHER_OK);
    } else if (n >= 64 && !text) {
        ck_assert(th_check(p, n, (uint32_t)n));
        s->seed_ok++;
    }
}

static void on_close(tether_conn *c, int reason, void *ud)
{
    struct side *s = ud;
    s->closed = true;
    s->reason = reason;
    s->code = tether_ws_close_code(c);
    snprintf(s->detail, sizeof s->detail, "%s", tether_conn_last_error(c));
}

static void on_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    srv.c = c;
    tether_conn_set_userdata(c, &srv);
    const char *p = tether_ws_path(c);
    const char *o = tether_ws_origin(c);
    const char *pr = tether_ws_protocol(c);
    snprintf(srv.path, sizeof srv.path, "%s", p != NULL ? p : "(null)");
    snprintf(srv.origin, sizeof srv.origin, "%s", o != NULL ? o : "(null)");
    snprintf(srv.proto, sizeof srv.proto, "%s", pr != NULL ? pr : "(null)");
}

static void on_connect(tether_conn *c, int st, void *ud)
{
    (void)c;
    struct side *s = ud;
    ck_assert_msg(st == TETHER_OK, "connect: %s", tether_conn_last_error(c));
    s->connected = true;
}

static const char *const srv_protos[] = {"chat.v2", "chat.v1", NULL};
static const char *const cli_protos[] = {"chat.v1", "chat.v2", NULL};
static const char *const origins[] = {"https://ok.example", NULL};

static tether_listener *ws_listen(const char *scheme, const char *path, tether_ws_opts *extra)
{
    tether_ws_opts w;
    tether_ws_opts_init(&w);
    w.protocols = srv_protos;
    if (extra != NULL) {
        w = *extra;
    }
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = on_msg;
    co.on_close = on_close;
    co.userdata = &srv;
    co.ws = &w;
    co.tls = srv_tls;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = on_accept;
    lo.conn_opts = &co;
    char url[128];
    snprintf(url, sizeof url, "%s://127.0.0.1:0%s", scheme, path);
    tether_listener *l = NULL;
    tether_error err;
    int rv = tether_listen(&l, th_loop, url, &lo, &err);
    ck_assert_msg(rv == TETHER_OK, "listen %s: %s", url, err.message);
    return l;
}

static void ws_dial(const char *scheme, int port, const char *path)
{
    tether_ws_opts w;
    tether_ws_opts_init(&w);
    w.protocols = cli_protos;
    w.origin = "https://ok.example";
    w.headers = "X-Test: 1\r\n";
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = on_msg;
    co.on_close = on_close;
    co.on_connect = on_connect;
    co.userdata = &cli;
    co.ws = &w;
    co.tls = cli_tls;
    char url[128];
    snprintf(url, sizeof url, "%s://%s:%d%s", scheme,
             strcmp(scheme, "wss") == 0 ? "localhost" : "127.0.0.1", port, path);
    th_dial(&cli.c, url, &co);
}

static bool both_closed(void *arg)
{
    (void)arg;
    return srv.closed && cli.closed;
}

static void reset_sides(void)
{
    memset(&srv, 0, sizeof srv);
    memset(&cli, 0, sizeof cli);
}

static void tls_setup(void)
{
    th_setup();
    tether_tls_opts o;
    tether_tls_opts_init(&o);
    o.cert_file = TETHER_CERTS_DIR "/server.pem";
    o.key_file = TETHER_CERTS_DIR "/server.key";
    o.ca_file = TETHER_CERTS_DIR "/ca.pem";
    tether_error err;
    ck_assert_int_eq(tether_tls_config_new(&srv_tls, &o, &err), TETHER_OK);
    tether_tls_opts_init(&o);
    o.ca_file = TETHER_CERTS_DIR "/ca.pem";
    ck_assert_int_eq(tether_tls_config_new(&cli_tls, &o, &err), TETHER_OK);
}

static void tls_teardown(void)
{
    tether_tls_config_unref(srv_tls);
    tether_tls_config_unref(cli_tls);
    srv_tls = cli_tls = NULL;
    th_teardown();
}

static bool cli_got(void *arg)
{
    return cli.msgs >= *(int *)arg;
}

static void echo_round(const char *scheme)
{
    reset_sides();
    srv.echo = true;
    tether_listener *l = ws_listen(scheme, "/echo", NULL);
    ws_dial(scheme, tether_listener_port(l), "/echo?x=1");
    ck_assert(th_run_until(&cli.connected, 10000));
    ck_assert_str_eq(srv.path, "/echo?x=1");
    ck_assert_str_eq(srv.origin, "https://ok.example");
    ck_assert_str_eq(srv.proto, "chat.v1"); /* the client's preference wins */
    ck_assert_str_eq(tether_ws_protocol(cli.c), "chat.v1");
    ck_assert_str_eq(tether_ws_path(cli.c), "/echo?x=1");
    tether_tls_info ti;
    if (strcmp(scheme, "wss") == 0) {
        /* The TLS accessors see the TLS layer under WebSocket. */
        ck_assert_int_eq(tether_conn_tls_info(cli.c, &ti), TETHER_OK);
        ck_assert_ptr_nonnull(ti.version);
        ck_assert_int_eq(tether_conn_tls_info(srv.c, &ti), TETHER_OK);
        ck_assert_ptr_nonnull(tether_conn_tls_ssl(cli.c));
    } else {
        ck_assert_int_eq(tether_conn_tls_info(cli.c, &ti), TETHER_ENOTSUP);
    }
    /* Sizes across every header form, binary and text interleaved. */
    static const size_t sizes[] = {0, 1, 125, 126, 127, 65535, 65536, 200000, 3u << 20};
    int n = 0;
    int texts = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        uint8_t *b = malloc(sizes[i] + 1);
        bool text = i % 2 == 1;
        if (text) {
            memset(b, 'a', sizes[i]);
            texts++;
        } else {
            th_fill(b, sizes[i], (uint32_t)sizes[i]);
        }
        ck_assert_int_eq(tether_ws_set_text(cli.c, text), TETHER_OK);
        int rv;
        while ((rv = tether_conn_send(cli.c, b, sizes[i])) == TETHER_EAGAIN) {
            tether_loop_run_once(th_loop, 10);
        }
        ck_assert_int_eq(rv, TETHER_OK);
        free(b);
        n++;
    }
    ck_assert(th_run_until_pred(cli_got, &n, 30000));
    ck_assert_int_eq(cli.msgs, n);
    ck_assert_int_eq(cli.texts, texts);
    ck_assert_int_eq(srv.texts, texts);
    /* Close with a code: the server sees it and its reason. */
    ck_assert_int_eq(tether_ws_close(cli.c, 4000, "bye now"), TETHER_OK);
    ck_assert(th_run_until_pred(both_closed, NULL, 10000));
    ck_assert_int_eq(srv.reason, TETHER_EOF);
    ck_assert_int_eq(srv.code, 4000);
    ck_assert_msg(strstr(srv.detail, "4000") && strstr(srv.detail, "bye now"), "%s", srv.detail);
    ck_assert_int_eq(cli.reason, TETHER_OK);
    /* on_close of the side that closed first runs once its close frame is
     * out, before the peer's answer (tether_conn_close() semantics). */
    ck_assert_int_eq(cli.code, 0);
    tether_listener_close(l);
}

/* The messages a side received, in order. */
struct rec {
    size_t len;
    bool text;
    bool ok; /* the content is as sent */
};
static struct rec recs[16];
static int nrec;

static void rec_msg(tether_conn *c, const uint8_t *p, size_t n, void *ud)
{
    (void)ud;
    if (nrec < 16) {
        bool text = tether_ws_msg_is_text(c);
        bool ok = text ? (n == 0 || (p[0] == 'a' && p[n - 1] == 'a')) : th_check(p, n, (uint32_t)n);
        recs[nrec++] = (struct rec){n, text, ok};
    }
}

static int zc_freed;
static void zc_free(void *data, void *ud)
{
    (void)ud;
    free(data);
    zc_freed++;
}

static bool zc_freed_all(void *arg)
{
    return zc_freed >= *(int *)arg;
}

static uint8_t *filled(size_t n, bool text)
{
    uint8_t *b = malloc(n + 1);
    ck_assert_ptr_nonnull(b);
    if (text) {
        memset(b, 'a', n);
    } else {
        th_fill(b, n, (uint32_t)n);
    }
    return b;
}

static bool got_recs(void *arg)
{
    return nrec >= *(int *)arg || cli.closed || srv.closed;
}

/* wqueue.c (TETHER_TESTING): the n-th reference record allocated from now
 * fails. */
extern unsigned tether__test_ref_alloc_fail;

/* A zero-copy send without memory for its reference record is refused
 * before anything of it is written or queued, and the buffer stays the
 * caller's: the same message sent again must then arrive once. */
static void refused_without_record(tether_conn *c, uint8_t *b, size_t len)
{
    int freed = zc_freed;
    size_t queued = tether_conn_queued(c);
    tether__test_ref_alloc_fail = 1;
    ck_assert_int_eq(tether_conn_send_zc(c, b, len, zc_free, NULL), TETHER_ENOMEM);
    ck_assert_uint_eq(tether__test_ref_alloc_fail, 0);
    ck_assert_int_eq(zc_freed, freed);
    ck_assert_uint_eq(tether_conn_queued(c), queued);
}

START_TEST(messages_around_the_upgrade)
{
    /* What a client sends before its connection is established is queued
     * as len32 and translated once the upgrade is done; what follows is
     * framed as it is sent. Both reach the server in order, with their
     * types, and zero-copy buffers are released either way. The server
     * then answers with large messages, plain and zero-copy, that go out
     * from the caller's memory. */
    reset_sides();
    nrec = 0;
    zc_freed = 0;
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.on_message = rec_msg;
    so.on_close = on_close;
    so.userdata = &srv;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = on_accept;
    lo.conn_opts = &so;
    tether_listener *l = NULL;
    tether_error err;
    ck_assert_int_eq(tether_listen(&l, th_loop, "ws://127.0.0.1:0/", &lo, &err), TETHER_OK);
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = on_msg;
    co.on_close = on_close;
    co.on_connect = on_connect;
    co.userdata = &cli;
    co.heartbeat_ms = 1000; /* a HELLO queued before the upgrade too */
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/", tether_listener_port(l));
    th_dial(&cli.c, url, &co);
    static const struct {
        size_t len;
        bool text;
        bool zc;
    } plan[] = {
        {3, true, false},
        {200, false, false},
        {70000, false, true},
        {0, false, false},
        /* (after the upgrade) */
        {5, true, false},
        {64, false, false},
        {130, false, true},
        {20000, false, false},
        {1, true, false},
        {100000, true, true},
    };
    const int before = 4;
    const int total = (int)(sizeof plan / sizeof plan[0]);
    for (int i = 0; i < total; i++) {
        if (i == before) {
            ck_assert(!cli.connected);
            ck_assert(th_run_until(&cli.connected, 10000));
        }
        ck_assert_int_eq(tether_ws_set_text(cli.c, plan[i].text), TETHER_OK);
        uint8_t *b = filled(plan[i].len, plan[i].text);
        if (plan[i].zc) {
            refused_without_record(cli.c, b, plan[i].len);
            ck_assert_int_eq(tether_conn_send_zc(cli.c, b, plan[i].len, zc_free, NULL), TETHER_OK);
        } else {
            ck_assert_int_eq(tether_conn_send(cli.c, b, plan[i].len), TETHER_OK);
            free(b);
        }
    }
    ck_assert(th_run_until_pred(got_recs, (void *)&total, 20000));
    ck_assert_msg(!srv.closed && !cli.closed, "%s %s", srv.detail, cli.detail);
    ck_assert_int_eq(nrec, total);
    for (int i = 0; i < total; i++) {
        ck_assert_msg(recs[i].len == plan[i].len && recs[i].text == plan[i].text && recs[i].ok,
                      "message %d: %zu bytes%s%s", i, recs[i].len, recs[i].text ? ", text" : "",
                      recs[i].ok ? "" : ", wrong content");
    }
    ck_assert_int_eq(zc_freed, 3);
    /* Server to client: large messages, one from the caller's memory, one
     * zero-copy, and a small one behind them. */
    ck_assert_ptr_nonnull(srv.c);
    uint8_t *big = filled(3u << 20, false);
    ck_assert_int_eq(tether_conn_send(srv.c, big, 3u << 20), TETHER_OK);
    free(big);
    uint8_t *zc = filled(1u << 20, false);
    refused_without_record(srv.c, zc, 1u << 20);
    ck_assert_int_eq(tether_conn_send_zc(srv.c, zc, 1u << 20, zc_free, NULL), TETHER_OK);
    uint8_t *small = filled(100, false);
    ck_assert_int_eq(tether_conn_send(srv.c, small, 100), TETHER_OK);
    free(small);
    int three = 3;
    ck_assert(th_run_until_pred(cli_got, &three, 20000));
    ck_assert_int_eq(cli.msgs, 3);
    ck_assert_uint_eq(cli.seed_ok, 3); /* every byte as sent */
    ck_assert_int_eq(zc_freed, 4);
    tether_conn_close(cli.c);
    ck_assert(th_run_until_pred(both_closed, NULL, 10000));
    tether_listener_close(l);
}
END_TEST

/* ---- large zero-copy messages from clients, masked as they go out ------- */

static struct side cli2;

static void zc_dial(tether_conn **c, struct side *s, int port, const char *scheme)
{
    tether_ws_opts w;
    tether_ws_opts_init(&w);
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = on_msg;
    co.on_close = on_close;
    co.on_connect = on_connect;
    co.userdata = s;
    co.ws = &w;
    co.tls = cli_tls;
    co.send_hwm = 64u << 20;
    co.max_msg = 16u << 20;
    char url[128];
    snprintf(url, sizeof url, "%s://%s:%d/", scheme,
             strcmp(scheme, "wss") == 0 ? "localhost" : "127.0.0.1", port);
    th_dial(c, url, &co);
}

static bool zc_all_in(void *arg)
{
    return srv.msgs >= *(int *)arg || srv.closed || cli.closed || cli2.closed;
}

static void zc_chunks_round(const char *scheme)
{
    /* Two clients on one loop (sharing its masking buffer) each queue
     * zero-copy messages around the 64 KiB masking chunk, of sizes that
     * are not multiples of 4 (the key's phase at each chunk and each
     * partial write), one buffer twice in a row, and small copied
     * messages between them, all before the loop runs: the socket fills
     * inside a message. Every byte must arrive as sent, and each buffer
     * be released once. */
    static const size_t sizes[] = {65536, 65537, 65539,          131071,         200001,
                                   20,    70002, (1u << 20) + 3, (3u << 20) + 1, (8u << 20) + 5};
    const int nsizes = (int)(sizeof sizes / sizeof sizes[0]);
    static uint8_t twice[100003];
    reset_sides();
    memset(&cli2, 0, sizeof cli2);
    zc_freed = 0;
    th_fill(twice, sizeof twice, (uint32_t)sizeof twice);
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.on_message = on_msg;
    so.on_close = on_close;
    so.userdata = &srv;
    so.max_msg = 16u << 20;
    tether_ws_opts sw;
    tether_ws_opts_init(&sw);
    so.ws = &sw;
    so.tls = srv_tls;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = on_accept;
    lo.conn_opts = &so;
    char url[64];
    snprintf(url, sizeof url, "%s://127.0.0.1:0/", scheme);
    tether_listener *l = NULL;
    tether_error err;
    ck_assert_int_eq(tether_listen(&l, th_loop, url, &lo, &err), TETHER_OK);
    tether_conn *c2 = NULL;
    zc_dial(&cli.c, &cli, tether_listener_port(l), scheme);
    zc_dial(&c2, &cli2, tether_listener_port(l), scheme);
    ck_assert(th_run_until(&cli.connected, 10000));
    ck_assert(th_run_until(&cli2.connected, 10000));
    int want = 0;
    int checked = 0;
    int freed = 0;
    /* First one client alone (what the socket did not take of a chunk is
     * kept for its next write), then both at once (each takes the
     * buffer from the other, and masks again what it had left), then
     * both with copied messages. */
    for (int round = 1; round <= 3; round++) {
        tether_conn *cs[2] = {cli.c, c2};
        for (int ii = 0; ii < nsizes; ii++) {
            int i = round < 3 ? ii : nsizes - 1 - ii;
            for (int k = 0; k < (round == 1 ? 1 : 2); k++) {
                if (sizes[i] < 64) {
                    ck_assert_int_eq(tether_conn_send(cs[k], "small message", 13), TETHER_OK);
                } else if (round == 3) {
                    /* Copied, the largest first: written a chunk at a
                     * time while the queue is empty, the rest staged. */
                    uint8_t *b = filled(sizes[i], false);
                    ck_assert_int_eq(tether_conn_send(cs[k], b, sizes[i]), TETHER_OK);
                    free(b);
                    checked++;
                } else {
                    uint8_t *b = filled(sizes[i], false);
                    ck_assert_int_eq(tether_conn_send_zc(cs[k], b, sizes[i], zc_free, NULL),
                                     TETHER_OK);
                    checked++;
                    freed++;
                }
                want++;
                for (int j = 0; i == 2 && j < 2; j++) {
                    ck_assert_int_eq(tether_conn_send_zc(cs[k], twice, sizeof twice, NULL, NULL),
                                     TETHER_OK);
                    checked++;
                    want++;
                }
            }
        }
        /* (The socket took only part of it: the rest waits.) */
        ck_assert_uint_gt(tether_conn_queued(cli.c), 0);
        ck_assert(th_run_until_pred(zc_all_in, &want, 60000));
        ck_assert_msg(!srv.closed && !cli.closed && !cli2.closed, "%s %s %s", srv.detail,
                      cli.detail, cli2.detail);
        ck_assert_int_eq(srv.msgs, want);
        ck_assert_uint_eq(srv.seed_ok, (unsigned)checked); /* every byte as sent */
        ck_assert(th_run_until_pred(zc_freed_all, &freed, 10000));
        ck_assert_int_eq(zc_freed, freed);
    }
    tether_conn_close(cli.c);
    tether_conn_close(c2);
    tether_listener_close(l);
    uint64_t until = th_now_ms() + 10000;
    while (!(cli.closed && cli2.closed) && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert(cli.closed && cli2.closed);
}

START_TEST(ws_zero_copy_masked_in_chunks)
{
    zc_chunks_round("ws");
}
END_TEST

START_TEST(wss_zero_copy_masked_in_chunks)
{
    zc_chunks_round("wss");
}
END_TEST

START_TEST(ws_echo)
{
    echo_round("ws");
}
END_TEST

START_TEST(wss_echo)
{
    echo_round("wss");
}
END_TEST

START_TEST(server_closes_first)
{
    reset_sides();
    tether_listener *l = ws_listen("ws", "", NULL);
    ws_dial("ws", tether_listener_port(l), "/any/path");
    ck_assert(th_run_until(&cli.connected, 10000));
    ck_assert_str_eq(srv.path, "/any/path"); /* no path in the listen URL: any */
    tether_conn_close(srv.c);
    ck_assert(th_run_until_pred(both_closed, NULL, 10000));
    ck_assert_int_eq(cli.reason, TETHER_EOF);
    ck_assert_int_eq(cli.code, 1000);
    ck_assert_int_eq(srv.reason, TETHER_OK);
    tether_listener_close(l);
}
END_TEST

/* ---- liveness and the reconnecting client ------------------------------------ */

static tether_listener *timed_listener(int idle_ms)
{
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = on_msg;
    co.on_close = on_close;
    co.userdata = &srv;
    co.idle_timeout_ms = idle_ms;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = on_accept;
    lo.conn_opts = &co;
    tether_listener *l = NULL;
    tether_error err;
    ck_assert_int_eq(tether_listen(&l, th_loop, "ws://127.0.0.1:0/t", &lo, &err), TETHER_OK);
    return l;
}

static void plain_dial(int port, int heartbeat_ms)
{
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = on_msg;
    co.on_close = on_close;
    co.on_connect = on_connect;
    co.userdata = &cli;
    co.heartbeat_ms = heartbeat_ms;
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/t", port);
    th_dial(&cli.c, url, &co);
}

START_TEST(idle_timeout_closes_with_1001)
{
    reset_sides();
    tether_listener *l = timed_listener(200);
    plain_dial(tether_listener_port(l), 0);
    ck_assert(th_run_until_pred(both_closed, NULL, 20000));
    ck_assert_int_eq(srv.reason, TETHER_ETIMEDOUT);
    ck_assert_msg(strstr(srv.detail, "idle timeout") != NULL, "%s", srv.detail);
    /* The client reads the close frame: 1001 with the server's reason. */
    ck_assert_int_eq(cli.reason, TETHER_EOF);
    ck_assert_int_eq(cli.code, 1001);
    ck_assert_msg(strstr(cli.detail, "1001") && strstr(cli.detail, "idle timeout"), "%s",
                  cli.detail);
    tether_listener_close(l);
}
END_TEST

static bool enough_pongs(void *arg)
{
    tether_stats st;
    tether_conn_get_stats(cli.c, &st);
    return st.pongs_received >= *(uint64_t *)arg || cli.closed || srv.closed;
}

START_TEST(pings_keep_an_idle_server_open)
{
    reset_sides();
    /* The client says nothing but its heartbeats (WebSocket pings every
     * 50 ms); the server's idle timeout is 1 s. Twenty pongs take at
     * least a second, so the pings are what kept it open. */
    tether_listener *l = timed_listener(1000);
    plain_dial(tether_listener_port(l), 50);
    ck_assert(th_run_until(&cli.connected, 10000));
    uint64_t want = 20;
    ck_assert(th_run_until_pred(enough_pongs, &want, 30000));
    ck_assert_msg(!srv.closed && !cli.closed, "closed: %s / %s", srv.detail, cli.detail);
    tether_stats st;
    tether_conn_get_stats(cli.c, &st);
    ck_assert_int_ge(st.rtt_us, 0);
    ck_assert_uint_ge(st.pings_sent, 20);
    tether_conn_close(cli.c);
    ck_assert(th_run_until_pred(both_closed, NULL, 10000));
    ck_assert_int_eq(srv.code, 1000);
    tether_listener_close(l);
}
END_TEST

static int rc_msgs;
static bool rc_closed;

static void rc_state(tether_client *rc, const tether_client_event *ev, void *ud)
{
    (void)ud;
    if (ev->state == TETHER_CLIENT_CONNECTED) {
        ck_assert_int_eq(tether_client_send(rc, "over ws", 7), TETHER_OK);
    } else if (ev->state == TETHER_CLIENT_CLOSED) {
        rc_closed = true;
    }
}

static void rc_msg(tether_client *rc, const uint8_t *p, size_t n, void *ud)
{
    (void)ud;
    ck_assert(n == 7 && memcmp(p, "over ws", 7) == 0);
    rc_msgs++;
    tether_client_close(rc);
}

START_TEST(reconnecting_client)
{
    reset_sides();
    srv.echo = true;
    tether_listener *l = ws_listen("ws", "/rc", NULL);
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/rc", tether_listener_port(l));
    /* The WebSocket options are copied: freed right after creation (the
     * sanitizer build would catch a use after free). */
    tether_ws_opts *w = malloc(sizeof *w);
    tether_ws_opts_init(w);
    static const char *const protos[] = {"chat.v2", NULL};
    w->protocols = protos;
    w->origin = strdup("https://ok.example");
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.ws = w;
    tether_client_opts ro;
    tether_client_opts_init(&ro);
    ro.on_state = rc_state;
    ro.on_message = rc_msg;
    ro.conn_opts = &co;
    tether_client *rc = NULL;
    tether_error err;
    rc_msgs = 0;
    rc_closed = false;
    ck_assert_int_eq(tether_client_new(&rc, th_loop, url, &ro, &err), TETHER_OK);
    free((char *)w->origin);
    free(w);
    ck_assert(th_run_until(&rc_closed, 10000));
    ck_assert_int_eq(rc_msgs, 1);
    ck_assert_str_eq(srv.proto, "chat.v2");
    ck_assert_str_eq(srv.origin, "https://ok.example");
    /* Bad WebSocket options fail at creation, not at every attempt. */
    tether_ws_opts bad;
    tether_ws_opts_init(&bad);
    bad.headers = "no colon\r\n";
    co.ws = &bad;
    ck_assert_int_eq(tether_client_new(&rc, th_loop, url, &ro, &err), TETHER_EINVAL);
    tether_listener_close(l);
}
END_TEST

/* ---- the blocking API ---------------------------------------------------- */

/* A ws:// echo server on a loop of its own thread, for the blocking API
 * (which runs a private loop in the calling thread). */
struct srv_thread {
    tether_loop *loop;
    tether_listener *l;
    _Atomic int port;
};

static void st_echo(tether_conn *c, const uint8_t *p, size_t n, void *ud)
{
    (void)ud;
    tether_ws_set_text(c, tether_ws_msg_is_text(c));
    tether_conn_send(c, p, n);
}

static void *st_main(void *arg)
{
    struct srv_thread *st = arg;
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = st_echo;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &co;
    tether_error err;
    if (tether_listen(&st->l, st->loop, "ws://127.0.0.1:0/sync", &lo, &err) != TETHER_OK) {
        st->port = -1;
        return NULL;
    }
    st->port = tether_listener_port(st->l);
    tether_loop_run(st->loop);
    return NULL;
}

static void st_stop(tether_loop *loop, void *ud)
{
    struct srv_thread *st = ud;
    tether_listener_close(st->l);
    tether_loop_close_all(loop);
}

START_TEST(blocking_api)
{
    struct srv_thread st = {0};
    ck_assert_int_eq(tether_loop_new(&st.loop, NULL), TETHER_OK);
    tether_loop_ref(st.loop); /* runs until st_stop */
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, st_main, &st), 0);
    uint64_t deadline = th_now_ms() + 10000;
    while (st.port == 0 && th_now_ms() < deadline) {
        usleep(1000);
    }
    ck_assert_int_gt(st.port, 0);
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/sync", st.port);
    tether_sync *s = NULL;
    tether_error err;
    ck_assert_msg(tether_sync_connect(&s, url, NULL, 10000, &err) == TETHER_OK, "%s", err.message);
    for (size_t n = 0; n < 200000; n = n * 3 + 1) {
        uint8_t *b = malloc(n + 1);
        th_fill(b, n, (uint32_t)n);
        ck_assert_int_eq(tether_sync_send(s, b, n, 10000), TETHER_OK);
        tether_msg m;
        ck_assert_int_eq(tether_sync_recv(s, &m, 10000), TETHER_OK);
        ck_assert_uint_eq(m.len, n);
        ck_assert(n == 0 || memcmp(m.data, b, n) == 0);
        tether_msg_free(&m);
        free(b);
    }
    ck_assert_int_eq(tether_sync_close(s), TETHER_OK);
    /* A wrong path is refused with the server's answer. */
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/other", st.port);
    ck_assert_int_ne(tether_sync_connect(&s, url, NULL, 10000, &err), TETHER_OK);
    ck_assert_msg(strstr(err.message, "404") != NULL, "%s", err.message);
    ck_assert_int_eq(tether_loop_post(st.loop, st_stop, &st), TETHER_OK);
    tether_loop_unref(st.loop);
    tether_loop_wakeup(st.loop);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(tether_loop_free(st.loop), TETHER_OK);
}
END_TEST

/* ---- raw peers ------------------------------------------------------------ */

/* Sends req and collects what the server answers until it closes. */
static size_t raw_exchange(int port, const void *req, size_t len, char *out, size_t cap)
{
    int fd = th_raw_connect(port);
    if (len > 0) {
        th_raw_write(fd, req, len);
    }
    size_t got = 0;
    uint64_t deadline = th_now_ms() + 10000;
    while (th_now_ms() < deadline && got + 1 < cap) {
        tether_loop_run_once(th_loop, 5);
        ssize_t n = recv(fd, out + got, cap - 1 - got, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            break;
        }
        if (n > 0) {
            got += (size_t)n;
        }
    }
    out[got] = '\0';
    close(fd);
    return got;
}

static bool srv_accepted(void *arg)
{
    (void)arg;
    return srv.c != NULL;
}

static tether_listener *plain_listener(const char *path)
{
    static const char *const allowed[] = {"https://ok.example", NULL};
    tether_ws_opts w;
    tether_ws_opts_init(&w);
    w.allowed_origins = allowed;
    w.health_path = "/healthz";
    w.max_request = 512;
    w.handshake_timeout_ms = 300;
    return ws_listen("ws", path, &w);
}

#define UPGRADE(path, extra)                                                                       \
    "GET " path " HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, "           \
    "Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: "            \
    "13\r\n" extra "\r\n"

/* ---- drain and calls over ws:// (issue #15) ----------------------------------- */

static bool shut_done;
static int shut_status = -1;
static void on_shut(tether_loop *loop, int status, void *ud)
{
    (void)loop;
    (void)ud;
    shut_status = status;
    shut_done = true;
}

START_TEST(shutdown_closes_plain_peer_with_1001)
{
    /* A WebSocket peer that is not tether (this raw client offers no
     * extension) cannot answer a GOAWAY: the listener's shutdown sends it
     * close 1001 at once, long before the drain deadline of 60 s. */
    reset_sides();
    shut_done = false;
    tether_listener *l = ws_listen("ws", "/d", NULL);
    int fd = th_raw_connect(tether_listener_port(l));
    static const char req[] = UPGRADE("/d", "");
    th_raw_write(fd, req, sizeof req - 1);
    ck_assert(th_run_until_pred(srv_accepted, NULL, 10000));
    ck_assert_int_eq(tether_conn_send(srv.c, "last", 4), TETHER_OK);
    ck_assert_int_eq(tether_listener_shutdown(l, 60000, on_shut, NULL), TETHER_OK);
    char buf[1024];
    size_t got = 0;
    uint64_t deadline = th_now_ms() + 20000; /* a hang guard only */
    while (th_now_ms() < deadline && got + 1 < sizeof buf) {
        tether_loop_run_once(th_loop, 5);
        ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
            break;
        }
        if (n > 0) {
            got += (size_t)n;
        }
    }
    close(fd);
    buf[got] = '\0';
    ck_assert_msg(strstr(buf, "101 Switching") != NULL, "%s", buf);
    ck_assert_msg(strstr(buf, "x-tether-control") == NULL, "extension not offered: %s", buf);
    char *end = strstr(buf, "\r\n\r\n");
    ck_assert_ptr_nonnull(end);
    const uint8_t *f = (const uint8_t *)end + 4;
    size_t fl = got - (size_t)(f - (const uint8_t *)buf);
    /* The queued message first, then the close frame: 1001 and the text. */
    ck_assert_uint_ge(fl, 6 + 4);
    ck_assert_uint_eq(f[0], 0x82);
    ck_assert_uint_eq(f[1], 4);
    ck_assert(memcmp(f + 2, "last", 4) == 0);
    ck_assert_uint_eq(f[6], 0x88);
    ck_assert_uint_eq((unsigned)f[8] << 8 | f[9], 1001);
    ck_assert_uint_ge(f[7], 2);
    ck_assert(th_run_until(&shut_done, 20000));
    ck_assert_int_eq(shut_status, TETHER_OK);
    ck_assert(srv.closed);
    ck_assert_int_eq(srv.reason, TETHER_OK); /* not TETHER_ETIMEDOUT: no deadline */
    ck_assert_msg(strstr(srv.detail, "1001") != NULL, "%s", srv.detail);
    /* (tether_listener_shutdown() freed the listener.) */
}
END_TEST

static void tl_msg(tether_conn *c, const uint8_t *p, size_t n, void *ud)
{
    struct side *s = ud;
    uint32_t id = tether_conn_msg_call_id(c);
    if (id != 0) {
        ck_assert_int_eq(tether_conn_reply(c, id, p, n), TETHER_OK);
        return;
    }
    ck_assert_uint_eq(n, 4);
    uint32_t v;
    memcpy(&v, p, 4);
    ck_assert_uint_eq(v, (uint32_t)s->msgs); /* in order, none lost */
    s->msgs++;
}

static void tl_goaway(tether_conn *c, unsigned reason, const char *text, void *ud)
{
    (void)c;
    (void)reason;
    (void)text;
    ((struct side *)ud)->texts++; /* (counts GOAWAYs here) */
}

static int replies;
static void tl_reply(tether_conn *c, int st, const uint8_t *p, size_t n, void *ud)
{
    (void)c;
    (void)ud;
    ck_assert_int_eq(st, TETHER_OK);
    ck_assert_uint_eq(n, 5);
    ck_assert(memcmp(p, "hello", 5) == 0);
    replies++;
}

static void tl_opts(tether_conn_opts *co, struct side *s)
{
    tether_conn_opts_init(co);
    co->on_message = tl_msg;
    co->on_close = on_close;
    co->on_goaway = tl_goaway;
    co->userdata = s;
    co->calls = true;
    co->heartbeat_ms = 50;
}

static bool cli_pongs(void *arg)
{
    (void)arg;
    tether_stats st;
    tether_conn_get_stats(cli.c, &st);
    return (st.pongs_received >= 3 && replies == 3) || cli.closed;
}

START_TEST(tether_peers_calls_heartbeats_drain)
{
    /* Two tether ends agree on the control-frame extension: HELLO, PING,
     * PONG, CALL, REPLY and GOAWAY travel inside the WebSocket stream. */
    reset_sides();
    replies = 0;
    tether_conn_opts so;
    tl_opts(&so, &srv);
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = on_accept;
    lo.conn_opts = &so;
    tether_listener *l = NULL;
    tether_error err;
    ck_assert_int_eq(tether_listen(&l, th_loop, "ws://127.0.0.1:0/t", &lo, &err), TETHER_OK);
    tether_conn_opts co;
    tl_opts(&co, &cli);
    co.on_connect = on_connect;
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/t", tether_listener_port(l));
    th_dial(&cli.c, url, &co);
    ck_assert(th_run_until(&cli.connected, 10000));
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(tether_call(cli.c, "hello", 5, 10000, tl_reply, NULL, NULL), TETHER_OK);
    }
    ck_assert(th_run_until_pred(cli_pongs, NULL, 20000));
    ck_assert_msg(!cli.closed, "%s", cli.detail);
    tether_stats st;
    tether_conn_get_stats(cli.c, &st);
    ck_assert_uint_ge(st.pongs_received, 3);
    ck_assert_int_ge(st.rtt_us, 0);
    /* The server drains while the client keeps sending: every message the
     * client sent before it saw the GOAWAY arrives, in order. */
    uint32_t sent = 0;
    for (; sent < 1000; sent++) {
        ck_assert_int_eq(tether_conn_send(cli.c, &sent, 4), TETHER_OK);
    }
    ck_assert_int_eq(tether_conn_goaway(srv.c, TETHER_GOAWAY_SHUTDOWN, "bye", 60000), TETHER_OK);
    uint64_t guard = th_now_ms() + 20000; /* a hang guard only */
    while (cli.texts == 0 && !cli.closed && th_now_ms() < guard) {
        if (tether_conn_send(cli.c, &sent, 4) == TETHER_OK) {
            sent++;
        }
        tether_loop_run_once(th_loop, 5);
    }
    ck_assert(th_run_until_pred(both_closed, NULL, 20000));
    ck_assert_int_eq(cli.texts, 1);
    ck_assert_int_eq(srv.reason, TETHER_OK);
    ck_assert_msg(strstr(srv.detail, "drained (GOAWAY)") != NULL, "%s", srv.detail);
    ck_assert_int_eq(cli.reason, TETHER_EOF);
    ck_assert_msg(strstr(cli.detail, "after a drain") != NULL, "%s", cli.detail);
    ck_assert_uint_eq((uint64_t)srv.msgs, sent);
    tether_listener_close(l);
}
END_TEST

static int mv_connected;
static int mv_moved;
static bool mv_closed;

static void mv_state(tether_client *rc, const tether_client_event *ev, void *ud)
{
    (void)rc;
    (void)ud;
    if (ev->state == TETHER_CLIENT_CONNECTED) {
        mv_connected++;
    } else if (ev->state == TETHER_CLIENT_DISCONNECTED && ev->reason == TETHER_OK) {
        mv_moved++; /* "the connection is draining (GOAWAY): moving ..." */
    } else if (ev->state == TETHER_CLIENT_CLOSED) {
        mv_closed = true;
    }
}

static bool srv_got_all(void *arg)
{
    return srv.msgs == *(int *)arg;
}

START_TEST(reconnecting_client_moves_on_drain)
{
    /* Over ws:// between tether ends the GOAWAY reaches the client, which
     * moves to a new connection while the old one drains: every message,
     * in order, exactly once (tl_msg checks the sequence). */
    reset_sides();
    mv_connected = mv_moved = 0;
    mv_closed = false;
    tether_conn_opts so;
    tl_opts(&so, &srv);
    so.calls = false;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = on_accept;
    lo.conn_opts = &so;
    tether_listener *l = NULL;
    tether_error err;
    ck_assert_int_eq(tether_listen(&l, th_loop, "ws://127.0.0.1:0/mv", &lo, &err), TETHER_OK);
    char url[64];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/mv", tether_listener_port(l));
    tether_ws_opts w;
    tether_ws_opts_init(&w);
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.ws = &w;
    co.heartbeat_ms = 50; /* control frames: HELLO, then GOAWAY can reach the client */
    tether_client_opts ro;
    tether_client_opts_init(&ro);
    ro.on_state = mv_state;
    ro.conn_opts = &co;
    tether_client *rc = NULL;
    ck_assert_int_eq(tether_client_new(&rc, th_loop, url, &ro, &err), TETHER_OK);
    ck_assert(th_run_until_pred(srv_accepted, NULL, 10000));
    tether_conn *first = srv.c;
    int total = 3000;
    uint32_t next = 0;
    uint64_t guard = th_now_ms() + 30000; /* a hang guard only */
    while ((int)next < total && th_now_ms() < guard) {
        if (next == 1000 && srv.c == first &&
            !(tether_conn_drain_state(first) & TETHER_DRAIN_ASKED)) {
            ck_assert_int_eq(tether_conn_goaway(first, TETHER_GOAWAY_SHUTDOWN, "move", 60000),
                             TETHER_OK);
        }
        int rv = tether_client_send(rc, &next, 4);
        if (rv == TETHER_OK) {
            next++;
        } else {
            ck_assert_int_eq(rv, TETHER_EAGAIN);
        }
        if (rv != TETHER_OK || next % 16 == 0) {
            tether_loop_run_once(th_loop, rv == TETHER_OK ? 0 : 5);
        }
    }
    ck_assert_int_eq((int)next, total);
    ck_assert(th_run_until_pred(srv_got_all, &total, 20000));
    ck_assert(th_run_until(&srv.closed, 20000)); /* the drained connection */
    ck_assert_int_eq(srv.reason, TETHER_OK);
    ck_assert_msg(strstr(srv.detail, "drained (GOAWAY)") != NULL, "%s", srv.detail);
    ck_assert_int_eq(mv_moved, 1);
    ck_assert_int_eq(mv_connected, 2);
    ck_assert_ptr_ne(srv.c, first);
    tether_client_close(rc);
    ck_assert(th_run_until(&mv_closed, 10000));
    tether_listener_close(l);
}
END_TEST

START_TEST(http_answers)
{
    reset_sides();
    (void)origins;
    tether_listener *l = plain_listener("/chat");
    int port = tether_listener_port(l);
    char buf[4096];
    const char *r = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    raw_exchange(port, r, strlen(r), buf, sizeof buf);
    ck_assert_msg(strncmp(buf, "HTTP/1.1 200 ", 13) == 0 && strstr(buf, "\r\n\r\nok\n"), "%s", buf);
    r = "GET /chat HTTP/1.1\r\nHost: x\r\n\r\n";
    raw_exchange(port, r, strlen(r), buf, sizeof buf);
    ck_assert_msg(strncmp(buf, "HTTP/1.1 426 ", 13) == 0, "%s", buf);
    r = "POST /chat HTTP/1.1\r\nHost: x\r\n\r\n";
    raw_exchange(port, r, strlen(r), buf, sizeof buf);
    ck_assert_msg(strncmp(buf, "HTTP/1.1 405 ", 13) == 0, "%s", buf);
    r = "garbage\r\n\r\n";
    raw_exchange(port, r, strlen(r), buf, sizeof buf);
    ck_assert_msg(strncmp(buf, "HTTP/1.1 400 ", 13) == 0, "%s", buf);
    r = UPGRADE("/other", "Origin: https://ok.example\r\n");
    raw_exchange(port, r, strlen(r), buf, sizeof buf);
    ck_assert_msg(strncmp(buf, "HTTP/1.1 404 ", 13) == 0, "%s", buf);
    r = UPGRADE("/chat", "Origin: https://evil.example\r\n");
    raw_exchange(port, r, strlen(r), buf, sizeof buf);
    ck_assert_msg(strncmp(buf, "HTTP/1.1 403 ", 13) == 0, "%s", buf);
    r = UPGRADE("/chat", "");
    raw_exchange(port, r, strlen(r), buf, sizeof buf);
    ck_assert_msg(strncmp(buf, "HTTP/1.1 403 ", 13) == 0, "no origin: %s", buf);
    r = "GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n";
    raw_exchange(port, r, strlen(r), buf, sizeof buf);
    ck_assert_msg(strncmp(buf, "HTTP/1.1 426 ", 13) == 0 &&
                      strstr(buf, "Sec-WebSocket-Version: 13"),
                  "%s", buf);
    char big[1024];
    memset(big, 'a', sizeof big);
    memcpy(big, "GET /chat HTTP/1.1\r\nX: ", 23);
    raw_exchange(port, big, sizeof big, buf, sizeof buf);
    ck_assert_msg(strncmp(buf, "HTTP/1.1 431 ", 13) == 0, "%s", buf);
    /* A valid upgrade: 101 with the RFC's accept key. */
    int fd = th_raw_connect(port);
    r = UPGRADE("/chat", "Origin: https://ok.example\r\n");
    th_raw_write(fd, r, strlen(r));
    size_t got = 0;
    buf[0] = '\0';
    uint64_t deadline = th_now_ms() + 10000;
    while (th_now_ms() < deadline && strstr(buf, "\r\n\r\n") == NULL) {
        tether_loop_run_once(th_loop, 5);
        ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, MSG_DONTWAIT);
        if (n > 0) {
            got += (size_t)n;
            buf[got] = '\0';
        }
    }
    ck_assert_msg(strncmp(buf, "HTTP/1.1 101 ", 13) == 0, "%s", buf);
    ck_assert_ptr_nonnull(strstr(buf, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    ck_assert_ptr_null(strstr(buf, "Sec-WebSocket-Protocol")); /* none offered */
    close(fd);
    /* A client that sends nothing is cut off after handshake_timeout_ms. */
    fd = th_raw_connect(port);
    ck_assert(th_raw_wait_eof(fd, 10000));
    close(fd);
    ck_assert_ptr_nonnull(srv.c); /* the valid upgrade reached on_accept */
    tether_listener_close(l);
    th_run_idle(3000);
}
END_TEST

START_TEST(behind_a_proxy)
{
    /* With the PROXY protocol in front, the upgrade request still has its
     * deadline once the header is in. */
    reset_sides();
    tether_ws_opts w;
    tether_ws_opts_init(&w);
    w.handshake_timeout_ms = 300;
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = on_msg;
    co.on_close = on_close;
    co.userdata = &srv;
    co.ws = &w;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = on_accept;
    lo.conn_opts = &co;
    lo.proxy_protocol = TETHER_PROXY_V1;
    tether_listener *l = NULL;
    tether_error err;
    ck_assert_int_eq(tether_listen(&l, th_loop, "ws://127.0.0.1:0/", &lo, &err), TETHER_OK);
    int port = tether_listener_port(l);
    const char *hdr = "PROXY TCP4 192.0.2.7 127.0.0.1 1111 2222\r\n";
    int fd = th_raw_connect(port);
    th_raw_write(fd, hdr, strlen(hdr));
    ck_assert_msg(th_raw_wait_eof(fd, 10000), "no deadline for the upgrade after PROXY");
    close(fd);
    fd = th_raw_connect(port);
    char req[512];
    snprintf(req, sizeof req, "%s" UPGRADE("/", ""), hdr);
    th_raw_write(fd, req, strlen(req));
    ck_assert(th_run_until_pred(srv_accepted, NULL, 10000));
    char peer[80];
    ck_assert_int_eq(tether_conn_peer(srv.c, peer, sizeof peer), TETHER_OK);
    ck_assert_str_eq(peer, "192.0.2.7:1111");
    close(fd);
    ck_assert(th_run_until(&srv.closed, 10000));
    tether_listener_close(l);
}
END_TEST

Suite *ws_suite(void)
{
    Suite *s = suite_create("ws");
    TCase *tc = tcase_create("codec");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_add_test(tc, hdr_roundtrip);
    tcase_add_test(tc, mask_offsets);
    tcase_add_test(tc, mask_large);
    tcase_add_test(tc, mask_small_matches);
    tcase_add_test(tc, utf8_validation);
    tcase_add_test(tc, accept_key_and_codes);
    tcase_add_test(tc, urls);
    tcase_add_test(tc, bad_options);
    suite_add_tcase(s, tc);
    tc = tcase_create("loopback");
    tcase_add_checked_fixture(tc, tls_setup, tls_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, ws_echo);
    tcase_add_test(tc, messages_around_the_upgrade);
    tcase_add_test(tc, ws_zero_copy_masked_in_chunks);
    tcase_add_test(tc, wss_zero_copy_masked_in_chunks);
    tcase_add_test(tc, wss_echo);
    tcase_add_test(tc, server_closes_first);
    tcase_add_test(tc, http_answers);
    tcase_add_test(tc, idle_timeout_closes_with_1001);
    tcase_add_test(tc, pings_keep_an_idle_server_open);
    tcase_add_test(tc, reconnecting_client);
    tcase_add_test(tc, blocking_api);
    tcase_add_test(tc, behind_a_proxy);
    tcase_add_test(tc, shutdown_closes_plain_peer_with_1001);
    tcase_add_test(tc, tether_peers_calls_heartbeats_drain);
    tcase_add_test(tc, reconnecting_client_moves_on_drain);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(ws_suite());
}
