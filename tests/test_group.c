/* SPDX-License-Identifier: MIT */
/* Loop groups (lib/group.c): groups of 2 and 4 server loops serving
 * 2000 concurrent TLS clients that run on a client group of their own,
 * every message echoed in order and every loop given connections; the
 * Unix-socket acceptor spreading connections evenly; and a group stop with
 * clients connected, where every on_close runs exactly once on the thread
 * of the loop that owns the connection. Callbacks run on the groups'
 * threads, where check's asserts must not be used: they record failures,
 * and the test's own thread asserts. */
#include <check.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "helpers.h"

#ifndef TETHER_CERTS_DIR
#error "TETHER_CERTS_DIR must name the certs/ directory"
#endif
#define CERT(name) TETHER_CERTS_DIR "/" name

#define MAX_LOOPS 8
#define MSGS 5
#define MSG_LEN 32
#define STALL_MB 24

struct cli {
    uint32_t id;
    uint32_t next_expect;
    int closes;
    int reason;
    bool connected;
    int goaways;  /* on_goaway calls */
    bool control; /* negotiates control frames (heartbeats) */
};

struct srv_conn {
    int loop;   /* where on_accept ran */
    int closes; /* on_close calls */
    int reason; /* what the last one said */
    bool thread_ok;
};

static struct {
    tether_loop_group *sg; /* servers */
    tether_loop_group *cg; /* clients */
    pthread_t sthreads[MAX_LOOPS];
    pthread_t cthreads[MAX_LOOPS];
    atomic_int threads_known;
    struct cli *clis;
    size_t nclis;
    const char *url;
    tether_tls_config *ctls;
    bool echo_close;           /* clients close once every echo is back */
    bool stall;                /* clients stop reading; the server queues STALL_MB for each */
    bool keep_open;            /* clients stay connected once every echo is back */
    bool split_send;           /* clients send message 0, and the others on its echo */
    atomic_int first_echoes;   /* clients that got the echo of message 0 */
    bool some_control;         /* every other client negotiates control frames */
    atomic_int drained;        /* tether_loop_group_shutdown() reported */
    atomic_int drained_status; /* ... with this status */
    atomic_int drained_loop;   /* ... on this loop's thread */
    int stop_timeout_ms;
    int close_timeout_ms; /* server connections; 0 for the default */
    atomic_int connected;
    atomic_int cli_closed;
    atomic_int srv_accepted;
    atomic_int srv_closed;
    atomic_int accepted_on[MAX_LOOPS];
    pthread_mutex_t mu;
    struct srv_conn **srv;
    size_t nsrv;
    atomic_int errors;
    char first_error[256];
} R;

static void fail_later(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fail_later(const char *fmt, ...)
{
    if (atomic_fetch_add(&R.errors, 1) == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(R.first_error, sizeof R.first_error, fmt, ap);
        va_end(ap);
    }
}

static void raise_nofile(rlim_t want)
{
    struct rlimit rl;
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
        ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
    }
}

static void reset(void)
{
    memset(&R, 0, sizeof R);
    pthread_mutex_init(&R.mu, NULL);
}

/* Waits (bounded, a hang guard) until *v reaches want. */
static bool wait_int(atomic_int *v, int want, int ms)
{
    uint64_t end = th_now_ms() + (uint64_t)ms;
    while (atomic_load(v) < want) {
        if (th_now_ms() > end) {
            return false;
        }
        usleep(2000);
    }
    return true;
}

/* Waits (bounded) until the group listener counts no live connection:
 * a connection leaves the count when it is freed, just after its
 * on_close has returned. */
static bool wait_inactive(const tether_group_listener *gl, int ms)
{
    uint64_t end = th_now_ms() + (uint64_t)ms;
    for (;;) {
        tether_listener_stats st;
        ck_assert_int_eq(tether_group_listener_get_stats(gl, -1, &st), TETHER_OK);
        if (st.active == 0) {
            return true;
        }
        if (th_now_ms() > end) {
            return false;
        }
        usleep(2000);
    }
}

/* Whether the calling thread is the one that runs the loop owning c. */
static bool on_owner_thread(tether_loop_group *g, pthread_t *threads, tether_conn *c)
{
    int i = tether_loop_group_index(g, tether_conn_loop(c));
    return i >= 0 && tether_loop_group_current(g) == i && pthread_equal(pthread_self(), threads[i]);
}

/* ---- knowing each loop's thread ------------------------------------------ */

static void note_thread_cb(tether_loop *loop, void *ud)
{
    (void)loop;
    *(pthread_t *)ud = pthread_self();
    atomic_fetch_add(&R.threads_known, 1);
}

/* Starts g and records the thread of every loop in threads[]. */
static void start_group(tether_loop_group *g, pthread_t *threads)
{
    tether_error err;
    ck_assert_msg(tether_loop_group_start(g, &err) == TETHER_OK, "%s", err.message);
    int before = atomic_load(&R.threads_known);
    size_t n = tether_loop_group_count(g);
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(
            tether_loop_post(tether_loop_group_loop(g, i), note_thread_cb, &threads[i]), TETHER_OK);
    }
    ck_assert(wait_int(&R.threads_known, before + (int)n, 30000));
    for (size_t i = 0; i < n; i++) {
        ck_assert(!pthread_equal(threads[i], pthread_self()));
    }
}

