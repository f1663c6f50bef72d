/* SPDX-License-Identifier: MIT */
/* tether_conn_send_batch() (lib/send_batch.c): a batch is exactly the
 * tether_conn_send() of each message in turn, stopping at the first one not
 * accepted. Order and framing end to end (len32, varint, line, WebSocket),
 * the backpressure rule message by message (the count taken under send_hwm,
 * the rest sent from on_drain), a refused message in the middle reported
 * by its index with nothing after it queued, and the degenerate calls.
 * On ws:// (small messages encoded into the queue as whole frames),
 * every frame as it crossed the wire, client (masked) and server
 * (unmasked), binary, text and both in one run, decoded from a relay's
 * recording. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"

/* Message k of a run: a length from a cycle that covers empty, small (each
 * size class of the inline copy up to 64 bytes), segment-sized and large
 * (written straight from the caller's memory) messages, each WebSocket
 * length form at its edges (7 bits up to 125, 16 bits up to 65535), and
 * bytes that never contain a newline, so that the line framing carries
 * them too. */
static const size_t sb_lens[] = {0,     1,  63, 64,    1000,  100, 20000, 5,   3000,  64,
                                 70000, 7,  2,  3,     4,     8,   9,     15,  16,    17,
                                 31,    32, 33, 16383, 16384, 125, 126,   127, 65535, 65536};
#define SB_NLENS (sizeof sb_lens / sizeof sb_lens[0])
#define SB_MAX_MSG (128u * 1024u)

static size_t sb_len(size_t k)
{
    return sb_lens[k % SB_NLENS];
}

static void sb_fill(uint8_t *p, size_t len, size_t k)
{
    for (size_t j = 0; j < len; j++) {
        p[j] = (uint8_t)('a' + (k * 7 + j) % 26);
    }
}

static bool sb_check(const uint8_t *p, size_t len, size_t k)
{
    for (size_t j = 0; j < len; j++) {
        if (p[j] != (uint8_t)('a' + (k * 7 + j) % 26)) {
            return false;
        }
    }
    return true;
}

/* The messages of one run: msgs[i] is message ids[i]. */
struct sb_run {
    tether_batch_msg *msgs;
    size_t *ids;
    size_t total;
    size_t next;  /* first message not yet accepted */
    size_t batch; /* messages per call */
    bool single;  /* tether_conn_send() one by one instead (the reference) */
    bool toggle;  /* ws: tether_ws_set_text() before each call, text every third */
    unsigned calls;
    bool cur_text; /* ws: what the messages are sent as now */
    bool *text;    /* text[i]: message i was sent as text */
    int eagain;
    int drains;
    int bad_rv;
    /* The receiving side. */
    size_t got;
    size_t bad;
    bool done;
    bool rx_closed;
};

static struct sb_run R;

static void sb_run_init(size_t total, size_t batch)
{
    memset(&R, 0, sizeof R);
    R.total = total;
    R.batch = batch;
    R.msgs = calloc(total, sizeof *R.msgs);
    R.ids = calloc(total, sizeof *R.ids);
    R.text = calloc(total, sizeof *R.text);
    ck_assert_ptr_nonnull(R.msgs);
    ck_assert_ptr_nonnull(R.ids);
    ck_assert_ptr_nonnull(R.text);
    for (size_t i = 0; i < total; i++) {
        size_t len = sb_len(i);
        uint8_t *p = malloc(len > 0 ? len : 1);
        ck_assert_ptr_nonnull(p);
        sb_fill(p, len, i);
        R.msgs[i].data = p;
        R.msgs[i].len = len;
        R.ids[i] = i;
    }
}

/* total copies of message k, all pointing at one buffer. */
static uint8_t *sb_shared;

static void sb_run_init_same(size_t total, size_t batch, size_t k)
{
    memset(&R, 0, sizeof R);
    R.total = total;
    R.batch = batch;
    R.msgs = calloc(total, sizeof *R.msgs);
    R.ids = calloc(total, sizeof *R.ids);
    R.text = calloc(total, sizeof *R.text);
    ck_assert_ptr_nonnull(R.text);
    sb_shared = malloc(sb_len(k) + 1);
    ck_assert_ptr_nonnull(R.msgs);
    ck_assert_ptr_nonnull(R.ids);
    ck_assert_ptr_nonnull(sb_shared);
    sb_fill(sb_shared, sb_len(k), k);
    for (size_t i = 0; i < total; i++) {
        R.msgs[i].data = sb_shared;
        R.msgs[i].len = sb_len(k);
        R.ids[i] = k;
    }
}

static void sb_run_free(void)
{
    if (sb_shared != NULL) {
        free(sb_shared);
        sb_shared = NULL;
    } else {
        for (size_t i = 0; i < R.total; i++) {
            free((void *)R.msgs[i].data);
        }
    }
    free(R.msgs);
    free(R.ids);
    free(R.text);
}

