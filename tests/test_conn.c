/* SPDX-License-Identifier: MIT */
/* Connections over loopback: errors, ordering, backpressure, closing, many
 * clients, Unix and IPv6 sockets, hostile peers and descriptor exhaustion. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ack.h" /* (the dial's wish for acknowledgements, client_alo.c's) */
#include "helpers.h"

/* ---- a tether echo server ------------------------------------------------ */

struct srv {
    tether_listener *l;
    int accepted;
    int closed;
    int last_reason;
    char last_detail[TETHER_ERROR_MSG_MAX];
    long msgs;
    bool echo;
    bool pause_new;
    tether_conn *last;
    int errors;
    int last_error_code;
    char last_peer[64];
    char accepted_peer[64];
    tether_conn *held_conn; /* the echo refused with EAGAIN: paused until on_drain */
    uint8_t *held;
    size_t held_len;
};

static struct srv S;

static void srv_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    S.accepted++;
    S.last = c;
    if (tether_conn_peer(c, S.accepted_peer, sizeof S.accepted_peer) != TETHER_OK) {
        S.accepted_peer[0] = '\0';
    }
    if (S.pause_new) {
        tether_conn_pause(c);
    }
}

static void srv_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)ud;
    S.msgs++;
    if (S.echo) {
        int rv = tether_conn_send(c, data, len);
        if (rv == TETHER_EAGAIN) {
            /* The client has not read its echoes yet (a slow moment of the
             * loop): hold this one and stop reading until on_drain. */
            ck_assert(S.held_conn == NULL);
            S.held = malloc(len > 0 ? len : 1);
            ck_assert(S.held != NULL);
            memcpy(S.held, data, len);
            S.held_len = len;
            S.held_conn = c;
            tether_conn_pause(c);
            return;
        }
        ck_assert_int_eq(rv, TETHER_OK);
    }
}

static void srv_drain(tether_conn *c, void *ud)
{
    (void)ud;
    if (S.held_conn != c) {
        return;
    }
    int rv = tether_conn_send(c, S.held, S.held_len);
    if (rv == TETHER_EAGAIN) {
        return; /* on_drain comes again */
    }
    ck_assert_int_eq(rv, TETHER_OK);
    free(S.held);
    S.held = NULL;
    S.held_conn = NULL;
    tether_conn_resume(c);
}

static void srv_close(tether_conn *c, int reason, void *ud)
{
    (void)ud;
    S.closed++;
    S.last_reason = reason;
    if (S.held_conn == c) {
        free(S.held);
        S.held = NULL;
        S.held_conn = NULL;
    }
    snprintf(S.last_detail, sizeof S.last_detail, "%s", tether_conn_last_error(c));
    if (tether_conn_peer(c, S.last_peer, sizeof S.last_peer) != TETHER_OK) {
        S.last_peer[0] = '\0';
    }
    if (S.last == c) {
        S.last = NULL;
    }
}

static void srv_error(tether_listener *l, int err, const char *detail, void *ud)
{
    (void)l;
    (void)ud;
    (void)detail;
    S.errors++;
    S.last_error_code = err;
}

static tether_listener *start_server_url(const char *url, const tether_conn_opts *co)
{
    tether_conn_opts defaults;
    tether_conn_opts_init(&defaults);
    tether_conn_opts o = co != NULL ? *co : defaults;
    o.on_message = srv_message;
    o.on_close = srv_close;
    if (o.on_drain == NULL) {
        o.on_drain = srv_drain;
    }
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = srv_accept;
    lo.on_error = srv_error;
    lo.conn_opts = &o;
    tether_error err;
    tether_listener *l = NULL;
    int rv = tether_listen(&l, th_loop, url, &lo, &err);
    ck_assert_msg(rv == TETHER_OK, "listen %s: %s", url, err.message);
    S.l = l;
    return l;
}

static tether_listener *start_server(const tether_conn_opts *co)
{
    return start_server_url("tcp://127.0.0.1:0", co);
}

static void reset_state(void)
{
    memset(&S, 0, sizeof S);
    S.echo = true;
}

/* ---- a tether client ----------------------------------------------------- */

struct cli {
    tether_conn *c;
    int connect_status;
    bool connected;
    int connect_calls;
    int close_calls;
    int close_reason;
    bool close_before_connect;
    char detail[TETHER_ERROR_MSG_MAX];
    long sent;
    long got;
    long total;
    size_t max_size;
    bool bad;
    int drains;
    bool saw_eagain;
    uint8_t *buf;
};

static size_t msg_size(long i, size_t max)
{
    /* Mixed sizes: mostly small, some zero, some large. */
    uint32_t x = (uint32_t)i * 2654435761u;
    if (i % 97 == 0) {
        return 0;
    }
    if (i % 1000 == 1) {
        return max;
    }
    return (x >> 7) % (max / 8 + 1);
}

static void cli_pump(struct cli *k)
{
    while (k->sent < k->total) {
        size_t n = msg_size(k->sent, k->max_size);
        th_fill(k->buf, n, (uint32_t)k->sent);
        int rv = tether_conn_send(k->c, k->buf, n);
        if (rv == TETHER_EAGAIN) {
            k->saw_eagain = true;
            return;
        }
        ck_assert_int_eq(rv, TETHER_OK);
        k->sent++;
    }
}

static void cli_connect(tether_conn *c, int status, void *ud)
{
    struct cli *k = ud;
    k->connect_calls++;
    k->connect_status = status;
    k->connected = status == TETHER_OK;
    if (status != TETHER_OK) {
        snprintf(k->detail, sizeof k->detail, "%s", tether_conn_last_error(c));
        return;
    }
    if (k->buf != NULL) {
        cli_pump(k);
    }
}

static void cli_drain(tether_conn *c, void *ud)
{
    (void)c;
    struct cli *k = ud;
    k->drains++;
    if (k->buf != NULL) {
        cli_pump(k);
    }
}

static void cli_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    struct cli *k = ud;
    size_t want = msg_size(k->got, k->max_size);
    if (len != want || !th_check(data, len, (uint32_t)k->got)) {
        k->bad = true;
    }
    k->got++;
    if (k->got == k->total) {
        tether_conn_close(c);
    }
}

static void cli_close(tether_conn *c, int reason, void *ud)
{
    struct cli *k = ud;
    if (k->connect_calls == 0) {
        k->close_before_connect = true;
    }
    k->close_calls++;
    k->close_reason = reason;
    if (reason != TETHER_OK) {
        snprintf(k->detail, sizeof k->detail, "%s", tether_conn_last_error(c));
    }
    k->c = NULL;
}

static tether_conn_opts cli_opts(struct cli *k)
{
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.userdata = k;
    o.on_connect = cli_connect;
    o.on_message = cli_message;
    o.on_drain = cli_drain;
    o.on_close = cli_close;
    return o;
}

static void dial(struct cli *k, const char *url, const tether_conn_opts *o)
{
    th_dial(&k->c, url, o);
}

static bool cli_closed(void *arg)
{
    return ((struct cli *)arg)->close_calls > 0;
}

/* ---- raw sockets for hostile peers --------------------------------------- */

/* ---- tests ---------------------------------------------------------------- */

static void expect_refused(const char *url);

START_TEST(connection_refused_is_clear)
{
    reset_state();
    int keep;
    int port = th_refused_port(&keep);
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    expect_refused(url); /* (nothing reported from inside the dial call) */
    close(keep);
}
END_TEST

/* Dials url with a connect timeout of ms, to a listener that never
 * accepts: the dial fails once with ETIMEDOUT and a detail that says
 * so, and its socket is closed. */
static void expect_connect_timeout(const char *url, int ms)
{
    int before = th_count_fds();
    struct cli k = {0};
    tether_conn_opts o = cli_opts(&k);
    o.connect_timeout_ms = ms;
    dial(&k, url, &o);
    ck_assert_int_eq(th_count_fds(), before + 1);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    ck_assert_int_eq(k.connect_calls, 1);
    ck_assert_int_eq(k.connect_status, TETHER_ETIMEDOUT);
    ck_assert_int_eq(k.close_reason, TETHER_ETIMEDOUT);
    char want[128];
    snprintf(want, sizeof want, "connect to %s timed out after %d ms", url, ms);
    ck_assert_str_eq(k.detail, want);
    th_run_idle(50);
    ck_assert_int_eq(th_count_fds(), before);
}

/* A numeric address whose SYNs are dropped: the connect timeout ends the
 * dial with the detail that names the URL and the deadline, and the
 * socket is closed (the dial of one address has no dialer of its own). */
START_TEST(numeric_connect_timeout_is_clear)
{
    reset_state();
    int fds[9]; /* the listener, then 8 connections nobody accepts */
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", th_hang_port(fds, 9));
    expect_connect_timeout(url, 300);
    for (int i = 0; i < 9; i++) {
        close(fds[i]);
    }
}
END_TEST

/* Aborting a dial to a numeric address while it connects closes its
 * socket and reports TETHER_ECANCELED. */
START_TEST(abort_while_connecting_closes_socket)
{
    reset_state();
    int fds[9];
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", th_hang_port(fds, 9));
    int before = th_count_fds();
    struct cli k = {0};
    tether_conn_opts o = cli_opts(&k);
    dial(&k, url, &o);
    th_run_idle(50);
    ck_assert_int_eq(k.connect_calls, 0);
    tether_conn_abort(k.c);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    ck_assert_int_eq(k.connect_status, TETHER_ECANCELED);
    ck_assert_int_eq(k.close_reason, TETHER_ECANCELED);
    th_run_idle(50);
    ck_assert_int_eq(th_count_fds(), before);
    for (int i = 0; i < 9; i++) {
        close(fds[i]);
    }
}
END_TEST

static bool both_connected(void *arg)
{
    struct cli *k = arg;
    return k[0].connect_calls > 0 && k[1].connect_calls > 0;
}

/* Dials of one URL with the same options share what was built for the
 * first (the loop remembers it): each connection still gets its own
 * userdata, changed options take effect on the next dial, and invalid
 * ones are still refused. */
START_TEST(repeated_dials_keep_their_own_options)
{
    reset_state();
    tether_listener *l = start_server(NULL);
    const char *url = th_url_of(l);
    struct cli k[2] = {{0}};
    tether_conn_opts o = cli_opts(&k[0]);
    dial(&k[0], url, &o);
    o.userdata = &k[1];
    dial(&k[1], url, &o);
    ck_assert(th_run_until_pred(both_connected, k, 5000));
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(k[i].connect_calls, 1);
        ck_assert_int_eq(k[i].connect_status, TETHER_OK);
        ck_assert_ptr_eq(tether_conn_userdata(k[i].c), &k[i]);
    }
    /* A smaller max_msg on the next dial of the same URL applies to it
     * alone. */
    uint8_t big[100] = {0};
    o.max_msg = 10;
    struct cli small = {0};
    o.userdata = &small;
    dial(&small, url, &o);
    ck_assert_int_eq(tether_conn_send(small.c, big, sizeof big), TETHER_EMSGSIZE);
    ck_assert_int_eq(tether_conn_send(k[0].c, big, sizeof big), TETHER_OK);
    o.max_msg = 0;
    tether_conn *bad = NULL;
    tether_error err;
    ck_assert_int_eq(tether_conn_dial(&bad, th_loop, url, &o, &err), TETHER_EINVAL);
    ck_assert_ptr_null(bad);
    ck_assert_str_eq(err.message, "max_msg must be between 1 and 1073741824 bytes");
    for (int i = 0; i < 2; i++) {
        tether_conn_close(k[i].c);
    }
    tether_conn_close(small.c);
    ck_assert(th_run_until_pred(cli_closed, &small, 5000));
    ck_assert(th_run_until_pred(cli_closed, &k[1], 5000));
    ck_assert(th_run_until_pred(cli_closed, &k[0], 5000));
    tether_listener_close(l);
}
END_TEST

