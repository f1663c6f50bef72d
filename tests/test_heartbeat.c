/* SPDX-License-Identifier: MIT */
/* Liveness on single connections: TCP keepalive and TCP_USER_TIMEOUT,
 * heartbeats (negotiation, the wire format, plain peers, RTT, detection of
 * a blackholed link through the fault-injection proxy), the idle, frame and
 * write timeouts, the maximum connection age and the statistics. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h" /* private: the socket of a connection, for getsockopt */
#include "helpers.h"
#include "proxy/proxy.h"

/* ---- a tether server ----------------------------------------------------- */

struct srv {
    tether_listener *l;
    tether_conn *last;
    int accepted;
    int closed;
    int last_reason;
    char last_detail[TETHER_ERROR_MSG_MAX];
    uint64_t closed_at;
    uint64_t closed_lt;   /* the loop's time in on_close */
    uint64_t last_msg_lt; /* the loop's time when the last message arrived */
    long msgs;
    bool echo;
    bool pump; /* push messages at every accepted connection */
    size_t pump_size;
    size_t max_queued;  /* the largest queue seen while pumping */
    tether_stats final; /* stats of the last connection, read in on_close */
};

static struct srv S;
static uint8_t pump_buf[64 * 1024];

static void srv_pump(tether_conn *c)
{
    for (;;) {
        int rv = tether_conn_send(c, pump_buf, S.pump_size);
        size_t q = tether_conn_queued(c);
        if (q > S.max_queued) {
            S.max_queued = q;
        }
        if (rv != TETHER_OK) {
            return;
        }
    }
}

static void srv_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l, (void)ud;
    S.accepted++;
    S.last = c;
    if (S.pump) {
        srv_pump(c);
    }
}

static void srv_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)ud;
    S.msgs++;
    S.last_msg_lt = tether_loop_now(th_loop);
    if (S.echo) {
        ck_assert_int_eq(tether_conn_send(c, data, len), TETHER_OK);
    }
}

static void srv_drain(tether_conn *c, void *ud)
{
    (void)ud;
    if (S.pump) {
        srv_pump(c);
    }
}

static void srv_close(tether_conn *c, int reason, void *ud)
{
    (void)ud;
    S.closed++;
    S.last_reason = reason;
    S.closed_at = th_now_ms();
    S.closed_lt = tether_loop_now(th_loop);
    snprintf(S.last_detail, sizeof S.last_detail, "%s", tether_conn_last_error(c));
    tether_conn_get_stats(c, &S.final);
    if (S.last == c) {
        S.last = NULL;
    }
}

static tether_listener *start_server(const tether_conn_opts *co)
{
    tether_conn_opts o;
    if (co != NULL) {
        o = *co;
    } else {
        tether_conn_opts_init(&o);
    }
    o.on_message = srv_message;
    o.on_close = srv_close;
    o.on_drain = srv_drain;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = srv_accept;
    lo.conn_opts = &o;
    S.l = th_listen_tcp(&lo);
    return S.l;
}

static void reset_state(void)
{
    memset(&S, 0, sizeof S);
    S.echo = true;
}

static bool srv_has_two(void *arg)
{
    (void)arg;
    return S.accepted >= 2 && S.last != NULL;
}

static bool srv_has_conn(void *arg)
{
    (void)arg;
    return S.last != NULL;
}

static bool srv_got_one(void *arg)
{
    (void)arg;
    return S.msgs >= 1;
}

static bool srv_closed_one(void *arg)
{
    (void)arg;
    return S.closed >= 1;
}

/* ---- a tether client ----------------------------------------------------- */

struct cli {
    tether_conn *c;
    bool connected;
    bool closed;
    int status;
    int reason;
    uint64_t connected_at;
    uint64_t closed_at;
    uint64_t connected_lt; /* the loop's time in on_connect */
    uint64_t closed_lt;    /* the loop's time in on_close */
    long got;
    char detail[TETHER_ERROR_MSG_MAX];
    tether_stats final;
};

static void cli_connect(tether_conn *c, int status, void *ud)
{
    (void)c;
    struct cli *k = ud;
    k->status = status;
    k->connected = status == TETHER_OK;
    k->connected_at = th_now_ms();
    k->connected_lt = tether_loop_now(th_loop);
}

static void cli_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)c, (void)data, (void)len;
    struct cli *k = ud;
    k->got++;
}

static void cli_close(tether_conn *c, int reason, void *ud)
{
    struct cli *k = ud;
    k->closed = true;
    k->reason = reason;
    k->closed_at = th_now_ms();
    k->closed_lt = tether_loop_now(th_loop);
    snprintf(k->detail, sizeof k->detail, "%s", tether_conn_last_error(c));
    tether_conn_get_stats(c, &k->final);
    k->c = NULL;
}

static tether_conn_opts cli_opts(struct cli *k)
{
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.userdata = k;
    o.on_connect = cli_connect;
    o.on_message = cli_message;
    o.on_close = cli_close;
    return o;
}

static void dial_port(struct cli *k, int port, const tether_conn_opts *o)
{
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    th_dial(&k->c, url, o);
}

static bool cli_connected(void *arg)
{
    struct cli *k = arg;
    return k->connected || k->closed;
}

static bool cli_closed(void *arg)
{
    return ((struct cli *)arg)->closed;
}

static void run_ms(int ms)
{
    uint64_t end = th_now_ms() + (uint64_t)ms;
    while (th_now_ms() < end) {
        tether_loop_run_once(th_loop, 10);
    }
}

/* Like th_run_until_pred(), and keeps in *lag the longest time between two
 * iterations of the loop (normally its 10 ms wait at most). A deadline is
 * noticed late by up to that much when the machine holds the process back,
 * so an upper bound on when something fired adds it. */
static bool run_until_lag(bool (*pred)(void *arg), void *arg, int ms, uint64_t *lag)
{
    uint64_t prev = th_now_ms();
    uint64_t deadline = prev + (uint64_t)ms;
    while (!pred(arg)) {
        uint64_t now = th_now_ms();
        if (now - prev > *lag) {
            *lag = now - prev;
        }
        prev = now;
        if (now >= deadline) {
            return pred(arg);
        }
        ck_assert_int_ge(tether_loop_run_once(th_loop, 10), 0);
    }
    uint64_t now = th_now_ms();
    if (now - prev > *lag) {
        *lag = now - prev;
    }
    return true;
}

