/* SPDX-License-Identifier: MIT */
/* Per-message completion callbacks (tether_conn_send_cb): every accepted
 * message gets exactly one callback, in send order, never from inside the
 * call, on every path: written, lost before it was written (reset), a
 * failed connect, abort, a close that flushes, a close that times out,
 * and tearing the loop down with tether_loop_close_all(). Run under ASan
 * too, which catches a record freed twice or never. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"

#define MAXMSG 4096

/* What the completions of one test saw. */
struct track {
    int count[MAXMSG];  /* callbacks per message */
    int status[MAXMSG]; /* the status each got */
    int order[MAXMSG];  /* message numbers in callback order */
    int ncb;
    int sent;          /* messages accepted by tether_conn_send_cb */
    bool in_call;      /* inside tether_conn_send_cb */
    bool cb_in_call;   /* a callback ran inside it */
    int closed_reason; /* on_close's reason */
    bool closed;
    int connect_status;
    bool connected;
    int cb_after_close; /* callbacks that ran after on_close */
    tether_conn *conn;
};

static struct track tk;

static void tk_reset(void)
{
    memset(&tk, 0, sizeof tk);
    tk.closed_reason = 1;
}

static void on_done(tether_conn *c, int status, void *ud)
{
    (void)c;
    int i = (int)(intptr_t)ud;
    ck_assert_int_lt(i, MAXMSG);
    if (tk.in_call) {
        tk.cb_in_call = true;
    }
    if (tk.closed) {
        tk.cb_after_close++;
    }
    tk.count[i]++;
    tk.status[i] = status;
    tk.order[tk.ncb++] = i;
}

static void on_connect(tether_conn *c, int status, void *ud)
{
    (void)c;
    (void)ud;
    tk.connect_status = status;
    tk.connected = true;
}

static void on_close(tether_conn *c, int reason, void *ud)
{
    (void)c;
    (void)ud;
    tk.closed_reason = reason;
    tk.closed = true;
}

static int send_one(tether_conn *c, const uint8_t *buf, size_t len)
{
    tk.in_call = true;
    int rv = tether_conn_send_cb(c, buf, len, on_done, (void *)(intptr_t)tk.sent);
    tk.in_call = false;
    if (rv == TETHER_OK) {
        tk.sent++;
    }
    return rv;
}

/* Every accepted message got exactly one callback, in send order, and
 * none ran inside tether_conn_send_cb. */
static void check_exactly_once(void)
{
    ck_assert_int_eq(tk.ncb, tk.sent);
    for (int i = 0; i < tk.sent; i++) {
        ck_assert_msg(tk.count[i] == 1, "message %d: %d callbacks", i, tk.count[i]);
        ck_assert_int_eq(tk.order[i], i);
    }
    ck_assert(!tk.cb_in_call);
}

static bool all_done(void *arg)
{
    (void)arg;
    return tk.ncb == tk.sent && tk.closed;
}

/* ---- received on the other side ------------------------------------------- */

static size_t srv_bytes;
static int srv_msgs;

static void srv_on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)c;
    (void)data;
    (void)ud;
    srv_bytes += len;
    srv_msgs++;
}

static tether_listener *listen_counting(void)
{
    srv_bytes = 0;
    srv_msgs = 0;
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.on_message = srv_on_message;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &so;
    return th_listen_tcp(&lo);
}

static void client_opts(tether_conn_opts *co)
{
    tether_conn_opts_init(co);
    co->on_connect = on_connect;
    co->on_close = on_close;
}

/* ---- written --------------------------------------------------------------- */

static bool srv_got_all(void *arg)
{
    return srv_msgs == *(int *)arg;
}

START_TEST(test_written_small_and_large)
{
    tk_reset();
    tether_listener *l = listen_counting();
    tether_conn_opts co;
    client_opts(&co);
    co.send_hwm = 64u * 1024 * 1024;
    tether_conn *c = NULL;
    th_dial(&c, th_url_of(l), &co);
    static uint8_t buf[256 * 1024];
    th_fill(buf, sizeof buf, 7);
    /* Queued while connecting. */
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(send_one(c, buf, 100), TETHER_OK);
    }
    ck_assert(th_run_until(&tk.connected, 10000));
    ck_assert_int_eq(tk.connect_status, TETHER_OK);
    /* Small ones batched, large ones written straight from our buffer (the
     * socket may take them whole), zero-length ones, mixed. */
    for (int i = 0; i < 200; i++) {
        size_t len = (i % 10 == 3) ? sizeof buf : (i % 10 == 5) ? 0 : (size_t)(i * 37 % 5000);
        ck_assert_int_eq(send_one(c, buf, len), TETHER_OK);
    }
    int want = tk.sent;
    ck_assert(th_run_until_pred(srv_got_all, &want, 20000));
    tether_conn_close(c);
    ck_assert(th_run_until_pred(all_done, NULL, 20000));
    check_exactly_once();
    for (int i = 0; i < tk.sent; i++) {
        ck_assert_int_eq(tk.status[i], TETHER_OK);
    }
    ck_assert_int_eq(tk.cb_after_close, 0);
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