/* The loop remembers a dial by the contents of its URL and options, never
 * by their addresses: an application that writes another URL into the same
 * buffer dials the new address, and one that rewrites its options struct
 * in place gets the new options. */
START_TEST(rewritten_url_buffer_dials_the_new_address)
{
    reset_state();
    tether_listener *l[2];
    char want[2][64];
    for (int i = 0; i < 2; i++) {
        l[i] = start_server(NULL);
        snprintf(want[i], sizeof want[i], "127.0.0.1:%d", tether_listener_port(l[i]));
    }
    char url[80];
    struct cli k[3] = {{0}};
    tether_conn_opts o = cli_opts(&k[0]);
    for (int i = 0; i < 2; i++) {
        /* (Both ports have the same number of digits more often than not:
         * only the bytes differ, not the length.) */
        snprintf(url, sizeof url, "tcp://%s", want[i]);
        o.userdata = &k[i];
        dial(&k[i], url, &o);
    }
    ck_assert(th_run_until_pred(both_connected, k, 5000));
    for (int i = 0; i < 2; i++) {
        char peer[64];
        ck_assert_int_eq(k[i].connect_status, TETHER_OK);
        ck_assert_int_eq(tether_conn_peer(k[i].c, peer, sizeof peer), TETHER_OK);
        ck_assert_str_eq(peer, want[i]);
    }
    /* The same URL again, the same options struct rewritten with a family
     * that rules the address out: the new options apply. */
    snprintf(url, sizeof url, "tcp://%s", want[1]);
    o.family = TETHER_FAMILY_V6;
    o.userdata = &k[2];
    dial(&k[2], url, &o);
    ck_assert(th_run_until_pred(cli_closed, &k[2], 5000));
    ck_assert_int_eq(k[2].connect_status, TETHER_ENOADDR);
    for (int i = 0; i < 2; i++) {
        tether_conn_close(k[i].c);
        ck_assert(th_run_until_pred(cli_closed, &k[i], 5000));
        tether_listener_close(l[i]);
    }
}
END_TEST

START_TEST(echo_100k_mixed_sizes_in_order)
{
    reset_state();
    tether_listener *l = start_server(NULL);
    struct cli k = {0};
    k.total = 100000;
    k.max_size = 70000;
    k.buf = malloc(k.max_size);
    tether_conn_opts o = cli_opts(&k);
    dial(&k, th_url_of(l), &o);
    ck_assert(th_run_until_pred(cli_closed, &k, 60000));
    ck_assert_int_eq(k.close_reason, TETHER_OK);
    ck_assert_int_eq(k.got, k.total);
    ck_assert(!k.bad);
    ck_assert_int_eq(S.msgs, k.total);
    tether_listener_close(l);
    free(k.buf);
}
END_TEST

START_TEST(backpressure_eagain_then_drain)
{
    reset_state();
    S.pause_new = true; /* a reader that does not read */
    S.echo = false;
    tether_listener *l = start_server(NULL);
    struct cli k = {0};
    k.total = 2000;
    k.max_size = 64 * 1024;
    k.buf = malloc(k.max_size);
    tether_conn_opts o = cli_opts(&k);
    o.send_hwm = 256 * 1024;
    o.send_lwm = 64 * 1024;
    o.on_message = NULL;
    dial(&k, th_url_of(l), &o);
    /* The client fills the kernel buffers and then its own queue. */
    uint64_t deadline = th_now_ms() + 10000;
    while (!k.saw_eagain && th_now_ms() < deadline) {
        tether_loop_run_once(th_loop, 20);
    }
    ck_assert(k.saw_eagain);
    ck_assert_uint_ge(tether_conn_queued(k.c), o.send_hwm);
    long sent_at_block = k.sent;
    ck_assert_int_lt(sent_at_block, k.total);
    /* Nothing more goes out while the reader is stalled. */
    for (int i = 0; i < 10; i++) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq(k.sent, sent_at_block);
    ck_assert_int_eq(k.drains, 0);
    /* The reader resumes: on_drain fires and the rest goes through. */
    ck_assert_ptr_nonnull(S.last);
    tether_conn_resume(S.last);
    deadline = th_now_ms() + 30000;
    while (S.msgs < k.total && th_now_ms() < deadline) {
        tether_loop_run_once(th_loop, 20);
    }
    ck_assert_int_ge(k.drains, 1);
    ck_assert_int_eq(k.sent, k.total);
    ck_assert_int_eq(S.msgs, k.total);
    tether_conn_close(k.c);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    ck_assert_int_eq(k.close_reason, TETHER_OK);
    tether_listener_close(l);
    free(k.buf);
}
END_TEST

static bool srv_closed_one(void *arg)
{
    (void)arg;
    return S.closed > 0;
}

START_TEST(peer_closes_mid_frame_is_truncated)
{
    reset_state();
    tether_listener *l = start_server(NULL);
    int fd = th_raw_connect(tether_listener_port(l));
    uint8_t frame[4 + 10] = {0, 0, 0, 100}; /* announces 100, sends 10 */
    th_raw_write(fd, frame, sizeof frame);
    /* Let the server read the partial frame before the FIN arrives. */
    for (int i = 0; i < 10; i++) {
        tether_loop_run_once(th_loop, 5);
    }
    ck_assert_int_eq(S.closed, 0);
    close(fd);
    ck_assert(th_run_until_pred(srv_closed_one, NULL, 5000));
    ck_assert_int_eq(S.msgs, 0);
    ck_assert_int_eq(S.last_reason, TETHER_ETRUNCATED);
    ck_assert_str_eq(S.last_detail,
                     "peer closed the connection after 14 of 104 bytes of a message");
    /* The peer's address is still known while on_close runs. */
    ck_assert_ptr_nonnull(strstr(S.last_peer, "127.0.0.1:"));
    tether_listener_close(l);
}
END_TEST

START_TEST(hostile_length_is_rejected_without_allocating)
{
    reset_state();
    tether_listener *l = start_server(NULL);
    int fd = th_raw_connect(tether_listener_port(l));
    uint8_t hdr[4] = {0xFF, 0xFF, 0xFF, 0xFF};
    th_raw_write(fd, hdr, sizeof hdr);
    ck_assert(th_raw_wait_eof(fd, 5000));
    ck_assert(th_run_until_pred(srv_closed_one, NULL, 5000));
    ck_assert_int_eq(S.last_reason, TETHER_EMSGSIZE);
    ck_assert_str_eq(S.last_detail,
                     "peer announced a 4294967295-byte message; the limit is 16777216");
    close(fd);
    tether_listener_close(l);
}
END_TEST

START_TEST(max_msg_exact_and_one_over)
{
    reset_state();
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.max_msg = 1000;
    tether_listener *l = start_server(&so);
    int fd = th_raw_connect(tether_listener_port(l));
    uint8_t buf[4 + 1001];
    memset(buf, 'x', sizeof buf);
    buf[0] = 0;
    buf[1] = 0;
    buf[2] = 0x03;
    buf[3] = 0xE8; /* exactly 1000 */
    th_raw_write(fd, buf, 4 + 1000);
    uint64_t deadline = th_now_ms() + 5000;
    while (S.msgs < 1 && th_now_ms() < deadline) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq(S.msgs, 1);
    buf[3] = 0xE9; /* 1001 */
    th_raw_write(fd, buf, 4 + 1001);
    ck_assert(th_run_until_pred(srv_closed_one, NULL, 5000));
    ck_assert_int_eq(S.msgs, 1);
    ck_assert_int_eq(S.last_reason, TETHER_EMSGSIZE);
    ck_assert_str_eq(S.last_detail, "peer announced a 1001-byte message; the limit is 1000");
    close(fd);
    tether_listener_close(l);
}
END_TEST

START_TEST(send_limits_and_bad_arguments)
{
    reset_state();
    tether_listener *l = start_server(NULL);
    struct cli k = {0};
    tether_conn_opts o = cli_opts(&k);
    o.max_msg = 100;
    dial(&k, th_url_of(l), &o);
    uint8_t big[101] = {0};
    ck_assert_int_eq(tether_conn_send(k.c, big, 101), TETHER_EMSGSIZE);
    ck_assert_int_eq(tether_conn_send(k.c, NULL, 5), TETHER_EINVAL);
    ck_assert_int_eq(tether_conn_send(NULL, big, 5), TETHER_EINVAL);
    ck_assert_int_eq(tether_conn_send(k.c, NULL, 0), TETHER_OK);
    tether_conn_close(k.c);
    ck_assert_int_eq(tether_conn_send(k.c, big, 5), TETHER_ECLOSED);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    ck_assert_int_eq(k.connect_status, TETHER_OK);
    ck_assert_int_eq(k.close_reason, TETHER_OK);

    /* Options that make no sense are refused with a reason. */
    tether_error err;
    tether_conn *c = NULL;
    tether_conn_opts bad = cli_opts(&k);
    bad.max_msg = 0;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, th_url_of(l), &bad, &err), TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "max_msg"));
    bad = cli_opts(&k);
    bad.send_lwm = bad.send_hwm + 1;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, th_url_of(l), &bad, &err), TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "send_lwm"));
    bad = cli_opts(&k);
    bad.framing = TETHER_FRAMING_CUSTOM;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, th_url_of(l), &bad, &err), TETHER_EINVAL);
    bad = cli_opts(&k);
    bad.size = 0; /* not initialised with tether_conn_opts_init */
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, th_url_of(l), &bad, &err), TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "tether_conn_opts_init"));
    tether_listener_close(l);
}
END_TEST

static bool srv_got(void *arg)
{
    return S.msgs >= *(long *)arg;
}

