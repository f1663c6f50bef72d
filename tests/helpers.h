/* SPDX-License-Identifier: MIT */
/* Shared fixtures for the check suites: a loop per test that must end with
 * no live handles, bounded waits, and loopback listeners on port 0. */
#ifndef TETHER_TEST_HELPERS_H
#define TETHER_TEST_HELPERS_H

#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tether/tether.h>

/* The loop of the current test (created by th_setup, freed by th_teardown). */
extern tether_loop *th_loop;

/* Creates th_loop. */
void th_setup(void);

/* Closes nothing by itself: runs the loop until every handle the test left
 * is gone (bounded), then asserts that tether_loop_free() succeeds, i.e. no
 * handle leaked. */
void th_teardown(void);

/* Runs th_loop until *flag becomes true or ms milliseconds pass; returns the
 * final value of *flag. */
bool th_run_until(const volatile bool *flag, int ms);

/* Runs th_loop until pred(arg) holds or ms pass. */
bool th_run_until_pred(bool (*pred)(void *arg), void *arg, int ms);

/* Runs th_loop until it has nothing active, at most ms. Returns true if it
 * went idle. */
bool th_run_idle(int ms);

/* Listens on tcp://127.0.0.1:0 with the given options; asserts success. */
tether_listener *th_listen_tcp(const tether_listen_opts *opts);

/* "tcp://127.0.0.1:PORT" for a listener, in a static buffer. */
const char *th_url_of(const tether_listener *l);

/* Monotonic milliseconds. */
uint64_t th_now_ms(void);

/* Fills buf with a pattern derived from seed, so corruption is detectable. */
void th_fill(uint8_t *buf, size_t len, uint32_t seed);

/* Checks a buffer filled by th_fill. */
bool th_check(const uint8_t *buf, size_t len, uint32_t seed);

/* Number of open file descriptors of this process. */
int th_count_fds(void);

/* A port on 127.0.0.1 on which nothing listens: bound (so nobody else takes
 * it) but not listening, so the kernel refuses connections to it. *keep_fd
 * holds it; close that to let a listener take the port. */
int th_refused_port(int *keep_fd);

/* tether_conn_dial() on th_loop; fails the test, naming url and the
 * error, unless it returns TETHER_OK. */
void th_dial(tether_conn **c, const char *url, const tether_conn_opts *o);

/* A blocking TCP socket connected to 127.0.0.1:port (asserts success). */
int th_raw_connect(int port);

/* The same with SO_RCVBUF set to rcvbuf bytes first (0: the default), so
 * that a peer that does not read fills its window quickly. */
int th_raw_connect_rcvbuf(int port, int rcvbuf);

/* A blocking TCP listener on 127.0.0.1 on a port the kernel picks (put in
 * *port), with the given accept backlog; asserts success. */
int th_raw_listen(int backlog, int *port);

/* A port on 127.0.0.1 whose SYNs are dropped, so connects to it hang: a
 * listener (fds[0], backlog 0) that never accepts, its accept queue filled
 * by n - 1 connections (fds[1..n-1]). Returns the port; close the n fds. */
int th_hang_port(int *fds, int n);

/* Writes all n bytes to a raw socket in one send (asserts; no SIGPIPE). */
void th_raw_write(int fd, const void *p, size_t n);

/* Runs th_loop until the raw socket fd sees EOF or a reset (true), or ms
 * pass (false). Whatever else arrives is discarded. */
bool th_raw_wait_eof(int fd, int ms);

/* Formats a socket's own IPv4 address as "IP:PORT", the way
 * tether_conn_peer() formats the other side's view of it. */
void th_local_name(int fd, char *buf, size_t len);

/* Runs a suite and returns an exit status (0 when every test passed). */
int th_run_suite(Suite *s);

#endif /* TETHER_TEST_HELPERS_H */
