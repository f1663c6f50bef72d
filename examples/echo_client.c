/* SPDX-License-Identifier: MIT */
/* echo_client: sends messages to an echo server and checks every echo.
 *
 *   echo_client --connect tcp://127.0.0.1:7777 [--count N] [--size BYTES]
 *               [--framing len32|varint|line] [--max-msg BYTES] [--timeout MS]
 *   echo_client --connect tls://localhost:7777 --ca certs/ca.pem
 *               [--cert certs/client.pem --key certs/client.key]
 *               [--servername NAME] [--insecure]
 *   echo_client --connect tcp://db.test:7777 --dns-server 127.0.0.1:5353
 *               [--connect-timeout MS]
 *   echo_client --connect tcp://127.0.0.1:7777 --reconnect [--interval MS]
 *               [--heartbeat MS]
 *   echo_client --connect tcp://127.0.0.1:7777 --send-proxy v2
 *               [--proxy-source 127.0.0.10:4321]
 *   echo_client --connect ws://127.0.0.1:7777/echo [--text]
 *
 * What it shows:
 * - dialling with the event API and reading the outcome in `on_connect`;
 * - pipelining with flow control: send until tether_conn_send() returns
 *   TETHER_EAGAIN, then continue from `on_drain`, so the client never
 *   waits for one echo before sending the next, yet never queues more than
 *   the connection's high-water mark;
 * - turning every failure into one line that names the cause, using
 *   tether_error for failures before a connection exists and
 *   tether_conn_last_error() after;
 * - a timer as an overall deadline;
 * - with --reconnect, a reconnecting client (tether_client_new()) that
 *   completes its --count across server restarts. The echo is the only
 *   proof that the server got a message (a message written to a socket can
 *   still die with the connection), so after every reconnection the client
 *   sends again, from the first message whose echo is missing. It asks the
 *   library to hand back what it held instead of resending it
 *   (fail_fast), so that no message goes out twice;
 * - with --heartbeat, application heartbeats that notice a dead server
 *   even when no message is in flight;
 * - with a ws:// or wss:// URL, the same over WebSocket; --text sends
 *   text messages (printable ASCII) and checks that the echoes are text.
 *
 * Message i carries a pattern computed from i and the byte offset, so a lost,
 * repeated, reordered or corrupted message is caught. On success it prints
 * `ok N` and exits with 0; on any failure it prints one `error: ...` line to
 * stderr and exits with 1. */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tether/tether.h>

#include "common/cli.h" /* --help, --version, the TLS flags, number parsing */

struct options {
    const char *connect_url;
    size_t count;
    size_t size;
    tether_framing_kind framing;
    size_t max_msg; /* 0: the library's default */
    size_t timeout_ms;
    /* TLS (tls:// URLs): whom to trust, our certificate for servers that
     * ask for one, the name to verify instead of the URL's host, and the
     * explicitly insecure way to skip verification altogether. */
    struct cli_tls tls;
    /* Name resolution and connecting: DNS servers instead of the system's,
     * and the connect deadline (resolution + attempts + TLS handshake). */
    const char *dns_server;
    size_t connect_timeout_ms; /* 0: the library's default (20 s) */
    /* Liveness: reconnect across failures, pace the messages so that a
     * run can span a server restart, and heartbeats. */
    bool reconnect;
    bool text;          /* --text: WebSocket text messages */
    size_t interval_ms; /* 0: pipeline everything at once */
    size_t heartbeat_ms;
    /* As a load balancer would: --send-proxy, --proxy-source (common/cli.h). */
    struct cli_proxy_client proxy;
};

struct client {
    const struct options *opt;
    tether_conn *conn;   /* NULL once its on_close has run */
    tether_client *rc;   /* --reconnect: the reconnecting client instead */
    bool rc_up;          /* --reconnect: connected */
    tether_timer *timer; /* the overall deadline; NULL once finished */
    tether_timer *pace;  /* --interval: one message per tick */
    uint8_t *msg;        /* the next message to send (size bytes) */
    size_t msg_index;    /* which message msg holds, or SIZE_MAX */
    size_t sent;         /* messages accepted by tether_conn_send() */
    size_t received;     /* echoes checked */
    bool finished;       /* success or failure has been reported */
    int status;          /* exit status */
};

