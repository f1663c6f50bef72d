/* SPDX-License-Identifier: MIT */
/* Dialling: from a parsed URL to a connected socket handed to conn.c.
 *
 * 1. Candidates. A numeric host or a Unix path is its own single
 *    candidate. `localhost` (and `*.localhost`, RFC 6761) becomes ::1 and
 *    127.0.0.1 without asking any DNS server, as curl does. Any other name
 *    is resolved on the loop's c-ares channel (dns.c), A and AAAA together,
 *    and comes back deduplicated with the families interleaved (RFC 8305
 *    section 4). tether_conn_opts::family restricts all of this to one
 *    family. Every dial resolves again: nothing is cached here.
 *
 * 2. Happy Eyeballs v2 (RFC 8305 section 5). The first candidate is tried
 *    at once. While attempts are in progress, the next candidate starts
 *    after the connection attempt delay (tether_conn_opts::attempt_delay_ms,
 *    default 250 ms, clamped to 100 ms - 2 s); earlier attempts keep
 *    running. An attempt that fails starts the next candidate immediately.
 *    The first attempt to connect wins: every other attempt is closed on
 *    the spot and the winner's socket goes to tether__conn_attach().
 *
 * 3. Deadlines. The connection's own timer enforces connect_timeout_ms over
 *    the whole set-up (resolution, attempts and the TLS handshake); when it
 *    fires during this phase, conn.c asks the dialer to report what it was
 *    doing (tether__dial_timeout). On top of that each attempt gets its
 *    share of what is left: an attempt that starts with R ms left before
 *    the deadline and n candidates not yet started (itself included) is
 *    abandoned after max(ATTEMPT_FLOOR_MS, R / n). So one dead address can
 *    never take the budget of the candidates behind it, yet no attempt gets
 *    less than the floor (enough for one lost SYN to be retransmitted).
 *    Abandoning an attempt counts as a failure: the next candidate starts
 *    at once.
 *
 * 4. SRV (tcp+srv://, tls+srv://). The records (dns_srv.c) give the
 *    targets in RFC 2782 order; each is dialled as above in turn, under the
 *    same deadline (see "SRV targets" below).
 *
 * Every outcome is recorded per candidate, so that a failure can say
 * exactly what was tried: "connect to tcp://db.test:5432 failed: 2
 * addresses tried: [::1]:5432 refused; 127.0.0.1:5432 timed out after
 * 3000 ms". The dialer never blocks and never calls user code; conn.c
 * reports. */
#include "conn.h"
#include "dial.h"
#include "dns.h"
#include "dns_srv.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define ATTEMPT_DELAY_MIN_MS 100
#define ATTEMPT_DELAY_MAX_MS 2000
#define ATTEMPT_FLOOR_MS 2000u
/* Candidates beyond this are dropped (reported as "not tried"). A name
 * with more addresses than this is unusual, and the attempts are spaced by
 * at least 100 ms, so later ones would rarely start before the deadline. */
#define DIAL_MAX_CANDS 64

enum cand_state {
    CAND_WAITING, /* not started */
    CAND_RUNNING, /* connect() in progress */
    CAND_DONE,    /* failed; err and took say how */
};

struct dial_cand {
    struct tether__dialer *d;
    struct tether__addr addr;
    int fd;
    struct tether__io io;
    struct tether__tnode timer; /* this attempt's own limit */
    uint64_t started;           /* loop ms */
    uint64_t limit_ms;          /* the per-attempt limit, 0 for none */
    uint64_t took;              /* ms spent, for timeouts */
    int err;
    uint8_t state;
};

struct tether__dialer {
    tether_conn *c;
    struct tether__url u;
    struct tether__pending free_pend; /* frees the dialer outside dispatch */
    struct tether__tnode stagger;     /* starts the next candidate */
    struct tether__dns_req *dns;      /* the lookup in progress, or NULL */
    struct dial_cand *cands;
    int ncand;
    int dropped; /* candidates beyond DIAL_MAX_CANDS */
    int next;    /* first candidate not started */
    int running;
    unsigned delay_ms;
    bool named; /* the host was a name: messages list the addresses */
    /* tcp+srv:// and tls+srv:// (see the comment above dial_on_srv): the
     * targets in the order to try them. While one is being tried, u.host
     * and u.port name it, and cands are its addresses. */
    struct tether__srv_req *srv; /* the SRV lookup in progress, or NULL */
    struct tether__srv_target *targets;
    size_t ntargets;
    size_t target;                       /* the one being tried */
    int srv_code;                        /* the most telling failure so far */
    char srv_name[TETHER__HOST_MAX + 1]; /* "_svc._tcp.example.com" */
    char fails[TETHER_ERROR_MSG_MAX];    /* "a.test:7001 refused; ..." */
};