/* A callback that sends the next tracked message from inside itself: the
 * chain runs to the end, in order, with nothing lost. */
static void chain_done(tether_conn *c, int status, void *ud)
{
    on_done(c, status, ud);
    if (status == TETHER_OK && tk.sent < 1000) {
        uint8_t b[64];
        memset(b, 'c', sizeof b);
        ck_assert_int_eq(tether_conn_send_cb(c, b, sizeof b, chain_done, (void *)(intptr_t)tk.sent),
                         TETHER_OK);
        tk.sent++;
    }
}

START_TEST(test_send_from_completion)
{
    tk_reset();
    tether_listener *l = listen_counting();
    tether_conn_opts co;
    client_opts(&co);
    tether_conn *c = NULL;
    th_dial(&c, th_url_of(l), &co);
    uint8_t b[64] = {0};
    tk.in_call = true;
    ck_assert_int_eq(tether_conn_send_cb(c, b, sizeof b, chain_done, (void *)(intptr_t)0),
                     TETHER_OK);
    tk.in_call = false;
    tk.sent = 1;
    int want = 1000;
    ck_assert(th_run_until_pred(srv_got_all, &want, 20000));
    ck_assert_int_eq(srv_bytes, 1000 * 64);
    tether_conn_close(c);
    ck_assert(th_run_until_pred(all_done, NULL, 20000));
    check_exactly_once();
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

/* ---- failures ---------------------------------------------------------------- */

/* A connection to a raw listener that accepts and never reads, with
 * messages queued behind a full socket: returns the accepted raw fd. */
static int blocked_conn(tether_conn **c, int *lfd, int close_timeout_ms)
{
    int port;
    *lfd = th_raw_listen(4, &port);
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    tether_conn_opts co;
    client_opts(&co);
    co.sndbuf = 4096;
    co.send_hwm = 64u * 1024 * 1024;
    co.close_timeout_ms = close_timeout_ms;
    th_dial(c, url, &co);
    ck_assert(th_run_until(&tk.connected, 10000));
    ck_assert_int_eq(tk.connect_status, TETHER_OK);
    int fd = accept(*lfd, NULL, NULL);
    ck_assert_int_ge(fd, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    static uint8_t buf[16 * 1024];
    memset(buf, 'q', sizeof buf);
    for (int i = 0; i < 300; i++) {
        ck_assert_int_eq(send_one(*c, buf, sizeof buf), TETHER_OK);
    }
    bool never = false;
    th_run_until(&never, 300);
    /* Far more than the kernel buffers hold: most is still queued. */
    ck_assert_uint_gt(tether_conn_queued(*c), 1024 * 1024);
    return fd;
}

/* The written ones (a prefix) succeeded, the rest failed with the close
 * reason, and at least one of each kind... at least one failed. */
static void check_prefix_then(int reason)
{
    check_exactly_once();
    ck_assert_int_ne(reason, TETHER_OK);
    int i = 0;
    while (i < tk.sent && tk.status[i] == TETHER_OK) {
        i++;
    }
    ck_assert_int_lt(i, tk.sent);
    for (; i < tk.sent; i++) {
        ck_assert_int_eq(tk.status[i], reason);
    }
    ck_assert_int_eq(tk.cb_after_close, 0);
}

START_TEST(test_lost_before_written_reset)
{
    tk_reset();
    tether_conn *c = NULL;
    int lfd;
    int fd = blocked_conn(&c, &lfd, 10000);
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd); /* RST */
    ck_assert(th_run_until_pred(all_done, NULL, 20000));
    ck_assert_msg(tk.closed_reason == TETHER_ECONNRESET || tk.closed_reason == TETHER_EOF,
                  "reason %s", tether_err_name(tk.closed_reason));
    check_prefix_then(tk.closed_reason);
    close(lfd);
    th_run_idle(5000);
}
END_TEST

START_TEST(test_abort)
{
    tk_reset();
    tether_conn *c = NULL;
    int lfd;
    int fd = blocked_conn(&c, &lfd, 10000);
    int before = tk.ncb;
    tether_conn_abort(c);
    ck_assert_int_eq(tk.ncb, before); /* never from inside the call */
    /* Refused once closing: no callback for that one. */
    uint8_t b = 0;
    ck_assert_int_eq(tether_conn_send_cb(c, &b, 1, on_done, (void *)(intptr_t)4000),
                     TETHER_ECLOSED);
    ck_assert(th_run_until_pred(all_done, NULL, 20000));
    ck_assert_int_eq(tk.closed_reason, TETHER_ECANCELED);
    check_prefix_then(TETHER_ECANCELED);
    close(fd);
    close(lfd);
    th_run_idle(5000);
    ck_assert_int_eq(tk.count[4000 % MAXMSG], 0);
}
END_TEST

START_TEST(test_close_timeout)
{
    tk_reset();
    tether_conn *c = NULL;
    int lfd;
    int fd = blocked_conn(&c, &lfd, 200);
    tether_conn_close(c);
    ck_assert(th_run_until_pred(all_done, NULL, 20000));
    check_prefix_then(tk.closed_reason);
    close(fd);
    close(lfd);
    th_run_idle(5000);
}
END_TEST

/* tether_loop_close_all() then running the loop empty (what a program
 * does before tether_loop_free()): every callback has run, and the loop
 * frees cleanly in the teardown. */
START_TEST(test_loop_teardown)
{
    tk_reset();
    tether_conn *c = NULL;
    int lfd;
    int fd = blocked_conn(&c, &lfd, 300);
    tether_loop_close_all(th_loop);
    ck_assert(th_run_idle(20000));
    ck_assert(tk.closed);
    check_prefix_then(tk.closed_reason);
    close(fd);
    close(lfd);
}
END_TEST

START_TEST(test_connect_refused)
{
    tk_reset();
    int keep;
    int port = th_refused_port(&keep);
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    tether_conn_opts co;
    client_opts(&co);
    tether_conn *c = NULL;
    th_dial(&c, url, &co);
    uint8_t b[10] = {0};
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(send_one(c, b, sizeof b), TETHER_OK);
    }
    ck_assert(th_run_until(&tk.connected, 10000));
    ck_assert_int_eq(tk.connect_status, TETHER_ECONNREFUSED);
    /* They ran before on_connect reported the failure. */
    ck_assert_int_eq(tk.ncb, 5);
    check_exactly_once();
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(tk.status[i], TETHER_ECONNREFUSED);
    }
    close(keep);
    th_run_idle(5000);
}
END_TEST

