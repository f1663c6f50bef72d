/* SPDX-License-Identifier: MIT */
/* tether_bench's fanin scenario (tether_fanin.c): a server on a loop group
 * of --loops loops, clients on a loop group of their own. */
#ifndef TETHER_BENCH_FANIN_H
#define TETHER_BENCH_FANIN_H

#include <stdbool.h>

#include <tether/tether.h>

/* --per-msg: the clients send with tether_conn_send(), one message per call,
 * instead of tether_conn_send_batch() (tether_bench.c sets it). */
extern bool tb_per_msg;

/* --balance reuseport: the server's group listener spreads connections by
 * SO_REUSEPORT (the kernel's hash of the addresses) instead of the default
 * acceptor, which gives each new connection to the loop with the fewest
 * (tether_bench.c sets it). */
extern bool tb_reuseport;

/* The server child: listens, reports the port, serves, checks the counts. */
int fanin_server_main(void);

/* The client parent: runs the scenario against port, reaps the server and
 * prints the JSON line. */
void fanin_client(int port);

#endif /* TETHER_BENCH_FANIN_H */