enum start_result {
    START_RUNNING,
    START_FAILED,
    START_CONNECTED
};

static void dial_advance(struct tether__dialer *d);
static void srv_target_failed(struct tether__dialer *d, int code, const char *what);

/* ---- lifetime ---------------------------------------------------------- */

static void dialer_free_cb(struct tether__pending *p)
{
    struct tether__dialer *d = tether__container_of(p, struct tether__dialer, free_pend);
    free(d->cands);
    free(d->targets);
    free(d);
}

static void cand_close(struct dial_cand *k)
{
    tether_loop *loop = k->d->c->h.loop;
    tether__tnode_stop(loop, &k->timer);
    /* Out of the epoll set before the close: a child forked meanwhile
     * would keep the socket open, and registered (as a direct dial's). */
    tether__io_stop(loop, &k->io);
    if (k->fd >= 0) {
        close(k->fd);
        k->fd = -1;
    }
}

/* Closes every attempt, detaches the dialer from its connection and frees
 * it from the loop: its watchers may still be in the epoll batch being
 * dispatched. */
static void dialer_release(struct tether__dialer *d)
{
    tether_loop *loop = d->c->h.loop;
    for (int i = 0; i < d->ncand; i++) {
        cand_close(&d->cands[i]);
    }
    d->running = 0;
    tether__tnode_stop(loop, &d->stagger);
    if (d->dns != NULL) {
        tether__dns_cancel(d->dns);
        d->dns = NULL;
    }
    if (d->srv != NULL) {
        tether__srv_cancel(d->srv);
        d->srv = NULL;
    }
    d->c->ex->dialer = NULL;
    tether__pending_queue(loop, &d->free_pend);
}

/* ---- reporting --------------------------------------------------------- */

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

/* The code for a dial whose every attempt failed: the most telling
 * outcome. A refusal proves the host is up with nothing listening; a
 * timeout that the path or the host is dead; unreachable networks are
 * typically a family this host has no route for. */
static int code_rank(int err)
{
    static const int rank[] = {TETHER_ECONNREFUSED, TETHER_ETIMEDOUT, TETHER_EHOSTUNREACH,
                               TETHER_ENETUNREACH};
    for (size_t r = 0; r < TETHER__ARRAY_SIZE(rank); r++) {
        if (err == rank[r]) {
            return (int)r;
        }
    }
    return (int)TETHER__ARRAY_SIZE(rank);
}

/* The more telling of two failure codes (the first one on a tie). */
static int code_better(int have, int err)
{
    return have == 0 || code_rank(err) < code_rank(have) ? err : have;
}

static int dial_pick_code(const struct tether__dialer *d)
{
    int code = 0;
    for (int i = 0; i < d->ncand; i++) {
        if (d->cands[i].state == CAND_DONE) {
            code = code_better(code, d->cands[i].err);
        }
    }
    return code != 0 ? code : TETHER_ETIMEDOUT;
}

/* Formats one attempt's outcome: "refused", "timed out after 3000 ms". */
static void cand_outcome(const struct dial_cand *k, char *buf, size_t len)
{
    if (k->err == TETHER_ETIMEDOUT) {
        snprintf(buf, len, "timed out after %llu ms", (unsigned long long)k->took);
    } else {
        snprintf(buf, len, "%s", short_reason(k->err));
    }
}

/* Lists the finished attempts: "[::1]:5432 refused; 127.0.0.1:5432 timed
 * out after 3000 ms". Returns how many there were. */
