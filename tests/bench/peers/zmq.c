/* SPDX-License-Identifier: MIT */
/* bench_zmq: the comparison peer for a message library with its own
 * framing and I/O threads: ZeroMQ, libzmq 4.3 (PROTOCOL.md in the parent
 * folder; plumbing in bench_common.c).
 *
 * Used the way its manual and guide suggest: one context per process,
 * created after the fork; blocking zmq_send()/zmq_msg_recv() from the
 * application thread while the context's one I/O thread (the default
 * ZMQ_IO_THREADS) does the TCP work; one zmq message per benchmark
 * message, in ZMTP's own framing. The server binds tcp://127.0.0.1:* and
 * reads its port from ZMQ_LAST_ENDPOINT. The socket types are those of the
 * patterns the guide gives for each job:
 *
 * - thr: PAIR to PAIR, one connection carrying the hello and the messages
 *   one way and the ready and the ack back. libzmq's own throughput test
 *   uses PUSH/PULL, which is one-way: the ready and the ack would need a
 *   second socket and a second listening port, which this protocol's
 *   server does not have. (PAIR's manual page means it for inproc because
 *   it does not reconnect; one loopback connection for the whole run
 *   never needs to.)
 * - lat: REQ to REP, the request-reply pair of the guide's first example
 *   and of libzmq's own latency test (local_lat/remote_lat); REQ's empty
 *   delimiter frame on each request is part of what the pattern costs.
 * - hs: a new DEALER socket each iteration, to one ROUTER: it connects,
 *   sends its message, receives the echo and is closed, so every
 *   iteration is a new TCP connection and ZMTP handshake. The ROUTER
 *   hands each message over with the routing id of its connection, so the
 *   server can check that every connection sent exactly one message, and
 *   sends the echo back on that connection.
 * - conns: the same ROUTER server; the client is one ROUTER socket that
 *   connects K times to it, naming each connection with
 *   ZMQ_CONNECT_ROUTING_ID (the manual's way to address connections made
 *   by one socket). Each connect is its own TCP connection, ZMTP session
 *   and pipe. Once all are up, one message goes to each connection by its
 *   id, and each echo must come back on the connection it went out on.
 *   K DEALER sockets would be K clients more literally, but every libzmq
 *   socket holds a descriptor for its mailbox besides its connection, and
 *   2K descriptors for K = 10000 do not fit under the hard limit of 20000
 *   this benchmark is run with; a DEALER, for its part, ignores a second
 *   connect to an endpoint it is connected to.
 *
 * The server learns of connections from zmq_socket_monitor(): an inproc
 * PAIR that reports ZMQ_EVENT_HANDSHAKE_SUCCEEDED (the ZMTP handshake is
 * done: conns' confirmation to the parent, one per connection) and
 * ZMQ_EVENT_DISCONNECTED (the peer closed). In every scenario it finishes
 * only when every connection it expected has ended, and then no message
 * may be left unread: the end-of-stream check the hand-framed peers make.
 * Failed accepts and handshakes are errors. In conns the client keeps at
 * most CONNS_WINDOW connections not yet confirmed, under libzmq's default
 * listen backlog (ZMQ_BACKLOG, 100).
 *
 * Options changed from the defaults, and why:
 * - ZMQ_LINGER 0 on every socket (default: wait forever for unsent
 *   messages at close). Nothing is pending when a socket is closed, as
 *   each scenario's last message has been answered; it keeps
 *   zmq_ctx_term() from ever waiting on a peer that is gone.
 * - ZMQ_ROUTER_MANDATORY on every ROUTER (default: a message to an
 *   unknown routing id is dropped silently): a message that cannot be
 *   delivered is an error instead of a hang.
 * - ZMQ_CONNECT_ROUTING_ID before each of conns' connects (above).
 * - ZMQ_RCVHWM 0 (no limit) on the PAIR that reads the monitor. The
 *   monitor sends its events from the I/O thread with a blocking send, and
 *   thr's and lat's servers read them only at the end: an I/O thread held
 *   up by a full monitor pipe could not deliver the message the
 *   application waits for (and conns ends 10000 connections at once).
 * ZMQ_MAX_SOCKETS stays at its default, 1023: no process has more than
 * three sockets open (hs closes each DEALER before it opens the next).
 * The high-water marks of the data sockets stay at the default 1000
 * messages each way (thr's client blocks in zmq_send() when they are
 * full), TCP_NODELAY is libzmq's own default, and so is the 8 KiB batch
 * of its encoder and decoder. thr sends payloads below 64 KiB with
 * zmq_send(), which copies them into a message, and larger ones with
 * zmq_msg_init_data() on the constant payload and no free function, the
 * zero-copy path the guide describes for large messages (libzmq then
 * writes them from that buffer); the libevent peer draws the same line.
 * The server checks every message's length and that it is a single part;
 * the client checks every echo byte for byte.
 *
 * ZeroMQ has no TLS: --transport tls prints a skip line (PROTOCOL.md).
 */
