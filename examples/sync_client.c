/* SPDX-License-Identifier: MIT */
/* sync_client: the blocking API in about thirty lines: connect with a
 * timeout, send one message, receive one, close.
 *
 *   sync_client --connect URL [--message TEXT] [--timeout MS]
 *   sync_client --connect tls://localhost:7000 --message "hello" --ca certs/ca.pem
 *               [--cert certs/client.pem --key certs/client.key]
 *               [--servername NAME] [--insecure]
 *
 * Against echo_server it prints the message (default "hello"), echoed, and
 * exits with 0. Any failure is one `error: ...` line on stderr (e.g.
 * `error: connect to tcp://127.0.0.1:9: connection refused`, `error: no
 * message within 5000 ms`) and exit status 1. Every call waits at most
 * --timeout milliseconds (default 5000): a blocking call that can hang
 * forever is a bug.
 *
 * No event loop, no callbacks: each tether_sync_* call runs a private loop
 * until its work is done or its deadline passes, like Python's socket
 * module, but with whole messages. */
#include <stdio.h>
#include <string.h>

#include <tether/tether.h>

#include "common/cli.h" /* --help, --version, the TLS flags, number parsing */

static const char usage[] =
    "usage: sync_client --connect URL [--message TEXT] [--timeout MS] [options]\n"
    "Sends one message to an echo server with the blocking API and prints the reply.\n\n"
    "  --connect URL     tcp://HOST:PORT, tls://HOST:PORT, unix:///path, or\n"
    "                    tcp+srv://_SERVICE._tcp.DOMAIN, tls+srv://... (DNS SRV)\n"
    "  --message TEXT    what to send (default \"hello\")\n"
    "  --timeout MS      how long each step may take (default 5000)\n" CLI_USAGE_TLS_CLIENT
        CLI_USAGE_COMMON;

struct options {
    const char *connect_url;
    const char *message;
    size_t timeout_ms;
    struct cli_tls tls;
};

/* Returns 0 to run, 1 after a usage error (reported), -1 after --help or
 * --version. */
static int parse_options(int argc, char **argv, struct options *opt)
{
    enum {
        OPT_CONNECT = 256,
        OPT_MESSAGE,
        OPT_TIMEOUT
    };
    static const struct option longopts[] = {
        {"connect", required_argument, NULL, OPT_CONNECT},
        {"message", required_argument, NULL, OPT_MESSAGE},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
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
        case OPT_MESSAGE:
            opt->message = optarg;
            break;
        case OPT_TIMEOUT:
            if (!cli_parse_ms(optarg, &opt->timeout_ms)) {
                r = cli_bad_value("timeout", optarg, "milliseconds, at least 1");
            }
            break;
        default:
            r = cli_option("sync_client", usage, ch, argv, &opt->tls);
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
    return 0;
}

int main(int argc, char **argv)
{
    struct options opt = {.message = "hello", .timeout_ms = 5000};
    int rv = parse_options(argc, argv, &opt);
    if (rv != 0) {
        return rv < 0 ? 0 : 1;
    }
    int timeout_ms = (int)opt.timeout_ms;

    /* ---- the blocking API ---- */
    tether_error err;
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    /* --ca, --cert, ... become co.tls (see common/cli.c); NULL without
     * them: a tls:// URL then trusts the system's CAs. */
    if (!cli_tls_client(&opt.tls, opt.connect_url, &co.tls)) {
        return 1;
    }
    tether_sync *s;
    rv = tether_sync_connect(&s, opt.connect_url, &co, timeout_ms, &err);
    tether_tls_config_unref(co.tls); /* the connection keeps its own reference */
    if (rv != TETHER_OK) {
        fprintf(stderr, "error: %s\n", err.message);
        return 1;
    }
    tether_msg reply;
    rv = tether_sync_send(s, opt.message, strlen(opt.message), timeout_ms);
    if (rv == TETHER_OK) {
        rv = tether_sync_recv(s, &reply, timeout_ms);
    }
    if (rv != TETHER_OK) {
        const char *detail = tether_sync_last_error(s);
        fprintf(stderr, "error: %s\n", detail[0] != '\0' ? detail : tether_strerror(rv));
        tether_sync_close(s);
        return 1;
    }
    printf("%.*s\n", (int)reply.len, (const char *)reply.data);
    tether_msg_free(&reply);
    return tether_sync_close(s) == TETHER_OK ? 0 : 1;
}