/* Sends from R.next in batches of R.batch until refused. */
static void sb_pump(tether_conn *c)
{
    while (R.next < R.total) {
        size_t n = R.total - R.next < R.batch ? R.total - R.next : R.batch;
        size_t k = n + 1;
        int rv;
        if (R.toggle) {
            R.cur_text = R.calls++ % 3 == 1;
            ck_assert_int_eq(tether_ws_set_text(c, R.cur_text), TETHER_OK);
        }
        if (R.single) {
            rv = tether_conn_send(c, R.msgs[R.next].data, R.msgs[R.next].len);
            k = rv == TETHER_OK ? 1 : 0;
            n = 1;
        } else {
            rv = tether_conn_send_batch(c, R.msgs + R.next, n, &k);
        }
        if (k > n || (rv == TETHER_OK && k != n)) {
            R.bad_rv++;
            return;
        }
        for (size_t j = 0; j < k; j++) {
            R.text[R.next + j] = R.cur_text;
        }
        R.next += k;
        if (rv == TETHER_EAGAIN) {
            R.eagain++;
            return; /* on_drain goes on */
        }
        if (rv != TETHER_OK) {
            R.bad_rv++;
            return;
        }
    }
}

static void sb_on_connect(tether_conn *c, int status, void *ud)
{
    (void)ud;
    ck_assert_int_eq(status, TETHER_OK);
    sb_pump(c);
}

static void sb_on_drain(tether_conn *c, void *ud)
{
    (void)ud;
    R.drains++;
    sb_pump(c);
}

static void sb_rx_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)ud;
    if (R.got >= R.total) {
        R.bad++;
        return;
    }
    size_t k = R.ids[R.got];
    /* (tether_ws_msg_is_text() is false on tcp://, as R.text is.) */
    if (len != sb_len(k) || !sb_check(data, len, k) || tether_ws_msg_is_text(c) != R.text[R.got]) {
        R.bad++;
    }
    if (++R.got == R.total) {
        R.done = true;
    }
}

static void sb_rx_close(tether_conn *c, int reason, void *ud)
{
    (void)c;
    (void)reason;
    (void)ud;
    R.rx_closed = true;
}

static void sb_opts(tether_conn_opts *o, tether_framing_kind framing)
{
    tether_conn_opts_init(o);
    o->framing = framing;
    o->max_msg = SB_MAX_MSG;
}

/* Sends R's messages over url's scheme ("tcp" or "ws") with a framing,
 * from on_connect and on_drain, and checks that the receiver got all of
 * them, in order, byte for byte. */
static void sb_roundtrip(const char *scheme, tether_framing_kind framing, size_t hwm)
{
    tether_conn_opts so;
    sb_opts(&so, framing);
    so.on_message = sb_rx_message;
    so.on_close = sb_rx_close;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &so;
    tether_listener *l = NULL;
    tether_error err;
    char url[80];
    snprintf(url, sizeof url, "%s://127.0.0.1:0%s", scheme, strcmp(scheme, "ws") == 0 ? "/b" : "");
    ck_assert_msg(tether_listen(&l, th_loop, url, &lo, &err) == TETHER_OK, "listen %s: %s", url,
                  err.message);
    snprintf(url, sizeof url, "%s://127.0.0.1:%d%s", scheme, tether_listener_port(l),
             strcmp(scheme, "ws") == 0 ? "/b" : "");

    tether_conn_opts co;
    sb_opts(&co, framing);
    co.on_connect = sb_on_connect;
    co.on_drain = sb_on_drain;
    if (hwm > 0) {
        co.send_hwm = hwm;
        co.send_lwm = hwm / 4;
    }
    tether_conn *c = NULL;
    th_dial(&c, url, &co);
    ck_assert(th_run_until(&R.done, 30000));
    ck_assert_int_eq(R.bad_rv, 0);
    ck_assert_uint_eq(R.next, R.total);
    ck_assert_uint_eq(R.got, R.total);
    ck_assert_uint_eq(R.bad, 0);
    /* Every refusal was followed by exactly one on_drain. */
    ck_assert_int_eq(R.drains, R.eagain);
    tether_stats st;
    ck_assert_int_eq(tether_conn_get_stats(c, &st), TETHER_OK);
    ck_assert_uint_eq(st.msgs_out, R.total);
    tether_conn_close(c);
    tether_listener_close(l);
    ck_assert(th_run_idle(10000));
    sb_run_free();
}

/* ---- order and framing ------------------------------------------------------- */

START_TEST(test_order_len32)
{
    /* Batches of 1, 7 and 500 messages; the default send_hwm, a small one
     * that refuses in the middle of most batches, and one between the
     * library's two write thresholds (32 KiB for single sends, 64 KiB for
     * batches where send_hwm is above it). */
    static const size_t batches[] = {1, 7, 500};
    static const size_t hwms[] = {0, 4096, 48 * 1024};
    for (size_t b = 0; b < 3; b++) {
        for (size_t h = 0; h < 3; h++) {
            sb_run_init(1200, batches[b]);
            sb_roundtrip("tcp", TETHER_FRAMING_LEN32, hwms[h]);
            if (hwms[h] == 4096) {
                ck_assert_int_gt(R.eagain, 0);
            }
        }
    }
}
END_TEST

START_TEST(test_order_varint)
{
    sb_run_init(1200, 64);
    sb_roundtrip("tcp", TETHER_FRAMING_VARINT, 4096);
}
END_TEST

