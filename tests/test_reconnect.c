/* SPDX-License-Identifier: MIT */
/* Reconnecting clients: the backoff schedule without sockets (injected
 * random numbers), then clients against servers that die, restart, cut
 * connections (through the fault-injection proxy) or refuse them, and a
 * reconnect storm of 200 clients. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"
#include "proxy/proxy.h"
#include "reconnect.h" /* private: the schedule and the random-source hook */

#ifndef TETHER_CERTS_DIR
#error "TETHER_CERTS_DIR must name the certs/ directory"
#endif

/* ---- the schedule, without sockets ---------------------------------------- */

START_TEST(backoff_schedule_sequence_and_cap)
{
    struct tether__backoff b;
    tether__backoff_init(&b, 1000, 1.6, 0.2, 120000);
    /* r = 0.5 is the middle of the jitter: the bare schedule. */
    static const uint32_t want[] = {1000,  1600,  2560,  4096,   6554,   10486,  16777,
                                    26844, 42950, 68719, 109951, 120000, 120000, 120000};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        uint32_t d = tether__backoff_next(&b, 0.5);
        ck_assert_msg(d == want[i], "attempt %zu: %u ms, want %u", i, d, want[i]);
    }
    /* Other parameters, exactly. */
    tether__backoff_init(&b, 100, 2.0, 0.0, 1000);
    static const uint32_t want2[] = {100, 200, 400, 800, 1000, 1000};
    for (size_t i = 0; i < sizeof want2 / sizeof want2[0]; i++) {
        ck_assert_uint_eq(tether__backoff_next(&b, 0.123), want2[i]);
    }
}
END_TEST

START_TEST(backoff_jitter_bounds_never_negative)
{
    struct tether__backoff b;
    /* The extremes of the random draw give exactly ±20 %. */
    tether__backoff_init(&b, 1000, 1.6, 0.2, 120000);
    ck_assert_uint_eq(tether__backoff_next(&b, 0.0), 800);
    ck_assert_uint_eq(tether__backoff_next(&b, 0.0), 1280);
    tether__backoff_reset(&b);
    ck_assert_uint_eq(tether__backoff_next(&b, 0.9999999), 1200);
    /* Many random draws stay inside the band around the un-jittered value,
     * and the cap holds (the jitter is applied after it, as in gRPC). */
    for (int run = 0; run < 200; run++) {
        tether__backoff_init(&b, 1000, 1.6, 0.2, 120000);
        double base = 1000;
        for (int i = 0; i < 20; i++) {
            uint32_t d = tether__backoff_next(&b, tether__random_unit());
            ck_assert_msg(d >= (uint32_t)(base * 0.8) && d <= (uint32_t)(base * 1.2 + 1),
                          "attempt %d: %u ms outside %.0f ± 20 %%", i, d, base);
            ck_assert_uint_le(d, 144000);
            base = base * 1.6 > 120000 ? 120000 : base * 1.6;
        }
    }
    /* Full jitter can reach 0 but never goes below it. */
    tether__backoff_init(&b, 1000, 1.6, 1.0, 120000);
    ck_assert_uint_eq(tether__backoff_next(&b, 0.0), 0);
    b.jitter = 3.0; /* not allowed by the options, clamped all the same */
    ck_assert_uint_eq(tether__backoff_next(&b, 0.0), 0);
}
END_TEST

START_TEST(backoff_reset_starts_over)
{
    struct tether__backoff b;
    tether__backoff_init(&b, 1000, 1.6, 0.2, 120000);
    for (int i = 0; i < 8; i++) {
        tether__backoff_next(&b, 0.5);
    }
    ck_assert_uint_gt(tether__backoff_next(&b, 0.5), 40000);
    tether__backoff_reset(&b);
    ck_assert_uint_eq(tether__backoff_next(&b, 0.5), 1000);
    ck_assert_uint_eq(tether__backoff_next(&b, 0.5), 1600);
}
END_TEST

/* ---- a server that can die and come back ---------------------------------------- */

#define MAXC 512
#define MAXSEQ 20000

struct rsrv {
    tether_listener *l;
    int port;
    tether_conn *conns[MAXC];
    int nconns;
    int accepted;
    bool abort_on_accept;
    bool pause_on_accept;
    int greet; /* messages each accepted connection sends at once */
    bool echo;
    bool tls;
    int rcvbuf;
    tether_tls_config *tls_cfg;
    /* Messages: the first 4 bytes are a sequence number, the rest a
     * pattern derived from it. */
    uint8_t seen[MAXSEQ];
    long msgs;
    long dups;
    long disorder;
    long corrupt;
    long last_seq;
    long first_seq_of[64]; /* per accepted connection */
    long msgs_of[64];
    int closes;
    int close_reasons[64];
};

static struct rsrv R;

static void r_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l, (void)ud;
    int idx = R.accepted++;
    tether_conn_set_userdata(c, (void *)(intptr_t)idx);
    if (idx < 64) {
        R.first_seq_of[idx] = -1;
    }
    if (R.abort_on_accept) {
        tether_conn_abort(c);
        return;
    }
    if (R.nconns < MAXC) {
        R.conns[R.nconns++] = c;
    }
    if (R.pause_on_accept) {
        tether_conn_pause(c);
    }
    for (int i = 0; i < R.greet; i++) {
        char g[32];
        int n = snprintf(g, sizeof g, "greeting %d of connection %d", i, idx);
        ck_assert_int_eq(tether_conn_send(c, g, (size_t)n), TETHER_OK);
    }
}

static void r_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    intptr_t idx = (intptr_t)ud;
    R.msgs++;
    if (len < 4) {
        R.corrupt++;
        return;
    }
    long seq = (long)(((uint32_t)data[0] << 24) | ((uint32_t)data[1] << 16) |
                      ((uint32_t)data[2] << 8) | data[3]);
    if (seq < 0 || seq >= MAXSEQ || !th_check(data + 4, len - 4, (uint32_t)seq)) {
        R.corrupt++;
        return;
    }
    if (R.seen[seq]++ > 0) {
        R.dups++;
    }
    if (seq <= R.last_seq) {
        R.disorder++;
    }
    R.last_seq = seq;
    if (idx >= 0 && idx < 64) {
        if (R.first_seq_of[idx] < 0) {
            R.first_seq_of[idx] = seq;
        }
        R.msgs_of[idx]++;
    }
    if (R.echo) {
        tether_conn_send(c, data, len);
    }
}

static void r_close(tether_conn *c, int reason, void *ud)
{
    intptr_t idx = (intptr_t)ud;
    if (idx >= 0 && idx < 64) {
        R.close_reasons[idx] = reason;
    }
    R.closes++;
    for (int i = 0; i < R.nconns; i++) {
        if (R.conns[i] == c) {
            R.conns[i] = R.conns[--R.nconns];
            break;
        }
    }
}

static void r_reset(void)
{
    memset(&R, 0, sizeof R);
    R.last_seq = -1;
}

static void r_listen(int port)
{
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.on_message = r_message;
    o.on_close = r_close;
    o.tls = R.tls_cfg;
    o.rcvbuf = R.rcvbuf;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = r_accept;
    lo.conn_opts = &o;
    char url[64];
    snprintf(url, sizeof url, "%s://127.0.0.1:%d", R.tls ? "tls" : "tcp", port);
    tether_error err;
    int rv = tether_listen(&R.l, th_loop, url, &lo, &err);
    ck_assert_msg(rv == TETHER_OK, "listen %s: %s", url, err.message);
    R.port = tether_listener_port(R.l);
}

/* The server process dies: nothing listens, every connection is reset. */
static void r_kill(void)
{
    tether_listener_close(R.l);
    R.l = NULL;
    for (int i = R.nconns - 1; i >= 0; i--) {
        tether_conn_abort(R.conns[i]);
    }
}

static void r_abort_conns(void)
{
    for (int i = R.nconns - 1; i >= 0; i--) {
        tether_conn_abort(R.conns[i]);
    }
}

/* ---- an observed client ------------------------------------------------------------ */

