/* SPDX-License-Identifier: MIT */
/* WebSocket conformance of a tether ws:// server against a hostile client,
 * modelled on the case groups of the Autobahn TestSuite (1 framing,
 * 2 pings, 3 reserved bits, 4 opcodes, 5 fragmentation, 6 UTF-8, 7 close,
 * 9 limits) plus masking. The client is a raw socket writing frames by
 * hand; the server echoes every message with its type. Every case names
 * the Autobahn case it follows and the RFC 6455 section it checks, and a
 * failure message carries both. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"

#define MAX_MSG (64u * 1024u) /* the server's max_msg, for group 9 */

static const char *cur = ""; /* the case running, for failure messages */
static tether_listener *lsn;
static int port;

static void echo_msg(tether_conn *c, const uint8_t *p, size_t n, void *ud)
{
    (void)ud;
    ck_assert_int_eq(tether_ws_set_text(c, tether_ws_msg_is_text(c)), TETHER_OK);
    ck_assert_int_eq(tether_conn_send(c, p, n), TETHER_OK);
}

/* A ws:// server with these options, on a port of its own: the cases
 * talk to it (port) until the caller puts the saved port back; setup()'s
 * is the echo server. */
static tether_listener *listen_ws(const tether_conn_opts *co)
{
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = co;
    tether_listener *l2 = NULL;
    tether_error err;
    int rv = tether_listen(&l2, th_loop, "ws://127.0.0.1:0/", &lo, &err);
    ck_assert_msg(rv == TETHER_OK, "listen: %s", err.message);
    port = tether_listener_port(l2);
    return l2;
}

static void setup(void)
{
    th_setup();
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = echo_msg;
    co.max_msg = MAX_MSG;
    lsn = listen_ws(&co);
}

static void teardown(void)
{
    tether_listener_close(lsn);
    tether_loop_close_all(th_loop);
    th_teardown();
}

/* ---- the hostile client --------------------------------------------------- */

struct peer {
    int fd;
    uint8_t in[1 << 20];
    size_t len;
    bool eof;
};

static struct peer P;

/* Runs the loop and reads what arrives, until want bytes are buffered, EOF,
 * or 10 s (a hang guard). */
static void pump(size_t want)
{
    uint64_t deadline = th_now_ms() + 10000;
    while (P.len < want && !P.eof && th_now_ms() < deadline) {
        tether_loop_run_once(th_loop, 5);
        ssize_t n = recv(P.fd, P.in + P.len, sizeof P.in - P.len, MSG_DONTWAIT);
        if (n > 0) {
            P.len += (size_t)n;
        } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            P.eof = true;
        }
    }
}

static void consume(size_t n)
{
    memmove(P.in, P.in + n, P.len - n);
    P.len -= n;
}

static void open_ws(void)
{
    memset(&P, 0, sizeof P);
    P.fd = th_raw_connect(port);
    const char *req = "GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n";
    th_raw_write(P.fd, req, strlen(req));
    uint8_t *end = NULL;
    for (size_t want = 12; end == NULL && !P.eof && want < 4096; want = P.len + 1) {
        pump(want);
        end = memmem(P.in, P.len, "\r\n\r\n", 4);
    }
    ck_assert_msg(end != NULL && memcmp(P.in, "HTTP/1.1 101 ", 13) == 0, "%s: no 101", cur);
    consume((size_t)(end - P.in) + 4);
}

static void close_ws(void)
{
    close(P.fd);
    P.fd = -1;
}

/* Writes one frame; masked unless told otherwise. */
static void frame(bool fin, unsigned rsv, unsigned op, const void *payload, size_t len, bool masked)
{
    uint8_t *b = malloc(len + 14);
    size_t o = 0;
    b[o++] = (uint8_t)((fin ? 0x80u : 0) | (rsv << 4) | op);
    uint8_t m = masked ? 0x80u : 0;
    if (len < 126) {
        b[o++] = (uint8_t)(m | len);
    } else if (len <= 0xFFFF) {
        b[o++] = m | 126;
        b[o++] = (uint8_t)(len >> 8);
        b[o++] = (uint8_t)len;
    } else {
        b[o++] = m | 127;
        for (int i = 7; i >= 0; i--) {
            b[o++] = (uint8_t)((uint64_t)len >> (8 * i));
        }
    }
    const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
    if (masked) {
        memcpy(b + o, key, 4);
        o += 4;
    }
    for (size_t i = 0; i < len; i++) {
        b[o + i] = ((const uint8_t *)payload)[i] ^ (masked ? key[i % 4] : 0);
    }
    th_raw_write(P.fd, b, o + len);
    free(b);
}