/* run_ms(), keeping the longest gap between iterations in *lag. */
static void run_ms_lag(int ms, uint64_t *lag)
{
    uint64_t prev = th_now_ms();
    uint64_t end = prev + (uint64_t)ms;
    while (prev < end) {
        tether_loop_run_once(th_loop, 10);
        uint64_t now = th_now_ms();
        if (now - prev > *lag) {
            *lag = now - prev;
        }
        prev = now;
    }
}

static tether_stats stats_of(tether_conn *c)
{
    tether_stats st;
    ck_assert_int_eq(tether_conn_get_stats(c, &st), TETHER_OK);
    return st;
}

/* ---- raw sockets ----------------------------------------------------------- */

/* Accepts on a raw listener while running the loop (bounded). */
static int raw_accept(int lfd, int ms)
{
    uint64_t deadline = th_now_ms() + (uint64_t)ms;
    while (th_now_ms() < deadline) {
        tether_loop_run_once(th_loop, 5);
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        if (poll(&p, 1, 0) == 1) {
            return accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        }
    }
    return -1;
}

/* Reads exactly n bytes while running the loop; false on EOF or timeout. */
static bool raw_read_n(int fd, uint8_t *buf, size_t n, int ms)
{
    uint64_t deadline = th_now_ms() + (uint64_t)ms;
    size_t got = 0;
    while (got < n && th_now_ms() < deadline) {
        tether_loop_run_once(th_loop, 5);
        ssize_t r = recv(fd, buf + got, n - got, MSG_DONTWAIT);
        if (r == 0) {
            return false;
        }
        if (r > 0) {
            got += (size_t)r;
        }
    }
    return got == n;
}

/* Reads whatever arrives for ms milliseconds (running the loop). Returns
 * the byte count, or -1 if the peer closed. */
static long raw_collect(int fd, uint8_t *buf, size_t cap, int ms)
{
    uint64_t deadline = th_now_ms() + (uint64_t)ms;
    size_t got = 0;
    while (th_now_ms() < deadline) {
        tether_loop_run_once(th_loop, 5);
        ssize_t r = recv(fd, buf + got, cap - got, MSG_DONTWAIT);
        if (r == 0) {
            return -1;
        }
        if (r > 0) {
            got += (size_t)r;
        }
    }
    return (long)got;
}

/* Walks len32 frames; returns false if any header starts with 0xFF (a
 * control frame) or the bytes do not parse. */
static bool only_data_frames(const uint8_t *b, size_t n, int *frames)
{
    size_t off = 0;
    *frames = 0;
    while (n - off >= 4) {
        if (b[off] == 0xFF) {
            return false;
        }
        uint32_t len = ((uint32_t)b[off] << 24) | ((uint32_t)b[off + 1] << 16) |
                       ((uint32_t)b[off + 2] << 8) | b[off + 3];
        if (n - off - 4 < len) {
            return false;
        }
        off += 4 + len;
        (*frames)++;
    }
    return off == n;
}

static int sockopt_int(int fd, int level, int name)
{
    int v = -1;
    socklen_t sl = sizeof v;
    ck_assert_int_eq(getsockopt(fd, level, name, &v, &sl), 0);
    return v;
}

/* ---- keepalive and TCP_USER_TIMEOUT ------------------------------------------ */

START_TEST(keepalive_options_reach_both_sockets)
{
    reset_state();
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.keepalive = true;
    o.keepalive_idle_ms = 30000;
    o.keepalive_interval_ms = 4500; /* rounded up to 5 s */
    o.keepalive_count = 4;
    o.user_timeout_ms = 7000;
    start_server(&o);
    struct cli k = {0};
    tether_conn_opts co = cli_opts(&k);
    co.keepalive = true;
    co.keepalive_idle_ms = 20000;
    co.keepalive_interval_ms = 1000;
    co.keepalive_count = 3;
    co.user_timeout_ms = 2500;
    dial_port(&k, tether_listener_port(S.l), &co);
    ck_assert(th_run_until_pred(cli_connected, &k, 5000));
    ck_assert(k.connected);
    ck_assert(th_run_until_pred(srv_has_conn, NULL, 5000));

    int cfd = k.c->tr->fd;
    ck_assert_int_eq(sockopt_int(cfd, SOL_SOCKET, SO_KEEPALIVE), 1);
    ck_assert_int_eq(sockopt_int(cfd, IPPROTO_TCP, TCP_KEEPIDLE), 20);
    ck_assert_int_eq(sockopt_int(cfd, IPPROTO_TCP, TCP_KEEPINTVL), 1);
    ck_assert_int_eq(sockopt_int(cfd, IPPROTO_TCP, TCP_KEEPCNT), 3);
    ck_assert_int_eq(sockopt_int(cfd, IPPROTO_TCP, TCP_USER_TIMEOUT), 2500);

    int sfd = S.last->tr->fd;
    ck_assert_int_eq(sockopt_int(sfd, SOL_SOCKET, SO_KEEPALIVE), 1);
    ck_assert_int_eq(sockopt_int(sfd, IPPROTO_TCP, TCP_KEEPIDLE), 30);
    ck_assert_int_eq(sockopt_int(sfd, IPPROTO_TCP, TCP_KEEPINTVL), 5);
    ck_assert_int_eq(sockopt_int(sfd, IPPROTO_TCP, TCP_KEEPCNT), 4);
    ck_assert_int_eq(sockopt_int(sfd, IPPROTO_TCP, TCP_USER_TIMEOUT), 7000);

    /* Defaults leave the sockets alone. */
    struct cli d = {0};
    tether_conn_opts dco = cli_opts(&d);
    dial_port(&d, tether_listener_port(S.l), &dco);
    ck_assert(th_run_until_pred(cli_connected, &d, 5000));

    /* The listener's later connections have its options too (they come
     * from the listening socket once the first one showed the kernel
     * copies them). */
    ck_assert(th_run_until_pred(srv_has_two, NULL, 5000));
    ck_assert_int_ne(S.last->tr->fd, sfd);
    sfd = S.last->tr->fd;
    ck_assert_int_eq(sockopt_int(sfd, IPPROTO_TCP, TCP_NODELAY), 1);
    ck_assert_int_eq(sockopt_int(sfd, SOL_SOCKET, SO_KEEPALIVE), 1);
    ck_assert_int_eq(sockopt_int(sfd, IPPROTO_TCP, TCP_KEEPIDLE), 30);
    ck_assert_int_eq(sockopt_int(sfd, IPPROTO_TCP, TCP_KEEPINTVL), 5);
    ck_assert_int_eq(sockopt_int(sfd, IPPROTO_TCP, TCP_KEEPCNT), 4);
    ck_assert_int_eq(sockopt_int(sfd, IPPROTO_TCP, TCP_USER_TIMEOUT), 7000);
    ck_assert_int_eq(sockopt_int(d.c->tr->fd, SOL_SOCKET, SO_KEEPALIVE), 0);
    ck_assert_int_eq(sockopt_int(d.c->tr->fd, IPPROTO_TCP, TCP_USER_TIMEOUT), 0);

    tether_conn_close(k.c);
    tether_conn_close(d.c);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    ck_assert(th_run_until_pred(cli_closed, &d, 5000));
    tether_listener_close(S.l);
}
END_TEST

