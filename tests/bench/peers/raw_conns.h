/* SPDX-License-Identifier: MIT */
/* bench_raw's conns scenario (raw_conns.c): the one part of the raw peer
 * that needs an event loop. */
#ifndef TETHER_BENCH_RAW_CONNS_H
#define TETHER_BENCH_RAW_CONNS_H

#include <stdint.h>

/* Runs conns (server child and client) with O as parsed, prints the JSON
 * line; frame is the message to send on each connection (4 + O.size). */
void raw_conns(const uint8_t *frame);

#endif /* TETHER_BENCH_RAW_CONNS_H */
