/* SPDX-License-Identifier: MIT */
/* bench_nng: the comparison peer for a messaging library: NNG 1.5 (Debian
 * libnng, its TLS by Mbed TLS 2.28) over tcp:// and tls+tcp://
 * (PROTOCOL.md in the parent folder; plumbing in bench_common.c).
 *
 * Used the way its documentation suggests: Scalability Protocols sockets,
 * blocking nng_send()/nng_recvmsg() from the program's thread, which NNG's
 * own threads (about a dozen per process) serve, and one nng message per
 * benchmark message (NNG frames each with an 8-byte length and a 4-byte
 * protocol header: its natural cost). thr: pair1, the one-to-one pattern,
 * so that hello, ready, the stream and the ack share one connection
 * (push0/pull0 would need a second one for the way back). lat, hs and
 * conns: req0 and rep0, NNG's request/reply pattern, which is exactly an
 * echo; the server's rep0 socket sends the request's nng_msg back as the
 * reply, uncopied, from one blocking loop. hs and conns make one req0
 * socket per connection (a req0 socket spreads requests over its pipes),
 * and hs a new one with a new dialer for every connection; one rep0
 * socket serves them all.
 *
 * Options changed from NNG's defaults: in thr only, NNG_OPT_SENDBUF and
 * NNG_OPT_RECVBUF hold 256 KiB worth of messages (1 to 8192; the libevent
 * peer's output high-water mark), as the default of 0 makes every
 * nng_send() wait for the pipe to take the message before the next, about
 * 30000 messages/s here; NNG_OPT_RECVMAXSZ is raised to the size plus 64
 * only where a message and its header exceed the 1 MiB default. The rest
 * is left alone (TCP_NODELAY is NNG's default).
 *
 * Dials are synchronous (nng_dialer_start(d, 0) returns once TCP, the TLS
 * handshake and NNG's protocol header exchange are done, or with the
 * error), except in conns after the first: NNG_FLAG_NONBLOCK, at most
 * CONNS_WINDOW unconfirmed. NNG retries a failed background dial silently,
 * so the first one waits, which ends a run with a refused certificate
 * with the reason instead of the BENCH_TIMEOUT_S alarm. The server counts
 * connections with nng_pipe_notify(): NNG_PIPE_EV_ADD_POST (after the TLS
 * handshake and header exchange) sends conns' confirmation from NNG's
 * thread (bench_ctl_notify() is one write() of one byte), and it waits for
 * NNG_PIPE_EV_REM_POST of every connection before it reports success.
 *
 * TLS: an nng_tls_config with the server certificate and key from
 * --cert/--key; the client verifies against --ca for "localhost" with
 * NNG_TLS_AUTH_MODE_REQUIRED and checks NNG_OPT_TLS_VERIFIED on its first
 * connection. Everything else is Mbed TLS's default. NNG 1.5 cannot report
 * what it negotiated, so the line has no "tls" field; a handshake decoded
 * from an strace capture shows TLS 1.2, ECDHE-ECDSA-CHACHA20-POLY1305 over
 * secp521r1 (Mbed TLS 2.28's order of preference), which makes handshakes
 * slow. The server issues no tickets and keeps no session cache, and every
 * hs connection is a new socket: every handshake is full.
 *
 * The client closes every socket and calls nng_fini() before it exits, so
 * that LeakSanitizer sees NNG's memory returned; the server, which leaves
 * with _exit(), only closes its socket (server_main() says why). It waits
 * for every connection's NNG_PIPE_EV_ADD_POST as well as its REM_POST,
 * which NNG may run in either order on its threads. No fanin, no --loops.
 */
#include "../bench_common.h"

#include <errno.h>
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/supplemental/util/platform.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* NNG's default NNG_OPT_RECVMAXSZ; a message's protocol header (4 bytes
 * for pair1, req0 and rep0) counts towards it. */
#define RECVMAX_DEFAULT (1024u * 1024u)
#define RECVMAX_SLACK 64u
/* thr: the socket queues of each side hold about this many bytes. */
#define THR_QUEUE_BYTES (256u * 1024u)
#define THR_QUEUE_MAX 8192 /* the largest NNG_OPT_SENDBUF/RECVBUF NNG accepts */

static int g_port;
static nng_tls_config *g_tls;
static uint8_t *g_payload; /* what clients send: O.size bytes */
static long g_thr_queue;   /* thr: NNG_OPT_SENDBUF and NNG_OPT_RECVBUF, in messages */

