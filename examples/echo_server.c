/* SPDX-License-Identifier: MIT */
/* echo_server: sends every message back on the connection it came from.
 *
 *   echo_server --listen tcp://127.0.0.1:7777 [--framing len32|varint|line]
 *               [--max-msg BYTES]
 *   echo_server --listen tls://127.0.0.1:7777 --cert certs/server.pem
 *               --key certs/server.key [--ca certs/ca.pem --verify-client]
 *   echo_server --listen tcp://127.0.0.1:7777 --heartbeat MS [--idle-timeout MS]
 *               [--frame-timeout MS] [--frame-min-rate B] [--write-timeout MS]
 *               [--write-min-rate B]
 *   echo_server --listen tcp://127.0.0.1:7777 --max-conns 1000 --mem-limit 256M
 *   echo_server --listen tcp://127.0.0.1:7777 --proxy-protocol --verbose
 *   echo_server --listen ws://127.0.0.1:7777/echo (or wss:// with --cert, --key)
 *   echo_server --listen tcp://127.0.0.1:7777 --threads 4
 *   echo_server --listen tcp://127.0.0.1:7777 --drain-on-signal [--drain-timeout MS]
 *
 * What it shows:
 * - a listener whose accepted connections share one set of callbacks, with
 *   per-connection state kept in the connection's user data;
 * - flow control: when a peer sends faster than it reads its echoes, the
 *   send queue fills up; rather than drop messages or buffer without limit,
 *   the server stops reading from that peer until the queue has drained
 *   (tether_conn_pause(), `on_drain`, tether_conn_resume()). A client
 *   costs at most send_hwm + 2 x max_msg (~33 MiB by default): its queue
 *   (below send_hwm, plus the one message that crossed it), and either an
 *   incomplete input message or the one echo held while paused (that copy
 *   is handed over with tether_conn_send_zc(), not copied again). The
 *   queues of all clients together are bounded by --mem-limit;
 * - WebSocket (ws://, wss://): the same code serves browsers; a text
 *   message is echoed as text, a binary one as binary
 *   (tether_ws_msg_is_text(), tether_ws_set_text());
 * - a clean shutdown on SIGINT or SIGTERM: the loop delivers the signals
 *   as ordinary callbacks (#tether_signal, a signalfd), so the shutdown
 *   runs on the loop's thread, with no signal handler and no helper thread;
 * - with --threads N, every core: a loop group of N loops on N threads and
 *   one group listener that spreads connections over them (SO_REUSEPORT
 *   for tcp:// and tls://, an acceptor for unix://). Each connection and
 *   its state live on one loop, so the code above runs unchanged; only the
 *   per-loop list of connections is chosen by the connection's loop, and
 *   the shutdown is the group's graceful stop (with --drain-on-signal its
 *   draining stop, tether_loop_group_shutdown(), on every loop); --verbose
 *   names the loop of each accepted connection.
 * - with --drain-on-signal, a graceful shutdown for rolling restarts:
 *   tether_listener_shutdown() stops accepting and asks every client to
 *   drain (GOAWAY), so that clients that speak control frames finish what
 *   they sent, receive every echo and move to another server, losing
 *   nothing; the process exits once they are gone (or at the deadline).
 *
 * It prints `listening on URL` once clients can connect (with the real port
 * when the URL asks for port 0), one line on stderr for every connection
 * that ends with an error, and exits with 0 after a clean stop, 1 otherwise.
 * A second signal during the shutdown exits at once. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tether/tether.h>

#include "common/cli.h" /* --help, --version, the TLS flags, number parsing */

