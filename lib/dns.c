/* SPDX-License-Identifier: MIT */
/* Asynchronous name resolution with c-ares 1.18, driven by the loop.
 *
 * One channel per loop, created on the first lookup. c-ares tells us which
 * sockets it wants watched through ARES_OPT_SOCK_STATE_CB; each becomes a
 * loop I/O watcher whose readiness goes to ares_process_fd(). c-ares'
 * retransmission and timeout deadlines are followed by one loop timer:
 * ares_timeout() is asked for the next deadline once per loop iteration,
 * just before the loop blocks (it walks every query, so asking after every
 * packet would make a burst of lookups quadratic). When the timer fires,
 * ares_process_fd(ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD) expires what is due.
 *
 * c-ares can complete a lookup from inside any call into it (a hosts-file
 * hit completes inside ares_getaddrinfo itself), so completions only store
 * the result and queue the request on the loop's pending queue; the
 * caller's callback runs from there. The socket-state callback only
 * updates epoll and never calls back into c-ares, as c-ares requires.
 *
 * c-ares 1.18 has no way to cancel a single query. A cancelled request is
 * therefore only marked: its query finishes in the background and the
 * answer is dropped when it arrives. tether_loop_free() destroys the
 * channel, which ends whatever is still outstanding. */
#include "dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DNS_DEFAULT_TIMEOUT_MS 2000
#define DNS_DEFAULT_TRIES 2
#define DNS_MAX_SERVERS 16
/* Receive buffer asked for on c-ares' sockets (the kernel caps it at
 * net.core.rmem_max). c-ares sends a whole round of queries or
 * retransmissions without reading in between; a nearby resolver answers
 * meanwhile, and a default buffer (about 270 answers) drops the rest,
 * turning a burst of lookups into DNS timeouts. Memory is only used while
 * answers wait to be read. */
#define DNS_RCVBUF (4 * 1024 * 1024)

/* A socket c-ares asked us to watch. Watchers of closed sockets are kept
 * on a retired list until the loop's current dispatch is over, because the
 * epoll batch being dispatched may still point at them. */
struct dns_sock {
    struct dns_sock *next;
    struct tether__dns *dns;
    struct tether__io io;
};

struct tether__dns {
    struct tether__loop_ext ext; /* registered with the loop, which frees it */
    tether_loop *loop;
    ares_channel ch;
    struct dns_sock *socks;   /* watched sockets */
    struct dns_sock *retired; /* closed; freed by `reap` */
    struct tether__pending reap;
    struct tether__tnode timer;   /* c-ares' next deadline */
    struct tether__flush resched; /* re-reads that deadline before the loop blocks */
    size_t reqs;                  /* live requests, delivered or not */
    int timeout_ms;
    int tries;
    bool destroying;
};

struct tether__dns_req {
    struct tether__dns *dns;
    tether__dns_cb cb;
    void *ud;
    struct tether__pending pend; /* delivers the result */
    bool cancelled;              /* the caller is gone; drop the answer */
    bool done;                   /* c-ares has answered; pend is queued */
    int family;
    int port;
    uint64_t started;
    int status; /* TETHER_E* once done */
    struct tether__addr *addrs;
    size_t naddrs;
    char detail[160];
    char host[]; /* the name looked up */
};

/* ---- library initialisation ----------------------------------------------- */

int tether__dns_test_flags;

static pthread_once_t dns_once = PTHREAD_ONCE_INIT;
static int dns_lib_status = ARES_SUCCESS;

static void dns_lib_init(void)
{
    /* Process-wide and not thread-safe in c-ares 1.18, hence the once. It
     * is never undone: ares_library_cleanup() would break other users of
     * c-ares in the same process. */
    dns_lib_status = ares_library_init(ARES_LIB_INIT_ALL);
}

/* ---- server list ---------------------------------------------------------- */