static int cands_list(const struct tether__dialer *d, char *list, size_t len)
{
    size_t used = 0;
    int tried = 0;
    list[0] = '\0';
    for (int i = 0; i < d->ncand && used < len - 1; i++) {
        const struct dial_cand *k = &d->cands[i];
        if (k->state != CAND_DONE) {
            continue;
        }
        char addr[64];
        char how[48];
        tether__addr_format((const struct sockaddr *)&k->addr.ss, k->addr.len, addr, sizeof addr);
        cand_outcome(k, how, sizeof how);
        int w = snprintf(list + used, len - used, "%s%s %s", used > 0 ? "; " : "", addr, how);
        used = w < 0 ? len : TETHER__MIN(used + (size_t)w, len);
        tried++;
    }
    return tried;
}

/* Records the outcome of the dial on the connection, releases the dialer
 * and ends the connection with code. */
/* How the current SRV target's attempts went: "refused" when it had one
 * address, else its addresses in parentheses. */
static void target_outcome(const struct tether__dialer *d, char *what, size_t len)
{
    char list[TETHER_ERROR_MSG_MAX];
    int tried = cands_list(d, list, sizeof list);
    if (tried == 1 && d->ncand == 1) {
        cand_outcome(&d->cands[0], what, len);
    } else {
        snprintf(what, len, "(%.250s)", list);
    }
}

static void dial_report(struct tether__dialer *d, int code)
{
    tether_conn *c = d->c;
    if (d->targets != NULL) {
        char what[TETHER_ERROR_MSG_MAX];
        target_outcome(d, what, sizeof what);
        srv_target_failed(d, code, what);
        return;
    }
    int tried = 0;
    for (int i = 0; i < d->ncand; i++) {
        tried += d->cands[i].state == CAND_DONE;
    }
    if (!d->named && d->ncand == 1 && tried == 1) {
        /* A numeric address reads like the issue it is: "connect to
         * tcp://127.0.0.1:9: connection refused". */
        const struct dial_cand *k = &d->cands[0];
        if (k->err == TETHER_ETIMEDOUT) {
            tether__conn_set_err(c, "connect to %s timed out after %llu ms", tether__conn_url(c),
                                 (unsigned long long)k->took);
        } else {
            tether__conn_set_err(c, "connect to %s: %s", tether__conn_url(c),
                                 tether_strerror(k->err));
        }
    } else {
        char list[TETHER_ERROR_MSG_MAX];
        cands_list(d, list, sizeof list);
        int untried = d->ncand - tried + d->dropped;
        char more[48] = "";
        if (untried > 0) {
            snprintf(more, sizeof more, "; %d more not tried", untried);
        }
        tether__conn_set_err(c, "connect to %s failed: %d address%s tried: %s%s",
                             tether__conn_url(c), tried, tried == 1 ? "" : "es", list, more);
    }
    dialer_release(d);
    tether__conn_end(c, code);
}

/* Ends the dial before any attempt: resolution failed or the host cannot
 * be used with the requested family. */
static void dial_fail_early(struct tether__dialer *d, int code, const char *detail)
{
    tether_conn *c = d->c;
    if (d->targets != NULL) {
        char what[TETHER_ERROR_MSG_MAX];
        if (snprintf(what, sizeof what, "(%s)", detail) >= (int)sizeof what) {
            what[sizeof what - 2] = ')'; /* a long detail is cut, still in brackets */
        }
        srv_target_failed(d, code, what);
        return;
    }
    tether__conn_set_err(c, "connect to %s failed: %s", tether__conn_url(c), detail);
    dialer_release(d);
    tether__conn_end(c, code);
}

/* ---- attempts ---------------------------------------------------------- */

static void dial_won(struct dial_cand *k)
{
    struct tether__dialer *d = k->d;
    tether_conn *c = d->c;
    int fd = k->fd;
    bool is_unix = d->u.scheme == TETHER__SCHEME_UNIX;
    char host[TETHER__HOST_MAX + 1];
    memcpy(host, d->u.host, sizeof host);
    /* The connection takes over the winner's epoll registration. */
    struct tether__io handoff = k->io;
    tether__io_forget(&k->io);
    k->fd = -1;
    /* The losers are closed here, before the winner is even attached. */
    dialer_release(d);
    int rv = tether__conn_attach(c, fd, is_unix, is_unix ? NULL : host, false, &handoff);
    if (rv != TETHER_OK) {
        tether__conn_fail(c, rv, "connect to %s: %s", tether__conn_url(c), tether_strerror(rv));
    }
}

