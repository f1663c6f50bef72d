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

#ifdef TETHER_TESTING
/* Replaces the random source of every client (NULL restores the real one),
 * so that tests can predict the jitter. Not thread-safe: set it before the
 * clients exist. */
void tether__client_set_random(double (*fn)(void *arg), void *arg);
#endif

#endif /* TETHER_RECONNECT_INT_H */
