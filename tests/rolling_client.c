/* SPDX-License-Identifier: MIT */
/* rolling_client: the load of the rolling-restart test
 * (tests/integration/rolling_restart.sh). N reconnecting clients
 * (tether_client, with control frames so that drains reach them) stream
 * numbered messages to an echo service and check every echo.
 *
 *   rolling_client URL CLIENTS INTERVAL_MS
 *
 * Every INTERVAL_MS each client sends one message: its client number and
 * a sequence number. It prints `running` once every client has connected.
 * On SIGTERM (or SIGINT) it stops sending, waits (at most 30 s) until
 * every message that tether_client_send() accepted has come back, closes
 * the clients and prints
 *
 *   sent S echoed E lost L duplicated D drains G
 *   lost L
 *
 * where lost counts accepted messages whose echo never came, and drains
 * the moves to a new connection after a GOAWAY. Exit status 0 when
 * nothing was lost or duplicated and something was sent, 1 otherwise. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tether/tether.h>

#define MAX_SEQ (1u << 16) /* per client; sending stops there */
#define MSG_LEN 64
#define WAIT_MS 30000

struct rc {
    struct app *app;
    tether_client *cl;
    uint32_t id;
    uint32_t sent;   /* accepted by tether_client_send */
    uint8_t *echoed; /* per sequence number: echoes received */
    uint32_t echoes;
    uint32_t dups;
    uint32_t drains;
    bool connected_once;
};

struct app {
    tether_loop *loop;
    struct rc *rcs;
    uint32_t n;
    uint32_t connected;
    bool stopping;
    bool done; /* every echo is in, or the wait is over */
    tether_timer *tick;
    tether_timer *deadline;
    tether_signal *sigs[2];
};

static void rc_on_message(tether_client *cl, const uint8_t *data, size_t len, void *ud)
{
    (void)cl;
    struct rc *r = ud;
    if (len != MSG_LEN) {
        fprintf(stderr, "rolling_client: client %u: a %zu-byte echo\n", r->id, len);
        r->dups++; /* counted as a failure */
        return;
    }
    uint32_t id =
        ((uint32_t)data[0] << 24) | ((uint32_t)data[1] << 16) | ((uint32_t)data[2] << 8) | data[3];
    uint32_t seq =
        ((uint32_t)data[4] << 24) | ((uint32_t)data[5] << 16) | ((uint32_t)data[6] << 8) | data[7];
    if (id != r->id || seq >= r->sent) {
        fprintf(stderr, "rolling_client: client %u: an echo of client %u seq %u\n", r->id, id, seq);
        r->dups++;
        return;
    }
    if (r->echoed[seq]++ > 0) {
        r->dups++;
        return;
    }
    r->echoes++;
}

static void rc_on_state(tether_client *cl, const tether_client_event *ev, void *ud)
{
    (void)cl;
    struct rc *r = ud;
    if (ev->state == TETHER_CLIENT_CONNECTED && !r->connected_once) {
        r->connected_once = true;
        if (++r->app->connected == r->app->n) {
            printf("running\n");
            fflush(stdout);
        }
    } else if (ev->state == TETHER_CLIENT_DISCONNECTED && ev->reason == TETHER_OK &&
               strstr(ev->detail, "(GOAWAY)") != NULL) {
        r->drains++;
    } else if (ev->state == TETHER_CLIENT_DISCONNECTED) {
        /* Not a drain: what was written to that connection may be lost
         * (said here, so that a failure shows where). */
        fprintf(stderr, "rolling_client: client %u: disconnected: %s (%s)\n", r->id,
                tether_err_name(ev->reason), ev->detail);
    }
}

static void rc_on_undelivered(tether_client *cl, const uint8_t *data, size_t len, int reason,
                              void *ud)
{
    (void)cl, (void)data, (void)len;
    struct rc *r = ud;
    fprintf(stderr, "rolling_client: client %u: a message was handed back (%s)\n", r->id,
            tether_err_name(reason));
}

static bool all_echoed(const struct app *a)
{
    for (uint32_t i = 0; i < a->n; i++) {
        if (a->rcs[i].echoes < a->rcs[i].sent) {
            return false;
        }
    }
    return true;
}

static void finish(struct app *a)
{
    a->done = true;
    tether_timer_stop(a->tick);
    tether_timer_stop(a->deadline);
    for (uint32_t i = 0; i < a->n; i++) {
        tether_client_close(a->rcs[i].cl);
    }
}