struct options {
    const char *listen_url;
    tether_framing_kind framing;
    size_t max_msg; /* 0: the library's default */
    /* TLS (tls:// URLs): our certificate and key, and the CA that client
     * certificates must come from when --verify-client is given. */
    struct cli_tls tls;
    /* Liveness: heartbeats (clients that announce theirs are answered in
     * any case; this makes the server ping them too). */
    size_t heartbeat_ms;
    /* Timeouts of accepted connections (a read-idle timeout for clients
     * that go silent, and tether's server defaults against slow and stuck
     * clients, which these flags change). */
    struct cli_timeouts timeouts;
    /* Limits: --max-conns, --mem-limit (common/cli.h). */
    struct cli_limits limits;
    /* Behind a proxy: --proxy-protocol, --verbose (common/cli.h). */
    struct cli_proxy proxy;
    /* --threads: a loop group (common/cli.h). */
    struct cli_threads threads;
    /* --drain-on-signal: drain the clients on SIGINT/SIGTERM, for at most
     * drain_timeout_ms, instead of closing them. */
    bool drain_on_signal;
    size_t drain_timeout_ms;
};

struct server;

/* Per-connection state, found through the connection's user data. */
struct echo_conn {
    struct server *srv;
    tether_conn *conn;
    struct echo_conn *prev, *next; /* all open connections, for the shutdown */
    char peer[80];                 /* for messages: unknown once the socket is closed */
    bool health_check;             /* a proxy's PROXY v2 LOCAL connection */
    bool ws;                       /* a WebSocket connection (ws://, wss://) */
    uint8_t *held;                 /* an echo the send queue had no room for */
    size_t held_len;
    bool has_held;
};

struct server {
    const struct cli_proxy *proxy;
    tether_loop *loop;
    tether_listener *listener;
    struct echo_conn *conns;
    tether_signal *stop_signals[2]; /* SIGINT, SIGTERM */
    bool stopping;                  /* the first signal came */
    /* --threads: the group, and one server per loop (each used only on its
     * loop's thread) that on_accept picks by the connection's loop. */
    tether_loop_group *group;
    struct server *shards;
    bool drain_on_signal;
    int drain_timeout_ms;
};

static const char usage[] =
    "usage: echo_server --listen URL [options]\n"
    "Echoes every message back to its sender until SIGINT or SIGTERM.\n\n"
    "  --listen URL      tcp://HOST:PORT (port 0 picks one), tcp://[::1]:PORT,\n"
    "                    tls://HOST:PORT (with --cert and --key),\n"
    "                    ws://HOST:PORT[/PATH], wss://HOST:PORT[/PATH] (WebSocket),\n"
    "                    unix:///path or unix://@abstract-name\n"
    "  --framing KIND    len32 (default), varint or line\n"
    "  --max-msg BYTES   largest message accepted (default 16 MiB)\n" CLI_USAGE_TLS_SERVER
    "  --verify-client   require every client to present a certificate from --ca\n"
    "  --heartbeat MS    ping clients that announce heartbeats after MS ms of silence\n"
    "                    (such clients are answered even without this option)\n"
    "  --drain-on-signal on SIGINT/SIGTERM stop accepting and ask every client to\n"
    "                    drain (GOAWAY), then exit once they are gone\n"
    "  --drain-timeout MS  how long the drain may take (default 30000)\n" CLI_USAGE_TIMEOUTS
        CLI_USAGE_LIMITS CLI_USAGE_PROXY CLI_USAGE_THREADS CLI_USAGE_COMMON;

/* ---- connections ------------------------------------------------------- */