#define SEND(op, s) frame(true, 0, (op), (s), strlen(s), true)

/* Reads one frame from the server (which never masks). Returns false on
 * EOF before a whole frame. */
static bool read_frame(unsigned *op, bool *fin, uint8_t **payload, size_t *len)
{
    pump(2);
    if (P.len < 2) {
        return false;
    }
    ck_assert_msg(!(P.in[1] & 0x80), "%s: the server masked a frame (RFC 6455 5.1)", cur);
    size_t hl = 2;
    uint64_t n = P.in[1] & 0x7F;
    if (n == 126) {
        pump(4);
        n = ((uint64_t)P.in[2] << 8) | P.in[3];
        hl = 4;
    } else if (n == 127) {
        pump(10);
        n = 0;
        for (int i = 0; i < 8; i++) {
            n = (n << 8) | P.in[2 + i];
        }
        hl = 10;
    }
    pump(hl + (size_t)n);
    if (P.len < hl + n) {
        return false;
    }
    *op = P.in[0] & 0x0F;
    *fin = (P.in[0] & 0x80) != 0;
    ck_assert_msg((P.in[0] & 0x70) == 0, "%s: the server set reserved bits", cur);
    *len = (size_t)n;
    *payload = malloc(*len + 1);
    memcpy(*payload, P.in + hl, *len);
    consume(hl + *len);
    return true;
}

/* The next message must be op with exactly this payload. */
static void expect_msg(unsigned want_op, const void *want, size_t want_len)
{
    unsigned op;
    bool fin;
    uint8_t *p = NULL;
    size_t n = 0;
    ck_assert_msg(read_frame(&op, &fin, &p, &n), "%s: connection closed instead of a reply", cur);
    ck_assert_msg(op == want_op && fin, "%s: got opcode %u (fin %d), expected %u", cur, op, fin,
                  want_op);
    ck_assert_msg(n == want_len && memcmp(p, want, n) == 0,
                  "%s: reply of %zu bytes differs from the %zu expected", cur, n, want_len);
    free(p);
}

/* The server must close with code (0: a close frame without a code),
 * skipping pongs, then end the TCP connection. */
static void expect_close(unsigned code)
{
    unsigned op = 0;
    bool fin;
    uint8_t *p = NULL;
    size_t n = 0;
    for (;;) {
        ck_assert_msg(read_frame(&op, &fin, &p, &n),
                      "%s: connection dropped without a close frame (expected %u)", cur, code);
        if (op != 0xA) {
            break;
        }
        free(p);
    }
    ck_assert_msg(op == 0x8, "%s: got opcode %u instead of a close frame (expected %u)", cur, op,
                  code);
    unsigned got = n >= 2 ? ((unsigned)p[0] << 8) | p[1] : 0;
    ck_assert_msg(got == code, "%s: close code %u, expected %u", cur, got, code);
    free(p);
    if (code != 0 && code != 1000 && code < 3000) {
        /* After a protocol error the server closes the TCP connection
         * (RFC 6455 7.1.1: the server closes first). */
        pump(sizeof P.in);
        ck_assert_msg(P.eof, "%s: the server kept the TCP connection open", cur);
    }
    close_ws();
}

/* Runs one case that must end in a close with code. */
#define CASE(id, sect) cur = "Autobahn " id " (RFC 6455 " sect ")"

/* ---- 1 framing ------------------------------------------------------------ */

