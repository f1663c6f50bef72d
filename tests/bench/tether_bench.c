/* SPDX-License-Identifier: MIT */
/* tether_bench: tether's entry in the side-by-side benchmark (the protocol
 * is PROTOCOL.md beside this file; the plumbing is bench_common.c).
 *
 * Both sides use the event API the way a performance-minded application
 * would: one tether_loop per process (the server in the forked child, the
 * client in the parent), whole messages in and out, no copies of received
 * data (on_message verifies and counts the borrowed bytes in place), and
 * flow control through send_hwm / on_drain:
 *
 * - thr: the client sends until the library says TETHER_EAGAIN and carries
 *   on from on_drain. Payloads below 64 KiB go out THR_BATCH messages per
 *   tether_conn_send_batch() call (the fastest the API allows, as the raw
 *   peer frames many messages into one buffer by hand), or, with
 *   --per-msg (tether's own flag), one tether_conn_send() each; both copy
 *   into the library's queue. Payloads of 64 KiB and more go out with
 *   tether_conn_send_zc() from one shared, never modified buffer (no free
 *   callback needed).
 * - lat: the next ping is sent from the on_message that delivered the echo.
 * - hs: every connection is closed with tether_conn_close() as soon as its
 *   echo is in, and the next one is dialled at once (its on_close comes
 *   later and is only counted).
 * - conns: at most CONNS_WINDOW dialled connections not yet confirmed by the
 *   server; the client reads the server's confirmations from the control
 *   pipe between loop iterations (see conns_setup()).
 * - fanin: loop groups on both sides, in tether_fanin.c (its clients send
 *   as thr's, batches unless --per-msg).
 * - thr with --client (tether's own flag, not PROTOCOL.md's): the client
 *   side is a tether_client (held copies of every message, as a
 *   reconnecting client keeps them); with --acks, one with at_least_once
 *   (the server acknowledges, unchanged: HELLO negotiates it). Compare the
 *   two for the cost of acknowledgements.
 *
 * Per-connection server state for hs and conns is one bit kept in the
 * connection's user data pointer, so that the server's RSS per idle
 * connection measures the library and nothing of ours.
 *
 * TLS: everything transport-specific is in bench_url(), bench_tls_setup()
 * and bench_conn_opts(): a tls:// URL plus a tether_tls_config. While the
 * library returns TETHER_ENOTSUP for tls:// (from tether_listen() in the
 * server, or tether_conn_dial() in the client) the run prints a "skip" line
 * and exits 0, as the peers do for what they cannot run.
 */
#include "bench_common.h"
#include "tether_fanin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tether/tether.h>

/* From this size thr sends with tether_conn_send_zc(). */
#define ZC_MIN (64u * 1024u)

/* thr flow control. send() copies small messages into 64 KiB segments and
 * writes a batch as soon as 64 KiB are queued, so the queue only grows once
 * the socket buffer is full. A high-water mark of 256 KiB (4 batches, also
 * the libevent peer's figure) keeps the producer a few batches ahead of the
 * kernel: enough for the socket never to run dry between on_drain (at the
 * library's default low-water mark, a quarter of it) and the refill, small
 * enough to stay in cache. Marks from 64 KiB to 4 MiB measured the same
 * within the noise; 256 KiB used the least CPU at 64 B. A zero-copy message
 * must always fit under the mark, so for those it is two messages. */
#ifndef THR_HWM
#define THR_HWM (256u * 1024u)
#endif

/* thr and fanin: messages per tether_conn_send_batch() call. The queue
 * takes them in runs between the library's 64 KiB writes anyway; 256
 * entries (4 KiB of descriptors) keep the call's own cost per message
 * negligible without a large array. */
#define THR_BATCH 256

#define TLS_SKIP "tls not implemented yet"

bool tb_per_msg;                   /* --per-msg (tether_fanin.h) */
bool tb_reuseport;                 /* --balance reuseport (tether_fanin.h) */
static bool tb_balance_set;        /* --balance given */
static tether_batch_msg *tb_batch; /* THR_BATCH times g_payload */

static tether_loop *g_loop;
static int g_port;
static uint8_t *g_payload;     /* O.size bytes, the message every client sends */
static const char *g_tls_desc; /* "tls":"..." once a TLS connection is up */

