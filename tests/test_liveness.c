/* SPDX-License-Identifier: MIT */
/* Liveness closes and the server defaults (lib/liveness.c, lib/conn_opts.c):
 * GOAWAY and clean TLS closes on timeouts, the clamped heartbeat
 * negotiation, contradictory settings, control-frame protocol violations,
 * the minimum-rate rules for slow frames and slow readers, and the
 * defaults that reap slow and stuck peers on accepted connections.
 *
 * The limits are scaled down (hundreds of milliseconds) so the behaviour
 * can be asserted quickly; one test checks that the defaults of an
 * accepted connection are the documented ones. Timing bounds here are hang
 * guards, never speed assertions. */
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

#include "conn_core.h" /* private: the options a connection resolved, its socket */
#include "helpers.h"

#ifndef TETHER_CERTS_DIR
#error "TETHER_CERTS_DIR must name the certs/ directory"
#endif

/* ---- a tether server ------------------------------------------------------ */

#define MAX_CONNS 64

struct srv {
    tether_listener *l;
    tether_conn *last;
    int accepted;
    int closed;
    int last_reason;
    char last_detail[TETHER_ERROR_MSG_MAX];
    int reasons[MAX_CONNS];
    long msgs;
    bool echo;
    bool pump;       /* push messages at every accepted connection */
    bool pause_echo; /* pause reading while the echo does not fit (like echo_server) */
    size_t pump_size;
};

static struct srv S;
static uint8_t pump_buf[64 * 1024];

static void srv_pump(tether_conn *c)
{
    while (tether_conn_send(c, pump_buf, S.pump_size) == TETHER_OK) {
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
    if (S.echo) {
        int rv = tether_conn_send(c, data, len);
        if (rv == TETHER_EAGAIN && S.pause_echo) {
            tether_conn_pause(c);
        }
    }
}

static void srv_drain(tether_conn *c, void *ud)
{
    (void)ud;
    if (S.pump) {
        srv_pump(c);
    }
    if (S.pause_echo) {
        tether_conn_resume(c);
    }
}

static void srv_close(tether_conn *c, int reason, void *ud)
{
    (void)ud;
    if (S.closed < MAX_CONNS) {
        S.reasons[S.closed] = reason;
    }
    S.closed++;
    S.last_reason = reason;
    snprintf(S.last_detail, sizeof S.last_detail, "%s", tether_conn_last_error(c));
    if (S.last == c) {
        S.last = NULL;
    }
}

static void srv_opts(tether_conn_opts *o)
{
    tether_conn_opts_init(o);
    o->on_message = srv_message;
    o->on_close = srv_close;
    o->on_drain = srv_drain;
}

static tether_listener *start_server_url(const char *url, tether_conn_opts *o)
{
    o->on_message = srv_message;
    o->on_close = srv_close;
    o->on_drain = srv_drain;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = srv_accept;
    lo.conn_opts = o;
    tether_error err;
    int rv = tether_listen(&S.l, th_loop, url, &lo, &err);
    ck_assert_msg(rv == TETHER_OK, "listen: %s", err.message);
    return S.l;
}

static tether_listener *start_server(tether_conn_opts *o)
{
    return start_server_url("tcp://127.0.0.1:0", o);
}

static void reset_state(void)
{
    memset(&S, 0, sizeof S);
    S.echo = true;
}

static bool srv_has_conn(void *arg)
{
    (void)arg;
    return S.last != NULL;
}

static bool srv_closed_n(void *arg)
{
    return S.closed >= *(int *)arg;
}

static bool srv_got_one(void *arg)
{
    (void)arg;
    return S.msgs >= 1;
}

/* ---- a tether client ------------------------------------------------------ */

struct cli {
    tether_conn *c;
    bool connected;
    bool closed;
    int status;
    int reason;
    char detail[TETHER_ERROR_MSG_MAX];
};

static void cli_connect(tether_conn *c, int status, void *ud)
{
    (void)c;
    struct cli *k = ud;
    k->status = status;
    k->connected = status == TETHER_OK;
}

static void cli_close(tether_conn *c, int reason, void *ud)
{
    struct cli *k = ud;
    k->closed = true;
    k->reason = reason;
    snprintf(k->detail, sizeof k->detail, "%s", tether_conn_last_error(c));
    k->c = NULL;
}

static tether_conn_opts cli_opts(struct cli *k)
{
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.userdata = k;
    o.on_connect = cli_connect;
    o.on_close = cli_close;
    return o;
}

static void dial(struct cli *k, const char *url, const tether_conn_opts *o)
{
    tether_error err;
    int rv = tether_conn_dial(&k->c, th_loop, url, o, &err);
    ck_assert_msg(rv == TETHER_OK, "dial: %s", err.message);
}

static bool cli_closed(void *arg)
{
    return ((struct cli *)arg)->closed;
}

static tether_tls_config *tls_cfg(bool server)
{
    tether_tls_opts o;
    tether_tls_opts_init(&o);
    if (server) {
        o.cert_file = TETHER_CERTS_DIR "/server.pem";
        o.key_file = TETHER_CERTS_DIR "/server.key";
    }
    o.ca_file = TETHER_CERTS_DIR "/ca.pem";
    tether_tls_config *cfg = NULL;
    tether_error err;
    int rv = tether_tls_config_new(&cfg, &o, &err);
    ck_assert_msg(rv == TETHER_OK, "tls config: %s", err.message);
    return cfg;
}

/* ---- raw sockets ------------------------------------------------------------ */

/* Reads everything until EOF or a reset while running the loop (bounded).
 * Returns the byte count, or -1 when the peer did not close in time. */
static long raw_read_to_eof(int fd, uint8_t *buf, size_t cap, int ms)
{
    uint64_t deadline = th_now_ms() + (uint64_t)ms;
    size_t got = 0;
    while (th_now_ms() < deadline) {
        tether_loop_run_once(th_loop, 5);
        uint8_t scratch[4096];
        uint8_t *dst = got < cap ? buf + got : scratch;
        size_t room = got < cap ? cap - got : sizeof scratch;
        ssize_t r = recv(fd, dst, room, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno == ECONNRESET)) {
            return (long)got;
        }
        if (r > 0) {
            got += (size_t)r;
        }
    }
    return -1;
}

