/* SPDX-License-Identifier: MIT */
/* reconnecting_client: stays connected to an echo server through failures
 * and restarts, sends a message every second, and prints every state
 * transition.
 *
 *   reconnecting_client --connect tcp://127.0.0.1:7777 [--interval MS]
 *                       [--count N] [--heartbeat MS] [--max-attempts N]
 *                       [--initial-backoff MS] [--verbose]
 *                       [--at-least-once]
 *   reconnecting_client --connect tls://localhost:7777 --ca certs/ca.pem
 *                       [--cert certs/client.pem --key certs/client.key]
 *                       [--servername NAME] [--insecure]
 *
 * What it shows:
 * - a reconnecting client (tether_client_new()): after a failed attempt or a
 *   lost connection it waits and tries again, with gRPC's exponential
 *   backoff and jitter, resolving the name and (for tls://) resuming the
 *   TLS session each time;
 * - the state callback: every transition becomes one line, e.g.
 *     connecting to tcp://127.0.0.1:7777 (attempt 1)
 *     disconnected: connection refused; retrying in 1.18 s
 *     connected to 127.0.0.1:7777
 * - messages sent while disconnected: they wait (bounded) and go out in
 *   order once connected; whatever the client still holds when it gives
 *   up or is closed comes back through on_undelivered, so nothing is lost
 *   without a word;
 * - heartbeats (--heartbeat) that notice a dead server even when no
 *   message is in flight, and the client's statistics at exit;
 * - what a lost connection costs: messages already written to the socket
 *   but never echoed are gone (tether does not resend them, since the
 *   server may have processed them). When a connection is lost, the
 *   client says how many, and why the connection was lost (e.g. the
 *   heartbeat timeout), pointing at README.md's "Which messages can be
 *   lost".
 *
 * - with --at-least-once (tether_client_opts::at_least_once): the server
 *   acknowledges what it received, the client resends what a lost
 *   connection left unacknowledged, and the server drops duplicates. The
 *   messages are numbered ("alo 1", "alo 2", ...); the client checks that
 *   every echo arrives exactly once and in order, and ends with
 *   `ok N exactly-once`, or names what was missing or duplicated and
 *   exits 1. --interval 0 sends as fast as flow control allows. (The
 *   echoes themselves travel back unacknowledged: a connection cut while
 *   echoes are in flight loses those, and the check says so.)
 *
 * Stop it with SIGINT or SIGTERM (a clean close: it writes what it holds
 * first), or let --count end it after that many echoes. Exit status 0
 * after a clean stop, 1 if it gave up (--max-attempts) or failed. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tether/tether.h>

#include "common/cli.h" /* --help, --version, the TLS flags, number parsing */

struct options {
    const char *connect_url;
    size_t interval_ms;
    size_t count; /* 0: until stopped */
    size_t heartbeat_ms;
    size_t max_attempts;
    size_t initial_backoff_ms;
    struct cli_tls tls;
    bool verbose;
    bool alo; /* --at-least-once */
};

struct app {
    const struct options *opt;
    tether_loop *loop;
    tether_client *rc;   /* NULL once CLOSED has been reported */
    tether_timer *timer; /* one message per interval */
    size_t next;         /* number of the next message */
    size_t echoed;
    size_t undelivered;
    bool connected;      /* since CONNECTED, until the next DISCONNECTED */
    uint64_t lost_total; /* written, never echoed, on connections now gone */
    bool gave_up;
    bool stopping;
    tether_signal *stop_signals[2]; /* SIGINT, SIGTERM */
    /* --at-least-once: the echo check. */
    size_t expect;       /* the number of the next echo */
    size_t missing;      /* numbers skipped */
    size_t duplicated;   /* numbers seen again or out of order */
    size_t first_bad[2]; /* the first missing and the first duplicated number */
    bool failed;
};