#include "../bench_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#define ZC_MIN (64u * 1024u) /* thr: payloads sent without a copy from here up */
#define MON_ENDPOINT "inproc://bench-monitor"
#define MON_EVENTS                                                                                 \
    (ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_ACCEPT_FAILED |            \
     ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |                  \
     ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)

static void *g_zctx;       /* this process's context */
static int g_port;         /* client: the server's port */
static uint8_t *g_payload; /* O.size bytes: what clients send */

static noreturn void zdie(const char *what)
{
    bench_die("%s: %s", what, zmq_strerror(zmq_errno()));
}

/* ---- sockets and messages ------------------------------------------------ */

static void set_int(void *s, int opt, int v, const char *name)
{
    if (zmq_setsockopt(s, opt, &v, sizeof v) != 0) {
        zdie(name);
    }
}

static void *new_socket(int type)
{
    void *s = zmq_socket(g_zctx, type);
    if (s == NULL) {
        zdie("zmq_socket");
    }
    set_int(s, ZMQ_LINGER, 0, "ZMQ_LINGER");
    return s;
}

static void close_socket(void *s)
{
    if (zmq_close(s) != 0) {
        zdie("zmq_close");
    }
}

static void term_context(void)
{
    while (zmq_ctx_term(g_zctx) != 0) {
        if (zmq_errno() != EINTR) {
            zdie("zmq_ctx_term");
        }
    }
    g_zctx = NULL;
}

/* One message part into m (initialised); false only with ZMQ_DONTWAIT in
 * flags when none is queued. */
static bool recv_msg(void *s, zmq_msg_t *m, int flags, const char *what)
{
    for (;;) {
        if (zmq_msg_recv(m, s, flags) >= 0) {
            return true;
        }
        if (zmq_errno() == EAGAIN && (flags & ZMQ_DONTWAIT) != 0) {
            return false;
        }
        if (zmq_errno() != EINTR) {
            zdie(what);
        }
    }
}

/* One message part of exactly `len` bytes and no more parts after it. */
static void recv_expect(void *s, zmq_msg_t *m, size_t len, const char *what)
{
    recv_msg(s, m, 0, what);
    if (zmq_msg_size(m) != len || zmq_msg_more(m)) {
        bench_die("the %s has %zu bytes%s, expected %zu in one part", what, zmq_msg_size(m),
                  zmq_msg_more(m) ? " and more parts" : "", len);
    }
}

/* Sends m (which zmq then owns, leaving m empty). */
static void send_msg(void *s, zmq_msg_t *m, int flags, const char *what)
{
    while (zmq_msg_send(m, s, flags) < 0) {
        if (zmq_errno() != EINTR) {
            zdie(what);
        }
    }
}

/* Sends a copy of p[0..n). */
static void send_buf(void *s, const void *p, size_t n, int flags, const char *what)
{
    while (zmq_send(s, p, n, flags) < 0) {
        if (zmq_errno() != EINTR) {
            zdie(what);
        }
    }
}

static void send_byte(void *s, char byte, const char *what)
{
    send_buf(s, &byte, 1, 0, what);
}

/* The server's socket: nothing may be left to read once its connections
 * have ended. */
static void expect_drained(void *s)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (recv_msg(s, &m, ZMQ_DONTWAIT, "zmq_msg_recv")) {
        bench_die("a message of %zu bytes after the last expected one", zmq_msg_size(&m));
    }
    zmq_msg_close(&m);
}

/* ---- server (the forked child) -------------------------------------------- */