/* An attempt failed (or was abandoned): record it, move on. */
static void cand_failed(struct dial_cand *k, int err, uint64_t took)
{
    struct tether__dialer *d = k->d;
    cand_close(k);
    if (k->state == CAND_RUNNING) {
        d->running--;
    }
    k->state = CAND_DONE;
    k->err = err;
    k->took = took;
}

static void cand_on_writable(struct tether__io *io, unsigned revents)
{
    (void)revents;
    struct dial_cand *k = tether__container_of(io, struct dial_cand, io);
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(k->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) {
        soerr = errno;
    }
    if (soerr == 0) {
        dial_won(k);
        return;
    }
    struct tether__dialer *d = k->d;
    cand_failed(k, tether__errno_to_err(soerr), tether__loop_time(d->c->h.loop) - k->started);
    dial_advance(d);
}

static void cand_on_timer(struct tether__tnode *n)
{
    struct dial_cand *k = tether__container_of(n, struct dial_cand, timer);
    struct tether__dialer *d = k->d;
    cand_failed(k, TETHER_ETIMEDOUT, k->limit_ms);
    dial_advance(d);
}

/* This attempt's limit: its share of the time left, never below the floor,
 * and none when the overall deadline comes first anyway. */
static uint64_t cand_limit(const struct tether__dialer *d, int idx)
{
    const tether_conn *c = d->c;
    if (!tether__tnode_active(&c->ex->timer)) {
        return 0; /* no overall deadline (connect_timeout_ms < 0) */
    }
    uint64_t now = c->h.loop->now;
    uint64_t left = c->ex->timer.deadline > now ? c->ex->timer.deadline - now : 0;
    /* SRV targets not tried yet get their shares too. */
    size_t later = d->targets != NULL ? d->ntargets - d->target - 1 : 0;
    uint64_t share = left / ((uint64_t)(d->ncand - idx) + later);
    uint64_t limit = TETHER__MAX(share, (uint64_t)ATTEMPT_FLOOR_MS);
    return limit < left ? limit : 0;
}

static enum start_result cand_start(struct dial_cand *k, int idx)
{
    struct tether__dialer *d = k->d;
    tether_conn *c = d->c;
    const struct sockaddr *sa = (const struct sockaddr *)&k->addr.ss;
    k->started = tether__loop_time(c->h.loop);
    k->state = CAND_RUNNING;
    d->running++;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        cand_failed(k, tether__errno_to_err(errno), 0);
        return START_FAILED;
    }
    k->fd = fd;
    tether__sock_apply_opts(fd, c->cfg, sa->sa_family == AF_UNIX);
    int e = tether__connect_nointr(fd, sa, k->addr.len);
    if (e == 0) {
        dial_won(k);
        return START_CONNECTED;
    }
    if (e != EINPROGRESS && e != EAGAIN) {
        cand_failed(k, tether__errno_to_err(e), 0);
        return START_FAILED;
    }
    /* EAGAIN: a Unix socket whose accept queue is full; it becomes writable
     * once the server accepts. */
    tether__io_init(&k->io, fd, cand_on_writable);
    int rv = tether__io_set(c->h.loop, &k->io, TETHER_EV_WRITE);
    if (rv != TETHER_OK) {
        cand_failed(k, rv, 0);
        return START_FAILED;
    }
    k->limit_ms = cand_limit(d, idx);
    if (k->limit_ms > 0) {
        tether__tnode_start(c->h.loop, &k->timer, k->limit_ms);
    }
    return START_RUNNING;
}

/* Starts candidates until one is in progress (then waits for it, at most
 * the attempt delay), or reports the failure once nothing is left. */
static void dial_advance(struct tether__dialer *d)
{
    tether_loop *loop = d->c->h.loop;
    while (d->next < d->ncand) {
        int idx = d->next++;
        enum start_result r = cand_start(&d->cands[idx], idx);
        if (r == START_CONNECTED) {
            return; /* the dialer is gone */
        }
        if (r == START_RUNNING) {
            if (d->next < d->ncand) {
                tether__tnode_start(loop, &d->stagger, d->delay_ms);
            } else {
                tether__tnode_stop(loop, &d->stagger);
            }
            return;
        }
    }
    tether__tnode_stop(loop, &d->stagger);
    if (d->running == 0) {
        dial_report(d, dial_pick_code(d));
    }
}