static const char usage[] =
    "usage: reconnecting_client --connect URL [options]\n"
    "Keeps a connection to an echo server alive through failures and restarts,\n"
    "sends a message every second and prints every state transition.\n\n"
    "  --connect URL          tcp://HOST:PORT, tls://HOST:PORT, unix:///path, or\n"
    "                         tcp+srv://_SERVICE._tcp.DOMAIN, tls+srv://... (DNS SRV)\n"
    "  --interval MS          time between messages (default 1000)\n"
    "  --count N              stop after N echoes (default: run until SIGINT/SIGTERM)\n"
    "  --heartbeat MS         ping after MS ms of silence; 3 unanswered pings end the\n"
    "                         connection (and a new one is dialled)\n"
    "  --max-attempts N       give up after N failed attempts in a row (default never)\n"
    "  --initial-backoff MS   the first wait between attempts (default 1000)\n" CLI_USAGE_TLS_CLIENT
    "  --verbose              print the full detail of every failed attempt\n"
    "  --at-least-once        acknowledged, resent, deduplicated messages; checks\n"
    "                         that every echo comes back exactly once, in order\n"
    "                         (--interval 0: as fast as flow control allows)\n" CLI_USAGE_COMMON;

/* ---- the client --------------------------------------------------------- */

static void print_stats(struct app *a)
{
    tether_stats st;
    if (tether_client_get_stats(a->rc, &st) != TETHER_OK) {
        return;
    }
    printf("stats: %llu messages written, %llu echoes, %llu connections (%llu reconnects), "
           "%llu attempts, %llu undelivered",
           (unsigned long long)st.msgs_out, (unsigned long long)st.msgs_in,
           (unsigned long long)st.connects, (unsigned long long)st.reconnects,
           (unsigned long long)st.attempts, (unsigned long long)st.undelivered);
    if (st.rtt_us >= 0) {
        printf(", last rtt %.3f ms", (double)st.rtt_us / 1000.0);
    }
    if (a->opt->alo) {
        printf(", %llu acknowledged, %llu resent, %llu unacknowledged",
               (unsigned long long)st.acked, (unsigned long long)st.resent,
               (unsigned long long)st.acks_in_flight);
    }
    printf("\n");
}

/* --at-least-once: the verdict, once the client is closed. */
static void alo_verdict(struct app *a)
{
    size_t got = a->expect - 1;
    if (a->missing == 0 && a->duplicated == 0 && a->undelivered == 0 &&
        (a->opt->count == 0 || got == a->opt->count)) {
        printf("ok %zu exactly-once\n", got);
        return;
    }
    a->failed = true;
    printf("FAILED: %zu echoes in order", got);
    if (a->missing > 0) {
        printf(", %zu missing (first: alo %zu)", a->missing, a->first_bad[0]);
    }
    if (a->duplicated > 0) {
        printf(", %zu duplicated or out of order (first: alo %zu)", a->duplicated, a->first_bad[1]);
    }
    if (a->undelivered > 0) {
        printf(", %zu handed back undelivered", a->undelivered);
    }
    if (a->opt->count > 0 && got != a->opt->count) {
        printf(", %zu of %zu expected", got, a->opt->count);
    }
    printf("\n");
}

/* --at-least-once: sends the next numbered messages, as many as the
 * client takes (--interval 0) or one (a tick). */
static void alo_send(struct app *a, bool one)
{
    while (!a->stopping && (a->opt->count == 0 || a->next < a->opt->count)) {
        char msg[64];
        int n = snprintf(msg, sizeof msg, "alo %zu", a->next + 1);
        int rv = tether_client_send(a->rc, msg, (size_t)n);
        if (rv == TETHER_EAGAIN) {
            return; /* on_drain continues */
        }
        if (rv != TETHER_OK) {
            printf("not sent: %s\n", tether_strerror(rv));
            return;
        }
        a->next++;
        if (one) {
            return;
        }
    }
}

static void on_drain(tether_client *rc, void *ud)
{
    (void)rc;
    struct app *a = ud;
    if (a->opt->alo && a->opt->interval_ms == 0) {
        alo_send(a, false);
    }
}

/* --at-least-once: checks one echo against the numbering. */
static void alo_echo(struct app *a, const uint8_t *data, size_t len)
{
    char buf[32];
    size_t n = 0;
    if (len < sizeof buf) {
        memcpy(buf, data, len);
        buf[len] = '\0';
        if (sscanf(buf, "alo %zu", &n) != 1) {
            n = 0;
        }
    }
    if (n == a->expect) {
        a->expect++;
    } else if (n > a->expect) {
        if (a->missing == 0) {
            a->first_bad[0] = a->expect;
        }
        a->missing += n - a->expect;
        a->expect = n + 1;
    } else {
        if (a->duplicated == 0) {
            a->first_bad[1] = n;
        }
        a->duplicated++;
    }
}

