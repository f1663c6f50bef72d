/* SPDX-License-Identifier: MIT */
/* Request/response calls (tether_call): replies matched to their calls by
 * id, 10 000 at once answered out of order; per-call timeouts with the late
 * reply dropped; cancellation; every pending call failing exactly once when
 * the server process is killed, closes, or we close; the fallback for a
 * peer that did not negotiate calls (a tether peer without the option, a
 * plain length-prefixed peer), which still exchanges plain messages; bad
 * arguments and statistics. */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

#define NCALLS 10000

/* ---- the server -------------------------------------------------------- */

/* The server keeps requests, replies at once or later, and echoes plain
 * messages as plain messages. A reply is "re:" + the request. */
struct pending_req {
    uint32_t id;
    size_t len;
    uint8_t data[64];
};

static struct {
    tether_conn *conn;
    bool hold;   /* keep requests instead of answering */
    bool silent; /* never answer */
    struct pending_req *held;
    int nheld;
    int requests;
    int plain;
    uint32_t plain_id_seen; /* tether_conn_msg_call_id() during a plain message */
    bool closed;
    int close_reason;
    char close_detail[256];
} srv;

static void srv_on_close(tether_conn *c, int reason, void *ud)
{
    (void)ud;
    srv.closed = true;
    srv.close_reason = reason;
    snprintf(srv.close_detail, sizeof srv.close_detail, "%s", tether_conn_last_error(c));
}

static void srv_reply(tether_conn *c, uint32_t id, const uint8_t *data, size_t len)
{
    uint8_t out[80];
    memcpy(out, "re:", 3);
    memcpy(out + 3, data, len);
    ck_assert_int_eq(tether_conn_reply(c, id, out, len + 3), TETHER_OK);
}

static void srv_on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)ud;
    srv.conn = c;
    uint32_t id = tether_conn_msg_call_id(c);
    if (id == 0) {
        srv.plain++;
        ck_assert_int_eq(tether_conn_send(c, data, len), TETHER_OK);
        return;
    }
    srv.requests++;
    ck_assert_uint_le(len, 64);
    if (srv.silent) {
        return;
    }
    if (srv.hold) {
        struct pending_req *r = &srv.held[srv.nheld++];
        r->id = id;
        r->len = len;
        memcpy(r->data, data, len);
        return;
    }
    srv_reply(c, id, data, len);
}

static void srv_on_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    srv.conn = c;
}

static tether_listener *listen_calls(bool calls)
{
    free(srv.held);
    memset(&srv, 0, sizeof srv);
    srv.held = calloc(NCALLS, sizeof *srv.held);
    ck_assert_ptr_nonnull(srv.held);
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.on_message = srv_on_message;
    so.on_close = srv_on_close;
    so.calls = calls;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &so;
    lo.on_accept = srv_on_accept;
    return th_listen_tcp(&lo);
}

/* ---- the client -------------------------------------------------------- */

static struct {
    int count[NCALLS]; /* callbacks per call */
    int status[NCALLS];
    bool match[NCALLS]; /* the reply was the one for this request */
    int ncb;
    int made;
    bool in_call;
    bool cb_in_call;
    bool closed;
    int close_reason;
    int cb_after_close;
    int plain_in;
    bool connected;
    uint64_t failed_at_close; /* tether_stats::calls_failed in on_close */
} cl;

static void cl_reset(void)
{
    memset(&cl, 0, sizeof cl);
}

static void req_of(int i, char *buf, size_t cap, size_t *len)
{
    *len = (size_t)snprintf(buf, cap, "req-%d-%x", i, (unsigned)(i * 2654435761u));
}

static void on_reply(tether_conn *c, int status, const uint8_t *data, size_t len, void *ud)
{
    (void)c;
    int i = (int)(intptr_t)ud;
    ck_assert_int_lt(i, NCALLS);
    if (cl.in_call) {
        cl.cb_in_call = true;
    }
    if (cl.closed) {
        cl.cb_after_close++;
    }
    cl.count[i]++;
    cl.status[i] = status;
    cl.ncb++;
    if (status == TETHER_OK) {
        char want[64];
        size_t wl;
        req_of(i, want, sizeof want, &wl);
        cl.match[i] =
            len == wl + 3 && memcmp(data, "re:", 3) == 0 && memcmp(data + 3, want, wl) == 0;
    } else {
        ck_assert_ptr_null(data);
        ck_assert_uint_eq(len, 0);
    }
}

static int make_call(tether_conn *c, int i, int timeout_ms, uint32_t *id)
{
    char req[64];
    size_t len;
    req_of(i, req, sizeof req, &len);
    cl.in_call = true;
    int rv = tether_call(c, req, len, timeout_ms, on_reply, (void *)(intptr_t)i, id);
    cl.in_call = false;
    if (rv == TETHER_OK) {
        cl.made++;
    }
    return rv;
}