static int sockopt_int(int fd, int level, int name)
{
    int v = -1;
    socklen_t l = sizeof v;
    ck_assert_int_eq(getsockopt(fd, level, name, &v, &l), 0);
    return v;
}

static void run_ms(int ms)
{
    uint64_t end = th_now_ms() + (uint64_t)ms;
    while (th_now_ms() < end) {
        tether_loop_run_once(th_loop, 10);
    }
}

/* ---- bug 4: contradictory settings ------------------------------------------ */

START_TEST(heartbeat_longer_than_idle_timeout_is_rejected)
{
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.heartbeat_ms = 5000;
    o.idle_timeout_ms = 4000;
    tether_error err;
    tether_conn *c = NULL;
    ck_assert_int_eq(tether_conn_dial(&c, th_loop, "tcp://127.0.0.1:1", &o, &err), TETHER_EINVAL);
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(err.message, "idle_timeout_ms (4000)") != NULL &&
                      strstr(err.message, "heartbeat_ms (5000)") != NULL,
                  "%s", err.message);
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &o;
    tether_listener *l = NULL;
    ck_assert_int_eq(tether_listen(&l, th_loop, "tcp://127.0.0.1:0", &lo, &err), TETHER_EINVAL);
    ck_assert_ptr_null(l);
    ck_assert_ptr_nonnull(strstr(err.message, "heartbeat_ms (5000)"));
    /* Just under twice the interval is still a contradiction; twice is fine. */
    o.idle_timeout_ms = 9999;
    ck_assert_int_eq(tether_listen(&l, th_loop, "tcp://127.0.0.1:0", &lo, &err), TETHER_EINVAL);
    o.idle_timeout_ms = 10000;
    ck_assert_int_eq(tether_listen(&l, th_loop, "tcp://127.0.0.1:0", &lo, &err), TETHER_OK);
    tether_listener_close(l);
    /* A minimum rate needs its window. */
    tether_conn_opts_init(&o);
    o.frame_min_rate = 100;
    o.frame_timeout_ms = 0;
    ck_assert_int_eq(tether_listen(&l, th_loop, "tcp://127.0.0.1:0", &lo, &err), TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "frame_min_rate (100 bytes/s) needs"));
}
END_TEST

/* ---- bug 3: the peer's interval is clamped ----------------------------------- */

START_TEST(peer_heartbeat_interval_is_clamped)
{
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.heartbeat_ms = 1000;
    ck_assert_uint_eq(tether__hb_negotiate(&o, 0), 1000);
    ck_assert_uint_eq(tether__hb_negotiate(&o, 1500), 1500);
    ck_assert_uint_eq(tether__hb_negotiate(&o, 0xFFFFFFFFu), 2000); /* twice our own */
    o.idle_timeout_ms = 3000;
    ck_assert_uint_eq(tether__hb_negotiate(&o, 0xFFFFFFFFu), 1500); /* half the idle timeout */
    o.heartbeat_ms = 200000;                                        /* the absolute cap, 5 min */
    o.idle_timeout_ms = 0;
    ck_assert_uint_eq(tether__hb_negotiate(&o, 0xFFFFFFFFu), TETHER__HB_PEER_MAX_MS);
    o.heartbeat_ms = 400000; /* our own interval is never cut */
    ck_assert_uint_eq(tether__hb_negotiate(&o, 0xFFFFFFFFu), 400000);

    /* End to end: a raw peer announces 0xFFFFFFFF ms (49 days). */
    for (int with_idle = 0; with_idle < 2; with_idle++) {
        reset_state();
        tether_conn_opts so;
        srv_opts(&so);
        so.heartbeat_ms = 400;
        so.idle_timeout_ms = with_idle ? 1000 : 0;
        start_server(&so);
        int fd = th_raw_connect(tether_listener_port(S.l));
        static const uint8_t hello[] = {0xFF, 1, 0, 6, 1, 0, 0xFF, 0xFF, 0xFF, 0xFF};
        th_raw_write(fd, hello, sizeof hello);
        ck_assert(th_run_until_pred(srv_has_conn, NULL, 3000));
        tether_stats st;
        uint64_t until = th_now_ms() + 3000;
        do {
            tether_loop_run_once(th_loop, 10);
            ck_assert_ptr_nonnull(S.last);
            tether_conn_get_stats(S.last, &st);
        } while (st.heartbeat_ms == 0 && th_now_ms() < until);
        ck_assert_uint_eq(st.heartbeat_ms, with_idle ? 500u : 800u);
        close(fd);
        int one = 1;
        ck_assert(th_run_until_pred(srv_closed_n, &one, 3000));
        tether_listener_close(S.l);
        th_run_idle(3000);
    }
}
END_TEST

/* A peer that announces 0xFFFFFFFF ms and then never answers: our pings
 * slow down only to twice our interval, and the silence is still noticed
 * within our own detection time. (It used to be pinged every 49 days.) */
