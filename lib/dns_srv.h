/* SPDX-License-Identifier: MIT */
/* DNS SRV lookups (RFC 2782) for tcp+srv:// and tls+srv:// URLs.
 *
 * A lookup asks the loop's c-ares channel (dns.c) for the SRV records of a
 * name, keeps the answer in a small per-loop cache for as long as the
 * records' TTL allows, and hands the dialer the targets in the order it
 * should try them: lowest priority first, and within one priority by
 * repeated weighted random selection. Results are always delivered from the
 * loop's pending queue, never from inside tether__srv_resolve(). */
#ifndef TETHER_DNS_SRV_H
#define TETHER_DNS_SRV_H

#include <stdint.h>

#include "loop.h"
#include "url.h"

/* Targets beyond this many in one answer are ignored. */
#define TETHER__SRV_MAX_TARGETS 64

/* Answers are cached for their smallest SRV TTL, but never longer. */
#define TETHER__SRV_MAX_TTL_S 86400u

/* One SRV record. */
struct tether__srv_target {
    uint16_t priority;
    uint16_t weight;
    uint16_t port;
    char host[TETHER__HOST_MAX + 1]; /* the target, without a final '.' */
};

/* An outstanding SRV lookup (opaque). */
struct tether__srv_req;

/* Delivers the outcome of a lookup, exactly once, from the loop's pending
 * queue. On TETHER_OK, targets holds n >= 1 records in the order to try
 * them (tether__srv_order, with the library's random source) and the callee
 * owns it (free()). On failure targets is NULL and detail (borrowed until
 * the callback returns) names the cause in words that follow "connect to
 * URL failed: ", e.g. "no SRV records for _x._tcp.test". Codes:
 * TETHER_ENOTFOUND (no such name, no SRV records, or the service is
 * declared unavailable by a "." target), TETHER_EDNSTIMEDOUT, TETHER_EDNS,
 * TETHER_EINVAL, TETHER_ENOMEM. */
typedef void (*tether__srv_cb)(int status, struct tether__srv_target *targets, size_t n,
                               const char *detail, void *ud);

/* Starts an SRV lookup of name (an owner name such as "_svc._tcp.test"),
 * answered from the cache while a previous answer's TTL lasts. On TETHER_OK
 * cb runs exactly once later unless the request is cancelled first, and
 * *out receives the request. On failure cb never runs and err names the
 * problem. */
int tether__srv_resolve(struct tether__srv_req **out, tether_loop *loop, const char *name,
                        tether__srv_cb cb, void *ud, tether_error *err);

/* Cancels a request whose callback has not run yet: it will not run. */
void tether__srv_cancel(struct tether__srv_req *req);

/* Puts targets in the order RFC 2782 says to try them: ascending priority;
 * within one priority, zero weights first (shuffled among themselves), then
 * repeatedly: pick a uniform number r in [0, sum of the remaining weights]
 * and take the first remaining record whose running weight sum is >= r. A
 * zero-weight record is thus picked only when r is 0, which is what RFC 2782
 * asks ("a very small chance") and spreads load evenly when every weight is
 * zero. rnd returns uniform 64-bit random numbers (injected by tests). */
void tether__srv_order(struct tether__srv_target *t, size_t n, uint64_t (*rnd)(void *ud), void *ud);

/* The smallest TTL of the SRV records in the answer section of a raw DNS
 * message, or -1 if the message cannot be parsed or has none. */
int64_t tether__srv_min_ttl(const unsigned char *msg, size_t len);

/* For tests: how many SRV queries this loop sent to DNS (cache misses). */
uint64_t tether__srv_queries(const tether_loop *loop);

#endif /* TETHER_DNS_SRV_H */
