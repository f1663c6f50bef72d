/* SPDX-License-Identifier: MIT */
/* tether embedded in a GLib main loop: a custom GSource polls
 * tether_loop_backend_fd() and takes its timeout from
 * tether_loop_backend_timeout(); its dispatch calls
 * tether_loop_run_once(loop, 0). Nothing else runs the tether loop. The
 * workload is scenario.c's TLS echo with reconnection and heartbeats. */
#include <glib.h>
#include <stdio.h>

#include "scenario.h"

#ifndef TETHER_CERTS_DIR
#error "TETHER_CERTS_DIR must name the certs/ directory"
#endif

typedef struct {
    GSource source;
    tether_loop *loop;
    gpointer fd_tag;
} TetherSource;

static GMainLoop *main_loop;
static int drives;

static gboolean ts_prepare(GSource *s, gint *timeout)
{
    TetherSource *ts = (TetherSource *)s;
    *timeout = tether_loop_backend_timeout(ts->loop);
    return *timeout == 0;
}

static gboolean ts_check(GSource *s)
{
    TetherSource *ts = (TetherSource *)s;
    if (g_source_query_unix_fd(s, ts->fd_tag) & G_IO_IN) {
        return TRUE;
    }
    return tether_loop_backend_timeout(ts->loop) == 0;
}

static gboolean ts_dispatch(GSource *s, GSourceFunc cb, gpointer ud)
{
    (void)cb;
    (void)ud;
    TetherSource *ts = (TetherSource *)s;
    drives++;
    int rv = tether_loop_run_once(ts->loop, 0);
    if (embed_scenario_finished(rv)) {
        g_main_loop_quit(main_loop);
        return G_SOURCE_REMOVE;
    }
    return G_SOURCE_CONTINUE;
}

static GSourceFuncs ts_funcs = {
    .prepare = ts_prepare,
    .check = ts_check,
    .dispatch = ts_dispatch,
};

static gboolean on_guard(gpointer ud)
{
    (void)ud;
    EMBED_CHECK(0, "hang guard: the scenario did not finish in 60 s%s", "");
    return G_SOURCE_REMOVE;
}

int main(void)
{
    tether_loop *tl;
    EMBED_CHECK(tether_loop_new(&tl, NULL) == TETHER_OK, "tether_loop_new%s", "");
    embed_scenario_start(tl, TETHER_CERTS_DIR);

    GMainContext *ctx = g_main_context_new();
    main_loop = g_main_loop_new(ctx, FALSE);
    TetherSource *ts = (TetherSource *)g_source_new(&ts_funcs, sizeof *ts);
    ts->loop = tl;
    ts->fd_tag = g_source_add_unix_fd(&ts->source, tether_loop_backend_fd(tl), G_IO_IN);
    g_source_attach(&ts->source, ctx);
    GSource *guard = g_timeout_source_new(60000);
    g_source_set_callback(guard, on_guard, NULL, NULL);
    g_source_attach(guard, ctx);

    g_main_loop_run(main_loop);

    g_source_destroy(guard);
    g_source_unref(guard);
    g_source_destroy(&ts->source);
    g_source_unref(&ts->source);
    g_main_loop_unref(main_loop);
    g_main_context_unref(ctx);
    printf("GLib drove tether %d times\n", drives);
    embed_scenario_verify();
    printf("PASS embed_glib\n");
    return 0;
}
