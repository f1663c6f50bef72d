/* SPDX-License-Identifier: MIT */
/* The blocking API against a tether echo server running on its own loop in
 * a second thread (the only cross-thread call is tether_loop_post). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "helpers.h"

struct server_thread {
    pthread_t th;
    tether_loop *loop;
    tether_listener *l;
    int port;
    bool echo;
    bool close_after_first;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool ready;
};

static struct server_thread ST;

static void st_message(tether_conn *c, const uint8_t *d, size_t n, void *ud)
{
    (void)ud;
    if (ST.echo) {
        tether_conn_send(c, d, n);
    }
    if (ST.close_after_first) {
        tether_conn_close(c);
    }
}

static void *st_main(void *arg)
{
    (void)arg;
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = st_message;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &co;
    ck_assert_int_eq(tether_loop_new(&ST.loop, NULL), TETHER_OK);
    ck_assert_int_eq(tether_listen(&ST.l, ST.loop, "tcp://127.0.0.1:0", &lo, NULL), TETHER_OK);
    pthread_mutex_lock(&ST.mu);
    ST.port = tether_listener_port(ST.l);
    ST.ready = true;
    pthread_cond_signal(&ST.cv);
    pthread_mutex_unlock(&ST.mu);
    tether_loop_run(ST.loop);
    /* Let connections that are still open finish before freeing. */
    while (tether_loop_run_once(ST.loop, 50) > 0) {
    }
    ck_assert_int_eq(tether_loop_free(ST.loop), TETHER_OK);
    return NULL;
}

static void st_stop(tether_loop *loop, void *ud)
{
    (void)ud;
    tether_listener_close(ST.l);
    tether_loop_stop(loop);
}

static void start_server(bool echo, bool close_after_first)
{
    memset(&ST, 0, sizeof ST);
    ST.echo = echo;
    ST.close_after_first = close_after_first;
    pthread_mutex_init(&ST.mu, NULL);
    pthread_cond_init(&ST.cv, NULL);
    ck_assert_int_eq(pthread_create(&ST.th, NULL, st_main, NULL), 0);
    pthread_mutex_lock(&ST.mu);
    while (!ST.ready) {
        pthread_cond_wait(&ST.cv, &ST.mu);
    }
    pthread_mutex_unlock(&ST.mu);
}

static void stop_server(void)
{
    ck_assert_int_eq(tether_loop_post(ST.loop, st_stop, NULL), TETHER_OK);
    pthread_join(ST.th, NULL);
}

static const char *url(void)
{
    static char buf[64];
    snprintf(buf, sizeof buf, "tcp://127.0.0.1:%d", ST.port);
    return buf;
}

START_TEST(echo_round_trips)
{
    start_server(true, false);
    tether_sync *s = NULL;
    tether_error err;
    ck_assert_int_eq(tether_sync_connect(&s, url(), NULL, 5000, &err), TETHER_OK);
    uint8_t buf[5000];
    for (int i = 0; i < 200; i++) {
        size_t n = (size_t)(i * 25);
        th_fill(buf, n, (uint32_t)i);
        ck_assert_int_eq(tether_sync_send(s, buf, n, 5000), TETHER_OK);
        tether_msg m;
        ck_assert_int_eq(tether_sync_recv(s, &m, 5000), TETHER_OK);
        ck_assert_uint_eq(m.len, n);
        ck_assert(th_check(m.data, m.len, (uint32_t)i));
        tether_msg_free(&m);
        ck_assert_ptr_null(m.data);
    }
    /* Pipelined: many sends, then many receives. */
    for (int i = 0; i < 1000; i++) {
        ck_assert_int_eq(tether_sync_send(s, &i, sizeof i, 5000), TETHER_OK);
    }
    for (int i = 0; i < 1000; i++) {
        tether_msg m;
        ck_assert_int_eq(tether_sync_recv(s, &m, 5000), TETHER_OK);
        ck_assert_uint_eq(m.len, sizeof i);
        ck_assert(memcmp(m.data, &i, sizeof i) == 0);
        tether_msg_free(&m);
    }
    ck_assert_int_eq(tether_sync_close(s), TETHER_OK);
    stop_server();
}
END_TEST