START_TEST(liveness_options_are_checked)
{
    static const struct {
        size_t off;
        int value;
    } bad[] = {
        /* (-1 is TETHER_ROLE_DEFAULT where a field takes it.) */
        {offsetof(tether_conn_opts, keepalive_idle_ms), -2},
        {offsetof(tether_conn_opts, keepalive_count), 128},
        {offsetof(tether_conn_opts, user_timeout_ms), -5},
        {offsetof(tether_conn_opts, heartbeat_ms), -1},
        {offsetof(tether_conn_opts, heartbeat_misses), 0},
        {offsetof(tether_conn_opts, idle_timeout_ms), -1},
        {offsetof(tether_conn_opts, frame_timeout_ms), -2},
        {offsetof(tether_conn_opts, write_timeout_ms), -2},
        {offsetof(tether_conn_opts, frame_min_rate), -2},
        {offsetof(tether_conn_opts, write_min_rate), -2},
        {offsetof(tether_conn_opts, max_age_ms), -1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tether_conn_opts o;
        tether_conn_opts_init(&o);
        memcpy((char *)&o + bad[i].off, &bad[i].value, sizeof(int));
        tether_conn *c = NULL;
        tether_error err;
        ck_assert_int_eq(tether_conn_dial(&c, th_loop, "tcp://127.0.0.1:1", &o, &err),
                         TETHER_EINVAL);
        ck_assert_ptr_null(c);
        ck_assert(strlen(err.message) > 0);
    }
    /* Heartbeats need the framing with room for control frames. */
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.framing = TETHER_FRAMING_LINE;
    o.heartbeat_ms = 100;
    tether_conn *c = NULL;
    tether_error err;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, "tcp://127.0.0.1:1", &o, &err), TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "len32"));
    tether_listener *l = NULL;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &o;
    ck_assert_int_eq(tether_listen(&l, th_loop, "tcp://127.0.0.1:0", &lo, &err), TETHER_EINVAL);
}
END_TEST

/* The client writes into a proxy that stopped reading: its data stays
 * unsent behind a closed window, and TCP_USER_TIMEOUT ends the connection
 * although nothing at all arrives from the other side (no heartbeats). */
START_TEST(stall_detected_by_tcp_user_timeout)
{
    reset_state();
    S.echo = false;
    start_server(NULL);
    tproxy *px = NULL;
    ck_assert_int_eq(tproxy_start(&px, tether_listener_port(S.l), 4096), 0);
    struct cli k = {0};
    tether_conn_opts co = cli_opts(&k);
    co.user_timeout_ms = 1000;
    co.sndbuf = 4096;
    dial_port(&k, tproxy_port(px), &co);
    ck_assert(th_run_until_pred(cli_connected, &k, 5000));
    ck_assert(k.connected);
    tproxy_set_mode(px, TPROXY_STALL);
    uint64_t t0 = th_now_ms();
    /* Fill every buffer on the way (ours, the kernel's, the proxy's). */
    static uint8_t chunk[8192];
    for (int i = 0; i < 256 && !k.closed; i++) {
        int rv = tether_conn_send(k.c, chunk, sizeof chunk);
        if (rv == TETHER_EAGAIN) {
            break;
        }
        ck_assert_int_eq(rv, TETHER_OK);
    }
    ck_assert(th_run_until_pred(cli_closed, &k, 15000));
    uint64_t took = k.closed_at - t0;
    printf("stall_detected_by_tcp_user_timeout: closed after %llu ms (TCP_USER_TIMEOUT 1000 ms): "
           "%s\n",
           (unsigned long long)took, k.detail);
    ck_assert_int_eq(k.reason, TETHER_ETIMEDOUT);
    ck_assert_ptr_nonnull(strstr(k.detail, "TCP_USER_TIMEOUT"));
    ck_assert_uint_ge(took, 900);
    ck_assert_uint_le(took, 8000);
    tproxy_stop(px);
    tether_listener_close(S.l);
}
END_TEST

/* ---- heartbeats --------------------------------------------------------------- */

static bool rtt_known(void *arg)
{
    tether_conn *c = *(tether_conn **)arg;
    return c != NULL && stats_of(c).rtt_us >= 0;
}

