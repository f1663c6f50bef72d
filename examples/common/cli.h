/* SPDX-License-Identifier: MIT */
/* Command-line plumbing shared by the examples: --help and --version, the
 * TLS flags (--ca, --cert, --key, --servername, --insecure,
 * --verify-client) and how they become a tether_tls_config, the timeouts
 * of the servers' accepted connections (--idle-timeout, --frame-timeout,
 * --frame-min-rate, --write-timeout, --write-min-rate), number parsing,
 * and one-line errors that speak of flags, not of tether's structs.
 *
 * Server examples also take the limit flags (--max-conns, --mem-limit),
 * declared in a block of their own at the end.
 *
 * Not part of tether: a program of your own would have its own versions.
 * Each example keeps its own getopt_long() table and usage text and adds
 * these flags to them with the CLI_* macros. */
#ifndef TETHER_EXAMPLES_CLI_H
#define TETHER_EXAMPLES_CLI_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>

#include <tether/tether.h>

/* getopt_long() codes of the shared flags; an example's own start at 256. */
enum {
    CLI_OPT_HELP = 'h',
    CLI_OPT_VERSION = 1000,
    CLI_OPT_CA,
    CLI_OPT_CERT,
    CLI_OPT_KEY,
    CLI_OPT_SERVERNAME,
    CLI_OPT_INSECURE,
    CLI_OPT_VERIFY_CLIENT
};

/* Entries for a struct option table. */
#define CLI_LONGOPTS_COMMON                                                                        \
    {"help", no_argument, NULL, CLI_OPT_HELP},                                                     \
    {                                                                                              \
        "version", no_argument, NULL, CLI_OPT_VERSION                                              \
    }
#define CLI_LONGOPTS_TLS_CLIENT                                                                    \
    {"ca", required_argument, NULL, CLI_OPT_CA}, {"cert", required_argument, NULL, CLI_OPT_CERT},  \
        {"key", required_argument, NULL, CLI_OPT_KEY},                                             \
        {"servername", required_argument, NULL, CLI_OPT_SERVERNAME},                               \
    {                                                                                              \
        "insecure", no_argument, NULL, CLI_OPT_INSECURE                                            \
    }
#define CLI_LONGOPTS_TLS_SERVER                                                                    \
    {"ca", required_argument, NULL, CLI_OPT_CA}, {"cert", required_argument, NULL, CLI_OPT_CERT},  \
        {"key", required_argument, NULL, CLI_OPT_KEY},                                             \
    {                                                                                              \
        "verify-client", no_argument, NULL, CLI_OPT_VERIFY_CLIENT                                  \
    }

/* Lines for the usage texts. */
#define CLI_USAGE_TLS_CLIENT                                                                       \
    "  --ca PEM          CA certificates to trust for tls:// (default: the system's)\n"            \
    "  --cert PEM        client certificate, for servers that require one\n"                       \
    "  --key PEM         its private key\n"                                                        \
    "  --servername NAME verify (and send as SNI) NAME instead of the URL's host\n"                \
    "  --insecure        do not verify the server's certificate at all (tests only)\n"
#define CLI_USAGE_TLS_SERVER                                                                       \
    "  --cert PEM        server certificate (chain), needed for tls://\n"                          \
    "  --key PEM         its private key, needed for tls://\n"                                     \
    "  --ca PEM          CA certificates that client certificates must come from\n"
#define CLI_USAGE_COMMON                                                                           \
    "  --version         print the program's and tether's version\n"                               \
    "  --help            show this help\n"

/* The TLS flags as given (NULL / false: not given). */
struct cli_tls {
    const char *ca;
    const char *cert;
    const char *key;
    const char *servername; /* clients */
    bool insecure;          /* clients */
    bool verify_client;     /* servers */
};

/* What cli_option() and the parsers' callers do next. */
enum cli_result {
    CLI_NOT_MINE = 0, /* not a shared flag: the example handles it */
    CLI_HANDLED,      /* a shared flag, stored */
    CLI_EXIT_OK,      /* --help or --version printed: exit with 0 */
    CLI_EXIT_ERROR    /* an error was printed: exit with 1 */
};