static noreturn void die_nng(const char *what, int rv)
{
    bench_die("%s: %s", what, nng_strerror(rv));
}

static void must(int rv, const char *what)
{
    if (rv != 0) {
        die_nng(what, rv);
    }
}

/* A PEM file as the NUL-terminated string nng_tls_config_own_cert() takes. */
static char *read_pem(const char *path)
{
    FILE *f = fopen(path, "rb");
    long len = -1;
    if (f != NULL && fseek(f, 0, SEEK_END) == 0) {
        len = ftell(f);
    }
    if (len < 0 || fseek(f, 0, SEEK_SET) != 0) {
        bench_die("%s: %s", path, strerror(errno));
    }
    char *buf = bench_xmalloc((size_t)len + 1);
    if (fread(buf, 1, (size_t)len, f) != (size_t)len) {
        bench_die("%s: short read", path);
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

/* ---- TLS, sockets and endpoints -------------------------------------------- */

static void tls_setup(bool server)
{
    if (O.transport != TR_TLS) {
        return;
    }
    must(nng_tls_config_alloc(&g_tls, server ? NNG_TLS_MODE_SERVER : NNG_TLS_MODE_CLIENT),
         "nng_tls_config_alloc");
    if (server) {
        char *cert = read_pem(O.cert);
        char *key = read_pem(O.key);
        int rv = nng_tls_config_own_cert(g_tls, cert, key, NULL);
        free(cert);
        free(key);
        if (rv != 0) {
            bench_die("%s, %s: %s", O.cert, O.key, nng_strerror(rv));
        }
        return;
    }
    int rv = nng_tls_config_ca_file(g_tls, O.ca);
    if (rv != 0) {
        bench_die("%s: %s", O.ca, nng_strerror(rv));
    }
    must(nng_tls_config_server_name(g_tls, SERVER_NAME), "nng_tls_config_server_name");
    must(nng_tls_config_auth_mode(g_tls, NNG_TLS_AUTH_MODE_REQUIRED), "nng_tls_config_auth_mode");
}

static void url_for(char *buf, size_t n, int port)
{
    snprintf(buf, n, "%s://127.0.0.1:%d", O.transport == TR_TLS ? "tls+tcp" : "tcp", port);
}

/* Options every socket of the run gets before its dialer or listener. */
static void sock_setup(nng_socket s)
{
    if (O.size + RECVMAX_SLACK > RECVMAX_DEFAULT) {
        must(nng_socket_set_size(s, NNG_OPT_RECVMAXSZ, O.size + RECVMAX_SLACK),
             "NNG_OPT_RECVMAXSZ");
    }
    if (O.scenario == SC_THR) {
        must(nng_socket_set_int(s, NNG_OPT_SENDBUF, (int)g_thr_queue), "NNG_OPT_SENDBUF");
        must(nng_socket_set_int(s, NNG_OPT_RECVBUF, (int)g_thr_queue), "NNG_OPT_RECVBUF");
    }
}

static nng_socket open_sock(bool server)
{
    nng_socket s;
    int rv;
    if (O.scenario == SC_THR) {
        rv = nng_pair1_open(&s);
    } else if (server) {
        rv = nng_rep0_open(&s);
    } else {
        rv = nng_req0_open(&s);
    }
    must(rv, "open socket");
    sock_setup(s);
    return s;
}

/* flags 0: returns once the connection (and the TLS handshake, and NNG's
 * own protocol header exchange) is up, or dies with the reason.
 * NNG_FLAG_NONBLOCK: returns at once; NNG retries a failed attempt in the
 * background. */
static void dial(nng_socket s, int flags)
{
    char url[64];
    nng_dialer d;
    url_for(url, sizeof url, g_port);
    must(nng_dialer_create(&d, s, url), "nng_dialer_create");
    if (g_tls != NULL) {
        must(nng_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, g_tls), "NNG_OPT_TLS_CONFIG");
    }
    int rv = nng_dialer_start(d, flags);
    if (rv != 0 && g_tls != NULL && (rv == NNG_ECRYPTO || rv == NNG_EPEERAUTH)) {
        bench_die("connect to %s: %s: the TLS handshake failed; the server's certificate "
                  "must verify against %s for %s",
                  url, nng_strerror(rv), O.ca, SERVER_NAME);
    }
    if (rv != 0) {
        bench_die("connect to %s: %s", url, nng_strerror(rv));
    }
}

/* For TLS: the connection m came over has a verified peer (belt and
 * braces: NNG_TLS_AUTH_MODE_REQUIRED already refuses any other). */
static void check_verified(nng_msg *m)
{
    bool ok = false;
    if (O.transport != TR_TLS) {
        return;
    }
    must(nng_pipe_get_bool(nng_msg_get_pipe(m), NNG_OPT_TLS_VERIFIED, &ok), "NNG_OPT_TLS_VERIFIED");
    if (!ok) {
        bench_die("the server's certificate was not verified");
    }
}

/* Receives one message that must be `len` bytes long. */
static nng_msg *recv_len(nng_socket s, size_t len, const char *what, long i)
{
    nng_msg *m;
    int rv = nng_recvmsg(s, &m, 0);
    if (rv != 0) {
        bench_die("receiving %s %ld: %s", what, i, nng_strerror(rv));
    }
    if (nng_msg_len(m) != len) {
        bench_die("%s %ld has length %zu, expected %zu", what, i, nng_msg_len(m), len);
    }
    return m;
}

static void send_buf(nng_socket s, const void *p, size_t len, const char *what)
{
    int rv = nng_send(s, (void *)p, len, 0);
    if (rv != 0) {
        bench_die("sending %s: %s", what, nng_strerror(rv));
    }
}

/* A 1-byte message (hello, ready, ack) that must hold `byte`; returns it. */
static nng_msg *recv_byte(nng_socket s, uint8_t byte, const char *what)
{
    nng_msg *m = recv_len(s, 1, what, 0);
    if (*(const uint8_t *)nng_msg_body(m) != byte) {
        bench_die("the %s message holds 0x%02x, expected 0x%02x", what,
                  *(const uint8_t *)nng_msg_body(m), byte);
    }
    return m;
}

/* ---- server (the forked child) -------------------------------------------- */

/* Pipe events arrive on NNG's threads; the main thread waits on the
 * condition variable. */
static struct {
    nng_mtx *mtx;
    nng_cv *cv;
    long added;   /* connections established */
    long removed; /* connections ended */
} S;

/* hs, conns: the ids of the pipes a message came from, to check that each
 * connection sends exactly one (open addressing; ids are never 0). */
static struct {
    uint32_t *ids;
    size_t mask;
} P;

static void srv_pipe_event(nng_pipe p, nng_pipe_ev ev, void *ud)
{
    (void)p, (void)ud;
    nng_mtx_lock(S.mtx);
    if (ev == NNG_PIPE_EV_ADD_POST) {
        S.added++;
    } else {
        S.removed++;
    }
    nng_cv_wake(S.cv);
    nng_mtx_unlock(S.mtx);
    /* One byte with one write(): safe from any thread. */
    if (ev == NNG_PIPE_EV_ADD_POST && O.scenario == SC_CONNS) {
        bench_ctl_notify();
    }
}

static void pipe_seen_once(nng_msg *m, long i)
{
    uint32_t id = (uint32_t)nng_pipe_id(nng_msg_get_pipe(m));
    size_t h = (size_t)(id * 2654435761u) & P.mask;
    while (P.ids[h] != 0) {
        if (P.ids[h] == id) {
            bench_die("message %ld is the second on its connection", i);
        }
        h = (h + 1) & P.mask;
    }
    P.ids[h] = id;
}

static void serve_thr(nng_socket s)
{
    nng_msg_free(recv_byte(s, 'h', "hello"));
    send_buf(s, "r", READY_LEN, "ready");
    for (long i = 0; i < O.count; i++) {
        nng_msg_free(recv_len(s, O.size, "message", i));
    }
    send_buf(s, "a", ACK_LEN, "ack");
}

/* lat, hs, conns: each request is sent back as the reply, the same nng_msg. */
static void serve_echo(nng_socket s, long total, bool one_per_pipe)
{
    if (O.scenario == SC_LAT) {
        nng_msg_free(recv_byte(s, 'h', "hello"));
        send_buf(s, "r", READY_LEN, "ready");
    }
    for (long i = 0; i < total; i++) {
        nng_msg *m = recv_len(s, O.size, "message", i);
        if (one_per_pipe) {
            pipe_seen_once(m, i);
        }
        int rv = nng_sendmsg(s, m, 0);
        if (rv != 0) {
            bench_die("echo %ld: %s", i, nng_strerror(rv));
        }
    }
}

static int server_main(void)
{
    const long conns = O.scenario == SC_HS      ? HS_WARMUP + O.count
                       : O.scenario == SC_CONNS ? O.conns
                                                : 1;
    bool one_per_pipe = O.scenario == SC_HS || O.scenario == SC_CONNS;
    must(nng_mtx_alloc(&S.mtx), "nng_mtx_alloc");
    must(nng_cv_alloc(&S.cv, S.mtx), "nng_cv_alloc");
    if (one_per_pipe) {
        size_t cap = 16;
        while (cap < 2 * (size_t)conns) {
            cap *= 2;
        }
        P.ids = calloc(cap, sizeof *P.ids);
        if (P.ids == NULL) {
            bench_die("out of memory");
        }
        P.mask = cap - 1;
    }

    nng_socket s = open_sock(true);
    must(nng_pipe_notify(s, NNG_PIPE_EV_ADD_POST, srv_pipe_event, NULL), "nng_pipe_notify");
    must(nng_pipe_notify(s, NNG_PIPE_EV_REM_POST, srv_pipe_event, NULL), "nng_pipe_notify");
    tls_setup(true);
    char url[64];
    nng_listener l;
    int port;
    url_for(url, sizeof url, 0);
    must(nng_listener_create(&l, s, url), "nng_listener_create");
    if (g_tls != NULL) {
        must(nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, g_tls), "NNG_OPT_TLS_CONFIG");
    }
    int rv = nng_listener_start(l, 0);
    if (rv != 0) {
        bench_die("listen on %s: %s", url, nng_strerror(rv));
    }
    must(nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port), "NNG_OPT_TCP_BOUND_PORT");
    bench_ctl_send_port(port);

    if (O.scenario == SC_THR) {
        serve_thr(s);
    } else {
        serve_echo(s, O.scenario == SC_LAT ? bench_lat_warmup() + O.count : conns, one_per_pipe);
    }
    /* Every connection must end (the client closes them all once it has
     * what it waits for), and nothing may follow the last message. Each
     * one's ADD_POST is waited for too: NNG runs a pipe's callbacks on
     * different threads, so its REM_POST, and the messages it carried,
     * can come before the ADD_POST callback has counted it (and the
     * callback must be done with S.mtx before it is freed). */
    nng_mtx_lock(S.mtx);
    while (S.removed < conns || S.added < conns) {
        nng_cv_wait(S.cv);
    }
    long added = S.added;
    long removed = S.removed;
    nng_mtx_unlock(S.mtx);
    if (added != conns || removed != conns) {
        bench_die("%ld connections established and %ld ended, expected %ld", added, removed, conns);
    }
    nng_msg *extra;
    rv = nng_recvmsg(s, &extra, NNG_FLAG_NONBLOCK);
    if (rv == 0) {
        bench_die("a message of %zu bytes after the last one", nng_msg_len(extra));
    }
    if (rv != NNG_EAGAIN) {
        die_nng("nng_recvmsg", rv);
    }
    bench_server_wait_stop();
    /* The socket is closed, and the rest left to the exit: NNG 1.5 still
     * tears TLS connections down on its own threads after nng_close(),
     * and nng_tls_config_free() and nng_fini() then made one of them lock
     * a destroyed mutex and panic, about once in 600 runs on a busy
     * machine. The child leaves with _exit(), which LeakSanitizer does
     * not check; the client, which it checks, still tears everything
     * down. */
    must(nng_close(s), "nng_close");
    free(P.ids);
    free(g_payload);
    return 0;
}