static void negotiate(int server_ms, int client_ms, uint32_t want_server, uint32_t want_client)
{
    reset_state();
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.heartbeat_ms = server_ms;
    start_server(&so);
    struct cli k = {0};
    tether_conn_opts co = cli_opts(&k);
    co.heartbeat_ms = client_ms;
    dial_port(&k, tether_listener_port(S.l), &co);
    ck_assert(th_run_until_pred(cli_connected, &k, 5000));
    ck_assert(k.connected);
    /* The HELLO exchange and the first round trip. */
    ck_assert(th_run_until_pred(rtt_known, &k.c, 3000));
    run_ms(30);
    ck_assert_ptr_nonnull(S.last);
    tether_stats cs = stats_of(k.c);
    tether_stats ss = stats_of(S.last);
    ck_assert_uint_eq(cs.heartbeat_ms, want_client);
    ck_assert_uint_eq(ss.heartbeat_ms, want_server);
    ck_assert_int_ge(cs.rtt_us, 0);
    ck_assert_int_lt(cs.rtt_us, 1000000);
    if (want_server > 0) {
        ck_assert(th_run_until_pred(rtt_known, &S.last, 3000));
    } else {
        ck_assert_int_eq(ss.rtt_us, -1);
        ck_assert_uint_eq(ss.pings_sent, 0);
    }
    tether_conn_close(k.c);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    ck_assert_int_eq(k.reason, TETHER_OK);
    tether_listener_close(S.l);
}

START_TEST(heartbeat_negotiation_larger_interval_wins)
{
    /* The slower side decides, but a peer can stretch an interval to twice
     * its own at most. */
    negotiate(300, 100, 300, 200); /* the server is slower: the client follows */
    negotiate(100, 300, 200, 300); /* the client is slower: the server follows */
    negotiate(200, 300, 300, 300);
    negotiate(0, 150, 0, 150); /* a default server answers but never pings */
}
END_TEST

/* Both sides ping over an idle connection for a while: the pings and pongs
 * are counted, and not one of them reaches on_message. */
START_TEST(control_frames_never_reach_on_message)
{
    reset_state();
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.heartbeat_ms = 40;
    start_server(&so);
    struct cli k = {0};
    tether_conn_opts co = cli_opts(&k);
    co.heartbeat_ms = 40;
    dial_port(&k, tether_listener_port(S.l), &co);
    ck_assert(th_run_until_pred(cli_connected, &k, 5000));
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(tether_conn_send(k.c, "hello", 5), TETHER_OK);
    }
    run_ms(600);
    ck_assert_int_eq(S.msgs, 5);
    ck_assert_int_eq(k.got, 5);
    tether_stats cs = stats_of(k.c);
    tether_stats ss = stats_of(S.last);
    printf("control_frames_never_reach_on_message: client pings %llu pongs %llu rtt %lld us; "
           "server pings %llu pongs %llu\n",
           (unsigned long long)cs.pings_sent, (unsigned long long)cs.pongs_received,
           (long long)cs.rtt_us, (unsigned long long)ss.pings_sent,
           (unsigned long long)ss.pongs_received);
    ck_assert_uint_ge(cs.pings_sent + ss.pings_sent, 5);
    ck_assert_uint_ge(cs.pongs_received, 1);
    ck_assert_uint_ge(ss.pongs_received, 1);
    ck_assert_uint_eq(cs.msgs_in, 5);
    ck_assert_uint_eq(ss.msgs_in, 5);
    ck_assert_uint_eq(cs.msgs_out, 5);
    ck_assert(!k.closed);
    tether_conn_close(k.c);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    tether_listener_close(S.l);
}
END_TEST

/* A plain length-prefixed client (it never sends HELLO) talks to a server
 * with heartbeats on: it sees its echoes and nothing else. */
START_TEST(plain_client_sees_no_control_frames)
{
    reset_state();
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.heartbeat_ms = 30;
    start_server(&so);
    int fd = th_raw_connect(tether_listener_port(S.l));
    uint8_t msg[4 + 3] = {0, 0, 0, 3, 'a', 'b', 'c'};
    th_raw_write(fd, msg, sizeof msg);
    static uint8_t got[65536];
    /* The echo, then nothing more for 13 heartbeat intervals. */
    ck_assert(raw_read_n(fd, got, sizeof msg, 5000));
    long n = raw_collect(fd, got + sizeof msg, sizeof got - sizeof msg, 400);
    ck_assert_int_eq(n, 0);
    int frames = 0;
    ck_assert(only_data_frames(got, sizeof msg, &frames));
    ck_assert_int_eq(frames, 1);
    th_raw_write(fd, msg, sizeof msg);
    ck_assert(raw_read_n(fd, got, sizeof msg, 5000));
    n = raw_collect(fd, got + sizeof msg, sizeof got - sizeof msg, 200);
    ck_assert_int_eq(n, 0);
    ck_assert_ptr_nonnull(S.last);
    tether_stats ss = stats_of(S.last);
    ck_assert_uint_eq(ss.heartbeat_ms, 0);
    ck_assert_uint_eq(ss.pings_sent, 0);
    ck_assert_uint_eq(ss.bytes_out, 14);
    close(fd);
    ck_assert(th_run_until_pred(srv_closed_one, NULL, 5000));
    tether_listener_close(S.l);
}
END_TEST

/* A tether client with heartbeats off puts nothing but data on the wire. */
START_TEST(default_client_sends_no_control_frames)
{
    int port;
    int lfd = th_raw_listen(4, &port);
    struct cli k = {0};
    tether_conn_opts co = cli_opts(&k);
    co.idle_timeout_ms = 5000; /* liveness on, heartbeats off */
    dial_port(&k, port, &co);
    int fd = raw_accept(lfd, 5000);
    ck_assert_int_ge(fd, 0);
    ck_assert(th_run_until_pred(cli_connected, &k, 5000));
    ck_assert_int_eq(tether_conn_send(k.c, "xyz", 3), TETHER_OK);
    static uint8_t got[4096];
    /* The message, then nothing more for a while. */
    ck_assert(raw_read_n(fd, got, 7, 5000));
    long n = raw_collect(fd, got + 7, sizeof got - 7, 300);
    int frames = 0;
    ck_assert_int_eq(n, 0);
    ck_assert(only_data_frames(got, 7, &frames));
    tether_conn_close(k.c);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    close(fd);
    close(lfd);
}
END_TEST

/* The wire format, byte for byte, against a hand-written peer: HELLO first,
 * the first PING right after the HELLO exchange, a PONG that sets the RTT,
 * pings while the peer is silent, and the heartbeat timeout after
 * heartbeat_misses unanswered pings. */
