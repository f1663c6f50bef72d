/* SPDX-License-Identifier: MIT */
/* kv_client: talks to kv_server with request/response calls (tether_call).
 *
 *   kv_client --connect URL [--timeout MS] [--sync] REQUEST...
 *   kv_client --connect tcp://127.0.0.1:7700 "set a 1" "set b 2" "get a" "del b"
 *
 * Every REQUEST is sent at once as its own call, without waiting for the
 * earlier ones (the replies may come back in any order: see kv_server
 * --delay); the replies are printed in the order of the requests, one line
 * each, `REQUEST: REPLY`. A call that gets no reply within --timeout
 * milliseconds (default 5000) fails, and so does every pending call when
 * the connection ends; each failure is a line `error: REQUEST: why` on
 * stderr and the exit status is 1.
 *
 * With --sync the same requests go one at a time through the blocking API
 * (tether_sync_call()).
 *
 * The client and the server both set tether_conn_opts::calls; HELLO
 * control frames agree on it when the connection starts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tether/tether.h>

#include "common/cli.h"

static const char usage[] =
    "usage: kv_client --connect URL [--timeout MS] [--sync] REQUEST...\n"
    "Sends each REQUEST ('set KEY VALUE', 'get KEY', 'del KEY') to kv_server as a call\n"
    "and prints the replies in order.\n\n"
    "  --connect URL     tcp://HOST:PORT, tls://HOST:PORT, unix:///path\n"
    "  --timeout MS      how long each call may wait for its reply (default 5000)\n"
    "  --sync            one call at a time, with the blocking API\n" CLI_USAGE_TLS_CLIENT
        CLI_USAGE_COMMON;

/* One request and what became of it. */
struct req {
    const char *text;
    int status; /* 1 while pending */
    char *reply;
    size_t reply_len;
};

static struct {
    struct req *reqs;
    int n;
    int pending;
    tether_conn *conn;
    int connect_status;
    bool closed;
} cl;

static void on_reply(tether_conn *c, int status, const uint8_t *data, size_t len, void *ud)
{
    struct req *r = ud;
    r->status = status;
    if (status == TETHER_OK) {
        r->reply = malloc(len + 1);
        if (r->reply == NULL) {
            r->status = TETHER_ENOMEM;
        } else {
            memcpy(r->reply, data, len);
            r->reply_len = len;
        }
    }
    if (--cl.pending == 0) {
        tether_conn_close(c); /* every call has ended */
    }
}

static void on_connect(tether_conn *c, int status, void *ud)
{
    (void)c, (void)ud;
    cl.connect_status = status;
}

static void on_close(tether_conn *c, int reason, void *ud)
{
    (void)reason, (void)ud;
    if (cl.connect_status != TETHER_OK) {
        fprintf(stderr, "error: %s\n", tether_conn_last_error(c));
    }
    cl.closed = true;
}

/* The event API: every call at once. */
static int run_async(const char *url, const tether_conn_opts *base, int timeout_ms)
{
    tether_loop *loop = NULL;
    int rv = tether_loop_new(&loop, NULL);
    if (rv != TETHER_OK) {
        fprintf(stderr, "error: cannot create the event loop: %s\n", tether_strerror(rv));
        return 1;
    }
    tether_conn_opts co = *base;
    co.on_connect = on_connect;
    co.on_close = on_close;
    tether_error err;
    rv = tether_conn_dial(&cl.conn, loop, url, &co, &err);
    if (rv != TETHER_OK) {
        fprintf(stderr, "error: %s\n", err.message);
        tether_loop_free(loop);
        return 1;
    }
    /* Right away: calls made before the server's HELLO are kept until it
     * says it takes calls, then sent in order. */
    for (int i = 0; i < cl.n; i++) {
        struct req *r = &cl.reqs[i];
        r->status = 1;
        rv = tether_call(cl.conn, r->text, strlen(r->text), timeout_ms, on_reply, r, NULL);
        if (rv != TETHER_OK) {
            fprintf(stderr, "error: %s: %s\n", r->text,
                    rv == TETHER_ENOTSUP ? tether_conn_last_error(cl.conn) : tether_strerror(rv));
            r->status = 2; /* reported */
            continue;
        }
        cl.pending++;
    }
    if (cl.pending == 0) {
        tether_conn_close(cl.conn);
    }
    tether_loop_run(loop);
    tether_loop_free(loop);
    return 0;
}

