/* SPDX-License-Identifier: MIT */
/* Random numbers for jitter: a per-thread xorshift64* generator, seeded
 * from getrandom() (or, failing that, the clock, the pid and an address). */
#include "random.h"

#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static _Thread_local uint64_t rng_state;

uint64_t tether__random_u64(void)
{
    if (rng_state == 0) {
        uint64_t seed = 0;
        if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            seed = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40) ^
                   (uint64_t)(uintptr_t)&seed;
        }
        rng_state = seed != 0 ? seed : 0x9E3779B97F4A7C15u;
    }
    /* xorshift64*: plenty for jitter, and cheap. */
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545F4914F6CDD1Du;
}

double tether__random_unit(void)
{
    return (double)(tether__random_u64() >> 11) / 9007199254740992.0; /* 2^53 */
}
