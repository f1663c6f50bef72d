/* SPDX-License-Identifier: MIT */
/* tether_bench --scenario fanin (PROTOCOL.md): K client connections, spread
 * over the client's own loop group, send --count messages of --size bytes
 * in all to one server that runs on a group of --loops loops behind one
 * address. The group listener hands each accepted connection to the loop
 * with the fewest (TETHER_BALANCE_ACCEPTOR), so the K connections of the
 * one client split evenly; SO_REUSEPORT's hash of the addresses (--balance
 * reuseport) splits 16 connections 6/10 or worse nearly half the time, and the
 * loop with more of them then works alone at the end.
 *
 * Each connection first sends an 8-byte hello, its own share of the count
 * (big-endian), and waits for the 1-byte ready. When the last connection is
 * ready the clock starts and every client loop pumps its connections as thr
 * does (until TETHER_EAGAIN, then from on_drain); the server acknowledges a
 * connection's last message with 1 byte, and the clock stops at the last
 * ack. The server checks every length and every connection's share. */
#include "tether_fanin.h"

#include "bench_common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <tether/tether.h>

#define FANIN_HELLO_LEN 8
#define FANIN_HWM (256u * 1024u) /* as thr's */
#define FANIN_ZC_MIN (64u * 1024u)
#define FANIN_BATCH 256 /* messages per tether_conn_send_batch() (as thr's) */

static noreturn void fanin_die(const char *what, int rv, const char *detail)
{
    bench_die("%s: %s (%s)%s%s", what, tether_strerror(rv), tether_err_name(rv),
              detail != NULL && *detail != '\0' ? ": " : "", detail != NULL ? detail : "");
}

/* PROTOCOL.md's TLS settings (as tether_bench.c's bench_tls_setup()). */
static tether_tls_config *fanin_tls(bool server)
{
    if (O.transport != TR_TLS) {
        return NULL;
    }
    tether_tls_opts to;
    tether_tls_opts_init(&to);
    to.min_version = TETHER_TLS_VERSION_1_3;
    to.max_version = TETHER_TLS_VERSION_1_3;
    to.no_resumption = true;
    if (server) {
        to.cert_file = O.cert;
        to.key_file = O.key;
    } else {
        to.ca_file = O.ca;
        to.server_name = SERVER_NAME;
    }
    tether_tls_config *cfg = NULL;
    tether_error err;
    int rv = tether_tls_config_new(&cfg, &to, &err);
    if (rv != TETHER_OK) {
        fanin_die("tether_tls_config_new", rv, err.message);
    }
    return cfg;
}

static void fanin_conn_opts(tether_conn_opts *o, tether_tls_config *tls)
{
    tether_conn_opts_init(o);
    if (O.size + 64 > o->max_msg) {
        o->max_msg = O.size + 64;
    }
    o->tls = tls;
}

static tether_loop_group *new_group(long n)
{
    tether_loop_group *g = NULL;
    tether_error err;
    int rv = tether_loop_group_new(&g, (size_t)n, NULL, &err);
    if (rv != TETHER_OK) {
        fanin_die("tether_loop_group_new", rv, err.message);
    }
    return g;
}

static void start_group(tether_loop_group *g)
{
    tether_error err;
    int rv = tether_loop_group_start(g, &err);
    if (rv != TETHER_OK) {
        fanin_die("tether_loop_group_start", rv, err.message);
    }
}

static void end_group(tether_loop_group *g, const char *who)
{
    int rv = tether_loop_group_stop(g);
    if (rv == TETHER_OK) {
        rv = tether_loop_group_join(g);
    }
    if (rv == TETHER_OK) {
        rv = tether_loop_group_free(g);
    }
    if (rv != TETHER_OK) {
        fanin_die(who, rv, "group teardown");
    }
}

/* CPU seconds, user and system, of who (RUSAGE_SELF: this process, all
 * threads; RUSAGE_CHILDREN: the children reaped, i.e. the server). */
struct cpu_use {
    double user;
    double sys;
};