START_TEST(peer_that_stretched_the_interval_is_still_detected)
{
    reset_state();
    tether_conn_opts so;
    srv_opts(&so);
    so.heartbeat_ms = 200;
    start_server(&so);
    int fd = th_raw_connect(tether_listener_port(S.l));
    static const uint8_t hello[] = {0xFF, 1, 0, 6, 1, 0, 0xFF, 0xFF, 0xFF, 0xFF};
    th_raw_write(fd, hello, sizeof hello);
    int one = 1;
    ck_assert(th_run_until_pred(srv_closed_n, &one, 10000));
    printf("stretched interval: %s\n", S.last_detail);
    ck_assert_int_eq(S.last_reason, TETHER_ETIMEDOUT);
    ck_assert_ptr_nonnull(strstr(S.last_detail, "heartbeat timeout"));
    close(fd);
    tether_listener_close(S.l);
}
END_TEST

/* ---- bug 5: control-frame protocol violations are named ---------------------- */

START_TEST(ping_before_hello_names_the_violation)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sin, sizeof sin), 0);
    ck_assert_int_eq(listen(lfd, 4), 0);
    socklen_t sl = sizeof sin;
    getsockname(lfd, (struct sockaddr *)&sin, &sl);
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", ntohs(sin.sin_port));

    struct cli k = {0};
    tether_conn_opts co = cli_opts(&k);
    co.heartbeat_ms = 1000; /* sends HELLO: this side speaks control frames */
    dial(&k, url, &co);
    int fd = -1;
    uint64_t until = th_now_ms() + 3000;
    while (fd < 0 && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 5);
        struct pollfd p = {.fd = lfd, .events = POLLIN};
        if (poll(&p, 1, 0) == 1) {
            fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        }
    }
    ck_assert_int_ge(fd, 0);
    static const uint8_t ping[] = {0xFF, 2, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8};
    th_raw_write(fd, ping, sizeof ping);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    /* It used to read "peer announced a 4278321160-byte message". */
    ck_assert_int_eq(k.reason, TETHER_EPROTO);
    ck_assert_msg(strstr(k.detail, "PING control frame before its HELLO") != NULL, "%s", k.detail);
    close(fd);
    close(lfd);
}
END_TEST

/* ---- bug 2: timeouts close cleanly and say why -------------------------------- */

/* A server idle timeout against a client that negotiated control frames
 * (its heartbeat is slower than the server's idle timeout): the client
 * hears why, over TCP and over TLS, and TLS ends with close_notify. */
static void idle_goaway_case(bool tls, bool client_hb)
{
    reset_state();
    tether_tls_config *scfg = tls ? tls_cfg(true) : NULL;
    tether_tls_config *ccfg = tls ? tls_cfg(false) : NULL;
    tether_conn_opts so;
    srv_opts(&so);
    so.idle_timeout_ms = 300;
    so.tls = scfg;
    start_server_url(tls ? "tls://127.0.0.1:0" : "tcp://127.0.0.1:0", &so);
    char url[64];
    snprintf(url, sizeof url, "%s://localhost:%d", tls ? "tls" : "tcp", tether_listener_port(S.l));
    struct cli k = {0};
    tether_conn_opts co = cli_opts(&k);
    co.heartbeat_ms = client_hb ? 5000 : 0;
    co.tls = ccfg;
    dial(&k, url, &co);
    ck_assert(th_run_until_pred(cli_closed, &k, 10000));
    int one = 1;
    ck_assert(th_run_until_pred(srv_closed_n, &one, 5000));
    printf("idle close (%s, %s): server %s \"%s\"; client %s \"%s\"\n", tls ? "tls" : "tcp",
           client_hb ? "control frames" : "plain", tether_err_name(S.last_reason), S.last_detail,
           tether_err_name(k.reason), k.detail);
    ck_assert_int_eq(S.last_reason, TETHER_ETIMEDOUT);
    ck_assert_ptr_nonnull(strstr(S.last_detail, "idle timeout: nothing received for"));
    /* Before: TETHER_ETRUNCATED, "TLS stream truncated: the peer closed the
     * connection without close_notify", or a bare EOF without a reason. */
    ck_assert_int_eq(k.reason, TETHER_EOF);
    if (client_hb) {
        ck_assert_str_eq(k.detail, "closed by peer: idle timeout (nothing received for 300 ms)");
    } else {
        ck_assert_ptr_null(strstr(k.detail, "truncated"));
    }
    tether_listener_close(S.l);
    tether_tls_config_unref(scfg);
    tether_tls_config_unref(ccfg);
    th_run_idle(3000);
}

START_TEST(idle_close_sends_goaway_over_tcp)
{
    idle_goaway_case(false, true);
}
END_TEST

START_TEST(idle_close_sends_goaway_and_close_notify_over_tls)
{
    idle_goaway_case(true, true);
}
END_TEST

START_TEST(idle_close_of_a_plain_tls_client_sends_close_notify)
{
    idle_goaway_case(true, false);
}
END_TEST

/* A plain len32 peer never sees a control frame, not even on a timeout:
 * just the end of the stream. */
START_TEST(plain_peer_gets_no_goaway)
{
    reset_state();
    tether_conn_opts so;
    srv_opts(&so);
    so.idle_timeout_ms = 200;
    start_server(&so);
    int fd = th_raw_connect(tether_listener_port(S.l));
    uint8_t msg[6] = {0, 0, 0, 2, 'h', 'i'};
    th_raw_write(fd, msg, sizeof msg);
    uint8_t buf[256];
    long n = raw_read_to_eof(fd, buf, sizeof buf, 5000);
    ck_assert_int_eq(n, 6); /* the echo, then EOF: no 0xFF frame */
    ck_assert_int_eq(memcmp(buf, msg, 6), 0);
    int one = 1;
    ck_assert(th_run_until_pred(srv_closed_n, &one, 3000));
    ck_assert_int_eq(S.last_reason, TETHER_ETIMEDOUT);
    close(fd);
    tether_listener_close(S.l);
}
END_TEST

