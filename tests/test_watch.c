/* The handle registry (lib/handle.c): ref/unref deciding when the loop
 * returns, and walk/close-all. */
#include <stdlib.h>
#include <string.h>

#include "helpers.h"

/* ---- ref/unref ------------------------------------------------------------ */

static void count_timer_cb(tether_timer *t, void *ud)
{
    (void)t;
    (*(int *)ud)++;
}

START_TEST(unref_decides_when_run_returns)
{
    int fired_short = 0, fired_long = 0;
    tether_timer *shorter, *longer;
    ck_assert_int_eq(tether_timer_new(&shorter, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_timer_new(&longer, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_timer_start(longer, 30000, 0, count_timer_cb, &fired_long), TETHER_OK);
    tether_timer_unref(longer);
    ck_assert(!tether_timer_has_ref(longer));
    /* An open listener, unref'd. */
    tether_listener *l = th_listen_tcp(NULL);
    tether_listener_unref(l);
    /* Unref twice is the same as once. */
    tether_listener_unref(l);

    /* Only the referenced short timer keeps the loop running. */
    ck_assert_int_eq(tether_timer_start(shorter, 10, 0, count_timer_cb, &fired_short), TETHER_OK);
    ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
    ck_assert_int_eq(fired_short, 1);
    ck_assert_int_eq(fired_long, 0);
    ck_assert(tether_timer_active(longer));
    /* Nothing referenced: run returns at once. */
    ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
    ck_assert_int_eq(tether_loop_run_once(th_loop, 0), 0);

    /* ref makes the listener keep the loop again. */
    tether_listener_ref(l);
    ck_assert_int_eq(tether_loop_run_once(th_loop, 0), 1);
    tether_listener_unref(l);
    ck_assert_int_eq(tether_loop_run_once(th_loop, 0), 0);

    /* A referenced timer restarted short brings back a one-shot run. */
    tether_timer_ref(longer);
    ck_assert(tether_timer_has_ref(longer));
    ck_assert_int_eq(tether_timer_start(longer, 5, 0, count_timer_cb, &fired_long), TETHER_OK);
    tether_listener_ref(l);
    tether_listener_unref(l);
    ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
    ck_assert_int_eq(fired_long, 1);

    tether_listener_close(l);
    tether_timer_free(shorter);
    tether_timer_free(longer);
}
END_TEST

/* ---- walk / close all ----------------------------------------------------- */

struct walk_count {
    int n[8];
    int total;
};

static void walk_count_cb(tether_loop *loop, tether_handle_type type, void *handle, void *ud)
{
    (void)loop;
    ck_assert_ptr_nonnull(handle);
    struct walk_count *w = ud;
    ck_assert_int_ge((int)type, 1);
    ck_assert_int_lt((int)type, 8);
    w->n[type]++;
    w->total++;
}

/* Frees every handle it is shown, and frees the next timer ahead of time. */
static tether_timer *walk_victim;

static void walk_free_cb(tether_loop *loop, tether_handle_type type, void *handle, void *ud)
{
    (void)loop;
    (void)ud;
    if (type == TETHER_HANDLE_TIMER && walk_victim != NULL && handle != walk_victim) {
        tether_timer_free(walk_victim);
        walk_victim = NULL;
    }
    if (type == TETHER_HANDLE_TIMER) {
        tether_timer_free(handle);
    }
}

START_TEST(walk_and_close_all)
{
    tether_timer *t1, *t2, *t3;
    ck_assert_int_eq(tether_timer_new(&t1, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_timer_new(&t2, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_timer_new(&t3, th_loop), TETHER_OK);
    ck_assert_int_eq(tether_timer_start(t1, 60000, 0, count_timer_cb, NULL), TETHER_OK);
    tether_listener *l = th_listen_tcp(NULL);
    (void)l;

    struct walk_count w = {0};
    ck_assert_int_eq(tether_loop_walk(th_loop, walk_count_cb, &w), TETHER_OK);
    ck_assert_int_eq(w.total, 4);
    ck_assert_int_eq(w.n[TETHER_HANDLE_TIMER], 3);
    ck_assert_int_eq(w.n[TETHER_HANDLE_LISTENER], 1);
    ck_assert_int_eq(tether_loop_walk(th_loop, NULL, NULL), TETHER_EINVAL);
    ck_assert_str_eq(tether_handle_type_name(TETHER_HANDLE_LISTENER), "listener");
    ck_assert_str_eq(tether_handle_type_name((tether_handle_type)99), "unknown");

    /* A walk callback that frees a handle not yet visited. */
    walk_victim = t3;
    ck_assert_int_eq(tether_loop_walk(th_loop, walk_free_cb, NULL), TETHER_OK);
    memset(&w, 0, sizeof w);
    ck_assert_int_eq(tether_loop_walk(th_loop, walk_count_cb, &w), TETHER_OK);
    ck_assert_int_eq(w.total, 1);
    ck_assert_int_eq(w.n[TETHER_HANDLE_TIMER], 0);

    tether_loop_close_all(th_loop);
    memset(&w, 0, sizeof w);
    ck_assert_int_eq(tether_loop_walk(th_loop, walk_count_cb, &w), TETHER_OK);
    ck_assert_int_eq(w.total, 0);
    /* The listener is freed by the loop; then nothing is left. */
    ck_assert_int_eq(tether_loop_run(th_loop), TETHER_OK);
}
END_TEST

static Suite *watch_suite(void)
{
    Suite *s = suite_create("watch");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
    tcase_set_timeout(tc, 40);
    tcase_add_test(tc, unref_decides_when_run_returns);
    tcase_add_test(tc, walk_and_close_all);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(watch_suite());
}