static noreturn void die_rv(const char *what, int rv, const char *detail)
{
    bench_die("%s: %s (%s)%s%s", what, tether_strerror(rv), tether_err_name(rv),
              detail != NULL && *detail != '\0' ? ": " : "", detail != NULL ? detail : "");
}

/* ---- transport-specific set-up ------------------------------------------ */

static tether_tls_config *g_tls;
static char g_tls_desc_buf[160];

/* TLS underneath: tls:// and wss://. */
static bool bench_is_tls(void)
{
    return O.transport == TR_TLS || O.transport == TR_WSS;
}

static void bench_url(char *buf, size_t len, int port)
{
    /* ws:// and wss:// (issue #15) carry the same messages as WebSocket
     * frames, masked by the client. */
    snprintf(buf, len, "%s://127.0.0.1:%d%s", bench_transport_name(O.transport), port,
             O.transport >= TR_WS ? "/bench" : "");
}

/* The OpenSSL settings of PROTOCOL.md: TLS 1.3 only, default cipher suites, no
 * tickets and no session cache (every handshake full) unless --resume; the
 * client verifies the server against --ca for the name "localhost". */
static void bench_tls_setup(bool server)
{
    if (!bench_is_tls()) {
        return;
    }
    tether_tls_opts to;
    tether_tls_opts_init(&to);
    to.min_version = TETHER_TLS_VERSION_1_3;
    to.max_version = TETHER_TLS_VERSION_1_3;
    to.no_resumption = !O.resume;
    if (server) {
        to.cert_file = O.cert;
        to.key_file = O.key;
    } else {
        to.ca_file = O.ca;
        to.server_name = SERVER_NAME;
    }
    tether_error err;
    int rv = tether_tls_config_new(&g_tls, &to, &err);
    if (rv != TETHER_OK) {
        die_rv("tether_tls_config_new", rv, err.message);
    }
}

/* Records what the first TLS connection negotiated, for the JSON line; with
 * --resume, counts the connections that resumed a session. */
static long g_tls_conns;
static long g_tls_resumed;

static void bench_tls_note(const tether_conn *c)
{
    tether_tls_info info;
    if (g_tls == NULL || (g_tls_desc != NULL && !O.resume) ||
        tether_conn_tls_info(c, &info) != TETHER_OK) {
        return;
    }
    g_tls_conns++;
    g_tls_resumed += info.resumed ? 1 : 0;
    if (O.resume) {
        snprintf(g_tls_desc_buf, sizeof g_tls_desc_buf,
                 "\"tls\":\"%s %s %s, %ld of %ld handshakes resumed\"", info.version, info.cipher,
                 info.group, g_tls_resumed, g_tls_conns);
    } else {
        snprintf(g_tls_desc_buf, sizeof g_tls_desc_buf, "\"tls\":\"%s %s %s\"", info.version,
                 info.cipher, info.group);
    }
    g_tls_desc = g_tls_desc_buf;
}

/* Drops our reference once no more connections or listeners will be made
 * from the configuration (each of them holds its own). */
static void bench_tls_release(void)
{
    if (g_tls != NULL) {
        tether_tls_config_unref(g_tls);
        g_tls = NULL;
    }
}

/* Options shared by both sides. */
static void bench_conn_opts(tether_conn_opts *o)
{
    tether_conn_opts_init(o);
    if (O.size + 64 > o->max_msg) {
        o->max_msg = O.size + 64;
    }
    o->tls = g_tls;
}

/* ---- server (child) ------------------------------------------------------ */

static struct {
    tether_listener *l;
    long limit;  /* connections expected */
    long expect; /* messages expected in all */
    long accepted;
    long msgs; /* thr: messages counted; others: messages echoed */
    long closed;
    int phase; /* thr, lat: 0 hello expected, 1 running, 2 thr ack sent */
} S;

/* hs, conns: the one bit of state per connection, in its user data. */
#define SRV_ECHOED ((void *)(uintptr_t)1)

static void srv_send(tether_conn *c, const void *data, size_t len)
{
    int rv = tether_conn_send(c, data, len);
    if (rv != TETHER_OK) {
        die_rv("send", rv, tether_conn_last_error(c));
    }
}

