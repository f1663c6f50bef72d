/* SPDX-License-Identifier: MIT */
/* bench_libevent: the comparison peer for an established event library:
 * libevent 2.1 bufferevents (PROTOCOL.md in the parent folder; plumbing in
 * bench_common.c).
 *
 * Used the way its documentation suggests: one event_base per process, an
 * evconnlistener for accepting, one bufferevent per connection (socket or
 * OpenSSL filter), frames of a 4-byte big-endian length and the payload
 * parsed from the input evbuffer. Echoes move the frame from the input to
 * the output evbuffer without copying. thr keeps the output buffer between
 * a quarter of and a whole 256 KiB high-water mark from the write callback;
 * payloads of 64 KiB and more are added by reference, and each callback
 * may move up to 256 KiB (the default is 16 KiB). TLS: TLS 1.3 only,
 * default cipher suites, no tickets, no session cache, the server
 * certificate verified against --ca for "localhost"; in conns also
 * SSL_MODE_RELEASE_BUFFERS. Both sides allow a "dirty" shutdown, as the
 * raw peer closes without waiting for close_notify.
 */
#include "../bench_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define THR_HWM (256u * 1024u)
#define ZC_MIN (64u * 1024u)

static struct event_base *g_base;
static SSL_CTX *g_ctx;
static int g_port;
static uint8_t *g_frame; /* 4-byte header + O.size payload: what clients send */
static char g_tls_desc[128];

static noreturn void die_ssl(const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "no OpenSSL error queued";
    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof buf);
    }
    bench_die("%s: %s", what, buf);
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* The payload length of the next frame if all of it is buffered, else -1.
 * A length other than `want` is an error as soon as its header is in. */
static long next_frame(struct evbuffer *in, size_t want, const char *what)
{
    uint8_t h[4];
    if (evbuffer_copyout(in, h, 4) != 4) {
        return -1;
    }
    if (get_be32(h) != want) {
        bench_die("%s has length %u, expected %zu", what, get_be32(h), want);
    }
    return evbuffer_get_length(in) >= 4 + want ? (long)want : -1;
}

static void send_byte_frame(struct bufferevent *bev, uint8_t byte)
{
    uint8_t f[5] = {0, 0, 0, 1, byte};
    if (bufferevent_write(bev, f, sizeof f) != 0) {
        bench_die("bufferevent_write failed");
    }
}

/* Moves one whole frame of `len` payload bytes from input to output. */
static void echo_frame(struct bufferevent *bev, size_t len)
{
    if (evbuffer_remove_buffer(bufferevent_get_input(bev), bufferevent_get_output(bev), 4 + len) !=
        (int)(4 + len)) {
        bench_die("evbuffer_remove_buffer failed");
    }
}

static noreturn void die_event(const char *who, struct bufferevent *bev, short what)
{
    unsigned long e = bufferevent_get_openssl_error(bev);
    char buf[256] = "";
    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof buf);
    }
    bench_die("%s: %s%s%s", who,
              (what & BEV_EVENT_EOF) != 0 ? "unexpected end of stream"
                                          : evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()),
              e != 0 ? "; " : "", buf);
}

/* ---- TLS and sockets ------------------------------------------------------ */

