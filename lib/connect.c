/* Dialling: from a parsed URL to a connected socket handed to conn.c.
 *
 * The dialer turns the URL into candidate addresses and tries them one
 * after another with non-blocking connects, recording the outcome of each
 * so that a failure can say exactly what was tried. The connection's own
 * timer enforces the overall deadline; the dialer never blocks. */
#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DIAL_MAX_ADDRS 16

struct tether__dialer {
    tether_conn *c;
    struct tether__url u;
    struct sockaddr_storage addrs[DIAL_MAX_ADDRS];
    socklen_t lens[DIAL_MAX_ADDRS];
    int naddr;
    int next;
    int fd;
    struct tether__io io;
    struct tether__pending free_pend; /* frees the dialer outside dispatch */
    int last_err;
    int ntried;
    char tried[TETHER_ERROR_MSG_MAX];
};

static void dial_try_next(struct tether__dialer *d);

static void dialer_free_cb(struct tether__pending *p)
{
    struct tether__dialer *d = tether__container_of(p, struct tether__dialer, free_pend);
    free(d);
}

/* Detaches the dialer from its connection and frees it from the loop: its
 * I/O watcher may still appear in the epoll batch being dispatched. */
static void dialer_release(struct tether__dialer *d)
{
    tether__io_stop(d->c->loop, &d->io);
    if (d->fd >= 0) {
        close(d->fd);
        d->fd = -1;
    }
    d->c->dialer = NULL;
    tether__pending_queue(d->c->loop, &d->free_pend);
}

static const char *short_reason(int err)
{
    switch (err) {
    case TETHER_ECONNREFUSED:
        return "refused";
    case TETHER_ETIMEDOUT:
        return "timed out";
    case TETHER_ENETUNREACH:
        return "network unreachable";
    case TETHER_EHOSTUNREACH:
        return "host unreachable";
    default:
        return tether_strerror(err);
    }
}

static void dial_record(struct tether__dialer *d, int idx, int err)
{
    char addr[128];
    tether__addr_format((const struct sockaddr *)&d->addrs[idx], d->lens[idx], addr, sizeof addr);
    size_t used = strlen(d->tried);
    if (used < sizeof d->tried - 1) {
        snprintf(d->tried + used, sizeof d->tried - used, "%s%s %s", d->ntried > 0 ? "; " : "",
                 addr, short_reason(err));
    }
    d->ntried++;
    d->last_err = err;
}

static void dial_fail_all(struct tether__dialer *d)
{
    tether_conn *c = d->c;
    int err = d->last_err;
    if (d->ntried == 1) {
        /* The common case reads like the issue it is: "connect to
         * tcp://127.0.0.1:9: connection refused". */
        tether__conn_set_err(c, "connect to %s: %s", c->url, tether_strerror(err));
    } else {
        tether__conn_set_err(c, "connect to %s failed: %d addresses tried: %s", c->url,
                             d->ntried, d->tried);
    }
    dialer_release(d);
    tether__conn_end(c, err);
}

static void dial_connected(struct tether__dialer *d)
{
    tether_conn *c = d->c;
    int fd = d->fd;
    bool is_unix = d->u.scheme == TETHER__SCHEME_UNIX;
    char host[TETHER__HOST_MAX + 1];
    memcpy(host, d->u.host, sizeof host);
    tether__io_stop(c->loop, &d->io);
    d->fd = -1;
    dialer_release(d);
    int rv = tether__conn_attach(c, fd, is_unix, is_unix ? NULL : host, false);
    if (rv != TETHER_OK) {
        tether__conn_fail(c, rv, "connect to %s: %s", c->url, tether_strerror(rv));
    }
}

static void dial_on_writable(struct tether__io *io, unsigned revents)
{
    (void)revents;
    struct tether__dialer *d = tether__container_of(io, struct tether__dialer, io);
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(d->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) {
        soerr = errno;
    }
    if (soerr == 0) {
        dial_connected(d);
        return;
    }
    tether__io_stop(d->c->loop, &d->io);
    close(d->fd);
    d->fd = -1;
    dial_record(d, d->next - 1, tether__errno_to_err(soerr));
    dial_try_next(d);
}

static void dial_try_next(struct tether__dialer *d)
{
    tether_conn *c = d->c;
    while (d->next < d->naddr) {
        int idx = d->next++;
        const struct sockaddr *sa = (const struct sockaddr *)&d->addrs[idx];
        int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            dial_record(d, idx, tether__errno_to_err(errno));
            continue;
        }
        tether__sock_apply_opts(fd, c->cfg, sa->sa_family == AF_UNIX);
        int r;
        do {
            r = connect(fd, sa, d->lens[idx]);
        } while (r != 0 && errno == EINTR);
        if (r == 0) {
            d->fd = fd;
            dial_connected(d);
            return;
        }
        if (errno == EINPROGRESS || errno == EAGAIN) {
            /* EAGAIN: a Unix socket whose accept queue is full; it becomes
             * writable once the server accepts. */
            d->fd = fd;
            tether__io_init(&d->io, fd, dial_on_writable);
            int rv = tether__io_set(c->loop, &d->io, TETHER_EV_WRITE);
            if (rv != TETHER_OK) {
                close(fd);
                d->fd = -1;
                dial_record(d, idx, rv);
                continue;
            }
            return;
        }
        int err = tether__errno_to_err(errno);
        close(fd);
        dial_record(d, idx, err);
    }
    dial_fail_all(d);
}

static int dial_add_numeric(struct tether__dialer *d, int family, const char *ip, int port)
{
    struct sockaddr_storage *ss = &d->addrs[d->naddr];
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, ip, &sin->sin_addr);
        d->lens[d->naddr] = sizeof *sin;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, ip, &sin6->sin6_addr);
        d->lens[d->naddr] = sizeof *sin6;
    }
    d->naddr++;
    return TETHER_OK;
}

int tether__dial_start(tether_conn *c, const struct tether__url *u)
{
    struct tether__dialer *d = calloc(1, sizeof *d);
    if (d == NULL) {
        return TETHER_ENOMEM;
    }
    d->c = c;
    d->u = *u;
    d->fd = -1;
    tether__io_init(&d->io, -1, dial_on_writable);
    tether__pending_init(&d->free_pend, dialer_free_cb);
    c->dialer = d;

    int rv = tether__url_sockaddr(u, &d->addrs[0], &d->lens[0]);
    if (rv == TETHER_OK) {
        d->naddr = 1;
    } else if (strcmp(u->host, "localhost") == 0) {
        /* localhost never needs a DNS server: try both loopbacks. */
        dial_add_numeric(d, AF_INET, "127.0.0.1", u->port);
        dial_add_numeric(d, AF_INET6, "::1", u->port);
    } else {
        tether__conn_set_err(c, "connect to %s: resolving host names is not supported yet",
                             c->url);
        dialer_release(d);
        tether__conn_end(c, TETHER_ENOTSUP);
        return TETHER_OK;
    }
    dial_try_next(d);
    return TETHER_OK;
}

void tether__dial_cancel(tether_conn *c)
{
    if (c->dialer != NULL) {
        dialer_release(c->dialer);
    }
}
