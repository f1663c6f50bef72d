/* SPDX-License-Identifier: MIT */
/* Internal side of reconnecting clients (reconnect.c): the option checks
 * (client_opts.c) and the backoff schedule (backoff.c) as pure functions, so that the unit tests
 * can check it with their own random numbers and clock. */
#ifndef TETHER_RECONNECT_INT_H
#define TETHER_RECONNECT_INT_H

#include "internal.h"
#include "random.h" /* tether__random_unit(), for the tests of the schedule */

/* gRPC's connection backoff (grpc/grpc doc/connection-backoff.md). */
struct tether__backoff {
    double initial_ms;
    double multiplier;
    double jitter; /* 0..1 */
    double max_ms;
    double current_ms; /* the un-jittered backoff of the last attempt; 0 after a reset */
};

void tether__backoff_init(struct tether__backoff *b, uint32_t initial_ms, double multiplier,
                          double jitter, uint32_t max_ms);

/* The next attempt uses the initial backoff again. */
void tether__backoff_reset(struct tether__backoff *b);

/* An attempt starts: advances the schedule and returns its backoff with
 * the jitter applied, in ms. r is a uniform random number in [0, 1): 0
 * gives the lowest value (backoff × (1 − jitter)), 0.5 the backoff itself.
 * Never negative. The next attempt starts this long after the start of
 * this one (or at once, if this one took longer). */
uint32_t tether__backoff_next(struct tether__backoff *b, double r);

/* Checks the options of tether_client_new() (client_opts.c): TETHER_OK, or
 * TETHER_EINVAL with a message in err naming the option. */
int tether__client_check_opts(const tether_client_opts *o, tether_error *err);

/* ---- delivery on a client (client_delivery.c, issue 14) ----------------- */

struct tether__cdone;   /* one tether_client_send_cb() */
struct tether__cdone_q; /* a client's reported completions */

/* tether_client_send() with a completion record (NULL for none), which the
 * client then owns: it reports through tether__cdone_written() or
 * tether__cdone_failed(). On error the record stays the caller's. */
int tether__client_send(tether_client *cl, const void *data, size_t len,
                        struct tether__cdone *done);

/* The client's completion queue slot (allocated by client_delivery.c). */
struct tether__cdone_q **tether__client_dq(tether_client *cl);

/* The message was written completely to a connection: reported from the
 * loop later (the write path must not call user code). */
void tether__cdone_written(struct tether__cdone_q *q, struct tether__cdone *d);

/* The message was handed back through on_undelivered: reported now. */
void tether__cdone_failed(tether_client *cl, struct tether__cdone *d, int reason);

/* The client is freed: reports what is still queued and frees the queue. */
void tether__cdone_q_free(struct tether__cdone_q *q);

/* Adds the client's call counters to its statistics (q may be NULL). */
void tether__cdone_stats(const struct tether__cdone_q *q, tether_stats *s);

#ifdef TETHER_TESTING
/* Replaces the random source of every client (NULL restores the real one),
 * so that tests can predict the jitter. Not thread-safe: set it before the
 * clients exist. */
void tether__client_set_random(double (*fn)(void *arg), void *arg);
#endif

#endif /* TETHER_RECONNECT_INT_H */
