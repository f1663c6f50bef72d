/* SPDX-License-Identifier: MIT */
/* Backpressure as conn.h defines it: tether_conn_send() refuses with
 * TETHER_EAGAIN once the bytes already queued have reached send_hwm, queues
 * a message whole below it, and on_drain says when a refused message can be
 * sent again. The second test runs the "hold the refused message until
 * on_drain" pattern of the documentation end to end. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

/* ---- the rule at the mark ------------------------------------------------ */

/* A connection that is still connecting writes nothing, so its queue holds
 * exactly what was sent: 4 bytes of len32 header plus the payload. */
START_TEST(test_hwm_is_reached_not_exceeded)
{
    tether_listener *l = th_listen_tcp(NULL);
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.send_hwm = 1000;
    co.send_lwm = 100;
    tether_conn *c = NULL;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, th_url_of(l), &co, NULL), TETHER_OK);
    uint8_t buf[4096];
    memset(buf, 'x', sizeof buf);

    /* 999 queued: below the mark, so a 1-byte message is accepted whole
     * and takes the queue past it (1004). */
    ck_assert_int_eq(tether_conn_send(c, buf, 995), TETHER_OK);
    ck_assert_uint_eq(tether_conn_queued(c), 999);
    ck_assert_int_eq(tether_conn_send(c, buf, 1), TETHER_OK);
    ck_assert_uint_eq(tether_conn_queued(c), 1004);
    /* Reached: refused, and nothing was queued. */
    ck_assert_int_eq(tether_conn_send(c, buf, 0), TETHER_EAGAIN);
    ck_assert_uint_eq(tether_conn_queued(c), 1004);
    tether_conn_abort(c);

    /* Exactly at the mark counts as reached. */
    c = NULL;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, th_url_of(l), &co, NULL), TETHER_OK);
    ck_assert_int_eq(tether_conn_send(c, buf, 996), TETHER_OK);
    ck_assert_uint_eq(tether_conn_queued(c), 1000);
    ck_assert_int_eq(tether_conn_send(c, buf, 1), TETHER_EAGAIN);
    ck_assert_uint_eq(tether_conn_queued(c), 1000);
    tether_conn_abort(c);

    /* A message larger than the mark is accepted while the queue is below it. */
    c = NULL;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, th_url_of(l), &co, NULL), TETHER_OK);
    ck_assert_int_eq(tether_conn_send(c, buf, sizeof buf), TETHER_OK);
    ck_assert_uint_eq(tether_conn_queued(c), 4 + sizeof buf);
    ck_assert_int_eq(tether_conn_send(c, buf, 1), TETHER_EAGAIN);
    tether_conn_abort(c);

    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

/* ---- holding a refused message until on_drain ----------------------------- */

#define BP_MSGS 400
#define BP_LEN 2048

struct bp_state {
    tether_conn *out;  /* the sending side */
    tether_conn *peer; /* the accepted side, paused until the first refusal */
    int next;          /* next message number to produce */
    uint8_t *held;     /* the one refused message, if any */
    size_t held_len;
    int refusals;
    int drains;
    int drain_sends_failed;
    int received;
    bool order_ok;
    bool done;
};

static struct bp_state bp;

static void bp_make(int n, uint8_t *buf)
{
    th_fill(buf, BP_LEN, (uint32_t)n);
    memcpy(buf, &n, sizeof n);
}

/* Produces messages until the connection refuses one, which it keeps. */
static void bp_pump(void)
{
    uint8_t buf[BP_LEN];
    while (bp.held == NULL && bp.next < BP_MSGS) {
        bp_make(bp.next, buf);
        int rv = tether_conn_send(bp.out, buf, sizeof buf);
        if (rv == TETHER_EAGAIN) {
            bp.refusals++;
            bp.held = malloc(sizeof buf);
            ck_assert_ptr_nonnull(bp.held);
            memcpy(bp.held, buf, sizeof buf);
            bp.held_len = sizeof buf;
            bp.next++;
            if (bp.peer != NULL) {
                /* The refusal proves the queue filled up: let the peer read. */
                tether_conn_resume(bp.peer);
            }
            return;
        }
        ck_assert_int_eq(rv, TETHER_OK);
        bp.next++;
    }
}

static void bp_on_connect(tether_conn *c, int status, void *ud)
{
    (void)c;
    (void)ud;
    ck_assert_int_eq(status, TETHER_OK);
    bp_pump();
}

static void bp_on_drain(tether_conn *c, void *ud)
{
    (void)ud;
    bp.drains++;
    ck_assert_ptr_nonnull(bp.held);
    /* The documented promise: from on_drain a send finds room. */
    if (tether_conn_send(c, bp.held, bp.held_len) != TETHER_OK) {
        bp.drain_sends_failed++;
        return;
    }
    free(bp.held);
    bp.held = NULL;
    bp_pump();
}

