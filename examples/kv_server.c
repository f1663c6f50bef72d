/* SPDX-License-Identifier: MIT */
/* kv_server: a tiny in-memory key-value store served with request/response
 * calls (tether_conn_opts::calls, tether_conn_msg_call_id(),
 * tether_conn_reply()).
 *
 *   kv_server --listen tcp://127.0.0.1:7700 [--delay MS] [--verbose]
 *   kv_server --listen tls://127.0.0.1:7700 --cert certs/server.pem
 *             --key certs/server.key
 *
 * Requests are text: `set KEY VALUE`, `get KEY`, `del KEY`; the replies are
 * `ok`, `value VALUE`, `missing` or `error: ...`. A request made with
 * tether_call() (see kv_client) is answered with tether_conn_reply() and
 * its id; a plain message (a client that speaks only the length-prefixed
 * framing) is answered with a plain message, in order.
 *
 * With --delay MS the server holds the replies to calls and sends them
 * every MS ms, newest first: replies may come later than the request and
 * in any order, and the caller still matches each to its call. --verbose
 * logs what tether says at debug level on stderr, among it the line for a
 * client that did not negotiate calls.
 *
 * It prints `listening on URL` once clients can connect and stops cleanly
 * on SIGINT or SIGTERM (exit status 0). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tether/tether.h>

#include "common/cli.h"

#define KV_MAX 1024   /* keys held at most */
#define KV_LEN 256    /* longest key or value */
#define HELD_MAX 4096 /* delayed replies held per connection at most */

static const char usage[] =
    "usage: kv_server --listen URL [--delay MS] [--verbose] [options]\n"
    "A key-value store answering set/get/del requests until SIGINT or SIGTERM.\n\n"
    "  --listen URL      tcp://HOST:PORT (port 0 picks one), tls://HOST:PORT (with\n"
    "                    --cert and --key), unix:///path\n"
    "  --delay MS        hold replies to calls and send them every MS ms, newest first\n"
    "  --verbose         log tether's debug messages on stderr\n" CLI_USAGE_TLS_SERVER
        CLI_USAGE_COMMON;

struct kv {
    char key[KV_LEN + 1];
    char value[KV_LEN + 1];
    bool used;
};

/* A reply held back by --delay. */
struct held {
    uint32_t id;
    size_t len;
    char text[KV_LEN + 16];
};

struct kv_conn {
    tether_conn *conn;
    struct kv_conn *prev, *next;
    struct held *held; /* --delay: replies waiting for the timer */
    size_t nheld;
};

static struct {
    struct kv store[KV_MAX];
    tether_loop *loop;
    tether_listener *listener;
    tether_timer *timer; /* --delay */
    size_t delay_ms;
    struct kv_conn *conns;
    tether_signal *stop_signals[2];
    bool stopping;
} srv;

/* ---- the store ----------------------------------------------------------- */

static struct kv *kv_find(const char *key)
{
    for (size_t i = 0; i < KV_MAX; i++) {
        if (srv.store[i].used && strcmp(srv.store[i].key, key) == 0) {
            return &srv.store[i];
        }
    }
    return NULL;
}

/* Runs one request; the reply goes to out (NUL-terminated). */
static void kv_exec(const uint8_t *data, size_t len, char *out, size_t cap)
{
    char req[2 * KV_LEN + 8];
    if (len >= sizeof req) {
        snprintf(out, cap, "error: request longer than %zu bytes", sizeof req - 1);
        return;
    }
    memcpy(req, data, len);
    req[len] = '\0';
    char *save = NULL;
    char *verb = strtok_r(req, " ", &save);
    char *key = strtok_r(NULL, " ", &save);
    char *value = strtok_r(NULL, "", &save);
    if (verb == NULL || key == NULL || strlen(key) > KV_LEN ||
        (value != NULL && strlen(value) > KV_LEN)) {
        snprintf(out, cap, "error: expected 'set KEY VALUE', 'get KEY' or 'del KEY'");
        return;
    }
    struct kv *e = kv_find(key);
    if (strcmp(verb, "get") == 0 && value == NULL) {
        snprintf(out, cap, e != NULL ? "value %s" : "missing", e != NULL ? e->value : "");
    } else if (strcmp(verb, "del") == 0 && value == NULL) {
        if (e != NULL) {
            e->used = false;
        }
        snprintf(out, cap, e != NULL ? "ok" : "missing");
    } else if (strcmp(verb, "set") == 0 && value != NULL) {
        for (size_t i = 0; e == NULL && i < KV_MAX; i++) {
            if (!srv.store[i].used) {
                e = &srv.store[i];
                e->used = true;
                snprintf(e->key, sizeof e->key, "%s", key);
            }
        }
        if (e == NULL) {
            snprintf(out, cap, "error: the store is full (%d keys)", KV_MAX);
            return;
        }
        snprintf(e->value, sizeof e->value, "%s", value);
        snprintf(out, cap, "ok");
    } else {
        snprintf(out, cap, "error: expected 'set KEY VALUE', 'get KEY' or 'del KEY'");
    }
}