/* The wire format of GOAWAY, as a raw peer that negotiated control frames
 * sees it: flags, a reason code, the text; then the end of the stream. */
START_TEST(goaway_wire_format)
{
    reset_state();
    tether_conn_opts so;
    srv_opts(&so);
    so.frame_timeout_ms = 200;
    so.frame_min_rate = 0; /* a flat deadline */
    start_server(&so);
    int fd = th_raw_connect(tether_listener_port(S.l));
    static const uint8_t hello[] = {0xFF, 1, 0, 6, 1, 0, 0, 0, 0, 0};
    th_raw_write(fd, hello, sizeof hello);
    static const uint8_t part[] = {0, 0, 0, 10, 'x'}; /* a frame that never completes */
    th_raw_write(fd, part, sizeof part);
    uint8_t buf[1024];
    long n = raw_read_to_eof(fd, buf, sizeof buf, 5000);
    ck_assert_int_gt(n, 0);
    /* Our HELLO answered first: FF 01 00 06 ... */
    ck_assert_int_ge(n, 10);
    ck_assert_int_eq(buf[0], 0xFF);
    ck_assert_int_eq(buf[1], 1);
    size_t off = 4 + (size_t)((buf[2] << 8) | buf[3]);
    ck_assert_int_ge(n, (long)off + 7);
    ck_assert_int_eq(buf[off], 0xFF);
    ck_assert_int_eq(buf[off + 1], 4); /* GOAWAY */
    size_t plen = (size_t)((buf[off + 2] << 8) | buf[off + 3]);
    ck_assert_int_eq((long)(off + 4 + plen), n); /* the last frame before EOF */
    const uint8_t *p = buf + off + 4;
    ck_assert_int_eq(p[0], 0); /* flags */
    ck_assert_int_eq(p[1], 0); /* reason, big-endian: */
    ck_assert_int_eq(p[2], 2); /* 2 = frame timeout */
    char text[256];
    snprintf(text, sizeof text, "%.*s", (int)(plen - 3), (const char *)p + 3);
    ck_assert_msg(strncmp(text, "frame timeout (", 15) == 0, "%s", text);
    int one = 1;
    ck_assert(th_run_until_pred(srv_closed_n, &one, 3000));
    ck_assert_int_eq(S.last_reason, TETHER_ETIMEDOUT);
    close(fd);
    tether_listener_close(S.l);
}
END_TEST

START_TEST(max_age_goaway_reaches_the_client)
{
    reset_state();
    tether_conn_opts so;
    srv_opts(&so);
    so.max_age_ms = 300;
    start_server(&so);
    struct cli k = {0};
    tether_conn_opts co = cli_opts(&k);
    co.heartbeat_ms = 5000;
    dial(&k, th_url_of(S.l), &co);
    ck_assert(th_run_until_pred(cli_closed, &k, 5000));
    int one = 1;
    ck_assert(th_run_until_pred(srv_closed_n, &one, 3000));
    ck_assert_int_eq(S.last_reason, TETHER_OK);
    ck_assert_int_eq(k.reason, TETHER_EOF);
    /* Both ends speak control frames: max_age drains (tests/test_drain.c). */
    ck_assert_msg(strncmp(k.detail,
                          "closed by peer after a drain (GOAWAY): maximum connection age reached",
                          69) == 0,
                  "%s", k.detail);
    tether_listener_close(S.l);
}
END_TEST

/* A write timeout: the peer does not read, so neither GOAWAY nor
 * close_notify gets through; the attempt is bounded (by write_timeout_ms
 * here, shorter than close_timeout_ms) and the reason stays the write
 * timeout. */
START_TEST(write_timeout_close_is_bounded_and_keeps_its_reason)
{
    reset_state();
    tether_conn_opts so;
    srv_opts(&so);
    so.write_timeout_ms = 200;
    so.write_min_rate = 0;
    so.close_timeout_ms = 60000; /* the write timeout bounds the close */
    so.send_hwm = 64 * 1024;
    so.sndbuf = 16384;
    S.pump = true;
    S.pump_size = 8000;
    start_server(&so);
    struct cli k = {0};
    tether_conn_opts co = cli_opts(&k);
    co.heartbeat_ms = 5000; /* control frames negotiated: GOAWAY is queued */
    co.rcvbuf = 4096;
    dial(&k, th_url_of(S.l), &co);
    ck_assert(th_run_until_pred(srv_has_conn, NULL, 3000));
    tether_conn_pause(k.c); /* the client stops reading */
    int one = 1;
    ck_assert(th_run_until_pred(srv_closed_n, &one, 30000)); /* not 60 s */
    printf("write timeout: %s \"%s\"\n", tether_err_name(S.last_reason), S.last_detail);
    ck_assert_int_eq(S.last_reason, TETHER_ETIMEDOUT);
    ck_assert_ptr_nonnull(strstr(S.last_detail, "write timeout"));
    ck_assert_ptr_null(strstr(S.last_detail, "close timed out"));
    tether_conn_abort(k.c);
    ck_assert(th_run_until_pred(cli_closed, &k, 3000));
    tether_listener_close(S.l);
}
END_TEST

static bool srv_closing(void *arg)
{
    (void)arg;
    return S.last != NULL && S.last->state == TETHER__CS_CLOSING;
}

