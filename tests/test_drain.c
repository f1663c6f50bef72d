/* SPDX-License-Identifier: MIT */
/* GOAWAY with the drain flag (lib/drain.c) and graceful listener shutdown
 * (lib/listener_drain.c), over loopback TCP and TLS: every message a send
 * accepted is delivered, in order, in both directions; peers without
 * control frames are closed gracefully; the deadline turns a drain that
 * does not finish into a close; max_age_ms drains with traffic flowing. */
#include "helpers.h"

#include <tether/delivery.h>

#include <arpa/inet.h>
#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef TETHER_CERTS_DIR
#error "TETHER_CERTS_DIR must name the certs/ directory"
#endif

#define MSG_LEN 512
#define MAX_CONNS 256 /* room for a max_age_ms of 250 ms on a slow run */

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

/* ---- the server: echoes every message, counts them per connection ------ */

struct sconn {
    tether_conn *c;
    uint32_t next;     /* the sequence number expected next */
    uint32_t got;      /* messages received */
    uint32_t echoed;   /* echoes accepted by tether_conn_send */
    uint32_t refused;  /* echoes refused (ECLOSED after the peer's GOAWAY) */
    bool order_broken; /* a message out of order */
    bool closed;
    bool goaway; /* on_goaway ran */
    int reason;
    char detail[TETHER_ERROR_MSG_MAX];
};

static struct {
    tether_listener *l;
    struct sconn conns[MAX_CONNS];
    int n;
    int closed;
    bool echo;
    bool shutdown_done;
    int shutdown_status;
    uint8_t *seen; /* per sequence number: times the server received it */
    uint32_t seen_cap;
} S;

static void s_on_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    ck_assert_int_lt(S.n, MAX_CONNS);
    struct sconn *sc = &S.conns[S.n++];
    memset(sc, 0, sizeof *sc);
    sc->c = c;
    tether_conn_set_userdata(c, sc);
}

static void s_on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    struct sconn *sc = ud;
    ck_assert_uint_eq(len, MSG_LEN);
    uint32_t seq =
        ((uint32_t)data[0] << 24) | ((uint32_t)data[1] << 16) | ((uint32_t)data[2] << 8) | data[3];
    if (sc->got > 0 && seq != sc->next) {
        sc->order_broken = true; /* (a connection may start anywhere: a client moved) */
    }
    if (S.seen != NULL && seq < S.seen_cap) {
        S.seen[seq]++;
    }
    sc->next = seq + 1;
    sc->got++;
    if (S.echo) {
        int rv = tether_conn_send(c, data, len);
        if (rv == TETHER_OK) {
            sc->echoed++;
        } else {
            ck_assert_int_eq(rv, TETHER_ECLOSED);
            ck_assert(tether_conn_drain_state(c) & TETHER_DRAIN_ASKED_BY_PEER);
            sc->refused++;
        }
    }
}

static void s_on_goaway(tether_conn *c, unsigned reason, const char *text, void *ud)
{
    (void)c;
    (void)reason;
    (void)text;
    ((struct sconn *)ud)->goaway = true;
}

static void s_on_close(tether_conn *c, int reason, void *ud)
{
    struct sconn *sc = ud;
    if (sc == NULL) {
        return; /* closed before on_accept */
    }
    sc->closed = true;
    sc->reason = reason;
    snprintf(sc->detail, sizeof sc->detail, "%s", tether_conn_last_error(c));
    S.closed++;
}

static void start_server(const char *url, tether_tls_config *tls, int max_age_ms)
{
    memset(&S, 0, sizeof S);
    S.echo = true;
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = s_on_message;
    co.on_close = s_on_close;
    co.on_goaway = s_on_goaway;
    co.send_hwm = 64u << 20; /* echoes never wait for room */
    co.tls = tls;
    co.max_age_ms = max_age_ms;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = s_on_accept;
    lo.conn_opts = &co;
    tether_error err;
    int rv = tether_listen(&S.l, th_loop, url, &lo, &err);
    ck_assert_msg(rv == TETHER_OK, "listen: %s", err.message);
}

/* ---- the client: streams numbered messages, checks the echoes ---------- */

struct cli {
    tether_conn *c;
    uint32_t total;    /* how many to send at most */
    uint32_t accepted; /* sends that returned TETHER_OK */
    uint32_t echoes;   /* echoes received */
    bool order_broken;
    bool refused; /* a send returned ECLOSED */
    bool connected;
    bool goaway;
    unsigned goaway_reason;
    char goaway_text[256];
    bool closed;
    int reason;
    char detail[TETHER_ERROR_MSG_MAX];
};

static void c_pump(struct cli *k)
{
    if (!k->connected || k->closed || k->refused) {
        return;
    }
    uint8_t m[MSG_LEN];
    while (k->accepted < k->total) {
        memset(m, 0x5A, sizeof m);
        m[0] = (uint8_t)(k->accepted >> 24);
        m[1] = (uint8_t)(k->accepted >> 16);
        m[2] = (uint8_t)(k->accepted >> 8);
        m[3] = (uint8_t)k->accepted;
        int rv = tether_conn_send(k->c, m, sizeof m);
        if (rv == TETHER_EAGAIN) {
            return; /* on_drain pumps again */
        }
        if (rv != TETHER_OK) {
            ck_assert_int_eq(rv, TETHER_ECLOSED);
            k->refused = true;
            return;
        }
        k->accepted++;
    }
}

static void c_on_connect(tether_conn *c, int status, void *ud)
{
    (void)c;
    struct cli *k = ud;
    ck_assert_int_eq(status, TETHER_OK);
    k->connected = true;
    c_pump(k);
}

static void c_on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)c;
    struct cli *k = ud;
    ck_assert_uint_eq(len, MSG_LEN);
    uint32_t seq =
        ((uint32_t)data[0] << 24) | ((uint32_t)data[1] << 16) | ((uint32_t)data[2] << 8) | data[3];
    if (seq != k->echoes) {
        k->order_broken = true;
    }
    k->echoes++;
}

static void c_on_drain(tether_conn *c, void *ud)
{
    (void)c;
    c_pump(ud);
}

