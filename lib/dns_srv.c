/* SPDX-License-Identifier: MIT */
/* DNS SRV lookups on the loop's c-ares channel, their per-loop cache, and
 * the RFC 2782 order in which the dialer tries the targets.
 *
 * c-ares 1.18 (Debian 12) has ares_query() and ares_parse_srv_reply() but
 * not the ares_dns_record API of 1.22, and ares_srv_reply carries no TTL.
 * The TTL is therefore read from the raw answer here (a small walk over the
 * answer section), so that an answer is reused for exactly as long as DNS
 * allows and a fresh lookup happens once it expires: servers added to or
 * removed from DNS are seen by the next dial after the TTL. Failures are
 * not cached.
 *
 * The rules of dns.c apply: a query may complete inside any c-ares call, so
 * completions only store their result and queue the request on the loop's
 * pending queue; a query whose requester cancelled it finishes in the
 * background and is dropped; ARES_EDESTRUCTION (the loop is being freed)
 * only frees the request. */
#include "dns_srv.h"

#include <ares.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dns.h"
#include "random.h"

#define SRV_CLASS_IN 1
#define SRV_TYPE_SRV 33
#define SRV_CACHE_MAX 32 /* names cached per loop */

/* A cached answer, in the order the records came. */
struct srv_entry {
    struct srv_entry *next;
    uint64_t expires; /* loop ms */
    size_t n;
    struct tether__srv_target *t;
    char name[];
};

struct srv_cache {
    struct tether__loop_ext ext; /* registered with the loop, which frees it */
    struct srv_entry *head;      /* most recent first */
    uint64_t queries;
};

struct tether__srv_req {
    tether_loop *loop;
    tether__srv_cb cb;
    void *ud;
    struct tether__pending pend; /* delivers the result */
    bool cancelled;              /* the caller is gone; drop the answer */
    bool done;                   /* the result is set; pend is queued */
    uint64_t started;
    int status;
    struct tether__srv_target *t;
    size_t n;
    char detail[TETHER__HOST_MAX + 160];
    char name[];
};

/* ---- ordering (RFC 2782) ---------------------------------------------------- */

void tether__srv_order(struct tether__srv_target *t, size_t n, uint64_t (*rnd)(void *ud), void *ud)
{
    /* Stable insertion sort by priority, zero weights first within one
     * priority (answers are small). */
    for (size_t i = 1; i < n; i++) {
        struct tether__srv_target x = t[i];
        size_t j = i;
        while (j > 0 &&
               (t[j - 1].priority > x.priority ||
                (t[j - 1].priority == x.priority && t[j - 1].weight > 0 && x.weight == 0))) {
            t[j] = t[j - 1];
            j--;
        }
        t[j] = x;
    }
    for (size_t a = 0; a < n;) {
        size_t b = a;
        while (b < n && t[b].priority == t[a].priority) {
            b++;
        }
        /* Shuffle the zero weights (Fisher-Yates): RFC 2782 leaves their
         * order open, and a fixed one would send every client of an
         * all-zero group to the same target. */
        size_t z = a;
        while (z < b && t[z].weight == 0) {
            z++;
        }
        for (size_t i = z; i > a + 1; i--) {
            size_t j = a + (size_t)(rnd(ud) % (uint64_t)(i - a));
            struct tether__srv_target x = t[i - 1];
            t[i - 1] = t[j];
            t[j] = x;
        }
        /* Weighted selection, one position at a time. */
        /* (b > a: "k < b - 1" rather than "k + 1 < b", which GCC 12 at -O3
         * takes for a loop that may run past the array and warns about,
         * -Waggressive-loop-optimizations.) */
        for (size_t k = a; k < b - 1; k++) {
            uint64_t sum = 0;
            for (size_t j = k; j < b; j++) {
                sum += t[j].weight;
            }
            uint64_t r = rnd(ud) % (sum + 1);
            uint64_t run = 0;
            size_t pick = b - 1;
            for (size_t j = k; j < b; j++) {
                run += t[j].weight;
                if (run >= r) {
                    pick = j;
                    break;
                }
            }
            /* Move the pick to position k, keeping the others' order (so
             * zero weights stay at the front). */
            struct tether__srv_target x = t[pick];
            memmove(&t[k + 1], &t[k], (pick - k) * sizeof *t);
            t[k] = x;
        }
        a = b;
    }
}