START_TEST(group1_framing)
{
    static const size_t sizes[] = {0, 125, 126, 127, 128, 65535, 65536};
    for (int text = 1; text >= 0; text--) {
        CASE("1.1.1-1.2.8: echo of text and binary of 0 to 65536 bytes", "5.2, 5.6");
        open_ws();
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            uint8_t *b = malloc(sizes[i] + 1);
            memset(b, text ? '*' : 0xFE, sizes[i]);
            frame(true, 0, text ? 1 : 2, b, sizes[i], true);
            expect_msg(text ? 1 : 2, b, sizes[i]);
            free(b);
        }
        frame(true, 0, 8, "\x03\xe8", 2, true);
        expect_close(1000);
    }
    CASE("(handshake): a frame in the same packet as the upgrade request", "4.1, 5.2");
    memset(&P, 0, sizeof P);
    P.fd = th_raw_connect(port);
    static const char req[] =
        "GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        "\x81\x82\x00\x00\x00\x00hi"; /* a masked "hi" (all-zero key) */
    th_raw_write(P.fd, req, sizeof req - 1);
    uint8_t *end = NULL;
    for (size_t want = 12; end == NULL && !P.eof && want < 4096; want = P.len + 1) {
        pump(want);
        end = memmem(P.in, P.len, "\r\n\r\n", 4);
    }
    ck_assert_msg(end != NULL && memcmp(P.in, "HTTP/1.1 101 ", 13) == 0, "%s: no 101", cur);
    consume((size_t)(end - P.in) + 4);
    expect_msg(1, "hi", 2);
    frame(true, 0, 8, "\x03\xe8", 2, true);
    expect_close(1000);
    CASE("(masking): an unmasked frame from a client", "5.1");
    open_ws();
    frame(true, 0, 1, "hi", 2, false);
    expect_close(1002);
    CASE("1.1.x: 64-bit length with the most significant bit set", "5.2");
    open_ws();
    th_raw_write(P.fd, "\x82\xff\x80\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00", 14);
    expect_close(1002);
}
END_TEST

/* ---- 2 pings -------------------------------------------------------------- */

START_TEST(group2_pings)
{
    CASE("2.1: ping without payload", "5.5.2, 5.5.3");
    open_ws();
    frame(true, 0, 9, "", 0, true);
    expect_msg(0xA, "", 0);
    CASE("2.3: ping with binary payload", "5.5.3");
    frame(true, 0, 9, "\x00\xff\xfe\xfd", 4, true);
    expect_msg(0xA, "\x00\xff\xfe\xfd", 4);
    CASE("2.4: ping with 125 bytes", "5.5");
    uint8_t b[126];
    memset(b, 'p', sizeof b);
    frame(true, 0, 9, b, 125, true);
    expect_msg(0xA, b, 125);
    CASE("2.7: unsolicited pong is ignored", "5.5.3");
    frame(true, 0, 0xA, "x", 1, true);
    SEND(1, "still here");
    expect_msg(1, "still here", 10);
    CASE("2.10: ten pings: the last is answered", "5.5.3");
    char last[16];
    for (int i = 0; i < 10; i++) {
        snprintf(last, sizeof last, "p%d", i);
        frame(true, 0, 9, last, strlen(last), true);
    }
    SEND(1, "after");
    /* Every pong carries a payload that was sent, the last one the last
     * ping's (RFC 6455 5.5.3 allows answering only the most recent). */
    unsigned op;
    bool fin;
    uint8_t *p;
    size_t n;
    char got[16] = "";
    int pongs = 0;
    for (;;) {
        ck_assert_msg(read_frame(&op, &fin, &p, &n), "%s: closed", cur);
        if (op == 1) {
            ck_assert(n == 5 && memcmp(p, "after", 5) == 0);
            free(p);
            break;
        }
        ck_assert_msg(op == 0xA && n < sizeof got, "%s: opcode %u", cur, op);
        memcpy(got, p, n);
        got[n] = '\0';
        pongs++;
        free(p);
    }
    if (strcmp(got, last) != 0) {
        /* The last pong may follow the echo when it was read later. */
        ck_assert_msg(read_frame(&op, &fin, &p, &n) && op == 0xA, "%s: no pong for %s", cur, last);
        ck_assert_msg(n == strlen(last) && memcmp(p, last, n) == 0, "%s: last pong", cur);
        free(p);
        pongs++;
    }
    ck_assert_int_ge(pongs, 1);
    frame(true, 0, 8, "\x03\xe8", 2, true);
    expect_close(1000);
    CASE("2.5: ping with 126 bytes", "5.5");
    open_ws();
    frame(true, 0, 9, b, 126, true);
    expect_close(1002);
    CASE("2.x: fragmented ping", "5.5");
    open_ws();
    frame(false, 0, 9, "a", 1, true);
    expect_close(1002);
}
END_TEST

