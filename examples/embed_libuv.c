/* SPDX-License-Identifier: MIT */
/* embed_libuv: an echo server whose tether loop runs inside a libuv loop.
 *
 *   embed_libuv [--listen tcp://127.0.0.1:7777]
 *
 * What it shows: how a program built around another event loop (here
 * libuv; GLib or libevent work the same way) drives tether without giving
 * it a thread of its own:
 * - a uv_poll_t watches tether_loop_backend_fd() for readability;
 * - a uv_prepare_t, which runs each time before libuv blocks, arms a
 *   uv_timer_t with tether_loop_backend_timeout() (tether's next timer, 0 if
 *   work is waiting, -1 if none);
 * - when either fires, tether_loop_run_once(loop, 0) does tether's work
 *   without blocking;
 * - the program's signals stay libuv's (uv_signal_t for SIGINT/SIGTERM):
 *   the handler closes the tether objects, and once tether_loop_run_once()
 *   reports that nothing is left the libuv handles are closed too, so
 *   uv_run() returns and both loops are freed.
 *
 * It prints `listening on URL` when clients can connect and a line per
 * connection; it exits with 0 after SIGINT or SIGTERM. Try it with
 * `echo_client --connect tcp://127.0.0.1:7777 --count 10`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include <tether/tether.h>

#define MAX_CONNS 256

static struct {
    tether_loop *loop;
    tether_listener *listener;
    tether_conn *conns[MAX_CONNS];
    bool stopping;
    uv_poll_t poll;
    uv_timer_t timer;
    uv_prepare_t prepare;
    uv_signal_t sigint;
    uv_signal_t sigterm;
} app;

/* ---- tether side: an ordinary echo server ----------------------------------- */

static void on_message(tether_conn *c, const uint8_t *data, size_t len, void *ud)
{
    (void)ud;
    if (tether_conn_send(c, data, len) != TETHER_OK) {
        tether_conn_close(c); /* a client that does not read its echoes */
    }
}

static void on_close(tether_conn *c, int reason, void *ud)
{
    (void)ud;
    for (int i = 0; i < MAX_CONNS; i++) {
        if (app.conns[i] == c) {
            app.conns[i] = NULL;
        }
    }
    printf("connection closed: %s\n", reason == TETHER_OK ? "ok" : tether_conn_last_error(c));
}

static void on_accept(tether_listener *l, tether_conn *c, void *ud)
{
    (void)l;
    (void)ud;
    for (int i = 0; i < MAX_CONNS; i++) {
        if (app.conns[i] == NULL) {
            app.conns[i] = c;
            char peer[80];
            tether_conn_peer(c, peer, sizeof peer);
            printf("connection from %s\n", peer);
            return;
        }
    }
    tether_conn_close(c); /* full */
}

/* ---- libuv side: driving tether ------------------------------------------- */

static void close_uv_handles(void)
{
    uv_close((uv_handle_t *)&app.poll, NULL);
    uv_close((uv_handle_t *)&app.timer, NULL);
    uv_close((uv_handle_t *)&app.prepare, NULL);
    uv_close((uv_handle_t *)&app.sigint, NULL);
    uv_close((uv_handle_t *)&app.sigterm, NULL);
}

/* One non-blocking round of tether's work. */
static void drive_tether(void)
{
    int rv = tether_loop_run_once(app.loop, 0);
    if (rv < 0) {
        fprintf(stderr, "embed_libuv: tether loop failed: %s\n", tether_strerror(rv));
        exit(1);
    }
    if (rv == 0 && app.stopping) {
        /* Everything tether had is closed: let uv_run() return. */
        close_uv_handles();
    }
}

static void on_backend_readable(uv_poll_t *h, int status, int events)
{
    (void)h;
    (void)status;
    (void)events;
    drive_tether();
}

static void on_backend_timer(uv_timer_t *h)
{
    (void)h;
    drive_tether();
}

/* Before libuv blocks: wake up in time for tether's next deadline. */
static void on_prepare(uv_prepare_t *h)
{
    (void)h;
    int t = tether_loop_backend_timeout(app.loop);
    if (t < 0) {
        uv_timer_stop(&app.timer);
    } else {
        uv_timer_start(&app.timer, on_backend_timer, (uint64_t)t, 0);
    }
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    if (app.stopping) {
        return;
    }
    printf("signal %d: shutting down\n", signum);
    app.stopping = true;
    tether_listener_close(app.listener);
    for (int i = 0; i < MAX_CONNS; i++) {
        if (app.conns[i] != NULL) {
            tether_conn_close(app.conns[i]);
        }
    }
    /* The closes finish on the next tether iterations, which the backend
     * fd (now readable: tether has work queued) makes libuv run. */
}

int main(int argc, char **argv)
{
    const char *url = "tcp://127.0.0.1:7777";
    if (argc == 3 && strcmp(argv[1], "--listen") == 0) {
        url = argv[2];
    } else if (argc != 1) {
        fprintf(stderr, "usage: embed_libuv [--listen URL]\n");
        return 2;
    }
    uv_loop_t *uv = uv_default_loop();
    int rv = tether_loop_new(&app.loop, NULL);
    if (rv != TETHER_OK) {
        fprintf(stderr, "embed_libuv: %s\n", tether_strerror(rv));
        return 1;
    }
    tether_conn_opts co;
    tether_conn_opts_init(&co);
    co.on_message = on_message;
    co.on_close = on_close;
    tether_listen_opts lo;
    tether_listen_opts_init(&lo);
    lo.conn_opts = &co;
    lo.on_accept = on_accept;
    tether_error err;
    rv = tether_listen(&app.listener, app.loop, url, &lo, &err);
    if (rv != TETHER_OK) {
        fprintf(stderr, "embed_libuv: %s\n", err.message);
        return 1;
    }
    printf("listening on %s\n", tether_listener_url(app.listener));
    fflush(stdout);

    uv_poll_init(uv, &app.poll, tether_loop_backend_fd(app.loop));
    uv_poll_start(&app.poll, UV_READABLE, on_backend_readable);
    uv_timer_init(uv, &app.timer);
    uv_prepare_init(uv, &app.prepare);
    uv_prepare_start(&app.prepare, on_prepare);
    uv_signal_init(uv, &app.sigint);
    uv_signal_start(&app.sigint, on_signal, SIGINT);
    uv_signal_init(uv, &app.sigterm);
    uv_signal_start(&app.sigterm, on_signal, SIGTERM);

    uv_run(uv, UV_RUN_DEFAULT);

    uv_loop_close(uv);
    rv = tether_loop_free(app.loop);
    if (rv != TETHER_OK) {
        fprintf(stderr, "embed_libuv: tether_loop_free: %s\n", tether_strerror(rv));
        return 1;
    }
    return 0;
}
