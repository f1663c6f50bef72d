/* SPDX-License-Identifier: MIT */
/* At-least-once streams (tether_client_opts::at_least_once): 100 000
 * numbered messages through the fault-injection proxy while it resets,
 * cuts and blackholes the connection every few hundred milliseconds (the
 * server must see every number once, in order), then a server process
 * killed with SIGKILL and restarted mid-stream (every number at least
 * once; the duplicates are counted and printed), and the statistics. */
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"
#include "proxy/proxy.h"

#define N 100000u
#define MSG_LEN 16u

/* ---- the in-process server: checks the order ------------------------ */

#define MAXC 256

static struct {
    tether_listener *l;
    tether_conn *conns[MAXC];
    int nconns;
    uint32_t next;    /* the number expected next */
    long dups;        /* a number seen again (delivered twice) */
    long gaps;        /* a number skipped */
    uint64_t dropped; /* the library's duplicates dropped, summed at close */
    uint64_t acks_sent;
    uint32_t abort_at; /* aborts its connection inside on_message of this number */
} S;

static void s_close(tether_conn *c, int reason, void *ud)
{
    (void)reason, (void)ud;
    tether_stats st;
    tether_conn_get_stats(c, &st);
    S.dropped += st.dups_dropped;
    S.acks_sent += st.acks_sent;
    for (int i = 0; i < S.nconns; i++) {
        if (S.conns[i] == c) {
            S.conns[i] = S.conns[--S.nconns];
            break;
        }
    }
}

static void s_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l, (void)ud;
    ck_assert_int_lt(S.nconns, MAXC);
    S.conns[S.nconns++] = c;
}

static void s_message(tether_conn *c, const uint8_t *p, size_t len, void *ud)
{
    (void)ud;
    ck_assert_uint_eq(len, MSG_LEN);
    uint32_t n = ntohl(*(const uint32_t *)(const void *)p);
    if (n < S.next) {
        S.dups++;
    } else if (n > S.next) {
        S.gaps++;
        S.next = n + 1;
    } else {
        S.next++;
    }
    if (n == S.abort_at) {
        /* Delivered, never acknowledged: the client must resend it and
         * the filter must drop it. */
        S.abort_at = 0;
        tether_conn_abort(c);
    }
}

static int s_listen(void)
{
    tether_conn_opts o;
    tether_conn_opts_init(&o);
    o.on_message = s_message;
    o.on_close = s_close;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.on_accept = s_accept;
    lo.conn_opts = &o;
    S.l = th_listen_tcp(&lo);
    return tether_listener_port(S.l);
}

static void s_stop(void)
{
    tether_listener_close(S.l);
    for (int i = S.nconns - 1; i >= 0; i--) {
        tether_conn_abort(S.conns[i]);
    }
}

/* ---- the client: sends 1..N as fast as flow control allows ----------- */

static struct {
    tether_client *cl;
    uint32_t sent;
    uint32_t allowed; /* pacing: the stream lasts seconds, across many faults */
    long undelivered;
    int connects;
} C;

static void c_pump(void)
{
    while (C.sent < N && C.sent < C.allowed) {
        uint8_t m[MSG_LEN];
        memset(m, 0xA5, sizeof m);
        uint32_t be = htonl(C.sent + 1);
        memcpy(m, &be, 4);
        int rv = tether_client_send(C.cl, m, sizeof m);
        if (rv == TETHER_EAGAIN) {
            return; /* on_drain continues */
        }
        ck_assert_msg(rv == TETHER_OK, "send: %s", tether_err_name(rv));
        C.sent++;
    }
}

static void c_drain(tether_client *cl, void *ud)
{
    (void)cl, (void)ud;
    c_pump();
}

static void c_undelivered(tether_client *cl, const uint8_t *p, size_t len, int reason, void *ud)
{
    (void)cl, (void)p, (void)len, (void)reason, (void)ud;
    C.undelivered++;
}

static void c_new(int port, int heartbeat_ms)
{
    memset(&C, 0, sizeof C);
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.heartbeat_ms = heartbeat_ms; /* notices a blackhole */
    co.heartbeat_misses = 2;
    tether_client_opts o;
    tether_client_opts_init(&o);
    o.at_least_once = true;
    o.conn_opts = &co;
    o.initial_backoff_ms = 10;
    o.max_backoff_ms = 200;
    o.reconnect_spread_ms = 0;
    o.stable_ms = 50;
    o.on_drain = c_drain;
    o.on_undelivered = c_undelivered;
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    tether_error err;
    int rv = tether_client_new(&C.cl, th_loop, url, &o, &err);
    ck_assert_msg(rv == TETHER_OK, "client: %s", err.message);
}

