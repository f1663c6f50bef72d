/* SPDX-License-Identifier: MIT */
/* The fault-injection proxy (see proxy.h): one thread, one poll() loop,
 * a pair of sockets per proxied connection and a queue of chunks per
 * direction (the queue is what makes delays possible). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 16384
#define QUEUE_MAX (256 * 1024) /* bytes buffered per direction before reading stops */
#define MAX_PAIRS 512

struct chunk {
    struct chunk *next;
    uint64_t due; /* ms */
    size_t len;
    size_t off;
    unsigned char data[];
};

struct dir {
    struct chunk *head;
    struct chunk *tail;
    size_t bytes;
    bool eof;  /* the source sent FIN */
    bool shut; /* we passed the FIN on */
};

struct pair {
    int fd[2];       /* 0: the client's side, 1: the target's side */
    struct dir d[2]; /* d[i]: bytes read from fd[i], to be written to fd[1 - i] */
};

enum cmd {
    CMD_NONE,
    CMD_SYNC, /* nothing: acknowledges that a new round has begun */
    CMD_CUT,
    CMD_RESET,
    CMD_STOP,
};

struct tproxy {
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int wake[2];
    int lfd;
    int port;
    int sock_buf;
    /* Shared with the API, under mu. */
    int target;
    tproxy_mode mode;
    int delay_ms;
    bool refuse;
    enum cmd cmd;
    uint64_t cmd_seq;  /* requests */
    uint64_t done_seq; /* requests carried out */
    int nconns;
    uint64_t accepted;
    /* Proxy thread only. */
    struct pair *pairs[MAX_PAIRS];
    int npairs;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void set_buf(int fd, int sz)
{
    if (sz > 0) {
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
    }
}

static void close_rst(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

static void dir_clear(struct dir *d)
{
    struct chunk *c = d->head;
    while (c != NULL) {
        struct chunk *n = c->next;
        free(c);
        c = n;
    }
    d->head = d->tail = NULL;
    d->bytes = 0;
}

static void pair_close(tproxy *p, int i, bool rst)
{
    struct pair *pr = p->pairs[i];
    for (int k = 0; k < 2; k++) {
        if (rst) {
            close_rst(pr->fd[k]);
        } else {
            close(pr->fd[k]);
        }
        dir_clear(&pr->d[k]);
    }
    free(pr);
    p->pairs[i] = p->pairs[--p->npairs];
    pthread_mutex_lock(&p->mu);
    p->nconns--;
    pthread_mutex_unlock(&p->mu);
}

static void do_accept(tproxy *p)
{
    int cfd = accept4(p->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0) {
        return;
    }
    pthread_mutex_lock(&p->mu);
    int target = p->target;
    bool refuse = p->refuse;
    p->accepted++;
    pthread_mutex_unlock(&p->mu);
    if (refuse || p->npairs == MAX_PAIRS) {
        close_rst(cfd);
        return;
    }
    int sfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sfd < 0) {
        close_rst(cfd);
        return;
    }
    set_buf(sfd, p->sock_buf);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)target)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* A blocking connect on loopback: it succeeds or is refused at once. */
    if (connect(sfd, (struct sockaddr *)&sin, sizeof sin) != 0) {
        close(sfd);
        close_rst(cfd); /* the closest thing to "refused" we can pass on */
        return;
    }
    fcntl(sfd, F_SETFL, fcntl(sfd, F_GETFL) | O_NONBLOCK);
    int one = 1;
    setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct pair *pr = calloc(1, sizeof *pr);
    if (pr == NULL) {
        close(sfd);
        close_rst(cfd);
        return;
    }
    pr->fd[0] = cfd;
    pr->fd[1] = sfd;
    p->pairs[p->npairs++] = pr;
    pthread_mutex_lock(&p->mu);
    p->nconns++;
    pthread_mutex_unlock(&p->mu);
}