static void srv_on_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)c;
    (void)ud;
    if (++S.accepted > S.limit) {
        bench_die("more connections than expected (%ld)", S.limit);
    }
    if (O.scenario == SC_CONNS) {
        /* Accepted means established (for TLS: after the handshake). */
        bench_ctl_notify();
    }
}

static void srv_on_error(tether_listener *l, int err, const char *detail, void *ud)
{
    (void)l;
    (void)ud;
    die_rv("listener", err, detail);
}

static void srv_on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)data;
    switch (O.scenario) {
    case SC_THR:
    case SC_LAT:
        if (S.phase == 0) {
            if (len != HELLO_LEN) {
                bench_die("bad hello (length %zu)", len);
            }
            srv_send(c, "r", READY_LEN);
            S.phase = 1;
            return;
        }
        if (S.phase == 2) {
            bench_die("message after the last one");
        }
        if (len != O.size) {
            bench_die("message %ld has length %zu, expected %zu", S.msgs, len, O.size);
        }
        if (O.scenario == SC_LAT) {
            srv_send(c, data, len);
            if (++S.msgs > S.expect) {
                bench_die("more pings than expected (%ld)", S.expect);
            }
        } else if (++S.msgs == S.expect) {
            srv_send(c, "a", ACK_LEN);
            S.phase = 2;
        }
        return;
    case SC_HS:
    case SC_CONNS:
        if (len != O.size) {
            bench_die("message %ld has length %zu, expected %zu", S.msgs, len, O.size);
        }
        if (ud == SRV_ECHOED) {
            bench_die("second message on one connection");
        }
        srv_send(c, data, len);
        tether_conn_set_userdata(c, SRV_ECHOED);
        S.msgs++;
        return;
    case SC_FANIN:
        break; /* tether_fanin.c has its own callbacks */
    }
}

static void srv_on_close(tether_conn *c, int reason, void *ud)
{
    if (reason != TETHER_EOF) {
        die_rv("server connection ended", reason, tether_conn_last_error(c));
    }
    S.closed++;
    switch (O.scenario) {
    case SC_THR:
        if (S.phase != 2) {
            bench_die("closed after %ld of %ld messages", S.msgs, S.expect);
        }
        break;
    case SC_LAT:
        if (S.msgs != S.expect) {
            bench_die("closed after %ld of %ld pings", S.msgs, S.expect);
        }
        break;
    case SC_HS:
    case SC_CONNS:
        if (ud != SRV_ECHOED) {
            bench_die("connection closed before its echo");
        }
        break;
    case SC_FANIN:
        break;
    }
    if (S.closed == S.limit) {
        tether_loop_stop(g_loop);
    }
}

static int server_main(void)
{
    if (O.scenario == SC_FANIN) {
        return fanin_server_main();
    }
    int rv = tether_loop_new(&g_loop, NULL);
    if (rv != TETHER_OK) {
        die_rv("tether_loop_new", rv, NULL);
    }
    switch (O.scenario) {
    case SC_THR:
        S.limit = 1;
        S.expect = O.count;
        break;
    case SC_LAT:
        S.limit = 1;
        S.expect = bench_lat_warmup() + O.count;
        break;
    case SC_HS:
        S.limit = HS_WARMUP + O.count;
        S.expect = S.limit;
        break;
    case SC_CONNS:
        S.limit = O.conns;
        S.expect = O.conns;
        break;
    case SC_FANIN:
        break;
    }

    bench_tls_setup(true);
    tether_conn_opts co;
    bench_conn_opts(&co);
    co.on_message = srv_on_message;
    co.on_close = srv_on_close;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = srv_on_accept;
    lo.on_error = srv_on_error;
    lo.conn_opts = &co;
    lo.backlog = 4096; /* capped by somaxconn, as the peers' SOMAXCONN */
    if (O.scenario == SC_CONNS && (size_t)O.conns > lo.max_conns) {
        lo.max_conns = (size_t)O.conns; /* the peers have no such limit */
    }
    char url[64];
    bench_url(url, sizeof url, 0);
    tether_error err;
    rv = tether_listen(&S.l, g_loop, url, &lo, &err);
    if (rv == TETHER_ENOTSUP && bench_is_tls()) {
        /* Port 0 tells the parent; it prints the skip line. */
        bench_ctl_send_port(0);
        tether_loop_free(g_loop);
        bench_server_wait_stop();
        return 0;
    }
    if (rv != TETHER_OK) {
        die_rv("tether_listen", rv, err.message);
    }
    bench_tls_release();
    bench_ctl_send_port(tether_listener_port(S.l));

    rv = tether_loop_run(g_loop);
    if (rv != TETHER_OK) {
        die_rv("tether_loop_run", rv, NULL);
    }
    if (S.closed != S.limit || S.accepted != S.limit) {
        bench_die("accepted %ld and closed %ld connections, expected %ld", S.accepted, S.closed,
                  S.limit);
    }
    if (S.msgs != S.expect) {
        bench_die("server handled %ld messages, expected %ld", S.msgs, S.expect);
    }
    tether_listener_close(S.l);
    rv = tether_loop_run(g_loop); /* until the listener is freed */
    if (rv == TETHER_OK) {
        rv = tether_loop_free(g_loop);
    }
    if (rv != TETHER_OK) {
        die_rv("server loop teardown", rv, NULL);
    }
    bench_server_wait_stop();
    return 0;
}