/* Handles one getopt_long() result `ch` if it is a shared flag, a missing
 * value (':') or an unknown option ('?'): stores TLS flags in *tls (may be
 * NULL for examples without TLS flags), prints `usage` or the version, or
 * prints `error: --ca needs a value (see --help)` /
 * `error: unknown option '--foo' (see --help)`. Set opterr = 0 and start
 * the optstring with ':' so that getopt_long() reports these to us. */
enum cli_result cli_option(const char *prog, const char *usage, int ch, char **argv,
                           struct cli_tls *tls);

/* Prints `error: --NAME: invalid value 'ARG' (expected WHAT)` and returns
 * CLI_EXIT_ERROR. */
enum cli_result cli_bad_value(const char *name, const char *arg, const char *what);

/* Prints `error: unexpected argument 'ARG' (see --help)` for the first
 * operand left at argv[optind], if any, and returns CLI_EXIT_ERROR;
 * otherwise CLI_HANDLED. */
enum cli_result cli_no_operands(int argc, char **argv);

/* A decimal number (no sign, no spaces) up to SIZE_MAX. */
bool cli_parse_size(const char *s, size_t *out);
/* Milliseconds: a decimal number from 1 to INT_MAX. */
bool cli_parse_ms(const char *s, size_t *out);
/* len32, varint or line. */
bool cli_parse_framing(const char *s, tether_framing_kind *out);

/* The largest --max-msg tether accepts (1 GiB) and the default (16 MiB). */
#define CLI_MAX_MSG_LIMIT ((size_t)1 << 30)
/* Checks --max-msg (0: not given): prints `error: --max-msg ...` and
 * returns false if it is above CLI_MAX_MSG_LIMIT. */
bool cli_check_max_msg(size_t max_msg);
/* Checks that a message of `size` bytes fits `max_msg` (0: the default):
 * `error: --size 20000000 is above the largest message tether allows by
 * default, 16 MiB (16777216 bytes): raise the limit with --max-msg ...`. */
bool cli_check_size(size_t size, size_t max_msg);

/* TLS for a client dialling `url`: *out is NULL when no flag was given
 * (a tls:// URL then trusts the system's CAs), or a new configuration the
 * caller unrefs. Checks the flags first: they need a tls:// URL, --cert and
 * --key go together. Returns true, or prints one `error: ...` line and
 * returns false. */
bool cli_tls_client(const struct cli_tls *tls, const char *url, tether_tls_config **out);

/* TLS for a server listening on `url`: tls:// needs --cert and --key, the
 * flags need a tls:// URL, --verify-client needs --ca (require_client:
 * client certificates are required whether or not --verify-client was
 * given, as in chat_server). *out is NULL for other URLs. */
bool cli_tls_server(const struct cli_tls *tls, const char *url, bool require_client,
                    tether_tls_config **out);

/* ---- Timeouts of accepted connections (server examples) ----------------
 * --idle-timeout, --frame-timeout, --frame-min-rate, --write-timeout and
 * --write-min-rate set the tether_conn_opts fields of the same names; a
 * flag not given keeps tether's server default (TETHER_ROLE_DEFAULT; none
 * for the idle timeout), and 0 turns the check off. */

/* getopt_long() codes of these flags. */
enum {
    CLI_OPT_IDLE_TIMEOUT = 1200,
    CLI_OPT_FRAME_TIMEOUT,
    CLI_OPT_FRAME_MIN_RATE,
    CLI_OPT_WRITE_TIMEOUT,
    CLI_OPT_WRITE_MIN_RATE
};

#define CLI_LONGOPTS_TIMEOUTS                                                                      \
    {"idle-timeout", required_argument, NULL, CLI_OPT_IDLE_TIMEOUT},                               \
        {"frame-timeout", required_argument, NULL, CLI_OPT_FRAME_TIMEOUT},                         \
        {"frame-min-rate", required_argument, NULL, CLI_OPT_FRAME_MIN_RATE},                       \
        {"write-timeout", required_argument, NULL, CLI_OPT_WRITE_TIMEOUT},                         \
    {                                                                                              \
        "write-min-rate", required_argument, NULL, CLI_OPT_WRITE_MIN_RATE                          \
    }