START_TEST(wire_format_and_timeout_against_a_raw_peer)
{
    int port;
    int lfd = th_raw_listen(4, &port);
    struct cli k = {0};
    tether_conn_opts co = cli_opts(&k);
    co.heartbeat_ms = 100;
    co.heartbeat_misses = 2;
    dial_port(&k, port, &co);
    int fd = raw_accept(lfd, 5000);
    ck_assert_int_ge(fd, 0);
    ck_assert(th_run_until_pred(cli_connected, &k, 5000));
    ck_assert_int_eq(tether_conn_send(k.c, "m", 1), TETHER_OK);

    /* HELLO: 0xFF, type 1, length 6, version 1, flags 0, interval 100. */
    uint8_t hello[10];
    ck_assert(raw_read_n(fd, hello, sizeof hello, 2000));
    static const uint8_t want_hello[10] = {0xFF, 1, 0, 6, 1, 0, 0, 0, 0, 100};
    ck_assert_mem_eq(hello, want_hello, sizeof hello);
    /* Then the data message. */
    uint8_t data[5];
    ck_assert(raw_read_n(fd, data, sizeof data, 2000));
    static const uint8_t want_data[5] = {0, 0, 0, 1, 'm'};
    ck_assert_mem_eq(data, want_data, sizeof data);
    /* Our HELLO: interval 250 ms, with two extra bytes a future version
     * might add (they must be ignored). */
    static const uint8_t our_hello[12] = {0xFF, 1, 0, 8, 1, 0, 0, 0, 0, 250, 7, 7};
    th_raw_write(fd, our_hello, sizeof our_hello);
    /* The first PING comes at once (for the RTT): 0xFF, 2, length 8. */
    uint8_t ping[12];
    ck_assert(raw_read_n(fd, ping, sizeof ping, 1000));
    ck_assert_uint_eq(ping[0], 0xFF);
    ck_assert_uint_eq(ping[1], 2);
    ck_assert_uint_eq(ping[2], 0);
    ck_assert_uint_eq(ping[3], 8);
    uint8_t pong[12];
    memcpy(pong, ping, sizeof pong);
    pong[1] = 3;
    /* The silence counts from when the pong was read, which is after this
     * write: the loop reads it in a later iteration, whose time is taken
     * after the write. (The loop's time after the wait below would be
     * later than the read, so the ping would seem a few ms early.) */
    uint64_t last_rx = th_now_ms();
    th_raw_write(fd, pong, sizeof pong);
    ck_assert(th_run_until_pred(rtt_known, &k.c, 2000));
    tether_stats cs = stats_of(k.c);
    ck_assert_uint_eq(cs.heartbeat_ms, 200); /* the larger, up to twice our own */
    ck_assert_uint_eq(cs.pongs_received, 1);

    /* Now silence: a ping after 200 ms (the interval the peer asked for),
     * and the close once our own detection time has passed, max((misses +
     * 1) × 100, 200 + 100) = 300 ms, with that ping unanswered. */
    ck_assert(raw_read_n(fd, ping, sizeof ping, 2000));
    uint64_t p1 = th_now_ms() - last_rx;
    ck_assert_uint_eq(ping[1], 2);
    ck_assert(th_run_until_pred(cli_closed, &k, 3000));
    uint64_t dead = k.closed_at - last_rx;
    printf("wire_format: ping at %llu ms of silence, closed at %llu ms: %s\n",
           (unsigned long long)p1, (unsigned long long)dead, k.detail);
    ck_assert_uint_ge(p1, 200);
    ck_assert_uint_le(p1, 1000);
    ck_assert_int_eq(k.reason, TETHER_ETIMEDOUT);
    ck_assert_ptr_nonnull(strstr(k.detail, "heartbeat timeout"));
    ck_assert_uint_ge(dead, 300);
    ck_assert_uint_le(dead, 2000);
    close(fd);
    close(lfd);
}
END_TEST

/* Control frames a peer may not send are framing errors: exactly as before
 * the protocol existed from a peer that never sent HELLO, named as the
 * protocol violation they are from one that did. */