/* Parses one "IP", "IP:PORT", "[IPv6]" or "[IPv6]:PORT" token. */
static int dns_parse_server(const char *tok, size_t len, struct ares_addr_port_node *out)
{
    char buf[INET6_ADDRSTRLEN + 16];
    while (len > 0 && isspace((unsigned char)*tok)) {
        tok++;
        len--;
    }
    while (len > 0 && isspace((unsigned char)tok[len - 1])) {
        len--;
    }
    if (len == 0 || len >= sizeof buf) {
        return TETHER_EINVAL;
    }
    memcpy(buf, tok, len);
    buf[len] = '\0';
    char *host = buf;
    char *port = NULL;
    if (buf[0] == '[') {
        char *close = strchr(buf, ']');
        if (close == NULL) {
            return TETHER_EINVAL;
        }
        *close = '\0';
        host = buf + 1;
        if (close[1] == ':') {
            port = close + 2;
        } else if (close[1] != '\0') {
            return TETHER_EINVAL;
        }
    } else {
        char *colon = strchr(buf, ':');
        if (colon != NULL && strchr(colon + 1, ':') == NULL) {
            /* Exactly one colon: IPv4 with a port. More: a bare IPv6. */
            *colon = '\0';
            port = colon + 1;
        }
    }
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, host, &out->addr.addr4) == 1 && buf[0] != '[') {
        out->family = AF_INET;
    } else if (inet_pton(AF_INET6, host, &out->addr.addr6) == 1) {
        out->family = AF_INET6;
    } else {
        return TETHER_EINVAL;
    }
    int p = 0;
    if (port != NULL) {
        if (*port == '\0') {
            return TETHER_EINVAL;
        }
        for (const char *s = port; *s != '\0'; s++) {
            if (!isdigit((unsigned char)*s) || p > 65535) {
                return TETHER_EINVAL;
            }
            p = p * 10 + (*s - '0');
        }
        if (p < 1 || p > 65535) {
            return TETHER_EINVAL;
        }
    }
    out->udp_port = p; /* 0: the default, 53 */
    out->tcp_port = p;
    return TETHER_OK;
}

/* Parses the whole list into nodes[0..*n), linked in order. */
static int dns_parse_servers(const char *servers, struct ares_addr_port_node *nodes, int *n)
{
    *n = 0;
    const char *s = servers;
    for (;;) {
        const char *comma = strchr(s, ',');
        size_t len = comma != NULL ? (size_t)(comma - s) : strlen(s);
        if (*n == DNS_MAX_SERVERS) {
            return TETHER_EINVAL;
        }
        if (dns_parse_server(s, len, &nodes[*n]) != TETHER_OK) {
            return TETHER_EINVAL;
        }
        if (*n > 0) {
            nodes[*n - 1].next = &nodes[*n];
        }
        (*n)++;
        if (comma == NULL) {
            break;
        }
        s = comma + 1;
    }
    return TETHER_OK;
}

int tether__dns_loop_opts_check(const tether_loop_opts *o)
{
    struct ares_addr_port_node nodes[DNS_MAX_SERVERS];
    int n;
    if (o->dns_timeout_ms < 0 || o->dns_tries < 0) {
        return TETHER_EINVAL;
    }
    if (o->dns_servers == NULL) {
        return TETHER_OK;
    }
    return dns_parse_servers(o->dns_servers, nodes, &n);
}

/* ---- the channel and the loop ----------------------------------------------- */

static void dns_resched_cb(struct tether__flush *f);

/* Asks for the timer to follow c-ares' next deadline before the loop blocks. */
static void dns_resched(struct tether__dns *dns)
{
    if (!dns->destroying) {
        tether__flush_queue(dns->loop, &dns->resched);
    }
}

static void dns_resched_cb(struct tether__flush *f)
{
    struct tether__dns *dns = tether__container_of(f, struct tether__dns, resched);
    struct timeval tv;
    struct timeval *t = ares_timeout(dns->ch, NULL, &tv);
    if (t == NULL) {
        tether__tnode_stop(dns->loop, &dns->timer);
        return;
    }
    /* Round up: firing a fraction of a millisecond early would find nothing
     * due and spin until c-ares' clock catches up. */
    uint64_t ms = (uint64_t)t->tv_sec * 1000u + ((uint64_t)t->tv_usec + 999u) / 1000u;
    tether__tnode_start(dns->loop, &dns->timer, ms);
}