START_TEST(graceful_close_delivers_everything_queued)
{
    reset_state();
    S.echo = false;
    tether_listener *l = start_server(NULL);
    struct cli k = {0};
    tether_conn_opts o = cli_opts(&k);
    o.send_hwm = 64 * 1024 * 1024;
    o.on_message = NULL;
    dial(&k, th_url_of(l), &o);
    /* Queue 16 MB before the connection is even up, then close at once. */
    enum {
        N = 4000,
        SZ = 4096
    };
    uint8_t *buf = malloc(SZ);
    for (long i = 0; i < N; i++) {
        th_fill(buf, SZ, (uint32_t)i);
        ck_assert_int_eq(tether_conn_send(k.c, buf, SZ), TETHER_OK);
    }
    tether_conn_close(k.c);
    long want = N;
    ck_assert(th_run_until_pred(srv_got, &want, 30000));
    ck_assert(th_run_until_pred(cli_closed, &k, 10000));
    ck_assert_int_eq(k.connect_status, TETHER_OK);
    ck_assert_int_eq(k.close_reason, TETHER_OK);
    ck_assert(th_run_until_pred(srv_closed_one, NULL, 5000));
    ck_assert_int_eq(S.msgs, N);
    ck_assert_int_eq(S.last_reason, TETHER_EOF);
    free(buf);
    tether_listener_close(l);
}
END_TEST

static int zc_frees;

static void zc_free(void *data, void *ud)
{
    (void)ud;
    zc_frees++;
    free(data);
}

START_TEST(abort_drops_queue_and_releases_buffers)
{
    reset_state();
    S.pause_new = true;
    S.echo = false;
    tether_listener *l = start_server(NULL);
    struct cli k = {0};
    tether_conn_opts o = cli_opts(&k);
    o.send_hwm = 256 * 1024 * 1024;
    dial(&k, th_url_of(l), &o);
    zc_frees = 0;
    enum {
        N = 64,
        SZ = 1024 * 1024
    };
    /* Enough that it cannot all fit in the kernel's buffers. */
    for (int i = 0; i < N; i++) {
        uint8_t *b = malloc(SZ);
        memset(b, i, SZ);
        ck_assert_int_eq(tether_conn_send_zc(k.c, b, SZ, zc_free, NULL), TETHER_OK);
    }
    for (int i = 0; i < 20; i++) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_uint_gt(tether_conn_queued(k.c), 0);
    tether_conn_abort(k.c);
    ck_assert_int_eq(k.close_calls, 0); /* reported from the loop, not inside abort */
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    ck_assert_int_eq(k.close_reason, TETHER_ECANCELED);
    ck_assert_int_eq(zc_frees, N); /* every buffer released exactly once */
    /* A paused connection does not read, so it cannot see the FIN. */
    ck_assert_ptr_nonnull(S.last);
    tether_conn_abort(S.last);
    tether_listener_close(l);
}
END_TEST

/* wqueue.c (TETHER_TESTING): the n-th reference record allocated from now
 * fails. */
extern unsigned tether__test_ref_alloc_fail;

static bool cli_is_connected(void *arg)
{
    return ((struct cli *)arg)->connected;
}

static bool zc_freed(void *arg)
{
    return zc_frees >= *(int *)arg;
}

/* A zero-copy message whose reference record cannot be allocated: the
 * send fails before anything is written or queued, the buffer stays the
 * caller's (free_cb is not called), the connection goes on, and the same
 * buffer sent again arrives once. Both ways in: written from the caller's
 * memory (nothing queued ahead of it), and queued behind a message. */
START_TEST(send_zc_out_of_memory_keeps_the_buffer)
{
    reset_state();
    S.echo = false;
    tether_listener *l = start_server(NULL);
    struct cli k = {0};
    tether_conn_opts o = cli_opts(&k);
    dial(&k, th_url_of(l), &o);
    ck_assert(th_run_until_pred(cli_is_connected, &k, 5000));
    enum {
        SZ = 256 * 1024
    };
    static const uint8_t small[16];
    zc_frees = 0;
    long want = 0;
    for (int behind = 0; behind < 2; behind++) {
        uint8_t *b = malloc(SZ);
        ck_assert_ptr_nonnull(b);
        memset(b, 'a' + behind, SZ);
        if (behind) {
            /* Queued now, written when the loop next runs. */
            ck_assert_int_eq(tether_conn_send(k.c, small, sizeof small), TETHER_OK);
            want++;
            ck_assert_uint_gt(tether_conn_queued(k.c), 0);
        } else {
            ck_assert_uint_eq(tether_conn_queued(k.c), 0);
        }
        size_t queued = tether_conn_queued(k.c);
        tether__test_ref_alloc_fail = 1;
        ck_assert_int_eq(tether_conn_send_zc(k.c, b, SZ, zc_free, NULL), TETHER_ENOMEM);
        ck_assert_uint_eq(tether__test_ref_alloc_fail, 0);  /* it was tried, and failed */
        ck_assert_int_eq(zc_frees, behind);                 /* still the caller's */
        ck_assert_uint_eq(tether_conn_queued(k.c), queued); /* nothing of it queued */
        ck_assert_int_eq(k.close_calls, 0);
        ck_assert_int_eq(tether_conn_send_zc(k.c, b, SZ, zc_free, NULL), TETHER_OK);
        want++;
        ck_assert(th_run_until_pred(srv_got, &want, 5000));
        int freed = behind + 1;
        ck_assert(th_run_until_pred(zc_freed, &freed, 5000));
    }
    /* Nothing more arrives: the refused sends were not sent after all. */
    for (int i = 0; i < 10; i++) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq(S.msgs, want);
    ck_assert_int_eq(zc_frees, 2);
    ck_assert_int_eq(k.close_calls, 0);
    tether_conn_close(k.c);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    ck_assert_int_eq(k.close_reason, TETHER_OK);
    tether_listener_close(l);
}
END_TEST

/* ---- many clients -------------------------------------------------------- */

struct many {
    int done;
    int failed;
};

static void many_connect(tether_conn *c, int status, void *ud)
{
    struct many *m = ud;
    if (status != TETHER_OK) {
        m->failed++;
        return;
    }
    uint32_t id = (uint32_t)(uintptr_t)c;
    ck_assert_int_eq(tether_conn_send(c, &id, sizeof id), TETHER_OK);
}

static void many_message(tether_conn *c, const uint8_t *d, size_t n, void *ud)
{
    struct many *m = ud;
    uint32_t id = (uint32_t)(uintptr_t)c;
    if (n != sizeof id || memcmp(d, &id, sizeof id) != 0) {
        m->failed++;
    }
    m->done++;
    tether_conn_close(c);
}

static bool many_finished(void *arg)
{
    struct many *m = arg;
    return m->done + m->failed >= 1000;
}

START_TEST(thousand_concurrent_clients)
{
    reset_state();
    tether_listener *l = start_server(NULL);
    struct many m = {0, 0};
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.userdata = &m;
    o.on_connect = many_connect;
    o.on_message = many_message;
    for (int i = 0; i < 1000; i++) {
        tether_conn *c;
        ck_assert_int_eq(tether_conn_dial(&c, th_loop, th_url_of(l), &o, NULL), TETHER_OK);
    }
    ck_assert(th_run_until_pred(many_finished, &m, 60000));
    ck_assert_int_eq(m.failed, 0);
    ck_assert_int_eq(m.done, 1000);
    ck_assert_int_eq(S.accepted, 1000);
    tether_listener_close(l);
}
END_TEST

static bool accepted_reached(void *arg)
{
    return S.accepted >= *(const int *)arg;
}

/* The listener accepts a few clients per readiness report and leaves the
 * rest to the next report (level-triggered): a backlog that built up
 * before the loop ran must still be taken in full, and a client that
 * comes alone afterwards too. */
START_TEST(backlog_queued_before_the_loop_runs_is_accepted)
{
    reset_state();
    S.echo = false;
    tether_listener *l = start_server(NULL);
    int port = tether_listener_port(l);
    enum {
        N = 200
    };
    int fds[N + 1];
    for (int i = 0; i < N; i++) {
        fds[i] = th_raw_connect(port); /* (completes in the kernel's backlog) */
    }
    int want = N;
    ck_assert(th_run_until_pred(accepted_reached, &want, 30000));
    ck_assert_int_eq(S.accepted, N);
    fds[N] = th_raw_connect(port);
    want = N + 1;
    ck_assert(th_run_until_pred(accepted_reached, &want, 30000));
    char late[64];
    th_local_name(fds[N], late, sizeof late);
    ck_assert_str_eq(S.accepted_peer, late);
    tether_listener_stats st;
    ck_assert_int_eq(tether_listener_get_stats(l, &st), TETHER_OK);
    ck_assert_uint_eq(st.accepted, N + 1);
    ck_assert_uint_eq(st.rejected, 0);
    ck_assert_uint_eq(st.active, N + 1);
    for (int i = 0; i <= N; i++) {
        close(fds[i]);
    }
    tether_listener_close(l);
}
END_TEST

static void run_echo_over(const char *listen_url, const char *dial_url)
{
    reset_state();
    tether_listener *l = start_server_url(listen_url, NULL);
    struct cli k = {0};
    k.total = 2000;
    k.max_size = 20000;
    k.buf = malloc(k.max_size);
    tether_conn_opts o = cli_opts(&k);
    dial(&k, dial_url != NULL ? dial_url : tether_listener_url(l), &o);
    ck_assert(th_run_until_pred(cli_closed, &k, 30000));
    ck_assert_msg(k.close_reason == TETHER_OK, "closed with %s: %s",
                  tether_err_name(k.close_reason), k.detail);
    ck_assert_int_eq(k.got, k.total);
    ck_assert(!k.bad);
    tether_listener_close(l);
    free(k.buf);
}

START_TEST(unix_socket_path)
{
    char url[128];
    snprintf(url, sizeof url, "unix:///tmp/tether-test-%d.sock", (int)getpid());
    run_echo_over(url, NULL);
    /* The listener removes its socket file when it closes. */
    ck_assert_int_ne(access(url + strlen("unix://"), F_OK), 0);
}
END_TEST

START_TEST(unix_socket_abstract)
{
    char url[128];
    snprintf(url, sizeof url, "unix://@tether-test-%d", (int)getpid());
    run_echo_over(url, NULL);
}
END_TEST

START_TEST(unix_socket_stale_file_is_replaced)
{
    char path[96];
    char url[128];
    snprintf(path, sizeof path, "/tmp/tether-stale-%d.sock", (int)getpid());
    snprintf(url, sizeof url, "unix://%s", path);
    /* A socket file left by a process that died: bound, never listening. */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", path);
    unlink(path);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof sun), 0);
    close(fd);
    run_echo_over(url, NULL);
}
END_TEST

static bool have_ipv6_loopback(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd < 0) {
        return false;
    }
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool ok = bind(fd, (struct sockaddr *)&sin6, sizeof sin6) == 0;
    close(fd);
    return ok;
}

START_TEST(ipv6_loopback)
{
    if (!have_ipv6_loopback()) {
        fprintf(stderr, "SKIP ipv6_loopback: no ::1 on this machine\n");
        return;
    }
    reset_state();
    tether_listener *l = start_server_url("tcp://[::1]:0", NULL);
    ck_assert_ptr_nonnull(strstr(tether_listener_url(l), "tcp://[::1]:"));
    tether_listener_close(l);
    th_run_idle(100);
    run_echo_over("tcp://[::1]:0", NULL);
    /* The address recorded at accept (kept compact) reads back whole. */
    ck_assert_msg(strncmp(S.accepted_peer, "[::1]:", 6) == 0, "%s", S.accepted_peer);
}
END_TEST