/* A peer that stopped reading resets the connection while the server is
 * still trying to close it cleanly: the reason stays the write timeout. */
START_TEST(reset_during_a_timeout_close_keeps_the_reason)
{
    reset_state();
    tether_conn_opts so;
    srv_opts(&so);
    so.write_timeout_ms = 200;
    so.close_timeout_ms = 20000; /* the reset comes first */
    so.send_hwm = 64 * 1024;
    so.sndbuf = 16384;
    S.pump = true;
    S.pump_size = 8000;
    start_server(&so);
    int fd = th_raw_connect_rcvbuf(tether_listener_port(S.l), 4096);
    ck_assert(th_run_until_pred(srv_closing, NULL, 10000));
    ck_assert_int_eq(S.closed, 0);
    struct linger lg = {1, 0};
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    close(fd); /* a reset */
    int one = 1;
    ck_assert(th_run_until_pred(srv_closed_n, &one, 5000));
    /* Before: TETHER_ECONNRESET, "connection reset by peer during write". */
    ck_assert_int_eq(S.last_reason, TETHER_ETIMEDOUT);
    ck_assert_msg(strstr(S.last_detail, "write timeout") != NULL, "%s", S.last_detail);
    tether_listener_close(S.l);
}
END_TEST

/* ---- minimum rates ------------------------------------------------------------ */

/* A large frame that keeps arriving faster than the minimum rate is not
 * cut, however long it takes overall; one that slows below it is. */
START_TEST(frame_min_rate_spares_a_slow_large_message)
{
    reset_state();
    tether_conn_opts so;
    srv_opts(&so);
    so.frame_timeout_ms = 300;
    so.frame_min_rate = 1000;
    S.echo = false;
    start_server(&so);
    int fd = th_raw_connect(tether_listener_port(S.l));
    enum {
        SIZE = 24000
    };
    static uint8_t msg[4 + SIZE];
    msg[0] = 0;
    msg[1] = (uint8_t)(SIZE >> 16);
    msg[2] = (uint8_t)(SIZE >> 8);
    msg[3] = (uint8_t)SIZE;
    /* 600 bytes every 30 ms, 20 kB/s: twenty times the minimum, for about
     * four windows (a flat 300 ms deadline would cut it). */
    uint64_t t0 = th_now_ms();
    for (size_t off = 0; off < sizeof msg && S.closed == 0; off += 600) {
        size_t n = sizeof msg - off < 600 ? sizeof msg - off : 600;
        th_raw_write(fd, msg + off, n);
        run_ms(30);
    }
    ck_assert(th_run_until_pred(srv_got_one, NULL, 3000));
    printf("frame_min_rate: %d-byte message over %llu ms delivered\n", SIZE,
           (unsigned long long)(th_now_ms() - t0));
    ck_assert_int_eq(S.closed, 0);
    /* Now 10 bytes every 100 ms: 100 B/s, below the minimum. */
    th_raw_write(fd, msg, 4);
    for (int i = 0; i < 100 && S.closed == 0; i++) {
        if (send(fd, msg + 4, 10, MSG_NOSIGNAL) != 10) {
            break;
        }
        run_ms(100);
    }
    int one = 1;
    ck_assert(th_run_until_pred(srv_closed_n, &one, 3000));
    ck_assert_int_eq(S.last_reason, TETHER_ETIMEDOUT);
    ck_assert_msg(strstr(S.last_detail, "below frame_min_rate 1000 bytes/s") != NULL, "%s",
                  S.last_detail);
    close(fd);
    tether_listener_close(S.l);
}
END_TEST

/* A reader that keeps reading, but too slowly: every byte read would reset
 * a no-progress deadline; the minimum rate still ends it. */
START_TEST(write_min_rate_closes_a_slow_reader)
{
    reset_state();
    tether_conn_opts so;
    srv_opts(&so);
    so.write_timeout_ms = 300;
    so.write_min_rate = 1000000; /* 1 MB/s */
    so.close_timeout_ms = 300;
    so.send_hwm = 256 * 1024;
    so.sndbuf = 16384;
    S.pump = true;
    S.pump_size = 8000;
    start_server(&so);
    int fd = th_raw_connect_rcvbuf(tether_listener_port(S.l), 4096);
    uint8_t buf[1000];
    for (int i = 0; i < 200 && S.closed == 0; i++) {
        (void)recv(fd, buf, sizeof buf, MSG_DONTWAIT); /* 1000 bytes per 20 ms: 50 kB/s */
        run_ms(20);
    }
    int one = 1;
    ck_assert(th_run_until_pred(srv_closed_n, &one, 5000));
    printf("slow reader: %s\n", S.last_detail);
    ck_assert_int_eq(S.last_reason, TETHER_ETIMEDOUT);
    ck_assert_ptr_nonnull(strstr(S.last_detail, "below write_min_rate 1000000 bytes/s"));
    close(fd);
    tether_listener_close(S.l);
}
END_TEST

/* With a minimum rate, a peer that was fast and then stops altogether is
 * closed one window after its last progress, not granted a second window
 * on the strength of the first (which would double the worst case). */