static void bp_peer_on_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    bp.peer = c;
    /* Read nothing until the sender is refused. The sender may have been
     * refused already: its on_connect can fill the socket and its queue
     * before the listener has accepted this side, and then nothing would
     * ever resume it. */
    if (bp.refusals == 0) {
        tether_conn_pause(c);
    }
}

static void bp_peer_on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)c;
    (void)ud;
    int n;
    memcpy(&n, data, sizeof n);
    uint8_t want[BP_LEN];
    bp_make(bp.received, want);
    if (n != bp.received || len != BP_LEN || memcmp(data, want, BP_LEN) != 0) {
        bp.order_ok = false;
    }
    bp.received++;
    if (bp.received == BP_MSGS) {
        bp.done = true;
    }
}

static void bp_peer_on_close(tether_conn *c, int reason, void *ud)
{
    (void)reason;
    (void)ud;
    if (c == bp.peer) {
        bp.peer = NULL;
    }
}

START_TEST(test_hold_refused_until_drain)
{
    memset(&bp, 0, sizeof bp);
    bp.order_ok = true;
    tether_conn_opts pco;
    tether_conn_opts_init(&pco);
    pco.on_message = bp_peer_on_message;
    pco.on_close = bp_peer_on_close;
    pco.rcvbuf = 65536;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = bp_peer_on_accept;
    lo.conn_opts = &pco;
    tether_listener *l = th_listen_tcp(&lo);

    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_connect = bp_on_connect;
    co.on_drain = bp_on_drain;
    co.send_hwm = 32 * 1024;
    co.send_lwm = 8 * 1024;
    co.sndbuf = 65536;
    ck_assert_int_eq(tether_conn_dial(&bp.out, th_loop, th_url_of(l), &co, NULL), TETHER_OK);

    ck_assert(th_run_until(&bp.done, 20000));
    ck_assert(bp.order_ok);
    ck_assert_int_eq(bp.received, BP_MSGS);
    ck_assert_int_ge(bp.refusals, 1);
    ck_assert_int_eq(bp.drains, bp.refusals);
    ck_assert_int_eq(bp.drain_sends_failed, 0);
    ck_assert_ptr_null(bp.held);

    tether_conn_close(bp.out);
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

/* ---- refused inside on_drain, then everything written ------------------- */

/* on_drain refills the queue past a mark below the library's write batch,
 * so its last send is refused, and the flush that ends on_drain writes the
 * whole queue: the connection then has no event left that would fire
 * on_drain, which must come all the same (this hung before). */
#define RD_MSGS 300
#define RD_LEN 1000

static struct {
    int sent;
    int got;
    int refusals;
    int drains;
    bool done;
} rd;

static void rd_pump(tether_conn *c)
{
    static uint8_t buf[RD_LEN];
    while (rd.sent < RD_MSGS) {
        int rv = tether_conn_send(c, buf, sizeof buf);
        if (rv == TETHER_EAGAIN) {
            rd.refusals++;
            return;
        }
        ck_assert_int_eq(rv, TETHER_OK);
        rd.sent++;
    }
}

static void rd_on_connect(tether_conn *c, int status, void *ud)
{
    (void)ud;
    ck_assert_int_eq(status, TETHER_OK);
    rd_pump(c);
}

static void rd_on_drain(tether_conn *c, void *ud)
{
    (void)ud;
    rd.drains++;
    rd_pump(c);
}

static void rd_on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)c;
    (void)data;
    (void)ud;
    ck_assert_uint_eq(len, RD_LEN);
    if (++rd.got == RD_MSGS) {
        rd.done = true;
    }
}

START_TEST(test_refused_in_drain_all_written)
{
    memset(&rd, 0, sizeof rd);
    tether_conn_opts pco;
    tether_conn_opts_init(&pco);
    pco.on_message = rd_on_message;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &pco;
    tether_listener *l = th_listen_tcp(&lo);
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_connect = rd_on_connect;
    co.on_drain = rd_on_drain;
    co.send_hwm = 4096;
    co.send_lwm = 1024;
    tether_conn *c = NULL;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, th_url_of(l), &co, NULL), TETHER_OK);
    ck_assert(th_run_until(&rd.done, 20000));
    ck_assert_int_eq(rd.got, RD_MSGS);
    ck_assert_int_gt(rd.refusals, 1);
    ck_assert_int_eq(rd.drains, rd.refusals);
    tether_conn_close(c);
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

Suite *backpressure_suite(void);
Suite *backpressure_suite(void)
{
    Suite *s = suite_create("backpressure");
    TCase *tc = tcase_create("send_hwm");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_hwm_is_reached_not_exceeded);
    tcase_add_test(tc, test_hold_refused_until_drain);
    tcase_add_test(tc, test_refused_in_drain_all_written);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(backpressure_suite());
}