static void on_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    struct server *srv = ud;
    int loop_index = -1;
    if (srv->group != NULL) {
        /* We run on the connection's loop: its shard is ours alone. */
        loop_index = tether_loop_group_index(srv->group, tether_conn_loop(c));
        srv = &srv->shards[loop_index];
    }
    struct echo_conn *ec = calloc(1, sizeof *ec);
    if (ec == NULL) {
        fprintf(stderr, "echo_server: out of memory accepting a connection\n");
        tether_conn_abort(c); /* its on_close gets NULL user data */
        return;
    }
    ec->srv = srv;
    ec->conn = c;
    /* Behind a proxy that sends the PROXY protocol (--proxy-protocol),
     * this is the client the proxy relayed, not the proxy. */
    if (tether_conn_peer(c, ec->peer, sizeof ec->peer) != TETHER_OK) {
        snprintf(ec->peer, sizeof ec->peer, "unknown peer");
    }
    if (loop_index >= 0) {
        /* --verbose names the loop, to show how connections spread. */
        char prog[48];
        snprintf(prog, sizeof prog, "echo_server (loop %d)", loop_index);
        cli_proxy_log_accept(srv->proxy, prog, c);
    } else {
        cli_proxy_log_accept(srv->proxy, "echo_server", c);
    }
    tether_proxy_info info;
    ec->health_check =
        tether_conn_proxy_info(c, &info) == TETHER_OK && info.local && info.version == 2;
    ec->ws = tether_ws_path(c) != NULL;
    ec->next = srv->conns;
    if (srv->conns != NULL) {
        srv->conns->prev = ec;
    }
    srv->conns = ec;
    tether_conn_set_userdata(c, ec);
}

static void on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    struct echo_conn *ec = ud;
    /* WebSocket: the echo has the type of the message (queued in order
     * with the sends, so the held echo below keeps it too). */
    int rv = ec->ws ? tether_ws_set_text(c, tether_ws_msg_is_text(c)) : TETHER_OK;
    if (rv == TETHER_OK) {
        rv = tether_conn_send(c, data, len);
    }
    if (rv == TETHER_EAGAIN) {
        /* The peer sends faster than it reads its echoes. Keep this one
         * (data is only borrowed until we return) and stop reading: the
         * kernel's buffers fill up and TCP slows the peer down. No further
         * on_message runs until tether_conn_resume(). */
        ec->held = malloc(len > 0 ? len : 1);
        if (ec->held == NULL) {
            fprintf(stderr, "echo_server: %s: out of memory\n", ec->peer);
            tether_conn_abort(c);
            return;
        }
        memcpy(ec->held, data, len);
        ec->held_len = len;
        ec->has_held = true;
        tether_conn_pause(c);
    } else if (rv != TETHER_OK && rv != TETHER_ECLOSED) {
        /* (TETHER_ECLOSED: the connection is ending; on_close says why.) */
        fprintf(stderr, "echo_server: %s: cannot echo: %s\n", ec->peer, tether_strerror(rv));
        tether_conn_abort(c);
    }
}

static void free_held(void *data, void *ud)
{
    (void)ud;
    free(data);
}

/* The send queue has drained to its low-water mark: send the held echo. */
static void on_drain(tether_conn *c, void *ud)
{
    struct echo_conn *ec = ud;
    if (!ec->has_held) {
        return;
    }
    /* Hand the held copy over instead of copying it once more: the library
     * frees it (free_held) once it is written or the connection ends. */
    int rv = tether_conn_send_zc(c, ec->held, ec->held_len, free_held, NULL);
    if (rv == TETHER_EAGAIN) {
        return; /* still full: another on_drain follows */
    }
    if (rv != TETHER_OK) {
        free(ec->held); /* refused: still ours */
    }
    ec->held = NULL;
    ec->has_held = false;
    if (rv == TETHER_OK) {
        tether_conn_resume(c);
    } else if (rv != TETHER_ECLOSED) {
        fprintf(stderr, "echo_server: %s: cannot echo: %s\n", ec->peer, tether_strerror(rv));
        tether_conn_abort(c);
    }
}