/* A port on the loopback address addr (127.0.0.2 or ::1) that refuses
 * connections: bound, never listening (the socket stays in *keep_fd). */
static int refused_port_at(int family, const char *addr, int *keep_fd)
{
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    if (family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        ck_assert_int_eq(inet_pton(AF_INET6, addr, &sin6->sin6_addr), 1);
        sl = sizeof *sin6;
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        ck_assert_int_eq(inet_pton(AF_INET, addr, &sin->sin_addr), 1);
        sl = sizeof *sin;
    }
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&ss, sl), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&ss, &sl), 0);
    *keep_fd = fd;
    return ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                    : ((struct sockaddr_in *)&ss)->sin_port);
}

/* A refused dial to url: reported from the loop only, as
 * ECONNREFUSED with the detail naming the URL, and its socket closed. */
static void expect_refused(const char *url)
{
    int before = th_count_fds();
    struct cli k = {0};
    tether_conn_opts o = cli_opts(&k);
    dial(&k, url, &o);
    ck_assert_int_eq(k.connect_calls, 0);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    ck_assert_int_eq(k.connect_calls, 1);
    ck_assert_int_eq(k.connect_status, TETHER_ECONNREFUSED);
    ck_assert_int_eq(k.close_calls, 1);
    ck_assert_int_eq(k.close_reason, TETHER_ECONNREFUSED);
    char want[128];
    snprintf(want, sizeof want, "connect to %s: connection refused", url);
    ck_assert_str_eq(k.detail, want);
    th_run_idle(50);
    ck_assert_int_eq(th_count_fds(), before);
}

/* A dial to a loopback address asks the kernel whether the handshake
 * finished inside connect() (dial_direct.c); a refusal must still read
 * as one on every loopback address that shortcut covers: another
 * address of 127.0.0.0/8, and ::1. */
START_TEST(connection_refused_other_loopbacks)
{
    reset_state();
    int keep;
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.2:%d", refused_port_at(AF_INET, "127.0.0.2", &keep));
    expect_refused(url);
    close(keep);
    if (!have_ipv6_loopback()) {
        fprintf(stderr, "SKIP connection_refused_other_loopbacks [::1]: no ::1 on this machine\n");
        return;
    }
    snprintf(url, sizeof url, "tcp://[::1]:%d", refused_port_at(AF_INET6, "::1", &keep));
    expect_refused(url);
    close(keep);
}
END_TEST

/* A dial the loop remembers, to a loopback address with the default
 * socket options, takes a shorter way (tether__dial_express(),
 * dial_direct.c): the second of two dials with the same URL and options.
 * What the kernel does not finish inside connect() must still go the
 * usual ways: a refusal, and a handshake that never completes (a full
 * backlog: the connect timeout), the second time as the first. */
START_TEST(remembered_loopback_dial_falls_back)
{
    reset_state();
    int keep;
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", th_refused_port(&keep));
    for (int i = 0; i < 2; i++) {
        expect_refused(url);
    }
    close(keep);
    int fds[9]; /* the listener, then 8 connections nobody accepts */
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", th_hang_port(fds, 9));
    for (int i = 0; i < 2; i++) {
        expect_connect_timeout(url, 200);
    }
    for (int i = 0; i < 9; i++) {
        close(fds[i]);
    }
}
END_TEST

static bool all3_connected(void *arg)
{
    struct cli *k = arg;
    return k[0].connect_calls > 0 && k[1].connect_calls > 0 && k[2].connect_calls > 0;
}

/* The wish for acknowledgements that client_alo.c sets around a dial
 * reaches the connection (its HELLO, with the acks bit) on a remembered
 * loopback dial too, which without it takes the express way with no HELLO
 * at all: the first two dials (a new one, then a remembered one) want
 * acknowledgements, the third (remembered) does not. */
START_TEST(remembered_dial_keeps_the_ack_wish)
{
    reset_state();
    tether_listener *l = start_server(NULL);
    const char *url = th_url_of(l);
    struct cli k[3] = {{0}};
    tether_conn_opts o = cli_opts(&k[0]);
    for (int i = 0; i < 3; i++) {
        bool want = i < 2;
        o.userdata = &k[i];
        tether__ack_dial_want(want);
        dial(&k[i], url, &o);
        tether__ack_dial_want(false);
        ck_assert_int_eq(tether__conn_ack(k[i].c) != NULL, want);
        ck_assert_int_eq((k[i].c->flags & TETHER__CF_HELLO_SENT) != 0, want);
    }
    ck_assert(th_run_until_pred(all3_connected, k, 5000));
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(k[i].connect_status, TETHER_OK);
        tether_conn_close(k[i].c);
    }
    for (int i = 0; i < 3; i++) {
        ck_assert(th_run_until_pred(cli_closed, &k[i], 5000));
        ck_assert_int_eq(k[i].close_reason, TETHER_OK);
    }
    tether_listener_close(l);
}
END_TEST

START_TEST(localhost_without_dns)
{
    /* The server is on 127.0.0.1 only; localhost must reach it. */
    reset_state();
    char url[64];
    tether_listener *l = start_server(NULL);
    snprintf(url, sizeof url, "tcp://localhost:%d", tether_listener_port(l));
    struct cli k = {0};
    k.total = 10;
    k.max_size = 100;
    k.buf = malloc(k.max_size);
    tether_conn_opts o = cli_opts(&k);
    dial(&k, url, &o);
    ck_assert(th_run_until_pred(cli_closed, &k, 10000));
    ck_assert_int_eq(k.close_reason, TETHER_OK);
    ck_assert_int_eq(k.got, 10);
    free(k.buf);
    tether_listener_close(l);
}
END_TEST

/* ---- framings over a real connection ------------------------------------- */

static void run_framing(tether_framing_kind kind, const char *delim)
{
    reset_state();
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.framing = kind;
    so.line_delim = delim;
    tether_listener *l = start_server(&so);
    struct cli k = {0};
    k.total = 3000;
    k.max_size = 3000;
    k.buf = malloc(k.max_size);
    tether_conn_opts o = cli_opts(&k);
    o.framing = kind;
    o.line_delim = delim;
    if (kind == TETHER_FRAMING_LINE) {
        /* Lines cannot contain the delimiter: use a client that sends
         * printable text and checks it. */
        k.total = 0;
    }
    dial(&k, th_url_of(l), &o);
    if (kind == TETHER_FRAMING_LINE) {
        ck_assert(th_run_until(&k.connected, 5000));
        char line[200];
        for (int i = 0; i < 500; i++) {
            int n = snprintf(line, sizeof line, "line %d: %.*s", i, i % 150,
                             "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnop"
                             "qrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcd");
            ck_assert_int_eq(tether_conn_send(k.c, line, (size_t)n), TETHER_OK);
        }
        /* A payload containing the delimiter is refused, not sent. */
        ck_assert_int_eq(tether_conn_send(k.c, "a\r\nb", 4), TETHER_EINVAL);
        long want = 500;
        ck_assert(th_run_until_pred(srv_got, &want, 10000));
        tether_conn_close(k.c);
    }
    ck_assert(th_run_until_pred(cli_closed, &k, 30000));
    ck_assert_int_eq(k.close_reason, TETHER_OK);
    ck_assert(!k.bad);
    ck_assert_int_eq(k.got, k.total);
    tether_listener_close(l);
    free(k.buf);
}

START_TEST(varint_framing_end_to_end)
{
    run_framing(TETHER_FRAMING_VARINT, NULL);
}
END_TEST

START_TEST(line_framing_end_to_end)
{
    run_framing(TETHER_FRAMING_LINE, "\r\n");
}
END_TEST

/* ---- callbacks that close ------------------------------------------------ */

static void close_in_connect(tether_conn *c, int status, void *ud)
{
    struct cli *k = ud;
    k->connect_calls++;
    k->connect_status = status;
    tether_conn_abort(c);
    tether_conn_abort(c); /* idempotent */
    tether_conn_close(c);
}

START_TEST(abort_inside_on_connect)
{
    reset_state();
    tether_listener *l = start_server(NULL);
    struct cli k = {0};
    tether_conn_opts o = cli_opts(&k);
    o.on_connect = close_in_connect;
    dial(&k, th_url_of(l), &o);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    ck_assert_int_eq(k.connect_calls, 1);
    ck_assert_int_eq(k.close_calls, 1);
    ck_assert_int_eq(k.close_reason, TETHER_ECANCELED);
    tether_listener_close(l);
}
END_TEST

static void abort_in_message(tether_conn *c, const uint8_t *d, size_t n, void *ud)
{
    (void)d;
    (void)n;
    struct cli *k = ud;
    k->got++;
    tether_conn_abort(c);
}

START_TEST(abort_inside_on_message_stops_delivery)
{
    reset_state();
    tether_listener *l = start_server(NULL);
    struct cli k = {0};
    tether_conn_opts o = cli_opts(&k);
    o.on_message = abort_in_message;
    dial(&k, th_url_of(l), &o);
    ck_assert(th_run_until(&k.connected, 5000));
    /* Ten echoes arrive in one read; only the first is delivered. */
    for (int i = 0; i < 10; i++) {
        tether_conn_send(k.c, "x", 1);
    }
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    ck_assert_int_eq(k.got, 1);
    ck_assert_int_eq(k.close_reason, TETHER_ECANCELED);
    tether_listener_close(l);
}
END_TEST

START_TEST(close_before_connected_still_sends)
{
    reset_state();
    S.echo = false;
    tether_listener *l = start_server(NULL);
    struct cli k = {0};
    tether_conn_opts o = cli_opts(&k);
    dial(&k, th_url_of(l), &o);
    ck_assert_int_eq(tether_conn_send(k.c, "hello", 5), TETHER_OK);
    tether_conn_close(k.c);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    ck_assert_int_eq(k.connect_status, TETHER_OK);
    ck_assert_int_eq(k.close_reason, TETHER_OK);
    long want = 1;
    ck_assert(th_run_until_pred(srv_got, &want, 5000));
    tether_listener_close(l);
}
END_TEST

START_TEST(server_close_reports_eof_to_client)
{
    reset_state();
    tether_listener *l = start_server(NULL);
    struct cli k = {0};
    tether_conn_opts o = cli_opts(&k);
    dial(&k, th_url_of(l), &o);
    ck_assert(th_run_until(&k.connected, 5000));
    uint64_t deadline = th_now_ms() + 5000;
    while (S.last == NULL && th_now_ms() < deadline) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_ptr_nonnull(S.last);
    ck_assert_int_eq(tether_conn_send(S.last, "bye", 3), TETHER_OK);
    tether_conn_close(S.last);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    /* The server's last message arrived before its FIN. */
    ck_assert_int_eq(k.got, 1);
    ck_assert_int_eq(k.close_reason, TETHER_EOF);
    tether_listener_close(l);
}
END_TEST