START_TEST(bad_control_frames_are_framing_errors)
{
    static const struct {
        uint8_t bytes[16];
        size_t len;
        int reason;
        const char *detail;
    } cases[] = {
        /* A PING from a peer that never sent HELLO (it used to read "peer
         * announced a 4278321160-byte message"). */
        {{0xFF, 2, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8},
         12,
         TETHER_EPROTO,
         "PING control frame before its HELLO"},
        /* An unknown type. */
        {{0xFF, 9, 0, 0}, 4, TETHER_EMSGSIZE, "announced"},
        /* A HELLO too short to hold an interval. */
        {{0xFF, 1, 0, 2, 1, 0}, 6, TETHER_EPROTO, "malformed HELLO"},
        /* A second HELLO (it used to read "peer announced a 4278255622-byte
         * message"). */
        {{0xFF, 1, 0, 6, 1, 0, 0, 0, 0, 0, 0xFF, 1, 0, 6, 1, 0}, 16, TETHER_EPROTO, "second HELLO"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        reset_state();
        start_server(NULL);
        int fd = th_raw_connect(tether_listener_port(S.l));
        th_raw_write(fd, cases[i].bytes, cases[i].len);
        if (i == 3) {
            static const uint8_t rest[4] = {0, 0, 0, 0};
            th_raw_write(fd, rest, sizeof rest);
        }
        ck_assert(th_raw_wait_eof(fd, 5000));
        ck_assert(th_run_until_pred(srv_closed_one, NULL, 5000));
        ck_assert_msg(S.last_reason == cases[i].reason, "case %zu: %s (%s)", i,
                      tether_err_name(S.last_reason), S.last_detail);
        ck_assert_msg(strstr(S.last_detail, cases[i].detail) != NULL, "case %zu: %s", i,
                      S.last_detail);
        close(fd);
        tether_listener_close(S.l);
        th_run_idle(3000);
    }
}
END_TEST

struct pong_wait {
    tether_conn *c;
    uint64_t after; /* pongs_received before */
};

static bool pong_after(void *arg)
{
    struct pong_wait *pw = arg;
    return stats_of(pw->c).pongs_received > pw->after;
}

static bool echo_and_pongs(void *arg)
{
    struct cli *k = arg;
    return k->closed || (k->got >= 1 && stats_of(k->c).pongs_received >= 2);
}

/* Through the proxy, in BLACKHOLE mode: both kernels keep acknowledging,
 * so TCP sees nothing wrong, yet both ends notice within
 * (heartbeat_misses + 1) × interval of the last byte they received. */
START_TEST(blackhole_detected_by_heartbeats)
{
    enum {
        HB = 200,
        MISSES = 3
    };
    reset_state();
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.heartbeat_ms = HB;
    so.heartbeat_misses = MISSES;
    start_server(&so);
    tproxy *px = NULL;
    ck_assert_int_eq(tproxy_start(&px, tether_listener_port(S.l), 0), 0);
    struct cli k = {0};
    tether_conn_opts co = cli_opts(&k);
    co.heartbeat_ms = HB;
    co.heartbeat_misses = MISSES;
    dial_port(&k, tproxy_port(px), &co);
    ck_assert(th_run_until_pred(cli_connected, &k, 5000));
    ck_assert_int_eq(tether_conn_send(k.c, "before", 6), TETHER_OK);
    /* The echo and a few heartbeats go through (waited for: a loaded
     * machine may take longer than a few intervals). */
    ck_assert(th_run_until_pred(echo_and_pongs, &k, 10000));
    ck_assert_int_eq(k.got, 1);
    ck_assert(!k.closed);

    /* Cut the path right after a pong arrived, so that the silence starts
     * now rather than up to an interval (plus any delay in scheduling us)
     * earlier. */
    struct pong_wait pw = {k.c, stats_of(k.c).pongs_received};
    ck_assert(th_run_until_pred(pong_after, &pw, 5000));
    uint64_t t0 = th_now_ms();
    uint64_t rx_lt = k.c->ex->live->last_rx; /* the pong, in the loop's time */
    tproxy_set_mode(px, TPROXY_BLACKHOLE);
    uint64_t lag = 0;
    ck_assert(run_until_lag(cli_closed, &k, 10000, &lag));
    ck_assert(run_until_lag(srv_closed_one, NULL, 10000, &lag));
    uint64_t client_ms = k.closed_at - t0;
    uint64_t server_ms = S.closed_at - t0;
    printf("blackhole_detected_by_heartbeats: interval %d ms, misses %d: client closed after "
           "%llu ms (%llu ms after the pong in loop time), server after %llu ms (bound "
           "(misses+1) x interval = %d ms; the loop was held back up to %llu ms)\n"
           "  client: %s\n  server: %s\n",
           HB, MISSES, (unsigned long long)client_ms, (unsigned long long)(k.closed_lt - rx_lt),
           (unsigned long long)server_ms, (MISSES + 1) * HB, (unsigned long long)lag, k.detail,
           S.last_detail);
    ck_assert_int_eq(k.reason, TETHER_ETIMEDOUT);
    ck_assert_int_eq(S.last_reason, TETHER_ETIMEDOUT);
    ck_assert_ptr_nonnull(strstr(k.detail, "heartbeat timeout"));
    ck_assert_ptr_nonnull(strstr(S.last_detail, "heartbeat timeout"));
    /* The client's last byte was the pong at rx_lt (or a ping of the
     * server's still on its way, later): never before misses intervals of
     * silence, measured in the loop's time as the library does, so that a
     * delay in scheduling us after the pong cannot shorten it. At most
     * (misses + 1) intervals plus a margin for the proxy and scheduling,
     * plus however long the machine held the loop back while waiting. */
    ck_assert_uint_ge(k.closed_lt - rx_lt, MISSES * HB);
    ck_assert_uint_le(client_ms, (MISSES + 1) * HB + 600 + lag);
    ck_assert_uint_le(server_ms, (MISSES + 1) * HB + 600 + lag);
    tproxy_stop(px);
    tether_listener_close(S.l);
}
END_TEST

/* While the application has paused reading, silence is expected: neither
 * the heartbeats nor the idle timeout end the connection. */
START_TEST(paused_connection_is_not_timed_out)
{
    reset_state();
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.heartbeat_ms = 50;
    so.heartbeat_misses = 1;
    so.idle_timeout_ms = 200;
    start_server(&so);
    int fd = th_raw_connect(tether_listener_port(S.l));
    uint8_t msg[5] = {0, 0, 0, 1, 'q'};
    th_raw_write(fd, msg, sizeof msg);
    uint8_t echo[5];
    ck_assert(raw_read_n(fd, echo, sizeof echo, 2000));
    ck_assert_ptr_nonnull(S.last);
    tether_conn_pause(S.last);
    run_ms(600);
    ck_assert_int_eq(S.closed, 0);
    /* Resumed and still silent: the idle timeout counts from the resume
     * (in the loop's time, which the resume takes as its "now"), not from
     * the last message before the pause. */
    uint64_t t0 = tether_loop_now(th_loop);
    tether_conn_resume(S.last);
    ck_assert(th_run_until_pred(srv_closed_one, NULL, 3000));
    ck_assert_int_eq(S.last_reason, TETHER_ETIMEDOUT);
    ck_assert_ptr_nonnull(strstr(S.last_detail, "idle timeout"));
    ck_assert_uint_ge(S.closed_lt - t0, 200);
    close(fd);
    tether_listener_close(S.l);
}
END_TEST

/* ---- timeouts ------------------------------------------------------------------ */

START_TEST(idle_timeout_closes_a_silent_peer)
{
    /* A message every IDLE / 4 for twice the timeout: the process can be
     * held back for most of a timeout without the traffic falling silent. */
    enum {
        IDLE = 800,
        MSGS = 8
    };
    reset_state();
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.idle_timeout_ms = IDLE;
    start_server(&so);
    int fd = th_raw_connect(tether_listener_port(S.l));
    uint64_t t0 = th_now_ms();
    uint64_t lag = 0;
    /* Traffic keeps it alive... */
    for (int i = 0; i < MSGS; i++) {
        uint8_t msg[5] = {0, 0, 0, 1, 'k'};
        th_raw_write(fd, msg, sizeof msg);
        run_ms_lag(IDLE / 4, &lag);
    }
    ck_assert_int_eq(S.closed, 0);
    /* ...silence ends it. */
    uint64_t t1 = th_now_ms();
    ck_assert_int_eq(S.msgs, MSGS);
    ck_assert(run_until_lag(srv_closed_one, NULL, 10000, &lag));
    ck_assert(th_raw_wait_eof(fd, 5000));
    /* Measured from the last message, in the loop's time (which the timeout
     * is computed from): never early, whatever the load on the machine;
     * late by at most a margin and however long the loop was held back. */
    uint64_t silent = S.closed_lt - S.last_msg_lt;
    printf("idle_timeout: alive for %llu ms of traffic, closed after %llu ms of silence (loop "
           "held back up to %llu ms): %s\n",
           (unsigned long long)(t1 - t0), (unsigned long long)silent, (unsigned long long)lag,
           S.last_detail);
    ck_assert_int_eq(S.last_reason, TETHER_ETIMEDOUT);
    ck_assert_ptr_nonnull(strstr(S.last_detail, "idle timeout"));
    ck_assert_uint_ge(silent, IDLE);
    ck_assert_uint_le(silent, IDLE + 1000 + lag);
    close(fd);
    tether_listener_close(S.l);
}
END_TEST

/* A raw client trickles one frame a byte at a time (slowloris). Whole
 * frames before it are fine; the trickled one is cut off by the frame
 * timeout although bytes keep arriving (so the idle timeout, shorter,
 * never fires: a byte comes every 50 ms, which leaves room for the process
 * to be held back for most of the idle timeout). */
START_TEST(slowloris_closed_by_frame_timeout)
{
    enum {
        FRAME = 1200,
        IDLE = 800
    };
    reset_state();
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.frame_timeout_ms = FRAME;
    so.idle_timeout_ms = IDLE;
    start_server(&so);
    int fd = th_raw_connect(tether_listener_port(S.l));
    uint8_t msg[4 + 100] = {0, 0, 0, 100};
    th_raw_write(fd, msg, sizeof msg);
    ck_assert(th_run_until_pred(srv_got_one, NULL, 3000));
    uint64_t t0 = th_now_ms();
    uint64_t lag = 0;
    bool closed = false;
    for (size_t i = 0; i < sizeof msg && !closed; i++) {
        if (send(fd, &msg[i], 1, MSG_NOSIGNAL) != 1) {
            closed = true;
            break;
        }
        uint64_t until = th_now_ms() + 50;
        uint64_t prev = th_now_ms();
        while (prev < until && S.closed == 0) {
            tether_loop_run_once(th_loop, 10);
            uint64_t now = th_now_ms();
            lag = now - prev > lag ? now - prev : lag;
            prev = now;
        }
        closed = S.closed > 0;
    }
    ck_assert(run_until_lag(srv_closed_one, NULL, 3000, &lag));
    uint64_t took = S.closed_at - t0;
    printf("slowloris: trickled frame cut off after %llu ms (loop held back up to %llu ms): %s\n",
           (unsigned long long)took, (unsigned long long)lag, S.last_detail);
    ck_assert_int_eq(S.msgs, 1); /* the whole frame before it */
    ck_assert_int_eq(S.last_reason, TETHER_ETIMEDOUT);
    ck_assert_ptr_nonnull(strstr(S.last_detail, "frame timeout"));
    ck_assert_uint_ge(took, FRAME - 20);
    ck_assert_uint_le(took, FRAME + 1100 + lag);
    ck_assert(th_raw_wait_eof(fd, 3000));
    close(fd);
    tether_listener_close(S.l);
}
END_TEST

/* A client that never reads: the server pushes until its high-water mark,
 * never queues more than the mark plus one message, and the write timeout
 * ends the connection once nothing moves. */
START_TEST(non_reading_peer_closed_by_write_timeout)
{
    reset_state();
    tether_conn_opts so;
    tether_conn_opts_init(&so);
    so.write_timeout_ms = 500;
    so.close_timeout_ms = 300; /* bounds the clean close the peer does not take */
    so.send_hwm = 64 * 1024;
    so.sndbuf = 16384;
    start_server(&so);
    S.pump = true;
    S.pump_size = 8000;
    int fd = th_raw_connect_rcvbuf(tether_listener_port(S.l), 4096);
    ck_assert(th_run_until_pred(srv_closed_one, NULL, 10000));
    printf("non_reading_peer: closed with %s: %s; the largest queue was %zu bytes (hwm %zu)\n",
           tether_err_name(S.last_reason), S.last_detail, S.max_queued, so.send_hwm);
    ck_assert_int_eq(S.last_reason, TETHER_ETIMEDOUT);
    ck_assert_ptr_nonnull(strstr(S.last_detail, "write timeout"));
    ck_assert_uint_gt(S.max_queued, 0);
    ck_assert_uint_le(S.max_queued, so.send_hwm + S.pump_size + 4);
    ck_assert_uint_ge(S.final.bytes_out, 8000);
    close(fd);
    tether_listener_close(S.l);
}
END_TEST

/* ---- maximum age ------------------------------------------------------------------ */

START_TEST(max_age_closes_gracefully_with_jitter)
{
    enum {
        N = 6,
        AGE = 300
    };
    reset_state();
    start_server(NULL);
    struct cli k[N];
    memset(k, 0, sizeof k);
    for (int i = 0; i < N; i++) {
        tether_conn_opts co = cli_opts(&k[i]);
        co.max_age_ms = AGE;
        dial_port(&k[i], tether_listener_port(S.l), &co);
    }
    for (int i = 0; i < N; i++) {
        ck_assert(th_run_until_pred(cli_connected, &k[i], 5000));
        /* Queued just before the end: a graceful close still sends it. */
        ck_assert_int_eq(tether_conn_send(k[i].c, "last words", 10), TETHER_OK);
    }
    for (int i = 0; i < N; i++) {
        ck_assert(th_run_until_pred(cli_closed, &k[i], 5000));
    }
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int i = 0; i < N; i++) {
        /* In the loop's time, which the age is computed from. */
        uint64_t age = k[i].closed_lt - k[i].connected_lt;
        lo = age < lo ? age : lo;
        hi = age > hi ? age : hi;
        ck_assert_int_eq(k[i].reason, TETHER_OK);
        ck_assert_ptr_nonnull(strstr(k[i].detail, "maximum connection age"));
        ck_assert_uint_ge(age, AGE * 9 / 10);
        ck_assert_uint_le(age, AGE * 11 / 10 + 300);
    }
    printf("max_age: %d connections closed after %llu..%llu ms (max_age_ms %d ±10 %%)\n", N,
           (unsigned long long)lo, (unsigned long long)hi, AGE);
    ck_assert(th_run_until_pred(srv_closed_one, NULL, 3000));
    th_run_idle(3000);
    ck_assert_int_eq(S.msgs, N); /* every "last words" arrived */
    tether_listener_close(S.l);
}
END_TEST