static void on_close(tether_conn *c, int reason, void *ud)
{
    struct echo_conn *ec = ud;
    /* TETHER_EOF is a client saying goodbye; TETHER_OK and TETHER_ECANCELED
     * are our own close and abort. Anything else is worth a line. */
    /* HAProxy ends its TCP health checks (PROXY v2 LOCAL) with a reset:
     * that is the check passing, not a problem. */
    bool check_reset = ec != NULL && ec->health_check && reason == TETHER_ECONNRESET;
    if (reason != TETHER_OK && reason != TETHER_EOF && reason != TETHER_ECANCELED && !check_reset) {
        const char *detail = tether_conn_last_error(c);
        fprintf(stderr, "echo_server: %s: %s\n", ec != NULL ? ec->peer : "unknown peer",
                detail[0] != '\0' ? detail : tether_strerror(reason));
    }
    if (ec == NULL) {
        return;
    }
    if (ec->prev != NULL) {
        ec->prev->next = ec->next;
    } else {
        ec->srv->conns = ec->next;
    }
    if (ec->next != NULL) {
        ec->next->prev = ec->prev;
    }
    free(ec->held);
    free(ec);
}

/* Problems no connection can report, e.g. running out of descriptors. */
static void on_listener_error(tether_listener *l, int err, const char *detail, void *ud)
{
    (void)l, (void)err, (void)ud;
    fprintf(stderr, "echo_server: %s\n", detail);
}

/* ---- shutdown ---------------------------------------------------------- */

/* --drain-on-signal: every connection has finished its drain, or was
 * closed at the deadline. Nothing is active any more, so tether_loop_run()
 * returns once this has run. */
static void on_drained(tether_loop *loop, int status, void *ud)
{
    (void)loop, (void)ud;
    printf("drained%s\n",
           status == TETHER_OK ? "" : " (deadline passed: some clients were closed)");
    fflush(stdout);
}

/* SIGINT or SIGTERM, on the loop thread: an ordinary callback, not a
 * signal handler, so it may close things. Once the listener and every
 * connection are closed nothing referenced is active (the signal watchers
 * are unref'd) and tether_loop_run() returns by itself. The graceful close
 * still sends what is queued; a held echo is dropped. */
static void on_stop_signal(tether_signal *sig, int signum, void *ud)
{
    (void)sig, (void)signum;
    struct server *srv = ud;
    if (srv->stopping) {
        /* A second signal: whoever sent it does not want to wait. */
        fprintf(stderr, "echo_server: exiting without a clean shutdown\n");
        _exit(1);
    }
    srv->stopping = true;
    if (srv->drain_on_signal) {
        int rv = tether_listener_shutdown(srv->listener, srv->drain_timeout_ms, on_drained, srv);
        if (rv == TETHER_OK) {
            srv->listener = NULL;
            printf("draining\n");
            fflush(stdout);
            return;
        }
        fprintf(stderr, "echo_server: cannot drain: %s; closing instead\n", tether_strerror(rv));
    }
    tether_listener_close(srv->listener);
    srv->listener = NULL;
    for (struct echo_conn *ec = srv->conns; ec != NULL; ec = ec->next) {
        tether_conn_close(ec->conn); /* asynchronous: on_close unlinks it later */
    }
}

/* ---- options ----------------------------------------------------------- */

/* Returns 0 to run, 1 after a usage error (reported), -1 after --help or
 * --version. A new flag is an enum value, a line in the table and a case. */