START_TEST(no_fd_leak_over_many_connections)
{
    reset_state();
    tether_listener *l = start_server(NULL);
    int before = th_count_fds();
    for (int round = 0; round < 50; round++) {
        struct cli k = {0};
        k.total = 3;
        k.max_size = 100;
        k.buf = malloc(k.max_size);
        tether_conn_opts o = cli_opts(&k);
        dial(&k, th_url_of(l), &o);
        ck_assert(th_run_until_pred(cli_closed, &k, 5000));
        ck_assert_int_eq(k.close_reason, TETHER_OK);
        free(k.buf);
    }
    /* Server sides and lingering closes finish shortly after. */
    long want = 150;
    ck_assert(th_run_until_pred(srv_got, &want, 5000));
    uint64_t deadline = th_now_ms() + 5000;
    while (th_count_fds() != before && th_now_ms() < deadline) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq(th_count_fds(), before);
    tether_listener_close(l);
}
END_TEST

/* A connection's memory is reused for later ones on the same loop
 * (conn.c keeps the blocks of freed connections): each must still start
 * as new, whatever state the one before it ended in. */
struct reuse {
    int connected;
    int closed;
    long got;
    tether_stats at_connect;
    char err_at_connect[TETHER_ERROR_MSG_MAX];
    bool paused_before_close; /* a paused connection that is closed */
};

static void reuse_connect(tether_conn *c, int status, void *ud)
{
    struct reuse *r = ud;
    ck_assert_int_eq(status, TETHER_OK);
    r->connected++;
    ck_assert_int_eq(tether_conn_get_stats(c, &r->at_connect), TETHER_OK);
    snprintf(r->err_at_connect, sizeof r->err_at_connect, "%s", tether_conn_last_error(c));
    ck_assert_int_eq(tether_conn_send(c, "ping", 4), TETHER_OK);
}

static void reuse_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    struct reuse *r = ud;
    ck_assert_uint_eq(len, 4);
    ck_assert(memcmp(data, "ping", 4) == 0);
    r->got++;
    if (r->paused_before_close) {
        tether_conn_pause(c);
    }
    tether_conn_close(c);
}

static void reuse_close(tether_conn *c, int reason, void *ud)
{
    (void)c;
    struct reuse *r = ud;
    ck_assert_int_eq(reason, TETHER_OK);
    r->closed++;
}

static bool reuse_closed(void *arg)
{
    return ((struct reuse *)arg)->closed > 0;
}

START_TEST(reused_connection_memory_starts_clean)
{
    reset_state();
    tether_listener *l = start_server(NULL);
    int before = th_count_fds();
    for (int round = 0; round < 6; round++) {
        struct reuse r = {0};
        r.paused_before_close = round % 2 == 0;
        tether_conn_opts o;
        tether_conn_opts_init(&o);
        o.userdata = &r;
        o.on_connect = reuse_connect;
        o.on_message = reuse_message;
        o.on_close = reuse_close;
        tether_conn *c = NULL;
        th_dial(&c, th_url_of(l), &o);
        ck_assert(th_run_until_pred(reuse_closed, &r, 5000));
        ck_assert_int_eq(r.connected, 1);
        ck_assert_int_eq(r.got, 1);
        ck_assert_int_eq(r.closed, 1);
        /* Nothing of the connection before this one shows. */
        ck_assert_uint_eq(r.at_connect.bytes_in, 0);
        ck_assert_uint_eq(r.at_connect.msgs_in, 0);
        ck_assert_uint_eq(r.at_connect.msgs_out, 0);
        ck_assert_str_eq(r.err_at_connect, "");
        /* Its lingering close ends (the server closes too): the memory is
         * free for the next round's connection. */
        uint64_t deadline = th_now_ms() + 5000;
        while (th_count_fds() != before && th_now_ms() < deadline) {
            tether_loop_run_once(th_loop, 10);
        }
        ck_assert_int_eq(th_count_fds(), before);
    }
    ck_assert_int_eq(S.closed, 6);
    tether_listener_close(l);
}
END_TEST

/* Connections churned on one loop, dialled and accepted there, in waves
 * larger than the loop keeps freed blocks for (conn_mem.c: four), so
 * that blocks are both reused and given back: each connection reports
 * its end once, with its own numbers and the reason of the side that
 * closed first (the client in even waves, the server in odd ones), and
 * everything is released (descriptors here, memory at tether_loop_free()
 * under AddressSanitizer's leak check). */
#define CHURN_WAVE 12
#define CHURN_WAVES 6

struct churn {
    bool server_closes; /* this wave: the server closes after its echo */
    int connected;
    int cli_closed;
    int srv_closed;
    char why[160]; /* the first thing that was wrong, or "" */
};

static struct churn CH;

static void churn_fail(const char *what, int v)
{
    if (CH.why[0] == '\0') {
        snprintf(CH.why, sizeof CH.why, "%s (%d)", what, v);
    }
}

/* The numbers of a connection that carried one message each way of len
 * bytes (4-byte length prefix). */
static void churn_check_stats(tether_conn *c, size_t len, const char *side)
{
    tether_stats st;
    if (tether_conn_get_stats(c, &st) != TETHER_OK) {
        churn_fail(side, -1);
        return;
    }
    if (st.msgs_in != 1 || st.msgs_out != 1 || st.bytes_in != 4 + len || st.bytes_out != 4 + len ||
        st.queued_bytes != 0) {
        churn_fail(side, (int)st.msgs_in);
    }
}

static void churn_srv_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)ud;
    if (tether_conn_send(c, data, len) != TETHER_OK) {
        churn_fail("server echo", 0);
    }
    if (CH.server_closes) {
        tether_conn_close(c);
    }
}

static void churn_srv_close(tether_conn *c, int reason, void *ud)
{
    (void)ud;
    CH.srv_closed++;
    char peer[64];
    if (reason != (CH.server_closes ? TETHER_OK : TETHER_EOF)) {
        churn_fail("server reason", reason);
    } else if (!CH.server_closes &&
               strcmp(tether_conn_last_error(c), "connection closed by peer")) {
        churn_fail("server detail", 0);
    } else if (tether_conn_peer(c, peer, sizeof peer) != TETHER_OK) {
        churn_fail("server peer in on_close", 0); /* the socket is still open */
    }
    churn_check_stats(c, 8, "server stats");
}

static void churn_connect(tether_conn *c, int status, void *ud)
{
    if (status != TETHER_OK) {
        churn_fail("connect", status);
        return;
    }
    CH.connected++;
    char msg[8];
    snprintf(msg, sizeof msg, "%07d", (int)(intptr_t)ud);
    if (tether_conn_send(c, msg, 8) != TETHER_OK) {
        churn_fail("client send", 0);
    }
}

static void churn_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    char msg[8];
    snprintf(msg, sizeof msg, "%07d", (int)(intptr_t)ud);
    if (len != 8 || memcmp(data, msg, 8) != 0) {
        churn_fail("echo of another connection", (int)(intptr_t)ud);
    }
    if (!CH.server_closes) {
        tether_conn_close(c);
    }
}

static void churn_close(tether_conn *c, int reason, void *ud)
{
    (void)ud;
    CH.cli_closed++;
    if (reason != (CH.server_closes ? TETHER_EOF : TETHER_OK)) {
        churn_fail("client reason", reason);
    }
    churn_check_stats(c, 8, "client stats");
}

static bool churn_wave_done(void *arg)
{
    int want = *(int *)arg;
    return CH.why[0] != '\0' || (CH.cli_closed >= want && CH.srv_closed >= want);
}

START_TEST(churned_connections_report_once_and_release)
{
    memset(&CH, 0, sizeof CH);
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.on_message = churn_srv_message;
    so.on_close = churn_srv_close;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &so;
    tether_listener *l = th_listen_tcp(&lo);
    int before = th_count_fds();
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_connect = churn_connect;
    co.on_message = churn_message;
    co.on_close = churn_close;
    int n = 0;
    for (int wave = 0; wave < CHURN_WAVES; wave++) {
        CH.server_closes = wave % 2 == 1;
        for (int i = 0; i < CHURN_WAVE; i++, n++) {
            co.userdata = (void *)(intptr_t)n;
            tether_conn *c = NULL;
            th_dial(&c, th_url_of(l), &co);
        }
        ck_assert_msg(th_run_until_pred(churn_wave_done, &n, 10000), "wave %d: %d/%d closed", wave,
                      CH.cli_closed, CH.srv_closed);
        ck_assert_msg(CH.why[0] == '\0', "wave %d: %s", wave, CH.why);
        /* Exactly once each. */
        ck_assert_int_eq(CH.connected, n);
        ck_assert_int_eq(CH.cli_closed, n);
        ck_assert_int_eq(CH.srv_closed, n);
        /* The lingering sides end at the other's FIN: then no connection
         * is left on the loop, nor any descriptor of theirs. */
        tether_mem_stats ms;
        uint64_t deadline = th_now_ms() + 5000;
        do {
            ck_assert_int_ge(tether_loop_run_once(th_loop, 10), 0);
            ck_assert_int_eq(tether_loop_get_mem_stats(th_loop, &ms), TETHER_OK);
        } while ((ms.conns != 0 || th_count_fds() != before) && th_now_ms() < deadline);
        ck_assert_uint_eq(ms.conns, 0);
        ck_assert_uint_eq(ms.output_bytes, 0);
        ck_assert_uint_eq(ms.input_bytes, 0);
        ck_assert_int_eq(th_count_fds(), before);
    }
    tether_listener_close(l);
}
END_TEST

/* tether_loop_run_once() that ran deferred work (here the on_connect of a
 * loopback dial made outside the loop, which the kernel had finished
 * before connect() returned) does not go on to block: what the caller
 * waited for has happened. The peer is a bare listening socket that never
 * accepts or sends, so nothing else would ever wake the loop; alarm() is
 * the hang guard. */
struct once {
    int connected;
    int status;
    bool closed;
};

static void once_connect(tether_conn *c, int status, void *ud)
{
    (void)c;
    struct once *o = ud;
    o->connected++;
    o->status = status;
}

static void once_close(tether_conn *c, int reason, void *ud)
{
    (void)c;
    (void)reason;
    ((struct once *)ud)->closed = true;
}

/* A raw listener on loopback that accepts only when the test does: its
 * descriptor, and its URL in url. */
static int once_listen(char *url, size_t cap)
{
    int port;
    int lfd = th_raw_listen(4, &port);
    snprintf(url, cap, "tcp://127.0.0.1:%d", port);
    return lfd;
}

/* Dials url with once_connect() and once_close() counting into k. */
static tether_conn *once_dial(const char *url, struct once *k)
{
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.userdata = k;
    o.on_connect = once_connect;
    o.on_close = once_close;
    tether_conn *c = NULL;
    th_dial(&c, url, &o);
    return c;
}

/* ---- a connection's first message ---------------------------------------- */

#define FIRST_A 16000 /* under the size written from the caller's memory anyway */
#define FIRST_B 10

struct first {
    int rv[2];
    size_t queued; /* tether_conn_queued() right after the first send */
    bool connected;
    bool closed;
};

