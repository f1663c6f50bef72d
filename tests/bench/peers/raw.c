/* SPDX-License-Identifier: MIT */
/* bench_raw: the reference the other implementations are measured against:
 * what a program gets from blocking sockets and OpenSSL with no library in
 * between (PROTOCOL.md in the parent folder; plumbing in bench_common.c).
 *
 * One connection at a time, blocking I/O, TCP_NODELAY, frames of a 4-byte
 * big-endian length and the payload. thr batches small frames into one
 * 64 KiB buffer and hands a payload as large as that buffer to the kernel
 * with writev() (TCP) or SSL_write() (TLS) without copying it; the server
 * reads 256 KiB at a time and parses frames in place. TLS: TLS 1.3 only,
 * default cipher suites, no tickets, no session cache, the server
 * certificate verified against --ca for "localhost".
 *
 * conns (thousands of idle connections) cannot be held with blocking
 * sockets: raw_conns.c runs it with the smallest epoll loop that can.
 */
#include "../bench_common.h"
#include "raw_conns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define WBUF (64u * 1024u)
#define RBUF (256u * 1024u)

struct conn {
    int fd;
    SSL *ssl;
};

static SSL_CTX *g_ctx;
static int g_port;
static char g_tls_desc[128];

/* ---- errors ------------------------------------------------------------- */

static noreturn void die_ssl(const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "no OpenSSL error queued";
    if (e != 0) {
        ERR_error_string_n(e, buf, sizeof buf);
    }
    bench_die("%s: %s (errno: %s)", what, buf, strerror(errno));
}

/* ---- blocking I/O over TCP or TLS ---------------------------------------- */

static void write_all(struct conn *c, const void *p, size_t n)
{
    const char *b = p;
    while (n > 0) {
        int chunk = n > INT_MAX ? INT_MAX : (int)n;
        ssize_t r;
        if (c->ssl != NULL) {
            r = SSL_write(c->ssl, b, chunk);
            if (r <= 0) {
                die_ssl("SSL_write");
            }
        } else {
            r = write(c->fd, b, (size_t)chunk);
            if (r < 0 && errno == EINTR) {
                continue;
            }
            if (r <= 0) {
                bench_die("write: %s", strerror(errno));
            }
        }
        b += r;
        n -= (size_t)r;
    }
}

/* TCP only: a staged batch and a large payload in one system call. */
static void writev_all(struct conn *c, struct iovec *v, int cnt)
{
    while (cnt > 0) {
        ssize_t r = writev(c->fd, v, cnt);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            bench_die("writev: %s", strerror(errno));
        }
        size_t left = (size_t)r;
        while (cnt > 0 && left >= v->iov_len) {
            left -= v->iov_len;
            v++;
            cnt--;
        }
        if (cnt > 0) {
            v->iov_base = (char *)v->iov_base + left;
            v->iov_len -= left;
        }
    }
}

/* Bytes read, 0 at the end of the stream. */
static size_t read_some(struct conn *c, void *p, size_t cap)
{
    int chunk = cap > INT_MAX ? INT_MAX : (int)cap;
    for (;;) {
        if (c->ssl != NULL) {
            int r = SSL_read(c->ssl, p, chunk);
            if (r > 0) {
                return (size_t)r;
            }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_ZERO_RETURN) {
                return 0;
            }
            if (e == SSL_ERROR_SYSCALL && errno == EINTR) {
                continue;
            }
            die_ssl("SSL_read");
        }
        ssize_t r = read(c->fd, p, (size_t)chunk);
        if (r >= 0) {
            return (size_t)r;
        }
        if (errno != EINTR) {
            bench_die("read: %s", strerror(errno));
        }
    }
}

static void read_full(struct conn *c, void *p, size_t n, const char *what)
{
    char *b = p;
    while (n > 0) {
        size_t r = read_some(c, b, n);
        if (r == 0) {
            bench_die("end of stream while reading the %s", what);
        }
        b += r;
        n -= r;
    }
}

static void expect_eof(struct conn *c)
{
    char b[256];
    size_t r = read_some(c, b, sizeof b);
    if (r != 0) {
        bench_die("%zu bytes after the last message", r);
    }
}