START_TEST(min_rate_peer_that_stops_gets_one_window)
{
    /* A frame: 1000 bytes at once of a 5000-byte message, then nothing. */
    reset_state();
    tether_conn_opts so;
    srv_opts(&so);
    so.frame_timeout_ms = 400;
    so.frame_min_rate = 100;
    start_server(&so);
    int fd = th_raw_connect(tether_listener_port(S.l));
    static uint8_t msg[4 + 1000] = {0, 0, 0x13, 0x88}; /* announces 5000 */
    th_raw_write(fd, msg, sizeof msg);
    int one = 1;
    ck_assert(th_run_until_pred(srv_closed_n, &one, 5000));
    ck_assert_int_eq(S.last_reason, TETHER_ETIMEDOUT);
    ck_assert_msg(strstr(S.last_detail, "nothing of an incomplete frame arrived for") != NULL, "%s",
                  S.last_detail);
    close(fd);
    tether_listener_close(S.l);
    th_run_idle(3000);

    /* Output: the peer reads fast for a while, then stops reading. */
    reset_state();
    srv_opts(&so);
    so.write_timeout_ms = 400;
    so.write_min_rate = 1000;
    so.close_timeout_ms = 300;
    so.sndbuf = 16384;
    so.send_hwm = 256 * 1024;
    S.pump = true;
    S.pump_size = 8000;
    start_server(&so);
    fd = th_raw_connect_rcvbuf(tether_listener_port(S.l), 4096);
    uint8_t buf[65536];
    uint64_t until = th_now_ms() + 300;
    while (th_now_ms() < until) {
        (void)recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        tether_loop_run_once(th_loop, 5);
    }
    ck_assert(th_run_until_pred(srv_closed_n, &one, 5000));
    ck_assert_int_eq(S.last_reason, TETHER_ETIMEDOUT);
    ck_assert_msg(strstr(S.last_detail, "made no progress for") != NULL, "%s", S.last_detail);
    close(fd);
    tether_listener_close(S.l);
}
END_TEST

/* A peer that sends one large message (read straight into place, echoed
 * by a direct write) and never reads the echo. */
START_TEST(non_reader_of_a_large_echo_is_reaped)
{
    reset_state();
    tether_conn_opts so;
    srv_opts(&so);
    so.write_timeout_ms = 300;
    so.close_timeout_ms = 300;
    start_server(&so);
    int fd = th_raw_connect_rcvbuf(tether_listener_port(S.l), 4096);
    enum {
        SIZE = 8 << 20
    };
    uint8_t *msg = calloc(1, 4 + SIZE);
    ck_assert_ptr_nonnull(msg);
    msg[1] = SIZE >> 16;
    size_t sent = 0;
    uint64_t until = th_now_ms() + 10000;
    while (sent < 4 + (size_t)SIZE && th_now_ms() < until) {
        ssize_t w = send(fd, msg + sent, 4 + SIZE - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            sent += (size_t)w;
        }
        tether_loop_run_once(th_loop, 5);
    }
    free(msg);
    int one = 1;
    ck_assert(th_run_until_pred(srv_closed_n, &one, 10000));
    ck_assert_int_eq(S.msgs, 1);
    ck_assert_int_eq(S.last_reason, TETHER_ETIMEDOUT);
    ck_assert_msg(strstr(S.last_detail, "write timeout") != NULL, "%s", S.last_detail);
    close(fd);
    tether_listener_close(S.l);
}
END_TEST

/* The same with a longer window: the kernel's send buffer is left to
 * autotuning, and the zero-window probes of a peer that reads nothing let
 * it grow now and then, so writes still make a little progress for
 * minutes (a no-progress deadline never fires). What counts is what the
 * peer receives. */
START_TEST(non_reader_is_reaped_despite_send_buffer_autotuning)
{
    reset_state();
    tether_conn_opts so;
    srv_opts(&so);
    so.write_timeout_ms = 6000;
    so.close_timeout_ms = 300;
    start_server(&so);
    int fd = th_raw_connect_rcvbuf(tether_listener_port(S.l), 4096);
    enum {
        SIZE = 16 << 20
    };
    uint8_t *msg = calloc(1, 4 + SIZE);
    ck_assert_ptr_nonnull(msg);
    msg[0] = 1; /* 16 MiB, big-endian */
    size_t sent = 0;
    uint64_t until = th_now_ms() + 10000;
    while (sent < 4 + (size_t)SIZE && th_now_ms() < until) {
        ssize_t w = send(fd, msg + sent, 4 + SIZE - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w > 0) {
            sent += (size_t)w;
        }
        tether_loop_run_once(th_loop, 1);
    }
    free(msg);
    int one = 1;
    ck_assert(th_run_until_pred(srv_closed_n, &one, 30000));
    printf("autotuned non-reader: %s\n", S.last_detail);
    ck_assert_int_eq(S.msgs, 1);
    ck_assert_int_eq(S.last_reason, TETHER_ETIMEDOUT);
    ck_assert_msg(strstr(S.last_detail, "write timeout") != NULL, "%s", S.last_detail);
    close(fd);
    tether_listener_close(S.l);
}
END_TEST

/* ---- server defaults -------------------------------------------------------- */

/* The defaults of an accepted connection are the documented ones; a dialled
 * connection keeps everything off; 0 turns a server default off. */