static void c_on_goaway(tether_conn *c, unsigned reason, const char *text, void *ud)
{
    struct cli *k = ud;
    k->goaway = true;
    k->goaway_reason = reason;
    snprintf(k->goaway_text, sizeof k->goaway_text, "%s", text);
    /* From here on sends are refused, with a clear code. */
    uint8_t m[MSG_LEN] = {0};
    ck_assert_int_eq(tether_conn_send(c, m, sizeof m), TETHER_ECLOSED);
    ck_assert_uint_eq(tether_conn_drain_state(c), TETHER_DRAIN_ASKED_BY_PEER);
    k->refused = true;
}

static void c_on_close(tether_conn *c, int reason, void *ud)
{
    struct cli *k = ud;
    k->closed = true;
    k->reason = reason;
    snprintf(k->detail, sizeof k->detail, "%s", tether_conn_last_error(c));
}

static void dial(struct cli *k, const char *url, tether_tls_config *tls, bool control_frames)
{
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.userdata = k;
    co.on_connect = c_on_connect;
    co.on_message = c_on_message;
    co.on_drain = c_on_drain;
    co.on_goaway = c_on_goaway;
    co.on_close = c_on_close;
    co.tls = tls;
    if (control_frames) {
        co.heartbeat_ms = 60000; /* negotiates control frames; no pings in these tests */
    }
    th_dial(&k->c, url, &co);
}

static bool cli_closed(void *arg)
{
    return ((struct cli *)arg)->closed;
}

static bool srv_got(void *arg)
{
    return S.n > 0 && S.conns[0].got >= *(uint32_t *)arg;
}

static bool srv_all_closed(void *arg)
{
    return S.closed >= *(int *)arg;
}

static const char *url_for(bool tls)
{
    static char url[64];
    snprintf(url, sizeof url, "%s://localhost:%d", tls ? "tls" : "tcp", tether_listener_port(S.l));
    return url;
}

/* The server asks the client to drain while messages fly both ways. */
static void server_goaway_case(bool tls)
{
    tether_tls_config *scfg = tls ? tls_cfg(true) : NULL;
    tether_tls_config *ccfg = tls ? tls_cfg(false) : NULL;
    start_server(tls ? "tls://127.0.0.1:0" : "tcp://127.0.0.1:0", scfg, 0);
    struct cli k = {.total = 20000};
    dial(&k, url_for(tls), ccfg, true);
    uint32_t some = 300;
    ck_assert(th_run_until_pred(srv_got, &some, 10000));
    struct sconn *sc = &S.conns[0];
    ck_assert_int_eq(tether_conn_goaway(sc->c, TETHER_GOAWAY_SHUTDOWN, "restarting", 20000),
                     TETHER_OK);
    ck_assert_uint_eq(tether_conn_drain_state(sc->c), TETHER_DRAIN_ASKED);
    /* The server may still send while it drains (its echoes). */
    ck_assert(th_run_until_pred(cli_closed, &k, 20000));
    int one = 1;
    ck_assert(th_run_until_pred(srv_all_closed, &one, 10000));
    printf("server goaway (%s): client sent %u of %u, server got %u, echoed %u, client got %u; "
           "server %s \"%s\", client %s \"%s\"\n",
           tls ? "tls" : "tcp", k.accepted, k.total, sc->got, sc->echoed, k.echoes,
           tether_err_name(sc->reason), sc->detail, tether_err_name(k.reason), k.detail);
    ck_assert(k.goaway);
    ck_assert_uint_eq(k.goaway_reason, TETHER_GOAWAY_SHUTDOWN);
    ck_assert_str_eq(k.goaway_text, "restarting");
    ck_assert_msg(k.accepted < k.total, "the drain came after the last send: nothing tested");
    /* Nothing lost, nothing reordered, in either direction. */
    ck_assert_uint_eq(sc->got, k.accepted);
    ck_assert(!sc->order_broken);
    ck_assert_uint_eq(sc->echoed, sc->got);
    ck_assert_uint_eq(k.echoes, sc->echoed);
    ck_assert(!k.order_broken);
    ck_assert_int_eq(sc->reason, TETHER_OK);
    ck_assert_str_eq(sc->detail, "drained (GOAWAY): restarting");
    ck_assert_int_eq(k.reason, TETHER_EOF);
    ck_assert_str_eq(k.detail, "closed by peer after a drain (GOAWAY): restarting");
    tether_listener_close(S.l);
    tether_tls_config_unref(scfg);
    tether_tls_config_unref(ccfg);
    th_run_idle(3000);
}

START_TEST(server_goaway_drains_both_directions_over_tcp)
{
    server_goaway_case(false);
}
END_TEST

START_TEST(server_goaway_drains_both_directions_over_tls)
{
    server_goaway_case(true);
}
END_TEST

/* The client asks: the server stops echoing (its sends are refused), but
 * every message the client's sends accepted reaches the server. */
static void client_goaway_case(bool tls)
{
    tether_tls_config *scfg = tls ? tls_cfg(true) : NULL;
    tether_tls_config *ccfg = tls ? tls_cfg(false) : NULL;
    start_server(tls ? "tls://127.0.0.1:0" : "tcp://127.0.0.1:0", scfg, 0);
    struct cli k = {.total = 20000};
    dial(&k, url_for(tls), ccfg, true);
    uint32_t some = 300;
    ck_assert(th_run_until_pred(srv_got, &some, 10000));
    ck_assert_int_eq(tether_conn_goaway(k.c, TETHER_GOAWAY_NONE, "moving on", -1), TETHER_OK);
    ck_assert_uint_lt(k.accepted, k.total); /* more to send while draining */
    /* The asking side keeps sending until the peer's "done". */
    ck_assert(th_run_until_pred(cli_closed, &k, 20000));
    int one = 1;
    ck_assert(th_run_until_pred(srv_all_closed, &one, 10000));
    struct sconn *sc = &S.conns[0];
    printf("client goaway (%s): client sent %u, server got %u, echoed %u (refused %u), client "
           "got %u; server %s \"%s\", client %s \"%s\"\n",
           tls ? "tls" : "tcp", k.accepted, sc->got, sc->echoed, sc->refused, k.echoes,
           tether_err_name(sc->reason), sc->detail, tether_err_name(k.reason), k.detail);
    ck_assert(sc->goaway);
    ck_assert(!k.goaway);
    ck_assert_uint_eq(sc->got, k.accepted);
    ck_assert(!sc->order_broken);
    ck_assert_uint_eq(sc->echoed + sc->refused, sc->got);
    ck_assert_uint_eq(k.echoes, sc->echoed);
    ck_assert(!k.order_broken);
    ck_assert_int_eq(k.reason, TETHER_OK);
    ck_assert_str_eq(k.detail, "drained (GOAWAY): moving on");
    ck_assert_int_eq(sc->reason, TETHER_EOF);
    ck_assert_str_eq(sc->detail, "closed by peer after a drain (GOAWAY): moving on");
    tether_listener_close(S.l);
    tether_tls_config_unref(scfg);
    tether_tls_config_unref(ccfg);
    th_run_idle(3000);
}