/* R's messages from `start` on: on a, one tether_conn_send() each until
 * the first refusal; on b, one tether_conn_send_batch(). Both must end
 * with the same result at the same message. Returns that result, and in
 * *out_k how many the batch took. */
static int sb_single_vs_batch(tether_conn *a, tether_conn *b, size_t start, size_t *out_k)
{
    size_t single = start;
    int rv1 = TETHER_OK;
    while (single < R.total) {
        rv1 = tether_conn_send(a, R.msgs[single].data, R.msgs[single].len);
        if (rv1 != TETHER_OK) {
            break;
        }
        single++;
    }
    size_t k = 12345;
    int rv2 = tether_conn_send_batch(b, R.msgs + start, R.total - start, &k);
    ck_assert_int_eq(rv2, rv1);
    ck_assert_uint_eq(start + k, single);
    *out_k = k;
    return rv1;
}

START_TEST(test_order_line)
{
    sb_run_init(1200, 64);
    sb_roundtrip("tcp", TETHER_FRAMING_LINE, 4096);
}
END_TEST

START_TEST(test_order_ws)
{
    /* One WebSocket frame per message, masked by the client. */
    sb_run_init(1200, 64);
    sb_roundtrip("ws", TETHER_FRAMING_LEN32, 4096);
}
END_TEST

/* A stream of small messages, as tether_bench's thr sends them: many runs
 * of copies into the queue, flushes in the middle of batches. */
START_TEST(test_order_small_stream)
{
    /* 64-byte messages (message 3 of the cycle) only. */
    sb_run_init_same(60000, 1000, 3);
    sb_roundtrip("tcp", TETHER_FRAMING_LEN32, 256 * 1024);
}
END_TEST

/* The same with tether_conn_send() one by one: on_drain refills the queue
 * past a mark below the library's write batch, so a send from on_drain is
 * refused, and the flush that ends on_drain writes everything. on_drain
 * must still come again (the connection has no event left that would
 * fire it; this hung before wqueue.c queued it from the loop). */
START_TEST(test_drain_refused_in_drain_single_sends)
{
    sb_run_init(1200, 1);
    R.single = true;
    sb_roundtrip("tcp", TETHER_FRAMING_LEN32, 4096);
    ck_assert_int_gt(R.eagain, 1);
}
END_TEST

/* ---- backpressure: what a batch takes is what single sends take -------------- */

/* On a connection that is still connecting nothing is written, so the
 * queue holds exactly what was accepted. For several marks and batches,
 * a batch takes as many messages, and queues as many bytes, as
 * tether_conn_send() one by one on an identical connection. */
START_TEST(test_partial_accept_matches_single_sends)
{
    tether_listener *l = th_listen_tcp(NULL);
    sb_run_init(48, 48);
    static const size_t hwms[] = {1, 100, 1000, 5000, 30000, 100000};
    for (size_t h = 0; h < sizeof hwms / sizeof hwms[0]; h++) {
        for (size_t start = 0; start < 12; start += 5) {
            tether_conn_opts co;
            sb_opts(&co, TETHER_FRAMING_LEN32);
            co.send_hwm = hwms[h];
            co.send_lwm = 0;
            tether_conn *a = NULL;
            tether_conn *b = NULL;
            th_dial(&a, th_url_of(l), &co);
            th_dial(&b, th_url_of(l), &co);
            size_t k;
            int rv1 = sb_single_vs_batch(a, b, start, &k);
            ck_assert_uint_eq(tether_conn_queued(b), tether_conn_queued(a));
            if (rv1 == TETHER_EAGAIN) {
                /* Refused at or past the mark, whole messages below it. */
                ck_assert_uint_ge(tether_conn_queued(b), hwms[h]);
                size_t k2 = 1;
                ck_assert_int_eq(tether_conn_send_batch(b, R.msgs, 1, &k2), TETHER_EAGAIN);
                ck_assert_uint_eq(k2, 0);
            }
            tether_conn_abort(a);
            tether_conn_abort(b);
        }
    }
    sb_run_free();
    tether_listener_close(l);
    ck_assert(th_run_idle(5000));
}
END_TEST

/* The exact count at a small mark: 64-byte messages are 68 bytes queued,
 * so under a mark of 680 the batch takes 10 and refuses the 11th (the
 * queue is not written while connecting), and on_drain lets the rest
 * through, in order. */