static void on_tick(tether_timer *t, void *ud)
{
    (void)t;
    struct app *a = ud;
    if (a->stopping) {
        if (all_echoed(a)) {
            finish(a);
        }
        return;
    }
    uint8_t m[MSG_LEN];
    memset(m, 0x3C, sizeof m);
    for (uint32_t i = 0; i < a->n; i++) {
        struct rc *r = &a->rcs[i];
        if (r->sent >= MAX_SEQ) {
            continue;
        }
        m[0] = (uint8_t)(r->id >> 24);
        m[1] = (uint8_t)(r->id >> 16);
        m[2] = (uint8_t)(r->id >> 8);
        m[3] = (uint8_t)r->id;
        m[4] = (uint8_t)(r->sent >> 24);
        m[5] = (uint8_t)(r->sent >> 16);
        m[6] = (uint8_t)(r->sent >> 8);
        m[7] = (uint8_t)r->sent;
        if (tether_client_send(r->cl, m, sizeof m) == TETHER_OK) {
            r->sent++;
        }
    }
}

static void on_deadline(tether_timer *t, void *ud)
{
    (void)t;
    struct app *a = ud;
    fprintf(stderr, "rolling_client: not every echo came back within %d ms\n", WAIT_MS);
    finish(a);
}

static void on_signal(tether_signal *sig, int signum, void *ud)
{
    (void)sig, (void)signum;
    struct app *a = ud;
    if (a->stopping) {
        return;
    }
    a->stopping = true;
    tether_timer_start(a->deadline, WAIT_MS, 0, on_deadline, a);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: rolling_client URL CLIENTS INTERVAL_MS\n");
        return 2;
    }
    static struct app a;
    a.n = (uint32_t)strtoul(argv[2], NULL, 10);
    unsigned long interval = strtoul(argv[3], NULL, 10);
    if (a.n == 0 || a.n > 1000 || interval == 0) {
        fprintf(stderr, "rolling_client: CLIENTS must be 1..1000 and INTERVAL_MS at least 1\n");
        return 2;
    }
    if (tether_loop_new(&a.loop, NULL) != TETHER_OK) {
        fprintf(stderr, "rolling_client: cannot create the loop\n");
        return 1;
    }
    static const int signums[2] = {SIGTERM, SIGINT};
    for (int i = 0; i < 2; i++) {
        tether_error err;
        if (tether_signal_new(&a.sigs[i], a.loop) != TETHER_OK ||
            tether_signal_start(a.sigs[i], signums[i], on_signal, &a, &err) != TETHER_OK) {
            fprintf(stderr, "rolling_client: cannot watch signals\n");
            return 1;
        }
        tether_signal_unref(a.sigs[i]);
    }
    a.rcs = calloc(a.n, sizeof *a.rcs);
    if (a.rcs == NULL || tether_timer_new(&a.tick, a.loop) != TETHER_OK ||
        tether_timer_new(&a.deadline, a.loop) != TETHER_OK) {
        fprintf(stderr, "rolling_client: out of memory\n");
        return 1;
    }
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.heartbeat_ms = 10000; /* control frames: the servers' drains reach us */
    for (uint32_t i = 0; i < a.n; i++) {
        struct rc *r = &a.rcs[i];
        r->app = &a;
        r->id = i;
        r->echoed = calloc(MAX_SEQ, 1);
        if (r->echoed == NULL) {
            fprintf(stderr, "rolling_client: out of memory\n");
            return 1;
        }
        tether_client_opts o;
        tether_client_opts_init(&o);
        o.userdata = r;
        o.conn_opts = &co;
        o.on_message = rc_on_message;
        o.on_state = rc_on_state;
        o.on_undelivered = rc_on_undelivered;
        o.initial_backoff_ms = 100;
        o.max_backoff_ms = 1000;
        o.reconnect_spread_ms = 200;
        tether_error err;
        if (tether_client_new(&r->cl, a.loop, argv[1], &o, &err) != TETHER_OK) {
            fprintf(stderr, "rolling_client: %s\n", err.message);
            return 1;
        }
    }
    tether_timer_start(a.tick, interval, interval, on_tick, &a);
    int rv = tether_loop_run(a.loop);
    if (rv != TETHER_OK) {
        fprintf(stderr, "rolling_client: the loop failed: %s\n", tether_strerror(rv));
        return 1;
    }
    uint64_t sent = 0, echoed = 0, dups = 0, drains = 0;
    for (uint32_t i = 0; i < a.n; i++) {
        struct rc *r = &a.rcs[i];
        sent += r->sent;
        echoed += r->echoes;
        dups += r->dups;
        drains += r->drains;
        free(r->echoed);
    }
    uint64_t lost = sent - echoed;
    printf("sent %llu echoed %llu lost %llu duplicated %llu drains %llu\n",
           (unsigned long long)sent, (unsigned long long)echoed, (unsigned long long)lost,
           (unsigned long long)dups, (unsigned long long)drains);
    printf("lost %llu\n", (unsigned long long)lost);
    tether_timer_free(a.tick);
    tether_timer_free(a.deadline);
    for (int i = 0; i < 2; i++) {
        tether_signal_free(a.sigs[i]);
    }
    free(a.rcs);
    if (tether_loop_free(a.loop) != TETHER_OK) {
        fprintf(stderr, "rolling_client: the loop did not shut down cleanly\n");
        return 1;
    }
    return lost == 0 && dups == 0 && sent > 0 ? 0 : 1;
}