/* ---- statistics -------------------------------------------------------------------- */

START_TEST(stats_count_bytes_and_messages)
{
    reset_state();
    start_server(NULL);
    struct cli k = {0};
    tether_conn_opts co = cli_opts(&k);
    dial_port(&k, tether_listener_port(S.l), &co);
    /* Queued before the connection exists. */
    static uint8_t buf[100];
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(tether_conn_send(k.c, buf, sizeof buf), TETHER_OK);
    }
    tether_stats st = stats_of(k.c);
    ck_assert_uint_eq(st.queued_bytes, 10 * 104);
    ck_assert_uint_eq(st.bytes_out, 0);
    ck_assert_uint_eq(st.connects, 0);
    ck_assert_int_eq(st.rtt_us, -1);
    ck_assert(th_run_until_pred(cli_connected, &k, 5000));
    uint64_t until = th_now_ms() + 5000;
    while (k.got < 10 && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq(k.got, 10);
    st = stats_of(k.c);
    ck_assert_uint_eq(st.msgs_out, 10);
    ck_assert_uint_eq(st.msgs_in, 10);
    ck_assert_uint_eq(st.bytes_out, 10 * 104);
    ck_assert_uint_eq(st.bytes_in, 10 * 104);
    ck_assert_uint_eq(st.queued_bytes, 0);
    ck_assert_uint_eq(st.connects, 1);
    ck_assert_uint_eq(st.heartbeat_ms, 0);
    ck_assert_uint_eq(st.pings_sent, 0);
    tether_stats ss = stats_of(S.last);
    ck_assert_uint_eq(ss.msgs_in, 10);
    ck_assert_uint_eq(ss.msgs_out, 10);
    /* A caller with an older, shorter struct gets only what it knows. */
    struct {
        size_t size;
        uint64_t bytes_in;
        uint64_t canary;
    } small = {0, 0, 0xABCDu};
    ck_assert_int_eq(tether_conn_get_stats_sized(k.c, (tether_stats *)(void *)&small,
                                                 offsetof(tether_stats, bytes_out)),
                     TETHER_OK);
    ck_assert_uint_eq(small.bytes_in, 10 * 104);
    ck_assert_uint_eq(small.canary, 0xABCDu);
    ck_assert_int_eq(tether_conn_get_stats_sized(k.c, &st, 2), TETHER_EINVAL);
    tether_conn_close(k.c);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    ck_assert_uint_eq(k.final.msgs_in, 10);
    tether_listener_close(S.l);
}
END_TEST