static struct {
    void *mon;       /* our PAIR on the monitor's inproc endpoint */
    long handshakes; /* ZMQ_EVENT_HANDSHAKE_SUCCEEDED */
    long ended;      /* ZMQ_EVENT_DISCONNECTED */
    long expected;   /* connections the scenario makes */
} S;

static const char *event_name(unsigned ev)
{
    switch (ev) {
    case ZMQ_EVENT_ACCEPT_FAILED:
        return "accept failed";
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return "handshake failed";
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
        return "handshake failed (protocol)";
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
        return "handshake failed (auth)";
    default:
        return "unexpected event";
    }
}

/* Handles one monitor event (two parts: 16-bit event and 32-bit value,
 * then the endpoint); false only with ZMQ_DONTWAIT when none is queued. */
static bool mon_event(int flags)
{
    zmq_msg_t m;
    uint16_t ev;
    uint32_t val;
    zmq_msg_init(&m);
    if (!recv_msg(S.mon, &m, flags, "monitor")) {
        zmq_msg_close(&m);
        return false;
    }
    if (zmq_msg_size(&m) != sizeof ev + sizeof val || !zmq_msg_more(&m)) {
        bench_die("malformed monitor event (%zu bytes)", zmq_msg_size(&m));
    }
    memcpy(&ev, zmq_msg_data(&m), sizeof ev);
    memcpy(&val, (const uint8_t *)zmq_msg_data(&m) + sizeof ev, sizeof val);
    recv_msg(S.mon, &m, 0, "monitor"); /* the endpoint */
    if (zmq_msg_more(&m)) {
        bench_die("malformed monitor event (more than two parts)");
    }
    zmq_msg_close(&m);
    if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
        if (++S.handshakes > S.expected) {
            bench_die("more than the %ld connections expected", S.expected);
        }
        if (O.scenario == SC_CONNS) {
            bench_ctl_notify();
        }
    } else if (ev == ZMQ_EVENT_DISCONNECTED) {
        S.ended++;
    } else {
        bench_die("monitor: %s (event 0x%x, value %u: %s)", event_name(ev), (unsigned)ev,
                  (unsigned)val, val < 4096 ? strerror((int)val) : "?");
    }
    return true;
}

/* Waits until every expected connection has ended; then none may be left
 * to read on s and every one must have completed its handshake. */
static void wait_all_ended(void *s)
{
    while (S.ended < S.expected) {
        mon_event(0);
    }
    while (mon_event(ZMQ_DONTWAIT)) {
    }
    expect_drained(s);
    if (S.ended != S.expected || S.handshakes != S.expected) {
        bench_die("%ld handshakes and %ld ends for %ld connections", S.handshakes, S.ended,
                  S.expected);
    }
}

static void serve_thr(void *s)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    recv_expect(s, &m, HELLO_LEN, "hello");
    send_byte(s, 'r', "ready");
    for (long i = 0; i < O.count; i++) {
        recv_msg(s, &m, 0, "zmq_msg_recv");
        if (zmq_msg_size(&m) != O.size || zmq_msg_more(&m)) {
            bench_die("message %ld has %zu bytes%s, expected %zu", i, zmq_msg_size(&m),
                      zmq_msg_more(&m) ? " and more parts" : "", O.size);
        }
    }
    zmq_msg_close(&m);
    send_byte(s, 'a', "ack");
}

/* REP: each request is sent back as the reply, without a copy. */
static void serve_lat(void *s)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    recv_expect(s, &m, HELLO_LEN, "hello");
    send_byte(s, 'r', "ready");
    for (long i = 0; i < bench_lat_warmup() + O.count; i++) {
        recv_msg(s, &m, 0, "zmq_msg_recv");
        if (zmq_msg_size(&m) != O.size || zmq_msg_more(&m)) {
            bench_die("request %ld has %zu bytes%s, expected %zu", i, zmq_msg_size(&m),
                      zmq_msg_more(&m) ? " and more parts" : "", O.size);
        }
        send_msg(s, &m, 0, "reply");
    }
    zmq_msg_close(&m);
}