static uint64_t srv_rnd(void *ud)
{
    (void)ud;
    return tether__random_u64();
}

/* ---- TTL from the raw answer ------------------------------------------------ */

/* The offset after a (possibly compressed) name at o, or 0 if malformed. */
static size_t skip_name(const unsigned char *m, size_t len, size_t o)
{
    while (o < len) {
        unsigned l = m[o];
        if ((l & 0xc0u) == 0xc0u) {
            return o + 2 <= len ? o + 2 : 0;
        }
        if ((l & 0xc0u) != 0) {
            return 0; /* reserved label types */
        }
        if (l == 0) {
            return o + 1;
        }
        o += 1u + l;
    }
    return 0;
}

static unsigned get16(const unsigned char *p)
{
    return ((unsigned)p[0] << 8) | p[1];
}

int64_t tether__srv_min_ttl(const unsigned char *msg, size_t len)
{
    if (len < 12) {
        return -1;
    }
    unsigned qd = get16(msg + 4);
    unsigned an = get16(msg + 6);
    size_t o = 12;
    for (unsigned i = 0; i < qd; i++) {
        o = skip_name(msg, len, o);
        if (o == 0 || o + 4 > len) {
            return -1;
        }
        o += 4;
    }
    int64_t min = -1;
    for (unsigned i = 0; i < an; i++) {
        o = skip_name(msg, len, o);
        if (o == 0 || o + 10 > len) {
            return -1;
        }
        unsigned type = get16(msg + o);
        uint32_t ttl = ((uint32_t)msg[o + 4] << 24) | ((uint32_t)msg[o + 5] << 16) |
                       ((uint32_t)msg[o + 6] << 8) | msg[o + 7];
        size_t rdlen = get16(msg + o + 8);
        o += 10;
        if (o + rdlen > len) {
            return -1;
        }
        o += rdlen;
        /* RFC 2181 section 8: a TTL with the top bit set is zero. */
        if (ttl > 0x7fffffffu) {
            ttl = 0;
        }
        if (type == SRV_TYPE_SRV && (min < 0 || (int64_t)ttl < min)) {
            min = ttl;
        }
    }
    return min;
}

/* ---- the cache -------------------------------------------------------------- */

static const char srv_ext_key; /* its address identifies the cache */

static void srv_entry_free(struct srv_entry *e)
{
    free(e->t);
    free(e);
}

static void srv_cache_cleanup(tether_loop *loop, struct tether__loop_ext *ext)
{
    (void)loop;
    struct srv_cache *sc = tether__container_of(ext, struct srv_cache, ext);
    while (sc->head != NULL) {
        struct srv_entry *e = sc->head;
        sc->head = e->next;
        srv_entry_free(e);
    }
    free(sc);
}

static struct srv_cache *srv_cache_of(const tether_loop *loop)
{
    struct tether__loop_ext *e = tether__loop_ext_find(loop, &srv_ext_key);
    return e != NULL ? tether__container_of(e, struct srv_cache, ext) : NULL;
}

static struct srv_cache *srv_cache_get(tether_loop *loop)
{
    bool fresh;
    return TETHER__LOOP_EXT_GET(loop, &srv_ext_key, struct srv_cache, ext, srv_cache_cleanup,
                                &fresh);
}

/* The live entry for name, with expired entries dropped on the way. */
static struct srv_entry *srv_cache_find(struct srv_cache *sc, const char *name, uint64_t now)
{
    struct srv_entry **link = &sc->head;
    while (*link != NULL) {
        struct srv_entry *e = *link;
        if (e->expires <= now) {
            *link = e->next;
            srv_entry_free(e);
            continue;
        }
        if (strcasecmp(e->name, name) == 0) {
            return e;
        }
        link = &e->next;
    }
    return NULL;
}

