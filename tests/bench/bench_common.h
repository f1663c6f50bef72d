/* SPDX-License-Identifier: MIT */
/* Plumbing shared by tether_bench and the comparison peers in peers/: the
 * side-by-side benchmark protocol of PROTOCOL.md beside this file.
 *
 * The command line, fork/reap/timeout of the server child, the control pipe
 * (port, then one byte per established connection in `conns`), VmRSS of
 * the server, and the single JSON line on stdout. The figures are only
 * comparable while every implementation follows the same rules, which is
 * why they all link this one copy.
 */
#ifndef TETHER_BENCH_COMMON_H
#define TETHER_BENCH_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdnoreturn.h>
#include <sys/types.h>

enum bench_scenario {
    SC_THR,
    SC_LAT,
    SC_HS,
    SC_CONNS,
    SC_FANIN
};
enum bench_transport {
    TR_TCP,
    TR_TLS,
    TR_WS, /* WebSocket (tether_bench only) */
    TR_WSS
};

struct bench_opts {
    const char *impl;
    enum bench_scenario scenario;
    enum bench_transport transport;
    size_t size;
    long count;
    long conns;
    const char *cert;
    const char *key;
    const char *ca;
    bool resume; /* tether's own flag: hs with TLS session resumption */
    long loops;  /* --loops: the server's loops (fanin; 1 by default) */
};

/* What an implementation runs beyond the four scenarios every peer has: it
 * sets bench_caps before bench_parse_args(), which prints a skip line and
 * exits 0 for the rest (fanin, and --loops above 1), and refuses
 * --resume (exit 2). */
#define BENCH_CAP_FANIN 0x1u
#define BENCH_CAP_LOOPS 0x2u
#define BENCH_CAP_RESUME 0x4u /* --resume; without it the program exits 2 */
extern unsigned bench_caps;

extern struct bench_opts O;

/* Fixed protocol details shared by every implementation. */
#define HELLO_LEN 1     /* client -> server before the clock starts */
#define READY_LEN 1     /* server -> client reply to the hello */
#define ACK_LEN 1       /* thr: server -> client after the last message */
#define CONNS_WINDOW 64 /* conns: connections opened but not yet confirmed */
#define HS_WARMUP 1     /* hs: untimed connections before the timed ones */
#define SERVER_NAME "localhost"

const char *bench_scenario_name(enum bench_scenario s);
const char *bench_transport_name(enum bench_transport t);

/* Parses the command line into O; exits 2 on a usage error. */
void bench_parse_args(int argc, char **argv, const char *impl);

/* "impl: message" (or "impl (server): message") on stderr. */
void bench_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Logs, kills and reaps the server when called in the parent, exits 1. */
noreturn void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

uint64_t bench_now_ns(void);
double bench_now_s(void);

/* The server child. bench_spawn_server() forks; the child makes itself die
 * with the parent, runs fn (which must call bench_ctl_send_port() once it
 * listens) and exits with its return value; stdout is redirected to stderr
 * there. The parent arms the BENCH_TIMEOUT_S alarm and returns the port the
 * child reported. */
typedef int (*bench_server_fn)(void);
int bench_spawn_server(bench_server_fn fn);

/* Child side. */
void bench_ctl_send_port(int port);
void bench_ctl_notify(void);       /* one established connection */
void bench_server_wait_stop(void); /* blocks until the parent says stop */

/* Parent side. */
long bench_ctl_read_nb(void);    /* notifications readable now (may be 0) */
long bench_ctl_read_block(void); /* waits for at least one notification */
/* conns, for a client whose connections proceed without its help (a
 * library's own threads): open_one(i, ud) for i = 0..n-1, never more than
 * CONNS_WINDOW of them unconfirmed, until the server has confirmed all n. */
void bench_conns_open_confirmed(long n, void (*open_one)(long i, void *ud), void *ud);
void bench_finish_server(void);  /* tell it to stop, reap it, check its status */
long bench_server_rss_kib(void); /* VmRSS of the server child, KiB */

void bench_raise_nofile(long need);
void *bench_xmalloc(size_t n);
void bench_fill_payload(uint8_t *p, size_t n);
long bench_lat_warmup(void);

/* The client of each of the four scenarios every peer runs. */
struct bench_client {
    void (*thr)(void);
    void (*lat)(void);
    void (*hs)(void);
    void (*conns)(void);
};
/* Runs the one O.scenario names (fanin: none; an implementation without
 * BENCH_CAP_FANIN has printed its skip in bench_parse_args()). */
void bench_run_client(const struct bench_client *cl);

/* Output: each prints the single JSON line (common fields, metrics, and an
 * optional pre-formatted extra fragment such as "tls":"..."). */
void bench_emit_thr(double elapsed_s, const char *extra);
void bench_emit_lat(double *rtt_us, long n, const char *extra); /* sorts rtt_us */
void bench_emit_hs(double elapsed_s, long n, const char *extra);
void bench_emit_conns(double setup_s, double rss_kib_per_conn, double rss_kib_per_conn_echoed,
                      double echo_all_s, const char *extra);
void bench_emit_skip(const char *why);
/* fanin: msgs_per_s and mb_per_s over O.count messages, plus the number of
 * client loops used (the server's is O.loops). */
void bench_emit_fanin(double elapsed_s, long client_loops, const char *extra);

#endif /* TETHER_BENCH_COMMON_H */
