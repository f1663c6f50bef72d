/* SPDX-License-Identifier: MIT */
/* The reconnect schedule: gRPC's connection backoff
 * (grpc/grpc doc/connection-backoff.md) as pure functions, so that the unit
 * tests can drive it with their own random numbers. The jitter's random
 * numbers come from random.c, the client that uses the schedule is
 * reconnect.c. */
#include "reconnect.h"

/* ---- the schedule ------------------------------------------------------ */

void tether__backoff_init(struct tether__backoff *b, uint32_t initial_ms, double multiplier,
                          double jitter, uint32_t max_ms)
{
    b->initial_ms = initial_ms;
    b->multiplier = multiplier;
    b->jitter = jitter;
    b->max_ms = max_ms;
    b->current_ms = 0;
}

void tether__backoff_reset(struct tether__backoff *b)
{
    b->current_ms = 0;
}

uint32_t tether__backoff_next(struct tether__backoff *b, double r)
{
    if (b->current_ms <= 0) {
        b->current_ms = b->initial_ms;
    } else {
        double next = b->current_ms * b->multiplier;
        b->current_ms = next < b->max_ms ? next : b->max_ms;
    }
    /* ±jitter after the cap, as gRPC does; a jitter above 1 could go
     * negative, so clamp (the options refuse one, this is belt and braces). */
    double d = b->current_ms * (1.0 + b->jitter * (2.0 * r - 1.0));
    if (d < 0) {
        d = 0;
    }
    if (d > (double)UINT32_MAX) {
        d = (double)UINT32_MAX;
    }
    return (uint32_t)(d + 0.5);
}