/* msgs_in is kept in 32 bits with a carry into the cold block (issue
 * #12): the count goes on past 2^32, in the stats and in the final ones.
 * (The counter is started just below the carry rather than after 2^32
 * messages.) */
START_TEST(stats_msgs_in_carries_past_32_bits)
{
    reset_state();
    start_server(NULL);
    struct cli k = {0};
    tether_conn_opts co = cli_opts(&k);
    dial_port(&k, tether_listener_port(S.l), &co);
    ck_assert(th_run_until_pred(cli_connected, &k, 5000));
    k.c->msgs_in = UINT32_MAX - 3;
    static uint8_t buf[100];
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(tether_conn_send(k.c, buf, sizeof buf), TETHER_OK);
    }
    uint64_t until = th_now_ms() + 5000;
    while (k.got < 10 && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq(k.got, 10);
    tether_stats st = stats_of(k.c);
    ck_assert_uint_eq(st.msgs_in, (UINT64_C(1) << 32) + 6);
    ck_assert_ptr_nonnull(k.c->ex);
    ck_assert_uint_eq(k.c->ex->msgs_in_hi, 1);
    ck_assert_uint_eq(k.c->msgs_in, 6);
    tether_conn_close(k.c);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    ck_assert_uint_eq(k.final.msgs_in, (UINT64_C(1) << 32) + 6);
    tether_listener_close(S.l);
}
END_TEST

static Suite *heartbeat_suite(void)
{
    Suite *s = suite_create("heartbeat");
    TCase *tc = tcase_create("liveness");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, keepalive_options_reach_both_sockets);
    tcase_add_test(tc, liveness_options_are_checked);
    tcase_add_test(tc, stall_detected_by_tcp_user_timeout);
    tcase_add_test(tc, heartbeat_negotiation_larger_interval_wins);
    tcase_add_test(tc, control_frames_never_reach_on_message);
    tcase_add_test(tc, plain_client_sees_no_control_frames);
    tcase_add_test(tc, default_client_sends_no_control_frames);
    tcase_add_test(tc, wire_format_and_timeout_against_a_raw_peer);
    tcase_add_test(tc, bad_control_frames_are_framing_errors);
    tcase_add_test(tc, blackhole_detected_by_heartbeats);
    tcase_add_test(tc, paused_connection_is_not_timed_out);
    tcase_add_test(tc, idle_timeout_closes_a_silent_peer);
    tcase_add_test(tc, slowloris_closed_by_frame_timeout);
    tcase_add_test(tc, non_reading_peer_closed_by_write_timeout);
    tcase_add_test(tc, max_age_closes_gracefully_with_jitter);
    tcase_add_test(tc, stats_count_bytes_and_messages);
    tcase_add_test(tc, stats_msgs_in_carries_past_32_bits);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(heartbeat_suite());
}