static const char usage[] =
    "usage: echo_client --connect URL [options]\n"
    "Sends messages to an echo server and checks every echo.\n\n"
    "  --connect URL     tcp://HOST:PORT, tcp://[::1]:PORT, tls://HOST:PORT,\n"
    "                    ws://HOST:PORT/PATH, wss://HOST:PORT/PATH (WebSocket),\n"
    "                    unix:///path, unix://@abstract-name, or through DNS SRV\n"
    "                    tcp+srv://_SERVICE._tcp.DOMAIN or tls+srv://...\n"
    "  --count N         messages to send (default 1)\n"
    "  --size BYTES      bytes per message (default 64; may be 0)\n"
    "  --framing KIND    len32 (default), varint or line\n"
    "  --max-msg BYTES   largest message allowed (default 16 MiB)\n"
    "  --timeout MS      give up after this long (default 30000)\n" CLI_USAGE_TLS_CLIENT
    "  --dns-server IP:PORT  resolve names with this DNS server (e.g. 127.0.0.1:5353\n"
    "                    or [::1]:53; a comma-separated list works too)\n"
    "  --connect-timeout MS  deadline for resolving and connecting (default 20000)\n"
    "  --reconnect       reconnect (with backoff) whenever the connection fails or is\n"
    "                    lost, and still complete --count; transitions go to stderr\n"
    "  --interval MS     send one message every MS ms instead of all at once\n"
    "  --heartbeat MS    application heartbeats: ping after MS ms of silence, give up\n"
    "                    on the server after 3 unanswered pings\n"
    "  --text            ws:// and wss:// only: send text messages and expect "
    "text\n" CLI_USAGE_PROXY_CLIENT CLI_USAGE_COMMON;

/* Byte `off` of message `index`. The index is mixed in so that messages
 * differ from each other, not only inside themselves. With --framing line
 * the bytes are printable ASCII, which never contains the "\n" delimiter. */
static uint8_t pattern_byte(size_t index, size_t off, bool printable)
{
    uint32_t v = (uint32_t)index * 131u + (uint32_t)(index >> 8) * 17u + (uint32_t)off * 7u +
                 (uint32_t)(off >> 8);
    return printable ? (uint8_t)('!' + v % 94u) : (uint8_t)v;
}

/* Reports the outcome once: the first failure is the cause, and whatever it
 * sets off afterwards (on_close, a late echo) is not reported again. */
static void finish(struct client *cl, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void finish(struct client *cl, int status, const char *fmt, ...)
{
    if (cl->finished) {
        return;
    }
    cl->finished = true;
    cl->status = status;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(status == 0 ? stdout : stderr, fmt, ap);
    va_end(ap);
    /* Free the deadline so that the loop runs dry and tether_loop_run()
     * returns once the connection has closed. */
    tether_timer_free(cl->timer);
    cl->timer = NULL;
    tether_timer_free(cl->pace);
    cl->pace = NULL;
    if (cl->rc != NULL) {
        tether_client_close(cl->rc); /* on_state reports CLOSED, then it is freed */
        return;
    }
    if (status == 0) {
        tether_conn_close(cl->conn); /* graceful: our side is done */
    } else {
        tether_conn_abort(cl->conn); /* NULL (already closed) is ignored */
    }
}

/* Sends through whichever handle this run uses. */
static int send_msg(struct client *cl, const uint8_t *data, size_t len)
{
    if (cl->rc != NULL) {
        return cl->rc_up ? tether_client_send(cl->rc, data, len) : TETHER_ENOTCONN;
    }
    return tether_conn_send(cl->conn, data, len);
}

/* Sends until done or the queue is full; on_drain calls it again. With
 * --interval, sends at most one message per call (the pace timer's). */
static void pump(struct client *cl)
{
    const struct options *opt = cl->opt;
    bool printable = opt->framing == TETHER_FRAMING_LINE || opt->text;
    size_t budget = opt->interval_ms > 0 ? 1 : SIZE_MAX;
    while (!cl->finished && cl->sent < opt->count && budget > 0) {
        if (cl->msg_index != cl->sent) { /* after EAGAIN the message is ready */
            for (size_t j = 0; j < opt->size; j++) {
                cl->msg[j] = pattern_byte(cl->sent, j, printable);
            }
            cl->msg_index = cl->sent;
        }
        int rv = send_msg(cl, cl->msg, opt->size);
        if (rv == TETHER_EAGAIN || rv == TETHER_ECLOSED || rv == TETHER_ENOTCONN) {
            /* EAGAIN: the echoes flowing back drain the queue and on_drain
             * calls us again. ECLOSED: it is ending; on_close says why.
             * ENOTCONN (--reconnect): the next connection resumes. */
            return;
        }
        if (rv != TETHER_OK) {
            finish(cl, 1, "error: cannot send message %zu: %s\n", cl->sent, tether_strerror(rv));
            return;
        }
        cl->sent++;
        budget--;
    }
}

static void on_connect(tether_conn *c, int status, void *ud)
{
    struct client *cl = ud;
    if (status != TETHER_OK) {
        /* e.g. "connect to tcp://127.0.0.1:9: connection refused" */
        const char *detail = tether_conn_last_error(c);
        finish(cl, 1, "error: %s\n", detail[0] != '\0' ? detail : tether_strerror(status));
        return;
    }
    if (cl->opt->count == 0) {
        finish(cl, 0, "ok 0\n");
        return;
    }
    if (cl->opt->interval_ms == 0) {
        pump(cl);
    }
}

static void on_drain(tether_conn *c, void *ud)
{
    (void)c;
    struct client *cl = ud;
    if (cl->opt->interval_ms == 0) {
        pump(cl);
    }
}

/* Checks one echo (from either kind of handle). */
static void check_echo(struct client *cl, const uint8_t *data, size_t len)
{
    const struct options *opt = cl->opt;
    if (cl->finished) {
        return;
    }
    if (cl->received >= cl->sent) {
        finish(cl, 1, "error: received a message nobody sent (after %zu echoes)\n", cl->received);
        return;
    }
    if (len != opt->size) {
        finish(cl, 1, "error: echo %zu has %zu bytes instead of %zu\n", cl->received, len,
               opt->size);
        return;
    }
    bool printable = opt->framing == TETHER_FRAMING_LINE || opt->text;
    for (size_t j = 0; j < len; j++) {
        if (data[j] != pattern_byte(cl->received, j, printable)) {
            finish(cl, 1, "error: echo %zu differs from what was sent at byte %zu\n", cl->received,
                   j);
            return;
        }
    }
    cl->received++;
    if (cl->received == opt->count) {
        finish(cl, 0, "ok %zu\n", cl->received);
    }
}

static void on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    struct client *cl = ud;
    if (cl->opt->text && !tether_ws_msg_is_text(c) && !cl->finished) {
        finish(cl, 1, "error: echo %zu came back as a binary message, not text\n", cl->received);
        return;
    }
    check_echo(cl, data, len);
}