static void stop_group(tether_loop_group *g)
{
    ck_assert_int_eq(tether_loop_group_stop(g), TETHER_OK);
    ck_assert_int_eq(tether_loop_group_join(g), TETHER_OK);
    ck_assert_int_eq(tether_loop_group_free(g), TETHER_OK);
}

/* ---- the server: echo every message -------------------------------------- */

static void srv_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    struct srv_conn *s = calloc(1, sizeof *s);
    if (s == NULL) {
        fail_later("out of memory");
        tether_conn_abort(c);
        return;
    }
    s->loop = tether_loop_group_current(R.sg);
    if (!on_owner_thread(R.sg, R.sthreads, c)) {
        fail_later("on_accept ran on loop %d's thread, not on the owner's", s->loop);
    }
    if (s->loop >= 0 && s->loop < MAX_LOOPS) {
        atomic_fetch_add(&R.accepted_on[s->loop], 1);
    }
    pthread_mutex_lock(&R.mu);
    R.srv[R.nsrv++] = s;
    pthread_mutex_unlock(&R.mu);
    tether_conn_set_userdata(c, s);
    if (R.stall) {
        /* More than the kernel's socket buffers hold: a graceful close
         * cannot finish while the client does not read. */
        static uint8_t chunk[1024 * 1024];
        for (int i = 0; i < STALL_MB; i++) {
            int rv = tether_conn_send(c, chunk, sizeof chunk);
            if (rv != TETHER_OK) {
                fail_later("queueing %d MiB: %s", STALL_MB, tether_strerror(rv));
                break;
            }
        }
    }
    atomic_fetch_add(&R.srv_accepted, 1);
}

static void srv_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)ud;
    int rv = tether_conn_send(c, data, len);
    if (rv != TETHER_OK) {
        fail_later("echo: %s", tether_strerror(rv));
    }
}

static void srv_close(tether_conn *c, int reason, void *ud)
{
    (void)reason;
    struct srv_conn *s = ud;
    if (s == NULL) {
        return; /* never reached on_accept */
    }
    s->closes++;
    s->reason = reason;
    s->thread_ok =
        on_owner_thread(R.sg, R.sthreads, c) && tether_loop_group_current(R.sg) == s->loop;
    atomic_fetch_add(&R.srv_closed, 1);
}

static tether_group_listener *serve(size_t nloops, const char *url, tether_group_balance mode,
                                    bool tls, size_t max_clients)
{
    tether_error err;
    tether_loop_group_opts go;
    tether_loop_group_opts_init(&go);
    go.stop_timeout_ms = R.stop_timeout_ms != 0 ? R.stop_timeout_ms : 20000;
    ck_assert_msg(tether_loop_group_new(&R.sg, nloops, &go, &err) == TETHER_OK, "%s", err.message);
    ck_assert_uint_eq(tether_loop_group_count(R.sg), nloops);
    R.srv = calloc(max_clients, sizeof *R.srv);
    ck_assert_ptr_nonnull(R.srv);

    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = srv_message;
    co.on_close = srv_close;
    if (R.stall) {
        co.send_hwm = 2 * STALL_MB * 1024 * 1024;
    }
    if (R.close_timeout_ms != 0) {
        co.close_timeout_ms = R.close_timeout_ms;
    }
    tether_tls_config *stls = NULL;
    if (tls) {
        tether_tls_opts to;
        tether_tls_opts_init(&to);
        to.cert_file = CERT("server.pem");
        to.key_file = CERT("server.key");
        to.handshake_timeout_ms = 120000; /* a loaded sanitizer build is slow */
        ck_assert_msg(tether_tls_config_new(&stls, &to, &err) == TETHER_OK, "%s", err.message);
        co.tls = stls;
    }
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = srv_accept;
    lo.conn_opts = &co;
    lo.backlog = 4096;
    tether_group_listener *gl = NULL;
    int rv = tether_group_listen(&gl, R.sg, url, &lo, mode, &err);
    ck_assert_msg(rv == TETHER_OK, "group listen on %s: %s", url, err.message);
    tether_tls_config_unref(stls);
    start_group(R.sg, R.sthreads);
    return gl;
}

/* ---- the clients: each sends MSGS numbered messages --------------------- */

static void cli_send_range(tether_conn *c, struct cli *k, uint32_t from, uint32_t to)
{
    for (uint32_t seq = from; seq < to; seq++) {
        uint8_t m[MSG_LEN];
        th_fill(m, sizeof m, k->id * 131u + seq);
        memcpy(m, &k->id, 4);
        memcpy(m + 4, &seq, 4);
        int rv = tether_conn_send(c, m, sizeof m);
        if (rv != TETHER_OK) {
            fail_later("client %u: send: %s", k->id, tether_strerror(rv));
        }
    }
}