START_TEST(client_goaway_delivers_every_accepted_message_over_tcp)
{
    client_goaway_case(false);
}
END_TEST

START_TEST(client_goaway_delivers_every_accepted_message_over_tls)
{
    client_goaway_case(true);
}
END_TEST

/* A peer that never sent HELLO cannot be asked: the call closes
 * gracefully, after what is queued, and says so. */
START_TEST(goaway_to_a_plain_peer_closes_gracefully)
{
    start_server("tcp://127.0.0.1:0", NULL, 0);
    struct cli k = {.total = 100};
    dial(&k, url_for(false), NULL, false);
    uint32_t all = 100;
    ck_assert(th_run_until_pred(srv_got, &all, 10000));
    struct sconn *sc = &S.conns[0];
    ck_assert_int_eq(tether_conn_goaway(sc->c, TETHER_GOAWAY_SHUTDOWN, NULL, 0), TETHER_OK);
    ck_assert_uint_eq(tether_conn_drain_state(sc->c), 0);
    ck_assert(th_run_until_pred(cli_closed, &k, 10000));
    int one = 1;
    ck_assert(th_run_until_pred(srv_all_closed, &one, 10000));
    ck_assert(!k.goaway);
    ck_assert_uint_eq(k.echoes, 100); /* the queue was flushed first */
    ck_assert_int_eq(sc->reason, TETHER_OK);
    ck_assert_str_eq(sc->detail, "drain: the peer does not speak control frames, closed after "
                                 "flushing instead (GOAWAY)");
    ck_assert_int_eq(k.reason, TETHER_EOF);
    tether_listener_close(S.l);
    th_run_idle(3000);
}
END_TEST

/* A peer that speaks control frames but never answers (a raw socket that
 * sent HELLO and then only holds the connection): at the deadline the
 * drain becomes a close, reported as a timeout. */
START_TEST(drain_deadline_turns_into_a_close)
{
    start_server("tcp://127.0.0.1:0", NULL, 0);
    int fd = th_raw_connect(tether_listener_port(S.l));
    static const uint8_t hello[] = {0xFF, 0x01, 0x00, 0x06, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00};
    th_raw_write(fd, hello, sizeof hello);
    /* Wait for the server's HELLO: it has read ours then. */
    uint8_t buf[64];
    size_t got = 0;
    uint64_t until = th_now_ms() + 10000;
    while (got < sizeof hello && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
        ssize_t r = recv(fd, buf + got, sizeof buf - got, MSG_DONTWAIT);
        if (r > 0) {
            got += (size_t)r;
        }
    }
    ck_assert_uint_ge(got, sizeof hello);
    ck_assert_int_eq(buf[0], 0xFF);
    ck_assert_int_eq(buf[1], 0x01);
    ck_assert_int_eq(S.n, 1);
    struct sconn *sc = &S.conns[0];
    ck_assert_int_eq(tether_conn_goaway(sc->c, TETHER_GOAWAY_SHUTDOWN, "bye", 300), TETHER_OK);
    /* The raw peer reads the GOAWAY (drain flag) and ignores it. */
    got = 0;
    until = th_now_ms() + 5000;
    while (got < 9 && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
        ssize_t r = recv(fd, buf + got, sizeof buf - got, MSG_DONTWAIT);
        if (r > 0) {
            got += (size_t)r;
        }
    }
    static const uint8_t drain[] = {0xFF, 0x04, 0x00, 0x06, 0x01, 0x00, 0x06, 'b', 'y', 'e'};
    ck_assert_uint_ge(got, sizeof drain);
    ck_assert_mem_eq(buf, drain, sizeof drain);
    int one = 1;
    ck_assert(th_run_until_pred(srv_all_closed, &one, 10000));
    ck_assert_int_eq(sc->reason, TETHER_ETIMEDOUT);
    ck_assert_str_eq(sc->detail, "drain deadline of 300 ms passed before the peer finished (bye)");
    ck_assert(th_raw_wait_eof(fd, 5000));
    close(fd);
    tether_listener_close(S.l);
    th_run_idle(3000);
}
END_TEST

/* Reads from a raw socket while running the loop until it has want bytes
 * (or EOF when want is 0); returns what it got. */
static size_t raw_read(int fd, uint8_t *buf, size_t cap, size_t want, bool *eof)
{
    size_t got = 0;
    *eof = false;
    uint64_t until = th_now_ms() + 10000;
    while (th_now_ms() < until && (want == 0 || got < want)) {
        tether_loop_run_once(th_loop, 5);
        ssize_t r = recv(fd, buf + got, cap - got, MSG_DONTWAIT);
        if (r == 0) {
            *eof = true;
            break;
        }
        if (r > 0) {
            got += (size_t)r;
        }
    }
    return got;
}

/* The exchange on the wire, against a peer written here: the server's
 * request (flags 0x01), the peer's last messages and its "done" (0x03),
 * then the server's replies, its own "done" behind them, and its FIN. */
