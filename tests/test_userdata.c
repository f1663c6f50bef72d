/* SPDX-License-Identifier: MIT */
/* The two user-data pointers of a server, as tether_listen_opts::userdata
 * documents them: the listener's own goes to on_accept (and on_error);
 * accepted connections start with tether_conn_opts::userdata, shared by
 * all of them, until tether_conn_set_userdata() gives one its own. */
#include <check.h>
#include <string.h>

#include "helpers.h"

struct ud_state {
    void *accept_ud[2];    /* what on_accept received */
    void *first_msg_ud[2]; /* what each connection's on_message received */
    void *conn_ud_at_accept[2];
    int accepted;
    int msgs;
    bool done;
};

static struct ud_state U;
static int listener_token;
static int shared_token;
static int own_token;

static void ud_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    int i = U.accepted++;
    ck_assert_int_lt(i, 2);
    U.accept_ud[i] = ud;
    U.conn_ud_at_accept[i] = tether_conn_userdata(c);
    if (i == 1) {
        tether_conn_set_userdata(c, &own_token); /* the second gets its own */
    }
}

static void ud_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)c;
    (void)len;
    int i = data[0] - '0';
    ck_assert(i == 0 || i == 1);
    U.first_msg_ud[i] = ud;
    if (++U.msgs == 2) {
        U.done = true;
    }
}

START_TEST(listener_and_connection_userdata_differ)
{
    memset(&U, 0, sizeof U);
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.userdata = &shared_token;
    co.on_message = ud_message;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.userdata = &listener_token;
    lo.on_accept = ud_accept;
    lo.conn_opts = &co;
    tether_listener *l = th_listen_tcp(&lo);

    tether_conn *c[2];
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(tether_conn_dial(&c[i], th_loop, th_url_of(l), NULL, NULL), TETHER_OK);
        /* One at a time, so that accept order is dial order. */
        int want = i + 1;
        uint64_t until = th_now_ms() + 10000;
        while (U.accepted < want && th_now_ms() < until) {
            tether_loop_run_once(th_loop, 10);
        }
        ck_assert_int_eq(U.accepted, want);
        char m = (char)('0' + i);
        ck_assert_int_eq(tether_conn_send(c[i], &m, 1), TETHER_OK);
    }
    ck_assert(th_run_until(&U.done, 10000));

    ck_assert_ptr_eq(U.accept_ud[0], &listener_token);
    ck_assert_ptr_eq(U.accept_ud[1], &listener_token);
    ck_assert_ptr_eq(U.conn_ud_at_accept[0], &shared_token);
    ck_assert_ptr_eq(U.conn_ud_at_accept[1], &shared_token);
    ck_assert_ptr_eq(U.first_msg_ud[0], &shared_token);
    ck_assert_ptr_eq(U.first_msg_ud[1], &own_token);

    tether_conn_close(c[0]);
    tether_conn_close(c[1]);
    tether_listener_close(l);
    th_run_idle(5000);
}
END_TEST

Suite *userdata_suite(void);
Suite *userdata_suite(void)
{
    Suite *s = suite_create("userdata");
    TCase *tc = tcase_create("listener");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, listener_and_connection_userdata_differ);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(userdata_suite());
}
