/* SPDX-License-Identifier: MIT */
/* bench_raw's conns scenario: K idle connections held by one server
 * process with no library in between (PROTOCOL.md in the parent folder).
 *
 * Blocking sockets cannot hold thousands of connections, so this part of
 * the raw peer is the smallest event loop that can: level-triggered epoll
 * on non-blocking sockets, on both sides, with OpenSSL's non-blocking
 * SSL_accept/SSL_connect/SSL_read/SSL_write for TLS. It is the floor a
 * library's idle connection is measured against, so the server keeps what
 * a careful hand-written server would: per connection an SSL pointer, a
 * state byte and an input count, in a table indexed by fd, and a buffer
 * only from the moment its message starts to arrive until the echo is out.
 * TLS as in raw.c, plus SSL_MODE_RELEASE_BUFFERS (PROTOCOL.md: conns).
 */
#include "raw_conns.h"

#include "../bench_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_EVENTS 256

enum {
    ST_FREE,      /* no connection on this fd */
    ST_HANDSHAKE, /* TLS handshake (client: also the TCP connect) in progress */
    ST_IDLE,      /* established: server waits for the message, client for the echo */
    ST_ECHO,      /* server: echo not fully written (waits for writability) */
    ST_EOF,       /* server: echoed, waits for the end of the stream */
};

/* One connection. Server side: buf exists from the moment its message
 * starts to arrive until the echo is out. */
struct rconn {
    SSL *ssl;
    uint8_t *buf;
    uint32_t have; /* bytes of the message in buf (server), of the echo (client) */
    uint8_t st;
    uint8_t want; /* EPOLLIN/EPOLLOUT registered */
};

static SSL_CTX *g_ctx;
static int g_ep = -1;
static struct rconn *g_tab; /* indexed by fd */
static size_t g_tab_len;
static char g_tls_desc[128];

static noreturn void die_ssl(const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "no OpenSSL error queued";
    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof buf);
    }
    bench_die("%s: %s (errno: %s)", what, buf, strerror(errno));
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

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
    SSL_CTX_set_mode(g_ctx, SSL_MODE_RELEASE_BUFFERS);
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

/* The table of connections by fd and the epoll set, sized for K
 * connections plus the few other fds of the process. */
static void table_init(void)
{
    g_tab_len = (size_t)O.conns + 256;
    g_tab = calloc(g_tab_len, sizeof *g_tab);
    g_ep = epoll_create1(EPOLL_CLOEXEC);
    if (g_tab == NULL || g_ep < 0) {
        bench_die("epoll/table for %ld connections: %s", O.conns, strerror(errno));
    }
}

static struct rconn *conn_at(int fd)
{
    if (fd < 0 || (size_t)fd >= g_tab_len) {
        bench_die("fd %d beyond the table of %zu", fd, g_tab_len);
    }
    return &g_tab[fd];
}

static void watch(int fd, struct rconn *c, uint8_t want, int op)
{
    struct epoll_event ev = {.events = want, .data.fd = fd};
    if (epoll_ctl(g_ep, op, fd, &ev) < 0) {
        bench_die("epoll_ctl: %s", strerror(errno));
    }
    c->want = want;
}

static void set_want(int fd, struct rconn *c, uint8_t want)
{
    if (c->want != want) {
        watch(fd, c, want, EPOLL_CTL_MOD);
    }
}

static void conn_free(int fd, struct rconn *c, bool notify)
{
    if (c->ssl != NULL) {
        if (notify) {
            SSL_shutdown(c->ssl); /* one close_notify, no wait for the peer's */
        }
        SSL_free(c->ssl);
    }
    free(c->buf);
    memset(c, 0, sizeof *c);
    close(fd); /* also leaves the epoll set */
}

/* Non-blocking I/O: bytes moved (> 0), 0 at the end of the stream, -1
 * when the socket is not ready (want says for what). */
static long io_read(int fd, struct rconn *c, void *p, size_t n, uint8_t *want)
{
    if (c->ssl != NULL) {
        int r = SSL_read(c->ssl, p, (int)n);
        if (r > 0) {
            return r;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_ZERO_RETURN) {
            return 0;
        }
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            *want = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
            return -1;
        }
        die_ssl("SSL_read");
    }
    for (;;) {
        ssize_t r = read(fd, p, n);
        if (r >= 0) {
            return r;
        }
        if (errno == EAGAIN) {
            *want = EPOLLIN;
            return -1;
        }
        if (errno != EINTR) {
            bench_die("read: %s", strerror(errno));
        }
    }
}