/* ---- client (the parent) -------------------------------------------------- */

/* Sends the payload on s (a req0 socket) and checks the reply byte for byte. */
static nng_msg *ping(nng_socket s, long i)
{
    send_buf(s, g_payload, O.size, "message");
    nng_msg *m = recv_len(s, O.size, "echo", i);
    if (memcmp(nng_msg_body(m), g_payload, O.size) != 0) {
        bench_die("echo %ld differs from what was sent", i);
    }
    return m;
}

/* thr and lat: a connection whose hello the server has answered with its
 * ready (and, for tls, whose server certificate was verified). */
static nng_socket open_ready(void)
{
    nng_socket s = open_sock(false);
    dial(s, 0);
    send_buf(s, "h", HELLO_LEN, "hello");
    nng_msg *ready = recv_byte(s, 'r', "ready");
    check_verified(ready);
    nng_msg_free(ready);
    return s;
}

static void client_thr(void)
{
    nng_socket s = open_ready();
    double t0 = bench_now_s();
    for (long i = 0; i < O.count; i++) {
        send_buf(s, g_payload, O.size, "message");
    }
    nng_msg_free(recv_byte(s, 'a', "ack"));
    double t1 = bench_now_s();
    must(nng_close(s), "nng_close");
    bench_finish_server();
    bench_emit_thr(t1 - t0, NULL);
}