START_TEST(accepted_connections_reap_by_default)
{
    reset_state();
    tether_conn_opts so;
    srv_opts(&so);
    start_server(&so);
    struct cli k = {0};
    tether_conn_opts co = cli_opts(&k);
    dial(&k, th_url_of(S.l), &co);
    ck_assert(th_run_until_pred(srv_has_conn, NULL, 3000));
    const tether_conn_opts *a = &S.last->cfg->o;
    ck_assert_int_eq(a->frame_timeout_ms, 30000);
    ck_assert_int_eq(a->frame_min_rate, 1024);
    ck_assert_int_eq(a->write_timeout_ms, 60000);
    ck_assert_int_eq(a->write_min_rate, 1024);
    ck_assert_int_eq(a->idle_timeout_ms, 0);
    ck_assert_int_eq(a->heartbeat_ms, 0);
    int sfd = S.last->tr->fd;
    ck_assert_int_eq(sockopt_int(sfd, SOL_SOCKET, SO_KEEPALIVE), 1);
    ck_assert_int_eq(sockopt_int(sfd, IPPROTO_TCP, TCP_KEEPIDLE), 60);
    ck_assert_int_eq(sockopt_int(sfd, IPPROTO_TCP, TCP_KEEPINTVL), 10);
    ck_assert_int_eq(sockopt_int(sfd, IPPROTO_TCP, TCP_KEEPCNT), 6);
    ck_assert_int_eq(sockopt_int(sfd, IPPROTO_TCP, TCP_USER_TIMEOUT), 120000);
    /* Nothing pending: the state of the timeouts is allocated on demand
     * (idle_connection_keeps_no_liveness_state below). */
    ck_assert_ptr_null(tether__conn_live(S.last));

    ck_assert_ptr_nonnull(k.c);
    const tether_conn_opts *d = &k.c->cfg->o;
    ck_assert_int_eq(d->frame_timeout_ms, 0);
    ck_assert_int_eq(d->frame_min_rate, 0);
    ck_assert_int_eq(d->write_timeout_ms, 0);
    ck_assert_int_eq(d->write_min_rate, 0);
    ck_assert_int_eq(sockopt_int(k.c->tr->fd, SOL_SOCKET, SO_KEEPALIVE), 0);
    ck_assert_int_eq(sockopt_int(k.c->tr->fd, IPPROTO_TCP, TCP_USER_TIMEOUT), 0);
    ck_assert_ptr_null(tether__conn_live(k.c));
    tether_conn_close(k.c);
    ck_assert(th_run_until_pred(cli_closed, &k, 3000));
    tether_listener_close(S.l);

    /* Explicit zeros switch the server defaults off. */
    reset_state();
    srv_opts(&so);
    so.frame_timeout_ms = 0;
    so.frame_min_rate = 0;
    so.write_timeout_ms = 0;
    so.write_min_rate = 0;
    so.keepalive_idle_ms = 0;
    so.user_timeout_ms = 0;
    start_server(&so);
    struct cli k2 = {0};
    co = cli_opts(&k2);
    dial(&k2, th_url_of(S.l), &co);
    ck_assert(th_run_until_pred(srv_has_conn, NULL, 3000));
    ck_assert_ptr_null(tether__conn_live(S.last));
    ck_assert_int_eq(sockopt_int(S.last->tr->fd, SOL_SOCKET, SO_KEEPALIVE), 0);
    ck_assert_int_eq(sockopt_int(S.last->tr->fd, IPPROTO_TCP, TCP_USER_TIMEOUT), 0);
    tether_conn_close(k2.c);
    ck_assert(th_run_until_pred(cli_closed, &k2, 3000));
    tether_listener_close(S.l);
}
END_TEST

static bool srv_live_present(void *arg)
{
    (void)arg;
    return S.last != NULL && tether__conn_live(S.last) != NULL;
}

static bool srv_live_gone(void *arg)
{
    (void)arg;
    return S.last != NULL && tether__conn_live(S.last) == NULL;
}

/* Reads len bytes from a raw socket (its echo is written already) and
 * compares them with want. */
static void read_echo(int fd, const uint8_t *want, size_t len)
{
    uint8_t echo[64];
    size_t got = 0;
    ck_assert_uint_le(len, sizeof echo);
    while (got < len) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        ck_assert_int_eq(poll(&p, 1, 3000), 1);
        ssize_t n = read(fd, echo + got, len - got);
        ck_assert_int_gt(n, 0);
        got += (size_t)n;
    }
    ck_assert_mem_eq(echo, want, len);
}

/* An accepted connection with the server defaults (frame and write
 * timeouts on) holds no liveness state, no timer and no cold state (c->ex)
 * while nothing is pending: a started frame creates the first two, and
 * once the frame is in and its echo written the connection returns to
 * that state. The wait for the
 * release is a hang guard (it comes when the write check's first sample
 * is due, 1 s at most). */