static long io_write(int fd, struct rconn *c, const void *p, size_t n, uint8_t *want)
{
    if (c->ssl != NULL) {
        int r = SSL_write(c->ssl, p, (int)n);
        if (r > 0) {
            return r;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            *want = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
            return -1;
        }
        die_ssl("SSL_write");
    }
    for (;;) {
        ssize_t r = write(fd, p, n);
        if (r > 0) {
            return r;
        }
        if (r < 0 && errno == EAGAIN) {
            *want = EPOLLOUT;
            return -1;
        }
        if (r == 0 || errno != EINTR) {
            bench_die("write: %s", strerror(errno));
        }
    }
}

/* One step of the TLS handshake: true once done. */
static bool handshake(int fd, struct rconn *c, bool server)
{
    int r = server ? SSL_accept(c->ssl) : SSL_connect(c->ssl);
    if (r == 1) {
        return true;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        die_ssl(server ? "SSL_accept" : "SSL_connect");
    }
    set_want(fd, c, e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT);
    return false;
}

/* ---- server (the forked child) ------------------------------------------ */

static struct {
    long accepted;
    long established;
    long echoed;
    long closed;
} S;

static void srv_established(int fd, struct rconn *c)
{
    c->st = ST_IDLE;
    set_want(fd, c, EPOLLIN);
    S.established++;
    bench_ctl_notify();
}

static void srv_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN) {
                return;
            }
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            bench_die("accept: %s", strerror(errno));
        }
        int one = 1;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) {
            bench_die("TCP_NODELAY: %s", strerror(errno));
        }
        if (++S.accepted > O.conns) {
            bench_die("more than %ld connections", O.conns);
        }
        struct rconn *c = conn_at(fd);
        watch(fd, c, EPOLLIN, EPOLL_CTL_ADD);
        if (g_ctx == NULL) {
            srv_established(fd, c);
            continue;
        }
        c->ssl = SSL_new(g_ctx);
        if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1) {
            die_ssl("SSL_new");
        }
        c->st = ST_HANDSHAKE;
        if (handshake(fd, c, true)) {
            srv_established(fd, c);
        }
    }
}

/* Writes the rest of the echo in c->buf; frees the buffer once it is out. */
static void srv_echo(int fd, struct rconn *c)
{
    size_t len = 4 + O.size;
    while (c->have < len) {
        uint8_t want;
        long r = io_write(fd, c, c->buf + c->have, len - c->have, &want);
        if (r < 0) {
            c->st = ST_ECHO;
            set_want(fd, c, want);
            return;
        }
        c->have += (uint32_t)r;
    }
    free(c->buf);
    c->buf = NULL;
    c->have = 0;
    c->st = ST_EOF;
    S.echoed++;
    set_want(fd, c, EPOLLIN);
}

/* Reads the message into a buffer allocated when it starts to arrive (the
 * connection is no longer idle then), then echoes it. */
static void srv_read_msg(int fd, struct rconn *c)
{
    size_t len = 4 + O.size;
    if (c->buf == NULL) {
        c->buf = bench_xmalloc(len);
    }
    while (c->have < len) {
        uint8_t want;
        long r = io_read(fd, c, c->buf + c->have, len - c->have, &want);
        if (r < 0) {
            set_want(fd, c, want);
            return;
        }
        if (r == 0) {
            bench_die("end of stream before the message");
        }
        c->have += (uint32_t)r;
        if (c->have >= 4 && get_be32(c->buf) != O.size) {
            bench_die("message has length %u, expected %zu", get_be32(c->buf), O.size);
        }
    }
    c->have = 0;
    srv_echo(fd, c);
}

static void srv_read_eof(int fd, struct rconn *c)
{
    uint8_t b[256];
    uint8_t want;
    long r = io_read(fd, c, b, sizeof b, &want);
    if (r < 0) {
        set_want(fd, c, want);
        return;
    }
    if (r > 0) {
        bench_die("%ld bytes after the message", r);
    }
    conn_free(fd, c, false);
    S.closed++;
}