static void dial_on_stagger(struct tether__tnode *n)
{
    struct tether__dialer *d = tether__container_of(n, struct tether__dialer, stagger);
    dial_advance(d);
}

/* Takes over an address list and starts connecting. */
static void dial_set_cands(struct tether__dialer *d, struct tether__addr *addrs, size_t n)
{
    if (n == 0) {
        dial_fail_early(d, TETHER_ENOADDR, "no address to connect to");
        return;
    }
    if (n > DIAL_MAX_CANDS) {
        d->dropped = (int)(n - DIAL_MAX_CANDS);
        n = DIAL_MAX_CANDS;
    }
    d->cands = calloc(n, sizeof *d->cands);
    if (d->cands == NULL) {
        dial_fail_early(d, TETHER_ENOMEM, "out of memory");
        return;
    }
    d->ncand = (int)n;
    for (size_t i = 0; i < n; i++) {
        struct dial_cand *k = &d->cands[i];
        k->d = d;
        k->addr = addrs[i];
        k->fd = -1;
        tether__io_init(&k->io, -1, cand_on_writable);
        tether__tnode_init(&k->timer, cand_on_timer);
    }
    dial_advance(d);
}

/* ---- resolution -------------------------------------------------------- */

static void dial_on_resolved(int status, struct tether__addr *addrs, size_t n, const char *detail,
                             void *ud)
{
    struct tether__dialer *d = ud;
    d->dns = NULL;
    if (status != TETHER_OK) {
        dial_fail_early(d, status, detail);
        return;
    }
    dial_set_cands(d, addrs, n);
    free(addrs);
}

/* localhost, localhost. and *.localhost (RFC 6761 section 6.3). */
static bool is_localhost(const char *host)
{
    size_t n = strlen(host);
    if (n > 0 && host[n - 1] == '.') {
        n--;
    }
    static const char lh[] = "localhost";
    size_t l = sizeof lh - 1;
    if (n < l || strncasecmp(host + n - l, lh, l) != 0) {
        return false;
    }
    return n == l || host[n - l - 1] == '.';
}

static void addr_set(struct tether__addr *a, int af, const void *ip, int port)
{
    memset(a, 0, sizeof *a);
    if (af == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&a->ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        memcpy(&sin->sin_addr, ip, sizeof sin->sin_addr);
        a->len = sizeof *sin;
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a->ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        memcpy(&sin6->sin6_addr, ip, sizeof sin6->sin6_addr);
        a->len = sizeof *sin6;
    }
}

static unsigned clamp_delay(int ms)
{
    if (ms < ATTEMPT_DELAY_MIN_MS) {
        return ATTEMPT_DELAY_MIN_MS;
    }
    if (ms > ATTEMPT_DELAY_MAX_MS) {
        return ATTEMPT_DELAY_MAX_MS;
    }
    return (unsigned)ms;
}

/* Starts dialling d->u: a numeric address or Unix path, localhost, or a
 * name to resolve. Failures end the dial (or, for an SRV target, move on
 * to the next target) from here or later. */
static void dial_host(struct tether__dialer *d)
{
    const struct tether__url *u = &d->u;
    tether_conn *c = d->c;
    int af = tether__family_af(c->cfg->o.family);
    struct tether__addr one;
    int rv = tether__url_sockaddr(u, &one.ss, &one.len);
    if (rv == TETHER_OK) {
        int fam = one.ss.ss_family;
        if (af != AF_UNSPEC && fam != AF_UNIX && fam != af) {
            char detail[TETHER__HOST_MAX + 64];
            snprintf(detail, sizeof detail, "%s is not an %s address", u->host,
                     af == AF_INET ? "IPv4" : "IPv6");
            dial_fail_early(d, TETHER_ENOADDR, detail);
            return;
        }
        dial_set_cands(d, &one, 1);
        return;
    }
    d->named = true;
    if (is_localhost(u->host)) {
        /* Loopback needs no DNS server, and RFC 6761 says not to ask one.
         * IPv6 first, as RFC 6724 orders them. */
        struct tether__addr lo[2];
        size_t n = 0;
        if (af != AF_INET) {
            addr_set(&lo[n++], AF_INET6, &in6addr_loopback, u->port);
        }
        if (af != AF_INET6) {
            struct in_addr v4 = {.s_addr = htonl(INADDR_LOOPBACK)};
            addr_set(&lo[n++], AF_INET, &v4, u->port);
        }
        dial_set_cands(d, lo, n);
        return;
    }
    tether_error err;
    rv = tether__dns_resolve(&d->dns, c->h.loop, u->host, u->port, af, dial_on_resolved, d, &err);
    if (rv != TETHER_OK) {
        dial_fail_early(d, rv, err.message);
    }
}