/* After a lost connection: the messages written to it that no echo
 * acknowledged. They are not resent (the server may have processed them)
 * and nobody else will mention them, so say so. */
static void report_lost(struct app *a)
{
    tether_stats st;
    if (a->opt->alo || tether_client_get_stats(a->rc, &st) != TETHER_OK ||
        st.msgs_out < st.msgs_in) {
        return; /* (--at-least-once: unacknowledged messages are resent) */
    }
    uint64_t unanswered = st.msgs_out - st.msgs_in;
    if (unanswered <= a->lost_total) {
        return;
    }
    uint64_t lost = unanswered - a->lost_total;
    a->lost_total = unanswered;
    printf("lost: %llu message%s written to the connection got no echo and will not be resent "
           "(see \"Which messages can be lost\" in README.md)\n",
           (unsigned long long)lost, lost == 1 ? "" : "s");
}

static void on_state(tether_client *rc, const tether_client_event *ev, void *ud)
{
    struct app *a = ud;
    /* A failed attempt: the short form names the cause ("connection
     * refused"); --verbose adds what was tried ("connect to tcp://...:
     * connection refused"). A lost connection always gets the detail,
     * which says e.g. that the heartbeats went unanswered. */
    bool lost = a->connected;
    const char *why = (a->opt->verbose || lost) && ev->detail[0] != '\0'
                          ? ev->detail
                          : tether_strerror(ev->reason);
    switch (ev->state) {
    case TETHER_CLIENT_CONNECTING:
        if (a->connected) {
            /* Still connected: the connection is draining (the server's
             * GOAWAY, or max_age_ms) and the client dials a new one
             * before the old one closes; nothing is lost (--heartbeat
             * makes the drain possible: control frames). */
            printf("draining: moving to a new connection\n");
            a->connected = false;
        }
        printf("connecting to %s (attempt %u)\n", a->opt->connect_url, ev->attempt);
        break;
    case TETHER_CLIENT_CONNECTED: {
        char peer[80] = "the server";
        tether_conn_peer(tether_client_conn(rc), peer, sizeof peer);
        printf("connected to %s\n", peer);
        a->connected = true;
        break;
    }
    case TETHER_CLIENT_DISCONNECTED:
        /* A WAITING or GAVE_UP line follows at once and says why. */
        break;
    case TETHER_CLIENT_WAITING:
        printf("disconnected: %s; retrying in %.2f s\n", why, ev->delay_ms / 1000.0);
        if (lost) {
            report_lost(a);
        }
        a->connected = false;
        break;
    case TETHER_CLIENT_GAVE_UP:
        printf("disconnected: %s; giving up after %u attempts\n", why, ev->attempt);
        if (lost) {
            report_lost(a);
        }
        a->connected = false;
        a->gave_up = true;
        tether_client_close(rc);
        break;
    case TETHER_CLIENT_CLOSED:
        print_stats(a);
        if (a->opt->alo) {
            alo_verdict(a);
        }
        printf("closed\n");
        a->rc = NULL; /* freed when this returns */
        tether_timer_free(a->timer);
        a->timer = NULL;
        break;
    }
    fflush(stdout);
}

static void on_message(tether_client *rc, const uint8_t *data, size_t len, void *ud)
{
    (void)rc;
    struct app *a = ud;
    a->echoed++;
    if (a->opt->alo) {
        alo_echo(a, data, len);
    } else {
        printf("echo: %.*s\n", (int)len, (const char *)data);
        fflush(stdout);
    }
    if (a->opt->count > 0 && a->echoed == a->opt->count && !a->stopping) {
        a->stopping = true;
        tether_client_close(rc);
    }
}

/* Messages the client will never send: it gave up or was closed before it
 * could write them. data is only borrowed. */
static void on_undelivered(tether_client *rc, const uint8_t *data, size_t len, int reason, void *ud)
{
    (void)rc;
    struct app *a = ud;
    a->undelivered++;
    printf("undelivered (%s): %.*s\n", tether_strerror(reason), (int)len, (const char *)data);
}