START_TEST(drain_exchange_on_the_wire)
{
    start_server("tcp://127.0.0.1:0", NULL, 0);
    int fd = th_raw_connect(tether_listener_port(S.l));
    static const uint8_t hello[] = {0xFF, 0x01, 0x00, 0x06, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00};
    th_raw_write(fd, hello, sizeof hello);
    uint8_t buf[4096];
    bool eof;
    ck_assert_uint_eq(raw_read(fd, buf, sizeof buf, sizeof hello, &eof), sizeof hello);
    ck_assert_int_eq(S.n, 1);
    struct sconn *sc = &S.conns[0];
    ck_assert_int_eq(tether_conn_goaway(sc->c, TETHER_GOAWAY_SHUTDOWN, "bye", 5000), TETHER_OK);
    static const uint8_t req[] = {0xFF, 0x04, 0x00, 0x06, 0x01, 0x00, 0x06, 'b', 'y', 'e'};
    ck_assert_uint_eq(raw_read(fd, buf, sizeof buf, sizeof req, &eof), sizeof req);
    ck_assert_mem_eq(buf, req, sizeof req);
    /* Two messages still in flight from the peer, then its "done". */
    uint8_t out[2 * (4 + MSG_LEN) + 7];
    for (int i = 0; i < 2; i++) {
        uint8_t *f = out + i * (4 + MSG_LEN);
        f[0] = 0, f[1] = 0, f[2] = (uint8_t)(MSG_LEN >> 8), f[3] = (uint8_t)MSG_LEN;
        memset(f + 4, 'x', MSG_LEN);
        f[4] = f[5] = f[6] = 0;
        f[7] = (uint8_t)i;
    }
    static const uint8_t done[] = {0xFF, 0x04, 0x00, 0x03, 0x03, 0x00, 0x00};
    memcpy(out + 2 * (4 + MSG_LEN), done, sizeof done);
    th_raw_write(fd, out, sizeof out);
    /* The echoes, the server's "done" behind them, then the end. */
    size_t got = raw_read(fd, buf, sizeof buf, 0, &eof);
    ck_assert(eof);
    ck_assert_uint_eq(got, sizeof out);
    ck_assert_mem_eq(buf, out, sizeof out);
    int one = 1;
    ck_assert(th_run_until_pred(srv_all_closed, &one, 5000));
    ck_assert_uint_eq(sc->got, 2);
    ck_assert_int_eq(sc->reason, TETHER_OK);
    ck_assert_str_eq(sc->detail, "drained (GOAWAY): bye");
    close(fd);
    tether_listener_close(S.l);
    th_run_idle(3000);
}
END_TEST

START_TEST(goaway_rejects_bad_arguments)
{
    start_server("tcp://127.0.0.1:0", NULL, 0);
    struct cli k = {.total = 1};
    dial(&k, url_for(false), NULL, true);
    /* Not connected yet. */
    ck_assert_int_eq(tether_conn_goaway(k.c, 0, NULL, 0), TETHER_ENOTCONN);
    uint32_t one_msg = 1;
    ck_assert(th_run_until_pred(srv_got, &one_msg, 10000));
    ck_assert_int_eq(tether_conn_goaway(NULL, 0, NULL, 0), TETHER_EINVAL);
    ck_assert_int_eq(tether_conn_goaway(k.c, 70000, NULL, 0), TETHER_EINVAL);
    ck_assert_int_eq(tether_conn_goaway(k.c, 0, "tab\there", 0), TETHER_EINVAL);
    char longtext[202];
    memset(longtext, 'x', sizeof longtext - 1);
    longtext[sizeof longtext - 1] = '\0';
    ck_assert_int_eq(tether_conn_goaway(k.c, 0, longtext, 0), TETHER_EINVAL);
    ck_assert_uint_eq(tether_conn_drain_state(k.c), 0);
    tether_conn_close(k.c);
    ck_assert_int_eq(tether_conn_goaway(k.c, 0, NULL, 0), TETHER_ECLOSED);
    ck_assert(th_run_until_pred(cli_closed, &k, 10000));
    tether_listener_close(S.l);
    th_run_idle(3000);
}
END_TEST

/* max_age_ms on the server drains instead of closing: with messages
 * streaming, nothing the client's sends accepted is lost. */
START_TEST(max_age_drains_with_traffic_flowing)
{
    start_server("tcp://127.0.0.1:0", NULL, 400);
    struct cli k = {.total = UINT32_MAX};
    dial(&k, url_for(false), NULL, true);
    /* Stream until the drain stops us: pump on every loop turn. */
    uint64_t until = th_now_ms() + 20000;
    while (!k.closed && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 5);
        c_pump(&k);
    }
    ck_assert(k.closed);
    int one = 1;
    ck_assert(th_run_until_pred(srv_all_closed, &one, 10000));
    struct sconn *sc = &S.conns[0];
    printf("max_age drain: client sent %u, server got %u, echoed %u, client got %u; server %s "
           "\"%s\"\n",
           k.accepted, sc->got, sc->echoed, k.echoes, tether_err_name(sc->reason), sc->detail);
    ck_assert(k.goaway);
    ck_assert_uint_eq(k.goaway_reason, TETHER_GOAWAY_MAX_AGE);
    ck_assert_uint_gt(k.accepted, 0);
    ck_assert_uint_eq(sc->got, k.accepted);
    ck_assert_uint_eq(k.echoes, k.accepted);
    ck_assert(!sc->order_broken);
    ck_assert(!k.order_broken);
    ck_assert_int_eq(sc->reason, TETHER_OK);
    ck_assert_ptr_nonnull(strstr(sc->detail, "drained (GOAWAY): maximum connection age reached"));
    ck_assert_int_eq(k.reason, TETHER_EOF);
    tether_listener_close(S.l);
    th_run_idle(3000);
}
END_TEST

/* ---- listener shutdown ---------------------------------------------------- */

static void on_shutdown(tether_loop *loop, int status, void *ud)
{
    (void)ud;
    ck_assert_ptr_eq(loop, th_loop);
    S.shutdown_done = true;
    S.shutdown_status = status;
}

static bool shutdown_done(void *arg)
{
    (void)arg;
    return S.shutdown_done;
}

static bool srv_n(void *arg)
{
    return S.n >= *(int *)arg;
}

static bool srv_n_got(void *arg)
{
    int want = *(int *)arg;
    if (S.n < want) {
        return false;
    }
    for (int i = 0; i < want; i++) {
        if (S.conns[i].got < 50) {
            return false;
        }
    }
    return true;
}