static bool c_all_acked(void *arg)
{
    (void)arg;
    tether_stats st;
    tether_client_get_stats(C.cl, &st);
    return C.sent == N && st.queued_msgs == 0;
}

static bool s_all_in(void *arg)
{
    (void)arg;
    return S.next == N + 1 && c_all_acked(NULL);
}

/* Runs the loop for about ms, releasing RATE messages a second to the
 * client, until pred holds. */
#define RATE 12000u
static uint64_t pace_start;

static bool run_paced(bool (*pred)(void *), void *arg, int ms)
{
    uint64_t end = th_now_ms() + (uint64_t)ms;
    while (th_now_ms() < end) {
        uint64_t allow = (th_now_ms() - pace_start) * RATE / 1000u;
        C.allowed = allow > N ? N : (uint32_t)allow;
        c_pump();
        if (th_run_until_pred(pred, arg, 10)) {
            return true;
        }
    }
    return pred(arg);
}

/* True once the client has made more connections than *arg. */
static bool c_reconnected(void *arg)
{
    tether_stats st;
    tether_client_get_stats(C.cl, &st);
    return st.connects > *(uint64_t *)arg;
}

/* ---- 1. faults while the server lives: exactly once, in order -------- */

START_TEST(alo_faults_exactly_once)
{
    memset(&S, 0, sizeof S);
    S.next = 1;
    S.abort_at = 500;
    int port = s_listen();
    tproxy *px = NULL;
    ck_assert_int_eq(tproxy_start(&px, port, 0), 0);
    c_new(tproxy_port(px), 100);
    pace_start = th_now_ms();
    uint64_t deadline = th_now_ms() + 50000;
    int faults[3] = {0, 0, 0};
    for (int round = 0; !s_all_in(NULL) && th_now_ms() < deadline; round++) {
        run_paced(s_all_in, NULL, 150 + (round * 37) % 200);
        if (s_all_in(NULL)) {
            break;
        }
        switch (round % 3) {
        case 0:
            tproxy_reset(px);
            break;
        case 1:
            tproxy_cut(px);
            break;
        default:
            /* Both directions vanish: only the heartbeat notices. The
             * proxy has acknowledged and thrown away bytes in the middle
             * of the stream, which no TCP path does: forwarding again on
             * the same connections would hand the server a stream with a
             * hole. So the hole lasts until the heartbeat has replaced the
             * connection (however slow the loop is), as a real partition
             * would until the endpoints give up on it. */
            {
                tether_stats st0;
                tether_client_get_stats(C.cl, &st0);
                uint64_t before = st0.connects;
                tproxy_set_mode(px, TPROXY_BLACKHOLE);
                run_paced(s_all_in, NULL, 400);
                uint64_t hole_end = th_now_ms() + 20000;
                while (!c_reconnected(&before) && th_now_ms() < hole_end) {
                    run_paced(c_reconnected, &before, 100);
                }
                tproxy_cut(px); /* what was in the hole, if anything, ends here */
                tproxy_set_mode(px, TPROXY_PASS);
            }
            break;
        }
        faults[round % 3]++;
    }
    tether_stats st;
    tether_client_get_stats(C.cl, &st);
    fprintf(stderr,
            "alo_faults: %u messages, %d resets, %d cuts, %d blackholes, %llu connections; "
            "resent %llu, acked %llu; server dropped %llu duplicates (%llu ACK frames so far)\n",
            S.next - 1, faults[0], faults[1], faults[2], (unsigned long long)st.connects,
            (unsigned long long)st.resent, (unsigned long long)st.acked,
            (unsigned long long)S.dropped, (unsigned long long)S.acks_sent);
    ck_assert_msg(S.next == N + 1, "the server got up to %u of %u", S.next - 1, N);
    ck_assert_int_eq(S.gaps, 0);
    ck_assert_int_eq(S.dups, 0);
    ck_assert_int_eq(C.undelivered, 0);
    ck_assert_uint_ge(S.dropped, 1); /* at least message 500 came twice */
    ck_assert_uint_ge(st.resent, 1);
    ck_assert_uint_eq(st.acked, N);
    ck_assert_uint_eq(st.acks_in_flight, 0);
    ck_assert_int_ge(faults[0] + faults[1] + faults[2], 3);
    ck_assert_uint_ge(st.connects, 3);
    tether_client_close(C.cl);
    s_stop();
    th_run_idle(3000);
    tproxy_stop(px);
}
END_TEST