static void srv_event(int fd)
{
    struct rconn *c = conn_at(fd);
    switch (c->st) {
    case ST_HANDSHAKE:
        if (handshake(fd, c, true)) {
            srv_established(fd, c);
        }
        break;
    case ST_IDLE:
        srv_read_msg(fd, c);
        break;
    case ST_ECHO:
        srv_echo(fd, c);
        break;
    case ST_EOF:
        srv_read_eof(fd, c);
        break;
    default:
        bench_die("event on fd %d without a connection", fd);
    }
}

static void wait_events(struct epoll_event *ev, int *n, int timeout)
{
    do {
        *n = epoll_wait(g_ep, ev, MAX_EVENTS, timeout);
    } while (*n < 0 && errno == EINTR);
    if (*n < 0) {
        bench_die("epoll_wait: %s", strerror(errno));
    }
}

static int server_main(void)
{
    bench_raise_nofile(O.conns + 256);
    int one = 1;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = loopback(0);
    socklen_t al = sizeof a;
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, SOMAXCONN) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &al) < 0) {
        bench_die("listen on 127.0.0.1: %s", strerror(errno));
    }
    tls_setup(true);
    table_init();
    struct epoll_event lev = {.events = EPOLLIN, .data.fd = lfd};
    if (epoll_ctl(g_ep, EPOLL_CTL_ADD, lfd, &lev) < 0) {
        bench_die("epoll_ctl: %s", strerror(errno));
    }
    struct epoll_event *ev = bench_xmalloc(MAX_EVENTS * sizeof *ev);
    bench_ctl_send_port(ntohs(a.sin_port));
    while (S.closed < O.conns) {
        int n;
        wait_events(ev, &n, -1);
        for (int i = 0; i < n; i++) {
            if (ev[i].data.fd == lfd) {
                srv_accept(lfd);
            } else {
                srv_event(ev[i].data.fd);
            }
        }
    }
    if (S.established != O.conns || S.echoed != O.conns) {
        bench_die("established %ld and echoed %ld connections, expected %ld", S.established,
                  S.echoed, O.conns);
    }
    free(ev);
    close(lfd);
    close(g_ep);
    free(g_tab);
    SSL_CTX_free(g_ctx);
    bench_server_wait_stop();
    return 0;
}

/* ---- client (the parent) -------------------------------------------------- */

static struct {
    long opened;
    long ready; /* connected (TLS: handshake done) */
    long got;   /* echoes checked */
    const uint8_t *frame;
} C;

static void cli_ready(int fd, struct rconn *c)
{
    c->st = ST_IDLE;
    set_want(fd, c, 0); /* nothing to wait for until the echo phase */
    C.ready++;
    if (c->ssl != NULL && g_tls_desc[0] == '\0') {
        const char *grp = SSL_group_to_name(c->ssl, SSL_get_negotiated_group(c->ssl));
        snprintf(g_tls_desc, sizeof g_tls_desc, "\"tls\":\"%s %s %s\"", SSL_get_version(c->ssl),
                 SSL_get_cipher_name(c->ssl), grp != NULL ? grp : "?");
    }
}

static void cli_dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = loopback(port);
    if (fd < 0) {
        bench_die("socket: %s", strerror(errno));
    }
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) {
        bench_die("TCP_NODELAY: %s", strerror(errno));
    }
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
        bench_die("connect to 127.0.0.1:%d: %s", port, strerror(errno));
    }
    struct rconn *c = conn_at(fd);
    c->st = ST_HANDSHAKE;
    c->buf = bench_xmalloc(4 + O.size); /* the client's memory is not measured */
    watch(fd, c, EPOLLOUT, EPOLL_CTL_ADD);
    C.opened++;
    if (g_ctx != NULL) {
        c->ssl = SSL_new(g_ctx);
        if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1 ||
            SSL_set_tlsext_host_name(c->ssl, SERVER_NAME) != 1 ||
            SSL_set1_host(c->ssl, SERVER_NAME) != 1) {
            die_ssl("SSL_new");
        }
    }
}

/* TCP: the connect finished (writable), with its result. TLS: one step
 * of the handshake, which fails with the connect's error if it failed. */