static struct cpu_use cpu_of(int who)
{
    struct rusage ru;
    getrusage(who, &ru);
    return (struct cpu_use){(double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6,
                            (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6};
}

/* CPU seconds (user + system) this process has used, all threads. */
static double cpu_s(void)
{
    struct cpu_use u = cpu_of(RUSAGE_SELF);
    return u.user + u.sys;
}

/* A flag the main thread waits for, set from a loop's thread. */
static pthread_mutex_t done_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;
static bool done_flag;

static void done_set(void)
{
    pthread_mutex_lock(&done_mu);
    done_flag = true;
    pthread_cond_signal(&done_cv);
    pthread_mutex_unlock(&done_mu);
}

/* Bounded by the run's BENCH_TIMEOUT_S alarm, which kills everything. */
static void done_wait(void)
{
    pthread_mutex_lock(&done_mu);
    while (!done_flag) {
        pthread_cond_wait(&done_cv, &done_mu);
    }
    done_flag = false;
    pthread_mutex_unlock(&done_mu);
}

/* ---- server (child) ------------------------------------------------------ */

struct srv_conn {
    uint64_t quota; /* from the hello */
    uint64_t got;
};

static struct {
    tether_loop_group *g;
    atomic_long accepted;
    atomic_long closed;
    atomic_llong msgs;
} FS;

static void fs_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)c;
    (void)ud;
    if (atomic_fetch_add(&FS.accepted, 1) + 1 > O.conns) {
        bench_die("more connections than expected (%ld)", O.conns);
    }
}

static void fs_error(tether_listener *l, int err, const char *detail, void *ud)
{
    (void)l;
    (void)ud;
    fanin_die("listener", err, detail);
}

static void fs_send(tether_conn *c, const void *data, size_t len)
{
    int rv = tether_conn_send(c, data, len);
    if (rv != TETHER_OK) {
        fanin_die("send", rv, tether_conn_last_error(c));
    }
}

static void fs_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    struct srv_conn *s = ud;
    if (s == NULL) {
        if (len != FANIN_HELLO_LEN) {
            bench_die("bad hello (length %zu)", len);
        }
        s = calloc(1, sizeof *s);
        if (s == NULL) {
            bench_die("out of memory");
        }
        for (int i = 0; i < FANIN_HELLO_LEN; i++) {
            s->quota = s->quota << 8 | data[i];
        }
        if (s->quota == 0 || s->quota > (uint64_t)O.count) {
            bench_die("bad share of %llu messages", (unsigned long long)s->quota);
        }
        tether_conn_set_userdata(c, s);
        fs_send(c, "r", READY_LEN);
        return;
    }
    if (len != O.size) {
        bench_die("message %llu has length %zu, expected %zu", (unsigned long long)s->got, len,
                  O.size);
    }
    if (s->got == s->quota) {
        bench_die("message after the last one");
    }
    if (++s->got == s->quota) {
        fs_send(c, "a", ACK_LEN);
    }
}

static void fs_close(tether_conn *c, int reason, void *ud)
{
    struct srv_conn *s = ud;
    if (reason != TETHER_EOF) {
        fanin_die("server connection ended", reason, tether_conn_last_error(c));
    }
    if (s == NULL || s->got != s->quota) {
        bench_die("closed after %llu of %llu messages", s != NULL ? (unsigned long long)s->got : 0,
                  s != NULL ? (unsigned long long)s->quota : 0);
    }
    atomic_fetch_add(&FS.msgs, (long long)s->got);
    free(s);
    if (atomic_fetch_add(&FS.closed, 1) + 1 == O.conns) {
        done_set();
    }
}