/* ---- client (parent): common ------------------------------------------- */

static char g_url[64];

static tether_conn *client_dial(const tether_conn_opts *co)
{
    tether_conn *c = NULL;
    tether_error err;
    int rv = tether_conn_dial(&c, g_loop, g_url, co, &err);
    if (rv == TETHER_ENOTSUP && bench_is_tls()) {
        /* The dial side lags behind the listener in TLS support. This can
         * only be the first dial: nothing is on the loop yet. */
        tether_loop_free(g_loop);
        bench_finish_server();
        bench_emit_skip(TLS_SKIP);
        exit(0);
    }
    if (rv != TETHER_OK) {
        die_rv("tether_conn_dial", rv, err.message);
    }
    return c;
}

/* Runs the loop until every handle is gone, frees it, reaps the server. */
static void client_teardown(void)
{
    bench_tls_release();
    int rv = tether_loop_run(g_loop);
    if (rv == TETHER_OK) {
        rv = tether_loop_free(g_loop);
    }
    if (rv != TETHER_OK) {
        die_rv("client loop teardown", rv, NULL);
    }
    g_loop = NULL;
    bench_finish_server();
}

/* ---- client: thr and lat -------------------------------------------------- */

static struct {
    tether_conn *c;
    int phase; /* 0 connecting, 1 hello sent, 2 running, 3 done */
    bool zc;
    long sent;
    long done;
    long warm;
    double *rtt;
    uint64_t t_ping;
    double t0;
    double t1;
    bool closed;
} C;

static void thr_pump(tether_conn *c)
{
    if (!C.zc && !tb_per_msg) {
        while (C.sent < O.count) {
            long left = O.count - C.sent;
            size_t k = 0;
            int rv = tether_conn_send_batch(c, tb_batch,
                                            left < THR_BATCH ? (size_t)left : THR_BATCH, &k);
            C.sent += (long)k;
            if (rv == TETHER_EAGAIN) {
                return; /* on_drain continues */
            }
            if (rv != TETHER_OK) {
                die_rv("send", rv, tether_conn_last_error(c));
            }
        }
        return;
    }
    while (C.sent < O.count) {
        int rv = C.zc ? tether_conn_send_zc(c, g_payload, O.size, NULL, NULL)
                      : tether_conn_send(c, g_payload, O.size);
        if (rv == TETHER_EAGAIN) {
            return; /* on_drain continues */
        }
        if (rv != TETHER_OK) {
            die_rv("send", rv, tether_conn_last_error(c));
        }
        C.sent++;
    }
}

static void lat_ping(tether_conn *c)
{
    C.t_ping = bench_now_ns();
    int rv = tether_conn_send(c, g_payload, O.size);
    if (rv != TETHER_OK) {
        die_rv("send", rv, tether_conn_last_error(c));
    }
}