static void cli_send_all(tether_conn *c, struct cli *k)
{
    /* split_send: the first now, the rest once its echo is back. */
    cli_send_range(c, k, 0, R.split_send ? 1 : MSGS);
}

static void cli_connect(tether_conn *c, int status, void *ud)
{
    struct cli *k = ud;
    if (status != TETHER_OK) {
        fail_later("client %u: connect: %s (%s)", k->id, tether_strerror(status),
                   tether_conn_last_error(c));
        return;
    }
    k->connected = true;
    if (R.stall) {
        tether_conn_pause(c);
    }
    atomic_fetch_add(&R.connected, 1);
    if (R.echo_close) {
        cli_send_all(c, k);
    }
}

static void cli_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    struct cli *k = ud;
    uint32_t id;
    uint32_t seq;
    if (len != MSG_LEN) {
        fail_later("client %u: echo of %zu bytes", k->id, len);
        return;
    }
    memcpy(&id, data, 4);
    memcpy(&seq, data + 4, 4);
    if (id != k->id || seq != k->next_expect) {
        fail_later("client %u: got message %u of client %u, expected %u", k->id, seq, id,
                   k->next_expect);
    }
    k->next_expect++;
    if (k->next_expect == 1) {
        atomic_fetch_add(&R.first_echoes, 1);
        if (R.split_send) {
            cli_send_range(c, k, 1, MSGS);
        }
    }
    if (k->next_expect == MSGS && !R.keep_open) {
        tether_conn_close(c);
    }
}

static void cli_goaway(tether_conn *c, unsigned reason, const char *text, void *ud)
{
    struct cli *k = ud;
    k->goaways++;
    if (reason != TETHER_GOAWAY_SHUTDOWN || !on_owner_thread(R.cg, R.cthreads, c)) {
        fail_later("client %u: GOAWAY reason %u (%s), or off its loop's thread", k->id, reason,
                   text);
    }
}

static void cli_close(tether_conn *c, int reason, void *ud)
{
    struct cli *k = ud;
    k->closes++;
    k->reason = reason;
    if (!on_owner_thread(R.cg, R.cthreads, c)) {
        fail_later("client %u: on_close off its loop's thread", k->id);
    }
    atomic_fetch_add(&R.cli_closed, 1);
}

struct dial_batch {
    size_t from;
    size_t step;
};

/* On a client loop: dials clients from, from + step, ... */
static void dial_batch_cb(tether_loop *loop, void *ud)
{
    struct dial_batch *b = ud;
    for (size_t i = b->from; i < R.nclis; i += b->step) {
        struct cli *k = &R.clis[i];
        tether_conn_opts o;
        tether_conn_opts_init(&o);
        o.on_connect = cli_connect;
        o.on_message = cli_message;
        o.on_close = cli_close;
        o.on_goaway = cli_goaway;
        o.userdata = k;
        if (R.some_control && i % 2 == 0) {
            k->control = true;
            o.heartbeat_ms = 10000; /* negotiates control frames: GOAWAY */
        }
        o.tls = R.ctls;
        o.connect_timeout_ms = 120000;
        tether_conn *c;
        tether_error err;
        int rv = tether_conn_dial(&c, loop, R.url, &o, &err);
        if (rv != TETHER_OK) {
            fail_later("dial %s: %s", R.url, err.message);
            atomic_fetch_add(&R.cli_closed, 1);
        }
    }
    free(b);
}

static void run_clients(size_t n, size_t nloops, const char *url, bool tls)
{
    tether_error err;
    R.url = url;
    R.nclis = n;
    R.clis = calloc(n, sizeof *R.clis);
    ck_assert_ptr_nonnull(R.clis);
    for (size_t i = 0; i < n; i++) {
        R.clis[i].id = (uint32_t)i;
    }
    if (tls) {
        tether_tls_opts to;
        tether_tls_opts_init(&to);
        to.ca_file = CERT("ca.pem");
        ck_assert_msg(tether_tls_config_new(&R.ctls, &to, &err) == TETHER_OK, "%s", err.message);
    }
    ck_assert_msg(tether_loop_group_new(&R.cg, nloops, NULL, &err) == TETHER_OK, "%s", err.message);
    start_group(R.cg, R.cthreads);
    for (size_t i = 0; i < nloops; i++) {
        struct dial_batch *b = malloc(sizeof *b);
        ck_assert_ptr_nonnull(b);
        b->from = i;
        b->step = nloops;
        ck_assert_int_eq(tether_loop_post(tether_loop_group_loop(R.cg, i), dial_batch_cb, b),
                         TETHER_OK);
    }
}

static void finish(void)
{
    tether_tls_config_unref(R.ctls);
    for (size_t i = 0; i < R.nsrv; i++) {
        free(R.srv[i]);
    }
    free(R.srv);
    free(R.clis);
    pthread_mutex_destroy(&R.mu);
}

/* ---- 2000 TLS clients, echoed in order, over 2 and 4 loops -------------- */