/* Stores a copy of an answer; out of memory only means no caching. */
static void srv_cache_put(struct srv_cache *sc, const char *name,
                          const struct tether__srv_target *t, size_t n, uint64_t expires)
{
    size_t nl = strlen(name);
    struct srv_entry *e = calloc(1, sizeof *e + nl + 1);
    struct tether__srv_target *copy = malloc(n * sizeof *copy);
    if (e == NULL || copy == NULL) {
        free(e);
        free(copy);
        return;
    }
    memcpy(copy, t, n * sizeof *copy);
    memcpy(e->name, name, nl + 1);
    e->t = copy;
    e->n = n;
    e->expires = expires;
    e->next = sc->head;
    sc->head = e;
    /* Bounded: the least recently stored entries go first. */
    size_t count = 0;
    for (struct srv_entry **link = &sc->head; *link != NULL;) {
        struct srv_entry *x = *link;
        if (++count > SRV_CACHE_MAX || (x != e && strcasecmp(x->name, name) == 0)) {
            *link = x->next;
            srv_entry_free(x);
            continue;
        }
        link = &x->next;
    }
}

uint64_t tether__srv_queries(const tether_loop *loop)
{
    const struct srv_cache *sc = srv_cache_of(loop);
    return sc != NULL ? sc->queries : 0;
}

/* ---- lookups ---------------------------------------------------------------- */

static void srv_req_free(struct tether__srv_req *r)
{
    free(r->t);
    free(r);
}

__attribute__((format(printf, 3, 4))) static void srv_fail(struct tether__srv_req *r, int code,
                                                           const char *fmt, ...)
{
    r->status = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->detail, sizeof r->detail, fmt, ap);
    va_end(ap);
}

/* Copies n records for this request and orders them. */
static bool srv_set_targets(struct tether__srv_req *r, const struct tether__srv_target *t, size_t n)
{
    r->t = malloc(n * sizeof *r->t);
    if (r->t == NULL) {
        srv_fail(r, TETHER_ENOMEM, "out of memory looking up the SRV records of %s", r->name);
        return false;
    }
    memcpy(r->t, t, n * sizeof *r->t);
    r->n = n;
    tether__srv_order(r->t, n, srv_rnd, NULL);
    r->status = TETHER_OK;
    return true;
}

/* Turns a successful answer into targets (and a cache entry). */
static void srv_take_answer(struct tether__srv_req *r, const unsigned char *abuf, int alen)
{
    struct ares_srv_reply *reply = NULL;
    int st = ares_parse_srv_reply(abuf, alen, &reply);
    if (st == ARES_ENODATA) {
        srv_fail(r, TETHER_ENOTFOUND, "no SRV records for %s", r->name);
        return;
    }
    if (st != ARES_SUCCESS) {
        srv_fail(r, st == ARES_ENOMEM ? TETHER_ENOMEM : TETHER_EDNS,
                 "malformed SRV answer for %s: %s", r->name, ares_strerror(st));
        return;
    }
    struct tether__srv_target t[TETHER__SRV_MAX_TARGETS];
    size_t n = 0;
    size_t dots = 0;
    for (struct ares_srv_reply *x = reply; x != NULL && n < TETHER__SRV_MAX_TARGETS; x = x->next) {
        size_t hl = x->host != NULL ? strlen(x->host) : 0;
        if (hl > 0 && x->host[hl - 1] == '.') {
            hl--;
        }
        if (hl == 0) {
            dots++; /* the root: "decidedly not available" (RFC 2782) */
            continue;
        }
        if (hl > TETHER__HOST_MAX) {
            continue;
        }
        memcpy(t[n].host, x->host, hl);
        t[n].host[hl] = '\0';
        t[n].priority = x->priority;
        t[n].weight = x->weight;
        t[n].port = x->port;
        n++;
    }
    ares_free_data(reply);
    if (n == 0) {
        if (dots > 0) {
            srv_fail(r, TETHER_ENOTFOUND,
                     "%s: the service is not available (its SRV target is \".\", RFC 2782)",
                     r->name);
        } else {
            srv_fail(r, TETHER_ENOTFOUND, "no SRV records for %s", r->name);
        }
        return;
    }
    int64_t ttl = tether__srv_min_ttl(abuf, (size_t)alen);
    if (ttl > 0) {
        struct srv_cache *sc = srv_cache_of(r->loop);
        if (sc != NULL) {
            uint64_t s =
                (uint64_t)ttl < TETHER__SRV_MAX_TTL_S ? (uint64_t)ttl : TETHER__SRV_MAX_TTL_S;
            srv_cache_put(sc, r->name, t, n, tether__now_ms() + s * 1000u);
        }
    }
    srv_set_targets(r, t, n);
}

