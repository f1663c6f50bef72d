/* SPDX-License-Identifier: MIT */
/* Asynchronous name resolution on a loop (c-ares), and the address lists
 * the dialer connects to.
 *
 * Each loop has at most one c-ares channel, created on the first lookup
 * with the loop's DNS options and registered with the loop as per-loop
 * state (struct tether__loop_ext), so tether_loop_free() destroys it. Its
 * sockets are loop I/O watchers and its timeouts one loop timer, so a
 * lookup never blocks the loop thread. Results are always delivered from
 * the loop's pending queue, never from inside tether__dns_resolve(). */
#ifndef TETHER_DNS_H
#define TETHER_DNS_H

#include <sys/socket.h>

#include "loop.h"

/* One address to connect to, port included. */
struct tether__addr {
    struct sockaddr_storage ss;
    socklen_t len;
};

/* An outstanding lookup (opaque). */
struct tether__dns_req;

/* Delivers the outcome of a lookup, exactly once, from the loop's pending
 * queue. On TETHER_OK, addrs holds n >= 1 addresses in connection order (see
 * tether__addrs_order) and the callee owns it (free()). On failure addrs is
 * NULL and detail names the cause in words that follow "connect to URL
 * failed: ", e.g. "host db.test not found"; detail is borrowed until the
 * callback returns. Codes: TETHER_ENOTFOUND (NXDOMAIN), TETHER_ENOADDR (no
 * address of the requested family), TETHER_EDNSTIMEDOUT (no server
 * answered), TETHER_EDNS (any other DNS failure), TETHER_EINVAL (not a
 * valid DNS name), TETHER_ENOMEM. The request is freed when this returns. */
typedef void (*tether__dns_cb)(int status, struct tether__addr *addrs, size_t n, const char *detail,
                               void *ud);

/* Starts resolving host for port. family is AF_UNSPEC (A and AAAA),
 * AF_INET or AF_INET6. On TETHER_OK, cb runs exactly once later unless the
 * request is cancelled first, and *out receives the request. On failure
 * (the channel cannot be created, out of memory) cb never runs and err, if
 * not NULL, names the problem. */
int tether__dns_resolve(struct tether__dns_req **out, tether_loop *loop, const char *host, int port,
                        int family, tether__dns_cb cb, void *ud, tether_error *err);

/* Cancels a request whose callback has not run yet: the callback will not
 * run. c-ares 1.18 cannot cancel one query, so the query itself finishes
 * (or times out) in the background and its answer is dropped. */
void tether__dns_cancel(struct tether__dns_req *req);

/* The loop's c-ares channel (an ares_channel), created on first use with
 * the loop's DNS options, for lookups other than addresses (dns_srv.c).
 * Queries on it must follow this file's rules: completions are deferred to
 * the pending queue, an ARES_EDESTRUCTION completion (the loop is being
 * freed) only frees the query's own memory, and after starting a query the
 * caller calls tether__dns_kick(). Fills err on failure. */
int tether__dns_channel(tether_loop *loop, void **out_channel, tether_error *err);

/* Makes the loop's DNS timer follow c-ares' deadlines after a query was
 * started on the channel. */
void tether__dns_kick(tether_loop *loop);

/* Validates the DNS fields of loop options: dns_timeout_ms and dns_tries
 * not negative, dns_servers NULL or a list of "IP", "IP:PORT" or
 * "[IPv6]:PORT", comma-separated. Returns TETHER_OK or TETHER_EINVAL.
 * tether_loop_new() calls it before it builds the loop (toplevel.c). */
int tether__dns_loop_opts_check(const tether_loop_opts *o);

/* Puts an address list into the order in which Happy Eyeballs (RFC 8305,
 * section 4) tries it: duplicates removed, then the two families
 * interleaved, starting with the family of the first address (the list is
 * expected in RFC 6724 preference order, as c-ares sorts it). Returns the
 * new length. */
size_t tether__addrs_order(struct tether__addr *addrs, size_t n);

/* The number of requests not freed yet: waiting for c-ares, waiting for
 * delivery, or cancelled but still in c-ares (for tests). */
size_t tether__dns_inflight(const tether_loop *loop);

/* Whether the loop's channel has been created (for tests: a lookup that
 * never needed DNS must not create it). */
bool tether__dns_exists(const tether_loop *loop);

/* For tests only: ARES_FLAG_* bits for channels created after it is set,
 * e.g. ARES_FLAG_USEVC to exercise the TCP path (write interest, partial
 * writes) against a local server. 0 normally. */
extern int tether__dns_test_flags;

#endif /* TETHER_DNS_H */