struct ev {
    tether_client_state state;
    int reason;
    uint32_t delay;
    uint32_t attempt;
    uint64_t t;    /* wall clock (monotonic ms) */
    uint64_t lt;   /* the loop's time, which the client schedules from */
    unsigned iter; /* the loop iteration it happened in (see run_counted) */
};

/* Loop iterations counted by run_counted(), with the loop's time at the end
 * of each: a timer due at D must fire in the first iteration whose timers
 * saw a time >= D, which is a fact about the loop, unlike how many ms late
 * a busy machine let that iteration run. */
#define MAX_ITERS 8192
static unsigned loop_iter;
static uint64_t iter_end[MAX_ITERS];

static void run_counted(int timeout_ms)
{
    ck_assert_uint_lt(loop_iter, MAX_ITERS);
    tether_loop_run_once(th_loop, timeout_ms);
    iter_end[loop_iter++] = tether_loop_now(th_loop);
}

struct obs {
    tether_client *cl;
    struct ev *evs;
    int nev;
    int cap;
    long got;
    int undelivered;
    long undeliv_first;
    long undeliv_last;
    bool undeliv_in_order;
    int undeliv_reason;
    int drains;
    bool closed;
    bool connected; /* currently */
    int connects;
    bool check_resumed;
    int resumed;
    uint64_t *attempt_times; /* the storm: every CONNECTING */
    int *nattempts;
};

static void obs_state(tether_client *cl, const tether_client_event *ev, void *ud)
{
    struct obs *o = ud;
    if (o->nev == o->cap) {
        o->cap = o->cap ? o->cap * 2 : 64;
        o->evs = realloc(o->evs, (size_t)o->cap * sizeof *o->evs);
        ck_assert_ptr_nonnull(o->evs);
    }
    uint64_t now = th_now_ms();
    o->evs[o->nev++] = (struct ev){
        ev->state, ev->reason, ev->delay_ms, ev->attempt, now, tether_loop_now(th_loop), loop_iter};
    ck_assert_ptr_nonnull(ev->detail);
    ck_assert_int_eq(tether_client_get_state(cl), ev->state);
    switch (ev->state) {
    case TETHER_CLIENT_CONNECTING:
        if (o->attempt_times != NULL) {
            o->attempt_times[(*o->nattempts)++] = now;
        }
        break;
    case TETHER_CLIENT_CONNECTED:
        o->connected = true;
        o->connects++;
        ck_assert_ptr_nonnull(tether_client_conn(cl));
        if (o->check_resumed) {
            tether_tls_info info;
            ck_assert_int_eq(tether_conn_tls_info(tether_client_conn(cl), &info), TETHER_OK);
            o->resumed += info.resumed ? 1 : 0;
        }
        break;
    case TETHER_CLIENT_DISCONNECTED:
        o->connected = false;
        ck_assert(ev->detail[0] != '\0');
        break;
    case TETHER_CLIENT_CLOSED:
        o->closed = true;
        o->connected = false;
        break;
    default:
        break;
    }
}

/* The loop time the attempt that ended before evs[i] (a WAITING event) took:
 * from its CONNECTING event on. The client schedules the next attempt at
 * the start of this one plus the backoff, so the wait it reports is the
 * backoff minus this, whatever the load on the machine. */
static uint64_t attempt_took(const struct obs *o, int i)
{
    for (int j = i - 1; j >= 0; j--) {
        if (o->evs[j].state == TETHER_CLIENT_CONNECTING) {
            return o->evs[i].lt - o->evs[j].lt;
        }
    }
    ck_abort_msg("event %d has no attempt before it", i);
    return 0;
}

static void obs_message(tether_client *cl, const uint8_t *data, size_t len, void *ud)
{
    (void)cl, (void)data, (void)len;
    ((struct obs *)ud)->got++;
}

static long seq_of(const uint8_t *d, size_t len)
{
    if (len < 4) {
        return -1;
    }
    return (long)(((uint32_t)d[0] << 24) | ((uint32_t)d[1] << 16) | ((uint32_t)d[2] << 8) | d[3]);
}

static void obs_undelivered(tether_client *cl, const uint8_t *data, size_t len, int reason,
                            void *ud)
{
    (void)cl;
    struct obs *o = ud;
    long seq = seq_of(data, len);
    if (o->undelivered == 0) {
        o->undeliv_first = seq;
        o->undeliv_in_order = true;
    } else if (seq != o->undeliv_last + 1 || !th_check(data + 4, len - 4, (uint32_t)seq)) {
        o->undeliv_in_order = false;
    }
    o->undeliv_last = seq;
    o->undelivered++;
    o->undeliv_reason = reason;
}

static void obs_drain(tether_client *cl, void *ud)
{
    (void)cl;
    ((struct obs *)ud)->drains++;
}

static void client_opts(tether_client_opts *co, struct obs *o)
{
    tether_client_opts_init(co);
    co->userdata = o;
    co->on_state = obs_state;
    co->on_message = obs_message;
    co->on_undelivered = obs_undelivered;
    co->on_drain = obs_drain;
}

static void new_client(struct obs *o, int port, const tether_client_opts *co)
{
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    tether_error err;
    int rv = tether_client_new(&o->cl, th_loop, url, co, &err);
    ck_assert_msg(rv == TETHER_OK, "client: %s", err.message);
}

static int send_seq(tether_client *cl, long seq, size_t size)
{
    static uint8_t buf[1 << 21];
    ck_assert_uint_ge(size, 4);
    ck_assert_uint_le(size, sizeof buf);
    buf[0] = (uint8_t)(seq >> 24);
    buf[1] = (uint8_t)(seq >> 16);
    buf[2] = (uint8_t)(seq >> 8);
    buf[3] = (uint8_t)seq;
    th_fill(buf + 4, size - 4, (uint32_t)seq);
    return tether_client_send(cl, buf, size);
}

static bool obs_is_connected(void *arg)
{
    return ((struct obs *)arg)->connected;
}

static bool obs_is_closed(void *arg)
{
    return ((struct obs *)arg)->closed;
}

static void close_client(struct obs *o)
{
    tether_client_close(o->cl);
    ck_assert(th_run_until_pred(obs_is_closed, o, 15000));
    ck_assert_int_eq(o->evs[o->nev - 1].state, TETHER_CLIENT_CLOSED);
    free(o->evs);
    o->evs = NULL;
}

static int count_state(const struct obs *o, tether_client_state st)
{
    int n = 0;
    for (int i = 0; i < o->nev; i++) {
        n += o->evs[i].state == st;
    }
    return n;
}

static tether_stats client_stats(const struct obs *o)
{
    tether_stats st;
    ck_assert_int_eq(tether_client_get_stats(o->cl, &st), TETHER_OK);
    return st;
}

static bool server_has(void *arg)
{
    return R.msgs >= *(long *)arg;
}

/* ---- the tests ------------------------------------------------------------------------ */

START_TEST(client_options_are_checked)
{
    tether_client *cl = NULL;
    tether_error err;
    tether_client_opts co;
    tether_client_opts_init(&co);
    ck_assert_uint_eq(co.initial_backoff_ms, 1000);
    ck_assert_uint_eq(co.max_backoff_ms, 120000);
    ck_assert_uint_eq(co.min_connect_timeout_ms, 20000);
    ck_assert(co.multiplier > 1.59 && co.multiplier < 1.61);
    ck_assert(co.jitter > 0.19 && co.jitter < 0.21);
    ck_assert_int_eq(tether_client_new(&cl, th_loop, "tcp://nope", &co, &err), TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "port"));
    co.jitter = 1.5;
    ck_assert_int_eq(tether_client_new(&cl, th_loop, "tcp://127.0.0.1:1", &co, &err),
                     TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "jitter"));
    tether_client_opts_init(&co);
    co.multiplier = 0.5;
    ck_assert_int_eq(tether_client_new(&cl, th_loop, "tcp://127.0.0.1:1", &co, &err),
                     TETHER_EINVAL);
    tether_client_opts_init(&co);
    co.max_backoff_ms = 10;
    ck_assert_int_eq(tether_client_new(&cl, th_loop, "tcp://127.0.0.1:1", &co, &err),
                     TETHER_EINVAL);
    tether_client_opts_init(&co);
    tether_conn_opts conn;
    tether_conn_opts_init(&conn);
    conn.heartbeat_ms = -3;
    co.conn_opts = &conn;
    ck_assert_int_eq(tether_client_new(&cl, th_loop, "tcp://127.0.0.1:1", &co, &err),
                     TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "heartbeat_ms"));
    ck_assert_ptr_null(cl);
    ck_assert_int_eq(tether_client_send(NULL, "x", 1), TETHER_EINVAL);
    ck_assert_int_eq(tether_client_reconnect_now(NULL), TETHER_EINVAL);
    tether_client_close(NULL);
    ck_assert_str_eq(tether_client_state_name(TETHER_CLIENT_WAITING), "waiting");
}
END_TEST