/* Every server connection's on_close ran exactly once, on the thread of
 * the loop that owns it. */
static void servers_closed_once(void)
{
    for (size_t i = 0; i < R.nsrv; i++) {
        ck_assert_int_eq(R.srv[i]->closes, 1);
        ck_assert_msg(R.srv[i]->thread_ok, "server connection %zu closed off its thread", i);
    }
}

static void tls_echo(size_t nloops, tether_group_balance mode, size_t n)
{
    reset();
    raise_nofile(3 * n + 200);
    tether_group_listener *gl = serve(nloops, "tls://127.0.0.1:0", mode, true, n);
    char url[64];
    snprintf(url, sizeof url, "tls://127.0.0.1:%d", tether_group_listener_port(gl));
    ck_assert_int_gt(tether_group_listener_port(gl), 0);
    R.echo_close = true;
    run_clients(n, 2, url, true);

    bool all = wait_int(&R.cli_closed, (int)n, 240000);
    ck_assert_msg(atomic_load(&R.errors) == 0, "%d errors, the first: %s", atomic_load(&R.errors),
                  R.first_error);
    ck_assert_msg(all, "only %d of %zu clients finished", atomic_load(&R.cli_closed), n);
    for (size_t i = 0; i < n; i++) {
        ck_assert_uint_eq(R.clis[i].next_expect, MSGS);
        ck_assert_int_eq(R.clis[i].closes, 1);
        ck_assert_int_eq(R.clis[i].reason, TETHER_OK);
    }
    /* The servers see every client leave. */
    ck_assert(wait_int(&R.srv_closed, (int)n, 60000));

    tether_listener_stats st;
    ck_assert_int_eq(tether_group_listener_get_stats(gl, -1, &st), TETHER_OK);
    ck_assert_uint_eq(st.accepted, n);
    ck_assert_uint_eq(st.rejected, 0);
    ck_assert(wait_inactive(gl, 60000));
    uint64_t sum = 0;
    for (size_t i = 0; i < nloops; i++) {
        ck_assert_int_eq(tether_group_listener_get_stats(gl, (int)i, &st), TETHER_OK);
        /* Every loop got some, and on_accept agrees with the counters. */
        ck_assert_msg(st.accepted > 0, "loop %zu accepted no connection", i);
        ck_assert_uint_eq(st.accepted, (uint64_t)atomic_load(&R.accepted_on[i]));
        sum += st.accepted;
        fprintf(stderr, "tls echo, %zu loops: loop %zu accepted %llu\n", nloops, i,
                (unsigned long long)st.accepted);
    }
    ck_assert_uint_eq(sum, n);
    ck_assert_int_eq(tether_group_listener_get_stats(gl, (int)nloops, &st), TETHER_EINVAL);
    servers_closed_once();
    stop_group(R.cg);
    stop_group(R.sg);
    finish();
}

START_TEST(tls_echo_2000_clients_2_loops)
{
    tls_echo(2, TETHER_BALANCE_AUTO, 2000);
}
END_TEST

START_TEST(tls_echo_2000_clients_4_loops)
{
    tls_echo(4, TETHER_BALANCE_AUTO, 2000);
}
END_TEST

/* The acceptor works for TCP too: the handshake then runs on the loop the
 * socket was handed to, not on the acceptor's. */
START_TEST(tls_echo_through_the_acceptor)
{
    tls_echo(3, TETHER_BALANCE_ACCEPTOR, 600);
}
END_TEST

/* ---- the Unix-socket acceptor ------------------------------------------- */

START_TEST(unix_acceptor_spreads_evenly)
{
    const size_t n = 200;
    const size_t nloops = 4;
    reset();
    raise_nofile(3 * n + 200);
    char url[128];
    snprintf(url, sizeof url, "unix:///tmp/tether-test-group-%d.sock", (int)getpid());
    tether_group_listener *gl = serve(nloops, url, TETHER_BALANCE_AUTO, false, n);
    ck_assert_int_eq(tether_group_listener_port(gl), 0);
    ck_assert_str_eq(tether_group_listener_url(gl), url);
    R.echo_close = false; /* stay connected */
    run_clients(n, 2, url, false);
    ck_assert(wait_int(&R.connected, (int)n, 60000));
    ck_assert(wait_int(&R.srv_accepted, (int)n, 60000));
    ck_assert_msg(atomic_load(&R.errors) == 0, "%s", R.first_error);

    /* With nobody leaving, the least-loaded choice keeps the loops within
     * one connection of each other: 50 each. */
    for (size_t i = 0; i < nloops; i++) {
        tether_listener_stats st;
        ck_assert_int_eq(tether_group_listener_get_stats(gl, (int)i, &st), TETHER_OK);
        ck_assert_uint_eq(st.accepted, n / nloops);
        ck_assert_uint_eq(st.active, n / nloops);
        ck_assert_int_eq(atomic_load(&R.accepted_on[i]), (int)(n / nloops));
    }

    /* The clients leave: the counts of live connections go back to 0. */
    stop_group(R.cg);
    ck_assert_int_eq(atomic_load(&R.cli_closed), (int)n);
    ck_assert(wait_int(&R.srv_closed, (int)n, 60000));
    tether_listener_stats st;
    ck_assert_int_eq(tether_group_listener_get_stats(gl, -1, &st), TETHER_OK);
    ck_assert_uint_eq(st.accepted, n);
    ck_assert(wait_inactive(gl, 60000));
    stop_group(R.sg);
    /* The acceptor's socket file is gone with it. */
    ck_assert_int_ne(access(url + strlen("unix://"), F_OK), 0);
    finish();
}
END_TEST