#define CLI_USAGE_TIMEOUTS                                                                         \
    "  --idle-timeout MS   close connections on which nothing arrived for MS ms\n"                 \
    "                      (default: none)\n"                                                      \
    "  --frame-timeout MS  window in which a started message must make progress\n"                 \
    "                      (default 30000)\n"                                                      \
    "  --frame-min-rate B  bytes/s a started message must arrive at (default 1024;\n"              \
    "                      0: --frame-timeout is a flat deadline per message)\n"                   \
    "  --write-timeout MS  window in which a client must read what we send\n"                      \
    "                      (default 60000)\n"                                                      \
    "  --write-min-rate B  bytes/s a client must read at (default 1024; 0: no\n"                   \
    "                      progress for --write-timeout)\n"                                        \
    "                      (0 turns any of these off)\n"

/* The values given; -1: not given. */
struct cli_timeouts {
    long idle_ms;
    long frame_ms;
    long frame_rate;
    long write_ms;
    long write_rate;
};

/* Not given (-1) everywhere. */
#define CLI_TIMEOUTS_INIT                                                                          \
    {                                                                                              \
        -1, -1, -1, -1, -1                                                                         \
    }

/* Handles one getopt_long() result if it is one of these flags: stores it,
 * or prints `error: --frame-timeout: invalid value ...`. CLI_NOT_MINE for
 * other flags. */
enum cli_result cli_timeouts_option(int ch, const char *arg, struct cli_timeouts *t);

/* Copies the flags given into the options of accepted connections. */
void cli_timeouts_apply(const struct cli_timeouts *t, tether_conn_opts *co);

/* ---- server limits: --max-conns and --mem-limit ------------------------ */

/* getopt_long() codes of the limit flags (a block of their own). */
enum {
    CLI_OPT_MAX_CONNS = 1100,
    CLI_OPT_MEM_LIMIT
};

#define CLI_LONGOPTS_LIMITS                                                                        \
    {"max-conns", required_argument, NULL, CLI_OPT_MAX_CONNS},                                     \
    {                                                                                              \
        "mem-limit", required_argument, NULL, CLI_OPT_MEM_LIMIT                                    \
    }
#define CLI_USAGE_LIMITS                                                                           \
    "  --max-conns N     most clients connected at once; more are closed at once\n"                \
    "                    (default 16384, 0 for no limit)\n"                                        \
    "  --mem-limit SIZE  memory for queued input and output of all clients, e.g.\n"                \
    "                    256M; past it the clients holding most are slowed down\n"                 \
    "                    (K, M, G suffixes; default 1G, 0 for no limit)\n"

/* The limit flags as given. */
struct cli_limits {
    size_t max_conns;
    bool max_conns_set;
    size_t mem_limit;
    bool mem_limit_set;
};

/* A size in bytes with an optional K, M or G suffix (powers of 1024). */
bool cli_parse_bytes(const char *s, size_t *out);

/* Handles a limit flag: CLI_HANDLED, CLI_EXIT_ERROR after a bad value
 * (reported), or CLI_NOT_MINE for other codes. */
enum cli_result cli_limits_option(int ch, const char *arg, struct cli_limits *lim);

/* Applies the flags given: max_conns to the listener options, the memory
 * limit to the loop. Prints an error and returns false on failure. */
bool cli_limits_apply(const struct cli_limits *lim, tether_loop *loop, tether_listen_opts *lo);

/* ---- servers behind a proxy: --proxy-protocol and --verbose ------------ */

/* getopt_long() codes of these flags (a block of their own), and of the
 * clients' --send-proxy and --proxy-source. */
enum {
    /* Each block of options has its own hundred (1000 common, 1100 limits,
     * 1200 timeouts, 1300 proxy): getopt codes must never collide. */
    CLI_OPT_PROXY_PROTOCOL = 1300,
    CLI_OPT_VERBOSE,
    CLI_OPT_SEND_PROXY,
    CLI_OPT_PROXY_SOURCE
};

#define CLI_LONGOPTS_PROXY                                                                         \
    {"proxy-protocol", no_argument, NULL, CLI_OPT_PROXY_PROTOCOL},                                 \
    {                                                                                              \
        "verbose", no_argument, NULL, CLI_OPT_VERBOSE                                              \
    }
#define CLI_USAGE_PROXY                                                                            \
    "  --proxy-protocol  require a PROXY protocol header (v1 or v2) on every\n"                    \
    "                    connection, as HAProxy's send-proxy sends it; clients are\n"              \
    "                    then reported by the address it names\n"                                  \
    "  --verbose         print one line per accepted connection with its peer\n"