static void tls_setup(bool server)
{
    if (O.transport != TR_TLS) {
        return;
    }
    g_ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (g_ctx == NULL || SSL_CTX_set_min_proto_version(g_ctx, TLS1_3_VERSION) != 1) {
        die_ssl("SSL_CTX_new");
    }
    SSL_CTX_set_options(g_ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(g_ctx, SSL_SESS_CACHE_OFF);
    if (O.scenario == SC_CONNS) {
        SSL_CTX_set_mode(g_ctx, SSL_MODE_RELEASE_BUFFERS);
    }
    if (server) {
        SSL_CTX_set_num_tickets(g_ctx, 0);
        if (SSL_CTX_use_certificate_chain_file(g_ctx, O.cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(g_ctx, O.key, SSL_FILETYPE_PEM) != 1) {
            die_ssl(O.cert);
        }
    } else {
        if (SSL_CTX_load_verify_locations(g_ctx, O.ca, NULL) != 1) {
            die_ssl(O.ca);
        }
        SSL_CTX_set_verify(g_ctx, SSL_VERIFY_PEER, NULL);
    }
}

static void nodelay(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) {
        bench_die("TCP_NODELAY: %s", strerror(errno));
    }
}

/* A bufferevent on fd: the socket itself, or OpenSSL over it. */
static struct bufferevent *bev_new(int fd, bool server)
{
    struct bufferevent *bev;
    if (O.transport == TR_TLS) {
        SSL *ssl = SSL_new(g_ctx);
        if (ssl == NULL) {
            die_ssl("SSL_new");
        }
        if (!server && (SSL_set_tlsext_host_name(ssl, SERVER_NAME) != 1 ||
                        SSL_set1_host(ssl, SERVER_NAME) != 1)) {
            die_ssl("SSL_set1_host");
        }
        bev = bufferevent_openssl_socket_new(
            g_base, fd, ssl, server ? BUFFEREVENT_SSL_ACCEPTING : BUFFEREVENT_SSL_CONNECTING,
            BEV_OPT_CLOSE_ON_FREE);
        if (bev != NULL) {
            bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
        }
    } else {
        bev = bufferevent_socket_new(g_base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (bev == NULL) {
        bench_die("bufferevent_new failed");
    }
    /* libevent 2.1 moves at most 16 KiB per read or write callback by
     * default; a throughput-minded user raises it. */
    if (bufferevent_set_max_single_read(bev, THR_HWM) != 0 ||
        bufferevent_set_max_single_write(bev, THR_HWM) != 0) {
        bench_die("bufferevent_set_max_single_read/write failed");
    }
    return bev;
}

static void note_tls(struct bufferevent *bev)
{
    SSL *ssl = O.transport == TR_TLS ? bufferevent_openssl_get_ssl(bev) : NULL;
    if (ssl != NULL && g_tls_desc[0] == '\0') {
        const char *grp = SSL_group_to_name(ssl, SSL_get_negotiated_group(ssl));
        snprintf(g_tls_desc, sizeof g_tls_desc, "\"tls\":\"%s %s %s\"", SSL_get_version(ssl),
                 SSL_get_cipher_name(ssl), grp != NULL ? grp : "?");
    }
}

static const char *tls_extra(void)
{
    return g_tls_desc[0] != '\0' ? g_tls_desc : NULL;
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

/* ---- server (the forked child) -------------------------------------------- */

static struct {
    long closed;   /* connections that ended as expected */
    long expected; /* connections the scenario makes */
    long msgs;     /* thr/lat: messages seen on the one connection */
} S;

/* Per connection (hs, conns): 0 waiting for the message, 1 echoed. */
static void srv_read(struct bufferevent *bev, void *ud)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    uintptr_t *state = ud;
    if (O.scenario == SC_HS || O.scenario == SC_CONNS) {
        if (*state != 0 && evbuffer_get_length(in) > 0) {
            bench_die("bytes after the one message of a connection");
        }
        if (next_frame(in, O.size, "message") >= 0) {
            echo_frame(bev, O.size);
            *state = 1;
        }
        return;
    }
    if (*state == 0) { /* hello */
        if (next_frame(in, HELLO_LEN, "hello") < 0) {
            return;
        }
        evbuffer_drain(in, 4 + HELLO_LEN);
        send_byte_frame(bev, 'r');
        *state = 1;
    }
    long total = O.scenario == SC_THR ? O.count : bench_lat_warmup() + O.count;
    while (evbuffer_get_length(in) > 0) {
        if (S.msgs == total) {
            bench_die("%zu bytes after message %ld", evbuffer_get_length(in), total);
        }
        if (next_frame(in, O.size, "message") < 0) {
            return;
        }
        if (O.scenario == SC_THR) {
            evbuffer_drain(in, 4 + O.size);
        } else {
            echo_frame(bev, O.size);
        }
        if (++S.msgs == total && O.scenario == SC_THR) {
            send_byte_frame(bev, 'a');
        }
    }
}

static void srv_event(struct bufferevent *bev, short what, void *ud)
{
    uintptr_t *state = ud;
    if ((what & BEV_EVENT_CONNECTED) != 0) { /* TLS: the handshake is done */
        if (O.scenario == SC_CONNS) {
            bench_ctl_notify();
        }
        return;
    }
    if ((what & BEV_EVENT_EOF) == 0 || (what & BEV_EVENT_ERROR) != 0) {
        die_event("server", bev, what);
    }
    bool done = O.scenario == SC_HS || O.scenario == SC_CONNS
                    ? *state == 1
                    : S.msgs == (O.scenario == SC_THR ? O.count : bench_lat_warmup() + O.count);
    if (!done || evbuffer_get_length(bufferevent_get_input(bev)) > 0) {
        bench_die("end of stream before the scenario was complete (%ld messages)", S.msgs);
    }
    bufferevent_free(bev);
    free(state);
    if (++S.closed == S.expected) {
        event_base_loopbreak(g_base);
    }
}

static void srv_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int sl,
                       void *ud)
{
    (void)l, (void)sa, (void)sl, (void)ud;
    nodelay(fd);
    struct bufferevent *bev = bev_new(fd, true);
    uintptr_t *state = bench_xmalloc(sizeof *state);
    *state = 0;
    bufferevent_setcb(bev, srv_read, NULL, srv_event, state);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    if (O.scenario == SC_CONNS && O.transport == TR_TCP) {
        bench_ctl_notify();
    }
}

static int server_main(void)
{
    g_base = event_base_new();
    struct sockaddr_in a = loopback(0);
    socklen_t al = sizeof a;
    struct evconnlistener *l =
        g_base == NULL ? NULL
                       : evconnlistener_new_bind(g_base, srv_accept, NULL,
                                                 LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                                 SOMAXCONN, (struct sockaddr *)&a, sizeof a);
    if (l == NULL || getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&a, &al) < 0) {
        bench_die("listen on 127.0.0.1: %s", strerror(errno));
    }
    tls_setup(true);
    S.expected = O.scenario == SC_HS ? HS_WARMUP + O.count : O.scenario == SC_CONNS ? O.conns : 1;
    bench_ctl_send_port(ntohs(a.sin_port));
    if (event_base_dispatch(g_base) < 0) {
        bench_die("event_base_dispatch failed");
    }
    if (S.closed != S.expected) {
        bench_die("%ld of %ld connections completed", S.closed, S.expected);
    }
    evconnlistener_free(l);
    event_base_free(g_base);
    bench_server_wait_stop();
    return 0;
}

/* ---- client (the parent) -------------------------------------------------- */

static struct {
    struct bufferevent *bev;
    int phase;  /* thr/lat: 0 waiting for ready, 1 timed part */
    long sent;  /* thr: messages queued; lat: pings sent */
    long got;   /* lat: echoes; conns: echoes */
    long ready; /* conns: connected (TLS: handshake done) */
    long done;  /* hs: connections completed */
    uint64_t t_ping;
    double t0, t1;
    double *rtt;
    uint8_t *in;
} C;

static struct bufferevent *dial(bufferevent_data_cb rd, bufferevent_data_cb wr,
                                bufferevent_event_cb ev, void *ud);
static void cli_close(struct bufferevent *bev);

static void cli_event(struct bufferevent *bev, short what, void *ud)
{
    (void)ud;
    if ((what & BEV_EVENT_CONNECTED) == 0) {
        die_event("client", bev, what);
    }
    note_tls(bev);
    if (O.scenario == SC_THR || O.scenario == SC_LAT) {
        send_byte_frame(bev, 'h');
    } else if (O.scenario == SC_HS) {
        bufferevent_write(bev, g_frame, 4 + O.size);
    } else {
        C.ready++;
    }
}

/* Reads the echo of g_frame and checks it byte for byte; false: not all in. */
static bool take_echo(struct bufferevent *bev)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    if (next_frame(in, O.size, "echo") < 0) {
        return false;
    }
    evbuffer_remove(in, C.in, 4 + O.size);
    if (memcmp(C.in, g_frame, 4 + O.size) != 0) {
        bench_die("an echo differs from what was sent");
    }
    return true;
}