/* ---- stopping a group while clients are connected ----------------------- */

static void stop_with_clients(const char *url_fmt, tether_group_balance mode)
{
    const size_t n = 300;
    const size_t nloops = 4;
    reset();
    raise_nofile(3 * n + 200);
    char lurl[128];
    snprintf(lurl, sizeof lurl, url_fmt, (int)getpid());
    tether_group_listener *gl = serve(nloops, lurl, mode, false, n);
    char url[128];
    if (tether_group_listener_port(gl) > 0) {
        snprintf(url, sizeof url, "tcp://127.0.0.1:%d", tether_group_listener_port(gl));
    } else {
        snprintf(url, sizeof url, "%s", lurl);
    }
    R.echo_close = false;
    run_clients(n, 2, url, false);
    ck_assert(wait_int(&R.connected, (int)n, 60000));
    ck_assert(wait_int(&R.srv_accepted, (int)n, 60000));

    /* The server group stops with every client still connected. */
    stop_group(R.sg);
    ck_assert_msg(atomic_load(&R.errors) == 0, "%s", R.first_error);
    ck_assert_int_eq(atomic_load(&R.srv_closed), (int)n);
    ck_assert_uint_eq(R.nsrv, n);
    for (size_t i = 0; i < nloops; i++) {
        ck_assert_msg(atomic_load(&R.accepted_on[i]) > 0, "loop %zu got nothing", i);
    }
    servers_closed_once();
    /* The clients hear the servers close, each once. */
    ck_assert(wait_int(&R.cli_closed, (int)n, 60000));
    stop_group(R.cg);
    for (size_t i = 0; i < n; i++) {
        ck_assert_int_eq(R.clis[i].closes, 1);
        ck_assert_int_eq(R.clis[i].reason, TETHER_EOF);
    }
    ck_assert_msg(atomic_load(&R.errors) == 0, "%s", R.first_error);
    finish();
}

START_TEST(stop_with_clients_connected_reuseport)
{
    stop_with_clients("tcp://127.0.0.1:0", TETHER_BALANCE_REUSEPORT);
}
END_TEST

START_TEST(stop_with_clients_connected_acceptor)
{
    stop_with_clients("unix:///tmp/tether-test-group-stop-%d.sock", TETHER_BALANCE_ACCEPTOR);
}
END_TEST

/* ---- a draining stop ----------------------------------------------------- */

static void group_drained(tether_loop_group *g, int status, void *ud)
{
    (void)ud;
    atomic_store(&R.drained_status, status);
    atomic_store(&R.drained_loop, tether_loop_group_current(g));
    atomic_fetch_add(&R.drained, 1);
}

/* tether_loop_group_shutdown() with clients on every loop, half of them
 * speaking control frames: those get a GOAWAY and lose none of the
 * messages they sent before it (every echo comes back, even those still
 * in flight when the drain began); the others are closed gracefully.
 * Every on_close runs once, on its own loop's thread, and the drain
 * reports once, from one of the group's threads. */