/* ---- --reconnect ------------------------------------------------------- */

static void rc_on_state(tether_client *rc, const tether_client_event *ev, void *ud)
{
    (void)rc;
    struct client *cl = ud;
    switch (ev->state) {
    case TETHER_CLIENT_CONNECTED:
        cl->rc_up = true;
        /* Everything not echoed yet goes again, in order: the library
         * handed back what it still held (fail_fast), and what it had
         * written may have died with the old connection. */
        cl->sent = cl->received;
        if (cl->opt->count == 0) {
            finish(cl, 0, "ok 0\n");
        } else if (cl->opt->interval_ms == 0) {
            pump(cl);
        }
        break;
    case TETHER_CLIENT_WAITING:
        cl->rc_up = false;
        if (!cl->finished) {
            fprintf(stderr, "echo_client: disconnected: %s; retrying in %.2f s\n",
                    ev->detail[0] != '\0' ? ev->detail : tether_strerror(ev->reason),
                    ev->delay_ms / 1000.0);
        }
        break;
    case TETHER_CLIENT_DISCONNECTED:
        cl->rc_up = false;
        break;
    case TETHER_CLIENT_GAVE_UP:
        finish(cl, 1, "error: gave up: %s\n", ev->detail);
        break;
    case TETHER_CLIENT_CLOSED:
        cl->rc = NULL; /* freed when this returns */
        break;
    default:
        break;
    }
}

static void rc_on_message(tether_client *rc, const uint8_t *data, size_t len, void *ud)
{
    (void)rc;
    check_echo(ud, data, len);
}

static void rc_on_drain(tether_client *rc, void *ud)
{
    (void)rc;
    struct client *cl = ud;
    if (cl->opt->interval_ms == 0) {
        pump(cl);
    }
}

/* The pace timer of --interval. */
static void on_pace(tether_timer *t, void *ud)
{
    (void)t;
    pump(ud);
}

static void on_close(tether_conn *c, int reason, void *ud)
{
    struct client *cl = ud;
    const char *detail = tether_conn_last_error(c);
    finish(cl, 1, "error: connection closed after %zu of %zu echoes: %s\n", cl->received,
           cl->opt->count, detail[0] != '\0' ? detail : tether_strerror(reason));
    cl->conn = NULL; /* freed when this returns */
}