/* ---- 3 reserved bits, 4 opcodes ------------------------------------------- */

START_TEST(group3_4_rsv_opcodes)
{
    for (unsigned rsv = 1; rsv <= 7; rsv++) {
        CASE("3.1-3.7: reserved bits set", "5.2");
        open_ws();
        frame(true, rsv, rsv % 2 ? 1 : 9, "x", 1, true);
        expect_close(1002);
    }
    static const unsigned ops[] = {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        CASE("4.1.1-4.2.5: reserved opcode", "5.2");
        open_ws();
        SEND(1, "before");
        expect_msg(1, "before", 6);
        frame(true, 0, ops[i], "x", 1, true);
        expect_close(1002);
    }
}
END_TEST

/* ---- 5 fragmentation ------------------------------------------------------ */

START_TEST(group5_fragmentation)
{
    CASE("5.3: text in two fragments", "5.4");
    open_ws();
    frame(false, 0, 1, "frag", 4, true);
    frame(true, 0, 0, "ment", 4, true);
    expect_msg(1, "fragment", 8);
    CASE("5.6: a ping between fragments is answered first", "5.4, 5.5");
    frame(false, 0, 2, "ab", 2, true);
    frame(true, 0, 9, "pp", 2, true);
    frame(true, 0, 0, "cd", 2, true);
    expect_msg(0xA, "pp", 2);
    expect_msg(2, "abcd", 4);
    CASE("5.19: 100 one-byte fragments and empty ones", "5.4");
    char all[101];
    for (int i = 0; i < 100; i++) {
        all[i] = (char)('a' + i % 26);
        frame(false, 0, i == 0 ? 1 : 0, all + i, 1, true);
        frame(false, 0, 0, "", 0, true);
    }
    frame(true, 0, 0, "", 0, true);
    expect_msg(1, all, 100);
    frame(true, 0, 8, "\x03\xe8", 2, true);
    expect_close(1000);
    CASE("5.9: continuation without a message", "5.4");
    open_ws();
    frame(true, 0, 0, "x", 1, true);
    expect_close(1002);
    CASE("5.15: a new message inside a fragmented one", "5.4");
    open_ws();
    frame(false, 0, 1, "a", 1, true);
    frame(true, 0, 1, "b", 1, true);
    expect_close(1002);
}
END_TEST

/* ---- 6 UTF-8 -------------------------------------------------------------- */

START_TEST(group6_utf8)
{
    CASE("6.2.x: valid UTF-8, whole and split inside a character", "8.1");
    open_ws();
    const char *v = "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5 \xf0\x9f\x98\x80";
    SEND(1, v);
    expect_msg(1, v, strlen(v));
    for (size_t k = 1; k < strlen(v); k += 3) {
        frame(false, 0, 1, v, k, true);
        frame(true, 0, 0, v + k, strlen(v) - k, true);
        expect_msg(1, v, strlen(v));
    }
    SEND(2, "\xff\xfe"); /* binary is not checked */
    expect_msg(2, "\xff\xfe", 2);
    frame(true, 0, 8, "\x03\xe8", 2, true);
    expect_close(1000);
    static const char *const bad[] = {
        "\xc0\xaf",         /* 6.6.x overlong */
        "\xe0\x80\xaf",     /* overlong */
        "\xed\xa0\x80",     /* 6.19.x surrogate */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\xff",             /* 6.5.x never valid */
        "a\x80",            /* lone continuation */
        "\xe2\x82",         /* 6.3.x truncated at the end of the message */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CASE("6.3-6.21: invalid UTF-8 in a text message", "8.1");
        open_ws();
        SEND(1, bad[i]);
        expect_close(1007);
    }
    CASE("6.4.x: invalid UTF-8 in a middle fragment fails before the end", "8.1");
    open_ws();
    frame(false, 0, 1, "ok", 2, true);
    frame(false, 0, 0, "\xc0\xaf", 2, true);
    expect_close(1007);
}
END_TEST

/* ---- 7 close -------------------------------------------------------------- */