/* ---- connections ----------------------------------------------------------- */

static void on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    struct kv_conn *kc = ud;
    char reply[KV_LEN + 16];
    kv_exec(data, len, reply, sizeof reply);
    /* Valid here, inside on_message: the request's id, or 0 for a plain
     * message. */
    uint32_t id = tether_conn_msg_call_id(c);
    int rv;
    if (id == 0) {
        rv = tether_conn_send(c, reply, strlen(reply));
    } else if (srv.delay_ms > 0 && kc->nheld < HELD_MAX) {
        struct held *h = &kc->held[kc->nheld++];
        h->id = id;
        h->len = strlen(reply);
        memcpy(h->text, reply, h->len);
        return;
    } else {
        rv = tether_conn_reply(c, id, reply, strlen(reply));
    }
    if (rv != TETHER_OK) {
        /* A client that sends without reading its replies: let it go. */
        fprintf(stderr, "kv_server: cannot answer: %s\n", tether_strerror(rv));
        tether_conn_close(c);
    }
}

/* --delay: every connection's held replies go out, newest first. */
static void on_delay_timer(tether_timer *t, void *ud)
{
    (void)t, (void)ud;
    for (struct kv_conn *kc = srv.conns; kc != NULL; kc = kc->next) {
        while (kc->nheld > 0) {
            struct held *h = &kc->held[--kc->nheld];
            tether_conn_reply(kc->conn, h->id, h->text, h->len);
        }
    }
}

static void on_close(tether_conn *c, int reason, void *ud)
{
    struct kv_conn *kc = ud;
    if (reason != TETHER_OK && reason != TETHER_EOF) {
        fprintf(stderr, "kv_server: connection ended: %s\n", tether_conn_last_error(c));
    }
    if (kc == NULL) {
        return;
    }
    if (kc->prev != NULL) {
        kc->prev->next = kc->next;
    } else {
        srv.conns = kc->next;
    }
    if (kc->next != NULL) {
        kc->next->prev = kc->prev;
    }
    free(kc->held);
    free(kc);
}

static void on_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l, (void)ud;
    struct kv_conn *kc = calloc(1, sizeof *kc);
    if (kc != NULL && srv.delay_ms > 0) {
        kc->held = calloc(HELD_MAX, sizeof *kc->held);
    }
    if (kc == NULL || (srv.delay_ms > 0 && kc->held == NULL)) {
        free(kc);
        fprintf(stderr, "kv_server: out of memory accepting a connection\n");
        tether_conn_abort(c);
        return;
    }
    kc->conn = c;
    kc->next = srv.conns;
    if (srv.conns != NULL) {
        srv.conns->prev = kc;
    }
    srv.conns = kc;
    tether_conn_set_userdata(c, kc);
}

static void on_stop_signal(tether_signal *sig, int signum, void *ud)
{
    (void)sig, (void)signum, (void)ud;
    if (srv.stopping) {
        _exit(1);
    }
    srv.stopping = true;
    tether_listener_close(srv.listener);
    if (srv.timer != NULL) {
        tether_timer_free(srv.timer);
        srv.timer = NULL;
    }
    for (struct kv_conn *kc = srv.conns; kc != NULL; kc = kc->next) {
        tether_conn_close(kc->conn);
    }
}