/* The blocking API: one call after the other. */
static int run_sync(const char *url, const tether_conn_opts *co, int timeout_ms)
{
    tether_sync *s = NULL;
    tether_error err;
    if (tether_sync_connect(&s, url, co, timeout_ms, &err) != TETHER_OK) {
        fprintf(stderr, "error: %s\n", err.message);
        return 1;
    }
    for (int i = 0; i < cl.n; i++) {
        struct req *r = &cl.reqs[i];
        tether_msg m;
        r->status = tether_sync_call(s, r->text, strlen(r->text), &m, timeout_ms);
        if (r->status == TETHER_OK) {
            r->reply = (char *)m.data; /* ours now; freed with free() */
            r->reply_len = m.len;
        } else {
            fprintf(stderr, "error: %s: %s\n", r->text, tether_sync_last_error(s));
            r->status = 2; /* reported */
        }
    }
    tether_sync_close(s);
    return 0;
}

int main(int argc, char **argv)
{
    enum {
        OPT_CONNECT = 256,
        OPT_TIMEOUT,
        OPT_SYNC
    };
    static const struct option longopts[] = {
        {"connect", required_argument, NULL, OPT_CONNECT},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"sync", no_argument, NULL, OPT_SYNC},
        CLI_LONGOPTS_TLS_CLIENT,
        CLI_LONGOPTS_COMMON,
        {NULL, 0, NULL, 0},
    };
    const char *url = NULL;
    size_t timeout_ms = 5000;
    bool sync = false;
    struct cli_tls tls_flags = {0};
    opterr = 0;
    int ch, li = 0;
    while ((ch = getopt_long(argc, argv, ":h", longopts, &li)) != -1) {
        enum cli_result r = CLI_HANDLED;
        if (ch == OPT_CONNECT) {
            url = optarg;
        } else if (ch == OPT_TIMEOUT) {
            if (!cli_parse_ms(optarg, &timeout_ms)) {
                r = cli_bad_value("timeout", optarg, "milliseconds, at least 1");
            }
        } else if (ch == OPT_SYNC) {
            sync = true;
        } else {
            r = cli_option("kv_client", usage, ch, argv, &tls_flags);
        }
        if (r == CLI_EXIT_OK || r == CLI_EXIT_ERROR) {
            return r == CLI_EXIT_OK ? 0 : 1;
        }
    }
    if (url == NULL) {
        fprintf(stderr, "error: --connect URL is required (see --help)\n");
        return 1;
    }
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.calls = true; /* request/response ids, agreed with the server's HELLO */
    if (!cli_tls_client(&tls_flags, url, &co.tls)) {
        return 1;
    }
    if (optind >= argc) {
        fprintf(stderr, "error: no REQUEST given, e.g. 'get KEY' (see --help)\n");
        tether_tls_config_unref(co.tls);
        return 1;
    }
    cl.n = argc - optind;
    cl.reqs = calloc((size_t)cl.n, sizeof *cl.reqs);
    if (cl.reqs == NULL) {
        fprintf(stderr, "error: out of memory\n");
        tether_tls_config_unref(co.tls);
        return 1;
    }
    for (int i = 0; i < cl.n; i++) {
        cl.reqs[i].text = argv[optind + i];
    }
    int rv = sync ? run_sync(url, &co, (int)timeout_ms) : run_async(url, &co, (int)timeout_ms);
    tether_tls_config_unref(co.tls);
    bool ok = rv == 0 && (sync || cl.connect_status == TETHER_OK);
    for (int i = 0; i < cl.n; i++) {
        struct req *r = &cl.reqs[i];
        if (r->status == TETHER_OK) {
            printf("%s: %.*s\n", r->text, (int)r->reply_len, r->reply);
        } else {
            ok = false;
            if (!sync && r->status < 0 && rv == 0 && cl.connect_status == TETHER_OK) {
                fprintf(stderr, "error: %s: %s\n", r->text,
                        r->status == TETHER_ETIMEDOUT ? "no reply in time"
                                                      : tether_strerror(r->status));
            }
        }
        free(r->reply);
    }
    free(cl.reqs);
    return ok ? 0 : 1;
}