static void cl_on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)c;
    (void)data;
    (void)len;
    (void)ud;
    cl.plain_in++;
}

static void cl_on_close(tether_conn *c, int reason, void *ud)
{
    (void)ud;
    cl.closed = true;
    cl.close_reason = reason;
    tether_stats st;
    ck_assert_int_eq(tether_conn_get_stats(c, &st), TETHER_OK);
    cl.failed_at_close = st.calls_failed;
    ck_assert_uint_eq(st.calls_in_flight, 0);
}

static void cl_on_connect(tether_conn *c, int status, void *ud)
{
    (void)c;
    (void)ud;
    ck_assert_int_eq(status, TETHER_OK);
    cl.connected = true;
}

static tether_conn *dial_calls(const char *url, bool calls)
{
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.calls = calls;
    co.on_message = cl_on_message;
    co.on_close = cl_on_close;
    co.on_connect = cl_on_connect;
    co.send_hwm = 16u * 1024 * 1024;
    tether_conn *c = NULL;
    th_dial(&c, url, &co);
    return c;
}

static bool all_ended(void *arg)
{
    (void)arg;
    return cl.ncb == cl.made;
}

static int want_n;

static bool srv_requests_reached(void *arg)
{
    (void)arg;
    return srv.requests >= want_n;
}

static bool srv_held_reached(void *arg)
{
    (void)arg;
    return srv.nheld >= want_n;
}

static bool first_ended(void *arg)
{
    (void)arg;
    return cl.count[0] > 0;
}

static bool plain_arrived(void *arg)
{
    (void)arg;
    return cl.plain_in > 0;
}

static void check_once(void)
{
    ck_assert_int_eq(cl.ncb, cl.made);
    for (int i = 0; i < cl.made; i++) {
        ck_assert_msg(cl.count[i] == 1, "call %d: %d callbacks", i, cl.count[i]);
    }
    ck_assert(!cl.cb_in_call);
}

/* ---- replies ----------------------------------------------------------- */