int fanin_server_main(void)
{
    FS.g = new_group(O.loops);
    tether_tls_config *tls = fanin_tls(true);
    tether_conn_opts co;
    fanin_conn_opts(&co, tls);
    co.on_message = fs_message;
    co.on_close = fs_close;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = fs_accept;
    lo.on_error = fs_error;
    lo.conn_opts = &co;
    lo.backlog = 4096;
    char url[64];
    snprintf(url, sizeof url, "%s://127.0.0.1:0", O.transport == TR_TLS ? "tls" : "tcp");
    tether_group_listener *gl = NULL;
    tether_error err;
    int rv = tether_group_listen(&gl, FS.g, url, &lo,
                                 tb_reuseport ? TETHER_BALANCE_REUSEPORT : TETHER_BALANCE_ACCEPTOR,
                                 &err);
    if (rv != TETHER_OK) {
        fanin_die("tether_group_listen", rv, err.message);
    }
    tether_tls_config_unref(tls);
    start_group(FS.g);
    bench_ctl_send_port(tether_group_listener_port(gl));

    done_wait(); /* every connection has closed */
    if (atomic_load(&FS.accepted) != O.conns || atomic_load(&FS.msgs) != O.count) {
        bench_die("accepted %ld connections and %lld messages, expected %ld and %ld",
                  atomic_load(&FS.accepted), atomic_load(&FS.msgs), O.conns, O.count);
    }
    /* How the connections were spread, for whoever reads stderr. */
    char spread[256] = "";
    size_t off = 0;
    for (long i = 0; i < O.loops && off < sizeof spread; i++) {
        tether_listener_stats st;
        tether_group_listener_get_stats(gl, (int)i, &st);
        int n = snprintf(spread + off, sizeof spread - off, "%s%llu", i > 0 ? " " : "",
                         (unsigned long long)st.accepted);
        off += n > 0 ? (size_t)n : 0;
    }
    bench_log("connections per server loop: %s; CPU %.0f ns per message (all threads, set-up "
              "included)",
              spread, cpu_s() * 1e9 / (double)O.count);
    end_group(FS.g, "server");
    bench_server_wait_stop();
    return 0;
}

/* ---- client (parent) ------------------------------------------------------ */

struct cli_conn {
    tether_conn *c;
    uint64_t quota;
    uint64_t sent;
    bool zc;
};

static struct {
    tether_loop_group *g;
    long nloops;
    struct cli_conn *cs;
    const char *url;
    tether_tls_config *tls;
    uint8_t *payload;
    tether_batch_msg *batch; /* FANIN_BATCH times the payload (read only) */
    atomic_long ready;
    atomic_long acked;
    atomic_long closed;
    double t0;
    double t1;
    const char *tls_desc;
    char tls_buf[160];
    atomic_bool tls_noted;
} FC;

static void fc_pump(struct cli_conn *k)
{
    if (!k->zc && !tb_per_msg) {
        while (k->sent < k->quota) {
            uint64_t left = k->quota - k->sent;
            size_t n = 0;
            int rv = tether_conn_send_batch(k->c, FC.batch,
                                            left < FANIN_BATCH ? (size_t)left : FANIN_BATCH, &n);
            k->sent += n;
            if (rv == TETHER_EAGAIN) {
                return; /* on_drain continues */
            }
            if (rv != TETHER_OK) {
                fanin_die("send", rv, tether_conn_last_error(k->c));
            }
        }
        return;
    }
    while (k->sent < k->quota) {
        int rv = k->zc ? tether_conn_send_zc(k->c, FC.payload, O.size, NULL, NULL)
                       : tether_conn_send(k->c, FC.payload, O.size);
        if (rv == TETHER_EAGAIN) {
            return; /* on_drain continues */
        }
        if (rv != TETHER_OK) {
            fanin_die("send", rv, tether_conn_last_error(k->c));
        }
        k->sent++;
    }
}

/* On client loop i, once every connection is ready. */
static void fc_go(tether_loop *loop, void *ud)
{
    (void)loop;
    long i = (long)(intptr_t)ud;
    for (long j = i; j < O.conns; j += FC.nloops) {
        fc_pump(&FC.cs[j]);
    }
}