START_TEST(group7_close)
{
    CASE("7.1.1: close with 1000 is answered with 1000", "5.5.1, 7.4");
    open_ws();
    frame(true, 0, 8, "\x03\xe8", 2, true);
    expect_close(1000);
    CASE("7.3.1: close without payload is answered without a code", "5.5.1");
    open_ws();
    frame(true, 0, 8, "", 0, true);
    expect_close(0);
    CASE("7.1.x: data after a close frame is ignored", "5.5.1");
    open_ws();
    frame(true, 0, 8, "\x03\xe8", 2, true);
    SEND(1, "late");
    expect_close(1000);
    static const unsigned good[] = {1000, 1001, 1002, 1003, 1007, 1008, 1009,
                                    1010, 1011, 3000, 3999, 4000, 4999};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        CASE("7.7.x: valid close codes are echoed", "7.4.1, 7.4.2");
        open_ws();
        uint8_t c[6] = {(uint8_t)(good[i] >> 8), (uint8_t)good[i], 'b', 'y', 'e', '!'};
        frame(true, 0, 8, c, sizeof c, true);
        expect_close(good[i]);
    }
    static const unsigned badc[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535};
    for (size_t i = 0; i < sizeof badc / sizeof badc[0]; i++) {
        CASE("7.9.x: invalid close codes", "7.4.1, 7.4.2");
        open_ws();
        uint8_t c[2] = {(uint8_t)(badc[i] >> 8), (uint8_t)badc[i]};
        frame(true, 0, 8, c, 2, true);
        expect_close(1002);
    }
    CASE("7.3.2: close with a 1-byte payload", "5.5.1");
    open_ws();
    frame(true, 0, 8, "\x03", 1, true);
    expect_close(1002);
    CASE("7.3.6: close reason too long (126-byte payload)", "5.5");
    open_ws();
    uint8_t lng[126];
    memset(lng, 'r', sizeof lng);
    lng[0] = 0x03;
    lng[1] = 0xe8;
    frame(true, 0, 8, lng, sizeof lng, true);
    expect_close(1002);
    CASE("7.5.1: close reason not valid UTF-8", "5.5.1, 8.1");
    open_ws();
    frame(true, 0, 8, "\x03\xe8\xc0\xaf", 4, true);
    expect_close(1007);
}
END_TEST

/* ---- 9 limits ------------------------------------------------------------- */

START_TEST(group9_limits)
{
    CASE("9.1.x: a message of exactly max_msg", "10.4");
    open_ws();
    uint8_t *b = calloc(1, MAX_MSG + 1);
    frame(true, 0, 2, b, MAX_MSG, true);
    expect_msg(2, b, MAX_MSG);
    frame(true, 0, 8, "\x03\xe8", 2, true);
    expect_close(1000);
    CASE("9.x: one byte over max_msg, announced in the header", "10.4, 7.4.1");
    open_ws();
    th_raw_write(P.fd, "\x82\xff\x00\x00\x00\x00\x00\x01\x00\x01\x12\x34\x56\x78", 14);
    expect_close(1009);
    CASE("9.x: fragments whose total passes max_msg", "10.4, 7.4.1");
    open_ws();
    frame(false, 0, 2, b, MAX_MSG / 2 + 1, true);
    frame(true, 0, 0, b, MAX_MSG / 2, true);
    expect_close(1009);
    CASE("9.x: a 2^62-byte claim allocates nothing", "10.4");
    open_ws();
    th_raw_write(P.fd, "\x82\xff\x40\x00\x00\x00\x00\x00\x00\x00\x12\x34\x56\x78", 14);
    expect_close(1009);
    free(b);
}
END_TEST

/* ---- fragments and the idle timeout --------------------------------------- */

START_TEST(fragments_count_as_traffic)
{
    /* A server whose idle timeout is 1 s; the client spends 2 s or more
     * on one message, a fragment every 100 ms. */
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = echo_msg;
    co.idle_timeout_ms = 1000;
    int saved = port;
    tether_listener *l2 = listen_ws(&co);
    CASE("(tether): fragments of one message keep an idle timeout at bay", "5.4");
    open_ws();
    char all[21];
    for (int i = 0; i < 20; i++) {
        all[i] = (char)('a' + i);
        frame(false, 0, i == 0 ? 1 : 0, all + i, 1, true);
        uint64_t until = th_now_ms() + 100;
        while (th_now_ms() < until) {
            tether_loop_run_once(th_loop, 10);
        }
    }
    frame(true, 0, 0, "", 0, true);
    expect_msg(1, all, 20);
    frame(true, 0, 8, "\x03\xe8", 2, true);
    expect_close(1000);
    port = saved;
    tether_listener_close(l2);
}
END_TEST