static void drain_with_clients(const char *url_fmt, tether_group_balance mode)
{
    const size_t n = 200;
    const size_t nloops = 4;
    reset();
    raise_nofile(3 * n + 200);
    char lurl[128];
    snprintf(lurl, sizeof lurl, url_fmt, (int)getpid());
    tether_group_listener *gl = serve(nloops, lurl, mode, false, n);
    char url[128];
    if (tether_group_listener_port(gl) > 0) {
        snprintf(url, sizeof url, "tcp://127.0.0.1:%d", tether_group_listener_port(gl));
    } else {
        snprintf(url, sizeof url, "%s", lurl);
    }
    R.echo_close = true; /* send MSGS at once */
    R.keep_open = true;
    R.some_control = true;
    R.split_send = true;
    atomic_store(&R.drained_loop, -2);
    run_clients(n, 2, url, false);
    ck_assert(wait_int(&R.srv_accepted, (int)n, 60000));
    /* The echo of a client's first message means the server has read its
     * HELLO (sent before it): the drain will use GOAWAY with it. */
    ck_assert(wait_int(&R.first_echoes, (int)n, 60000));

    /* The other messages may still be on their way: the drain must
     * finish them. */
    ck_assert_int_eq(tether_loop_group_shutdown(R.sg, 60000, group_drained, NULL), TETHER_OK);
    ck_assert_int_eq(tether_loop_group_shutdown(R.sg, 60000, group_drained, NULL), TETHER_EBUSY);
    ck_assert_int_eq(tether_loop_group_join(R.sg), TETHER_OK);
    ck_assert_int_eq(atomic_load(&R.drained), 1);
    ck_assert_int_eq(atomic_load(&R.drained_status), TETHER_OK);
    ck_assert_int_ge(atomic_load(&R.drained_loop), 0);
    ck_assert_int_lt(atomic_load(&R.drained_loop), (int)nloops);
    ck_assert_int_eq(tether_loop_group_free(R.sg), TETHER_OK);
    ck_assert_msg(atomic_load(&R.errors) == 0, "%s", R.first_error);
    ck_assert_int_eq(atomic_load(&R.srv_closed), (int)n);
    for (size_t i = 0; i < nloops; i++) {
        ck_assert_msg(atomic_load(&R.accepted_on[i]) > 0, "loop %zu got nothing", i);
    }
    servers_closed_once();
    ck_assert(wait_int(&R.cli_closed, (int)n, 60000));
    stop_group(R.cg);
    for (size_t i = 0; i < n; i++) {
        struct cli *k = &R.clis[i];
        ck_assert_int_eq(k->closes, 1);
        ck_assert_int_eq(k->reason, TETHER_EOF);
        if (k->control) {
            ck_assert_int_eq(k->goaways, 1);
            ck_assert_msg(k->next_expect == MSGS, "client %zu: %u of %d echoes before the drain", i,
                          k->next_expect, MSGS);
        } else {
            ck_assert_int_eq(k->goaways, 0);
        }
    }
    ck_assert_msg(atomic_load(&R.errors) == 0, "%s", R.first_error);
    finish();
}

START_TEST(shutdown_drains_every_loop_reuseport)
{
    drain_with_clients("tcp://127.0.0.1:0", TETHER_BALANCE_REUSEPORT);
}
END_TEST

START_TEST(shutdown_drains_every_loop_acceptor)
{
    drain_with_clients("unix:///tmp/tether-test-group-drain-%d.sock", TETHER_BALANCE_ACCEPTOR);
}
END_TEST

/* A drain that cannot finish (the clients do not read what the server
 * queued for them) ends at the deadline with TETHER_ETIMEDOUT; a
 * tether_loop_group_stop() meanwhile is what cuts it short otherwise. */
START_TEST(shutdown_reports_the_deadline)
{
    const size_t n = 4;
    reset();
    R.stall = true;
    R.some_control = true;
    R.stop_timeout_ms = 300;
    R.close_timeout_ms = 300; /* the close at the deadline cannot flush either */
    tether_group_listener *gl = serve(2, "tcp://127.0.0.1:0", TETHER_BALANCE_REUSEPORT, false, n);
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", tether_group_listener_port(gl));
    run_clients(n, 1, url, false);
    ck_assert(wait_int(&R.connected, (int)n, 60000));
    ck_assert(wait_int(&R.srv_accepted, (int)n, 60000));
    ck_assert_int_eq(tether_loop_group_shutdown(R.sg, 300, group_drained, NULL), TETHER_OK);
    ck_assert_int_eq(tether_loop_group_join(R.sg), TETHER_OK);
    ck_assert_int_eq(atomic_load(&R.drained), 1);
    ck_assert_int_eq(atomic_load(&R.drained_status), TETHER_ETIMEDOUT);
    ck_assert_int_eq(tether_loop_group_free(R.sg), TETHER_OK);
    ck_assert_msg(atomic_load(&R.errors) == 0, "%s", R.first_error);
    ck_assert_int_eq(atomic_load(&R.srv_closed), (int)n);
    servers_closed_once();
    stop_group(R.cg);
    ck_assert_int_eq(atomic_load(&R.cli_closed), (int)n);
    finish();
}
END_TEST

/* tether_loop_group_stop() during a drain that cannot finish (the
 * clients do not read) cuts it short long before its deadline: every
 * connection closes once, on its thread, and the drain reports
 * TETHER_ECANCELED. */
START_TEST(stop_cuts_a_shutdown_short)
{
    const size_t n = 4;
    reset();
    R.stall = true;
    R.some_control = true;
    R.stop_timeout_ms = 300;
    R.close_timeout_ms = 300;
    tether_group_listener *gl = serve(2, "tcp://127.0.0.1:0", TETHER_BALANCE_REUSEPORT, false, n);
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", tether_group_listener_port(gl));
    run_clients(n, 1, url, false);
    ck_assert(wait_int(&R.connected, (int)n, 60000));
    ck_assert(wait_int(&R.srv_accepted, (int)n, 60000));
    uint64_t t0 = th_now_ms();
    ck_assert_int_eq(tether_loop_group_shutdown(R.sg, 600000, group_drained, NULL), TETHER_OK);
    ck_assert_int_eq(tether_loop_group_stop(R.sg), TETHER_OK);
    ck_assert_int_eq(tether_loop_group_stop(R.sg), TETHER_OK); /* idempotent */
    ck_assert_int_eq(tether_loop_group_join(R.sg), TETHER_OK);
    /* A hang guard, not a speed check: the drain deadline is 10 minutes. */
    ck_assert_uint_lt(th_now_ms() - t0, 300000);
    ck_assert_int_eq(atomic_load(&R.drained), 1);
    ck_assert_int_eq(atomic_load(&R.drained_status), TETHER_ECANCELED);
    ck_assert_int_eq(tether_loop_group_free(R.sg), TETHER_OK);
    ck_assert_msg(atomic_load(&R.errors) == 0, "%s", R.first_error);
    ck_assert_int_eq(atomic_load(&R.srv_closed), (int)n);
    servers_closed_once();
    stop_group(R.cg);
    ck_assert_int_eq(atomic_load(&R.cli_closed), (int)n);
    finish();
}
END_TEST