/* Reads from pr->fd[i]. Returns false when the pair must be reset. */
static bool pair_read(struct pair *pr, int i, tproxy_mode mode, int delay_ms)
{
    struct dir *d = &pr->d[i];
    for (;;) {
        if (mode == TPROXY_PASS && d->bytes >= QUEUE_MAX) {
            return true;
        }
        struct chunk *c = malloc(sizeof *c + CHUNK);
        if (c == NULL) {
            return false;
        }
        ssize_t n = recv(pr->fd[i], c->data, CHUNK, 0);
        if (n < 0) {
            free(c);
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        }
        if (n == 0) {
            free(c);
            d->eof = true;
            return true;
        }
        if (mode == TPROXY_BLACKHOLE) {
            free(c); /* gone without a trace */
            continue;
        }
        c->next = NULL;
        c->len = (size_t)n;
        c->off = 0;
        c->due = now_ms() + (uint64_t)(delay_ms > 0 ? delay_ms : 0);
        if (d->tail != NULL) {
            d->tail->next = c;
        } else {
            d->head = c;
        }
        d->tail = c;
        d->bytes += (size_t)n;
    }
}

/* Writes the due chunks of d[i] to the other side. */
static bool pair_write(struct pair *pr, int i, uint64_t now)
{
    struct dir *d = &pr->d[i];
    int out = pr->fd[1 - i];
    while (d->head != NULL && d->head->due <= now) {
        struct chunk *c = d->head;
        ssize_t n = send(out, c->data + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0) {
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        }
        c->off += (size_t)n;
        d->bytes -= (size_t)n;
        if (c->off < c->len) {
            return true;
        }
        d->head = c->next;
        if (d->head == NULL) {
            d->tail = NULL;
        }
        free(c);
    }
    if (d->head == NULL && d->eof && !d->shut) {
        shutdown(out, SHUT_WR);
        d->shut = true;
    }
    return true;
}

static void *proxy_thread(void *arg)
{
    tproxy *p = arg;
    struct pollfd *pfd = calloc(2 + 2 * MAX_PAIRS, sizeof *pfd);
    if (pfd == NULL) {
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&p->mu);
        tproxy_mode mode = p->mode;
        int delay = p->delay_ms;
        enum cmd cmd = p->cmd;
        uint64_t seq = p->cmd_seq;
        p->cmd = CMD_NONE;
        pthread_mutex_unlock(&p->mu);

        if (cmd != CMD_NONE) {
            if (cmd == CMD_CUT || cmd == CMD_RESET || cmd == CMD_STOP) {
                while (p->npairs > 0) {
                    pair_close(p, p->npairs - 1, cmd == CMD_RESET);
                }
            }
            pthread_mutex_lock(&p->mu);
            p->done_seq = seq;
            pthread_cond_broadcast(&p->cv);
            pthread_mutex_unlock(&p->mu);
            if (cmd == CMD_STOP) {
                break;
            }
            continue;
        }

        uint64_t now = now_ms();
        int timeout = 200; /* also picks up mode changes made without a wakeup */
        int n = 0;
        pfd[n++] = (struct pollfd){.fd = p->wake[0], .events = POLLIN};
        pfd[n++] = (struct pollfd){.fd = p->lfd, .events = POLLIN};
        for (int i = 0; i < p->npairs; i++) {
            struct pair *pr = p->pairs[i];
            for (int k = 0; k < 2; k++) {
                short ev = 0;
                struct dir *in = &pr->d[k];
                struct dir *outq = &pr->d[1 - k];
                if (mode != TPROXY_STALL && !in->eof &&
                    (mode == TPROXY_BLACKHOLE || in->bytes < QUEUE_MAX)) {
                    ev |= POLLIN;
                }
                if (mode == TPROXY_PASS && outq->head != NULL) {
                    if (outq->head->due <= now) {
                        ev |= POLLOUT;
                    } else {
                        int t = (int)(outq->head->due - now);
                        timeout = t < timeout ? t : timeout;
                    }
                }
                pfd[n++] = (struct pollfd){.fd = pr->fd[k], .events = ev};
            }
        }
        int r = poll(pfd, (nfds_t)n, timeout);
        if (r < 0 && errno != EINTR) {
            break;
        }
        if (pfd[0].revents & POLLIN) {
            char b[64];
            while (read(p->wake[0], b, sizeof b) > 0) {
            }
        }
        if (pfd[1].revents & POLLIN) {
            do_accept(p);
        }
        now = now_ms();
        /* Pairs are visited in reverse so that closing one (which moves the
         * last into its slot) never skips another; accepts above appended
         * pairs that poll() did not see, hence the bound. */
        int seen = (n - 2) / 2;
        for (int i = seen - 1; i >= 0; i--) {
            struct pair *pr = p->pairs[i];
            bool ok = true;
            for (int k = 0; k < 2 && ok; k++) {
                short re = pfd[2 + 2 * i + k].revents;
                if (mode != TPROXY_STALL && (re & (POLLIN | POLLHUP | POLLERR))) {
                    ok = pair_read(pr, k, mode, delay);
                }
            }
            if (ok && mode == TPROXY_PASS) {
                for (int k = 0; k < 2 && ok; k++) {
                    ok = pair_write(pr, k, now);
                }
            }
            if (!ok) {
                pair_close(p, i, true);
                continue;
            }
            if (pr->d[0].eof && pr->d[1].eof && pr->d[0].head == NULL && pr->d[1].head == NULL) {
                pair_close(p, i, false);
            }
        }
    }
    free(pfd);
    return NULL;
}