/* A routing id as a number, to check that no connection sent twice. */
static uint64_t pack_id(zmq_msg_t *id)
{
    uint64_t v = 0;
    size_t n = zmq_msg_size(id);
    if (n == 0 || n > 7) {
        bench_die("a routing id of %zu bytes", n);
    }
    memcpy(&v, zmq_msg_data(id), n);
    return v << 8 | n;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a;
    uint64_t y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Receives [routing id][message] from the ROUTER and sends the message
 * back to that connection. */
static void router_echo(void *s, zmq_msg_t *id, zmq_msg_t *m, uint64_t *ids, long *echoed)
{
    if (!zmq_msg_more(id)) {
        bench_die("a message without its routing id");
    }
    if (*echoed == S.expected) {
        bench_die("more messages than the %ld connections", S.expected);
    }
    ids[(*echoed)++] = pack_id(id);
    recv_msg(s, m, 0, "zmq_msg_recv");
    if (zmq_msg_size(m) != O.size || zmq_msg_more(m)) {
        bench_die("message %ld has %zu bytes%s, expected %zu", *echoed, zmq_msg_size(m),
                  zmq_msg_more(m) ? " and more parts" : "", O.size);
    }
    send_msg(s, id, ZMQ_SNDMORE, "echo");
    send_msg(s, m, 0, "echo");
}

/* hs and conns: one message on each connection, echoed, until every
 * connection has ended. ids has room for a routing id per connection. */
static void serve_router(void *s, uint64_t *ids)
{
    long echoed = 0;
    zmq_msg_t id;
    zmq_msg_t m;
    zmq_msg_init(&id);
    zmq_msg_init(&m);
    while (S.ended < S.expected) {
        zmq_pollitem_t pi[2] = {{s, 0, ZMQ_POLLIN, 0}, {S.mon, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(pi, 2, -1) < 0) {
            if (zmq_errno() == EINTR) {
                continue;
            }
            zdie("zmq_poll");
        }
        while ((pi[1].revents & ZMQ_POLLIN) != 0 && mon_event(ZMQ_DONTWAIT)) {
        }
        while ((pi[0].revents & ZMQ_POLLIN) != 0 && recv_msg(s, &id, ZMQ_DONTWAIT, "routing id")) {
            router_echo(s, &id, &m, ids, &echoed);
        }
    }
    zmq_msg_close(&id);
    zmq_msg_close(&m);
    wait_all_ended(s);
    if (echoed != S.expected) {
        bench_die("%ld messages from %ld connections", echoed, S.expected);
    }
    qsort(ids, (size_t)echoed, sizeof *ids, cmp_u64);
    for (long i = 1; i < echoed; i++) {
        if (ids[i] == ids[i - 1]) {
            bench_die("two messages on one connection");
        }
    }
}

static int bind_loopback(void *s)
{
    char ep[256];
    size_t len = sizeof ep;
    if (zmq_bind(s, "tcp://127.0.0.1:*") != 0) {
        zdie("bind tcp://127.0.0.1:*");
    }
    if (zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, ep, &len) != 0) {
        zdie("ZMQ_LAST_ENDPOINT");
    }
    const char *colon = strrchr(ep, ':');
    char *end = NULL;
    long port = colon != NULL ? strtol(colon + 1, &end, 10) : 0;
    if (colon == NULL || *end != '\0' || port <= 0 || port > 65535) {
        bench_die("no port in the endpoint '%s'", ep);
    }
    return (int)port;
}

static int server_main(void)
{
    g_zctx = zmq_ctx_new();
    if (g_zctx == NULL) {
        zdie("zmq_ctx_new");
    }
    int type = O.scenario == SC_THR ? ZMQ_PAIR : O.scenario == SC_LAT ? ZMQ_REP : ZMQ_ROUTER;
    void *s = new_socket(type);
    if (type == ZMQ_ROUTER) {
        set_int(s, ZMQ_ROUTER_MANDATORY, 1, "ZMQ_ROUTER_MANDATORY");
    }
    S.expected = O.scenario == SC_HS ? HS_WARMUP + O.count : O.scenario == SC_CONNS ? O.conns : 1;
    /* The routing ids seen, a check rather than a cost of the connections:
     * resident before the parent's first RSS reading. */
    uint64_t *ids = NULL;
    if (type == ZMQ_ROUTER) {
        ids = bench_xmalloc((size_t)S.expected * sizeof *ids);
        memset(ids, 0, (size_t)S.expected * sizeof *ids);
    }
    /* The monitor and its reader exist before the first connection can. */
    if (zmq_socket_monitor(s, MON_ENDPOINT, MON_EVENTS) != 0) {
        zdie("zmq_socket_monitor");
    }
    S.mon = new_socket(ZMQ_PAIR);
    set_int(S.mon, ZMQ_RCVHWM, 0, "ZMQ_RCVHWM");
    if (zmq_connect(S.mon, MON_ENDPOINT) != 0) {
        zdie("connect to the monitor");
    }
    bench_ctl_send_port(bind_loopback(s));
    if (O.scenario == SC_THR) {
        serve_thr(s);
        wait_all_ended(s);
    } else if (O.scenario == SC_LAT) {
        serve_lat(s);
        wait_all_ended(s);
    } else {
        serve_router(s, ids);
    }
    free(ids);
    if (zmq_socket_monitor(s, NULL, 0) != 0) {
        zdie("zmq_socket_monitor (stop)");
    }
    close_socket(S.mon);
    close_socket(s);
    term_context();
    bench_server_wait_stop();
    return 0;
}

/* ---- client (the parent) -------------------------------------------------- */

static void *dial(int type)
{
    char ep[64];
    void *s = new_socket(type);
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", g_port);
    if (zmq_connect(s, ep) != 0) {
        zdie("zmq_connect");
    }
    return s;
}

/* The echo of g_payload, checked byte for byte. */
static void recv_echo(void *s, zmq_msg_t *m, long i)
{
    recv_expect(s, m, O.size, "echo");
    if (memcmp(zmq_msg_data(m), g_payload, O.size) != 0) {
        bench_die("echo %ld differs from what was sent", i);
    }
}

static void hello(void *s)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    send_byte(s, 'h', "hello");
    recv_expect(s, &m, READY_LEN, "ready");
    zmq_msg_close(&m);
}