static void thr_fill(struct bufferevent *bev, void *ud)
{
    (void)ud;
    struct evbuffer *out = bufferevent_get_output(bev);
    while (C.phase == 1 && C.sent < O.count && evbuffer_get_length(out) < THR_HWM) {
        int rc;
        if (O.size >= ZC_MIN) {
            rc = evbuffer_add(out, g_frame, 4) |
                 evbuffer_add_reference(out, g_frame + 4, O.size, NULL, NULL);
        } else {
            rc = evbuffer_add(out, g_frame, 4 + O.size);
        }
        if (rc != 0) {
            bench_die("evbuffer_add failed");
        }
        C.sent++;
    }
}

static void thr_lat_read(struct bufferevent *bev, void *ud)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    if (C.phase == 0) {
        if (next_frame(in, READY_LEN, "ready") < 0) {
            return;
        }
        evbuffer_drain(in, 4 + READY_LEN);
        C.phase = 1;
        C.t0 = bench_now_s();
        if (O.scenario == SC_THR) {
            thr_fill(bev, ud);
        } else {
            C.t_ping = bench_now_ns();
            bufferevent_write(bev, g_frame, 4 + O.size);
        }
        return;
    }
    if (O.scenario == SC_THR) {
        if (next_frame(in, ACK_LEN, "ack") >= 0) {
            C.t1 = bench_now_s();
            event_base_loopbreak(g_base);
        }
        return;
    }
    long warm = bench_lat_warmup();
    while (take_echo(bev)) {
        uint64_t now = bench_now_ns();
        if (C.got >= warm) {
            C.rtt[C.got - warm] = (double)(now - C.t_ping) / 1e3;
        }
        if (++C.got == warm + O.count) {
            event_base_loopbreak(g_base);
            return;
        }
        C.t_ping = bench_now_ns();
        bufferevent_write(bev, g_frame, 4 + O.size);
    }
}