static double rand_fixed;
static double fixed_random(void *arg)
{
    (void)arg;
    return rand_fixed;
}

/* Against a port that refuses: the waits follow initial × multiplier^n
 * (capped), moved by the injected random draw, and count from the start of
 * each attempt. Everything is checked in the loop's own terms, so a loop
 * stalled by a busy machine cannot fail it: each wait the client arms is
 * the backoff minus what the attempt took, and the next attempt starts
 * when that timer fires, never earlier and in the first loop iteration
 * that reaches its deadline. */
static void check_schedule(double r, double factor)
{
    int keep;
    int port = th_refused_port(&keep);
    rand_fixed = r;
    tether__client_set_random(fixed_random, NULL);
    struct obs o = {0};
    tether_client_opts co;
    client_opts(&co, &o);
    co.initial_backoff_ms = 100;
    co.multiplier = 2.0;
    co.max_backoff_ms = 400;
    co.jitter = 0.2;
    loop_iter = 0;
    new_client(&o, port, &co);
    ck_assert_int_eq(o.nev, 0); /* nothing from inside the call */
    uint64_t until = th_now_ms() + 10000;
    while (count_state(&o, TETHER_CLIENT_CONNECTING) < 6 && th_now_ms() < until) {
        run_counted(10);
    }
    tether__client_set_random(NULL, NULL);
    static const double base[] = {100, 200, 400, 400, 400};
    int w = 0;
    uint64_t prev_start = 0;
    const struct ev *wait = NULL; /* the WAITING before the next attempt */
    int n = 0;
    printf("schedule with r = %.2f:", r);
    for (int i = 0; i < o.nev; i++) {
        struct ev *e = &o.evs[i];
        if (e->state == TETHER_CLIENT_CONNECTING) {
            if (n > 0 && n <= 5) {
                uint64_t gap = e->lt - prev_start;
                uint64_t want = (uint64_t)(base[n - 1] * factor + 0.5);
                ck_assert_ptr_nonnull(wait);
                uint64_t due = wait->lt + wait->delay; /* the armed timer */
                printf(" %llu ms", (unsigned long long)gap);
                /* Never early: not before the armed timer, nor before the
                 * backoff counted from the previous start. */
                ck_assert_msg(e->lt >= due && gap >= want,
                              "attempt %d started %llu ms after the previous, want %llu "
                              "(timer due at +%llu)",
                              n + 1, (unsigned long long)gap, (unsigned long long)want,
                              (unsigned long long)(due - prev_start));
                /* Never late in loop terms: the iteration before the one
                 * that started it had not reached the deadline (unless it
                 * was armed in that same iteration). */
                if (e->iter > wait->iter) {
                    ck_assert_uint_gt(e->iter, 0);
                    ck_assert_msg(iter_end[e->iter - 1] < due,
                                  "attempt %d: the loop reached its deadline (+%llu ms) in "
                                  "iteration %u but started it in iteration %u",
                                  n + 1, (unsigned long long)(due - prev_start), e->iter - 1,
                                  e->iter);
                }
            }
            prev_start = e->lt;
            wait = NULL;
            n++;
            ck_assert_uint_eq(e->attempt, (uint32_t)n);
        } else if (e->state == TETHER_CLIENT_WAITING && w < 5) {
            /* The wait is the backoff minus what the refused attempt took
             * (or nothing if it took longer). */
            uint64_t want = (uint64_t)(base[w] * factor + 0.5);
            uint64_t took = attempt_took(&o, i);
            uint64_t left = took < want ? want - took : 0;
            ck_assert_msg(e->delay == left, "wait %d: %u ms after a %llu ms attempt, want %llu", w,
                          e->delay, (unsigned long long)took, (unsigned long long)left);
            ck_assert_int_eq(e->reason, TETHER_ECONNREFUSED);
            wait = e;
            w++;
        }
    }
    printf("\n");
    ck_assert_int_ge(n, 6);
    ck_assert_int_ge(w, 5);
    tether_stats st = client_stats(&o);
    ck_assert_uint_ge(st.attempts, 6);
    ck_assert_uint_eq(st.connects, 0);
    close_client(&o);
    close(keep);
}

START_TEST(delays_follow_the_schedule)
{
    check_schedule(0.5, 1.0);       /* the schedule itself */
    check_schedule(0.0, 0.8);       /* the lowest jitter */
    check_schedule(0.9999999, 1.2); /* the highest jitter */
}
END_TEST

/* The server is killed and restarted on the same port: the client reports
 * the loss, retries on schedule, comes back, and sends in order what was
 * sent while it was away. */
START_TEST(server_restart_client_comes_back)
{
    r_reset();
    r_listen(0);
    int port = R.port;
    struct obs o = {0};
    tether_client_opts co;
    client_opts(&co, &o);
    co.initial_backoff_ms = 100;
    co.stable_ms = 100;
    co.reconnect_spread_ms = 50;
    new_client(&o, port, &co);
    ck_assert(th_run_until_pred(obs_is_connected, &o, 5000));
    long seq = 0;
    for (; seq < 100; seq++) {
        ck_assert_int_eq(send_seq(o.cl, seq, 64), TETHER_OK);
    }
    long want = 100;
    ck_assert(th_run_until_pred(server_has, &want, 5000));
    th_run_until_pred(obs_is_closed, &o, 200); /* stay up past stable_ms */

    r_kill();
    uint64_t killed = th_now_ms();
    /* While it is down: messages wait. */
    while (th_now_ms() < killed + 700) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert(!o.connected);
    for (; seq < 150; seq++) {
        ck_assert_int_eq(send_seq(o.cl, seq, 64), TETHER_OK);
    }
    tether_stats st = client_stats(&o);
    ck_assert_uint_eq(st.queued_msgs, 50);
    ck_assert_uint_eq(st.queued_bytes, 50 * 64);
    r_listen(port);
    ck_assert(th_run_until_pred(obs_is_connected, &o, 5000));
    uint64_t back = th_now_ms();
    want = 150;
    ck_assert(th_run_until_pred(server_has, &want, 5000));
    ck_assert_int_eq(R.msgs, 150);
    ck_assert_int_eq(R.dups, 0);
    ck_assert_int_eq(R.disorder, 0);
    ck_assert_int_eq(R.corrupt, 0);
    st = client_stats(&o);
    ck_assert_uint_eq(st.connects, 2);
    ck_assert_uint_eq(st.reconnects, 1);
    ck_assert_uint_eq(st.msgs_out, 150);
    ck_assert_uint_eq(st.queued_msgs, 0);
    ck_assert_uint_eq(st.undelivered, 0);

    /* The transitions after the kill: disconnected, a short spread wait,
     * then refused attempts on the schedule (100, 160, 256 ... ±20 %). */
    int i = 0;
    while (i < o.nev && !(o.evs[i].state == TETHER_CLIENT_DISCONNECTED)) {
        i++;
    }
    ck_assert_int_lt(i, o.nev);
    ck_assert_int_eq(o.evs[i + 1].state, TETHER_CLIENT_WAITING);
    ck_assert_uint_le(o.evs[i + 1].delay, 50);
    double b = 100;
    int waits = 0;
    printf("server restart: down for %llu ms; waits:", (unsigned long long)(back - killed));
    for (int j = i + 2; j < o.nev; j++) {
        if (o.evs[j].state == TETHER_CLIENT_WAITING) {
            /* The backoff (±20 % jitter) is the wait plus what the refused
             * attempt took, in loop time; only a wait of 0 may hide more. */
            uint64_t took = attempt_took(&o, j);
            uint64_t backoff = o.evs[j].delay + took;
            printf(" %u+%llu", o.evs[j].delay, (unsigned long long)took);
            ck_assert_int_eq(o.evs[j].reason, TETHER_ECONNREFUSED);
            bool in_band = o.evs[j].delay == 0 ? backoff + 1 >= (uint64_t)(b * 0.8)
                                               : backoff + 1 >= (uint64_t)(b * 0.8) &&
                                                     backoff <= (uint64_t)(b * 1.2 + 1);
            ck_assert_msg(in_band, "wait %u ms after a %llu ms attempt, schedule %.0f",
                          o.evs[j].delay, (unsigned long long)took, b);
            b = b * 1.6;
            waits++;
        }
    }
    printf(" ms\n");
    ck_assert_int_ge(waits, 2);
    ck_assert_int_eq(o.evs[o.nev - 1].state, TETHER_CLIENT_CONNECTED);
    close_client(&o);
    tether_listener_close(R.l);
}
END_TEST

