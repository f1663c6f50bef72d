/* SPDX-License-Identifier: MIT */
/* A fault-injection TCP proxy for the tests, on loopback.
 *
 * It listens on 127.0.0.1 (port 0: the kernel picks one) and forwards
 * every accepted connection to 127.0.0.1:target. It runs on its own thread
 * with its own poll() loop, so a test drives its tether loop while the proxy
 * misbehaves on command:
 *
 * - PASS      forwards both directions (optionally delayed);
 * - BLACKHOLE reads both directions and throws the bytes away: each
 *             endpoint's kernel still gets its data acknowledged, so TCP
 *             notices nothing and only application heartbeats can tell;
 * - STALL     stops reading and writing altogether: the kernels' buffers
 *             fill up, the windows close, and sent data stays unacknowledged
 *             (what TCP_USER_TIMEOUT detects);
 * - cut       closes both sides of every connection (FIN);
 * - reset     resets both sides of every connection (RST);
 * - refuse    resets every new connection at once.
 *
 * Every call is thread-safe and takes effect before it returns (the proxy
 * thread acknowledges it). tproxy_stop() joins the thread and closes every
 * socket. */
#ifndef TETHER_TEST_PROXY_H
#define TETHER_TEST_PROXY_H

#include <stdbool.h>
#include <stdint.h>

typedef struct tproxy tproxy;

typedef enum tproxy_mode {
    TPROXY_PASS = 0,
    TPROXY_BLACKHOLE = 1,
    TPROXY_STALL = 2,
} tproxy_mode;

/* Starts a proxy to 127.0.0.1:target_port. sock_buf, if positive, sets
 * SO_RCVBUF and SO_SNDBUF on the proxy's sockets (small buffers make a
 * stall visible to the endpoints sooner). Returns 0 or -errno. */
int tproxy_start(tproxy **out, int target_port, int sock_buf);

/* The port the proxy listens on. */
int tproxy_port(const tproxy *p);

/* Where new connections go from now on. */
void tproxy_set_target(tproxy *p, int target_port);

/* The mode of every connection, existing and new. */
void tproxy_set_mode(tproxy *p, tproxy_mode mode);

/* In PASS mode, holds every chunk this long before forwarding it. */
void tproxy_set_delay(tproxy *p, int ms);

/* Closes both sides of every current connection (a FIN to each). */
void tproxy_cut(tproxy *p);

/* Resets both sides of every current connection (an RST to each). */
void tproxy_reset(tproxy *p);

/* While on, new connections are reset as soon as they are accepted. */
void tproxy_refuse(tproxy *p, bool on);

/* Connections currently open through the proxy. */
int tproxy_conns(tproxy *p);

/* Connections accepted since the start. */
uint64_t tproxy_accepted(tproxy *p);

/* Stops the thread and closes everything. NULL is ignored. */
void tproxy_stop(tproxy *p);

#endif /* TETHER_TEST_PROXY_H */