/* Connections that cannot close gracefully are aborted once the group's
 * stop_timeout_ms has passed: on_close still runs once each, on its
 * loop's thread, and the stop ends. */
START_TEST(stop_aborts_after_the_stop_timeout)
{
    const size_t n = 4;
    reset();
    R.stall = true;
    R.stop_timeout_ms = 300;
    tether_group_listener *gl = serve(2, "tcp://127.0.0.1:0", TETHER_BALANCE_REUSEPORT, false, n);
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", tether_group_listener_port(gl));
    run_clients(n, 1, url, false);
    ck_assert(wait_int(&R.connected, (int)n, 60000));
    ck_assert(wait_int(&R.srv_accepted, (int)n, 60000));
    uint64_t t0 = th_now_ms();
    stop_group(R.sg);
    uint64_t took = th_now_ms() - t0;
    ck_assert_msg(atomic_load(&R.errors) == 0, "%s", R.first_error);
    ck_assert_int_eq(atomic_load(&R.srv_closed), (int)n);
    servers_closed_once();
    for (size_t i = 0; i < R.nsrv; i++) {
        ck_assert_int_eq(R.srv[i]->reason, TETHER_ECANCELED);
    }
    /* Not a timing assertion: only that it waited for the deadline rather
     * than aborting at once (the close timeout is 10 s, far beyond). */
    ck_assert_uint_ge(took, 250);
    stop_group(R.cg);
    ck_assert_int_eq(atomic_load(&R.cli_closed), (int)n);
    finish();
}
END_TEST

/* ---- the API's rules ------------------------------------------------------ */

struct from_loop {
    atomic_int done;
    int rv;
    int current;
};

static void listen_from_loop_cb(tether_loop *loop, void *ud)
{
    (void)loop;
    struct from_loop *f = ud;
    tether_group_listener *gl;
    f->rv = tether_group_listen(&gl, R.sg, "tcp://127.0.0.1:0", NULL, TETHER_BALANCE_AUTO, NULL);
    f->current = tether_loop_group_current(R.sg);
    atomic_store(&f->done, 1);
}

/* A group's loop is an ordinary loop: a timer started on it from its own
 * thread fires there, and the group's stop frees it (else the repeating
 * timer would keep the loop, and the stop, going forever). */
static atomic_int timer_fired;
static atomic_int timer_wrong_thread;

static void group_timer_cb(tether_timer *t, void *ud)
{
    (void)t;
    if (!pthread_equal(pthread_self(), *(pthread_t *)ud)) {
        atomic_fetch_add(&timer_wrong_thread, 1);
    }
    atomic_fetch_add(&timer_fired, 1);
}

static void start_timer_cb(tether_loop *loop, void *ud)
{
    tether_timer *t = NULL;
    if (tether_timer_new(&t, loop) != TETHER_OK ||
        tether_timer_start(t, 1, 5, group_timer_cb, ud) != TETHER_OK) {
        fail_later("cannot start a timer on a group's loop");
    }
}

START_TEST(loops_keep_the_loop_api)
{
    reset();
    tether_error err;
    ck_assert_int_eq(tether_loop_group_new(&R.sg, 2, NULL, &err), TETHER_OK);
    start_group(R.sg, R.sthreads);
    ck_assert_int_eq(
        tether_loop_post(tether_loop_group_loop(R.sg, 1), start_timer_cb, &R.sthreads[1]),
        TETHER_OK);
    ck_assert(wait_int(&timer_fired, 3, 30000));
    stop_group(R.sg);
    ck_assert_msg(atomic_load(&R.errors) == 0, "%s", R.first_error);
    ck_assert_int_eq(atomic_load(&timer_wrong_thread), 0);
    pthread_mutex_destroy(&R.mu);
}
END_TEST