static void on_tick(tether_timer *t, void *ud)
{
    (void)t;
    struct app *a = ud;
    if (a->stopping || (a->opt->count > 0 && a->next >= a->opt->count)) {
        return;
    }
    if (a->opt->alo) {
        alo_send(a, true);
        return;
    }
    char msg[64];
    int n = snprintf(msg, sizeof msg, "message %zu", a->next);
    /* Works in every state: while disconnected the message waits. */
    int rv = tether_client_send(a->rc, msg, (size_t)n);
    if (rv == TETHER_OK) {
        a->next++;
    } else if (rv == TETHER_EAGAIN) {
        printf("not sent: the client already holds as much as it may\n");
    } else {
        printf("not sent: %s\n", tether_strerror(rv));
    }
}

/* ---- shutdown on SIGINT / SIGTERM (as in echo_server.c) ---------------- */

/* A loop callback, not a signal handler. Every signal asks again; the
 * close is idempotent. The watchers are unref'd: the loop returns once the
 * client has closed and the timer is freed. */
static void on_stop_signal(tether_signal *sig, int signum, void *ud)
{
    (void)sig, (void)signum;
    struct app *a = ud;
    a->stopping = true;
    tether_client_close(a->rc); /* NULL (already closed) is ignored */
}

/* ---- options ------------------------------------------------------------ */

/* Returns 0 to run, 1 after a usage error (reported), -1 after --help or
 * --version. */
static int parse_options(int argc, char **argv, struct options *opt)
{
    enum {
        OPT_CONNECT = 256,
        OPT_INTERVAL,
        OPT_COUNT,
        OPT_HEARTBEAT,
        OPT_MAX_ATTEMPTS,
        OPT_INITIAL_BACKOFF,
        OPT_VERBOSE,
        OPT_ALO
    };
    static const struct option longopts[] = {
        {"connect", required_argument, NULL, OPT_CONNECT},
        {"interval", required_argument, NULL, OPT_INTERVAL},
        {"count", required_argument, NULL, OPT_COUNT},
        {"heartbeat", required_argument, NULL, OPT_HEARTBEAT},
        {"max-attempts", required_argument, NULL, OPT_MAX_ATTEMPTS},
        {"initial-backoff", required_argument, NULL, OPT_INITIAL_BACKOFF},
        {"verbose", no_argument, NULL, OPT_VERBOSE},
        {"at-least-once", no_argument, NULL, OPT_ALO},
        CLI_LONGOPTS_TLS_CLIENT,
        CLI_LONGOPTS_COMMON,
        {NULL, 0, NULL, 0},
    };
    opterr = 0; /* cli_option() reports problems, in one line */
    int ch, li = 0;
    while ((ch = getopt_long(argc, argv, ":h", longopts, &li)) != -1) {
        enum cli_result r = CLI_HANDLED;
        switch (ch) {
        case OPT_CONNECT:
            opt->connect_url = optarg;
            break;
        case OPT_INTERVAL:
            if (strcmp(optarg, "0") == 0) {
                opt->interval_ms = 0; /* --at-least-once only, checked below */
            } else if (!cli_parse_ms(optarg, &opt->interval_ms)) {
                r = cli_bad_value("interval", optarg, "milliseconds, at least 1");
            }
            break;
        case OPT_COUNT:
            if (!cli_parse_size(optarg, &opt->count)) {
                r = cli_bad_value("count", optarg, "a number of echoes");
            }
            break;
        case OPT_HEARTBEAT:
            if (!cli_parse_ms(optarg, &opt->heartbeat_ms)) {
                r = cli_bad_value("heartbeat", optarg, "milliseconds, at least 1");
            }
            break;
        case OPT_MAX_ATTEMPTS:
            if (!cli_parse_ms(optarg, &opt->max_attempts)) {
                r = cli_bad_value("max-attempts", optarg, "a number of attempts, at least 1");
            }
            break;
        case OPT_INITIAL_BACKOFF:
            if (!cli_parse_ms(optarg, &opt->initial_backoff_ms)) {
                r = cli_bad_value("initial-backoff", optarg, "milliseconds, at least 1");
            }
            break;
        case OPT_VERBOSE:
            opt->verbose = true;
            break;
        case OPT_ALO:
            opt->alo = true;
            break;
        default:
            r = cli_option("reconnecting_client", usage, ch, argv, &opt->tls);
            break;
        }
        if (r == CLI_EXIT_OK || r == CLI_EXIT_ERROR) {
            return r == CLI_EXIT_OK ? -1 : 1;
        }
    }
    if (cli_no_operands(argc, argv) == CLI_EXIT_ERROR) {
        return 1;
    }
    if (opt->connect_url == NULL) {
        fprintf(stderr, "error: --connect URL is required (see --help)\n");
        return 1;
    }
    if (opt->interval_ms == 0 && !opt->alo) {
        fprintf(stderr, "error: --interval 0 needs --at-least-once (flow-controlled sending)\n");
        return 1;
    }
    return 0;
}