START_TEST(recv_timeout_keeps_connection)
{
    start_server(false, false);
    tether_sync *s = NULL;
    ck_assert_int_eq(tether_sync_connect(&s, url(), NULL, 5000, NULL), TETHER_OK);
    tether_msg m;
    uint64_t t0 = th_now_ms();
    ck_assert_int_eq(tether_sync_recv(s, &m, 200), TETHER_ETIMEDOUT);
    uint64_t took = th_now_ms() - t0;
    ck_assert_uint_ge(took, 190);
    ck_assert_uint_lt(took, 5000);
    ck_assert_str_eq(tether_sync_last_error(s), "no message within 200 ms");
    ck_assert_ptr_null(m.data);
    /* Still usable. */
    ck_assert_int_eq(tether_sync_send(s, "x", 1, 5000), TETHER_OK);
    ck_assert_int_eq(tether_sync_close(s), TETHER_OK);
    stop_server();
}
END_TEST

START_TEST(peer_close_is_eof)
{
    start_server(true, true);
    tether_sync *s = NULL;
    ck_assert_int_eq(tether_sync_connect(&s, url(), NULL, 5000, NULL), TETHER_OK);
    ck_assert_int_eq(tether_sync_send(s, "ping", 4, 5000), TETHER_OK);
    tether_msg m;
    /* The echo sent before the server closed still arrives... */
    ck_assert_int_eq(tether_sync_recv(s, &m, 5000), TETHER_OK);
    ck_assert_uint_eq(m.len, 4);
    tether_msg_free(&m);
    /* ...then the end of the stream. */
    ck_assert_int_eq(tether_sync_recv(s, &m, 5000), TETHER_EOF);
    ck_assert_int_eq(tether_sync_send(s, "x", 1, 1000), TETHER_EOF);
    tether_sync_close(s);
    stop_server();
}
END_TEST

START_TEST(connect_refused_message)
{
    int keep;
    char u[64];
    snprintf(u, sizeof u, "tcp://127.0.0.1:%d", th_refused_port(&keep));
    tether_sync *s = (tether_sync *)1;
    tether_error err;
    ck_assert_int_eq(tether_sync_connect(&s, u, NULL, 5000, &err), TETHER_ECONNREFUSED);
    ck_assert_ptr_null(s);
    ck_assert_int_eq(err.code, TETHER_ECONNREFUSED);
    char want[128];
    snprintf(want, sizeof want, "connect to %s: connection refused", u);
    ck_assert_str_eq(err.message, want);
    close(keep);

    ck_assert_int_eq(tether_sync_connect(&s, "tcp://nope", NULL, 1000, &err), TETHER_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "invalid URL"));
    ck_assert_int_eq(tether_sync_connect(NULL, u, NULL, 1000, &err), TETHER_EINVAL);
    ck_assert_int_eq(tether_sync_send(NULL, "x", 1, 10), TETHER_EINVAL);
    ck_assert_int_eq(tether_sync_recv(NULL, NULL, 10), TETHER_EINVAL);
    ck_assert_int_eq(tether_sync_close(NULL), TETHER_OK);
    tether_msg_free(NULL);
}
END_TEST

/* A listener whose accept queue is full drops further SYNs, so connects to
 * it hang: the timeout must end them. */
START_TEST(connect_timeout)
{
    int fds[9]; /* the listener, then 8 connections nobody accepts */
    char u[64];
    snprintf(u, sizeof u, "tcp://127.0.0.1:%d", th_hang_port(fds, 9));
    tether_sync *s = NULL;
    tether_error err;
    uint64_t t0 = th_now_ms();
    int rv = tether_sync_connect(&s, u, NULL, 300, &err);
    uint64_t took = th_now_ms() - t0;
    ck_assert_int_eq(rv, TETHER_ETIMEDOUT);
    ck_assert_msg(strstr(err.message, "timed out after 300 ms") != NULL, "%s", err.message);
    ck_assert_uint_ge(took, 290);
    ck_assert_uint_lt(took, 5000);
    for (int i = 0; i < 9; i++) {
        close(fds[i]);
    }
}
END_TEST

/* tether_sync_recv_into(): a message too large for the buffer is reported
 * with its size and stays first in line; the next call gets it whole, and
 * the messages after it keep their order. */