static void fc_connect(tether_conn *c, int status, void *ud)
{
    struct cli_conn *k = ud;
    if (status != TETHER_OK) {
        fanin_die("connect", status, tether_conn_last_error(c));
    }
    tether_tls_info info;
    if (FC.tls != NULL && !atomic_exchange(&FC.tls_noted, true) &&
        tether_conn_tls_info(c, &info) == TETHER_OK) {
        snprintf(FC.tls_buf, sizeof FC.tls_buf, "\"tls\":\"%s %s %s\"", info.version, info.cipher,
                 info.group);
        FC.tls_desc = FC.tls_buf;
    }
    uint8_t hello[FANIN_HELLO_LEN];
    for (int i = 0; i < FANIN_HELLO_LEN; i++) {
        hello[i] = (uint8_t)(k->quota >> (8 * (FANIN_HELLO_LEN - 1 - i)));
    }
    int rv = tether_conn_send(c, hello, sizeof hello);
    if (rv != TETHER_OK) {
        fanin_die("send hello", rv, tether_conn_last_error(c));
    }
}

static void fc_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)data;
    struct cli_conn *k = ud;
    if (len != 1) {
        bench_die("unexpected message of %zu bytes", len);
    }
    if (k->sent == 0) {
        /* The ready: the last one starts the clock and every loop. */
        if (atomic_fetch_add(&FC.ready, 1) + 1 == O.conns) {
            FC.t0 = bench_now_s();
            for (long i = 0; i < FC.nloops; i++) {
                int rv = tether_loop_post(tether_loop_group_loop(FC.g, (size_t)i), fc_go,
                                          (void *)(intptr_t)i);
                if (rv != TETHER_OK) {
                    fanin_die("tether_loop_post", rv, NULL);
                }
            }
        }
        return;
    }
    if (k->sent != k->quota) {
        bench_die("ack after %llu of %llu messages", (unsigned long long)k->sent,
                  (unsigned long long)k->quota);
    }
    if (atomic_fetch_add(&FC.acked, 1) + 1 == O.conns) {
        FC.t1 = bench_now_s();
        done_set();
    }
    (void)c;
}

static void fc_drain(tether_conn *c, void *ud)
{
    (void)c;
    struct cli_conn *k = ud;
    if (k->sent > 0) {
        fc_pump(k);
    }
}

static void fc_close(tether_conn *c, int reason, void *ud)
{
    struct cli_conn *k = ud;
    if (reason != TETHER_OK || k->sent != k->quota) {
        fanin_die("fanin connection lost", reason, tether_conn_last_error(c));
    }
    atomic_fetch_add(&FC.closed, 1);
}

/* On client loop i: dials its connections. */
static void fc_dial(tether_loop *loop, void *ud)
{
    long i = (long)(intptr_t)ud;
    tether_conn_opts co;
    fanin_conn_opts(&co, FC.tls);
    co.on_connect = fc_connect;
    co.on_message = fc_message;
    co.on_drain = fc_drain;
    co.on_close = fc_close;
    co.send_hwm = FANIN_HWM;
    if (O.size >= FANIN_ZC_MIN && co.send_hwm < 2 * (O.size + 4)) {
        co.send_hwm = 2 * (O.size + 4);
    }
    for (long j = i; j < O.conns; j += FC.nloops) {
        struct cli_conn *k = &FC.cs[j];
        co.userdata = k;
        tether_error err;
        int rv = tether_conn_dial(&k->c, loop, FC.url, &co, &err);
        if (rv != TETHER_OK) {
            fanin_die("tether_conn_dial", rv, err.message);
        }
    }
}

/* The JSON line, with the CPU each side used per message (user + system,
 * all threads, set-up included: --count in the millions makes that
 * negligible). With S and C the server's and the client's, one server
 * loop cannot go beyond 1/S messages per CPU-second, and two loops on two
 * cores shared with the client beyond 2/(S+C): cpu_ceiling_2loops is the
 * ratio 2S/(S+C), the most --loops 2 can gain over --loops 1 at these
 * costs. cpu_cores_busy is both sides' CPU over the timed part's wall
 * clock. */