START_TEST(listener_shutdown_drains_every_connection)
{
    start_server("tcp://127.0.0.1:0", NULL, 0);
    const char *url = url_for(false);
    char url_copy[64];
    snprintf(url_copy, sizeof url_copy, "%s", url);
    int port = tether_listener_port(S.l);
    struct cli k[4];
    memset(k, 0, sizeof k);
    for (int i = 0; i < 4; i++) {
        k[i].total = 20000;
        dial(&k[i], url_copy, NULL, i < 3); /* the fourth speaks no control frames */
    }
    int four = 4;
    ck_assert(th_run_until_pred(srv_n_got, &four, 10000));
    ck_assert_int_eq(tether_listener_shutdown(S.l, 10000, on_shutdown, NULL), TETHER_OK);
    S.l = NULL;
    ck_assert(!S.shutdown_done); /* never from inside the call */
    ck_assert(th_run_until_pred(shutdown_done, NULL, 20000));
    ck_assert_int_eq(S.shutdown_status, TETHER_OK);
    ck_assert_int_eq(S.closed, 4);
    for (int i = 0; i < 4; i++) {
        ck_assert(th_run_until_pred(cli_closed, &k[i], 10000));
        printf("shutdown: client %d sent %u, got %u echoes, %s \"%s\"\n", i, k[i].accepted,
               k[i].echoes, tether_err_name(k[i].reason), k[i].detail);
        if (i < 3) {
            ck_assert(k[i].goaway);
            ck_assert_uint_eq(k[i].goaway_reason, TETHER_GOAWAY_SHUTDOWN);
            ck_assert_str_eq(k[i].goaway_text, "server shutting down");
            ck_assert_uint_eq(k[i].echoes, k[i].accepted);
            ck_assert(!k[i].order_broken);
            ck_assert_int_eq(k[i].reason, TETHER_EOF);
        } else {
            ck_assert(!k[i].goaway);
        }
    }
    for (int j = 0; j < S.n; j++) {
        ck_assert(!S.conns[j].order_broken);
        ck_assert_int_eq(S.conns[j].reason, TETHER_OK);
    }
    /* No longer accepting: the port is free. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(0x7F000001);
    ck_assert_int_ne(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(errno, ECONNREFUSED);
    close(fd);
    th_run_idle(3000);
}
END_TEST

/* A raw client speaking control frames: HELLO, then two messages of
 * MSG_LEN bytes numbered 0 and 1 (kept in late_out). */
static const uint8_t late_hello[] = {0xFF, 0x01, 0x00, 0x06, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00};
static uint8_t late_out[sizeof late_hello + 2 * (4 + MSG_LEN)];

static void late_client_send(int fd)
{
    memcpy(late_out, late_hello, sizeof late_hello);
    for (int i = 0; i < 2; i++) {
        uint8_t *f = late_out + sizeof late_hello + i * (4 + MSG_LEN);
        f[0] = 0, f[1] = 0, f[2] = (uint8_t)(MSG_LEN >> 8), f[3] = (uint8_t)MSG_LEN;
        memset(f + 4, 'x', MSG_LEN);
        f[4] = f[5] = f[6] = 0;
        f[7] = (uint8_t)i;
    }
    th_raw_write(fd, late_out, sizeof late_out);
}

/* The rest of late_client_send()'s drain: the server's HELLO and its
 * GOAWAY request, our "done"; then both echoes, the server's "done" and
 * its FIN, byte for byte; and the shutdown reports success, the server
 * having delivered both messages. Closes fd. */
static void late_client_drain(int fd)
{
    static const uint8_t req[] = {0xFF, 0x04, 0x00, 0x17, 0x01, 0x00, 0x06, 's', 'e',
                                  'r',  'v',  'e',  'r',  ' ',  's',  'h',  'u', 't',
                                  't',  'i',  'n',  'g',  ' ',  'd',  'o',  'w', 'n'};
    uint8_t buf[4096];
    bool eof;
    size_t want = sizeof late_hello + sizeof req;
    size_t got = raw_read(fd, buf, sizeof buf, want, &eof);
    ck_assert_uint_ge(got, want);
    ck_assert_mem_eq(buf + sizeof late_hello, req, sizeof req);
    static const uint8_t done[] = {0xFF, 0x04, 0x00, 0x03, 0x03, 0x00, 0x00};
    th_raw_write(fd, done, sizeof done);
    got += raw_read(fd, buf + got, sizeof buf - got, 0, &eof);
    ck_assert(eof);
    ck_assert_uint_eq(got, want + 2 * (4 + MSG_LEN) + sizeof done);
    ck_assert_mem_eq(buf + want, late_out + sizeof late_hello, 2 * (4 + MSG_LEN));
    ck_assert(th_run_until_pred(shutdown_done, NULL, 10000));
    ck_assert_int_eq(S.shutdown_status, TETHER_OK);
    ck_assert_uint_eq(S.conns[0].got, 2);
    close(fd);
    th_run_idle(3000);
}

/* A connection accepted a moment before the shutdown, whose HELLO and
 * first messages are still on the way: it is asked to drain when its
 * HELLO comes, and its messages are echoed, not dropped by a close. */
START_TEST(listener_shutdown_waits_for_a_late_hello)
{
    start_server("tcp://127.0.0.1:0", NULL, 0);
    int fd = th_raw_connect(tether_listener_port(S.l));
    int one = 1;
    ck_assert(th_run_until_pred(srv_n, &one, 10000)); /* accepted, nothing read */
    ck_assert_int_eq(tether_listener_shutdown(S.l, 10000, on_shutdown, NULL), TETHER_OK);
    S.l = NULL;
    tether_loop_run_once(th_loop, 50);
    /* HELLO, two messages; then the GOAWAY request, and our "done". */
    late_client_send(fd);
    late_client_drain(fd);
}
END_TEST

/* A connection the kernel has completed and queued, but the loop has not
 * accepted yet, whose client has sent its HELLO and first messages: the
 * shutdown accepts it before closing the socket (whose close would reset
 * it and lose those messages), and drains it like any other. */
START_TEST(listener_shutdown_takes_the_queued_connections)
{
    start_server("tcp://127.0.0.1:0", NULL, 0);
    int fd = th_raw_connect(tether_listener_port(S.l));
    late_client_send(fd);
    /* Once the server's kernel has acknowledged it all, the connection is
     * in the listener's queue (the loop has not run: nothing accepted). */
    int unacked = -1;
    for (uint64_t until = th_now_ms() + 10000; th_now_ms() < until;) {
        ck_assert_int_eq(ioctl(fd, SIOCOUTQ, &unacked), 0);
        if (unacked == 0) {
            break;
        }
        struct pollfd none;
        (void)poll(&none, 0, 5);
    }
    ck_assert_int_eq(unacked, 0);
    ck_assert_int_eq(S.n, 0);
    ck_assert_int_eq(tether_listener_shutdown(S.l, 10000, on_shutdown, NULL), TETHER_OK);
    S.l = NULL;
    ck_assert_int_eq(S.n, 1); /* accepted by the call */
    /* The server's HELLO and its GOAWAY request, our "done"; then both
     * echoes and the server's "done", and its FIN. */
    late_client_drain(fd);
}
END_TEST

START_TEST(listener_shutdown_without_connections_reports_at_once)
{
    start_server("tcp://127.0.0.1:0", NULL, 0);
    ck_assert_int_eq(tether_listener_shutdown(S.l, 0, on_shutdown, NULL), TETHER_OK);
    ck_assert(!S.shutdown_done);
    ck_assert(th_run_until_pred(shutdown_done, NULL, 5000));
    ck_assert_int_eq(S.shutdown_status, TETHER_OK);
    ck_assert_int_eq(tether_listener_shutdown(NULL, 0, NULL, NULL), TETHER_EINVAL);
    th_run_idle(3000);
}
END_TEST

/* A client that stopped reading never answers: the shutdown's deadline
 * closes it and reports ETIMEDOUT. */
START_TEST(listener_shutdown_deadline_closes_the_rest)
{
    start_server("tcp://127.0.0.1:0", NULL, 0);
    struct cli k = {.total = 10};
    dial(&k, url_for(false), NULL, true);
    uint32_t ten = 10;
    ck_assert(th_run_until_pred(srv_got, &ten, 10000));
    tether_conn_pause(k.c);
    ck_assert_int_eq(tether_listener_shutdown(S.l, 300, on_shutdown, NULL), TETHER_OK);
    ck_assert(th_run_until_pred(shutdown_done, NULL, 20000));
    ck_assert_int_eq(S.shutdown_status, TETHER_ETIMEDOUT);
    ck_assert_int_eq(S.conns[0].reason, TETHER_ETIMEDOUT);
    tether_conn_resume(k.c);
    ck_assert(th_run_until_pred(cli_closed, &k, 10000));
    th_run_idle(3000);
}
END_TEST

/* ---- tether_client: moves to a new connection, loses nothing -------------- */

#define CL_TOTAL 40000u

struct rcli {
    tether_client *cl;
    uint32_t accepted;
    uint32_t echoes;
    uint8_t *echoed;          /* per sequence number: echoes received */
    uint32_t disconnected_ok; /* DISCONNECTED with TETHER_OK (draining) */
    bool closed;
};

/* Completions of tether_client_send_cb() (tether/delivery.h). */
static uint32_t rc_done_ok, rc_done_failed;

static void rc_on_done(tether_client *cl, int status, void *ud)
{
    (void)cl, (void)ud;
    if (status == TETHER_OK) {
        rc_done_ok++;
    } else {
        rc_done_failed++;
    }
}

static void rc_pump_n(struct rcli *r, uint32_t n)
{
    uint8_t m[MSG_LEN];
    uint32_t stop = r->accepted + n < CL_TOTAL ? r->accepted + n : CL_TOTAL;
    while (r->accepted < stop) {
        memset(m, 0xA5, sizeof m);
        m[0] = (uint8_t)(r->accepted >> 24);
        m[1] = (uint8_t)(r->accepted >> 16);
        m[2] = (uint8_t)(r->accepted >> 8);
        m[3] = (uint8_t)r->accepted;
        int rv = tether_client_send_cb(r->cl, m, sizeof m, rc_on_done, NULL);
        if (rv == TETHER_EAGAIN) {
            return;
        }
        ck_assert_int_eq(rv, TETHER_OK);
        r->accepted++;
    }
}

static void rc_pump(struct rcli *r)
{
    rc_pump_n(r, CL_TOTAL);
}

static void rc_on_message(tether_client *cl, const uint8_t *data, size_t len, void *ud)
{
    (void)cl;
    struct rcli *r = ud;
    ck_assert_uint_eq(len, MSG_LEN);
    uint32_t seq =
        ((uint32_t)data[0] << 24) | ((uint32_t)data[1] << 16) | ((uint32_t)data[2] << 8) | data[3];
    ck_assert_uint_lt(seq, CL_TOTAL);
    r->echoed[seq]++;
    r->echoes++;
}

static void rc_on_state(tether_client *cl, const tether_client_event *ev, void *ud)
{
    (void)cl;
    struct rcli *r = ud;
    if (ev->state == TETHER_CLIENT_DISCONNECTED && ev->reason == TETHER_OK &&
        strstr(ev->detail, "draining (GOAWAY)") != NULL) {
        r->disconnected_ok++;
    }
    if (ev->state == TETHER_CLIENT_CLOSED) {
        r->closed = true;
    }
}

static void rc_on_undelivered(tether_client *cl, const uint8_t *data, size_t len, int reason,
                              void *ud)
{
    (void)cl;
    (void)data;
    (void)len;
    (void)ud;
    ck_abort_msg("a message was handed back (%s)", tether_err_name(reason));
}

static uint32_t rc_handed_back;

static void rc_count_undelivered(tether_client *cl, const uint8_t *data, size_t len, int reason,
                                 void *ud)
{
    (void)cl, (void)data, (void)len, (void)reason, (void)ud;
    rc_handed_back++;
}

static tether_tls_config *rc_tls; /* the client's TLS configuration, or NULL */

static void rc_start_ex(struct rcli *r, const char *url, int max_age_ms, int close_timeout_ms,
                        tether_client_undelivered_cb undelivered)
{
    memset(r, 0, sizeof *r);
    rc_done_ok = rc_done_failed = 0;
    r->echoed = calloc(CL_TOTAL, 1);
    S.seen = calloc(CL_TOTAL, 1);
    S.seen_cap = CL_TOTAL;
    ck_assert(r->echoed != NULL && S.seen != NULL);
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.heartbeat_ms = 60000; /* control frames, so that drains reach the client */
    co.max_age_ms = max_age_ms;
    if (close_timeout_ms > 0) {
        co.close_timeout_ms = close_timeout_ms;
    }
    co.tls = rc_tls;
    tether_client_opts o;
    tether_client_opts_init(&o);
    o.userdata = r;
    o.conn_opts = &co;
    o.on_message = rc_on_message;
    o.on_state = rc_on_state;
    o.on_undelivered = undelivered;
    o.reconnect_spread_ms = 0;
    tether_error err;
    int rv = tether_client_new(&r->cl, th_loop, url, &o, &err);
    ck_assert_msg(rv == TETHER_OK, "client: %s", err.message);
}

static void rc_start(struct rcli *r, const char *url, int max_age_ms)
{
    rc_start_ex(r, url, max_age_ms, 0, rc_on_undelivered);
}

static bool rc_all_done(void *arg)
{
    return rc_done_ok + rc_done_failed >= ((struct rcli *)arg)->accepted;
}

/* Every accepted message reached the server exactly once and was echoed
 * back exactly once; per connection in order. */
static void rc_check(struct rcli *r)
{
    uint32_t srv_total = 0;
    for (int i = 0; i < S.n; i++) {
        ck_assert_msg(!S.conns[i].order_broken, "connection %d reordered", i);
        srv_total += S.conns[i].got;
    }
    uint32_t lost = 0, dup = 0;
    for (uint32_t i = 0; i < r->accepted; i++) {
        lost += S.seen[i] == 0 || r->echoed[i] == 0;
        dup += S.seen[i] > 1 || r->echoed[i] > 1;
    }
    tether_stats st;
    ck_assert_int_eq(tether_client_get_stats(r->cl, &st), TETHER_OK);
    printf("client drain: %u accepted, server got %u over %d connections, %u echoes, lost %u, "
           "duplicated %u; %u drains seen, %llu connects\n",
           r->accepted, srv_total, S.n, r->echoes, lost, dup, r->disconnected_ok,
           (unsigned long long)st.connects);
    ck_assert_uint_eq(lost, 0);
    ck_assert_uint_eq(dup, 0);
    ck_assert_uint_eq(srv_total, r->accepted);
    ck_assert_uint_eq(r->echoes, r->accepted);
    ck_assert_uint_eq(st.undelivered, 0);
    /* Every completion reported written, whichever connection wrote it
     * (they are reported from the loop, later than the echo may arrive:
     * wait for them all, as a hang guard). */
    ck_assert(th_run_until_pred(rc_all_done, r, 10000));
    ck_assert_uint_eq(rc_done_ok, r->accepted);
    ck_assert_uint_eq(rc_done_failed, 0);
}

static bool cli_closed_r(void *arg)
{
    return ((struct rcli *)arg)->closed;
}

static void rc_free(struct rcli *r)
{
    tether_client_close(r->cl);
    ck_assert(th_run_until_pred(cli_closed_r, r, 10000));
    free(r->echoed);
    free(S.seen);
    S.seen = NULL;
}

static bool rc_all_echoed(void *arg)
{
    struct rcli *r = arg;
    rc_pump(r);
    return r->accepted == CL_TOTAL && r->echoes == CL_TOTAL;
}

static bool three_drains_done(void *arg)
{
    struct rcli *r = arg;
    return r->disconnected_ok >= 3 && S.n >= 3 && S.conns[0].closed && S.conns[1].closed &&
           S.conns[2].closed;
}

/* The server drains the client's connection three times while it streams;
 * each time the server holds the old connection (it stops reading) until
 * the client's new connection has arrived: the client reconnected before
 * the old one closed. */
static void client_moves_case(bool tls)
{
    tether_tls_config *scfg = tls ? tls_cfg(true) : NULL;
    rc_tls = tls ? tls_cfg(false) : NULL;
    start_server(tls ? "tls://127.0.0.1:0" : "tcp://127.0.0.1:0", scfg, 0);
    struct rcli r;
    rc_start(&r, url_for(tls), 0);
    for (int drain = 0; drain < 3; drain++) {
        uint64_t until = th_now_ms() + 10000;
        while ((S.n == 0 || S.conns[S.n - 1].got < 3000) && th_now_ms() < until) {
            tether_loop_run_once(th_loop, 5);
            rc_pump(&r);
        }
        ck_assert_int_ge(S.n, 1);
        int cur = S.n;
        struct sconn *old = &S.conns[S.n - 1];
        ck_assert_uint_ge(old->got, 3000);
        ck_assert_int_eq(tether_conn_goaway(old->c, TETHER_GOAWAY_SHUTDOWN, "rolling", 20000),
                         TETHER_OK);
        tether_conn_pause(old->c);
        until = th_now_ms() + 10000;
        while (S.n == cur && th_now_ms() < until) {
            tether_loop_run_once(th_loop, 5);
            rc_pump(&r);
        }
        ck_assert_int_eq(S.n, cur + 1); /* the new connection is there ... */
        ck_assert(!old->closed);        /* ... and the old one still open */
        tether_conn_resume(old->c);
    }
    ck_assert(th_run_until_pred(rc_all_echoed, &r, 30000));
    /* The last echo can come before the old connections' drains have
     * finished (and the client has reported them): wait for those. */
    ck_assert(th_run_until_pred(three_drains_done, &r, 20000));
    ck_assert_uint_eq(r.disconnected_ok, 3);
    rc_check(&r);
    for (int i = 0; i < 3; i++) {
        ck_assert(S.conns[i].closed);
        ck_assert_int_eq(S.conns[i].reason, TETHER_OK);
        ck_assert_str_eq(S.conns[i].detail, "drained (GOAWAY): rolling");
    }
    rc_free(&r);
    tether_listener_close(S.l);
    tether_tls_config_unref(scfg);
    tether_tls_config_unref(rc_tls);
    rc_tls = NULL;
    th_run_idle(3000);
}

START_TEST(client_moves_to_a_new_connection_without_loss)
{
    client_moves_case(false);
}
END_TEST

START_TEST(client_moves_to_a_new_connection_without_loss_over_tls)
{
    client_moves_case(true);
}
END_TEST

static bool srv_n_accepted(void *arg)
{
    return S.n >= *(int *)arg;
}

/* max_age_ms on the server's or on the client's connections, with traffic
 * flowing: each expiry is a drain, and nothing is lost. */
static void client_max_age_case(bool server_side)
{
    start_server("tcp://127.0.0.1:0", NULL, server_side ? 250 : 0);
    struct rcli r;
    rc_start(&r, url_for(false), server_side ? 0 : 250);
    /* A steady stream, 20 messages a millisecond (2 s in all), over
     * several expiries. Each third of it waits for one more drain: a
     * machine that holds the loop back for most of the 2 s (and then finds
     * the whole stream due at once) still streams across two drains. */
    uint64_t start = th_now_ms();
    uint64_t until = start + 30000;
    while (r.accepted < CL_TOTAL && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 1);
        uint64_t due = (th_now_ms() - start) * 20;
        uint64_t cap = (uint64_t)(r.disconnected_ok + 1) * CL_TOTAL / 3;
        due = due < cap ? due : cap;
        if (due > r.accepted) {
            rc_pump_n(&r, (uint32_t)(due - r.accepted));
        }
    }
    ck_assert_uint_eq(r.accepted, CL_TOTAL);
    ck_assert_uint_ge(r.disconnected_ok, 2);
    ck_assert(th_run_until_pred(rc_all_echoed, &r, 30000));
    int two = 2;
    ck_assert(th_run_until_pred(srv_n_accepted, &two, 10000)); /* the new connection came */
    rc_check(&r);
    rc_free(&r);
    tether_listener_close(S.l);
    th_run_idle(3000);
}