START_TEST(test_partial_accept_then_drain)
{
    tether_conn_opts so;
    sb_opts(&so, TETHER_FRAMING_LEN32);
    so.on_message = sb_rx_message;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &so;
    tether_listener *l = th_listen_tcp(&lo);

    /* 64-byte messages (message 3 of the cycle): 68 bytes queued each. */
    sb_run_init_same(40, 40, 3);
    tether_conn_opts co;
    sb_opts(&co, TETHER_FRAMING_LEN32);
    co.on_drain = sb_on_drain;
    co.send_hwm = 680; /* 10 messages of 68 bytes reach it exactly */
    co.send_lwm = 100;
    tether_conn *c = NULL;
    th_dial(&c, th_url_of(l), &co);
    size_t k = 0;
    ck_assert_int_eq(tether_conn_send_batch(c, R.msgs, R.total, &k), TETHER_EAGAIN);
    ck_assert_uint_eq(k, 10);
    ck_assert_uint_eq(tether_conn_queued(c), 680);
    R.next = k;
    R.eagain = 1;
    R.batch = 7;
    ck_assert(th_run_until(&R.done, 20000));
    ck_assert_int_eq(R.bad_rv, 0);
    ck_assert_uint_eq(R.got, R.total);
    ck_assert_uint_eq(R.bad, 0);
    ck_assert_int_ge(R.drains, 1);
    ck_assert_int_eq(R.drains, R.eagain);
    tether_conn_close(c);
    tether_listener_close(l);
    ck_assert(th_run_idle(10000));
    sb_run_free();
}
END_TEST

/* ---- a refused message in the middle ---------------------------------------- */

/* The message the error is about is msgs[*out_sent]: those before it are
 * queued and delivered, none after it is, and sending on from the one
 * after it delivers the rest in order. */
static void sb_refused_middle(tether_framing_kind framing, const tether_batch_msg *bad, int want_rv)
{
    tether_conn_opts so;
    sb_opts(&so, framing);
    so.on_message = sb_rx_message;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &so;
    tether_listener *l = th_listen_tcp(&lo);

    /* 6 good messages with a bad one at index 3 of the batch. */
    sb_run_init(6, 7);
    tether_batch_msg m[7];
    for (size_t i = 0; i < 3; i++) {
        m[i] = R.msgs[i];
    }
    m[3] = *bad;
    for (size_t i = 3; i < 6; i++) {
        m[i + 1] = R.msgs[i];
    }
    tether_conn_opts co;
    sb_opts(&co, framing);
    co.max_msg = 50000;
    tether_conn *c = NULL;
    th_dial(&c, th_url_of(l), &co);
    size_t k = 99;
    ck_assert_int_eq(tether_conn_send_batch(c, m, 7, &k), want_rv);
    ck_assert_uint_eq(k, 3);
    size_t queued = tether_conn_queued(c);
    ck_assert_uint_gt(queued, 0);
    /* Nothing after it was queued: another refused call adds nothing. */
    ck_assert_int_eq(tether_conn_send_batch(c, m + 3, 1, &k), want_rv);
    ck_assert_uint_eq(k, 0);
    ck_assert_uint_eq(tether_conn_queued(c), queued);
    ck_assert_int_eq(tether_conn_send_batch(c, m + 4, 3, &k), TETHER_OK);
    ck_assert_uint_eq(k, 3);
    ck_assert(th_run_until(&R.done, 20000));
    ck_assert_uint_eq(R.got, 6);
    ck_assert_uint_eq(R.bad, 0);
    tether_conn_close(c);
    tether_listener_close(l);
    ck_assert(th_run_idle(10000));
    sb_run_free();
}

START_TEST(test_oversize_in_middle)
{
    static uint8_t big[60000];
    tether_batch_msg bad = {big, sizeof big}; /* above max_msg 50000 */
    sb_refused_middle(TETHER_FRAMING_LEN32, &bad, TETHER_EMSGSIZE);
    sb_refused_middle(TETHER_FRAMING_VARINT, &bad, TETHER_EMSGSIZE);
}
END_TEST

START_TEST(test_null_data_in_middle)
{
    tether_batch_msg bad = {NULL, 10};
    sb_refused_middle(TETHER_FRAMING_LEN32, &bad, TETHER_EINVAL);
}
END_TEST

START_TEST(test_line_with_delimiter_in_middle)
{
    tether_batch_msg bad = {"two\nlines", 9};
    sb_refused_middle(TETHER_FRAMING_LINE, &bad, TETHER_EINVAL);
}
END_TEST

/* ---- degenerate calls ---------------------------------------------------------- */

START_TEST(test_zero_and_bad_arguments)
{
    tether_listener *l = th_listen_tcp(NULL);
    tether_conn *c = NULL;
    th_dial(&c, th_url_of(l), NULL);
    tether_batch_msg m[2] = {{"ab", 2}, {"", 0}};
    size_t k = 7;

    /* Zero messages: nothing happens, with or without an array. */
    ck_assert_int_eq(tether_conn_send_batch(c, NULL, 0, &k), TETHER_OK);
    ck_assert_uint_eq(k, 0);
    k = 7;
    ck_assert_int_eq(tether_conn_send_batch(c, m, 0, &k), TETHER_OK);
    ck_assert_uint_eq(k, 0);
    ck_assert_uint_eq(tether_conn_queued(c), 0);

    k = 7;
    ck_assert_int_eq(tether_conn_send_batch(NULL, m, 2, &k), TETHER_EINVAL);
    ck_assert_uint_eq(k, 0);
    k = 7;
    ck_assert_int_eq(tether_conn_send_batch(c, NULL, 2, &k), TETHER_EINVAL);
    ck_assert_uint_eq(k, 0);
    ck_assert_uint_eq(tether_conn_queued(c), 0);

    /* out_sent may be NULL; an empty message is a message (4 bytes). */
    ck_assert_int_eq(tether_conn_send_batch(c, m, 2, NULL), TETHER_OK);
    ck_assert_uint_eq(tether_conn_queued(c), 4 + 2 + 4);

    /* Closing: refused, nothing taken. */
    tether_conn_close(c);
    k = 7;
    ck_assert_int_eq(tether_conn_send_batch(c, m, 2, &k), TETHER_ECLOSED);
    ck_assert_uint_eq(k, 0);
    tether_listener_close(l);
    ck_assert(th_run_idle(10000));
}
END_TEST