static void client_thr(void)
{
    void *s = dial(ZMQ_PAIR);
    zmq_msg_t m;
    zmq_msg_init(&m);
    hello(s);
    double t0 = bench_now_s();
    for (long i = 0; i < O.count; i++) {
        if (O.size < ZC_MIN) {
            send_buf(s, g_payload, O.size, 0, "zmq_send");
            continue;
        }
        zmq_msg_t big;
        if (zmq_msg_init_data(&big, g_payload, O.size, NULL, NULL) != 0) {
            zdie("zmq_msg_init_data");
        }
        send_msg(s, &big, 0, "zmq_msg_send");
    }
    recv_expect(s, &m, ACK_LEN, "ack");
    double t1 = bench_now_s();
    zmq_msg_close(&m);
    close_socket(s);
    term_context();
    bench_finish_server();
    bench_emit_thr(t1 - t0, NULL);
}

static void client_lat(void)
{
    long warm = bench_lat_warmup();
    double *rtt = bench_xmalloc((size_t)O.count * sizeof *rtt);
    void *s = dial(ZMQ_REQ);
    zmq_msg_t m;
    zmq_msg_init(&m);
    hello(s);
    for (long i = 0; i < warm + O.count; i++) {
        uint64_t t = bench_now_ns();
        send_buf(s, g_payload, O.size, 0, "request");
        recv_echo(s, &m, i);
        if (i >= warm) {
            rtt[i - warm] = (double)(bench_now_ns() - t) / 1e3;
        }
    }
    zmq_msg_close(&m);
    close_socket(s);
    term_context();
    bench_finish_server();
    bench_emit_lat(rtt, O.count, NULL);
    free(rtt);
}

static void client_hs(void)
{
    zmq_msg_t m;
    double t0 = 0;
    zmq_msg_init(&m);
    for (long i = 0; i < HS_WARMUP + O.count; i++) {
        if (i == HS_WARMUP) {
            t0 = bench_now_s();
        }
        void *s = dial(ZMQ_DEALER);
        send_buf(s, g_payload, O.size, 0, "zmq_send");
        recv_echo(s, &m, i);
        close_socket(s);
    }
    double t1 = bench_now_s();
    zmq_msg_close(&m);
    term_context();
    bench_finish_server();
    bench_emit_hs(t1 - t0, O.count, NULL);
}