/* Connections that die before stable_ms do not reset the schedule; one
 * that stays up does. */
START_TEST(delay_resets_only_after_a_stable_connection)
{
    r_reset();
    R.abort_on_accept = true; /* accepts, then drops at once */
    r_listen(0);
    rand_fixed = 0.5;
    tether__client_set_random(fixed_random, NULL);
    struct obs o = {0};
    tether_client_opts co;
    client_opts(&co, &o);
    co.initial_backoff_ms = 50;
    co.multiplier = 2.0;
    co.stable_ms = 300;
    co.reconnect_spread_ms = 0;
    new_client(&o, R.port, &co);
    uint64_t until = th_now_ms() + 10000;
    while (count_state(&o, TETHER_CLIENT_CONNECTING) < 4 && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 5);
    }
    /* Attempts 1..4 started 50, 100, 200 ms apart: connected, dropped,
     * never stable. */
    uint64_t starts[8];
    int n = 0;
    for (int i = 0; i < o.nev && n < 8; i++) {
        if (o.evs[i].state == TETHER_CLIENT_CONNECTING) {
            starts[n++] = o.evs[i].lt;
        }
    }
    ck_assert_int_ge(n, 4);
    printf("unstable connections: attempts %llu, %llu, %llu ms apart\n",
           (unsigned long long)(starts[1] - starts[0]), (unsigned long long)(starts[2] - starts[1]),
           (unsigned long long)(starts[3] - starts[2]));
    /* In loop time: never earlier than the schedule. */
    ck_assert_uint_ge(starts[1] - starts[0], 50);
    ck_assert_uint_ge(starts[2] - starts[1], 100);
    ck_assert_uint_ge(starts[3] - starts[2], 200);
    ck_assert_int_ge(count_state(&o, TETHER_CLIENT_CONNECTED), 3);

    /* Now the server keeps the connection: after stable_ms the schedule
     * starts over, so the next failure waits the initial backoff again. */
    R.abort_on_accept = false;
    ck_assert(th_run_until_pred(obs_is_connected, &o, 5000));
    uint64_t end = th_now_ms() + 450;
    while (th_now_ms() < end) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert(o.connected);
    int mark = o.nev;
    r_abort_conns();
    R.abort_on_accept = true;
    until = th_now_ms() + 5000;
    int waits = 0;
    uint32_t d[3] = {0, 0, 0};
    uint64_t took[3] = {0, 0, 0};
    while (waits < 3 && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 5);
        waits = 0;
        for (int i = mark; i < o.nev; i++) {
            if (o.evs[i].state == TETHER_CLIENT_WAITING && waits < 3) {
                took[waits] = waits > 0 ? attempt_took(&o, i) : 0;
                d[waits++] = o.evs[i].delay;
            }
        }
    }
    tether__client_set_random(NULL, NULL);
    printf("after a stable connection: waits %u, %u+%llu, %u+%llu ms\n", d[0], d[1],
           (unsigned long long)took[1], d[2], (unsigned long long)took[2]);
    ck_assert_int_eq(waits, 3);
    ck_assert_uint_eq(d[0], 0); /* reconnect at once (no spread configured) */
    /* Then the initial backoff again (50 ms, not 800), and growing (100 ms):
     * each wait is that backoff minus what the failed attempt took. */
    ck_assert_uint_eq(d[1], took[1] < 50 ? 50 - took[1] : 0);
    ck_assert_uint_eq(d[2], took[2] < 100 ? 100 - took[2] : 0);
    close_client(&o);
    tether_listener_close(R.l);
}
END_TEST

/* max_attempts: the client gives up and hands back every message it held,
 * in order and intact; reconnect_now() starts over. */
