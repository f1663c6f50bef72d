/* SPDX-License-Identifier: MIT */
/* Random numbers for jitter (reconnect backoff, connection max_age): a
 * per-thread xorshift64* generator seeded from the kernel's random source.
 * Fast and good enough to spread timers apart; not for cryptography. */
#ifndef TETHER_RANDOM_H
#define TETHER_RANDOM_H

#include "internal.h"

/* The next 64 random bits of the calling thread's generator. */
uint64_t tether__random_u64(void);

/* A uniform random number in [0, 1), from tether__random_u64(). */
double tether__random_unit(void);

#endif /* TETHER_RANDOM_H */