static void cli_connected(int fd, struct rconn *c)
{
    if (c->ssl == NULL) {
        int e = 0;
        socklen_t el = sizeof e;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el) < 0 || e != 0) {
            bench_die("connect: %s", strerror(e != 0 ? e : errno));
        }
        cli_ready(fd, c);
        return;
    }
    if (handshake(fd, c, false)) {
        cli_ready(fd, c);
    }
}

static void cli_read_echo(int fd, struct rconn *c)
{
    size_t len = 4 + O.size;
    while (c->have < len) {
        uint8_t want;
        long r = io_read(fd, c, c->buf + c->have, len - c->have, &want);
        if (r < 0) {
            set_want(fd, c, want);
            return;
        }
        if (r == 0) {
            bench_die("end of stream before the echo");
        }
        c->have += (uint32_t)r;
    }
    if (memcmp(c->buf, C.frame, len) != 0) {
        bench_die("echo on fd %d differs from what was sent", fd);
    }
    c->st = ST_EOF;
    set_want(fd, c, 0);
    C.got++;
}

static void cli_event(int fd)
{
    struct rconn *c = conn_at(fd);
    if (c->st == ST_HANDSHAKE) {
        cli_connected(fd, c);
    } else if (c->st == ST_IDLE) {
        cli_read_echo(fd, c);
    } else {
        bench_die("unexpected event on fd %d", fd);
    }
}

static void cli_send(int fd, struct rconn *c)
{
    size_t len = 4 + O.size;
    uint8_t want;
    long r = io_write(fd, c, C.frame, len, &want);
    /* 4 + size bytes on a fresh connection: the socket buffer takes them
     * at once (TLS: one record); anything else would need a write queue
     * this scenario has no use for. */
    if (r != (long)len) {
        bench_die("the message did not go out in one write (%ld of %zu)", r, len);
    }
    set_want(fd, c, EPOLLIN);
}

void raw_conns(const uint8_t *frame)
{
    bench_raise_nofile(O.conns + 256);
    C.frame = frame;
    int port = bench_spawn_server(server_main);
    tls_setup(false);
    table_init();
    struct epoll_event *ev = bench_xmalloc(MAX_EVENTS * sizeof *ev);
    const long k = O.conns;
    long confirmed = 0;
    long rss0 = bench_server_rss_kib();
    double t0 = bench_now_s();
    /* As tether_bench and libevent: one wait for events at a time while
     * dials are in flight, the server's confirmations read between them. */
    while (confirmed < k || C.ready < k) {
        while (C.opened < k && C.opened - confirmed < CONNS_WINDOW) {
            cli_dial(port);
        }
        if (C.ready < C.opened) {
            int n;
            wait_events(ev, &n, -1);
            for (int i = 0; i < n; i++) {
                cli_event(ev[i].data.fd);
            }
            confirmed += bench_ctl_read_nb();
        } else {
            confirmed += bench_ctl_read_block();
        }
        if (confirmed > k) {
            bench_die("more confirmations than connections");
        }
    }
    double t1 = bench_now_s();
    long rss1 = bench_server_rss_kib();
    double t2 = bench_now_s();
    for (size_t fd = 0; fd < g_tab_len; fd++) {
        if (g_tab[fd].st == ST_IDLE) {
            cli_send((int)fd, &g_tab[fd]);
        }
    }
    while (C.got < k) {
        int n;
        wait_events(ev, &n, -1);
        for (int i = 0; i < n; i++) {
            cli_event(ev[i].data.fd);
        }
    }
    double t3 = bench_now_s();
    long rss2 = bench_server_rss_kib();
    for (size_t fd = 0; fd < g_tab_len; fd++) {
        if (g_tab[fd].st != ST_FREE) {
            conn_free((int)fd, &g_tab[fd], true);
        }
    }
    free(ev);
    free(g_tab);
    close(g_ep);
    SSL_CTX_free(g_ctx);
    bench_finish_server();
    bench_emit_conns(t1 - t0, (double)(rss1 - rss0) / (double)k, (double)(rss2 - rss0) / (double)k,
                     t3 - t2, g_tls_desc[0] != '\0' ? g_tls_desc : NULL);
}