static void on_timeout(tether_timer *t, void *ud)
{
    (void)t;
    struct client *cl = ud;
    finish(cl, 1, "error: timed out after %zu ms with %zu of %zu echoes\n", cl->opt->timeout_ms,
           cl->received, cl->opt->count);
}

/* ---- options ----------------------------------------------------------- */

/* Returns 0 to run, 1 after a usage error (reported), -1 after --help or
 * --version. A new flag is an enum value, a line in the table and a case. */
static int parse_options(int argc, char **argv, struct options *opt)
{
    enum {
        OPT_CONNECT = 256,
        OPT_COUNT,
        OPT_SIZE,
        OPT_FRAMING,
        OPT_MAX_MSG,
        OPT_TIMEOUT,
        OPT_DNS_SERVER,
        OPT_CONNECT_TIMEOUT,
        OPT_RECONNECT,
        OPT_INTERVAL,
        OPT_HEARTBEAT,
        OPT_TEXT
    };
    static const struct option longopts[] = {
        {"connect", required_argument, NULL, OPT_CONNECT},
        {"count", required_argument, NULL, OPT_COUNT},
        {"size", required_argument, NULL, OPT_SIZE},
        {"framing", required_argument, NULL, OPT_FRAMING},
        {"max-msg", required_argument, NULL, OPT_MAX_MSG},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"dns-server", required_argument, NULL, OPT_DNS_SERVER},
        {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
        {"reconnect", no_argument, NULL, OPT_RECONNECT},
        {"interval", required_argument, NULL, OPT_INTERVAL},
        {"heartbeat", required_argument, NULL, OPT_HEARTBEAT},
        {"text", no_argument, NULL, OPT_TEXT},
        CLI_LONGOPTS_TLS_CLIENT,
        CLI_LONGOPTS_PROXY_CLIENT,
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
        case OPT_COUNT:
            if (!cli_parse_size(optarg, &opt->count)) {
                r = cli_bad_value("count", optarg, "a number of messages");
            }
            break;
        case OPT_SIZE:
            if (!cli_parse_size(optarg, &opt->size)) {
                r = cli_bad_value("size", optarg, "a number of bytes");
            }
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
        case OPT_TIMEOUT:
            if (!cli_parse_ms(optarg, &opt->timeout_ms)) {
                r = cli_bad_value("timeout", optarg, "milliseconds, at least 1");
            }
            break;
        case OPT_DNS_SERVER:
            opt->dns_server = optarg;
            break;
        case OPT_CONNECT_TIMEOUT:
            if (!cli_parse_ms(optarg, &opt->connect_timeout_ms)) {
                r = cli_bad_value("connect-timeout", optarg, "milliseconds, at least 1");
            }
            break;
        case OPT_RECONNECT:
            opt->reconnect = true;
            break;
        case OPT_INTERVAL:
            if (!cli_parse_ms(optarg, &opt->interval_ms)) {
                r = cli_bad_value("interval", optarg, "milliseconds, at least 1");
            }
            break;
        case OPT_HEARTBEAT:
            if (!cli_parse_ms(optarg, &opt->heartbeat_ms)) {
                r = cli_bad_value("heartbeat", optarg, "milliseconds, at least 1");
            }
            break;
        case OPT_TEXT:
            opt->text = true;
            break;
        default:
            r = cli_proxy_client_option(ch, optarg, &opt->proxy);
            if (r == CLI_NOT_MINE) {
                r = cli_option("echo_client", usage, ch, argv, &opt->tls);
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
    if (opt->connect_url == NULL) {
        fprintf(stderr, "error: --connect URL is required (see --help)\n");
        return 1;
    }
    if (!cli_check_max_msg(opt->max_msg) || !cli_check_size(opt->size, opt->max_msg)) {
        return 1;
    }
    if (opt->text && strncmp(opt->connect_url, "ws://", 5) != 0 &&
        strncmp(opt->connect_url, "wss://", 6) != 0) {
        fprintf(stderr, "error: --text needs a ws:// or wss:// URL, not %s\n", opt->connect_url);
        return 1;
    }
    if (opt->heartbeat_ms > 0 && opt->framing != TETHER_FRAMING_LEN32) {
        fprintf(stderr, "error: --heartbeat needs --framing len32\n");
        return 1;
    }
    return 0;
}

/* ---- main -------------------------------------------------------------- */

int main(int argc, char **argv)
{
    struct options opt = {
        .count = 1, .size = 64, .framing = TETHER_FRAMING_LEN32, .timeout_ms = 30000};
    int rv = parse_options(argc, argv, &opt);
    if (rv != 0) {
        return rv < 0 ? 0 : 1;
    }

    struct client cl = {.opt = &opt, .msg_index = SIZE_MAX};
    cl.msg = malloc(opt.size > 0 ? opt.size : 1);
    /* The loop's resolver: --dns-server replaces /etc/resolv.conf's. */
    tether_loop_opts lo;
    tether_loop_opts_init(&lo);
    lo.dns_servers = opt.dns_server;
    tether_loop *loop = NULL;
    rv = cl.msg == NULL ? TETHER_ENOMEM : tether_loop_new(&loop, &lo);
    if (rv == TETHER_EINVAL) {
        fprintf(stderr, "error: --dns-server: invalid value '%s' (expected IP or IP:PORT)\n",
                opt.dns_server);
        free(cl.msg);
        return 1;
    }
    if (rv != TETHER_OK || tether_timer_new(&cl.timer, loop) != TETHER_OK ||
        (opt.interval_ms > 0 && tether_timer_new(&cl.pace, loop) != TETHER_OK)) {
        fprintf(stderr, "error: out of memory\n");
        return 1;
    }

    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.userdata = &cl;
    co.framing = opt.framing;
    if (opt.max_msg > 0) {
        co.max_msg = opt.max_msg;
    }
    co.on_connect = on_connect;
    co.on_message = on_message;
    co.on_drain = on_drain;
    co.on_close = on_close;
    if (opt.connect_timeout_ms > 0) {
        co.connect_timeout_ms = (int)opt.connect_timeout_ms;
    }
    co.heartbeat_ms = (int)opt.heartbeat_ms;
    tether_ws_opts wso; /* ws:// and wss:// */
    tether_ws_opts_init(&wso);
    wso.text = opt.text;
    co.ws = &wso;
    if (!cli_proxy_client_apply(&opt.proxy, &co)) {
        tether_timer_free(cl.timer);
        tether_timer_free(cl.pace);
        tether_loop_free(loop);
        free(cl.msg);
        return 1;
    }
    /* TLS: without any flag a tls:// URL uses the system's trust store.
     * cli_tls_client() fills a tether_tls_opts (ca_file, cert_file,
     * key_file, server_name, insecure_skip_verify) and calls
     * tether_tls_config_new(). The connection keeps its own reference. */
    tether_tls_config *tls = NULL;
    tether_error err;
    if (!cli_tls_client(&opt.tls, opt.connect_url, &tls)) {
        tether_timer_free(cl.timer);
        tether_timer_free(cl.pace);
        tether_loop_free(loop);
        free(cl.msg);
        return 1;
    }
    co.tls = tls;

    /* A malformed URL or bad option is reported here, before any callback;
     * the message says what is wrong ("invalid URL '...': missing port"). */
    if (opt.reconnect) {
        /* The connection options apply to every attempt; the client's own
         * callbacks replace the connection's. The deadline (--timeout)
         * bounds the whole run, however many attempts it takes. */
        tether_client_opts ro;
        tether_client_opts_init(&ro);
        ro.userdata = &cl;
        ro.on_state = rc_on_state;
        ro.on_message = rc_on_message;
        ro.on_drain = rc_on_drain;
        ro.conn_opts = &co;
        ro.fail_fast = true; /* we resend from the first missing echo ourselves */
        rv = tether_client_new(&cl.rc, loop, opt.connect_url, &ro, &err);
    } else {
        rv = tether_conn_dial(&cl.conn, loop, opt.connect_url, &co, &err);
    }
    tether_tls_config_unref(tls);
    if (rv != TETHER_OK) {
        fprintf(stderr, "error: %s\n", err.message);
        tether_timer_free(cl.timer);
        tether_timer_free(cl.pace);
        tether_loop_free(loop);
        free(cl.msg);
        return 1;
    }
    tether_timer_start(cl.timer, opt.timeout_ms, 0, on_timeout, &cl);
    if (cl.pace != NULL) {
        tether_timer_start(cl.pace, opt.interval_ms, opt.interval_ms, on_pace, &cl);
    }

    /* Runs until finish() has freed the timer and the connection has
     * closed: then nothing is active any more. */
    rv = tether_loop_run(loop);
    if (rv != TETHER_OK && !cl.finished) {
        fprintf(stderr, "error: the event loop failed: %s\n", tether_strerror(rv));
        cl.status = 1;
    }
    tether_loop_free(loop);
    free(cl.msg);
    return cl.status;
}
