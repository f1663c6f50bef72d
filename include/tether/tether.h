/* SPDX-License-Identifier: MIT */
/**
 * @file tether.h
 * @brief The umbrella header: `#include <tether/tether.h>` is all a program needs.
 */
#ifndef TETHER_TETHER_H
#define TETHER_TETHER_H

#include <tether/conn.h>
#include <tether/delivery.h>
#include <tether/error.h>
#include <tether/export.h>
#include <tether/framing.h>
#include <tether/group.h>
#include <tether/log.h>
#include <tether/loop.h>
#include <tether/reconnect.h>
#include <tether/ref.h>
#include <tether/sync.h>
#include <tether/tls.h>
#include <tether/version.h>
#include <tether/watch.h>
#include <tether/ws.h>

/**
 * @defgroup dns DNS and connecting
 * @brief How a dial finds its peer: name resolution, Happy Eyeballs, one
 *        deadline, and errors that say what was tried.
 *
 * tether_conn_dial() and tether_sync_connect() never block the loop's
 * thread and never wait forever:
 * - **Resolution.** A numeric host is used as it is; `localhost` (and
 *   `*.localhost`) means ::1 and 127.0.0.1 without asking any server. Other
 *   names are resolved, A and AAAA together, by the loop's own asynchronous
 *   c-ares channel, created on the first lookup: /etc/hosts first, then the
 *   servers of /etc/resolv.conf, or those of tether_loop_opts::dns_servers
 *   with tether_loop_opts::dns_timeout_ms and tether_loop_opts::dns_tries
 *   (for the blocking API through tether_conn_opts::loop_opts). Every dial
 *   resolves again, so a service that moved is found by the next connection.
 *   tether_conn_opts::family restricts everything to one family
 *   (#tether_family).
 * - **Happy Eyeballs** (RFC 8305). Every address is a candidate, the
 *   families interleaved; the next attempt starts after
 *   tether_conn_opts::attempt_delay_ms (default 250 ms) while earlier ones
 *   continue, the first to connect wins and the others are closed.
 * - **One deadline.** tether_conn_opts::connect_timeout_ms (default 20 s)
 *   covers resolution, every attempt and the TLS handshake, and each attempt
 *   gets a fair share of what is left.
 * - **Errors.** #TETHER_ENOTFOUND, #TETHER_EDNSTIMEDOUT, #TETHER_EDNS,
 *   #TETHER_ENOADDR, #TETHER_ECONNREFUSED, #TETHER_ENETUNREACH,
 *   #TETHER_EHOSTUNREACH and #TETHER_ETIMEDOUT, with a detail that lists
 *   what was tried, e.g. `connect to tcp://db.test:5432 failed: 2 addresses
 *   tried: [::1]:5432 refused; 127.0.0.1:5432 timed out after 3000 ms`.
 *
 * The details of each step are in the descriptions of the connection group
 * and of tether_conn_dial(). Threading: the resolver belongs to its loop and
 * runs on the loop's thread, like every callback of the dial.
 */

#endif /* TETHER_TETHER_H */