static void client_lat(void)
{
    long warm = bench_lat_warmup();
    double *rtt = bench_xmalloc((size_t)O.count * sizeof *rtt);
    nng_socket s = open_ready();
    for (long i = 0; i < warm; i++) {
        nng_msg_free(ping(s, i));
    }
    for (long i = 0; i < O.count; i++) {
        uint64_t t = bench_now_ns();
        nng_msg *m = ping(s, warm + i);
        rtt[i] = (double)(bench_now_ns() - t) / 1e3;
        nng_msg_free(m);
    }
    must(nng_close(s), "nng_close");
    bench_finish_server();
    bench_emit_lat(rtt, O.count, NULL);
    free(rtt);
}

static void client_hs(void)
{
    double t0 = 0;
    for (long i = 0; i < HS_WARMUP + O.count; i++) {
        if (i == HS_WARMUP) {
            t0 = bench_now_s();
        }
        nng_socket s = open_sock(false);
        dial(s, 0);
        nng_msg *m = ping(s, i);
        if (i == 0) {
            check_verified(m);
        }
        nng_msg_free(m);
        must(nng_close(s), "nng_close");
    }
    double t1 = bench_now_s();
    bench_finish_server();
    bench_emit_hs(t1 - t0, O.count, NULL);
}

/* conns: connection i's socket, dialled. */
static void conns_open(long i, void *ud)
{
    nng_socket *socks = ud;
    socks[i] = open_sock(false);
    /* The first dial waits, so that a server the client refuses (or that
     * refuses it) ends the run with the reason; the others then run
     * CONNS_WINDOW at a time in the background. */
    dial(socks[i], i == 0 ? 0 : NNG_FLAG_NONBLOCK);
}