/* ---- masking ---------------------------------------------------------------- */

/* Writes one masked frame (FIN, op) in pieces of the sizes in cuts (then
 * the rest), running the loop after each so that the server reads them
 * one at a time. */
static void frame_in_pieces(unsigned op, const uint8_t *payload, size_t len, const size_t *cuts,
                            size_t ncuts, const uint8_t key[4])
{
    uint8_t *b = malloc(len + 14);
    size_t o = 0;
    b[o++] = (uint8_t)(0x80u | op);
    if (len <= 0xFFFF) {
        b[o++] = 0x80u | 126;
        b[o++] = (uint8_t)(len >> 8);
        b[o++] = (uint8_t)len;
    } else {
        b[o++] = 0x80u | 127;
        for (int i = 7; i >= 0; i--) {
            b[o++] = (uint8_t)((uint64_t)len >> (8 * i));
        }
    }
    memcpy(b + o, key, 4);
    o += 4;
    for (size_t i = 0; i < len; i++) {
        b[o + i] = payload[i] ^ key[i % 4];
    }
    size_t at = 0;
    for (size_t i = 0; at < o + len; i++) {
        size_t k = i < ncuts ? cuts[i] : o + len - at;
        k = k < o + len - at ? k : o + len - at;
        th_raw_write(P.fd, b + at, k);
        at += k;
        for (int r = 0; r < 3; r++) {
            tether_loop_run_once(th_loop, 1);
        }
    }
    free(b);
}

START_TEST(masked_frames_across_reads)
{
    /* A server unmasks each read's part of a frame as it arrives: the
     * key's phase must follow the payload offset across reads that end
     * anywhere (inside the header, at every offset mod 4), and the count
     * of bytes done must start again at the next frame. */
    static const size_t cuts[] = {1, 2, 3, 4, 5, 1, 2, 3, 4093, 7, 8191, 1, 30000, 2};
    static const uint8_t keys[2][4] = {{0x01, 0x80, 0xfe, 0x37}, {0xa5, 0x5a, 0x00, 0xff}};
    static const size_t sizes[] = {MAX_MSG - 1, 50001, MAX_MSG, 126};
    CASE("(tether): masked frames split across reads", "5.3");
    open_ws();
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        uint8_t *p = malloc(sizes[s]);
        th_fill(p, sizes[s], (uint32_t)(s + 1));
        frame_in_pieces(2, p, sizes[s], cuts + s, sizeof cuts / sizeof cuts[0] - s, keys[s % 2]);
        expect_msg(2, p, sizes[s]);
        free(p);
    }
    /* A fragmented message whose fragments are split too. */
    uint8_t *p = malloc(40000);
    th_fill(p, 40000, 7);
    uint8_t key[4] = {9, 8, 7, 6};
    uint8_t hdr[8] = {0x02, 0x80u | 126, (uint8_t)(20001 >> 8), (uint8_t)20001, 9, 8, 7, 6};
    uint8_t *f = malloc(20001);
    for (size_t i = 0; i < 20001; i++) {
        f[i] = p[i] ^ key[i % 4];
    }
    th_raw_write(P.fd, hdr, sizeof hdr);
    tether_loop_run_once(th_loop, 1);
    th_raw_write(P.fd, f, 10003);
    tether_loop_run_once(th_loop, 1);
    th_raw_write(P.fd, f + 10003, 20001 - 10003);
    free(f);
    frame_in_pieces(0, p + 20001, 40000 - 20001, cuts + 3, 3, key);
    expect_msg(2, p, 40000);
    free(p);
    frame(true, 0, 8, "\x03\xe8", 2, true);
    expect_close(1000);
}
END_TEST

/* ---- tether's timeouts as close codes --------------------------------------- */

