/* SPDX-License-Identifier: MIT */
/* tether embedded in a libuv loop: a uv_poll_t watches
 * tether_loop_backend_fd(), a uv_timer_t follows
 * tether_loop_backend_timeout() (re-armed from a uv_prepare_t before libuv
 * blocks), and both call tether_loop_run_once(loop, 0). Nothing else runs
 * the tether loop. The workload is scenario.c's TLS echo with reconnection
 * and heartbeats. */
#include <stdio.h>
#include <uv.h>

#include "scenario.h"

#ifndef TETHER_CERTS_DIR
#error "TETHER_CERTS_DIR must name the certs/ directory"
#endif

static tether_loop *tl;
static uv_poll_t poll_h;
static uv_timer_t timer_h;
static uv_prepare_t prepare_h;
static uv_timer_t guard_h;
static int drives;

static void close_all(void)
{
    uv_close((uv_handle_t *)&poll_h, NULL);
    uv_close((uv_handle_t *)&timer_h, NULL);
    uv_close((uv_handle_t *)&prepare_h, NULL);
    uv_close((uv_handle_t *)&guard_h, NULL);
}

static void drive(void)
{
    drives++;
    int rv = tether_loop_run_once(tl, 0);
    if (embed_scenario_finished(rv)) {
        close_all();
    }
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    (void)h;
    (void)events;
    EMBED_CHECK(status == 0, "uv_poll: %s", uv_strerror(status));
    drive();
}

static void on_timer(uv_timer_t *h)
{
    (void)h;
    drive();
}

static void on_prepare(uv_prepare_t *h)
{
    (void)h;
    if (uv_is_closing((uv_handle_t *)&timer_h)) {
        return;
    }
    int t = tether_loop_backend_timeout(tl);
    if (t < 0) {
        uv_timer_stop(&timer_h);
    } else {
        uv_timer_start(&timer_h, on_timer, (uint64_t)t, 0);
    }
}

static void on_guard(uv_timer_t *h)
{
    (void)h;
    EMBED_CHECK(0, "hang guard: the scenario did not finish in 60 s%s", "");
}

int main(void)
{
    uv_loop_t uv;
    EMBED_CHECK(uv_loop_init(&uv) == 0, "uv_loop_init%s", "");
    EMBED_CHECK(tether_loop_new(&tl, NULL) == TETHER_OK, "tether_loop_new%s", "");
    embed_scenario_start(tl, TETHER_CERTS_DIR);

    EMBED_CHECK(uv_poll_init(&uv, &poll_h, tether_loop_backend_fd(tl)) == 0, "uv_poll_init%s", "");
    EMBED_CHECK(uv_poll_start(&poll_h, UV_READABLE, on_poll) == 0, "uv_poll_start%s", "");
    uv_timer_init(&uv, &timer_h);
    uv_prepare_init(&uv, &prepare_h);
    uv_prepare_start(&prepare_h, on_prepare);
    uv_timer_init(&uv, &guard_h);
    uv_timer_start(&guard_h, on_guard, 60000, 0);
    uv_unref((uv_handle_t *)&guard_h);

    EMBED_CHECK(uv_run(&uv, UV_RUN_DEFAULT) == 0, "uv_run returned with handles left%s", "");
    EMBED_CHECK(uv_loop_close(&uv) == 0, "uv_loop_close%s", "");
    printf("libuv drove tether %d times\n", drives);
    embed_scenario_verify();
    printf("PASS embed_libuv\n");
    return 0;
}