START_TEST(client_max_age_on_the_server_loses_nothing)
{
    client_max_age_case(true);
}
END_TEST

START_TEST(client_max_age_on_the_client_loses_nothing)
{
    client_max_age_case(false);
}
END_TEST

/* The client is closed while its old connection is still draining (the
 * server holds it): both connections close, the client is freed, and
 * every accepted message either reached the server once or was handed
 * back. */
START_TEST(client_close_while_a_drain_is_finishing)
{
    start_server("tcp://127.0.0.1:0", NULL, 0);
    struct rcli r;
    rc_handed_back = 0;
    rc_start_ex(&r, url_for(false), 0, 500, rc_count_undelivered);
    uint64_t until = th_now_ms() + 10000;
    while ((S.n == 0 || S.conns[0].got < 1000) && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 5);
        rc_pump_n(&r, 200);
    }
    ck_assert_int_eq(S.n, 1);
    struct sconn *old = &S.conns[0];
    ck_assert_int_eq(tether_conn_goaway(old->c, TETHER_GOAWAY_SHUTDOWN, "hold", 20000), TETHER_OK);
    tether_conn_pause(old->c);
    int two = 2;
    ck_assert(th_run_until_pred(srv_n_accepted, &two, 10000));
    rc_pump_n(&r, 500);
    tether_client_close(r.cl);
    ck_assert(th_run_until_pred(cli_closed_r, &r, 10000));
    tether_conn_resume(old->c);
    ck_assert(th_run_until_pred(srv_all_closed, &two, 10000));
    uint32_t seen = 0, dup = 0;
    for (uint32_t i = 0; i < r.accepted; i++) {
        seen += S.seen[i] > 0;
        dup += S.seen[i] > 1;
    }
    printf("client closed while draining: %u accepted, %u reached the server, %u handed back\n",
           r.accepted, seen, rc_handed_back);
    ck_assert_uint_eq(dup, 0);
    ck_assert_uint_eq(seen + rc_handed_back, r.accepted);
    free(r.echoed);
    free(S.seen);
    S.seen = NULL;
    tether_listener_close(S.l);
    th_run_idle(3000);
}
END_TEST