static void first_connect(tether_conn *c, int status, void *ud)
{
    struct first *f = ud;
    ck_assert_int_eq(status, TETHER_OK);
    static uint8_t a[FIRST_A];
    uint8_t b[FIRST_B];
    th_fill(a, sizeof a, 1);
    th_fill(b, sizeof b, 2);
    f->rv[0] = tether_conn_send(c, a, sizeof a);
    f->queued = tether_conn_queued(c);
    f->rv[1] = tether_conn_send(c, b, sizeof b);
    f->connected = true;
}

static void first_close(tether_conn *c, int reason, void *ud)
{
    (void)c;
    (void)reason;
    ((struct first *)ud)->closed = true;
}

/* The first message goes to the socket from inside tether_conn_send()
 * when nothing is queued. A peer that does not read yet (small buffers on
 * both sides) takes only part of it: the rest is queued, the next message
 * queues behind it, and the peer receives both whole and in order. */
START_TEST(first_message_partly_written_keeps_order)
{
    int port;
    int lfd = th_raw_listen(4, &port);
    int small = 2048;
    /* (Set on the listener, before any connection, so that the accepted
     * socket's window starts small.) */
    ck_assert_int_eq(setsockopt(lfd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    struct first f = {0};
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.userdata = &f;
    o.on_connect = first_connect;
    o.on_close = first_close;
    o.sndbuf = 2048;
    tether_conn *c = NULL;
    th_dial(&c, url, &o);
    ck_assert(th_run_until(&f.connected, 5000));
    ck_assert_int_eq(f.rv[0], TETHER_OK);
    ck_assert_int_eq(f.rv[1], TETHER_OK);
    ck_assert_uint_gt(f.queued, 0); /* the socket did not take all of it */
    ck_assert_uint_lt(f.queued, 4 + FIRST_A);
    int fd = accept(lfd, NULL, NULL);
    ck_assert_int_ge(fd, 0);
    enum {
        WANT = 4 + FIRST_A + 4 + FIRST_B
    };
    static uint8_t got[WANT + 1];
    size_t have = 0;
    uint64_t deadline = th_now_ms() + 10000;
    while (have < WANT && th_now_ms() < deadline) {
        ck_assert_int_ge(tether_loop_run_once(th_loop, 10), 0);
        ssize_t n = recv(fd, got + have, sizeof got - have, MSG_DONTWAIT);
        if (n > 0) {
            have += (size_t)n;
        } else {
            ck_assert(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
        }
    }
    ck_assert_uint_eq(have, WANT);
    uint8_t want_a[FIRST_A];
    uint8_t want_b[FIRST_B];
    th_fill(want_a, sizeof want_a, 1);
    th_fill(want_b, sizeof want_b, 2);
    const uint8_t hdr_a[4] = {0, 0, FIRST_A >> 8, FIRST_A & 0xff};
    const uint8_t hdr_b[4] = {0, 0, 0, FIRST_B};
    ck_assert_mem_eq(got, hdr_a, 4);
    ck_assert_mem_eq(got + 4, want_a, FIRST_A);
    ck_assert_mem_eq(got + 4 + FIRST_A, hdr_b, 4);
    ck_assert_mem_eq(got + 8 + FIRST_A, want_b, FIRST_B);
    ck_assert_uint_eq(tether_conn_queued(c), 0);
    tether_conn_close(c);
    close(fd);
    close(lfd);
    ck_assert(th_run_until(&f.closed, 5000));
}
END_TEST

START_TEST(run_once_returns_after_on_connect)
{
    char url[64];
    int lfd = once_listen(url, sizeof url);
    struct once k = {0};
    tether_conn *c = once_dial(url, &k);
    ck_assert_int_eq(k.connected, 0); /* never from inside the dial */
    alarm(20);
    for (int i = 0; i < 1000 && k.connected == 0; i++) {
        ck_assert_int_gt(tether_loop_run_once(th_loop, -1), 0);
    }
    alarm(0);
    ck_assert_int_eq(k.connected, 1);
    ck_assert_int_eq(k.status, TETHER_OK);
    /* The peer's reset (the listener closes with the connection still
     * queued) ends the lingering close. */
    tether_conn_close(c);
    close(lfd);
    ck_assert(th_run_until(&k.closed, 5000));
    ck_assert(th_run_idle(5000));
}
END_TEST

/* Runs th_loop until *n is at least 1, at most ms; returns whether it got there. */
static bool run_until_count(const int *n, int ms)
{
    uint64_t deadline = th_now_ms() + (uint64_t)ms;
    while (*n < 1 && th_now_ms() < deadline) {
        ck_assert_int_ge(tether_loop_run_once(th_loop, 20), 0);
    }
    return *n >= 1;
}

/* A lingering close ends at the peer's FIN, or at the linger bound (2 s)
 * with a peer that never closes, each connection at its own deadline. The
 * peers are bare sockets: a's closes early, b's stays open. b lingers from
 * later than a, so b ends only once the loop's linger timer, armed for a's
 * deadline (a left the list early), found b not due yet and waited on. */
START_TEST(linger_ends_at_fin_or_its_own_deadline)
{
    char url[64];
    int lfd = once_listen(url, sizeof url);
    struct once ka = {0};
    struct once kb = {0};
    /* One at a time, so that the accept order says whose peer is whose. */
    tether_conn *a = once_dial(url, &ka);
    ck_assert(run_until_count(&ka.connected, 5000));
    int pa = accept(lfd, NULL, NULL);
    ck_assert_int_ge(pa, 0);
    tether_conn *b = once_dial(url, &kb);
    ck_assert(run_until_count(&kb.connected, 5000));
    int pb = accept(lfd, NULL, NULL);
    ck_assert_int_ge(pb, 0);

    tether_conn_close(a);
    ck_assert(th_run_until(&ka.closed, 5000));
    bool never = false;
    th_run_until(&never, 300); /* b's deadline comes later than a's */
    uint64_t t1 = th_now_ms();
    tether_conn_close(b);
    ck_assert(th_run_until(&kb.closed, 5000));
    close(pa); /* a's lingering ends at this FIN */
    /* b's ends at its own deadline (hang guard 10 s): not before it. */
    ck_assert(th_run_idle(10000));
    ck_assert_uint_ge(th_now_ms() - t1, 1900);
    char byte;
    ck_assert_int_eq(recv(pb, &byte, 1, MSG_DONTWAIT), 0); /* b sent its FIN */
    close(pb);
    close(lfd);
}
END_TEST

/* A child forked while a connection lingers holds its socket too: the
 * same open file, and with it the socket's epoll registration. When the
 * peer's FIN ends the lingering and the connection closes its socket, the
 * registration must be gone first: the socket stays readable (at EOF) in
 * the child, and epoll would report it for the freed connection on every
 * wait (the loop spins; AddressSanitizer sees freed memory read). */
START_TEST(linger_end_unregisters_before_close)
{
    char url[64];
    int lfd = once_listen(url, sizeof url);
    struct once k = {0};
    tether_conn *c = once_dial(url, &k);
    ck_assert(run_until_count(&k.connected, 5000));
    int pc = accept(lfd, NULL, NULL);
    ck_assert_int_ge(pc, 0);
    tether_conn_close(c);
    ck_assert(th_run_until(&k.closed, 5000)); /* lingering now */
    int gate[2];
    ck_assert_int_eq(pipe(gate), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* Keeps the connection's socket (and nothing of the peer's) until
         * the parent closes the gate. */
        close(pc);
        close(lfd);
        close(gate[1]);
        alarm(30);
        char b;
        ssize_t r = read(gate[0], &b, 1);
        _exit(r == 0 ? 0 : 1);
    }
    close(gate[0]);
    close(pc); /* the peer's FIN ends the lingering */
    ck_assert(th_run_idle(5000));
    /* Nothing is left to wake the loop: each wait lasts its 100 ms. */
    uint64_t t0 = th_now_ms();
    int polls = 0;
    while (th_now_ms() - t0 < 300 && polls < 1000) {
        ck_assert_int_ge(tether_loop_run_once(th_loop, 100), 0);
        polls++;
    }
    close(gate[1]);
    int st = -1;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ck_assert_int_lt(polls, 50);
    close(lfd);
}
END_TEST

START_TEST(peer_addresses)
{
    reset_state();
    tether_listener *l = start_server(NULL);
    struct cli k = {0};
    tether_conn_opts o = cli_opts(&k);
    dial(&k, th_url_of(l), &o);
    ck_assert(th_run_until(&k.connected, 5000));
    char buf[64];
    ck_assert_int_eq(tether_conn_peer(k.c, buf, sizeof buf), TETHER_OK);
    char want[64];
    snprintf(want, sizeof want, "127.0.0.1:%d", tether_listener_port(l));
    ck_assert_str_eq(buf, want);
    ck_assert_int_eq(tether_conn_peer(k.c, buf, 3), TETHER_EINVAL);
    ck_assert_ptr_eq(tether_conn_loop(k.c), th_loop);
    ck_assert_ptr_eq(tether_conn_userdata(k.c), &k);
    ck_assert_str_eq(tether_conn_last_error(k.c), "");
    tether_conn_close(k.c);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    tether_listener_close(l);
}
END_TEST

START_TEST(listen_errors_name_the_cause)
{
    reset_state();
    tether_listener *l = start_server(NULL);
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", tether_listener_port(l));
    tether_listener *l2 = NULL;
    tether_error err;
    ck_assert_int_eq(tether_listen(&l2, th_loop, url, NULL, &err), TETHER_EADDRINUSE);
    ck_assert_ptr_nonnull(strstr(err.message, "Address already in use"));
    ck_assert_int_eq(tether_listen(&l2, th_loop, "tcp://192.0.2.1:0", NULL, &err),
                     TETHER_EADDRNOTAVAIL);
    ck_assert_int_eq(tether_listen(&l2, th_loop, "tcp://example.com:80", NULL, &err),
                     TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "numeric address"));
    tether_listener_close(l);
    tether_listener_close(l); /* idempotent */
}
END_TEST

/* ---- fan-out ----------------------------------------------------------------- */

static tether_conn *fan[2];
static int nfan;

static void fan_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    if (nfan < 2) {
        fan[nfan++] = c;
    }
}

static void fan_message(tether_conn *c, const uint8_t *d, size_t n, void *ud)
{
    (void)d;
    (void)n;
    (void)ud;
    tether_conn *other = c == fan[0] ? fan[1] : fan[0];
    if (other != NULL) {
        /* Queues a flush of `other` for later in this iteration, then ends
         * it: the flush must not touch it once it is freed. */
        ck_assert_int_eq(tether_conn_send(other, "x", 1), TETHER_OK);
        tether_conn_abort(other);
        fan[0] = fan[1] = NULL;
    }
}