static void log_to_stderr(tether_log_level level, const char *msg, void *ud)
{
    (void)level, (void)ud;
    fprintf(stderr, "kv_server: tether: %s\n", msg);
}

/* ---- main ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    enum {
        OPT_LISTEN = 256,
        OPT_DELAY,
        OPT_VERBOSE
    };
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, OPT_LISTEN},
        {"delay", required_argument, NULL, OPT_DELAY},
        {"verbose", no_argument, NULL, OPT_VERBOSE},
        CLI_LONGOPTS_TLS_SERVER,
        CLI_LONGOPTS_COMMON,
        {NULL, 0, NULL, 0},
    };
    const char *listen_url = NULL;
    bool verbose = false;
    struct cli_tls tls_flags = {0};
    opterr = 0;
    int ch, li = 0;
    while ((ch = getopt_long(argc, argv, ":h", longopts, &li)) != -1) {
        enum cli_result r = CLI_HANDLED;
        if (ch == OPT_LISTEN) {
            listen_url = optarg;
        } else if (ch == OPT_DELAY) {
            if (!cli_parse_ms(optarg, &srv.delay_ms)) {
                r = cli_bad_value("delay", optarg, "milliseconds, at least 1");
            }
        } else if (ch == OPT_VERBOSE) {
            verbose = true;
        } else {
            r = cli_option("kv_server", usage, ch, argv, &tls_flags);
        }
        if (r == CLI_EXIT_OK || r == CLI_EXIT_ERROR) {
            return r == CLI_EXIT_OK ? 0 : 1;
        }
    }
    if (cli_no_operands(argc, argv) == CLI_EXIT_ERROR) {
        return 1;
    }
    if (listen_url == NULL) {
        fprintf(stderr, "error: --listen URL is required (see --help)\n");
        return 1;
    }
    if (verbose) {
        tether_set_log(log_to_stderr, TETHER_LOG_DEBUG, NULL);
    }
    tether_tls_config *tls = NULL;
    if (!cli_tls_server(&tls_flags, listen_url, false, &tls)) {
        return 1;
    }
    int rv = tether_loop_new(&srv.loop, NULL);
    if (rv != TETHER_OK) {
        fprintf(stderr, "error: cannot create the event loop: %s\n", tether_strerror(rv));
        tether_tls_config_unref(tls);
        return 1;
    }
    if (!cli_watch_stop_signals(srv.loop, srv.stop_signals, on_stop_signal, NULL)) {
        cli_unwatch_stop_signals(srv.stop_signals);
        tether_tls_config_unref(tls);
        tether_loop_free(srv.loop);
        return 1;
    }
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.calls = true; /* announce HELLO capability bit 0 to clients that ask */
    co.on_message = on_message;
    co.on_close = on_close;
    co.tls = tls;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = on_accept;
    lo.conn_opts = &co;
    tether_error err;
    rv = tether_listen(&srv.listener, srv.loop, listen_url, &lo, &err);
    tether_tls_config_unref(tls);
    if (rv == TETHER_OK && srv.delay_ms > 0) {
        rv = tether_timer_new(&srv.timer, srv.loop);
        if (rv == TETHER_OK) {
            tether_timer_unref(srv.timer); /* the listener keeps the loop going */
            rv = tether_timer_start(srv.timer, srv.delay_ms, srv.delay_ms, on_delay_timer, NULL);
        }
        snprintf(err.message, sizeof err.message, "cannot start the delay timer: %s",
                 tether_strerror(rv));
    }
    if (rv != TETHER_OK) {
        fprintf(stderr, "error: %s\n", err.message);
        tether_timer_free(srv.timer);
        tether_listener_close(srv.listener);
        tether_loop_run(srv.loop);
        cli_unwatch_stop_signals(srv.stop_signals);
        tether_loop_free(srv.loop);
        return 1;
    }
    printf("listening on %s\n", tether_listener_url(srv.listener));
    fflush(stdout);
    rv = tether_loop_run(srv.loop);
    cli_unwatch_stop_signals(srv.stop_signals);
    if (rv != TETHER_OK || tether_loop_free(srv.loop) != TETHER_OK) {
        fprintf(stderr, "error: the event loop did not shut down cleanly\n");
        return 1;
    }
    return 0;
}