static void dns_on_timer(struct tether__tnode *n)
{
    struct tether__dns *dns = tether__container_of(n, struct tether__dns, timer);
    ares_process_fd(dns->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    dns_resched(dns);
}

static void dns_on_io(struct tether__io *io, unsigned revents)
{
    struct dns_sock *s = tether__container_of(io, struct dns_sock, io);
    struct tether__dns *dns = s->dns;
    ares_socket_t rfd = (revents & TETHER_EV_READ) ? io->fd : ARES_SOCKET_BAD;
    ares_socket_t wfd = (revents & TETHER_EV_WRITE) ? io->fd : ARES_SOCKET_BAD;
    ares_process_fd(dns->ch, rfd, wfd);
    dns_resched(dns);
}

static void dns_reap_cb(struct tether__pending *p)
{
    struct tether__dns *dns = tether__container_of(p, struct tether__dns, reap);
    struct dns_sock *s = dns->retired;
    dns->retired = NULL;
    while (s != NULL) {
        struct dns_sock *next = s->next;
        free(s);
        s = next;
    }
}

/* c-ares opened, changed or is about to close one of its sockets. Only
 * epoll is touched here: calling into c-ares is not allowed. */
static void dns_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct tether__dns *dns = data;
    struct dns_sock **link = &dns->socks;
    while (*link != NULL && (*link)->io.fd != fd) {
        link = &(*link)->next;
    }
    struct dns_sock *s = *link;
    if (!readable && !writable) {
        if (s != NULL) {
            tether__io_stop(dns->loop, &s->io);
            *link = s->next;
            s->next = dns->retired;
            dns->retired = s;
            if (!dns->destroying) {
                tether__pending_queue(dns->loop, &dns->reap);
            }
        }
        return;
    }
    if (s == NULL) {
        s = calloc(1, sizeof *s);
        if (s == NULL) {
            /* Unwatched, the socket's queries end by timeout: the timer
             * keeps running whatever happens to the sockets. */
            return;
        }
        s->dns = dns;
        tether__io_init(&s->io, fd, dns_on_io);
        s->next = dns->socks;
        dns->socks = s;
    }
    unsigned ev = (readable ? TETHER_EV_READ : 0u) | (writable ? TETHER_EV_WRITE : 0u);
    tether__io_set(dns->loop, &s->io, ev);
}

static const char dns_ext_key; /* its address identifies the resolver's loop state */

/* The loop's resolver state, or NULL before the first lookup. */
static struct tether__dns *dns_of(const tether_loop *loop)
{
    struct tether__loop_ext *e = tether__loop_ext_find(loop, &dns_ext_key);
    return e != NULL ? tether__container_of(e, struct tether__dns, ext) : NULL;
}

static void dns_ext_cleanup(tether_loop *loop, struct tether__loop_ext *ext);