static void fanin_emit(struct cpu_use cli, struct cpu_use srv)
{
    const double n = (double)O.count;
    const double el = FC.t1 - FC.t0;
    const double s = (srv.user + srv.sys) / n;
    const double c = (cli.user + cli.sys) / n;
    char extra[768];
    snprintf(extra, sizeof extra,
             "\"balance\":\"%s\",\"send\":\"%s\",\"server_cpu_ns_per_msg\":%.4g,\"server_user_ns_"
             "per_msg\":%.4g,"
             "\"server_sys_ns_per_msg\":%.4g,\"client_cpu_ns_per_msg\":%.4g,"
             "\"client_user_ns_per_msg\":%.4g,\"client_sys_ns_per_msg\":%.4g,"
             "\"cpu_ceiling_2loops\":%.4g,\"cpu_cores_busy\":%.4g%s%s",
             tb_reuseport ? "reuseport" : "acceptor",
             O.size >= FANIN_ZC_MIN ? "zc"
             : tb_per_msg           ? "per-msg"
                                    : "batch",
             s * 1e9, srv.user / n * 1e9, srv.sys / n * 1e9, c * 1e9, cli.user / n * 1e9,
             cli.sys / n * 1e9, s + c > 0 ? 2 * s / (s + c) : 0.0, el > 0 ? (s + c) * n / el : 0.0,
             FC.tls_desc != NULL ? "," : "", FC.tls_desc != NULL ? FC.tls_desc : "");
    bench_emit_fanin(el, FC.nloops, extra);
}

void fanin_client(int port)
{
    if (O.conns > O.count) {
        bench_die("--conns %ld is more than --count %ld: a connection would send nothing", O.conns,
                  O.count);
    }
    bench_raise_nofile(O.conns + 256);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    FC.nloops = cpus < 1 ? 1 : cpus < O.conns ? cpus : O.conns;
    FC.cs = calloc((size_t)O.conns, sizeof *FC.cs);
    FC.payload = bench_xmalloc(O.size);
    if (FC.cs == NULL) {
        bench_die("out of memory");
    }
    bench_fill_payload(FC.payload, O.size);
    FC.batch = bench_xmalloc(sizeof *FC.batch * FANIN_BATCH);
    for (size_t i = 0; i < FANIN_BATCH; i++) {
        FC.batch[i].data = FC.payload;
        FC.batch[i].len = O.size;
    }
    for (long j = 0; j < O.conns; j++) {
        FC.cs[j].quota = (uint64_t)(O.count / O.conns + (j < O.count % O.conns ? 1 : 0));
        FC.cs[j].zc = O.size >= FANIN_ZC_MIN;
    }
    char url[64];
    snprintf(url, sizeof url, "%s://127.0.0.1:%d", O.transport == TR_TLS ? "tls" : "tcp", port);
    FC.url = url;
    FC.tls = fanin_tls(false);
    FC.g = new_group(FC.nloops);
    start_group(FC.g);
    for (long i = 0; i < FC.nloops; i++) {
        int rv =
            tether_loop_post(tether_loop_group_loop(FC.g, (size_t)i), fc_dial, (void *)(intptr_t)i);
        if (rv != TETHER_OK) {
            fanin_die("tether_loop_post", rv, NULL);
        }
    }
    done_wait(); /* the last ack is in */
    /* The group's graceful stop closes every connection (what is queued
     * is sent) and returns once each on_close has run. */
    end_group(FC.g, "client");
    if (atomic_load(&FC.closed) != O.conns) {
        bench_die("%ld close callbacks, expected %ld", atomic_load(&FC.closed), O.conns);
    }
    tether_tls_config_unref(FC.tls);
    struct cpu_use cli = cpu_of(RUSAGE_SELF);
    bench_finish_server();
    struct cpu_use srv = cpu_of(RUSAGE_CHILDREN); /* the server, reaped */
    bench_log("client: CPU %.0f ns per message (all threads, set-up included)",
              (cli.user + cli.sys) * 1e9 / (double)O.count);
    fanin_emit(cli, srv);
    free(FC.cs);
    free(FC.payload);
    free(FC.batch);
}