static void conn_close(struct conn *c, bool notify)
{
    if (c->ssl != NULL) {
        if (notify) {
            SSL_shutdown(c->ssl); /* one close_notify, no wait for the peer's */
        }
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    close(c->fd);
    c->fd = -1;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void send_byte_frame(struct conn *c, uint8_t byte)
{
    uint8_t f[5] = {0, 0, 0, 1, byte};
    write_all(c, f, sizeof f);
}

static void recv_byte_frame(struct conn *c, const char *what)
{
    uint8_t f[5];
    read_full(c, f, sizeof f, what);
    if (get_be32(f) != 1) {
        bench_die("the %s frame has length %u, expected 1", what, get_be32(f));
    }
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

static void tls_start(struct conn *c, bool server)
{
    if (O.transport != TR_TLS) {
        return;
    }
    c->ssl = SSL_new(g_ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
        die_ssl("SSL_new");
    }
    if (server) {
        if (SSL_accept(c->ssl) != 1) {
            die_ssl("SSL_accept");
        }
        return;
    }
    if (SSL_set_tlsext_host_name(c->ssl, SERVER_NAME) != 1 ||
        SSL_set1_host(c->ssl, SERVER_NAME) != 1) {
        die_ssl("SSL_set1_host");
    }
    if (SSL_connect(c->ssl) != 1) {
        die_ssl("SSL_connect");
    }
    if (g_tls_desc[0] == '\0') {
        const char *grp = SSL_group_to_name(c->ssl, SSL_get_negotiated_group(c->ssl));
        snprintf(g_tls_desc, sizeof g_tls_desc, "\"tls\":\"%s %s %s\"", SSL_get_version(c->ssl),
                 SSL_get_cipher_name(c->ssl), grp != NULL ? grp : "?");
    }
}

static void nodelay(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) {
        bench_die("TCP_NODELAY: %s", strerror(errno));
    }
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static struct conn dial(void)
{
    struct conn c = {socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), NULL};
    struct sockaddr_in a = loopback(g_port);
    if (c.fd < 0 || connect(c.fd, (struct sockaddr *)&a, sizeof a) < 0) {
        bench_die("connect to 127.0.0.1:%d: %s", g_port, strerror(errno));
    }
    nodelay(c.fd);
    tls_start(&c, false);
    return c;
}

static struct conn accept_one(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0) {
            struct conn c = {fd, NULL};
            nodelay(fd);
            tls_start(&c, true);
            return c;
        }
        if (errno != EINTR && errno != ECONNABORTED) {
            bench_die("accept: %s", strerror(errno));
        }
    }
}

/* ---- server (the forked child) -------------------------------------------- */

static void serve_thr(struct conn *c)
{
    uint8_t *buf = bench_xmalloc(RBUF);
    uint8_t hdr[4];
    size_t hl = 0;
    size_t need = 0; /* payload bytes of the current frame still to come */
    long count = 0;
    recv_byte_frame(c, "hello");
    send_byte_frame(c, 'r');
    while (count < O.count) {
        size_t n = read_some(c, buf, RBUF);
        const uint8_t *p = buf;
        if (n == 0) {
            bench_die("end of stream after %ld of %ld messages", count, O.count);
        }
        while (n > 0) {
            if (need == 0 && hl < 4) {
                size_t t = 4 - hl < n ? 4 - hl : n;
                memcpy(hdr + hl, p, t);
                hl += t;
                p += t;
                n -= t;
                if (hl == 4 && (need = get_be32(hdr)) != O.size) {
                    bench_die("message %ld has length %zu, expected %zu", count, need, O.size);
                }
                continue;
            }
            size_t t = need < n ? need : n;
            need -= t;
            p += t;
            n -= t;
            if (need == 0) {
                hl = 0;
                if (++count == O.count && n > 0) {
                    bench_die("%zu bytes after message %ld", n, O.count);
                }
            }
        }
    }
    send_byte_frame(c, 'a');
    expect_eof(c);
    free(buf);
}

/* Reads one frame of O.size into buf (4 + O.size) and sends it back. */
static void echo_one(struct conn *c, uint8_t *buf, long i)
{
    read_full(c, buf, 4 + O.size, "message");
    if (get_be32(buf) != O.size) {
        bench_die("message %ld has length %u, expected %zu", i, get_be32(buf), O.size);
    }
    write_all(c, buf, 4 + O.size);
}

static int server_main(void)
{
    int one = 1;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = loopback(0);
    socklen_t al = sizeof a;
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, SOMAXCONN) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &al) < 0) {
        bench_die("listen on 127.0.0.1: %s", strerror(errno));
    }
    tls_setup(true);
    bench_ctl_send_port(ntohs(a.sin_port));
    uint8_t *buf = bench_xmalloc(4 + O.size);
    if (O.scenario == SC_HS) {
        for (long i = 0; i < HS_WARMUP + O.count; i++) {
            struct conn c = accept_one(lfd);
            echo_one(&c, buf, i);
            expect_eof(&c);
            conn_close(&c, false);
        }
    } else {
        struct conn c = accept_one(lfd);
        if (O.scenario == SC_THR) {
            serve_thr(&c);
        } else {
            recv_byte_frame(&c, "hello");
            send_byte_frame(&c, 'r');
            for (long i = 0; i < bench_lat_warmup() + O.count; i++) {
                echo_one(&c, buf, i);
            }
            expect_eof(&c);
        }
        conn_close(&c, false);
    }
    free(buf);
    close(lfd);
    bench_server_wait_stop();
    return 0;
}