/* ---- 2. drains: the server moves the client on, again and again ------- */

static bool s_drain_due(void *arg)
{
    uint32_t at = *(uint32_t *)arg;
    return S.next > at || s_all_in(NULL);
}

START_TEST(alo_drain_exactly_once)
{
    memset(&S, 0, sizeof S);
    S.next = 1;
    int port = s_listen();
    c_new(port, 100);
    pace_start = th_now_ms();
    int drains = 0;
    for (uint32_t at = N / 8; at < N && !s_all_in(NULL); at += N / 8) {
        ck_assert_msg(run_paced(s_drain_due, &at, 20000), "stuck before %u", at);
        for (int i = 0; i < S.nconns; i++) {
            if (tether_conn_goaway(S.conns[i], TETHER_GOAWAY_SHUTDOWN, "moving", 2000) ==
                TETHER_OK) {
                drains++;
            }
        }
    }
    ck_assert(run_paced(s_all_in, NULL, 30000));
    tether_stats st;
    tether_client_get_stats(C.cl, &st);
    fprintf(stderr,
            "alo_drain: %u messages, %d drains, %llu connections, resent %llu, server dropped "
            "%llu\n",
            S.next - 1, drains, (unsigned long long)st.connects, (unsigned long long)st.resent,
            (unsigned long long)S.dropped);
    ck_assert_int_eq(S.gaps, 0);
    ck_assert_int_eq(S.dups, 0);
    ck_assert_int_eq(C.undelivered, 0);
    ck_assert_int_ge(drains, 3);
    ck_assert_uint_ge(st.connects, 4);
    ck_assert_uint_eq(st.acked, N);
    tether_client_close(C.cl);
    s_stop();
    th_run_idle(3000);
}
END_TEST

/* ---- 3. completions mean "acknowledged"; a close waits for the ACKs --- */

static int done_ok, done_err, done_order_bad;
static uintptr_t done_next;

static void on_done(tether_client *cl, int status, void *ud)
{
    (void)cl;
    if (status == TETHER_OK) {
        done_ok++;
    } else {
        done_err++;
    }
    if ((uintptr_t)ud != done_next) {
        done_order_bad++;
    }
    done_next++;
}

START_TEST(alo_completion_on_ack)
{
    memset(&S, 0, sizeof S);
    S.next = 1;
    int port = s_listen();
    c_new(port, 0); /* (a paused server answers no pings) */
    done_ok = done_err = done_order_bad = 0;
    done_next = 0;
    bool up = false;
    for (int i = 0; i < 200 && !up; i++) {
        th_run_until_pred(s_all_in, NULL, 10);
        up = S.nconns == 1 && tether_client_get_state(C.cl) == TETHER_CLIENT_CONNECTED;
    }
    ck_assert(up);
    /* The server stops reading: the messages can be written (they fit in
     * the socket buffers) but never acknowledged. */
    tether_conn_pause(S.conns[0]);
    for (uintptr_t i = 0; i < 100; i++) {
        uint8_t m[MSG_LEN] = {0};
        uint32_t be = htonl((uint32_t)i + 1);
        memcpy(m, &be, 4);
        ck_assert_int_eq(tether_client_send_cb(C.cl, m, sizeof m, on_done, (void *)i), TETHER_OK);
    }
    th_run_idle(300);
    tether_stats st;
    tether_client_get_stats(C.cl, &st);
    ck_assert_uint_eq(st.bytes_out >= 100 * (MSG_LEN + 4), 1); /* written... */
    ck_assert_int_eq(done_ok + done_err, 0);                   /* ...not acknowledged */
    ck_assert_uint_eq(st.acks_in_flight, 100);
    ck_assert_uint_eq(st.queued_msgs, 100);
    /* A close waits for the acknowledgements. */
    tether_client_close(C.cl);
    th_run_idle(100);
    ck_assert_int_eq(done_ok + done_err, 0);
    tether_conn_resume(S.conns[0]);
    for (int i = 0; i < 500 && done_ok + done_err < 100; i++) {
        th_run_until_pred(s_all_in, NULL, 10);
    }
    ck_assert_int_eq(done_ok, 100);
    ck_assert_int_eq(done_err, 0);
    ck_assert_int_eq(done_order_bad, 0);
    ck_assert_int_eq(C.undelivered, 0);
    ck_assert_uint_eq(S.next, 101);
    s_stop();
    th_run_idle(3000);
}
END_TEST