/* The library's warnings (with --at-least-once: a server that does not
 * acknowledge, e.g. `no acknowledgements on this connection`). */
static void log_to_stderr(tether_log_level level, const char *msg, void *ud)
{
    (void)level, (void)ud;
    fprintf(stderr, "reconnecting_client: tether: %s\n", msg);
}

/* ---- main --------------------------------------------------------------- */

int main(int argc, char **argv)
{
    struct options opt = {.interval_ms = 1000};
    int rv = parse_options(argc, argv, &opt);
    if (rv != 0) {
        return rv < 0 ? 0 : 1;
    }
    static struct app a; /* static: an early exit leaves it reachable */
    if (opt.alo) {
        tether_set_log(log_to_stderr, TETHER_LOG_WARN, NULL);
    }
    a.opt = &opt;
    if (tether_loop_new(&a.loop, NULL) != TETHER_OK ||
        tether_timer_new(&a.timer, a.loop) != TETHER_OK) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }
    /* Before any other thread exists (see tether_signal_start()). */
    if (!cli_watch_stop_signals(a.loop, a.stop_signals, on_stop_signal, &a)) {
        return 1;
    }
    /* Options for every connection the client makes. */
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.heartbeat_ms = (int)opt.heartbeat_ms;
    tether_tls_config *tls = NULL;
    tether_error err;
    if (!cli_tls_client(&opt.tls, opt.connect_url, &tls)) { /* see common/cli.c */
        return 1;
    }
    co.tls = tls; /* one configuration for all attempts: sessions resume */
    tether_client_opts ro;
    tether_client_opts_init(&ro);
    ro.userdata = &a;
    ro.on_state = on_state;
    ro.on_message = on_message;
    ro.on_undelivered = on_undelivered;
    ro.on_drain = on_drain;
    ro.at_least_once = opt.alo;
    ro.conn_opts = &co;
    ro.max_attempts = (uint32_t)opt.max_attempts;
    if (opt.initial_backoff_ms > 0) {
        ro.initial_backoff_ms = (uint32_t)opt.initial_backoff_ms;
        if (ro.max_backoff_ms < ro.initial_backoff_ms) {
            ro.max_backoff_ms = ro.initial_backoff_ms;
        }
    }
    rv = tether_client_new(&a.rc, a.loop, opt.connect_url, &ro, &err);
    tether_tls_config_unref(tls);
    if (rv != TETHER_OK) {
        fprintf(stderr, "error: %s\n", err.message); /* e.g. a malformed URL */
        return 1;
    }
    a.expect = 1;
    if (opt.interval_ms == 0) {
        alo_send(&a, false); /* then from on_drain */
    } else {
        tether_timer_start(a.timer, 0, opt.interval_ms, on_tick, &a);
    }
    setvbuf(stdout, NULL, _IOLBF, 0);

    /* Runs until the client has reported CLOSED and the timer is freed. */
    rv = tether_loop_run(a.loop);
    cli_unwatch_stop_signals(a.stop_signals);
    if (rv != TETHER_OK || tether_loop_free(a.loop) != TETHER_OK) {
        fprintf(stderr, "error: the event loop did not shut down cleanly\n");
        return 1;
    }
    return a.gave_up || a.failed ? 1 : 0;
}