/* ---- client (the parent) -------------------------------------------------- */

static void client_thr(struct conn *c, const uint8_t *payload)
{
    uint8_t *wb = bench_xmalloc(WBUF);
    size_t fill = 0;
    double t0 = bench_now_s();
    for (long i = 0; i < O.count; i++) {
        if (O.size + 4 > WBUF - fill) { /* does not fit: out with the batch */
            if (O.size >= WBUF && c->ssl == NULL) {
                put_be32(wb + fill, (uint32_t)O.size);
                struct iovec v[2] = {{wb, fill + 4}, {(void *)payload, O.size}};
                writev_all(c, v, 2);
                fill = 0;
                continue;
            }
            write_all(c, wb, fill);
            fill = 0;
            if (O.size + 4 > WBUF) { /* TLS, large: header, then the payload as is */
                uint8_t h[4];
                put_be32(h, (uint32_t)O.size);
                write_all(c, h, 4);
                write_all(c, payload, O.size);
                continue;
            }
        }
        put_be32(wb + fill, (uint32_t)O.size);
        memcpy(wb + fill + 4, payload, O.size);
        fill += 4 + O.size;
    }
    write_all(c, wb, fill);
    recv_byte_frame(c, "ack");
    double t1 = bench_now_s();
    free(wb);
    conn_close(c, true);
    bench_finish_server();
    bench_emit_thr(t1 - t0, g_tls_desc[0] != '\0' ? g_tls_desc : NULL);
}

/* Sends the frame in out (4 + O.size) and checks the echo byte for byte. */
static void ping(struct conn *c, const uint8_t *out, uint8_t *in, long i)
{
    write_all(c, out, 4 + O.size);
    read_full(c, in, 4 + O.size, "echo");
    if (memcmp(in, out, 4 + O.size) != 0) {
        bench_die("echo %ld differs from what was sent", i);
    }
}

static void client_lat(struct conn *c, const uint8_t *frame)
{
    long warm = bench_lat_warmup();
    uint8_t *in = bench_xmalloc(4 + O.size);
    double *rtt = bench_xmalloc((size_t)O.count * sizeof *rtt);
    for (long i = 0; i < warm; i++) {
        ping(c, frame, in, i);
    }
    for (long i = 0; i < O.count; i++) {
        uint64_t t = bench_now_ns();
        ping(c, frame, in, warm + i);
        rtt[i] = (double)(bench_now_ns() - t) / 1e3;
    }
    free(in);
    conn_close(c, true);
    bench_finish_server();
    bench_emit_lat(rtt, O.count, g_tls_desc[0] != '\0' ? g_tls_desc : NULL);
    free(rtt);
}

static void client_hs(const uint8_t *frame)
{
    uint8_t *in = bench_xmalloc(4 + O.size);
    double t0 = 0;
    for (long i = 0; i < HS_WARMUP + O.count; i++) {
        if (i == HS_WARMUP) {
            t0 = bench_now_s();
        }
        struct conn c = dial();
        ping(&c, frame, in, i);
        conn_close(&c, true);
    }
    double t1 = bench_now_s();
    free(in);
    bench_finish_server();
    bench_emit_hs(t1 - t0, O.count, g_tls_desc[0] != '\0' ? g_tls_desc : NULL);
}

int main(int argc, char **argv)
{
    bench_parse_args(argc, argv, "raw");
    uint8_t *frame = bench_xmalloc(4 + O.size);
    put_be32(frame, (uint32_t)O.size);
    bench_fill_payload(frame + 4, O.size);
    if (O.scenario == SC_CONNS) {
        raw_conns(frame);
        free(frame);
        return 0;
    }
    g_port = bench_spawn_server(server_main);
    tls_setup(false);
    if (O.scenario == SC_HS) {
        client_hs(frame);
    } else {
        struct conn c = dial();
        send_byte_frame(&c, 'h');
        recv_byte_frame(&c, "ready");
        if (O.scenario == SC_THR) {
            client_thr(&c, frame + 4);
        } else {
            client_lat(&c, frame);
        }
    }
    free(frame);
    return 0;
}