/* ---- WebSocket: every frame as it crossed the wire -------------------------- */

/* A TCP relay between a ws:// client and server that records what each
 * side wrote, so that the frames can be decoded as they were sent. */
struct sb_dir {
    uint8_t *buf;
    size_t len, cap, fwd; /* fwd: bytes passed on */
    bool eof, shut;
};

static struct {
    int lfd, port, a, b; /* listening; the client's connection; ours to the server */
    int srv_port;
    struct sb_dir up, down; /* client to server, server to client */
} X;

static void sb_relay_start(int srv_port)
{
    memset(&X, 0, sizeof X);
    X.lfd = th_raw_listen(4, &X.port);
    ck_assert_int_eq(fcntl(X.lfd, F_SETFL, O_NONBLOCK), 0);
    X.a = X.b = -1;
    X.srv_port = srv_port;
}

static void sb_dir_pump(int from, int to, struct sb_dir *d)
{
    while (!d->eof) {
        if (d->cap - d->len < 65536) {
            d->cap = d->cap != 0 ? d->cap * 2 : 1u << 20;
            d->buf = realloc(d->buf, d->cap);
            ck_assert_ptr_nonnull(d->buf);
        }
        ssize_t n = recv(from, d->buf + d->len, d->cap - d->len, MSG_DONTWAIT);
        if (n > 0) {
            d->len += (size_t)n;
        } else {
            d->eof = n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
            break;
        }
    }
    while (d->fwd < d->len) {
        ssize_t n = send(to, d->buf + d->fwd, d->len - d->fwd, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n <= 0) {
            break;
        }
        d->fwd += (size_t)n;
    }
    if (d->eof && d->fwd == d->len && !d->shut) {
        shutdown(to, SHUT_WR);
        d->shut = true;
    }
}

