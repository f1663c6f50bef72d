/* SPDX-License-Identifier: MIT */
/* Internal helpers shared by every source file of the library. */
#ifndef TETHER_INTERNAL_H
#define TETHER_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <assert.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tether/tether.h>

/* Functions that are static in a normal build but reachable from the unit
 * tests when the library is compiled with TETHER_TESTING (curl's UNITTEST). */
#ifdef TETHER_TESTING
#define TETHER_TESTABLE TETHER_API
#else
#define TETHER_TESTABLE static
#endif

#define tether__container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#define TETHER__LIKELY(x) __builtin_expect(!!(x), 1)
#define TETHER__UNLIKELY(x) __builtin_expect(!!(x), 0)
#define TETHER__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define TETHER__MIN(a, b) ((a) < (b) ? (a) : (b))
#define TETHER__MAX(a, b) ((a) > (b) ? (a) : (b))

/* Readiness bits: what the loop watches an fd for, and what a transport
 * asks for (want_events). Here rather than in loop.h or transport.h, so
 * that neither needs the other. */
#define TETHER_EV_READ 0x1u
#define TETHER_EV_WRITE 0x2u

/* Maps an errno value to the nearest TETHER_E* code. */
int tether__errno_to_err(int e);

/* Fills an optional tether_error record (NULL is ignored) with a code and a
 * printf-style message. Returns code, so callers can `return
 * tether__set_error(err, TETHER_EINVAL, "...")`. */
int tether__set_error(tether_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Hands a printf-style message to the application's log function (see
 * tether/log.h). The level is checked before anything is formatted, so a
 * disabled call is cheap; keep calls off the per-message paths all the same. */
void tether__log(tether_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Whether a message of this level would be delivered: a call whose
 * arguments cost something to work out (once per connection) asks first.
 * The threshold is tether__log()'s own (log.c), -1 when logging is off. */
extern atomic_int tether__log_threshold;
static inline bool tether__log_on(tether_log_level level)
{
    return (int)level <= atomic_load_explicit(&tether__log_threshold, memory_order_relaxed);
}

/* Writes a struct that starts with a size field (options defaults,
 * statistics, TLS details) into the caller's copy, which is `size` bytes
 * long as the caller's header defines it: an older, smaller struct gets the
 * fields it knows, a newer, larger one has the rest zeroed. The source's
 * own size field must already say `size`. */
void tether__sized_fill(void *dst, size_t size, const void *src, size_t src_size);

/* Resets an optional error record (NULL is ignored) to "no error". */
void tether__error_clear(tether_error *err);

/* Copies the defaults for an options struct and then the caller's first
 * `size` bytes over them: the ABI rule for options that grow at the end. */
void tether__opts_merge(void *dst, size_t dst_size, const void *src);

/* calloc(1, n) for objects made per connection: glibc's calloc() never
 * takes memory from the per-thread cache that serves small malloc()
 * calls, which makes it several times dearer. (A malloc() followed by a
 * memset() in one function is no help: compilers turn it into calloc().) */
void *tether__zalloc(size_t n);

#endif /* TETHER_INTERNAL_H */