static void cli_on_connect(tether_conn *c, int status, void *ud)
{
    (void)ud;
    if (status != TETHER_OK) {
        die_rv("connect", status, tether_conn_last_error(c));
    }
    bench_tls_note(c);
    int rv = tether_conn_send(c, "h", HELLO_LEN);
    if (rv != TETHER_OK) {
        die_rv("send hello", rv, tether_conn_last_error(c));
    }
    C.phase = 1;
}

static void cli_on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)ud;
    if (C.phase == 1) {
        if (len != READY_LEN) {
            bench_die("bad ready (length %zu)", len);
        }
        C.phase = 2;
        if (O.scenario == SC_THR) {
            C.t0 = bench_now_s();
            thr_pump(c);
        } else {
            lat_ping(c);
        }
        return;
    }
    if (C.phase != 2) {
        bench_die("unexpected message (phase %d)", C.phase);
    }
    if (O.scenario == SC_THR) {
        C.t1 = bench_now_s();
        if (len != ACK_LEN || C.sent != O.count) {
            bench_die("bad ack (length %zu after %ld messages)", len, C.sent);
        }
        C.phase = 3;
        tether_loop_stop(g_loop);
        return;
    }
    uint64_t z = bench_now_ns();
    if (len != O.size || memcmp(data, g_payload, len) != 0) {
        bench_die("echo %ld differs (length %zu)", C.done, len);
    }
    if (C.done >= C.warm) {
        C.rtt[C.done - C.warm] = (double)(z - C.t_ping) / 1e3;
    }
    if (++C.done == C.warm + O.count) {
        C.phase = 3;
        tether_loop_stop(g_loop);
        return;
    }
    lat_ping(c);
}

static void cli_on_drain(tether_conn *c, void *ud)
{
    (void)ud;
    if (O.scenario == SC_THR && C.phase == 2) {
        thr_pump(c);
    }
}

static void cli_on_close(tether_conn *c, int reason, void *ud)
{
    (void)ud;
    if (C.phase != 3 || reason != TETHER_OK) {
        die_rv("connection lost", reason, tether_conn_last_error(c));
    }
    C.closed = true;
}

static void client_thr_lat(void)
{
    tether_conn_opts co;
    bench_conn_opts(&co);
    co.on_connect = cli_on_connect;
    co.on_message = cli_on_message;
    co.on_close = cli_on_close;
    if (O.scenario == SC_THR) {
        C.zc = O.size >= ZC_MIN;
        co.on_drain = cli_on_drain;
        co.send_hwm = THR_HWM;
        if (C.zc && co.send_hwm < 2 * (O.size + 4)) {
            co.send_hwm = 2 * (O.size + 4);
        }
    } else {
        C.warm = bench_lat_warmup();
        C.rtt = bench_xmalloc(sizeof *C.rtt * (size_t)O.count);
    }
    C.c = client_dial(&co);
    int rv = tether_loop_run(g_loop);
    if (rv != TETHER_OK) {
        die_rv("tether_loop_run", rv, NULL);
    }
    if (C.phase != 3) {
        bench_die("client loop ended early (phase %d)", C.phase);
    }
    tether_conn_close(C.c);
    client_teardown();
    if (!C.closed) {
        bench_die("no close callback");
    }
    if (O.scenario == SC_THR) {
        /* Which send call the client used (C.zc: one tether_conn_send_zc()
         * per message). */
        char extra[256];
        snprintf(extra, sizeof extra, "\"send\":\"%s\"%s%s",
                 C.zc         ? "zc"
                 : tb_per_msg ? "per-msg"
                              : "batch",
                 g_tls_desc != NULL ? "," : "", g_tls_desc != NULL ? g_tls_desc : "");
        bench_emit_thr(C.t1 - C.t0, extra);
    } else {
        bench_emit_lat(C.rtt, O.count, g_tls_desc);
    }
}

/* ---- client: thr through a tether_client (--client, --acks) ------------- */

static bool g_client; /* --client or --acks */
static bool g_acks;   /* --acks */

static struct {
    tether_client *cl;
    int phase; /* 0 connecting, 1 hello sent, 2 running, 3 done */
    long sent;
    double t0;
    double t1;
    bool closed;
} R;

