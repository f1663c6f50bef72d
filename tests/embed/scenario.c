/* SPDX-License-Identifier: MIT */
/* The embedding tests' workload (see scenario.h). The client sends one
 * numbered message at a time, paced by a tether timer, and waits for its
 * echo; the gaps between messages are longer than the heartbeat interval,
 * so pings flow. After echoing message DROP_AT the server closes the
 * connection and the client must reconnect and carry on. */
#include "scenario.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    MSGS = 24,        /* messages to echo, in order */
    DROP_AT = 9,      /* the server drops the connection after echoing this one */
    PACE_MS = 60,     /* the pacing timer's period */
    HEARTBEAT_MS = 25 /* client pings after this long without input */
};

static struct {
    tether_loop *loop;
    tether_tls_config *srv_tls;
    tether_tls_config *cli_tls;
    tether_listener *l;
    tether_conn *srv[8];
    int nsrv;
    int srv_open;
    bool dropped;
    tether_client *cl;
    bool client_closed;
    tether_timer *pace;
    int next;        /* next message number to send */
    int outstanding; /* sent, echo not yet received; -1 if none */
    int echoed;      /* messages echoed in order */
    int dups;        /* repeated echoes of an already echoed message */
    int connected;   /* CONNECTED transitions */
    uint64_t pongs;  /* pongs received, summed over connections */
    uint64_t pings;
    bool shutting_down;
} S;

void embed_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL %s:%d: %s: ", file, line, cond);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

static tether_tls_config *tls_cfg(const char *certs, const char *cert, const char *key)
{
    char c[512], k[512], ca[512];
    snprintf(ca, sizeof ca, "%s/ca.pem", certs);
    snprintf(c, sizeof c, "%s/%s", certs, cert != NULL ? cert : "");
    snprintf(k, sizeof k, "%s/%s", certs, key != NULL ? key : "");
    tether_tls_opts o;
    tether_tls_opts_init(&o);
    o.ca_file = ca;
    o.cert_file = cert != NULL ? c : NULL;
    o.key_file = key != NULL ? k : NULL;
    tether_tls_config *cfg = NULL;
    tether_error err;
    int rv = tether_tls_config_new(&cfg, &o, &err);
    EMBED_CHECK(rv == TETHER_OK, "tls config: %s", err.message);
    return cfg;
}

/* ---- server ---------------------------------------------------------------- */

static void srv_on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)ud;
    int rv = tether_conn_send(c, data, len);
    EMBED_CHECK(rv == TETHER_OK, "echo: %s", tether_strerror(rv));
    int n = -1;
    if (len < 32) {
        char buf[32];
        memcpy(buf, data, len);
        buf[len] = '\0';
        n = atoi(buf + 4);
    }
    if (n == DROP_AT && !S.dropped) {
        /* The echo is queued first: a graceful close sends it, then ends
         * the connection under the client's feet. */
        S.dropped = true;
        tether_conn_close(c);
    }
}

static void srv_on_close(tether_conn *c, int reason, void *ud)
{
    (void)c;
    (void)reason;
    (void)ud;
    for (int i = 0; i < S.nsrv; i++) {
        if (S.srv[i] == c) {
            S.srv[i] = NULL;
        }
    }
    S.srv_open--;
}

static void srv_on_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    EMBED_CHECK(S.nsrv < (int)(sizeof S.srv / sizeof S.srv[0]), "too many accepted connections");
    S.srv[S.nsrv++] = c;
    S.srv_open++;
}

/* ---- client ---------------------------------------------------------------- */

static void cli_send(int n)
{
    char buf[32];
    int len = snprintf(buf, sizeof buf, "msg %d", n);
    int rv = tether_client_send(S.cl, buf, (size_t)len);
    EMBED_CHECK(rv == TETHER_OK, "client send %d: %s", n, tether_strerror(rv));
}

static void cli_on_message(tether_client *cl, const uint8_t *data, size_t len, void *ud)
{
    (void)cl;
    (void)ud;
    char buf[32];
    EMBED_CHECK(len > 4 && len < sizeof buf && memcmp(data, "msg ", 4) == 0,
                "unexpected echo of %zu bytes", len);
    memcpy(buf, data, len);
    buf[len] = '\0';
    int n = atoi(buf + 4);
    if (n == S.outstanding) {
        EMBED_CHECK(n == S.echoed, "echo %d arrived after %d others", n, S.echoed);
        S.echoed++;
        S.outstanding = -1;
    } else {
        /* A message resent across the reconnection may be echoed twice;
         * anything else is out of order. */
        EMBED_CHECK(n < S.echoed, "echo %d out of order (waiting for %d)", n, S.outstanding);
        S.dups++;
    }
}

static void cli_account_stats(void)
{
    tether_conn *c = tether_client_conn(S.cl);
    if (c == NULL) {
        return;
    }
    tether_stats st;
    if (tether_conn_get_stats(c, &st) == TETHER_OK) {
        S.pings += st.pings_sent;
        S.pongs += st.pongs_received;
    }
}