/* Creates the loop's channel on first use. */
static int dns_get(tether_loop *loop, struct tether__dns **out, tether_error *err)
{
    struct tether__dns *have = dns_of(loop);
    if (have != NULL) {
        *out = have;
        return TETHER_OK;
    }
    pthread_once(&dns_once, dns_lib_init);
    if (dns_lib_status != ARES_SUCCESS) {
        return tether__set_error(err, TETHER_EDNS, "cannot initialise c-ares: %s",
                                 ares_strerror(dns_lib_status));
    }
    struct tether__dns *dns = calloc(1, sizeof *dns);
    if (dns == NULL) {
        return tether__set_error(err, TETHER_ENOMEM, "out of memory");
    }
    dns->loop = loop;
    dns->timeout_ms =
        loop->opts.dns_timeout_ms > 0 ? loop->opts.dns_timeout_ms : DNS_DEFAULT_TIMEOUT_MS;
    dns->tries = loop->opts.dns_tries > 0 ? loop->opts.dns_tries : DNS_DEFAULT_TRIES;
    tether__pending_init(&dns->reap, dns_reap_cb);
    tether__tnode_init(&dns->timer, dns_on_timer);
    tether__flush_init(&dns->resched, dns_resched_cb);

    /* Everything else (name servers, search domains, ndots, lookup order
     * "fb": /etc/hosts first, then DNS) comes from the system files. */
    struct ares_options o;
    memset(&o, 0, sizeof o);
    o.sock_state_cb = dns_sock_state;
    o.sock_state_cb_data = dns;
    o.timeout = dns->timeout_ms;
    o.tries = dns->tries;
    o.socket_receive_buffer_size = DNS_RCVBUF;
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_RCVBUF;
    if (tether__dns_test_flags != 0) {
        o.flags = tether__dns_test_flags;
        mask |= ARES_OPT_FLAGS;
    }
    int st = ares_init_options(&dns->ch, &o, mask);
    if (st != ARES_SUCCESS) {
        free(dns);
        tether__log(TETHER_LOG_ERROR, "cannot create a DNS resolver: %s", ares_strerror(st));
        return tether__set_error(err, st == ARES_ENOMEM ? TETHER_ENOMEM : TETHER_EDNS,
                                 "cannot create a DNS resolver: %s", ares_strerror(st));
    }
    if (loop->opts.dns_servers != NULL) {
        struct ares_addr_port_node nodes[DNS_MAX_SERVERS];
        int n;
        /* Validated by tether_loop_new(); checked again for robustness. */
        st = dns_parse_servers(loop->opts.dns_servers, nodes, &n) == TETHER_OK
                 ? ares_set_servers_ports(dns->ch, &nodes[0])
                 : ARES_EBADSTR;
        if (st != ARES_SUCCESS) {
            ares_destroy(dns->ch);
            free(dns);
            return tether__set_error(err, TETHER_EINVAL, "cannot use dns_servers '%s': %s",
                                     loop->opts.dns_servers, ares_strerror(st));
        }
    }
    dns->ext.key = &dns_ext_key;
    dns->ext.cleanup = dns_ext_cleanup;
    tether__loop_ext_add(loop, &dns->ext);
    *out = dns;
    return TETHER_OK;
}

/* The loop is being freed: destroys the channel. Queries still in flight
 * belong to connections that no longer exist: they are dropped. */
static void dns_ext_cleanup(tether_loop *loop, struct tether__loop_ext *ext)
{
    struct tether__dns *dns = tether__container_of(ext, struct tether__dns, ext);
    /* Outstanding queries complete with ARES_EDESTRUCTION and their closing
     * sockets are retired; nothing may be queued on a loop being freed. */
    dns->destroying = true;
    ares_destroy(dns->ch);
    tether__tnode_stop(loop, &dns->timer);
    tether__pending_cancel(loop, &dns->reap);
    dns_reap_cb(&dns->reap);
    while (dns->socks != NULL) {
        struct dns_sock *s = dns->socks;
        dns->socks = s->next;
        tether__io_stop(loop, &s->io);
        free(s);
    }
    /* The flush list is walked once more by nobody, but keep the loop's
     * list free of dangling nodes all the same. */
    tether__flush_cancel(loop, &dns->resched);
    free(dns);
}

int tether__dns_channel(tether_loop *loop, void **out_channel, tether_error *err)
{
    struct tether__dns *dns;
    int rv = dns_get(loop, &dns, err);
    *out_channel = rv == TETHER_OK ? (void *)dns->ch : NULL;
    return rv;
}

void tether__dns_kick(tether_loop *loop)
{
    struct tether__dns *dns = dns_of(loop);
    if (dns != NULL) {
        dns_resched(dns);
    }
}

size_t tether__dns_inflight(const tether_loop *loop)
{
    const struct tether__dns *dns = dns_of(loop);
    return dns != NULL ? dns->reqs : 0;
}

bool tether__dns_exists(const tether_loop *loop)
{
    return dns_of(loop) != NULL;
}

/* ---- address lists ---------------------------------------------------------- */

static bool addr_equal(const struct tether__addr *a, const struct tether__addr *b)
{
    return a->len == b->len && memcmp(&a->ss, &b->ss, a->len) == 0;
}