static void rc_pump(void)
{
    while (R.sent < O.count) {
        int rv = tether_client_send(R.cl, g_payload, O.size);
        if (rv == TETHER_EAGAIN) {
            return; /* on_drain continues */
        }
        if (rv != TETHER_OK) {
            die_rv("tether_client_send", rv, tether_client_last_error(R.cl));
        }
        R.sent++;
    }
}

static void rc_on_state(tether_client *cl, const tether_client_event *ev, void *ud)
{
    (void)ud;
    if (ev->state == TETHER_CLIENT_CONNECTED && R.phase == 0) {
        int rv = tether_client_send(cl, "h", HELLO_LEN);
        if (rv != TETHER_OK) {
            die_rv("send hello", rv, tether_client_last_error(cl));
        }
        R.phase = 1;
    } else if (ev->state == TETHER_CLIENT_DISCONNECTED && R.phase != 3) {
        die_rv("connection lost", ev->reason, ev->detail);
    } else if (ev->state == TETHER_CLIENT_CLOSED) {
        R.closed = true;
    }
}

static void rc_on_message(tether_client *cl, const uint8_t *data, size_t len, void *ud)
{
    (void)cl, (void)data, (void)ud;
    if (R.phase == 1) {
        if (len != READY_LEN) {
            bench_die("bad ready (length %zu)", len);
        }
        R.phase = 2;
        R.t0 = bench_now_s();
        rc_pump();
        return;
    }
    R.t1 = bench_now_s();
    if (R.phase != 2 || len != ACK_LEN || R.sent != O.count) {
        bench_die("bad ack (length %zu after %ld messages)", len, R.sent);
    }
    R.phase = 3;
    tether_client_close(R.cl); /* (with acks: once the last ACK is in) */
}

static void rc_on_drain(tether_client *cl, void *ud)
{
    (void)cl, (void)ud;
    if (R.phase == 2) {
        rc_pump();
    }
}

static void client_thr_rc(void)
{
    tether_conn_opts co;
    bench_conn_opts(&co);
    co.send_hwm = THR_HWM;
    tether_client_opts o;
    tether_client_opts_init(&o);
    o.conn_opts = &co;
    o.at_least_once = g_acks;
    o.on_state = rc_on_state;
    o.on_message = rc_on_message;
    o.on_drain = rc_on_drain;
    o.max_attempts = 1;
    tether_error err;
    int rv = tether_client_new(&R.cl, g_loop, g_url, &o, &err);
    if (rv != TETHER_OK) {
        die_rv("tether_client_new", rv, err.message);
    }
    rv = tether_loop_run(g_loop);
    if (rv != TETHER_OK) {
        die_rv("tether_loop_run", rv, NULL);
    }
    if (R.phase != 3 || !R.closed) {
        bench_die("client loop ended early (phase %d)", R.phase);
    }
    client_teardown();
    bench_emit_thr(R.t1 - R.t0, g_acks ? "\"client\":\"acks\"" : "\"client\":\"plain\"");
}

/* ---- client: hs ------------------------------------------------------------ */

#define CLI_ECHOED ((void *)(uintptr_t)1)

static struct {
    tether_conn_opts co;
    long started;
    long echoed;
    long closed;
    double t0;
    double t1;
} H;

static void hs_start(void)
{
    if (H.started == HS_WARMUP) {
        H.t0 = bench_now_s();
    }
    H.started++;
    client_dial(&H.co);
}

static void hs_on_connect(tether_conn *c, int status, void *ud)
{
    (void)ud;
    if (status != TETHER_OK) {
        die_rv("connect", status, tether_conn_last_error(c));
    }
    bench_tls_note(c);
    int rv = tether_conn_send(c, g_payload, O.size);
    if (rv != TETHER_OK) {
        die_rv("send", rv, tether_conn_last_error(c));
    }
}

static void hs_on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    if (ud == CLI_ECHOED || len != O.size || memcmp(data, g_payload, len) != 0) {
        bench_die("echo %ld differs (length %zu)", H.echoed, len);
    }
    tether_conn_set_userdata(c, CLI_ECHOED);
    tether_conn_close(c);
    if (++H.echoed == HS_WARMUP + O.count) {
        H.t1 = bench_now_s();
        tether_loop_stop(g_loop);
        return;
    }
    hs_start();
}