static void wake(tproxy *p)
{
    char b = 1;
    ssize_t r = write(p->wake[1], &b, 1);
    (void)r;
}

/* Posts a command and waits until the thread carried it out. */
static void command(tproxy *p, enum cmd c)
{
    pthread_mutex_lock(&p->mu);
    p->cmd = c;
    uint64_t seq = ++p->cmd_seq;
    wake(p);
    while (p->done_seq < seq) {
        pthread_cond_wait(&p->cv, &p->mu);
    }
    pthread_mutex_unlock(&p->mu);
}

int tproxy_start(tproxy **out, int target_port, int sock_buf)
{
    tproxy *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return -ENOMEM;
    }
    p->target = target_port;
    p->sock_buf = sock_buf;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (pipe2(p->wake, O_NONBLOCK | O_CLOEXEC) != 0) {
        free(p);
        return -errno;
    }
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(p->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    set_buf(p->lfd, sock_buf); /* inherited by accepted sockets */
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sin;
    if (p->lfd < 0 || bind(p->lfd, (struct sockaddr *)&sin, sizeof sin) != 0 ||
        listen(p->lfd, 512) != 0 || getsockname(p->lfd, (struct sockaddr *)&sin, &sl) != 0) {
        int e = errno;
        close(p->lfd);
        close(p->wake[0]);
        close(p->wake[1]);
        free(p);
        return -e;
    }
    p->port = ntohs(sin.sin_port);
    if (pthread_create(&p->tid, NULL, proxy_thread, p) != 0) {
        close(p->lfd);
        close(p->wake[0]);
        close(p->wake[1]);
        free(p);
        return -EAGAIN;
    }
    *out = p;
    return 0;
}

int tproxy_port(const tproxy *p)
{
    return p->port;
}

void tproxy_set_target(tproxy *p, int target_port)
{
    pthread_mutex_lock(&p->mu);
    p->target = target_port;
    pthread_mutex_unlock(&p->mu);
}

void tproxy_set_mode(tproxy *p, tproxy_mode mode)
{
    pthread_mutex_lock(&p->mu);
    p->mode = mode;
    pthread_mutex_unlock(&p->mu);
    /* A no-op command: returns once the thread has started a new round
     * with the new mode. */
    command(p, CMD_SYNC);
}

void tproxy_set_delay(tproxy *p, int ms)
{
    pthread_mutex_lock(&p->mu);
    p->delay_ms = ms;
    pthread_mutex_unlock(&p->mu);
    wake(p);
}

void tproxy_cut(tproxy *p)
{
    command(p, CMD_CUT);
}

void tproxy_reset(tproxy *p)
{
    command(p, CMD_RESET);
}

void tproxy_refuse(tproxy *p, bool on)
{
    pthread_mutex_lock(&p->mu);
    p->refuse = on;
    pthread_mutex_unlock(&p->mu);
}

int tproxy_conns(tproxy *p)
{
    pthread_mutex_lock(&p->mu);
    int n = p->nconns;
    pthread_mutex_unlock(&p->mu);
    return n;
}

uint64_t tproxy_accepted(tproxy *p)
{
    pthread_mutex_lock(&p->mu);
    uint64_t n = p->accepted;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void tproxy_stop(tproxy *p)
{
    if (p == NULL) {
        return;
    }
    command(p, CMD_STOP);
    pthread_join(p->tid, NULL);
    close(p->lfd);
    close(p->wake[0]);
    close(p->wake[1]);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}