size_t tether__addrs_order(struct tether__addr *addrs, size_t n)
{
    /* Remove duplicates, keeping the first (most preferred) copy. */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        bool dup = false;
        for (size_t j = 0; j < m && !dup; j++) {
            dup = addr_equal(&addrs[i], &addrs[j]);
        }
        if (!dup) {
            if (m != i) {
                addrs[m] = addrs[i];
            }
            m++;
        }
    }
    if (m < 3) {
        return m; /* already interleaved */
    }
    /* Interleave: first family, other family, first family... keeping the
     * order within each family; when one family runs out, the rest of the
     * other follows (RFC 8305 section 4, First Address Family Count 1). */
    struct tether__addr *tmp = malloc(m * sizeof *tmp);
    if (tmp == NULL) {
        return m; /* the preference order is still a valid order */
    }
    sa_family_t first = addrs[0].ss.ss_family;
    size_t a = 0, b = 0, k = 0;
    while (k < m) {
        bool want_first = (k % 2) == 0;
        size_t *cursor = want_first ? &a : &b;
        while (*cursor < m && (addrs[*cursor].ss.ss_family == first) != want_first) {
            (*cursor)++;
        }
        if (*cursor >= m) {
            /* This family is exhausted: take the other one. */
            cursor = want_first ? &b : &a;
            while (*cursor < m && (addrs[*cursor].ss.ss_family == first) == want_first) {
                (*cursor)++;
            }
        }
        tmp[k++] = addrs[(*cursor)++];
    }
    memcpy(addrs, tmp, m * sizeof *tmp);
    free(tmp);
    return m;
}

/* ---- lookups ---------------------------------------------------------------- */

static void dns_req_free(struct tether__dns_req *r)
{
    r->dns->reqs--;
    free(r->addrs);
    free(r);
}

static const char *family_words(int family)
{
    switch (family) {
    case AF_INET:
        return "IPv4 address";
    case AF_INET6:
        return "IPv6 address";
    default:
        return "IPv4 or IPv6 address";
    }
}

/* Turns c-ares' answer into the request's status, addresses and detail. */
static void dns_req_set_result(struct tether__dns_req *r, int st, int timeouts,
                               struct ares_addrinfo *res)
{
    r->status = TETHER_OK;
    r->detail[0] = '\0';
    if (st == ARES_SUCCESS && res != NULL) {
        size_t n = 0;
        for (struct ares_addrinfo_node *nd = res->nodes; nd != NULL; nd = nd->ai_next) {
            n++;
        }
        if (n > 0) {
            r->addrs = calloc(n, sizeof *r->addrs);
            if (r->addrs == NULL) {
                r->status = TETHER_ENOMEM;
                snprintf(r->detail, sizeof r->detail, "out of memory resolving %s", r->host);
                return;
            }
        }
        size_t k = 0;
        for (struct ares_addrinfo_node *nd = res->nodes; nd != NULL; nd = nd->ai_next) {
            if ((nd->ai_family != AF_INET && nd->ai_family != AF_INET6) ||
                nd->ai_addrlen > sizeof(struct sockaddr_storage) ||
                (r->family != AF_UNSPEC && nd->ai_family != r->family)) {
                continue;
            }
            struct tether__addr *a = &r->addrs[k++];
            memcpy(&a->ss, nd->ai_addr, nd->ai_addrlen);
            a->len = (socklen_t)nd->ai_addrlen;
            if (nd->ai_family == AF_INET) {
                ((struct sockaddr_in *)&a->ss)->sin_port = htons((uint16_t)r->port);
            } else {
                ((struct sockaddr_in6 *)&a->ss)->sin6_port = htons((uint16_t)r->port);
            }
        }
        r->naddrs = tether__addrs_order(r->addrs, k);
        if (r->naddrs == 0) {
            st = ARES_ENODATA;
        }
    }
    if (st == ARES_SUCCESS) {
        return;
    }
    free(r->addrs);
    r->addrs = NULL;
    r->naddrs = 0;
    switch (st) {
    case ARES_ENOTFOUND:
    case ARES_ENONAME:
        r->status = TETHER_ENOTFOUND;
        snprintf(r->detail, sizeof r->detail, "host %s not found", r->host);
        break;
    case ARES_ENODATA:
        r->status = TETHER_ENOADDR;
        snprintf(r->detail, sizeof r->detail, "host %s has no %s", r->host,
                 family_words(r->family));
        break;
    case ARES_ETIMEOUT:
        r->status = TETHER_EDNSTIMEDOUT;
        snprintf(r->detail, sizeof r->detail,
                 "DNS lookup of %s timed out after %llu ms (%d queries unanswered; "
                 "dns_timeout_ms %d, dns_tries %d)",
                 r->host, (unsigned long long)(tether__now_ms() - r->started), timeouts,
                 r->dns->timeout_ms, r->dns->tries);
        break;
    case ARES_EBADNAME:
        r->status = TETHER_EINVAL;
        snprintf(r->detail, sizeof r->detail, "'%s' is not a valid host name", r->host);
        break;
    case ARES_ENOMEM:
        r->status = TETHER_ENOMEM;
        snprintf(r->detail, sizeof r->detail, "out of memory resolving %s", r->host);
        break;
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION:
        r->status = TETHER_ECANCELED;
        snprintf(r->detail, sizeof r->detail, "DNS lookup of %s cancelled", r->host);
        break;
    default:
        /* Server failure, refusal, unreachable servers, malformed answers. */
        r->status = TETHER_EDNS;
        snprintf(r->detail, sizeof r->detail, "DNS lookup of %s failed: %s", r->host,
                 ares_strerror(st));
        break;
    }
}

