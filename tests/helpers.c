/* SPDX-License-Identifier: MIT */
/* Shared fixtures for the check suites (see helpers.h). */
#include "helpers.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

tether_loop *th_loop;

void th_setup(void)
{
    th_loop = NULL;
    ck_assert_int_eq(tether_loop_new(&th_loop, NULL), TETHER_OK);
}

void th_teardown(void)
{
    /* Lingering closes end within the library's linger bound (2 s). */
    th_run_idle(5000);
    int rv = tether_loop_free(th_loop);
    ck_assert_msg(rv == TETHER_OK, "loop still has live handles at teardown: %s",
                  tether_err_name(rv));
    th_loop = NULL;
}

uint64_t th_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

bool th_run_until(const volatile bool *flag, int ms)
{
    uint64_t deadline = th_now_ms() + (uint64_t)ms;
    while (!*flag) {
        uint64_t now = th_now_ms();
        if (now >= deadline) {
            break;
        }
        int left = (int)(deadline - now);
        ck_assert_int_ge(tether_loop_run_once(th_loop, left > 50 ? 50 : left), 0);
    }
    return *flag;
}

bool th_run_until_pred(bool (*pred)(void *arg), void *arg, int ms)
{
    uint64_t deadline = th_now_ms() + (uint64_t)ms;
    while (!pred(arg)) {
        uint64_t now = th_now_ms();
        if (now >= deadline) {
            return pred(arg);
        }
        int left = (int)(deadline - now);
        ck_assert_int_ge(tether_loop_run_once(th_loop, left > 50 ? 50 : left), 0);
    }
    return true;
}

bool th_run_idle(int ms)
{
    uint64_t deadline = th_now_ms() + (uint64_t)ms;
    for (;;) {
        int rv = tether_loop_run_once(th_loop, 0);
        ck_assert_int_ge(rv, 0);
        if (rv == 0) {
            return true;
        }
        uint64_t now = th_now_ms();
        if (now >= deadline) {
            return false;
        }
        rv = tether_loop_run_once(th_loop, 20);
        ck_assert_int_ge(rv, 0);
        if (rv == 0) {
            return true;
        }
    }
}

tether_listener *th_listen_tcp(const tether_listen_opts *opts)
{
    tether_listener *l = NULL;
    tether_error err;
    int rv = tether_listen(&l, th_loop, "tcp://127.0.0.1:0", opts, &err);
    ck_assert_msg(rv == TETHER_OK, "listen failed: %s", err.message);
    ck_assert_int_gt(tether_listener_port(l), 0);
    return l;
}

const char *th_url_of(const tether_listener *l)
{
    static char buf[64];
    snprintf(buf, sizeof buf, "tcp://127.0.0.1:%d", tether_listener_port(l));
    return buf;
}

void th_fill(uint8_t *buf, size_t len, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1u;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        buf[i] = (uint8_t)x;
    }
}

bool th_check(const uint8_t *buf, size_t len, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1u;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        if (buf[i] != (uint8_t)x) {
            return false;
        }
    }
    return true;
}

int th_count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (d == NULL) {
        return -1;
    }
    while (readdir(d) != NULL) {
        n++;
    }
    closedir(d);
    return n - 3; /* ".", ".." and the directory's own fd */
}

int th_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

int th_refused_port(int *keep_fd)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    socklen_t sl = sizeof sin;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    *keep_fd = fd;
    return ntohs(sin.sin_port);
}

void th_dial(tether_conn **c, const char *url, const tether_conn_opts *o)
{
    tether_error err;
    int rv = tether_conn_dial(c, th_loop, url, o, &err);
    ck_assert_msg(rv == TETHER_OK, "dial %s: %s", url, err.message);
}

int th_raw_connect(int port)
{
    return th_raw_connect_rcvbuf(port, 0);
}

int th_raw_connect_rcvbuf(int port, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    if (rcvbuf > 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    }
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    return fd;
}

int th_raw_listen(int backlog, int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    ck_assert_int_eq(listen(fd, backlog), 0);
    socklen_t sl = sizeof sin;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

int th_hang_port(int *fds, int n)
{
    ck_assert_int_ge(n, 2);
    int port;
    fds[0] = th_raw_listen(0, &port);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 1; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fds[i], 0);
        connect(fds[i], (struct sockaddr *)&sin, sizeof sin); /* in progress, or queued */
    }
    usleep(100 * 1000); /* let the kernel queue them */
    return port;
}

void th_raw_write(int fd, const void *p, size_t n)
{
    ck_assert_int_eq((int)send(fd, p, n, MSG_NOSIGNAL), (int)n);
}

bool th_raw_wait_eof(int fd, int ms)
{
    uint64_t deadline = th_now_ms() + (uint64_t)ms;
    uint8_t b[4096];
    while (th_now_ms() < deadline) {
        tether_loop_run_once(th_loop, 5);
        ssize_t n = recv(fd, b, sizeof b, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno == ECONNRESET)) {
            return true;
        }
    }
    return false;
}

void th_local_name(int fd, char *buf, size_t len)
{
    struct sockaddr_in sin;
    socklen_t sl = sizeof sin;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
    char ip[INET_ADDRSTRLEN];
    ck_assert_ptr_nonnull(inet_ntop(AF_INET, &sin.sin_addr, ip, sizeof ip));
    snprintf(buf, len, "%s:%u", ip, (unsigned)ntohs(sin.sin_port));
}