START_TEST(abort_after_send_from_another_connection)
{
    reset_state();
    nfan = 0;
    fan[0] = fan[1] = NULL;
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.on_message = fan_message;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = fan_accept;
    lo.conn_opts = &so;
    tether_listener *l = NULL;
    ck_assert_int_eq(tether_listen(&l, th_loop, "tcp://127.0.0.1:0", &lo, NULL), TETHER_OK);
    struct cli a = {0};
    struct cli b = {0};
    tether_conn_opts oa = cli_opts(&a);
    tether_conn_opts ob = cli_opts(&b);
    dial(&a, th_url_of(l), &oa);
    dial(&b, th_url_of(l), &ob);
    uint64_t deadline = th_now_ms() + 5000;
    while (nfan < 2 && th_now_ms() < deadline) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq(nfan, 2);
    ck_assert_int_eq(tether_conn_send(a.c, "hi", 2), TETHER_OK);
    /* B's server side is aborted, so B sees its peer go away. */
    ck_assert(th_run_until_pred(cli_closed, &b, 5000));
    ck_assert(b.close_reason == TETHER_EOF || b.close_reason == TETHER_ECONNRESET);
    tether_conn_close(a.c);
    ck_assert(th_run_until_pred(cli_closed, &a, 5000));
    tether_listener_close(l);
}
END_TEST

/* ---- SIGPIPE ---------------------------------------------------------------- */

static void flood_drain(tether_conn *c, void *ud)
{
    (void)ud;
    static uint8_t chunk[64 * 1024];
    while (tether_conn_send(c, chunk, sizeof chunk) == TETHER_OK) {
    }
}

START_TEST(peer_gone_while_writing_does_not_raise_sigpipe)
{
    /* The default disposition kills the process: if any write raised
     * SIGPIPE, this test's process would die instead of passing. A Unix
     * socket whose peer has closed fails the very next write with EPIPE,
     * which is exactly when the kernel raises SIGPIPE unless the write
     * says MSG_NOSIGNAL. */
    signal(SIGPIPE, SIG_DFL);
    reset_state();
    S.echo = false;
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.on_drain = flood_drain;
    char name[64];
    snprintf(name, sizeof name, "tether-sigpipe-%d", (int)getpid());
    char url[80];
    snprintf(url, sizeof url, "unix://@%s", name);
    tether_listener *l = start_server_url(url, &so);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path + 1, name, strlen(name));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sl), 0);
    uint64_t deadline = th_now_ms() + 5000;
    while (S.last == NULL && th_now_ms() < deadline) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_ptr_nonnull(S.last);
    flood_drain(S.last, NULL);
    for (int i = 0; i < 5; i++) {
        tether_loop_run_once(th_loop, 5);
    }
    ck_assert_uint_gt(tether_conn_queued(S.last), 0);
    close(fd);
    ck_assert(th_run_until_pred(srv_closed_one, NULL, 5000));
    ck_assert_int_eq(S.last_reason, TETHER_ECONNRESET);
    tether_listener_close(l);
}
END_TEST

/* ---- exact read boundaries ---------------------------------------------- */

/* Bytes written to a Unix socket are queued at the receiver before write()
 * returns, so each step below is seen by exactly one read: this pins down
 * the read paths that keep a partial frame between reads. */
struct stepper {
    int fd;
    uint8_t buf[1 << 20];
    size_t len;
    tether_conn *srv;
    int got;
    bool pause_first;
};

static struct stepper *SP;

static void sp_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    SP->srv = c;
}

static void sp_message(tether_conn *c, const uint8_t *d, size_t n, void *ud)
{
    (void)d;
    (void)n;
    (void)ud;
    if (++SP->got == 1 && SP->pause_first) {
        tether_conn_pause(c);
    }
}

static void sp_put(char ch, size_t n)
{
    memset(SP->buf + SP->len, ch, n);
    SP->len += n;
}

static void sp_frames(size_t nframes, size_t payload)
{
    for (size_t i = 0; i < nframes; i++) {
        sp_put(0, 2);
        sp_put((char)(payload >> 8), 1);
        sp_put((char)payload, 1);
        sp_put('x', payload);
    }
}

static void sp_step(void)
{
    if (SP->len > 0) {
        ck_assert_int_eq((int)write(SP->fd, SP->buf, SP->len), (int)SP->len);
    }
    SP->len = 0;
    for (int i = 0; i < 20; i++) {
        tether_loop_run_once(th_loop, 5);
    }
}

static tether_listener *sp_start(tether_framing_kind framing, bool pause_first)
{
    SP = calloc(1, sizeof *SP);
    SP->pause_first = pause_first;
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.framing = framing;
    co.on_message = sp_message;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &co;
    lo.on_accept = sp_accept;
    char name[64];
    snprintf(name, sizeof name, "tether-steps-%d-%d", (int)getpid(), (int)framing);
    char url[80];
    snprintf(url, sizeof url, "unix://@%s", name);
    tether_listener *l = NULL;
    ck_assert_int_eq(tether_listen(&l, th_loop, url, &lo, NULL), TETHER_OK);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path + 1, name, strlen(name));
    SP->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    socklen_t sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
    ck_assert_int_eq(connect(SP->fd, (struct sockaddr *)&sa, sl), 0);
    sp_step();
    ck_assert_ptr_nonnull(SP->srv);
    return l;
}

static void sp_finish(tether_listener *l)
{
    close(SP->fd);
    tether_listener_close(l);
    sp_step();
    free(SP);
    SP = NULL;
}

START_TEST(long_line_tail_is_not_stranded)
{
    tether_listener *l = sp_start(TETHER_FRAMING_LINE, false);
    /* Read 1 delivers A and keeps 70000 bytes of B. */
    sp_put('a', 1000);
    sp_put('\n', 1);
    sp_put('b', 70000);
    sp_step();
    /* Read 2 grows the partial-line buffer; B ends, part of C stays. */
    sp_put('b', 100);
    sp_put('\n', 1);
    sp_put('c', 69899);
    sp_step();
    /* Read 3 fills that buffer and spills the end of C into the loop's
     * buffer: C must be delivered now, not when more bytes arrive. */
    sp_put('c', 70111);
    sp_put('\n', 1);
    sp_step();
    ck_assert_int_eq(SP->got, 3);
    sp_finish(l);
}
END_TEST

START_TEST(frames_after_resume_are_not_stranded)
{
    tether_listener *l = sp_start(TETHER_FRAMING_LEN32, true);
    /* 200 frames and part of the 201st; delivery pauses after the first. */
    sp_frames(200, 400);
    sp_put(0, 2);
    sp_put(1, 1);
    sp_put((char)0x90, 1);
    sp_put('x', 196);
    sp_step();
    ck_assert_int_eq(SP->got, 1);
    tether_conn_resume(SP->srv);
    sp_step();
    ck_assert_int_eq(SP->got, 200);
    /* The rest of 201 and 200 more frames, more than the kept buffer holds. */
    sp_put('x', 204);
    sp_frames(200, 400);
    sp_step();
    ck_assert_int_eq(SP->got, 401);
    sp_finish(l);
}
END_TEST

/* ---- descriptor exhaustion ----------------------------------------------- */

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

START_TEST(emfile_backs_off_and_recovers)
{
    reset_state();
    S.echo = false;
    tether_listener *l = start_server(NULL);
    int port = tether_listener_port(l);
    /* The clients' sockets exist before the limit is set, so only the
     * server's accepted descriptors compete for the room left: the
     * listener meets EMFILE at a known client whether or not it probes
     * for more after each accept. */
    enum {
        NCLIENTS = 32
    };
    int fds[NCLIENTS];
    for (int i = 0; i < NCLIENTS; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        ck_assert_int_ge(fds[i], 0);
    }
    /* Leave room for a few descriptors only. check runs each test in its
     * own process, so the limit does not leak into other tests. */
    int used = th_count_fds();
    struct rlimit rl = {.rlim_cur = (rlim_t)used + 12, .rlim_max = (rlim_t)used + 12};
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    /* Connect clients one at a time until the server cannot accept any
     * more, waiting (without a fixed pace) for each to be accepted. */
    int n = 0;
    while (n < NCLIENTS && S.errors == 0) {
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        connect(fds[n], (struct sockaddr *)&sin, sizeof sin);
        n++;
        uint64_t until = th_now_ms() + 10000;
        while (S.accepted < n && S.errors == 0 && th_now_ms() < until) {
            tether_loop_run_once(th_loop, 20);
        }
    }
    ck_assert_int_ge(S.errors, 1);
    ck_assert_int_eq(S.last_error_code, TETHER_EMFILE);
    int accepted = S.accepted;
    /* A backlog of clients waits while descriptors are exhausted: the loop
     * must sleep between retries rather than spin on accept(). */
    double c0 = cpu_seconds();
    uint64_t t0 = th_now_ms();
    while (th_now_ms() - t0 < 1000) {
        tether_loop_run_once(th_loop, 100);
    }
    double used_cpu = cpu_seconds() - c0;
    ck_assert_msg(used_cpu < 0.5, "listener used %.2f s of CPU in 1 s while out of fds", used_cpu);
    /* One report per episode, not one per retry. */
    ck_assert_int_eq(S.errors, 1);
    /* Free descriptors: close the accepted connections from the server's
     * side by closing their clients. */
    for (int i = 0; i < accepted && i < n - 1; i++) {
        close(fds[i]);
        fds[i] = -1;
    }
    /* Then a new client must be accepted: the listener resumed. On Linux
     * the client that waited in the backlog is accepted first; some
     * sandboxed kernels drop a connection whose accept() failed with
     * EMFILE, so only the new one is certain to be there. */
    int late = th_raw_connect(port);
    char want[64];
    th_local_name(late, want, sizeof want);
    uint64_t deadline = th_now_ms() + 10000;
    while (strcmp(S.accepted_peer, want) != 0 && th_now_ms() < deadline) {
        tether_loop_run_once(th_loop, 20);
    }
    /* What became of the client that waited, for the failure message. */
    char b;
    ssize_t r = recv(fds[n - 1], &b, 1, MSG_DONTWAIT | MSG_PEEK);
    const char *waiter = r == 0                         ? "saw EOF"
                         : r < 0 && errno == ECONNRESET ? "was reset"
                         : r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
                             ? "is open"
                             : "is in an unexpected state";
    ck_assert_msg(strcmp(S.accepted_peer, want) == 0,
                  "late client %s not accepted within 10 s (accepted %d before, %d now, "
                  "%d listener errors; the waiting client %s)",
                  want, accepted, S.accepted, S.errors, waiter);
    ck_assert_int_gt(S.accepted, accepted);
    close(late);
    for (int i = 0; i < NCLIENTS; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
    }
    tether_listener_close(l);
}
END_TEST

/* A paused connection watches nothing, but the kernel reports errors and
 * hang-ups whether asked or not: a peer's reset must not make the loop spin
 * until resume, and resume must then report the reset. */