static void dns_req_deliver(struct tether__pending *p)
{
    struct tether__dns_req *r = tether__container_of(p, struct tether__dns_req, pend);
    struct tether__addr *addrs = r->addrs;
    r->addrs = NULL;
    r->cb(r->status, addrs, r->naddrs, r->detail, r->ud);
    dns_req_free(r);
}

static void dns_on_answer(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    struct tether__dns_req *r = arg;
    if (r->cancelled || r->dns->destroying) {
        /* Nobody waits for it any more. During destruction every request
         * is cancelled: tether_loop_free() runs only without connections. */
        ares_freeaddrinfo(res);
        dns_req_free(r);
        return;
    }
    dns_req_set_result(r, status, timeouts, res);
    ares_freeaddrinfo(res);
    r->done = true;
    /* Possibly inside ares_getaddrinfo() or ares_process_fd(): defer. */
    tether__pending_queue(r->dns->loop, &r->pend);
}

int tether__dns_resolve(struct tether__dns_req **out, tether_loop *loop, const char *host, int port,
                        int family, tether__dns_cb cb, void *ud, tether_error *err)
{
    *out = NULL;
    struct tether__dns *dns;
    int rv = dns_get(loop, &dns, err);
    if (rv != TETHER_OK) {
        return rv;
    }
    size_t hl = strlen(host);
    struct tether__dns_req *r = calloc(1, sizeof *r + hl + 1);
    if (r == NULL) {
        return tether__set_error(err, TETHER_ENOMEM, "out of memory");
    }
    r->dns = dns;
    r->cb = cb;
    r->ud = ud;
    r->family = family;
    r->port = port;
    r->started = tether__now_ms();
    memcpy(r->host, host, hl + 1);
    tether__pending_init(&r->pend, dns_req_deliver);
    dns->reqs++;
    *out = r;

    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    /* May complete (and queue the delivery) before it returns. */
    ares_getaddrinfo(dns->ch, r->host, NULL, &hints, dns_on_answer, r);
    dns_resched(dns);
    return TETHER_OK;
}

void tether__dns_cancel(struct tether__dns_req *req)
{
    if (req == NULL) {
        return;
    }
    if (req->done) {
        tether__pending_cancel(req->dns->loop, &req->pend);
        dns_req_free(req);
    } else {
        req->cancelled = true;
    }
}