START_TEST(test_bad_arguments)
{
    tk_reset();
    tether_listener *l = listen_counting();
    tether_conn_opts co;
    client_opts(&co);
    co.max_msg = 100;
    tether_conn *c = NULL;
    th_dial(&c, th_url_of(l), &co);
    uint8_t b[200] = {0};
    ck_assert_int_eq(tether_conn_send_cb(NULL, b, 1, on_done, NULL), TETHER_EINVAL);
    ck_assert_int_eq(tether_conn_send_cb(c, b, 1, NULL, NULL), TETHER_EINVAL);
    ck_assert_int_eq(tether_conn_send_cb(c, NULL, 1, on_done, NULL), TETHER_EINVAL);
    ck_assert_int_eq(tether_conn_send_cb(c, b, sizeof b, on_done, NULL), TETHER_EMSGSIZE);
    tether_conn_close(c);
    ck_assert(th_run_until(&tk.closed, 10000));
    ck_assert_int_eq(tk.ncb, 0);
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

/* ---- a reconnecting client ---------------------------------------------------- */

static struct {
    int count[64];
    int status[64];
    int order[64];
    int ncb;
    int undelivered[64]; /* on_undelivered per message, before its completion */
    bool undelivered_first;
    bool in_call;
    bool cb_in_call;
    bool closed;
    bool gave_up;
} ck;

static void ck_done(tether_client *cl, int status, void *ud)
{
    (void)cl;
    int i = (int)(intptr_t)ud;
    if (ck.in_call) {
        ck.cb_in_call = true;
    }
    ck.count[i]++;
    ck.status[i] = status;
    ck.order[ck.ncb++] = i;
    if (status != TETHER_OK && ck.undelivered[i] != 1) {
        ck.undelivered_first = false;
    }
}

static void ck_undelivered(tether_client *cl, const uint8_t *data, size_t len, int reason, void *ud)
{
    (void)cl, (void)reason, (void)ud;
    int i = -1;
    ck_assert_uint_eq(len, sizeof i);
    memcpy(&i, data, sizeof i);
    ck.undelivered[i]++;
}

static void ck_state(tether_client *cl, const tether_client_event *ev, void *ud)
{
    (void)cl, (void)ud;
    if (ev->state == TETHER_CLIENT_CLOSED) {
        ck.closed = true;
    } else if (ev->state == TETHER_CLIENT_GAVE_UP) {
        ck.gave_up = true;
    }
}

static tether_client *ck_client(const char *url, uint32_t max_attempts)
{
    memset(&ck, 0, sizeof ck);
    ck.undelivered_first = true;
    tether_client_opts o;
    tether_client_opts_init(&o);
    o.on_state = ck_state;
    o.on_undelivered = ck_undelivered;
    o.max_attempts = max_attempts;
    o.initial_backoff_ms = 50;
    o.jitter = 0;
    tether_client *cl = NULL;
    ck_assert_int_eq(tether_client_new(&cl, th_loop, url, &o, NULL), TETHER_OK);
    return cl;
}

static int ck_send(tether_client *cl, int i)
{
    ck.in_call = true;
    int rv = tether_client_send_cb(cl, &i, sizeof i, ck_done, (void *)(intptr_t)i);
    ck.in_call = false;
    return rv;
}

static bool ck_all(void *arg)
{
    return ck.ncb == *(int *)arg;
}

static void ck_check_once(int n, int want_status)
{
    ck_assert_int_eq(ck.ncb, n);
    for (int i = 0; i < n; i++) {
        ck_assert_int_eq(ck.count[i], 1);
        ck_assert_int_eq(ck.order[i], i);
        ck_assert_int_eq(ck.status[i], want_status);
    }
    ck_assert(!ck.cb_in_call);
    ck_assert(ck.undelivered_first);
}

START_TEST(test_client_written)
{
    tether_listener *l = listen_counting();
    tether_client *cl = ck_client(th_url_of(l), 0);
    for (int i = 0; i < 40; i++) { /* held until connected, then written */
        ck_assert_int_eq(ck_send(cl, i), TETHER_OK);
    }
    int n = 40;
    ck_assert(th_run_until_pred(ck_all, &n, 10000));
    ck_check_once(40, TETHER_OK);
    ck_assert(th_run_until_pred(srv_got_all, &n, 10000));
    ck_assert_int_eq(tether_client_send_cb(cl, "x", 1, NULL, NULL), TETHER_EINVAL);
    tether_client_close(cl);
    ck_assert(th_run_until(&ck.closed, 10000));
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

START_TEST(test_client_gave_up_and_closed)
{
    int keep;
    int port = th_refused_port(&keep);
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    tether_client *cl = ck_client(url, 2);
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(ck_send(cl, i), TETHER_OK);
    }
    ck_assert(th_run_until(&ck.gave_up, 10000));
    ck_check_once(10, TETHER_ECONNREFUSED);
    tether_client_close(cl);
    ck_assert(th_run_until(&ck.closed, 10000));

    /* Closed while holding messages: handed back with ECANCELED. */
    cl = ck_client(url, 0);
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(ck_send(cl, i), TETHER_OK);
    }
    tether_client_close(cl);
    ck_assert(th_run_until(&ck.closed, 10000));
    ck_check_once(10, TETHER_ECANCELED);
    close(keep);
    th_run_idle(5000);
}
END_TEST

Suite *completion_suite(void);
Suite *completion_suite(void)
{
    Suite *s = suite_create("completion");
    TCase *tc = tcase_create("send_cb");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_written_small_and_large);
    tcase_add_test(tc, test_send_from_completion);
    tcase_add_test(tc, test_lost_before_written_reset);
    tcase_add_test(tc, test_abort);
    tcase_add_test(tc, test_close_timeout);
    tcase_add_test(tc, test_loop_teardown);
    tcase_add_test(tc, test_connect_refused);
    tcase_add_test(tc, test_bad_arguments);
    tcase_add_test(tc, test_client_written);
    tcase_add_test(tc, test_client_gave_up_and_closed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(completion_suite());
}