static void srv_on_answer(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
    struct tether__srv_req *r = arg;
    if (r->cancelled || status == ARES_EDESTRUCTION) {
        /* Nobody waits for it (during destruction every request is
         * cancelled: the loop is freed only without connections). */
        srv_req_free(r);
        return;
    }
    switch (status) {
    case ARES_SUCCESS:
        srv_take_answer(r, abuf, alen);
        break;
    case ARES_ENODATA:
        srv_fail(r, TETHER_ENOTFOUND, "no SRV records for %s", r->name);
        break;
    case ARES_ENOTFOUND:
    case ARES_ENONAME:
        srv_fail(r, TETHER_ENOTFOUND, "no SRV records for %s (the name does not exist)", r->name);
        break;
    case ARES_ETIMEOUT: {
        char what[96];
        snprintf(what, sizeof what, "%llu ms (%d queries unanswered)",
                 (unsigned long long)(tether__now_ms() - r->started), timeouts);
        srv_fail(r, TETHER_EDNSTIMEDOUT, "SRV lookup of %s timed out after %s", r->name, what);
        break;
    }
    case ARES_EBADNAME:
        srv_fail(r, TETHER_EINVAL, "'%s' is not a valid SRV name", r->name);
        break;
    case ARES_ENOMEM:
        srv_fail(r, TETHER_ENOMEM, "out of memory looking up the SRV records of %s", r->name);
        break;
    default:
        srv_fail(r, TETHER_EDNS, "SRV lookup of %s failed: %s", r->name, ares_strerror(status));
        break;
    }
    r->done = true;
    /* Possibly inside ares_query() or ares_process_fd(): defer. */
    tether__pending_queue(r->loop, &r->pend);
}

static void srv_deliver(struct tether__pending *p)
{
    struct tether__srv_req *r = tether__container_of(p, struct tether__srv_req, pend);
    struct tether__srv_target *t = r->t;
    r->t = NULL;
    r->cb(r->status, t, r->status == TETHER_OK ? r->n : 0, r->detail, r->ud);
    srv_req_free(r);
}

int tether__srv_resolve(struct tether__srv_req **out, tether_loop *loop, const char *name,
                        tether__srv_cb cb, void *ud, tether_error *err)
{
    *out = NULL;
    struct srv_cache *sc = srv_cache_get(loop);
    size_t nl = strlen(name);
    struct tether__srv_req *r = sc != NULL ? calloc(1, sizeof *r + nl + 1) : NULL;
    if (r == NULL) {
        return tether__set_error(err, TETHER_ENOMEM, "out of memory");
    }
    r->loop = loop;
    r->cb = cb;
    r->ud = ud;
    r->started = tether__now_ms();
    memcpy(r->name, name, nl + 1);
    tether__pending_init(&r->pend, srv_deliver);

    struct srv_entry *e = srv_cache_find(sc, name, r->started);
    if (e != NULL) {
        srv_set_targets(r, e->t, e->n);
        r->done = true;
        tether__pending_queue(loop, &r->pend);
        *out = r;
        return TETHER_OK;
    }
    void *ch;
    int rv = tether__dns_channel(loop, &ch, err);
    if (rv != TETHER_OK) {
        free(r);
        return rv;
    }
    sc->queries++;
    *out = r;
    /* May complete (and queue the delivery) before it returns. */
    ares_query((ares_channel)ch, r->name, SRV_CLASS_IN, SRV_TYPE_SRV, srv_on_answer, r);
    tether__dns_kick(loop);
    return TETHER_OK;
}

void tether__srv_cancel(struct tether__srv_req *req)
{
    if (req == NULL) {
        return;
    }
    if (req->done) {
        tether__pending_cancel(req->loop, &req->pend);
        srv_req_free(req);
    } else {
        req->cancelled = true;
    }
}