static void hs_on_close(tether_conn *c, int reason, void *ud)
{
    if (reason != TETHER_OK || ud != CLI_ECHOED) {
        die_rv("hs connection lost", reason, tether_conn_last_error(c));
    }
    H.closed++;
}

static void client_hs(void)
{
    bench_conn_opts(&H.co);
    H.co.on_connect = hs_on_connect;
    H.co.on_message = hs_on_message;
    H.co.on_close = hs_on_close;
    hs_start();
    int rv = tether_loop_run(g_loop);
    if (rv != TETHER_OK) {
        die_rv("tether_loop_run", rv, NULL);
    }
    if (H.echoed != HS_WARMUP + O.count) {
        bench_die("hs loop ended early");
    }
    client_teardown();
    if (H.closed != HS_WARMUP + O.count) {
        bench_die("%ld close callbacks, expected %ld", H.closed, HS_WARMUP + O.count);
    }
    bench_emit_hs(H.t1 - H.t0, O.count, g_tls_desc);
}

/* ---- client: conns ---------------------------------------------------------- */

static struct {
    tether_conn_opts co;
    tether_conn **cs;
    long opened;
    long confirmed; /* by the server, over the control pipe */
    long ready;     /* on_connect with TETHER_OK */
    long got;
    long closed;
    int phase; /* 0 set-up, 1 echo, 2 closing */
} K;

static void conns_open_more(void)
{
    while (K.opened < O.conns && K.opened - K.confirmed < CONNS_WINDOW) {
        K.cs[K.opened] = client_dial(&K.co);
        K.opened++;
    }
}

static void conns_on_connect(tether_conn *c, int status, void *ud)
{
    (void)ud;
    if (status != TETHER_OK) {
        die_rv("connect", status, tether_conn_last_error(c));
    }
    bench_tls_note(c);
    K.ready++;
}

static void conns_on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    if (K.phase != 1 || ud == CLI_ECHOED || len != O.size || memcmp(data, g_payload, len) != 0) {
        bench_die("unexpected or bad echo (length %zu)", len);
    }
    tether_conn_set_userdata(c, CLI_ECHOED);
    if (++K.got == O.conns) {
        tether_loop_stop(g_loop);
    }
}

static void conns_on_close(tether_conn *c, int reason, void *ud)
{
    if (K.phase != 2 || reason != TETHER_OK || ud != CLI_ECHOED) {
        die_rv("conns connection lost", reason, tether_conn_last_error(c));
    }
    K.closed++;
}

static void conns_run(void)
{
    int rv = tether_loop_run(g_loop);
    if (rv != TETHER_OK) {
        die_rv("tether_loop_run", rv, NULL);
    }
}

static void conns_confirm(long n)
{
    K.confirmed += n;
    if (K.confirmed > O.conns) {
        bench_die("more confirmations than connections");
    }
}

/* Set-up has two sources of events: the loop (connects completing) and the
 * control pipe (the server's confirmations). tether has no call to watch a
 * foreign descriptor, and a reader thread handing bytes over with
 * tether_loop_post() costs two context switches per confirmation, which on
 * two vCPUs shared with the server shows in setup_s. So the loop runs one
 * iteration at a time while dials are in flight (each of them is bound to
 * produce an event), and the pipe is read without blocking between
 * iterations; only when every dialled connection is up does the client
 * block, on the pipe. Nothing spins. */
static void conns_setup(void)
{
    const long n = O.conns;
    while (K.confirmed < n || K.ready < n) {
        conns_open_more();
        if (K.ready < K.opened) {
            int rv = tether_loop_run_once(g_loop, -1);
            if (rv < 0) {
                die_rv("tether_loop_run_once", rv, NULL);
            }
            conns_confirm(bench_ctl_read_nb());
        } else {
            conns_confirm(bench_ctl_read_block());
        }
    }
}