static void hs_read(struct bufferevent *bev, void *ud)
{
    (void)ud;
    if (!take_echo(bev)) {
        return;
    }
    cli_close(bev);
    if (++C.done == HS_WARMUP + O.count) {
        C.t1 = bench_now_s();
        event_base_loopbreak(g_base);
        return;
    }
    if (C.done == HS_WARMUP) {
        C.t0 = bench_now_s();
    }
    dial(hs_read, NULL, cli_event, NULL);
}

static void conns_read(struct bufferevent *bev, void *ud)
{
    (void)ud;
    if (take_echo(bev) && ++C.got == O.conns) {
        event_base_loopbreak(g_base);
    }
}

static struct bufferevent *dial(bufferevent_data_cb rd, bufferevent_data_cb wr,
                                bufferevent_event_cb ev, void *ud)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        bench_die("socket: %s", strerror(errno));
    }
    nodelay(fd);
    struct bufferevent *bev = bev_new(fd, false);
    bufferevent_setcb(bev, rd, wr, ev, ud);
    struct sockaddr_in a = loopback(g_port);
    if (bufferevent_socket_connect(bev, (struct sockaddr *)&a, sizeof a) != 0 ||
        bufferevent_enable(bev, EV_READ | EV_WRITE) != 0) {
        bench_die("connect to 127.0.0.1:%d: %s", g_port, strerror(errno));
    }
    return bev;
}

/* As the raw peer: one close_notify (TLS), no wait for the server's; then
 * the socket is closed. */
static void cli_close(struct bufferevent *bev)
{
    SSL *ssl = O.transport == TR_TLS ? bufferevent_openssl_get_ssl(bev) : NULL;
    if (ssl != NULL) {
        SSL_shutdown(ssl);
    }
    bufferevent_free(bev);
}