/* tether_client_pause() holds the draining connection's messages too,
 * and tether_client_resume() lets them through: nothing lost. */
START_TEST(client_pause_covers_the_draining_connection)
{
    start_server("tcp://127.0.0.1:0", NULL, 0);
    struct rcli r;
    rc_start(&r, url_for(false), 0);
    uint64_t until = th_now_ms() + 10000;
    while ((S.n == 0 || S.conns[0].got < 1000) && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 5);
        rc_pump_n(&r, 200);
    }
    ck_assert_int_eq(S.n, 1);
    struct sconn *old = &S.conns[0];
    ck_assert_int_eq(tether_conn_goaway(old->c, TETHER_GOAWAY_SHUTDOWN, "pause", 20000), TETHER_OK);
    tether_conn_pause(old->c); /* the old connection cannot finish yet */
    int two = 2;
    ck_assert(th_run_until_pred(srv_n_accepted, &two, 10000));
    tether_client_pause(r.cl);
    tether_conn_resume(old->c); /* its echoes now come, to a paused client */
    uint32_t before = r.echoes;
    uint64_t t0 = th_now_ms();
    while (th_now_ms() - t0 < 300) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_uint_eq(r.echoes, before); /* nothing delivered while paused */
    tether_client_resume(r.cl);
    ck_assert(th_run_until_pred(rc_all_echoed, &r, 30000));
    rc_check(&r);
    rc_free(&r);
    tether_listener_close(S.l);
    th_run_idle(3000);
}
END_TEST