START_TEST(reset_while_paused_does_not_spin)
{
    reset_state();
    S.pause_new = true;
    S.echo = false;
    tether_listener *l = start_server(NULL);
    int fd = th_raw_connect(tether_listener_port(l));
    uint64_t until = th_now_ms() + 5000;
    while (S.last == NULL && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_ptr_nonnull(S.last);
    tether_conn *srv = S.last;
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(fd); /* RST */
    int spins = 0;
    double c0 = cpu_seconds();
    uint64_t t0 = th_now_ms();
    while (th_now_ms() - t0 < 500) {
        tether_loop_run_once(th_loop, 100);
        spins++;
    }
    double used_cpu = cpu_seconds() - c0;
    /* Waiting 100 ms at a time, half a second is about 5 iterations. */
    ck_assert_msg(spins < 50, "%d loop iterations in 0.5 s (%.2f s of CPU)", spins, used_cpu);
    ck_assert_int_eq(S.closed, 0);
    tether_conn_resume(srv);
    until = th_now_ms() + 5000;
    while (S.closed == 0 && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq(S.closed, 1);
    ck_assert_int_eq(S.last_reason, TETHER_ECONNRESET);
    tether_listener_close(l);
}
END_TEST

/* The first message of an established connection is written from the
 * caller's memory when nothing stands in its way (wqueue.c's
 * conn_send_first()); every refusal still comes with its own code, and
 * a refused first message leaves the next one first. */
START_TEST(first_send_on_established_connection_checks_everything)
{
    reset_state();
    S.echo = false;
    tether_listener *l = start_server(NULL);
    struct cli k = {0};
    tether_conn_opts o = cli_opts(&k);
    o.max_msg = 100;
    dial(&k, th_url_of(l), &o);
    ck_assert(th_run_until_pred(cli_is_connected, &k, 5000));
    uint8_t big[101] = {0};
    ck_assert_int_eq(tether_conn_send(k.c, big, sizeof big), TETHER_EMSGSIZE);
    ck_assert_int_eq(tether_conn_send(k.c, NULL, 5), TETHER_EINVAL);
    tether_stats st;
    ck_assert_int_eq(tether_conn_get_stats(k.c, &st), TETHER_OK);
    ck_assert_uint_eq(st.msgs_out, 0);
    ck_assert_int_eq(tether_conn_send(k.c, big, 100), TETHER_OK);
    ck_assert_int_eq(tether_conn_get_stats(k.c, &st), TETHER_OK);
    ck_assert_uint_eq(st.msgs_out, 1);
    ck_assert_uint_eq(st.bytes_out, 104);
    long one = 1;
    ck_assert(th_run_until_pred(srv_got, &one, 5000));
    ck_assert_int_eq(S.msgs, 1);
    tether_conn_close(k.c);
    ck_assert_int_eq(tether_conn_send(k.c, big, 5), TETHER_ECLOSED);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    tether_listener_close(l);
}
END_TEST

/* The peer's FIN ends an accepted connection from the read that finds
 * it, in one step when nothing else is due (conn_read.c's
 * conn_eof_ends()), else through the deferred-work list. Either way
 * on_close runs once with TETHER_EOF and the detail, the connection's
 * numbers still readable, the API safe to call on it (close a no-op,
 * send refused), and the listener counts it gone. For the general path,
 * one client's message makes the server close another connection (work
 * deferred to the end of the dispatch) in the same batch of events as a
 * third client's FIN, which it precedes. */
static struct {
    bool close_first; /* on_message closes the first accepted connection */
    tether_conn *first;
    int accepted;
    int msgs;
    int closed;
    int eofs;
    int bad_reason;
    int send_rv;
    uint64_t msgs_in; /* of the last connection ended by its peer */
    bool detail_ok;
} FE;

static void fin_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    if (FE.accepted++ == 0 && FE.close_first) {
        FE.first = c;
    }
}

static void fin_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)c;
    (void)data;
    (void)len;
    (void)ud;
    FE.msgs++;
    if (FE.first != NULL) {
        tether_conn_close(FE.first); /* deferred work */
        FE.first = NULL;
    }
}

static void fin_close(tether_conn *c, int reason, void *ud)
{
    (void)ud;
    FE.closed++;
    if (reason == TETHER_OK) {
        return; /* closed by fin_message */
    }
    FE.eofs++;
    if (reason != TETHER_EOF) {
        FE.bad_reason = reason;
    }
    FE.detail_ok = strcmp(tether_conn_last_error(c), "connection closed by peer") == 0;
    tether_stats st;
    FE.msgs_in = tether_conn_get_stats(c, &st) == TETHER_OK ? st.msgs_in : UINT64_MAX;
    tether_conn_close(c);
    FE.send_rv = tether_conn_send(c, "x", 1);
}

static bool fin_until(void *arg)
{
    const int *want = arg; /* {accepted, msgs, eofs} */
    return FE.accepted >= want[0] && FE.msgs >= want[1] && FE.eofs >= want[2];
}

static bool fin_none_active(void *arg)
{
    tether_listener_stats ls;
    return tether_listener_get_stats(arg, &ls) == TETHER_OK && ls.active == 0;
}

START_TEST(peer_fin_ends_accepted_connection_once)
{
    memset(&FE, 0, sizeof FE);
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.on_message = fin_message;
    so.on_close = fin_close;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &so;
    lo.on_accept = fin_accept;
    tether_listener *l = th_listen_tcp(&lo);
    int port = tether_listener_port(l);
    const uint8_t msg[7] = {0, 0, 0, 3, 'a', 'b', 'c'};

    /* One step: a lone client sends, then closes once it is read. */
    int a = th_raw_connect(port);
    th_raw_write(a, msg, sizeof msg);
    ck_assert(th_run_until_pred(fin_until, (int[]){1, 1, 0}, 5000));
    ck_assert_int_eq(shutdown(a, SHUT_WR), 0);
    ck_assert(th_run_until_pred(fin_until, (int[]){1, 1, 1}, 5000));
    ck_assert_int_eq(FE.bad_reason, 0);
    ck_assert(FE.detail_ok);
    ck_assert_uint_eq(FE.msgs_in, 1);
    ck_assert_int_eq(FE.send_rv, TETHER_ECLOSED);
    ck_assert(th_raw_wait_eof(a, 5000));
    close(a);

    /* Through the deferred-work list (see above). */
    memset(&FE, 0, sizeof FE);
    FE.close_first = true;
    int first = th_raw_connect(port);
    ck_assert(th_run_until_pred(fin_until, (int[]){1, 0, 0}, 5000));
    int x = th_raw_connect(port);
    int y = th_raw_connect(port);
    ck_assert(th_run_until_pred(fin_until, (int[]){3, 0, 0}, 5000));
    th_raw_write(x, msg, sizeof msg);
    ck_assert_int_eq(shutdown(y, SHUT_WR), 0);
    ck_assert(th_run_until_pred(fin_until, (int[]){3, 1, 1}, 5000));
    ck_assert_int_eq(FE.bad_reason, 0);
    ck_assert(FE.detail_ok);
    ck_assert_uint_eq(FE.msgs_in, 0);
    ck_assert_int_eq(FE.send_rv, TETHER_ECLOSED);
    ck_assert(th_raw_wait_eof(first, 5000));
    ck_assert(th_raw_wait_eof(y, 5000));
    close(first); /* (its server side lingers until then) */
    close(x);
    ck_assert(th_run_until_pred(fin_until, (int[]){3, 1, 2}, 5000));
    ck_assert_uint_eq(FE.msgs_in, 1);
    ck_assert(th_run_until_pred(fin_none_active, l, 5000));
    th_run_idle(50);
    ck_assert_int_eq(FE.closed, 3); /* once each */
    tether_listener_stats ls;
    ck_assert_int_eq(tether_listener_get_stats(l, &ls), TETHER_OK);
    ck_assert_uint_eq(ls.active, 0);
    ck_assert_uint_eq(ls.accepted, 4);
    close(y);
    tether_listener_close(l);
}
END_TEST

static Suite *conn_suite(void)
{
    Suite *s = suite_create("conn");
    TCase *tc = tcase_create("loopback");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, connection_refused_is_clear);
    tcase_add_test(tc, peer_fin_ends_accepted_connection_once);
    tcase_add_test(tc, first_send_on_established_connection_checks_everything);
    tcase_add_test(tc, connection_refused_other_loopbacks);
    tcase_add_test(tc, numeric_connect_timeout_is_clear);
    tcase_add_test(tc, remembered_loopback_dial_falls_back);
    tcase_add_test(tc, remembered_dial_keeps_the_ack_wish);
    tcase_add_test(tc, abort_while_connecting_closes_socket);
    tcase_add_test(tc, repeated_dials_keep_their_own_options);
    tcase_add_test(tc, rewritten_url_buffer_dials_the_new_address);
    tcase_add_test(tc, echo_100k_mixed_sizes_in_order);
    tcase_add_test(tc, backpressure_eagain_then_drain);
    tcase_add_test(tc, peer_closes_mid_frame_is_truncated);
    tcase_add_test(tc, hostile_length_is_rejected_without_allocating);
    tcase_add_test(tc, max_msg_exact_and_one_over);
    tcase_add_test(tc, send_limits_and_bad_arguments);
    tcase_add_test(tc, graceful_close_delivers_everything_queued);
    tcase_add_test(tc, abort_drops_queue_and_releases_buffers);
    tcase_add_test(tc, send_zc_out_of_memory_keeps_the_buffer);
    tcase_add_test(tc, thousand_concurrent_clients);
    tcase_add_test(tc, backlog_queued_before_the_loop_runs_is_accepted);
    tcase_add_test(tc, unix_socket_path);
    tcase_add_test(tc, unix_socket_abstract);
    tcase_add_test(tc, unix_socket_stale_file_is_replaced);
    tcase_add_test(tc, ipv6_loopback);
    tcase_add_test(tc, localhost_without_dns);
    tcase_add_test(tc, varint_framing_end_to_end);
    tcase_add_test(tc, line_framing_end_to_end);
    tcase_add_test(tc, abort_inside_on_connect);
    tcase_add_test(tc, abort_inside_on_message_stops_delivery);
    tcase_add_test(tc, close_before_connected_still_sends);
    tcase_add_test(tc, server_close_reports_eof_to_client);
    tcase_add_test(tc, no_fd_leak_over_many_connections);
    tcase_add_test(tc, reused_connection_memory_starts_clean);
    tcase_add_test(tc, churned_connections_report_once_and_release);
    tcase_add_test(tc, run_once_returns_after_on_connect);
    tcase_add_test(tc, first_message_partly_written_keeps_order);
    tcase_add_test(tc, linger_ends_at_fin_or_its_own_deadline);
    tcase_add_test(tc, linger_end_unregisters_before_close);
    tcase_add_test(tc, peer_addresses);
    tcase_add_test(tc, listen_errors_name_the_cause);
    tcase_add_test(tc, abort_after_send_from_another_connection);
    tcase_add_test(tc, peer_gone_while_writing_does_not_raise_sigpipe);
    tcase_add_test(tc, long_line_tail_is_not_stranded);
    tcase_add_test(tc, frames_after_resume_are_not_stranded);
    tcase_add_test(tc, emfile_backs_off_and_recovers);
    tcase_add_test(tc, reset_while_paused_does_not_spin);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(conn_suite());
}