START_TEST(idle_connection_keeps_no_liveness_state)
{
    reset_state();
    tether_conn_opts so;
    srv_opts(&so);
    start_server(&so);
    uint32_t base = th_loop->heap_len; /* timers of the loop itself, if any */
    int fd = th_raw_connect(tether_listener_port(S.l));
    ck_assert(th_run_until_pred(srv_has_conn, NULL, 3000));
    th_run_idle(50);
    ck_assert_ptr_nonnull(S.last);
    ck_assert_ptr_null(tether__conn_live(S.last));
    ck_assert_ptr_null(S.last->ex); /* no deadline timer, no cold state at all */
    ck_assert_uint_eq(th_loop->heap_len, base);

    /* A started frame is timed: the state and its timer exist. */
    uint8_t msg[4 + 10] = {0, 0, 0, 10, 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'};
    th_raw_write(fd, msg, 7);
    ck_assert(th_run_until_pred(srv_live_present, NULL, 3000));
    ck_assert(tether__tnode_active(&tether__conn_live(S.last)->timer));
    ck_assert_uint_eq(th_loop->heap_len, base + 1);

    /* The rest of it: echoed, and then nothing is pending any more. */
    th_raw_write(fd, msg + 7, sizeof msg - 7);
    ck_assert(th_run_until_pred(srv_live_gone, NULL, 10000));
    ck_assert_int_eq(S.msgs, 1);
    ck_assert_uint_eq(S.last->queued, 0);
    ck_assert_uint_eq(th_loop->heap_len, base);
    ck_assert_ptr_null(S.last->ex); /* the state's cold block went with it */
    read_echo(fd, msg, sizeof msg);

    /* Twice: the state comes back when needed and goes again. */
    th_raw_write(fd, msg, 5);
    ck_assert(th_run_until_pred(srv_live_present, NULL, 3000));
    th_raw_write(fd, msg + 5, sizeof msg - 5);
    ck_assert(th_run_until_pred(srv_live_gone, NULL, 10000));
    ck_assert_int_eq(S.msgs, 2);
    ck_assert_uint_eq(th_loop->heap_len, base);
    read_echo(fd, msg, sizeof msg);

    close(fd);
    int one = 1;
    ck_assert(th_run_until_pred(srv_closed_n, &one, 3000));
    ck_assert_int_eq(S.last_reason, TETHER_EOF);
    tether_listener_close(S.l);
}
END_TEST

/* The targets, scaled: 20 peers trickling one byte each 50 ms into
 * a started frame, and 10 peers that send a large message to an echoing
 * server but never read the echo (the server pauses reading while the echo
 * does not fit, as echo_server does, which used to stop every check). All
 * are closed, with the minimum-rate rules at their scaled limits, and
 * every connection is freed (the teardown checks for leaked handles). */
START_TEST(many_slow_and_stuck_peers_are_reaped)
{
    reset_state();
    tether_conn_opts so;
    srv_opts(&so);
    so.frame_timeout_ms = 300;
    so.frame_min_rate = 100; /* the tricklers send 20 bytes/s */
    so.write_timeout_ms = 300;
    so.close_timeout_ms = 300;
    so.send_hwm = 256 * 1024;
    so.sndbuf = 16384;
    S.pause_echo = true;
    start_server(&so);
    int port = tether_listener_port(S.l);
    enum {
        TRICKLE = 20,
        STUCK = 10
    };
    int fds[TRICKLE + STUCK];
    static const uint8_t hdr[4] = {0, 0, 1, 0}; /* a 256-byte message */
    for (int i = 0; i < TRICKLE; i++) {
        fds[i] = th_raw_connect(port);
    }
    /* Two 512 KiB messages each: the first echo fills the queue past the
     * high-water mark, the second is refused and the server pauses. */
    static uint8_t big[2 * (4 + 512 * 1024)];
    big[1] = 0x08;
    big[4 + 512 * 1024 + 1] = 0x08;
    for (int i = 0; i < STUCK; i++) {
        fds[TRICKLE + i] = th_raw_connect_rcvbuf(port, 4096);
    }
    /* The stuck peers write their message in the background of the loop. */
    size_t sent[STUCK] = {0};
    uint64_t t0 = th_now_ms();
    int want = TRICKLE + STUCK;
    for (int round = 0; round < 400 && S.closed < want; round++) {
        for (int i = 0; i < TRICKLE; i++) {
            uint8_t b = round < 4 ? hdr[round] : 'x';
            (void)send(fds[i], &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        for (int i = 0; i < STUCK; i++) {
            if (sent[i] < sizeof big) {
                ssize_t w = send(fds[TRICKLE + i], big + sent[i], sizeof big - sent[i],
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                if (w > 0) {
                    sent[i] += (size_t)w;
                }
            }
        }
        run_ms(50);
    }
    ck_assert(th_run_until_pred(srv_closed_n, &want, 5000));
    printf("reaped %d tricklers and %d non-readers in %llu ms; last: %s\n", TRICKLE, STUCK,
           (unsigned long long)(th_now_ms() - t0), S.last_detail);
    ck_assert_int_eq(S.accepted, want);
    for (int i = 0; i < want; i++) {
        ck_assert_int_eq(S.reasons[i], TETHER_ETIMEDOUT);
    }
    for (int i = 0; i < want; i++) {
        close(fds[i]);
    }
    tether_listener_close(S.l);
}
END_TEST

static Suite *liveness_suite(void)
{
    Suite *s = suite_create("liveness");
    TCase *tc = tcase_create("liveness");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, heartbeat_longer_than_idle_timeout_is_rejected);
    tcase_add_test(tc, peer_heartbeat_interval_is_clamped);
    tcase_add_test(tc, peer_that_stretched_the_interval_is_still_detected);
    tcase_add_test(tc, ping_before_hello_names_the_violation);
    tcase_add_test(tc, idle_close_sends_goaway_over_tcp);
    tcase_add_test(tc, idle_close_sends_goaway_and_close_notify_over_tls);
    tcase_add_test(tc, idle_close_of_a_plain_tls_client_sends_close_notify);
    tcase_add_test(tc, plain_peer_gets_no_goaway);
    tcase_add_test(tc, goaway_wire_format);
    tcase_add_test(tc, max_age_goaway_reaches_the_client);
    tcase_add_test(tc, write_timeout_close_is_bounded_and_keeps_its_reason);
    tcase_add_test(tc, reset_during_a_timeout_close_keeps_the_reason);
    tcase_add_test(tc, frame_min_rate_spares_a_slow_large_message);
    tcase_add_test(tc, write_min_rate_closes_a_slow_reader);
    tcase_add_test(tc, min_rate_peer_that_stops_gets_one_window);
    tcase_add_test(tc, non_reader_of_a_large_echo_is_reaped);
    tcase_add_test(tc, non_reader_is_reaped_despite_send_buffer_autotuning);
    tcase_add_test(tc, accepted_connections_reap_by_default);
    tcase_add_test(tc, idle_connection_keeps_no_liveness_state);
    tcase_add_test(tc, many_slow_and_stuck_peers_are_reaped);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(liveness_suite());
}