static int parse_options(int argc, char **argv, struct options *opt)
{
    enum {
        OPT_LISTEN = 256,
        OPT_FRAMING,
        OPT_MAX_MSG,
        OPT_HEARTBEAT
    };
    enum {
        OPT_DRAIN_ON_SIGNAL = 1400,
        OPT_DRAIN_TIMEOUT
    }; /* (issue #13's block) */
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"framing", required_argument, NULL, OPT_FRAMING},
        {"max-msg", required_argument, NULL, OPT_MAX_MSG},
        {"heartbeat", required_argument, NULL, OPT_HEARTBEAT},
        {"drain-on-signal", no_argument, NULL, OPT_DRAIN_ON_SIGNAL},
        {"drain-timeout", required_argument, NULL, OPT_DRAIN_TIMEOUT},
        CLI_LONGOPTS_TIMEOUTS,
        CLI_LONGOPTS_TLS_SERVER,
        CLI_LONGOPTS_LIMITS,
        CLI_LONGOPTS_PROXY,
        CLI_LONGOPTS_THREADS,
        CLI_LONGOPTS_COMMON,
        {NULL, 0, NULL, 0},
    };
    opterr = 0; /* cli_option() reports problems, in one line */
    int ch, li = 0;
    while ((ch = getopt_long(argc, argv, ":h", longopts, &li)) != -1) {
        enum cli_result r = CLI_HANDLED;
        switch (ch) {
        case OPT_LISTEN:
            opt->listen_url = optarg;
            break;
        case OPT_FRAMING:
            if (!cli_parse_framing(optarg, &opt->framing)) {
                r = cli_bad_value("framing", optarg, "len32, varint or line");
            }
            break;
        case OPT_MAX_MSG:
            if (!cli_parse_size(optarg, &opt->max_msg) || opt->max_msg == 0) {
                r = cli_bad_value("max-msg", optarg, "a number of bytes, at least 1");
            }
            break;
        case OPT_HEARTBEAT:
            if (!cli_parse_ms(optarg, &opt->heartbeat_ms)) {
                r = cli_bad_value("heartbeat", optarg, "milliseconds, at least 1");
            }
            break;
        case OPT_DRAIN_ON_SIGNAL:
            opt->drain_on_signal = true;
            break;
        case OPT_DRAIN_TIMEOUT:
            if (!cli_parse_ms(optarg, &opt->drain_timeout_ms)) {
                r = cli_bad_value("drain-timeout", optarg, "milliseconds, at least 1");
            }
            break;
        default:
            r = cli_timeouts_option(ch, optarg, &opt->timeouts);
            if (r == CLI_NOT_MINE) {
                r = cli_limits_option(ch, optarg, &opt->limits);
            }
            if (r == CLI_NOT_MINE) {
                r = cli_proxy_option(ch, &opt->proxy);
            }
            if (r == CLI_NOT_MINE) {
                r = cli_threads_option(ch, optarg, &opt->threads);
            }
            if (r == CLI_NOT_MINE) {
                r = cli_option("echo_server", usage, ch, argv, &opt->tls);
            }
            break;
        }
        if (r == CLI_EXIT_OK || r == CLI_EXIT_ERROR) {
            return r == CLI_EXIT_OK ? -1 : 1;
        }
    }
    if (cli_no_operands(argc, argv) == CLI_EXIT_ERROR) {
        return 1;
    }
    if (opt->listen_url == NULL) {
        fprintf(stderr, "error: --listen URL is required (see --help)\n");
        return 1;
    }
    if (!cli_check_max_msg(opt->max_msg)) {
        return 1;
    }
    if (opt->drain_timeout_ms > 0 && !opt->drain_on_signal) {
        fprintf(stderr, "error: --drain-timeout needs --drain-on-signal\n");
        return 1;
    }
    if (opt->heartbeat_ms > 0 && opt->timeouts.idle_ms > 0 &&
        (size_t)opt->timeouts.idle_ms < 2 * opt->heartbeat_ms) {
        /* tether would refuse it too (TETHER_EINVAL), in terms of its
         * option fields; say it in terms of the flags. */
        fprintf(stderr,
                "error: --idle-timeout (%ld) must be at least twice --heartbeat (%zu): a client "
                "that heartbeats is only heard after one interval of silence\n",
                opt->timeouts.idle_ms, opt->heartbeat_ms);
        return 1;
    }
    if (opt->heartbeat_ms > 0 && opt->framing != TETHER_FRAMING_LEN32) {
        fprintf(stderr, "error: --heartbeat needs --framing len32\n");
        return 1;
    }
    return 0;
}

/* ---- connection options -------------------------------------------------- */