/* ---- 4. the server process killed and restarted ---------------------- */

/* Counts per number, shared with the server processes. */
static uint8_t *K;

static void k_message(tether_conn *c, const uint8_t *p, size_t len, void *ud)
{
    (void)c, (void)ud;
    if (len == MSG_LEN) {
        uint32_t n = ntohl(*(const uint32_t *)(const void *)p);
        if (n >= 1 && n <= N && K[n] < 255) {
            K[n]++;
        }
    }
}

/* Forks a server process on its own loop; returns its pid, its port in
 * *port. */
static pid_t k_spawn(int *port)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        tether_loop *loop = NULL;
        if (tether_loop_new(&loop, NULL) != TETHER_OK) {
            _exit(3);
        }
        tether_conn_opts o;
        tether_conn_opts_init(&o);
        o.on_message = k_message;
        tether_listen_opts lo;
        tether_listen_opts_init(&lo);
        lo.conn_opts = &o;
        tether_listener *l = NULL;
        tether_error err;
        if (tether_listen(&l, loop, "tcp://127.0.0.1:0", &lo, &err) != TETHER_OK) {
            _exit(4);
        }
        int p = tether_listener_port(l);
        if (write(fds[1], &p, sizeof p) != (ssize_t)sizeof p) {
            _exit(5);
        }
        close(fds[1]);
        alarm(60); /* a hang guard: the parent kills it long before */
        tether_loop_run(loop);
        _exit(0);
    }
    close(fds[1]);
    ck_assert_int_eq(read(fds[0], port, sizeof *port), (ssize_t)sizeof *port);
    close(fds[0]);
    return pid;
}

static bool k_past(void *arg)
{
    uint32_t want = *(uint32_t *)arg;
    uint32_t got = 0;
    for (uint32_t i = 1; i <= N; i++) {
        got += K[i] > 0;
    }
    return got >= want;
}

START_TEST(alo_server_killed_at_least_once)
{
    K = mmap(NULL, N + 1, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(K, MAP_FAILED);
    int port = 0;
    pid_t pid = k_spawn(&port);
    tproxy *px = NULL;
    ck_assert_int_eq(tproxy_start(&px, port, 0), 0);
    c_new(tproxy_port(px), 100);
    pace_start = th_now_ms();
    uint32_t third = N / 3;
    ck_assert_msg(run_paced(k_past, &third, 30000), "no progress before the kill");
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    pid = k_spawn(&port);
    tproxy_set_target(px, port);
    tproxy_reset(px);
    bool done = run_paced(c_all_acked, NULL, 40000);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    long missing = 0;
    long dups = 0;
    for (uint32_t i = 1; i <= N; i++) {
        missing += K[i] == 0;
        dups += K[i] > 1 ? K[i] - 1 : 0;
    }
    tether_stats st;
    tether_client_get_stats(C.cl, &st);
    fprintf(stderr,
            "alo_server_killed: %u messages, %ld missing, %ld duplicates after the restart; "
            "client resent %llu\n",
            N, missing, dups, (unsigned long long)st.resent);
    ck_assert_msg(done, "not all acknowledged: %zu held", st.queued_msgs);
    ck_assert_int_eq(missing, 0);
    ck_assert_int_eq(C.undelivered, 0);
    tether_client_close(C.cl);
    th_run_idle(3000);
    tproxy_stop(px);
    munmap(K, N + 1);
}
END_TEST

/* ---- 5. bad options ------------------------------------------------------ */

START_TEST(alo_needs_len32)
{
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.framing = TETHER_FRAMING_LINE;
    tether_client_opts o;
    tether_client_opts_init(&o);
    o.at_least_once = true;
    o.conn_opts = &co;
    tether_client *cl = NULL;
    tether_error err;
    ck_assert_int_eq(tether_client_new(&cl, th_loop, "tcp://127.0.0.1:1", &o, &err), TETHER_EINVAL);
    ck_assert_ptr_null(cl);
    ck_assert_msg(strstr(err.message, "at_least_once needs the len32 framing") != NULL, "%s",
                  err.message);
}
END_TEST

static Suite *alo_suite(void)
{
    Suite *s = suite_create("alo");
    TCase *tc = tcase_create("faults");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, alo_faults_exactly_once);
    tcase_add_test(tc, alo_server_killed_at_least_once);
    tcase_add_test(tc, alo_drain_exactly_once);
    tcase_add_test(tc, alo_completion_on_ack);
    tcase_add_test(tc, alo_needs_len32);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(alo_suite());
}