START_TEST(test_call_and_plain_messages)
{
    cl_reset();
    tether_listener *l = listen_calls(true);
    tether_conn *c = dial_calls(th_url_of(l), true);
    /* Made before the peer's HELLO: kept, then sent. */
    ck_assert_int_eq(make_call(c, 0, 10000, NULL), TETHER_OK);
    ck_assert_int_eq(tether_conn_send(c, "plain", 5), TETHER_OK);
    ck_assert_int_eq(make_call(c, 1, 0, NULL), TETHER_OK);
    ck_assert(th_run_until_pred(all_ended, NULL, 10000));
    check_once();
    ck_assert_int_eq(cl.status[0], TETHER_OK);
    ck_assert_int_eq(cl.status[1], TETHER_OK);
    ck_assert(cl.match[0] && cl.match[1]);
    /* The plain message was a plain message on both sides. */
    ck_assert(th_run_until_pred(plain_arrived, NULL, 10000));
    ck_assert_int_eq(srv.plain, 1);
    ck_assert_int_eq(cl.plain_in, 1);
    ck_assert_int_eq(srv.requests, 2);
    ck_assert_uint_eq(tether_conn_msg_call_id(c), 0);

    tether_stats st;
    ck_assert_int_eq(tether_conn_get_stats(c, &st), TETHER_OK);
    ck_assert_uint_eq(st.calls_completed, 2);
    ck_assert_uint_eq(st.calls_in_flight, 0);
    ck_assert_uint_eq(st.msgs_in, 1); /* replies are not on_message messages */
    ck_assert_int_eq(tether_conn_get_stats(srv.conn, &st), TETHER_OK);
    ck_assert_uint_eq(st.requests_in, 2);
    ck_assert_uint_eq(st.msgs_in, 3);

    tether_conn_close(c);
    ck_assert(th_run_until(&cl.closed, 10000));
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

/* 10 000 calls at once; the server answers only when it has all of them,
 * in a shuffled order. Each reply reaches its own call, once. */
static bool srv_has_all(void *arg)
{
    (void)arg;
    return srv.nheld == NCALLS;
}

START_TEST(test_10000_out_of_order)
{
    cl_reset();
    tether_listener *l = listen_calls(true);
    srv.hold = true;
    tether_conn *c = dial_calls(th_url_of(l), true);
    ck_assert(th_run_until(&cl.connected, 10000));
    for (int i = 0; i < NCALLS; i++) {
        ck_assert_int_eq(make_call(c, i, 60000, NULL), TETHER_OK);
    }
    tether_stats st;
    ck_assert_int_eq(tether_conn_get_stats(c, &st), TETHER_OK);
    ck_assert_uint_eq(st.calls_in_flight, NCALLS);
    ck_assert(th_run_until_pred(srv_has_all, NULL, 30000));
    ck_assert_int_eq(cl.ncb, 0);
    uint32_t seed = 12345;
    for (int i = NCALLS - 1; i > 0; i--) {
        seed = seed * 1103515245u + 12345u;
        int j = (int)((seed >> 8) % (uint32_t)(i + 1));
        struct pending_req t = srv.held[i];
        srv.held[i] = srv.held[j];
        srv.held[j] = t;
    }
    for (int i = 0; i < NCALLS; i++) {
        srv_reply(srv.conn, srv.held[i].id, srv.held[i].data, srv.held[i].len);
    }
    ck_assert(th_run_until_pred(all_ended, NULL, 30000));
    check_once();
    for (int i = 0; i < NCALLS; i++) {
        ck_assert_int_eq(cl.status[i], TETHER_OK);
        ck_assert_msg(cl.match[i], "call %d got another call's reply", i);
    }
    ck_assert_int_eq(tether_conn_get_stats(c, &st), TETHER_OK);
    ck_assert_uint_eq(st.calls_completed, NCALLS);
    ck_assert_uint_eq(st.calls_in_flight, 0);
    tether_conn_close(c);
    ck_assert(th_run_until(&cl.closed, 10000));
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

/* ---- timeouts and cancellation ------------------------------------------ */

START_TEST(test_timeout_then_late_reply)
{
    cl_reset();
    tether_listener *l = listen_calls(true);
    srv.hold = true;
    tether_conn *c = dial_calls(th_url_of(l), true);
    ck_assert(th_run_until(&cl.connected, 10000));
    ck_assert_int_eq(make_call(c, 0, 100, NULL), TETHER_OK);   /* times out */
    ck_assert_int_eq(make_call(c, 1, 60000, NULL), TETHER_OK); /* answered */
    ck_assert(th_run_until_pred(first_ended, NULL, 10000));
    ck_assert_int_eq(cl.status[0], TETHER_ETIMEDOUT);
    ck_assert_int_eq(cl.count[1], 0);
    want_n = 2;
    ck_assert(th_run_until_pred(srv_held_reached, NULL, 10000));
    bool never = false;
    /* Now the server answers both: the late one is dropped. */
    for (int i = 0; i < srv.nheld; i++) {
        srv_reply(srv.conn, srv.held[i].id, srv.held[i].data, srv.held[i].len);
    }
    ck_assert(th_run_until_pred(all_ended, NULL, 10000));
    tether_stats st;
    for (int i = 0; i < 200; i++) {
        ck_assert_int_eq(tether_conn_get_stats(c, &st), TETHER_OK);
        if (st.calls_late_replies == 1) {
            break;
        }
        th_run_until(&never, 10);
    }
    check_once();
    ck_assert_int_eq(cl.status[1], TETHER_OK);
    ck_assert(cl.match[1]);
    ck_assert_uint_eq(st.calls_timed_out, 1);
    ck_assert_uint_eq(st.calls_completed, 1);
    ck_assert_uint_eq(st.calls_late_replies, 1);
    tether_conn_close(c);
    ck_assert(th_run_until(&cl.closed, 10000));
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

START_TEST(test_cancel)
{
    cl_reset();
    tether_listener *l = listen_calls(true);
    srv.hold = true;
    tether_conn *c = dial_calls(th_url_of(l), true);
    uint32_t id0, id1, id2;
    /* Canceled while still kept for the HELLO. */
    ck_assert_int_eq(make_call(c, 0, 0, &id0), TETHER_OK);
    ck_assert_int_eq(tether_call_cancel(c, id0), TETHER_OK);
    ck_assert_int_eq(cl.ncb, 0); /* from the loop, not from inside */
    ck_assert_int_eq(tether_call_cancel(c, id0), TETHER_EINVAL);
    ck_assert(th_run_until(&cl.connected, 10000));
    ck_assert_int_eq(make_call(c, 1, 0, &id1), TETHER_OK);
    ck_assert_int_eq(make_call(c, 2, 0, &id2), TETHER_OK);
    ck_assert_uint_ne(id1, id2);
    want_n = 2;
    ck_assert(th_run_until_pred(srv_held_reached, NULL, 10000));
    ck_assert_int_eq(cl.count[0], 1);
    ck_assert_int_eq(cl.status[0], TETHER_ECANCELED);
    ck_assert_int_eq(srv.requests, 2); /* the canceled one never went out */
    /* Canceled after it was sent: its reply is dropped. */
    ck_assert_int_eq(tether_call_cancel(c, id1), TETHER_OK);
    for (int i = 0; i < srv.nheld; i++) {
        srv_reply(srv.conn, srv.held[i].id, srv.held[i].data, srv.held[i].len);
    }
    ck_assert(th_run_until_pred(all_ended, NULL, 10000));
    check_once();
    ck_assert_int_eq(cl.status[1], TETHER_ECANCELED);
    ck_assert_int_eq(cl.status[2], TETHER_OK);
    ck_assert(cl.match[2]);
    ck_assert_int_eq(tether_call_cancel(c, id2), TETHER_EINVAL);
    ck_assert_int_eq(tether_call_cancel(c, 0), TETHER_EINVAL);
    tether_stats st;
    ck_assert_int_eq(tether_conn_get_stats(c, &st), TETHER_OK);
    ck_assert_uint_eq(st.calls_canceled, 2);
    tether_conn_close(c);
    ck_assert(th_run_until(&cl.closed, 10000));
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

/* ---- the connection goes away -------------------------------------------- */

/* All calls failed once, with the close reason, before on_close. */
static void check_all_failed(int want)
{
    check_once();
    for (int i = 0; i < cl.made; i++) {
        ck_assert_msg(cl.status[i] == want, "call %d: %s, not %s", i, tether_err_name(cl.status[i]),
                      tether_err_name(want));
    }
    ck_assert_int_eq(cl.cb_after_close, 0);
}

START_TEST(test_server_closes)
{
    cl_reset();
    tether_listener *l = listen_calls(true);
    srv.silent = true;
    tether_conn *c = dial_calls(th_url_of(l), true);
    for (int i = 0; i < 100; i++) {
        ck_assert_int_eq(make_call(c, i, 0, NULL), TETHER_OK);
    }
    want_n = 100;
    ck_assert(th_run_until_pred(srv_requests_reached, NULL, 10000));
    tether_conn_close(srv.conn);
    ck_assert(th_run_until(&cl.closed, 10000));
    ck_assert_int_eq(cl.close_reason, TETHER_EOF);
    check_all_failed(TETHER_EOF);
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

START_TEST(test_local_close_and_abort)
{
    cl_reset();
    tether_listener *l = listen_calls(true);
    srv.silent = true;
    tether_conn *c = dial_calls(th_url_of(l), true);
    for (int i = 0; i < 50; i++) {
        ck_assert_int_eq(make_call(c, i, 0, NULL), TETHER_OK);
    }
    tether_conn_close(c);
    ck_assert_int_eq(make_call(c, 60, 0, NULL), TETHER_ECLOSED);
    ck_assert(th_run_until(&cl.closed, 10000));
    check_all_failed(TETHER_ECLOSED);

    cl_reset();
    c = dial_calls(th_url_of(l), true);
    ck_assert(th_run_until(&cl.connected, 10000));
    for (int i = 0; i < 50; i++) {
        ck_assert_int_eq(make_call(c, i, 5000, NULL), TETHER_OK);
    }
    tether_conn_abort(c);
    ck_assert_int_eq(cl.ncb, 0);
    ck_assert(th_run_until(&cl.closed, 10000));
    check_all_failed(TETHER_ECANCELED);
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

/* The child server's on_message: answers "re:" + the request, except
 * requests that start with "silent". */
static void child_on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)ud;
    uint32_t id = tether_conn_msg_call_id(c);
    if (id == 0 || (len >= 6 && memcmp(data, "silent", 6) == 0) || len > 64) {
        return;
    }
    uint8_t out[80];
    memcpy(out, "re:", 3);
    memcpy(out + 3, data, len);
    tether_conn_reply(c, id, out, len + 3);
}

/* A server in a child process (killed with SIGKILL in the tests: the
 * kernel then resets or closes its sockets). It answers when `answer`. */
static void child_server(int wfd, bool answer)
{
    tether_loop *loop = NULL;
    if (tether_loop_new(&loop, NULL) != TETHER_OK) {
        _exit(3);
    }
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.calls = true;
    so.on_message = answer ? child_on_message : NULL;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &so;
    tether_listener *l = NULL;
    if (tether_listen(&l, loop, "tcp://127.0.0.1:0", &lo, NULL) != TETHER_OK) {
        _exit(4);
    }
    int port = tether_listener_port(l);
    if (write(wfd, &port, sizeof port) != (ssize_t)sizeof port) {
        _exit(5);
    }
    alarm(60); /* a hang guard of its own */
    tether_loop_run(loop);
    _exit(0);
}

START_TEST(test_server_killed)
{
    cl_reset();
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(pfd[0]);
        child_server(pfd[1], false);
    }
    close(pfd[1]);
    int port = 0;
    ck_assert_int_eq(read(pfd[0], &port, sizeof port), (ssize_t)sizeof port);
    close(pfd[0]);
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    tether_conn *c = dial_calls(url, true);
    for (int i = 0; i < 1000; i++) {
        ck_assert_int_eq(make_call(c, i, 0, NULL), TETHER_OK);
    }
    ck_assert(th_run_until(&cl.connected, 10000));
    tether_stats st;
    bool never = false;
    for (int i = 0; i < 500; i++) {
        ck_assert_int_eq(tether_conn_get_stats(c, &st), TETHER_OK);
        if (st.queued_bytes == 0 && st.calls_in_flight == 1000) {
            break; /* all sent */
        }
        th_run_until(&never, 10);
    }
    kill(pid, SIGKILL);
    int wst;
    ck_assert_int_eq(waitpid(pid, &wst, 0), pid);
    ck_assert(WIFSIGNALED(wst));
    ck_assert(th_run_until(&cl.closed, 10000));
    ck_assert_msg(cl.close_reason == TETHER_EOF || cl.close_reason == TETHER_ECONNRESET,
                  "reason %s", tether_err_name(cl.close_reason));
    check_all_failed(cl.close_reason);
    ck_assert_uint_eq(cl.failed_at_close, 1000);
    th_run_idle(5000);
}
END_TEST

/* ---- a reconnecting client ---------------------------------------------------- */

static struct {
    bool connected;
    bool disconnected;
    bool closed;
    int ncb;
    int status[8];
    bool match[8];
} rc;

static void rc_state(tether_client *client, const tether_client_event *ev, void *ud)
{
    (void)client, (void)ud;
    if (ev->state == TETHER_CLIENT_CONNECTED) {
        rc.connected = true;
    } else if (ev->state == TETHER_CLIENT_DISCONNECTED) {
        rc.disconnected = true;
    } else if (ev->state == TETHER_CLIENT_CLOSED) {
        rc.closed = true;
    }
}

static void rc_reply(tether_client *client, int status, const uint8_t *data, size_t len, void *ud)
{
    (void)client;
    int i = (int)(intptr_t)ud;
    rc.status[i] = status;
    rc.match[i] = status == TETHER_OK && len == 5 && memcmp(data, "re:q", 4) == 0 &&
                  data[4] == (uint8_t)('0' + i);
    rc.ncb++;
}

static bool rc_ncb(void *arg)
{
    return rc.ncb >= *(int *)arg;
}

START_TEST(test_client_call)
{
    memset(&rc, 0, sizeof rc);
    tether_listener *l = listen_calls(true);
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.calls = true;
    tether_client_opts o;
    tether_client_opts_init(&o);
    o.on_state = rc_state;
    o.conn_opts = &co;
    o.initial_backoff_ms = 5000; /* no reconnect during the test */
    tether_client *rcl = NULL;
    ck_assert_int_eq(tether_client_new(&rcl, th_loop, th_url_of(l), &o, NULL), TETHER_OK);
    ck_assert_int_eq(tether_client_call(rcl, "q0", 2, 0, rc_reply, (void *)0, NULL),
                     TETHER_ENOTCONN);
    ck_assert(th_run_until(&rc.connected, 10000));
    ck_assert_int_eq(tether_client_call(rcl, "q0", 2, 10000, rc_reply, (void *)0, NULL), TETHER_OK);
    int want = 1;
    ck_assert(th_run_until_pred(rc_ncb, &want, 10000));
    ck_assert_int_eq(rc.status[0], TETHER_OK);
    ck_assert(rc.match[0]);

    /* The server goes silent, then closes: the pending calls fail once. */
    srv.silent = true;
    uint32_t id2;
    ck_assert_int_eq(tether_client_call(rcl, "q1", 2, 0, rc_reply, (void *)1, NULL), TETHER_OK);
    ck_assert_int_eq(tether_client_call(rcl, "q2", 2, 0, rc_reply, (void *)2, &id2), TETHER_OK);
    ck_assert_int_eq(tether_client_call(rcl, "q3", 2, 0, rc_reply, (void *)3, NULL), TETHER_OK);
    ck_assert_int_eq(tether_client_call_cancel(rcl, id2), TETHER_OK);
    want_n = 3;
    ck_assert(th_run_until_pred(srv_requests_reached, NULL, 10000));
    tether_conn_close(srv.conn);
    ck_assert(th_run_until(&rc.disconnected, 10000));
    ck_assert_int_eq(rc.ncb, 4);
    ck_assert_int_eq(rc.status[1], TETHER_EOF);
    ck_assert_int_eq(rc.status[2], TETHER_ECANCELED);
    ck_assert_int_eq(rc.status[3], TETHER_EOF);
    ck_assert_int_eq(tether_client_call(rcl, "q4", 2, 0, rc_reply, (void *)4, NULL),
                     TETHER_ENOTCONN);
    tether_stats st;
    ck_assert_int_eq(tether_client_get_stats(rcl, &st), TETHER_OK);
    ck_assert_uint_eq(st.calls_completed, 1);
    ck_assert_uint_eq(st.calls_failed, 2);
    ck_assert_uint_eq(st.calls_canceled, 1);
    ck_assert_uint_eq(st.calls_in_flight, 0);
    tether_client_close(rcl);
    ck_assert(th_run_until(&rc.closed, 10000));
    ck_assert_int_eq(rc.ncb, 4);
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

/* ---- the blocking API ------------------------------------------------------ */

START_TEST(test_sync_call)
{
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(pfd[0]);
        child_server(pfd[1], true);
    }
    close(pfd[1]);
    int port = 0;
    ck_assert_int_eq(read(pfd[0], &port, sizeof port), (ssize_t)sizeof port);
    close(pfd[0]);
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);

    /* Without the option: refused, and said why. */
    tether_sync *s = NULL;
    tether_msg m;
    ck_assert_int_eq(tether_sync_connect(&s, url, NULL, 10000, NULL), TETHER_OK);
    ck_assert_int_eq(tether_sync_call(s, "x", 1, &m, 1000), TETHER_ENOTSUP);
    ck_assert_ptr_nonnull(strstr(tether_sync_last_error(s), "tether_conn_opts.calls"));
    tether_sync_close(s);

    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.calls = true;
    s = NULL;
    ck_assert_int_eq(tether_sync_connect(&s, url, &co, 10000, NULL), TETHER_OK);
    ck_assert_int_eq(tether_sync_call(s, "hello", 5, &m, 10000), TETHER_OK);
    ck_assert_uint_eq(m.len, 8);
    ck_assert_mem_eq(m.data, "re:hello", 8);
    tether_msg_free(&m);
    ck_assert_int_eq(tether_sync_call(s, "silent", 6, &m, 200), TETHER_ETIMEDOUT);
    ck_assert_ptr_null(m.data);
    ck_assert_ptr_nonnull(strstr(tether_sync_last_error(s), "no reply within 200 ms"));
    /* Still usable. */
    ck_assert_int_eq(tether_sync_call(s, "", 0, &m, 10000), TETHER_OK);
    ck_assert_uint_eq(m.len, 3);
    tether_msg_free(&m);
    ck_assert_int_eq(tether_sync_call(s, NULL, 1, &m, 10000), TETHER_EINVAL);
    /* The server dies while a call waits without a timeout of its own. */
    kill(pid, SIGKILL);
    int wst;
    ck_assert_int_eq(waitpid(pid, &wst, 0), pid);
    int rv = tether_sync_call(s, "late", 4, &m, -1);
    ck_assert_msg(rv == TETHER_EOF || rv == TETHER_ECONNRESET, "%s", tether_err_name(rv));
    tether_sync_close(s);
}
END_TEST

/* ---- peers that did not negotiate --------------------------------------- */

static char logbuf[4096];

static void capture_log(tether_log_level level, const char *msg, void *ud)
{
    (void)level;
    (void)ud;
    size_t n = strlen(logbuf);
    snprintf(logbuf + n, sizeof logbuf - n, "%s\n", msg);
}

/* A tether server without the option: the HELLO says so, the kept call
 * fails with ENOTSUP, later calls are refused, plain messages work. */
START_TEST(test_peer_without_calls)
{
    cl_reset();
    logbuf[0] = '\0';
    tether_set_log(capture_log, TETHER_LOG_INFO, NULL);
    tether_listener *l = listen_calls(false);
    tether_conn *c = dial_calls(th_url_of(l), true);
    ck_assert_int_eq(make_call(c, 0, 0, NULL), TETHER_OK);
    ck_assert(th_run_until_pred(all_ended, NULL, 10000));
    check_once();
    ck_assert_int_eq(cl.status[0], TETHER_ENOTSUP);
    ck_assert_int_eq(make_call(c, 1, 0, NULL), TETHER_ENOTSUP);
    ck_assert_ptr_nonnull(strstr(tether_conn_last_error(c), "does not take calls"));
    ck_assert_ptr_nonnull(strstr(logbuf, "no request ids on this connection"));
    ck_assert_int_eq(tether_conn_send(c, "x", 1), TETHER_OK);
    ck_assert(th_run_until_pred(plain_arrived, NULL, 10000));
    ck_assert_int_eq(cl.plain_in, 1);
    ck_assert_int_eq(srv.requests, 0);
    /* The server cannot reply on it either. */
    ck_assert_int_eq(tether_conn_reply(srv.conn, 1, "x", 1), TETHER_ENOTSUP);
    tether_set_log(NULL, TETHER_LOG_ERROR, NULL);
    tether_conn_close(c);
    ck_assert(th_run_until(&cl.closed, 10000));
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

/* The callback of a kept call that fails tries to cancel the next kept
 * one and to call again: the next one still ends once, with ENOTSUP. */
static uint32_t reent_id1;
static int reent_cancel_rv;
static int reent_call_rv;

static void reent_reply(tether_conn *c, int status, const uint8_t *data, size_t len, void *ud)
{
    on_reply(c, status, data, len, ud);
    if ((intptr_t)ud == 0) {
        reent_cancel_rv = tether_call_cancel(c, reent_id1);
        reent_call_rv = tether_call(c, "y", 1, 0, on_reply, (void *)(intptr_t)5, NULL);
    }
}

START_TEST(test_kept_calls_reentrant)
{
    cl_reset();
    tether_listener *l = listen_calls(false);
    tether_conn *c = dial_calls(th_url_of(l), true);
    for (int i = 0; i < 3; i++) {
        char req[8];
        snprintf(req, sizeof req, "r%d", i);
        ck_assert_int_eq(
            tether_call(c, req, 2, 0, reent_reply, (void *)(intptr_t)i, i == 1 ? &reent_id1 : NULL),
            TETHER_OK);
        cl.made++;
    }
    ck_assert(th_run_until_pred(all_ended, NULL, 10000));
    check_once();
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(cl.status[i], TETHER_ENOTSUP);
    }
    ck_assert_int_eq(reent_cancel_rv, TETHER_EINVAL); /* it had ended already */
    ck_assert_int_eq(reent_call_rv, TETHER_ENOTSUP);
    ck_assert_int_eq(cl.count[5], 0);
    tether_conn_close(c);
    ck_assert(th_run_until(&cl.closed, 10000));
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

/* Calls kept for the HELLO go out whatever the queue holds: they were
 * accepted already, so the high-water mark does not refuse them. */
START_TEST(test_kept_calls_above_hwm)
{
    cl_reset();
    tether_listener *l = listen_calls(true);
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.calls = true;
    co.on_close = cl_on_close;
    co.send_hwm = 256;
    co.send_lwm = 64;
    tether_conn *c = NULL;
    th_dial(&c, th_url_of(l), &co);
    for (int i = 0; i < 500; i++) {
        ck_assert_int_eq(make_call(c, i, 0, NULL), TETHER_OK);
    }
    ck_assert(th_run_until_pred(all_ended, NULL, 20000));
    check_once();
    for (int i = 0; i < 500; i++) {
        ck_assert_int_eq(cl.status[i], TETHER_OK);
        ck_assert(cl.match[i]);
    }
    tether_conn_close(c);
    ck_assert(th_run_until(&cl.closed, 10000));
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

/* A plain length-prefixed client (a raw socket) on a server with calls:
 * served as before, the fallback logged, tether_call refused. */
START_TEST(test_plain_client)
{
    logbuf[0] = '\0';
    tether_set_log(capture_log, TETHER_LOG_DEBUG, NULL);
    tether_listener *l = listen_calls(true);
    int fd = th_raw_connect(tether_listener_port(l));
    uint8_t msg[9] = {0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o'};
    th_raw_write(fd, msg, sizeof msg);
    bool never = false;
    for (int i = 0; i < 500 && srv.plain == 0; i++) {
        th_run_until(&never, 10);
    }
    ck_assert_int_eq(srv.plain, 1);
    uint8_t back[9];
    ck_assert_int_eq(recv(fd, back, sizeof back, MSG_WAITALL), 9);
    ck_assert_mem_eq(back, msg, 9);
    ck_assert_ptr_nonnull(strstr(logbuf, "a plain length-prefixed peer"));
    cl_reset();
    ck_assert_int_eq(tether_call(srv.conn, "q", 1, 0, on_reply, NULL, NULL), TETHER_ENOTSUP);
    ck_assert_ptr_nonnull(strstr(tether_conn_last_error(srv.conn), "no HELLO"));
    tether_set_log(NULL, TETHER_LOG_ERROR, NULL);
    close(fd);
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

/* ---- peers that break the rules -------------------------------------------- */

/* A raw client sends HELLO (with the given flags), then `rest`; the
 * server must close with EPROTO and a detail containing `want`. */
static void expect_violation(bool calls, uint8_t flags, const uint8_t *rest, size_t n,
                             const char *want)
{
    tether_listener *l = listen_calls(calls);
    int fd = th_raw_connect(tether_listener_port(l));
    uint8_t hello[10] = {0xFF, 1, 0, 6, 1, flags, 0, 0, 0, 0};
    th_raw_write(fd, hello, sizeof hello);
    th_raw_write(fd, rest, n);
    ck_assert(th_run_until(&srv.closed, 10000));
    ck_assert_int_eq(srv.close_reason, TETHER_EPROTO);
    ck_assert_msg(strstr(srv.close_detail, want) != NULL, "detail '%s' lacks '%s'",
                  srv.close_detail, want);
    ck_assert_int_eq(srv.requests, 0);
    close(fd);
    tether_listener_close(l);
    th_run_idle(5000);
}

START_TEST(test_protocol_violations)
{
    /* CALL on a connection where calls were not negotiated: the server
     * has them on, but the client's HELLO did not announce them. */
    const uint8_t call[] = {0xFF, 5, 0, 4, 0, 0, 0, 1, 0, 0, 0, 1, 'x'};
    expect_violation(true, 0, call, sizeof call, "calls were not negotiated");
    /* ... and where the server has them off. */
    expect_violation(false, 1, call, sizeof call, "calls were not negotiated");
    /* A CALL frame of the wrong size. */
    const uint8_t shortcall[] = {0xFF, 5, 0, 3, 0, 0, 1};
    expect_violation(true, 1, shortcall, sizeof shortcall, "malformed CALL control frame");
    /* Id 0. */
    const uint8_t zero[] = {0xFF, 6, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0};
    expect_violation(true, 1, zero, sizeof zero, "REPLY control frame with id 0");
    /* A CALL where the previous one's data frame belongs. */
    const uint8_t twice[] = {0xFF, 5, 0, 4, 0, 0, 0, 1, 0xFF, 5, 0, 4, 0, 0, 0, 2};
    expect_violation(true, 1, twice, sizeof twice, "where the data frame of the previous one");
}
END_TEST

START_TEST(test_bad_arguments)
{
    cl_reset();
    tether_listener *l = listen_calls(true);
    tether_conn *plain = dial_calls(th_url_of(l), false);
    ck_assert_int_eq(tether_call(plain, "x", 1, 0, on_reply, NULL, NULL), TETHER_ENOTSUP);
    ck_assert_ptr_nonnull(strstr(tether_conn_last_error(plain), "tether_conn_opts.calls"));
    tether_conn_close(plain);
    ck_assert(th_run_until(&cl.closed, 10000));

    cl_reset();
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.calls = true;
    co.max_msg = 10;
    tether_conn *c = NULL;
    th_dial(&c, th_url_of(l), &co);
    ck_assert_int_eq(tether_call(NULL, "x", 1, 0, on_reply, NULL, NULL), TETHER_EINVAL);
    ck_assert_int_eq(tether_call(c, "x", 1, 0, NULL, NULL, NULL), TETHER_EINVAL);
    ck_assert_int_eq(tether_call(c, NULL, 1, 0, on_reply, NULL, NULL), TETHER_EINVAL);
    ck_assert_int_eq(tether_call(c, "x", 1, -1, on_reply, NULL, NULL), TETHER_EINVAL);
    ck_assert_int_eq(tether_call(c, "01234567890", 11, 0, on_reply, NULL, NULL), TETHER_EMSGSIZE);
    ck_assert_int_eq(tether_conn_reply(c, 0, "x", 1), TETHER_EINVAL);
    ck_assert_int_eq(tether_call_cancel(c, 7), TETHER_EINVAL);
    ck_assert_uint_eq(tether_conn_msg_call_id(NULL), 0);
    tether_conn_abort(c);

    /* calls need len32 framing. */
    tether_conn_opts_init(&co);
    co.calls = true;
    co.framing = TETHER_FRAMING_LINE;
    tether_error err;
    c = NULL;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, th_url_of(l), &co, &err), TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "len32"));
    ck_assert_int_eq(cl.ncb, 0);
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

Suite *call_suite(void);
Suite *call_suite(void)
{
    Suite *s = suite_create("call");
    TCase *tc = tcase_create("call");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_call_and_plain_messages);
    tcase_add_test(tc, test_10000_out_of_order);
    tcase_add_test(tc, test_timeout_then_late_reply);
    tcase_add_test(tc, test_cancel);
    tcase_add_test(tc, test_server_closes);
    tcase_add_test(tc, test_local_close_and_abort);
    tcase_add_test(tc, test_server_killed);
    tcase_add_test(tc, test_sync_call);
    tcase_add_test(tc, test_client_call);
    tcase_add_test(tc, test_peer_without_calls);
    tcase_add_test(tc, test_kept_calls_reentrant);
    tcase_add_test(tc, test_kept_calls_above_hwm);
    tcase_add_test(tc, test_plain_client);
    tcase_add_test(tc, test_protocol_violations);
    tcase_add_test(tc, test_bad_arguments);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(call_suite());
}