START_TEST(recv_into_caller_buffer)
{
    start_server(true, false);
    tether_sync *s = NULL;
    ck_assert_int_eq(tether_sync_connect(&s, url(), NULL, 5000, NULL), TETHER_OK);
    uint8_t big[3000];
    th_fill(big, sizeof big, 7);
    ck_assert_int_eq(tether_sync_send(s, big, sizeof big, 5000), TETHER_OK);
    ck_assert_int_eq(tether_sync_send(s, "after", 5, 5000), TETHER_OK);
    ck_assert_int_eq(tether_sync_send(s, "", 0, 5000), TETHER_OK);

    uint8_t small[100];
    memset(small, 0xAB, sizeof small);
    size_t n = 0;
    ck_assert_int_eq(tether_sync_recv_into(s, small, sizeof small, &n, 5000), TETHER_EMSGSIZE);
    ck_assert_uint_eq(n, sizeof big);
    ck_assert_str_eq(tether_sync_last_error(s),
                     "the next message is 3000 bytes; the buffer holds 100");
    for (size_t i = 0; i < sizeof small; i++) {
        ck_assert_uint_eq(small[i], 0xAB); /* untouched */
    }
    /* Asking again with no room at all reports the same message. */
    ck_assert_int_eq(tether_sync_recv_into(s, NULL, 0, &n, 0), TETHER_EMSGSIZE);
    ck_assert_uint_eq(n, sizeof big);

    uint8_t *buf = malloc(n);
    ck_assert_ptr_nonnull(buf);
    size_t got = 0;
    ck_assert_int_eq(tether_sync_recv_into(s, buf, n, &got, 0), TETHER_OK);
    ck_assert_uint_eq(got, sizeof big);
    ck_assert(th_check(buf, got, 7));
    free(buf);

    ck_assert_int_eq(tether_sync_recv_into(s, small, sizeof small, &got, 5000), TETHER_OK);
    ck_assert_uint_eq(got, 5);
    ck_assert(memcmp(small, "after", 5) == 0);
    ck_assert_int_eq(tether_sync_recv_into(s, NULL, 0, &got, 5000), TETHER_OK);
    ck_assert_uint_eq(got, 0);

    /* Nothing more: a timeout, then bad arguments. */
    got = 99;
    ck_assert_int_eq(tether_sync_recv_into(s, small, sizeof small, &got, 50), TETHER_ETIMEDOUT);
    ck_assert_uint_eq(got, 0);
    ck_assert_int_eq(tether_sync_recv_into(s, NULL, 10, &got, 0), TETHER_EINVAL);
    ck_assert_int_eq(tether_sync_recv_into(s, small, sizeof small, NULL, 0), TETHER_EINVAL);
    ck_assert_int_eq(tether_sync_recv_into(NULL, small, sizeof small, &got, 0), TETHER_EINVAL);
    ck_assert_int_eq(tether_sync_close(s), TETHER_OK);
    stop_server();
}
END_TEST

/* The end of the stream reaches tether_sync_recv_into() too. */
START_TEST(recv_into_eof)
{
    start_server(true, true);
    tether_sync *s = NULL;
    ck_assert_int_eq(tether_sync_connect(&s, url(), NULL, 5000, NULL), TETHER_OK);
    ck_assert_int_eq(tether_sync_send(s, "ping", 4, 5000), TETHER_OK);
    uint8_t buf[16];
    size_t n = 0;
    ck_assert_int_eq(tether_sync_recv_into(s, buf, sizeof buf, &n, 5000), TETHER_OK);
    ck_assert_uint_eq(n, 4);
    ck_assert_int_eq(tether_sync_recv_into(s, buf, sizeof buf, &n, 5000), TETHER_EOF);
    ck_assert_uint_eq(n, 0);
    tether_sync_close(s);
    stop_server();
}
END_TEST

static Suite *sync_suite(void)
{
    Suite *s = suite_create("sync");
    TCase *tc = tcase_create("blocking");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, echo_round_trips);
    tcase_add_test(tc, recv_timeout_keeps_connection);
    tcase_add_test(tc, peer_close_is_eof);
    tcase_add_test(tc, connect_refused_message);
    tcase_add_test(tc, connect_timeout);
    tcase_add_test(tc, recv_into_caller_buffer);
    tcase_add_test(tc, recv_into_eof);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(sync_suite());
}