/* ---- SRV targets ------------------------------------------------------- */

/* tcp+srv:// and tls+srv://. The SRV records (dns_srv.c, cached for their
 * TTL) come back in RFC 2782 order. Each target in turn is dialled like a
 * tcp:// URL of its name and port, with Happy Eyeballs over its addresses;
 * when every address of a target fails, the next target starts at once.
 * The connect deadline covers the SRV lookup and every target, and the
 * per-attempt share of it counts the targets still waiting. The winner's
 * TLS name is the target's (RFC 6125 and gRPC do the same), unless
 * tether_tls_opts::server_name says otherwise. When every target fails,
 * the error lists each: "all 3 SRV targets failed: a.test:7001 refused;
 * b.test:7002 (host b.test not found); ...". */

static void srv_start_target(struct tether__dialer *d)
{
    const struct tether__srv_target *t = &d->targets[d->target];
    free(d->cands);
    d->cands = NULL;
    d->ncand = 0;
    d->dropped = 0;
    d->next = 0;
    d->running = 0;
    memcpy(d->u.host, t->host, sizeof d->u.host);
    d->u.port = t->port;
    d->u.addr_len = 0; /* (host and port changed) */
    dial_host(d);
}

/* Ends an SRV dial that failed (or ran out of time): the targets tried so
 * far are in d->fails. */
static void srv_report(struct tether__dialer *d, int code, const char *lead, size_t tried)
{
    tether_conn *c = d->c;
    if (tried == d->ntargets) {
        if (tried == 1) {
            tether__conn_set_err(c, "connect to %s failed: %sthe only SRV target failed: %s",
                                 tether__conn_url(c), lead, d->fails);
        } else {
            tether__conn_set_err(c, "connect to %s failed: %sall %zu SRV targets failed: %s",
                                 tether__conn_url(c), lead, tried, d->fails);
        }
    } else {
        tether__conn_set_err(c, "connect to %s failed: %s%zu of %zu SRV targets tried: %s",
                             tether__conn_url(c), lead, tried, d->ntargets, d->fails);
    }
    free(d->targets);
    d->targets = NULL;
    dialer_release(d);
    tether__conn_end(c, code);
}

/* Appends "host:port what" to the list of failed targets. */
static void srv_note(struct tether__dialer *d, const char *what)
{
    size_t used = strlen(d->fails);
    if (used + 1 < sizeof d->fails) {
        /* Truncated when long: the error message has a limit anyway. */
        int w = snprintf(d->fails + used, sizeof d->fails - used, "%s%.120s:%d %.120s",
                         used > 0 ? "; " : "", d->u.host, d->u.port, what);
        (void)w;
    }
}

/* The current target failed: code is why, what says how. */
static void srv_target_failed(struct tether__dialer *d, int code, const char *what)
{
    srv_note(d, what);
    d->srv_code = code_better(d->srv_code, code);
    if (++d->target < d->ntargets) {
        srv_start_target(d);
        return;
    }
    srv_report(d, d->srv_code, "", d->ntargets);
}

static void dial_on_srv(int status, struct tether__srv_target *targets, size_t n,
                        const char *detail, void *ud)
{
    struct tether__dialer *d = ud;
    d->srv = NULL;
    if (status != TETHER_OK) {
        dial_fail_early(d, status, detail);
        return;
    }
    d->targets = targets;
    d->ntargets = n;
    d->target = 0;
    srv_start_target(d);
}