/* Options for every accepted connection (copied by the listen calls). */
static void conn_options(const struct options *opt, tether_conn_opts *co)
{
    tether_conn_opts_init(co);
    co->framing = opt->framing;
    if (opt->max_msg > 0) {
        co->max_msg = opt->max_msg;
    }
    co->on_message = on_message;
    co->on_drain = on_drain;
    co->on_close = on_close;
    co->heartbeat_ms = (int)opt->heartbeat_ms;
    cli_timeouts_apply(&opt->timeouts, co);
}

/* ---- --threads: a loop group ----------------------------------------------- */

/* --drain-on-signal with --threads: the last loop has finished its drain
 * (on that loop's thread); the main thread sees the flag and joins. */
static atomic_bool group_drained;

static void on_group_drained(tether_loop_group *g, int status, void *ud)
{
    (void)g, (void)ud;
    on_drained(NULL, status, NULL);
    atomic_store(&group_drained, true);
}

/* Waits for the drain to end; a second signal meanwhile exits at once, as
 * with one loop. */
static void wait_group_drained(const sigset_t *stop_set)
{
    const struct timespec tick = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
    while (!atomic_load(&group_drained)) {
        if (sigtimedwait(stop_set, NULL, &tick) > 0) {
            fprintf(stderr, "echo_server: exiting without a clean shutdown\n");
            _exit(1);
        }
    }
}

/* The same server on a group of loops. The signals are blocked before the
 * group's threads start (they inherit the mask) and this thread waits for
 * them with sigwait(): the group's graceful stop then closes the
 * listeners and every connection, each on its own loop's thread. With
 * --drain-on-signal, tether_loop_group_shutdown() first drains every
 * loop's connections (GOAWAY), as tether_listener_shutdown() does with
 * one loop. */
static int run_threaded(struct options *opt)
{
    sigset_t stop_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGINT);
    sigaddset(&stop_set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_set, NULL);

    static struct server srv;
    tether_error err;
    int rv = tether_loop_group_new(&srv.group, opt->threads.n, NULL, &err);
    if (rv != TETHER_OK) {
        fprintf(stderr, "error: cannot create the loops: %s\n", err.message);
        return 1;
    }
    size_t n = tether_loop_group_count(srv.group);
    srv.shards = calloc(n, sizeof *srv.shards);
    tether_conn_opts co;
    conn_options(opt, &co);
    tether_tls_config *tls = NULL;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = on_accept;
    lo.on_error = on_listener_error;
    lo.userdata = &srv;
    lo.conn_opts = &co;
    bool ok = srv.shards != NULL && cli_tls_server(&opt->tls, opt->listen_url, false, &tls);
    for (size_t i = 0; ok && i < n; i++) {
        srv.shards[i].proxy = &opt->proxy;
        srv.shards[i].loop = tether_loop_group_loop(srv.group, i);
        ok = cli_limits_apply(&opt->limits, srv.shards[i].loop, &lo); /* per loop */
    }
    co.tls = tls;
    cli_proxy_apply(&opt->proxy, &lo);
    srv.proxy = &opt->proxy;
    tether_group_listener *gl = NULL;
    if (ok) {
        rv = tether_group_listen(&gl, srv.group, opt->listen_url, &lo, TETHER_BALANCE_AUTO, &err);
        if (rv != TETHER_OK) {
            fprintf(stderr, "error: %s\n", err.message);
            ok = false;
        }
    }
    tether_tls_config_unref(tls);
    if (ok) {
        rv = tether_loop_group_start(srv.group, &err);
        if (rv != TETHER_OK) {
            fprintf(stderr, "error: %s\n", err.message);
            ok = false;
        }
    }
    if (ok) {
        printf("listening on %s\n", tether_group_listener_url(gl));
        fflush(stdout);
        int sig = 0;
        sigwait(&stop_set, &sig);
        if (opt->drain_on_signal &&
            tether_loop_group_shutdown(srv.group, (int)opt->drain_timeout_ms, on_group_drained,
                                       NULL) == TETHER_OK) {
            printf("draining\n");
            fflush(stdout);
            wait_group_drained(&stop_set);
        } else {
            tether_loop_group_stop(srv.group);
        }
    }
    /* A second signal stays blocked and pending: the stop is bounded by
     * the group's stop timeout anyway. */
    tether_loop_group_join(srv.group);
    if (tether_loop_group_free(srv.group) != TETHER_OK) {
        fprintf(stderr, "error: the loops did not shut down cleanly\n");
        ok = false;
    }
    free(srv.shards);
    return ok ? 0 : 1;
}