START_TEST(api_errors)
{
    reset();
    tether_error err;
    tether_loop_group *g = NULL;
    ck_assert_int_eq(tether_loop_group_new(&g, TETHER_GROUP_MAX_LOOPS + 1, NULL, &err),
                     TETHER_EINVAL);
    ck_assert_ptr_null(g);
    ck_assert_ptr_nonnull(strstr(err.message, "at most"));
    ck_assert_int_eq(tether_loop_group_new(NULL, 1, NULL, &err), TETHER_EINVAL);

    /* 0 loops: one per CPU. */
    ck_assert_int_eq(tether_loop_group_new(&g, 0, NULL, &err), TETHER_OK);
    ck_assert_uint_eq(tether_loop_group_count(g), (size_t)sysconf(_SC_NPROCESSORS_ONLN));
    ck_assert_ptr_null(tether_loop_group_loop(g, tether_loop_group_count(g)));
    ck_assert_int_eq(tether_loop_group_index(g, th_loop), -1);
    ck_assert_int_eq(tether_loop_group_index(g, tether_loop_group_loop(g, 0)), 0);
    ck_assert_int_eq(tether_loop_group_current(g), -1);
    /* Nothing runs yet: nothing to drain. */
    ck_assert_int_eq(tether_loop_group_shutdown(g, 0, NULL, NULL), TETHER_EINVAL);
    ck_assert_int_eq(tether_loop_group_shutdown(NULL, 0, NULL, NULL), TETHER_EINVAL);

    /* SO_REUSEPORT cannot balance Unix sockets. */
    tether_group_listener *gl = NULL;
    ck_assert_int_eq(tether_group_listen(&gl, g, "unix:///tmp/tether-test-group-x.sock", NULL,
                                         TETHER_BALANCE_REUSEPORT, &err),
                     TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "SO_REUSEPORT"));
    ck_assert_int_eq(
        tether_group_listen(&gl, g, "tcp://127.0.0.1:0", NULL, (tether_group_balance)7, &err),
        TETHER_EINVAL);
    ck_assert_int_eq(tether_group_listen(&gl, g, "tcp://nohost", NULL, TETHER_BALANCE_AUTO, &err),
                     TETHER_EINVAL);

    /* A group never started is freed with its listener still open. */
    ck_assert_int_eq(
        tether_group_listen(&gl, g, "tcp://127.0.0.1:0", NULL, TETHER_BALANCE_AUTO, &err),
        TETHER_OK);
    ck_assert_int_gt(tether_group_listener_port(gl), 0);
    ck_assert_int_eq(tether_loop_group_stop(g), TETHER_OK);
    ck_assert_int_eq(tether_loop_group_join(g), TETHER_OK);
    ck_assert_int_eq(tether_loop_group_free(g), TETHER_OK);

    /* Started: a second start is refused, a listen from the group's own
     * thread too (it would wait for itself), and so is freeing before join. */
    ck_assert_int_eq(tether_loop_group_new(&R.sg, 2, NULL, &err), TETHER_OK);
    start_group(R.sg, R.sthreads);
    ck_assert_int_eq(tether_loop_group_start(R.sg, &err), TETHER_EBUSY);
    struct from_loop f = {.rv = 1};
    ck_assert_int_eq(tether_loop_post(tether_loop_group_loop(R.sg, 1), listen_from_loop_cb, &f),
                     TETHER_OK);
    ck_assert(wait_int(&f.done, 1, 30000));
    ck_assert_int_eq(f.rv, TETHER_EBUSY);
    ck_assert_int_eq(f.current, 1);
    ck_assert_int_eq(tether_loop_group_free(R.sg), TETHER_EBUSY);
    ck_assert_int_eq(tether_loop_group_stop(R.sg), TETHER_OK);
    ck_assert_int_eq(tether_loop_group_join(R.sg), TETHER_OK);
    /* Stopped: no new listener. */
    ck_assert_int_eq(
        tether_group_listen(&gl, R.sg, "tcp://127.0.0.1:0", NULL, TETHER_BALANCE_AUTO, &err),
        TETHER_ECLOSED);
    ck_assert_int_eq(tether_loop_group_free(R.sg), TETHER_OK);
    pthread_mutex_destroy(&R.mu);
}
END_TEST

Suite *group_suite(void);
Suite *group_suite(void)
{
    Suite *s = suite_create("group");
    TCase *tc = tcase_create("api");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, api_errors);
    tcase_add_test(tc, loops_keep_the_loop_api);
    suite_add_tcase(s, tc);

    tc = tcase_create("drain");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, shutdown_drains_every_loop_reuseport);
    tcase_add_test(tc, shutdown_drains_every_loop_acceptor);
    tcase_add_test(tc, shutdown_reports_the_deadline);
    tcase_add_test(tc, stop_cuts_a_shutdown_short);
    suite_add_tcase(s, tc);

    tc = tcase_create("serve");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, unix_acceptor_spreads_evenly);
    tcase_add_test(tc, stop_with_clients_connected_reuseport);
    tcase_add_test(tc, stop_with_clients_connected_acceptor);
    tcase_add_test(tc, stop_aborts_after_the_stop_timeout);
    tcase_add_test(tc, tls_echo_2000_clients_2_loops);
    tcase_add_test(tc, tls_echo_2000_clients_4_loops);
    tcase_add_test(tc, tls_echo_through_the_acceptor);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(group_suite());
}