START_TEST(max_attempts_gives_up_and_hands_back_every_message)
{
    int keep;
    int port = th_refused_port(&keep);
    struct obs o = {0};
    tether_client_opts co;
    client_opts(&co, &o);
    co.initial_backoff_ms = 30;
    co.max_attempts = 3;
    new_client(&o, port, &co);
    for (long s = 0; s < 20; s++) {
        ck_assert_int_eq(send_seq(o.cl, s, 100 + (size_t)s), TETHER_OK);
    }
    uint64_t until = th_now_ms() + 5000;
    while (count_state(&o, TETHER_CLIENT_GAVE_UP) == 0 && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq(count_state(&o, TETHER_CLIENT_GAVE_UP), 1);
    ck_assert_int_eq(count_state(&o, TETHER_CLIENT_CONNECTING), 3);
    ck_assert_int_eq(o.evs[o.nev - 1].state, TETHER_CLIENT_GAVE_UP);
    ck_assert_int_eq(o.evs[o.nev - 1].reason, TETHER_ECONNREFUSED);
    ck_assert_int_eq(o.undelivered, 20);
    ck_assert(o.undeliv_in_order);
    ck_assert_int_eq(o.undeliv_first, 0);
    ck_assert_int_eq(o.undeliv_last, 19);
    ck_assert_int_eq(o.undeliv_reason, TETHER_ECONNREFUSED);
    ck_assert_int_eq(send_seq(o.cl, 99, 10), TETHER_ECLOSED);
    tether_stats st = client_stats(&o);
    ck_assert_uint_eq(st.undelivered, 20);
    ck_assert_uint_eq(st.queued_msgs, 0);
    /* Nothing happens by itself after giving up... */
    int nev = o.nev;
    uint64_t end = th_now_ms() + 200;
    while (th_now_ms() < end) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq(o.nev, nev);
    /* ...until the application asks. */
    ck_assert_int_eq(tether_client_reconnect_now(o.cl), TETHER_OK);
    ck_assert_int_eq(o.nev, nev); /* reported from the loop */
    until = th_now_ms() + 5000;
    while (count_state(&o, TETHER_CLIENT_GAVE_UP) < 2 && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq(count_state(&o, TETHER_CLIENT_CONNECTING), 6);
    close_client(&o);
    close(keep);
}
END_TEST

/* The connection is cut by the proxy while most messages are still queued
 * (the server does not read yet). Every message the client had not written
 * completely is sent again on the next connection; none arrives twice; the
 * ones lost are exactly messages the client had handed to the kernel. */
START_TEST(cut_connection_resends_what_was_not_written)
{
    enum {
        N = 3000,
        SZ = 1000
    };
    r_reset();
    R.pause_on_accept = true;
    r_listen(0);
    tproxy *px = NULL;
    ck_assert_int_eq(tproxy_start(&px, R.port, 16384), 0);
    struct obs o = {0};
    tether_client_opts co;
    client_opts(&co, &o);
    co.initial_backoff_ms = 50;
    co.reconnect_spread_ms = 0;
    tether_conn_opts conn;
    tether_conn_opts_init(&conn);
    conn.sndbuf = 16384;
    conn.send_hwm = 256 * 1024;
    co.conn_opts = &conn;
    new_client(&o, tproxy_port(px), &co);
    ck_assert(th_run_until_pred(obs_is_connected, &o, 5000));
    for (long s = 0; s < N; s++) {
        ck_assert_int_eq(send_seq(o.cl, s, SZ), TETHER_OK);
    }
    /* Let the buffers on the way fill up. */
    uint64_t end = th_now_ms() + 300;
    while (th_now_ms() < end) {
        tether_loop_run_once(th_loop, 10);
    }
    tether_stats before = client_stats(&o);
    ck_assert_uint_gt(before.queued_msgs, N / 2);
    ck_assert_int_eq(R.msgs, 0);

    tproxy_cut(px);
    /* The first server connection now gets what reached its kernel before
     * the cut, then the end of the stream (probably inside a frame). */
    R.pause_on_accept = false;
    ck_assert_int_ge(R.nconns, 1);
    tether_conn_resume(R.conns[0]);
    long want = N;
    end = th_now_ms() + 15000;
    while (th_now_ms() < end && !(R.accepted >= 2 && R.last_seq == N - 1)) {
        tether_loop_run_once(th_loop, 10);
    }
    (void)want;
    tether_stats after = client_stats(&o);
    long first_again = R.first_seq_of[1];
    long lost = first_again - R.msgs_of[0];
    printf("cut: %ld messages delivered on the first connection, %ld resent from #%ld on the "
           "second, %ld lost in flight (written to the kernel before the cut), first "
           "connection ended with %s\n",
           R.msgs_of[0], R.msgs_of[1], first_again, lost, tether_err_name(R.close_reasons[0]));
    ck_assert_int_eq(R.accepted, 2);
    ck_assert_int_eq(R.dups, 0);
    ck_assert_int_eq(R.disorder, 0);
    ck_assert_int_eq(R.corrupt, 0);
    ck_assert_int_eq(R.last_seq, N - 1);
    /* Everything from the first message the client still held arrived. */
    ck_assert_int_eq(R.msgs_of[1], N - first_again);
    ck_assert_int_ge(first_again, R.msgs_of[0]);
    ck_assert_uint_eq(after.msgs_out, N);
    ck_assert_uint_eq(after.queued_msgs, 0);
    ck_assert_uint_eq(after.undelivered, 0);
    ck_assert_uint_eq(after.reconnects, 1);
    close_client(&o);
    tproxy_stop(px);
    tether_listener_close(R.l);
}
END_TEST

/* A 1 MiB message is cut in the middle of its frame: the server drops the
 * truncated piece, and the whole message arrives once on the next
 * connection. */
START_TEST(partially_written_message_is_resent_in_full)
{
    enum {
        BIG = 1 << 20
    };
    r_reset();
    R.pause_on_accept = true;
    r_listen(0);
    tproxy *px = NULL;
    ck_assert_int_eq(tproxy_start(&px, R.port, 8192), 0);
    struct obs o = {0};
    tether_client_opts co;
    client_opts(&co, &o);
    co.initial_backoff_ms = 50;
    co.reconnect_spread_ms = 0;
    tether_conn_opts conn;
    tether_conn_opts_init(&conn);
    conn.sndbuf = 8192;
    co.conn_opts = &conn;
    new_client(&o, tproxy_port(px), &co);
    ck_assert(th_run_until_pred(obs_is_connected, &o, 5000));
    ck_assert_int_eq(send_seq(o.cl, 0, 100), TETHER_OK);
    ck_assert_int_eq(send_seq(o.cl, 1, BIG), TETHER_OK);
    ck_assert_int_eq(send_seq(o.cl, 2, 100), TETHER_OK);
    uint64_t end = th_now_ms() + 300;
    while (th_now_ms() < end) {
        tether_loop_run_once(th_loop, 10);
    }
    tether_conn *c = tether_client_conn(o.cl);
    ck_assert_ptr_nonnull(c);
    tether_stats cs;
    tether_conn_get_stats(c, &cs);
    /* Part of the big frame is written, part is not. */
    ck_assert_uint_gt(cs.bytes_out, 104 + 4);
    ck_assert_uint_lt(cs.bytes_out, 104 + 4 + BIG);
    tproxy_cut(px);
    R.pause_on_accept = false;
    tether_conn_resume(R.conns[0]);
    end = th_now_ms() + 10000;
    while (th_now_ms() < end && R.last_seq != 2) {
        tether_loop_run_once(th_loop, 10);
    }
    printf("partial frame: the first connection delivered %ld message(s) and ended with %s; "
           "the second delivered %ld\n",
           R.msgs_of[0], tether_err_name(R.close_reasons[0]), R.msgs_of[1]);
    ck_assert_int_eq(R.last_seq, 2);
    ck_assert_int_eq(R.seen[1], 1); /* the big one, once, intact */
    ck_assert_int_eq(R.dups, 0);
    ck_assert_int_eq(R.corrupt, 0);
    ck_assert_int_eq(R.first_seq_of[1], 1);
    ck_assert_int_eq(R.close_reasons[0], TETHER_ETRUNCATED);
    close_client(&o);
    tproxy_stop(px);
    tether_listener_close(R.l);
}
END_TEST

/* The largest number of values in any window of `width` ms. */
static int max_in_window(uint64_t *t, int n, uint64_t width)
{
    for (int i = 1; i < n; i++) { /* insertion sort: n is small */
        uint64_t v = t[i];
        int j = i - 1;
        while (j >= 0 && t[j] > v) {
            t[j + 1] = t[j];
            j--;
        }
        t[j + 1] = v;
    }
    int best = 0;
    for (int i = 0, j = 0; i < n; i++) {
        while (t[i] - t[j] >= width) {
            j++;
        }
        best = i - j + 1 > best ? i - j + 1 : best;
    }
    return best;
}

static bool all_connected(void *arg)
{
    struct obs *o = arg;
    for (int i = 0; i < 200; i++) {
        if (!o[i].connected) {
            return false;
        }
    }
    return true;
}

/* 200 clients, one server that goes away for downtime_ms. Returns the
 * largest number of connection attempts in any 100 ms window after the
 * kill. */
static int storm(uint32_t initial, double jitter, uint32_t spread, int downtime_ms,
                 int *out_attempts, uint64_t *out_span)
{
    enum {
        NC = 200
    };
    r_reset();
    r_listen(0);
    int port = R.port;
    struct obs *o = calloc(NC, sizeof *o);
    uint64_t *times = calloc(NC * 16, sizeof *times);
    int ntimes = 0;
    ck_assert_ptr_nonnull(o);
    for (int i = 0; i < NC; i++) {
        tether_client_opts co;
        client_opts(&co, &o[i]);
        co.initial_backoff_ms = initial;
        co.jitter = jitter;
        co.reconnect_spread_ms = spread;
        co.stable_ms = 200;
        new_client(&o[i], port, &co);
    }
    ck_assert(th_run_until_pred(all_connected, o, 20000));
    uint64_t end = th_now_ms() + 300; /* past stable_ms */
    while (th_now_ms() < end) {
        tether_loop_run_once(th_loop, 10);
    }
    for (int i = 0; i < NC; i++) {
        o[i].attempt_times = times;
        o[i].nattempts = &ntimes;
    }
    uint64_t killed = th_now_ms();
    r_kill();
    while (th_now_ms() < killed + (uint64_t)downtime_ms) {
        tether_loop_run_once(th_loop, 5);
        ck_assert_int_lt(ntimes, NC * 15);
    }
    r_listen(port);
    ck_assert(th_run_until_pred(all_connected, o, 30000));
    int best = max_in_window(times, ntimes, 100);
    *out_attempts = ntimes;
    *out_span = ntimes > 0 ? times[ntimes - 1] - times[0] : 0;
    for (int i = 0; i < NC; i++) {
        tether_client_close(o[i].cl);
    }
    for (int i = 0; i < NC; i++) {
        ck_assert(th_run_until_pred(obs_is_closed, &o[i], 10000));
        free(o[i].evs);
    }
    tether_listener_close(R.l);
    th_run_idle(5000);
    free(o);
    free(times);
    return best;
}

START_TEST(reconnect_storm_is_spread_by_jitter)
{
    int attempts = 0;
    uint64_t span = 0;
    /* The defaults: initial 1 s, ±20 %, first retry spread over 1 s. */
    int best = storm(1000, 0.2, 1000, 3000, &attempts, &span);
    printf("reconnect storm (200 clients, server down 3 s, defaults): %d attempts over %llu ms, "
           "at most %d in any 100 ms window\n",
           attempts, (unsigned long long)span, best);
    /* For comparison, without any jitter every client retries in lockstep. */
    int attempts0 = 0;
    uint64_t span0 = 0;
    int best0 = storm(1000, 0.0, 0, 1500, &attempts0, &span0);
    printf("reconnect storm without jitter or spread: %d attempts over %llu ms, at most %d in "
           "any 100 ms window\n",
           attempts0, (unsigned long long)span0, best0);
    ck_assert_int_ge(attempts, 400); /* everyone retried at least twice */
    ck_assert_int_le(best, 100);     /* never half of them at once */
    ck_assert_int_gt(best0, best);
}
END_TEST

/* The record pool (client_pool.c, white box): the slabs emptied while a
 * client still holds records are kept as spares up to three quarters of
 * queue_max_bytes, new records take them before any malloc(), live
 * records are never overwritten, and an idle client frees every slab. */
static bool rec_intact(const struct cmsg *m, int i)
{
    for (size_t k = 0; k < m->len; k++) {
        if (m->data[k] != (uint8_t)i) {
            return false;
        }
    }
    return true;
}

START_TEST(record_pool_keeps_bounded_spares)
{
    enum {
        REC = 1000,
        N = 40 * 64,
        REFILL = 20 * 64
    };
    int keep;
    int port = th_refused_port(&keep);
    struct obs o = {0};
    tether_client_opts co;
    client_opts(&co, &o);
    co.queue_max_bytes = 1024 * 1024; /* spares: 768 KiB, 12 slabs */
    new_client(&o, port, &co);
    tether_client *cl = o.cl;
    static struct cmsg *recs[N + REFILL];
    for (int i = 0; i < N; i++) {
        recs[i] = tether__cmsg_new(cl, REC);
        ck_assert_ptr_nonnull(recs[i]);
        memset(recs[i]->data, i & 0xff, REC);
        if (i > 0) {
            recs[i - 1]->next = recs[i];
        }
    }
    cl->held_msgs = 1; /* (as if the client held records: no idle trim) */
    /* Runs of 100, as ACKs free them, all but the last record. */
    for (int i = 0; i < N - 1; i += 100) {
        int end = i + 100 < N - 1 ? i + 100 : N - 1;
        tether__cmsg_free_run(cl, recs[i], recs[end]);
    }
    ck_assert_uint_eq(cl->pool.n_spare, 12);
    ck_assert(rec_intact(recs[N - 1], N - 1));
    /* A refill: each new slab is the first spare, until none is left. */
    int slabs = 0;
    for (int i = N; i < N + REFILL; i++) {
        const struct tether__cslab *cur = cl->pool.cur;
        const struct tether__cslab *spare = cl->pool.spare;
        uint32_t n_spare = cl->pool.n_spare;
        recs[i] = tether__cmsg_new(cl, REC);
        ck_assert_ptr_nonnull(recs[i]);
        memset(recs[i]->data, i & 0xff, REC);
        if (cl->pool.cur != cur && spare != NULL) {
            ck_assert_ptr_eq(cl->pool.cur, spare);
            ck_assert_uint_eq(cl->pool.n_spare, n_spare - 1);
            slabs++;
        } else {
            ck_assert_uint_eq(cl->pool.n_spare, n_spare);
        }
    }
    ck_assert_int_eq(slabs, 12);
    ck_assert_uint_eq(cl->pool.n_spare, 0);
    for (int i = N - 1; i < N + REFILL; i++) {
        ck_assert_msg(rec_intact(recs[i], i), "record %d overwritten", i);
    }
    /* Freed in any order; holding nothing, the client frees its slabs on
     * the loop's next turn. */
    cl->held_msgs = 0;
    for (int i = N + REFILL - 1; i >= N - 1; i--) {
        tether__cmsg_free(cl, recs[i]);
    }
    ck_assert_ptr_nonnull(cl->pool.cur);
    tether_loop_run_once(th_loop, 0);
    ck_assert_ptr_null(cl->pool.cur);
    ck_assert_ptr_null(cl->pool.spare);
    ck_assert_uint_eq(cl->pool.n_spare, 0);
    close_client(&o);
    close(keep);
}
END_TEST

START_TEST(queue_bounds_then_drain)
{
    int keep;
    int port = th_refused_port(&keep);
    struct obs o = {0};
    tether_client_opts co;
    client_opts(&co, &o);
    co.initial_backoff_ms = 50;
    co.queue_max_msgs = 10;
    co.queue_max_bytes = 5000;
    new_client(&o, port, &co);
    for (long s = 0; s < 10; s++) {
        ck_assert_int_eq(send_seq(o.cl, s, 10), TETHER_OK);
    }
    ck_assert_int_eq(send_seq(o.cl, 10, 10), TETHER_EAGAIN); /* by count */
    ck_assert_int_eq(send_seq(o.cl, 10, 6000), TETHER_EMSGSIZE);
    struct obs p = {0};
    tether_client_opts co2;
    client_opts(&co2, &p);
    co2.queue_max_bytes = 5000;
    new_client(&p, port, &co2);
    ck_assert_int_eq(send_seq(p.cl, 0, 3000), TETHER_OK);
    ck_assert_int_eq(send_seq(p.cl, 1, 3000), TETHER_EAGAIN); /* by bytes */
    close_client(&p);
    ck_assert_int_eq(p.undelivered, 1);
    ck_assert_int_eq(p.undeliv_reason, TETHER_ECANCELED);
    /* The server appears: the messages go out and on_drain follows. */
    close(keep);
    r_reset();
    r_listen(port);
    ck_assert(th_run_until_pred(obs_is_connected, &o, 5000));
    long want = 10;
    ck_assert(th_run_until_pred(server_has, &want, 5000));
    uint64_t until = th_now_ms() + 2000;
    while (o.drains == 0 && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq(o.drains, 1);
    ck_assert_int_eq(send_seq(o.cl, 10, 10), TETHER_OK);
    want = 11;
    ck_assert(th_run_until_pred(server_has, &want, 5000));
    ck_assert_int_eq(R.disorder, 0);
    close_client(&o);
    tether_listener_close(R.l);
}
END_TEST

START_TEST(fail_fast_policy)
{
    r_reset();
    R.rcvbuf = 16384;
    r_listen(0);
    struct obs o = {0};
    tether_client_opts co;
    client_opts(&co, &o);
    co.fail_fast = true;
    co.initial_backoff_ms = 50;
    co.reconnect_spread_ms = 0;
    co.stable_ms = 50;
    tether_conn_opts conn;
    tether_conn_opts_init(&conn);
    conn.sndbuf = 16384;
    co.conn_opts = &conn;
    new_client(&o, R.port, &co);
    ck_assert_int_eq(send_seq(o.cl, 0, 10), TETHER_ENOTCONN);
    ck_assert(th_run_until_pred(obs_is_connected, &o, 5000));
    /* The server stops reading, so messages stay with the client... */
    ck_assert_int_eq(R.nconns, 1);
    tether_conn_pause(R.conns[0]);
    static uint8_t big[200000];
    for (int i = 0; i < 20; i++) {
        big[0] = 0, big[1] = 0, big[2] = 0, big[3] = (uint8_t)i;
        th_fill(big + 4, sizeof big - 4, (uint32_t)i);
        ck_assert_int_eq(tether_client_send(o.cl, big, sizeof big), TETHER_OK);
    }
    uint64_t end = th_now_ms() + 200;
    while (th_now_ms() < end) {
        tether_loop_run_once(th_loop, 10);
    }
    tether_stats st = client_stats(&o);
    ck_assert_uint_gt(st.queued_msgs, 0);
    /* ...and when the connection is lost they come back at once. */
    r_abort_conns();
    uint64_t until = th_now_ms() + 5000;
    while (o.undelivered == 0 && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq((uint64_t)o.undelivered, st.queued_msgs);
    ck_assert(o.undeliv_in_order);
    ck_assert_int_eq(o.undeliv_last, 19);
    ck_assert(o.undeliv_reason == TETHER_ECONNRESET || o.undeliv_reason == TETHER_EOF);
    close_client(&o);
    tether_listener_close(R.l);
}
END_TEST

START_TEST(reconnect_now_skips_the_wait)
{
    int keep;
    int port = th_refused_port(&keep);
    struct obs o = {0};
    tether_client_opts co;
    client_opts(&co, &o);
    co.initial_backoff_ms = 5000;
    co.jitter = 0;
    new_client(&o, port, &co);
    uint64_t until = th_now_ms() + 3000;
    while (count_state(&o, TETHER_CLIENT_WAITING) == 0 && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq(count_state(&o, TETHER_CLIENT_WAITING), 1);
    ck_assert_uint_ge(o.evs[o.nev - 1].delay, 4900);
    ck_assert_int_eq(client_stats(&o).backoff_ms, o.evs[o.nev - 1].delay);
    uint64_t asked = th_now_ms();
    ck_assert_int_eq(tether_client_reconnect_now(o.cl), TETHER_OK);
    until = th_now_ms() + 3000;
    while (count_state(&o, TETHER_CLIENT_CONNECTING) < 2 && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq(count_state(&o, TETHER_CLIENT_CONNECTING), 2);
    /* At once, not after the 5 s wait (generous for a busy machine). */
    ck_assert_uint_le(th_now_ms() - asked, 2000);
    close_client(&o);
    close(keep);
}
END_TEST

/* Every greeting of the server's connections has been written to the
 * socket: over loopback it is then in the client's receive buffer. */
static bool server_greeted(void *arg)
{
    int want = *(int *)arg;
    if (R.accepted < want || R.nconns < 1) {
        return false;
    }
    for (int i = 0; i < R.nconns; i++) {
        if (tether_conn_queued(R.conns[i]) > 0) {
            return false;
        }
    }
    return true;
}

/* Runs the loop for a while (bounded by iterations, not by a clock): with
 * messages already in the client's socket buffer, an unpaused client
 * would deliver them on the first iteration. */
static void spin(int iterations)
{
    for (int i = 0; i < iterations; i++) {
        ck_assert_int_ge(tether_loop_run_once(th_loop, 5), 0);
    }
}

/* tether_client_pause() holds back messages on the current connection and
 * on every later one: a connection made while paused starts paused. */
START_TEST(pause_survives_a_reconnect)
{
    r_reset();
    R.greet = 3;
    r_listen(0);
    struct obs o = {0};
    tether_client_opts co;
    client_opts(&co, &o);
    new_client(&o, R.port, &co);
    tether_client_pause(NULL); /* ignored */
    tether_client_resume(NULL);
    ck_assert(!tether_client_is_paused(NULL));

    /* Paused before the first connection exists. */
    tether_client_pause(o.cl);
    tether_client_pause(o.cl); /* idempotent */
    ck_assert(tether_client_is_paused(o.cl));
    ck_assert(th_run_until_pred(obs_is_connected, &o, 10000));
    int want = 1;
    ck_assert(th_run_until_pred(server_greeted, &want, 10000));
    spin(40);
    ck_assert_int_eq(o.got, 0);
    tether_client_resume(o.cl);
    ck_assert(!tether_client_is_paused(o.cl));
    uint64_t until = th_now_ms() + 10000;
    while (o.got < 3 && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq(o.got, 3);

    /* Paused while connected, then the connection is replaced: the new
     * one must start paused too. */
    tether_client_pause(o.cl);
    tether_conn *first = tether_client_conn(o.cl);
    ck_assert_ptr_nonnull(first);
    tether_conn_close(first); /* the client reconnects at once */
    until = th_now_ms() + 10000;
    while ((o.connects < 2 || !o.connected) && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq(o.connects, 2);
    ck_assert_ptr_ne(tether_client_conn(o.cl), first);
    want = 2;
    ck_assert(th_run_until_pred(server_greeted, &want, 10000));
    spin(40);
    ck_assert_int_eq(o.got, 3);
    tether_stats st;
    ck_assert_int_eq(tether_conn_get_stats(tether_client_conn(o.cl), &st), TETHER_OK);
    ck_assert_uint_eq(st.msgs_in, 0);

    tether_client_resume(o.cl);
    until = th_now_ms() + 10000;
    while (o.got < 6 && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq(o.got, 6);
    close_client(&o);
    tether_listener_close(R.l);
}
END_TEST

/* Closing while connected writes everything first; closing while waiting
 * hands everything back; CLOSED is always the last callback. */
START_TEST(close_flushes_or_hands_back)
{
    r_reset();
    r_listen(0);
    struct obs o = {0};
    tether_client_opts co;
    client_opts(&co, &o);
    new_client(&o, R.port, &co);
    ck_assert(th_run_until_pred(obs_is_connected, &o, 5000));
    for (long s = 0; s < 2000; s++) {
        ck_assert_int_eq(send_seq(o.cl, s, 1000), TETHER_OK);
    }
    tether_client_close(o.cl);
    ck_assert_int_eq(send_seq(o.cl, 2000, 10), TETHER_ECLOSED);
    ck_assert_int_eq(tether_client_reconnect_now(o.cl), TETHER_ECLOSED);
    ck_assert(th_run_until_pred(obs_is_closed, &o, 10000));
    long want = 2000;
    ck_assert(th_run_until_pred(server_has, &want, 5000));
    ck_assert_int_eq(o.undelivered, 0);
    ck_assert_int_eq(R.disorder, 0);
    ck_assert_int_eq(R.dups, 0);
    free(o.evs);
    tether_listener_close(R.l);

    int keep;
    int port = th_refused_port(&keep);
    struct obs p = {0};
    tether_client_opts cp;
    client_opts(&cp, &p);
    new_client(&p, port, &cp);
    for (long s = 0; s < 5; s++) {
        ck_assert_int_eq(send_seq(p.cl, s, 50), TETHER_OK);
    }
    uint64_t until = th_now_ms() + 3000;
    while (count_state(&p, TETHER_CLIENT_WAITING) == 0 && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
    }
    close_client(&p);
    ck_assert_int_eq(p.undelivered, 5);
    ck_assert(p.undeliv_in_order);
    ck_assert_int_eq(p.undeliv_reason, TETHER_ECANCELED);
    close(keep);
}
END_TEST

static bool server_accepted_4(void *arg)
{
    (void)arg;
    return R.accepted >= 4;
}

/* max_age_ms on the client's connections: each is closed gracefully after
 * a while and a new one is dialled at once; the messages keep flowing in
 * order, none lost or repeated (a graceful close writes everything). */
START_TEST(max_age_rotates_connections_without_loss)
{
    r_reset();
    r_listen(0);
    struct obs o = {0};
    tether_client_opts co;
    client_opts(&co, &o);
    tether_conn_opts conn;
    tether_conn_opts_init(&conn);
    conn.max_age_ms = 250;
    co.conn_opts = &conn;
    co.stable_ms = 100;
    new_client(&o, R.port, &co);
    long s = 0;
    /* Send until the fourth connection is up (about 1 s; bounded generously
     * for a busy machine, where each rotation takes longer). */
    uint64_t end = th_now_ms() + 20000;
    while (client_stats(&o).connects < 4 && th_now_ms() < end) {
        if (s < MAXSEQ) { /* the server checks sequence numbers below MAXSEQ */
            ck_assert_int_eq(send_seq(o.cl, s++, 200), TETHER_OK);
        }
        tether_loop_run_once(th_loop, 5);
    }
    long want = s;
    ck_assert(th_run_until_pred(server_has, &want, 5000));
    ck_assert(th_run_until_pred(server_accepted_4, NULL, 5000));
    tether_stats st = client_stats(&o);
    printf("max_age rotation: %llu connections, %ld messages, %ld received\n",
           (unsigned long long)st.connects, s, R.msgs);
    ck_assert_uint_ge(st.connects, 4);
    ck_assert_int_ge(R.accepted, 4);
    ck_assert_int_eq(R.msgs, s);
    ck_assert_int_eq(R.dups, 0);
    ck_assert_int_eq(R.disorder, 0);
    ck_assert_int_eq(R.corrupt, 0);
    for (int i = 0; i < o.nev; i++) {
        if (o.evs[i].state == TETHER_CLIENT_DISCONNECTED) {
            ck_assert_int_eq(o.evs[i].reason, TETHER_OK);
            ck_assert_int_eq(o.evs[i + 1].state, TETHER_CLIENT_WAITING);
            ck_assert_uint_eq(o.evs[i + 1].delay, 0);
        }
    }
    close_client(&o);
    tether_listener_close(R.l);
}
END_TEST

/* Heartbeats end a blackholed connection and the client reconnects by
 * itself once the path works again. */
START_TEST(heartbeat_timeout_triggers_reconnect)
{
    r_reset();
    r_listen(0);
    tproxy *px = NULL;
    ck_assert_int_eq(tproxy_start(&px, R.port, 0), 0);
    struct obs o = {0};
    tether_client_opts co;
    client_opts(&co, &o);
    tether_conn_opts conn;
    tether_conn_opts_init(&conn);
    conn.heartbeat_ms = 100;
    conn.heartbeat_misses = 2;
    co.conn_opts = &conn;
    co.initial_backoff_ms = 50;
    co.reconnect_spread_ms = 0;
    new_client(&o, tproxy_port(px), &co);
    ck_assert(th_run_until_pred(obs_is_connected, &o, 5000));
    ck_assert_int_eq(send_seq(o.cl, 0, 10), TETHER_OK);
    long want = 1;
    ck_assert(th_run_until_pred(server_has, &want, 5000));
    tproxy_set_mode(px, TPROXY_BLACKHOLE);
    uint64_t t0 = th_now_ms();
    uint64_t until = t0 + 5000;
    while (count_state(&o, TETHER_CLIENT_DISCONNECTED) == 0 && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 5);
    }
    ck_assert_int_eq(count_state(&o, TETHER_CLIENT_DISCONNECTED), 1);
    const struct ev *d = NULL;
    for (int i = 0; i < o.nev; i++) {
        if (o.evs[i].state == TETHER_CLIENT_DISCONNECTED) {
            d = &o.evs[i];
        }
    }
    printf("heartbeat through the client: blackhole noticed after %llu ms: %s\n",
           (unsigned long long)(d->t - t0), tether_client_last_error(o.cl));
    ck_assert_int_eq(d->reason, TETHER_ETIMEDOUT);
    ck_assert_ptr_nonnull(strstr(tether_client_last_error(o.cl), "heartbeat timeout"));
    /* (misses + 1) x interval = 300 ms of silence; TCP alone would not
     * notice at all. Generous for a busy machine. */
    ck_assert_uint_le(d->t - t0, 3 * 100 + 1200);
    tproxy_set_mode(px, TPROXY_PASS);
    tproxy_cut(px); /* the old server side too */
    ck_assert(th_run_until_pred(obs_is_connected, &o, 5000));
    ck_assert_int_eq(send_seq(o.cl, 1, 10), TETHER_OK);
    want = 2;
    ck_assert(th_run_until_pred(server_has, &want, 5000));
    tether_stats st = client_stats(&o);
    until = th_now_ms() + 2000;
    while ((st.heartbeat_ms == 0 || st.rtt_us < 0) && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
        st = client_stats(&o);
    }
    ck_assert_uint_eq(st.heartbeat_ms, 100);
    ck_assert_int_ge(st.rtt_us, 0);
    close_client(&o);
    tproxy_stop(px);
    tether_listener_close(R.l);
}
END_TEST

/* Over TLS every attempt offers the previous session: the reconnection
 * costs an abbreviated handshake. */
START_TEST(tls_reconnect_resumes_the_session)
{
    r_reset();
    tether_tls_opts so;
    tether_tls_opts_init(&so);
    so.cert_file = TETHER_CERTS_DIR "/server.pem";
    so.key_file = TETHER_CERTS_DIR "/server.key";
    tether_error err;
    ck_assert_int_eq(tether_tls_config_new(&R.tls_cfg, &so, &err), TETHER_OK);
    R.tls = true;
    R.echo = true;
    r_listen(0);
    tether_tls_opts cto;
    tether_tls_opts_init(&cto);
    cto.ca_file = TETHER_CERTS_DIR "/ca.pem";
    tether_tls_config *ccfg = NULL;
    ck_assert_int_eq(tether_tls_config_new(&ccfg, &cto, &err), TETHER_OK);
    struct obs o = {0};
    o.check_resumed = true;
    tether_client_opts co;
    client_opts(&co, &o);
    tether_conn_opts conn;
    tether_conn_opts_init(&conn);
    conn.tls = ccfg;
    co.conn_opts = &conn;
    co.initial_backoff_ms = 50;
    co.reconnect_spread_ms = 0;
    char url[64];
    snprintf(url, sizeof url, "tls://localhost:%d", R.port);
    ck_assert_int_eq(tether_client_new(&o.cl, th_loop, url, &co, &err), TETHER_OK);
    tether_tls_config_unref(ccfg); /* the client keeps its own reference */
    ck_assert(th_run_until_pred(obs_is_connected, &o, 5000));
    ck_assert_int_eq(send_seq(o.cl, 0, 10), TETHER_OK); /* brings the tickets in */
    uint64_t until = th_now_ms() + 5000;
    while (o.got < 1 && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq(o.got, 1);
    r_abort_conns();
    until = th_now_ms() + 5000;
    while (o.connects < 2 && th_now_ms() < until) {
        tether_loop_run_once(th_loop, 10);
    }
    ck_assert_int_eq(o.connects, 2);
    ck_assert_int_eq(o.resumed, 1); /* the second connection, not the first */
    close_client(&o);
    tether_listener_close(R.l);
    tether_tls_config_unref(R.tls_cfg);
}
END_TEST

static Suite *reconnect_suite(void)
{
    Suite *s = suite_create("reconnect");
    TCase *unit = tcase_create("backoff");
    tcase_add_test(unit, backoff_schedule_sequence_and_cap);
    tcase_add_test(unit, backoff_jitter_bounds_never_negative);
    tcase_add_test(unit, backoff_reset_starts_over);
    suite_add_tcase(s, unit);

    TCase *tc = tcase_create("client");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, client_options_are_checked);
    tcase_add_test(tc, delays_follow_the_schedule);
    tcase_add_test(tc, server_restart_client_comes_back);
    tcase_add_test(tc, delay_resets_only_after_a_stable_connection);
    tcase_add_test(tc, max_attempts_gives_up_and_hands_back_every_message);
    tcase_add_test(tc, cut_connection_resends_what_was_not_written);
    tcase_add_test(tc, partially_written_message_is_resent_in_full);
    tcase_add_test(tc, reconnect_storm_is_spread_by_jitter);
    tcase_add_test(tc, queue_bounds_then_drain);
    tcase_add_test(tc, record_pool_keeps_bounded_spares);
    tcase_add_test(tc, fail_fast_policy);
    tcase_add_test(tc, reconnect_now_skips_the_wait);
    tcase_add_test(tc, pause_survives_a_reconnect);
    tcase_add_test(tc, close_flushes_or_hands_back);
    tcase_add_test(tc, max_age_rotates_connections_without_loss);
    tcase_add_test(tc, heartbeat_timeout_triggers_reconnect);
    tcase_add_test(tc, tls_reconnect_resumes_the_session);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(reconnect_suite());
}