/* The flags as given. */
struct cli_proxy {
    bool proxy_protocol;
    bool verbose;
};

/* Handles one of these flags: CLI_HANDLED, or CLI_NOT_MINE for other codes. */
enum cli_result cli_proxy_option(int ch, struct cli_proxy *px);

/* Applies --proxy-protocol to the listener options. */
void cli_proxy_apply(const struct cli_proxy *px, tether_listen_opts *lo);

/* With --verbose, prints on stdout (flushed) one line for an accepted
 * connection: `accepted 127.0.0.7:40000` and, behind a proxy, ` via
 * 127.0.0.1:5678 (PROXY v2)` or ` (PROXY v2 LOCAL: a health check or
 * an unknown client)`. */
void cli_proxy_log_accept(const struct cli_proxy *px, const char *prog, tether_conn *c);

/* Clients: --send-proxy v1|v2 sends a PROXY protocol header first (as a
 * proxy would), announcing --proxy-source instead of our own address. */
#define CLI_LONGOPTS_PROXY_CLIENT                                                                  \
    {"send-proxy", required_argument, NULL, CLI_OPT_SEND_PROXY},                                   \
    {                                                                                              \
        "proxy-source", required_argument, NULL, CLI_OPT_PROXY_SOURCE                              \
    }
#define CLI_USAGE_PROXY_CLIENT                                                                     \
    "  --send-proxy V    send a PROXY protocol header first, v1 or v2, as a load\n"                \
    "                    balancer would (for servers behind one)\n"                                \
    "  --proxy-source ADDR  the client address it announces: IP, IP:PORT or\n"                     \
    "                    [IPv6]:PORT (default: our own)\n"

struct cli_proxy_client {
    int version;        /* 0, TETHER_PROXY_V1 or TETHER_PROXY_V2 */
    const char *source; /* NULL: not given */
};

/* Handles --send-proxy and --proxy-source: CLI_HANDLED, CLI_EXIT_ERROR
 * after a bad value (reported), or CLI_NOT_MINE. */
enum cli_result cli_proxy_client_option(int ch, const char *arg, struct cli_proxy_client *pc);

/* Checks the pair (--proxy-source needs --send-proxy; prints an error and
 * returns false) and sets the connection options. */
bool cli_proxy_client_apply(const struct cli_proxy_client *pc, tether_conn_opts *co);

/* ---- threads: a loop group ------------------------------------------ */

/* Servers that run on a loop group take --threads N (0: one loop per CPU). */
enum {
    /* The 1500 block (1400 is left for other flags). */
    CLI_OPT_THREADS = 1500
};

#define CLI_LONGOPTS_THREADS                                                                       \
    {                                                                                              \
        "threads", required_argument, NULL, CLI_OPT_THREADS                                        \
    }
#define CLI_USAGE_THREADS                                                                          \
    "  --threads N       serve on N loops, one thread each (0: one per CPU), with\n"               \
    "                    connections spread over them (tether_loop_group)\n"

/* The flag as given. */
struct cli_threads {
    size_t n;
    bool set;
};

/* Handles --threads: CLI_HANDLED, CLI_EXIT_ERROR after a bad value
 * (reported), or CLI_NOT_MINE for other codes. */
enum cli_result cli_threads_option(int ch, const char *arg, struct cli_threads *t);

/* ---- stopping on SIGINT and SIGTERM ----------------------------------- */

/* Watches SIGINT and SIGTERM on the loop, calling cb for each, through
 * sigs[0] and sigs[1]. tether_signal_start() blocks them in this thread: a
 * program with other threads must create them after this, so that they
 * inherit the blocked mask (see tether_signal_start()). The watchers are
 * unref'd: they never keep the loop running once the program has closed
 * everything. On failure prints the reason and returns false; call
 * cli_unwatch_stop_signals() either way. */
bool cli_watch_stop_signals(tether_loop *loop, tether_signal *sigs[2], tether_signal_cb cb,
                            void *ud);

/* Frees what cli_watch_stop_signals() created (NULL entries are fine). */
void cli_unwatch_stop_signals(tether_signal *sigs[2]);

#endif