static void cli_on_state(tether_client *cl, const tether_client_event *ev, void *ud)
{
    (void)cl;
    (void)ud;
    if (ev->state == TETHER_CLIENT_CONNECTED) {
        S.connected++;
        if (S.outstanding >= 0) {
            /* Lost with the old connection, perhaps: send it again. */
            cli_send(S.outstanding);
        }
    } else if (ev->state == TETHER_CLIENT_CLOSED) {
        S.client_closed = true;
    }
}

static void shutdown_all(void)
{
    S.shutting_down = true;
    cli_account_stats();
    tether_timer_free(S.pace);
    S.pace = NULL;
    tether_client_close(S.cl);
    for (int i = 0; i < S.nsrv; i++) {
        if (S.srv[i] != NULL) {
            tether_conn_close(S.srv[i]);
        }
    }
    tether_listener_close(S.l);
    S.l = NULL;
}

static void pace_cb(tether_timer *t, void *ud)
{
    (void)t;
    (void)ud;
    if (S.echoed == MSGS) {
        shutdown_all();
        return;
    }
    if (S.outstanding < 0 && S.next < MSGS &&
        tether_client_get_state(S.cl) == TETHER_CLIENT_CONNECTED) {
        S.outstanding = S.next++;
        cli_send(S.outstanding);
    }
}

static void cli_before_drop_stats(tether_client *cl, const tether_client_event *ev, void *ud)
{
    if (ev->state == TETHER_CLIENT_DISCONNECTED) {
        /* The connection's own counters go with it: add them up first. */
        cli_account_stats();
    }
    cli_on_state(cl, ev, ud);
}

void embed_scenario_start(tether_loop *loop, const char *certs)
{
    memset(&S, 0, sizeof S);
    S.loop = loop;
    S.outstanding = -1;
    S.srv_tls = tls_cfg(certs, "server.pem", "server.key");
    S.cli_tls = tls_cfg(certs, NULL, NULL);

    tether_conn_opts sco;
    tether_conn_opts_init(&sco);
    sco.tls = S.srv_tls;
    sco.on_message = srv_on_message;
    sco.on_close = srv_on_close;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &sco;
    lo.on_accept = srv_on_accept;
    tether_error err;
    int rv = tether_listen(&S.l, loop, "tls://127.0.0.1:0", &lo, &err);
    EMBED_CHECK(rv == TETHER_OK, "listen: %s", err.message);

    char url[64];
    snprintf(url, sizeof url, "tls://127.0.0.1:%d", tether_listener_port(S.l));
    tether_conn_opts cco;
    tether_conn_opts_init(&cco);
    cco.tls = S.cli_tls;
    cco.heartbeat_ms = HEARTBEAT_MS;
    cco.connect_timeout_ms = 10000;
    tether_client_opts co;
    tether_client_opts_init(&co);
    co.conn_opts = &cco;
    co.on_message = cli_on_message;
    co.on_state = cli_before_drop_stats;
    co.initial_backoff_ms = 20;
    co.max_backoff_ms = 200;
    rv = tether_client_new(&S.cl, loop, url, &co, &err);
    EMBED_CHECK(rv == TETHER_OK, "client: %s", err.message);

    rv = tether_timer_new(&S.pace, loop);
    EMBED_CHECK(rv == TETHER_OK, "timer: %s", tether_strerror(rv));
    rv = tether_timer_start(S.pace, PACE_MS, PACE_MS, pace_cb, NULL);
    EMBED_CHECK(rv == TETHER_OK, "timer start: %s", tether_strerror(rv));
}

bool embed_scenario_finished(int run_once_rv)
{
    EMBED_CHECK(run_once_rv >= 0, "tether_loop_run_once: %s", tether_strerror(run_once_rv));
    return S.shutting_down && S.client_closed && S.srv_open == 0 && run_once_rv == 0;
}

void embed_scenario_verify(void)
{
    printf("echoed %d/%d in order (%d repeated), %d connections, %d server-side accepts, "
           "%llu pings, %llu pongs\n",
           S.echoed, MSGS, S.dups, S.connected, S.nsrv, (unsigned long long)S.pings,
           (unsigned long long)S.pongs);
    EMBED_CHECK(S.echoed == MSGS, "only %d of %d messages echoed", S.echoed, MSGS);
    EMBED_CHECK(S.dropped, "the server never dropped the connection");
    EMBED_CHECK(S.connected >= 2, "no reconnection (%d connections)", S.connected);
    EMBED_CHECK(S.nsrv >= 2, "the server accepted %d connections", S.nsrv);
    EMBED_CHECK(S.pings > 0 && S.pongs > 0, "heartbeats: %llu pings, %llu pongs",
                (unsigned long long)S.pings, (unsigned long long)S.pongs);
    tether_tls_config_unref(S.srv_tls);
    tether_tls_config_unref(S.cli_tls);
    int rv = tether_loop_free(S.loop);
    EMBED_CHECK(rv == TETHER_OK, "tether_loop_free: %s (handles left)", tether_strerror(rv));
}
