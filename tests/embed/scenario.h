/* SPDX-License-Identifier: MIT */
/* The workload of the embedding tests: a TLS echo server and a
 * reconnecting TLS client with heartbeats on one tether loop, paced by a
 * tether timer. The tests drive the loop from a foreign event loop (libuv,
 * GLib) and nothing else: no tether_loop_run(), no helper thread. */
#ifndef TETHER_EMBED_SCENARIO_H
#define TETHER_EMBED_SCENARIO_H

#include <stdbool.h>

#include <tether/tether.h>

/* Prints a failure and exits the test with status 1. */
#define EMBED_CHECK(cond, ...)                                                                     \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            embed_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                                    \
        }                                                                                          \
    } while (0)

void embed_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 4, 5)));

/* Sets up the server, the client and the pacing timer on `loop`. */
void embed_scenario_start(tether_loop *loop, const char *certs_dir);

/* Call after every tether_loop_run_once(): true once the workload has
 * finished, everything has been closed and `run_once_rv` (the value
 * tether_loop_run_once() returned) says the loop has nothing left, i.e.
 * the foreign loop may stop. */
bool embed_scenario_finished(int run_once_rv);

/* Asserts the results (messages echoed in order, a reconnection after the
 * server dropped the connection, heartbeats answered) and prints them. */
void embed_scenario_verify(void);

#endif /* TETHER_EMBED_SCENARIO_H */