static void client_conns(void)
{
    const long n = O.conns;
    K.cs = calloc((size_t)n, sizeof *K.cs);
    if (K.cs == NULL) {
        bench_die("out of memory");
    }
    bench_conn_opts(&K.co);
    K.co.on_connect = conns_on_connect;
    K.co.on_message = conns_on_message;
    K.co.on_close = conns_on_close;

    long rss0 = bench_server_rss_kib();
    double t0 = bench_now_s();
    conns_setup();
    double t1 = bench_now_s();
    long rss1 = bench_server_rss_kib();

    K.phase = 1;
    double t2 = bench_now_s();
    for (long i = 0; i < n; i++) {
        int rv = tether_conn_send(K.cs[i], g_payload, O.size);
        if (rv != TETHER_OK) {
            die_rv("send", rv, tether_conn_last_error(K.cs[i]));
        }
    }
    conns_run();
    if (K.got != n) {
        bench_die("echo phase ended early (%ld of %ld)", K.got, n);
    }
    double t3 = bench_now_s();
    long rss2 = bench_server_rss_kib();
    if (bench_ctl_read_nb() != 0) {
        bench_die("unexpected notification from the server");
    }

    K.phase = 2;
    for (long i = 0; i < n; i++) {
        tether_conn_close(K.cs[i]);
    }
    /* Runs until the server has closed every connection and each one's
     * linger has ended. */
    client_teardown();
    if (K.closed != n) {
        bench_die("%ld close callbacks, expected %ld", K.closed, n);
    }
    bench_emit_conns(t1 - t0, (double)(rss1 - rss0) / (double)n, (double)(rss2 - rss0) / (double)n,
                     t3 - t2, g_tls_desc);
}

/* ---- main ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    bench_caps = BENCH_CAP_FANIN | BENCH_CAP_LOOPS | BENCH_CAP_RESUME;
    /* Our own flags, taken out before the shared parser sees them. */
    int n = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--acks") == 0 || strcmp(argv[i], "--client") == 0) {
            g_client = true;
            g_acks = g_acks || strcmp(argv[i], "--acks") == 0;
        } else if (strcmp(argv[i], "--per-msg") == 0) {
            tb_per_msg = true;
        } else if (strcmp(argv[i], "--balance") == 0 && i + 1 < argc) {
            tb_reuseport = strcmp(argv[++i], "reuseport") == 0;
            if (!tb_reuseport && strcmp(argv[i], "acceptor") != 0) {
                bench_die("--balance takes acceptor or reuseport, not \"%s\"", argv[i]);
            }
            tb_balance_set = true;
        } else {
            argv[n++] = argv[i];
        }
    }
    argc = n;
    bench_parse_args(argc, argv, "tether");
    if (g_client && (O.scenario != SC_THR || O.transport == TR_TLS)) {
        bench_die("--client and --acks apply to --scenario thr over tcp");
    }
    if (O.scenario == SC_CONNS) {
        bench_raise_nofile(O.conns + 256);
    }
    if (tb_balance_set && O.scenario != SC_FANIN) {
        bench_die("--balance applies to --scenario fanin");
    }
    if (tb_per_msg && O.scenario != SC_THR && O.scenario != SC_FANIN) {
        bench_die("--per-msg applies to --scenario thr and fanin");
    }
    g_payload = bench_xmalloc(O.size);
    bench_fill_payload(g_payload, O.size);
    tb_batch = bench_xmalloc(sizeof *tb_batch * THR_BATCH);
    for (size_t i = 0; i < THR_BATCH; i++) {
        tb_batch[i].data = g_payload; /* (fanin fills in its own payload) */
        tb_batch[i].len = O.size;
    }

    g_port = bench_spawn_server(server_main);
    if (g_port == 0) {
        /* The server's tether_listen() said TETHER_ENOTSUP for tls://. */
        bench_finish_server();
        bench_emit_skip(TLS_SKIP);
        return 0;
    }
    if (O.scenario == SC_FANIN) {
        fanin_client(g_port);
        return 0;
    }
    int rv = tether_loop_new(&g_loop, NULL);
    if (rv != TETHER_OK) {
        die_rv("tether_loop_new", rv, NULL);
    }
    bench_url(g_url, sizeof g_url, g_port);
    bench_tls_setup(false);
    switch (O.scenario) {
    case SC_THR:
    case SC_LAT:
        if (g_client) {
            client_thr_rc();
            break;
        }
        client_thr_lat();
        break;
    case SC_HS:
        client_hs();
        break;
    case SC_CONNS:
        client_conns();
        break;
    case SC_FANIN:
        break; /* run above */
    }
    return 0;
}
