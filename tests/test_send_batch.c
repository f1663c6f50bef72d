/* SPDX-License-Identifier: MIT */
/* tether_conn_send_batch() (lib/send_batch.c): a batch is exactly the
 * tether_conn_send() of each message in turn, stopping at the first one not
 * accepted. Order and framing end to end (len32, varint, line, WebSocket),
 * the backpressure rule message by message (the count taken under send_hwm,
 * the rest sent from on_drain), a refused message in the middle reported
 * by its index with nothing after it queued, and the degenerate calls. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

/* Message k of a run: a length from a cycle that covers empty, small (each
 * size class of the inline copy up to 64 bytes), segment-sized and large
 * (written straight from the caller's memory) messages, and bytes that
 * never contain a newline, so that the line framing carries them too. */
static const size_t sb_lens[] = {0, 1, 63, 64, 1000, 100, 20000, 5,  3000, 64, 70000, 7,    2,
                                 3, 4, 8,  9,  15,   16,  17,    31, 32,   33, 16383, 16384};
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
    ck_assert_ptr_nonnull(R.msgs);
    ck_assert_ptr_nonnull(R.ids);
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
}

/* Sends from R.next in batches of R.batch until refused. */
static void sb_pump(tether_conn *c)
{
    while (R.next < R.total) {
        size_t n = R.total - R.next < R.batch ? R.total - R.next : R.batch;
        size_t k = n + 1;
        int rv;
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
    (void)c;
    (void)ud;
    if (R.got >= R.total) {
        R.bad++;
        return;
    }
    size_t k = R.ids[R.got];
    if (len != sb_len(k) || !sb_check(data, len, k)) {
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
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(send_batch_suite());
}
