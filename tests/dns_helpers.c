/* SPDX-License-Identifier: MIT */
/* Runs a dnsmasq of the test's own on a loopback port and asks it minimal
 * DNS queries, for test_dns and test_dns_srv (see dns_helpers.h). */
#include "dns_helpers.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

void th_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s: %s", path, strerror(errno));
    fputs(text, f);
    ck_assert_int_eq(fclose(f), 0);
    chmod(path, 0644);
}

int th_free_port(void)
{
    for (int attempt = 0; attempt < 100; attempt++) {
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        ck_assert_int_ge(fd, 0);
        struct sockaddr_in sin = {.sin_family = AF_INET};
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
        socklen_t sl = sizeof sin;
        getsockname(fd, (struct sockaddr *)&sin, &sl);
        int tfd = socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_int_ge(tfd, 0);
        int one = 1;
        setsockopt(tfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        int rv = bind(tfd, (struct sockaddr *)&sin, sizeof sin);
        close(tfd);
        close(fd);
        if (rv == 0) {
            return ntohs(sin.sin_port);
        }
    }
    ck_abort_msg("no port on 127.0.0.1 free for both UDP and TCP in 100 tries");
    return -1;
}

void th_dnsmasq_init(struct th_dnsmasq *d, const char *prefix)
{
    ck_assert_msg(access(TH_DNSMASQ, X_OK) == 0,
                  "dnsmasq not found at " TH_DNSMASQ ": install the Debian package dnsmasq-base "
                  "(bash tests/run-all.sh installs it through tests/deps.sh)");
    memset(d, 0, sizeof *d);
    snprintf(d->dir, sizeof d->dir, "/tmp/%s-XXXXXX", prefix);
    ck_assert_ptr_nonnull(mkdtemp(d->dir));
    chmod(d->dir, 0755);
    snprintf(d->conf, sizeof d->conf, "%s/dnsmasq.conf", d->dir);
    snprintf(d->log, sizeof d->log, "%s/dnsmasq.log", d->dir);
}

void th_dnsmasq_spawn(struct th_dnsmasq *d, bool append)
{
    char conf_arg[160];
    snprintf(conf_arg, sizeof conf_arg, "--conf-file=%s", d->conf);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* Dies with the test, even if the test dies first. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int lfd = open(d->log, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0644);
        int nul = open("/dev/null", O_RDONLY);
        dup2(nul, 0);
        dup2(lfd, 1);
        dup2(lfd, 2);
        execl(TH_DNSMASQ, "dnsmasq", "--no-daemon", "--pid-file=", conf_arg, (char *)NULL);
        _exit(127);
    }
    d->pid = pid;
}

int th_dnsmasq_wait(struct th_dnsmasq *d, bool (*answers)(int port), int ms)
{
    uint64_t deadline = th_now_ms() + (uint64_t)ms;
    while (th_now_ms() < deadline) {
        int st;
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
            d->pid = 0;
            return 0;
        }
        if (answers(d->port)) {
            return 1;
        }
    }
    return -1;
}

void th_dnsmasq_kill(struct th_dnsmasq *d)
{
    if (d->pid > 0) {
        kill(d->pid, SIGTERM);
        uint64_t deadline = th_now_ms() + 2000;
        int st;
        while (waitpid(d->pid, &st, WNOHANG) == 0) {
            if (th_now_ms() >= deadline) {
                kill(d->pid, SIGKILL);
                waitpid(d->pid, &st, 0);
                break;
            }
            usleep(10 * 1000);
        }
        d->pid = 0;
    }
}

void th_dnsmasq_remove(struct th_dnsmasq *d)
{
    if (d->dir[0] != '\0') {
        unlink(d->conf);
        unlink(d->log);
        rmdir(d->dir);
        d->dir[0] = '\0';
    }
}

void th_dnsmasq_read_log(const struct th_dnsmasq *d, char *buf, size_t len)
{
    buf[0] = '\0';
    FILE *f = fopen(d->log, "r");
    if (f != NULL) {
        size_t n = fread(buf, 1, len - 1, f);
        buf[n] = '\0';
        fclose(f);
    }
}

size_t th_dns_put_name(uint8_t *p, const char *name)
{
    size_t o = 0;
    while (*name != '\0') {
        const char *dot = strchr(name, '.');
        size_t l = dot != NULL ? (size_t)(dot - name) : strlen(name);
        p[o++] = (uint8_t)l;
        memcpy(p + o, name, l);
        o += l;
        name += l;
        if (*name == '.') {
            name++;
        }
    }
    p[o++] = 0;
    return o;
}

int th_dns_query(int port, const char *name, int type, uint8_t *resp, size_t cap, int timeout_ms)
{
    uint8_t q[512] = {0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0};
    size_t ql = 12 + th_dns_put_name(q + 12, name);
    q[ql++] = (uint8_t)(type >> 8);
    q[ql++] = (uint8_t)type;
    q[ql++] = 0;
    q[ql++] = 1; /* IN */
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int len = -1;
    if (sendto(fd, q, ql, 0, (struct sockaddr *)&sin, sizeof sin) == (ssize_t)ql) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        ssize_t n;
        if (poll(&pfd, 1, timeout_ms) == 1 && (n = recv(fd, resp, cap, 0)) >= 12 &&
            resp[0] == 0x12 && resp[1] == 0x34) {
            len = (int)n;
        }
    }
    close(fd);
    return len;
}