/* ---- main -------------------------------------------------------------- */

int main(int argc, char **argv)
{
    struct options opt = {.framing = TETHER_FRAMING_LEN32, .timeouts = CLI_TIMEOUTS_INIT};
    int rv = parse_options(argc, argv, &opt);
    if (rv != 0) {
        return rv < 0 ? 0 : 1;
    }

    if (opt.threads.set) {
        return run_threaded(&opt);
    }
    static struct server srv; /* static: an early exit leaves it reachable */
    srv.drain_on_signal = opt.drain_on_signal;
    srv.drain_timeout_ms = opt.drain_timeout_ms > 0 ? (int)opt.drain_timeout_ms : 30000;
    rv = tether_loop_new(&srv.loop, NULL);
    if (rv != TETHER_OK) {
        fprintf(stderr, "error: cannot create the event loop: %s\n", tether_strerror(rv));
        return 1;
    }
    if (!cli_watch_stop_signals(srv.loop, srv.stop_signals, on_stop_signal, &srv)) {
        cli_unwatch_stop_signals(srv.stop_signals);
        tether_loop_free(srv.loop);
        return 1;
    }
    /* Options for every accepted connection (copied by tether_listen()). */
    tether_conn_opts co;
    conn_options(&opt, &co);
    /* TLS: one configuration for every connection (cli_tls_server() fills
     * a tether_tls_opts: cert_file, key_file, ca_file and client_auth, then
     * calls tether_tls_config_new(), which names a bad file). The listener
     * keeps its own reference, so ours goes as soon as tether_listen()
     * returns. */
    tether_tls_config *tls = NULL;
    if (!cli_tls_server(&opt.tls, opt.listen_url, false, &tls)) {
        cli_unwatch_stop_signals(srv.stop_signals);
        tether_loop_free(srv.loop);
        return 1;
    }
    co.tls = tls;

    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = on_accept;
    lo.on_error = on_listener_error;
    lo.userdata = &srv;
    lo.conn_opts = &co;
    if (!cli_limits_apply(&opt.limits, srv.loop, &lo)) {
        cli_unwatch_stop_signals(srv.stop_signals);
        tether_loop_free(srv.loop);
        return 1;
    }
    cli_proxy_apply(&opt.proxy, &lo);
    srv.proxy = &opt.proxy;

    tether_error err;
    rv = tether_listen(&srv.listener, srv.loop, opt.listen_url, &lo, &err);
    tether_tls_config_unref(tls);
    if (rv != TETHER_OK) {
        fprintf(stderr, "error: %s\n", err.message); /* e.g. "invalid URL '...': ..." */
        cli_unwatch_stop_signals(srv.stop_signals);
        tether_loop_free(srv.loop);
        return 1;
    }
    /* The socket is listening. Scripts wait for this line and read the port
     * from it, so it must not sit in stdout's buffer. */
    printf("listening on %s\n", tether_listener_url(srv.listener));
    fflush(stdout);

    rv = tether_loop_run(srv.loop);

    /* The signals stay blocked: one that arrives from here on waits,
     * unseen, until the process exits. */
    cli_unwatch_stop_signals(srv.stop_signals);
    if (rv != TETHER_OK || tether_loop_free(srv.loop) != TETHER_OK) {
        fprintf(stderr, "error: the event loop did not shut down cleanly\n");
        return 1;
    }
    return 0;
}