int tether__dial_dialer(tether_conn *c, const struct tether__url *u)
{
    if (tether__dial_arm(c) != TETHER_OK) { /* before any candidate: cand_limit() shares it out */
        return TETHER_ENOMEM;
    }
    struct tether__dialer *d = calloc(1, sizeof *d);
    if (d == NULL) {
        return TETHER_ENOMEM;
    }
    d->c = c;
    d->u = *u;
    d->delay_ms = clamp_delay(c->cfg->o.attempt_delay_ms);
    tether__pending_init(&d->free_pend, dialer_free_cb);
    tether__tnode_init(&d->stagger, dial_on_stagger);
    c->ex->dialer = d; /* (dial_arm() made c->ex) */
    if (!u->srv) {
        dial_host(d);
        return TETHER_OK;
    }
    memcpy(d->srv_name, u->host, sizeof d->srv_name);
    tether_error err;
    int rv = tether__srv_resolve(&d->srv, c->h.loop, u->host, dial_on_srv, d, &err);
    if (rv != TETHER_OK) {
        dial_fail_early(d, rv, err.message);
    }
    return TETHER_OK;
}

/* The connect deadline passed while SRV targets were being tried. */
static void srv_timeout(struct tether__dialer *d, uint64_t now)
{
    tether_conn *c = d->c;
    if (d->dns != NULL) {
        srv_note(d, "(resolving it timed out)");
    } else {
        uint64_t deadline = c->ex->timer.deadline < now ? c->ex->timer.deadline : now;
        for (int i = 0; i < d->ncand; i++) {
            struct dial_cand *k = &d->cands[i];
            if (k->state == CAND_RUNNING) {
                cand_failed(k, TETHER_ETIMEDOUT, deadline - k->started);
            }
        }
        char what[TETHER_ERROR_MSG_MAX];
        target_outcome(d, what, sizeof what);
        srv_note(d, what);
    }
    char lead[64];
    snprintf(lead, sizeof lead, "timed out after %d ms (connect timeout); ",
             c->cfg->o.connect_timeout_ms);
    int code = d->dns != NULL && d->target == 0 ? TETHER_EDNSTIMEDOUT : TETHER_ETIMEDOUT;
    srv_report(d, code, lead, d->target + 1);
}

void tether__dial_timeout(tether_conn *c)
{
    struct tether__dialer *d = c->ex->dialer;
    uint64_t now = c->h.loop->now;
    if (d->srv != NULL) {
        char detail[TETHER__HOST_MAX + 96];
        snprintf(detail, sizeof detail, "SRV lookup of %s timed out after %d ms (connect timeout)",
                 d->srv_name, c->cfg->o.connect_timeout_ms);
        dial_fail_early(d, TETHER_EDNSTIMEDOUT, detail);
        return;
    }
    if (d->targets != NULL) {
        srv_timeout(d, now);
        return;
    }
    if (d->dns != NULL) {
        /* The overall deadline passed before the name was resolved: that
         * is a DNS timeout as far as the caller can tell. */
        char detail[TETHER__HOST_MAX + 96];
        snprintf(detail, sizeof detail, "resolving %s timed out after %d ms (connect timeout)",
                 d->u.host, c->cfg->o.connect_timeout_ms);
        dial_fail_early(d, TETHER_EDNSTIMEDOUT, detail);
        return;
    }
    /* Attempts still running ran until the deadline. */
    uint64_t deadline = c->ex->timer.deadline < now ? c->ex->timer.deadline : now;
    for (int i = 0; i < d->ncand; i++) {
        struct dial_cand *k = &d->cands[i];
        if (k->state == CAND_RUNNING) {
            cand_failed(k, TETHER_ETIMEDOUT, deadline - k->started);
        }
    }
    dial_report(d, TETHER_ETIMEDOUT);
}

void tether__dial_cancel(tether_conn *c)
{
    if (c->ex != NULL && c->ex->dialer != NULL) {
        dialer_release(c->ex->dialer);
    } else if (c->tr == NULL && c->io.fd >= 0) {
        /* A direct dial's socket. Taken out of the epoll set first: a
         * child forked meanwhile would keep it open, and registered. */
        tether__io_stop(c->h.loop, &c->io);
        close(c->io.fd);
        c->io.fd = -1;
    }
}