static void run(void)
{
    if (event_base_dispatch(g_base) < 0) {
        bench_die("event_base_dispatch failed");
    }
}

/* bufferevent_free() leaves the close to a finalizer that runs in the
 * loop: one non-blocking iteration closes what was freed. */
static void run_finalizers(void)
{
    if (event_base_loop(g_base, EVLOOP_NONBLOCK) < 0) {
        bench_die("event_base_loop failed");
    }
}

static void client_conns(void)
{
    const long n = O.conns;
    struct bufferevent **bevs = bench_xmalloc((size_t)n * sizeof *bevs);
    long opened = 0;
    long confirmed = 0;
    long rss0 = bench_server_rss_kib();
    double t0 = bench_now_s();
    /* As tether_bench: one loop iteration at a time while dials are in
     * flight, the server's confirmations read between them. */
    while (confirmed < n || C.ready < n) {
        while (opened < n && opened - confirmed < CONNS_WINDOW) {
            bevs[opened++] = dial(conns_read, NULL, cli_event, NULL);
        }
        if (C.ready < opened) {
            if (event_base_loop(g_base, EVLOOP_ONCE) < 0) {
                bench_die("event_base_loop failed");
            }
            confirmed += bench_ctl_read_nb();
        } else {
            confirmed += bench_ctl_read_block();
        }
        if (confirmed > n) {
            bench_die("more confirmations than connections");
        }
    }
    double t1 = bench_now_s();
    long rss1 = bench_server_rss_kib();
    double t2 = bench_now_s();
    for (long i = 0; i < n; i++) {
        bufferevent_write(bevs[i], g_frame, 4 + O.size);
    }
    run();
    double t3 = bench_now_s();
    if (C.got != n) {
        bench_die("echo phase ended early (%ld of %ld)", C.got, n);
    }
    long rss2 = bench_server_rss_kib();
    for (long i = 0; i < n; i++) {
        cli_close(bevs[i]);
    }
    free(bevs);
    run_finalizers();
    bench_finish_server();
    bench_emit_conns(t1 - t0, (double)(rss1 - rss0) / (double)n, (double)(rss2 - rss0) / (double)n,
                     t3 - t2, tls_extra());
}

int main(int argc, char **argv)
{
    bench_parse_args(argc, argv, "libevent");
    if (O.scenario == SC_CONNS) {
        bench_raise_nofile(O.conns + 256);
    }
    g_frame = bench_xmalloc(4 + O.size);
    put_be32(g_frame, (uint32_t)O.size);
    bench_fill_payload(g_frame + 4, O.size);
    C.in = bench_xmalloc(4 + O.size);
    g_port = bench_spawn_server(server_main);
    g_base = event_base_new();
    if (g_base == NULL) {
        bench_die("event_base_new failed");
    }
    tls_setup(false);
    switch (O.scenario) {
    case SC_THR:
    case SC_LAT:
        C.rtt = bench_xmalloc((size_t)O.count * sizeof *C.rtt);
        C.bev = dial(thr_lat_read, O.scenario == SC_THR ? thr_fill : NULL, cli_event, NULL);
        bufferevent_setwatermark(C.bev, EV_WRITE, THR_HWM / 4, 0);
        run();
        cli_close(C.bev);
        run_finalizers();
        bench_finish_server();
        if (O.scenario == SC_THR) {
            bench_emit_thr(C.t1 - C.t0, tls_extra());
        } else {
            bench_emit_lat(C.rtt, O.count, tls_extra());
        }
        break;
    case SC_HS:
        dial(hs_read, NULL, cli_event, NULL);
        run();
        run_finalizers();
        bench_finish_server();
        bench_emit_hs(C.t1 - C.t0, O.count, tls_extra());
        break;
    case SC_CONNS:
        client_conns();
        break;
    case SC_FANIN:
        break; /* not run here: bench_parse_args() printed a skip */
    }
    event_base_free(g_base);
    return 0;
}