static void client_conns(void)
{
    const long n = O.conns;
    nng_socket *socks = bench_xmalloc((size_t)n * sizeof *socks);
    long rss0 = bench_server_rss_kib();
    double t0 = bench_now_s();
    bench_conns_open_confirmed(n, conns_open, socks);
    double t1 = bench_now_s();
    long rss1 = bench_server_rss_kib();
    double t2 = bench_now_s();
    for (long i = 0; i < n; i++) {
        send_buf(socks[i], g_payload, O.size, "message");
    }
    for (long i = 0; i < n; i++) {
        nng_msg *m = recv_len(socks[i], O.size, "echo", i);
        if (memcmp(nng_msg_body(m), g_payload, O.size) != 0) {
            bench_die("echo %ld differs from what was sent", i);
        }
        if (i == 0) {
            check_verified(m);
        }
        nng_msg_free(m);
    }
    double t3 = bench_now_s();
    long rss2 = bench_server_rss_kib();
    if (bench_ctl_read_nb() != 0) {
        bench_die("more confirmations than connections");
    }
    for (long i = 0; i < n; i++) {
        must(nng_close(socks[i]), "nng_close");
    }
    free(socks);
    bench_finish_server();
    bench_emit_conns(t1 - t0, (double)(rss1 - rss0) / (double)n, (double)(rss2 - rss0) / (double)n,
                     t3 - t2, NULL);
}

int main(int argc, char **argv)
{
    bench_parse_args(argc, argv, "nng");
    if (O.scenario == SC_CONNS) {
        bench_raise_nofile(O.conns + 256);
    }
    g_thr_queue = (long)(THR_QUEUE_BYTES / O.size);
    if (g_thr_queue < 1) {
        g_thr_queue = 1;
    } else if (g_thr_queue > THR_QUEUE_MAX) {
        g_thr_queue = THR_QUEUE_MAX;
    }
    g_payload = bench_xmalloc(O.size);
    bench_fill_payload(g_payload, O.size);
    g_port = bench_spawn_server(server_main);
    tls_setup(false);
    static const struct bench_client cl = {client_thr, client_lat, client_hs, client_conns};
    bench_run_client(&cl);
    if (g_tls != NULL) {
        nng_tls_config_free(g_tls);
    }
    free(g_payload);
    nng_fini();
    return 0;
}