/* conns: the routing id the client gives connection i ('c' and i, 32-bit
 * big-endian: a routing id may not start with a zero byte). */
static void conn_id(uint8_t id[5], uint32_t i)
{
    id[0] = 'c';
    id[1] = (uint8_t)(i >> 24);
    id[2] = (uint8_t)(i >> 16);
    id[3] = (uint8_t)(i >> 8);
    id[4] = (uint8_t)i;
}

/* conns: the client's ROUTER and the server's endpoint. */
struct conns_dial {
    void *s;
    const char *ep;
};

/* conns: connection i, named by its routing id. */
static void conns_open(long i, void *ud)
{
    const struct conns_dial *d = ud;
    uint8_t id[5];
    conn_id(id, (uint32_t)i);
    if (zmq_setsockopt(d->s, ZMQ_CONNECT_ROUTING_ID, id, sizeof id) != 0) {
        zdie("ZMQ_CONNECT_ROUTING_ID");
    }
    if (zmq_connect(d->s, d->ep) != 0) {
        zdie("zmq_connect");
    }
}

static void client_conns(void)
{
    const long n = O.conns;
    uint8_t *seen = bench_xmalloc((size_t)n);
    uint8_t id[5];
    char ep[64];
    zmq_msg_t m;
    zmq_msg_init(&m);
    memset(seen, 0, (size_t)n);
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", g_port);
    void *s = new_socket(ZMQ_ROUTER);
    set_int(s, ZMQ_ROUTER_MANDATORY, 1, "ZMQ_ROUTER_MANDATORY");
    long rss0 = bench_server_rss_kib();
    double t0 = bench_now_s();
    /* zmq_connect() returns at once and the I/O thread connects; the
     * server's confirmations bound what is in flight. */
    struct conns_dial d = {s, ep};
    bench_conns_open_confirmed(n, conns_open, &d);
    double t1 = bench_now_s();
    long rss1 = bench_server_rss_kib();
    double t2 = bench_now_s();
    for (long i = 0; i < n; i++) {
        conn_id(id, (uint32_t)i);
        send_buf(s, id, sizeof id, ZMQ_SNDMORE, "routing id");
        send_buf(s, g_payload, O.size, 0, "zmq_send");
    }
    /* Each echo must come back on the connection it went out on, once. */
    for (long i = 0; i < n; i++) {
        recv_msg(s, &m, 0, "routing id");
        if (zmq_msg_size(&m) != sizeof id || !zmq_msg_more(&m)) {
            bench_die("an echo with a routing id of %zu bytes", zmq_msg_size(&m));
        }
        memcpy(id, zmq_msg_data(&m), sizeof id);
        uint32_t k = (uint32_t)id[1] << 24 | (uint32_t)id[2] << 16 | (uint32_t)id[3] << 8 | id[4];
        if (id[0] != 'c' || k >= (uint32_t)n || seen[k] != 0) {
            bench_die("an echo on a connection that has no echo to come");
        }
        seen[k] = 1;
        recv_echo(s, &m, i);
    }
    double t3 = bench_now_s();
    long rss2 = bench_server_rss_kib();
    if (bench_ctl_read_nb() != 0) {
        bench_die("more connections confirmed than made");
    }
    zmq_msg_close(&m);
    close_socket(s);
    free(seen);
    term_context();
    bench_finish_server();
    bench_emit_conns(t1 - t0, (double)(rss1 - rss0) / (double)n, (double)(rss2 - rss0) / (double)n,
                     t3 - t2, NULL);
}

int main(int argc, char **argv)
{
    bench_parse_args(argc, argv, "zmq");
    if (O.transport == TR_TLS) {
        bench_emit_skip("no tls");
        return 0;
    }
    if (O.scenario == SC_CONNS) {
        bench_raise_nofile(O.conns + 256);
    }
    g_payload = bench_xmalloc(O.size);
    bench_fill_payload(g_payload, O.size);
    g_port = bench_spawn_server(server_main);
    g_zctx = zmq_ctx_new();
    if (g_zctx == NULL) {
        zdie("zmq_ctx_new");
    }
    static const struct bench_client cl = {client_thr, client_lat, client_hs, client_conns};
    bench_run_client(&cl);
    free(g_payload);
    return 0;
}