static Suite *drain_suite(void)
{
    Suite *s = suite_create("drain");
    TCase *tc = tcase_create("drain");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, server_goaway_drains_both_directions_over_tcp);
    tcase_add_test(tc, server_goaway_drains_both_directions_over_tls);
    tcase_add_test(tc, client_goaway_delivers_every_accepted_message_over_tcp);
    tcase_add_test(tc, client_goaway_delivers_every_accepted_message_over_tls);
    tcase_add_test(tc, goaway_to_a_plain_peer_closes_gracefully);
    tcase_add_test(tc, drain_deadline_turns_into_a_close);
    tcase_add_test(tc, drain_exchange_on_the_wire);
    tcase_add_test(tc, goaway_rejects_bad_arguments);
    tcase_add_test(tc, max_age_drains_with_traffic_flowing);
    tcase_add_test(tc, listener_shutdown_drains_every_connection);
    tcase_add_test(tc, listener_shutdown_waits_for_a_late_hello);
    tcase_add_test(tc, listener_shutdown_takes_the_queued_connections);
    tcase_add_test(tc, listener_shutdown_without_connections_reports_at_once);
    tcase_add_test(tc, listener_shutdown_deadline_closes_the_rest);
    tcase_add_test(tc, client_moves_to_a_new_connection_without_loss);
    tcase_add_test(tc, client_moves_to_a_new_connection_without_loss_over_tls);
    tcase_add_test(tc, client_max_age_on_the_server_loses_nothing);
    tcase_add_test(tc, client_max_age_on_the_client_loses_nothing);
    tcase_add_test(tc, client_close_while_a_drain_is_finishing);
    tcase_add_test(tc, client_pause_covers_the_draining_connection);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(drain_suite());
}