START_TEST(stalled_frame_closes_with_1008)
{
    /* A frame that stops half-way: the server's frame timeout closes with
     * 1008 (policy violation) and says why in the reason. */
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = echo_msg;
    co.frame_timeout_ms = 200;
    co.frame_min_rate = 0;
    int saved = port;
    tether_listener *l2 = listen_ws(&co);
    CASE("(tether): a frame timeout closes with 1008 and its reason", "7.4.1");
    open_ws();
    uint8_t half[60];
    memset(half, 'h', sizeof half);
    /* A masked binary frame announcing 100 bytes; 60 of them are sent. */
    th_raw_write(P.fd, "\x82\xe4\x00\x00\x00\x00", 6);
    th_raw_write(P.fd, half, sizeof half);
    unsigned op = 0;
    bool fin;
    uint8_t *p = NULL;
    size_t n = 0;
    ck_assert_msg(read_frame(&op, &fin, &p, &n), "%s: no close frame", cur);
    ck_assert_msg(op == 8 && n >= 2, "%s: opcode %u", cur, op);
    unsigned code = ((unsigned)p[0] << 8) | p[1];
    ck_assert_msg(code == 1008, "%s: close code %u", cur, code);
    ck_assert_msg(n > 2 && memmem(p + 2, n - 2, "frame", 5) != NULL, "%s: reason '%.*s'", cur,
                  (int)(n - 2), (const char *)p + 2);
    free(p);
    close_ws();
    port = saved;
    tether_listener_close(l2);
}
END_TEST

/* A client that completes the upgrade and then never reads: a large
 * server message goes out past the queue (written from the caller's
 * memory) and what the socket does not take is queued; the write timeout
 * must still end the connection once nothing moves. */
static int wt_closed;
static int wt_reason;
static char wt_detail[256];
static size_t wt_sent;

static void wt_msg(tether_conn *c, const uint8_t *p, size_t n, void *ud)
{
    (void)p;
    (void)n;
    (void)ud;
    static uint8_t big[1 << 20];
    memset(big, 'w', sizeof big);
    ck_assert_int_eq(tether_conn_send(c, big, sizeof big), TETHER_OK);
    wt_sent = sizeof big;
}

static void wt_close(tether_conn *c, int reason, void *ud)
{
    (void)ud;
    wt_reason = reason;
    snprintf(wt_detail, sizeof wt_detail, "%s", tether_conn_last_error(c));
    wt_closed++;
}

static bool wt_done(void *ud)
{
    (void)ud;
    return wt_closed > 0;
}

START_TEST(non_reading_client_closed_by_write_timeout)
{
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = wt_msg;
    co.on_close = wt_close;
    co.write_timeout_ms = 300;
    co.close_timeout_ms = 300;
    co.sndbuf = 16384;
    int saved = port;
    tether_listener *l2 = listen_ws(&co);
    CASE("(tether): a write timeout ends a large message nobody reads", "n/a");
    wt_closed = 0;
    open_ws();
    int rcv = 4096;
    ck_assert_int_eq(setsockopt(P.fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv), 0);
    frame(true, 0, 2, "go", 2, true);
    ck_assert_msg(th_run_until_pred(wt_done, NULL, 10000), "%s: not closed", cur);
    ck_assert_int_eq(wt_sent, 1u << 20);
    ck_assert_msg(wt_reason == TETHER_ETIMEDOUT && strstr(wt_detail, "write timeout") != NULL,
                  "%s: closed with %s: %s", cur, tether_err_name(wt_reason), wt_detail);
    close_ws();
    port = saved;
    tether_listener_close(l2);
}
END_TEST

Suite *ws_conformance_suite(void)
{
    Suite *s = suite_create("ws_conformance");
    TCase *tc = tcase_create("autobahn");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, group1_framing);
    tcase_add_test(tc, group2_pings);
    tcase_add_test(tc, group3_4_rsv_opcodes);
    tcase_add_test(tc, group5_fragmentation);
    tcase_add_test(tc, group6_utf8);
    tcase_add_test(tc, group7_close);
    tcase_add_test(tc, group9_limits);
    tcase_add_test(tc, fragments_count_as_traffic);
    tcase_add_test(tc, masked_frames_across_reads);
    tcase_add_test(tc, stalled_frame_closes_with_1008);
    tcase_add_test(tc, non_reading_client_closed_by_write_timeout);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(ws_conformance_suite());
}