static void sb_relay_pump(void)
{
    if (X.a < 0) {
        X.a = accept4(X.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (X.a < 0) {
            return;
        }
        X.b = th_raw_connect(X.srv_port);
        ck_assert_int_eq(fcntl(X.b, F_SETFL, O_NONBLOCK), 0);
    }
    sb_dir_pump(X.a, X.b, &X.up);
    sb_dir_pump(X.b, X.a, &X.down);
}

/* th_run_until() with the relay running (bounded: a hang guard only). */
static bool sb_relay_until(const volatile bool *flag, int ms)
{
    uint64_t deadline = th_now_ms() + (uint64_t)ms;
    while (!*flag && th_now_ms() < deadline) {
        tether_loop_run_once(th_loop, 1);
        sb_relay_pump();
    }
    return *flag;
}

static void sb_relay_stop(void)
{
    close(X.lfd);
    if (X.a >= 0) {
        close(X.a);
        close(X.b);
    }
    free(X.up.buf);
    free(X.down.buf);
}

/* The bytes of message k's frame: header (the length in its shortest
 * form, the key when masked) and payload. */
static size_t sb_frame_len(size_t len, bool masked)
{
    return (len < 126 ? 2 : len <= 0xFFFF ? 4 : 10) + (masked ? 4 : 0) + len;
}

/* Checks what one side wrote (s[0..n), from its HTTP head on) against R's
 * messages in order: every data frame exactly as RFC 6455 and
 * tether_conn_send() make it (FIN, the opcode of the type the message was
 * sent as, no reserved bits, the length in its shortest form, a mask
 * exactly when masked), its payload once unmasked, and no key the same as
 * the frame's before. Control frames (tether's own, with RSV2, and
 * WebSocket's, e.g. the close at the end) are passed over. */
static void sb_wire_check(const uint8_t *s, size_t n, bool masked)
{
    size_t off = 0;
    while (off + 4 <= n && memcmp(s + off, "\r\n\r\n", 4) != 0) {
        off++;
    }
    ck_assert_msg(off + 4 <= n, "no HTTP head in %zu bytes", n);
    off += 4;
    uint8_t *pl = malloc(SB_MAX_MSG);
    ck_assert_ptr_nonnull(pl);
    size_t got = 0;
    size_t same_key = 0;
    uint8_t prev[4] = {0};
    while (off < n) {
        /* The header; a frame cut short can only be a last control frame. */
        uint8_t b0 = s[off];
        size_t hl = 2;
        uint64_t len = n - off >= 2 ? s[off + 1] & 0x7Fu : 0;
        if (len == 126) {
            hl = 4;
        } else if (len == 127) {
            hl = 10;
        }
        bool m = n - off >= 2 && (s[off + 1] & 0x80u) != 0;
        if (n - off < hl + (m ? 4 : 0)) {
            ck_assert_uint_eq(got, R.total);
            break;
        }
        if (hl == 4) {
            len = (uint64_t)s[off + 2] << 8 | s[off + 3];
        } else if (hl == 10) {
            len = 0;
            for (size_t j = 0; j < 8; j++) {
                len = len << 8 | s[off + 2 + j];
            }
        }
        uint8_t key[4] = {0};
        if (m) {
            memcpy(key, s + off + hl, 4);
        }
        size_t fl = hl + (m ? 4 : 0);
        if (n - off - fl < len) {
            ck_assert_uint_eq(got, R.total);
            break;
        }
        const uint8_t *p = s + off + fl;
        off += fl + (size_t)len;
        if ((b0 & 0x70u) != 0 || (b0 & 0x08u) != 0) {
            continue;
        }
        ck_assert_msg(got < R.total, "a data frame after the last message");
        size_t k = R.ids[got];
        size_t want = sb_len(k);
        ck_assert_msg(b0 == (0x80u | (R.text[got] ? 0x1u : 0x2u)),
                      "message %zu (%zu bytes): first byte 0x%02x", got, want, b0);
        ck_assert_msg(m == masked, "message %zu: mask bit %d", got, (int)m);
        ck_assert_msg(len == want, "message %zu: length %llu, not %zu", got,
                      (unsigned long long)len, want);
        ck_assert_msg(fl + len == sb_frame_len(want, masked),
                      "message %zu: %zu-byte header for %zu bytes", got, fl, want);
        for (size_t j = 0; j < want; j++) {
            pl[j] = p[j] ^ key[j & 3];
        }
        ck_assert_msg(sb_check(pl, want, k), "message %zu (%zu bytes): payload", got, want);
        if (masked && got > 0 && memcmp(key, prev, 4) == 0) {
            same_key++;
        }
        memcpy(prev, key, 4);
        got++;
    }
    free(pl);
    ck_assert_uint_eq(got, R.total);
    ck_assert_uint_eq(same_key, 0);
}

static tether_conn *sb_srv; /* the server's end, when it sends */

static void sb_on_accept_pump(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    sb_srv = c;
    sb_pump(c);
}

/* R's messages over ws:// through the relay, sent by the client (masked)
 * or by the server (from on_accept; unmasked), as text or binary (or
 * switching, R.toggle), from the callbacks as sb_roundtrip() sends them;
 * the receiver checks each message and its type, and the recording each
 * frame. */
static void sb_ws_wire(bool server_sends, bool text, size_t hwm)
{
    tether_ws_opts w;
    tether_ws_opts_init(&w);
    w.text = text;
    R.cur_text = text;

    tether_conn_opts so;
    sb_opts(&so, TETHER_FRAMING_LEN32);
    tether_conn_opts co;
    sb_opts(&co, TETHER_FRAMING_LEN32);
    tether_conn_opts *tx = server_sends ? &so : &co;
    tether_conn_opts *rx = server_sends ? &co : &so;
    tx->ws = &w;
    tx->on_drain = sb_on_drain;
    if (hwm > 0) {
        tx->send_hwm = hwm;
        tx->send_lwm = hwm / 4;
    }
    rx->on_message = sb_rx_message;
    if (!server_sends) {
        co.on_connect = sb_on_connect;
    }
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &so;
    if (server_sends) {
        lo.on_accept = sb_on_accept_pump;
    }
    sb_srv = NULL;
    tether_listener *l = NULL;
    tether_error err;
    ck_assert_msg(tether_listen(&l, th_loop, "ws://127.0.0.1:0/w", &lo, &err) == TETHER_OK,
                  "listen: %s", err.message);
    sb_relay_start(tether_listener_port(l));
    char url[80];
    snprintf(url, sizeof url, "ws://127.0.0.1:%d/w", X.port);
    tether_conn *c = NULL;
    th_dial(&c, url, &co);
    ck_assert(sb_relay_until(&R.done, 30000));
    ck_assert_int_eq(R.bad_rv, 0);
    ck_assert_uint_eq(R.next, R.total);
    ck_assert_uint_eq(R.got, R.total);
    ck_assert_uint_eq(R.bad, 0);
    ck_assert_int_eq(R.drains, R.eagain);
    tether_stats st;
    ck_assert_int_eq(tether_conn_get_stats(server_sends ? sb_srv : c, &st), TETHER_OK);
    ck_assert_uint_eq(st.msgs_out, R.total);
    if (server_sends) {
        sb_wire_check(X.down.buf, X.down.len, false);
    } else {
        sb_wire_check(X.up.buf, X.up.len, true);
    }
    tether_conn_close(c);
    tether_listener_close(l);
    sb_relay_stop();
    ck_assert(th_run_idle(10000));
    sb_run_free();
}

START_TEST(test_ws_wire_client_binary)
{
    /* Every size of the cycle, batches of 64, a mark that refuses inside
     * most of them. */
    sb_run_init(600, 64);
    sb_ws_wire(false, false, 4096);
}
END_TEST

START_TEST(test_ws_wire_client_text)
{
    sb_run_init(600, 500);
    sb_ws_wire(false, true, 0);
}
END_TEST

START_TEST(test_ws_wire_client_switching)
{
    /* Binary, text, binary... between calls (tether_ws_set_text()). */
    sb_run_init(600, 7);
    R.toggle = true;
    sb_ws_wire(false, false, 0);
}
END_TEST

START_TEST(test_ws_wire_client_small_stream)
{
    /* 64-byte messages, 1000 a call: runs into the queue's tail that end
     * at each 32 KiB write and at each segment's end, keys from more
     * than one refill of the loop's pool. */
    sb_run_init_same(20000, 1000, 3);
    sb_ws_wire(false, false, 0);
}
END_TEST

START_TEST(test_ws_wire_server_binary)
{
    sb_run_init(600, 64);
    sb_ws_wire(true, false, 4096);
}
END_TEST

START_TEST(test_ws_wire_server_text)
{
    sb_run_init(600, 500);
    sb_ws_wire(true, true, 0);
}
END_TEST

START_TEST(test_ws_wire_server_switching_small_stream)
{
    sb_run_init_same(20000, 1000, 1);
    R.toggle = true;
    sb_ws_wire(true, false, 0);
}
END_TEST

/* ---- WebSocket: what a batch takes is what single sends take ----------------- */

static tether_conn *sb_acc[2];
static size_t sb_nacc;
static size_t sb_nconn;

static void sb_on_accept_keep(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    if (sb_nacc < 2) {
        sb_acc[sb_nacc++] = c;
    }
}

static void sb_on_connect_count(tether_conn *c, int status, void *ud)
{
    (void)ud;
    ck_assert_msg(status == TETHER_OK, "connect: %s", tether_conn_last_error(c));
    sb_nconn++;
}

static bool sb_pairs_up(void *arg)
{
    (void)arg;
    return sb_nconn == 2 && sb_nacc == 2;
}

/* Queued plus written: what a connection has taken, in bytes. */
static size_t sb_taken(tether_conn *c)
{
    tether_stats st;
    ck_assert_int_eq(tether_conn_get_stats(c, &st), TETHER_OK);
    return tether_conn_queued(c) + (size_t)st.bytes_out;
}

/* Single sends on a, one batch on b, from message start: the same result,
 * index and bytes, those bytes the frames of the messages taken, and
 * those the messages sent while the queue was below hwm. (Outside any
 * callback nothing is written before 32 KiB are queued, so until then
 * the queue is what was accepted.) */
static void sb_ws_compare(tether_conn *a, tether_conn *b, size_t start, size_t hwm, bool masked)
{
    size_t a0 = sb_taken(a);
    size_t b0 = sb_taken(b);
    size_t q0 = tether_conn_queued(b);
    size_t want = 0;
    size_t want_bytes = 0;
    for (size_t i = start; i < R.total && q0 + want_bytes < hwm; i++) {
        want_bytes += sb_frame_len(R.msgs[i].len, masked);
        want++;
    }
    size_t k;
    int rv1 = sb_single_vs_batch(a, b, start, &k);
    if (want_bytes < 32 * 1024) {
        ck_assert_uint_eq(k, want);
    } else {
        /* (The queue reached 32 KiB and was written: more went in.) */
        ck_assert_uint_ge(k, want);
    }
    size_t bytes = 0;
    for (size_t i = start; i < start + k; i++) {
        bytes += sb_frame_len(R.msgs[i].len, masked);
    }
    ck_assert_uint_eq(sb_taken(a) - a0, bytes);
    ck_assert_uint_eq(sb_taken(b) - b0, bytes);
    if (rv1 == TETHER_EAGAIN) {
        size_t q = tether_conn_queued(b);
        size_t k2 = 1;
        ck_assert_int_eq(tether_conn_send_batch(b, R.msgs, 1, &k2), TETHER_EAGAIN);
        ck_assert_uint_eq(k2, 0);
        ck_assert_uint_eq(tether_conn_queued(b), q);
    } else {
        ck_assert_int_eq(rv1, TETHER_OK);
    }
}

START_TEST(test_ws_partial_accept_matches_single_sends)
{
    sb_run_init(48, 48);
    static const size_t hwms[] = {1, 100, 1000, 5000, 30000};
    for (size_t h = 0; h < sizeof hwms / sizeof hwms[0]; h++) {
        for (size_t start = 0; start < 30; start += 11) {
            tether_conn_opts so;
            sb_opts(&so, TETHER_FRAMING_LEN32);
            so.send_hwm = hwms[h];
            so.send_lwm = 0;
            tether_listen_opts lo;
            tether_listen_opts_init(&lo);
            lo.conn_opts = &so;
            lo.on_accept = sb_on_accept_keep;
            tether_listener *l = NULL;
            tether_error err;
            ck_assert_msg(tether_listen(&l, th_loop, "ws://127.0.0.1:0/p", &lo, &err) == TETHER_OK,
                          "listen: %s", err.message);
            char url[80];
            snprintf(url, sizeof url, "ws://127.0.0.1:%d/p", tether_listener_port(l));
            tether_conn_opts co;
            sb_opts(&co, TETHER_FRAMING_LEN32);
            co.send_hwm = hwms[h];
            co.send_lwm = 0;
            co.on_connect = sb_on_connect_count;
            sb_nacc = sb_nconn = 0;
            tether_conn *a = NULL;
            tether_conn *b = NULL;
            th_dial(&a, url, &co);
            th_dial(&b, url, &co);
            ck_assert(th_run_until_pred(sb_pairs_up, NULL, 10000));
            sb_ws_compare(a, b, start, hwms[h], true);
            sb_ws_compare(sb_acc[0], sb_acc[1], start, hwms[h], false);
            tether_conn_abort(a);
            tether_conn_abort(b);
            tether_listener_close(l);
            ck_assert(th_run_idle(10000));
        }
    }
    sb_run_free();
}
END_TEST

static bool sb_one_up(void *arg)
{
    (void)arg;
    return sb_nconn == 1 && sb_nacc == 1;
}

/* A message over max_msg in the middle of a batch on an open ws://
 * connection, with max_msg below 125 (no 16-bit length at all) and
 * above it: the messages before it are queued as their frames, it is
 * refused with its index, nothing after it is taken. */
START_TEST(test_ws_max_msg_in_middle)
{
    static uint8_t buf[300];
    memset(buf, 'x', sizeof buf);
    static const size_t maxes[] = {100, 125, 200};
    for (size_t h = 0; h < sizeof maxes / sizeof maxes[0]; h++) {
        size_t max = maxes[h];
        tether_conn_opts so;
        sb_opts(&so, TETHER_FRAMING_LEN32);
        so.max_msg = max;
        tether_listen_opts lo;
        tether_listen_opts_init(&lo);
        lo.conn_opts = &so;
        lo.on_accept = sb_on_accept_keep;
        tether_listener *l = NULL;
        tether_error err;
        ck_assert_msg(tether_listen(&l, th_loop, "ws://127.0.0.1:0/m", &lo, &err) == TETHER_OK,
                      "listen: %s", err.message);
        char url[80];
        snprintf(url, sizeof url, "ws://127.0.0.1:%d/m", tether_listener_port(l));
        tether_conn_opts co;
        sb_opts(&co, TETHER_FRAMING_LEN32);
        co.max_msg = max;
        co.on_connect = sb_on_connect_count;
        sb_nacc = sb_nconn = 0;
        tether_conn *c = NULL;
        th_dial(&c, url, &co);
        ck_assert(th_run_until_pred(sb_one_up, NULL, 10000));
        tether_batch_msg m[6] = {{buf, 0},   {buf, 1},       {buf, max - 1},
                                 {buf, max}, {buf, max + 1}, {buf, 5}};
        for (int side = 0; side < 2; side++) {
            tether_conn *x = side == 0 ? c : sb_acc[0];
            bool masked = side == 0;
            size_t q0 = sb_taken(x);
            size_t k = 99;
            ck_assert_int_eq(tether_conn_send_batch(x, m, 6, &k), TETHER_EMSGSIZE);
            ck_assert_uint_eq(k, 4);
            size_t want = 0;
            for (size_t i = 0; i < 4; i++) {
                want += sb_frame_len(m[i].len, masked);
            }
            ck_assert_uint_eq(sb_taken(x) - q0, want);
            ck_assert_int_eq(tether_conn_send_batch(x, m + 5, 1, &k), TETHER_OK);
            ck_assert_uint_eq(k, 1);
            ck_assert_uint_eq(sb_taken(x) - q0, want + sb_frame_len(5, masked));
        }
        tether_conn_abort(c);
        tether_listener_close(l);
        ck_assert(th_run_idle(10000));
    }
}
END_TEST

Suite *send_batch_suite(void);
Suite *send_batch_suite(void)
{
    Suite *s = suite_create("send_batch");
    TCase *tc = tcase_create("send_batch");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_order_len32);
    tcase_add_test(tc, test_order_varint);
    tcase_add_test(tc, test_order_line);
    tcase_add_test(tc, test_order_ws);
    tcase_add_test(tc, test_order_small_stream);
    tcase_add_test(tc, test_drain_refused_in_drain_single_sends);
    tcase_add_test(tc, test_partial_accept_matches_single_sends);
    tcase_add_test(tc, test_partial_accept_then_drain);
    tcase_add_test(tc, test_oversize_in_middle);
    tcase_add_test(tc, test_null_data_in_middle);
    tcase_add_test(tc, test_line_with_delimiter_in_middle);
    tcase_add_test(tc, test_zero_and_bad_arguments);
    tcase_add_test(tc, test_ws_wire_client_binary);
    tcase_add_test(tc, test_ws_wire_client_text);
    tcase_add_test(tc, test_ws_wire_client_switching);
    tcase_add_test(tc, test_ws_wire_client_small_stream);
    tcase_add_test(tc, test_ws_wire_server_binary);
    tcase_add_test(tc, test_ws_wire_server_text);
    tcase_add_test(tc, test_ws_wire_server_switching_small_stream);
    tcase_add_test(tc, test_ws_partial_accept_matches_single_sends);
    tcase_add_test(tc, test_ws_max_msg_in_middle);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(send_batch_suite());
}
